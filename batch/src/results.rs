//! The batch's side of the results database (`auth-results`): writing a
//! day's results and reading them back.

use auth_core::Utility;
use auth_core::local_day::LocalDays;
use auth_results::{Database, ResultsError, add, binding_optional_floats, parse_region, parse_utility, query_error};
use chrono::NaiveDate;
use sqlx::any::AnyArguments;

use crate::completeness::Expectations;
use crate::edits::Edits;
use crate::estimate::{EstimatedRun, EstimationMethod};
use crate::fold::{CustomerDay, DayOutputs, EditedInterval, MeterGap, RegionHour, SuspectInterval, SuspectRule, TopCustomer};

/// Rows per `INSERT` statement.
const ROWS_PER_INSERT: usize = 500;

/// The results database, as the batch uses it.
#[derive(Clone)]
pub struct ResultsDb {
    db: Database,
}

/// A reconciliation row: what the stream and the batch counted for a day and utility.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Reconciliation {
    pub utility: Utility,
    pub batch_total: f64,
    pub batch_readings: u64,
    /// The part of `batch_total` that is estimates: intervals no reading filled.
    pub batch_estimated: f64,
    /// `None` when the serving store no longer holds (or never held) the day.
    pub stream_total: Option<f64>,
    pub stream_readings: Option<u64>,
}

impl Reconciliation {
    /// Batch minus stream.
    pub fn drift(&self) -> Option<f64> {
        self.stream_total.map(|stream| self.batch_total - stream)
    }
}

/// What restating one day and utility in the serving store changed.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Restatement {
    pub customers_restated: u64,
    pub customers_changed: u64,
    /// Sum of batch minus stream over the changed customers.
    pub total_change: f64,
    /// The largest change of one customer's total, in absolute value.
    pub largest_change: f64,
}

impl ResultsDb {
    /// Connects and brings the schema up to date. A SQLite file (and its
    /// folder) is created when missing.
    pub async fn connect(url: &str) -> Result<Self, ResultsError> {
        Ok(Self::of(Database::connect(url).await?))
    }

    /// The batch's view of a database already connected (and migrated), e.g. the API's.
    pub fn of(db: Database) -> Self {
        Self { db }
    }

    /// What the registry stored in the database expects of `date` up to
    /// `until_ms` ([`Expectations::of_day`]), read from the installations of
    /// that part of the day only.
    pub async fn expectations(&self, date: NaiveDate, utilities: &[Utility], until_ms: i64) -> Result<Expectations, ResultsError> {
        let days = LocalDays::of(date);
        let span = days.span();
        let installed = self.db.installations_during(span.start, span.end.min(until_ms), utilities).await?;
        Ok(Expectations::of_day(installed, &days, utilities, until_ms))
    }

    /// What the database says of `date` besides its readings: the
    /// registry's expectations up to `until_ms` and the operators' edits in force.
    pub async fn day_inputs(&self, date: NaiveDate, utilities: &[Utility], until_ms: i64) -> Result<crate::DayInputs, ResultsError> {
        let expectations = self.expectations(date, utilities, until_ms).await?;
        let days = LocalDays::of(date);
        let span = days.span();
        let edits = self.db.edits_during(span.start, span.end, utilities).await?;
        let edits = Edits::new(edits.into_iter().filter(|edit| days.contains(edit.region, edit.ts_ms)));
        Ok(crate::DayInputs { days: std::sync::Arc::new(days), expectations: std::sync::Arc::new(expectations), edits: std::sync::Arc::new(edits) })
    }

    /// Replaces every result of `date` with `outputs` and `reconciliation`, in one transaction.
    #[tracing::instrument(level = "info", skip_all, fields(%date))]
    pub async fn replace_date(
        &self,
        date: NaiveDate,
        outputs: &DayOutputs,
        reconciliation: &[Reconciliation],
        computed_at_ms: i64,
    ) -> Result<(), ResultsError> {
        let day = date.format("%Y-%m-%d").to_string();
        let mut transaction = self.db.begin_write().await.map_err(query_error("starting a transaction"))?;
        const TABLES: [&str; 8] = [
            "daily_customer_usage", "hourly_region_usage", "top_customers", "meter_gaps", "suspect_intervals", "edited_intervals",
            "estimated_runs", "reconciliation",
        ];
        for table in TABLES {
            let sql = format!("DELETE FROM {table} WHERE usage_date = {}", self.db.placeholder(1));
            sqlx::query(&sql).bind(&day).execute(&mut *transaction).await.map_err(query_error(table))?;
        }
        const CUSTOMER_COLUMNS: [&str; 17] = [
            "usage_date", "utility", "customer_id", "region", "total", "min_value", "max_value", "readings", "peak_hour",
            "peak_hour_total", "expected_intervals", "received_intervals", "suspect_intervals", "edited_intervals",
            "estimated_intervals", "first_utc_date_total", "first_utc_date_readings",
        ];
        self.insert_day_rows(&mut transaction, "daily_customer_usage", &CUSTOMER_COLUMNS, &day, &outputs.customers, |arguments, row| {
            add(arguments, row.utility.as_str().to_owned())?;
            add(arguments, row.customer_id as i64)?;
            add(arguments, row.region.code().to_owned())?;
            add(arguments, row.total)?;
            add(arguments, row.min_value)?;
            add(arguments, row.max_value)?;
            add(arguments, row.readings as i64)?;
            add(arguments, i64::from(row.peak_hour))?;
            add(arguments, row.peak_hour_total)?;
            add(arguments, row.expected_intervals as i64)?;
            add(arguments, row.received_intervals as i64)?;
            add(arguments, row.suspect_intervals as i64)?;
            add(arguments, row.edited_intervals as i64)?;
            add(arguments, row.estimated_intervals as i64)?;
            add(arguments, row.first_utc_date_total)?;
            add(arguments, row.first_utc_date_readings as i64)?;
            Ok(())
        })
        .await?;
        const REGION_COLUMNS: [&str; 7] = ["usage_date", "utility", "region", "hour", "total", "readings", "customers"];
        self.insert_day_rows(&mut transaction, "hourly_region_usage", &REGION_COLUMNS, &day, &outputs.region_hours, |arguments, row| {
            add(arguments, row.utility.as_str().to_owned())?;
            add(arguments, row.region.code().to_owned())?;
            add(arguments, i64::from(row.hour))?;
            add(arguments, row.total)?;
            add(arguments, row.readings as i64)?;
            add(arguments, row.customers as i64)?;
            Ok(())
        })
        .await?;
        const TOP_COLUMNS: [&str; 6] = ["usage_date", "utility", "region", "position", "customer_id", "total"];
        self.insert_day_rows(&mut transaction, "top_customers", &TOP_COLUMNS, &day, &outputs.top_customers, |arguments, row| {
            add(arguments, row.utility.as_str().to_owned())?;
            add(arguments, row.region.code().to_owned())?;
            add(arguments, i64::from(row.position))?;
            add(arguments, row.customer_id as i64)?;
            add(arguments, row.total)?;
            Ok(())
        })
        .await?;
        const GAP_COLUMNS: [&str; 10] = [
            "usage_date", "utility", "meter_id", "customer_id", "region", "interval_secs", "expected_intervals",
            "received_intervals", "last_reading_ms", "estimated_intervals",
        ];
        self.insert_day_rows(&mut transaction, "meter_gaps", &GAP_COLUMNS, &day, &outputs.meter_gaps, |arguments, row| {
            add(arguments, row.utility.as_str().to_owned())?;
            add(arguments, row.meter_id as i64)?;
            add(arguments, row.customer_id as i64)?;
            add(arguments, row.region.code().to_owned())?;
            add(arguments, i64::from(row.interval_secs))?;
            add(arguments, row.expected_intervals as i64)?;
            add(arguments, row.received_intervals as i64)?;
            add(arguments, row.last_reading_ms)?;
            add(arguments, row.estimated_intervals as i64)?;
            Ok(())
        })
        .await?;
        const SUSPECT_COLUMNS: [&str; 8] =
            ["usage_date", "utility", "meter_id", "customer_id", "region", "ts_ms", "reading_value", "rule"];
        self.insert_day_rows(&mut transaction, "suspect_intervals", &SUSPECT_COLUMNS, &day, &outputs.suspect_intervals, |arguments, row| {
            add(arguments, row.utility.as_str().to_owned())?;
            add(arguments, row.meter_id as i64)?;
            add(arguments, row.customer_id as i64)?;
            add(arguments, row.region.code().to_owned())?;
            add(arguments, row.ts_ms)?;
            add(arguments, row.value)?;
            add(arguments, row.rule.as_str().to_owned())?;
            Ok(())
        })
        .await?;
        const EDITED_COLUMNS: [&str; 8] =
            ["usage_date", "utility", "meter_id", "customer_id", "region", "ts_ms", "read_value", "edited_value"];
        self.insert_day_rows(&mut transaction, "edited_intervals", &EDITED_COLUMNS, &day, &outputs.edited_intervals, |arguments, row| {
            add(arguments, row.utility.as_str().to_owned())?;
            add(arguments, row.meter_id as i64)?;
            add(arguments, row.customer_id as i64)?;
            add(arguments, row.region.code().to_owned())?;
            add(arguments, row.ts_ms)?;
            add(arguments, row.read_value)?;
            add(arguments, row.value)?;
            Ok(())
        })
        .await?;
        const ESTIMATED_COLUMNS: [&str; 10] =
            ["usage_date", "utility", "meter_id", "customer_id", "region", "from_ms", "to_ms", "intervals", "estimated_total", "method"];
        self.insert_day_rows(&mut transaction, "estimated_runs", &ESTIMATED_COLUMNS, &day, &outputs.estimated_runs, |arguments, row| {
            add(arguments, row.utility.as_str().to_owned())?;
            add(arguments, row.meter_id as i64)?;
            add(arguments, row.customer_id as i64)?;
            add(arguments, row.region.code().to_owned())?;
            add(arguments, row.from_ms)?;
            add(arguments, row.to_ms)?;
            add(arguments, row.intervals as i64)?;
            add(arguments, row.total)?;
            add(arguments, row.method.as_str().to_owned())?;
            Ok(())
        })
        .await?;
        const RECONCILIATION_COLUMNS: [&str; 9] = [
            "usage_date", "utility", "batch_total", "batch_readings", "batch_estimated", "stream_total", "stream_readings",
            "drift", "computed_at_ms",
        ];
        if !reconciliation.is_empty() {
            let mut arguments = AnyArguments::default();
            for row in reconciliation {
                add(&mut arguments, day.clone())?;
                add(&mut arguments, row.utility.as_str().to_owned())?;
                add(&mut arguments, row.batch_total)?;
                add(&mut arguments, row.batch_readings as i64)?;
                add(&mut arguments, row.batch_estimated)?;
                add(&mut arguments, row.stream_total)?;
                add(&mut arguments, row.stream_readings.map(|count| count as i64))?;
                add(&mut arguments, row.drift())?;
                add(&mut arguments, computed_at_ms)?;
            }
            let sql = self.db.insert_sql("reconciliation", &RECONCILIATION_COLUMNS, reconciliation.len());
            binding_optional_floats(sqlx::query_with(&sql, arguments))
                .execute(&mut *transaction)
                .await
                .map_err(query_error("reconciliation"))?;
        }
        transaction.commit().await.map_err(query_error("committing"))
    }

    /// Inserts `rows` of the day `day` into `table`, [`ROWS_PER_INSERT`] a
    /// statement: each row is `usage_date`, then what `bind` adds, in the order of `columns`.
    async fn insert_day_rows<T>(
        &self,
        transaction: &mut sqlx::Transaction<'static, sqlx::Any>,
        table: &'static str,
        columns: &[&str],
        day: &str,
        rows: &[T],
        bind: impl Fn(&mut AnyArguments<'static>, &T) -> Result<(), ResultsError>,
    ) -> Result<(), ResultsError> {
        for chunk in rows.chunks(ROWS_PER_INSERT) {
            let mut arguments = AnyArguments::default();
            for row in chunk {
                add(&mut arguments, day.to_owned())?;
                bind(&mut arguments, row)?;
            }
            let sql = self.db.insert_sql(table, columns, chunk.len());
            binding_optional_floats(sqlx::query_with(&sql, arguments)).execute(&mut **transaction).await.map_err(query_error(table))?;
        }
        Ok(())
    }

    /// The stored results of `date`, in the order [`DayOutputs`] keeps
    /// (its `totals` from the reconciliation rows).
    pub async fn day(&self, date: NaiveDate) -> Result<(DayOutputs, Vec<Reconciliation>), ResultsError> {
        let day = date.format("%Y-%m-%d").to_string();
        let filter = format!("WHERE usage_date = {}", self.db.placeholder(1));
        let sql = format!(
            "SELECT utility, customer_id, region, total, min_value, max_value, readings, peak_hour, peak_hour_total, \
             expected_intervals, received_intervals, suspect_intervals, edited_intervals, estimated_intervals, \
             first_utc_date_total, first_utc_date_readings FROM daily_customer_usage {filter} ORDER BY utility, customer_id"
        );
        type CustomerRow = (String, i64, String, f64, f64, f64, i64, i64, f64, i64, i64, i64, i64, i64, Option<f64>, Option<i64>);
        let rows: Vec<CustomerRow> = sqlx::query_as(&sql).bind(&day).fetch_all(self.db.pool()).await.map_err(query_error("daily_customer_usage"))?;
        let mut outputs = DayOutputs::default();
        for (utility, customer_id, region, total, min_value, max_value, readings, peak_hour, peak_hour_total, expected, received, suspect, edited, estimated, first_total, first_readings) in
            rows
        {
            let (Some(first_utc_date_total), Some(first_utc_date_readings)) = (first_total, first_readings) else {
                return Err(ResultsError::Stored(format!("a day of customer {customer_id} on {day} computed before the UTC split; compute the day again")));
            };
            outputs.customers.push(CustomerDay {
                utility: parse_utility(&utility)?,
                customer_id: customer_id as u64,
                region: parse_region(&region)?,
                total,
                min_value,
                max_value,
                readings: readings as u64,
                peak_hour: small(peak_hour, "peak hour")?,
                peak_hour_total,
                expected_intervals: expected as u64,
                received_intervals: received as u64,
                suspect_intervals: suspect as u64,
                edited_intervals: edited as u64,
                estimated_intervals: estimated as u64,
                first_utc_date_total,
                first_utc_date_readings: first_utc_date_readings as u64,
            });
        }
        let sql = format!(
            "SELECT utility, region, hour, total, readings, customers FROM hourly_region_usage {filter} ORDER BY utility, region, hour"
        );
        let rows: Vec<(String, String, i64, f64, i64, i64)> =
            sqlx::query_as(&sql).bind(&day).fetch_all(self.db.pool()).await.map_err(query_error("hourly_region_usage"))?;
        for (utility, region, hour, total, readings, customers) in rows {
            outputs.region_hours.push(RegionHour {
                utility: parse_utility(&utility)?,
                region: parse_region(&region)?,
                hour: small(hour, "hour")?,
                total,
                readings: readings as u64,
                customers: customers as u64,
            });
        }
        let sql = format!(
            "SELECT utility, meter_id, customer_id, region, interval_secs, expected_intervals, received_intervals, last_reading_ms, \
             estimated_intervals FROM meter_gaps {filter} ORDER BY utility, meter_id, customer_id"
        );
        type GapRow = (String, i64, i64, String, i64, i64, i64, Option<i64>, i64);
        let rows: Vec<GapRow> = sqlx::query_as(&sql).bind(&day).fetch_all(self.db.pool()).await.map_err(query_error("meter_gaps"))?;
        for (utility, meter_id, customer_id, region, interval_secs, expected, received, last_reading_ms, estimated) in rows {
            outputs.meter_gaps.push(MeterGap {
                utility: parse_utility(&utility)?,
                meter_id: meter_id as u64,
                customer_id: customer_id as u64,
                region: parse_region(&region)?,
                interval_secs: u32::try_from(interval_secs).map_err(|_| ResultsError::Stored(format!("interval {interval_secs} s")))?,
                expected_intervals: expected as u64,
                received_intervals: received as u64,
                last_reading_ms,
                estimated_intervals: estimated as u64,
            });
        }
        let sql = format!(
            "SELECT utility, meter_id, customer_id, region, ts_ms, reading_value, rule FROM suspect_intervals {filter} \
             ORDER BY utility, meter_id, customer_id, ts_ms"
        );
        type SuspectRow = (String, i64, i64, String, i64, f64, String);
        let rows: Vec<SuspectRow> =
            sqlx::query_as(&sql).bind(&day).fetch_all(self.db.pool()).await.map_err(query_error("suspect_intervals"))?;
        for (utility, meter_id, customer_id, region, ts_ms, value, rule) in rows {
            outputs.suspect_intervals.push(SuspectInterval {
                utility: parse_utility(&utility)?,
                meter_id: meter_id as u64,
                customer_id: customer_id as u64,
                region: parse_region(&region)?,
                ts_ms,
                value,
                rule: SuspectRule::parse(&rule).ok_or_else(|| ResultsError::Stored(format!("validation rule `{rule}`")))?,
            });
        }
        let sql = format!(
            "SELECT utility, meter_id, customer_id, region, ts_ms, read_value, edited_value FROM edited_intervals {filter} \
             ORDER BY utility, meter_id, customer_id, ts_ms"
        );
        type EditedRow = (String, i64, i64, String, i64, Option<f64>, f64);
        let rows: Vec<EditedRow> =
            sqlx::query_as(&sql).bind(&day).fetch_all(self.db.pool()).await.map_err(query_error("edited_intervals"))?;
        for (utility, meter_id, customer_id, region, ts_ms, read_value, value) in rows {
            outputs.edited_intervals.push(EditedInterval {
                utility: parse_utility(&utility)?,
                meter_id: meter_id as u64,
                customer_id: customer_id as u64,
                region: parse_region(&region)?,
                ts_ms,
                read_value,
                value,
            });
        }
        let sql = format!(
            "SELECT utility, meter_id, customer_id, region, from_ms, to_ms, intervals, estimated_total, method FROM estimated_runs \
             {filter} ORDER BY utility, meter_id, customer_id, from_ms"
        );
        type EstimatedRow = (String, i64, i64, String, i64, i64, i64, f64, String);
        let rows: Vec<EstimatedRow> =
            sqlx::query_as(&sql).bind(&day).fetch_all(self.db.pool()).await.map_err(query_error("estimated_runs"))?;
        for (utility, meter_id, customer_id, region, from_ms, to_ms, intervals, total, method) in rows {
            outputs.estimated_runs.push(EstimatedRun {
                utility: parse_utility(&utility)?,
                meter_id: meter_id as u64,
                customer_id: customer_id as u64,
                region: parse_region(&region)?,
                from_ms,
                to_ms,
                intervals: intervals as u64,
                total,
                method: EstimationMethod::parse(&method).ok_or_else(|| ResultsError::Stored(format!("estimation method `{method}`")))?,
            });
        }
        let sql = format!("SELECT utility, region, position, customer_id, total FROM top_customers {filter} ORDER BY utility, region, position");
        let rows: Vec<(String, String, i64, i64, f64)> =
            sqlx::query_as(&sql).bind(&day).fetch_all(self.db.pool()).await.map_err(query_error("top_customers"))?;
        for (utility, region, position, customer_id, total) in rows {
            outputs.top_customers.push(TopCustomer {
                utility: parse_utility(&utility)?,
                region: parse_region(&region)?,
                position: position as u32,
                customer_id: customer_id as u64,
                total,
            });
        }
        let sql = format!(
            "SELECT utility, batch_total, batch_readings, batch_estimated, stream_total, stream_readings FROM reconciliation {filter} \
             ORDER BY utility"
        );
        type ReconciliationRow = (String, f64, i64, f64, Option<f64>, Option<i64>);
        let rows: Vec<ReconciliationRow> =
            sqlx::query_as(&sql).bind(&day).fetch_all(self.db.pool()).await.map_err(query_error("reconciliation"))?;
        let mut reconciliation = Vec::new();
        for (utility, batch_total, batch_readings, batch_estimated, stream_total, stream_readings) in rows {
            let utility = parse_utility(&utility)?;
            let total = crate::UtilityTotal { total: batch_total, readings: batch_readings as u64, estimated: batch_estimated };
            outputs.totals.push((utility, total));
            reconciliation.push(Reconciliation {
                utility,
                batch_total,
                batch_readings: batch_readings as u64,
                batch_estimated,
                stream_total,
                stream_readings: stream_readings.map(|count| count as u64),
            });
        }
        // Utilities sort as their names in SQL; `DayOutputs` keeps their enum order.
        outputs.customers.sort_by_key(|row| (row.utility, row.customer_id));
        outputs.region_hours.sort_by_key(|row| (row.utility, row.region, row.hour));
        outputs.top_customers.sort_by_key(|row| (row.utility, row.region, row.position));
        outputs.totals.sort_by_key(|(utility, _)| *utility);
        reconciliation.sort_by_key(|row| row.utility);
        Ok((outputs, reconciliation))
    }

    /// The restatement records of `date`.
    pub async fn restatements(&self, date: NaiveDate) -> Result<Vec<(Utility, Restatement)>, ResultsError> {
        let sql = format!(
            "SELECT utility, customers_restated, customers_changed, total_change, largest_change FROM restatements \
             WHERE usage_date = {} ORDER BY utility",
            self.db.placeholder(1)
        );
        let rows: Vec<(String, i64, i64, f64, f64)> = sqlx::query_as(&sql)
            .bind(date.format("%Y-%m-%d").to_string())
            .fetch_all(self.db.pool())
            .await
            .map_err(query_error("restatements"))?;
        let mut restatements = Vec::new();
        for (utility, restated, changed, total_change, largest_change) in rows {
            restatements.push((
                parse_utility(&utility)?,
                Restatement {
                    customers_restated: restated as u64,
                    customers_changed: changed as u64,
                    total_change,
                    largest_change,
                },
            ));
        }
        restatements.sort_by_key(|(utility, _)| *utility);
        Ok(restatements)
    }

    /// Records what restating `date` and `utility` changed, replacing an earlier record.
    pub async fn record_restatement(
        &self,
        date: NaiveDate,
        utility: Utility,
        restatement: &Restatement,
        restated_at_ms: i64,
    ) -> Result<(), ResultsError> {
        let day = date.format("%Y-%m-%d").to_string();
        let mut transaction = self.db.begin_write().await.map_err(query_error("starting a transaction"))?;
        let sql = format!(
            "DELETE FROM restatements WHERE usage_date = {} AND utility = {}",
            self.db.placeholder(1),
            self.db.placeholder(2)
        );
        sqlx::query(&sql).bind(&day).bind(utility.as_str()).execute(&mut *transaction).await.map_err(query_error("restatements"))?;
        let columns = [
            "usage_date", "utility", "customers_restated", "customers_changed", "total_change", "largest_change", "restated_at_ms",
        ];
        let mut arguments = AnyArguments::default();
        add(&mut arguments, day)?;
        add(&mut arguments, utility.as_str().to_owned())?;
        add(&mut arguments, restatement.customers_restated as i64)?;
        add(&mut arguments, restatement.customers_changed as i64)?;
        add(&mut arguments, restatement.total_change)?;
        add(&mut arguments, restatement.largest_change)?;
        add(&mut arguments, restated_at_ms)?;
        let sql = self.db.insert_sql("restatements", &columns, 1);
        sqlx::query_with(&sql, arguments).execute(&mut *transaction).await.map_err(query_error("restatements"))?;
        transaction.commit().await.map_err(query_error("committing"))
    }

    /// Records that `date` was computed successfully, finishing at
    /// `finished_at_ms` after `duration_ms` (replacing its previous run).
    pub async fn record_run(&self, date: NaiveDate, finished_at_ms: i64, duration_ms: i64) -> Result<(), ResultsError> {
        let day = date.format("%Y-%m-%d").to_string();
        let mut transaction = self.db.begin_write().await.map_err(query_error("starting a transaction"))?;
        let sql = format!("DELETE FROM batch_runs WHERE usage_date = {}", self.db.placeholder(1));
        sqlx::query(&sql).bind(&day).execute(&mut *transaction).await.map_err(query_error("batch_runs"))?;
        let mut arguments = AnyArguments::default();
        add(&mut arguments, day)?;
        add(&mut arguments, finished_at_ms)?;
        add(&mut arguments, duration_ms)?;
        let sql = self.db.insert_sql("batch_runs", &["usage_date", "finished_at_ms", "duration_ms"], 1);
        sqlx::query_with(&sql, arguments).execute(&mut *transaction).await.map_err(query_error("batch_runs"))?;
        transaction.commit().await.map_err(query_error("committing"))
    }
}

fn small(number: i64, what: &str) -> Result<u8, ResultsError> {
    u8::try_from(number).map_err(|_| ResultsError::Stored(format!("{what} {number} out of range")))
}
