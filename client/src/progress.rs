//! Showing a running job: a progress bar on a terminal, a line now and then in a log file, JSON
//! lines for scripts, nothing with --quiet.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use indicatif::{BinaryBytes, HumanDuration, ProgressBar, ProgressStyle};
use serde_json::{json, Value};

use crate::job::{JobRef, Snapshot};
use crate::output::{self, err_line, for_terminal, Ui};

pub struct Progress {
    view: View,
}

enum View {
    Bar(Bar),
    Lines(Lines),
    Json(JsonLines),
    Quiet,
}

impl Progress {
    pub fn new(ui: &Ui, path: &str, stderr_is_terminal: bool) -> Progress {
        let view = if ui.json {
            if ui.quiet {
                View::Quiet
            } else {
                View::Json(JsonLines {
                    path: path.to_owned(),
                    last: None,
                })
            }
        } else if ui.quiet {
            View::Quiet
        } else if stderr_is_terminal {
            View::Bar(Bar::new())
        } else {
            View::Lines(Lines {
                label: JobRef::from_path(path)
                    .map_or_else(|| path.to_owned(), |j| format!("job {j}")),
                last_headline: None,
                last_printed: Instant::now(),
                last_percent: None,
            })
        };
        Progress { view }
    }

    /// One of several jobs shown at once (one bar each in `group`), labelled, e.g. by device.
    pub fn in_group(
        ui: &Ui,
        path: &str,
        stderr_is_terminal: bool,
        group: &indicatif::MultiProgress,
        label: &str,
    ) -> Progress {
        let mut p = Progress::new(ui, path, stderr_is_terminal);
        match &mut p.view {
            View::Bar(b) => {
                b.pb = group.add(b.pb.clone());
                b.label = Some(label.to_owned());
            }
            View::Lines(l) => l.label = label.to_owned(),
            _ => {}
        }
        p
    }

    pub fn update(&mut self, s: &Snapshot) {
        match &mut self.view {
            View::Bar(b) => b.update(s),
            View::Lines(l) => l.update(s),
            View::Json(j) => j.update(s),
            View::Quiet => {}
        }
    }

    pub fn log(&mut self, line: &str) {
        match &mut self.view {
            View::Bar(b) => b.pb.suspend(|| err_line(&for_terminal(line))),
            View::Lines(_) => err_line(&for_terminal(line)),
            View::Json(_) => output::json_line(&json!({ "log": line })),
            View::Quiet => {}
        }
    }

    /// Something the user did caused this (Ctrl-C); not shown with --quiet.
    pub fn note(&mut self, text: &str) {
        match &mut self.view {
            View::Bar(b) => b.pb.suspend(|| err_line(&format!("pib-client: {text}"))),
            View::Lines(_) => err_line(&format!("pib-client: {text}")),
            View::Json(_) => output::json_line(&json!({ "note": text })),
            View::Quiet => {}
        }
    }

    /// Something went wrong that does not end the command; shown even with --quiet.
    pub fn warn(&mut self, ui: &Ui, text: &str) {
        match &mut self.view {
            View::Bar(b) => b.pb.suspend(|| err_line(&format!("pib-client: {text}"))),
            _ if ui.json => output::json_line(&json!({ "warning": text })),
            _ => err_line(&format!("pib-client: {text}")),
        }
    }

    /// The result is printed next, by the command; the bar must not stay above or below it.
    pub fn finish(&mut self) {
        if let View::Bar(b) = &self.view {
            b.pb.finish_and_clear();
        }
    }
}

fn headline(s: &Snapshot) -> String {
    let text = match (s.stage.is_empty(), s.message.is_empty()) {
        (false, false) => format!("{}: {}", s.stage, s.message),
        (false, true) => s.stage.clone(),
        (true, false) => s.message.clone(),
        (true, true) => s.operation.clone(),
    };
    for_terminal(&text).into_owned()
}

/// Bytes, rate and time left, as far as the daemon knows them.
fn details(s: &Snapshot, now: SystemTime) -> String {
    let mut parts = Vec::new();
    if s.total_bytes > 0 {
        parts.push(format!(
            "{}/{}",
            BinaryBytes(s.bytes.min(s.total_bytes)),
            BinaryBytes(s.total_bytes)
        ));
    } else if s.bytes > 0 {
        parts.push(BinaryBytes(s.bytes).to_string());
    }
    if s.rate > 0 {
        parts.push(format!("{}/s", BinaryBytes(s.rate)));
    }
    if let Some(left) = time_left(s, now) {
        parts.push(format!("{} left", HumanDuration(left)));
    }
    parts.join(", ")
}

fn time_left(s: &Snapshot, now: SystemTime) -> Option<Duration> {
    if s.expected_end_time == 0 {
        return None;
    }
    let end = UNIX_EPOCH + Duration::from_micros(s.expected_end_time);
    Some(end.duration_since(now).unwrap_or_default())
}

fn percent(s: &Snapshot) -> Option<u64> {
    s.fraction().map(|f| (f * 100.0).floor() as u64)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BarShape {
    Spinner,
    Fraction,
    Bytes,
}

struct Bar {
    pb: ProgressBar,
    shape: Option<BarShape>,
    /// The text of the `{details}` key; indicatif cannot compute it, the daemon's figures are
    /// better than indicatif's own estimate from the throttled updates.
    details: Arc<Mutex<String>>,
    /// Shown before the headline when several bars share the terminal.
    label: Option<String>,
}

/// Steps of the bar when only a fraction is known.
const FRACTION_STEPS: u64 = 1000;

impl Bar {
    fn new() -> Bar {
        let mut bar = Bar {
            pb: ProgressBar::no_length(),
            shape: None,
            details: Arc::default(),
            label: None,
        };
        // Styled before the first tick, or indicatif draws its default bar once.
        bar.set_shape(BarShape::Spinner);
        bar.pb.enable_steady_tick(Duration::from_millis(120));
        bar
    }

    fn set_shape(&mut self, shape: BarShape) {
        if self.shape != Some(shape) {
            self.pb.set_style(self.style(shape));
            self.shape = Some(shape);
        }
    }

    fn style(&self, shape: BarShape) -> ProgressStyle {
        let template = match shape {
            BarShape::Spinner => "{spinner:.cyan} {wide_msg} {details}",
            BarShape::Fraction | BarShape::Bytes => {
                "{spinner:.cyan} {wide_msg} [{bar:30.cyan/blue}] {percent:>3}% {details}"
            }
        };
        let details = Arc::clone(&self.details);
        ProgressStyle::with_template(template)
            .expect("the bar templates are valid")
            .progress_chars("=> ")
            .with_key(
                "details",
                move |_: &indicatif::ProgressState, w: &mut dyn std::fmt::Write| {
                    let _ = w.write_str(&details.lock().expect("details lock"));
                },
            )
    }

    fn update(&mut self, s: &Snapshot) {
        let shape = if s.total_bytes > 0 {
            BarShape::Bytes
        } else if s.progress_valid {
            BarShape::Fraction
        } else {
            BarShape::Spinner
        };
        self.set_shape(shape);
        *self.details.lock().expect("details lock") = details(s, SystemTime::now());
        match shape {
            BarShape::Bytes => {
                self.pb.set_length(s.total_bytes);
                self.pb.set_position(s.bytes.min(s.total_bytes));
            }
            BarShape::Fraction => {
                self.pb.set_length(FRACTION_STEPS);
                let steps = s.progress.clamp(0.0, 1.0) * FRACTION_STEPS as f64;
                self.pb.set_position(steps as u64);
            }
            BarShape::Spinner => {}
        }
        match &self.label {
            Some(label) => self.pb.set_message(format!("{label}: {}", headline(s))),
            None => self.pb.set_message(headline(s)),
        }
    }
}

/// For a log file: a line when the headline changes or progress reaches another tenth, else at
/// most every `QUIET_PERIOD` while the numbers move.
struct Lines {
    label: String,
    last_headline: Option<String>,
    last_printed: Instant,
    last_percent: Option<u64>,
}

const QUIET_PERIOD: Duration = Duration::from_secs(10);

impl Lines {
    fn update(&mut self, s: &Snapshot) {
        if s.is_over() {
            return;
        }
        let head = headline(s);
        let pct = percent(s);
        let changed = self.last_headline.as_deref() != Some(head.as_str());
        let step = pct.map(|p| p / 10) != self.last_percent.map(|p| p / 10);
        let due = self.last_printed.elapsed() >= QUIET_PERIOD && pct != self.last_percent;
        if !changed && !step && !due {
            return;
        }
        let mut extra: Vec<String> = pct.map(|p| format!("{p}%")).into_iter().collect();
        let d = details(s, SystemTime::now());
        if !d.is_empty() {
            extra.push(d);
        }
        if extra.is_empty() {
            err_line(&format!("[{}] {head}", self.label));
        } else {
            err_line(&format!("[{}] {head} ({})", self.label, extra.join(", ")));
        }
        self.last_headline = Some(head);
        self.last_printed = Instant::now();
        self.last_percent = pct;
    }
}

struct JsonLines {
    path: String,
    last: Option<Value>,
}

impl JsonLines {
    fn update(&mut self, s: &Snapshot) {
        let v = progress_json(&self.path, s);
        if self.last.as_ref() != Some(&v) {
            output::json_line(&json!({ "progress": v }));
            self.last = Some(v);
        }
    }
}

pub fn progress_json(path: &str, s: &Snapshot) -> Value {
    json!({
        "job": path,
        "operation": s.operation,
        "state": s.state,
        "stage": s.stage,
        "message": s.message,
        "progress": s.fraction(),
        "bytes": s.bytes,
        "total_bytes": s.total_bytes,
        "rate": s.rate,
        "expected_end_time": s.expected_end_time,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snapshot() -> Snapshot {
        Snapshot {
            operation: "binfmt-register".into(),
            state: "running".into(),
            ..Snapshot::default()
        }
    }

    #[test]
    fn headline_prefers_stage_and_message() {
        let mut s = snapshot();
        assert_eq!(headline(&s), "binfmt-register");
        s.message = "registering\x1b[31m".into();
        assert_eq!(headline(&s), "registering^[[31m");
        s.stage = "aarch64".into();
        assert_eq!(headline(&s), "aarch64: registering^[[31m");
    }

    #[test]
    fn details_from_the_daemons_figures() {
        let now = UNIX_EPOCH + Duration::from_secs(1_000);
        let mut s = snapshot();
        assert_eq!(details(&s, now), "");
        s.total_bytes = 4 << 30;
        s.bytes = 1 << 30;
        s.rate = 20 << 20;
        s.expected_end_time = 1_090 * 1_000_000;
        assert_eq!(
            details(&s, now),
            "1.00 GiB/4.00 GiB, 20.00 MiB/s, 2 minutes left"
        );
        assert_eq!(percent(&s), Some(25));
    }

    #[test]
    fn json_progress_has_null_progress_when_unknown() {
        let s = snapshot();
        let v = progress_json("/org/pibuilder/PiBuilder1/jobs/1", &s);
        assert_eq!(v["progress"], Value::Null);
        assert_eq!(v["state"], "running");
    }
}
