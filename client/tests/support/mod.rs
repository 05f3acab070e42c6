//! A private bus and a stand-in for pib-daemon that follows a script, so that the client's job
//! following (signals, log pipe, Ctrl-C, exit codes) is tested without root, polkit or the real
//! daemon. It implements the contract from the XML, not the daemon's code.

#![allow(dead_code)]

use std::collections::HashMap;
use std::fs::File;
use std::future::Future;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::path::PathBuf;
use std::pin::Pin;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use pib_dbus_interfaces::names::{BUS_NAME, JOBS_PATH, MANAGER_PATH};
use pib_dbus_interfaces::DBusError;
use tokio::sync::Notify;
use zbus::message::{Flags, Header};
use zbus::object_server::SignalEmitter;
use zbus::{interface, Connection, ObjectServer, OwnedObjectPath, OwnedVariant, Variant};

/// A dbus-daemon of our own, on a socket in a fresh directory.
pub struct PrivateBus {
    daemon: Child,
    dir: PathBuf,
    pub address: String,
}

impl PrivateBus {
    /// Starts the bus; dbus-daemon is a declared dependency of the test setup (make dev-up),
    /// so its absence fails the test rather than skipping it.
    pub fn start() -> PrivateBus {
        static N: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "pib-client-test-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let address = format!("unix:path={}", dir.join("bus").display());
        let mut daemon = Command::new("dbus-daemon")
            .args(["--session", "--nofork", "--nopidfile", "--print-address=1"])
            .arg(format!("--address={address}"))
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start dbus-daemon ({e}): run `make dev-up`"));
        // The address line says the bus is listening.
        let mut line = String::new();
        BufReader::new(daemon.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert!(line.starts_with("unix:"), "dbus-daemon said {line:?}");
        PrivateBus {
            daemon,
            dir,
            address,
        }
    }

    /// A fresh directory for the test's files, removed with the bus.
    pub fn scratch(&self, name: &str) -> PathBuf {
        let dir = self.dir.join(name);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    /// The client, pointed at this bus as if it were the system bus.
    pub fn client(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_pib-client"));
        cmd.args(args)
            .env("DBUS_SYSTEM_BUS_ADDRESS", &self.address)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        cmd
    }
}

/// The client on the slave side of a new terminal, as an interactive user runs it.
pub fn on_terminal(bus: &PrivateBus, args: &[&str], slave: &OwnedFd) -> Child {
    let mut cmd = bus.client(args);
    pib_tests::pty::attach(&mut cmd, slave);
    cmd.spawn().unwrap()
}

impl Drop for PrivateBus {
    fn drop(&mut self) {
        let _ = self.daemon.kill();
        let _ = self.daemon.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// What the stand-in does with a job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Script {
    /// Progress, a log line, then success.
    Succeed,
    /// The job has ended before its path is returned: only a late read can see it.
    AlreadyDone,
    /// Ends failed with Conflict.
    Fail,
    /// Runs until cancelled.
    UntilCancelled,
    /// The service leaves the bus mid-job.
    Vanish,
    /// Every job-creating call is refused with NotAuthorized.
    Deny,
    /// Runs on, whatever Cancel says.
    Stubborn,
}

pub type Calls = Arc<Mutex<Vec<String>>>;
/// The options dictionary of every call that took one, with the method's name.
pub type Options = Arc<Mutex<Vec<(String, HashMap<String, OwnedVariant>)>>>;

pub struct Stand {
    pub conn: Connection,
    pub calls: Calls,
    pub options: Options,
}

impl Stand {
    /// The options of the last call of `method`.
    pub fn options_of(&self, method: &str) -> HashMap<String, OwnedVariant> {
        let all = self.options.lock().unwrap();
        let (_, o) = all
            .iter()
            .rev()
            .find(|(m, _)| m == method)
            .unwrap_or_else(|| panic!("{method} was not called"));
        o.iter()
            .map(|(k, v)| (k.clone(), v.try_clone().unwrap()))
            .collect()
    }
}

/// The one image the stand-in knows, and what RemoveImage and Shell accept.
pub const IMAGE: &str = "debian-rpi4-aarch64";
/// What the stand-in's shell exits with.
pub const SHELL_EXIT: i32 = 7;

pub async fn serve(address: &str, script: Script) -> Stand {
    let calls = Calls::default();
    let options = Options::default();
    let conn = zbus::connection::Builder::address(address)
        .build()
        .await
        .unwrap();
    let manager = Manager {
        script,
        calls: calls.clone(),
        options: options.clone(),
        jobs: Vec::new(),
    };
    conn.object_server()
        .at(MANAGER_PATH, manager)
        .await
        .unwrap();
    conn.request_name(BUS_NAME).await.unwrap();
    Stand {
        conn,
        calls,
        options,
    }
}

fn flags(h: &Header<'_>) -> &'static str {
    if h.primary().flags().contains(Flags::ALLOW_INTERACTIVE_AUTH) {
        "interactive"
    } else {
        "silent"
    }
}

struct Manager {
    script: Script,
    calls: Calls,
    options: Options,
    jobs: Vec<OwnedObjectPath>,
}

#[interface(name = "org.pibuilder.PiBuilder1.Manager")]
impl Manager {
    #[zbus(property)]
    fn version(&self) -> String {
        "0.0.0-stand-in".into()
    }

    fn get_status(&self, #[zbus(header)] h: Header<'_>) -> HashMap<String, OwnedVariant> {
        self.calls
            .lock()
            .unwrap()
            .push(format!("GetStatus {}", flags(&h)));
        let mut aarch64: HashMap<&str, Variant<'_>> = HashMap::new();
        aarch64.insert("arch", "aarch64".into());
        aarch64.insert("state", "registered".into());
        aarch64.insert("name", "pib-qemu-aarch64".into());
        aarch64.insert("interpreter", "/usr/bin/qemu-aarch64-static".into());
        aarch64.insert("flags", "F".into());
        aarch64.insert("enabled", true.into());
        aarch64.insert("usable", true.into());
        let entries = vec![aarch64];
        let mut s = HashMap::new();
        let mut put = |k: &str, v: Variant<'_>| {
            s.insert(k.to_owned(), OwnedVariant::try_from(v).unwrap());
        };
        put("version", "0.0.0-stand-in".into());
        put("docker_reachable", false.into());
        put("docker_error", "connection refused".into());
        put("binfmt_mounted", true.into());
        put("binfmt", entries.into());
        put("running_jobs", 0u32.into());
        s
    }

    async fn register_binfmt(
        &mut self,
        #[zbus(header)] h: Header<'_>,
        #[zbus(object_server)] server: &ObjectServer,
        #[zbus(connection)] conn: &Connection,
        options: HashMap<String, OwnedVariant>,
    ) -> Result<OwnedObjectPath, DBusError> {
        self.start_job(&h, server, conn, "binfmt-register", options)
            .await
    }

    async fn unregister_binfmt(
        &mut self,
        #[zbus(header)] h: Header<'_>,
        #[zbus(object_server)] server: &ObjectServer,
        #[zbus(connection)] conn: &Connection,
        options: HashMap<String, OwnedVariant>,
    ) -> Result<OwnedObjectPath, DBusError> {
        self.start_job(&h, server, conn, "binfmt-unregister", options)
            .await
    }

    fn list_jobs(&self) -> Vec<OwnedObjectPath> {
        self.jobs.clone()
    }

    fn list_bases(&self, #[zbus(header)] h: Header<'_>) -> Vec<HashMap<String, OwnedVariant>> {
        self.record(&h, "");
        vec![dict(&[
            ("name", "pib-base/debian-aarch64:bookworm".into()),
            ("id", "sha256:0123456789abcdef".into()),
            ("distro", "debian".into()),
            ("arch", "aarch64".into()),
            ("board", "".into()),
            (
                "origin",
                "mmdebstrap bookworm http://deb.example/debian".into(),
            ),
            ("digest", "ab12".into()),
            ("created", 1_700_000_000_000_000u64.into()),
            ("size", (300u64 << 20).into()),
        ])]
    }

    async fn fetch_base(
        &mut self,
        #[zbus(header)] h: Header<'_>,
        #[zbus(object_server)] server: &ObjectServer,
        #[zbus(connection)] conn: &Connection,
        options: HashMap<String, OwnedVariant>,
    ) -> Result<OwnedObjectPath, DBusError> {
        self.record(&h, "");
        self.refuse_if_denied()?;
        let distro = string(&options, "distro");
        let arch = string(&options, "arch");
        self.keep_options(&h, options);
        let work = async move {
            Ok(done(
                &[
                    ("image", format!("pib-base/{distro}-{arch}:fetched").into()),
                    ("id", "sha256:feedfacecafebeef".into()),
                ],
                "fetched",
            ))
        };
        self.start_work(server, conn, "base-fetch", Box::pin(work))
            .await
    }

    async fn import_base(
        &mut self,
        #[zbus(header)] h: Header<'_>,
        #[zbus(object_server)] server: &ObjectServer,
        #[zbus(connection)] conn: &Connection,
        tarball: zbus::OwnedFd,
        options: HashMap<String, OwnedVariant>,
    ) -> Result<OwnedObjectPath, DBusError> {
        self.record(&h, kind(&tarball));
        self.refuse_if_denied()?;
        self.keep_options(&h, options);
        let calls = self.calls.clone();
        let fd = OwnedFd::from(tarball);
        let work = async move {
            let bytes = tokio::task::spawn_blocking(move || read_all(fd))
                .await
                .unwrap();
            calls
                .lock()
                .unwrap()
                .push(format!("tarball: {}", String::from_utf8_lossy(&bytes)));
            Ok(done(
                &[
                    ("image", "pib-base/imported:local".into()),
                    ("id", "sha256:1111222233334444".into()),
                ],
                "imported",
            ))
        };
        self.start_work(server, conn, "base-import", Box::pin(work))
            .await
    }

    /// Reads the context to its end and checks that it is a whole tar with a Dockerfile.part
    /// for every stage named in the options.
    async fn build(
        &mut self,
        #[zbus(header)] h: Header<'_>,
        #[zbus(object_server)] server: &ObjectServer,
        #[zbus(connection)] conn: &Connection,
        context: zbus::OwnedFd,
        options: HashMap<String, OwnedVariant>,
    ) -> Result<OwnedObjectPath, DBusError> {
        self.record(&h, kind(&context));
        self.refuse_if_denied()?;
        let stages: Vec<String> = options
            .get("stages")
            .map(|v| Vec::<String>::try_from(v.try_clone().unwrap()).unwrap())
            .unwrap_or_default();
        let name = string(&options, "name");
        self.keep_options(&h, options);
        let calls = self.calls.clone();
        let fd = OwnedFd::from(context);
        let work = async move {
            let bytes = tokio::task::spawn_blocking(move || read_all(fd))
                .await
                .unwrap();
            let entries = tar_entries(&bytes).map_err(|e| {
                (
                    "org.pibuilder.PiBuilder1.Error.InvalidArgs",
                    format!("the context is not a tar: {e}"),
                )
            })?;
            calls
                .lock()
                .unwrap()
                .push(format!("context: {}", entries.join(" ")));
            for stage in &stages {
                let part = format!("stages/{stage}/Dockerfile.part");
                if !entries.contains(&part) {
                    return Err((
                        "org.pibuilder.PiBuilder1.Error.InvalidArgs",
                        format!("the context has no {part}"),
                    ));
                }
            }
            Ok(done(
                &[
                    ("image", name.clone().into()),
                    ("id", "sha256:abcdef0123456789abcdef".into()),
                    ("steps", (stages.len() as u32 * 2).into()),
                    ("cached", 1u32.into()),
                ],
                &format!("built {name}"),
            ))
        };
        self.start_work(server, conn, "build", Box::pin(work)).await
    }

    fn list_images(&self, #[zbus(header)] h: Header<'_>) -> Vec<HashMap<String, OwnedVariant>> {
        self.record(&h, "");
        vec![dict(&[
            ("name", IMAGE.into()),
            ("id", "sha256:abcdef0123456789".into()),
            ("owner_uid", 4242u32.into()),
            ("distro", "debian".into()),
            ("arch", "aarch64".into()),
            ("board", "rpi4".into()),
            ("stages", vec!["__init__", "os", "__cleanup__"].into()),
            ("created", 1_700_000_000_000_000u64.into()),
            ("size", (700u64 << 20).into()),
        ])]
    }

    fn remove_image(&self, #[zbus(header)] h: Header<'_>, name: &str) -> Result<(), DBusError> {
        self.record(&h, name);
        self.refuse_if_denied()?;
        known_image(name)
    }

    async fn clean(
        &mut self,
        #[zbus(header)] h: Header<'_>,
        #[zbus(object_server)] server: &ObjectServer,
        #[zbus(connection)] conn: &Connection,
        options: HashMap<String, OwnedVariant>,
    ) -> Result<OwnedObjectPath, DBusError> {
        self.record(&h, "");
        self.refuse_if_denied()?;
        self.keep_options(&h, options);
        let work = async move {
            Ok(done(
                &[("removed", 2u32.into()), ("reclaimed", (3u64 << 30).into())],
                "cleaned",
            ))
        };
        self.start_work(server, conn, "clean", Box::pin(work)).await
    }

    /// Writes to the stdout it was given and exits with SHELL_EXIT. Without a terminal it
    /// echoes its stdin; with one, it waits for the client to put the terminal in raw mode.
    #[allow(clippy::too_many_arguments)]
    async fn shell(
        &mut self,
        #[zbus(header)] h: Header<'_>,
        #[zbus(object_server)] server: &ObjectServer,
        #[zbus(connection)] conn: &Connection,
        name: &str,
        command: Vec<String>,
        stdin: zbus::OwnedFd,
        stdout: zbus::OwnedFd,
        stderr: zbus::OwnedFd,
        options: HashMap<String, OwnedVariant>,
    ) -> Result<OwnedObjectPath, DBusError> {
        self.record(
            &h,
            &format!(
                "{name} {command:?} stdin={} stdout={} stderr={}",
                kind(&stdin),
                kind(&stdout),
                kind(&stderr)
            ),
        );
        self.refuse_if_denied()?;
        known_image(name)?;
        let tty = options
            .get("tty")
            .is_some_and(|v| bool::try_from(v.try_clone().unwrap()).unwrap());
        self.keep_options(&h, options);
        let (stdin, stdout, stderr) = (
            OwnedFd::from(stdin),
            OwnedFd::from(stdout),
            OwnedFd::from(stderr),
        );
        let calls = self.calls.clone();
        let forever = self.script == Script::UntilCancelled;
        let work = async move {
            let note = tokio::task::spawn_blocking(move || {
                if tty {
                    let raw = wait_for_raw(&stdin);
                    let mut out = File::from(stdout);
                    let _ = out.write_all(b"hello on the terminal\r\n");
                    format!("terminal {raw}")
                } else {
                    let input = read_all(stdin);
                    let mut out = File::from(stdout);
                    let _ = writeln!(out, "container read {:?}", String::from_utf8_lossy(&input));
                    let _ = File::from(stderr).write_all(b"container stderr\n");
                    "streams".to_owned()
                }
            })
            .await
            .unwrap();
            calls.lock().unwrap().push(note);
            if forever {
                std::future::pending::<()>().await;
            }
            Ok(done(&[("exit_code", SHELL_EXIT.into())], "exited"))
        };
        self.start_work(server, conn, "shell", Box::pin(work)).await
    }

    fn list_devices(
        &self,
        #[zbus(header)] h: Header<'_>,
        options: HashMap<String, OwnedVariant>,
    ) -> Vec<HashMap<String, OwnedVariant>> {
        self.record(&h, "");
        self.keep_options(&h, options);
        DEVICES
            .iter()
            .map(|(device, model, verdict, reason)| {
                dict(&[
                    ("device", (*device).into()),
                    ("size", (32u64 << 30).into()),
                    ("bus", "usb".into()),
                    ("vendor", "Stand".into()),
                    ("model", (*model).into()),
                    ("verdict", (*verdict).into()),
                    ("reason", (*reason).into()),
                ])
            })
            .collect()
    }

    /// One job per device, each reading nothing and reporting the device it was given.
    async fn flash(
        &mut self,
        #[zbus(header)] h: Header<'_>,
        #[zbus(object_server)] server: &ObjectServer,
        #[zbus(connection)] conn: &Connection,
        image: zbus::OwnedFd,
        devices: Vec<String>,
        options: HashMap<String, OwnedVariant>,
    ) -> Result<Vec<OwnedObjectPath>, DBusError> {
        self.record(&h, &format!("{} {}", kind(&image), devices.join(" ")));
        self.refuse_if_denied()?;
        self.keep_options(&h, options);
        let mut jobs = Vec::new();
        for d in devices {
            let work = async move {
                let result = [
                    ("device", Variant::from(d)),
                    ("written", 4096u64.into()),
                    ("verified", 1u32.into()),
                ];
                Ok(done(&result, "written"))
            };
            jobs.push(
                self.start_work(server, conn, "flash", Box::pin(work))
                    .await?,
            );
        }
        Ok(jobs)
    }
}

/// What the stand-in's ListDevices says: (device, model, verdict, reason).
pub const DEVICES: &[(&str, &str, &str, &str)] = &[
    ("/dev/sda", "System Disk", "refused", "it holds /"),
    ("/dev/sdb", "Card One", "ok", ""),
    ("/dev/sdc", "Card Two", "ok", ""),
];

fn known_image(name: &str) -> Result<(), DBusError> {
    if name == IMAGE {
        Ok(())
    } else {
        Err(DBusError::NotFound(format!("no image named {name:?}")))
    }
}

fn string(options: &HashMap<String, OwnedVariant>, key: &str) -> String {
    options
        .get(key)
        .map(|v| String::try_from(v.try_clone().unwrap()).unwrap())
        .unwrap_or_default()
}

fn dict(entries: &[(&str, Variant<'_>)]) -> HashMap<String, OwnedVariant> {
    entries
        .iter()
        .map(|(k, v)| {
            (
                (*k).to_owned(),
                OwnedVariant::try_from(v.try_clone().unwrap()).unwrap(),
            )
        })
        .collect()
}

/// A job's successful end: its Result and its final message.
fn done(result: &[(&str, Variant<'_>)], message: &str) -> (HashMap<String, OwnedVariant>, String) {
    (dict(result), message.to_owned())
}

fn read_all(fd: OwnedFd) -> Vec<u8> {
    let mut bytes = Vec::new();
    File::from(fd).read_to_end(&mut bytes).unwrap();
    bytes
}

/// What kind of file a passed descriptor is, as the daemon would check it.
fn kind(fd: &impl AsFd) -> &'static str {
    let st = rustix::fs::fstat(fd).unwrap();
    match rustix::fs::FileType::from_raw_mode(st.st_mode) {
        rustix::fs::FileType::Fifo => "pipe",
        rustix::fs::FileType::RegularFile => "file",
        rustix::fs::FileType::CharacterDevice if rustix::termios::isatty(fd) => "terminal",
        rustix::fs::FileType::CharacterDevice => "device",
        rustix::fs::FileType::Socket => "socket",
        _ => "other",
    }
}

/// Waits (at most 10 s) for the terminal to leave canonical mode: "raw" or "cooked".
fn wait_for_raw(fd: &OwnedFd) -> &'static str {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        let t = rustix::termios::tcgetattr(fd).unwrap();
        if !t.local_modes.contains(rustix::termios::LocalModes::ICANON) {
            return "raw";
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    "cooked"
}

/// The names in a tar stream (ustar, with GNU long names and pax paths), which must end with
/// the end-of-archive block: a stream cut short is not a context.
pub fn tar_entries(bytes: &[u8]) -> Result<Vec<String>, String> {
    let mut names = Vec::new();
    let mut long_name: Option<String> = None;
    let mut at = 0;
    loop {
        let header = bytes
            .get(at..at + 512)
            .ok_or("the stream ends without the end-of-archive block")?;
        if header.iter().all(|&b| b == 0) {
            return Ok(names);
        }
        let field = |range: std::ops::Range<usize>| {
            let f = &header[range];
            let end = f.iter().position(|&b| b == 0).unwrap_or(f.len());
            String::from_utf8_lossy(&f[..end]).into_owned()
        };
        let size_field = field(124..136);
        let size = u64::from_str_radix(size_field.trim(), 8)
            .map_err(|e| format!("bad size {size_field:?}: {e}"))? as usize;
        let data = bytes
            .get(at + 512..at + 512 + size)
            .ok_or("an entry is cut short")?;
        let mut name = field(0..100);
        if &header[257..262] == b"ustar" {
            let prefix = field(345..500);
            if !prefix.is_empty() {
                name = format!("{prefix}/{name}");
            }
        }
        match header[156] {
            b'L' => {
                long_name = Some(
                    String::from_utf8_lossy(data)
                        .trim_end_matches('\0')
                        .to_owned(),
                )
            }
            b'x' => {
                for record in String::from_utf8_lossy(data).lines() {
                    if let Some((_, path)) = record.split_once(" path=") {
                        long_name = Some(path.to_owned());
                    }
                }
            }
            b'g' => {}
            _ => names.push(
                long_name
                    .take()
                    .unwrap_or(name)
                    .trim_end_matches('/')
                    .to_owned(),
            ),
        }
        at += 512 + size.div_ceil(512) * 512;
    }
}

type Work = Pin<
    Box<
        dyn Future<Output = Result<(HashMap<String, OwnedVariant>, String), (&'static str, String)>>
            + Send,
    >,
>;

impl Manager {
    fn record(&self, h: &Header<'_>, detail: &str) {
        let member = h.member().unwrap().to_string();
        let line = if detail.is_empty() {
            format!("{member} {}", flags(h))
        } else {
            format!("{member} {} {detail}", flags(h))
        };
        self.calls.lock().unwrap().push(line);
    }

    fn keep_options(&self, h: &Header<'_>, options: HashMap<String, OwnedVariant>) {
        let member = h.member().unwrap().to_string();
        self.options.lock().unwrap().push((member, options));
    }

    fn refuse_if_denied(&self) -> Result<(), DBusError> {
        if self.script == Script::Deny {
            return Err(DBusError::NotAuthorized(
                "org.pibuilder.build: denied by the stand-in".into(),
            ));
        }
        Ok(())
    }

    /// A job that does `work`, reports it, and ends as the work says (or cancelled).
    async fn start_work(
        &mut self,
        server: &ObjectServer,
        conn: &Connection,
        operation: &str,
        work: Work,
    ) -> Result<OwnedObjectPath, DBusError> {
        let path =
            OwnedObjectPath::try_from(format!("{JOBS_PATH}/{}", self.jobs.len() + 1)).unwrap();
        let cancel = Arc::new(Notify::new());
        let job = Job {
            props: Props {
                operation: operation.into(),
                state: "running".into(),
                uid: 4242,
                start_time: 1,
                ..Props::default()
            },
            log: vec![format!("starting {operation}")],
            sinks: Vec::new(),
            cancel: cancel.clone(),
            calls: self.calls.clone(),
        };
        server.at(path.clone(), job).await.unwrap();
        self.jobs.push(path.clone());
        tokio::spawn(drive_work(conn.clone(), path.clone(), work, cancel));
        Ok(path)
    }

    async fn start_job(
        &mut self,
        h: &Header<'_>,
        server: &ObjectServer,
        conn: &Connection,
        operation: &str,
        options: HashMap<String, OwnedVariant>,
    ) -> Result<OwnedObjectPath, DBusError> {
        let arch = options
            .get("arch")
            .map(|v| String::try_from(v.try_clone().unwrap()).unwrap())
            .unwrap_or_else(|| "both".into());
        let member = h.member().unwrap().to_string();
        self.calls
            .lock()
            .unwrap()
            .push(format!("{member} {} arch={arch}", flags(h)));
        if self.script == Script::Deny {
            return Err(DBusError::NotAuthorized(
                "org.pibuilder.binfmt: denied by the stand-in".into(),
            ));
        }
        let path =
            OwnedObjectPath::try_from(format!("{JOBS_PATH}/{}", self.jobs.len() + 1)).unwrap();
        let cancel = Arc::new(Notify::new());
        let mut job = Job {
            props: Props {
                operation: operation.into(),
                state: "running".into(),
                uid: 4242,
                start_time: 1,
                ..Props::default()
            },
            log: vec![format!("starting {operation} for {arch}")],
            sinks: Vec::new(),
            cancel: cancel.clone(),
            calls: self.calls.clone(),
        };
        if self.script == Script::AlreadyDone {
            job.props.state = "succeeded".into();
            job.props.message = format!("done already ({arch})");
            job.log.push("finished before anyone looked".into());
        }
        server.at(path.clone(), job).await.unwrap();
        self.jobs.push(path.clone());
        if self.script != Script::AlreadyDone {
            tokio::spawn(drive(conn.clone(), path.clone(), self.script, cancel, arch));
        }
        Ok(path)
    }
}

#[derive(Default)]
struct Props {
    operation: String,
    state: String,
    progress: f64,
    progress_valid: bool,
    bytes: u64,
    total_bytes: u64,
    rate: u64,
    start_time: u64,
    expected_end_time: u64,
    uid: u32,
    stage: String,
    message: String,
    error_name: String,
    result: HashMap<String, OwnedVariant>,
}

struct Job {
    props: Props,
    log: Vec<String>,
    sinks: Vec<File>,
    cancel: Arc<Notify>,
    calls: Calls,
}

#[interface(name = "org.pibuilder.PiBuilder1.Job")]
impl Job {
    #[zbus(property)]
    fn operation(&self) -> String {
        self.props.operation.clone()
    }
    #[zbus(property)]
    fn state(&self) -> String {
        self.props.state.clone()
    }
    #[zbus(property)]
    fn progress(&self) -> f64 {
        self.props.progress
    }
    #[zbus(property)]
    fn progress_valid(&self) -> bool {
        self.props.progress_valid
    }
    #[zbus(property)]
    fn bytes(&self) -> u64 {
        self.props.bytes
    }
    #[zbus(property)]
    fn total_bytes(&self) -> u64 {
        self.props.total_bytes
    }
    #[zbus(property)]
    fn rate(&self) -> u64 {
        self.props.rate
    }
    #[zbus(property)]
    fn start_time(&self) -> u64 {
        self.props.start_time
    }
    #[zbus(property)]
    fn expected_end_time(&self) -> u64 {
        self.props.expected_end_time
    }
    #[zbus(property, name = "StartedByUID")]
    fn started_by_uid(&self) -> u32 {
        self.props.uid
    }
    #[zbus(property)]
    fn stage(&self) -> String {
        self.props.stage.clone()
    }
    #[zbus(property)]
    fn message(&self) -> String {
        self.props.message.clone()
    }
    #[zbus(property)]
    fn error_name(&self) -> String {
        self.props.error_name.clone()
    }
    #[zbus(property)]
    fn result(&self) -> HashMap<String, OwnedVariant> {
        self.props
            .result
            .iter()
            .map(|(k, v)| (k.clone(), v.try_clone().unwrap()))
            .collect()
    }

    fn cancel(&self, #[zbus(header)] h: Header<'_>) {
        self.calls
            .lock()
            .unwrap()
            .push(format!("Cancel {}", flags(&h)));
        self.cancel.notify_one();
    }

    fn attach_log(&mut self, #[zbus(header)] h: Header<'_>, fd: zbus::OwnedFd) {
        self.calls
            .lock()
            .unwrap()
            .push(format!("AttachLog {}", flags(&h)));
        let mut sink = File::from(std::os::fd::OwnedFd::from(fd));
        for line in &self.log {
            let _ = writeln!(sink, "{line}");
        }
        if self.props.state == "running" {
            self.sinks.push(sink);
        }
    }

    #[zbus(signal)]
    async fn completed(
        emitter: &SignalEmitter<'_>,
        success: bool,
        message: &str,
    ) -> zbus::Result<()>;
}

async fn drive(
    conn: Connection,
    path: OwnedObjectPath,
    script: Script,
    cancel: Arc<Notify>,
    arch: String,
) {
    let job = conn
        .object_server()
        .interface::<_, Job>(path.as_str())
        .await
        .unwrap();
    let pause = || tokio::time::sleep(Duration::from_millis(300));
    pause().await;
    {
        let mut j = job.get_mut().await;
        j.props.stage = arch.clone();
        j.props.message = "registering".into();
        j.props.progress = 0.5;
        j.props.progress_valid = true;
        let e = job.signal_emitter();
        j.stage_changed(e).await.unwrap();
        j.message_changed(e).await.unwrap();
        j.progress_changed(e).await.unwrap();
        j.progress_valid_changed(e).await.unwrap();
        j.log_line("hello from the job \x1b[31m");
    }
    let (state, error, message) = match script {
        Script::Succeed => {
            pause().await;
            ("succeeded", "", format!("Registered qemu for {arch}"))
        }
        Script::Fail => {
            pause().await;
            (
                "failed",
                "org.pibuilder.PiBuilder1.Error.Conflict",
                format!("another package handles {arch} without the F flag"),
            )
        }
        Script::UntilCancelled => {
            cancel.notified().await;
            (
                "cancelled",
                "org.pibuilder.PiBuilder1.Error.Cancelled",
                "cancelled on request".into(),
            )
        }
        Script::Stubborn => std::future::pending().await,
        Script::Vanish => {
            pause().await;
            conn.release_name(BUS_NAME).await.unwrap();
            return;
        }
        Script::AlreadyDone | Script::Deny => unreachable!("no job is driven"),
    };
    let mut j = job.get_mut().await;
    j.props.state = state.into();
    j.props.error_name = error.into();
    j.props.message = message.clone();
    let e = job.signal_emitter();
    j.error_name_changed(e).await.unwrap();
    j.message_changed(e).await.unwrap();
    j.state_changed(e).await.unwrap();
    j.log_line("last words");
    j.sinks.clear();
    Job::completed(e, state == "succeeded", &message)
        .await
        .unwrap();
}

/// Runs a job's work: progress, a log line, then the work's end or a cancellation.
async fn drive_work(conn: Connection, path: OwnedObjectPath, work: Work, cancel: Arc<Notify>) {
    let job = conn
        .object_server()
        .interface::<_, Job>(path.as_str())
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    {
        let mut j = job.get_mut().await;
        j.props.stage = "working".into();
        j.props.message = "half way".into();
        j.props.progress = 0.5;
        j.props.progress_valid = true;
        let e = job.signal_emitter();
        j.stage_changed(e).await.unwrap();
        j.message_changed(e).await.unwrap();
        j.progress_changed(e).await.unwrap();
        j.progress_valid_changed(e).await.unwrap();
        j.log_line("working on it");
    }
    let outcome = tokio::select! {
        o = work => o,
        _ = cancel.notified() => Err((
            "org.pibuilder.PiBuilder1.Error.Cancelled",
            "cancelled on request".to_owned(),
        )),
    };
    let mut j = job.get_mut().await;
    let (state, message) = match outcome {
        Ok((result, message)) => {
            j.props.result = result;
            ("succeeded", message)
        }
        Err((error, message)) => {
            j.props.error_name = error.into();
            let state = if error.ends_with(".Cancelled") {
                "cancelled"
            } else {
                "failed"
            };
            (state, message)
        }
    };
    j.props.state = state.into();
    j.props.message = message.clone();
    let e = job.signal_emitter();
    j.result_changed(e).await.unwrap();
    j.error_name_changed(e).await.unwrap();
    j.message_changed(e).await.unwrap();
    j.state_changed(e).await.unwrap();
    j.log_line("last words");
    j.sinks.clear();
    Job::completed(e, state == "succeeded", &message)
        .await
        .unwrap();
}

impl Job {
    fn log_line(&mut self, line: &str) {
        self.log.push(line.to_owned());
        for sink in &mut self.sinks {
            let _ = writeln!(sink, "{line}");
        }
    }
}

/// Writes `stages` (name, Dockerfile.part text) under `dir`, each with a file it could COPY.
pub fn write_stages(dir: &std::path::Path, stages: &[(&str, &str)]) {
    for (name, part) in stages {
        let stage = dir.join(name);
        std::fs::create_dir_all(stage.join("files")).unwrap();
        std::fs::write(stage.join("Dockerfile.part"), part).unwrap();
        std::fs::write(stage.join("files/motd"), format!("{name}\n")).unwrap();
    }
}
