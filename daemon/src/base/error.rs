//! What can go wrong while making a base available, in words a user can act on.

use std::io;
use std::path::PathBuf;

use pib_dbus_interfaces::DBusError;

#[derive(Debug, thiserror::Error)]
pub enum BaseError {
    /// The distro/arch/board/suite combination does not describe a base we can make.
    #[error("invalid base: {0}")]
    InvalidSpec(String),

    /// A daemon setting (mirror URL, suite, cache directory) is unusable.
    #[error(
        "invalid setting {setting} = {value:?}: {reason}; fix it in the daemon's configuration"
    )]
    Config {
        setting: &'static str,
        value: String,
        reason: String,
    },

    #[error(
        "no Debian archive found in the host's apt sources ({searched}); add one there \
         or set debian_mirror in the daemon's configuration"
    )]
    NoHostMirror { searched: String },

    #[error("cannot read the apt source list {path}: {source}")]
    AptSources { path: PathBuf, source: io::Error },

    #[error("cannot reach {url}: {reason}; check the mirror setting and the network")]
    Network { url: String, reason: String },

    #[error("{url} answered HTTP {status}; check the mirror setting, or try again later")]
    HttpStatus { url: String, status: u16 },

    /// A redirect or a name resolution led somewhere a root service must not go.
    #[error(
        "refused to fetch {url}: {reason}; a system service does not follow a mirror to \
         other protocols or to local addresses (configure such a mirror directly)"
    )]
    Refused { url: String, reason: String },

    #[error(
        "the download of {url} ended early ({received} of {expected} bytes); \
         nothing was kept, try again"
    )]
    Truncated {
        url: String,
        received: u64,
        /// What the server announced, or "an unknown number of" when it sent no length.
        expected: String,
    },

    #[error("the download of {url} stalled (no data for {secs} s); nothing was kept, try again")]
    Stalled { url: String, secs: u64 },

    #[error("{url} is larger than the limit of {limit} bytes; nothing was kept")]
    TooLarge { url: String, limit: u64 },

    #[error(
        "checksum mismatch for {what}: expected md5 {expected}, got {actual}; nothing was \
         kept: the mirror may be updating, try again later or use another mirror"
    )]
    ChecksumMismatch {
        what: String,
        expected: String,
        actual: String,
    },

    #[error("{url} is not a usable md5 checksum file: {reason}")]
    BadChecksumFile { url: String, reason: String },

    #[error("cannot use the cache directory {path}: {source}")]
    Cache { path: PathBuf, source: io::Error },

    #[error("cannot run mmdebstrap: {source}; install the mmdebstrap and arch-test packages")]
    BootstrapSpawn { source: io::Error },

    #[error(
        "this machine cannot run {arch} programs, which bootstrapping needs; \
         run `pib-client binfmt register` and try again"
    )]
    ForeignArchUnsupported { arch: String },

    #[error("mmdebstrap failed ({status}); its last messages:\n{tail}")]
    BootstrapFailed { status: String, tail: String },

    /// The file descriptor handed to ImportBase is of the wrong kind or format.
    #[error("the tarball cannot be imported: {0}")]
    BadTarball(String),

    #[error("cannot read the tarball: {0}")]
    ReadTarball(io::Error),

    #[error("the tarball is larger than the limit of {limit} bytes (after decompression)")]
    TarballTooLarge { limit: u64 },

    #[error("Docker {action} failed: {source}")]
    Docker {
        action: String,
        source: bollard::errors::Error,
    },

    /// Docker stopped reading the tar stream; the import's own error says why and replaces
    /// this one whenever it is known.
    #[error("Docker stopped reading the tarball")]
    ImportStopped,

    #[error("cancelled")]
    Cancelled,
}

impl BaseError {
    pub(crate) fn docker(action: impl Into<String>, source: bollard::errors::Error) -> Self {
        BaseError::Docker {
            action: action.into(),
            source,
        }
    }

    pub(crate) fn cache(path: impl Into<PathBuf>, source: io::Error) -> Self {
        BaseError::Cache {
            path: path.into(),
            source,
        }
    }

    /// Whether the Docker engine itself could not be talked to (as opposed to refusing a
    /// request), so that callers can say "start Docker" rather than "this failed".
    pub fn is_docker_unreachable(&self) -> bool {
        use bollard::errors::Error as E;
        match self {
            BaseError::Docker { source, .. } => !matches!(
                source,
                E::DockerResponseServerError { .. } | E::DockerStreamError { .. }
            ),
            _ => false,
        }
    }
}

/// How a failed base job is reported on the bus (the contract's error names).
impl From<BaseError> for DBusError {
    fn from(e: BaseError) -> Self {
        let msg = e.to_string();
        match e {
            BaseError::InvalidSpec(_)
            | BaseError::BadTarball(_)
            | BaseError::TarballTooLarge { .. } => DBusError::InvalidArgs(msg),
            BaseError::ForeignArchUnsupported { .. } | BaseError::BootstrapSpawn { .. } => {
                DBusError::NotSupported(msg)
            }
            BaseError::Cancelled => DBusError::Cancelled(msg),
            ref d @ BaseError::Docker { .. } if d.is_docker_unreachable() => {
                DBusError::DockerUnavailable(msg)
            }
            _ => DBusError::Failed(msg),
        }
    }
}
