//! Devices as the bus sees them: the listing, and turning a name a caller gave into a disk
//! that may be written, with the polkit details and the error a refusal deserves.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use pib_dbus_interfaces::types::device as key;
use pib_dbus_interfaces::DBusError;
use zbus::OwnedVariant;

use super::rules::{self, Disk, Mounts, Policy, Refusal, Roots, Verdict};
use super::udisks::{self, Udisks};
use crate::bus::Daemon;

pub fn policy(ctx: &Daemon) -> Policy {
    Policy {
        allow_loop: ctx.config.devices.allow_loop,
        protected_paths: vec![
            PathBuf::from("/"),
            ctx.config.state_dir.clone(),
            ctx.config.cache_dir.clone(),
        ],
        large_disk: ctx.config.devices.large_disk_bytes,
    }
}

/// The error a write to a refused disk gets.
pub fn refusal_error(device: &str, r: &Refusal) -> DBusError {
    let text = format!("{device}: {r}");
    match r {
        Refusal::SystemDisk(_) => DBusError::SystemDisk(text),
        Refusal::TooSmall { .. } => DBusError::NoSpace(text),
        Refusal::Mounted(_) => DBusError::DeviceBusy(text),
        Refusal::Gone => DBusError::NotFound(text),
        Refusal::NotBlockDevice(_)
        | Refusal::Partition { .. }
        | Refusal::Holders(_)
        | Refusal::Swap(_)
        | Refusal::ReadOnly
        | Refusal::LoopNotAllowed => DBusError::DeviceRefused(text),
    }
}

/// Fills in what sysfs did not say from udisks2 (when it runs).
async fn enrich(disk: &mut Disk, udisks: Option<&Udisks>) {
    let Some(u) = udisks else { return };
    let id = &disk.identity;
    let Some(info) = u.drive_info(udisks::dev_t(id.major, id.minor)).await else {
        return;
    };
    let fill = |mine: &mut Option<String>, theirs: String| {
        if mine.as_deref().is_none_or(str::is_empty) && !theirs.is_empty() {
            *mine = Some(theirs);
        }
    };
    fill(&mut disk.model, info.model);
    fill(&mut disk.vendor, info.vendor);
    fill(&mut disk.bus, info.bus);
    if disk.identity.serial.is_none() && !info.serial.is_empty() {
        disk.identity.serial = Some(info.serial);
    }
}

/// Disks a user never wants offered: the system's own, fixed disks, and what is not a card.
fn hidden(disk: &Disk) -> bool {
    match &disk.verdict {
        Verdict::Ok => false,
        Verdict::NeedsSystemGrant(_) => true,
        Verdict::Refused(r) => matches!(
            r,
            Refusal::SystemDisk(_)
                | Refusal::NotBlockDevice(_)
                | Refusal::Gone
                | Refusal::LoopNotAllowed
                | Refusal::Holders(_)
                | Refusal::Swap(_)
        ),
    }
}

fn variant<'a>(v: impl Into<zbus::Variant<'a>>) -> OwnedVariant {
    OwnedVariant::try_from(v.into()).expect("plain values convert")
}

pub fn to_dict(d: &Disk) -> HashMap<String, OwnedVariant> {
    let text = |o: &Option<String>| o.clone().unwrap_or_default();
    let (verdict, reason, error) = match &d.verdict {
        Verdict::Ok => ("ok", String::new(), String::new()),
        Verdict::NeedsSystemGrant(why) => ("needs-system-grant", why.clone(), String::new()),
        Verdict::Refused(r) => (
            "refused",
            r.to_string(),
            refusal_error(&d.node.to_string_lossy(), r).dbus_name(),
        ),
    };
    let mounted: Vec<String> = d
        .mounted
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    HashMap::from([
        (
            key::DEVICE.into(),
            variant(d.node.to_string_lossy().into_owned()),
        ),
        (key::NAME.into(), variant(d.name.clone())),
        (key::MAJOR.into(), variant(d.identity.major)),
        (key::MINOR.into(), variant(d.identity.minor)),
        (
            key::DISKSEQ.into(),
            variant(d.identity.diskseq.unwrap_or(0)),
        ),
        (key::SIZE.into(), variant(d.identity.size)),
        (key::MODEL.into(), variant(text(&d.model))),
        (key::VENDOR.into(), variant(text(&d.vendor))),
        (key::SERIAL.into(), variant(text(&d.identity.serial))),
        (key::BUS.into(), variant(text(&d.bus))),
        (key::REMOVABLE.into(), variant(d.removable)),
        (key::READ_ONLY.into(), variant(d.read_only)),
        (key::MOUNTED.into(), variant(mounted)),
        (key::PARTITIONS.into(), variant(d.partitions.clone())),
        (key::VERDICT.into(), variant(verdict)),
        (key::REASON.into(), variant(reason)),
        (key::ERROR.into(), variant(error)),
    ])
}

/// The listing for ListDevices.
pub async fn list(
    ctx: &Daemon,
    all: bool,
) -> Result<Vec<HashMap<String, OwnedVariant>>, DBusError> {
    let policy = policy(ctx);
    let mut disks = tokio::task::spawn_blocking(move || rules::list(&Roots::default(), &policy))
        .await
        .map_err(|e| DBusError::Failed(format!("internal error: {e}")))?
        .map_err(|e| DBusError::Failed(format!("cannot read the system's disks: {e}")))?;
    let udisks = Udisks::connect(&ctx.conn).await;
    let mut out = Vec::new();
    for disk in &mut disks {
        if !all && hidden(disk) {
            continue;
        }
        enrich(disk, udisks.as_ref()).await;
        out.push(to_dict(disk));
    }
    Ok(out)
}

/// A caller's device name checked for an image of `image_size` bytes (0 when unknown): the
/// disk, or the typed refusal. A mounted disk is returned: the write unmounts it.
pub async fn inspect(ctx: &Daemon, name: &str, image_size: u64) -> Result<Disk, DBusError> {
    if name.is_empty() || name.len() > 4096 || name.contains('\0') || !name.starts_with('/') {
        return Err(DBusError::InvalidArgs(format!(
            "device {name:?} is not a device path (e.g. /dev/sdb or /dev/disk/by-id/...)"
        )));
    }
    let policy = policy(ctx);
    let path = Path::new(name).to_owned();
    // Mounted filesystems are no refusal here: the write unmounts them through udisks2, after
    // authorization, and the exclusive open then proves nothing is left mounted.
    let mut disk = tokio::task::spawn_blocking(move || {
        rules::inspect(
            &path,
            image_size,
            &Roots::default(),
            &policy,
            Mounts::Report,
        )
    })
    .await
    .map_err(|e| DBusError::Failed(format!("internal error: {e}")))?
    .map_err(|r| refusal_error(name, &r))?;
    enrich(&mut disk, Udisks::connect(&ctx.conn).await.as_ref()).await;
    Ok(disk)
}

/// The polkit details of a write: admins can write rules per device.
pub fn details(disk: &Disk) -> Vec<(&'static str, String)> {
    vec![
        ("device", disk.node.to_string_lossy().into_owned()),
        ("model", disk.model.clone().unwrap_or_default()),
        ("serial", disk.identity.serial.clone().unwrap_or_default()),
        ("size", disk.identity.size.to_string()),
    ]
}
