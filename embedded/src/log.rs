//! The embedded reading log.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use auth_core::ports::{
    LogConsumer, LogProducer, LogRecord, OutRecord, PartitionRecords, Polled, PortError, ReadingLog, Result,
    TopicPartition,
};
use tokio::sync::Notify;

/// How long and how much a partition keeps (Kafka's `retention.ms` and `retention.bytes`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    pub max_age: Duration,
    pub max_bytes_per_partition: u64,
}

/// A partitioned, offset-addressed log held in memory, shared by every
/// producer and consumer of one process. Cloning shares the log.
#[derive(Clone)]
pub struct EmbeddedLog {
    inner: Arc<Inner>,
}

struct Inner {
    retention: Retention,
    topics: RwLock<HashMap<String, Arc<Topic>>>,
    groups: Mutex<HashMap<String, Group>>,
    appended: Notify,
    next_member: AtomicU64,
}

struct Topic {
    partitions: RwLock<Vec<Arc<Mutex<Partition>>>>,
}

#[derive(Default)]
struct Partition {
    start_offset: u64,
    bytes: u64,
    records: VecDeque<Stored>,
}

struct Stored {
    appended_ms: u64,
    record: LogRecord,
}

#[derive(Default)]
struct Group {
    generation: u64,
    /// Member id -> subscribed topics.
    members: HashMap<u64, Vec<String>>,
    committed: HashMap<TopicPartition, u64>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |elapsed| elapsed.as_millis() as u64)
}

/// What a record costs the partition: its bytes, plus, in memory, its bookkeeping,
/// so that `retention.bytes` bounds the embedded log's real footprint.
fn record_bytes(record: &LogRecord) -> u64 {
    (record.key.len() + record.value.len() + size_of::<Stored>()) as u64
}

impl Partition {
    fn end_offset(&self) -> u64 {
        self.start_offset + self.records.len() as u64
    }

    fn enforce(&mut self, retention: Retention, now_ms: u64) {
        let oldest_kept_ms = now_ms.saturating_sub(retention.max_age.as_millis() as u64);
        while let Some(front) = self.records.front() {
            if self.bytes <= retention.max_bytes_per_partition && front.appended_ms >= oldest_kept_ms {
                break;
            }
            self.bytes -= record_bytes(&front.record);
            self.records.pop_front();
            self.start_offset += 1;
        }
    }
}

impl EmbeddedLog {
    pub fn new(retention: Retention) -> Self {
        Self {
            inner: Arc::new(Inner {
                retention,
                topics: RwLock::new(HashMap::new()),
                groups: Mutex::new(HashMap::new()),
                appended: Notify::new(),
                next_member: AtomicU64::new(0),
            }),
        }
    }

    /// Lowest offset still kept in a partition (older records fell to retention).
    pub fn start_offset(&self, partition: &TopicPartition) -> Result<u64> {
        let partition = self.inner.partition(partition)?;
        Ok(lock(&partition).start_offset)
    }
}

impl Inner {
    fn topic(&self, name: &str) -> Result<Arc<Topic>> {
        let topics = self.topics.read().unwrap_or_else(std::sync::PoisonError::into_inner);
        topics.get(name).cloned().ok_or_else(|| PortError::Rejected {
            what: format!("topic {name}"),
            message: "does not exist".into(),
        })
    }

    fn partition(&self, tp: &TopicPartition) -> Result<Arc<Mutex<Partition>>> {
        let topic = self.topic(&tp.topic)?;
        let partitions = topic.partitions.read().unwrap_or_else(std::sync::PoisonError::into_inner);
        partitions.get(tp.partition as usize).cloned().ok_or_else(|| PortError::Rejected {
            what: format!("partition {tp}"),
            message: format!("topic has {} partitions", partitions.len()),
        })
    }

    fn partition_count(&self, name: &str) -> Result<u32> {
        let topic = self.topic(name)?;
        let count = topic.partitions.read().unwrap_or_else(std::sync::PoisonError::into_inner).len();
        Ok(count as u32)
    }

    /// Partitions of `member` in its group: each topic's partitions dealt
    /// round-robin over the members subscribed to it, in member id order.
    fn assignment(&self, group: &Group, member: u64) -> BTreeSet<TopicPartition> {
        let mut assigned = BTreeSet::new();
        let Some(topics) = group.members.get(&member) else { return assigned };
        for topic in topics {
            let mut subscribers: Vec<u64> =
                group.members.iter().filter(|(_, subscribed)| subscribed.contains(topic)).map(|(&id, _)| id).collect();
            subscribers.sort_unstable();
            let Some(rank) = subscribers.iter().position(|&id| id == member) else { continue };
            let count = self.partition_count(topic).unwrap_or(0);
            assigned.extend(
                (0..count).filter(|partition| *partition as usize % subscribers.len() == rank).map(|p| TopicPartition::new(topic, p)),
            );
        }
        assigned
    }

    fn bump_generations(&self) {
        for group in lock(&self.groups).values_mut() {
            group.generation += 1;
        }
        self.appended.notify_waiters();
    }
}

#[async_trait]
impl ReadingLog for EmbeddedLog {
    async fn ensure_topic(&self, topic: &str, partitions: u32) -> Result<()> {
        let grown = {
            let mut topics = self.inner.topics.write().unwrap_or_else(std::sync::PoisonError::into_inner);
            let entry = topics
                .entry(topic.to_owned())
                .or_insert_with(|| Arc::new(Topic { partitions: RwLock::new(Vec::new()) }));
            let mut existing = entry.partitions.write().unwrap_or_else(std::sync::PoisonError::into_inner);
            let grown = existing.len() < partitions as usize;
            while existing.len() < partitions as usize {
                existing.push(Arc::new(Mutex::new(Partition::default())));
            }
            grown
        };
        if grown {
            self.inner.bump_generations();
        }
        Ok(())
    }

    async fn partitions(&self, topic: &str) -> Result<u32> {
        self.inner.partition_count(topic)
    }

    async fn end_offsets(&self, topic: &str) -> Result<Vec<u64>> {
        let topic = self.inner.topic(topic)?;
        let partitions = topic.partitions.read().unwrap_or_else(std::sync::PoisonError::into_inner);
        Ok(partitions.iter().map(|partition| lock(partition).end_offset()).collect())
    }

    fn producer(&self) -> Result<Arc<dyn LogProducer>> {
        Ok(Arc::new(self.clone()))
    }

    fn consumer(&self, group: &str, topics: &[String]) -> Result<Box<dyn LogConsumer>> {
        for topic in topics {
            self.inner.topic(topic)?;
        }
        let member = self.inner.next_member.fetch_add(1, Ordering::Relaxed);
        {
            let mut groups = lock(&self.inner.groups);
            let state = groups.entry(group.to_owned()).or_default();
            state.members.insert(member, topics.to_vec());
            state.generation += 1;
        }
        self.inner.appended.notify_waiters();
        Ok(Box::new(EmbeddedConsumer {
            log: Arc::clone(&self.inner),
            group: group.to_owned(),
            member,
            generation: None,
            assignment: BTreeSet::new(),
            positions: HashMap::new(),
            pending_assigned: None,
            next_partition: 0,
        }))
    }
}

#[async_trait]
impl LogProducer for EmbeddedLog {
    async fn send(&self, topic: &str, records: Vec<OutRecord>) -> Result<()> {
        let topic_state = self.inner.topic(topic)?;
        let partitions = topic_state.partitions.read().unwrap_or_else(std::sync::PoisonError::into_inner).clone();
        if let Some(bad) = records.iter().find(|record| record.partition as usize >= partitions.len()) {
            return Err(PortError::Rejected {
                what: format!("record for {topic}/{}", bad.partition),
                message: format!("topic has {} partitions", partitions.len()),
            });
        }
        let appended_ms = now_ms();
        let mut by_partition: Vec<Vec<OutRecord>> = vec![Vec::new(); partitions.len()];
        for record in records {
            by_partition[record.partition as usize].push(record);
        }
        for (partition, batch) in partitions.iter().zip(by_partition) {
            if batch.is_empty() {
                continue;
            }
            let mut partition = lock(partition);
            for OutRecord { key, value, .. } in batch {
                let offset = partition.end_offset();
                let record = LogRecord { offset, timestamp_ms: i64::try_from(appended_ms).ok(), key, value };
                partition.bytes += record_bytes(&record);
                partition.records.push_back(Stored { appended_ms, record });
            }
            partition.enforce(self.inner.retention, appended_ms);
        }
        self.inner.appended.notify_waiters();
        Ok(())
    }
}

struct EmbeddedConsumer {
    log: Arc<Inner>,
    group: String,
    member: u64,
    generation: Option<u64>,
    assignment: BTreeSet<TopicPartition>,
    positions: HashMap<TopicPartition, u64>,
    pending_assigned: Option<Vec<TopicPartition>>,
    /// Where the next poll starts reading, so every partition gets its turn.
    next_partition: usize,
}

impl EmbeddedConsumer {
    /// Compares the group's generation with the one this consumer last saw;
    /// on a change, returns what was revoked and queues what was assigned.
    fn rebalance(&mut self) -> Option<Polled> {
        if let Some(assigned) = self.pending_assigned.take() {
            return Some(Polled::Assigned(assigned));
        }
        let (generation, assignment, committed) = {
            let groups = lock(&self.log.groups);
            let group = groups.get(&self.group)?;
            if Some(group.generation) == self.generation {
                return None;
            }
            let assignment = self.log.assignment(group, self.member);
            let committed: HashMap<TopicPartition, u64> = assignment
                .iter()
                .filter_map(|tp| group.committed.get(tp).map(|&offset| (tp.clone(), offset)))
                .collect();
            (group.generation, assignment, committed)
        };
        self.generation = Some(generation);
        let revoked: Vec<TopicPartition> = self.assignment.difference(&assignment).cloned().collect();
        let assigned: Vec<TopicPartition> = assignment.difference(&self.assignment).cloned().collect();
        for tp in &revoked {
            self.positions.remove(tp);
        }
        for tp in &assigned {
            let start = self.log.partition(tp).map(|partition| lock(&partition).start_offset).unwrap_or(0);
            self.positions.insert(tp.clone(), committed.get(tp).copied().unwrap_or(start));
        }
        self.assignment = assignment;
        match (revoked.is_empty(), assigned.is_empty()) {
            (true, true) => None,
            (true, false) => Some(Polled::Assigned(assigned)),
            (false, true) => Some(Polled::Revoked(revoked)),
            (false, false) => {
                self.pending_assigned = Some(assigned);
                Some(Polled::Revoked(revoked))
            }
        }
    }

    fn read(&mut self, max_records: usize) -> Result<Vec<PartitionRecords>> {
        let assigned: Vec<TopicPartition> = self.assignment.iter().cloned().collect();
        let mut batches = Vec::new();
        let mut budget = max_records;
        for step in 0..assigned.len() {
            if budget == 0 {
                break;
            }
            let tp = &assigned[(self.next_partition + step) % assigned.len()];
            let position = self.positions.get(tp).copied().unwrap_or(0);
            let partition = self.log.partition(tp)?;
            let partition = lock(&partition);
            let from = if position < partition.start_offset {
                tracing::warn!(partition = %tp, position, start = partition.start_offset, "position fell to retention, continuing at the oldest record kept");
                partition.start_offset
            } else {
                position
            };
            let skip = (from - partition.start_offset) as usize;
            let records: Vec<LogRecord> =
                partition.records.range(skip..).take(budget).map(|stored| stored.record.clone()).collect();
            if let Some(last) = records.last() {
                self.positions.insert(tp.clone(), last.offset + 1);
                budget -= records.len();
                batches.push(PartitionRecords { partition: tp.clone(), records });
            }
        }
        self.next_partition = if assigned.is_empty() { 0 } else { (self.next_partition + 1) % assigned.len() };
        Ok(batches)
    }
}

#[async_trait]
impl LogConsumer for EmbeddedConsumer {
    async fn poll(&mut self, max_records: usize, timeout: Duration) -> Result<Polled> {
        let deadline = tokio::time::Instant::now() + timeout;
        let log = Arc::clone(&self.log);
        loop {
            let appended = log.appended.notified();
            tokio::pin!(appended);
            appended.as_mut().enable();
            if let Some(change) = self.rebalance() {
                return Ok(change);
            }
            let batches = self.read(max_records.max(1))?;
            if !batches.is_empty() {
                return Ok(Polled::Records(batches));
            }
            if tokio::time::timeout_at(deadline, appended).await.is_err() {
                return Ok(Polled::Idle);
            }
        }
    }

    fn seek(&mut self, partition: &TopicPartition, offset: u64) -> Result<()> {
        if !self.assignment.contains(partition) {
            return Err(PortError::Rejected {
                what: format!("seek on {partition}"),
                message: "partition is not assigned to this consumer".into(),
            });
        }
        self.positions.insert(partition.clone(), offset);
        Ok(())
    }

    async fn commit(&mut self, offsets: &[(TopicPartition, u64)]) -> Result<()> {
        let mut groups = lock(&self.log.groups);
        let group = groups.entry(self.group.clone()).or_default();
        for (tp, offset) in offsets {
            group.committed.insert(tp.clone(), *offset);
        }
        Ok(())
    }
}

impl Drop for EmbeddedConsumer {
    fn drop(&mut self) {
        let mut groups = lock(&self.log.groups);
        if let Some(group) = groups.get_mut(&self.group) {
            group.members.remove(&self.member);
            group.generation += 1;
        }
        drop(groups);
        self.log.appended.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;

    fn log() -> EmbeddedLog {
        EmbeddedLog::new(Retention { max_age: Duration::from_secs(3_600), max_bytes_per_partition: 1 << 30 })
    }

    fn records(partition: u32, values: &[&str]) -> Vec<OutRecord> {
        values
            .iter()
            .map(|value| OutRecord { partition, key: Bytes::from_static(b"k"), value: Bytes::from(value.to_string()) })
            .collect()
    }

    async fn poll_records(consumer: &mut Box<dyn LogConsumer>) -> Vec<(u32, u64, String)> {
        let mut seen = Vec::new();
        loop {
            match consumer.poll(100, Duration::from_millis(20)).await.expect("poll") {
                Polled::Records(batches) => {
                    for batch in batches {
                        for record in batch.records {
                            let value = String::from_utf8_lossy(&record.value).into_owned();
                            seen.push((batch.partition.partition, record.offset, value));
                        }
                    }
                }
                Polled::Idle => return seen,
                Polled::Assigned(_) | Polled::Revoked(_) | Polled::Lost(_) => {}
            }
        }
    }

    #[tokio::test]
    async fn offsets_per_partition_and_assignment_first() {
        let log = log();
        log.ensure_topic("t", 2).await.expect("topic");
        let producer = log.producer().expect("producer");
        producer.send("t", records(0, &["a", "b"])).await.expect("send");
        producer.send("t", records(1, &["c"])).await.expect("send");
        let mut consumer = log.consumer("g", &["t".into()]).expect("consumer");
        let first = consumer.poll(10, Duration::from_millis(10)).await.expect("poll");
        assert!(matches!(first, Polled::Assigned(ref tps) if tps.len() == 2), "{first:?}");
        let mut seen = poll_records(&mut consumer).await;
        seen.sort();
        assert_eq!(seen, vec![(0, 0, "a".into()), (0, 1, "b".into()), (1, 0, "c".into())]);
        assert_eq!(log.end_offsets("t").await.expect("offsets"), vec![2, 1]);
    }

    #[tokio::test]
    async fn a_second_member_takes_half_and_leaving_gives_it_back() {
        let log = log();
        log.ensure_topic("t", 4).await.expect("topic");
        let mut first = log.consumer("g", &["t".into()]).expect("consumer");
        assert!(matches!(first.poll(10, Duration::ZERO).await.expect("poll"), Polled::Assigned(tps) if tps.len() == 4));
        let mut second = log.consumer("g", &["t".into()]).expect("consumer");
        assert!(matches!(first.poll(10, Duration::ZERO).await.expect("poll"), Polled::Revoked(tps) if tps.len() == 2));
        assert!(matches!(second.poll(10, Duration::ZERO).await.expect("poll"), Polled::Assigned(tps) if tps.len() == 2));
        drop(second);
        assert!(matches!(first.poll(10, Duration::ZERO).await.expect("poll"), Polled::Assigned(tps) if tps.len() == 2));
    }

    #[tokio::test]
    async fn committed_offsets_and_seek() {
        let log = log();
        log.ensure_topic("t", 1).await.expect("topic");
        log.producer().expect("producer").send("t", records(0, &["a", "b", "c"])).await.expect("send");
        let mut consumer = log.consumer("g", &["t".into()]).expect("consumer");
        assert_eq!(poll_records(&mut consumer).await.len(), 3);
        consumer.commit(&[(TopicPartition::new("t", 0), 2)]).await.expect("commit");
        consumer.seek(&TopicPartition::new("t", 0), 1).expect("seek");
        assert_eq!(poll_records(&mut consumer).await, vec![(0, 1, "b".into()), (0, 2, "c".into())]);
        drop(consumer);
        let mut again = log.consumer("g", &["t".into()]).expect("consumer");
        assert_eq!(poll_records(&mut again).await, vec![(0, 2, "c".into())]);
    }

    #[tokio::test]
    async fn retention_drops_oldest_and_consumers_skip_ahead() {
        let per_record = 2 + size_of::<Stored>() as u64;
        let log = EmbeddedLog::new(Retention { max_age: Duration::from_secs(3_600), max_bytes_per_partition: 2 * per_record });
        log.ensure_topic("t", 1).await.expect("topic");
        log.producer().expect("producer").send("t", records(0, &["a", "b", "c", "d"])).await.expect("send");
        assert_eq!(log.start_offset(&TopicPartition::new("t", 0)).expect("start"), 2);
        let mut consumer = log.consumer("g", &["t".into()]).expect("consumer");
        assert_eq!(poll_records(&mut consumer).await, vec![(0, 2, "c".into()), (0, 3, "d".into())]);
    }

    #[tokio::test]
    async fn poll_wakes_on_append_and_bad_partitions_are_refused() {
        let log = log();
        log.ensure_topic("t", 1).await.expect("topic");
        let mut consumer = log.consumer("g", &["t".into()]).expect("consumer");
        assert!(matches!(consumer.poll(10, Duration::ZERO).await.expect("poll"), Polled::Assigned(_)));
        let producer = log.producer().expect("producer");
        let sender = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(20)).await;
            producer.send("t", records(0, &["late"])).await
        });
        let polled = consumer.poll(10, Duration::from_secs(10)).await.expect("poll");
        assert!(matches!(polled, Polled::Records(ref batches) if batches[0].records.len() == 1), "{polled:?}");
        sender.await.expect("join").expect("send");
        let refused = log.producer().expect("producer").send("t", records(3, &["x"])).await;
        assert!(matches!(refused, Err(PortError::Rejected { .. })));
        assert!(log.consumer("g", &["missing".into()]).is_err());
    }
}
