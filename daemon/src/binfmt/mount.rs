//! Whether binfmt_misc is mounted, and mounting it.

use std::io;
use std::path::Path;

use rustix::io::Errno;
use rustix::mount::{mount, MountFlags};

use super::error::BinfmtError;

/// `f_type` of a mounted binfmt_misc file system ("BINM").
pub const BINFMT_FSMAGIC: u32 = 0x4249_4e4d;

/// Whether the binfmt_misc file system is mounted on `dir`.
///
/// A missing directory means the kernel module is not loaded: not mounted, not an error. On
/// systemd hosts the directory is an automount point; statfs walks into it, which triggers the
/// automount, so the answer is the real file system.
pub fn is_mounted(dir: &Path) -> Result<bool, BinfmtError> {
    match rustix::fs::statfs(dir) {
        // f_type is signed on some ABIs and unsigned on others; i128 holds either exactly.
        Ok(st) => Ok(i128::from(st.f_type) == i128::from(BINFMT_FSMAGIC)),
        Err(Errno::NOENT) => Ok(false),
        Err(e) => Err(BinfmtError::Io {
            path: dir.to_owned(),
            source: io::Error::from(e),
        }),
    }
}

/// Mounts binfmt_misc on `dir` unless it is already there. Returns whether it mounted.
pub fn ensure_mounted(dir: &Path) -> Result<bool, BinfmtError> {
    if is_mounted(dir)? {
        return Ok(false);
    }
    // The same options systemd uses: nothing in this file system is to be executed, is a
    // device, or carries set-id bits.
    let flags = MountFlags::NOSUID | MountFlags::NODEV | MountFlags::NOEXEC;
    mount("binfmt_misc", dir, "binfmt_misc", flags, None).map_err(|e| BinfmtError::Mount {
        dir: dir.to_owned(),
        source: io::Error::from(e),
    })?;
    tracing::info!(dir = %dir.display(), "mounted binfmt_misc");
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ordinary_and_missing_directories_are_not_binfmt_misc() {
        let dir = tempfile::tempdir().unwrap();
        assert!(!is_mounted(dir.path()).unwrap());
        assert!(!is_mounted(&dir.path().join("missing")).unwrap());
        assert_eq!(&BINFMT_FSMAGIC.to_be_bytes(), b"BINM");
    }

    #[test]
    fn mount_errors_name_the_directory() {
        let e = BinfmtError::Mount {
            dir: "/proc/sys/fs/binfmt_misc".into(),
            source: io::Error::from_raw_os_error(libc::ENOENT),
        };
        let msg = e.to_string();
        assert!(msg.contains("/proc/sys/fs/binfmt_misc"), "{msg}");
        assert!(msg.contains("modprobe binfmt_misc"), "{msg}");
    }
}
