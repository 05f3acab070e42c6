//! Debian bases: bootstrapped by mmdebstrap for arm64 or armhf, its tar output streamed
//! straight into the import (no temporary tarball: a minbase root is ~200 MB and the stream
//! is hashed on the way).
//!
//! mmdebstrap runs in `unshare` mode even though we are root: its chroot mounts (/proc, /sys,
//! device nodes) then live in a private mount namespace that disappears with the process, so a
//! killed bootstrap cannot leave host mounts behind in the cache directory. It runs in its own
//! process group so that cancelling stops it together with the apt, dpkg and qemu processes
//! it started. Its scratch space (TMPDIR) is a private directory under the cache directory,
//! removed afterwards without ever crossing into another file system.

use std::collections::VecDeque;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use sha2::{Digest as _, Sha256};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio_util::sync::CancellationToken;

use super::docker::{import_stream, BaseImage, ImportPlan, Produced, Sink};
use super::error::BaseError;
use super::fsutil::{ensure_private_dir, is_stale_suffix, remove_tree_same_fs, temp_suffix};
use super::http::parse_mirror;
use super::source::Pump;
use super::{Ctx, Progress};

const MMDEBSTRAP: &str = "mmdebstrap";
/// How long mmdebstrap gets to clean up after SIGTERM before the group is killed.
const TERM_GRACE: Duration = Duration::from_secs(15);
/// Lines of mmdebstrap's output kept for the error message.
const TAIL_LINES: usize = 25;
const WORK_PREFIX: &str = "bootstrap-";

/// What mmdebstrap says when the foreign architecture cannot run (binfmt_misc missing).
const NO_EMULATION_HINTS: &[&str] = &[
    "can neither be executed natively nor via qemu user emulation",
    "arch-test succeeded without emu but not with emu",
    "exec format error",
];

pub(crate) async fn fetch(
    ctx: &Ctx<'_>,
    previous_id: Option<String>,
) -> Result<BaseImage, BaseError> {
    let Ctx {
        docker,
        cfg,
        spec,
        progress,
        cancel,
    } = *ctx;
    let suite = spec
        .resolved_suite(cfg)
        .ok_or_else(|| BaseError::InvalidSpec("not a Debian base".to_owned()))?;
    let (setting, raw_mirror) = match &cfg.debian_mirror {
        Some(m) => ("debian_mirror", m.clone()),
        None => (
            "debian_mirror (taken from the host's apt sources)",
            super::apt::host_debian_mirror()?,
        ),
    };
    let mirror = parse_mirror(setting, &raw_mirror)?;
    let mirror = mirror.as_str().trim_end_matches('/').to_owned();
    progress.log(format!("Debian mirror: {mirror} (setting {setting})"));

    ensure_private_dir(&cfg.cache_dir)?;
    remove_stale_work_dirs(&cfg.cache_dir);
    let work = cfg
        .cache_dir
        .join(format!("{WORK_PREFIX}{}", temp_suffix()));
    ensure_private_dir(&work)?;

    let plan = ImportPlan {
        cfg,
        spec,
        origin: format!("mmdebstrap {suite} {mirror}"),
        previous: previous_id,
    };
    let arch = spec.debian_arch();
    let produce = |sink: Sink| {
        let work = work.clone();
        let mirror = mirror.clone();
        async move { bootstrap(&work, arch, suite, &mirror, &sink, progress, cancel).await }
    };
    let result = import_stream(docker, plan, progress, cancel, produce).await;

    let w = work.clone();
    match tokio::task::spawn_blocking(move || remove_tree_same_fs(&w)).await {
        Ok(Ok(skipped)) if skipped.is_empty() => {}
        Ok(Ok(skipped)) => tracing::warn!(
            "left {} behind: {skipped:?} are mount points",
            work.display()
        ),
        Ok(Err(e)) => tracing::warn!("cannot remove {}: {e}", work.display()),
        Err(e) => tracing::warn!("cannot remove {}: {e}", work.display()),
    }
    result
}

/// Runs mmdebstrap and pumps its tar output into the import.
async fn bootstrap(
    work: &Path,
    arch: &str,
    suite: &str,
    mirror: &str,
    sink: &Sink,
    progress: &dyn Progress,
    cancel: &CancellationToken,
) -> Result<Produced, BaseError> {
    progress.stage("bootstrap");
    let source = format!("deb {mirror} {suite} main");
    let mut cmd = Command::new(MMDEBSTRAP);
    cmd.arg("--mode=unshare")
        .arg("--variant=minbase")
        .arg("--format=tar")
        .arg(format!("--architectures={arch}"))
        .arg("--include=ca-certificates")
        // The scratch directory is private to root (the chroot must not be reachable by other
        // users), so apt's unprivileged _apt download sandbox cannot write there; say so
        // instead of letting apt warn and fall back on its own.
        .arg("--aptopt=APT::Sandbox::User \"root\"")
        .arg(suite)
        .arg("-")
        .arg(&source)
        .env("TMPDIR", work)
        // Messages are matched (binfmt hints) and shown to users: keep them untranslated.
        .env("LC_ALL", "C.UTF-8")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    progress.log(format!(
        "running mmdebstrap --variant=minbase --architectures={arch} {suite} - \"{source}\""
    ));
    let mut child = cmd
        .spawn()
        .map_err(|source| BaseError::BootstrapSpawn { source })?;
    let mut group = GroupGuard::new(&child);
    let stdout = child.stdout.take();
    let stderr = child.stderr.take();
    let (Some(stdout), Some(stderr)) = (stdout, stderr) else {
        return Err(BaseError::BootstrapSpawn {
            source: std::io::Error::other("mmdebstrap's output pipes are missing"),
        });
    };

    let mut tail: VecDeque<String> = VecDeque::new();
    let mut sha = Sha256::new();
    let outcome = {
        let pump = async {
            // Owned here so the pipe closes as soon as pumping stops: a bootstrap whose
            // output nobody reads any more then ends (EPIPE) instead of blocking.
            let mut stdout = stdout;
            let pump = Pump {
                sink,
                progress,
                cancel,
                total: 0,
                limit: None,
                position: None,
            };
            pump.run(&mut stdout, |c| sha.update(c)).await
        };
        let log = async {
            let mut lines = BufReader::new(stderr).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                progress.log(line.clone());
                if tail.len() == TAIL_LINES {
                    tail.pop_front();
                }
                tail.push_back(line);
            }
        };
        let run = async {
            let (pumped, ()) = tokio::join!(pump, log);
            (pumped, child.wait().await)
        };
        tokio::select! {
            r = run => Some(r),
            _ = cancel.cancelled() => None,
        }
    };

    let (pumped, status) = match outcome {
        None => {
            terminate(&mut child, &mut group).await;
            return Err(BaseError::Cancelled);
        }
        Some(r) => r,
    };
    group.reaped();
    let status = status.map_err(|source| BaseError::BootstrapSpawn { source })?;
    if !status.success() {
        let tail: Vec<String> = tail.into_iter().collect();
        let lower = tail.join("\n").to_ascii_lowercase();
        if NO_EMULATION_HINTS.iter().any(|h| lower.contains(h)) {
            return Err(BaseError::ForeignArchUnsupported {
                arch: arch.to_owned(),
            });
        }
        return Err(BaseError::BootstrapFailed {
            status: status.to_string(),
            tail: tail.join("\n"),
        });
    }
    // A clean exit with a failed pump: the import stopped reading (its error wins).
    pumped?;
    Ok(Produced {
        sha256: hex::encode(sha.finalize()),
    })
}

/// Asks the bootstrap's process group to stop, then makes sure it does.
async fn terminate(child: &mut Child, group: &mut GroupGuard) {
    group.signal(rustix::process::Signal::TERM);
    if tokio::time::timeout(TERM_GRACE, child.wait())
        .await
        .is_err()
    {
        group.signal(rustix::process::Signal::KILL);
        let _ = child.wait().await;
    }
    // Helpers of the group may outlive the leader by a moment.
    group.signal(rustix::process::Signal::KILL);
    group.reaped();
}

/// Kills the bootstrap's whole process group if the producer is dropped before it finished
/// (the job's future dropped): `kill_on_drop` alone would only reach mmdebstrap itself.
struct GroupGuard {
    pgid: Option<rustix::process::Pid>,
}

impl GroupGuard {
    fn new(child: &Child) -> Self {
        let pgid = child
            .id()
            .and_then(|id| i32::try_from(id).ok())
            .and_then(rustix::process::Pid::from_raw);
        GroupGuard { pgid }
    }

    fn signal(&self, sig: rustix::process::Signal) {
        if let Some(pgid) = self.pgid {
            // ESRCH: the group is gone already, which is what we want.
            let _ = rustix::process::kill_process_group(pgid, sig);
        }
    }

    /// The leader was waited for: the group id may be reused from now on, so forget it.
    fn reaped(&mut self) {
        self.pgid = None;
    }
}

impl Drop for GroupGuard {
    fn drop(&mut self) {
        self.signal(rustix::process::Signal::KILL);
    }
}

/// Deletes bootstrap scratch directories of a daemon that was killed mid-bootstrap.
fn remove_stale_work_dirs(dir: &Path) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in rd.flatten() {
        let name = entry.file_name();
        let Some(suffix) = name.to_str().and_then(|n| n.strip_prefix(WORK_PREFIX)) else {
            continue;
        };
        if is_stale_suffix(suffix) {
            match remove_tree_same_fs(&entry.path()) {
                Ok(skipped) if skipped.is_empty() => {}
                Ok(skipped) => tracing::warn!("mount points left in place: {skipped:?}"),
                Err(e) => tracing::warn!("cannot remove {}: {e}", entry.path().display()),
            }
        }
    }
}
