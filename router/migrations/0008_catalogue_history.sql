-- Every catalogue the router put in force, by content: the grant revisions in the ledger refer
-- to these, and a backup carries them.
CREATE TABLE catalogue_versions (
    sha256       text        PRIMARY KEY,
    body         text        NOT NULL,
    first_loaded timestamptz NOT NULL DEFAULT now(),
    last_loaded  timestamptz NOT NULL DEFAULT now()
);
