//! A private bus and a stand-in for pib-daemon that follows a script, so that the client's job
//! following (signals, log pipe, Ctrl-C, exit codes) is tested without root, polkit or the real
//! daemon. It implements the contract from the XML, not the daemon's code.

#![allow(dead_code)]

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

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

pub struct Stand {
    pub conn: Connection,
    pub calls: Calls,
}

pub async fn serve(address: &str, script: Script) -> Stand {
    let calls = Calls::default();
    let conn = zbus::connection::Builder::address(address)
        .build()
        .await
        .unwrap();
    let manager = Manager {
        script,
        calls: calls.clone(),
        jobs: Vec::new(),
    };
    conn.object_server()
        .at(MANAGER_PATH, manager)
        .await
        .unwrap();
    conn.request_name(BUS_NAME).await.unwrap();
    Stand { conn, calls }
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
}

impl Manager {
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

impl Job {
    fn log_line(&mut self, line: &str) {
        self.log.push(line.to_owned());
        for sink in &mut self.sinks {
            let _ = writeln!(sink, "{line}");
        }
    }
}
