//! The options of Flash and Install, checked before anyone is asked for a password.

use pib_dbus_interfaces::types::options as opt;
use pib_dbus_interfaces::DBusError;

use super::engine::{parse_bmap, Bmap};
use crate::bus::options::Options;

pub const KEYS: &[&str] = &[opt::BMAP, opt::COMPRESSION, opt::VERIFY, opt::EJECT];
/// Cards written by one call; more is a mistake rather than a duplicator.
pub const MAX_DEVICES: usize = 16;
const MAX_BMAP: usize = 64 << 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    Zstd,
    Xz,
}

#[derive(Debug)]
pub struct FlashRequest {
    pub bmap: Option<Bmap>,
    /// None: recognized from the data.
    pub compression: Option<Compression>,
    pub verify: bool,
    pub eject: bool,
}

fn invalid(msg: impl Into<String>) -> DBusError {
    DBusError::InvalidArgs(msg.into())
}

/// Checks the device names of a call: some, not too many, no repeats.
pub fn check_devices(devices: &[String]) -> Result<(), DBusError> {
    if devices.is_empty() {
        return Err(invalid("no device given"));
    }
    if devices.len() > MAX_DEVICES {
        return Err(invalid(format!(
            "more than {MAX_DEVICES} devices in one call"
        )));
    }
    for (i, d) in devices.iter().enumerate() {
        if devices[..i].contains(d) {
            return Err(invalid(format!("{d:?} is named twice")));
        }
    }
    Ok(())
}

impl FlashRequest {
    pub fn parse(options: &Options) -> Result<FlashRequest, DBusError> {
        let bmap = match options.string(opt::BMAP)? {
            None => None,
            Some(text) if text.len() > MAX_BMAP => {
                return Err(invalid("the block map is larger than any block map"))
            }
            Some(text) => {
                Some(parse_bmap(&text).map_err(|e| invalid(format!("the block map: {e}")))?)
            }
        };
        let compression = match options.string(opt::COMPRESSION)?.as_deref() {
            None => None,
            Some("none") => Some(Compression::None),
            Some("zstd") => Some(Compression::Zstd),
            Some("xz") => Some(Compression::Xz),
            Some(other) => {
                return Err(invalid(format!(
                    "compression {other:?} is not known: use \"none\", \"zstd\" or \"xz\""
                )))
            }
        };
        Ok(FlashRequest {
            bmap,
            compression,
            verify: options.flag_or(opt::VERIFY, true)?,
            eject: options.flag(opt::EJECT)?,
        })
    }
}
