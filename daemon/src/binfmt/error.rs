use std::io;
use std::path::PathBuf;

use pib_dbus_interfaces::types::Arch;

/// Everything that can go wrong while managing binfmt_misc.
///
/// Each message is meant to be shown to a user as it is, so it says what happened and what to do.
#[derive(Debug, thiserror::Error)]
pub enum BinfmtError {
    #[error(
        "cannot mount binfmt_misc on {}: {source}; check that the kernel has binfmt_misc \
         (`modprobe binfmt_misc`) and that pi-builder runs as root in the host's namespaces",
        dir.display()
    )]
    Mount { dir: PathBuf, source: io::Error },

    #[error("refusing {} as the qemu interpreter: {reason}", path.display())]
    InterpreterRefused { path: PathBuf, reason: Refusal },

    #[error(
        "no qemu interpreter for {arch} binaries is installed (looked for {}); install the \
         statically linked qemu user emulators (Debian/Ubuntu: `apt install qemu-user-static`)",
        join_paths(tried)
    )]
    NoInterpreter { arch: Arch, tried: Vec<PathBuf> },

    #[error(
        "the binfmt_misc entry '{name}' (interpreter {}, flags '{flags}') already handles {arch} \
         binaries but {reason}, so {arch} programs would fail in build containers; pi-builder \
         does not change entries it does not own: disable that one with \
         `update-binfmts --disable {name}` or `echo 0 > /proc/sys/fs/binfmt_misc/{name}` \
         (or remove it with `echo -1 > /proc/sys/fs/binfmt_misc/{name}`), then try again",
        interpreter.display()
    )]
    Conflict {
        arch: Arch,
        name: String,
        interpreter: PathBuf,
        flags: String,
        reason: ConflictReason,
    },

    #[error("cannot access {}: {source}", path.display())]
    Io { path: PathBuf, source: io::Error },

    #[error(
        "the kernel rejected the binfmt_misc registration of '{name}' ({source}); {}; line \
         written: {line}",
        kernel_hint(source)
    )]
    Kernel {
        name: String,
        line: String,
        source: io::Error,
    },

    #[error(
        "the kernel accepted the binfmt_misc entry '{name}' but it reads back differently \
         ({detail}); pi-builder removed it again; please report this as a bug"
    )]
    ReadBack { name: String, detail: String },
}

/// Why a foreign entry stands in the way of emulating a machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ConflictReason {
    #[error(
        "lacks the F (fix-binary) flag, without which the kernel looks for the interpreter \
         inside each container, where it does not exist"
    )]
    NoFixBinary,
    #[error(
        "only catches some of them (position-independent executables, for example, are \
         left out)"
    )]
    PartialMatch,
}

/// The rule an interpreter candidate failed, with the path that failed it.
#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    #[error(
        "it is not one of the packaged qemu interpreters pi-builder accepts for {arch} ({})",
        allowed.join(", ")
    )]
    NotAllowed {
        arch: Arch,
        allowed: &'static [&'static str],
    },
    #[error("it is the interpreter for {found} binaries, not for {expected} binaries")]
    WrongArch { expected: Arch, found: Arch },
    #[error("it is not an absolute path")]
    NotAbsolute,
    #[error("it does not exist")]
    NotFound,
    #[error("it cannot be inspected: {0}")]
    Inaccessible(io::Error),
    #[error("it goes through too many symbolic links")]
    TooManySymlinks,
    #[error(
        "its real path {} contains ':', a newline or non-UTF-8 bytes, which a binfmt_misc \
         registration cannot carry",
        .0.display()
    )]
    UnsafeName(PathBuf),
    #[error("{} is not a regular file", .0.display())]
    NotRegularFile(PathBuf),
    #[error("{} is owned by uid {uid}, not by root", path.display())]
    NotRootOwned { path: PathBuf, uid: u32 },
    #[error(
        "{} is writable by its group or by others (mode {mode:o}), so a non-root user could \
         replace what root runs",
        path.display()
    )]
    Writable { path: PathBuf, mode: u32 },
    #[error("{} is not executable", .0.display())]
    NotExecutable(PathBuf),
    #[error("{} is not an ELF executable", .0.display())]
    NotElf(PathBuf),
    #[error("{} is a malformed ELF file ({detail})", path.display())]
    MalformedElf { path: PathBuf, detail: &'static str },
    #[error("{} is an ELF program for {found}, not for this host ({host})", path.display())]
    NotHostElf {
        path: PathBuf,
        found: String,
        host: &'static str,
    },
    #[error(
        "{} is dynamically linked (it asks for the loader {interp}); with the F flag the \
         kernel runs it inside containers that do not have its libraries, so a statically \
         linked qemu (package qemu-user-static) is required",
        path.display()
    )]
    Dynamic { path: PathBuf, interp: String },
    #[error("pi-builder does not know the ELF machine of this host's architecture")]
    UnsupportedHost,
}

fn join_paths(paths: &[PathBuf]) -> String {
    let shown: Vec<String> = paths.iter().map(|p| p.display().to_string()).collect();
    shown.join(", ")
}

fn kernel_hint(source: &io::Error) -> &'static str {
    match source.raw_os_error() {
        Some(libc::EINVAL) => {
            "the line is malformed or uses a flag this kernel does not know; this is a bug in \
             pi-builder, please report it"
        }
        Some(libc::EEXIST) => {
            "an entry of that name appeared at the same time; look at `pib-client status` and \
             try again"
        }
        Some(libc::ENOENT) | Some(libc::EACCES) | Some(libc::ENOEXEC) => {
            "with the F flag the kernel opens the interpreter at once and could not; check \
             that qemu-user-static is installed and intact"
        }
        Some(libc::EPERM) => {
            "only root in the host's initial namespaces may register emulators; run pib-daemon \
             as a system service"
        }
        _ => "check the kernel log (`dmesg`) for details",
    }
}
