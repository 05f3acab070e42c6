//! One read of an image, written to several cards at once, then verified.
//!
//! Threads: one reader (decompresses, slices the image into 4 MiB chunks),
//! two hashers (sha256 of the whole image; bmap range checksums), one
//! writer per card. The calling thread only coordinates: it polls
//! `cancelled`, reports progress and runs the stall watchdog. Writers are
//! plain (not scoped) threads on purpose: a writer stuck in the kernel on a
//! dying card is left behind rather than joined, and the callbacks
//! therefore never run on worker threads.

use std::fs::File;
use std::io::{self, Read};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use crate::flash::engine::bmap::Bmap;
use crate::flash::engine::buf::{round_up, ALIGN};
use crate::flash::engine::error::FlashError;
use crate::flash::engine::pipe::{source_to_flash, Shared, WriterState, QUEUE_CAP};
use crate::flash::engine::queue::Queue;
use crate::flash::engine::reader::{RangeCheck, Reader};
use crate::flash::engine::source::{
    bmap_extents, file_extents, zstd_size_hint, Extents, Source, SourceError,
};
use crate::flash::engine::target::Target;
use crate::flash::engine::writer::Writer;

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
    /// Read everything back (O_DIRECT) and compare per-4 MiB hashes.
    pub verify: bool,
    /// The partition table area (rounded up to 4 KiB), zeroed first, kept
    /// in memory (once, shared by all cards) and written last.
    pub hold_back: u64,
    /// Flush the card's write cache after this many bytes, so a cancel or a
    /// pulled card never has gigabytes pending in the device.
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
            // Images packed with --long=28 (256 MiB windows) are accepted; larger windows are
            // refused, so a crafted stream cannot make the root daemon allocate gigabytes.
            d.window_log_max(28)
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
///
/// What is written: with a bmap its mapped ranges; for a plain file its
/// data extents (SEEK_DATA/SEEK_HOLE); for a stream without bmap all of it.
/// Ranges are widened to 4 KiB. Holes are not written (bmaptool's
/// semantics): the card keeps what it had there, except that the first
/// `max(hold_back, 1 MiB)` and the last MiB are zeroed before anything else.
///
/// The image's unaligned tail is padded with zeros up to the card's logical
/// block size (usually 512 bytes), not with the card's current bytes: those
/// bytes lie past the image, in no partition, so their old content is worth
/// nothing; zeros keep every card identical (one shared buffer, one hash)
/// and cost no extra read of a possibly failing card.
/// The callbacks are only ever called from the calling thread, about every
/// 20 ms: `cancelled` is polled, `progress` gets (target, phase, bytes
/// done, total); `total` is 0 while unknown (a stream with no bmap and no
/// size in its header).
///
/// On VerifyFailed the offset is the first differing byte when it can be
/// found: always for plain files (the source is read again) and for the
/// held-back head; for compressed input the source bytes are gone, so it
/// is the start of the 4 MiB chunk that differs.
#[cfg(test)]
pub fn flash(
    input: Input,
    bmap: Option<&Bmap>,
    targets: Vec<Target>,
    opts: &Options,
    cancelled: &(dyn Fn() -> bool + Sync),
    progress: &(dyn Fn(usize, Phase, u64, u64) + Sync),
) -> Vec<Result<Report, FlashError>> {
    flash_each(input, bmap, targets, opts, cancelled, &|_| false, progress)
}

/// [`flash`], where `target_cancelled(i)` also drops card `i` alone: its writer is left as a
/// stalled one is (its partition table is never written) and the others go on.
pub fn flash_each(
    input: Input,
    bmap: Option<&Bmap>,
    targets: Vec<Target>,
    opts: &Options,
    cancelled: &(dyn Fn() -> bool + Sync),
    target_cancelled: &(dyn Fn(usize) -> bool + Sync),
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

    coordinate(
        &shared,
        &states,
        &mut results,
        &res_rx,
        cancelled,
        target_cancelled,
        progress,
    );

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

pub(crate) fn internal(msg: &str) -> FlashError {
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
    target_cancelled: &(dyn Fn(usize) -> bool + Sync),
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
        // A phase can end between two ticks, even the first; close it
        // visibly before reporting the next. Verify reads back exactly what
        // was written, so its total is the write phase's too.
        let (p, d, t) = last[i].unwrap_or((0, 0, total));
        if p != phase && d != t {
            progress(i, phase_of(p), t, t);
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
            let late_cancel = cancel_at.is_some_and(|t| t.elapsed() > CANCEL_GRACE)
                || (cancel_at.is_none() && target_cancelled(i));
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
