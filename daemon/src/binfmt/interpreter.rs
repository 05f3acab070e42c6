//! Choosing and checking the qemu binary that the kernel will run for ARM programs.
//!
//! With the F flag the kernel opens the interpreter as root once and then runs it for every
//! matching program on the system, inside any container. So it must be a packaged binary that
//! only root can change, and it must not need anything from the file system it runs in.

use std::fs::{self, File};
use std::io::{self, Read, Seek, SeekFrom};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use pib_dbus_interfaces::types::Arch;

use super::error::{BinfmtError, Refusal};
use super::machine::{elf, machine};

/// Linux gives up after 40 links; a packaged qemu needs one or two.
const MAX_SYMLINKS: usize = 40;

/// A qemu binary that passed every check, for one machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Interpreter {
    arch: Arch,
    path: PathBuf,
    resolved: PathBuf,
}

impl Interpreter {
    pub fn arch(&self) -> Arch {
        self.arch
    }

    /// The allowlisted path it was chosen by.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The real file, with every symbolic link resolved. This is what gets registered, so that
    /// the kernel opens exactly the file that was checked.
    pub fn resolved(&self) -> &Path {
        &self.resolved
    }
}

/// The packaged interpreters accepted for `arch`, in order of preference.
pub fn candidates(arch: Arch) -> &'static [&'static str] {
    machine(arch).interpreters
}

/// Picks the interpreter for `arch`: the configured one if any (it must be on the allowlist),
/// otherwise the first installed candidate that passes the checks.
pub fn select_interpreter(
    arch: Arch,
    configured: Option<&Path>,
) -> Result<Interpreter, BinfmtError> {
    if let Some(path) = configured {
        return validate_interpreter(arch, path);
    }
    let mut tried = Vec::new();
    let mut first_refusal = None;
    for candidate in candidates(arch) {
        let path = Path::new(candidate);
        tried.push(path.to_owned());
        match validate_interpreter(arch, path) {
            Ok(interpreter) => return Ok(interpreter),
            Err(BinfmtError::InterpreterRefused {
                reason: Refusal::NotFound,
                ..
            }) => {}
            Err(e) => {
                tracing::info!(candidate, error = %e, "skipping qemu interpreter candidate");
                first_refusal.get_or_insert(e);
            }
        }
    }
    // An installed but unusable qemu says more about what to fix than "install qemu" would.
    Err(first_refusal.unwrap_or(BinfmtError::NoInterpreter { arch, tried }))
}

/// Checks that `path` is on the allowlist for `arch` and that the file it leads to is safe and
/// usable as a fix-binary interpreter.
pub fn validate_interpreter(arch: Arch, path: &Path) -> Result<Interpreter, BinfmtError> {
    let refuse = |reason| BinfmtError::InterpreterRefused {
        path: path.to_owned(),
        reason,
    };
    let allowed = candidates(arch);
    if !allowed.iter().any(|a| Path::new(a) == path) {
        return Err(refuse(Refusal::NotAllowed { arch, allowed }));
    }
    let resolved = validate_file(path).map_err(refuse)?;
    Ok(Interpreter {
        arch,
        path: path.to_owned(),
        resolved,
    })
}

/// Everything but the allowlist: ownership and modes along the way, then the ELF itself.
/// Returns the real path of the file.
pub(crate) fn validate_file(path: &Path) -> Result<PathBuf, Refusal> {
    let resolved = resolve_checked(path)?;
    // A ':' would end the interpreter field of the register line, a newline the line itself.
    match resolved.to_str() {
        Some(s) if !s.contains([':', '\n']) => {}
        _ => return Err(Refusal::UnsafeName(resolved)),
    }
    // The checks above found a regular file here; if a link or a FIFO took its place since,
    // fail (O_NOFOLLOW) or at least do not hang (O_NONBLOCK) rather than read something else.
    let mut file = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(&resolved)
        .map_err(inaccessible)?;
    // The checks that matter are made on the open file, so they describe the bytes read below.
    let meta = file.metadata().map_err(Refusal::Inaccessible)?;
    if !meta.file_type().is_file() {
        return Err(Refusal::NotRegularFile(resolved));
    }
    check_owner_and_mode(&resolved, meta.uid(), meta.mode())?;
    if meta.mode() & 0o111 == 0 {
        return Err(Refusal::NotExecutable(resolved));
    }
    check_host_static_elf(&mut file, &resolved)?;
    Ok(resolved)
}

fn inaccessible(e: io::Error) -> Refusal {
    if e.kind() == io::ErrorKind::NotFound {
        Refusal::NotFound
    } else {
        Refusal::Inaccessible(e)
    }
}

/// Follows `path` link by link. Whoever can rewrite a link or rename an entry in any directory
/// on the way can swap the interpreter, so every directory visited must be root's alone.
fn resolve_checked(path: &Path) -> Result<PathBuf, Refusal> {
    if !path.is_absolute() {
        return Err(Refusal::NotAbsolute);
    }
    let mut current = path.to_owned();
    for _ in 0..MAX_SYMLINKS {
        let (Some(parent), Some(name)) = (current.parent(), current.file_name()) else {
            return Err(Refusal::NotRegularFile(current));
        };
        let parent = fs::canonicalize(parent).map_err(inaccessible)?;
        check_directories(&parent)?;
        let here = parent.join(name);
        let meta = fs::symlink_metadata(&here).map_err(inaccessible)?;
        if meta.file_type().is_file() {
            return Ok(here);
        }
        if !meta.file_type().is_symlink() {
            return Err(Refusal::NotRegularFile(here));
        }
        let target = fs::read_link(&here).map_err(inaccessible)?;
        // Relative targets are relative to the link's directory; join keeps absolute ones.
        current = parent.join(target);
    }
    Err(Refusal::TooManySymlinks)
}

/// Checks `dir` (already canonical) and all its ancestors.
fn check_directories(dir: &Path) -> Result<(), Refusal> {
    for d in dir.ancestors() {
        let meta = fs::metadata(d).map_err(Refusal::Inaccessible)?;
        check_owner_and_mode(d, meta.uid(), meta.mode())?;
    }
    Ok(())
}

fn check_owner_and_mode(path: &Path, uid: u32, mode: u32) -> Result<(), Refusal> {
    if uid != 0 {
        return Err(Refusal::NotRootOwned {
            path: path.to_owned(),
            uid,
        });
    }
    // The sticky bit does not help: whoever may create a file in /tmp may create one where we
    // would look.
    if mode & 0o022 != 0 {
        return Err(Refusal::Writable {
            path: path.to_owned(),
            mode: mode & 0o7777,
        });
    }
    Ok(())
}

/// The ELF identity of programs this host runs natively.
struct HostElf {
    name: &'static str,
    class: u8,
    machine: u16,
}

#[cfg(target_arch = "x86_64")]
const HOST: Option<HostElf> = Some(HostElf {
    name: "x86_64",
    class: elf::CLASS64,
    machine: elf::EM_X86_64,
});
#[cfg(target_arch = "aarch64")]
const HOST: Option<HostElf> = Some(HostElf {
    name: "aarch64",
    class: elf::CLASS64,
    machine: elf::EM_AARCH64,
});
#[cfg(target_arch = "riscv64")]
const HOST: Option<HostElf> = Some(HostElf {
    name: "riscv64",
    class: elf::CLASS64,
    machine: 243, // EM_RISCV
});
#[cfg(target_arch = "x86")]
const HOST: Option<HostElf> = Some(HostElf {
    name: "i386",
    class: elf::CLASS32,
    machine: 3, // EM_386
});
#[cfg(not(any(
    target_arch = "x86_64",
    target_arch = "aarch64",
    target_arch = "riscv64",
    target_arch = "x86"
)))]
const HOST: Option<HostElf> = None;

const PT_INTERP: u32 = 3;
/// e_phnum value meaning "the count is elsewhere"; no qemu build needs that many headers.
const PN_XNUM: u16 = 0xffff;

/// Requires a little-endian executable (ET_EXEC, or ET_DYN for static-pie as Debian builds
/// qemu-user-static) for the host's machine, without a PT_INTERP program header. A dynamic
/// interpreter would be started by its loader from inside the container, where neither the
/// loader nor qemu's libraries exist.
pub(crate) fn check_host_static_elf(file: &mut File, path: &Path) -> Result<(), Refusal> {
    let host = HOST.ok_or(Refusal::UnsupportedHost)?;
    let malformed = |detail| Refusal::MalformedElf {
        path: path.to_owned(),
        detail,
    };
    let mut h = [0u8; 64];
    let got = read_up_to(file, &mut h).map_err(Refusal::Inaccessible)?;
    if got < 52 || h[..4] != elf::MAGIC {
        return Err(Refusal::NotElf(path.to_owned()));
    }
    let class = h[4];
    if h[5] != elf::DATA_LE || !(class == elf::CLASS32 || class == elf::CLASS64) {
        return Err(Refusal::NotHostElf {
            path: path.to_owned(),
            found: format!("ELF class {class}, data encoding {}", h[5]),
            host: host.name,
        });
    }
    let u16_at = |o: usize| u16::from_le_bytes([h[o], h[o + 1]]);
    let u32_at = |o: usize| u32::from_le_bytes([h[o], h[o + 1], h[o + 2], h[o + 3]]);
    let e_type = u16_at(16);
    let e_machine = u16_at(18);
    if class != host.class || e_machine != host.machine {
        return Err(Refusal::NotHostElf {
            path: path.to_owned(),
            found: format!(
                "{}-bit machine {e_machine}",
                if class == elf::CLASS64 { 64 } else { 32 }
            ),
            host: host.name,
        });
    }
    if e_type != elf::ET_EXEC && e_type != elf::ET_DYN {
        return Err(Refusal::NotElf(path.to_owned()));
    }
    let (phoff, phentsize, phnum, min_entsize) = if class == elf::CLASS64 {
        if got < 64 {
            return Err(malformed("truncated header"));
        }
        let phoff = u64::from_le_bytes(h[32..40].try_into().map_err(|_| malformed("header"))?);
        (phoff, u16_at(54), u16_at(56), 56)
    } else {
        (u64::from(u32_at(28)), u16_at(42), u16_at(44), 32)
    };
    if phnum == 0 || phnum == PN_XNUM {
        return Err(malformed("no usable program header count"));
    }
    if usize::from(phentsize) < min_entsize {
        return Err(malformed("program header entries too small"));
    }
    let mut table = vec![0u8; usize::from(phentsize) * usize::from(phnum)];
    file.seek(SeekFrom::Start(phoff))
        .map_err(Refusal::Inaccessible)?;
    file.read_exact(&mut table)
        .map_err(|_| malformed("program headers beyond the end of the file"))?;
    for ph in table.chunks_exact(usize::from(phentsize)) {
        let p_type = u32::from_le_bytes([ph[0], ph[1], ph[2], ph[3]]);
        if p_type != PT_INTERP {
            continue;
        }
        let (offset, size) = if class == elf::CLASS64 {
            let r = |o: usize| ph[o..o + 8].try_into().map(u64::from_le_bytes);
            (
                r(8).map_err(|_| malformed("program header"))?,
                r(32).map_err(|_| malformed("program header"))?,
            )
        } else {
            let r = |o: usize| ph[o..o + 4].try_into().map(u32::from_le_bytes);
            (
                u64::from(r(4).map_err(|_| malformed("program header"))?),
                u64::from(r(16).map_err(|_| malformed("program header"))?),
            )
        };
        return Err(Refusal::Dynamic {
            path: path.to_owned(),
            interp: read_interp(file, offset, size),
        });
    }
    Ok(())
}

/// The loader name, for the message only; a dynamic file is refused whether or not it reads.
fn read_interp(file: &mut File, offset: u64, size: u64) -> String {
    let mut buf = vec![0u8; size.min(4096) as usize];
    if file.seek(SeekFrom::Start(offset)).is_err() || file.read_exact(&mut buf).is_err() {
        return "an unreadable loader".into();
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}

fn read_up_to(file: &mut File, buf: &mut [u8]) -> io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match file.read(&mut buf[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn reason(e: BinfmtError) -> Refusal {
        match e {
            BinfmtError::InterpreterRefused { reason, .. } => reason,
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    #[test]
    fn paths_outside_the_allowlist_are_refused() {
        let e = validate_interpreter(Arch::Aarch64, Path::new("/tmp/evil-qemu")).unwrap_err();
        let msg = e.to_string();
        assert!(matches!(reason(e), Refusal::NotAllowed { .. }));
        assert!(msg.contains("/tmp/evil-qemu"), "{msg}");
        assert!(msg.contains("/usr/bin/qemu-aarch64-static"), "{msg}");

        // A configured path must be on the list for that machine, even if it is a good qemu.
        let e = select_interpreter(Arch::Arm, Some(Path::new("/usr/bin/qemu-aarch64-static")))
            .unwrap_err();
        assert!(matches!(
            reason(e),
            Refusal::NotAllowed {
                arch: Arch::Arm,
                ..
            }
        ));
        // Equivalent spellings are not resolved first: the list is of exact packaged paths.
        let e = validate_interpreter(
            Arch::Aarch64,
            Path::new("/usr/lib/../bin/qemu-aarch64-static"),
        )
        .unwrap_err();
        assert!(matches!(reason(e), Refusal::NotAllowed { .. }));
    }

    #[test]
    fn allowlist_has_static_plain_and_debian_binfmt_names() {
        assert_eq!(
            candidates(Arch::Aarch64),
            [
                "/usr/bin/qemu-aarch64-static",
                "/usr/bin/qemu-aarch64",
                "/usr/libexec/qemu-binfmt/aarch64-binfmt-P"
            ]
        );
        assert_eq!(
            candidates(Arch::Arm),
            [
                "/usr/bin/qemu-arm-static",
                "/usr/bin/qemu-arm",
                "/usr/libexec/qemu-binfmt/arm-binfmt-P"
            ]
        );
    }

    #[test]
    fn dynamic_programs_are_refused() {
        let r = validate_file(Path::new("/bin/ls")).unwrap_err();
        let msg = r.to_string();
        assert!(matches!(r, Refusal::Dynamic { .. }), "{r:?}");
        assert!(
            msg.contains("/usr/bin/ls") && msg.contains("ld-linux"),
            "{msg}"
        );
    }

    #[test]
    fn installed_static_qemu_is_accepted() {
        let path = Path::new("/usr/bin/qemu-aarch64-static");
        if !path.exists() {
            eprintln!("qemu-user-static not installed; nothing to accept");
            return;
        }
        let i = select_interpreter(Arch::Aarch64, None).unwrap();
        assert_eq!(i.path(), path);
        assert_eq!(i.resolved(), path);
        assert_eq!(i.arch(), Arch::Aarch64);
        // Debian's binfmt-P names are links to the same file; the real file is what counts.
        let p = Path::new("/usr/libexec/qemu-binfmt/aarch64-binfmt-P");
        if p.exists() {
            let i = validate_interpreter(Arch::Aarch64, p).unwrap();
            assert_eq!(i.resolved(), path);
        }
    }

    #[test]
    fn files_under_writable_directories_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("qemu");
        fs::copy("/bin/ls", &f).unwrap();
        let r = validate_file(&f).unwrap_err();
        // The temp dir is 0700, but /tmp above it is world-writable.
        assert!(
            matches!(&r, Refusal::Writable { path, .. } if path == Path::new("/tmp")),
            "{r:?}"
        );
        assert!(r
            .to_string()
            .contains("/tmp is writable by its group or by others"));
        assert!(matches!(
            validate_file(Path::new("relative/qemu")),
            Err(Refusal::NotAbsolute)
        ));
        assert!(matches!(
            validate_file(Path::new("/nonexistent-dir/qemu")),
            Err(Refusal::NotFound)
        ));
    }

    #[test]
    fn owner_and_mode_rules() {
        let p = Path::new("/x");
        assert!(check_owner_and_mode(p, 0, 0o100755).is_ok());
        assert!(matches!(
            check_owner_and_mode(p, 1000, 0o100755),
            Err(Refusal::NotRootOwned { uid: 1000, .. })
        ));
        assert!(matches!(
            check_owner_and_mode(p, 0, 0o100775),
            Err(Refusal::Writable { mode: 0o775, .. })
        ));
        assert!(matches!(
            check_owner_and_mode(p, 0, 0o41777),
            Err(Refusal::Writable { mode: 0o1777, .. })
        ));
    }

    fn elf_check(bytes: &[u8]) -> Result<(), Refusal> {
        let mut f = tempfile::tempfile().unwrap();
        f.write_all(bytes).unwrap();
        f.seek(SeekFrom::Start(0)).unwrap();
        check_host_static_elf(&mut f, Path::new("/fake"))
    }

    /// A minimal ELF64 for `machine`, with one PT_LOAD and optionally a PT_INTERP.
    fn fake_elf64(machine: u16, e_type: u16, interp: bool) -> Vec<u8> {
        let mut h = super::super::machine::sample_header(elf::CLASS64, machine, e_type, 0);
        let phnum: u16 = if interp { 2 } else { 1 };
        h[56..58].copy_from_slice(&phnum.to_le_bytes());
        let mut load = vec![0u8; 56];
        load[0..4].copy_from_slice(&1u32.to_le_bytes());
        h.extend_from_slice(&load);
        if interp {
            let mut ph = vec![0u8; 56];
            ph[0..4].copy_from_slice(&PT_INTERP.to_le_bytes());
            ph[8..16].copy_from_slice(&176u64.to_le_bytes());
            ph[32..40].copy_from_slice(&28u64.to_le_bytes());
            h.extend_from_slice(&ph);
            h.extend_from_slice(b"/lib64/ld-linux-x86-64.so.2\0");
        }
        h
    }

    #[test]
    fn elf_checks() {
        assert!(elf_check(&fake_elf64(elf::EM_X86_64, elf::ET_DYN, false)).is_ok());
        assert!(elf_check(&fake_elf64(elf::EM_X86_64, elf::ET_EXEC, false)).is_ok());
        match elf_check(&fake_elf64(elf::EM_X86_64, elf::ET_DYN, true)) {
            Err(Refusal::Dynamic { interp, .. }) => {
                assert_eq!(interp, "/lib64/ld-linux-x86-64.so.2")
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            elf_check(&fake_elf64(elf::EM_AARCH64, elf::ET_DYN, false)),
            Err(Refusal::NotHostElf { .. })
        ));
        assert!(matches!(
            elf_check(&fake_elf64(elf::EM_X86_64, 1, false)),
            Err(Refusal::NotElf(_))
        ));
        assert!(matches!(
            elf_check(b"#!/bin/sh\nexec qemu\n"),
            Err(Refusal::NotElf(_))
        ));
        let mut truncated = fake_elf64(elf::EM_X86_64, elf::ET_DYN, false);
        truncated.truncate(80);
        assert!(matches!(
            elf_check(&truncated),
            Err(Refusal::MalformedElf { .. })
        ));
        let mut no_ph = fake_elf64(elf::EM_X86_64, elf::ET_DYN, false);
        no_ph[56..58].copy_from_slice(&0u16.to_le_bytes());
        assert!(matches!(
            elf_check(&no_ph),
            Err(Refusal::MalformedElf { .. })
        ));
    }
}
