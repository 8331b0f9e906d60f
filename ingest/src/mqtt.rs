//! The gateway's MQTT side: readings published by meters to
//! `meters/<meter id>/readings` (QoS 1) onto the log.
//!
//! A message is acknowledged (PUBACK) only after the log acknowledged its
//! readings, or its dead letters; until then the broker keeps it, and
//! delivers it again after a gateway restart (persistent session, fixed
//! client id). Messages are handled concurrently and acknowledged in the
//! order they arrived, as MQTT requires. A message the log refuses for a
//! while (broker down) is retried with growing pauses: the broker's queue is
//! the back-pressure.
//!
//! Identity: the broker authenticates publishers (each logs in with its
//! gateway key: username the key's id, password the key) and its ACL lets a
//! key publish only to its meters' topics (`auth keys mosquitto` writes both
//! files). The gateway then takes from `meters/<id>/readings` only readings
//! of meter `<id>`: a key allowed one topic cannot send another meter's
//! readings inside it. The gateway logs in with a subscriber key
//! (`auth keys create --mqtt-subscriber`); its default session id is derived
//! from that key's secret, so nobody without the key can take its session.

use std::future::Future;
use std::time::Duration;

use rumqttc::{AsyncClient, Event, EventLoop, MqttOptions, Packet, Publish, QoS, TlsConfiguration, Transport};
use tokio::sync::{mpsc, watch};

use crate::gateway::{Gateway, IngestError, Source};
use crate::keys::Grant;

/// The topic meters publish to; `+` is the meter id.
pub const READINGS_TOPIC: &str = "meters/+/readings";

/// Messages handled at once; more wait in the broker.
const IN_FLIGHT_MESSAGES: usize = 1_000;

#[derive(Debug, thiserror::Error)]
pub enum MqttError {
    #[error("`{0}` is not an MQTT URL (mqtt://host:port, or mqtts://host:port for TLS)")]
    Url(String),
    #[error("`{0}` is a TLS broker: give the CA certificate that signed its certificate (PEM)")]
    CaMissing(String),
    #[error("the MQTT key is not a gateway key (auth_<id>_<secret>)")]
    Key,
}

/// Logs in with a gateway key: username its id, password the key.
pub fn log_in_with(options: &mut MqttOptions, key: &str) -> Result<(), MqttError> {
    let id = auth_core::gateway_key::key_id(key).ok_or(MqttError::Key)?;
    options.set_credentials(id, key);
    Ok(())
}

/// The session id of a gateway logging in with `key`: stable across
/// restarts, and unguessable without the key.
pub fn session_id(pipeline: &str, key: &str) -> String {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(format!("auth-ingest-session:{pipeline}:{key}").as_bytes());
    format!("auth-ingest-{}", hex::encode(&digest[..12]))
}

/// The meter a topic `meters/<id>/readings` is of.
pub fn topic_meter(topic: &str) -> Option<u64> {
    topic.strip_prefix("meters/")?.strip_suffix("/readings")?.parse().ok()
}

/// Host, port and whether TLS is used, of `mqtt://host[:port]` (port 1883 by
/// default) or `mqtts://host[:port]` (TLS, port 8883 by default).
pub fn broker_address(url: &str) -> Result<(String, u16, bool), MqttError> {
    let (rest, tls, default_port) = match (url.strip_prefix("mqtt://"), url.strip_prefix("mqtts://")) {
        (Some(rest), _) => (rest, false, 1883),
        (None, Some(rest)) => (rest, true, 8883),
        (None, None) => return Err(MqttError::Url(url.into())),
    };
    let rest = rest.trim_end_matches('/');
    let (host, port) = match rest.rsplit_once(':') {
        Some((host, port)) => (host, port.parse().map_err(|_| MqttError::Url(url.into()))?),
        None => (rest, default_port),
    };
    if host.is_empty() {
        return Err(MqttError::Url(url.into()));
    }
    Ok((host.to_owned(), port, tls))
}

/// Client settings for `url`; `client_id` names the persistent session. A
/// TLS broker (`mqtts://`) needs `ca_pem`, the certificate (PEM) of the CA
/// that signed the broker's: the broker's name is checked against it.
pub fn options(url: &str, client_id: &str, max_message_bytes: usize, ca_pem: Option<&[u8]>) -> Result<MqttOptions, MqttError> {
    let (host, port, tls) = broker_address(url)?;
    let mut options = MqttOptions::new(client_id, host, port);
    options
        .set_keep_alive(Duration::from_secs(30))
        .set_max_packet_size(max_message_bytes.saturating_add(1_024), max_message_bytes.saturating_add(1_024))
        .set_inflight(u16::MAX);
    if tls {
        let ca = ca_pem.ok_or_else(|| MqttError::CaMissing(url.into()))?;
        options.set_transport(Transport::Tls(TlsConfiguration::Simple { ca: ca.to_vec(), alpn: None, client_auth: None }));
    }
    Ok(options)
}

/// How the gateway reaches its broker.
#[derive(Debug, Clone)]
pub struct BrokerLogin {
    pub url: String,
    /// The persistent session's id.
    pub client_id: String,
    /// The gateway's subscriber key; `None`: anonymous (a development broker).
    pub key: Option<String>,
    /// For `mqtts://`: the CA certificate (PEM) that signed the broker's.
    pub ca_pem: Option<Vec<u8>>,
}

/// Subscribes to [`READINGS_TOPIC`] at the broker and feeds the gateway until `shutdown`.
pub async fn run(gateway: Gateway, login: BrokerLogin, shutdown: impl Future<Output = ()>) -> Result<(), MqttError> {
    let BrokerLogin { url, client_id, key, ca_pem } = login;
    let (url, client_id) = (url.as_str(), client_id.as_str());
    let max_bytes = usize::try_from(gateway.limits().max_body_bytes).unwrap_or(usize::MAX);
    let mut options = options(url, client_id, max_bytes, ca_pem.as_deref())?;
    options.set_clean_session(false).set_manual_acks(true);
    if let Some(key) = &key {
        log_in_with(&mut options, key)?;
    }
    let (client, mut events) = AsyncClient::new(options, IN_FLIGHT_MESSAGES);
    let (stop_tx, stop_rx) = watch::channel(false);
    let (handled_tx, handled_rx) = mpsc::channel(IN_FLIGHT_MESSAGES);
    let acker = tokio::spawn(acknowledge_in_order(client.clone(), handled_rx));
    tracing::info!(url, client_id, topic = READINGS_TOPIC, "MQTT ingest starting");
    tokio::pin!(shutdown);
    let mut failures = 0u32;
    loop {
        let event = tokio::select! {
            () = &mut shutdown => break,
            event = events.poll() => event,
        };
        match event {
            Ok(Event::Incoming(Packet::ConnAck(connack))) => {
                failures = 0;
                tracing::info!(session_present = connack.session_present, "connected to the MQTT broker");
                if !connack.session_present {
                    subscribe(&client).await;
                }
            }
            Ok(Event::Incoming(Packet::SubAck(_))) => tracing::info!(topic = READINGS_TOPIC, "subscribed"),
            Ok(Event::Incoming(Packet::Publish(publish))) => {
                let task = tokio::spawn(handle(gateway.clone(), publish.clone(), stop_rx.clone()));
                if handled_tx.send((publish, task)).await.is_err() {
                    break;
                }
            }
            Ok(_) => {}
            Err(err) => {
                let pause = retry_pause(&mut failures);
                tracing::warn!(error = %err, ?pause, "MQTT connection lost; reconnecting");
                tokio::time::sleep(pause).await;
            }
        }
    }
    let _ = stop_tx.send(true);
    drop(handled_tx);
    let _ = acker.await;
    // Send the last acknowledgements before leaving.
    let _ = client.disconnect().await;
    let _ = tokio::time::timeout(Duration::from_secs(2), drain(&mut events)).await;
    tracing::info!("MQTT ingest stopped");
    Ok(())
}

/// 100 ms, doubling with each failure, at most 6.4 s.
fn retry_pause(failures: &mut u32) -> Duration {
    let pause = Duration::from_millis(100u64 << (*failures).min(6));
    *failures += 1;
    pause
}

async fn subscribe(client: &AsyncClient) {
    if let Err(err) = client.subscribe(READINGS_TOPIC, QoS::AtLeastOnce).await {
        tracing::warn!(error = %err, "subscribing to {READINGS_TOPIC} failed");
    }
}

async fn drain(events: &mut EventLoop) {
    while events.poll().await.is_ok() {}
}

/// Acknowledges each message once it is handled, in arrival order; a message
/// left unhandled (the gateway stopped) is not acknowledged, so the broker keeps it.
async fn acknowledge_in_order(client: AsyncClient, mut handled: mpsc::Receiver<(Publish, tokio::task::JoinHandle<bool>)>) {
    while let Some((publish, task)) = handled.recv().await {
        if !task.await.unwrap_or(false) {
            break;
        }
        // A lost acknowledgement only means the broker sends the message
        // again after reconnecting (counted once: a redelivery is a duplicate).
        if let Err(err) = client.ack(&publish).await {
            tracing::warn!(error = %err, "acknowledging an MQTT message failed; the broker sends it again");
        }
    }
}

/// Stores a message's readings (retrying while the log is unavailable);
/// true once they, or their dead letters, are durable.
async fn handle(gateway: Gateway, publish: Publish, mut stop: watch::Receiver<bool>) -> bool {
    // The broker let the publisher write this meter's topic, and nothing more.
    let meter = topic_meter(&publish.topic);
    let grant = Grant {
        id: "mqtt".into(),
        name: format!("topic {}", publish.topic),
        regions: None,
        meters: Some(meter.map(|meter| meter..=meter).into_iter().collect()),
    };
    let started = std::time::Instant::now();
    let mut failures = 0u32;
    'store: loop {
        let outcome = gateway.ingest(Source::Mqtt, &grant, &publish.payload, auth_core::now_ms()).await;
        let status = match &outcome {
            Ok(_) => axum::http::StatusCode::ACCEPTED,
            Err(err) => err.status(),
        };
        metrics::counter!(crate::gateway::METRIC_REQUESTS, "source" => "mqtt", "status" => status.as_str().to_owned())
            .increment(1);
        match outcome {
            Ok(_) => break,
            Err(err) if err.is_retryable() => {
                let pause = retry_pause(&mut failures);
                tracing::warn!(error = %err, topic = %publish.topic, ?pause, "MQTT message not stored yet; retrying");
                tokio::select! {
                    () = tokio::time::sleep(pause) => {}
                    _ = stop.wait_for(|stopped| *stopped) => return false,
                }
            }
            Err(err) => loop {
                // The message is acknowledged only once its dead letter is
                // durable; until then it is retried, as a reading is: a
                // failed write never ends MQTT ingest.
                match refuse_whole(&gateway, &grant, &err, &publish).await {
                    Ok(()) => break 'store,
                    Err(log_err) => {
                        let pause = retry_pause(&mut failures);
                        tracing::warn!(error = %log_err, topic = %publish.topic, ?pause, "dead-lettering an MQTT message failed; retrying");
                        tokio::select! {
                            () = tokio::time::sleep(pause) => {}
                            _ = stop.wait_for(|stopped| *stopped) => return false,
                        }
                    }
                }
            },
        }
    }
    metrics::histogram!(crate::gateway::METRIC_REQUEST_SECONDS, "source" => "mqtt").record(started.elapsed().as_secs_f64());
    true
}

async fn refuse_whole(gateway: &Gateway, grant: &Grant, err: &IngestError, publish: &Publish) -> Result<(), IngestError> {
    tracing::debug!(error = %err, topic = %publish.topic, "MQTT message refused as a whole");
    gateway.dead_letter_whole(Source::Mqtt, grant, &format!("{err} (topic {})", publish.topic), &publish.payload).await
}

/// The topic meter `meter_id` publishes its readings to (one of [`READINGS_TOPIC`]).
pub fn meter_topic(meter_id: u64) -> String {
    format!("meters/{meter_id}/readings")
}
