-- Each date's last successful batch run: when it finished and how long it
-- took, all of it (compute, write, restate). The batch runs as a short-lived
-- job (a CronJob on Kubernetes), so the API exports the newest run as the
-- metrics auth_batch_last_success_timestamp_seconds and auth_batch_duration_seconds.

CREATE TABLE batch_runs (
    usage_date VARCHAR(10) NOT NULL PRIMARY KEY,
    finished_at_ms BIGINT NOT NULL,
    duration_ms BIGINT NOT NULL
);
