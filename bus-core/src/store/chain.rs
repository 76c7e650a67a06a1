//! The tamper-evident trace: every trace event is chained (SHA-256 over its stored fields, the
//! hash of the store's previous event and of its dossier's previous event), the chain heads are
//! kept in `trace_heads`, the bus signs checkpoints of the store head (Ed25519) into
//! `trace_checkpoints`, and [`verify_store`] / [`verify_dossier`] recompute the chains.
//!
//! The chain is computed inside the write transaction ([`chain_events_in`], called by
//! `insert_events_in`): SQLite serialises writers, and on PostgreSQL every writing transaction
//! holds the store's write lock ([`super::db::Db::begin`]), so the heads read there are the
//! current ones even with several processes writing one store. Events written before migration 4 carry no
//! chain (`chain_seq` NULL); their number is recorded in `trace_chain_start` when the chain
//! started, and [`verify_store`] says how many there are.

use crate::store::db::{Backend, Db, DbError, OwnedValue, Row as DbRow, Value};
use std::collections::{HashMap, HashSet};

use crate::params;
use crate::store::db::OptionalExtension;
use ed25519_dalek::{Signature, Signer, Verifier};
pub use ed25519_dalek::{SigningKey, VerifyingKey};
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::trace::event::TraceEvent;

/// Prefix of every event hash (the version of the encoding).
const EVENT_DOMAIN: &[u8] = b"lienthong-trace-event-v1\0";
/// Prefix of every signed checkpoint.
const CHECKPOINT_DOMAIN: &[u8] = b"lienthong-trace-checkpoint-v1\0";
/// The scope of the store head in `trace_heads` (dossier heads are `d:<ma_ho_so>`).
const STORE_SCOPE: &str = "*";

/// The `trace_heads` scope of a dossier.
fn dossier_scope(ma: &str) -> String {
    format!("d:{ma}")
}

/// The columns an event hash covers, in order: the event's stored fields, then its chain fields
/// (`chain_seq`, `chain_prev`, `dossier_prev`). `chain_hash` follows them in every query.
pub const CHAINED_COLUMNS: &str = "event_id, at_ms, at, ma_ho_so, message_id, correlation_id, kind, event, component, from_unit, to_unit, attempt, status, reason, chain_seq, chain_prev, dossier_prev";

/// Number of columns in [`CHAINED_COLUMNS`].
const N_CHAINED: usize = 17;

/// SHA-256 over a canonical, type-tagged, length-prefixed encoding of `fields` (the values of
/// [`CHAINED_COLUMNS`] as SQLite stores them), so that writing and verifying hash the same bytes.
pub fn event_hash(fields: &[Value<'_>]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(EVENT_DOMAIN);
    for v in fields {
        match v {
            Value::Null => h.update([0u8]),
            Value::Int(i) => {
                h.update([1u8]);
                h.update(i.to_be_bytes());
            }
            Value::Real(f) => {
                h.update([4u8]);
                h.update(f.to_bits().to_be_bytes());
            }
            Value::Text(t) => {
                h.update([2u8]);
                h.update((t.len() as u64).to_be_bytes());
                h.update(t.as_bytes());
            }
            Value::Blob(b) => {
                h.update([3u8]);
                h.update((b.len() as u64).to_be_bytes());
                h.update(b);
            }
        }
    }
    h.finalize().into()
}

/// The chain fields of one event about to be written.
pub struct Link {
    /// Position in the store's chain (1 = first chained event).
    pub seq: i64,
    /// Hash of the store's previous event (None for the first).
    pub prev: Option<[u8; 32]>,
    /// Hash of the dossier's previous event (None for its first, or an event without dossier).
    pub dossier_prev: Option<[u8; 32]>,
    /// This event's hash.
    pub hash: [u8; 32],
}

/// The values of [`CHAINED_COLUMNS`] of event `e` at position `seq` after `prev` (the store's
/// previous event) and `dossier_prev` (its dossier's), as they are hashed and stored.
fn chained_fields<'a>(
    e: &'a TraceEvent,
    seq: i64,
    prev: &'a Option<[u8; 32]>,
    dossier_prev: &'a Option<[u8; 32]>,
) -> [Value<'a>; N_CHAINED] {
    fn opt(s: &Option<String>) -> Value<'_> {
        match s {
            Some(s) => Value::Text(s),
            None => Value::Null,
        }
    }
    let int = |i: Option<i64>| i.map_or(Value::Null, Value::Int);
    fn blob(b: &Option<[u8; 32]>) -> Value<'_> {
        match b {
            Some(b) => Value::Blob(&b[..]),
            None => Value::Null,
        }
    }
    [
        Value::Text(&e.event_id),
        Value::Int(e.at_ms),
        Value::Text(&e.at),
        opt(&e.ma_ho_so),
        opt(&e.message_id),
        opt(&e.correlation_id),
        opt(&e.kind),
        Value::Text(e.event.as_str()),
        Value::Text(&e.component),
        opt(&e.from),
        opt(&e.to),
        int(e.attempt.map(i64::from)),
        int(e.status.map(i64::from)),
        opt(&e.reason),
        Value::Int(seq),
        blob(prev),
        blob(dossier_prev),
    ]
}

/// Append the row `trace_events` stores for `e` linked by `l` to `out`: the values of
/// [`CHAINED_COLUMNS`], then `chain_hash`.
pub fn push_row<'a>(out: &mut Vec<Value<'a>>, e: &'a TraceEvent, l: &'a Link) {
    out.extend(chained_fields(e, l.seq, &l.prev, &l.dossier_prev));
    out.push(Value::Blob(&l.hash[..]));
}

/// Compute an event's link from the current heads.
fn link(e: &TraceEvent, seq: i64, prev: Option<[u8; 32]>, dossier_prev: Option<[u8; 32]>) -> Link {
    let hash = event_hash(&chained_fields(e, seq, &prev, &dossier_prev));
    Link {
        seq,
        prev,
        dossier_prev,
        hash,
    }
}

/// A head read from `trace_heads`.
fn read_head(c: &Db, scope: &str) -> Result<Option<(i64, [u8; 32])>, DbError> {
    let row: Option<(i64, Vec<u8>)> = c
        .prepare_cached("SELECT seq, hash FROM trace_heads WHERE scope = ?1")?
        .query_row(params![scope], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?;
    Ok(row.and_then(|(s, h)| <[u8; 32]>::try_from(h.as_slice()).ok().map(|h| (s, h))))
}

/// A write of every event of a call at once ([`chain_events_in`]) and, in the same statement,
/// of the chain heads they move: `(rows, heads, seq)`, where `heads` are the `(scope, hash)`
/// pairs to store at position `seq` (the store head first). `Ok(true)` when every row and the
/// heads were written, `Ok(false)` when none was (one of the rows was already there).
pub type InsertAll<'f> =
    &'f mut dyn FnMut(&[(&TraceEvent, Link)], &[(String, [u8; 32])], i64) -> Result<bool, DbError>;

/// The heads of the store and of `dossiers` in one statement (PostgreSQL: one round trip under
/// the store's write lock however many dossiers a write names; the scopes go as one JSON array,
/// so the statement has one shape and is prepared once).
fn read_heads<'e>(c: &Db, dossiers: &[&'e str]) -> Result<Heads<'e>, DbError> {
    let scopes: Vec<String> = std::iter::once(STORE_SCOPE.to_string())
        .chain(
            dossiers
                .iter()
                .map(|ma| pg_text(&dossier_scope(ma)).into_owned()),
        )
        .collect();
    let scopes = serde_json::to_string(&scopes).map_err(|e| DbError::Other(e.to_string()))?;
    let mut found: HashMap<String, (i64, [u8; 32])> = HashMap::new();
    c.prepare_cached(
        "SELECT h.scope, h.seq, h.hash FROM jsonb_array_elements_text(?1::text::jsonb) AS s (scope)
         JOIN trace_heads h ON h.scope = s.scope",
    )?
    .for_each(params![scopes], |r| {
        let (scope, seq, hash): (String, i64, Vec<u8>) = (r.get(0)?, r.get(1)?, r.get(2)?);
        if let Ok(hash) = <[u8; 32]>::try_from(hash.as_slice()) {
            found.insert(scope, (seq, hash));
        }
        Ok(true)
    })?;
    Ok(Heads {
        store: found.get(STORE_SCOPE).copied(),
        dossiers: dossiers
            .iter()
            .map(|ma| {
                let scope = pg_text(&dossier_scope(ma)).into_owned();
                (*ma, found.get(&scope).map(|(_, h)| *h))
            })
            .collect(),
    })
}

/// The store head and dossiers' heads as read before a write.
struct Heads<'e> {
    /// `(seq, hash)` of the store head.
    store: Option<(i64, [u8; 32])>,
    /// Each dossier's head hash.
    dossiers: Vec<(&'e str, Option<[u8; 32]>)>,
}

/// Chain and write `events` inside the caller's transaction: the store head and the heads of
/// the dossiers the events name are read once and written once per call, not per event. On
/// PostgreSQL every head is read in one statement and written in one (with the events
/// themselves when `insert_all` writes them); on SQLite one point read and one write per head.
/// `insert(event, link)` writes one row and returns how many rows it wrote (0: a duplicate
/// `event_id`, which does not advance the chain).
///
/// `insert_all`, when given, is tried first: it gets every event linked as if none were a
/// duplicate and the heads they move, and writes them all (`Ok(true)`) or none (`Ok(false)`:
/// one was a duplicate). On PostgreSQL the events not stored yet are then tried at once again;
/// else `insert` writes them one by one, and the heads follow.
pub fn chain_events_in(
    c: &Db,
    events: &[TraceEvent],
    insert_all: Option<InsertAll<'_>>,
    mut insert: impl FnMut(&TraceEvent, &Link) -> Result<usize, DbError>,
) -> Result<(), DbError> {
    if events.is_empty() {
        return Ok(());
    }
    // Dossier heads: read once, written once.
    let mut dossiers: HashMap<&str, (Option<[u8; 32]>, bool)> = HashMap::new();
    // On PostgreSQL each statement is a round trip under the store's write lock: every head the
    // events need is read in one, and they are written in one. On SQLite the single point
    // reads and writes are cheaper than the combined statements (measured: the HTTP-adapter
    // path took more CPU per dossier with them, BENCHMARKS.md, 2026-12-05 night).
    let combined = c.backend() == Backend::Postgres;
    let store = if combined {
        let mut names: Vec<&str> = Vec::new();
        for ma in events.iter().filter_map(|e| e.ma_ho_so.as_deref()) {
            if !names.contains(&ma) {
                names.push(ma);
            }
        }
        let heads = read_heads(c, &names)?;
        for (ma, h) in heads.dossiers {
            dossiers.insert(ma, (h, false));
        }
        heads.store
    } else {
        read_head(c, STORE_SCOPE)?
    };
    let (mut seq, mut prev) = match store {
        Some((s, h)) => (s, Some(h)),
        None => (0, None),
    };
    let start_seq = seq;
    // Every event linked as if it were new, written at once with the heads they move.
    if let Some(insert_all) = insert_all {
        if all_at_once(c, events, (seq, prev, &dossiers), &mut *insert_all)? {
            return Ok(());
        }
        // Some were there already (a redelivered trace message, a write run again): on
        // PostgreSQL find which in one statement and write the others at once, rather than a
        // whole batch one round trip per event.
        if combined {
            let fresh = not_stored(c, events)?;
            if fresh.is_empty()
                || (fresh.len() < events.len()
                    && all_at_once(c, &fresh, (seq, prev, &dossiers), insert_all)?)
            {
                return Ok(());
            }
        }
    }
    link_events(c, events, (&mut seq, &mut prev, &mut dossiers), |e, l| {
        Ok(insert(e, &l)? > 0)
    })?;
    if seq == start_seq {
        return Ok(());
    }
    let heads = moved_heads(prev, dossiers);
    if combined {
        // On PostgreSQL every head in one statement.
        c.prepare_cached(&upsert_heads_sql(1, None))?
            .execute(params![heads_json(&heads)?, seq])?;
    } else {
        for (scope, h) in &heads {
            write_head(c, scope, seq, h)?;
        }
    }
    Ok(())
}

/// Each dossier's head hash while events are linked, with whether it moved.
type DossierHeads<'e> = HashMap<&'e str, (Option<[u8; 32]>, bool)>;

/// Link `events` from the heads `(seq, prev, dossiers)` as if each were new and hand them, with
/// the heads they move, to `insert_all`: its answer (all written, or none).
fn all_at_once(
    c: &Db,
    events: &[TraceEvent],
    (seq, prev, dossiers): (i64, Option<[u8; 32]>, &DossierHeads<'_>),
    insert_all: InsertAll<'_>,
) -> Result<bool, DbError> {
    let (mut s, mut p) = (seq, prev);
    let mut heads: DossierHeads<'_> = dossiers.iter().map(|(k, v)| (*k, *v)).collect();
    let mut rows = Vec::with_capacity(events.len());
    link_events(c, events, (&mut s, &mut p, &mut heads), |e, l| {
        rows.push((e, l));
        Ok(true)
    })?;
    insert_all(&rows, &moved_heads(p, heads), s)
}

/// The events of `events` not in the store yet, the first of each repeated event id (PostgreSQL:
/// one statement).
fn not_stored(c: &Db, events: &[TraceEvent]) -> Result<Vec<TraceEvent>, DbError> {
    let ids: Vec<std::borrow::Cow<'_, str>> = events.iter().map(|e| pg_text(&e.event_id)).collect();
    let ids_json = serde_json::to_string(&ids).map_err(|e| DbError::Other(e.to_string()))?;
    let mut seen: HashSet<String> = HashSet::new();
    c.prepare_cached(
        "SELECT t.event_id FROM jsonb_array_elements_text(?1::text::jsonb) AS s (id)
         JOIN trace_events t ON t.event_id = s.id",
    )?
    .for_each(params![ids_json], |r| {
        seen.insert(r.get(0)?);
        Ok(true)
    })?;
    Ok(events
        .iter()
        .zip(ids)
        .filter(|(_, id)| seen.insert(id.to_string()))
        .map(|(e, _)| e.clone())
        .collect())
}

/// The heads to store after linking: the store head `prev` first, then each dossier head that
/// moved, as `(scope, hash)`.
fn moved_heads(
    prev: Option<[u8; 32]>,
    dossiers: HashMap<&str, (Option<[u8; 32]>, bool)>,
) -> Vec<(String, [u8; 32])> {
    let store = prev.map(|h| (STORE_SCOPE.to_string(), h));
    let moved = dossiers
        .into_iter()
        .filter_map(|(ma, (h, changed))| h.filter(|_| changed).map(|h| (dossier_scope(ma), h)));
    store.into_iter().chain(moved).collect()
}

/// The upsert of heads into `trace_heads` (PostgreSQL): parameter `?first` is the heads as a
/// JSON array of `{"scope", "hash"}` ([`heads_json`]), `?first+1` the `seq` they share. With
/// `only_if`, a condition the rows are written under. One shape for any number of heads, so
/// the statement is prepared once.
pub fn upsert_heads_sql(first: usize, only_if: Option<&str>) -> String {
    format!(
        "INSERT INTO trace_heads (scope, seq, hash)
         SELECT h.scope, ?{seq}::bigint, decode(h.hash, 'hex')
         FROM jsonb_to_recordset(?{first}::text::jsonb) AS h (scope text, hash text) WHERE {cond}
         ON CONFLICT (scope) DO UPDATE SET seq = excluded.seq, hash = excluded.hash",
        seq = first + 1,
        cond = only_if.unwrap_or("true")
    )
}

/// Text as PostgreSQL stores it: its text (and JSON) cannot hold U+0000, which SQLite's can;
/// that one character is replaced, as the store's text parameters replace it.
pub fn pg_text(s: &str) -> std::borrow::Cow<'_, str> {
    if s.contains('\0') {
        std::borrow::Cow::Owned(s.replace('\0', "\u{fffd}"))
    } else {
        std::borrow::Cow::Borrowed(s)
    }
}

/// `heads` as [`upsert_heads_sql`] takes them: `[{"scope": …, "hash": "<hex>"}, …]`.
pub fn heads_json(heads: &[(String, [u8; 32])]) -> Result<String, DbError> {
    #[derive(Serialize)]
    struct H<'a> {
        scope: std::borrow::Cow<'a, str>,
        hash: String,
    }
    let rows: Vec<H<'_>> = heads
        .iter()
        .map(|(scope, h)| H {
            scope: pg_text(scope),
            hash: hex(h),
        })
        .collect();
    serde_json::to_string(&rows).map_err(|e| DbError::Other(e.to_string()))
}

/// The chain heads while events are linked: the store's `seq` and hash, and each dossier's
/// head hash with whether it moved.
type Linking<'a, 'e> = (
    &'a mut i64,
    &'a mut Option<[u8; 32]>,
    &'a mut HashMap<&'e str, (Option<[u8; 32]>, bool)>,
);

/// Link `events` one after another from the heads, reading a dossier's head from the store the
/// first time the dossier is met; `keep(event, link)` writes the event and says whether it was
/// written (a repeated event is not, and does not advance the heads).
fn link_events<'e>(
    c: &Db,
    events: &'e [TraceEvent],
    (seq, prev, dossiers): Linking<'_, 'e>,
    mut keep: impl FnMut(&'e TraceEvent, Link) -> Result<bool, DbError>,
) -> Result<(), DbError> {
    for e in events {
        let dprev = match e.ma_ho_so.as_deref() {
            Some(ma) => {
                if !dossiers.contains_key(ma) {
                    let h = read_head(c, &dossier_scope(ma))?.map(|(_, h)| h);
                    dossiers.insert(ma, (h, false));
                }
                dossiers.get(ma).and_then(|(h, _)| *h)
            }
            None => None,
        };
        let l = link(e, *seq + 1, *prev, dprev);
        let (next, hash) = (l.seq, l.hash);
        if !keep(e, l)? {
            continue;
        }
        (*seq, *prev) = (next, Some(hash));
        if let Some(ma) = e.ma_ho_so.as_deref() {
            dossiers.insert(ma, (Some(hash), true));
        }
    }
    Ok(())
}

/// Write one head of `trace_heads`.
fn write_head(c: &Db, scope: &str, seq: i64, hash: &[u8; 32]) -> Result<usize, DbError> {
    c.prepare_cached(
        "INSERT INTO trace_heads (scope, seq, hash) VALUES (?1, ?2, ?3)
         ON CONFLICT (scope) DO UPDATE SET seq = excluded.seq, hash = excluded.hash",
    )?
    .execute(params![scope, seq, &hash[..]])
}

/// Read an Ed25519 signing key from `reference`: `file:/path` or a plain path. The file holds a
/// PKCS#8 PEM key (`openssl genpkey -algorithm ed25519`), 32 raw bytes, or their hex or base64.
/// The one place a secret reference is parsed, so it can be swapped for the general one.
pub fn load_signing_key(reference: &str) -> Result<SigningKey, String> {
    let path = reference.strip_prefix("file:").unwrap_or(reference);
    let bytes =
        std::fs::read(path).map_err(|e| format!("cannot read the signing key {path}: {e}"))?;
    parse_signing_key(&bytes).map_err(|e| format!("the signing key {path}: {e}"))
}

/// Parse a signing key's bytes (see [`load_signing_key`]).
pub fn parse_signing_key(bytes: &[u8]) -> Result<SigningKey, String> {
    use base64::Engine;
    use ed25519_dalek::pkcs8::DecodePrivateKey;
    if bytes.len() == 32 {
        let mut k = [0u8; 32];
        k.copy_from_slice(bytes);
        return Ok(SigningKey::from_bytes(&k));
    }
    let text = std::str::from_utf8(bytes)
        .map_err(|_| "neither 32 raw bytes nor text".to_string())?
        .trim();
    if text.starts_with("-----BEGIN") {
        return SigningKey::from_pkcs8_pem(text)
            .map_err(|e| format!("not an Ed25519 PKCS#8 PEM key: {e}"));
    }
    let raw = if text.len() == 64 && text.bytes().all(|b| b.is_ascii_hexdigit()) {
        (0..32)
            .map(|i| u8::from_str_radix(&text[2 * i..2 * i + 2], 16))
            .collect::<Result<Vec<u8>, _>>()
            .map_err(|e| e.to_string())?
    } else {
        base64::engine::general_purpose::STANDARD
            .decode(text)
            .map_err(|_| "not PEM, hex or base64".to_string())?
    };
    let k: [u8; 32] = raw
        .as_slice()
        .try_into()
        .map_err(|_| format!("{} bytes, expected 32", raw.len()))?;
    Ok(SigningKey::from_bytes(&k))
}

/// The id of a public key: the first 8 bytes of its SHA-256, in hex.
pub fn key_id(key: &VerifyingKey) -> String {
    hex(&Sha256::digest(key.as_bytes())[..8])
}

/// Lower-case hex.
pub fn hex(b: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(2 * b.len());
    for x in b {
        s.push(DIGITS[usize::from(x >> 4)] as char);
        s.push(DIGITS[usize::from(x & 15)] as char);
    }
    s
}

/// The bytes a checkpoint's signature covers.
fn checkpoint_message(at_ms: i64, count: i64, head: &[u8]) -> Vec<u8> {
    let mut m = CHECKPOINT_DOMAIN.to_vec();
    m.extend_from_slice(&at_ms.to_be_bytes());
    m.extend_from_slice(&count.to_be_bytes());
    m.extend_from_slice(head);
    m
}

/// Write a checkpoint of the store head (signed when `key` is given) unless the head has not
/// moved since the latest checkpoint. Returns the number of chained events it covers, if
/// written. Runs inside the caller's transaction (the group commit).
pub fn write_checkpoint_in(
    c: &Db,
    key: Option<&SigningKey>,
    at_ms: i64,
) -> Result<Option<i64>, DbError> {
    let Some((count, head)) = read_head(c, STORE_SCOPE)? else {
        return Ok(None);
    };
    let last: Option<i64> = c
        .query_row(
            "SELECT event_count FROM trace_checkpoints ORDER BY id DESC LIMIT 1",
            params![],
            |r| r.get(0),
        )
        .optional()?;
    if last == Some(count) {
        return Ok(None);
    }
    let (kid, public, sig) = match key {
        Some(k) => {
            let s = k.sign(&checkpoint_message(at_ms, count, &head));
            let v = k.verifying_key();
            (
                Some(key_id(&v)),
                Some(v.as_bytes().to_vec()),
                Some(s.to_bytes().to_vec()),
            )
        }
        None => (None, None, None),
    };
    c.execute(
        "INSERT INTO trace_checkpoints (at_ms, event_count, head_hash, key_id, public_key, signature) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        params![at_ms, count, &head[..], kid, public, sig],
    )?;
    Ok(Some(count))
}

/// What is wrong with one event of the chain.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "snake_case")]
pub enum BreakKind {
    /// The event's fields no longer hash to its stored hash.
    Edited,
    /// Events are missing before this one (a gap in `chain_seq`, or a link to a hash no event
    /// carries), or at the end of the chain (the head or a checkpoint counts more events).
    Deleted,
    /// The event does not belong to the chain (a repeated position, or no chain fields although
    /// written after the chain started).
    Inserted,
    /// The link to the previous event does not match (that event was edited and its hash
    /// recomputed, or this one was forged with a recomputed hash).
    Relinked,
    /// A checkpoint's signature does not verify, or was made with another key than the
    /// configured one.
    BadSignature,
}

/// One broken link.
#[derive(Debug, Clone, Serialize)]
pub struct Break {
    /// What kind of break.
    pub kind: BreakKind,
    /// The event where it shows (None: at the end of the chain, or a checkpoint).
    pub event_id: Option<String>,
    /// Its time (RFC 3339), as stored.
    pub at: Option<String>,
    /// Its dossier.
    pub ma_ho_so: Option<String>,
    /// Its position in the chain, as stored.
    pub seq: Option<i64>,
    /// In words.
    pub detail: String,
}

/// What [`verify_store`] found.
#[derive(Debug, Clone, Serialize)]
pub struct StoreReport {
    /// Events that carry a chain and were checked.
    pub checked: u64,
    /// Events written before the chain started (not verifiable), as recorded at the upgrade.
    pub unchained_before: i64,
    /// When the chain started (ms since the epoch), if the store records it.
    pub chain_started_ms: Option<i64>,
    /// Checkpoints found (from the start of the checked range on).
    pub checkpoints: u64,
    /// Of them, signed ones whose signature verified.
    pub checkpoints_signed_ok: u64,
    /// Of them, unsigned ones.
    pub checkpoints_unsigned: u64,
    /// Whether the signatures were checked against a configured key (else only against the key
    /// each checkpoint names).
    pub trusted_key: Option<String>,
    /// Broken links, first first (at most [`MAX_BREAKS`]).
    pub breaks: Vec<Break>,
}

impl StoreReport {
    /// Everything verified.
    pub fn ok(&self) -> bool {
        self.breaks.is_empty()
    }
}

/// At most this many breaks are listed.
pub const MAX_BREAKS: usize = 50;

/// One checkpoint as read back: time, event count, head hash, public key, signature.
type CheckpointRow = (i64, i64, Vec<u8>, Option<Vec<u8>>, Option<Vec<u8>>);

/// One chained row as read back.
struct Row {
    event_id: String,
    at: String,
    ma: Option<String>,
    seq: Option<i64>,
    prev: Option<Vec<u8>>,
    dossier_prev: Option<Vec<u8>>,
    stored: Option<Vec<u8>>,
    computed: [u8; 32],
}

/// Read one row of `SELECT CHAINED_COLUMNS, chain_hash`.
fn read_row(r: &DbRow<'_>) -> Result<Row, DbError> {
    let mut owned: Vec<OwnedValue> = Vec::with_capacity(N_CHAINED);
    for i in 0..N_CHAINED {
        owned.push(r.get(i)?);
    }
    let fields: Vec<Value<'_>> = owned.iter().map(OwnedValue::as_value).collect();
    let computed = event_hash(&fields);
    let text = |v: Value<'_>| match v {
        Value::Text(t) => Some(t.to_string()),
        Value::Int(i) => Some(i.to_string()),
        _ => None,
    };
    let blob = |v: Value<'_>| match v {
        Value::Blob(b) => Some(b.to_vec()),
        _ => None,
    };
    Ok(Row {
        event_id: text(fields[0]).unwrap_or_default(),
        at: text(fields[2]).unwrap_or_default(),
        ma: text(fields[3]),
        seq: match fields[14] {
            Value::Int(i) => Some(i),
            _ => None,
        },
        prev: blob(fields[15]),
        dossier_prev: blob(fields[16]),
        stored: r.get(N_CHAINED)?,
        computed,
    })
}

fn brk(kind: BreakKind, row: Option<&Row>, detail: String) -> Break {
    Break {
        kind,
        event_id: row.map(|r| r.event_id.clone()),
        at: row.map(|r| r.at.clone()),
        ma_ho_so: row.and_then(|r| r.ma.clone()),
        seq: row.and_then(|r| r.seq),
        detail,
    }
}

/// Recompute the whole chain (or from the first event at or after `from_ms`): every event's
/// hash, its link to the store's and its dossier's previous event, the gaps, the heads, and
/// every checkpoint (its head must be in the chain, its signature must verify, with `trusted`
/// when given). Read-only.
pub fn verify_store(
    c: &Db,
    from_ms: Option<i64>,
    trusted: Option<&VerifyingKey>,
) -> Result<StoreReport, DbError> {
    let start: Option<(i64, Option<i64>)> = c
        .query_row(
            "SELECT started_ms, unchained FROM trace_chain_start WHERE id = 1",
            params![],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()?;
    let (chain_started_ms, unchained_before) = match start {
        Some((s, u)) => (Some(s), u.unwrap_or(0)),
        None => (None, 0),
    };
    let first_seq: i64 = match from_ms {
        Some(f) => c
            .query_row(
                "SELECT MIN(chain_seq) FROM trace_events WHERE chain_seq IS NOT NULL AND at_ms >= ?1",
                params![f],
                |r| r.get::<_, Option<i64>>(0),
            )?
            .unwrap_or(i64::MAX),
        None => 1,
    };
    let mut report = StoreReport {
        checked: 0,
        unchained_before,
        chain_started_ms,
        checkpoints: 0,
        checkpoints_signed_ok: 0,
        checkpoints_unsigned: 0,
        trusted_key: trusted.map(key_id),
        breaks: Vec::new(),
    };
    let push = |report: &mut StoreReport, b: Break| {
        if report.breaks.len() < MAX_BREAKS {
            report.breaks.push(b);
        }
    };
    // Checkpoints to match against the chain: their counts.
    let mut cps: Vec<CheckpointRow> = Vec::new();
    {
        let mut st = c.prepare(
            "SELECT at_ms, event_count, head_hash, public_key, signature FROM trace_checkpoints WHERE event_count >= ?1 ORDER BY id",
        )?;
        let rows = st.query_map(params![first_seq], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
        })?;
        for row in rows {
            cps.push(row?);
        }
    }
    let wanted: HashSet<i64> = cps.iter().map(|c| c.1).collect();
    let mut at_count: HashMap<i64, [u8; 32]> = HashMap::new();

    // Unchained rows beyond those recorded when the chain started: inserted.
    let unchained_now: i64 = c.query_row(
        "SELECT COUNT(*) FROM trace_events WHERE chain_seq IS NULL",
        params![],
        |r| r.get(0),
    )?;
    if unchained_now > unchained_before {
        let mut st = c.prepare(&format!(
            "SELECT {CHAINED_COLUMNS}, chain_hash FROM trace_events WHERE chain_seq IS NULL AND at_ms >= ?1 ORDER BY at_ms LIMIT 1"
        ))?;
        let first = st
            .query_row(params![chain_started_ms.unwrap_or(0)], read_row)
            .optional()?;
        push(
            &mut report,
            brk(
                BreakKind::Inserted,
                first.as_ref(),
                format!(
                    "{} event(s) without a chain entry, {} recorded when the chain started: rows were inserted outside the bus",
                    unchained_now, unchained_before
                ),
            ),
        );
    }

    let mut st = c.prepare(&format!(
        "SELECT {CHAINED_COLUMNS}, chain_hash FROM trace_events WHERE chain_seq >= ?1 ORDER BY chain_seq, rowid"
    ))?;
    let mut rows = st.query(params![first_seq])?;
    let mut prev: Option<Row> = None;
    let mut dossier_last: HashMap<String, Vec<u8>> = HashMap::new();
    while let Some(r) = rows.next()? {
        let row = read_row(&r)?;
        report.checked += 1;
        let seq = row.seq.unwrap_or(0);
        let expected = prev
            .as_ref()
            .and_then(|p| p.seq)
            .map_or(first_seq, |s| s + 1);
        let prev_desc = |p: &Option<Row>| {
            p.as_ref()
                .map_or("the start of the chain".to_string(), |p| {
                    format!("event {} ({})", p.event_id, p.at)
                })
        };
        let before = report.breaks.len();
        if seq < expected {
            push(
                &mut report,
                brk(
                    BreakKind::Inserted,
                    Some(&row),
                    format!(
                        "position {seq} is already taken (after {}): the row was inserted",
                        prev_desc(&prev)
                    ),
                ),
            );
            continue;
        }
        // An edited row and a gap before it are two findings: the row after a deletion can
        // be the one that was edited, and neither may hide the other.
        let edited = row.stored.as_deref() != Some(&row.computed[..]);
        if edited {
            push(
                &mut report,
                brk(
                    BreakKind::Edited,
                    Some(&row),
                    "its fields no longer match its hash: the row was edited".into(),
                ),
            );
        }
        if seq > expected {
            push(
                &mut report,
                brk(
                    BreakKind::Deleted,
                    Some(&row),
                    format!(
                        "{} event(s) missing between {} and this one (positions {expected}..{}): deleted",
                        seq - expected,
                        prev_desc(&prev),
                        seq - 1
                    ),
                ),
            );
        } else if !edited
            && let Some(p) = &prev
            && row.prev.as_deref() != p.stored.as_deref()
        {
            push(
                &mut report,
                brk(
                    BreakKind::Relinked,
                    Some(&row),
                    format!(
                        "its link does not match the hash of {}: that event was edited and its hash recomputed, or this one was forged",
                        prev_desc(&prev)
                    ),
                ),
            );
        } else if !edited && prev.is_none() && from_ms.is_none() && row.prev.is_some() {
            push(
                &mut report,
                brk(
                    BreakKind::Deleted,
                    Some(&row),
                    "the first chained event links to an earlier one: events were deleted at the start".into(),
                ),
            );
        }
        if let Some(ma) = &row.ma {
            let last = dossier_last.get(ma);
            // With --from, a dossier's first event in range links to one before it.
            // A row already reported above is not reported twice.
            let skip = (last.is_none() && from_ms.is_some()) || report.breaks.len() > before;
            if !skip && last.map(|v| v.as_slice()) != row.dossier_prev.as_deref() {
                push(
                    &mut report,
                    brk(
                        BreakKind::Relinked,
                        Some(&row),
                        format!("its link to the previous event of dossier {ma} does not match"),
                    ),
                );
            }
            if let Some(h) = &row.stored {
                dossier_last.insert(ma.clone(), h.clone());
            }
        }
        if wanted.contains(&seq)
            && let Some(h) = row
                .stored
                .as_deref()
                .and_then(|h| <[u8; 32]>::try_from(h).ok())
        {
            at_count.insert(seq, h);
        }
        prev = Some(row);
    }
    drop(rows);
    drop(st);
    let last_seq = prev.as_ref().and_then(|p| p.seq).unwrap_or(first_seq - 1);
    if let Some((hseq, hhash)) = read_head(c, STORE_SCOPE)? {
        if hseq > last_seq {
            push(
                &mut report,
                brk(
                    BreakKind::Deleted,
                    None,
                    format!(
                        "the head says {hseq} events, the chain ends at {last_seq} (after {}): the last {} event(s) were deleted",
                        prev.as_ref()
                            .map_or("nothing".to_string(), |p| format!("event {}", p.event_id)),
                        hseq - last_seq
                    ),
                ),
            );
        } else if hseq == last_seq
            && prev.as_ref().and_then(|p| p.stored.as_deref()) != Some(&hhash[..])
        {
            push(
                &mut report,
                brk(
                    BreakKind::Edited,
                    prev.as_ref(),
                    "the last event's hash does not match the store head".into(),
                ),
            );
        }
    }
    for (at_ms, count, head, public, sig) in &cps {
        report.checkpoints += 1;
        let when = crate::clock::to_rfc3339(
            chrono::DateTime::from_timestamp_millis(*at_ms).unwrap_or_default(),
        );
        match at_count.get(count) {
            Some(h) if h[..] == head[..] => {}
            Some(_) => push(
                &mut report,
                brk(
                    BreakKind::Relinked,
                    None,
                    format!(
                        "the checkpoint of {when} signed event {count} with another hash: the chain was rewritten up to there"
                    ),
                ),
            ),
            None => push(
                &mut report,
                brk(
                    BreakKind::Deleted,
                    None,
                    format!(
                        "the checkpoint of {when} counts {count} events; the chain has no event {count}: deleted"
                    ),
                ),
            ),
        }
        match (public, sig) {
            (Some(p), Some(s)) => {
                let ok = (|| {
                    let p: [u8; 32] = p.as_slice().try_into().ok()?;
                    let v = VerifyingKey::from_bytes(&p).ok()?;
                    if trusted.is_some_and(|t| t != &v) {
                        return None;
                    }
                    let s = Signature::from_slice(s).ok()?;
                    v.verify(&checkpoint_message(*at_ms, *count, head), &s).ok()
                })();
                if ok.is_some() {
                    report.checkpoints_signed_ok += 1;
                } else {
                    push(
                        &mut report,
                        brk(
                            BreakKind::BadSignature,
                            None,
                            format!(
                                "the checkpoint of {when} ({count} events): the signature does not verify{}",
                                if trusted.is_some() {
                                    " with the configured key"
                                } else {
                                    ""
                                }
                            ),
                        ),
                    );
                }
            }
            _ => report.checkpoints_unsigned += 1,
        }
    }
    Ok(report)
}

/// Whether one dossier's chain verifies (the control sheet's line).
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct DossierChain {
    /// Every chained event of the dossier recomputes, links to the one before, and the last is
    /// the dossier's head.
    pub verified: bool,
    /// Chained events checked.
    pub events: u64,
    /// Events of the dossier written before the chain started.
    pub unchained: u64,
    /// Why not verified (or a note when verified).
    pub reason: Option<String>,
}

/// Recompute one dossier's chain (its events by the dossier index; a few rows).
pub fn verify_dossier(c: &Db, ma: &str) -> Result<DossierChain, DbError> {
    let started: Option<i64> = c
        .query_row(
            "SELECT started_ms FROM trace_chain_start WHERE id = 1",
            params![],
            |r| r.get(0),
        )
        .optional()?;
    let mut st = c.prepare(&format!(
        "SELECT {CHAINED_COLUMNS}, chain_hash, at_ms FROM trace_events WHERE ma_ho_so = ?1 ORDER BY chain_seq, rowid"
    ))?;
    let mut rows = st.query(params![ma])?;
    let mut out = DossierChain {
        verified: true,
        events: 0,
        unchained: 0,
        reason: None,
    };
    let mut last: Option<Row> = None;
    fn fail(out: &mut DossierChain, why: String) {
        if out.verified {
            out.verified = false;
            out.reason = Some(why);
        }
    }
    while let Some(r) = rows.next()? {
        let row = read_row(&r)?;
        let at_ms: i64 = r.get(N_CHAINED + 1)?;
        if row.seq.is_none() {
            if started.is_some_and(|s| at_ms >= s) {
                fail(
                    &mut out,
                    format!("event {} has no chain entry: inserted", row.event_id),
                );
            }
            out.unchained += 1;
            continue;
        }
        out.events += 1;
        if row.stored.as_deref() != Some(&row.computed[..]) {
            fail(
                &mut out,
                format!("event {} ({}) was edited", row.event_id, row.at),
            );
        } else if row.dossier_prev.as_deref() != last.as_ref().and_then(|l| l.stored.as_deref()) {
            fail(
                &mut out,
                format!(
                    "event {} ({}) does not link to the dossier's previous event: an event was deleted or inserted",
                    row.event_id, row.at
                ),
            );
        }
        last = Some(row);
    }
    let head = read_head(c, &dossier_scope(ma))?;
    match (head, &last) {
        (Some((_, h)), Some(l)) if l.stored.as_deref() != Some(&h[..]) => fail(
            &mut out,
            "the dossier's last event is not its recorded head: events were deleted at the end"
                .into(),
        ),
        (Some(_), None) => fail(
            &mut out,
            "the dossier has a recorded head but no chained event: deleted".into(),
        ),
        _ => {}
    }
    if out.verified && out.unchained > 0 {
        out.reason = Some(format!(
            "{} earlier event(s) predate the chain and are not covered",
            out.unchained
        ));
    }
    Ok(out)
}

impl super::Store {
    /// [`verify_store`] on this handle's connection (blocking; a read).
    pub fn verify_trace(
        &self,
        from_ms: Option<i64>,
        trusted: Option<&VerifyingKey>,
    ) -> Result<StoreReport, super::StoreError> {
        self.with(|c| c.read_snapshot(|c| verify_store(c, from_ms, trusted)))
    }

    /// [`verify_dossier`] on this handle's connection (blocking; a read), on one snapshot of
    /// the store: on PostgreSQL, an event committed between the read of the dossier's events
    /// and the read of its head made a sound chain look cut short.
    pub fn verify_dossier_chain(&self, ma: &str) -> Result<DossierChain, super::StoreError> {
        self.with(|c| c.read_snapshot(|c| verify_dossier(c, ma)))
    }
}

impl super::MessageWriter {
    /// Write a checkpoint of the store head through the group commit ([`write_checkpoint_in`]),
    /// signed with `key` when given. Returns the events it covers, if one was written.
    pub async fn checkpoint(&self, key: Option<SigningKey>) -> Result<Option<i64>, String> {
        let now = crate::clock::now_ms();
        self.transact(move |c| write_checkpoint_in(c, key.as_ref(), now))
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{MessageWriter, Store};
    use crate::trace::event::TraceEventKind;

    fn ev(ma: &str, n: i64) -> TraceEvent {
        let mut e =
            TraceEvent::new(TraceEventKind::Routed, "router", None).message_id(format!("m{n}"));
        e.ma_ho_so = Some(ma.to_string());
        e.at_ms += n;
        e
    }

    async fn store_with_events() -> (std::path::PathBuf, MessageWriter, Store, Vec<TraceEvent>) {
        let dir =
            std::env::temp_dir().join(format!("lt-chain-{}", crate::envelope::new_message_id()));
        let path = dir.join("t.db");
        let writer = MessageWriter::start(&path).expect("writer");
        let store = Store::open(&path).expect("store");
        let events: Vec<TraceEvent> = (0..10)
            .map(|n| ev(if n % 2 == 0 { "A-1" } else { "B-2" }, n))
            .collect();
        // Two writes, and one repeated event (ignored, does not advance the chain).
        writer
            .insert_events(events[..4].to_vec())
            .await
            .expect("insert");
        let mut rest = events[4..].to_vec();
        rest.push(events[0].clone());
        writer.insert_events(rest).await.expect("insert");
        (dir, writer, store, events)
    }

    fn exec(store: &Store, sql: &str) {
        store.with(|c| c.execute_batch(sql)).expect("sql");
    }

    #[tokio::test]
    async fn an_untouched_chain_verifies_and_a_signed_checkpoint_too() {
        let (dir, writer, store, _) = store_with_events().await;
        let key = SigningKey::from_bytes(&[7u8; 32]);
        assert_eq!(
            writer.checkpoint(Some(key.clone())).await.expect("cp"),
            Some(10)
        );
        // Nothing moved: no second checkpoint.
        assert_eq!(
            writer.checkpoint(Some(key.clone())).await.expect("cp"),
            None
        );
        let r = store
            .verify_trace(None, Some(&key.verifying_key()))
            .expect("verify");
        assert!(r.ok(), "{:?}", r.breaks);
        assert_eq!((r.checked, r.checkpoints_signed_ok), (10, 1));
        assert!(store.verify_dossier_chain("A-1").expect("dossier").verified);
        // Another key than the configured one: refused.
        let other = SigningKey::from_bytes(&[8u8; 32]).verifying_key();
        let r = store.verify_trace(None, Some(&other)).expect("verify");
        assert_eq!(r.breaks[0].kind, BreakKind::BadSignature);
        drop(writer);
        let _ = std::fs::remove_dir_all(dir);
    }

    #[tokio::test]
    async fn a_deletion_right_before_an_edited_event_is_reported_with_it() {
        // The row after a gap is itself edited: both findings are reported (a clean-clone
        // run had the deletion hidden behind the edit and named only as a relinked event).
        let (dir, writer, store, events) = store_with_events().await;
        exec(
            &store,
            &format!(
                "DELETE FROM trace_events WHERE event_id = '{}'; UPDATE trace_events SET reason = 'changed' WHERE event_id = '{}'",
                events[5].event_id, events[6].event_id
            ),
        );
        let r = store.verify_trace(None, None).expect("verify");
        let kinds: Vec<_> = r
            .breaks
            .iter()
            .map(|b| (b.kind.clone(), b.event_id.clone()))
            .collect();
        let at6 = Some(events[6].event_id.clone());
        assert!(
            kinds.contains(&(BreakKind::Edited, at6.clone())),
            "{kinds:?}"
        );
        assert!(kinds.contains(&(BreakKind::Deleted, at6)), "{kinds:?}");
        drop(writer);
        let _ = std::fs::remove_dir_all(dir);
    }

    #[tokio::test]
    async fn an_edited_a_deleted_and_an_inserted_event_are_found() {
        let (dir, writer, store, events) = store_with_events().await;
        exec(
            &store,
            &format!(
                "UPDATE trace_events SET reason = 'nothing to see' WHERE event_id = '{}'",
                events[3].event_id
            ),
        );
        let r = store.verify_trace(None, None).expect("verify");
        assert_eq!(r.breaks.len(), 1, "{:?}", r.breaks);
        assert_eq!(r.breaks[0].kind, BreakKind::Edited);
        assert_eq!(r.breaks[0].event_id.as_deref(), Some(&*events[3].event_id));
        let d = store.verify_dossier_chain("B-2").expect("dossier");
        assert!(!d.verified && d.reason.as_deref().is_some_and(|r| r.contains("edited")));
        assert!(store.verify_dossier_chain("A-1").expect("dossier").verified);

        exec(
            &store,
            &format!(
                "DELETE FROM trace_events WHERE event_id = '{}'",
                events[6].event_id
            ),
        );
        let r = store.verify_trace(None, None).expect("verify");
        assert_eq!(r.breaks[1].kind, BreakKind::Deleted, "{:?}", r.breaks);
        // Shown at the event after the gap.
        assert_eq!(r.breaks[1].event_id.as_deref(), Some(&*events[7].event_id));
        assert!(!store.verify_dossier_chain("A-1").expect("dossier").verified);

        // The last event deleted: the head counts more.
        exec(
            &store,
            &format!(
                "DELETE FROM trace_events WHERE event_id = '{}'",
                events[9].event_id
            ),
        );
        let r = store.verify_trace(None, None).expect("verify");
        assert!(
            r.breaks
                .iter()
                .any(|b| b.kind == BreakKind::Deleted && b.event_id.is_none()),
            "{:?}",
            r.breaks
        );

        // A row inserted by hand (no chain fields) and one copying a position.
        exec(
            &store,
            "INSERT INTO trace_events (event_id, at_ms, at, ma_ho_so, event, component) VALUES ('forged', 99999999999999, 'x', 'A-1', 'delivered', 'adapter:X')",
        );
        exec(
            &store,
            &format!(
                "INSERT INTO trace_events (event_id, at_ms, at, ma_ho_so, event, component, chain_seq, chain_prev, chain_hash) SELECT 'forged2', at_ms, at, ma_ho_so, 'delivered', component, chain_seq, chain_prev, chain_hash FROM trace_events WHERE event_id = '{}'",
                events[1].event_id
            ),
        );
        let r = store.verify_trace(None, None).expect("verify");
        assert_eq!(r.breaks[0].kind, BreakKind::Inserted, "{:?}", r.breaks);
        assert_eq!(r.breaks[0].event_id.as_deref(), Some("forged"));
        assert!(
            r.breaks
                .iter()
                .any(|b| b.event_id.as_deref() == Some("forged2")),
            "{:?}",
            r.breaks
        );
        drop(writer);
        let _ = std::fs::remove_dir_all(dir);
    }

    #[tokio::test]
    async fn a_rewritten_chain_does_not_match_its_signed_checkpoint() {
        let (dir, writer, store, events) = store_with_events().await;
        let key = SigningKey::from_bytes(&[7u8; 32]);
        writer.checkpoint(Some(key.clone())).await.expect("cp");
        // Delete an event and rewrite every later link (someone who knows the scheme).
        exec(
            &store,
            &format!(
                "DELETE FROM trace_events WHERE event_id = '{}'",
                events[9].event_id
            ),
        );
        exec(&store, "DELETE FROM trace_heads");
        let r = store
            .verify_trace(None, Some(&key.verifying_key()))
            .expect("verify");
        assert!(
            r.breaks.iter().any(|b| b.detail.contains("checkpoint")),
            "{:?}",
            r.breaks
        );
        drop(writer);
        let _ = std::fs::remove_dir_all(dir);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn two_writers_on_one_file_keep_one_chain() {
        // Two group-commit writers (as two `lienthong run` processes would have) writing the
        // same dossiers at once: SQLite serialises their transactions, and each reads the heads
        // inside its own, so the chain has no fork.
        let (dir, first, store, _) = store_with_events().await;
        let second = MessageWriter::start(dir.join("t.db")).expect("second writer");
        let mut tasks = Vec::new();
        for (w, base) in [(first.clone(), 100), (second.clone(), 1000)] {
            tasks.push(tokio::spawn(async move {
                for n in 0..200 {
                    let ma = if n % 3 == 0 { "A-1" } else { "C-3" };
                    w.insert_events(vec![ev(ma, base + n), ev("B-2", base + n)])
                        .await
                        .expect("insert");
                }
            }));
        }
        for t in tasks {
            t.await.expect("writer task");
        }
        let r = store.verify_trace(None, None).expect("verify");
        assert!(r.ok(), "{:?}", r.breaks);
        assert_eq!(r.checked, 10 + 2 * 200 * 2);
        for ma in ["A-1", "B-2", "C-3"] {
            assert!(
                store.verify_dossier_chain(ma).expect("dossier").verified,
                "{ma}"
            );
        }
        drop((first, second));
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn signing_keys_are_read_as_raw_hex_or_base64() {
        let k = SigningKey::from_bytes(&[9u8; 32]);
        let hexed = hex(&k.to_bytes());
        assert_eq!(parse_signing_key(hexed.as_bytes()).expect("hex"), k);
        assert_eq!(parse_signing_key(&k.to_bytes()).expect("raw"), k);
        use base64::Engine;
        let b = base64::engine::general_purpose::STANDARD.encode(k.to_bytes());
        assert_eq!(parse_signing_key(b.as_bytes()).expect("b64"), k);
        assert!(parse_signing_key(b"nonsense").is_err());
        // What `openssl genpkey -algorithm ed25519` writes: the PKCS#8 DER of RFC 8410 (a fixed
        // 16-byte prefix, then the 32-byte seed) in PEM, made here from a fresh seed (no key
        // is kept in the repository).
        let mut seed = [0u8; 32];
        getrandom::fill(&mut seed).expect("random seed");
        let mut der = vec![
            0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22,
            0x04, 0x20,
        ];
        der.extend_from_slice(&seed);
        let pem = format!(
            "-----BEGIN PRIVATE KEY-----\n{}\n-----END PRIVATE KEY-----\n",
            base64::engine::general_purpose::STANDARD.encode(&der)
        );
        let k = parse_signing_key(pem.as_bytes()).expect("pem");
        assert_eq!(k.to_bytes(), seed);
    }
}
