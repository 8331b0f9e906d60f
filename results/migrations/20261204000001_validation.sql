-- The batch's validation rules (batch.validation): per customer day, how many
-- of its readings a rule flagged suspect (0 for days computed before), and
-- every flagged reading with the rule that flagged it (spike or frozen).
-- Flagged readings still count in every total.

ALTER TABLE daily_customer_usage ADD COLUMN suspect_intervals BIGINT NOT NULL DEFAULT 0;

CREATE TABLE suspect_intervals (
    usage_date VARCHAR(10) NOT NULL,
    utility VARCHAR(16) NOT NULL,
    meter_id BIGINT NOT NULL,
    customer_id BIGINT NOT NULL,
    region VARCHAR(8) NOT NULL,
    ts_ms BIGINT NOT NULL,
    reading_value DOUBLE PRECISION NOT NULL,
    rule VARCHAR(16) NOT NULL,
    PRIMARY KEY (usage_date, utility, meter_id, customer_id, ts_ms)
);
