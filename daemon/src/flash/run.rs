//! A flash: one job per device, one driver for all of them. The image is read once and fed to
//! every card by the engine; each job shows its own card's phase, bytes and result, and one
//! card failing does not stop the others.

use std::fs::File;
use std::io::{Chain, Cursor, Read};
use std::os::unix::fs::FileExt;
use std::sync::Arc;

use pib_dbus_interfaces::types::{result, Operation};
use pib_dbus_interfaces::DBusError;
use tokio::sync::oneshot;
use zbus::OwnedObjectPath;

use super::busy::Claim;
use super::engine::{self, FlashError, Input, Phase, Report, Target};
use super::request::{Compression, FlashRequest};
use crate::bus::{job_object, Daemon};
use crate::device::rules::{self, Disk, Roots};
use crate::device::udisks::{self, Udisks};
use crate::jobs::{JobHandle, Outcome};

const ZSTD_MAGIC: [u8; 4] = [0x28, 0xB5, 0x2F, 0xFD];
const XZ_MAGIC: [u8; 6] = [0xFD, b'7', b'z', b'X', b'Z', 0x00];

/// A device that passed the rules and polkit, claimed for this flash.
pub struct Chosen {
    pub disk: Disk,
    pub _claim: Claim,
}

/// Makes the source once the devices are held (Install assembles the image then).
pub type SourceMaker = Box<
    dyn FnOnce(
            Arc<Daemon>,
            JobHandle,
        ) -> std::pin::Pin<
            Box<dyn std::future::Future<Output = Result<Source, DBusError>> + Send>,
        > + Send,
>;

/// A source that is there already.
pub fn ready(source: Source) -> SourceMaker {
    Box::new(move |_, _| Box::pin(async move { Ok(source) }))
}

/// What is written: the caller's image (a file or a pipe) or an image the daemon made.
pub enum Source {
    Caller(File),
    /// A finished image in the daemon's work directory (Install); the guard keeps it.
    Made {
        file: File,
        _keep: Box<dyn Send>,
    },
}

/// What a regular file holds, by its first bytes.
fn file_kind(file: &File) -> std::io::Result<Compression> {
    let mut magic = [0u8; 6];
    let n = file.read_at(&mut magic, 0)?;
    Ok(sniff(&magic[..n]))
}

/// The size a card must have for `image`, as far as it is known before reading: the block
/// map's, or a plain file's length; 0 when only the write can tell (a stream, or compressed).
pub fn size_needed(image: &File, req: &FlashRequest) -> u64 {
    if let Some(b) = &req.bmap {
        return b.image_size;
    }
    match image.metadata() {
        Ok(m) if m.is_file() && req.compression.is_none() => {
            match file_kind(image).unwrap_or(Compression::None) {
                Compression::None => m.len(),
                _ => 0,
            }
        }
        _ => 0,
    }
}

fn sniff(magic: &[u8]) -> Compression {
    if magic.starts_with(&ZSTD_MAGIC) {
        Compression::Zstd
    } else if magic.starts_with(&XZ_MAGIC) {
        Compression::Xz
    } else {
        Compression::None
    }
}

/// The engine's input: compression as told, or as the first bytes say.
fn input_of(
    source: Source,
    told: Option<Compression>,
    stall: std::time::Duration,
) -> Result<Input, DBusError> {
    let file = match source {
        Source::Caller(f) => f,
        Source::Made { file, .. } => return Ok(Input::File(file)),
    };
    let regular = file.metadata().is_ok_and(|m| m.is_file());
    let bad = |e: std::io::Error| DBusError::InvalidArgs(format!("cannot read the image: {e}"));
    if regular {
        let kind = match told {
            Some(k) => k,
            None => file_kind(&file).map_err(bad)?,
        };
        return Ok(match kind {
            Compression::None => Input::File(file),
            Compression::Zstd => Input::Zstd(Box::new(file)),
            Compression::Xz => Input::Xz(Box::new(file)),
        });
    }
    // A pipe: the first bytes are read to tell, then given back in front of the rest.
    let mut magic = vec![0u8; 6];
    let mut got = 0;
    let mut f = crate::fdio::StallingPipe::new(file, stall);
    while got < magic.len() {
        let n = f.read(&mut magic[got..]).map_err(bad)?;
        if n == 0 {
            break;
        }
        got += n;
    }
    magic.truncate(got);
    let kind = told.unwrap_or_else(|| sniff(&magic));
    let stream: Chain<Cursor<Vec<u8>>, crate::fdio::StallingPipe> = Cursor::new(magic).chain(f);
    match kind {
        Compression::Zstd => Ok(Input::Zstd(Box::new(stream))),
        Compression::Xz => Ok(Input::Xz(Box::new(stream))),
        Compression::None => Err(DBusError::InvalidArgs(
            "an uncompressed image must be passed as a file, not a pipe (its holes and size \
             are read from the file)"
                .into(),
        )),
    }
}

fn phase_word(p: Phase) -> &'static str {
    match p {
        Phase::Write => "write",
        Phase::Verify => "verify",
    }
}

pub fn flash_error(device: &str, e: FlashError) -> DBusError {
    let text = format!("{device}: {e}");
    match e {
        FlashError::Busy(_) => DBusError::DeviceBusy(text),
        FlashError::TooSmall { .. } | FlashError::NoSpace => DBusError::NoSpace(text),
        FlashError::VerifyFailed { .. } | FlashError::BadSource(_) => DBusError::VerifyFailed(text),
        FlashError::DeviceLost => DBusError::DeviceLost(text),
        FlashError::Cancelled => DBusError::Cancelled(text),
        FlashError::Stalled | FlashError::Io(..) => DBusError::Failed(text),
    }
}

/// Starts one job per device and the driver that writes them all; returns the jobs' paths.
pub async fn start(
    ctx: &Arc<Daemon>,
    owner_uid: u32,
    chosen: Vec<Chosen>,
    source: SourceMaker,
    req: FlashRequest,
    operation: Operation,
) -> Result<Vec<OwnedObjectPath>, DBusError> {
    let mut paths = Vec::new();
    let mut handle_rx = Vec::new();
    let mut result_tx = Vec::new();
    for _ in &chosen {
        let job = ctx.jobs.create(operation, owner_uid);
        paths.push(job_object::export(ctx, job.clone()).await?);
        let (htx, hrx) = oneshot::channel::<JobHandle>();
        let (rtx, rrx) = oneshot::channel::<Result<Outcome, DBusError>>();
        handle_rx.push(hrx);
        result_tx.push(rtx);
        ctx.jobs.run(job, move |handle| async move {
            let _ = htx.send(handle);
            rrx.await
                .unwrap_or_else(|_| Err(DBusError::Failed("the flash driver stopped".into())))
        });
    }
    let ctx = ctx.clone();
    tokio::spawn(async move {
        let mut handles = Vec::new();
        for rx in handle_rx {
            match rx.await {
                Ok(h) => handles.push(h),
                Err(_) => return,
            }
        }
        let results = drive(&ctx, &handles, chosen, source, req).await;
        for (tx, r) in result_tx.into_iter().zip(results) {
            let _ = tx.send(r);
        }
    });
    Ok(paths)
}

/// The block devices of a disk: itself and its partitions, as udisks2 numbers them.
fn block_numbers(disk: &Disk) -> Vec<u64> {
    let mut devs = vec![udisks::dev_t(disk.identity.major, disk.identity.minor)];
    for part in &disk.partitions {
        let Ok(text) = std::fs::read_to_string(format!("/sys/class/block/{part}/dev")) else {
            continue;
        };
        if let Some((ma, mi)) = text.trim().split_once(':') {
            if let (Ok(ma), Ok(mi)) = (ma.parse(), mi.parse()) {
                devs.push(udisks::dev_t(ma, mi));
            }
        }
    }
    devs
}

/// Unmounts, opens and re-identifies one device.
async fn prepare(
    disk: &Disk,
    udisks: Option<&Udisks>,
    job: &JobHandle,
) -> Result<Target, DBusError> {
    let name = disk.node.to_string_lossy().into_owned();
    if !disk.mounted.is_empty() {
        let Some(u) = udisks else {
            return Err(DBusError::DeviceBusy(format!(
                "{name} has mounted filesystems and udisks2 is not running to unmount them"
            )));
        };
        let done = u
            .unmount_all(&block_numbers(disk))
            .await
            .map_err(|e| DBusError::DeviceBusy(format!("{name}: {e}")))?;
        for point in done {
            job.log(format!("unmounted {point}"));
        }
    }
    let node = disk.node.clone();
    let identity = disk.identity.clone();
    let what = name.clone();
    tokio::task::spawn_blocking(move || {
        let target = Target::open(&node, &what).map_err(|e| flash_error(&what, e))?;
        rules::recheck(
            std::os::fd::AsFd::as_fd(&target.file),
            &identity,
            &Roots::default(),
        )
        .map_err(|e| {
            DBusError::DeviceChanged(format!(
                "{what} is not the device that was chosen any more ({e})"
            ))
        })?;
        Ok(target)
    })
    .await
    .map_err(|e| DBusError::Failed(format!("internal error: {e}")))?
}

async fn drive(
    ctx: &Arc<Daemon>,
    handles: &[JobHandle],
    chosen: Vec<Chosen>,
    source: SourceMaker,
    req: FlashRequest,
) -> Vec<Result<Outcome, DBusError>> {
    let udisks = Udisks::connect(&ctx.conn).await;
    let mut results: Vec<Option<Result<Outcome, DBusError>>> =
        chosen.iter().map(|_| None).collect();
    let mut targets = Vec::new();
    let mut slots = Vec::new();
    for (i, c) in chosen.iter().enumerate() {
        handles[i].set_stage("open");
        let device = c.disk.node.to_string_lossy().into_owned();
        handles[i].note_device(&device);
        handles[i].log(format!(
            "writing {} ({} bytes{})",
            c.disk.node.display(),
            c.disk.identity.size,
            c.disk
                .model
                .as_deref()
                .map(|m| format!(", {m}"))
                .unwrap_or_default()
        ));
        match prepare(&c.disk, udisks.as_ref(), &handles[i]).await {
            Ok(t) => {
                let (major, minor) = t.rdev();
                handles[i].log(format!(
                    "opened {} ({major}:{minor}, {} bytes) exclusively",
                    t.what(),
                    t.size()
                ));
                if let Some(b) = &req.bmap {
                    handles[i].log(format!(
                        "the block map maps {} of the image's {} bytes",
                        b.mapped_bytes(),
                        b.image_size
                    ));
                }
                targets.push(t);
                slots.push(i);
            }
            Err(e) => results[i] = Some(Err(e)),
        }
    }
    let input = if slots.is_empty() {
        Err(DBusError::Failed("no device could be opened".into()))
    } else {
        for &i in &slots {
            handles[i].set_stage("image");
        }
        match source(ctx.clone(), handles[slots[0]].clone()).await {
            Ok(s) => input_of(s, req.compression, ctx.config.input_stall()),
            Err(e) => Err(e),
        }
    };
    match input {
        Err(e) => {
            for i in &slots {
                results[*i] = Some(Err(e.clone()));
            }
        }
        Ok(input) if !targets.is_empty() => {
            let written = write_all(handles, &slots, input, targets, &req).await;
            for (slot, r) in slots.iter().zip(written) {
                let name = chosen[*slot].disk.node.to_string_lossy().into_owned();
                results[*slot] = Some(
                    r.map_err(|e| flash_error(&name, e))
                        .map(|report| outcome(&name, &report)),
                );
            }
        }
        Ok(_) => {}
    }
    for (i, c) in chosen.iter().enumerate() {
        if !matches!(results[i], Some(Ok(_))) {
            continue;
        }
        reread_partitions(&c.disk, &handles[i]).await;
        if req.eject {
            match &udisks {
                Some(u) => match u
                    .power_off(udisks::dev_t(c.disk.identity.major, c.disk.identity.minor))
                    .await
                {
                    Ok(()) => handles[i].log("powered the card off; it can be removed"),
                    Err(e) => handles[i].log(format!("not ejected: {e}")),
                },
                None => handles[i].log("not ejected: udisks2 is not running"),
            }
        }
    }
    results
        .into_iter()
        .map(|r| r.unwrap_or_else(|| Err(DBusError::Failed("not written".into()))))
        .collect()
}

fn outcome(device: &str, report: &Report) -> Outcome {
    let verified = if report.verified {
        "written and verified"
    } else {
        "written"
    };
    Outcome::new(format!("{device}: {verified}"))
        .with(result::DEVICE, device)
        .with(result::WRITTEN, report.written)
        .with(result::IMAGE_SHA256, report.image_sha256.clone())
        .with(result::VERIFIED, u32::from(report.verified))
}

/// Runs the engine on a blocking thread with the jobs' progress and cancellation.
async fn write_all(
    handles: &[JobHandle],
    slots: &[usize],
    input: Input,
    targets: Vec<Target>,
    req: &FlashRequest,
) -> Vec<Result<Report, FlashError>> {
    let jobs: Vec<JobHandle> = slots.iter().map(|&i| handles[i].clone()).collect();
    let bmap = req.bmap.clone();
    let options = engine::Options {
        verify: req.verify,
        ..Default::default()
    };
    let n = targets.len();
    let outcome = tokio::task::spawn_blocking(move || {
        // The image is read once for all cards: the read stops when every job is cancelled,
        // a single cancelled card is dropped while the others go on.
        let cancelled = || jobs.iter().all(JobHandle::is_cancelled);
        let target_cancelled = |i: usize| jobs.get(i).is_some_and(JobHandle::is_cancelled);
        let progress = |i: usize, phase: Phase, done: u64, total: u64| {
            if let Some(job) = jobs.get(i) {
                job.set_stage(phase_word(phase));
                job.set_bytes(done, total);
            }
        };
        engine::flash_each(
            input,
            bmap.as_ref(),
            targets,
            &options,
            &cancelled,
            &target_cancelled,
            &progress,
        )
    })
    .await;
    outcome.unwrap_or_else(|e| {
        (0..n)
            .map(|_| {
                Err(FlashError::Io(
                    "internal error".into(),
                    std::io::Error::other(e.to_string()),
                ))
            })
            .collect()
    })
}

/// Asks the kernel to read the new partition table (where it has a parser for it).
async fn reread_partitions(disk: &Disk, job: &JobHandle) {
    let out = tokio::process::Command::new(crate::tools::path("blockdev"))
        .arg("--rereadpt")
        .arg(&disk.node)
        .output()
        .await;
    match out {
        Ok(o) if o.status.success() => job.log("the kernel re-read the partition table"),
        Ok(o) => job.log(format!(
            "the kernel did not re-read the partition table: {}",
            String::from_utf8_lossy(&o.stderr).trim()
        )),
        Err(e) => job.log(format!("cannot run blockdev --rereadpt: {e}")),
    }
}
