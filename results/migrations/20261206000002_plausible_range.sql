-- The least and the most one interval of an installation may plausibly
-- read, in its unit (NULL: no bound); the batch flags a reading outside
-- them suspect (rule `range`).

ALTER TABLE meter_installations ADD COLUMN plausible_min DOUBLE PRECISION;
ALTER TABLE meter_installations ADD COLUMN plausible_max DOUBLE PRECISION;
