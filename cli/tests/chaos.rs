//! A chaos run: simulated traffic through two `auth stream` processors and an
//! `auth archive`, while a seeded schedule kills any of them with SIGKILL,
//! pauses a processor with SIGSTOP (sometimes past the group's session
//! timeout), and restarts the Kafka broker or Redis. The results must equal a
//! fault-free run: Redis holds the reference's windows and counts, and the
//! master data holds every valid reading once.
//!
//! The schedule is printed first; `AUTH_CHAOS_SEED=<seed>` replays it. This
//! binary runs alone (cargo runs test binaries one after another), as
//! restarting the shared servers would disturb other tests.

mod common;

use std::process::Command;
use std::time::Duration;

use common::{Running, T0, TestPipeline, assert_same, stop};

const MINUTE: i64 = 60_000;
const STEPS: usize = 10;
/// Processors in the group; faults pick one of them.
const PROCESSORS: usize = 2;
/// How long the run may take to settle after the last fault.
const SETTLE: Duration = Duration::from_secs(180);

#[derive(Debug, Clone, Copy)]
enum Fault {
    KillProcessor(usize),
    /// SIGSTOP for this many seconds, then SIGCONT (the session timeout is 10 s).
    PauseProcessor(usize, u64),
    KillArchiver,
    RestartKafka,
    RestartRedis,
}

#[derive(Debug)]
struct Step {
    readings: u64,
    /// How long the processes work on the new readings before the fault.
    work_ms: u64,
    fault: Fault,
}

fn schedule(seed: u64) -> Vec<Step> {
    let mut rng = fastrand::Rng::with_seed(seed);
    (0..STEPS)
        .map(|_| {
            let fault = match rng.u32(0..100) {
                0..30 => Fault::KillProcessor(rng.usize(0..PROCESSORS)),
                30..55 => Fault::PauseProcessor(rng.usize(0..PROCESSORS), rng.u64(2..16)),
                55..70 => Fault::KillArchiver,
                70..85 => Fault::RestartKafka,
                _ => Fault::RestartRedis,
            };
            Step { readings: rng.u64(10_000..50_000), work_ms: rng.u64(0..3_000), fault }
        })
        .collect()
}

fn restart(server: &str) {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../scripts/services.sh");
    let status = Command::new("bash").args([script, "restart", server]).status().expect("services.sh runs");
    assert!(status.success(), "scripts/services.sh restart {server} failed");
}

/// A role's process and how often it was started, so that every incarnation logs to a file of its own.
struct Role {
    name: String,
    subcommand: &'static str,
    started: usize,
    running: Option<Running>,
}

impl Role {
    fn start(pipeline: &TestPipeline, name: &str, subcommand: &'static str) -> Self {
        let mut role = Self { name: name.to_owned(), subcommand, started: 0, running: None };
        role.restart(pipeline);
        role
    }

    fn log_name(&self) -> String {
        format!("{}-{}", self.name, self.started)
    }

    fn restart(&mut self, pipeline: &TestPipeline) {
        if let Some(running) = self.running.take() {
            running.kill();
        }
        self.started += 1;
        let log_name = self.log_name();
        self.running = Some(match self.subcommand {
            "stream" => pipeline.start_stream(&log_name),
            _ => pipeline.start_archive(&log_name),
        });
    }

    fn signal(&self, signal: &str) {
        if let Some(running) = &self.running {
            running.signal(signal);
        }
    }

    fn stop(mut self, pipeline: &TestPipeline) {
        let log_name = self.log_name();
        if let Some(running) = self.running.take() {
            stop(running, pipeline, &log_name);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Kafka and Redis: scripts/test.sh runs it"]
async fn results_equal_a_fault_free_run_under_a_seeded_fault_schedule() {
    let seed = match std::env::var("AUTH_CHAOS_SEED") {
        Ok(text) => text.parse().expect("AUTH_CHAOS_SEED is a number"),
        Err(_) => fastrand::u64(..),
    };
    let steps = schedule(seed);
    eprintln!("chaos schedule of seed {seed} (replay: AUTH_CHAOS_SEED={seed}):");
    for (index, step) in steps.iter().enumerate() {
        eprintln!("  {index}: {step:?}");
    }

    let pipeline = TestPipeline::new("chaos");
    let store = pipeline.store().await;
    pipeline.produce(100_000, T0);
    let mut processors: Vec<Role> =
        (0..PROCESSORS).map(|index| Role::start(&pipeline, &format!("stream-{index}"), "stream")).collect();
    let mut archiver = Role::start(&pipeline, "archive", "archive");

    for (index, step) in steps.iter().enumerate() {
        pipeline.produce(step.readings, T0 + (10 + index as i64 * 5) * MINUTE);
        tokio::time::sleep(Duration::from_millis(step.work_ms)).await;
        eprintln!("chaos step {index}: {:?}", step.fault);
        match step.fault {
            Fault::KillProcessor(which) => processors[which].restart(&pipeline),
            Fault::PauseProcessor(which, seconds) => {
                processors[which].signal("STOP");
                tokio::time::sleep(Duration::from_secs(seconds)).await;
                processors[which].signal("CONT");
            }
            Fault::KillArchiver => archiver.restart(&pipeline),
            Fault::RestartKafka => restart("kafka"),
            Fault::RestartRedis => restart("redis"),
        }
    }

    let counts = pipeline.wait_for_checkpoints_at_end(&store, SETTLE).await;
    let log_records = pipeline.wait_for_archive_at_end(SETTLE).await;
    for processor in processors {
        processor.stop(&pipeline);
    }
    archiver.stop(&pipeline);

    let (expected, expected_counts) = pipeline.reference().await;
    assert_eq!(counts, expected_counts, "seed {seed}: nothing counted twice, nothing lost");
    let archived = pipeline.archived_offsets();
    let repeated: Vec<_> = archived.iter().filter(|&(_, &copies)| copies > 1).take(5).collect();
    assert!(repeated.is_empty(), "seed {seed}: readings archived twice: {repeated:?}");
    assert_eq!(
        archived.len() as u64,
        log_records - expected_counts.malformed,
        "seed {seed}: the master data holds every valid reading of the log"
    );
    let actual = auth_testkit::dump(&store, &pipeline.widths()).await;
    assert_same(&actual, &expected, pipeline, &format!("chaos run of seed {seed}"));
}
