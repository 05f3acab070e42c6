//! The parameters of a build, checked and frozen before authorization.

use std::collections::BTreeMap;

use pib_dbus_interfaces::stage::{self, MAX_STAGES};
use pib_dbus_interfaces::types::{options as opt, Arch, Board, Distro};
use pib_dbus_interfaces::DBusError;

use crate::bus::options::{truncate, Options};
use crate::results::check_image_name;

/// Every option Build accepts.
pub const KEYS: &[&str] = &[
    opt::DISTRO,
    opt::ARCH,
    opt::BOARD,
    opt::STAGES,
    opt::HOSTNAME,
    opt::LOCALE,
    opt::TIMEZONE,
    opt::REPO_URL,
    opt::ARGS,
    opt::NO_CACHE,
    opt::NAME,
    opt::BASE,
];

/// Most `--set` args per build.
const MAX_USER_ARGS: usize = 64;

#[derive(Debug, Clone, PartialEq)]
pub struct BuildRequest {
    pub distro: Distro,
    pub arch: Arch,
    pub board: Board,
    pub stages: Vec<String>,
    pub hostname: String,
    pub locale: String,
    pub timezone: String,
    pub repo_url: String,
    pub args: BTreeMap<String, String>,
    pub no_cache: bool,
    pub name: String,
    pub base: Option<String>,
}

fn invalid(msg: String) -> DBusError {
    DBusError::InvalidArgs(msg)
}

/// RFC 1123 host name: labels of letters, digits and inner hyphens.
pub(crate) fn check_hostname(h: &str) -> Result<(), DBusError> {
    let ok = !h.is_empty()
        && h.len() <= 253
        && h.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        });
    ok.then_some(()).ok_or_else(|| {
        invalid(format!(
            "hostname {:?} is not a valid host name",
            truncate(h)
        ))
    })
}

/// Values that end up in shell commands and config files of the image: a conservative
/// character set per kind keeps quoting problems out of every stage.
fn check_word(key: &str, value: &str, extra: &[char]) -> Result<(), DBusError> {
    let ok = !value.is_empty()
        && value.len() <= 128
        && !value.contains("..")
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || extra.contains(&c));
    ok.then_some(()).ok_or_else(|| {
        invalid(format!(
            "{key} {:?} contains characters that are not allowed",
            truncate(value)
        ))
    })
}

fn check_repo_url(url: &str) -> Result<(), DBusError> {
    if url.is_empty() {
        return Ok(());
    }
    let ok = (url.starts_with("http://") || url.starts_with("https://"))
        && url.len() <= 1024
        && url
            .chars()
            .all(|c| c.is_ascii_graphic() && !matches!(c, '"' | '\'' | '\\' | '`' | '$'));
    ok.then_some(()).ok_or_else(|| {
        invalid(format!(
            "repo_url {:?} must be a plain http(s) URL",
            truncate(url)
        ))
    })
}

impl BuildRequest {
    pub fn parse(options: &Options) -> Result<BuildRequest, DBusError> {
        let distro: Distro = options.required_word(opt::DISTRO)?;
        let arch: Arch = options.required_word(opt::ARCH)?;
        let board: Board = options.required_word(opt::BOARD)?;
        let stages = options
            .strings(opt::STAGES, MAX_STAGES)?
            .ok_or_else(|| invalid("option \"stages\" is required".into()))?;
        for s in &stages {
            stage::check_name(s).map_err(|e| invalid(e.to_string()))?;
        }
        match stages.first().map(String::as_str) {
            Some(stage::INIT) => {}
            _ => return Err(invalid(format!("the first stage must be {}", stage::INIT))),
        }
        if let Some(pos) = stages.iter().position(|s| s == stage::CLEANUP) {
            if pos + 1 != stages.len() {
                return Err(invalid(format!(
                    "{} must be the last stage",
                    stage::CLEANUP
                )));
            }
        }
        let mut seen = std::collections::BTreeSet::new();
        if let Some(dup) = stages.iter().find(|s| !seen.insert(s.as_str())) {
            return Err(invalid(format!("stage {dup:?} is listed twice")));
        }
        let hostname = options
            .string(opt::HOSTNAME)?
            .unwrap_or_else(|| "pi".into());
        check_hostname(&hostname)?;
        let locale = options
            .string(opt::LOCALE)?
            .unwrap_or_else(|| "en_US.UTF-8".into());
        check_word("locale", &locale, &['_', '.', '@', '-'])?;
        let timezone = options
            .string(opt::TIMEZONE)?
            .unwrap_or_else(|| "UTC".into());
        check_word("timezone", &timezone, &['_', '/', '+', '-'])?;
        let repo_url = options.string(opt::REPO_URL)?.unwrap_or_default();
        check_repo_url(&repo_url)?;
        let args = options
            .string_map(opt::ARGS, MAX_USER_ARGS)?
            .unwrap_or_default();
        let name = options
            .string(opt::NAME)?
            .unwrap_or_else(|| format!("{distro}-{board}-{arch}"));
        check_image_name(&name)?;
        let base = options.string(opt::BASE)?;
        if let Some(b) = &base {
            if b.is_empty()
                || b.len() > 256
                || b.chars().any(|c| c.is_whitespace() || c.is_control())
            {
                return Err(invalid(format!("base {b:?} is not an image name")));
            }
        }
        Ok(BuildRequest {
            distro,
            arch,
            board,
            stages,
            hostname,
            locale,
            timezone,
            repo_url,
            args,
            no_cache: options.flag(opt::NO_CACHE)?,
            name,
            base,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;
    use zbus::{OwnedVariant, Variant};

    fn parse(pairs: Vec<(&str, Variant<'static>)>) -> Result<BuildRequest, DBusError> {
        let map: HashMap<String, OwnedVariant> = pairs
            .into_iter()
            .map(|(k, v)| (k.to_owned(), OwnedVariant::try_from(v).unwrap()))
            .collect();
        BuildRequest::parse(&Options::new(map, KEYS)?)
    }

    fn minimal() -> Vec<(&'static str, Variant<'static>)> {
        vec![
            ("distro", Variant::from("debian")),
            ("arch", Variant::from("aarch64")),
            ("board", Variant::from("rpi4")),
            (
                "stages",
                Variant::from(vec!["__init__", "os", "__cleanup__"]),
            ),
        ]
    }

    #[test]
    fn defaults() {
        let r = parse(minimal()).unwrap();
        assert_eq!(r.name, "debian-rpi4-aarch64");
        assert_eq!(r.hostname, "pi");
        assert!(!r.no_cache && r.args.is_empty() && r.base.is_none());
    }

    #[test]
    fn refusals_name_the_problem() {
        let cases: Vec<(&str, Variant<'static>, &str)> = vec![
            (
                "stages",
                Variant::from(vec!["os", "__init__"]),
                "first stage",
            ),
            (
                "stages",
                Variant::from(vec!["__init__", "__cleanup__", "os"]),
                "last stage",
            ),
            (
                "stages",
                Variant::from(vec!["__init__", "os", "os"]),
                "twice",
            ),
            (
                "stages",
                Variant::from(vec!["__init__", "../etc"]),
                "not allowed",
            ),
            ("hostname", Variant::from("bad_host"), "host name"),
            (
                "locale",
                Variant::from("en_US.UTF-8; rm -rf /"),
                "not allowed",
            ),
            ("timezone", Variant::from("../../etc/shadow"), "not allowed"),
            ("repo_url", Variant::from("file:///etc"), "http"),
            ("repo_url", Variant::from("http://x/$(id)"), "http"),
            ("name", Variant::from("UPPER"), "not allowed"),
            ("board", Variant::from("rpi9"), "rpi9"),
        ];
        for (key, value, needle) in cases {
            let mut pairs: Vec<_> = minimal().into_iter().filter(|(k, _)| *k != key).collect();
            pairs.push((key, value));
            let msg = parse(pairs).unwrap_err().message();
            assert!(msg.contains(needle), "{key}: {msg:?} lacks {needle:?}");
        }
        let mut pairs = minimal();
        pairs.retain(|(k, _)| *k != "distro");
        assert!(parse(pairs).unwrap_err().message().contains("required"));
    }
}
