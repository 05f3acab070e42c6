//! The build context on its way to the daemon: a tar stream of the chosen stages, written by a
//! thread into a pipe whose read end is passed to Manager.Build. The stages are read with the
//! user's rights, and a context of gigabytes never sits in memory or on disk.

use std::io::{self, BufWriter, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rustix::pipe::{pipe_with, PipeFlags};
use tokio::sync::Notify;

use crate::stages::{self, ContextSummary, Stage, StageError};

/// Tar writes in 512-byte pieces; a pipe takes 64 KiB at a time.
const BUFFER: usize = 64 * 1024;

/// Why the context could not be sent whole.
#[derive(Debug, thiserror::Error)]
pub enum ContextError {
    #[error("{0}")]
    Stage(#[source] StageError),
    #[error("cannot write the build context: {0}")]
    Io(#[source] io::Error),
}

impl ContextError {
    /// The daemon stopped reading (the build failed or was cancelled): the job says why, and
    /// the pipe's end is only a consequence.
    pub fn is_reader_gone(&self) -> bool {
        if matches!(self, ContextError::Stage(StageError::Write(_))) {
            return true;
        }
        let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(self);
        while let Some(e) = cause {
            if let Some(io) = e.downcast_ref::<io::Error>() {
                if io.kind() == io::ErrorKind::BrokenPipe {
                    return true;
                }
            }
            cause = e.source();
        }
        false
    }
}

pub type Outcome = Result<ContextSummary, ContextError>;

/// Where the writer thread leaves its outcome.
#[derive(Default)]
struct Shared {
    outcome: Mutex<Option<Outcome>>,
    done: Notify,
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Outcome>> {
        self.outcome.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Resolves once the writer has finished, whichever way.
    async fn wait(&self) {
        loop {
            // Registered before the check, so that a notification in between is not lost.
            let notified = self.done.notified();
            if self.lock().is_some() {
                return;
            }
            notified.await;
        }
    }
}

/// A context being written.
pub struct ContextStream {
    read_end: Option<OwnedFd>,
    shared: Arc<Shared>,
}

impl ContextStream {
    /// Starts writing `stages` into a new pipe. The writer blocks until the daemon reads, so it
    /// is started before the call that hands over the read end: a daemon that reads during the
    /// call must not wait for a writer that waits for the call.
    pub fn start(stages: Vec<Stage>) -> io::Result<ContextStream> {
        // Close-on-exec: a polkit agent started during the call must not hold the read end
        // (the writer would never see the daemon leave) or the write end (the daemon would
        // never see the end of the stream).
        let (read_end, write_end) = pipe_with(PipeFlags::CLOEXEC)?;
        let shared = Arc::new(Shared::default());
        let theirs = Arc::clone(&shared);
        std::thread::Builder::new()
            .name("pib-context".into())
            .spawn(move || {
                let outcome = write(&stages, write_end);
                *theirs.lock() = Some(outcome);
                theirs.done.notify_waiters();
            })?;
        Ok(ContextStream {
            read_end: Some(read_end),
            shared,
        })
    }

    /// The descriptor to pass to Manager.Build.
    pub fn read_end(&self) -> BorrowedFd<'_> {
        self.read_end
            .as_ref()
            .expect("the read end is passed before it is closed")
            .as_fd()
    }

    /// Closes our copy of the read end, once the call returned: from then on only the daemon
    /// reads, and when it stops, the writer learns so (a broken pipe) instead of blocking.
    pub fn close_read_end(&mut self) {
        self.read_end = None;
    }

    /// Resolves with a note when the writer failed for a reason of its own (a stage file
    /// that could not be read), which means the job must not go on with half a context.
    pub async fn failed(&self) -> String {
        self.shared.wait().await;
        if let Some(Err(e)) = self.shared.lock().as_ref() {
            if !e.is_reader_gone() {
                return format!("{e}; cancelling the build");
            }
        }
        // Finished well, or the daemon stopped reading: nothing to act on.
        std::future::pending().await
    }

    /// The writer's outcome, waiting for it at most `limit` (the daemon may end the job
    /// without reading everything, and then nobody makes the writer finish).
    pub async fn outcome(&self, limit: Duration) -> Option<Outcome> {
        let _ = tokio::time::timeout(limit, self.shared.wait()).await;
        self.shared.lock().take()
    }
}

fn write(stages: &[Stage], write_end: OwnedFd) -> Outcome {
    let mut out = BufWriter::with_capacity(BUFFER, std::fs::File::from(write_end));
    let summary = stages::write_context(stages, &mut out).map_err(ContextError::Stage)?;
    // BufWriter would flush on drop too, but silently: a context that did not arrive whole
    // must be an error.
    out.flush().map_err(ContextError::Io)?;
    Ok(summary)
}
