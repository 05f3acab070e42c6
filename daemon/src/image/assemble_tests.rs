//! The whole pipeline on crafted archives, read back with the standard tools (sfdisk, mtools,
//! e2fsck, debugfs): what a hostile or unusual tree turns into, without Docker.

use std::fs::File;
use std::io::{self, Read, Seek, Write};
use std::path::Path;
use std::process::Command;

use super::*;
use crate::image::fixups;
use crate::image::request::{ImageRequest, DEFAULT_BOOT};

const GIB: u64 = 1 << 30;
/// file capability "cap_net_raw+ep" as the kernel stores it (VFS_CAP_REVISION_2).
const CAP_NET_RAW: [u8; 20] = [
    0x01, 0x00, 0x00, 0x02, 0x00, 0x20, 0x00, 0x00, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
];

fn header(kind: tar::EntryType, mode: u32, size: u64) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(kind);
    h.set_mode(mode);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(1_700_000_000);
    h.set_size(size);
    h
}

fn dir(b: &mut tar::Builder<File>, path: &str) {
    let mut h = header(tar::EntryType::Directory, 0o755, 0);
    b.append_data(&mut h, path, io::empty()).unwrap();
}

fn file(b: &mut tar::Builder<File>, path: &str, mode: u32, data: &[u8]) {
    let mut h = header(tar::EntryType::Regular, mode, data.len() as u64);
    b.append_data(&mut h, path, data).unwrap();
}

fn link(b: &mut tar::Builder<File>, kind: tar::EntryType, path: &str, target: &str) {
    let mut h = header(kind, 0o777, 0);
    b.append_link(&mut h, path, target).unwrap();
}

/// A name the tar crate would refuse to write: set the raw bytes of the header.
fn raw_entry(b: &mut tar::Builder<File>, name: &[u8], data: &[u8]) {
    let mut h = header(tar::EntryType::Regular, 0o644, data.len() as u64);
    h.as_old_mut().name[..name.len()].copy_from_slice(name);
    h.set_cksum();
    b.append(&h, data).unwrap();
}

fn pseudo_random(len: usize, seed: u32) -> Vec<u8> {
    let mut x = seed.wrapping_mul(2_654_435_761) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect()
}

/// A Debian-like tree with the traps of the issue planted in it.
fn crafted(path: &Path, huge: u64) -> File {
    let mut b = tar::Builder::new(File::create(path).unwrap());
    for d in [
        "boot/",
        "boot/firmware/",
        "boot/firmware/overlays/",
        "etc/",
        "usr/",
        "usr/bin/",
        "dev/",
        "var/",
    ] {
        dir(&mut b, d);
    }
    file(&mut b, "boot/firmware/config.txt", 0o755, b"arm_64bit=1\n");
    file(
        &mut b,
        "boot/firmware/cmdline.txt",
        0o755,
        b"console=tty0 root=LABEL=PIROOT rw\n",
    );
    file(
        &mut b,
        "boot/firmware/kernel8.img",
        0o755,
        &pseudo_random(3 << 20, 7),
    );
    file(
        &mut b,
        "boot/firmware/overlays/vc4-kms-v3d-pi4.dtbo",
        0o755,
        b"overlay",
    );
    link(
        &mut b,
        tar::EntryType::Link,
        "boot/firmware/kernel8.img.bak",
        "boot/firmware/kernel8.img",
    );
    file(&mut b, "etc/stage-file", 0o640, b"written by a stage\n");
    file(&mut b, "usr/bin/sudo", 0o4755, &pseudo_random(70_000, 3));
    // Docker carries file capabilities as pax records.
    let mut h = header(tar::EntryType::Regular, 0o755, 5);
    b.append_pax_extensions([("SCHILY.xattr.security.capability", &CAP_NET_RAW[..])])
        .unwrap();
    b.append_data(&mut h, "usr/bin/ping", &b"ping!"[..])
        .unwrap();
    link(
        &mut b,
        tar::EntryType::Link,
        "usr/bin/ping6",
        "usr/bin/ping",
    );
    let mut h = header(tar::EntryType::Char, 0o666, 0);
    h.set_device_major(1).unwrap();
    h.set_device_minor(3).unwrap();
    b.append_data(&mut h, "dev/null", io::empty()).unwrap();
    file(&mut b, "dev/console", 0o644, b"");
    file(&mut b, ".dockerenv", 0o755, b"");
    file(&mut b, "usr/bin/qemu-aarch64-static", 0o755, b"emulator");
    // The traps.
    link(
        &mut b,
        tar::EntryType::Symlink,
        "etc/hostname",
        "/etc/shadow",
    );
    link(
        &mut b,
        tar::EntryType::Symlink,
        "etc/escape",
        "../../../../../etc/shadow",
    );
    raw_entry(&mut b, b"../outside", b"must not land anywhere");
    link(
        &mut b,
        tar::EntryType::Link,
        "usr/bin/dangling",
        "no/such/file",
    );
    // A huge file of zeros with one block of data in the middle.
    let mut h = header(tar::EntryType::Regular, 0o644, huge);
    let half = huge / 2;
    let data = io::repeat(0)
        .take(half)
        .chain(&[0xAB; 4096][..])
        .chain(io::repeat(0).take(huge - half - 4096));
    b.append_data(&mut h, "var/huge.img", data).unwrap();
    b.into_inner().unwrap()
}

fn request() -> ImageRequest {
    ImageRequest {
        boot_size: DEFAULT_BOOT,
        size: None,
        root_headroom: Some(64 << 20),
        data_size: Some(32 << 20),
        data_label: "PIDATA".into(),
        hostname: Some("kitchen".into()),
        compress: None,
    }
}

struct Made {
    _dir: tempfile::TempDir,
    image: std::path::PathBuf,
    plan: Plan,
    notes: Vec<String>,
}

fn reopen(path: &Path) -> File {
    let mut f = File::open(path).unwrap();
    f.rewind().unwrap();
    f
}

fn make(req: &ImageRequest, huge: u64) -> Result<Made, ImageError> {
    let dir = tempfile::tempdir().unwrap();
    let archive = dir.path().join("rootfs.tar");
    crafted(&archive, huge);
    let image = dir.path().join("disk.img");
    let disk = File::options()
        .read(true)
        .write(true)
        .create_new(true)
        .open(&image)
        .unwrap();
    let no = || false;
    let (mut tree, totals) = read_tree(
        &disk,
        req.boot_size,
        "debian",
        reopen(&archive),
        &no,
        &mut |_| {},
    )?;
    let mut notes = tree.notes.clone();
    notes.extend(fixups::apply(&mut tree, req.hostname.as_deref().unwrap()));
    let plan = plan(&tree, &totals, req)?;
    notes.extend(write_partitions(
        &disk,
        &plan,
        &tree,
        reopen(&archive),
        &no,
        &mut |_| {},
    )?);
    Ok(Made {
        _dir: dir,
        image,
        plan,
        notes,
    })
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().expect("the tool runs");
    assert!(
        out.status.success(),
        "{cmd:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn at(image: &Path, offset: u64) -> String {
    format!("{}?offset={offset}", image.display())
}

fn debugfs(image: &Path, offset: u64, request: &str) -> String {
    run(Command::new("debugfs").args(["-R", request, &at(image, offset)]))
}

#[test]
fn a_hostile_tree_becomes_a_clean_bootable_layout() {
    let made = make(&request(), GIB).unwrap();
    let img = &made.image;

    // The partition table.
    let table: serde_json::Value =
        serde_json::from_str(&run(Command::new("sfdisk").arg("--json").arg(img))).unwrap();
    let parts = table["partitiontable"]["partitions"].as_array().unwrap();
    assert_eq!(parts.len(), 3);
    assert_eq!(parts[0]["type"], "c");
    assert_eq!(parts[0]["start"], 8192);
    assert_eq!(parts[1]["type"], "83");
    assert_eq!(parts[2]["type"], "83");
    assert_eq!(table["partitiontable"]["label"], "dos");

    // The boot partition, read with mtools.
    let fat = format!("{}@@{}", img.display(), made.plan.boot.start);
    let mtools = |args: &[&str]| {
        run(Command::new(args[0])
            .env("MTOOLS_SKIP_CHECK", "1")
            .args(["-i", &fat])
            .args(&args[1..]))
    };
    assert!(mtools(&["minfo"]).contains("PIBOOT"));
    assert_eq!(
        mtools(&["mtype", "::cmdline.txt"]),
        "console=tty0 root=LABEL=PIROOT rw\n"
    );
    let listing = mtools(&["mdir", "-b", "-/", "::"]);
    for f in [
        "config.txt",
        "kernel8.img",
        "kernel8.img.bak",
        "vc4-kms-v3d-pi4.dtbo",
    ] {
        assert!(listing.contains(f), "{f} missing from {listing}");
    }

    // The root filesystem: clean, labelled, with what the stages made.
    let root = made.plan.root.start;
    run(Command::new("e2fsck").args(["-fn", &at(img, root)]));
    let stats = debugfs(img, root, "stats");
    assert!(
        stats.contains("Filesystem volume name:   PIROOT"),
        "{stats}"
    );
    assert_eq!(
        debugfs(img, root, "cat /etc/stage-file"),
        "written by a stage\n"
    );
    assert!(debugfs(img, root, "stat /usr/bin/sudo").contains("Mode:  04755"));
    let ea = debugfs(img, root, "ea_list /usr/bin/ping");
    assert!(ea.contains("security.capability"), "{ea}");
    let ping = debugfs(img, root, "stat /usr/bin/ping6");
    assert!(ping.contains("Links: 2"), "{ping}");
    let null = debugfs(img, root, "stat /dev/null");
    assert!(null.contains("Type: character special"), "{null}");
    assert!(null.contains("Device major/minor number: 01:03"), "{null}");
    assert!(debugfs(img, root, "stat /dev/console").contains("Type: character special"));
    // The fix-ups: hosts written, the planted hostname link kept as a link, Docker's and the
    // emulator's files gone.
    assert!(debugfs(img, root, "cat /etc/hosts").contains("127.0.1.1\tkitchen"));
    let hostname = debugfs(img, root, "stat /etc/hostname");
    assert!(hostname.contains("Type: symlink"), "{hostname}");
    assert!(hostname.contains("/etc/shadow"), "{hostname}");
    let escape = debugfs(img, root, "stat /etc/escape");
    assert!(escape.contains("../../../../../etc/shadow"), "{escape}");
    let listing = debugfs(img, root, "ls -p /usr/bin");
    assert!(!listing.contains("qemu-aarch64-static"), "{listing}");
    assert!(!listing.contains("dangling"), "{listing}");
    assert!(!debugfs(img, root, "ls -p /").contains("dockerenv"));
    assert!(!debugfs(img, root, "ls -p /").contains("outside"));
    assert!(made.notes.iter().any(|n| n.contains("climbs out")));
    assert!(made.notes.iter().any(|n| n.contains("dangling")));
    // The boot files are on FAT, not duplicated into root.
    assert!(!debugfs(img, root, "ls -p /boot/firmware").contains("kernel8"));
    // The huge file kept its size and its one block of data, and stayed sparse.
    let huge = debugfs(img, root, "stat /var/huge.img");
    assert!(huge.contains(&format!("Size: {GIB}")), "{huge}");
    let blocks: u64 = huge
        .split("Blockcount: ")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap();
    assert!(
        blocks <= 16,
        "{blocks} 512-byte blocks for one 4 KiB block of data"
    );
    let dump = tempfile::NamedTempFile::new().unwrap();
    debugfs(
        img,
        root,
        &format!("dump /var/huge.img {}", dump.path().display()),
    );
    let mut middle = vec![0u8; 4096];
    let mut f = File::open(dump.path()).unwrap();
    f.seek(io::SeekFrom::Start(GIB / 2)).unwrap();
    f.read_exact(&mut middle).unwrap();
    assert!(middle.iter().all(|&b| b == 0xAB));

    // The data partition: an empty, clean ext4 with its label.
    let data = made.plan.data.as_ref().unwrap();
    run(Command::new("e2fsck").args(["-fn", &at(img, data.start)]));
    assert!(debugfs(img, data.start, "stats").contains("Filesystem volume name:   PIDATA"));

    // The image file is sparse: far less allocated than its length.
    let meta = std::fs::metadata(img).unwrap();
    use std::os::unix::fs::MetadataExt;
    assert!(
        meta.blocks() * 512 < meta.len() / 4,
        "{} of {}",
        meta.blocks() * 512,
        meta.len()
    );
}

#[test]
fn too_small_a_size_says_what_is_needed() {
    let mut req = request();
    req.root_headroom = None;
    req.data_size = None;
    req.size = Some(DEFAULT_BOOT + (8 << 20));
    let e = make(&req, 64 << 20).err().unwrap();
    let ImageError::NoSpace(m) = e else {
        panic!("{e:?}")
    };
    assert!(m.contains("needs at least"), "{m}");
}

#[test]
fn a_cancelled_read_stops() {
    let dir = tempfile::tempdir().unwrap();
    let archive = dir.path().join("rootfs.tar");
    crafted(&archive, 1 << 20);
    let disk = tempfile::tempfile().unwrap();
    let yes = || true;
    let e = read_tree(
        &disk,
        DEFAULT_BOOT,
        "debian",
        reopen(&archive),
        &yes,
        &mut |_| {},
    )
    .err()
    .unwrap();
    assert!(matches!(e, ImageError::Cancelled), "{e:?}");
}

#[test]
fn a_changed_second_read_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let first = dir.path().join("first.tar");
    crafted(&first, 1 << 20);
    let disk = tempfile::tempfile().unwrap();
    let no = || false;
    let (tree, totals) = read_tree(
        &disk,
        DEFAULT_BOOT,
        "debian",
        reopen(&first),
        &no,
        &mut |_| {},
    )
    .unwrap();
    let plan = plan(&tree, &totals, &request()).unwrap();
    // A second read that differs (a file grew) must not be written as if it matched.
    let second = dir.path().join("second.tar");
    let mut b = tar::Builder::new(File::create(&second).unwrap());
    file(
        &mut b,
        "etc/stage-file",
        0o640,
        b"something else entirely\n",
    );
    b.into_inner().unwrap().flush().unwrap();
    let e = write_partitions(&disk, &plan, &tree, reopen(&second), &no, &mut |_| {})
        .err()
        .unwrap();
    assert!(matches!(e, ImageError::Changed(_)), "{e:?}");
}
