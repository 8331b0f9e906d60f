//! The ingest gateway: readings in the edge format (JSON) from HTTP and MQTT
//! onto a pipeline's utility topics, refused ones onto its dead-letter topic.
//!
//! "Accepted" means durable: a request is answered 202 only after the log
//! acknowledged every accepted reading (Kafka: `acks=all`). When the log does
//! not acknowledge within `ingest.ackTimeoutMs` the answer is 503 and the
//! client sends again; a reading stored twice that way counts once, as the
//! stream processor counts a meter's reading per event time once.
//!
//! `POST /api/v1/readings` answers, as JSON, `{"accepted": n, "refused":
//! [{"index": i, "reasons": [...]}]}` with
//! - 202: every reading accepted;
//! - 400: some readings refused (the valid ones of the same body are stored);
//! - 403: some readings are of meters or regions the key may not send for;
//! - 401: no key or an invalid one; 413: body or batch too large;
//! - 429 with `Retry-After` and no reading read: too many wrong keys of this key id, or from this address, were tried;
//! - 429 with `Retry-After`: too many readings wait for the log already;
//! - 503 with `Retry-After`: the log did not acknowledge, or the meter
//!   registry is still loading; nothing is promised.
//!
//! Whose a reading is comes from the meter registry ([`LiveRegistry`]): the
//! installation of its meter at its event time names the customer, region,
//! utility and kind, and a reading of an unknown meter is refused. Only with
//! `ingest.trustReadings` does the gateway believe what a reading says.

use std::sync::Arc;
use std::time::{Duration, Instant};

use auth_core::edge::{ParsedBody, RefusedItem, TooManyReadings, parse_body};
use auth_core::ports::{LogProducer, OutRecord, PortError};
use auth_core::{DeadLetter, DeadLetterSource, IngestSpec, ReceiverClock, Utility, codec, dead_letter_topic, utility_topic};
use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use bytes::{Bytes, BytesMut};
use serde::Serialize;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use crate::keys::{Grant, KeyRing, Presented, Refusal};
use crate::log_sink::LogRecords;
use crate::registry_feed::LiveRegistry;

/// Readings the gateway handled, by `source` (http, mqtt) and `outcome` (accepted, refused).
pub const METRIC_READINGS: &str = "auth_ingest_readings_total";
/// Requests answered, by `source` and HTTP `status`.
pub const METRIC_REQUESTS: &str = "auth_ingest_requests_total";
/// Time from a request's arrival to its answer, by `source`.
pub const METRIC_REQUEST_SECONDS: &str = "auth_ingest_request_duration_seconds";
/// How long a body with a meter the registry does not know waits for the
/// registry to catch up with its topic before the meter is refused.
const REGISTRY_SYNC_TIMEOUT: Duration = Duration::from_secs(5);

/// Readings sent to the log and not acknowledged yet.
pub const METRIC_IN_FLIGHT: &str = "auth_ingest_in_flight_readings";

/// Where a body came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Http,
    Mqtt,
}

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Http => "http",
            Source::Mqtt => "mqtt",
        }
    }
}

/// What became of a body's readings.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Outcome {
    pub accepted: usize,
    pub refused: Vec<Refused>,
    /// Some readings were refused because of the key's meters or regions.
    #[serde(skip)]
    pub forbidden: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Refused {
    pub index: usize,
    pub reasons: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error(transparent)]
    TooMany(#[from] TooManyReadings),
    #[error("the body is larger than the {max} bytes allowed")]
    TooLarge { max: u64 },
    #[error("the body holds no readings")]
    Empty,
    #[error("{waiting} readings already wait for the log (at most {max}); send again later")]
    Busy { waiting: usize, max: usize },
    #[error("the log did not acknowledge within {ms} ms; the readings may not be stored, send them again")]
    AckTimeout { ms: u64 },
    #[error("the readings were not stored, send them again: {0}")]
    Log(PortError),
    #[error("the meter registry is still loading; send again shortly")]
    RegistryLoading,
}

impl IngestError {
    pub fn status(&self) -> StatusCode {
        match self {
            IngestError::TooMany(_) | IngestError::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            IngestError::Empty => StatusCode::BAD_REQUEST,
            IngestError::Busy { .. } => StatusCode::TOO_MANY_REQUESTS,
            IngestError::AckTimeout { .. } | IngestError::RegistryLoading => StatusCode::SERVICE_UNAVAILABLE,
            IngestError::Log(err) if err.is_retryable() => StatusCode::SERVICE_UNAVAILABLE,
            IngestError::Log(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// Whether sending the same body again later may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(self.status(), StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE)
    }
}

/// Validates bodies of readings and writes them to a pipeline's topics.
#[derive(Clone)]
pub struct Gateway {
    inner: Arc<Inner>,
}

struct Inner {
    producer: Arc<dyn LogProducer>,
    utilities: Vec<Utility>,
    topics: [String; 3],
    dead_letters: String,
    partitions: u32,
    limits: IngestSpec,
    /// How far ahead of this gateway's clock a reading's event time may be (`windows.maxClockAheadSecs`).
    max_clock_ahead_ms: i64,
    keys: Arc<KeyRing>,
    /// `None`: `ingest.trustReadings`, readings say whose they are.
    registry: Option<Arc<LiveRegistry>>,
    in_flight: Arc<Semaphore>,
}

impl Gateway {
    pub fn new(
        producer: Arc<dyn LogProducer>,
        pipeline: &str,
        spec: &auth_core::PipelineSpec,
        keys: Arc<KeyRing>,
        registry: Arc<LiveRegistry>,
    ) -> Self {
        let inner = Inner {
            producer,
            utilities: spec.utilities.clone(),
            topics: Utility::ALL.map(|utility| utility_topic(pipeline, utility)),
            dead_letters: dead_letter_topic(pipeline),
            partitions: spec.log.partitions,
            limits: spec.ingest.clone(),
            max_clock_ahead_ms: spec.windows.max_clock_ahead_ms(),
            keys,
            registry: (!spec.ingest.trust_readings).then_some(registry),
            in_flight: Arc::new(Semaphore::new(spec.ingest.max_in_flight_readings as usize)),
        };
        Self { inner: Arc::new(inner) }
    }

    pub fn limits(&self) -> &IngestSpec {
        &self.inner.limits
    }

    /// Readings sent to the log and not acknowledged yet.
    pub fn in_flight_readings(&self) -> usize {
        self.inner.limits.max_in_flight_readings as usize - self.inner.in_flight.available_permits()
    }

    /// `POST /api/v1/readings` and `GET /healthz`.
    pub fn router(&self) -> Router {
        Router::new()
            .route("/api/v1/readings", post(post_readings))
            .route("/healthz", get(|| async { "ok" }))
            .with_state(self.clone())
    }

    /// Checks a body's readings, stores the valid ones and dead-letters the others.
    #[tracing::instrument(level = "debug", skip_all, fields(source = source.as_str(), key = %grant.id, bytes = body.len()))]
    pub async fn ingest(&self, source: Source, grant: &Grant, body: &[u8], now_ms: i64) -> Result<Outcome, IngestError> {
        let inner = &self.inner;
        if body.len() as u64 > inner.limits.max_body_bytes {
            return Err(IngestError::TooLarge { max: inner.limits.max_body_bytes });
        }
        let receiver = ReceiverClock::new(now_ms, inner.max_clock_ahead_ms);
        let registry = match &inner.registry {
            Some(live) if !live.is_ready() => return Err(IngestError::RegistryLoading),
            Some(live) => Some(live.snapshot()),
            None => None,
        };
        let max_readings = inner.limits.max_readings_per_request as usize;
        let mut parsed = parse_body(body, receiver, max_readings, registry.as_deref())?;
        if let Some(live) = inner.registry.as_ref().filter(|_| parsed.unattributed) {
            // A meter registered just now may not have reached this gateway yet.
            if live.sync(REGISTRY_SYNC_TIMEOUT).await {
                parsed = parse_body(body, receiver, max_readings, Some(&live.snapshot()))?;
            }
        }
        let ParsedBody { readings, mut refused, .. } = parsed;
        if readings.is_empty() && refused.is_empty() {
            return Err(IngestError::Empty);
        }
        let mut forbidden = false;
        let mut accepted = Vec::with_capacity(readings.len());
        for (index, reading) in readings {
            let mut reasons = Vec::new();
            if !inner.utilities.contains(&reading.utility) {
                reasons.push(format!("this pipeline does not carry {} readings", reading.utility));
            }
            if !grant.allows_meter(reading.meter_id) {
                forbidden = true;
                reasons.push(format!("the key `{}` may not send readings for meter {}", grant.name, reading.meter_id));
            }
            if !grant.allows(reading.region) {
                forbidden = true;
                reasons.push(format!("the key `{}` may not send readings for region {}", grant.name, reading.region.code()));
            }
            if reasons.is_empty() {
                accepted.push(reading);
            } else {
                refused.push(RefusedItem { index, reasons, raw: reading.to_json().to_string() });
            }
        }
        refused.sort_by_key(|item| item.index);

        let permits = u32::try_from(accepted.len()).unwrap_or(u32::MAX);
        let permit = match permits {
            0 => None,
            n => Some(Arc::clone(&inner.in_flight).try_acquire_many_owned(n).map_err(|_| IngestError::Busy {
                waiting: self.in_flight_readings(),
                max: inner.limits.max_in_flight_readings as usize,
            })?),
        };
        metrics::gauge!(METRIC_IN_FLIGHT).set(self.in_flight_readings() as f64);

        let mut sends = JoinSet::new();
        for (topic, records) in inner.topics.iter().zip(self.encode(&accepted)) {
            if !records.is_empty() {
                let (producer, topic) = (Arc::clone(&inner.producer), topic.clone());
                sends.spawn(async move { producer.send(&topic, records).await });
            }
        }
        if !refused.is_empty() {
            let letters = dead_letters(source, grant, &refused, now_ms);
            let (producer, topic) = (Arc::clone(&inner.producer), inner.dead_letters.clone());
            sends.spawn(async move { producer.send(&topic, letters).await });
        }
        let ack_timeout = Duration::from_millis(inner.limits.ack_timeout_ms);
        let acknowledged = tokio::time::timeout(ack_timeout, async {
            while let Some(sent) = sends.join_next().await {
                sent.map_err(|err| PortError::Closed(format!("log write task: {err}")))??;
            }
            Ok::<(), PortError>(())
        })
        .await;
        drop(permit);
        metrics::gauge!(METRIC_IN_FLIGHT).set(self.in_flight_readings() as f64);
        match acknowledged {
            Err(_) => return Err(IngestError::AckTimeout { ms: inner.limits.ack_timeout_ms }),
            Ok(Err(err)) => return Err(IngestError::Log(err)),
            Ok(Ok(())) => {}
        }
        metrics::counter!(METRIC_READINGS, "source" => source.as_str(), "outcome" => "accepted").increment(accepted.len() as u64);
        metrics::counter!(METRIC_READINGS, "source" => source.as_str(), "outcome" => "refused").increment(refused.len() as u64);
        Ok(Outcome {
            accepted: accepted.len(),
            refused: refused.into_iter().map(|item| Refused { index: item.index, reasons: item.reasons }).collect(),
            forbidden,
        })
    }

    /// Dead-letters a body refused as a whole (MQTT has no status to answer with).
    pub async fn dead_letter_whole(&self, source: Source, grant: &Grant, reason: &str, body: &[u8]) -> Result<(), IngestError> {
        let raw = String::from_utf8_lossy(&body[..body.len().min(auth_core::edge::MAX_RAW_BYTES)]).into_owned();
        let item = RefusedItem { index: 0, reasons: vec![reason.to_owned()], raw };
        let letters = dead_letters(source, grant, &[item], auth_core::now_ms());
        self.inner.producer.send(&self.inner.dead_letters, letters).await.map_err(IngestError::Log)
    }

    /// One record list per utility of codec v1 values (see [`LogRecords`]).
    fn encode(&self, readings: &[auth_core::Reading]) -> [Vec<OutRecord>; 3] {
        let mut records = LogRecords::new(BytesMut::new(), self.inner.partitions, readings.len());
        for reading in readings {
            records.push(reading.customer_id, reading.utility, |buffer| codec::encode_into(reading, buffer));
        }
        records.finish().0
    }
}

/// Dead letters of refused items ([`DeadLetter`]), keyed by the key's id.
fn dead_letters(source: Source, grant: &Grant, refused: &[RefusedItem], now_ms: i64) -> Vec<OutRecord> {
    let key = Bytes::from(grant.id.clone());
    let source = match source {
        Source::Http => DeadLetterSource::Http,
        Source::Mqtt => DeadLetterSource::Mqtt,
    };
    refused
        .iter()
        .map(|item| {
            let letter = DeadLetter::of_item(source, &grant.id, item.index, item.reasons.clone(), item.raw.clone(), now_ms);
            OutRecord { partition: 0, key: key.clone(), value: Bytes::from(letter.to_json()) }
        })
        .collect()
}

/// 401 for a missing or wrong key; 429 with the wait for a key id whose
/// verification budget is spent.
fn refused(refusal: &Refusal) -> Response {
    match refusal {
        Refusal::Missing | Refusal::Invalid => json_error(StatusCode::UNAUTHORIZED, refusal.to_string()),
        Refusal::Throttled { retry_after_secs, .. } | Refusal::AddressThrottled { retry_after_secs } => {
            let mut response = json_error(StatusCode::TOO_MANY_REQUESTS, refusal.to_string());
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(*retry_after_secs));
            response
        }
    }
}

fn json_error(status: StatusCode, message: String) -> Response {
    let mut response = (status, axum::Json(serde_json::json!({ "error": message }))).into_response();
    match status {
        StatusCode::UNAUTHORIZED => {
            response.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE => {
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        _ => {}
    }
    response
}

async fn post_readings(State(gateway): State<Gateway>, request: axum::extract::Request) -> Response {
    let started = Instant::now();
    let (parts, body) = request.into_parts();
    // The client's address, when the server records it (`auth_runtime::http::serve` does).
    let address = parts.extensions.get::<axum::extract::ConnectInfo<std::net::SocketAddr>>().map(|info| info.0.ip());
    let response = handle(&gateway, &parts.headers, address, body).await;
    let status = response.status();
    metrics::counter!(METRIC_REQUESTS, "source" => "http", "status" => status.as_str().to_owned()).increment(1);
    metrics::histogram!(METRIC_REQUEST_SECONDS, "source" => "http").record(started.elapsed().as_secs_f64());
    response
}

async fn handle(gateway: &Gateway, headers: &HeaderMap, address: Option<std::net::IpAddr>, body: Body) -> Response {
    let authorization = headers.get(header::AUTHORIZATION).and_then(|value| value.to_str().ok());
    let keys = &gateway.inner.keys;
    let grant = match keys.present(authorization, address) {
        Ok(Presented::Remembered(grant)) => grant,
        Ok(Presented::Unverified(unverified)) => {
            // argon2 takes tens of milliseconds: off the async workers.
            let keys = Arc::clone(keys);
            match tokio::task::spawn_blocking(move || keys.verify(unverified)).await {
                Ok(Ok(grant)) => grant,
                Ok(Err(refusal)) => return refused(&refusal),
                Err(err) => return json_error(StatusCode::INTERNAL_SERVER_ERROR, format!("key check failed: {err}")),
            }
        }
        Err(refusal) => return refused(&refusal),
    };
    let max = gateway.inner.limits.max_body_bytes;
    let declared = headers.get(header::CONTENT_LENGTH).and_then(|value| value.to_str().ok()?.parse::<u64>().ok());
    if declared.is_some_and(|length| length > max) {
        return json_error(StatusCode::PAYLOAD_TOO_LARGE, IngestError::TooLarge { max }.to_string());
    }
    let bytes = match axum::body::to_bytes(body, usize::try_from(max).unwrap_or(usize::MAX)).await {
        Ok(bytes) => bytes,
        Err(err) => {
            let too_large = std::error::Error::source(&err)
                .is_some_and(|source| source.is::<http_body_util::LengthLimitError>());
            return if too_large {
                json_error(StatusCode::PAYLOAD_TOO_LARGE, IngestError::TooLarge { max }.to_string())
            } else {
                json_error(StatusCode::BAD_REQUEST, format!("reading the body failed: {err}"))
            };
        }
    };
    match gateway.ingest(Source::Http, &grant, &bytes, auth_core::now_ms()).await {
        Ok(outcome) => {
            let status = if outcome.refused.is_empty() {
                StatusCode::ACCEPTED
            } else if outcome.forbidden {
                StatusCode::FORBIDDEN
            } else {
                StatusCode::BAD_REQUEST
            };
            (status, axum::Json(outcome)).into_response()
        }
        Err(err) => {
            if err.status().is_server_error() {
                tracing::warn!(error = %err, "readings not stored");
            }
            json_error(err.status(), err.to_string())
        }
    }
}
