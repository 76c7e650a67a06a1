//! `lienthong store copy`: every row of one store into another, empty one (a centre growing
//! out of SQLite into PostgreSQL, or back), table by table in the order rows were written, in
//! transactions of [`COPY_CHUNK`] rows. The trace's hash chain is copied as stored, so
//! `lienthong audit verify` holds on the copy exactly as on the original.

use super::db::{Backend, Db, DbError, OwnedValue, ToValue};
use super::error::StoreError;
use super::location::StoreLocation;
use super::migrations::open_connection;
use crate::params;

/// Every table of the store, in an order that keeps references meaningful while copying.
pub const TABLES: &[&str] = &[
    "messages",
    "processes",
    "process_inbox",
    "process_outbox",
    "process_blocked",
    "process_alerts",
    "adapter_deliveries",
    "agency_callbacks",
    "edxml_outbox",
    "blob_dossiers",
    "dead_letters",
    "trace_events",
    "trace_heads",
    "trace_chain_start",
    "trace_checkpoints",
    "dossiers",
    "http_idempotency",
];

/// Rows per transaction on the target.
pub const COPY_CHUNK: usize = 1000;

/// How many rows of each table were copied.
#[derive(Debug, Clone, serde::Serialize)]
pub struct CopyReport {
    /// `(table, rows)`, in [`TABLES`] order.
    pub tables: Vec<(String, u64)>,
}

/// The columns of `table` (without a `rowid` column of the PostgreSQL schema, which the target
/// numbers itself).
fn columns(db: &Db, table: &str) -> Result<Vec<String>, DbError> {
    let mut out: Vec<String> = Vec::new();
    match db.backend() {
        Backend::Sqlite => {
            let mut st = db.prepare(&format!("PRAGMA table_info({table})"))?;
            for c in st.query_map(params![], |r| r.get::<_, String>(1))? {
                out.push(c?);
            }
        }
        Backend::Postgres => {
            let mut st = db.prepare(
                "SELECT column_name::TEXT FROM information_schema.columns
                 WHERE table_name = ?1 AND table_schema = current_schema() ORDER BY ordinal_position",
            )?;
            for c in st.query_map(params![table], |r| r.get::<_, String>(0))? {
                out.push(c?);
            }
        }
    }
    out.retain(|c| c != "rowid");
    Ok(out)
}

/// The order rows were written in, where the table keeps it.
fn write_order(db: &Db, table: &str) -> &'static str {
    match (table, db.backend()) {
        ("trace_events" | "messages", _) => " ORDER BY rowid",
        ("process_outbox", _) => " ORDER BY seq",
        ("trace_checkpoints", _) => " ORDER BY id",
        ("dead_letters", _) => " ORDER BY at_ms",
        _ => "",
    }
}

/// Copy every row of the store at `from` into the store at `to`, which is created (or
/// migrated) and must hold no row. `progress` is told each table's count as it is done.
/// Errors: either store cannot be opened, the target is not empty, or a statement failed
/// (the target then holds the chunks committed so far: drop it and copy again).
pub fn copy_store(
    from: &StoreLocation,
    to: &StoreLocation,
    mut progress: impl FnMut(&str, u64),
) -> Result<CopyReport, StoreError> {
    if from == to {
        return Err(StoreError::Writer(
            "the source and the target are the same store".into(),
        ));
    }
    let src = open_connection(from)?;
    let dst = open_connection(to)?;
    for t in TABLES {
        let n: i64 = dst.query_row(&format!("SELECT COUNT(*) FROM {t}"), params![], |r| {
            r.get(0)
        })?;
        // The chain's start row is written by the migration itself.
        if n > 0 && *t != "trace_chain_start" {
            return Err(StoreError::Writer(format!(
                "the target {} is not empty: table {t} holds {n} row(s)",
                to.display()
            )));
        }
    }
    dst.execute("DELETE FROM trace_chain_start", params![])?;
    let mut report = CopyReport { tables: Vec::new() };
    for t in TABLES {
        let theirs = columns(&dst, t)?;
        let cols: Vec<String> = columns(&src, t)?
            .into_iter()
            .filter(|c| theirs.contains(c))
            .collect();
        let list = cols.join(", ");
        let marks: Vec<String> = (1..=cols.len()).map(|i| format!("?{i}")).collect();
        let insert = format!("INSERT INTO {t} ({list}) VALUES ({})", marks.join(", "));
        let mut st = src.prepare(&format!("SELECT {list} FROM {t}{}", write_order(&src, t)))?;
        let mut rows = st.query(params![])?;
        let mut copied = 0u64;
        let mut chunk: Vec<Vec<OwnedValue>> = Vec::with_capacity(COPY_CHUNK);
        let flush = |chunk: &mut Vec<Vec<OwnedValue>>| -> Result<(), DbError> {
            dst.transaction(|d| {
                for row in chunk.iter() {
                    let refs: Vec<&dyn ToValue> = row.iter().map(|v| v as &dyn ToValue).collect();
                    d.execute(&insert, &refs)?;
                }
                Ok(())
            })?;
            chunk.clear();
            Ok(())
        };
        while let Some(r) = rows.next()? {
            let mut row = Vec::with_capacity(cols.len());
            for i in 0..cols.len() {
                row.push(r.get::<_, OwnedValue>(i)?);
            }
            chunk.push(row);
            copied += 1;
            if chunk.len() >= COPY_CHUNK {
                flush(&mut chunk)?;
            }
        }
        flush(&mut chunk)?;
        progress(t, copied);
        report.tables.push((t.to_string(), copied));
    }
    if dst.backend() == Backend::Postgres {
        // Identity columns copied with their values: their sequences continue after them.
        for (t, c) in [("process_outbox", "seq"), ("trace_checkpoints", "id")] {
            dst.execute_batch(&format!(
                "SELECT setval(pg_get_serial_sequence('{t}', '{c}'), COALESCE((SELECT MAX({c}) FROM {t}), 0) + 1, false)"
            ))?;
        }
    }
    Ok(report)
}
