//! The vocabulary of the API: option keys, status keys, job states and operations, machines.

use std::fmt;
use std::str::FromStr;

/// Keys of method option dictionaries (see the XML for which method takes which).
pub mod options {
    /// `s`: "arm" or "aarch64".
    pub const ARCH: &str = "arch";
    /// `s`: "arch" or "debian".
    pub const DISTRO: &str = "distro";
    /// `s`: rpi2, rpi3, rpi4, rpi5, zero2w.
    pub const BOARD: &str = "board";
    /// `s`: Debian suite.
    pub const SUITE: &str = "suite";
    /// `b`: re-validate a cached base against its source.
    pub const REFRESH: &str = "refresh";
    /// `as`: stage names in order.
    pub const STAGES: &str = "stages";
    pub const HOSTNAME: &str = "hostname";
    pub const LOCALE: &str = "locale";
    pub const TIMEZONE: &str = "timezone";
    pub const REPO_URL: &str = "repo_url";
    /// `a{ss}`: further build args.
    pub const ARGS: &str = "args";
    /// `b`: rebuild every step.
    pub const NO_CACHE: &str = "no_cache";
    /// `s`: a result or base name.
    pub const NAME: &str = "name";
    /// `s`: a base image name.
    pub const BASE: &str = "base";
    /// `b`: Clean everyone's images.
    pub const ALL_USERS: &str = "all_users";
    /// `b`: Clean the imported bases too.
    pub const BASES: &str = "bases";
    /// `b`: Shell with a terminal.
    pub const TTY: &str = "tty";
    /// `u`: terminal rows.
    pub const ROWS: &str = "rows";
    /// `u`: terminal columns.
    pub const COLS: &str = "cols";
    /// `t`: size of the FAT boot partition in bytes.
    pub const BOOT_SIZE: &str = "boot_size";
    /// `t`: size of the whole disk image in bytes (root takes what the others leave).
    pub const SIZE: &str = "size";
    /// `t`: free space the root filesystem gets on top of its content, in bytes.
    pub const ROOT_HEADROOM: &str = "root_headroom";
    /// `t`: size of an optional third, empty ext4 partition in bytes.
    pub const DATA_SIZE: &str = "data_size";
    /// `s`: label of the data partition.
    pub const DATA_LABEL: &str = "data_label";
    /// `s`: "zstd" or "xz".
    pub const COMPRESS: &str = "compress";
    /// `b`: ListDevices also lists hidden disks.
    pub const ALL: &str = "all";
    /// `s`: a block map (bmaptool XML) for Flash.
    pub const BMAP: &str = "bmap";
    /// `s`: "none", "zstd" or "xz" for Flash's image stream.
    pub const COMPRESSION: &str = "compression";
    /// `b`: read the card back and compare.
    pub const VERIFY: &str = "verify";
    /// `b`: power the card off afterwards.
    pub const EJECT: &str = "eject";
    /// `as`: Scan only these network interfaces.
    pub const INTERFACES: &str = "interfaces";
    /// `u`: Scan's bound on the sweep, in seconds.
    pub const TIMEOUT: &str = "timeout";
    /// `b`: Scan looks the hosts' names up (default true).
    pub const RESOLVE: &str = "resolve";
}

/// Keys of a job's `Result` dictionary.
pub mod result {
    /// `s`: image reference.
    pub const IMAGE: &str = "image";
    /// `s`: image id.
    pub const ID: &str = "id";
    /// `u`: build steps.
    pub const STEPS: &str = "steps";
    /// `u`: build steps served from the cache.
    pub const CACHED: &str = "cached";
    /// `u`: things removed by Clean.
    pub const REMOVED: &str = "removed";
    /// `t`: bytes freed by Clean.
    pub const RECLAIMED: &str = "reclaimed";
    /// `i`: a shell command's exit status.
    pub const EXIT_CODE: &str = "exit_code";
    /// `t`: size of the disk image in bytes.
    pub const IMAGE_SIZE: &str = "image_size";
    /// `s`: sha256 (hex) of the whole disk image.
    pub const IMAGE_SHA256: &str = "image_sha256";
    /// `t`: bytes written to the output descriptor (compressed size when compressed).
    pub const OUTPUT_SIZE: &str = "output_size";
    /// `s`: sha256 (hex) of the bytes written to the output descriptor.
    pub const OUTPUT_SHA256: &str = "output_sha256";
    /// `s`: the block map of the image in bmaptool's XML format.
    pub const BMAP: &str = "bmap";
    /// `s`: a JSON object describing the image (an rpi-imager repository entry).
    pub const MANIFEST: &str = "manifest";
    /// `s`: the partitions as a JSON array of {number, label, type, start, size}.
    pub const PARTITIONS: &str = "partitions";
    /// `s`: the device a flash job wrote.
    pub const DEVICE: &str = "device";
    /// `t`: bytes written to the device.
    pub const WRITTEN: &str = "written";
    /// `b`: whether the card was read back and matched.
    pub const VERIFIED: &str = "verified";
    /// `aa{sv}`: the boards a scan found (keys in [`super::scan`]).
    pub const HOSTS: &str = "hosts";
    /// `aa{sv}`: the subnets a scan swept.
    pub const SWEPT: &str = "swept";
    /// `aa{sv}`: the subnets a scan left out, with why.
    pub const SKIPPED: &str = "skipped";
}

/// Keys of the entries of a scan's `hosts`, `swept` and `skipped` results.
pub mod scan {
    /// `s`: an IPv4 address.
    pub const IP: &str = "ip";
    /// `s`: a MAC address, lower case with colons.
    pub const MAC: &str = "mac";
    /// `s`: the network interface it was seen on.
    pub const INTERFACE: &str = "interface";
    /// `s`: the name the system resolver gives the address, empty when none.
    pub const HOSTNAME: &str = "hostname";
    /// `s`: a subnet in CIDR notation.
    pub const SUBNET: &str = "subnet";
    /// `u`: the addresses of a swept subnet.
    pub const ADDRESSES: &str = "addresses";
    /// `u`: how many of them were asked before the time bound.
    pub const ASKED: &str = "asked";
    /// `s`: why a subnet was left out.
    pub const REASON: &str = "reason";
}

/// Keys of the dictionaries returned by ListDevices.
pub mod device {
    pub const DEVICE: &str = "device";
    pub const NAME: &str = "name";
    pub const MAJOR: &str = "major";
    pub const MINOR: &str = "minor";
    pub const DISKSEQ: &str = "diskseq";
    pub const SIZE: &str = "size";
    pub const MODEL: &str = "model";
    pub const VENDOR: &str = "vendor";
    pub const SERIAL: &str = "serial";
    pub const BUS: &str = "bus";
    pub const REMOVABLE: &str = "removable";
    pub const READ_ONLY: &str = "read_only";
    pub const MOUNTED: &str = "mounted";
    pub const PARTITIONS: &str = "partitions";
    pub const VERDICT: &str = "verdict";
    pub const REASON: &str = "reason";
    pub const ERROR: &str = "error";
}

/// Keys of the dictionaries returned by ListBases and ListImages.
pub mod image {
    pub const NAME: &str = "name";
    pub const ID: &str = "id";
    pub const DISTRO: &str = "distro";
    pub const ARCH: &str = "arch";
    pub const BOARD: &str = "board";
    pub const ORIGIN: &str = "origin";
    pub const DIGEST: &str = "digest";
    pub const CREATED: &str = "created";
    pub const SIZE: &str = "size";
    pub const OWNER_UID: &str = "owner_uid";
    pub const STAGES: &str = "stages";
}

/// Keys of the dictionary returned by `Manager.GetStatus`.
pub mod status {
    pub const VERSION: &str = "version";
    pub const DOCKER_REACHABLE: &str = "docker_reachable";
    pub const DOCKER_VERSION: &str = "docker_version";
    pub const DOCKER_API_VERSION: &str = "docker_api_version";
    pub const DOCKER_ERROR: &str = "docker_error";
    pub const BINFMT_MOUNTED: &str = "binfmt_mounted";
    pub const BINFMT: &str = "binfmt";
    pub const RUNNING_JOBS: &str = "running_jobs";

    /// Keys of each entry of the `binfmt` list.
    pub mod binfmt {
        pub const ARCH: &str = "arch";
        pub const STATE: &str = "state";
        pub const NAME: &str = "name";
        pub const INTERPRETER: &str = "interpreter";
        pub const FLAGS: &str = "flags";
        pub const ENABLED: &str = "enabled";
        pub const USABLE: &str = "usable";
        pub const FOREIGN: &str = "foreign";
    }
}

/// Error returned when a string is not one of the vocabulary's words.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown {kind} {value:?} (expected one of: {expected})")]
pub struct UnknownWord {
    pub kind: &'static str,
    pub value: String,
    pub expected: &'static str,
}

macro_rules! word_enum {
    ($(#[$meta:meta])* $name:ident, $kind:literal, { $($variant:ident => $word:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name { $($variant),+ }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $word),+ }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl FromStr for $name {
            type Err = UnknownWord;
            fn from_str(s: &str) -> Result<Self, UnknownWord> {
                match s {
                    $($word => Ok($name::$variant),)+
                    _ => Err(UnknownWord {
                        kind: $kind,
                        value: s.to_owned(),
                        expected: concat!($($word, " "),+),
                    }),
                }
            }
        }
    };
}

word_enum!(
    /// The state of a job (`Job.State`).
    JobState, "job state", {
        Running => "running",
        Succeeded => "succeeded",
        Failed => "failed",
        Cancelled => "cancelled",
    }
);

impl JobState {
    pub fn is_finished(self) -> bool {
        self != JobState::Running
    }
}

word_enum!(
    /// What a job does (`Job.Operation`).
    Operation, "operation", {
        BinfmtRegister => "binfmt-register",
        BinfmtUnregister => "binfmt-unregister",
        FetchBase => "base-fetch",
        ImportBase => "base-import",
        Build => "build",
        Clean => "clean",
        Shell => "shell",
        DiskImage => "disk-image",
        Flash => "flash",
        Format => "format",
        Scan => "scan",
    }
);

word_enum!(
    /// A base family.
    Distro, "distro", {
        Arch => "arch",
        Debian => "debian",
    }
);

word_enum!(
    /// A Raspberry Pi board.
    Board, "board", {
        Rpi2 => "rpi2",
        Rpi3 => "rpi3",
        Rpi4 => "rpi4",
        Rpi5 => "rpi5",
        Zero2w => "zero2w",
    }
);

word_enum!(
    /// A machine that binfmt_misc emulation can run.
    Arch, "arch", {
        Arm => "arm",
        Aarch64 => "aarch64",
    }
);

word_enum!(
    /// How a machine is handled by binfmt_misc (`binfmt[].state` in the status).
    BinfmtState, "binfmt state", {
        Registered => "registered",
        Foreign => "foreign",
        Absent => "absent",
    }
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_round_trip_and_reject_unknown() {
        for a in Arch::ALL {
            assert_eq!(a.as_str().parse::<Arch>().unwrap(), *a);
        }
        let err = "x86".parse::<Arch>().unwrap_err();
        assert_eq!(err.value, "x86");
        assert!(err.to_string().contains("arm aarch64"), "{err}");
        assert!(JobState::Cancelled.is_finished());
        assert!(!JobState::Running.is_finished());
    }
}
