//! Host names for the boards found, through the system resolver (NSS: /etc/hosts, DNS,
//! mDNS where configured), bounded in time.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use tokio::task::JoinSet;

/// All lookups together get this long; a name that comes later is left out. A lookup still
/// running then finishes on its own in the blocking pool (getnameinfo cannot be cancelled),
/// bounded by the resolver's own timeouts.
pub const BOUND: Duration = Duration::from_secs(2);

/// The names of `ips` that resolve within `bound`.
pub async fn lookup(ips: &[Ipv4Addr], bound: Duration) -> HashMap<Ipv4Addr, String> {
    let mut set = JoinSet::new();
    for ip in ips.iter().copied() {
        set.spawn_blocking(move || {
            let name = dns_lookup::lookup_addr(&IpAddr::V4(ip)).ok();
            (ip, name.filter(|n| plausible(n)))
        });
    }
    let mut names = HashMap::new();
    let _ = tokio::time::timeout(bound, async {
        while let Some(done) = set.join_next().await {
            if let Ok((ip, Some(name))) = done {
                names.insert(ip, name);
            }
        }
    })
    .await;
    names
}

/// A name fit to show: reverse DNS is answered by whoever runs the network, so anything that
/// is not a plain host name (escape sequences, spaces, absurd lengths) is dropped.
pub fn plausible(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_host_names_are_kept() {
        for ok in ["pi", "raspberrypi.local", "kiosk-3.lan", "_gateway"] {
            assert!(plausible(ok), "{ok}");
        }
        let long = "a".repeat(254);
        for bad in ["", "evil\x1b[2J", "two words", "naïve", long.as_str()] {
            assert!(!plausible(bad), "{bad:?}");
        }
    }

    #[tokio::test]
    async fn loopback_resolves_and_the_bound_holds() {
        // 127.0.0.1 is in /etc/hosts on every system (as localhost or the host's name).
        let started = std::time::Instant::now();
        let names = lookup(&[Ipv4Addr::LOCALHOST], BOUND).await;
        assert!(names.contains_key(&Ipv4Addr::LOCALHOST), "{names:?}");
        assert!(started.elapsed() < BOUND + Duration::from_millis(500));
    }
}
