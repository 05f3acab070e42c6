//! Method options (`a{sv}`): unknown keys and wrongly typed values are refused by name.

use std::collections::HashMap;

use pib_dbus_interfaces::DBusError;
use zbus::{OwnedVariant, Variant};

pub struct Options {
    map: HashMap<String, OwnedVariant>,
}

impl Options {
    /// Accepts `map` if every key is in `allowed`.
    pub fn new(map: HashMap<String, OwnedVariant>, allowed: &[&str]) -> Result<Options, DBusError> {
        let mut unknown: Vec<&str> = map
            .keys()
            .map(String::as_str)
            .filter(|k| !allowed.contains(k))
            .collect();
        if !unknown.is_empty() {
            unknown.sort_unstable();
            let shown: Vec<String> = unknown
                .iter()
                .take(5)
                .map(|k| format!("{:?}", truncate(k)))
                .collect();
            return Err(DBusError::InvalidArgs(format!(
                "unknown option{} {} (known: {})",
                if unknown.len() > 1 { "s" } else { "" },
                shown.join(", "),
                if allowed.is_empty() {
                    "none".to_owned()
                } else {
                    allowed.join(", ")
                }
            )));
        }
        Ok(Options { map })
    }

    /// A string option, `None` when absent.
    pub fn string(&self, key: &str) -> Result<Option<String>, DBusError> {
        match self.map.get(key).map(|v| &**v) {
            None => Ok(None),
            Some(Variant::Str(s)) => Ok(Some(s.as_str().to_owned())),
            Some(other) => Err(DBusError::InvalidArgs(format!(
                "option {key:?} must be a string (s), not {}",
                other.value_signature()
            ))),
        }
    }
}

impl Options {
    fn wrong_type(key: &str, expected: &str, got: &Variant<'_>) -> DBusError {
        DBusError::InvalidArgs(format!(
            "option {key:?} must be {expected}, not {}",
            got.value_signature()
        ))
    }

    /// A word of the API's vocabulary (distro, arch, board...), `None` when absent.
    pub fn word<T>(&self, key: &str) -> Result<Option<T>, DBusError>
    where
        T: std::str::FromStr<Err = pib_dbus_interfaces::types::UnknownWord>,
    {
        self.string(key)?
            .map(|s| {
                s.parse()
                    .map_err(|e: pib_dbus_interfaces::types::UnknownWord| {
                        DBusError::InvalidArgs(e.to_string())
                    })
            })
            .transpose()
    }

    /// A vocabulary word that must be given.
    pub fn required_word<T>(&self, key: &str) -> Result<T, DBusError>
    where
        T: std::str::FromStr<Err = pib_dbus_interfaces::types::UnknownWord>,
    {
        self.word(key)?
            .ok_or_else(|| DBusError::InvalidArgs(format!("option {key:?} is required")))
    }

    /// A boolean option, `false` when absent.
    /// Keeps only `keys` (for a method whose options feed two parsers).
    pub fn retain(&mut self, keys: &[&str]) {
        self.map.retain(|k, _| keys.contains(&k.as_str()));
    }

    /// A boolean option that defaults to `default` when absent.
    pub fn flag_or(&self, key: &str, default: bool) -> Result<bool, DBusError> {
        if self.map.contains_key(key) {
            self.flag(key)
        } else {
            Ok(default)
        }
    }

    pub fn flag(&self, key: &str) -> Result<bool, DBusError> {
        match self.map.get(key).map(|v| &**v) {
            None => Ok(false),
            Some(Variant::Bool(b)) => Ok(*b),
            Some(other) => Err(Self::wrong_type(key, "a boolean (b)", other)),
        }
    }

    /// An unsigned option, `None` when absent.
    pub fn u32(&self, key: &str) -> Result<Option<u32>, DBusError> {
        match self.map.get(key).map(|v| &**v) {
            None => Ok(None),
            Some(Variant::U32(n)) => Ok(Some(*n)),
            Some(other) => Err(Self::wrong_type(key, "an unsigned integer (u)", other)),
        }
    }

    /// A string-array option, `None` when absent; at most `max` items.
    pub fn u64(&self, key: &str) -> Result<Option<u64>, DBusError> {
        match self.map.get(key).map(|v| &**v) {
            None => Ok(None),
            Some(Variant::U64(n)) => Ok(Some(*n)),
            Some(Variant::U32(n)) => Ok(Some(u64::from(*n))),
            Some(other) => Err(Self::wrong_type(key, "an unsigned integer (t)", other)),
        }
    }

    pub fn strings(&self, key: &str, max: usize) -> Result<Option<Vec<String>>, DBusError> {
        let Some(v) = self.map.get(key) else {
            return Ok(None);
        };
        let items: Vec<String> = Vec::try_from(
            v.try_clone()
                .map_err(|e| DBusError::InvalidArgs(format!("option {key:?}: {e}")))?,
        )
        .map_err(|_| Self::wrong_type(key, "an array of strings (as)", v))?;
        if items.len() > max {
            return Err(DBusError::InvalidArgs(format!(
                "option {key:?} has {} items; at most {max} are allowed",
                items.len()
            )));
        }
        Ok(Some(items))
    }

    /// A string-to-string dictionary option, `None` when absent; at most `max` entries.
    pub fn string_map(
        &self,
        key: &str,
        max: usize,
    ) -> Result<Option<std::collections::BTreeMap<String, String>>, DBusError> {
        let Some(v) = self.map.get(key) else {
            return Ok(None);
        };
        let map: HashMap<String, String> = HashMap::try_from(
            v.try_clone()
                .map_err(|e| DBusError::InvalidArgs(format!("option {key:?}: {e}")))?,
        )
        .map_err(|_| Self::wrong_type(key, "a dictionary of strings (a{ss})", v))?;
        if map.len() > max {
            return Err(DBusError::InvalidArgs(format!(
                "option {key:?} has {} entries; at most {max} are allowed",
                map.len()
            )));
        }
        Ok(Some(map.into_iter().collect()))
    }
}

/// Keeps error messages short when a caller sends a huge key or value.
pub(crate) fn truncate(s: &str) -> &str {
    match s.char_indices().nth(64) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(pairs: &[(&str, Variant<'static>)]) -> HashMap<String, OwnedVariant> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), OwnedVariant::try_from(v.clone()).unwrap()))
            .collect()
    }

    #[test]
    fn unknown_keys_are_named_and_known_ones_listed() {
        let err = Options::new(opts(&[("bogus", Variant::from(1u32))]), &["arch"])
            .err()
            .unwrap();
        let DBusError::InvalidArgs(m) = err else {
            panic!("wrong error")
        };
        assert!(m.contains("\"bogus\"") && m.contains("arch"), "{m}");
    }

    #[test]
    fn wrong_type_is_refused_with_signature() {
        let o = Options::new(opts(&[("arch", Variant::from(7u32))]), &["arch"]).unwrap();
        let DBusError::InvalidArgs(m) = o.string("arch").unwrap_err() else {
            panic!("wrong error")
        };
        assert!(m.contains("must be a string") && m.contains('u'), "{m}");
    }

    #[test]
    fn string_values_and_absence() {
        let o = Options::new(opts(&[("arch", Variant::from("arm"))]), &["arch"]).unwrap();
        assert_eq!(o.string("arch").unwrap().as_deref(), Some("arm"));
        let o = Options::new(HashMap::new(), &["arch"]).unwrap();
        assert_eq!(o.string("arch").unwrap(), None);
    }

    #[test]
    fn typed_accessors_check_their_types() {
        let o = Options::new(
            opts(&[
                ("no_cache", Variant::from(true)),
                ("rows", Variant::from(24u32)),
                ("stages", Variant::from(vec!["__init__", "os"])),
                ("args", Variant::from(HashMap::from([("K", "v")]))),
                ("bad", Variant::from(vec![1u32, 2])),
            ]),
            &["no_cache", "rows", "stages", "args", "bad"],
        )
        .unwrap();
        assert!(o.flag("no_cache").unwrap());
        assert!(!o.flag("absent").unwrap());
        assert_eq!(o.u32("rows").unwrap(), Some(24));
        assert_eq!(
            o.strings("stages", 10).unwrap().unwrap(),
            ["__init__", "os"]
        );
        assert!(o.strings("stages", 1).is_err(), "count bound");
        assert_eq!(o.string_map("args", 5).unwrap().unwrap()["K"], "v");
        for key in ["no_cache", "rows", "args"] {
            assert!(o.strings(key, 10).is_err(), "{key} as strings");
        }
        assert!(o.strings("bad", 10).is_err());
        assert!(o.flag("rows").is_err());
        assert!(o.string_map("stages", 5).is_err());
    }

    #[test]
    fn huge_keys_are_truncated_in_messages() {
        let key = "k".repeat(10_000);
        let err = Options::new(opts(&[(key.as_str(), Variant::from(true))]), &[])
            .err()
            .unwrap();
        assert!(err.message().len() < 200);
    }
}
