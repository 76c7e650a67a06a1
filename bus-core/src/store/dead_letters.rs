//! The dead-letter log (table `dead_letters`): every dead-lettered message with its reason,
//! written by the tracer component (in the group commit) and read by `lienthong dead-letters`.

use rusqlite::{Connection, params};

use crate::trace::report::DeadLetterRow;

use super::connection::Store;
use super::error::StoreError;
use super::writer::MessageWriter;

/// Record dead-lettered messages (`at_ms`, row) inside an open transaction (a repeated one is
/// ignored).
pub fn insert_dead_letters_in(
    c: &Connection,
    rows: &[(i64, DeadLetterRow)],
) -> Result<(), rusqlite::Error> {
    let mut st = c.prepare_cached(
        "INSERT OR IGNORE INTO dead_letters (message_id, at_ms, at, ma_ho_so, kind, sender, receiver, reason_code, reason, component, queue, attempts) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
    )?;
    for (at_ms, r) in rows {
        st.execute(params![
            r.message_id,
            at_ms,
            r.at,
            r.ma_ho_so,
            r.kind,
            r.sender,
            r.receiver,
            r.reason_code,
            r.reason,
            r.component,
            r.queue,
            r.attempts
        ])?;
    }
    Ok(())
}

impl MessageWriter {
    /// Record dead-lettered messages and wait for the commit.
    pub async fn insert_dead_letters(&self, rows: Vec<(i64, DeadLetterRow)>) -> Result<(), String> {
        self.write_unit(true, move |c| insert_dead_letters_in(c, &rows))
            .await
    }
}

impl Store {
    /// Dead-lettered messages, newest first.
    pub fn dead_letters(&self, limit: u32) -> Result<Vec<DeadLetterRow>, StoreError> {
        self.with(|c| {
            let mut st = c.prepare(
                "SELECT at, message_id, ma_ho_so, kind, sender, receiver, reason_code, reason, component, queue, attempts
                 FROM dead_letters ORDER BY at_ms DESC LIMIT ?1",
            )?;
            let rows = st.query_map(params![limit], |r| {
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
                })
            })?;
            rows.collect()
        })
    }

    /// How many dead letters the log holds.
    pub fn dead_letter_count(&self) -> Result<u64, StoreError> {
        self.with(|c| {
            c.query_row("SELECT COUNT(*) FROM dead_letters", [], |r| {
                r.get::<_, i64>(0)
            })
            .map(|n| n as u64)
        })
    }
}
