//! `pib-client build`: the configuration from pib.toml and the flags, the stages found and
//! checked here, then (after importing a base tarball if one is given) Manager.Build with the
//! context streamed through a pipe, followed to the end.

use std::time::Duration;

use pib_dbus_interfaces::types::result;
use pib_dbus_interfaces::DBusError;
use serde_json::{json, Value};
use zbus::Fd;

use crate::bus::Bus;
use crate::calls;
use crate::cli::BuildArgs;
use crate::commands::base;
use crate::context::ContextStream;
use crate::errors::ClientError;
use crate::follow::{self, Follower, Watch};
use crate::job::Snapshot;
use crate::output::{self, for_terminal, Ui};
use crate::project::{self, BuildConfig};
use crate::stages::{self, Origin, Stage};

/// After a successful build the writer is done or about to be; a daemon that finished without
/// reading the whole stream is worth this wait to find out, not more.
const WRITER_AFTER_SUCCESS: Duration = Duration::from_secs(5);
/// After a failed build, the writer's own error (if it had one) is the better explanation;
/// it is usually there already.
const WRITER_AFTER_FAILURE: Duration = Duration::from_millis(500);

pub async fn run(ui: &Ui, args: &BuildArgs) -> Result<(), ClientError> {
    // Everything the user can get wrong is found before the daemon is asked anything.
    let config = project::load(args)?;
    let bundled = stages::bundled_root();
    let stages = stages::resolve(
        &config.stages,
        &config.stage_dirs,
        bundled.as_deref(),
        config.distro,
    )
    .map_err(ClientError::Stage)?;
    let tarball = config
        .base_file
        .as_deref()
        .map(base::open_tarball)
        .transpose()?;
    show_config(ui, &config, &stages);

    let mut bus = Bus::system(ui).await?;
    let base = match &tarball {
        Some(file) => {
            let opts = base::base_options(config.distro, config.arch, Some(config.board));
            let (_, imported) = base::import(&mut bus, ui, file, &opts).await?;
            let image = base::result_image(&imported).ok_or_else(|| ClientError::Call {
                attempt: &calls::IMPORT_BASE,
                error: DBusError::ZBus(zbus::Error::InvalidReply),
            })?;
            if !ui.quiet && !ui.json {
                output::err_line(&format!("Imported base {}.", for_terminal(&image)));
            }
            Some(image)
        }
        None => config.base.clone(),
    };

    let (path, built) = build(&mut bus, ui, &config, stages, base.as_deref()).await?;
    if ui.json {
        output::json_line(&output::job_result_json(&path, &built));
    } else {
        output::plain(&result_line(&built).unwrap_or_else(|| {
            if built.message.is_empty() {
                format!("Built {}.", config.name)
            } else {
                for_terminal(&built.message).into_owned()
            }
        }));
    }
    Ok(())
}

/// The effective configuration, and where each stage was found: a stage of the user's that
/// shadows a bundled one of the same name is worth seeing before a long build.
fn show_config(ui: &Ui, config: &BuildConfig, stages: &[Stage]) {
    if ui.quiet {
        return;
    }
    if ui.json {
        let mut v = config.to_json();
        v["stage_sources"] = stage_sources(stages);
        output::json_line(&json!({ "config": v }));
    } else {
        let mut lines = config.describe();
        let own: Vec<&str> = stages
            .iter()
            .filter(|s| s.origin == Origin::User)
            .map(|s| s.name.as_str())
            .collect();
        if !own.is_empty() {
            lines.insert(2, format!("  from your stage dirs: {}", own.join(" ")));
        }
        for line in lines {
            output::err_line(&for_terminal(&line));
        }
    }
}

fn stage_sources(stages: &[Stage]) -> Value {
    stages
        .iter()
        .map(|s| {
            json!({
                "name": s.name,
                "dir": s.dir.to_string_lossy(),
                "origin": match s.origin {
                    Origin::User => "user",
                    Origin::Bundled => "bundled",
                },
            })
        })
        .collect()
}

async fn build(
    bus: &mut Bus,
    ui: &Ui,
    config: &BuildConfig,
    stages: Vec<Stage>,
    base: Option<&str>,
) -> Result<(String, Snapshot), ClientError> {
    let manager = bus.manager().await?;
    let opts = config.build_options(base);
    let mut context = ContextStream::start(stages)
        .map_err(ClientError::io("cannot start sending the build context"))?;
    let mut follower = Follower::new(&[])?;
    let called = follower
        .call(
            bus,
            manager.inner(),
            &calls::BUILD,
            &(Fd::from(context.read_end()), opts),
        )
        .await;
    // Whether the call worked or not, the daemon has its own copy or none: ours would only
    // keep a writer waiting for a reader that will never come.
    context.close_read_end();
    let path = called.map_err(|e| missing_base(e, config, base))?;

    let watch = Watch {
        silent: false,
        abort: Some(Box::pin(context.failed())),
    };
    let ended = follower.follow(bus, ui, &path, watch).await?;
    match follow::outcome(&calls::BUILD, &path, ended.snapshot) {
        Ok(built) => match context.outcome(WRITER_AFTER_SUCCESS).await {
            Some(Err(e)) if !e.is_reader_gone() => Err(ClientError::Context(e)),
            _ => Ok((path, built)),
        },
        Err(job_error) => match context.outcome(WRITER_AFTER_FAILURE).await {
            Some(Err(e)) if !e.is_reader_gone() => Err(ClientError::Context(e)),
            _ => Err(missing_base(job_error, config, base)),
        },
    }
}

/// A NotFound from a build is about the base it starts from; say which, and how to get it.
fn missing_base(err: ClientError, config: &BuildConfig, base: Option<&str>) -> ClientError {
    err.when_not_found(|| match base {
        Some(b) => format!("No base named {b}; `pib-client base list` shows the bases there are."),
        None => {
            let (d, a, b) = (config.distro, config.arch, config.board);
            format!(
                "There is no base for {d} on {b} ({a}) yet. Fetch one with `pib-client base \
                 fetch --distro {d} --arch {a} --board {b}`, or import a root filesystem \
                 tarball with `pib-client base import TARBALL --distro {d} --arch {a} --board \
                 {b}` (or --base-file)."
            )
        }
    })
}

/// "Built NAME (ID): N steps, M from the cache."
fn result_line(s: &Snapshot) -> Option<String> {
    let image = s.result.get(result::IMAGE).and_then(Value::as_str)?;
    let mut line = format!("Built {}", for_terminal(image));
    if let Some(id) = s.result.get(result::ID).and_then(Value::as_str) {
        line.push_str(&format!(" ({})", base::short_id(id)));
    }
    let steps = s.result.get(result::STEPS).and_then(Value::as_u64);
    let cached = s.result.get(result::CACHED).and_then(Value::as_u64);
    match (steps, cached) {
        (Some(n), Some(c)) => line.push_str(&format!(": {n} steps, {c} from the cache")),
        (Some(n), None) => line.push_str(&format!(": {n} steps")),
        _ => {}
    }
    line.push('.');
    Some(line)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::{Cli, Command};
    use clap::Parser;
    use std::path::Path;

    fn snapshot(result: Value) -> Snapshot {
        Snapshot {
            state: "succeeded".into(),
            result: result.as_object().unwrap().clone(),
            ..Snapshot::default()
        }
    }

    #[test]
    fn the_result_in_one_line() {
        let s = snapshot(json!({
            "image": "debian-rpi4-aarch64",
            "id": "sha256:feedfacecafe0123456789",
            "steps": 14,
            "cached": 12,
        }));
        assert_eq!(
            result_line(&s).unwrap(),
            "Built debian-rpi4-aarch64 (feedfacecafe): 14 steps, 12 from the cache."
        );
        let s = snapshot(json!({"image": "x\u{1b}[2J"}));
        assert_eq!(result_line(&s).unwrap(), "Built x^[[2J.");
        assert_eq!(result_line(&snapshot(json!({}))), None);
    }

    #[test]
    fn a_missing_base_is_explained_with_the_commands_that_make_one() {
        let cli = Cli::try_parse_from(["pib-client", "build", "--distro", "arch"]).unwrap();
        let Command::Build(args) = cli.command else {
            panic!()
        };
        let config = project::merge(None, &args, Path::new("/")).unwrap();
        let not_found = || ClientError::Call {
            attempt: &calls::BUILD,
            error: DBusError::NotFound("no base image for arch/aarch64/rpi4".into()),
        };
        let err = missing_base(not_found(), &config, None);
        let text = err.to_string();
        assert!(
            text.contains("pib-client base fetch --distro arch --arch aarch64 --board rpi4"),
            "{text}"
        );
        let ex = crate::errors::explain(&err, true);
        assert_eq!(ex.name, "org.pibuilder.PiBuilder1.Error.NotFound");
        assert_eq!(
            ex.detail.as_deref(),
            Some("no base image for arch/aarch64/rpi4")
        );
        let err = missing_base(not_found(), &config, Some("mine:1"));
        assert!(
            err.to_string().starts_with("No base named mine:1;"),
            "{err}"
        );
        let other = ClientError::Call {
            attempt: &calls::BUILD,
            error: DBusError::Busy("x".into()),
        };
        assert!(matches!(
            missing_base(other, &config, None),
            ClientError::Call { .. }
        ));
    }
}
