//! The options of `Scan`, checked before anyone is asked for authorization.

use std::time::Duration;

use pib_dbus_interfaces::types::options as opt;
use pib_dbus_interfaces::DBusError;

use super::interfaces;
use crate::bus::options::Options;

pub const KEYS: &[&str] = &[opt::INTERFACES, opt::TIMEOUT, opt::RESOLVE];

/// More names than any machine has interfaces worth sweeping.
const MAX_INTERFACES: usize = 64;
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(8);
const MAX_TIMEOUT_SECS: u32 = 60;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScanRequest {
    /// Only these interfaces; `None` for every one that can be swept.
    pub interfaces: Option<Vec<String>>,
    /// The bound on the sweep.
    pub timeout: Duration,
    /// Look the boards' names up.
    pub resolve: bool,
}

impl ScanRequest {
    pub fn parse(o: &Options) -> Result<ScanRequest, DBusError> {
        let interfaces = match o.strings(opt::INTERFACES, MAX_INTERFACES)? {
            None => None,
            Some(names) if names.is_empty() => {
                return Err(DBusError::InvalidArgs(
                    "option \"interfaces\" is empty; leave it out to scan every interface".into(),
                ))
            }
            Some(names) => {
                let mut unique: Vec<String> = Vec::new();
                for name in names {
                    if !interfaces::valid_name(&name) {
                        return Err(DBusError::InvalidArgs(format!(
                            "{:?} is not a network interface name",
                            name.chars().take(32).collect::<String>()
                        )));
                    }
                    if !unique.contains(&name) {
                        unique.push(name);
                    }
                }
                Some(unique)
            }
        };
        let timeout = match o.u32(opt::TIMEOUT)? {
            None => DEFAULT_TIMEOUT,
            Some(s) if (1..=MAX_TIMEOUT_SECS).contains(&s) => Duration::from_secs(u64::from(s)),
            Some(s) => {
                return Err(DBusError::InvalidArgs(format!(
                    "option \"timeout\" is {s} seconds; it must be 1 to {MAX_TIMEOUT_SECS}"
                )))
            }
        };
        Ok(ScanRequest {
            interfaces,
            timeout,
            resolve: o.flag_or(opt::RESOLVE, true)?,
        })
    }

    /// Every named interface exists (NotFound names the first that does not).
    pub fn check_interfaces(&self) -> Result<(), DBusError> {
        for name in self.interfaces.iter().flatten() {
            if !interfaces::exists(name) {
                return Err(DBusError::NotFound(format!(
                    "there is no network interface {name:?}"
                )));
            }
        }
        Ok(())
    }

    /// For polkit's details and the log.
    pub fn describe(&self) -> String {
        match &self.interfaces {
            None => "all".to_owned(),
            Some(names) => names.join(","),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;
    use zbus::{OwnedVariant, Variant};

    fn parse(pairs: &[(&str, Variant<'static>)]) -> Result<ScanRequest, DBusError> {
        let map: HashMap<String, OwnedVariant> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), OwnedVariant::try_from(v.clone()).unwrap()))
            .collect();
        ScanRequest::parse(&Options::new(map, KEYS)?)
    }

    fn invalid(r: Result<ScanRequest, DBusError>, needle: &str) {
        match r {
            Err(DBusError::InvalidArgs(m)) => assert!(m.contains(needle), "{m:?} lacks {needle:?}"),
            other => panic!("expected InvalidArgs about {needle:?}, got {other:?}"),
        }
    }

    #[test]
    fn defaults_and_values() {
        let r = parse(&[]).unwrap();
        assert_eq!(r.interfaces, None);
        assert_eq!(r.timeout, Duration::from_secs(8));
        assert!(r.resolve);
        assert_eq!(r.describe(), "all");
        let r = parse(&[
            ("interfaces", Variant::from(vec!["eth0", "wlan0", "eth0"])),
            ("timeout", Variant::from(3u32)),
            ("resolve", Variant::from(false)),
        ])
        .unwrap();
        assert_eq!(
            r.interfaces.as_deref(),
            Some(&["eth0".to_owned(), "wlan0".to_owned()][..])
        );
        assert_eq!(r.timeout, Duration::from_secs(3));
        assert!(!r.resolve);
        assert_eq!(r.describe(), "eth0,wlan0");
    }

    #[test]
    fn bad_options_are_invalid_args() {
        invalid(
            parse(&[("interfaces", Variant::from(vec!["../x"]))]),
            "not a network interface",
        );
        invalid(
            parse(&[("interfaces", Variant::from(Vec::<&str>::new()))]),
            "empty",
        );
        invalid(
            parse(&[("interfaces", Variant::from("eth0"))]),
            "array of strings",
        );
        let many: Vec<String> = (0..65).map(|i| format!("eth{i}")).collect();
        invalid(parse(&[("interfaces", Variant::from(many))]), "at most 64");
        invalid(parse(&[("timeout", Variant::from(0u32))]), "1 to 60");
        invalid(parse(&[("timeout", Variant::from(61u32))]), "1 to 60");
        invalid(parse(&[("timeout", Variant::from("5"))]), "unsigned");
        invalid(parse(&[("resolve", Variant::from(1u32))]), "boolean");
        invalid(parse(&[("subnet", Variant::from("10.0.0.0/8"))]), "subnet");
    }

    #[test]
    fn named_interfaces_must_exist() {
        let r = parse(&[("interfaces", Variant::from(vec!["lo"]))]).unwrap();
        r.check_interfaces().unwrap();
        let r = parse(&[("interfaces", Variant::from(vec!["lo", "pibnosuch0"]))]).unwrap();
        match r.check_interfaces() {
            Err(DBusError::NotFound(m)) => assert!(m.contains("pibnosuch0"), "{m}"),
            other => panic!("{other:?}"),
        }
    }
}
