//! `org.pibuilder.PiBuilder1.Manager` at `/org/pibuilder/PiBuilder1`.

use std::collections::HashMap;
use std::sync::Arc;

use pib_dbus_interfaces::actions;
use pib_dbus_interfaces::names::job_path;
use pib_dbus_interfaces::types::{options as opt, status as key, Operation};
use pib_dbus_interfaces::DBusError;
use zbus::message::Header;
use zbus::{interface, OwnedObjectPath, OwnedVariant};

use super::options::Options;
use super::{job_object, variant, Daemon};
use crate::binfmt::service::{self as binfmt, BinfmtRequest};

pub struct Manager {
    ctx: Arc<Daemon>,
}

impl Manager {
    pub fn new(ctx: Arc<Daemon>) -> Manager {
        Manager { ctx }
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
        let job = self.ctx.jobs.create(operation, caller.uid);
        let path = job_object::export(&self.ctx, job.clone()).await?;
        let ctx = self.ctx.clone();
        self.ctx.jobs.run(job, move |handle| async move {
            binfmt::run(&ctx, operation, request, handle).await
        });
        Ok(path)
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
        match crate::docker::probe(&self.ctx.config.docker_socket).await {
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
}
