//! Accounts of the API: who may log in, with which role, and the tokens
//! (session cookies and bearer tokens) a login gives.
//!
//! Passwords are stored as argon2id hashes. Tokens are 32 random bytes; the
//! database holds their SHA-256 only, so a leaked table opens no session.

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::{Database, ResultsError, query_error};

/// What an account may see.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum Role {
    /// Everything: every customer, regions, top consumers, pipeline health.
    Operator,
    /// Their own customer id, and the regions' aggregates.
    Customer,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Operator => "operator",
            Role::Customer => "customer",
        }
    }

    fn parse(text: &str) -> Result<Self, ResultsError> {
        match text {
            "operator" => Ok(Role::Operator),
            "customer" => Ok(Role::Customer),
            other => Err(ResultsError::Stored(format!("unknown account role {other:?}"))),
        }
    }
}

/// A logged-in account.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Account {
    pub username: String,
    pub role: Role,
    /// The customer a customer account belongs to; `None` for operators.
    pub customer_id: Option<u64>,
}

/// What a token is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenKind {
    /// The dashboard's session cookie.
    Session,
    /// An API client's `Authorization: Bearer` token.
    Bearer,
}

impl TokenKind {
    fn as_str(self) -> &'static str {
        match self {
            TokenKind::Session => "session",
            TokenKind::Bearer => "bearer",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AccountError {
    #[error("{0}")]
    Invalid(String),
    #[error("account {0:?} exists already")]
    Exists(String),
    #[error("hashing a password: {0}")]
    Hash(String),
    #[error(transparent)]
    Results(#[from] ResultsError),
}

/// The rules a new account must follow.
fn check_new_account(username: &str, password: &str, role: Role, customer_id: Option<u64>) -> Result<(), AccountError> {
    let username_ok = (1..=64).contains(&username.len())
        && username.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '@'));
    if !username_ok {
        return Err(AccountError::Invalid(format!(
            "username {username:?}: 1 to 64 characters of letters, digits, `.`, `_`, `-` and `@`"
        )));
    }
    if password.chars().count() < 8 {
        return Err(AccountError::Invalid("password: at least 8 characters".into()));
    }
    match (role, customer_id) {
        (Role::Customer, None) => Err(AccountError::Invalid("a customer account needs its customer id".into())),
        (Role::Operator, Some(_)) => Err(AccountError::Invalid("an operator account has no customer id".into())),
        _ => Ok(()),
    }
}

fn hash_password(password: &str) -> Result<String, AccountError> {
    let mut salt = [0u8; 16];
    getrandom::fill(&mut salt).map_err(|err| AccountError::Hash(err.to_string()))?;
    let salt = SaltString::encode_b64(&salt).map_err(|err| AccountError::Hash(err.to_string()))?;
    let hash = Argon2::default().hash_password(password.as_bytes(), &salt).map_err(|err| AccountError::Hash(err.to_string()))?;
    Ok(hash.to_string())
}

fn token_hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// A hash no password matches, verified for unknown usernames so that a
/// login takes as long whether the account exists or not.
const UNKNOWN_ACCOUNT_HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$9fYyS4zoQ1ujMTNSVUz/aD0bDd7Ztmw/DPxpc/KNb3E";

impl Database {
    /// Creates an account; with `replace`, an existing one of that name is
    /// overwritten (and its tokens stay valid only if the role is unchanged).
    #[tracing::instrument(level = "info", skip(self, password))]
    pub async fn add_account(
        &self,
        username: &str,
        password: &str,
        role: Role,
        customer_id: Option<u64>,
        replace: bool,
        now_ms: i64,
    ) -> Result<Account, AccountError> {
        check_new_account(username, password, role, customer_id)?;
        let owned = password.to_owned();
        let hash = tokio::task::spawn_blocking(move || hash_password(&owned))
            .await
            .map_err(|err| AccountError::Hash(err.to_string()))??;
        let mut transaction = self.begin_write().await.map_err(query_error("starting a transaction"))?;
        let existing = format!("SELECT COUNT(*) FROM accounts WHERE username = {}", self.placeholder(1));
        let (count,): (i64,) =
            sqlx::query_as(&existing).bind(username).fetch_one(&mut *transaction).await.map_err(query_error("accounts"))?;
        if count > 0 {
            if !replace {
                return Err(AccountError::Exists(username.to_owned()));
            }
            let delete = format!("DELETE FROM accounts WHERE username = {}", self.placeholder(1));
            sqlx::query(&delete).bind(username).execute(&mut *transaction).await.map_err(query_error("accounts"))?;
            let revoke = format!("DELETE FROM access_tokens WHERE username = {}", self.placeholder(1));
            sqlx::query(&revoke).bind(username).execute(&mut *transaction).await.map_err(query_error("access_tokens"))?;
        }
        let insert = self.insert_sql("accounts", &["username", "password_hash", "account_role", "customer_id", "created_at_ms"], 1);
        sqlx::query(&insert)
            .bind(username)
            .bind(hash)
            .bind(role.as_str())
            .bind(customer_id.map(|id| id as i64))
            .bind(now_ms)
            .execute(&mut *transaction)
            .await
            .map_err(query_error("accounts"))?;
        transaction.commit().await.map_err(query_error("committing"))?;
        Ok(Account { username: username.to_owned(), role, customer_id })
    }

    /// Every account, by username.
    pub async fn accounts(&self) -> Result<Vec<Account>, ResultsError> {
        let rows: Vec<(String, String, Option<i64>)> =
            sqlx::query_as("SELECT username, account_role, customer_id FROM accounts ORDER BY username")
                .fetch_all(self.pool())
                .await
                .map_err(query_error("accounts"))?;
        rows.into_iter().map(|(username, role, customer_id)| account(username, &role, customer_id)).collect()
    }

    /// The account when `password` is its password; `None` otherwise (the
    /// same answer for an unknown username). argon2 runs off the async threads.
    pub async fn verify_password(&self, username: &str, password: &str) -> Result<Option<Account>, AccountError> {
        let sql = format!("SELECT password_hash, account_role, customer_id FROM accounts WHERE username = {}", self.placeholder(1));
        let row: Option<(String, String, Option<i64>)> =
            sqlx::query_as(&sql).bind(username).fetch_optional(self.pool()).await.map_err(query_error("accounts"))?;
        let stored_hash = row.as_ref().map_or(UNKNOWN_ACCOUNT_HASH, |(hash, _, _)| hash.as_str()).to_owned();
        let presented = password.to_owned();
        let matches = tokio::task::spawn_blocking(move || {
            PasswordHash::new(&stored_hash)
                .is_ok_and(|hash| Argon2::default().verify_password(presented.as_bytes(), &hash).is_ok())
        })
        .await
        .map_err(|err| AccountError::Hash(err.to_string()))?;
        match row {
            Some((_, role, customer_id)) if matches => Ok(Some(account(username.to_owned(), &role, customer_id)?)),
            _ => Ok(None),
        }
    }

    /// Issues a token for `username`, valid for `ttl_ms`; the token is returned once.
    pub async fn issue_token(&self, username: &str, kind: TokenKind, ttl_ms: i64, now_ms: i64) -> Result<String, AccountError> {
        let mut secret = [0u8; 32];
        getrandom::fill(&mut secret).map_err(|err| AccountError::Hash(err.to_string()))?;
        let token = format!("auth_{}_{}", kind.as_str(), hex::encode(secret));
        let insert = self.insert_sql("access_tokens", &["token_hash", "username", "kind", "created_at_ms", "expires_at_ms"], 1);
        sqlx::query(&insert)
            .bind(token_hash(&token))
            .bind(username)
            .bind(kind.as_str())
            .bind(now_ms)
            .bind(now_ms.saturating_add(ttl_ms))
            .execute(self.pool())
            .await
            .map_err(query_error("access_tokens"))?;
        Ok(token)
    }

    /// The account a token belongs to and when it expires, while it is valid.
    pub async fn token_account(&self, token: &str, now_ms: i64) -> Result<Option<(Account, i64)>, ResultsError> {
        let sql = format!(
            "SELECT a.username, a.account_role, a.customer_id, t.expires_at_ms FROM access_tokens t \
             JOIN accounts a ON a.username = t.username WHERE t.token_hash = {} AND t.expires_at_ms > {}",
            self.placeholder(1),
            self.placeholder(2)
        );
        let row: Option<(String, String, Option<i64>, i64)> = sqlx::query_as(&sql)
            .bind(token_hash(token))
            .bind(now_ms)
            .fetch_optional(self.pool())
            .await
            .map_err(query_error("access_tokens"))?;
        row.map(|(username, role, customer_id, expires_at_ms)| Ok((account(username, &role, customer_id)?, expires_at_ms)))
            .transpose()
    }

    /// Revokes a token (logout). Expired tokens of every account go with it.
    pub async fn revoke_token(&self, token: &str, now_ms: i64) -> Result<(), ResultsError> {
        let sql = format!(
            "DELETE FROM access_tokens WHERE token_hash = {} OR expires_at_ms <= {}",
            self.placeholder(1),
            self.placeholder(2)
        );
        sqlx::query(&sql).bind(token_hash(token)).bind(now_ms).execute(self.pool()).await.map_err(query_error("access_tokens"))?;
        Ok(())
    }
}

fn account(username: String, role: &str, customer_id: Option<i64>) -> Result<Account, ResultsError> {
    Ok(Account { username, role: Role::parse(role)?, customer_id: customer_id.map(|id| id as u64) })
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn database(directory: &tempfile::TempDir) -> Database {
        Database::connect(&format!("sqlite://{}", directory.path().join("results.db").display())).await.expect("database")
    }

    #[test]
    fn the_unknown_account_hash_parses() {
        assert!(PasswordHash::new(UNKNOWN_ACCOUNT_HASH).is_ok());
    }

    #[tokio::test]
    async fn passwords_and_tokens() {
        let directory = tempfile::tempdir().expect("temporary directory");
        let db = database(&directory).await;
        let alice = db.add_account("alice", "correct horse", Role::Customer, Some(42), false, 0).await.expect("alice");
        assert_eq!(alice.customer_id, Some(42));
        assert!(matches!(db.add_account("alice", "correct horse", Role::Customer, Some(42), false, 0).await, Err(AccountError::Exists(_))));
        assert_eq!(db.verify_password("alice", "correct horse").await.expect("verify"), Some(alice.clone()));
        assert_eq!(db.verify_password("alice", "wrong horse!").await.expect("verify"), None);
        assert_eq!(db.verify_password("bob", "correct horse").await.expect("verify"), None);

        let token = db.issue_token("alice", TokenKind::Session, 1_000, 10).await.expect("token");
        assert_eq!(db.token_account(&token, 500).await.expect("lookup"), Some((alice.clone(), 1_010)));
        assert_eq!(db.token_account(&token, 1_010).await.expect("lookup"), None, "expired");
        assert_eq!(db.token_account("auth_session_00", 500).await.expect("lookup"), None);
        db.revoke_token(&token, 20).await.expect("revoke");
        assert_eq!(db.token_account(&token, 30).await.expect("lookup"), None, "revoked");

        let stored: Vec<(String,)> = sqlx::query_as("SELECT token_hash FROM access_tokens").fetch_all(db.pool()).await.expect("rows");
        assert!(stored.iter().all(|(hash,)| !hash.contains(&token)));
    }

    /// An account added while another connection writes (as `auth up` adds
    /// its demo accounts while its batch writes results) waits for its turn
    /// instead of failing with "database is locked".
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_account_added_during_another_write_waits_for_its_turn() {
        let directory = tempfile::tempdir().expect("temporary directory");
        let db = database(&directory).await;
        let other = database(&directory).await;
        let mut writing = other.begin_write().await.expect("the other writer starts");
        sqlx::query("DELETE FROM access_tokens").execute(&mut *writing).await.expect("the other writer writes");
        let adding = tokio::spawn(async move { db.add_account("alice", "long enough", Role::Operator, None, true, 0).await });
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        writing.commit().await.expect("the other writer commits");
        adding.await.expect("task").expect("the account is added after the other write");
        assert_eq!(other.accounts().await.expect("accounts").len(), 1);
    }

    #[tokio::test]
    async fn bad_accounts_are_refused_with_the_reason() {
        let directory = tempfile::tempdir().expect("temporary directory");
        let db = database(&directory).await;
        let refusal = |result: Result<Account, AccountError>| result.expect_err("refused").to_string();
        assert!(refusal(db.add_account("", "long enough", Role::Operator, None, false, 0).await).starts_with("username"));
        assert!(refusal(db.add_account("a b", "long enough", Role::Operator, None, false, 0).await).starts_with("username"));
        assert_eq!(refusal(db.add_account("ops", "short", Role::Operator, None, false, 0).await), "password: at least 8 characters");
        assert_eq!(
            refusal(db.add_account("c", "long enough", Role::Customer, None, false, 0).await),
            "a customer account needs its customer id"
        );
        assert_eq!(
            refusal(db.add_account("o", "long enough", Role::Operator, Some(1), false, 0).await),
            "an operator account has no customer id"
        );
        assert!(db.accounts().await.expect("accounts").is_empty());
    }
}
