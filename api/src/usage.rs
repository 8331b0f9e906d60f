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
//! and a batch hour is the hour since it (a day has 23 to 25). UTC days are
//! a query option ([`customer_utc_days`], [`region_utc_days`]): a UTC day is
//! the end of one local day and the start of the next, each share from the
//! batch when it computed that local day, else from the stream's hours.

use std::collections::BTreeSet;
use std::ops::Range;

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

/// One local day's share of a UTC day.
#[derive(Debug, Clone, Copy, Default)]
struct Share {
    sum: f64,
    count: u64,
}

/// Day points of the UTC days starting in `[from_ms, to_ms)`. A UTC day is
/// the end of one local day of `region` and the start of the next
/// ([`local_day::hours_in_first_utc_date`]): the share of a local day the
/// batch computed comes from `batch_share(date, share's instants, whether
/// it is the day's first part)`, `None` when the batch cannot split it; the
/// share of any other local day is the stream's `hours` (hour windows) in
/// it. The store keeps hour windows from `kept_since_ms` on: a UTC
/// day with a share the batch cannot give and the store no longer holds is
/// left out, as is one with nothing from either. UTC day points carry no
/// min, max or quality: those are the local days'.
#[allow(clippy::too_many_arguments)]
fn utc_day_points(
    region: Region,
    batch_days: &[NaiveDate],
    batch_share: impl Fn(NaiveDate, Range<i64>, bool) -> Option<Share>,
    hours: &[StoredWindow],
    kept_since_ms: i64,
    from_ms: i64,
    to_ms: i64,
    now_ms: i64,
) -> Vec<Point> {
    let batch: BTreeSet<NaiveDate> = batch_days.iter().copied().collect();
    let mut points = Vec::new();
    let mut day_start = from_ms.div_euclid(DAY_MS) * DAY_MS;
    if day_start < from_ms {
        day_start += DAY_MS;
    }
    'days: while day_start < to_ms {
        let utc_day = day_start..day_start + DAY_MS;
        day_start += DAY_MS;
        let mut point = Point {
            start_ms: utc_day.start,
            sum: 0.0,
            count: 0,
            min: None,
            max: None,
            closed: utc_day.end <= now_ms,
            source: Source::Batch,
            completeness: None,
            suspect: None,
            edited: None,
            estimated: None,
        };
        let mut has_data = false;
        let mut date = local_day::date_of(region, utc_day.start);
        while date <= local_day::date_of(region, utc_day.end - 1) {
            let local = local_day::day_range(region, date);
            let part = local.start.max(utc_day.start)..local.end.min(utc_day.end);
            let share = if batch.contains(&date) {
                let Some(share) = batch_share(date, part.clone(), part.start == local.start) else { continue 'days };
                share
            } else {
                if part.start < kept_since_ms {
                    continue 'days;
                }
                point.source = Source::Stream;
                let mut share = Share::default();
                for window in hours.iter().filter(|window| part.contains(&window.slot.start_ms)) {
                    share.sum += window.aggregate.sum;
                    share.count += window.aggregate.count;
                    point.closed &= window.closed;
                    has_data = true;
                }
                share
            };
            has_data |= batch.contains(&date);
            point.sum += share.sum;
            point.count += share.count;
            let Some(next) = date.succ_opt() else { break };
            date = next;
        }
        if has_data {
            points.push(point);
        }
    }
    points
}

/// A customer's UTC days of one utility in `[from_ms, to_ms)` ([`utc_day_points`]):
/// its local days are `region`'s, `windows` its stream windows of the utility
/// (the store keeps `recent_windows` of each width), `batch_days` the days the
/// batch computed and `batch_rows` the customer's rows among them.
#[allow(clippy::too_many_arguments)]
pub fn customer_utc_days(
    region: Region,
    windows: &[StoredWindow],
    recent_windows: usize,
    batch_days: &[NaiveDate],
    batch_rows: &[CustomerDayRow],
    from_ms: i64,
    to_ms: i64,
    now_ms: i64,
) -> Vec<Point> {
    let hours: Vec<StoredWindow> = windows.iter().filter(|window| window.slot.width_ms == HOUR_MS).copied().collect();
    let batch_share = |date: NaiveDate, _: Range<i64>, first: bool| match batch_rows.iter().find(|row| row.date == date) {
        None => Some(Share::default()),
        Some(row) => row.first_utc_date.map(|(first_total, first_count)| {
            if first { Share { sum: first_total, count: first_count } } else { Share { sum: row.total - first_total, count: row.count - first_count } }
        }),
    };
    let kept_since_ms = hours_kept_since_ms(hours.iter().map(|window| window.slot.start_ms), recent_windows);
    utc_day_points(region, batch_days, batch_share, &hours, kept_since_ms, from_ms, to_ms, now_ms)
}

/// Where the store's hour windows are complete from: it keeps the newest
/// `recent_windows` hour starts of a customer's series, and over all regions
/// for a region's (`starts` are then every region's hour starts of the utility).
pub fn hours_kept_since_ms(starts: impl IntoIterator<Item = i64>, recent_windows: usize) -> i64 {
    let distinct: BTreeSet<i64> = starts.into_iter().collect();
    if distinct.len() >= recent_windows { distinct.iter().rev().nth(recent_windows.saturating_sub(1)).copied().unwrap_or(i64::MIN) } else { i64::MIN }
}

/// A region's UTC days of one utility in `[from_ms, to_ms)` ([`utc_day_points`]):
/// `hours` are the stream's hour windows of the region and utility, complete
/// from `kept_since_ms` ([`hours_kept_since_ms`]), `batch_hours`
/// the batch's hours of its local days.
#[allow(clippy::too_many_arguments)]
pub fn region_utc_days(
    region: Region,
    hours: &[StoredWindow],
    kept_since_ms: i64,
    batch_days: &[NaiveDate],
    batch_hours: &[RegionHourRow],
    from_ms: i64,
    to_ms: i64,
    now_ms: i64,
) -> Vec<Point> {
    let batch_share = |date: NaiveDate, part: Range<i64>, _: bool| {
        let start = local_day::day_start_ms(region, date);
        let in_part = batch_hours.iter().filter(|row| row.date == date && part.contains(&(start + i64::from(row.hour) * HOUR_MS)));
        Some(in_part.fold(Share::default(), |share, row| Share { sum: share.sum + row.total, count: share.count + row.count }))
    };
    utc_day_points(region, batch_days, batch_share, hours, kept_since_ms, from_ms, to_ms, now_ms)
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
            CustomerDayRow { date: day(-2), total: 12.0, min: 1.0, max: 2.0, count: 12, expected_intervals: 0, received_intervals: 0, suspect_intervals: 2, edited_intervals: 1, estimated_intervals: 0, first_utc_date: None },
            CustomerDayRow { date: day(-1), total: 13.0, min: 1.0, max: 2.0, count: 13, expected_intervals: 24, received_intervals: 18, suspect_intervals: 0, edited_intervals: 0, estimated_intervals: 6, first_utc_date: None },
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

    fn hour(start_ms: i64, sum: f64, closed: bool) -> StoredWindow {
        StoredWindow { closed, ..window(HOUR_MS, start_ms, sum) }
    }

    fn day_row(date: NaiveDate, total: f64, first_utc_date: Option<(f64, u64)>) -> CustomerDayRow {
        CustomerDayRow {
            date,
            total,
            min: 1.0,
            max: 1.0,
            count: total as u64,
            expected_intervals: 0,
            received_intervals: 0,
            suspect_intervals: 0,
            edited_intervals: 0,
            estimated_intervals: 0,
            first_utc_date,
        }
    }

    #[test]
    fn a_utc_day_is_the_end_of_one_local_day_and_the_start_of_the_next() {
        // California's days start at 08:00 UTC: UTC 11-27 is local 11-26 from
        // 16:00 and local 11-27 to 16:00.
        let california = Region::from_code("US-CA").expect("California");
        let (nov26, nov27) = (date_of(D0 - 2 * DAY_MS), date_of(D0 - DAY_MS));
        let rows = [day_row(nov26, 10.0, Some((6.0, 6))), day_row(nov27, 20.0, Some((15.0, 15)))];
        // Local 11-28 from the stream: two hours before UTC midnight; an hour
        // of local 11-27, which the batch computed, does not count.
        let windows = [hour(D0 + 2 * HOUR_MS, 7.0, true), hour(D0 + 8 * HOUR_MS, 3.0, true), hour(D0 + 20 * HOUR_MS, 2.0, false), window(DAY_MS, D0 + 8 * HOUR_MS, 5.0)];
        let now = D0 + 21 * HOUR_MS;
        let points = customer_utc_days(california, &windows, 60, &[nov26, nov27], &rows, D0 - DAY_MS, D0 + DAY_MS, now);
        let summary: Vec<(i64, f64, u64, Source, bool)> = points.iter().map(|p| ((p.start_ms - D0) / DAY_MS, p.sum, p.count, p.source, p.closed)).collect();
        assert_eq!(summary, vec![(-1, 4.0 + 15.0, 19, Source::Batch, true), (0, 5.0 + 3.0 + 2.0, 7, Source::Stream, false)]);
        assert!(points.iter().all(|p| p.min.is_none() && p.completeness.is_none()), "min, max and quality are the local days'");

        let unsplit = [day_row(nov26, 10.0, None), rows[1]];
        let points = customer_utc_days(california, &windows, 60, &[nov26, nov27], &unsplit, D0 - DAY_MS, D0 + DAY_MS, now);
        assert_eq!(points.iter().map(|p| p.start_ms).collect::<Vec<_>>(), vec![D0], "a day computed before the split is left out");

        // The store keeps 3 hours per series: the hours before D0 + 2 h may be gone.
        let points = customer_utc_days(california, &windows, 3, &[nov26], &rows[..1], D0 - DAY_MS, D0 + DAY_MS, now);
        assert!(points.is_empty(), "local 11-27's hours before D0 are no longer kept, and the batch did not compute it: {points:?}");
    }

    #[test]
    fn a_regions_utc_days_around_a_fall_back_day_have_24_hours() {
        let california = Region::from_code("US-CA").expect("California");
        let dates: Vec<NaiveDate> = ["2026-10-31", "2026-11-01", "2026-11-02"].iter().map(|text| NaiveDate::parse_from_str(text, "%Y-%m-%d").expect("a date")).collect();
        let hours: Vec<RegionHourRow> = dates
            .iter()
            .flat_map(|&date| {
                let day = local_day::day_range(california, date);
                (0..((day.end - day.start) / HOUR_MS) as u8).map(move |hour| RegionHourRow { date, hour, total: 1.0, count: 1 })
            })
            .collect();
        let first = day_start_ms(dates[1]);
        let points = region_utc_days(california, &[], i64::MIN, &dates, &hours, first, first + 2 * DAY_MS, first + 3 * DAY_MS);
        let summary: Vec<(i64, f64, Source)> = points.iter().map(|p| (p.start_ms, p.sum, p.source)).collect();
        assert_eq!(summary, vec![(first, 24.0, Source::Batch), (first + DAY_MS, 24.0, Source::Batch)], "local 11-01 has 25 hours, UTC days 24");
        assert_eq!(hours_kept_since_ms([5, 1, 3, 3, 4], 3), 3, "the third newest start");
        assert_eq!(hours_kept_since_ms([5, 1], 3), i64::MIN, "none lost yet");
    }
}
