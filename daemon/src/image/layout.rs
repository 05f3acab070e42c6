//! Where the partitions go: MBR, then FAT boot, ext4 root and an optional ext4 data
//! partition, each starting on a 4 MiB boundary (what SD cards' erase blocks like and what
//! Raspberry Pi OS images use).

use super::mbr::{PartKind, Partition};
use super::request::ImageRequest;
use super::ImageError;

pub const ALIGN: u64 = 4 << 20;
/// What an MBR can address with 512-byte sectors.
pub const MAX_DISK: u64 = (u32::MAX as u64) * 512;

pub const BOOT_LABEL: &str = "PIBOOT";
pub const ROOT_LABEL: &str = "PIROOT";

/// Headroom when none is asked for: a quarter of the content, at least 256 MiB.
pub fn default_headroom(content: u64) -> u64 {
    (content / 4).max(256 << 20)
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Part {
    pub number: u8,
    pub label: String,
    pub kind: PartKind,
    pub start: u64,
    pub size: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub boot: Part,
    pub root: Part,
    pub data: Option<Part>,
    pub total: u64,
}

fn down(v: u64) -> u64 {
    v / ALIGN * ALIGN
}

fn up(v: u64) -> u64 {
    v.div_ceil(ALIGN) * ALIGN
}

impl Plan {
    /// The layout for a root filesystem that needs at least `root_min` bytes.
    pub fn new(req: &ImageRequest, root_min: u64, content: u64) -> Result<Plan, ImageError> {
        let boot = Part {
            number: 1,
            label: BOOT_LABEL.to_owned(),
            kind: PartKind::Fat32Lba,
            start: ALIGN,
            size: req.boot_size,
        };
        let root_start = boot.start + boot.size;
        let data_size = req.data_size.unwrap_or(0);
        let root_size = match req.size {
            Some(total) => {
                let room = down(total.saturating_sub(root_start + data_size));
                if room < up(root_min) {
                    let needed = root_start + up(root_min) + data_size;
                    return Err(ImageError::NoSpace(format!(
                        "an image of {total} bytes cannot hold the content: it needs at least \
                         {needed} bytes ({} MiB)",
                        needed.div_ceil(1 << 20)
                    )));
                }
                room
            }
            None => up(root_min
                + req
                    .root_headroom
                    .unwrap_or_else(|| default_headroom(content))),
        };
        let root = Part {
            number: 2,
            label: ROOT_LABEL.to_owned(),
            kind: PartKind::Linux,
            start: root_start,
            size: root_size,
        };
        let data = req.data_size.map(|size| Part {
            number: 3,
            label: req.data_label.clone(),
            kind: PartKind::Linux,
            start: root.start + root.size,
            size,
        });
        let total = data
            .as_ref()
            .map_or(root.start + root.size, |d| d.start + d.size);
        let total = req.size.map_or(total, |s| s.max(total));
        if total > MAX_DISK {
            return Err(ImageError::NoSpace(format!(
                "the image would be {total} bytes, more than an MBR partition table can address"
            )));
        }
        Ok(Plan {
            boot,
            root,
            data,
            total,
        })
    }

    pub fn parts(&self) -> Vec<&Part> {
        let mut v = vec![&self.boot, &self.root];
        v.extend(self.data.as_ref());
        v
    }

    pub fn mbr_partitions(&self) -> Vec<Partition> {
        self.parts()
            .into_iter()
            .map(|p| Partition {
                start: p.start,
                size: p.size,
                kind: p.kind,
                bootable: p.number == 1,
            })
            .collect()
    }

    /// The partitions as JSON for the job's result.
    pub fn to_json(&self) -> String {
        let parts: Vec<serde_json::Value> = self
            .parts()
            .into_iter()
            .map(|p| {
                serde_json::json!({
                    "number": p.number,
                    "label": p.label,
                    "type": match p.kind { PartKind::Fat32Lba => "fat32", PartKind::Linux => "ext4" },
                    "start": p.start,
                    "size": p.size,
                })
            })
            .collect();
        serde_json::Value::Array(parts).to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::request::{ImageRequest, DEFAULT_BOOT};

    const MIB: u64 = 1 << 20;

    fn req() -> ImageRequest {
        ImageRequest {
            boot_size: DEFAULT_BOOT,
            size: None,
            root_headroom: None,
            data_size: None,
            data_label: "PIDATA".into(),
            hostname: None,
            compress: None,
        }
    }

    #[test]
    fn default_layout_follows_the_original() {
        let p = Plan::new(&req(), 1000 * MIB, 900 * MIB).unwrap();
        assert_eq!(p.boot.start, 4 * MIB);
        assert_eq!(p.boot.size, 256 * MIB);
        assert_eq!(p.root.start, 260 * MIB);
        // 1000 MiB + 256 MiB headroom (a quarter of 900 MiB is less), aligned up.
        assert_eq!(p.root.size, 1256 * MIB);
        assert_eq!(p.total, 260 * MIB + 1256 * MIB);
        assert!(p.data.is_none());
        assert_eq!(p.mbr_partitions().len(), 2);
    }

    #[test]
    fn fixed_size_gives_root_the_rest_and_data_its_share() {
        let mut r = req();
        r.size = Some(4096 * MIB);
        r.data_size = Some(512 * MIB);
        let p = Plan::new(&r, 1000 * MIB, 900 * MIB).unwrap();
        assert_eq!(p.root.size, 4096 * MIB - 260 * MIB - 512 * MIB);
        let d = p.data.unwrap();
        assert_eq!(d.start, p.root.start + p.root.size);
        assert_eq!(d.start + d.size, 4096 * MIB);
        assert_eq!(p.total, 4096 * MIB);
    }

    #[test]
    fn too_small_a_size_says_what_is_needed() {
        let mut r = req();
        r.size = Some(1024 * MIB);
        let e = Plan::new(&r, 1000 * MIB, 900 * MIB).unwrap_err();
        let ImageError::NoSpace(m) = e else {
            panic!("{e:?}")
        };
        assert!(m.contains("1260 MiB"), "{m}");
    }

    #[test]
    fn headroom_is_honoured() {
        let mut r = req();
        r.root_headroom = Some(10 * MIB);
        let p = Plan::new(&r, 100 * MIB, 90 * MIB).unwrap();
        assert_eq!(p.root.size, 112 * MIB);
        let json: serde_json::Value = serde_json::from_str(&p.to_json()).unwrap();
        assert_eq!(json[0]["label"], "PIBOOT");
        assert_eq!(json[1]["type"], "ext4");
    }
}
