//! The serving layer: a series of usage points merged from the batch's closed
//! days (results database) and the stream's recent windows (serving store).
//!
//! The rule at the boundary: a day the batch has computed for a utility
//! comes from the batch whole, and the stream's windows inside it are not
//! used; every other day comes from the stream. No day is counted twice, and
//! a computed day on which a customer used nothing is a zero from the batch,
//! not a gap. The batch keeps hours per region and days per customer, so a
//! customer's minutes and hours always come from the stream.
//!
//! Days are local days ([`SeriesDays`]): a day point starts at local midnight,
//! and a batch hour is the hour since it (a day has 23 to 25).

use std::collections::BTreeSet;

use auth_core::Region;
use auth_core::local_day;
use auth_core::ports::StoredWindow;
use auth_results::history::{CustomerDayRow, RegionHourRow};
use chrono::{DateTime, NaiveDate};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

pub const MINUTE_MS: i64 = 60_000;
pub const HOUR_MS: i64 = 3_600_000;
pub const DAY_MS: i64 = 86_400_000;
/// The longest a local day lasts (the day clocks fall back).
pub const MAX_DAY_MS: i64 = 25 * HOUR_MS;

/// Whose days a series counts: a region's local days, or UTC days for a
/// customer the registry does not know.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SeriesDays {
    Local(Region),
    Utc,
}

impl SeriesDays {
    /// The first instant of `date`, UTC ms.
    pub fn start_ms(self, date: NaiveDate) -> i64 {
        match self {
            SeriesDays::Local(region) => local_day::day_start_ms(region, date),
            SeriesDays::Utc => day_start_ms(date),
        }
    }

    /// The date of the instant `ms`.
    pub fn date_of(self, ms: i64) -> NaiveDate {
        match self {
            SeriesDays::Local(region) => local_day::date_of(region, ms),
            SeriesDays::Utc => date_of(ms),
        }
    }

    /// The IANA name of the zone, e.g. `America/Los_Angeles`, or `UTC`.
    pub fn time_zone(self) -> &'static str {
        match self {
            SeriesDays::Local(region) => region.time_zone().name(),
            SeriesDays::Utc => "UTC",
        }
    }
}

/// The width of a series' points.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub enum Granularity {
    Minute,
    Hour,
    Day,
}

impl Granularity {
    pub fn width_ms(self) -> i64 {
        match self {
            Granularity::Minute => MINUTE_MS,
            Granularity::Hour => HOUR_MS,
            Granularity::Day => DAY_MS,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Granularity::Minute => "minute",
            Granularity::Hour => "hour",
            Granularity::Day => "day",
        }
    }
}

/// Where a point's numbers come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub enum Source {
    /// Recomputed by the daily batch from the master data: final.
    Batch,
    /// The stream's window: live, final once `closed` and past the lateness.
    Stream,
}

/// One point of a usage series, in the utility's unit.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Point {
    /// Start of the point's window, UTC ms.
    pub start_ms: i64,
    pub sum: f64,
    /// Readings counted.
    pub count: u64,
    pub min: Option<f64>,
    pub max: Option<f64>,
    /// False while the stream's window is still open.
    pub closed: bool,
    pub source: Source,
    /// A batch day's received over expected intervals of the customer's
    /// registered meters; `None` on stream points and when nothing was expected.
    pub completeness: Option<f64>,
    /// A batch day's readings that the validation rules flagged suspect
    /// (counted in `sum`); `None` on stream points.
    pub suspect: Option<u64>,
    /// A batch day's intervals whose value an operator's edit set (counted
    /// in `sum`); `None` on stream points.
    pub edited: Option<u64>,
    /// A batch day's intervals the meters missed that the batch estimated
    /// (counted in `sum`, not in `count`); `None` on stream points.
    pub estimated: Option<u64>,
}

impl Point {
    pub(crate) fn from_window(window: &StoredWindow) -> Self {
        let aggregate = window.aggregate;
        let has_readings = aggregate.count > 0;
        Point {
            start_ms: window.slot.start_ms,
            sum: aggregate.sum,
            count: aggregate.count,
            min: has_readings.then_some(aggregate.min),
            max: has_readings.then_some(aggregate.max),
            closed: window.closed,
            source: Source::Stream,
            completeness: None,
            suspect: None,
            edited: None,
            estimated: None,
        }
    }
}

/// Start of `date` (UTC) in ms.
pub fn day_start_ms(date: NaiveDate) -> i64 {
    date.and_hms_opt(0, 0, 0).map_or(0, |start| start.and_utc().timestamp_millis())
}

/// The UTC date of an instant in ms.
pub fn date_of(ms: i64) -> NaiveDate {
    DateTime::from_timestamp_millis(ms).map_or(NaiveDate::MIN, |instant| instant.date_naive())
}

/// A customer's series of one utility in `[from_ms, to_ms)`, oldest first.
/// `windows` are the customer's stream windows of that utility (any width);
/// `batch_days` the days the batch computed for the utility in the range and
/// `batch_rows` the customer's rows among them.
pub fn customer_series(
    days: SeriesDays,
    windows: &[StoredWindow],
    batch_days: &[NaiveDate],
    batch_rows: &[CustomerDayRow],
    granularity: Granularity,
    from_ms: i64,
    to_ms: i64,
) -> Vec<Point> {
    let in_range = |start_ms: i64| start_ms >= from_ms && start_ms < to_ms;
    let width_ms = granularity.width_ms();
    let mut points: Vec<Point> = Vec::new();
    let batch: BTreeSet<NaiveDate> = if granularity == Granularity::Day { batch_days.iter().copied().collect() } else { BTreeSet::new() };
    for &date in &batch {
        let start_ms = days.start_ms(date);
        if !in_range(start_ms) {
            continue;
        }
        let row = batch_rows.iter().find(|row| row.date == date);
        points.push(Point {
            start_ms,
            sum: row.map_or(0.0, |row| row.total),
            count: row.map_or(0, |row| row.count),
            min: row.map(|row| row.min),
            max: row.map(|row| row.max),
            closed: true,
            source: Source::Batch,
            completeness: row.and_then(CustomerDayRow::completeness),
            suspect: Some(row.map_or(0, |row| row.suspect_intervals)),
            edited: Some(row.map_or(0, |row| row.edited_intervals)),
            estimated: Some(row.map_or(0, |row| row.estimated_intervals)),
        });
    }
    points.extend(
        windows
            .iter()
            .filter(|window| window.slot.width_ms == width_ms && in_range(window.slot.start_ms))
            .filter(|window| !batch.contains(&days.date_of(window.slot.start_ms)))
            .map(Point::from_window),
    );
    points.sort_by_key(|point| point.start_ms);
    points
}

/// A region's series of one utility in `[from_ms, to_ms)` at hour or day
/// granularity: the batch's hours on its days (summed per day for days), the
/// stream's windows of that width on the others.
pub fn region_series(
    region: Region,
    windows: &[StoredWindow],
    batch_days: &[NaiveDate],
    batch_hours: &[RegionHourRow],
    granularity: Granularity,
    from_ms: i64,
    to_ms: i64,
) -> Vec<Point> {
    let in_range = |start_ms: i64| start_ms >= from_ms && start_ms < to_ms;
    let batch: BTreeSet<NaiveDate> = batch_days.iter().copied().collect();
    let days = SeriesDays::Local(region);
    let mut points: Vec<Point> = Vec::new();
    for &date in &batch {
        let hours = batch_hours.iter().filter(|row| row.date == date);
        let point = |start_ms, sum, count| Point { start_ms, sum, count, min: None, max: None, closed: true, source: Source::Batch, completeness: None, suspect: None, edited: None, estimated: None };
        match granularity {
            Granularity::Day => {
                let (sum, count) = hours.fold((0.0, 0), |(sum, count), row| (sum + row.total, count + row.count));
                points.push(point(days.start_ms(date), sum, count));
            }
            Granularity::Hour | Granularity::Minute => {
                points.extend(hours.map(|row| point(days.start_ms(date) + i64::from(row.hour) * HOUR_MS, row.total, row.count)));
            }
        }
    }
    points.retain(|point| in_range(point.start_ms));
    points.extend(
        windows
            .iter()
            .filter(|window| window.slot.width_ms == granularity.width_ms() && in_range(window.slot.start_ms))
            .filter(|window| !batch.contains(&days.date_of(window.slot.start_ms)))
            .map(Point::from_window),
    );
    points.sort_by_key(|point| point.start_ms);
    points
}

#[cfg(test)]
mod tests {
    use auth_core::Utility;
    use auth_core::ports::{Aggregate, WindowSlot};

    use super::*;

    const D0: i64 = 1_795_824_000_000; // 2026-11-28T00:00Z

    fn window(width_ms: i64, start_ms: i64, sum: f64) -> StoredWindow {
        StoredWindow {
            utility: Utility::Electricity,
            slot: WindowSlot { width_ms, start_ms },
            aggregate: Aggregate { sum, count: 1, min: sum, max: sum },
            closed: true,
        }
    }

    #[test]
    fn batch_days_replace_the_stream_and_the_rest_is_the_stream() {
        let day = |offset: i64| date_of(D0 + offset * DAY_MS);
        // The stream still holds days -2 .. 0; the batch computed -3 .. -1 and
        // the customer used nothing on -3.
        let windows = [window(DAY_MS, D0 - 2 * DAY_MS, 10.0), window(DAY_MS, D0 - DAY_MS, 11.0), window(DAY_MS, D0, 5.0)];
        let rows = [
            CustomerDayRow { date: day(-2), total: 12.0, min: 1.0, max: 2.0, count: 12, expected_intervals: 0, received_intervals: 0, suspect_intervals: 2, edited_intervals: 1, estimated_intervals: 0 },
            CustomerDayRow { date: day(-1), total: 13.0, min: 1.0, max: 2.0, count: 13, expected_intervals: 24, received_intervals: 18, suspect_intervals: 0, edited_intervals: 0, estimated_intervals: 6 },
        ];
        let points = customer_series(SeriesDays::Utc, &windows, &[day(-3), day(-2), day(-1)], &rows, Granularity::Day, D0 - 3 * DAY_MS, D0 + DAY_MS);
        let summary: Vec<(i64, f64, Source)> = points.iter().map(|p| ((p.start_ms - D0) / DAY_MS, p.sum, p.source)).collect();
        assert_eq!(
            summary,
            vec![(-3, 0.0, Source::Batch), (-2, 12.0, Source::Batch), (-1, 13.0, Source::Batch), (0, 5.0, Source::Stream)]
        );
        let completeness: Vec<Option<f64>> = points.iter().map(|p| p.completeness).collect();
        assert_eq!(completeness, vec![None, None, Some(0.75), None], "only where the registry expected intervals");
        let suspect: Vec<Option<u64>> = points.iter().map(|p| p.suspect).collect();
        assert_eq!(suspect, vec![Some(0), Some(2), Some(0), None], "on every batch day");
        let edited: Vec<Option<u64>> = points.iter().map(|p| p.edited).collect();
        assert_eq!(edited, vec![Some(0), Some(1), Some(0), None]);
        let estimated: Vec<Option<u64>> = points.iter().map(|p| p.estimated).collect();
        assert_eq!(estimated, vec![Some(0), Some(0), Some(6), None]);
    }

    #[test]
    fn minutes_come_from_the_stream_within_the_range() {
        let windows = [window(MINUTE_MS, D0, 1.0), window(MINUTE_MS, D0 + MINUTE_MS, 2.0), window(HOUR_MS, D0, 3.0)];
        let points = customer_series(SeriesDays::Utc, &windows, &[date_of(D0)], &[], Granularity::Minute, D0 + MINUTE_MS, D0 + HOUR_MS);
        assert_eq!(points.iter().map(|p| p.sum).collect::<Vec<_>>(), vec![2.0]);
    }

    #[test]
    fn region_days_sum_the_batch_hours_of_local_days() {
        let california = Region::from_code("US-CA").expect("California");
        // 2026-11-28 00:00 PST.
        let d0 = D0 + 8 * HOUR_MS;
        let yesterday = local_day::date_of(california, d0 - DAY_MS);
        let hours = [
            RegionHourRow { date: yesterday, hour: 0, total: 1.5, count: 3 },
            RegionHourRow { date: yesterday, hour: 23, total: 2.5, count: 4 },
        ];
        let windows = [window(DAY_MS, d0 - DAY_MS, 99.0), window(DAY_MS, d0, 7.0), window(HOUR_MS, d0, 7.0)];
        let days = region_series(california, &windows, &[yesterday], &hours, Granularity::Day, d0 - DAY_MS, d0 + DAY_MS);
        assert_eq!(days.iter().map(|p| (p.sum, p.count, p.source)).collect::<Vec<_>>(), vec![(4.0, 7, Source::Batch), (7.0, 1, Source::Stream)]);
        assert_eq!(days[0].start_ms, d0 - DAY_MS, "the batch day starts at local midnight");
        let hourly = region_series(california, &windows, &[yesterday], &hours, Granularity::Hour, d0 - DAY_MS, d0 + DAY_MS);
        let starts: Vec<i64> = hourly.iter().map(|p| (p.start_ms - d0) / HOUR_MS).collect();
        assert_eq!(starts, vec![-24, -1, 0]);
    }

    #[test]
    fn a_fall_back_days_hours_run_to_24() {
        let california = Region::from_code("US-CA").expect("California");
        let fall_back = NaiveDate::from_ymd_opt(2026, 11, 1).expect("a date");
        let start = local_day::day_start_ms(california, fall_back);
        let hours: Vec<RegionHourRow> = (0..25).map(|hour| RegionHourRow { date: fall_back, hour, total: 1.0, count: 1 }).collect();
        let hourly = region_series(california, &[], &[fall_back], &hours, Granularity::Hour, start, start + MAX_DAY_MS);
        assert_eq!(hourly.len(), 25);
        assert_eq!(hourly.last().map(|p| p.start_ms), Some(start + 24 * HOUR_MS), "the 25th hour of the day");
        let daily = region_series(california, &[], &[fall_back], &hours, Granularity::Day, start, start + MAX_DAY_MS);
        assert_eq!(daily.iter().map(|p| (p.start_ms, p.sum)).collect::<Vec<_>>(), vec![(start, 25.0)]);
    }
}
