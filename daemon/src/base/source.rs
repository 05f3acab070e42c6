//! Tar streams into the import: the pump every producer uses, and tarballs handed over as file
//! descriptors (ImportBase), decompressed on the fly.

use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use async_compression::tokio::bufread::{GzipDecoder, XzDecoder, ZstdDecoder};
use bytes::BytesMut;
use sha2::{Digest as _, Sha256};
use tokio::io::{AsyncRead, AsyncReadExt, BufReader, ReadBuf};
use tokio_util::sync::CancellationToken;

use super::docker::Sink;
use super::error::BaseError;
use super::http::PROGRESS_INTERVAL;
use super::Progress;

const CHUNK: usize = 64 * 1024;

/// Upper bound on the uncompressed tar stream of a handed-over tarball: far above any real
/// root filesystem, low enough that a compression bomb cannot fill Docker's disk unnoticed.
pub(crate) const MAX_TAR_BYTES: u64 = 32 << 30;

/// Sends a reader's bytes to the import: the loop every producer shares.
pub(crate) struct Pump<'a> {
    pub sink: &'a Sink,
    pub progress: &'a dyn Progress,
    pub cancel: &'a CancellationToken,
    /// Expected size for progress; 0 when unknown.
    pub total: u64,
    /// Refuse streams longer than this.
    pub limit: Option<u64>,
    /// Where progress stands, when the bytes that matter are counted elsewhere (the
    /// compressed input under a decoder); otherwise the bytes sent.
    pub position: Option<&'a (dyn Fn() -> u64 + Sync)>,
}

impl Pump<'_> {
    /// Reads `reader` to its end, calling `inspect` on every chunk (for hashing) before it
    /// goes to the import. Returns the number of bytes sent.
    pub(crate) async fn run<R: AsyncRead + Unpin>(
        &self,
        reader: &mut R,
        mut inspect: impl FnMut(&[u8]),
    ) -> Result<u64, BaseError> {
        let mut done: u64 = 0;
        let mut last = Instant::now();
        let at = |done: u64| self.position.map_or(done, |p| p());
        loop {
            let mut buf = BytesMut::with_capacity(CHUNK);
            let n = tokio::select! {
                r = reader.read_buf(&mut buf) => r.map_err(BaseError::ReadTarball)?,
                _ = self.cancel.cancelled() => return Err(BaseError::Cancelled),
            };
            if n == 0 {
                break;
            }
            done += n as u64;
            if let Some(limit) = self.limit.filter(|l| done > *l) {
                return Err(BaseError::TarballTooLarge { limit });
            }
            inspect(&buf);
            tokio::select! {
                r = self.sink.send(buf.freeze()) => r.map_err(|_| BaseError::ImportStopped)?,
                _ = self.cancel.cancelled() => return Err(BaseError::Cancelled),
            }
            if last.elapsed() >= PROGRESS_INTERVAL {
                self.progress.bytes(at(done), self.total);
                last = Instant::now();
            }
        }
        let end = at(done);
        self.progress
            .bytes(end, if self.total == 0 { end } else { self.total });
        Ok(done)
    }
}

/// Compression of a handed-over tarball, told by its first bytes (file names mean nothing on
/// an fd, and clients may pipe).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    Xz,
    Zstd,
}

impl Compression {
    pub fn detect(head: &[u8]) -> Result<Compression, BaseError> {
        Ok(if head.starts_with(&[0x1f, 0x8b]) {
            Compression::Gzip
        } else if head.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0x00]) {
            Compression::Xz
        } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
            Compression::Zstd
        } else if head.starts_with(b"BZh") {
            return Err(BaseError::BadTarball(
                "bzip2 is not supported; use a plain, gzip, xz or zstd tarball".to_owned(),
            ));
        } else {
            // Anything else goes to Docker as a plain tar; it rejects what is not one.
            Compression::None
        })
    }
}

/// Sha256 and byte count of everything read through it (the tarball as handed over, before
/// decompression), shared so it can be read after the decoder on top has finished.
#[derive(Default)]
struct Tally {
    sha: Sha256,
    bytes: u64,
}

struct HashingReader<R> {
    inner: R,
    tally: Arc<Mutex<Tally>>,
}

impl<R: AsyncRead + Unpin> AsyncRead for HashingReader<R> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = r {
            let new = &buf.filled()[before..];
            let mut t = self.tally.lock().unwrap_or_else(|p| p.into_inner());
            t.sha.update(new);
            t.bytes += new.len() as u64;
        }
        r
    }
}

/// A readable end of what the client handed over: a regular file or a pipe.
enum Input {
    File(tokio::fs::File),
    Pipe(crate::fdio::Stalling<tokio::net::unix::pipe::Receiver>),
}

impl AsyncRead for Input {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Input::File(f) => Pin::new(f).poll_read(cx, buf),
            Input::Pipe(p) => Pin::new(p).poll_read(cx, buf),
        }
    }
}

/// Checks that a caller's fd is something we may read a tarball from: a regular file or a
/// pipe, open for reading, not an O_PATH handle. Returns the reader and, for files, the size.
fn open_input(fd: OwnedFd, stall: Duration) -> Result<(Input, u64), BaseError> {
    use rustix::fs::{FileType, OFlags};
    let flags = rustix::fs::fcntl_getfl(fd.as_fd())
        .map_err(|e| BaseError::BadTarball(format!("cannot inspect the file descriptor: {e}")))?;
    if flags.contains(OFlags::PATH) {
        return Err(BaseError::BadTarball(
            "the file descriptor is an O_PATH handle; open the file for reading".to_owned(),
        ));
    }
    let access = flags & OFlags::RWMODE;
    if access != OFlags::RDONLY && access != OFlags::RDWR {
        return Err(BaseError::BadTarball(
            "the file descriptor is not open for reading".to_owned(),
        ));
    }
    let st = rustix::fs::fstat(fd.as_fd())
        .map_err(|e| BaseError::BadTarball(format!("cannot inspect the file descriptor: {e}")))?;
    match FileType::from_raw_mode(st.st_mode) {
        FileType::RegularFile => {
            let file = std::fs::File::from(fd);
            // Progress counts from where the client left the offset (normally 0).
            let pos = rustix::fs::seek(file.as_fd(), rustix::fs::SeekFrom::Current(0)).unwrap_or(0);
            let size = u64::try_from(st.st_size).unwrap_or(0).saturating_sub(pos);
            Ok((Input::File(tokio::fs::File::from_std(file)), size))
        }
        FileType::Fifo => {
            let pipe = tokio::net::unix::pipe::Receiver::from_owned_fd(fd)
                .map_err(|e| BaseError::BadTarball(format!("cannot read from the pipe: {e}")))?;
            Ok((Input::Pipe(crate::fdio::Stalling::new(pipe, stall)), 0))
        }
        other => Err(BaseError::BadTarball(format!(
            "expected a regular file or a pipe, got {}",
            describe(other)
        ))),
    }
}

fn describe(t: rustix::fs::FileType) -> &'static str {
    use rustix::fs::FileType as T;
    match t {
        T::Directory => "a directory",
        T::Socket => "a socket",
        T::CharacterDevice => "a character device",
        T::BlockDevice => "a block device",
        T::Symlink => "a symbolic link",
        _ => "an unknown kind of file",
    }
}

/// Produces the tar stream of a handed-over tarball: checks the fd, detects the compression,
/// decompresses as it streams, and hashes the bytes as received.
pub(crate) async fn produce_from_fd(
    fd: OwnedFd,
    stall: Duration,
    sink: &Sink,
    progress: &dyn Progress,
    cancel: &CancellationToken,
) -> Result<super::docker::Produced, BaseError> {
    let (input, size) = open_input(fd, stall)?;
    progress.stage("import");
    let tally = Arc::new(Mutex::new(Tally::default()));
    let mut hashing = HashingReader {
        inner: input,
        tally: tally.clone(),
    };
    let head = tokio::select! {
        h = read_head(&mut hashing, 6) => h.map_err(BaseError::ReadTarball)?,
        _ = cancel.cancelled() => return Err(BaseError::Cancelled),
    };
    if head.is_empty() {
        return Err(BaseError::BadTarball("the tarball is empty".to_owned()));
    }
    let compression = Compression::detect(&head)?;
    // The magic bytes were consumed (and hashed); put them back in front of the stream.
    let mut raw = BufReader::with_capacity(CHUNK, io::Cursor::new(head).chain(hashing));
    progress.log(format!("tarball compression: {compression:?}"));
    let position = {
        let tally = tally.clone();
        move || tally.lock().map(|t| t.bytes).unwrap_or(0)
    };
    let pump = Pump {
        sink,
        progress,
        cancel,
        total: size,
        limit: Some(MAX_TAR_BYTES),
        position: Some(&position),
    };
    let noop = |_: &[u8]| {};
    match compression {
        Compression::None => pump.run(&mut raw, noop).await?,
        Compression::Gzip => {
            let mut d = GzipDecoder::new(&mut raw);
            // pigz and concatenated archives produce several gzip members.
            d.multiple_members(true);
            pump.run(&mut d, noop).await?
        }
        Compression::Xz => {
            let mut d = XzDecoder::new(&mut raw);
            d.multiple_members(true);
            pump.run(&mut d, noop).await?
        }
        Compression::Zstd => {
            let mut d = ZstdDecoder::new(&mut raw);
            d.multiple_members(true);
            pump.run(&mut d, noop).await?
        }
    };
    // The digest is of the whole tarball: read whatever the decoder left unread, so that it
    // is hashed too.
    let mut discard = tokio::io::sink();
    tokio::select! {
        r = tokio::io::copy(&mut raw, &mut discard) => {
            r.map_err(BaseError::ReadTarball)?;
        }
        _ = cancel.cancelled() => return Err(BaseError::Cancelled),
    }
    let t = std::mem::take(&mut *tally.lock().unwrap_or_else(|p| p.into_inner()));
    Ok(super::docker::Produced {
        sha256: hex::encode(t.sha.finalize()),
    })
}

/// Reads up to `n` bytes, fewer only at the end of the input: a pipe may deliver the magic
/// bytes in pieces.
async fn read_head<R: AsyncRead + Unpin>(r: &mut R, n: usize) -> io::Result<Vec<u8>> {
    let mut head = vec![0u8; n];
    let mut have = 0;
    while have < n {
        let got = r.read(&mut head[have..]).await?;
        if got == 0 {
            break;
        }
        have += got;
    }
    head.truncate(have);
    Ok(head)
}
