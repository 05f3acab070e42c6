//! Bases as the daemon offers them: request parsing, the fetch and import jobs, ListBases,
//! and picking the base of a build.

use std::collections::HashMap;

use pib_dbus_interfaces::types::{image as key, options as opt, result, Arch, Board, Distro};
use pib_dbus_interfaces::DBusError;
use zbus::{OwnedVariant, Variant};

use super::{BaseConfig, BaseImage, BaseSpec, Progress};
use crate::build::request::BuildRequest;
use crate::bus::options::Options;
use crate::bus::Daemon;
use crate::fdio::CheckedFd;
use crate::jobs::{JobHandle, Outcome};

pub const FETCH_KEYS: &[&str] = &[opt::DISTRO, opt::ARCH, opt::BOARD, opt::SUITE, opt::REFRESH];
pub const IMPORT_KEYS: &[&str] = &[opt::DISTRO, opt::ARCH, opt::BOARD];

impl Progress for JobHandle {
    fn log(&self, line: String) {
        JobHandle::log(self, line);
    }
    fn stage(&self, s: &str) {
        self.set_stage(s);
    }
    fn bytes(&self, done: u64, total: u64) {
        self.set_bytes(done, total);
    }
}

fn spec_from(options: &Options, suite: Option<String>) -> Result<BaseSpec, DBusError> {
    let spec = BaseSpec {
        distro: options.required_word::<Distro>(opt::DISTRO)?,
        arch: options.required_word::<Arch>(opt::ARCH)?,
        board: options.word::<Board>(opt::BOARD)?,
        suite,
    };
    spec.validate().map_err(DBusError::from)?;
    Ok(spec)
}

fn describe(spec: &BaseSpec) -> String {
    let mut parts = vec![spec.distro.to_string(), spec.arch.to_string()];
    parts.extend(spec.board.map(|b| b.to_string()));
    parts.extend(spec.suite.clone());
    parts.join(" ")
}

/// The frozen parameters of FetchBase.
pub struct FetchRequest {
    spec: BaseSpec,
    refresh: bool,
}

impl FetchRequest {
    pub fn parse(options: &Options) -> Result<FetchRequest, DBusError> {
        Ok(FetchRequest {
            spec: spec_from(options, options.string(opt::SUITE)?)?,
            refresh: options.flag(opt::REFRESH)?,
        })
    }

    pub fn describe(&self) -> String {
        describe(&self.spec)
    }
}

/// The frozen parameters of ImportBase.
pub struct ImportRequest {
    spec: BaseSpec,
}

impl ImportRequest {
    pub fn parse(options: &Options) -> Result<ImportRequest, DBusError> {
        Ok(ImportRequest {
            spec: spec_from(options, None)?,
        })
    }

    pub fn describe(&self) -> String {
        describe(&self.spec)
    }
}

pub fn config(ctx: &Daemon) -> BaseConfig {
    config_from(&ctx.config)
}

pub fn config_from(c: &crate::config::Config) -> BaseConfig {
    BaseConfig {
        arch_mirror: c.base.arch_mirror.clone(),
        debian_mirror: c.base.debian_mirror.clone(),
        debian_suite: c.base.debian_suite.clone(),
        cache_dir: c.cache_dir.join("bases"),
        docker_socket: crate::docker::socket_path(&c.docker),
        stall_timeout: c.input_stall(),
        ..BaseConfig::default()
    }
}

async fn docker(ctx: &Daemon) -> Result<bollard::Docker, DBusError> {
    Ok(ctx.engine.client().await?)
}

fn outcome(image: BaseImage) -> Outcome {
    let how = if image.cached {
        "already there"
    } else {
        "ready"
    };
    Outcome::new(format!("{} {how}", image.name))
        .with(result::IMAGE, image.name)
        .with(result::ID, image.id)
}

pub async fn fetch_job(
    ctx: &Daemon,
    request: FetchRequest,
    job: JobHandle,
) -> Result<Outcome, DBusError> {
    let docker = docker(ctx).await?;
    let image = super::fetch(
        &docker,
        &config(ctx),
        &request.spec,
        request.refresh,
        &job,
        &job.cancel_token(),
    )
    .await?;
    Ok(outcome(image))
}

pub async fn import_job(
    ctx: &Daemon,
    request: ImportRequest,
    tarball: CheckedFd,
    job: JobHandle,
) -> Result<Outcome, DBusError> {
    let docker = docker(ctx).await?;
    let fd = std::os::fd::OwnedFd::from(tarball.into_std());
    let image = super::import_fd(
        &docker,
        &config(ctx),
        &request.spec,
        fd,
        &job,
        &job.cancel_token(),
    )
    .await?;
    Ok(outcome(image))
}

pub async fn list_dicts(ctx: &Daemon) -> Result<Vec<HashMap<String, OwnedVariant>>, DBusError> {
    let docker = docker(ctx).await?;
    let v =
        |x: Variant<'_>| OwnedVariant::try_from(x).map_err(|e| DBusError::Failed(e.to_string()));
    super::list(&docker)
        .await?
        .into_iter()
        .map(|b| {
            Ok(HashMap::from([
                (key::NAME.to_owned(), v(b.name.as_str().into())?),
                (key::ID.to_owned(), v(b.id.as_str().into())?),
                (key::DISTRO.to_owned(), v(b.distro.as_str().into())?),
                (key::ARCH.to_owned(), v(b.arch.as_str().into())?),
                (
                    key::BOARD.to_owned(),
                    v(b.board.map(|x| x.to_string()).unwrap_or_default().into())?,
                ),
                (key::ORIGIN.to_owned(), v(b.origin.as_str().into())?),
                (key::DIGEST.to_owned(), v(b.digest.as_str().into())?),
                (key::CREATED.to_owned(), v(b.created.into())?),
                (key::SIZE.to_owned(), v(b.size.into())?),
            ]))
        })
        .collect()
}

/// The image a build starts FROM: the one it names, or the base for its distro, arch and
/// board, fetched on demand.
pub async fn for_build(
    ctx: &Daemon,
    req: &BuildRequest,
    job: &JobHandle,
) -> Result<String, DBusError> {
    let docker = docker(ctx).await?;
    if let Some(name) = &req.base {
        let bases = super::list(&docker).await?;
        return bases
            .into_iter()
            .find(|b| &b.name == name || b.name.trim_end_matches(":latest") == name)
            .map(|b| b.name)
            .ok_or_else(|| {
                DBusError::NotFound(format!(
                    "no base named {name:?}; see `pib-client base list`"
                ))
            });
    }
    let spec = BaseSpec {
        distro: req.distro,
        arch: req.arch,
        // Debian bases serve every board; Arch Linux ARM has a tarball per board family.
        board: (req.distro == Distro::Arch).then_some(req.board),
        suite: None,
    };
    spec.validate().map_err(DBusError::from)?;
    let image = super::fetch(
        &docker,
        &config(ctx),
        &spec,
        false,
        job,
        &job.cancel_token(),
    )
    .await?;
    job.log(format!("base: {}", image.name));
    Ok(image.name)
}
