//! The installed development daemon: its configuration changed for a test, and restarts.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::cards::daemon_pid;
use crate::eventually;

/// The daemon's configuration file with some settings changed for as long as this lives; the
/// daemon is restarted so the next call reads it, and again when the original comes back.
pub struct DaemonConfig {
    path: PathBuf,
    original: String,
}

impl DaemonConfig {
    /// Sets each `(section, key, value)` (section "" for the top level); `value` is TOML.
    pub fn with(settings: &[(&str, &str, &str)]) -> DaemonConfig {
        // Where `make dev-up` writes the configuration its activation file names.
        let path = crate::repo_root().join("target/pib-dev/daemon.toml");
        let original = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("{}: {e} (run make dev-up)", path.display()));
        let mut text = original.clone();
        for (section, key, value) in settings {
            text = set(&text, section, key, value);
        }
        std::fs::write(&path, text).unwrap();
        restart_daemon();
        DaemonConfig { path, original }
    }
}

impl Drop for DaemonConfig {
    fn drop(&mut self) {
        let _ = std::fs::write(&self.path, &self.original);
        restart_daemon();
    }
}

/// `text` with `key = value` in `[section]`: replaced where the key is, else added at the
/// section's start (top-level keys go first in the file, where TOML wants them).
fn set(text: &str, section: &str, key: &str, value: &str) -> String {
    let line = format!("{key} = {value}");
    let mut current = String::new();
    let mut out: Vec<String> = Vec::new();
    let mut done = false;
    for l in text.lines() {
        let t = l.trim();
        if t.starts_with('[') {
            current = t.trim_matches(|c| c == '[' || c == ']').to_owned();
        }
        let is_key = t.split('=').next().map(str::trim) == Some(key) && t.contains('=');
        if !done && current == section && is_key {
            out.push(line.clone());
            done = true;
            continue;
        }
        out.push(l.to_owned());
    }
    if !done {
        if section.is_empty() {
            out.insert(0, line);
        } else if let Some(at) = out.iter().position(|l| l.trim() == format!("[{section}]")) {
            out.insert(at + 1, line);
        } else {
            out.push(format!("[{section}]"));
            out.push(line);
        }
    }
    out.join("\n") + "\n"
}

/// Stops the running daemon (the next call activates a new one, which reads its configuration
/// afresh). Only called with no job running.
pub fn restart_daemon() {
    if let Some(pid) = daemon_pid() {
        let _ = Command::new("kill").arg(pid.to_string()).status();
        assert!(
            eventually(Duration::from_secs(30), || !Path::new(&format!(
                "/proc/{pid}"
            ))
            .exists()),
            "the daemon did not stop"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::set;

    #[test]
    fn settings_land_in_their_sections() {
        let text = "# c\nidle_timeout_secs = 10\n\n[devices]\nallow_loop = true\n";
        let t = set(text, "devices", "allow_loop", "false");
        assert_eq!(
            t,
            "# c\nidle_timeout_secs = 10\n\n[devices]\nallow_loop = false\n"
        );
        let t = set(&t, "", "auth_timeout_secs", "3");
        assert!(t.starts_with("auth_timeout_secs = 3\n# c\n"), "{t}");
        let t = set(&t, "build", "input_stall_secs", "2");
        assert!(t.ends_with("[build]\ninput_stall_secs = 2\n"), "{t}");
        let t = set(&t, "devices", "large_disk_bytes", "1");
        assert!(
            t.contains("[devices]\nlarge_disk_bytes = 1\nallow_loop = false\n"),
            "{t}"
        );
    }
}
