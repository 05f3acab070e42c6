//! What the reader, the hashers, the writers and the coordinator share.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use xxhash_rust::xxh3::Xxh3;

use crate::flash::engine::buf::{round_up, AlignedBuf, ALIGN};
use crate::flash::engine::error::FlashError;
use crate::flash::engine::queue::Queue;
use crate::flash::engine::source::SourceError;

/// The unit the reader hands to writers; also the verification granularity.
pub(crate) const CHUNK: usize = 4 << 20;
/// Chunks waiting per consumer. The reader cannot run further ahead of the
/// slowest consumer than this, so memory stays near (CAP + 2) * CHUNK
/// whatever the image size or the number of cards.
pub(crate) const QUEUE_CAP: usize = 4;
/// Keeps the per-chunk segment list (also kept for verification) small when
/// an image is made of many tiny extents.
pub(crate) const MAX_SEGS: usize = 256;

pub(crate) struct Seg {
    pub(crate) dev_off: u64,
    pub(crate) buf_off: usize,
    /// Image bytes; the buffer is zero-padded to 4096 past them.
    pub(crate) len: usize,
}

pub(crate) struct Chunk {
    pub(crate) buf: AlignedBuf,
    pub(crate) segs: Vec<Seg>,
    pub(crate) used: usize,
    pub(crate) hash: u128,
}

impl Chunk {
    pub(crate) fn new(size: usize) -> Chunk {
        Chunk {
            buf: AlignedBuf::zeroed(size),
            segs: Vec::new(),
            used: 0,
            hash: 0,
        }
    }

    pub(crate) fn bytes(&self) -> u64 {
        self.segs.iter().map(|s| s.len as u64).sum()
    }

    /// Appends `n` freshly read bytes that sit at `buf[used..]` and belong
    /// at `dev_off` on the card.
    pub(crate) fn add(&mut self, dev_off: u64, n: usize) {
        let at = self.used;
        let padded = round_up(n as u64, ALIGN as u64) as usize;
        // A reused buffer holds old data; the O_DIRECT tail pad must be zeros.
        self.buf.as_mut_slice()[at + n..at + padded].fill(0);
        self.used += padded;
        match self.segs.last_mut() {
            Some(s) if s.dev_off + s.len as u64 == dev_off && s.buf_off + s.len == at => s.len += n,
            _ => self.segs.push(Seg {
                dev_off,
                buf_off: at,
                len: n,
            }),
        }
    }

    /// A fast hash of the image bytes only, not the padding, so it is the
    /// same whatever pad length a card's block size asks for.
    pub(crate) fn seal(&mut self) {
        let mut h = Xxh3::new();
        for s in &self.segs {
            h.update(&self.buf.as_slice()[s.buf_off..s.buf_off + s.len]);
        }
        self.hash = h.digest128();
    }
}

pub(crate) enum Msg {
    Data(Arc<Chunk>),
    /// All data sent and every bmap range checksum held.
    Finish {
        head: Option<Arc<Chunk>>,
        image_len: u64,
    },
    /// Comes after Finish: hashing the whole image may still be running
    /// while the writers write the head and verify.
    Sha256(Arc<str>),
}

pub(crate) enum HashMsg {
    Data(Arc<Chunk>),
    End(u64),
}

pub(crate) struct Shared {
    pub(crate) cancel: AtomicBool,
    /// Cancel or source failure: nobody should start more work.
    pub(crate) stop: AtomicBool,
    pub(crate) abort: Mutex<Option<SourceError>>,
    pub(crate) epoch: Instant,
}

impl Shared {
    pub(crate) fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64 + 1
    }

    pub(crate) fn fail_source(&self, e: SourceError) {
        let mut a = self.abort.lock().unwrap_or_else(|p| p.into_inner());
        if a.is_none() {
            *a = Some(e);
        }
        self.stop.store(true, Ordering::SeqCst);
    }

    pub(crate) fn abort_reason(&self) -> Option<SourceError> {
        self.abort.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

pub(crate) fn source_to_flash(e: SourceError) -> FlashError {
    match e {
        SourceError::Bad(s) => FlashError::BadSource(s),
        SourceError::Io(s, e) => FlashError::Io(s, e),
    }
}

/// What the coordinator can see of a writer without talking to it.
pub(crate) struct WriterState {
    pub(crate) queue: Queue<Msg>,
    pub(crate) phase: AtomicU8,
    pub(crate) done: AtomicU64,
    pub(crate) total: AtomicU64,
    /// Milliseconds since the epoch by which the current kernel call must
    /// return; 0 while not in one.
    pub(crate) deadline_ms: AtomicU64,
    /// The coordinator has given up on this writer; it must not touch the
    /// card again should its stuck call ever return.
    pub(crate) abandoned: AtomicBool,
}
