//! `pib-client base list|fetch|import`: the root filesystems builds start FROM.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::os::fd::AsFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::time::SystemTime;

use pib_dbus_interfaces::types::{image as key, options, result, Arch, Board, Distro};
use serde_json::Value;
use zbus::{Fd, OwnedVariant, Variant};

use crate::bus::Bus;
use crate::calls;
use crate::cli::{BaseCommand, FetchArgs, ImportArgs};
use crate::errors::ClientError;
use crate::follow::{self, Follower, Watch};
use crate::humanize;
use crate::job::Snapshot;
use crate::output::{self, for_terminal, Ui};
use crate::relay::{self, Direction};
use crate::variant::dict_to_json;

pub async fn run(ui: &Ui, command: BaseCommand) -> Result<(), ClientError> {
    match command {
        BaseCommand::List => list(&mut Bus::system(ui).await?, ui).await,
        BaseCommand::Fetch(args) => fetch(&mut Bus::system(ui).await?, ui, &args).await,
        BaseCommand::Import(args) => {
            // A tarball that cannot be opened is the user's business, not the bus's.
            let tarball = open_tarball(&args.tarball)?;
            let mut bus = Bus::system(ui).await?;
            let image = import(&mut bus, ui, &tarball, &import_options(&args)).await?;
            print_image(ui, &image, "imported");
            Ok(())
        }
    }
}

async fn list(bus: &mut Bus, ui: &Ui) -> Result<(), ClientError> {
    let manager = bus.manager().await?;
    let bases: Vec<HashMap<String, OwnedVariant>> =
        bus.call(manager.inner(), &calls::LIST_BASES, &()).await?;
    let mut bases: Vec<Value> = bases.iter().map(dict_to_json).collect();
    bases.sort_by(|a, b| text(&a[key::NAME]).cmp(&text(&b[key::NAME])));
    if ui.json {
        for b in &mut bases {
            add_iso_time(b);
        }
        output::json_line(&Value::Array(bases));
    } else if bases.is_empty() {
        output::plain(
            "No bases. `pib-client base fetch` downloads or bootstraps one, `pib-client base \
             import` imports a tarball.",
        );
    } else {
        output::plain(&base_table(&bases, SystemTime::now()));
    }
    Ok(())
}

/// A string field for a table cell, defused: names and origins come from the daemon.
pub fn text(v: &Value) -> String {
    match v {
        Value::String(s) => for_terminal(s).into_owned(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// Scripts get the raw microseconds and a readable time beside them.
pub fn add_iso_time(entry: &mut Value) {
    if let Some(micros) = entry[key::CREATED].as_u64() {
        entry["created_iso"] = Value::from(humanize::iso8601(micros));
    }
}

pub fn size_cell(v: &Value) -> String {
    v.as_u64().map_or_else(|| "?".to_owned(), humanize::size)
}

pub fn created_cell(v: &Value, now: SystemTime) -> String {
    v.as_u64()
        .map_or_else(|| "?".to_owned(), |m| humanize::ago(m, now))
}

fn base_table(bases: &[Value], now: SystemTime) -> String {
    let rows: Vec<Vec<String>> = bases
        .iter()
        .map(|b| {
            vec![
                text(&b[key::NAME]),
                text(&b[key::DISTRO]),
                text(&b[key::BOARD]),
                text(&b[key::ARCH]),
                size_cell(&b[key::SIZE]),
                created_cell(&b[key::CREATED], now),
                text(&b[key::ORIGIN]),
            ]
        })
        .collect();
    output::table(
        &[
            "NAME", "DISTRO", "BOARD", "ARCH", "SIZE", "CREATED", "ORIGIN",
        ],
        &rows,
    )
}

async fn fetch(bus: &mut Bus, ui: &Ui, args: &FetchArgs) -> Result<(), ClientError> {
    let manager = bus.manager().await?;
    let opts = fetch_options(args);
    let (path, ended) =
        follow::start(bus, ui, manager.inner(), &calls::FETCH_BASE, &(opts,)).await?;
    print_image(ui, &(path, ended), "is ready");
    Ok(())
}

fn fetch_options(args: &FetchArgs) -> HashMap<&'static str, Variant<'static>> {
    let mut o = HashMap::new();
    o.insert(
        options::DISTRO,
        Variant::from(Distro::from(args.distro).as_str()),
    );
    o.insert(options::ARCH, Variant::from(Arch::from(args.arch).as_str()));
    if let Some(b) = args.board {
        o.insert(options::BOARD, Variant::from(Board::from(b).as_str()));
    }
    if let Some(s) = &args.suite {
        o.insert(options::SUITE, Variant::from(s.clone()));
    }
    if args.refresh {
        o.insert(options::REFRESH, Variant::from(true));
    }
    o
}

pub fn import_options(args: &ImportArgs) -> HashMap<&'static str, Variant<'static>> {
    base_options(
        args.distro.into(),
        args.arch.into(),
        args.board.map(Board::from),
    )
}

pub fn base_options(
    distro: Distro,
    arch: Arch,
    board: Option<Board>,
) -> HashMap<&'static str, Variant<'static>> {
    let mut o = HashMap::new();
    o.insert(options::DISTRO, Variant::from(distro.as_str()));
    o.insert(options::ARCH, Variant::from(arch.as_str()));
    if let Some(b) = board {
        o.insert(options::BOARD, Variant::from(b.as_str()));
    }
    o
}

/// Opens the tarball with the user's own rights: the daemon never opens a path a caller names.
/// `-` is stdin.
pub fn open_tarball(path: &Path) -> Result<File, ClientError> {
    let fail = |source| ClientError::File {
        doing: "open the tarball",
        path: path.to_owned(),
        source,
    };
    if path == Path::new("-") {
        let stdin = std::io::stdin()
            .as_fd()
            .try_clone_to_owned()
            .map_err(fail)?;
        return Ok(File::from(stdin));
    }
    // O_NOCTTY: a terminal named by mistake must not become the client's controlling one.
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOCTTY)
        .open(path)
        .map_err(fail)?;
    let meta = file.metadata().map_err(fail)?;
    if meta.is_dir() {
        return Err(fail(std::io::Error::from(std::io::ErrorKind::IsADirectory)));
    }
    Ok(file)
}

/// Imports `tarball` and follows the job; returns its path and final state.
pub async fn import(
    bus: &mut Bus,
    ui: &Ui,
    tarball: &File,
    opts: &HashMap<&'static str, Variant<'static>>,
) -> Result<(String, Snapshot), ClientError> {
    let manager = bus.manager().await?;
    let mut handed = relay::hand(tarball.as_fd(), Direction::Read)
        .map_err(ClientError::io("cannot pass the tarball on"))?;
    let mut follower = Follower::new(&[])?;
    let path = follower
        .call(
            bus,
            manager.inner(),
            &calls::IMPORT_BASE,
            &(Fd::from(handed.as_fd()), opts),
        )
        .await?;
    handed.close();
    let ended = follower.follow(bus, ui, &path, Watch::default()).await?;
    let snapshot = follow::outcome(&calls::IMPORT_BASE, &path, ended.snapshot)?;
    Ok((path, snapshot))
}

/// The image a base job produced (`image`, `id` in its Result).
pub fn result_image(s: &Snapshot) -> Option<String> {
    s.result
        .get(result::IMAGE)
        .and_then(Value::as_str)
        .map(str::to_owned)
}

/// `sha256:0123456789abcdef…` as Docker shows it: the first 12 hex digits.
pub fn short_id(id: &str) -> &str {
    let hex = id.strip_prefix("sha256:").unwrap_or(id);
    hex.get(..12).unwrap_or(hex)
}

fn print_image(ui: &Ui, (path, s): &(String, Snapshot), done: &str) {
    if ui.json {
        output::json_line(&output::job_result_json(path, s));
        return;
    }
    match result_image(s) {
        Some(image) => {
            let id = s.result.get(result::ID).and_then(Value::as_str);
            let id = id.map_or_else(String::new, |i| format!(" ({})", short_id(i)));
            output::plain(&format!("Base {}{id} {done}.", for_terminal(&image)));
        }
        None => output::job_result(ui, path, s),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::time::{Duration, UNIX_EPOCH};

    #[test]
    fn options_carry_only_what_was_given() {
        use crate::cli::{ArchArg, BoardArg, DistroArg};
        let args = FetchArgs {
            distro: DistroArg::Arch,
            arch: ArchArg::Arm,
            board: Some(BoardArg::Rpi2),
            suite: None,
            refresh: true,
        };
        let o = fetch_options(&args);
        assert_eq!(o.len(), 4);
        assert_eq!(o["distro"], Variant::from("arch"));
        assert_eq!(o["arch"], Variant::from("arm"));
        assert_eq!(o["board"], Variant::from("rpi2"));
        assert_eq!(o["refresh"], Variant::from(true));
        let args = FetchArgs {
            distro: DistroArg::Debian,
            arch: ArchArg::Aarch64,
            board: None,
            suite: Some("trixie".into()),
            refresh: false,
        };
        let o = fetch_options(&args);
        assert_eq!(o.len(), 3);
        assert_eq!(o["suite"], Variant::from("trixie"));
        let o = base_options(Distro::Debian, Arch::Arm, None);
        assert_eq!(o.len(), 2);
    }

    #[test]
    fn base_table_and_ids() {
        let now = UNIX_EPOCH + Duration::from_secs(1_764_153_900);
        let bases = vec![json!({
            "name": "pib-base/debian-aarch64:bookworm",
            "id": "sha256:0123456789abcdef0123",
            "distro": "debian",
            "arch": "aarch64",
            "board": "",
            "origin": "mmdebstrap bookworm http://deb.example/debian",
            "digest": "ab",
            "created": (1_764_153_900u64 - 7200) * 1_000_000,
            "size": 300u64 << 20,
        })];
        assert_eq!(
            base_table(&bases, now),
            "NAME                              DISTRO  BOARD  ARCH     SIZE        CREATED      ORIGIN\n\
             pib-base/debian-aarch64:bookworm  debian         aarch64  300.00 MiB  2 hours ago  \
             mmdebstrap bookworm http://deb.example/debian"
        );
        assert_eq!(short_id("sha256:0123456789abcdef0123"), "0123456789ab");
        assert_eq!(short_id("abc"), "abc");
        let mut b = bases[0].clone();
        add_iso_time(&mut b);
        assert_eq!(b["created_iso"], "2025-11-26T08:45:00Z");
    }

    #[test]
    fn tarballs_are_opened_here_and_directories_refused() {
        let err = open_tarball(Path::new("/")).unwrap_err();
        assert!(err.to_string().contains("is a directory"), "{err}");
        let err = open_tarball(Path::new("/nonexistent/root.tar")).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("cannot open the tarball /nonexistent/root.tar:"),
            "{err}"
        );
        assert!(open_tarball(Path::new("/proc/self/exe")).is_ok());
    }
}
