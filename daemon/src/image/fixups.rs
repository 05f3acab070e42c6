//! Changes made to the tree between the two reads, so the card boots as a machine rather than
//! as a container. They act on the in-memory tree only: nothing on the host is read or
//! written, and a link in the tree is never followed (a stage that made /etc/hostname a
//! symlink keeps it).

use super::tree::{Kind, Meta, Tree};

/// Where systemd-resolved's stub resolver configuration appears at run time.
const RESOLVED_STUB: &[u8] = b"../run/systemd/resolve/stub-resolv.conf";
const RESOLVED_BINARIES: &[&str] = &[
    "usr/lib/systemd/systemd-resolved",
    "lib/systemd/systemd-resolved",
];

/// Files Docker leaves in every container.
const DOCKER_LEFTOVERS: &[&str] = &[".dockerenv", ".dockerinit"];

/// Where emulators get copied by tools that predate binfmt_misc's F flag.
const EMULATOR_DIRS: &[&str] = &["usr/bin", "usr/local/bin", "bin", "usr/sbin"];

fn file_meta(mode: u16) -> Meta {
    Meta {
        mode,
        uid: 0,
        gid: 0,
        mtime: now(),
    }
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// Whether `path` is absent or a regular file, i.e. safe for the daemon to (re)write.
fn writable(tree: &Tree, path: &str) -> bool {
    match tree.lookup(path) {
        None => true,
        Some(i) => matches!(tree.node(i).kind, Kind::File { .. }),
    }
}

fn hosts(hostname: &str) -> String {
    let short = hostname.split('.').next().unwrap_or(hostname);
    let names = if short == hostname {
        hostname.to_owned()
    } else {
        format!("{hostname} {short}")
    };
    format!(
        "127.0.0.1\tlocalhost\n127.0.1.1\t{names}\n\n\
         ::1\t\tlocalhost ip6-localhost ip6-loopback\nff02::1\t\tip6-allnodes\n\
         ff02::2\t\tip6-allrouters\n"
    )
}

fn is_emulator(name: &[u8]) -> bool {
    name.starts_with(b"qemu-") && name.ends_with(b"-static")
}

/// Applies the fix-ups; returns what was done, for the job's log.
pub fn apply(tree: &mut Tree, hostname: &str) -> Vec<String> {
    let mut done = Vec::new();
    for path in DOCKER_LEFTOVERS {
        if tree.remove(path) {
            done.push(format!("removed /{path}"));
        }
    }
    let etc_meta = file_meta(0o644);
    for (path, content) in [
        ("etc/hostname", format!("{hostname}\n")),
        ("etc/hosts", hosts(hostname)),
    ] {
        if writable(tree, path) {
            tree.insert_inline(path, content.as_bytes(), etc_meta);
            done.push(format!("wrote /{path} for {hostname}"));
        } else {
            done.push(format!(
                "left /{path} as the build made it (not a regular file)"
            ));
        }
    }
    let has_resolved = RESOLVED_BINARIES.iter().any(|p| tree.lookup(p).is_some());
    if has_resolved && writable(tree, "etc/resolv.conf") {
        let names: Vec<&[u8]> = vec![b"etc", b"resolv.conf"];
        tree.insert(
            &names,
            Kind::Symlink(RESOLVED_STUB.to_vec()),
            file_meta(0o777),
            Vec::new(),
        );
        done.push("made /etc/resolv.conf a link to systemd-resolved's stub".into());
    }
    // Docker's placeholder is an empty regular file; the kernel wants a character device
    // for the first console output before devtmpfs is mounted.
    if tree
        .lookup("dev/console")
        .is_some_and(|i| matches!(tree.node(i).kind, Kind::File { .. }))
    {
        let names: Vec<&[u8]> = vec![b"dev", b"console"];
        tree.insert(&names, Kind::Char(5, 1), file_meta(0o600), Vec::new());
        done.push("made /dev/console the console device".into());
    }
    for dir in EMULATOR_DIRS {
        let Some(d) = tree.lookup(dir) else { continue };
        let doomed: Vec<String> = tree
            .live()
            .filter(|(_, n)| n.parent == d && is_emulator(&n.name))
            .map(|(i, _)| tree.path_of(i))
            .collect();
        for path in doomed {
            tree.remove(&path);
            done.push(format!("removed the emulator /{path}"));
        }
    }
    if tree.remove("usr/libexec/qemu-binfmt") {
        done.push("removed /usr/libexec/qemu-binfmt".into());
    }
    done
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::tree::{split_path, Source};

    fn add(tree: &mut Tree, path: &str, kind: Kind) {
        let names = split_path(path.as_bytes()).unwrap();
        tree.insert(&names, kind, file_meta(0o644), Vec::new());
    }

    fn empty_file() -> Kind {
        Kind::File {
            size: 0,
            segments: None,
            source: Source::Tar(0),
        }
    }

    fn content(tree: &Tree, path: &str) -> Vec<u8> {
        match &tree.node(tree.lookup(path).unwrap()).kind {
            Kind::File {
                source: Source::Inline(b),
                ..
            } => b.clone(),
            other => panic!("{path}: {other:?}"),
        }
    }

    #[test]
    fn a_container_becomes_a_machine() {
        let mut t = Tree::new();
        add(&mut t, ".dockerenv", empty_file());
        add(&mut t, "etc/hostname", empty_file());
        add(&mut t, "etc/hosts", empty_file());
        add(&mut t, "etc/resolv.conf", empty_file());
        add(&mut t, "dev/console", empty_file());
        add(&mut t, "usr/lib/systemd/systemd-resolved", empty_file());
        add(&mut t, "usr/bin/qemu-aarch64-static", empty_file());
        add(&mut t, "usr/bin/qemu-img", empty_file());
        let done = apply(&mut t, "kitchen.lan");
        assert!(t.lookup(".dockerenv").is_none());
        assert_eq!(content(&t, "etc/hostname"), b"kitchen.lan\n");
        let hosts = String::from_utf8(content(&t, "etc/hosts")).unwrap();
        assert!(
            hosts.contains("127.0.1.1\tkitchen.lan kitchen\n"),
            "{hosts}"
        );
        let resolv = t.node(t.lookup("etc/resolv.conf").unwrap());
        assert_eq!(resolv.kind, Kind::Symlink(RESOLVED_STUB.to_vec()));
        assert_eq!(
            t.node(t.lookup("dev/console").unwrap()).kind,
            Kind::Char(5, 1)
        );
        assert!(t.lookup("usr/bin/qemu-aarch64-static").is_none());
        assert!(t.lookup("usr/bin/qemu-img").is_some(), "only emulators go");
        assert!(done.iter().any(|d| d.contains("emulator")));
    }

    #[test]
    fn links_planted_by_the_build_are_kept_and_never_followed() {
        let mut t = Tree::new();
        add(
            &mut t,
            "etc/hostname",
            Kind::Symlink(b"/etc/shadow".to_vec()),
        );
        add(&mut t, "etc/resolv.conf", empty_file());
        let done = apply(&mut t, "pi");
        let h = t.node(t.lookup("etc/hostname").unwrap());
        assert_eq!(h.kind, Kind::Symlink(b"/etc/shadow".to_vec()));
        assert!(done.iter().any(|d| d.contains("left /etc/hostname")));
        // Without systemd-resolved the build's resolv.conf stays.
        let r = t.node(t.lookup("etc/resolv.conf").unwrap());
        assert!(matches!(r.kind, Kind::File { .. }));
    }
}
