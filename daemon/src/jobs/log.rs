//! A job's log: kept in memory (bounded) so late readers get the backlog, and streamed to the
//! file descriptors that clients attach.

use std::collections::VecDeque;
use std::os::fd::OwnedFd;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::sync::broadcast;

use crate::fdio::{self, Access, CheckedFd, FdError, FdWriter, Kinds};

/// Backlog kept per job; older lines are dropped first (a note says how many).
const MAX_BACKLOG_BYTES: usize = 4 << 20;
/// Lines buffered per attached reader before it counts as lagging.
const FOLLOW_QUEUE: usize = 4096;
/// A reader that takes no data for this long is dropped, so a stuck client cannot pin a task.
const STALL_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Debug, Clone)]
enum Event {
    Line(Arc<str>),
    End,
}

struct Inner {
    lines: VecDeque<Arc<str>>,
    bytes: usize,
    dropped: u64,
    closed: bool,
}

pub struct JobLog {
    inner: Mutex<Inner>,
    tx: broadcast::Sender<Event>,
}

/// Writes one line, bounded by the stall timeout.
async fn write_line(sink: &mut FdWriter, line: &str) -> std::io::Result<()> {
    let mut buf = Vec::with_capacity(line.len() + 1);
    buf.extend_from_slice(line.as_bytes());
    buf.push(b'\n');
    tokio::time::timeout(STALL_TIMEOUT, sink.write_all(&buf))
        .await
        .unwrap_or_else(|_| Err(std::io::ErrorKind::TimedOut.into()))
}

/// Checks a caller's log descriptor (before authorization; see [`fdio::check`]).
pub fn checked_log_fd(fd: OwnedFd) -> Result<CheckedFd, FdError> {
    fdio::check(fd, "log", Access::Write, Kinds::PIPE_OR_FILE)
}

impl Default for JobLog {
    fn default() -> Self {
        Self::new()
    }
}

impl JobLog {
    pub fn new() -> JobLog {
        JobLog {
            inner: Mutex::new(Inner {
                lines: VecDeque::new(),
                bytes: 0,
                dropped: 0,
                closed: false,
            }),
            tx: broadcast::channel(FOLLOW_QUEUE).0,
        }
    }

    fn inner(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn push(&self, line: String) {
        let line: Arc<str> = line.into();
        let mut inner = self.inner();
        if inner.closed {
            return;
        }
        inner.bytes += line.len();
        inner.lines.push_back(line.clone());
        while inner.bytes > MAX_BACKLOG_BYTES {
            match inner.lines.pop_front() {
                Some(old) => {
                    inner.bytes -= old.len();
                    inner.dropped += 1;
                }
                None => break,
            }
        }
        // Sent under the lock so a concurrent subscribe sees each line exactly once.
        let _ = self.tx.send(Event::Line(line));
    }

    /// Marks the end of the log; attached readers finish after the last line.
    pub fn close(&self) {
        let mut inner = self.inner();
        inner.closed = true;
        let _ = self.tx.send(Event::End);
    }

    /// The backlog (with a note on dropped lines) and, while the log is open, a live feed.
    fn subscribe_events(&self) -> (Vec<Arc<str>>, Option<broadcast::Receiver<Event>>) {
        let inner = self.inner();
        let mut backlog = Vec::with_capacity(inner.lines.len() + 1);
        if inner.dropped > 0 {
            backlog.push(format!("[{} earlier log lines dropped]", inner.dropped).into());
        }
        backlog.extend(inner.lines.iter().cloned());
        let rx = (!inner.closed).then(|| self.tx.subscribe());
        (backlog, rx)
    }

    /// The backlog so far and whether the log is still open.
    #[cfg(test)]
    pub fn subscribe(&self) -> (Vec<Arc<str>>, bool) {
        let (backlog, rx) = self.subscribe_events();
        (backlog, rx.is_some())
    }

    /// Streams the log into `fd` in the background: backlog first, then new lines until the
    /// job ends; the descriptor is closed at the end.
    pub fn attach(&self, fd: CheckedFd) -> Result<(), FdError> {
        let mut sink = fd.into_async_writer()?;
        let (backlog, mut rx) = self.subscribe_events();
        tokio::spawn(async move {
            for line in backlog {
                if write_line(&mut sink, &line).await.is_err() {
                    return;
                }
            }
            let Some(rx) = rx.as_mut() else { return };
            loop {
                let line: Arc<str> = match rx.recv().await {
                    Ok(Event::Line(l)) => l,
                    Ok(Event::End) | Err(broadcast::error::RecvError::Closed) => return,
                    Err(broadcast::error::RecvError::Lagged(n)) => {
                        format!("[{n} log lines skipped: reader too slow]").into()
                    }
                };
                if write_line(&mut sink, &line).await.is_err() {
                    return;
                }
            }
        });
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustix::fs::OFlags;
    use std::io::Read;

    fn read_all(r: OwnedFd) -> String {
        let mut s = String::new();
        std::fs::File::from(r).read_to_string(&mut s).unwrap();
        s
    }

    #[tokio::test]
    async fn late_reader_gets_backlog_then_live_lines_then_eof() {
        let log = JobLog::new();
        log.push("one".into());
        let (r, w) = rustix::pipe::pipe().unwrap();
        log.attach(checked_log_fd(w).unwrap()).unwrap();
        log.push("two".into());
        log.close();
        let text = tokio::task::spawn_blocking(move || read_all(r))
            .await
            .unwrap();
        assert_eq!(text, "one\ntwo\n");
    }

    #[tokio::test]
    async fn attach_after_end_replays_everything() {
        let log = JobLog::new();
        log.push("a".into());
        log.close();
        log.push("ignored after close".into());
        let (r, w) = rustix::pipe::pipe().unwrap();
        log.attach(checked_log_fd(w).unwrap()).unwrap();
        let text = tokio::task::spawn_blocking(move || read_all(r))
            .await
            .unwrap();
        assert_eq!(text, "a\n");
    }

    #[tokio::test]
    async fn backlog_is_bounded_and_says_what_it_dropped() {
        let log = JobLog::new();
        let line = "x".repeat(1 << 20);
        for _ in 0..6 {
            log.push(line.clone());
        }
        let (backlog, open) = log.subscribe();
        assert!(open);
        assert!(
            backlog[0].contains("earlier log lines dropped"),
            "{}",
            &backlog[0][..40]
        );
        let kept: usize = backlog[1..].iter().map(|l| l.len()).sum();
        assert!(kept <= MAX_BACKLOG_BYTES);
    }

    #[tokio::test]
    async fn refuses_what_is_not_a_writable_pipe_or_file() {
        let kind = |fd: OwnedFd| match checked_log_fd(fd).err().unwrap() {
            FdError::WrongKind { kind, .. } => kind,
            FdError::WrongAccess { .. } => "read-only",
            FdError::PathOnly { .. } => "O_PATH",
            FdError::Io { .. } => "io",
        };
        let (r, _w) = rustix::pipe::pipe().unwrap();
        assert_eq!(kind(r), "read-only");
        let dir = rustix::fs::open(".", OFlags::PATH, 0.into()).unwrap();
        assert_eq!(kind(dir), "O_PATH");
        let (a, _b) = std::os::unix::net::UnixStream::pair().unwrap();
        assert_eq!(kind(OwnedFd::from(a)), "a socket");
        let null = rustix::fs::open("/dev/null", OFlags::WRONLY, 0.into()).unwrap();
        assert_eq!(kind(null), "a character device");
    }

    #[tokio::test]
    async fn a_pipe_without_reader_neither_blocks_nor_kills_the_daemon() {
        // SIGPIPE is ignored in Rust programs, so the write fails with EPIPE and the
        // writer task ends.
        let log = JobLog::new();
        let (r, w) = rustix::pipe::pipe().unwrap();
        drop(r);
        log.attach(checked_log_fd(w).unwrap()).unwrap();
        for i in 0..10 {
            log.push(format!("line {i}"));
        }
        log.close();
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    #[tokio::test]
    async fn regular_file_receives_the_log() {
        let dir = std::env::temp_dir().join(format!("pib-log-test-{}", std::process::id()));
        let file = std::fs::File::create(&dir).unwrap();
        let log = JobLog::new();
        log.push("line".into());
        log.attach(checked_log_fd(OwnedFd::from(file)).unwrap())
            .unwrap();
        log.close();
        // The writer task finishes once it has seen End; poll for the content.
        for _ in 0..100 {
            if std::fs::read_to_string(&dir).unwrap() == "line\n" {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(std::fs::read_to_string(&dir).unwrap(), "line\n");
        std::fs::remove_file(&dir).unwrap();
    }
}
