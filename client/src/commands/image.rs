//! `pib-client image [NAME] -o FILE`: a built result as a bootable SD-card image. The client
//! opens the output itself and hands the daemon only the descriptor; the side files (.bmap,
//! .sha256, the rpi-imager manifest) are written from the job's result.

use std::io::IsTerminal;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};

use pib_dbus_interfaces::types::result;
use serde_json::{json, Value};
use zbus::Fd;

use crate::bus::Bus;
use crate::calls;
use crate::cli::ImageArgs;
use crate::commands::images::no_image;
use crate::errors::ClientError;
use crate::follow;
use crate::humanize;
use crate::job::Snapshot;
use crate::layout::{self, ImageSection, Layout, SizeValue};
use crate::outfile::{self, PendingFile};
use crate::output::{self, Ui};

/// The layout: pib.toml's [image], then --layout FILE, then the flags.
fn settle(args: &ImageArgs, project: &ImageSection) -> Result<Layout, ClientError> {
    let mut l = Layout::default();
    l.apply(project)?;
    if let Some(path) = &args.layout {
        l.apply(&layout::read_file(path)?)?;
    }
    let bytes = |v: Option<u64>| v.map(SizeValue::Bytes);
    l.apply(&ImageSection {
        boot_size: bytes(args.boot_size),
        size: bytes(args.size),
        root_headroom: bytes(args.root_headroom),
        data_size: bytes(args.data_size),
        data_label: args.data_label.clone(),
        compress: args.compress.map(|c| c.word().to_owned()),
        hostname: args.hostname.clone(),
    })?;
    Ok(l)
}

/// Where the files go: the image (with the compression's extension added when missing),
/// and the side files named after the uncompressed image.
#[derive(Debug, PartialEq, Eq)]
struct Outputs {
    image: PathBuf,
    bmap: PathBuf,
    sha256: PathBuf,
    manifest: PathBuf,
}

fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

fn outputs(output: &Path, compress: Option<&str>) -> Outputs {
    let ext = compress.map(|c| if c == "xz" { ".xz" } else { ".zst" });
    let text = output.to_string_lossy();
    let (plain, image) = match ext {
        Some(e) if text.ends_with(e) => (
            PathBuf::from(&text[..text.len() - e.len()]),
            output.to_owned(),
        ),
        Some(e) => (output.to_owned(), with_suffix(output, e)),
        None => (output.to_owned(), output.to_owned()),
    };
    Outputs {
        sha256: with_suffix(&image, ".sha256"),
        bmap: with_suffix(&plain, ".bmap"),
        manifest: with_suffix(&plain, ".json"),
        image,
    }
}

fn file_name(p: &Path) -> String {
    p.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

fn text(s: &Snapshot, key: &str) -> String {
    s.result
        .get(key)
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned()
}

fn number(s: &Snapshot, key: &str) -> u64 {
    s.result.get(key).and_then(Value::as_u64).unwrap_or(0)
}

pub async fn run(ui: &Ui, args: &ImageArgs) -> Result<(), ClientError> {
    let (project_name, section) = crate::project::for_image(args.config.as_deref())?;
    let name = args.name.clone().unwrap_or(project_name);
    let layout = settle(args, &section)?;
    let to_stdout = args.output.as_os_str() == "-";
    if to_stdout && std::io::stdout().is_terminal() {
        return Err(ClientError::Io {
            context: "cannot write the image",
            source: std::io::Error::other("stdout is a terminal; redirect it or give -o FILE"),
        });
    }
    let files = outputs(&args.output, layout.compress.as_deref());
    let pending = if to_stdout {
        None
    } else {
        // Side files are checked before the work starts, so a late refusal wastes nothing.
        for side in [&files.bmap, &files.sha256, &files.manifest] {
            if !args.force && side.symlink_metadata().is_ok() {
                return Err(ClientError::File {
                    doing: "write",
                    path: side.clone(),
                    source: std::io::Error::new(
                        std::io::ErrorKind::AlreadyExists,
                        "it exists (use --force to replace it)",
                    ),
                });
            }
        }
        Some(
            PendingFile::create(&files.image, args.force).map_err(|source| ClientError::File {
                doing: "write",
                path: files.image.clone(),
                source,
            })?,
        )
    };
    let stdout = std::io::stdout();
    let fd = match &pending {
        Some(p) => p.fd(),
        None => stdout.as_fd(),
    };

    let mut bus = Bus::system(ui).await?;
    let manager = bus.manager().await?;
    let body = (name.as_str(), Fd::from(fd), layout.options());
    let started = follow::start(
        &mut bus,
        ui,
        manager.inner(),
        &calls::MAKE_DISK_IMAGE,
        &body,
    )
    .await;
    let (path, ended) = started.map_err(|e| e.when_not_found(|| no_image(&name)))?;

    let mut written = Vec::new();
    if let Some(pending) = pending {
        let write_err = |path: &Path| {
            let path = path.to_owned();
            move |source| ClientError::File {
                doing: "write",
                path,
                source,
            }
        };
        written.push(pending.commit().map_err(write_err(&files.image))?);
        let bmap = text(&ended, result::BMAP);
        written.push(
            outfile::write_whole(&files.bmap, bmap.as_bytes(), args.force)
                .map_err(write_err(&files.bmap))?,
        );
        let sum = format!(
            "{}  {}\n",
            text(&ended, result::OUTPUT_SHA256),
            file_name(&files.image)
        );
        written.push(
            outfile::write_whole(&files.sha256, sum.as_bytes(), args.force)
                .map_err(write_err(&files.sha256))?,
        );
        let manifest = repository(&ended, &file_name(&files.image));
        let manifest = serde_json::to_string_pretty(&manifest).unwrap_or_default() + "\n";
        written.push(
            outfile::write_whole(&files.manifest, manifest.as_bytes(), args.force)
                .map_err(write_err(&files.manifest))?,
        );
    }

    if ui.json {
        let mut v = output::job_result_json(&path, &ended);
        v["files"] = json!(written);
        output::json_line(&v);
    } else if !ui.quiet {
        let partitions: Value =
            serde_json::from_str(&text(&ended, result::PARTITIONS)).unwrap_or(Value::Null);
        let mut lines = vec![format!(
            "Made a {} image of {name}{}.",
            humanize::size(number(&ended, result::IMAGE_SIZE)),
            if to_stdout {
                " on stdout".to_owned()
            } else {
                String::new()
            }
        )];
        for p in partitions.as_array().into_iter().flatten() {
            lines.push(format!(
                "  p{} {:<8} {:<6} {}",
                p["number"],
                p["label"].as_str().unwrap_or_default(),
                p["type"].as_str().unwrap_or_default(),
                humanize::size(p["size"].as_u64().unwrap_or(0))
            ));
        }
        for f in &written {
            lines.push(format!("  wrote {}", f.display()));
        }
        output::err_line(&lines.join("\n"));
    }
    Ok(())
}

/// An rpi-imager repository with one entry: the daemon's, plus where the image is.
fn repository(s: &Snapshot, image_file: &str) -> Value {
    let mut entry: Value =
        serde_json::from_str(&text(s, result::MANIFEST)).unwrap_or_else(|_| json!({}));
    entry["url"] = json!(image_file);
    json!({ "os_list": [entry] })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_names() {
        let o = outputs(Path::new("out/pi.img"), None);
        assert_eq!(o.image, Path::new("out/pi.img"));
        assert_eq!(o.bmap, Path::new("out/pi.img.bmap"));
        assert_eq!(o.sha256, Path::new("out/pi.img.sha256"));
        assert_eq!(o.manifest, Path::new("out/pi.img.json"));
        let z = outputs(Path::new("pi.img"), Some("zstd"));
        assert_eq!(z.image, Path::new("pi.img.zst"));
        assert_eq!(z.bmap, Path::new("pi.img.bmap"));
        assert_eq!(z.sha256, Path::new("pi.img.zst.sha256"));
        let x = outputs(Path::new("pi.img.xz"), Some("xz"));
        assert_eq!(x.image, Path::new("pi.img.xz"));
        assert_eq!(x.manifest, Path::new("pi.img.json"));
    }
}
