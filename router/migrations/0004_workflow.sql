-- The sharing workflow (issue 6; articles 34–37): applications for catalogue items, the
-- responsible department's answer within 10 working days, escalation to the coordinator when
-- the answer is late or a refusal, mediation and decision, and the grants approved on the way.
CREATE TABLE applications (
    id              bigserial PRIMARY KEY,
    agency          text    NOT NULL,
    item            text    NOT NULL,
    departments     text[]  NOT NULL,      -- responsible for the item when applied for
    fields          text[]  NOT NULL,      -- the fields asked for
    identity        text    NOT NULL,      -- full | pseudonym
    legal_basis     text    NOT NULL,
    purpose         text    NOT NULL,
    valid_until     date,                  -- last day asked for; open-ended when NULL
    submitted_on    date    NOT NULL,      -- Asia/Shanghai
    answer_due      date    NOT NULL,      -- submitted_on + 10 working days
    state           text    NOT NULL,      -- submitted | escalated | disputed | closed
    outcome         text,                  -- granted | partially_granted | refused (when closed)
    granted_fields  text[],
    answered_on     date,
    escalated_on    date,
    escalation      text,                  -- why it went to the coordinator
    closed_on       date,
    closed_by       text,                  -- department | coordinator | decision
    grant_due       date                   -- deliveries due: closing day + 5 working days
);
CREATE INDEX applications_open ON applications (state, answer_due);

-- Every step, in order: who (role and id), what, and the note they gave. Outcomes are read from
-- here by every agency (article 36: results are published on the platform).
CREATE TABLE application_events (
    id          bigserial   PRIMARY KEY,
    application bigint      NOT NULL REFERENCES applications (id),
    at          timestamptz NOT NULL DEFAULT now(),
    role        text        NOT NULL,
    actor       text        NOT NULL,
    action      text        NOT NULL,
    note        text        NOT NULL DEFAULT ''
);
CREATE INDEX application_events_app ON application_events (application, id);

-- Grants approved through the workflow. They stand beside the catalogue file's grants; a
-- reload of the file changes only the file's.
CREATE TABLE workflow_grants (
    id          text    PRIMARY KEY,       -- app-<application id>
    application bigint  NOT NULL REFERENCES applications (id),
    revision    bigint  NOT NULL DEFAULT 1,
    agency      text    NOT NULL,
    item        text    NOT NULL,
    fields      text[]  NOT NULL,
    identity    text    NOT NULL,
    legal_basis text    NOT NULL,
    purpose     text    NOT NULL,
    valid_from  date    NOT NULL,
    valid_until date,
    created_at  timestamptz NOT NULL DEFAULT now()
);
