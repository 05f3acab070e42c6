//! The vocabulary of the API: option keys, status keys, job states and operations, machines.

use std::fmt;
use std::str::FromStr;

/// Keys of method option dictionaries.
pub mod options {
    /// `s`: "arm" or "aarch64" (RegisterBinfmt, UnregisterBinfmt).
    pub const ARCH: &str = "arch";
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
