-- Batch signatures (DESIGN.md): each ledger row keeps the department's batch statement, the
-- message's leaf index and its inclusion path beside the batch signature (dept_signature).
-- Rows written before hold the message's own signature and none of these.
ALTER TABLE ledger
    ADD COLUMN dept_statement text,
    ADD COLUMN dept_leaf      integer,
    ADD COLUMN dept_path      bytea;
