//! Handing a finished image to the client: one ordered pass over the image
//! that hashes it, builds its bmap and writes it (raw or compressed) to the
//! descriptor the client passed in.

use std::fs::File;
use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::fs::FileExt;
use std::sync::mpsc;
use std::thread;

use liblzma::stream::{Action, Check, MtStreamBuilder, Status};
use rustix::event::{PollFd, PollFlags, Timespec};
use rustix::fs::{FileType, OFlags};
use rustix::io::Errno;
use sha2::{Digest, Sha256};
use zstd::stream::raw::{Operation, OutBuffer};

use super::bmap::{self, BmapRange, BLOCK_SIZE};

/// Image bytes handled per step: large enough that syscalls and callbacks
/// cost nothing measurable, small enough that cancellation is noticed within
/// milliseconds and that memory stays at a few MiB whatever the image size.
const CHUNK: usize = 4 << 20;

/// Compressed bytes collected from the encoder before each write.
const COMPRESSED_CHUNK: usize = 1 << 20;

/// How long to wait for a full non-blocking output to drain before asking
/// `cancelled()` again.
const POLL_INTERVAL: Timespec = Timespec {
    tv_sec: 0,
    tv_nsec: 100_000_000,
};

const ZSTD_LEVEL: i32 = 3;
// Preset 6 (xz's default) runs at about 10 MiB/s on two cores here, minutes for a card
// image; 3 is about four times faster for a few percent more output.
const XZ_PRESET: u32 = 3;
/// Lets the multithreaded xz encoder return while its workers are busy, so a
/// cancellation is seen within this many milliseconds instead of after a whole
/// block (24 MiB at preset 6) is compressed.
const XZ_TIMEOUT_MS: u32 = 200;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    Zstd,
    Xz,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivered {
    /// Hex sha256 of the whole image as extracted, holes read as zeros.
    pub image_sha256: String,
    pub image_size: u64,
    /// The bmaptool XML describing the image's mapped blocks.
    pub bmap: String,
    /// Hex sha256 of the bytes written to the output: the compressed stream,
    /// or the image itself when uncompressed.
    pub output_sha256: String,
    pub output_size: u64,
    /// Bytes in the mapped ranges (whole blocks, clipped to the image size).
    pub mapped_bytes: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum DeliverError {
    /// The output ran out of room: ENOSPC, EDQUOT or EFBIG.
    #[error("no space left on the output")]
    NoSpace,
    #[error("delivery cancelled")]
    Cancelled,
    /// The reading side went away: EPIPE (or ECONNRESET on a socket).
    #[error("the output was closed by its reader")]
    OutputClosed,
    #[error(transparent)]
    Io(#[from] io::Error),
}

/// Writes the first `len` bytes of `image` to `out` and describes them.
///
/// What `out` receives depends on what it is:
/// - an uncompressed regular file (without `O_APPEND`) is truncated to zero,
///   then to `len`, and only the mapped ranges are written at their offsets,
///   so it stays as sparse as the image. The descriptor's offset is unused.
/// - anything else (pipe, socket, character or block device, appending file,
///   or any output when compressing) gets every byte in order with `write`,
///   starting at its current offset.
///
/// Regular files and block devices are `fdatasync`ed at the end, because on
/// NFS, FUSE or thin-provisioned storage a missing byte of space may only be
/// reported at writeback, and an SD card must not look finished while its
/// data is still in the page cache.
///
/// Pipes and sockets are switched to `O_NONBLOCK` for the duration (and
/// switched back afterwards), so a reader that stops reading cannot hold off
/// `cancelled()`: a full output is waited on with `poll` in 100 ms steps.
/// This changes the flag on the open file description, which the client
/// shares if it kept a copy of the descriptor. Writing to a pipe whose reader
/// is gone raises SIGPIPE, which must be ignored in the calling process (Rust
/// programs ignore it by default) to get [`DeliverError::OutputClosed`].
///
/// `threads` is the number of compression workers: for zstd 0 means compress
/// on the calling thread, for xz 0 and 1 both mean one worker.
///
/// If the delivery fails or is cancelled while writing a sparse regular file,
/// that file is truncated to zero: it already has its full length and would
/// otherwise look like a complete image.
pub fn deliver(
    image: &File,
    len: u64,
    out: OwnedFd,
    compression: Option<Compression>,
    threads: u32,
    cancelled: &dyn Fn() -> bool,
    progress: &mut dyn FnMut(u64),
) -> Result<Delivered, DeliverError> {
    if cancelled() {
        return Err(DeliverError::Cancelled);
    }
    let image_len = rustix::fs::fstat(image).map_err(io::Error::from)?.st_size as u64;
    if image_len < len {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("image is {image_len} bytes, shorter than the {len} to deliver"),
        )
        .into());
    }
    let ranges = bmap::mapped_ranges(image, len, BLOCK_SIZE)?;

    let out = File::from(out);
    let file_type =
        FileType::from_raw_mode(rustix::fs::fstat(&out).map_err(io::Error::from)?.st_mode);
    let flags = rustix::fs::fcntl_getfl(&out).map_err(io::Error::from)?;
    // With O_APPEND, Linux pwrite ignores the offset and appends, so such a
    // file can only be written in order.
    let sparse = file_type == FileType::RegularFile
        && compression.is_none()
        && !flags.contains(OFlags::APPEND);
    let sync = matches!(file_type, FileType::RegularFile | FileType::BlockDevice);

    let sink = if sparse {
        Sink::Sparse(SparseFile::create(out, len)?)
    } else {
        let encoder = match compression {
            None => Encoder::Plain,
            Some(Compression::Zstd) => Encoder::zstd(len, threads)?,
            Some(Compression::Xz) => Encoder::xz(threads)?,
        };
        let output = Output::new(
            out,
            file_type,
            flags,
            compression.is_some(),
            sync,
            cancelled,
        )?;
        Sink::Stream(Box::new(Streamer { encoder, output }))
    };

    let mut walk = Walk {
        image,
        sink,
        whole: WholeHash::start()?,
        // Never written, so it costs no memory, and writing holes from it
        // reads the kernel's shared zero page, which stays in cache.
        zeros: vec![0; CHUNK],
        processed: 0,
        cancelled,
        progress,
    };
    let walked = walk.run(&ranges, len);
    let Walk { sink, whole, .. } = walk;
    let (bmap_ranges, mapped_bytes) = match walked {
        Ok(walked) => walked,
        Err(err) => {
            sink.abandon();
            return Err(err);
        }
    };
    let (output_sha256, output_size) = sink.finish()?;

    let image_sha256 = bmap::hex(&whole.finish()?.finalize());
    Ok(Delivered {
        output_sha256: output_sha256.unwrap_or_else(|| image_sha256.clone()),
        image_sha256,
        image_size: len,
        bmap: bmap::bmap_xml(len, BLOCK_SIZE, &bmap_ranges),
        output_size,
        mapped_bytes,
    })
}

/// The state of the single ordered pass over the image.
struct Walk<'a> {
    image: &'a File,
    sink: Sink<'a>,
    whole: WholeHash,
    zeros: Vec<u8>,
    processed: u64,
    cancelled: &'a dyn Fn() -> bool,
    progress: &'a mut dyn FnMut(u64),
}

impl Walk<'_> {
    fn run(
        &mut self,
        ranges: &[(u64, u64)],
        len: u64,
    ) -> Result<(Vec<BmapRange>, u64), DeliverError> {
        let mut bmap_ranges = Vec::with_capacity(ranges.len());
        let mut mapped_bytes = 0;
        let mut pos = 0;
        for &(first, last) in ranges {
            let start = first * BLOCK_SIZE;
            let end = ((last + 1) * BLOCK_SIZE).min(len);
            self.hole(pos, start)?;
            let sha256 = self.data(start, end)?;
            bmap_ranges.push(BmapRange {
                first,
                last,
                sha256,
            });
            mapped_bytes += end - start;
            pos = end;
        }
        self.hole(pos, len)?;
        Ok((bmap_ranges, mapped_bytes))
    }

    /// Reads, hashes and passes on `start..end`; returns the range's sha256.
    fn data(&mut self, start: u64, end: u64) -> Result<String, DeliverError> {
        let mut range = Sha256::new();
        let mut offset = start;
        while offset < end {
            let n = chunk_len(offset, end);
            let mut buf = self.whole.free_buffer()?;
            self.image.read_exact_at(&mut buf[..n], offset)?;
            range.update(&buf[..n]);
            self.sink.data(offset, &buf[..n])?;
            self.whole.data(buf, n)?;
            offset += n as u64;
            self.step(n)?;
        }
        Ok(bmap::hex(&range.finalize()))
    }

    /// Accounts for the hole `start..end` as zeros without reading it.
    fn hole(&mut self, start: u64, end: u64) -> Result<(), DeliverError> {
        let mut offset = start;
        while offset < end {
            let n = chunk_len(offset, end);
            let zeros = &self.zeros[..n];
            self.whole.zeros(n)?;
            self.sink.zeros(zeros)?;
            offset += n as u64;
            self.step(n)?;
        }
        Ok(())
    }

    fn step(&mut self, n: usize) -> Result<(), DeliverError> {
        self.processed += n as u64;
        (self.progress)(self.processed);
        if (self.cancelled)() {
            return Err(DeliverError::Cancelled);
        }
        Ok(())
    }
}

/// The whole-image sha256, computed on a thread of its own: it is the one
/// hash every byte of the image goes through, and hashing holes is most of
/// the work for a sparse image, so it runs alongside reading, the per-range
/// hashes and writing rather than after them.
///
/// Image data reaches it in the read buffers themselves, which circulate
/// between the two threads; there are only [`READ_BUFFERS`] of them, and the
/// queue holds [`HASH_QUEUE`] pieces, so the hash trails the walk by a few
/// chunks at most and memory stays bounded.
struct WholeHash {
    pieces: Option<mpsc::SyncSender<Piece>>,
    free: mpsc::Receiver<Vec<u8>>,
    thread: Option<thread::JoinHandle<Sha256>>,
}

enum Piece {
    Data(Vec<u8>, usize),
    Zeros(usize),
}

/// Two buffers: one being hashed while the walk reads and writes the other.
const READ_BUFFERS: usize = 2;
const HASH_QUEUE: usize = 2;

impl WholeHash {
    fn start() -> io::Result<Self> {
        let (pieces_tx, pieces_rx) = mpsc::sync_channel::<Piece>(HASH_QUEUE);
        let (free_tx, free_rx) = mpsc::channel();
        for _ in 0..READ_BUFFERS {
            free_tx
                .send(vec![0; CHUNK])
                .expect("the receiver is still here");
        }
        let thread = thread::Builder::new()
            .name("image-sha256".into())
            .spawn(move || {
                let mut hash = Sha256::new();
                // Never written, so its pages all map the kernel's shared zero
                // page: hashing holes reads memory that stays in cache.
                let zeros = vec![0; CHUNK];
                for piece in pieces_rx {
                    match piece {
                        Piece::Data(buf, n) => {
                            hash.update(&buf[..n]);
                            // The walk may have stopped; then the buffer is freed.
                            let _ = free_tx.send(buf);
                        }
                        Piece::Zeros(n) => hash.update(&zeros[..n]),
                    }
                }
                hash
            })?;
        Ok(WholeHash {
            pieces: Some(pieces_tx),
            free: free_rx,
            thread: Some(thread),
        })
    }

    fn free_buffer(&self) -> io::Result<Vec<u8>> {
        self.free.recv().map_err(|_| hash_thread_gone())
    }

    fn data(&self, buf: Vec<u8>, n: usize) -> io::Result<()> {
        self.send(Piece::Data(buf, n))
    }

    fn zeros(&self, n: usize) -> io::Result<()> {
        self.send(Piece::Zeros(n))
    }

    fn send(&self, piece: Piece) -> io::Result<()> {
        let pieces = self.pieces.as_ref().expect("only taken when finishing");
        pieces.send(piece).map_err(|_| hash_thread_gone())
    }

    fn finish(mut self) -> io::Result<Sha256> {
        self.pieces = None;
        let thread = self.thread.take().expect("only taken here");
        thread.join().map_err(|_| hash_thread_gone())
    }
}

impl Drop for WholeHash {
    fn drop(&mut self) {
        // Closing the queue ends the thread after the few pieces still in it.
        self.pieces = None;
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn hash_thread_gone() -> io::Error {
    io::Error::other("the image hashing thread stopped unexpectedly")
}

fn chunk_len(offset: u64, end: u64) -> usize {
    (end - offset).min(CHUNK as u64) as usize
}

/// Sorts an error from the output side into the cases the client reacts to
/// differently. Errors reading the image never go through here: an ENOSPC
/// there would not mean the client's disk is full.
fn output_error(err: io::Error) -> DeliverError {
    match err.raw_os_error().map(Errno::from_raw_os_error) {
        Some(Errno::NOSPC | Errno::DQUOT | Errno::FBIG) => DeliverError::NoSpace,
        Some(Errno::PIPE | Errno::CONNRESET) => DeliverError::OutputClosed,
        _ => DeliverError::Io(err),
    }
}

fn output_errno(err: Errno) -> DeliverError {
    output_error(err.into())
}

enum Sink<'a> {
    Sparse(SparseFile),
    // Boxed: the sink lives for the whole delivery, one allocation is nothing.
    Stream(Box<Streamer<'a>>),
}

impl Sink<'_> {
    fn data(&mut self, offset: u64, bytes: &[u8]) -> Result<(), DeliverError> {
        match self {
            Sink::Sparse(file) => file.write_at(offset, bytes),
            Sink::Stream(stream) => stream.feed(bytes),
        }
    }

    fn zeros(&mut self, zeros: &[u8]) -> Result<(), DeliverError> {
        match self {
            // The file was truncated to its full length: holes are already there.
            Sink::Sparse(_) => Ok(()),
            Sink::Stream(stream) => stream.feed(zeros),
        }
    }

    /// Completes the output; returns the output's sha256 when it differs
    /// from the image's, and the number of bytes written.
    fn finish(self) -> Result<(Option<String>, u64), DeliverError> {
        match self {
            Sink::Sparse(file) => file.finish().map(|size| (None, size)),
            Sink::Stream(stream) => stream.finish(),
        }
    }

    fn abandon(self) {
        if let Sink::Sparse(file) = self {
            file.abandon();
        }
    }
}

struct SparseFile {
    file: File,
    len: u64,
}

impl SparseFile {
    fn create(file: File, len: u64) -> Result<Self, DeliverError> {
        // Truncating to zero first drops whatever the file held before, so
        // the holes we skip really read as zeros.
        rustix::fs::ftruncate(&file, 0).map_err(output_errno)?;
        rustix::fs::ftruncate(&file, len).map_err(output_errno)?;
        Ok(SparseFile { file, len })
    }

    fn write_at(&self, offset: u64, bytes: &[u8]) -> Result<(), DeliverError> {
        self.file.write_all_at(bytes, offset).map_err(output_error)
    }

    fn finish(self) -> Result<u64, DeliverError> {
        match rustix::fs::fdatasync(&self.file) {
            Ok(()) => Ok(self.len),
            Err(err) => {
                self.abandon();
                Err(output_errno(err))
            }
        }
    }

    fn abandon(self) {
        // Best effort: the delivery has already failed for a better reason.
        let _ = rustix::fs::ftruncate(&self.file, 0);
    }
}

/// The sequential output path: an optional compressor in front of [`Output`].
struct Streamer<'a> {
    encoder: Encoder,
    output: Output<'a>,
}

enum Encoder {
    Plain,
    Zstd {
        encoder: zstd::stream::raw::Encoder<'static>,
        buf: Vec<u8>,
    },
    Xz {
        stream: liblzma::stream::Stream,
        buf: Vec<u8>,
    },
}

impl Encoder {
    fn zstd(len: u64, threads: u32) -> io::Result<Self> {
        use zstd::stream::raw::CParameter;
        let mut encoder = zstd::stream::raw::Encoder::new(ZSTD_LEVEL)?;
        encoder.set_parameter(CParameter::NbWorkers(threads))?;
        // Like the zstd command line: a content checksum, so a corrupted
        // download fails to decompress rather than flashing garbage.
        encoder.set_parameter(CParameter::ChecksumFlag(true))?;
        // Records the image size in the frame header (`zstd -l` shows it).
        encoder.set_pledged_src_size(Some(len))?;
        Ok(Encoder::Zstd {
            encoder,
            buf: vec![0; COMPRESSED_CHUNK],
        })
    }

    fn xz(threads: u32) -> io::Result<Self> {
        // liblzma's XzEncoder writer is avoided on purpose: dropping it
        // finishes the stream, which after a failure or cancellation would
        // compress what is queued and end the output as a valid .xz file of
        // a partial image.
        let stream = MtStreamBuilder::new()
            .threads(threads.max(1))
            .preset(XZ_PRESET)
            .check(Check::Crc64)
            .timeout_ms(XZ_TIMEOUT_MS)
            .encoder()
            .map_err(io::Error::from)?;
        Ok(Encoder::Xz {
            stream,
            buf: Vec::with_capacity(COMPRESSED_CHUNK),
        })
    }
}

impl Streamer<'_> {
    fn feed(&mut self, mut input: &[u8]) -> Result<(), DeliverError> {
        let output = &mut self.output;
        match &mut self.encoder {
            Encoder::Plain => output.write_all(input),
            Encoder::Zstd { encoder, buf } => {
                while !input.is_empty() {
                    let status = encoder.run_on_buffers(input, buf)?;
                    output.write_all(&buf[..status.bytes_written])?;
                    input = &input[status.bytes_read..];
                }
                Ok(())
            }
            Encoder::Xz { stream, buf } => {
                while !input.is_empty() {
                    let before = stream.total_in();
                    buf.clear();
                    stream
                        .process_vec(input, buf, Action::Run)
                        .map_err(io::Error::from)?;
                    output.write_all(buf)?;
                    let consumed = (stream.total_in() - before) as usize;
                    input = &input[consumed..];
                    if consumed == 0 && buf.is_empty() {
                        // The encoder timed out waiting for its workers.
                        output.check_cancelled()?;
                    }
                }
                Ok(())
            }
        }
    }

    fn finish(mut self) -> Result<(Option<String>, u64), DeliverError> {
        let output = &mut self.output;
        match &mut self.encoder {
            Encoder::Plain => {}
            Encoder::Zstd { encoder, buf } => loop {
                let mut out_buf = OutBuffer::around(&mut buf[..]);
                let remaining = encoder.finish(&mut out_buf, true)?;
                let n = out_buf.pos();
                output.write_all(&buf[..n])?;
                if remaining == 0 {
                    break;
                }
                output.check_cancelled()?;
            },
            Encoder::Xz { stream, buf } => loop {
                buf.clear();
                let status = stream
                    .process_vec(&[], buf, Action::Finish)
                    .map_err(io::Error::from)?;
                output.write_all(buf)?;
                if status == Status::StreamEnd {
                    break;
                }
                output.check_cancelled()?;
            },
        }
        self.output.finish()
    }
}

/// The client's descriptor on the sequential path.
struct Output<'a> {
    file: File,
    cancelled: &'a dyn Fn() -> bool,
    /// Only when compressing: uncompressed output is the image itself,
    /// whose hash is already being computed.
    hasher: Option<Sha256>,
    written: u64,
    sync: bool,
    /// The flags to put back on drop, when they were changed.
    restore_flags: Option<OFlags>,
}

impl<'a> Output<'a> {
    fn new(
        file: File,
        file_type: FileType,
        flags: OFlags,
        hash: bool,
        sync: bool,
        cancelled: &'a dyn Fn() -> bool,
    ) -> Result<Self, DeliverError> {
        let mut restore_flags = None;
        if matches!(file_type, FileType::Fifo | FileType::Socket)
            && !flags.contains(OFlags::NONBLOCK)
        {
            rustix::fs::fcntl_setfl(&file, flags | OFlags::NONBLOCK).map_err(io::Error::from)?;
            restore_flags = Some(flags);
        }
        Ok(Output {
            file,
            cancelled,
            hasher: hash.then(Sha256::new),
            written: 0,
            sync,
            restore_flags,
        })
    }

    fn write_all(&mut self, mut bytes: &[u8]) -> Result<(), DeliverError> {
        if let Some(hasher) = &mut self.hasher {
            hasher.update(bytes);
        }
        self.written += bytes.len() as u64;
        while !bytes.is_empty() {
            match rustix::io::write(&self.file, bytes) {
                Ok(0) => return Err(io::Error::from(io::ErrorKind::WriteZero).into()),
                Ok(n) => bytes = &bytes[n..],
                Err(Errno::INTR) => {}
                Err(Errno::AGAIN) => self.wait_writable()?,
                Err(err) => return Err(output_errno(err)),
            }
        }
        Ok(())
    }

    fn wait_writable(&self) -> Result<(), DeliverError> {
        loop {
            self.check_cancelled()?;
            let mut fds = [PollFd::new(&self.file, PollFlags::OUT)];
            match rustix::event::poll(&mut fds, Some(&POLL_INTERVAL)) {
                Ok(0) | Err(Errno::INTR) => {}
                // Also on POLLERR/POLLHUP: the next write reports what happened.
                Ok(_) => return Ok(()),
                Err(err) => return Err(io::Error::from(err).into()),
            }
        }
    }

    fn check_cancelled(&self) -> Result<(), DeliverError> {
        if (self.cancelled)() {
            Err(DeliverError::Cancelled)
        } else {
            Ok(())
        }
    }

    fn finish(self) -> Result<(Option<String>, u64), DeliverError> {
        if self.sync {
            rustix::fs::fdatasync(&self.file).map_err(output_errno)?;
        }
        let hash = self.hasher.clone().map(|h| bmap::hex(&h.finalize()));
        Ok((hash, self.written))
    }
}

impl Drop for Output<'_> {
    fn drop(&mut self) {
        if let Some(flags) = self.restore_flags {
            let _ = rustix::fs::fcntl_setfl(&self.file, flags);
        }
    }
}

#[cfg(test)]
#[path = "deliver_tests.rs"]
mod tests;
