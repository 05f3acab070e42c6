//! Builds boot filesystems with `BootFs` and reads them back with mtools
//! and fsck.fat, which share no code with fatfs.

use std::fs::File;
use std::io::{Cursor, Read};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::process::Command;
use std::time::Instant;

use crate::image::fat::{min_fat32_len, BootFs, FatError};
use crate::image::test_tools::{run, tool};

const MIB: u64 = 1024 * 1024;
const OFFSET: u64 = 4 * MIB;
const LEN: u64 = 256 * MIB;
/// 2024-05-01 12:34:56 UTC
const MTIME: i64 = 1_714_566_896;

/// Deterministic bytes that do not compress or repeat, so misplaced
/// clusters cannot go unnoticed.
fn pseudo_random(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

fn pattern(len: u64, at: u64) -> Vec<u8> {
    (at..at + len).map(|i| (i % 251) as u8 ^ 0xA5).collect()
}

/// A sparse image of `len` bytes with `window` left as a hole and the
/// rest filled with a pattern, so stray writes show up.
fn image(len: u64, window: (u64, u64)) -> tempfile::NamedTempFile {
    let img = tempfile::NamedTempFile::new().unwrap();
    let f = img.as_file();
    f.set_len(len).unwrap();
    f.write_all_at(&pattern(window.0, 0), 0).unwrap();
    let tail = window.0 + window.1;
    f.write_all_at(&pattern(len - tail, tail), tail).unwrap();
    img
}

fn assert_outside_untouched(f: &File, len: u64, window: (u64, u64)) {
    let mut head = vec![0; window.0 as usize];
    f.read_exact_at(&mut head, 0).unwrap();
    assert!(
        head == pattern(window.0, 0),
        "bytes before the window changed"
    );
    let tail = window.0 + window.1;
    let mut rest = vec![0; (len - tail) as usize];
    f.read_exact_at(&mut rest, tail).unwrap();
    assert!(
        rest == pattern(len - tail, tail),
        "bytes after the window changed"
    );
    assert_eq!(f.metadata().unwrap().len(), len, "image size changed");
}

fn mtools(cmd: &str, img: &Path, offset: u64) -> Command {
    let mut c = Command::new(tool(cmd));
    c.env("MTOOLS_SKIP_CHECK", "1")
        .env("MTOOLSRC", "/dev/null")
        .env("TZ", "UTC")
        .arg("-i")
        .arg(format!("{}@@{offset}", img.display()));
    c
}

fn stdout(cmd: &mut Command) -> String {
    String::from_utf8(run(cmd).stdout).unwrap()
}

fn mcopy_out(img: &Path, offset: u64, name: &str) -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("out");
    run(mtools("mcopy", img, offset)
        .arg("-n")
        .arg(format!("::{name}"))
        .arg(&dest));
    std::fs::read(dest).unwrap()
}

/// fsck.fat cannot take an offset, so the window is copied out, skipping
/// all-zero chunks to keep the copy sparse and quick.
fn fsck_window(f: &File, offset: u64, len: u64) -> String {
    let copy = tempfile::NamedTempFile::new().unwrap();
    copy.as_file().set_len(len).unwrap();
    let mut buf = vec![0; MIB as usize];
    let mut at = 0;
    while at < len {
        let n = (len - at).min(MIB) as usize;
        f.read_exact_at(&mut buf[..n], offset + at).unwrap();
        if buf[..n].iter().any(|&b| b != 0) {
            copy.as_file().write_all_at(&buf[..n], at).unwrap();
        }
        at += n as u64;
    }
    let out = run(Command::new(tool("fsck.fat"))
        .arg("-n")
        .arg("-v")
        .arg(copy.path()));
    let report = String::from_utf8_lossy(&out.stdout).into_owned();
    // A clean exit already means no errors; these catch the warnings that
    // fsck.fat reports without failing.
    for complaint in ["Leaving filesystem unchanged", "differ", "Dirty bit"] {
        assert!(!report.contains(complaint), "{report}");
    }
    report
}

const OVERLAYS: &[&str] = &[
    "vc4-kms-v3d-pi4.dtbo",
    "vc4-kms-v3d.dtbo",
    "vc4-kms-dsi-7inch.dtbo",
    "disable-bt.dtbo",
    "hifiberry-dacplus-std.dtbo",
    "i2c-rtc.dtbo",
    "README",
    "overlay_map.dtb",
    "an-unusually-long-overlay-name-that-needs-many-lfn-slots-rpi.dtbo",
];

#[test]
fn builds_a_boot_partition_that_mtools_and_fsck_accept() {
    let total = OFFSET + LEN + 4 * MIB;
    let img = image(total, (OFFSET, LEN));
    let f = img.as_file();

    let config = b"arm_64bit=1\ndtoverlay=vc4-kms-v3d\n".to_vec();
    let cmdline = b"console=serial0,115200 root=PARTUUID=1234abcd-02 rootwait\n".to_vec();
    let kernel = pseudo_random(20_000_000, 42);

    let started = Instant::now();
    let mut fs = BootFs::format(f, OFFSET, LEN, "PIBOOT").unwrap();
    assert_eq!(fs.cluster_size(), 2048);
    fs.write_file("config.txt", &mut &config[..], config.len() as u64, MTIME)
        .unwrap();
    fs.write_file(
        "cmdline.txt",
        &mut &cmdline[..],
        cmdline.len() as u64,
        MTIME,
    )
    .unwrap();
    let kernel_started = Instant::now();
    fs.write_file(
        "kernel8.img",
        &mut Cursor::new(&kernel),
        kernel.len() as u64,
        MTIME,
    )
    .unwrap();
    let kernel_time = kernel_started.elapsed();
    fs.mkdir("overlays", MTIME).unwrap();
    let mut overlay_bytes = Vec::new();
    for (i, name) in OVERLAYS.iter().enumerate() {
        let data = pseudo_random(1000 + i * 3001, i as u64 + 7);
        let path = format!("overlays/{name}");
        fs.write_file(
            &path,
            &mut &data[..],
            data.len() as u64,
            MTIME + i as i64 * 60,
        )
        .unwrap();
        overlay_bytes.push(data);
    }
    fs.write_file("empty.dat", &mut std::io::empty(), 0, MTIME)
        .unwrap();
    fs.mkdir("nested/deeper/deepest", MTIME).unwrap();
    fs.write_file("nested/deeper/deepest/x.txt", &mut &b"x"[..], 1, MTIME)
        .unwrap();
    fs.copy_within(
        "overlays/vc4-kms-v3d-pi4.dtbo",
        "overlays/vc4-fkms-v3d-pi4.dtbo",
    )
    .unwrap();
    fs.copy_within("kernel8.img", "kernel_2712.img").unwrap();
    let used = fs.finish().unwrap();
    eprintln!(
        "format+write took {:?} (20 MB kernel: {kernel_time:?}); {used} bytes used",
        started.elapsed()
    );
    assert!(used >= 2 * kernel.len() as u64, "{used}");
    assert!(used < 2 * kernel.len() as u64 + MIB, "{used}");

    assert_outside_untouched(f, total, (OFFSET, LEN));

    let path = img.path();
    let label = stdout(mtools("mlabel", path, OFFSET).args(["-s", "::"]));
    assert!(label.contains("PIBOOT"), "{label}");

    let info = stdout(mtools("minfo", path, OFFSET).arg("::"));
    assert!(info.contains("FAT32"), "{info}");
    assert!(info.contains("hidden sectors: 8192"), "{info}");
    assert!(info.contains("sector size: 512"), "{info}");

    let listing = stdout(mtools("mdir", path, OFFSET).args(["-/", "-b", "::"]));
    for name in [
        "::/config.txt",
        "::/cmdline.txt",
        "::/kernel8.img",
        "::/empty.dat",
    ] {
        assert!(listing.lines().any(|l| l == name), "{name} in\n{listing}");
    }
    for name in OVERLAYS {
        let want = format!("::/overlays/{name}");
        assert!(listing.lines().any(|l| l == want), "{want} in\n{listing}");
    }
    assert!(
        listing.contains("::/nested/deeper/deepest/x.txt"),
        "{listing}"
    );

    // FAT keeps modification times to 2 seconds, hence :56 stays :56.
    let config_line = stdout(mtools("mdir", path, OFFSET).arg("::config.txt"));
    assert!(config_line.contains("2024-05-01  12:34"), "{config_line}");
    let readme_line = stdout(mtools("mdir", path, OFFSET).arg("::overlays/README"));
    assert!(readme_line.contains("2024-05-01  12:40"), "{readme_line}");
    let copy_line = stdout(mtools("mdir", path, OFFSET).arg("::kernel_2712.img"));
    assert!(copy_line.contains("2024-05-01  12:34"), "{copy_line}");

    assert!(mcopy_out(path, OFFSET, "kernel8.img") == kernel);
    assert!(mcopy_out(path, OFFSET, "kernel_2712.img") == kernel);
    assert_eq!(mcopy_out(path, OFFSET, "config.txt"), config);
    assert_eq!(mcopy_out(path, OFFSET, "cmdline.txt"), cmdline);
    assert!(mcopy_out(path, OFFSET, "empty.dat").is_empty());
    for (name, data) in OVERLAYS.iter().zip(&overlay_bytes) {
        assert!(
            mcopy_out(path, OFFSET, &format!("overlays/{name}")) == *data,
            "{name}"
        );
    }
    assert!(mcopy_out(path, OFFSET, "overlays/vc4-fkms-v3d-pi4.dtbo") == overlay_bytes[0]);

    let report = fsck_window(f, OFFSET, LEN);
    assert!(report.contains("8192 hidden sectors"), "{report}");
    assert!(report.contains("2048 bytes per cluster"), "{report}");
}

#[test]
fn full_volume_reports_no_space_and_stays_clean() {
    let len = min_fat32_len();
    let offset = MIB;
    let total = offset + len + MIB;
    let img = image(total, (offset, len));
    let f = img.as_file();

    let mut fs = BootFs::format(f, offset, len, "FULL").unwrap();
    assert_eq!(fs.cluster_size(), 512);
    let chunk = pseudo_random(4 * MIB as usize, 1);
    let mut written = 0;
    let err = loop {
        let name = format!("blob{written}.bin");
        match fs.write_file(&name, &mut &chunk[..], chunk.len() as u64, MTIME) {
            Ok(()) => written += 1,
            Err(e) => break e,
        }
    };
    assert!(written >= 6, "only {written} blobs fit");
    let FatError::NoSpace { needed, available } = err else {
        panic!("expected NoSpace, got {err:?}");
    };
    assert_eq!(needed, chunk.len() as u64);
    assert!(available < needed);

    // Fill the volume to the last cluster, then ask for one more, which
    // fatfs itself (not the up-front check) discovers is missing.
    // The root directory may need a cluster of its own for the new name;
    // a failed attempt keeps that cluster, so the retry fits exactly.
    let mut filler = Vec::new();
    for _ in 0..2 {
        let rest = fs.free_bytes().unwrap();
        filler = pseudo_random(rest as usize, 2);
        match fs.write_file("filler.bin", &mut &filler[..], rest, MTIME) {
            Ok(()) => break,
            Err(FatError::NoSpace { .. }) => continue,
            Err(e) => panic!("{e:?}"),
        }
    }
    assert_eq!(fs.free_bytes().unwrap(), 0);
    let err = fs.mkdir("one-more-dir", MTIME).unwrap_err();
    assert!(matches!(err, FatError::NoSpace { .. }), "{err:?}");
    let err = fs
        .write_file("one-more-byte", &mut &b"x"[..], 1, MTIME)
        .unwrap_err();
    assert!(matches!(err, FatError::NoSpace { .. }), "{err:?}");
    fs.finish().unwrap();

    assert_outside_untouched(f, total, (offset, len));
    let listing = stdout(mtools("mdir", img.path(), offset).args(["-b", "::"]));
    assert!(!listing.contains("one-more"), "{listing}");
    assert!(mcopy_out(img.path(), offset, "filler.bin") == filler);
    fsck_window(f, offset, len);
}

#[test]
fn a_write_that_runs_out_midway_leaves_nothing_behind() {
    let len = min_fat32_len();
    let img = image(len + MIB, (MIB, len));
    let f = img.as_file();
    let mut fs = BootFs::format(f, MIB, len, "MIDWAY").unwrap();
    // Leave exactly one file's worth of space, then make the directory
    // need a cluster of its own first: 16 entries fit a 512-byte cluster.
    let rest = fs.free_bytes().unwrap() - 4096;
    fs.write_file(
        "big",
        &mut &pseudo_random(rest as usize, 3)[..],
        rest,
        MTIME,
    )
    .unwrap();
    for i in 0..6 {
        fs.write_file(&format!("f{i}"), &mut &b""[..], 0, MTIME)
            .unwrap();
    }
    // The root now holds the label and `big`, f0..f5 at two slots each:
    // 15 of 16. This name needs three more, so the directory must grow,
    // and the data that passed the up-front check no longer fits.
    let data = pseudo_random(4096, 4);
    let err = fs
        .write_file("long-name-to-need-slots", &mut &data[..], 4096, MTIME)
        .unwrap_err();
    assert!(matches!(err, FatError::NoSpace { .. }), "{err:?}");
    fs.finish().unwrap();
    let listing = stdout(mtools("mdir", img.path(), MIB).args(["-b", "::"]));
    assert!(!listing.contains("long-name"), "{listing}");
    fsck_window(f, MIB, len);
}

#[test]
fn too_small_reports_the_minimum() {
    let min = min_fat32_len();
    assert!(min > 32 * MIB && min < 34 * MIB, "{min}");
    let img = image(min + MIB, (MIB, min));
    let f = img.as_file();
    let err = BootFs::format(f, MIB, min - 512, "SMALL").err().unwrap();
    let FatError::TooSmall { len, min: reported } = err else {
        panic!("expected TooSmall, got {err:?}");
    };
    assert_eq!((len, reported), (min - 512, min));

    // The minimum itself must work and be FAT32 to an independent reader.
    let fs = BootFs::format(f, MIB, min, "SMALL").unwrap();
    fs.finish().unwrap();
    let report = fsck_window(f, MIB, min);
    assert!(
        report.contains("65525") || report.contains("FAT32"),
        "{report}"
    );
    let info = stdout(mtools("minfo", img.path(), MIB).arg("::"));
    assert!(info.contains("FAT32"), "{info}");
}

#[test]
fn names_that_fat_folds_together_clash() {
    let img = image(LEN, (0, LEN));
    let f = img.as_file();
    let mut fs = BootFs::format(f, 0, LEN, "CLASH").unwrap();
    fs.write_file("config.txt", &mut &b"a"[..], 1, MTIME)
        .unwrap();
    fs.mkdir("overlays", MTIME).unwrap();
    fs.write_file("overlays/vc4-kms-v3d-pi4.dtbo", &mut &b"b"[..], 1, MTIME)
        .unwrap();

    let clash = |r: Result<(), FatError>| matches!(r, Err(FatError::Clash(_)));
    assert!(clash(fs.write_file("CONFIG.TXT", &mut &b"c"[..], 1, MTIME)));
    assert!(clash(fs.write_file("Config.txt", &mut &b"c"[..], 1, MTIME)));
    assert!(clash(fs.mkdir("Overlays", MTIME)));
    assert!(clash(fs.mkdir("config.TXT", MTIME)));
    assert!(clash(fs.write_file(
        "OVERLAYS/new.dtbo",
        &mut &b"c"[..],
        1,
        MTIME
    )));
    assert!(clash(fs.copy_within("config.txt", "CONFIG.txt")));
    // The 8.3 alias fatfs generated for the long name is taken too.
    assert!(clash(fs.write_file(
        "overlays/VC4-KM~1.DTB",
        &mut &b"c"[..],
        1,
        MTIME
    )));

    assert!(matches!(
        fs.write_file("config.txt", &mut &b"c"[..], 1, MTIME),
        Err(FatError::Exists(_))
    ));
    // mkdir -p semantics: an existing directory is fine, a file is not.
    fs.mkdir("overlays", MTIME).unwrap();
    assert!(matches!(
        fs.mkdir("config.txt/sub", MTIME),
        Err(FatError::NotADirectory(_))
    ));
    fs.finish().unwrap();

    let listing = stdout(mtools("mdir", img.path(), 0).args(["-/", "-b", "::"]));
    let count = listing
        .lines()
        .filter(|l| l.to_ascii_lowercase().ends_with("config.txt"))
        .count();
    assert_eq!(count, 1, "{listing}");
    assert_eq!(mcopy_out(img.path(), 0, "config.txt"), b"a");
    fsck_window(f, 0, LEN);
}

#[test]
fn bad_names_and_other_misuse_are_refused() {
    let img = image(LEN + MIB, (MIB, LEN));
    let f = img.as_file();

    let err = BootFs::format(f, MIB, LEN, "BAD.LABEL").err().unwrap();
    assert!(matches!(err, FatError::BadLabel(_)), "{err:?}");
    let err = BootFs::format(f, MIB + 1, LEN - 512, "X").err().unwrap();
    assert!(matches!(err, FatError::Misaligned(_)), "{err:?}");
    let err = BootFs::format(f, MIB, LEN + 512, "X").err().unwrap();
    assert!(matches!(err, FatError::OutsideImage { .. }), "{err:?}");

    let mut fs = BootFs::format(f, MIB, LEN, "NAMES").unwrap();
    for bad in [
        "back\\slash",
        "co:lon",
        "st*r",
        "q?",
        "quo\"te",
        "l<t",
        "g>t",
        "pi|pe",
        "ctl\u{1}",
        "",
        "/abs",
        "a//b",
        "..",
        "trailing.",
    ] {
        let err = fs.write_file(bad, &mut &b"x"[..], 1, MTIME).unwrap_err();
        assert!(matches!(err, FatError::BadName(_)), "{bad:?}: {err:?}");
        let err = fs.mkdir(bad, MTIME).unwrap_err();
        assert!(matches!(err, FatError::BadName(_)), "{bad:?}: {err:?}");
    }
    assert!(matches!(
        fs.write_file("missing/x", &mut &b"x"[..], 1, MTIME),
        Err(FatError::NotFound(_))
    ));
    assert!(matches!(
        fs.copy_within("missing", "y"),
        Err(FatError::NotFound(_))
    ));
    fs.mkdir("dir", MTIME).unwrap();
    assert!(matches!(
        fs.copy_within("dir", "y"),
        Err(FatError::IsADirectory(_))
    ));
    let err = fs
        .write_file("short", &mut &b"abc"[..], 10, MTIME)
        .unwrap_err();
    assert!(
        matches!(
            err,
            FatError::ShortRead {
                expected: 10,
                actual: 3,
                ..
            }
        ),
        "{err:?}"
    );
    let err = fs
        .write_file("huge", &mut std::io::repeat(0).take(1), 1 << 32, MTIME)
        .unwrap_err();
    assert!(matches!(err, FatError::FileTooLarge { .. }), "{err:?}");
    // Only `size` bytes are taken from a longer reader.
    fs.write_file("prefix", &mut &b"abcdef"[..], 3, MTIME)
        .unwrap();
    fs.finish().unwrap();

    let listing = stdout(mtools("mdir", img.path(), MIB).args(["-b", "::"]));
    assert!(!listing.contains("short"), "{listing}");
    assert_eq!(mcopy_out(img.path(), MIB, "prefix"), b"abc");
    fsck_window(f, MIB, LEN);
    assert_outside_untouched(f, LEN + MIB, (MIB, LEN));
}
