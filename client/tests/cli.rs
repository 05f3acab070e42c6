//! The binary's behaviour where no daemon is involved: usage errors, completions, help, and a
//! missing system bus.

use std::process::{Command, Output};

const COMMANDS: &[&str] = &[
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
    "image",
    "flash",
    "format",
    "install",
    "devices",
    "scan",
];

/// Pointed at a bus that does not exist, so that nothing here can reach a real daemon.
fn client(args: &[&str]) -> Output {
    client_in(args, std::env::temp_dir())
}

fn client_in(args: &[&str], dir: impl AsRef<std::path::Path>) -> Output {
    Command::new(env!("CARGO_BIN_EXE_pib-client"))
        .args(args)
        .current_dir(dir)
        .env(
            "DBUS_SYSTEM_BUS_ADDRESS",
            "unix:path=/nonexistent/pib-client-test",
        )
        .output()
        .unwrap()
}

/// A fresh directory of its own for one test.
fn scratch(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("pib-client-cli-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn help_lists_every_command_with_a_description() {
    let out = client(&["--help"]);
    assert_eq!(out.status.code(), Some(0));
    let help = text(&out.stdout);
    for name in COMMANDS {
        let line = help
            .lines()
            .find(|l| l.trim_start().starts_with(&format!("{name} ")))
            .unwrap_or_else(|| panic!("{name} missing from\n{help}"));
        assert!(line.split_whitespace().count() > 2, "{line}");
    }
    for flag in ["--json", "--no-ask-password", "--quiet"] {
        assert!(help.contains(flag), "{flag}");
    }
}

#[test]
fn completions_for_every_shell() {
    for shell in ["bash", "zsh", "fish", "elvish", "powershell"] {
        let out = client(&["completions", shell]);
        assert_eq!(out.status.code(), Some(0), "{shell}");
        let script = text(&out.stdout);
        assert!(script.contains("pib-client"), "{shell}");
        assert!(script.contains("binfmt"), "{shell}");
    }
    assert_eq!(client(&["completions", "csh"]).status.code(), Some(2));
}

#[test]
fn usage_errors_exit_2() {
    let out = client(&["binfmt", "register", "--arch", "riscv64"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("invalid value 'riscv64'"));

    let out = client(&["cancel", "three"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("is not a job"));

    let out = client(&["--json", "cancel", "/tmp/x"]);
    assert_eq!(out.status.code(), Some(2));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["error"], "org.pibuilder.Client.Error.Usage");
    assert!(v["message"].as_str().unwrap().contains("is not a job"));

    let out = client(&["scan", "--timeout", "0"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("--timeout"),
        "{}",
        text(&out.stderr)
    );

    assert_eq!(client(&[]).status.code(), Some(2));
    assert_eq!(client(&["frobnicate"]).status.code(), Some(2));
}

#[test]
fn no_system_bus() {
    let out = client(&["status"]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(
        stderr.starts_with("pib-client: Cannot connect to the system bus ("),
        "{stderr}"
    );
    assert!(stderr.contains("dbus-daemon --system --fork"), "{stderr}");

    for command in [&["binfmt", "register"][..], &["scan", "-i", "eth0"]] {
        let out = client(&[&["--json"][..], command].concat());
        assert_eq!(out.status.code(), Some(1), "{command:?}");
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(v["error"], "org.freedesktop.DBus.Error.NoServer");
        assert!(out.stderr.is_empty());
    }
}

/// Mistakes in pib.toml, the flags and the stages are found before the bus is touched: the bus
/// here does not exist, so reaching it would say so instead.
#[test]
fn build_mistakes_are_found_before_the_bus() {
    let dir = scratch("build");
    std::fs::write(dir.join("pib.toml"), "name = \"x\"\nhostnmae = \"pi\"\n").unwrap();
    let out = client_in(&["build"], &dir);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("pib.toml"), "{stderr}");
    assert!(stderr.contains("unknown field `hostnmae`"), "{stderr}");
    assert!(!stderr.contains("system bus"), "{stderr}");

    let out = client_in(&["--json", "build", "-c", "missing.toml"], &dir);
    assert_eq!(out.status.code(), Some(2));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["error"], "org.pibuilder.Client.Error.Config");
    assert!(
        v["message"].as_str().unwrap().contains("missing.toml"),
        "{v}"
    );

    std::fs::write(dir.join("pib.toml"), "distro = \"fedora\"\n").unwrap();
    let out = client_in(&["build"], &dir);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("bad distro: \"fedora\" is not one of: arch debian"),
        "{stderr}"
    );

    let out = client_in(&["build", "--set", "HOSTNAME=x"], &dir);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("use --hostname"));

    std::fs::remove_file(dir.join("pib.toml")).unwrap();
    let out = client_in(&["build", "--stages-dir", "mine"], &dir);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("cannot use the stage directory"),
        "{stderr}"
    );

    std::fs::create_dir(dir.join("mine")).unwrap();
    let out = client_in(
        &[
            "build",
            "--stages-dir",
            "mine",
            "--stages",
            "__init__ no-such-stage __cleanup__",
        ],
        &dir,
    );
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("stage \"no-such-stage\" not found"),
        "{stderr}"
    );
    assert!(!stderr.contains("system bus"), "{stderr}");
    let out = client_in(&["--json", "build", "--stages", "os __init__"], &dir);
    assert_eq!(out.status.code(), Some(2));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["error"], "org.pibuilder.Client.Error.Stage");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_tarball_that_cannot_be_opened_is_reported_before_the_bus() {
    let out = client(&[
        "base",
        "import",
        "/nonexistent/root.tar",
        "--distro",
        "debian",
        "--arch",
        "arm",
    ]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.starts_with("pib-client: cannot open the tarball /nonexistent/root.tar: "),
        "{stderr}"
    );
}
