//! A build job: receive the caller's stage context, generate and check the Dockerfile, make
//! sure the base exists, and run Docker's classic builder with live progress.

use std::collections::HashMap;

use bollard::query_parameters::{BuildImageOptions, BuilderVersion};
use futures_util::StreamExt;
use pib_dbus_interfaces::stage::INIT;
use pib_dbus_interfaces::types::result;
use pib_dbus_interfaces::DBusError;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::request::BuildRequest;
use super::{context, dockerfile};
use crate::bus::Daemon;
use crate::fdio::CheckedFd;
use crate::jobs::{JobHandle, Outcome};
use crate::results::{self, label};
use crate::workdir::WorkDir;

/// Build args every build passes (stages declare the ones they read).
fn build_args(req: &BuildRequest, base_image: &str, build_id: &str) -> HashMap<String, String> {
    let mut args: HashMap<String, String> = req.args.clone().into_iter().collect();
    for (k, v) in [
        ("BASE_IMAGE", base_image),
        ("BOARD", req.board.as_str()),
        ("ARCH", req.arch.as_str()),
        ("DISTRO", req.distro.as_str()),
        ("HOSTNAME", &req.hostname),
        ("LOCALE", &req.locale),
        ("TIMEZONE", &req.timezone),
        ("REPO_URL", &req.repo_url),
        ("PIB_BUILD_ID", build_id),
    ] {
        args.insert(k.to_owned(), v.to_owned());
    }
    args
}

fn unique_id() -> String {
    let mut bytes = [0u8; 16];
    if rustix::rand::getrandom(&mut bytes, rustix::rand::GetRandomFlags::empty()).is_err() {
        // Unique enough for cache busting: time and pid.
        return format!("{}-{}", crate::jobs::now_us(), std::process::id());
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Copies the caller's context stream into `path`, bounded in size and time, cancellable.
async fn receive(
    context: CheckedFd,
    path: &std::path::Path,
    limit: u64,
    stall: std::time::Duration,
    job: &JobHandle,
    work: &WorkDir,
) -> Result<u64, DBusError> {
    let mut reader = context
        .into_async_reader()
        .map_err(|e| DBusError::InvalidArgs(e.to_string()))?;
    let mut out = tokio::fs::File::create(path)
        .await
        .map_err(|e| work.io_error("storing the build context", e))?;
    let mut buf = vec![0u8; 256 * 1024];
    let mut total = 0u64;
    loop {
        let n = tokio::select! {
            n = tokio::time::timeout(stall, reader.read(&mut buf)) => match n {
                Ok(Ok(n)) => n,
                Ok(Err(e)) => return Err(DBusError::InvalidArgs(format!("cannot read the build context: {e}"))),
                Err(_) => return Err(DBusError::InvalidArgs(format!(
                    "the build context stream sent nothing for {} s", stall.as_secs()))),
            },
            _ = job.cancelled() => return Err(DBusError::Cancelled("cancelled while receiving the context".into())),
        };
        if n == 0 {
            break;
        }
        total += n as u64;
        if total > limit {
            return Err(DBusError::InvalidArgs(format!(
                "the build context is larger than the limit of {limit} bytes"
            )));
        }
        out.write_all(&buf[..n])
            .await
            .map_err(|e| work.io_error("storing the build context", e))?;
    }
    out.flush()
        .await
        .map_err(|e| work.io_error("storing the build context", e))?;
    Ok(total)
}

/// Runs blocking file work off the async threads.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, DBusError> + Send + 'static,
) -> Result<T, DBusError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| DBusError::Failed(format!("internal error: {e}")))?
}

pub async fn run(
    ctx: &Daemon,
    req: BuildRequest,
    context: CheckedFd,
    owner_uid: u32,
    job: JobHandle,
) -> Result<Outcome, DBusError> {
    let work = WorkDir::create(&ctx.config.state_dir, job.id())?;
    let limit = ctx.config.build.max_context_bytes;

    job.set_stage("context");
    let raw = work.file("client.tar");
    let received = receive(context, &raw, limit, ctx.config.input_stall(), &job, &work).await?;
    job.log(format!("received a build context of {received} bytes"));

    // One bounded pass over the spooled stream: the parts come first (the client sends them
    // first), so the Dockerfile is generated and checked before the rest is rewritten.
    let context_tar = work.file("context.tar");
    let generated = {
        let (raw, context_tar) = (raw.clone(), context_tar.clone());
        let (stages, args) = (req.stages.clone(), req.args.clone());
        blocking(move || {
            let input = std::fs::File::open(&raw)
                .map_err(|e| DBusError::Failed(format!("cannot reopen the context: {e}")))?;
            let mut reader = context::ContextReader::new(std::io::BufReader::new(input), limit);
            let invalid = |e: &dyn std::fmt::Display| DBusError::InvalidArgs(e.to_string());
            let parts = reader.read_parts(&stages).map_err(|e| invalid(&e))?;
            let generated = dockerfile::generate(&parts).map_err(|e| invalid(&e))?;
            dockerfile::check_user_args(&args, &generated.declared_args)
                .map_err(|e| invalid(&e))?;
            let output = std::fs::File::create(&context_tar)
                .map_err(|e| DBusError::Failed(format!("cannot write the context: {e}")))?;
            reader
                .restream_into(std::io::BufWriter::new(output), &generated.text)
                .map_err(|e| invalid(&e))?;
            Ok(generated)
        })
        .await?
    };
    let _ = std::fs::remove_file(&raw);
    job.check_cancelled()?;

    job.set_stage("base");
    let base_image = crate::base::service::for_build(ctx, &req, &job).await?;
    job.check_cancelled()?;

    let docker = ctx.engine.client().await?;
    let reference = results::reference(owner_uid, &req.name);
    let labels = HashMap::from([
        (label::RESULT.to_owned(), "1".to_owned()),
        (label::OWNER_UID.to_owned(), owner_uid.to_string()),
        (label::NAME.to_owned(), req.name.clone()),
        (label::DISTRO.to_owned(), req.distro.to_string()),
        (label::ARCH.to_owned(), req.arch.to_string()),
        (label::BOARD.to_owned(), req.board.to_string()),
        (label::STAGES.to_owned(), req.stages.join(" ")),
        (label::BASE.to_owned(), base_image.clone()),
        (label::HOSTNAME.to_owned(), req.hostname.clone()),
    ]);
    let options = BuildImageOptions {
        dockerfile: "Dockerfile".to_owned(),
        t: Some(reference.clone()),
        nocache: req.no_cache,
        rm: true,
        // Also remove the container of a failed or cancelled step: nothing is left behind.
        forcerm: true,
        buildargs: Some(build_args(&req, &base_image, &unique_id())),
        labels: Some(labels),
        // Builds use the host network: this engine has no bridge, and stages fetch packages.
        networkmode: Some("host".to_owned()),
        version: BuilderVersion::BuilderV1,
        ..Default::default()
    };
    let file = tokio::fs::File::open(&context_tar)
        .await
        .map_err(|e| work.io_error("opening the context", e))?;
    let body = bollard::body_try_stream(tokio_util::io::ReaderStream::new(file));

    job.set_stage(INIT);
    job.set_progress(Some(0.0));
    let mut stream = docker.build_image(options, None, Some(body));
    let (mut steps, mut cached) = (0u32, 0u32);
    let mut image_id = String::new();
    let mut current_stage = String::new();
    loop {
        let item = tokio::select! {
            item = stream.next() => item,
            // Dropping the stream closes the connection; the engine then stops the build and,
            // with forcerm, removes the step's container.
            _ = job.cancelled() => return Err(DBusError::Cancelled("the build was cancelled".into())),
        };
        let Some(item) = item else { break };
        let info = match item {
            Ok(info) => info,
            Err(bollard::errors::Error::DockerStreamError { error }) => {
                return Err(build_failed(&current_stage, &error))
            }
            Err(e) => {
                return Err(DBusError::DockerUnavailable(format!(
                    "the build stopped: {e}"
                )))
            }
        };
        if let Some(detail) = info.error_detail.and_then(|d| d.message) {
            return Err(build_failed(&current_stage, &detail));
        }
        if let Some(id) = info.aux.and_then(|a| a.id) {
            image_id = id;
        }
        let Some(text) = info.stream else { continue };
        for line in text.lines().map(str::trim_end).filter(|l| !l.is_empty()) {
            if let Some((n, m)) = dockerfile::parse_step_line(line) {
                steps = m;
                if let Some(stage) = generated.stage_of_step(n) {
                    if stage != current_stage {
                        current_stage = stage.to_owned();
                        job.set_stage(stage);
                    }
                }
                job.set_progress(Some(f64::from(n.saturating_sub(1)) / f64::from(m.max(1))));
            } else if line.trim() == "---> Using cache" {
                cached += 1;
            }
            job.log(line.to_owned());
        }
    }
    if image_id.is_empty() {
        image_id = docker
            .inspect_image(&reference)
            .await
            .ok()
            .and_then(|i| i.id)
            .ok_or_else(|| DBusError::Failed("the build produced no image".into()))?;
    }
    job.set_progress(Some(1.0));
    Ok(Outcome::new(format!(
        "built {} ({steps} steps, {cached} from cache)",
        req.name
    ))
    .with(result::IMAGE, reference)
    .with(result::ID, image_id)
    .with(result::STEPS, steps)
    .with(result::CACHED, cached))
}

fn build_failed(stage: &str, message: &str) -> DBusError {
    let message = message.trim();
    if stage.is_empty() {
        DBusError::Failed(format!("the build failed: {message}"))
    } else {
        DBusError::Failed(format!("the build failed in stage {stage}: {message}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn build_ids_are_unique() {
        assert_ne!(unique_id(), unique_id());
        assert_eq!(unique_id().len(), 32);
    }
}
