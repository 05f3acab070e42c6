//! The options of MakeDiskImage, checked before anyone is asked for a password.

use pib_dbus_interfaces::types::options as opt;
use pib_dbus_interfaces::DBusError;

use super::layout::{ALIGN, MAX_DISK};
use crate::bus::options::Options;

/// The layout options, shared with Install (which writes to cards, so never compresses).
pub const LAYOUT_KEYS: &[&str] = &[
    opt::BOOT_SIZE,
    opt::SIZE,
    opt::ROOT_HEADROOM,
    opt::DATA_SIZE,
    opt::DATA_LABEL,
    opt::HOSTNAME,
];

/// Every option of MakeDiskImage.
pub fn keys() -> Vec<&'static str> {
    [LAYOUT_KEYS, &[opt::COMPRESS]].concat()
}

pub const MIB: u64 = 1 << 20;
pub const DEFAULT_BOOT: u64 = 256 * MIB;
/// FAT32 with 512-byte clusters needs 65525 clusters: 32 MiB and the FATs; 64 MiB is safe.
pub const MIN_BOOT: u64 = 64 * MIB;
pub const MAX_BOOT: u64 = 4096 * MIB;
pub const MIN_DATA: u64 = 16 * MIB;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    Zstd,
    Xz,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageRequest {
    pub boot_size: u64,
    pub size: Option<u64>,
    pub root_headroom: Option<u64>,
    pub data_size: Option<u64>,
    pub data_label: String,
    pub hostname: Option<String>,
    pub compress: Option<Compression>,
}

fn invalid(msg: impl Into<String>) -> DBusError {
    DBusError::InvalidArgs(msg.into())
}

fn aligned(v: u64) -> u64 {
    v.div_ceil(ALIGN).saturating_mul(ALIGN)
}

/// A filesystem label: what ext4 holds (16 bytes) in a character set every tool is happy with.
fn check_label(label: &str) -> Result<(), DBusError> {
    let ok = !label.is_empty()
        && label.len() <= 16
        && label
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    ok.then_some(()).ok_or_else(|| {
        invalid(format!(
            "data_label {label:?} must be 1 to 16 letters, digits, '-' or '_'"
        ))
    })
}

impl ImageRequest {
    pub fn parse(options: &Options) -> Result<ImageRequest, DBusError> {
        let boot_size = aligned(options.u64(opt::BOOT_SIZE)?.unwrap_or(DEFAULT_BOOT));
        if !(MIN_BOOT..=MAX_BOOT).contains(&boot_size) {
            return Err(invalid(format!(
                "boot_size must be between {} MiB and {} MiB",
                MIN_BOOT / MIB,
                MAX_BOOT / MIB
            )));
        }
        let size = options.u64(opt::SIZE)?;
        let root_headroom = options.u64(opt::ROOT_HEADROOM)?;
        if size.is_some() && root_headroom.is_some() {
            return Err(invalid(
                "size and root_headroom exclude each other: the root partition either fills the \
                 given size or is its content plus the headroom",
            ));
        }
        if let Some(s) = size {
            if s > MAX_DISK {
                return Err(invalid(format!(
                    "size {s} is beyond what an MBR partition table can address ({MAX_DISK} bytes)"
                )));
            }
            if s < boot_size + 2 * ALIGN {
                return Err(invalid(format!(
                    "size {s} leaves no room for a root partition after the boot partition"
                )));
            }
        }
        if root_headroom.is_some_and(|h| h > MAX_DISK / 2) {
            return Err(invalid("root_headroom is larger than any card"));
        }
        let data_size = options.u64(opt::DATA_SIZE)?.map(aligned);
        if let Some(d) = data_size {
            if !(MIN_DATA..=MAX_DISK / 2).contains(&d) {
                return Err(invalid(format!(
                    "data_size must be at least {} MiB and less than the largest card",
                    MIN_DATA / MIB
                )));
            }
        }
        let data_label = options
            .string(opt::DATA_LABEL)?
            .unwrap_or_else(|| "PIDATA".to_owned());
        check_label(&data_label)?;
        if options.string(opt::DATA_LABEL)?.is_some() && data_size.is_none() {
            return Err(invalid("data_label needs data_size"));
        }
        let hostname = options.string(opt::HOSTNAME)?;
        if let Some(h) = &hostname {
            crate::build::request::check_hostname(h)?;
        }
        let compress = match options.string(opt::COMPRESS)?.as_deref() {
            None => None,
            Some("zstd") => Some(Compression::Zstd),
            Some("xz") => Some(Compression::Xz),
            Some(other) => {
                return Err(invalid(format!(
                    "compress {other:?} is not known: use \"zstd\" or \"xz\""
                )))
            }
        };
        Ok(ImageRequest {
            boot_size,
            size,
            root_headroom,
            data_size,
            data_label,
            hostname,
            compress,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use zbus::zvariant::{OwnedVariant, Variant};

    use super::*;

    fn parse(pairs: &[(&str, Variant<'_>)]) -> Result<ImageRequest, DBusError> {
        let map: HashMap<String, OwnedVariant> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.try_to_owned().unwrap()))
            .collect();
        ImageRequest::parse(&Options::new(map, &keys())?)
    }

    #[test]
    fn defaults() {
        let r = parse(&[]).unwrap();
        assert_eq!(r.boot_size, DEFAULT_BOOT);
        assert_eq!(r.size, None);
        assert_eq!(r.data_size, None);
        assert_eq!(r.data_label, "PIDATA");
        assert_eq!(r.compress, None);
    }

    #[test]
    fn sizes_are_aligned_and_bounded() {
        let r = parse(&[("boot_size", Variant::from(100 * MIB + 1))]).unwrap();
        assert_eq!(r.boot_size, 104 * MIB);
        for (key, value, words) in [
            ("boot_size", Variant::from(MIB), "boot_size must be"),
            ("boot_size", Variant::from(u64::MAX), "boot_size must be"),
            ("size", Variant::from(u64::MAX), "MBR"),
            ("size", Variant::from(100 * MIB), "no room"),
            ("data_size", Variant::from(MIB), "data_size"),
            ("root_headroom", Variant::from(u64::MAX), "headroom"),
            ("compress", Variant::from("gzip"), "not known"),
            ("data_label", Variant::from("bad label"), "data_label"),
            ("hostname", Variant::from("bad_host"), "host name"),
            ("size", Variant::from("4G"), "unsigned"),
        ] {
            let e = parse(&[(key, value)]).unwrap_err();
            assert!(
                matches!(&e, DBusError::InvalidArgs(m) if m.contains(words)),
                "{key}: {e:?}"
            );
        }
    }

    #[test]
    fn size_and_headroom_exclude_each_other() {
        let e = parse(&[
            ("size", Variant::from(4096 * MIB)),
            ("root_headroom", Variant::from(512 * MIB)),
        ])
        .unwrap_err();
        assert!(matches!(e, DBusError::InvalidArgs(m) if m.contains("exclude")));
    }

    #[test]
    fn data_label_needs_a_data_partition() {
        let e = parse(&[("data_label", Variant::from("STORE"))]).unwrap_err();
        assert!(matches!(e, DBusError::InvalidArgs(m) if m.contains("needs data_size")));
        let r = parse(&[
            ("data_label", Variant::from("STORE")),
            ("data_size", Variant::from(64 * MIB)),
            ("compress", Variant::from("xz")),
        ])
        .unwrap();
        assert_eq!(r.data_label, "STORE");
        assert_eq!(r.compress, Some(Compression::Xz));
    }
}
