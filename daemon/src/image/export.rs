//! The container's filesystem as a tar stream from the engine (`docker export`): a container
//! is created from the image (never started), read as often as needed, then removed.

use std::collections::HashMap;
use std::io::Read;

use bollard::models::{ContainerCreateBody, HostConfig};
use bollard::query_parameters::CreateContainerOptions;
use bollard::Docker;
use futures_util::TryStreamExt;
use pib_dbus_interfaces::DBusError;

use crate::docker::containers;
use crate::results::ImageInfo;

/// Marks export containers, so a later daemon can reap those a killed one left.
pub const EXPORT_LABEL: &str = "org.pibuilder.export";
const KIND: &str = "export";

pub struct ExportContainer {
    docker: Docker,
    id: String,
}

impl ExportContainer {
    pub async fn create(
        docker: &Docker,
        image: &ImageInfo,
        job_id: u64,
    ) -> Result<Self, DBusError> {
        let name = format!("{}{job_id}", containers::own_prefix(KIND));
        let config = ContainerCreateBody {
            image: Some(image.id.clone()),
            // Never run; a command is still required by engines for images without one.
            cmd: Some(vec!["/nonexistent".to_owned()]),
            labels: Some(HashMap::from([(EXPORT_LABEL.to_owned(), "1".to_owned())])),
            host_config: Some(HostConfig {
                network_mode: Some("none".to_owned()),
                ..Default::default()
            }),
            network_disabled: Some(true),
            ..Default::default()
        };
        let options = CreateContainerOptions {
            name: Some(name),
            ..Default::default()
        };
        let created = docker
            .create_container(Some(options), config)
            .await
            .map_err(|e| {
                DBusError::DockerUnavailable(format!("cannot create a container to export: {e}"))
            })?;
        Ok(ExportContainer {
            docker: docker.clone(),
            id: created.id,
        })
    }

    /// A blocking reader over one export of the filesystem; read it on a blocking thread.
    pub fn stream(&self) -> impl Read + Send + 'static {
        let stream = self
            .docker
            .export_container(&self.id)
            .map_err(std::io::Error::other);
        let reader = tokio_util::io::StreamReader::new(Box::pin(stream));
        tokio_util::io::SyncIoBridge::new(reader)
    }

    pub async fn remove(self) {
        if let Err(e) = containers::remove(&self.docker, &self.id).await {
            tracing::warn!("cannot remove the export container {}: {e}", self.id);
        }
    }
}

/// Removes export containers left by an earlier daemon process.
pub async fn reap_leftovers(docker: &Docker) -> Result<usize, bollard::errors::Error> {
    containers::reap(docker, EXPORT_LABEL, KIND).await
}
