//! The reader thread: one pass over the image, sliced into chunks for the
//! writers; and the hasher threads it feeds.

use std::io;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::thread;

use sha2::{Digest, Sha256};

use crate::flash::engine::bmap::{to_hex, RangeHasher};
use crate::flash::engine::buf::{round_up, ALIGN};
use crate::flash::engine::pipe::{
    Chunk, HashMsg, Msg, Seg, Shared, WriterState, CHUNK, MAX_SEGS, QUEUE_CAP,
};
use crate::flash::engine::queue::{Pushed, Queue};
use crate::flash::engine::source::{Extents, Source, SourceError};

pub(crate) enum Halt {
    /// Cancelled, source failure already recorded, or no writer left.
    Stop,
    Source(SourceError),
}

pub(crate) struct Reader {
    pub(crate) src: Source,
    pub(crate) extents: Extents,
    pub(crate) image_len: Option<u64>,
    pub(crate) head_len: u64,
    pub(crate) checks: Vec<RangeCheck>,
    pub(crate) shared: Arc<Shared>,
    pub(crate) writers: Vec<Arc<WriterState>>,
    pub(crate) hashers: Vec<Arc<Queue<HashMsg>>>,
    pub(crate) pool: Vec<Arc<Chunk>>,
    pub(crate) cur: Option<Chunk>,
    pub(crate) head: Option<Chunk>,
    pub(crate) head_sealed: Option<Arc<Chunk>>,
}

impl Reader {
    pub(crate) fn run(mut self) {
        // Two hashers so the sha256 of the whole image (zeros included) and
        // the range checks of the mapped data use both cores.
        let sha = spawn_hasher("flash-sha", &self.shared, image_sha256);
        let checks = std::mem::take(&mut self.checks);
        let ranges = if checks.is_empty() {
            None
        } else {
            Some(spawn_hasher("flash-ranges", &self.shared, move |q, sh| {
                check_ranges(q, &checks, sh)
            }))
        };
        let (sha_q, sha_h) = match sha {
            Ok(x) => x,
            Err(e) => return self.fail_early(e),
        };
        self.hashers.push(Arc::clone(&sha_q));
        let ranges_h = match ranges {
            None => None,
            Some(Ok((q, h))) => {
                self.hashers.push(q);
                Some(h)
            }
            Some(Err(e)) => return self.fail_early(e),
        };

        let outcome = catch_unwind(AssertUnwindSafe(|| self.copy()));
        let outcome = outcome.unwrap_or_else(|_| {
            Err(Halt::Source(SourceError::Bad(
                "internal error: the reader panicked".into(),
            )))
        });
        // Chunks still queued stay alive through their Arcs; the idle ones
        // need not wait for the hashing to finish.
        self.pool.clear();
        let stop = &self.shared.stop;
        match outcome {
            Ok(image_len) => {
                for q in &self.hashers {
                    q.push(HashMsg::End(image_len), stop);
                    q.close();
                }
                // The head may only go out once every range checksum held.
                let ranges_ok = ranges_h.is_none_or(|h| h.join().ok().flatten().is_some());
                if ranges_ok && !stop.load(Ordering::SeqCst) {
                    self.send_all(|| Msg::Finish {
                        head: self.head_sealed.clone(),
                        image_len,
                    });
                    // Writers write the head and verify meanwhile.
                    if let Some(sha) = sha_h.join().ok().flatten() {
                        let sha: Arc<str> = sha.into();
                        self.send_all(|| Msg::Sha256(Arc::clone(&sha)));
                    }
                }
            }
            Err(Halt::Source(e)) => self.shared.fail_source(e),
            Err(Halt::Stop) => {}
        }
        for q in &self.hashers {
            q.close();
        }
        self.close_all();
    }

    fn fail_early(&self, e: io::Error) {
        self.shared
            .fail_source(SourceError::Io("starting a hasher".into(), e));
        for q in &self.hashers {
            q.close();
        }
        self.close_all();
    }

    fn send_all(&self, msg: impl Fn() -> Msg) {
        for w in &self.writers {
            w.queue.push(msg(), &self.shared.stop);
        }
    }

    fn hash_push(&self, c: &Arc<Chunk>) -> Result<(), Halt> {
        for q in &self.hashers {
            if let Pushed::Stopped = q.push(HashMsg::Data(Arc::clone(c)), &self.shared.stop) {
                return Err(Halt::Stop);
            }
        }
        Ok(())
    }

    fn close_all(&self) {
        for w in &self.writers {
            w.queue.close();
        }
    }

    fn stopped(&self) -> bool {
        self.shared.stop.load(Ordering::Relaxed)
    }

    /// Copies every extent; returns the image length.
    fn copy(&mut self) -> Result<u64, Halt> {
        if self.head_len > 0 {
            self.head = Some(Chunk::new(self.head_len as usize));
        }
        let list = match std::mem::replace(&mut self.extents, Extents::ToEof) {
            Extents::List(l) => l,
            Extents::ToEof => vec![(0, u64::MAX)],
        };
        let mut eof_at = None;
        'extents: for (s, e) in list {
            let end = match self.image_len {
                Some(len) => e.min(len),
                None => e,
            };
            let mut pos = s;
            while pos < end {
                if self.stopped() {
                    return Err(Halt::Stop);
                }
                let (n, want) = if pos < self.head_len {
                    let upto = end.min(self.head_len);
                    let head = self.head.as_mut().expect("head buffer exists");
                    let want = (upto - pos) as usize;
                    let dst = &mut head.buf.as_mut_slice()[pos as usize..upto as usize];
                    (self.src.read_at(pos, dst).map_err(Halt::Source)?, want)
                } else {
                    self.seal_head(self.head_len)?;
                    if self
                        .cur
                        .as_ref()
                        .is_some_and(|c| c.used == c.buf.len() || c.segs.len() >= MAX_SEGS)
                    {
                        self.flush()?;
                    }
                    if self.cur.is_none() {
                        self.cur = Some(self.take_chunk());
                    }
                    let c = self.cur.as_mut().expect("chunk present");
                    let room = (c.buf.len() - c.used) as u64;
                    let want = (end - pos).min(room) as usize;
                    let at = c.used;
                    let n = self
                        .src
                        .read_at(pos, &mut c.buf.as_mut_slice()[at..at + want])
                        .map_err(Halt::Source)?;
                    if n > 0 {
                        c.add(pos, n);
                    }
                    (n, want)
                };
                pos += n as u64;
                if n < want {
                    eof_at = Some(pos);
                    break 'extents;
                }
            }
        }
        let total = match eof_at {
            // Only an image without a known size may end where it likes.
            Some(at) if self.image_len.is_some() => {
                return Err(Halt::Source(SourceError::Bad(format!(
                    "the image ends at byte {at}, before its expected size {}",
                    self.image_len.unwrap_or(0)
                ))))
            }
            _ => self.src.finish().map_err(Halt::Source)?,
        };
        if let Some(len) = self.image_len {
            if total != len {
                return Err(Halt::Source(SourceError::Bad(format!(
                    "the image is {total} bytes, its bmap says {len}"
                ))));
            }
        }
        self.seal_head(total.min(self.head_len))?;
        self.flush()?;
        Ok(total)
    }

    /// Freezes the held-back head once the reader is past it; the hasher
    /// must see it before any later byte.
    fn seal_head(&mut self, valid: u64) -> Result<(), Halt> {
        let Some(mut head) = self.head.take() else {
            return Ok(());
        };
        if valid == 0 {
            return Ok(());
        }
        head.segs.push(Seg {
            dev_off: 0,
            buf_off: 0,
            len: valid as usize,
        });
        head.used = round_up(valid, ALIGN as u64) as usize;
        // Past the image end within the head must read as zero padding.
        let used = head.used;
        head.buf.as_mut_slice()[valid as usize..used].fill(0);
        head.seal();
        let head = Arc::new(head);
        self.head_sealed = Some(Arc::clone(&head));
        self.hash_push(&head)
    }

    fn take_chunk(&mut self) -> Chunk {
        // A pooled chunk nobody else references any more can be refilled.
        if let Some(i) = self.pool.iter().position(|c| Arc::strong_count(c) == 1) {
            if let Ok(mut c) = Arc::try_unwrap(self.pool.swap_remove(i)) {
                c.segs.clear();
                c.used = 0;
                return c;
            }
        }
        Chunk::new(CHUNK)
    }

    fn flush(&mut self) -> Result<(), Halt> {
        let Some(mut c) = self.cur.take() else {
            return Ok(());
        };
        if c.segs.is_empty() {
            self.cur = Some(c);
            return Ok(());
        }
        c.seal();
        let c = Arc::new(c);
        self.hash_push(&c)?;
        let mut i = 0;
        while i < self.writers.len() {
            match self.writers[i]
                .queue
                .push(Msg::Data(Arc::clone(&c)), &self.shared.stop)
            {
                Pushed::Ok => i += 1,
                Pushed::Dead => {
                    self.writers.swap_remove(i);
                }
                Pushed::Stopped => return Err(Halt::Stop),
            }
        }
        self.pool.push(c);
        if self.writers.is_empty() {
            return Err(Halt::Stop);
        }
        Ok(())
    }
}

static ZEROS: [u8; 64 << 10] = [0; 64 << 10];

type Hasher<T> = (Arc<Queue<HashMsg>>, thread::JoinHandle<Option<T>>);

/// Runs `f` on its own thread over a queue of chunks; None from the join
/// means it stopped early (and said why in `shared` if it failed).
fn spawn_hasher<T: Send + 'static>(
    name: &str,
    shared: &Arc<Shared>,
    f: impl FnOnce(&Queue<HashMsg>, &Shared) -> Option<T> + Send + 'static,
) -> io::Result<Hasher<T>> {
    let q: Arc<Queue<HashMsg>> = Arc::new(Queue::new(QUEUE_CAP));
    let (q2, shared) = (Arc::clone(&q), Arc::clone(shared));
    let h = thread::Builder::new().name(name.into()).spawn(move || {
        let r = catch_unwind(AssertUnwindSafe(|| f(&q2, &shared)));
        if r.is_err() {
            shared.fail_source(SourceError::Bad("internal error: a hasher panicked".into()));
        }
        // A reader still pushing must not wait on a dead hasher.
        q2.kill();
        r.ok().flatten()
    })?;
    Ok((q, h))
}

/// sha256 of the image in order, gaps as zeros.
fn image_sha256(q: &Queue<HashMsg>, shared: &Shared) -> Option<String> {
    let mut sha = Sha256::new();
    let mut pos = 0u64;
    let zeros = |sha: &mut Sha256, mut n: u64| {
        while n > 0 {
            let k = n.min(ZEROS.len() as u64);
            sha.update(&ZEROS[..k as usize]);
            n -= k;
        }
    };
    loop {
        match q.pop(&shared.stop)? {
            HashMsg::Data(c) => {
                for s in &c.segs {
                    if s.dev_off > pos {
                        zeros(&mut sha, s.dev_off - pos);
                    }
                    sha.update(&c.buf.as_slice()[s.buf_off..s.buf_off + s.len]);
                    pos = s.dev_off + s.len as u64;
                }
            }
            HashMsg::End(len) => {
                if len > pos {
                    zeros(&mut sha, len - pos);
                }
                return Some(to_hex(&sha.finalize()));
            }
        }
    }
}

/// Checks the source bytes against the bmap range checksums. A mismatch
/// fails the source at once, so writers stop before the head is written.
fn check_ranges(q: &Queue<HashMsg>, checks: &[RangeCheck], shared: &Shared) -> Option<()> {
    let mut ci = 0;
    let mut cur: Option<RangeHasher> = None;
    let fail = |msg: String| {
        shared.fail_source(SourceError::Bad(msg));
        None
    };
    loop {
        match q.pop(&shared.stop)? {
            HashMsg::Data(c) => {
                for s in &c.segs {
                    let data = &c.buf.as_slice()[s.buf_off..s.buf_off + s.len];
                    let end = s.dev_off + s.len as u64;
                    while let Some(rc) = checks.get(ci) {
                        if rc.start >= end {
                            break;
                        }
                        let a = rc.start.max(s.dev_off);
                        let b = rc.end.min(end);
                        if a < b {
                            cur.get_or_insert_with(|| RangeHasher::for_digest(&rc.digest))
                                .update(&data[(a - s.dev_off) as usize..(b - s.dev_off) as usize]);
                        }
                        if rc.end > end {
                            break;
                        }
                        let got = cur
                            .take()
                            .unwrap_or_else(|| RangeHasher::for_digest(&rc.digest))
                            .finish_hex();
                        if got != rc.digest {
                            return fail(format!(
                                "blocks {}-{} do not match the bmap checksum",
                                rc.blocks.0, rc.blocks.1
                            ));
                        }
                        ci += 1;
                    }
                }
            }
            HashMsg::End(_) => {
                if ci < checks.len() {
                    return fail("the image ended inside a checksummed range".into());
                }
                return Some(());
            }
        }
    }
}

/// A bmap range with a checksum, in bytes.
pub(crate) struct RangeCheck {
    pub(crate) start: u64,
    pub(crate) end: u64,
    pub(crate) blocks: (u64, u64),
    pub(crate) digest: String,
}
