//! The delivery ledger: one row per confirmed delivery, each carrying the hash of the previous
//! row of the same chain, so editing, removing or reordering a row breaks the chain. A chain is
//! an agency's deliveries from one router partition (`chain` = the partition), so routers
//! active on different partitions never wait on each other's heads; appends lock the chain
//! heads they extend, so two routers writing the same chain append in turn.
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use sqlx::{PgPool, Postgres, Row, Transaction};

/// What the ledger records of one delivery. No personal data: the record key is a keyed hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// Receiving agency.
    pub agency: String,
    /// The ledger chain (the router partition the record came through; 0 with one).
    #[serde(default)]
    pub chain: i16,
    /// Grant id.
    pub grant_id: String,
    /// Grant revision.
    pub grant_revision: i64,
    /// Item id.
    pub item: String,
    /// Delivery message id.
    pub message_id: String,
    /// Ingest message id.
    pub ingest_id: String,
    /// Keyed hash of the record key.
    pub key_hash: String,
    /// Record version.
    pub version: i64,
    /// `upsert` or `delete`.
    pub op: String,
    /// Delivered fields.
    pub fields: Vec<String>,
    /// Publishing department.
    pub department: String,
    /// The department's key id.
    pub dept_key_id: String,
    /// The department's batch signature (base64), kept as proof of origin (rows written
    /// before batch signatures hold the message's own signature, and no [`DeptProof`]).
    pub dept_signature: String,
    /// The rest of the department's proof: with the ingest body and salt (kept where the
    /// body is), it proves the record alone.
    #[serde(default)]
    pub dept_proof: Option<DeptProof>,
    /// When the source changed the record (ms), for latency; not part of the ledger row.
    #[serde(default)]
    pub source_time_ms: Option<i64>,
    /// The replay this delivery belongs to (`govbus replay`); `None` for a delivery as the
    /// record arrived.
    #[serde(default)]
    pub replay: Option<String>,
    /// Where a delivery to a linked platform goes (`None`: the agency's queue through
    /// `govbus.deliver`); kept with a delivery that waits, so its retry goes there too.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<Destination>,
}

/// An exchange and routing key a delivery is published with.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Destination {
    /// The exchange (`govbus.platform.<id>`).
    pub exchange: String,
    /// The routing key (`<this platform>.<item>.<shard>`).
    pub routing_key: String,
}

/// What the ledger keeps of a department's batch signature over an ingest message (DESIGN.md:
/// the statement, its signature, the leaf index and the path; never the salt or the body).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeptProof {
    /// Base64 of the signature over the statement (also in [`Entry::dept_signature`]).
    pub signature: String,
    /// The statement: `govbus-batch-v1`, key id, audience, tree size, hex root.
    pub statement: String,
    /// The message's leaf index.
    pub leaf: u32,
    /// The inclusion path, leaf to root (32 bytes a hash).
    pub path: Vec<u8>,
}

/// Hash of a row: SHA-256 over the previous hash and every column, each length-prefixed.
fn row_hash(prev: &[u8], seq: i64, e: &Entry, delivered_at_us: i64) -> Vec<u8> {
    let mut h = Sha256::new();
    let mut put = |b: &[u8]| {
        h.update((b.len() as u64).to_be_bytes());
        h.update(b);
    };
    put(prev);
    put(e.agency.as_bytes());
    put(&seq.to_be_bytes());
    put(e.grant_id.as_bytes());
    put(&e.grant_revision.to_be_bytes());
    put(e.item.as_bytes());
    put(e.message_id.as_bytes());
    put(e.ingest_id.as_bytes());
    put(e.key_hash.as_bytes());
    put(&e.version.to_be_bytes());
    put(e.op.as_bytes());
    put(&(e.fields.len() as u64).to_be_bytes());
    for f in &e.fields {
        put(f.as_bytes());
    }
    put(e.department.as_bytes());
    put(e.dept_key_id.as_bytes());
    put(e.dept_signature.as_bytes());
    put(&delivered_at_us.to_be_bytes());
    // Only replays add this, so rows written before the column existed keep their hash.
    if let Some(r) = &e.replay {
        put(b"replay");
        put(r.as_bytes());
    }
    // Chain 0 is every row written before partitions: those keep their hash.
    if e.chain != 0 {
        put(b"chain");
        put(&e.chain.to_be_bytes());
    }
    // Rows written before batch signatures have no proof and keep their hash.
    if let Some(p) = &e.dept_proof {
        put(b"batch");
        put(p.statement.as_bytes());
        put(&p.leaf.to_be_bytes());
        put(&p.path);
    }
    h.finalize().to_vec()
}

/// Whether `e` is the ledger's unique index refusing a delivery already in it (see
/// [`append_checked`]).
pub fn is_duplicate(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(d) if d.constraint() == Some("ledger_message_id_once"))
}

/// Hash the first row of every chain links to.
pub const GENESIS: [u8; 32] = [0u8; 32];

fn now_us() -> i64 {
    chrono::Utc::now().timestamp_micros()
}

/// Appends confirmed deliveries within `tx`, skipping any already in the ledger (a
/// redelivered message), and raises the version each agency holds of each record
/// (`record_versions`, in the same transaction: a delivery above what its agency holds is
/// not in the ledger, see [`crate::store::prior`]). Returns how many rows
/// were added.
pub async fn append(tx: &mut Transaction<'_, Postgres>, entries: &[&Entry]) -> sqlx::Result<usize> {
    append_checked(tx, entries, true).await
}

/// [`append`] for callers that know the deliveries are not in the ledger (the router's prior
/// check: each is above the version its agency holds): with `look_up` false, the ledger is
/// not searched for them. Should one be
/// there after all (another router, or a duplicate ingest message in a batch before, wrote
/// it meanwhile), the unique index refuses the insert, [`is_duplicate`] says so, and the
/// caller runs the transaction again with `look_up`.
pub async fn append_checked(
    tx: &mut Transaction<'_, Postgres>,
    entries: &[&Entry],
    look_up: bool,
) -> sqlx::Result<usize> {
    if entries.is_empty() {
        return Ok(0);
    }
    let mut chains: Vec<(&str, i16)> = entries
        .iter()
        .map(|e| (e.agency.as_str(), e.chain))
        .collect();
    chains.sort_unstable();
    chains.dedup();
    let (agencies, numbers): (Vec<&str>, Vec<i16>) = chains.iter().copied().unzip();
    // Make sure every chain has a head row, then lock the heads in a fixed order.
    sqlx::query(
        "INSERT INTO ledger_heads (agency, chain, seq, hash) SELECT a, c, 0, $3 FROM unnest($1::text[], $2::smallint[]) AS x(a, c) ON CONFLICT DO NOTHING",
    )
    .bind(&agencies)
    .bind(&numbers)
    .bind(GENESIS.as_slice())
    .execute(&mut **tx)
    .await?;
    let heads = sqlx::query(
        "SELECT h.agency, h.chain, h.seq, h.hash FROM ledger_heads h
           JOIN unnest($1::text[], $2::smallint[]) AS x(a, c) ON h.agency = x.a AND h.chain = x.c
          ORDER BY h.agency, h.chain FOR UPDATE OF h",
    )
    .bind(&agencies)
    .bind(&numbers)
    .fetch_all(&mut **tx)
    .await?;
    let mut head: std::collections::HashMap<(String, i16), (i64, Vec<u8>)> = heads
        .into_iter()
        .map(|r| {
            (
                (r.get::<String, _>(0), r.get::<i16, _>(1)),
                (r.get::<i64, _>(2), r.get::<Vec<u8>, _>(3)),
            )
        })
        .collect();
    let present: std::collections::HashSet<(String, String)> = if look_up {
        let ids: Vec<&str> = entries.iter().map(|e| e.message_id.as_str()).collect();
        let agency_of: Vec<&str> = entries.iter().map(|e| e.agency.as_str()).collect();
        sqlx::query(
            "SELECT l.agency, l.message_id FROM ledger l JOIN unnest($1::text[], $2::text[]) AS d(agency, message_id) USING (agency, message_id)",
        )
        .bind(&agency_of)
        .bind(&ids)
        .fetch_all(&mut **tx)
        .await?
        .into_iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect()
    } else {
        Default::default()
    };
    let at = now_us();
    let mut seen = std::collections::HashSet::new();
    let mut cols = Columns::default();
    for e in entries {
        if !seen.insert((e.agency.as_str(), e.message_id.as_str()))
            || (look_up && present.contains(&(e.agency.clone(), e.message_id.clone())))
        {
            continue;
        }
        let (seq, prev) = head
            .get_mut(&(e.agency.clone(), e.chain))
            .expect("head locked");
        *seq += 1;
        let hash = row_hash(prev, *seq, e, at);
        cols.push(e, *seq, prev.clone(), hash.clone(), at);
        *prev = hash;
    }
    let added = cols.agency.len();
    if added == 0 {
        return Ok(0);
    }
    // One statement (one round trip): the proofs not yet kept, and the rows. Rows already
    // kept (another delivery of the same record, a replay) are left as they are.
    let proofs = Proofs::of(&cols);
    sqlx::query(
        "WITH b AS (
             INSERT INTO dept_batches (id, statement, signature)
             SELECT * FROM unnest($21::bytea[], $22::text[], $23::text[]) ON CONFLICT DO NOTHING
         ), v AS (
             INSERT INTO dept_leaves (batch, leaf, path)
             SELECT * FROM unnest($24::bytea[], $25::int[], $26::bytea[]) ON CONFLICT DO NOTHING
         )
         INSERT INTO ledger (agency, seq, grant_id, grant_revision, item, message_id, ingest_id, key_hash, version, op, fields, department, dept_key_id, dept_signature, delivered_at_us, prev_hash, hash, replay, dept_batch, dept_leaf, chain)
         SELECT a, s, g, gr, i, m, ig, k, v, o, string_to_array(f, E'\\x1f'), d, dk, ds, t, p, h, r, b, lf, c
         FROM unnest($1::text[], $2::bigint[], $3::text[], $4::bigint[], $5::text[], $6::text[], $7::text[], $8::text[], $9::bigint[], $10::text[], $11::text[], $12::text[], $13::text[], $14::text[], $15::bigint[], $16::bytea[], $17::bytea[], $18::text[], $19::bytea[], $20::int[], $27::smallint[])
              AS x(a, s, g, gr, i, m, ig, k, v, o, f, d, dk, ds, t, p, h, r, b, lf, c)",
    )
    .bind(&cols.agency)
    .bind(&cols.seq)
    .bind(&cols.grant)
    .bind(&cols.revision)
    .bind(&cols.item)
    .bind(&cols.message_id)
    .bind(&cols.ingest_id)
    .bind(&cols.key_hash)
    .bind(&cols.version)
    .bind(&cols.op)
    .bind(&cols.fields)
    .bind(&cols.department)
    .bind(&cols.key_id)
    .bind(&cols.signature)
    .bind(&cols.at)
    .bind(&cols.prev)
    .bind(&cols.hash)
    .bind(&cols.replay)
    .bind(&cols.batch)
    .bind(&cols.leaf)
    .bind(&proofs.batch)
    .bind(&proofs.statement)
    .bind(&proofs.signature)
    .bind(&proofs.leaf_batch)
    .bind(&proofs.leaf)
    .bind(&proofs.path)
    .bind(&cols.chain)
    .execute(&mut **tx)
    .await?;
    let mut ha = Vec::with_capacity(head.len());
    let mut hc = Vec::with_capacity(head.len());
    let mut hs = Vec::with_capacity(head.len());
    let mut hh = Vec::with_capacity(head.len());
    for ((a, c), (s, h)) in head {
        ha.push(a);
        hc.push(c);
        hs.push(s);
        hh.push(h);
    }
    sqlx::query(
        "UPDATE ledger_heads h SET seq = x.s, hash = x.h FROM unnest($1::text[], $2::bigint[], $3::bytea[], $4::smallint[]) AS x(a, s, h, c) WHERE h.agency = x.a AND h.chain = x.c",
    )
    .bind(&ha)
    .bind(&hs)
    .bind(&hh)
    .bind(&hc)
    .execute(&mut **tx)
    .await?;
    // One row per record: each agency's newest version of it in this batch.
    // In key order, as every shared row here: concurrent transactions (two partitions, a
    // replay) lock rows in the same order instead of deadlocking.
    let mut held: std::collections::BTreeMap<
        (&str, &str),
        serde_json::Map<String, serde_json::Value>,
    > = std::collections::BTreeMap::new();
    for n in 0..added {
        let version = cols.version[n];
        let agencies = held.entry((cols.item[n], cols.key_hash[n])).or_default();
        let v = agencies.entry(cols.agency[n]).or_insert(version.into());
        if v.as_i64().is_some_and(|v| v < version) {
            *v = version.into();
        }
    }
    let (mut items, mut keys, mut helds) = (Vec::new(), Vec::new(), Vec::new());
    for ((i, k), h) in held {
        items.push(i);
        keys.push(k);
        helds.push(serde_json::Value::Object(h));
    }
    sqlx::query(
        "INSERT INTO record_versions AS r (item, key_hash, held)
         SELECT * FROM unnest($1::text[], $2::text[], $3::jsonb[])
         ON CONFLICT (item, key_hash) DO UPDATE SET held = govbus_held_merge(r.held, EXCLUDED.held)",
    )
    .bind(&items)
    .bind(&keys)
    .bind(&helds)
    .execute(&mut **tx)
    .await?;
    Ok(added)
}

/// The ledger rows to insert, column by column, borrowing the entries' text.
#[derive(Default)]
struct Columns<'e> {
    agency: Vec<&'e str>,
    chain: Vec<i16>,
    seq: Vec<i64>,
    grant: Vec<&'e str>,
    revision: Vec<i64>,
    item: Vec<&'e str>,
    message_id: Vec<&'e str>,
    ingest_id: Vec<&'e str>,
    key_hash: Vec<&'e str>,
    version: Vec<i64>,
    op: Vec<&'e str>,
    fields: Vec<String>,
    department: Vec<&'e str>,
    key_id: Vec<&'e str>,
    signature: Vec<Option<&'e str>>,
    at: Vec<i64>,
    prev: Vec<Vec<u8>>,
    hash: Vec<Vec<u8>>,
    replay: Vec<Option<&'e str>>,
    batch: Vec<Option<[u8; 32]>>,
    leaf: Vec<Option<i32>>,
    /// The department's proof of each row, for [`Proofs`].
    proof: Vec<Option<&'e DeptProof>>,
}

impl<'e> Columns<'e> {
    fn push(&mut self, e: &'e Entry, seq: i64, prev: Vec<u8>, hash: Vec<u8>, at: i64) {
        self.agency.push(&e.agency);
        self.chain.push(e.chain);
        self.seq.push(seq);
        self.grant.push(&e.grant_id);
        self.revision.push(e.grant_revision);
        self.item.push(&e.item);
        self.message_id.push(&e.message_id);
        self.ingest_id.push(&e.ingest_id);
        self.key_hash.push(&e.key_hash);
        self.version.push(e.version);
        self.op.push(&e.op);
        // Field names are schema paths ([A-Za-z0-9_.]), so the unit separator cannot occur.
        self.fields.push(e.fields.join("\u{1f}"));
        self.department.push(&e.department);
        self.key_id.push(&e.dept_key_id);
        let p = e.dept_proof.as_ref();
        // A batch signature is kept once, in `dept_batches`.
        self.signature
            .push(p.is_none().then_some(e.dept_signature.as_str()));
        self.at.push(at);
        self.prev.push(prev);
        self.hash.push(hash);
        self.replay.push(e.replay.as_deref());
        self.batch.push(p.map(|p| batch_id(&p.statement)));
        self.proof.push(p);
        self.leaf.push(p.map(|p| p.leaf as i32));
    }
}

/// A department batch's key in `dept_batches`: the SHA-256 of its statement (which names the
/// key, the audience, the size and the root).
pub fn batch_id(statement: &str) -> [u8; 32] {
    Sha256::digest(statement.as_bytes()).into()
}

/// Each department batch's statement and signature once, and each message's leaf index and
/// path once, however many agencies it is delivered to (migration 0015), in key order (two
/// routers writing the same batch then wait for each other instead of deadlocking).
#[derive(Default)]
struct Proofs<'e> {
    batch: Vec<[u8; 32]>,
    statement: Vec<&'e str>,
    signature: Vec<&'e str>,
    leaf_batch: Vec<[u8; 32]>,
    leaf: Vec<i32>,
    path: Vec<&'e [u8]>,
}

impl<'e> Proofs<'e> {
    /// The proofs of the rows in `cols`, by the batch ids computed there.
    fn of(cols: &Columns<'e>) -> Self {
        let mut batches: std::collections::BTreeMap<[u8; 32], &DeptProof> = Default::default();
        let mut leaves: std::collections::BTreeMap<([u8; 32], u32), &[u8]> = Default::default();
        for (id, p) in cols.batch.iter().zip(&cols.proof) {
            let (Some(id), Some(p)) = (*id, *p) else {
                continue;
            };
            batches.entry(id).or_insert(p);
            leaves.entry((id, p.leaf)).or_insert(&p.path);
        }
        let mut out = Proofs::default();
        for (id, p) in batches {
            out.batch.push(id);
            out.statement.push(&p.statement);
            out.signature.push(&p.signature);
        }
        for ((id, leaf), path) in leaves {
            out.leaf_batch.push(id);
            out.leaf.push(leaf as i32);
            out.path.push(path);
        }
        out
    }
}

/// The first broken row of a chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Broken {
    /// Agency whose chain breaks.
    pub agency: String,
    /// The chain (router partition).
    pub chain: i16,
    /// Sequence number of the first bad row.
    pub seq: i64,
    /// Its message id.
    pub message_id: String,
    /// What is wrong.
    pub problem: String,
}

/// What `verify` found.
#[derive(Debug, Default)]
pub struct Verified {
    /// Chains walked (one per agency and partition).
    pub agencies: usize,
    /// Rows checked.
    pub rows: u64,
    /// The first broken row of each broken chain.
    pub broken: Vec<Broken>,
}

/// Walks every chain (each agency's, per partition) from its first row, recomputing each hash.
pub async fn verify(pool: &PgPool) -> sqlx::Result<Verified> {
    use futures::TryStreamExt;
    let mut out = Verified::default();
    let chains: Vec<(String, i16)> =
        sqlx::query_as("SELECT DISTINCT agency, chain FROM ledger ORDER BY agency, chain")
            .fetch_all(pool)
            .await?;
    for (agency, chain) in chains {
        out.agencies += 1;
        let mut rows = sqlx::query(
            "SELECT l.seq, l.grant_id, l.grant_revision, l.item, l.message_id, l.ingest_id, l.key_hash, l.version, l.op, l.fields, l.department, l.dept_key_id, coalesce(l.dept_signature, b.signature), l.delivered_at_us, l.prev_hash, l.hash, l.replay, b.statement, l.dept_leaf, v.path, l.dept_batch
             FROM ledger l
             LEFT JOIN dept_batches b ON b.id = l.dept_batch
             LEFT JOIN dept_leaves v ON v.batch = l.dept_batch AND v.leaf = l.dept_leaf
             WHERE l.agency = $1 AND l.chain = $2 ORDER BY l.seq",
        )
        .bind(&agency)
        .bind(chain)
        .fetch(pool);
        let mut prev = GENESIS.to_vec();
        let mut expected_seq = 1i64;
        while let Some(r) = rows.try_next().await? {
            out.rows += 1;
            let seq: i64 = r.get(0);
            let e = Entry {
                agency: agency.clone(),
                chain,
                grant_id: r.get(1),
                grant_revision: r.get(2),
                item: r.get(3),
                message_id: r.get(4),
                ingest_id: r.get(5),
                key_hash: r.get(6),
                version: r.get(7),
                op: r.get(8),
                fields: r.get(9),
                department: r.get(10),
                dept_key_id: r.get(11),
                dept_signature: r.get::<Option<String>, _>(12).unwrap_or_default(),
                dept_proof: r.get::<Option<String>, _>(17).map(|statement| DeptProof {
                    signature: r.get::<Option<String>, _>(12).unwrap_or_default(),
                    statement,
                    leaf: r.get::<Option<i32>, _>(18).unwrap_or(-1) as u32,
                    path: r.get::<Option<Vec<u8>>, _>(19).unwrap_or_default(),
                }),
                source_time_ms: None,
                replay: r.get(16),
                to: None,
            };
            let at: i64 = r.get(13);
            let stored_prev: Vec<u8> = r.get(14);
            let stored: Vec<u8> = r.get(15);
            let names_batch = r.get::<Option<Vec<u8>>, _>(20).is_some();
            let problem = if seq != expected_seq {
                Some(format!(
                    "sequence jumps from {} to {seq}: rows are missing",
                    expected_seq - 1
                ))
            } else if names_batch
                && (e.dept_proof.is_none() || r.get::<Option<Vec<u8>>, _>(19).is_none())
            {
                Some(
                    "the department batch or leaf it names is missing from dept_batches or \
                     dept_leaves: proof of origin was removed"
                        .to_string(),
                )
            } else if stored_prev != prev {
                Some("its prev_hash does not match the previous row's hash".to_string())
            } else if stored != row_hash(&prev, seq, &e, at) {
                Some("its contents do not match its hash: the row was edited".to_string())
            } else {
                None
            };
            if let Some(problem) = problem {
                out.broken.push(Broken {
                    agency: agency.clone(),
                    chain,
                    seq,
                    message_id: e.message_id,
                    problem,
                });
                break;
            }
            prev = stored;
            expected_seq += 1;
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry() -> Entry {
        Entry {
            agency: "health".into(),
            chain: 0,
            grant_id: "g".into(),
            grant_revision: 1,
            item: "household".into(),
            message_id: "m".into(),
            ingest_id: "i".into(),
            key_hash: "k".into(),
            version: 3,
            op: "upsert".into(),
            fields: vec!["a".into(), "b.c".into()],
            department: "police".into(),
            dept_key_id: "police-2026".into(),
            dept_signature: "sig".into(),
            dept_proof: Some(DeptProof {
                signature: "sig".into(),
                statement: "govbus-batch-v1\npolice-2026\ningest\n3\n00".into(),
                leaf: 2,
                path: vec![1; 64],
            }),
            source_time_ms: Some(1),
            replay: None,
            to: None,
        }
    }

    /// Every column and the previous hash change a row's hash; the latency clock does not.
    #[test]
    fn row_hash_covers_every_column() {
        let e = entry();
        let base = row_hash(&GENESIS, 1, &e, 7);
        assert_ne!(base, row_hash(&[1u8; 32], 1, &e, 7));
        assert_ne!(base, row_hash(&GENESIS, 2, &e, 7));
        assert_ne!(base, row_hash(&GENESIS, 1, &e, 8));
        let mut f = e.clone();
        f.fields = vec!["a".into(), "b".into(), "c".into()];
        assert_ne!(base, row_hash(&GENESIS, 1, &f, 7));
        let mut v = e.clone();
        v.version = 4;
        assert_ne!(base, row_hash(&GENESIS, 1, &v, 7));
        let mut c = e.clone();
        c.chain = 1;
        assert_ne!(base, row_hash(&GENESIS, 1, &c, 7));
        let mut s = e.clone();
        s.source_time_ms = None;
        assert_eq!(base, row_hash(&GENESIS, 1, &s, 7));
        // The department's proof: statement, leaf index and path.
        for change in [
            |p: &mut DeptProof| p.statement.push('0'),
            |p: &mut DeptProof| p.leaf = 1,
            |p: &mut DeptProof| p.path.truncate(32),
        ] {
            let mut c = e.clone();
            change(c.dept_proof.as_mut().unwrap());
            assert_ne!(base, row_hash(&GENESIS, 1, &c, 7));
        }
    }
}
