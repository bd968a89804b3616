//! The department's key material: an Ed25519 key pair and the id secret, as base64 text
//! files. Private files are written with mode 0600 and their contents never logged.
use std::{fs, io::Write, os::unix::fs::OpenOptionsExt, path::Path};

use base64::{engine::general_purpose::STANDARD as B64, Engine};
use bus_schemas::wire::Signer;

fn write_private(path: &Path, text: &str) -> anyhow::Result<()> {
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| {
            anyhow::anyhow!(
                "cannot create {}: {e} (an existing key is never overwritten)",
                path.display()
            )
        })?;
    f.write_all(text.as_bytes())?;
    f.sync_all()?;
    Ok(())
}

/// Writes `<key_id>.key` (private, 0600), `<key_id>.pub` (for the catalogue) and, if absent,
/// `id-secret` (0600) into `dir`. Returns the public key in base64.
pub fn keygen(dir: &Path, key_id: &str) -> anyhow::Result<String> {
    if !bus_schemas::wire::valid_id(&key_id.replace('-', "_")) {
        anyhow::bail!("key id `{key_id}` must be lowercase letters, digits, _ or -");
    }
    fs::create_dir_all(dir)?;
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed).map_err(|e| anyhow::anyhow!("no randomness: {e}"))?;
    let signer = Signer::from_seed(key_id, &seed);
    let public = B64.encode(signer.verifying_key().to_bytes());
    write_private(
        &dir.join(format!("{key_id}.key")),
        &format!("{}\n", B64.encode(seed)),
    )?;
    fs::write(dir.join(format!("{key_id}.pub")), format!("{public}\n"))?;
    let secret_path = dir.join("id-secret");
    if !secret_path.exists() {
        let mut secret = [0u8; 32];
        getrandom::fill(&mut secret).map_err(|e| anyhow::anyhow!("no randomness: {e}"))?;
        write_private(&secret_path, &format!("{}\n", B64.encode(secret)))?;
    }
    Ok(public)
}

fn read_b64(path: &Path, what: &str) -> anyhow::Result<Vec<u8>> {
    let text = fs::read_to_string(path).map_err(|e| {
        anyhow::anyhow!(
            "cannot read {what} {}: {e}; `govbus-adapter keygen` writes one",
            path.display()
        )
    })?;
    B64.decode(text.trim()).map_err(|_| {
        anyhow::anyhow!(
            "{what} {} is not base64 text as `govbus-adapter keygen` writes it",
            path.display()
        )
    })
}

fn warn_if_readable(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    if let Ok(m) = fs::metadata(path) {
        if m.permissions().mode() & 0o077 != 0 {
            tracing::warn!(file = %path.display(), "secret file is readable by others; chmod 600 it");
        }
    }
}

/// Loads the signing key.
pub fn load_signer(path: &Path, key_id: &str) -> anyhow::Result<Signer> {
    warn_if_readable(path);
    let seed: [u8; 32] = read_b64(path, "signing.key_file")?
        .try_into()
        .map_err(|_| {
            anyhow::anyhow!(
                "signing.key_file {} does not hold a 32-byte Ed25519 key",
                path.display()
            )
        })?;
    Ok(Signer::from_seed(key_id, &seed))
}

/// Loads the id secret (at least 32 bytes).
pub fn load_id_secret(path: &Path) -> anyhow::Result<Vec<u8>> {
    warn_if_readable(path);
    let s = read_b64(path, "signing.id_secret_file")?;
    if s.len() < 32 {
        anyhow::bail!(
            "signing.id_secret_file {} holds {} bytes; it needs at least 32",
            path.display(),
            s.len()
        );
    }
    Ok(s)
}
