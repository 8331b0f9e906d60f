//! Fencing on Kafka and Redis: a processor paused past its session timeout
//! (a zombie) comes back after the group gave its partitions to another
//! processor; the store refuses its writes, no checkpoint moves back, and the
//! results equal one uninterrupted run.

mod common;

use std::time::{Duration, Instant};

use common::{T0, TestPipeline, assert_same, stop};

const MINUTE: i64 = 60_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Kafka and Redis: scripts/test.sh runs it"]
async fn a_paused_processor_is_fenced_off_when_it_resumes() {
    let pipeline = TestPipeline::new("zombie");
    let store = pipeline.store().await;
    pipeline.produce(1_000, T0);
    // The zombie must hold partitions when it is paused: both processors
    // share the group before the readings come (a processor paused before
    // its first assignment has nothing to be fenced from).
    let zombie = pipeline.start_stream("zombie");
    pipeline.wait_for_log("zombie", "partition restored", Duration::from_secs(60));
    let survivor = pipeline.start_stream("survivor");
    pipeline.wait_for_log("survivor", "partition restored", Duration::from_secs(60));
    pipeline.produce(400_000, T0 + MINUTE);
    pipeline.wait_for_progress_beyond(&store, 1_000, Duration::from_secs(60)).await;

    // Paused mid-work; the group's session timeout (10 s) passes and the
    // survivor takes the zombie's partitions from their last checkpoints.
    zombie.signal("STOP");
    pipeline.produce(200_000, T0 + 30 * MINUTE);
    pipeline.wait_for_checkpoints_at_end(&store, Duration::from_secs(120)).await;
    let taken_over = pipeline.checkpoint_offsets(&store).await;

    // The zombie resumes with state older than the survivor's checkpoints
    // and flushes it at once: every one of those writes must be refused.
    zombie.signal("CONT");
    let mut newest = taken_over;
    let watch_until = Instant::now() + Duration::from_secs(30);
    let mut told = false;
    while Instant::now() < watch_until && !told {
        let offsets = pipeline.checkpoint_offsets(&store).await;
        for (partition, (now, before)) in offsets.iter().zip(&newest).enumerate() {
            assert!(now >= before, "checkpoint {partition} moved back from {before} to {now}\n{}", pipeline.log_tails());
        }
        newest = offsets;
        let log = pipeline.read_log("zombie");
        told = log.contains("fenced off") || log.contains("partitions lost");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(told, "the zombie learnt it lost its partitions (fenced or lost)\n{}", pipeline.log_tails());

    // Both go on as one group again.
    pipeline.produce(200_000, T0 + 60 * MINUTE);
    let counts = pipeline.wait_for_checkpoints_at_end(&store, Duration::from_secs(120)).await;
    stop(zombie, &pipeline, "zombie");
    stop(survivor, &pipeline, "survivor");

    let (expected, expected_counts) = pipeline.reference().await;
    assert_eq!(counts, expected_counts, "nothing counted twice, nothing lost");
    let actual = auth_testkit::dump(&store, &pipeline.widths()).await;
    assert_same(&actual, &expected, pipeline, "after a zombie processor resumed");
}
