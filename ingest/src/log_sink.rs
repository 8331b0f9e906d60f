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
        let mut records = LogRecords::new(std::mem::take(&mut self.buffer), self.partitions, batch.len());
        for item in batch {
            records.push(item.customer_id(), item.utility(), |buffer| match item {
                Simulated::Reading(reading) => codec::encode_into(reading, buffer),
                Simulated::Garbage { bytes, .. } => buffer.put_slice(bytes),
            });
        }
        let (per_utility, buffer) = records.finish();
        self.buffer = buffer;
        per_utility
    }
}

/// The log records of a batch, as every writer of utility topics makes them:
/// keyed by customer id (decimal ASCII), in the partition [`partition_for`]
/// gives, one list per utility, keys and values sharing one buffer.
pub(crate) struct LogRecords {
    buffer: BytesMut,
    partitions: u32,
    per_utility: [Vec<OutRecord>; 3],
    digits: itoa::Buffer,
}

impl LogRecords {
    pub(crate) fn new(mut buffer: BytesMut, partitions: u32, expected: usize) -> Self {
        buffer.reserve(expected * (codec::ENCODED_LEN + 20));
        Self { buffer, partitions, per_utility: Default::default(), digits: itoa::Buffer::new() }
    }

    /// Adds one record whose value `write_value` puts in the buffer.
    pub(crate) fn push(&mut self, customer_id: u64, utility: Utility, write_value: impl FnOnce(&mut BytesMut)) {
        self.buffer.put_slice(self.digits.format(customer_id).as_bytes());
        let key = self.buffer.split().freeze();
        write_value(&mut self.buffer);
        let value = self.buffer.split().freeze();
        let partition = partition_for(customer_id, self.partitions);
        self.per_utility[utility.index()].push(OutRecord { partition, key, value });
    }

    /// The records per utility, and the buffer for the next batch.
    pub(crate) fn finish(self) -> ([Vec<OutRecord>; 3], BytesMut) {
        (self.per_utility, self.buffer)
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
