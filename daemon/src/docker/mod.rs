//! The Docker engine, through bollard: the local socket, or a remote build host over TCP
//! with TLS for teams that share one (DESIGN §1 "scale-out").
//!
//! Engines differ in age: Debian 12 ships API 1.41 while bollard asks for a newer one by
//! default, which old engines refuse. Every connection therefore negotiates the version first.

pub mod containers;

use std::path::{Path, PathBuf};

use bollard::Docker;
use pib_dbus_interfaces::DBusError;
use serde::Deserialize;

/// How long a request may take before the engine counts as unreachable; long uploads (base
/// imports) set their own.
const TIMEOUT_SECS: u64 = 120;

/// `[docker]` in the daemon's configuration.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct DockerConfig {
    /// `unix:///path/to/docker.sock` or `tcp://HOST:PORT`.
    pub host: String,
    /// TLS for `tcp://`: the CA that signed the engine's certificate, and this daemon's client
    /// certificate and key (as made for `dockerd --tlsverify`).
    pub tls_ca: Option<PathBuf>,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
}

impl Default for DockerConfig {
    fn default() -> Self {
        DockerConfig {
            host: "unix:///var/run/docker.sock".to_owned(),
            tls_ca: None,
            tls_cert: None,
            tls_key: None,
        }
    }
}

/// Where the engine is, checked.
#[derive(Debug, Clone, PartialEq)]
pub enum Endpoint {
    Unix(PathBuf),
    /// Plain TCP: only to an engine on this machine.
    Tcp {
        addr: String,
    },
    TcpTls {
        addr: String,
        ca: PathBuf,
        cert: PathBuf,
        key: PathBuf,
    },
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum EndpointError {
    #[error("docker host {0:?} is neither unix:///PATH nor tcp://HOST:PORT")]
    Scheme(String),
    #[error("docker host {0:?} needs a host and a port, as in tcp://build.example.org:2376")]
    Address(String),
    #[error(
        "docker host {0:?} is remote: anyone who can talk to an engine is root there, so \
         pi-builder only uses TLS for it; set tls_ca, tls_cert and tls_key"
    )]
    NeedsTls(String),
    #[error(
        "tls_ca, tls_cert and tls_key go together; set all three (or none for a local engine)"
    )]
    PartialTls,
    #[error("TLS settings only apply to tcp:// hosts")]
    TlsWithoutTcp,
}

impl DockerConfig {
    pub fn endpoint(&self) -> Result<Endpoint, EndpointError> {
        let tls = match (&self.tls_ca, &self.tls_cert, &self.tls_key) {
            (None, None, None) => None,
            (Some(ca), Some(cert), Some(key)) => Some((ca.clone(), cert.clone(), key.clone())),
            _ => return Err(EndpointError::PartialTls),
        };
        if let Some(path) = self.host.strip_prefix("unix://") {
            if tls.is_some() {
                return Err(EndpointError::TlsWithoutTcp);
            }
            if !path.starts_with('/') {
                return Err(EndpointError::Scheme(self.host.clone()));
            }
            return Ok(Endpoint::Unix(PathBuf::from(path)));
        }
        let Some(addr) = self.host.strip_prefix("tcp://") else {
            return Err(EndpointError::Scheme(self.host.clone()));
        };
        let addr = addr.trim_end_matches('/');
        let (host, port) = addr
            .rsplit_once(':')
            .ok_or_else(|| EndpointError::Address(self.host.clone()))?;
        if host.is_empty() || port.parse::<u16>().is_err() || addr.contains('/') {
            return Err(EndpointError::Address(self.host.clone()));
        }
        match tls {
            Some((ca, cert, key)) => Ok(Endpoint::TcpTls {
                addr: addr.to_owned(),
                ca,
                cert,
                key,
            }),
            None if is_loopback(host) => Ok(Endpoint::Tcp {
                addr: addr.to_owned(),
            }),
            None => Err(EndpointError::NeedsTls(self.host.clone())),
        }
    }
}

fn is_loopback(host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

#[derive(Debug, thiserror::Error)]
pub enum DockerError {
    #[error("the Docker configuration is invalid: {0}")]
    Config(#[from] EndpointError),
    #[error(
        "cannot reach the Docker engine at {host}: {source}; start it (systemctl start docker, \
         or `make dev-up` on a development machine)"
    )]
    Unreachable {
        host: String,
        source: bollard::errors::Error,
    },
}

impl From<DockerError> for DBusError {
    fn from(e: DockerError) -> DBusError {
        DBusError::DockerUnavailable(e.to_string())
    }
}

/// What the engine says about itself.
#[derive(Debug, Clone)]
pub struct EngineInfo {
    pub version: String,
    pub api_version: String,
}

/// Connects to the configured engine with a negotiated API version.
pub async fn connect(config: &DockerConfig) -> Result<Docker, DockerError> {
    let unreachable = |source| DockerError::Unreachable {
        host: config.host.clone(),
        source,
    };
    let version = bollard::API_DEFAULT_VERSION;
    let docker = match config.endpoint()? {
        Endpoint::Unix(path) => {
            Docker::connect_with_unix(&path.to_string_lossy(), TIMEOUT_SECS, version)
        }
        Endpoint::Tcp { addr } => Docker::connect_with_http(&addr, TIMEOUT_SECS, version),
        Endpoint::TcpTls {
            addr,
            ca,
            cert,
            key,
        } => Docker::connect_with_ssl(&addr, &key, &cert, &ca, TIMEOUT_SECS, version),
    }
    .map_err(unreachable)?;
    docker.negotiate_version().await.map_err(unreachable)
}

/// The daemon's engine: one client, negotiated once. Negotiating asks for `/version`, which
/// Docker 20.10 answers by running `runc --version` (10-16 ms here); doing it per call was a
/// measurable part of a cached rebuild (BENCHMARKS.md).
pub struct Engine {
    config: DockerConfig,
    client: tokio::sync::OnceCell<Docker>,
}

impl Engine {
    pub fn new(config: DockerConfig) -> Engine {
        Engine {
            config,
            client: tokio::sync::OnceCell::new(),
        }
    }

    /// The client; a failed first connection is retried on the next call. Later requests
    /// reconnect by themselves (the client is a connection pool) and fail with their own error
    /// if the engine went away.
    pub async fn client(&self) -> Result<Docker, DockerError> {
        self.client
            .get_or_try_init(|| connect(&self.config))
            .await
            .cloned()
    }

    /// Asks the engine for its version (a live check: the engine may have stopped since).
    pub async fn probe(&self) -> Result<EngineInfo, DockerError> {
        probe_with(&self.client().await?, &self.config).await
    }
}

async fn probe_with(docker: &Docker, config: &DockerConfig) -> Result<EngineInfo, DockerError> {
    let version = docker
        .version()
        .await
        .map_err(|source| DockerError::Unreachable {
            host: config.host.clone(),
            source,
        })?;
    Ok(EngineInfo {
        version: version.version.unwrap_or_default(),
        api_version: version.api_version.unwrap_or_default(),
    })
}

/// The socket path when the engine is local (bases record it for their own use).
pub fn socket_path(config: &DockerConfig) -> PathBuf {
    match config.endpoint() {
        Ok(Endpoint::Unix(p)) => p,
        _ => Path::new("/var/run/docker.sock").to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(host: &str, tls: bool) -> DockerConfig {
        DockerConfig {
            host: host.to_owned(),
            tls_ca: tls.then(|| "/etc/pi-builder/docker/ca.pem".into()),
            tls_cert: tls.then(|| "/etc/pi-builder/docker/cert.pem".into()),
            tls_key: tls.then(|| "/etc/pi-builder/docker/key.pem".into()),
        }
    }

    #[test]
    fn endpoints() {
        assert_eq!(
            DockerConfig::default().endpoint(),
            Ok(Endpoint::Unix("/var/run/docker.sock".into()))
        );
        assert!(matches!(
            cfg("tcp://build.example.org:2376", true).endpoint(),
            Ok(Endpoint::TcpTls { addr, .. }) if addr == "build.example.org:2376"
        ));
        assert_eq!(
            cfg("tcp://127.0.0.1:2375", false).endpoint(),
            Ok(Endpoint::Tcp {
                addr: "127.0.0.1:2375".into()
            })
        );
        assert!(matches!(
            cfg("tcp://[::1]:2375", false).endpoint(),
            Ok(Endpoint::Tcp { .. })
        ));
    }

    #[test]
    fn refusals() {
        let err = |c: DockerConfig| c.endpoint().unwrap_err();
        assert!(matches!(
            err(cfg("tcp://build.example.org:2375", false)),
            EndpointError::NeedsTls(_)
        ));
        assert!(matches!(
            err(cfg("ssh://build.example.org", false)),
            EndpointError::Scheme(_)
        ));
        assert!(matches!(
            err(cfg("unix://relative.sock", false)),
            EndpointError::Scheme(_)
        ));
        assert!(matches!(
            err(cfg("unix:///run/docker.sock", true)),
            EndpointError::TlsWithoutTcp
        ));
        for bad in [
            "tcp://build.example.org",
            "tcp://:2376",
            "tcp://h:notaport",
            "tcp://h:2376/x",
        ] {
            assert!(
                matches!(err(cfg(bad, true)), EndpointError::Address(_)),
                "{bad}"
            );
        }
        let mut partial = cfg("tcp://build.example.org:2376", true);
        partial.tls_key = None;
        assert_eq!(err(partial), EndpointError::PartialTls);
    }

    #[test]
    fn the_daemon_config_section_parses() {
        let c: crate::config::Config = toml::from_str(
            "[docker]\nhost = \"tcp://build.example.org:2376\"\ntls_ca = \"/c\"\ntls_cert = \"/d\"\ntls_key = \"/e\"\n",
        )
        .unwrap();
        assert!(matches!(c.docker.endpoint(), Ok(Endpoint::TcpTls { .. })));
        assert!(toml::from_str::<crate::config::Config>("[docker]\nsocket = \"/x\"\n").is_err());
    }
}
