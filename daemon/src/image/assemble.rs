//! The synchronous steps of making an image, shared by the job and the tests: each takes the
//! image file and a tar stream, so the whole pipeline can be driven from crafted archives.

use std::fs::File;
use std::io::Read;

use super::boot::boot_dir;
use super::fat::BootFs;
use super::layout::{Plan, ALIGN, BOOT_LABEL, ROOT_LABEL};
use super::request::ImageRequest;
use super::rootfs::{self, FsSpec, MIB};
use super::sink::WindowSink;
use super::tree::{self, BootDir, Totals, Tree};
use super::{mbr, ImageError};

pub fn random_bytes<const N: usize>() -> [u8; N] {
    let mut bytes = [0u8; N];
    if rustix::rand::getrandom(&mut bytes, rustix::rand::GetRandomFlags::empty()).is_err() {
        let seed = crate::jobs::now_us() ^ u64::from(std::process::id());
        for (i, b) in bytes.iter_mut().enumerate() {
            *b = (seed >> ((i % 8) * 8)) as u8 ^ i as u8;
        }
    }
    bytes
}

pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

fn fs_spec(size: u64, label: &str) -> FsSpec {
    FsSpec {
        size,
        label: label.to_owned(),
        uuid: random_bytes(),
        epoch: now(),
    }
}

/// The first read: formats the boot partition, fills it from the boot directory of `distro`
/// and returns the tree of everything else.
pub fn read_tree(
    disk: &File,
    boot_size: u64,
    distro: &str,
    stream: impl Read,
    cancelled: &dyn Fn() -> bool,
    progress: &mut dyn FnMut(u64),
) -> Result<(Tree, Totals), ImageError> {
    disk.set_len(ALIGN + boot_size)
        .map_err(|e| ImageError::write("sizing the image", e))?;
    let mut fat = BootFs::format(disk, ALIGN, boot_size, BOOT_LABEL)
        .map_err(|e| ImageError::Boot(e.to_string()))?;
    let boot = BootDir(boot_dir(distro));
    let (tree, totals) = tree::scan(stream, &boot, &mut fat, cancelled, progress)?;
    super::boot::finish(fat)?;
    Ok((tree, totals))
}

/// Sizes the root filesystem and lays out the partitions.
pub fn plan(tree: &Tree, totals: &Totals, req: &ImageRequest) -> Result<Plan, ImageError> {
    let spec = fs_spec(MIB, ROOT_LABEL);
    // With a fixed image size, first see whether the content fits what is left.
    if req.size.is_some() {
        let fixed = Plan::new(req, 0, totals.data_bytes)?;
        let trial = FsSpec {
            size: fixed.root.size,
            ..spec.clone()
        };
        if rootfs::declare(tree, &trial)?.is_some() {
            return Ok(fixed);
        }
    }
    let start = totals.data_bytes + totals.data_bytes / 20 + 32 * MIB;
    let needed = rootfs::smallest_fit(tree, &spec, start)?;
    Plan::new(req, needed, totals.data_bytes)
}

/// The second read: the partition table, the root filesystem and the empty data partition.
/// Returns notes on what the root filesystem could not hold (for the job's log).
pub fn write_partitions(
    disk: &File,
    plan: &Plan,
    tree: &Tree,
    stream: impl Read,
    cancelled: &dyn Fn() -> bool,
    progress: &mut dyn FnMut(u64),
) -> Result<Vec<String>, ImageError> {
    disk.set_len(plan.total)
        .map_err(|e| ImageError::write("sizing the image", e))?;
    let disk_id = u32::from_le_bytes(random_bytes());
    mbr::write(disk, disk_id, &plan.mbr_partitions())
        .map_err(|e| ImageError::Filesystem(format!("partition table: {e}")))?;
    let declared =
        rootfs::declare(tree, &fs_spec(plan.root.size, ROOT_LABEL))?.ok_or_else(|| {
            ImageError::NoSpace("the root filesystem does not fit its partition".into())
        })?;
    let notes = declared.notes.clone();
    let mut sink = WindowSink::new(disk, plan.root.start, plan.root.size);
    rootfs::write(tree, declared, stream, &mut sink, cancelled, progress)?;
    if let Some(data) = &plan.data {
        let mut sink = WindowSink::new(disk, data.start, data.size);
        rootfs::write_empty(&fs_spec(data.size, &data.label), &mut sink)?;
    }
    Ok(notes)
}

#[cfg(test)]
#[path = "assemble_tests.rs"]
mod tests;
