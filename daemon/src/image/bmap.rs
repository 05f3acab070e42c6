//! Block maps of sparse images: finding the written areas and describing them
//! in the bmaptool XML format (version 2.0), so that `bmaptool copy` can flash
//! only the blocks that matter and verify each of them.

use std::fs::File;
use std::io;

use rustix::fs::SeekFrom;
use rustix::io::Errno;
use sha2::{Digest, Sha256};

/// The block size the bmap describes. 4096 matches both bmaptool's default
/// and the allocation unit of the filesystems images are built on, so
/// rounding to it rarely drags hole bytes into a range.
pub const BLOCK_SIZE: u64 = 4096;

/// Length of a hex sha256: also the width of the placeholder the bmap file
/// checksum is computed over.
const SHA256_HEX_LEN: usize = 64;

/// The data areas of `file` within its first `len` bytes, as inclusive ranges
/// of `block`-sized blocks, sorted and with touching ranges merged.
///
/// Data areas come from `lseek(SEEK_DATA/SEEK_HOLE)` and are rounded outward,
/// so a block that holds even one written byte is mapped. Where the
/// filesystem cannot report holes (`EINVAL`, or `EOPNOTSUPP` from some
/// network filesystems), everything from that point on counts as mapped:
/// copying too much is safe, skipping data is not.
///
/// The file offset is restored afterwards, since `lseek` is the only way to
/// ask and callers may share the descriptor.
pub fn mapped_ranges(file: &File, len: u64, block: u64) -> io::Result<Vec<(u64, u64)>> {
    if block == 0 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "block size must not be zero",
        ));
    }
    if len == 0 {
        return Ok(Vec::new());
    }
    let saved = rustix::fs::seek(file, SeekFrom::Current(0))?;
    let scanned = scan(file, len, block);
    rustix::fs::seek(file, SeekFrom::Start(saved))?;
    scanned
}

fn scan(file: &File, len: u64, block: u64) -> io::Result<Vec<(u64, u64)>> {
    let last_block = (len - 1) / block;
    let mut ranges = Vec::new();
    let mut pos = 0;
    while pos < len {
        let data = match rustix::fs::seek(file, SeekFrom::Data(pos)) {
            Ok(data) => data,
            // ENXIO: no data at or after `pos` (also when `pos` is at or past
            // the end of the file, which a `len` beyond the file size leads to).
            Err(Errno::NXIO) => break,
            Err(Errno::INVAL) | Err(Errno::OPNOTSUPP) => {
                push_merged(&mut ranges, pos / block, last_block);
                break;
            }
            Err(err) => return Err(err.into()),
        };
        if data >= len {
            break;
        }
        let hole = rustix::fs::seek(file, SeekFrom::Hole(data))?;
        if hole <= data {
            // A filesystem answering this way would loop forever here.
            return Err(io::Error::other(format!(
                "SEEK_HOLE from data offset {data} returned {hole}"
            )));
        }
        let end = hole.min(len);
        push_merged(&mut ranges, data / block, (end - 1) / block);
        pos = hole;
    }
    Ok(ranges)
}

fn push_merged(ranges: &mut Vec<(u64, u64)>, first: u64, last: u64) {
    if let Some(prev) = ranges.last_mut() {
        if first <= prev.1.saturating_add(1) {
            prev.1 = prev.1.max(last);
            return;
        }
    }
    ranges.push((first, last));
}

/// One `<Range>` of a bmap: inclusive block numbers and the sha256 of the
/// image bytes they cover. For the last block of an image whose size is not
/// a multiple of the block size, that is only the bytes up to the end of the
/// image: bmaptool reads (and hashes) the image file, which ends there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BmapRange {
    pub first: u64,
    pub last: u64,
    pub sha256: String,
}

/// The bmap text (format 2.0, sha256 checksums) for an image of `image_size`
/// bytes whose mapped blocks are `ranges`.
///
/// `BmapFileChecksum` is the sha256 of the whole text as it reads with that
/// field's value replaced by 64 ASCII `0`s: bmaptool verifies it by putting
/// the zeros back where it found the checksum and hashing the file, so the
/// text around it must be byte-for-byte what was hashed.
pub fn bmap_xml(image_size: u64, block_size: u64, ranges: &[BmapRange]) -> String {
    let blocks_count = image_size.div_ceil(block_size);
    let mapped_count: u64 = ranges.iter().map(|r| r.last - r.first + 1).sum();
    let mapped_bytes = (mapped_count * block_size).min(image_size);
    let percent = if blocks_count == 0 {
        0.0
    } else {
        mapped_count as f64 * 100.0 / blocks_count as f64
    };

    let mut xml = String::with_capacity(1024 + ranges.len() * 112);
    xml.push_str("<?xml version=\"1.0\" ?>\n");
    xml.push_str("<!-- Block map of a disk image: only the blocks listed in BlockMap\n");
    xml.push_str("     hold data, all others read as zeros. See bmaptool(1). -->\n");
    xml.push_str("<bmap version=\"2.0\">\n");
    xml.push_str(&format!(
        "    <!-- Image size in bytes: {} -->\n",
        human_size(image_size)
    ));
    xml.push_str(&format!("    <ImageSize> {image_size} </ImageSize>\n\n"));
    xml.push_str(&format!("    <BlockSize> {block_size} </BlockSize>\n\n"));
    xml.push_str(&format!(
        "    <BlocksCount> {blocks_count} </BlocksCount>\n\n"
    ));
    xml.push_str(&format!(
        "    <!-- Count of mapped blocks: {} or {percent:.1}% -->\n",
        human_size(mapped_bytes)
    ));
    xml.push_str(&format!(
        "    <MappedBlocksCount> {mapped_count} </MappedBlocksCount>\n\n"
    ));
    xml.push_str("    <ChecksumType> sha256 </ChecksumType>\n\n");
    xml.push_str("    <!-- Computed with this value set to all ASCII \"0\" -->\n");
    xml.push_str("    <BmapFileChecksum> ");
    let checksum_at = xml.len();
    xml.push_str(&"0".repeat(SHA256_HEX_LEN));
    xml.push_str(" </BmapFileChecksum>\n\n");
    xml.push_str("    <BlockMap>\n");
    for r in ranges {
        if r.first == r.last {
            xml.push_str(&format!(
                "        <Range chksum=\"{}\"> {} </Range>\n",
                r.sha256, r.first
            ));
        } else {
            xml.push_str(&format!(
                "        <Range chksum=\"{}\"> {}-{} </Range>\n",
                r.sha256, r.first, r.last
            ));
        }
    }
    xml.push_str("    </BlockMap>\n");
    xml.push_str("</bmap>\n");

    let checksum = hex(&Sha256::digest(xml.as_bytes()));
    xml.replace_range(checksum_at..checksum_at + SHA256_HEX_LEN, &checksum);
    xml
}

/// Lower-case hex, the spelling bmaptool and sha256sum use.
pub(crate) fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[usize::from(b >> 4)] as char);
        s.push(DIGITS[usize::from(b & 0xf)] as char);
    }
    s
}

fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["bytes", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} bytes")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::os::unix::fs::FileExt;

    fn scratch_file(name: &str) -> (std::path::PathBuf, File) {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/unit-tmp");
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(format!("{name}-{}", std::process::id()));
        let file = File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .unwrap();
        (path, file)
    }

    #[test]
    fn ranges_round_outward_and_merge() {
        let (path, file) = scratch_file("ranges");
        let len = 1 << 20;
        file.set_len(len).unwrap();
        file.write_all_at(b"x", 10).unwrap();
        // Two writes in adjacent blocks must come back as one range.
        file.write_all_at(&[1; 100], 8 * 4096 + 4000).unwrap();
        file.write_all_at(&[2; 100], 9 * 4096 + 5).unwrap();
        file.write_all_at(b"tail", len - 4).unwrap();
        file.sync_all().unwrap();
        let ranges = mapped_ranges(&file, len, BLOCK_SIZE).unwrap();
        std::fs::remove_file(path).unwrap();
        // ext4 and tmpfs report data at page/block granularity; both give this.
        assert_eq!(ranges, vec![(0, 0), (8, 9), (255, 255)]);
    }

    #[test]
    fn ranges_are_clipped_to_len() {
        let (path, mut file) = scratch_file("clip");
        file.write_all(&[7; 3 * 4096]).unwrap();
        let ranges = mapped_ranges(&file, 4097, BLOCK_SIZE).unwrap();
        let empty = mapped_ranges(&file, 0, BLOCK_SIZE).unwrap();
        std::fs::remove_file(path).unwrap();
        assert_eq!(ranges, vec![(0, 1)]);
        assert!(empty.is_empty());
    }

    #[test]
    fn fully_sparse_file_has_no_ranges() {
        let (path, file) = scratch_file("empty");
        file.set_len(1 << 20).unwrap();
        let ranges = mapped_ranges(&file, 1 << 20, BLOCK_SIZE).unwrap();
        std::fs::remove_file(path).unwrap();
        assert!(ranges.is_empty());
    }

    #[test]
    fn unsupported_seek_data_maps_everything() {
        // procfs' seq_file lseek only knows SEEK_SET and SEEK_CUR and answers
        // EINVAL to the rest, like a filesystem without hole reporting.
        let file = File::open("/proc/self/status").unwrap();
        let ranges = mapped_ranges(&file, 10_000, BLOCK_SIZE).unwrap();
        assert_eq!(ranges, vec![(0, 2)]);
    }

    #[test]
    fn bmap_checksum_is_over_zeroed_field() {
        let ranges = vec![
            BmapRange {
                first: 0,
                last: 3,
                sha256: "a".repeat(64),
            },
            BmapRange {
                first: 7,
                last: 7,
                sha256: "b".repeat(64),
            },
        ];
        let xml = bmap_xml(10 * 4096 + 1, 4096, &ranges);
        assert!(xml.contains("<BlocksCount> 11 </BlocksCount>"));
        assert!(xml.contains("<MappedBlocksCount> 5 </MappedBlocksCount>"));
        assert!(xml.contains(&format!(
            "<Range chksum=\"{}\"> 0-3 </Range>",
            "a".repeat(64)
        )));
        assert!(xml.contains(&format!("<Range chksum=\"{}\"> 7 </Range>", "b".repeat(64))));

        let open = "<BmapFileChecksum> ";
        let at = xml.find(open).unwrap() + open.len();
        let stored = xml[at..at + 64].to_string();
        let mut zeroed = xml.clone();
        zeroed.replace_range(at..at + 64, &"0".repeat(64));
        assert_eq!(stored, hex(&Sha256::digest(zeroed.as_bytes())));
    }

    #[test]
    fn human_sizes() {
        assert_eq!(human_size(12), "12 bytes");
        assert_eq!(human_size(64 << 20), "64.0 MiB");
        assert_eq!(human_size(1536), "1.5 KiB");
    }
}
