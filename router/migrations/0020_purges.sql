-- Purge at the end of a sharing period (articles 30 and 38; issue 23). What the platform
-- purged, and why: one row per item (or grant) and round. The ledger keeps its hashes; the
-- subject index keeps its keyed hashes, so a citizen's log still lists past deliveries.
CREATE TABLE purges (
    id               bigserial   PRIMARY KEY,
    purged_at        timestamptz NOT NULL DEFAULT now(),
    item             text        NOT NULL,
    grant_id         text,
    reason           text        NOT NULL,
    latest_records   bigint      NOT NULL,
    kept_deliveries  bigint      NOT NULL,
    refused_bodies   bigint      NOT NULL
);
CREATE INDEX purges_purged_at ON purges (purged_at);
