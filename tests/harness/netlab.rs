//! A private network of namespaces for the LAN scan: a bridge in the root namespace (where the
//! daemon runs) and test hosts, each in a network namespace of its own behind a veth pair,
//! with the MAC addresses the test gives them. Nothing here is routed anywhere: the bridge
//! has only private test subnets and no other ports, so no frame leaves the machine.
//!
//! Everything is removed when the lab is dropped (also on a failed assertion), and whatever a
//! killed earlier run left is removed before a new lab is built.

use std::process::Command;

/// Names start with this, so leftovers are recognisable (interface names are at most 15
/// characters).
const PREFIX: &str = "pibscan";
/// Marks the lines a lab adds to /etc/hosts.
const HOSTS_MARK: &str = "# pi-builder scan test";
const HOSTS: &str = "/etc/hosts";

/// One test host: its namespace, address (CIDR) and MAC, and a name for /etc/hosts.
pub struct Host {
    pub cidr: &'static str,
    pub mac: &'static str,
    pub name: Option<&'static str>,
}

impl Host {
    pub fn ip(&self) -> &'static str {
        self.cidr.split('/').next().unwrap()
    }
}

pub struct NetLab {
    pub bridge: String,
    namespaces: Vec<String>,
}

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("run ip");
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn ip_quiet(args: &[&str]) {
    let _ = Command::new("ip").args(args).output();
}

impl NetLab {
    /// A bridge with `bridge_cidrs` (the daemon's side) and one namespace per host.
    pub fn new(bridge_cidrs: &[&str], hosts: &[Host]) -> NetLab {
        remove_leftovers();
        let mut lab = NetLab {
            bridge: format!("{PREFIX}-br"),
            namespaces: Vec::new(),
        };
        ip(&["link", "add", &lab.bridge, "type", "bridge"]);
        for cidr in bridge_cidrs {
            ip(&["addr", "add", cidr, "dev", &lab.bridge]);
        }
        ip(&["link", "set", &lab.bridge, "up"]);
        for (i, host) in hosts.iter().enumerate() {
            let ns = format!("{PREFIX}-n{i}");
            let outside = format!("{PREFIX}-h{i}");
            ip(&["netns", "add", &ns]);
            lab.namespaces.push(ns.clone());
            ip(&[
                "link", "add", &outside, "type", "veth", "peer", "name", "eth0", "netns", &ns,
            ]);
            ip(&["link", "set", &outside, "master", &lab.bridge, "up"]);
            ip(&["-n", &ns, "link", "set", "eth0", "address", host.mac]);
            ip(&["-n", &ns, "addr", "add", host.cidr, "dev", "eth0"]);
            ip(&["-n", &ns, "link", "set", "eth0", "up"]);
        }
        let names: Vec<String> = hosts
            .iter()
            .filter_map(|h| h.name.map(|n| format!("{} {n} {HOSTS_MARK}", h.ip())))
            .collect();
        if !names.is_empty() {
            let mut text = std::fs::read_to_string(HOSTS).unwrap_or_default();
            if !text.is_empty() && !text.ends_with('\n') {
                text.push('\n');
            }
            for line in names {
                text.push_str(&line);
                text.push('\n');
            }
            // In place, not renamed over: /etc/hosts may be a bind mount in a container.
            std::fs::write(HOSTS, text).expect("add the test names to /etc/hosts");
        }
        lab
    }
}

/// The namespaces and interfaces of a lab that exist now.
fn lab_namespaces() -> Vec<String> {
    ip_lines(&["netns", "list"])
        .iter()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|n| n.starts_with(PREFIX))
        .map(str::to_owned)
        .collect()
}

fn lab_links() -> Vec<String> {
    ip_lines(&["-o", "link", "show"])
        .iter()
        .filter_map(|l| l.split(": ").nth(1))
        .filter_map(|n| n.split('@').next())
        .filter(|n| n.starts_with(PREFIX))
        .map(str::to_owned)
        .collect()
}

fn ip_lines(args: &[&str]) -> Vec<String> {
    let out = Command::new("ip").args(args).output().expect("run ip");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_owned)
        .collect()
}

fn hosts_has_lab_lines() -> bool {
    std::fs::read_to_string(HOSTS)
        .unwrap_or_default()
        .contains(HOSTS_MARK)
}

/// Removes the lab's lines from /etc/hosts, its namespaces (which takes their veth ends and
/// the peers with them) and the bridge.
fn remove_leftovers() {
    if hosts_has_lab_lines() {
        let text = std::fs::read_to_string(HOSTS).unwrap_or_default();
        let kept: String = text
            .lines()
            .filter(|l| !l.contains(HOSTS_MARK))
            .map(|l| format!("{l}\n"))
            .collect();
        let _ = std::fs::write(HOSTS, kept);
    }
    for ns in lab_namespaces() {
        ip_quiet(&["netns", "del", &ns]);
    }
    for link in lab_links() {
        ip_quiet(&["link", "del", &link]);
    }
}

impl Drop for NetLab {
    fn drop(&mut self) {
        for ns in &self.namespaces {
            ip_quiet(&["netns", "del", ns]);
        }
        ip_quiet(&["link", "del", &self.bridge]);
        remove_leftovers();
    }
}

/// Whatever of a lab is still there (for the test's own check of its cleanup).
pub fn leftovers() -> Vec<String> {
    let mut found = lab_namespaces();
    found.extend(lab_links());
    if hosts_has_lab_lines() {
        found.push(format!("a line in {HOSTS}"));
    }
    found
}
