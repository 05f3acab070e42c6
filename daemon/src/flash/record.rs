//! A note on disk for every card being written, so that a daemon killed mid-write (crash-only,
//! DESIGN §3 rule 7) lets the next one report the interrupted job to its owner. The kernel
//! releases the killed daemon's exclusive opens and locks by itself; the card is left with a
//! zeroed partition table area, which the note explains.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

const DIR: &str = "flash";

#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Interrupted {
    pub device: String,
    pub owner_uid: u32,
    pub started_us: u64,
}

/// Removes its note when the write ends, however it ends.
pub struct Note {
    path: PathBuf,
}

impl Drop for Note {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

fn dir(state_dir: &Path) -> PathBuf {
    state_dir.join(DIR)
}

/// Records that `device` is being written for `owner_uid` by job `job_id`.
pub fn note(state_dir: &Path, job_id: u64, device: &str, owner_uid: u32) -> std::io::Result<Note> {
    let dir = dir(state_dir);
    std::fs::create_dir_all(&dir)?;
    let path = dir.join(format!("{}-{job_id}.json", std::process::id()));
    let record = Interrupted {
        device: device.to_owned(),
        owner_uid,
        started_us: crate::jobs::now_us(),
    };
    std::fs::write(&path, serde_json::to_vec(&record).unwrap_or_default())?;
    Ok(Note { path })
}

/// The writes an earlier daemon process did not finish; their notes are removed.
pub fn take_interrupted(state_dir: &Path) -> Vec<Interrupted> {
    let Ok(entries) = std::fs::read_dir(dir(state_dir)) else {
        return Vec::new();
    };
    let mine = format!("{}-", std::process::id());
    let mut found = Vec::new();
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with(&mine) {
            continue;
        }
        if let Ok(bytes) = std::fs::read(entry.path()) {
            if let Ok(record) = serde_json::from_slice::<Interrupted>(&bytes) {
                found.push(record);
            }
        }
        let _ = std::fs::remove_file(entry.path());
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notes_live_while_writing_and_outlive_a_killed_process() {
        let state = tempfile::tempdir().unwrap();
        let note = note(state.path(), 3, "/dev/loop7", 1000).unwrap();
        // The same process never reports its own writes.
        assert!(take_interrupted(state.path()).is_empty());
        // A note left by another process (as after SIGKILL) is reported once.
        std::fs::copy(
            dir(state.path()).join(format!("{}-3.json", std::process::id())),
            dir(state.path()).join("1-9.json"),
        )
        .unwrap();
        let found = take_interrupted(state.path());
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].device, "/dev/loop7");
        assert_eq!(found[0].owner_uid, 1000);
        assert!(take_interrupted(state.path()).is_empty());
        drop(note);
        assert_eq!(std::fs::read_dir(dir(state.path())).unwrap().count(), 0);
    }
}
