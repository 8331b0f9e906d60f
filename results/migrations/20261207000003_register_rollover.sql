-- Where a cumulative meter's register wraps to 0, in its unit before the
-- multiplier (NULL: it does not wrap, and every fall of its register is a
-- reset).

ALTER TABLE meter_installations ADD COLUMN register_rollover DOUBLE PRECISION;
