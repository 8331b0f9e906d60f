//! Pipeline health for operators: what the log holds, how far the stream
//! processors are (the progress published with their checkpoints), what they counted, and the batch's
//! last reconciliation.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use auth_core::ports::{PartitionCounts, ReadingLog, ServingStore, TopicPartition};
use auth_results::Database;
use auth_results::history::ReconciliationRow;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

use crate::session::Caller;
use crate::{ApiError, AppState};

/// Reads the pipeline's progress from the log and the serving store.
pub struct PipelineProbe {
    log: Arc<dyn ReadingLog>,
    topics: Vec<String>,
    /// The previous total of the log's end offsets, and the last rate computed.
    previous: Mutex<Option<(Instant, u64, Option<f64>)>>,
}

impl PipelineProbe {
    /// A probe of the utility `topics` of `log`.
    pub fn new(log: Arc<dyn ReadingLog>, topics: Vec<String>) -> Self {
        Self { log, topics, previous: Mutex::new(None) }
    }

    /// Readings appended per second since the previous call at least a second ago.
    fn rate(&self, total: u64) -> Option<f64> {
        let now = Instant::now();
        let Ok(mut previous) = self.previous.lock() else { return None };
        match *previous {
            Some((at, _, rate)) if now.duration_since(at).as_secs_f64() < 1.0 => rate,
            Some((at, before, _)) => {
                let rate = total.saturating_sub(before) as f64 / now.duration_since(at).as_secs_f64();
                *previous = Some((now, total, Some(rate)));
                Some(rate)
            }
            None => {
                *previous = Some((now, total, None));
                None
            }
        }
    }
}

/// One log partition: its end, the stream's checkpoint, the lag between.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PartitionProgress {
    topic: String,
    partition: u32,
    end_offset: u64,
    /// The next offset the stream reads after its last checkpoint; 0 before the first.
    checkpoint_offset: u64,
    lag: u64,
    /// Newest event time the partition's processor has seen, UTC ms.
    max_event_ms: Option<i64>,
}

/// What the stream processors counted, up to their last checkpoints.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct StreamCounts {
    counted: u64,
    /// Counted, though behind the watermark (within the allowed lateness).
    counted_late: u64,
    /// Past the allowed lateness: left to the daily batch.
    too_late: u64,
    duplicates: u64,
    malformed: u64,
    windows_emitted: u64,
}

/// The pipeline's health.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PipelineOverview {
    /// Readings appended to the log per second (null on the first look).
    ingest_per_second: Option<f64>,
    /// Readings in the log (sum of end offsets).
    log_readings: u64,
    /// Readings in the log the stream has not checkpointed past.
    lag: u64,
    stream: StreamCounts,
    partitions: Vec<PartitionProgress>,
    /// The batch's newest reconciliation rows (batch against stream totals,
    /// with how much of the batch's is estimates):
    /// date, utility, batchTotal, batchReadings, batchEstimated, streamTotal, drift, computedAtMs.
    #[schema(value_type = Vec<Object>)]
    reconciliation: Vec<ReconciliationRow>,
}

pub(crate) async fn overview(probe: &PipelineProbe, store: &dyn ServingStore, db: &Database) -> Result<PipelineOverview, ApiError> {
    let mut partitions = Vec::new();
    let mut counts = PartitionCounts::default();
    for topic in &probe.topics {
        let ends = probe.log.end_offsets(topic).await?;
        for (partition, end_offset) in ends.into_iter().enumerate() {
            let partition = partition as u32;
            let summary = store.load_progress(&TopicPartition::new(topic, partition)).await?;
            let checkpoint_offset = summary.map_or(0, |summary| summary.next_offset);
            if let Some(summary) = summary {
                counts += summary.counts;
            }
            partitions.push(PartitionProgress {
                topic: topic.clone(),
                partition,
                end_offset,
                checkpoint_offset,
                lag: end_offset.saturating_sub(checkpoint_offset),
                max_event_ms: summary.and_then(|summary| summary.max_event_ms),
            });
        }
    }
    let stream = StreamCounts {
        counted: counts.counted,
        counted_late: counts.counted_late,
        too_late: counts.too_late,
        duplicates: counts.duplicates,
        malformed: counts.malformed,
        windows_emitted: counts.windows_emitted,
    };
    let log_readings = partitions.iter().map(|p| p.end_offset).sum();
    let reconciliation = db.recent_reconciliation(6).await.map_err(ApiError::results)?;
    Ok(PipelineOverview {
        ingest_per_second: probe.rate(log_readings),
        log_readings,
        lag: partitions.iter().map(|p| p.lag).sum(),
        stream,
        partitions,
        reconciliation,
    })
}

/// Pipeline health: ingest rate, lag, late readings, the batch's drift (operators only).
#[utoipa::path(get, path = "/api/v1/pipeline", tag = "pipeline",
    responses((status = 200, body = PipelineOverview), (status = 401, description = "not logged in"),
              (status = 403, description = "not an operator")))]
pub(crate) async fn pipeline(State(state): State<AppState>, caller: Caller) -> Result<Response, ApiError> {
    caller.must_be_operator()?;
    let body = state
        .overview
        .try_get_with((), async {
            let overview = overview(&state.probe, state.store.as_ref(), state.sessions.database()).await?;
            serde_json::to_string(&overview).map(Arc::from).map_err(|err| ApiError::internal("the pipeline overview", &err))
        })
        .await
        .map_err(|err: Arc<ApiError>| Arc::unwrap_or_clone(err))?;
    Ok(([(header::CONTENT_TYPE, "application/json")], body.to_string()).into_response())
}
