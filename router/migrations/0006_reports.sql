-- Yearly reports (issue 6; articles 41, 42): timeliness of delivery, kept as counts per day
-- (Asia/Shanghai), agency, item, department and delay bucket (`bucket` indexes the bounds in
-- router/src/report.rs), written in the same transaction as the ledger rows. Replays are not
-- counted: their delay is the replay's, not the source's.
CREATE TABLE timeliness_daily (
    day        date     NOT NULL,
    agency     text     NOT NULL,
    item       text     NOT NULL,
    department text     NOT NULL,
    bucket     smallint NOT NULL,
    deliveries bigint   NOT NULL,
    PRIMARY KEY (day, agency, item, department, bucket)
);
