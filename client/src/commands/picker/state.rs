//! The picker's state machine: a cursor over the daemon's device list, moved by keys, that
//! ends with a device the daemon accepts or with nothing. No terminal here, so every path is
//! a unit test.

use pib_dbus_interfaces::types::device as key;
use serde_json::Value;

use crate::commands::base::{size_cell, text};

/// What the daemon's ListDevices says of a disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Ok,
    /// Accepted with the stronger org.pibuilder.flash-system-device grant.
    NeedsAdmin,
    Refused,
}

/// One disk as the picker shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    pub device: String,
    pub size: String,
    pub bus: String,
    /// Vendor and model.
    pub model: String,
    pub verdict: Verdict,
    pub reason: String,
}

impl Row {
    pub fn from_listing(d: &Value) -> Row {
        let verdict = match d[key::VERDICT].as_str() {
            Some("ok") => Verdict::Ok,
            Some("needs-system-grant") => Verdict::NeedsAdmin,
            // Anything this client does not know is treated as the daemon saying no.
            _ => Verdict::Refused,
        };
        Row {
            device: text(&d[key::DEVICE]),
            size: size_cell(&d[key::SIZE]),
            bus: text(&d[key::BUS]),
            model: format!("{} {}", text(&d[key::VENDOR]), text(&d[key::MODEL]))
                .trim()
                .to_owned(),
            verdict,
            reason: text(&d[key::REASON]),
        }
    }

    pub fn pickable(&self) -> bool {
        self.verdict != Verdict::Refused
    }

    /// The status column: whether pi-builder writes it, and why not.
    pub fn status(&self) -> String {
        match self.verdict {
            Verdict::Ok => "ok".to_owned(),
            Verdict::NeedsAdmin => format!("needs admin password: {}", self.reason),
            Verdict::Refused => format!("refused: {}", self.reason),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Key {
    Up,
    Down,
    Home,
    End,
    Enter,
    Abort,
    Other,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    Stay,
    Chosen(String),
    Aborted,
}

#[derive(Debug)]
pub struct Picker {
    pub rows: Vec<Row>,
    pub cursor: usize,
    /// A line under the list: why the last Enter did nothing.
    pub note: Option<String>,
}

impl Picker {
    /// The cursor starts on the first disk that can be written. None when there is no disk.
    pub fn new(rows: Vec<Row>) -> Option<Picker> {
        if rows.is_empty() {
            return None;
        }
        let cursor = rows.iter().position(Row::pickable).unwrap_or(0);
        Some(Picker {
            rows,
            cursor,
            note: None,
        })
    }

    pub fn press(&mut self, key: Key) -> Step {
        let last = self.rows.len() - 1;
        self.note = None;
        match key {
            Key::Up => self.cursor = self.cursor.saturating_sub(1),
            Key::Down => self.cursor = (self.cursor + 1).min(last),
            Key::Home => self.cursor = 0,
            Key::End => self.cursor = last,
            Key::Abort => return Step::Aborted,
            Key::Enter => {
                let row = &self.rows[self.cursor];
                if row.pickable() {
                    return Step::Chosen(row.device.clone());
                }
                self.note = Some(format!(
                    "pi-builder will not write {}: {}.",
                    row.device, row.reason
                ));
            }
            Key::Other => {}
        }
        Step::Stay
    }
}

/// The keys in what one read of the terminal returned. A terminal sends a key's escape
/// sequence in one write, so an ESC with nothing after it is the Esc key itself.
pub fn keys(bytes: &[u8]) -> Vec<Key> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        i += 1;
        let k = match b {
            b'k' => Key::Up,
            b'j' => Key::Down,
            b'g' => Key::Home,
            b'G' => Key::End,
            b'\r' | b'\n' => Key::Enter,
            // Ctrl-C and Ctrl-D arrive as bytes: the terminal is raw while picking.
            b'q' | b'Q' | 0x03 | 0x04 => Key::Abort,
            0x1b => {
                let (k, used) = escape(&bytes[i..]);
                i += used;
                k
            }
            _ => Key::Other,
        };
        out.push(k);
    }
    out
}

/// The key of the escape sequence after an ESC, and how many bytes it took.
fn escape(rest: &[u8]) -> (Key, usize) {
    match rest.first() {
        Some(b'[') | Some(b'O') => {}
        _ => return (Key::Abort, 0),
    }
    // CSI/SS3: parameters, then one final byte in 0x40..=0x7e.
    let Some(end) = rest[1..].iter().position(|b| (0x40..=0x7e).contains(b)) else {
        return (Key::Other, rest.len());
    };
    let seq = &rest[1..=end + 1];
    let k = match seq {
        b"A" => Key::Up,
        b"B" => Key::Down,
        b"H" | b"1~" | b"7~" => Key::Home,
        b"F" | b"4~" | b"8~" => Key::End,
        _ => Key::Other,
    };
    (k, end + 2)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn row(device: &str, verdict: &str, reason: &str) -> Row {
        Row::from_listing(
            &json!({"device": device, "size": 32_000_000_000u64, "bus": "usb",
            "vendor": "Generic", "model": "SD", "verdict": verdict, "reason": reason}),
        )
    }

    fn picker() -> Picker {
        Picker::new(vec![
            row("/dev/sda", "refused", "it holds /"),
            row("/dev/sdb", "ok", ""),
            row("/dev/sdc", "needs-system-grant", "not removable"),
            row("/dev/sdd", "refused", "read-only"),
        ])
        .unwrap()
    }

    #[test]
    fn the_cursor_starts_on_the_first_writable_disk_and_stays_in_the_list() {
        let mut p = picker();
        assert_eq!(p.cursor, 1);
        assert_eq!(p.press(Key::Up), Step::Stay);
        assert_eq!(p.cursor, 0);
        p.press(Key::Up);
        assert_eq!(p.cursor, 0, "no wrap at the top");
        p.press(Key::End);
        assert_eq!(p.cursor, 3);
        p.press(Key::Down);
        assert_eq!(p.cursor, 3, "no wrap at the bottom");
        p.press(Key::Home);
        assert_eq!(p.cursor, 0);
        p.press(Key::Other);
        assert_eq!(p.cursor, 0);
        let all_refused = Picker::new(vec![row("/dev/sda", "refused", "it holds /")]).unwrap();
        assert_eq!(all_refused.cursor, 0);
        assert!(Picker::new(Vec::new()).is_none());
    }

    #[test]
    fn enter_picks_what_the_daemon_accepts_and_refuses_the_rest_with_its_reason() {
        let mut p = picker();
        p.press(Key::Up);
        assert_eq!(p.press(Key::Enter), Step::Stay);
        assert_eq!(
            p.note.as_deref(),
            Some("pi-builder will not write /dev/sda: it holds /.")
        );
        p.press(Key::Down);
        assert_eq!(p.note, None, "the note goes with the next key");
        p.press(Key::Down);
        assert_eq!(p.press(Key::Enter), Step::Chosen("/dev/sdc".into()));
        p.press(Key::Down);
        assert_eq!(p.press(Key::Enter), Step::Stay);
        assert_eq!(p.press(Key::Abort), Step::Aborted);
        assert_eq!(p.rows[2].status(), "needs admin password: not removable");
        assert_eq!(p.rows[1].model, "Generic SD");
    }

    #[test]
    fn unknown_verdicts_are_refusals() {
        let r = row("/dev/sdx", "something-new", "");
        assert!(!r.pickable());
    }

    #[test]
    fn keys_from_arrows_vi_keys_and_escape() {
        use Key::*;
        assert_eq!(keys(b"\x1b[A\x1b[B\x1bOA\x1bOB"), [Up, Down, Up, Down]);
        assert_eq!(keys(b"kjgG\r\n"), [Up, Down, Home, End, Enter, Enter]);
        assert_eq!(keys(b"\x1b[H\x1b[F\x1b[1~\x1b[4~"), [Home, End, Home, End]);
        assert_eq!(keys(b"\x1b"), [Abort], "a lone Esc");
        assert_eq!(keys(b"q"), [Abort]);
        assert_eq!(keys(b"\x03"), [Abort], "Ctrl-C");
        assert_eq!(keys(b"\x04"), [Abort], "Ctrl-D");
        assert_eq!(keys(b"\x1b[5~x"), [Other, Other], "page up is not handled");
        assert_eq!(keys(b"\x1b[1;5A"), [Other], "ctrl-arrow: not a plain move");
        assert_eq!(keys(b"\x1b[12"), [Other], "a cut-off sequence is dropped");
        assert_eq!(keys(b"\x1bx"), [Abort, Other]);
    }
}
