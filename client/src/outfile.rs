//! Output files that appear whole or not at all. The image is written by the daemon into a
//! descriptor the client opened: an unnamed file (O_TMPFILE) in the target's directory, which
//! is given its name only after the job succeeded. A failed or cancelled job, or a client that
//! dies, leaves nothing behind. Where the filesystem has no O_TMPFILE, a hidden named file is
//! used and removed on failure.

use std::fs::File;
use std::io::{self, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::path::{Path, PathBuf};

use rustix::fs::{AtFlags, Mode, OFlags, CWD};

/// A file being written, not yet under its final name.
pub struct PendingFile {
    file: File,
    target: PathBuf,
    /// The hidden name of the fallback; None for an unnamed file.
    named: Option<PathBuf>,
    replace: bool,
}

fn dir_of(target: &Path) -> PathBuf {
    match target.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
        _ => PathBuf::from("."),
    }
}

fn hidden_name(target: &Path, tag: &str) -> PathBuf {
    let name = target
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    dir_of(target).join(format!(".{name}.{tag}-{}", std::process::id()))
}

impl PendingFile {
    /// Starts a file that will become `target`; an existing `target` is an error unless
    /// `replace`.
    pub fn create(target: &Path, replace: bool) -> io::Result<PendingFile> {
        if !replace && target.symlink_metadata().is_ok() {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!("{} exists (use --force to replace it)", target.display()),
            ));
        }
        let dir = dir_of(target);
        let mode = Mode::from_raw_mode(0o644);
        let unnamed = rustix::fs::openat(
            CWD,
            &dir,
            OFlags::TMPFILE | OFlags::RDWR | OFlags::CLOEXEC,
            mode,
        );
        let (fd, named) = match unnamed {
            Ok(fd) => (fd, None),
            // Filesystems without unnamed files say so in several ways.
            Err(e)
                if [
                    rustix::io::Errno::OPNOTSUPP,
                    rustix::io::Errno::ISDIR,
                    rustix::io::Errno::INVAL,
                    rustix::io::Errno::NOENT,
                ]
                .contains(&e)
                    && dir.is_dir() =>
            {
                let path = hidden_name(target, "partial");
                let fd = rustix::fs::openat(
                    CWD,
                    &path,
                    OFlags::CREATE | OFlags::EXCL | OFlags::RDWR | OFlags::CLOEXEC,
                    mode,
                )?;
                (fd, Some(path))
            }
            Err(e) => return Err(e.into()),
        };
        Ok(PendingFile {
            file: File::from(fd),
            target: target.to_owned(),
            named,
            replace,
        })
    }

    pub fn fd(&self) -> BorrowedFd<'_> {
        self.file.as_fd()
    }

    pub fn file(&mut self) -> &mut File {
        &mut self.file
    }

    /// Gives the file its name.
    pub fn commit(mut self) -> io::Result<PathBuf> {
        self.file.flush()?;
        let target = self.target.clone();
        match self.named.take() {
            Some(hidden) => {
                let placed = if self.replace {
                    std::fs::rename(&hidden, &target)
                } else {
                    std::fs::hard_link(&hidden, &target)
                        .and_then(|()| std::fs::remove_file(&hidden))
                };
                if placed.is_err() {
                    let _ = std::fs::remove_file(&hidden);
                }
                placed?;
            }
            None => {
                let proc_path = format!("/proc/self/fd/{}", self.file.as_raw_fd());
                if self.replace {
                    // Link under a hidden name, then rename over the old file atomically.
                    let hidden = hidden_name(&target, "new");
                    rustix::fs::linkat(
                        CWD,
                        proc_path.as_str(),
                        CWD,
                        &hidden,
                        AtFlags::SYMLINK_FOLLOW,
                    )?;
                    if let Err(e) = std::fs::rename(&hidden, &target) {
                        let _ = std::fs::remove_file(&hidden);
                        return Err(e);
                    }
                } else {
                    rustix::fs::linkat(
                        CWD,
                        proc_path.as_str(),
                        CWD,
                        &target,
                        AtFlags::SYMLINK_FOLLOW,
                    )?;
                }
            }
        }
        Ok(target)
    }
}

impl Drop for PendingFile {
    fn drop(&mut self) {
        if let Some(hidden) = self.named.take() {
            let _ = std::fs::remove_file(hidden);
        }
    }
}

/// Writes a small file whole (the .bmap, .sha256 and manifest beside an image).
pub fn write_whole(target: &Path, content: &[u8], replace: bool) -> io::Result<PathBuf> {
    let mut pending = PendingFile::create(target, replace)?;
    pending.file().write_all(content)?;
    pending.commit()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn appears_only_when_committed() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("out.img");
        let mut p = PendingFile::create(&target, false).unwrap();
        p.file().write_all(b"image").unwrap();
        assert!(!target.exists());
        p.commit().unwrap();
        assert_eq!(std::fs::read(&target).unwrap(), b"image");
        // Dropped without commit: nothing appears, nothing is left.
        let other = dir.path().join("gone.img");
        let mut p = PendingFile::create(&other, false).unwrap();
        p.file().write_all(b"half").unwrap();
        drop(p);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn existing_files_need_replace() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("out.img");
        std::fs::write(&target, b"old").unwrap();
        let e = PendingFile::create(&target, false).err().unwrap();
        assert_eq!(e.kind(), io::ErrorKind::AlreadyExists);
        write_whole(&target, b"new", true).unwrap();
        assert_eq!(std::fs::read(&target).unwrap(), b"new");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }
}
