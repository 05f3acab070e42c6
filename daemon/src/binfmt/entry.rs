//! Reading the entries of a binfmt_misc directory.

use std::ffi::OsStr;
use std::fs;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use super::error::BinfmtError;

/// The control files of binfmt_misc; every other file is an entry.
const CONTROL_FILES: [&str; 2] = ["register", "status"];

/// One registered binary format, as its file in binfmt_misc describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub name: String,
    pub enabled: bool,
    pub interpreter: PathBuf,
    /// Flag letters in the kernel's order (a subset of "POCF").
    pub flags: String,
    pub rule: Rule,
}

/// How an entry recognises its binaries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rule {
    /// Bytes at a fixed offset of the file's first block. A missing mask means all bits count.
    Magic {
        offset: usize,
        magic: Vec<u8>,
        mask: Option<Vec<u8>>,
    },
    /// A file name extension; such entries never catch ELF programs started by path alone.
    Extension(String),
}

impl Entry {
    /// Parses the text the kernel shows in an entry's file.
    pub fn parse(name: &str, text: &[u8]) -> Result<Entry, String> {
        let mut enabled = None;
        let mut interpreter = None;
        let mut flags = None;
        let mut offset = None;
        let mut magic = None;
        let mut mask = None;
        let mut extension = None;
        for line in text.split(|&b| b == b'\n') {
            if line.is_empty() {
                continue;
            }
            // The interpreter path is the rest of the line and may hold spaces or any byte
            // except a newline, so it is split off before any UTF-8 decoding.
            if let Some(path) = line.strip_prefix(b"interpreter ") {
                interpreter = Some(PathBuf::from(OsStr::from_bytes(path)));
                continue;
            }
            let line = std::str::from_utf8(line)
                .map_err(|_| format!("line {:?} is not UTF-8", String::from_utf8_lossy(line)))?;
            match line {
                "enabled" => enabled = Some(true),
                "disabled" => enabled = Some(false),
                _ => {
                    if let Some(f) = line.strip_prefix("flags:") {
                        flags = Some(f.trim().to_owned());
                    } else if let Some(v) = line.strip_prefix("offset ") {
                        offset = Some(
                            v.trim()
                                .parse::<usize>()
                                .map_err(|_| format!("bad offset {v:?}"))?,
                        );
                    } else if let Some(v) = line.strip_prefix("magic ") {
                        magic = Some(parse_hex(v.trim())?);
                    } else if let Some(v) = line.strip_prefix("mask ") {
                        mask = Some(parse_hex(v.trim())?);
                    } else if let Some(v) = line.strip_prefix("extension ") {
                        extension = Some(v.trim().trim_start_matches('.').to_owned());
                    } else {
                        // Newer kernels may add lines; they cannot change what the known ones mean.
                        tracing::debug!(entry = name, line, "ignoring unknown binfmt_misc line");
                    }
                }
            }
        }
        let rule = match (extension, magic) {
            (Some(ext), None) => Rule::Extension(ext),
            (None, Some(magic)) => {
                if let Some(m) = &mask {
                    if m.len() != magic.len() {
                        return Err(format!(
                            "mask has {} bytes but magic has {}",
                            m.len(),
                            magic.len()
                        ));
                    }
                }
                Rule::Magic {
                    offset: offset.ok_or("no offset line")?,
                    magic,
                    mask,
                }
            }
            (Some(_), Some(_)) => return Err("both an extension and a magic".into()),
            (None, None) => return Err("neither an extension nor a magic".into()),
        };
        Ok(Entry {
            name: name.to_owned(),
            enabled: enabled.ok_or("no enabled/disabled line")?,
            interpreter: interpreter.ok_or("no interpreter line")?,
            flags: flags.ok_or("no flags line")?,
            rule,
        })
    }

    /// Whether the kernel would hand a file starting with `header` to this entry (ignoring
    /// whether the entry is enabled).
    pub fn matches(&self, header: &[u8]) -> bool {
        let Rule::Magic {
            offset,
            magic,
            mask,
        } = &self.rule
        else {
            return false;
        };
        let Some(window) = header.get(*offset..offset.saturating_add(magic.len())) else {
            return false;
        };
        window.iter().zip(magic).enumerate().all(|(i, (h, m))| {
            let k = mask.as_ref().map_or(0xff, |mask| mask[i]);
            h & k == m & k
        })
    }

    pub fn has_flag(&self, flag: char) -> bool {
        self.flags.contains(flag)
    }

    /// Whether the flags are exactly `expected`, in any order.
    pub fn flags_are(&self, expected: &str) -> bool {
        let mut have: Vec<char> = self.flags.chars().collect();
        let mut want: Vec<char> = expected.chars().collect();
        have.sort_unstable();
        want.sort_unstable();
        have == want
    }
}

fn parse_hex(s: &str) -> Result<Vec<u8>, String> {
    let pairs = s.as_bytes().chunks_exact(2);
    if !pairs.remainder().is_empty() {
        return Err(format!("odd-length hex {s:?}"));
    }
    pairs
        .map(|pair| {
            // from_str_radix alone would also take a sign.
            std::str::from_utf8(pair)
                .ok()
                .filter(|pair| pair.bytes().all(|b| b.is_ascii_hexdigit()))
                .and_then(|pair| u8::from_str_radix(pair, 16).ok())
                .ok_or_else(|| format!("bad hex {s:?}"))
        })
        .collect()
}

/// The entries of a binfmt_misc directory.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Entries {
    /// Sorted by name, so that reports do not depend on directory order.
    pub parsed: Vec<Entry>,
    /// Entry files whose text could not be understood.
    pub unparsable: Vec<String>,
    /// The `status` file: binfmt_misc as a whole can be switched off.
    pub globally_enabled: bool,
}

impl Entries {
    pub fn get(&self, name: &str) -> Option<&Entry> {
        self.parsed.iter().find(|e| e.name == name)
    }

    pub fn exists(&self, name: &str) -> bool {
        self.get(name).is_some() || self.unparsable.iter().any(|n| n == name)
    }
}

/// Reads every entry of `dir`. A directory that does not exist, as when binfmt_misc is not
/// loaded, simply has no entries.
pub fn read_entries(dir: &Path) -> Result<Entries, BinfmtError> {
    let mut out = Entries {
        globally_enabled: true,
        ..Entries::default()
    };
    let listing = match fs::read_dir(dir) {
        Ok(l) => l,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(out),
        Err(source) => {
            return Err(BinfmtError::Io {
                path: dir.to_owned(),
                source,
            })
        }
    };
    for item in listing {
        let item = item.map_err(|source| BinfmtError::Io {
            path: dir.to_owned(),
            source,
        })?;
        let file_name = item.file_name();
        let Some(name) = file_name.to_str() else {
            // The kernel refuses names that are not printable, but tests or other filesystems
            // may hold anything; such a file cannot be one of ours.
            tracing::warn!(
                ?file_name,
                "skipping binfmt_misc entry with a non-UTF-8 name"
            );
            continue;
        };
        let path = item.path();
        if name == "status" {
            let text = read_optional(&path)?.unwrap_or_default();
            out.globally_enabled = text.trim_ascii() != b"disabled";
            continue;
        }
        if CONTROL_FILES.contains(&name) {
            continue;
        }
        // An entry may be removed between listing and reading; it is then simply gone.
        let Some(text) = read_optional(&path)? else {
            continue;
        };
        match Entry::parse(name, &text) {
            Ok(entry) => out.parsed.push(entry),
            Err(why) => {
                tracing::warn!(entry = name, why, "cannot understand binfmt_misc entry");
                out.unparsable.push(name.to_owned());
            }
        }
    }
    out.parsed.sort_by(|a, b| a.name.cmp(&b.name));
    out.unparsable.sort();
    Ok(out)
}

/// Reads one entry file; `Ok(None)` if it does not exist.
pub fn read_entry(dir: &Path, name: &str) -> Result<Option<Result<Entry, String>>, BinfmtError> {
    Ok(read_optional(&dir.join(name))?.map(|text| Entry::parse(name, &text)))
}

fn read_optional(path: &Path) -> Result<Option<Vec<u8>>, BinfmtError> {
    match fs::read(path) {
        Ok(text) => Ok(Some(text)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(BinfmtError::Io {
            path: path.to_owned(),
            source,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::super::machine::{sample_header, AARCH64, ARM};
    use super::*;

    /// What Debian's qemu-user-static registers through systemd-binfmt, as the kernel shows it.
    pub const DEBIAN_AARCH64: &str = "enabled\n\
        interpreter /usr/libexec/qemu-binfmt/aarch64-binfmt-P\n\
        flags: POCF\n\
        offset 0\n\
        magic 7f454c460201010000000000000000000200b700\n\
        mask ffffffffffffff00fffffffffffffffffeffffff\n";

    #[test]
    fn parses_a_magic_entry() {
        let e = Entry::parse("qemu-aarch64", DEBIAN_AARCH64.as_bytes()).unwrap();
        assert_eq!(e.name, "qemu-aarch64");
        assert!(e.enabled);
        assert_eq!(
            e.interpreter,
            Path::new("/usr/libexec/qemu-binfmt/aarch64-binfmt-P")
        );
        assert_eq!(e.flags, "POCF");
        assert!(e.has_flag('F') && e.has_flag('C'));
        assert!(e.flags_are("FOCP") && !e.flags_are("F"));
        let Rule::Magic {
            offset,
            magic,
            mask,
        } = &e.rule
        else {
            panic!("not a magic rule: {e:?}");
        };
        assert_eq!(*offset, 0);
        assert_eq!(magic.as_slice(), AARCH64.magic.as_slice());
        assert_eq!(mask.as_deref(), Some(AARCH64.mask.as_slice()));
    }

    #[test]
    fn parses_disabled_maskless_and_extension_entries() {
        let e = Entry::parse(
            "plain",
            b"disabled\ninterpreter /opt/with space/qemu\nflags: \noffset 2\nmagic 4c46\n",
        )
        .unwrap();
        assert!(!e.enabled);
        assert_eq!(e.interpreter, Path::new("/opt/with space/qemu"));
        assert_eq!(e.flags, "");
        assert_eq!(
            e.rule,
            Rule::Magic {
                offset: 2,
                magic: vec![0x4c, 0x46],
                mask: None
            }
        );
        assert!(e.matches(b"\x7fELF"));
        assert!(!e.matches(b"\x7fEL"));

        let py = Entry::parse(
            "python3.11",
            b"enabled\ninterpreter /usr/bin/python3.11\nflags: \nextension .pyc\n",
        )
        .unwrap();
        assert_eq!(py.rule, Rule::Extension("pyc".into()));
        for s in AARCH64.samples() {
            assert!(!py.matches(&s));
        }
    }

    #[test]
    fn rejects_malformed_entries() {
        assert!(Entry::parse("x", b"enabled\ninterpreter /q\nflags: F\n").is_err());
        assert!(Entry::parse("x", b"interpreter /q\nflags: F\noffset 0\nmagic 7f\n").is_err());
        assert!(Entry::parse(
            "x",
            b"enabled\ninterpreter /q\nflags: F\noffset 0\nmagic 7f4\n"
        )
        .is_err());
        assert!(Entry::parse(
            "x",
            b"enabled\ninterpreter /q\nflags: F\noffset 0\nmagic 7f45\nmask ff\n"
        )
        .is_err());
    }

    #[test]
    fn our_rules_match_their_machine_only() {
        let ours = |m: &super::super::machine::Machine| Entry {
            name: m.entry_name.into(),
            enabled: true,
            interpreter: "/q".into(),
            flags: "F".into(),
            rule: Rule::Magic {
                offset: 0,
                magic: m.magic.to_vec(),
                mask: Some(m.mask.to_vec()),
            },
        };
        let (arm, a64) = (ours(&ARM), ours(&AARCH64));
        for s in AARCH64.samples() {
            assert!(a64.matches(&s));
            assert!(!arm.matches(&s));
        }
        for s in ARM.samples() {
            assert!(arm.matches(&s));
            assert!(!a64.matches(&s));
        }
        // GNU/Linux OSABI, as some toolchains write, is caught as well as SYSV.
        assert!(a64.matches(&sample_header(2, 183, 3, 3)));
        assert!(arm.matches(&sample_header(1, 40, 2, 3)));
        // Host programs, big-endian or relocatable objects, and core files are not.
        for (class, machine, e_type) in
            [(2, 62, 2), (2, 62, 3), (1, 3, 2), (2, 183, 1), (2, 183, 4)]
        {
            let h = sample_header(class, machine, e_type, 0);
            assert!(
                !a64.matches(&h) && !arm.matches(&h),
                "{class} {machine} {e_type}"
            );
        }
        let mut big_endian = sample_header(2, 183, 2, 0);
        big_endian[5] = 2;
        assert!(!a64.matches(&big_endian));
    }

    #[test]
    fn reads_a_directory_of_entries() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("register"), b"").unwrap();
        std::fs::write(dir.path().join("status"), b"enabled\n").unwrap();
        std::fs::write(dir.path().join("qemu-aarch64"), DEBIAN_AARCH64).unwrap();
        std::fs::write(
            dir.path().join("python3.11"),
            "enabled\ninterpreter /usr/bin/python3.11\nflags: \nextension .pyc\n",
        )
        .unwrap();
        std::fs::write(dir.path().join("garbage"), "what\n").unwrap();
        let entries = read_entries(dir.path()).unwrap();
        let names: Vec<&str> = entries.parsed.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(names, ["python3.11", "qemu-aarch64"]);
        assert_eq!(entries.unparsable, ["garbage"]);
        assert!(entries.globally_enabled);
        assert!(entries.exists("garbage") && !entries.exists("register"));

        std::fs::write(dir.path().join("status"), b"disabled\n").unwrap();
        assert!(!read_entries(dir.path()).unwrap().globally_enabled);

        let missing = read_entries(&dir.path().join("nope")).unwrap();
        assert!(missing.parsed.is_empty());
        assert!(read_entry(dir.path(), "nope").unwrap().is_none());
        assert!(read_entry(dir.path(), "qemu-aarch64")
            .unwrap()
            .unwrap()
            .is_ok());
    }
}
