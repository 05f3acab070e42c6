//! The desktop integration as `make install` puts it in place (into a prefix of the test's
//! own): every .desktop file passes desktop-file-validate, the file-manager actions run the
//! installed launcher, and the launcher opens a terminal running `pib-client flash FILE`.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use pib_tests::{repo_root, target_dir, text};

/// Runs scripts/install into `prefix`, every directory under it.
fn install(prefix: &Path) {
    let out = Command::new(repo_root().join("scripts/install"))
        .env("PREFIX", prefix)
        .env("DESTDIR", "")
        .env("BIN_DIR", target_dir())
        .env("UNITDIR", prefix.join("lib/systemd/system"))
        .env("DBUS_POLICYDIR", prefix.join("etc/dbus-1/system.d"))
        .env("POLKIT_ACTIONDIR", prefix.join("share/polkit-1/actions"))
        .output()
        .unwrap();
    assert!(out.status.success(), "install: {}", text(&out));
}

fn files_named(dir: &Path, suffix: &str, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            files_named(&p, suffix, out);
        } else if p.to_string_lossy().ends_with(suffix) {
            out.push(p);
        }
    }
}

fn write_script(path: &Path, body: &str) {
    std::fs::write(path, body).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

#[test]
fn desktop_files_validate_and_actions_open_pib_client_flash_in_a_terminal() {
    let dir = std::env::temp_dir().join(format!("pib-desktop-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let prefix = dir.join("prefix");
    install(&prefix);
    let launcher = prefix.join("libexec/pi-builder/pib-write-card");

    let mut desktop = Vec::new();
    files_named(&prefix, ".desktop", &mut desktop);
    desktop.sort();
    let names: Vec<String> = desktop
        .iter()
        .map(|p| p.strip_prefix(&prefix).unwrap().display().to_string())
        .collect();
    assert_eq!(
        names,
        [
            "share/applications/org.pibuilder.pib-client.desktop",
            "share/kio/servicemenus/org.pibuilder.write-card.desktop"
        ]
    );
    for file in &desktop {
        let out = Command::new("desktop-file-validate")
            .arg(file)
            .output()
            .expect("desktop-file-validate (desktop-file-utils, installed by make dev-up)");
        assert!(
            out.status.success() && out.stdout.is_empty(),
            "{}: {}",
            file.display(),
            text(&out)
        );
        let content = std::fs::read_to_string(file).unwrap();
        assert!(
            content.contains(&format!("Exec={} ", launcher.display())),
            "{}: {content}",
            file.display()
        );
    }
    let entry = std::fs::read_to_string(&desktop[0]).unwrap();
    assert!(entry.contains("\nTerminal=true\n"), "{entry}");
    let menu = std::fs::read_to_string(&desktop[1]).unwrap();
    assert!(
        menu.contains("Name=Write to SD card with pi-builder") && menu.contains("--terminal %f"),
        "{menu}"
    );

    // The Nautilus extension is valid Python that runs the same launcher.
    let ext = prefix.join("share/nautilus-python/extensions/pib-write-card.py");
    let out = Command::new("python3")
        .args(["-m", "py_compile"])
        .arg(&ext)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let code = std::fs::read_to_string(&ext).unwrap();
    assert!(
        code.contains(&format!("LAUNCHER = \"{}\"", launcher.display())),
        "{code}"
    );

    // A terminal and a pib-client that only say how they were run.
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let log = dir.join("log");
    write_script(
        &bin.join("fake-terminal"),
        &format!(
            "#!/bin/sh\necho \"terminal $*\" >>{0}\n[ \"$1\" = -e ] && shift\nexec \"$@\"\n",
            log.display()
        ),
    );
    write_script(
        &bin.join("pib-client"),
        &format!("#!/bin/sh\necho \"pib-client $*\" >>{}\n", log.display()),
    );
    let run = |program: &Path, args: &[&str]| {
        let mut child = Command::new(program)
            .args(args)
            .env("PATH", format!("{}:/usr/bin:/bin", bin.display()))
            .env("TERMINAL", bin.join("fake-terminal"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // The window waits for Enter before it closes.
        use std::io::Write;
        child.stdin.take().unwrap().write_all(b"\n").unwrap();
        let out = child.wait_with_output().unwrap();
        let logged = std::fs::read_to_string(&log).unwrap_or_default();
        let _ = std::fs::remove_file(&log);
        (out, logged)
    };

    let (out, logged) = run(&launcher, &["--terminal", "/home/u/My Images/pi.img.zst"]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(
        logged,
        format!(
            "terminal -e {} /home/u/My Images/pi.img.zst\npib-client flash /home/u/My Images/pi.img.zst\n",
            launcher.display()
        )
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("Press Enter"));

    // The Nautilus script takes the first image among the selected files.
    let script = prefix.join("share/pi-builder/nautilus-scripts/Write to SD card with pi-builder");
    let (out, logged) = run(&script, &["/tmp/notes.txt", "/tmp/pi.img.xz"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        logged.ends_with("pib-client flash /tmp/pi.img.xz\n"),
        "{logged}"
    );
    let (out, logged) = run(&script, &["/tmp/notes.txt"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert_eq!(logged, "");

    // From the menu, without a file: the cards, and how to write one.
    let (out, logged) = run(&launcher, &[]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(logged, "pib-client devices\n");

    std::fs::remove_dir_all(&dir).unwrap();
}
