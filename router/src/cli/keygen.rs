//! `govbus keygen`: the platform's key material: an Ed25519 key pair that signs deliveries,
//! the id secret (delivery ids, record key hashes) and the pseudonym secret.
use std::{path::PathBuf, process::ExitCode};

use clap::Args;

/// Arguments of `govbus keygen`.
#[derive(Debug, Args)]
pub struct KeygenArgs {
    /// Directory to write into.
    #[arg(long)]
    out: PathBuf,
    /// Key id (e.g. platform-2026).
    #[arg(long)]
    key_id: String,
}

/// Writes `<key id>.key` (0600), `<key id>.pub`, and if absent `id-secret` and `pseudonym-secret` (0600).
pub fn run(args: KeygenArgs) -> anyhow::Result<ExitCode> {
    let public = bus_schemas::keys::keygen(&args.out, &args.key_id)?;
    bus_schemas::keys::ensure_secret(&args.out.join("pseudonym-secret"))?;
    println!(
        "wrote {dir}/{id}.key (0600), {id}.pub, id-secret and pseudonym-secret (0600, kept if present); platform public key:\n{public}",
        dir = args.out.display(),
        id = args.key_id
    );
    Ok(ExitCode::SUCCESS)
}
