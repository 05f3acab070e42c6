//! `org.pibuilder.PiBuilder1.Manager` at `/org/pibuilder/PiBuilder1`.

use std::collections::HashMap;
use std::os::fd::OwnedFd;
use std::sync::Arc;

use pib_dbus_interfaces::actions;
use pib_dbus_interfaces::names::job_path;
use pib_dbus_interfaces::types::{image as img, options as opt, result, status as key, Operation};
use pib_dbus_interfaces::DBusError;
use zbus::message::Header;
use zbus::{interface, OwnedObjectPath, OwnedVariant};

use super::options::Options;
use super::{job_object, variant, Daemon};
use crate::auth::Caller;
use crate::base::service as base;
use crate::binfmt::service::{self as binfmt, BinfmtRequest};
use crate::build::request::{self, BuildRequest};
use crate::fdio::{self, Access, CheckedFd, Kinds};
use crate::flash::request::{self as flash_request, FlashRequest};
use crate::image::request::{self as image_request, ImageRequest};
use crate::jobs::{JobHandle, Outcome};
use crate::results::{self, ImageInfo};
use crate::scan::request::ScanRequest;
use crate::shell::{ShellFds, ShellRequest};
use crate::workdir::WorkDir;

/// Takes a caller's fd off the message and checks it (before authorization).
fn caller_fd(
    fd: zbus::Fd<'_>,
    what: &'static str,
    access: Access,
    kinds: Kinds,
) -> Result<CheckedFd, DBusError> {
    let fd: OwnedFd = fd
        .try_to_owned()
        .and_then(OwnedFd::try_from)
        .map_err(|e| DBusError::InvalidArgs(format!("cannot take the {what} descriptor: {e}")))?;
    fdio::check(fd, what, access, kinds).map_err(|e| DBusError::InvalidArgs(e.to_string()))
}

fn image_dict(i: &ImageInfo) -> Result<HashMap<String, OwnedVariant>, DBusError> {
    Ok(HashMap::from([
        (img::NAME.to_owned(), variant(i.name.as_str())?),
        (img::ID.to_owned(), variant(i.id.as_str())?),
        (img::OWNER_UID.to_owned(), variant(i.owner_uid)?),
        (img::DISTRO.to_owned(), variant(i.distro.as_str())?),
        (img::ARCH.to_owned(), variant(i.arch.as_str())?),
        (img::BOARD.to_owned(), variant(i.board.as_str())?),
        (img::STAGES.to_owned(), variant(i.stages.clone())?),
        (img::CREATED.to_owned(), variant(i.created_us)?),
        (img::SIZE.to_owned(), variant(i.size)?),
    ]))
}

pub struct Manager {
    ctx: Arc<Daemon>,
}

impl Manager {
    pub fn new(ctx: Arc<Daemon>) -> Manager {
        Manager { ctx }
    }

    /// Creates a job for `caller`, exports it and runs `work` in the background.
    async fn start_job<F, Fut>(
        &self,
        operation: Operation,
        caller: &Caller,
        work: F,
    ) -> Result<OwnedObjectPath, DBusError>
    where
        F: FnOnce(Arc<Daemon>, JobHandle) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = Result<Outcome, DBusError>> + Send + 'static,
    {
        let job = self.ctx.jobs.create(operation, caller.uid);
        let path = job_object::export(&self.ctx, job.clone()).await?;
        let ctx = self.ctx.clone();
        self.ctx.jobs.run(job, move |handle| work(ctx, handle));
        Ok(path)
    }

    /// Whether the caller may act on something `owner_uid` made: their own, root, or with
    /// org.pibuilder.manage (checked without prompting).
    async fn may_touch(&self, header: &Header<'_>, caller: &Caller, owner_uid: u32) -> bool {
        caller.uid == owner_uid
            || caller.uid == 0
            || self.ctx.auth.holds(header, actions::MANAGE).await
    }

    async fn docker(&self) -> Result<bollard::Docker, DBusError> {
        Ok(self.ctx.engine.client().await?)
    }

    /// Finds an image the caller may use.
    async fn image_for(
        &self,
        header: &Header<'_>,
        caller: &Caller,
        name: &str,
    ) -> Result<ImageInfo, DBusError> {
        let docker = self.docker().await?;
        let any = caller.uid == 0 || self.ctx.auth.holds(header, actions::MANAGE).await;
        results::find(&docker, caller.uid, name, any).await
    }

    /// Checks and authorizes each named device for a write of `image_size` bytes (0 when
    /// unknown), and claims it; any refusal refuses the whole call before anything is written.
    async fn choose_devices(
        &self,
        header: &Header<'_>,
        devices: &[String],
        image_size: u64,
    ) -> Result<(Caller, Vec<crate::flash::run::Chosen>), DBusError> {
        crate::flash::request::check_devices(devices)?;
        let mut disks = Vec::new();
        for name in devices {
            let disk = crate::device::service::inspect(&self.ctx, name, image_size).await?;
            if disks
                .iter()
                .any(|d: &crate::device::rules::Disk| d.node == disk.node)
            {
                return Err(DBusError::InvalidArgs(format!(
                    "{name} is the same device as another one named"
                )));
            }
            disks.push(disk);
        }
        let mut caller = None;
        for disk in &disks {
            let details = crate::device::service::details(disk);
            let details: Vec<(&str, &str)> =
                details.iter().map(|(k, v)| (*k, v.as_str())).collect();
            caller = Some(self.ctx.auth.authorize(header, None, &details).await?);
            if let crate::device::rules::Verdict::NeedsSystemGrant(_) = disk.verdict {
                self.ctx
                    .auth
                    .authorize_extra(header, actions::FLASH_SYSTEM_DEVICE, &details)
                    .await?;
            }
        }
        let caller = caller.ok_or_else(|| DBusError::InvalidArgs("no device given".into()))?;
        let mut chosen = Vec::new();
        for disk in disks {
            let dev = (disk.identity.major, disk.identity.minor);
            let claim = self.ctx.busy_devices.claim(dev).ok_or_else(|| {
                DBusError::DeviceBusy(format!(
                    "{} is being written by another job",
                    disk.node.display()
                ))
            })?;
            chosen.push(crate::flash::run::Chosen {
                disk,
                _claim: claim,
            });
        }
        Ok((caller, chosen))
    }

    async fn binfmt_job(
        &self,
        header: &Header<'_>,
        options: HashMap<String, OwnedVariant>,
        operation: Operation,
    ) -> Result<OwnedObjectPath, DBusError> {
        self.ctx.activity.touch();
        let request = BinfmtRequest::parse(&Options::new(options, &[opt::ARCH])?)?;
        let arches = request.describe();
        let caller = self
            .ctx
            .auth
            .authorize(header, None, &[("arch", &arches)])
            .await?;
        self.start_job(operation, &caller, move |ctx, handle| async move {
            binfmt::run(&ctx, operation, request, handle)
                .await
                .map(Outcome::new)
        })
        .await
    }
}

#[interface(name = "org.pibuilder.PiBuilder1.Manager")]
impl Manager {
    #[zbus(property(emits_changed_signal = "const"))]
    fn version(&self) -> String {
        env!("CARGO_PKG_VERSION").to_owned()
    }

    #[zbus(out_args("status"))]
    async fn get_status(
        &self,
        #[zbus(header)] header: Header<'_>,
    ) -> Result<HashMap<String, OwnedVariant>, DBusError> {
        self.ctx.activity.touch();
        self.ctx.auth.authorize(&header, None, &[]).await?;
        let mut status = HashMap::new();
        status.insert(key::VERSION.into(), variant(env!("CARGO_PKG_VERSION"))?);
        match self.ctx.engine.probe().await {
            Ok(info) => {
                status.insert(key::DOCKER_REACHABLE.into(), variant(true)?);
                status.insert(key::DOCKER_VERSION.into(), variant(info.version)?);
                status.insert(key::DOCKER_API_VERSION.into(), variant(info.api_version)?);
            }
            Err(e) => {
                status.insert(key::DOCKER_REACHABLE.into(), variant(false)?);
                status.insert(key::DOCKER_ERROR.into(), variant(e.to_string())?);
            }
        }
        let (mounted, machines) = binfmt::status_entries(&self.ctx).await?;
        status.insert(key::BINFMT_MOUNTED.into(), variant(mounted)?);
        status.insert(key::BINFMT.into(), variant(machines)?);
        status.insert(
            key::RUNNING_JOBS.into(),
            variant(self.ctx.jobs.running() as u32)?,
        );
        Ok(status)
    }

    #[zbus(out_args("job"))]
    async fn register_binfmt(
        &self,
        #[zbus(header)] header: Header<'_>,
        options: HashMap<String, OwnedVariant>,
    ) -> Result<OwnedObjectPath, DBusError> {
        self.binfmt_job(&header, options, Operation::BinfmtRegister)
            .await
    }

    #[zbus(out_args("job"))]
    async fn unregister_binfmt(
        &self,
        #[zbus(header)] header: Header<'_>,
        options: HashMap<String, OwnedVariant>,
    ) -> Result<OwnedObjectPath, DBusError> {
        self.binfmt_job(&header, options, Operation::BinfmtUnregister)
            .await
    }

    #[zbus(out_args("jobs"))]
    async fn list_jobs(
        &self,
        #[zbus(header)] header: Header<'_>,
    ) -> Result<Vec<OwnedObjectPath>, DBusError> {
        self.ctx.activity.touch();
        let caller = self.ctx.auth.authorize(&header, None, &[]).await?;
        let see_all = caller.uid == 0 || self.ctx.auth.holds(&header, actions::MANAGE).await;
        self.ctx
            .jobs
            .all()
            .into_iter()
            .filter(|j| see_all || j.owner_uid == caller.uid)
            .map(|j| {
                OwnedObjectPath::try_from(job_path(j.id))
                    .map_err(|e| DBusError::Failed(e.to_string()))
            })
            .collect()
    }

    #[zbus(out_args("bases"))]
    async fn list_bases(
        &self,
        #[zbus(header)] header: Header<'_>,
    ) -> Result<Vec<HashMap<String, OwnedVariant>>, DBusError> {
        self.ctx.activity.touch();
        self.ctx.auth.authorize(&header, None, &[]).await?;
        base::list_dicts(&self.ctx).await
    }

    #[zbus(out_args("job"))]
    async fn fetch_base(
        &self,
        #[zbus(header)] header: Header<'_>,
        options: HashMap<String, OwnedVariant>,
    ) -> Result<OwnedObjectPath, DBusError> {
        self.ctx.activity.touch();
        let request = base::FetchRequest::parse(&Options::new(options, base::FETCH_KEYS)?)?;
        let caller = self
            .ctx
            .auth
            .authorize(&header, None, &[("base", &request.describe())])
            .await?;
        self.start_job(Operation::FetchBase, &caller, move |ctx, job| async move {
            base::fetch_job(&ctx, request, job).await
        })
        .await
    }

    #[zbus(out_args("job"))]
    async fn import_base(
        &self,
        #[zbus(header)] header: Header<'_>,
        tarball: zbus::Fd<'_>,
        options: HashMap<String, OwnedVariant>,
    ) -> Result<OwnedObjectPath, DBusError> {
        self.ctx.activity.touch();
        let tarball = caller_fd(tarball, "tarball", Access::Read, Kinds::PIPE_OR_FILE)?;
        let request = base::ImportRequest::parse(&Options::new(options, base::IMPORT_KEYS)?)?;
        let caller = self
            .ctx
            .auth
            .authorize(&header, None, &[("base", &request.describe())])
            .await?;
        self.start_job(Operation::ImportBase, &caller, move |ctx, job| async move {
            base::import_job(&ctx, request, tarball, job).await
        })
        .await
    }

    #[zbus(out_args("job"))]
    async fn build(
        &self,
        #[zbus(header)] header: Header<'_>,
        context: zbus::Fd<'_>,
        options: HashMap<String, OwnedVariant>,
    ) -> Result<OwnedObjectPath, DBusError> {
        self.ctx.activity.touch();
        let context = caller_fd(context, "context", Access::Read, Kinds::PIPE_OR_FILE)?;
        let request = BuildRequest::parse(&Options::new(options, request::KEYS)?)?;
        let caller = self
            .ctx
            .auth
            .authorize(&header, None, &[("name", &request.name)])
            .await?;
        let owner = caller.uid;
        self.start_job(Operation::Build, &caller, move |ctx, job| async move {
            crate::build::run::run(&ctx, request, context, owner, job).await
        })
        .await
    }

    #[zbus(out_args("images"))]
    async fn list_images(
        &self,
        #[zbus(header)] header: Header<'_>,
    ) -> Result<Vec<HashMap<String, OwnedVariant>>, DBusError> {
        self.ctx.activity.touch();
        let caller = self.ctx.auth.authorize(&header, None, &[]).await?;
        let see_all = caller.uid == 0 || self.ctx.auth.holds(&header, actions::MANAGE).await;
        let docker = self.docker().await?;
        results::list(&docker, (!see_all).then_some(caller.uid))
            .await?
            .iter()
            .map(image_dict)
            .collect()
    }

    async fn remove_image(
        &self,
        #[zbus(header)] header: Header<'_>,
        name: String,
    ) -> Result<(), DBusError> {
        self.ctx.activity.touch();
        results::check_lookup_name(&name)?;
        let caller = self
            .ctx
            .auth
            .authorize(&header, None, &[("name", &name)])
            .await?;
        // Others' images are only found for root and holders of org.pibuilder.manage.
        let image = self.image_for(&header, &caller, &name).await?;
        results::remove(&self.docker().await?, &image).await
    }

    #[zbus(out_args("job"))]
    async fn clean(
        &self,
        #[zbus(header)] header: Header<'_>,
        options: HashMap<String, OwnedVariant>,
    ) -> Result<OwnedObjectPath, DBusError> {
        self.ctx.activity.touch();
        let options = Options::new(options, &[opt::ALL_USERS, opt::BASES])?;
        let (all_users, bases) = (options.flag(opt::ALL_USERS)?, options.flag(opt::BASES)?);
        let caller = self.ctx.auth.authorize(&header, None, &[]).await?;
        if (all_users || bases) && !self.may_touch(&header, &caller, u32::MAX).await {
            return Err(DBusError::NotAuthorized(
                "cleaning other users' images or the shared bases needs org.pibuilder.manage"
                    .into(),
            ));
        }
        let uid = caller.uid;
        self.start_job(Operation::Clean, &caller, move |ctx, job| async move {
            let docker = ctx.engine.client().await?;
            let mut removed = 0u32;
            for image in results::list(&docker, (!all_users).then_some(uid)).await? {
                job.check_cancelled()?;
                match results::remove(&docker, &image).await {
                    Ok(()) => {
                        removed += 1;
                        job.log(format!("removed {} (user {})", image.name, image.owner_uid));
                    }
                    Err(e) => job.log(format!("kept {}: {}", image.name, e.message())),
                }
            }
            if bases {
                removed += results::remove_labelled(&docker, crate::base::labels::BASE).await?;
            }
            let (pruned, reclaimed) = results::prune_untagged(&docker).await?;
            removed += pruned;
            Ok(Outcome::new(format!(
                "removed {removed} images, reclaimed {reclaimed} bytes"
            ))
            .with(result::REMOVED, removed)
            .with(result::RECLAIMED, reclaimed))
        })
        .await
    }

    #[allow(clippy::too_many_arguments)]
    #[zbus(out_args("job"))]
    async fn shell(
        &self,
        #[zbus(header)] header: Header<'_>,
        name: String,
        command: Vec<String>,
        stdin: zbus::Fd<'_>,
        stdout: zbus::Fd<'_>,
        stderr: zbus::Fd<'_>,
        options: HashMap<String, OwnedVariant>,
    ) -> Result<OwnedObjectPath, DBusError> {
        self.ctx.activity.touch();
        let fds = ShellFds {
            stdin: caller_fd(stdin, "stdin", Access::Read, Kinds::STREAM)?,
            stdout: caller_fd(stdout, "stdout", Access::Write, Kinds::STREAM)?,
            stderr: caller_fd(stderr, "stderr", Access::Write, Kinds::STREAM)?,
        };
        let options = Options::new(options, &[opt::TTY, opt::ROWS, opt::COLS])?;
        if command.len() > 4096 || command.iter().any(|a| a.contains('\0') || a.len() > 65536) {
            return Err(DBusError::InvalidArgs(
                "the command has too many or too long arguments, or a NUL byte".into(),
            ));
        }
        let clamp = |v: Option<u32>| v.unwrap_or(0).min(u32::from(u16::MAX)) as u16;
        let request = ShellRequest {
            command,
            tty: options.flag(opt::TTY)?,
            rows: clamp(options.u32(opt::ROWS)?),
            cols: clamp(options.u32(opt::COLS)?),
        };
        results::check_lookup_name(&name)?;
        let caller = self
            .ctx
            .auth
            .authorize(&header, None, &[("name", &name)])
            .await?;
        let image = self.image_for(&header, &caller, &name).await?;
        self.start_job(Operation::Shell, &caller, move |ctx, job| async move {
            let docker = ctx.engine.client().await?;
            crate::shell::run(&docker, &image, request, fds, &job).await
        })
        .await
    }

    #[zbus(out_args("jobs"))]
    async fn flash(
        &self,
        #[zbus(header)] header: Header<'_>,
        image: zbus::Fd<'_>,
        devices: Vec<String>,
        options: HashMap<String, OwnedVariant>,
    ) -> Result<Vec<OwnedObjectPath>, DBusError> {
        self.ctx.activity.touch();
        let image = caller_fd(image, "image", Access::Read, Kinds::PIPE_OR_FILE)?;
        let request = FlashRequest::parse(&Options::new(options, flash_request::KEYS)?)?;
        crate::flash::request::check_devices(&devices)?;
        let image = image
            .into_blocking_reader()
            .map_err(|e| DBusError::InvalidArgs(e.to_string()))?;
        let image = std::fs::File::from(image);
        let size = crate::flash::run::size_needed(&image, &request);
        let (caller, chosen) = self.choose_devices(&header, &devices, size).await?;
        crate::flash::run::start(
            &self.ctx,
            caller.uid,
            chosen,
            crate::flash::run::ready(crate::flash::run::Source::Caller(image)),
            request,
            Operation::Flash,
        )
        .await
    }

    #[zbus(out_args("jobs"))]
    async fn install(
        &self,
        #[zbus(header)] header: Header<'_>,
        name: String,
        devices: Vec<String>,
        options: HashMap<String, OwnedVariant>,
    ) -> Result<Vec<OwnedObjectPath>, DBusError> {
        self.ctx.activity.touch();
        let layout_keys = image_request::LAYOUT_KEYS;
        let keys: Vec<&str> = layout_keys
            .iter()
            .chain([opt::VERIFY, opt::EJECT].iter())
            .copied()
            .collect();
        let mut options = Options::new(options, &keys)?;
        let flash = FlashRequest::parse(&options)?;
        options.retain(layout_keys);
        let layout = ImageRequest::parse(&options)?;
        results::check_lookup_name(&name)?;
        crate::flash::request::check_devices(&devices)?;
        let (caller, chosen) = self.choose_devices(&header, &devices, 0).await?;
        let image = self.image_for(&header, &caller, &name).await?;
        let maker: crate::flash::run::SourceMaker = Box::new(move |ctx, job| {
            Box::pin(async move {
                let work = WorkDir::create(&ctx.config.state_dir, job.id())?;
                let (file, _plan) =
                    crate::image::run::assemble_disk(&ctx, &work, &image, &layout, &job).await?;
                Ok(crate::flash::run::Source::Made {
                    file,
                    _keep: Box::new(work),
                })
            })
        });
        crate::flash::run::start(
            &self.ctx,
            caller.uid,
            chosen,
            maker,
            flash,
            Operation::Flash,
        )
        .await
    }

    #[zbus(out_args("job"))]
    async fn format_device(
        &self,
        #[zbus(header)] header: Header<'_>,
        device: String,
        options: HashMap<String, OwnedVariant>,
    ) -> Result<OwnedObjectPath, DBusError> {
        self.ctx.activity.touch();
        let options = Options::new(options, &[opt::BOOT_SIZE])?;
        let boot_size = ImageRequest::parse(&options)?.boot_size;
        let (caller, mut chosen) = self
            .choose_devices(&header, std::slice::from_ref(&device), 0)
            .await?;
        let chosen = chosen.remove(0);
        self.start_job(Operation::Format, &caller, move |_ctx, job| async move {
            crate::flash::format::run(chosen, boot_size, job).await
        })
        .await
    }

    #[zbus(out_args("devices"))]
    async fn list_devices(
        &self,
        #[zbus(header)] header: Header<'_>,
        options: HashMap<String, OwnedVariant>,
    ) -> Result<Vec<HashMap<String, OwnedVariant>>, DBusError> {
        self.ctx.activity.touch();
        let options = Options::new(options, &[opt::ALL])?;
        let all = options.flag(opt::ALL)?;
        self.ctx.auth.authorize(&header, None, &[]).await?;
        crate::device::service::list(&self.ctx, all).await
    }

    #[zbus(out_args("job"))]
    async fn scan(
        &self,
        #[zbus(header)] header: Header<'_>,
        options: HashMap<String, OwnedVariant>,
    ) -> Result<OwnedObjectPath, DBusError> {
        self.ctx.activity.touch();
        let request = ScanRequest::parse(&Options::new(options, crate::scan::request::KEYS)?)?;
        request.check_interfaces()?;
        let caller = self
            .ctx
            .auth
            .authorize(&header, None, &[("interfaces", &request.describe())])
            .await?;
        self.start_job(Operation::Scan, &caller, move |ctx, job| async move {
            crate::scan::run(&ctx, request, job).await
        })
        .await
    }

    #[zbus(out_args("job"))]
    async fn make_disk_image(
        &self,
        #[zbus(header)] header: Header<'_>,
        name: String,
        output: zbus::Fd<'_>,
        options: HashMap<String, OwnedVariant>,
    ) -> Result<OwnedObjectPath, DBusError> {
        self.ctx.activity.touch();
        let output = caller_fd(output, "output", Access::Write, Kinds::PIPE_OR_FILE)?;
        if output.appends() {
            return Err(DBusError::InvalidArgs(
                "the output descriptor is open for appending; open it for plain writing".into(),
            ));
        }
        let request = ImageRequest::parse(&Options::new(options, &image_request::keys())?)?;
        results::check_lookup_name(&name)?;
        let caller = self
            .ctx
            .auth
            .authorize(&header, None, &[("name", &name)])
            .await?;
        let image = self.image_for(&header, &caller, &name).await?;
        self.start_job(Operation::DiskImage, &caller, move |ctx, job| async move {
            crate::image::run::run(&ctx, image, request, output, job).await
        })
        .await
    }
}
