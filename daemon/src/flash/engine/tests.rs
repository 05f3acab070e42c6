//! End-to-end tests on loop devices. They need root and loop support.

use std::fs::{File, OpenOptions};
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use crate::flash::engine::bmap::to_hex;
use crate::flash::engine::*;

const MIB: u64 = 1 << 20;

/// A loop device over a sparse file; detached on drop, even on panic.
pub(crate) struct Loop {
    pub(crate) dev: PathBuf,
    pub(crate) backing: PathBuf,
    pub(crate) size: u64,
}

impl Loop {
    pub(crate) fn new(dir: &Path, name: &str, size: u64) -> Loop {
        let backing = dir.join(name);
        File::create(&backing).unwrap().set_len(size).unwrap();
        // Parallel tests race for free loop devices; losetup then fails and
        // the next try gets another one.
        for _ in 0..20 {
            let out = Command::new("losetup")
                .args(["--find", "--show", "--direct-io=on"])
                .arg(&backing)
                .output()
                .expect("losetup runs (these tests need root and util-linux)");
            if out.status.success() {
                let dev = PathBuf::from(String::from_utf8(out.stdout).unwrap().trim());
                return Loop { dev, backing, size };
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("cannot attach a loop device to {}", backing.display());
    }

    /// Opens the card, waiting out udev: every close after a write makes it
    /// probe the device under a shared lock, which under the I/O load of
    /// parallel tests can outlast Target::open's own patience.
    pub(crate) fn open(&self) -> Target {
        let until = Instant::now() + Duration::from_secs(20);
        loop {
            match Target::open(&self.dev, &self.dev.display().to_string()) {
                Ok(t) => return t,
                Err(FlashError::Busy(w)) if Instant::now() < until => {
                    eprintln!("{w} busy, retrying");
                    std::thread::sleep(Duration::from_millis(100));
                }
                Err(e) => panic!("opening {}: {e}", self.dev.display()),
            }
        }
    }

    pub(crate) fn read(&self, off: u64, len: usize) -> Vec<u8> {
        let mut v = vec![0u8; len];
        File::open(&self.backing)
            .unwrap()
            .read_exact_at(&mut v, off)
            .unwrap();
        v
    }

    pub(crate) fn fill(&self, off: u64, len: usize, byte: u8) {
        let f = OpenOptions::new().write(true).open(&self.backing).unwrap();
        f.write_all_at(&vec![byte; len], off).unwrap();
        f.sync_all().unwrap();
    }
}

impl Drop for Loop {
    fn drop(&mut self) {
        let _ = Command::new("losetup").arg("-d").arg(&self.dev).status();
    }
}

/// Deterministic noise, so a failure can be reproduced.
pub(crate) fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// A sparse image of `len` bytes with noise at the given (offset, length).
pub(crate) fn make_image(path: &Path, len: u64, pieces: &[(u64, usize)]) {
    let f = File::create(path).unwrap();
    f.set_len(len).unwrap();
    for (i, &(off, n)) in pieces.iter().enumerate() {
        f.write_all_at(&noise(i as u64 + 1, n), off).unwrap();
    }
    f.sync_all().unwrap();
}

fn file_sha256(path: &Path) -> String {
    let mut h = Sha256::new();
    let mut f = File::open(path).unwrap();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    to_hex(&h.finalize())
}

const IMG_LEN: u64 = 64 * MIB + 1234;

/// Data at unaligned places: in the MBR area, straddling the held-back MiB,
/// in the middle, and up to the unaligned end.
fn standard_pieces() -> Vec<(u64, usize)> {
    vec![
        (0, 1000),
        (MIB - 100, 5000),
        (10 * MIB + 12345, 3 * MIB as usize),
        (40 * MIB + 7, 100),
        (50 * MIB, 9 * MIB as usize),
        (IMG_LEN - 3000, 3000),
    ]
}

fn quick_opts() -> Options {
    Options {
        stall_timeout: Duration::from_secs(30),
        end_write_timeout: Duration::from_secs(30),
        ..Options::default()
    }
}

fn never() -> bool {
    false
}

fn no_progress(_: usize, _: Phase, _: u64, _: u64) {}

/// Marks the card past the image so "untouched" can be told from "zeroed".
/// (Inside the image, holes are not written: a fresh backing file reads
/// zero there, which is what lets the whole image be compared.)
fn mark_card(card: &Loop, image_len: u64) {
    card.fill(image_len, 2 * MIB as usize, 0xAA);
    card.fill(card.size - 3 * MIB, 3 * MIB as usize, 0xAA);
}

/// The card holds the image, 512-byte zero padding after it, our marks
/// untouched beyond that, and a zeroed last MiB.
fn check_card(card: &Loop, image: &Path) {
    let img = std::fs::read(image).unwrap();
    let len = img.len() as u64;
    let got = card.read(0, img.len());
    if let Some(i) = got.iter().zip(&img).position(|(a, b)| a != b) {
        panic!("card differs from image at byte {i}");
    }
    let padded = len.div_ceil(512) * 512;
    assert!(card
        .read(len, (padded - len) as usize)
        .iter()
        .all(|&b| b == 0));
    let after = card.read(padded, (2 * MIB - (padded - len)) as usize);
    assert!(
        after.iter().all(|&b| b == 0xAA),
        "bytes after the image were touched"
    );
    assert!(card
        .read(card.size - 3 * MIB, 2 * MIB as usize)
        .iter()
        .all(|&b| b == 0xAA));
    assert!(card
        .read(card.size - MIB, MIB as usize)
        .iter()
        .all(|&b| b == 0));
}

fn first_mib_zero(card: &Loop) -> bool {
    card.read(0, MIB as usize).iter().all(|&b| b == 0)
}

fn compress(cmd: &str, src: &Path, dst: &Path, extra: &[&str]) {
    let out = File::create(dst).unwrap();
    let status = Command::new(cmd)
        .args(extra)
        .arg("-c")
        .arg(src)
        .stdout(out)
        .status()
        .unwrap();
    assert!(status.success(), "{cmd} failed");
}

fn bmap_of(image: &Path) -> String {
    let bmap = image.with_extension("bmap");
    let out = Command::new("bmaptool")
        .args(["-q", "create", "-o"])
        .arg(&bmap)
        .arg(image)
        .output()
        .expect("bmaptool (apt-get install bmap-tools)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::read_to_string(bmap).unwrap()
}

#[test]
fn sparse_file_to_loop_device() {
    let dir = tempfile::tempdir().unwrap();
    let image = dir.path().join("img");
    make_image(&image, IMG_LEN, &standard_pieces());
    let card = Loop::new(dir.path(), "card", 128 * MIB);
    mark_card(&card, IMG_LEN);

    let seen = Mutex::new(Vec::new());
    let progress = |i: usize, p: Phase, done: u64, total: u64| {
        seen.lock().unwrap().push((i, p, done, total));
    };
    let r = flash(
        Input::File(File::open(&image).unwrap()),
        None,
        vec![card.open()],
        &quick_opts(),
        &never,
        &progress,
    );
    let report = r.into_iter().next().unwrap().unwrap();
    assert!(report.verified);
    assert_eq!(report.image_sha256, file_sha256(&image));
    // Only data extents (4 KiB granular) plus the held-back MiB were written.
    assert!(report.written < 16 * MIB, "{}", report.written);
    check_card(&card, &image);
    let seen = seen.into_inner().unwrap();
    let last_write = seen.iter().rfind(|s| s.1 == Phase::Write).unwrap();
    assert_eq!(
        (last_write.2, last_write.3),
        (report.written, report.written)
    );
    assert_eq!(seen.last().unwrap().1, Phase::Verify);
    assert_eq!(seen.last().unwrap().2, report.written);
}

#[test]
fn zstd_and_xz_streams() {
    let dir = tempfile::tempdir().unwrap();
    let image = dir.path().join("img");
    make_image(&image, IMG_LEN, &standard_pieces());
    let want = file_sha256(&image);
    let zst = dir.path().join("img.zst");
    let zst_pipe = dir.path().join("img.pipe.zst");
    let xz = dir.path().join("img.xz");
    compress("zstd", &image, &zst, &["-q", "-T2"]);
    compress("xz", &image, &xz, &["-T2", "-1"]);
    // Through a pipe the zstd CLI cannot put the size in the frame header.
    let status = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "cat {} | zstd -q -c > {}",
            image.display(),
            zst_pipe.display()
        ))
        .status()
        .unwrap();
    assert!(status.success());

    let inputs: Vec<(&str, Input)> = vec![
        ("zstd", Input::Zstd(Box::new(File::open(&zst).unwrap()))),
        (
            "zstd-nosize",
            Input::Zstd(Box::new(File::open(&zst_pipe).unwrap())),
        ),
        ("xz", Input::Xz(Box::new(File::open(&xz).unwrap()))),
    ];
    for (name, input) in inputs {
        let card = Loop::new(dir.path(), name, 96 * MIB);
        mark_card(&card, IMG_LEN);
        let r = flash(
            input,
            None,
            vec![card.open()],
            &quick_opts(),
            &never,
            &no_progress,
        );
        let report = r.into_iter().next().unwrap().unwrap();
        assert_eq!(report.image_sha256, want, "{name}");
        assert_eq!(report.written, IMG_LEN, "{name}: streams write everything");
        assert!(report.verified);
        check_card(&card, &image);
    }
}

#[test]
fn bmap_to_four_cards_and_bmap_stream() {
    let dir = tempfile::tempdir().unwrap();
    let image = dir.path().join("img");
    make_image(&image, IMG_LEN, &standard_pieces());
    let bmap = parse_bmap(&bmap_of(&image)).unwrap();
    assert!(bmap.ranges.iter().all(|r| r.2.is_some()));
    let cards: Vec<Loop> = (0..4)
        .map(|i| Loop::new(dir.path(), &format!("card{i}"), 80 * MIB))
        .collect();
    for c in &cards {
        mark_card(c, IMG_LEN);
    }
    let r = flash(
        Input::File(File::open(&image).unwrap()),
        Some(&bmap),
        cards.iter().map(Loop::open).collect(),
        &quick_opts(),
        &never,
        &no_progress,
    );
    assert_eq!(r.len(), 4);
    let want = file_sha256(&image);
    for (c, r) in cards.iter().zip(r) {
        let report = r.unwrap();
        assert!(report.verified);
        assert_eq!(report.image_sha256, want);
        check_card(c, &image);
    }

    // The same bmap drives a compressed stream: unmapped parts are skipped.
    let zst = dir.path().join("img.zst");
    compress("zstd", &image, &zst, &["-q"]);
    let card = Loop::new(dir.path(), "streamcard", 80 * MIB);
    mark_card(&card, IMG_LEN);
    let r = flash(
        Input::Zstd(Box::new(File::open(&zst).unwrap())),
        Some(&bmap),
        vec![card.open()],
        &quick_opts(),
        &never,
        &no_progress,
    );
    let report = r.into_iter().next().unwrap().unwrap();
    assert_eq!(report.image_sha256, want);
    assert!(report.written < 16 * MIB);
    check_card(&card, &image);
}

#[test]
fn wrong_range_checksum_is_bad_source() {
    let dir = tempfile::tempdir().unwrap();
    let image = dir.path().join("img");
    make_image(&image, IMG_LEN, &standard_pieces());
    let mut bmap = parse_bmap(&bmap_of(&image)).unwrap();
    // Spoil the checksum of the range at 50 MiB, well past the head.
    let target_block = 50 * MIB / bmap.block_size;
    let range = bmap
        .ranges
        .iter_mut()
        .find(|r| r.0 <= target_block && target_block <= r.1)
        .unwrap();
    range.2 = Some("0".repeat(64));
    let card = Loop::new(dir.path(), "card", 80 * MIB);
    card.fill(0, MIB as usize, 0x55);
    let r = flash(
        Input::File(File::open(&image).unwrap()),
        Some(&bmap),
        vec![card.open()],
        &quick_opts(),
        &never,
        &no_progress,
    );
    let err = r.into_iter().next().unwrap().unwrap_err();
    assert!(matches!(err, FlashError::BadSource(_)), "{err}");
    assert!(first_mib_zero(&card), "the card must not look valid");
}

#[test]
fn corrupted_source_is_bad_source() {
    let dir = tempfile::tempdir().unwrap();
    let image = dir.path().join("img");
    make_image(&image, IMG_LEN, &standard_pieces());
    let text = bmap_of(&image);
    let bmap = parse_bmap(&text).unwrap();
    // Flip one byte after the bmap was made; once in a plain file, once in
    // a compressed stream of the flipped image.
    let f = OpenOptions::new()
        .write(true)
        .read(true)
        .open(&image)
        .unwrap();
    let mut b = [0u8; 1];
    f.read_exact_at(&mut b, 10 * MIB + 20000).unwrap();
    f.write_all_at(&[b[0] ^ 1], 10 * MIB + 20000).unwrap();
    drop(f);
    let xz = dir.path().join("img.xz");
    compress("xz", &image, &xz, &["-1", "-T2"]);

    for (name, input) in [
        ("file", Input::File(File::open(&image).unwrap())),
        ("xz", Input::Xz(Box::new(File::open(&xz).unwrap()))),
    ] {
        let card = Loop::new(dir.path(), name, 80 * MIB);
        let r = flash(
            input,
            Some(&bmap),
            vec![card.open()],
            &quick_opts(),
            &never,
            &no_progress,
        );
        let err = r.into_iter().next().unwrap().unwrap_err();
        assert!(
            matches!(err, FlashError::BadSource(ref m) if m.contains("checksum")),
            "{name}: {err}"
        );
        assert!(first_mib_zero(&card), "{name}");
    }
}

#[test]
fn truncated_or_mismatched_streams_are_bad_source() {
    let dir = tempfile::tempdir().unwrap();
    let image = dir.path().join("img");
    make_image(&image, IMG_LEN, &standard_pieces());
    let bmap = parse_bmap(&bmap_of(&image)).unwrap();
    let xz = dir.path().join("img.xz");
    compress("xz", &image, &xz, &["-1"]);
    let mut packed = std::fs::read(&xz).unwrap();
    packed.truncate(packed.len() * 2 / 3);
    let zst = dir.path().join("img.zst");
    compress("zstd", &image, &zst, &["-q"]);
    let mut zpacked = std::fs::read(&zst).unwrap();
    let mid = zpacked.len() / 2;
    zpacked[mid] ^= 0xff;
    let shorter = dir.path().join("short");
    make_image(&shorter, IMG_LEN - 4096, &standard_pieces()[..2]);

    let cases: Vec<(&str, Input, Option<&Bmap>)> = vec![
        (
            "truncated xz",
            Input::Xz(Box::new(std::io::Cursor::new(packed.clone()))),
            None,
        ),
        (
            "truncated xz + bmap",
            Input::Xz(Box::new(std::io::Cursor::new(packed))),
            Some(&bmap),
        ),
        (
            "corrupt zstd",
            Input::Zstd(Box::new(std::io::Cursor::new(zpacked))),
            None,
        ),
        (
            "file shorter than bmap",
            Input::File(File::open(&shorter).unwrap()),
            Some(&bmap),
        ),
    ];
    for (name, input, bmap) in cases {
        let card = Loop::new(dir.path(), "card", 80 * MIB);
        card.fill(0, MIB as usize, 0x55);
        let r = flash(
            input,
            bmap,
            vec![card.open()],
            &quick_opts(),
            &never,
            &no_progress,
        );
        let err = r.into_iter().next().unwrap().unwrap_err();
        assert!(matches!(err, FlashError::BadSource(_)), "{name}: {err}");
        let first = card.read(0, MIB as usize);
        // Rejected up front (size mismatch) leaves the card alone; found
        // while streaming leaves it wiped. Never with an image head.
        assert!(
            first.iter().all(|&b| b == 0) || first.iter().all(|&b| b == 0x55),
            "{name}"
        );
    }
}

#[test]
fn verify_finds_the_first_bad_byte() {
    let dir = tempfile::tempdir().unwrap();
    let image = dir.path().join("img");
    make_image(&image, IMG_LEN, &standard_pieces());
    let zst = dir.path().join("img.zst");
    compress("zstd", &image, &zst, &["-q"]);

    // (where to corrupt, stream input?, expected offset)
    let bad_in_data = 10 * MIB + 12345 + 777_777;
    let cases = [
        (bad_in_data, false, bad_in_data),
        (300, false, 300),
        // Streams can only name the chunk: after the held-back first MiB a
        // stream is cut into 4 MiB chunks, so [9 MiB, 13 MiB) holds this one.
        (bad_in_data, true, 9 * MIB),
    ];
    for (bad, stream, expect) in cases {
        let card = Arc::new(Loop::new(dir.path(), "card", 80 * MIB));
        let mut opts = quick_opts();
        let c = Arc::clone(&card);
        opts.hooks.before_verify = Some(Arc::new(move |_| {
            let b = c.read(bad, 1)[0];
            c.fill(bad, 1, b ^ 0x80);
        }));
        let input = if stream {
            Input::Zstd(Box::new(File::open(&zst).unwrap()))
        } else {
            Input::File(File::open(&image).unwrap())
        };
        let r = flash(input, None, vec![card.open()], &opts, &never, &no_progress);
        let err = r.into_iter().next().unwrap().unwrap_err();
        match err {
            FlashError::VerifyFailed { offset } => {
                assert_eq!(offset, expect, "bad at {bad}, stream {stream}")
            }
            e => panic!("expected VerifyFailed, got {e}"),
        }
    }
}

#[test]
fn cancel_leaves_no_partition_table_and_releases_the_card() {
    let dir = tempfile::tempdir().unwrap();
    let image = dir.path().join("img");
    make_image(&image, IMG_LEN, &[(0, 64 * MIB as usize)]);
    let card = Loop::new(dir.path(), "card", 80 * MIB);
    card.fill(0, MIB as usize, 0x55);
    let mut opts = quick_opts();
    // 16 chunks at >= 50 ms each: the write takes >= 800 ms, and the
    // coordinator polls about every 20 ms, so 15 polls land mid-write.
    opts.hooks.before_write = Some(Arc::new(|_| std::thread::sleep(Duration::from_millis(50))));
    let calls = AtomicUsize::new(0);
    let cancelled = || calls.fetch_add(1, Ordering::SeqCst) >= 15;
    let done = AtomicU64::new(0);
    let progress = |_: usize, _: Phase, d: u64, _: u64| done.store(d, Ordering::SeqCst);
    let t0 = Instant::now();
    let r = flash(
        Input::File(File::open(&image).unwrap()),
        None,
        vec![card.open()],
        &opts,
        &cancelled,
        &progress,
    );
    let took = t0.elapsed();
    eprintln!("cancel took {took:?}, done {}", done.load(Ordering::SeqCst));
    let err = r.into_iter().next().unwrap().unwrap_err();
    assert!(matches!(err, FlashError::Cancelled), "{err}");
    assert!(took < Duration::from_secs(2), "{took:?}");
    let d = done.load(Ordering::SeqCst);
    assert!(d > 0 && d < 64 * MIB, "cancelled mid-write, not at {d}");
    assert!(first_mib_zero(&card));
    // The lock and O_EXCL went with the writer.
    drop(card.open());
}

#[test]
fn busy_and_too_small() {
    let dir = tempfile::tempdir().unwrap();
    let card = Loop::new(dir.path(), "card", 32 * MIB);
    let t = card.open();
    let again = Target::open(&card.dev, "the card");
    assert!(matches!(again, Err(FlashError::Busy(ref w)) if w == "the card"));
    // A plain open (what a mount or `dd` would do) succeeds, but the flock
    // still says no to a second writer.
    assert_eq!(t.size(), 32 * MIB);
    assert_eq!(t.rdev().0, 7);

    card.fill(0, 32 * MIB as usize, 0x55);
    let image = dir.path().join("img");
    make_image(&image, 64 * MIB, &[(0, 4096), (40 * MIB, 4096)]);
    let r = flash(
        Input::File(File::open(&image).unwrap()),
        None,
        vec![t],
        &quick_opts(),
        &never,
        &no_progress,
    );
    let err = r.into_iter().next().unwrap().unwrap_err();
    assert!(
        matches!(err, FlashError::TooSmall { need, have } if need == 64 * MIB && have == 32 * MIB),
        "{err}"
    );
    assert!(
        card.read(0, 32 * MIB as usize).iter().all(|&b| b == 0x55),
        "nothing written"
    );
}

#[test]
fn stream_of_unknown_size_too_big_for_the_card() {
    let dir = tempfile::tempdir().unwrap();
    let image = dir.path().join("img");
    make_image(&image, IMG_LEN, &standard_pieces());
    let zst = dir.path().join("img.zst");
    let status = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "cat {} | zstd -q -c > {}",
            image.display(),
            zst.display()
        ))
        .status()
        .unwrap();
    assert!(status.success());
    let small = Loop::new(dir.path(), "small", 32 * MIB);
    let big = Loop::new(dir.path(), "big", 80 * MIB);
    let r = flash(
        Input::Zstd(Box::new(File::open(&zst).unwrap())),
        None,
        vec![small.open(), big.open()],
        &quick_opts(),
        &never,
        &no_progress,
    );
    let mut r = r.into_iter();
    let err = r.next().unwrap().unwrap_err();
    assert!(
        matches!(err, FlashError::TooSmall { need, have } if need == IMG_LEN && have == 32 * MIB),
        "{err}"
    );
    assert!(first_mib_zero(&small));
    r.next().unwrap().unwrap();
}

#[test]
fn stalled_card_is_left_behind() {
    let dir = tempfile::tempdir().unwrap();
    let image = dir.path().join("img");
    make_image(&image, IMG_LEN, &standard_pieces());
    let good = Loop::new(dir.path(), "good", 80 * MIB);
    let bad = Loop::new(dir.path(), "bad", 80 * MIB);
    mark_card(&good, IMG_LEN);
    let (release, stuck) = std::sync::mpsc::channel::<()>();
    let stuck = Mutex::new(stuck);
    let mut opts = quick_opts();
    opts.stall_timeout = Duration::from_millis(500);
    // Card 1 "hangs in the kernel" until the test lets it go.
    opts.hooks.before_write = Some(Arc::new(move |(i, off)| {
        if i == 1 && off > 40 * MIB {
            let _ = stuck.lock().unwrap().recv_timeout(Duration::from_secs(60));
        }
    }));
    let t0 = Instant::now();
    let r = flash(
        Input::File(File::open(&image).unwrap()),
        None,
        vec![good.open(), bad.open()],
        &opts,
        &never,
        &no_progress,
    );
    let took = t0.elapsed();
    let mut r = r.into_iter();
    r.next().unwrap().unwrap();
    let err = r.next().unwrap().unwrap_err();
    assert!(matches!(err, FlashError::Stalled), "{err}");
    assert!(
        took < Duration::from_secs(30),
        "waited for the stuck writer: {took:?}"
    );
    check_card(&good, &image);
    // Once back, the abandoned writer must give the card up without
    // writing its partition table.
    release.send(()).unwrap();
    let until = Instant::now() + Duration::from_secs(10);
    let reopened = loop {
        match Target::open(&bad.dev, "bad") {
            Ok(t) => break t,
            Err(_) if Instant::now() < until => std::thread::sleep(Duration::from_millis(50)),
            Err(e) => panic!("the abandoned writer kept the card: {e}"),
        }
    };
    drop(reopened);
    assert!(first_mib_zero(&bad));
}

#[test]
fn device_detached_mid_write() {
    let dir = tempfile::tempdir().unwrap();
    let image = dir.path().join("img");
    make_image(&image, IMG_LEN, &[(0, 64 * MIB as usize)]);
    let card = Loop::new(dir.path(), "card", 80 * MIB);
    let mut opts = quick_opts();
    opts.hooks.before_write = Some(Arc::new(|_| std::thread::sleep(Duration::from_millis(30))));
    let dev = card.dev.clone();
    let detached = std::sync::atomic::AtomicBool::new(false);
    let progress = |_: usize, _: Phase, d: u64, _: u64| {
        if d > 8 * MIB && !detached.swap(true, Ordering::SeqCst) {
            let st = Command::new("losetup")
                .arg("-d")
                .arg(&dev)
                .status()
                .unwrap();
            assert!(st.success());
        }
    };
    let r = flash(
        Input::File(File::open(&image).unwrap()),
        None,
        vec![card.open()],
        &opts,
        &never,
        &progress,
    );
    let r = r.into_iter().next().unwrap();
    eprintln!("after losetup -d mid-write: {r:?}");
    assert!(detached.load(Ordering::SeqCst));
    match r {
        // Linux defers the detach of an open loop device until its last
        // close, so the write may well complete; anything else must be an
        // error that names what happened.
        Ok(_)
        | Err(FlashError::DeviceLost)
        | Err(FlashError::NoSpace)
        | Err(FlashError::Io(..)) => {}
        Err(e) => panic!("unexpected {e}"),
    }
}

#[test]
fn card_shrinking_mid_write_is_no_space() {
    // The closest a loop device gets to a fake-capacity card: it shrinks
    // under the writer (backing file truncated, then `losetup -c`).
    let dir = tempfile::tempdir().unwrap();
    let image = dir.path().join("img");
    make_image(&image, IMG_LEN, &[(0, 64 * MIB as usize)]);
    let card = Loop::new(dir.path(), "card", 80 * MIB);
    let mut opts = quick_opts();
    opts.hooks.before_write = Some(Arc::new(|_| std::thread::sleep(Duration::from_millis(30))));
    let shrunk = std::sync::atomic::AtomicBool::new(false);
    let progress = |_: usize, _: Phase, d: u64, _: u64| {
        if d > 8 * MIB && !shrunk.swap(true, Ordering::SeqCst) {
            File::options()
                .write(true)
                .open(&card.backing)
                .unwrap()
                .set_len(16 * MIB)
                .unwrap();
            let st = Command::new("losetup")
                .arg("-c")
                .arg(&card.dev)
                .status()
                .unwrap();
            assert!(st.success());
        }
    };
    let r = flash(
        Input::File(File::open(&image).unwrap()),
        None,
        vec![card.open()],
        &opts,
        &never,
        &progress,
    );
    let err = r.into_iter().next().unwrap().unwrap_err();
    assert!(matches!(err, FlashError::NoSpace), "{err}");
    assert!(first_mib_zero(&card));
}
