//! One interface's ARP sweep: ask every target, twice for those that stay silent, and collect
//! who answered, within a deadline.

use std::collections::{BTreeMap, HashMap};
use std::io;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use super::arp;
use super::mac::Mac;
use super::socket::Link;
use super::subnet::Sweep;

/// The pace of a sweep.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    /// Between two requests: about what arp-scan sends by default, gentle on switches and
    /// Wi-Fi, and a /22 in a second.
    pub interval: Duration,
    /// How long answers are awaited after each round; the last waits longest, for hosts
    /// that were asleep (Wi-Fi power saving) and answer the repeat late.
    pub settle: [Duration; 2],
}

impl Default for Timing {
    fn default() -> Timing {
        Timing {
            interval: Duration::from_millis(1),
            settle: [Duration::from_millis(500), Duration::from_millis(1000)],
        }
    }
}

/// What a sweep saw.
#[derive(Debug, Default)]
pub struct Swept {
    /// Every host that answered, Raspberry Pi or not, with the first MAC it gave.
    pub answers: BTreeMap<Ipv4Addr, Mac>,
    /// Per sweep (in the order given): how many of its targets were asked at least once.
    pub asked: Vec<u32>,
}

/// Sweeps `sweeps` over `link` from `mac` until every target was asked (and the silent ones
/// asked again), `deadline` passes or `stop` says so. `on_asked` is called once for each
/// target when it is first asked.
pub fn sweep(
    link: &impl Link,
    mac: Mac,
    sweeps: &[Sweep],
    deadline: Instant,
    timing: Timing,
    on_asked: &dyn Fn(),
    stop: &dyn Fn() -> bool,
) -> io::Result<Swept> {
    // Which source address each target was asked from: a reply counts only when it answers
    // a question that was put (sender is a target, addressed to the source that asked).
    let asked_from: HashMap<Ipv4Addr, Ipv4Addr> = sweeps
        .iter()
        .flat_map(|s| s.targets.iter().map(move |t| (*t, s.source)))
        .collect();
    let mut out = Swept {
        answers: BTreeMap::new(),
        asked: vec![0; sweeps.len()],
    };
    let mut buf = [0u8; 2048];
    let mut listen = |until: Instant, out: &mut Swept| -> io::Result<()> {
        loop {
            let now = Instant::now();
            if now >= until {
                return Ok(());
            }
            if let Some(n) = link.recv(&mut buf, until - now)? {
                let Some(r) = arp::parse_reply(&buf[..n]) else {
                    continue;
                };
                if asked_from.get(&r.sender_ip) == Some(&r.target_ip)
                    && r.sender_mac != Mac::BROADCAST
                    && r.sender_mac != Mac([0; 6])
                {
                    out.answers.entry(r.sender_ip).or_insert(r.sender_mac);
                }
            }
        }
    };
    for (round, settle) in timing.settle.iter().enumerate() {
        let mut next = Instant::now();
        for (i, s) in sweeps.iter().enumerate() {
            for target in &s.targets {
                if out.answers.contains_key(target) {
                    continue;
                }
                if stop() || Instant::now() >= deadline {
                    return Ok(out);
                }
                link.send(&arp::request(mac, s.source, *target))?;
                if round == 0 {
                    out.asked[i] += 1;
                    on_asked();
                }
                next += timing.interval;
                listen(next.min(deadline), &mut out)?;
            }
        }
        listen((Instant::now() + *settle).min(deadline), &mut out)?;
        if out.answers.len() == asked_from.len() {
            break;
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scan::subnet::plan;
    use std::cell::{Cell, RefCell};
    use std::collections::VecDeque;

    /// A network of hosts that answer ARP requests for their addresses, some only from the
    /// n-th request on (a sleeping host).
    struct FakeNet {
        hosts: HashMap<Ipv4Addr, (Mac, u32)>,
        heard: RefCell<HashMap<Ipv4Addr, u32>>,
        queue: RefCell<VecDeque<Vec<u8>>>,
        sent: Cell<u32>,
    }

    impl FakeNet {
        fn new(hosts: &[(&str, &str, u32)]) -> FakeNet {
            FakeNet {
                hosts: hosts
                    .iter()
                    .map(|(ip, mac, after)| (ip.parse().unwrap(), (mac.parse().unwrap(), *after)))
                    .collect(),
                heard: Default::default(),
                queue: Default::default(),
                sent: Cell::new(0),
            }
        }
    }

    impl Link for FakeNet {
        fn send(&self, frame: &[u8]) -> io::Result<()> {
            self.sent.set(self.sent.get() + 1);
            let target = Ipv4Addr::new(frame[38], frame[39], frame[40], frame[41]);
            let mut heard = self.heard.borrow_mut();
            let n = heard.entry(target).or_default();
            *n += 1;
            if let Some((mac, after)) = self.hosts.get(&target) {
                if *n >= *after {
                    self.queue
                        .borrow_mut()
                        .push_back(arp::reply_to(frame, *mac).to_vec());
                }
            }
            // Noise on the wire: our own request echoed back, and an unsolicited reply.
            self.queue.borrow_mut().push_back(frame.to_vec());
            let mut stray = arp::reply_to(frame, "b8:27:eb:66:66:66".parse().unwrap());
            stray[28..32].copy_from_slice(&[192, 0, 2, 66]);
            self.queue.borrow_mut().push_back(stray.to_vec());
            Ok(())
        }

        fn recv(&self, buf: &mut [u8], wait: Duration) -> io::Result<Option<usize>> {
            match self.queue.borrow_mut().pop_front() {
                Some(f) => {
                    buf[..f.len()].copy_from_slice(&f);
                    Ok(Some(f.len()))
                }
                None => {
                    std::thread::sleep(wait.min(Duration::from_millis(2)));
                    Ok(None)
                }
            }
        }
    }

    const OURS: Mac = Mac([2, 0, 0, 0, 0, 1]);

    fn quick() -> Timing {
        Timing {
            interval: Duration::ZERO,
            settle: [Duration::from_millis(10), Duration::from_millis(10)],
        }
    }

    #[test]
    fn answers_are_collected_and_the_silent_asked_twice() {
        let net = FakeNet::new(&[
            ("10.0.0.5", "b8:27:eb:00:00:05", 1),
            ("10.0.0.6", "02:11:22:33:44:55", 1),
            // Asleep: answers only the second request.
            ("10.0.0.7", "dc:a6:32:00:00:07", 2),
        ]);
        let (sweeps, _) = plan(&[("10.0.0.1".parse().unwrap(), 28)], 1024);
        let asked = Cell::new(0);
        let out = sweep(
            &net,
            OURS,
            &sweeps,
            Instant::now() + Duration::from_secs(5),
            quick(),
            &|| asked.set(asked.get() + 1),
            &|| false,
        )
        .unwrap();
        let got: Vec<(String, String)> = out
            .answers
            .iter()
            .map(|(ip, mac)| (ip.to_string(), mac.to_string()))
            .collect();
        assert_eq!(
            got,
            [
                ("10.0.0.5".to_owned(), "b8:27:eb:00:00:05".to_owned()),
                ("10.0.0.6".to_owned(), "02:11:22:33:44:55".to_owned()),
                ("10.0.0.7".to_owned(), "dc:a6:32:00:00:07".to_owned()),
            ],
            "the stray reply from outside the sweep is not counted"
        );
        assert_eq!(out.asked, [13]);
        assert_eq!(asked.get(), 13, "progress counts each target once");
        // Thirteen asked, then the eleven that stayed silent asked again (one of them, the
        // sleeping host, answers then): answered hosts are not asked twice.
        assert_eq!(net.sent.get(), 13 + 11);
    }

    #[test]
    fn the_deadline_cuts_the_sweep_short_and_says_how_far_it_got() {
        let net = FakeNet::new(&[]);
        let (sweeps, _) = plan(&[("10.0.0.1".parse().unwrap(), 24)], 1024);
        let started = Instant::now();
        let out = sweep(
            &net,
            OURS,
            &sweeps,
            started + Duration::from_millis(100),
            Timing {
                interval: Duration::from_millis(5),
                settle: [Duration::from_secs(10), Duration::from_secs(10)],
            },
            &|| {},
            &|| false,
        )
        .unwrap();
        assert!(
            started.elapsed() < Duration::from_millis(600),
            "{:?}",
            started.elapsed()
        );
        assert!(out.asked[0] > 0 && out.asked[0] < 253, "{:?}", out.asked);
    }

    #[test]
    fn a_stop_request_ends_the_sweep() {
        let net = FakeNet::new(&[]);
        let (sweeps, _) = plan(&[("10.0.0.1".parse().unwrap(), 24)], 1024);
        let out = sweep(
            &net,
            OURS,
            &sweeps,
            Instant::now() + Duration::from_secs(60),
            quick(),
            &|| {},
            &|| net.sent.get() >= 10,
        )
        .unwrap();
        assert_eq!(out.asked, [10]);
    }
}
