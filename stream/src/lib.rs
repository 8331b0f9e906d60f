//! The stream engine: event-time tumbling windows over the reading log.
//!
//! A [`Processor`] joins the pipeline's consumer group on the utility topics.
//! For each assigned partition it keeps [`PartitionWindows`]: per customer and
//! per region, a bin per window size with sum, count, min and max. Readings are
//! deduplicated by (meter, event time); a reading whose smallest window is past
//! the allowed lateness is counted as too late and left to the daily batch.
//!
//! # Serving-store layout
//!
//! Each flush writes, per partition and atomically, whole-window upserts:
//! `(customer, utility, width, start) -> aggregate, closed` and
//! `(region, utility, width, start, partition) -> aggregate, closed` (a region's
//! window is the merge of its partitions' parts), plus, at a checkpoint, the
//! partition's state and next offset ([`checkpoint`]). Today's totals are the
//! one-day windows, which the engine always keeps. On Redis these become the
//! keys `auth:<pipeline>:customer:<id>[:<utility>:<width>]`, `region:<utility>:<width>[:<start>]`,
//! `customers` and `checkpoint:<topic>:<partition>`, each with its type, TTL
//! and byte layout in the `auth-redis` crate (`redis/src/lib.rs`).
//!
//! # Watermarks
//!
//! Event time is tracked per customer: a customer's windows close on its own
//! watermark (its newest event time, capped at the log's append time, minus
//! the out-of-orderness bound), region windows and the settling of a day on
//! the partition's. Readings dated too far ahead of the log's clock are
//! quarantined to the dead-letter topic. Every rule depends only on the
//! partition's records, so a replay from a checkpoint gives exactly the same
//! windows; `stream/README.md` states the rules with a worked example. The
//! operator watermark, the minimum over the partitions that are not idle, is
//! published as `auth_stream_watermark_ms`.

pub mod checkpoint;
pub mod metrics;
mod processor;
mod watermark;
mod window;

pub use processor::{Processor, ProcessorConfig, Result, Step, StreamError};
pub use watermark::WatermarkTracker;
pub use window::{Outcome, PartitionCounts, PartitionWindows, WindowConfig};
