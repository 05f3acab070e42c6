//! The scan job: interfaces, then their subnets within bounds, one sweep thread per
//! interface, the Raspberry Pis among the answers, their names.

use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use pib_dbus_interfaces::types::{result, scan as key};
use pib_dbus_interfaces::DBusError;

use super::interfaces::{self, Iface};
use super::mac::Mac;
use super::request::ScanRequest;
use super::socket::ArpSocket;
use super::subnet::{self, Sweep};
use super::sweep::{self, Swept, Timing};
use super::{names, oui};
use crate::bus::Daemon;
use crate::jobs::{JobHandle, Outcome, Record, ResultValue};

fn record(pairs: &[(&'static str, ResultValue)]) -> Record {
    pairs.iter().cloned().collect()
}

fn skip_record(interface: &str, subnet: &str, reason: &str) -> Record {
    record(&[
        (key::INTERFACE, interface.into()),
        (key::SUBNET, subnet.into()),
        (key::REASON, reason.into()),
    ])
}

fn internal(e: tokio::task::JoinError) -> DBusError {
    DBusError::Failed(format!("internal error: {e}"))
}

/// A board found: where, and at which address.
struct Board {
    interface: String,
    ip: Ipv4Addr,
    mac: Mac,
}

pub async fn run(ctx: &Daemon, request: ScanRequest, job: JobHandle) -> Result<Outcome, DBusError> {
    let only = request.interfaces.clone();
    let (ifaces, refused) = tokio::task::spawn_blocking(move || interfaces::find(only.as_deref()))
        .await
        .map_err(internal)?
        .map_err(|e| DBusError::Failed(format!("cannot list the network interfaces: {e}")))?;
    let mut skipped: Vec<Record> = Vec::new();
    for (name, reason) in refused {
        job.log(format!("{name}: not swept: {reason}"));
        skipped.push(skip_record(&name, "", &reason));
    }
    let mut plans: Vec<(Iface, Vec<Sweep>)> = Vec::new();
    for iface in ifaces {
        let (sweeps, skips) = subnet::plan(&iface.addrs, ctx.config.scan.max_addresses);
        for s in skips {
            job.log(format!(
                "{}: {} not swept: {}",
                iface.name, s.subnet, s.reason
            ));
            skipped.push(skip_record(&iface.name, &s.subnet.to_string(), &s.reason));
        }
        if !sweeps.is_empty() {
            plans.push((iface, sweeps));
        }
    }

    let swept = sweep_all(&job, plans, Instant::now() + request.timeout).await?;
    job.check_cancelled()?;

    let mut swept_records = Vec::new();
    let mut boards = Vec::new();
    let mut others = 0usize;
    let mut failures = Vec::new();
    for (iface, sweeps, outcome) in swept {
        let found = match outcome {
            Ok(found) => found,
            Err(e) => {
                let reason = match e.kind() {
                    // The unit grants CAP_NET_RAW; a daemon started otherwise may lack it.
                    std::io::ErrorKind::PermissionDenied => format!(
                        "cannot sweep it: {e} (raw ARP needs CAP_NET_RAW and AF_PACKET in \
                         the daemon's sandbox)"
                    ),
                    _ => format!("cannot sweep it: {e}"),
                };
                job.log(format!("{}: {reason}", iface.name));
                skipped.push(skip_record(&iface.name, "", &reason));
                failures.push(format!("{}: {reason}", iface.name));
                continue;
            }
        };
        for (s, asked) in sweeps.iter().zip(&found.asked) {
            let addresses = s.targets.len() as u32;
            if *asked < addresses {
                job.log(format!(
                    "{}: {}: the time bound ended the sweep after {asked} of {addresses} addresses",
                    iface.name, s.subnet
                ));
            } else {
                job.log(format!(
                    "{}: swept {} ({addresses} addresses)",
                    iface.name, s.subnet
                ));
            }
            swept_records.push(record(&[
                (key::INTERFACE, iface.name.as_str().into()),
                (key::SUBNET, s.subnet.to_string().into()),
                (key::ADDRESSES, addresses.into()),
                (key::ASKED, (*asked).into()),
            ]));
        }
        for (ip, mac) in found.answers {
            if oui::is_raspberry_pi(&mac) {
                job.log(format!("{}: {ip} is at {mac}, a Raspberry Pi", iface.name));
                boards.push(Board {
                    interface: iface.name.clone(),
                    ip,
                    mac,
                });
            } else {
                others += 1;
            }
        }
    }
    if swept_records.is_empty() && !failures.is_empty() {
        return Err(DBusError::Failed(format!(
            "no network could be swept: {}",
            failures.join("; ")
        )));
    }

    let names = if request.resolve && !boards.is_empty() {
        job.set_stage("names");
        let ips: Vec<Ipv4Addr> = boards.iter().map(|b| b.ip).collect();
        names::lookup(&ips, names::BOUND).await
    } else {
        Default::default()
    };
    job.check_cancelled()?;
    boards.sort_by(|a, b| (&a.interface, a.ip).cmp(&(&b.interface, b.ip)));
    let hosts: Vec<Record> = boards
        .iter()
        .map(|b| {
            record(&[
                (key::IP, b.ip.to_string().into()),
                (key::MAC, b.mac.to_string().into()),
                (key::INTERFACE, b.interface.as_str().into()),
                (
                    key::HOSTNAME,
                    names.get(&b.ip).cloned().unwrap_or_default().into(),
                ),
            ])
        })
        .collect();
    let message = summary(hosts.len(), others, swept_records.len(), skipped.len());
    Ok(Outcome::new(message)
        .with(result::HOSTS, hosts)
        .with(result::SWEPT, swept_records)
        .with(result::SKIPPED, skipped))
}

type SweptIface = (Iface, Vec<Sweep>, std::io::Result<Swept>);

/// Sweeps every interface at once, each on a thread of its own (the sends are paced with
/// sleeps), all against one deadline; progress counts addresses asked over all of them.
async fn sweep_all(
    job: &JobHandle,
    plans: Vec<(Iface, Vec<Sweep>)>,
    deadline: Instant,
) -> Result<Vec<SweptIface>, DBusError> {
    let total: u64 = plans
        .iter()
        .flat_map(|(_, s)| s)
        .map(|s| s.targets.len() as u64)
        .sum();
    job.set_stage("sweep");
    job.set_progress((total > 0).then_some(0.0));
    let asked = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for (iface, sweeps) in plans {
        let job = job.clone();
        let asked = asked.clone();
        tasks.push(tokio::task::spawn_blocking(move || {
            let on_asked = || {
                let n = asked.fetch_add(1, Ordering::Relaxed) + 1;
                // A few updates per second are plenty; every one takes the job's lock.
                if n.is_multiple_of(32) || n == total {
                    job.set_progress(Some(n as f64 / total as f64));
                }
            };
            let outcome = ArpSocket::open(iface.index).and_then(|socket| {
                sweep::sweep(
                    &socket,
                    iface.mac,
                    &sweeps,
                    deadline,
                    Timing::default(),
                    &on_asked,
                    &|| job.is_cancelled(),
                )
            });
            (iface, sweeps, outcome)
        }));
    }
    let mut out = Vec::new();
    for t in tasks {
        out.push(t.await.map_err(internal)?);
    }
    Ok(out)
}

fn summary(boards: usize, others: usize, subnets: usize, skipped: usize) -> String {
    let plural =
        |n: usize, one: &str, many: &str| format!("{n} {}", if n == 1 { one } else { many });
    let mut s = match boards {
        0 => "No Raspberry Pi found".to_owned(),
        n => format!("Found {}", plural(n, "Raspberry Pi", "Raspberry Pis")),
    };
    s.push_str(&format!(
        " ({} answered, {} swept",
        plural(others, "other host", "other hosts"),
        plural(subnets, "subnet", "subnets")
    ));
    if skipped > 0 {
        s.push_str(&format!(
            ", {} skipped",
            plural(skipped, "network", "networks")
        ));
    }
    s.push_str(").");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_summary_counts_in_words() {
        assert_eq!(
            summary(2, 1, 1, 0),
            "Found 2 Raspberry Pis (1 other host answered, 1 subnet swept)."
        );
        assert_eq!(
            summary(0, 0, 3, 1),
            "No Raspberry Pi found (0 other hosts answered, 3 subnets swept, 1 network skipped)."
        );
        let r = skip_record("eth0", "10.0.0.0/8", "too large");
        assert_eq!(r[key::REASON], ResultValue::from("too large"));
    }
}
