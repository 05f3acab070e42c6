//! Reading the image: positional for plain files, forward-only for streams.

use std::fs::File;
use std::io::{self, Cursor, Read};
use std::os::unix::fs::FileExt;
use std::sync::Arc;

use rustix::fs::SeekFrom;
use rustix::io::Errno;

use crate::flash::engine::bmap::Bmap;
use crate::flash::engine::buf::{round_down, round_up, ALIGN};

/// A failure of the source, kept cloneable so every target can be told.
#[derive(Debug)]
pub(crate) enum SourceError {
    Bad(String),
    Io(String, io::Error),
}

impl Clone for SourceError {
    fn clone(&self) -> Self {
        match self {
            SourceError::Bad(s) => SourceError::Bad(s.clone()),
            SourceError::Io(s, e) => SourceError::Io(s.clone(), clone_io(e)),
        }
    }
}

fn clone_io(e: &io::Error) -> io::Error {
    match e.raw_os_error() {
        Some(code) => io::Error::from_raw_os_error(code),
        None => io::Error::new(e.kind(), e.to_string()),
    }
}

pub(crate) enum Source {
    File {
        file: Arc<File>,
        len: u64,
    },
    Stream {
        r: Box<dyn Read + Send>,
        pos: u64,
        scratch: Vec<u8>,
    },
}

impl Source {
    pub(crate) fn stream(r: Box<dyn Read + Send>) -> Source {
        Source::Stream {
            r,
            pos: 0,
            scratch: Vec::new(),
        }
    }

    /// Fills `buf` with the image bytes at `pos`; a short count means the
    /// image ended. Streams only go forward: skipped bytes are read and
    /// dropped, which is also what lets the decoder check its trailer.
    pub(crate) fn read_at(&mut self, pos: u64, buf: &mut [u8]) -> Result<usize, SourceError> {
        match self {
            Source::File { file, len } => {
                let want = (buf.len() as u64).min(len.saturating_sub(pos)) as usize;
                let mut n = 0;
                while n < want {
                    match file.read_at(&mut buf[n..want], pos + n as u64) {
                        Ok(0) => break,
                        Ok(k) => n += k,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(e) => return Err(SourceError::Io("reading the image".into(), e)),
                    }
                }
                Ok(n)
            }
            Source::Stream {
                r,
                pos: at,
                scratch,
            } => {
                assert!(pos >= *at, "stream source asked to go backwards");
                if pos > *at {
                    let gap = pos - *at;
                    let skipped = skip(r, scratch, gap)?;
                    *at += skipped;
                    if skipped < gap {
                        return Ok(0);
                    }
                }
                let n = read_full(r, buf)?;
                *at += n as u64;
                Ok(n)
            }
        }
    }

    /// Reads a stream to its end and returns its total length, so a stream
    /// longer than the bmap says is caught and the decoder verifies its
    /// final checksum.
    pub(crate) fn finish(&mut self) -> Result<u64, SourceError> {
        match self {
            Source::File { len, .. } => Ok(*len),
            Source::Stream { r, pos, scratch } => {
                *pos += skip(r, scratch, u64::MAX)?;
                Ok(*pos)
            }
        }
    }
}

fn stream_error(e: io::Error) -> SourceError {
    // Whatever sits under a decoder (file, pipe, network) a failure here means
    // the compressed image cannot be trusted, which the user fixes the same
    // way: get the image again.
    SourceError::Bad(format!("cannot decompress the image: {e}"))
}

fn read_full(r: &mut Box<dyn Read + Send>, buf: &mut [u8]) -> Result<usize, SourceError> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(stream_error(e)),
        }
    }
    Ok(n)
}

fn skip(
    r: &mut Box<dyn Read + Send>,
    scratch: &mut Vec<u8>,
    mut n: u64,
) -> Result<u64, SourceError> {
    if scratch.is_empty() {
        scratch.resize(256 << 10, 0);
    }
    let mut done = 0;
    while n > 0 {
        let want = (scratch.len() as u64).min(n) as usize;
        let k = read_full(r, &mut scratch[..want])?;
        done += k as u64;
        n -= k as u64;
        if k < want {
            break;
        }
    }
    Ok(done)
}

/// The byte ranges to copy, each 4096-aligned at both ends (the end may pass
/// the image end; the reader stops there and zero-pads).
pub(crate) enum Extents {
    List(Vec<(u64, u64)>),
    /// Everything, until the stream ends.
    ToEof,
}

/// Widening to 4096 is harmless (the extra bytes are image bytes too) and
/// lets every write be an O_DIRECT-aligned one.
fn align_merge(raw: impl Iterator<Item = (u64, u64)>) -> Vec<(u64, u64)> {
    let mut out: Vec<(u64, u64)> = Vec::new();
    for (s, e) in raw {
        if s >= e {
            continue;
        }
        let (s, e) = (round_down(s, ALIGN as u64), round_up(e, ALIGN as u64));
        match out.last_mut() {
            Some(last) if s <= last.1 => last.1 = last.1.max(e),
            _ => out.push((s, e)),
        }
    }
    out
}

pub(crate) fn bmap_extents(bmap: &Bmap) -> Vec<(u64, u64)> {
    align_merge(bmap.ranges.iter().map(|&(first, last, _)| {
        (
            first * bmap.block_size,
            ((last + 1) * bmap.block_size).min(bmap.image_size),
        )
    }))
}

/// Data extents of a possibly sparse file. A filesystem that cannot tell
/// holes (EINVAL/ENOTSUP) gets the whole file.
pub(crate) fn file_extents(file: &File, len: u64) -> Vec<(u64, u64)> {
    let mut raw = Vec::new();
    let mut pos = 0;
    while pos < len {
        let data = match rustix::fs::seek(file, SeekFrom::Data(pos)) {
            Ok(d) => d,
            Err(Errno::NXIO) => break,
            Err(_) => return align_merge(std::iter::once((0, len))),
        };
        let hole = match rustix::fs::seek(file, SeekFrom::Hole(data)) {
            Ok(h) => h.min(len),
            Err(_) => len,
        };
        if hole <= data {
            break;
        }
        raw.push((data, hole));
        pos = hole;
    }
    align_merge(raw.into_iter())
}

/// The decompressed size a zstd stream declares in its first frame header.
///
/// It is exact for the usual single-frame image and a lower bound for a
/// multi-frame one, which is all a "card too small" check needs. The peeked
/// bytes are put back in front of the stream.
pub(crate) fn zstd_size_hint(mut r: Box<dyn Read + Send>) -> (Box<dyn Read + Send>, Option<u64>) {
    let mut head = vec![0u8; 18];
    let n = read_full(&mut r, &mut head).unwrap_or(0);
    head.truncate(n);
    let hint = parse_zstd_frame_size(&head);
    (Box::new(Cursor::new(head).chain(r)), hint)
}

fn parse_zstd_frame_size(h: &[u8]) -> Option<u64> {
    if h.len() < 5 || h[..4] != [0x28, 0xb5, 0x2f, 0xfd] {
        return None;
    }
    let fhd = h[4];
    let single_segment = fhd & 0x20 != 0;
    let mut at = 5 + usize::from(!single_segment);
    at += [0, 1, 2, 4][usize::from(fhd & 3)];
    let size_len = match fhd >> 6 {
        0 if single_segment => 1,
        0 => return None,
        1 => 2,
        2 => 4,
        _ => 8,
    };
    let bytes = h.get(at..at + size_len)?;
    let mut v = 0u64;
    for (i, b) in bytes.iter().enumerate() {
        v |= u64::from(*b) << (8 * i);
    }
    // The 2-byte form is stored minus 256 to widen its range.
    Some(if size_len == 2 { v + 256 } else { v })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merges_and_aligns() {
        let m = align_merge([(0, 10), (4000, 5000), (9000, 9001), (20480, 20481)].into_iter());
        assert_eq!(m, vec![(0, 12288), (20480, 24576)]);
    }

    #[test]
    fn sparse_file_extents() {
        let f = tempfile::tempfile().unwrap();
        f.set_len(10 << 20).unwrap();
        f.write_all_at(b"x", 5000).unwrap();
        f.write_all_at(&[1; 10000], 3 << 20).unwrap();
        let ex = file_extents(&f, 10 << 20);
        // Filesystems may allocate a little more than written, never less.
        assert!(ex.iter().any(|&(s, e)| s <= 5000 && e > 5000), "{ex:?}");
        assert!(ex
            .iter()
            .any(|&(s, e)| s <= 3 << 20 && e >= (3 << 20) + 10000));
        assert!(
            ex.iter().map(|(s, e)| e - s).sum::<u64>() < 1 << 20,
            "{ex:?}"
        );
    }

    #[test]
    fn zstd_hint_matches_and_stream_is_intact() {
        let data = vec![7u8; 300_000];
        // The one-shot API records the size, as the zstd CLI does for files.
        let packed = zstd::bulk::compress(&data, 3).unwrap();
        let (mut r, hint) = zstd_size_hint(Box::new(Cursor::new(packed)));
        assert_eq!(hint, Some(300_000));
        let mut out = Vec::new();
        zstd::stream::read::Decoder::new(&mut r)
            .unwrap()
            .read_to_end(&mut out)
            .unwrap();
        assert_eq!(out, data);
        let (_, none) = zstd_size_hint(Box::new(Cursor::new(b"not zstd".to_vec())));
        assert_eq!(none, None);
    }

    #[test]
    fn stream_skips_forward() {
        let data: Vec<u8> = (0..100u8).collect();
        let mut s = Source::stream(Box::new(Cursor::new(data)));
        let mut b = [0u8; 10];
        assert_eq!(s.read_at(20, &mut b).unwrap(), 10);
        assert_eq!(b[0], 20);
        assert_eq!(s.read_at(95, &mut b).unwrap(), 5);
        assert_eq!(s.finish().unwrap(), 100);
    }
}
