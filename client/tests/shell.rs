//! `shell` against the stand-in daemon: which descriptors and options are passed, the exit
//! status, and the terminal (a real pseudo-terminal) in raw mode during the job and restored
//! after it, also when the client is killed with a signal.

mod support;

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use pib_tests::pty::{pty, screen};
use rustix::process::{kill_process, Pid, Signal};
use rustix::termios::{tcgetattr, LocalModes};
use serde_json::Value;
use support::on_terminal;
use support::{serve, PrivateBus, Script, Stand, IMAGE, SHELL_EXIT};
use zbus::Variant;

async fn run(mut cmd: Command) -> Output {
    tokio::task::spawn_blocking(move || cmd.output().unwrap())
        .await
        .unwrap()
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

/// Waits until the stand-in has recorded `call`.
async fn wait_for_call(stand: &Stand, call: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !calls(stand).iter().any(|c| c == call) {
        assert!(
            Instant::now() < deadline,
            "no {call:?} in {:?}",
            calls(stand)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn wait(child: Child) -> Output {
    tokio::task::spawn_blocking(move || child.wait_with_output().unwrap())
        .await
        .unwrap()
}

fn signal(child: &Child, sig: Signal) {
    kill_process(Pid::from_child(child), sig).unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_command_gets_the_clients_streams_and_its_status_is_the_clients() {
    let (bus, stand) = setup(Script::Succeed).await;
    let out = tokio::task::spawn_blocking({
        let mut cmd = bus.client(&["shell", IMAGE, "--", "cat", "-n"]);
        move || {
            cmd.stdin(Stdio::piped());
            let mut child = cmd.spawn().unwrap();
            child.stdin.take().unwrap().write_all(b"ping").unwrap();
            child.wait_with_output().unwrap()
        }
    })
    .await
    .unwrap();
    assert_eq!(out.status.code(), Some(SHELL_EXIT), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "container read \"ping\"\n");
    assert_eq!(
        text(&out.stderr),
        "container stderr\n",
        "no progress and no log when the job succeeds"
    );
    assert_eq!(
        calls(&stand)[0],
        format!("Shell interactive {IMAGE} [\"cat\", \"-n\"] stdin=pipe stdout=pipe stderr=pipe")
    );
    let o = stand.options_of("Shell");
    assert_eq!(o.len(), 1, "{o:?}");
    assert_eq!(*o["tty"], Variant::from(false));
}

#[tokio::test(flavor = "multi_thread")]
async fn dev_null_and_sockets_are_relayed_through_pipes() {
    let (bus, stand) = setup(Script::Succeed).await;
    let (ours, mut theirs) = std::os::unix::net::UnixStream::pair().unwrap();
    let mut cmd = bus.client(&["--json", "shell", IMAGE, "--", "true"]);
    cmd.stdout(Stdio::from(OwnedFd::from(ours)));
    let out = run(cmd).await;
    assert_eq!(out.status.code(), Some(SHELL_EXIT), "{}", text(&out.stderr));
    let mut stdout = String::new();
    theirs.read_to_string(&mut stdout).unwrap();
    let mut lines = stdout.lines();
    assert_eq!(lines.next(), Some("container read \"\""));
    let result: Value = serde_json::from_str(lines.next().unwrap()).unwrap();
    assert_eq!(result["exit_code"], SHELL_EXIT);
    assert_eq!(result["job"], "/org/pibuilder/PiBuilder1/jobs/1");
    assert_eq!(
        calls(&stand)[0],
        format!("Shell silent {IMAGE} [\"true\"] stdin=pipe stdout=pipe stderr=pipe")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unknown_image_is_named() {
    let (bus, _stand) = setup(Script::Succeed).await;
    let out = run(bus.client(&["shell", "nope", "--", "true"])).await;
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.starts_with("pib-client: No image named nope; see `pib-client images`.\n"),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn ctrl_c_without_a_terminal_cancels_the_job() {
    let (bus, stand) = setup(Script::UntilCancelled).await;
    let child = bus
        .client(&["shell", IMAGE, "--", "sleep", "1d"])
        .spawn()
        .unwrap();
    wait_for_call(&stand, "streams").await;
    signal(&child, Signal::INT);
    let out = wait(child).await;
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(130), "{stderr}");
    assert!(stderr.contains("The job was cancelled"), "{stderr}");
    assert!(
        stderr.contains("working on it"),
        "the held log is shown once the job did not succeed: {stderr}"
    );
    assert!(calls(&stand).contains(&"Cancel interactive".to_owned()));
}

fn modes(fd: &OwnedFd) -> LocalModes {
    tcgetattr(fd).unwrap().local_modes
}

#[tokio::test(flavor = "multi_thread")]
async fn an_interactive_shell_gets_the_terminal_raw_and_leaves_it_as_it_was() {
    let (bus, stand) = setup(Script::Succeed).await;
    let (master, slave) = pty();
    let before = modes(&slave);
    assert!(before.contains(LocalModes::ICANON | LocalModes::ECHO | LocalModes::ISIG));
    let child = on_terminal(&bus, &["--no-ask-password", "shell", IMAGE], &slave);
    let out = wait(child).await;
    assert_eq!(out.status.code(), Some(SHELL_EXIT));
    assert_eq!(modes(&slave), before, "the terminal is as it was");
    assert_eq!(
        calls(&stand)[0],
        format!("Shell silent {IMAGE} [] stdin=terminal stdout=terminal stderr=terminal")
    );
    assert!(
        calls(&stand).contains(&"terminal raw".to_owned()),
        "{:?}",
        calls(&stand)
    );
    let o = stand.options_of("Shell");
    assert_eq!(*o["tty"], Variant::from(true));
    assert_eq!(*o["rows"], Variant::from(30u32));
    assert_eq!(*o["cols"], Variant::from(100u32));
    drop(slave);
    let shown = tokio::task::spawn_blocking(move || screen(master))
        .await
        .unwrap();
    assert_eq!(shown, "hello on the terminal\r\n");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_command_gets_a_terminal_only_with_t() {
    let (bus, stand) = setup(Script::Succeed).await;
    let (master, slave) = pty();
    let child = on_terminal(
        &bus,
        &["--no-ask-password", "shell", IMAGE, "--", "cat"],
        &slave,
    );
    // The command reads the terminal as it is, in its normal mode: a line, then Ctrl-D.
    wait_for_call(
        &stand,
        &format!("Shell silent {IMAGE} [\"cat\"] stdin=terminal stdout=terminal stderr=terminal"),
    )
    .await;
    File::from(master.try_clone().unwrap())
        .write_all(b"typed\n\x04")
        .unwrap();
    let out = wait(child).await;
    assert_eq!(out.status.code(), Some(SHELL_EXIT));
    assert_eq!(*stand.options_of("Shell")["tty"], Variant::from(false));

    let child = on_terminal(
        &bus,
        &["--no-ask-password", "shell", "-t", IMAGE, "--", "top"],
        &slave,
    );
    let out = wait(child).await;
    assert_eq!(out.status.code(), Some(SHELL_EXIT));
    assert_eq!(*stand.options_of("Shell")["tty"], Variant::from(true));
    assert!(modes(&slave).contains(LocalModes::ICANON | LocalModes::ECHO));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_signal_cancels_the_shell_and_restores_the_terminal() {
    let (bus, stand) = setup(Script::UntilCancelled).await;
    let (master, slave) = pty();
    let before = modes(&slave);
    // Keep the terminal's output flowing, so that nothing blocks on a full buffer.
    let reader = std::thread::spawn(move || screen(master));
    let child = on_terminal(&bus, &["--no-ask-password", "shell", IMAGE], &slave);
    wait_for_call(&stand, "terminal raw").await;
    assert!(!modes(&slave).contains(LocalModes::ICANON));
    signal(&child, Signal::TERM);
    let out = wait(child).await;
    assert_eq!(out.status.code(), Some(130));
    assert_eq!(modes(&slave), before, "the terminal is as it was");
    assert!(calls(&stand).contains(&"Cancel silent".to_owned()));
    drop(slave);
    let shown = reader.join().unwrap();
    assert!(shown.contains("The job was cancelled"), "{shown:?}");
    assert!(
        shown.contains("cancelled on request\r\n")
            || shown.contains("The job was cancelled: cancelled on request.\r\n"),
        "error text is written on a terminal in its normal mode (newlines become CR LF): {shown:?}"
    );
}
