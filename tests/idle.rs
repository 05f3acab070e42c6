//! The daemon leaves the bus when idle, and the next call starts it again (bus activation).
//!
//! Runs in a test binary of its own: any other test's calls would keep the daemon awake.

use std::time::{Duration, Instant};

use pib_tests::{daemon_pid, manager, system_bus};

#[tokio::test]
async fn the_daemon_exits_when_idle_and_the_next_call_reactivates_it() {
    let conn = system_bus().await;
    manager(&conn).await.get_status().await.expect("activate");
    let first = daemon_pid(&conn).await.expect("daemon owns its name");

    // The development config sets a short idle timeout (see scripts/dev-up); allow generous
    // slack over it so a loaded machine does not fail the test.
    let deadline = Instant::now() + Duration::from_secs(90);
    while daemon_pid(&conn).await.is_some() {
        assert!(
            Instant::now() < deadline,
            "daemon {first} still owns the name after 90 s idle"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    // The name is released first, then the process ends.
    while std::path::Path::new(&format!("/proc/{first}")).exists() {
        assert!(Instant::now() < deadline, "process {first} did not exit");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let version = manager(&conn).await.version().await.expect("reactivated");
    assert_eq!(version, env!("CARGO_PKG_VERSION"));
    let second = daemon_pid(&conn).await.expect("new instance owns the name");
    assert_ne!(first, second, "expected a new process");
}
