//! What the picker draws: a title, the table of disks with the cursor's row marked, and a
//! note. Lines only; the terminal handling is the caller's.

use super::state::Picker;
use crate::output;

/// Reverse video for the row under the cursor; the "> " mark says the same without colour.
const SELECTED: &str = "\x1b[7m";
const PLAIN: &str = "\x1b[0m";

pub fn lines(p: &Picker, image: &str) -> Vec<String> {
    let rows: Vec<Vec<String>> = p
        .rows
        .iter()
        .map(|r| {
            vec![
                r.device.clone(),
                r.size.clone(),
                r.bus.clone(),
                r.model.clone(),
                r.status(),
            ]
        })
        .collect();
    let table = output::table(&["DEVICE", "SIZE", "BUS", "MODEL", "STATUS"], &rows);
    let mut out = vec![
        format!("Write {image} to which card?"),
        "  (up/down or j/k to move, Enter to choose, q or Esc to quit)".to_owned(),
    ];
    for (i, line) in table.lines().enumerate() {
        // The table's first line is its header.
        let row = i.checked_sub(1);
        if row == Some(p.cursor) {
            out.push(format!("{SELECTED}> {line}{PLAIN}"));
        } else {
            out.push(format!("  {line}"));
        }
    }
    out.push(p.note.clone().unwrap_or_default());
    out
}

#[cfg(test)]
mod tests {
    use super::super::state::{Key, Row};
    use super::*;
    use serde_json::json;

    #[test]
    fn the_cursor_row_is_marked_and_the_note_shown() {
        let rows = ["/dev/sdb", "/dev/sdc"]
            .iter()
            .map(|d| {
                Row::from_listing(&json!({"device": d, "size": 1u64 << 30, "bus": "mmc",
                    "vendor": "", "model": "SD32G", "verdict": "ok", "reason": ""}))
            })
            .collect();
        let mut p = Picker::new(rows).unwrap();
        p.press(Key::Down);
        let l = lines(&p, "pi.img");
        assert_eq!(l[0], "Write pi.img to which card?");
        assert!(l[2].starts_with("  DEVICE"), "{l:?}");
        assert!(l[3].starts_with("  /dev/sdb"), "{l:?}");
        assert!(
            l[4].starts_with("\x1b[7m> /dev/sdc") && l[4].contains("SD32G"),
            "{l:?}"
        );
        assert!(l[4].contains("1.00 GiB") && l[4].contains("mmc"), "{l:?}");
        assert_eq!(l[5], "");
    }
}
