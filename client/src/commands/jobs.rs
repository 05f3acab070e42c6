//! `pib-client jobs`: the daemon decides which jobs the caller may see.

use pib_dbus_interfaces::DBusError;
use serde_json::{json, Value};
use zbus::{fdo, OwnedObjectPath};

use crate::bus::Bus;
use crate::calls;
use crate::errors::ClientError;
use crate::job::{JobRef, Snapshot};
use crate::output::{self, for_terminal, Ui};

pub async fn run(bus: &mut Bus, ui: &Ui) -> Result<(), ClientError> {
    let manager = bus.manager().await?;
    let paths: Vec<OwnedObjectPath> = bus.call(manager.inner(), &calls::LIST_JOBS, &()).await?;
    let mut jobs = Vec::with_capacity(paths.len());
    for path in paths {
        let props = bus.properties(path.as_str()).await?;
        match bus.job_properties(&props).await {
            Ok(p) => jobs.push((path.to_string(), Snapshot::from_properties(&p))),
            // Forgotten between the listing and the read: it is not there to show.
            Err(e) if is_gone(&e) => {}
            Err(e) => return Err(e),
        }
    }
    jobs.sort_by_key(|(path, _)| JobRef::from_path(path).map(JobRef::number));

    if ui.json {
        let list: Vec<Value> = jobs.iter().map(|(p, s)| job_json(p, s)).collect();
        output::json_line(&Value::Array(list));
    } else if jobs.is_empty() {
        output::plain("No jobs.");
    } else {
        output::plain(&job_table(&jobs));
    }
    Ok(())
}

fn is_gone(e: &ClientError) -> bool {
    match e {
        ClientError::Call {
            error: DBusError::ZBus(zbus::Error::FDO(f)),
            ..
        } => matches!(**f, fdo::Error::UnknownObject(_)),
        _ => false,
    }
}

fn job_json(path: &str, s: &Snapshot) -> Value {
    json!({
        "job": JobRef::from_path(path).map(JobRef::number),
        "path": path,
        "operation": s.operation,
        "state": s.state,
        "started_by_uid": s.started_by_uid,
        "start_time": s.start_time,
        "stage": s.stage,
        "message": s.message,
        "progress": s.fraction(),
        "error_name": s.error_name,
    })
}

fn job_table(jobs: &[(String, Snapshot)]) -> String {
    let rows: Vec<Vec<String>> = jobs
        .iter()
        .map(|(path, s)| {
            let number = JobRef::from_path(path).map_or_else(|| path.clone(), |j| j.to_string());
            let state = match s.fraction() {
                Some(f) if !s.is_over() => format!("{} {:.0}%", s.state, f * 100.0),
                _ => s.state.clone(),
            };
            vec![
                number,
                for_terminal(&s.operation).into_owned(),
                for_terminal(&state).into_owned(),
                s.started_by_uid
                    .map_or_else(|| "?".into(), |u| u.to_string()),
                for_terminal(&s.message).into_owned(),
            ]
        })
        .collect();
    output::table(&["JOB", "OPERATION", "STATE", "UID", "MESSAGE"], &rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_and_json() {
        let running = Snapshot {
            operation: "binfmt-register".into(),
            state: "running".into(),
            progress: 0.5,
            progress_valid: true,
            started_by_uid: Some(1000),
            message: "registering aarch64".into(),
            ..Snapshot::default()
        };
        let done = Snapshot {
            operation: "binfmt-unregister".into(),
            state: "succeeded".into(),
            started_by_uid: Some(0),
            message: "removed".into(),
            ..Snapshot::default()
        };
        let jobs = vec![
            ("/org/pibuilder/PiBuilder1/jobs/2".to_owned(), running),
            ("/org/pibuilder/PiBuilder1/jobs/10".to_owned(), done),
        ];
        assert_eq!(
            job_table(&jobs),
            "JOB  OPERATION          STATE        UID   MESSAGE\n\
             2    binfmt-register    running 50%  1000  registering aarch64\n\
             10   binfmt-unregister  succeeded    0     removed"
        );
        let v = job_json(&jobs[0].0, &jobs[0].1);
        assert_eq!(v["job"], 2);
        assert_eq!(v["started_by_uid"], 1000);
        assert_eq!(v["progress"], 0.5);
    }

    #[test]
    fn only_unknown_objects_count_as_gone() {
        let gone = ClientError::Call {
            attempt: &calls::READ_JOB,
            error: DBusError::from(fdo::Error::UnknownObject("x".into())),
        };
        assert!(is_gone(&gone));
        let denied = ClientError::Call {
            attempt: &calls::READ_JOB,
            error: DBusError::from(fdo::Error::AccessDenied("x".into())),
        };
        assert!(!is_gone(&denied));
    }
}
