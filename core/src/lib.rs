//! The shared vocabulary of AUTH.
//!
//! Every workload crate speaks in these types: a [`Reading`] from a meter, the
//! [`Utility`] it measures, the [`Region`] it lives in, the binary [`codec`]
//! used for log values, the [`PipelineSpec`] that configures everything, and
//! the [`ports`] that the embedded and the real adapters implement.

pub mod batch_report;
pub mod codec;
pub mod dead_letter;
pub mod edge;
pub mod endpoint;
pub mod gateway_key;
pub mod local_day;
pub mod ports;
pub mod reading;
pub mod region;
pub mod registry;
pub mod spec;

pub use dead_letter::{DeadLetter, DeadLetterSource};
pub use reading::{CustomerKind, InvalidReason, Reading, ReceiverClock, Utility};
pub use region::Region;
pub use spec::{ArchiveSpec, BatchSpec, IngestSpec, PipelineSpec};

/// SplitMix64's step: a well-mixed 64-bit hash of its input, fixed forever
/// (partitioning and the simulator's determinism depend on it).
pub fn splitmix64(input: u64) -> u64 {
    let mut z = input.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The log partition of a customer's readings.
///
/// Every producer uses this function, so one customer's readings always land
/// in the same partition of a utility topic and stay ordered.
pub fn partition_for(customer_id: u64, partitions: u32) -> u32 {
    (splitmix64(customer_id) % u64::from(partitions.max(1))) as u32
}

/// Name of the log topic for one utility of a pipeline: `<pipeline>.<utility>`.
pub fn utility_topic(pipeline: &str, utility: Utility) -> String {
    format!("{pipeline}.{}", utility.as_str())
}

/// Name of a pipeline's dead-letter topic: `<pipeline>.dlq`.
pub fn dead_letter_topic(pipeline: &str) -> String {
    format!("{pipeline}.dlq")
}

/// The consumer group of a pipeline's stream processors: `<pipeline>.stream`.
pub fn stream_group(pipeline: &str) -> String {
    format!("{pipeline}.stream")
}

/// The consumer group of a pipeline's archivers: `<pipeline>.archive`.
pub fn archive_group(pipeline: &str) -> String {
    format!("{pipeline}.archive")
}

/// Milliseconds since the Unix epoch by the wall clock (0 before 1970).
pub fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |elapsed| elapsed.as_millis() as i64)
}

/// Name of a pipeline's meter registry topic: `<pipeline>.registry`
/// (compacted, one partition; see [`registry`]).
pub fn registry_topic(pipeline: &str) -> String {
    format!("{pipeline}.registry")
}

/// A topic of a pipeline and how it is made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PipelineTopic {
    pub name: String,
    pub partitions: u32,
    /// Keeps the newest record of each key (Kafka's `cleanup.policy=compact`) instead of a retention window.
    pub compacted: bool,
}

/// Every topic of a pipeline: one per utility (`log.partitions` each), the
/// dead-letter topic (one partition) and the registry topic (one, compacted).
pub fn pipeline_topics(pipeline: &str, spec: &spec::PipelineSpec) -> Vec<PipelineTopic> {
    let mut topics: Vec<PipelineTopic> = spec
        .utilities
        .iter()
        .map(|&utility| PipelineTopic { name: utility_topic(pipeline, utility), partitions: spec.log.partitions, compacted: false })
        .collect();
    topics.push(PipelineTopic { name: dead_letter_topic(pipeline), partitions: 1, compacted: false });
    topics.push(PipelineTopic { name: registry_topic(pipeline), partitions: 1, compacted: true });
    topics
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partitions_spread_and_stay_in_range() {
        let mut counts = [0u32; 8];
        for customer in 0..80_000u64 {
            counts[partition_for(customer, 8) as usize] += 1;
        }
        for count in counts {
            assert!((9_000..11_000).contains(&count), "uneven spread: {counts:?}");
        }
        assert_eq!(partition_for(42, 1), 0);
        assert_eq!(partition_for(42, 0), 0);
    }
}
