//! The binary's behaviour where no daemon is involved: unfinished commands, usage errors,
//! completions, help, and a missing system bus.

use std::process::{Command, Output};

const PLANNED: &[&str] = &[
    "base", "build", "image", "flash", "format", "install", "devices", "shell", "images", "rm",
    "clean", "scan",
];

/// Pointed at a bus that does not exist, so that nothing here can reach a real daemon.
fn client(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_pib-client"))
        .args(args)
        .env(
            "DBUS_SYSTEM_BUS_ADDRESS",
            "unix:path=/nonexistent/pib-client-test",
        )
        .output()
        .unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn unfinished_commands_say_so_and_exit_2() {
    for name in PLANNED {
        for args in [vec![*name], vec![*name, "--target", "/dev/sdz", "x", "-y"]] {
            let out = client(&args);
            assert_eq!(out.status.code(), Some(2), "{args:?}");
            assert_eq!(
                text(&out.stderr),
                format!("pib-client: `{name}` is not implemented yet\n"),
                "{args:?}"
            );
            assert!(out.stdout.is_empty(), "{args:?}");
        }
        let out = client(&["--json", name]);
        assert_eq!(out.status.code(), Some(2));
        assert_eq!(
            text(&out.stderr),
            format!("pib-client: `{name}` is not implemented yet\n")
        );
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(v["error"], "org.pibuilder.Client.Error.NotImplemented");
    }
}

#[test]
fn help_lists_every_command_with_a_description() {
    let out = client(&["--help"]);
    assert_eq!(out.status.code(), Some(0));
    let help = text(&out.stdout);
    for name in ["status", "binfmt", "jobs", "cancel", "completions"]
        .iter()
        .chain(PLANNED)
    {
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

    let out = client(&["--json", "binfmt", "register"]);
    assert_eq!(out.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["error"], "org.freedesktop.DBus.Error.NoServer");
    assert!(out.stderr.is_empty());
}
