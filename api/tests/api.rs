//! Every endpoint of `/api/v1` through the router: the serving layer's
//! batch/stream boundary, access control, bad parameters, live updates and
//! the OpenAPI document. The results database holds the batch's rows as the
//! batch writes them (one reconciliation row per computed day and utility).
//!
//! The same checks run on the embedded log and store with SQLite, and (with
//! `AUTH_IT=1`, from `scripts/test.sh`) on Kafka and Redis with PostgreSQL
//! and with MariaDB.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use auth_api::{AppState, LoginLimits, PipelineProbe, Sessions, router};
use auth_core::ports::{
    Aggregate, MeterLastReading, OutRecord, PartitionFlush, ServingStore, TopicPartition, WindowOwner, WindowSlot, WindowUpdate,
};
use auth_core::{Region, Utility};
use auth_results::{Database, Role};
use auth_testkit::Backend;
use axum::body::{Body, to_bytes};
use axum::http::{Request, Response, StatusCode, header};
use futures::StreamExt;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use serde_json::{Value, json};
use tower::ServiceExt;

const MINUTE: i64 = 60_000;
const HOUR: i64 = 3_600_000;
const DAY: i64 = 86_400_000;
const PASSWORD: &str = "a long password";

/// Where a suite runs.
#[derive(Clone, Copy)]
enum Servers {
    /// Embedded log and store, SQLite.
    Embedded,
    /// Kafka, Redis and PostgreSQL.
    Postgres,
    /// Kafka, Redis and MariaDB.
    MariaDb,
}

struct Api {
    app: axum::Router,
    _backend: Backend,
    db: Database,
    store: Arc<dyn ServingStore>,
    /// Start of today (UTC), ms.
    today: i64,
    /// Session cookies by username, so that tests log in once per account.
    cookies: tokio::sync::Mutex<std::collections::HashMap<String, String>>,
    _directory: tempfile::TempDir,
}

fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_millis() as i64
}

fn date(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms).expect("time").format("%Y-%m-%d").to_string()
}

/// Texas's local midnight (CST, the tests' December) of the UTC day starting at `utc_midnight`: regions' days are local.
fn texan(utc_midnight: i64) -> i64 {
    utc_midnight + 6 * HOUR
}

fn window(owner: WindowOwner, utility: Utility, width_ms: i64, start_ms: i64, sum: f64) -> WindowUpdate {
    WindowUpdate {
        owner,
        utility,
        slot: WindowSlot { width_ms, start_ms },
        aggregate: Aggregate { sum, count: 2, min: 1.0, max: sum - 1.0 },
        closed: false,
    }
}

async fn sql(db: &Database, statement: &str) {
    sqlx::query(statement).execute(db.pool()).await.expect(statement);
}

/// Customer 7 (alice) and 8 (bob); the batch computed electricity for the two
/// days before yesterday; alice used 12 on the first and nothing on the second.
async fn api(servers: Servers) -> Api {
    api_with(servers, LoginLimits::default()).await
}

/// At most this many live streams at once in the suite's servers.
const MAX_LIVE_STREAMS: usize = 500;

async fn api_with(servers: Servers, limits: LoginLimits) -> Api {
    let directory = tempfile::tempdir().expect("temporary directory");
    let (backend, database_url) = match servers {
        Servers::Embedded => (Backend::embedded("api"), format!("sqlite://{}", directory.path().join("results.db").display())),
        Servers::Postgres => (Backend::real("api"), auth_testkit::fresh_database(&auth_testkit::postgres_url(), "api").await),
        Servers::MariaDb => (Backend::real("api"), auth_testkit::fresh_database(&auth_testkit::mysql_url(), "api").await),
    };
    let db = Database::connect(&database_url).await.expect("database");
    db.add_account("ops", PASSWORD, Role::Operator, None, false, 0).await.expect("operator");
    db.add_account("alice", PASSWORD, Role::Customer, Some(7), false, 0).await.expect("alice");
    db.add_account("bob", PASSWORD, Role::Customer, Some(8), false, 0).await.expect("bob");
    let today = now_ms().div_euclid(DAY) * DAY;
    let texas = WindowOwner::Region(Region::from_code("US-TX").expect("Texas"));
    let store = backend.new_store_keeping(60).await;
    let electricity = Utility::Electricity;
    store
        .apply(PartitionFlush {
            partition: TopicPartition::new("p.electricity", 0),
            epoch: None,
            windows: vec![
                window(WindowOwner::Customer(7), electricity, MINUTE, today, 3.0),
                window(WindowOwner::Customer(7), electricity, MINUTE, today + MINUTE, 4.0),
                window(WindowOwner::Customer(7), electricity, HOUR, today, 7.0),
                window(WindowOwner::Customer(7), electricity, DAY, today - 3 * DAY, 10.0),
                window(WindowOwner::Customer(7), electricity, DAY, today - 2 * DAY, 11.0),
                window(WindowOwner::Customer(7), electricity, DAY, today - DAY, 100.0),
                window(WindowOwner::Customer(7), electricity, DAY, today, 7.0),
                window(WindowOwner::Customer(8), Utility::Water, DAY, today, 40.0),
                window(texas, electricity, DAY, texan(today - DAY), 50.0),
                window(texas, electricity, DAY, texan(today), 2_914_550.5),
                window(texas, electricity, HOUR, texan(today), 9.0),
            ],
            meters: Vec::new(),
            checkpoint: None,
        })
        .await
        .expect("apply");
    // Days -3 and -2 were computed after they were over; today's row, computed
    // before its end (as `auth up` does), is not final and is not served.
    for offset in [3, 2, 0] {
        let day = date(today - offset * DAY);
        sql(&db, &format!("INSERT INTO reconciliation VALUES ('{day}', 'electricity', 1000.0, 100, 990.0, 10, 10.0, {}, 4.0)", today + HOUR)).await;
    }
    sql(&db, &format!("INSERT INTO daily_customer_usage VALUES ('{}', 'electricity', 7, 'US-TX', 1.0, 0.5, 0.5, 2, 0, 1.0, 1, 1, 0, 0, 0, 1.0, 2)", date(today))).await;
    let before_yesterday = date(today - 3 * DAY);
    sql(&db, &format!("INSERT INTO daily_customer_usage VALUES ('{before_yesterday}', 'electricity', 7, 'US-TX', 12.0, 0.5, 2.0, 12, 18, 3.0, 24, 18, 3, 1, 1, NULL, NULL)")).await;
    // Three of those readings were flagged: a spike of meter 70, two frozen
    // readings of meter 71; and the register of cumulative meter 72 rolled over.
    for (meter, hour, value, rule) in [(70, 18, 2.0, "spike"), (71, 2, 0.5, "frozen"), (71, 3, 0.5, "frozen"), (72, 5, 1.25, "rollover")] {
        let values = format!("'{before_yesterday}', 'electricity', {meter}, 7, 'US-TX', {}, {value}, '{rule}'", today - 3 * DAY + hour * HOUR);
        sql(&db, &format!("INSERT INTO suspect_intervals VALUES ({values})")).await;
    }
    // An operator's edit of meter 70 filled its hour 20, as the batch applied it.
    sql(&db, &format!("INSERT INTO edited_intervals VALUES ('{before_yesterday}', 'electricity', 70, 7, 'US-TX', {}, NULL, 0.5)", today - 3 * DAY + 20 * HOUR)).await;
    // Alice's meter 70 missed 6 of its 24 hours three days ago (the batch
    // estimated its hour 21 by interpolation), bob's meter 80 sent nothing;
    // two days ago (the newest final day) meter 80 missed one.
    sql(&db, &format!("INSERT INTO meter_gaps VALUES ('{before_yesterday}', 'electricity', 70, 7, 'US-TX', 3600, 24, 18, {}, 1)", today - 3 * DAY + 17 * HOUR)).await;
    sql(&db, &format!("INSERT INTO meter_gaps VALUES ('{before_yesterday}', 'electricity', 80, 8, 'US-TX', 3600, 24, 0, NULL, 0)")).await;
    sql(&db, &format!("INSERT INTO meter_gaps VALUES ('{}', 'electricity', 80, 8, 'US-TX', 3600, 24, 23, {}, 0)", date(today - 2 * DAY), today - DAY - HOUR)).await;
    sql(&db, &format!("INSERT INTO estimated_runs VALUES ('{before_yesterday}', 'electricity', 70, 7, 'US-TX', {}, {}, 1, 0.25, 'interpolated')", today - 3 * DAY + 21 * HOUR, today - 3 * DAY + 22 * HOUR)).await;
    sql(&db, &format!("INSERT INTO hourly_region_usage VALUES ('{before_yesterday}', 'electricity', 'US-TX', 0, 20.0, 4, 2)")).await;
    sql(&db, &format!("INSERT INTO hourly_region_usage VALUES ('{before_yesterday}', 'electricity', 'US-TX', 5, 22.0, 4, 2)")).await;
    sql(&db, &format!("INSERT INTO top_customers VALUES ('{before_yesterday}', 'electricity', 'US-TX', 1, 7, 12.0)")).await;
    sql(&db, &format!("INSERT INTO batch_runs VALUES ('{before_yesterday}', {}, 2500)", today - 2 * DAY)).await;
    sql(&db, &format!("INSERT INTO batch_runs VALUES ('{}', {}, 1500)", date(today - 2 * DAY), today + HOUR)).await;

    let topic = format!("{}.electricity", backend.pipeline);
    backend.log.ensure_topic(&topic, 2).await.expect("topic");
    let record = OutRecord { partition: 1, key: bytes::Bytes::from_static(b"k"), value: bytes::Bytes::from_static(b"v") };
    backend.log.producer().expect("producer").send(&topic, vec![record.clone(), record]).await.expect("send");
    let probe = PipelineProbe::new(Arc::clone(&backend.log), vec![topic]);
    let mut state = AppState::new(
        Arc::clone(&store),
        Arc::new(Sessions::new(db.clone(), limits)),
        Arc::new(probe),
        metrics_handle(),
    );
    state.live_interval = Duration::from_millis(50);
    state.limit_live_streams(MAX_LIVE_STREAMS);
    Api { app: router(state), _backend: backend, db, store, today, cookies: Default::default(), _directory: directory }
}

/// The process's Prometheus recorder, installed once: `/metrics` sets the batch's gauges through it.
fn metrics_handle() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| PrometheusBuilder::new().install_recorder().expect("the only recorder")).clone()
}

impl Api {
    async fn send(&self, request: Request<Body>) -> Response<Body> {
        self.app.clone().oneshot(request).await.expect("response")
    }

    async fn json(&self, request: Request<Body>) -> (StatusCode, Value) {
        let response = self.send(request).await;
        let status = response.status();
        let body = to_bytes(response.into_body(), 1 << 22).await.expect("body");
        (status, serde_json::from_slice(&body).unwrap_or(Value::Null))
    }

    async fn login(&self, username: &str) -> String {
        let response = self.send(post("/api/v1/login", &json!({"username": username, "password": PASSWORD}))).await;
        assert_eq!(response.status(), StatusCode::OK);
        let cookie = response.headers()[header::SET_COOKIE].to_str().expect("cookie").to_owned();
        cookie.split(';').next().expect("name=value").to_owned()
    }

    /// The session cookie of `username`, logged in once per suite.
    async fn cookie_of(&self, username: &str) -> String {
        let known = self.cookies.lock().await.get(username).cloned();
        match known {
            Some(cookie) => cookie,
            None => {
                let cookie = self.login(username).await;
                self.cookies.lock().await.insert(username.to_owned(), cookie.clone());
                cookie
            }
        }
    }

    /// GET as `username` (through the session cookie).
    async fn get_as(&self, username: &str, uri: &str) -> (StatusCode, Value) {
        let cookie = self.cookie_of(username).await;
        self.json(Request::get(uri).header(header::COOKIE, cookie).body(Body::empty()).expect("request")).await
    }
}

fn post(uri: &str, body: &Value) -> Request<Body> {
    Request::post(uri).header(header::CONTENT_TYPE, "application/json").body(Body::from(body.to_string())).expect("request")
}

fn sums(series: &Value) -> Vec<(i64, f64, String)> {
    series["points"]
        .as_array()
        .expect("points")
        .iter()
        .map(|p| (p["startMs"].as_i64().expect("start"), p["sum"].as_f64().expect("sum"), p["source"].as_str().expect("source").to_owned()))
        .collect()
}

async fn login_sets_a_secure_http_only_session_cookie(api: &Api) {
    let response = api.send(post("/api/v1/login", &json!({"username": "alice", "password": PASSWORD}))).await;
    assert_eq!(response.status(), StatusCode::OK);
    let cookie = response.headers()[header::SET_COOKIE].to_str().expect("cookie").to_owned();
    assert!(cookie.starts_with("auth_session="), "{cookie}");
    for flag in ["HttpOnly", "Secure", "SameSite=Strict", "Path=/", "Max-Age=43200"] {
        assert!(cookie.contains(flag), "{flag} in {cookie}");
    }
    let (status, me) = api.get_as("alice", "/api/v1/me").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(me, json!({"username": "alice", "role": "customer", "customerId": 7}));

    let (status, body) = api.json(post("/api/v1/login", &json!({"username": "alice", "password": "not it at all"}))).await;
    assert_eq!((status, body["error"].as_str()), (StatusCode::UNAUTHORIZED, Some("wrong username or password")));
    let (status, body) = api.json(post("/api/v1/login", &json!({"username": "nobody", "password": PASSWORD}))).await;
    assert_eq!((status, body["error"].as_str()), (StatusCode::UNAUTHORIZED, Some("wrong username or password")));
    let (status, body) = api.json(post("/api/v1/login", &json!({"user": "alice"}))).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(body["error"].as_str().expect("message").contains("username"), "{body}");
}

async fn logout_ends_the_session(api: &Api) {
    let cookie = api.login("alice").await;
    let me = || Request::get("/api/v1/me").header(header::COOKIE, cookie.clone()).body(Body::empty()).expect("request");
    assert_eq!(api.send(me()).await.status(), StatusCode::OK);
    let response = api.send(Request::post("/api/v1/logout").header(header::COOKIE, cookie.clone()).body(Body::empty()).expect("request")).await;
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    assert!(response.headers()[header::SET_COOKIE].to_str().expect("cookie").contains("Max-Age=0"));
    assert_eq!(api.send(me()).await.status(), StatusCode::UNAUTHORIZED);
}

async fn bearer_tokens_for_api_clients(api: &Api) {
    let (status, issued) = api.json(post("/api/v1/tokens", &json!({"username": "ops", "password": PASSWORD}))).await;
    assert_eq!(status, StatusCode::CREATED);
    let token = issued["token"].as_str().expect("token").to_owned();
    assert_eq!(issued["account"]["role"], "operator");
    let request = |token: &str| {
        Request::get("/api/v1/customers/8/usage").header(header::AUTHORIZATION, format!("Bearer {token}")).body(Body::empty()).expect("request")
    };
    assert_eq!(api.send(request(&token)).await.status(), StatusCode::OK);
    assert_eq!(api.send(request("auth_bearer_0000")).await.status(), StatusCode::UNAUTHORIZED);
    let stored: Vec<(String,)> = sqlx::query_as("SELECT token_hash FROM access_tokens").fetch_all(api.db.pool()).await.expect("rows");
    assert!(stored.iter().all(|(hash,)| hash != &token), "tokens are stored hashed");
}

async fn without_a_session_every_endpoint_answers_401(api: &Api) {
    for uri in [
        "/api/v1/me",
        "/api/v1/customers/7/usage",
        "/api/v1/customers/7/today",
        "/api/v1/customers/7/live",
        "/api/v1/regions",
        "/api/v1/regions/US-TX/usage",
        "/api/v1/regions/US-TX/top",
        "/api/v1/live/regions",
        "/api/v1/pipeline",
        "/api/v1/registry",
        "/api/v1/registry/meters/70",
        "/api/v1/customers/7/meters",
        "/api/v1/quality/gaps",
        "/api/v1/quality/suspect",
        "/api/v1/meters/70/audit",
        "/api/v1/meters/70/quality",
    ] {
        let response = api.send(Request::get(uri).body(Body::empty()).expect("request")).await;
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "{uri}");
        assert!(response.headers().contains_key(header::WWW_AUTHENTICATE), "{uri}");
        let response = api.send(Request::get(uri).header(header::COOKIE, "auth_session=forged").body(Body::empty()).expect("request")).await;
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "{uri} with a forged cookie");
    }
}

async fn customers_see_only_their_own_usage_and_operators_see_all(api: &Api) {
    for uri in ["/api/v1/customers/8/usage", "/api/v1/customers/8/today", "/api/v1/customers/8/live"] {
        let (status, body) = api.get_as("alice", uri).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{uri}");
        assert_eq!(body["error"], "account alice may only see its own customer's usage");
    }
    for uri in ["/api/v1/regions/US-TX/top", "/api/v1/pipeline", "/api/v1/quality/gaps", "/api/v1/quality/suspect"] {
        let (status, body) = api.get_as("alice", uri).await;
        assert_eq!((status, body["error"].as_str()), (StatusCode::FORBIDDEN, Some("operators only")), "{uri}");
    }
    assert_eq!(api.get_as("bob", "/api/v1/customers/8/usage").await.0, StatusCode::OK);
    assert_eq!(api.get_as("ops", "/api/v1/customers/7/usage").await.0, StatusCode::OK);
    assert_eq!(api.get_as("ops", "/api/v1/customers/8/usage").await.0, StatusCode::OK);
    assert_eq!(api.get_as("alice", "/api/v1/regions").await.0, StatusCode::OK, "regions' aggregates are for everyone");
}

async fn daily_usage_takes_computed_days_from_the_batch_and_the_rest_from_the_stream(api: &Api) {
    let today = api.today;
    let uri = format!("/api/v1/customers/7/usage?utility=electricity&granularity=day&from={}&to={}", date(today - 3 * DAY), today + DAY);
    let (status, body) = api.get_as("alice", &uri).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["granularity"], "day");
    let series = &body["utilities"][0];
    assert_eq!(series["unit"], "Wh");
    // Three days ago: the batch's 12 (not the stream's 10); two days ago: the
    // batch computed it and alice used nothing (not the stream's 11);
    // yesterday and today: the stream's windows.
    assert_eq!(
        sums(series),
        vec![
            (today - 3 * DAY, 12.0, "batch".into()),
            (today - 2 * DAY, 0.0, "batch".into()),
            (today - DAY, 100.0, "stream".into()),
            (today, 7.0, "stream".into()),
        ]
    );
    assert_eq!(series["points"][0]["closed"], true);
    let completeness: Vec<Value> = series["points"].as_array().expect("points").iter().map(|p| p["completeness"].clone()).collect();
    assert_eq!(completeness, vec![json!(0.75), Value::Null, Value::Null, Value::Null], "18 of 24 expected hours, on the batch's day");
    let suspect: Vec<Value> = series["points"].as_array().expect("points").iter().map(|p| p["suspect"].clone()).collect();
    assert_eq!(suspect, vec![json!(3), json!(0), Value::Null, Value::Null], "flagged readings of batch days");
    let edited: Vec<Value> = series["points"].as_array().expect("points").iter().map(|p| p["edited"].clone()).collect();
    assert_eq!(edited, vec![json!(1), json!(0), Value::Null, Value::Null], "intervals an operator edited, on batch days");
    let estimated: Vec<Value> = series["points"].as_array().expect("points").iter().map(|p| p["estimated"].clone()).collect();
    assert_eq!(estimated, vec![json!(1), json!(0), Value::Null, Value::Null], "intervals the batch estimated, on batch days");
}

async fn operators_list_the_meters_with_suspect_readings(api: &Api) {
    let before_yesterday = date(api.today - 3 * DAY);
    let (status, body) = api.get_as("ops", &format!("/api/v1/quality/suspect?date={before_yesterday}&utility=electricity")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    /// Meter, flagged, spikes, frozen, register events, largest value, first and last flagged.
    type Flagged = (u64, u64, u64, u64, u64, f64, i64, i64);
    let meters: Vec<Flagged> = body["meters"]
        .as_array()
        .expect("meters")
        .iter()
        .map(|m| {
            let number = |field: &str| m[field].as_u64().expect(field);
            let ms = |field: &str| m[field].as_i64().expect(field);
            let max = m["maxValue"].as_f64().expect("max");
            (number("meterId"), number("suspectIntervals"), number("spikes"), number("frozen"), number("registerEvents"), max, ms("firstMs"), ms("lastMs"))
        })
        .collect();
    let at = |hour: i64| api.today - 3 * DAY + hour * HOUR;
    assert_eq!(
        meters,
        vec![(71, 2, 0, 2, 0, 0.5, at(2), at(3)), (70, 1, 1, 0, 0, 2.0, at(18), at(18)), (72, 1, 0, 0, 1, 1.25, at(5), at(5))],
        "most flagged first"
    );
    let (_, newest) = api.get_as("ops", "/api/v1/quality/suspect").await;
    assert_eq!((newest["date"].as_str(), newest["meters"].as_array().map(Vec::len)), (Some(date(api.today - 2 * DAY).to_string().as_str()), Some(0)));
    let (status, body) = api.get_as("ops", "/api/v1/quality/suspect?limit=1001").await;
    assert_eq!((status, body["error"].as_str()), (StatusCode::BAD_REQUEST, Some("limit 1001 must be 1 to 1000")));
}

async fn operators_list_the_meters_with_gaps(api: &Api) {
    let before_yesterday = date(api.today - 3 * DAY);
    let (status, body) = api.get_as("ops", &format!("/api/v1/quality/gaps?date={before_yesterday}")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["date"], before_yesterday.to_string());
    let meters: Vec<(u64, u64, u64, f64, Value)> = body["meters"]
        .as_array()
        .expect("meters")
        .iter()
        .map(|m| {
            let number = |field: &str| m[field].as_u64().expect(field);
            (number("meterId"), number("customerId"), number("missingIntervals"), m["completeness"].as_f64().expect("completeness"), m["lastReadingMs"].clone())
        })
        .collect();
    assert_eq!(meters, vec![(80, 8, 24, 0.0, Value::Null), (70, 7, 6, 0.75, json!(api.today - 3 * DAY + 17 * HOUR))], "most missing first");
    let (_, newest) = api.get_as("ops", "/api/v1/quality/gaps?utility=electricity").await;
    assert_eq!(newest["date"], date(api.today - 2 * DAY).to_string(), "the newest final day; today's is not");
    assert_eq!(newest["meters"][0]["missingIntervals"], 1);
    let (_, none) = api.get_as("ops", &format!("/api/v1/quality/gaps?date={before_yesterday}&utility=water")).await;
    assert_eq!(none["meters"], json!([]));
    for (uri, reason) in [
        ("/api/v1/quality/gaps?date=yesterday", "date `yesterday` is not YYYY-MM-DD"),
        ("/api/v1/quality/gaps?limit=0", "limit 0 must be 1 to 1000"),
        ("/api/v1/quality/gaps?utility=steam", "utility: \"steam\" is not one of electricity, gas, water"),
    ] {
        let (status, body) = api.get_as("ops", uri).await;
        assert_eq!((status, body["error"].as_str()), (StatusCode::BAD_REQUEST, Some(reason)), "{uri}");
    }
}

async fn minutes_and_hours_come_from_the_stream(api: &Api) {
    let today = api.today;
    let (status, body) = api.get_as("alice", &format!("/api/v1/customers/7/usage?granularity=minute&from={today}&to={}", today + HOUR)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["utilities"].as_array().map(Vec::len), Some(1), "only the utilities alice has: {body}");
    assert_eq!(sums(&body["utilities"][0]), vec![(today, 3.0, "stream".into()), (today + MINUTE, 4.0, "stream".into())]);
    let (_, body) = api.get_as("alice", &format!("/api/v1/customers/7/usage?granularity=hour&from={today}&to={}", today + DAY)).await;
    assert_eq!(sums(&body["utilities"][0]), vec![(today, 7.0, "stream".into())]);
    let (status, body) = api.get_as("ops", "/api/v1/customers/99/usage").await;
    assert_eq!((status, body["error"].as_str()), (StatusCode::NOT_FOUND, Some("no usage recorded for customer 99")));
}

async fn bad_parameters_are_refused_with_the_reason(api: &Api) {
    let cases = [
        ("/api/v1/customers/abc/usage", "customer id `abc` is not a non-negative integer"),
        ("/api/v1/customers/7/usage?utility=steam", "utility: \"steam\" is not one of electricity, gas, water"),
        ("/api/v1/customers/7/usage?granularity=week", "granularity: \"week\" is not one of minute, hour, day"),
        ("/api/v1/regions/US-TX/usage?granularity=minute", "granularity: \"minute\" is not one of hour, day"),
        ("/api/v1/customers/7/usage?from=yesterday", "from: \"yesterday\" is not an RFC 3339 time, a YYYY-MM-DD date or UTC milliseconds"),
        ("/api/v1/customers/7/usage?from=2026-11-02&to=2026-11-01", "from: must be before to"),
        ("/api/v1/customers/7/usage?granularity=minute&from=2026-01-01&to=2026-03-01", "from, to: at most 10000 points of a minute; ask for a coarser granularity"),
        ("/api/v1/regions/US-TX/top?date=27.11.2026", "date: \"27.11.2026\" is not a YYYY-MM-DD date"),
        ("/api/v1/customers/7/usage?timeZone=Europe/Paris", "timeZone: \"Europe/Paris\" is not `local` or `UTC`"),
    ];
    for (uri, message) in cases {
        let (status, body) = api.get_as("ops", uri).await;
        assert_eq!((status, body["error"].as_str()), (StatusCode::BAD_REQUEST, Some(message)), "{uri}");
    }
    let (status, body) = api.get_as("ops", "/api/v1/customers/7/usage?colour=blue").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(body["error"].as_str().expect("message").contains("unknown field `colour`"), "{body}");
    let (status, body) = api.get_as("ops", "/api/v1/regions/XX-YY/usage").await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    let (status, _) = api.get_as("ops", "/api/v1/nothing").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

async fn today_against_yesterday(api: &Api) {
    let (status, body) = api.get_as("alice", "/api/v1/customers/7/today").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["dayStartMs"], api.today);
    let electricity = &body["utilities"][0];
    assert_eq!(electricity["utility"], "electricity");
    assert_eq!(electricity["today"], 7.0);
    assert_eq!((electricity["yesterday"].as_f64(), electricity["yesterdaySource"].as_str()), (Some(100.0), Some("stream")));
}

async fn regions_their_usage_and_top_consumers(api: &Api) {
    let today = api.today;
    let (status, body) = api.get_as("alice", "/api/v1/regions").await;
    assert_eq!(status, StatusCode::OK);
    let rows = body.as_array().expect("rows");
    assert_eq!(rows.len(), 51);
    let texas = rows.iter().find(|row| row["code"] == "US-TX").expect("Texas");
    assert_eq!(texas["utilities"][0]["sum"], 2_914_550.5);
    assert_eq!(texas["utilities"][0]["perCapita"], 0.1);
    assert_eq!(texas["dayStartMs"], texan(today));
    assert_eq!(texas["timeZone"], "America/Chicago");

    let range = format!("from={}&to={}", date(today - 3 * DAY), today + DAY);
    let (status, body) = api.get_as("alice", &format!("/api/v1/regions/US-TX/usage?utility=electricity&granularity=day&{range}")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["name"], "Texas");
    assert_eq!(body["timeZone"], "America/Chicago", "the zone of the region's days");
    assert_eq!(
        sums(&body["utilities"][0]),
        vec![
            (texan(today - 3 * DAY), 42.0, "batch".into()),
            (texan(today - 2 * DAY), 0.0, "batch".into()),
            (texan(today - DAY), 50.0, "stream".into()),
            (texan(today), 2_914_550.5, "stream".into()),
        ]
    );
    let (_, body) = api.get_as("alice", &format!("/api/v1/regions/US-TX/usage?utility=electricity&granularity=hour&{range}")).await;
    assert_eq!(
        sums(&body["utilities"][0]),
        vec![(texan(today - 3 * DAY), 20.0, "batch".into()), (texan(today - 3 * DAY) + 5 * HOUR, 22.0, "batch".into()), (texan(today), 9.0, "stream".into())],
        "hours count from Texas's local midnight"
    );

    let (status, body) = api.get_as("ops", "/api/v1/regions/US-TX/top").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["date"], date(today - 2 * DAY), "the newest day the batch computed");
    assert_eq!(body["customers"], json!([]));
    let (_, body) = api.get_as("ops", &format!("/api/v1/regions/US-TX/top?utility=electricity&date={}", date(today - 3 * DAY))).await;
    assert_eq!(body["customers"], json!([{"position": 1, "customerId": 7, "total": 12.0}]));
}

async fn pipeline_overview_for_operators(api: &Api) {
    let (status, body) = api.get_as("ops", "/api/v1/pipeline").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["logReadings"], 2);
    assert_eq!(body["lag"], 2, "no checkpoint yet: the whole log is lag");
    assert_eq!(body["partitions"].as_array().map(Vec::len), Some(2));
    assert_eq!((&body["reconciliation"][0]["drift"], &body["reconciliation"][0]["batchEstimated"]), (&json!(10.0), &json!(4.0)));
    assert_eq!(body["reconciliation"][0]["date"], date(api.today), "the newest reconciliation, final or not");
}

#[tokio::test]
async fn login_attempts_are_rate_limited() {
    let api = api_with(Servers::Embedded, LoginLimits { per_ip_per_minute: 100, per_username_per_minute: 3 }).await;
    for _ in 0..3 {
        let (status, _) = api.json(post("/api/v1/login", &json!({"username": "bob", "password": "guess guess"}))).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
    }
    let response = api.send(post("/api/v1/login", &json!({"username": "bob", "password": PASSWORD}))).await;
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS, "even the right password waits");
    assert!(response.headers().contains_key(header::RETRY_AFTER));
    assert_eq!(api.send(post("/api/v1/login", &json!({"username": "alice", "password": PASSWORD}))).await.status(), StatusCode::OK);
    let hostile = "x".repeat(5_000);
    let (status, body) = api.json(post("/api/v1/login", &json!({"username": hostile, "password": PASSWORD}))).await;
    assert_eq!((status, body["error"].as_str()), (StatusCode::UNAUTHORIZED, Some("wrong username or password")));
}

/// The first event of a live stream, as text.
async fn first_event(api: &Api, username: &str, uri: &str) -> String {
    let cookie = api.login(username).await;
    let response = api.send(Request::get(uri).header(header::COOKIE, cookie).body(Body::empty()).expect("request")).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()[header::CONTENT_TYPE], "text/event-stream");
    let mut body = response.into_body().into_data_stream();
    let chunk = tokio::time::timeout(Duration::from_secs(5), body.next()).await.expect("an event within 5 s");
    String::from_utf8(chunk.expect("a chunk").expect("data").to_vec()).expect("UTF-8")
}

async fn live_updates_by_server_sent_events(api: &Api) {
    let event = first_event(api, "alice", "/api/v1/customers/7/live").await;
    assert!(event.starts_with("event: usage\ndata: "), "{event}");
    let data: Value = serde_json::from_str(event.lines().nth(1).expect("data line").trim_start_matches("data: ")).expect("JSON");
    assert_eq!(data["customerId"], 7);
    assert_eq!(data["utilities"][0]["today"]["sum"], 7.0);
    assert_eq!(data["utilities"][0]["minutes"].as_array().map(Vec::len), Some(2));
    let event = first_event(api, "ops", "/api/v1/live/regions").await;
    assert!(event.starts_with("event: regions\ndata: ["), "{event}");
    assert!(event.contains("\"US-TX\""));
}

/// Opens a live stream as the holder of `cookie`; the response holds it open.
async fn open_live(api: &Api, cookie: &str, uri: &str) -> Response<Body> {
    api.send(Request::get(uri).header(header::COOKIE, cookie).body(Body::empty()).expect("request")).await
}

async fn live_streams_are_capped_and_end_with_their_session(api: &Api) {
    let (alice, ops) = (api.login("alice").await, api.login("ops").await);
    let mut open = Vec::new();
    for stream in 0..MAX_LIVE_STREAMS {
        let (cookie, uri) = if stream % 2 == 0 { (&alice, "/api/v1/customers/7/live") } else { (&ops, "/api/v1/live/regions") };
        let response = open_live(api, cookie, uri).await;
        assert_eq!(response.status(), StatusCode::OK, "stream {stream}");
        open.push(response);
    }
    let refused = open_live(api, &ops, "/api/v1/live/regions").await;
    assert_eq!(refused.status(), StatusCode::SERVICE_UNAVAILABLE, "beyond the cap");
    assert!(refused.headers().contains_key(header::RETRY_AFTER));
    open.truncate(MAX_LIVE_STREAMS - 1);
    let mut alice_stream = open_live(api, &alice, "/api/v1/customers/7/live").await.into_body().into_data_stream();
    assert!(
        tokio::time::timeout(Duration::from_secs(5), alice_stream.next()).await.expect("an event").is_some(),
        "a closed stream frees its slot"
    );
    let logout = Request::post("/api/v1/logout").header(header::COOKIE, &alice).body(Body::empty()).expect("request");
    assert_eq!(api.send(logout).await.status(), StatusCode::NO_CONTENT);
    let ended = tokio::time::timeout(Duration::from_secs(5), async {
        while let Some(chunk) = alice_stream.next().await {
            chunk.expect("data");
        }
    })
    .await;
    assert!(ended.is_ok(), "a logged-out session's stream ends");
}

async fn the_openapi_document_describes_every_route(api: &Api) {
    let (status, document) = api.json(Request::get("/api/v1/openapi.json").body(Body::empty()).expect("request")).await;
    assert_eq!(status, StatusCode::OK);
    let paths = document["paths"].as_object().expect("paths");
    for path in [
        "/api/v1/login", "/api/v1/logout", "/api/v1/tokens", "/api/v1/me", "/api/v1/customers/{id}/usage",
        "/api/v1/customers/{id}/today", "/api/v1/customers/{id}/live", "/api/v1/regions", "/api/v1/regions/{code}/usage",
        "/api/v1/regions/{code}/top", "/api/v1/live/regions", "/api/v1/pipeline", "/api/v1/registry",
        "/api/v1/registry/meters/{id}", "/api/v1/customers/{id}/meters", "/api/v1/quality/gaps", "/api/v1/quality/suspect",
        "/api/v1/quality/silent",
        "/api/v1/meters/{id}/edits", "/api/v1/meters/{id}/approvals", "/api/v1/meters/{id}/audit", "/api/v1/meters/{id}/quality",
    ] {
        assert!(paths.contains_key(path), "{path} is documented");
    }
    assert!(document["components"]["schemas"]["CustomerUsage"].is_object());
    let parameters = document["paths"]["/api/v1/customers/{id}/usage"]["get"]["parameters"].as_array().expect("parameters");
    let names: Vec<&str> = parameters.iter().filter_map(|parameter| parameter["name"].as_str()).collect();
    assert_eq!(names, vec!["id", "utility", "granularity", "from", "to", "timeZone"], "the query parameters by the names a client sends");
}

async fn dashboard_files_health_and_metrics(api: &Api) {
    for (uri, needle) in [
        ("/", "AUTH"),
        ("/app.js", "EventSource"),
        ("/vendor/uPlot.iife.min.js", "uPlot"),
        ("/vendor/us-states.json", "US-CA"),
        ("/vendor/LICENSE.uPlot", "MIT"),
        ("/healthz", "ok"),
        ("/metrics", ""),
    ] {
        let response = api.send(Request::get(uri).body(Body::empty()).expect("request")).await;
        assert_eq!(response.status(), StatusCode::OK, "{uri}");
        let body = to_bytes(response.into_body(), 1 << 22).await.expect("body");
        assert!(String::from_utf8_lossy(&body).contains(needle), "{uri}");
    }
    // The batch's newest run, read from the results database.
    let response = api.send(Request::get("/metrics").body(Body::empty()).expect("request")).await;
    let body = to_bytes(response.into_body(), 1 << 22).await.expect("body");
    let metrics = String::from_utf8_lossy(&body);
    let value = |name: &str| -> f64 {
        let line = metrics.lines().find(|line| line.starts_with(&format!("{name} "))).unwrap_or_else(|| panic!("{name}:\n{metrics}"));
        line[name.len()..].trim().parse().expect("a number")
    };
    assert_eq!(value("auth_batch_duration_seconds"), 1.5);
    assert_eq!(value("auth_batch_last_success_timestamp_seconds"), (api.today + HOUR) as f64 / 1_000.0);
}

/// A request as `username` with a JSON body (none when `Value::Null`).
async fn send_as(api: &Api, username: &str, method: &str, uri: &str, body: &Value) -> (StatusCode, Value) {
    let cookie = api.cookie_of(username).await;
    let body = if body.is_null() { Body::empty() } else { Body::from(body.to_string()) };
    let request = Request::builder()
        .method(method)
        .uri(uri)
        .header(header::COOKIE, cookie)
        .header(header::CONTENT_TYPE, "application/json")
        .body(body)
        .expect("request");
    api.json(request).await
}

async fn operators_manage_the_registry_and_customers_see_their_meters(api: &Api) {
    let installation = |customer: u64, from: i64, to: Option<i64>| {
        json!({"meterId": 70, "customerId": customer, "premiseId": "TX-70", "region": "US-TX", "utility": "electricity",
               "customerKind": "residential", "unit": "kWh", "multiplier": 1.0, "register": "interval", "intervalSecs": 900,
               "validFromMs": from, "validToMs": to})
    };
    // Alice (customer 7) moves out; Bob (customer 8) moves in.
    let meter = json!([installation(7, 0, Some(1_000)), installation(8, 1_000, None)]);
    let (status, answer) = send_as(api, "alice", "PUT", "/api/v1/registry/meters/70", &meter).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{answer}");
    let (status, answer) = send_as(api, "ops", "PUT", "/api/v1/registry/meters/70", &meter).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer["installations"].as_array().map(Vec::len), Some(2), "{answer}");

    let overlapping = json!([installation(7, 0, None), installation(8, 500, None)]);
    let (status, answer) = send_as(api, "ops", "PUT", "/api/v1/registry/meters/70", &overlapping).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
    assert!(answer["error"].as_str().expect("a reason").contains("installation 2: meter 70 is already installed"), "{answer}");

    let (status, meters) = api.get_as("bob", "/api/v1/customers/8/meters").await;
    assert_eq!(status, StatusCode::OK, "{meters}");
    assert_eq!(meters["installations"][0]["premiseId"], "TX-70");
    assert_eq!(api.get_as("bob", "/api/v1/customers/7/meters").await.0, StatusCode::FORBIDDEN);
    let (status, summary) = api.get_as("ops", "/api/v1/registry").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!((summary["meters"].as_u64(), summary["installations"].as_u64()), (Some(1), Some(2)), "{summary}");
    assert_eq!(api.get_as("alice", "/api/v1/registry").await.0, StatusCode::FORBIDDEN);

    let (status, _) = send_as(api, "ops", "DELETE", "/api/v1/registry/meters/70", &Value::Null).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert_eq!(api.get_as("ops", "/api/v1/registry/meters/70").await.0, StatusCode::NOT_FOUND);
    let changes = api.db.registry_changes(0).await.expect("changes");
    assert_eq!(changes.len(), 1, "the removal is a change the publisher sends: {changes:?}");
    assert!(changes[0].installations.is_empty());
}

async fn operators_edit_and_approve_intervals_with_an_audit_log(api: &Api) {
    let installed = |meter: u64| {
        json!([{"meterId": meter, "customerId": 7, "premiseId": "TX-7", "region": "US-TX", "utility": "electricity",
                "customerKind": "residential", "unit": "kWh", "multiplier": 1.0, "register": "interval", "intervalSecs": 3600,
                "validFromMs": 0, "validToMs": null}])
    };
    for meter in [70, 71] {
        let (status, answer) = send_as(api, "ops", "PUT", &format!("/api/v1/registry/meters/{meter}"), &installed(meter)).await;
        assert_eq!(status, StatusCode::OK, "{answer}");
    }
    let before_yesterday = date(api.today - 3 * DAY);
    let at = |hour: i64| api.today - 3 * DAY + hour * HOUR;
    let edit = |ts_ms: i64, value: f64, reason: &str| json!({"intervals": [{"tsMs": ts_ms, "value": value}], "reason": reason});

    let (status, _) = send_as(api, "alice", "POST", "/api/v1/meters/70/edits", &edit(at(18), 1.0, "mine")).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    for (uri, body, status, reason) in [
        ("/api/v1/meters/99/edits", edit(at(18), 1.0, "x"), StatusCode::NOT_FOUND, "meter 99 is not in the registry"),
        ("/api/v1/meters/70/edits", edit(at(18), 1.0, "  "), StatusCode::BAD_REQUEST, "reason: say why"),
        ("/api/v1/meters/70/edits", edit(at(18), 1e308, "x"), StatusCode::BAD_REQUEST, "value 1e308 is not between 0 and"),
        ("/api/v1/meters/70/edits", edit(-5, 1.0, "x"), StatusCode::BAD_REQUEST, "meter 70 was not installed at -5"),
        ("/api/v1/meters/70/edits", json!({"intervals": [], "reason": "x"}), StatusCode::BAD_REQUEST, "intervals: name at least one"),
        ("/api/v1/meters/70/approvals", json!({"date": "yesterday", "reason": "x"}), StatusCode::BAD_REQUEST, "is not YYYY-MM-DD"),
        ("/api/v1/meters/70/approvals", json!({"date": date(api.today - DAY), "reason": "x"}), StatusCode::BAD_REQUEST, "no reading flagged suspect"),
    ] {
        let (answered, answer) = send_as(api, "ops", "POST", uri, &body).await;
        assert_eq!(answered, status, "{uri} {body}: {answer}");
        assert!(answer["error"].as_str().is_some_and(|error| error.contains(reason)), "{uri} {body}: {answer}");
    }

    // Meter 70's spike (2.0, flagged by the batch) edited with the reading before it, which was never flagged;
    // meter 71's suspect day approved.
    let edits = json!({"intervals": [{"tsMs": at(17), "value": 0.25}, {"tsMs": at(18), "value": 1.0}], "reason": "register misread"});
    let (status, changed) = send_as(api, "ops", "POST", "/api/v1/meters/70/edits", &edits).await;
    assert_eq!(status, StatusCode::OK, "{changed}");
    assert_eq!(changed["days"], json!([before_yesterday]), "the day the next batch run restates");
    let old_values: Vec<&Value> = changed["entries"].as_array().expect("entries").iter().map(|e| &e["oldValue"]).collect();
    assert_eq!(old_values, vec![&Value::Null, &json!(2.0)], "the results hold no unflagged reading; the spike as the batch flagged it");
    let approval = json!({"date": before_yesterday, "reason": "checked on site"});
    let (status, changed) = send_as(api, "ops", "POST", "/api/v1/meters/71/approvals", &approval).await;
    assert_eq!(status, StatusCode::OK, "{changed}");
    assert_eq!(changed["entries"].as_array().map(Vec::len), Some(2), "both frozen readings: {changed}");
    // A second edit of the same interval: the value before is the first edit's.
    let (status, changed) = send_as(api, "ops", "POST", "/api/v1/meters/70/edits", &edit(at(18), 1.5, "better estimate")).await;
    assert_eq!(status, StatusCode::OK, "{changed}");

    let (status, log) = api.get_as("ops", "/api/v1/meters/70/audit").await;
    assert_eq!(status, StatusCode::OK, "{log}");
    let entries: Vec<(Value, Value, Value, Value, Value)> = log["entries"]
        .as_array()
        .expect("entries")
        .iter()
        .map(|e| (e["action"].clone(), e["oldValue"].clone(), e["newValue"].clone(), e["changedBy"].clone(), e["reason"].clone()))
        .collect();
    assert_eq!(entries, vec![
        (json!("edit"), json!(1.0), json!(1.5), json!("ops"), json!("better estimate")),
        (json!("edit"), Value::Null, json!(0.25), json!("ops"), json!("register misread")),
        (json!("edit"), json!(2.0), json!(1.0), json!("ops"), json!("register misread")),
    ], "newest first");
    let (_, log) = api.get_as("ops", "/api/v1/meters/71/audit").await;
    let approvals: Vec<(Value, Value, Value)> =
        log["entries"].as_array().expect("entries").iter().map(|e| (e["action"].clone(), e["tsMs"].clone(), e["oldValue"].clone())).collect();
    assert_eq!(approvals, vec![(json!("approve"), json!(at(2)), json!(0.5)), (json!("approve"), json!(at(3)), json!(0.5))]);
    assert_eq!(api.get_as("alice", "/api/v1/meters/70/audit").await.0, StatusCode::FORBIDDEN);
    let (status, answer) = api.get_as("ops", "/api/v1/meters/70/audit?limit=0").await;
    assert_eq!((status, answer["error"].as_str()), (StatusCode::BAD_REQUEST, Some("limit 0 must be 1 to 1000")));
}

async fn operators_see_a_meters_day_interval_by_interval(api: &Api) {
    let before_yesterday = date(api.today - 3 * DAY);
    let at = |hour: i64| api.today - 3 * DAY + hour * HOUR;
    let (status, day) = api.get_as("ops", &format!("/api/v1/meters/70/quality?date={before_yesterday}")).await;
    assert_eq!(status, StatusCode::OK, "{day}");
    assert_eq!((day["meterId"].as_u64(), day["date"].as_str()), (Some(70), Some(before_yesterday.as_str())));
    let gaps: Vec<(Value, Value, Value)> =
        day["gaps"].as_array().expect("gaps").iter().map(|g| (g["expectedIntervals"].clone(), g["missingIntervals"].clone(), g["lastReadingMs"].clone())).collect();
    assert_eq!(gaps, vec![(json!(24), json!(6), json!(at(17)))]);
    assert_eq!(day["suspect"], json!([{"utility": "electricity", "customerId": 7, "tsMs": at(18), "value": 2.0, "rule": "spike"}]));
    assert_eq!(day["edited"], json!([{"utility": "electricity", "customerId": 7, "tsMs": at(20), "readValue": null, "value": 0.5}]));
    assert_eq!(day["estimated"], json!([{"utility": "electricity", "customerId": 7, "fromMs": at(21), "toMs": at(22), "intervals": 1, "total": 0.25, "method": "interpolated"}]));
    assert_eq!(day["gaps"][0]["estimatedIntervals"], 1);
    let (_, newest) = api.get_as("ops", "/api/v1/meters/70/quality").await;
    assert_eq!(newest["date"].as_str(), Some(date(api.today - 2 * DAY).as_str()), "the newest settled day by default");
    assert_eq!((newest["gaps"].as_array().map(Vec::len), newest["suspect"].as_array().map(Vec::len)), (Some(0), Some(0)), "{newest}");
    assert_eq!(api.get_as("alice", "/api/v1/meters/70/quality").await.0, StatusCode::FORBIDDEN);
    let (status, answer) = api.get_as("ops", "/api/v1/meters/70/quality?date=2026-13-01").await;
    assert_eq!((status, answer["error"].as_str()), (StatusCode::BAD_REQUEST, Some("date `2026-13-01` is not YYYY-MM-DD")));
}

/// Each check as a test on every backend: a fresh API (and rate limiter) per test.
macro_rules! suite {
    ($($check:ident),* $(,)?) => {
        mod embedded {
            $(#[tokio::test]
            async fn $check() {
                super::$check(&super::api(super::Servers::Embedded).await).await;
            })*
        }
        mod on_kafka_redis_postgres {
            $(#[tokio::test]
            #[ignore = "needs Kafka, Redis and PostgreSQL: scripts/test.sh"]
            async fn $check() {
                super::$check(&super::api(super::Servers::Postgres).await).await;
            })*
        }
        mod on_kafka_redis_mariadb {
            $(#[tokio::test]
            #[ignore = "needs Kafka, Redis and MariaDB: scripts/test.sh"]
            async fn $check() {
                super::$check(&super::api(super::Servers::MariaDb).await).await;
            })*
        }
    };
}

suite!(
    login_sets_a_secure_http_only_session_cookie,
    logout_ends_the_session,
    bearer_tokens_for_api_clients,
    without_a_session_every_endpoint_answers_401,
    customers_see_only_their_own_usage_and_operators_see_all,
    daily_usage_takes_computed_days_from_the_batch_and_the_rest_from_the_stream,
    minutes_and_hours_come_from_the_stream,
    bad_parameters_are_refused_with_the_reason,
    today_against_yesterday,
    regions_their_usage_and_top_consumers,
    pipeline_overview_for_operators,
    live_updates_by_server_sent_events,
    live_streams_are_capped_and_end_with_their_session,
    the_openapi_document_describes_every_route,
    dashboard_files_health_and_metrics,
    operators_manage_the_registry_and_customers_see_their_meters,
    operators_list_the_meters_with_gaps,
    operators_list_the_meters_with_suspect_readings,
    operators_edit_and_approve_intervals_with_an_audit_log,
    operators_see_a_meters_day_interval_by_interval,
    operators_list_the_meters_the_stream_has_not_heard_from,
    utc_days_are_a_query_option,
);

/// Customer 9 (California, whose days start at 08:00 UTC in December): a
/// UTC day is the end of one local day and the start of the next, from the
/// batch where it computed the local day and from the stream's hours elsewhere.
async fn utc_days_are_a_query_option(api: &Api) {
    let today = api.today;
    let meter = json!([{"meterId": 90, "customerId": 9, "premiseId": "CA-9", "region": "US-CA", "utility": "electricity",
                        "customerKind": "residential", "unit": "kWh", "multiplier": 1.0, "register": "interval", "intervalSecs": 3600,
                        "validFromMs": 0, "validToMs": null}]);
    let (status, answer) = send_as(api, "ops", "PUT", "/api/v1/registry/meters/90", &meter).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    // The batch computed local days -3 (10, 6 of it before UTC midnight) and -2 (20, 15 before).
    for (offset, total, first) in [(3, 10.0, 6.0), (2, 20.0, 15.0)] {
        let values = format!("'{}', 'electricity', 9, 'US-CA', {total}, 1.0, 1.0, {total}, 0, 1.0, 24, 24, 0, 0, 0, {first}, {first}", date(today - offset * DAY));
        sql(&api.db, &format!("INSERT INTO daily_customer_usage VALUES ({values})")).await;
    }
    // The stream's hours of local day -1, and one of local day -2 that the batch replaces.
    let hours = [(-DAY + 2 * HOUR, 70.0), (-DAY + 8 * HOUR, 3.0), (-DAY + 20 * HOUR, 2.0)];
    let windows = hours.iter().map(|&(at, sum)| window(WindowOwner::Customer(9), Utility::Electricity, HOUR, today + at, sum)).collect();
    let flush = PartitionFlush { partition: TopicPartition::new("p.electricity", 0), epoch: None, windows, meters: Vec::new(), checkpoint: None };
    api.store.apply(flush).await.expect("apply");

    let range = format!("utility=electricity&from={}&to={}", date(today - 2 * DAY), date(today));
    let (status, body) = api.get_as("ops", &format!("/api/v1/customers/9/usage?{range}&timeZone=UTC")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["timeZone"], "UTC");
    assert_eq!(
        sums(&body["utilities"][0]),
        vec![(today - 2 * DAY, 4.0 + 15.0, "batch".into()), (today - DAY, 5.0 + 3.0 + 2.0, "stream".into())],
        "the end of one local day and the start of the next"
    );
    let (_, body) = api.get_as("ops", &format!("/api/v1/customers/9/usage?{range}")).await;
    assert_eq!(body["timeZone"], "America/Los_Angeles");
    let local: Vec<(i64, f64)> = sums(&body["utilities"][0]).into_iter().map(|(start, sum, _)| (start, sum)).collect();
    assert_eq!(local, vec![(today - 2 * DAY + 8 * HOUR, 20.0)], "local days by default: the day of -2 starts at 08:00 UTC");

    // Texas's batch hours 0 and 5 of local day -3 are in UTC day -3; its stream hour of today in UTC today.
    let range = format!("utility=electricity&from={}&to={}", date(today - 3 * DAY), today + DAY);
    let (status, body) = api.get_as("alice", &format!("/api/v1/regions/US-TX/usage?{range}&timeZone=UTC")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["timeZone"], "UTC");
    let utc_days: Vec<(i64, f64)> = sums(&body["utilities"][0]).into_iter().map(|(start, sum, _)| (start, sum)).collect();
    assert_eq!(utc_days, vec![(today - 3 * DAY, 42.0), (today - 2 * DAY, 0.0), (today - DAY, 0.0), (today, 9.0)]);
}

/// The stream keeps each meter's newest reading time in the serving store;
/// the API measures it against the meter's reading interval in the registry.
async fn operators_list_the_meters_the_stream_has_not_heard_from(api: &Api) {
    let installed = |meter: u64, interval_secs: u32, valid_to_ms: Option<i64>| {
        json!([{"meterId": meter, "customerId": 9, "premiseId": "TX-9", "region": "US-TX", "utility": "electricity",
                "customerKind": "residential", "unit": "kWh", "multiplier": 1.0, "register": "interval", "intervalSecs": interval_secs,
                "validFromMs": 0, "validToMs": valid_to_ms}])
    };
    // 90 reads every minute, 91 every hour; 92 was exchanged yesterday; 93 is not in the registry.
    for (meter, body) in [(90, installed(90, 60, None)), (91, installed(91, 3600, None)), (92, installed(92, 60, Some(api.today - DAY)))] {
        let (status, answer) = send_as(api, "ops", "PUT", &format!("/api/v1/registry/meters/{meter}"), &body).await;
        assert_eq!(status, StatusCode::OK, "{answer}");
    }
    let now = now_ms();
    let last_readings = [(90, now - 10 * MINUTE - 1_000), (91, now - 2 * HOUR - 1_000), (92, now - 2 * DAY), (93, now - 3 * DAY)];
    let meters = last_readings.iter().map(|&(meter_id, ts_ms)| MeterLastReading { meter_id, ts_ms }).collect();
    let flush = PartitionFlush { partition: TopicPartition::new("p.electricity", 0), epoch: None, windows: Vec::new(), meters, checkpoint: None };
    api.store.apply(flush).await.expect("apply");

    let silent = |answer: &Value| -> Vec<(u64, i64, i64)> {
        let meters = answer["meters"].as_array().expect("meters");
        meters.iter().map(|m| (m["meterId"].as_u64().expect("id"), m["lastReadingMs"].as_i64().expect("last"), m["silentIntervals"].as_i64().expect("n"))).collect()
    };
    let (status, answer) = api.get_as("ops", "/api/v1/quality/silent").await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(silent(&answer), vec![(90, now - 10 * MINUTE - 1_000, 10)], "four intervals by default: the hourly meter missed two");
    assert_eq!((answer["intervals"].as_u64(), answer["complete"].as_bool()), (Some(4), Some(true)), "{answer}");
    assert_eq!((answer["meters"][0]["customerId"].as_u64(), answer["meters"][0]["intervalSecs"].as_u64()), (Some(9), Some(60)));
    let (_, answer) = api.get_as("ops", "/api/v1/quality/silent?intervals=2").await;
    assert_eq!(silent(&answer), vec![(91, now - 2 * HOUR - 1_000, 2), (90, now - 10 * MINUTE - 1_000, 10)], "the longest silent first");
    let (_, answer) = api.get_as("ops", "/api/v1/quality/silent?intervals=2&limit=1").await;
    assert_eq!(silent(&answer).iter().map(|m| m.0).collect::<Vec<_>>(), vec![91]);
    let (_, answer) = api.get_as("ops", "/api/v1/quality/silent?utility=water").await;
    assert_eq!(answer["meters"], json!([]));

    assert_eq!(api.get_as("alice", "/api/v1/quality/silent").await.0, StatusCode::FORBIDDEN);
    for (uri, reason) in [
        ("/api/v1/quality/silent?intervals=0", "intervals 0 must be 1 to 100000"),
        ("/api/v1/quality/silent?limit=5000", "limit 5000 must be 1 to 1000"),
        ("/api/v1/quality/silent?utility=steam", "steam"),
        ("/api/v1/quality/silent?date=2026-01-01", "date"),
    ] {
        let (status, answer) = api.get_as("ops", uri).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{uri}: {answer}");
        assert!(answer["error"].as_str().is_some_and(|error| error.contains(reason)), "{uri}: {answer}");
    }
}
