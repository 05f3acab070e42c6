//! Crafted, mostly hostile, tar streams against the context checker.

use std::io::{self, Read};

use super::*;

const LIMIT: u64 = 1 << 20;

/// A tar stream assembled block by block, so that it can say things `tar::Builder` refuses to.
#[derive(Default)]
struct Raw(Vec<u8>);

impl Raw {
    fn new() -> Self {
        Raw::default()
    }

    /// A header whose name and link bytes are written straight into the fields, bypassing the
    /// checks of `Header::set_path`.
    fn header(name: &[u8], kind: u8, size: u64, link: &[u8]) -> tar::Header {
        let mut h = tar::Header::new_gnu();
        h.set_mode(0o644);
        h.set_uid(1000);
        h.set_gid(1000);
        h.set_mtime(1_700_000_000);
        h.set_size(size);
        h.set_entry_type(tar::EntryType::new(kind));
        let old = h.as_old_mut();
        old.name[..name.len()].copy_from_slice(name);
        old.linkname[..link.len()].copy_from_slice(link);
        h.set_cksum();
        h
    }

    fn put(mut self, header: &tar::Header, data: &[u8]) -> Self {
        self.0.extend_from_slice(header.as_bytes());
        self.0.extend_from_slice(data);
        let pad = (512 - data.len() % 512) % 512;
        self.0.extend(std::iter::repeat_n(0u8, pad));
        self
    }

    fn file(self, name: &str, data: &[u8]) -> Self {
        let h = Raw::header(name.as_bytes(), b'0', data.len() as u64, b"");
        self.put(&h, data)
    }

    fn dir(self, name: &str) -> Self {
        let h = Raw::header(name.as_bytes(), b'5', 0, b"");
        self.put(&h, b"")
    }

    fn link(self, name: &str, target: &str) -> Self {
        let h = Raw::header(name.as_bytes(), b'2', 0, target.as_bytes());
        self.put(&h, b"")
    }

    fn kind(self, name: &str, kind: u8) -> Self {
        let h = Raw::header(name.as_bytes(), kind, 0, b"");
        self.put(&h, b"")
    }

    /// A PAX extended header with the given records.
    fn pax(self, records: &[(&str, &[u8])]) -> Self {
        let mut data = Vec::new();
        for (key, value) in records {
            let body_len = key.len() + value.len() + 3; // ' ', '=', '\n'
            let mut len = body_len + 1;
            while len.to_string().len() + body_len != len {
                len = len.to_string().len() + body_len;
            }
            data.extend_from_slice(format!("{len} {key}=").as_bytes());
            data.extend_from_slice(value);
            data.push(b'\n');
        }
        let h = Raw::header(b"././@PaxHeader", b'x', data.len() as u64, b"");
        self.put(&h, &data)
    }

    /// A GNU long name (`L`) or long link (`K`) header.
    fn gnu_long(self, kind: u8, name: &[u8]) -> Self {
        let mut data = name.to_vec();
        data.push(0);
        let h = Raw::header(b"././@LongLink", kind, data.len() as u64, b"");
        self.put(&h, &data)
    }

    fn end(mut self) -> Vec<u8> {
        self.0.extend_from_slice(&[0u8; 1024]);
        self.0
    }
}

/// The usual start of a context: one stage `a` with its part.
fn stage_a() -> Raw {
    Raw::new()
        .dir("stages/")
        .dir("stages/a/")
        .file("stages/a/Dockerfile.part", b"COPY stages/a/f /f\n")
}

fn run(input: &[u8]) -> (Result<ContextStats, ContextError>, Vec<u8>) {
    let mut out = Vec::new();
    let result = restream(input, &mut out, "FROM scratch\n", LIMIT);
    (result, out)
}

fn refused(input: &[u8]) -> ContextError {
    match run(input) {
        (Err(e), out) => {
            // Whatever was written must not be a complete archive.
            assert!(
                out.ends_with(&[0xff; 1024]),
                "output not poisoned after {e}"
            );
            e
        }
        (Ok(stats), _) => panic!("accepted: {stats:?}"),
    }
}

/// (name, type, mode, uid, gid, mtime, data or link target) of every output entry.
type Listed = Vec<(String, char, u32, u64, u64, u64, Vec<u8>)>;

fn list(tar_bytes: &[u8]) -> Listed {
    let mut archive = tar::Archive::new(tar_bytes);
    let mut out = Vec::new();
    for entry in archive.entries().unwrap() {
        let mut entry = entry.unwrap();
        let h = entry.header().clone();
        let name = String::from_utf8(entry.path_bytes().into_owned()).unwrap();
        let kind = h.entry_type().as_byte() as char;
        let data = if kind == '2' {
            entry.link_name_bytes().unwrap().into_owned()
        } else {
            let mut d = Vec::new();
            entry.read_to_end(&mut d).unwrap();
            d
        };
        assert_eq!(h.username_bytes(), Some(&b""[..]));
        assert_eq!(h.groupname_bytes(), Some(&b""[..]));
        out.push((
            name,
            kind,
            h.mode().unwrap(),
            h.uid().unwrap(),
            h.gid().unwrap(),
            h.mtime().unwrap(),
            data,
        ));
    }
    out
}

#[test]
fn passes_a_good_context_with_fresh_headers() {
    let long = format!("stages/a/{}/file", "d".repeat(150));
    let mut setuid = Raw::header(b"stages/a/bin", b'0', 2, b"");
    setuid.set_mode(0o104755);
    setuid.set_cksum();
    let input = stage_a()
        .file("stages/a/f", b"hello")
        .dir("stages/a/sub")
        .link("stages/a/sub/up", "../f")
        .link("stages/a/here", ".")
        .link("stages/a/sub/deep", "x/y/z")
        .gnu_long(b'L', long.as_bytes())
        .file("ignored-by-long-name", b"long")
        .pax(&[("path", b"stages/a/pax name"), ("mtime", b"1234.5")])
        .file("also-ignored", b"pax")
        .put(&setuid, b"#!")
        .end();
    let (result, out) = run(&input);
    let stats = result.unwrap();
    assert_eq!(stats.stages, ["a"]);
    assert_eq!(stats.files, 5);
    assert_eq!(stats.dirs, 3);
    assert_eq!(stats.symlinks, 3);
    assert_eq!(stats.entries, 11);
    assert_eq!(stats.input_bytes, input.len() as u64);

    let listed = list(&out);
    let names: Vec<&str> = listed.iter().map(|e| e.0.as_str()).collect();
    assert_eq!(
        names,
        [
            "Dockerfile",
            "stages",
            "stages/a",
            "stages/a/Dockerfile.part",
            "stages/a/f",
            "stages/a/sub",
            "stages/a/sub/up",
            "stages/a/here",
            "stages/a/sub/deep",
            long.as_str(),
            "stages/a/pax name",
            "stages/a/bin",
        ]
    );
    assert_eq!(listed[0].6, b"FROM scratch\n");
    for entry in &listed {
        assert_eq!((entry.3, entry.4), (0, 0), "{}", entry.0);
    }
    let by_name = |n: &str| listed.iter().find(|e| e.0 == n).unwrap().clone();
    assert_eq!(by_name("stages/a/f").6, b"hello");
    assert_eq!(by_name("stages/a/f").5, 1_700_000_000);
    assert_eq!(by_name("stages/a/sub/up").6, b"../f");
    assert_eq!(by_name("stages/a/sub/up").1, '2');
    assert_eq!(by_name(&long).6, b"long");
    assert_eq!(by_name("stages/a/pax name").6, b"pax");
    assert_eq!(by_name("stages/a/pax name").5, 1234);
    assert_eq!(by_name("stages/a/bin").2, 0o4755);
}

#[test]
fn refuses_absolute_and_parent_names() {
    for name in ["/etc/passwd", "/stages/a/x"] {
        let e = refused(&stage_a().file(name, b"x").end());
        assert!(
            matches!(e, ContextError::AbsoluteName { ref entry } if entry == name),
            "{e}"
        );
    }
    for name in [
        "../x",
        "stages/a/../../etc/x",
        "stages/a/..",
        "stages/../stages/a/x",
    ] {
        let e = refused(&stage_a().file(name, b"x").end());
        assert!(
            matches!(e, ContextError::ParentComponent { .. }),
            "{name}: {e}"
        );
        assert!(e.to_string().contains(name), "{e}");
    }
}

#[test]
fn refuses_names_hidden_in_ustar_prefix_gnu_and_pax_headers() {
    // ustar prefix + name = "/etc/shadow".
    let mut h = tar::Header::new_ustar();
    h.set_size(1);
    h.set_entry_type(tar::EntryType::Regular);
    h.as_ustar_mut().unwrap().prefix[..4].copy_from_slice(b"/etc");
    h.as_ustar_mut().unwrap().name[..6].copy_from_slice(b"shadow");
    h.set_cksum();
    let e = refused(&stage_a().put(&h, b"x").end());
    assert!(
        matches!(e, ContextError::AbsoluteName { ref entry } if entry == "/etc/shadow"),
        "{e}"
    );

    // A harmless header name, replaced by a GNU long name.
    let e = refused(
        &stage_a()
            .gnu_long(b'L', b"stages/a/../../x")
            .file("stages/a/ok", b"x")
            .end(),
    );
    assert!(matches!(e, ContextError::ParentComponent { .. }), "{e}");

    // ... or by a PAX path.
    let e = refused(
        &stage_a()
            .pax(&[("path", b"../escape")])
            .file("stages/a/ok", b"x")
            .end(),
    );
    assert!(
        matches!(e, ContextError::ParentComponent { ref entry } if entry == "../escape"),
        "{e}"
    );

    // A harmless link target replaced by a PAX linkpath.
    let e = refused(
        &stage_a()
            .pax(&[("linkpath", b"/etc/shadow")])
            .link("stages/a/l", "f")
            .end(),
    );
    assert!(matches!(e, ContextError::SymlinkAbsolute { .. }), "{e}");

    // A GNU long link to the same place.
    let e = refused(
        &stage_a()
            .gnu_long(b'K', b"../../../etc/shadow")
            .link("stages/a/l", "f")
            .end(),
    );
    assert!(matches!(e, ContextError::SymlinkEscapes { .. }), "{e}");
}

#[test]
fn refuses_entries_outside_stage_directories() {
    for name in ["foo", ".dockerignore", "stage/a/x", "etc/passwd"] {
        let e = refused(&stage_a().file(name, b"x").end());
        assert!(
            matches!(e, ContextError::OutsideStages { .. }),
            "{name}: {e}"
        );
    }
    let e = refused(&Raw::new().file("stages", b"x").end());
    assert!(matches!(e, ContextError::OutsideStages { .. }), "{e}");
    for name in ["Dockerfile", "./Dockerfile", "dockerfile"] {
        let e = refused(&stage_a().file(name, b"FROM evil").end());
        assert!(
            matches!(e, ContextError::ClientDockerfile { .. }),
            "{name}: {e}"
        );
    }
    for name in [
        "stages/UPPER/x",
        "stages/.hidden/x",
        "stages/-rf/x",
        "stages/a b/x",
    ] {
        let e = refused(&stage_a().file(name, b"x").end());
        assert!(
            matches!(e, ContextError::BadStageName { .. }),
            "{name}: {e}"
        );
    }
    let e = refused(&Raw::new().file("stages/a", b"x").end());
    assert!(matches!(e, ContextError::StageRootNotDir { .. }), "{e}");
    let e = refused(&Raw::new().link("stages/a", "../b").end());
    assert!(matches!(e, ContextError::StageRootNotDir { .. }), "{e}");
}

#[test]
fn refuses_symlinks_that_leave_their_stage() {
    for (name, target) in [("stages/a/l", "/etc/shadow"), ("stages/a/sub/l", "/")] {
        let e = refused(&stage_a().link(name, target).end());
        assert!(
            matches!(e, ContextError::SymlinkAbsolute { ref entry, .. } if entry == name),
            "{e}"
        );
        assert!(e.to_string().contains(target), "{e}");
    }
    for (name, target) in [
        ("stages/a/l", ".."),
        ("stages/a/l", "../b/x"),
        ("stages/a/sub/l", "../../x"),
        ("stages/a/l", "x/../../y"),
        ("stages/a/l", "x/.."),
        ("stages/a/l", ""),
    ] {
        let e = refused(&stage_a().link(name, target).end());
        assert!(
            matches!(e, ContextError::SymlinkEscapes { .. }),
            "{name} -> {target}: {e}"
        );
    }
    // The chain trick: q -> .. is fine on its own, but p/q/../.. would climb out physically.
    let e = refused(
        &stage_a()
            .dir("stages/a/p")
            .link("stages/a/p/q", "..")
            .link("stages/a/l", "p/q/../..")
            .end(),
    );
    assert!(matches!(e, ContextError::SymlinkEscapes { .. }), "{e}");
}

#[test]
fn refuses_entries_beneath_a_symlink() {
    let e = refused(
        &stage_a()
            .link("stages/a/d", "sub")
            .file("stages/a/d/x", b"x")
            .end(),
    );
    assert!(
        matches!(e, ContextError::UnderSymlink { ref link, .. } if link == "stages/a/d"),
        "{e}"
    );
    let e = refused(
        &stage_a()
            .dir("stages/a/up")
            .link("stages/a/up/l", "..")
            .link("stages/a/up/l/m", "../..")
            .end(),
    );
    assert!(matches!(e, ContextError::UnderSymlink { .. }), "{e}");
}

#[test]
fn refuses_hard_links_devices_fifos_and_other_types() {
    let h = Raw::header(b"stages/a/h", b'1', 0, b"stages/a/f");
    let e = refused(&stage_a().put(&h, b"").end());
    assert!(matches!(e, ContextError::HardLink { .. }), "{e}");
    for (kind, word) in [
        (b'3', "character device"),
        (b'4', "block device"),
        (b'6', "FIFO"),
    ] {
        let e = refused(&stage_a().kind("stages/a/dev", kind).end());
        assert!(
            matches!(e, ContextError::SpecialFile { kind, .. } if kind == word),
            "{e}"
        );
        assert!(e.to_string().contains("stages/a/dev"), "{e}");
    }
    for kind in [b'7', b'V', b'M', b'D', b'Z'] {
        let e = refused(&stage_a().kind("stages/a/odd", kind).end());
        assert!(matches!(e, ContextError::UnsupportedType { .. }), "{e}");
    }
    let e = refused(&stage_a().kind("stages/a/sparse", b'S').end());
    assert!(matches!(e, ContextError::Sparse { .. }), "{e}");
    let e = refused(
        &stage_a()
            .pax(&[("GNU.sparse.major", b"1")])
            .file("stages/a/sparse", b"x")
            .end(),
    );
    assert!(matches!(e, ContextError::Sparse { .. }), "{e}");
}

#[test]
fn refuses_data_on_directories_and_links() {
    let h = Raw::header(b"stages/a/d", b'5', 3, b"");
    let e = refused(&stage_a().put(&h, b"abc").end());
    assert!(matches!(e, ContextError::UnexpectedData { .. }), "{e}");
}

#[test]
fn refuses_huge_size_claims_before_reading_data() {
    // 8 GiB claimed, nothing behind it: refused at once, not after reading to the end.
    let mut h = Raw::header(b"stages/a/big", b'0', 0, b"");
    h.set_size(8 << 30);
    h.set_cksum();
    let mut input = stage_a().0;
    input.extend_from_slice(h.as_bytes());
    let e = refused(&input);
    assert!(
        matches!(e, ContextError::EntryTooLarge { ref entry, size, .. } if entry == "stages/a/big" && size == 8 << 30),
        "{e}"
    );
    // The same through a PAX size.
    let e = refused(
        &stage_a()
            .pax(&[("size", b"99999999999")])
            .file("stages/a/big", b"")
            .end(),
    );
    assert!(matches!(e, ContextError::EntryTooLarge { .. }), "{e}");
    // Base-256 sizes are read too.
    let mut h = Raw::header(b"stages/a/big", b'0', 0, b"");
    h.as_mut_bytes()[124..136].copy_from_slice(&[0x80, 0, 0, 0, 0, 0, 0, 0, 0x10, 0, 0, 0]);
    h.set_cksum();
    let mut input = stage_a().0;
    input.extend_from_slice(h.as_bytes());
    let e = refused(&input);
    assert!(
        matches!(e, ContextError::EntryTooLarge { size, .. } if size == 1 << 28),
        "{e}"
    );
}

#[test]
fn refuses_a_context_over_the_limit() {
    let chunk = vec![7u8; 200 * 1024];
    let mut raw = stage_a();
    for i in 0..6 {
        raw = raw.file(&format!("stages/a/f{i}"), &chunk);
    }
    let e = refused(&raw.end());
    assert!(
        matches!(
            e,
            ContextError::EntryTooLarge { .. } | ContextError::TooLarge { .. }
        ),
        "{e}"
    );
    // Many small entries count as well (headers are part of the stream).
    let mut raw = stage_a();
    for i in 0..3000 {
        raw = raw.dir(&format!("stages/a/d{i}"));
    }
    let e = refused(&raw.end());
    assert!(matches!(e, ContextError::TooLarge { limit: LIMIT }), "{e}");
}

#[test]
fn refuses_oversized_extension_headers_without_reading_them() {
    let mut h = Raw::header(b"././@PaxHeader", b'x', 0, b"");
    h.set_size(1 << 30);
    h.set_cksum();
    let e = refused(h.as_bytes());
    assert!(matches!(e, ContextError::ExtensionTooLarge { .. }), "{e}");
    let mut h = Raw::header(b"././@LongLink", b'L', 0, b"");
    h.set_size(1 << 30);
    h.set_cksum();
    let e = refused(h.as_bytes());
    assert!(matches!(e, ContextError::NameTooLong { .. }), "{e}");
    let name = format!("stages/a/{}", "x".repeat(5000));
    let e = refused(
        &stage_a()
            .pax(&[("path", name.as_bytes())])
            .file("x", b"")
            .end(),
    );
    assert!(matches!(e, ContextError::NameTooLong { .. }), "{e}");
    let e = refused(
        &stage_a()
            .pax(&[("path", b"stages/a/x")])
            .pax(&[("path", b"stages/a/y")])
            .file("x", b"")
            .end(),
    );
    assert!(matches!(e, ContextError::BadExtension { .. }), "{e}");
}

#[test]
fn refuses_truncated_and_corrupt_streams() {
    // No end marker: the client was interrupted.
    let e = refused(&stage_a().file("stages/a/f", b"x").0);
    assert!(matches!(e, ContextError::Truncated), "{e}");
    // Ends inside a file's data.
    let mut input = stage_a().file("stages/a/f", &[1u8; 2000]).0;
    input.truncate(input.len() - 1500);
    let e = refused(&input);
    assert!(matches!(e, ContextError::Truncated), "{e}");
    // Ends inside a header.
    let mut input = stage_a().file("stages/a/f", b"x").0;
    input.truncate(input.len() - 700);
    let e = refused(&input);
    assert!(matches!(e, ContextError::Truncated), "{e}");
    // A flipped byte breaks the checksum.
    let mut input = stage_a().file("stages/a/f", b"x").end();
    input[4 * 512 + 10] ^= 0x20;
    let e = refused(&input);
    assert!(
        matches!(e, ContextError::BadHeader { offset, .. } if offset == 4 * 512),
        "{e}"
    );
    // Not a tar at all.
    let e = refused(&[b'x'; 4096]);
    assert!(
        matches!(e, ContextError::BadHeader { offset: 0, .. }),
        "{e}"
    );
    // Empty input.
    let e = refused(b"");
    assert!(matches!(e, ContextError::Truncated), "{e}");
}

#[test]
fn refuses_more_stage_directories_than_a_build_can_have() {
    let mut raw = Raw::new();
    for i in 0..=MAX_STAGES {
        raw = raw.dir(&format!("stages/s{i}"));
    }
    let e = refused(&raw.end());
    assert!(
        matches!(e, ContextError::TooManyStages { ref entry } if entry == "stages/s256"),
        "{e}"
    );
}

#[test]
fn refuses_nul_in_names() {
    let e = refused(
        &stage_a()
            .pax(&[("path", b"stages/a/x\0y")])
            .file("x", b"")
            .end(),
    );
    assert!(matches!(e, ContextError::NulInName { .. }), "{e}");
}

#[test]
fn reads_parts_first_then_restreams_everything() {
    let input = Raw::new()
        .dir("stages")
        .dir("stages/__init__")
        .file("stages/__init__/Dockerfile.part", b"ENV A=1\n")
        .dir("stages/os")
        .file("stages/os/Dockerfile.part", b"COPY stages/os/f /f\n")
        .file("stages/__init__/x", b"init file")
        .file("stages/os/f", b"os file")
        .end();
    let stages = vec!["__init__".to_string(), "os".to_string()];
    let mut reader = ContextReader::new(&input[..], LIMIT);
    let parts = reader.read_parts(&stages).unwrap();
    assert_eq!(
        parts,
        [
            ("__init__".to_string(), "ENV A=1\n".to_string()),
            ("os".to_string(), "COPY stages/os/f /f\n".to_string())
        ]
    );
    let mut out = Vec::new();
    let stats = reader.restream_into(&mut out, "generated\n").unwrap();
    assert_eq!(stats.stages, ["__init__", "os"]);
    let names: Vec<String> = list(&out).into_iter().map(|e| e.0).collect();
    assert_eq!(
        names,
        [
            "Dockerfile",
            "stages",
            "stages/__init__",
            "stages/__init__/Dockerfile.part",
            "stages/os",
            "stages/os/Dockerfile.part",
            "stages/__init__/x",
            "stages/os/f"
        ]
    );
}

#[test]
fn read_parts_refusals() {
    let stages = vec!["__init__".to_string(), "os".to_string()];
    let parts_of = |input: &[u8]| ContextReader::new(input, LIMIT).read_parts(&stages);

    // Out of order: os's part before __init__'s.
    let input = Raw::new()
        .file("stages/os/Dockerfile.part", b"")
        .file("stages/__init__/Dockerfile.part", b"")
        .end();
    let e = parts_of(&input).unwrap_err();
    assert!(
        matches!(e, ContextError::PartMissing { ref stage, .. } if stage == "__init__"),
        "{e}"
    );

    // A file before the parts.
    let input = Raw::new()
        .file("stages/__init__/x", b"")
        .file("stages/__init__/Dockerfile.part", b"")
        .end();
    assert!(matches!(
        parts_of(&input),
        Err(ContextError::PartMissing { .. })
    ));

    // Missing the second part.
    let input = Raw::new()
        .file("stages/__init__/Dockerfile.part", b"")
        .end();
    let e = parts_of(&input).unwrap_err();
    assert!(
        matches!(e, ContextError::PartMissing { ref stage, .. } if stage == "os"),
        "{e}"
    );
    assert!(e.to_string().contains("end of the context"), "{e}");

    // A stage that was not chosen.
    let input = Raw::new().file("stages/evil/Dockerfile.part", b"").end();
    assert!(matches!(
        parts_of(&input),
        Err(ContextError::StageNotChosen { .. })
    ));

    // The same directory again and again before the part: not held without bound.
    let mut raw = Raw::new().dir("stages");
    for _ in 0..3 {
        raw = raw.dir("stages/__init__");
    }
    let e = parts_of(&raw.file("stages/__init__/Dockerfile.part", b"").end()).unwrap_err();
    assert!(matches!(e, ContextError::PartMissing { .. }), "{e}");
    let e = parts_of(&Raw::new().dir("stages").dir("stages").end()).unwrap_err();
    assert!(matches!(e, ContextError::PartMissing { .. }), "{e}");

    // Not UTF-8.
    let input = Raw::new()
        .file("stages/__init__/Dockerfile.part", b"\xff\xfe")
        .end();
    assert!(matches!(
        parts_of(&input),
        Err(ContextError::PartNotUtf8 { .. })
    ));

    // Too large together.
    let big = vec![b'#'; MAX_PARTS_BYTES as usize / 2 + 1];
    let input = Raw::new()
        .file("stages/__init__/Dockerfile.part", &big)
        .file("stages/os/Dockerfile.part", &big)
        .end();
    let e = ContextReader::new(&input[..], 16 << 20)
        .read_parts(&stages)
        .unwrap_err();
    assert!(
        matches!(e, ContextError::PartsTooLarge { ref stage } if stage == "os"),
        "{e}"
    );

    // After the parts: a second copy of a part, or a stage not chosen.
    for extra in [
        Raw::new().file("stages/os/Dockerfile.part", b"FROM evil\n"),
        Raw::new().file("stages/other/f", b""),
    ] {
        let mut input = Raw::new()
            .file("stages/__init__/Dockerfile.part", b"")
            .file("stages/os/Dockerfile.part", b"")
            .0;
        input.extend_from_slice(&extra.end());
        let mut reader = ContextReader::new(&input[..], LIMIT);
        reader.read_parts(&stages).unwrap();
        let mut out = Vec::new();
        let e = reader.restream_into(&mut out, "x").unwrap_err();
        assert!(
            matches!(
                e,
                ContextError::DuplicatePart { .. } | ContextError::StageNotChosen { .. }
            ),
            "{e}"
        );
        assert!(out.ends_with(&[0xff; 1024]));
    }
}

/// Hands out a stream a few bytes at a time, with interruptions, like a slow pipe.
struct Trickle<'a> {
    data: &'a [u8],
    calls: usize,
}

impl Read for Trickle<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.calls += 1;
        if self.calls.is_multiple_of(5) {
            return Err(io::Error::from(io::ErrorKind::Interrupted));
        }
        let n = buf.len().min(self.data.len()).min(self.calls % 700 + 1);
        buf[..n].copy_from_slice(&self.data[..n]);
        self.data = &self.data[n..];
        Ok(n)
    }
}

#[test]
fn works_over_short_reads_and_interruptions() {
    let data: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
    let input = stage_a().file("stages/a/data", &data).end();
    let mut out = Vec::new();
    let stats = restream(
        Trickle {
            data: &input,
            calls: 0,
        },
        &mut out,
        "D\n",
        LIMIT,
    )
    .unwrap();
    assert_eq!(stats.file_bytes, data.len() as u64 + 19);
    let listed = list(&out);
    assert_eq!(listed.last().unwrap().6, data);
}

/// A writer that fails like a pipe whose reader went away.
struct Closed;

impl Write for Closed {
    fn write(&mut self, _: &[u8]) -> io::Result<usize> {
        Err(io::Error::from(io::ErrorKind::BrokenPipe))
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[test]
fn reports_write_failures_as_such() {
    let input = stage_a().file("stages/a/f", b"x").end();
    let e = restream(&input[..], Closed, "D", LIMIT).unwrap_err();
    assert!(matches!(e, ContextError::Write(_)), "{e}");
    // Also when a buffer holds everything until the end.
    let e = restream(&input[..], io::BufWriter::new(Closed), "D", LIMIT).unwrap_err();
    assert!(matches!(e, ContextError::Write(_)), "{e}");
}

/// 256 MiB of zeros behind a header that claims them: the data is streamed through a fixed
/// buffer, never held, so this runs in constant memory.
#[test]
fn streams_large_files_without_buffering_them() {
    const SIZE: u64 = 256 << 20;
    let mut head = stage_a().0;
    let h = Raw::header(b"stages/a/big", b'0', SIZE, b"");
    head.extend_from_slice(h.as_bytes());
    let input = head
        .as_slice()
        .chain(io::repeat(0).take(SIZE))
        .chain(&[0u8; 1024][..]);
    let mut counted = 0u64;
    struct Count<'a>(&'a mut u64);
    impl Write for Count<'_> {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            *self.0 += buf.len() as u64;
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }
    let stats = restream(input, Count(&mut counted), "D", SIZE + (1 << 20)).unwrap();
    assert_eq!(stats.file_bytes, SIZE + 19);
    assert!(counted > SIZE);
}
