//! Client-side proxies for the service's interfaces.

use std::collections::HashMap;

use zbus::{proxy, OwnedObjectPath, OwnedVariant, Variant};

use crate::DBusError;

/// `org.pibuilder.PiBuilder1.Manager` at `/org/pibuilder/PiBuilder1`.
#[proxy(
    interface = "org.pibuilder.PiBuilder1.Manager",
    default_service = "org.pibuilder.PiBuilder1",
    default_path = "/org/pibuilder/PiBuilder1"
)]
pub trait Manager {
    /// The daemon's version.
    #[zbus(property)]
    fn version(&self) -> zbus::Result<String>;

    /// What the service can do right now (see the XML for the keys).
    fn get_status(&self) -> Result<HashMap<String, OwnedVariant>, DBusError>;

    /// Registers qemu for ARM machines in binfmt_misc; returns the job.
    fn register_binfmt(
        &self,
        options: HashMap<&str, Variant<'_>>,
    ) -> Result<OwnedObjectPath, DBusError>;

    /// Removes pi-builder's binfmt_misc entries; returns the job.
    fn unregister_binfmt(
        &self,
        options: HashMap<&str, Variant<'_>>,
    ) -> Result<OwnedObjectPath, DBusError>;

    /// The jobs the caller may see.
    fn list_jobs(&self) -> Result<Vec<OwnedObjectPath>, DBusError>;

    /// Base root filesystems imported into Docker.
    fn list_bases(&self) -> Result<Vec<HashMap<String, OwnedVariant>>, DBusError>;

    /// Downloads or bootstraps a base; returns the job.
    fn fetch_base(&self, options: HashMap<&str, Variant<'_>>)
        -> Result<OwnedObjectPath, DBusError>;

    /// Imports a rootfs tarball the caller opened; returns the job.
    fn import_base(
        &self,
        tarball: zbus::Fd<'_>,
        options: HashMap<&str, Variant<'_>>,
    ) -> Result<OwnedObjectPath, DBusError>;

    /// Builds an image from a stage context stream; returns the job.
    fn build(
        &self,
        context: zbus::Fd<'_>,
        options: HashMap<&str, Variant<'_>>,
    ) -> Result<OwnedObjectPath, DBusError>;

    /// Built images the caller may see.
    fn list_images(&self) -> Result<Vec<HashMap<String, OwnedVariant>>, DBusError>;

    /// Removes a built image.
    fn remove_image(&self, name: &str) -> Result<(), DBusError>;

    /// Removes built images and dangling layers; returns the job.
    fn clean(&self, options: HashMap<&str, Variant<'_>>) -> Result<OwnedObjectPath, DBusError>;

    /// Runs a command in a throwaway container of a built image; returns the job.
    #[allow(clippy::too_many_arguments)]
    fn shell(
        &self,
        name: &str,
        command: &[&str],
        stdin: zbus::Fd<'_>,
        stdout: zbus::Fd<'_>,
        stderr: zbus::Fd<'_>,
        options: HashMap<&str, Variant<'_>>,
    ) -> Result<OwnedObjectPath, DBusError>;

    /// The machine's whole disks with pi-builder's verdict on each.
    fn list_devices(
        &self,
        options: HashMap<&str, Variant<'_>>,
    ) -> Result<Vec<HashMap<String, OwnedVariant>>, DBusError>;

    /// Writes an image to cards; returns one job per device.
    fn flash(
        &self,
        image: zbus::Fd<'_>,
        devices: &[&str],
        options: HashMap<&str, Variant<'_>>,
    ) -> Result<Vec<OwnedObjectPath>, DBusError>;

    /// Gives a card the default empty layout; returns the job.
    fn format_device(
        &self,
        device: &str,
        options: HashMap<&str, Variant<'_>>,
    ) -> Result<OwnedObjectPath, DBusError>;

    /// Writes a built image straight to cards; returns one job per device.
    fn install(
        &self,
        name: &str,
        devices: &[&str],
        options: HashMap<&str, Variant<'_>>,
    ) -> Result<Vec<OwnedObjectPath>, DBusError>;

    /// Looks for Raspberry Pi boards on the local networks; returns the job.
    fn scan(&self, options: HashMap<&str, Variant<'_>>) -> Result<OwnedObjectPath, DBusError>;

    /// Makes a bootable disk image of a built image into `output`; returns the job.
    fn make_disk_image(
        &self,
        name: &str,
        output: zbus::Fd<'_>,
        options: HashMap<&str, Variant<'_>>,
    ) -> Result<OwnedObjectPath, DBusError>;
}

/// `org.pibuilder.PiBuilder1.Job` at `/org/pibuilder/PiBuilder1/jobs/N`.
#[proxy(
    interface = "org.pibuilder.PiBuilder1.Job",
    default_service = "org.pibuilder.PiBuilder1"
)]
pub trait Job {
    #[zbus(property)]
    fn operation(&self) -> zbus::Result<String>;
    #[zbus(property)]
    fn state(&self) -> zbus::Result<String>;
    #[zbus(property)]
    fn progress(&self) -> zbus::Result<f64>;
    #[zbus(property)]
    fn progress_valid(&self) -> zbus::Result<bool>;
    #[zbus(property)]
    fn bytes(&self) -> zbus::Result<u64>;
    #[zbus(property)]
    fn total_bytes(&self) -> zbus::Result<u64>;
    #[zbus(property)]
    fn rate(&self) -> zbus::Result<u64>;
    #[zbus(property)]
    fn start_time(&self) -> zbus::Result<u64>;
    #[zbus(property)]
    fn expected_end_time(&self) -> zbus::Result<u64>;
    #[zbus(property, name = "StartedByUID")]
    fn started_by_uid(&self) -> zbus::Result<u32>;
    #[zbus(property)]
    fn stage(&self) -> zbus::Result<String>;
    #[zbus(property)]
    fn message(&self) -> zbus::Result<String>;
    #[zbus(property)]
    fn error_name(&self) -> zbus::Result<String>;
    #[zbus(property)]
    fn result(&self) -> zbus::Result<HashMap<String, OwnedVariant>>;

    /// Asks the job to stop.
    fn cancel(&self) -> Result<(), DBusError>;

    /// Streams the job's log into `fd` (backlog first), closing it when the job ends.
    fn attach_log(&self, fd: zbus::Fd<'_>) -> Result<(), DBusError>;

    /// The job ended.
    #[zbus(signal)]
    fn completed(&self, success: bool, message: String) -> zbus::Result<()>;
}
