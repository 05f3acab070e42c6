//! Job machinery (DESIGN §4): long work runs as a job whose whole state lives in properties.
//!
//! This module owns the state and the lifecycle; `bus::job_object` exports a job on the bus and
//! publishes its changes. A worker gets a [`JobHandle`] to report progress, log and notice
//! cancellation; whatever it returns becomes the job's final state.

pub mod log;
mod rate;
pub mod record;

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

use pib_dbus_interfaces::types::{JobState, Operation};
use pib_dbus_interfaces::DBusError;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::idle::Activity;
use log::JobLog;
use rate::RateEstimator;

/// Names of the Job properties that change while a job runs.
pub mod prop {
    pub const STATE: &str = "State";
    pub const PROGRESS: &str = "Progress";
    pub const PROGRESS_VALID: &str = "ProgressValid";
    pub const BYTES: &str = "Bytes";
    pub const TOTAL_BYTES: &str = "TotalBytes";
    pub const RATE: &str = "Rate";
    pub const EXPECTED_END_TIME: &str = "ExpectedEndTime";
    pub const STAGE: &str = "Stage";
    pub const MESSAGE: &str = "Message";
    pub const ERROR_NAME: &str = "ErrorName";
    pub const RESULT: &str = "Result";
}

/// A value in a job's `Result` dictionary.
#[derive(Debug, Clone, PartialEq)]
pub enum ResultValue {
    Str(String),
    U32(u32),
    U64(u64),
    I32(i32),
    Bool(bool),
    /// A list of records (`aa{sv}`), e.g. the hosts a scan found.
    List(Vec<Record>),
}

/// One entry of a [`ResultValue::List`].
pub type Record = BTreeMap<&'static str, ResultValue>;

impl From<&str> for ResultValue {
    fn from(s: &str) -> Self {
        ResultValue::Str(s.to_owned())
    }
}

impl From<String> for ResultValue {
    fn from(s: String) -> Self {
        ResultValue::Str(s)
    }
}

impl From<u32> for ResultValue {
    fn from(v: u32) -> Self {
        ResultValue::U32(v)
    }
}

impl From<u64> for ResultValue {
    fn from(v: u64) -> Self {
        ResultValue::U64(v)
    }
}

impl From<bool> for ResultValue {
    fn from(v: bool) -> Self {
        ResultValue::Bool(v)
    }
}

impl From<Vec<Record>> for ResultValue {
    fn from(v: Vec<Record>) -> Self {
        ResultValue::List(v)
    }
}

impl From<i32> for ResultValue {
    fn from(v: i32) -> Self {
        ResultValue::I32(v)
    }
}

/// What a successful worker returns: the final message and the job's `Result`.
#[derive(Debug, Clone, Default)]
pub struct Outcome {
    pub message: String,
    pub result: BTreeMap<&'static str, ResultValue>,
}

impl Outcome {
    pub fn new(message: impl Into<String>) -> Outcome {
        Outcome {
            message: message.into(),
            result: BTreeMap::new(),
        }
    }

    pub fn with(mut self, key: &'static str, value: impl Into<ResultValue>) -> Outcome {
        self.result.insert(key, value.into());
        self
    }
}

impl From<String> for Outcome {
    fn from(message: String) -> Outcome {
        Outcome::new(message)
    }
}

/// The mutable part of a job, as exposed in its properties.
#[derive(Debug, Clone)]
pub struct JobStatus {
    pub state: JobState,
    pub progress: f64,
    pub progress_valid: bool,
    pub bytes: u64,
    pub total_bytes: u64,
    pub rate: u64,
    pub expected_end_time: u64,
    pub stage: String,
    pub message: String,
    pub error_name: String,
    pub result: BTreeMap<&'static str, ResultValue>,
}

struct Tracked {
    status: JobStatus,
    dirty: BTreeSet<&'static str>,
    rate: RateEstimator,
}

pub struct Job {
    pub id: u64,
    pub operation: Operation,
    pub owner_uid: u32,
    pub start_time_us: u64,
    tracked: Mutex<Tracked>,
    changed: Notify,
    /// Woken when the job ends, so publishing need not wait out its throttle.
    ended: Notify,
    cancel: CancellationToken,
    pub log: JobLog,
    /// On disk while the job runs, for the next daemon should this one be killed.
    note: Mutex<Option<record::Note>>,
}

pub fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

impl Job {
    fn new(id: u64, operation: Operation, owner_uid: u32) -> Job {
        Job {
            id,
            operation,
            owner_uid,
            start_time_us: now_us(),
            tracked: Mutex::new(Tracked {
                status: JobStatus {
                    state: JobState::Running,
                    progress: 0.0,
                    progress_valid: false,
                    bytes: 0,
                    total_bytes: 0,
                    rate: 0,
                    expected_end_time: 0,
                    stage: String::new(),
                    message: String::new(),
                    error_name: String::new(),
                    result: BTreeMap::new(),
                },
                dirty: BTreeSet::new(),
                rate: RateEstimator::default(),
            }),
            changed: Notify::new(),
            ended: Notify::new(),
            cancel: CancellationToken::new(),
            log: JobLog::new(),
            note: Mutex::new(None),
        }
    }

    fn tracked(&self) -> MutexGuard<'_, Tracked> {
        // A panic while holding the lock leaves plain data behind; keep serving it.
        self.tracked.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn status(&self) -> JobStatus {
        self.tracked().status.clone()
    }

    pub fn state(&self) -> JobState {
        self.tracked().status.state
    }

    /// Takes the set of properties changed since the last call, with a snapshot of the status.
    pub fn take_changes(&self) -> (BTreeSet<&'static str>, JobStatus) {
        let mut t = self.tracked();
        (std::mem::take(&mut t.dirty), t.status.clone())
    }

    /// Resolves once something changed since the last `take_changes`.
    /// Resolves once the job has ended (at once if it already has).
    pub async fn ended(&self) {
        let notified = self.ended.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        if self.state().is_finished() {
            return;
        }
        notified.await
    }

    pub async fn changed(&self) {
        self.changed.notified().await
    }

    pub fn request_cancel(&self) {
        self.cancel.cancel();
    }

    fn update(&self, f: impl FnOnce(&mut Tracked)) {
        f(&mut self.tracked());
        self.changed.notify_one();
    }

    fn finish(&self, result: Result<Outcome, DBusError>) {
        let cancelled = self.cancel.is_cancelled();
        self.update(|t| {
            let s = &mut t.status;
            match result {
                Ok(outcome) => {
                    s.state = JobState::Succeeded;
                    s.message = outcome.message;
                    s.result = outcome.result;
                    if s.progress_valid {
                        s.progress = 1.0;
                    }
                }
                Err(e) => {
                    let e = match e {
                        e if cancelled => DBusError::Cancelled(match e {
                            DBusError::Cancelled(m) => m,
                            other => format!("cancelled ({})", other.message()),
                        }),
                        e => e,
                    };
                    s.state = if matches!(e, DBusError::Cancelled(_)) {
                        JobState::Cancelled
                    } else {
                        JobState::Failed
                    };
                    s.message = e.message();
                    s.error_name = e.dbus_name();
                }
            }
            s.rate = 0;
            s.expected_end_time = 0;
            t.dirty.extend([
                prop::STATE,
                prop::MESSAGE,
                prop::ERROR_NAME,
                prop::PROGRESS,
                prop::RATE,
                prop::EXPECTED_END_TIME,
                prop::RESULT,
            ]);
        });
        self.log.close();
        self.ended.notify_waiters();
    }
}

/// What a worker uses to report on its job.
#[derive(Clone)]
pub struct JobHandle(Arc<Job>);

// Byte counts, rates and ETAs are driven by the data-moving jobs (image, flash) that later
// capabilities add; the machinery and its properties exist from the start.
#[allow(dead_code)]
impl JobHandle {
    pub fn owner_uid(&self) -> u32 {
        self.0.owner_uid
    }

    pub fn id(&self) -> u64 {
        self.0.id
    }

    /// Names the device this job writes in its note, so that a report after a crash can say
    /// which card was left incomplete.
    pub fn note_device(&self, device: &str) {
        let note = self.0.note.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = note.as_ref() {
            if let Err(e) = n.set_device(device) {
                tracing::warn!(
                    JOB_ID = self.0.id,
                    "cannot record the device of the job: {e}"
                );
            }
        }
    }

    pub fn log(&self, line: impl Into<String>) {
        let line = line.into();
        tracing::info!(JOB_ID = self.0.id, OPERATION = %self.0.operation, "{line}");
        self.0.log.push(line);
    }

    pub fn set_stage(&self, stage: impl Into<String>) {
        let stage = stage.into();
        self.0.update(|t| {
            t.status.stage = stage;
            t.dirty.insert(prop::STAGE);
        });
    }

    pub fn set_message(&self, message: impl Into<String>) {
        let message = message.into();
        self.0.update(|t| {
            t.status.message = message;
            t.dirty.insert(prop::MESSAGE);
        });
    }

    /// Sets the fraction done, or `None` when it cannot be known.
    pub fn set_progress(&self, fraction: Option<f64>) {
        self.0.update(|t| {
            t.status.progress_valid = fraction.is_some();
            t.status.progress = fraction.unwrap_or(0.0).clamp(0.0, 1.0);
            t.dirty.extend([prop::PROGRESS, prop::PROGRESS_VALID]);
        });
    }

    /// Reports data moved so far; derives rate, expected end and (with a total) progress.
    pub fn set_bytes(&self, bytes: u64, total_bytes: u64) {
        self.0.update(|t| {
            let now = now_us();
            let rate = t.rate.update(now, bytes);
            let s = &mut t.status;
            s.bytes = bytes;
            s.total_bytes = total_bytes;
            s.rate = rate;
            s.expected_end_time = match (total_bytes.checked_sub(bytes), rate) {
                (Some(left), r) if r > 0 && total_bytes > 0 => {
                    now + left.saturating_mul(1_000_000) / r
                }
                _ => 0,
            };
            if total_bytes > 0 {
                s.progress_valid = true;
                s.progress = (bytes as f64 / total_bytes as f64).clamp(0.0, 1.0);
            }
            t.dirty.extend([
                prop::BYTES,
                prop::TOTAL_BYTES,
                prop::RATE,
                prop::EXPECTED_END_TIME,
                prop::PROGRESS,
                prop::PROGRESS_VALID,
            ]);
        });
    }

    pub fn is_cancelled(&self) -> bool {
        self.0.cancel.is_cancelled()
    }

    /// The job's cancellation, for libraries that take a token.
    pub fn cancel_token(&self) -> CancellationToken {
        self.0.cancel.clone()
    }

    /// Resolves when the job is asked to stop.
    pub async fn cancelled(&self) {
        self.0.cancel.cancelled().await
    }

    /// A checkpoint for workers: an error once cancellation was requested.
    pub fn check_cancelled(&self) -> Result<(), DBusError> {
        if self.is_cancelled() {
            Err(DBusError::Cancelled("cancelled on request".into()))
        } else {
            Ok(())
        }
    }
}

/// All jobs of this daemon process, running and recently finished.
#[derive(Clone)]
pub struct JobRegistry {
    inner: Arc<RegistryInner>,
}

struct RegistryInner {
    next_id: AtomicU64,
    jobs: Mutex<BTreeMap<u64, Arc<Job>>>,
    activity: Activity,
    /// Where running jobs leave their notes; none in unit tests.
    state_dir: Option<PathBuf>,
}

impl JobRegistry {
    /// A registry that leaves no notes (unit tests).
    #[cfg(test)]
    pub fn new(activity: Activity) -> JobRegistry {
        Self::build(activity, None)
    }

    /// A registry whose running jobs leave notes in `state_dir` (see [`record`]).
    pub fn recording(activity: Activity, state_dir: PathBuf) -> JobRegistry {
        Self::build(activity, Some(state_dir))
    }

    fn build(activity: Activity, state_dir: Option<PathBuf>) -> JobRegistry {
        JobRegistry {
            inner: Arc::new(RegistryInner {
                next_id: AtomicU64::new(1),
                jobs: Mutex::new(BTreeMap::new()),
                activity,
                state_dir,
            }),
        }
    }

    fn jobs(&self) -> MutexGuard<'_, BTreeMap<u64, Arc<Job>>> {
        self.inner.jobs.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Creates a job in the running state; it does nothing until [`JobRegistry::run`].
    pub fn create(&self, operation: Operation, owner_uid: u32) -> Arc<Job> {
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        let job = Arc::new(Job::new(id, operation, owner_uid));
        self.jobs().insert(id, job.clone());
        self.inner.activity.touch();
        job
    }

    /// Runs `work` for `job` in the background; its result becomes the job's final state.
    pub fn run<F, Fut, O>(&self, job: Arc<Job>, work: F)
    where
        F: FnOnce(JobHandle) -> Fut + Send + 'static,
        Fut: Future<Output = Result<O, DBusError>> + Send + 'static,
        O: Into<Outcome> + Send + 'static,
    {
        let activity = self.inner.activity.clone();
        if let Some(dir) = &self.inner.state_dir {
            match record::note(dir, job.id, job.operation.as_str(), job.owner_uid) {
                Ok(n) => *job.note.lock().unwrap_or_else(|e| e.into_inner()) = Some(n),
                Err(e) => tracing::warn!(JOB_ID = job.id, "cannot record the running job: {e}"),
            }
        }
        let handle = JobHandle(job.clone());
        tokio::spawn(async move {
            // The worker runs in its own task so a panic in it fails the job instead of
            // leaving it running forever.
            let result: Result<Outcome, DBusError> = match tokio::spawn(work(handle)).await {
                Ok(result) => result.map(Into::into),
                Err(e) => Err(DBusError::Failed(format!("internal error: {e}"))),
            };
            match &result {
                Ok(o) => {
                    tracing::info!(JOB_ID = job.id, OPERATION = %job.operation, "job succeeded: {}", o.message)
                }
                Err(e) => {
                    tracing::warn!(JOB_ID = job.id, OPERATION = %job.operation, "job ended: {}: {}", e.short_name(), e.message())
                }
            }
            drop(job.note.lock().unwrap_or_else(|e| e.into_inner()).take());
            job.finish(result);
            activity.touch();
        });
    }

    pub fn forget(&self, id: u64) {
        self.jobs().remove(&id);
    }

    pub fn all(&self) -> Vec<Arc<Job>> {
        self.jobs().values().cloned().collect()
    }

    pub fn running(&self) -> usize {
        self.jobs()
            .values()
            .filter(|j| j.state() == JobState::Running)
            .count()
    }

    pub fn cancel_all(&self) {
        for job in self.jobs().values() {
            job.request_cancel();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn worker_result_becomes_final_state() {
        let reg = JobRegistry::new(Activity::new());
        let job = reg.create(Operation::BinfmtRegister, 1000);
        assert_eq!(reg.running(), 1);
        reg.run(job.clone(), |h| async move {
            h.set_stage("step");
            h.log("hello");
            Ok(Outcome::new("all done")
                .with("image", "x")
                .with("steps", 3u32))
        });
        while job.state() == JobState::Running {
            job.changed().await;
        }
        let s = job.status();
        assert_eq!(s.state, JobState::Succeeded);
        assert_eq!(s.message, "all done");
        assert_eq!(s.stage, "step");
        assert!(s.error_name.is_empty());
        assert_eq!(s.result.get("image"), Some(&ResultValue::from("x")));
        assert_eq!(s.result.get("steps"), Some(&ResultValue::U32(3)));
        assert_eq!(reg.running(), 0);
        let (backlog, _) = job.log.subscribe();
        assert_eq!(backlog.iter().map(|l| &**l).collect::<Vec<_>>(), ["hello"]);
    }

    #[tokio::test]
    async fn cancel_turns_any_error_into_cancelled() {
        let reg = JobRegistry::new(Activity::new());
        let job = reg.create(Operation::BinfmtRegister, 0);
        reg.run(job.clone(), |h| async move {
            h.cancelled().await;
            Err::<String, _>(DBusError::Failed("interrupted".into()))
        });
        job.request_cancel();
        while job.state() == JobState::Running {
            job.changed().await;
        }
        let s = job.status();
        assert_eq!(s.state, JobState::Cancelled);
        assert_eq!(s.error_name, "org.pibuilder.PiBuilder1.Error.Cancelled");
    }

    #[tokio::test]
    async fn panicking_worker_fails_the_job() {
        let reg = JobRegistry::new(Activity::new());
        let job = reg.create(Operation::BinfmtRegister, 0);
        reg.run(job.clone(), |_h| async move {
            if std::hint::black_box(true) {
                panic!("boom");
            }
            Ok(String::new())
        });
        while job.state() == JobState::Running {
            job.changed().await;
        }
        assert_eq!(job.state(), JobState::Failed);
        assert!(job.status().message.contains("internal error"));
    }

    #[tokio::test(start_paused = true)]
    async fn ended_resolves_at_the_end_and_after_it() {
        let reg = JobRegistry::new(Activity::new());
        let job = reg.create(Operation::BinfmtRegister, 0);
        let waiter = tokio::spawn({
            let job = job.clone();
            async move { job.ended().await }
        });
        tokio::time::sleep(std::time::Duration::from_secs(5)).await;
        assert!(!waiter.is_finished());
        reg.run(job.clone(), |_h| async move { Ok(String::from("done")) });
        waiter.await.unwrap();
        job.ended().await;
    }

    #[tokio::test]
    async fn changes_are_collected_until_taken() {
        let reg = JobRegistry::new(Activity::new());
        let job = reg.create(Operation::BinfmtRegister, 0);
        let h = JobHandle(job.clone());
        h.set_bytes(50, 100);
        h.set_stage("write");
        let (dirty, status) = job.take_changes();
        assert!(dirty.contains(prop::BYTES) && dirty.contains(prop::STAGE));
        assert_eq!(status.progress, 0.5);
        assert!(status.progress_valid);
        assert!(job.take_changes().0.is_empty());
    }
}
