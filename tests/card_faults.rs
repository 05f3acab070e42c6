//! Cards that change under the writer, and a daemon whose policy forbids loop devices: a card
//! pulled out mid-write (DeviceLost), a device swapped between the choice and the write
//! (DeviceChanged), a loop device refused by the configuration (DeviceRefused). Each ends typed,
//! with nothing written where it must not be and nothing held afterwards.
//!
//! The steps restart the machine-wide daemon and rebind loop devices, so they run in one test,
//! in order.

use std::fs::File;
use std::os::unix::fs::{FileExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use pib_tests::cards::{
    daemon_pid, error_name, flash, last_json_array, make_image, pattern, refused,
    running_flash_job, start_flash, work_dir, MIB,
};
use pib_tests::{eventually, text, DaemonConfig, LoopCard as Card, PolkitRule, TestUser};

const ERR: &str = "org.pibuilder.PiBuilder1.Error.";

/// An image of `len` bytes whose every byte is data (no block map, no holes), so a write of it
/// lasts long enough to be interrupted.
fn full_image(dir: &Path, name: &str, len: u64) -> PathBuf {
    let path = dir.join(name);
    let f = File::create(&path).unwrap();
    let block = pattern(4 * MIB as usize, 5);
    let mut off = 0;
    while off < len {
        let n = (len - off).min(block.len() as u64) as usize;
        f.write_all_at(&block[..n], off).unwrap();
        off += n as u64;
    }
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    path
}

/// Whether the daemon holds `dev` open (by its device number, whatever the path).
fn daemon_holds(dev: &str) -> bool {
    use std::os::unix::fs::MetadataExt;
    let Some(pid) = daemon_pid() else {
        return false;
    };
    let want = std::fs::metadata(dev).map(|m| m.rdev()).unwrap_or(0);
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return false;
    };
    fds.flatten()
        .any(|fd| std::fs::metadata(fd.path()).is_ok_and(|m| m.rdev() == want && want != 0))
}

#[test]
fn cards_that_change_under_the_writer() {
    let user = TestUser::ensure("pibtest-flash");
    let _grant = PolkitRule::grant("flash", &user.name, "org.pibuilder.flash");
    let dir = work_dir("card-faults");
    let image = make_image(&dir, "pi.img", 64 * MIB + 4096);

    // A card pulled out of its reader mid-write: the node stays and its capacity drops to
    // zero. DeviceLost, the job failed, and the daemon holds nothing afterwards.
    let big = full_image(&dir, "big.img", 1536 * MIB);
    let pulled = Card::new(&dir, "pulled", 1600 * MIB, false);
    assert!(eventually(Duration::from_secs(20), || {
        flash(&user, &image, &[&pulled.dev], &["--no-verify"])
            .status
            .success()
    }));
    let child = start_flash(&user, &big, &pulled.dev);
    let deadline = Instant::now() + Duration::from_secs(60);
    while running_flash_job(&user).is_none() {
        assert!(Instant::now() < deadline, "the flash never ran");
        std::thread::sleep(Duration::from_millis(20));
    }
    pulled.pull();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert_eq!(
        error_name(&out),
        format!("{ERR}DeviceLost"),
        "{}",
        text(&out)
    );
    let jobs = last_json_array(&user.client(&["--json", "jobs"]));
    assert!(
        jobs.iter().any(|j| j["operation"] == "flash"
            && j["state"] == "failed"
            && j["error_name"] == format!("{ERR}DeviceLost")),
        "{jobs:?}"
    );
    assert!(
        eventually(Duration::from_secs(10), || !daemon_holds(&pulled.dev)),
        "the daemon still holds the pulled card"
    );
    drop(pulled);

    // A device swapped between the choice and the write: the daemon checked /dev/loopN, and
    // while polkit decided, the same node came to stand for another file. DeviceChanged, and
    // the new file was not written.
    let swapper = TestUser::ensure("pibtest-swap");
    let _slow = PolkitRule::slow_grant("swap", &swapper.name, "org.pibuilder.flash", 3);
    let mut swapped = Card::new(&dir, "before", 128 * MIB, false);
    let child = start_flash(&swapper, &image, &swapped.dev);
    std::thread::sleep(Duration::from_millis(1000));
    swapped.rebind(&dir, "after");
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert_eq!(
        error_name(&out),
        format!("{ERR}DeviceChanged"),
        "{}",
        text(&out)
    );
    assert!(
        swapped.read(0, 4096).iter().all(|&b| b == 0xEE),
        "the swapped-in card was written"
    );
    drop(swapped);

    // Loop devices forbidden by the daemon's configuration: refused, typed, nothing written;
    // the listing says why.
    let card = Card::new(&dir, "forbidden", 128 * MIB, false);
    {
        let _config = DaemonConfig::with(&[("devices", "allow_loop", "false")]);
        refused(&user, &image, &card.dev, "DeviceRefused");
        let out = flash(&user, &image, &[&card.dev], &[]);
        assert!(text(&out).contains("loop devices"), "{}", text(&out));
        assert!(
            card.read(0, 4096).iter().all(|&b| b == 0xEE),
            "the forbidden card was written"
        );
        let listed = last_json_array(&user.client(&["--json", "devices", "--all"]));
        let mine = listed.iter().find(|d| d["device"] == card.dev.as_str());
        assert!(mine.is_none_or(|d| d["verdict"] == "refused"), "{listed:?}");
    }
    // With the configuration back, the same card is accepted again.
    assert!(eventually(Duration::from_secs(20), || {
        flash(&user, &image, &[&card.dev], &[]).status.success()
    }));
    drop(card);

    let _ = std::fs::remove_dir_all(&dir);
}
