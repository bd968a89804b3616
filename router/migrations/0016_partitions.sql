-- Partitioned routers (issue 20, DESIGN.md "Scale"). The routers' input is P partitions
-- `govbus.router.<p>`, each consumed by one active router at a time.
--
-- * `partitions` records the P bound on the broker (`govbus partitions set`, or the first
--   router to start): a router configured for another P refuses to start.
-- * Each partition keeps its own ledger chain per agency (`chain` = the partition), so two
--   routers never wait on each other's chain heads. Rows written before partitions are chain 0
--   and keep their hash; checkpoints name their chain.
CREATE TABLE partitions (
    one    boolean     PRIMARY KEY DEFAULT true CHECK (one),
    count  smallint    NOT NULL CHECK (count BETWEEN 1 AND 64),
    set_at timestamptz NOT NULL DEFAULT now()
);

ALTER TABLE ledger ADD COLUMN chain smallint NOT NULL DEFAULT 0;
ALTER TABLE ledger DROP CONSTRAINT ledger_pkey, ADD PRIMARY KEY (agency, chain, seq);

ALTER TABLE ledger_heads ADD COLUMN chain smallint NOT NULL DEFAULT 0;
ALTER TABLE ledger_heads DROP CONSTRAINT ledger_heads_pkey, ADD PRIMARY KEY (agency, chain);

ALTER TABLE ledger_checkpoints ADD COLUMN chain smallint NOT NULL DEFAULT 0;
ALTER TABLE ledger_checkpoints DROP CONSTRAINT ledger_checkpoints_pkey, ADD PRIMARY KEY (agency, chain, seq);
