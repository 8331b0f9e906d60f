-- Operators' edits and approvals of intervals (issue 19, VEE): the word in
-- force on each interval, which every batch run of its day applies (the
-- recomputation keeps it), and the audit log of every change, kept for good.

-- Per customer day, the intervals whose value an operator's edit set.
ALTER TABLE daily_customer_usage ADD COLUMN edited_intervals BIGINT NOT NULL DEFAULT 0;

-- edited_value NULL: approved as read (no longer suspect). The interval is
-- named by its reading's event time; customer and region are the registry's
-- installation of the meter at that time.
CREATE TABLE interval_edits (
    utility VARCHAR(16) NOT NULL,
    meter_id BIGINT NOT NULL,
    ts_ms BIGINT NOT NULL,
    customer_id BIGINT NOT NULL,
    region VARCHAR(8) NOT NULL,
    edited_value DOUBLE PRECISION,
    reason VARCHAR(500) NOT NULL,
    edited_by VARCHAR(64) NOT NULL,
    edited_at_ms BIGINT NOT NULL,
    PRIMARY KEY (utility, meter_id, ts_ms)
);

-- Every edit and approval: who, when, the value before (NULL: as read, when
-- the results do not hold the reading) and after (NULL: approved as read).
CREATE TABLE interval_audit (
    utility VARCHAR(16) NOT NULL,
    meter_id BIGINT NOT NULL,
    ts_ms BIGINT NOT NULL,
    changed_at_ms BIGINT NOT NULL,
    action VARCHAR(16) NOT NULL,
    old_value DOUBLE PRECISION,
    new_value DOUBLE PRECISION,
    reason VARCHAR(500) NOT NULL,
    changed_by VARCHAR(64) NOT NULL,
    PRIMARY KEY (utility, meter_id, ts_ms, changed_at_ms)
);

-- What the batch applied on each day: the edited intervals with the reading
-- each replaced (read_value NULL: none, the edit filled a gap).
CREATE TABLE edited_intervals (
    usage_date VARCHAR(10) NOT NULL,
    utility VARCHAR(16) NOT NULL,
    meter_id BIGINT NOT NULL,
    customer_id BIGINT NOT NULL,
    region VARCHAR(8) NOT NULL,
    ts_ms BIGINT NOT NULL,
    read_value DOUBLE PRECISION,
    edited_value DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (usage_date, utility, meter_id, customer_id, ts_ms)
);
