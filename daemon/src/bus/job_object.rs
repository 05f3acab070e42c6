//! A job on the bus: `org.pibuilder.PiBuilder1.Job` at `/org/pibuilder/PiBuilder1/jobs/N`.

use std::collections::HashMap;
use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::time::Duration;

use pib_dbus_interfaces::names::{job_path, JOB_INTERFACE};
use pib_dbus_interfaces::DBusError;
use zbus::message::Header;
use zbus::names::InterfaceName;
use zbus::object_server::SignalEmitter;
use zbus::{interface, OwnedObjectPath, OwnedVariant, Variant};

use super::Daemon;
use crate::jobs::log::checked_log_fd;
use crate::jobs::{prop, Job, JobStatus, ResultValue};

/// At most this many PropertiesChanged signals per second per job.
const THROTTLE: Duration = Duration::from_millis(250);

pub struct JobObject {
    job: Arc<Job>,
    ctx: Arc<Daemon>,
}

#[interface(name = "org.pibuilder.PiBuilder1.Job")]
impl JobObject {
    #[zbus(property(emits_changed_signal = "const"))]
    fn operation(&self) -> String {
        self.job.operation.as_str().to_owned()
    }

    #[zbus(property)]
    fn state(&self) -> String {
        self.job.state().as_str().to_owned()
    }

    #[zbus(property)]
    fn progress(&self) -> f64 {
        self.job.status().progress
    }

    #[zbus(property)]
    fn progress_valid(&self) -> bool {
        self.job.status().progress_valid
    }

    #[zbus(property)]
    fn bytes(&self) -> u64 {
        self.job.status().bytes
    }

    #[zbus(property)]
    fn total_bytes(&self) -> u64 {
        self.job.status().total_bytes
    }

    #[zbus(property)]
    fn rate(&self) -> u64 {
        self.job.status().rate
    }

    #[zbus(property(emits_changed_signal = "const"))]
    fn start_time(&self) -> u64 {
        self.job.start_time_us
    }

    #[zbus(property)]
    fn expected_end_time(&self) -> u64 {
        self.job.status().expected_end_time
    }

    #[zbus(property(emits_changed_signal = "const"), name = "StartedByUID")]
    fn started_by_uid(&self) -> u32 {
        self.job.owner_uid
    }

    #[zbus(property)]
    fn stage(&self) -> String {
        self.job.status().stage
    }

    #[zbus(property)]
    fn message(&self) -> String {
        self.job.status().message
    }

    #[zbus(property)]
    fn error_name(&self) -> String {
        self.job.status().error_name
    }

    #[zbus(property)]
    fn result(&self) -> HashMap<String, OwnedVariant> {
        result_dict(&self.job.status().result)
    }

    async fn cancel(&self, #[zbus(header)] header: Header<'_>) -> Result<(), DBusError> {
        self.ctx.activity.touch();
        let id = self.job.id.to_string();
        self.ctx
            .auth
            .authorize(&header, Some(self.job.owner_uid), &[("job", &id)])
            .await?;
        self.job.request_cancel();
        Ok(())
    }

    async fn attach_log(
        &self,
        #[zbus(header)] header: Header<'_>,
        fd: zbus::Fd<'_>,
    ) -> Result<(), DBusError> {
        self.ctx.activity.touch();
        let fd: OwnedFd = fd
            .try_to_owned()
            .and_then(OwnedFd::try_from)
            .map_err(|e| DBusError::InvalidArgs(format!("cannot take the log descriptor: {e}")))?;
        let fd = checked_log_fd(fd).map_err(|e| DBusError::InvalidArgs(e.to_string()))?;
        let id = self.job.id.to_string();
        self.ctx
            .auth
            .authorize(&header, Some(self.job.owner_uid), &[("job", &id)])
            .await?;
        self.job
            .log
            .attach(fd)
            .map_err(|e| DBusError::InvalidArgs(e.to_string()))
    }

    #[zbus(signal)]
    async fn completed(
        emitter: &SignalEmitter<'_>,
        success: bool,
        message: &str,
    ) -> zbus::Result<()>;
}

/// Puts `job` on the bus and keeps its properties published until it is retired.
pub async fn export(ctx: &Arc<Daemon>, job: Arc<Job>) -> Result<OwnedObjectPath, DBusError> {
    let path = OwnedObjectPath::try_from(job_path(job.id))
        .map_err(|e| DBusError::Failed(format!("bad job path: {e}")))?;
    let object = JobObject {
        job: job.clone(),
        ctx: ctx.clone(),
    };
    ctx.conn
        .object_server()
        .at(path.as_ref(), object)
        .await
        .map_err(|e| DBusError::Failed(format!("cannot export job: {e}")))?;
    tokio::spawn(publish(ctx.clone(), job, path.clone()));
    Ok(path)
}

async fn publish(ctx: Arc<Daemon>, job: Arc<Job>, path: OwnedObjectPath) {
    let emitter = match SignalEmitter::new(&ctx.conn, path.clone()) {
        Ok(e) => e,
        Err(e) => {
            tracing::error!(JOB_ID = job.id, "cannot publish job: {e}");
            return;
        }
    };
    loop {
        job.changed().await;
        let (dirty, status) = job.take_changes();
        if !dirty.is_empty() {
            if let Err(e) = emit_changes(&emitter, &dirty, &status).await {
                tracing::warn!(JOB_ID = job.id, "cannot signal job changes: {e}");
            }
        }
        if status.state.is_finished() {
            let success = status.state == pib_dbus_interfaces::types::JobState::Succeeded;
            if let Err(e) = JobObject::completed(&emitter, success, &status.message).await {
                tracing::warn!(JOB_ID = job.id, "cannot signal completion: {e}");
            }
            break;
        }
        // Throttle progress, but never the end: a fast job's final state and Completed go
        // out as soon as it finishes.
        tokio::select! {
            _ = tokio::time::sleep(THROTTLE) => {}
            _ = job.ended() => {}
        }
    }
    tokio::time::sleep(ctx.config.job_retention()).await;
    let _ = ctx
        .conn
        .object_server()
        .remove::<JobObject, _>(path.as_ref())
        .await;
    ctx.jobs.forget(job.id);
}

async fn emit_changes(
    emitter: &SignalEmitter<'_>,
    dirty: &std::collections::BTreeSet<&'static str>,
    s: &JobStatus,
) -> zbus::Result<()> {
    let mut changed: HashMap<&str, Variant<'_>> = HashMap::new();
    for &name in dirty {
        let value = match name {
            prop::STATE => Variant::from(s.state.as_str()),
            prop::PROGRESS => Variant::from(s.progress),
            prop::PROGRESS_VALID => Variant::from(s.progress_valid),
            prop::BYTES => Variant::from(s.bytes),
            prop::TOTAL_BYTES => Variant::from(s.total_bytes),
            prop::RATE => Variant::from(s.rate),
            prop::EXPECTED_END_TIME => Variant::from(s.expected_end_time),
            prop::STAGE => Variant::from(s.stage.as_str()),
            prop::MESSAGE => Variant::from(s.message.as_str()),
            prop::ERROR_NAME => Variant::from(s.error_name.as_str()),
            prop::RESULT => Variant::from(result_dict(&s.result)),
            _ => continue,
        };
        changed.insert(name, value);
    }
    zbus::fdo::Properties::properties_changed(
        emitter,
        InterfaceName::from_static_str_unchecked(JOB_INTERFACE),
        changed,
        std::borrow::Cow::Borrowed(&[]),
    )
    .await
}

fn result_dict(
    result: &std::collections::BTreeMap<&'static str, ResultValue>,
) -> HashMap<String, OwnedVariant> {
    result
        .iter()
        .filter_map(|(k, v)| result_variant(v).map(|v| ((*k).to_owned(), v)))
        .collect()
}

fn result_variant(v: &ResultValue) -> Option<OwnedVariant> {
    let v = match v {
        ResultValue::Str(s) => Variant::from(s.as_str()),
        ResultValue::U32(n) => Variant::from(*n),
        ResultValue::U64(n) => Variant::from(*n),
        ResultValue::I32(n) => Variant::from(*n),
        ResultValue::Bool(b) => Variant::from(*b),
        ResultValue::List(records) => {
            Variant::from(records.iter().map(result_dict).collect::<Vec<_>>())
        }
    };
    OwnedVariant::try_from(v).ok()
}
