//! IPv4 subnets and how much of them a scan sweeps.

use std::fmt;
use std::net::Ipv4Addr;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Subnet {
    network: u32,
    prefix: u8,
}

impl Subnet {
    /// The subnet of `addr` with a prefix of `prefix` bits (clamped to 32).
    pub fn of(addr: Ipv4Addr, prefix: u8) -> Subnet {
        let prefix = prefix.min(32);
        Subnet {
            network: u32::from(addr) & mask(prefix),
            prefix,
        }
    }

    /// How many addresses in it can be hosts: all but the network and broadcast addresses,
    /// except in /31 (point-to-point, both are hosts) and /32 (just the one).
    pub fn host_count(&self) -> u64 {
        match self.prefix {
            32 => 1,
            31 => 2,
            p => (1u64 << (32 - p)) - 2,
        }
    }

    /// The host addresses, in order.
    pub fn hosts(&self) -> impl Iterator<Item = Ipv4Addr> {
        let first = u64::from(self.network) + u64::from(self.prefix < 31);
        let count = self.host_count();
        (first..first + count).map(|a| Ipv4Addr::from(a as u32))
    }
}

fn mask(prefix: u8) -> u32 {
    match prefix {
        0 => 0,
        p => u32::MAX << (32 - u32::from(p)),
    }
}

/// CIDR notation: `192.168.1.0/24`.
impl fmt::Display for Subnet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", Ipv4Addr::from(self.network), self.prefix)
    }
}

/// One subnet to sweep from one of the interface's addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sweep {
    pub subnet: Subnet,
    /// The interface's own address in it: the sender of the requests.
    pub source: Ipv4Addr,
    /// Every host address but the interface's own.
    pub targets: Vec<Ipv4Addr>,
}

/// A subnet left out, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skip {
    pub subnet: Subnet,
    pub reason: String,
}

/// Which of an interface's subnets (its addresses with their prefixes) are swept, within a
/// budget of `max_addresses` for the interface. Subnets are taken in the order given, and one
/// that does not fit what is left is skipped whole: half a subnet would look like a complete
/// answer.
pub fn plan(addrs: &[(Ipv4Addr, u8)], max_addresses: u32) -> (Vec<Sweep>, Vec<Skip>) {
    let mut sweeps: Vec<Sweep> = Vec::new();
    let mut skips: Vec<Skip> = Vec::new();
    let mut left = u64::from(max_addresses);
    let own: Vec<Ipv4Addr> = addrs.iter().map(|(a, _)| *a).collect();
    for &(addr, prefix) in addrs {
        let subnet = Subnet::of(addr, prefix);
        // A second address in a subnet already planned adds nothing to sweep.
        if sweeps.iter().any(|s| s.subnet == subnet) || skips.iter().any(|s| s.subnet == subnet) {
            continue;
        }
        let count = subnet.host_count();
        if count <= 1 {
            skips.push(Skip {
                subnet,
                reason: "a /32 holds no other address".to_owned(),
            });
            continue;
        }
        if count > left {
            let reason = if count > u64::from(max_addresses) {
                format!(
                    "too large to sweep: {count} addresses, more than the {max_addresses} swept \
                     per interface ([scan] max_addresses in the daemon's configuration)"
                )
            } else {
                format!(
                    "does not fit: {count} addresses, and only {left} of the {max_addresses} \
                     swept per interface are left ([scan] max_addresses)"
                )
            };
            skips.push(Skip { subnet, reason });
            continue;
        }
        left -= count;
        sweeps.push(Sweep {
            subnet,
            source: addr,
            targets: subnet.hosts().filter(|a| !own.contains(a)).collect(),
        });
    }
    (sweeps, skips)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    #[test]
    fn subnets_mask_and_count() {
        let s = Subnet::of(ip("192.168.1.77"), 24);
        assert_eq!(s.to_string(), "192.168.1.0/24");
        assert_eq!(s.host_count(), 254);
        let hosts: Vec<_> = s.hosts().collect();
        assert_eq!(hosts.first(), Some(&ip("192.168.1.1")));
        assert_eq!(hosts.last(), Some(&ip("192.168.1.254")));
        assert_eq!(hosts.len(), 254);
        assert_eq!(Subnet::of(ip("192.168.1.255"), 24), s);
        assert_ne!(Subnet::of(ip("192.168.2.1"), 24), s);

        let p2p = Subnet::of(ip("10.0.0.1"), 31);
        assert_eq!(
            p2p.hosts().collect::<Vec<_>>(),
            [ip("10.0.0.0"), ip("10.0.0.1")]
        );
        assert_eq!(Subnet::of(ip("10.0.0.1"), 32).host_count(), 1);
        assert_eq!(Subnet::of(ip("10.0.0.1"), 30).hosts().count(), 2);
        assert_eq!(Subnet::of(ip("10.9.8.7"), 22).to_string(), "10.9.8.0/22");
        assert_eq!(Subnet::of(ip("10.9.8.7"), 22).host_count(), 1022);
        // The whole address space neither overflows nor panics.
        let all = Subnet::of(ip("1.2.3.4"), 0);
        assert_eq!(all.to_string(), "0.0.0.0/0");
        assert_eq!(all.host_count(), (1u64 << 32) - 2);
        assert_eq!(all.hosts().next(), Some(ip("0.0.0.1")));
        let last8 = Subnet::of(ip("255.255.255.250"), 29).hosts().last();
        assert_eq!(last8, Some(ip("255.255.255.254")));
        assert_eq!(Subnet::of(ip("1.2.3.4"), 40).host_count(), 1);
    }

    #[test]
    fn the_own_address_is_not_a_target() {
        let (sweeps, skips) = plan(&[(ip("10.1.2.3"), 29)], 1024);
        assert!(skips.is_empty());
        assert_eq!(sweeps[0].source, ip("10.1.2.3"));
        assert_eq!(sweeps[0].targets.len(), 5);
        assert!(!sweeps[0].targets.contains(&ip("10.1.2.3")));
    }

    #[test]
    fn large_subnets_are_skipped_whole_and_the_budget_is_per_interface() {
        let (sweeps, skips) = plan(
            &[
                (ip("192.168.1.5"), 24),
                (ip("172.16.0.1"), 16),
                (ip("192.168.1.6"), 24), // same subnet again
                (ip("10.0.0.1"), 22),    // 1022 > 1024 - 254
                (ip("10.1.0.1"), 23),    // 510 fits what is left
                (ip("10.2.0.1"), 32),
            ],
            1024,
        );
        let swept: Vec<String> = sweeps.iter().map(|s| s.subnet.to_string()).collect();
        assert_eq!(swept, ["192.168.1.0/24", "10.1.0.0/23"]);
        // The second address of the /24 is not a target either.
        assert!(!sweeps[0].targets.contains(&ip("192.168.1.6")));
        assert_eq!(sweeps[0].targets.len(), 252);
        let skipped: Vec<String> = skips.iter().map(|s| s.subnet.to_string()).collect();
        assert_eq!(skipped, ["172.16.0.0/16", "10.0.0.0/22", "10.2.0.1/32"]);
        let starts = |i: usize, with: &str| {
            assert!(skips[i].reason.starts_with(with), "{}", skips[i].reason);
        };
        starts(0, "too large to sweep: 65534 addresses, more than the 1024");
        starts(1, "does not fit: 1022 addresses, and only 770 of the 1024");
        assert!(skips[2].reason.contains("/32"));

        // A /22 fits the default budget exactly; a /21 does not.
        assert_eq!(plan(&[(ip("10.0.0.1"), 22)], 1024).0.len(), 1);
        assert_eq!(plan(&[(ip("10.0.0.1"), 21)], 1024).1.len(), 1);
        // A budget of 0 sweeps nothing.
        assert!(plan(&[(ip("10.0.0.1"), 30)], 0).0.is_empty());
    }
}
