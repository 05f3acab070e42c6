//! `pib-client shell NAME [-- COMMAND...]`: a throwaway container of a built image, wired to
//! the client's own stdin, stdout and stderr, which are passed to the daemon as descriptors.
//! The client itself never copies the container's I/O (unless a descriptor needs a relay, see
//! `relay`); it only follows the job and exits with the command's status.

use std::collections::HashMap;
use std::io::{self, IsTerminal};
use std::os::fd::AsFd;
use std::time::Duration;

use pib_dbus_interfaces::types::{options, result};
use serde_json::{json, Value};
use tokio::signal::unix::SignalKind;
use zbus::{Fd, Variant};

use crate::bus::Bus;
use crate::calls;
use crate::cli::ShellArgs;
use crate::commands::images::no_image;
use crate::errors::{exit, ClientError};
use crate::follow::{self, Follower, Watch};
use crate::output::{self, err_line, for_terminal, Ui};
use crate::relay::{self, Direction, Handed};
use crate::terminal::{self, RawMode};

/// Output the container wrote just before it ended may still be on its way through a relay.
const RELAY_DRAIN: Duration = Duration::from_secs(5);

pub async fn run(bus: &mut Bus, ui: &Ui, args: &ShellArgs) -> Result<u8, ClientError> {
    let stdin = io::stdin();
    let stdout = io::stdout();
    let stderr = io::stderr();
    let terminals = stdin.is_terminal() && stdout.is_terminal();
    let tty = wants_tty(args, terminals);
    if args.tty && !tty {
        err_line("pib-client: no terminal for the command: stdin and stdout are not both one");
    }

    // With a terminal, the terminal itself goes as stdin and stdout (its stderr is merged
    // into stdout by the container's terminal); without, the three streams as they are.
    let stderr_source = if tty { stdout.as_fd() } else { stderr.as_fd() };
    let hand =
        |fd, dir| relay::hand(fd, dir).map_err(ClientError::io("cannot pass the streams on"));
    let mut fds: [Handed; 3] = [
        hand(stdin.as_fd(), Direction::Read)?,
        hand(stdout.as_fd(), Direction::Write)?,
        hand(stderr_source, Direction::Write)?,
    ];
    let size = if tty {
        terminal::size(stdin.as_fd())
    } else {
        None
    };
    let opts = shell_options(tty, size);
    let command: Vec<&str> = args.command.iter().map(String::as_str).collect();

    // The container dies with the job: a client killed or hung up on must cancel it rather
    // than leave it running on descriptors nobody watches.
    let mut extra = vec![SignalKind::terminate(), SignalKind::hangup()];
    if tty {
        // In raw mode Ctrl-\ is a byte for the container; a SIGQUIT can only come from
        // outside, and must not leave the terminal raw.
        extra.push(SignalKind::quit());
    }
    let manager = bus.manager().await?;
    let mut follower = Follower::new(&extra)?;
    // The call comes before raw mode: a polkit agent may ask for a password on the terminal.
    let called = follower
        .call(
            bus,
            manager.inner(),
            &calls::SHELL,
            &(
                args.name.as_str(),
                command,
                Fd::from(fds[0].as_fd()),
                Fd::from(fds[1].as_fd()),
                Fd::from(fds[2].as_fd()),
                opts,
            ),
        )
        .await;
    for fd in &mut fds {
        fd.close();
    }
    let path = called.map_err(|e| e.when_not_found(|| no_image(&args.name)))?;

    let raw = if tty {
        match RawMode::enter(stdin.as_fd()) {
            Ok(guard) => Some(guard),
            Err(e) => {
                err_line(&format!(
                    "pib-client: cannot put the terminal in raw mode ({e}); keys are echoed \
                     twice and Ctrl-C stops the shell"
                ));
                None
            }
        }
    } else {
        None
    };
    let watch = Watch {
        silent: true,
        abort: None,
    };
    let ended = follower.follow(bus, ui, &path, watch).await;
    // The terminal is the user's again before anything else is printed.
    drop(raw);
    let [_, out, err] = fds;
    out.drain(RELAY_DRAIN);
    err.drain(RELAY_DRAIN);

    let ended = ended?;
    let snapshot = match follow::outcome(&calls::SHELL, &path, ended.snapshot) {
        Ok(s) => s,
        Err(e) => {
            // Quiet so far; now that the job failed, its log says why.
            show_held_log(ui, &ended.held_log);
            return Err(e.when_not_found(|| no_image(&args.name)));
        }
    };
    let status = snapshot
        .result
        .get(result::EXIT_CODE)
        .and_then(Value::as_i64);
    let code = exit_code(status);
    if ui.json {
        output::json_line(&json!({ "job": path, "exit_code": status }));
    }
    Ok(code)
}

/// A terminal for an interactive shell whenever there is one; for a command only on request,
/// as with ssh (a terminal changes what the command outputs: line endings, colours, prompts).
fn wants_tty(args: &ShellArgs, terminals: bool) -> bool {
    terminals && (args.command.is_empty() || args.tty)
}

fn shell_options(tty: bool, size: Option<(u16, u16)>) -> HashMap<&'static str, Variant<'static>> {
    let mut o = HashMap::new();
    o.insert(options::TTY, Variant::from(tty));
    if let Some((rows, cols)) = size {
        o.insert(options::ROWS, Variant::from(u32::from(rows)));
        o.insert(options::COLS, Variant::from(u32::from(cols)));
    }
    o
}

/// The command's status as the client's: statuses outside what a process can exit with
/// (a daemon's -1 for "unknown") become a plain failure.
fn exit_code(status: Option<i64>) -> u8 {
    status
        .and_then(|c| u8::try_from(c).ok())
        .unwrap_or(exit::FAILURE)
}

fn show_held_log(ui: &Ui, lines: &[String]) {
    if ui.quiet {
        return;
    }
    for line in lines {
        if ui.json {
            output::json_line(&json!({ "log": line }));
        } else {
            err_line(&for_terminal(line));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(command: &[&str], tty: bool) -> ShellArgs {
        ShellArgs {
            name: "img".into(),
            tty,
            command: command.iter().map(|s| (*s).to_owned()).collect(),
        }
    }

    #[test]
    fn a_terminal_when_interactive_or_asked_for() {
        assert!(wants_tty(&args(&[], false), true));
        assert!(!wants_tty(&args(&[], false), false));
        assert!(!wants_tty(&args(&["ls"], false), true));
        assert!(wants_tty(&args(&["top"], true), true));
        assert!(!wants_tty(&args(&["top"], true), false));
    }

    #[test]
    fn options_and_exit_codes() {
        let o = shell_options(true, Some((30, 100)));
        assert_eq!(o["tty"], Variant::from(true));
        assert_eq!(o["rows"], Variant::from(30u32));
        assert_eq!(o["cols"], Variant::from(100u32));
        let o = shell_options(false, None);
        assert_eq!(o.len(), 1);
        assert_eq!(o["tty"], Variant::from(false));

        assert_eq!(exit_code(Some(0)), 0);
        assert_eq!(exit_code(Some(7)), 7);
        assert_eq!(exit_code(Some(255)), 255);
        assert_eq!(exit_code(Some(256)), exit::FAILURE);
        assert_eq!(exit_code(Some(-1)), exit::FAILURE);
        assert_eq!(exit_code(None), exit::FAILURE);
    }
}
