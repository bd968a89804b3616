//! `govbus quarantine`: what a department's adapters set aside, by reason; and taking the rows
//! out to correct them (`govbus-adapter --requeue FILE` sends them back through validation).
use std::{collections::BTreeMap, io::Write, path::PathBuf, process::ExitCode, time::Duration};

use bus_schemas::{
    amqp::{AmqpConfig, Connector},
    wire,
};
use clap::{Args, Subcommand};
use futures::StreamExt;
use lapin::{
    message::Delivery,
    options::{BasicAckOptions, BasicConsumeOptions, BasicQosOptions, QueueDeclareOptions},
    types::FieldTable,
};
use serde_json::{json, Value as Json};

use bus_schemas::amqp::headers::header_str;

/// `govbus quarantine …`
#[derive(Debug, Subcommand)]
pub enum QuarantineCommand {
    /// Counts of quarantined rows by item, reason and field (rows stay in the queue; no row is
    /// printed).
    List(Department),
    /// Take every quarantined row out into a JSON-lines file (mode 0600: rows hold personal
    /// data) to correct; acked only after the file is on disk.
    Export {
        #[command(flatten)]
        department: Department,
        /// The file to write (must not exist).
        #[arg(long)]
        out: PathBuf,
    },
}

/// Which department's quarantine, with which account.
#[derive(Debug, Args)]
pub struct Department {
    /// Department id.
    #[arg(long)]
    department: String,
    /// The file `govbus provision` wrote for the department (default
    /// `provisioned/departments/<id>.env`).
    #[arg(long)]
    env_file: Option<PathBuf>,
    /// AMQP URL with an account that reads `quarantine.<department>` (overrides the file).
    #[arg(long)]
    amqp_url: Option<String>,
}

impl Department {
    fn url(&self) -> anyhow::Result<String> {
        if let Some(u) = &self.amqp_url {
            return Ok(u.clone());
        }
        let path = self.env_file.clone().unwrap_or_else(|| {
            PathBuf::from("provisioned/departments").join(format!("{}.env", self.department))
        });
        let env = bus_schemas::envfile::read(&path).map_err(|e| {
            anyhow::anyhow!(
                "cannot read {}: {e}; pass --env-file (from `govbus provision`) or --amqp-url",
                path.display()
            )
        })?;
        env.get("GOVBUS__AMQP__URL")
            .cloned()
            .ok_or_else(|| anyhow::anyhow!("{} has no GOVBUS__AMQP__URL", path.display()))
    }
}

/// Takes every message of a queue without acking; returns them with the channel (closing it
/// puts them back).
async fn take_all(
    url: &str,
    queue: &str,
) -> anyhow::Result<(lapin::Connection, lapin::Channel, Vec<Delivery>)> {
    let connector = Connector::new(
        AmqpConfig {
            url: url.to_string(),
            ..AmqpConfig::default()
        },
        "govbus-quarantine",
    );
    let conn = connector.connect_once().await?;
    let ch = conn.create_channel().await?;
    let waiting = ch
        .queue_declare(
            queue.into(),
            QueueDeclareOptions {
                passive: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .map_err(|e| anyhow::anyhow!("cannot read queue {queue}: {e}"))?
        .message_count() as usize;
    let ch = conn.create_channel().await?;
    ch.basic_qos(u16::MAX, BasicQosOptions::default()).await?;
    let mut consumer = ch
        .basic_consume(
            queue.into(),
            "govbus-quarantine".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    let mut out = Vec::with_capacity(waiting);
    while out.len() < waiting {
        match tokio::time::timeout(Duration::from_secs(2), consumer.next()).await {
            Ok(Some(d)) => out.push(d?),
            _ => break,
        }
    }
    Ok((conn, ch, out))
}

fn describe(d: &Delivery) -> (String, String, String, String) {
    let empty = FieldTable::default();
    let h = d.properties.headers().as_ref().unwrap_or(&empty);
    let get = |n: &str| header_str(h, n).unwrap_or("").to_string();
    let item = d
        .routing_key
        .as_str()
        .split_once('.')
        .map_or("", |(_, i)| i)
        .to_string();
    (
        item,
        get(wire::header::REASON),
        get(wire::header::FIELD),
        get(wire::header::SOURCE_POSITION),
    )
}

/// Runs a quarantine command.
pub fn run(cmd: QuarantineCommand) -> anyhow::Result<ExitCode> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        match cmd {
            QuarantineCommand::List(dep) => {
                let queue = wire::quarantine_queue(&dep.department);
                let (conn, ch, all) = take_all(&dep.url()?, &queue).await?;
                let mut counts: BTreeMap<(String, String, String), usize> = BTreeMap::new();
                for d in &all {
                    let (item, reason, field, _) = describe(d);
                    *counts.entry((item, reason, field)).or_default() += 1;
                }
                let _ = ch.close(200, "listed".into()).await; // puts them back
                let _ = conn.close(200, "done".into()).await;
                println!("{} rows in {queue}", all.len());
                if !counts.is_empty() {
                    println!("{:>7}  {:<16} {:<28} reason", "ROWS", "ITEM", "FIELD");
                    for ((item, reason, field), n) in counts {
                        println!("{n:>7}  {item:<16} {field:<28} {reason}");
                    }
                    println!(
                        "take them out to correct: govbus quarantine export --department {} --out FILE; \
                         then: govbus-adapter --config ADAPTER.toml --requeue FILE",
                        dep.department
                    );
                }
                Ok(ExitCode::SUCCESS)
            }
            QuarantineCommand::Export { department, out } => {
                let queue = wire::quarantine_queue(&department.department);
                let (conn, ch, all) = take_all(&department.url()?, &queue).await?;
                let mut file = bus_schemas::keys::create_private(&out).map_err(|e| anyhow::anyhow!("cannot create {}: {e}", out.display()))?;
                for d in &all {
                    let (item, reason, field, position) = describe(d);
                    let row: Json = serde_json::from_slice(&d.data)
                        .unwrap_or_else(|_| Json::String(String::from_utf8_lossy(&d.data).into()));
                    let line = json!({"item": item, "reason": reason, "field": field,
                        "source_position": position, "row": row});
                    serde_json::to_writer(&mut file, &line)?;
                    file.write_all(b"\n")?;
                }
                file.sync_all()?;
                if let Some(last) = all.last() {
                    anyhow::ensure!(
                        last.acker.ack(BasicAckOptions { multiple: true }).await?,
                        "the channel closed before the rows were acked; they stay in {queue}, and {} holds a copy",
                        out.display()
                    );
                }
                let _ = ch.close(200, "exported".into()).await;
                let _ = conn.close(200, "done".into()).await;
                eprintln!(
                    "took {} rows out of {queue} into {} (mode 0600); correct them, then \
                     `govbus-adapter --config ADAPTER.toml --requeue {}`",
                    all.len(),
                    out.display(),
                    out.display()
                );
                Ok(ExitCode::SUCCESS)
            }
        }
    })
}
