//! The first read of the container's filesystem: every tar entry becomes a node of an
//! in-memory tree (names, kinds, metadata, extended attributes and where each file's bytes
//! are), while the files under the boot directory go straight into the FAT partition.
//!
//! The stream is attacker-controlled (DESIGN §3 rule 4). Nothing here touches the host: links
//! are recorded as text and never followed, paths are split into names and never joined onto
//! a host directory, entries that climb out of the tree (`..`) or name nothing are dropped
//! with a note in the job's log.

use std::collections::HashMap;
use std::io::{self, Read};

use super::boot::BootFiles;
use super::ImageError;

/// ext4 block size: holes are found at this granularity.
pub const BLOCK: u64 = 4096;

/// A file with more hole/data alternations than this is stored without holes: its segment
/// list would cost more memory than the holes save.
const MAX_SEGMENTS: usize = 4096;

/// Permission bits, owner and modification time of a node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Meta {
    pub mode: u16,
    pub uid: u32,
    pub gid: u32,
    pub mtime: i64,
}

impl Meta {
    pub const fn root_dir() -> Meta {
        Meta {
            mode: 0o755,
            uid: 0,
            gid: 0,
            mtime: 0,
        }
    }
}

/// A run of a file's content: bytes to store, or whole blocks of zeros to leave out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Segment {
    Data(u64),
    Hole(u64),
}

/// Where a regular file's bytes come from in the second read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// The data of the tar entry with this ordinal (its position in the stream).
    Tar(u64),
    /// Bytes the daemon wrote itself (a fix-up).
    Inline(Vec<u8>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    Dir,
    File {
        size: u64,
        /// None when the file has no holes.
        segments: Option<Vec<Segment>>,
        source: Source,
    },
    Symlink(Vec<u8>),
    /// Another name for the node at this index.
    HardLink(u32),
    Char(u32, u32),
    Block(u32, u32),
    Fifo,
}

#[derive(Debug, Clone)]
pub struct Node {
    /// Index of the parent directory (the root is its own parent).
    pub parent: u32,
    pub name: Vec<u8>,
    pub kind: Kind,
    pub meta: Meta,
    pub xattrs: Vec<(String, Vec<u8>)>,
    /// Dropped by a fix-up or replaced by a later entry of the same name.
    pub removed: bool,
}

/// The container's filesystem as read from the stream (root first, parents before children).
#[derive(Debug)]
pub struct Tree {
    pub nodes: Vec<Node>,
    index: HashMap<Vec<u8>, u32>,
    /// Lines for the job's log: what was dropped and why.
    pub notes: Vec<String>,
}

pub const ROOT: u32 = 0;

/// Splits a tar path into its names: leading `/` and `./` go, `.` components are skipped, and
/// a path that climbs with `..` or names nothing is refused.
pub fn split_path(raw: &[u8]) -> Option<Vec<&[u8]>> {
    let mut names = Vec::new();
    for part in raw.split(|&b| b == b'/') {
        match part {
            b"" | b"." => continue,
            b".." => return None,
            name => names.push(name),
        }
    }
    (!names.is_empty()).then_some(names)
}

fn lossy(path: &[u8]) -> String {
    String::from_utf8_lossy(path).into_owned()
}

impl Tree {
    pub fn new() -> Tree {
        let root = Node {
            parent: ROOT,
            name: Vec::new(),
            kind: Kind::Dir,
            meta: Meta::root_dir(),
            xattrs: Vec::new(),
            removed: false,
        };
        Tree {
            nodes: vec![root],
            index: HashMap::from([(Vec::new(), ROOT)]),
            notes: Vec::new(),
        }
    }

    /// The live node at `path` ('/'-separated, relative).
    pub fn lookup(&self, path: &str) -> Option<u32> {
        let key = split_path(path.as_bytes())?.join(&b'/');
        self.index
            .get(&key)
            .copied()
            .filter(|&i| !self.nodes[i as usize].removed)
    }

    pub fn node(&self, i: u32) -> &Node {
        &self.nodes[i as usize]
    }

    /// The full path of a node, for messages and for the boot partition.
    pub fn path_of(&self, mut i: u32) -> String {
        let mut names = Vec::new();
        while i != ROOT {
            let n = &self.nodes[i as usize];
            names.push(lossy(&n.name));
            i = n.parent;
        }
        names.reverse();
        names.join("/")
    }

    /// Removes the live node at `path`, if any (a fix-up); a directory takes its subtree.
    pub fn remove(&mut self, path: &str) -> bool {
        let Some(i) = self.lookup(path) else {
            return false;
        };
        self.remove_node(i);
        true
    }

    fn remove_node(&mut self, i: u32) {
        self.nodes[i as usize].removed = true;
        let prefix = {
            let mut p = self.path_of(i).into_bytes();
            p.push(b'/');
            p
        };
        let key: Vec<u8> = prefix[..prefix.len() - 1].to_vec();
        self.index.remove(&key);
        if matches!(self.nodes[i as usize].kind, Kind::Dir) {
            let doomed: Vec<(Vec<u8>, u32)> = self
                .index
                .iter()
                .filter(|(k, _)| k.starts_with(&prefix))
                .map(|(k, &v)| (k.clone(), v))
                .collect();
            for (k, v) in doomed {
                self.index.remove(&k);
                self.nodes[v as usize].removed = true;
            }
        }
    }

    /// Adds (or replaces) the node at `names`, creating missing parent directories.
    pub fn insert(
        &mut self,
        names: &[&[u8]],
        kind: Kind,
        meta: Meta,
        xattrs: Vec<(String, Vec<u8>)>,
    ) -> u32 {
        let mut parent = ROOT;
        let mut key: Vec<u8> = Vec::new();
        for (depth, name) in names.iter().enumerate() {
            if depth > 0 {
                key.push(b'/');
            }
            key.extend_from_slice(name);
            let last = depth + 1 == names.len();
            if let Some(&existing) = self.index.get(&key) {
                let is_dir = matches!(self.nodes[existing as usize].kind, Kind::Dir);
                if !last && is_dir {
                    parent = existing;
                    continue;
                }
                if last && is_dir && matches!(kind, Kind::Dir) {
                    // A directory listed again (or after its children): new metadata only.
                    let node = &mut self.nodes[existing as usize];
                    node.meta = meta;
                    node.xattrs = xattrs;
                    return existing;
                }
                // A later entry of the same name wins, as when tar extracts.
                self.remove_node(existing);
            }
            let (node_kind, node_meta, node_xattrs) = if last {
                (kind.clone(), meta, xattrs.clone())
            } else {
                (Kind::Dir, Meta::root_dir(), Vec::new())
            };
            let i = self.nodes.len() as u32;
            self.nodes.push(Node {
                parent,
                name: name.to_vec(),
                kind: node_kind,
                meta: node_meta,
                xattrs: node_xattrs,
                removed: false,
            });
            self.index.insert(key.clone(), i);
            parent = i;
        }
        parent
    }

    /// Adds a regular file whose content the daemon supplies (a fix-up).
    pub fn insert_inline(&mut self, path: &str, content: &[u8], meta: Meta) -> u32 {
        let names = split_path(path.as_bytes()).expect("fix-up paths are valid");
        let kind = Kind::File {
            size: content.len() as u64,
            segments: None,
            source: Source::Inline(content.to_vec()),
        };
        self.insert(&names, kind, meta, Vec::new())
    }

    /// Live nodes with their index, in tree order (parents first).
    pub fn live(&self) -> impl Iterator<Item = (u32, &Node)> {
        self.nodes
            .iter()
            .enumerate()
            .filter(|(_, n)| !n.removed)
            .map(|(i, n)| (i as u32, n))
    }
}

/// What the first read found, for sizing the root filesystem.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Totals {
    /// Bytes of file content that will be stored (holes excluded).
    pub data_bytes: u64,
    /// Bytes of the tar stream read.
    pub stream_bytes: u64,
    pub boot_files: u64,
    pub boot_bytes: u64,
}

/// Reads a file's content in blocks and finds the runs of all-zero blocks.
fn scan_segments(data: &mut dyn Read, size: u64) -> io::Result<(Option<Vec<Segment>>, u64)> {
    static ZEROS: [u8; BLOCK as usize] = [0; BLOCK as usize];
    let mut buf = vec![0u8; 64 * BLOCK as usize];
    let mut segments: Vec<Segment> = Vec::new();
    let mut stored = 0u64;
    let mut left = size;
    while left > 0 {
        let want = left.min(buf.len() as u64) as usize;
        data.read_exact(&mut buf[..want])?;
        for block in buf[..want].chunks(BLOCK as usize) {
            let len = block.len() as u64;
            // Only whole blocks become holes; a short tail is always stored.
            let hole = len == BLOCK && block == &ZEROS[..];
            match (segments.last_mut(), hole) {
                (Some(Segment::Hole(n)), true) | (Some(Segment::Data(n)), false) => *n += len,
                (_, true) => segments.push(Segment::Hole(len)),
                (_, false) => segments.push(Segment::Data(len)),
            }
            if !hole {
                stored += len;
            }
        }
        left -= want as u64;
    }
    let has_hole = segments.iter().any(|s| matches!(s, Segment::Hole(_)));
    if !has_hole || segments.len() > MAX_SEGMENTS {
        return Ok((None, size));
    }
    Ok((Some(segments), stored))
}

/// Reads pax `SCHILY.xattr.*` records (how Docker carries file capabilities).
fn xattrs_of<R: Read>(entry: &mut tar::Entry<'_, R>) -> io::Result<Vec<(String, Vec<u8>)>> {
    let mut out = Vec::new();
    if let Some(exts) = entry.pax_extensions()? {
        for ext in exts {
            let ext = ext?;
            if let Ok(key) = ext.key() {
                if let Some(name) = key.strip_prefix("SCHILY.xattr.") {
                    out.push((name.to_owned(), ext.value_bytes().to_vec()));
                }
            }
        }
    }
    Ok(out)
}

/// Where the boot partition's files live in the tree, e.g. `boot/firmware`.
pub struct BootDir<'a>(pub &'a str);

impl BootDir<'_> {
    /// The path inside the boot partition when `names` lies under the boot directory.
    fn inside(&self, names: &[&[u8]]) -> Option<String> {
        let dir: Vec<&[u8]> = split_path(self.0.as_bytes())?;
        if names.len() <= dir.len() || names[..dir.len()] != dir[..] {
            return None;
        }
        Some(
            names[dir.len()..]
                .iter()
                .map(|n| lossy(n))
                .collect::<Vec<_>>()
                .join("/"),
        )
    }
}

/// The first read: builds the tree, fills the boot partition, and reports progress as bytes
/// of stream consumed.
pub fn scan(
    stream: impl Read,
    boot_dir: &BootDir<'_>,
    boot: &mut dyn BootFiles,
    cancelled: &dyn Fn() -> bool,
    progress: &mut dyn FnMut(u64),
) -> Result<(Tree, Totals), ImageError> {
    let mut counted = CountingReader {
        inner: stream,
        count: 0,
    };
    let mut archive = tar::Archive::new(&mut counted);
    let mut tree = Tree::new();
    let mut totals = Totals::default();
    // Boot files already written, by tree path, for hard links inside the boot directory.
    let mut boot_written: HashMap<Vec<u8>, String> = HashMap::new();
    let entries = archive.entries().map_err(ImageError::stream)?;
    for (ordinal, entry) in entries.enumerate() {
        if cancelled() {
            return Err(ImageError::Cancelled);
        }
        let mut entry = entry.map_err(ImageError::stream)?;
        let raw = entry.path_bytes().into_owned();
        let Some(names) = split_path(&raw) else {
            if raw.split(|&b| b == b'/').any(|p| p == b"..") {
                tree.notes.push(format!(
                    "dropped {:?}: it climbs out of the tree",
                    lossy(&raw)
                ));
            }
            continue;
        };
        let header = entry.header().clone();
        let meta = Meta {
            mode: (header.mode().map_err(ImageError::stream)? & 0o7777) as u16,
            uid: header.uid().map_err(ImageError::stream)? as u32,
            gid: header.gid().map_err(ImageError::stream)? as u32,
            mtime: header.mtime().map_err(ImageError::stream)? as i64,
        };
        let xattrs = xattrs_of(&mut entry).map_err(ImageError::stream)?;
        let boot_path = boot_dir.inside(&names);
        let kind = header.entry_type();
        let key = names.join(&b'/');
        use tar::EntryType as T;
        let node_kind = match kind {
            T::Directory => {
                if let Some(p) = &boot_path {
                    boot.dir(p, meta.mtime)?;
                    continue;
                }
                Kind::Dir
            }
            T::Regular | T::Continuous | T::GNUSparse => {
                let size = entry.size();
                if let Some(p) = &boot_path {
                    boot.file(p, &mut entry, size, meta.mtime)?;
                    boot_written.insert(key, p.clone());
                    totals.boot_files += 1;
                    totals.boot_bytes += size;
                    continue;
                }
                let (segments, stored) =
                    scan_segments(&mut entry, size).map_err(ImageError::stream)?;
                totals.data_bytes += stored;
                Kind::File {
                    size,
                    segments,
                    source: Source::Tar(ordinal as u64),
                }
            }
            T::Symlink => {
                let target = entry
                    .link_name_bytes()
                    .map(|t| t.into_owned())
                    .unwrap_or_default();
                if boot_path.is_some() {
                    tree.notes.push(format!(
                        "skipped the symlink {:?} in the boot partition: FAT has no links",
                        lossy(&raw)
                    ));
                    continue;
                }
                if target.is_empty() {
                    tree.notes
                        .push(format!("dropped {:?}: a symlink to nothing", lossy(&raw)));
                    continue;
                }
                Kind::Symlink(target)
            }
            T::Link => {
                let target = entry
                    .link_name_bytes()
                    .map(|t| t.into_owned())
                    .unwrap_or_default();
                let target_key = split_path(&target).map(|n| n.join(&b'/'));
                if let Some(p) = &boot_path {
                    match target_key.as_ref().and_then(|k| boot_written.get(k)) {
                        Some(src) => boot.link(src, p)?,
                        None => tree.notes.push(format!(
                            "dropped the hard link {:?} to {:?}: no such file in the boot partition",
                            lossy(&raw),
                            lossy(&target)
                        )),
                    }
                    continue;
                }
                let found = target_key.and_then(|k| tree.index.get(&k).copied());
                match found {
                    Some(t) if !matches!(tree.nodes[t as usize].kind, Kind::Dir) => {
                        // Always point at the node holding the data.
                        let t = match tree.nodes[t as usize].kind {
                            Kind::HardLink(first) => first,
                            _ => t,
                        };
                        Kind::HardLink(t)
                    }
                    _ => {
                        tree.notes.push(format!(
                            "dropped the hard link {:?} to {:?}: no such file earlier in the tree",
                            lossy(&raw),
                            lossy(&target)
                        ));
                        continue;
                    }
                }
            }
            T::Char | T::Block => {
                if boot_path.is_some() {
                    tree.notes.push(format!(
                        "skipped the device node {:?} in the boot partition",
                        lossy(&raw)
                    ));
                    continue;
                }
                let major = header.device_major().ok().flatten().unwrap_or(0);
                let minor = header.device_minor().ok().flatten().unwrap_or(0);
                if kind == T::Char {
                    Kind::Char(major, minor)
                } else {
                    Kind::Block(major, minor)
                }
            }
            T::Fifo => {
                if boot_path.is_some() {
                    continue;
                }
                Kind::Fifo
            }
            // pax and GNU long-name records are consumed by the tar reader itself.
            _ => {
                tree.notes.push(format!(
                    "skipped {:?}: unsupported tar entry type {:?}",
                    lossy(&raw),
                    kind
                ));
                continue;
            }
        };
        tree.insert(&names, node_kind, meta, xattrs);
        progress(archive_position(&entry));
    }
    totals.stream_bytes = counted.count;
    progress(counted.count);
    Ok((tree, totals))
}

fn archive_position<R: Read>(entry: &tar::Entry<'_, R>) -> u64 {
    entry.raw_file_position() + entry.size()
}

/// Counts the bytes read, for progress and totals.
pub struct CountingReader<R> {
    pub inner: R,
    pub count: u64,
}

impl<R: Read> Read for CountingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.count += n as u64;
        Ok(n)
    }
}

#[cfg(test)]
#[path = "tree_tests.rs"]
mod tests;
