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

/// Keeps error messages short when a caller sends a huge key.
fn truncate(s: &str) -> &str {
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
    fn huge_keys_are_truncated_in_messages() {
        let key = "k".repeat(10_000);
        let err = Options::new(opts(&[(key.as_str(), Variant::from(true))]), &[])
            .err()
            .unwrap();
        assert!(err.message().len() < 200);
    }
}
