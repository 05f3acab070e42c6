//! The Debian packages (scripts/deb, from the debug build) installed on this machine with
//! apt-get, used as an unprivileged user, and purged:
//! - the packaged activation file starts the packaged /usr/libexec/pib-daemon, which answers
//!   `pib-client status` run from /usr/bin;
//! - man finds every page and the shells find the completions where the package put them;
//! - lintian finds no error or warning in the archives;
//! - a purge stops the daemon and leaves none of the packages' files or the daemon's
//!   directories behind.
//!
//! The package and scripts/dev-up put the activation file and the polkit actions at the same
//! paths (polkitd reads no other directory), and dev-up refuses to run while the package is
//! installed. So the packages are purged and dev-up is run again at the end, also when the
//! test fails, and the development files are checked to be back as they were.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use pib_tests::{
    daemon_pid, eventually, last_json, repo_root, system_bus, target_dir, text, TestUser,
};

const CLIENT: &str = "pi-builder";
const DAEMON: &str = "pi-builder-daemon";
const DAEMON_BIN: &str = "/usr/libexec/pib-daemon";
/// Written by dev-up and by the package alike.
const SHARED_PATHS: [&str; 2] = [
    "/usr/share/dbus-1/system-services/org.pibuilder.PiBuilder1.service",
    "/usr/share/polkit-1/actions/org.pibuilder.policy",
];
/// Made by the daemon at run time; a purge removes them.
const RUNTIME_DIRS: [&str; 3] = [
    "/var/lib/pi-builder",
    "/var/cache/pi-builder",
    "/etc/pi-builder",
];

fn run(cmd: &mut Command) -> Output {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(out.status.success(), "{cmd:?}\n{}", text(&out));
    out
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn apt_get(args: &[&str]) -> Output {
    run(Command::new("apt-get")
        .args(args)
        .env("DEBIAN_FRONTEND", "noninteractive")
        .env("NEEDRESTART_SUSPEND", "1"))
}

fn installed(pkg: &str) -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${db:Status-Abbrev}", pkg])
        .output()
        .is_ok_and(|o| o.status.success() && o.stdout.starts_with(b"ii"))
}

/// Processes running the packaged daemon binary (a deleted one included).
fn packaged_daemons() -> Vec<u32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_link(format!("/proc/{pid}/exe")).is_ok_and(|exe| {
                exe.to_string_lossy()
                    .trim_end_matches(" (deleted)")
                    .eq(DAEMON_BIN)
            })
        })
        .collect()
}

/// Whether `pid` still runs: a zombie has ended (where PID 1 does not reap, as in the
/// containers this runs in, the bus-activated daemon's zombie stays).
fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        // The state follows the command name, which is in parentheses and may hold spaces.
        stat.rsplit_once(')')
            .is_some_and(|(_, rest)| !rest.trim_start().starts_with('Z'))
    })
}

/// Stops whichever daemon owns the bus name now (idle: the test runs under the system lock),
/// so the next call activates from the activation file that is installed then.
async fn stop_running_daemon() {
    let conn = system_bus().await;
    if let Some(pid) = daemon_pid(&conn).await {
        run(Command::new("kill").arg(pid.to_string()));
        let gone = eventually(Duration::from_secs(20), || !alive(pid));
        assert!(gone, "pib-daemon {pid} did not stop");
    }
}

/// Purges the packages if they are installed and brings the development setup back; runs on
/// every way out of the test.
struct Restore {
    done: bool,
    out_dir: PathBuf,
}

impl Restore {
    fn now(&mut self) -> Output {
        self.done = true;
        let _ = std::fs::remove_dir_all(&self.out_dir);
        if installed(CLIENT) || installed(DAEMON) {
            apt_get(&["purge", "-y", "-q", CLIENT, DAEMON]);
        }
        Command::new(repo_root().join("scripts/dev-up"))
            .env("PIB_SKIP_BUILD", "1")
            .output()
            .expect("run scripts/dev-up")
    }
}

impl Drop for Restore {
    fn drop(&mut self) {
        if !self.done {
            let out = self.now();
            if !out.status.success() {
                eprintln!("restoring the development setup failed:\n{}", text(&out));
            }
        }
    }
}

/// The packages built from the debug binaries, in a directory apt's sandbox user can read.
fn build_packages(out_dir: &Path) -> (PathBuf, PathBuf) {
    let out = run(Command::new(repo_root().join("scripts/deb"))
        .env("BIN_DIR", target_dir())
        .env("OUT_DIR", out_dir)
        // Fast: the archives exist for a minute.
        .env("DEB_COMPRESS", "gzip"));
    let debs: Vec<PathBuf> = stdout(&out).lines().map(PathBuf::from).collect();
    assert_eq!(debs.len(), 2, "{}", text(&out));
    let find = |pkg: &str| {
        debs.iter()
            .find(|d| {
                let name = d.file_name().unwrap().to_string_lossy();
                name.starts_with(&format!("{pkg}_"))
            })
            .unwrap_or_else(|| panic!("no {pkg} in {debs:?}"))
            .clone()
    };
    (find(CLIENT), find(DAEMON))
}

fn field(deb: &Path, name: &str) -> String {
    stdout(&run(Command::new("dpkg-deb").arg("-f").arg(deb).arg(name)))
        .trim()
        .to_owned()
}

fn contents(deb: &Path) -> BTreeSet<String> {
    stdout(&run(Command::new("dpkg-deb").arg("-c").arg(deb)))
        .lines()
        .filter_map(|l| l.split_whitespace().nth(5))
        .map(|p| p.trim_start_matches('.').to_owned())
        .collect()
}

/// What the archives declare and hold, before anything is installed.
fn check_archives(client: &Path, daemon: &Path) {
    // Debian's policy checker, warnings included; what does not apply is overridden, with the
    // reason, in packaging/deb/*.lintian-overrides.
    run(Command::new("lintian")
        .args(["--no-cfg", "--fail-on", "error,warning"])
        .arg(client)
        .arg(daemon));
    let depends = field(daemon, "Depends");
    for dep in [
        "dbus",
        "polkitd | policykit-1",
        "udisks2",
        "qemu-user-static",
        "mmdebstrap",
        "arch-test",
        "e2fsprogs",
        "dosfstools",
        "libc6",
    ] {
        assert!(
            depends.split(", ").any(|d| d.starts_with(dep)),
            "{dep} in {depends}"
        );
    }
    assert!(!depends.contains("binfmt-support"), "{depends}");
    assert!(field(daemon, "Recommends").contains("docker.io | docker-ce | docker-engine"));
    let version = field(daemon, "Version");
    assert!(
        field(client, "Depends").contains(&format!("{DAEMON} (= {version})")),
        "the client needs the same build of the service"
    );

    let daemon_files = contents(daemon);
    for path in [
        DAEMON_BIN,
        "/lib/systemd/system/pib-daemon.service",
        "/usr/share/dbus-1/system-services/org.pibuilder.PiBuilder1.service",
        "/usr/share/dbus-1/system.d/org.pibuilder.PiBuilder1.conf",
        "/usr/share/polkit-1/actions/org.pibuilder.policy",
        "/usr/share/dbus-1/interfaces/org.pibuilder.PiBuilder1.Manager.xml",
        "/usr/share/dbus-1/interfaces/org.pibuilder.PiBuilder1.Job.xml",
        "/usr/share/man/man8/pib-daemon.8.gz",
        "/usr/share/doc/pi-builder-daemon/copyright",
    ] {
        assert!(daemon_files.contains(path), "{path} not in {DAEMON}");
    }
    let stages = stdout(&run(Command::new("find")
        .arg(repo_root().join("stages"))
        .args(["-type", "f", "!", "-name", ".*", "-printf", "%P\\n"])));
    assert!(stages.lines().count() > 20, "{stages}");
    for rel in stages.lines() {
        let path = format!("/usr/share/pi-builder/stages/{rel}");
        assert!(daemon_files.contains(&path), "{path} not in {DAEMON}");
    }
    let client_files = contents(client);
    for path in [
        "/usr/bin/pib-client",
        "/usr/share/bash-completion/completions/pib-client",
        "/usr/share/zsh/vendor-completions/_pib-client",
        "/usr/share/fish/vendor_completions.d/pib-client.fish",
        "/usr/share/doc/pi-builder/copyright",
    ] {
        assert!(client_files.contains(path), "{path} not in {CLIENT}");
    }
    // Every page the client makes, one per subcommand.
    let pages = tempfile_dir("pages");
    run(Command::new(target_dir().join("pib-client"))
        .arg("manpages")
        .arg(&pages));
    let mut count = 0;
    for page in std::fs::read_dir(&pages).unwrap() {
        let name = page.unwrap().file_name().into_string().unwrap();
        let path = format!("/usr/share/man/man1/{name}.gz");
        assert!(client_files.contains(&path), "{path} not in {CLIENT}");
        count += 1;
    }
    assert!(count > 20, "{count} pages");
    let _ = std::fs::remove_dir_all(&pages);
    assert!(
        daemon_files.is_disjoint(
            &client_files
                .iter()
                .filter(|p| !p.ends_with('/'))
                .cloned()
                .collect()
        ),
        "no file in both packages"
    );
}

fn tempfile_dir(tag: &str) -> PathBuf {
    let dir = PathBuf::from(format!("/tmp/pib-tests-deb-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    dir
}

/// The files (not directories) the installed packages own.
fn owned_files() -> Vec<PathBuf> {
    let out = run(Command::new("dpkg-query").args(["-L", CLIENT, DAEMON]));
    stdout(&out)
        .lines()
        .map(PathBuf::from)
        .filter(|p| p.is_file())
        .collect()
}

/// Uses what was installed: the service through the packaged activation file, as an
/// unprivileged user; man pages and completions from their system directories.
async fn check_installed(user: &TestUser) {
    let activation = std::fs::read_to_string(SHARED_PATHS[0]).unwrap();
    assert!(
        activation.contains(&format!("\nExec={DAEMON_BIN}\n")),
        "{activation}"
    );

    let out = user
        .command("/usr/bin/pib-client")
        .env_remove("PIB_BUNDLED_STAGES")
        .args(["--json", "--no-ask-password", "status"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let status = last_json(&out);
    assert!(status.get("version").is_some(), "{status}");

    let conn = system_bus().await;
    let pid = daemon_pid(&conn).await.expect("the service owns its name");
    let exe = std::fs::read_link(format!("/proc/{pid}/exe")).unwrap();
    assert_eq!(exe, Path::new(DAEMON_BIN), "the packaged daemon answered");

    let man = |args: &[&str]| {
        stdout(&run(Command::new("man")
            .args(args)
            .env("MANPAGER", "cat")
            .env("MANWIDTH", "200")))
    };
    assert_eq!(
        man(&["-w", "pib-client-flash"]).trim(),
        "/usr/share/man/man1/pib-client-flash.1.gz"
    );
    assert!(man(&["8", "pib-daemon"]).contains("/etc/pi-builder/daemon.toml"));
    assert!(man(&["pib-client-binfmt-register"]).contains("--arch"));

    // bash: found by bash-completion's loader, as an interactive shell would.
    let driver = repo_root().join("client/tests/complete.bash");
    let bash = stdout(&run(Command::new("bash")
        .arg("--norc")
        .arg(&driver)
        .args(["-", "pib-client fl"])));
    assert_eq!(bash.trim(), "flash");
    // fish: from its vendor directory, with a fresh home and no sourcing.
    let home = tempfile_dir("fish-home");
    let fish = stdout(&run(Command::new("fish")
        .args(["-c", "complete -C 'pib-client binfmt re'"])
        .env_clear()
        .env("HOME", &home)
        .env("PATH", "/usr/bin:/bin")));
    assert_eq!(fish.split('\t').next(), Some("register"), "{fish}");
    let _ = std::fs::remove_dir_all(&home);
    // zsh: the function is in a directory on the default fpath.
    let fpath = stdout(&run(Command::new("zsh").args([
        "-f",
        "-c",
        "print -l $fpath",
    ])));
    assert!(
        fpath
            .lines()
            .any(|d| d == "/usr/share/zsh/vendor-completions"),
        "{fpath}"
    );
}

#[tokio::test]
async fn packages_install_serve_and_purge_cleanly() {
    let user = TestUser::ensure("pibtest-deb");
    let before: Vec<Vec<u8>> = SHARED_PATHS
        .iter()
        .map(|p| std::fs::read(p).unwrap_or_else(|e| panic!("{p}: {e}: run scripts/dev-up")))
        .collect();
    assert!(
        !installed(DAEMON),
        "{DAEMON} is installed already; purge it and rerun dev-up"
    );

    let out_dir = tempfile_dir("out");
    let mut restore = Restore {
        done: false,
        out_dir: out_dir.clone(),
    };
    let (client, daemon) = build_packages(&out_dir);
    check_archives(&client, &daemon);

    stop_running_daemon().await;
    apt_get(&[
        "install",
        "-y",
        "-q",
        client.to_str().unwrap(),
        daemon.to_str().unwrap(),
    ]);
    assert!(installed(CLIENT) && installed(DAEMON));
    let files = owned_files();
    assert!(files.len() > 50, "{files:?}");

    check_installed(&user).await;
    let running = packaged_daemons();
    assert_eq!(running.len(), 1, "the packaged daemon runs: {running:?}");

    // An upgrade (here: the same version again) stops the running daemon, so the next call
    // starts the binary just unpacked rather than the old one serving on.
    apt_get(&[
        "install",
        "-y",
        "-q",
        "--reinstall",
        daemon.to_str().unwrap(),
    ]);
    assert!(
        !alive(running[0]),
        "prerm upgrade stopped pib-daemon {}",
        running[0]
    );
    let out = user
        .command("/usr/bin/pib-client")
        .args(["--json", "status"])
        .output()
        .unwrap();
    assert!(out.status.success(), "after the upgrade: {}", text(&out));
    assert_eq!(packaged_daemons().len(), 1, "a new daemon answered");

    apt_get(&["purge", "-y", "-q", CLIENT, DAEMON]);
    assert!(!installed(CLIENT) && !installed(DAEMON));
    assert_eq!(
        packaged_daemons(),
        Vec::<u32>::new(),
        "prerm stopped the daemon"
    );
    let left: Vec<&PathBuf> = files.iter().filter(|p| p.exists()).collect();
    assert!(left.is_empty(), "left behind: {left:?}");
    for dir in RUNTIME_DIRS {
        assert!(!Path::new(dir).exists(), "{dir} left behind");
    }

    // The development setup is back, byte for byte, and serves again.
    let out = restore.now();
    assert!(
        out.status.success(),
        "dev-up after the purge:\n{}",
        text(&out)
    );
    for (path, old) in SHARED_PATHS.iter().zip(&before) {
        assert_eq!(&std::fs::read(path).unwrap(), old, "{path} restored");
    }
    let out = user.client(&["--json", "status"]);
    assert!(out.status.success(), "{}", text(&out));
    let conn = system_bus().await;
    let pid = daemon_pid(&conn)
        .await
        .expect("the development service answers");
    let exe = std::fs::read_link(format!("/proc/{pid}/exe")).unwrap();
    assert_eq!(exe, target_dir().join("pib-daemon"));
}
