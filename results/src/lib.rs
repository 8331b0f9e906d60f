//! The results database: SQLite, PostgreSQL or MySQL/MariaDB through `sqlx`,
//! with the schema's migrations under `results/migrations` (portable SQL).
//!
//! The batch writes the days it recomputed (`auth-batch`); the API reads them
//! ([`history`]) and keeps its accounts and sessions here ([`accounts`]).

pub mod accounts;
pub mod edits;
pub mod history;
pub mod registry;

use std::str::FromStr;

use auth_core::{Region, Utility};
use sqlx::any::{AnyArguments, AnyPoolOptions};
use sqlx::{AnyPool, Arguments};

pub use accounts::{Account, AccountError, Role};
pub use edits::{AuditAction, AuditEntry, IntervalEdit};
pub use registry::{Imported, InstalledPeriod};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

#[derive(Debug, thiserror::Error)]
pub enum ResultsError {
    #[error("results database {url}: {source}")]
    Connect { url: String, source: sqlx::Error },
    #[error("results database {url}: migrating: {source}")]
    Migrate { url: String, source: sqlx::migrate::MigrateError },
    #[error("results database: {what}: {source}")]
    Query { what: String, source: sqlx::Error },
    #[error("results database URL {0:?}: expected sqlite:path, postgres://... or mysql://...")]
    Scheme(String),
    #[error("results database holds {0}")]
    Stored(String),
}

/// The SQL dialect behind the pool, for placeholders.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    Sqlite,
    Postgres,
    MySql,
}

/// A connection pool to the results database, its schema up to date.
#[derive(Clone)]
pub struct Database {
    pool: AnyPool,
    dialect: Dialect,
}

/// Maps a `sqlx` error to [`ResultsError::Query`] naming what was being done.
pub fn query_error(what: &str) -> impl FnOnce(sqlx::Error) -> ResultsError + '_ {
    move |source| ResultsError::Query { what: what.to_owned(), source }
}

/// The password of a database URL that names a user but no password, so
/// that the URL can sit in a spec (a ConfigMap on Kubernetes) and the
/// password in a secret (the Secret `<pipeline>-env` there).
pub const PASSWORD_VARIABLE: &str = "AUTH_DATABASE_PASSWORD";

/// `url` with `password` when it names a user and no password of its own.
fn with_password(url: &str, password: Option<&str>) -> String {
    let Some(password) = password else { return url.to_owned() };
    match url::Url::parse(url) {
        Ok(mut parsed) if !parsed.username().is_empty() && parsed.password().is_none() => {
            match parsed.set_password(Some(password)) {
                Ok(()) => parsed.to_string(),
                Err(()) => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

impl Database {
    /// Connects and brings the schema up to date. A SQLite file (and its
    /// folder) is created when missing. A server's password may come from
    /// [`PASSWORD_VARIABLE`] instead of the URL.
    pub async fn connect(url: &str) -> Result<Self, ResultsError> {
        sqlx::any::install_default_drivers();
        let dialect = if url.starts_with("sqlite:") {
            Dialect::Sqlite
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Dialect::Postgres
        } else if url.starts_with("mysql://") {
            Dialect::MySql
        } else {
            return Err(ResultsError::Scheme(url.to_owned()));
        };
        let connect_error = |source| ResultsError::Connect { url: redact(url), source };
        let mut target = with_password(url, std::env::var(PASSWORD_VARIABLE).ok().as_deref());
        if dialect == Dialect::Sqlite {
            let options = sqlx::sqlite::SqliteConnectOptions::from_str(url).map_err(connect_error)?;
            if let Some(folder) = options.get_filename().parent().filter(|folder| !folder.as_os_str().is_empty()) {
                std::fs::create_dir_all(folder).map_err(|err| connect_error(sqlx::Error::Io(err)))?;
            }
            if !url.contains("mode=") {
                target.push_str(if url.contains('?') { "&mode=rwc" } else { "?mode=rwc" });
            }
        }
        let pool = AnyPoolOptions::new().max_connections(4).connect(&target).await.map_err(connect_error)?;
        MIGRATOR.run(&pool).await.map_err(|source| ResultsError::Migrate { url: redact(url), source })?;
        Ok(Self { pool, dialect })
    }

    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    /// Starts a transaction that will write. On SQLite it takes the write
    /// lock at once (`BEGIN IMMEDIATE`): a deferred transaction that reads
    /// first and then writes fails at once with "database is locked" when
    /// another connection is writing, where this one waits (up to the busy
    /// timeout) for its turn.
    pub async fn begin_write(&self) -> Result<sqlx::Transaction<'static, sqlx::Any>, sqlx::Error> {
        match self.dialect {
            Dialect::Sqlite => self.pool.begin_with("BEGIN IMMEDIATE").await,
            Dialect::Postgres | Dialect::MySql => self.pool.begin().await,
        }
    }

    pub fn dialect(&self) -> Dialect {
        self.dialect
    }

    /// The `number`th (from 1) bind placeholder of a statement.
    pub fn placeholder(&self, number: usize) -> String {
        match self.dialect {
            Dialect::Postgres => format!("${number}"),
            Dialect::Sqlite | Dialect::MySql => "?".into(),
        }
    }

    /// `INSERT INTO table (columns) VALUES (...), ...` for `rows` rows, in the database's placeholders.
    pub fn insert_sql(&self, table: &str, columns: &[&str], rows: usize) -> String {
        let mut sql = format!("INSERT INTO {table} ({}) VALUES ", columns.join(", "));
        let mut number = 0;
        for row in 0..rows {
            sql.push_str(if row == 0 { "(" } else { ", (" });
            for column in 0..columns.len() {
                number += 1;
                if column > 0 {
                    sql.push_str(", ");
                }
                sql.push_str(&self.placeholder(number));
            }
            sql.push(')');
        }
        sql
    }
}

/// Adds a bind value to a statement's arguments.
pub fn add<'q, T>(arguments: &mut AnyArguments<'q>, value: T) -> Result<(), ResultsError>
where
    T: 'q + sqlx::Encode<'q, sqlx::Any> + sqlx::Type<sqlx::Any>,
{
    arguments.add(value).map_err(|err| ResultsError::Query { what: "binding a value".into(), source: sqlx::Error::Encode(err) })
}

/// `query` run without keeping it prepared, for every statement that binds an
/// optional float. sqlx 0.8's `Any` driver declares a NULL `f64` as
/// PostgreSQL's `float4` (its `Real` and `Double` nulls are swapped), so a
/// statement that a connection prepared and cached while binding NULL refuses
/// a later run's 8-byte value: "22P03 incorrect binary data format in bind
/// parameter". Unprepared, each run declares the types of its own values.
pub fn binding_optional_floats<'q>(query: AnyQuery<'q>) -> AnyQuery<'q> {
    query.persistent(false)
}

/// A statement on the results database with its bind values.
pub type AnyQuery<'q> = sqlx::query::Query<'q, sqlx::Any, AnyArguments<'q>>;

/// A stored row's text that must name a utility.
pub fn parse_utility(text: &str) -> Result<Utility, ResultsError> {
    text.parse().map_err(|_| ResultsError::Stored(format!("unknown utility {text:?}")))
}

/// A stored row's text that must name a region.
pub fn parse_region(text: &str) -> Result<Region, ResultsError> {
    Region::from_code(text).ok_or_else(|| ResultsError::Stored(format!("unknown region {text:?}")))
}

/// The URL without its password, for messages.
pub fn redact(url: &str) -> String {
    match url.split_once("://").and_then(|(scheme, rest)| rest.split_once('@').map(|(credentials, host)| (scheme, credentials, host))) {
        Some((scheme, credentials, host)) => {
            let user = credentials.split(':').next().unwrap_or_default();
            format!("{scheme}://{user}:***@{host}")
        }
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_password_from_the_environment_completes_a_url_without_one() {
        let with = |url| with_password(url, Some("s3cr/t"));
        assert_eq!(with("postgres://auth@db:5432/auth"), "postgres://auth:s3cr%2Ft@db:5432/auth");
        assert_eq!(with("mysql://auth:own@db/auth"), "mysql://auth:own@db/auth", "the URL's own password wins");
        assert_eq!(with("sqlite://auth-data/results.db"), "sqlite://auth-data/results.db");
        assert_eq!(with_password("postgres://auth@db/auth", None), "postgres://auth@db/auth");
    }

    #[test]
    fn passwords_stay_out_of_messages() {
        assert_eq!(redact("postgres://auth:secret@127.0.0.1:5432/auth"), "postgres://auth:***@127.0.0.1:5432/auth");
        assert_eq!(redact("sqlite://auth-data/results.db"), "sqlite://auth-data/results.db");
    }
}
