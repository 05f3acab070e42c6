//! pib-test-fuzz: calls pi-builder's bus API with random and mutated messages, as whatever
//! user runs it, and prints one JSON line that counts what came back.
//!
//!   pib-test-fuzz SEED MAX_CALLS MAX_SECS [JOB_PATH...]
//!
//! The method list comes from the introspection XML (Manager and Job) plus the standard
//! interfaces every object has; half the calls take arguments of the method's own signature
//! with hostile values, the rest arguments of random signatures, random method and interface
//! names, and random object paths. File descriptors are pipes (either end, some never
//! written), /dev/null, directories, O_PATH descriptors and sockets. Some calls are sent and
//! their connection dropped at once, as a client that disconnects mid-call. tests/fuzz.rs runs
//! this as unprivileged users and checks the daemon afterwards.

use std::collections::{BTreeMap, HashMap};
use std::os::fd::OwnedFd;
use std::time::{Duration, Instant};

use pib_dbus_interfaces::names::{BUS_NAME, MANAGER_PATH};
use pib_dbus_interfaces::{JOB_XML, MANAGER_XML};
use serde_json::json;
use zbus::{Connection, ObjectPath, Structure, Variant};

/// No single call may take longer: everything the daemon does for a caller without a grant
/// is validation and one polkit question.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// splitmix64: small, seedable and good enough to pick among choices.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn chance(&mut self, percent: usize) -> bool {
        self.below(100) < percent
    }
    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

/// One method of the contract: interface, name, input signature (one code per argument).
#[derive(Clone)]
struct Method {
    interface: String,
    name: String,
    args: Vec<String>,
}

fn methods_of(xml: &str) -> (Vec<Method>, Vec<(String, String)>) {
    let doc = roxmltree::Document::parse_with_options(
        xml,
        roxmltree::ParsingOptions {
            allow_dtd: true,
            ..Default::default()
        },
    )
    .expect("introspection XML");
    let mut methods = Vec::new();
    let mut properties = Vec::new();
    for iface in doc.descendants().filter(|n| n.has_tag_name("interface")) {
        let iname = iface.attribute("name").unwrap().to_owned();
        for m in iface.children().filter(|n| n.has_tag_name("method")) {
            let args = m
                .children()
                .filter(|a| a.has_tag_name("arg") && a.attribute("direction") != Some("out"))
                .map(|a| a.attribute("type").unwrap().to_owned())
                .collect();
            methods.push(Method {
                interface: iname.clone(),
                name: m.attribute("name").unwrap().to_owned(),
                args,
            });
        }
        for p in iface.children().filter(|n| n.has_tag_name("property")) {
            properties.push((iname.clone(), p.attribute("name").unwrap().to_owned()));
        }
    }
    (methods, properties)
}

/// The standard interfaces every exported object answers.
fn standard_methods() -> Vec<Method> {
    let m = |i: &str, n: &str, a: &[&str]| Method {
        interface: i.to_owned(),
        name: n.to_owned(),
        args: a.iter().map(|s| s.to_string()).collect(),
    };
    vec![
        m("org.freedesktop.DBus.Properties", "Get", &["s", "s"]),
        m("org.freedesktop.DBus.Properties", "GetAll", &["s"]),
        m("org.freedesktop.DBus.Properties", "Set", &["s", "s", "v"]),
        m("org.freedesktop.DBus.Introspectable", "Introspect", &[]),
        m("org.freedesktop.DBus.Peer", "Ping", &[]),
        m("org.freedesktop.DBus.Peer", "GetMachineId", &[]),
    ]
}

/// Option keys the daemon knows (so values get past the unknown-key check sometimes), and
/// some it does not.
const KEYS: &[&str] = &[
    "arch",
    "distro",
    "board",
    "suite",
    "refresh",
    "stages",
    "hostname",
    "locale",
    "timezone",
    "repo_url",
    "args",
    "no_cache",
    "name",
    "base",
    "all_users",
    "bases",
    "tty",
    "rows",
    "cols",
    "boot_size",
    "size",
    "root_headroom",
    "data_size",
    "data_label",
    "compress",
    "all",
    "bmap",
    "compression",
    "verify",
    "eject",
    "everything",
    "force",
    "privileged",
    "network",
    "",
    "-v",
];

/// Strings a hostile caller would try, plus plausible ones.
const STRINGS: &[&str] = &[
    "",
    "..",
    "../x",
    "../../etc/shadow",
    "/etc/passwd",
    "/dev/sda",
    "/dev/loop0",
    "/dev/null",
    "-rf",
    "--privileged",
    "x\ny",
    "a b",
    "__init__",
    "__cleanup__",
    "os",
    "debian",
    "arch",
    "aarch64",
    "arm",
    "rpi4",
    "pibtest-fuzz-nonexistent",
    "FROM scratch\nRUN --security=insecure id",
    "# syntax=docker/dockerfile:1",
    "file:///etc/shadow",
    "http://127.0.0.1:1/x",
    "\u{202e}txt.exe",
    "é",
    "*",
    "%s%s%n",
];

struct Fds {
    kept: Vec<OwnedFd>,
}

impl Fds {
    /// Opens a descriptor of a random kind; all stay open until the call is over.
    fn make(&mut self, rng: &mut Rng) {
        use rustix::fs::{open, Mode, OFlags};
        let fd: OwnedFd = match rng.below(7) {
            0 | 1 => {
                let (r, w) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC).unwrap();
                let (passed, other) = if rng.chance(50) { (r, w) } else { (w, r) };
                // Kept open, the other end makes a pipe that never ends; dropped, one that
                // closes early.
                if rng.chance(50) {
                    self.kept.push(other);
                }
                passed
            }
            2 => open("/dev/null", OFlags::RDWR | OFlags::CLOEXEC, Mode::empty()).unwrap(),
            3 => open(
                "/tmp",
                OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
                Mode::empty(),
            )
            .unwrap(),
            4 => open(
                "/etc/hostname",
                OFlags::PATH | OFlags::CLOEXEC,
                Mode::empty(),
            )
            .unwrap(),
            5 => {
                let (a, b) = std::os::unix::net::UnixStream::pair().unwrap();
                self.kept.push(OwnedFd::from(b));
                OwnedFd::from(a)
            }
            _ => open(
                "/etc/hostname",
                OFlags::RDONLY | OFlags::CLOEXEC,
                Mode::empty(),
            )
            .unwrap(),
        };
        self.kept.push(fd);
    }
}

fn random_string(rng: &mut Rng) -> String {
    match rng.below(6) {
        0 => "a".repeat(1 + rng.below(12_000)),
        1 => {
            let mut s: String = rng.pick(STRINGS).to_string();
            let more = *rng.pick(STRINGS);
            s.push_str(more);
            s
        }
        2 => (0..rng.below(40))
            .map(|_| char::from(b' ' + rng.below(95) as u8))
            .collect(),
        _ => rng.pick(STRINGS).to_string(),
    }
}

fn random_path(rng: &mut Rng, jobs: &[String]) -> String {
    match rng.below(8) {
        0..=2 => MANAGER_PATH.to_owned(),
        3 if !jobs.is_empty() => rng.pick(jobs).clone(),
        4 => format!("{MANAGER_PATH}/jobs/{}", rng.below(2000)),
        5 => "/".to_owned(),
        _ => {
            let mut p = String::new();
            for _ in 0..1 + rng.below(5) {
                p.push('/');
                let seg: String = (0..1 + rng.below(10))
                    .map(|_| *rng.pick(&['a', 'Z', '0', '_', 'j', 'o', 'b', 's']))
                    .collect();
                p.push_str(&seg);
            }
            p
        }
    }
}

/// A value of the given single complete type, with hostile contents.
fn value_for<'a>(code: &str, rng: &mut Rng, fds: &'a [OwnedFd], depth: usize) -> Variant<'a> {
    match code {
        "s" => Variant::from(random_string(rng)),
        "as" => {
            // Now and then 100,000 entries, as a caller listing that many stages.
            let most = if rng.chance(3) { 100_000 } else { 6 };
            let n = rng.below(most);
            if n > 100 {
                // Short names: the count is the attack here, not the size of each.
                Variant::from((0..n).map(|i| format!("s{i}")).collect::<Vec<_>>())
            } else {
                Variant::from((0..n).map(|_| random_string(rng)).collect::<Vec<_>>())
            }
        }
        "a{sv}" => {
            let mut map: HashMap<String, Variant<'a>> = HashMap::new();
            for _ in 0..rng.below(5) {
                let key = if rng.chance(80) {
                    rng.pick(KEYS).to_string()
                } else {
                    random_string(rng)
                };
                map.insert(key, random_value(rng, fds, depth + 1));
            }
            Variant::from(map)
        }
        "h" => Variant::Fd(zbus::Fd::from(&fds[rng.below(fds.len())])),
        "v" => Variant::Variant(Box::new(random_value(rng, fds, depth + 1))),
        _ => random_value(rng, fds, depth),
    }
}

/// A value of a random type, nested up to a few levels (deeper nesting is the bus library's
/// job to refuse, and tests/bad_input.rs covers it).
fn random_value<'a>(rng: &mut Rng, fds: &'a [OwnedFd], depth: usize) -> Variant<'a> {
    let leaf = depth >= 4;
    match rng.below(if leaf { 12 } else { 17 }) {
        0 => Variant::from(rng.next() as u8),
        1 => Variant::from(rng.chance(50)),
        2 => Variant::from(rng.next() as i16),
        3 => Variant::from(rng.next() as u32),
        4 => Variant::from(rng.next() as i64),
        5 => Variant::from(rng.next()),
        6 => Variant::from(f64::from_bits(rng.next())),
        7 | 8 => Variant::from(random_string(rng)),
        9 => Variant::ObjectPath(
            ObjectPath::try_from(random_path(rng, &[]))
                .unwrap_or_else(|_| ObjectPath::try_from("/").unwrap()),
        ),
        10 => Variant::Fd(zbus::Fd::from(&fds[rng.below(fds.len())])),
        11 => Variant::from(rng.next() as i32),
        12 => value_for("as", rng, fds, depth),
        13 => value_for("a{sv}", rng, fds, depth),
        14 => Variant::Variant(Box::new(random_value(rng, fds, depth + 1))),
        15 => Variant::from(
            (0..rng.below(4))
                .map(|_| random_value(rng, fds, depth + 1))
                .collect::<Vec<_>>(),
        ),
        _ => {
            let mut b = Structure::builder();
            for _ in 0..1 + rng.below(3) {
                b = b.append_field(random_value(rng, fds, depth + 1));
            }
            Variant::Structure(b.build().unwrap())
        }
    }
}

/// The arguments of one call: the method's own signature (mostly), or random ones.
fn arguments<'a>(
    method: &Method,
    rng: &mut Rng,
    fds: &'a [OwnedFd],
    properties: &[(String, String)],
) -> Vec<Variant<'a>> {
    if rng.chance(60) {
        method
            .args
            .iter()
            .enumerate()
            .map(|(i, code)| {
                // Property calls name real interfaces and properties most of the time.
                if method.interface == "org.freedesktop.DBus.Properties" && rng.chance(70) {
                    let (iface, prop) = rng.pick(properties);
                    match i {
                        0 => return Variant::from(iface.clone()),
                        1 => return Variant::from(prop.clone()),
                        _ => {}
                    }
                }
                value_for(code, rng, fds, 0)
            })
            .collect()
    } else {
        (0..rng.below(7))
            .map(|_| random_value(rng, fds, 0))
            .collect()
    }
}

/// A method name slightly off, or made up.
fn mutated_name(rng: &mut Rng, name: &str) -> String {
    match rng.below(4) {
        0 => name.to_lowercase(),
        1 => format!("{name}X"),
        2 => name.chars().rev().collect(),
        _ => format!("M{}", rng.below(1000)),
    }
}

#[derive(Default)]
struct Tally {
    calls: u64,
    /// Per "interface.method": outcome ("ok" or the error name) and how often.
    outcomes: BTreeMap<String, BTreeMap<String, u64>>,
    timeouts: Vec<String>,
    dropped_mid_call: u64,
    /// Calls the client library or the bus refused before the daemon saw them.
    not_sent: u64,
}

impl Tally {
    fn note(&mut self, what: &str, outcome: String) {
        *self
            .outcomes
            .entry(what.to_owned())
            .or_default()
            .entry(outcome)
            .or_default() += 1;
    }
}

fn outcome_of(result: &zbus::Result<zbus::Message>) -> Option<String> {
    match result {
        Ok(_) => Some("ok".to_owned()),
        Err(zbus::Error::MethodError(name, _, _)) => Some(name.to_string()),
        Err(zbus::Error::FDO(e)) => Some(zbus::DBusError::name(&**e).to_string()),
        // Serialization or size limits on our side: the message never left.
        Err(_) => None,
    }
}

async fn fuzz(seed: u64, max_calls: u64, max_secs: u64, jobs: Vec<String>) -> Tally {
    let mut rng = Rng(seed);
    let (mut methods, mut properties) = methods_of(MANAGER_XML);
    let (job_methods, job_properties) = methods_of(JOB_XML);
    methods.extend(job_methods);
    methods.extend(standard_methods());
    properties.extend(job_properties);
    properties.push(("org.pibuilder.PiBuilder1.Nope".into(), "Version".into()));

    let deadline = Instant::now() + Duration::from_secs(max_secs);
    let mut tally = Tally::default();
    let mut conn = Connection::system().await.expect("system bus");
    while tally.calls < max_calls && Instant::now() < deadline {
        tally.calls += 1;
        let mut fds = Fds { kept: Vec::new() };
        for _ in 0..1 + rng.below(3) {
            fds.make(&mut rng);
        }
        let method = rng.pick(&methods).clone();
        let args = arguments(&method, &mut rng, &fds.kept, &properties);
        let name = if rng.chance(8) {
            mutated_name(&mut rng, &method.name)
        } else {
            method.name.clone()
        };
        let interface = match rng.below(20) {
            0 => None,
            1 => Some(format!("{}.Nope", method.interface)),
            _ => Some(method.interface.clone()),
        };
        let path = random_path(&mut rng, &jobs);
        let label = format!("{}.{}", interface.as_deref().unwrap_or("(none)"), name);
        let body = if args.is_empty() {
            None
        } else {
            let mut b = Structure::builder();
            for a in args {
                b = b.append_field(a);
            }
            Some(b.build().expect("structure"))
        };

        // A client that sends and disconnects at once.
        if rng.chance(3) {
            let mut builder =
                zbus::Message::method_call(path.as_str(), name.as_str()).destination(BUS_NAME);
            if let Some(i) = &interface {
                builder = builder.interface(i.as_str());
            }
            let built = match &body {
                Some(s) => builder.build(s),
                None => builder.build(&()),
            };
            match built {
                Ok(msg) => {
                    let fresh = Connection::system().await.expect("system bus");
                    if fresh.send(&msg).await.is_ok() {
                        tally.dropped_mid_call += 1;
                    } else {
                        tally.not_sent += 1;
                    }
                    drop(fresh);
                }
                Err(_) => tally.not_sent += 1,
            }
            continue;
        }

        let call = async {
            match &body {
                Some(s) => {
                    conn.call_method(
                        Some(BUS_NAME),
                        path.as_str(),
                        interface.as_deref(),
                        name.as_str(),
                        s,
                    )
                    .await
                }
                None => {
                    conn.call_method(
                        Some(BUS_NAME),
                        path.as_str(),
                        interface.as_deref(),
                        name.as_str(),
                        &(),
                    )
                    .await
                }
            }
        };
        match tokio::time::timeout(CALL_TIMEOUT, call).await {
            Err(_) => tally.timeouts.push(format!("{label} on {path}")),
            Ok(result) => match outcome_of(&result) {
                Some(outcome) => tally.note(&label, outcome),
                None => {
                    tally.not_sent += 1;
                    // The bus drops a connection that sent something it refuses; start over.
                    conn = Connection::system().await.expect("system bus");
                }
            },
        }
        // A new unique name now and then, as many short-lived clients would have.
        if tally.calls % 500 == 0 {
            conn = Connection::system().await.expect("system bus");
        }
    }
    tally
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let num = |i: usize| -> u64 {
        args.get(i)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("usage: pib-test-fuzz SEED MAX_CALLS MAX_SECS [JOB...]"))
    };
    let (seed, max_calls, max_secs) = (num(0), num(1), num(2));
    let jobs = args[3..].to_vec();
    let tally = fuzz(seed, max_calls, max_secs, jobs).await;
    println!(
        "{}",
        json!({
            "seed": seed,
            "calls": tally.calls,
            "outcomes": tally.outcomes,
            "timeouts": tally.timeouts,
            "dropped_mid_call": tally.dropped_mid_call,
            "not_sent": tally.not_sent,
        })
    );
}
