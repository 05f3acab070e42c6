//! One writer thread per card: wipe, write, head last, verify.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use xxhash_rust::xxh3::Xxh3;

use crate::flash::engine::buf::{round_up, AlignedBuf};
use crate::flash::engine::error::{target_error, FlashError};
#[cfg(test)]
use crate::flash::engine::flash::TestHooks;
use crate::flash::engine::flash::{internal, Report};
use crate::flash::engine::pipe::{source_to_flash, Chunk, Msg, Shared, WriterState, CHUNK};
use crate::flash::engine::target::Target;

const WIPE: u64 = 1 << 20;

struct Record {
    segs: Vec<(u64, usize, usize)>,
    hash: u128,
    is_head: bool,
}

pub(crate) struct Writer {
    #[cfg(test)]
    pub(crate) idx: usize,
    pub(crate) t: Target,
    pub(crate) st: Arc<WriterState>,
    pub(crate) shared: Arc<Shared>,
    pub(crate) verify: bool,
    pub(crate) head_len: u64,
    pub(crate) sync_every: u64,
    pub(crate) stall_ms: u64,
    pub(crate) end_ms: u64,
    pub(crate) source_file: Option<Arc<File>>,
    #[cfg(test)]
    pub(crate) hooks: TestHooks,
}

impl Writer {
    fn stopped(&self) -> bool {
        self.shared.stop.load(Ordering::SeqCst) || self.st.abandoned.load(Ordering::SeqCst)
    }

    fn why_stopped(&self) -> FlashError {
        if self.shared.cancel.load(Ordering::SeqCst) || self.st.abandoned.load(Ordering::SeqCst) {
            return FlashError::Cancelled;
        }
        match self.shared.abort_reason() {
            Some(e) => source_to_flash(e),
            None => FlashError::BadSource("the image reader stopped early".into()),
        }
    }

    /// Runs one kernel call under the watchdog.
    fn timed<R>(&self, limit_ms: u64, f: impl FnOnce() -> io::Result<R>) -> io::Result<R> {
        self.st
            .deadline_ms
            .store(self.shared.now_ms() + limit_ms, Ordering::SeqCst);
        let r = f();
        self.st.deadline_ms.store(0, Ordering::SeqCst);
        r
    }

    fn err(&self, e: io::Error, doing: &str) -> FlashError {
        target_error(e, doing, &self.t.what, self.t.rdev)
    }

    fn sync(&self, limit_ms: u64) -> Result<(), FlashError> {
        self.timed(limit_ms, || self.t.file.sync_all())
            .map_err(|e| self.err(e, "flushing"))
    }

    /// Bytes to transfer for `len` image bytes at `off`: padded to the
    /// card's block size, never past its end.
    fn io_len(&self, off: u64, len: usize) -> usize {
        round_up(len as u64, self.t.lbs).min(self.t.size - off) as usize
    }

    fn write_chunk(&self, c: &Chunk) -> Result<(), FlashError> {
        for s in &c.segs {
            let n = self.io_len(s.dev_off, s.len);
            let data = &c.buf.as_slice()[s.buf_off..s.buf_off + n];
            self.timed(self.stall_ms, || {
                #[cfg(test)]
                if let Some(h) = &self.hooks.before_write {
                    h((self.idx, s.dev_off));
                }
                self.t.file.write_all_at(data, s.dev_off)
            })
            .map_err(|e| self.err(e, "writing"))?;
        }
        Ok(())
    }

    /// Zeroes the head area and the last MiB: stale GPT backups and RAID or
    /// LVM superblocks at the end would otherwise outlive the new image,
    /// and a zeroed start means an interrupted card has no partition table.
    fn wipe(&self) -> Result<(), FlashError> {
        let size = self.t.size;
        let zeros = AlignedBuf::zeroed(WIPE as usize);
        let front = self.head_len.max(WIPE).min(size);
        let mut off = 0;
        while off < front {
            let n = (front - off).min(WIPE) as usize;
            self.timed(self.stall_ms, || {
                self.t.file.write_all_at(&zeros.as_slice()[..n], off)
            })
            .map_err(|e| self.err(e, "wiping"))?;
            off += n as u64;
        }
        self.sync(self.stall_ms)?;
        let tail = size.saturating_sub(WIPE).max(front);
        if tail < size {
            let n = (size - tail) as usize;
            self.timed(self.end_ms, || {
                self.t.file.write_all_at(&zeros.as_slice()[..n], tail)
            })
            .map_err(|e| self.err(e, "wiping the end of"))?;
            self.sync(self.end_ms)?;
        }
        Ok(())
    }

    pub(crate) fn run(self) -> Result<Report, FlashError> {
        self.wipe()?;
        let mut records = Vec::new();
        let mut written = 0u64;
        let mut unsynced = 0u64;
        // Set when a stream of unknown size outgrows the card: keep
        // draining so the error can say how big the image really is.
        let mut overflow = false;
        let (head, image_len) = loop {
            if self.stopped() {
                return Err(self.why_stopped());
            }
            let Some(msg) = self.st.queue.pop(&self.shared.stop) else {
                return Err(self.why_stopped());
            };
            match msg {
                Msg::Data(c) => {
                    if overflow {
                        continue;
                    }
                    let end = c.segs.last().map_or(0, |s| s.dev_off + s.len as u64);
                    if end > self.t.size {
                        overflow = true;
                        continue;
                    }
                    self.write_chunk(&c)?;
                    let n = c.bytes();
                    written += n;
                    unsynced += n;
                    self.st.done.store(written, Ordering::Relaxed);
                    if unsynced >= self.sync_every {
                        self.sync(self.stall_ms)?;
                        unsynced = 0;
                    }
                    if self.verify {
                        records.push(record(&c, false));
                    }
                }
                Msg::Finish { head, image_len } => break (head, image_len),
                Msg::Sha256(_) => return Err(internal("image hash before the end of the image")),
            }
        };
        if overflow {
            return Err(FlashError::TooSmall {
                need: image_len,
                have: self.t.size,
            });
        }
        self.sync(self.stall_ms)?;
        // The last chance to leave the card without a partition table.
        if self.stopped() {
            return Err(self.why_stopped());
        }
        if let Some(h) = &head {
            self.write_chunk(h)?;
            self.sync(self.stall_ms)?;
            written += h.bytes();
            if self.verify {
                records.push(record(h, true));
            }
        }
        self.st.total.store(written, Ordering::Relaxed);
        self.st.done.store(written, Ordering::Relaxed);
        if self.verify {
            #[cfg(test)]
            if let Some(h) = &self.hooks.before_verify {
                h(self.idx);
            }
            self.st.done.store(0, Ordering::Relaxed);
            self.st.phase.store(1, Ordering::Relaxed);
            self.verify_all(&records, head.as_deref())?;
        }
        match self.st.queue.pop(&self.shared.stop) {
            Some(Msg::Sha256(sha)) => Ok(Report {
                written,
                verified: self.verify,
                image_sha256: sha.to_string(),
            }),
            _ => Err(self.why_stopped()),
        }
    }

    fn verify_all(&self, records: &[Record], head: Option<&Chunk>) -> Result<(), FlashError> {
        // O_DIRECT reads bypass the page cache already; dropping it also
        // covers anything another opener may have cached. Best effort.
        let _ = rustix::fs::fadvise(&self.t.file, 0, None, rustix::fs::Advice::DontNeed);
        let mut buf = AlignedBuf::zeroed(CHUNK.max(self.head_len as usize));
        let mut done = 0u64;
        for rec in records {
            if self.stopped() {
                return Err(self.why_stopped());
            }
            let mut h = Xxh3::new();
            for &(off, buf_off, len) in &rec.segs {
                let n = self.io_len(off, len);
                let dst = &mut buf.as_mut_slice()[buf_off..buf_off + n];
                self.timed(self.stall_ms, || self.t.file.read_exact_at(dst, off))
                    .map_err(|e| self.err(e, "reading back"))?;
                h.update(&buf.as_slice()[buf_off..buf_off + len]);
                done += len as u64;
            }
            if h.digest128() != rec.hash {
                return Err(FlashError::VerifyFailed {
                    offset: self.locate(rec, &buf, head),
                });
            }
            self.st.done.store(done, Ordering::Relaxed);
        }
        Ok(())
    }

    /// The first differing byte of a chunk whose hash did not match.
    fn locate(&self, rec: &Record, got: &AlignedBuf, head: Option<&Chunk>) -> u64 {
        let chunk_start = rec.segs.first().map_or(0, |s| s.0);
        for &(off, buf_off, len) in &rec.segs {
            let card = &got.as_slice()[buf_off..buf_off + len];
            let expected: Vec<u8> = match (rec.is_head, head, &self.source_file) {
                (true, Some(h), _) => h.buf.as_slice()[buf_off..buf_off + len].to_vec(),
                (false, _, Some(f)) => {
                    let mut v = vec![0u8; len];
                    if f.read_exact_at(&mut v, off).is_err() {
                        return chunk_start;
                    }
                    v
                }
                _ => return chunk_start,
            };
            if let Some(i) = card.iter().zip(&expected).position(|(a, b)| a != b) {
                return off + i as u64;
            }
        }
        // The card changed back or the source changed: the chunk is all
        // we know.
        chunk_start
    }
}

fn record(c: &Chunk, is_head: bool) -> Record {
    Record {
        segs: c
            .segs
            .iter()
            .map(|s| (s.dev_off, s.buf_off, s.len))
            .collect(),
        hash: c.hash,
        is_head,
    }
}
