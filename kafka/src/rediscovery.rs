//! A producer that finds its cluster again after every broker restarted.
//!
//! librdkafka (2.10 and later) removes every broker that a metadata response
//! does not list. While the last broker of a cluster shuts down (a one-broker
//! cluster as in CI, or a whole cluster restarting) it answers without
//! itself, and the client is left knowing no broker at all. librdkafka 2.12.1
//! bootstraps again only after a metadata request, which needs a broker, so it
//! never does: the gateway answered 503 to every request after Kafka was back
//! (`ingest/tests/broker_stop.rs`, one run in five). The client's statistics
//! show when it knows no broker; the producer then adds its bootstrap servers
//! again before it sends.

use std::ffi::CString;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use rdkafka::ClientContext;
use rdkafka::client::Client;

/// Every this many ms the producer's statistics tell whether it still knows a broker.
pub(crate) const STATISTICS_INTERVAL_MS: &str = "5000";

/// The producer's context: it notes from the statistics that no broker is known.
pub struct ProducerContext {
    brokers_lost: Arc<AtomicBool>,
}

#[derive(serde::Deserialize)]
struct Statistics {
    #[serde(default)]
    brokers: std::collections::HashMap<String, BrokerStatistics>,
}

#[derive(serde::Deserialize)]
struct BrokerStatistics {
    source: String,
}

impl ClientContext for ProducerContext {
    fn stats_raw(&self, statistics: &[u8]) {
        let Ok(statistics) = serde_json::from_slice::<Statistics>(statistics) else { return };
        let knows_a_broker =
            statistics.brokers.values().any(|broker| broker.source == "learned" || broker.source == "configured");
        if !knows_a_broker {
            self.brokers_lost.store(true, Ordering::Relaxed);
        }
    }
}

/// The bootstrap servers, ready to be handed to librdkafka again.
pub(crate) struct Bootstrap {
    servers: CString,
    brokers_lost: Arc<AtomicBool>,
}

impl Bootstrap {
    /// The bootstrap list and the context that tells it when the producer lost every broker;
    /// `None` when `servers` holds a NUL byte.
    pub(crate) fn of(servers: &str) -> Option<(Self, ProducerContext)> {
        let servers = CString::new(servers).ok()?;
        let brokers_lost = Arc::new(AtomicBool::new(false));
        let context = ProducerContext { brokers_lost: Arc::clone(&brokers_lost) };
        Some((Self { servers, brokers_lost }, context))
    }

    /// Adds the bootstrap servers to `client` when its statistics last showed no broker.
    pub(crate) fn restore_if_lost<C: ClientContext>(&self, client: &Client<C>) {
        if !self.brokers_lost.swap(false, Ordering::Relaxed) {
            return;
        }
        tracing::warn!(bootstrap = ?self.servers, "the Kafka producer knows no broker any more; bootstrapping again");
        // SAFETY: the handle is `client`'s, alive for the whole call; librdkafka
        // copies the NUL-terminated list and adds only the brokers it lacks.
        unsafe {
            rdkafka::bindings::rd_kafka_brokers_add(client.native_ptr(), self.servers.as_ptr());
        }
    }
}
