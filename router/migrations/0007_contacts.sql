-- Joining (article 34): an agency registers its three contact roles and reports each change
-- within 5 working days; the platform records when. Contacts are personal data: read over
-- the API by the agency itself, the coordinator and operators; never logged.
CREATE TABLE agency_contacts (
    id                bigserial PRIMARY KEY,
    agency            text    NOT NULL,
    leader            jsonb   NOT NULL,
    sharing_officer   jsonb   NOT NULL,
    technical_officer jsonb   NOT NULL,
    changed_on        date    NOT NULL,    -- when the contacts changed
    reported_on       date    NOT NULL,    -- when the platform was told
    report_due        date    NOT NULL,    -- changed_on + 5 working days
    late              boolean NOT NULL
);
CREATE INDEX agency_contacts_agency ON agency_contacts (agency, id);

-- Requests for data outside the catalogue (the two parties named, the data described) and
-- applications forwarded to another district's platform (with its own 5-working-day clock).
ALTER TABLE applications ADD COLUMN outside_catalogue text;
ALTER TABLE applications ADD COLUMN forwarded_to text;
ALTER TABLE applications ADD COLUMN forward_due date;

-- Quarantined rows per day, department and item (counted from a copy the router consumes;
-- the rows themselves stay in the department's quarantine queue), for the report's rate.
CREATE TABLE quarantine_daily (
    day        date   NOT NULL,
    department text   NOT NULL,
    item       text   NOT NULL,
    rows       bigint NOT NULL,
    PRIMARY KEY (day, department, item)
);
