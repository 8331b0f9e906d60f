//! In-process adapters of AUTH's ports, the defaults of `auth up`.
//!
//! They keep the semantics of the real servers rather than shortcuts: the
//! [`EmbeddedLog`] has topics, partitions, offsets, retention and consumer
//! groups with assignment changes, as Kafka has; the [`MemoryStore`] applies a
//! partition's flush atomically and bounds what it keeps, as Redis does.

mod log;
mod store;

pub use log::{EmbeddedLog, Retention};
pub use store::MemoryStore;
