-- The meter registry: which meter is whose, where, and how to read it, for
-- each period of validity ([valid_from_ms, valid_to_ms), NULL: still
-- installed). A meter's periods never overlap (checked on import).

CREATE TABLE meter_installations (
    meter_id BIGINT NOT NULL,
    valid_from_ms BIGINT NOT NULL,
    valid_to_ms BIGINT,
    customer_id BIGINT NOT NULL,
    premise_id VARCHAR(64) NOT NULL,
    region VARCHAR(8) NOT NULL,
    utility VARCHAR(16) NOT NULL,
    customer_kind VARCHAR(16) NOT NULL,
    unit VARCHAR(8) NOT NULL,
    multiplier DOUBLE PRECISION NOT NULL,
    register_kind VARCHAR(16) NOT NULL,
    interval_secs BIGINT NOT NULL,
    PRIMARY KEY (meter_id, valid_from_ms)
);

CREATE INDEX meter_installations_by_customer ON meter_installations (customer_id);

-- Every meter the registry ever held, with the revision (import) that last
-- changed it: the registry's publisher sends the meters of newer revisions
-- to the `<pipeline>.registry` topic. A removed meter keeps its row and has
-- no installations.
CREATE TABLE registry_meters (
    meter_id BIGINT NOT NULL PRIMARY KEY,
    revision BIGINT NOT NULL,
    changed_at_ms BIGINT NOT NULL
);

CREATE INDEX registry_meters_by_revision ON registry_meters (revision);
