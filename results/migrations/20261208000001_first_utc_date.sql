-- The part of a customer's local day in the UTC date it starts on (issue 19,
-- UTC as a query option): a UTC day is the end of one local day and the
-- start of the next, so the API derives a customer's UTC days from two rows.
-- NULL on days computed before: such a day has no UTC split until the batch
-- computes it again.

ALTER TABLE daily_customer_usage ADD COLUMN first_utc_date_total DOUBLE PRECISION;
ALTER TABLE daily_customer_usage ADD COLUMN first_utc_date_readings BIGINT;
