//! Gateway keys as they are issued: a key reads `auth_<id>_<secret>`; its
//! [`KeyRecord`] keeps a name, the meters and regions the key may send
//! readings for (its [`KeyScope`]; all when empty) and an argon2id hash of the
//! whole key, never the key itself.
//! A [`KeyFile`] is the JSON the gateway reads (`auth keys` writes it, and the
//! operator writes one for a pipeline's simulator).

use argon2::Argon2;
use argon2::password_hash::{PasswordHasher, SaltString};
use serde::{Deserialize, Serialize};

use crate::Region;

/// Why a key could not be issued.
#[derive(Debug, thiserror::Error)]
pub enum IssueError {
    #[error("unknown region `{0}` (expected an ISO 3166-2 code of the region table, e.g. US-CA)")]
    UnknownRegion(String),
    #[error("meters `{0}`: expected a meter id or a range of them, e.g. 7 or 1-100")]
    BadMeters(String),
    #[error("hashing the key failed: {0}")]
    Hash(String),
}

/// What a key may send readings for. Empty lists allow everything; a
/// reading must be of an allowed meter and of an allowed region (the
/// region its meter is installed in, per the registry).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeyScope {
    /// Region codes, e.g. `US-CA`.
    pub regions: Vec<String>,
    /// Meter ids and inclusive ranges of them, e.g. `7` or `1-100`.
    pub meters: Vec<String>,
    /// The key of a gateway's MQTT session: it reads every meter's topic and
    /// sends no readings.
    pub subscriber: bool,
}

impl KeyScope {
    pub fn regions(regions: &[&str]) -> Self {
        Self { regions: regions.iter().map(|&code| code.to_owned()).collect(), ..Self::default() }
    }

    pub fn meters(meters: &[&str]) -> Self {
        Self { meters: meters.iter().map(|&range| range.to_owned()).collect(), ..Self::default() }
    }
}

/// Reads a meter scope entry: a meter id, or `first-last` (inclusive).
pub fn parse_meter_range(text: &str) -> Result<std::ops::RangeInclusive<u64>, IssueError> {
    let bad = || IssueError::BadMeters(text.to_owned());
    let (first, last) = text.trim().split_once('-').unwrap_or((text.trim(), text.trim()));
    let (first, last): (u64, u64) = (first.trim().parse().map_err(|_| bad())?, last.trim().parse().map_err(|_| bad())?);
    if first > last {
        return Err(bad());
    }
    Ok(first..=last)
}

/// One issued key as the key file keeps it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct KeyRecord {
    pub id: String,
    pub name: String,
    /// Region codes the key may send readings for; empty: every region.
    #[serde(default)]
    pub regions: Vec<String>,
    /// Meter ids and ranges (`1-100`) the key may send readings for; empty: every meter.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub meters: Vec<String>,
    /// A gateway's MQTT session key (reads every meter's topic, sends no readings).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub subscriber: bool,
    /// argon2id PHC string of the whole key.
    pub hash: String,
    /// Mosquitto's hash of the whole key (`$7$`, PBKDF2-HMAC-SHA512), for its
    /// password file; `None` for keys issued before MQTT credentials.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mqtt_hash: Option<String>,
    pub created_ms: i64,
}

/// Mosquitto's PBKDF2 iterations, as `mosquitto_passwd` uses them.
const MOSQUITTO_ITERATIONS: u32 = 101;

/// `password` hashed for Mosquitto's `password_file` (`$7$<iterations>$<salt>$<hash>`,
/// PBKDF2-HMAC-SHA512, base64), as `mosquitto_passwd` writes it.
pub fn mosquitto_hash(password: &str) -> Result<String, IssueError> {
    use base64::Engine;
    let salt = random_bytes(12)?;
    let mut hash = [0u8; 64];
    pbkdf2::pbkdf2_hmac::<sha2::Sha512>(password.as_bytes(), &salt, MOSQUITTO_ITERATIONS, &mut hash);
    let b64 = base64::engine::general_purpose::STANDARD;
    Ok(format!("$7${MOSQUITTO_ITERATIONS}${}${}", b64.encode(&salt), b64.encode(hash)))
}

/// The MQTT username of a key: its id (`auth_<id>_<secret>`).
pub fn key_id(key: &str) -> Option<&str> {
    key.strip_prefix("auth_")?.split_once('_').map(|(id, _)| id).filter(|id| !id.is_empty())
}

/// The key file: every key a gateway accepts.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct KeyFile {
    pub keys: Vec<KeyRecord>,
}

/// Bytes from the operating system's secure random source.
fn random_bytes(count: usize) -> Result<Vec<u8>, IssueError> {
    let mut buffer = vec![0u8; count];
    getrandom::fill(&mut buffer).map_err(|err| IssueError::Hash(err.to_string()))?;
    Ok(buffer)
}

/// A new key and its record; the key is shown once and never stored.
pub fn issue_key(name: &str, scope: &KeyScope, now_ms: i64) -> Result<(String, KeyRecord), IssueError> {
    for code in &scope.regions {
        Region::from_code(code).ok_or_else(|| IssueError::UnknownRegion(code.clone()))?;
    }
    for range in &scope.meters {
        parse_meter_range(range)?;
    }
    let id = hex::encode(random_bytes(4)?);
    let key = format!("auth_{id}_{}", hex::encode(random_bytes(24)?));
    let salt = SaltString::encode_b64(&random_bytes(16)?).map_err(|err| IssueError::Hash(err.to_string()))?;
    let hash = Argon2::default().hash_password(key.as_bytes(), &salt).map_err(|err| IssueError::Hash(err.to_string()))?;
    let record = KeyRecord {
        id,
        name: name.to_owned(),
        regions: scope.regions.clone(),
        meters: scope.meters.clone(),
        subscriber: scope.subscriber,
        hash: hash.to_string(),
        mqtt_hash: Some(mosquitto_hash(&key)?),
        created_ms: now_ms,
    };
    Ok((key, record))
}
