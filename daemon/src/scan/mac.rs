//! Ethernet MAC addresses.

use std::fmt;
use std::str::FromStr;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Mac(pub [u8; 6]);

impl Mac {
    pub const BROADCAST: Mac = Mac([0xff; 6]);

    /// The first three bytes: the maker's prefix (OUI).
    pub fn prefix(&self) -> [u8; 3] {
        [self.0[0], self.0[1], self.0[2]]
    }
}

/// Lower case with colons, as `ip link` and sysfs print it.
impl fmt::Display for Mac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            b[0], b[1], b[2], b[3], b[4], b[5]
        )
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a MAC address")]
pub struct BadMac(String);

impl FromStr for Mac {
    type Err = BadMac;

    fn from_str(s: &str) -> Result<Mac, BadMac> {
        let bad = || BadMac(s.chars().take(40).collect());
        let mut out = [0u8; 6];
        let mut parts = s.trim().split(':');
        for byte in &mut out {
            let part = parts.next().ok_or_else(bad)?;
            if part.len() != 2 || !part.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(bad());
            }
            *byte = u8::from_str_radix(part, 16).map_err(|_| bad())?;
        }
        if parts.next().is_some() {
            return Err(bad());
        }
        Ok(Mac(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints_sysfs_form() {
        let m: Mac = "B8:27:eb:0a:1B:ff\n".parse().unwrap();
        assert_eq!(m.0, [0xb8, 0x27, 0xeb, 0x0a, 0x1b, 0xff]);
        assert_eq!(m.to_string(), "b8:27:eb:0a:1b:ff");
        assert_eq!(m.prefix(), [0xb8, 0x27, 0xeb]);
        for bad in [
            "",
            "b8:27:eb:0a:1b",
            "b8:27:eb:0a:1b:ff:00",
            "b8-27-eb-0a-1b-ff",
            "b8:27:eb:0a:1b:f",
            "g8:27:eb:0a:1b:ff",
            "+8:27:eb:0a:1b:ff",
        ] {
            assert!(bad.parse::<Mac>().is_err(), "{bad:?}");
        }
    }
}
