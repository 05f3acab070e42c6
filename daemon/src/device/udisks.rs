//! What udisks2 adds to the daemon's own device rules: the names people know a card by
//! (vendor, model, serial, bus), unmounting what the desktop automounted before a write, and
//! powering a card off afterwards. udisks2's verdicts are never used to decide what may be
//! written (see `rules`).

use std::collections::HashMap;
use std::time::Duration;

use udisks2::Client;
use zbus::Variant;

/// udisksd is started by bus activation; a machine without it must not stall listing.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// A drive as udisks2 describes it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DriveInfo {
    pub vendor: String,
    pub model: String,
    pub serial: String,
    pub bus: String,
    pub removable: bool,
}

pub struct Udisks {
    client: Client,
}

/// The kernel's dev_t for major:minor, as udisks2's Block.DeviceNumber holds it.
pub fn dev_t(major: u32, minor: u32) -> u64 {
    rustix::fs::makedev(major, minor)
}

fn no_prompt() -> HashMap<&'static str, Variant<'static>> {
    // The daemon runs as root; udisks2 must never try to ask anyone.
    udisks2::standard_options(true)
}

impl Udisks {
    pub async fn connect(conn: &zbus::Connection) -> Option<Udisks> {
        let client =
            tokio::time::timeout(CONNECT_TIMEOUT, Client::new_for_connection(conn.clone()))
                .await
                .ok()?
                .ok()?;
        Some(Udisks { client })
    }

    async fn objects(&self) -> Vec<udisks2::Object> {
        let managed = tokio::time::timeout(
            CONNECT_TIMEOUT,
            self.client.object_manager().get_managed_objects(),
        )
        .await;
        match managed {
            Ok(Ok(map)) => map
                .into_keys()
                .filter_map(|p| self.client.object(p).ok())
                .collect(),
            _ => Vec::new(),
        }
    }

    /// The drive behind the block device `dev`, when udisks2 knows one.
    pub async fn drive_info(&self, dev: u64) -> Option<DriveInfo> {
        let block = self.client.block_for_dev(dev).await?;
        let drive = self.client.drive_for_block(&block).await.ok()?;
        Some(DriveInfo {
            vendor: drive.vendor().await.unwrap_or_default().trim().to_owned(),
            model: drive.model().await.unwrap_or_default().trim().to_owned(),
            serial: drive.serial().await.unwrap_or_default(),
            bus: drive.connection_bus().await.unwrap_or_default(),
            removable: drive.removable().await.unwrap_or(false),
        })
    }

    /// Unmounts every mounted filesystem on the block devices `devs` (a disk and its
    /// partitions); returns the mount points that were unmounted.
    pub async fn unmount_all(&self, devs: &[u64]) -> Result<Vec<String>, String> {
        let mut done = Vec::new();
        for object in self.objects().await {
            let Ok(block) = object.block().await else {
                continue;
            };
            if !block.device_number().await.is_ok_and(|d| devs.contains(&d)) {
                continue;
            }
            let Ok(fs) = object.filesystem().await else {
                continue;
            };
            let points = fs.mount_points().await.unwrap_or_default();
            if points.is_empty() {
                continue;
            }
            fs.unmount(no_prompt()).await.map_err(|e| {
                format!(
                    "cannot unmount {}: {e}",
                    String::from_utf8_lossy(points[0].split(|&b| b == 0).next().unwrap_or(&[]))
                )
            })?;
            done.extend(points.iter().map(|p| {
                String::from_utf8_lossy(p.split(|&b| b == 0).next().unwrap_or(&[])).into_owned()
            }));
        }
        Ok(done)
    }

    /// Powers the drive of `dev` off (the card can then be pulled safely).
    pub async fn power_off(&self, dev: u64) -> Result<(), String> {
        let block = self
            .client
            .block_for_dev(dev)
            .await
            .ok_or("udisks2 does not know the device")?;
        let drive = self
            .client
            .drive_for_block(&block)
            .await
            .map_err(|e| format!("no drive for the device: {e}"))?;
        if !drive.can_power_off().await.unwrap_or(false) {
            return Err("the drive cannot be powered off".into());
        }
        drive
            .power_off(no_prompt())
            .await
            .map_err(|e| format!("cannot power the drive off: {e}"))
    }
}
