-- What the status page reads (issue 5): deliveries per agency by time, and per department
-- counts kept in the same transaction as the ledger rows they describe.
CREATE INDEX ledger_agency_time ON ledger (agency, delivered_at_us);

CREATE TABLE department_stats (
    department          text PRIMARY KEY,
    -- Ingest messages the router settled (delivered, kept, refused or dead-lettered); a
    -- message redelivered after a crash counts again.
    received            bigint NOT NULL DEFAULT 0,
    refused             bigint NOT NULL DEFAULT 0,
    last_received_at    timestamptz,
    -- govbus-source-time-ms of the newest record delivered: how far behind its source it was.
    last_source_time_ms bigint,
    last_delay_ms       bigint
);
