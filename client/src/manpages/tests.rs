use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

use clap::CommandFactory;

use super::write_all;
use crate::cli::Cli;

/// `pib-client-base-fetch` and friends: the page name of every visible command, with its
/// description.
fn expected(cmd: &clap::Command, prefix: &str, out: &mut Vec<(String, String)>) {
    let about = cmd.get_about().map(|a| a.to_string()).unwrap_or_default();
    out.push((prefix.to_owned(), about));
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        expected(sub, &format!("{prefix}-{}", sub.get_name()), out);
    }
}

/// The page as man(1) shows it, wide enough that no description wraps.
fn render_with_man(page: &Path) -> String {
    let out = Command::new("man")
        .args(["--local-file", "--encoding=UTF-8"])
        .arg(page)
        .env("MANWIDTH", "250")
        .env("MANPAGER", "cat")
        .env("LANG", "C.UTF-8")
        .output()
        .expect("man(1) is missing: run scripts/dev-up (it installs man-db and groff-base)");
    assert!(
        out.status.success(),
        "man -l {}: {}",
        page.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("UTF-8 page")
}

/// groff's own warnings (-ww) flag malformed requests and escapes that man(1) would render
/// silently wrong.
fn groff_warnings(page: &Path) -> String {
    let out = Command::new("groff")
        .args(["-man", "-Tutf8", "-ww", "-z"])
        .arg(page)
        .output()
        .expect("groff is missing: run scripts/dev-up (it installs groff-base)");
    assert!(out.status.success(), "groff {}", page.display());
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn one_page_per_command_and_each_renders() {
    let dir = tempfile::tempdir().unwrap();
    let written = write_all(dir.path()).unwrap();

    let mut want = Vec::new();
    expected(&Cli::command(), "pib-client", &mut want);
    // More than the top level: the nested ones (base fetch, binfmt register) are there.
    assert!(want.len() > 20, "{want:?}");
    let want_files: BTreeSet<String> = want.iter().map(|(n, _)| format!("{n}.1")).collect();
    let got: BTreeSet<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(got, want_files, "no page for clap's help, hidden commands");
    assert_eq!(written.len(), want.len());
    assert!(written[0].ends_with("pib-client.1"));

    for (name, about) in &want {
        let page = dir.path().join(format!("{name}.1"));
        let warnings = groff_warnings(&page);
        assert!(warnings.is_empty(), "{name}: {warnings}");
        let text = render_with_man(&page);
        assert!(text.contains(name.as_str()), "{name} names itself:\n{text}");
        assert!(
            text.contains(about.as_str()),
            "{name}: {about:?} missing:\n{text}"
        );
        assert!(text.contains("SEE ALSO"), "{name}");
    }
}

#[test]
fn pages_carry_options_help_and_exit_codes() {
    let dir = tempfile::tempdir().unwrap();
    write_all(dir.path()).unwrap();
    let flash = render_with_man(&dir.path().join("pib-client-flash.1"));
    for needle in [
        "--no-verify",
        "--eject",
        "IMAGE",
        "DEVICE",
        "partition table",
    ] {
        assert!(flash.contains(needle), "{needle} missing:\n{flash}");
    }
    let top = render_with_man(&dir.path().join("pib-client.1"));
    for needle in [
        "EXIT STATUS",
        "Not authorized by polkit",
        "130",
        "PIB_BUNDLED_STAGES",
    ] {
        assert!(top.contains(needle), "{needle} missing:\n{top}");
    }
    assert!(
        !top.contains("manpages"),
        "the hidden generator is not documented"
    );
}
