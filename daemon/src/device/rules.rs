//! Which block devices the root daemon may overwrite, and a check that the
//! device it then opened is still the one that was judged.
//!
//! Every decision is keyed by device number and read from the kernel's own
//! tables (sysfs, mountinfo, /proc/swaps). Names are never trusted: a
//! /dev/disk/by-id link or a /dev/sdX name can point somewhere else a moment
//! later, while a major:minor pair plus the disk sequence number cannot be
//! reused without the check noticing.
//!
//! Decisions that the rules leave open, made here:
//!
//! * "Removable class" is the sysfs `removable` flag OR a usb bus OR an mmc bus.
//!   Many USB card readers set the flag, but USB SSDs and sticks often do not,
//!   and they are exactly what people flash; going by the bus catches both.
//!   One exception on mmc: a device whose `device/type` is `MMC` is an eMMC
//!   chip (soldered storage, e.g. an SBC's internal disk), so it only counts
//!   when the removable flag says so. SD cards report `SD`.
//! * Loop devices, when the policy allows them, are removable class: they
//!   stand in for a card in tests and development, and all they can overwrite
//!   is their backing file. A loop whose backing file is a block device is
//!   judged, for the system-disk rule, by the device underneath it.
//! * `Mounted` is only returned when nothing else is wrong, so a caller knows
//!   unmounting is the only obstacle; with [`Mounts::Report`] a writer that
//!   unmounts by itself gets the disk with its mounts listed.
//! * When a protected path cannot be traced to a block device (ZFS, a network
//!   filesystem under a state dir, a deleted loop backing file), every disk is
//!   refused as `SystemDisk`: not knowing where `/` lives must not make every
//!   disk writable.
//! * An empty `protected_paths` is treated the same way: the daemon always
//!   has at least `/` to protect, so an empty list can only be a mistake.
//! * Stacked devices (dm, md, loop over a block device) are followed *down*
//!   too: an LVM volume that sits on the system disk is the system disk even
//!   if it holds no protected path, because writing it overwrites that disk.
//!
//! The flash path should also open the node with `O_EXCL`: the kernel then
//! fails the open with EBUSY while anything holds the device (seen on 6.18
//! for swap on the disk and for a mounted partition of it), which covers
//! what changes between these checks and the open.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsString;
use std::fmt;
use std::fs;
use std::io::{self, Seek, SeekFrom};
use std::os::fd::BorrowedFd;
use std::os::unix::ffi::OsStringExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use serde::Serialize;

const SECTOR: u64 = 512;
/// The kernel hands every loop device this major (LOOP_MAJOR); an unbound
/// loop has lost its `loop/` directory, so the major is the only sign left.
const LOOP_MAJOR: u32 = 7;
/// Stacks of dm/md/loop are shallow in practice; the bound only stops a
/// malformed (or fake) tree from recursing forever.
const MAX_DEPTH: u32 = 16;

/// Filesystems that live in memory or on the network: a protected path on one
/// of them is held by no local disk.
const DISKLESS_FS: &[&str] = &[
    "tmpfs",
    "ramfs",
    "devtmpfs",
    "proc",
    "sysfs",
    "devpts",
    "mqueue",
    "hugetlbfs",
    "cgroup",
    "cgroup2",
    "debugfs",
    "tracefs",
    "securityfs",
    "pstore",
    "bpf",
    "configfs",
    "efivarfs",
    "binfmt_misc",
    "autofs",
    "fusectl",
    "nsfs",
    "rpc_pipefs",
    "nfs",
    "nfs4",
    "cifs",
    "smb3",
    "9p",
    "virtiofs",
];

/// Where the kernel's tables are; injectable so tests can use fake trees.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Roots {
    pub sys: PathBuf,
    pub proc_: PathBuf,
    pub dev: PathBuf,
    pub udev_data: PathBuf,
}

impl Default for Roots {
    fn default() -> Self {
        Roots {
            sys: PathBuf::from("/sys"),
            proc_: PathBuf::from("/proc"),
            dev: PathBuf::from("/dev"),
            udev_data: PathBuf::from("/run/udev/data"),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Policy {
    pub allow_loop: bool,
    /// `/` and the daemon's state dir (device nodes are accepted too): the
    /// disks holding them are the system disks.
    pub protected_paths: Vec<PathBuf>,
    /// Disks bigger than this need the system-device grant.
    pub large_disk: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Identity {
    pub major: u32,
    pub minor: u32,
    pub diskseq: Option<u64>,
    pub size: u64,
    pub serial: Option<String>,
}

#[derive(Clone, Debug, Serialize)]
pub struct Disk {
    pub node: PathBuf,
    pub name: String,
    pub identity: Identity,
    pub model: Option<String>,
    pub vendor: Option<String>,
    /// usb, mmc, nvme, virtio, sata, scsi, loop, virtual, or None if unknown.
    pub bus: Option<String>,
    pub removable: bool,
    pub read_only: bool,
    /// Mount points of the disk or its partitions.
    pub mounted: Vec<PathBuf>,
    pub partitions: Vec<String>,
    pub verdict: Verdict,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub enum Verdict {
    Ok,
    /// Not removable, or very large: allowed only with the stronger polkit action.
    NeedsSystemGrant(String),
    Refused(Refusal),
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error, Serialize)]
pub enum Refusal {
    #[error("not a block device: {0}")]
    NotBlockDevice(String),
    #[error("this is a partition; choose the whole disk {disk}")]
    Partition { disk: String },
    #[error("system disk: {0}")]
    SystemDisk(String),
    #[error("in use by {}", .0.join(", "))]
    Holders(Vec<String>),
    #[error("used as swap: {0}")]
    Swap(String),
    #[error("the device is read-only")]
    ReadOnly,
    #[error("loop devices are not allowed by the daemon's policy")]
    LoopNotAllowed,
    #[error("too small: the image needs {need} bytes, the disk has {have}")]
    TooSmall { need: u64, have: u64 },
    #[error("mounted at {}", display_paths(.0))]
    Mounted(Vec<PathBuf>),
    #[error("the device is gone")]
    Gone,
}

/// Why an opened device is not (or cannot be shown to be) the judged one.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error, Serialize)]
pub enum Changed {
    #[error("the opened file is not a block device")]
    NotBlockDevice,
    #[error(
        "device number is {}:{}, expected {}:{}",
        .found.0,
        .found.1,
        .expected.0,
        .expected.1
    )]
    DeviceNumber {
        expected: (u32, u32),
        found: (u32, u32),
    },
    #[error("size is {found} bytes, expected {expected}")]
    Size { expected: u64, found: u64 },
    #[error("disk sequence number is {found:?}, expected {expected:?}")]
    DiskSeq {
        expected: Option<u64>,
        found: Option<u64>,
    },
    #[error("serial is {found:?}, expected {expected:?}")]
    Serial {
        expected: Option<String>,
        found: Option<String>,
    },
    #[error("cannot verify the opened device: {0}")]
    Unverifiable(String),
}

fn display_paths(paths: &[PathBuf]) -> String {
    paths
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// Every whole disk on the machine, each with its verdict (the listing for
/// `pib-client devices`). Unbound loop devices are left out; nothing else is.
/// TooSmall and Mounted are not judged here: there is no image yet, and the
/// flash path unmounts first.
pub fn list(roots: &Roots, policy: &Policy) -> io::Result<Vec<Disk>> {
    let ctx = Context::new(roots, policy).map_err(ContextError::into_io)?;
    let mut disks = Vec::new();
    for entry in fs::read_dir(roots.sys.join("block"))? {
        let entry = entry?;
        // A disk that vanishes while we look is simply no longer on the machine.
        let dir = match ctx.sys.within(&entry.path()) {
            Ok(dir) => dir,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        let node = roots.dev.join(node_name(&dir));
        let facts = match examine(&ctx, &dir, node) {
            Ok(facts) => facts,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        if facts.is_loop && facts.backing.is_none() {
            continue;
        }
        let verdict = judge(&facts, policy, Mode::Listing);
        disks.push(facts.into_disk(verdict));
    }
    disks.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(disks)
}

/// What [`inspect`] makes of a disk with mounted filesystems.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mounts {
    /// Refused with `Mounted` (only when nothing else is wrong).
    Refuse,
    /// Reported in the disk: the writer unmounts them itself (through udisks2, after it is
    /// authorized) before it opens the disk exclusively.
    Report,
}

/// A path a caller named, resolved once; see the module docs for the rules.
/// The daemon must open the returned `node` (not the caller's path again) and
/// then call [`recheck`] on the descriptor.
pub fn inspect(
    path: &Path,
    image_size: u64,
    roots: &Roots,
    policy: &Policy,
    mounts: Mounts,
) -> Result<Disk, Refusal> {
    let node = fs::canonicalize(path)
        .map_err(|e| Refusal::NotBlockDevice(format!("{}: {e}", path.display())))?;
    let dev_root = fs::canonicalize(&roots.dev)
        .map_err(|e| Refusal::NotBlockDevice(format!("{}: {e}", roots.dev.display())))?;
    if node == dev_root || !node.starts_with(&dev_root) {
        return Err(Refusal::NotBlockDevice(format!(
            "{} is not a device node under {}",
            node.display(),
            roots.dev.display()
        )));
    }
    // canonicalize left no symlink in `node`; not following one here means a
    // symlink planted there after canonicalize cannot redirect the stat.
    let meta = fs::symlink_metadata(&node)
        .map_err(|e| Refusal::NotBlockDevice(format!("{}: {e}", node.display())))?;
    let kind = meta.file_type();
    if !kind.is_block_device() {
        return Err(Refusal::NotBlockDevice(format!(
            "{} is {}",
            node.display(),
            describe(kind)
        )));
    }
    let dev = DevNum::from_raw(meta.rdev());

    let sys = Sys::open(roots).map_err(|_| Refusal::Gone)?;
    let dir = sys.dir_of(dev).map_err(|_| Refusal::Gone)?;
    if is_partition(&dir).map_err(|_| Refusal::Gone)? {
        let disk = dir
            .parent()
            .map(kernel_name)
            .unwrap_or_else(|| "?".to_string());
        return Err(Refusal::Partition { disk });
    }

    let ctx = Context::new(roots, policy).map_err(ContextError::into_refusal)?;
    let facts = examine(&ctx, &dir, node).map_err(|_| Refusal::Gone)?;
    let mode = Mode::Write {
        image_size,
        judge_mounts: mounts == Mounts::Refuse,
    };
    match judge(&facts, policy, mode) {
        Verdict::Refused(refusal) => Err(refusal),
        verdict => Ok(facts.into_disk(verdict)),
    }
}

/// After the daemon opened the device: proves the descriptor is the disk that
/// [`inspect`] judged. The file offset is left where it was.
pub fn recheck(fd: BorrowedFd<'_>, expected: &Identity, roots: &Roots) -> Result<(), Changed> {
    let unverifiable =
        |what: &str, e: &dyn fmt::Display| Changed::Unverifiable(format!("{what}: {e}"));
    // A dup shares the open file description, so metadata and seeks through it
    // describe the daemon's own descriptor without any unsafe fd juggling.
    let mut file = fs::File::from(
        fd.try_clone_to_owned()
            .map_err(|e| unverifiable("dup", &e))?,
    );
    let meta = file.metadata().map_err(|e| unverifiable("fstat", &e))?;
    if !meta.file_type().is_block_device() {
        return Err(Changed::NotBlockDevice);
    }
    let dev = DevNum::from_raw(meta.rdev());
    if (dev.major, dev.minor) != (expected.major, expected.minor) {
        return Err(Changed::DeviceNumber {
            expected: (expected.major, expected.minor),
            found: (dev.major, dev.minor),
        });
    }

    // The offset is shared with the daemon's descriptor: put it back, or the
    // image would be written starting at the end of the disk.
    let pos = file
        .stream_position()
        .map_err(|e| unverifiable("lseek", &e))?;
    let end = file.seek(SeekFrom::End(0));
    file.seek(SeekFrom::Start(pos))
        .map_err(|e| unverifiable("lseek back", &e))?;
    let size = end.map_err(|e| unverifiable("lseek SEEK_END", &e))?;
    if size != expected.size {
        return Err(Changed::Size {
            expected: expected.size,
            found: size,
        });
    }

    let sys = Sys::open(roots).map_err(|e| unverifiable("sysfs", &e))?;
    let dir = sys.dir_of(dev).map_err(|e| unverifiable("sysfs", &e))?;
    let diskseq = read_u64(&dir, "diskseq").map_err(|e| unverifiable("diskseq", &e))?;
    if diskseq != expected.diskseq {
        return Err(Changed::DiskSeq {
            expected: expected.diskseq,
            found: diskseq,
        });
    }
    let serial = serial_of(roots, &dir, dev).map_err(|e| unverifiable("serial", &e))?;
    if serial != expected.serial {
        return Err(Changed::Serial {
            expected: expected.serial.clone(),
            found: serial,
        });
    }
    Ok(())
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
struct DevNum {
    major: u32,
    minor: u32,
}

impl DevNum {
    /// glibc's gnu_dev_major/minor split of a dev_t, so no libc call is needed.
    fn from_raw(raw: u64) -> Self {
        DevNum {
            major: (((raw >> 32) & 0xffff_f000) | ((raw >> 8) & 0x0fff)) as u32,
            minor: (((raw >> 12) & 0xffff_ff00) | (raw & 0xff)) as u32,
        }
    }

    fn parse(s: &str) -> Option<Self> {
        let (major, minor) = s.trim().split_once(':')?;
        Some(DevNum {
            major: major.parse().ok()?,
            minor: minor.parse().ok()?,
        })
    }
}

impl fmt::Display for DevNum {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.major, self.minor)
    }
}

/// sysfs, with every path we follow kept inside it.
struct Sys {
    root: PathBuf,
}

impl Sys {
    fn open(roots: &Roots) -> io::Result<Self> {
        Ok(Sys {
            root: fs::canonicalize(&roots.sys)?,
        })
    }

    fn within(&self, path: &Path) -> io::Result<PathBuf> {
        let dir = fs::canonicalize(path)?;
        if dir.starts_with(&self.root) {
            Ok(dir)
        } else {
            Err(io::Error::other(format!(
                "{} leads outside {}",
                path.display(),
                self.root.display()
            )))
        }
    }

    /// The device's directory, built only from numbers, and cross-checked
    /// against its `dev` attribute.
    fn dir_of(&self, dev: DevNum) -> io::Result<PathBuf> {
        let dir = self.within(&self.root.join("dev/block").join(dev.to_string()))?;
        let found = read_dev(&dir)?;
        if found != dev {
            return Err(io::Error::other(format!(
                "{} says it is {found}, not {dev}",
                dir.display()
            )));
        }
        Ok(dir)
    }

    /// A partition's directory sits inside its disk's directory.
    fn whole_disk(&self, dir: &Path) -> io::Result<PathBuf> {
        if !is_partition(dir)? {
            return Ok(dir.to_path_buf());
        }
        match dir.parent() {
            Some(parent) if parent.starts_with(&self.root) => Ok(parent.to_path_buf()),
            _ => Err(io::Error::other(format!(
                "partition {} has no disk",
                dir.display()
            ))),
        }
    }
}

fn read_attr(dir: &Path, name: &str) -> io::Result<Option<String>> {
    match fs::read(dir.join(name)) {
        Ok(bytes) => Ok(Some(String::from_utf8_lossy(&bytes).trim().to_string())),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

fn read_nonempty(dir: &Path, name: &str) -> io::Result<Option<String>> {
    Ok(read_attr(dir, name)?.filter(|s| !s.is_empty()))
}

fn read_u64(dir: &Path, name: &str) -> io::Result<Option<u64>> {
    match read_attr(dir, name)? {
        None => Ok(None),
        Some(s) => s.parse().map(Some).map_err(|_| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{}/{name}: {s:?}", dir.display()),
            )
        }),
    }
}

fn read_flag(dir: &Path, name: &str) -> io::Result<bool> {
    Ok(read_attr(dir, name)?.as_deref() == Some("1"))
}

fn read_dev(dir: &Path) -> io::Result<DevNum> {
    let text = read_attr(dir, "dev")?.ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::NotFound,
            format!("{}/dev is missing", dir.display()),
        )
    })?;
    DevNum::parse(&text).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{}/dev: {text:?}", dir.display()),
        )
    })
}

fn is_partition(dir: &Path) -> io::Result<bool> {
    dir.join("partition").try_exists()
}

fn kernel_name(dir: &Path) -> String {
    dir.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// The kernel writes '/' in device names (cciss/c0d0) as '!' in sysfs.
fn node_name(dir: &Path) -> String {
    kernel_name(dir).replace('!', "/")
}

/// Entry names of a sysfs link directory such as `holders/` or `slaves/`.
fn link_names(dir: &Path) -> io::Result<Vec<String>> {
    let mut names = Vec::new();
    match fs::read_dir(dir) {
        Ok(entries) => {
            for entry in entries {
                names.push(entry?.file_name().to_string_lossy().into_owned());
            }
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    names.sort();
    Ok(names)
}

fn describe(kind: fs::FileType) -> &'static str {
    if kind.is_file() {
        "a regular file"
    } else if kind.is_dir() {
        "a directory"
    } else if kind.is_char_device() {
        "a character device"
    } else if kind.is_symlink() {
        "a symlink"
    } else if kind.is_fifo() {
        "a fifo"
    } else if kind.is_socket() {
        "a socket"
    } else {
        "not a block device"
    }
}

/// Mount sources and swap devices are named in the kernel's /dev; tests give
/// a different `roots.dev`, the real system maps /dev onto itself.
fn host_path(roots: &Roots, path: &Path) -> PathBuf {
    match path.strip_prefix("/dev") {
        Ok(rest) => roots.dev.join(rest),
        Err(_) => path.to_path_buf(),
    }
}

/// The kernel escapes space, tab, newline and backslash in these tables as
/// `\ooo`.
fn unescape(field: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(field.len());
    let mut i = 0;
    while i < field.len() {
        if field[i] == b'\\' {
            if let Some(digits) = field.get(i + 1..i + 4) {
                if digits.iter().all(|d| (b'0'..=b'7').contains(d)) {
                    let value = digits
                        .iter()
                        .fold(0u32, |acc, d| acc * 8 + u32::from(d - b'0'));
                    if let Ok(byte) = u8::try_from(value) {
                        out.push(byte);
                        i += 4;
                        continue;
                    }
                }
            }
        }
        out.push(field[i]);
        i += 1;
    }
    out
}

fn os_path(bytes: Vec<u8>) -> PathBuf {
    PathBuf::from(OsString::from_vec(bytes))
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct Mount {
    dev: DevNum,
    mount_point: PathBuf,
    fstype: String,
    source: PathBuf,
    super_opts: String,
    /// The block device named as the source, for filesystems (btrfs) whose
    /// mountinfo number is an anonymous device rather than the disk's.
    source_dev: Option<DevNum>,
}

/// A line we cannot read might be the mount that matters, so any malformed
/// line fails the whole table instead of being skipped.
fn parse_mountinfo(data: &[u8]) -> Result<Vec<Mount>, String> {
    let mut mounts = Vec::new();
    for (index, line) in data.split(|b| *b == b'\n').enumerate() {
        if line.is_empty() {
            continue;
        }
        let bad = || {
            format!(
                "mountinfo line {}: {}",
                index + 1,
                String::from_utf8_lossy(line)
            )
        };
        let fields: Vec<&[u8]> = line.split(|b| *b == b' ').collect();
        let sep = fields
            .iter()
            .skip(6)
            .position(|f| *f == b"-")
            .map(|p| p + 6)
            .ok_or_else(bad)?;
        if fields.len() < sep + 3 {
            return Err(bad());
        }
        let dev = DevNum::parse(&String::from_utf8_lossy(fields[2])).ok_or_else(bad)?;
        mounts.push(Mount {
            dev,
            mount_point: os_path(unescape(fields[4])),
            fstype: String::from_utf8_lossy(fields[sep + 1]).into_owned(),
            source: os_path(unescape(fields[sep + 2])),
            super_opts: fields
                .get(sep + 3)
                .map(|f| String::from_utf8_lossy(f).into_owned())
                .unwrap_or_default(),
            source_dev: None,
        });
    }
    Ok(mounts)
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct SwapLine {
    name: PathBuf,
    /// "partition" (any block device) or "file".
    kind: String,
}

fn parse_swaps(data: &[u8]) -> Result<Vec<SwapLine>, String> {
    let mut swaps = Vec::new();
    // The first line is the column header.
    for line in data.split(|b| *b == b'\n').skip(1) {
        let mut fields = line
            .split(|b| b.is_ascii_whitespace())
            .filter(|f| !f.is_empty());
        let Some(name) = fields.next() else { continue };
        let kind = fields
            .next()
            .ok_or_else(|| format!("/proc/swaps line: {}", String::from_utf8_lossy(line)))?;
        swaps.push(SwapLine {
            name: os_path(unescape(name)),
            kind: String::from_utf8_lossy(kind).into_owned(),
        });
    }
    Ok(swaps)
}

#[derive(Clone, Debug)]
struct SwapUse {
    name: String,
    devs: Vec<DevNum>,
}

#[derive(Debug)]
enum ContextError {
    Sys(io::Error),
    Mounts(String),
    Swaps(String),
}

impl ContextError {
    fn into_io(self) -> io::Error {
        match self {
            ContextError::Sys(e) => e,
            ContextError::Mounts(m) | ContextError::Swaps(m) => io::Error::other(m),
        }
    }

    /// Without the mount table we cannot rule out the system disk, and without
    /// the swap table we cannot rule out swap: refuse for that reason.
    fn into_refusal(self) -> Refusal {
        match self {
            ContextError::Sys(e) => Refusal::SystemDisk(format!("cannot read sysfs: {e}")),
            ContextError::Mounts(m) => {
                Refusal::SystemDisk(format!("cannot read the mount table: {m}"))
            }
            ContextError::Swaps(m) => Refusal::Swap(format!("cannot read the swap table: {m}")),
        }
    }
}

/// The machine-wide facts one verdict needs, read once per call.
struct Context<'a> {
    roots: &'a Roots,
    sys: Sys,
    mounts: Vec<Mount>,
    /// Err: some swap device could not be located, so no disk is known free of swap.
    swaps: Result<Vec<SwapUse>, String>,
    /// Every device that holds a protected path, down to the whole disks.
    /// Err: some protected path could not be traced, so every disk is suspect.
    system: Result<BTreeMap<DevNum, String>, String>,
}

impl<'a> Context<'a> {
    fn new(roots: &'a Roots, policy: &Policy) -> Result<Self, ContextError> {
        let sys = Sys::open(roots).map_err(ContextError::Sys)?;
        let mountinfo_path = roots.proc_.join("self/mountinfo");
        let mountinfo = fs::read(&mountinfo_path)
            .map_err(|e| ContextError::Mounts(format!("{}: {e}", mountinfo_path.display())))?;
        let mut mounts = parse_mountinfo(&mountinfo).map_err(ContextError::Mounts)?;
        for mount in &mut mounts {
            mount.source_dev = source_device(roots, &mount.source);
        }
        let swaps_path = roots.proc_.join("swaps");
        let swaps = fs::read(&swaps_path)
            .map_err(|e| ContextError::Swaps(format!("{}: {e}", swaps_path.display())))?;
        let swaps = parse_swaps(&swaps).map_err(ContextError::Swaps)?;

        let mut ctx = Context {
            roots,
            sys,
            mounts,
            swaps: Ok(Vec::new()),
            system: Ok(BTreeMap::new()),
        };
        ctx.swaps = ctx.locate_swaps(&swaps);
        ctx.system = ctx.system_devices(&policy.protected_paths);
        Ok(ctx)
    }

    fn locate_swaps(&self, lines: &[SwapLine]) -> Result<Vec<SwapUse>, String> {
        let mut uses = Vec::new();
        for line in lines {
            let name = line.name.display().to_string();
            let path = host_path(self.roots, &line.name);
            match fs::metadata(&path) {
                Ok(meta) if meta.file_type().is_block_device() => uses.push(SwapUse {
                    name,
                    devs: vec![DevNum::from_raw(meta.rdev())],
                }),
                // A swap file keeps the filesystem under it busy; that disk
                // is in use the same way a swap partition is.
                Ok(_) => {
                    if let Ok(devs) = self.devices_holding(&path, 0) {
                        uses.push(SwapUse { name, devs });
                    }
                }
                Err(e) if line.kind == "partition" => {
                    return Err(format!("cannot find swap device {name}: {e}"));
                }
                // An unreachable swap file (deleted, other namespace) sits on
                // a mounted filesystem, which the Mounted rule already guards.
                Err(_) => {}
            }
        }
        Ok(uses)
    }

    fn system_devices(&self, protected: &[PathBuf]) -> Result<BTreeMap<DevNum, String>, String> {
        // An empty list is a configuration mistake, not "nothing to protect".
        if protected.is_empty() {
            return Err("no protected paths are configured, so the system disk is unknown".into());
        }
        let mut found = BTreeMap::new();
        let mut expanded = BTreeSet::new();
        for path in protected {
            let reason = format!("holds {}", path.display());
            // A state directory not made yet will be made on the disk of its nearest existing
            // parent (on a fresh machine, before the first build): protect that disk.
            let existing = nearest_existing(path);
            for dev in self.devices_holding(&existing, 0)? {
                self.expand_down(dev, &reason, &mut found, &mut expanded, 0)?;
            }
        }
        Ok(found)
    }

    /// The block devices a path lives on (its own number for a device node).
    fn devices_holding(&self, path: &Path, depth: u32) -> Result<Vec<DevNum>, String> {
        if depth > MAX_DEPTH {
            return Err(format!("{}: storage stack too deep", path.display()));
        }
        let meta =
            fs::metadata(path).map_err(|e| format!("cannot stat {}: {e}", path.display()))?;
        if meta.file_type().is_block_device() {
            return Ok(vec![DevNum::from_raw(meta.rdev())]);
        }
        let dev = DevNum::from_raw(meta.dev());
        match self.sys.dir_of(dev) {
            Ok(_) => return Ok(vec![dev]),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(format!("{}: {e}", path.display())),
        }
        // Anonymous device numbers (btrfs subvolumes, overlay, tmpfs):
        // mountinfo names what is underneath.
        let mounts: Vec<&Mount> = self.mounts.iter().filter(|m| m.dev == dev).collect();
        if mounts.is_empty() {
            return Err(format!(
                "cannot tell which disk holds {}: no mount has device {dev}",
                path.display()
            ));
        }
        let mut devs = Vec::new();
        for mount in mounts {
            if let Some(source) = mount.source_dev {
                devs.push(source);
            } else if DISKLESS_FS.contains(&mount.fstype.as_str()) {
                continue;
            } else if mount.fstype == "overlay" {
                for layer in overlay_layers(&mount.super_opts) {
                    devs.extend(self.devices_holding(&layer, depth + 1)?);
                }
            } else {
                return Err(format!(
                    "cannot tell which disk holds {}: {} filesystem from {}",
                    path.display(),
                    mount.fstype,
                    mount.source.display()
                ));
            }
        }
        Ok(devs)
    }

    /// Marks `dev`, its whole disk, and everything that disk is built from.
    fn expand_down(
        &self,
        dev: DevNum,
        reason: &str,
        found: &mut BTreeMap<DevNum, String>,
        expanded: &mut BTreeSet<DevNum>,
        depth: u32,
    ) -> Result<(), String> {
        if depth > MAX_DEPTH {
            return Err(format!("{dev}: storage stack too deep"));
        }
        let fail = |e: io::Error| format!("cannot follow device {dev}: {e}");
        let dir = self.sys.dir_of(dev).map_err(fail)?;
        found.entry(dev).or_insert_with(|| reason.to_string());
        let disk_dir = self.sys.whole_disk(&dir).map_err(fail)?;
        let disk = read_dev(&disk_dir).map_err(fail)?;
        found.entry(disk).or_insert_with(|| reason.to_string());
        if !expanded.insert(disk) {
            return Ok(());
        }
        for lower in self.lower_devices(&disk_dir).map_err(fail)? {
            self.expand_down(lower, reason, found, expanded, depth + 1)?;
        }
        if let Some(backing) = read_nonempty(&disk_dir, "loop/backing_file").map_err(fail)? {
            // A loop holding a protected path (live systems) pins the disk
            // holding its backing file.
            let backing = host_path(self.roots, Path::new(&backing));
            for lower in self.devices_holding(&backing, depth + 1)? {
                self.expand_down(lower, reason, found, expanded, depth + 1)?;
            }
        }
        Ok(())
    }

    /// What a disk is built from: its `slaves/` (dm, md) and, for a loop over
    /// a block device, that device.
    fn lower_devices(&self, disk_dir: &Path) -> io::Result<Vec<DevNum>> {
        let mut lower = Vec::new();
        for name in link_names(&disk_dir.join("slaves"))? {
            let dir = self.sys.within(&disk_dir.join("slaves").join(name))?;
            lower.push(read_dev(&dir)?);
        }
        if let Some(backing) = read_nonempty(disk_dir, "loop/backing_file")? {
            let path = host_path(self.roots, Path::new(&backing));
            // A backing file we cannot stat is not a device node we can see.
            if let Ok(meta) = fs::metadata(path) {
                if meta.file_type().is_block_device() {
                    lower.push(DevNum::from_raw(meta.rdev()));
                }
            }
        }
        Ok(lower)
    }

    /// Why `disk` counts as a system disk, looking through the devices it is
    /// built from (an LV on the system disk overwrites the system disk).
    fn system_reason(&self, disk: DevNum, disk_dir: &Path, depth: u32) -> Option<String> {
        let found = match &self.system {
            Ok(found) => found,
            Err(why) => return Some(why.clone()),
        };
        if let Some(reason) = found.get(&disk) {
            return Some(reason.clone());
        }
        if depth > MAX_DEPTH {
            return Some(format!("{disk}: storage stack too deep"));
        }
        let lower = match self.lower_devices(disk_dir) {
            Ok(lower) => lower,
            Err(e) => return Some(format!("cannot follow {}: {e}", disk_dir.display())),
        };
        for dev in lower {
            let lower_disk = self
                .sys
                .dir_of(dev)
                .and_then(|dir| self.sys.whole_disk(&dir))
                .and_then(|dir| read_dev(&dir).map(|d| (d, dir)));
            match lower_disk {
                Ok((lower_dev, lower_dir)) => {
                    if let Some(reason) = found
                        .get(&dev)
                        .cloned()
                        .or_else(|| self.system_reason(lower_dev, &lower_dir, depth + 1))
                    {
                        return Some(format!(
                            "built on {} which {reason}",
                            kernel_name(&lower_dir)
                        ));
                    }
                }
                Err(e) => return Some(format!("cannot follow device {dev}: {e}")),
            }
        }
        None
    }
}

/// Directories an overlay is made of, from its super options.
fn overlay_layers(super_opts: &str) -> Vec<PathBuf> {
    let mut layers = Vec::new();
    for opt in super_opts.split(',') {
        let Some((key, value)) = opt.split_once('=') else {
            continue;
        };
        let value = unescape(value.as_bytes());
        match key {
            "upperdir" | "workdir" | "lowerdir+" | "datadir+" => layers.push(os_path(value)),
            "lowerdir" => {
                // Layers are ':'-separated; "::" marks data-only layers.
                for layer in value.split(|b| *b == b':').filter(|l| !l.is_empty()) {
                    layers.push(os_path(layer.to_vec()));
                }
            }
            _ => {}
        }
    }
    layers
}

fn source_device(roots: &Roots, source: &Path) -> Option<DevNum> {
    // Only /dev names: stat on an arbitrary source path could hang on a dead
    // network mount.
    if !source.starts_with("/dev") {
        return None;
    }
    let meta = fs::metadata(host_path(roots, source)).ok()?;
    meta.file_type()
        .is_block_device()
        .then(|| DevNum::from_raw(meta.rdev()))
}

/// Serial, preferring udev's (the only source for USB disks) over sysfs
/// (mmc and nvme put it on `device/`, virtio on the disk itself).
fn serial_of(roots: &Roots, dir: &Path, dev: DevNum) -> io::Result<Option<String>> {
    let udev = roots.udev_data.join(format!("b{dev}"));
    match fs::read(&udev) {
        Ok(data) => {
            let text = String::from_utf8_lossy(&data);
            for key in ["E:ID_SERIAL=", "E:ID_SERIAL_SHORT="] {
                let value = text
                    .lines()
                    .find_map(|line| line.strip_prefix(key))
                    .map(str::trim)
                    .filter(|v| !v.is_empty());
                if let Some(value) = value {
                    return Ok(Some(value.to_string()));
                }
            }
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    for attr in ["device/serial", "serial"] {
        if let Some(value) = read_nonempty(dir, attr)? {
            return Ok(Some(value));
        }
    }
    Ok(None)
}

/// Bus from the device's place in the sysfs hierarchy. Order matters: a USB
/// bridge can carry ata or scsi below it, and it is the USB that makes it a
/// plug-in disk.
fn bus_of(sys_root: &Path, dir: &Path) -> Option<String> {
    let rel = dir.strip_prefix(sys_root).ok()?;
    let comps: Vec<String> = rel
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    let any = |prefix: &str| comps.iter().any(|c| c.starts_with(prefix));
    let bus = if any("usb") {
        "usb"
    } else if any("mmc") {
        "mmc"
    } else if any("nvme") {
        "nvme"
    } else if any("virtio") {
        "virtio"
    } else if any("ata") {
        "sata"
    } else if any("target") {
        "scsi"
    } else if comps.iter().any(|c| c == "virtual") {
        "virtual"
    } else {
        return None;
    };
    Some(bus.to_string())
}

struct Facts {
    disk: Disk,
    is_loop: bool,
    backing: Option<String>,
    emmc: bool,
    holders: Vec<String>,
    swap: Option<String>,
    system: Option<String>,
}

impl Facts {
    fn into_disk(self, verdict: Verdict) -> Disk {
        Disk {
            verdict,
            ..self.disk
        }
    }
}

fn examine(ctx: &Context<'_>, dir: &Path, node: PathBuf) -> io::Result<Facts> {
    let dev = read_dev(dir)?;
    let sectors = read_u64(dir, "size")?
        .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "size is missing"))?;
    let size = sectors
        .checked_mul(SECTOR)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "size overflows"))?;
    let backing = read_nonempty(dir, "loop/backing_file")?;
    let is_loop = dev.major == LOOP_MAJOR || dir.join("loop").try_exists()?;
    let bus = if is_loop {
        Some("loop".to_string())
    } else {
        bus_of(&ctx.sys.root, dir)
    };
    let emmc =
        bus.as_deref() == Some("mmc") && read_attr(dir, "device/type")?.as_deref() == Some("MMC");

    let mut parts = Vec::new();
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        // Partitions are real subdirectories; `device`, `bdi`, `subsystem`
        // are symlinks and the other directories have no `partition` file.
        if !entry.file_type()?.is_dir() {
            continue;
        }
        let part_dir = entry.path();
        if let Some(number) = read_u64(&part_dir, "partition")? {
            parts.push((
                number,
                kernel_name(&part_dir),
                read_dev(&part_dir)?,
                part_dir,
            ));
        }
    }
    parts.sort();

    let mut devs = BTreeSet::from([dev]);
    let mut holders = link_names(&dir.join("holders"))?;
    for (_, _, part_dev, part_dir) in &parts {
        devs.insert(*part_dev);
        holders.extend(link_names(&part_dir.join("holders"))?);
    }
    holders.sort();
    holders.dedup();

    let mut mounted: Vec<PathBuf> = Vec::new();
    for mount in &ctx.mounts {
        let here = devs.contains(&mount.dev) || mount.source_dev.is_some_and(|d| devs.contains(&d));
        if here && !mounted.contains(&mount.mount_point) {
            mounted.push(mount.mount_point.clone());
        }
    }

    let swap = match &ctx.swaps {
        Ok(uses) => uses
            .iter()
            .find(|u| u.devs.iter().any(|d| devs.contains(d)))
            .map(|u| u.name.clone()),
        Err(why) => Some(why.clone()),
    };

    let name = kernel_name(dir);
    let system = ctx.system_reason(dev, dir, 0);

    let disk = Disk {
        node,
        identity: Identity {
            major: dev.major,
            minor: dev.minor,
            diskseq: read_u64(dir, "diskseq")?,
            size,
            serial: serial_of(ctx.roots, dir, dev)?,
        },
        model: read_nonempty(dir, "device/model")?,
        vendor: read_nonempty(dir, "device/vendor")?,
        bus,
        removable: read_flag(dir, "removable")?,
        read_only: read_flag(dir, "ro")?,
        mounted,
        partitions: parts.into_iter().map(|(_, name, _, _)| name).collect(),
        name,
        verdict: Verdict::Ok,
    };
    Ok(Facts {
        disk,
        is_loop,
        backing,
        emmc,
        holders,
        swap,
        system,
    })
}

#[derive(Clone, Copy, Debug)]
enum Mode {
    Listing,
    Write { image_size: u64, judge_mounts: bool },
}

/// The order puts what can never change first, and `Mounted` last (see the
/// module docs).
fn judge(facts: &Facts, policy: &Policy, mode: Mode) -> Verdict {
    let disk = &facts.disk;
    let refuse = Verdict::Refused;
    if let Some(why) = &facts.system {
        return refuse(Refusal::SystemDisk(why.clone()));
    }
    if !facts.holders.is_empty() {
        return refuse(Refusal::Holders(facts.holders.clone()));
    }
    if let Some(swap) = &facts.swap {
        return refuse(Refusal::Swap(swap.clone()));
    }
    if disk.read_only {
        return refuse(Refusal::ReadOnly);
    }
    if facts.is_loop && !policy.allow_loop {
        return refuse(Refusal::LoopNotAllowed);
    }
    if facts.is_loop && facts.backing.is_none() {
        return refuse(Refusal::Gone);
    }
    if let Mode::Write {
        image_size,
        judge_mounts,
    } = mode
    {
        if disk.identity.size < image_size {
            return refuse(Refusal::TooSmall {
                need: image_size,
                have: disk.identity.size,
            });
        }
        if judge_mounts && !disk.mounted.is_empty() {
            return refuse(Refusal::Mounted(disk.mounted.clone()));
        }
    }

    let bus = disk.bus.as_deref();
    let removable_class = disk.removable
        || bus == Some("usb")
        || (bus == Some("mmc") && !facts.emmc)
        || (facts.is_loop && policy.allow_loop);
    let mut reasons = Vec::new();
    if !removable_class {
        reasons.push(format!(
            "not a removable disk (bus {})",
            bus.unwrap_or("unknown")
        ));
    }
    if disk.identity.size > policy.large_disk {
        reasons.push(format!(
            "{} bytes is more than {} bytes",
            disk.identity.size, policy.large_disk
        ));
    }
    if reasons.is_empty() {
        Verdict::Ok
    } else {
        Verdict::NeedsSystemGrant(reasons.join("; "))
    }
}

/// `path`, or its closest ancestor that exists.
fn nearest_existing(path: &Path) -> PathBuf {
    let mut p = path;
    loop {
        match fs::symlink_metadata(p) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => match p.parent() {
                Some(up) if !up.as_os_str().is_empty() => p = up,
                _ => return path.to_path_buf(),
            },
            _ => return p.to_path_buf(),
        }
    }
}

#[cfg(test)]
mod tests;

#[cfg(test)]
#[path = "rules/real_tests.rs"]
mod real_tests;
