//! `flash IMAGE` without a device against the stand-in daemon, on a real pseudo-terminal: the
//! picker lists what the daemon lists, moves with arrows and j/k, refuses what the daemon
//! refuses, flashes the chosen card, leaves with q or Esc, and never prompts with --json or
//! without a terminal.

mod support;

use std::process::Output;

use pib_tests::pty::{pty, Typist};
use rustix::termios::{tcgetattr, LocalModes};
use support::on_terminal;
use support::{serve, PrivateBus, Script, Stand};

fn calls(stand: &Stand) -> Vec<String> {
    stand.calls.lock().unwrap().clone()
}

async fn setup() -> (PrivateBus, Stand, String) {
    let bus = PrivateBus::start();
    let stand = serve(&bus.address, Script::Succeed).await;
    let image = bus.scratch("img").join("pi.img");
    std::fs::write(&image, vec![7u8; 4096]).unwrap();
    (bus, stand, image.to_str().unwrap().to_owned())
}

/// Runs the client on a terminal, types each of `keys` once the picker has drawn (again),
/// and returns its exit status and what the terminal showed.
async fn pick(bus: &PrivateBus, args: &[&str], keys: &[&[u8]]) -> (Option<i32>, String) {
    let (master, slave) = pty();
    let before = tcgetattr(&slave).unwrap();
    let mut typist = Typist::new(master);
    let mut child = on_terminal(bus, args, &slave);
    for (i, k) in keys.iter().enumerate() {
        // A frame ends with the (possibly empty) note line after the table.
        typist.wait_for("to which card?", i + 1);
        typist.type_keys(k);
    }
    let status = tokio::task::spawn_blocking(move || child.wait().unwrap())
        .await
        .unwrap();
    let after = tcgetattr(&slave).unwrap();
    assert_eq!(after.local_modes, before.local_modes, "terminal restored");
    assert!(after
        .local_modes
        .contains(LocalModes::ICANON | LocalModes::ECHO | LocalModes::ISIG));
    drop(slave);
    let shown = tokio::task::spawn_blocking(move || typist.finish())
        .await
        .unwrap();
    (status.code(), shown)
}

#[tokio::test(flavor = "multi_thread")]
async fn arrows_and_enter_pick_the_card_that_is_flashed() {
    let (bus, stand, image) = setup().await;
    let args = ["--no-ask-password", "flash", &image, "--yes"];
    // The cursor starts on the first card the daemon accepts (/dev/sdb). Up to the system
    // disk and Enter: refused, with the daemon's reason. Then down twice (an arrow, then j)
    // to /dev/sdc and Enter.
    let (code, shown) = pick(&bus, &args, &[b"\x1b[A", b"\r", b"\x1b[B", b"j", b"\r"]).await;
    assert_eq!(code, Some(0), "{shown}");
    assert!(
        shown.contains("pi-builder will not write /dev/sda: it holds /."),
        "{shown}"
    );
    for shown_row in [
        "/dev/sda",
        "System Disk",
        "refused: it holds /",
        "32.00 GiB",
        "usb",
    ] {
        assert!(shown.contains(shown_row), "{shown_row}: {shown}");
    }
    assert!(shown.contains("Chosen: /dev/sdc"), "{shown}");
    let c = calls(&stand);
    assert_eq!(
        c.iter()
            .filter(|c| c.starts_with("Flash"))
            .collect::<Vec<_>>(),
        ["Flash silent file /dev/sdc"],
        "{c:?}"
    );
    assert!(c.contains(&"ListDevices silent".to_owned()), "{c:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn q_and_esc_leave_without_writing() {
    let (bus, stand, image) = setup().await;
    let args = ["--no-ask-password", "flash", &image, "--yes"];
    for key in [&b"q"[..], b"\x1b", b"\x03"] {
        let (code, shown) = pick(&bus, &args, &[b"j", key]).await;
        assert_eq!(code, Some(130), "{key:?}: {shown}");
        assert!(
            shown.contains("No card was chosen; nothing was written."),
            "{shown}"
        );
    }
    assert!(
        !calls(&stand).iter().any(|c| c.starts_with("Flash")),
        "{:?}",
        calls(&stand)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn without_a_terminal_or_with_json_a_device_is_required() {
    let (bus, stand, image) = setup().await;
    let check = |out: Output| {
        assert_eq!(out.status.code(), Some(2), "{out:?}");
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
    };
    let text = check(bus.client(&["flash", &image, "--yes"]).output().unwrap());
    assert!(text.contains("name the card to write"), "{text}");
    // Before the image is even opened.
    let text = check(bus.client(&["flash", "/nonexistent.img"]).output().unwrap());
    assert!(text.contains("name the card to write"), "{text}");
    let text = check(bus.client(&["--json", "flash", &image]).output().unwrap());
    assert!(text.contains("org.pibuilder.Client.Error.Usage"), "{text}");
    // --json on a terminal: still no prompt.
    let (code, shown) = pick(&bus, &["--json", "flash", &image, "--yes"], &[]).await;
    assert_eq!(code, Some(2), "{shown}");
    assert!(!shown.contains("to which card?"), "{shown}");
    assert!(calls(&stand).is_empty(), "{:?}", calls(&stand));
}
