//! Sizes and times for people: "1.20 GiB", "3 hours ago", "2025-11-26T10:45:00Z".

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use indicatif::BinaryBytes;

pub fn size(bytes: u64) -> String {
    BinaryBytes(bytes).to_string()
}

/// How long ago `micros` (microseconds since the epoch, as the daemon gives times) was, for
/// the last month; older or future times as a UTC date, since "14 months ago" reads worse than
/// the date. Zero means the daemon does not know.
pub fn ago(micros: u64, now: SystemTime) -> String {
    if micros == 0 {
        return "?".to_owned();
    }
    let then = UNIX_EPOCH + Duration::from_micros(micros);
    let Ok(age) = now.duration_since(then) else {
        return iso8601(micros);
    };
    let secs = age.as_secs();
    let plural = |n: u64, unit: &str| {
        if n == 1 {
            format!("1 {unit} ago")
        } else {
            format!("{n} {unit}s ago")
        }
    };
    match secs {
        0..60 => "just now".to_owned(),
        60..3600 => plural(secs / 60, "minute"),
        3600..86_400 => plural(secs / 3600, "hour"),
        86_400..2_592_000 => plural(secs / 86_400, "day"),
        _ => iso8601(micros)[..10].to_owned(),
    }
}

/// `YYYY-MM-DDTHH:MM:SSZ`, in UTC.
pub fn iso8601(micros: u64) -> String {
    let secs = micros / 1_000_000;
    let (days, rest) = (secs / 86_400, secs % 86_400);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60
    )
}

/// The proleptic Gregorian date `days` after 1970-01-01 (Howard Hinnant's `civil_from_days`,
/// for the non-negative days the daemon's unsigned times allow).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + u64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW_SECS: u64 = 1_764_153_900; // 2025-11-26T10:45:00Z

    fn now() -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(NOW_SECS)
    }

    fn secs_ago(s: u64) -> u64 {
        (NOW_SECS - s) * 1_000_000
    }

    #[test]
    fn dates() {
        assert_eq!(iso8601(0), "1970-01-01T00:00:00Z");
        assert_eq!(iso8601(NOW_SECS * 1_000_000), "2025-11-26T10:45:00Z");
        assert_eq!(iso8601(951_782_400_000_000), "2000-02-29T00:00:00Z");
        assert_eq!(iso8601(4_107_542_399_000_000), "2100-02-28T23:59:59Z");
        assert_eq!(iso8601(1_709_164_800_999_999), "2024-02-29T00:00:00Z");
    }

    #[test]
    fn relative_times() {
        assert_eq!(ago(secs_ago(5), now()), "just now");
        assert_eq!(ago(secs_ago(60), now()), "1 minute ago");
        assert_eq!(ago(secs_ago(59 * 60 + 59), now()), "59 minutes ago");
        assert_eq!(ago(secs_ago(3600), now()), "1 hour ago");
        assert_eq!(ago(secs_ago(5 * 3600 + 1), now()), "5 hours ago");
        assert_eq!(ago(secs_ago(86_400), now()), "1 day ago");
        assert_eq!(ago(secs_ago(29 * 86_400), now()), "29 days ago");
        assert_eq!(ago(secs_ago(31 * 86_400), now()), "2025-10-26");
        assert_eq!(
            ago((NOW_SECS + 90) * 1_000_000, now()),
            "2025-11-26T10:46:30Z"
        );
        assert_eq!(ago(0, now()), "?");
    }

    #[test]
    fn sizes() {
        assert_eq!(size(0), "0 B");
        assert_eq!(size(1536), "1.50 KiB");
        assert_eq!(size(1_288_490_189), "1.20 GiB");
    }
}
