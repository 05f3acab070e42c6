//! Stage lookup and context packing against real directory trees.

use std::fs;
use std::io::{self, Read};
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};

use tempfile::TempDir;

use super::context::test_support;
use super::*;

fn names(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

/// Makes `root/rel` a stage directory whose part is `part`.
fn make_stage(root: &Path, rel: &str, part: &str) -> PathBuf {
    let dir = root.join(rel);
    fs::create_dir_all(&dir).unwrap();
    fs::write(dir.join(PART_FILE), part).unwrap();
    dir
}

/// A bundled tree with `__init__` and `os` in common, `os` also for arch, `__cleanup__` for debian.
fn bundled() -> TempDir {
    let root = tempfile::tempdir().unwrap();
    make_stage(root.path(), "common/__init__", "ENV A=1\n");
    make_stage(root.path(), "common/os", "# common os\n");
    make_stage(root.path(), "arch/os", "# arch os\n");
    make_stage(root.path(), "debian/__cleanup__", "# cleanup\n");
    root
}

#[test]
fn bundled_root_prefers_the_environment_then_installed_then_development_trees() {
    let tmp = tempfile::tempdir().unwrap();
    let prefix = tmp.path().join("prefix");
    let exe = prefix.join("bin/pib-client");
    let share = prefix.join("share/pi-builder/stages");
    let system = tmp.path().join("system-stages");
    let repo_exe = tmp.path().join("repo/target/debug/pib-client");
    let repo_stages = tmp.path().join("repo/stages");

    // Explicit setting, even when missing.
    assert_eq!(
        bundled_root_from(Some("/nowhere".into()), Some(&exe), &[]),
        Some(PathBuf::from("/nowhere"))
    );
    // Nothing exists.
    assert_eq!(bundled_root_from(None, Some(&exe), &[&system]), None);
    assert_eq!(bundled_root_from(Some("".into()), None, &[]), None);
    // A system location.
    fs::create_dir_all(&system).unwrap();
    assert_eq!(
        bundled_root_from(None, Some(&exe), &[&system]),
        Some(system.clone())
    );
    // Next to the executable wins over the system.
    fs::create_dir_all(&share).unwrap();
    assert_eq!(
        bundled_root_from(None, Some(&exe), &[&system]),
        Some(share.clone())
    );
    // The repository's stages, for target/debug/pib-client, come last.
    fs::create_dir_all(&repo_stages).unwrap();
    assert_eq!(
        bundled_root_from(None, Some(&repo_exe), &[&system]),
        Some(system.clone())
    );
    assert_eq!(
        bundled_root_from(None, Some(&repo_exe), &[]),
        Some(repo_stages)
    );
}

#[test]
fn resolve_checks_the_list() {
    let b = bundled();
    let r = |list: &[&str]| resolve(&names(list), &[], Some(b.path()), Distro::Arch);
    assert!(matches!(r(&[]), Err(StageError::NoStages)));
    assert!(matches!(r(&["os"]), Err(StageError::InitNotFirst { .. })));
    assert!(matches!(
        r(&["__init__", "__cleanup__", "os"]),
        Err(StageError::CleanupNotLast)
    ));
    assert!(matches!(
        r(&["__init__", "os", "os"]),
        Err(StageError::Duplicate { ref name }) if name == "os"
    ));
    assert!(matches!(
        r(&["__init__", "__init__"]),
        Err(StageError::Duplicate { .. })
    ));
    for bad in ["../etc", "OS", "a/b", "", "-x"] {
        assert!(
            matches!(r(&["__init__", bad]), Err(StageError::BadName(_))),
            "{bad:?}"
        );
    }
    // A bad name is reported as such even when the order is wrong too.
    assert!(matches!(r(&["../x"]), Err(StageError::BadName(_))));
    let many: Vec<String> = std::iter::once("__init__".to_string())
        .chain((0..MAX_STAGES).map(|i| format!("s{i}")))
        .collect();
    assert!(matches!(
        resolve(&many, &[], Some(b.path()), Distro::Arch),
        Err(StageError::TooMany { count }) if count == MAX_STAGES + 1
    ));
}

#[test]
fn resolve_searches_user_dirs_in_order_then_family_then_common() {
    let b = bundled();
    let user1 = tempfile::tempdir().unwrap();
    let user2 = tempfile::tempdir().unwrap();
    make_stage(user2.path(), "os", "# user2 os\n");
    make_stage(user2.path(), "extra", "# user2 extra\n");
    make_stage(user1.path(), "extra", "# user1 extra\n");

    let list = names(&["__init__", "os", "extra"]);
    let dirs = vec![user1.path().to_owned(), user2.path().to_owned()];
    let found = resolve(&list, &dirs, Some(b.path()), Distro::Arch).unwrap();
    assert_eq!(found[0].dir, b.path().join("common/__init__"));
    assert_eq!(found[0].origin, Origin::Bundled);
    assert_eq!(found[1].dir, user2.path().join("os"));
    assert_eq!(found[1].origin, Origin::User);
    assert_eq!(found[2].dir, user1.path().join("extra"));

    // Without user dirs: family-specific before common.
    let found = resolve(
        &names(&["__init__", "os"]),
        &[],
        Some(b.path()),
        Distro::Arch,
    )
    .unwrap();
    assert_eq!(found[1].dir, b.path().join("arch/os"));
    let found = resolve(
        &names(&["__init__", "os", "__cleanup__"]),
        &[],
        Some(b.path()),
        Distro::Debian,
    )
    .unwrap();
    assert_eq!(found[1].dir, b.path().join("common/os"));
    assert_eq!(found[2].dir, b.path().join("debian/__cleanup__"));
    assert_eq!(found[2].name, "__cleanup__");
}

#[test]
fn resolve_says_where_it_looked() {
    let b = bundled();
    let user = tempfile::tempdir().unwrap();
    let err = resolve(
        &names(&["__init__", "nope"]),
        &[user.path().to_owned()],
        Some(b.path()),
        Distro::Debian,
    )
    .unwrap_err();
    let StageError::NotFound { ref looked, .. } = err else {
        panic!("{err}");
    };
    assert_eq!(
        looked,
        &[
            user.path().join("nope"),
            b.path().join("debian/nope"),
            b.path().join("common/nope")
        ]
    );
    let text = err.to_string();
    assert!(
        text.contains(&b.path().join("common/nope").display().to_string()),
        "{text}"
    );
    assert!(text.contains("--stages-dir"), "{text}");

    let err = resolve(&names(&["__init__"]), &[], None, Distro::Arch).unwrap_err();
    assert!(err.to_string().contains("no bundled stages"), "{err}");
}

#[test]
fn resolve_refuses_broken_stages_and_dirs() {
    let b = bundled();
    let user = tempfile::tempdir().unwrap();
    let dirs = vec![user.path().to_owned()];
    let r = |list: &[&str]| resolve(&names(list), &dirs, Some(b.path()), Distro::Arch);

    fs::create_dir(user.path().join("nopart")).unwrap();
    assert!(matches!(
        r(&["__init__", "nopart"]),
        Err(StageError::MissingPart { ref name, .. }) if name == "nopart"
    ));
    fs::create_dir_all(user.path().join("dirpart/Dockerfile.part")).unwrap();
    assert!(matches!(
        r(&["__init__", "dirpart"]),
        Err(StageError::PartNotFile { .. })
    ));
    fs::write(user.path().join("file"), "x").unwrap();
    assert!(matches!(
        r(&["__init__", "file"]),
        Err(StageError::NotADirectory { .. })
    ));

    let missing = user.path().join("missing");
    let err = resolve(
        &names(&["__init__"]),
        std::slice::from_ref(&missing),
        Some(b.path()),
        Distro::Arch,
    )
    .unwrap_err();
    assert!(
        matches!(err, StageError::UserDir { ref dir, .. } if *dir == missing),
        "{err}"
    );
    let err = resolve(
        &names(&["__init__"]),
        &[user.path().join("file")],
        Some(b.path()),
        Distro::Arch,
    )
    .unwrap_err();
    assert!(matches!(err, StageError::UserDirNotDir { .. }), "{err}");

    // A dangling symlink is reported, not skipped in favour of a bundled stage.
    symlink(user.path().join("gone"), user.path().join("os")).unwrap();
    assert!(matches!(
        r(&["__init__", "os"]),
        Err(StageError::NotADirectory { ref name, .. }) if name == "os"
    ));

    // A stage directory that is a symlink is the user's choice.
    let elsewhere = tempfile::tempdir().unwrap();
    let real = make_stage(elsewhere.path(), "real", "# real\n");
    symlink(&real, user.path().join("linked")).unwrap();
    let found = r(&["__init__", "linked"]).unwrap();
    assert_eq!(found[1].dir, user.path().join("linked"));
}

/// One entry of a packed context.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Entry {
    name: String,
    kind: char,
    mode: u32,
    mtime: u64,
    data: Vec<u8>,
}

fn entries(bytes: &[u8]) -> Vec<Entry> {
    let mut archive = tar::Archive::new(bytes);
    let mut out = Vec::new();
    for entry in archive.entries().unwrap() {
        let mut entry = entry.unwrap();
        let h = entry.header().clone();
        assert_eq!((h.uid().unwrap(), h.gid().unwrap()), (0, 0));
        assert_eq!(h.username_bytes(), Some(&b""[..]));
        assert_eq!(h.groupname_bytes(), Some(&b""[..]));
        let kind = h.entry_type().as_byte() as char;
        let data = if kind == '2' {
            entry.link_name_bytes().unwrap().into_owned()
        } else {
            let mut d = Vec::new();
            entry.read_to_end(&mut d).unwrap();
            d
        };
        out.push(Entry {
            name: String::from_utf8_lossy(&entry.path_bytes()).into_owned(),
            kind,
            mode: h.mode().unwrap(),
            mtime: h.mtime().unwrap(),
            data,
        });
    }
    out
}

/// A user stage tree with a bit of everything that is allowed.
fn rich_tree() -> (TempDir, Vec<Stage>) {
    let user = tempfile::tempdir().unwrap();
    let init = make_stage(user.path(), "__init__", "ENV A=1\n");
    let os = make_stage(user.path(), "os", "COPY stages/os/files/ /etc/\n");
    fs::create_dir_all(os.join("files/sub")).unwrap();
    fs::write(os.join("files/b.conf"), "b").unwrap();
    fs::write(os.join("files/a.conf"), "a").unwrap();
    fs::write(os.join("files/sub/deep"), "deep").unwrap();
    fs::write(os.join("run.sh"), "#!/bin/sh\n").unwrap();
    fs::set_permissions(os.join("run.sh"), fs::Permissions::from_mode(0o4755)).unwrap();
    fs::set_permissions(os.join("files/a.conf"), fs::Permissions::from_mode(0o600)).unwrap();
    symlink("a.conf", os.join("files/link")).unwrap();
    symlink("../a.conf", os.join("files/sub/up")).unwrap();
    symlink(".", os.join("self")).unwrap();
    // A hard link goes as a second ordinary file.
    fs::hard_link(os.join("files/b.conf"), os.join("files/hard")).unwrap();
    let long = "x".repeat(120);
    fs::write(os.join(&long), "long name").unwrap();
    fs::write(init.join("zzz"), "").unwrap();
    let stages = resolve(
        &names(&["__init__", "os"]),
        &[user.path().to_owned()],
        None,
        Distro::Debian,
    )
    .unwrap();
    (user, stages)
}

#[test]
fn packs_parts_first_then_sorted_trees_with_normalised_headers() {
    let (user, stages) = rich_tree();
    let mut out = Vec::new();
    let summary = write_context(&stages, &mut out).unwrap();
    assert_eq!(summary.tar_bytes, out.len() as u64);
    assert_eq!(summary.stages, 2);
    assert_eq!(summary.symlinks, 3);
    assert_eq!(summary.dirs, 4);
    assert_eq!(summary.files, 9);

    let listed = entries(&out);
    let got: Vec<(&str, char)> = listed.iter().map(|e| (e.name.as_str(), e.kind)).collect();
    let long = format!("stages/os/{}", "x".repeat(120));
    assert_eq!(
        got,
        [
            ("stages/__init__", '5'),
            ("stages/__init__/Dockerfile.part", '0'),
            ("stages/os", '5'),
            ("stages/os/Dockerfile.part", '0'),
            ("stages/__init__/zzz", '0'),
            ("stages/os/files", '5'),
            ("stages/os/files/a.conf", '0'),
            ("stages/os/files/b.conf", '0'),
            ("stages/os/files/hard", '0'),
            ("stages/os/files/link", '2'),
            ("stages/os/files/sub", '5'),
            ("stages/os/files/sub/deep", '0'),
            ("stages/os/files/sub/up", '2'),
            ("stages/os/run.sh", '0'),
            ("stages/os/self", '2'),
            (long.as_str(), '0'),
        ]
    );
    let find = |n: &str| listed.iter().find(|e| e.name == n).unwrap();
    assert_eq!(
        find("stages/os/Dockerfile.part").data,
        b"COPY stages/os/files/ /etc/\n"
    );
    assert_eq!(find("stages/os/files/hard").data, b"b");
    assert_eq!(find("stages/os/files/link").data, b"a.conf");
    assert_eq!(find("stages/os/files/sub/up").data, b"../a.conf");
    assert_eq!(find("stages/os/run.sh").mode, 0o4755);
    assert_eq!(find("stages/os/files/a.conf").mode, 0o600);
    assert_eq!(find(&long).data, b"long name");
    let mtime = fs::metadata(user.path().join("os/run.sh"))
        .unwrap()
        .modified()
        .unwrap()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert_eq!(find("stages/os/run.sh").mtime, mtime);

    // Deterministic: the same tree gives the same bytes.
    let mut again = Vec::new();
    write_context(&stages, &mut again).unwrap();
    assert_eq!(out, again);
}

#[test]
fn follows_a_symlinked_part() {
    let user = tempfile::tempdir().unwrap();
    make_stage(user.path(), "__init__", "");
    fs::create_dir(user.path().join("os")).unwrap();
    let shared = user.path().join("shared.part");
    fs::write(&shared, "ENV SHARED=1\n").unwrap();
    symlink(&shared, user.path().join("os/Dockerfile.part")).unwrap();
    let stages = resolve(
        &names(&["__init__", "os"]),
        &[user.path().to_owned()],
        None,
        Distro::Arch,
    )
    .unwrap();
    let mut out = Vec::new();
    write_context(&stages, &mut out).unwrap();
    let listed = entries(&out);
    let part = listed
        .iter()
        .find(|e| e.name == "stages/os/Dockerfile.part")
        .unwrap();
    assert_eq!(
        (part.kind, part.data.as_slice()),
        ('0', &b"ENV SHARED=1\n"[..])
    );
    // The link itself is not sent a second time.
    assert_eq!(
        listed
            .iter()
            .filter(|e| e.name.ends_with("Dockerfile.part"))
            .count(),
        2
    );
}

/// Packs a single stage `os` after `__init__`, with `setup` adding to `os`'s directory.
fn pack_with(setup: impl FnOnce(&Path)) -> (Result<ContextSummary, StageError>, Vec<u8>, TempDir) {
    let user = tempfile::tempdir().unwrap();
    make_stage(user.path(), "__init__", "");
    let os = make_stage(user.path(), "os", "");
    setup(&os);
    let stages = resolve(
        &names(&["__init__", "os"]),
        &[user.path().to_owned()],
        None,
        Distro::Arch,
    )
    .unwrap();
    let mut out = Vec::new();
    let result = write_context(&stages, &mut out);
    (result, out, user)
}

fn assert_unfinished(out: &[u8]) {
    assert!(
        !out.ends_with(&[0u8; 1024]),
        "a refused context must not carry the end marker"
    );
}

#[test]
fn refuses_symlinks_leaving_the_stage() {
    for (link, target) in [
        ("l", "/etc/shadow"),
        ("l", ".."),
        ("l", "../__init__/Dockerfile.part"),
        ("sub/l", "../../x"),
        ("l", "sub/../../x"),
        ("l", "sub/.."),
    ] {
        let (result, out, user) = pack_with(|os| {
            fs::create_dir_all(os.join("sub")).unwrap();
            symlink(target, os.join(link)).unwrap();
        });
        let err = result.unwrap_err();
        let path = user.path().join("os").join(link);
        match &err {
            StageError::SymlinkAbsolute { path: p, .. }
            | StageError::SymlinkEscapes { path: p, .. } => {
                assert_eq!(*p, path)
            }
            other => panic!("{link} -> {target}: {other}"),
        }
        assert!(
            err.to_string().contains(&path.display().to_string()),
            "{err}"
        );
        assert!(err.to_string().contains(target), "{err}");
        assert_unfinished(&out);
    }
    for (target, depth, ok) in [
        ("a", 0, true),
        ("./a/./b", 0, true),
        (".", 0, true),
        ("../a", 1, true),
        ("../../a", 1, false),
        ("a/../b", 2, false),
        ("", 0, false),
    ] {
        assert_eq!(
            test_support::link_ok(target, depth),
            ok,
            "{target:?} at {depth}"
        );
    }
}

fn mkfifo(path: &std::path::Path) {
    rustix::fs::mkfifoat(
        rustix::fs::CWD,
        path,
        rustix::fs::Mode::from_raw_mode(0o644),
    )
    .unwrap();
}

#[test]
fn refuses_fifos_and_sockets() {
    let (result, out, user) = pack_with(|os| {
        mkfifo(&os.join("fifo"));
    });
    let err = result.unwrap_err();
    assert!(
        matches!(err, StageError::SpecialFile { ref path, kind: "FIFO" } if *path == user.path().join("os/fifo")),
        "{err}"
    );
    assert_unfinished(&out);

    let (result, _, _user) = pack_with(|os| {
        let listener = std::os::unix::net::UnixListener::bind(os.join("sock")).unwrap();
        drop(listener);
    });
    assert!(
        matches!(result, Err(StageError::SpecialFile { kind: "socket", .. })),
        "{result:?}"
    );
}

#[test]
fn refuses_a_fifo_as_part() {
    let user = tempfile::tempdir().unwrap();
    make_stage(user.path(), "__init__", "");
    let os = user.path().join("os");
    fs::create_dir(&os).unwrap();
    mkfifo(&os.join(PART_FILE));
    let err = resolve(
        &names(&["__init__", "os"]),
        &[user.path().to_owned()],
        None,
        Distro::Arch,
    )
    .unwrap_err();
    assert!(matches!(err, StageError::PartNotFile { .. }), "{err}");
    // Even if it slipped past resolve (it changed afterwards), packing does not block on it.
    let stages = vec![
        Stage {
            name: "__init__".into(),
            dir: user.path().join("__init__"),
            origin: Origin::User,
        },
        Stage {
            name: "os".into(),
            dir: os,
            origin: Origin::User,
        },
    ];
    let err = write_context(&stages, io::sink()).unwrap_err();
    assert!(matches!(err, StageError::PartNotFile { .. }), "{err}");
}

#[test]
fn refuses_unreadable_files() {
    // Root reads everything, so the real check needs another user; the read-error path is
    // covered below with a failing reader either way.
    if !rustix::process::geteuid().is_root() {
        let (result, out, user) = pack_with(|os| {
            fs::write(os.join("secret"), "x").unwrap();
            fs::set_permissions(os.join("secret"), fs::Permissions::from_mode(0o000)).unwrap();
        });
        assert!(
            matches!(result, Err(StageError::Unreadable { ref path, .. }) if *path == user.path().join("os/secret")),
            "{result:?}"
        );
        assert_unfinished(&out);
    }

    struct Failing;
    impl Read for Failing {
        fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
            Err(io::Error::from_raw_os_error(libc::EIO))
        }
    }
    let (result, out) = test_support::pack_one(10, Failing);
    let err = result.unwrap_err();
    assert!(
        matches!(err, StageError::Unreadable { ref path, .. } if path == Path::new("/stages/a/f")),
        "{err}"
    );
    assert!(err.to_string().contains("/stages/a/f"), "{err}");
    assert_unfinished(&out);
}

#[test]
fn refuses_files_that_change_while_read() {
    let (result, _) = test_support::pack_one(10, &b"short"[..]);
    assert!(
        matches!(result, Err(StageError::FileChanged { .. })),
        "{result:?}"
    );
    let (result, _) = test_support::pack_one(3, &b"longer than said"[..]);
    assert!(
        matches!(result, Err(StageError::FileChanged { .. })),
        "{result:?}"
    );
    let (result, _) = test_support::pack_one(5, &b"exact"[..]);
    assert!(result.is_ok(), "{result:?}");
}

#[test]
fn refuses_contexts_over_the_limit() {
    let (_user, stages) = rich_tree();
    let mut out = Vec::new();
    let full = write_context(&stages, &mut out).unwrap().tar_bytes;
    // Exactly enough passes; a block less does not.
    assert!(context::write_context_limited(&stages, io::sink(), full).is_ok());
    let err = context::write_context_limited(&stages, io::sink(), full - 512).unwrap_err();
    assert!(
        matches!(err, StageError::TooLarge { limit } if limit == full - 512),
        "{err}"
    );
    // The estimate used for the check is an upper bound of what tar writes.
    assert_eq!(test_support::cost(10, 0, 0), 512);
    assert_eq!(test_support::cost(10, 0, 1), 1024);
    assert_eq!(test_support::cost(150, 0, 0), 512 + 512 + 512);
    assert_eq!(test_support::cost(150, 600, 513), 512 + 1024 + 1536 + 1024);
}

#[test]
fn reports_a_closed_output_as_a_write_error() {
    struct Closed;
    impl io::Write for Closed {
        fn write(&mut self, _: &[u8]) -> io::Result<usize> {
            Err(io::Error::from(io::ErrorKind::BrokenPipe))
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }
    let (_user, stages) = rich_tree();
    let err = write_context(&stages, Closed).unwrap_err();
    assert!(matches!(err, StageError::Write(_)), "{err}");
    // Also when a large buffer holds everything until the end.
    let err = write_context(&stages, io::BufWriter::with_capacity(1 << 20, Closed)).unwrap_err();
    assert!(matches!(err, StageError::Write(_)), "{err}");
}
