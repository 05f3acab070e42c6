//! `FormatDevice`: a card gets the default layout, empty: MBR, FAT32 "PIBOOT", ext4 "PIROOT"
//! over the rest. The table is written by the daemon; the kernel is told about the partitions
//! (BLKPG through `partx`, for kernels and loop devices that do not scan tables themselves);
//! the filesystems are made by the standard tools on those partitions.

use std::fs::File;
use std::os::fd::AsFd;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use pib_dbus_interfaces::types::result;
use pib_dbus_interfaces::DBusError;

use super::run::Chosen;
use crate::device::rules::{self, Roots};
use crate::image::layout::{ALIGN, BOOT_LABEL, ROOT_LABEL};
use crate::image::mbr::{self, PartKind, Partition};
use crate::jobs::{JobHandle, Outcome};

/// Stale signatures (old filesystems, RAID or LVM headers) live at the starts of partitions.
const WIPE: u64 = 1 << 20;

/// The node of partition `n` of `disk`: sdb1, mmcblk0p1, loop3p1.
pub fn partition_node(disk: &Path, n: u8) -> PathBuf {
    let text = disk.to_string_lossy();
    if text.ends_with(|c: char| c.is_ascii_digit()) {
        PathBuf::from(format!("{text}p{n}"))
    } else {
        PathBuf::from(format!("{text}{n}"))
    }
}

async fn tool(job: &JobHandle, program: &str, args: &[&str]) -> Result<(), DBusError> {
    job.log(format!("{program} {}", args.join(" ")));
    let out = tokio::process::Command::new(crate::tools::path(program))
        .args(args)
        .output()
        .await
        .map_err(|e| DBusError::NotSupported(format!("cannot run {program}: {e}")))?;
    if out.status.success() {
        return Ok(());
    }
    Err(DBusError::Failed(format!(
        "{program} failed: {}",
        String::from_utf8_lossy(&out.stderr).trim()
    )))
}

/// Writes the table and wipes the partitions' starts, with the disk held exclusively.
fn write_table(chosen: &Chosen, parts: &[Partition]) -> Result<(), DBusError> {
    let disk = &chosen.disk;
    let name = disk.node.to_string_lossy().into_owned();
    let file = File::options()
        .read(true)
        .write(true)
        .custom_flags(libc::O_EXCL | libc::O_CLOEXEC)
        .open(&disk.node)
        .map_err(|e| match e.raw_os_error() {
            Some(libc::EBUSY) => DBusError::DeviceBusy(format!("{name} is in use")),
            _ => DBusError::Failed(format!("cannot open {name}: {e}")),
        })?;
    rules::recheck(file.as_fd(), &disk.identity, &Roots::default()).map_err(|e| {
        DBusError::DeviceChanged(format!(
            "{name} is not the device that was chosen any more ({e})"
        ))
    })?;
    let zeros = vec![0u8; WIPE as usize];
    let io = |e: std::io::Error| DBusError::Failed(format!("writing {name}: {e}"));
    file.write_all_at(&zeros, 0).map_err(io)?;
    for p in parts {
        file.write_all_at(&zeros, p.start).map_err(io)?;
    }
    let end = disk.identity.size.saturating_sub(WIPE);
    file.write_all_at(&zeros, end).map_err(io)?;
    mbr::write(
        &file,
        u32::from_le_bytes(crate::image::assemble::random_bytes()),
        parts,
    )
    .map_err(|e| DBusError::Failed(format!("the partition table: {e}")))?;
    file.sync_all().map_err(io)?;
    Ok(())
}

pub async fn run(chosen: Chosen, boot_size: u64, job: JobHandle) -> Result<Outcome, DBusError> {
    job.note_device(&chosen.disk.node.to_string_lossy());
    let size = chosen.disk.identity.size;
    let root_start = ALIGN + boot_size;
    let root_size = size.saturating_sub(root_start) / ALIGN * ALIGN;
    if root_size < 64 << 20 {
        return Err(DBusError::NoSpace(format!(
            "{} is too small for a {} MiB boot partition and a root partition",
            chosen.disk.node.display(),
            boot_size >> 20
        )));
    }
    let parts = [
        Partition {
            start: ALIGN,
            size: boot_size,
            kind: PartKind::Fat32Lba,
            bootable: true,
        },
        Partition {
            start: root_start,
            size: root_size,
            kind: PartKind::Linux,
            bootable: false,
        },
    ];
    job.set_stage("partition");
    let node = chosen.disk.node.clone();
    let chosen = tokio::task::spawn_blocking(move || write_table(&chosen, &parts).map(|()| chosen))
        .await
        .map_err(|e| DBusError::Failed(format!("internal error: {e}")))??;
    let disk = node.to_string_lossy().into_owned();
    // The kernel learns the new table: a re-read where it parses tables, BLKPG where not.
    let _ = tool(&job, "blockdev", &["--rereadpt", &disk]).await;
    let p1 = partition_node(&node, 1);
    let p2 = partition_node(&node, 2);
    if !p1.exists() {
        let _ = tool(&job, "partx", &["--delete", &disk]).await;
        tool(&job, "partx", &["--add", &disk]).await?;
    }
    for p in [&p1, &p2] {
        let mut waited = Duration::ZERO;
        while !p.exists() && waited < Duration::from_secs(10) {
            tokio::time::sleep(Duration::from_millis(100)).await;
            waited += Duration::from_millis(100);
        }
        if !p.exists() {
            return Err(DBusError::NotSupported(format!(
                "the kernel did not show {} after the partition table was written",
                p.display()
            )));
        }
    }
    job.set_stage("mkfs");
    let p1s = p1.to_string_lossy().into_owned();
    let p2s = p2.to_string_lossy().into_owned();
    tool(&job, "mkfs.vfat", &["-F", "32", "-n", BOOT_LABEL, &p1s]).await?;
    tool(&job, "mkfs.ext4", &["-F", "-q", "-L", ROOT_LABEL, &p2s]).await?;
    drop(chosen);
    Ok(Outcome::new(format!(
        "{disk}: {} MiB {BOOT_LABEL} (FAT32) and {} MiB {ROOT_LABEL} (ext4)",
        boot_size >> 20,
        root_size >> 20
    ))
    .with(result::DEVICE, disk))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partition_names() {
        assert_eq!(
            partition_node(Path::new("/dev/sdb"), 1),
            Path::new("/dev/sdb1")
        );
        assert_eq!(
            partition_node(Path::new("/dev/mmcblk0"), 2),
            Path::new("/dev/mmcblk0p2")
        );
        assert_eq!(
            partition_node(Path::new("/dev/loop3"), 1),
            Path::new("/dev/loop3p1")
        );
    }
}
