//! The wire contract's exchanges and queues for the catalogue in force.
use bus_schemas::amqp::topology;
use lapin::Channel;

use crate::routing::grants::Routing;

/// Declares the wire contract's topology for the catalogue in force.
pub async fn declare(ch: &Channel, routing: &Routing) -> lapin::Result<()> {
    topology::declare_core(ch).await?;
    for d in routing.catalogue.department_ids() {
        topology::declare_department(ch, d).await?;
    }
    for a in routing.catalogue.agency_ids() {
        topology::declare_agency(ch, a).await?;
    }
    for p in routing.catalogue.recipient_platforms() {
        topology::declare_platform(ch, &p.id).await?;
    }
    Ok(())
}
