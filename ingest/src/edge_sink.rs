//! The simulator as meters: readings through the gateway over HTTP or MQTT.

use std::sync::Arc;
use std::time::Duration;

use rumqttc::{AsyncClient, Event, Packet, QoS};
use serde_json::Value;
use tokio::sync::watch;

use crate::mqtt::{self, MqttError, meter_topic};
use crate::simulator::{ReadingSink, Simulated};

/// A simulated item in the edge format; a malformed one is an object the gateway refuses.
pub fn edge_json(item: &Simulated) -> Value {
    match item {
        Simulated::Reading(reading) => reading.to_json(),
        Simulated::Garbage { utility, customer_id, bytes } => serde_json::json!({
            "malformed": hex::encode(bytes), "utility": utility, "customerId": customer_id,
        }),
    }
}

#[derive(Debug, thiserror::Error)]
pub enum EdgeSinkError {
    #[error("posting readings to {url} failed: {source}")]
    Http { url: String, source: reqwest::Error },
    #[error("the gateway at {url} answered {status}: {body}")]
    Refused { url: String, status: u16, body: String },
    #[error(transparent)]
    Mqtt(#[from] MqttError),
    #[error("publishing to the MQTT broker failed: {0}")]
    Publish(String),
}

/// What the gateway answered over a run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GatewayTally {
    pub accepted: u64,
    pub refused: u64,
}

/// Posts JSON arrays of up to `batch` readings to `POST <base>/api/v1/readings`
/// with a gateway key; waits and sends again on 429 and 503.
pub struct HttpSink {
    client: reqwest::Client,
    url: String,
    authorization: String,
    batch: usize,
    pub tally: GatewayTally,
}

impl HttpSink {
    pub fn new(base_url: &str, key: &str, batch: usize) -> Self {
        Self {
            client: reqwest::Client::new(),
            url: format!("{}/api/v1/readings", base_url.trim_end_matches('/')),
            authorization: format!("Bearer {key}"),
            batch: batch.max(1),
            tally: GatewayTally::default(),
        }
    }

    async fn post(&mut self, body: Vec<u8>) -> Result<(), EdgeSinkError> {
        loop {
            let response = self
                .client
                .post(&self.url)
                .header(reqwest::header::AUTHORIZATION, &self.authorization)
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(body.clone())
                .send()
                .await
                .map_err(|source| EdgeSinkError::Http { url: self.url.clone(), source })?;
            let status = response.status().as_u16();
            if status == 429 || status == 503 {
                let seconds = response
                    .headers()
                    .get(reqwest::header::RETRY_AFTER)
                    .and_then(|value| value.to_str().ok()?.parse::<u64>().ok())
                    .unwrap_or(1);
                tracing::debug!(status, seconds, "the gateway asks to send again later");
                tokio::time::sleep(Duration::from_secs(seconds)).await;
                continue;
            }
            let text = response.text().await.map_err(|source| EdgeSinkError::Http { url: self.url.clone(), source })?;
            // 400 lists refused readings: the simulator sends malformed ones on purpose.
            if status != 202 && status != 400 {
                return Err(EdgeSinkError::Refused { url: self.url.clone(), status, body: text });
            }
            let answer: Value = serde_json::from_str(&text).unwrap_or_default();
            let refused = answer["refused"].as_array().map_or(0, Vec::len) as u64;
            self.tally.accepted += answer["accepted"].as_u64().unwrap_or(0);
            self.tally.refused += refused;
            return Ok(());
        }
    }
}

impl ReadingSink for HttpSink {
    type Error = EdgeSinkError;

    async fn write(&mut self, batch: &[Simulated]) -> Result<(), EdgeSinkError> {
        for chunk in batch.chunks(self.batch) {
            let items: Vec<Value> = chunk.iter().map(edge_json).collect();
            let body = serde_json::to_vec(&items).unwrap_or_default();
            self.post(body).await?;
        }
        Ok(())
    }
}

/// Publishes each reading as its meter would: one QoS 1 message to
/// `meters/<meter id>/readings`; a write returns once the broker acknowledged all.
pub struct MqttSink {
    publisher: Publisher,
    published: u64,
}

impl MqttSink {
    /// Connects as `client_id`, logging in with `key` (a gateway key) when
    /// given; a TLS broker (`mqtts://`) needs the CA certificate `ca_pem`.
    pub fn connect(url: &str, client_id: &str, key: Option<&str>, ca_pem: Option<&[u8]>) -> Result<Self, EdgeSinkError> {
        Ok(Self { publisher: Publisher::connect(url, client_id, key, ca_pem)?, published: 0 })
    }
}

impl ReadingSink for MqttSink {
    type Error = EdgeSinkError;

    async fn write(&mut self, batch: &[Simulated]) -> Result<(), EdgeSinkError> {
        for item in batch {
            let meter_id = match item {
                Simulated::Reading(reading) => reading.meter_id,
                Simulated::Garbage { customer_id, .. } => *customer_id,
            };
            let payload = edge_json(item).to_string();
            self.publisher
                .client
                .publish(meter_topic(meter_id), QoS::AtLeastOnce, false, payload)
                .await
                .map_err(|err| EdgeSinkError::Publish(err.to_string()))?;
            self.published += 1;
        }
        let published = self.published;
        self.publisher
            .acknowledged
            .wait_for(|&acknowledged| acknowledged >= published)
            .await
            .map_err(|err| EdgeSinkError::Publish(err.to_string()))?;
        Ok(())
    }
}

/// An MQTT client whose event loop runs in a task and counts broker acknowledgements.
struct Publisher {
    client: AsyncClient,
    acknowledged: watch::Receiver<u64>,
    task: tokio::task::JoinHandle<()>,
}

impl Publisher {
    fn connect(url: &str, client_id: &str, key: Option<&str>, ca_pem: Option<&[u8]>) -> Result<Self, MqttError> {
        let mut options = mqtt::options(url, client_id, 1 << 20, ca_pem)?;
        if let Some(key) = key {
            mqtt::log_in_with(&mut options, key)?;
        }
        let (client, mut events) = AsyncClient::new(options, 10_000);
        let (acknowledged_tx, acknowledged) = watch::channel(0u64);
        let acknowledged_tx = Arc::new(acknowledged_tx);
        let task = tokio::spawn(async move {
            loop {
                match events.poll().await {
                    Ok(Event::Incoming(Packet::PubAck(_))) => acknowledged_tx.send_modify(|count| *count += 1),
                    Ok(_) => {}
                    Err(err) => {
                        tracing::warn!(error = %err, "MQTT publisher connection lost; reconnecting");
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                }
            }
        });
        Ok(Self { client, acknowledged, task })
    }
}

impl Drop for Publisher {
    fn drop(&mut self) {
        self.task.abort();
    }
}
