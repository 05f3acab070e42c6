//! Caller-chosen timestamps for fatfs.
//!
//! fatfs 0.3 stamps directory entries from a `&'static dyn TimeProvider`
//! fixed at mount time; its only per-file setters are deprecated and do not
//! exist for directories. So the provider answers with a thread-local value
//! that each `BootFs` operation pins for its own duration. fatfs never calls
//! the provider from another thread, because `FileSystem` is not `Sync`.

use std::cell::Cell;

use fatfs::{Date, DateTime, Time, TimeProvider};

const DOS_EPOCH: DateTime = DateTime {
    date: Date {
        year: 1980,
        month: 1,
        day: 1,
    },
    time: Time {
        hour: 0,
        min: 0,
        sec: 0,
        millis: 0,
    },
};

const DOS_END: DateTime = DateTime {
    date: Date {
        year: 2107,
        month: 12,
        day: 31,
    },
    time: Time {
        hour: 23,
        min: 59,
        sec: 59,
        millis: 0,
    },
};

thread_local! {
    static PINNED: Cell<DateTime> = const { Cell::new(DOS_EPOCH) };
}

#[derive(Debug)]
pub(crate) struct PinnedClock;

impl TimeProvider for PinnedClock {
    fn get_current_date(&self) -> Date {
        PINNED.with(|p| p.get().date)
    }

    fn get_current_date_time(&self) -> DateTime {
        PINNED.with(Cell::get)
    }
}

pub(crate) static CLOCK: PinnedClock = PinnedClock;

/// Restores the previous time when dropped, so a pin cannot leak into an
/// unrelated operation (or another `BootFs`) on the same thread.
pub(crate) struct Pin {
    previous: DateTime,
}

impl Pin {
    pub fn new(at: DateTime) -> Self {
        Self {
            previous: PINNED.with(|p| p.replace(at)),
        }
    }
}

impl Drop for Pin {
    fn drop(&mut self) {
        PINNED.with(|p| p.set(self.previous));
    }
}

/// Converts Unix seconds to a DOS timestamp, read as UTC.
///
/// FAT stores local time with no zone; UTC keeps images reproducible
/// whatever zone the build machine is in, and matches Linux's vfat driver on
/// a Pi that sets no kernel timezone and no `tz=` mount option. Values outside
/// FAT's 1980..=2107 range are clamped, since refusing to write a file over
/// its timestamp would be worse than an approximate date.
pub(crate) fn dos_time(unix_secs: i64) -> DateTime {
    let days = unix_secs.div_euclid(86_400);
    let secs_of_day = unix_secs.rem_euclid(86_400);
    let (year, month, day) = civil_from_days(days);
    if year < 1980 {
        return DOS_EPOCH;
    }
    if year > 2107 {
        return DOS_END;
    }
    // The casts cannot truncate: each value was range-checked or reduced
    // modulo something small above.
    DateTime {
        date: Date {
            year: year as u16,
            month: month as u16,
            day: day as u16,
        },
        time: Time {
            hour: (secs_of_day / 3600) as u16,
            min: (secs_of_day / 60 % 60) as u16,
            sec: (secs_of_day % 60) as u16,
            millis: 0,
        },
    }
}

/// Proleptic Gregorian date for a count of days since 1970-01-01.
///
/// Works in 400-year eras starting on March 1st so that the leap day falls
/// at the end of each year and needs no special case.
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468; // shift the epoch to 0000-03-01
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_from_march = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_from_march + 2) / 5 + 1;
    let month = if month_from_march < 10 {
        month_from_march + 3
    } else {
        month_from_march - 9
    };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(t: DateTime) -> (u16, u16, u16, u16, u16, u16) {
        (
            t.date.year,
            t.date.month,
            t.date.day,
            t.time.hour,
            t.time.min,
            t.time.sec,
        )
    }

    #[test]
    fn known_instants() {
        assert_eq!(parts(dos_time(315_532_800)), (1980, 1, 1, 0, 0, 0));
        // 2000-02-29 12:34:56, a leap day in a century leap year.
        assert_eq!(parts(dos_time(951_827_696)), (2000, 2, 29, 12, 34, 56));
        // 2024-12-31 23:59:59
        assert_eq!(parts(dos_time(1_735_689_599)), (2024, 12, 31, 23, 59, 59));
        // 2100-03-01 00:00:00, the day after a non-leap Feb 28.
        assert_eq!(parts(dos_time(4_107_542_400)), (2100, 3, 1, 0, 0, 0));
    }

    #[test]
    fn out_of_range_is_clamped() {
        assert_eq!(dos_time(0), DOS_EPOCH);
        assert_eq!(dos_time(-86_400 * 365 * 100), DOS_EPOCH);
        assert_eq!(dos_time(i64::MAX / 2), DOS_END);
    }

    #[test]
    fn pin_restores_previous_value() {
        let a = dos_time(1_000_000_000);
        let b = dos_time(1_700_000_000);
        let _outer = Pin::new(a);
        {
            let _inner = Pin::new(b);
            assert_eq!(CLOCK.get_current_date_time(), b);
        }
        assert_eq!(CLOCK.get_current_date_time(), a);
    }
}
