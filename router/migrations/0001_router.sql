-- The router's state (DESIGN.md, router). Personal data never appears in clear here except
-- in refused bodies kept for investigation; record keys are keyed hashes.

-- Every writer schema the router used, by fingerprint (lowercase hex, wire order); served
-- at GET /schemas/{fingerprint}. Kept as the exact text used, since JSON types reorder keys.
CREATE TABLE schemas (
    fingerprint text PRIMARY KEY,
    record_type text NOT NULL,
    schema_text text NOT NULL,
    first_used  timestamptz NOT NULL DEFAULT now()
);

-- The delivery ledger: one row per confirmed delivery, hash-chained per agency.
CREATE TABLE ledger (
    agency          text   NOT NULL,
    seq             bigint NOT NULL,
    grant_id        text   NOT NULL,
    grant_revision  bigint NOT NULL,
    item            text   NOT NULL,
    message_id      text   NOT NULL,
    ingest_id       text   NOT NULL,
    key_hash        text   NOT NULL,
    version         bigint NOT NULL,
    op              text   NOT NULL,
    fields          text[] NOT NULL,
    department      text   NOT NULL,
    dept_key_id     text   NOT NULL,
    dept_signature  text   NOT NULL,
    delivered_at_us bigint NOT NULL,
    prev_hash       bytea  NOT NULL,
    hash            bytea  NOT NULL,
    PRIMARY KEY (agency, seq),
    UNIQUE (agency, message_id)
);

-- The head of each agency's chain: locked while appending, so concurrent routers append in turn.
CREATE TABLE ledger_heads (
    agency text PRIMARY KEY,
    seq    bigint NOT NULL,
    hash   bytea  NOT NULL
);

-- The latest version delivered of each record to each agency (stale versions are not delivered).
CREATE TABLE record_versions (
    agency   text   NOT NULL,
    item     text   NOT NULL,
    key_hash text   NOT NULL,
    version  bigint NOT NULL,
    PRIMARY KEY (agency, item, key_hash)
);

-- Deliveries the broker did not confirm (the agency's queue full or blocked), retried in order.
CREATE TABLE pending_deliveries (
    id             bigserial PRIMARY KEY,
    agency         text   NOT NULL,
    message_id     text   NOT NULL,
    entry          jsonb  NOT NULL,
    headers        jsonb  NOT NULL,
    body           bytea  NOT NULL,
    kept_at        timestamptz NOT NULL DEFAULT now(),
    attempts       integer NOT NULL DEFAULT 0,
    UNIQUE (agency, message_id)
);
CREATE INDEX pending_deliveries_agency ON pending_deliveries (agency, id);

-- Messages refused (unknown schema, bad signature, wrong department, no grant, …), with why.
CREATE TABLE refusals (
    id          bigserial PRIMARY KEY,
    refused_at  timestamptz NOT NULL DEFAULT now(),
    reason      text NOT NULL,
    detail      text NOT NULL,
    routing_key text NOT NULL,
    message_id  text,
    key_id      text,
    headers     jsonb NOT NULL,
    body        bytea NOT NULL
);
CREATE INDEX refusals_reason ON refusals (reason, refused_at);
