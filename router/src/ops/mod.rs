//! Operator tasks beside the hot path: provisioning accounts, replays, backups, the yearly
//! report, the status page and upkeep, ledger checkpoints, id secret rotation, partitions. They read and
//! write the store; nothing of the hot path imports them.
pub mod backup;
pub mod checkpoint;
pub mod id_secret;
pub mod links;
pub mod partitions;
pub mod provision;
pub mod purge;
pub mod replay;
pub mod report;
pub mod status;
pub mod subject_log;
