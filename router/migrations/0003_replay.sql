-- Replay (issue 5): the latest version of every record the router routed, so an agency newly
-- granted an item, or one that lost data, can be sent the records again; and which ledger
-- rows are replays.
--
-- The body is the department's signed ingest message as received (verified again on replay).
-- It holds personal data, like `refusals.body`: DESIGN.md asks for identity fields to be kept
-- apart from the rest, linked by a keyed id; that split is not done yet (see the README).
CREATE TABLE latest_records (
    item        text   NOT NULL,
    key_hash    text   NOT NULL,   -- keyed hash of the record key, as in the ledger
    version     bigint NOT NULL,
    routing_key text   NOT NULL,
    ingest_id   text   NOT NULL,
    headers     jsonb  NOT NULL,   -- the ingest headers (no personal data by the wire contract)
    body        bytea  NOT NULL,
    received_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (item, key_hash)
);
CREATE INDEX latest_records_received ON latest_records (item, received_at);

-- The replay a row belongs to (NULL: a delivery as the record arrived). Part of the row's hash
-- when set.
ALTER TABLE ledger ADD COLUMN replay text;
