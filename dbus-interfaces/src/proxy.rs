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

    /// Asks the job to stop.
    fn cancel(&self) -> Result<(), DBusError>;

    /// Streams the job's log into `fd` (backlog first), closing it when the job ends.
    fn attach_log(&self, fd: zbus::Fd<'_>) -> Result<(), DBusError>;

    /// The job ended.
    #[zbus(signal)]
    fn completed(&self, success: bool, message: String) -> zbus::Result<()>;
}
