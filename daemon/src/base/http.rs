//! Downloads for a root service: bounded in size and time, hashed while they stream, and never
//! steered somewhere the configured mirror did not point.
//!
//! A mirror (or whoever sits between us and it) answers with redirects and names that resolve
//! as it likes. Followed blindly, a redirect to `file:` or to `http://127.0.0.1:2375/` would
//! make the daemon, running as root, read local files or talk to local services on an
//! attacker's behalf. So: only http and https, and when the configured mirror is a public host,
//! no hop (redirect target or DNS answer) may lead to a loopback, private or link-local
//! address. A mirror that is itself local (a LAN cache, a test server) may use local addresses.

use std::error::Error as StdError;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use md5::{Digest as _, Md5};
use reqwest::Url;
use sha2::Sha256;
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

use super::error::BaseError;
use super::Progress;

const MAX_REDIRECTS: usize = 5;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// How often byte progress is reported at most; the job throttles again, this only keeps a
/// fast local transfer from making a call per 8 KiB chunk.
pub(crate) const PROGRESS_INTERVAL: Duration = Duration::from_millis(100);

/// Parses a configured mirror base URL; the result ends in '/' so that file names join below it.
pub(crate) fn parse_mirror(setting: &'static str, value: &str) -> Result<Url, BaseError> {
    let bad = |reason: &str| BaseError::Config {
        setting,
        value: value.to_owned(),
        reason: reason.to_owned(),
    };
    let mut url = Url::parse(value).map_err(|e| bad(&format!("not a URL ({e})")))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(bad("only http and https mirrors are supported"));
    }
    if url.host().is_none() {
        return Err(bad("the URL has no host"));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(bad("a mirror URL takes no query or fragment"));
    }
    if !url.path().ends_with('/') {
        let p = format!("{}/", url.path());
        url.set_path(&p);
    }
    Ok(url)
}

/// Addresses that reach this machine or its local networks rather than the internet.
pub(crate) fn is_local_ip(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_local_v4(v4),
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_local_v4(v4);
            }
            let seg0 = v6.segments()[0];
            v6.is_loopback()
                || v6.is_unspecified()
                || (seg0 & 0xfe00) == 0xfc00 // unique local fc00::/7
                || (seg0 & 0xffc0) == 0xfe80 // link-local fe80::/10
                || (seg0 & 0xffc0) == 0xfec0 // deprecated site-local
                || v6.is_multicast()
        }
    }
}

fn is_local_v4(v4: Ipv4Addr) -> bool {
    let o = v4.octets();
    v4.is_loopback()
        || v4.is_private()
        || v4.is_link_local()
        || v4.is_unspecified()
        || v4.is_broadcast()
        || v4.is_multicast()
        || o[0] == 0 // "this network"
        || (o[0] == 100 && (o[1] & 0xc0) == 64) // carrier-grade NAT 100.64/10
}

fn is_local_name(host: &str) -> bool {
    let h = host.trim_end_matches('.').to_ascii_lowercase();
    h == "localhost" || h.ends_with(".localhost")
}

/// Why a hop was refused; carried through reqwest's error chain and found again by type.
#[derive(Debug)]
struct RefusedTarget {
    url: String,
    reason: String,
}

impl fmt::Display for RefusedTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.url, self.reason)
    }
}

impl StdError for RefusedTarget {}

/// Checks a URL we are about to request (the first one or a redirect target).
pub(crate) fn check_target(url: &Url, allow_local: bool) -> Result<(), String> {
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!("it leads to a non-HTTP URL ({}:)", url.scheme()));
    }
    if allow_local {
        return Ok(());
    }
    match url.host() {
        None => Err("it has no host".to_owned()),
        Some(url::Host::Ipv4(ip)) if is_local_ip(IpAddr::V4(ip)) => {
            Err(format!("it leads to the local address {ip}"))
        }
        Some(url::Host::Ipv6(ip)) if is_local_ip(IpAddr::V6(ip)) => {
            Err(format!("it leads to the local address {ip}"))
        }
        Some(url::Host::Domain(d)) if is_local_name(d) => {
            Err(format!("it leads to the local host {d}"))
        }
        Some(_) => Ok(()),
    }
}

/// Resolves names like the system does, but refuses any answer that points at a local address
/// when local addresses are not allowed (DNS is as much a redirect as a Location header).
struct GuardedResolver {
    allow_local: bool,
}

impl reqwest::dns::Resolve for GuardedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let allow_local = self.allow_local;
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let addrs: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            if !allow_local {
                if let Some(a) = addrs.iter().find(|a| is_local_ip(a.ip())) {
                    return Err(Box::new(RefusedTarget {
                        url: host,
                        reason: format!("the name resolves to the local address {}", a.ip()),
                    }) as Box<dyn StdError + Send + Sync>);
                }
            }
            Ok(Box::new(addrs.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

/// What a finished download was.
#[derive(Debug, Clone)]
pub(crate) struct Downloaded {
    pub bytes: u64,
    pub md5: String,
    pub sha256: String,
}

/// An HTTP client bound to one mirror's rules.
pub(crate) struct Fetcher {
    client: reqwest::Client,
    allow_local: bool,
    stall: Duration,
    limit: u64,
}

impl Fetcher {
    /// Builds a client for downloads below `mirror`.
    pub(crate) async fn for_mirror(
        mirror: &Url,
        stall: Duration,
        limit: u64,
    ) -> Result<Fetcher, BaseError> {
        let allow_local = mirror_is_local(mirror).await?;
        let policy = reqwest::redirect::Policy::custom(move |attempt| {
            if attempt.previous().len() > MAX_REDIRECTS {
                let url = attempt.url().to_string();
                return attempt.error(RefusedTarget {
                    url,
                    reason: format!("more than {MAX_REDIRECTS} redirects"),
                });
            }
            match check_target(attempt.url(), allow_local) {
                Ok(()) => attempt.follow(),
                Err(reason) => {
                    let url = attempt.url().to_string();
                    attempt.error(RefusedTarget { url, reason })
                }
            }
        });
        let client = reqwest::Client::builder()
            .redirect(policy)
            .dns_resolver(Arc::new(GuardedResolver { allow_local }))
            // Proxies from the environment would bypass the address checks above (the proxy
            // resolves names) and a system service's environment is not the user's anyway.
            .no_proxy()
            .connect_timeout(CONNECT_TIMEOUT)
            .read_timeout(stall)
            .user_agent(concat!("pi-builder/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| BaseError::Network {
                url: mirror.to_string(),
                reason: format!("cannot set up the HTTP client: {e}"),
            })?;
        Ok(Fetcher {
            client,
            allow_local,
            stall,
            limit,
        })
    }

    async fn start(
        &self,
        url: &Url,
        cancel: &CancellationToken,
    ) -> Result<reqwest::Response, BaseError> {
        let send = tokio::time::timeout(self.stall, self.client.get(url.clone()).send());
        let resp = tokio::select! {
            r = send => r.map_err(|_| BaseError::Stalled {
                url: url.to_string(),
                secs: self.stall.as_secs(),
            })?,
            _ = cancel.cancelled() => return Err(BaseError::Cancelled),
        };
        let resp = resp.map_err(|e| map_reqwest(url, e))?;
        if resp.status().is_redirection() {
            // A redirect that comes back as the response was not followed: its Location did
            // not even parse as an address the HTTP stack can request (`file:///...` has no
            // authority), so the policy above never saw it. Report it as the refusal it is.
            let location = resp
                .headers()
                .get(reqwest::header::LOCATION)
                .and_then(|l| l.to_str().ok())
                .unwrap_or("");
            let target = resp.url().join(location).ok();
            let reason = match &target {
                Some(t) => check_target(t, self.allow_local)
                    .err()
                    .unwrap_or_else(|| "it cannot be followed".to_owned()),
                None => "its target is not a valid URL".to_owned(),
            };
            return Err(BaseError::Refused {
                url: target.map_or_else(|| location.to_owned(), |t| t.to_string()),
                reason: format!("the redirect from {url} was not followed: {reason}"),
            });
        }
        if !resp.status().is_success() {
            return Err(BaseError::HttpStatus {
                url: url.to_string(),
                status: resp.status().as_u16(),
            });
        }
        Ok(resp)
    }

    /// Fetches a small file (a checksum) into memory.
    pub(crate) async fn get_small(
        &self,
        url: &Url,
        max: u64,
        cancel: &CancellationToken,
    ) -> Result<Vec<u8>, BaseError> {
        let resp = self.start(url, cancel).await?;
        let mut buf = Vec::new();
        self.stream_body(url, resp, max, &mut buf, None, cancel)
            .await?;
        Ok(buf)
    }

    /// Streams `url` into `out`, hashing as it goes. The caller owns the file and deletes it on
    /// error; this only guarantees that success means "every announced byte arrived".
    pub(crate) async fn download<W: AsyncWrite + Unpin + Send>(
        &self,
        url: &Url,
        out: &mut W,
        progress: &dyn Progress,
        cancel: &CancellationToken,
    ) -> Result<Downloaded, BaseError> {
        let resp = self.start(url, cancel).await?;
        self.stream_body(url, resp, self.limit, out, Some(progress), cancel)
            .await
    }

    async fn stream_body<W: AsyncWrite + Unpin + Send>(
        &self,
        url: &Url,
        resp: reqwest::Response,
        limit: u64,
        out: &mut W,
        progress: Option<&dyn Progress>,
        cancel: &CancellationToken,
    ) -> Result<Downloaded, BaseError> {
        let expected = resp.content_length();
        let too_large = || BaseError::TooLarge {
            url: url.to_string(),
            limit,
        };
        if expected.is_some_and(|n| n > limit) {
            return Err(too_large());
        }
        let truncated = |received: u64| BaseError::Truncated {
            url: url.to_string(),
            received,
            expected: expected
                .map(|n| n.to_string())
                .unwrap_or_else(|| "an unknown number of".to_owned()),
        };
        let mut md5 = Md5::new();
        let mut sha = Sha256::new();
        let mut received: u64 = 0;
        let mut last_report = Instant::now();
        let mut body = resp.bytes_stream();
        loop {
            let next = tokio::select! {
                n = tokio::time::timeout(self.stall, body.next()) => n,
                _ = cancel.cancelled() => return Err(BaseError::Cancelled),
            };
            let chunk = match next {
                Err(_) => {
                    return Err(BaseError::Stalled {
                        url: url.to_string(),
                        secs: self.stall.as_secs(),
                    })
                }
                Ok(None) => break,
                Ok(Some(Err(e))) if e.is_timeout() => {
                    return Err(BaseError::Stalled {
                        url: url.to_string(),
                        secs: self.stall.as_secs(),
                    })
                }
                // A body error after the headers is the connection closing before the
                // announced length (or the chunked terminator) arrived.
                Ok(Some(Err(_))) => return Err(truncated(received)),
                Ok(Some(Ok(c))) => c,
            };
            received += chunk.len() as u64;
            if received > limit {
                return Err(too_large());
            }
            md5.update(&chunk);
            sha.update(&chunk);
            out.write_all(&chunk)
                .await
                .map_err(|e| BaseError::Network {
                    url: url.to_string(),
                    reason: format!("cannot store the download: {e}"),
                })?;
            if let Some(p) = progress {
                if last_report.elapsed() >= PROGRESS_INTERVAL {
                    p.bytes(received, expected.unwrap_or(0));
                    last_report = Instant::now();
                }
            }
        }
        if expected.is_some_and(|n| n != received) {
            return Err(truncated(received));
        }
        out.flush().await.map_err(|e| BaseError::Network {
            url: url.to_string(),
            reason: format!("cannot store the download: {e}"),
        })?;
        if let Some(p) = progress {
            p.bytes(received, expected.unwrap_or(received));
        }
        Ok(Downloaded {
            bytes: received,
            md5: hex::encode(md5.finalize()),
            sha256: hex::encode(sha.finalize()),
        })
    }
}

/// Whether the configured mirror is itself on a local address (then local hops are fine).
async fn mirror_is_local(mirror: &Url) -> Result<bool, BaseError> {
    match mirror.host() {
        Some(url::Host::Ipv4(ip)) => Ok(is_local_ip(IpAddr::V4(ip))),
        Some(url::Host::Ipv6(ip)) => Ok(is_local_ip(IpAddr::V6(ip))),
        Some(url::Host::Domain(d)) => {
            if is_local_name(d) {
                return Ok(true);
            }
            let port = mirror.port_or_known_default().unwrap_or(80);
            let addrs =
                tokio::net::lookup_host((d, port))
                    .await
                    .map_err(|e| BaseError::Network {
                        url: mirror.to_string(),
                        reason: format!("cannot resolve {d}: {e}"),
                    })?;
            let mut any = false;
            for a in addrs {
                if is_local_ip(a.ip()) {
                    return Ok(true);
                }
                any = true;
            }
            if !any {
                return Err(BaseError::Network {
                    url: mirror.to_string(),
                    reason: format!("{d} has no addresses"),
                });
            }
            Ok(false)
        }
        None => Err(BaseError::Config {
            setting: "arch_mirror",
            value: mirror.to_string(),
            reason: "the URL has no host".to_owned(),
        }),
    }
}

/// Turns a request error into ours, recognising refusals from the redirect policy and the
/// resolver wherever reqwest nested them.
fn map_reqwest(url: &Url, e: reqwest::Error) -> BaseError {
    let mut src: Option<&(dyn StdError + 'static)> = Some(&e);
    let mut chain = Vec::new();
    while let Some(s) = src {
        if let Some(r) = s.downcast_ref::<RefusedTarget>() {
            return BaseError::Refused {
                url: r.url.clone(),
                reason: r.reason.clone(),
            };
        }
        chain.push(s.to_string());
        src = s.source();
    }
    chain.dedup();
    BaseError::Network {
        url: url.to_string(),
        reason: chain.join(": "),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_addresses() {
        for a in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "0.0.0.0",
            "100.64.0.1",
            "::1",
            "::",
            "fd00::1",
            "fe80::1",
            "::ffff:127.0.0.1",
        ] {
            assert!(is_local_ip(a.parse().unwrap()), "{a}");
        }
        for a in ["93.184.216.34", "8.8.8.8", "2001:db8::1", "::ffff:8.8.8.8"] {
            assert!(!is_local_ip(a.parse().unwrap()), "{a}");
        }
    }

    #[test]
    fn redirect_targets() {
        let u = |s: &str| Url::parse(s).unwrap();
        assert!(check_target(&u("https://mirror.example.invalid/os/x"), false).is_ok());
        assert!(check_target(&u("file:///etc/shadow"), false).is_err());
        assert!(check_target(&u("file:///etc/shadow"), true).is_err());
        assert!(check_target(&u("ftp://mirror.example.invalid/x"), true).is_err());
        assert!(check_target(&u("http://127.0.0.1:2375/x"), false).is_err());
        assert!(check_target(&u("http://[::1]/x"), false).is_err());
        assert!(check_target(&u("http://localhost/x"), false).is_err());
        assert!(check_target(&u("http://10.0.0.1/x"), false).is_err());
        assert!(check_target(&u("http://127.0.0.1:2375/x"), true).is_ok());
    }

    #[test]
    fn mirror_urls() {
        let m = parse_mirror("arch_mirror", "http://mirror.example.invalid/os").unwrap();
        assert_eq!(m.as_str(), "http://mirror.example.invalid/os/");
        assert_eq!(
            m.join("a.tar.gz").unwrap().as_str(),
            "http://mirror.example.invalid/os/a.tar.gz"
        );
        assert!(parse_mirror("arch_mirror", "file:///srv/os/").is_err());
        assert!(parse_mirror("arch_mirror", "not a url").is_err());
        assert!(parse_mirror("arch_mirror", "http://h.example.invalid/os/?x=1").is_err());
    }

    #[tokio::test]
    async fn public_mirror_refuses_local_names() {
        let r = GuardedResolver { allow_local: false };
        let name: reqwest::dns::Name = "localhost".parse().unwrap();
        let err = reqwest::dns::Resolve::resolve(&r, name)
            .await
            .err()
            .unwrap();
        assert!(err.to_string().contains("local address"), "{err}");
        let r = GuardedResolver { allow_local: true };
        let name: reqwest::dns::Name = "localhost".parse().unwrap();
        assert!(reqwest::dns::Resolve::resolve(&r, name).await.is_ok());
    }
}
