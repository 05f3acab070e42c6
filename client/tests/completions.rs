//! The completion scripts of `pib-client completions SHELL`, loaded into the real shells.
//! bash and fish complete command lines for real; zsh completes only inside its line editor,
//! so there the script is checked for syntax and for registering itself with compinit.
//! (scripts/dev-up installs zsh and fish.)

use std::path::{Path, PathBuf};
use std::process::Command;

fn script(shell: &str) -> (tempfile::TempDir, PathBuf) {
    let out = Command::new(env!("CARGO_BIN_EXE_pib-client"))
        .args(["completions", shell])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(format!("pib-client.{shell}"));
    std::fs::write(&path, out.stdout).unwrap();
    (dir, path)
}

fn run(program: &str, args: &[&str]) -> String {
    let out = Command::new(program)
        .args(args)
        .env("LANG", "C.UTF-8")
        .output()
        .unwrap_or_else(|e| panic!("{program}: {e} (scripts/dev-up installs it)"));
    assert!(
        out.status.success(),
        "{program} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// What bash offers for `line`, through `complete.bash` beside this file.
fn bash_complete(script: &Path, line: &str) -> Vec<String> {
    let driver = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/complete.bash");
    let (driver, script) = (driver.to_str().unwrap(), script.to_str().unwrap());
    run("bash", &["--norc", driver, script, line])
        .lines()
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect()
}

#[test]
fn bash_completes_subcommands_and_flags() {
    let (_dir, path) = script("bash");
    assert_eq!(bash_complete(&path, "pib-client fl"), ["flash"]);
    assert_eq!(bash_complete(&path, "pib-client binfmt re"), ["register"]);
    assert_eq!(
        bash_complete(&path, "pib-client flash --no-v"),
        ["--no-verify"]
    );
    let mut shells = bash_complete(&path, "pib-client completions ");
    shells.retain(|w| !w.starts_with('-'));
    shells.sort();
    assert_eq!(shells, ["bash", "elvish", "fish", "powershell", "zsh"]);
    let top = bash_complete(&path, "pib-client ");
    for name in ["status", "build", "image", "flash", "devices", "help"] {
        assert!(top.contains(&name.to_owned()), "{name} in {top:?}");
    }
    assert!(
        !top.iter().any(|c| c == "manpages"),
        "the packaging-only generator is not offered: {top:?}"
    );
}

#[test]
fn fish_completes_subcommands_and_flags() {
    let (_dir, path) = script("fish");
    let path = path.to_str().unwrap();
    run("fish", &["--no-config", "--no-execute", path]);
    let complete = |line: &str| -> Vec<String> {
        let cmd = format!("source {path}; complete -C '{line}'");
        run("fish", &["--no-config", "-c", &cmd])
            .lines()
            .map(|l| l.split('\t').next().unwrap().to_owned())
            .collect()
    };
    assert_eq!(complete("pib-client fl"), ["flash"]);
    assert_eq!(complete("pib-client binfmt re"), ["register"]);
    assert!(complete("pib-client flash --no-").contains(&"--no-verify".to_owned()));
}

#[test]
fn zsh_script_parses_and_registers_with_compinit() {
    let (dir, path) = script("zsh");
    let path = path.to_str().unwrap();
    run("zsh", &["-n", path]);
    // compinit's dump file goes to the temp dir, not a home directory.
    let dump = dir.path().join("zcompdump");
    let cmd = format!(
        "autoload -Uz compinit && compinit -u -d {} && source {path} && print -r -- $_comps[pib-client]",
        dump.display()
    );
    assert_eq!(run("zsh", &["-f", "-c", &cmd]).trim(), "_pib-client");
}
