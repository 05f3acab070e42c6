//! The bundled stages, built for real under qemu through pib-client and inspected inside the
//! result: Debian arm64 with the full list, Debian armhf with a shorter one. A user stage
//! directory overrides a bundled stage by name (ssh-root, with the test's key).
//!
//! Slow on a cold machine (kernel and initramfs under emulation); Docker's cache makes reruns
//! quick.

use std::path::Path;
use std::process::{Command, Output};

use pib_tests::{bundled_stages, client_as_root, last_json, step_of, text};

fn shell(name: &str, script: &str) -> String {
    let out = client_as_root(&["shell", name, "--", "sh", "-c", script]);
    assert_eq!(out.status.code(), Some(0), "{script}: {}", text(&out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A user stage dir whose ssh-root is the bundled one plus the test's public key.
fn user_stages(dir: &Path) -> String {
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir).unwrap();
    let key = dir.join("key");
    let status = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "pibtest", "-f"])
        .arg(&key)
        .status()
        .expect("ssh-keygen (openssh-client)");
    assert!(status.success());
    let status = Command::new("cp")
        .arg("-a")
        .arg(bundled_stages().join("common/ssh-root"))
        .arg(dir.join("ssh-root"))
        .status()
        .unwrap();
    assert!(status.success());
    let public = std::fs::read_to_string(key.with_extension("pub")).unwrap();
    std::fs::write(dir.join("ssh-root/pubkeys/test.pub"), &public).unwrap();
    std::fs::remove_file(&key).unwrap();
    std::fs::remove_file(key.with_extension("pub")).unwrap();
    public
}

fn build(args: &[&str]) -> Output {
    let mut all = vec!["--json", "build"];
    all.extend_from_slice(args);
    let out = client_as_root(&all);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    out
}

#[test]
fn debian_arm64_full_list_and_armhf_short_list() {
    let dir = std::env::temp_dir().join(format!("pib-stage-build-{}", std::process::id()));
    let public = user_stages(&dir);
    let stages = "__init__ os ro watchdog ssh-root ssh-keygen no-bluetooth __cleanup__";
    // The same build twice: the second must come from the cache up to ssh-keygen.
    let build_full = || {
        let extra = ["--locale", "de_DE.UTF-8", "--timezone", "Europe/Berlin"];
        let out = pib_tests::debian_build("pibtest-full", stages, &dir, &extra);
        assert_eq!(out.status.code(), Some(0), "{}", text(&out));
        out
    };
    let first = build_full();
    let name = "pibtest-full";

    // ro: a read-only root with tmpfs where the system writes, and the ro/rw commands.
    let fstab = shell(name, "cat /etc/fstab");
    let root = fstab
        .lines()
        .find(|l| l.starts_with("LABEL=PIROOT"))
        .unwrap_or_else(|| panic!("{fstab}"));
    assert!(
        root.split_whitespace()
            .nth(3)
            .unwrap()
            .split(',')
            .any(|o| o == "ro"),
        "{fstab}"
    );
    for dir in ["/tmp", "/var/tmp", "/var/log"] {
        assert!(
            fstab
                .lines()
                .any(|l| l.starts_with("tmpfs") && l.split_whitespace().nth(1) == Some(dir)),
            "no tmpfs on {dir}: {fstab}"
        );
    }
    shell(
        name,
        "test -x /usr/local/bin/ro && test -x /usr/local/bin/rw",
    );
    // watchdog: configured and enabled.
    shell(name, "test -s /etc/watchdog.conf");
    assert_eq!(
        shell(name, "systemctl is-enabled watchdog").trim(),
        "enabled"
    );
    // ssh-root: exactly the test's key.
    assert_eq!(
        shell(name, "cat /root/.ssh/authorized_keys").trim(),
        public.trim()
    );
    // locale and timezone from the build args.
    assert!(shell(name, "cat /etc/default/locale").contains("de_DE.UTF-8"));
    assert!(shell(name, "readlink /etc/localtime")
        .trim()
        .ends_with("Europe/Berlin"));

    // A second build: new host keys, everything up to ssh-keygen from the cache.
    let keys = |_: &Output| shell(name, "cat /etc/ssh/ssh_host_ed25519_key.pub");
    let keys1 = keys(&first);
    let second = build_full();
    let keys2 = keys(&second);
    assert_ne!(keys1, keys2, "two builds share host keys");
    let cached = last_json(&second)["result"]["cached"].as_u64().unwrap();
    let arg_step = step_of(&second, "ARG PIB_BUILD_ID");
    assert!(
        cached >= arg_step - 2,
        "steps before ssh-keygen rebuilt: {}",
        text(&second)
    );

    // armhf, shorter list, on a Pi 2.
    let out = build(&[
        "--distro",
        "debian",
        "--arch",
        "arm",
        "--board",
        "rpi2",
        "--stages",
        "__init__ os ssh-keygen __cleanup__",
        "--name",
        "pibtest-armhf",
    ]);
    assert_eq!(
        shell("pibtest-armhf", "uname -m").trim(),
        "armv7l",
        "{}",
        text(&out)
    );
    shell("pibtest-armhf", "test -s /etc/ssh/ssh_host_ed25519_key.pub");

    // The two images stay: removing them would also drop their cache layers (Docker prunes
    // untagged parents), and the next run would spend twenty minutes under emulation again.
    std::fs::remove_dir_all(&dir).unwrap();
}
