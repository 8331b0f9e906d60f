//! What every AUTH role runs on.
//!
//! - [`partitioned`]: the partitioned-consumer runtime that the stream
//!   processor and the archiver are written on (after Arroyo's operator
//!   model): it owns the group membership, restores each assigned partition
//!   (with retries; a partition is never silently orphaned), drives the
//!   flush and checkpoint cadence, commits, measures lag, drops partitions
//!   that were lost or fenced, and rides out unavailable servers with
//!   jittered backoff.
//! - [`shutdown`]: one cancellation type for every role, cancelled on Ctrl-C or SIGTERM.
//! - [`telemetry`]: logs (`tracing`) and the Prometheus `/metrics` endpoint.
//! - [`http`]: serving a public router with header-read and request timeouts.

pub mod http;
pub mod partitioned;
pub mod shutdown;
pub mod telemetry;

pub use tokio_util::sync::CancellationToken;
