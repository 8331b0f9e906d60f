//! Metric names of the stream processor, in one place.

/// Readings taken from the log, by `utility` and `outcome`
/// (`counted`, `counted_late`, `duplicate`, `too_late`, `malformed`, and
/// `quarantined`: dated too far ahead of the log's clock).
pub const READINGS: &str = "auth_stream_readings_total";
/// Windows closed by the watermark and emitted, by `utility`.
pub const WINDOWS_EMITTED: &str = "auth_stream_windows_emitted_total";
/// Readings past the allowed lateness, left to the daily batch, by `utility`.
pub const LATE_READINGS: &str = "auth_stream_late_readings_total";
/// Readings counted for their customer but past their region window's lateness, by `utility`.
pub const REGION_LATE_READINGS: &str = "auth_stream_region_late_readings_total";
/// Records sent to the dead-letter topic.
pub const DEAD_LETTERS: &str = "auth_stream_dead_letters_total";
/// The operator watermark (minimum over active partitions), UTC ms.
pub const WATERMARK: &str = "auth_stream_watermark_ms";
/// Seconds since the last checkpoint completed.
pub const CHECKPOINT_AGE: &str = "auth_stream_checkpoint_age_seconds";
/// Duration of flushes to the serving store.
pub const FLUSH_DURATION: &str = "auth_stream_flush_duration_seconds";
/// Records in the log not yet processed, over assigned partitions.
pub const CONSUMER_LAG: &str = "auth_stream_consumer_lag_records";
/// Partitions assigned to this processor and restored from their checkpoints.
pub const ASSIGNED_PARTITIONS: &str = "auth_stream_assigned_partitions";
/// Times the processor restored its partitions from their checkpoints after a server was unavailable.
pub const RECOVERIES: &str = "auth_stream_recoveries_total";
/// Partitions assigned to this processor whose checkpoint could not be loaded yet (retried).
pub const UNRESTORED_PARTITIONS: &str = "auth_stream_unrestored_partitions";
/// Partitions dropped because a newer owner claimed them (the store refused this processor's write).
pub const FENCED_PARTITIONS: &str = "auth_stream_fenced_partitions_total";
