//! polkit action ids (see `polkit/org.pibuilder.policy`).

/// Read-only queries: status, job lists. Granted to everyone by default.
pub const INSPECT: &str = "org.pibuilder.inspect";
/// Build an OS image from stages.
pub const BUILD: &str = "org.pibuilder.build";
/// Write an image to a removable card.
pub const FLASH: &str = "org.pibuilder.flash";
/// Write to a non-removable or unusually large disk.
pub const FLASH_SYSTEM_DEVICE: &str = "org.pibuilder.flash-system-device";
/// Register or remove binfmt_misc entries (a system-wide kernel setting).
pub const BINFMT: &str = "org.pibuilder.binfmt";
/// Find Raspberry Pi boards on the local networks (an ARP sweep by the daemon).
pub const SCAN: &str = "org.pibuilder.scan";
/// See and control other users' jobs and images.
pub const MANAGE: &str = "org.pibuilder.manage";

/// Every action the policy file must declare.
pub const ALL: &[&str] = &[
    INSPECT,
    BUILD,
    FLASH,
    FLASH_SYSTEM_DEVICE,
    BINFMT,
    SCAN,
    MANAGE,
];

/// The XML annotation naming a method's required action.
pub const ANNOTATION: &str = "org.pibuilder.PiBuilder1.Action";
/// Annotation value prefix for methods of a job: allowed for the job's starter, or with the
/// named action for anyone else.
pub const JOB_OWNER_OR: &str = "job-owner-or:";
