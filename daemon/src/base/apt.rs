//! The host's Debian mirror, read from its apt configuration.
//!
//! The project never names a mirror itself: the machine's administrator already chose one (and
//! on locked-down networks it is the only one reachable), so Debian bases are bootstrapped from
//! that. Both source formats are read in apt's own order: `sources.list`, then the files in
//! `sources.list.d/` sorted by name, one-line `*.list` and deb822 `*.sources` alike.

use std::path::{Path, PathBuf};

use super::error::BaseError;

/// Where apt keeps its configuration on every Debian system.
const APT_ETC: &str = "/etc/apt";

/// One `deb` source as apt sees it (only the parts we choose by).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AptSource {
    pub uri: String,
    pub suites: Vec<String>,
    pub components: Vec<String>,
    /// The keyring the source is pinned to, if any (third-party repositories use their own).
    pub signed_by: Option<String>,
}

/// The Debian mirror configured on this host.
pub fn host_debian_mirror() -> Result<String, BaseError> {
    debian_mirror_in(Path::new(APT_ETC))
}

/// The Debian mirror configured in the apt directory `etc` (`/etc/apt` on a real host).
pub fn debian_mirror_in(etc: &Path) -> Result<String, BaseError> {
    let mut sources = Vec::new();
    let main_list = etc.join("sources.list");
    if let Some(text) = read_optional(&main_list)? {
        sources.extend(parse_one_line(&text));
    }
    let dir = etc.join("sources.list.d");
    let mut files: Vec<PathBuf> = match std::fs::read_dir(&dir) {
        Ok(rd) => rd
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                matches!(
                    p.extension().and_then(|e| e.to_str()),
                    Some("list" | "sources")
                )
            })
            .collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(source) => return Err(BaseError::AptSources { path: dir, source }),
    };
    // apt reads the directory in lexical order; the first suitable entry wins, as it would be
    // the administrator's preferred one.
    files.sort();
    for file in &files {
        let Some(text) = read_optional(file)? else {
            continue;
        };
        if file.extension().and_then(|e| e.to_str()) == Some("sources") {
            sources.extend(parse_deb822(&text));
        } else {
            sources.extend(parse_one_line(&text));
        }
    }
    sources
        .iter()
        .find(|s| is_debian_archive(s))
        .map(|s| s.uri.trim_end_matches('/').to_owned())
        .ok_or_else(|| BaseError::NoHostMirror {
            searched: format!(
                "{} and {}/*.list, *.sources",
                main_list.display(),
                dir.display()
            ),
        })
}

fn read_optional(path: &Path) -> Result<Option<String>, BaseError> {
    match std::fs::read_to_string(path) {
        Ok(t) => Ok(Some(t)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(BaseError::AptSources {
            path: path.to_owned(),
            source,
        }),
    }
}

/// Whether a source is the Debian archive proper: binary packages of component `main` over
/// http(s) at a path ending in `/debian` (so not `/debian-security`, nor repositories such as
/// nodesource's), and not pinned to a keyring other than Debian's own, which is how
/// third-party repositories that also live under a `/debian` path are told apart.
fn is_debian_archive(s: &AptSource) -> bool {
    let Some((scheme, rest)) = s.uri.split_once("://") else {
        return false;
    };
    if !matches!(scheme.to_ascii_lowercase().as_str(), "http" | "https") {
        return false;
    }
    let path = match rest.find('/') {
        Some(i) => rest[i..].trim_end_matches('/'),
        None => "",
    };
    if !path.ends_with("/debian") {
        return false;
    }
    if !s.components.iter().any(|c| c == "main") {
        return false;
    }
    if !s.suites.iter().any(|x| !x.ends_with("-security")) {
        return false;
    }
    match &s.signed_by {
        None => true,
        Some(k) => {
            let k = k.trim();
            // An inline key block cannot be judged by name; a keyring file can.
            k.starts_with("-----BEGIN")
                || k.split([' ', ',']).any(|f| {
                    f.rsplit('/')
                        .next()
                        .unwrap_or(f)
                        .starts_with("debian-archive-keyring")
                })
        }
    }
}

/// Parses the one-line format: `deb [opt=val ...] URI SUITE [COMPONENT...]`.
pub fn parse_one_line(text: &str) -> Vec<AptSource> {
    let mut out = Vec::new();
    for raw in text.lines() {
        // apt treats everything after '#' as a comment.
        let line = raw.split('#').next().unwrap_or("").trim();
        let mut words = line.split_whitespace();
        if words.next() != Some("deb") {
            continue;
        }
        let mut rest: Vec<&str> = words.collect();
        let mut signed_by = None;
        if rest.first().is_some_and(|w| w.starts_with('[')) {
            // Options run to the word that closes the bracket; they may be spread over words.
            let end = rest.iter().position(|w| w.ends_with(']'));
            let Some(end) = end else { continue };
            let opts = rest[..=end].join(" ");
            let opts = opts.trim_start_matches('[').trim_end_matches(']');
            for opt in opts.split_whitespace() {
                if let Some(v) = opt.strip_prefix("signed-by=") {
                    signed_by = Some(v.to_owned());
                }
            }
            rest.drain(..=end);
        }
        if rest.len() < 2 {
            continue;
        }
        out.push(AptSource {
            uri: rest[0].to_owned(),
            suites: vec![rest[1].to_owned()],
            components: rest[2..].iter().map(|s| (*s).to_owned()).collect(),
            signed_by,
        });
    }
    out
}

/// Parses the deb822 format of `*.sources` files: stanzas separated by blank lines, fields
/// `Types`, `URIs`, `Suites`, `Components`, `Signed-By`, `Enabled`.
pub fn parse_deb822(text: &str) -> Vec<AptSource> {
    let mut out = Vec::new();
    let mut stanza: Vec<(String, String)> = Vec::new();
    let flush = |stanza: &mut Vec<(String, String)>, out: &mut Vec<AptSource>| {
        if stanza.is_empty() {
            return;
        }
        let get = |name: &str| {
            stanza
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.as_str())
        };
        let list = |name: &str| -> Vec<String> {
            get(name)
                .map(|v| v.split_whitespace().map(str::to_owned).collect())
                .unwrap_or_default()
        };
        let enabled = get("Enabled").is_none_or(|v| !v.trim().eq_ignore_ascii_case("no"));
        if enabled && list("Types").iter().any(|t| t == "deb") {
            for uri in list("URIs") {
                out.push(AptSource {
                    uri,
                    suites: list("Suites"),
                    components: list("Components"),
                    signed_by: get("Signed-By").map(|v| v.trim().to_owned()),
                });
            }
        }
        stanza.clear();
    };
    for line in text.lines() {
        if line.starts_with('#') {
            continue;
        }
        if line.trim().is_empty() {
            flush(&mut stanza, &mut out);
        } else if line.starts_with([' ', '\t']) {
            // A continuation line (e.g. an inline key block) belongs to the previous field.
            if let Some((_, v)) = stanza.last_mut() {
                v.push('\n');
                v.push_str(line.trim());
            }
        } else if let Some((k, v)) = line.split_once(':') {
            stanza.push((k.trim().to_owned(), v.trim().to_owned()));
        }
    }
    flush(&mut stanza, &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_options_and_comments() {
        let s = parse_one_line(
            "# comment\n\
             deb [arch=amd64 signed-by=/usr/share/keyrings/x.gpg] http://a.example.invalid/debian bookworm main contrib # tail\n\
             deb-src http://a.example.invalid/debian bookworm main\n\
             deb [ trusted=yes ] http://b.example.invalid/debian bookworm main\n\
             deb broken\n",
        );
        assert_eq!(s.len(), 2);
        assert_eq!(s[0].uri, "http://a.example.invalid/debian");
        assert_eq!(s[0].components, vec!["main", "contrib"]);
        assert_eq!(s[0].signed_by.as_deref(), Some("/usr/share/keyrings/x.gpg"));
        assert_eq!(s[1].uri, "http://b.example.invalid/debian");
        assert_eq!(s[1].signed_by, None);
    }

    #[test]
    fn deb822_stanzas() {
        let s = parse_deb822(
            "Types: deb deb-src\n\
             # a comment\n\
             URIs: http://m1.example.invalid/debian http://m2.example.invalid/debian\n\
             Suites: bookworm bookworm-updates\n\
             Components: main\n\
             Signed-By: -----BEGIN PGP PUBLIC KEY BLOCK-----\n .\n abc\n\
             \n\
             Types: deb\n\
             URIs: http://m3.example.invalid/debian\n\
             Suites: bookworm\n\
             Components: main\n\
             Enabled: no\n",
        );
        assert_eq!(s.len(), 2);
        assert_eq!(s[1].uri, "http://m2.example.invalid/debian");
        assert_eq!(s[0].suites, vec!["bookworm", "bookworm-updates"]);
        assert!(s[0].signed_by.as_deref().unwrap().contains("abc"));
    }

    #[test]
    fn picks_the_debian_archive_and_skips_others() {
        let yes = |uri: &str, comps: &[&str], suite: &str, key: Option<&str>| {
            is_debian_archive(&AptSource {
                uri: uri.into(),
                suites: vec![suite.into()],
                components: comps.iter().map(|c| (*c).into()).collect(),
                signed_by: key.map(Into::into),
            })
        };
        assert!(yes(
            "http://mirror.example.invalid/debian",
            &["main"],
            "bookworm",
            None
        ));
        assert!(yes(
            "https://mirror.example.invalid/debian/",
            &["main"],
            "bookworm",
            None
        ));
        assert!(yes(
            "http://mirror.example.invalid/debian",
            &["main"],
            "bookworm",
            Some("/usr/share/keyrings/debian-archive-keyring.gpg")
        ));
        assert!(!yes(
            "http://mirror.example.invalid/debian-security",
            &["main"],
            "bookworm-security",
            None
        ));
        assert!(!yes(
            "http://mirror.example.invalid/debian",
            &["main"],
            "bookworm-security",
            None
        ));
        assert!(!yes(
            "http://mirror.example.invalid/debian",
            &["contrib"],
            "bookworm",
            None
        ));
        assert!(!yes(
            "https://deb.nodesource.example.invalid/node_20.x",
            &["main"],
            "nodistro",
            None
        ));
        assert!(!yes(
            "https://repo.example.invalid/apt/debian",
            &["main"],
            "bookworm",
            Some("/usr/share/keyrings/vendor.gpg")
        ));
        assert!(!yes("file:/srv/debian", &["main"], "bookworm", None));
        assert!(!yes("cdrom:[Debian]/debian", &["main"], "bookworm", None));
    }
}
