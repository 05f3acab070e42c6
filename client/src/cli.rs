//! The command line: every subcommand and flag the client accepts.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};
use clap_complete::Shell;
use pib_dbus_interfaces::types::{Arch, Board, Distro};

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

    /// List, fetch or import the base root filesystems that builds start from
    #[command(subcommand)]
    Base(BaseCommand),
    /// Build an OS image from stages, as pib.toml and the flags describe it
    #[command(after_long_help = BUILD_HELP)]
    Build(Box<BuildArgs>),
    /// Turn a build into a bootable SD-card image (.img with .bmap, .sha256 and a manifest)
    #[command(after_long_help = IMAGE_HELP)]
    Image(ImageArgs),
    /// Write an image to one or more SD cards at once and verify it
    #[command(after_long_help = FLASH_HELP)]
    Flash(FlashArgs),
    /// Give an SD card the default empty layout (FAT32 PIBOOT, ext4 PIROOT)
    Format(FormatArgs),
    /// Write a build straight to SD cards (its disk image, made on the fly)
    Install(InstallArgs),
    /// List the disks pi-builder would write, and why it refuses the others
    Devices(DevicesArgs),
    /// Run a command, or an interactive shell, in a throwaway container of a built image
    #[command(after_long_help = SHELL_HELP)]
    Shell(ShellArgs),
    /// List the built images you may see
    Images,
    /// Remove a built image
    Rm {
        /// The image's name, as `pib-client images` lists it
        #[arg(value_name = "NAME")]
        name: String,
    },
    /// Remove your built images and dangling build layers
    Clean(CleanArgs),
    /// Find Raspberry Pi boards on the local networks, by their MAC address prefixes
    #[command(after_long_help = SCAN_HELP)]
    Scan(ScanArgs),
}

const SCAN_HELP: &str = "\
The service sends an ARP request to every address of the IPv4 subnets of each network
interface that is up (or of those named with --interface) and lists the hosts whose MAC
address belongs to Raspberry Pi. Subnets larger than the service's bound (1024 addresses per
interface by default, a /22) are skipped and said so; the sweep stops after --timeout
seconds. With --json the last line is the job's result: result.hosts holds ip, mac,
interface and hostname of each board.";

#[derive(Debug, Args)]
pub struct ScanArgs {
    /// Only this network interface; repeatable [default: every interface that is up]
    #[arg(short = 'i', long = "interface", value_name = "IFACE")]
    pub interfaces: Vec<String>,
    /// Stop the sweep after this many seconds, 1 to 60 [default: 8]
    #[arg(long, value_name = "SECONDS", value_parser = clap::value_parser!(u32).range(1..=60))]
    pub timeout: Option<u32>,
    /// Do not look the boards' host names up
    #[arg(long)]
    pub no_names: bool,
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

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DistroArg {
    /// Arch Linux ARM
    Arch,
    /// Debian (the base of Raspberry Pi OS)
    Debian,
}

impl From<DistroArg> for Distro {
    fn from(d: DistroArg) -> Distro {
        match d {
            DistroArg::Arch => Distro::Arch,
            DistroArg::Debian => Distro::Debian,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum BoardArg {
    Rpi2,
    Rpi3,
    Rpi4,
    Rpi5,
    Zero2w,
}

impl From<BoardArg> for Board {
    fn from(b: BoardArg) -> Board {
        match b {
            BoardArg::Rpi2 => Board::Rpi2,
            BoardArg::Rpi3 => Board::Rpi3,
            BoardArg::Rpi4 => Board::Rpi4,
            BoardArg::Rpi5 => Board::Rpi5,
            BoardArg::Zero2w => Board::Zero2w,
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum BaseCommand {
    /// List the imported bases
    List,
    /// Download (Arch Linux ARM) or bootstrap (Debian) a base, unless it is cached
    Fetch(FetchArgs),
    /// Import a root filesystem tarball (plain, gzip, xz or zstd) as a base
    Import(ImportArgs),
}

#[derive(Debug, Args)]
pub struct FetchArgs {
    #[arg(long, value_enum)]
    pub distro: DistroArg,
    #[arg(long, value_enum)]
    pub arch: ArchArg,
    /// The board (Arch Linux ARM needs it to pick the tarball)
    #[arg(long, value_enum)]
    pub board: Option<BoardArg>,
    /// Debian suite [default: the daemon's configuration]
    #[arg(long, value_name = "SUITE")]
    pub suite: Option<String>,
    /// Check the source for a newer base even when one is cached
    #[arg(long)]
    pub refresh: bool,
}

#[derive(Debug, Args)]
pub struct ImportArgs {
    /// The tarball; opened by pib-client with your rights and handed over, `-` for stdin
    #[arg(value_name = "TARBALL")]
    pub tarball: PathBuf,
    #[arg(long, value_enum)]
    pub distro: DistroArg,
    #[arg(long, value_enum)]
    pub arch: ArchArg,
    #[arg(long, value_enum)]
    pub board: Option<BoardArg>,
}

const BUILD_HELP: &str = "\
Settings come from the project file (pib.toml in the current directory, or -c FILE), then the
flags, which override it. The file takes the keys name, distro, board, arch, stages (array),
stage_dirs (array), hostname, locale, timezone, mirror, set (table of KEY = \"VALUE\") and
base_file; any other key is an error. Relative paths in the file are taken from the file's
directory, relative paths on the command line from the current directory. --stages-dir replaces
the file's stage_dirs; --set adds to the file's set, overriding equal keys.

Defaults: distro debian, board rpi4, arch aarch64, stages \"__init__ os __cleanup__\", name
DISTRO-BOARD-ARCH. Hostname, locale, timezone and mirror are left to the stages' own defaults
unless given. Stages are looked up in the stage dirs in order, then among the bundled ones.";

/// Everything `build` takes; every setting is optional here because pib.toml may give it.
#[derive(Debug, Default, Args)]
pub struct BuildArgs {
    /// The project file [default: ./pib.toml, when it exists]
    #[arg(short = 'c', long = "config", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// The base family [default: debian]
    #[arg(long, value_enum)]
    pub distro: Option<DistroArg>,
    /// The board the image is for [default: rpi4]
    #[arg(long, value_enum)]
    pub board: Option<BoardArg>,
    /// The machine: 32-bit arm or 64-bit aarch64 [default: aarch64]
    #[arg(long, value_enum)]
    pub arch: Option<ArchArg>,
    /// Stage names in order, separated by spaces or commas [default: "__init__ os __cleanup__"]
    #[arg(long, value_name = "STAGES")]
    pub stages: Option<String>,
    /// A directory of your own stages, searched before the bundled ones; repeatable
    #[arg(long = "stages-dir", value_name = "DIR")]
    pub stages_dir: Vec<PathBuf>,
    /// The system's host name
    #[arg(long, value_name = "HOSTNAME")]
    pub hostname: Option<String>,
    /// e.g. en_US.UTF-8
    #[arg(long, value_name = "LOCALE")]
    pub locale: Option<String>,
    /// e.g. Europe/Berlin
    #[arg(long, value_name = "TZ")]
    pub timezone: Option<String>,
    /// The package mirror the stages use (build arg REPO_URL)
    #[arg(long, value_name = "URL")]
    pub mirror: Option<String>,
    /// A further build arg for the stages (each must be declared by a chosen stage); repeatable
    #[arg(long = "set", value_name = "KEY=VALUE", value_parser = parse_set)]
    pub set: Vec<(String, String)>,
    /// A root filesystem tarball to import and build from, instead of the cached base
    #[arg(long, value_name = "TARBALL", conflicts_with = "base")]
    pub base_file: Option<PathBuf>,
    /// The base to build from, by name (see `pib-client base list`) [default: the one for
    /// distro, board and arch]
    #[arg(long, value_name = "NAME")]
    pub base: Option<String>,
    /// Rebuild every step instead of reusing Docker's cache
    #[arg(long)]
    pub no_cache: bool,
    /// The image's name [default: DISTRO-BOARD-ARCH]
    #[arg(long, value_name = "NAME")]
    pub name: Option<String>,
}

/// `KEY=VALUE`, with KEY a build-arg name. The options that have flags of their own cannot be
/// set this way: two spellings of one setting would need a rule for which one wins.
pub fn parse_set(s: &str) -> Result<(String, String), String> {
    let Some((key, value)) = s.split_once('=') else {
        return Err(format!("{s:?} is not KEY=VALUE"));
    };
    check_arg_name(key)?;
    Ok((key.to_owned(), value.to_owned()))
}

/// The build args that have options of their own, with the flag that sets each.
pub const RESERVED_ARGS: &[(&str, &str)] = &[
    ("BOARD", "--board"),
    ("ARCH", "--arch"),
    ("DISTRO", "--distro"),
    ("HOSTNAME", "--hostname"),
    ("LOCALE", "--locale"),
    ("TIMEZONE", "--timezone"),
    ("REPO_URL", "--mirror"),
];

/// Docker's grammar for ARG names, which is also what a shell accepts as a variable name.
pub fn check_arg_name(key: &str) -> Result<(), String> {
    if key.is_empty() {
        return Err("the KEY of KEY=VALUE is empty".to_owned());
    }
    let mut chars = key.chars();
    let first_ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_');
    if !first_ok || !chars.all(|c| c.is_ascii_alphanumeric() || c == '_') {
        return Err(format!(
            "{key:?} is not a build-arg name: use letters, digits and '_', not starting with a \
             digit"
        ));
    }
    if let Some((_, flag)) = RESERVED_ARGS.iter().find(|(k, _)| *k == key) {
        return Err(format!("{key} has an option of its own: use {flag}"));
    }
    Ok(())
}

const SHELL_HELP: &str = "\
Without COMMAND, an interactive shell: when stdin and stdout are a terminal, it is put in raw
mode and handed to the container (Ctrl-C then goes to the container, as with ssh). With
COMMAND, stdin, stdout and stderr are handed over as they are, without a terminal unless -t is
given. Ctrl-C without a terminal cancels the job, which removes the container.

The exit status is the command's; pib-client's own failures exit 1 (2 for usage, 3 when not
allowed, 130 when cancelled), which a command may also use.";

#[derive(Debug, Args)]
pub struct ShellArgs {
    /// The built image, as `pib-client images` lists it
    #[arg(value_name = "NAME")]
    pub name: String,
    /// Give COMMAND a terminal too (needs stdin and stdout to be one)
    #[arg(short = 't', long = "tty")]
    pub tty: bool,
    /// The command to run and its arguments, after `--`
    #[arg(last = true, value_name = "COMMAND")]
    pub command: Vec<String>,
}

const IMAGE_HELP: &str = "\
Writes FILE (the image; FILE.zst or FILE.xz with --compress), FILE.bmap (for bmaptool and
`pib-client flash`), a .sha256 of what was written, and FILE.json, an entry for Raspberry Pi
Imager's custom repository. Nothing appears unless the job succeeds.

The layout comes from the [image] table of pib.toml, then --layout FILE (the same keys), then
the flags. Sizes take K, M, G or T: --boot-size 256M, --size 8G, --root-headroom 1G.";

#[derive(Debug, Args)]
pub struct ImageArgs {
    /// The built image, as `pib-client images` lists it [default: the project's name]
    #[arg(value_name = "NAME")]
    pub name: Option<String>,
    /// Where to write the image ("-" for stdout: the image only, no side files)
    #[arg(short = 'o', long = "output", value_name = "FILE")]
    pub output: PathBuf,
    /// The project file [default: ./pib.toml, when it exists]
    #[arg(short = 'c', long = "config", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// A layout file: the keys of pib.toml's [image] table
    #[arg(long, value_name = "FILE")]
    pub layout: Option<PathBuf>,
    /// The FAT boot partition's size [default: 256M]
    #[arg(long, value_name = "SIZE", value_parser = crate::layout::parse_size)]
    pub boot_size: Option<u64>,
    /// The whole image's size; root gets what the others leave
    #[arg(long, value_name = "SIZE", value_parser = crate::layout::parse_size, conflicts_with = "root_headroom")]
    pub size: Option<u64>,
    /// Free space in root on top of its content [default: a quarter of it, at least 256M]
    #[arg(long, value_name = "SIZE", value_parser = crate::layout::parse_size)]
    pub root_headroom: Option<u64>,
    /// Add a third, empty ext4 partition of this size
    #[arg(long, value_name = "SIZE", value_parser = crate::layout::parse_size)]
    pub data_size: Option<u64>,
    /// The data partition's label [default: PIDATA]
    #[arg(long, value_name = "LABEL")]
    pub data_label: Option<String>,
    /// The host name written into the image [default: the build's]
    #[arg(long, value_name = "HOSTNAME")]
    pub hostname: Option<String>,
    /// Compress the image (multithreaded)
    #[arg(long, value_enum)]
    pub compress: Option<CompressArg>,
    /// Replace existing output files
    #[arg(short = 'f', long)]
    pub force: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum CompressArg {
    Zstd,
    Xz,
}

impl CompressArg {
    pub fn word(self) -> &'static str {
        match self {
            CompressArg::Zstd => "zstd",
            CompressArg::Xz => "xz",
        }
    }
}

const FLASH_HELP: &str = "\
IMAGE is a file you can read: a plain image, or .zst/.xz compressed (decompressed on the way).
Its block map (IMAGE.bmap, or IMAGE without .zst/.xz plus .bmap, or --bmap FILE) is used when
present: only mapped blocks are written, and its checksums are verified. The partition table
is written last, so an interrupted write never leaves a card that looks good. Every card is
read back and compared unless --no-verify. On a terminal you are asked to confirm unless
--yes; without a terminal, --yes is required.

Without a DEVICE, a terminal shows the cards the daemon lists, with model, size, bus and
whether pi-builder would write each (and why not): move with the arrow keys or j/k, choose
with Enter, leave with q or Esc. Disks the daemon refuses cannot be chosen. With --json, or
without a terminal, a DEVICE is required.";

#[derive(Debug, Args)]
pub struct FlashArgs {
    /// The image to write
    #[arg(value_name = "IMAGE")]
    pub image: PathBuf,
    /// The cards (/dev/sdX, /dev/mmcblkN or /dev/disk/by-id/...); several are written at once.
    /// None: pick one on the terminal
    #[arg(value_name = "DEVICE")]
    pub devices: Vec<String>,
    /// The image's block map [default: IMAGE.bmap when it exists]
    #[arg(long, value_name = "FILE")]
    pub bmap: Option<PathBuf>,
    /// Write every block, even with a block map beside the image
    #[arg(long, conflicts_with = "bmap")]
    pub no_bmap: bool,
    #[command(flatten)]
    pub write: CardWrite,
}

/// How cards are written, for flash and install.
#[derive(Debug, Args)]
pub struct CardWrite {
    /// Skip reading the cards back
    #[arg(long)]
    pub no_verify: bool,
    /// Power the cards off when done
    #[arg(long)]
    pub eject: bool,
    /// Do not ask for confirmation
    #[arg(short = 'y', long)]
    pub yes: bool,
}

#[derive(Debug, Args)]
pub struct FormatArgs {
    /// The card
    #[arg(value_name = "DEVICE")]
    pub device: String,
    /// The FAT boot partition's size [default: 256M]
    #[arg(long, value_name = "SIZE", value_parser = crate::layout::parse_size)]
    pub boot_size: Option<u64>,
    /// Do not ask for confirmation
    #[arg(short = 'y', long)]
    pub yes: bool,
}

#[derive(Debug, Args)]
pub struct InstallArgs {
    /// The built image, as `pib-client images` lists it
    #[arg(value_name = "NAME")]
    pub name: String,
    /// The cards
    #[arg(value_name = "DEVICE", required = true)]
    pub devices: Vec<String>,
    #[command(flatten)]
    pub write: CardWrite,
}

#[derive(Debug, Args)]
pub struct DevicesArgs {
    /// Also the system disk, non-removable and refused disks
    #[arg(long)]
    pub all: bool,
}

#[derive(Debug, Args)]
pub struct CleanArgs {
    /// Everyone's images, not only yours (needs org.pibuilder.manage)
    #[arg(long)]
    pub all_users: bool,
    /// The imported bases too (shared by all users: needs org.pibuilder.manage)
    #[arg(long)]
    pub bases: bool,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("pib-client").chain(args.iter().copied()))
    }

    const COMMANDS: &[&str] = &[
        "image",
        "flash",
        "format",
        "install",
        "devices",
        "status",
        "binfmt",
        "jobs",
        "cancel",
        "completions",
        "base",
        "build",
        "shell",
        "images",
        "rm",
        "clean",
        "scan",
    ];

    #[test]
    fn clap_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn every_subcommand_exists() {
        let cmd = Cli::command();
        let names: Vec<&str> = cmd.get_subcommands().map(|c| c.get_name()).collect();
        for name in COMMANDS {
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
    fn scan_takes_interfaces_and_a_bounded_timeout() {
        let cli = parse(&[
            "scan",
            "-i",
            "eth0",
            "--interface",
            "wlan0",
            "--timeout",
            "3",
        ])
        .unwrap();
        let Command::Scan(a) = cli.command else {
            panic!()
        };
        assert_eq!(a.interfaces, ["eth0", "wlan0"]);
        assert_eq!(a.timeout, Some(3));
        assert!(!a.no_names);
        let Command::Scan(a) = parse(&["scan", "--no-names"]).unwrap().command else {
            panic!()
        };
        assert!(a.interfaces.is_empty() && a.timeout.is_none() && a.no_names);
        for bad in ["0", "61", "x", "-1"] {
            assert!(parse(&["scan", "--timeout", bad]).is_err(), "{bad}");
        }
        assert!(
            parse(&["scan", "eth0"]).is_err(),
            "interfaces are named with -i"
        );
    }

    #[test]
    fn card_commands_parse() {
        let cli = parse(&[
            "flash",
            "pi.img.zst",
            "/dev/sdb",
            "/dev/sdc",
            "--yes",
            "--eject",
        ])
        .unwrap();
        let Command::Flash(a) = cli.command else {
            panic!()
        };
        assert_eq!(a.devices, ["/dev/sdb", "/dev/sdc"]);
        assert!(a.write.yes && a.write.eject && !a.write.no_verify);
        let Command::Flash(a) = parse(&["flash", "pi.img"]).unwrap().command else {
            panic!()
        };
        assert!(a.devices.is_empty(), "no device: the picker");
        assert!(parse(&["flash", "pi.img", "/dev/sdb", "--bmap", "x", "--no-bmap"]).is_err());
        let cli = parse(&["format", "/dev/sdb", "--boot-size", "128M"]).unwrap();
        let Command::Format(f) = cli.command else {
            panic!()
        };
        assert_eq!(f.boot_size, Some(128 << 20));
        assert!(parse(&["install", "kiosk", "/dev/sdb", "--no-verify"]).is_ok());
        assert!(parse(&["devices", "--all", "--json"]).is_ok());
        assert!(parse(&[
            "image",
            "-o",
            "x.img",
            "--size",
            "4G",
            "--root-headroom",
            "1G"
        ])
        .is_err());
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
        let cli = parse(&["scan", "--json"]).unwrap();
        assert!(cli.json);
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

    #[test]
    fn base_subcommands() {
        assert!(matches!(
            parse(&["base", "list"]).unwrap().command,
            Command::Base(BaseCommand::List)
        ));
        let cli = parse(&[
            "base",
            "fetch",
            "--distro",
            "arch",
            "--arch",
            "arm",
            "--board",
            "rpi2",
            "--refresh",
        ])
        .unwrap();
        match cli.command {
            Command::Base(BaseCommand::Fetch(f)) => {
                assert_eq!(Distro::from(f.distro), Distro::Arch);
                assert_eq!(Arch::from(f.arch), Arch::Arm);
                assert_eq!(f.board.map(Board::from), Some(Board::Rpi2));
                assert!(f.refresh);
                assert_eq!(f.suite, None);
            }
            other => panic!("{other:?}"),
        }
        // distro and arch are required, and only the known words are taken.
        assert!(parse(&["base", "fetch", "--distro", "debian"]).is_err());
        assert!(parse(&["base", "fetch", "--distro", "fedora", "--arch", "arm"]).is_err());
        assert!(
            parse(&["base", "fetch", "--distro", "arch", "--arch", "arm", "--board", "rpi9"])
                .is_err()
        );
        let cli = parse(&[
            "base",
            "import",
            "root.tar.zst",
            "--distro",
            "debian",
            "--arch",
            "aarch64",
        ])
        .unwrap();
        match cli.command {
            Command::Base(BaseCommand::Import(i)) => {
                assert_eq!(i.tarball, PathBuf::from("root.tar.zst"));
                assert_eq!(i.board, None);
            }
            other => panic!("{other:?}"),
        }
        assert!(parse(&["base", "import", "--distro", "debian", "--arch", "arm"]).is_err());
        for board in ["rpi2", "rpi3", "rpi4", "rpi5", "zero2w"] {
            let cli = parse(&[
                "base", "fetch", "--distro", "arch", "--arch", "arm", "--board", board,
            ])
            .unwrap();
            let Command::Base(BaseCommand::Fetch(f)) = cli.command else {
                panic!()
            };
            assert_eq!(Board::from(f.board.unwrap()).as_str(), board);
        }
    }

    #[test]
    fn build_flags() {
        let cli = parse(&[
            "build",
            "-c",
            "x/pib.toml",
            "--distro",
            "arch",
            "--stages",
            "__init__ os __cleanup__",
            "--stages-dir",
            "a",
            "--stages-dir",
            "b",
            "--set",
            "FOO=bar=baz",
            "--set",
            "EMPTY=",
            "--no-cache",
            "--name",
            "mine",
        ])
        .unwrap();
        let Command::Build(b) = cli.command else {
            panic!()
        };
        assert_eq!(b.config, Some(PathBuf::from("x/pib.toml")));
        assert_eq!(b.distro, Some(DistroArg::Arch));
        assert_eq!(b.board, None);
        assert_eq!(b.stages_dir, [PathBuf::from("a"), PathBuf::from("b")]);
        assert_eq!(
            b.set,
            [
                ("FOO".to_owned(), "bar=baz".to_owned()),
                ("EMPTY".to_owned(), String::new())
            ]
        );
        assert!(b.no_cache);
        assert_eq!(b.name.as_deref(), Some("mine"));
        assert!(parse(&["build", "--base-file", "x.tar", "--base", "y"]).is_err());
        let err = parse(&["build", "--set", "NOEQUALS"]).unwrap_err();
        assert_eq!(err.kind(), clap::error::ErrorKind::ValueValidation);
    }

    #[test]
    fn set_takes_key_value_with_a_build_arg_name() {
        assert_eq!(parse_set("A=1"), Ok(("A".into(), "1".into())));
        assert_eq!(parse_set("_x9=a b"), Ok(("_x9".into(), "a b".into())));
        assert_eq!(parse_set("K=a=b"), Ok(("K".into(), "a=b".into())));
        assert_eq!(parse_set("K="), Ok(("K".into(), "".into())));
        for (bad, says) in [
            ("K", "is not KEY=VALUE"),
            ("", "is not KEY=VALUE"),
            ("=v", "empty"),
            ("9K=v", "not a build-arg name"),
            ("A-B=v", "not a build-arg name"),
            ("A B=v", "not a build-arg name"),
            ("É=v", "not a build-arg name"),
            ("HOSTNAME=x", "use --hostname"),
            ("REPO_URL=x", "use --mirror"),
        ] {
            let err = parse_set(bad).unwrap_err();
            assert!(err.contains(says), "{bad:?}: {err}");
        }
    }

    #[test]
    fn shell_takes_its_command_after_a_double_dash() {
        let cli = parse(&["shell", "img"]).unwrap();
        let Command::Shell(s) = cli.command else {
            panic!()
        };
        assert_eq!(s.name, "img");
        assert!(s.command.is_empty() && !s.tty);
        let cli = parse(&["shell", "-t", "img", "--", "ls", "-l", "--json"]).unwrap();
        assert!(!cli.json, "everything after -- belongs to the command");
        let Command::Shell(s) = cli.command else {
            panic!()
        };
        assert!(s.tty);
        assert_eq!(s.command, ["ls", "-l", "--json"]);
        assert!(parse(&["shell"]).is_err());
    }

    #[test]
    fn images_rm_clean() {
        assert!(matches!(
            parse(&["images", "--json"]).unwrap().command,
            Command::Images
        ));
        match parse(&["rm", "debian-rpi4-aarch64"]).unwrap().command {
            Command::Rm { name } => assert_eq!(name, "debian-rpi4-aarch64"),
            other => panic!("{other:?}"),
        }
        assert!(parse(&["rm"]).is_err());
        match parse(&["clean", "--all-users", "--bases"]).unwrap().command {
            Command::Clean(c) => assert!(c.all_users && c.bases),
            other => panic!("{other:?}"),
        }
    }
}
