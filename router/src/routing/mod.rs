//! The routing decision, without I/O: the catalogue and its check (`catalogue.rs`), compiled
//! into grants in force (`grants.rs`); for one message, verify, check and plan each delivery
//! (`route.rs`): granted fields only (`projection.rs`), pseudonyms (`pseudonym.rs`), signed with
//! the platform's keys (`platform.rs`).
pub mod catalogue;
pub mod grants;
pub mod platform;
pub mod projection;
pub mod pseudonym;
pub mod route;
pub mod subjects;
