//! What base to make (`BaseSpec`), with which settings (`BaseConfig`), and the names and labels
//! that identify the result in Docker.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use pib_dbus_interfaces::types::{Arch, Board, Distro};

use super::error::BaseError;

/// Labels every base image carries. Images are found again by these, never by name alone, so a
/// foreign image that happens to use our name is not mistaken for a base (and crash leftovers
/// can be recognised and reaped).
pub mod labels {
    /// "1" on a finished base; "partial" on the import step below it.
    pub const BASE: &str = "org.pibuilder.base";
    pub const DISTRO: &str = "org.pibuilder.distro";
    pub const ARCH: &str = "org.pibuilder.arch";
    /// Empty when the base serves every board (Debian).
    pub const BOARD: &str = "org.pibuilder.board";
    /// A URL, "mmdebstrap SUITE MIRROR" or "local tarball".
    pub const ORIGIN: &str = "org.pibuilder.origin";
    /// "sha256:HEX" of the tarball as downloaded, bootstrapped or handed over.
    pub const DIGEST: &str = "org.pibuilder.digest";
    /// Empty for Arch Linux ARM.
    pub const SUITE: &str = "org.pibuilder.suite";

    pub const BASE_DONE: &str = "1";
    pub const BASE_PARTIAL: &str = "partial";
}

/// Origin label value for tarballs that came in through ImportBase.
pub const ORIGIN_LOCAL: &str = "local tarball";

/// Default Docker repository namespace of base images.
pub const DEFAULT_NAMESPACE: &str = "pib-base";

/// Which base to make. Validate with [`BaseSpec::validate`] before freezing a job's parameters.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct BaseSpec {
    pub distro: Distro,
    pub arch: Arch,
    /// Arch Linux ARM needs it to pick the tarball; Debian bases serve every board.
    pub board: Option<Board>,
    /// Debian suite; `None` means the configured default. Not allowed for Arch Linux ARM.
    pub suite: Option<String>,
}

/// The daemon's settings for bases.
#[derive(Debug, Clone, PartialEq)]
pub struct BaseConfig {
    /// Base URL of an Arch Linux ARM mirror (the directory holding the `ArchLinuxARM-*`
    /// tarballs).
    pub arch_mirror: String,
    /// Debian mirror for mmdebstrap; `None` takes the host's apt configuration.
    pub debian_mirror: Option<String>,
    /// Debian suite used when a request names none.
    pub debian_suite: String,
    /// Where downloaded tarballs and bootstrap scratch space live (root only).
    pub cache_dir: PathBuf,
    /// The Docker socket (informational here: callers pass a connected client).
    pub docker_socket: PathBuf,
    /// Repository namespace of the images, `pib-base` unless tests need their own.
    pub image_namespace: String,
    /// Upper bound on one download.
    pub download_limit: u64,
    /// A download that delivers no data for this long is abandoned.
    pub stall_timeout: Duration,
}

impl Default for BaseConfig {
    fn default() -> Self {
        BaseConfig {
            arch_mirror: "http://os.archlinuxarm.org/os/".to_owned(),
            debian_mirror: None,
            debian_suite: "bookworm".to_owned(),
            cache_dir: PathBuf::from("/var/cache/pi-builder/bases"),
            docker_socket: PathBuf::from("/var/run/docker.sock"),
            image_namespace: DEFAULT_NAMESPACE.to_owned(),
            // The largest Arch Linux ARM tarball is well under 1 GiB; 4 GiB leaves room for
            // growth while still stopping a hostile or broken server from filling the disk.
            download_limit: 4 << 30,
            stall_timeout: Duration::from_secs(60),
        }
    }
}

impl BaseConfig {
    /// Checks the settings that end up in URLs, command lines and image names.
    pub fn validate(&self) -> Result<(), BaseError> {
        check_suite(&self.debian_suite).map_err(|reason| BaseError::Config {
            setting: "debian_suite",
            value: self.debian_suite.clone(),
            reason,
        })?;
        let ns_ok = !self.image_namespace.is_empty()
            && self.image_namespace.len() <= 64
            && self
                .image_namespace
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-_./".contains(&b))
            && !self.image_namespace.starts_with(['-', '.', '/', '_'])
            && !self.image_namespace.ends_with(['-', '.', '/', '_']);
        if !ns_ok {
            return Err(BaseError::Config {
                setting: "image_namespace",
                value: self.image_namespace.clone(),
                reason: "use lower-case letters, digits, '-', '_', '.' and '/'".to_owned(),
            });
        }
        if !self.cache_dir.is_absolute() {
            return Err(BaseError::Config {
                setting: "cache_dir",
                value: self.cache_dir.display().to_string(),
                reason: "must be an absolute path".to_owned(),
            });
        }
        Ok(())
    }
}

/// The Arch Linux ARM tarball for a machine, from the mirror's `os/` directory. Both are
/// generic Raspberry Pi tarballs, each published with an `.md5` file beside it.
const ARMV7_TARBALL: &str = "ArchLinuxARM-rpi-armv7-latest.tar.gz";
const AARCH64_TARBALL: &str = "ArchLinuxARM-rpi-aarch64-latest.tar.gz";

impl BaseSpec {
    /// Refuses combinations that have no base: Arch Linux ARM publishes an armv7 tarball for
    /// rpi2, rpi3, rpi4 and zero2w and an aarch64 one for rpi3, rpi4, rpi5 and zero2w; Debian
    /// runs on every board, except that the rpi2 is a 32-bit board.
    pub fn validate(&self) -> Result<(), BaseError> {
        match self.distro {
            Distro::Arch => {
                if self.suite.is_some() {
                    return Err(BaseError::InvalidSpec(
                        "a suite applies only to Debian; Arch Linux ARM is a rolling release"
                            .to_owned(),
                    ));
                }
                let Some(board) = self.board else {
                    return Err(BaseError::InvalidSpec(
                        "Arch Linux ARM needs a board (rpi2, rpi3, rpi4, rpi5 or zero2w) to pick \
                         its tarball"
                            .to_owned(),
                    ));
                };
                if !arch_board_supported(self.arch, board) {
                    let hint = match self.arch {
                        Arch::Arm => "use arch aarch64",
                        Arch::Aarch64 => "use arch arm",
                    };
                    return Err(BaseError::InvalidSpec(format!(
                        "Arch Linux ARM has no {} tarball for {board}; {hint}",
                        self.arch
                    )));
                }
            }
            Distro::Debian => {
                if self.board == Some(Board::Rpi2) && self.arch == Arch::Aarch64 {
                    return Err(BaseError::InvalidSpec(
                        "the rpi2 runs 32-bit systems; use arch arm".to_owned(),
                    ));
                }
                if let Some(suite) = &self.suite {
                    check_suite(suite).map_err(|reason| {
                        BaseError::InvalidSpec(format!("suite {suite:?}: {reason}"))
                    })?;
                }
            }
        }
        Ok(())
    }

    /// The Arch Linux ARM tarball this base comes from.
    pub fn arch_tarball(&self) -> Option<&'static str> {
        match (self.distro, self.arch) {
            (Distro::Arch, Arch::Arm) => Some(ARMV7_TARBALL),
            (Distro::Arch, Arch::Aarch64) => Some(AARCH64_TARBALL),
            (Distro::Debian, _) => None,
        }
    }

    /// Debian's name for the machine.
    pub fn debian_arch(&self) -> &'static str {
        match self.arch {
            Arch::Arm => "armhf",
            Arch::Aarch64 => "arm64",
        }
    }

    /// The suite after defaults (Debian only).
    pub fn resolved_suite<'a>(&'a self, cfg: &'a BaseConfig) -> Option<&'a str> {
        match self.distro {
            Distro::Arch => None,
            Distro::Debian => Some(self.suite.as_deref().unwrap_or(&cfg.debian_suite)),
        }
    }

    /// The board that identifies the base: Debian bases are the same for every board, so
    /// they are shared rather than bootstrapped once per board.
    pub fn identity_board(&self) -> Option<Board> {
        match self.distro {
            Distro::Arch => self.board,
            Distro::Debian => None,
        }
    }

    /// The labels that say which spec an image was made for (without origin and digest).
    pub(crate) fn identity_labels(&self, cfg: &BaseConfig) -> BTreeMap<String, String> {
        let mut l = BTreeMap::new();
        l.insert(labels::DISTRO.to_owned(), self.distro.to_string());
        l.insert(labels::ARCH.to_owned(), self.arch.to_string());
        l.insert(
            labels::BOARD.to_owned(),
            self.identity_board()
                .map(|b| b.to_string())
                .unwrap_or_default(),
        );
        l.insert(
            labels::SUITE.to_owned(),
            self.resolved_suite(cfg).unwrap_or_default().to_owned(),
        );
        l
    }
}

fn arch_board_supported(arch: Arch, board: Board) -> bool {
    match arch {
        Arch::Arm => matches!(
            board,
            Board::Rpi2 | Board::Rpi3 | Board::Rpi4 | Board::Zero2w
        ),
        Arch::Aarch64 => matches!(
            board,
            Board::Rpi3 | Board::Rpi4 | Board::Rpi5 | Board::Zero2w
        ),
    }
}

/// Suites end up in a command line, a sources line and an image name: keep them to the
/// characters Debian uses.
fn check_suite(s: &str) -> Result<(), String> {
    let ok = !s.is_empty()
        && s.len() <= 32
        && s.starts_with(|c: char| c.is_ascii_lowercase())
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if ok {
        Ok(())
    } else {
        Err("use a Debian suite name such as bookworm (lower-case letters, digits, '-')".to_owned())
    }
}

/// The repository part of a base's image name, e.g. `pib-base/arch-rpi4-aarch64`.
pub fn image_repo(cfg: &BaseConfig, spec: &BaseSpec) -> String {
    let middle = match spec.distro {
        Distro::Arch => spec
            .board
            .map(|b| b.to_string())
            .unwrap_or_else(|| "any".to_owned()),
        Distro::Debian => spec.resolved_suite(cfg).unwrap_or_default().to_owned(),
    };
    format!(
        "{}/{}-{}-{}",
        cfg.image_namespace, spec.distro, middle, spec.arch
    )
}

/// The image a base is tagged as, and that builds start FROM, e.g.
/// `pib-base/debian-bookworm-aarch64:latest` or `pib-base/arch-rpi4-aarch64:latest`.
pub fn image_name(cfg: &BaseConfig, spec: &BaseSpec) -> String {
    format!("{}:latest", image_repo(cfg, spec))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(distro: Distro, arch: Arch, board: Option<Board>) -> BaseSpec {
        BaseSpec {
            distro,
            arch,
            board,
            suite: None,
        }
    }

    #[test]
    fn arch_matrix() {
        let ok = [
            (Arch::Arm, Board::Rpi2),
            (Arch::Arm, Board::Rpi3),
            (Arch::Arm, Board::Rpi4),
            (Arch::Arm, Board::Zero2w),
            (Arch::Aarch64, Board::Rpi3),
            (Arch::Aarch64, Board::Rpi4),
            (Arch::Aarch64, Board::Rpi5),
            (Arch::Aarch64, Board::Zero2w),
        ];
        for a in Arch::ALL {
            for b in Board::ALL {
                let r = spec(Distro::Arch, *a, Some(*b)).validate();
                assert_eq!(r.is_ok(), ok.contains(&(*a, *b)), "{a} {b}: {r:?}");
            }
        }
        let err = spec(Distro::Arch, Arch::Arm, None).validate().unwrap_err();
        assert!(err.to_string().contains("needs a board"), "{err}");
        let err = spec(Distro::Arch, Arch::Arm, Some(Board::Rpi5))
            .validate()
            .unwrap_err();
        assert!(err.to_string().contains("use arch aarch64"), "{err}");
        let mut s = spec(Distro::Arch, Arch::Arm, Some(Board::Rpi4));
        s.suite = Some("bookworm".into());
        assert!(s.validate().is_err());
    }

    #[test]
    fn debian_rules_and_names() {
        let cfg = BaseConfig::default();
        assert!(spec(Distro::Debian, Arch::Aarch64, None).validate().is_ok());
        assert!(spec(Distro::Debian, Arch::Arm, Some(Board::Rpi2))
            .validate()
            .is_ok());
        assert!(spec(Distro::Debian, Arch::Aarch64, Some(Board::Rpi2))
            .validate()
            .is_err());
        let mut s = spec(Distro::Debian, Arch::Aarch64, Some(Board::Rpi4));
        assert_eq!(
            image_name(&cfg, &s),
            "pib-base/debian-bookworm-aarch64:latest"
        );
        assert_eq!(s.debian_arch(), "arm64");
        s.suite = Some("trixie".into());
        assert_eq!(
            image_name(&cfg, &s),
            "pib-base/debian-trixie-aarch64:latest"
        );
        s.suite = Some("Trixie; rm".into());
        assert!(s.validate().is_err());
        let a = spec(Distro::Arch, Arch::Aarch64, Some(Board::Rpi4));
        assert_eq!(image_name(&cfg, &a), "pib-base/arch-rpi4-aarch64:latest");
        assert_eq!(
            a.arch_tarball(),
            Some("ArchLinuxARM-rpi-aarch64-latest.tar.gz")
        );
        assert_eq!(
            spec(Distro::Arch, Arch::Arm, Some(Board::Rpi2)).arch_tarball(),
            Some("ArchLinuxARM-rpi-armv7-latest.tar.gz")
        );
        assert_eq!(spec(Distro::Debian, Arch::Arm, None).debian_arch(), "armhf");
    }

    #[test]
    fn config_validation() {
        assert!(BaseConfig::default().validate().is_ok());
        let cfg = BaseConfig {
            image_namespace: "Bad Name".into(),
            ..BaseConfig::default()
        };
        assert!(cfg.validate().is_err());
        let cfg = BaseConfig {
            debian_suite: "../x".into(),
            ..BaseConfig::default()
        };
        assert!(cfg.validate().is_err());
    }
}
