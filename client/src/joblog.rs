//! The job's log arrives on a pipe that the client makes and hands to the daemon
//! (Job.AttachLog); the daemon closes it when the job ends.

use std::io;
use std::os::fd::OwnedFd;

use rustix::pipe::{pipe_with, PipeFlags};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::unix::pipe;

/// Returns (read end, write end). Close-on-exec, so a polkit agent started meanwhile does not
/// keep the write end open and the end of the log is seen.
pub fn pipe_pair() -> io::Result<(OwnedFd, OwnedFd)> {
    Ok(pipe_with(PipeFlags::CLOEXEC)?)
}

pub struct LogLines {
    reader: BufReader<pipe::Receiver>,
    /// Kept across calls: a read interrupted by another branch of a `select!` leaves its bytes
    /// here and the next call goes on from them.
    partial: Vec<u8>,
}

/// Longer lines are cut: the daemon forwards build output, which need not contain newlines.
const MAX_LINE: usize = 64 * 1024;

impl LogLines {
    pub fn new(read_end: OwnedFd) -> io::Result<LogLines> {
        Ok(LogLines {
            reader: BufReader::new(pipe::Receiver::from_owned_fd(read_end)?),
            partial: Vec::new(),
        })
    }

    /// The next line without its newline; `None` at the end of the log. Cancel-safe.
    pub async fn next_line(&mut self) -> io::Result<Option<String>> {
        loop {
            let buf = self.reader.fill_buf().await?;
            if buf.is_empty() {
                if self.partial.is_empty() {
                    return Ok(None);
                }
                return Ok(Some(self.take_line()));
            }
            let room = MAX_LINE - self.partial.len();
            let window = &buf[..buf.len().min(room)];
            if let Some(i) = window.iter().position(|&b| b == b'\n') {
                self.partial.extend_from_slice(&window[..i]);
                self.reader.consume(i + 1);
                return Ok(Some(self.take_line()));
            }
            let n = window.len();
            self.partial.extend_from_slice(window);
            self.reader.consume(n);
            if self.partial.len() >= MAX_LINE {
                return Ok(Some(self.take_line()));
            }
        }
    }

    fn take_line(&mut self) -> String {
        let line = String::from_utf8_lossy(&self.partial).into_owned();
        self.partial.clear();
        line
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[tokio::test]
    async fn lines_until_the_writer_closes() {
        let (r, w) = pipe_pair().unwrap();
        let mut lines = LogLines::new(r).unwrap();
        let mut w = std::fs::File::from(w);
        w.write_all(b"one\ntwo\r\nbad \xff byte\nlast without newline")
            .unwrap();
        drop(w);
        assert_eq!(lines.next_line().await.unwrap().as_deref(), Some("one"));
        assert_eq!(lines.next_line().await.unwrap().as_deref(), Some("two\r"));
        assert_eq!(
            lines.next_line().await.unwrap().as_deref(),
            Some("bad \u{fffd} byte")
        );
        assert_eq!(
            lines.next_line().await.unwrap().as_deref(),
            Some("last without newline")
        );
        assert_eq!(lines.next_line().await.unwrap(), None);
    }

    #[tokio::test]
    async fn endless_lines_are_cut() {
        let (r, w) = pipe_pair().unwrap();
        let mut lines = LogLines::new(r).unwrap();
        let writer = std::thread::spawn(move || {
            let mut w = std::fs::File::from(w);
            w.write_all(&vec![b'x'; MAX_LINE + 10]).unwrap();
        });
        assert_eq!(lines.next_line().await.unwrap().unwrap().len(), MAX_LINE);
        writer.join().unwrap();
        assert_eq!(lines.next_line().await.unwrap().unwrap().len(), 10);
        assert_eq!(lines.next_line().await.unwrap(), None);
    }
}
