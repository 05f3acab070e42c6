//! Every method the client calls, with what it means to the user. Errors are explained in terms
//! of the attempt ("You are not allowed to register binfmt_misc entries"), and the attempt says
//! whether a password prompt is expected, which decides whether a polkit agent is started.

use pib_dbus_interfaces::actions;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attempt {
    /// The D-Bus method.
    pub method: &'static str,
    /// What the user wanted, as a verb phrase after "You are not allowed to".
    pub doing: &'static str,
    /// The polkit action that guards it.
    pub action: &'static str,
    /// Whether polkit usually asks for a password (so an agent is worth starting).
    pub may_prompt: bool,
    /// The call is on a job object, so "unknown object" means the job is gone.
    pub on_job: bool,
}

pub static GET_STATUS: Attempt = Attempt {
    method: "GetStatus",
    doing: "read pi-builder's status",
    action: actions::INSPECT,
    may_prompt: false,
    on_job: false,
};

pub static REGISTER_BINFMT: Attempt = Attempt {
    method: "RegisterBinfmt",
    doing: "register binfmt_misc entries",
    action: actions::BINFMT,
    may_prompt: true,
    on_job: false,
};

pub static UNREGISTER_BINFMT: Attempt = Attempt {
    method: "UnregisterBinfmt",
    doing: "remove binfmt_misc entries",
    action: actions::BINFMT,
    may_prompt: true,
    on_job: false,
};

pub static LIST_JOBS: Attempt = Attempt {
    method: "ListJobs",
    doing: "list jobs",
    action: actions::INSPECT,
    may_prompt: false,
    on_job: false,
};

/// Reading a job's properties: not a method of the Job interface, but it fails in the same ways.
pub static READ_JOB: Attempt = Attempt {
    method: "GetAll",
    doing: "read the job's state",
    action: actions::INSPECT,
    may_prompt: false,
    on_job: true,
};

pub static CANCEL: Attempt = Attempt {
    method: "Cancel",
    doing: "cancel this job",
    action: actions::MANAGE,
    may_prompt: true,
    on_job: true,
};

pub static ATTACH_LOG: Attempt = Attempt {
    method: "AttachLog",
    doing: "read this job's log",
    action: actions::MANAGE,
    may_prompt: true,
    on_job: true,
};

pub static LIST_BASES: Attempt = Attempt {
    method: "ListBases",
    doing: "list the bases",
    action: actions::INSPECT,
    may_prompt: false,
    on_job: false,
};

pub static FETCH_BASE: Attempt = Attempt {
    method: "FetchBase",
    doing: "fetch a base",
    action: actions::BUILD,
    may_prompt: true,
    on_job: false,
};

pub static IMPORT_BASE: Attempt = Attempt {
    method: "ImportBase",
    doing: "import a base",
    action: actions::BUILD,
    may_prompt: true,
    on_job: false,
};

pub static BUILD: Attempt = Attempt {
    method: "Build",
    doing: "build an image",
    action: actions::BUILD,
    may_prompt: true,
    on_job: false,
};

pub static LIST_IMAGES: Attempt = Attempt {
    method: "ListImages",
    doing: "list the images",
    action: actions::INSPECT,
    may_prompt: false,
    on_job: false,
};

pub static REMOVE_IMAGE: Attempt = Attempt {
    method: "RemoveImage",
    doing: "remove this image",
    action: actions::BUILD,
    may_prompt: true,
    on_job: false,
};

pub static CLEAN: Attempt = Attempt {
    method: "Clean",
    doing: "clean up",
    action: actions::BUILD,
    may_prompt: true,
    on_job: false,
};

pub static SHELL: Attempt = Attempt {
    method: "Shell",
    doing: "run a shell in this image",
    action: actions::BUILD,
    may_prompt: true,
    on_job: false,
};

/// Clean with --all-users or --bases: what is missing then is usually the stronger action.
pub static CLEAN_SHARED: Attempt = Attempt {
    method: "Clean",
    doing: "clean up other users' images or the shared bases",
    action: actions::MANAGE,
    may_prompt: true,
    on_job: false,
};

pub static MAKE_DISK_IMAGE: Attempt = Attempt {
    method: "MakeDiskImage",
    doing: "make a disk image of this build",
    action: actions::BUILD,
    may_prompt: true,
    on_job: false,
};

pub static LIST_DEVICES: Attempt = Attempt {
    method: "ListDevices",
    doing: "list the devices",
    action: actions::INSPECT,
    may_prompt: false,
    on_job: false,
};

pub static FLASH: Attempt = Attempt {
    method: "Flash",
    doing: "write to this device",
    action: actions::FLASH,
    may_prompt: true,
    on_job: false,
};

pub static FORMAT_DEVICE: Attempt = Attempt {
    method: "FormatDevice",
    doing: "format this device",
    action: actions::FLASH,
    may_prompt: true,
    on_job: false,
};

pub static INSTALL: Attempt = Attempt {
    method: "Install",
    doing: "install this image on the device",
    action: actions::FLASH,
    may_prompt: true,
    on_job: false,
};

pub static SCAN: Attempt = Attempt {
    method: "Scan",
    doing: "scan the network for Raspberry Pis",
    action: actions::SCAN,
    may_prompt: true,
    on_job: false,
};
