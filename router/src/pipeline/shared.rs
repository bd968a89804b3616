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
}

impl Shared {
    /// The catalogue in force.
    pub fn routing(&self) -> Arc<Routing> {
        self.routing.read().expect("routing lock").clone()
    }
}
