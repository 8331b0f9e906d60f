//! Gateway keys: what a meter or concentrator presents as `Authorization: Bearer <key>`.
//!
//! A key reads `auth_<id>_<secret>`; the key file (JSON,
//! [`auth_core::gateway_key::KeyFile`]) keeps, per id, a name, the regions
//! the key may send readings for (all when empty) and an argon2id hash of the
//! whole key, never the key itself. `auth keys create` prints a new key once.
//! A gateway reads one or more key files (on Kubernetes, the user's and the
//! one the operator writes for the pipeline's simulator). A key is checked
//! against its hash the first time it is seen; the gateway then remembers
//! it, so argon2's deliberate cost is paid once per key, not per request. The
//! files are read again when one changes, so keys created or revoked while
//! the gateway runs take effect.
//!
//! A hostile client cannot make the gateway pay argon2 per request: a wrong
//! key is remembered as wrong (a bounded set), and each key id gets a small
//! budget of verifications ([`VERIFICATIONS_PER_MINUTE`]); beyond it a key of
//! that id is refused as throttled (429) until the budget refills.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use argon2::password_hash::{PasswordHash, PasswordVerifier};
use argon2::Argon2;
use auth_core::Region;
pub use auth_core::gateway_key::KeyScope;
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
pub use auth_core::gateway_key::{IssueError, KeyFile, KeyRecord};
use auth_core::registry::Registry;

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("cannot read the key file {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("the key file {path} is not valid: {source}")]
    Parse { path: PathBuf, source: serde_json::Error },
    #[error("cannot write the key file {path}: {source}")]
    Write { path: PathBuf, source: std::io::Error },
    #[error(transparent)]
    Issue(#[from] IssueError),
    #[error("no key with id `{0}`")]
    UnknownId(String),
    #[error("key {0} is scoped to regions: its meters come from the registry (give the results database: --config or --database-url)")]
    RegionsNeedRegistry(String),
    #[error("the keys' meter scopes name more than {max} topics; scope concentrators to fewer meters, or by region")]
    TooManyTopics { max: usize },
}

/// What a verified key allows.
#[derive(Debug, Clone, PartialEq)]
pub struct Grant {
    pub id: String,
    pub name: String,
    /// `None`: every region.
    pub regions: Option<Vec<Region>>,
    /// `None`: every meter.
    pub meters: Option<Vec<RangeInclusive<u64>>>,
}

impl Grant {
    pub fn allows_meter(&self, meter_id: u64) -> bool {
        self.meters.as_ref().is_none_or(|meters| meters.iter().any(|range| range.contains(&meter_id)))
    }

    pub fn allows(&self, region: Region) -> bool {
        self.regions.as_ref().is_none_or(|regions| regions.contains(&region))
    }
}

fn read_file(path: &Path) -> Result<KeyFile, KeyError> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map_err(|source| KeyError::Parse { path: path.into(), source }),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(KeyFile::default()),
        Err(source) => Err(KeyError::Read { path: path.into(), source }),
    }
}

fn write_file(path: &Path, file: &KeyFile) -> Result<(), KeyError> {
    let write_error = |source| KeyError::Write { path: path.into(), source };
    if let Some(parent) = path.parent().filter(|parent| !parent.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(write_error)?;
    }
    let text = serde_json::to_string_pretty(file).map_err(|source| KeyError::Parse { path: path.into(), source })?;
    // Written aside and renamed, so a running gateway never reads half a file.
    let partial = path.with_extension("json.partial");
    std::fs::write(&partial, text).map_err(write_error)?;
    std::fs::rename(&partial, path).map_err(write_error)
}

/// Issues a key: stores its hash in the file at `path` and returns the key, which is shown once.
pub fn create_key(path: &Path, name: &str, scope: &KeyScope, now_ms: i64) -> Result<(String, KeyRecord), KeyError> {
    let (key, record) = auth_core::gateway_key::issue_key(name, scope, now_ms)?;
    let mut file = read_file(path)?;
    file.keys.push(record.clone());
    write_file(path, &file)?;
    Ok((key, record))
}

/// The keys in the file at `path`.
pub fn list_keys(path: &Path) -> Result<Vec<KeyRecord>, KeyError> {
    Ok(read_file(path)?.keys)
}

/// Removes the key with `id`; a running gateway refuses it from its next request on.
pub fn revoke_key(path: &Path, id: &str) -> Result<KeyRecord, KeyError> {
    let mut file = read_file(path)?;
    let position = file.keys.iter().position(|record| record.id == id).ok_or_else(|| KeyError::UnknownId(id.into()))?;
    let record = file.keys.remove(position);
    write_file(path, &file)?;
    Ok(record)
}

/// Most topics the ACL file names; beyond, Mosquitto's ACL is not the tool.
pub const MAX_ACL_TOPICS: usize = 1_000_000;

/// Mosquitto's files for the keys: who may log in, and to which topics each may publish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MosquittoFiles {
    /// `password_file`: `<key id>:<$7$ hash of the key>` per key.
    pub passwords: String,
    /// `acl_file`: per key, `topic write meters/<meter>/readings` for each of
    /// its meters (`meters/+/readings` for a key of every meter), and `topic
    /// read meters/+/readings` for a gateway's subscriber key.
    pub acl: String,
    /// Keys left out: issued before MQTT credentials existed.
    pub skipped: Vec<String>,
}

/// The password and ACL files of the keys. A key scoped to regions gets the
/// meters the registry installs there (at any time).
pub fn mosquitto_files(records: &[KeyRecord], registry: Option<&Registry>) -> Result<MosquittoFiles, KeyError> {
    let mut files = MosquittoFiles { passwords: String::new(), acl: String::new(), skipped: Vec::new() };
    let mut topics = 0usize;
    for record in records {
        let Some(hash) = &record.mqtt_hash else {
            files.skipped.push(record.id.clone());
            continue;
        };
        files.passwords.push_str(&format!("{}:{hash}\n", record.id));
        files.acl.push_str(&format!("# {}\nuser {}\n", record.name.replace('\n', " "), record.id));
        if record.subscriber {
            files.acl.push_str(&format!("topic read {}\n\n", crate::mqtt::READINGS_TOPIC));
            continue;
        }
        let mut meters: Vec<u64> = Vec::new();
        let by_meter = !record.meters.is_empty();
        for range in &record.meters {
            let range = auth_core::gateway_key::parse_meter_range(range)?;
            let count = usize::try_from(range.end() - range.start()).unwrap_or(usize::MAX).saturating_add(1);
            if topics.saturating_add(meters.len()).saturating_add(count) > MAX_ACL_TOPICS {
                return Err(KeyError::TooManyTopics { max: MAX_ACL_TOPICS });
            }
            meters.extend(range);
        }
        if !record.regions.is_empty() {
            let registry = registry.ok_or_else(|| KeyError::RegionsNeedRegistry(record.id.clone()))?;
            let in_regions = |meter_id: &u64| {
                registry.meter(*meter_id).iter().any(|installation| record.regions.iter().any(|code| code == installation.region.code()))
            };
            if by_meter {
                meters.retain(in_regions);
            } else {
                meters = registry.meters().filter(in_regions).collect();
            }
        }
        if by_meter || !record.regions.is_empty() {
            meters.sort_unstable();
            meters.dedup();
            topics += meters.len();
            if topics > MAX_ACL_TOPICS {
                return Err(KeyError::TooManyTopics { max: MAX_ACL_TOPICS });
            }
            for meter in meters {
                files.acl.push_str(&format!("topic write {}\n", crate::mqtt::meter_topic(meter)));
            }
        } else {
            files.acl.push_str(&format!("topic write {}\n", crate::mqtt::READINGS_TOPIC));
        }
        files.acl.push('\n');
    }
    Ok(files)
}

/// Argon2 verifications allowed per key id and minute (a burst of as many).
pub const VERIFICATIONS_PER_MINUTE: u32 = 5;
/// Argon2 verifications allowed per client address and minute (a burst of as
/// many): a concentrator behind one address may bring several keys.
pub const VERIFICATIONS_PER_ADDRESS_PER_MINUTE: u32 = 60;
/// Addresses whose budgets are remembered before the idle ones are forgotten.
const REMEMBERED_ADDRESSES: usize = 10_000;
/// Wrong keys remembered as wrong; the set starts over when full.
const REMEMBERED_WRONG_KEYS: usize = 10_000;
/// Argon2 verifications run, by `outcome` (verified, wrong).
pub const METRIC_KEY_VERIFICATIONS: &str = "auth_ingest_key_verifications_total";

/// Why a presented key is refused: HTTP 401, or 429 when throttled.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Refusal {
    #[error("no key: send `Authorization: Bearer <key>` with a key from `auth keys create`")]
    Missing,
    #[error("the key is not valid")]
    Invalid,
    #[error("too many keys of id `{id}` were tried; try again in {retry_after_secs} s")]
    Throttled { id: String, retry_after_secs: u64 },
    #[error("too many keys were tried from this address; try again in {retry_after_secs} s")]
    AddressThrottled { retry_after_secs: u64 },
}

/// The keys a gateway accepts, from its key files.
pub struct KeyRing {
    paths: Vec<PathBuf>,
    state: Mutex<RingState>,
    /// Argon2 runs per key id (only ids of the files get here, so it is bounded).
    verifications: DefaultKeyedRateLimiter<String>,
    /// Argon2 runs per client address.
    by_address: DefaultKeyedRateLimiter<IpAddr>,
}

struct RingState {
    /// The files' modification times at the last read (`None` for a missing file); `None` before the first read.
    modified: Option<Vec<Option<SystemTime>>>,
    records: HashMap<String, KeyRecord>,
    /// Keys verified against their hash, by the key presented.
    verified: HashMap<String, Arc<Grant>>,
    /// Keys of known ids that failed verification.
    wrong: HashSet<String>,
    /// Argon2 runs so far, for tests and `/metrics`.
    verifications: u64,
}

impl KeyRing {
    /// The keys of every file in `paths` (a missing file holds none).
    pub fn load(paths: &[PathBuf]) -> Result<Self, KeyError> {
        let per_minute = NonZeroU32::new(VERIFICATIONS_PER_MINUTE).unwrap_or(NonZeroU32::MIN);
        let per_address = NonZeroU32::new(VERIFICATIONS_PER_ADDRESS_PER_MINUTE).unwrap_or(NonZeroU32::MIN);
        let ring = Self {
            paths: paths.to_vec(),
            state: Mutex::new(RingState {
                modified: None,
                records: HashMap::new(),
                verified: HashMap::new(),
                wrong: HashSet::new(),
                verifications: 0,
            }),
            verifications: RateLimiter::keyed(Quota::per_minute(per_minute)),
            by_address: RateLimiter::keyed(Quota::per_minute(per_address)),
        };
        ring.reload_if_changed()?;
        Ok(ring)
    }

    /// Reads the files again when a modification time changed; forgets
    /// verified keys then, so a revoked key stops working.
    fn reload_if_changed(&self) -> Result<(), KeyError> {
        let modified: Vec<Option<SystemTime>> = self
            .paths
            .iter()
            .map(|path| std::fs::metadata(path).and_then(|metadata| metadata.modified()).ok())
            .collect();
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        if state.modified.as_ref() == Some(&modified) {
            return Ok(());
        }
        let mut records = HashMap::new();
        for path in &self.paths {
            records.extend(read_file(path)?.keys.into_iter().map(|record| (record.id.clone(), record)));
        }
        state.records = records;
        state.verified.clear();
        state.wrong.clear();
        state.modified = Some(modified);
        tracing::info!(files = ?self.paths, keys = state.records.len(), "gateway keys loaded");
        Ok(())
    }

    /// Whether the files hold no key at all.
    pub fn is_empty(&self) -> bool {
        self.state.lock().unwrap_or_else(PoisonError::into_inner).records.is_empty()
    }

    /// The grant of the key in an `Authorization` header value; see
    /// [`KeyRing::present`] and [`KeyRing::verify`] for its two steps.
    pub fn check(&self, authorization: Option<&str>) -> Result<Arc<Grant>, Refusal> {
        match self.present(authorization, None)? {
            Presented::Remembered(grant) => Ok(grant),
            Presented::Unverified(unverified) => self.verify(unverified),
        }
    }

    /// The cheap step: a key verified before, or the record to verify it
    /// against, within the argon2 budgets of its key id and of the client's
    /// `address` (when known).
    pub fn present(&self, authorization: Option<&str>, address: Option<IpAddr>) -> Result<Presented, Refusal> {
        let key = authorization
            .and_then(|value| value.strip_prefix("Bearer ").or_else(|| value.strip_prefix("bearer ")))
            .map(str::trim)
            .ok_or(Refusal::Missing)?;
        if let Err(err) = self.reload_if_changed() {
            tracing::warn!(error = %err, "the key file could not be read again; keeping the keys loaded before");
        }
        let state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(grant) = state.verified.get(key) {
            return Ok(Presented::Remembered(Arc::clone(grant)));
        }
        let id = key.strip_prefix("auth_").and_then(|rest| rest.split_once('_')).map(|(id, _)| id).ok_or(Refusal::Invalid)?;
        let record = state.records.get(id).cloned().ok_or(Refusal::Invalid)?;
        if state.wrong.contains(key) {
            return Err(Refusal::Invalid);
        }
        drop(state);
        let retry_after = |not_until: governor::NotUntil<_>| {
            not_until.wait_time_from(DefaultClock::default().now()).max(Duration::from_secs(1)).as_secs()
        };
        if let Some(address) = address {
            if self.by_address.len() > REMEMBERED_ADDRESSES {
                self.by_address.retain_recent();
            }
            if let Err(not_until) = self.by_address.check_key(&address) {
                return Err(Refusal::AddressThrottled { retry_after_secs: retry_after(not_until) });
            }
        }
        if let Err(not_until) = self.verifications.check_key(&record.id) {
            return Err(Refusal::Throttled { id: record.id, retry_after_secs: retry_after(not_until) });
        }
        Ok(Presented::Unverified(Unverified { key: key.to_owned(), record }))
    }

    /// Argon2 verifications run since the ring was loaded.
    pub fn verifications(&self) -> u64 {
        self.state.lock().unwrap_or_else(PoisonError::into_inner).verifications
    }

    /// The costly step: argon2 against the stored hash (tens of milliseconds);
    /// a key that passes is remembered.
    pub fn verify(&self, unverified: Unverified) -> Result<Arc<Grant>, Refusal> {
        let Unverified { key, record } = unverified;
        let hash = PasswordHash::new(&record.hash).map_err(|_| Refusal::Invalid)?;
        let verified = Argon2::default().verify_password(key.as_bytes(), &hash).is_ok();
        metrics::counter!(METRIC_KEY_VERIFICATIONS, "outcome" => if verified { "verified" } else { "wrong" }).increment(1);
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        state.verifications += 1;
        if !verified {
            if state.wrong.len() >= REMEMBERED_WRONG_KEYS {
                state.wrong.clear();
            }
            state.wrong.insert(key);
            return Err(Refusal::Invalid);
        }
        drop(state);
        let regions = (!record.regions.is_empty()).then(|| record.regions.iter().filter_map(|code| Region::from_code(code)).collect());
        // A subscriber key sends no readings: it is allowed no meter.
        let meters = (record.subscriber || !record.meters.is_empty())
            .then(|| record.meters.iter().filter_map(|range| auth_core::gateway_key::parse_meter_range(range).ok()).collect());
        let grant = Arc::new(Grant { id: record.id, name: record.name, regions, meters });
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        state.verified.insert(key, Arc::clone(&grant));
        Ok(grant)
    }
}

/// A presented key, as [`KeyRing::present`] found it.
pub enum Presented {
    Remembered(Arc<Grant>),
    Unverified(Unverified),
}

/// A key of a known id, not yet checked against its hash.
pub struct Unverified {
    key: String,
    record: KeyRecord,
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn issued_keys_are_stored_hashed_checked_limited_and_revocable() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys.json");
        let (open_key, _) = create_key(&path, "concentrator 1", &KeyScope::default(), 1).unwrap();
        let (west_key, west) = create_key(&path, "west", &KeyScope::regions(&["US-CA", "US-OR"]), 2).unwrap();
        let stored = std::fs::read_to_string(&path).unwrap();
        assert!(!stored.contains(&open_key) && !stored.contains(&west_key), "keys are never stored");
        assert!(stored.contains("$argon2id$"));

        let ring = KeyRing::load(std::slice::from_ref(&path)).unwrap();
        assert!(ring.check(Some(&format!("Bearer {open_key}"))).unwrap().allows(Region::from_code("US-TX").unwrap()));
        let grant = ring.check(Some(&format!("Bearer {west_key}"))).unwrap();
        assert!(grant.allows(Region::from_code("US-OR").unwrap()));
        assert!(!grant.allows(Region::from_code("US-TX").unwrap()));
        assert_eq!(ring.check(None), Err(Refusal::Missing));
        assert_eq!(ring.check(Some(&open_key)), Err(Refusal::Missing), "the Bearer scheme is required");
        let forged = format!("auth_{}_{}", west.id, "0".repeat(48));
        assert_eq!(ring.check(Some(&format!("Bearer {forged}"))), Err(Refusal::Invalid));
        assert_eq!(ring.check(Some("Bearer nonsense")), Err(Refusal::Invalid));

        revoke_key(&path, &west.id).unwrap();
        // File times may be coarse: make the change visible as one.
        let later = SystemTime::now() + std::time::Duration::from_secs(2);
        std::fs::File::options().write(true).open(&path).unwrap().set_modified(later).unwrap();
        assert_eq!(ring.check(Some(&format!("Bearer {west_key}"))), Err(Refusal::Invalid), "revoked");
        assert!(ring.check(Some(&format!("Bearer {open_key}"))).is_ok());
        assert!(matches!(create_key(&path, "x", &KeyScope::regions(&["US-XX"]), 3), Err(KeyError::Issue(IssueError::UnknownRegion(_)))));
    }

    #[test]
    fn wrong_secrets_for_a_real_key_id_cost_a_few_argon2_runs_in_all() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys.json");
        let (key, record) = create_key(&path, "concentrator", &KeyScope::default(), 1).unwrap();
        let ring = KeyRing::load(std::slice::from_ref(&path)).unwrap();
        let mut throttled = 0;
        for attempt in 0..1_000 {
            let wrong = format!("Bearer auth_{}_{attempt:048}", record.id);
            match ring.check(Some(&wrong)) {
                Err(Refusal::Invalid) => {}
                Err(Refusal::Throttled { id, retry_after_secs }) => {
                    assert_eq!(id, record.id);
                    assert!(retry_after_secs >= 1);
                    throttled += 1;
                }
                other => panic!("attempt {attempt}: {other:?}"),
            }
        }
        assert_eq!(ring.verifications(), u64::from(VERIFICATIONS_PER_MINUTE), "argon2 ran only within the budget");
        assert_eq!(throttled, 1_000 - VERIFICATIONS_PER_MINUTE);
        let repeated = format!("Bearer auth_{}_{:048}", record.id, 0);
        assert_eq!(ring.check(Some(&repeated)), Err(Refusal::Invalid), "a wrong key is remembered as wrong");
        assert_eq!(ring.verifications(), u64::from(VERIFICATIONS_PER_MINUTE));
        assert!(
            matches!(ring.check(Some(&format!("Bearer {key}"))), Err(Refusal::Throttled { .. })),
            "the real key waits for the budget too; a remembered key would not"
        );
    }

    #[test]
    fn one_address_trying_many_key_ids_gets_a_budget_of_its_own() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys.json");
        let ids: Vec<String> = (0..25).map(|n| create_key(&path, &format!("meter {n}"), &KeyScope::default(), 1).unwrap().1.id).collect();
        let ring = KeyRing::load(std::slice::from_ref(&path)).unwrap();
        let verify = |presented| match presented {
            Ok(Presented::Unverified(unverified)) => ring.verify(unverified).map(|_| ()),
            Ok(Presented::Remembered(_)) => Ok(()),
            Err(refusal) => Err(refusal),
        };
        let attacker: IpAddr = "192.0.2.7".parse().unwrap();
        let mut refusals = Vec::new();
        let started = std::time::Instant::now();
        for attempt in 0..100 {
            let wrong = format!("Bearer auth_{}_{attempt:048}", ids[attempt % ids.len()]);
            refusals.push(verify(ring.present(Some(&wrong), Some(attacker))).unwrap_err());
        }
        // The budget is a burst of 60 that refills one a second while the argon2 runs take their time.
        let refilled = started.elapsed().as_secs() as usize + 1;
        let budget = VERIFICATIONS_PER_ADDRESS_PER_MINUTE as usize;
        assert!(refusals[..budget].iter().all(|refusal| *refusal == Refusal::Invalid), "{refusals:?}");
        let throttled = refusals.iter().filter(|refusal| matches!(refusal, Refusal::AddressThrottled { .. })).count();
        assert!(throttled >= 100 - budget - refilled, "{refusals:?}");
        assert!(ring.verifications() as usize <= budget + refilled, "argon2 ran only within the address's budget");
        // Another address is not held back by this one's attempts.
        let other: IpAddr = "192.0.2.8".parse().unwrap();
        let wrong = format!("Bearer auth_{}_{:048}", ids[0], 99);
        assert_eq!(verify(ring.present(Some(&wrong), Some(other))), Err(Refusal::Invalid));
    }

    #[test]
    fn a_ring_takes_the_keys_of_every_file_and_a_missing_file_holds_none() {
        let dir = tempfile::tempdir().unwrap();
        let (meters, simulator) = (dir.path().join("auth-keys.json"), dir.path().join("simulator-keys.json"));
        let (meter_key, _) = create_key(&meters, "meters", &KeyScope::default(), 1).unwrap();
        let ring = KeyRing::load(&[meters.clone(), simulator.clone()]).unwrap();
        assert!(ring.check(Some(&format!("Bearer {meter_key}"))).is_ok());
        let (simulator_key, _) = create_key(&simulator, "simulator", &KeyScope::default(), 2).unwrap();
        assert!(ring.check(Some(&format!("Bearer {simulator_key}"))).is_ok(), "a file that appears later is read");
        assert!(ring.check(Some(&format!("Bearer {meter_key}"))).is_ok(), "the other file's keys stay");
    }

    #[test]
    fn mosquitto_files_give_each_key_its_meters_topics() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys.json");
        let (_, meters) = create_key(&path, "concentrator", &KeyScope::meters(&["4-5", "9"]), 1).unwrap();
        let (_, west) = create_key(&path, "west", &KeyScope::regions(&["US-CA"]), 1).unwrap();
        let (_, all) = create_key(&path, "all", &KeyScope::default(), 1).unwrap();
        let (gateway_key, gateway) = create_key(&path, "gateway", &KeyScope { subscriber: true, ..KeyScope::default() }, 1).unwrap();
        let records = list_keys(&path).unwrap();
        assert!(matches!(mosquitto_files(&records, None), Err(KeyError::RegionsNeedRegistry(id)) if id == west.id));

        let mut registry = Registry::default();
        for (meter_id, region) in [(4, "US-CA"), (6, "US-CA"), (7, "US-TX")] {
            let mut installation = crate::Fleet::generate(&auth_core::spec::SimulatorSpec { customers: 1, ..Default::default() })
                .installations(60)
                .remove(0);
            installation.meter_id = meter_id;
            installation.region = Region::from_code(region).unwrap();
            registry.set_meter(meter_id, vec![installation]);
        }
        let files = mosquitto_files(&records, Some(&registry)).unwrap();
        let topics = |id: &str| -> Vec<String> {
            let block = files.acl.split("\n\n").find(|block| block.contains(&format!("user {id}\n"))).unwrap();
            block.lines().filter(|line| line.starts_with("topic ")).map(str::to_owned).collect()
        };
        assert_eq!(topics(&meters.id), ["topic write meters/4/readings", "topic write meters/5/readings", "topic write meters/9/readings"]);
        assert_eq!(topics(&west.id), ["topic write meters/4/readings", "topic write meters/6/readings"]);
        assert_eq!(topics(&all.id), ["topic write meters/+/readings"]);
        assert_eq!(topics(&gateway.id), ["topic read meters/+/readings"]);
        assert_eq!(files.passwords.lines().count(), 4);
        assert!(files.passwords.lines().all(|line| line.split_once(':').is_some_and(|(_, hash)| hash.starts_with("$7$101$"))));

        // The gateway's subscriber key sends no readings itself.
        let ring = KeyRing::load(std::slice::from_ref(&path)).unwrap();
        let grant = ring.check(Some(&format!("Bearer {gateway_key}"))).unwrap();
        assert!(!grant.allows_meter(4));
    }
}
