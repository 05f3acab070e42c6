//! The daemon on the system bus: objects first, then the name (so no call can arrive at a
//! half-built service), then serve until idle or told to stop.

pub mod job_object;
mod manager;
pub mod options;

use std::sync::Arc;
use std::time::Duration;

use pib_dbus_interfaces::names::{BUS_NAME, MANAGER_PATH};
use pib_dbus_interfaces::types::Operation;
use pib_dbus_interfaces::DBusError;
use tokio::signal::unix::{signal, SignalKind};
use zbus::fdo::{RequestNameFlags, RequestNameReply};
use zbus::{Connection, OwnedVariant, Variant};

use crate::auth::Authorizer;
use crate::config::Config;
use crate::idle::{wait_until_idle, Activity};
use crate::jobs::{JobRegistry, Outcome};

/// Everything the bus objects share.
pub struct Daemon {
    pub config: Config,
    pub conn: Connection,
    pub auth: Authorizer,
    pub jobs: JobRegistry,
    pub activity: Activity,
    pub engine: crate::docker::Engine,
    /// binfmt_misc is one global kernel table: one job changes it at a time.
    pub binfmt_lock: tokio::sync::Mutex<()>,
    /// Devices being written: a second job for one of them is DeviceBusy at once.
    pub busy_devices: crate::flash::busy::BusyDevices,
}

/// How long a stopping daemon waits for cancelled jobs to clean up.
const STOP_GRACE: Duration = Duration::from_secs(30);

pub async fn serve(config: Config) -> anyhow::Result<()> {
    let conn = zbus::connection::Builder::system().build().await?;
    let activity = Activity::new();
    let auth = Authorizer::new(
        &conn,
        Duration::from_secs(config.auth_timeout_secs),
        Duration::from_secs(config.interactive_auth_timeout_secs),
        activity.clone(),
    )
    .await?;
    let engine = crate::docker::Engine::new(config.docker.clone());
    let ctx = Arc::new(Daemon {
        engine,
        jobs: JobRegistry::recording(activity.clone(), config.state_dir.clone()),
        activity: activity.clone(),
        auth,
        conn: conn.clone(),
        config,
        binfmt_lock: tokio::sync::Mutex::new(()),
        busy_devices: Default::default(),
    });
    conn.object_server()
        .at(MANAGER_PATH, manager::Manager::new(ctx.clone()))
        .await?;
    reap_leftovers(&ctx);
    report_interrupted(&ctx).await;

    match conn
        .request_name_with_flags(BUS_NAME, RequestNameFlags::DO_NOT_QUEUE)
        .await?
    {
        RequestNameReply::PrimaryOwner | RequestNameReply::AlreadyOwner => {}
        other => anyhow::bail!("cannot own {BUS_NAME} ({other:?}): another pib-daemon runs"),
    }
    tracing::info!(
        "pib-daemon {} serving {BUS_NAME}",
        env!("CARGO_PKG_VERSION")
    );

    let idle = async {
        match ctx.config.idle_timeout() {
            Some(t) => wait_until_idle(&activity, t, || ctx.jobs.running() > 0).await,
            None => std::future::pending().await,
        }
    };
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let stopping = tokio::select! {
        _ = idle => { tracing::info!("idle, exiting"); false }
        _ = term.recv() => { tracing::info!("SIGTERM, exiting"); true }
        _ = int.recv() => { tracing::info!("SIGINT, exiting"); true }
    };

    // Give the name up first: from here on the bus starts a fresh instance for new callers,
    // while calls already addressed to us are still answered.
    if let Err(e) = conn.release_name(BUS_NAME).await {
        tracing::warn!("cannot release {BUS_NAME}: {e}");
    }
    if stopping {
        ctx.jobs.cancel_all();
    }
    let deadline = tokio::time::Instant::now() + STOP_GRACE;
    while ctx.jobs.running() > 0 && (!stopping || tokio::time::Instant::now() < deadline) {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Let replies and final signals of the last calls leave the socket.
    tokio::time::sleep(Duration::from_millis(200)).await;
    Ok(())
}

/// Crash-only (DESIGN §3 rule 7): whatever a killed predecessor left, this start removes.
/// Jobs a killed daemon left unfinished, reported as failed jobs of their owners.
async fn report_interrupted(ctx: &Arc<Daemon>) {
    for w in crate::jobs::record::take_interrupted(&ctx.config.state_dir) {
        let Ok(operation) = w.operation.parse::<Operation>() else {
            tracing::warn!("a note names an unknown operation {:?}", w.operation);
            continue;
        };
        tracing::warn!(OPERATION = %operation, CALLER_UID = w.owner_uid, DEVICE = w.device.as_deref().unwrap_or(""), "a {operation} job was interrupted");
        let job = ctx.jobs.create(operation, w.owner_uid);
        if job_object::export(ctx, job.clone()).await.is_err() {
            continue;
        }
        let error = interrupted_error(operation, &w);
        ctx.jobs
            .run(job, move |_| async move { Err::<Outcome, _>(error) });
    }
}

fn interrupted_error(operation: Operation, w: &crate::jobs::record::Interrupted) -> DBusError {
    match (&w.device, operation) {
        (Some(device), Operation::Flash) => DBusError::DeviceLost(format!(
            "interrupted: the daemon stopped while writing {device}; the card is incomplete \
             (its partition table was not written) and must be written again"
        )),
        (Some(device), _) => DBusError::DeviceLost(format!(
            "interrupted: the daemon stopped during the {operation} of {device}; the card must \
             be done again"
        )),
        (None, _) => DBusError::Failed(format!(
            "interrupted: the daemon stopped during this {operation} job; what it had made so \
             far was removed, run it again"
        )),
    }
}

fn reap_leftovers(ctx: &Arc<Daemon>) {
    let reaped = crate::workdir::reap_stale(&ctx.config.state_dir);
    if reaped > 0 {
        tracing::info!("removed {reaped} work directories of an earlier run");
    }
    // Docker may be slow or absent; that must not delay serving the bus.
    let ctx = ctx.clone();
    tokio::spawn(async move {
        let Ok(docker) = ctx.engine.client().await else {
            return;
        };
        match crate::shell::reap_leftovers(&docker).await {
            Ok(0) => {}
            Ok(n) => tracing::info!("removed {n} shell containers of an earlier run"),
            Err(e) => tracing::warn!("cannot look for leftover containers: {e}"),
        }
        match crate::image::export::reap_leftovers(&docker).await {
            Ok(0) => {}
            Ok(n) => tracing::info!("removed {n} export containers of an earlier run"),
            Err(e) => tracing::warn!("cannot look for leftover export containers: {e}"),
        }
        match crate::base::reap(&docker, &crate::base::service::config(&ctx)).await {
            Ok(0) => {}
            Ok(n) => tracing::info!("removed {n} unfinished base imports of an earlier run"),
            Err(e) => tracing::warn!("cannot look for unfinished base imports: {e}"),
        }
    });
}

/// Wraps a value for an `a{sv}` reply.
fn variant<'a>(value: impl Into<Variant<'a>>) -> Result<OwnedVariant, DBusError> {
    OwnedVariant::try_from(value.into()).map_err(|e| DBusError::Failed(e.to_string()))
}
