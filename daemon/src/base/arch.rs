//! Arch Linux ARM bases: the mirror's generic Raspberry Pi tarball, verified against the md5
//! file published beside it, cached, and imported.
//!
//! Cache layout in `cache_dir`:
//! - `TARBALL`: a verified download, only ever created by renaming a verified `.part` file;
//! - `TARBALL.meta`: its md5 (as the mirror published it) and sha256 (our digest);
//! - `TARBALL.part-PID-RAND`: a download in progress, deleted on any failure; leftovers of a
//!   killed daemon (other PID) are deleted by the next fetch.
//!
//! Freshness: the mirror's md5 file is tiny, so re-validation fetches it and compares it with
//! the cached md5; the tarball is downloaded again only when they differ.

use std::path::{Path, PathBuf};

use md5::{Digest as _, Md5};
use reqwest::Url;
use sha2::Sha256;
use tokio::io::AsyncWriteExt;
use tokio_util::sync::CancellationToken;

use super::docker::{import_stream, BaseImage, ImportPlan, Produced, Sink};
use super::error::BaseError;
use super::fsutil::{ensure_private_dir, is_stale_suffix, temp_suffix, RemoveOnDrop};
use super::http::{parse_mirror, Fetcher};
use super::source::Pump;
use super::{Ctx, Progress};

/// The md5 file is one line; anything longer is not one.
const MAX_MD5_FILE: u64 = 4096;

/// Checksums of a cached tarball.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Meta {
    md5: String,
    sha256: String,
}

pub(crate) async fn fetch(
    ctx: &Ctx<'_>,
    existing: Option<BaseImage>,
    previous_id: Option<String>,
    refresh: bool,
) -> Result<BaseImage, BaseError> {
    let Ctx {
        docker,
        cfg,
        spec,
        progress,
        cancel,
    } = *ctx;
    let tarball = spec
        .arch_tarball()
        .ok_or_else(|| BaseError::InvalidSpec("not an Arch Linux ARM base".to_owned()))?;
    let mirror = parse_mirror("arch_mirror", &cfg.arch_mirror)?;
    let join = |name: &str| {
        mirror.join(name).map_err(|e| BaseError::Config {
            setting: "arch_mirror",
            value: cfg.arch_mirror.clone(),
            reason: format!("cannot form the URL of {name}: {e}"),
        })
    };
    let url = join(tarball)?;
    let md5_url = join(&format!("{tarball}.md5"))?;

    ensure_private_dir(&cfg.cache_dir)?;
    // Boards of one machine share the tarball: one download at a time per file.
    let _tarball_lock = super::lock(format!("arch-tarball:{tarball}"), cancel).await?;
    remove_stale_parts(&cfg.cache_dir, tarball);

    let local = cfg.cache_dir.join(tarball);
    let meta_path = cfg.cache_dir.join(format!("{tarball}.meta"));
    let cached = read_meta(&local, &meta_path);

    let meta = match cached {
        Some(m) if !refresh => {
            progress.log(format!("using the cached {tarball}"));
            m
        }
        cached => {
            progress.stage("check");
            let fetcher =
                Fetcher::for_mirror(&mirror, cfg.stall_timeout, cfg.download_limit).await?;
            let text = fetcher.get_small(&md5_url, MAX_MD5_FILE, cancel).await?;
            let remote_md5 = parse_md5_file(&text, tarball, &md5_url)?;
            match cached {
                Some(m) if m.md5 == remote_md5 => {
                    progress.log(format!("the mirror's {tarball} is unchanged"));
                    m
                }
                _ => {
                    download(
                        &fetcher,
                        &url,
                        &remote_md5,
                        &local,
                        &meta_path,
                        progress,
                        cancel,
                    )
                    .await?
                }
            }
        }
    };

    let digest = format!("sha256:{}", meta.sha256);
    if let Some(mut img) = existing.filter(|i| i.digest() == Some(digest.as_str())) {
        progress.log(format!("{} is up to date", img.name));
        img.cached = true;
        return Ok(img);
    }

    let plan = ImportPlan {
        cfg,
        spec,
        origin: url.to_string(),
        previous: previous_id,
    };
    let produce = |sink: Sink| async move {
        produce_cached(&local, &meta_path, tarball, &meta, &sink, progress, cancel).await
    };
    import_stream(docker, plan, progress, cancel, produce).await
}

/// Downloads the tarball under a temporary name, verifies it, and only then gives it its
/// real name. Any failure (including cancellation, or this future being dropped) deletes the
/// temporary file.
async fn download(
    fetcher: &Fetcher,
    url: &Url,
    expected_md5: &str,
    local: &Path,
    meta_path: &Path,
    progress: &dyn Progress,
    cancel: &CancellationToken,
) -> Result<Meta, BaseError> {
    let part_path = PathBuf::from(format!("{}.part-{}", local.display(), temp_suffix()));
    let part = RemoveOnDrop::new(part_path);
    let mut file = tokio::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(part.path())
        .await
        .map_err(|e| BaseError::cache(part.path(), e))?;
    progress.stage("download");
    progress.log(format!("downloading {url}"));
    let got = fetcher.download(url, &mut file, progress, cancel).await?;
    progress.stage("verify");
    if got.md5 != expected_md5 {
        return Err(BaseError::ChecksumMismatch {
            what: url.to_string(),
            expected: expected_md5.to_owned(),
            actual: got.md5,
        });
    }
    file.sync_all()
        .await
        .map_err(|e| BaseError::cache(part.path(), e))?;
    drop(file);
    // Drop the old checksums before the new tarball takes the name, so that a crash in
    // between never pairs a tarball with another one's checksums.
    remove_if_exists(meta_path)?;
    tokio::fs::rename(part.path(), local)
        .await
        .map_err(|e| BaseError::cache(local, e))?;
    part.disarm();
    let meta = Meta {
        md5: got.md5,
        sha256: got.sha256,
    };
    write_meta(meta_path, &meta).await?;
    progress.log(format!(
        "verified {} bytes, md5 {}, sha256 {}",
        got.bytes, meta.md5, meta.sha256
    ));
    Ok(meta)
}

/// Streams the cached tarball into the import, checking it again on the way: a cached file
/// may have been damaged since it was verified. A damaged one is deleted, so the next fetch
/// downloads it afresh.
async fn produce_cached(
    local: &Path,
    meta_path: &Path,
    tarball: &str,
    meta: &Meta,
    sink: &Sink,
    progress: &dyn Progress,
    cancel: &CancellationToken,
) -> Result<Produced, BaseError> {
    progress.stage("import");
    let mut file = tokio::fs::File::open(local)
        .await
        .map_err(|e| BaseError::cache(local, e))?;
    let total = file
        .metadata()
        .await
        .map_err(|e| BaseError::cache(local, e))?
        .len();
    let mut md5 = Md5::new();
    let mut sha = Sha256::new();
    let pump = Pump {
        sink,
        progress,
        cancel,
        total,
        limit: None,
        position: None,
    };
    pump.run(&mut file, |c| {
        md5.update(c);
        sha.update(c);
    })
    .await?;
    let md5 = hex::encode(md5.finalize());
    let sha256 = hex::encode(sha.finalize());
    if md5 != meta.md5 || sha256 != meta.sha256 {
        let _ = remove_if_exists(meta_path);
        let _ = remove_if_exists(local);
        return Err(BaseError::ChecksumMismatch {
            what: format!("the cached {tarball} (deleted; fetch again to download it)"),
            expected: meta.md5.clone(),
            actual: md5,
        });
    }
    Ok(Produced { sha256 })
}

/// Parses `HEX  NAME` (md5sum's output format), checking that it is about our tarball.
fn parse_md5_file(body: &[u8], tarball: &str, url: &Url) -> Result<String, BaseError> {
    let bad = |reason: String| BaseError::BadChecksumFile {
        url: url.to_string(),
        reason,
    };
    let text = std::str::from_utf8(body).map_err(|_| bad("it is not text".to_owned()))?;
    let line = text
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .ok_or_else(|| bad("it is empty".to_owned()))?;
    let mut words = line.split_whitespace();
    let hash = words.next().unwrap_or("");
    if hash.len() != 32 || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(bad(format!("{hash:?} is not an md5 sum")));
    }
    if let Some(name) = words.next() {
        // md5sum marks binary mode with '*'; some mirrors keep a path.
        let name = name.trim_start_matches('*');
        let base = name.rsplit('/').next().unwrap_or(name);
        if base != tarball {
            return Err(bad(format!("it is for {name}, not {tarball}")));
        }
    }
    Ok(hash.to_ascii_lowercase())
}

fn read_meta(local: &Path, meta_path: &Path) -> Option<Meta> {
    if !local.is_file() {
        return None;
    }
    let text = std::fs::read_to_string(meta_path).ok()?;
    let mut md5 = None;
    let mut sha256 = None;
    for line in text.lines() {
        match line.split_once(' ') {
            Some(("md5", v)) => md5 = Some(v.trim().to_owned()),
            Some(("sha256", v)) => sha256 = Some(v.trim().to_owned()),
            _ => {}
        }
    }
    Some(Meta {
        md5: md5?,
        sha256: sha256?,
    })
}

/// Writes the checksums through a temporary file and a rename, so that a reader never sees
/// half a file.
async fn write_meta(meta_path: &Path, meta: &Meta) -> Result<(), BaseError> {
    let tmp = RemoveOnDrop::new(PathBuf::from(format!(
        "{}.part-{}",
        meta_path.display(),
        temp_suffix()
    )));
    let mut f = tokio::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(tmp.path())
        .await
        .map_err(|e| BaseError::cache(tmp.path(), e))?;
    f.write_all(format!("md5 {}\nsha256 {}\n", meta.md5, meta.sha256).as_bytes())
        .await
        .map_err(|e| BaseError::cache(tmp.path(), e))?;
    f.sync_all()
        .await
        .map_err(|e| BaseError::cache(tmp.path(), e))?;
    drop(f);
    tokio::fs::rename(tmp.path(), meta_path)
        .await
        .map_err(|e| BaseError::cache(meta_path, e))?;
    tmp.disarm();
    Ok(())
}

fn remove_if_exists(path: &Path) -> Result<(), BaseError> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(BaseError::cache(path, e)),
    }
}

/// Deletes partial downloads of `tarball` left by a daemon that was killed mid-download.
fn remove_stale_parts(dir: &Path, tarball: &str) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    let prefixes = [format!("{tarball}.part-"), format!("{tarball}.meta.part-")];
    for entry in rd.flatten() {
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let stale = prefixes
            .iter()
            .filter_map(|p| name.strip_prefix(p.as_str()))
            .any(is_stale_suffix);
        if stale {
            if let Err(e) = std::fs::remove_file(entry.path()) {
                tracing::warn!("cannot remove {}: {e}", entry.path().display());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn md5_files() {
        let url = Url::parse("http://m.example.invalid/os/x.md5").unwrap();
        let t = "ArchLinuxARM-rpi-aarch64-latest.tar.gz";
        let h = "0123456789abcdef0123456789ABCDEF";
        assert_eq!(
            parse_md5_file(format!("{h}  {t}\n").as_bytes(), t, &url).unwrap(),
            h.to_ascii_lowercase()
        );
        assert!(parse_md5_file(format!("{h} *{t}").as_bytes(), t, &url).is_ok());
        assert!(parse_md5_file(h.as_bytes(), t, &url).is_ok());
        assert!(parse_md5_file(format!("{h}  other.tar.gz").as_bytes(), t, &url).is_err());
        assert!(parse_md5_file(b"<html>not found</html>", t, &url).is_err());
        assert!(parse_md5_file(b"", t, &url).is_err());
    }

    #[test]
    fn stale_parts_are_removed_live_ones_kept() {
        let d = tempfile::tempdir().unwrap();
        let t = "A.tar.gz";
        let stale = d.path().join(format!("{t}.part-1-abc"));
        let live = d.path().join(format!("{t}.part-{}", temp_suffix()));
        let other = d.path().join("B.tar.gz.part-1-abc");
        for p in [&stale, &live, &other] {
            std::fs::write(p, b"x").unwrap();
        }
        remove_stale_parts(d.path(), t);
        assert!(!stale.exists());
        assert!(live.exists());
        assert!(other.exists());
    }
}
