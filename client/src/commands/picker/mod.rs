//! `pib-client flash IMAGE` without a device: the user picks a card on the terminal from the
//! daemon's own listing, which says what it would refuse and why. Refused disks are shown but
//! cannot be chosen. Keys come from stdin in raw mode; the picker draws on stderr, so stdout
//! stays the command's output.

mod state;
mod view;

use std::io::{IsTerminal, Read, Write};

use serde_json::Value;

use crate::errors::ClientError;
use crate::terminal::RawMode;
use state::{Picker, Row, Step};

/// Whether a person is there to pick: a terminal on stdin, stdout and stderr, and no --json.
pub fn available(json: bool) -> bool {
    !json
        && std::io::stdin().is_terminal()
        && std::io::stdout().is_terminal()
        && std::io::stderr().is_terminal()
}

/// Shows `devices` (ListDevices entries) and returns the device the user chose.
pub fn pick(devices: &[Value], image: &str) -> Result<String, ClientError> {
    let rows = devices.iter().map(Row::from_listing).collect();
    let Some(mut picker) = Picker::new(rows) else {
        return Err(ClientError::Usage(
            "no cards found: insert one and try again, or name the disk \
             (`pib-client devices --all` lists every disk and why pi-builder refuses it)"
                .into(),
        ));
    };
    let stdin = std::io::stdin();
    let raw = RawMode::enter(std::os::fd::AsFd::as_fd(&stdin))
        .map_err(ClientError::io("cannot put the terminal in raw mode"))?;
    let mut screen = Screen::default();
    let mut buf = [0u8; 64];
    let step = loop {
        screen.draw(&view::lines(&picker, image));
        let n = stdin
            .lock()
            .read(&mut buf)
            .map_err(ClientError::io("cannot read the terminal"))?;
        if n == 0 {
            break Step::Aborted;
        }
        let step = state::keys(&buf[..n])
            .into_iter()
            .map(|k| picker.press(k))
            .find(|s| *s != Step::Stay);
        if let Some(s) = step {
            break s;
        }
    };
    screen.clear();
    drop(raw);
    match step {
        Step::Chosen(device) => {
            let row = &picker.rows[picker.cursor];
            crate::output::err_line(&format!("Chosen: {} ({}, {})", device, row.size, row.model));
            Ok(device)
        }
        _ => Err(ClientError::NothingChosen),
    }
}

/// The picker's lines on stderr, redrawn in place.
#[derive(Default)]
struct Screen {
    drawn: usize,
}

impl Screen {
    fn draw(&mut self, lines: &[String]) {
        let mut out = self.erase();
        // Raw mode turns off output processing: every line ends with CR LF.
        out.push_str("\x1b[?25l");
        for l in lines {
            out.push_str(l);
            out.push_str("\x1b[K\r\n");
        }
        self.drawn = lines.len();
        put(&out);
    }

    fn clear(&mut self) {
        let mut out = self.erase();
        out.push_str("\x1b[?25h");
        self.drawn = 0;
        put(&out);
    }

    /// Back to the first line drawn, and everything below it gone.
    fn erase(&self) -> String {
        if self.drawn == 0 {
            return String::new();
        }
        format!("\x1b[{}A\r\x1b[J", self.drawn)
    }
}

fn put(s: &str) {
    let mut err = std::io::stderr().lock();
    let _ = err.write_all(s.as_bytes());
    let _ = err.flush();
}
