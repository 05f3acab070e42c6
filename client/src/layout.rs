//! The disk layout of `pib-client image`: the `[image]` table of pib.toml, a `--layout FILE`
//! with the same keys, and the flags, in that order of precedence (flags win).
//!
//! ```toml
//! [image]
//! boot_size = "256M"      # the FAT partition
//! root_headroom = "1G"    # free space in root on top of its content (or: size = "8G")
//! data_size = "2G"        # an optional third, empty ext4 partition ...
//! data_label = "PIDATA"   # ... and its label
//! compress = "zstd"       # or "xz"
//! hostname = "kitchen"    # overrides the build's
//! ```

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use pib_dbus_interfaces::types::options;
use serde::Deserialize;
use zbus::Variant;

/// A size as people write it: bytes, or a number with K, M, G or T (powers of 1024; a
/// trailing "iB" or "B" is allowed), e.g. 256M, 1.5G, 4GiB.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let digits_end = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (number, unit) = t.split_at(digits_end);
    let shift = match unit.trim().to_ascii_uppercase().as_str() {
        "" | "B" => 0,
        "K" | "KB" | "KIB" => 10,
        "M" | "MB" | "MIB" => 20,
        "G" | "GB" | "GIB" => 30,
        "T" | "TB" | "TIB" => 40,
        _ => return Err(format!("{text:?} is not a size (e.g. 256M, 1.5G, 4GiB)")),
    };
    let value: f64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a size (e.g. 256M, 1.5G, 4GiB)"))?;
    let bytes = value * (1u64 << shift) as f64;
    if !bytes.is_finite() || bytes < 0.0 || bytes >= u64::MAX as f64 {
        return Err(format!("{text:?} is out of range"));
    }
    Ok(bytes.round() as u64)
}

/// A size in a TOML file: a string with a unit, or a plain number of bytes.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum SizeValue {
    Bytes(u64),
    Text(String),
}

impl SizeValue {
    fn bytes(&self, key: &str) -> Result<u64, LayoutError> {
        match self {
            SizeValue::Bytes(b) => Ok(*b),
            SizeValue::Text(t) => parse_size(t).map_err(|message| LayoutError::Value {
                key: key.to_owned(),
                message,
            }),
        }
    }
}

/// The keys of an `[image]` table or a layout file.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImageSection {
    pub boot_size: Option<SizeValue>,
    pub size: Option<SizeValue>,
    pub root_headroom: Option<SizeValue>,
    pub data_size: Option<SizeValue>,
    pub data_label: Option<String>,
    pub compress: Option<String>,
    pub hostname: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum LayoutError {
    #[error("cannot read the layout file {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the layout file {} is not valid: {message}", path.display())]
    Parse { path: PathBuf, message: String },
    #[error("bad {key} in the image layout: {message}")]
    Value { key: String, message: String },
    #[error("size and root_headroom exclude each other: give one")]
    SizeAndHeadroom,
}

/// The settled layout, as the daemon's options.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Layout {
    pub boot_size: Option<u64>,
    pub size: Option<u64>,
    pub root_headroom: Option<u64>,
    pub data_size: Option<u64>,
    pub data_label: Option<String>,
    pub compress: Option<String>,
    pub hostname: Option<String>,
}

impl Layout {
    /// Applies a section over this layout: what the section sets wins. A section that sets
    /// size drops an inherited headroom and the other way round.
    pub fn apply(&mut self, s: &ImageSection) -> Result<(), LayoutError> {
        let size = |v: &Option<SizeValue>, key| v.as_ref().map(|v| v.bytes(key)).transpose();
        if s.size.is_some() && s.root_headroom.is_some() {
            return Err(LayoutError::SizeAndHeadroom);
        }
        if let Some(v) = size(&s.boot_size, "boot_size")? {
            self.boot_size = Some(v);
        }
        if let Some(v) = size(&s.size, "size")? {
            self.size = Some(v);
            self.root_headroom = None;
        }
        if let Some(v) = size(&s.root_headroom, "root_headroom")? {
            self.root_headroom = Some(v);
            self.size = None;
        }
        if let Some(v) = size(&s.data_size, "data_size")? {
            self.data_size = Some(v);
        }
        for (mine, theirs) in [
            (&mut self.data_label, &s.data_label),
            (&mut self.compress, &s.compress),
            (&mut self.hostname, &s.hostname),
        ] {
            if theirs.is_some() {
                mine.clone_from(theirs);
            }
        }
        Ok(())
    }

    pub fn options(&self) -> HashMap<&'static str, Variant<'static>> {
        let mut o = HashMap::new();
        for (key, value) in [
            (options::BOOT_SIZE, self.boot_size),
            (options::SIZE, self.size),
            (options::ROOT_HEADROOM, self.root_headroom),
            (options::DATA_SIZE, self.data_size),
        ] {
            if let Some(v) = value {
                o.insert(key, Variant::from(v));
            }
        }
        for (key, value) in [
            (options::DATA_LABEL, &self.data_label),
            (options::COMPRESS, &self.compress),
            (options::HOSTNAME, &self.hostname),
        ] {
            if let Some(v) = value {
                o.insert(key, Variant::from(v.clone()));
            }
        }
        o
    }
}

/// Reads a layout file: the keys of `[image]`, at the top level or under `[image]`.
pub fn read_file(path: &Path) -> Result<ImageSection, LayoutError> {
    let text = std::fs::read_to_string(path).map_err(|source| LayoutError::Read {
        path: path.to_owned(),
        source,
    })?;
    parse_file(&text).map_err(|message| LayoutError::Parse {
        path: path.to_owned(),
        message,
    })
}

fn parse_file(text: &str) -> Result<ImageSection, String> {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Wrapped {
        image: ImageSection,
    }
    if let Ok(w) = toml::from_str::<Wrapped>(text) {
        return Ok(w.image);
    }
    toml::from_str::<ImageSection>(text).map_err(|e| e.to_string().trim_end().to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("256M").unwrap(), 256 << 20);
        assert_eq!(parse_size("1.5G").unwrap(), 3 << 29);
        assert_eq!(parse_size("4GiB").unwrap(), 4 << 30);
        assert_eq!(parse_size("4096").unwrap(), 4096);
        assert_eq!(parse_size("2 T").unwrap(), 2 << 40);
        for bad in ["", "M", "12Q", "-1G", "1e400G", "1..2G"] {
            assert!(parse_size(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn sections_layer_and_flags_win() {
        let file =
            parse_file("[image]\nboot_size = \"128M\"\nsize = \"4G\"\ndata_size = 67108864\n")
                .unwrap();
        let mut l = Layout::default();
        l.apply(&file).unwrap();
        assert_eq!(l.size, Some(4 << 30));
        let flags = ImageSection {
            root_headroom: Some(SizeValue::Text("1G".into())),
            compress: Some("zstd".into()),
            ..Default::default()
        };
        l.apply(&flags).unwrap();
        assert_eq!(l.size, None, "headroom given later replaces size");
        assert_eq!(l.root_headroom, Some(1 << 30));
        let o = l.options();
        assert_eq!(o[options::BOOT_SIZE], Variant::from(128u64 << 20));
        assert_eq!(o[options::DATA_SIZE], Variant::from(64u64 << 20));
        assert_eq!(o[options::COMPRESS], Variant::from("zstd"));
        assert!(!o.contains_key(options::SIZE));
    }

    #[test]
    fn bad_files_are_explained() {
        assert!(parse_file("bogus = 1").is_err());
        let top = parse_file("size = \"8G\"").unwrap();
        assert_eq!(top.size, Some(SizeValue::Text("8G".into())));
        let both = ImageSection {
            size: Some(SizeValue::Bytes(1)),
            root_headroom: Some(SizeValue::Bytes(1)),
            ..Default::default()
        };
        assert!(matches!(
            Layout::default().apply(&both),
            Err(LayoutError::SizeAndHeadroom)
        ));
        let bad = ImageSection {
            boot_size: Some(SizeValue::Text("lots".into())),
            ..Default::default()
        };
        assert!(matches!(
            Layout::default().apply(&bad),
            Err(LayoutError::Value { .. })
        ));
    }
}
