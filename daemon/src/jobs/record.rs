//! A note on disk for every running job, so that a daemon killed mid-job (crash-only, DESIGN §3
//! rule 7) lets the next one report the interrupted job to its owner. What the job was making
//! (work directories, labelled containers) is removed by the next start; the kernel releases a
//! killed daemon's exclusive opens and locks by itself. A card write also names its device: the
//! card is left with a zeroed partition table area, which the report explains.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

const DIR: &str = "running";

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Interrupted {
    /// The job's operation word (`Job.Operation`).
    pub operation: String,
    pub owner_uid: u32,
    pub started_us: u64,
    /// The card a write was going to.
    #[serde(default)]
    pub device: Option<String>,
}

/// Removes its note when the job ends, however it ends.
pub struct Note {
    path: PathBuf,
    record: Mutex<Interrupted>,
}

impl Note {
    /// Names the device the job writes, in the note on disk.
    pub fn set_device(&self, device: &str) -> std::io::Result<()> {
        let mut record = self.record.lock().unwrap_or_else(|e| e.into_inner());
        record.device = Some(device.to_owned());
        write(&self.path, &record)
    }
}

impl Drop for Note {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Names this process's notes and work directories: the pid alone could come back after a
/// reboot or in a new container, and the new daemon would then take a predecessor's leftovers
/// for its own.
pub(crate) fn process_tag() -> &'static str {
    static TAG: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    TAG.get_or_init(|| format!("{}.{}", std::process::id(), crate::jobs::now_us()))
}

fn dir(state_dir: &Path) -> PathBuf {
    state_dir.join(DIR)
}

/// Written whole under another name, then renamed: a daemon killed in between leaves either
/// the old note or the new one, never half of one.
fn write(path: &Path, record: &Interrupted) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(
        &tmp,
        serde_json::to_vec(record).map_err(std::io::Error::other)?,
    )?;
    std::fs::rename(&tmp, path)
}

/// Records that job `job_id` of `owner_uid` is running `operation`.
pub fn note(
    state_dir: &Path,
    job_id: u64,
    operation: &str,
    owner_uid: u32,
) -> std::io::Result<Note> {
    let dir = dir(state_dir);
    std::fs::create_dir_all(&dir)?;
    let path = dir.join(format!("{}-{job_id}.json", process_tag()));
    let record = Interrupted {
        operation: operation.to_owned(),
        owner_uid,
        started_us: crate::jobs::now_us(),
        device: None,
    };
    write(&path, &record)?;
    Ok(Note {
        path,
        record: Mutex::new(record),
    })
}

/// The jobs an earlier daemon process did not finish; their notes are removed.
pub fn take_interrupted(state_dir: &Path) -> Vec<Interrupted> {
    let Ok(entries) = std::fs::read_dir(dir(state_dir)) else {
        return Vec::new();
    };
    let mine = format!("{}-", process_tag());
    let mut found = Vec::new();
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with(&mine) {
            continue;
        }
        if name.ends_with(".json") {
            if let Ok(bytes) = std::fs::read(entry.path()) {
                if let Ok(record) = serde_json::from_slice::<Interrupted>(&bytes) {
                    found.push(record);
                }
            }
        }
        let _ = std::fs::remove_file(entry.path());
    }
    found.sort_by_key(|r| r.started_us);
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notes_live_while_running_and_outlive_a_killed_process() {
        let state = tempfile::tempdir().unwrap();
        let note = note(state.path(), 3, "flash", 1000).unwrap();
        note.set_device("/dev/loop7").unwrap();
        // The same process never reports its own jobs.
        assert!(take_interrupted(state.path()).is_empty());
        // A note left by another process (as after SIGKILL) is reported once; a torn
        // temporary file is removed without a report.
        std::fs::copy(
            dir(state.path()).join(format!("{}-3.json", process_tag())),
            dir(state.path()).join(format!("{}.1-9.json", std::process::id())),
        )
        .unwrap();
        std::fs::write(dir(state.path()).join("1-10.tmp"), b"{\"oper").unwrap();
        let found = take_interrupted(state.path());
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].operation, "flash");
        assert_eq!(found[0].device.as_deref(), Some("/dev/loop7"));
        assert_eq!(found[0].owner_uid, 1000);
        assert!(take_interrupted(state.path()).is_empty());
        drop(note);
        assert_eq!(std::fs::read_dir(dir(state.path())).unwrap().count(), 0);
    }
}
