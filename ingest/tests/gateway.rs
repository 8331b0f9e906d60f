//! The HTTP gateway on the embedded log and on Kafka: what is posted is what
//! the topics hold; refusals, keys, limits and back-pressure answer as documented.

#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use auth_core::ports::{LogProducer, OutRecord};
use auth_ingest::{HttpSink, ReadingSink, Simulated, Simulator};
use auth_testkit::Backend;
use common::{Served, T0, dead_letters, expected_place, spec, stored_readings};
use serde_json::json;

macro_rules! gateway_suite {
    ($name:ident, $backend:expr $(, #[$attribute:meta])*) => {
        mod $name {
            use super::*;

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            $(#[$attribute])*
            async fn posted_readings_are_exactly_the_readings_on_the_topics() {
                super::posted_readings_are_exactly_the_readings_on_the_topics(&$backend("posted")).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            $(#[$attribute])*
            async fn refused_readings_get_400_with_every_reason_and_a_dead_letter() {
                super::refused_readings_get_400_with_every_reason_and_a_dead_letter(&$backend("refused")).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            $(#[$attribute])*
            async fn keys_and_limits_are_enforced() {
                super::keys_and_limits_are_enforced(&$backend("keys")).await;
            }
        }
    };
}

gateway_suite!(embedded, Backend::embedded);
gateway_suite!(kafka, Backend::real, #[ignore = "needs Kafka: scripts/test.sh runs it"]);

fn reading_json(meter: u64, region: &str, value: f64) -> serde_json::Value {
    json!({"meterId": meter, "customerId": meter + 1_000, "utility": "electricity", "region": region,
           "customerKind": "residential", "tsMs": T0 + meter as i64, "value": value})
}

async fn posted_readings_are_exactly_the_readings_on_the_topics(backend: &Backend) {
    let spec = spec();
    let served = Served::start(backend, &spec).await;
    let mut simulator = Simulator::new(&spec.simulator, T0);
    let mut items = Vec::new();
    simulator.fill(&mut items, 6_000);
    let mut sink = HttpSink::new(&served.base, &served.key, 500);
    sink.write(&items).await.unwrap();
    assert_eq!(sink.tally.accepted, 6_000, "{:?}", sink.tally);
    assert_eq!(sink.tally.refused, 0);

    let mut expected: Vec<common::Stored> = items
        .iter()
        .map(|item| match item {
            Simulated::Reading(reading) => expected_place(reading, spec.log.partitions),
            Simulated::Garbage { .. } => unreachable!("the test fleet sends no malformed readings"),
        })
        .collect();
    common::sort(&mut expected);
    let stored = stored_readings(backend.log.as_ref(), &backend.pipeline).await;
    assert_eq!(stored.len(), expected.len(), "every accepted reading once");
    assert!(stored == expected, "topic, partition, key and content of every reading");
    assert!(dead_letters(backend.log.as_ref(), &backend.pipeline).await.is_empty());
}

async fn refused_readings_get_400_with_every_reason_and_a_dead_letter(backend: &Backend) {
    let served = Served::start(backend, &spec()).await;
    let good = reading_json(1, "US-CA", 5.0);
    let bad = json!({"meterId": 2, "customerId": 3, "utility": "electricity", "region": "US-XX",
                     "customerKind": "residential", "tsMs": T0, "value": -1.0});
    let body = format!("{good}\n{bad}\n{{\"meterId\": 3,\n");
    let (status, _, answer) = served.post(Some(&served.key), body).await;
    assert_eq!(status, 400, "{answer}");
    assert_eq!(answer["accepted"], 1, "{answer}");
    let refused = answer["refused"].as_array().unwrap();
    assert_eq!(refused.len(), 2, "{answer}");
    assert_eq!(refused[0]["index"], 1);
    let reasons: Vec<&str> = refused[0]["reasons"].as_array().unwrap().iter().map(|r| r.as_str().unwrap()).collect();
    assert!(reasons.iter().any(|r| r.contains("negative")) && reasons.iter().any(|r| r.contains("US-XX")), "{reasons:?}");
    assert_eq!(refused[1]["index"], 2);
    assert!(refused[1]["reasons"][0].as_str().unwrap().starts_with("not valid JSON"), "{answer}");

    let stored = stored_readings(backend.log.as_ref(), &backend.pipeline).await;
    assert_eq!(stored.len(), 1, "the valid reading of the body is stored");
    assert_eq!(stored[0].3.meter_id, 1);
    let letters = dead_letters(backend.log.as_ref(), &backend.pipeline).await;
    assert_eq!(letters.len(), 2, "{letters:?}");
    assert_eq!(letters[0]["source"], "http");
    assert_eq!(letters[0]["index"], 1);
    assert!(letters[0]["reason"].as_str().unwrap().contains("negative"), "{}", letters[0]);
    assert!(letters[0]["item"].as_str().unwrap().contains("US-XX"), "the item as sent: {}", letters[0]);
    assert!(letters[1]["reason"].as_str().unwrap().contains("not valid JSON"), "{}", letters[1]);
}

async fn keys_and_limits_are_enforced(backend: &Backend) {
    let spec = spec();
    let served = Served::start(backend, &spec).await;
    let one = reading_json(1, "US-CA", 1.0).to_string();

    let (status, _, answer) = served.post(None, one.clone()).await;
    assert_eq!(status, 401, "{answer}");
    assert!(answer["error"].as_str().unwrap().contains("Bearer"), "{answer}");
    let (status, _, _) = served.post(Some("auth_00000000_0000"), one.clone()).await;
    assert_eq!(status, 401);
    let forged = format!("{}x", &served.key[..served.key.len() - 1]);
    assert_eq!(served.post(Some(&forged), one.clone()).await.0, 401, "a key with one character changed");

    let mixed = json!([reading_json(2, "US-CA", 1.0), reading_json(3, "US-TX", 1.0)]).to_string();
    let (status, _, answer) = served.post(Some(&served.west_key), mixed).await;
    assert_eq!(status, 403, "{answer}");
    assert_eq!(answer["accepted"], 1);
    assert!(answer["refused"][0]["reasons"][0].as_str().unwrap().contains("US-TX"), "{answer}");

    let too_many: Vec<serde_json::Value> = (0..1_001).map(|meter| reading_json(meter, "US-CA", 1.0)).collect();
    let (status, _, answer) = served.post(Some(&served.key), serde_json::to_string(&too_many).unwrap()).await;
    assert_eq!(status, 413, "{answer}");
    assert!(answer["error"].as_str().unwrap().contains("1001"), "{answer}");
    let oversize = format!("[{}]", vec![one.as_str(); 2_000].join(","));
    assert!(oversize.len() as u64 > spec.ingest.max_body_bytes);
    assert_eq!(served.post(Some(&served.key), oversize.clone()).await.0, 413, "declared length");
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> = oversize.into_bytes().chunks(4_096).map(|c| Ok(c.to_vec())).collect();
    let streamed = reqwest::Body::wrap_stream(futures_util::stream::iter(chunks));
    assert_eq!(served.post(Some(&served.key), streamed).await.0, 413, "streamed without a length");
    let (status, _, answer) = served.post(Some(&served.key), "  ").await;
    assert_eq!(status, 400, "{answer}");

    let stored = stored_readings(backend.log.as_ref(), &backend.pipeline).await;
    let meters: Vec<u64> = stored.iter().map(|stored| stored.3.meter_id).collect();
    assert_eq!(meters, vec![2], "only the reading of the allowed region was stored");
}

/// A log that takes records and never acknowledges them.
struct Stalled;

#[async_trait]
impl LogProducer for Stalled {
    async fn send(&self, _topic: &str, _records: Vec<OutRecord>) -> auth_core::ports::Result<()> {
        std::future::pending().await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_log_that_does_not_acknowledge_gets_503_and_a_full_queue_429() {
    let backend = Backend::embedded("stalled");
    let mut spec = spec();
    spec.ingest.ack_timeout_ms = 1_500;
    spec.ingest.max_in_flight_readings = 1_000;
    let served = Arc::new(Served::start_with(&backend, &spec, Arc::new(Stalled)).await);
    let batch: Vec<serde_json::Value> = (0..1_000).map(|meter| reading_json(meter, "US-CA", 1.0)).collect();
    let batch = serde_json::to_string(&batch).unwrap();

    let first = tokio::spawn({
        let (served, batch) = (Arc::clone(&served), batch.clone());
        async move { served.post(Some(&served.key), batch).await }
    });
    // While the first request waits for its acknowledgement, its readings fill the queue.
    tokio::time::timeout(Duration::from_secs(5), async {
        while served.gateway.in_flight_readings() < 1_000 {
            tokio::task::yield_now().await;
        }
    })
    .await
    .expect("the first request's readings are in flight");
    let (status, retry_after, answer) = served.post(Some(&served.key), reading_json(5, "US-CA", 1.0).to_string()).await;
    assert_eq!(status, 429, "{answer}");
    assert_eq!(retry_after.as_deref(), Some("1"));
    assert!(answer["error"].as_str().unwrap().contains("wait for the log"), "{answer}");
    let (status, retry_after, answer) = first.await.unwrap();
    assert_eq!(status, 503, "{answer}");
    assert_eq!(retry_after.as_deref(), Some("1"));
    assert!(answer["error"].as_str().unwrap().contains("did not acknowledge"), "{answer}");
    tokio::time::timeout(Duration::from_secs(5), async {
        while served.post(Some(&served.key), reading_json(6, "US-CA", 1.0).to_string()).await.0 == 429 {}
    })
    .await
    .expect("the queue frees once the timed-out request gave its readings up");
}
