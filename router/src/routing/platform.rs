//! The platform's keys and secrets from the `[platform]` section, and the keys `GET /keys`
//! serves (endorsements and trust: `bus_schemas::trust`).
use base64::{engine::general_purpose::STANDARD as B64, Engine};
use bus_schemas::{
    keys,
    trust::{Endorsement, Listed},
    wire::{IdKey, Signer},
};
use chrono::DateTime;

use crate::{
    config::{PlatformConfig, RouterConfig},
    routing::{pseudonym::Pseudonymizer, subjects::SubjectKey},
};

/// The platform's keys: signing deliveries, keyed ids and hashes, pseudonyms.
pub struct Platform {
    /// Signs deliveries.
    pub signer: Signer,
    /// Delivery message ids and record key hashes.
    pub ids: IdKey,
    /// Pseudonyms.
    pub pseudonyms: Pseudonymizer,
    /// The subject index's keyed hashes (from the current pseudonym secret).
    pub subjects: SubjectKey,
    /// The keys `GET /keys` serves (current and previous, with endorsements).
    pub published_keys: Vec<Listed>,
    /// The router partitions (`router.partitions`): a delivery's ledger chain is the
    /// partition of its record's shard.
    pub partitions: u8,
}

impl Platform {
    /// The platform's keys and secrets from the `[platform]` section.
    pub fn load(cfg: &RouterConfig) -> anyhow::Result<Self> {
        let signer = keys::load_signer_as(
            &cfg.platform.key_file,
            &cfg.platform.key_id,
            "platform.key_file",
        )?;
        let pseudonym_secret = keys::load_secret_as(
            &cfg.platform.pseudonym_secret_file,
            "platform.pseudonym_secret_file",
        )?;
        Ok(Platform {
            partitions: cfg.router.partitions,
            published_keys: published(&cfg.platform, &signer)?,
            signer,
            ids: IdKey::new(&keys::load_secret_as(
                &cfg.platform.id_secret_file,
                "platform.id_secret_file",
            )?),
            pseudonyms: Pseudonymizer::versioned(&pseudonym_secret, cfg.platform.pseudonym_version),
            subjects: SubjectKey::from_pseudonym_secret(&pseudonym_secret),
        })
    }
}

/// The keys `GET /keys` serves, from the config: the current key and the previous ones.
pub fn published(cfg: &PlatformConfig, signer: &Signer) -> anyhow::Result<Vec<Listed>> {
    let read_endorsement = |path: &Option<std::path::PathBuf>,
                            key_id: &str|
     -> anyhow::Result<Option<Endorsement>> {
        let Some(p) = path else { return Ok(None) };
        let e: Endorsement = serde_json::from_slice(
            &std::fs::read(p).map_err(|e| anyhow::anyhow!("cannot read {}: {e}", p.display()))?,
        )
        .map_err(|e| anyhow::anyhow!("{} is not an endorsement: {e}", p.display()))?;
        anyhow::ensure!(
            e.key_id == key_id,
            "{} endorses key {}, not {key_id}",
            p.display(),
            e.key_id
        );
        Ok(Some(e))
    };
    let current = B64.encode(signer.verifying_key().as_bytes());
    let endorsement = read_endorsement(&cfg.endorsement_file, &signer.key_id)?;
    if let Some(e) = &endorsement {
        anyhow::ensure!(
            e.public_key == current,
            "platform.endorsement_file endorses another public key than platform.key_file's"
        );
    }
    let mut out = vec![Listed {
        key_id: signer.key_id.clone(),
        algorithm: "Ed25519".into(),
        public_key: current,
        current: true,
        valid_until: None,
        endorsement,
    }];
    for p in &cfg.previous_keys {
        bus_schemas::keys::parse_public_key(&p.public_key).map_err(|e| {
            anyhow::anyhow!(
                "platform.previous_keys `{}`: the public key is {e}",
                p.key_id
            )
        })?;
        DateTime::parse_from_rfc3339(&p.valid_until).map_err(|e| {
            anyhow::anyhow!(
                "platform.previous_keys `{}`: valid_until `{}` is not RFC 3339 ({e})",
                p.key_id,
                p.valid_until
            )
        })?;
        out.push(Listed {
            key_id: p.key_id.clone(),
            algorithm: "Ed25519".into(),
            public_key: p.public_key.clone(),
            current: false,
            valid_until: Some(p.valid_until.clone()),
            endorsement: read_endorsement(&p.endorsement_file, &p.key_id)?,
        });
    }
    Ok(out)
}
