//! Base root filesystems as Docker images: the `FROM` of every build.
//!
//! - Arch Linux ARM: the mirror's tarball for the machine, verified against its published md5,
//!   cached in `cache_dir` and imported ([`arch`]).
//! - Debian: bootstrapped with mmdebstrap from the configured mirror or the host's apt sources
//!   and streamed straight into the import ([`debian`], [`apt`]).
//! - A tarball the client opened and handed over as a file descriptor ([`import_fd`]).
//!
//! Every base is tagged [`image_name`] and carries labels (distro, arch, board, suite, origin,
//! digest) by which it is found again ([`list`]). Two fetches of the same base never run at
//! once: the second waits and then finds the first one's result.

mod apt;
mod arch;
mod debian;
mod docker;
mod error;
mod fsutil;
mod http;
pub mod service;
mod source;
mod spec;

use std::collections::HashMap;
use std::os::fd::OwnedFd;
use std::sync::{Arc, LazyLock, Mutex};

use bollard::Docker;
use pib_dbus_interfaces::types::Distro;
use tokio_util::sync::CancellationToken;

pub use docker::{list, reap, BaseImage};
pub use error::BaseError;
pub use spec::{image_name, labels, BaseConfig, BaseSpec, ORIGIN_LOCAL};

/// Where a job's progress goes; the daemon implements it for its job objects. Calls come from
/// the job's task, a few per second at most for `bytes`.
pub trait Progress: Send + Sync {
    /// One line for the job's log (mmdebstrap's output, what was decided and why).
    fn log(&self, line: String);
    /// The step now running: "check", "download", "verify", "bootstrap", "import", "label".
    fn stage(&self, s: &str);
    /// Bytes done of `total`; `total` is 0 while unknown (a bootstrap's stream).
    fn bytes(&self, done: u64, total: u64);
}

/// What one fetch or import works with.
#[derive(Clone, Copy)]
pub(crate) struct Ctx<'a> {
    pub docker: &'a Docker,
    pub cfg: &'a BaseConfig,
    pub spec: &'a BaseSpec,
    pub progress: &'a dyn Progress,
    pub cancel: &'a CancellationToken,
}

/// Per-key async locks: one per image name (whole fetches and imports) and one per Arch
/// tarball (downloads shared by boards). The map only grows by the handful of bases a host
/// uses, so entries are never removed.
static LOCKS: LazyLock<Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>> =
    LazyLock::new(|| Mutex::new(HashMap::new()));

pub(crate) async fn lock(
    key: String,
    cancel: &CancellationToken,
) -> Result<tokio::sync::OwnedMutexGuard<()>, BaseError> {
    let m = {
        // A panic while holding this map lock cannot leave it inconsistent (one insert), so a
        // poisoned lock is still usable.
        let mut map = LOCKS.lock().unwrap_or_else(|p| p.into_inner());
        map.entry(key).or_default().clone()
    };
    tokio::select! {
        g = m.lock_owned() => Ok(g),
        _ = cancel.cancelled() => Err(BaseError::Cancelled),
    }
}

/// Makes the base for `spec` available and returns it.
///
/// A base already imported for exactly this spec is returned at once, without network access,
/// unless `refresh` is set: then Arch Linux ARM re-validates against the mirror's md5 file
/// (downloading and re-importing only when it changed), and Debian bootstraps afresh. When a
/// refresh replaces an image, the old one is removed if no built image still uses it.
///
/// On error or cancellation nothing of the attempt remains: no partial download, no image.
pub async fn fetch(
    docker: &Docker,
    cfg: &BaseConfig,
    spec: &BaseSpec,
    refresh: bool,
    progress: &dyn Progress,
    cancel: &CancellationToken,
) -> Result<BaseImage, BaseError> {
    spec.validate()?;
    cfg.validate()?;
    let name = image_name(cfg, spec);
    let _guard = lock(format!("image:{name}"), cancel).await?;
    let existing = docker::find_base(docker, cfg, spec).await?;
    if let Some(mut img) = existing.clone() {
        if !refresh {
            progress.log(format!("{name} is already there"));
            img.cached = true;
            return Ok(img);
        }
    }
    let previous = docker::current_id(docker, &name).await?;
    let ctx = Ctx {
        docker,
        cfg,
        spec,
        progress,
        cancel,
    };
    match spec.distro {
        Distro::Arch => arch::fetch(&ctx, existing, previous, refresh).await,
        Distro::Debian => debian::fetch(&ctx, previous).await,
    }
}

/// Imports a root filesystem tarball the client opened (plain, gzip, xz or zstd, told apart by
/// content) as the base for `spec`, replacing what was there. The descriptor must be a regular
/// file or a pipe open for reading; the daemon never opens a path on a caller's behalf.
pub async fn import_fd(
    docker: &Docker,
    cfg: &BaseConfig,
    spec: &BaseSpec,
    tarball: OwnedFd,
    progress: &dyn Progress,
    cancel: &CancellationToken,
) -> Result<BaseImage, BaseError> {
    spec.validate()?;
    cfg.validate()?;
    let name = image_name(cfg, spec);
    let _guard = lock(format!("image:{name}"), cancel).await?;
    let previous = docker::current_id(docker, &name).await?;
    let plan = docker::ImportPlan {
        cfg,
        spec,
        origin: ORIGIN_LOCAL.to_owned(),
        previous,
    };
    let produce = |sink: docker::Sink| async move {
        source::produce_from_fd(tarball, cfg.stall_timeout, &sink, progress, cancel).await
    };
    docker::import_stream(docker, plan, progress, cancel, produce).await
}
