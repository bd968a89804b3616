-- A lean ledger (issue 19). A record delivered to four agencies wrote the department's
-- statement, batch signature and inclusion path four times, and every ledger row paid a
-- B-tree insertion at a random place for its message id.
--
-- * The statement and its signature are kept once per department batch (`dept_batches`,
--   keyed by the SHA-256 of the statement), the leaf index and path once per message of it
--   (`dept_leaves`). A ledger row names its batch (`dept_batch`) and its leaf (`dept_leaf`);
--   its hash still covers the statement, the leaf and the path (store::ledger::row_hash), so
--   deleting or editing a batch or a leaf breaks the chain of every row that names it.
--   `dept_signature` is kept only by rows written before batch signatures (the message's own
--   signature).
-- * A delivery's message id is an HMAC over its agency, grant and ingest id, so it is unique
--   across agencies: one hash index on it, as an exclusion constraint, replaces the unique
--   B-tree on (agency, message_id). It answers the same look-ups (a dispute, a redelivery)
--   and refuses the same duplicates, at a fixed cost per row.
CREATE TABLE dept_batches (
    id        bytea PRIMARY KEY,
    statement text  NOT NULL,
    signature text  NOT NULL
);

CREATE TABLE dept_leaves (
    batch bytea   NOT NULL,
    leaf  integer NOT NULL,
    path  bytea   NOT NULL,
    PRIMARY KEY (batch, leaf)
);

ALTER TABLE ledger ADD COLUMN dept_batch bytea;
ALTER TABLE ledger ALTER COLUMN dept_signature DROP NOT NULL;

INSERT INTO dept_batches (id, statement, signature)
SELECT DISTINCT ON (1) sha256(convert_to(dept_statement, 'UTF8')), dept_statement, dept_signature
FROM ledger WHERE dept_statement IS NOT NULL
ORDER BY 1;

INSERT INTO dept_leaves (batch, leaf, path)
SELECT DISTINCT ON (1, 2) sha256(convert_to(dept_statement, 'UTF8')), dept_leaf, dept_path
FROM ledger WHERE dept_statement IS NOT NULL
ORDER BY 1, 2;

UPDATE ledger
SET dept_batch = sha256(convert_to(dept_statement, 'UTF8')), dept_signature = NULL
WHERE dept_statement IS NOT NULL;

ALTER TABLE ledger DROP COLUMN dept_statement, DROP COLUMN dept_path;

ALTER TABLE ledger DROP CONSTRAINT ledger_agency_message_id_key;
ALTER TABLE ledger ADD CONSTRAINT ledger_message_id_once EXCLUDE USING hash (message_id WITH =);
