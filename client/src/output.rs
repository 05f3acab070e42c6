//! Where and how things are printed: results on stdout (plain or one JSON object per line),
//! everything else on stderr.

use std::borrow::Cow;
use std::io::Write;

use serde_json::{json, Value};

use crate::errors::Explanation;
use crate::job::{JobRef, Snapshot};

/// The output choices of the global flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ui {
    pub json: bool,
    pub quiet: bool,
    pub no_ask_password: bool,
}

impl Ui {
    /// Scripts must never hang on a password prompt, so `--json` implies no prompting.
    pub fn interactive_auth(&self) -> bool {
        !self.no_ask_password && !self.json
    }
}

/// One JSON value on one line of stdout. A closed stdout (`| head`) is not worth a panic.
pub fn json_line(v: &Value) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{v}");
    let _ = out.flush();
}

pub fn plain(text: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{text}");
}

/// A line on stderr. Unlike `eprintln!` it does not panic when stderr is a closed pipe
/// (`2>&1 | head`): losing a log line is better than dying in the middle of a job.
pub fn err_line(text: &str) {
    let _ = writeln!(std::io::stderr().lock(), "{text}");
}

pub fn error(ui: &Ui, ex: &Explanation) {
    if ui.json {
        json_line(&error_json(ex));
        return;
    }
    err_line(&format!("pib-client: {}", ex.text));
    if let Some(detail) = &ex.detail {
        err_line(&format!(
            "pib-client: ({}: {})",
            ex.name,
            for_terminal(detail)
        ));
    }
}

pub fn error_json(ex: &Explanation) -> Value {
    let mut v = json!({"error": ex.name, "message": ex.text});
    if let Some(detail) = &ex.detail {
        v["detail"] = Value::from(detail.as_str());
    }
    if let Some((path, state)) = &ex.job {
        v["job"] = Value::from(path.as_str());
        v["state"] = Value::from(state.as_str());
    }
    v
}

/// The result of a job that succeeded.
pub fn job_result(ui: &Ui, path: &str, s: &Snapshot) {
    if ui.json {
        json_line(&job_result_json(path, s));
    } else if s.message.is_empty() {
        let job = JobRef::from_path(path).map_or_else(|| path.to_owned(), |j| j.to_string());
        plain(&format!("Job {job} succeeded."));
    } else {
        plain(&for_terminal(&s.message));
    }
}

/// A finished job for scripts: what it was, how it ended, and what it produced.
pub fn job_result_json(path: &str, s: &Snapshot) -> Value {
    let mut v = json!({
        "job": path,
        "operation": s.operation,
        "state": s.state,
        "message": s.message,
    });
    if !s.result.is_empty() {
        v["result"] = Value::Object(s.result.clone());
    }
    v
}

/// Messages and log lines come from builds, whose content a stranger may control; raw escape
/// sequences would let it rewrite the user's terminal. Control characters become visible
/// (`^[`), and a carriage return keeps only what a terminal would have left on the line.
pub fn for_terminal(s: &str) -> Cow<'_, str> {
    let s = s.rsplit('\r').find(|part| !part.is_empty()).unwrap_or("");
    if !s.chars().any(is_unsafe) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match c {
            c if (c as u32) < 0x20 && c != '\t' => {
                out.push('^');
                out.push(char::from(c as u8 + 0x40));
            }
            c if is_unsafe(c) => out.push_str(&c.escape_unicode().to_string()),
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

fn is_unsafe(c: char) -> bool {
    (c.is_control() && c != '\t') || matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

/// Left-aligned columns, the last one unpadded.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let cols = header.len();
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: &mut dyn Iterator<Item = &str>| {
        let mut s = String::new();
        for (i, cell) in cells.enumerate() {
            if i + 1 == cols {
                s.push_str(cell);
            } else {
                s.push_str(cell);
                let pad = widths[i] - cell.chars().count() + 2;
                s.extend(std::iter::repeat_n(' ', pad));
            }
        }
        s.trim_end().to_owned()
    };
    let mut out = line(&mut header.iter().copied());
    for row in rows {
        out.push('\n');
        out.push_str(&line(&mut row.iter().map(String::as_str)));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn terminal_text_is_defused() {
        assert_eq!(for_terminal("plain text\tok"), "plain text\tok");
        assert_eq!(for_terminal("\x1b[2Jgone"), "^[[2Jgone");
        assert_eq!(for_terminal("a\u{7f}b"), "a\\u{7f}b");
        assert_eq!(for_terminal("x\u{9b}31m"), "x\\u{9b}31m");
        assert_eq!(for_terminal("evil\u{202e}txt"), "evil\\u{202e}txt");
        assert_eq!(for_terminal("10%\r50%\r100%"), "100%");
        assert_eq!(for_terminal("done\r"), "done");
        assert_eq!(for_terminal("\n"), "^J");
    }

    #[test]
    fn tables_line_up() {
        let t = table(
            &["JOB", "STATE", "MESSAGE"],
            &[
                vec!["1".into(), "running".into(), "x".into()],
                vec!["12".into(), "ok".into(), "".into()],
            ],
        );
        assert_eq!(t, "JOB  STATE    MESSAGE\n1    running  x\n12   ok");
    }

    #[test]
    fn interactive_auth_only_without_json_and_no_ask_password() {
        let ui = |json, no_ask_password| Ui {
            json,
            quiet: false,
            no_ask_password,
        };
        assert!(ui(false, false).interactive_auth());
        assert!(!ui(true, false).interactive_auth());
        assert!(!ui(false, true).interactive_auth());
    }
}
