//! The daily batch: recomputes a day from the master data, the source of
//! truth, with DataFusion; writes the results into the results database
//! (SQLite, PostgreSQL or MySQL/MariaDB through `sqlx`), one date in one
//! transaction; compares them with the stream's totals (reconciliation) and
//! restates the serving store's day totals with them.
//!
//! The master data's files are sorted by customer, meter, event time and log
//! offset, and a customer's readings never leave their log partition. So, per
//! utility and partition, a DataFusion query merges the day's files in that
//! order without sorting (as many partitions at once as there are cores), and
//! [`fold::ReadingFold`] folds the merged stream in one pass, one customer at
//! a time: it keeps the first copy of a repeated reading (same meter and
//! event time, lowest offset, as the stream does) and sums each customer's
//! hours. The three outputs come from those sums ([`fold::DayFold`]): daily
//! usage per customer and utility with the peak hour, hourly usage per region
//! and utility, and the top customers per region and utility. Memory holds
//! one customer per partition being folded, plus the outputs.

pub mod completeness;
mod day;
pub mod edits;
pub mod estimate;
pub mod fold;
pub mod job;
pub mod registers;
pub mod restate;
pub mod results;
pub mod schedule;
pub mod settle;

pub use day::{DayError, DaySummary, Serving, newest_settled_date, run_day};
pub use completeness::Expectations;
pub use estimate::{EstimatedRun, EstimationMethod, Estimator, Profiles};
pub use fold::{CustomerDay, DayOutputs, EditedInterval, MeterGap, RegionHour, SuspectInterval, SuspectRule, TopCustomer, UtilityTotal};
pub use job::{BatchError, BatchJob, DayInputs};
pub use auth_results::ResultsError;
pub use results::{Reconciliation, Restatement, ResultsDb};

/// How many customers per region and utility the top list keeps.
pub const TOP_CUSTOMERS: usize = 10;

/// Days computed by this process. The duration and time of the last success
/// are recorded in the results database (`batch_runs`), which the API exports.
pub const METRIC_DAYS: &str = "auth_batch_days_total";
