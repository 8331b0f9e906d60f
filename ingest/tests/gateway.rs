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
use common::{Served, T0, TEST_METERS, dead_letters, expected_place, reading_json, spec, stored_readings};
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
            async fn the_registry_says_whose_readings_are_and_keys_are_scoped_to_meters() {
                super::the_registry_says_whose_readings_are_and_keys_are_scoped_to_meters(&$backend("registry")).await;
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
    assert_eq!(stored[0].3.meter_id, TEST_METERS + 1);
    let letters = dead_letters(backend.log.as_ref(), &backend.pipeline).await;
    assert_eq!(letters.len(), 2, "{letters:?}");
    assert_eq!(letters[0]["source"], "http");
    assert_eq!(letters[0]["index"], 1);
    assert!(letters[0]["reason"].as_str().unwrap().contains("negative"), "{}", letters[0]);
    assert!(letters[0]["item"].as_str().unwrap().contains("US-XX"), "the item as sent: {}", letters[0]);
    assert!(letters[1]["reason"].as_str().unwrap().contains("not valid JSON"), "{}", letters[1]);
}

async fn the_registry_says_whose_readings_are_and_keys_are_scoped_to_meters(backend: &Backend) {
    let spec = spec();
    let served = Served::start(backend, &spec).await;
    let slim = |n: u64, value: f64| json!({"meterId": TEST_METERS + n, "tsMs": T0 + n as i64, "value": value});

    // What a meter knows is enough: the registry says whose it is.
    let (status, _, answer) = served.post(Some(&served.key), json!([slim(10, 2.5), slim(3, 1.0)]).to_string()).await;
    assert_eq!(status, 202, "{answer}");
    let stored = stored_readings(backend.log.as_ref(), &backend.pipeline).await;
    let attributed: Vec<(u64, u64, &str, f64)> =
        stored.iter().map(|(_, _, _, reading)| (reading.meter_id, reading.customer_id, reading.region.code(), reading.value)).collect();
    assert_eq!(attributed, [(TEST_METERS + 3, 1_003, "US-TX", 1.0), (TEST_METERS + 10, 1_010, "US-CA", 2.5)]);

    // A reading cannot say it is someone else's, nor be of a meter the registry does not know.
    let mut forged = reading_json(11, "US-CA", 1.0);
    forged["customerId"] = json!(42);
    let unknown = json!({"meterId": 777, "tsMs": T0, "value": 1.0});
    let (status, _, answer) = served.post(Some(&served.key), json!([forged, unknown]).to_string()).await;
    assert_eq!(status, 400, "{answer}");
    assert_eq!(
        answer["refused"][0]["reasons"][0],
        format!("field `customerId`: the reading says 42, the registry has 1011 for meter {}", TEST_METERS + 11)
    );
    assert_eq!(answer["refused"][1]["reasons"][0], "meter 777 is not in the registry (auth registry import adds it)");
    let letters = dead_letters(backend.log.as_ref(), &backend.pipeline).await;
    assert!(letters.iter().any(|letter| letter["reason"].as_str().unwrap().contains("meter 777 is not in the registry")), "{letters:?}");

    // A key of meters 1-100 of the test range may not send for meter 101.
    let path = tempfile::tempdir().unwrap();
    let key_file = path.path().join("concentrator.json");
    let scope = auth_ingest::keys::KeyScope::meters(&[&format!("{}-{}", TEST_METERS + 1, TEST_METERS + 100)]);
    let (concentrator, _) = auth_ingest::keys::create_key(&key_file, "concentrator 7", &scope, 0).unwrap();
    let ring = auth_ingest::keys::KeyRing::load(&[key_file]).unwrap();
    let scoped = Served::start_keyed(backend, &spec, ring).await;
    let (status, _, answer) = scoped.post(Some(&concentrator), json!([slim(100, 1.0), slim(101, 1.0)]).to_string()).await;
    assert_eq!(status, 403, "{answer}");
    assert_eq!(answer["accepted"], 1, "{answer}");
    assert_eq!(answer["refused"][0]["reasons"][0], format!("the key `concentrator 7` may not send readings for meter {}", TEST_METERS + 101));

    // A meter registered while the gateway runs is taken by the next request:
    // a body with an unknown meter waits for the registry to catch up with its topic.
    let later = json!({"meterId": 5_000_000, "tsMs": T0, "value": 1.0}).to_string();
    let (status, _, answer) = served.post(Some(&served.key), later.clone()).await;
    assert_eq!(status, 400, "{answer}");
    let mut installation = common::registry(&spec).pop().unwrap().installations.remove(0);
    installation.meter_id = 5_000_000;
    installation.customer_id = 77;
    let record = auth_core::registry::RegistryRecord { meter_id: 5_000_000, installations: vec![installation] };
    let writer = backend.log.producer().unwrap();
    let topic = auth_core::registry_topic(&backend.pipeline);
    auth_ingest::registry_feed::publish(writer.as_ref(), &topic, &[record]).await.unwrap();
    let (status, _, answer) = served.post(Some(&served.key), later).await;
    assert_eq!(status, 202, "{answer}");

    // A cumulative meter sends its register: it goes to the log as a register, in the utility's unit.
    let mut cumulative = common::registry(&spec).pop().unwrap().installations.remove(0);
    cumulative.meter_id = 5_000_001;
    cumulative.utility = auth_core::Utility::Electricity;
    cumulative.unit = auth_core::registry::MeterUnit::KWh;
    cumulative.multiplier = 1.0;
    cumulative.register = auth_core::registry::RegisterKind::Cumulative;
    cumulative.register_rollover = Some(100_000.0);
    let record = auth_core::registry::RegistryRecord { meter_id: 5_000_001, installations: vec![cumulative] };
    auth_ingest::registry_feed::publish(writer.as_ref(), &topic, &[record]).await.unwrap();
    let registers = json!([
        {"meterId": 5_000_001, "tsMs": T0, "value": 99_999.5},
        {"meterId": 5_000_001, "tsMs": T0 + 1, "value": 2e9},
    ]);
    let (status, _, answer) = served.post(Some(&served.key), registers.to_string()).await;
    assert_eq!(status, 400, "{answer}");
    assert_eq!(answer["refused"][0]["reasons"][0], "register 2e12 is above the 1e12 Wh a meter's register may hold");
    let stored = stored_readings(backend.log.as_ref(), &backend.pipeline).await;
    let register = stored.iter().map(|(_, _, _, reading)| reading).find(|reading| reading.meter_id == 5_000_001).expect("the register is on the log");
    assert_eq!((register.cumulative, register.value), (true, 99_999_500.0));
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
    assert_eq!(meters, vec![TEST_METERS + 2], "only the reading of the allowed region was stored");
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
    let batch: Vec<serde_json::Value> = (10..1_010).map(|meter| reading_json(meter, "US-CA", 1.0)).collect();
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
