//! A disk-image job: two reads of the container's filesystem, the partitions written into a
//! private sparse file, then one pass that hashes it and copies it to the caller's descriptor.

use std::fs::File;
use std::os::fd::OwnedFd;
use std::os::unix::fs::OpenOptionsExt;

use pib_dbus_interfaces::types::result;
use pib_dbus_interfaces::DBusError;

use super::assemble::{self, now};
use super::boot::boot_dir;
use super::deliver::{self, DeliverError};
use super::export::ExportContainer;
use super::layout::Plan;
use super::request::{Compression, ImageRequest};
use super::rootfs::MIB;
use super::{fixups, manifest, ImageError};
use crate::bus::Daemon;
use crate::fdio::CheckedFd;
use crate::jobs::{JobHandle, Outcome};
use crate::results::ImageInfo;
use crate::workdir::WorkDir;

/// Runs blocking image work off the async threads.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ImageError> + Send + 'static,
) -> Result<T, DBusError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| DBusError::Failed(format!("internal error: {e}")))?
        .map_err(DBusError::from)
}

/// Reports a phase's bytes as the job's progress.
fn progress_of(job: &JobHandle, total: u64) -> impl FnMut(u64) + Send + 'static {
    let job = job.clone();
    move |done| job.set_bytes(done.min(total), total)
}

fn cancel_check(job: &JobHandle) -> impl Fn() -> bool + Send + 'static {
    let job = job.clone();
    move || job.is_cancelled()
}

pub async fn run(
    ctx: &Daemon,
    image: ImageInfo,
    req: ImageRequest,
    output: CheckedFd,
    job: JobHandle,
) -> Result<Outcome, DBusError> {
    let output = output
        .into_blocking_writer()
        .map_err(|e| DBusError::InvalidArgs(e.to_string()))?;
    let work = WorkDir::create(&ctx.config.state_dir, job.id())?;
    let (disk, plan) = assemble_disk(ctx, &work, &image, &req, &job).await?;
    deliver_to(disk, plan, &image, &req, output, &job).await
}

/// Makes the disk image of `image` in `work` (the file and its layout), reporting on `job`.
pub async fn assemble_disk(
    ctx: &Daemon,
    work: &WorkDir,
    image: &ImageInfo,
    req: &ImageRequest,
    job: &JobHandle,
) -> Result<(File, Plan), DBusError> {
    let docker = ctx.engine.client().await?;
    let container = ExportContainer::create(&docker, image, job.id()).await?;
    let made = make(work, &container, image, req, job).await;
    container.remove().await;
    made
}

async fn make(
    work: &WorkDir,
    container: &ExportContainer,
    image: &ImageInfo,
    req: &ImageRequest,
    job: &JobHandle,
) -> Result<(File, Plan), DBusError> {
    let disk = File::options()
        .read(true)
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(work.file("disk.img"))
        .map_err(|e| work.io_error("creating the image file", e))?;

    // First read: the tree, and the boot partition filled on the way.
    job.set_stage("read");
    job.log(format!(
        "reading the filesystem of {} (boot files from /{})",
        image.reference,
        boot_dir(&image.distro)
    ));
    let (mut tree, totals, disk) = {
        let stream = container.stream();
        let distro = image.distro.clone();
        let boot_size = req.boot_size;
        let cancelled = cancel_check(job);
        let mut progress = progress_of(job, image.size.max(1));
        blocking(move || {
            let (tree, totals) =
                assemble::read_tree(&disk, boot_size, &distro, stream, &cancelled, &mut progress)?;
            Ok((tree, totals, disk))
        })
        .await?
    };
    for note in &tree.notes {
        job.log(note.clone());
    }
    job.log(format!(
        "{} files ({} bytes) in the boot partition; {} bytes of file data for the root",
        totals.boot_files, totals.boot_bytes, totals.data_bytes
    ));
    if totals.boot_files == 0 {
        job.log(format!(
            "warning: /{} is empty: the card will not boot",
            boot_dir(&image.distro)
        ));
    }
    let hostname = req
        .hostname
        .clone()
        .or_else(|| (!image.hostname.is_empty()).then(|| image.hostname.clone()))
        .unwrap_or_else(|| "raspberrypi".to_owned());
    for done in fixups::apply(&mut tree, &hostname) {
        job.log(done);
    }
    job.check_cancelled()?;

    let (plan, tree) = {
        let req = req.clone();
        blocking(move || assemble::plan(&tree, &totals, &req).map(|p| (p, tree))).await?
    };
    job.log(format!(
        "layout: boot {} MiB, root {} MiB{}, image {} MiB",
        plan.boot.size / MIB,
        plan.root.size / MIB,
        plan.data
            .as_ref()
            .map(|d| format!(", {} {} MiB", d.label, d.size / MIB))
            .unwrap_or_default(),
        plan.total / MIB
    ));

    // Second read: the root filesystem's blocks.
    job.set_stage("root");
    job.set_bytes(0, totals.data_bytes.max(1));
    let (disk, notes) = {
        let stream = container.stream();
        let plan = plan.clone();
        let cancelled = cancel_check(job);
        let mut progress = progress_of(job, totals.data_bytes.max(1));
        blocking(move || {
            let notes =
                assemble::write_partitions(&disk, &plan, &tree, stream, &cancelled, &mut progress)?;
            Ok((disk, notes))
        })
        .await?
    };

    for note in notes {
        job.log(note);
    }
    Ok((disk, plan))
}

/// One pass over the finished image: hash, block map and the copy to the caller.
async fn deliver_to(
    disk: File,
    plan: Plan,
    image: &ImageInfo,
    req: &ImageRequest,
    output: OwnedFd,
    job: &JobHandle,
) -> Result<Outcome, DBusError> {
    job.set_stage("output");
    job.set_bytes(0, plan.total);
    let compression = req.compress;
    let delivered = {
        let total = plan.total;
        let cancelled = cancel_check(job);
        let mut progress = progress_of(job, total);
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get() as u32);
        blocking(move || {
            let compression = compression.map(|c| match c {
                Compression::Zstd => deliver::Compression::Zstd,
                Compression::Xz => deliver::Compression::Xz,
            });
            deliver::deliver(
                &disk,
                total,
                output,
                compression,
                threads,
                &cancelled,
                &mut progress,
            )
            .map_err(|e| match e {
                DeliverError::NoSpace => {
                    ImageError::NoSpace("the output's disk is full: no space left on it".into())
                }
                DeliverError::Cancelled => ImageError::Cancelled,
                DeliverError::OutputClosed => {
                    ImageError::Io(std::io::Error::other("the reader of the output went away"))
                }
                other => ImageError::Io(std::io::Error::other(other.to_string())),
            })
        })
        .await?
    };
    let entry = manifest::entry(
        image,
        &manifest::Digests {
            image_size: delivered.image_size,
            image_sha256: &delivered.image_sha256,
            output_size: delivered.output_size,
            output_sha256: &delivered.output_sha256,
        },
        now(),
    );
    job.log(format!(
        "image of {} bytes ({} mapped), sha256 {}",
        delivered.image_size, delivered.mapped_bytes, delivered.image_sha256
    ));
    Ok(Outcome::new(format!(
        "made a {} MiB image of {}",
        delivered.image_size / MIB,
        image.name
    ))
    .with(result::IMAGE_SIZE, delivered.image_size)
    .with(result::IMAGE_SHA256, delivered.image_sha256.clone())
    .with(result::OUTPUT_SIZE, delivered.output_size)
    .with(result::OUTPUT_SHA256, delivered.output_sha256.clone())
    .with(result::BMAP, delivered.bmap.clone())
    .with(result::MANIFEST, entry.to_string())
    .with(result::PARTITIONS, plan.to_json()))
}
