//! Writes simulated readings to a pipeline's utility topics.

use std::sync::Arc;

use auth_core::ports::{LogProducer, OutRecord, PortError};
use auth_core::{Utility, codec, partition_for, utility_topic};
use bytes::{BufMut, BytesMut};

use crate::simulator::{ReadingSink, Simulated};

#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    #[error("writing {count} readings to topic {topic} failed: {source}")]
    Send { topic: String, count: usize, source: PortError },
}

/// Encodes readings (codec v1), keys them by customer id (decimal ASCII), picks
/// the partition with [`partition_for`], and sends each utility's records to
/// `<pipeline>.<utility>`; a write returns when the log holds them durably.
pub struct LogSink {
    producer: Arc<dyn LogProducer>,
    topics: [String; 3],
    partitions: u32,
    buffer: BytesMut,
}

impl LogSink {
    pub fn new(producer: Arc<dyn LogProducer>, pipeline: &str, partitions: u32) -> Self {
        Self {
            producer,
            topics: Utility::ALL.map(|utility| utility_topic(pipeline, utility)),
            partitions,
            buffer: BytesMut::new(),
        }
    }

    /// Encodes a batch into one record list per utility, sharing one buffer.
    pub fn encode(&mut self, batch: &[Simulated]) -> [Vec<OutRecord>; 3] {
        let mut per_utility: [Vec<OutRecord>; 3] = Default::default();
        self.buffer.reserve(batch.len() * (codec::ENCODED_LEN + 20));
        let mut digits = itoa::Buffer::new();
        for item in batch {
            let customer_id = item.customer_id();
            self.buffer.put_slice(digits.format(customer_id).as_bytes());
            let key = self.buffer.split().freeze();
            match item {
                Simulated::Reading(reading) => codec::encode_into(reading, &mut self.buffer),
                Simulated::Garbage { bytes, .. } => self.buffer.put_slice(bytes),
            }
            let value = self.buffer.split().freeze();
            per_utility[item.utility().index()].push(OutRecord {
                partition: partition_for(customer_id, self.partitions),
                key,
                value,
            });
        }
        per_utility
    }
}

impl ReadingSink for LogSink {
    type Error = SinkError;

    async fn write(&mut self, batch: &[Simulated]) -> Result<(), SinkError> {
        let per_utility = self.encode(batch);
        for (topic, records) in self.topics.iter().zip(per_utility) {
            if records.is_empty() {
                continue;
            }
            let count = records.len();
            self.producer
                .send(topic, records)
                .await
                .map_err(|source| SinkError::Send { topic: topic.clone(), count, source })?;
        }
        Ok(())
    }
}
