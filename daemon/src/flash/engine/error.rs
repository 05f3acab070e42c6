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
/// gives EIO too); the vanished sysfs node does, so that decides DeviceLost.
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
    match Errno::from_io_error(&e) {
        Some(Errno::BUSY) => FlashError::Busy(what.to_owned()),
        Some(Errno::NOSPC) => FlashError::NoSpace,
        Some(Errno::NODEV) | Some(Errno::NXIO) | Some(Errno::IO)
            if !sys_dev_block
                .join(format!("{}:{}", rdev.0, rdev.1))
                .exists() =>
        {
            FlashError::DeviceLost
        }
        _ => FlashError::Io(format!("{doing} {what}"), e),
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
        let sys = dir.path();
        let m = |e, rdev| target_error_in(err(e), "writing", "card", rdev, sys);
        assert!(matches!(m(Errno::BUSY, (7, 3)), FlashError::Busy(w) if w == "card"));
        assert!(matches!(m(Errno::NOSPC, (7, 3)), FlashError::NoSpace));
        // Node still there: a plain I/O error, worth showing as such.
        assert!(matches!(m(Errno::IO, (7, 3)), FlashError::Io(..)));
        for e in [Errno::IO, Errno::NODEV, Errno::NXIO] {
            assert!(matches!(m(e, (7, 4)), FlashError::DeviceLost));
        }
        let msg = m(Errno::INVAL, (7, 3)).to_string();
        assert!(msg.starts_with("writing card: "), "{msg}");
    }
}
