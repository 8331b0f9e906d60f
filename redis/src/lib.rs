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
//! | `customer:<id>` | hash | the customer's open windows: field `<utility>:<width ms>:<start ms>` -> window |
//! | `customer:<id>:<utility>:<width ms>` | string | ring of the customer's closed windows of that size (below) |
//! | `customers` | sorted set | every customer id with windows, scored by when it was last written (UTC ms) |
//! | `region:<utility>:<width ms>` | sorted set | the starts of the region windows kept, scored by start |
//! | `region:<utility>:<width ms>:<start ms>` | hash | field `<region code>/<partition>` -> that partition's part of the window |
//! | `checkpoint:<topic>:<partition>` | string | the partition's checkpoint (state and next offset) |
//! | `progress:<topic>:<partition>` | string (JSON) | the checkpoint's progress: `{"nextOffset", "maxEventMs", "counts"}` |
//! | `epoch:<topic>:<partition>` | string (integer) | the partition's last claimed epoch (`INCR` by each new owner) |
//! | `restated:<utility>` | hash | field `<width ms>:<start ms>` -> version of the batch's last restatement of that window |
//!
//! A ring holds `recent_windows` slots of 41 bytes: the window's start (i64
//! little-endian), then the window. The window starting at `s` lives in slot
//! `(s / width) mod recent_windows` (a day window starts at its region's
//! local midnight, and a region's midnights each fall on their own UTC
//! date: `core::local_day`'s tests hold the table to it), so writing a closed window (`SETRANGE`)
//! pushes out the one `recent_windows` before it without reading anything,
//! and slots never written read as zeros (not closed: skipped). A slot whose
//! start does not belong there (`recent_windows` changed) is skipped too. A
//! customer's read is one round trip with a handful of values, `HGETALL` of
//! its open windows and `MGET` of its rings, whatever the history kept.
//!
//! One [`PartitionFlush`] is one call of a Lua script (atomic, one round
//! trip), or several when it is large: Redis serves no other client while a
//! script runs, so a call writes at most [`WINDOWS_PER_SCRIPT`] windows and
//! [`METERS_PER_SCRIPT`] meters, and the checkpoint goes with the last call.
//! The writes are absolute values, so a flush cut short by a crash is written
//! again, equal, by the replay from the checkpoint before it. Each call
//! first compares the flush's epoch with the partition's and, when
//! a newer owner has claimed it, writes nothing; otherwise it runs its commands:
//! per customer one `HSET` of its changed open windows and, when some closed,
//! one `HDEL` of them from the open hash, per closed window one `SETRANGE` into
//! its ring, and one `EXPIRE` per ring and of the hash; one `ZADD` of the
//! flush's customers; per region window start one `HSET` and `EXPIRE`; per
//! utility and size one `ZADD` and one `ZREMRANGEBYRANK`; the checkpoint's
//! and its progress's `SET`. The script also refuses a flush that writes a restated window
//! (`HEXISTS` per window it writes): the store keeps the restated windows it
//! knows of and leaves them out of flushes, learning them again when refused.
//! A [`Restatement`] is one call of another script, or several as a flush
//! is, that compares its version with the window's and writes the closed
//! windows; its region windows replace the window's hash (`DEL`, then one
//! field `<region code>/batch` per region) in the first call, which also marks
//! the window restated. The restated hashes gain a field per restated day and size.
//! A customer's keys expire when none of its windows closed for
//! `recent_windows` times its largest window (at least a day), so silent
//! customers do not stay forever; a hash whose windows never closed gets that
//! lifetime when it is first written (`EXPIRE ... NX`). Each flush trims the
//! `customers` index of the customers last written longer ago than a day
//! window's lifetime, whose keys have expired. Reads keep the newest `recent_windows` per
//! utility and size, as the in-memory store does.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use async_trait::async_trait;
use auth_core::ports::{
    Aggregate, MeterLastReading, PartitionFlush, PortError, RegionWindow, Restatement, Result, ServingStore, StoredWindow, StreamProgress, TopicPartition,
    WindowOwner, WindowSlot, WindowUpdate,
};
use auth_core::{Region, Utility};
use bytes::Bytes;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{AsyncCommands, RedisError, RetryMethod};

const WINDOW_BYTES: usize = 33;
const RING_SLOT_BYTES: usize = 8 + WINDOW_BYTES;
const DAY_SECS: i64 = 86_400;
/// Members per `ZADD`: a script's command takes at most a few thousand arguments (Lua's stack).
const MEMBERS_PER_COMMAND: usize = 1_000;
/// Windows per script call. Redis serves no other client while a script
/// runs, so a larger flush or restatement is written in several calls.
const WINDOWS_PER_SCRIPT: usize = 1_000;
/// Meters' last readings per script call, for the same reason.
const METERS_PER_SCRIPT: usize = 10_000;

/// The tail of [`FENCED_WRITE`] and [`RESTATE`]: runs the commands that
/// start at `ARGV[at]` (per command its argument count, its name and its
/// arguments) and returns -1.
const RUN_COMMANDS_FROM_AT: &str = r"
local last = #ARGV
while at <= last do
  local count = tonumber(ARGV[at])
  redis.call(unpack(ARGV, at + 1, at + count))
  at = at + count + 1
end
return -1
";

/// One flush, fenced: `KEYS[1]` is the partition's epoch key, `ARGV[1]` the
/// writer's epoch (-1: a write that is no owner's, never fenced), `ARGV[2]`
/// the number of windows the flush writes and then, per window, its restated
/// hash and field; then per command its argument count, its name and its
/// arguments. Returns -1 once every command ran; otherwise runs none and
/// returns the partition's newer epoch when the writer's is older, or -2
/// when one of the windows was restated (the writer's view of the restated
/// windows is out of date). A script runs atomically, as `MULTI`/`EXEC` did.
static FENCED_WRITE: std::sync::LazyLock<redis::Script> = std::sync::LazyLock::new(|| {
    redis::Script::new(&format!(
        r"
local epoch = tonumber(ARGV[1])
if epoch >= 0 then
  local current = tonumber(redis.call('GET', KEYS[1]) or '0')
  if current > epoch then return current end
end
local windows = tonumber(ARGV[2])
for window = 1, windows do
  if redis.call('HEXISTS', ARGV[1 + 2 * window], ARGV[2 + 2 * window]) == 1 then return -2 end
end
local at = 3 + 2 * windows
{RUN_COMMANDS_FROM_AT}",
    ))
});

/// One restatement: `KEYS[1]` is the utility's restated hash, `ARGV[1]` the
/// window's field in it, `ARGV[2]` the restatement's version; then the
/// commands as in [`FENCED_WRITE`]. Returns -1 once every command ran, or the
/// window's newer version, running none.
static RESTATE: std::sync::LazyLock<redis::Script> = std::sync::LazyLock::new(|| {
    redis::Script::new(&format!(
        r"
local version = tonumber(ARGV[2])
local current = tonumber(redis.call('HGET', KEYS[1], ARGV[1]) or '-1')
if current > version then return current end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
local at = 3
{RUN_COMMANDS_FROM_AT}",
    ))
});

/// What [`FENCED_WRITE`] returns when one of the flush's windows was restated.
const RESTATED_SINCE: i64 = -2;
/// Attempts of a flush whose windows are restated while it is written.
const FLUSH_ATTEMPTS: usize = 4;

/// The commands of one flush, as [`FENCED_WRITE`]'s arguments.
struct Commands<'a> {
    invocation: redis::ScriptInvocation<'a>,
}

impl<'a> Commands<'a> {
    /// Starts a command of `arguments` arguments (after its name); the caller adds them.
    fn command(&mut self, name: &str, arguments: usize) -> &mut redis::ScriptInvocation<'a> {
        self.invocation.arg(arguments + 1).arg(name)
    }
}

/// A Redis server as the serving store.
#[derive(Clone)]
pub struct RedisStore {
    connection: ConnectionManager,
    prefix: String,
    recent_windows: usize,
    widths_ms: Vec<i64>,
    /// The restated windows this store knows of; flushes leave them out.
    restated: Arc<RwLock<HashSet<(Utility, WindowSlot)>>>,
}

/// Who wrote a part of a region's window: a field's suffix.
enum RegionPart {
    Partition(u32),
    /// The batch's restatement, which replaces every partition's part.
    Restated,
}

impl RedisStore {
    /// Connects to `url` (`redis://host:port[/db]`) and keeps the keys of
    /// `namespace`; reconnects by itself when the server goes away. Reads
    /// return the newest `recent_windows` of a customer's windows of each of
    /// `widths_ms` (the pipeline's window sizes).
    pub async fn connect(url: &str, namespace: &str, recent_windows: u32, widths_ms: &[i64]) -> Result<Self> {
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
        Ok(Self {
            connection,
            prefix: format!("auth:{namespace}:"),
            recent_windows: recent_windows.max(1) as usize,
            widths_ms: widths_ms.to_vec(),
            restated: Arc::default(),
        })
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

    /// Redis' `used_memory` (INFO memory): the bytes its data and buffers take.
    pub async fn used_memory(&self) -> Result<u64> {
        let info: String = self
            .read(|mut connection| async move { redis::cmd("INFO").arg("memory").query_async(&mut connection).await })
            .await?;
        info.lines()
            .find_map(|line| line.strip_prefix("used_memory:"))
            .and_then(|bytes| bytes.trim().parse().ok())
            .ok_or_else(|| PortError::Rejected { what: "Redis INFO memory".into(), message: "no used_memory".into() })
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

    fn ring_key(&self, customer_id: u64, utility: Utility, width_ms: i64) -> String {
        format!("{}customer:{customer_id}:{utility}:{width_ms}", self.prefix)
    }

    fn region_starts_key(&self, utility: Utility, width_ms: i64) -> String {
        format!("{}region:{utility}:{width_ms}", self.prefix)
    }

    fn epoch_key(&self, partition: &TopicPartition) -> String {
        format!("{}epoch:{}:{}", self.prefix, partition.topic, partition.partition)
    }

    /// The sorted set of every meter the stream saw, scored by its newest reading time.
    fn meters_key(&self) -> String {
        format!("{}meters:last-reading", self.prefix)
    }

    fn restated_key(&self, utility: Utility) -> String {
        format!("{}restated:{utility}", self.prefix)
    }

    fn progress_key(&self, partition: &TopicPartition) -> String {
        format!("{}progress:{}:{}", self.prefix, partition.topic, partition.partition)
    }

    fn checkpoint_key(&self, partition: &TopicPartition) -> String {
        format!("{}checkpoint:{}:{}", self.prefix, partition.topic, partition.partition)
    }

    /// Seconds a key lives after its last write: `recent_windows` of its widest window, at least a day.
    fn ttl_secs(&self, widest_ms: i64) -> i64 {
        (widest_ms / 1_000).saturating_mul(self.recent_windows as i64).max(DAY_SECS)
    }

    fn region_key(&self, utility: Utility, slot: WindowSlot) -> String {
        format!("{}:{}", self.region_starts_key(utility, slot.width_ms), slot.start_ms)
    }

    /// Reads the restated windows again, after a flush was refused for writing one.
    async fn learn_restated(&self) -> Result<()> {
        let mut pipe = redis::pipe();
        for utility in Utility::ALL {
            pipe.hkeys(self.restated_key(utility));
        }
        let fields: Vec<Vec<String>> = self
            .read(|mut connection| {
                let pipe = pipe.clone();
                async move { pipe.query_async(&mut connection).await }
            })
            .await?;
        let mut known = HashSet::new();
        for (utility, fields) in Utility::ALL.into_iter().zip(fields) {
            for field in fields {
                let slot = parse_restated_field(&field).ok_or_else(|| corrupt(format!("{} {field}", self.restated_key(utility))))?;
                known.insert((utility, slot));
            }
        }
        tracing::debug!(restated = known.len(), "restated windows read");
        *self.restated.write().unwrap_or_else(std::sync::PoisonError::into_inner) = known;
        Ok(())
    }

    /// The commands that write `windows`: customers' open and closed windows,
    /// the customer set, and the regions' parts as `part`.
    /// A [`FENCED_WRITE`] call of `flush`'s writer that writes `windows`,
    /// refused when one of them was restated.
    fn fenced_call(&self, flush: &PartitionFlush, windows: &[&WindowUpdate]) -> Commands<'static> {
        let guarded: BTreeSet<(Utility, WindowSlot)> = windows.iter().map(|update| (update.utility, update.slot)).collect();
        let mut call = Commands { invocation: FENCED_WRITE.prepare_invoke() };
        call.invocation.key(self.epoch_key(&flush.partition)).arg(flush.epoch.map_or(-1, |epoch| epoch as i64)).arg(guarded.len());
        for (utility, slot) in &guarded {
            call.invocation.arg(self.restated_key(*utility)).arg(restated_field(*slot));
        }
        self.window_commands(&mut call, windows, &RegionPart::Partition(flush.partition.partition));
        call
    }

    fn window_commands(&self, batch: &mut Commands<'_>, windows: &[&WindowUpdate], part: &RegionPart) {
        let mut customers: BTreeMap<u64, Vec<&WindowUpdate>> = BTreeMap::new();
        let mut regions: BTreeMap<(Utility, WindowSlot), Vec<&WindowUpdate>> = BTreeMap::new();
        for &update in windows {
            match update.owner {
                WindowOwner::Customer(id) => customers.entry(id).or_default().push(update),
                WindowOwner::Region(_) => regions.entry((update.utility, update.slot)).or_default().push(update),
            }
        }
        let recent = self.recent_windows as i64;
        for (&customer_id, updates) in &customers {
            let key = self.customer_key(customer_id);
            let (closed, open): (Vec<&WindowUpdate>, Vec<&WindowUpdate>) =
                updates.iter().copied().partition(|update| update.closed);
            if !open.is_empty() {
                let fields: Vec<(String, Vec<u8>)> = open
                    .iter()
                    .map(|update| (customer_field(update.utility, update.slot), encode_window(&update.aggregate, false)))
                    .collect();
                batch.command("HSET", 1 + 2 * fields.len()).arg(&key).arg(&fields);
                if updates.iter().all(|update| !update.closed) {
                    // A customer whose windows never close (its meter fell
                    // silent at once) still expires: the hash gets a lifetime
                    // when it has none, without renewing it on every flush.
                    let widest = updates.iter().map(|update| update.slot.width_ms).max().unwrap_or(0);
                    batch.command("EXPIRE", 3).arg(&key).arg(self.ttl_secs(widest)).arg("NX");
                }
            }
            // A closed window moves from the open hash to its ring and renews
            // the keys' lifetime: once per window, not per flush.
            if !closed.is_empty() {
                let fields: Vec<String> = closed.iter().map(|update| customer_field(update.utility, update.slot)).collect();
                batch.command("HDEL", 1 + fields.len()).arg(&key).arg(&fields);
                let mut rings = BTreeMap::new();
                for update in &closed {
                    let ring = self.ring_key(customer_id, update.utility, update.slot.width_ms);
                    batch.command("SETRANGE", 3).arg(&ring).arg(ring_offset(update.slot, self.recent_windows)).arg(ring_record(update));
                    rings.insert(ring, update.slot.width_ms);
                }
                for (ring, width_ms) in &rings {
                    batch.command("EXPIRE", 2).arg(ring).arg(self.ttl_secs(*width_ms));
                }
                let widest = updates.iter().map(|update| update.slot.width_ms).max().unwrap_or(0);
                batch.command("EXPIRE", 2).arg(&key).arg(self.ttl_secs(widest));
            }
        }
        // The customer index is scored by when each customer was last
        // written, and trimmed of those whose keys have expired since.
        let now_ms = auth_core::now_ms();
        let index = format!("{}customers", self.prefix);
        let members: Vec<(i64, u64)> = customers.keys().map(|&id| (now_ms, id)).collect();
        for chunk in members.chunks(MEMBERS_PER_COMMAND) {
            batch.command("ZADD", 1 + 2 * chunk.len()).arg(&index).arg(chunk);
        }
        if !customers.is_empty() {
            let expired_before = now_ms.saturating_sub(self.ttl_secs(DAY_SECS * 1_000).saturating_mul(1_000));
            batch.command("ZREMRANGEBYSCORE", 3).arg(&index).arg("-inf").arg(format!("({expired_before}"));
        }
        let mut starts: BTreeMap<(Utility, i64), Vec<(i64, i64)>> = BTreeMap::new();
        for (&(utility, slot), updates) in &regions {
            let key = self.region_key(utility, slot);
            let fields: Vec<(String, Vec<u8>)> = updates
                .iter()
                .filter_map(|update| match update.owner {
                    WindowOwner::Region(region) => Some((
                        match part {
                            RegionPart::Partition(partition) => format!("{}/{partition}", region.code()),
                            RegionPart::Restated => format!("{}/batch", region.code()),
                        },
                        encode_window(&update.aggregate, update.closed),
                    )),
                    WindowOwner::Customer(_) => None,
                })
                .collect();
            batch.command("HSET", 1 + 2 * fields.len()).arg(&key).arg(&fields);
            batch.command("EXPIRE", 2).arg(&key).arg(self.ttl_secs(slot.width_ms));
            starts.entry((utility, slot.width_ms)).or_default().push((slot.start_ms, slot.start_ms));
        }
        for ((utility, width_ms), members) in &starts {
            let key = self.region_starts_key(*utility, *width_ms);
            for chunk in members.chunks(MEMBERS_PER_COMMAND) {
                batch.command("ZADD", 1 + 2 * chunk.len()).arg(&key).arg(chunk);
            }
            batch.command("ZREMRANGEBYRANK", 3).arg(&key).arg(0).arg(-recent - 1);
            batch.command("EXPIRE", 2).arg(&key).arg(self.ttl_secs(*width_ms));
        }
    }
}

/// Whether the request may succeed when tried again: redis-rs says so of a
/// server loading its data or failing over, and BUSY (a script running past
/// `busy-reply-threshold`) passes too, though redis-rs knows it only as an
/// extension error.
fn port_error(what: &str, err: RedisError) -> PortError {
    let (what, message) = (what.to_owned(), err.to_string());
    if matches!(err.retry_method(), RetryMethod::NoRetry) && err.code() != Some("BUSY") {
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

/// Splits a write's windows into the parts of its script calls: the region
/// windows first, then the customers', at most [`WINDOWS_PER_SCRIPT`] to a
/// part unless one customer has more, a customer's windows in one part.
fn script_parts<'w>(windows: &[&'w WindowUpdate]) -> Vec<Vec<&'w WindowUpdate>> {
    let mut ordered = windows.to_vec();
    ordered.sort_by_key(|update| match update.owner {
        WindowOwner::Region(_) => None,
        WindowOwner::Customer(customer_id) => Some(customer_id),
    });
    let mut parts: Vec<Vec<&WindowUpdate>> = Vec::new();
    for update in ordered {
        match parts.last_mut() {
            Some(part) if part.len() < WINDOWS_PER_SCRIPT || part.last().is_some_and(|last| last.owner == update.owner) => {
                part.push(update);
            }
            _ => parts.push(vec![update]),
        }
    }
    parts
}

/// Where a window's slot starts in a ring of `recent` slots.
fn ring_offset(slot: WindowSlot, recent: usize) -> usize {
    (slot.start_ms.div_euclid(slot.width_ms.max(1)).rem_euclid(recent as i64) as usize) * RING_SLOT_BYTES
}

/// The closed windows a ring of `recent` slots holds, skipping slots never
/// written and slots whose window does not belong there (`recent` changed).
fn ring_windows(utility: Utility, width_ms: i64, ring: &[u8], recent: usize, into: &mut Vec<StoredWindow>) {
    for (index, record) in ring.chunks_exact(RING_SLOT_BYTES).enumerate() {
        let (start, window) = record.split_at(8);
        let start_ms = i64::from_le_bytes(start.try_into().unwrap_or_default());
        let slot = WindowSlot { width_ms, start_ms };
        match decode_window(window) {
            Some((aggregate, true))
                if ring_offset(slot, recent) == index * RING_SLOT_BYTES =>
            {
                into.push(StoredWindow { utility, slot, aggregate, closed: true });
            }
            _ => {}
        }
    }
}

fn ring_record(update: &WindowUpdate) -> Vec<u8> {
    let mut record = Vec::with_capacity(RING_SLOT_BYTES);
    record.extend_from_slice(&update.slot.start_ms.to_le_bytes());
    record.extend_from_slice(&encode_window(&update.aggregate, true));
    record
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

fn progress_json(progress: &StreamProgress) -> Result<String> {
    serde_json::to_string(progress)
        .map_err(|err| PortError::Rejected { what: "a checkpoint's progress".into(), message: err.to_string() })
}

fn restated_field(slot: WindowSlot) -> String {
    format!("{}:{}", slot.width_ms, slot.start_ms)
}

fn parse_restated_field(field: &str) -> Option<WindowSlot> {
    let (width_ms, start_ms) = field.split_once(':')?;
    Some(WindowSlot { width_ms: width_ms.parse().ok()?, start_ms: start_ms.parse().ok()? })
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
        'attempts: for _ in 0..FLUSH_ATTEMPTS {
            let windows: Vec<&WindowUpdate> = {
                let restated = self.restated.read().unwrap_or_else(std::sync::PoisonError::into_inner);
                flush.windows.iter().filter(|update| !restated.contains(&(update.utility, update.slot))).collect()
            };
            let mut calls: Vec<Commands<'static>> = script_parts(&windows).iter().map(|part| self.fenced_call(&flush, part)).collect();
            for meters in flush.meters.chunks(METERS_PER_SCRIPT) {
                let mut call = self.fenced_call(&flush, &[]);
                for meters in meters.chunks(MEMBERS_PER_COMMAND) {
                    // GT: a meter's time only moves forward (a replay writes nothing new).
                    call.command("ZADD", 2 + 2 * meters.len()).arg(self.meters_key()).arg("GT");
                    for meter in meters {
                        call.invocation.arg(meter.ts_ms).arg(meter_member(meter.meter_id));
                    }
                }
                calls.push(call);
            }
            if calls.is_empty() {
                // A checkpoint alone.
                calls.push(self.fenced_call(&flush, &[]));
            }
            // The checkpoint goes with the last call: once it is stored, every
            // window and meter of the flush is.
            if let (Some(checkpoint), Some(last)) = (&flush.checkpoint, calls.last_mut()) {
                last.command("SET", 2).arg(self.checkpoint_key(&flush.partition)).arg(&checkpoint.state[..]);
                last.command("SET", 2).arg(self.progress_key(&flush.partition)).arg(progress_json(&checkpoint.progress)?);
            }
            for call in calls {
                let current: i64 = call
                    .invocation
                    .invoke_async(&mut self.connection.clone())
                    .await
                    .map_err(|err| port_error(&format!("Redis write of {}", flush.partition), err))?;
                match (flush.epoch, current) {
                    (_, RESTATED_SINCE) => {
                        self.learn_restated().await?;
                        continue 'attempts;
                    }
                    (Some(epoch), current) if current >= 0 => {
                        return Err(PortError::Fenced { partition: flush.partition, epoch, current: current as u64 });
                    }
                    _ => {}
                }
            }
            return Ok(());
        }
        Err(PortError::Unavailable {
            what: format!("Redis write of {}", flush.partition),
            message: format!("its windows were restated during each of {FLUSH_ATTEMPTS} attempts"),
        })
    }

    #[tracing::instrument(level = "debug", skip_all, fields(utility = %restatement.utility, start_ms = restatement.slot.start_ms, version = restatement.version))]
    async fn restate(&self, restatement: Restatement) -> Result<()> {
        let Restatement { utility, slot, version, customers, regions } = &restatement;
        let closed = |owner, aggregate: &Aggregate| WindowUpdate { owner, utility: *utility, slot: *slot, aggregate: *aggregate, closed: true };
        let windows: Vec<WindowUpdate> = customers
            .iter()
            .map(|(customer_id, aggregate)| closed(WindowOwner::Customer(*customer_id), aggregate))
            .chain(regions.iter().map(|(region, aggregate)| closed(WindowOwner::Region(*region), aggregate)))
            .collect();
        // The first call marks the window restated (the stream's writes of it
        // are refused from then on) and replaces the regions' totals; the
        // calls after it write the rest of the customers at the same version.
        let mut parts = script_parts(&windows.iter().collect::<Vec<_>>());
        if parts.is_empty() {
            // A restatement of nothing still records its version.
            parts.push(Vec::new());
        }
        for (index, part) in parts.iter().enumerate() {
            let mut batch = Commands { invocation: RESTATE.prepare_invoke() };
            batch.invocation.key(self.restated_key(*utility)).arg(restated_field(*slot)).arg(*version);
            if index == 0 && !regions.is_empty() {
                batch.command("DEL", 1).arg(self.region_key(*utility, *slot));
            }
            self.window_commands(&mut batch, part, &RegionPart::Restated);
            let current: i64 = batch
                .invocation
                .invoke_async(&mut self.connection.clone())
                .await
                .map_err(|err| port_error(&format!("Redis restatement of {utility} {slot:?}"), err))?;
            if current >= 0 {
                return Err(PortError::Superseded { utility: *utility, slot: *slot, version: *version, current: current as u64 });
            }
        }
        self.restated.write().unwrap_or_else(std::sync::PoisonError::into_inner).insert((*utility, *slot));
        Ok(())
    }

    async fn claim(&self, partition: &TopicPartition) -> Result<u64> {
        let key = self.epoch_key(partition);
        let epoch: u64 = redis::cmd("INCR")
            .arg(&key)
            .query_async(&mut self.connection.clone())
            .await
            .map_err(|err| port_error(&format!("Redis claim of {partition}"), err))?;
        Ok(epoch)
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

    async fn load_progress(&self, partition: &TopicPartition) -> Result<Option<StreamProgress>> {
        let key = self.progress_key(partition);
        let saved: Option<String> = self
            .read(|mut connection| {
                let key = key.clone();
                async move { connection.get(key).await }
            })
            .await?;
        saved.map(|json| serde_json::from_str(&json).map_err(|_| corrupt(key.clone()))).transpose()
    }

    async fn customer_windows(&self, customer_id: u64) -> Result<Vec<StoredWindow>> {
        let key = self.customer_key(customer_id);
        let series: Vec<(Utility, i64)> = Utility::ALL
            .into_iter()
            .flat_map(|utility| self.widths_ms.iter().map(move |&width_ms| (utility, width_ms)))
            .collect();
        let mut pipe = redis::pipe();
        pipe.hgetall(&key);
        pipe.cmd("MGET").arg(series.iter().map(|&(utility, width_ms)| self.ring_key(customer_id, utility, width_ms)).collect::<Vec<_>>());
        let (open, rings): (Vec<(String, Vec<u8>)>, Vec<Option<Vec<u8>>>) = self
            .read(|mut connection| {
                let pipe = pipe.clone();
                async move { pipe.query_async(&mut connection).await }
            })
            .await?;
        let mut windows = Vec::new();
        for (&(utility, width_ms), ring) in series.iter().zip(&rings) {
            if let Some(ring) = ring {
                ring_windows(utility, width_ms, ring, self.recent_windows, &mut windows);
            }
        }
        let ring_windows = windows.len();
        for (field, value) in open {
            let (utility, slot) = parse_customer_field(&field).ok_or_else(|| corrupt(format!("{key} {field}")))?;
            let (aggregate, closed) = decode_window(&value).ok_or_else(|| corrupt(format!("{key} {field}")))?;
            // A window both in its ring and open was closed before a processor
            // replayed it from an older checkpoint: the closed one is complete.
            if !windows[..ring_windows].iter().any(|window| window.utility == utility && window.slot == slot) {
                windows.push(StoredWindow { utility, slot, aggregate, closed });
            }
        }
        // A ring holds at most `recent_windows`; only its open windows can take
        // a series past that, so most reads sort once.
        let mut per_series: BTreeMap<(Utility, i64), usize> = BTreeMap::new();
        for window in &windows {
            *per_series.entry((window.utility, window.slot.width_ms)).or_default() += 1;
        }
        if per_series.values().any(|&count| count > self.recent_windows) {
            windows.sort_unstable_by_key(|window| (window.utility, window.slot.width_ms, std::cmp::Reverse(window.slot.start_ms)));
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
        }
        windows.sort_unstable_by_key(|window| (window.slot.start_ms, window.slot.width_ms, window.utility));
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
        let key = format!("{}customers", self.prefix);
        // The index is scored by last write: the whole of it, sorted here (tests and tools read it).
        let mut ids: Vec<u64> = self
            .read(|mut connection| {
                let key = key.clone();
                async move { connection.zrange(key, 0, -1).await }
            })
            .await?;
        ids.sort_unstable();
        ids.truncate(limit);
        Ok(ids)
    }

    async fn meters_silent_since(&self, before_ms: i64, skip: usize, limit: usize) -> Result<Vec<MeterLastReading>> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let key = self.meters_key();
        let scored: Vec<(String, f64)> = self
            .read(|mut connection| {
                let key = key.clone();
                async move {
                    redis::cmd("ZRANGE")
                        .arg(key)
                        .arg("-inf")
                        .arg(format!("({before_ms}"))
                        .arg("BYSCORE")
                        .arg("LIMIT")
                        .arg(skip)
                        .arg(limit)
                        .arg("WITHSCORES")
                        .query_async(&mut connection)
                        .await
                }
            })
            .await?;
        scored
            .into_iter()
            .map(|(member, score)| match member.parse() {
                Ok(meter_id) => Ok(MeterLastReading { meter_id, ts_ms: score as i64 }),
                Err(_) => Err(corrupt(format!("{key} {member}"))),
            })
            .collect()
    }
}

/// A meter's member in the meters' sorted set: zero-padded, so that the
/// set's order among equal times (by member) is the meters' numeric order.
fn meter_member(meter_id: u64) -> String {
    format!("{meter_id:020}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_busy_server_is_unavailable_and_a_wrong_command_is_rejected() {
        let busy = redis::make_extension_error("BUSY".into(), Some("Redis is busy running a script.".into()));
        assert!(matches!(port_error("Redis read", busy), PortError::Unavailable { .. }));
        let unknown = redis::make_extension_error("ERR".into(), Some("unknown command".into()));
        assert!(matches!(port_error("Redis read", unknown), PortError::Rejected { .. }));
    }

    #[test]
    fn script_parts_are_bounded_and_keep_a_customers_windows_together() {
        let window = |owner, start_ms| WindowUpdate {
            owner,
            utility: Utility::Gas,
            slot: WindowSlot { width_ms: 60_000, start_ms },
            aggregate: Aggregate::of(1.0),
            closed: false,
        };
        let region = WindowOwner::Region(Region::from_index(3).expect("a region"));
        let windows: Vec<WindowUpdate> = (0..WINDOWS_PER_SCRIPT as u64 + 1)
            .flat_map(|customer_id| [window(WindowOwner::Customer(customer_id), 0), window(WindowOwner::Customer(customer_id), 60_000)])
            .chain([window(region, 0)])
            .collect();
        let parts = script_parts(&windows.iter().collect::<Vec<_>>());
        let sizes: Vec<usize> = parts.iter().map(Vec::len).collect();
        assert_eq!(sizes, vec![WINDOWS_PER_SCRIPT + 1, WINDOWS_PER_SCRIPT, 2], "the region's window first, then customers of two windows each");
        assert_eq!(parts[0][0].owner, region);
        assert_eq!(parts.concat().len(), windows.len());
        assert!(script_parts(&[]).is_empty(), "no windows, no part");
    }

    #[test]
    fn windows_and_fields_round_trip() {
        let aggregate = Aggregate { sum: 12.5, count: 3, min: 0.25, max: 9.0 };
        assert_eq!(decode_window(&encode_window(&aggregate, true)), Some((aggregate, true)));
        assert_eq!(decode_window(&[0u8; 5]), None);
        let slot = WindowSlot { width_ms: 60_000, start_ms: -120_000 };
        assert_eq!(parse_customer_field(&customer_field(Utility::Gas, slot)), Some((Utility::Gas, slot)));
        assert_eq!(parse_customer_field("steam:1:2"), None);
    }

    #[test]
    fn rings_keep_what_belongs_in_each_slot() {
        let closed = |start_ms: i64, sum: f64| WindowUpdate {
            owner: WindowOwner::Customer(1),
            utility: Utility::Water,
            slot: WindowSlot { width_ms: 60_000, start_ms },
            aggregate: Aggregate::of(sum),
            closed: true,
        };
        let mut ring = vec![0u8; 3 * RING_SLOT_BYTES];
        for (start_ms, sum) in [(120_000, 1.0), (180_000, 2.0), (300_000, 3.0)] {
            let update = closed(start_ms, sum);
            let at = ring_offset(update.slot, 3);
            ring[at..at + RING_SLOT_BYTES].copy_from_slice(&ring_record(&update));
        }
        let read = |recent: usize| {
            let mut windows = Vec::new();
            ring_windows(Utility::Water, 60_000, &ring, recent, &mut windows);
            windows.iter().map(|window| (window.slot.start_ms, window.aggregate.sum)).collect::<Vec<_>>()
        };
        // 300 000 took 120 000's slot (2); slot 1 was never written.
        assert_eq!(read(3), vec![(180_000, 2.0), (300_000, 3.0)]);
        // Under another `recent_windows` no window is where it would belong.
        assert_eq!(read(2), vec![]);
    }
}
