//! Test harness for pi-builder's integration tests.
//!
//! The tests talk to the real system bus, the real polkitd and the daemon activated from the
//! development activation file that `make dev-up` installs. Nothing here mocks those: when the
//! environment is missing, tests fail with a message that says to run `make dev-up`.
//!
//! Unprivileged callers are real Unix users created on demand; their calls run as separate
//! processes (`setpriv`), because the bus identifies callers by the credentials of their socket.

pub mod cards;
pub mod daemon;
pub mod elf;
pub mod http;
pub mod netlab;
pub mod pty;

pub use cards::LoopCard;
pub use daemon::{restart_daemon, DaemonConfig};

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use pib_dbus_interfaces::proxy::{JobProxy, ManagerProxy};
use zbus::Connection;

/// A connection to the system bus as the test process (root).
pub async fn system_bus() -> Connection {
    Connection::system()
        .await
        .expect("no system bus: run `make dev-up` (it starts dbus-daemon, polkitd, dockerd)")
}

pub async fn manager(conn: &Connection) -> ManagerProxy<'static> {
    ManagerProxy::new(conn).await.expect("manager proxy")
}

pub async fn job(conn: &Connection, path: &str) -> JobProxy<'static> {
    JobProxy::builder(conn)
        .path(path.to_owned())
        .build()
        .await
        .expect("job proxy")
}

/// The final state of a job.
#[derive(Debug, Clone)]
pub struct JobEnd {
    pub state: String,
    pub message: String,
    pub error_name: String,
}

/// Polls a job until it leaves "running" (polling, rather than waiting for signals, also
/// proves that a late reader sees the final state in the properties).
pub async fn wait_job(conn: &Connection, path: &str) -> JobEnd {
    let job = job(conn, path).await;
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let state = job.state().await.expect("job state");
        if state != "running" {
            return JobEnd {
                state,
                message: job.message().await.expect("message"),
                error_name: job.error_name().await.expect("error name"),
            };
        }
        assert!(
            Instant::now() < deadline,
            "job {path} still running after 120 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The repository's root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("repo root")
        .to_owned()
}

/// The built binaries (`make test` builds them before running the tests).
pub fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("target"))
        .join("debug")
}

/// A copy of `pib-client` that every user can run (the checkout may live under a home
/// directory other users cannot enter).
pub fn client_bin() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let src = target_dir().join("pib-client");
        assert!(
            src.exists(),
            "{} missing: run `make test` (it builds first)",
            src.display()
        );
        let dir = PathBuf::from(format!("/tmp/pib-tests-bin-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("bin dir");
        set_mode(&dir, 0o755);
        let dst = dir.join("pib-client");
        std::fs::copy(&src, &dst).expect("copy client");
        set_mode(&dst, 0o755);
        dst
    })
}

/// A copy of the bundled stages every user can read, for clients run by the tests (what
/// `make install` puts under share/pi-builder/stages).
pub fn bundled_stages() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dst = client_bin().with_file_name("stages");
        let _ = std::fs::remove_dir_all(&dst);
        let status = Command::new("cp")
            .arg("-a")
            .arg(repo_root().join("stages"))
            .arg(&dst)
            .status()
            .expect("cp stages");
        assert!(status.success(), "copying the bundled stages failed");
        Command::new("chmod")
            .args(["-R", "a+rX"])
            .arg(&dst)
            .status()
            .expect("chmod stages");
        dst
    })
}

fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod");
}

/// A Unix user for tests, created if missing.
#[derive(Debug, Clone)]
pub struct TestUser {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
}

impl TestUser {
    pub fn ensure(name: &str) -> TestUser {
        // Check and create under one lock shared by every test process: a user
        // half-written by a parallel useradd has a passwd line but no group yet,
        // and the bus refuses a connection whose groups it cannot look up.
        let status = Command::new("flock")
            .args([USERS_LOCK, "sh", "-c"])
            .arg(r#"id -u "$1" >/dev/null 2>&1 || useradd --no-create-home --shell /usr/sbin/nologin "$1""#)
            .args(["ensure-user", name])
            .status()
            .expect("flock useradd");
        assert!(status.success(), "creating the test user {name} failed");
        TestUser {
            name: name.to_owned(),
            uid: user_id(name, "-u").expect("uid"),
            gid: user_id(name, "-g").expect("gid"),
        }
    }

    /// A command that runs `program` as this user, with a clean environment.
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut cmd = Command::new("setpriv");
        cmd.arg(format!("--reuid={}", self.uid))
            .arg(format!("--regid={}", self.gid))
            .arg("--clear-groups")
            .arg("--")
            .arg(program)
            .env_clear()
            .env("PATH", "/usr/local/bin:/usr/bin:/bin")
            .env("LANG", "C.UTF-8")
            .env("PIB_BUNDLED_STAGES", bundled_stages())
            .stdin(Stdio::null());
        cmd
    }

    /// Runs pib-client as this user.
    pub fn client(&self, args: &[&str]) -> Output {
        self.command(client_bin())
            .args(args)
            .output()
            .expect("run pib-client")
    }

    /// Runs busctl on the system bus as this user.
    pub fn busctl(&self, args: &[&str]) -> Output {
        self.command("busctl")
            .arg("--system")
            .args(args)
            .output()
            .expect("run busctl")
    }
}

/// Serializes test-user creation across the test binaries running at once.
const USERS_LOCK: &str = "/run/lock/pib-tests-users.lock";

fn user_id(name: &str, flag: &str) -> Option<u32> {
    let out = Command::new("id").arg(flag).arg(name).output().ok()?;
    String::from_utf8(out.stdout).ok()?.trim().parse().ok()
}

/// Runs pib-client as root (the test process).
pub fn client_as_root(args: &[&str]) -> Output {
    Command::new(client_bin())
        .args(args)
        .env("PIB_BUNDLED_STAGES", bundled_stages())
        .stdin(Stdio::null())
        .output()
        .expect("run pib-client")
}

/// A polkit .rules file that exists while this value lives.
pub struct PolkitRule {
    path: PathBuf,
}

impl PolkitRule {
    /// Grants `action` to `user` (polkitd reloads rules when the directory changes).
    pub fn grant(tag: &str, user: &str, action: &str) -> PolkitRule {
        let body = format!(
            "// pi-builder integration test ({tag})\n\
             polkit.addRule(function(action, subject) {{\n\
             \x20   if (action.id == \"{action}\" && subject.user == \"{user}\") {{\n\
             \x20       return polkit.Result.YES;\n\
             \x20   }}\n\
             }});\n"
        );
        Self::write(tag, &body)
    }

    /// Refuses every pi-builder action to `user`.
    pub fn deny_all(tag: &str, user: &str) -> PolkitRule {
        let body = format!(
            "// pi-builder integration test ({tag})\n\
             polkit.addRule(function(action, subject) {{\n\
             \x20   if (action.id.indexOf(\"org.pibuilder.\") == 0 && subject.user == \"{user}\") {{\n\
             \x20       return polkit.Result.NO;\n\
             \x20   }}\n\
             }});\n"
        );
        Self::write(tag, &body)
    }

    /// Grants `action` to `user` only after a pause of `seconds`, so a test can act while
    /// the daemon waits for the decision.
    pub fn slow_grant(tag: &str, user: &str, action: &str, seconds: u32) -> PolkitRule {
        let body = format!(
            "// pi-builder integration test ({tag})\n\
             polkit.addRule(function(action, subject) {{\n\
             \x20   if (action.id == \"{action}\" && subject.user == \"{user}\") {{\n\
             \x20       polkit.spawn([\"sleep\", \"{seconds}\"]);\n\
             \x20       return polkit.Result.YES;\n\
             \x20   }}\n\
             }});\n"
        );
        Self::write(tag, &body)
    }

    /// A rule of the caller's own text, named after `tag`.
    pub fn from_text(tag: &str, body: &str) -> PolkitRule {
        Self::write(tag, body)
    }

    fn write(tag: &str, body: &str) -> PolkitRule {
        let dir = Path::new("/etc/polkit-1/rules.d");
        std::fs::create_dir_all(dir).expect("rules dir");
        let path = dir.join(format!("10-pibtest-{tag}.rules"));
        let tmp = dir.join(format!(".10-pibtest-{tag}.tmp"));
        std::fs::write(&tmp, body).expect("write rule");
        std::fs::rename(&tmp, &path).expect("install rule");
        PolkitRule { path }
    }
}

impl Drop for PolkitRule {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Retries `check` until it returns true or `timeout` passes (polkitd picks up rule changes
/// asynchronously).
pub fn eventually(timeout: Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if check() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Output as text, for assertion messages.
pub fn text(out: &Output) -> String {
    format!(
        "status {:?}\nstdout: {}\nstderr: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The JSON object that `pib-client --json` printed last on stdout.
pub fn last_json(out: &Output) -> serde_json::Value {
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout
        .lines()
        .rev()
        .find(|l| l.trim_start().starts_with('{'))
        .unwrap_or_else(|| panic!("no JSON in output:\n{}", text(out)));
    serde_json::from_str(line).unwrap_or_else(|e| panic!("bad JSON {line:?}: {e}"))
}

/// The jobs on the bus that `uid` started (as root sees them).
pub async fn jobs_started_by(uid: u32) -> Vec<String> {
    let conn = system_bus().await;
    let mut out = Vec::new();
    for path in manager(&conn).await.list_jobs().await.expect("list jobs") {
        let job = job(&conn, path.as_str()).await;
        if job.started_by_uid().await.expect("uid") == uid {
            out.push(path.to_string());
        }
    }
    out
}

/// The process id of the current owner of the service's bus name, if any.
pub async fn daemon_pid(conn: &Connection) -> Option<u32> {
    let dbus = zbus::fdo::DBusProxy::new(conn).await.ok()?;
    let name = zbus::names::BusName::try_from(pib_dbus_interfaces::names::BUS_NAME).ok()?;
    dbus.get_connection_unix_process_id(name).await.ok()
}

/// A copy of the test caller (see `bin/pib-test-call.rs`) that every user can run.
pub fn test_call_bin() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        // Built by cargo alongside this package's integration tests.
        let src = target_dir().join("pib-test-call");
        let dst = client_bin().with_file_name("pib-test-call");
        std::fs::copy(&src, &dst).unwrap_or_else(|e| panic!("copy {}: {e}", src.display()));
        set_mode(&dst, 0o755);
        dst
    })
}

impl TestUser {
    /// Makes one raw call as this user; returns the JSON outcome (`{"ok": …}` or
    /// `{"error": NAME, "message": …}`).
    pub fn call(&self, args: &[&str]) -> serde_json::Value {
        let out = self
            .command(test_call_bin())
            .args(args)
            .output()
            .expect("run pib-test-call");
        last_json(&out)
    }
}

/// The error name in a `pib-test-call` outcome, or "" on success.
pub fn error_of(outcome: &serde_json::Value) -> &str {
    outcome["error"].as_str().unwrap_or("")
}

pub const NOT_AUTHORIZED: &str = "org.pibuilder.PiBuilder1.Error.NotAuthorized";
pub const INVALID_ARGS: &str = "org.pibuilder.PiBuilder1.Error.InvalidArgs";

/// The number of the build step whose instruction starts with `instruction`, from the log
/// lines of `pib-client --json build`.
pub fn step_of(out: &Output, instruction: &str) -> u64 {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| v["log"].as_str().map(str::to_owned))
        .find_map(|l| {
            let (counts, instr) = l.strip_prefix("Step ")?.split_once(" : ")?;
            instr
                .starts_with(instruction)
                .then(|| counts.split('/').next()?.parse().ok())?
        })
        .unwrap_or_else(|| panic!("no step {instruction:?} in {}", text(out)))
}

/// Writes a user stage `name` into `dir`: its Dockerfile.part and the files it copies.
pub fn write_stage(dir: &Path, name: &str, part: &str, files: &[(&str, &str)]) {
    let d = dir.join(name);
    std::fs::create_dir_all(&d).unwrap();
    std::fs::write(d.join("Dockerfile.part"), part).unwrap();
    for (f, content) in files {
        let p = d.join(f);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, content).unwrap();
    }
}

/// A fresh directory for a test's user stages, readable by the test users too.
pub fn stages_dir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("pib-{tag}-stages-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    Command::new("chmod")
        .args(["-R", "a+rX"])
        .arg(&d)
        .status()
        .unwrap();
    d
}

/// A value no earlier run used: Docker's cache is machine-wide, so a test that must not hit
/// it puts one of these into its stage.
pub fn nonce() -> String {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("{}-{t}", std::process::id())
}

/// The arguments of `pib-client --json build` of a Debian arm64 image for a Pi 4 named
/// `name`, from `stages` found in `stages_dir` (then the bundled ones), with further flags.
pub fn debian_build_args(
    name: &str,
    stages: &str,
    stages_dir: &Path,
    extra: &[&str],
) -> Vec<String> {
    let dir = stages_dir.to_str().expect("a UTF-8 temp path");
    let mut args = vec![
        "--json",
        "build",
        "--distro",
        "debian",
        "--arch",
        "aarch64",
        "--board",
        "rpi4",
        "--stages",
        stages,
        "--stages-dir",
        dir,
        "--name",
        name,
    ];
    args.extend_from_slice(extra);
    args.into_iter().map(str::to_owned).collect()
}

/// That build, run as root.
pub fn debian_build(name: &str, stages: &str, stages_dir: &Path, extra: &[&str]) -> Output {
    let args = debian_build_args(name, stages, stages_dir, extra);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    client_as_root(&args)
}
