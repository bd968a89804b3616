-- What each agency holds of a record, one row per record instead of one per (agency,
-- record): a record routed to four agencies costs one index entry here, not four, and the
-- router's look-up before publishing one probe, not four (issue 4, router throughput).
--
-- `held` maps agency → the newest version of the record delivered to it: {"health": 7, …}.
-- Every ledger row raises it in the same transaction, so a delivery whose version is above
-- what its agency holds cannot be in the ledger; the router relies on that instead of
-- looking each delivery up in the ledger as well. The ingest id kept beside the version
-- (0010) only served a rule that this one covers: the same version is never delivered twice.
ALTER TABLE record_versions RENAME TO record_versions_0010;
ALTER TABLE record_versions_0010 RENAME CONSTRAINT record_versions_pkey TO record_versions_0010_pkey;
CREATE TABLE record_versions (
    item     text  NOT NULL,
    key_hash text  NOT NULL,
    held     jsonb NOT NULL,
    PRIMARY KEY (item, key_hash)
);
INSERT INTO record_versions (item, key_hash, held)
SELECT item, key_hash, jsonb_object_agg(agency, version)
FROM record_versions_0010
GROUP BY item, key_hash;
DROP TABLE record_versions_0010;

-- `old` with each agency of `new` whose version is not below the one in `old`.
CREATE FUNCTION govbus_held_merge(old jsonb, new jsonb) RETURNS jsonb
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT old || coalesce(jsonb_object_agg(n.key, n.value), '{}'::jsonb)
    FROM jsonb_each(new) AS n
    WHERE NOT (old ? n.key) OR (n.value)::bigint >= (old -> n.key)::bigint
$$;

-- Deliveries by time (status page, reports) from a BRIN index instead of a B-tree on
-- (agency, delivered_at_us): the ledger is appended in time order, so block ranges summarise
-- it well, and an append no longer pays a third B-tree insertion per row.
DROP INDEX ledger_agency_time;
CREATE INDEX ledger_delivered_at ON ledger USING brin (delivered_at_us);
