//! bmaptool's block map format, versions 1.0 to 2.0.

use sha1::Sha1;
use sha2::{Digest, Sha256};

use crate::flash::engine::error::BmapError;

/// Which blocks of an image carry data, and optionally their checksums.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bmap {
    pub image_size: u64,
    pub block_size: u64,
    /// (first block, last block inclusive, hex digest of the range's bytes).
    ///
    /// The digest is sha256 (64 hex digits) for format 1.4/2.0 bmaps; format
    /// 1.3 only had sha1, kept as its 40 hex digits and checked as sha1, so
    /// the length of the string says which one it is. Sorted, disjoint.
    pub ranges: Vec<(u64, u64, Option<String>)>,
}

impl Bmap {
    /// Bytes covered by the mapped ranges (the last block may be partial).
    pub fn mapped_bytes(&self) -> u64 {
        self.ranges
            .iter()
            .map(|&(first, last, _)| {
                let start = first * self.block_size;
                let end = ((last + 1) * self.block_size).min(self.image_size);
                end - start
            })
            .sum()
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Algo {
    Sha1,
    Sha256,
}

impl Algo {
    fn hex_len(self) -> usize {
        match self {
            Algo::Sha1 => 40,
            Algo::Sha256 => 64,
        }
    }

    fn hex(self, data: &[u8]) -> String {
        match self {
            Algo::Sha1 => to_hex(&Sha1::digest(data)),
            Algo::Sha256 => to_hex(&Sha256::digest(data)),
        }
    }
}

pub(crate) fn to_hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// Parses a bmap and, when it carries one, checks its own checksum.
pub fn parse_bmap(xml: &str) -> Result<Bmap, BmapError> {
    let doc = roxmltree::Document::parse(xml).map_err(|e| BmapError::Xml(e.to_string()))?;
    let root = doc.root_element();
    if root.tag_name().name() != "bmap" {
        return Err(BmapError::Xml(format!(
            "root element is <{}>, not <bmap>",
            root.tag_name().name()
        )));
    }
    let version = root
        .attribute("version")
        .ok_or(BmapError::Missing("bmap version"))?
        .trim()
        .to_owned();
    let (major, minor) = parse_version(&version)?;
    if major == 0 || major > 2 {
        return Err(BmapError::UnsupportedVersion(version));
    }

    let child_text = |name: &'static str| -> Option<String> {
        root.children()
            .find(|n| n.is_element() && n.tag_name().name() == name)
            .map(|n| n.text().unwrap_or("").trim().to_owned())
    };
    let number = |name: &'static str| -> Result<u64, BmapError> {
        let text = child_text(name).ok_or(BmapError::Missing(name))?;
        text.parse().map_err(|_| BmapError::BadValue {
            field: name,
            value: text,
        })
    };

    let image_size = number("ImageSize")?;
    let block_size = number("BlockSize")?;
    let blocks_count = number("BlocksCount")?;
    if block_size == 0 {
        return Err(BmapError::BadValue {
            field: "BlockSize",
            value: "0".into(),
        });
    }
    if blocks_count != image_size.div_ceil(block_size) {
        return Err(BmapError::Inconsistent(format!(
            "{blocks_count} blocks of {block_size} bytes cannot hold {image_size} bytes"
        )));
    }

    // 1.4 is an accidental early name of 2.0 (bmaptool says so); 1.3 had
    // sha1 only; earlier versions had no checksums at all.
    let (algo, range_attr, file_tag) = if major == 2 || (major == 1 && minor >= 4) {
        let kind = child_text("ChecksumType").ok_or(BmapError::Missing("ChecksumType"))?;
        let algo = match kind.to_ascii_lowercase().as_str() {
            "sha256" => Algo::Sha256,
            "sha1" => Algo::Sha1,
            _ => return Err(BmapError::UnsupportedChecksum(kind)),
        };
        (Some(algo), "chksum", "BmapFileChecksum")
    } else if major == 1 && minor == 3 {
        (Some(Algo::Sha1), "sha1", "BmapFileSHA1")
    } else {
        (None, "", "")
    };

    if let Some(algo) = algo {
        if let Some(expected) = child_text(file_tag) {
            verify_file_checksum(xml, &expected, algo)?;
        }
    }

    let map = root
        .children()
        .find(|n| n.is_element() && n.tag_name().name() == "BlockMap")
        .ok_or(BmapError::Missing("BlockMap"))?;
    let mut ranges: Vec<(u64, u64, Option<String>)> = Vec::new();
    for node in map
        .children()
        .filter(|n| n.is_element() && n.tag_name().name() == "Range")
    {
        let text = node.text().unwrap_or("").trim();
        let bad = || BmapError::BadValue {
            field: "Range",
            value: text.to_owned(),
        };
        let (first, last) = match text.split_once('-') {
            Some((a, b)) => (
                a.trim().parse::<u64>().map_err(|_| bad())?,
                b.trim().parse::<u64>().map_err(|_| bad())?,
            ),
            None => {
                let x = text.parse::<u64>().map_err(|_| bad())?;
                (x, x)
            }
        };
        if first > last || last >= blocks_count {
            return Err(bad());
        }
        if let Some(&(_, prev_last, _)) = ranges.last() {
            // The copier streams ranges in order; overlap or disorder would
            // mean a seek backwards in a compressed stream.
            if first <= prev_last {
                return Err(BmapError::Inconsistent(format!(
                    "range {text} is not after block {prev_last}"
                )));
            }
        }
        let digest = match algo {
            Some(algo) => match node.attribute(range_attr) {
                Some(d) => {
                    let d = d.trim().to_ascii_lowercase();
                    if d.len() != algo.hex_len() || !d.bytes().all(|b| b.is_ascii_hexdigit()) {
                        return Err(BmapError::BadValue {
                            field: "Range checksum",
                            value: d,
                        });
                    }
                    Some(d)
                }
                None => None,
            },
            None => None,
        };
        ranges.push((first, last, digest));
    }

    Ok(Bmap {
        image_size,
        block_size,
        ranges,
    })
}

fn parse_version(v: &str) -> Result<(u32, u32), BmapError> {
    let bad = || BmapError::UnsupportedVersion(v.to_owned());
    let (a, b) = v.split_once('.').ok_or_else(bad)?;
    Ok((a.parse().map_err(|_| bad())?, b.parse().map_err(|_| bad())?))
}

/// bmaptool hashes the file with its own checksum replaced by as many '0's,
/// at the first place the value occurs.
fn verify_file_checksum(xml: &str, expected: &str, algo: Algo) -> Result<(), BmapError> {
    let expected_lc = expected.to_ascii_lowercase();
    if expected.len() != algo.hex_len() {
        return Err(BmapError::BadValue {
            field: "BmapFileChecksum",
            value: expected.to_owned(),
        });
    }
    let pos = xml
        .find(expected)
        .ok_or(BmapError::Missing("BmapFileChecksum"))?;
    let mut bytes = xml.as_bytes().to_vec();
    bytes[pos..pos + expected.len()].fill(b'0');
    let actual = algo.hex(&bytes);
    if actual != expected_lc {
        return Err(BmapError::ChecksumMismatch {
            expected: expected.to_owned(),
            actual,
        });
    }
    Ok(())
}

/// Checksum state of one bmap range while its bytes stream past.
pub(crate) enum RangeHasher {
    Sha1(Sha1),
    Sha256(Sha256),
}

impl RangeHasher {
    pub(crate) fn for_digest(hex: &str) -> RangeHasher {
        if hex.len() == 40 {
            RangeHasher::Sha1(Sha1::new())
        } else {
            RangeHasher::Sha256(Sha256::new())
        }
    }

    pub(crate) fn update(&mut self, data: &[u8]) {
        match self {
            RangeHasher::Sha1(h) => h.update(data),
            RangeHasher::Sha256(h) => h.update(data),
        }
    }

    pub(crate) fn finish_hex(self) -> String {
        match self {
            RangeHasher::Sha1(h) => to_hex(&h.finalize()),
            RangeHasher::Sha256(h) => to_hex(&h.finalize()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ZERO64: &str = "0000000000000000000000000000000000000000000000000000000000000000";

    fn v2(ranges: &str) -> String {
        let body = format!(
            "<?xml version=\"1.0\" ?>\n<bmap version=\"2.0\">\n    <ImageSize> 10000 </ImageSize>\n    <BlockSize> 4096 </BlockSize>\n    <BlocksCount> 3 </BlocksCount>\n    <MappedBlocksCount> 2 </MappedBlocksCount>\n    <ChecksumType> sha256 </ChecksumType>\n    <BmapFileChecksum> {ZERO64} </BmapFileChecksum>\n    <BlockMap>\n{ranges}    </BlockMap>\n</bmap>\n"
        );
        let sum = to_hex(&Sha256::digest(body.as_bytes()));
        body.replace(ZERO64, &sum)
    }

    #[test]
    fn parses_v2_with_checksum() {
        let digest = "ab".repeat(32);
        let xml = v2(&format!(
            "        <Range chksum=\"{digest}\"> 0-1 </Range>\n        <Range> 2 </Range>\n"
        ));
        let b = parse_bmap(&xml).unwrap();
        assert_eq!(b.image_size, 10000);
        assert_eq!(b.block_size, 4096);
        assert_eq!(b.ranges, vec![(0, 1, Some(digest)), (2, 2, None)]);
        assert_eq!(b.mapped_bytes(), 10000);
    }

    #[test]
    fn rejects_tampered_file() {
        let xml = v2("        <Range> 0-1 </Range>\n");
        let tampered = xml.replace("0-1", "0-2");
        assert!(matches!(
            parse_bmap(&tampered),
            Err(BmapError::ChecksumMismatch { .. })
        ));
    }

    #[test]
    fn rejects_bad_ranges() {
        let out_of_image = v2("        <Range> 0-3 </Range>\n");
        assert!(matches!(
            parse_bmap(&out_of_image),
            Err(BmapError::BadValue { .. })
        ));
        let overlap = v2("        <Range> 0-1 </Range>\n        <Range> 1-2 </Range>\n");
        assert!(matches!(
            parse_bmap(&overlap),
            Err(BmapError::Inconsistent(_))
        ));
    }

    #[test]
    fn range_hasher_follows_digest_length() {
        let mut h = RangeHasher::for_digest(&"0".repeat(40));
        h.update(b"abc");
        assert_eq!(h.finish_hex(), "a9993e364706816aba3e25717850c26c9cd0d89d");
        let mut h = RangeHasher::for_digest(&"0".repeat(64));
        h.update(b"abc");
        assert_eq!(
            h.finish_hex(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn parses_old_versions() {
        let v1 = "<bmap version=\"1.2\"><ImageSize>8192</ImageSize><BlockSize>4096</BlockSize>\
                  <BlocksCount>2</BlocksCount><BlockMap><Range>1</Range></BlockMap></bmap>";
        assert_eq!(parse_bmap(v1).unwrap().ranges, vec![(1, 1, None)]);

        let sha1 = "cd".repeat(20);
        let body = format!(
            "<bmap version=\"1.3\"><ImageSize>8192</ImageSize><BlockSize>4096</BlockSize>\
             <BlocksCount>2</BlocksCount><BmapFileSHA1>{}</BmapFileSHA1>\
             <BlockMap><Range sha1=\"{sha1}\">0-1</Range></BlockMap></bmap>",
            "0".repeat(40)
        );
        let sum = to_hex(&Sha1::digest(body.as_bytes()));
        let xml = body.replacen(&"0".repeat(40), &sum, 1);
        assert_eq!(parse_bmap(&xml).unwrap().ranges, vec![(0, 1, Some(sha1))]);

        let v3 = v1.replace("1.2", "3.0");
        assert!(matches!(
            parse_bmap(&v3),
            Err(BmapError::UnsupportedVersion(_))
        ));
    }
}
