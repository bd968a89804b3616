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
    /// Rotation: the current (old) platform private key, which endorses the new one; writes
    /// `<key id>.endorsement` for `platform.endorsement_file`.
    #[arg(long, requires = "endorse_key_id")]
    endorse_with: Option<PathBuf>,
    /// The old key's id.
    #[arg(long, requires = "endorse_with")]
    endorse_key_id: Option<String>,
}

/// Writes `<key id>.key` (0600), `<key id>.pub`, and if absent `id-secret` and `pseudonym-secret` (0600).
pub fn run(args: KeygenArgs) -> anyhow::Result<ExitCode> {
    // The old key first: a wrong path fails before anything is written.
    let old = match (&args.endorse_with, &args.endorse_key_id) {
        (Some(path), Some(id)) => Some(bus_schemas::keys::load_signer_as(
            path,
            id,
            "--endorse-with",
        )?),
        _ => None,
    };
    let public = bus_schemas::keys::keygen(&args.out, &args.key_id)?;
    if let Some(old) = old {
        let new = bus_schemas::keys::parse_public_key(&public)
            .map_err(|e| anyhow::anyhow!("the new key: {e}"))?;
        let e = bus_schemas::trust::Endorsement::make(&old, &args.key_id, &new);
        let path = args.out.join(format!("{}.endorsement", args.key_id));
        std::fs::write(&path, serde_json::to_vec_pretty(&e)?)
            .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", path.display()))?;
        println!(
            "wrote {} ({} endorses {}): set platform.key_file, key_id and endorsement_file to the new key, and list {} under [[platform.previous_keys]] with a valid_until",
            path.display(),
            old.key_id,
            args.key_id,
            old.key_id
        );
    }
    bus_schemas::keys::ensure_secret(&args.out.join("pseudonym-secret"))?;
    println!(
        "wrote {dir}/{id}.key (0600), {id}.pub, id-secret and pseudonym-secret (0600, kept if present); platform public key:\n{public}",
        dir = args.out.display(),
        id = args.key_id
    );
    Ok(ExitCode::SUCCESS)
}
