//! `pib-client flash IMAGE DEVICE...`, `format DEVICE` and `install NAME DEVICE...`: writing
//! cards. The image is opened here, with the user's rights, and passed as a descriptor; the
//! devices are named, and the daemon resolves and checks them. One job per device, followed
//! together: a bar each on a terminal, and Ctrl-C cancels them all.

use std::collections::HashMap;
use std::io::{IsTerminal, Write};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::time::Duration;

use pib_dbus_interfaces::types::{options, result, JobState};
use pib_dbus_interfaces::DBusError;
use serde_json::{json, Value};
use tokio::signal::unix::{signal, SignalKind};
use zbus::{Fd, OwnedObjectPath, Variant};

use crate::bus::Bus;
use crate::calls::{self, Attempt};
use crate::cli::{CardWrite, FlashArgs, FormatArgs, InstallArgs};
use crate::commands::{devices, picker};
use crate::errors::ClientError;
use crate::follow;
use crate::humanize;
use crate::job::Snapshot;
use crate::output::{self, err_line, Ui};
use crate::progress::Progress;

/// A block map larger than this is not a block map.
const MAX_BMAP: u64 = 64 << 20;
const POLL: Duration = Duration::from_millis(250);

/// The block map beside an image: `pi.img.bmap` for `pi.img`, `pi.img.zst` or `pi.img.xz`.
fn bmap_beside(image: &Path) -> PathBuf {
    let text = image.to_string_lossy();
    let plain = [".zst", ".xz"]
        .iter()
        .find_map(|ext| text.strip_suffix(ext))
        .unwrap_or(&text);
    PathBuf::from(format!("{plain}.bmap"))
}

fn compression_of(image: &Path) -> Option<&'static str> {
    match image.extension().and_then(|e| e.to_str()) {
        Some("zst") => Some("zstd"),
        Some("xz") => Some("xz"),
        _ => None,
    }
}

/// The options every card write takes.
fn write_options(w: &CardWrite) -> HashMap<&'static str, Variant<'static>> {
    HashMap::from([
        (options::VERIFY, Variant::from(!w.no_verify)),
        (options::EJECT, Variant::from(w.eject)),
    ])
}

fn read_bmap(path: &Path) -> Result<String, ClientError> {
    let file_error = |source| ClientError::File {
        doing: "read the block map",
        path: path.to_owned(),
        source,
    };
    let len = std::fs::metadata(path).map_err(file_error)?.len();
    if len > MAX_BMAP {
        return Err(file_error(std::io::Error::other(
            "it is too large for a block map",
        )));
    }
    std::fs::read_to_string(path).map_err(file_error)
}

/// Asks before anything is destroyed: a terminal gets a question, anything else needs --yes.
async fn confirm(
    bus: &mut Bus,
    ui: &Ui,
    devices: &[String],
    doing: &str,
    yes: bool,
) -> Result<(), ClientError> {
    if yes {
        return Ok(());
    }
    let terminal = std::io::stdin().is_terminal() && std::io::stderr().is_terminal();
    if ui.json || !terminal {
        return Err(ClientError::Usage(
            "this destroys what the cards hold: confirm with --yes (there is no terminal to ask on)"
                .into(),
        ));
    }
    let known = devices::fetch(bus, true).await.unwrap_or_default();
    err_line(&format!("pib-client: about to {doing}:"));
    for d in devices {
        let canonical = std::fs::canonicalize(d).unwrap_or_else(|_| PathBuf::from(d));
        let found = known
            .iter()
            .find(|k| k["device"].as_str() == Some(&*canonical.to_string_lossy()));
        match found {
            Some(k) => err_line(&format!("  {}", devices::describe(k))),
            None => err_line(&format!("  {d}")),
        }
    }
    eprint!("Everything on them will be lost. Continue? [y/N] ");
    let _ = std::io::stderr().flush();
    let mut answer = String::new();
    std::io::stdin()
        .read_line(&mut answer)
        .map_err(ClientError::io("cannot read the answer"))?;
    if matches!(answer.trim(), "y" | "Y" | "yes" | "YES" | "Yes") {
        Ok(())
    } else {
        Err(ClientError::Interrupted { path: None })
    }
}

pub async fn run(ui: &Ui, args: &FlashArgs) -> Result<(), ClientError> {
    // Said before anything is opened: the command line is incomplete.
    if args.devices.is_empty() && !picker::available(ui.json) {
        return Err(ClientError::Usage(
            "name the card to write: pib-client flash IMAGE DEVICE (`pib-client devices` \
             lists them); without one, a card is picked interactively, which needs a terminal \
             and is never offered with --json"
                .into(),
        ));
    }
    let image = std::fs::File::open(&args.image).map_err(|source| ClientError::File {
        doing: "open",
        path: args.image.clone(),
        source,
    })?;
    let bmap_path = match (&args.bmap, args.no_bmap) {
        (Some(p), _) => Some(p.clone()),
        (None, false) => Some(bmap_beside(&args.image)).filter(|p| p.exists()),
        (None, true) => None,
    };
    let mut opts: HashMap<&str, Variant<'_>> = HashMap::new();
    if let Some(p) = &bmap_path {
        opts.insert(options::BMAP, Variant::from(read_bmap(p)?));
    }
    if let Some(c) = compression_of(&args.image) {
        opts.insert(options::COMPRESSION, Variant::from(c));
    }
    opts.extend(write_options(&args.write));

    let mut bus = Bus::system(ui).await?;
    let chosen = if args.devices.is_empty() {
        vec![pick(&mut bus, &args.image).await?]
    } else {
        args.devices.clone()
    };
    let doing = format!("write {}", args.image.display());
    confirm(&mut bus, ui, &chosen, &doing, args.write.yes).await?;
    let manager = bus.manager().await?;
    let devices: Vec<&str> = chosen.iter().map(String::as_str).collect();
    let jobs: Vec<OwnedObjectPath> = bus
        .call(
            manager.inner(),
            &calls::FLASH,
            &(Fd::from(image.as_fd()), devices, opts),
        )
        .await?;
    drop(image);
    finish(&mut bus, ui, &calls::FLASH, &chosen, jobs).await
}

/// The device the user picks on the terminal from the daemon's listing.
async fn pick(bus: &mut Bus, image: &Path) -> Result<String, ClientError> {
    let listed = devices::fetch(bus, false).await?;
    let name = image
        .file_name()
        .map_or_else(|| image.to_string_lossy(), |n| n.to_string_lossy())
        .into_owned();
    let name = crate::output::for_terminal(&name).into_owned();
    tokio::task::spawn_blocking(move || picker::pick(&listed, &name))
        .await
        .map_err(|e| ClientError::io("the device picker stopped")(std::io::Error::other(e)))?
}

pub async fn install(ui: &Ui, args: &InstallArgs) -> Result<(), ClientError> {
    let mut bus = Bus::system(ui).await?;
    let doing = format!("install {}", args.name);
    confirm(&mut bus, ui, &args.devices, &doing, args.write.yes).await?;
    let manager = bus.manager().await?;
    let opts = write_options(&args.write);
    let devices: Vec<&str> = args.devices.iter().map(String::as_str).collect();
    let jobs: Vec<OwnedObjectPath> = bus
        .call(
            manager.inner(),
            &calls::INSTALL,
            &(args.name.as_str(), devices, opts),
        )
        .await
        .map_err(|e| e.when_not_found(|| crate::commands::images::no_image(&args.name)))?;
    finish(&mut bus, ui, &calls::INSTALL, &args.devices, jobs).await
}

pub async fn format(ui: &Ui, args: &FormatArgs) -> Result<(), ClientError> {
    let mut bus = Bus::system(ui).await?;
    let devices = [args.device.clone()];
    confirm(&mut bus, ui, &devices, "format", args.yes).await?;
    let manager = bus.manager().await?;
    let mut opts: HashMap<&str, Variant<'_>> = HashMap::new();
    if let Some(b) = args.boot_size {
        opts.insert(options::BOOT_SIZE, Variant::from(b));
    }
    let body = (args.device.as_str(), opts);
    let (path, ended) =
        follow::start(&mut bus, ui, manager.inner(), &calls::FORMAT_DEVICE, &body).await?;
    if ui.json {
        output::json_line(&output::job_result_json(&path, &ended));
    } else {
        output::job_result(ui, &path, &ended);
    }
    Ok(())
}

/// Follows the jobs of several devices to their ends and reports each.
async fn finish(
    bus: &mut Bus,
    ui: &Ui,
    attempt: &'static Attempt,
    devices: &[String],
    jobs: Vec<OwnedObjectPath>,
) -> Result<(), ClientError> {
    let paths: Vec<String> = jobs.iter().map(|p| p.to_string()).collect();
    let ended = follow_all(bus, ui, &paths, devices).await?;
    let mut first_error = None;
    for ((path, snap), device) in paths.iter().zip(ended).zip(devices) {
        let outcome = follow::outcome(attempt, path, snap);
        match outcome {
            Ok(s) => {
                if ui.json {
                    output::json_line(&output::job_result_json(path, &s));
                } else if !ui.quiet {
                    // The daemon's result dictionaries carry no booleans: 1 is yes.
                    let verified = s.result.get(result::VERIFIED).and_then(Value::as_u64);
                    let written = s.result.get(result::WRITTEN).and_then(Value::as_u64);
                    err_line(&format!(
                        "{device}: {} written{}.",
                        humanize::size(written.unwrap_or(0)),
                        if verified == Some(1) {
                            ", read back and verified"
                        } else {
                            ", not verified"
                        }
                    ));
                }
            }
            Err(e) => {
                // With several cards, each failure is said next to its device; the first one
                // also ends the command (and sets its exit status).
                if devices.len() > 1 {
                    if ui.json {
                        output::json_line(&json!({"job": path, "device": device, "error":
                            e.dbus_error().map(DBusError::dbus_name), "message": e.to_string()}));
                    } else {
                        let ex = crate::errors::explain(&e, bus.interactive());
                        err_line(&format!("{device}: {}", ex.text));
                    }
                }
                first_error.get_or_insert(e);
            }
        }
    }
    match first_error {
        None => Ok(()),
        Some(e) => Err(e),
    }
}

/// Polls each job until all have ended; the first Ctrl-C cancels them all, a second stops
/// waiting.
async fn follow_all(
    bus: &mut Bus,
    ui: &Ui,
    paths: &[String],
    labels: &[String],
) -> Result<Vec<Snapshot>, ClientError> {
    let group = indicatif::MultiProgress::new();
    let terminal = std::io::stderr().is_terminal();
    let mut bars: Vec<Progress> = paths
        .iter()
        .zip(labels)
        .map(|(p, l)| Progress::in_group(ui, p, terminal, &group, l))
        .collect();
    let mut interrupts =
        signal(SignalKind::interrupt()).map_err(ClientError::io("cannot catch signals"))?;
    let mut cancelled = false;
    loop {
        let mut snaps = Vec::with_capacity(paths.len());
        for (path, bar) in paths.iter().zip(bars.iter_mut()) {
            let props = bus.properties(path).await?;
            let snap = Snapshot::from_properties(&bus.job_properties(&props).await?);
            bar.update(&snap);
            snaps.push(snap);
        }
        if snaps.iter().all(Snapshot::is_over) {
            for bar in &mut bars {
                bar.finish();
            }
            return Ok(snaps);
        }
        tokio::select! {
            _ = tokio::time::sleep(POLL) => {}
            _ = interrupts.recv() => {
                if cancelled {
                    return Err(ClientError::Interrupted { path: paths.first().cloned() });
                }
                cancelled = true;
                for (path, snap) in paths.iter().zip(&snaps) {
                    if snap.state.parse::<JobState>().is_ok_and(|s| s == JobState::Running) {
                        let job = bus.job(path).await?;
                        let _ = bus.call::<_, ()>(job.inner(), &calls::CANCEL, &()).await;
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn block_maps_are_found_beside_images() {
        assert_eq!(
            bmap_beside(Path::new("a/pi.img")),
            Path::new("a/pi.img.bmap")
        );
        assert_eq!(
            bmap_beside(Path::new("pi.img.zst")),
            Path::new("pi.img.bmap")
        );
        assert_eq!(
            bmap_beside(Path::new("pi.img.xz")),
            Path::new("pi.img.bmap")
        );
        assert_eq!(compression_of(Path::new("pi.img.xz")), Some("xz"));
        assert_eq!(compression_of(Path::new("pi.img")), None);
    }
}
