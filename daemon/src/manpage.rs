//! pib-daemon(8), made from the clap definition of its options so the page and `--help` agree.
//! The hidden `pib-daemon --manpage-dir DIR` writes it; scripts/install and the Debian
//! packages call it.

use std::io;
use std::path::{Path, PathBuf};

use clap_mangen::Man;

use crate::config;

/// Writes `pib-daemon.8` into `dir` (which must exist) and returns its path.
pub fn write(cmd: clap::Command, dir: &Path) -> io::Result<PathBuf> {
    let man = Man::new(cmd).section("8").manual("pi-builder");
    let mut page = Vec::new();
    man.render(&mut page)?;
    page.extend_from_slice(sections().as_bytes());
    let path = dir.join(man.get_filename());
    std::fs::write(&path, page)?;
    Ok(path)
}

/// How the daemon is started and what it reads and writes, beyond the options.
fn sections() -> String {
    let defaults = config::Config::default();
    format!(
        ".SH NOTES\n\
         The system bus starts the daemon on the first call to \\fBorg.pibuilder.PiBuilder1\\fR \
         (through \\fBpib\\-daemon.service\\fR where systemd runs, otherwise through the bus's \
         launch helper), and it exits after {idle} seconds without calls while no job runs. \
         Every call is authorized by polkit; the actions are \\fBorg.pibuilder.*\\fR.\n\
         .SH FILES\n\
         .TP\n\\fI{config}\\fR\nThe configuration (TOML); a missing file means the defaults.\n\
         .TP\n\\fI{state}\\fR\nBuilt images' metadata, per\\-job work directories, notes of \
         interrupted jobs.\n\
         .TP\n\\fI{cache}\\fR\nDownloaded base tarballs; safe to delete.\n\
         .TP\n\\fI/usr/share/dbus\\-1/system\\-services/org.pibuilder.PiBuilder1.service\\fR\n\
         The bus activation file.\n\
         .TP\n\\fI/usr/share/polkit\\-1/actions/org.pibuilder.policy\\fR\n\
         The polkit actions and their defaults.\n\
         .TP\n\\fI/usr/share/dbus\\-1/interfaces/\\fR\nThe D\\-Bus interfaces' introspection XML.\n\
         .SH \"SEE ALSO\"\n\
         .BR pib\\-client (1),\n\
         .BR polkit (8),\n\
         .BR dbus\\-daemon (1)\n",
        idle = defaults.idle_timeout_secs,
        config = config::DEFAULT_PATH.replace('-', "\\-"),
        state = defaults.state_dir.display().to_string().replace('-', "\\-"),
        cache = defaults.cache_dir.display().to_string().replace('-', "\\-"),
    )
}

#[cfg(test)]
mod tests {
    use std::process::Command;

    use clap::CommandFactory;

    #[test]
    fn the_page_renders_with_options_and_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = super::write(crate::Args::command(), dir.path()).unwrap();
        assert_eq!(path, dir.path().join("pib-daemon.8"));

        let groff = Command::new("groff")
            .args(["-man", "-Tutf8", "-ww", "-z"])
            .arg(&path)
            .output()
            .expect("groff is missing: run scripts/dev-up (it installs groff-base)");
        let warnings = String::from_utf8_lossy(&groff.stderr);
        assert!(groff.status.success() && warnings.is_empty(), "{warnings}");

        let man = Command::new("man")
            .args(["--local-file", "--encoding=UTF-8"])
            .arg(&path)
            .env("MANWIDTH", "250")
            .env("MANPAGER", "cat")
            .env("LANG", "C.UTF-8")
            .output()
            .expect("man(1) is missing: run scripts/dev-up (it installs man-db)");
        assert!(man.status.success(), "{man:?}");
        let text = String::from_utf8(man.stdout).unwrap();
        for needle in [
            "pib-daemon(8)",
            "--config",
            "--log-file",
            "/etc/pi-builder/daemon.toml",
            "/var/lib/pi-builder",
            "org.pibuilder.PiBuilder1",
            "pib-client(1)",
        ] {
            assert!(text.contains(needle), "{needle} missing:\n{text}");
        }
        assert!(!text.contains("manpage-dir"), "the generator stays hidden");
    }
}
