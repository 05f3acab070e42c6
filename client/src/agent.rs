//! A text polkit agent for this process, so that a password can be typed in the terminal when
//! no graphical agent runs (a server, an ssh session). Started the way systemctl starts it.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rustix::pipe::{pipe_with, PipeFlags};
use rustix::process::{kill_process, Pid, Signal};
use tokio::io::AsyncReadExt;
use tokio::net::unix::pipe;

/// Where polkit installs it, as systemctl calls it; `PATH` is the fallback for other layouts.
const PROGRAM_PATH: &str = "/usr/bin/pkttyagent";
const PROGRAM: &str = "pkttyagent";

/// Registration takes a few bus round trips; if it takes longer than this, something is wrong
/// with polkit and the call goes ahead without an agent rather than hanging.
const REGISTER_TIMEOUT: Duration = Duration::from_secs(10);

/// The running agent; it is stopped when this is dropped.
#[derive(Debug)]
pub struct Agent {
    child: Child,
}

impl Agent {
    /// Starts the agent and waits until it has registered with polkit. `None` when it cannot run
    /// (not installed, or it gave up): the call then goes ahead and polkit answers without it.
    pub async fn start() -> Option<Agent> {
        let (notify_read, notify_write) = pipe_with(PipeFlags::CLOEXEC).ok()?;
        let child = match spawn(&notify_write) {
            Ok(child) => child,
            Err(_) => return None,
        };
        // Our copy must go, or the end of the pipe never comes.
        drop(notify_write);
        let mut agent = Agent { child };
        let _ = tokio::time::timeout(REGISTER_TIMEOUT, wait_for_close(notify_read)).await;
        match agent.child.try_wait() {
            Ok(None) => Some(agent),
            _ => None,
        }
    }
}

fn spawn(notify: &OwnedFd) -> io::Result<Child> {
    let fd = notify.as_raw_fd();
    let parent = std::process::id();
    let program = if Path::new(PROGRAM_PATH).exists() {
        PROGRAM_PATH
    } else {
        PROGRAM
    };
    let mut cmd = Command::new(program);
    cmd.arg("--notify-fd").arg(fd.to_string());
    // A fallback agent gives way to a graphical agent of the login session. But polkit (up to
    // at least 127, get_authentication_agent_for_subject) ignores a fallback agent altogether
    // when the caller is in no login session (ssh without pam_systemd, containers, hosts
    // without logind), so there the agent must not be registered as one.
    if in_login_session() {
        cmd.arg("--fallback");
    }
    cmd.arg("--process")
        .arg(parent.to_string())
        .stdin(Stdio::inherit())
        .stdout(Stdio::inherit())
        .stderr(Stdio::inherit());
    // If the client dies without cleaning up (SIGKILL), the agent must not linger holding
    // the terminal.
    crate::sys::keep_fd_and_die_with_parent(&mut cmd, fd, parent);
    cmd.spawn()
}

/// logind's test (sd_pid_get_session): the process sits in a `session-*.scope` cgroup.
fn in_login_session() -> bool {
    std::fs::read_to_string("/proc/self/cgroup").is_ok_and(|c| cgroup_has_session(&c))
}

fn cgroup_has_session(cgroup: &str) -> bool {
    cgroup
        .lines()
        .filter_map(|line| line.splitn(3, ':').nth(2))
        .flat_map(|path| path.split('/'))
        .any(|part| part.starts_with("session-") && part.ends_with(".scope"))
}

async fn wait_for_close(fd: OwnedFd) {
    let Ok(mut rx) = pipe::Receiver::from_owned_fd(fd) else {
        return;
    };
    let mut buf = [0u8; 64];
    while let Ok(n) = rx.read(&mut buf).await {
        if n == 0 {
            break;
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let pid = Pid::from_child(&self.child);
        if kill_process(pid, Signal::TERM).is_err() {
            let _ = self.child.wait();
            return;
        }
        // pkttyagent restores the terminal on SIGTERM; give it a moment before insisting.
        let deadline = Instant::now() + Duration::from_secs(1);
        while Instant::now() < deadline {
            match self.child.try_wait() {
                Ok(Some(_)) | Err(_) => return,
                Ok(None) => std::thread::sleep(Duration::from_millis(10)),
            }
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn login_sessions_are_recognised_by_their_cgroup() {
        assert!(cgroup_has_session(
            "0::/user.slice/user-1000.slice/session-3.scope\n"
        ));
        assert!(cgroup_has_session(
            "1:name=systemd:/user.slice/user-1000.slice/session-c2.scope\n0::/\n"
        ));
        assert!(!cgroup_has_session(
            "0::/user.slice/user-1000.slice/user@1000.service/app.slice/x.scope\n"
        ));
        assert!(!cgroup_has_session("0::/\n"));
        assert!(!cgroup_has_session("0::/system.slice/ssh.service\n"));
    }
}
