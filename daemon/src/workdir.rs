//! Per-job scratch directories under the daemon's state directory.
//!
//! Build output is attacker-controlled (DESIGN §3 rule 4): the directories are root-only
//! (0700). They are removed when the job ends, and, for a daemon that was killed, at the next
//! start (crash-only, rule 7).

use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

use pib_dbus_interfaces::DBusError;

const WORK: &str = "work";

pub struct WorkDir {
    path: PathBuf,
}

fn io_error(what: &str, path: &Path, e: std::io::Error) -> DBusError {
    if e.raw_os_error() == Some(libc::ENOSPC) {
        DBusError::NoSpace(format!(
            "no space left in {} while {what}; free some space or run `pib-client clean`",
            path.display()
        ))
    } else {
        DBusError::Failed(format!("{what} in {}: {e}", path.display()))
    }
}

impl WorkDir {
    pub fn create(state_dir: &Path, job_id: u64) -> Result<WorkDir, DBusError> {
        let parent = state_dir.join(WORK);
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&parent)
            .map_err(|e| io_error("creating the work directory", &parent, e))?;
        // The state directory may predate us with looser permissions.
        for dir in [state_dir, parent.as_path()] {
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
                .map_err(|e| io_error("securing the work directory", dir, e))?;
        }
        let path = parent.join(format!(
            "job-{}-{job_id}",
            crate::jobs::record::process_tag()
        ));
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&path)
            .map_err(|e| io_error("creating the job directory", &path, e))?;
        Ok(WorkDir { path })
    }

    #[cfg(test)]
    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn file(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }

    pub fn io_error(&self, what: &str, e: std::io::Error) -> DBusError {
        io_error(what, &self.path, e)
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_dir_all(&self.path) {
            tracing::warn!("cannot remove {}: {e}", self.path.display());
        }
    }
}

/// Removes every job directory left by earlier daemon processes.
pub fn reap_stale(state_dir: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(state_dir.join(WORK)) else {
        return 0;
    };
    let mine = format!("job-{}-", crate::jobs::record::process_tag());
    let mut reaped = 0;
    for entry in entries.flatten() {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with("job-") && !name.starts_with(&mine) {
            match std::fs::remove_dir_all(entry.path()) {
                Ok(()) => reaped += 1,
                Err(e) => tracing::warn!("cannot reap {}: {e}", entry.path().display()),
            }
        }
    }
    reaped
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_removed_on_drop_and_stale_ones_reaped() {
        let state = tempfile::tempdir().unwrap();
        let w = WorkDir::create(state.path(), 7).unwrap();
        let mode = std::fs::metadata(w.path()).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700);
        std::fs::write(w.file("x"), "data").unwrap();
        let p = w.path().to_owned();
        drop(w);
        assert!(!p.exists());

        let stale = state.path().join(WORK).join("job-1-3");
        std::fs::create_dir_all(stale.join("deep")).unwrap();
        let live = WorkDir::create(state.path(), 8).unwrap();
        assert_eq!(reap_stale(state.path()), 1);
        assert!(!stale.exists());
        assert!(live.path().exists(), "this process's own dirs stay");
    }
}
