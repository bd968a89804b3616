-- Workflow API tokens revoked before their end date (`govbus workflow token revoke`), by id.
CREATE TABLE revoked_tokens (
    id          text        PRIMARY KEY,
    revoked_at  timestamptz NOT NULL DEFAULT now(),
    note        text        NOT NULL DEFAULT ''
);
