//! One read of an image, written to several cards at once, then verified.
//!
//! Threads: one reader (decompresses, slices the image into 4 MiB chunks),
//! one hasher (sha256 of the whole image and the bmap range checksums), one
//! writer per card. The calling thread only coordinates: it polls
//! `cancelled`, reports progress and runs the stall watchdog. Writers are
//! plain (not scoped) threads on purpose: a writer stuck in the kernel on a
//! dying card is left behind rather than joined, and the callbacks therefore
//! never run on worker threads.

use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::FileExt;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use xxhash_rust::xxh3::Xxh3;

use crate::flash::engine::bmap::{to_hex, Bmap, RangeHasher};
use crate::flash::engine::buf::{round_up, AlignedBuf, ALIGN};
use crate::flash::engine::error::{target_error, FlashError};
use crate::flash::engine::queue::{Pushed, Queue};
use crate::flash::engine::source::{
    bmap_extents, file_extents, zstd_size_hint, Extents, Source, SourceError,
};
use crate::flash::engine::target::Target;

/// The unit the reader hands to writers; also the verification granularity.
const CHUNK: usize = 4 << 20;
/// Chunks waiting per writer. The reader cannot run further ahead of the
/// slowest consumer than this, so memory stays near (CAP + 2) * CHUNK
/// whatever the image size or the number of cards.
const QUEUE_CAP: usize = 4;
/// Keeps the per-chunk segment list (also kept for verification) small when
/// an image is made of many tiny extents.
const MAX_SEGS: usize = 256;
const WIPE: u64 = 1 << 20;
const TICK: Duration = Duration::from_millis(20);
/// How long a cancelled writer may take to notice before we stop waiting.
const CANCEL_GRACE: Duration = Duration::from_secs(2);

/// The image to write.
pub enum Input {
    /// A plain image, seekable, possibly sparse.
    File(File),
    /// zstd-compressed stream (any number of frames).
    Zstd(Box<dyn Read + Send>),
    /// xz-compressed stream (concatenated streams allowed).
    Xz(Box<dyn Read + Send>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Write,
    Verify,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// Image bytes written (mapped data plus the held-back head).
    pub written: u64,
    pub verified: bool,
    /// Of the whole image as written: holes and unmapped blocks as zeros.
    pub image_sha256: String,
}

pub struct Options {
    pub verify: bool,
    /// The partition table area (rounded up to 4 KiB), written last.
    pub hold_back: u64,
    pub sync_every: u64,
    /// A single write, flush or read-back taking this long means Stalled.
    pub stall_timeout: Duration,
    /// The same for the wipe of the card's last MiB, where fake-capacity
    /// cards hang; usually shorter than `stall_timeout`.
    pub end_write_timeout: Duration,
    #[cfg(test)]
    pub(crate) hooks: TestHooks,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            verify: true,
            hold_back: 1 << 20,
            sync_every: 32 << 20,
            stall_timeout: Duration::from_secs(60),
            end_write_timeout: Duration::from_secs(20),
            #[cfg(test)]
            hooks: TestHooks::default(),
        }
    }
}

impl std::fmt::Debug for Options {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Options")
            .field("verify", &self.verify)
            .field("hold_back", &self.hold_back)
            .field("sync_every", &self.sync_every)
            .field("stall_timeout", &self.stall_timeout)
            .field("end_write_timeout", &self.end_write_timeout)
            .finish()
    }
}

#[cfg(test)]
type Hook<A> = Option<Arc<dyn Fn(A) + Send + Sync>>;

/// Ways for tests to slow, stall or sabotage a writer.
#[cfg(test)]
#[derive(Clone, Default)]
pub(crate) struct TestHooks {
    /// (target index, device offset) before each data chunk is written,
    /// counted as time spent in the kernel by the watchdog.
    pub(crate) before_write: Hook<(usize, u64)>,
    /// (target index) after everything is written, before read-back.
    pub(crate) before_verify: Hook<usize>,
}

// ---------------------------------------------------------------- chunks

struct Seg {
    dev_off: u64,
    buf_off: usize,
    /// Image bytes; the buffer is zero-padded to 4096 past them.
    len: usize,
}

struct Chunk {
    buf: AlignedBuf,
    segs: Vec<Seg>,
    used: usize,
    hash: u128,
}

impl Chunk {
    fn new(size: usize) -> Chunk {
        Chunk {
            buf: AlignedBuf::zeroed(size),
            segs: Vec::new(),
            used: 0,
            hash: 0,
        }
    }

    fn bytes(&self) -> u64 {
        self.segs.iter().map(|s| s.len as u64).sum()
    }

    /// Appends `n` freshly read bytes that sit at `buf[used..]` and belong
    /// at `dev_off` on the card.
    fn add(&mut self, dev_off: u64, n: usize) {
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
    fn seal(&mut self) {
        let mut h = Xxh3::new();
        for s in &self.segs {
            h.update(&self.buf.as_slice()[s.buf_off..s.buf_off + s.len]);
        }
        self.hash = h.digest128();
    }
}

enum Msg {
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

enum HashMsg {
    Data(Arc<Chunk>),
    End(u64),
}

// ---------------------------------------------------------------- shared state

struct Shared {
    cancel: AtomicBool,
    /// Cancel or source failure: nobody should start more work.
    stop: AtomicBool,
    abort: Mutex<Option<SourceError>>,
    epoch: Instant,
}

impl Shared {
    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64 + 1
    }

    fn fail_source(&self, e: SourceError) {
        let mut a = self.abort.lock().unwrap_or_else(|p| p.into_inner());
        if a.is_none() {
            *a = Some(e);
        }
        self.stop.store(true, Ordering::SeqCst);
    }

    fn abort_reason(&self) -> Option<SourceError> {
        self.abort.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

fn source_to_flash(e: SourceError) -> FlashError {
    match e {
        SourceError::Bad(s) => FlashError::BadSource(s),
        SourceError::Io(s, e) => FlashError::Io(s, e),
    }
}

/// What the coordinator can see of a writer without talking to it.
struct WriterState {
    queue: Queue<Msg>,
    phase: AtomicU8,
    done: AtomicU64,
    total: AtomicU64,
    /// Milliseconds since the epoch by which the current kernel call must
    /// return; 0 while not in one.
    deadline_ms: AtomicU64,
    /// The coordinator has given up on this writer; it must not touch the
    /// card again should its stuck call ever return.
    abandoned: AtomicBool,
}

// ---------------------------------------------------------------- plan

struct Plan {
    src: Source,
    extents: Extents,
    /// Known up front for files and for anything with a bmap.
    image_len: Option<u64>,
    /// A lower bound on the image size for streams without a bmap.
    size_hint: Option<u64>,
    checks: Vec<RangeCheck>,
    source_file: Option<Arc<File>>,
    head_len: u64,
    write_total: Option<u64>,
}

struct RangeCheck {
    start: u64,
    end: u64,
    blocks: (u64, u64),
    digest: String,
}

fn prepare(input: Input, bmap: Option<&Bmap>, opts: &Options) -> Result<Plan, SourceError> {
    let head_len = round_up(opts.hold_back, ALIGN as u64);
    let mut size_hint = None;
    let mut source_file = None;
    let (src, extents, image_len) = match input {
        Input::File(f) => {
            let len = f
                .metadata()
                .map_err(|e| SourceError::Io("inspecting the image".into(), e))?
                .len();
            let extents = match bmap {
                Some(b) if b.image_size != len => {
                    return Err(SourceError::Bad(format!(
                        "the image is {len} bytes but its bmap says {}",
                        b.image_size
                    )))
                }
                Some(b) => bmap_extents(b),
                None => file_extents(&f, len),
            };
            let file = Arc::new(f);
            source_file = Some(Arc::clone(&file));
            (
                Source::File { file, len },
                Extents::List(extents),
                Some(len),
            )
        }
        Input::Zstd(r) => {
            let (r, hint) = zstd_size_hint(r);
            size_hint = hint;
            let mut d = zstd::stream::read::Decoder::new(r)
                .map_err(|e| SourceError::Bad(format!("cannot start zstd: {e}")))?;
            // Images packed with --long need windows past the 128 MiB default.
            d.window_log_max(31)
                .map_err(|e| SourceError::Bad(format!("cannot start zstd: {e}")))?;
            stream_plan(Box::new(d), bmap)
        }
        Input::Xz(r) => stream_plan(
            Box::new(liblzma::read::XzDecoder::new_multi_decoder(r)),
            bmap,
        ),
    };
    let checks = bmap
        .map(|b| {
            b.ranges
                .iter()
                .filter_map(|(first, last, d)| {
                    d.as_ref().map(|d| RangeCheck {
                        start: first * b.block_size,
                        end: ((last + 1) * b.block_size).min(b.image_size),
                        blocks: (*first, *last),
                        digest: d.clone(),
                    })
                })
                .collect()
        })
        .unwrap_or_default();
    let write_total = match (&extents, image_len) {
        (Extents::List(list), Some(len)) => {
            let head = head_len.min(len);
            let rest: u64 = list
                .iter()
                .map(|&(s, e)| e.min(len).saturating_sub(s.max(head_len)))
                .sum();
            Some(head + rest)
        }
        _ => None,
    };
    Ok(Plan {
        src,
        extents,
        image_len,
        size_hint,
        checks,
        source_file,
        head_len,
        write_total,
    })
}

fn stream_plan(r: Box<dyn Read + Send>, bmap: Option<&Bmap>) -> (Source, Extents, Option<u64>) {
    match bmap {
        Some(b) => (
            Source::stream(r),
            Extents::List(bmap_extents(b)),
            Some(b.image_size),
        ),
        None => (Source::stream(r), Extents::ToEof, None),
    }
}

// ---------------------------------------------------------------- flash

/// Writes `input` to every target from a single read of it.
///
/// Each target gets its own result; one failing does not stop the others.
/// The callbacks are only ever called from the calling thread, about every
/// 20 ms: `cancelled` is polled, `progress` gets (target, phase, bytes
/// done, total); `total` is 0 while unknown (a stream with no bmap and no
/// size in its header).
///
/// On VerifyFailed the offset is the first differing byte when it can be
/// found: always for plain files (the source is read again) and for the
/// held-back head; for compressed input the source bytes are gone, so it
/// is the start of the 4 MiB chunk that differs.
pub fn flash(
    input: Input,
    bmap: Option<&Bmap>,
    targets: Vec<Target>,
    opts: &Options,
    cancelled: &(dyn Fn() -> bool + Sync),
    progress: &(dyn Fn(usize, Phase, u64, u64) + Sync),
) -> Vec<Result<Report, FlashError>> {
    let n = targets.len();
    let mut plan = match prepare(input, bmap, opts) {
        Ok(p) => p,
        Err(e) => return (0..n).map(|_| Err(source_to_flash(e.clone()))).collect(),
    };
    let mut results: Vec<Option<Result<Report, FlashError>>> = (0..n).map(|_| None).collect();

    let shared = Arc::new(Shared {
        cancel: AtomicBool::new(false),
        stop: AtomicBool::new(false),
        abort: Mutex::new(None),
        epoch: Instant::now(),
    });
    let (res_tx, res_rx) = mpsc::channel::<(usize, Result<Report, FlashError>)>();
    let mut states: Vec<Option<Arc<WriterState>>> = (0..n).map(|_| None).collect();
    let need = plan.image_len.or(plan.size_hint).unwrap_or(0);
    let total = plan.write_total.or(plan.size_hint).unwrap_or(0);

    for (i, t) in targets.into_iter().enumerate() {
        // Refuse before the wipe, so a too-small card keeps its contents.
        if need > t.size {
            results[i] = Some(Err(FlashError::TooSmall { need, have: t.size }));
            continue;
        }
        let st = Arc::new(WriterState {
            queue: Queue::new(QUEUE_CAP),
            phase: AtomicU8::new(0),
            done: AtomicU64::new(0),
            total: AtomicU64::new(total),
            deadline_ms: AtomicU64::new(0),
            abandoned: AtomicBool::new(false),
        });
        let w = Writer {
            #[cfg(test)]
            idx: i,
            t,
            st: Arc::clone(&st),
            shared: Arc::clone(&shared),
            verify: opts.verify,
            head_len: plan.head_len,
            sync_every: opts.sync_every.max(1),
            stall_ms: opts.stall_timeout.as_millis() as u64,
            end_ms: opts.end_write_timeout.as_millis() as u64,
            source_file: plan.source_file.clone(),
            #[cfg(test)]
            hooks: opts.hooks.clone(),
        };
        let tx = res_tx.clone();
        let spawned = thread::Builder::new()
            .name(format!("flash-w{i}"))
            .spawn(move || {
                let st = Arc::clone(&w.st);
                let r = catch_unwind(AssertUnwindSafe(|| w.run()))
                    .unwrap_or_else(|_| Err(internal("the writer thread panicked")));
                // Unblocks the reader and frees the backlog at once.
                st.queue.kill();
                let _ = tx.send((i, r));
            });
        match spawned {
            Ok(_) => states[i] = Some(st),
            Err(e) => results[i] = Some(Err(FlashError::Io("starting a writer".into(), e))),
        }
    }
    drop(res_tx);

    let live: Vec<Arc<WriterState>> = states.iter().flatten().cloned().collect();
    let reader = if live.is_empty() {
        None
    } else {
        let r = Reader {
            src: std::mem::replace(&mut plan.src, Source::stream(Box::new(io::empty()))),
            extents: std::mem::replace(&mut plan.extents, Extents::ToEof),
            image_len: plan.image_len,
            head_len: plan.head_len,
            checks: std::mem::take(&mut plan.checks),
            shared: Arc::clone(&shared),
            writers: live,
            hashers: Vec::new(),
            pool: Vec::new(),
            cur: None,
            head: None,
            head_sealed: None,
        };
        match thread::Builder::new()
            .name("flash-reader".into())
            .spawn(move || r.run())
        {
            Ok(h) => Some(h),
            Err(e) => {
                shared.fail_source(SourceError::Io("starting the reader".into(), e));
                None
            }
        }
    };

    coordinate(&shared, &states, &mut results, &res_rx, cancelled, progress);

    // Everything is decided; make sure the reader does not keep decoding.
    shared.stop.store(true, Ordering::SeqCst);
    if let Some(h) = reader {
        // It may be blocked in a slow input's read; give it a moment, then
        // let it go rather than hang the caller.
        let until = Instant::now() + Duration::from_secs(1);
        while !h.is_finished() && Instant::now() < until {
            thread::sleep(Duration::from_millis(5));
        }
        if h.is_finished() {
            let _ = h.join();
        }
    }
    results
        .into_iter()
        .map(|r| r.unwrap_or_else(|| Err(internal("no result"))))
        .collect()
}

fn internal(msg: &str) -> FlashError {
    FlashError::Io("internal error".into(), io::Error::other(msg.to_owned()))
}

fn phase_of(v: u8) -> Phase {
    if v == 0 {
        Phase::Write
    } else {
        Phase::Verify
    }
}

fn coordinate(
    shared: &Shared,
    states: &[Option<Arc<WriterState>>],
    results: &mut [Option<Result<Report, FlashError>>],
    res_rx: &mpsc::Receiver<(usize, Result<Report, FlashError>)>,
    cancelled: &(dyn Fn() -> bool + Sync),
    progress: &(dyn Fn(usize, Phase, u64, u64) + Sync),
) {
    let mut last: Vec<Option<(u8, u64, u64)>> = vec![None; states.len()];
    let mut cancel_at: Option<Instant> = None;
    let report = |i: usize, st: &WriterState, last: &mut Vec<Option<(u8, u64, u64)>>| {
        let phase = st.phase.load(Ordering::Relaxed);
        let done = st.done.load(Ordering::Relaxed);
        let mut total = st.total.load(Ordering::Relaxed);
        if total != 0 {
            total = total.max(done);
        }
        let now = (phase, done, total);
        if last[i] == Some(now) {
            return;
        }
        // A phase can end between two ticks; close it visibly first.
        if let Some((p, d, t)) = last[i] {
            if p != phase && d != t {
                progress(i, phase_of(p), t, t);
            }
        }
        last[i] = Some(now);
        progress(i, phase_of(phase), done, total);
    };

    loop {
        if results.iter().all(Option::is_some) {
            break;
        }
        match res_rx.recv_timeout(TICK) {
            Ok((i, r)) => {
                if results[i].is_none() {
                    if let (Ok(_), Some(st)) = (&r, &states[i]) {
                        report(i, st, &mut last);
                    }
                    results[i] = Some(r);
                }
                continue;
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                for r in results.iter_mut().filter(|r| r.is_none()) {
                    *r = Some(Err(internal("writer vanished")));
                }
                break;
            }
        }
        if cancel_at.is_none() && cancelled() {
            shared.cancel.store(true, Ordering::SeqCst);
            shared.stop.store(true, Ordering::SeqCst);
            cancel_at = Some(Instant::now());
        }
        let now_ms = shared.now_ms();
        for (i, st) in states.iter().enumerate() {
            let Some(st) = st else { continue };
            if results[i].is_some() {
                continue;
            }
            let deadline = st.deadline_ms.load(Ordering::SeqCst);
            let late_cancel = cancel_at.is_some_and(|t| t.elapsed() > CANCEL_GRACE);
            if (deadline != 0 && now_ms > deadline) || late_cancel {
                st.abandoned.store(true, Ordering::SeqCst);
                st.queue.kill();
                results[i] = Some(Err(if late_cancel {
                    FlashError::Cancelled
                } else {
                    FlashError::Stalled
                }));
                continue;
            }
            report(i, st, &mut last);
        }
    }
}

// ---------------------------------------------------------------- reader

enum Halt {
    /// Cancelled, source failure already recorded, or no writer left.
    Stop,
    Source(SourceError),
}

struct Reader {
    src: Source,
    extents: Extents,
    image_len: Option<u64>,
    head_len: u64,
    checks: Vec<RangeCheck>,
    shared: Arc<Shared>,
    writers: Vec<Arc<WriterState>>,
    hashers: Vec<Arc<Queue<HashMsg>>>,
    pool: Vec<Arc<Chunk>>,
    cur: Option<Chunk>,
    head: Option<Chunk>,
    head_sealed: Option<Arc<Chunk>>,
}

impl Reader {
    fn run(mut self) {
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

// ---------------------------------------------------------------- hasher

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

// ---------------------------------------------------------------- writer

struct Record {
    segs: Vec<(u64, usize, usize)>,
    hash: u128,
    is_head: bool,
}

struct Writer {
    #[cfg(test)]
    idx: usize,
    t: Target,
    st: Arc<WriterState>,
    shared: Arc<Shared>,
    verify: bool,
    head_len: u64,
    sync_every: u64,
    stall_ms: u64,
    end_ms: u64,
    source_file: Option<Arc<File>>,
    #[cfg(test)]
    hooks: TestHooks,
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

    fn run(self) -> Result<Report, FlashError> {
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
