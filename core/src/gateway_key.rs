//! Gateway keys as they are issued: a key reads `auth_<id>_<secret>`; its
//! [`KeyRecord`] keeps a name, the regions the key may send readings for (all
//! when empty) and an argon2id hash of the whole key, never the key itself.
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
    #[error("hashing the key failed: {0}")]
    Hash(String),
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
    /// argon2id PHC string of the whole key.
    pub hash: String,
    pub created_ms: i64,
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
pub fn issue_key(name: &str, regions: &[String], now_ms: i64) -> Result<(String, KeyRecord), IssueError> {
    for code in regions {
        Region::from_code(code).ok_or_else(|| IssueError::UnknownRegion(code.clone()))?;
    }
    let id = hex::encode(random_bytes(4)?);
    let key = format!("auth_{id}_{}", hex::encode(random_bytes(24)?));
    let salt = SaltString::encode_b64(&random_bytes(16)?).map_err(|err| IssueError::Hash(err.to_string()))?;
    let hash = Argon2::default().hash_password(key.as_bytes(), &salt).map_err(|err| IssueError::Hash(err.to_string()))?;
    let record = KeyRecord { id, name: name.to_owned(), regions: regions.to_vec(), hash: hash.to_string(), created_ms: now_ms };
    Ok((key, record))
}
