//! The rules against this machine's real kernel: its root disk, and loop
//! devices made for each test. Needs root and /dev/loop-control (CI and `make test` run as
//! root); without them the tests fail rather than pass unchecked.
//!
//! Every loop device, swap area and mount is undone by a Drop guard, so a
//! failing assertion (a panic) still cleans up.

use std::fs::{self, File};
use std::io::{Seek, SeekFrom, Write};
use std::os::fd::AsFd;
use std::os::unix::fs::{symlink, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Mutex, MutexGuard};
use std::thread::sleep;
use std::time::{Duration, Instant};

use crate::device::rules::*;
use tempfile::TempDir;

const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;

/// Loop numbers are machine-wide: tests that detach and re-bind a number must
/// not have a sibling test grab it in between.
static LOOPS: Mutex<()> = Mutex::new(());

fn exclusive() -> MutexGuard<'static, ()> {
    LOOPS.lock().unwrap_or_else(|e| e.into_inner())
}

fn can_run() -> bool {
    let root = fs::metadata("/proc/self")
        .map(|m| m.uid() == 0)
        .unwrap_or(false);
    let ok = root && Path::new("/dev/loop-control").exists();
    assert!(ok, "these tests need root and /dev/loop-control");
    ok
}

fn scratch() -> TempDir {
    std::fs::create_dir_all(concat!(env!("CARGO_MANIFEST_DIR"), "/../target/tmp")).unwrap();
    tempfile::Builder::new()
        .prefix("real-")
        .tempdir_in(concat!(env!("CARGO_MANIFEST_DIR"), "/../target/tmp"))
        .unwrap()
}

fn roots() -> Roots {
    Roots::default()
}

fn policy(allow_loop: bool) -> Policy {
    Policy {
        allow_loop,
        protected_paths: vec![
            PathBuf::from("/"),
            PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../target/tmp")),
        ],
        large_disk: 256 * GIB,
    }
}

fn sh(cmd: &str, args: &[&str]) -> String {
    let out = Command::new(cmd)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{cmd}: {e}"));
    assert!(
        out.status.success(),
        "{cmd} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// For cleanup: a failure here must not turn one panic into an abort.
fn sh_quiet(cmd: &str, args: &[&str]) {
    let _ = Command::new(cmd)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

fn sparse(dir: &Path, name: &str, size: u64) -> PathBuf {
    let path = dir.join(name);
    File::create(&path).unwrap().set_len(size).unwrap();
    path
}

fn wait_for(what: &str, mut done: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(10) {
        if done() {
            return true;
        }
        sleep(Duration::from_millis(50));
    }
    eprintln!("timed out waiting for {what}");
    false
}

struct Loop {
    node: PathBuf,
    name: String,
    backing: PathBuf,
    attached: bool,
}

impl Loop {
    fn attach(backing: &Path, flags: &[&str]) -> Loop {
        let backing = fs::canonicalize(backing).unwrap();
        let mut args = vec!["--find", "--show"];
        args.extend_from_slice(flags);
        args.push(backing.to_str().unwrap());
        let node = PathBuf::from(sh("losetup", &args).trim());
        Loop::bound(node, backing)
    }

    /// Binds a given number; None if someone else took it first.
    fn attach_at(node: &Path, backing: &Path) -> Option<Loop> {
        let backing = fs::canonicalize(backing).unwrap();
        let ok = Command::new("losetup")
            .arg(node)
            .arg(&backing)
            .stderr(Stdio::null())
            .status()
            .ok()?
            .success();
        ok.then(|| Loop::bound(node.to_path_buf(), backing))
    }

    fn bound(node: PathBuf, backing: PathBuf) -> Loop {
        let name = node.file_name().unwrap().to_string_lossy().into_owned();
        Loop {
            node,
            name,
            backing,
            attached: true,
        }
    }

    /// Detaches only if the number is still bound to our file, so cleanup
    /// can never unbind another process's loop device.
    fn ours(&self) -> bool {
        fs::read_to_string(
            Path::new("/sys/block")
                .join(&self.name)
                .join("loop/backing_file"),
        )
        .map(|s| Path::new(s.trim()) == self.backing)
        .unwrap_or(false)
    }

    fn detach(&mut self) {
        if !std::mem::take(&mut self.attached) || !self.ours() {
            return;
        }
        let node = self.node.to_str().unwrap();
        // Partitions added through BLKPG outlive the binding when partscan is
        // off, so drop them explicitly.
        sh_quiet("partx", &["-d", node]);
        sh_quiet("losetup", &["-d", node]);
        // udev or udisks may still have it open, which makes detach lazy.
        wait_for("loop detach", || !self.ours());
    }
}

impl Drop for Loop {
    fn drop(&mut self) {
        self.detach();
    }
}

struct SwapOn(PathBuf);

impl SwapOn {
    fn new(node: &Path) -> SwapOn {
        let node_str = node.to_str().unwrap();
        sh("mkswap", &["-q", node_str]);
        sh("swapon", &[node_str]);
        SwapOn(node.to_path_buf())
    }
}

impl Drop for SwapOn {
    fn drop(&mut self) {
        sh_quiet("swapoff", &[self.0.to_str().unwrap()]);
    }
}

struct MountAt(PathBuf);

impl MountAt {
    fn new(node: &Path, dir: &Path) -> MountAt {
        sh("mkfs.ext4", &["-q", "-F", node.to_str().unwrap()]);
        fs::create_dir_all(dir).unwrap();
        sh("mount", &[node.to_str().unwrap(), dir.to_str().unwrap()]);
        MountAt(dir.to_path_buf())
    }
}

impl Drop for MountAt {
    fn drop(&mut self) {
        sh_quiet("umount", &[self.0.to_str().unwrap()]);
    }
}

fn split(raw: u64) -> (u64, u64) {
    (
        ((raw >> 32) & 0xffff_f000) | ((raw >> 8) & 0x0fff),
        ((raw >> 12) & 0xffff_ff00) | (raw & 0xff),
    )
}

/// Independent of the crate: st_dev of / -> sysfs -> whole disk.
fn root_disk() -> String {
    let (major, minor) = split(fs::metadata("/").unwrap().dev());
    let dir = fs::canonicalize(format!("/sys/dev/block/{major}:{minor}"))
        .expect("/ is not directly on a block device on this machine");
    let dir = if dir.join("partition").exists() {
        dir.parent().unwrap().to_path_buf()
    } else {
        dir
    };
    dir.file_name().unwrap().to_string_lossy().into_owned()
}

fn listed(allow_loop: bool, name: &str) -> Option<Disk> {
    list(&roots(), &policy(allow_loop))
        .unwrap()
        .into_iter()
        .find(|d| d.name == name)
}

#[test]
fn root_disk_is_the_system_disk() {
    if !can_run() {
        return;
    }
    let name = root_disk();
    let disks = list(&roots(), &policy(false)).unwrap();
    for disk in &disks {
        eprintln!(
            "listed {} {:?} bus={:?} diskseq={:?} serial={:?} -> {:?}",
            disk.name,
            disk.identity.size,
            disk.bus,
            disk.identity.diskseq,
            disk.identity.serial,
            disk.verdict
        );
    }
    let root = disks
        .iter()
        .find(|d| d.name == name)
        .expect("root disk listed");
    assert!(
        matches!(&root.verdict, Verdict::Refused(Refusal::SystemDisk(_))),
        "{root:?}"
    );

    let node = Path::new("/dev").join(&name);
    for allow_loop in [false, true] {
        let got = inspect(&node, 0, &roots(), &policy(allow_loop), Mounts::Refuse);
        assert!(matches!(got, Err(Refusal::SystemDisk(_))), "{got:?}");
    }

    // A harmless-looking name in a temp dir is resolved, not believed.
    let tmp = scratch();
    let link = tmp.path().join("usb-SanDisk_Ultra_SD-0:0");
    symlink(&node, &link).unwrap();
    let got = inspect(&link, 0, &roots(), &policy(true), Mounts::Refuse);
    assert!(matches!(got, Err(Refusal::SystemDisk(_))), "{got:?}");
}

#[test]
fn loop_devices_follow_the_policy() {
    if !can_run() {
        return;
    }
    let _lock = exclusive();
    let tmp = scratch();
    let img = sparse(tmp.path(), "card.img", 64 * MIB);
    let mut lp = Loop::attach(&img, &[]);

    assert_eq!(
        inspect(&lp.node, MIB, &roots(), &policy(false), Mounts::Refuse).unwrap_err(),
        Refusal::LoopNotAllowed
    );
    let disk = inspect(&lp.node, MIB, &roots(), &policy(true), Mounts::Refuse).unwrap();
    assert_eq!(disk.verdict, Verdict::Ok);
    assert_eq!(disk.node, lp.node);
    assert_eq!(disk.name, lp.name);
    assert_eq!(disk.bus.as_deref(), Some("loop"));
    assert_eq!(disk.identity.major, 7);
    assert_eq!(disk.identity.size, 64 * MIB);
    assert!(
        disk.identity.diskseq.is_some(),
        "kernel >= 5.15 has diskseq"
    );
    assert!(disk.partitions.is_empty() && disk.mounted.is_empty());

    let strict = Policy {
        large_disk: MIB,
        ..policy(true)
    };
    assert!(matches!(
        inspect(&lp.node, MIB, &roots(), &strict, Mounts::Refuse)
            .unwrap()
            .verdict,
        Verdict::NeedsSystemGrant(_)
    ));

    assert_eq!(
        listed(false, &lp.name).unwrap().verdict,
        Verdict::Refused(Refusal::LoopNotAllowed)
    );
    assert_eq!(listed(true, &lp.name).unwrap().verdict, Verdict::Ok);

    // Unbound, the number is no longer listed (unless another process
    // bound it meanwhile, and then it has a backing file).
    let name = lp.name.clone();
    lp.detach();
    if listed(true, &name).is_some() {
        assert!(Path::new("/sys/block")
            .join(&name)
            .join("loop/backing_file")
            .exists());
    }
    for disk in list(&roots(), &policy(true)).unwrap() {
        if disk.bus.as_deref() == Some("loop") {
            assert!(disk.identity.size > 0 || disk.name != name);
        }
    }
}

#[test]
fn read_only_loop_is_refused() {
    if !can_run() {
        return;
    }
    let _lock = exclusive();
    let tmp = scratch();
    let img = sparse(tmp.path(), "ro.img", 16 * MIB);
    let lp = Loop::attach(&img, &["--read-only"]);
    assert_eq!(
        inspect(&lp.node, MIB, &roots(), &policy(true), Mounts::Refuse).unwrap_err(),
        Refusal::ReadOnly
    );
}

#[test]
fn things_that_are_not_block_devices() {
    if !can_run() {
        return;
    }
    let tmp = scratch();
    let file = tmp.path().join("image.img");
    fs::write(&file, b"data").unwrap();
    let cases: [(&Path, &str); 5] = [
        (Path::new("/dev/null"), "character device"),
        (Path::new("/dev"), "not a device node under"),
        (Path::new("/dev/pts"), "a directory"),
        (&file, "not a device node under"),
        (Path::new("/dev/no-such-disk"), "No such file"),
    ];
    for (path, why) in cases {
        match inspect(path, 0, &roots(), &policy(true), Mounts::Refuse) {
            Err(Refusal::NotBlockDevice(msg)) => assert!(msg.contains(why), "{path:?}: {msg}"),
            other => panic!("{path:?}: {other:?}"),
        }
    }
}

#[test]
fn block_node_outside_dev_is_refused() {
    if !can_run() {
        return;
    }
    let _lock = exclusive();
    let tmp = scratch();
    let img = sparse(tmp.path(), "x.img", 16 * MIB);
    let lp = Loop::attach(&img, &[]);
    let (major, minor) = split(fs::metadata(&lp.node).unwrap().rdev());
    let fake = tmp.path().join("sdcard");
    sh(
        "mknod",
        &[
            fake.to_str().unwrap(),
            "b",
            &major.to_string(),
            &minor.to_string(),
        ],
    );
    match inspect(&fake, 0, &roots(), &policy(true), Mounts::Refuse) {
        Err(Refusal::NotBlockDevice(msg)) => assert!(msg.contains("under /dev"), "{msg}"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn partition_is_refused_and_listed_under_its_disk() {
    if !can_run() {
        return;
    }
    let _lock = exclusive();
    let tmp = scratch();
    let img = sparse(tmp.path(), "parted.img", 32 * MIB);
    let mut sfdisk = Command::new("sfdisk")
        .args(["-q", img.to_str().unwrap()])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .expect("sfdisk (apt-get install fdisk)");
    sfdisk
        .stdin
        .take()
        .unwrap()
        .write_all(b"label: dos\nstart=2048, size=16384, type=83\n")
        .unwrap();
    assert!(sfdisk.wait().unwrap().success());

    let lp = Loop::attach(&img, &["--partscan"]);
    // No MBR parser in this kernel: partx adds the partition with BLKPG.
    sh("partx", &["-a", lp.node.to_str().unwrap()]);
    let part = PathBuf::from(format!("{}p1", lp.node.display()));
    assert!(wait_for("partition node", || part.exists()));

    assert_eq!(
        inspect(&part, 0, &roots(), &policy(true), Mounts::Refuse).unwrap_err(),
        Refusal::Partition {
            disk: lp.name.clone()
        }
    );
    let disk = listed(true, &lp.name).unwrap();
    assert_eq!(disk.partitions, [format!("{}p1", lp.name)]);
    assert_eq!(disk.verdict, Verdict::Ok);
}

#[test]
fn swap_on_a_loop_is_refused() {
    if !can_run() {
        return;
    }
    let _lock = exclusive();
    let tmp = scratch();
    let img = sparse(tmp.path(), "swap.img", 16 * MIB);
    let lp = Loop::attach(&img, &[]);
    let _swap = SwapOn::new(&lp.node);
    let name = lp.node.display().to_string();
    assert_eq!(
        inspect(&lp.node, MIB, &roots(), &policy(true), Mounts::Refuse).unwrap_err(),
        Refusal::Swap(name.clone())
    );
    assert_eq!(
        listed(true, &lp.name).unwrap().verdict,
        Verdict::Refused(Refusal::Swap(name))
    );
}

#[test]
fn too_small_for_the_image() {
    if !can_run() {
        return;
    }
    let _lock = exclusive();
    let tmp = scratch();
    let img = sparse(tmp.path(), "small.img", 8 * MIB);
    let lp = Loop::attach(&img, &[]);
    assert_eq!(
        inspect(&lp.node, 16 * MIB, &roots(), &policy(true), Mounts::Refuse).unwrap_err(),
        Refusal::TooSmall {
            need: 16 * MIB,
            have: 8 * MIB
        }
    );
    assert!(inspect(&lp.node, 8 * MIB, &roots(), &policy(true), Mounts::Refuse).is_ok());
}

#[test]
fn mounted_loop_is_shown_and_refused_for_writing() {
    if !can_run() {
        return;
    }
    let _lock = exclusive();
    let tmp = scratch();
    let img = sparse(tmp.path(), "fs.img", 32 * MIB);
    let lp = Loop::attach(&img, &[]);
    let dir = tmp.path().join("mnt with space");
    let _mount = MountAt::new(&lp.node, &dir);
    let dir = fs::canonicalize(&dir).unwrap();
    assert_eq!(
        inspect(&lp.node, MIB, &roots(), &policy(true), Mounts::Refuse).unwrap_err(),
        Refusal::Mounted(vec![dir.clone()])
    );
    let disk = listed(true, &lp.name).unwrap();
    assert_eq!(disk.mounted, [dir]);
    assert_eq!(disk.verdict, Verdict::Ok);
}

/// None when another process took the loop number between detach and rebind.
fn rebind_scenario(tmp: &Path) -> Option<()> {
    let a = sparse(tmp, "a.img", 8 * MIB);
    let b = sparse(tmp, "b.img", 8 * MIB);
    let mut lp = Loop::attach(&a, &[]);
    let disk = inspect(&lp.node, MIB, &roots(), &policy(true), Mounts::Refuse).unwrap();

    {
        let mut f = File::open(&lp.node).unwrap();
        f.seek(SeekFrom::Start(4096)).unwrap();
        recheck(f.as_fd(), &disk.identity, &roots()).unwrap();
        assert_eq!(f.stream_position().unwrap(), 4096, "offset restored");
    }

    // Same number, same size, different file: only diskseq tells.
    let node = lp.node.clone();
    lp.detach();
    let lp2 = Loop::attach_at(&node, &b)?;
    {
        let f = File::open(&lp2.node).unwrap();
        match recheck(f.as_fd(), &disk.identity, &roots()) {
            Err(Changed::DiskSeq { expected, found }) => {
                eprintln!("diskseq {expected:?} -> {found:?}");
                assert_ne!(expected, found);
            }
            other => panic!("{other:?}"),
        }
    }

    // The rebound device, freshly judged, passes; then it grows.
    let fresh = inspect(&lp2.node, MIB, &roots(), &policy(true), Mounts::Refuse).unwrap();
    let f = File::open(&lp2.node).unwrap();
    recheck(f.as_fd(), &fresh.identity, &roots()).unwrap();
    File::options()
        .write(true)
        .open(&b)
        .unwrap()
        .set_len(16 * MIB)
        .unwrap();
    sh("losetup", &["--set-capacity", lp2.node.to_str().unwrap()]);
    assert_eq!(
        recheck(f.as_fd(), &fresh.identity, &roots()),
        Err(Changed::Size {
            expected: 8 * MIB,
            found: 16 * MIB
        })
    );
    drop(f);

    // A different device entirely.
    let c = sparse(tmp, "c.img", 8 * MIB);
    let other = Loop::attach(&c, &[]);
    let f = File::open(&other.node).unwrap();
    assert!(matches!(
        recheck(f.as_fd(), &fresh.identity, &roots()),
        Err(Changed::DeviceNumber { .. })
    ));
    Some(())
}

#[test]
fn recheck_catches_a_rebound_loop() {
    if !can_run() {
        return;
    }
    let _lock = exclusive();
    for attempt in 1..=3 {
        let tmp = scratch();
        if rebind_scenario(tmp.path()).is_some() {
            return;
        }
        eprintln!("attempt {attempt}: loop number taken by another process, retrying");
    }
    panic!("could not rebind a loop number in 3 attempts");
}
