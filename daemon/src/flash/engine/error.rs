use std::io;
use std::path::Path;

use rustix::io::Errno;

/// Why flashing one target failed.
#[derive(Debug, thiserror::Error)]
pub enum FlashError {
    /// O_EXCL or the whole-disk flock was refused: something has the device
    /// open exclusively or mounted, or another writer holds its lock.
    #[error("{0} is in use (mounted, or opened by another program)")]
    Busy(String),
    #[error("the image needs {need} bytes but the card has only {have}")]
    TooSmall { need: u64, have: u64 },
    /// `offset` is the first bad byte of the card (see `flash` for the stream
    /// input caveat).
    #[error("verification failed: the card differs from the image at byte {offset}")]
    VerifyFailed { offset: u64 },
    #[error("bad source image: {0}")]
    BadSource(String),
    /// No write, flush or read finished within the allowed time; the thread
    /// doing it was left behind.
    #[error("the card stopped responding")]
    Stalled,
    #[error("the card was removed")]
    DeviceLost,
    #[error("no space left on the card")]
    NoSpace,
    #[error("cancelled")]
    Cancelled,
    #[error("{0}: {1}")]
    Io(String, #[source] io::Error),
}

/// Why a bmap file was rejected.
#[derive(Debug, thiserror::Error)]
pub enum BmapError {
    #[error("bmap is not valid XML: {0}")]
    Xml(String),
    #[error("bmap lacks <{0}>")]
    Missing(&'static str),
    #[error("bmap has a bad <{field}>: {value:?}")]
    BadValue { field: &'static str, value: String },
    #[error("bmap format version {0} is not supported")]
    UnsupportedVersion(String),
    #[error("bmap checksum type {0:?} is not supported")]
    UnsupportedChecksum(String),
    #[error(
        "bmap file checksum mismatch: the file says {expected}, its content hashes to {actual}"
    )]
    ChecksumMismatch { expected: String, actual: String },
    #[error("inconsistent bmap: {0}")]
    Inconsistent(String),
}

/// Turns an I/O error on a target into the error the daemon can act on.
///
/// EIO/ENODEV/ENXIO alone do not prove the card was pulled (a dying card
/// gives EIO too). What does: the device's sysfs node vanished (a USB stick
/// or reader unplugged), or the node stayed but its capacity fell to zero
/// or the kernel says there is no medium (a card pulled out of a reader,
/// which keeps its sdX).
pub(crate) fn target_error(e: io::Error, doing: &str, what: &str, rdev: (u32, u32)) -> FlashError {
    target_error_in(e, doing, what, rdev, Path::new("/sys/dev/block"))
}

pub(crate) fn target_error_in(
    e: io::Error,
    doing: &str,
    what: &str,
    rdev: (u32, u32),
    sys_dev_block: &Path,
) -> FlashError {
    let gone = || settles_gone(&sys_dev_block.join(format!("{}:{}", rdev.0, rdev.1)));
    match Errno::from_io_error(&e) {
        Some(Errno::BUSY) => FlashError::Busy(what.to_owned()),
        Some(Errno::NOMEDIUM) => FlashError::DeviceLost,
        // Writing past the end of a block device is ENOSPC, and a pulled card's end is 0.
        Some(Errno::NOSPC | Errno::NODEV | Errno::NXIO | Errno::IO) if gone() => {
            FlashError::DeviceLost
        }
        Some(Errno::NOSPC) => FlashError::NoSpace,
        _ => FlashError::Io(format!("{doing} {what}"), e),
    }
}

/// How long after an I/O error the kernel may take to say the medium went: a
/// pulled card fails the writes in flight first, and the reader reports the
/// empty slot a moment later.
const SETTLE: std::time::Duration = std::time::Duration::from_millis(1000);

/// Whether the medium is gone, now or within [`SETTLE`]. Only called on the
/// error path.
fn settles_gone(node: &Path) -> bool {
    let deadline = std::time::Instant::now() + SETTLE;
    loop {
        if medium_gone(node) {
            return true;
        }
        if std::time::Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// The device's node is gone, or it has no capacity left (sectors, as sysfs
/// counts them).
fn medium_gone(node: &Path) -> bool {
    match std::fs::read_to_string(node.join("size")) {
        Ok(text) => text.trim() == "0",
        Err(_) => !node.exists(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(errno: Errno) -> io::Error {
        io::Error::from_raw_os_error(errno.raw_os_error())
    }

    #[test]
    fn maps_errnos() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("7:3")).unwrap();
        std::fs::write(dir.path().join("7:3/size"), "262144\n").unwrap();
        // A reader whose card was pulled: the node stays, its capacity is zero.
        std::fs::create_dir(dir.path().join("7:5")).unwrap();
        std::fs::write(dir.path().join("7:5/size"), "0\n").unwrap();
        let sys = dir.path();
        let m = |e, rdev| target_error_in(err(e), "writing", "card", rdev, sys);
        assert!(matches!(m(Errno::BUSY, (7, 3)), FlashError::Busy(w) if w == "card"));
        assert!(matches!(m(Errno::NOSPC, (7, 3)), FlashError::NoSpace));
        // Node still there: a plain I/O error, worth showing as such.
        assert!(matches!(m(Errno::IO, (7, 3)), FlashError::Io(..)));
        for e in [Errno::IO, Errno::NODEV, Errno::NXIO] {
            assert!(matches!(m(e, (7, 4)), FlashError::DeviceLost));
            assert!(matches!(m(e, (7, 5)), FlashError::DeviceLost));
        }
        assert!(matches!(m(Errno::NOMEDIUM, (7, 3)), FlashError::DeviceLost));
        assert!(matches!(m(Errno::NOSPC, (7, 5)), FlashError::DeviceLost));
        let msg = m(Errno::INVAL, (7, 3)).to_string();
        assert!(msg.starts_with("writing card: "), "{msg}");
    }
}
