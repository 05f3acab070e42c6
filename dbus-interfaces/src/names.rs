//! Fixed names of the service on the system bus.

/// Well-known bus name owned by `pib-daemon`.
pub const BUS_NAME: &str = "org.pibuilder.PiBuilder1";
/// The Manager object.
pub const MANAGER_PATH: &str = "/org/pibuilder/PiBuilder1";
/// Parent of all job objects; job N lives at `{JOBS_PATH}/N`.
pub const JOBS_PATH: &str = "/org/pibuilder/PiBuilder1/jobs";
/// Prefix of every interface name.
pub const INTERFACE_PREFIX: &str = "org.pibuilder.PiBuilder1";
pub const MANAGER_INTERFACE: &str = "org.pibuilder.PiBuilder1.Manager";
pub const JOB_INTERFACE: &str = "org.pibuilder.PiBuilder1.Job";
/// Prefix of every error name the service returns.
pub const ERROR_PREFIX: &str = "org.pibuilder.PiBuilder1.Error";

/// The object path of job `id`.
pub fn job_path(id: u64) -> String {
    format!("{JOBS_PATH}/{id}")
}
