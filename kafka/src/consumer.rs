//! A consumer-group member whose partitions start where the application says.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use auth_core::ports::{LogConsumer, LogRecord, PartitionRecords, Polled, PortError, Result, TopicPartition};
use bytes::BytesMut;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext};
use rdkafka::error::KafkaError;
use rdkafka::types::RDKafkaRespErr;
use rdkafka::{ClientConfig, ClientContext, Message, Offset, TopicPartitionList};

use crate::error::port_error;

/// How long the group membership may stay away from "up and steady" (in
/// librdkafka's statistics) before the member is replaced by a new one. Seen
/// in CI: after a broker restart, a session timeout revoked every partition
/// and the member never joined again (no partitions, no error, for minutes).
const REJOIN_AFTER: Duration = Duration::from_secs(40);

/// How often librdkafka reports its statistics (the group's state among them).
const STATISTICS_INTERVAL_MS: &str = "5000";

/// A member of a consumer group. Assignment changes come out of
/// [`LogConsumer::poll`] before any record of the partitions concerned.
///
/// While the application works on the records of one poll, the next batch is
/// already being taken from librdkafka's queue on a blocking thread. That
/// batch is handed out only if nothing moved since it was started (no
/// rebalance, no seek); otherwise it is dropped and read again from the
/// positions the application saw last.
pub struct KafkaConsumer {
    consumer: Arc<BaseConsumer<GroupContext>>,
    /// What the consumer was made from, to replace a stuck member.
    config: ClientConfig,
    topics: Vec<String>,
    group: String,
    topic_names: Arc<HashMap<String, Arc<str>>>,
    prefetch: Option<tokio::task::JoinHandle<Result<Fetched>>>,
}

struct Fetched {
    generation: u64,
    batches: Vec<PartitionRecords>,
}

/// What the rebalance callback (run inside librdkafka's poll) shares with the consumer.
#[derive(Default)]
struct GroupContext {
    state: Mutex<GroupState>,
    /// `state.events` is not empty: lets the fetch loop stop without taking the lock.
    events_pending: AtomicBool,
    membership: Mutex<Membership>,
}

/// The group membership as librdkafka's statistics last showed it.
#[derive(Default)]
struct Membership {
    state: String,
    join_state: String,
    /// Since when it has been away from "up and steady".
    unsettled_since: Option<Instant>,
}

/// The part of librdkafka's statistics read here.
#[derive(serde::Deserialize)]
struct Statistics {
    cgrp: Option<GroupStatistics>,
}

#[derive(serde::Deserialize)]
struct GroupStatistics {
    state: String,
    join_state: String,
}

#[derive(Default)]
struct GroupState {
    events: VecDeque<Polled>,
    /// The partitions of this member and where each continues (`None`: the
    /// group's committed offset, or the start).
    assignment: BTreeMap<TopicPartition, Option<u64>>,
    /// librdkafka waits for an `assign` call: the assignment changed or a
    /// partition was positioned since the last one.
    reassign: bool,
    /// Counts assignment changes and seeks; a fetch started under an older
    /// generation is stale.
    generation: u64,
}

impl GroupState {
    /// Whether a revocation of `partition` waits to be told to the application.
    fn revocation_pending(&self, partition: &TopicPartition) -> bool {
        self.events.iter().any(|event| {
            matches!(event, Polled::Revoked(revoked) | Polled::Lost(revoked) if revoked.contains(partition))
        })
    }
}

impl GroupContext {
    fn lock(&self) -> MutexGuard<'_, GroupState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn membership(&self) -> MutexGuard<'_, Membership> {
        self.membership.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl ClientContext for GroupContext {
    fn stats_raw(&self, statistics: &[u8]) {
        let Ok(Statistics { cgrp: Some(group) }) = serde_json::from_slice::<Statistics>(statistics) else { return };
        let mut membership = self.membership();
        if group.state == "up" && group.join_state == "steady" {
            membership.unsettled_since = None;
        } else if membership.unsettled_since.is_none() {
            membership.unsettled_since = Some(Instant::now());
        }
        membership.state = group.state;
        membership.join_state = group.join_state;
    }
}

impl ConsumerContext for GroupContext {
    fn rebalance(&self, consumer: &BaseConsumer<Self>, err: RDKafkaRespErr, partitions: &mut TopicPartitionList) {
        let changed: Vec<TopicPartition> = partitions
            .elements()
            .iter()
            .map(|element| TopicPartition::new(element.topic(), element.partition() as u32))
            .collect();
        let mut state = self.lock();
        match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => {
                tracing::info!(partitions = ?changed, "Kafka assigned partitions");
                for partition in &changed {
                    state.assignment.insert(partition.clone(), None);
                }
                // The partitions are assigned in `poll`, after the application positioned them.
                state.reassign = true;
                state.events.push_back(Polled::Assigned(changed));
            }
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => {
                // The revocation is completed here, inside the callback, as
                // librdkafka expects: the group goes on at once. The
                // application may still be writing these partitions' state;
                // the epochs it claimed fence those writes off once the new
                // owner has claimed them.
                let lost = consumer.assignment_lost();
                if lost {
                    tracing::warn!(partitions = ?changed, "Kafka lost partitions: the session expired and the group gave them away");
                } else {
                    tracing::info!(partitions = ?changed, "Kafka revoked partitions");
                }
                for partition in &changed {
                    state.assignment.remove(partition);
                }
                if let Err(err) = consumer.unassign() {
                    tracing::warn!(%err, "unassigning revoked partitions failed");
                }
                state.reassign = !state.assignment.is_empty();
                state.events.push_back(if lost { Polled::Lost(changed) } else { Polled::Revoked(changed) });
            }
            other => {
                tracing::warn!(error = ?other, "Kafka rebalance failed; the group retries");
                return;
            }
        }
        state.generation += 1;
        self.events_pending.store(true, Ordering::Release);
    }
}

impl KafkaConsumer {
    pub(crate) fn subscribe(mut config: ClientConfig, group: &str, topics: &[String]) -> Result<Self> {
        config
            .set("group.id", group)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest")
            .set("partition.assignment.strategy", "range")
            .set("session.timeout.ms", "10000")
            .set("heartbeat.interval.ms", "1000")
            .set("fetch.wait.max.ms", "100")
            // Large fetches and a deep local queue: with 1 MiB per partition
            // and 100K queued messages (the defaults) a consumer of 41-byte
            // records waits on fetch round trips and reads less than half as
            // fast (`auth bench kafka`, BENCHMARKS.md).
            .set("max.partition.fetch.bytes", "8388608")
            .set("queued.min.messages", "1000000")
            .set("statistics.interval.ms", STATISTICS_INTERVAL_MS);
        let consumer = member(&config, group, topics)?;
        let topic_names = topics.iter().map(|topic| (topic.clone(), Arc::from(topic.as_str()))).collect();
        Ok(Self {
            consumer: Arc::new(consumer),
            config,
            topics: topics.to_vec(),
            group: group.to_owned(),
            topic_names: Arc::new(topic_names),
            prefetch: None,
        })
    }

    /// Replaces the member when its membership has been stuck away from
    /// "up and steady" for [`REJOIN_AFTER`]: the old one leaves the group
    /// (closing it off the async runtime, as it may wait for the group), a new
    /// one joins. Its partitions, if it still had any, come out as lost.
    /// Called only between fetches and once every group change was told.
    fn replace_if_stuck(&mut self) -> Result<Option<Polled>> {
        let (state, join_state, stuck_for) = {
            let membership = self.consumer.context().membership();
            match membership.unsettled_since {
                Some(since) if since.elapsed() >= REJOIN_AFTER => {
                    (membership.state.clone(), membership.join_state.clone(), since.elapsed())
                }
                _ => return Ok(None),
            }
        };
        let lost: Vec<TopicPartition> = {
            let state = self.consumer.context().lock();
            if !state.events.is_empty() {
                return Ok(None);
            }
            state.assignment.keys().cloned().collect()
        };
        tracing::warn!(
            group = %self.group, %state, %join_state, ?stuck_for,
            "the consumer group membership is stuck; leaving the group and joining it again as a new member"
        );
        let fresh = Arc::new(member(&self.config, &self.group, &self.topics)?);
        let old = std::mem::replace(&mut self.consumer, fresh);
        tokio::task::spawn_blocking(move || drop(old));
        Ok((!lost.is_empty()).then_some(Polled::Lost(lost)))
    }

    /// Hands librdkafka the assignment with the positions the application chose.
    fn apply_pending(&self, state: &mut GroupState) -> Result<()> {
        if !state.reassign {
            return Ok(());
        }
        let mut list = TopicPartitionList::with_capacity(state.assignment.len());
        for (partition, position) in &state.assignment {
            let offset = position.map_or(Offset::Invalid, |offset| Offset::Offset(offset as i64));
            list.add_partition_offset(&partition.topic, partition.partition as i32, offset)
                .map_err(|err| port_error(&format!("position of {partition}"), err))?;
        }
        self.consumer.assign(&list).map_err(|err| port_error(&format!("assignment of group {}", self.group), err))?;
        state.reassign = false;
        Ok(())
    }

    /// Makes the pending librdkafka calls, then takes the oldest group change
    /// not yet told to the application, if any.
    fn settle(&self, state: &mut GroupState) -> Result<Option<Polled>> {
        self.apply_pending(state)?;
        let event = state.events.pop_front();
        self.consumer.context().events_pending.store(!state.events.is_empty(), Ordering::Release);
        Ok(event)
    }

    /// Starts taking the next batch from librdkafka's queue on a blocking thread.
    fn start_fetch(&self, generation: u64, max_records: usize, timeout: Duration) -> tokio::task::JoinHandle<Result<Fetched>> {
        let consumer = Arc::clone(&self.consumer);
        let topic_names = Arc::clone(&self.topic_names);
        tokio::task::spawn_blocking(move || {
            let batches = fetch(&consumer, &topic_names, max_records, timeout)?;
            Ok(Fetched { generation, batches })
        })
    }
}

/// A new member of `group`, subscribed to `topics`.
fn member(config: &ClientConfig, group: &str, topics: &[String]) -> Result<BaseConsumer<GroupContext>> {
    let consumer: BaseConsumer<GroupContext> =
        config.create_with_context(GroupContext::default()).map_err(|err| port_error("Kafka consumer", err))?;
    let names: Vec<&str> = topics.iter().map(String::as_str).collect();
    consumer.subscribe(&names).map_err(|err| port_error(&format!("group {group}"), err))?;
    Ok(consumer)
}

#[async_trait]
impl LogConsumer for KafkaConsumer {
    async fn poll(&mut self, max_records: usize, timeout: Duration) -> Result<Polled> {
        if self.prefetch.is_none()
            && let Some(lost) = self.replace_if_stuck()?
        {
            return Ok(lost);
        }
        let consumer = Arc::clone(&self.consumer);
        let context = consumer.context();
        let running = match self.prefetch.take() {
            Some(running) => running,
            None => {
                let generation = {
                    let mut state = context.lock();
                    if let Some(event) = self.settle(&mut state)? {
                        return Ok(event);
                    }
                    state.generation
                };
                self.start_fetch(generation, max_records, timeout)
            }
        };
        let fetched = running.await.map_err(|err| PortError::Closed(format!("Kafka consumer: {err}")))??;
        let generation = {
            let mut state = context.lock();
            if let Some(event) = self.settle(&mut state)? {
                // Records fetched before the change are dropped: the change is
                // told first, and the assignment made in `settle` or after the
                // application's seeks reads them again from the positions
                // handed out last.
                return Ok(event);
            }
            if fetched.generation != state.generation || fetched.batches.is_empty() {
                return Ok(Polled::Idle);
            }
            for batch in &fetched.batches {
                if let (Some(position), Some(last)) = (state.assignment.get_mut(&batch.partition), batch.records.last()) {
                    *position = Some(last.offset + 1);
                }
            }
            state.generation
        };
        self.prefetch = Some(self.start_fetch(generation, max_records, timeout));
        Ok(Polled::Records(fetched.batches))
    }

    fn seek(&mut self, partition: &TopicPartition, offset: u64) -> Result<()> {
        let mut guard = self.consumer.context().lock();
        let state = &mut *guard;
        if let Some(position) = state.assignment.get_mut(partition) {
            *position = Some(offset);
            state.reassign = true;
            state.generation += 1;
            return Ok(());
        }
        // Revoked inside librdkafka while the application positioned it: the
        // revocation comes out of the next poll, so the seek is moot.
        if state.revocation_pending(partition) {
            return Ok(());
        }
        Err(PortError::Rejected {
            what: format!("seek on {partition}"),
            message: "the partition is not assigned to this consumer".into(),
        })
    }

    async fn commit(&mut self, offsets: &[(TopicPartition, u64)]) -> Result<()> {
        let mut list = TopicPartitionList::with_capacity(offsets.len());
        for (partition, offset) in offsets {
            list.add_partition_offset(&partition.topic, partition.partition as i32, Offset::Offset(*offset as i64))
                .map_err(|err| port_error(&format!("offset of {partition}"), err))?;
        }
        self.consumer
            .commit(&list, CommitMode::Async)
            .map_err(|err| port_error(&format!("commit of group {}", self.group), err))
    }
}

/// Takes up to `max_records` records, waiting up to `timeout` for the first;
/// stops early when the group's assignment changes.
fn fetch(
    consumer: &BaseConsumer<GroupContext>,
    topic_names: &HashMap<String, Arc<str>>,
    max_records: usize,
    timeout: Duration,
) -> Result<Vec<PartitionRecords>> {
    let deadline = Instant::now() + timeout;
    let events_pending = &consumer.context().events_pending;
    let mut batches: Vec<PartitionRecords> = Vec::new();
    let mut buffer = BytesMut::new();
    let mut count = 0;
    while count < max_records {
        let wait = if count == 0 { deadline.saturating_duration_since(Instant::now()) } else { Duration::ZERO };
        match consumer.poll(wait) {
            Some(Ok(message)) => {
                let topic = topic_names.get(message.topic()).cloned().unwrap_or_else(|| Arc::from(message.topic()));
                let partition = message.partition() as u32;
                let key = message.key().unwrap_or_default();
                let value = message.payload().unwrap_or_default();
                if buffer.capacity() - buffer.len() < key.len() + value.len() {
                    buffer.reserve((key.len() + value.len()).max(256 * 1024));
                }
                buffer.extend_from_slice(key);
                let key = buffer.split().freeze();
                buffer.extend_from_slice(value);
                let value = buffer.split().freeze();
                let record = LogRecord {
                    offset: message.offset().max(0) as u64,
                    timestamp_ms: message.timestamp().to_millis(),
                    key,
                    value,
                };
                match batches.last_mut() {
                    Some(batch) if batch.partition.partition == partition && batch.partition.topic == topic => {
                        batch.records.push(record);
                    }
                    _ => batches.push(PartitionRecords {
                        partition: TopicPartition { topic, partition },
                        records: vec![record],
                    }),
                }
                count += 1;
            }
            Some(Err(KafkaError::MessageConsumption(code))) => {
                tracing::warn!(%code, "Kafka consumer: transient error, librdkafka retries");
                if count > 0 || Instant::now() >= deadline {
                    break;
                }
            }
            Some(Err(err)) => return Err(port_error("Kafka consumer", err)),
            None => {
                if count > 0 || Instant::now() >= deadline || events_pending.load(Ordering::Acquire) {
                    break;
                }
            }
        }
        if events_pending.load(Ordering::Acquire) {
            break;
        }
    }
    Ok(batches)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    /// A member that never reaches a broker: the group state is driven by hand,
    /// as librdkafka's rebalance callback would.
    fn offline_member() -> KafkaConsumer {
        KafkaConsumer::subscribe(crate::client_config("127.0.0.1:1"), "offline", &["readings".to_owned()]).unwrap()
    }

    #[test]
    fn a_seek_racing_a_revocation_waits_for_the_revocation_to_be_told() {
        let mut consumer = offline_member();
        let partition = TopicPartition::new("readings", 0);
        {
            let mut state = consumer.consumer.context().lock();
            state.assignment.insert(partition.clone(), None);
        }
        consumer.seek(&partition, 7).unwrap();
        {
            // What the callback does when the group revokes during the application's restore.
            let mut state = consumer.consumer.context().lock();
            state.assignment.remove(&partition);
            state.events.push_back(Polled::Revoked(vec![partition.clone()]));
        }
        consumer.seek(&partition, 7).unwrap();

        let never_assigned = TopicPartition::new("readings", 1);
        let err = consumer.seek(&never_assigned, 0).unwrap_err();
        assert!(err.to_string().contains("not assigned"), "{err}");
    }

    #[test]
    fn the_statistics_tell_when_the_membership_left_up_and_steady() {
        let consumer = offline_member();
        let context = consumer.consumer.context();
        context.stats_raw(br#"{"name": "auth", "cgrp": {"state": "wait-coord", "join_state": "init", "stateage": 3}}"#);
        let since = context.membership().unsettled_since.expect("away from up and steady");
        context.stats_raw(br#"{"cgrp": {"state": "up", "join_state": "wait-join"}}"#);
        assert_eq!(context.membership().unsettled_since, Some(since), "still unsettled, since the first report");
        context.stats_raw(br#"{"cgrp": {"state": "up", "join_state": "steady"}}"#);
        assert_eq!(context.membership().unsettled_since, None);
        context.stats_raw(b"not json");
        assert_eq!(context.membership().state, "up", "unreadable statistics change nothing");
    }

    #[tokio::test]
    async fn a_member_stuck_too_long_is_replaced_and_its_partitions_are_lost() {
        let mut consumer = offline_member();
        let partition = TopicPartition::new("readings", 0);
        consumer.consumer.context().lock().assignment.insert(partition.clone(), Some(5));
        assert!(consumer.replace_if_stuck().unwrap().is_none(), "a settled member stays");

        consumer.consumer.context().membership().unsettled_since = Some(Instant::now() - REJOIN_AFTER);
        consumer.consumer.context().lock().events.push_back(Polled::Assigned(vec![partition.clone()]));
        assert!(consumer.replace_if_stuck().unwrap().is_none(), "group changes not yet told come first");
        consumer.consumer.context().lock().events.clear();

        let Some(Polled::Lost(lost)) = consumer.replace_if_stuck().unwrap() else { panic!("the stuck member's partitions are lost") };
        assert_eq!(lost, vec![partition]);
        assert!(consumer.consumer.context().lock().assignment.is_empty(), "a new member, with nothing yet");
        assert!(consumer.consumer.context().membership().unsettled_since.is_none());
    }
}
