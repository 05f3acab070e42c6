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
