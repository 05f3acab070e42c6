//! polkit that cannot give a clear answer means "no" (SECURITY.md): a caller that leaves while
//! the decision is pending gets nothing started, and a polkitd that hangs or is absent denies
//! after the configured timeout instead of allowing or hanging the daemon.
//!
//! The steps stop, hide and restart the machine-wide polkitd and restart the daemon, so they
//! run in one test, in order, each undone by a guard even when an assertion fails.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use pib_tests::cards::{make_image, work_dir, MIB};
use pib_tests::{
    error_of, eventually, jobs_started_by, test_call_bin, DaemonConfig, LoopCard, PolkitRule,
    TestUser, NOT_AUTHORIZED,
};

fn polkitd_pid() -> Option<u32> {
    let out = Command::new("pgrep")
        .args(["-x", "polkitd"])
        .output()
        .ok()?;
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .next()
        .and_then(|l| l.trim().parse().ok())
}

fn signal(pid: u32, sig: &str) {
    let status = Command::new("kill")
        .args([sig, &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success(), "kill {sig} {pid}");
}

/// polkitd stopped (SIGSTOP) while this lives: it holds its bus name and answers nothing.
struct Frozen(u32);

impl Drop for Frozen {
    fn drop(&mut self) {
        signal(self.0, "-CONT");
    }
}

const ACTIVATION: &str = "/usr/share/dbus-1/system-services/org.freedesktop.PolicyKit1.service";

/// polkitd gone and not activatable while this lives; put back (and reloaded) afterwards.
struct Absent {
    hidden: PathBuf,
}

fn reload_bus() {
    let status = Command::new("dbus-send")
        .args([
            "--system",
            "--print-reply",
            "--dest=org.freedesktop.DBus",
            "/org/freedesktop/DBus",
            "org.freedesktop.DBus.ReloadConfig",
        ])
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success(), "ReloadConfig");
}

impl Absent {
    fn new() -> Absent {
        let hidden = PathBuf::from(format!("{ACTIVATION}.pibtest-hidden"));
        std::fs::rename(ACTIVATION, &hidden).expect("hide polkitd's activation file");
        let guard = Absent { hidden };
        reload_bus();
        if let Some(pid) = polkitd_pid() {
            signal(pid, "-TERM");
            assert!(
                eventually(Duration::from_secs(10), || polkitd_pid().is_none()),
                "polkitd did not stop"
            );
        }
        guard
    }
}

impl Drop for Absent {
    fn drop(&mut self) {
        let _ = std::fs::rename(&self.hidden, ACTIVATION);
        reload_bus();
    }
}

#[test]
fn without_a_clear_yes_from_polkit_nothing_runs() {
    // A caller that leaves while polkit decides: no job starts, the card stays untouched.
    let leaver = TestUser::ensure("pibtest-leaver");
    let _slow = PolkitRule::slow_grant("leaver", &leaver.name, "org.pibuilder.flash", 4);
    let dir = work_dir("polkit-faults");
    let image = make_image(&dir, "pi.img", 16 * MIB);
    let card = LoopCard::new(&dir, "card", 64 * MIB, false);
    let mut child = leaver
        .command(test_call_bin())
        .args(["flash", &card.dev, &format!("file:{}", image.display())])
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    child.kill().unwrap();
    child.wait().unwrap();
    // The rule answers after 4 s; give the daemon time to act on a "yes" it must not use.
    std::thread::sleep(Duration::from_secs(5));
    let rt = tokio::runtime::Runtime::new().unwrap();
    assert!(
        rt.block_on(jobs_started_by(leaver.uid)).is_empty(),
        "a job started for a caller that had left"
    );
    assert!(
        card.read(0, 4096).iter().all(|&b| b == 0xEE)
            && card.read(64 * MIB - 4096, 4096).iter().all(|&b| b == 0xEE),
        "the card was written for a caller that had left"
    );
    drop(card);

    // polkitd hangs, then is absent: a caller the rules would allow is denied, promptly.
    let user = TestUser::ensure("pibtest-nopolkit");
    let _grant = PolkitRule::grant("nopolkit", &user.name, "org.pibuilder.binfmt");
    assert!(
        eventually(Duration::from_secs(15), || error_of(
            &user.call(&["register"])
        )
        .is_empty()),
        "the grant never worked"
    );
    let _config = DaemonConfig::with(&[("", "auth_timeout_secs", "3")]);
    {
        let _frozen = Frozen(polkitd_pid().expect("polkitd runs"));
        signal(_frozen.0, "-STOP");
        let started = Instant::now();
        let out = user.call(&["register"]);
        assert_eq!(error_of(&out), NOT_AUTHORIZED, "{out}");
        assert!(
            out["message"]
                .as_str()
                .unwrap_or_default()
                .contains("did not answer"),
            "{out}"
        );
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the deny took {:?}",
            started.elapsed()
        );
    }
    {
        let _absent = Absent::new();
        let out = user.call(&["register"]);
        assert_eq!(error_of(&out), NOT_AUTHORIZED, "{out}");
    }
    // polkitd comes back by activation and the grant holds again.
    assert!(
        eventually(Duration::from_secs(30), || error_of(
            &user.call(&["register"])
        )
        .is_empty()),
        "polkitd did not come back"
    );
    assert!(Path::new(ACTIVATION).exists());
    let _ = std::fs::remove_dir_all(&dir);
}
