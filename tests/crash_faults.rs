//! Crash-only (DESIGN §3 rule 7, SECURITY.md): the daemon killed with SIGKILL during a build
//! and during an image assembly. The next start reports each interrupted job to its owner and
//! leaves nothing behind: no containers, no work directories, no loop devices.
//! (A kill during a card write is in cards.rs.)

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use pib_tests::cards::daemon_pid;
use pib_tests::{client_as_root, eventually, nonce, stages_dir, text, write_stage};

const STATE_WORK: &str = "/var/lib/pi-builder/work";

fn lines(cmd: &mut Command) -> Vec<String> {
    let out = cmd.output().unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_owned)
        .filter(|l| !l.is_empty())
        .collect()
}

fn containers() -> Vec<String> {
    lines(Command::new("docker").args(["ps", "-aq"]))
}

fn work_dirs() -> Vec<String> {
    std::fs::read_dir(STATE_WORK)
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// Loop devices over files in the daemon's state directory.
fn state_loop_devices() -> Vec<String> {
    lines(Command::new("losetup").args(["-l", "-n", "-O", "NAME,BACK-FILE"]))
        .into_iter()
        .filter(|l| l.contains("/var/lib/pi-builder"))
        .collect()
}

fn jobs_json() -> Vec<serde_json::Value> {
    pib_tests::cards::last_json_array(&client_as_root(&["--json", "jobs"]))
}

/// Waits until a job of `operation` runs with `ready` true of it, then kills the daemon.
fn kill_daemon_during(operation: &str, ready: impl Fn(&serde_json::Value) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(900);
    loop {
        if jobs_json()
            .iter()
            .any(|j| j["operation"] == operation && j["state"] == "running" && ready(j))
        {
            break;
        }
        assert!(Instant::now() < deadline, "the {operation} never got going");
        std::thread::sleep(Duration::from_millis(300));
    }
    let pid = daemon_pid().expect("daemon pid");
    assert!(Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .status()
        .unwrap()
        .success());
    assert!(
        eventually(Duration::from_secs(10), || !Path::new(&format!(
            "/proc/{pid}"
        ))
        .exists()),
        "the daemon survived SIGKILL"
    );
}

/// The new daemon's report of the interrupted `operation`.
fn reported(operation: &str) -> serde_json::Value {
    jobs_json()
        .into_iter()
        .find(|j| {
            j["operation"] == operation
                && j["state"] == "failed"
                && j["message"]
                    .as_str()
                    .unwrap_or_default()
                    .starts_with("interrupted")
        })
        .unwrap_or_else(|| panic!("no interrupted {operation} reported: {:?}", jobs_json()))
}

fn spawn_client(args: &[String]) -> std::process::Child {
    Command::new(pib_tests::client_bin())
        .env("PIB_BUNDLED_STAGES", pib_tests::bundled_stages())
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

#[test]
fn a_killed_daemon_reports_interrupted_jobs_and_leaves_nothing() {
    let before = containers();
    let dir = stages_dir("crash");

    // A build killed in a stage that runs for a minute.
    write_stage(
        &dir,
        "slow",
        &format!("RUN echo {} && sleep 60\n", nonce()),
        &[],
    );
    let child = spawn_client(&pib_tests::debian_build_args(
        "pibtest-crash-slow",
        "__init__ slow",
        &dir,
        &[],
    ));
    kill_daemon_during("build", |j| j["stage"] == "slow");
    let out = child.wait_with_output().unwrap();
    assert_ne!(out.status.code(), Some(0), "{}", text(&out));
    let report = reported("build");
    assert_eq!(
        report["error_name"], "org.pibuilder.PiBuilder1.Error.Failed",
        "{report}"
    );
    assert!(
        eventually(Duration::from_secs(60), || containers()
            .iter()
            .all(|c| before.contains(c))),
        "containers of the killed build remain: {:?}",
        containers()
    );
    assert!(
        eventually(Duration::from_secs(10), || work_dirs().is_empty()),
        "work directories remain: {:?}",
        work_dirs()
    );

    // An image assembly killed while it writes the image.
    write_stage(
        &dir,
        "small",
        &format!("RUN echo {} > /etc/pib-nonce\n", nonce()),
        &[],
    );
    let out = pib_tests::debian_build("pibtest-crash-img", "__init__ small", &dir, &[]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let output = std::env::temp_dir().join(format!("pib-crash-{}.img", std::process::id()));
    let child = spawn_client(&[
        "--json".into(),
        "image".into(),
        "pibtest-crash-img".into(),
        "-o".into(),
        output.to_string_lossy().into_owned(),
    ]);
    kill_daemon_during("disk-image", |j| {
        j["progress"].as_f64().is_some_and(|p| p > 0.0)
    });
    let out = child.wait_with_output().unwrap();
    assert_ne!(out.status.code(), Some(0), "{}", text(&out));
    let report = reported("disk-image");
    assert_eq!(
        report["error_name"], "org.pibuilder.PiBuilder1.Error.Failed",
        "{report}"
    );
    assert!(
        eventually(Duration::from_secs(60), || containers()
            .iter()
            .all(|c| before.contains(c))),
        "export containers of the killed assembly remain: {:?}",
        containers()
    );
    assert!(
        work_dirs().is_empty(),
        "work directories remain: {:?}",
        work_dirs()
    );
    assert!(
        state_loop_devices().is_empty(),
        "{:?}",
        state_loop_devices()
    );
    assert!(
        !output.exists(),
        "the client left the partial image {}",
        output.display()
    );
    let _ = client_as_root(&["rm", "pibtest-crash-img"]);
    let _ = std::fs::remove_dir_all(&dir);
}
