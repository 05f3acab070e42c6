//! The daemon's configuration, `/etc/pi-builder/daemon.toml` by default.
//!
//! A missing file means defaults. An unreadable or malformed file, or an unknown key, stops the
//! daemon: silently ignoring a typo in a root service's settings is worse than not starting.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

pub const DEFAULT_PATH: &str = "/etc/pi-builder/daemon.toml";

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid configuration in {path}: {source}")]
    Parse {
        path: PathBuf,
        source: Box<toml::de::Error>,
    },
    #[error("invalid [docker] section in {path}: {source}")]
    Docker {
        path: PathBuf,
        source: crate::docker::EndpointError,
    },
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Exit after this many seconds without calls while no job runs; 0 = never.
    pub idle_timeout_secs: u64,
    /// How long finished jobs stay on the bus.
    pub job_retention_secs: u64,
    /// Upper bound on a polkit decision that may prompt the user for a password.
    pub interactive_auth_timeout_secs: u64,
    /// Upper bound on a polkit decision that may not prompt.
    pub auth_timeout_secs: u64,
    /// A caller's input stream (build context, image, tarball) that sends nothing for this
    /// long fails its job, instead of holding it open forever.
    pub input_stall_secs: u64,
    /// The Docker engine: the local socket by default, or a build host over TLS.
    pub docker: crate::docker::DockerConfig,
    pub state_dir: PathBuf,
    /// Downloaded base tarballs and other re-creatable data.
    pub cache_dir: PathBuf,
    pub binfmt: BinfmtConfig,
    pub build: BuildConfig,
    pub base: BaseSection,
    pub devices: DevicesSection,
    pub scan: ScanSection,
}

/// Bounds of the LAN scan.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ScanSection {
    /// At most this many addresses are swept per interface; a subnet that does not fit what is
    /// left is skipped and reported. 1024 is a /22.
    pub max_addresses: u32,
}

impl Default for ScanSection {
    fn default() -> Self {
        ScanSection {
            max_addresses: 1024,
        }
    }
}

/// Which block devices may be written.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct DevicesSection {
    /// Loop devices are accepted as cards (tests and demos); never on a user's machine.
    pub allow_loop: bool,
    /// Disks larger than this need org.pibuilder.flash-system-device like non-removable ones.
    pub large_disk_bytes: u64,
}

impl Default for DevicesSection {
    fn default() -> Self {
        DevicesSection {
            allow_loop: false,
            large_disk_bytes: 256 << 30,
        }
    }
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct BuildConfig {
    /// The largest stage context a client may send.
    pub max_context_bytes: u64,
}

impl Default for BuildConfig {
    fn default() -> Self {
        BuildConfig {
            max_context_bytes: crate::build::context::DEFAULT_LIMIT,
        }
    }
}

/// Where base root filesystems come from.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct BaseSection {
    /// Arch Linux ARM's "os" directory, holding ArchLinuxARM-*.tar.gz and their .md5 files.
    pub arch_mirror: String,
    /// Debian mirror for mmdebstrap; when absent, the host's own apt sources decide.
    pub debian_mirror: Option<String>,
    pub debian_suite: String,
}

impl Default for BaseSection {
    fn default() -> Self {
        BaseSection {
            arch_mirror: "http://os.archlinuxarm.org/os/".to_owned(),
            debian_mirror: None,
            debian_suite: "bookworm".to_owned(),
        }
    }
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct BinfmtConfig {
    /// The binfmt_misc mount point.
    pub dir: PathBuf,
    /// Interpreter for 32-bit ARM; must be one of the packaged qemu paths.
    pub arm_interpreter: Option<PathBuf>,
    /// Interpreter for aarch64; must be one of the packaged qemu paths.
    pub aarch64_interpreter: Option<PathBuf>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            idle_timeout_secs: 120,
            job_retention_secs: 600,
            interactive_auth_timeout_secs: 300,
            auth_timeout_secs: 25,
            input_stall_secs: 60,
            docker: crate::docker::DockerConfig::default(),
            state_dir: PathBuf::from("/var/lib/pi-builder"),
            cache_dir: PathBuf::from("/var/cache/pi-builder"),
            binfmt: BinfmtConfig::default(),
            build: BuildConfig::default(),
            base: BaseSection::default(),
            devices: DevicesSection::default(),
            scan: ScanSection::default(),
        }
    }
}

impl Default for BinfmtConfig {
    fn default() -> Self {
        BinfmtConfig {
            dir: PathBuf::from(crate::binfmt::BINFMT_MISC_DIR),
            arm_interpreter: None,
            aarch64_interpreter: None,
        }
    }
}

impl Config {
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        match std::fs::read_to_string(path) {
            Ok(text) => Config::parse(path, &text),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Config::default()),
            Err(source) => Err(ConfigError::Read {
                path: path.to_owned(),
                source,
            }),
        }
    }

    fn parse(path: &Path, text: &str) -> Result<Config, ConfigError> {
        let config: Config = toml::from_str(text).map_err(|source| ConfigError::Parse {
            path: path.to_owned(),
            source: Box::new(source),
        })?;
        // A bad engine address is a configuration error, reported at start, not at first use.
        config
            .docker
            .endpoint()
            .map_err(|source| ConfigError::Docker {
                path: path.to_owned(),
                source,
            })?;
        Ok(config)
    }

    pub fn idle_timeout(&self) -> Option<Duration> {
        (self.idle_timeout_secs > 0).then(|| Duration::from_secs(self.idle_timeout_secs))
    }

    pub fn job_retention(&self) -> Duration {
        Duration::from_secs(self.job_retention_secs)
    }

    pub fn input_stall(&self) -> Duration {
        Duration::from_secs(self.input_stall_secs.max(1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_file_gives_defaults() {
        let cfg = Config::load(Path::new("/nonexistent/pi-builder/daemon.toml")).unwrap();
        assert_eq!(cfg, Config::default());
        assert_eq!(cfg.idle_timeout(), Some(Duration::from_secs(120)));
    }

    #[test]
    fn partial_file_keeps_other_defaults() {
        let cfg = Config::parse(
            Path::new("t"),
            "idle_timeout_secs = 0\n[binfmt]\naarch64_interpreter = \"/usr/bin/qemu-aarch64-static\"\n",
        )
        .unwrap();
        assert_eq!(cfg.idle_timeout(), None);
        assert_eq!(cfg.job_retention_secs, 600);
        assert_eq!(
            cfg.binfmt.aarch64_interpreter.as_deref(),
            Some(Path::new("/usr/bin/qemu-aarch64-static"))
        );
    }

    #[test]
    fn unknown_key_is_an_error() {
        let err = Config::parse(Path::new("t"), "idle_timeout = 5\n").unwrap_err();
        assert!(err.to_string().contains("idle_timeout"), "{err}");
        let err = Config::parse(Path::new("t"), "idle_timeout_secs = \"five\"\n").unwrap_err();
        assert!(matches!(err, ConfigError::Parse { .. }));
    }
}
