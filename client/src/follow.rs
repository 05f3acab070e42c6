//! Starting a job and staying with it until it ends: its properties drive the progress display,
//! its log is copied to the user, Ctrl-C cancels it.

use std::collections::VecDeque;
use std::future::Future;
use std::io::IsTerminal;
use std::os::fd::AsFd;
use std::pin::Pin;
use std::time::Duration;

use futures_util::{FutureExt, StreamExt};
use pib_dbus_interfaces::names::JOB_INTERFACE;
use pib_dbus_interfaces::proxy::JobProxy;
use pib_dbus_interfaces::types::JobState;
use pib_dbus_interfaces::DBusError;
use tokio::signal::unix::{signal, Signal, SignalKind};
use zbus::fdo::PropertiesChanged;
use zbus::{DynamicType, Fd, OwnedObjectPath, Proxy};

use crate::bus::Bus;
use crate::calls::{self, Attempt};
use crate::errors::{explain, ClientError};
use crate::job::Snapshot;
use crate::joblog::{self, LogLines};
use crate::output::Ui;
use crate::progress::Progress;

/// After the job ended the daemon closes the log; lines still in the pipe are worth this wait,
/// a daemon that forgets to close is not worth more.
const LOG_DRAIN: Duration = Duration::from_secs(2);

/// Calls a method that returns a job, then follows the job. Ctrl-C is caught from before the
/// call, so that no job is left running unattended because of an untimely interrupt.
pub async fn start<B>(
    bus: &mut Bus,
    ui: &Ui,
    proxy: &Proxy<'_>,
    attempt: &'static Attempt,
    body: &B,
) -> Result<(String, Snapshot), ClientError>
where
    B: serde::Serialize + DynamicType,
{
    let mut follower = Follower::new(&[])?;
    let path = follower.call(bus, proxy, attempt, body).await?;
    let ended = follower.follow(bus, ui, &path, Watch::default()).await?;
    let snapshot = outcome(attempt, &path, ended.snapshot)?;
    Ok((path, snapshot))
}

/// Succeeded is success; anything else is the job's error, in the daemon's own terms.
pub fn outcome(
    attempt: &'static Attempt,
    path: &str,
    s: Snapshot,
) -> Result<Snapshot, ClientError> {
    let error = match s.state.parse::<JobState>() {
        Ok(JobState::Succeeded) => return Ok(s),
        Ok(JobState::Cancelled) => DBusError::Cancelled(s.message.clone()),
        _ => DBusError::from_name(&s.error_name, s.message.clone()),
    };
    Err(ClientError::Job {
        attempt,
        path: path.to_owned(),
        state: s.state,
        error,
    })
}

/// How a job is followed, beyond the global flags.
#[derive(Default)]
pub struct Watch<'a> {
    /// No progress display, and the log is held back rather than shown: it is handed to the
    /// caller, who shows it only if the job did not succeed (a shell's own output is the
    /// point there, and it may be sharing the terminal).
    pub silent: bool,
    /// When this resolves, the job is cancelled once, with its text shown as a note: for work
    /// on the client's side of the job that failed (the build context).
    pub abort: Option<Pin<Box<dyn Future<Output = String> + 'a>>>,
}

/// A job that ended, as last seen.
#[derive(Debug)]
pub struct Ended {
    pub snapshot: Snapshot,
    /// The log lines held back by a silent watch (the last `HELD_LINES`).
    pub held_log: Vec<String>,
}

/// A silent watch keeps this many of the last log lines: enough to see why a job failed.
const HELD_LINES: usize = 200;

/// Catches the interrupting signals for the whole life of a job: installed before the method
/// call, they stay until the client exits.
pub struct Follower {
    signals: Vec<Signal>,
}

impl Follower {
    /// SIGINT always; `extra` for commands where other signals must also end the job cleanly
    /// (a shell holding the terminal in raw mode).
    pub fn new(extra: &[SignalKind]) -> Result<Follower, ClientError> {
        let mut signals = Vec::with_capacity(1 + extra.len());
        for kind in std::iter::once(SignalKind::interrupt()).chain(extra.iter().copied()) {
            signals.push(signal(kind).map_err(ClientError::io("cannot catch signals"))?);
        }
        Ok(Follower { signals })
    }

    /// Calls the method that starts the job; its reply is the job's path.
    pub async fn call<B>(
        &mut self,
        bus: &mut Bus,
        proxy: &Proxy<'_>,
        attempt: &'static Attempt,
        body: &B,
    ) -> Result<String, ClientError>
    where
        B: serde::Serialize + DynamicType,
    {
        let path: OwnedObjectPath = tokio::select! {
            r = bus.call(proxy, attempt, body) => r?,
            _ = any_signal(&mut self.signals) => {
                return Err(ClientError::Interrupted { path: None })
            }
        };
        Ok(path.to_string())
    }

    /// Follows the job to its end. The first signal cancels the job and waits for it to wind
    /// down; a second one stops waiting.
    pub async fn follow(
        &mut self,
        bus: &mut Bus,
        ui: &Ui,
        path: &str,
        watch: Watch<'_>,
    ) -> Result<Ended, ClientError> {
        follow(bus, ui, path, &mut self.signals, watch).await
    }
}

/// Resolves when any of the signals arrives. `Signal::recv` is cancel-safe, so this is too.
async fn any_signal(signals: &mut [Signal]) {
    let waits = signals.iter_mut().map(|s| Box::pin(s.recv()));
    futures_util::future::select_all(waits).await;
}

/// Where the job's log lines go.
enum LogSink {
    Show,
    Hold(VecDeque<String>),
}

impl LogSink {
    fn take(&mut self, progress: &mut Progress, line: String) {
        match self {
            LogSink::Show => progress.log(&line),
            LogSink::Hold(held) => {
                if held.len() == HELD_LINES {
                    held.pop_front();
                }
                held.push_back(line);
            }
        }
    }
}

async fn follow(
    bus: &mut Bus,
    ui: &Ui,
    path: &str,
    signals: &mut [Signal],
    watch: Watch<'_>,
) -> Result<Ended, ClientError> {
    let job = bus.job(path).await?;
    let props = bus.properties(path).await?;
    // Subscribed before the first read: a change between the two is then seen twice rather
    // than never.
    let mut changes = props
        .receive_properties_changed()
        .await
        .map_err(ClientError::call(&calls::READ_JOB))?;
    let mut completed = job
        .receive_completed()
        .await
        .map_err(ClientError::call(&calls::READ_JOB))?;
    let mut owner = job
        .inner()
        .receive_owner_changed()
        .await
        .map_err(ClientError::call(&calls::READ_JOB))?;

    let mut snap = Snapshot::from_properties(&bus.job_properties(&props).await?);
    let (mut progress, mut sink) = if watch.silent {
        let quiet = Ui { quiet: true, ..*ui };
        (
            Progress::new(&quiet, path, false),
            LogSink::Hold(VecDeque::new()),
        )
    } else {
        (
            Progress::new(ui, path, std::io::stderr().is_terminal()),
            LogSink::Show,
        )
    };
    // A silent watch still reads the log, for the day the job fails; --quiet does not.
    let mut log = if ui.quiet && !watch.silent {
        None
    } else {
        match attach_log(bus, &job).await {
            Ok(lines) => Some(lines),
            Err(e) => {
                let ex = explain(&e, bus.interactive());
                if !watch.silent {
                    progress.warn(ui, &format!("cannot show the job's log: {}", ex.text));
                }
                None
            }
        }
    };
    progress.update(&snap);

    let mut abort = watch.abort;
    let mut cancel_requested = false;
    let mut completed_seen = false;
    while !snap.is_over() && !completed_seen {
        tokio::select! {
            Some(signal) = changes.next() => {
                let mut refetch = apply(&mut snap, &signal);
                // Several properties change together; showing each step would flicker.
                while let Some(Some(more)) = changes.next().now_or_never() {
                    refetch |= apply(&mut snap, &more);
                }
                if refetch {
                    snap = Snapshot::from_properties(&bus.job_properties(&props).await?);
                }
                progress.update(&snap);
            }
            Some(_) = completed.next() => completed_seen = true,
            line = next_line(&mut log) => match line {
                Some(line) => sink.take(&mut progress, line),
                None => log = None,
            },
            Some(new_owner) = owner.next() => {
                if new_owner.is_none() {
                    progress.finish();
                    return Err(ClientError::DaemonVanished { path: path.to_owned() });
                }
            }
            note = until_abort(&mut abort) => {
                abort = None;
                progress.warn(ui, &note);
                if !cancel_requested {
                    cancel_requested = true;
                    cancel(bus, ui, &job, &mut progress).await;
                }
            }
            _ = any_signal(signals) => {
                if cancel_requested {
                    progress.finish();
                    return Err(ClientError::Interrupted { path: Some(path.to_owned()) });
                }
                cancel_requested = true;
                progress.note("cancelling the job; press Ctrl-C again to stop waiting");
                cancel(bus, ui, &job, &mut progress).await;
            }
        }
    }

    // The final values are signalled before Completed, but whoever arrives late saw neither.
    if let Ok(p) = bus.job_properties(&props).await {
        snap = Snapshot::from_properties(&p);
    }
    if let Some(mut lines) = log {
        let _ = tokio::time::timeout(LOG_DRAIN, async {
            while let Ok(Some(line)) = lines.next_line().await {
                sink.take(&mut progress, line);
            }
        })
        .await;
    }
    progress.update(&snap);
    progress.finish();
    let held_log = match sink {
        LogSink::Show => Vec::new(),
        LogSink::Hold(held) => held.into(),
    };
    Ok(Ended {
        snapshot: snap,
        held_log,
    })
}

async fn cancel(bus: &mut Bus, ui: &Ui, job: &JobProxy<'_>, progress: &mut Progress) {
    if let Err(e) = bus.call::<_, ()>(job.inner(), &calls::CANCEL, &()).await {
        let ex = explain(&e, bus.interactive());
        progress.warn(ui, &ex.text);
    }
}

/// Pends forever without an abort trigger, or once it fired.
async fn until_abort<'a>(abort: &mut Option<Pin<Box<dyn Future<Output = String> + 'a>>>) -> String {
    match abort {
        Some(f) => f.await,
        None => std::future::pending().await,
    }
}

/// Takes in one PropertiesChanged signal; true when it invalidated values that must be re-read.
fn apply(snap: &mut Snapshot, signal: &PropertiesChanged) -> bool {
    let Ok(args) = signal.args() else {
        return false;
    };
    if args.interface_name().as_str() != JOB_INTERFACE {
        return false;
    }
    for (name, value) in args.changed_properties() {
        snap.apply(name, value);
    }
    !args.invalidated_properties().is_empty()
}

async fn attach_log(bus: &mut Bus, job: &JobProxy<'_>) -> Result<LogLines, ClientError> {
    let (read_end, write_end) =
        joblog::pipe_pair().map_err(ClientError::io("cannot make a pipe for the job's log"))?;
    bus.call::<_, ()>(
        job.inner(),
        &calls::ATTACH_LOG,
        &(Fd::from(write_end.as_fd()),),
    )
    .await?;
    // Only the daemon may hold the write end, or the log never ends.
    drop(write_end);
    LogLines::new(read_end).map_err(ClientError::io("cannot read the job's log"))
}

/// Pends forever once the log is gone, so that `select!` simply stops choosing it.
async fn next_line(log: &mut Option<LogLines>) -> Option<String> {
    match log {
        Some(lines) => lines.next_line().await.ok().flatten(),
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ended(state: &str, error_name: &str, message: &str) -> Snapshot {
        Snapshot {
            state: state.into(),
            error_name: error_name.into(),
            message: message.into(),
            ..Snapshot::default()
        }
    }

    const PATH: &str = "/org/pibuilder/PiBuilder1/jobs/3";

    #[test]
    fn outcomes() {
        assert!(outcome(&calls::REGISTER_BINFMT, PATH, ended("succeeded", "", "ok")).is_ok());
        match outcome(
            &calls::REGISTER_BINFMT,
            PATH,
            ended("failed", "org.pibuilder.PiBuilder1.Error.Conflict", "taken"),
        ) {
            Err(ClientError::Job { error, state, .. }) => {
                assert_eq!(error, DBusError::Conflict("taken".into()));
                assert_eq!(state, "failed");
            }
            other => panic!("{other:?}"),
        }
        match outcome(&calls::REGISTER_BINFMT, PATH, ended("failed", "", "boom")) {
            Err(ClientError::Job { error, .. }) => {
                assert_eq!(error, DBusError::Failed("boom".into()))
            }
            other => panic!("{other:?}"),
        }
        match outcome(
            &calls::REGISTER_BINFMT,
            PATH,
            ended("cancelled", "", "stopped"),
        ) {
            Err(ClientError::Job { error, .. }) => {
                assert_eq!(error, DBusError::Cancelled("stopped".into()))
            }
            other => panic!("{other:?}"),
        }
    }
}
