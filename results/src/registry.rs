//! The meter registry in the results database: imported whole or by meter,
//! exported, and read by revision for the registry topic's publisher.

use auth_core::registry::{Installation, MeterUnit, RegisterKind, Registry, RegistryRecord, ValueRange};
use auth_core::{CustomerKind, Region, Utility};
use sqlx::any::AnyArguments;

use crate::{Database, ResultsError, add, binding_optional_floats, parse_region, parse_utility, query_error};

/// Meters per statement of an import.
const METERS_PER_STATEMENT: usize = 500;

const COLUMNS: [&str; 15] = [
    "meter_id", "valid_from_ms", "valid_to_ms", "customer_id", "premise_id", "region", "utility", "customer_kind", "unit",
    "multiplier", "register_kind", "interval_secs", "plausible_min", "plausible_max", "register_rollover",
];

/// What an import changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Imported {
    pub revision: i64,
    /// Meters whose installations the file replaced.
    pub meters: usize,
    pub installations: usize,
    /// Meters removed because the file did not hold them (`replace_all`).
    pub removed: usize,
}

/// What a day expects of one installation: the columns the batch's
/// completeness and validation need, without the premise, kind and register.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct InstalledPeriod {
    pub meter_id: u64,
    pub customer_id: u64,
    pub region: Region,
    pub utility: Utility,
    pub interval_secs: u32,
    pub valid_from_ms: i64,
    pub valid_to_ms: Option<i64>,
    /// One interval's plausible bounds in the utility's unit ([`Installation::plausible_range`]).
    pub plausible: ValueRange,
    /// The meter reports its register, not its intervals' consumption.
    pub cumulative: bool,
    /// Where its register wraps, in the utility's unit ([`Installation::rollover`]).
    pub rollover: Option<f64>,
}

impl From<&Installation> for InstalledPeriod {
    fn from(installation: &Installation) -> Self {
        Self {
            meter_id: installation.meter_id,
            customer_id: installation.customer_id,
            region: installation.region,
            utility: installation.utility,
            interval_secs: installation.interval_secs,
            valid_from_ms: installation.valid_from_ms,
            valid_to_ms: installation.valid_to_ms,
            plausible: installation.plausible_range(),
            cumulative: installation.register == RegisterKind::Cumulative,
            rollover: installation.rollover(),
        }
    }
}

type PeriodRow =
    (i64, i64, String, String, i64, i64, Option<i64>, String, Option<f64>, Option<f64>, f64, String, Option<f64>);
/// The columns of a [`PeriodRow`].
const PERIOD_COLUMNS: &str = "meter_id, customer_id, region, utility, interval_secs, valid_from_ms, valid_to_ms, unit, \
     plausible_min, plausible_max, multiplier, register_kind, register_rollover";

fn installed_period(row: PeriodRow) -> Result<InstalledPeriod, ResultsError> {
    let (meter_id, customer_id, region, utility, interval, valid_from_ms, valid_to_ms, unit, min, max, multiplier, register, rollover) =
        row;
    let stored = |what: String| ResultsError::Stored(format!("meter {meter_id}: {what}"));
    let interval_secs = u32::try_from(interval).map_err(|_| stored(format!("interval {interval} s")))?;
    let factor = unit.parse::<MeterUnit>().map_err(stored)?.factor();
    let cumulative = register.parse::<RegisterKind>().map_err(stored)? == RegisterKind::Cumulative;
    Ok(InstalledPeriod {
        meter_id: meter_id as u64,
        customer_id: customer_id as u64,
        region: parse_region(&region)?,
        utility: parse_utility(&utility)?,
        interval_secs,
        valid_from_ms,
        valid_to_ms,
        plausible: ValueRange { min: min.map(|min| min * factor), max: max.map(|max| max * factor) },
        cumulative,
        rollover: rollover.filter(|_| cumulative).map(|rollover| rollover * multiplier * factor),
    })
}

type InstallationRow =
    (i64, i64, Option<i64>, i64, String, String, String, String, String, f64, String, i64, Option<f64>, Option<f64>, Option<f64>);

impl Database {
    /// Stores `registry` in one transaction: every meter it holds gets exactly
    /// its installations; with `replace_all` every other meter is removed.
    #[tracing::instrument(level = "info", skip_all, fields(meters = registry.meter_count(), replace_all))]
    pub async fn import_registry(&self, registry: &Registry, replace_all: bool, now_ms: i64) -> Result<Imported, ResultsError> {
        let mut meters: Vec<u64> = registry.meters().collect();
        meters.sort_unstable();
        self.store_meters(meters, registry, replace_all, now_ms).await
    }

    /// Removes meters from the registry (their history of changes stays).
    pub async fn remove_meters(&self, meters: &[u64], now_ms: i64) -> Result<Imported, ResultsError> {
        self.store_meters(meters.to_vec(), &Registry::default(), false, now_ms).await
    }

    /// Gives each of `meters` exactly its installations in `registry` (none: removed).
    async fn store_meters(&self, mut meters: Vec<u64>, registry: &Registry, replace_all: bool, now_ms: i64) -> Result<Imported, ResultsError> {
        let mut transaction = self.begin_write().await.map_err(query_error("starting a transaction"))?;
        let (newest,): (i64,) = sqlx::query_as("SELECT COALESCE(MAX(revision), 0) FROM registry_meters")
            .fetch_one(&mut *transaction)
            .await
            .map_err(query_error("registry_meters"))?;
        let revision = newest + 1;
        let mut removed = meters.iter().filter(|&&meter_id| registry.meter(meter_id).is_empty()).count();
        if replace_all {
            let stored: Vec<(i64,)> = sqlx::query_as("SELECT DISTINCT meter_id FROM meter_installations")
                .fetch_all(&mut *transaction)
                .await
                .map_err(query_error("meter_installations"))?;
            let gone: Vec<u64> = stored.into_iter().map(|(id,)| id as u64).filter(|id| registry.meter(*id).is_empty()).collect();
            removed += gone.len();
            meters.extend(gone);
        }
        let mut installations = 0;
        for chunk in meters.chunks(METERS_PER_STATEMENT) {
            let list = (1..=chunk.len()).map(|number| self.placeholder(number)).collect::<Vec<_>>().join(", ");
            for table in ["meter_installations", "registry_meters"] {
                let mut arguments = AnyArguments::default();
                for &meter_id in chunk {
                    add(&mut arguments, meter_id as i64)?;
                }
                let sql = format!("DELETE FROM {table} WHERE meter_id IN ({list})");
                sqlx::query_with(&sql, arguments).execute(&mut *transaction).await.map_err(query_error(table))?;
            }
            let mut arguments = AnyArguments::default();
            for &meter_id in chunk {
                add(&mut arguments, meter_id as i64)?;
                add(&mut arguments, revision)?;
                add(&mut arguments, now_ms)?;
            }
            let sql = self.insert_sql("registry_meters", &["meter_id", "revision", "changed_at_ms"], chunk.len());
            sqlx::query_with(&sql, arguments).execute(&mut *transaction).await.map_err(query_error("registry_meters"))?;
            let rows: Vec<&Installation> = chunk.iter().flat_map(|&meter_id| registry.meter(meter_id)).collect();
            installations += rows.len();
            for rows in rows.chunks(METERS_PER_STATEMENT) {
                let mut arguments = AnyArguments::default();
                for installation in rows {
                    add(&mut arguments, installation.meter_id as i64)?;
                    add(&mut arguments, installation.valid_from_ms)?;
                    add(&mut arguments, installation.valid_to_ms)?;
                    add(&mut arguments, installation.customer_id as i64)?;
                    add(&mut arguments, installation.premise_id.clone())?;
                    add(&mut arguments, installation.region.code().to_owned())?;
                    add(&mut arguments, installation.utility.as_str().to_owned())?;
                    add(&mut arguments, installation.customer_kind.as_str().to_owned())?;
                    add(&mut arguments, installation.unit.as_str().to_owned())?;
                    add(&mut arguments, installation.multiplier)?;
                    add(&mut arguments, installation.register.as_str().to_owned())?;
                    add(&mut arguments, i64::from(installation.interval_secs))?;
                    add(&mut arguments, installation.plausible_min)?;
                    add(&mut arguments, installation.plausible_max)?;
                    add(&mut arguments, installation.register_rollover)?;
                }
                let sql = self.insert_sql("meter_installations", &COLUMNS, rows.len());
                binding_optional_floats(sqlx::query_with(&sql, arguments))
                    .execute(&mut *transaction)
                    .await
                    .map_err(query_error("meter_installations"))?;
            }
        }
        transaction.commit().await.map_err(query_error("committing"))?;
        Ok(Imported { revision, meters: meters.len() - removed, installations, removed })
    }

    /// The whole registry.
    pub async fn registry(&self) -> Result<Registry, ResultsError> {
        let sql = format!("SELECT {} FROM meter_installations ORDER BY meter_id, valid_from_ms", COLUMNS.join(", "));
        let rows: Vec<InstallationRow> = sqlx::query_as(&sql).fetch_all(self.pool()).await.map_err(query_error("meter_installations"))?;
        let mut registry = Registry::default();
        for (meter_id, installations) in group_by_meter(rows)? {
            registry.set_meter(meter_id, installations);
        }
        Ok(registry)
    }

    /// The installations of `utilities` valid for part or all of `[from_ms, to_ms)`,
    /// in no particular order: what the batch expects of a day, read without
    /// the rest of the registry.
    #[tracing::instrument(level = "debug", skip(self))]
    pub async fn installations_during(&self, from_ms: i64, to_ms: i64, utilities: &[Utility]) -> Result<Vec<InstalledPeriod>, ResultsError> {
        if utilities.is_empty() || from_ms >= to_ms {
            return Ok(Vec::new());
        }
        let listed = (3..3 + utilities.len()).map(|number| self.placeholder(number)).collect::<Vec<_>>().join(", ");
        let sql = format!(
            "SELECT {PERIOD_COLUMNS} FROM meter_installations \
             WHERE valid_from_ms < {} AND (valid_to_ms IS NULL OR valid_to_ms > {}) AND utility IN ({listed})",
            self.placeholder(1),
            self.placeholder(2)
        );
        let mut query = sqlx::query_as::<_, PeriodRow>(&sql).bind(to_ms).bind(from_ms);
        for utility in utilities {
            query = query.bind(utility.as_str());
        }
        let rows = query.fetch_all(self.pool()).await.map_err(query_error("meter_installations"))?;
        rows.into_iter().map(installed_period).collect()
    }

    /// The installations of `meters` in place at `at_ms` (a meter not
    /// installed then has none), in no particular order.
    #[tracing::instrument(level = "debug", skip(self, meters), fields(meters = meters.len()))]
    pub async fn installed_at(&self, meters: &[u64], at_ms: i64) -> Result<Vec<InstalledPeriod>, ResultsError> {
        let mut installed = Vec::with_capacity(meters.len());
        for chunk in meters.chunks(METERS_PER_STATEMENT) {
            let listed = (3..3 + chunk.len()).map(|number| self.placeholder(number)).collect::<Vec<_>>().join(", ");
            let sql = format!(
                "SELECT {PERIOD_COLUMNS} FROM meter_installations \
                 WHERE valid_from_ms <= {} AND (valid_to_ms IS NULL OR valid_to_ms > {}) AND meter_id IN ({listed})",
                self.placeholder(1),
                self.placeholder(2),
            );
            let mut query = sqlx::query_as::<_, PeriodRow>(&sql).bind(at_ms).bind(at_ms);
            for &meter_id in chunk {
                query = query.bind(meter_id as i64);
            }
            let rows = query.fetch_all(self.pool()).await.map_err(query_error("meter_installations"))?;
            for row in rows {
                installed.push(installed_period(row)?);
            }
        }
        Ok(installed)
    }

    /// The installations of one meter, oldest first.
    pub async fn meter_installations(&self, meter_id: u64) -> Result<Vec<Installation>, ResultsError> {
        self.installations_where("meter_id", meter_id).await
    }

    /// The installations of one customer's meters, by meter and period.
    pub async fn customer_installations(&self, customer_id: u64) -> Result<Vec<Installation>, ResultsError> {
        self.installations_where("customer_id", customer_id).await
    }

    async fn installations_where(&self, column: &str, id: u64) -> Result<Vec<Installation>, ResultsError> {
        let sql = format!(
            "SELECT {} FROM meter_installations WHERE {column} = {} ORDER BY meter_id, valid_from_ms",
            COLUMNS.join(", "),
            self.placeholder(1)
        );
        let rows: Vec<InstallationRow> =
            sqlx::query_as(&sql).bind(id as i64).fetch_all(self.pool()).await.map_err(query_error("meter_installations"))?;
        rows.into_iter().map(installation_of).collect()
    }

    /// Meters with an installation, installations, and the newest revision.
    pub async fn registry_summary(&self) -> Result<(u64, u64, i64), ResultsError> {
        let (meters, installations): (i64, i64) =
            sqlx::query_as("SELECT COUNT(DISTINCT meter_id), COUNT(*) FROM meter_installations")
                .fetch_one(self.pool())
                .await
                .map_err(query_error("meter_installations"))?;
        Ok((meters as u64, installations as u64, self.registry_revision().await?))
    }

    /// The newest revision of the registry (0: never imported).
    pub async fn registry_revision(&self) -> Result<i64, ResultsError> {
        let (newest,): (i64,) = sqlx::query_as("SELECT COALESCE(MAX(revision), 0) FROM registry_meters")
            .fetch_one(self.pool())
            .await
            .map_err(query_error("registry_meters"))?;
        Ok(newest)
    }

    /// Every meter changed after `revision`, with all its installations (none: removed).
    pub async fn registry_changes(&self, revision: i64) -> Result<Vec<RegistryRecord>, ResultsError> {
        let changed = format!("SELECT meter_id FROM registry_meters WHERE revision > {} ORDER BY meter_id", self.placeholder(1));
        let meters: Vec<(i64,)> =
            sqlx::query_as(&changed).bind(revision).fetch_all(self.pool()).await.map_err(query_error("registry_meters"))?;
        let columns = COLUMNS.map(|column| format!("i.{column}")).join(", ");
        let sql = format!(
            "SELECT {columns} FROM meter_installations i JOIN registry_meters m ON m.meter_id = i.meter_id \
             WHERE m.revision > {} ORDER BY i.meter_id, i.valid_from_ms",
            self.placeholder(1)
        );
        let rows: Vec<InstallationRow> =
            sqlx::query_as(&sql).bind(revision).fetch_all(self.pool()).await.map_err(query_error("meter_installations"))?;
        let mut installed = group_by_meter(rows)?.into_iter().peekable();
        let mut records = Vec::with_capacity(meters.len());
        for (meter_id,) in meters {
            let meter_id = meter_id as u64;
            let installations = match installed.peek() {
                Some((id, _)) if *id == meter_id => installed.next().map(|(_, installations)| installations).unwrap_or_default(),
                _ => Vec::new(),
            };
            records.push(RegistryRecord { meter_id, installations });
        }
        Ok(records)
    }
}

/// Rows sorted by meter, grouped.
fn group_by_meter(rows: Vec<InstallationRow>) -> Result<Vec<(u64, Vec<Installation>)>, ResultsError> {
    let mut grouped: Vec<(u64, Vec<Installation>)> = Vec::new();
    for row in rows {
        let installation = installation_of(row)?;
        match grouped.last_mut() {
            Some((meter_id, installations)) if *meter_id == installation.meter_id => installations.push(installation),
            _ => grouped.push((installation.meter_id, vec![installation])),
        }
    }
    Ok(grouped)
}

fn installation_of(row: InstallationRow) -> Result<Installation, ResultsError> {
    let (meter_id, valid_from_ms, valid_to_ms, customer_id, premise_id, region, utility, kind, unit, multiplier, register, interval, min, max, rollover) =
        row;
    let stored = |what: String| ResultsError::Stored(format!("meter {meter_id}: {what}"));
    Ok(Installation {
        meter_id: meter_id as u64,
        customer_id: customer_id as u64,
        premise_id,
        region: parse_region(&region)?,
        utility: parse_utility(&utility)?,
        customer_kind: match kind.as_str() {
            "residential" => CustomerKind::Residential,
            "business" => CustomerKind::Business,
            other => return Err(stored(format!("unknown customer kind {other:?}"))),
        },
        unit: unit.parse::<MeterUnit>().map_err(stored)?,
        multiplier,
        register: register.parse::<RegisterKind>().map_err(stored)?,
        interval_secs: u32::try_from(interval).map_err(|_| stored(format!("interval {interval} s")))?,
        valid_from_ms,
        valid_to_ms,
        plausible_min: min,
        plausible_max: max,
        register_rollover: rollover,
    })
}

#[cfg(test)]
mod tests {
    use auth_core::Region;

    use super::*;

    fn installation(meter_id: u64, customer_id: u64, from: i64, to: Option<i64>) -> Installation {
        Installation {
            meter_id,
            customer_id,
            premise_id: format!("P-{customer_id}"),
            region: Region::from_code("US-NV").expect("region"),
            utility: auth_core::Utility::Water,
            customer_kind: CustomerKind::Business,
            unit: MeterUnit::CubicMetre,
            multiplier: 0.5,
            register: RegisterKind::Interval,
            interval_secs: 3_600,
            valid_from_ms: from,
            valid_to_ms: to,
            plausible_min: None,
            plausible_max: None,
            register_rollover: None,
        }
    }

    fn registry(rows: Vec<Installation>) -> Registry {
        Registry::from_rows(rows.into_iter().enumerate().map(|(line, row)| (line, Ok(row))).collect()).expect("valid")
    }

    #[tokio::test]
    async fn imports_replace_meters_and_every_change_is_published_once() {
        let directory = tempfile::tempdir().expect("temporary directory");
        let db = Database::connect(&format!("sqlite://{}", directory.path().join("results.db").display())).await.expect("database");
        let first = registry(vec![installation(7, 1, 0, Some(100)), installation(7, 2, 100, None), installation(8, 3, 0, None)]);
        let imported = db.import_registry(&first, false, 1).await.expect("import");
        assert_eq!(imported, Imported { revision: 1, meters: 2, installations: 3, removed: 0 });
        assert_eq!(db.registry().await.expect("export"), first, "the registry round-trips");
        assert_eq!(db.registry_changes(0).await.expect("changes").len(), 2);
        let during = |from, to, utility| {
            let db = db.clone();
            async move {
                let mut periods = db.installations_during(from, to, &[utility]).await.expect("installations during");
                periods.sort_by_key(|period| (period.meter_id, period.valid_from_ms));
                periods.iter().map(|period| (period.meter_id, period.customer_id)).collect::<Vec<_>>()
            }
        };
        assert_eq!(during(50, 150, auth_core::Utility::Water).await, [(7, 1), (7, 2), (8, 3)]);
        assert_eq!(during(100, 150, auth_core::Utility::Water).await, [(7, 2), (8, 3)], "valid to 100 is gone at 100");
        assert_eq!(during(0, 100, auth_core::Utility::Water).await, [(7, 1), (8, 3)], "valid from 100 is not yet there");
        assert!(during(0, 100, auth_core::Utility::Gas).await.is_empty());

        // A second file of meter 8 only leaves meter 7 as it was.
        let second = registry(vec![installation(8, 4, 0, None)]);
        assert_eq!(db.import_registry(&second, false, 2).await.expect("import").revision, 2);
        let changes = db.registry_changes(1).await.expect("changes");
        assert_eq!(changes, [RegistryRecord { meter_id: 8, installations: vec![installation(8, 4, 0, None)] }]);
        assert_eq!(db.registry().await.expect("export").meter(7).len(), 2);

        // Replacing the whole registry removes meter 7, published as a meter with no installations.
        assert_eq!(db.customer_installations(2).await.expect("customer's meters"), [installation(7, 2, 100, None)]);
        assert_eq!(db.registry_summary().await.expect("summary"), (2, 3, 2));
        let imported = db.import_registry(&second, true, 3).await.expect("import");
        assert_eq!(imported.removed, 1);
        let changes = db.registry_changes(2).await.expect("changes");
        assert_eq!(changes[0], RegistryRecord { meter_id: 7, installations: vec![] });
        assert_eq!(db.registry().await.expect("export").meter_count(), 1);
        assert_eq!(db.registry_revision().await.expect("revision"), 3);
        db.remove_meters(&[8], 4).await.expect("removed");
        assert!(db.meter_installations(8).await.expect("meter").is_empty());
        assert_eq!(db.registry_changes(3).await.expect("changes"), [RegistryRecord { meter_id: 8, installations: vec![] }]);
    }
}
