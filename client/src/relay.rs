//! Handing the client's own files to the daemon as descriptors.
//!
//! The daemon takes pipes, regular files and terminals, and refuses everything else (sockets,
//! `/dev/null` and other character devices): a socket would let a caller smuggle a connection
//! into a root process, and a device is not what a stream argument means. But a user's stdin is
//! `/dev/null` under cron or `ssh -n`, and stdout is a socket under systemd or socat. Such a
//! file is therefore passed through a pipe of our own, with a thread copying between the two;
//! everything else goes as it is, so that a terminal stays a terminal and a file keeps its
//! size and offset.

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::mpsc;
use std::time::Duration;

use rustix::fs::FileType;
use rustix::pipe::{pipe_with, PipeFlags};

/// Which way the data flows, seen from the daemon.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// The daemon reads from it (stdin, a tarball).
    Read,
    /// The daemon writes to it (stdout, stderr).
    Write,
}

/// A descriptor ready to be passed, with the copier behind it if there is one.
pub struct Handed {
    /// Our copy of what goes over the bus. It must be closed once the call is made: a relay
    /// pipe ends only when every copy of its daemon-side end is closed.
    fd: Option<OwnedFd>,
    /// Says when the copier thread is done.
    done: Option<mpsc::Receiver<()>>,
}

impl Handed {
    pub fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd
            .as_ref()
            .expect("the descriptor is used before it is closed")
            .as_fd()
    }

    /// Whether the data goes through a pipe of ours.
    #[cfg(test)]
    pub fn is_relayed(&self) -> bool {
        self.done.is_some()
    }

    /// Closes our copy; call it once the method call that passed it returned.
    pub fn close(&mut self) {
        self.fd = None;
    }

    /// Waits, at most `limit`, for the copier to pass on what the daemon wrote: output still
    /// in the pipe when the client exits would be lost.
    pub fn drain(mut self, limit: Duration) {
        self.close();
        if let Some(done) = self.done.take() {
            let _ = done.recv_timeout(limit);
        }
    }
}

/// Prepares `fd` (which the client keeps) to be passed for `direction`.
pub fn hand(fd: BorrowedFd<'_>, direction: Direction) -> io::Result<Handed> {
    match rustix::fs::fstat(fd) {
        Ok(st) if passable(FileType::from_raw_mode(st.st_mode), fd) => Ok(Handed {
            fd: Some(fd.try_clone_to_owned()?),
            done: None,
        }),
        Ok(_) => relay(Some(fd.try_clone_to_owned()?), direction),
        // A closed descriptor: nothing to read, nowhere to write.
        Err(rustix::io::Errno::BADF) => relay(None, direction),
        Err(e) => Err(e.into()),
    }
}

/// What the daemon accepts as it is.
fn passable(kind: FileType, fd: BorrowedFd<'_>) -> bool {
    match kind {
        FileType::Fifo | FileType::RegularFile => true,
        FileType::CharacterDevice => rustix::termios::isatty(fd),
        _ => false,
    }
}

fn relay(original: Option<OwnedFd>, direction: Direction) -> io::Result<Handed> {
    // Close-on-exec: a polkit agent started during the call must not hold an end open.
    let (read_end, write_end) = pipe_with(PipeFlags::CLOEXEC)?;
    let (passed, ours) = match direction {
        Direction::Read => (read_end, write_end),
        Direction::Write => (write_end, read_end),
    };
    let (tx, rx) = mpsc::channel();
    std::thread::Builder::new()
        .name("pib-relay".into())
        .spawn(move || {
            let mut pipe = File::from(ours);
            match (direction, original) {
                (Direction::Read, Some(from)) => copy(&mut File::from(from), &mut pipe),
                (Direction::Write, Some(to)) => copy(&mut pipe, &mut File::from(to)),
                (Direction::Read, None) => {}
                (Direction::Write, None) => copy(&mut pipe, &mut io::sink()),
            }
            let _ = tx.send(());
        })?;
    Ok(Handed {
        fd: Some(passed),
        done: Some(rx),
    })
}

/// Copies until either side ends. The reader leaving (a broken pipe) is the normal end of a
/// relay, not worth a word; a copy of a copy's failure would only be noise on stderr.
fn copy(from: &mut dyn Read, to: &mut dyn Write) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) => return,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => return,
        };
        if to.write_all(&buf[..n]).and_then(|()| to.flush()).is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;
    use std::os::unix::net::UnixStream;

    fn kind(fd: BorrowedFd<'_>) -> FileType {
        FileType::from_raw_mode(rustix::fs::fstat(fd).unwrap().st_mode)
    }

    #[test]
    fn pipes_and_files_go_as_they_are() {
        let (r, _w) = pipe_with(PipeFlags::CLOEXEC).unwrap();
        let h = hand(r.as_fd(), Direction::Read).unwrap();
        assert!(!h.is_relayed());
        assert_ne!(h.as_fd().as_raw_fd(), r.as_raw_fd(), "a copy of our own");
        let file = File::open("/proc/self/exe").unwrap();
        let h = hand(file.as_fd(), Direction::Read).unwrap();
        assert!(!h.is_relayed());
        assert_eq!(kind(h.as_fd()), FileType::RegularFile);
    }

    #[test]
    fn dev_null_becomes_an_empty_pipe() {
        let null = File::open("/dev/null").unwrap();
        let mut h = hand(null.as_fd(), Direction::Read).unwrap();
        assert!(h.is_relayed());
        assert_eq!(kind(h.as_fd()), FileType::Fifo);
        let mut daemon_side = File::from(h.as_fd().try_clone_to_owned().unwrap());
        h.close();
        let mut got = Vec::new();
        daemon_side.read_to_end(&mut got).unwrap();
        assert!(got.is_empty());
    }

    #[test]
    fn a_socket_for_output_is_fed_through_a_pipe() {
        let (ours, mut theirs) = UnixStream::pair().unwrap();
        let mut h = hand(ours.as_fd(), Direction::Write).unwrap();
        assert!(h.is_relayed());
        assert_eq!(kind(h.as_fd()), FileType::Fifo);
        let mut daemon_side = File::from(h.as_fd().try_clone_to_owned().unwrap());
        h.close();
        drop(ours);
        daemon_side
            .write_all(b"hello from the container\n")
            .unwrap();
        drop(daemon_side);
        h.drain(Duration::from_secs(5));
        let mut got = String::new();
        theirs.read_to_string(&mut got).unwrap();
        assert_eq!(got, "hello from the container\n");
    }

    #[test]
    fn a_socket_for_input_is_read_through_a_pipe() {
        let (ours, mut theirs) = UnixStream::pair().unwrap();
        let mut h = hand(ours.as_fd(), Direction::Read).unwrap();
        let mut daemon_side = File::from(h.as_fd().try_clone_to_owned().unwrap());
        h.close();
        drop(ours);
        theirs.write_all(b"input").unwrap();
        drop(theirs);
        let mut got = String::new();
        daemon_side.read_to_string(&mut got).unwrap();
        assert_eq!(got, "input");
    }
}
