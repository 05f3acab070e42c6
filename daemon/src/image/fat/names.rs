//! What FAT can name, and when two names are the same to FAT.

use super::FatError;

/// Characters no FAT long name may contain, besides control characters.
const FORBIDDEN: &[char] = &['\\', '/', ':', '*', '?', '"', '<', '>', '|'];

const MAX_NAME_BYTES: usize = 255;

/// Splits a relative '/'-separated path and checks every component.
pub(crate) fn components(path: &str) -> Result<Vec<&str>, FatError> {
    if path.is_empty() || path.starts_with('/') {
        return Err(FatError::BadName(format!(
            "{path:?}: want a non-empty relative path"
        )));
    }
    let parts: Vec<&str> = path.split('/').collect();
    for part in &parts {
        check_name(part).map_err(|why| FatError::BadName(format!("{path:?}: {why}")))?;
    }
    Ok(parts)
}

fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("empty path component".into());
    }
    if name == "." || name == ".." {
        return Err(format!("{name:?} is reserved"));
    }
    if let Some(c) = name
        .chars()
        .find(|c| c.is_control() || FORBIDDEN.contains(c))
    {
        return Err(format!("{c:?} is not allowed in FAT names"));
    }
    // fatfs 0.3 refuses characters outside the BMP even though UTF-16
    // could hold them as surrogate pairs.
    if let Some(c) = name.chars().find(|&c| u32::from(c) > 0xFFFF) {
        return Err(format!("{c:?} is outside the Basic Multilingual Plane"));
    }
    // Windows and Linux's vfat strip trailing dots and spaces on lookup, so
    // such a file could never be opened under the name it was given.
    if name.ends_with('.') || name.ends_with(' ') {
        return Err("FAT names cannot end with '.' or ' '".into());
    }
    // FAT's limit is 255 UTF-16 units, but fatfs 0.3 counts UTF-8 bytes,
    // which is never fewer, so that is the limit that applies.
    if name.len() > MAX_NAME_BYTES {
        return Err(format!("longer than {MAX_NAME_BYTES} bytes"));
    }
    Ok(())
}

/// Whether FAT treats the two names as one file.
///
/// FAT compares names case-insensitively; this uses Unicode upper-casing,
/// which matches fatfs's own lookup and agrees with Windows and Linux for
/// every name a boot partition realistically holds.
pub(crate) fn same_to_fat(a: &str, b: &str) -> bool {
    let upper = |s: &str| s.chars().flat_map(char::to_uppercase).collect::<String>();
    upper(a) == upper(b)
}

/// Characters that FAT short names, and so volume labels, cannot contain.
const LABEL_FORBIDDEN: &[u8] = b"\"*+,./:;<=>?[\\]|";

/// Encodes a volume label as the 11 space-padded bytes FAT stores.
///
/// Lower case is kept as given, as `mkfs.fat` does (Raspberry Pi OS labels
/// its boot partition "bootfs"); only characters that make the label
/// unreadable somewhere are refused. Non-ASCII is refused because the label
/// is stored in an unspecified OEM code page.
pub(crate) fn volume_label(label: &str) -> Result<[u8; 11], FatError> {
    let bad = |why: &str| Err(FatError::BadLabel(format!("{label:?}: {why}")));
    if label.is_empty() {
        return bad("empty");
    }
    if label.len() > 11 {
        return bad("longer than 11 bytes");
    }
    if label.starts_with(' ') {
        return bad("starts with a space");
    }
    if let Some(b) = label
        .bytes()
        .find(|b| !b.is_ascii() || b.is_ascii_control() || LABEL_FORBIDDEN.contains(b))
    {
        return bad(&format!("byte {b:#04x} is not allowed in a FAT label"));
    }
    let mut out = [b' '; 11];
    out[..label.len()].copy_from_slice(label.as_bytes());
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_raspberry_pi_names() {
        for p in [
            "config.txt",
            "overlays/vc4-kms-v3d-pi4.dtbo",
            "bcm2712-rpi-5-b.dtb",
            "overlays/README",
            "a name with spaces.txt",
            ".hidden",
            "ünïcödé.txt",
        ] {
            components(p).unwrap_or_else(|e| panic!("{p}: {e}"));
        }
    }

    #[test]
    fn rejects_what_fat_cannot_hold() {
        for p in [
            "",
            "/abs",
            "a//b",
            "dir/",
            ".",
            "a/../b",
            "back\\slash",
            "co:lon",
            "star*",
            "what?",
            "quote\"",
            "less<",
            "more>",
            "pi|pe",
            "tab\tname",
            "nul\0",
            "del\u{7f}",
            "trailing.",
            "trailing ",
            "emoji\u{1F600}",
        ] {
            assert!(
                matches!(components(p), Err(FatError::BadName(_))),
                "{p:?} accepted"
            );
        }
        let long = "x".repeat(256);
        assert!(components(&long).is_err());
        assert!(components(&"x".repeat(255)).is_ok());
        // 128 UTF-16 units, but 256 bytes.
        assert!(components(&"é".repeat(128)).is_err());
    }

    #[test]
    fn case_folding() {
        assert!(same_to_fat("Config.TXT", "config.txt"));
        assert!(same_to_fat("ÄBC", "äbc"));
        assert!(!same_to_fat("config.txt", "config.txt2"));
    }

    #[test]
    fn labels() {
        assert_eq!(&volume_label("PIBOOT").unwrap(), b"PIBOOT     ");
        assert_eq!(&volume_label("bootfs").unwrap(), b"bootfs     ");
        assert_eq!(&volume_label("ELEVENCHARS").unwrap(), b"ELEVENCHARS");
        for bad in ["", "TWELVE_CHARS", " LEAD", "A.B", "A/B", "Ä", "TAB\t"] {
            assert!(
                matches!(volume_label(bad), Err(FatError::BadLabel(_))),
                "{bad:?} accepted"
            );
        }
    }
}
