//! `pib-client flash IMAGE` without a device, for real: an unprivileged user granted
//! org.pibuilder.flash picks the second of two loop cards on a pseudo-terminal with the arrow
//! keys, and exactly that card is written (the other keeps its marks).

use std::time::Duration;

use pib_tests::cards::{last_json_array, make_image, same_as_image, work_dir, MIB};
use pib_tests::pty::{attach, pty, Typist};
use pib_tests::{client_bin, eventually, LoopCard, PolkitRule, TestUser};

#[test]
fn arrow_keys_pick_the_card_that_is_written() {
    let user = TestUser::ensure("pibtest-picker");
    let _grant = PolkitRule::grant("picker", &user.name, "org.pibuilder.flash");
    let dir = work_dir("picker");
    let image = make_image(&dir, "pi.img", 8 * MIB + 4096);
    let first = LoopCard::new(&dir, "first", 64 * MIB, false);
    let second = LoopCard::new(&dir, "second", 64 * MIB, false);

    // Where the cards are in the list the picker shows, and where its cursor starts: on the
    // first disk the daemon accepts.
    let mut listed = Vec::new();
    assert!(eventually(Duration::from_secs(20), || {
        listed = last_json_array(&user.client(&["--json", "devices"]));
        listed.iter().any(|d| d["device"] == second.dev.as_str())
    }));
    let at = |dev: &str| listed.iter().position(|d| d["device"] == dev).unwrap();
    let start = listed
        .iter()
        .position(|d| d["verdict"] != "refused")
        .unwrap();
    let (from, to) = (start, at(&second.dev));
    let moves = if to >= from {
        b"\x1b[B".repeat(to - from)
    } else {
        b"\x1b[A".repeat(from - to)
    };

    let (master, slave) = pty();
    let mut typist = Typist::new(master);
    let mut cmd = user.command(client_bin());
    cmd.args([
        "--no-ask-password",
        "flash",
        image.to_str().unwrap(),
        "--yes",
    ]);
    attach(&mut cmd, &slave);
    let mut child = cmd.spawn().unwrap();
    // The command holds copies of the terminal: the master sees its end only without them.
    drop(cmd);
    typist.wait_for("to which card?", 1);
    typist.type_keys(&moves);
    typist.type_keys(b"\r");
    let status = child.wait().unwrap();
    drop(slave);
    let shown = typist.finish();
    assert!(status.success(), "{status:?}: {shown}");
    assert!(
        shown.contains(&format!("Chosen: {}", second.dev)),
        "{shown}"
    );
    assert!(shown.contains("read back and verified"), "{shown}");
    same_as_image(&second, &image);
    assert!(
        first.read(0, 4096).iter().all(|&b| b == 0xEE),
        "the other card was written"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
