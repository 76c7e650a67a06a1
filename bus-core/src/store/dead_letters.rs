//! The dead-letter log (table `dead_letters`): every dead-lettered message with its reason,
//! attempt history and body, written by the tracer component (in the group commit); read by
//! `lienthong dead-letters`, `GET /v1/dead-letters` and the console, which filter it and mark
//! what was replayed, when and by whom.

use crate::params;
use crate::store::db::{Db, OptionalExtension, OwnedValue as SqlValue, param_refs};
use crate::store::db::{DbError, Row};

use crate::trace::report::DeadLetterRow;

use super::connection::Store;
use super::error::StoreError;
use super::writer::MessageWriter;

/// The most of a dead letter's body the log keeps, bytes (1 MiB); a longer body is clipped
/// there (the whole message stays in the dead-letter queue, and a replay sends that).
pub const BODY_MAX: usize = 1 << 20;

/// One dead letter to record: when (ms since the epoch), its row, and its body as received.
#[derive(Debug, Clone)]
pub struct DeadLetterRecord {
    /// When the tracer read it, ms since the epoch.
    pub at_ms: i64,
    /// What the headers and the body say.
    pub row: DeadLetterRow,
    /// The message body (clipped at [`BODY_MAX`] when stored).
    pub body: Vec<u8>,
}

/// Record dead-lettered messages inside an open transaction (a repeated one is ignored).
pub fn insert_dead_letters_in(c: &Db, rows: &[DeadLetterRecord]) -> Result<(), DbError> {
    let mut st = c.prepare_cached(
        "INSERT INTO dead_letters (message_id, at_ms, at, ma_ho_so, kind, sender, receiver, reason_code, reason, component, queue, attempts, history, body) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14) ON CONFLICT DO NOTHING",
    )?;
    for d in rows {
        let r = &d.row;
        st.execute(params![
            r.message_id,
            d.at_ms,
            r.at,
            r.ma_ho_so,
            r.kind,
            r.sender,
            r.receiver,
            r.reason_code,
            r.reason,
            r.component,
            r.queue,
            r.attempts,
            r.history,
            &d.body[..d.body.len().min(BODY_MAX)]
        ])?;
    }
    Ok(())
}

/// Mark the waiting dead letters of each `(message id, until ms)` as replayed at `at_ms` by
/// `by`, inside an open transaction: only its rows logged up to `until` (a row logged later is
/// the replayed message dead-lettered again, still waiting). Returns how many rows changed.
pub fn mark_replayed_in(
    c: &Db,
    marks: &[(String, i64)],
    at_ms: i64,
    by: &str,
) -> Result<usize, DbError> {
    let mut st = c.prepare_cached(
        "UPDATE dead_letters SET replayed_ms = ?2, replayed_by = ?3 WHERE message_id = ?1 AND replayed_ms IS NULL AND at_ms <= ?4",
    )?;
    let mut n = 0;
    for (id, until) in marks {
        n += st.execute(params![id, at_ms, by, until])?;
    }
    Ok(n)
}

impl MessageWriter {
    /// Record dead-lettered messages and wait for the commit.
    pub async fn insert_dead_letters(&self, rows: Vec<DeadLetterRecord>) -> Result<(), String> {
        self.write_unit(true, move |c| insert_dead_letters_in(c, &rows))
            .await
    }
}

/// Which dead letters to list ([`Store::dead_letter_page`]); every field narrows the list.
#[derive(Debug, Clone, Default)]
pub struct DeadLetterQuery {
    /// Reason code (`agency-refused`, `schema-invalid`, `broker`, …).
    pub reason_code: Option<String>,
    /// A unit that sent it or was to receive it.
    pub unit: Option<String>,
    /// Procedure code (`ma_tthc`) of its dossier (from the dossier index).
    pub ma_tthc: Option<String>,
    /// Its dossier.
    pub ma_ho_so: Option<String>,
    /// Dead-lettered at or after, ms since the epoch.
    pub since_ms: Option<i64>,
    /// Dead-lettered before, ms since the epoch.
    pub until_ms: Option<i64>,
    /// `waiting` (not replayed yet), `replayed`, or none for both.
    pub state: Option<String>,
    /// Page size (at most [`super::dossiers::MAX_PAGE`]; default 50).
    pub limit: Option<u32>,
    /// Rows to skip.
    pub offset: Option<u32>,
}

/// One page of the dead-letter log.
#[derive(Debug, Clone, serde::Serialize)]
pub struct DeadLetterPage {
    /// How many rows match (every page).
    pub total: u64,
    /// Rows skipped before this page.
    pub offset: u32,
    /// This page, newest first.
    pub items: Vec<DeadLetterRow>,
}

const COLUMNS: &str = "d.at, d.message_id, d.ma_ho_so, d.kind, d.sender, d.receiver, d.reason_code, d.reason, d.component, d.queue, d.attempts, d.history, d.replayed_ms, d.replayed_by";

fn row(r: &Row<'_>) -> Result<DeadLetterRow, DbError> {
    Ok(DeadLetterRow {
        at: r.get(0)?,
        message_id: r.get(1)?,
        ma_ho_so: r.get(2)?,
        kind: r.get(3)?,
        sender: r.get(4)?,
        receiver: r.get(5)?,
        reason_code: r.get(6)?,
        reason: r.get(7)?,
        component: r.get(8)?,
        queue: r.get(9)?,
        attempts: r.get(10)?,
        history: r.get(11)?,
        replayed_at: r
            .get::<_, Option<i64>>(12)?
            .and_then(chrono::DateTime::from_timestamp_millis)
            .map(crate::clock::to_rfc3339),
        replayed_by: r.get(13)?,
    })
}

/// The `FROM … WHERE …` of `q` and its arguments.
fn filter(q: &DeadLetterQuery) -> (String, Vec<SqlValue>) {
    let mut filters: Vec<String> = Vec::new();
    let mut args: Vec<SqlValue> = Vec::new();
    let mut arg = |v: SqlValue| {
        args.push(v);
        format!("?{}", args.len())
    };
    if let Some(v) = &q.reason_code {
        filters.push(format!(
            "d.reason_code = {}",
            arg(SqlValue::Text(v.clone()))
        ));
    }
    if let Some(v) = &q.unit {
        let p = arg(SqlValue::Text(v.clone()));
        filters.push(format!("(d.sender = {p} OR d.receiver = {p})"));
    }
    if let Some(v) = &q.ma_ho_so {
        filters.push(format!("d.ma_ho_so = {}", arg(SqlValue::Text(v.clone()))));
    }
    if let Some(v) = &q.ma_tthc {
        filters.push(format!(
            "d.ma_ho_so IN (SELECT ma_ho_so FROM dossiers WHERE ma_tthc = {})",
            arg(SqlValue::Text(v.clone()))
        ));
    }
    if let Some(v) = q.since_ms {
        filters.push(format!("d.at_ms >= {}", arg(SqlValue::Int(v))));
    }
    if let Some(v) = q.until_ms {
        filters.push(format!("d.at_ms < {}", arg(SqlValue::Int(v))));
    }
    match q.state.as_deref() {
        Some("waiting") => filters.push("d.replayed_ms IS NULL".into()),
        Some("replayed") => filters.push("d.replayed_ms IS NOT NULL".into()),
        _ => {}
    }
    let mut sql = "FROM dead_letters d".to_string();
    if !filters.is_empty() {
        sql.push_str(" WHERE ");
        sql.push_str(&filters.join(" AND "));
    }
    (sql, args)
}

impl Store {
    /// Dead-lettered messages, newest first.
    pub fn dead_letters(&self, limit: u32) -> Result<Vec<DeadLetterRow>, StoreError> {
        Ok(self
            .dead_letter_page(&DeadLetterQuery {
                limit: Some(limit),
                ..Default::default()
            })?
            .items)
    }

    /// One page of the dead letters matching `q`, newest first, with the total count.
    pub fn dead_letter_page(&self, q: &DeadLetterQuery) -> Result<DeadLetterPage, StoreError> {
        let (from, args) = filter(q);
        let limit = q.limit.unwrap_or(50).clamp(1, super::dossiers::MAX_PAGE);
        let offset = q.offset.unwrap_or(0);
        self.with(|c| {
            let total: i64 = c.query_row(
                &format!("SELECT COUNT(*) {from}"),
                &param_refs(&args),
                |r| r.get(0),
            )?;
            let mut st = c.prepare(&format!(
                "SELECT {COLUMNS} {from} ORDER BY d.at_ms DESC, d.message_id LIMIT {limit} OFFSET {offset}"
            ))?;
            let items = st
                .query_map(&param_refs(&args), row)?
                .collect::<Result<Vec<_>, _>>()?;
            Ok(DeadLetterPage {
                total: total.max(0) as u64,
                offset,
                items,
            })
        })
    }

    /// The message ids (each once, oldest first) of the waiting dead letters matching `q` (its
    /// `state` is ignored), at most `max`, and how many match in all: what a replay of that
    /// filter would take.
    pub fn dead_letter_ids(
        &self,
        q: &DeadLetterQuery,
        max: u32,
    ) -> Result<(Vec<String>, u64), StoreError> {
        let q = DeadLetterQuery {
            state: Some("waiting".into()),
            ..q.clone()
        };
        let (from, args) = filter(&q);
        self.with(|c| {
            let mut st = c.prepare(&format!(
                "SELECT d.message_id {from} GROUP BY d.message_id ORDER BY MIN(d.at_ms) LIMIT {max}"
            ))?;
            let ids: Vec<String> = st
                .query_map(&param_refs(&args), |r| r.get(0))?
                .collect::<Result<_, _>>()?;
            let total = if ids.len() < max as usize {
                ids.len() as u64
            } else {
                c.query_row(
                    &format!("SELECT COUNT(DISTINCT d.message_id) {from}"),
                    &param_refs(&args),
                    |r| r.get::<_, i64>(0),
                )?
                .max(0) as u64
            };
            Ok((ids, total))
        })
    }

    /// Those of `ids` (each once, in their order) that have a waiting (not replayed) row in the
    /// log: one query per 500 ids, no bodies read.
    pub fn waiting_dead_letters(&self, ids: &[String]) -> Result<Vec<String>, StoreError> {
        let mut seen = std::collections::HashSet::new();
        let unique: Vec<&String> = ids.iter().filter(|id| seen.insert(id.as_str())).collect();
        self.with(|c| {
            let mut waiting = std::collections::HashSet::new();
            for chunk in unique.chunks(500) {
                let marks = vec!["?"; chunk.len()].join(",");
                let mut st = c.prepare(&format!(
                    "SELECT DISTINCT message_id FROM dead_letters WHERE replayed_ms IS NULL AND message_id IN ({marks})"
                ))?;
                for id in st.query_map(&param_refs(chunk), |r| r.get::<_, String>(0))? {
                    waiting.insert(id?);
                }
            }
            Ok(unique
                .into_iter()
                .filter(|id| waiting.contains(id.as_str()))
                .cloned()
                .collect())
        })
    }

    /// The reason codes in the log with how many waiting dead letters each has, most first.
    pub fn dead_letter_reasons(&self) -> Result<Vec<(String, u64)>, StoreError> {
        self.with(|c| {
            let mut st = c.prepare(
                "SELECT reason_code, COUNT(CASE WHEN replayed_ms IS NULL THEN 1 END) FROM dead_letters GROUP BY reason_code ORDER BY 2 DESC, 1",
            )?;
            st.query_map(params![], |r| Ok((r.get(0)?, r.get::<_, i64>(1)?.max(0) as u64)))?
                .collect()
        })
    }

    /// Every time `message_id` was dead-lettered (newest first), and the body last logged.
    pub fn dead_letter(
        &self,
        message_id: &str,
    ) -> Result<(Vec<DeadLetterRow>, Option<Vec<u8>>), StoreError> {
        self.with(|c| {
            let mut st = c.prepare(&format!(
                "SELECT {COLUMNS} FROM dead_letters d WHERE d.message_id = ?1 ORDER BY d.at_ms DESC"
            ))?;
            let rows = st
                .query_map(params![message_id], row)?
                .collect::<Result<Vec<_>, _>>()?;
            let body = c
                .query_row(
                    "SELECT body FROM dead_letters WHERE message_id = ?1 AND body IS NOT NULL ORDER BY at_ms DESC LIMIT 1",
                    params![message_id],
                    |r| r.get::<_, Vec<u8>>(0),
                )
                .optional()?;
            Ok((rows, body))
        })
    }

    /// How many dead letters the log holds.
    pub fn dead_letter_count(&self) -> Result<u64, StoreError> {
        self.with(|c| {
            c.query_row("SELECT COUNT(*) FROM dead_letters", params![], |r| {
                r.get::<_, i64>(0)
            })
            .map(|n| n as u64)
        })
    }
}
