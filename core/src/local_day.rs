//! Customers' local days: a day is the local calendar day of the customer's
//! region ([`Region::time_zone`]), from one local midnight to the next, so it
//! lasts 23 hours on the day clocks spring forward and 25 on the day they
//! fall back. Instants are UTC milliseconds, as event times are.
//!
//! A day's hours are counted from its start: hour 2 of a spring-forward day
//! in the US starts at 03:00 local time, and the fall-back day has an hour 24.

use std::ops::Range;

use chrono::{DateTime, Days, NaiveDate, NaiveDateTime, NaiveTime, Offset, TimeZone};

use crate::Region;
use crate::region::REGIONS;

pub const HOUR_MS: i64 = 3_600_000;
/// The most hours a local day has (a fall-back day).
pub const MAX_DAY_HOURS: usize = 25;

/// The first instant of `date` in `region`: its local midnight, or the first
/// local time after it when a change of offset skips midnight.
pub fn day_start_ms(region: Region, date: NaiveDate) -> i64 {
    let zone = region.time_zone();
    let midnight = date.and_time(NaiveTime::MIN);
    // A change of offset skips at most a few hours; look for the first local time that exists.
    (0..=24)
        .map(|quarter_hours| midnight + chrono::Duration::minutes(15 * quarter_hours))
        .find_map(|local: NaiveDateTime| zone.from_local_datetime(&local).earliest())
        .map_or_else(|| midnight.and_utc().timestamp_millis(), |start| start.timestamp_millis())
}

/// The instants of `date` in `region`: from its start to the next day's.
pub fn day_range(region: Region, date: NaiveDate) -> Range<i64> {
    let next = date.checked_add_days(Days::new(1)).unwrap_or(date);
    day_start_ms(region, date)..day_start_ms(region, next)
}

/// The local date of the instant `ts_ms` in `region`.
pub fn date_of(region: Region, ts_ms: i64) -> NaiveDate {
    local_time(region, ts_ms).date()
}

/// The local wall-clock time of `ts_ms` in `region`, as milliseconds since
/// local midnight: what a profile of "the same time of day" keys on.
pub fn time_of_day_ms(region: Region, ts_ms: i64) -> i64 {
    let time = local_time(region, ts_ms).time();
    i64::from(chrono::Timelike::num_seconds_from_midnight(&time)) * 1_000 + i64::from(chrono::Timelike::nanosecond(&time) / 1_000_000)
}

/// The region's offset from UTC at `ts_ms`, in seconds (east positive).
pub fn utc_offset_secs(region: Region, ts_ms: i64) -> i32 {
    let instant = DateTime::from_timestamp_millis(ts_ms).unwrap_or_default().naive_utc();
    region.time_zone().offset_from_utc_datetime(&instant).fix().local_minus_utc()
}

fn local_time(region: Region, ts_ms: i64) -> NaiveDateTime {
    let instant = DateTime::from_timestamp_millis(ts_ms).unwrap_or_default();
    instant.with_timezone(&region.time_zone()).naive_local()
}

/// The hours of the local day `day` that fall in the UTC date it starts on:
/// the rest fall in the next UTC date. Every region of the table is a whole
/// number of hours off UTC and its days span two UTC dates (a core test
/// holds the table to that), so a UTC day is the end of one local day and
/// the start of the next, at whole hours.
pub fn hours_in_first_utc_date(day: &Range<i64>) -> usize {
    let next_utc_midnight = (day.start.div_euclid(UTC_DAY_MS) + 1) * UTC_DAY_MS;
    ((next_utc_midnight.min(day.end) - day.start) / HOUR_MS) as usize
}

const UTC_DAY_MS: i64 = 24 * HOUR_MS;

/// One local date in every region of the table, computed once: the day
/// each region's customers count for that date.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalDays {
    date: NaiveDate,
    ranges: [Range<i64>; REGIONS.len()],
}

impl LocalDays {
    pub fn of(date: NaiveDate) -> Self {
        Self { date, ranges: std::array::from_fn(|index| day_range(Region::from_index(index).unwrap_or_else(|| unreachable!("an index of the table")), date)) }
    }

    pub fn date(&self) -> NaiveDate {
        self.date
    }

    /// The instants of the date in `region`.
    pub fn range(&self, region: Region) -> Range<i64> {
        self.ranges[region.index()].clone()
    }

    pub fn contains(&self, region: Region, ts_ms: i64) -> bool {
        self.ranges[region.index()].contains(&ts_ms)
    }

    /// The hour of the region's day that `ts_ms` falls in, counted from its
    /// start (0 to 24); `None` outside the day.
    pub fn hour_of(&self, region: Region, ts_ms: i64) -> Option<usize> {
        let range = &self.ranges[region.index()];
        range.contains(&ts_ms).then(|| ((ts_ms - range.start) / HOUR_MS) as usize)
    }

    /// From the earliest start to the latest end of the date over every
    /// region: what holds every region's day.
    pub fn span(&self) -> Range<i64> {
        let start = self.ranges.iter().map(|range| range.start).min().unwrap_or(0);
        let end = self.ranges.iter().map(|range| range.end).max().unwrap_or(0);
        start..end
    }
}

/// The two local days of each region last looked up: the stream's day
/// windows ask for the same day over and over, and around midnight for
/// today's and yesterday's in turn (late readings, bins still open), so a
/// lookup in the cache costs a comparison or two.
#[derive(Debug, Clone)]
pub struct DayCache {
    /// Per region, the newest lookup first.
    ranges: [[Range<i64>; 2]; REGIONS.len()],
}

impl Default for DayCache {
    fn default() -> Self {
        Self { ranges: std::array::from_fn(|_| [0..0, 0..0]) }
    }
}

impl DayCache {
    /// The local day of `region` that holds `ts_ms`.
    pub fn day_of(&mut self, region: Region, ts_ms: i64) -> Range<i64> {
        let [newest, other] = &mut self.ranges[region.index()];
        if !newest.contains(&ts_ms) {
            if other.contains(&ts_ms) {
                std::mem::swap(newest, other);
            } else {
                *other = std::mem::replace(newest, day_range(region, date_of(region, ts_ms)));
            }
        }
        newest.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn date(text: &str) -> NaiveDate {
        NaiveDate::parse_from_str(text, "%Y-%m-%d").expect("a date")
    }

    fn utc(text: &str) -> i64 {
        DateTime::parse_from_rfc3339(text).expect("an RFC 3339 time").timestamp_millis()
    }

    fn california() -> Region {
        Region::from_code("US-CA").expect("in the table")
    }

    #[test]
    fn days_of_the_us_dst_changes_have_23_and_25_hours() {
        let spring = day_range(california(), date("2026-03-08"));
        assert_eq!(spring, utc("2026-03-08T08:00:00Z")..utc("2026-03-09T07:00:00Z"));
        assert_eq!((spring.end - spring.start) / HOUR_MS, 23);
        let fall = day_range(california(), date("2026-11-01"));
        assert_eq!(fall, utc("2026-11-01T07:00:00Z")..utc("2026-11-02T08:00:00Z"));
        assert_eq!((fall.end - fall.start) / HOUR_MS, 25);
        let arizona = Region::from_code("US-AZ").expect("in the table");
        assert_eq!((day_range(arizona, date("2026-03-08")).end - day_range(arizona, date("2026-03-08")).start) / HOUR_MS, 24, "Arizona keeps standard time");
    }

    /// The serving store files a day window by its start's UTC date
    /// (`start div day`): each region's local midnights must fall on
    /// distinct UTC dates, including across DST changes.
    #[test]
    fn each_regions_midnights_fall_on_their_own_utc_dates() {
        for region in Region::all() {
            let mut date = date("2026-01-01");
            let mut previous = day_start_ms(region, date).div_euclid(24 * HOUR_MS);
            for _ in 0..366 {
                date = date.succ_opt().expect("a next date");
                let utc_day = day_start_ms(region, date).div_euclid(24 * HOUR_MS);
                assert_eq!(utc_day, previous + 1, "{region} on {date}");
                previous = utc_day;
            }
        }
    }

    /// A UTC day is the end of one local day and the start of the next
    /// ([`hours_in_first_utc_date`]): every region's local day must span two
    /// UTC dates and cross UTC midnight at a whole hour.
    #[test]
    fn each_regions_days_cross_one_utc_midnight_at_a_whole_hour() {
        for region in Region::all() {
            let mut date = date("2026-01-01");
            for _ in 0..366 {
                let day = day_range(region, date);
                let next_utc_midnight = (day.start.div_euclid(UTC_DAY_MS) + 1) * UTC_DAY_MS;
                assert!(day.start < next_utc_midnight && next_utc_midnight < day.end, "{region} on {date} crosses one UTC midnight");
                assert!(day.end <= next_utc_midnight + UTC_DAY_MS, "{region} on {date} ends in the next UTC date");
                assert_eq!((next_utc_midnight - day.start) % HOUR_MS, 0, "{region} on {date}: at a whole hour");
                date = date.succ_opt().expect("a next date");
            }
        }
        let ca = california();
        assert_eq!(hours_in_first_utc_date(&day_range(ca, date("2026-03-08"))), 16, "08:00 to 24:00 UTC");
        assert_eq!(hours_in_first_utc_date(&day_range(ca, date("2026-11-01"))), 17, "07:00 to 24:00 UTC, of 25 hours");
    }

    #[test]
    fn instants_map_to_local_dates_hours_and_times_of_day() {
        let ca = california();
        assert_eq!(date_of(ca, utc("2026-03-09T06:59:59Z")), date("2026-03-08"));
        assert_eq!(date_of(ca, utc("2026-03-09T07:00:00Z")), date("2026-03-09"));
        assert_eq!(time_of_day_ms(ca, utc("2026-03-08T10:30:00Z")), 3 * HOUR_MS + 30 * 60_000, "03:30 PDT: 02:00 was skipped");
        assert_eq!(utc_offset_secs(ca, utc("2026-07-01T00:00:00Z")), -7 * 3_600);
        let days = LocalDays::of(date("2026-11-01"));
        assert_eq!(days.hour_of(ca, utc("2026-11-01T07:00:00Z")), Some(0));
        assert_eq!(days.hour_of(ca, utc("2026-11-02T07:59:59Z")), Some(24), "the fall-back day's 25th hour");
        assert_eq!(days.hour_of(ca, utc("2026-11-02T08:00:00Z")), None);
        let span = days.span();
        assert_eq!(span.start, utc("2026-11-01T04:00:00Z"), "New York's day starts first");
        assert_eq!(span.end, utc("2026-11-02T10:00:00Z"), "Hawaii's ends last");
        let mut cache = DayCache::default();
        assert_eq!(cache.day_of(ca, utc("2026-11-01T12:00:00Z")), days.range(ca));
        assert_eq!(cache.day_of(ca, utc("2026-11-02T08:00:00Z")).start, utc("2026-11-02T08:00:00Z"));
        assert_eq!(cache.day_of(ca, utc("2026-11-02T07:59:59Z")), days.range(ca), "the day before, still cached");
        assert_eq!(cache.day_of(ca, utc("2026-10-31T12:00:00Z")).end, days.range(ca).start, "a third day replaces the older one");
        assert_eq!(cache.day_of(ca, utc("2026-11-01T07:00:00Z")), days.range(ca));
    }
}
