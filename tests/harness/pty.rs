//! Pseudo-terminals for the client's interactive paths (also used by the client's own tests):
//! the client runs on the slave side as an interactive user runs it; the test types on the
//! master side and reads what it showed.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A pseudo-terminal of 30 rows and 100 columns: (master, slave).
pub fn pty() -> (OwnedFd, OwnedFd) {
    use rustix::fs::{Mode, OFlags};
    use rustix::pty::{grantpt, openpt, ptsname, unlockpt, OpenptFlags};
    let master = openpt(OpenptFlags::RDWR | OpenptFlags::NOCTTY).unwrap();
    grantpt(&master).unwrap();
    unlockpt(&master).unwrap();
    let name = ptsname(&master, Vec::new()).unwrap();
    let slave = rustix::fs::open(
        name.as_c_str(),
        OFlags::RDWR | OFlags::NOCTTY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .unwrap();
    let ws = rustix::termios::Winsize {
        ws_row: 30,
        ws_col: 100,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    rustix::termios::tcsetwinsize(&slave, ws).unwrap();
    (master, slave)
}

/// Gives `cmd` the terminal as stdin, stdout and stderr.
pub fn attach(cmd: &mut Command, slave: &OwnedFd) {
    let dup = || Stdio::from(slave.try_clone().unwrap());
    cmd.stdin(dup()).stdout(dup()).stderr(dup());
}

/// What the terminal showed; the master reads until no process holds the slave any more.
pub fn screen(master: OwnedFd) -> String {
    let mut f = File::from(master);
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    // EIO marks the end on Linux once every slave descriptor is closed.
    while let Ok(n) = f.read(&mut chunk) {
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    String::from_utf8_lossy(&buf).into_owned()
}

/// The master side read as it goes, so a test can wait for a prompt before typing.
pub struct Typist {
    master: File,
    shown: Arc<Mutex<Vec<u8>>>,
    reader: Option<std::thread::JoinHandle<()>>,
}

impl Typist {
    pub fn new(master: OwnedFd) -> Typist {
        let master = File::from(master);
        let mut reading = master.try_clone().unwrap();
        let shown = Arc::new(Mutex::new(Vec::new()));
        let sink = shown.clone();
        let reader = std::thread::spawn(move || {
            let mut chunk = [0u8; 4096];
            while let Ok(n) = reading.read(&mut chunk) {
                if n == 0 {
                    break;
                }
                sink.lock().unwrap().extend_from_slice(&chunk[..n]);
            }
        });
        Typist {
            master,
            shown,
            reader: Some(reader),
        }
    }

    pub fn shown(&self) -> String {
        String::from_utf8_lossy(&self.shown.lock().unwrap()).into_owned()
    }

    /// Waits until the terminal has shown `text` `times` times in all.
    pub fn wait_for(&self, text: &str, times: usize) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while self.shown().matches(text).count() < times {
            assert!(
                Instant::now() < deadline,
                "{text:?} not shown {times} times: {:?}",
                self.shown()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn type_keys(&mut self, keys: &[u8]) {
        self.master.write_all(keys).unwrap();
    }

    /// Everything shown, once every slave descriptor is closed.
    pub fn finish(mut self) -> String {
        if let Some(r) = self.reader.take() {
            r.join().unwrap();
        }
        self.shown()
    }
}
