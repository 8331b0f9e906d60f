-- Estimation of missing intervals (issue 19, VEE): per customer day and per
-- meter with a gap, how many of the intervals it missed the batch estimated
-- (0 for days computed before), and every run of consecutive estimated
-- intervals of a meter with how it was estimated (interpolated or profile)
-- and the sum of its estimates. Estimates count in the day's totals; each
-- run of a day makes them anew, so a reading that arrives later replaces
-- its estimate.

ALTER TABLE daily_customer_usage ADD COLUMN estimated_intervals BIGINT NOT NULL DEFAULT 0;
ALTER TABLE meter_gaps ADD COLUMN estimated_intervals BIGINT NOT NULL DEFAULT 0;

CREATE TABLE estimated_runs (
    usage_date VARCHAR(10) NOT NULL,
    utility VARCHAR(16) NOT NULL,
    meter_id BIGINT NOT NULL,
    customer_id BIGINT NOT NULL,
    region VARCHAR(8) NOT NULL,
    from_ms BIGINT NOT NULL,
    to_ms BIGINT NOT NULL,
    intervals BIGINT NOT NULL,
    estimated_total DOUBLE PRECISION NOT NULL,
    method VARCHAR(16) NOT NULL,
    PRIMARY KEY (usage_date, utility, meter_id, customer_id, from_ms)
);
