#[allow(dead_code)]
mod common {

    use std::fs::File;
    use std::os::unix::fs::FileExt;
    use std::path::{Path, PathBuf};
    use std::process::Command;

    pub const MIB: u64 = 1 << 20;
    /// Deliberately not a multiple of the block size, so the last block is partial.
    pub const IMAGE_LEN: u64 = 64 * MIB + 1234;

    /// A fresh directory under Cargo's scratch area for integration tests.
    pub fn scratch_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    /// Deterministic bytes that compress somewhat, like real filesystem data
    /// does: runs of a pseudo-random walk mixed with text.
    pub fn pattern(len: usize, seed: u64) -> Vec<u8> {
        let mut state = seed | 1;
        let mut out = Vec::with_capacity(len);
        while out.len() < len {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            if state.is_multiple_of(3) {
                out.extend_from_slice(format!("line {state:x} of some config text\n").as_bytes());
            } else {
                out.extend_from_slice(&state.to_le_bytes());
            }
        }
        out.truncate(len);
        out
    }

    /// The writes the test image is made of: the start, an unaligned stretch in
    /// the middle, and the unaligned end of the image.
    pub fn image_writes() -> Vec<(u64, Vec<u8>)> {
        vec![
            (0, pattern((MIB + 100) as usize, 1)),
            (30 * MIB + 123, pattern((3 * MIB) as usize, 2)),
            (40 * MIB, pattern(4096, 3)),
            (IMAGE_LEN - 5000, pattern(5000, 4)),
        ]
    }

    /// The inclusive 4 KiB block ranges `image_writes` touches.
    pub fn expected_ranges() -> Vec<(u64, u64)> {
        let b = 4096;
        vec![
            (0, (MIB + 100 - 1) / b),
            ((30 * MIB + 123) / b, (33 * MIB + 123 - 1) / b),
            (40 * MIB / b, 40 * MIB / b),
            ((IMAGE_LEN - 5000) / b, (IMAGE_LEN - 1) / b),
        ]
    }

    pub fn make_image(dir: &Path) -> (PathBuf, File) {
        let path = dir.join("image.img");
        let file = File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .unwrap();
        file.set_len(IMAGE_LEN).unwrap();
        for (offset, bytes) in image_writes() {
            file.write_all_at(&bytes, offset).unwrap();
        }
        (path, file)
    }

    pub fn create_output(path: &Path) -> File {
        File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(path)
            .unwrap()
    }

    pub fn sha256sum(path: &Path) -> String {
        let out = Command::new("sha256sum").arg(path).output().unwrap();
        assert!(out.status.success());
        String::from_utf8(out.stdout).unwrap()[..64].to_string()
    }

    pub fn never() -> impl Fn() -> bool {
        || false
    }

    /// A progress callback that checks the counts only ever grow and records the
    /// last one.
    pub fn progress_recorder(last: &mut u64) -> impl FnMut(u64) + '_ {
        move |n| {
            assert!(n >= *last, "progress went backwards: {n} after {last}");
            *last = n;
        }
    }

    pub fn run(cmd: &mut Command) -> std::process::Output {
        let out = cmd
            .output()
            .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
        assert!(
            out.status.success(),
            "{cmd:?} failed: {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    /// Pulls the value of a single-occurrence element out of the bmap text.
    pub fn bmap_field(xml: &str, tag: &str) -> String {
        // bmaptool's header comment mentions the tags, so look only past it.
        let xml = &xml[xml.find("<bmap ").unwrap()..];
        let open = format!("<{tag}>");
        let start = xml.find(&open).unwrap() + open.len();
        let end = xml[start..].find(&format!("</{tag}>")).unwrap() + start;
        xml[start..end].trim().to_string()
    }

    /// The `(first, last, chksum)` of every `<Range>` in the bmap text.
    pub fn bmap_ranges(xml: &str) -> Vec<(u64, u64, String)> {
        let mut ranges = Vec::new();
        let mut rest = xml;
        while let Some(at) = rest.find("<Range chksum=\"") {
            rest = &rest[at + "<Range chksum=\"".len()..];
            let chksum = rest[..64].to_string();
            let body_start = rest.find('>').unwrap() + 1;
            let body_end = rest.find("</Range>").unwrap();
            let body = rest[body_start..body_end].trim();
            let (first, last) = match body.split_once('-') {
                Some((a, b)) => (a.parse().unwrap(), b.parse().unwrap()),
                None => {
                    let n = body.parse().unwrap();
                    (n, n)
                }
            };
            ranges.push((first, last, chksum));
            rest = &rest[body_end..];
        }
        ranges
    }
}

use std::cell::Cell;
use std::fs::File;
use std::io::Read;
use std::os::fd::OwnedFd;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::image::deliver::{deliver, Compression, DeliverError, Delivered};
use common::*;
use rustix::fs::OFlags;
use sha2::{Digest, Sha256};

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn deliver_to(
    image: &File,
    out: impl Into<OwnedFd>,
    compression: Option<Compression>,
) -> Result<Delivered, DeliverError> {
    let mut last = 0;
    let result = deliver(
        image,
        IMAGE_LEN,
        out.into(),
        compression,
        2,
        &never(),
        &mut progress_recorder(&mut last),
    );
    if result.is_ok() {
        assert_eq!(last, IMAGE_LEN, "final progress must cover the image");
    }
    result
}

/// Delivers into a pipe drained by another thread; returns what came out.
fn deliver_through_pipe(
    image: &File,
    compression: Option<Compression>,
    nonblocking: bool,
) -> (Delivered, Vec<u8>) {
    let (mut reader, writer) = std::io::pipe().unwrap();
    if nonblocking {
        let flags = rustix::fs::fcntl_getfl(&writer).unwrap();
        rustix::fs::fcntl_setfl(&writer, flags | OFlags::NONBLOCK).unwrap();
    }
    let drain = std::thread::spawn(move || {
        let mut bytes = Vec::new();
        if nonblocking {
            // A slow start fills the pipe, so the writer meets EAGAIN.
            std::thread::sleep(Duration::from_millis(300));
        }
        reader.read_to_end(&mut bytes).unwrap();
        bytes
    });
    let delivered = deliver_to(image, writer, compression).unwrap();
    (delivered, drain.join().unwrap())
}

fn assert_same_file(a: &Path, b: &Path) {
    let (a_bytes, b_bytes) = (std::fs::read(a).unwrap(), std::fs::read(b).unwrap());
    assert_eq!(
        a_bytes.len(),
        b_bytes.len(),
        "{a:?} and {b:?} differ in size"
    );
    assert!(a_bytes == b_bytes, "{a:?} and {b:?} differ");
}

#[test]
fn regular_file_output_is_identical_and_sparse() {
    let dir = scratch_dir("regular");
    let (image_path, image) = make_image(&dir);
    let out_path = dir.join("out.img");
    // Stale content must not survive in the output's holes.
    std::fs::write(&out_path, vec![0xaa; (2 * MIB) as usize]).unwrap();
    let out = File::options().write(true).open(&out_path).unwrap();

    let delivered = deliver_to(&image, out, None).unwrap();

    assert_same_file(&image_path, &out_path);
    let expected_sha = sha256sum(&image_path);
    assert_eq!(delivered.image_sha256, expected_sha);
    assert_eq!(delivered.output_sha256, expected_sha);
    assert_eq!(delivered.image_size, IMAGE_LEN);
    assert_eq!(delivered.output_size, IMAGE_LEN);
    let allocated = std::fs::metadata(&out_path).unwrap().blocks() * 512;
    assert!(
        allocated <= delivered.mapped_bytes + MIB,
        "output not sparse: {allocated} bytes allocated for {} mapped",
        delivered.mapped_bytes
    );
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn bmap_lists_exactly_the_written_blocks() {
    let dir = scratch_dir("bmap-ranges");
    let (image_path, image) = make_image(&dir);
    let delivered = deliver_to(&image, create_output(&dir.join("out.img")), None).unwrap();
    let xml = &delivered.bmap;

    let expected = expected_ranges();
    let expected_blocks: u64 = expected.iter().map(|(a, b)| b - a + 1).sum();
    assert_eq!(
        bmap_field(xml, "MappedBlocksCount"),
        expected_blocks.to_string()
    );
    assert_eq!(bmap_field(xml, "ImageSize"), IMAGE_LEN.to_string());
    assert_eq!(bmap_field(xml, "BlockSize"), "4096");
    assert_eq!(
        bmap_field(xml, "BlocksCount"),
        IMAGE_LEN.div_ceil(4096).to_string()
    );
    assert_eq!(bmap_field(xml, "ChecksumType"), "sha256");
    assert_eq!(
        delivered.mapped_bytes,
        // The last block is only partly inside the image.
        expected_blocks * 4096 - (4096 - IMAGE_LEN % 4096)
    );

    let ranges = bmap_ranges(xml);
    let listed: Vec<(u64, u64)> = ranges.iter().map(|&(a, b, _)| (a, b)).collect();
    assert_eq!(listed, expected);
    let bytes = std::fs::read(&image_path).unwrap();
    for (first, last, chksum) in ranges {
        let end = ((last + 1) * 4096).min(IMAGE_LEN);
        let range = &bytes[(first * 4096) as usize..end as usize];
        assert_eq!(hex(&Sha256::digest(range)), chksum, "range {first}-{last}");
    }
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn bmaptool_accepts_and_verifies_the_bmap() {
    let dir = scratch_dir("bmaptool");
    let (image_path, image) = make_image(&dir);
    let delivered = deliver_to(&image, create_output(&dir.join("out.img")), None).unwrap();
    let bmap_path = dir.join("image.bmap");
    std::fs::write(&bmap_path, &delivered.bmap).unwrap();

    let dest = dir.join("dest.img");
    // bmaptool checks the bmap's own checksum and every range's by default.
    run(Command::new("bmaptool")
        .arg("copy")
        .arg("--bmap")
        .arg(&bmap_path)
        .arg(&image_path)
        .arg(&dest));
    // The destination is a new file, so its unmapped blocks are holes and the
    // whole of it must equal the image.
    assert_same_file(&image_path, &dest);

    // bmaptool's own map of the image lists the same ranges and checksums.
    let created = run(Command::new("bmaptool").arg("create").arg(&image_path));
    let created = String::from_utf8(created.stdout).unwrap();
    assert_eq!(bmap_ranges(&created), bmap_ranges(&delivered.bmap));
    assert_eq!(
        bmap_field(&created, "MappedBlocksCount"),
        bmap_field(&delivered.bmap, "MappedBlocksCount")
    );

    // And the verification is real: a bmap edited after the fact is refused...
    let tampered = dir.join("tampered.bmap");
    std::fs::write(
        &tampered,
        delivered
            .bmap
            .replace("<BlockSize> 4096", "<BlockSize>  4096"),
    )
    .unwrap();
    let refused = Command::new("bmaptool")
        .arg("copy")
        .arg("--bmap")
        .arg(&tampered)
        .arg(&image_path)
        .arg(dir.join("dest2.img"))
        .output()
        .unwrap();
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("checksum mismatch"));

    // ...and so is an image that no longer matches a range's checksum.
    image.write_all_at(b"!", 30 * MIB + 200).unwrap();
    let refused = Command::new("bmaptool")
        .arg("copy")
        .arg("--bmap")
        .arg(&bmap_path)
        .arg(&image_path)
        .arg(dir.join("dest3.img"))
        .output()
        .unwrap();
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("checksum mismatch"));
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn pipe_output_is_identical() {
    let dir = scratch_dir("pipe");
    let (image_path, image) = make_image(&dir);
    let (delivered, bytes) = deliver_through_pipe(&image, None, false);
    assert!(bytes == std::fs::read(&image_path).unwrap());
    assert_eq!(delivered.output_size, IMAGE_LEN);
    assert_eq!(delivered.output_sha256, sha256sum(&image_path));
    assert_eq!(delivered.image_sha256, delivered.output_sha256);
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn nonblocking_pipe_with_slow_reader_is_identical_and_flags_restored() {
    let dir = scratch_dir("pipe-nonblock");
    let (image_path, image) = make_image(&dir);
    let (delivered, bytes) = deliver_through_pipe(&image, None, true);
    assert!(bytes == std::fs::read(&image_path).unwrap());
    assert_eq!(delivered.output_sha256, sha256sum(&image_path));

    // A blocking pipe is made non-blocking only while delivering.
    let (mut reader, writer) = std::io::pipe().unwrap();
    let kept = writer.try_clone().unwrap();
    let drain = std::thread::spawn(move || {
        let mut buf = vec![0; IMAGE_LEN as usize];
        reader.read_exact(&mut buf).unwrap();
        buf
    });
    deliver_to(&image, writer, None).unwrap();
    assert!(drain.join().unwrap() == std::fs::read(&image_path).unwrap());
    let flags = rustix::fs::fcntl_getfl(&kept).unwrap();
    assert!(!flags.contains(OFlags::NONBLOCK));
    std::fs::remove_dir_all(dir).unwrap();
}

fn decompress(tool: &str, compressed: &Path, dest: &Path) {
    let out = run(Command::new(tool).arg("-dc").arg(compressed));
    std::fs::write(dest, out.stdout).unwrap();
}

fn check_compressed(compression: Compression, tool: &str, ext: &str) {
    let dir = scratch_dir(ext);
    let (image_path, image) = make_image(&dir);
    let out_path = dir.join(format!("out.img.{ext}"));
    let delivered = deliver_to(&image, create_output(&out_path), Some(compression)).unwrap();

    assert_eq!(delivered.image_sha256, sha256sum(&image_path));
    assert_eq!(delivered.output_sha256, sha256sum(&out_path));
    assert_eq!(
        delivered.output_size,
        std::fs::metadata(&out_path).unwrap().len()
    );
    assert!(delivered.output_size < IMAGE_LEN / 4);
    let decompressed = dir.join("decompressed.img");
    decompress(tool, &out_path, &decompressed);
    assert_same_file(&image_path, &decompressed);

    // Through a pipe the compressed stream is the same kind of thing.
    let (piped, bytes) = deliver_through_pipe(&image, Some(compression), false);
    assert_eq!(piped.output_size, bytes.len() as u64);
    assert_eq!(piped.output_sha256, hex(&Sha256::digest(&bytes)));
    let piped_path = dir.join(format!("piped.img.{ext}"));
    std::fs::write(&piped_path, &bytes).unwrap();
    decompress(tool, &piped_path, &decompressed);
    assert_same_file(&image_path, &decompressed);
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn zstd_output_decompresses_to_the_image() {
    check_compressed(Compression::Zstd, "zstd", "zst");
}

#[test]
fn xz_output_decompresses_to_the_image() {
    check_compressed(Compression::Xz, "xz", "xz");
}

#[test]
fn zstd_frame_records_the_image_size() {
    let dir = scratch_dir("zstd-size");
    let (_, image) = make_image(&dir);
    let out_path = dir.join("out.img.zst");
    deliver_to(&image, create_output(&out_path), Some(Compression::Zstd)).unwrap();
    let listed = run(Command::new("zstd").arg("-lv").arg(&out_path));
    let text = String::from_utf8_lossy(&listed.stdout);
    assert!(text.contains(&IMAGE_LEN.to_string()), "{text}");
    assert!(text.contains("XXH64"), "{text}");
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn full_device_is_no_space() {
    let dir = scratch_dir("devfull");
    let (_, image) = make_image(&dir);
    for compression in [None, Some(Compression::Zstd), Some(Compression::Xz)] {
        let full = File::options().write(true).open("/dev/full").unwrap();
        let err = deliver_to(&image, full, compression).unwrap_err();
        assert!(
            matches!(err, DeliverError::NoSpace),
            "{compression:?}: {err:?}"
        );
    }
    std::fs::remove_dir_all(dir).unwrap();
}

/// A 1 MiB tmpfs, unmounted on drop; `None` where mounting is not allowed.
struct TinyTmpfs(PathBuf);

impl TinyTmpfs {
    fn mount(at: &Path) -> Option<TinyTmpfs> {
        std::fs::create_dir_all(at).unwrap();
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=1m", "tmpfs"])
            .arg(at)
            .stderr(std::process::Stdio::null())
            .status()
            .ok()?;
        status.success().then(|| TinyTmpfs(at.to_path_buf()))
    }
}

impl Drop for TinyTmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

#[test]
fn tiny_tmpfs_is_no_space_and_sparse_output_is_emptied() {
    let dir = scratch_dir("tmpfs");
    let (_, image) = make_image(&dir);
    let Some(tmpfs) = TinyTmpfs::mount(&dir.join("mnt")) else {
        eprintln!("cannot mount tmpfs here (not root?): covered by /dev/full only");
        return;
    };
    let out_path = tmpfs.0.join("out.img");
    let err = deliver_to(&image, create_output(&out_path), None).unwrap_err();
    assert!(matches!(err, DeliverError::NoSpace), "{err:?}");
    // A full-length file with missing data must not pass for an image.
    assert_eq!(std::fs::metadata(&out_path).unwrap().len(), 0);

    let out_path = tmpfs.0.join("out.img.xz");
    let err = deliver_to(&image, create_output(&out_path), Some(Compression::Xz)).unwrap_err();
    assert!(matches!(err, DeliverError::NoSpace), "{err:?}");
    drop(tmpfs);
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn reader_closing_early_is_output_closed() {
    let dir = scratch_dir("closed");
    let (_, image) = make_image(&dir);
    for compression in [None, Some(Compression::Zstd)] {
        let (mut reader, writer) = std::io::pipe().unwrap();
        let reading = std::thread::spawn(move || {
            let mut buf = vec![0; 4096];
            reader.read_exact(&mut buf).unwrap();
        });
        let err = deliver_to(&image, writer, compression).unwrap_err();
        reading.join().unwrap();
        assert!(
            matches!(err, DeliverError::OutputClosed),
            "{compression:?}: {err:?}"
        );
    }
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn cancelled_after_first_check() {
    let dir = scratch_dir("cancel");
    let (_, image) = make_image(&dir);
    for compression in [None, Some(Compression::Zstd), Some(Compression::Xz)] {
        let out_path = dir.join("out.img");
        let calls = Cell::new(0);
        let cancelled = || {
            calls.set(calls.get() + 1);
            calls.get() > 1
        };
        let mut processed = 0;
        let err = deliver(
            &image,
            IMAGE_LEN,
            create_output(&out_path).into(),
            compression,
            2,
            &cancelled,
            &mut |n| processed = n,
        )
        .unwrap_err();
        assert!(matches!(err, DeliverError::Cancelled), "{err:?}");
        assert!(processed <= 4 * MIB, "went on for {processed} bytes");
        if compression.is_none() {
            assert_eq!(std::fs::metadata(&out_path).unwrap().len(), 0);
        }
    }
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn cancel_is_prompt_while_the_reader_stalls() {
    let dir = scratch_dir("cancel-stall");
    let (_, image) = make_image(&dir);
    // Nobody reads: the pipe fills after 64 KiB and stays full.
    let (reader, writer) = std::io::pipe().unwrap();
    let flag = AtomicBool::new(false);
    let started = Instant::now();
    let err = std::thread::scope(|s| {
        s.spawn(|| {
            std::thread::sleep(Duration::from_millis(300));
            flag.store(true, Ordering::SeqCst);
        });
        deliver(
            &image,
            IMAGE_LEN,
            writer.into(),
            None,
            1,
            &|| flag.load(Ordering::SeqCst),
            &mut |_| {},
        )
        .unwrap_err()
    });
    assert!(matches!(err, DeliverError::Cancelled), "{err:?}");
    assert!(started.elapsed() < Duration::from_secs(2));
    drop(reader);
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn image_shorter_than_len_is_refused() {
    let dir = scratch_dir("short");
    let (_, image) = make_image(&dir);
    let err = deliver(
        &image,
        IMAGE_LEN + 1,
        create_output(&dir.join("out.img")).into(),
        None,
        1,
        &never(),
        &mut |_| {},
    )
    .unwrap_err();
    assert!(matches!(err, DeliverError::Io(_)), "{err:?}");
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn empty_image() {
    let dir = scratch_dir("empty");
    let image = create_output(&dir.join("image.img"));
    let out_path = dir.join("out.img");
    let delivered = deliver(
        &image,
        0,
        create_output(&out_path).into(),
        None,
        1,
        &never(),
        &mut |_| {},
    )
    .unwrap();
    assert_eq!(delivered.output_size, 0);
    assert_eq!(delivered.mapped_bytes, 0);
    assert_eq!(
        delivered.image_sha256,
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    );
    assert!(delivered
        .bmap
        .contains("<MappedBlocksCount> 0 </MappedBlocksCount>"));
    std::fs::remove_dir_all(dir).unwrap();
}
