//! The client against a stand-in daemon on a private bus: following jobs to their end, Ctrl-C,
//! errors, exit codes, and which calls carry the interactive-authorization flag.

mod support;

use std::io::{BufRead, BufReader};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use serde_json::Value;
use support::{serve, PrivateBus, Script, Stand};

async fn run(mut cmd: Command) -> Output {
    tokio::task::spawn_blocking(move || cmd.output().unwrap())
        .await
        .unwrap()
}

fn json_lines(out: &Output) -> Vec<Value> {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l:?}: {e}")))
        .collect()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn calls(stand: &Stand) -> Vec<String> {
    stand.calls.lock().unwrap().clone()
}

async fn setup(script: Script) -> (PrivateBus, Stand) {
    let bus = PrivateBus::start();
    let stand = serve(&bus.address, script).await;
    (bus, stand)
}

#[tokio::test(flavor = "multi_thread")]
async fn json_register_follows_the_job_to_success() {
    let (bus, stand) = setup(Script::Succeed).await;
    let out = run(bus.client(&["--json", "binfmt", "register", "--arch", "aarch64"])).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(out.stderr.is_empty(), "{}", text(&out.stderr));
    let lines = json_lines(&out);
    let logs: Vec<&str> = lines.iter().filter_map(|l| l["log"].as_str()).collect();
    assert_eq!(
        logs,
        [
            "starting binfmt-register for aarch64",
            "hello from the job \x1b[31m",
            "last words"
        ]
    );
    assert!(
        lines.iter().any(|l| l["progress"]["stage"] == "aarch64"
            && l["progress"]["progress"] == 0.5
            && l["progress"]["state"] == "running"),
        "{lines:?}"
    );
    let result = lines.last().unwrap();
    assert_eq!(result["job"], "/org/pibuilder/PiBuilder1/jobs/1");
    assert_eq!(result["state"], "succeeded");
    assert_eq!(result["message"], "Registered qemu for aarch64");
    assert_eq!(
        calls(&stand),
        ["RegisterBinfmt silent arch=aarch64", "AttachLog silent"]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn plain_register_shows_progress_and_a_defused_log() {
    let (bus, stand) = setup(Script::Succeed).await;
    let out = run(bus.client(&["binfmt", "register"])).await;
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert_eq!(text(&out.stdout), "Registered qemu for both\n");
    assert!(stderr.contains("[job 1] both: registering"), "{stderr}");
    assert!(stderr.contains("(50%)"), "{stderr}");
    assert!(stderr.contains("hello from the job ^[[31m\n"), "{stderr}");
    assert!(!stderr.contains('\x1b'), "{stderr}");
    assert!(stderr.contains("last words"), "{stderr}");
    assert_eq!(
        calls(&stand),
        [
            "RegisterBinfmt interactive arch=both",
            "AttachLog interactive"
        ]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn quiet_prints_the_result_only_and_skips_the_log() {
    let (bus, stand) = setup(Script::Succeed).await;
    let out = run(bus.client(&["binfmt", "unregister", "-q", "--arch", "arm"])).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "Registered qemu for arm\n");
    assert!(out.stderr.is_empty(), "{}", text(&out.stderr));
    assert_eq!(calls(&stand), ["UnregisterBinfmt interactive arch=arm"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_job_that_ended_before_subscribing_is_seen_ended() {
    let (bus, _stand) = setup(Script::AlreadyDone).await;
    let out = run(bus.client(&["binfmt", "register"])).await;
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert_eq!(text(&out.stdout), "done already (both)\n");
    assert!(stderr.contains("finished before anyone looked"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failed_job_exits_1_with_its_error_in_plain_words() {
    let (bus, _stand) = setup(Script::Fail).await;
    let out = run(bus.client(&["binfmt", "register", "--arch", "aarch64"])).await;
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(out.stdout.is_empty());
    assert!(
        stderr.contains(
            "pib-client: pi-builder will not override what it found: another package handles \
             aarch64 without the F flag."
        ),
        "{stderr}"
    );

    let out = run(bus.client(&["--json", "binfmt", "register"])).await;
    assert_eq!(out.status.code(), Some(1));
    let result = json_lines(&out).pop().unwrap();
    assert_eq!(result["error"], "org.pibuilder.PiBuilder1.Error.Conflict");
    assert_eq!(result["state"], "failed");
    assert_eq!(result["job"], "/org/pibuilder/PiBuilder1/jobs/2");
}

/// Starts the client, waits for the job's first progress line, then sends SIGINT `times` times.
async fn interrupt(bus: &PrivateBus, times: usize) -> Output {
    let mut cmd = bus.client(&["--json", "binfmt", "register"]);
    cmd.stdout(Stdio::piped());
    let child = cmd.spawn().unwrap();
    tokio::task::spawn_blocking(move || {
        let mut child = child;
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut seen = Vec::new();
        loop {
            let mut line = String::new();
            assert!(stdout.read_line(&mut line).unwrap() > 0, "no progress");
            let v: Value = serde_json::from_str(&line).unwrap();
            seen.push(line);
            if v["progress"]["stage"] == "both" {
                break;
            }
        }
        for _ in 0..times {
            rustix::process::kill_process(
                rustix::process::Pid::from_child(&child),
                rustix::process::Signal::INT,
            )
            .unwrap();
            std::thread::sleep(Duration::from_millis(200));
        }
        let mut rest = String::new();
        std::io::Read::read_to_string(&mut stdout, &mut rest).unwrap();
        let mut out = child.wait_with_output().unwrap();
        out.stdout = (seen.concat() + &rest).into_bytes();
        out
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn ctrl_c_cancels_the_job_and_waits_for_its_end() {
    let (bus, stand) = setup(Script::UntilCancelled).await;
    let out = interrupt(&bus, 1).await;
    assert_eq!(out.status.code(), Some(130), "{}", text(&out.stderr));
    let lines = json_lines(&out);
    assert!(lines.iter().any(|l| l["note"].is_string()), "{lines:?}");
    let result = lines.last().unwrap();
    assert_eq!(result["error"], "org.pibuilder.PiBuilder1.Error.Cancelled");
    assert_eq!(result["state"], "cancelled");
    assert_eq!(
        calls(&stand),
        [
            "RegisterBinfmt silent arch=both",
            "AttachLog silent",
            "Cancel silent"
        ]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_second_ctrl_c_stops_waiting() {
    let (bus, stand) = setup(Script::Stubborn).await;
    let out = interrupt(&bus, 2).await;
    assert_eq!(out.status.code(), Some(130), "{}", text(&out.stderr));
    let result = json_lines(&out).pop().unwrap();
    assert_eq!(result["error"], "org.pibuilder.Client.Error.Interrupted");
    assert_eq!(
        calls(&stand)
            .iter()
            .filter(|c| c.starts_with("Cancel"))
            .count(),
        1,
        "Cancel is called once"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_daemon_leaving_the_bus_ends_the_wait() {
    let (bus, _stand) = setup(Script::Vanish).await;
    let out = run(bus.client(&["binfmt", "register"])).await;
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("pi-builder's daemon stopped while job 1 was running"),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn refused_authorization_exits_3() {
    let (bus, stand) = setup(Script::Deny).await;
    let out = run(bus.client(&["--no-ask-password", "binfmt", "unregister"])).await;
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    assert!(
        stderr.contains(
            "You are not allowed to remove binfmt_misc entries. Ask an administrator to grant \
             the polkit action org.pibuilder.binfmt"
        ),
        "{stderr}"
    );
    assert!(stderr.contains("--no-ask-password"), "{stderr}");
    assert!(stderr.contains("denied by the stand-in"), "{stderr}");
    assert_eq!(calls(&stand), ["UnregisterBinfmt silent arch=both"]);

    let out = run(bus.client(&["--json", "binfmt", "register"])).await;
    assert_eq!(out.status.code(), Some(3));
    let err = json_lines(&out).pop().unwrap();
    assert_eq!(err["error"], "org.pibuilder.PiBuilder1.Error.NotAuthorized");
}

#[tokio::test(flavor = "multi_thread")]
async fn status_and_binfmt_status() {
    let (bus, stand) = setup(Script::Succeed).await;
    let out = run(bus.client(&["status"])).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout),
        "pi-builder daemon: 0.0.0-stand-in\n\
         Docker: unreachable: connection refused\n\
         binfmt_misc: mounted\n  \
         aarch64: registered by pi-builder (pib-qemu-aarch64, /usr/bin/qemu-aarch64-static, flags F)\n\
         Running jobs: 0\n"
    );

    let out = run(bus.client(&["status", "--json"])).await;
    let v = json_lines(&out).pop().unwrap();
    assert_eq!(v["docker_reachable"], false);
    assert_eq!(
        v["binfmt"][0]["interpreter"],
        "/usr/bin/qemu-aarch64-static"
    );
    assert_eq!(v["running_jobs"], 0);

    let out = run(bus.client(&["binfmt", "status", "--arch", "arm"])).await;
    assert_eq!(text(&out.stdout), "binfmt_misc: mounted\n");
    let out = run(bus.client(&["--json", "binfmt", "status"])).await;
    let v = json_lines(&out).pop().unwrap();
    assert_eq!(v["binfmt"][0]["arch"], "aarch64");
    assert_eq!(v["binfmt_mounted"], true);
    // Reads never prompt, but an administrator may require authentication for them.
    assert_eq!(calls(&stand)[0], "GetStatus interactive");
    assert_eq!(calls(&stand)[1], "GetStatus silent");
}

#[tokio::test(flavor = "multi_thread")]
async fn jobs_lists_and_cancel_asks() {
    let (bus, stand) = setup(Script::Succeed).await;
    let out = run(bus.client(&["jobs"])).await;
    assert_eq!(text(&out.stdout), "No jobs.\n");
    let out = run(bus.client(&["-q", "binfmt", "register"])).await;
    assert_eq!(out.status.code(), Some(0));

    let out = run(bus.client(&["jobs"])).await;
    assert_eq!(
        text(&out.stdout),
        "JOB  OPERATION        STATE      UID   MESSAGE\n\
         1    binfmt-register  succeeded  4242  Registered qemu for both\n"
    );
    let out = run(bus.client(&["jobs", "--json"])).await;
    let v = json_lines(&out).pop().unwrap();
    assert_eq!(v[0]["job"], 1);
    assert_eq!(v[0]["started_by_uid"], 4242);

    let out = run(bus.client(&["cancel", "/org/pibuilder/PiBuilder1/jobs/1"])).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "Asked job 1 to stop.\n");
    assert_eq!(calls(&stand).last().unwrap(), "Cancel interactive");

    let out = run(bus.client(&["cancel", "7"])).await;
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("There is no such job"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread")]
async fn without_the_daemon_the_user_is_told_to_install_it() {
    let bus = PrivateBus::start();
    let out = run(bus.client(&["status"])).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty());
    assert!(text(&out.stderr).starts_with(
        "pib-client: pi-builder's daemon is not installed or its D-Bus activation file is \
         missing (run `make install` or `make dev-up`).\n"
    ));
    let out = run(bus.client(&["--json", "jobs"])).await;
    assert_eq!(out.status.code(), Some(1));
    let err = json_lines(&out).pop().unwrap();
    assert_eq!(err["error"], "org.freedesktop.DBus.Error.ServiceUnknown");
}
