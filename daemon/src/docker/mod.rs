//! The Docker engine, through bollard.
//!
//! Engines differ in age: Debian 12 ships API 1.41 while bollard asks for a newer one by
//! default, which old engines refuse. Every connection therefore negotiates the version first.

use std::path::Path;

use bollard::Docker;

/// How long a status probe may take; the engine answers locally in milliseconds when it runs.
const PROBE_TIMEOUT_SECS: u64 = 5;

#[derive(Debug, thiserror::Error)]
pub enum DockerError {
    #[error("cannot reach the Docker engine at {socket}: {source}")]
    Unreachable {
        socket: String,
        source: bollard::errors::Error,
    },
}

/// What the engine says about itself.
#[derive(Debug, Clone)]
pub struct EngineInfo {
    pub version: String,
    pub api_version: String,
}

/// Connects to the engine at `socket` with a negotiated API version.
pub async fn connect(socket: &Path) -> Result<Docker, DockerError> {
    let socket_str = socket.to_string_lossy().into_owned();
    let unreachable = |source| DockerError::Unreachable {
        socket: socket_str.clone(),
        source,
    };
    let docker = Docker::connect_with_unix(
        &socket_str,
        PROBE_TIMEOUT_SECS,
        bollard::API_DEFAULT_VERSION,
    )
    .map_err(unreachable)?;
    docker.negotiate_version().await.map_err(unreachable)
}

/// Asks the engine for its version.
pub async fn probe(socket: &Path) -> Result<EngineInfo, DockerError> {
    let docker = connect(socket).await?;
    let version = docker
        .version()
        .await
        .map_err(|source| DockerError::Unreachable {
            socket: socket.to_string_lossy().into_owned(),
            source,
        })?;
    Ok(EngineInfo {
        version: version.version.unwrap_or_default(),
        api_version: version.api_version.unwrap_or_default(),
    })
}
