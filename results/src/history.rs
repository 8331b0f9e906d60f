//! The batch's results as the API reads them: closed days, recomputed from
//! the master data.
//!
//! A day and utility belongs to the batch once it has a reconciliation row:
//! the batch writes a date's rows in one transaction. A customer without a
//! row on such a day used nothing that day.

use auth_core::{Region, Utility};
use chrono::NaiveDate;
use serde::Serialize;

use crate::{Database, ResultsError, parse_utility, query_error};

/// One customer's day as the batch computed it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CustomerDayRow {
    pub date: NaiveDate,
    pub total: f64,
    pub min: f64,
    pub max: f64,
    pub count: u64,
    /// Intervals the registry expected of the customer's meters (0: none registered).
    pub expected_intervals: u64,
    /// Expected intervals that have a reading.
    pub received_intervals: u64,
    /// Readings the batch's validation rules flagged suspect (they count in `total`).
    pub suspect_intervals: u64,
    /// Intervals whose value an operator's edit set ([`crate::edits`]).
    pub edited_intervals: u64,
    /// Missing intervals the batch estimated (they count in `total`, not in `count`).
    pub estimated_intervals: u64,
    /// The part of `total` and `count` in the UTC date the local day starts
    /// on; `None` on a day computed before the batch split it.
    pub first_utc_date: Option<(f64, u64)>,
}

impl CustomerDayRow {
    /// Received over expected intervals; `None` when the registry expected nothing.
    pub fn completeness(&self) -> Option<f64> {
        (self.expected_intervals > 0).then(|| self.received_intervals as f64 / self.expected_intervals as f64)
    }
}

/// A meter that missed intervals of a day, as the batch found it.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct MeterGapRow {
    #[serde(serialize_with = "serialize_date")]
    pub date: NaiveDate,
    pub utility: Utility,
    pub meter_id: u64,
    pub customer_id: u64,
    pub region: Region,
    pub interval_secs: u32,
    pub expected_intervals: u64,
    pub received_intervals: u64,
    pub missing_intervals: u64,
    /// Received over expected.
    pub completeness: f64,
    /// The meter's last reading that day, UTC ms; `None`: it sent nothing.
    pub last_reading_ms: Option<i64>,
    /// Missing intervals the batch estimated.
    pub estimated_intervals: u64,
}

/// A meter whose readings of a day the batch's validation rules flagged.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SuspectMeterRow {
    #[serde(serialize_with = "serialize_date")]
    pub date: NaiveDate,
    pub utility: Utility,
    pub meter_id: u64,
    pub customer_id: u64,
    pub region: Region,
    /// Flagged readings, by any rule.
    pub suspect_intervals: u64,
    /// Readings outside the plausible bounds of the meter's installation.
    pub out_of_range: u64,
    /// Readings far above the meter's typical maximum of the day.
    pub spikes: u64,
    /// Readings in a run of one non-zero value.
    pub frozen: u64,
    /// A cumulative meter's flagged registers: rollovers, resets and first registers.
    pub register_events: u64,
    /// The largest flagged value, in the utility's unit.
    pub max_value: f64,
    /// The first and last flagged reading, UTC ms.
    pub first_ms: i64,
    pub last_ms: i64,
}

/// One of a meter's readings of a day the batch's validation rules flagged.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SuspectReadingRow {
    pub utility: Utility,
    pub customer_id: u64,
    pub ts_ms: i64,
    pub value: f64,
    /// `range`, `spike`, `frozen`, `rollover`, `reset` or `registerStart`.
    pub rule: String,
}

/// One of a meter's intervals of a day whose value an operator's edit set,
/// as the batch applied it.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct EditedReadingRow {
    pub utility: Utility,
    pub customer_id: u64,
    pub ts_ms: i64,
    /// The reading the edit replaced; `None`: the meter sent none.
    pub read_value: Option<f64>,
    pub value: f64,
}

/// Consecutive intervals of a meter's day that it missed and the batch
/// estimated by one method.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct EstimatedRunRow {
    pub utility: Utility,
    pub customer_id: u64,
    /// The start of the first interval and the end of the last, UTC ms.
    pub from_ms: i64,
    pub to_ms: i64,
    pub intervals: u64,
    /// The sum of the estimates, in the utility's unit.
    pub total: f64,
    /// `interpolated` or `profile`.
    pub method: String,
}

/// A meter's day as the batch found it: its gaps (none when it read every
/// interval) and its flagged, edited and estimated intervals, oldest first.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct MeterDayRow {
    pub gaps: Vec<MeterGapRow>,
    pub suspect: Vec<SuspectReadingRow>,
    pub edited: Vec<EditedReadingRow>,
    pub estimated: Vec<EstimatedRunRow>,
}

/// One region's hour as the batch computed it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RegionHourRow {
    pub date: NaiveDate,
    pub hour: u8,
    pub total: f64,
    pub count: u64,
}

/// One of the top customers of a region and day.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TopRow {
    pub position: u32,
    pub customer_id: u64,
    pub total: f64,
}

/// A successful batch run of one date.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BatchRunRow {
    pub finished_at_ms: i64,
    pub duration_ms: i64,
}

/// The batch's reconciliation of one day and utility.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ReconciliationRow {
    #[serde(serialize_with = "serialize_date")]
    pub date: NaiveDate,
    pub utility: Utility,
    pub batch_total: f64,
    pub batch_readings: u64,
    /// The part of `batch_total` that is estimates: intervals no reading filled.
    pub batch_estimated: f64,
    pub stream_total: Option<f64>,
    pub drift: Option<f64>,
    pub computed_at_ms: i64,
}

fn serialize_date<S: serde::Serializer>(date: &NaiveDate, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.collect_str(&date.format("%Y-%m-%d"))
}

/// A `meter_gaps` row: utility, meter, customer, region, interval, expected, received, last reading, estimated.
type GapRow = (String, i64, i64, String, i64, i64, i64, Option<i64>, i64);

/// The columns of a [`GapRow`].
const GAP_COLUMNS: &str =
    "utility, meter_id, customer_id, region, interval_secs, expected_intervals, received_intervals, last_reading_ms, estimated_intervals";

fn gap_row(date: NaiveDate, row: GapRow) -> Result<MeterGapRow, ResultsError> {
    let (utility, meter_id, customer_id, region, interval_secs, expected, received, last_reading_ms, estimated) = row;
    let expected_intervals = expected as u64;
    let received_intervals = received as u64;
    Ok(MeterGapRow {
        date,
        utility: parse_utility(&utility)?,
        meter_id: meter_id as u64,
        customer_id: customer_id as u64,
        region: crate::parse_region(&region)?,
        interval_secs: u32::try_from(interval_secs).map_err(|_| ResultsError::Stored(format!("interval {interval_secs} s")))?,
        expected_intervals,
        received_intervals,
        missing_intervals: expected_intervals.saturating_sub(received_intervals),
        completeness: if expected_intervals == 0 { 1.0 } else { received_intervals as f64 / expected_intervals as f64 },
        last_reading_ms,
        estimated_intervals: estimated as u64,
    })
}

fn date_text(date: NaiveDate) -> String {
    date.format("%Y-%m-%d").to_string()
}

fn parse_date(text: &str) -> Result<NaiveDate, ResultsError> {
    NaiveDate::parse_from_str(text, "%Y-%m-%d").map_err(|_| ResultsError::Stored(format!("date {text:?}")))
}

impl Database {
    /// The days from `from` to `to` (inclusive) the batch has computed for
    /// `utility` after they were over: at least `settle_ms` after every
    /// region's local day of them ended,
    /// so that late readings had the time to reach the master data. A day
    /// computed earlier (today's, in `auth up`) is not final.
    pub async fn batch_days(&self, utility: Utility, from: NaiveDate, to: NaiveDate, settle_ms: i64) -> Result<Vec<NaiveDate>, ResultsError> {
        let sql = format!(
            "SELECT usage_date, computed_at_ms FROM reconciliation WHERE utility = {} AND usage_date >= {} AND usage_date <= {} ORDER BY usage_date",
            self.placeholder(1),
            self.placeholder(2),
            self.placeholder(3)
        );
        let rows: Vec<(String, i64)> = sqlx::query_as(&sql)
            .bind(utility.as_str())
            .bind(date_text(from))
            .bind(date_text(to))
            .fetch_all(self.pool())
            .await
            .map_err(query_error("reconciliation"))?;
        let mut days = Vec::with_capacity(rows.len());
        for (text, computed_at_ms) in rows {
            let date = parse_date(&text)?;
            // Every region's local day of the date had ended (as the batch settles a day).
            let day_end_ms = auth_core::local_day::LocalDays::of(date).span().end;
            if computed_at_ms >= day_end_ms.saturating_add(settle_ms) {
                days.push(date);
            }
        }
        Ok(days)
    }

    /// A customer's days from `from` to `to` (inclusive), oldest first.
    pub async fn customer_days(
        &self,
        customer_id: u64,
        utility: Utility,
        from: NaiveDate,
        to: NaiveDate,
    ) -> Result<Vec<CustomerDayRow>, ResultsError> {
        let sql = format!(
            "SELECT usage_date, total, min_value, max_value, readings, expected_intervals, received_intervals, suspect_intervals, \
             edited_intervals, estimated_intervals, first_utc_date_total, first_utc_date_readings FROM daily_customer_usage \
             WHERE customer_id = {} AND utility = {} AND usage_date >= {} AND usage_date <= {} ORDER BY usage_date",
            self.placeholder(1),
            self.placeholder(2),
            self.placeholder(3),
            self.placeholder(4)
        );
        type DayRow = (String, f64, f64, f64, i64, i64, i64, i64, i64, i64, Option<f64>, Option<i64>);
        let rows: Vec<DayRow> = sqlx::query_as(&sql)
            .bind(customer_id as i64)
            .bind(utility.as_str())
            .bind(date_text(from))
            .bind(date_text(to))
            .fetch_all(self.pool())
            .await
            .map_err(query_error("daily_customer_usage"))?;
        rows.into_iter()
            .map(|(date, total, min, max, count, expected, received, suspect, edited, estimated, first_total, first_count)| {
                Ok(CustomerDayRow {
                    date: parse_date(&date)?,
                    total,
                    min,
                    max,
                    count: count as u64,
                    expected_intervals: expected as u64,
                    received_intervals: received as u64,
                    suspect_intervals: suspect as u64,
                    edited_intervals: edited as u64,
                    estimated_intervals: estimated as u64,
                    first_utc_date: first_total.zip(first_count).map(|(total, count)| (total, count as u64)),
                })
            })
            .collect()
    }

    /// The meters that missed intervals on `date` (of `utility`, or of every
    /// utility), most missing first, at most `limit`.
    pub async fn meter_gaps(&self, date: NaiveDate, utility: Option<Utility>, limit: u32) -> Result<Vec<MeterGapRow>, ResultsError> {
        let utility_filter = match utility {
            Some(_) => format!(" AND utility = {}", self.placeholder(2)),
            None => String::new(),
        };
        let sql = format!(
            "SELECT {GAP_COLUMNS} FROM meter_gaps WHERE usage_date = {}{utility_filter} \
             ORDER BY expected_intervals - received_intervals DESC, utility, meter_id, customer_id LIMIT {limit}",
            self.placeholder(1)
        );
        let mut query = sqlx::query_as(&sql).bind(date_text(date));
        if let Some(utility) = utility {
            query = query.bind(utility.as_str());
        }
        let rows: Vec<GapRow> = query.fetch_all(self.pool()).await.map_err(query_error("meter_gaps"))?;
        rows.into_iter().map(|row| gap_row(date, row)).collect()
    }

    /// One meter's gaps, flagged, edited and estimated intervals on `date`.
    pub async fn meter_day(&self, meter_id: u64, date: NaiveDate) -> Result<MeterDayRow, ResultsError> {
        let filter = format!("WHERE usage_date = {} AND meter_id = {}", self.placeholder(1), self.placeholder(2));
        let sql = format!("SELECT {GAP_COLUMNS} FROM meter_gaps {filter} ORDER BY utility, customer_id");
        let rows: Vec<GapRow> =
            sqlx::query_as(&sql).bind(date_text(date)).bind(meter_id as i64).fetch_all(self.pool()).await.map_err(query_error("meter_gaps"))?;
        let gaps = rows.into_iter().map(|row| gap_row(date, row)).collect::<Result<_, _>>()?;
        let sql = format!("SELECT utility, customer_id, ts_ms, reading_value, rule FROM suspect_intervals {filter} ORDER BY ts_ms, utility, customer_id");
        let rows: Vec<(String, i64, i64, f64, String)> = sqlx::query_as(&sql)
            .bind(date_text(date))
            .bind(meter_id as i64)
            .fetch_all(self.pool())
            .await
            .map_err(query_error("suspect_intervals"))?;
        let suspect = rows
            .into_iter()
            .map(|(utility, customer_id, ts_ms, value, rule)| {
                Ok(SuspectReadingRow { utility: parse_utility(&utility)?, customer_id: customer_id as u64, ts_ms, value, rule })
            })
            .collect::<Result<_, ResultsError>>()?;
        let sql = format!(
            "SELECT utility, customer_id, ts_ms, read_value, edited_value FROM edited_intervals {filter} ORDER BY ts_ms, utility, customer_id"
        );
        let rows: Vec<(String, i64, i64, Option<f64>, f64)> = sqlx::query_as(&sql)
            .bind(date_text(date))
            .bind(meter_id as i64)
            .fetch_all(self.pool())
            .await
            .map_err(query_error("edited_intervals"))?;
        let edited = rows
            .into_iter()
            .map(|(utility, customer_id, ts_ms, read_value, value)| {
                Ok(EditedReadingRow { utility: parse_utility(&utility)?, customer_id: customer_id as u64, ts_ms, read_value, value })
            })
            .collect::<Result<_, ResultsError>>()?;
        let sql = format!(
            "SELECT utility, customer_id, from_ms, to_ms, intervals, estimated_total, method FROM estimated_runs {filter} \
             ORDER BY from_ms, utility, customer_id"
        );
        let rows: Vec<(String, i64, i64, i64, i64, f64, String)> = sqlx::query_as(&sql)
            .bind(date_text(date))
            .bind(meter_id as i64)
            .fetch_all(self.pool())
            .await
            .map_err(query_error("estimated_runs"))?;
        let estimated = rows
            .into_iter()
            .map(|(utility, customer_id, from_ms, to_ms, intervals, total, method)| {
                Ok(EstimatedRunRow {
                    utility: parse_utility(&utility)?,
                    customer_id: customer_id as u64,
                    from_ms,
                    to_ms,
                    intervals: intervals as u64,
                    total,
                    method,
                })
            })
            .collect::<Result<_, ResultsError>>()?;
        Ok(MeterDayRow { gaps, suspect, edited, estimated })
    }

    /// The meters with readings flagged suspect on `date` (of `utility`, or
    /// of every utility), most flagged first, at most `limit`.
    pub async fn suspect_meters(&self, date: NaiveDate, utility: Option<Utility>, limit: u32) -> Result<Vec<SuspectMeterRow>, ResultsError> {
        let utility_filter = match utility {
            Some(_) => format!(" AND utility = {}", self.placeholder(2)),
            None => String::new(),
        };
        let sql = format!(
            "SELECT utility, meter_id, customer_id, region, COUNT(*), \
             COUNT(CASE WHEN rule = 'range' THEN 1 END), COUNT(CASE WHEN rule = 'spike' THEN 1 END), \
             COUNT(CASE WHEN rule = 'frozen' THEN 1 END), \
             COUNT(CASE WHEN rule IN ('rollover', 'reset', 'registerStart') THEN 1 END), \
             MAX(reading_value), MIN(ts_ms), MAX(ts_ms) \
             FROM suspect_intervals WHERE usage_date = {}{utility_filter} \
             GROUP BY utility, meter_id, customer_id, region \
             ORDER BY COUNT(*) DESC, utility, meter_id, customer_id LIMIT {limit}",
            self.placeholder(1)
        );
        let mut query = sqlx::query_as(&sql).bind(date_text(date));
        if let Some(utility) = utility {
            query = query.bind(utility.as_str());
        }
        type SuspectRow = (String, i64, i64, String, i64, i64, i64, i64, i64, f64, i64, i64);
        let rows: Vec<SuspectRow> = query.fetch_all(self.pool()).await.map_err(query_error("suspect_intervals"))?;
        rows.into_iter()
            .map(|(utility, meter_id, customer_id, region, suspect, out_of_range, spikes, frozen, register_events, max_value, first_ms, last_ms)| {
                Ok(SuspectMeterRow {
                    date,
                    utility: parse_utility(&utility)?,
                    meter_id: meter_id as u64,
                    customer_id: customer_id as u64,
                    region: crate::parse_region(&region)?,
                    suspect_intervals: suspect as u64,
                    out_of_range: out_of_range as u64,
                    spikes: spikes as u64,
                    frozen: frozen as u64,
                    register_events: register_events as u64,
                    max_value,
                    first_ms,
                    last_ms,
                })
            })
            .collect()
    }

    /// A region's hours from `from` to `to` (inclusive), oldest first.
    pub async fn region_hours(
        &self,
        region: Region,
        utility: Utility,
        from: NaiveDate,
        to: NaiveDate,
    ) -> Result<Vec<RegionHourRow>, ResultsError> {
        let sql = format!(
            "SELECT usage_date, hour, total, readings FROM hourly_region_usage \
             WHERE region = {} AND utility = {} AND usage_date >= {} AND usage_date <= {} ORDER BY usage_date, hour",
            self.placeholder(1),
            self.placeholder(2),
            self.placeholder(3),
            self.placeholder(4)
        );
        let rows: Vec<(String, i64, f64, i64)> = sqlx::query_as(&sql)
            .bind(region.code())
            .bind(utility.as_str())
            .bind(date_text(from))
            .bind(date_text(to))
            .fetch_all(self.pool())
            .await
            .map_err(query_error("hourly_region_usage"))?;
        rows.into_iter()
            .map(|(date, hour, total, count)| {
                let hour = u8::try_from(hour).map_err(|_| ResultsError::Stored(format!("hour {hour}")))?;
                Ok(RegionHourRow { date: parse_date(&date)?, hour, total, count: count as u64 })
            })
            .collect()
    }

    /// The top customers of a region, utility and day, first first.
    pub async fn top_customers(&self, region: Region, utility: Utility, date: NaiveDate) -> Result<Vec<TopRow>, ResultsError> {
        let sql = format!(
            "SELECT position, customer_id, total FROM top_customers \
             WHERE region = {} AND utility = {} AND usage_date = {} ORDER BY position",
            self.placeholder(1),
            self.placeholder(2),
            self.placeholder(3)
        );
        let rows: Vec<(i64, i64, f64)> = sqlx::query_as(&sql)
            .bind(region.code())
            .bind(utility.as_str())
            .bind(date_text(date))
            .fetch_all(self.pool())
            .await
            .map_err(query_error("top_customers"))?;
        Ok(rows
            .into_iter()
            .map(|(position, customer_id, total)| TopRow { position: position as u32, customer_id: customer_id as u64, total })
            .collect())
    }

    /// The newest day the batch computed for `utility` after it was over (see [`Database::batch_days`]).
    pub async fn newest_batch_day(&self, utility: Utility, settle_ms: i64) -> Result<Option<NaiveDate>, ResultsError> {
        let sql = format!("SELECT MIN(usage_date), MAX(usage_date) FROM reconciliation WHERE utility = {}", self.placeholder(1));
        let (oldest, newest): (Option<String>, Option<String>) =
            sqlx::query_as(&sql).bind(utility.as_str()).fetch_one(self.pool()).await.map_err(query_error("reconciliation"))?;
        let (Some(oldest), Some(newest)) = (oldest, newest) else { return Ok(None) };
        Ok(self.batch_days(utility, parse_date(&oldest)?, parse_date(&newest)?, settle_ms).await?.pop())
    }

    /// The newest `limit` reconciliation rows, newest day first.
    pub async fn recent_reconciliation(&self, limit: u32) -> Result<Vec<ReconciliationRow>, ResultsError> {
        let sql = format!(
            "SELECT usage_date, utility, batch_total, batch_readings, batch_estimated, stream_total, drift, computed_at_ms \
             FROM reconciliation ORDER BY usage_date DESC, utility LIMIT {limit}"
        );
        type Row = (String, String, f64, i64, f64, Option<f64>, Option<f64>, i64);
        let rows: Vec<Row> = sqlx::query_as(&sql).fetch_all(self.pool()).await.map_err(query_error("reconciliation"))?;
        rows.into_iter()
            .map(|(date, utility, batch_total, batch_readings, batch_estimated, stream_total, drift, computed_at_ms)| {
                Ok(ReconciliationRow {
                    date: parse_date(&date)?,
                    utility: parse_utility(&utility)?,
                    batch_total,
                    batch_readings: batch_readings as u64,
                    batch_estimated,
                    stream_total,
                    drift,
                    computed_at_ms,
                })
            })
            .collect()
    }

    /// The batch run that finished last, over every date; `None` before the first.
    pub async fn last_batch_run(&self) -> Result<Option<BatchRunRow>, ResultsError> {
        let sql = "SELECT finished_at_ms, duration_ms FROM batch_runs ORDER BY finished_at_ms DESC LIMIT 1";
        let row: Option<(i64, i64)> = sqlx::query_as(sql).fetch_optional(self.pool()).await.map_err(query_error("batch_runs"))?;
        Ok(row.map(|(finished_at_ms, duration_ms)| BatchRunRow { finished_at_ms, duration_ms }))
    }
}
