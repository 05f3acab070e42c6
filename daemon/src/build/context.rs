//! The build context: the client's tar stream, checked entry by entry and written out again as
//! the tar that Docker receives, with the generated `Dockerfile` at its root.
//!
//! The client's stream is untrusted (DESIGN §3 rule 4). Nothing in it is passed through: every
//! entry is parsed here by a small reader with hard bounds on everything it keeps in memory, its
//! name, type and link target are checked, and a fresh header is written for it (owner 0:0, mode
//! masked to 0o7777). Docker therefore only ever parses tar that this module wrote, so the usual
//! differences between tar readers (PAX versus GNU names, sizes on directories, global headers)
//! cannot be used to show this check one name and Docker another.
//!
//! What a context may hold: `stages/` and, below it, one directory per stage (`stages/NAME/`, NAME
//! in the stage grammar) with regular files, directories and symbolic links whose target is
//! relative and stays inside that stage directory. Refused, with the entry named: absolute names,
//! `..`, anything else at the top (including a `Dockerfile`), hard links, devices, FIFOs, other
//! types (tar cannot carry sockets; they end up as unknown types), symlinks that leave their
//! stage or entries placed beneath a symlink, and anything that would make the stream larger
//! than the limit.
//!
//! Two ways to use it:
//! - [`restream`], when the Dockerfile is already known;
//! - [`ContextReader`], for a build: [`ContextReader::read_parts`] first reads every stage's
//!   `Dockerfile.part` (the client sends them first, in build order), so the daemon can generate
//!   and check the Dockerfile before it starts Docker, then [`ContextReader::restream_into`]
//!   writes the whole context.
//!
//! Memory stays bounded whatever the client sends: file data is copied through a fixed buffer,
//! extension headers are capped ([`MAX_NAME_LEN`], [`MAX_PAX_LEN`]), parts are capped together
//! ([`MAX_PARTS_BYTES`]) and so is the table of symbolic links ([`MAX_SYMLINK_TABLE`]).
//!
//! When an error is returned the output is left unfinished: no end-of-archive marker is written
//! and a block that no tar reader accepts is appended (best effort), so a build that already
//! started on the stream fails instead of running on a partial context. The caller must still
//! cancel that build.

use std::collections::HashSet;
use std::ffi::OsStr;
use std::io::{self, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use pib_dbus_interfaces::stage::{self, StageNameError, MAX_STAGES};

/// A sensible limit for the whole client stream (headers included): large enough for stages
/// that carry firmware blobs, small enough that a runaway client cannot fill the disk.
pub const DEFAULT_LIMIT: u64 = 1 << 30;
/// Longest entry name or link target, as on Linux (PATH_MAX).
pub const MAX_NAME_LEN: usize = 4096;
/// Largest PAX extended header accepted. Real ones are a few hundred bytes.
pub const MAX_PAX_LEN: u64 = 64 * 1024;
/// All `Dockerfile.part` texts of one build together. Parts are kept in memory to generate the
/// Dockerfile; real ones are a few KiB each.
pub const MAX_PARTS_BYTES: u64 = 4 << 20;
/// Bytes of symlink names remembered to refuse entries placed beneath a symlink.
pub const MAX_SYMLINK_TABLE: usize = 8 << 20;

const BLOCK: u64 = 512;
/// Name of the part file inside each stage directory.
const PART: &str = "Dockerfile.part";

/// Why a build context is refused. Entry names are shown as the client sent them (lossily
/// decoded when they are not UTF-8).
#[derive(Debug, thiserror::Error)]
pub enum ContextError {
    #[error("cannot read the build context from the client: {0}")]
    Read(#[source] io::Error),
    #[error("cannot pass the build context on to Docker: {0}")]
    Write(#[source] io::Error),
    #[error(
        "the build context ended before its end marker: the client stopped sending it \
         (interrupted?); run the build again"
    )]
    Truncated,
    #[error(
        "the build context is not a valid tar stream (at byte {offset}: {reason}); \
         use pib-client to send stages"
    )]
    BadHeader { offset: u64, reason: &'static str },
    #[error("context entry {entry:?} has an absolute name: entries must be stages/NAME/...")]
    AbsoluteName { entry: String },
    #[error("context entry {entry:?} contains \"..\": entries must stay inside stages/NAME/")]
    ParentComponent { entry: String },
    #[error("context entry {entry:?} contains a NUL byte in its name or link target")]
    NulInName { entry: String },
    #[error(
        "context entry {entry:?}… has a name or link target longer than {MAX_NAME_LEN} bytes: \
         shorten it"
    )]
    NameTooLong { entry: String },
    #[error(
        "context entry {entry:?} is not under stages/NAME/: the build context may only hold \
         stage directories"
    )]
    OutsideStages { entry: String },
    #[error("context entry {entry:?} is not in a valid stage directory: {source}")]
    BadStageName {
        entry: String,
        #[source]
        source: StageNameError,
    },
    #[error(
        "context entry {entry:?} would replace the Dockerfile: pi-builder generates it from the \
         stages' Dockerfile.part files; remove it"
    )]
    ClientDockerfile { entry: String },
    #[error(
        "context entry {entry:?} is in one stage directory too many: a build has at most \
         {MAX_STAGES} stages"
    )]
    TooManyStages { entry: String },
    #[error("context entry {entry:?} must be a directory (it is a stage directory)")]
    StageRootNotDir { entry: String },
    #[error(
        "context entry {entry:?} belongs to stage {stage:?}, which is not in the build's stage \
         list: send only the chosen stages"
    )]
    StageNotChosen { entry: String, stage: String },
    #[error(
        "symbolic link {entry:?} points to the absolute path {target:?}: links in a stage must \
         be relative and stay inside the stage; create such links in a RUN step instead"
    )]
    SymlinkAbsolute { entry: String, target: String },
    #[error(
        "symbolic link {entry:?} points to {target:?}, outside its stage directory: links in a \
         stage must stay inside it; copy the file into the stage instead"
    )]
    SymlinkEscapes { entry: String, target: String },
    #[error(
        "context entry {entry:?} lies beneath the symbolic link {link:?}: entries may not be \
         placed through links"
    )]
    UnderSymlink { entry: String, link: String },
    #[error(
        "context entry {entry:?} is a hard link (to {target:?}): send the file itself \
         (pib-client does)"
    )]
    HardLink { entry: String, target: String },
    #[error(
        "context entry {entry:?} is a {kind}: stages may only hold regular files, directories and \
         symbolic links; remove it"
    )]
    SpecialFile { entry: String, kind: &'static str },
    #[error(
        "context entry {entry:?} has an unsupported tar type {typeflag:?}: stages may only hold \
         regular files, directories and symbolic links"
    )]
    UnsupportedType { entry: String, typeflag: char },
    #[error("context entry {entry:?} is a {kind} but carries {size} bytes of data")]
    UnexpectedData {
        entry: String,
        kind: &'static str,
        size: u64,
    },
    #[error(
        "context entry {entry:?} is {size} bytes, more than the {remaining} bytes left of the \
         build context limit: remove large files from the stages"
    )]
    EntryTooLarge {
        entry: String,
        size: u64,
        remaining: u64,
    },
    #[error("the build context is larger than {limit} bytes: remove large files from the stages")]
    TooLarge { limit: u64 },
    #[error(
        "the build context holds too many symbolic links (more than {MAX_SYMLINK_TABLE} bytes of \
         link names)"
    )]
    TooManySymlinks,
    #[error("the build context has a tar extension header of {size} bytes, more than allowed")]
    ExtensionTooLarge { size: u64 },
    #[error("the build context has a malformed tar extension header: {reason}")]
    BadExtension { reason: &'static str },
    #[error("context entry {entry:?} is a sparse file: send it as a plain file")]
    Sparse { entry: String },
    #[error(
        "the build context must start with stages/{stage}/{PART}, found {found}: \
         pib-client sends each stage's {PART} first, in build order"
    )]
    PartMissing { stage: String, found: String },
    #[error(
        "the Dockerfile.part files add up to more than {MAX_PARTS_BYTES} bytes (at stage {stage}): \
         shorten them"
    )]
    PartsTooLarge { stage: String },
    #[error("stages/{stage}/{PART} is not UTF-8 text: save it as UTF-8")]
    PartNotUtf8 { stage: String },
    #[error(
        "context entry {entry:?} appears a second time: each stage's {PART} may only be sent once"
    )]
    DuplicatePart { entry: String },
}

/// What went through.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ContextStats {
    /// Bytes read from the client, headers included.
    pub input_bytes: u64,
    /// Entries written (the generated Dockerfile not counted).
    pub entries: u64,
    pub files: u64,
    pub dirs: u64,
    pub symlinks: u64,
    /// File data bytes written (the generated Dockerfile not counted).
    pub file_bytes: u64,
    /// Stage directories seen, in the order they first appeared.
    pub stages: Vec<String>,
}

/// Checks the client's context `input` and writes it to `output` with `dockerfile` as the
/// root `Dockerfile`, refusing streams larger than `limit` bytes.
///
/// Blocking; run it on a blocking thread between the client's fd and the pipe to Docker.
/// (The daemon itself reads the parts first with [`ContextReader`]; this is the one-shot form.)
#[cfg(test)]
pub fn restream<R: Read, W: Write>(
    input: R,
    output: W,
    dockerfile: &str,
    limit: u64,
) -> Result<ContextStats, ContextError> {
    ContextReader::new(input, limit).restream_into(output, dockerfile)
}

/// A client context being read: optionally its parts first, then everything.
pub struct ContextReader<R> {
    tar: TarReader<R>,
    /// The build's stage list, once [`Self::read_parts`] was given it: other stages are refused.
    chosen: Option<Vec<String>>,
    /// Entries read by `read_parts`, written out later behind the Dockerfile.
    held: Vec<(Checked, Vec<u8>)>,
    symlinks: HashSet<Vec<u8>>,
    symlink_bytes: usize,
    stats: ContextStats,
}

/// An entry that passed the checks.
#[derive(Debug, Clone)]
struct Checked {
    /// Normalised name: components joined by `/`, without `.`, empty components or a trailing `/`.
    path: Vec<u8>,
    /// The stage it belongs to; `None` for `stages/` itself.
    stage: Option<String>,
    kind: Kind,
    mode: u32,
    mtime: u64,
    size: u64,
    link: Vec<u8>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    File,
    Dir,
    Symlink,
}

impl<R: Read> ContextReader<R> {
    pub fn new(input: R, limit: u64) -> Self {
        ContextReader {
            tar: TarReader {
                inner: input,
                offset: 0,
                limit,
            },
            chosen: None,
            held: Vec::new(),
            symlinks: HashSet::new(),
            symlink_bytes: 0,
            stats: ContextStats::default(),
        }
    }

    /// Reads the leading entries of a context: for each of `stages` in order, optionally its
    /// directory, then its `Dockerfile.part`. Returns `(stage, part text)` in build order, ready
    /// for `dockerfile::generate`. From here on, entries of stages not in `stages` are refused.
    pub fn read_parts(&mut self, stages: &[String]) -> Result<Vec<(String, String)>, ContextError> {
        self.chosen = Some(stages.to_vec());
        let mut parts = Vec::with_capacity(stages.len());
        let mut budget = MAX_PARTS_BYTES;
        // Each directory may come once before its part: what is held stays small.
        let mut root_seen = false;
        for name in stages {
            let part_path = format!("stages/{name}/{PART}").into_bytes();
            let dir_path = format!("stages/{name}").into_bytes();
            let mut dir_seen = false;
            loop {
                let Some(header) = self.tar.next_header()? else {
                    return Err(ContextError::PartMissing {
                        stage: name.clone(),
                        found: "the end of the context".into(),
                    });
                };
                let entry = self.check(header)?;
                if entry.kind == Kind::Dir {
                    let seen = if entry.stage.is_none() {
                        &mut root_seen
                    } else {
                        &mut dir_seen
                    };
                    if !*seen && (entry.stage.is_none() || entry.path == dir_path) {
                        *seen = true;
                        self.held.push((entry, Vec::new()));
                        continue;
                    }
                }
                if entry.kind != Kind::File || entry.path != part_path {
                    return Err(ContextError::PartMissing {
                        stage: name.clone(),
                        found: format!("{:?}", show(&entry.path)),
                    });
                }
                if entry.size > budget {
                    return Err(ContextError::PartsTooLarge {
                        stage: name.clone(),
                    });
                }
                budget -= entry.size;
                self.tar.check_room(&entry)?;
                let mut data = Vec::with_capacity(entry.size as usize);
                let mut reader = self.tar.data(entry.size);
                reader
                    .read_to_end(&mut data)
                    .map_err(|e| reader.failure(e))?;
                self.tar.skip_padding(entry.size)?;
                let text = std::str::from_utf8(&data)
                    .map_err(|_| ContextError::PartNotUtf8 {
                        stage: name.clone(),
                    })?
                    .to_owned();
                self.held.push((entry, data));
                parts.push((name.clone(), text));
                break;
            }
        }
        Ok(parts)
    }

    /// Writes the checked context to `output`: `dockerfile` as `Dockerfile` first, then the
    /// entries held by [`Self::read_parts`], then the rest of the client's stream.
    pub fn restream_into<W: Write>(
        mut self,
        output: W,
        dockerfile: &str,
    ) -> Result<ContextStats, ContextError> {
        let mut builder = tar::Builder::new(Fuse::new(output));
        match self.write_all(&mut builder, dockerfile) {
            Ok(()) => {
                // Flushed here: a buffered output dropped later would lose its error.
                let mut output = builder.into_inner().map_err(ContextError::Write)?;
                output.flush().map_err(ContextError::Write)?;
                self.stats.input_bytes = self.tar.offset;
                Ok(self.stats)
            }
            Err(e) => {
                builder.get_mut().poison();
                Err(e)
            }
        }
    }

    fn write_all<W: Write>(
        &mut self,
        builder: &mut tar::Builder<W>,
        dockerfile: &str,
    ) -> Result<(), ContextError> {
        let mut header = new_header(tar::EntryType::Regular, 0o644, 0, dockerfile.len() as u64);
        builder
            .append_data(&mut header, "Dockerfile", dockerfile.as_bytes())
            .map_err(ContextError::Write)?;

        for (entry, data) in std::mem::take(&mut self.held) {
            self.emit(builder, &entry, &mut data.as_slice())
                .map_err(ContextError::Write)?;
        }

        let parts: HashSet<Vec<u8>> = self
            .chosen
            .iter()
            .flatten()
            .map(|name| format!("stages/{name}/{PART}").into_bytes())
            .collect();
        while let Some(header) = self.tar.next_header()? {
            let entry = self.check(header)?;
            if parts.contains(&entry.path) {
                return Err(ContextError::DuplicatePart {
                    entry: show(&entry.path),
                });
            }
            if entry.kind == Kind::File {
                self.tar.check_room(&entry)?;
                let mut reader = self.tar.data(entry.size);
                let result = emit_entry(builder, &entry, &mut reader, &mut self.stats);
                result.map_err(|e| reader.failure(e))?;
                self.tar.skip_padding(entry.size)?;
            } else {
                self.emit(builder, &entry, &mut io::empty())
                    .map_err(ContextError::Write)?;
            }
        }
        Ok(())
    }

    fn emit<W: Write>(
        &mut self,
        builder: &mut tar::Builder<W>,
        entry: &Checked,
        data: &mut dyn Read,
    ) -> io::Result<()> {
        emit_entry(builder, entry, data, &mut self.stats)
    }

    /// Applies every rule to one header; on success the entry may be written out.
    fn check(&mut self, header: RawHeader) -> Result<Checked, ContextError> {
        let shown = || show(&header.path);
        if header.path.contains(&0) || header.link.contains(&0) {
            return Err(ContextError::NulInName { entry: shown() });
        }
        if header.path.first() == Some(&b'/') {
            return Err(ContextError::AbsoluteName { entry: shown() });
        }
        let components: Vec<&[u8]> = header
            .path
            .split(|b| *b == b'/')
            .filter(|c| !c.is_empty() && *c != b".")
            .collect();
        if components.iter().any(|c| *c == b"..") {
            return Err(ContextError::ParentComponent { entry: shown() });
        }
        if components.len() == 1
            && (components[0] == b"Dockerfile" || components[0] == b"dockerfile")
        {
            return Err(ContextError::ClientDockerfile { entry: shown() });
        }
        if components.first() != Some(&&b"stages"[..]) {
            return Err(ContextError::OutsideStages { entry: shown() });
        }

        let kind = match header.typeflag {
            b'0' | b'\0' => Kind::File,
            b'5' => Kind::Dir,
            b'2' => Kind::Symlink,
            b'1' => {
                return Err(ContextError::HardLink {
                    entry: shown(),
                    target: show(&header.link),
                })
            }
            b'3' | b'4' | b'6' => {
                let kind = match header.typeflag {
                    b'3' => "character device",
                    b'4' => "block device",
                    _ => "FIFO",
                };
                return Err(ContextError::SpecialFile {
                    entry: shown(),
                    kind,
                });
            }
            b'S' => return Err(ContextError::Sparse { entry: shown() }),
            other => {
                return Err(ContextError::UnsupportedType {
                    entry: shown(),
                    typeflag: other as char,
                })
            }
        };
        if kind != Kind::File && header.size != 0 {
            // Readers disagree on whether such data exists; the client never sends any.
            return Err(ContextError::UnexpectedData {
                entry: shown(),
                kind: if kind == Kind::Dir {
                    "directory"
                } else {
                    "symbolic link"
                },
                size: header.size,
            });
        }

        let path = components.join(&b'/');
        if components.len() == 1 {
            // `stages/` itself.
            if kind != Kind::Dir {
                return Err(ContextError::OutsideStages { entry: shown() });
            }
            return Ok(Checked {
                path,
                stage: None,
                kind,
                mode: header.mode,
                mtime: header.mtime,
                size: 0,
                link: Vec::new(),
            });
        }

        let name = String::from_utf8_lossy(components[1]).into_owned();
        stage::check_name(&name).map_err(|source| ContextError::BadStageName {
            entry: shown(),
            source,
        })?;
        if let Some(chosen) = &self.chosen {
            if !chosen.contains(&name) {
                return Err(ContextError::StageNotChosen {
                    entry: shown(),
                    stage: name,
                });
            }
        }
        if components.len() == 2 && kind != Kind::Dir {
            return Err(ContextError::StageRootNotDir { entry: shown() });
        }
        // A symlink earlier in the stream would make this entry land wherever the link points
        // (Docker resolves it within the context, but not within the stage).
        for end in 3..components.len() {
            let prefix = components[..end].join(&b'/');
            if self.symlinks.contains(&prefix) {
                return Err(ContextError::UnderSymlink {
                    entry: shown(),
                    link: show(&prefix),
                });
            }
        }
        if kind == Kind::Symlink {
            check_link_target(&header.path, &header.link, components.len() - 3)?;
            self.symlink_bytes += path.len();
            if self.symlink_bytes > MAX_SYMLINK_TABLE {
                return Err(ContextError::TooManySymlinks);
            }
            self.symlinks.insert(path.clone());
        }
        if !self.stats.stages.contains(&name) {
            // Only reachable without a stage list; bounds the list and the time to search it.
            if self.stats.stages.len() >= MAX_STAGES {
                return Err(ContextError::TooManyStages { entry: shown() });
            }
            self.stats.stages.push(name.clone());
        }
        Ok(Checked {
            path,
            stage: Some(name),
            kind,
            mode: header.mode,
            mtime: header.mtime,
            size: header.size,
            link: header.link,
        })
    }
}

/// A link target is acceptable when it is relative and, read from the link's own directory
/// (`depth` directories below the stage directory), stays inside the stage: `..` only at the
/// start and at most `depth` of them, then ordinary names. Since no entry may lie beneath a
/// link, the directories the leading `..` climb are real ones, and every link that the rest of
/// the path passes through obeys the same rule, so resolving never leaves the stage.
fn check_link_target(entry: &[u8], target: &[u8], depth: usize) -> Result<(), ContextError> {
    let escapes = || ContextError::SymlinkEscapes {
        entry: show(entry),
        target: show(target),
    };
    if target.len() > MAX_NAME_LEN {
        return Err(ContextError::NameTooLong {
            entry: show(&entry[..entry.len().min(200)]),
        });
    }
    if target.first() == Some(&b'/') {
        return Err(ContextError::SymlinkAbsolute {
            entry: show(entry),
            target: show(target),
        });
    }
    if !pib_dbus_interfaces::stage::link_stays_inside(target, depth) {
        return Err(escapes());
    }
    Ok(())
}

fn new_header(kind: tar::EntryType, mode: u32, mtime: u64, size: u64) -> tar::Header {
    let mut header = tar::Header::new_gnu();
    header.set_entry_type(kind);
    header.set_mode(mode & 0o7777);
    header.set_uid(0);
    header.set_gid(0);
    header.set_mtime(mtime);
    header.set_size(size);
    header
}

fn emit_entry<W: Write>(
    builder: &mut tar::Builder<W>,
    entry: &Checked,
    data: &mut dyn Read,
    stats: &mut ContextStats,
) -> io::Result<()> {
    let path = Path::new(OsStr::from_bytes(&entry.path));
    match entry.kind {
        Kind::File => {
            let mut header =
                new_header(tar::EntryType::Regular, entry.mode, entry.mtime, entry.size);
            builder.append_data(&mut header, path, data)?;
            stats.files += 1;
            stats.file_bytes += entry.size;
        }
        Kind::Dir => {
            let mut header = new_header(tar::EntryType::Directory, entry.mode, entry.mtime, 0);
            builder.append_data(&mut header, path, io::empty())?;
            stats.dirs += 1;
        }
        Kind::Symlink => {
            let mut header = new_header(tar::EntryType::Symlink, entry.mode, entry.mtime, 0);
            let target = Path::new(OsStr::from_bytes(&entry.link));
            builder.append_link(&mut header, path, target)?;
            stats.symlinks += 1;
        }
    }
    stats.entries += 1;
    Ok(())
}

fn show(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn padded(size: u64) -> u64 {
    size.div_ceil(BLOCK).saturating_mul(BLOCK)
}

/// One entry's header after its extension headers were applied.
#[derive(Debug)]
struct RawHeader {
    path: Vec<u8>,
    link: Vec<u8>,
    typeflag: u8,
    mode: u32,
    mtime: u64,
    size: u64,
}

/// A minimal tar reader: ustar, GNU (long names `L`/`K`) and PAX (`x`; `g` skipped), every
/// allocation bounded, every byte counted against the limit.
struct TarReader<R> {
    inner: R,
    /// Bytes consumed so far.
    offset: u64,
    limit: u64,
}

#[derive(Default)]
struct Pax {
    path: Option<Vec<u8>>,
    link: Option<Vec<u8>>,
    size: Option<u64>,
    mtime: Option<u64>,
    sparse: bool,
}

impl<R: Read> TarReader<R> {
    fn remaining(&self) -> u64 {
        self.limit.saturating_sub(self.offset)
    }

    /// Refuses an entry whose data cannot fit in what is left of the limit, before reading any
    /// of it (the size is only the client's claim).
    fn check_room(&self, entry: &Checked) -> Result<(), ContextError> {
        let remaining = self.remaining();
        if padded(entry.size) > remaining {
            return Err(ContextError::EntryTooLarge {
                entry: show(&entry.path),
                size: entry.size,
                remaining,
            });
        }
        Ok(())
    }

    /// Reads exactly `buf.len()` bytes, or returns `Ok(false)` on end of input before the first.
    fn fill(&mut self, buf: &mut [u8]) -> Result<bool, ContextError> {
        if buf.len() as u64 > self.remaining() {
            return Err(ContextError::TooLarge { limit: self.limit });
        }
        let mut got = 0;
        while got < buf.len() {
            match self.inner.read(&mut buf[got..]) {
                Ok(0) if got == 0 => return Ok(false),
                Ok(0) => return Err(ContextError::Truncated),
                Ok(n) => {
                    got += n;
                    self.offset += n as u64;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(ContextError::Read(e)),
            }
        }
        Ok(true)
    }

    fn read_exact_counted(&mut self, buf: &mut [u8]) -> Result<(), ContextError> {
        if buf.is_empty() || self.fill(buf)? {
            Ok(())
        } else {
            Err(ContextError::Truncated)
        }
    }

    /// Reads (and throws away) the zero padding after `size` bytes of entry data.
    fn skip_padding(&mut self, size: u64) -> Result<(), ContextError> {
        let pad = (padded(size) - size) as usize;
        let mut buf = [0u8; BLOCK as usize];
        self.read_exact_counted(&mut buf[..pad])
    }

    /// Reads a whole extension header's data (bounded by the caller) plus its padding.
    fn read_extension(&mut self, size: u64) -> Result<Vec<u8>, ContextError> {
        let mut data = vec![0u8; size as usize];
        self.read_exact_counted(&mut data)?;
        self.skip_padding(size)?;
        Ok(data)
    }

    /// A reader for the next `size` bytes of entry data.
    fn data(&mut self, size: u64) -> DataReader<'_, R> {
        DataReader {
            tar: self,
            left: size,
            failure: None,
        }
    }

    /// The next entry's header with its extension headers applied; `None` at the end marker.
    fn next_header(&mut self) -> Result<Option<RawHeader>, ContextError> {
        let mut long_name: Option<Vec<u8>> = None;
        let mut long_link: Option<Vec<u8>> = None;
        let mut pax: Option<Pax> = None;
        loop {
            let at = self.offset;
            let mut block = [0u8; BLOCK as usize];
            if !self.fill(&mut block)? {
                return Err(ContextError::Truncated);
            }
            if block.iter().all(|b| *b == 0) {
                if long_name.is_some() || long_link.is_some() || pax.is_some() {
                    return Err(ContextError::BadExtension {
                        reason: "an extension header is not followed by an entry",
                    });
                }
                // The end marker is two zero blocks; tolerate a stream that stops after one
                // (nothing after the first is used).
                let mut second = [0u8; BLOCK as usize];
                let _ = self.fill(&mut second);
                return Ok(None);
            }
            verify_checksum(&block, at)?;
            let typeflag = block[156];
            let size = numeric(&block[124..136]).ok_or(ContextError::BadHeader {
                offset: at,
                reason: "bad size field",
            })?;
            match typeflag {
                b'L' | b'K' => {
                    let slot = if typeflag == b'L' {
                        &mut long_name
                    } else {
                        &mut long_link
                    };
                    if slot.is_some() {
                        return Err(ContextError::BadExtension {
                            reason: "two GNU long-name headers for one entry",
                        });
                    }
                    if size > MAX_NAME_LEN as u64 + 1 {
                        return Err(ContextError::NameTooLong {
                            entry: show(&cstr(&block[0..100])[..]),
                        });
                    }
                    let mut data = self.read_extension(size)?;
                    let end = data.iter().position(|b| *b == 0).unwrap_or(data.len());
                    data.truncate(end);
                    *slot = Some(data);
                }
                b'x' => {
                    if pax.is_some() {
                        return Err(ContextError::BadExtension {
                            reason: "two PAX headers for one entry",
                        });
                    }
                    if size > MAX_PAX_LEN {
                        return Err(ContextError::ExtensionTooLarge { size });
                    }
                    let data = self.read_extension(size)?;
                    pax = Some(parse_pax(&data)?);
                }
                b'g' => {
                    // Global PAX headers carry defaults (times, charset) that the fresh headers
                    // written here do not use.
                    if size > MAX_PAX_LEN {
                        return Err(ContextError::ExtensionTooLarge { size });
                    }
                    self.read_extension(size)?;
                }
                _ => {
                    let mut header = parse_header(&block, at, typeflag, size)?;
                    if let Some(name) = long_name {
                        header.path = name;
                    }
                    if let Some(link) = long_link {
                        header.link = link;
                    }
                    if let Some(pax) = pax {
                        if pax.sparse {
                            return Err(ContextError::Sparse {
                                entry: show(&header.path),
                            });
                        }
                        if let Some(path) = pax.path {
                            header.path = path;
                        }
                        if let Some(link) = pax.link {
                            header.link = link;
                        }
                        if let Some(size) = pax.size {
                            header.size = size;
                        }
                        if let Some(mtime) = pax.mtime {
                            header.mtime = mtime;
                        }
                    }
                    if header.path.len() > MAX_NAME_LEN {
                        return Err(ContextError::NameTooLong {
                            entry: show(&header.path[..200]),
                        });
                    }
                    return Ok(Some(header));
                }
            }
        }
    }
}

/// Entry data, exactly `left` bytes of it; records why it failed so that the error reported is
/// the client's (truncated, unreadable) rather than the writer's.
struct DataReader<'a, R> {
    tar: &'a mut TarReader<R>,
    left: u64,
    failure: Option<ContextError>,
}

impl<R: Read> DataReader<'_, R> {
    /// The error to report for an I/O error that came out of a copy through this reader.
    fn failure(&mut self, e: io::Error) -> ContextError {
        self.failure.take().unwrap_or(ContextError::Write(e))
    }
}

impl<R: Read> Read for DataReader<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.left == 0 || buf.is_empty() {
            return Ok(0);
        }
        let want = buf.len().min(self.left.min(usize::MAX as u64) as usize);
        loop {
            match self.tar.inner.read(&mut buf[..want]) {
                Ok(0) => {
                    self.failure = Some(ContextError::Truncated);
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the build context ended inside an entry",
                    ));
                }
                Ok(n) => {
                    self.left -= n as u64;
                    self.tar.offset += n as u64;
                    return Ok(n);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    let shown = io::Error::new(e.kind(), e.to_string());
                    self.failure = Some(ContextError::Read(e));
                    return Err(shown);
                }
            }
        }
    }
}

fn verify_checksum(block: &[u8; BLOCK as usize], at: u64) -> Result<(), ContextError> {
    let stored = numeric(&block[148..156]).ok_or(ContextError::BadHeader {
        offset: at,
        reason: "bad checksum field",
    })?;
    let mut unsigned: u64 = 0;
    let mut signed: i64 = 0;
    for (i, b) in block.iter().enumerate() {
        let b = if (148..156).contains(&i) { b' ' } else { *b };
        unsigned += u64::from(b);
        signed += i64::from(b as i8);
    }
    if stored == unsigned || i64::try_from(stored).is_ok_and(|s| s == signed) {
        Ok(())
    } else {
        Err(ContextError::BadHeader {
            offset: at,
            reason: "header checksum mismatch",
        })
    }
}

fn parse_header(
    block: &[u8; BLOCK as usize],
    at: u64,
    typeflag: u8,
    size: u64,
) -> Result<RawHeader, ContextError> {
    let bad = |reason| ContextError::BadHeader { offset: at, reason };
    let name = cstr(&block[0..100]);
    let magic = &block[257..263];
    let version = &block[263..265];
    // POSIX ustar splits long names into prefix + name; GNU uses that area for other fields.
    let path = if magic == b"ustar\0" && version == b"00" {
        let prefix = cstr(&block[345..500]);
        if prefix.is_empty() {
            name
        } else {
            [prefix, b"/".to_vec(), name].concat()
        }
    } else {
        name
    };
    let mode = numeric(&block[100..108]).ok_or(bad("bad mode field"))?;
    // Times before 1970 (negative base-256) are clamped; they only label files.
    let mtime = numeric(&block[136..148]).unwrap_or(0);
    Ok(RawHeader {
        path,
        link: cstr(&block[157..257]),
        typeflag,
        mode: (mode & 0o7777) as u32,
        mtime,
        size,
    })
}

/// A NUL-terminated header string.
fn cstr(field: &[u8]) -> Vec<u8> {
    let end = field.iter().position(|b| *b == 0).unwrap_or(field.len());
    field[..end].to_vec()
}

/// A numeric header field: octal text (padded with spaces or NULs), or GNU base-256 when the
/// high bit of the first byte is set. Negative or overflowing values are `None`.
fn numeric(field: &[u8]) -> Option<u64> {
    if field[0] & 0x80 != 0 {
        if field[0] & 0x40 != 0 {
            return None; // negative
        }
        let mut value = u64::from(field[0] & 0x3f);
        for b in &field[1..] {
            value = value.checked_mul(256)?.checked_add(u64::from(*b))?;
        }
        return Some(value);
    }
    let text = std::str::from_utf8(field).ok()?;
    let text = text.trim_matches(|c| c == ' ' || c == '\0');
    if text.is_empty() {
        return Some(0);
    }
    u64::from_str_radix(text, 8).ok()
}

/// PAX records: `LEN KEY=VALUE\n`, LEN counting the whole record.
fn parse_pax(mut data: &[u8]) -> Result<Pax, ContextError> {
    let bad = |reason| ContextError::BadExtension { reason };
    let mut pax = Pax::default();
    while !data.is_empty() {
        if data.iter().all(|b| *b == 0) {
            break;
        }
        let space = data
            .iter()
            .position(|b| *b == b' ')
            .ok_or(bad("PAX record without a length"))?;
        let len: usize = std::str::from_utf8(&data[..space])
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or(bad("PAX record with a bad length"))?;
        if len <= space + 1 || len > data.len() || data[len - 1] != b'\n' {
            return Err(bad("PAX record with a wrong length"));
        }
        let record = &data[space + 1..len - 1];
        let eq = record
            .iter()
            .position(|b| *b == b'=')
            .ok_or(bad("PAX record without '='"))?;
        let (key, value) = (&record[..eq], &record[eq + 1..]);
        // An empty value removes the key: the plain header's value applies again.
        let value_opt = (!value.is_empty()).then(|| value.to_vec());
        match key {
            b"path" => pax.path = value_opt,
            b"linkpath" => pax.link = value_opt,
            b"size" => {
                pax.size = match value_opt {
                    None => None,
                    Some(v) => Some(
                        std::str::from_utf8(&v)
                            .ok()
                            .and_then(|s| s.parse().ok())
                            .ok_or(bad("PAX size is not a number"))?,
                    ),
                }
            }
            b"mtime" => {
                // Seconds with an optional fraction; negative or odd values are just ignored.
                pax.mtime = std::str::from_utf8(value)
                    .ok()
                    .and_then(|s| s.split('.').next())
                    .and_then(|s| s.parse().ok());
            }
            k if k.starts_with(b"GNU.sparse.") => pax.sparse = true,
            _ => {}
        }
        data = &data[len..];
    }
    Ok(pax)
}

/// An output that can be switched off: after an error nothing more (in particular not the
/// end-of-archive marker that `tar::Builder` writes when dropped) reaches Docker, after one
/// block that no tar reader accepts.
struct Fuse<W> {
    inner: W,
    blown: bool,
}

impl<W: Write> Fuse<W> {
    fn new(inner: W) -> Self {
        Fuse {
            inner,
            blown: false,
        }
    }

    fn poison(&mut self) {
        if !self.blown {
            self.blown = true;
            // Not zeros (an end marker) and not a valid header (bad checksum): readers fail.
            let _ = self.inner.write_all(&[0xff; 2 * BLOCK as usize]);
            let _ = self.inner.flush();
        }
    }
}

impl<W: Write> Write for Fuse<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.blown {
            return Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "the build context was refused",
            ));
        }
        self.inner.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        if self.blown {
            return Ok(());
        }
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests;
