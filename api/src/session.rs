//! Who is calling: accounts, login, sessions and bearer tokens, login rate limits.
//!
//! A login (`POST /api/v1/login`) sets the session cookie `auth_session`
//! (HttpOnly, Secure, SameSite=Strict); API clients get a bearer token from
//! `POST /api/v1/tokens` and send `Authorization: Bearer`. The results
//! database holds the tokens' hashes. Each API process remembers a valid
//! token for at most [`REMEMBER_FOR`], so a request costs no database
//! round trip; a logout is seen at once by the process that served it and
//! within that time by the others. A token the database does not know is
//! remembered as unknown for as long, so a client repeating a made-up token
//! costs no query per request either.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroU32;
use std::sync::RwLock;
use std::time::{Duration, Instant};

use auth_results::accounts::TokenKind;
use auth_results::{Account, Database, Role};
use axum::Json;
use axum::extract::{ConnectInfo, FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use cookie::Cookie;
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::{ApiError, AppState, now_ms};

/// The session cookie's name.
pub const SESSION_COOKIE: &str = "auth_session";
/// How long a dashboard session lasts.
pub const SESSION_TTL: Duration = Duration::from_secs(12 * 3600);
/// How long a bearer token lasts.
pub const BEARER_TTL: Duration = Duration::from_secs(30 * 24 * 3600);
/// How long a process trusts a token it has checked.
pub const REMEMBER_FOR: Duration = Duration::from_secs(10);
/// Tokens remembered at most; beyond, the memory starts over.
const REMEMBERED_TOKENS: usize = 100_000;
/// Addresses and usernames the login limits remember before forgetting the idle ones.
const REMEMBERED_LOGIN_KEYS: usize = 10_000;
/// The longest username an account can have.
const MAX_USERNAME_BYTES: usize = 64;

/// The logged-in caller of a request, and the token it presented.
#[derive(Debug, Clone)]
pub struct Caller(pub Account, String);

impl Caller {
    /// 403 unless the caller may see `customer_id`.
    pub fn may_see_customer(&self, customer_id: u64) -> Result<(), ApiError> {
        match (self.0.role, self.0.customer_id) {
            (Role::Operator, _) => Ok(()),
            (Role::Customer, Some(own)) if own == customer_id => Ok(()),
            _ => Err(ApiError::forbidden(format!("account {} may only see its own customer's usage", self.0.username))),
        }
    }

    /// 403 unless the caller is an operator.
    pub fn must_be_operator(&self) -> Result<(), ApiError> {
        match self.0.role {
            Role::Operator => Ok(()),
            Role::Customer => Err(ApiError::forbidden("operators only")),
        }
    }
}

/// Checks tokens against the results database and remembers the valid ones.
pub struct Sessions {
    db: Database,
    remembered: RwLock<HashMap<String, (Account, Instant)>>,
    /// Tokens the database did not know, until when that is trusted.
    unknown: RwLock<HashMap<String, Instant>>,
    by_ip: DefaultKeyedRateLimiter<IpAddr>,
    by_username: DefaultKeyedRateLimiter<String>,
}

/// Login attempts allowed per minute, per client address and per username.
#[derive(Debug, Clone, Copy)]
pub struct LoginLimits {
    pub per_ip_per_minute: u32,
    pub per_username_per_minute: u32,
}

impl Default for LoginLimits {
    fn default() -> Self {
        Self { per_ip_per_minute: 30, per_username_per_minute: 10 }
    }
}

fn per_minute(attempts: u32) -> Quota {
    Quota::per_minute(NonZeroU32::new(attempts).unwrap_or(NonZeroU32::MIN))
}

impl Sessions {
    pub fn new(db: Database, limits: LoginLimits) -> Self {
        Self {
            db,
            remembered: RwLock::new(HashMap::new()),
            unknown: RwLock::new(HashMap::new()),
            by_ip: RateLimiter::keyed(per_minute(limits.per_ip_per_minute)),
            by_username: RateLimiter::keyed(per_minute(limits.per_username_per_minute)),
        }
    }

    pub fn database(&self) -> &Database {
        &self.db
    }

    /// The account of a token, remembered or from the database.
    async fn account(&self, token: &str) -> Result<Option<Account>, ApiError> {
        let now = Instant::now();
        if let Ok(remembered) = self.remembered.read()
            && let Some((account, until)) = remembered.get(token)
            && *until > now
        {
            return Ok(Some(account.clone()));
        }
        if let Ok(unknown) = self.unknown.read()
            && unknown.get(token).is_some_and(|until| *until > now)
        {
            return Ok(None);
        }
        let Some((account, expires_at_ms)) = self.db.token_account(token, now_ms()).await.map_err(ApiError::results)? else {
            self.forget(token);
            if let Ok(mut unknown) = self.unknown.write() {
                if unknown.len() >= REMEMBERED_TOKENS {
                    unknown.clear();
                }
                unknown.insert(token.to_owned(), now + REMEMBER_FOR);
            }
            return Ok(None);
        };
        let left = Duration::from_millis(u64::try_from(expires_at_ms - now_ms()).unwrap_or(0));
        if let Ok(mut remembered) = self.remembered.write() {
            if remembered.len() >= REMEMBERED_TOKENS {
                remembered.clear();
            }
            remembered.insert(token.to_owned(), (account.clone(), now + left.min(REMEMBER_FOR)));
        }
        Ok(Some(account))
    }

    /// Whether the session of `caller` still holds (it was not logged out and did not expire).
    pub async fn still_valid(&self, caller: &Caller) -> Result<bool, ApiError> {
        Ok(self.account(&caller.1).await?.is_some_and(|account| account.username == caller.0.username))
    }

    fn forget(&self, token: &str) {
        if let Ok(mut remembered) = self.remembered.write() {
            remembered.remove(token);
        }
    }

    /// 429 with the wait when `ip` or `username` tried too often.
    ///
    /// The address is checked first, so a client over its limit adds no
    /// username to remember; a name no account can have (over 64 bytes) is
    /// not remembered at all; and names not tried for a while are forgotten
    /// once many are remembered, so hostile names cannot fill the memory.
    fn admit_login(&self, ip: Option<IpAddr>, username: &str) -> Result<(), ApiError> {
        let refused = |not_until: governor::NotUntil<_>| {
            let wait = not_until.wait_time_from(governor::clock::Clock::now(&governor::clock::DefaultClock::default()));
            ApiError::too_many_requests("too many login attempts; try again later", wait)
        };
        if let Some(ip) = ip {
            if self.by_ip.len() > REMEMBERED_LOGIN_KEYS {
                self.by_ip.retain_recent();
            }
            self.by_ip.check_key(&ip).map_err(refused)?;
        }
        if username.len() <= MAX_USERNAME_BYTES {
            if self.by_username.len() > REMEMBERED_LOGIN_KEYS {
                self.by_username.retain_recent();
            }
            self.by_username.check_key(&username.to_owned()).map_err(refused)?;
        }
        Ok(())
    }
}

/// The token a request presents: `Authorization: Bearer`, else the session cookie.
fn presented_token(headers: &HeaderMap) -> Option<String> {
    if let Some(value) = headers.get(header::AUTHORIZATION).and_then(|value| value.to_str().ok()) {
        return value.strip_prefix("Bearer ").map(|token| token.trim().to_owned());
    }
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(Cookie::split_parse)
        .filter_map(Result::ok)
        .find(|cookie| cookie.name() == SESSION_COOKIE)
        .map(|cookie| cookie.value().to_owned())
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let token = presented_token(&parts.headers).ok_or_else(|| ApiError::unauthorized("log in first"))?;
        let account = state.sessions.account(&token).await?;
        account
            .map(|account| Caller(account, token))
            .ok_or_else(|| ApiError::unauthorized("the session or token is not valid (expired or logged out)"))
    }
}

/// A login.
#[derive(Deserialize, ToSchema)]
pub struct Credentials {
    pub username: String,
    pub password: String,
}

/// A bearer token for an API client.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct IssuedToken {
    pub token: String,
    pub expires_at_ms: i64,
    pub account: AccountView,
}

/// An account as the API shows it.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AccountView {
    pub username: String,
    /// `operator` or `customer`.
    pub role: String,
    pub customer_id: Option<u64>,
}

impl From<&Account> for AccountView {
    fn from(account: &Account) -> Self {
        Self { username: account.username.clone(), role: account.role.as_str().into(), customer_id: account.customer_id }
    }
}

fn client_ip(parts: &axum::http::Extensions) -> Option<IpAddr> {
    parts.get::<ConnectInfo<SocketAddr>>().map(|ConnectInfo(address)| address.ip())
}

async fn check_credentials(state: &AppState, extensions: &axum::http::Extensions, credentials: &Credentials) -> Result<Account, ApiError> {
    state.sessions.admit_login(client_ip(extensions), &credentials.username)?;
    let account = state
        .sessions
        .db
        .verify_password(&credentials.username, &credentials.password)
        .await
        .map_err(|err| ApiError::internal("checking the password", &err))?;
    account.ok_or_else(|| {
        tracing::info!(username = %credentials.username, "login refused");
        ApiError::unauthorized("wrong username or password")
    })
}

fn credentials_of(body: Result<Json<Credentials>, axum::extract::rejection::JsonRejection>) -> Result<Credentials, ApiError> {
    body.map(|Json(credentials)| credentials).map_err(|rejection| ApiError::bad_request(format!("expected {{\"username\", \"password\"}}: {}", rejection.body_text())))
}

/// Logs in and sets the session cookie.
#[utoipa::path(post, path = "/api/v1/login", tag = "accounts", request_body = Credentials,
    responses((status = 200, description = "logged in; sets the session cookie", body = AccountView),
              (status = 400, description = "malformed body"), (status = 401, description = "wrong username or password"),
              (status = 429, description = "too many attempts (Retry-After)")))]
pub async fn login(
    State(state): State<AppState>,
    extensions: axum::http::Extensions,
    body: Result<Json<Credentials>, axum::extract::rejection::JsonRejection>,
) -> Result<Response, ApiError> {
    let credentials = credentials_of(body)?;
    let account = check_credentials(&state, &extensions, &credentials).await?;
    let token = state
        .sessions
        .db
        .issue_token(&account.username, TokenKind::Session, SESSION_TTL.as_millis() as i64, now_ms())
        .await
        .map_err(|err| ApiError::internal("issuing a session", &err))?;
    let cookie = Cookie::build((SESSION_COOKIE, token))
        .http_only(true)
        .secure(true)
        .same_site(cookie::SameSite::Strict)
        .path("/")
        .max_age(cookie::time::Duration::seconds(SESSION_TTL.as_secs() as i64))
        .build();
    tracing::info!(username = %account.username, "logged in");
    let mut response = Json(AccountView::from(&account)).into_response();
    let value = HeaderValue::from_str(&cookie.to_string()).map_err(|err| ApiError::internal("the session cookie", &err))?;
    response.headers_mut().insert(header::SET_COOKIE, value);
    Ok(response)
}

/// Issues a bearer token for an API client.
#[utoipa::path(post, path = "/api/v1/tokens", tag = "accounts", request_body = Credentials,
    responses((status = 201, description = "a bearer token, shown once", body = IssuedToken),
              (status = 401, description = "wrong username or password"), (status = 429, description = "too many attempts")))]
pub async fn issue_token(
    State(state): State<AppState>,
    extensions: axum::http::Extensions,
    body: Result<Json<Credentials>, axum::extract::rejection::JsonRejection>,
) -> Result<(StatusCode, Json<IssuedToken>), ApiError> {
    let credentials = credentials_of(body)?;
    let account = check_credentials(&state, &extensions, &credentials).await?;
    let issued_at = now_ms();
    let ttl_ms = BEARER_TTL.as_millis() as i64;
    let token = state
        .sessions
        .db
        .issue_token(&account.username, TokenKind::Bearer, ttl_ms, issued_at)
        .await
        .map_err(|err| ApiError::internal("issuing a token", &err))?;
    Ok((StatusCode::CREATED, Json(IssuedToken { token, expires_at_ms: issued_at + ttl_ms, account: AccountView::from(&account) })))
}

/// Ends the session (or revokes the bearer token) the request presents.
#[utoipa::path(post, path = "/api/v1/logout", tag = "accounts", responses((status = 204, description = "logged out; the cookie is cleared")))]
pub async fn logout(State(state): State<AppState>, headers: HeaderMap) -> Result<Response, ApiError> {
    if let Some(token) = presented_token(&headers) {
        state.sessions.forget(&token);
        state.sessions.db.revoke_token(&token, now_ms()).await.map_err(ApiError::results)?;
    }
    let cleared = Cookie::build((SESSION_COOKIE, "")).http_only(true).secure(true).same_site(cookie::SameSite::Strict).path("/").max_age(cookie::time::Duration::ZERO).build();
    let mut response = StatusCode::NO_CONTENT.into_response();
    let value = HeaderValue::from_str(&cleared.to_string()).map_err(|err| ApiError::internal("the session cookie", &err))?;
    response.headers_mut().insert(header::SET_COOKIE, value);
    Ok(response)
}

/// The logged-in account.
#[utoipa::path(get, path = "/api/v1/me", tag = "accounts",
    responses((status = 200, body = AccountView), (status = 401, description = "not logged in")))]
pub async fn me(caller: Caller) -> Json<AccountView> {
    Json(AccountView::from(&caller.0))
}
