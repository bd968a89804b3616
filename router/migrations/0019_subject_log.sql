-- A citizen's data-use log (issue 23). With each routed record version the router keeps a
-- keyed hash of every person it names (routing::subjects), never the number itself; the log
-- joins them with the ledger rows of that record version. The hash index on the ledger's
-- record key hash finds those rows at a fixed cost per row written.
CREATE TABLE subject_index (
    subject  bytea  NOT NULL,
    item     text   NOT NULL,
    key_hash text   NOT NULL,
    version  bigint NOT NULL,
    PRIMARY KEY (subject, item, key_hash, version)
);
CREATE INDEX subject_index_record ON subject_index (item, key_hash);

CREATE INDEX ledger_key_hash ON ledger USING hash (key_hash);

-- Every query of the log, by the citizen portal or an operator: who asked (the portal's token
-- subject, or `operator:<name>`), for which session or written request, when, about whom (the
-- keyed hash) and how many deliveries it listed.
CREATE TABLE subject_log_queries (
    id          bigserial   PRIMARY KEY,
    asked_at    timestamptz NOT NULL DEFAULT now(),
    asked_by    text        NOT NULL,
    session     text        NOT NULL,
    subject     bytea       NOT NULL,
    deliveries  integer     NOT NULL
);
