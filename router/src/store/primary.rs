//! PostgreSQL failover (DESIGN.md, "Scale"): `database.url` may name a primary and its
//! standbys, separated by commas. The pool connects to the one that is a primary (not in
//! recovery); [`follow`] checks it every second and, once it stops answering or turns out to be
//! in recovery, finds the promoted standby and points the pool's new connections there. With a
//! synchronous standby (`synchronous_standby_names`, `synchronous_commit = on`) nothing the
//! router acked is lost: it acks only after its ledger rows are committed on both.
use std::time::Duration;

use sqlx::{
    postgres::{PgConnectOptions, PgConnection},
    ConnectOptions, Connection, PgPool,
};
use tokio_util::sync::CancellationToken;

/// How long one address may take to answer whether it is the primary.
const PROBE_TIMEOUT: Duration = Duration::from_secs(3);

/// The addresses of a `database.url`: one URL, or several separated by commas.
pub fn urls(url: &str) -> Vec<&str> {
    url.split(',')
        .map(str::trim)
        .filter(|u| !u.is_empty())
        .collect()
}

/// Whether the server at `opts` answers as a primary; `Err` says why not.
async fn is_primary(opts: &PgConnectOptions) -> Result<(), String> {
    let probe = async {
        let mut conn = PgConnection::connect_with(opts)
            .await
            .map_err(|e| e.to_string())?;
        let recovering: bool = sqlx::query_scalar("SELECT pg_is_in_recovery()")
            .fetch_one(&mut conn)
            .await
            .map_err(|e| e.to_string())?;
        let _ = conn.close().await;
        if recovering {
            Err("a standby (in recovery)".to_string())
        } else {
            Ok(())
        }
    };
    tokio::time::timeout(PROBE_TIMEOUT, probe)
        .await
        .unwrap_or_else(|_| Err(format!("no answer in {PROBE_TIMEOUT:?}")))
}

/// The first of `url`'s addresses that is a primary, with its index; the error names what each
/// address answered.
pub async fn find(url: &str) -> anyhow::Result<(usize, PgConnectOptions)> {
    let mut problems = Vec::new();
    for (i, u) in urls(url).into_iter().enumerate() {
        let opts: PgConnectOptions = u.parse().map_err(|e| {
            anyhow::anyhow!(
                "database.url address {} is not a PostgreSQL URL: {e}",
                bus_schemas::amqp::config::redact(u)
            )
        })?;
        let opts = opts.log_statements(tracing::log::LevelFilter::Debug);
        match is_primary(&opts).await {
            Ok(()) => return Ok((i, opts)),
            Err(e) => problems.push(format!("{}: {e}", bus_schemas::amqp::config::redact(u))),
        }
    }
    anyhow::bail!(
        "cannot connect to PostgreSQL: no primary among database.url's addresses ({}); start \
         it or set database.url (GOVBUS__DATABASE__URL)",
        problems.join("; ")
    )
}

/// Keeps `pool` on the primary until `stop`; `lock` is a connection holding the id-secret lock
/// (`store::id_secret::hold_shared`), taken again on the new primary after a failover.
pub async fn follow(
    pool: PgPool,
    url: String,
    mut current: usize,
    mut lock: Option<PgConnection>,
    stop: CancellationToken,
) {
    if urls(&url).len() < 2 {
        // One address: nothing to fail over to; the pool reconnects to it by itself.
        stop.cancelled().await;
        return;
    }
    loop {
        tokio::select! {
            () = tokio::time::sleep(Duration::from_secs(1)) => {}
            () = stop.cancelled() => return,
        }
        let opts = (*pool.connect_options()).clone();
        if is_primary(&opts).await.is_ok() {
            continue;
        }
        match find(&url).await {
            Ok((i, _)) if i == current => {}
            Ok((i, opts)) => {
                tracing::warn!(
                    from = %bus_schemas::amqp::config::redact(urls(&url)[current]),
                    to = %bus_schemas::amqp::config::redact(urls(&url)[i]),
                    "the PostgreSQL primary changed; new connections go to the new one"
                );
                pool.set_connect_options(opts);
                current = i;
                metrics::counter!("govbus_router_database_failovers_total").increment(1);
                if lock.is_some() {
                    lock = match crate::store::id_secret::hold_shared(&pool).await {
                        Ok(c) => Some(c),
                        Err(e) => {
                            tracing::warn!(error = %e, "cannot take the id-secret lock on the new primary");
                            None
                        }
                    };
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "the PostgreSQL primary is gone; looking for the promoted standby")
            }
        }
    }
}
