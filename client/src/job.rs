//! Naming jobs on the command line, and the client's copy of a job's properties.

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;

use pib_dbus_interfaces::names::{job_path, JOBS_PATH};
use pib_dbus_interfaces::types::JobState;
use serde_json::{Map, Value};
use zbus::{OwnedVariant, Variant};

use crate::variant;

/// A job as the user names it: `N` or `/org/pibuilder/PiBuilder1/jobs/N`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JobRef(u64);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a job: give its number N or its path {JOBS_PATH}/N")]
pub struct BadJobRef(String);

impl JobRef {
    pub fn number(self) -> u64 {
        self.0
    }

    pub fn path(self) -> String {
        job_path(self.0)
    }

    /// The job an object path names, if it names one.
    pub fn from_path(path: &str) -> Option<JobRef> {
        path.strip_prefix(JOBS_PATH)
            .and_then(|rest| rest.strip_prefix('/'))
            .and_then(parse_number)
            .map(JobRef)
    }
}

/// Digits only: `u64::from_str` would also take "+3", which no path contains. Jobs count from 1.
fn parse_number(s: &str) -> Option<u64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok().filter(|n| *n > 0)
}

impl FromStr for JobRef {
    type Err = BadJobRef;

    fn from_str(s: &str) -> Result<JobRef, BadJobRef> {
        let found = if s.starts_with('/') {
            JobRef::from_path(s)
        } else {
            parse_number(s).map(JobRef)
        };
        found.ok_or_else(|| BadJobRef(s.to_owned()))
    }
}

impl fmt::Display for JobRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// The properties of a job as last seen. Values of an unexpected type are ignored rather than
/// fatal: a newer daemon may add to the interface, and following must go on.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Snapshot {
    pub operation: String,
    pub state: String,
    pub progress: f64,
    pub progress_valid: bool,
    pub bytes: u64,
    pub total_bytes: u64,
    pub rate: u64,
    pub start_time: u64,
    pub expected_end_time: u64,
    pub started_by_uid: Option<u32>,
    pub stage: String,
    pub message: String,
    pub error_name: String,
    /// What the job produced (`Result`), kept as JSON: its keys depend on the operation, and
    /// it is printed as much as read.
    pub result: Map<String, Value>,
}

impl Snapshot {
    pub fn from_properties(props: &HashMap<String, OwnedVariant>) -> Snapshot {
        let mut s = Snapshot::default();
        for (name, value) in props {
            s.apply(name, value);
        }
        s
    }

    pub fn apply(&mut self, name: &str, value: &Variant<'_>) {
        match (name, value) {
            ("Operation", Variant::Str(v)) => self.operation = v.to_string(),
            ("State", Variant::Str(v)) => self.state = v.to_string(),
            ("Progress", Variant::F64(v)) => self.progress = *v,
            ("ProgressValid", Variant::Bool(v)) => self.progress_valid = *v,
            ("Bytes", Variant::U64(v)) => self.bytes = *v,
            ("TotalBytes", Variant::U64(v)) => self.total_bytes = *v,
            ("Rate", Variant::U64(v)) => self.rate = *v,
            ("StartTime", Variant::U64(v)) => self.start_time = *v,
            ("ExpectedEndTime", Variant::U64(v)) => self.expected_end_time = *v,
            ("StartedByUID", Variant::U32(v)) => self.started_by_uid = Some(*v),
            ("Stage", Variant::Str(v)) => self.stage = v.to_string(),
            ("Message", Variant::Str(v)) => self.message = v.to_string(),
            ("ErrorName", Variant::Str(v)) => self.error_name = v.to_string(),
            ("Result", v @ Variant::Dict(_)) => {
                if let Value::Object(m) = variant::to_json(v) {
                    self.result = m;
                }
            }
            _ => {}
        }
    }

    /// The job is over once its state is anything but "running", including a state this client
    /// does not know: waiting for it to become "running" again would hang.
    pub fn is_over(&self) -> bool {
        self.state != JobState::Running.as_str()
    }

    /// Progress as a fraction, when the daemon knows it.
    pub fn fraction(&self) -> Option<f64> {
        if self.total_bytes > 0 {
            Some((self.bytes as f64 / self.total_bytes as f64).clamp(0.0, 1.0))
        } else if self.progress_valid {
            Some(self.progress.clamp(0.0, 1.0))
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn job_refs_from_numbers_and_paths() {
        assert_eq!("7".parse::<JobRef>().unwrap().number(), 7);
        assert_eq!(
            "007".parse::<JobRef>().unwrap().path(),
            format!("{JOBS_PATH}/7")
        );
        let r: JobRef = "/org/pibuilder/PiBuilder1/jobs/42".parse().unwrap();
        assert_eq!(r.number(), 42);
        assert_eq!(r.path(), "/org/pibuilder/PiBuilder1/jobs/42");
        assert_eq!(JobRef::from_path(&r.path()), Some(r));
    }

    #[test]
    fn garbage_is_not_a_job() {
        for bad in [
            "",
            "0",
            "-1",
            "+3",
            " 3",
            "3 ",
            "3x",
            "x",
            "1.5",
            "99999999999999999999999",
            "/",
            "/org/pibuilder/PiBuilder1/jobs",
            "/org/pibuilder/PiBuilder1/jobs/",
            "/org/pibuilder/PiBuilder1/jobs/x",
            "/org/pibuilder/PiBuilder1/jobs/3/4",
            "/org/pibuilder/PiBuilder1/jobs3",
            "/org/pibuilder/PiBuilder1/jobsy/3",
            "/org/other/jobs/3",
            "org/pibuilder/PiBuilder1/jobs/3",
        ] {
            let err = bad.parse::<JobRef>().unwrap_err();
            assert!(err.to_string().contains("is not a job"), "{bad}: {err}");
        }
    }

    #[test]
    fn snapshot_takes_known_properties_and_ignores_the_rest() {
        let mut props = HashMap::new();
        let mut put = |k: &str, v: Variant<'static>| {
            props.insert(k.to_owned(), OwnedVariant::try_from(v).unwrap());
        };
        put("Operation", Variant::from("binfmt-register"));
        put("State", Variant::from("running"));
        put("Progress", Variant::from(0.5f64));
        put("ProgressValid", Variant::from(true));
        put("StartedByUID", Variant::from(1000u32));
        put("Message", Variant::from(7u32));
        put("Future", Variant::from("x"));
        let mut result = HashMap::new();
        result.insert("image", Variant::from("debian-rpi4-aarch64"));
        result.insert("steps", Variant::from(12u32));
        put("Result", Variant::from(result));
        let mut s = Snapshot::from_properties(&props);
        assert_eq!(s.operation, "binfmt-register");
        assert!(!s.is_over());
        assert_eq!(s.fraction(), Some(0.5));
        assert_eq!(s.started_by_uid, Some(1000));
        assert_eq!(s.message, "", "a wrongly typed value is ignored");
        assert_eq!(s.result["image"], "debian-rpi4-aarch64");
        assert_eq!(s.result["steps"], 12);

        s.apply("TotalBytes", &Variant::from(200u64));
        s.apply("Bytes", &Variant::from(50u64));
        assert_eq!(s.fraction(), Some(0.25), "bytes win over Progress");

        s.apply("State", &Variant::from("failed"));
        s.apply(
            "ErrorName",
            &Variant::from("org.pibuilder.PiBuilder1.Error.Conflict"),
        );
        assert!(s.is_over());
        s.apply("State", &Variant::from("paused"));
        assert!(
            s.is_over(),
            "an unknown state does not keep the client waiting"
        );
    }
}
