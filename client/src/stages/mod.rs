//! Stages on the client side: finding the chosen stages on disk, and packing them into the build
//! context that the daemon receives.
//!
//! Everything here runs with the user's own rights (DESIGN §3: the daemon never opens a path a
//! caller named). The daemon checks the stream again and trusts nothing in it; the checks here
//! exist so that mistakes are reported early, naming local paths instead of tar entries.
//!
//! Where stages come from, for a build of distro X, first match wins:
//! 1. each `--stages-dir DIR`, in the order given: `DIR/NAME/` (user directories are flat);
//! 2. the bundled tree: `X/NAME/` (family-specific), then `common/NAME/`.

mod context;

use std::collections::HashSet;
use std::ffi::OsString;
use std::fmt::Write as _;
use std::io;
use std::path::{Path, PathBuf};

use pib_dbus_interfaces::stage::{self, StageNameError, CLEANUP, INIT, MAX_STAGES};
use pib_dbus_interfaces::types::Distro;

pub use context::{write_context, ContextSummary};

/// Environment variable that points at the bundled stage tree, overriding the search.
pub const BUNDLED_ENV: &str = "PIB_BUNDLED_STAGES";
/// The bundled subdirectory shared by all base families.
pub const COMMON: &str = "common";
/// The file every stage directory must have.
pub const PART_FILE: &str = "Dockerfile.part";

/// Installed locations of the bundled stages, after `<exe dir>/../share/pi-builder/stages`.
const SYSTEM_ROOTS: [&str; 2] = [
    "/usr/share/pi-builder/stages",
    "/usr/local/share/pi-builder/stages",
];

/// Where a stage was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// In one of the user's `--stages-dir` directories.
    User,
    /// In the bundled tree.
    Bundled,
}

/// A chosen stage, found on disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stage {
    pub name: String,
    /// The stage directory (holding `Dockerfile.part`), as found (not canonicalised).
    pub dir: PathBuf,
    pub origin: Origin,
}

/// Why stages cannot be used. Messages say what to do about it.
#[derive(Debug, thiserror::Error)]
pub enum StageError {
    #[error("no stages were given: the list must start with {INIT}")]
    NoStages,
    #[error("{count} stages were given; at most {MAX_STAGES} are allowed")]
    TooMany { count: usize },
    #[error(transparent)]
    BadName(#[from] StageNameError),
    #[error("the first stage must be {INIT}, not {first:?}: put {INIT} at the front of the list")]
    InitNotFirst { first: String },
    #[error("{CLEANUP} must be the last stage: move it to the end of the list")]
    CleanupNotLast,
    #[error("stage {name:?} is listed twice: list each stage once")]
    Duplicate { name: String },
    #[error("cannot use the stage directory {}: {source}; check the --stages-dir path", dir.display())]
    UserDir {
        dir: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{} is not a directory; --stages-dir needs a directory of stages", dir.display())]
    UserDirNotDir { dir: PathBuf },
    #[error(
        "stage {name:?} not found (looked for {}){}: check the spelling, or create \
         {name}/{PART_FILE} in a --stages-dir directory",
        list_paths(.looked),
        if *.bundled { "" } else { "; no bundled stages are installed (set PIB_BUNDLED_STAGES)" }
    )]
    NotFound {
        name: String,
        looked: Vec<PathBuf>,
        /// Whether the bundled tree was searched too.
        bundled: bool,
    },
    #[error(
        "stage {name:?} at {} is not a directory: a stage is a directory holding a {PART_FILE}",
        path.display()
    )]
    NotADirectory { name: String, path: PathBuf },
    #[error("stage {name:?} at {} has no {PART_FILE}: every stage needs one", dir.display())]
    MissingPart { name: String, dir: PathBuf },
    #[error("{} is not a regular file: a stage's {PART_FILE} must be a file", path.display())]
    PartNotFile { path: PathBuf },
    #[error(
        "cannot read {}: {source}; make it readable for you or remove it from the stage",
        path.display()
    )]
    Unreadable {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(
        "symbolic link {} points to the absolute path {}: links in a stage must be relative and \
         stay inside the stage; create such links in a RUN step instead",
        path.display(),
        target.display()
    )]
    SymlinkAbsolute { path: PathBuf, target: PathBuf },
    #[error(
        "symbolic link {} points to {}, outside its stage directory (or through \"..\" after a \
         name): links in a stage must stay inside it; copy the file into the stage instead",
        path.display(),
        target.display()
    )]
    SymlinkEscapes { path: PathBuf, target: PathBuf },
    #[error(
        "{} is a {kind}: a stage may only hold regular files, directories and symbolic links; \
         remove it",
        path.display()
    )]
    SpecialFile { path: PathBuf, kind: &'static str },
    #[error(
        "{} has a path of more than {} bytes in the build context: shorten it",
        path.display(),
        context::MAX_NAME_LEN
    )]
    NameTooLong { path: PathBuf },
    #[error(
        "the stages add up to more than {limit} bytes: remove large files from the stage \
         directories"
    )]
    TooLarge { limit: u64 },
    #[error("{} changed while it was being read: run the build again", path.display())]
    FileChanged { path: PathBuf },
    /// The daemon stopped reading (it refused the context, or the build ended); its own error
    /// says why and is the one to show.
    #[error("cannot send the build context to the daemon: {0}")]
    Write(#[source] io::Error),
}

fn list_paths(paths: &[PathBuf]) -> String {
    let mut out = String::new();
    for (i, p) in paths.iter().enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        let _ = write!(out, "{}", p.display());
    }
    out
}

/// Where the bundled stages are: `$PIB_BUNDLED_STAGES` if set, else the first existing of
/// `<exe dir>/../share/pi-builder/stages`, `/usr/share/pi-builder/stages`,
/// `/usr/local/share/pi-builder/stages` and, for development from the repository,
/// `<exe dir>/../../stages` (`target/debug/pib-client`).
pub fn bundled_root() -> Option<PathBuf> {
    let exe = std::env::current_exe().ok();
    let system: Vec<&Path> = SYSTEM_ROOTS.iter().map(Path::new).collect();
    bundled_root_from(std::env::var_os(BUNDLED_ENV), exe.as_deref(), &system)
}

/// [`bundled_root`] with its inputs made explicit, for tests.
fn bundled_root_from(
    env: Option<OsString>,
    exe: Option<&Path>,
    system: &[&Path],
) -> Option<PathBuf> {
    // An explicit setting is used as it is, even if missing: the "not found" error then names it,
    // which explains more than silently falling back to another tree.
    if let Some(value) = env.filter(|v| !v.is_empty()) {
        return Some(PathBuf::from(value));
    }
    // Joined on the parent rather than with "..", so the paths shown in errors read cleanly.
    let exe_dir = exe.and_then(Path::parent);
    let prefix = exe_dir.and_then(Path::parent);
    let mut candidates: Vec<PathBuf> = Vec::new();
    if let Some(prefix) = prefix {
        candidates.push(prefix.join("share/pi-builder/stages"));
    }
    candidates.extend(system.iter().map(|p| p.to_path_buf()));
    if let Some(repo) = prefix.and_then(Path::parent) {
        candidates.push(repo.join("stages"));
    }
    candidates.into_iter().find(|p| p.is_dir())
}

/// Finds the stages `names` (in build order) for `distro`: checks the list (grammar, `__init__`
/// first, `__cleanup__` last, no repeats, at most [`MAX_STAGES`]), then looks each one up in
/// `user_dirs` in order, then in `bundled_root` (`DISTRO/NAME`, then `common/NAME`).
pub fn resolve(
    names: &[String],
    user_dirs: &[PathBuf],
    bundled_root: Option<&Path>,
    distro: Distro,
) -> Result<Vec<Stage>, StageError> {
    check_list(names)?;
    for dir in user_dirs {
        let meta = std::fs::metadata(dir).map_err(|source| StageError::UserDir {
            dir: dir.clone(),
            source,
        })?;
        if !meta.is_dir() {
            return Err(StageError::UserDirNotDir { dir: dir.clone() });
        }
    }
    names
        .iter()
        .map(|name| find(name, user_dirs, bundled_root, distro))
        .collect()
}

fn check_list(names: &[String]) -> Result<(), StageError> {
    if names.is_empty() {
        return Err(StageError::NoStages);
    }
    if names.len() > MAX_STAGES {
        return Err(StageError::TooMany { count: names.len() });
    }
    // Grammar first, so that a mistyped name is reported as such, not as an order problem.
    for name in names {
        stage::check_name(name)?;
    }
    if names[0] != INIT {
        return Err(StageError::InitNotFirst {
            first: names[0].clone(),
        });
    }
    let mut seen = HashSet::new();
    for (index, name) in names.iter().enumerate() {
        if name == CLEANUP && index + 1 != names.len() {
            return Err(StageError::CleanupNotLast);
        }
        if !seen.insert(name.as_str()) {
            return Err(StageError::Duplicate { name: name.clone() });
        }
    }
    Ok(())
}

fn find(
    name: &str,
    user_dirs: &[PathBuf],
    bundled_root: Option<&Path>,
    distro: Distro,
) -> Result<Stage, StageError> {
    let mut candidates: Vec<(PathBuf, Origin)> = user_dirs
        .iter()
        .map(|dir| (dir.join(name), Origin::User))
        .collect();
    if let Some(root) = bundled_root {
        candidates.push((root.join(distro.as_str()).join(name), Origin::Bundled));
        candidates.push((root.join(COMMON).join(name), Origin::Bundled));
    }
    for (path, origin) in &candidates {
        // Following a symlink here is the user's choice (a stage linked into a stages dir).
        let meta = match std::fs::metadata(path) {
            Ok(meta) => meta,
            // A dangling symlink is a broken stage, not an absent one: say so rather than fall
            // back to a stage of the same name further down.
            Err(e) if e.kind() == io::ErrorKind::NotFound && path.symlink_metadata().is_ok() => {
                return Err(StageError::NotADirectory {
                    name: name.to_owned(),
                    path: path.clone(),
                })
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(source) => {
                return Err(StageError::Unreadable {
                    path: path.clone(),
                    source,
                })
            }
        };
        // Something with the stage's name that is not a directory is a mistake worth reporting
        // rather than silently skipping to a stage of the same name further down.
        if !meta.is_dir() {
            return Err(StageError::NotADirectory {
                name: name.to_owned(),
                path: path.clone(),
            });
        }
        let part = path.join(PART_FILE);
        match std::fs::metadata(&part) {
            Ok(meta) if meta.is_file() => {}
            Ok(_) => return Err(StageError::PartNotFile { path: part }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(StageError::MissingPart {
                    name: name.to_owned(),
                    dir: path.clone(),
                })
            }
            Err(source) => return Err(StageError::Unreadable { path: part, source }),
        }
        return Ok(Stage {
            name: name.to_owned(),
            dir: path.clone(),
            origin: *origin,
        });
    }
    Err(StageError::NotFound {
        name: name.to_owned(),
        looked: candidates.into_iter().map(|(p, _)| p).collect(),
        bundled: bundled_root.is_some(),
    })
}

#[cfg(test)]
mod tests;
