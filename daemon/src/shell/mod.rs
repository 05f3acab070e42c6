//! `pib-client shell`: a command, or an interactive shell, in a throwaway container of a
//! built image, wired to the caller's own stdin/stdout/stderr (fds it passed over the bus).

use std::collections::HashMap;

use bollard::container::LogOutput;
use bollard::models::{ContainerCreateBody, HostConfig};
use bollard::query_parameters::{
    AttachContainerOptions, CreateContainerOptions, KillContainerOptions, ResizeContainerTTYOptions,
};
use bollard::Docker;

use crate::docker::containers;
use futures_util::StreamExt;
use pib_dbus_interfaces::types::result;
use pib_dbus_interfaces::DBusError;
use tokio::io::AsyncWriteExt;

use crate::fdio::{CheckedFd, FdWriter};
use crate::jobs::{JobHandle, Outcome};
use crate::results::{label, ImageInfo};

/// Label on shell containers, so leftovers of a killed daemon can be found and removed.
pub const SHELL_LABEL: &str = "org.pibuilder.shell";

/// What to run and how.
pub struct ShellRequest {
    pub command: Vec<String>,
    pub tty: bool,
    pub rows: u16,
    pub cols: u16,
}

/// The caller's three descriptors, already checked.
pub struct ShellFds {
    pub stdin: CheckedFd,
    pub stdout: CheckedFd,
    pub stderr: CheckedFd,
}

/// An interactive shell: bash where the image has it.
const LOGIN_SHELL: &str = "if [ -x /bin/bash ]; then exec /bin/bash -l; else exec /bin/sh -l; fi";

fn failed(what: &str, e: bollard::errors::Error) -> DBusError {
    DBusError::DockerUnavailable(format!("{what}: {e}"))
}

pub async fn run(
    docker: &Docker,
    image: &ImageInfo,
    request: ShellRequest,
    fds: ShellFds,
    job: &JobHandle,
) -> Result<Outcome, DBusError> {
    let name = format!("{}{}", containers::own_prefix("shell"), job.id());
    let cmd = if request.command.is_empty() {
        vec![
            "/bin/sh".to_owned(),
            "-c".to_owned(),
            LOGIN_SHELL.to_owned(),
        ]
    } else {
        request.command.clone()
    };
    let config = ContainerCreateBody {
        image: Some(image.id.clone()),
        cmd: Some(cmd),
        tty: Some(request.tty),
        open_stdin: Some(true),
        stdin_once: Some(true),
        attach_stdin: Some(true),
        attach_stdout: Some(true),
        attach_stderr: Some(true),
        labels: Some(HashMap::from([
            (SHELL_LABEL.to_owned(), "1".to_owned()),
            (label::OWNER_UID.to_owned(), image.owner_uid.to_string()),
        ])),
        // The daemon decides container options (DESIGN §3 rule 5): no network, nothing from
        // the host mounted, no extra privileges.
        host_config: Some(HostConfig {
            network_mode: Some("none".to_owned()),
            ..Default::default()
        }),
        ..Default::default()
    };
    let created = docker
        .create_container(
            Some(CreateContainerOptions {
                name: Some(name.clone()),
                ..Default::default()
            }),
            config,
        )
        .await
        .map_err(|e| failed("cannot create the shell container", e))?;
    job.log(format!("container {name} from {}", image.reference));
    let result = attach_and_wait(docker, &created.id, &request, fds, job).await;
    if let Err(e) = containers::remove(docker, &created.id).await {
        tracing::warn!(
            JOB_ID = job.id(),
            "cannot remove shell container {name}: {e}"
        );
    }
    let code = result?;
    Ok(
        Outcome::new(format!("the command exited with status {code}"))
            .with(result::EXIT_CODE, code),
    )
}

async fn attach_and_wait(
    docker: &Docker,
    id: &str,
    request: &ShellRequest,
    fds: ShellFds,
    job: &JobHandle,
) -> Result<i32, DBusError> {
    let bad_fd = |e: crate::fdio::FdError| DBusError::InvalidArgs(e.to_string());
    let mut stdin = fds.stdin.into_async_reader().map_err(bad_fd)?;
    let mut stdout = fds.stdout.into_async_writer().map_err(bad_fd)?;
    let mut stderr = fds.stderr.into_async_writer().map_err(bad_fd)?;

    let attached = docker
        .attach_container(
            id,
            Some(AttachContainerOptions {
                stream: true,
                stdin: true,
                stdout: true,
                stderr: true,
                ..Default::default()
            }),
        )
        .await
        .map_err(|e| failed("cannot attach to the shell container", e))?;
    let mut input = attached.input;
    let mut output = attached.output;
    docker
        .start_container(id, None)
        .await
        .map_err(|e| failed("cannot start the shell container", e))?;
    if request.tty && request.rows > 0 && request.cols > 0 {
        let size = ResizeContainerTTYOptions {
            h: i32::from(request.rows),
            w: i32::from(request.cols),
        };
        if let Err(e) = docker.resize_container_tty(id, size).await {
            tracing::debug!("cannot size the container terminal: {e}");
        }
    }

    let feed = async move {
        // End of the caller's input closes the container's stdin (a pipe-fed command sees
        // EOF); errors just stop feeding.
        let _ = tokio::io::copy(&mut stdin, &mut input).await;
        let _ = input.shutdown().await;
    };
    let drain = async move {
        while let Some(item) = output.next().await {
            let Ok(item) = item else { break };
            let (sink, bytes): (&mut FdWriter, _) = match item {
                LogOutput::StdErr { message } => (&mut stderr, message),
                LogOutput::StdOut { message } | LogOutput::Console { message } => {
                    (&mut stdout, message)
                }
                LogOutput::StdIn { .. } => continue,
            };
            if sink.write_all(&bytes).await.is_err() {
                break;
            }
        }
    };
    let feeding = tokio::spawn(feed);
    let draining = tokio::spawn(drain);

    let mut waiting = docker.wait_container(id, None);
    let code = tokio::select! {
        status = waiting.next() => match status {
            Some(Ok(r)) => r.status_code as i32,
            Some(Err(bollard::errors::Error::DockerContainerWaitError { code, .. })) => code as i32,
            Some(Err(e)) => return Err(failed("lost the shell container", e)),
            None => return Err(DBusError::Failed("the shell container vanished".into())),
        },
        _ = job.cancelled() => {
            let _ = docker.kill_container(id, None::<KillContainerOptions>).await;
            feeding.abort();
            draining.abort();
            return Err(DBusError::Cancelled("the shell was cancelled".into()));
        }
    };
    // The output stream ends with the container; give the last bytes a moment to go out.
    let _ = tokio::time::timeout(std::time::Duration::from_secs(5), draining).await;
    feeding.abort();
    Ok(code)
}

/// Removes shell containers left by an earlier daemon process that was killed (crash-only:
/// every container the daemon makes carries [`SHELL_LABEL`]).
pub async fn reap_leftovers(docker: &Docker) -> Result<usize, bollard::errors::Error> {
    containers::reap(docker, SHELL_LABEL, "shell").await
}
