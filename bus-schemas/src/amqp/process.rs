//! What every govbus process does at start: tracing from the `[log]` section, and a stop
//! token cancelled on SIGTERM or Ctrl-C (the process then drains).
use tokio_util::sync::CancellationToken;

use crate::settings::LogConfig;

/// Logs to stderr as text or JSON, filtered by `log.level` (`RUST_LOG` overrides it).
pub fn init_tracing(log: &LogConfig) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(&log.level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Colours only for a terminal: log files and collectors get plain text.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    if log.format == "json" {
        builder.json().init();
    } else {
        builder.init();
    }
}

/// A token cancelled on SIGTERM or Ctrl-C. Call inside a tokio runtime.
pub fn stop_on_signals() -> CancellationToken {
    let stop = CancellationToken::new();
    let signal_stop = stop.clone();
    tokio::spawn(async move {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("SIGTERM handler");
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
        tracing::info!("stop requested: draining");
        signal_stop.cancel();
    });
    stop
}
