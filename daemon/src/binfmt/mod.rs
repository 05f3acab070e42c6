//! binfmt_misc management: making the kernel run arm and aarch64 programs through a static qemu.
//!
//! Every function takes the binfmt_misc directory as a parameter ([`BINFMT_MISC_DIR`] in
//! production) so that tests can point it at a plain directory.
//!
//! pi-builder only ever writes to its own entries ([`Machine::entry_name`]). Entries installed by
//! the distribution or by other tools are read to decide whether ours is needed, never changed.

mod entry;
mod error;
mod interpreter;
mod machine;
mod mount;
pub mod service;

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use pib_dbus_interfaces::types::{Arch, BinfmtState};

pub use entry::{read_entries, Entries, Entry, Rule};
pub use error::{BinfmtError, ConflictReason, Refusal};
#[cfg(test)]
use interpreter::candidates;
pub use interpreter::{select_interpreter, Interpreter};
pub use machine::{machine, Machine, FLAGS, MACHINES};
pub use mount::{ensure_mounted, is_mounted};

/// Where the kernel's binfmt_misc file system lives.
pub const BINFMT_MISC_DIR: &str = "/proc/sys/fs/binfmt_misc";

/// What binfmt_misc does for each machine pi-builder needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BinfmtStatus {
    pub mounted: bool,
    /// binfmt_misc's global switch (its `status` file); when off, no entry is used.
    pub enabled: bool,
    /// One per machine, in [`MACHINES`] order.
    pub machines: Vec<MachineStatus>,
}

/// How one machine's programs are handled. The name/interpreter/flags/enabled fields describe
/// the handling entry: ours when present, otherwise the foreign entry most likely to cause
/// trouble.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MachineStatus {
    pub arch: Arch,
    pub state: BinfmtState,
    pub name: Option<String>,
    pub interpreter: Option<PathBuf>,
    pub flags: Option<String>,
    pub enabled: bool,
    /// Programs of this machine can run in build containers: the handling entry is enabled, has
    /// the F flag (and, for a foreign one, catches every kind of program), and binfmt_misc is
    /// globally enabled.
    pub usable: bool,
    /// Enabled entries of others that also catch this machine's programs, sorted by name. The
    /// kernel tries the most recently registered entry first, which cannot be read back, so
    /// when ours is registered too these deserve a warning.
    pub foreign: Vec<Entry>,
}

/// What [`register`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RegisterOutcome {
    /// Our entry was written; `replaced` when an outdated or disabled one was removed first.
    Registered { replaced: bool },
    /// Our entry was already there exactly as wanted; nothing was written.
    AlreadyRegistered,
    /// Another enabled entry already runs this machine's programs with the F flag; it is used
    /// as it is and nothing was written.
    ForeignInUse { entry: Entry },
}

/// What [`unregister`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnregisterOutcome {
    Unregistered,
    NotRegistered,
}

/// Reports, without changing anything, how binfmt_misc in `dir` handles each machine.
pub fn status(dir: &Path) -> Result<BinfmtStatus, BinfmtError> {
    let mounted = is_mounted(dir)?;
    let entries = read_entries(dir)?;
    let machines = MACHINES
        .iter()
        .map(|m| machine_status(m, &entries))
        .collect();
    Ok(BinfmtStatus {
        mounted,
        enabled: entries.globally_enabled,
        machines,
    })
}

/// Makes the kernel run `arch` programs with `interpreter`, mounting binfmt_misc if needed.
///
/// Idempotent: a second call with the same interpreter writes nothing.
pub fn register(
    dir: &Path,
    arch: Arch,
    interpreter: &Interpreter,
) -> Result<RegisterOutcome, BinfmtError> {
    if interpreter.arch() != arch {
        return Err(BinfmtError::InterpreterRefused {
            path: interpreter.path().to_owned(),
            reason: Refusal::WrongArch {
                expected: arch,
                found: interpreter.arch(),
            },
        });
    }
    ensure_mounted(dir)?;
    let m = machine(arch);
    let entries = read_entries(dir)?;
    if !entries.globally_enabled {
        tracing::warn!(
            "binfmt_misc is globally disabled (`echo 1 > {}/status` enables it); ARM programs \
             will not run until it is enabled",
            dir.display()
        );
    }
    let replace = match plan_register(m, &entries, interpreter.resolved())? {
        Plan::Done(outcome) => return Ok(outcome),
        Plan::Write { replace } => replace,
    };
    if replace {
        tracing::info!(entry = m.entry_name, "replacing outdated binfmt_misc entry");
        remove_entry(dir, m.entry_name)?;
    }
    let line = m.register_line(interpreter.resolved());
    let register_file = dir.join("register");
    let file = open_control(&register_file).map_err(|source| BinfmtError::Io {
        path: register_file,
        source,
    })?;
    // Any error of the write itself is the kernel's verdict on the line, including ENOENT when
    // it cannot open the interpreter that F makes it open now.
    write_once(file, line.as_bytes()).map_err(|source| BinfmtError::Kernel {
        name: m.entry_name.to_owned(),
        line,
        source,
    })?;
    verify_registered(dir, m, interpreter.resolved())?;
    tracing::info!(
        entry = m.entry_name,
        interpreter = %interpreter.resolved().display(),
        replaced = replace,
        "registered binfmt_misc entry"
    );
    Ok(RegisterOutcome::Registered { replaced: replace })
}

/// Removes our entry for `arch`, if there is one. Foreign entries are left alone.
pub fn unregister(dir: &Path, arch: Arch) -> Result<UnregisterOutcome, BinfmtError> {
    let name = machine(arch).entry_name;
    match command(&dir.join(name), b"-1") {
        Ok(()) => {
            tracing::info!(entry = name, "removed binfmt_misc entry");
            Ok(UnregisterOutcome::Unregistered)
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(UnregisterOutcome::NotRegistered),
        Err(source) => Err(BinfmtError::Io {
            path: dir.join(name),
            source,
        }),
    }
}

/// A foreign entry that catches some of a machine's programs.
struct ForeignMatch<'a> {
    entry: &'a Entry,
    /// It catches every sample (plain and PIE executables).
    complete: bool,
}

impl ForeignMatch<'_> {
    fn problem(&self) -> Option<ConflictReason> {
        if !self.entry.has_flag('F') {
            Some(ConflictReason::NoFixBinary)
        } else if !self.complete {
            Some(ConflictReason::PartialMatch)
        } else {
            None
        }
    }
}

/// Enabled entries other than ours that catch at least one sample program of `m`.
fn foreign_matches<'a>(m: &Machine, entries: &'a Entries) -> Vec<ForeignMatch<'a>> {
    let samples = m.samples();
    entries
        .parsed
        .iter()
        .filter(|e| e.enabled && e.name != m.entry_name)
        .filter_map(|entry| {
            let hits = samples.iter().filter(|s| entry.matches(s)).count();
            (hits > 0).then_some(ForeignMatch {
                entry,
                complete: hits == samples.len(),
            })
        })
        .collect()
}

/// The foreign entry to report or object to: the first one with a problem, if any, because the
/// kernel may pick any of them.
fn worst_foreign<'a, 'b>(found: &'b [ForeignMatch<'a>]) -> Option<&'b ForeignMatch<'a>> {
    found
        .iter()
        .find(|f| f.problem().is_some())
        .or_else(|| found.first())
}

fn machine_status(m: &Machine, entries: &Entries) -> MachineStatus {
    let found = foreign_matches(m, entries);
    let foreign: Vec<Entry> = found.iter().map(|f| f.entry.clone()).collect();
    let (state, handler, usable) = if let Some(ours) = entries.get(m.entry_name) {
        (
            BinfmtState::Registered,
            Some(ours),
            ours.enabled && ours.has_flag('F'),
        )
    } else if entries.exists(m.entry_name) {
        // Ours, but in a shape we cannot read: registering again will replace it.
        (BinfmtState::Registered, None, false)
    } else if let Some(f) = worst_foreign(&found) {
        (BinfmtState::Foreign, Some(f.entry), f.problem().is_none())
    } else {
        (BinfmtState::Absent, None, false)
    };
    MachineStatus {
        arch: m.arch,
        state,
        name: match handler {
            Some(e) => Some(e.name.clone()),
            None if state == BinfmtState::Registered => Some(m.entry_name.to_owned()),
            None => None,
        },
        interpreter: handler.map(|e| e.interpreter.clone()),
        flags: handler.map(|e| e.flags.clone()),
        enabled: handler.is_some_and(|e| e.enabled),
        usable: usable && entries.globally_enabled,
        foreign,
    }
}

/// What [`register`] has to do, decided from the entries alone.
#[derive(Debug, PartialEq, Eq)]
enum Plan {
    Done(RegisterOutcome),
    Write { replace: bool },
}

fn plan_register(m: &Machine, entries: &Entries, interpreter: &Path) -> Result<Plan, BinfmtError> {
    let found = foreign_matches(m, entries);
    if let Some(f) = worst_foreign(&found) {
        return match f.problem() {
            None => {
                tracing::info!(
                    entry = f.entry.name,
                    arch = %m.arch,
                    "a foreign binfmt_misc entry already handles this machine; using it"
                );
                Ok(Plan::Done(RegisterOutcome::ForeignInUse {
                    entry: f.entry.clone(),
                }))
            }
            Some(reason) => Err(BinfmtError::Conflict {
                arch: m.arch,
                name: f.entry.name.clone(),
                interpreter: f.entry.interpreter.clone(),
                flags: f.entry.flags.clone(),
                reason,
            }),
        };
    }
    match entries.get(m.entry_name) {
        Some(ours) if ours.enabled && differences(ours, m, interpreter).is_empty() => {
            Ok(Plan::Done(RegisterOutcome::AlreadyRegistered))
        }
        Some(_) => Ok(Plan::Write { replace: true }),
        None => Ok(Plan::Write {
            replace: entries.exists(m.entry_name),
        }),
    }
}

/// How `entry` differs from the entry pi-builder registers for `m` (enabled/disabled aside).
fn differences(entry: &Entry, m: &Machine, interpreter: &Path) -> Vec<String> {
    let mut diffs = Vec::new();
    if entry.interpreter != interpreter {
        diffs.push(format!(
            "interpreter {} instead of {}",
            entry.interpreter.display(),
            interpreter.display()
        ));
    }
    if !entry.flags_are(FLAGS) {
        diffs.push(format!("flags '{}' instead of '{FLAGS}'", entry.flags));
    }
    let rule_ok = match &entry.rule {
        Rule::Magic {
            offset: 0,
            magic,
            mask: Some(mask),
        } => {
            // Compared under the mask: the kernel may store the magic masked or as given.
            mask.as_slice() == m.mask.as_slice()
                && magic.len() == m.magic.len()
                && magic
                    .iter()
                    .zip(m.magic.iter().zip(m.mask))
                    .all(|(a, (b, k))| a & k == b & k)
        }
        _ => false,
    };
    if !rule_ok {
        diffs.push("a different magic, mask or offset".to_owned());
    }
    diffs
}

fn verify_registered(dir: &Path, m: &Machine, interpreter: &Path) -> Result<(), BinfmtError> {
    let problem = match entry::read_entry(dir, m.entry_name)? {
        None => Some("the entry does not exist".to_owned()),
        Some(Err(why)) => Some(format!("unreadable: {why}")),
        Some(Ok(e)) if !e.enabled => Some("it is disabled".to_owned()),
        Some(Ok(e)) => {
            let diffs = differences(&e, m, interpreter);
            (!diffs.is_empty()).then(|| diffs.join(", "))
        }
    };
    let Some(detail) = problem else {
        return Ok(());
    };
    // Leaving a wrong entry behind would make later runs report it as ours and correct.
    if let Err(e) = remove_entry(dir, m.entry_name) {
        tracing::warn!(entry = m.entry_name, error = %e, "cannot remove bad binfmt_misc entry");
    }
    Err(BinfmtError::ReadBack {
        name: m.entry_name.to_owned(),
        detail,
    })
}

fn remove_entry(dir: &Path, name: &str) -> Result<(), BinfmtError> {
    let path = dir.join(name);
    match command(&path, b"-1") {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(BinfmtError::Io { path, source }),
    }
}

/// Sends one command (`-1`, `0`, `1` or a register line) to a binfmt_misc control file.
fn command(path: &Path, bytes: &[u8]) -> io::Result<()> {
    write_once(open_control(path)?, bytes)
}

fn open_control(path: &Path) -> io::Result<File> {
    OpenOptions::new().write(true).open(path)
}

/// binfmt_misc parses each write(2) on its own, so a command must go out in one call: a split
/// write would register a truncated line or fail with EINVAL.
fn write_once(mut file: File, bytes: &[u8]) -> io::Result<()> {
    let written = file.write(bytes)?;
    if written != bytes.len() {
        return Err(io::Error::new(
            io::ErrorKind::WriteZero,
            format!("only {written} of {} bytes were accepted", bytes.len()),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::machine::{AARCH64, ARM};
    use super::*;
    use std::fs;

    const QEMU: &str = "/usr/bin/qemu-aarch64-static";

    fn entry_text(
        enabled: bool,
        interpreter: &str,
        flags: &str,
        magic: &[u8],
        mask: &[u8],
    ) -> String {
        let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
        format!(
            "{}\ninterpreter {interpreter}\nflags: {flags}\noffset 0\nmagic {}\nmask {}\n",
            if enabled { "enabled" } else { "disabled" },
            hex(magic),
            hex(mask)
        )
    }

    fn ours(m: &Machine, interpreter: &str) -> String {
        entry_text(true, interpreter, "F", &m.magic, &m.mask)
    }

    /// A binfmt_misc-like directory holding `files`.
    fn fake_dir(files: &[(&str, &str)]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("register"), "").unwrap();
        fs::write(dir.path().join("status"), "enabled\n").unwrap();
        for (name, text) in files {
            fs::write(dir.path().join(name), text).unwrap();
        }
        dir
    }

    fn entries(files: &[(&str, &str)]) -> Entries {
        read_entries(fake_dir(files).path()).unwrap()
    }

    #[test]
    fn status_of_an_empty_directory_is_absent() {
        let dir = fake_dir(&[]);
        let st = status(dir.path()).unwrap();
        assert!(!st.mounted);
        assert!(st.enabled);
        let arches: Vec<Arch> = st.machines.iter().map(|m| m.arch).collect();
        assert_eq!(arches, [Arch::Arm, Arch::Aarch64]);
        for m in &st.machines {
            assert_eq!(m.state, BinfmtState::Absent);
            assert_eq!(m.name, None);
            assert!(!m.usable && !m.enabled && m.foreign.is_empty());
        }
    }

    #[test]
    fn status_with_ours_foreign_and_absent() {
        let debian = entry_text(
            true,
            "/usr/libexec/qemu-binfmt/arm-binfmt-P",
            "POCF",
            &ARM.magic,
            &ARM.mask,
        );
        let dir = fake_dir(&[
            ("pib-qemu-aarch64", &ours(&AARCH64, QEMU)),
            ("qemu-arm", &debian),
            (
                "python3.11",
                "enabled\ninterpreter /usr/bin/python3.11\nflags: \nextension .pyc\n",
            ),
        ]);
        let st = status(dir.path()).unwrap();
        let arm = &st.machines[0];
        assert_eq!(arm.state, BinfmtState::Foreign);
        assert_eq!(arm.name.as_deref(), Some("qemu-arm"));
        assert_eq!(arm.flags.as_deref(), Some("POCF"));
        assert!(arm.enabled && arm.usable);
        let a64 = &st.machines[1];
        assert_eq!(a64.state, BinfmtState::Registered);
        assert_eq!(a64.name.as_deref(), Some("pib-qemu-aarch64"));
        assert_eq!(a64.interpreter.as_deref(), Some(Path::new(QEMU)));
        assert!(a64.enabled && a64.usable && a64.foreign.is_empty());

        // Globally disabled: nothing is usable, whatever the entries say.
        fs::write(dir.path().join("status"), "disabled\n").unwrap();
        let st = status(dir.path()).unwrap();
        assert!(!st.enabled);
        assert!(st.machines.iter().all(|m| !m.usable));
    }

    #[test]
    fn status_reports_ours_and_exposes_a_foreign_rival() {
        let rival = entry_text(
            true,
            "/usr/bin/qemu-aarch64",
            "",
            &AARCH64.magic,
            &AARCH64.mask,
        );
        let dir = fake_dir(&[
            (
                "pib-qemu-aarch64",
                &entry_text(false, QEMU, "F", &AARCH64.magic, &AARCH64.mask),
            ),
            ("qemu-aarch64", &rival),
        ]);
        let a64 = &status(dir.path()).unwrap().machines[1];
        assert_eq!(a64.state, BinfmtState::Registered);
        assert!(!a64.enabled && !a64.usable);
        assert_eq!(a64.foreign.len(), 1);
        assert_eq!(a64.foreign[0].name, "qemu-aarch64");
    }

    #[test]
    fn disabled_or_unrelated_foreign_entries_are_ignored() {
        let disabled = entry_text(false, "/x", "", &AARCH64.magic, &AARCH64.mask);
        let e = entries(&[("qemu-aarch64", &disabled), ("qemu-arm", &ours(&ARM, "/y"))]);
        let st = machine_status(&AARCH64, &e);
        assert_eq!(st.state, BinfmtState::Absent);
        assert_eq!(
            plan_register(&AARCH64, &e, Path::new(QEMU)).unwrap(),
            Plan::Write { replace: false }
        );
    }

    #[test]
    fn foreign_entry_without_f_is_a_conflict() {
        let text = entry_text(
            true,
            "/usr/bin/qemu-aarch64",
            "P",
            &AARCH64.magic,
            &AARCH64.mask,
        );
        let e = entries(&[
            ("qemu-aarch64", &text),
            ("pib-qemu-aarch64", &ours(&AARCH64, QEMU)),
        ]);
        let err = plan_register(&AARCH64, &e, Path::new(QEMU)).unwrap_err();
        match &err {
            BinfmtError::Conflict {
                arch,
                name,
                flags,
                reason,
                ..
            } => {
                assert_eq!(*arch, Arch::Aarch64);
                assert_eq!(name, "qemu-aarch64");
                assert_eq!(flags, "P");
                assert_eq!(*reason, ConflictReason::NoFixBinary);
            }
            other => panic!("{other:?}"),
        }
        let msg = err.to_string();
        for needle in [
            "'qemu-aarch64'",
            "/usr/bin/qemu-aarch64",
            "flags 'P'",
            "update-binfmts --disable qemu-aarch64",
            "echo -1 > /proc/sys/fs/binfmt_misc/qemu-aarch64",
        ] {
            assert!(msg.contains(needle), "{needle:?} missing from: {msg}");
        }
    }

    #[test]
    fn foreign_entry_missing_pie_programs_is_a_conflict() {
        // An exact e_type byte: catches ET_EXEC only.
        let mut mask = AARCH64.mask;
        mask[16] = 0xff;
        let text = entry_text(true, "/q", "F", &AARCH64.magic, &mask);
        let e = entries(&[("old-qemu", &text)]);
        assert!(matches!(
            plan_register(&AARCH64, &e, Path::new(QEMU)),
            Err(BinfmtError::Conflict {
                reason: ConflictReason::PartialMatch,
                ..
            })
        ));
        let st = machine_status(&AARCH64, &e);
        assert_eq!(st.state, BinfmtState::Foreign);
        assert!(!st.usable);
    }

    #[test]
    fn usable_foreign_entry_is_used_as_it_is() {
        let text = entry_text(
            true,
            "/usr/libexec/qemu-binfmt/aarch64-binfmt-P",
            "POCF",
            &AARCH64.magic,
            &AARCH64.mask,
        );
        let e = entries(&[("qemu-aarch64", &text)]);
        match plan_register(&AARCH64, &e, Path::new(QEMU)).unwrap() {
            Plan::Done(RegisterOutcome::ForeignInUse { entry }) => {
                assert_eq!(entry.name, "qemu-aarch64")
            }
            other => panic!("{other:?}"),
        }
        // It handles aarch64 only; arm still needs registering.
        assert_eq!(
            plan_register(&ARM, &e, Path::new("/usr/bin/qemu-arm-static")).unwrap(),
            Plan::Write { replace: false }
        );
    }

    #[test]
    fn one_bad_foreign_entry_among_good_ones_is_a_conflict() {
        let good = entry_text(true, "/a", "F", &AARCH64.magic, &AARCH64.mask);
        let bad = entry_text(true, "/b", "", &AARCH64.magic, &AARCH64.mask);
        let e = entries(&[("a-good", &good), ("b-bad", &bad)]);
        assert!(matches!(
            plan_register(&AARCH64, &e, Path::new(QEMU)),
            Err(BinfmtError::Conflict { ref name, .. }) if name == "b-bad"
        ));
        let st = machine_status(&AARCH64, &e);
        assert_eq!(st.name.as_deref(), Some("b-bad"));
        assert_eq!(st.foreign.len(), 2);
        assert!(!st.usable);
    }

    #[test]
    fn our_identical_entry_is_left_alone() {
        let e = entries(&[("pib-qemu-aarch64", &ours(&AARCH64, QEMU))]);
        assert_eq!(
            plan_register(&AARCH64, &e, Path::new(QEMU)).unwrap(),
            Plan::Done(RegisterOutcome::AlreadyRegistered)
        );
    }

    #[test]
    fn our_outdated_or_disabled_entry_is_replaced() {
        let cases = [
            ours(&AARCH64, "/usr/bin/qemu-aarch64"),
            entry_text(false, QEMU, "F", &AARCH64.magic, &AARCH64.mask),
            entry_text(true, QEMU, "OCF", &AARCH64.magic, &AARCH64.mask),
            entry_text(true, QEMU, "F", &AARCH64.magic, &[0xff; 20]),
            "enabled\nsomething the kernel never wrote\n".to_owned(),
        ];
        for text in &cases {
            let e = entries(&[("pib-qemu-aarch64", text)]);
            assert_eq!(
                plan_register(&AARCH64, &e, Path::new(QEMU)).unwrap(),
                Plan::Write { replace: true },
                "{text}"
            );
        }
    }

    #[test]
    fn differences_compare_magic_under_the_mask() {
        // The kernel may keep the magic byte that the mask ignores as it was written.
        let mut magic = AARCH64.magic;
        magic[7] = 3;
        let text = entry_text(true, QEMU, "F", &magic, &AARCH64.mask);
        let e = Entry::parse("pib-qemu-aarch64", text.as_bytes()).unwrap();
        assert!(differences(&e, &AARCH64, Path::new(QEMU)).is_empty());
        let d = differences(&e, &ARM, Path::new("/other"));
        assert_eq!(d.len(), 2, "{d:?}");
    }

    #[test]
    fn unregister_touches_only_our_entry() {
        let foreign = ours(&AARCH64, QEMU);
        let dir = fake_dir(&[
            ("qemu-aarch64", &foreign),
            ("pib-qemu-arm", &ours(&ARM, "/q")),
        ]);
        assert_eq!(
            unregister(dir.path(), Arch::Aarch64).unwrap(),
            UnregisterOutcome::NotRegistered
        );
        assert_eq!(
            fs::read_to_string(dir.path().join("qemu-aarch64")).unwrap(),
            foreign
        );
        // A plain file is not the kernel: the command is written, not acted upon.
        assert_eq!(
            unregister(dir.path(), Arch::Arm).unwrap(),
            UnregisterOutcome::Unregistered
        );
        assert!(fs::read_to_string(dir.path().join("pib-qemu-arm"))
            .unwrap()
            .starts_with("-1"));
    }

    #[test]
    fn register_refuses_an_interpreter_for_another_machine() {
        if !Path::new(QEMU).exists() {
            eprintln!("qemu-user-static not installed");
            return;
        }
        let i = select_interpreter(Arch::Aarch64, None).unwrap();
        let dir = fake_dir(&[]);
        let err = register(dir.path(), Arch::Arm, &i).unwrap_err();
        assert!(matches!(
            err,
            BinfmtError::InterpreterRefused {
                reason: Refusal::WrongArch { .. },
                ..
            }
        ));
        // Refused before anything else happened, mounting included.
        assert!(!is_mounted(dir.path()).unwrap());
    }

    #[test]
    fn error_messages_say_what_to_do() {
        let e = BinfmtError::NoInterpreter {
            arch: Arch::Arm,
            tried: candidates(Arch::Arm).iter().map(PathBuf::from).collect(),
        };
        let msg = e.to_string();
        assert!(msg.contains("qemu-user-static") && msg.contains("/usr/bin/qemu-arm-static"));
        let e = BinfmtError::Kernel {
            name: "pib-qemu-arm".into(),
            line: ":pib-qemu-arm:M:...".into(),
            source: io::Error::from_raw_os_error(libc::EINVAL),
        };
        assert!(e.to_string().contains("malformed"), "{e}");
    }
}
