//! Servers restarted under a running `auth stream`: the processor waits,
//! restores from its checkpoints and its results stay exact. This binary runs
//! alone (cargo runs test binaries one after another), as restarting the
//! shared servers would disturb other tests.

mod common;

use std::process::Command;
use std::time::Duration;

use common::{T0, TestPipeline, assert_same, stop};

const MINUTE: i64 = 60_000;
/// Broker restarts under the running processor.
const KAFKA_RESTARTS: i64 = 20;
/// How long the first and the last step may take (300K readings each).
const STEP: Duration = Duration::from_secs(150);
/// How long the processor may take after each broker restart to hold its
/// partitions again and bring every checkpoint to the log's end (11-17 s seen:
/// the group's session timeout is 10 s).
const RECOVERY: Duration = Duration::from_secs(60);

fn restart(server: &str) {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../scripts/services.sh");
    let status = Command::new("bash").args([script, "restart", server]).status().expect("services.sh runs");
    assert!(status.success(), "scripts/services.sh restart {server} failed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Kafka and Redis: scripts/test.sh runs it"]
async fn broker_restarts_and_a_redis_restart_lose_nothing() {
    let pipeline = TestPipeline::new("restart");
    let store = pipeline.store().await;
    pipeline.produce(300_000, T0);
    let processor = pipeline.start_stream("stream");
    pipeline.wait_for_progress_beyond(&store, 0, STEP).await;

    // Each time, the processor must hold every partition again and bring
    // every checkpoint to the log's end (a partition left unrestored, or a
    // consumer stuck without partitions, would stop that).
    for restarts in 1..=KAFKA_RESTARTS {
        restart("kafka");
        pipeline.produce(20_000, T0 + (30 + restarts) * MINUTE);
        let started = std::time::Instant::now();
        pipeline.wait_for_checkpoints_at_end(&store, RECOVERY).await;
        eprintln!("broker restart {restarts}: every checkpoint at the log's end after {:.1} s", started.elapsed().as_secs_f64());
    }

    let before = pipeline.checkpoints(&store).await;
    restart("redis");
    let after = pipeline.checkpoints(&store).await;
    assert_eq!(after, before, "Redis came back with every checkpoint (AOF)");

    pipeline.produce(300_000, T0 + 60 * MINUTE);
    let counts = pipeline.wait_for_checkpoints_at_end(&store, STEP).await;
    stop(processor, &pipeline, "stream");

    let (expected, expected_counts) = pipeline.reference().await;
    assert_eq!(counts, expected_counts, "nothing counted twice, nothing lost");
    let actual = auth_testkit::dump(&store, &pipeline.widths()).await;
    assert_same(&actual, &expected, pipeline, "after a broker and a Redis restart");
}
