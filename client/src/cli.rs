//! The command line: every subcommand and flag the client accepts.

use clap::{Args, Parser, Subcommand, ValueEnum};
use clap_complete::Shell;
use pib_dbus_interfaces::types::Arch;

use crate::job::JobRef;

#[derive(Debug, Parser)]
#[command(
    name = "pib-client",
    version,
    about = "Build Raspberry Pi OS images and write SD cards through pi-builder's system service",
    propagate_version = true
)]
pub struct Cli {
    /// Machine-readable output: one JSON object per result, JSON lines for progress; never prompts
    #[arg(long, global = true)]
    pub json: bool,

    /// Never ask for a password (no polkit agent, no interactive authorization)
    #[arg(long, global = true)]
    pub no_ask_password: bool,

    /// No progress and no log lines; only results and errors
    #[arg(short, long, global = true)]
    pub quiet: bool,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Show what the service can do now: Docker, binfmt_misc, running jobs
    Status,
    /// Show, register or remove qemu's binfmt_misc entries for ARM machines
    #[command(subcommand)]
    Binfmt(BinfmtCommand),
    /// List the jobs you may see
    Jobs,
    /// Ask a job to stop
    Cancel {
        /// Job number N or its object path /org/pibuilder/PiBuilder1/jobs/N
        #[arg(value_name = "JOB")]
        job: JobRef,
    },
    /// Print a completion script for SHELL on standard output
    Completions {
        #[arg(value_enum)]
        shell: Shell,
    },

    /// Download and import a base root filesystem [not implemented yet]
    Base(Planned),
    /// Build an OS from stages [not implemented yet]
    Build(Planned),
    /// Turn a build into a bootable SD-card image [not implemented yet]
    Image(Planned),
    /// Write an image to SD cards and verify it [not implemented yet]
    Flash(Planned),
    /// Partition and format an SD card [not implemented yet]
    Format(Planned),
    /// Format a card and install a build onto it [not implemented yet]
    Install(Planned),
    /// List the removable devices that can be written [not implemented yet]
    Devices(Planned),
    /// Open a shell in a built system [not implemented yet]
    Shell(Planned),
    /// List built images [not implemented yet]
    Images(Planned),
    /// Remove built images [not implemented yet]
    Rm(Planned),
    /// Remove build leftovers and cached data [not implemented yet]
    Clean(Planned),
    /// Find Raspberry Pi devices on the local network [not implemented yet]
    Scan(Planned),
}

/// The arguments of a command that exists only as a promise: anything is taken, so that scripts
/// written against the future syntax fail with "not implemented" rather than a usage error.
#[derive(Debug, Args)]
pub struct Planned {
    #[arg(
        trailing_var_arg = true,
        allow_hyphen_values = true,
        value_name = "ARGS"
    )]
    pub args: Vec<String>,
}

#[derive(Debug, Subcommand)]
pub enum BinfmtCommand {
    /// Show how the kernel runs ARM binaries now
    Status(ArchFilter),
    /// Register qemu for ARM machines (both unless --arch)
    Register(ArchFilter),
    /// Remove pi-builder's entries; other packages' entries are never touched
    Unregister(ArchFilter),
}

#[derive(Debug, Args)]
pub struct ArchFilter {
    /// Only this machine
    #[arg(long, value_enum)]
    pub arch: Option<ArchArg>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ArchArg {
    Arm,
    Aarch64,
}

impl From<ArchArg> for Arch {
    fn from(a: ArchArg) -> Arch {
        match a {
            ArchArg::Arm => Arch::Arm,
            ArchArg::Aarch64 => Arch::Aarch64,
        }
    }
}

impl Command {
    /// The name of a command that is not implemented yet, `None` for the working ones.
    pub fn planned_name(&self) -> Option<&'static str> {
        Some(match self {
            Command::Base(_) => "base",
            Command::Build(_) => "build",
            Command::Image(_) => "image",
            Command::Flash(_) => "flash",
            Command::Format(_) => "format",
            Command::Install(_) => "install",
            Command::Devices(_) => "devices",
            Command::Shell(_) => "shell",
            Command::Images(_) => "images",
            Command::Rm(_) => "rm",
            Command::Clean(_) => "clean",
            Command::Scan(_) => "scan",
            Command::Status
            | Command::Binfmt(_)
            | Command::Jobs
            | Command::Cancel { .. }
            | Command::Completions { .. } => return None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("pib-client").chain(args.iter().copied()))
    }

    const PLANNED: &[&str] = &[
        "base", "build", "image", "flash", "format", "install", "devices", "shell", "images", "rm",
        "clean", "scan",
    ];

    #[test]
    fn clap_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn every_subcommand_exists() {
        let cmd = Cli::command();
        let names: Vec<&str> = cmd.get_subcommands().map(|c| c.get_name()).collect();
        for name in ["status", "binfmt", "jobs", "cancel", "completions"]
            .iter()
            .chain(PLANNED)
        {
            assert!(names.contains(name), "missing subcommand {name}");
        }
        for sub in cmd.get_subcommands() {
            assert!(
                sub.get_about().is_some(),
                "{} has no description",
                sub.get_name()
            );
        }
        assert!(parse(&["status"]).is_ok());
        assert!(parse(&["jobs"]).is_ok());
        assert!(parse(&["binfmt", "status"]).is_ok());
        assert!(parse(&["binfmt", "register"]).is_ok());
        assert!(parse(&["binfmt", "unregister", "--arch", "arm"]).is_ok());
        assert!(parse(&["cancel", "3"]).is_ok());
        for shell in ["bash", "zsh", "fish", "elvish", "powershell"] {
            assert!(parse(&["completions", shell]).is_ok(), "{shell}");
        }
        assert!(parse(&["completions", "tcsh"]).is_err());
        assert!(parse(&[]).is_err());
    }

    #[test]
    fn planned_commands_take_anything_and_know_their_name() {
        for name in PLANNED {
            let cli = parse(&[name, "--device", "/dev/sdz", "-x", "more"]).unwrap();
            assert_eq!(cli.command.planned_name(), Some(*name));
            let cli = parse(&[name]).unwrap();
            assert_eq!(cli.command.planned_name(), Some(*name));
        }
        assert_eq!(parse(&["status"]).unwrap().command.planned_name(), None);
    }

    #[test]
    fn global_flags_go_anywhere() {
        for args in [
            &["--json", "--no-ask-password", "-q", "binfmt", "register"][..],
            &[
                "binfmt",
                "--json",
                "register",
                "--no-ask-password",
                "--quiet",
            ],
            &["binfmt", "register", "-q", "--json", "--no-ask-password"],
            &["-q", "binfmt", "--no-ask-password", "register", "--json"],
        ] {
            let cli = parse(args).unwrap_or_else(|e| panic!("{args:?}: {e}"));
            assert!(cli.json && cli.no_ask_password && cli.quiet, "{args:?}");
        }
        let cli = parse(&["status"]).unwrap();
        assert!(!cli.json && !cli.no_ask_password && !cli.quiet);
        let cli = parse(&["jobs", "--json"]).unwrap();
        assert!(cli.json);
        let cli = parse(&["build", "--json"]).unwrap();
        assert!(
            cli.json,
            "a known global flag right after a planned command is still a flag"
        );
    }

    #[test]
    fn arch_is_checked_by_clap() {
        for (word, arch) in [("arm", Arch::Arm), ("aarch64", Arch::Aarch64)] {
            let cli = parse(&["binfmt", "register", "--arch", word]).unwrap();
            match cli.command {
                Command::Binfmt(BinfmtCommand::Register(f)) => {
                    assert_eq!(Arch::from(f.arch.unwrap()), arch)
                }
                other => panic!("{other:?}"),
            }
        }
        for bad in ["x86_64", "ARM64", "", "arm,aarch64"] {
            let err = parse(&["binfmt", "register", "--arch", bad]).unwrap_err();
            assert_eq!(err.kind(), clap::error::ErrorKind::InvalidValue, "{bad}");
        }
        let cli = parse(&["binfmt", "unregister"]).unwrap();
        assert!(matches!(
            cli.command,
            Command::Binfmt(BinfmtCommand::Unregister(ArchFilter { arch: None }))
        ));
    }

    #[test]
    fn cancel_takes_a_job_number_or_path_only() {
        let cli = parse(&["cancel", "/org/pibuilder/PiBuilder1/jobs/12"]).unwrap();
        match cli.command {
            Command::Cancel { job } => assert_eq!(job.number(), 12),
            other => panic!("{other:?}"),
        }
        for bad in ["x", "-1", "/org/pibuilder/PiBuilder1/jobs/", "/tmp/3"] {
            assert!(parse(&["cancel", bad]).is_err(), "{bad}");
        }
        assert!(parse(&["cancel"]).is_err());
    }
}
