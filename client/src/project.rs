//! The project file, `pib.toml`, and the `build` flags, merged into the one configuration a
//! build runs with. Nothing here touches the bus: a mistake in the file is reported before the
//! daemon is asked for anything.

use std::collections::{BTreeMap, HashMap};
use std::io;
use std::path::{Path, PathBuf};

use pib_dbus_interfaces::types::{options, Arch, Board, Distro, UnknownWord};
use serde::Deserialize;
use serde_json::{json, Value};
use zbus::Variant;

use crate::cli::{check_arg_name, BuildArgs};

/// Looked for in the current directory when no `-c FILE` is given.
pub const FILE_NAME: &str = "pib.toml";

pub const DEFAULT_DISTRO: Distro = Distro::Debian;
pub const DEFAULT_BOARD: Board = Board::Rpi4;
pub const DEFAULT_ARCH: Arch = Arch::Aarch64;
/// The smallest useful system: the base prepared, configured (hostname, locale, timezone,
/// mirror: the `os` stage reads them), tidied.
pub const DEFAULT_STAGES: &[&str] = &["__init__", "os", "__cleanup__"];

/// The file as written. Every key is optional; an unknown one is an error rather than a silent
/// no-op, since it is most likely a misspelt known one.
#[derive(Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
struct ProjectFile {
    name: Option<String>,
    distro: Option<String>,
    board: Option<String>,
    arch: Option<String>,
    stages: Option<Vec<String>>,
    stage_dirs: Option<Vec<PathBuf>>,
    hostname: Option<String>,
    locale: Option<String>,
    timezone: Option<String>,
    mirror: Option<String>,
    set: Option<BTreeMap<String, String>>,
    base_file: Option<PathBuf>,
    /// The disk layout for `pib-client image` (see `layout`).
    image: Option<crate::layout::ImageSection>,
}

/// A project file that was read, with the directory its relative paths start from.
#[derive(Debug)]
pub struct Project {
    path: PathBuf,
    dir: PathBuf,
    file: ProjectFile,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read the project file {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("the project file {} is not valid: {message}", path.display())]
    Parse { path: PathBuf, message: String },
    #[error("the project file {} has a bad {key}: {message}", path.display())]
    Value {
        path: PathBuf,
        key: String,
        message: String,
    },
    #[error(
        "no stages to build: give at least __init__ (with --stages or `stages` in {FILE_NAME})"
    )]
    NoStages,
    #[error("cannot tell the current directory: {0}")]
    Cwd(#[source] io::Error),
}

/// What a build runs with, after the file and the flags had their say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildConfig {
    /// The project file that was read, if any.
    pub source: Option<PathBuf>,
    pub name: String,
    pub distro: Distro,
    pub board: Board,
    pub arch: Arch,
    pub stages: Vec<String>,
    /// Searched in order, before the bundled stages.
    pub stage_dirs: Vec<PathBuf>,
    pub hostname: Option<String>,
    pub locale: Option<String>,
    pub timezone: Option<String>,
    pub repo_url: Option<String>,
    pub args: BTreeMap<String, String>,
    /// A tarball to import first and build from.
    pub base_file: Option<PathBuf>,
    /// A base by name.
    pub base: Option<String>,
    pub no_cache: bool,
}

/// Reads `-c FILE`, or `./pib.toml` when it exists, and merges the flags into it.
pub fn load(args: &BuildArgs) -> Result<BuildConfig, ConfigError> {
    let cwd = std::env::current_dir().map_err(ConfigError::Cwd)?;
    let project = match &args.config {
        Some(path) => read(path, &cwd, true)?,
        None => read(Path::new(FILE_NAME), &cwd, false)?,
    };
    merge(project.as_ref(), args, &cwd)
}

/// What `pib-client image` takes from the project: the image's name (as `build` would name
/// it) and the `[image]` table.
pub fn for_image(
    config: Option<&Path>,
) -> Result<(String, crate::layout::ImageSection), ConfigError> {
    let args = BuildArgs {
        config: config.map(Path::to_owned),
        ..Default::default()
    };
    let cwd = std::env::current_dir().map_err(ConfigError::Cwd)?;
    let project = match &args.config {
        Some(path) => read(path, &cwd, true)?,
        None => read(Path::new(FILE_NAME), &cwd, false)?,
    };
    let section = project
        .as_ref()
        .and_then(|p| p.file.image.clone())
        .unwrap_or_default();
    let config = merge(project.as_ref(), &args, &cwd)?;
    Ok((config.name, section))
}

/// `must_exist` is false for the implicit `./pib.toml`, whose absence just means no file.
fn read(path: &Path, cwd: &Path, must_exist: bool) -> Result<Option<Project>, ConfigError> {
    match std::fs::read_to_string(path) {
        Ok(text) => parse(&text, path, cwd).map(Some),
        Err(e) if e.kind() == io::ErrorKind::NotFound && !must_exist => Ok(None),
        Err(source) => Err(ConfigError::Read {
            path: path.to_owned(),
            source,
        }),
    }
}

/// Parses a project file's text; `path` is where it was read from, relative to `cwd` unless
/// absolute.
pub fn parse(text: &str, path: &Path, cwd: &Path) -> Result<Project, ConfigError> {
    let file: ProjectFile = toml::from_str(text).map_err(|e| ConfigError::Parse {
        path: path.to_owned(),
        message: e.to_string().trim_end().to_owned(),
    })?;
    let absolute = cwd.join(path);
    let dir = absolute.parent().unwrap_or(cwd).to_owned();
    Ok(Project {
        path: path.to_owned(),
        dir,
        file,
    })
}

/// The file's settings, overridden by the flags, completed by the defaults.
pub fn merge(
    project: Option<&Project>,
    args: &BuildArgs,
    cwd: &Path,
) -> Result<BuildConfig, ConfigError> {
    let empty = ProjectFile::default();
    let file = project.map_or(&empty, |p| &p.file);
    let bad = |key: &str, message: String| ConfigError::Value {
        path: project.map_or_else(PathBuf::new, |p| p.path.clone()),
        key: key.to_owned(),
        message,
    };
    let word = |key: &str, e: UnknownWord| {
        bad(
            key,
            format!("{:?} is not one of: {}", e.value, e.expected.trim()),
        )
    };

    let distro = match (args.distro, &file.distro) {
        (Some(d), _) => d.into(),
        (None, Some(s)) => s.parse().map_err(|e| word("distro", e))?,
        (None, None) => DEFAULT_DISTRO,
    };
    let board = match (args.board, &file.board) {
        (Some(b), _) => b.into(),
        (None, Some(s)) => s.parse().map_err(|e| word("board", e))?,
        (None, None) => DEFAULT_BOARD,
    };
    let arch = match (args.arch, &file.arch) {
        (Some(a), _) => a.into(),
        (None, Some(s)) => s.parse().map_err(|e| word("arch", e))?,
        (None, None) => DEFAULT_ARCH,
    };

    let stages: Vec<String> = match (&args.stages, &file.stages) {
        (Some(flag), _) => split_stages(flag),
        (None, Some(list)) => list.clone(),
        (None, None) => DEFAULT_STAGES.iter().map(|s| (*s).to_owned()).collect(),
    };
    if stages.is_empty() {
        return Err(ConfigError::NoStages);
    }

    // Paths on the command line are the user's, from where they stand; paths in the file are
    // the project's, from where it lies, so that the project builds from any directory.
    let stage_dirs = if !args.stages_dir.is_empty() {
        args.stages_dir.iter().map(|d| cwd.join(d)).collect()
    } else if let (Some(p), Some(dirs)) = (project, &file.stage_dirs) {
        dirs.iter().map(|d| p.dir.join(d)).collect()
    } else {
        Vec::new()
    };
    let base_file = match (&args.base_file, project, &file.base_file) {
        (Some(f), _, _) => Some(cwd.join(f)),
        // A base named on the command line replaces the file's tarball too.
        (None, _, _) if args.base.is_some() => None,
        (None, Some(p), Some(f)) => Some(p.dir.join(f)),
        _ => None,
    };

    let mut build_args = BTreeMap::new();
    for (key, value) in file.set.iter().flatten() {
        check_arg_name(key).map_err(|m| bad(&format!("set.{key}"), m))?;
        build_args.insert(key.clone(), value.clone());
    }
    for (key, value) in &args.set {
        build_args.insert(key.clone(), value.clone());
    }

    let name = args
        .name
        .clone()
        .or_else(|| file.name.clone())
        .unwrap_or_else(|| default_name(distro, board, arch));
    let pick = |flag: &Option<String>, key: &Option<String>| flag.clone().or_else(|| key.clone());
    Ok(BuildConfig {
        source: project.map(|p| p.path.clone()),
        name,
        distro,
        board,
        arch,
        stages,
        stage_dirs,
        hostname: pick(&args.hostname, &file.hostname),
        locale: pick(&args.locale, &file.locale),
        timezone: pick(&args.timezone, &file.timezone),
        repo_url: pick(&args.mirror, &file.mirror),
        args: build_args,
        base_file,
        base: args.base.clone(),
        no_cache: args.no_cache,
    })
}

/// The daemon's default too (see Manager.Build); computed here so that the configuration
/// printed before the build names the image that will exist after it.
pub fn default_name(distro: Distro, board: Board, arch: Arch) -> String {
    format!("{distro}-{board}-{arch}")
}

/// `--stages "__init__ os __cleanup__"` or `--stages __init__,os,__cleanup__`.
fn split_stages(s: &str) -> Vec<String> {
    s.split(|c: char| c.is_whitespace() || c == ',')
        .filter(|part| !part.is_empty())
        .map(str::to_owned)
        .collect()
}

impl BuildConfig {
    /// The options dictionary of Manager.Build. `base` is the base to build from, when it is
    /// not the daemon's default for distro, board and arch.
    pub fn build_options(&self, base: Option<&str>) -> HashMap<&'static str, Variant<'static>> {
        let mut o: HashMap<&'static str, Variant<'static>> = HashMap::new();
        o.insert(options::DISTRO, Variant::from(self.distro.as_str()));
        o.insert(options::ARCH, Variant::from(self.arch.as_str()));
        o.insert(options::BOARD, Variant::from(self.board.as_str()));
        o.insert(options::STAGES, Variant::from(self.stages.clone()));
        o.insert(options::NAME, Variant::from(self.name.clone()));
        // Absent rather than empty: the stages' own defaults then apply.
        for (key, value) in [
            (options::HOSTNAME, &self.hostname),
            (options::LOCALE, &self.locale),
            (options::TIMEZONE, &self.timezone),
            (options::REPO_URL, &self.repo_url),
        ] {
            if let Some(v) = value {
                o.insert(key, Variant::from(v.clone()));
            }
        }
        if !self.args.is_empty() {
            let args: HashMap<String, String> = self.args.clone().into_iter().collect();
            o.insert(options::ARGS, Variant::from(args));
        }
        if self.no_cache {
            o.insert(options::NO_CACHE, Variant::from(true));
        }
        if let Some(b) = base {
            o.insert(options::BASE, Variant::from(b.to_owned()));
        }
        o
    }

    pub fn to_json(&self) -> Value {
        let path = |p: &Path| Value::from(p.to_string_lossy().into_owned());
        json!({
            "source": self.source.as_deref().map(path),
            "name": self.name,
            "distro": self.distro.as_str(),
            "board": self.board.as_str(),
            "arch": self.arch.as_str(),
            "stages": self.stages,
            "stage_dirs": self.stage_dirs.iter().map(|d| path(d)).collect::<Vec<_>>(),
            "hostname": self.hostname,
            "locale": self.locale,
            "timezone": self.timezone,
            "repo_url": self.repo_url,
            "args": self.args,
            "base_file": self.base_file.as_deref().map(path),
            "base": self.base,
            "no_cache": self.no_cache,
        })
    }

    /// A few lines for a person, before the build starts.
    pub fn describe(&self) -> Vec<String> {
        let from = match &self.source {
            Some(p) => format!(" (from {})", p.display()),
            None => String::new(),
        };
        let mut lines = vec![format!(
            "Building {}: {} for {} on {}{from}",
            self.name, self.distro, self.board, self.arch
        )];
        lines.push(format!("  stages: {}", self.stages.join(" ")));
        if !self.stage_dirs.is_empty() {
            let dirs: Vec<String> = self
                .stage_dirs
                .iter()
                .map(|d| d.display().to_string())
                .collect();
            lines.push(format!(
                "  stage dirs: {}, then the bundled stages",
                dirs.join(", ")
            ));
        }
        let settings: Vec<String> = [
            ("hostname", &self.hostname),
            ("locale", &self.locale),
            ("timezone", &self.timezone),
            ("mirror", &self.repo_url),
        ]
        .into_iter()
        .filter_map(|(k, v)| v.as_ref().map(|v| format!("{k} {v}")))
        .collect();
        if !settings.is_empty() {
            lines.push(format!("  {}", settings.join(", ")));
        }
        if !self.args.is_empty() {
            let args: Vec<String> = self.args.iter().map(|(k, v)| format!("{k}={v}")).collect();
            lines.push(format!("  build args: {}", args.join(" ")));
        }
        match (&self.base_file, &self.base) {
            (Some(f), _) => lines.push(format!("  base: imported from {}", f.display())),
            (None, Some(b)) => lines.push(format!("  base: {b}")),
            (None, None) => {}
        }
        if self.no_cache {
            lines.push("  without Docker's cache".to_owned());
        }
        lines
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    use crate::cli::{Cli, Command};

    fn args(flags: &[&str]) -> BuildArgs {
        let cli = Cli::try_parse_from(["pib-client", "build"].iter().chain(flags)).unwrap();
        match cli.command {
            Command::Build(b) => *b,
            other => panic!("{other:?}"),
        }
    }

    const CWD: &str = "/home/u/work";

    fn project(text: &str, path: &str) -> Result<Project, ConfigError> {
        parse(text, Path::new(path), Path::new(CWD))
    }

    fn config(text: &str, flags: &[&str]) -> Result<BuildConfig, ConfigError> {
        let p = project(text, "proj/pib.toml")?;
        merge(Some(&p), &args(flags), Path::new(CWD))
    }

    #[test]
    fn defaults_without_a_file() {
        let c = merge(None, &args(&[]), Path::new(CWD)).unwrap();
        assert_eq!(
            c,
            BuildConfig {
                source: None,
                name: "debian-rpi4-aarch64".into(),
                distro: Distro::Debian,
                board: Board::Rpi4,
                arch: Arch::Aarch64,
                stages: vec!["__init__".into(), "os".into(), "__cleanup__".into()],
                stage_dirs: vec![],
                hostname: None,
                locale: None,
                timezone: None,
                repo_url: None,
                args: BTreeMap::new(),
                base_file: None,
                base: None,
                no_cache: false,
            }
        );
    }

    #[test]
    fn the_default_name_follows_distro_board_and_arch() {
        let c = config(
            "distro = \"arch\"\nboard = \"zero2w\"\n",
            &["--arch", "arm"],
        )
        .unwrap();
        assert_eq!(c.name, "arch-zero2w-arm");
        let c = config("name = \"kiosk\"\ndistro = \"arch\"\n", &[]).unwrap();
        assert_eq!(c.name, "kiosk");
        let c = config("name = \"kiosk\"\n", &["--name", "mine"]).unwrap();
        assert_eq!(c.name, "mine");
    }

    const FULL: &str = r#"
name = "kiosk"
distro = "arch"
board = "rpi3"
arch = "arm"
stages = ["__init__", "os", "kiosk", "__cleanup__"]
stage_dirs = ["stages", "/opt/more-stages", "../shared"]
hostname = "kiosk"
locale = "de_DE.UTF-8"
timezone = "Europe/Berlin"
mirror = "http://mirror.example/archlinuxarm"
base_file = "root.tar.gz"

[set]
KIOSK_URL = "http://example.com/"
EMPTY = ""
"#;

    #[test]
    fn every_key_of_the_file() {
        let c = config(FULL, &[]).unwrap();
        assert_eq!(c.source, Some(PathBuf::from("proj/pib.toml")));
        assert_eq!(c.name, "kiosk");
        assert_eq!(
            (c.distro, c.board, c.arch),
            (Distro::Arch, Board::Rpi3, Arch::Arm)
        );
        assert_eq!(c.stages, ["__init__", "os", "kiosk", "__cleanup__"]);
        assert_eq!(c.hostname.as_deref(), Some("kiosk"));
        assert_eq!(c.locale.as_deref(), Some("de_DE.UTF-8"));
        assert_eq!(c.timezone.as_deref(), Some("Europe/Berlin"));
        assert_eq!(
            c.repo_url.as_deref(),
            Some("http://mirror.example/archlinuxarm")
        );
        assert_eq!(c.args["KIOSK_URL"], "http://example.com/");
        assert_eq!(c.args["EMPTY"], "");
        assert!(!c.no_cache);
    }

    #[test]
    fn relative_paths_in_the_file_start_from_its_directory() {
        let c = config(FULL, &[]).unwrap();
        assert_eq!(
            c.stage_dirs,
            [
                PathBuf::from("/home/u/work/proj/stages"),
                PathBuf::from("/opt/more-stages"),
                PathBuf::from("/home/u/work/proj/../shared"),
            ]
        );
        assert_eq!(
            c.base_file,
            Some(PathBuf::from("/home/u/work/proj/root.tar.gz"))
        );
        // An absolute -c path, and a file in the current directory.
        let p = parse(FULL, Path::new("/srv/p/pib.toml"), Path::new(CWD)).unwrap();
        let c = merge(Some(&p), &args(&[]), Path::new(CWD)).unwrap();
        assert_eq!(c.stage_dirs[0], PathBuf::from("/srv/p/stages"));
        let p = parse(FULL, Path::new("pib.toml"), Path::new(CWD)).unwrap();
        let c = merge(Some(&p), &args(&[]), Path::new(CWD)).unwrap();
        assert_eq!(c.stage_dirs[0], PathBuf::from("/home/u/work/stages"));
    }

    #[test]
    fn flags_override_the_file() {
        let c = config(
            FULL,
            &[
                "--distro",
                "debian",
                "--board",
                "rpi5",
                "--arch",
                "aarch64",
                "--stages",
                "__init__, os  __cleanup__",
                "--stages-dir",
                "mine",
                "--hostname",
                "h",
                "--locale",
                "C.UTF-8",
                "--timezone",
                "UTC",
                "--mirror",
                "http://deb.example/debian",
                "--set",
                "KIOSK_URL=http://other/",
                "--set",
                "MORE=1",
                "--base-file",
                "other.tar",
                "--no-cache",
            ],
        )
        .unwrap();
        assert_eq!(
            (c.distro, c.board, c.arch),
            (Distro::Debian, Board::Rpi5, Arch::Aarch64)
        );
        assert_eq!(c.name, "kiosk", "the file's name stays unless --name");
        assert_eq!(c.stages, ["__init__", "os", "__cleanup__"]);
        assert_eq!(
            c.stage_dirs,
            [PathBuf::from("/home/u/work/mine")],
            "--stages-dir replaces the file's stage_dirs, from the current directory"
        );
        assert_eq!(c.hostname.as_deref(), Some("h"));
        assert_eq!(c.locale.as_deref(), Some("C.UTF-8"));
        assert_eq!(c.timezone.as_deref(), Some("UTC"));
        assert_eq!(c.repo_url.as_deref(), Some("http://deb.example/debian"));
        assert_eq!(c.args.len(), 3, "--set adds to the file's set");
        assert_eq!(c.args["KIOSK_URL"], "http://other/");
        assert_eq!(c.args["MORE"], "1");
        assert_eq!(c.base_file, Some(PathBuf::from("/home/u/work/other.tar")));
        assert!(c.no_cache);

        let c = config(FULL, &["--base", "my-base"]).unwrap();
        assert_eq!(c.base.as_deref(), Some("my-base"));
        assert_eq!(
            c.base_file, None,
            "a named base replaces the file's tarball"
        );
    }

    #[test]
    fn unknown_keys_are_named() {
        let err = config("name = \"x\"\nhostnmae = \"pi\"\n", &[]).unwrap_err();
        let text = err.to_string();
        assert!(matches!(err, ConfigError::Parse { .. }), "{err:?}");
        assert!(text.contains("proj/pib.toml"), "{text}");
        assert!(text.contains("hostnmae"), "{text}");
        assert!(text.contains("line 2"), "{text}");

        let err = config("[set]\nA = \"1\"\n[extra]\nx = 1\n", &[]).unwrap_err();
        assert!(err.to_string().contains("extra"), "{err}");
    }

    #[test]
    fn bad_values_are_named() {
        for (text, says) in [
            (
                "distro = \"fedora\"",
                "bad distro: \"fedora\" is not one of: arch debian",
            ),
            ("board = \"rpi9\"", "bad board: \"rpi9\""),
            (
                "arch = \"x86_64\"",
                "bad arch: \"x86_64\" is not one of: arm aarch64",
            ),
            (
                "[set]\nHOSTNAME = \"x\"",
                "bad set.HOSTNAME: HOSTNAME has an option of its own: use --hostname",
            ),
            ("[set]\n\"A-B\" = \"x\"", "bad set.A-B"),
        ] {
            let err = config(text, &[]).unwrap_err();
            assert!(err.to_string().contains(says), "{text}: {err}");
        }
        for (text, says) in [
            ("stages = \"__init__ os\"", "invalid type"),
            ("[set]\nA = 1", "invalid type"),
            ("name = ", "TOML parse error at line 1"),
        ] {
            let err = config(text, &[]).unwrap_err();
            assert!(matches!(err, ConfigError::Parse { .. }), "{text}: {err:?}");
            assert!(err.to_string().contains(says), "{text}: {err}");
        }
        // A flag fixes what the file got wrong only by replacing it.
        assert!(config("distro = \"fedora\"", &["--distro", "arch"]).is_ok());
    }

    #[test]
    fn stages_cannot_be_empty() {
        assert!(matches!(
            config("stages = []", &[]),
            Err(ConfigError::NoStages)
        ));
        assert!(matches!(
            config("", &["--stages", " , "]),
            Err(ConfigError::NoStages)
        ));
    }

    #[test]
    fn a_missing_implicit_file_is_no_file_but_a_missing_named_one_is_an_error() {
        let dir = Path::new("/nonexistent-pib-test");
        assert!(read(Path::new("pib.toml"), dir, false).unwrap().is_none());
        let err = read(Path::new("/nonexistent-pib-test/pib.toml"), dir, true).unwrap_err();
        assert!(matches!(err, ConfigError::Read { .. }), "{err:?}");
        assert!(err.to_string().contains("/nonexistent-pib-test/pib.toml"));
    }

    #[test]
    fn build_options_as_the_contract_names_them() {
        let c = merge(None, &args(&[]), Path::new(CWD)).unwrap();
        let o = c.build_options(None);
        let mut keys: Vec<&str> = o.keys().copied().collect();
        keys.sort_unstable();
        assert_eq!(keys, ["arch", "board", "distro", "name", "stages"]);
        assert_eq!(o["distro"], Variant::from("debian"));
        assert_eq!(o["board"], Variant::from("rpi4"));
        assert_eq!(o["arch"], Variant::from("aarch64"));
        assert_eq!(o["name"], Variant::from("debian-rpi4-aarch64"));
        assert_eq!(o["stages"].value_signature().to_string(), "as");
        assert_eq!(
            o["stages"],
            Variant::from(vec!["__init__", "os", "__cleanup__"])
        );

        let c = config(FULL, &["--no-cache"]).unwrap();
        let o = c.build_options(Some("pib-base-arch-rpi3-arm:local"));
        assert_eq!(o["hostname"], Variant::from("kiosk"));
        assert_eq!(o["locale"], Variant::from("de_DE.UTF-8"));
        assert_eq!(o["timezone"], Variant::from("Europe/Berlin"));
        assert_eq!(
            o["repo_url"],
            Variant::from("http://mirror.example/archlinuxarm")
        );
        assert_eq!(o["no_cache"], Variant::from(true));
        assert_eq!(o["base"], Variant::from("pib-base-arch-rpi3-arm:local"));
        assert_eq!(o["args"].value_signature().to_string(), "a{ss}");
        let mut want = HashMap::new();
        want.insert("KIOSK_URL".to_owned(), "http://example.com/".to_owned());
        want.insert("EMPTY".to_owned(), String::new());
        assert_eq!(o["args"], Variant::from(want));
        assert!(!o.contains_key("base_file"), "files never cross as paths");
    }

    #[test]
    fn described_for_people_and_scripts() {
        let c = config(FULL, &[]).unwrap();
        let lines = c.describe();
        assert_eq!(
            lines[0],
            "Building kiosk: arch for rpi3 on arm (from proj/pib.toml)"
        );
        assert_eq!(lines[1], "  stages: __init__ os kiosk __cleanup__");
        assert!(lines[2].starts_with("  stage dirs: /home/u/work/proj/stages, /opt/more-stages"));
        assert_eq!(
            lines[3],
            "  hostname kiosk, locale de_DE.UTF-8, timezone Europe/Berlin, mirror \
             http://mirror.example/archlinuxarm"
        );
        assert_eq!(
            lines[4],
            "  build args: EMPTY= KIOSK_URL=http://example.com/"
        );
        assert_eq!(
            lines[5],
            "  base: imported from /home/u/work/proj/root.tar.gz"
        );
        let v = c.to_json();
        assert_eq!(v["name"], "kiosk");
        assert_eq!(v["stages"][2], "kiosk");
        assert_eq!(v["args"]["KIOSK_URL"], "http://example.com/");
        assert_eq!(v["base"], Value::Null);
        assert_eq!(v["source"], "proj/pib.toml");

        let c = merge(None, &args(&[]), Path::new(CWD)).unwrap();
        assert_eq!(
            c.describe(),
            [
                "Building debian-rpi4-aarch64: debian for rpi4 on aarch64",
                "  stages: __init__ os __cleanup__"
            ]
        );
    }
}
