-- Platform id secret versions (`platform.id_secret_version`, `govbus id-secret rotate`).

-- Which secret the stored record key hashes are under. `check_value` is an HMAC of a fixed
-- string under the secret: it tells a replaced file from the recorded one and reveals nothing.
CREATE TABLE id_secret_versions (
    version     integer     PRIMARY KEY,
    check_value text        NOT NULL,
    since       timestamptz NOT NULL DEFAULT now()
);

-- A record key hash under an earlier version (as the ledger keeps it, hash-chained and never
-- rewritten) → the same record's hash under the version in force.
CREATE TABLE key_hash_aliases (
    item    text NOT NULL,
    hash    text NOT NULL,
    current text NOT NULL,
    PRIMARY KEY (item, hash)
);
CREATE INDEX key_hash_aliases_current ON key_hash_aliases (item, current);

-- A delivery's message id under a later version (what an agency holds after applying its
-- id map) → the id the ledger keeps.
CREATE TABLE delivery_id_aliases (
    agency     text    NOT NULL,
    message_id text    NOT NULL,
    version    integer NOT NULL,
    ledger_id  text    NOT NULL,
    PRIMARY KEY (agency, message_id)
);

-- The ingest id of the version an agency holds: the same version arriving under another
-- ingest id (the department replaced its id secret) is not delivered again.
ALTER TABLE record_versions ADD COLUMN ingest_id text;
