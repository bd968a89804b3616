-- Ledger checkpoints delivered to agencies (the platform-signed head of each agency's chain).
CREATE TABLE ledger_checkpoints (
    agency    text        NOT NULL,
    seq       bigint      NOT NULL,
    hash      text        NOT NULL,   -- hex, as in the checkpoint
    made_at   timestamptz NOT NULL,
    key_id    text        NOT NULL,
    signature text        NOT NULL,
    PRIMARY KEY (agency, seq)
);
