-- Applications across platforms (article 37, issue 21).
-- On the platform that answers: an application another platform forwarded names that platform
-- as its applicant (`agency`) and the agency it applies for there (`on_behalf`); its grant
-- (to the platform, limited to the platform's region) comes into force when that platform
-- confirms it has put the matching source in force (`in_force`), so nothing reaches it before
-- it can take it.
-- On the platform applied at: the application is forwarded (`forwarded_to`, the other
-- platform's id) as `remote_id` there; `remote_events` steps of it are mirrored here, and
-- `remote_confirmed` once the outcome is mirrored (and a grant confirmed there).
ALTER TABLE applications
    ADD COLUMN on_behalf        text,
    ADD COLUMN region           text,
    ADD COLUMN remote_id        bigint,
    ADD COLUMN remote_events    integer NOT NULL DEFAULT 0,
    ADD COLUMN remote_confirmed boolean NOT NULL DEFAULT false;

ALTER TABLE workflow_grants
    ADD COLUMN region   text,
    ADD COLUMN in_force boolean NOT NULL DEFAULT true;

-- What another platform grants this one, approved there through an application made here: the
-- routing tables merge these with the catalogue's `[[platform.item]]` entries.
CREATE TABLE platform_sources (
    item        text PRIMARY KEY,
    platform    text    NOT NULL,
    fields      text[]  NOT NULL,
    identity    text    NOT NULL,
    region      text,
    application bigint  NOT NULL REFERENCES applications (id),
    since       timestamptz NOT NULL DEFAULT now()
);
