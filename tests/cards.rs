//! Writing cards, as a user without root granted org.pibuilder.flash by a polkit rule, to loop
//! devices backed by sparse files (the dev config allows loop devices): byte-exact writes,
//! verification failures, refusals with nothing written, cancel, four cards at once, format,
//! and a daemon killed mid-write.
//!
//! Loop devices and the daemon are machine-wide, so the steps run in one test, in order.

use std::fs::File;
use std::os::unix::fs::{FileExt, PermissionsExt};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use pib_tests::cards::{
    daemon_pid, flash, last_json_array, make_image, pattern, refused, running_flash_job,
    same_as_image, start_flash, work_dir, MIB,
};
use pib_tests::{eventually, last_json, text, LoopCard as Card, PolkitRule, TestUser};

#[test]
fn cards_are_written_exactly_and_refused_safely() {
    let user = TestUser::ensure("pibtest-flash");
    let _grant = PolkitRule::grant("flash", &user.name, "org.pibuilder.flash");
    let dir = work_dir("cards");
    let image = make_image(&dir, "pi.img", 64 * MIB + 4096 + 512);

    // The listing shows a loop card as acceptable and the system disk as refused (with --all).
    let card = Card::new(&dir, "card0", 128 * MIB, false);
    assert!(eventually(Duration::from_secs(20), || {
        flash(&user, &image, &[&card.dev], &[]).status.success()
    }));
    same_as_image(&card, &image);
    let listed = last_json_array(&user.client(&["--json", "devices", "--all"]));
    let mine = listed
        .iter()
        .find(|d| d["device"] == card.dev.as_str())
        .expect("listed");
    assert_eq!(mine["verdict"], "ok", "{mine}");
    assert!(
        listed.iter().any(|d| d["verdict"] == "refused"
            && d["error"] == "org.pibuilder.PiBuilder1.Error.SystemDisk"),
        "{listed:?}"
    );
    // Past the image, the card is as it was, but for its last MiB (stale signatures wiped).
    assert!(card.read(128 * MIB - 4096, 4096).iter().all(|&b| b == 0));

    // The result says what was done.
    let out = flash(&user, &image, &[&card.dev], &["--no-verify"]);
    assert!(out.status.success(), "{}", text(&out));
    let r = &last_json(&out)["result"];
    assert_eq!(r["device"], card.dev.as_str());
    assert_eq!(r["verified"], 0);

    // A block map whose checksum does not match, and a corrupted source: VerifyFailed, and the
    // card does not look written (its first MiB, the partition table, is zeros).
    let bad = dir.join("bad.img");
    std::fs::copy(&image, &bad).unwrap();
    let bmap = std::fs::read_to_string(dir.join("pi.img.bmap")).unwrap();
    std::fs::write(dir.join("bad.img.bmap"), &bmap).unwrap();
    File::options()
        .write(true)
        .open(&bad)
        .unwrap()
        .write_all_at(b"corrupt", 64 * MIB / 2 + 200)
        .unwrap();
    std::fs::set_permissions(&bad, std::fs::Permissions::from_mode(0o644)).unwrap();
    std::fs::set_permissions(
        dir.join("bad.img.bmap"),
        std::fs::Permissions::from_mode(0o644),
    )
    .unwrap();
    refused(&user, &bad, &card.dev, "VerifyFailed");
    assert!(
        card.read(0, MIB as usize).iter().all(|&b| b == 0),
        "the table area was written"
    );

    // Refusals, each typed, with nothing written.
    let root_disk = {
        let out = Command::new("findmnt")
            .args(["-n", "-o", "SOURCE", "/"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    };
    if root_disk.starts_with("/dev/") {
        refused(&user, &image, &root_disk, "SystemDisk");
        let link = dir.join("innocent");
        std::os::unix::fs::symlink(&root_disk, &link).unwrap();
        refused(&user, &image, link.to_str().unwrap(), "SystemDisk");
    }
    refused(&user, &image, "/dev/null", "DeviceRefused");
    refused(&user, &image, image.to_str().unwrap(), "DeviceRefused");
    let ro = Card::new(&dir, "ro", 128 * MIB, true);
    refused(&user, &image, &ro.dev, "DeviceRefused");
    let small = Card::new(&dir, "small", 32 * MIB, false);
    refused(&user, &image, &small.dev, "NoSpace");
    assert!(
        small.read(0, 4096).iter().all(|&b| b == 0xEE),
        "the small card was written"
    );
    // A partition of a card is not a card.
    let parted = Card::new(&dir, "parted", 128 * MIB, false);
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "partx --delete {0} 2>/dev/null; echo 'start=8192, type=83' | sfdisk -q --no-reread {0} && partx --add {0}",
            parted.dev
        ))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    refused(&user, &image, &format!("{}p1", parted.dev), "DeviceRefused");
    let _ = Command::new("partx")
        .arg("--delete")
        .arg(&parted.dev)
        .status();

    // Four cards at once, from one read of the image, all verified.
    let four: Vec<Card> = (1..=4)
        .map(|i| Card::new(&dir, &format!("multi{i}"), 96 * MIB, false))
        .collect();
    let names: Vec<&str> = four.iter().map(|c| c.dev.as_str()).collect();
    let out = flash(&user, &image, &names, &[]);
    assert!(out.status.success(), "{}", text(&out));
    for c in &four {
        same_as_image(c, &image);
    }
    drop(four);

    // Cancel mid-write: Cancelled, the table area untouched, the card free again.
    let big = make_image(&dir, "big.img", 900 * MIB);
    File::options()
        .write(true)
        .open(&big)
        .unwrap()
        .write_all_at(&pattern(600 * MIB as usize, 9), 100 * MIB)
        .unwrap();
    // Its block map no longer describes it: without one, the data ranges come from the file.
    std::fs::remove_file(dir.join("big.img.bmap")).unwrap();
    let slow = Card::new(&dir, "slow", 1024 * MIB, false);
    let mut child = start_flash(&user, &big, &slow.dev);
    let job = {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(j) = running_flash_job(&user) {
                break j;
            }
            if child.try_wait().unwrap().is_some() {
                let listed = text(&user.client(&["--json", "jobs"]));
                panic!(
                    "the flash ended before it was seen running: {}\njobs: {listed}",
                    text(&child.wait_with_output().unwrap())
                );
            }
            assert!(Instant::now() < deadline, "the flash never ran");
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    let out = user.client(&["cancel", &job]);
    assert!(out.status.success(), "{}", text(&out));
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(130), "{}", text(&out));
    assert!(
        slow.read(0, MIB as usize).iter().all(|&b| b == 0),
        "the table area was written"
    );
    let out = flash(&user, &image, &[&slow.dev], &["--no-verify"]);
    assert!(
        out.status.success(),
        "the card stayed locked: {}",
        text(&out)
    );

    // One card of two cancelled: that card is dropped (no table), the other is written.
    let other = Card::new(&dir, "other", 1024 * MIB, false);
    let mut child = user
        .command(pib_tests::client_bin())
        .args([
            "--json",
            "flash",
            big.to_str().unwrap(),
            &slow.dev,
            &other.dev,
            "--yes",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let first = {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(j) = running_flash_job(&user) {
                break j;
            }
            assert!(child.try_wait().unwrap().is_none(), "the flash ended early");
            assert!(Instant::now() < deadline, "the flash never ran");
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    let out = user.client(&["cancel", &first]);
    assert!(out.status.success(), "{}", text(&out));
    let out = child.wait_with_output().unwrap();
    let lines = String::from_utf8_lossy(&out.stdout).into_owned();
    let ended: Vec<serde_json::Value> = lines
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| {
            v.get("job").is_some() && (v.get("result").is_some() || v.get("error").is_some())
        })
        .collect();
    let cancelled_dev = ended
        .iter()
        .find(|v| v["error"] == "org.pibuilder.PiBuilder1.Error.Cancelled")
        .unwrap_or_else(|| panic!("no card was cancelled: {lines}"));
    let written = ended
        .iter()
        .find(|v| v["result"]["verified"] == 1)
        .unwrap_or_else(|| panic!("the other card was not written: {lines}"));
    let written_dev = written["result"]["device"].as_str().unwrap().to_owned();
    let (dropped, kept) = if written_dev == slow.dev {
        (&other, &slow)
    } else {
        (&slow, &other)
    };
    assert_ne!(cancelled_dev["job"], written["job"]);
    assert!(
        dropped.read(0, MIB as usize).iter().all(|&b| b == 0),
        "the dropped card has a table"
    );
    same_as_image(kept, &big);
    drop(other);

    // A card being written is busy for a second flash.
    let child = start_flash(&user, &big, &slow.dev);
    assert!(eventually(Duration::from_secs(60), || running_flash_job(
        &user
    )
    .is_some()));
    refused(&user, &image, &slow.dev, "DeviceBusy");

    // SIGKILL of the daemon mid-write: the next start reports the interrupted job, and the
    // card is free (the kernel dropped the exclusive open and the lock with the process).
    let pid = daemon_pid().expect("the daemon runs");
    Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .status()
        .unwrap();
    assert!(eventually(Duration::from_secs(10), || {
        !Path::new(&format!("/proc/{pid}")).exists()
    }));
    let _ = child.wait_with_output();
    let out = user.client(&["--json", "jobs"]);
    let jobs = last_json_array(&out);
    let reported = jobs.iter().find(|j| {
        j["operation"] == "flash"
            && j["message"]
                .as_str()
                .is_some_and(|m| m.contains("interrupted") && m.contains(&slow.dev))
    });
    assert!(reported.is_some(), "{jobs:?}");
    let out = flash(&user, &image, &[&slow.dev], &["--no-verify"]);
    assert!(
        out.status.success(),
        "the card stayed locked: {}",
        text(&out)
    );
    same_as_image(&slow, &image);

    // Format: the default layout, empty, read back with the standard tools.
    let blank = Card::new(&dir, "blank", 512 * MIB, false);
    let out = user.client(&["--json", "format", &blank.dev, "--yes"]);
    assert!(out.status.success(), "{}", text(&out));
    let table = Command::new("sfdisk")
        .arg("--json")
        .arg(&blank.dev)
        .output()
        .unwrap();
    let table: serde_json::Value = serde_json::from_slice(&table.stdout).unwrap();
    let parts = table["partitiontable"]["partitions"]
        .as_array()
        .unwrap()
        .clone();
    assert_eq!(parts.len(), 2, "{table}");
    assert_eq!(parts[0]["type"], "c");
    let boot = format!(
        "{}@@{}",
        blank.dev,
        parts[0]["start"].as_u64().unwrap() * 512
    );
    let info = Command::new("minfo")
        .env("MTOOLS_SKIP_CHECK", "1")
        .args(["-i", &boot])
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&info.stdout).contains("PIBOOT"),
        "{}",
        text(&info)
    );
    let root = format!(
        "{}?offset={}",
        blank.dev,
        parts[1]["start"].as_u64().unwrap() * 512
    );
    let fsck = Command::new("e2fsck")
        .args(["-fn", &root])
        .output()
        .unwrap();
    assert!(fsck.status.success(), "{}", text(&fsck));
    let _ = Command::new("partx")
        .arg("--delete")
        .arg(&blank.dev)
        .status();

    let _ = std::fs::remove_dir_all(&dir);
}
