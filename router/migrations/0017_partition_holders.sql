-- Which router holds each partition (issue 20): a router writes its name when a partition
-- first delivers to it after it subscribed (RabbitMQ sends a standby nothing), so the status
-- page can name the holder and show a takeover.
CREATE TABLE partition_holders (
    partition smallint    PRIMARY KEY,
    router    text        NOT NULL,
    since     timestamptz NOT NULL DEFAULT now()
);
