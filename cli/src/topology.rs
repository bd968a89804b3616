//! `govbus topology`: declares the wire contract's exchanges and queues (idempotently) for the
//! given departments and agencies. The router does the same at start; operators use this to
//! prepare a broker, and the adapter examples to run before a router is up.
use std::process::ExitCode;

use anyhow::Context;
use bus_schemas::{
    amqp::{topology, AmqpConfig, Connector},
    wire,
};
use clap::Args;

/// Arguments of `govbus topology`.
#[derive(Debug, Args)]
pub struct TopologyArgs {
    /// Broker URL of an account that may configure (default: GOVBUS__AMQP__URL, else the local guest).
    #[arg(
        long,
        env = "GOVBUS__AMQP__URL",
        default_value = "amqp://guest:guest@127.0.0.1:5672/%2f",
        hide_env_values = true
    )]
    amqp_url: String,
    /// A department whose quarantine queue to declare (repeatable).
    #[arg(long = "department")]
    departments: Vec<String>,
    /// An agency whose delivery and dead-letter queues to declare (repeatable).
    #[arg(long = "agency")]
    agencies: Vec<String>,
    /// Router partitions to declare and bind (`govbus.router.0` …): the platform's P, as
    /// `govbus partitions set` bound it. Declaring another P than the bound one adds bindings
    /// beside it.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u8).range(1..=64))]
    partitions: u8,
}

/// Declares the topology.
pub fn run(args: TopologyArgs) -> anyhow::Result<ExitCode> {
    for id in args.departments.iter().chain(&args.agencies) {
        if !wire::valid_id(id) {
            anyhow::bail!(
                "`{id}` is not a valid id: lowercase letters, digits and _, starting with a letter"
            );
        }
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let cfg = AmqpConfig {
            url: args.amqp_url.clone(),
            ..Default::default()
        };
        let conn = Connector::new(cfg.clone(), "govbus topology")
            .connect_once()
            .await?;
        let ch = conn.create_channel().await?;
        topology::declare_core(&ch)
            .await
            .context("declaring the core exchanges and queues")?;
        topology::declare_partitions(&ch, args.partitions, None)
            .await
            .context("declaring the router partitions")?;
        println!(
            "declared {}, {}, {}, {} and queues {}0..{}, {}",
            wire::INGEST_EXCHANGE,
            wire::QUARANTINE_EXCHANGE,
            wire::DELIVER_EXCHANGE,
            wire::DLX_EXCHANGE,
            wire::ROUTER_QUEUE_PREFIX,
            args.partitions - 1,
            wire::ROUTER_DLQ
        );
        for d in &args.departments {
            topology::declare_department(&ch, d)
                .await
                .with_context(|| format!("declaring department {d}"))?;
            println!("declared {}", wire::quarantine_queue(d));
        }
        for a in &args.agencies {
            topology::declare_agency(&ch, a)
                .await
                .with_context(|| format!("declaring agency {a}"))?;
            println!("declared {} and its .dlq", wire::agency_queue(a));
        }
        let _ = conn.close(200, "done".into()).await;
        anyhow::Ok(())
    })
    .with_context(|| format!("on {}", bus_schemas::amqp::config::redact(&args.amqp_url)))?;
    Ok(ExitCode::SUCCESS)
}
