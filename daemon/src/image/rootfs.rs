//! The root filesystem: the tree from the first read is declared to an ext4 builder (mkext4,
//! pure Rust, no mounting), the layout is sealed, its metadata written into the image, and the
//! second read of the stream fills the files' blocks in place.

use std::io::{self, Read};

use mkext4::{FsBuilder, InodeCount, InodeHandle, Options, SparseSeg, SpecialKind};

use super::sink::WindowSink;
use super::tree::{Kind, Segment, Source, Tree, ROOT};
use super::ImageError;

pub const MIB: u64 = 1 << 20;

/// How big the filesystem is and what it is called.
#[derive(Debug, Clone)]
pub struct FsSpec {
    pub size: u64,
    pub label: String,
    pub uuid: [u8; 16],
    pub epoch: i64,
}

fn options(spec: &FsSpec, inodes: u32) -> Options {
    let mut opts = Options::new(spec.size, spec.uuid, spec.epoch);
    opts.label = Some(spec.label.clone());
    opts.inodes = InodeCount::Exact(inodes);
    opts
}

/// Inodes for a filesystem of `size` bytes holding `nodes` nodes: mke2fs's one per 16 KiB,
/// but never fewer than the content needs plus room to grow.
pub fn inode_count(size: u64, nodes: u64) -> u32 {
    let by_size = size / 16384;
    let by_content = nodes + nodes / 4 + 4096;
    by_size.max(by_content).min(u64::from(u32::MAX / 2)) as u32
}

fn name_str(name: &[u8]) -> Option<&str> {
    std::str::from_utf8(name).ok()
}

fn meta(m: &super::tree::Meta) -> mkext4::Meta {
    let t = (m.mtime.clamp(0, (1i64 << 34) - 1), 0);
    mkext4::Meta::new(m.mode, m.uid, m.gid, t)
}

fn sparse(segments: &[Segment]) -> Vec<SparseSeg> {
    segments
        .iter()
        .map(|s| match *s {
            Segment::Data(n) => SparseSeg::Data(n),
            Segment::Hole(n) => SparseSeg::Hole(n),
        })
        .collect()
}

fn mk_err(e: mkext4::Error) -> ImageError {
    ImageError::Filesystem(e.to_string())
}

/// Whether a builder error means the filesystem is too small for the content.
fn is_full(e: &mkext4::Error) -> bool {
    let text = e.to_string();
    text.contains("too small") || text.contains("image full") || text.contains("inode")
}

/// The tree declared: which builder handle each fillable node got.
pub struct Declared {
    pub layout: mkext4::Layout,
    /// (node index, handle) of files whose bytes come from the stream, in stream order.
    pub from_stream: Vec<(u64, u32, InodeHandle)>,
    /// Files whose bytes the daemon supplies.
    pub inline: Vec<(InodeHandle, Vec<u8>)>,
    pub notes: Vec<String>,
}

/// Declares the tree and seals the layout; `None` when it does not fit in `spec.size`.
pub fn declare(tree: &Tree, spec: &FsSpec) -> Result<Option<Declared>, ImageError> {
    let nodes = tree.live().count() as u64;
    let mut b = FsBuilder::new(options(spec, inode_count(spec.size, nodes))).map_err(mk_err)?;
    let mut handles: Vec<Option<InodeHandle>> = vec![None; tree.nodes.len()];
    handles[ROOT as usize] = Some(mkext4::ROOT);
    let mut from_stream = Vec::new();
    let mut inline = Vec::new();
    let mut notes = Vec::new();
    let root = tree.node(ROOT);
    b.set_meta(mkext4::ROOT, meta(&root.meta)).map_err(mk_err)?;
    for (i, node) in tree.live() {
        if i == ROOT {
            continue;
        }
        let Some(parent) = handles[node.parent as usize] else {
            continue; // its parent was skipped, and with it the subtree
        };
        let Some(name) = name_str(&node.name) else {
            notes.push(format!(
                "skipped {:?}: the name is not UTF-8",
                tree.path_of(i)
            ));
            continue;
        };
        let m = meta(&node.meta);
        let declared = match &node.kind {
            Kind::Dir => b.mkdir(parent, name, m),
            Kind::File {
                size,
                segments,
                source,
            } => {
                let h = match segments {
                    Some(segs) => b.file_sparse(parent, name, m, &sparse(segs)),
                    None => b.file(parent, name, m, *size),
                };
                if let Ok(h) = h {
                    let has_data = match segments {
                        Some(segs) => segs.iter().any(|s| matches!(s, Segment::Data(_))),
                        None => *size > 0,
                    };
                    match source {
                        Source::Tar(ordinal) if has_data => from_stream.push((*ordinal, i, h)),
                        Source::Inline(bytes) if has_data => inline.push((h, bytes.clone())),
                        _ => {}
                    }
                }
                h
            }
            Kind::Symlink(target) => match std::str::from_utf8(target) {
                Ok(t) => b.symlink(parent, name, t, m),
                Err(_) => {
                    notes.push(format!(
                        "skipped the symlink {:?}: its target is not UTF-8",
                        tree.path_of(i)
                    ));
                    continue;
                }
            },
            Kind::HardLink(target) => match handles[*target as usize] {
                Some(t) if !tree.node(*target).removed => b.hardlink(parent, name, t).map(|()| t),
                _ => {
                    notes.push(format!(
                        "skipped the hard link {:?}: its file is not in the image",
                        tree.path_of(i)
                    ));
                    continue;
                }
            },
            Kind::Char(major, minor) => b.mknod(
                parent,
                name,
                m,
                SpecialKind::Char {
                    major: *major,
                    minor: *minor,
                },
            ),
            Kind::Block(major, minor) => b.mknod(
                parent,
                name,
                m,
                SpecialKind::Block {
                    major: *major,
                    minor: *minor,
                },
            ),
            Kind::Fifo => b.mknod(parent, name, m, SpecialKind::Fifo),
        };
        let handle = match declared {
            Ok(h) => h,
            Err(e) if is_full(&e) => return Ok(None),
            Err(e) => {
                notes.push(format!("skipped {:?}: {e}", tree.path_of(i)));
                continue;
            }
        };
        if !matches!(node.kind, Kind::HardLink(_)) {
            for (key, value) in &node.xattrs {
                if let Err(e) = b.set_xattr(handle, key, value) {
                    notes.push(format!(
                        "dropped the attribute {key} of {:?}: {e}",
                        tree.path_of(i)
                    ));
                }
            }
        }
        handles[i as usize] = Some(handle);
    }
    match b.seal() {
        Ok(layout) => {
            from_stream.sort_by_key(|&(ordinal, _, _)| ordinal);
            Ok(Some(Declared {
                layout,
                from_stream,
                inline,
                notes,
            }))
        }
        Err(e) if is_full(&e) => Ok(None),
        Err(e) => Err(mk_err(e)),
    }
}

/// The smallest size (a multiple of 4 MiB, from `start`) in which the tree fits, found by
/// growing 10 % at a time. Sealing is in memory, so each try costs no I/O.
pub fn smallest_fit(tree: &Tree, spec: &FsSpec, start: u64) -> Result<u64, ImageError> {
    let mut size = start.div_ceil(4 * MIB) * 4 * MIB;
    for _ in 0..64 {
        let trial = FsSpec {
            size,
            ..spec.clone()
        };
        if declare(tree, &trial)?.is_some() {
            return Ok(size);
        }
        size = (size + size / 10).div_ceil(4 * MIB) * 4 * MIB;
    }
    Err(ImageError::Filesystem(
        "cannot find a filesystem size that holds the content".into(),
    ))
}

/// Reads only the data segments of a sparse file's bytes, discarding the holes.
struct DataOnly<'a, R> {
    inner: R,
    segments: &'a [Segment],
    /// Bytes left in the current segment.
    left: u64,
    at: usize,
}

impl<'a, R: Read> DataOnly<'a, R> {
    fn new(inner: R, segments: &'a [Segment]) -> Self {
        DataOnly {
            inner,
            segments,
            left: 0,
            at: 0,
        }
    }
}

impl<R: Read> Read for DataOnly<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            if self.left == 0 {
                let Some(seg) = self.segments.get(self.at) else {
                    return Ok(0);
                };
                self.at += 1;
                match *seg {
                    Segment::Hole(n) => {
                        io::copy(&mut (&mut self.inner).take(n), &mut io::sink())?;
                        continue;
                    }
                    Segment::Data(n) => self.left = n,
                }
            }
            let want = buf.len().min(self.left as usize);
            let n = self.inner.read(&mut buf[..want])?;
            if n == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            self.left -= n as u64;
            return Ok(n);
        }
    }
}

/// Writes the sealed filesystem: metadata at once, then the files' bytes from the second
/// read of the stream (checked against the first), then the daemon's own files.
pub fn write(
    tree: &Tree,
    declared: Declared,
    stream: impl Read,
    sink: &mut WindowSink<'_>,
    cancelled: &dyn Fn() -> bool,
    progress: &mut dyn FnMut(u64),
) -> Result<(), ImageError> {
    let Declared {
        layout,
        from_stream,
        inline,
        notes: _,
    } = declared;
    let mut writer = layout.writer(&mut *sink).map_err(mk_err)?;
    let mut archive = tar::Archive::new(stream);
    let mut pending = from_stream.iter().peekable();
    let mut written = 0u64;
    for (ordinal, entry) in archive.entries().map_err(ImageError::stream)?.enumerate() {
        let Some(&&(want, node, handle)) = pending.peek() else {
            break;
        };
        let mut entry = entry.map_err(ImageError::stream)?;
        if ordinal as u64 != want {
            continue;
        }
        pending.next();
        if cancelled() {
            return Err(ImageError::Cancelled);
        }
        let Kind::File { size, segments, .. } = &tree.node(node).kind else {
            unreachable!("only files are filled");
        };
        let same_path = super::tree::split_path(&entry.path_bytes())
            .map(|n| n.join(&b'/'))
            .is_some_and(|p| p == tree.path_of(node).into_bytes());
        if !same_path || entry.size() != *size {
            return Err(ImageError::Changed(tree.path_of(node)));
        }
        let result = match segments {
            Some(segs) => writer.fill(handle, &mut DataOnly::new(&mut entry, segs)),
            None => writer.fill(handle, &mut entry),
        };
        result.map_err(sink_error)?;
        written += size;
        progress(written);
    }
    if let Some(&(_, node, _)) = pending.next() {
        return Err(ImageError::Changed(tree.path_of(node)));
    }
    for (handle, bytes) in inline {
        writer
            .fill(handle, &mut bytes.as_slice())
            .map_err(sink_error)?;
    }
    writer.finish().map_err(sink_error)?;
    Ok(())
}

/// The I/O error inside a builder error, when it came from writing the image.
fn sink_failure(e: &mkext4::Error) -> Option<i32> {
    match e {
        mkext4::Error::Io(io) => io.raw_os_error(),
        _ => None,
    }
}

fn sink_error(e: mkext4::Error) -> ImageError {
    match sink_failure(&e) {
        Some(libc::ENOSPC) | Some(libc::EDQUOT) => ImageError::NoSpace(e.to_string()),
        _ => match e {
            mkext4::Error::Io(io) if io.kind() == io::ErrorKind::UnexpectedEof => {
                ImageError::stream(io)
            }
            other => mk_err(other),
        },
    }
}

/// An empty ext4 filesystem (the optional data partition).
pub fn write_empty(spec: &FsSpec, sink: &mut WindowSink<'_>) -> Result<(), ImageError> {
    let b = FsBuilder::new(options(spec, inode_count(spec.size, 1))).map_err(mk_err)?;
    let layout = b.seal().map_err(mk_err)?;
    let writer = layout.writer(sink).map_err(mk_err)?;
    writer.finish().map_err(sink_error)?;
    Ok(())
}
