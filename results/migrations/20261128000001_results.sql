-- The batch's results. Portable SQL: the same file runs on SQLite, PostgreSQL
-- and MySQL/MariaDB. Dates are `YYYY-MM-DD` (UTC); values in each utility's
-- unit (electricity Wh, gas and water L); times in UTC ms.

CREATE TABLE daily_customer_usage (
    usage_date VARCHAR(10) NOT NULL,
    utility VARCHAR(16) NOT NULL,
    customer_id BIGINT NOT NULL,
    region VARCHAR(8) NOT NULL,
    total DOUBLE PRECISION NOT NULL,
    min_value DOUBLE PRECISION NOT NULL,
    max_value DOUBLE PRECISION NOT NULL,
    readings BIGINT NOT NULL,
    peak_hour BIGINT NOT NULL,
    peak_hour_total DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (usage_date, utility, customer_id)
);

CREATE TABLE hourly_region_usage (
    usage_date VARCHAR(10) NOT NULL,
    utility VARCHAR(16) NOT NULL,
    region VARCHAR(8) NOT NULL,
    hour BIGINT NOT NULL,
    total DOUBLE PRECISION NOT NULL,
    readings BIGINT NOT NULL,
    customers BIGINT NOT NULL,
    PRIMARY KEY (usage_date, utility, region, hour)
);

CREATE TABLE top_customers (
    usage_date VARCHAR(10) NOT NULL,
    utility VARCHAR(16) NOT NULL,
    region VARCHAR(8) NOT NULL,
    position BIGINT NOT NULL,
    customer_id BIGINT NOT NULL,
    total DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (usage_date, utility, region, position)
);

-- Stream total (the serving store's day windows) against the batch total.
-- stream_total and drift are NULL when the store no longer holds the day.
CREATE TABLE reconciliation (
    usage_date VARCHAR(10) NOT NULL,
    utility VARCHAR(16) NOT NULL,
    batch_total DOUBLE PRECISION NOT NULL,
    batch_readings BIGINT NOT NULL,
    stream_total DOUBLE PRECISION,
    stream_readings BIGINT,
    drift DOUBLE PRECISION,
    computed_at_ms BIGINT NOT NULL,
    PRIMARY KEY (usage_date, utility)
);

-- What restating the serving store changed: customers whose day total the
-- stream had different from the batch, and by how much in all (batch - stream).
CREATE TABLE restatements (
    usage_date VARCHAR(10) NOT NULL,
    utility VARCHAR(16) NOT NULL,
    customers_restated BIGINT NOT NULL,
    customers_changed BIGINT NOT NULL,
    total_change DOUBLE PRECISION NOT NULL,
    largest_change DOUBLE PRECISION NOT NULL,
    restated_at_ms BIGINT NOT NULL,
    PRIMARY KEY (usage_date, utility)
);
