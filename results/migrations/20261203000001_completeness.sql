-- How complete each day is against the meter registry: per customer day, the
-- intervals its meters were expected to read and those with a reading (both
-- 0 for days computed before, or for meters the registry does not know);
-- and every meter that missed intervals of a day (last_reading_ms NULL: it
-- sent nothing that day).

ALTER TABLE daily_customer_usage ADD COLUMN expected_intervals BIGINT NOT NULL DEFAULT 0;
ALTER TABLE daily_customer_usage ADD COLUMN received_intervals BIGINT NOT NULL DEFAULT 0;

CREATE TABLE meter_gaps (
    usage_date VARCHAR(10) NOT NULL,
    utility VARCHAR(16) NOT NULL,
    meter_id BIGINT NOT NULL,
    customer_id BIGINT NOT NULL,
    region VARCHAR(8) NOT NULL,
    interval_secs BIGINT NOT NULL,
    expected_intervals BIGINT NOT NULL,
    received_intervals BIGINT NOT NULL,
    last_reading_ms BIGINT,
    PRIMARY KEY (usage_date, utility, meter_id, customer_id)
);
