//! binfmt_misc as the daemon offers it: request parsing, the register/unregister job, and the
//! status entries for `GetStatus`.

use std::collections::HashMap;
use std::path::PathBuf;

use pib_dbus_interfaces::types::{options as opt, status::binfmt as key, Arch, Operation};
use pib_dbus_interfaces::DBusError;
use zbus::{OwnedVariant, Variant};

use super::{
    register, select_interpreter, status, unregister, BinfmtError, RegisterOutcome,
    UnregisterOutcome,
};
use crate::bus::options::Options;
use crate::bus::Daemon;
use crate::config::BinfmtConfig;
use crate::jobs::JobHandle;

/// The frozen parameters of a binfmt job.
pub struct BinfmtRequest {
    arches: Vec<Arch>,
}

impl BinfmtRequest {
    pub fn parse(options: &Options) -> Result<BinfmtRequest, DBusError> {
        let arches = match options.string(opt::ARCH)? {
            None => Arch::ALL.to_vec(),
            Some(s) => vec![s
                .parse::<Arch>()
                .map_err(|e| DBusError::InvalidArgs(e.to_string()))?],
        };
        Ok(BinfmtRequest { arches })
    }

    /// For polkit details: "arm,aarch64".
    pub fn describe(&self) -> String {
        let names: Vec<&str> = self.arches.iter().map(|a| a.as_str()).collect();
        names.join(",")
    }
}

impl From<BinfmtError> for DBusError {
    fn from(e: BinfmtError) -> DBusError {
        let message = e.to_string();
        match e {
            BinfmtError::Conflict { .. } => DBusError::Conflict(message),
            BinfmtError::NoInterpreter { .. }
            | BinfmtError::InterpreterRefused { .. }
            | BinfmtError::Mount { .. } => DBusError::NotSupported(message),
            BinfmtError::Io { .. } | BinfmtError::Kernel { .. } | BinfmtError::ReadBack { .. } => {
                DBusError::Failed(message)
            }
        }
    }
}

fn configured_interpreter(config: &BinfmtConfig, arch: Arch) -> Option<PathBuf> {
    match arch {
        Arch::Arm => config.arm_interpreter.clone(),
        Arch::Aarch64 => config.aarch64_interpreter.clone(),
    }
}

/// Runs file-system work off the async threads (binfmt_misc writes are synchronous).
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, BinfmtError> + Send + 'static,
) -> Result<T, DBusError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| DBusError::Failed(format!("internal error: {e}")))?
        .map_err(DBusError::from)
}

/// The body of a binfmt-register or binfmt-unregister job.
pub async fn run(
    ctx: &Daemon,
    operation: Operation,
    request: BinfmtRequest,
    job: JobHandle,
) -> Result<String, DBusError> {
    let _one_at_a_time = ctx.binfmt_lock.lock().await;
    let total = request.arches.len();
    let mut results = Vec::with_capacity(total);
    for (done, &arch) in request.arches.iter().enumerate() {
        job.check_cancelled()?;
        job.set_stage(arch.as_str());
        job.set_progress(Some(done as f64 / total as f64));
        let dir = ctx.config.binfmt.dir.clone();
        let result = match operation {
            Operation::BinfmtUnregister => match blocking(move || unregister(&dir, arch)).await? {
                UnregisterOutcome::Unregistered => format!("{arch}: removed pi-builder's entry"),
                UnregisterOutcome::NotRegistered => format!("{arch}: was not registered"),
            },
            _ => {
                let configured = configured_interpreter(&ctx.config.binfmt, arch);
                let interpreter =
                    blocking(move || select_interpreter(arch, configured.as_deref())).await?;
                job.log(format!(
                    "{arch}: interpreter {}",
                    interpreter.resolved().display()
                ));
                let shown = interpreter.resolved().display().to_string();
                match blocking(move || register(&dir, arch, &interpreter)).await? {
                    RegisterOutcome::Registered { replaced: false } => {
                        format!("{arch}: registered {shown} with flags F")
                    }
                    RegisterOutcome::Registered { replaced: true } => {
                        format!("{arch}: replaced an outdated entry; now {shown} with flags F")
                    }
                    RegisterOutcome::AlreadyRegistered => {
                        format!("{arch}: already registered, left unchanged")
                    }
                    RegisterOutcome::ForeignInUse { entry } => format!(
                        "{arch}: handled by another package's entry '{}' ({}, flags '{}'), \
                         which serves containers; left unchanged",
                        entry.name,
                        entry.interpreter.display(),
                        entry.flags
                    ),
                }
            }
        };
        job.log(result.clone());
        results.push(result);
    }
    job.set_progress(Some(1.0));
    Ok(results.join("; "))
}

/// binfmt_misc's state for `GetStatus`: (mounted, one dictionary per machine).
pub async fn status_entries(
    ctx: &Daemon,
) -> Result<(bool, Vec<HashMap<String, OwnedVariant>>), DBusError> {
    let dir = ctx.config.binfmt.dir.clone();
    let st = blocking(move || status(&dir)).await?;
    let owned =
        |v: Variant<'_>| OwnedVariant::try_from(v).map_err(|e| DBusError::Failed(e.to_string()));
    let mut machines = Vec::with_capacity(st.machines.len());
    for m in st.machines {
        let mut d = HashMap::new();
        d.insert(key::ARCH.to_owned(), owned(m.arch.as_str().into())?);
        d.insert(key::STATE.to_owned(), owned(m.state.as_str().into())?);
        d.insert(
            key::NAME.to_owned(),
            owned(m.name.unwrap_or_default().into())?,
        );
        d.insert(
            key::INTERPRETER.to_owned(),
            owned(
                m.interpreter
                    .map(|p| p.display().to_string())
                    .unwrap_or_default()
                    .into(),
            )?,
        );
        d.insert(
            key::FLAGS.to_owned(),
            owned(m.flags.unwrap_or_default().into())?,
        );
        d.insert(key::ENABLED.to_owned(), owned(m.enabled.into())?);
        d.insert(key::USABLE.to_owned(), owned(m.usable.into())?);
        let foreign: Vec<String> = m.foreign.into_iter().map(|e| e.name).collect();
        d.insert(key::FOREIGN.to_owned(), owned(foreign.into())?);
        machines.push(d);
    }
    Ok((st.mounted, machines))
}
