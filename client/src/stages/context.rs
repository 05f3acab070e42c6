//! Packing stage directories into the build context: a tar stream of `stages/NAME/...`.
//!
//! Layout, which the daemon relies on: first, for each stage in build order, its directory and
//! its `Dockerfile.part` (so the daemon can generate and check the Dockerfile before it starts
//! Docker, holding only the parts in memory); then, stage by stage, everything else in the stage
//! directory, depth first, names sorted bytewise. Identical trees give identical streams, so a
//! rebuild sends the same context and Docker's cache sees the same files.
//!
//! Headers carry what a build needs and nothing about the user: mode bits (0o7777), mtime, size,
//! and owner 0:0 with empty user and group names. Regular files and directories are read with
//! the user's own rights; symbolic links are kept as links when their target is relative and
//! stays inside the stage (the daemon applies the same rule); hard links become ordinary files;
//! devices, FIFOs and sockets are refused.
//!
//! On error the stream is left without its end marker, so the daemon reports an interrupted
//! context rather than building a partial one.

use std::ffi::OsStr;
use std::fs::{self, File, Metadata, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::Path;

use pib_dbus_interfaces::stage;

use super::{Stage, StageError, PART_FILE};

/// Most bytes of tar stream sent for one build (headers included); the daemon's default limit is
/// the same, so what passes here passes there.
pub const MAX_CONTEXT_BYTES: u64 = 1 << 30;
/// Longest entry name in the context (PATH_MAX); the daemon refuses longer ones.
pub(super) const MAX_NAME_LEN: usize = 4096;

const BLOCK: u64 = 512;
/// The end-of-archive marker: two zero blocks.
const TRAILER: u64 = 2 * BLOCK;

/// What was sent.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ContextSummary {
    pub stages: usize,
    pub files: u64,
    pub dirs: u64,
    pub symlinks: u64,
    /// Bytes of file data.
    pub file_bytes: u64,
    /// Bytes of tar stream written, headers and end marker included.
    pub tar_bytes: u64,
}

/// Writes the build context for `stages` (as returned by `resolve`, in build order) to `out`,
/// typically the write end of the pipe passed to the daemon's `Build`.
pub fn write_context(stages: &[Stage], out: impl Write) -> Result<ContextSummary, StageError> {
    write_context_limited(stages, out, MAX_CONTEXT_BYTES)
}

pub(super) fn write_context_limited<W: Write>(
    stages: &[Stage],
    out: W,
    limit: u64,
) -> Result<ContextSummary, StageError> {
    let mut packer = Packer {
        builder: tar::Builder::new(Counter {
            inner: out,
            written: 0,
            blown: false,
        }),
        limit,
        summary: ContextSummary {
            stages: stages.len(),
            ..ContextSummary::default()
        },
    };
    match packer.pack(stages) {
        Ok(()) => {
            let mut counter = packer.builder.into_inner().map_err(StageError::Write)?;
            // Flushed here: a buffered output dropped later would lose its error.
            counter.flush().map_err(StageError::Write)?;
            packer.summary.tar_bytes = counter.written;
            Ok(packer.summary)
        }
        Err(e) => {
            // Dropping the builder would write the end marker and make the part sent so far
            // look complete.
            packer.builder.get_mut().blown = true;
            Err(e)
        }
    }
}

struct Packer<W: Write> {
    builder: tar::Builder<Counter<W>>,
    limit: u64,
    summary: ContextSummary,
}

impl<W: Write> Packer<W> {
    fn pack(&mut self, stages: &[Stage]) -> Result<(), StageError> {
        for stage in stages {
            // `resolve` checked the name; a Stage built elsewhere must not smuggle a path in.
            stage::check_name(&stage.name)?;
            let prefix = format!("stages/{}", stage.name).into_bytes();
            // The stage directory itself may be a symlink the user made; follow it.
            let meta = fs::metadata(&stage.dir).map_err(unreadable(&stage.dir))?;
            if !meta.is_dir() {
                return Err(StageError::NotADirectory {
                    name: stage.name.clone(),
                    path: stage.dir.clone(),
                });
            }
            self.dir(&prefix, &meta)?;
            // The part is always sent as a file: a symlinked Dockerfile.part is read through.
            let part_path = stage.dir.join(PART_FILE);
            let (file, meta) = open_regular(&part_path, true)?;
            let tar_path = [&prefix[..], b"/", PART_FILE.as_bytes()].concat();
            self.file(&tar_path, &part_path, &meta, file)?;
        }
        for stage in stages {
            let prefix = format!("stages/{}", stage.name).into_bytes();
            self.walk(&stage.dir, &prefix, 0)?;
        }
        Ok(())
    }

    /// Sends everything below `dir` (at `depth` directories below the stage directory), names
    /// sorted bytewise, depth first; the stage's own part was sent already.
    fn walk(&mut self, dir: &Path, tar_dir: &[u8], depth: usize) -> Result<(), StageError> {
        let mut names = fs::read_dir(dir)
            .map_err(unreadable(dir))?
            .map(|entry| entry.map(|e| e.file_name()))
            .collect::<Result<Vec<_>, _>>()
            .map_err(unreadable(dir))?;
        names.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
        for name in names {
            if depth == 0 && name == PART_FILE {
                continue;
            }
            let path = dir.join(&name);
            let tar_path = [tar_dir, b"/", name.as_bytes()].concat();
            if tar_path.len() > MAX_NAME_LEN {
                return Err(StageError::NameTooLong { path });
            }
            let meta = fs::symlink_metadata(&path).map_err(unreadable(&path))?;
            let kind = meta.file_type();
            if kind.is_dir() {
                self.dir(&tar_path, &meta)?;
                self.walk(&path, &tar_path, depth + 1)?;
            } else if kind.is_file() {
                let (file, opened) = open_regular(&path, false)?;
                // Swapped for something else between the listing and the open.
                if (opened.dev(), opened.ino()) != (meta.dev(), meta.ino()) {
                    return Err(StageError::FileChanged { path });
                }
                self.file(&tar_path, &path, &opened, file)?;
            } else if kind.is_symlink() {
                let target = fs::read_link(&path).map_err(unreadable(&path))?;
                check_link_target(&path, &target, depth)?;
                self.symlink(&tar_path, &meta, &target)?;
            } else {
                return Err(StageError::SpecialFile {
                    path,
                    kind: special_kind(&meta),
                });
            }
        }
        Ok(())
    }

    /// Refuses to go on when an entry of `cost` bytes (plus the end marker) would pass the limit.
    fn reserve(&self, cost: u64) -> Result<(), StageError> {
        let written = self.builder.get_ref().written;
        if written.saturating_add(cost).saturating_add(TRAILER) > self.limit {
            return Err(StageError::TooLarge { limit: self.limit });
        }
        Ok(())
    }

    fn dir(&mut self, tar_path: &[u8], meta: &Metadata) -> Result<(), StageError> {
        self.reserve(entry_cost(tar_path.len(), 0, 0))?;
        let mut header = header(tar::EntryType::Directory, meta.mode(), meta.mtime(), 0);
        self.builder
            .append_data(&mut header, as_path(tar_path), io::empty())
            .map_err(StageError::Write)?;
        self.summary.dirs += 1;
        Ok(())
    }

    fn symlink(
        &mut self,
        tar_path: &[u8],
        meta: &Metadata,
        target: &Path,
    ) -> Result<(), StageError> {
        let target_len = target.as_os_str().len();
        self.reserve(entry_cost(tar_path.len(), target_len, 0))?;
        let mut header = header(tar::EntryType::Symlink, meta.mode(), meta.mtime(), 0);
        self.builder
            .append_link(&mut header, as_path(tar_path), target)
            .map_err(StageError::Write)?;
        self.summary.symlinks += 1;
        Ok(())
    }

    /// Sends `source` as the regular file `tar_path`, exactly `meta.len()` bytes of it.
    fn file<R: Read>(
        &mut self,
        tar_path: &[u8],
        path: &Path,
        meta: &Metadata,
        source: R,
    ) -> Result<(), StageError> {
        self.file_from(
            tar_path,
            path,
            meta.len(),
            meta.mode(),
            meta.mtime(),
            source,
        )
    }

    fn file_from<R: Read>(
        &mut self,
        tar_path: &[u8],
        path: &Path,
        size: u64,
        mode: u32,
        mtime: i64,
        source: R,
    ) -> Result<(), StageError> {
        self.reserve(entry_cost(tar_path.len(), 0, size))?;
        let mut header = header(tar::EntryType::Regular, mode, mtime, size);
        let mut source = Exact {
            inner: source,
            left: size,
            failure: None,
        };
        let sent = self
            .builder
            .append_data(&mut header, as_path(tar_path), &mut source);
        if let Err(e) = sent {
            return Err(match source.failure.take() {
                Some(Failure::Read(source)) => StageError::Unreadable {
                    path: path.to_owned(),
                    source,
                },
                Some(Failure::Shrunk) => StageError::FileChanged {
                    path: path.to_owned(),
                },
                None => StageError::Write(e),
            });
        }
        // A file that grew while it was read would be sent cut short: refuse it instead.
        let mut probe = [0u8; 1];
        match source.inner.read(&mut probe) {
            Ok(0) => {}
            Ok(_) => {
                return Err(StageError::FileChanged {
                    path: path.to_owned(),
                })
            }
            Err(e) => {
                return Err(StageError::Unreadable {
                    path: path.to_owned(),
                    source: e,
                })
            }
        }
        self.summary.files += 1;
        self.summary.file_bytes += size;
        Ok(())
    }
}

/// Opens a file for reading, refusing anything but a regular file. `O_NONBLOCK` keeps a FIFO
/// put in place of the file from blocking the open; `O_NOFOLLOW` (unless `follow`) keeps a
/// symlink put in its place from being followed.
fn open_regular(path: &Path, follow: bool) -> Result<(File, Metadata), StageError> {
    let mut flags = libc::O_NONBLOCK | libc::O_NOCTTY;
    if !follow {
        flags |= libc::O_NOFOLLOW;
    }
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(flags)
        .open(path)
        .map_err(|e| {
            if e.raw_os_error() == Some(libc::ELOOP) && !follow {
                StageError::FileChanged {
                    path: path.to_owned(),
                }
            } else if e.kind() == io::ErrorKind::NotFound && follow {
                StageError::PartNotFile {
                    path: path.to_owned(),
                }
            } else {
                StageError::Unreadable {
                    path: path.to_owned(),
                    source: e,
                }
            }
        })?;
    let meta = file.metadata().map_err(unreadable(path))?;
    if !meta.is_file() {
        return Err(if follow {
            StageError::PartNotFile {
                path: path.to_owned(),
            }
        } else {
            StageError::FileChanged {
                path: path.to_owned(),
            }
        });
    }
    Ok((file, meta))
}

/// The daemon's rule, applied early: a relative target that, read from the link's directory
/// (`depth` below the stage directory), stays inside the stage: `..` only at the start and at
/// most `depth` of them.
fn check_link_target(path: &Path, target: &Path, depth: usize) -> Result<(), StageError> {
    let bytes = target.as_os_str().as_bytes();
    if bytes.first() == Some(&b'/') {
        return Err(StageError::SymlinkAbsolute {
            path: path.to_owned(),
            target: target.to_owned(),
        });
    }
    if pib_dbus_interfaces::stage::link_stays_inside(bytes, depth) {
        Ok(())
    } else {
        Err(StageError::SymlinkEscapes {
            path: path.to_owned(),
            target: target.to_owned(),
        })
    }
}

fn special_kind(meta: &Metadata) -> &'static str {
    let kind = meta.file_type();
    if kind.is_fifo() {
        "FIFO"
    } else if kind.is_socket() {
        "socket"
    } else if kind.is_char_device() {
        "character device"
    } else if kind.is_block_device() {
        "block device"
    } else {
        "special file"
    }
}

fn header(kind: tar::EntryType, mode: u32, mtime: i64, size: u64) -> tar::Header {
    // GNU headers take long names as extension entries, which the daemon reads; user and group
    // names stay empty.
    let mut header = tar::Header::new_gnu();
    header.set_entry_type(kind);
    header.set_mode(mode & 0o7777);
    header.set_uid(0);
    header.set_gid(0);
    header.set_mtime(mtime.max(0) as u64);
    header.set_size(size);
    header
}

fn as_path(bytes: &[u8]) -> &Path {
    Path::new(OsStr::from_bytes(bytes))
}

fn padded(size: u64) -> u64 {
    size.div_ceil(BLOCK).saturating_mul(BLOCK)
}

/// An upper bound of the bytes `tar::Builder` writes for one entry: the header, a GNU long-name
/// (or long-link) entry when the name does not fit the 100-byte field, and the padded data.
fn entry_cost(name_len: usize, link_len: usize, size: u64) -> u64 {
    let extension = |len: usize| {
        if len >= 100 {
            BLOCK + padded(len as u64 + 1)
        } else {
            0
        }
    };
    BLOCK + extension(name_len) + extension(link_len) + padded(size)
}

fn unreadable(path: &Path) -> impl FnOnce(io::Error) -> StageError + '_ {
    move |source| StageError::Unreadable {
        path: path.to_owned(),
        source,
    }
}

enum Failure {
    Read(io::Error),
    Shrunk,
}

/// Exactly `left` bytes of a file, remembering why it could not give them.
struct Exact<R> {
    inner: R,
    left: u64,
    failure: Option<Failure>,
}

impl<R: Read> Read for Exact<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.left == 0 || buf.is_empty() {
            return Ok(0);
        }
        let want = buf
            .len()
            .min(usize::try_from(self.left).unwrap_or(usize::MAX));
        loop {
            match self.inner.read(&mut buf[..want]) {
                Ok(0) => {
                    self.failure = Some(Failure::Shrunk);
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the file became shorter while it was read",
                    ));
                }
                Ok(n) => {
                    self.left -= n as u64;
                    return Ok(n);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    let copy = io::Error::new(e.kind(), e.to_string());
                    self.failure = Some(Failure::Read(e));
                    return Err(copy);
                }
            }
        }
    }
}

/// Counts what reaches the output; once blown, writes nothing more (in particular not the end
/// marker that `tar::Builder` writes when dropped).
struct Counter<W> {
    inner: W,
    written: u64,
    blown: bool,
}

impl<W: Write> Write for Counter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.blown {
            return Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "the build context was abandoned",
            ));
        }
        let n = self.inner.write(buf)?;
        self.written += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        if self.blown {
            return Ok(());
        }
        self.inner.flush()
    }
}

#[cfg(test)]
pub(super) mod test_support {
    //! Entry points for the tests of the parent module.
    use super::*;

    /// Sends `source` as a file claiming `size` bytes, as `write_context` does for real files.
    pub fn pack_one<R: Read>(size: u64, source: R) -> (Result<(), StageError>, Vec<u8>) {
        let mut out = Vec::new();
        let result = {
            let mut packer = Packer {
                builder: tar::Builder::new(Counter {
                    inner: &mut out,
                    written: 0,
                    blown: false,
                }),
                limit: MAX_CONTEXT_BYTES,
                summary: ContextSummary::default(),
            };
            let result = packer.file_from(
                b"stages/a/f",
                Path::new("/stages/a/f"),
                size,
                0o644,
                0,
                source,
            );
            packer.builder.get_mut().blown = true;
            result
        };
        (result, out)
    }

    pub fn link_ok(target: &str, depth: usize) -> bool {
        check_link_target(Path::new("l"), Path::new(target), depth).is_ok()
    }

    pub fn cost(name_len: usize, link_len: usize, size: u64) -> u64 {
        entry_cost(name_len, link_len, size)
    }
}
