//! Links to other platforms (articles 32, 33), watched: the state of each shovel that pulls a
//! linked platform's records into this broker (`govbus_link_up`, from the shovel management
//! plugin), the backlog of each `platform.<id>` queue another platform pulls from here
//! (`govbus_link_backlog`), and the messages no partition took (`govbus_unrouted_messages`,
//! the queue of the ingest exchange's alternate exchange). The status page shows the last poll.
use std::{sync::Arc, time::Duration};

use bus_schemas::wire;
use metrics::gauge;
use tokio_util::sync::CancellationToken;

use crate::{
    ops::{provision::Management, status::QueueProbe},
    pipeline::shared::{LinkStatus, Links, Shared},
};

/// Polls the links every `every` until `stop`, keeping the last poll in `shared.links`.
pub async fn watch(
    shared: Arc<Shared>,
    management: Option<Management>,
    probe: QueueProbe,
    every: Duration,
    stop: CancellationToken,
) {
    loop {
        let links = poll(&shared, management.as_ref(), &probe).await;
        *shared.links.lock().expect("links lock") = links;
        tokio::select! {
            () = tokio::time::sleep(every) => {}
            () = stop.cancelled() => return,
        }
    }
}

/// One poll: sets the gauges and returns what the status page shows.
pub async fn poll(shared: &Shared, management: Option<&Management>, probe: &QueueProbe) -> Links {
    let routing = shared.routing();
    let cat = &routing.catalogue;
    let mut out = Vec::new();
    let sources: Vec<&str> = cat
        .source_platforms()
        .filter(|p| p.link.is_some())
        .map(|p| p.id.as_str())
        .collect();
    if !sources.is_empty() {
        let states = match management {
            Some(m) => match m.shovel_states().await {
                Ok(s) => Some(s),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot read the links' shovel states");
                    None
                }
            },
            None => None,
        };
        for p in sources {
            // `govbus provision` names it `<account prefix>govbus-link-<platform>`.
            let suffix = crate::ops::provision::shovel_name("", p);
            let state = states.as_ref().map(|s| {
                s.iter()
                    .find(|(name, _)| name.ends_with(&suffix))
                    .map_or_else(|| "missing".to_string(), |(_, st)| st.clone())
            });
            let link = LinkStatus {
                platform: p.to_string(),
                direction: "from".into(),
                state,
                backlog: None,
            };
            gauge!("govbus_link_up", "platform" => p.to_string(), "direction" => "from")
                .set(if link.up() { 1.0 } else { 0.0 });
            out.push(link);
        }
    }
    let recipients: Vec<String> = cat.recipient_platforms().map(|p| p.id.clone()).collect();
    let mut queues: Vec<String> = recipients.iter().map(|p| wire::platform_queue(p)).collect();
    queues.push(wire::UNROUTED_QUEUE.to_string());
    let (_, depths) = probe.depths(&queues).await;
    for p in recipients {
        let depth = depths.get(&wire::platform_queue(&p));
        let backlog = depth.map(|(n, _)| *n);
        let link = LinkStatus {
            platform: p.clone(),
            direction: "to".into(),
            state: depth.map(|(_, consumers)| {
                if *consumers > 0 {
                    "consumed"
                } else {
                    "not consumed"
                }
                .to_string()
            }),
            backlog,
        };
        gauge!("govbus_link_up", "platform" => p.clone(), "direction" => "to").set(if link.up() {
            1.0
        } else {
            0.0
        });
        if let Some(b) = backlog {
            gauge!("govbus_link_backlog", "platform" => p).set(f64::from(b));
        }
        out.push(link);
    }
    let unrouted = depths.get(wire::UNROUTED_QUEUE).map(|(n, _)| *n);
    if let Some(n) = unrouted {
        gauge!("govbus_unrouted_messages").set(f64::from(n));
    }
    Links {
        links: out,
        unrouted,
    }
}
