//! `govbus ledger verify`: walks every agency's hash chain and names the first broken row, and
//! with `--checkpoints` checks the chain heads agencies were given. `govbus ledger checkpoint`
//! delivers signed checkpoints now.
use std::{path::PathBuf, process::ExitCode};

use clap::Subcommand;

/// `govbus ledger …`
#[derive(Debug, Subcommand)]
pub enum LedgerCommand {
    /// Recompute every agency's chain; exit 1 naming the first broken row of each. With
    /// --checkpoints, also check every checkpoint agencies kept against the ledger.
    Verify {
        /// PostgreSQL URL of the router's database.
        #[arg(
            long,
            env = "GOVBUS__DATABASE__URL",
            default_value = "postgres://postgres@127.0.0.1:5432/postgres",
            hide_env_values = true
        )]
        database_url: String,
        /// A folder of checkpoint files agencies kept (`govbus-agency tail|sink --checkpoints DIR`;
        /// subfolders are read too).
        #[arg(long)]
        checkpoints: Option<PathBuf>,
        /// The platform's public key (base64) the checkpoints must be signed with, or several
        /// separated by commas (the keys before and after a rotation); needed with
        /// --checkpoints.
        #[arg(long, env = "GOVBUS_PLATFORM_PUBLIC_KEY")]
        platform_public_key: Option<String>,
    },
    /// Sign and deliver a checkpoint of every agency chain that grew since its last one, now
    /// (the router also does every `router.checkpoint_every_secs`).
    Checkpoint {
        /// The router's config file (platform key, broker, database).
        #[arg(long)]
        config: PathBuf,
    },
}

/// Runs a ledger command.
pub fn run(cmd: LedgerCommand) -> anyhow::Result<ExitCode> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    match cmd {
        LedgerCommand::Verify {
            database_url,
            checkpoints,
            platform_public_key,
        } => rt.block_on(verify(database_url, checkpoints, platform_public_key)),
        LedgerCommand::Checkpoint { config } => rt.block_on(async {
            let cfg = router::config::RouterConfig::load(&config)?;
            let signer = bus_schemas::keys::load_signer_as(
                &cfg.platform.key_file,
                &cfg.platform.key_id,
                "platform.key_file",
            )?;
            let pool = router::store::connect(&cfg.database.url, 2).await?;
            let connector =
                bus_schemas::amqp::Connector::new(cfg.amqp.clone(), "govbus-ledger-checkpoint");
            let n = router::ops::checkpoint::deliver_new(&pool, &signer, &connector).await?;
            println!("{n} ledger checkpoint(s) delivered");
            Ok(ExitCode::SUCCESS)
        }),
    }
}

async fn verify(
    database_url: String,
    checkpoints: Option<PathBuf>,
    platform_public_key: Option<String>,
) -> anyhow::Result<ExitCode> {
    let key = match (&checkpoints, platform_public_key) {
        (Some(_), Some(k)) => Some(
            k.split(',')
                .map(|k| {
                    bus_schemas::keys::parse_public_key(k.trim())
                        .map_err(|e| anyhow::anyhow!("--platform-public-key is {e}"))
                })
                .collect::<anyhow::Result<Vec<_>>>()?,
        ),
        (Some(_), None) => anyhow::bail!(
            "--checkpoints needs the platform's public key: --platform-public-key (the router serves it at /keys)"
        ),
        (None, _) => None,
    };
    let pool = router::store::connect(&database_url, 2).await?;
    let v = router::store::ledger::verify(&pool).await?;
    let mut ok = v.broken.is_empty();
    if ok {
        println!(
            "ledger ok: {} rows in {} chains (one per agency and router partition)",
            v.rows, v.agencies
        );
    } else {
        for b in &v.broken {
            println!(
                "ledger BROKEN: agency {} partition {} row seq {} (message id {}): {}",
                b.agency, b.chain, b.seq, b.message_id, b.problem
            );
        }
    }
    if let (Some(dir), Some(key)) = (checkpoints, key) {
        let c = router::ops::checkpoint::check_dir(&pool, &dir, &key).await?;
        for p in &c.problems {
            println!("checkpoint MISMATCH: {p}");
        }
        if c.problems.is_empty() {
            println!(
                "checkpoints ok: {} checkpoint(s) in {} match the ledger",
                c.matched,
                dir.display()
            );
        }
        anyhow::ensure!(
            c.matched + c.problems.len() > 0,
            "no checkpoint files (*.json) in {}",
            dir.display()
        );
        ok &= c.problems.is_empty();
    }
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
