//! The Raspberry Pi MAC address prefixes: the one list the scan matches against.

use super::mac::Mac;

/// Prefixes (OUIs) assigned to Raspberry Pi, with where each comes from.
///
/// To check for new ones: the IEEE registry's `oui.txt` (Debian ships a snapshot in the
/// ieee-data package, /usr/share/ieee-data/oui.txt), entries naming "Raspberry Pi".
pub const RASPBERRY_PI: &[([u8; 3], &str)] = &[
    // Raspberry Pi Foundation: Pi 1, 2, 3, Zero (W), Zero 2 W.
    ([0xb8, 0x27, 0xeb], "Raspberry Pi Foundation"),
    // Raspberry Pi Trading Ltd: Pi 4, 400, CM4 and later boards.
    ([0xdc, 0xa6, 0x32], "Raspberry Pi Trading"),
    ([0xe4, 0x5f, 0x01], "Raspberry Pi Trading"),
    // Raspberry Pi Trading Ltd in the IEEE registry (ieee-data 20220827); Pico W and others.
    ([0x28, 0xcd, 0xc1], "Raspberry Pi Trading"),
    // Newer Raspberry Pi Trading assignments, after that snapshot, on recent boards.
    ([0xd8, 0x3a, 0xdd], "Raspberry Pi Trading"),
    ([0x2c, 0xcf, 0x67], "Raspberry Pi Trading"),
];

/// Whether `mac` carries a Raspberry Pi prefix.
pub fn is_raspberry_pi(mac: &Mac) -> bool {
    let prefix = mac.prefix();
    RASPBERRY_PI.iter().any(|(p, _)| *p == prefix)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mac(s: &str) -> Mac {
        s.parse().unwrap()
    }

    #[test]
    fn every_listed_prefix_matches_whatever_follows() {
        for p in [
            "b8:27:eb", "dc:a6:32", "e4:5f:01", "d8:3a:dd", "2c:cf:67", "28:cd:c1",
        ] {
            for tail in ["00:00:00", "12:34:56", "ff:ff:ff"] {
                assert!(is_raspberry_pi(&mac(&format!("{p}:{tail}"))), "{p}:{tail}");
            }
            // Case does not matter: sysfs prints lower case, users type either.
            assert!(is_raspberry_pi(&mac(&format!(
                "{}:01:02:03",
                p.to_uppercase()
            ))));
        }
    }

    #[test]
    fn near_misses_do_not_match() {
        for m in [
            "b8:27:ec:00:00:01", // one off in the last byte of the prefix
            "b9:27:eb:00:00:01",
            "eb:27:b8:00:00:01", // reversed
            "00:b8:27:eb:00:01", // the prefix elsewhere in the address
            "02:00:00:00:00:01", // a locally administered address, as veth pairs get
            "ff:ff:ff:ff:ff:ff",
            "00:00:00:00:00:00",
        ] {
            assert!(!is_raspberry_pi(&mac(m)), "{m}");
        }
    }

    #[test]
    fn the_list_has_no_duplicates() {
        for (i, (a, _)) in RASPBERRY_PI.iter().enumerate() {
            assert!(RASPBERRY_PI[i + 1..].iter().all(|(b, _)| a != b));
        }
    }
}
