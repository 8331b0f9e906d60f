//! Kafka stopped under a stream of requests: the gateway answers 503 and
//! never 202 for readings Kafka did not acknowledge. This binary runs alone
//! (cargo runs test binaries one after another), as stopping the shared
//! broker would disturb other tests.

#![allow(clippy::unwrap_used)]

mod common;

use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use auth_ingest::{Simulated, Simulator, edge_json};
use auth_testkit::Backend;
use common::{Served, T0, expected_place, spec, stored_readings};

fn services(action: &str) {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../scripts/services.sh");
    let status = Command::new("bash").args([script, action, "kafka"]).status().expect("services.sh runs");
    assert!(status.success(), "scripts/services.sh {action} kafka failed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Kafka: scripts/test.sh runs it"]
async fn a_broker_stopped_mid_request_never_gets_a_202() {
    // The Kafka clients' warnings (a producer bootstrapping again) show when the test fails.
    tracing_subscriber::fmt().with_test_writer().with_env_filter("auth_kafka=info").init();
    let backend = Backend::real("broker-stop");
    let mut spec = spec();
    spec.ingest.ack_timeout_ms = 2_000;
    let served = Arc::new(Served::start(&backend, &spec).await);
    let mut simulator = Simulator::new(&spec.simulator, T0);
    let mut items = Vec::new();
    simulator.fill(&mut items, 8_000);
    let batches: Vec<String> = items
        .chunks(200)
        .map(|chunk| serde_json::to_string(&chunk.iter().map(edge_json).collect::<Vec<_>>()).unwrap())
        .collect();

    // A client that sends each batch until it is accepted, as the gateway's answers ask.
    let accepted_batches = Arc::new(AtomicU32::new(0));
    let unavailable_answers = Arc::new(AtomicU32::new(0));
    let client = tokio::spawn({
        let (served, accepted, unavailable) = (Arc::clone(&served), Arc::clone(&accepted_batches), Arc::clone(&unavailable_answers));
        async move {
            for batch in batches {
                loop {
                    let (status, retry_after, answer) = served.post(Some(&served.key), batch.clone()).await;
                    match status {
                        202 => break,
                        503 => {
                            assert_eq!(retry_after.as_deref(), Some("1"), "{answer}");
                            unavailable.fetch_add(1, Ordering::SeqCst);
                            tokio::time::sleep(Duration::from_millis(200)).await;
                        }
                        other => panic!("unexpected answer {other}: {answer}"),
                    }
                }
                accepted.fetch_add(1, Ordering::SeqCst);
            }
        }
    });
    while accepted_batches.load(Ordering::SeqCst) < 3 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::task::spawn_blocking(|| services("stop")).await.unwrap();
    let accepted_while_down = accepted_batches.load(Ordering::SeqCst);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while unavailable_answers.load(Ordering::SeqCst) < 2 {
        assert!(tokio::time::Instant::now() < deadline, "no 503 within 30 s of stopping Kafka");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        accepted_batches.load(Ordering::SeqCst) <= accepted_while_down + 1,
        "at most the request Kafka acknowledged just before it stopped was accepted"
    );
    tokio::task::spawn_blocking(|| services("start")).await.unwrap();
    tokio::time::timeout(Duration::from_secs(120), client).await.expect("every batch accepted after the restart").unwrap();

    let expected: Vec<common::Stored> = items
        .iter()
        .map(|item| match item {
            Simulated::Reading(reading) => expected_place(reading, spec.log.partitions),
            Simulated::Garbage { .. } => unreachable!("the test fleet sends no malformed readings"),
        })
        .collect();
    let mut stored = stored_readings(backend.log.as_ref(), &backend.pipeline).await;
    stored.dedup_by(|a, b| a.3.meter_id == b.3.meter_id && a.3.ts_ms == b.3.ts_ms);
    let mut expected = expected;
    common::sort(&mut expected);
    assert!(stored == expected, "every reading of every 202 is on the topics (sent again after a 503: stored once or twice)");
}
