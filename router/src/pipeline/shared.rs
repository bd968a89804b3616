//! What the router's tasks share: the platform's keys, the catalogue in force, the database,
//! the agencies with kept deliveries, readiness and tunables.
use std::{
    collections::HashSet,
    sync::{Arc, Mutex, RwLock},
};

use bus_schemas::health::Health;
use sqlx::PgPool;

use crate::{config::Tunables, routing::grants::Routing, routing::platform::Platform};

/// What every stage shares.
pub struct Shared {
    /// Platform keys.
    pub platform: Platform,
    /// The catalogue in force (swapped whole on reload).
    pub routing: RwLock<Arc<Routing>>,
    /// PostgreSQL.
    pub pool: PgPool,
    /// Agencies with kept deliveries: new deliveries to them are kept behind the old ones.
    pub blocked: Mutex<HashSet<String>>,
    /// Readiness.
    pub health: Arc<Health>,
    /// Tunables.
    pub tunables: Tunables,
    /// The links to other platforms as last polled (`ops::links`), for the status page.
    pub links: Mutex<Links>,
}

/// The links to other platforms, and the messages no partition took, as last polled.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Links {
    /// One per linked platform records come from or go to.
    pub links: Vec<LinkStatus>,
    /// Messages in `govbus.unrouted` (`None`: not polled yet, or the broker did not answer).
    pub unrouted: Option<u32>,
}

/// One link as last polled.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct LinkStatus {
    /// The other platform.
    pub platform: String,
    /// `from` (its records arrive here through a shovel on this broker) or `to` (it pulls
    /// this platform's `platform.<id>`).
    pub direction: String,
    /// `from`: the shovel's state (`running`, `starting`, `terminated`, or `missing` when no
    /// shovel is declared); `to`: `consumed` or `not consumed` (the other platform's shovel is
    /// the queue's consumer); `None` when the broker did not answer.
    pub state: Option<String>,
    /// `to`: messages waiting in `platform.<id>`.
    pub backlog: Option<u32>,
}

impl LinkStatus {
    /// Whether records move over the link: the shovel runs, or the queue has its consumer.
    pub fn up(&self) -> bool {
        matches!(self.state.as_deref(), Some("running") | Some("consumed"))
    }
}

impl Shared {
    /// The catalogue in force.
    pub fn routing(&self) -> Arc<Routing> {
        self.routing.read().expect("routing lock").clone()
    }
}
