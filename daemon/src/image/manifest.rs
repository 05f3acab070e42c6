//! The image described for publishing: an entry of an rpi-imager repository (its `os_list`
//! format), so users can offer their image in Raspberry Pi Imager's "custom repository".

use crate::results::ImageInfo;

/// Sizes and digests of what was written.
pub struct Digests<'a> {
    pub image_size: u64,
    pub image_sha256: &'a str,
    pub output_size: u64,
    pub output_sha256: &'a str,
}

/// rpi-imager's device tags for a board and machine.
pub fn device_tags(board: &str, arch: &str) -> Vec<&'static str> {
    let bits64 = arch == "aarch64";
    match (board, bits64) {
        ("rpi5", _) => vec!["pi5-64bit"],
        ("rpi4", true) => vec!["pi4-64bit"],
        ("rpi4", false) => vec!["pi4-32bit"],
        ("rpi3" | "zero2w", true) => vec!["pi3-64bit"],
        ("rpi3" | "zero2w", false) => vec!["pi3-32bit"],
        ("rpi2", _) => vec!["pi2-32bit"],
        _ => Vec::new(),
    }
}

/// The civil date (UTC) of a Unix time, as rpi-imager's release_date wants it.
pub fn date(unix: i64) -> String {
    // Days to civil date (proleptic Gregorian), after Howard Hinnant's published algorithm.
    let days = unix.div_euclid(86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}")
}

/// The repository entry. The client adds `url` (only it knows where the file was written).
pub fn entry(image: &ImageInfo, digests: &Digests<'_>, now: i64) -> serde_json::Value {
    serde_json::json!({
        "name": image.name,
        "description": format!(
            "{} for the Raspberry Pi ({}, {}), built by pi-builder from the stages {}",
            image.distro, image.board, image.arch, image.stages.join(" ")
        ),
        "release_date": date(now),
        "extract_size": digests.image_size,
        "extract_sha256": digests.image_sha256,
        "image_download_size": digests.output_size,
        "image_download_sha256": digests.output_sha256,
        "devices": device_tags(&image.board, &image.arch),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates() {
        assert_eq!(date(0), "1970-01-01");
        assert_eq!(date(951_782_400), "2000-02-29");
        assert_eq!(date(1_795_651_200), "2026-11-26");
    }

    #[test]
    fn tags() {
        assert_eq!(device_tags("rpi4", "aarch64"), ["pi4-64bit"]);
        assert_eq!(device_tags("zero2w", "arm"), ["pi3-32bit"]);
        assert!(device_tags("other", "arm").is_empty());
    }
}
