//! Small file-system helpers for the cache directory.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::io;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use super::error::BaseError;

/// A short random token for temporary names. `RandomState` is seeded from the OS's randomness,
/// which is all that is needed here: names only have to be unique and unguessable enough not
/// to collide, and files are created with `create_new` anyway.
pub(crate) fn random_token() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut h = RandomState::new().build_hasher();
    h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    format!("{:016x}", h.finish())
}

/// A temporary name that also carries our pid, so that leftovers of a daemon that was killed
/// can be told apart from work in progress in this process.
pub(crate) fn temp_suffix() -> String {
    format!("{}-{}", std::process::id(), random_token())
}

/// Whether a temporary name (from [`temp_suffix`]) was made by another, now dead, process.
pub(crate) fn is_stale_suffix(suffix: &str) -> bool {
    let pid = suffix.split('-').next().unwrap_or("");
    pid != std::process::id().to_string()
}

/// Creates the cache directory (root only: it holds tarballs and bootstrap chroots whose
/// contents must not be reachable by other users).
pub(crate) fn ensure_private_dir(dir: &Path) -> Result<(), BaseError> {
    match std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
    {
        Ok(()) => {}
        Err(source) => return Err(BaseError::cache(dir, source)),
    }
    let meta = std::fs::symlink_metadata(dir).map_err(|e| BaseError::cache(dir, e))?;
    if !meta.is_dir() {
        return Err(BaseError::cache(
            dir,
            io::Error::other("exists but is not a directory"),
        ));
    }
    if meta.permissions().mode() & 0o077 != 0 {
        // An existing directory with looser rights (made by hand, or by an older version):
        // tighten it rather than leave chroots readable by everyone.
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
            .map_err(|e| BaseError::cache(dir, e))?;
    }
    Ok(())
}

/// Removes a tree without ever crossing into another file system: a bootstrap chroot may still
/// have /proc, /sys or /dev mounted if its tool was killed, and a plain recursive delete would
/// then walk into the host's own device nodes. Mount points (and what is below them) are left
/// alone and reported.
pub(crate) fn remove_tree_same_fs(root: &Path) -> io::Result<Vec<PathBuf>> {
    let meta = match std::fs::symlink_metadata(root) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut skipped = Vec::new();
    if meta.is_dir() {
        remove_dir_contents(root, meta.dev(), &mut skipped)?;
        if skipped.is_empty() {
            std::fs::remove_dir(root)?;
        }
    } else {
        std::fs::remove_file(root)?;
    }
    Ok(skipped)
}

fn remove_dir_contents(dir: &Path, dev: u64, skipped: &mut Vec<PathBuf>) -> io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        // symlink_metadata: a link is removed as a link, never followed.
        let meta = std::fs::symlink_metadata(&path)?;
        if meta.is_dir() {
            if meta.dev() != dev {
                skipped.push(path);
                continue;
            }
            let before = skipped.len();
            remove_dir_contents(&path, dev, skipped)?;
            if skipped.len() == before {
                std::fs::remove_dir(&path)?;
            }
        } else {
            std::fs::remove_file(&path)?;
        }
    }
    Ok(())
}

/// Deletes a file when dropped unless disarmed: a partial download must not survive an error,
/// a cancellation or the job's future being dropped.
pub(crate) struct RemoveOnDrop {
    path: Option<PathBuf>,
}

impl RemoveOnDrop {
    pub(crate) fn new(path: PathBuf) -> Self {
        RemoveOnDrop { path: Some(path) }
    }

    pub(crate) fn path(&self) -> &Path {
        self.path.as_deref().unwrap_or(Path::new(""))
    }

    pub(crate) fn disarm(mut self) {
        self.path = None;
    }
}

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        if let Some(p) = self.path.take() {
            if let Err(e) = std::fs::remove_file(&p) {
                if e.kind() != io::ErrorKind::NotFound {
                    tracing::warn!("cannot remove {}: {e}", p.display());
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_differ_and_stale_detection() {
        assert_ne!(random_token(), random_token());
        let s = temp_suffix();
        assert!(!is_stale_suffix(&s));
        assert!(is_stale_suffix("1-abc"));
    }

    #[test]
    fn removes_trees_without_following_links() {
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("keep"), b"x").unwrap();
        let t = tempfile::tempdir().unwrap();
        let root = t.path().join("r");
        std::fs::create_dir_all(root.join("a/b")).unwrap();
        std::fs::write(root.join("a/b/f"), b"x").unwrap();
        std::os::unix::fs::symlink(outside.path(), root.join("a/link")).unwrap();
        let skipped = remove_tree_same_fs(&root).unwrap();
        assert!(skipped.is_empty());
        assert!(!root.exists());
        assert!(outside.path().join("keep").exists());
    }
}
