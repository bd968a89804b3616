-- Disputes and corrections (issue 6; article 44): an agency disputes a delivered record by its
-- message id; the platform checks within 3 working days; a technical cause is corrected by the
-- platform (the record sent again), a data error goes to the responsible department, which has
-- 3 working days to publish a corrected version through its adapter. The verification report
-- (who received the record, who got the correction, who was left out and why) is archived here.
CREATE TABLE disputes (
    id                bigserial PRIMARY KEY,
    agency            text    NOT NULL,
    message_id        text    NOT NULL,    -- the disputed delivery
    item              text    NOT NULL,
    key_hash          text    NOT NULL,    -- keyed hash of the record key, as in the ledger
    version           bigint  NOT NULL,    -- the version disputed
    department        text    NOT NULL,
    problem           text    NOT NULL,
    opened_on         date    NOT NULL,
    check_due         date    NOT NULL,    -- opened_on + 3 working days
    state             text    NOT NULL,    -- open | with_department | closed
    cause             text,                -- technical | data | unfounded
    finding           text,
    fix_due           date,                -- finding day + 3 working days
    corrected_version bigint,
    outcome           text,                -- corrected | not_upheld
    closed_on         date,
    report            jsonb
);
CREATE INDEX disputes_open ON disputes (state);

CREATE TABLE dispute_events (
    id      bigserial   PRIMARY KEY,
    dispute bigint      NOT NULL REFERENCES disputes (id),
    at      timestamptz NOT NULL DEFAULT now(),
    role    text        NOT NULL,
    actor   text        NOT NULL,
    action  text        NOT NULL,
    note    text        NOT NULL DEFAULT ''
);
CREATE INDEX dispute_events_dispute ON dispute_events (dispute, id);
