//! `auth stream` processes on Kafka and Redis: killed with SIGKILL at random
//! points, and scaled out and in while they work; what they leave in Redis
//! must equal one uninterrupted run.

mod common;

use std::time::Duration;

use common::{T0, TestPipeline, assert_same, stop};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Kafka and Redis: scripts/test.sh runs it"]
async fn killed_processors_resume_from_their_checkpoints_exactly() {
    let pipeline = TestPipeline::new("kill");
    pipeline.produce(1_500_000, T0);
    let (expected, expected_counts) = pipeline.reference().await;

    let mut rng = fastrand::Rng::with_seed(u64::from(std::process::id()));
    let store = pipeline.store().await;
    let mut kill_points = Vec::new();
    for run in 0..3 {
        let name = format!("stream-{run}");
        let child = pipeline.start_stream(&name);
        // Kill at a random point after this process made progress of its own.
        let (before, total) = pipeline.progress(&store).await;
        pipeline.wait_for_progress_beyond(&store, before, Duration::from_secs(60)).await;
        tokio::time::sleep(Duration::from_millis(rng.u64(0..600))).await;
        child.kill();
        let (done, _) = pipeline.progress(&store).await;
        kill_points.push(format!("{done}/{total}"));
        assert!(done < total, "run {run} finished before it was killed: use more readings");
    }
    pipeline.stream_to_the_end("final");

    let actual = auth_testkit::dump(&store, &pipeline.widths()).await;
    let counts = pipeline.wait_for_checkpoints_at_end(&store, Duration::from_secs(10)).await;
    assert_same(&actual, &expected, pipeline, &format!("killed at {kill_points:?}"));
    assert_eq!(counts, expected_counts, "nothing counted twice, nothing lost (killed after {kill_points:?})");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Kafka and Redis: scripts/test.sh runs it"]
async fn processors_joining_and_leaving_the_group_change_nothing() {
    let pipeline = TestPipeline::new("scale");
    pipeline.produce(1_500_000, T0);
    let (expected, expected_counts) = pipeline.reference().await;

    let first = pipeline.start_stream("first");
    let second = pipeline.start_stream("second");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let third = pipeline.start_stream("third");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let store = pipeline.store().await;
    let (done, total) = pipeline.progress(&store).await;
    assert!(done < total, "the group was still working when its members changed");
    stop(first, &pipeline, "first");

    let counts = pipeline.wait_for_checkpoints_at_end(&store, Duration::from_secs(180)).await;
    stop(second, &pipeline, "second");
    stop(third, &pipeline, "third");
    assert!(pipeline.read_log("third").contains("partition restored"), "the third processor took partitions over");
    let actual = auth_testkit::dump(&store, &pipeline.widths()).await;
    assert_same(&actual, &expected, pipeline, "after two joins and a leave");
    assert_eq!(counts, expected_counts);
}
