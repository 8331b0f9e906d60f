//! The serving store on Redis.
//!
//! # Layout
//!
//! Every key starts with `auth:<namespace>:` (the namespace is the pipeline's
//! name). A window's value is 33 bytes: `closed` (u8, 0 or 1), then `sum`,
//! `count` (u64), `min` and `max`, each 8 bytes little-endian (f64 unless said).
//!
//! | key | type | content |
//! |---|---|---|
//! | `customer:<id>` | hash | field `<utility>:<width ms>:<start ms>` -> window |
//! | `customers` | sorted set | every customer id with windows, scored by itself |
//! | `region:<utility>:<width ms>` | sorted set | the starts of the region windows kept, scored by start |
//! | `region:<utility>:<width ms>:<start ms>` | hash | field `<region code>/<partition>` -> that partition's part of the window |
//! | `checkpoint:<topic>:<partition>` | string | the partition's checkpoint (state and next offset) |
//!
//! One [`PartitionFlush`] is one `MULTI`/`EXEC` transaction sent as one pipeline:
//! per customer one `HSET` of its changed windows and, when one of them
//! closed, one `HDEL` of the windows that this pushed out of the newest
//! `recent_windows` and one `EXPIRE`; one `ZADD` of the flush's customers; per
//! region window start one `HSET` and `EXPIRE`; per utility and size one `ZADD`
//! and one `ZREMRANGEBYRANK`; the checkpoint's `SET`. A customer key expires
//! when none of its windows closed for `recent_windows` times its largest
//! window (at least a day), so silent customers do not stay forever. Reads keep
//! the newest `recent_windows` per utility and size, as the in-memory store does.

use std::collections::BTreeMap;
use std::time::Duration;

use async_trait::async_trait;
use auth_core::ports::{
    Aggregate, PartitionFlush, PortError, RegionWindow, Result, ServingStore, StoredWindow, TopicPartition,
    WindowOwner, WindowSlot, WindowUpdate,
};
use auth_core::{Region, Utility};
use bytes::Bytes;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{AsyncCommands, RedisError, RetryMethod};

const WINDOW_BYTES: usize = 33;
const DAY_SECS: i64 = 86_400;

/// A Redis server as the serving store.
#[derive(Clone)]
pub struct RedisStore {
    connection: ConnectionManager,
    prefix: String,
    recent_windows: usize,
}

impl RedisStore {
    /// Connects to `url` (`redis://host:port[/db]`) and keeps the keys of
    /// `namespace`; reconnects by itself when the server goes away.
    pub async fn connect(url: &str, namespace: &str, recent_windows: u32) -> Result<Self> {
        let client = redis::Client::open(url)
            .map_err(|err| PortError::Rejected { what: format!("Redis URL {url:?}"), message: err.to_string() })?;
        let config = ConnectionManagerConfig::new()
            .set_number_of_retries(3)
            .set_max_delay(Duration::from_secs(2))
            .set_connection_timeout(Some(Duration::from_secs(5)))
            .set_response_timeout(Some(Duration::from_secs(30)));
        let connection =
            ConnectionManager::new_with_config(client, config).await.map_err(|err| port_error("Redis", err))?;
        tracing::info!(url, namespace, "connected to Redis");
        Ok(Self { connection, prefix: format!("auth:{namespace}:"), recent_windows: recent_windows.max(1) as usize })
    }

    /// Commands Redis has processed since it started (`INFO stats`), to measure writes per reading.
    pub async fn commands_processed(&self) -> Result<u64> {
        let info: String = self
            .read(|mut connection| async move { redis::cmd("INFO").arg("stats").query_async(&mut connection).await })
            .await?;
        info.lines()
            .find_map(|line| line.strip_prefix("total_commands_processed:"))
            .and_then(|count| count.trim().parse().ok())
            .ok_or_else(|| PortError::Rejected {
                what: "Redis INFO stats".into(),
                message: "no total_commands_processed".into(),
            })
    }

    /// Runs a read, once more on a fresh connection when the first attempt
    /// found the connection dropped (e.g. Redis restarted since the last request).
    async fn read<T, F, Fut>(&self, request: F) -> Result<T>
    where
        F: Fn(ConnectionManager) -> Fut,
        Fut: std::future::Future<Output = redis::RedisResult<T>>,
    {
        match request(self.connection.clone()).await {
            Err(err) if err.is_connection_dropped() || err.is_io_error() || err.is_connection_refusal() => {
                tracing::debug!(error = %err, "Redis connection dropped; reading again");
                request(self.connection.clone()).await.map_err(read_error)
            }
            outcome => outcome.map_err(read_error),
        }
    }

    /// Deletes every key of this store's namespace (windows, customers,
    /// checkpoints); returns how many there were.
    pub async fn delete_namespace(&self) -> Result<u64> {
        let mut connection = self.connection.clone();
        let pattern = format!("{}*", self.prefix);
        let mut cursor = 0u64;
        let mut deleted = 0u64;
        loop {
            let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(&pattern)
                .arg("COUNT")
                .arg(10_000)
                .query_async(&mut connection)
                .await
                .map_err(|err| port_error("Redis SCAN", err))?;
            if !keys.is_empty() {
                deleted += keys.len() as u64;
                redis::cmd("UNLINK")
                    .arg(&keys)
                    .query_async::<()>(&mut connection)
                    .await
                    .map_err(|err| port_error("Redis UNLINK", err))?;
            }
            if next == 0 {
                return Ok(deleted);
            }
            cursor = next;
        }
    }

    fn customer_key(&self, customer_id: u64) -> String {
        format!("{}customer:{customer_id}", self.prefix)
    }

    fn region_starts_key(&self, utility: Utility, width_ms: i64) -> String {
        format!("{}region:{utility}:{width_ms}", self.prefix)
    }

    fn checkpoint_key(&self, partition: &TopicPartition) -> String {
        format!("{}checkpoint:{}:{}", self.prefix, partition.topic, partition.partition)
    }

    /// Seconds a key lives after its last write: `recent_windows` of its widest window, at least a day.
    fn ttl_secs(&self, widest_ms: i64) -> i64 {
        (widest_ms / 1_000).saturating_mul(self.recent_windows as i64).max(DAY_SECS)
    }
}

fn port_error(what: &str, err: RedisError) -> PortError {
    let (what, message) = (what.to_owned(), err.to_string());
    if matches!(err.retry_method(), RetryMethod::NoRetry) {
        PortError::Rejected { what, message }
    } else {
        PortError::Unavailable { what, message }
    }
}

fn read_error(err: RedisError) -> PortError {
    port_error("Redis read", err)
}

fn encode_window(aggregate: &Aggregate, closed: bool) -> Vec<u8> {
    let mut out = vec![0u8; WINDOW_BYTES];
    out[0] = u8::from(closed);
    out[1..9].copy_from_slice(&aggregate.sum.to_le_bytes());
    out[9..17].copy_from_slice(&aggregate.count.to_le_bytes());
    out[17..25].copy_from_slice(&aggregate.min.to_le_bytes());
    out[25..33].copy_from_slice(&aggregate.max.to_le_bytes());
    out
}

fn decode_window(bytes: &[u8]) -> Option<(Aggregate, bool)> {
    let bytes: &[u8; WINDOW_BYTES] = bytes.try_into().ok()?;
    let word = |at: usize| -> [u8; 8] { bytes[at..at + 8].try_into().unwrap_or_default() };
    let aggregate = Aggregate {
        sum: f64::from_le_bytes(word(1)),
        count: u64::from_le_bytes(word(9)),
        min: f64::from_le_bytes(word(17)),
        max: f64::from_le_bytes(word(25)),
    };
    Some((aggregate, bytes[0] == 1))
}

fn customer_field(utility: Utility, slot: WindowSlot) -> String {
    format!("{utility}:{}:{}", slot.width_ms, slot.start_ms)
}

fn parse_customer_field(field: &str) -> Option<(Utility, WindowSlot)> {
    let mut parts = field.split(':');
    let name = parts.next()?;
    let utility = Utility::ALL.into_iter().find(|utility| utility.as_str() == name)?;
    let width_ms = parts.next()?.parse().ok()?;
    let start_ms = parts.next()?.parse().ok()?;
    Some((utility, WindowSlot { width_ms, start_ms }))
}

fn corrupt(what: String) -> PortError {
    PortError::Rejected { what, message: "holds a value this version cannot read".into() }
}

#[async_trait]
impl ServingStore for RedisStore {
    #[tracing::instrument(level = "debug", skip_all, fields(partition = %flush.partition, windows = flush.windows.len()))]
    async fn apply(&self, flush: PartitionFlush) -> Result<()> {
        let mut customers: BTreeMap<u64, Vec<&WindowUpdate>> = BTreeMap::new();
        let mut regions: BTreeMap<(Utility, WindowSlot), Vec<&WindowUpdate>> = BTreeMap::new();
        for update in &flush.windows {
            match update.owner {
                WindowOwner::Customer(id) => customers.entry(id).or_default().push(update),
                WindowOwner::Region(_) => regions.entry((update.utility, update.slot)).or_default().push(update),
            }
        }
        let recent = self.recent_windows as i64;
        let mut pipe = redis::pipe();
        pipe.atomic();
        for (&customer_id, updates) in &customers {
            let key = self.customer_key(customer_id);
            let fields: Vec<(String, Vec<u8>)> = updates
                .iter()
                .map(|update| {
                    (customer_field(update.utility, update.slot), encode_window(&update.aggregate, update.closed))
                })
                .collect();
            pipe.hset_multiple(&key, &fields).ignore();
            // A window that closes pushes the one `recent_windows` before it
            // out, and renews the key's lifetime: once per window, not per flush.
            let stale: Vec<String> = updates
                .iter()
                .filter(|update| update.closed)
                .map(|update| {
                    let slot = update.slot;
                    customer_field(update.utility, WindowSlot { start_ms: slot.start_ms - recent * slot.width_ms, ..slot })
                })
                .collect();
            if !stale.is_empty() {
                let widest = updates.iter().map(|update| update.slot.width_ms).max().unwrap_or(0);
                pipe.hdel(&key, &stale).ignore();
                pipe.expire(&key, self.ttl_secs(widest)).ignore();
            }
        }
        if !customers.is_empty() {
            let members: Vec<(u64, u64)> = customers.keys().map(|&id| (id, id)).collect();
            pipe.zadd_multiple(format!("{}customers", self.prefix), &members).ignore();
        }
        let mut starts: BTreeMap<(Utility, i64), Vec<(i64, i64)>> = BTreeMap::new();
        for (&(utility, slot), updates) in &regions {
            let key = format!("{}:{}", self.region_starts_key(utility, slot.width_ms), slot.start_ms);
            let fields: Vec<(String, Vec<u8>)> = updates
                .iter()
                .filter_map(|update| match update.owner {
                    WindowOwner::Region(region) => Some((
                        format!("{}/{}", region.code(), flush.partition.partition),
                        encode_window(&update.aggregate, update.closed),
                    )),
                    WindowOwner::Customer(_) => None,
                })
                .collect();
            pipe.hset_multiple(&key, &fields).ignore();
            pipe.expire(&key, self.ttl_secs(slot.width_ms)).ignore();
            starts.entry((utility, slot.width_ms)).or_default().push((slot.start_ms, slot.start_ms));
        }
        for ((utility, width_ms), members) in &starts {
            let key = self.region_starts_key(*utility, *width_ms);
            pipe.zadd_multiple(&key, members).ignore();
            pipe.zremrangebyrank(&key, 0, -(recent as isize) - 1).ignore();
            pipe.expire(&key, self.ttl_secs(*width_ms)).ignore();
        }
        if let Some(checkpoint) = &flush.checkpoint {
            pipe.set(self.checkpoint_key(&flush.partition), &checkpoint[..]).ignore();
        }
        pipe.query_async::<()>(&mut self.connection.clone())
            .await
            .map_err(|err| port_error(&format!("Redis write of {}", flush.partition), err))
    }

    async fn load_checkpoint(&self, partition: &TopicPartition) -> Result<Option<Bytes>> {
        let key = self.checkpoint_key(partition);
        let saved: Option<Vec<u8>> = self
            .read(|mut connection| {
                let key = key.clone();
                async move { connection.get(key).await }
            })
            .await?;
        Ok(saved.map(Bytes::from))
    }

    async fn customer_windows(&self, customer_id: u64) -> Result<Vec<StoredWindow>> {
        let key = self.customer_key(customer_id);
        let fields: Vec<(String, Vec<u8>)> = self
            .read(|mut connection| {
                let key = key.clone();
                async move { connection.hgetall(key).await }
            })
            .await?;
        let mut windows = Vec::with_capacity(fields.len());
        for (field, value) in fields {
            let (utility, slot) = parse_customer_field(&field).ok_or_else(|| corrupt(format!("{key} {field}")))?;
            let (aggregate, closed) = decode_window(&value).ok_or_else(|| corrupt(format!("{key} {field}")))?;
            windows.push(StoredWindow { utility, slot, aggregate, closed });
        }
        windows.sort_by_key(|window| (window.utility, window.slot.width_ms, std::cmp::Reverse(window.slot.start_ms)));
        let mut kept = 0;
        let mut series = None;
        windows.retain(|window| {
            let this = (window.utility, window.slot.width_ms);
            if series != Some(this) {
                series = Some(this);
                kept = 0;
            }
            kept += 1;
            kept <= self.recent_windows
        });
        windows.sort_by_key(|window| (window.slot.start_ms, window.slot.width_ms, window.utility));
        Ok(windows)
    }

    async fn region_windows(&self, width_ms: i64, since_ms: i64) -> Result<Vec<RegionWindow>> {
        let mut starts = redis::pipe();
        for utility in Utility::ALL {
            starts.zrangebyscore(self.region_starts_key(utility, width_ms), since_ms, "+inf");
        }
        let starts: Vec<Vec<i64>> = self
            .read(|mut connection| {
                let starts = starts.clone();
                async move { starts.query_async(&mut connection).await }
            })
            .await?;
        let buckets: Vec<(Utility, i64)> = Utility::ALL
            .into_iter()
            .zip(starts)
            .flat_map(|(utility, starts)| starts.into_iter().map(move |start_ms| (utility, start_ms)))
            .collect();
        if buckets.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        for &(utility, start_ms) in &buckets {
            pipe.hgetall(format!("{}:{start_ms}", self.region_starts_key(utility, width_ms)));
        }
        let contents: Vec<Vec<(String, Vec<u8>)>> = self
            .read(|mut connection| {
                let pipe = pipe.clone();
                async move { pipe.query_async(&mut connection).await }
            })
            .await?;
        let mut merged: BTreeMap<(Region, Utility, i64), (Aggregate, bool)> = BTreeMap::new();
        for (&(utility, start_ms), fields) in buckets.iter().zip(contents) {
            for (field, value) in fields {
                let what = || format!("{}:{start_ms} {field}", self.region_starts_key(utility, width_ms));
                let region = field
                    .split_once('/')
                    .and_then(|(code, _)| Region::from_code(code))
                    .ok_or_else(|| corrupt(what()))?;
                let (aggregate, closed) = decode_window(&value).ok_or_else(|| corrupt(what()))?;
                merged
                    .entry((region, utility, start_ms))
                    .and_modify(|(total, all_closed)| {
                        total.merge(&aggregate);
                        *all_closed &= closed;
                    })
                    .or_insert((aggregate, closed));
            }
        }
        Ok(merged
            .into_iter()
            .map(|((region, utility, start_ms), (aggregate, closed))| RegionWindow {
                region,
                window: StoredWindow { utility, slot: WindowSlot { width_ms, start_ms }, aggregate, closed },
            })
            .collect())
    }

    async fn known_customers(&self, limit: usize) -> Result<Vec<u64>> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let stop = isize::try_from(limit - 1).unwrap_or(-1);
        let key = format!("{}customers", self.prefix);
        self.read(|mut connection| {
            let key = key.clone();
            async move { connection.zrange(key, 0, stop).await }
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_and_fields_round_trip() {
        let aggregate = Aggregate { sum: 12.5, count: 3, min: 0.25, max: 9.0 };
        assert_eq!(decode_window(&encode_window(&aggregate, true)), Some((aggregate, true)));
        assert_eq!(decode_window(&[0u8; 5]), None);
        let slot = WindowSlot { width_ms: 60_000, start_ms: -120_000 };
        assert_eq!(parse_customer_field(&customer_field(Utility::Gas, slot)), Some((Utility::Gas, slot)));
        assert_eq!(parse_customer_field("steam:1:2"), None);
    }
}
