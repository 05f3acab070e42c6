//! File descriptors from callers (DESIGN §3 rule 3): the daemon never opens a path a caller
//! names; files cross the bus as fds the caller opened with its own rights. This module checks
//! such fds and turns them into non-blocking async readers and writers.

use std::future::Future;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use rustix::fs::{FileType, OFlags};
use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// What a caller's fd must allow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    Read,
    Write,
}

/// Kinds of file a method accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Kinds {
    pub pipe: bool,
    pub file: bool,
    pub terminal: bool,
}

impl Kinds {
    pub const PIPE_OR_FILE: Kinds = Kinds {
        pipe: true,
        file: true,
        terminal: false,
    };
    pub const STREAM: Kinds = Kinds {
        pipe: true,
        file: true,
        terminal: true,
    };
}

/// Why a caller's fd was refused.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum FdError {
    #[error("the {what} descriptor is an O_PATH descriptor; pass one opened for {access}")]
    PathOnly {
        what: &'static str,
        access: &'static str,
    },
    #[error("the {what} descriptor is not open for {access}")]
    WrongAccess {
        what: &'static str,
        access: &'static str,
    },
    #[error("the {what} descriptor is {kind}; pass {expected}")]
    WrongKind {
        what: &'static str,
        kind: &'static str,
        expected: &'static str,
    },
    #[error("cannot use the {what} descriptor: {detail}")]
    Io { what: &'static str, detail: String },
}

/// A caller's fd that passed [`check`].
#[derive(Debug)]
pub struct CheckedFd {
    fd: OwnedFd,
    kind: FileType,
    what: &'static str,
}

fn access_word(access: Access) -> &'static str {
    match access {
        Access::Read => "reading",
        Access::Write => "writing",
    }
}

/// Checks a caller's fd without reading, writing or reopening it, so bad input is refused
/// before anyone is asked for a password. `what` names the argument in messages.
pub fn check(
    fd: OwnedFd,
    what: &'static str,
    access: Access,
    kinds: Kinds,
) -> Result<CheckedFd, FdError> {
    let io = |e: rustix::io::Errno| FdError::Io {
        what,
        detail: e.to_string(),
    };
    let flags = rustix::fs::fcntl_getfl(&fd).map_err(io)?;
    let access_name = access_word(access);
    if flags.contains(OFlags::PATH) {
        return Err(FdError::PathOnly {
            what,
            access: access_name,
        });
    }
    let mode = flags & OFlags::RWMODE;
    let allowed = match access {
        Access::Read => mode == OFlags::RDONLY || mode == OFlags::RDWR,
        Access::Write => mode == OFlags::WRONLY || mode == OFlags::RDWR,
    };
    if !allowed {
        return Err(FdError::WrongAccess {
            what,
            access: access_name,
        });
    }
    let kind = FileType::from_raw_mode(rustix::fs::fstat(&fd).map_err(io)?.st_mode);
    let expected = match kinds {
        Kinds { terminal: true, .. } => "a pipe, a regular file or a terminal",
        _ => "a pipe or a regular file",
    };
    let refuse = |kind| FdError::WrongKind {
        what,
        kind,
        expected,
    };
    match kind {
        FileType::Fifo if kinds.pipe => {}
        FileType::RegularFile if kinds.file => {}
        FileType::CharacterDevice if kinds.terminal && rustix::termios::isatty(&fd) => {}
        FileType::Fifo => return Err(refuse("a pipe")),
        FileType::RegularFile => return Err(refuse("a regular file")),
        FileType::Directory => return Err(refuse("a directory")),
        FileType::Socket => return Err(refuse("a socket")),
        FileType::CharacterDevice => return Err(refuse("a character device")),
        FileType::BlockDevice => return Err(refuse("a block device")),
        _ => return Err(refuse("an unknown kind of file")),
    }
    Ok(CheckedFd { fd, kind, what })
}

impl CheckedFd {
    /// The fd for blocking use (e.g. in `spawn_blocking`).
    pub fn into_std(self) -> std::fs::File {
        std::fs::File::from(self.fd)
    }

    /// A non-blocking descriptor of our own for the same pipe or terminal: setting O_NONBLOCK
    /// on the caller's open file description would change it for the caller too (it may be
    /// their stdout or their terminal), so we open the object anew through /proc/self/fd.
    /// Regular files never block and are duplicated as they are.
    fn own_nonblocking(self, access: Access) -> Result<OwnedFd, FdError> {
        let what = self.what;
        if self.kind == FileType::RegularFile {
            return Ok(self.fd);
        }
        let own = format!("/proc/self/fd/{}", self.fd.as_fd().as_raw_fd());
        let mode = match access {
            Access::Read => OFlags::RDONLY,
            Access::Write => OFlags::WRONLY,
        };
        let flags = mode | OFlags::NONBLOCK | OFlags::CLOEXEC | OFlags::NOCTTY;
        rustix::fs::open(own.as_str(), flags, rustix::fs::Mode::empty()).map_err(|e| FdError::Io {
            what,
            detail: e.to_string(),
        })
    }

    /// Whether the descriptor was opened with O_APPEND (positioned writes would go astray).
    pub fn appends(&self) -> bool {
        rustix::fs::fcntl_getfl(&self.fd).is_ok_and(|f| f.contains(OFlags::APPEND))
    }

    /// A blocking descriptor of our own for reading (used on a blocking thread); see
    /// `into_blocking_writer`.
    pub fn into_blocking_reader(self) -> Result<OwnedFd, FdError> {
        self.reopen_blocking(OFlags::RDONLY)
    }

    /// A blocking descriptor of our own for writing (used on a blocking thread): a pipe is
    /// reopened through /proc/self/fd, so the caller's open file description keeps its flags;
    /// a regular file is used as it is.
    pub fn into_blocking_writer(self) -> Result<OwnedFd, FdError> {
        self.reopen_blocking(OFlags::WRONLY)
    }

    fn reopen_blocking(self, mode: OFlags) -> Result<OwnedFd, FdError> {
        let what = self.what;
        if self.kind == FileType::RegularFile {
            return Ok(self.fd);
        }
        let own = format!("/proc/self/fd/{}", self.fd.as_fd().as_raw_fd());
        let flags = mode | OFlags::CLOEXEC | OFlags::NOCTTY;
        rustix::fs::open(own.as_str(), flags, rustix::fs::Mode::empty()).map_err(|e| FdError::Io {
            what,
            detail: e.to_string(),
        })
    }

    pub fn into_async_reader(self) -> Result<FdReader, FdError> {
        let what = self.what;
        let file = self.kind == FileType::RegularFile;
        let fd = self.own_nonblocking(Access::Read)?;
        Ok(if file {
            FdReader::File(tokio::fs::File::from_std(std::fs::File::from(fd)))
        } else {
            FdReader::Stream(register(fd, what)?)
        })
    }

    pub fn into_async_writer(self) -> Result<FdWriter, FdError> {
        let what = self.what;
        let file = self.kind == FileType::RegularFile;
        let fd = self.own_nonblocking(Access::Write)?;
        Ok(if file {
            FdWriter::File(tokio::fs::File::from_std(std::fs::File::from(fd)))
        } else {
            FdWriter::Stream(register(fd, what)?)
        })
    }
}

fn register(fd: OwnedFd, what: &'static str) -> Result<AsyncFd<OwnedFd>, FdError> {
    crate::sys::async_fd(fd).map_err(|e| FdError::Io {
        what,
        detail: e.to_string(),
    })
}

/// An async reader over a caller's pipe, terminal or file.
pub enum FdReader {
    Stream(AsyncFd<OwnedFd>),
    File(tokio::fs::File),
}

/// An async writer over a caller's pipe, terminal or file.
pub enum FdWriter {
    Stream(AsyncFd<OwnedFd>),
    File(tokio::fs::File),
}

impl AsyncRead for FdReader {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            FdReader::File(f) => Pin::new(f).poll_read(cx, buf),
            FdReader::Stream(fd) => loop {
                let mut guard = ready!(fd.poll_read_ready(cx))?;
                let unfilled = buf.initialize_unfilled();
                match guard.try_io(|inner| {
                    rustix::io::read(inner.get_ref(), &mut *unfilled).map_err(std::io::Error::from)
                }) {
                    Ok(Ok(n)) => {
                        buf.advance(n);
                        return Poll::Ready(Ok(()));
                    }
                    // A terminal whose other side is gone reads as EIO: that is end of input.
                    Ok(Err(e)) if e.raw_os_error() == Some(libc::EIO) => {
                        return Poll::Ready(Ok(()))
                    }
                    Ok(Err(e)) => return Poll::Ready(Err(e)),
                    Err(_would_block) => continue,
                }
            },
        }
    }
}

impl AsyncWrite for FdWriter {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            FdWriter::File(f) => Pin::new(f).poll_write(cx, data),
            FdWriter::Stream(fd) => loop {
                let mut guard = ready!(fd.poll_write_ready(cx))?;
                match guard.try_io(|inner| {
                    rustix::io::write(inner.get_ref(), data).map_err(std::io::Error::from)
                }) {
                    Ok(result) => return Poll::Ready(result),
                    Err(_would_block) => continue,
                }
            },
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            FdWriter::File(f) => Pin::new(f).poll_flush(cx),
            FdWriter::Stream(_) => Poll::Ready(Ok(())),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            FdWriter::File(f) => Pin::new(f).poll_shutdown(cx),
            FdWriter::Stream(_) => Poll::Ready(Ok(())),
        }
    }
}

/// A caller's stream that fails with `TimedOut` once a read waits longer than `limit`: a
/// caller that opens a pipe and never writes must not hold a job (and its locks) forever.
/// Only the wait for the caller counts, not the time the consumer takes between reads.
pub struct Stalling<R> {
    inner: R,
    limit: Duration,
    timer: Pin<Box<tokio::time::Sleep>>,
    waiting: bool,
}

impl<R> Stalling<R> {
    pub fn new(inner: R, limit: Duration) -> Self {
        Stalling {
            inner,
            limit,
            timer: Box::pin(tokio::time::sleep(limit)),
            waiting: false,
        }
    }
}

/// The error a stalled caller stream ends with.
pub fn stalled(limit: Duration) -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::TimedOut,
        format!("the caller's stream sent nothing for {} s", limit.as_secs()),
    )
}

impl<R: AsyncRead + Unpin> AsyncRead for Stalling<R> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = &mut *self;
        if !this.waiting {
            let deadline = tokio::time::Instant::now() + this.limit;
            this.timer.as_mut().reset(deadline);
            this.waiting = true;
        }
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(r) => {
                this.waiting = false;
                Poll::Ready(r)
            }
            Poll::Pending => {
                ready!(this.timer.as_mut().poll(cx));
                this.waiting = false;
                Poll::Ready(Err(stalled(this.limit)))
            }
        }
    }
}

/// The blocking counterpart for pipes read on a worker thread: each read first waits at most
/// `limit` for data (or the end) to arrive.
pub struct StallingPipe {
    pipe: std::fs::File,
    limit: Duration,
}

impl StallingPipe {
    pub fn new(pipe: std::fs::File, limit: Duration) -> Self {
        StallingPipe { pipe, limit }
    }
}

impl std::io::Read for StallingPipe {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        use rustix::event::{poll, PollFd, PollFlags, Timespec};
        let timeout = Timespec {
            tv_sec: self.limit.as_secs() as i64,
            tv_nsec: i64::from(self.limit.subsec_nanos()),
        };
        loop {
            let mut fds = [PollFd::new(&self.pipe, PollFlags::IN)];
            match poll(&mut fds, Some(&timeout)) {
                Ok(0) => return Err(stalled(self.limit)),
                Ok(_) => return self.pipe.read(buf),
                Err(rustix::io::Errno::INTR) => continue,
                Err(e) => return Err(e.into()),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn refuse(fd: OwnedFd, access: Access) -> FdError {
        check(fd, "test", access, Kinds::PIPE_OR_FILE).unwrap_err()
    }

    #[test]
    fn refuses_wrong_kinds_and_access() {
        let (r, w) = rustix::pipe::pipe().unwrap();
        assert!(matches!(
            refuse(r, Access::Write),
            FdError::WrongAccess { .. }
        ));
        assert!(matches!(
            refuse(w, Access::Read),
            FdError::WrongAccess { .. }
        ));
        let dir = rustix::fs::open(".", OFlags::PATH, 0.into()).unwrap();
        assert!(matches!(
            refuse(dir, Access::Read),
            FdError::PathOnly { .. }
        ));
        let dir = rustix::fs::open(".", OFlags::RDONLY | OFlags::DIRECTORY, 0.into()).unwrap();
        assert!(matches!(
            refuse(dir, Access::Read),
            FdError::WrongKind {
                kind: "a directory",
                ..
            }
        ));
        let (a, _b) = std::os::unix::net::UnixStream::pair().unwrap();
        assert!(matches!(
            refuse(a.into(), Access::Read),
            FdError::WrongKind {
                kind: "a socket",
                ..
            }
        ));
        let null = rustix::fs::open("/dev/null", OFlags::RDWR, 0.into()).unwrap();
        assert!(matches!(
            check(null, "t", Access::Read, Kinds::STREAM).unwrap_err(),
            FdError::WrongKind {
                kind: "a character device",
                ..
            }
        ));
    }

    #[tokio::test]
    async fn pipes_become_async_without_touching_the_callers_flags() {
        let (r, w) = rustix::pipe::pipe().unwrap();
        let w_flags_before = rustix::fs::fcntl_getfl(&w).unwrap();
        let w2 = w.try_clone().unwrap();
        let mut writer = check(w2, "out", Access::Write, Kinds::STREAM)
            .unwrap()
            .into_async_writer()
            .unwrap();
        writer.write_all(b"hello").await.unwrap();
        drop(writer);
        assert_eq!(rustix::fs::fcntl_getfl(&w).unwrap(), w_flags_before);
        drop(w);
        let mut reader = check(r, "in", Access::Read, Kinds::STREAM)
            .unwrap()
            .into_async_reader()
            .unwrap();
        let mut got = String::new();
        reader.read_to_string(&mut got).await.unwrap();
        assert_eq!(got, "hello");
    }

    #[tokio::test]
    async fn a_silent_stream_times_out_but_a_slow_consumer_does_not() {
        let (r, w) = rustix::pipe::pipe().unwrap();
        let reader = check(r, "in", Access::Read, Kinds::STREAM)
            .unwrap()
            .into_async_reader()
            .unwrap();
        let limit = Duration::from_millis(300);
        let mut reader = Stalling::new(reader, limit);
        rustix::io::write(&w, b"ab").unwrap();
        // The consumer dawdles past the limit between reads; only waiting for data counts.
        tokio::time::sleep(limit * 2).await;
        let mut buf = [0u8; 8];
        assert_eq!(reader.read(&mut buf).await.unwrap(), 2);
        let err = reader.read(&mut buf).await.unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::TimedOut, "{err}");
        drop(w);
    }

    #[test]
    fn a_silent_pipe_times_out_on_a_worker_thread() {
        use std::io::Read;
        let (r, w) = rustix::pipe::pipe().unwrap();
        let mut pipe = StallingPipe::new(std::fs::File::from(r), Duration::from_millis(200));
        rustix::io::write(&w, b"xyz").unwrap();
        let mut buf = [0u8; 8];
        assert_eq!(pipe.read(&mut buf).unwrap(), 3);
        let err = pipe.read(&mut buf).unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::TimedOut, "{err}");
        drop(w);
        assert_eq!(
            pipe.read(&mut buf).unwrap(),
            0,
            "the end still reads as the end"
        );
    }
}
