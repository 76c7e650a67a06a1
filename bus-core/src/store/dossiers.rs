//! The dossier index (table `dossiers`, a read model): one row per dossier the bus knows, with
//! its procedure, centre, applicant, phase, holder, due time and timeliness, kept up to date in
//! the same transaction as the message or process state that changes it; the operators'
//! dossier lists (`lienthong dossiers`, `GET /v1/dossiers`, the console) read only it. A row
//! also holds the dossier's origin (the centre whose first forward the router saw, which replies
//! are checked against) once one is recorded: `correlation_id` set.

use crate::params;
use crate::store::db::{
    Backend, Db, OptionalExtension, OwnedValue as SqlValue, Params, ToValue, param_refs,
    shift_placeholders,
};
use crate::store::db::{DbError, Row};
use serde::Serialize;
use unicode_normalization::UnicodeNormalization;

use crate::envelope::{Envelope, Kind};
use crate::process::state::{Phase, Process};

use super::connection::Store;
use super::error::StoreError;
use super::messages::{insert_message, insert_message_with};
use super::writer::MessageWriter;

/// `s` folded for accent- and case-insensitive search: NFD, combining marks dropped, `đ`/`Đ`
/// as `d`, lower case (`Đăng ký` → `dang ky`).
pub fn fold(s: &str) -> String {
    s.nfd()
        .filter(|c| !unicode_normalization::char::is_combining_mark(*c))
        .map(|c| match c {
            'đ' | 'Đ' => 'd',
            c => c,
        })
        .flat_map(char::to_lowercase)
        .collect()
}

/// What one routed message says about its dossier (the router's and the process outbox's
/// messages): written beside the message in the same transaction.
#[derive(Debug, Clone)]
pub struct DossierNote {
    /// Dossier code (`ma_ho_so`).
    pub ma_ho_so: String,
    /// Procedure code (`ma_tthc`).
    pub ma_tthc: String,
    /// Message kind (`dossier.forward`, `dossier.status`, …).
    pub kind: String,
    /// `TrangThaiHoSo` of a `dossier.status`.
    pub status: Option<u8>,
    /// Sending unit.
    pub sender: String,
    /// The unit it was routed to.
    pub receiver: String,
    /// The applicant's name (`payload.applicant.ho_ten`), as sent.
    pub applicant: Option<String>,
}

impl DossierNote {
    /// The note of `env`, routed to `receiver`.
    pub fn of(env: &Envelope, receiver: &str) -> DossierNote {
        DossierNote {
            ma_ho_so: env.ma_ho_so.clone(),
            ma_tthc: env.ma_tthc.clone(),
            kind: env.kind.0.clone(),
            status: env.status.map(|s| s.0),
            sender: env.sender.clone(),
            receiver: receiver.to_string(),
            applicant: env.payload.applicant.as_ref().map(|p| p.ho_ten.clone()),
        }
    }
}

/// The phase a `TrangThaiHoSo` puts a dossier in (the process manager's [`Phase`] names).
fn phase_of_status(status: u8) -> &'static str {
    match status {
        3 => "refused",
        5 | 6 => "paused",
        7 => "withdrawn",
        8 => "stopped",
        9 | 10 => "completed",
        _ => "running",
    }
}

fn phase_name(p: Phase) -> &'static str {
    match p {
        Phase::Running => "running",
        Phase::Paused => "paused",
        Phase::Completed => "completed",
        Phase::Refused => "refused",
        Phase::Stopped => "stopped",
        Phase::Withdrawn => "withdrawn",
    }
}

/// The words a search matches: the code, the procedure and the applicant, folded.
fn search_text(ma_ho_so: &str, ma_tthc: &str, applicant: Option<&str>) -> String {
    fold(&format!("{ma_ho_so} {ma_tthc} {}", applicant.unwrap_or("")))
}

/// Where a dossier came from: the centre whose first `dossier.forward` the router saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    /// Dossier code.
    pub ma_ho_so: String,
    /// Procedure code.
    pub ma_tthc: String,
    /// The centre that sent the dossier.
    pub origin_unit: String,
    /// Its correlation id.
    pub correlation_id: String,
}

/// Record `o` if the dossier has no origin yet (the first one wins), inside an open
/// transaction: in the dossier's index row, made (`running`, received now) when there is none.
/// The router and the HTTP API's filing record it with the row's other columns through
/// [`note_in`] instead.
pub fn insert_origin(c: &Db, o: &Origin, now_ms: i64) -> Result<(), DbError> {
    origin_row(c, o, None, None, None, now_ms)
}

/// Insert the index row of a dossier with its origin `o` (`running`, received now), or, when
/// the row is there without an origin, give it `o` (the first origin wins).
fn origin_row(
    c: &Db,
    o: &Origin,
    applicant: Option<&str>,
    status: Option<u8>,
    holder: Option<&str>,
    now_ms: i64,
) -> Result<(), DbError> {
    origin_row_with(o, applicant, status, holder, now_ms, |sql, p| {
        c.prepare_cached(sql)?.execute(p).map(|_| ())
    })
}

/// [`origin_row`]'s statement and parameters, handed to `run`.
fn origin_row_with<R>(
    o: &Origin,
    applicant: Option<&str>,
    status: Option<u8>,
    holder: Option<&str>,
    now_ms: i64,
    run: impl FnOnce(&'static str, Params<'_>) -> Result<R, DbError>,
) -> Result<R, DbError> {
    run(
        "INSERT INTO dossiers (ma_ho_so, ma_tthc, centre, applicant, search, phase, status, holder, received_ms, updated_ms, correlation_id)
         VALUES (?1, ?2, ?3, ?4, ?5, 'running', ?6, ?7, ?8, ?8, ?9)
         ON CONFLICT (ma_ho_so) DO UPDATE SET ma_tthc = excluded.ma_tthc, centre = excluded.centre,
             correlation_id = excluded.correlation_id
         WHERE dossiers.correlation_id IS NULL",
        params![
            o.ma_ho_so,
            o.ma_tthc,
            o.origin_unit,
            applicant,
            search_text(&o.ma_ho_so, &o.ma_tthc, applicant),
            status,
            holder,
            now_ms,
            o.correlation_id
        ],
    )
}

/// The recorded origin of a dossier, on an open connection.
pub fn origin_in(c: &Db, ma_ho_so: &str) -> Result<Option<Origin>, DbError> {
    c.prepare_cached(ORIGIN_SQL)?
        .query_row(params![ma_ho_so], origin_of_row)
        .optional()
}

/// A dossier's recorded origin.
const ORIGIN_SQL: &str = "SELECT ma_ho_so, ma_tthc, centre, correlation_id FROM dossiers WHERE ma_ho_so = ?1 AND correlation_id IS NOT NULL";

/// [`ORIGIN_SQL`]'s row as an [`Origin`].
fn origin_of_row(r: &Row<'_>) -> Result<Origin, DbError> {
    Ok(Origin {
        ma_ho_so: r.get(0)?,
        ma_tthc: r.get(1)?,
        origin_unit: r.get(2)?,
        correlation_id: r.get(3)?,
    })
}

/// Note a routed message in the index, inside an open transaction: a new dossier (an origin is
/// recorded: `origin` given) gets its row with the origin (the first origin wins, a row without
/// one takes it); any other message of a dossier the process manager does not run
/// moves its status, phase and holder. Rows of process-manager dossiers are written from the
/// process state ([`index_process_in`]) only.
pub fn note_in(
    c: &Db,
    origin: Option<&Origin>,
    n: &DossierNote,
    now_ms: i64,
) -> Result<(), DbError> {
    note_with(origin, n, now_ms, |sql, p| {
        c.prepare_cached(sql)?.execute(p).map(|_| ())
    })
    .map(|_| ())
}

/// [`note_in`]'s statement and parameters, handed to `run`; `None` when the message moves
/// nothing in the index.
fn note_with<R>(
    origin: Option<&Origin>,
    n: &DossierNote,
    now_ms: i64,
    run: impl FnOnce(&'static str, Params<'_>) -> Result<R, DbError>,
) -> Result<Option<R>, DbError> {
    if let Some(o) = origin {
        let (applicant, holder) = (n.applicant.as_deref(), Some(n.receiver.as_str()));
        return origin_row_with(o, applicant, n.status, holder, now_ms, run).map(Some);
    }
    let (phase, holder): (Option<&str>, Option<&str>) = match n.kind.as_str() {
        Kind::FORWARD => (Some("running"), Some(n.receiver.as_str())),
        Kind::STATUS => {
            let phase = n.status.map_or("running", phase_of_status);
            let ended = !matches!(phase, "running" | "paused");
            (Some(phase), (!ended).then_some(n.sender.as_str()))
        }
        Kind::RESULT => (Some("completed"), None),
        _ => (None, None),
    };
    let Some(phase) = phase else {
        return Ok(None);
    };
    let ended = !matches!(phase, "running" | "paused");
    run(
        "UPDATE dossiers SET phase = ?2, status = COALESCE(?3, status), holder = ?4,
             ended_ms = CASE WHEN ?5 THEN COALESCE(ended_ms, ?6) ELSE NULL END, updated_ms = ?6
         WHERE ma_ho_so = ?1 AND managed = 0",
        params![n.ma_ho_so, phase, n.status, holder, ended, now_ms],
    )
    .map(Some)
}

/// RFC 3339 → ms since the epoch.
fn ms(t: Option<&str>) -> Option<i64> {
    t.and_then(|s| chrono::DateTime::parse_from_rfc3339(s).ok())
        .map(|d| d.timestamp_millis())
}

/// Write the index row of a dossier the process manager runs from its state `p`, inside an
/// open transaction: the holder is the unit of the open step due first.
pub fn index_process_in(c: &Db, p: &Process, now_ms: i64) -> Result<(), DbError> {
    let open = p
        .steps
        .iter()
        .filter(|s| s.phase.open())
        .min_by_key(|s| ms(s.due.as_deref()).unwrap_or(i64::MAX));
    let holder = if p.phase.ended() {
        None
    } else {
        open.map(|s| s.unit.as_str())
    };
    let applicant = p
        .forward
        .payload
        .applicant
        .as_ref()
        .map(|a| a.ho_ten.as_str());
    let timeliness = p
        .timeliness
        .and_then(|t| serde_json::to_value(t).ok())
        .and_then(|v| v.as_str().map(str::to_string));
    c.prepare_cached(
        "INSERT INTO dossiers (ma_ho_so, ma_tthc, centre, applicant, search, phase, status, holder, received_ms, due_ms, ended_ms, timeliness, managed, updated_ms)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, 1, ?13)
         ON CONFLICT (ma_ho_so) DO UPDATE SET phase = excluded.phase, status = excluded.status,
             holder = excluded.holder, due_ms = excluded.due_ms, ended_ms = excluded.ended_ms,
             timeliness = excluded.timeliness, managed = 1, updated_ms = excluded.updated_ms,
             applicant = COALESCE(dossiers.applicant, excluded.applicant),
             search = CASE WHEN dossiers.applicant IS NULL THEN excluded.search ELSE dossiers.search END",
    )?
    .execute(params![
        p.ma_ho_so,
        p.ma_tthc,
        p.origin_unit,
        applicant,
        search_text(&p.ma_ho_so, &p.ma_tthc, applicant),
        phase_name(p.phase),
        p.status,
        holder,
        ms(Some(&p.received_at)).unwrap_or(now_ms),
        ms(Some(&p.due)),
        ms(p.ended_at.as_deref()),
        timeliness,
        now_ms
    ])?;
    Ok(())
}

/// Which dossiers to list ([`Store::dossiers`]). Every field narrows the list; none: all.
#[derive(Debug, Clone, Default)]
pub struct DossierQuery {
    /// Words that must all appear in the code, the procedure code or the applicant's name,
    /// accent- and case-insensitively (`dang ky` finds `Đăng ký`).
    pub text: Option<String>,
    /// Procedure code (`ma_tthc`).
    pub ma_tthc: Option<String>,
    /// The centre that filed it.
    pub centre: Option<String>,
    /// The unit holding it now.
    pub holder: Option<String>,
    /// Phase: `running`, `paused`, `completed`, `refused`, `stopped`, `withdrawn`; `open`
    /// (running or paused) and `ended` (any other) group them.
    pub phase: Option<String>,
    /// Only dossiers that are late: ended late (quá hạn), or open past their due time.
    pub late: bool,
    /// Received at or after, ms since the epoch.
    pub since_ms: Option<i64>,
    /// Received before, ms since the epoch.
    pub until_ms: Option<i64>,
    /// Page size (at most 1 000; default 50).
    pub limit: Option<u32>,
    /// Rows to skip (server-side pagination).
    pub offset: Option<u32>,
}

/// One row of the dossier index.
#[derive(Debug, Clone, Serialize, PartialEq, utoipa::ToSchema)]
pub struct DossierRow {
    /// Dossier code.
    pub ma_ho_so: String,
    /// Procedure code.
    pub ma_tthc: String,
    /// The centre that filed it.
    pub centre: String,
    /// The applicant's name, as sent.
    pub applicant: Option<String>,
    /// Phase (see [`DossierQuery::phase`]).
    pub phase: String,
    /// Last `TrangThaiHoSo`.
    pub status: Option<u8>,
    /// The unit holding it now (none once it ended).
    pub holder: Option<String>,
    /// Received, ms since the epoch.
    pub received_ms: i64,
    /// Due (the legal deadline, for dossiers the process manager runs), ms since the epoch.
    pub due_ms: Option<i64>,
    /// Ended, ms since the epoch.
    pub ended_ms: Option<i64>,
    /// `early` (trước hạn), `on_time` (đúng hạn), `late` (quá hạn): as ended, or `late` for an
    /// open dossier past its due time.
    pub timeliness: Option<String>,
    /// Whether the process manager runs it.
    pub managed: bool,
    /// Last change, ms since the epoch.
    pub updated_ms: i64,
}

/// One page of a dossier list.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct DossierPage {
    /// How many dossiers match (every page).
    pub total: u64,
    /// Rows skipped before this page.
    pub offset: u32,
    /// This page, newest received first.
    pub items: Vec<DossierRow>,
}

/// Largest page.
pub const MAX_PAGE: u32 = 1_000;

/// The columns [`row`] reads; an open dossier past its due time at `now_ms` is `late`.
fn columns(now_ms: i64) -> String {
    format!(
        "ma_ho_so, ma_tthc, centre, applicant, phase, status, holder, received_ms, due_ms, ended_ms,
         CASE WHEN timeliness IS NULL AND ended_ms IS NULL AND due_ms < {now_ms} THEN 'late' ELSE timeliness END,
         managed, updated_ms"
    )
}

fn row(r: &Row<'_>) -> Result<DossierRow, DbError> {
    Ok(DossierRow {
        ma_ho_so: r.get(0)?,
        ma_tthc: r.get(1)?,
        centre: r.get(2)?,
        applicant: r.get(3)?,
        phase: r.get(4)?,
        status: r.get(5)?,
        holder: r.get(6)?,
        received_ms: r.get(7)?,
        due_ms: r.get(8)?,
        ended_ms: r.get(9)?,
        timeliness: r.get(10)?,
        managed: r.get::<_, i64>(11)? != 0,
        updated_ms: r.get(12)?,
    })
}

impl Store {
    /// The recorded origin of a dossier.
    pub fn origin(&self, ma_ho_so: &str) -> Result<Option<Origin>, StoreError> {
        self.with(|c| origin_in(c, ma_ho_so))
    }

    /// [`Store::origin`] from async code, as a point read ([`Store::point_query`]: on SQLite
    /// right here, on PostgreSQL awaited on the async worker).
    pub async fn origin_now(&self, ma_ho_so: &str) -> Result<Option<Origin>, StoreError> {
        // The parameters are read here: the future does not hold them.
        let read = self.point_query(ORIGIN_SQL, params![ma_ho_so], origin_of_row);
        read.await
    }

    /// The index row of one dossier (`now_ms` decides whether an open one is late).
    pub fn dossier_row(
        &self,
        ma_ho_so: &str,
        now_ms: i64,
    ) -> Result<Option<DossierRow>, StoreError> {
        self.with(|c| {
            c.prepare(&format!(
                "SELECT {} FROM dossiers WHERE ma_ho_so = ?1",
                columns(now_ms)
            ))?
            .query_row(params![ma_ho_so], row)
            .optional()
        })
    }

    /// One page of the dossiers matching `q`, newest received first, with the total count.
    /// `now_ms` decides which open dossiers are late.
    pub fn dossiers(&self, q: &DossierQuery, now_ms: i64) -> Result<DossierPage, StoreError> {
        let mut filters: Vec<String> = Vec::new();
        let mut args: Vec<SqlValue> = Vec::new();
        let arg = |v: SqlValue, args: &mut Vec<SqlValue>| {
            args.push(v);
            format!("?{}", args.len())
        };
        if let Some(t) = q.text.as_deref() {
            for word in fold(t).split_whitespace() {
                let escaped = word
                    .replace('\\', "\\\\")
                    .replace('%', "\\%")
                    .replace('_', "\\_");
                let p = arg(SqlValue::Text(format!("%{escaped}%")), &mut args);
                filters.push(format!("search LIKE {p} ESCAPE '\\'"));
            }
        }
        for (col, v) in [
            ("ma_tthc", &q.ma_tthc),
            ("centre", &q.centre),
            ("holder", &q.holder),
        ] {
            if let Some(v) = v {
                let p = arg(SqlValue::Text(v.clone()), &mut args);
                filters.push(format!("{col} = {p}"));
            }
        }
        match q.phase.as_deref() {
            None => {}
            Some("open") => filters.push("phase IN ('running', 'paused')".into()),
            Some("ended") => filters.push("phase NOT IN ('running', 'paused')".into()),
            Some(p) => {
                let p = arg(SqlValue::Text(p.to_string()), &mut args);
                filters.push(format!("phase = {p}"));
            }
        }
        // An integer of ours, not input: written into the SQL (a bound parameter that the count
        // does not use would not be accepted).
        let now = now_ms;
        if q.late {
            filters.push(format!(
                "(timeliness = 'late' OR (ended_ms IS NULL AND due_ms < {now}))"
            ));
        }
        if let Some(s) = q.since_ms {
            let p = arg(SqlValue::Int(s), &mut args);
            filters.push(format!("received_ms >= {p}"));
        }
        if let Some(u) = q.until_ms {
            let p = arg(SqlValue::Int(u), &mut args);
            filters.push(format!("received_ms < {p}"));
        }
        let filter = if filters.is_empty() {
            String::new()
        } else {
            format!("WHERE {}", filters.join(" AND "))
        };
        let limit = q.limit.unwrap_or(50).clamp(1, MAX_PAGE);
        let offset = q.offset.unwrap_or(0);
        self.with(|c| {
            let total: i64 = c.query_row(
                &format!("SELECT COUNT(*) FROM dossiers {filter}"),
                &param_refs(&args),
                |r| r.get(0),
            )?;
            let mut st = c.prepare(&format!(
                "SELECT {} FROM dossiers {filter} ORDER BY received_ms DESC, ma_ho_so LIMIT {limit} OFFSET {offset}",
                columns(now)
            ))?;
            let items = st
                .query_map(&param_refs(&args), row)?
                .collect::<Result<Vec<_>, _>>()?;
            Ok(DossierPage {
                total: total.max(0) as u64,
                offset,
                items,
            })
        })
    }
}

impl MessageWriter {
    /// Record a dossier's origin if none is recorded yet, and its row in the dossier index
    /// from `note` (the filing, routed to its receiver), in one transaction; returns the
    /// recorded origin (the first one wins). The HTTP API's filing: the router that routes it
    /// then finds the origin and only moves the row, as for any later message.
    pub async fn record_origin(&self, o: Origin, note: DossierNote) -> Result<Origin, String> {
        self.transact(move |c| {
            note_in(c, Some(&o), &note, crate::clock::now_ms())?;
            Ok(origin_in(c, &o.ma_ho_so)?.unwrap_or(o))
        })
        .await
    }

    /// Record the origin (when given, first one wins), keep the accepted envelope (first copy
    /// wins) and note it in the dossier index, in the group commit: the router's one write per
    /// message. `note` names the dossier, kind, sender and receiver; `body` is the envelope as
    /// routed, compressed here, on the caller's thread, as the writer's
    /// [`WriterOptions::compression`](super::WriterOptions) says. Errors: the store failed, or
    /// the writer thread is gone.
    pub async fn accept(
        &self,
        origin: Option<Origin>,
        message_id: &str,
        note: DossierNote,
        body: &[u8],
    ) -> Result<(), String> {
        let message_id = message_id.to_string();
        let body = match super::body_codec::encode(body, self.compression()) {
            Some((packed, encoding)) => (packed, Some(encoding)),
            None => (body.to_vec(), None),
        };
        // Not isolated: the router's write cannot fail but on the file, which fails the batch.
        self.write_unit(false, move |c| {
            let now = crate::clock::now_ms();
            let n = &note;
            let ids = [&*message_id, &n.ma_ho_so, &n.kind, &n.sender, &n.receiver];
            if c.backend() != Backend::Postgres {
                insert_message(c, now, ids, &body)?;
                return note_in(c, origin.as_ref(), n, now);
            }
            // On PostgreSQL, where each statement is a round trip under the store's write
            // lock, the envelope and its index row in one statement (a data-modifying WITH).
            let noted = note_with(origin.as_ref(), n, now, |sql, p| {
                insert_message_with(now, ids, &body, |insert, kept| {
                    let both = format!(
                        "WITH kept AS ({insert}) {}",
                        shift_placeholders(sql, kept.len())
                    );
                    let all: Vec<&dyn ToValue> = kept.iter().chain(p).copied().collect();
                    c.prepare_cached(&both)?.execute(&all).map(|_| ())
                })
            })?;
            match noted {
                Some(()) => Ok(()),
                None => insert_message(c, now, ids, &body),
            }
        })
        .await
    }
}
