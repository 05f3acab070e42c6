//! pib-test-load: many concurrent clients of pi-builder's daemon, each on a bus connection of
//! its own, calling as fast as it is answered for a fixed time; prints one JSON line with the
//! counts and latency percentiles.
//!
//!   pib-test-load CLIENTS SECONDS MODE
//!
//! MODE `status-jobs`: each client alternates GetStatus and ListJobs (what `pib-client status`
//! and `pib-client jobs` do). MODE `ping`: org.freedesktop.DBus.Peer.Ping to the daemon, which
//! zbus answers without running any of the daemon's code: the bus round trip alone, the
//! baseline for the other mode. Used by tests/load.rs and scripts/bench-load.

use std::time::{Duration, Instant};

use pib_dbus_interfaces::names::{BUS_NAME, MANAGER_PATH};
use pib_dbus_interfaces::proxy::ManagerProxy;
use serde_json::json;

/// A call that takes longer than this counts as unanswered.
const CALL_TIMEOUT: Duration = Duration::from_secs(25);

#[derive(Default)]
struct ClientResult {
    sent: u64,
    answered: u64,
    errors: Vec<String>,
    /// Latencies in microseconds.
    latencies: Vec<u64>,
}

async fn one_call(
    conn: &zbus::Connection,
    manager: &ManagerProxy<'_>,
    mode: &str,
    n: u64,
) -> Result<(), String> {
    match (mode, n % 2) {
        ("ping", _) => conn
            .call_method(
                Some(BUS_NAME),
                MANAGER_PATH,
                Some("org.freedesktop.DBus.Peer"),
                "Ping",
                &(),
            )
            .await
            .map(|_| ())
            .map_err(|e| e.to_string()),
        (_, 0) => manager
            .get_status()
            .await
            .map(|_| ())
            .map_err(|e| e.to_string()),
        _ => manager
            .list_jobs()
            .await
            .map(|_| ())
            .map_err(|e| e.to_string()),
    }
}

async fn client(mode: String, until: Instant) -> ClientResult {
    let mut r = ClientResult::default();
    let conn = match zbus::Connection::system().await {
        Ok(c) => c,
        Err(e) => {
            r.errors.push(format!("connect: {e}"));
            return r;
        }
    };
    let manager = match ManagerProxy::new(&conn).await {
        Ok(m) => m,
        Err(e) => {
            r.errors.push(format!("proxy: {e}"));
            return r;
        }
    };
    while Instant::now() < until {
        let n = r.sent;
        r.sent += 1;
        let start = Instant::now();
        match tokio::time::timeout(CALL_TIMEOUT, one_call(&conn, &manager, &mode, n)).await {
            Ok(Ok(())) => {
                r.answered += 1;
                r.latencies.push(start.elapsed().as_micros() as u64);
            }
            Ok(Err(e)) => {
                r.answered += 1;
                r.errors.push(e);
            }
            Err(_) => r.errors.push("no answer within 25 s".to_owned()),
        }
    }
    r
}

fn percentile(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank] as f64 / 1000.0
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let usage = "usage: pib-test-load CLIENTS SECONDS status-jobs|ping";
    let clients: usize = args.first().and_then(|s| s.parse().ok()).expect(usage);
    let secs: u64 = args.get(1).and_then(|s| s.parse().ok()).expect(usage);
    let mode = args.get(2).cloned().expect(usage);
    assert!(mode == "status-jobs" || mode == "ping", "{usage}");

    let until = Instant::now() + Duration::from_secs(secs);
    let started = Instant::now();
    let tasks: Vec<_> = (0..clients)
        .map(|_| tokio::spawn(client(mode.clone(), until)))
        .collect();
    let mut all = ClientResult::default();
    let mut per_client = Vec::new();
    for t in tasks {
        let r = t.await.expect("client task");
        per_client.push(r.answered);
        all.sent += r.sent;
        all.answered += r.answered;
        all.errors.extend(r.errors);
        all.latencies.extend(r.latencies);
    }
    let elapsed = started.elapsed().as_secs_f64();
    all.latencies.sort_unstable();
    let error_count = all.errors.len();
    all.errors.truncate(10);
    println!(
        "{}",
        json!({
            "mode": mode,
            "clients": clients,
            "seconds": elapsed,
            "sent": all.sent,
            "answered": all.answered,
            "errors": error_count,
            "first_errors": all.errors,
            "calls_per_second": all.latencies.len() as f64 / elapsed,
            "p50_ms": percentile(&all.latencies, 50.0),
            "p90_ms": percentile(&all.latencies, 90.0),
            "p99_ms": percentile(&all.latencies, 99.0),
            "max_ms": percentile(&all.latencies, 100.0),
            "min_calls_of_a_client": per_client.iter().min(),
        })
    );
}
