//! Key material of departments and the platform: Ed25519 key pairs and secrets, as base64
//! text files. Private files are written with mode 0600 and their contents never logged.
use std::{fs, io::Write, os::unix::fs::OpenOptionsExt, path::Path};

use base64::{engine::general_purpose::STANDARD as B64, Engine};

use crate::wire::Signer;

/// A key file that cannot be written or read; the message names the file and what to do.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct KeyError(String);

/// Creates a new file readable by its owner only (0600); an existing file is an error.
pub fn create_private(path: &Path) -> std::io::Result<fs::File> {
    fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
}

fn write_private(path: &Path, text: &str) -> Result<(), KeyError> {
    let mut f = create_private(path).map_err(|e| {
        KeyError(format!(
            "cannot create {}: {e} (an existing key is never overwritten)",
            path.display()
        ))
    })?;
    f.write_all(text.as_bytes())
        .and_then(|()| f.sync_all())
        .map_err(|e| KeyError(format!("cannot write {}: {e}", path.display())))
}

fn random<const N: usize>() -> Result<[u8; N], KeyError> {
    let mut out = [0u8; N];
    getrandom::fill(&mut out).map_err(|e| KeyError(format!("no randomness: {e}")))?;
    Ok(out)
}

/// Writes a new 32-byte random secret to `path` (0600) unless the file exists.
pub fn ensure_secret(path: &Path) -> Result<(), KeyError> {
    if path.exists() {
        return Ok(());
    }
    write_private(path, &format!("{}\n", B64.encode(random::<32>()?)))
}

/// Writes `<key_id>.key` (private, 0600), `<key_id>.pub` (for the catalogue) and, if absent,
/// `id-secret` (0600) into `dir`. Returns the public key in base64.
pub fn keygen(dir: &Path, key_id: &str) -> Result<String, KeyError> {
    if !crate::wire::valid_id(&key_id.replace('-', "_")) {
        return Err(KeyError(format!(
            "key id `{key_id}` must be lowercase letters, digits, _ or -, starting with a letter"
        )));
    }
    fs::create_dir_all(dir)
        .map_err(|e| KeyError(format!("cannot create {}: {e}", dir.display())))?;
    let seed = random::<32>()?;
    let signer = Signer::from_seed(key_id, &seed);
    let public = B64.encode(signer.verifying_key().to_bytes());
    write_private(
        &dir.join(format!("{key_id}.key")),
        &format!("{}\n", B64.encode(seed)),
    )?;
    fs::write(dir.join(format!("{key_id}.pub")), format!("{public}\n"))
        .map_err(|e| KeyError(format!("cannot write {key_id}.pub: {e}")))?;
    ensure_secret(&dir.join("id-secret"))?;
    Ok(public)
}

fn read_b64(path: &Path, what: &str) -> Result<Vec<u8>, KeyError> {
    let text = fs::read_to_string(path).map_err(|e| {
        KeyError(format!(
            "cannot read {what} {}: {e}; `keygen` writes one",
            path.display()
        ))
    })?;
    B64.decode(text.trim()).map_err(|_| {
        KeyError(format!(
            "{what} {} is not base64 text as `keygen` writes it",
            path.display()
        ))
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

/// Loads a signing key; `what` names the config key that points at it, for errors.
pub fn load_signer_as(path: &Path, key_id: &str, what: &str) -> Result<Signer, KeyError> {
    warn_if_readable(path);
    let seed: [u8; 32] = read_b64(path, what)?.try_into().map_err(|_| {
        KeyError(format!(
            "{what} {} does not hold a 32-byte Ed25519 key",
            path.display()
        ))
    })?;
    Ok(Signer::from_seed(key_id, &seed))
}

/// Loads a secret of at least 32 bytes; `what` names the config key, for errors.
pub fn load_secret_as(path: &Path, what: &str) -> Result<Vec<u8>, KeyError> {
    warn_if_readable(path);
    let s = read_b64(path, what)?;
    if s.len() < 32 {
        return Err(KeyError(format!(
            "{what} {} holds {} bytes; it needs at least 32",
            path.display(),
            s.len()
        )));
    }
    Ok(s)
}

/// Loads the signing key named by `signing.key_file`.
pub fn load_signer(path: &Path, key_id: &str) -> Result<Signer, KeyError> {
    load_signer_as(path, key_id, "signing.key_file")
}

/// Loads the id secret named by `signing.id_secret_file`.
pub fn load_id_secret(path: &Path) -> Result<Vec<u8>, KeyError> {
    load_secret_as(path, "signing.id_secret_file")
}

/// Parses a base64 Ed25519 public key (as `keygen` prints it and the catalogue lists it).
pub fn parse_public_key(b64: &str) -> Result<ed25519_dalek::VerifyingKey, String> {
    let raw = B64
        .decode(b64.trim())
        .map_err(|_| "not base64".to_string())?;
    let raw: [u8; 32] = raw
        .try_into()
        .map_err(|_| "not 32 bytes (an Ed25519 public key)".to_string())?;
    ed25519_dalek::VerifyingKey::from_bytes(&raw).map_err(|_| "not a valid Ed25519 key".into())
}
