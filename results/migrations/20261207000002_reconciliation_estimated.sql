-- How much of the batch's total of a day and utility is estimates (issue 19,
-- VEE), so that an operator tells the stream's missed readings from the
-- intervals no reading filled (0 for days computed before).

ALTER TABLE reconciliation ADD COLUMN batch_estimated DOUBLE PRECISION NOT NULL DEFAULT 0;
