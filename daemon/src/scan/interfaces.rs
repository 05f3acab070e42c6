//! The network interfaces a scan can sweep: up, not loopback, Ethernet-like (ARP), with an
//! IPv4 address. Link facts come from sysfs, addresses from getifaddrs (if-addrs).

use std::collections::BTreeMap;
use std::io;
use std::net::Ipv4Addr;
use std::path::Path;

use super::mac::Mac;

const SYS_NET: &str = "/sys/class/net";
const IFF_UP: u32 = 0x1;
const IFF_LOOPBACK: u32 = 0x8;
const IFF_NOARP: u32 = 0x80;
const ARPHRD_ETHER: u32 = 1;
const ARPHRD_LOOPBACK: u32 = 772;

/// An interface ready to be swept.
#[derive(Debug, Clone)]
pub struct Iface {
    pub name: String,
    pub index: u32,
    pub mac: Mac,
    /// Its IPv4 addresses with their prefix lengths, in the kernel's order.
    pub addrs: Vec<(Ipv4Addr, u8)>,
}

/// The link facts sysfs gives about an interface.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Link {
    pub flags: u32,
    pub kind: u32,
    pub operstate: String,
    pub mac: Option<Mac>,
    pub index: u32,
}

/// Why an interface cannot be swept, `None` when it can.
pub fn unusable(link: &Link, has_ipv4: bool) -> Option<String> {
    if link.flags & IFF_LOOPBACK != 0 || link.kind == ARPHRD_LOOPBACK {
        return Some("loopback".to_owned());
    }
    if link.flags & IFF_UP == 0 {
        return Some("down".to_owned());
    }
    // "unknown" is what interfaces without carrier reporting (dummy, some tunnels) say.
    if !matches!(link.operstate.as_str(), "up" | "unknown" | "dormant") {
        return Some(format!("no link (state {})", link.operstate));
    }
    if link.kind != ARPHRD_ETHER {
        return Some(format!(
            "not an Ethernet-like interface (link type {}): it has no ARP",
            link.kind
        ));
    }
    if link.flags & IFF_NOARP != 0 {
        return Some("ARP is off on it".to_owned());
    }
    match link.mac {
        None | Some(Mac([0, 0, 0, 0, 0, 0])) => return Some("no MAC address".to_owned()),
        Some(_) => {}
    }
    if !has_ipv4 {
        return Some("no IPv4 address".to_owned());
    }
    None
}

/// Whether `name` is a well-formed interface name (what the kernel accepts).
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() < 16
        && name != "."
        && name != ".."
        && name
            .bytes()
            .all(|b| b.is_ascii_graphic() && b != b'/' && b != b':')
}

/// Whether an interface of that (valid) name exists.
pub fn exists(name: &str) -> bool {
    Path::new(SYS_NET).join(name).exists()
}

fn read_link(name: &str) -> io::Result<Link> {
    let dir = Path::new(SYS_NET).join(name);
    let read = |attr: &str| std::fs::read_to_string(dir.join(attr)).map(|s| s.trim().to_owned());
    let number = |attr: &str| -> io::Result<u32> {
        let text = read(attr)?;
        let parsed = match text.strip_prefix("0x") {
            Some(hex) => u32::from_str_radix(hex, 16),
            None => text.parse(),
        };
        parsed.map_err(|_| io::Error::new(io::ErrorKind::InvalidData, format!("{attr}: {text:?}")))
    };
    Ok(Link {
        flags: number("flags")?,
        kind: number("type")?,
        operstate: read("operstate").unwrap_or_default(),
        mac: read("address").ok().and_then(|m| m.parse().ok()),
        index: number("ifindex")?,
    })
}

/// An interface that was named but cannot be swept, with why.
pub type Refused = (String, String);

/// The interfaces to sweep: `only` those named, or all. Named ones that cannot be swept are
/// returned with the reason; unnamed ones that cannot are left out silently (a machine has
/// many: docker0, tunnels, loopback).
pub fn find(only: Option<&[String]>) -> io::Result<(Vec<Iface>, Vec<Refused>)> {
    let mut v4: BTreeMap<String, Vec<(Ipv4Addr, u8)>> = BTreeMap::new();
    for i in if_addrs::get_if_addrs()? {
        if let if_addrs::IfAddr::V4(a) = i.addr {
            v4.entry(i.name).or_default().push((a.ip, a.prefixlen));
        }
    }
    let names: Vec<String> = match only {
        Some(names) => names.to_vec(),
        None => {
            let mut all: Vec<String> = std::fs::read_dir(SYS_NET)?
                .filter_map(|e| e.ok()?.file_name().into_string().ok())
                .collect();
            all.sort();
            all
        }
    };
    let mut ifaces = Vec::new();
    let mut skipped = Vec::new();
    for name in names {
        let addrs = v4.remove(&name).unwrap_or_default();
        let verdict = match read_link(&name) {
            Ok(link) => match unusable(&link, !addrs.is_empty()) {
                None => Ok((link.index, link.mac.unwrap_or(Mac([0; 6])))),
                Some(reason) => Err(reason),
            },
            Err(e) => Err(format!("cannot read its state: {e}")),
        };
        match verdict {
            Ok((index, mac)) => ifaces.push(Iface {
                name,
                index,
                mac,
                addrs,
            }),
            Err(reason) if only.is_some() => skipped.push((name, reason)),
            Err(_) => {}
        }
    }
    Ok((ifaces, skipped))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn eth() -> Link {
        Link {
            flags: 0x1003,
            kind: 1,
            operstate: "up".into(),
            mac: Some(Mac([2, 0, 0, 0, 0, 1])),
            index: 3,
        }
    }

    #[test]
    fn only_up_ethernet_like_interfaces_with_ipv4_are_swept() {
        assert_eq!(unusable(&eth(), true), None);
        let dummy = Link {
            operstate: "unknown".into(),
            ..eth()
        };
        assert_eq!(unusable(&dummy, true), None);
        let cases = [
            (
                Link {
                    flags: 0x9,
                    kind: 772,
                    ..eth()
                },
                "loopback",
            ),
            (
                Link {
                    flags: 0x1002,
                    ..eth()
                },
                "down",
            ),
            (
                Link {
                    operstate: "down".into(),
                    ..eth()
                },
                "no link",
            ),
            (
                Link {
                    kind: 65534,
                    ..eth()
                },
                "no ARP",
            ),
            (
                Link {
                    flags: 0x1083,
                    ..eth()
                },
                "ARP is off",
            ),
            (Link { mac: None, ..eth() }, "no MAC"),
            (
                Link {
                    mac: Some(Mac([0; 6])),
                    ..eth()
                },
                "no MAC",
            ),
        ];
        for (link, says) in cases {
            let why = unusable(&link, true).unwrap_or_default();
            assert!(why.contains(says), "{link:?}: {why:?}");
        }
        assert!(unusable(&eth(), false).unwrap().contains("IPv4"));
    }

    #[test]
    fn interface_names_follow_the_kernel_rules() {
        for ok in ["eth0", "enp0s31f6", "wlan0", "br-1234567890ab", "veth.5@x"] {
            assert!(valid_name(ok), "{ok}");
        }
        for bad in [
            "",
            ".",
            "..",
            "../eth0",
            "a/b",
            "eth 0",
            "eth0:1",
            "sixteen-chars-xx",
            "é",
            "a\n",
        ] {
            assert!(!valid_name(bad), "{bad:?}");
        }
    }

    #[test]
    fn loopback_of_this_machine_is_read_and_refused() {
        let lo = read_link("lo").expect("lo exists everywhere");
        assert!(unusable(&lo, true).unwrap().contains("loopback"));
        let (ifaces, skipped) = find(Some(&["lo".to_owned()])).unwrap();
        assert!(ifaces.is_empty());
        assert_eq!(skipped, [("lo".to_owned(), "loopback".to_owned())]);
        // Without names, loopback is left out without a word.
        let (ifaces, skipped) = find(None).unwrap();
        assert!(ifaces.iter().all(|i| i.name != "lo") && skipped.is_empty());
    }
}
