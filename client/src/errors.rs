//! What can go wrong, and how to say it to a person: in plain words, with what to do next, with a
//! D-Bus error name for scripts and an exit code.

use std::io;
use std::path::PathBuf;

use pib_dbus_interfaces::{actions, DBusError};
use zbus::fdo;

use crate::calls::Attempt;
use crate::context::ContextError;
use crate::job::JobRef;
use crate::project::ConfigError;
use crate::stages::StageError;

/// Exit codes, part of the command-line interface.
pub mod exit {
    pub const SUCCESS: u8 = 0;
    pub const FAILURE: u8 = 1;
    /// Bad command line or refused arguments.
    pub const USAGE: u8 = 2;
    pub const NOT_AUTHORIZED: u8 = 3;
    /// As a shell reports a process killed by SIGINT.
    pub const CANCELLED: u8 = 130;
}

/// Names for errors that happen in the client itself, so that `--json` always gives one.
pub mod names {
    pub const USAGE: &str = "org.pibuilder.Client.Error.Usage";
    pub const INTERRUPTED: &str = "org.pibuilder.Client.Error.Interrupted";
    pub const DAEMON_VANISHED: &str = "org.pibuilder.Client.Error.DaemonVanished";
    pub const IO: &str = "org.pibuilder.Client.Error.IOError";
    pub const BAD_REPLY: &str = "org.pibuilder.Client.Error.BadReply";
    /// The project file or the build flags.
    pub const CONFIG: &str = "org.pibuilder.Client.Error.Config";
    /// A stage that cannot be found or read.
    pub const STAGE: &str = "org.pibuilder.Client.Error.Stage";
    /// libdbus's name for "could not connect to the bus".
    pub const NO_SERVER: &str = "org.freedesktop.DBus.Error.NoServer";
    pub const DISCONNECTED: &str = "org.freedesktop.DBus.Error.Disconnected";
}

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot connect to the system bus: {0}")]
    Connect(zbus::Error),
    #[error("{} failed: {error}", attempt.method)]
    Call {
        attempt: &'static Attempt,
        error: DBusError,
    },
    /// The job ran and ended badly; `error` is rebuilt from its ErrorName and Message.
    #[error("job {path} ended: {error}")]
    Job {
        attempt: &'static Attempt,
        path: String,
        state: String,
        error: DBusError,
    },
    #[error("the daemon left the bus while job {path} was running")]
    DaemonVanished { path: String },
    /// A second Ctrl-C while following, or one before the daemon said which job it started.
    #[error("interrupted")]
    Interrupted { path: Option<String> },
    /// The user left the device picker without choosing.
    #[error("no card was chosen")]
    NothingChosen,
    /// The command line asks for something the client will not do as given.
    #[error("{0}")]
    Usage(String),
    #[error("{context}: {source}")]
    Io {
        context: &'static str,
        #[source]
        source: io::Error,
    },
    /// A file the user named, which the client opens itself.
    #[error("cannot {doing} {}: {source}", path.display())]
    File {
        doing: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The image layout (pib.toml's [image], --layout FILE or the flags).
    #[error(transparent)]
    Layout(#[from] crate::layout::LayoutError),
    /// Stages that cannot be found or are not acceptable, found before anything is sent.
    #[error(transparent)]
    Stage(StageError),
    /// The context stream broke while the build ran.
    #[error(transparent)]
    Context(ContextError),
    /// An error of the daemon's, said in terms of what the user named ("No image named x").
    #[error("{text}")]
    Reworded {
        text: String,
        cause: Box<ClientError>,
    },
}

impl ClientError {
    pub fn call(attempt: &'static Attempt) -> impl FnOnce(zbus::Error) -> ClientError {
        move |e| ClientError::Call {
            attempt,
            error: DBusError::from(e),
        }
    }

    pub fn io(context: &'static str) -> impl FnOnce(io::Error) -> ClientError {
        move |source| ClientError::Io { context, source }
    }

    /// The daemon's error, from the call or from the job it started.
    pub fn dbus_error(&self) -> Option<&DBusError> {
        match self {
            ClientError::Call { error, .. } | ClientError::Job { error, .. } => Some(error),
            ClientError::Reworded { cause, .. } => cause.dbus_error(),
            _ => None,
        }
    }

    /// Says a NotFound as `text` does, naming what the user asked for; other errors pass.
    pub fn when_not_found(self, text: impl FnOnce() -> String) -> ClientError {
        if matches!(self.dbus_error(), Some(DBusError::NotFound(_))) {
            ClientError::Reworded {
                text: text(),
                cause: Box::new(self),
            }
        } else {
            self
        }
    }
}

/// An error as the user sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Explanation {
    /// A D-Bus error name, for scripts.
    pub name: String,
    /// What happened and what to do next.
    pub text: String,
    /// The raw message from the daemon or the bus, when the text does not already quote it.
    pub detail: Option<String>,
    /// The job the error belongs to, when one ran.
    pub job: Option<(String, String)>,
    pub exit: u8,
}

impl Explanation {
    fn new(name: impl Into<String>, text: String, exit: u8) -> Explanation {
        Explanation {
            name: name.into(),
            text,
            detail: None,
            job: None,
            exit,
        }
    }

    /// The raw message goes along unless the text already quotes it.
    fn with_detail(mut self, detail: &str, quoted: bool) -> Explanation {
        if !detail.is_empty() && !quoted {
            self.detail = Some(detail.to_owned());
        }
        self
    }
}

/// `asked` says whether the call allowed a password prompt, which changes the advice when polkit
/// said no.
pub fn explain(err: &ClientError, asked: bool) -> Explanation {
    match err {
        ClientError::Connect(e) => Explanation::new(
            names::NO_SERVER,
            format!(
                "Cannot connect to the system bus ({e}). Is D-Bus running? Start it with \
                 `systemctl start dbus`, or `dbus-daemon --system --fork` on machines without \
                 systemd."
            ),
            exit::FAILURE,
        ),
        ClientError::Call { attempt, error } => explain_dbus(error, attempt, asked),
        ClientError::Job {
            attempt,
            path,
            state,
            error,
        } => {
            let mut ex = explain_dbus(error, attempt, asked);
            ex.job = Some((path.clone(), state.clone()));
            ex
        }
        ClientError::DaemonVanished { path } => Explanation::new(
            names::DAEMON_VANISHED,
            format!(
                "pi-builder's daemon stopped while job {} was running, so how it ended is \
                 unknown. The daemon's log says why (`journalctl -u pib-daemon`).",
                job_label(path)
            ),
            exit::FAILURE,
        ),
        ClientError::Interrupted { path: Some(path) } => Explanation::new(
            names::INTERRUPTED,
            format!(
                "Stopped waiting for job {}. It was asked to stop and may still be cleaning up; \
                 `pib-client jobs` shows it.",
                job_label(path)
            ),
            exit::CANCELLED,
        ),
        ClientError::Interrupted { path: None } => Explanation::new(
            names::INTERRUPTED,
            "Interrupted before the daemon answered. If it started a job all the same, \
             `pib-client jobs` shows it and `pib-client cancel` stops it."
                .to_owned(),
            exit::CANCELLED,
        ),
        ClientError::NothingChosen => Explanation::new(
            names::INTERRUPTED,
            "No card was chosen; nothing was written.".to_owned(),
            exit::CANCELLED,
        ),
        ClientError::Usage(text) => Explanation::new(names::USAGE, format!("{text}."), exit::USAGE),
        ClientError::Io { context, source } => {
            Explanation::new(names::IO, format!("{context}: {source}."), exit::FAILURE)
        }
        ClientError::File { .. } => Explanation::new(names::IO, format!("{err}."), exit::FAILURE),
        ClientError::Config(e) => Explanation::new(
            names::CONFIG,
            format!("{e}\n`pib-client build --help` lists the keys and flags."),
            exit::USAGE,
        ),
        ClientError::Layout(e) => Explanation::new(
            names::CONFIG,
            format!("{e}\n`pib-client image --help` lists the keys and flags."),
            exit::USAGE,
        ),
        // The stage errors already say what to do about them.
        ClientError::Stage(e) => Explanation::new(names::STAGE, format!("{e}."), exit::USAGE),
        ClientError::Context(e) if e.is_reader_gone() => Explanation::new(
            names::IO,
            "The daemon stopped reading the build context before its end.".to_owned(),
            exit::FAILURE,
        ),
        ClientError::Context(e) => Explanation::new(
            names::STAGE,
            format!("Could not send the build context: {e}."),
            exit::FAILURE,
        ),
        ClientError::Reworded { text, cause } => {
            let mut ex = explain(cause, asked);
            let msg = cause
                .dbus_error()
                .map(DBusError::message)
                .unwrap_or_default();
            ex.text = text.clone();
            ex.detail = (!msg.is_empty()).then_some(msg);
            ex
        }
    }
}

fn job_label(path: &str) -> String {
    JobRef::from_path(path).map_or_else(|| path.to_owned(), |j| j.to_string())
}

fn explain_dbus(err: &DBusError, attempt: &Attempt, asked: bool) -> Explanation {
    let msg = err.message();
    let name = err.dbus_name();
    let (text, exit) = match err {
        DBusError::ZBus(e) => return explain_zbus(e, attempt, asked),
        DBusError::NotAuthorized(_) => (not_authorized(attempt, asked), exit::NOT_AUTHORIZED),
        DBusError::InvalidArgs(_) => (
            format!(
                "The daemon refused the request: {msg}. Check the command line \
                 (`pib-client --help`)."
            ),
            exit::USAGE,
        ),
        DBusError::NotFound(_) => {
            let hint = if attempt.on_job {
                " `pib-client jobs` lists the jobs you can see."
            } else {
                ""
            };
            (format!("Not found: {msg}.{hint}"), exit::FAILURE)
        }
        DBusError::Busy(_) => (busy(attempt, &msg), exit::FAILURE),
        DBusError::Conflict(_) => (conflict(attempt, &msg), exit::FAILURE),
        DBusError::NotSupported(_) => {
            let hint = match attempt.method {
                _ if attempt.action == actions::BINFMT => {
                    " (binfmt needs the qemu-user-static package and a kernel with binfmt_misc)"
                }
                "Build" | "Shell" => {
                    " (ARM containers need qemu-user-static and `pib-client binfmt register`)"
                }
                "FetchBase" => " (Debian bases need mmdebstrap and arch-test on the daemon's host)",
                _ => "",
            };
            (
                format!(
                    "This machine cannot do that: {msg}. Install what is missing{hint}, then \
                     try again."
                ),
                exit::FAILURE,
            )
        }
        DBusError::DockerUnavailable(_) => (
            format!(
                "The Docker engine cannot be reached: {msg}. Start it (`sudo systemctl start \
                 docker`, or run `dockerd` as root where systemd does not run), then try again; \
                 `pib-client status` shows what the daemon sees."
            ),
            exit::FAILURE,
        ),
        DBusError::Cancelled(_) => {
            let why = if msg.is_empty() {
                String::new()
            } else {
                format!(": {msg}")
            };
            (format!("The job was cancelled{why}."), exit::CANCELLED)
        }
        DBusError::DeviceBusy(_) => (
            format!(
                "Could not {}: {msg}. Close what uses the card (or wait for the other job) and \
                 try again.",
                attempt.doing
            ),
            exit::FAILURE,
        ),
        DBusError::SystemDisk(_) => (
            format!(
                "Refused to {}: {msg}. pi-builder never writes the disk the system runs from.",
                attempt.doing
            ),
            exit::FAILURE,
        ),
        DBusError::DeviceRefused(_) => (
            format!(
                "Refused to {}: {msg}. `pib-client devices` lists the cards it accepts.",
                attempt.doing
            ),
            exit::FAILURE,
        ),
        DBusError::DeviceChanged(_) => (
            format!(
                "Stopped before writing: {msg}. Check which card is inserted and run the \
                 command again."
            ),
            exit::FAILURE,
        ),
        DBusError::DeviceLost(_) => (
            format!("The card went away while being written: {msg}. Reinsert it and try again."),
            exit::FAILURE,
        ),
        DBusError::VerifyFailed(_) => (
            format!(
                "The card does not read back as the image: {msg}. The card may be failing or \
                 fake; try another."
            ),
            exit::FAILURE,
        ),
        DBusError::NoSpace(_) => (
            format!(
                "Could not {}: {msg}. Free some space, or choose a larger size.",
                attempt.doing
            ),
            exit::FAILURE,
        ),
        DBusError::Failed(_) => (
            format!("Could not {}: {msg}.", attempt.doing),
            exit::FAILURE,
        ),
    };
    let quoted = !matches!(err, DBusError::NotAuthorized(_));
    Explanation::new(name, text, exit).with_detail(&msg, quoted)
}

/// What stands in the way depends on what was attempted.
fn busy(attempt: &Attempt, msg: &str) -> String {
    match attempt.method {
        "RemoveImage" | "Clean" => format!(
            "The image is in use: {msg}. Wait for the jobs that use it to end (`pib-client jobs` \
             lists them), then try again."
        ),
        _ => format!(
            "pi-builder is busy: {msg}. Wait until the running job ends (`pib-client jobs` lists \
             them), then try again."
        ),
    }
}

fn conflict(attempt: &Attempt, msg: &str) -> String {
    match attempt.method {
        "Build" => format!(
            "The build cannot have that name: {msg}. Choose another one (--name), or remove the \
             old image first (`pib-client rm NAME`; `pib-client images` lists yours)."
        ),
        _ => format!(
            "pi-builder will not override what it found: {msg}. Change that by hand if \
             pi-builder should take over (`pib-client status` shows what the daemon sees), then \
             try again."
        ),
    }
}

fn not_authorized(attempt: &Attempt, asked: bool) -> String {
    let mut text = format!(
        "You are not allowed to {}. Ask an administrator to grant the polkit action {}, or run \
         from a desktop session where you can enter a password.",
        attempt.doing, attempt.action
    );
    if !asked {
        text.push_str(" No password was asked for because of --no-ask-password or --json.");
    }
    text
}

fn explain_zbus(e: &zbus::Error, attempt: &Attempt, asked: bool) -> Explanation {
    match e {
        zbus::Error::FDO(f) => explain_fdo(f, attempt, asked),
        zbus::Error::MethodError(name, desc, _) => {
            let desc = desc.as_deref().unwrap_or("no description");
            Explanation::new(
                name.to_string(),
                format!("Could not {}: {name}: {desc}.", attempt.doing),
                exit::FAILURE,
            )
        }
        zbus::Error::InputOutput(io) => Explanation::new(
            names::DISCONNECTED,
            format!("The connection to the system bus broke ({io}). Try again."),
            exit::FAILURE,
        ),
        other => Explanation::new(
            names::BAD_REPLY,
            format!(
                "Could not {}: {other}. pib-client {} and the daemon probably come from \
                 different releases; install both from the same one.",
                attempt.doing,
                env!("CARGO_PKG_VERSION")
            ),
            exit::FAILURE,
        ),
    }
}

fn explain_fdo(f: &fdo::Error, attempt: &Attempt, asked: bool) -> Explanation {
    use fdo::Error as E;
    let name = zbus::DBusError::name(f).to_string();
    let msg = zbus::DBusError::description(f).unwrap_or("").to_owned();
    let mismatch = || {
        format!(
            "pi-builder's daemon did not understand the request to {} ({name}: {msg}). \
             pib-client {} and the daemon probably come from different releases; install both \
             from the same one.",
            attempt.doing,
            env!("CARGO_PKG_VERSION")
        )
    };
    let (text, exit) = match f {
        E::ServiceUnknown(_) | E::NameHasNoOwner(_) | E::SpawnServiceNotFound(_) => (
            "pi-builder's daemon is not installed or its D-Bus activation file is missing \
             (run `make install` or `make dev-up`)."
                .to_owned(),
            exit::FAILURE,
        ),
        E::SpawnExecFailed(_)
        | E::SpawnForkFailed(_)
        | E::SpawnChildExited(_)
        | E::SpawnChildSignaled(_)
        | E::SpawnFailed(_)
        | E::SpawnFailedToSetup(_)
        | E::SpawnConfigInvalid(_)
        | E::SpawnServiceNotValid(_)
        | E::SpawnPermissionsInvalid(_)
        | E::SpawnFileInvalid(_)
        | E::SpawnNoMemory(_) => (
            format!(
                "pi-builder's daemon could not be started: {msg}. Its log says why \
                 (`journalctl -u pib-daemon`, or the system bus's own output on machines \
                 without systemd)."
            ),
            exit::FAILURE,
        ),
        E::AccessDenied(_) => (
            format!(
                "The system bus refused to pass the request to {} to pi-builder's daemon: {msg}. \
                 Its bus policy (org.pibuilder.PiBuilder1.conf) is missing or does not let you \
                 call it; run `make install` again or ask an administrator.",
                attempt.doing
            ),
            exit::NOT_AUTHORIZED,
        ),
        E::InteractiveAuthorizationRequired(_) => (
            format!(
                "You need to authenticate to {}, but no password could be asked for{}. Run the \
                 command in a terminal without --no-ask-password or --json, or ask an \
                 administrator to grant the polkit action {}.",
                attempt.doing,
                if asked {
                    " (no polkit agent is running)"
                } else {
                    ""
                },
                attempt.action
            ),
            exit::NOT_AUTHORIZED,
        ),
        E::AuthFailed(_) => (
            format!("Authentication failed: {msg}. Try again."),
            exit::NOT_AUTHORIZED,
        ),
        E::UnknownObject(_) if attempt.on_job => (
            "There is no such job; finished jobs are forgotten after a while. `pib-client jobs` \
             lists the jobs you can see."
                .to_owned(),
            exit::FAILURE,
        ),
        E::UnknownObject(_)
        | E::UnknownMethod(_)
        | E::UnknownInterface(_)
        | E::UnknownProperty(_)
        | E::PropertyReadOnly(_)
        | E::InvalidArgs(_)
        | E::InvalidSignature(_)
        | E::NotSupported(_) => (mismatch(), exit::FAILURE),
        E::NoReply(_) | E::Timeout(_) | E::TimedOut(_) => (
            format!(
                "pi-builder's daemon did not answer in time: {msg}. It may be stuck; try again, \
                 and read its log (`journalctl -u pib-daemon`) if this keeps happening."
            ),
            exit::FAILURE,
        ),
        E::Disconnected(_) | E::NoServer(_) | E::NoNetwork(_) | E::IOError(_) => (
            format!("The connection to the system bus broke: {msg}. Try again."),
            exit::FAILURE,
        ),
        E::ZBus(inner) => return explain_zbus(inner, attempt, asked),
        _ => (
            format!("Could not {}: {name}: {msg}.", attempt.doing),
            exit::FAILURE,
        ),
    };
    let unquoted = matches!(
        f,
        E::ServiceUnknown(_)
            | E::NameHasNoOwner(_)
            | E::SpawnServiceNotFound(_)
            | E::InteractiveAuthorizationRequired(_)
    ) || (attempt.on_job && matches!(f, E::UnknownObject(_)));
    let quoted = !unquoted;
    Explanation::new(name, text, exit).with_detail(&msg, quoted)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::calls;

    fn call(attempt: &'static Attempt, error: DBusError) -> Explanation {
        explain(&ClientError::Call { attempt, error }, true)
    }

    fn fdo_error(e: fdo::Error) -> DBusError {
        DBusError::from(e)
    }

    #[test]
    fn every_service_error_in_plain_words() {
        let m = "the daemon's words".to_owned();
        let cases = [
            (DBusError::NotAuthorized(m.clone()), exit::NOT_AUTHORIZED, "You are not allowed to register binfmt_misc entries. Ask an administrator to grant the polkit action org.pibuilder.binfmt"),
            (DBusError::InvalidArgs(m.clone()), exit::USAGE, "refused the request: the daemon's words"),
            (DBusError::NotFound(m.clone()), exit::FAILURE, "Not found: the daemon's words"),
            (DBusError::Busy(m.clone()), exit::FAILURE, "busy: the daemon's words. Wait"),
            (DBusError::Conflict(m.clone()), exit::FAILURE, "will not override what it found: the daemon's words"),
            (DBusError::NotSupported(m.clone()), exit::FAILURE, "cannot do that: the daemon's words. Install what is missing (binfmt needs the qemu-user-static package"),
            (DBusError::DockerUnavailable(m.clone()), exit::FAILURE, "Docker engine cannot be reached: the daemon's words. Start it"),
            (DBusError::Cancelled(m.clone()), exit::CANCELLED, "The job was cancelled: the daemon's words."),
            (DBusError::Failed(m.clone()), exit::FAILURE, "Could not register binfmt_misc entries: the daemon's words."),
        ];
        for (error, code, words) in cases {
            let want_name = error.dbus_name();
            let ex = call(&calls::REGISTER_BINFMT, error);
            assert_eq!(ex.name, want_name);
            assert_eq!(ex.exit, code, "{ex:?}");
            assert!(ex.text.contains(words), "{ex:?}");
            let quoted = ex.text.contains(&m) || ex.detail.as_deref() == Some(m.as_str());
            assert!(quoted, "the daemon's message is shown: {ex:?}");
        }
    }

    #[test]
    fn the_zbus_variant_is_covered_too() {
        let ex = call(
            &calls::GET_STATUS,
            DBusError::ZBus(zbus::Error::InputOutput(std::sync::Arc::new(
                io::Error::from(io::ErrorKind::BrokenPipe),
            ))),
        );
        assert_eq!(ex.name, names::DISCONNECTED);
        assert!(
            ex.text.contains("connection to the system bus broke"),
            "{ex:?}"
        );
        let ex = call(
            &calls::GET_STATUS,
            DBusError::ZBus(zbus::Error::InvalidReply),
        );
        assert_eq!(ex.name, names::BAD_REPLY);
        assert!(ex.text.contains("different releases"), "{ex:?}");
        assert_eq!(ex.exit, exit::FAILURE);
    }

    #[test]
    fn not_authorized_says_why_no_password_was_asked() {
        let err = ClientError::Call {
            attempt: &calls::CANCEL,
            error: DBusError::NotAuthorized("no".into()),
        };
        let asked = explain(&err, true);
        let silent = explain(&err, false);
        assert!(asked.text.contains("cancel this job"), "{asked:?}");
        assert!(asked.text.contains(actions::MANAGE));
        assert!(!asked.text.contains("--no-ask-password"));
        assert!(silent.text.contains("--no-ask-password"), "{silent:?}");
        assert_eq!(silent.detail.as_deref(), Some("no"));
    }

    #[test]
    fn bus_errors() {
        let ex = call(
            &calls::GET_STATUS,
            fdo_error(fdo::Error::ServiceUnknown(
                "The name org.pibuilder.PiBuilder1 was not provided by any .service files".into(),
            )),
        );
        assert_eq!(ex.name, "org.freedesktop.DBus.Error.ServiceUnknown");
        assert_eq!(
            ex.text,
            "pi-builder's daemon is not installed or its D-Bus activation file is missing \
             (run `make install` or `make dev-up`)."
        );
        assert!(ex.detail.unwrap().contains("not provided by any .service"));
        assert_eq!(ex.exit, exit::FAILURE);

        let ex = call(
            &calls::REGISTER_BINFMT,
            fdo_error(fdo::Error::AccessDenied("policy".into())),
        );
        assert_eq!(ex.name, "org.freedesktop.DBus.Error.AccessDenied");
        assert!(ex.text.contains("bus policy"), "{ex:?}");
        assert_eq!(ex.exit, exit::NOT_AUTHORIZED);

        let ex = call(
            &calls::REGISTER_BINFMT,
            fdo_error(fdo::Error::InvalidArgs("wrong signature".into())),
        );
        assert_eq!(ex.name, "org.freedesktop.DBus.Error.InvalidArgs");
        assert!(ex.text.contains("different releases"), "{ex:?}");
        assert!(ex.text.contains("wrong signature"), "{ex:?}");
        assert_eq!(ex.exit, exit::FAILURE);

        let ex = call(
            &calls::REGISTER_BINFMT,
            fdo_error(fdo::Error::InteractiveAuthorizationRequired("x".into())),
        );
        assert!(ex.text.contains("authenticate"), "{ex:?}");
        assert_eq!(ex.exit, exit::NOT_AUTHORIZED);

        let ex = call(
            &calls::CANCEL,
            fdo_error(fdo::Error::UnknownObject("no such object".into())),
        );
        assert!(ex.text.contains("There is no such job"), "{ex:?}");
        let ex = call(
            &calls::GET_STATUS,
            fdo_error(fdo::Error::UnknownObject("no such object".into())),
        );
        assert!(ex.text.contains("different releases"), "{ex:?}");

        let ex = call(
            &calls::GET_STATUS,
            fdo_error(fdo::Error::SpawnChildExited("exit 1".into())),
        );
        assert!(ex.text.contains("could not be started: exit 1"), "{ex:?}");
    }

    #[test]
    fn errors_of_unknown_services_keep_their_name() {
        let reply = zbus::message::Message::method_call("/", "Ping")
            .build(&())
            .unwrap();
        let err = zbus::Error::MethodError(
            "org.example.Error.Odd".try_into().unwrap(),
            Some("odd".into()),
            reply,
        );
        let ex = call(&calls::LIST_JOBS, DBusError::from(err));
        assert_eq!(ex.name, "org.example.Error.Odd");
        assert!(ex
            .text
            .contains("Could not list jobs: org.example.Error.Odd: odd"));
    }

    #[test]
    fn connection_failure() {
        let err = ClientError::Connect(zbus::Error::Address("no bus".into()));
        let ex = explain(&err, true);
        assert_eq!(ex.name, names::NO_SERVER);
        assert!(
            ex.text.starts_with("Cannot connect to the system bus"),
            "{ex:?}"
        );
        assert!(ex.text.contains("dbus-daemon --system --fork"));
        assert_eq!(ex.exit, exit::FAILURE);
    }

    #[test]
    fn failed_and_cancelled_jobs() {
        let path = "/org/pibuilder/PiBuilder1/jobs/4".to_owned();
        let failed = ClientError::Job {
            attempt: &calls::REGISTER_BINFMT,
            path: path.clone(),
            state: "failed".into(),
            error: DBusError::from_name(
                "org.pibuilder.PiBuilder1.Error.Conflict",
                "qemu-aarch64 is registered without the F flag".into(),
            ),
        };
        let ex = explain(&failed, true);
        assert_eq!(ex.name, "org.pibuilder.PiBuilder1.Error.Conflict");
        assert!(ex.text.contains("without the F flag"));
        assert_eq!(ex.job, Some((path.clone(), "failed".into())));
        assert_eq!(ex.exit, exit::FAILURE);

        let cancelled = ClientError::Job {
            attempt: &calls::REGISTER_BINFMT,
            path: path.clone(),
            state: "cancelled".into(),
            error: DBusError::from_name("org.pibuilder.PiBuilder1.Error.Cancelled", "".into()),
        };
        let ex = explain(&cancelled, true);
        assert_eq!(ex.text, "The job was cancelled.");
        assert_eq!(ex.exit, exit::CANCELLED);

        let ex = explain(&ClientError::Interrupted { path: Some(path) }, true);
        assert!(ex.text.contains("Stopped waiting for job 4."), "{ex:?}");
        assert_eq!(ex.exit, exit::CANCELLED);
    }

    #[test]
    fn local_errors() {
        let ex = explain(
            &ClientError::DaemonVanished {
                path: "/org/pibuilder/PiBuilder1/jobs/9".into(),
            },
            true,
        );
        assert!(ex.text.contains("job 9"));
        assert_eq!(ex.exit, exit::FAILURE);
    }
}
