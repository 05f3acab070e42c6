//! An SD card (or any block device) opened for exclusive writing.

use std::fs::File;
use std::io;
use std::path::Path;
use std::time::{Duration, Instant};

use rustix::fs::{FileType, FlockOperation, Mode, OFlags, SeekFrom};
use rustix::io::Errno;

use crate::flash::engine::error::FlashError;

/// How long a transient lock (udev probing) may delay `Target::open`.
const LOCK_PATIENCE: Duration = Duration::from_millis(1500);

/// An opened block device, locked against udev probing and other writers.
#[derive(Debug)]
pub struct Target {
    pub(crate) file: File,
    pub(crate) what: String,
    pub(crate) size: u64,
    pub(crate) rdev: (u32, u32),
    /// Logical block size: the O_DIRECT granularity of lengths and offsets.
    pub(crate) lbs: u64,
}

impl Target {
    /// Opens O_RDWR|O_EXCL|O_DIRECT|O_CLOEXEC, takes flock(LOCK_EX|LOCK_NB)
    /// (udev/systemd convention for whole-disk locks), reads its size with
    /// lseek(SEEK_END); `what` names it in errors.
    pub fn open(path: &Path, what: &str) -> Result<Target, FlashError> {
        let io_err = |doing: &str, e: Errno| FlashError::Io(format!("{doing} {what}"), e.into());
        // On a block device O_EXCL without O_CREAT fails with EBUSY while a
        // filesystem on it is mounted or another O_EXCL opener exists.
        let fd = rustix::fs::open(
            path,
            OFlags::RDWR | OFlags::EXCL | OFlags::DIRECT | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| match e {
            Errno::BUSY => FlashError::Busy(what.to_owned()),
            e => io_err("opening", e),
        })?;
        let st = rustix::fs::fstat(&fd).map_err(|e| io_err("inspecting", e))?;
        if FileType::from_raw_mode(st.st_mode) != FileType::BlockDevice {
            return Err(FlashError::Io(
                format!("opening {what}"),
                io::Error::new(io::ErrorKind::InvalidInput, "not a block device"),
            ));
        }
        // udev skips probing a disk whose whole-disk node is flock'ed, and
        // tools like systemd-repart take the same lock, so this is how we
        // learn someone else is working on the card. udev itself holds a
        // shared lock for the moment it probes a device, which happens right
        // after a card is inserted or a loop device attached, so a refusal
        // is retried briefly before it counts as Busy.
        let give_up = Instant::now() + LOCK_PATIENCE;
        loop {
            match rustix::fs::flock(&fd, FlockOperation::NonBlockingLockExclusive) {
                Ok(()) => break,
                Err(Errno::WOULDBLOCK) if Instant::now() < give_up => {
                    std::thread::sleep(Duration::from_millis(20))
                }
                Err(Errno::WOULDBLOCK) => return Err(FlashError::Busy(what.to_owned())),
                Err(e) => return Err(io_err("locking", e)),
            }
        }
        let size = rustix::fs::seek(&fd, SeekFrom::End(0)).map_err(|e| io_err("sizing", e))?;
        rustix::fs::seek(&fd, SeekFrom::Start(0)).map_err(|e| io_err("sizing", e))?;
        let rdev = (rustix::fs::major(st.st_rdev), rustix::fs::minor(st.st_rdev));
        let lbs = logical_block_size(rdev).unwrap_or(4096);
        Ok(Target {
            file: File::from(fd),
            what: what.to_owned(),
            size,
            rdev,
            lbs,
        })
    }

    pub fn size(&self) -> u64 {
        self.size
    }

    pub fn rdev(&self) -> (u32, u32) {
        self.rdev
    }

    pub fn what(&self) -> &str {
        &self.what
    }
}

/// Reads the logical block size from sysfs (a partition has no queue/ of
/// its own, its disk's is one level up); None when it cannot be learnt, and
/// the caller then assumes 4096, which every smaller size divides.
fn logical_block_size(rdev: (u32, u32)) -> Option<u64> {
    let base = format!("/sys/dev/block/{}:{}", rdev.0, rdev.1);
    let own = format!("{base}/queue/logical_block_size");
    let parent = format!("{base}/../queue/logical_block_size");
    let text = std::fs::read_to_string(own)
        .or_else(|_| std::fs::read_to_string(parent))
        .ok()?;
    let lbs: u64 = text.trim().parse().ok()?;
    (lbs.is_power_of_two() && (512..=4096).contains(&lbs)).then_some(lbs)
}
