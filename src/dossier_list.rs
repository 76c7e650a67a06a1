//! Dossier lists for people: the filters an operator types (command-line flags, the HTTP query
//! string) checked and turned into a store query, and a list of dossiers or a dossier's trace
//! as a sheet (rows of text) written as a terminal table, CSV or XLSX for Excel.

use chrono::{DateTime, FixedOffset, NaiveDate, TimeZone};
use serde::Deserialize;

use lienthong_core::store::{DossierQuery, DossierRow};
use lienthong_core::trace::TimelineRow;

/// The filters of a dossier list, as `lienthong dossiers` flags and `GET /v1/dossiers` query
/// parameters (same names). Dates are `YYYY-MM-DD` (a day in Vietnam, +07:00) or RFC 3339.
#[derive(Debug, Clone, Default, Deserialize, clap::Args, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListParams {
    /// Words to find in the dossier code, procedure code or applicant's name, without
    /// diacritics or case mattering (`dang ky` finds `Đăng ký`, `d` finds `đ`).
    #[arg(long)]
    #[param(nullable = false)]
    pub q: Option<String>,
    /// Procedure code (ma_tthc), e.g. 1.001193.
    #[arg(long)]
    #[param(nullable = false)]
    pub procedure: Option<String>,
    /// The centre that filed it (unit code).
    #[arg(long)]
    #[param(nullable = false)]
    pub centre: Option<String>,
    /// The unit holding it now (unit code).
    #[arg(long)]
    #[param(nullable = false)]
    pub holder: Option<String>,
    /// running, paused, completed, refused, stopped, withdrawn; or open (running or paused),
    /// ended (any other).
    #[arg(long)]
    #[param(schema_with = phase_schema)]
    pub phase: Option<String>,
    /// Only late dossiers: ended late (quá hạn) or open past their due time.
    #[arg(long)]
    #[serde(default)]
    pub late: bool,
    /// Received on or after this day or time.
    #[arg(long)]
    #[param(schema_with = day_or_time_or_empty)]
    pub since: Option<String>,
    /// Received on or before this day (the whole day), or before this time.
    #[arg(long)]
    #[param(schema_with = day_or_time_or_empty)]
    pub until: Option<String>,
    /// Page size (1–1000).
    #[arg(long, default_value_t = 50)]
    #[serde(default = "default_limit")]
    #[param(minimum = 1, maximum = 1000, default = 50)]
    pub limit: u32,
    /// Rows to skip (the next page starts at offset + limit).
    #[arg(long, default_value_t = 0)]
    #[serde(default)]
    pub offset: u32,
    /// Over HTTP only: `json` (default), `csv` or `xlsx`.
    #[arg(skip)]
    #[serde(default)]
    #[param(schema_with = format_schema)]
    pub format: Option<String>,
}

/// [`ListParams::phase`] in the OpenAPI document: one of [`PHASES`], or empty (any).
fn phase_schema() -> utoipa::openapi::schema::Object {
    utoipa::openapi::schema::ObjectBuilder::new()
        .schema_type(utoipa::openapi::schema::Type::String)
        .enum_values(Some(PHASES.iter().copied().chain([""])))
        .build()
}

/// [`ListParams::format`] in the OpenAPI document.
fn format_schema() -> utoipa::openapi::schema::Object {
    utoipa::openapi::schema::ObjectBuilder::new()
        .schema_type(utoipa::openapi::schema::Type::String)
        .enum_values(Some(["json", "csv", "xlsx"]))
        .build()
}

/// The shape of a day (`YYYY-MM-DD`) or an RFC 3339 time, as [`parse_time`] reads them (in the
/// OpenAPI document).
pub const DAY_OR_TIME: &str = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}([Tt ][0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]+)?([Zz]|[+-][0-9]{2}:[0-9]{2}))?$";

/// A `since` / `until` parameter in the OpenAPI document: [`DAY_OR_TIME`].
pub fn day_or_time() -> utoipa::openapi::schema::Object {
    utoipa::openapi::schema::ObjectBuilder::new()
        .schema_type(utoipa::openapi::schema::Type::String)
        .pattern(Some(DAY_OR_TIME))
        .build()
}

/// [`ListParams`]'s `since` / `until` in the OpenAPI document: [`DAY_OR_TIME`], or empty (no
/// filter: the console's form sends every field).
fn day_or_time_or_empty() -> utoipa::openapi::schema::Object {
    utoipa::openapi::schema::ObjectBuilder::new()
        .schema_type(utoipa::openapi::schema::Type::String)
        .pattern(Some(format!("^$|{DAY_OR_TIME}")))
        .build()
}

fn default_limit() -> u32 {
    50
}

/// The phases a list may be narrowed to.
pub const PHASES: [&str; 8] = [
    "running",
    "paused",
    "completed",
    "refused",
    "stopped",
    "withdrawn",
    "open",
    "ended",
];

/// Vietnam's offset (+07:00), in which days and times are shown and read.
fn vietnam() -> FixedOffset {
    FixedOffset::east_opt(7 * 3600).unwrap_or_else(|| FixedOffset::east_opt(0).expect("UTC"))
}

/// A day (`YYYY-MM-DD`, +07:00: its start, or with `end_of_day` the next day's start) or an
/// RFC 3339 time, as ms since the epoch.
pub fn parse_time(s: &str, end_of_day: bool) -> Result<i64, String> {
    if let Ok(d) = NaiveDate::parse_from_str(s, "%Y-%m-%d") {
        let d = if end_of_day {
            d.succ_opt().unwrap_or(d)
        } else {
            d
        };
        let start = d
            .and_hms_opt(0, 0, 0)
            .and_then(|t| vietnam().from_local_datetime(&t).single())
            .ok_or_else(|| format!("{s:?} is not a day"))?;
        return Ok(start.timestamp_millis());
    }
    DateTime::parse_from_rfc3339(s)
        .map(|t| t.timestamp_millis())
        .map_err(|_| format!("{s:?} is neither a day (YYYY-MM-DD) nor an RFC 3339 time"))
}

impl ListParams {
    /// The store query, or what is wrong with a filter.
    pub fn to_query(&self) -> Result<DossierQuery, String> {
        // An empty field is no filter: the console's form sends every field, `phase=` for "any".
        if let Some(p) = self.phase.as_ref().filter(|p| !p.trim().is_empty())
            && !PHASES.contains(&p.as_str())
        {
            return Err(format!("phase {p:?}: one of {}", PHASES.join(", ")));
        }
        if !(1..=lienthong_core::store::dossiers::MAX_PAGE).contains(&self.limit) {
            return Err(format!(
                "limit {}: from 1 to {}",
                self.limit,
                lienthong_core::store::dossiers::MAX_PAGE
            ));
        }
        let nonempty = |v: &Option<String>| v.clone().filter(|s| !s.trim().is_empty());
        Ok(DossierQuery {
            text: nonempty(&self.q),
            ma_tthc: nonempty(&self.procedure),
            centre: nonempty(&self.centre),
            holder: nonempty(&self.holder),
            phase: nonempty(&self.phase),
            late: self.late,
            since_ms: nonempty(&self.since)
                .map(|s| parse_time(&s, false))
                .transpose()
                .map_err(|e| format!("since: {e}"))?,
            until_ms: nonempty(&self.until)
                .map(|s| parse_time(&s, true))
                .transpose()
                .map_err(|e| format!("until: {e}"))?,
            limit: Some(self.limit),
            offset: Some(self.offset),
        })
    }
}

/// Rows of text under column headings: what a list becomes for a terminal, CSV or Excel.
#[derive(Debug, Clone, PartialEq)]
pub struct Sheet {
    /// Column headings (Vietnamese, with the English term).
    pub headers: Vec<&'static str>,
    /// One row per dossier or event, as many cells as headings.
    pub rows: Vec<Vec<String>>,
}

/// `ms` as `YYYY-MM-DD HH:MM` in Vietnam (+07:00).
pub fn local_time(ms: i64) -> String {
    DateTime::from_timestamp_millis(ms)
        .map(|t| {
            t.with_timezone(&vietnam())
                .format("%Y-%m-%d %H:%M")
                .to_string()
        })
        .unwrap_or_default()
}

/// The Vietnamese name of a phase of the dossier index.
pub fn phase_vi(phase: &str) -> &'static str {
    use lienthong_core::process::state::Phase;
    let p = match phase {
        "running" => Phase::Running,
        "paused" => Phase::Paused,
        "completed" => Phase::Completed,
        "refused" => Phase::Refused,
        "stopped" => Phase::Stopped,
        "withdrawn" => Phase::Withdrawn,
        _ => return "",
    };
    p.vi()
}

/// The Vietnamese name of a timeliness (`early`, `on_time`, `late`).
pub fn timeliness_vi(t: &str) -> &'static str {
    use lienthong_core::calendar::Timeliness;
    match t {
        "early" => Timeliness::Early.vi(),
        "on_time" => Timeliness::OnTime.vi(),
        "late" => Timeliness::Late.vi(),
        _ => "",
    }
}

/// A list of dossiers as a sheet.
pub fn dossier_sheet(rows: &[DossierRow]) -> Sheet {
    let opt_time = |ms: Option<i64>| ms.map(local_time).unwrap_or_default();
    Sheet {
        headers: vec![
            "Mã hồ sơ (dossier)",
            "Thủ tục (procedure)",
            "Trung tâm (centre)",
            "Chủ hồ sơ (applicant)",
            "Giai đoạn (phase)",
            "Trạng thái (status)",
            "Đơn vị đang giữ (holder)",
            "Tiếp nhận (received)",
            "Hạn (due)",
            "Kết thúc (ended)",
            "Tiến độ (timeliness)",
        ],
        rows: rows
            .iter()
            .map(|r| {
                vec![
                    r.ma_ho_so.clone(),
                    r.ma_tthc.clone(),
                    r.centre.clone(),
                    r.applicant.clone().unwrap_or_default(),
                    phase_vi(&r.phase).to_string(),
                    r.status.map(|s| s.to_string()).unwrap_or_default(),
                    r.holder.clone().unwrap_or_default(),
                    local_time(r.received_ms),
                    opt_time(r.due_ms),
                    opt_time(r.ended_ms),
                    r.timeliness
                        .as_deref()
                        .map(timeliness_vi)
                        .unwrap_or_default()
                        .to_string(),
                ]
            })
            .collect(),
    }
}

/// A dossier's trace (its hop timeline) as a sheet.
pub fn trace_sheet(rows: &[TimelineRow]) -> Sheet {
    let s = |v: &Option<String>| v.clone().unwrap_or_default();
    Sheet {
        headers: vec![
            "Thời điểm (at)",
            "Sự kiện (event)",
            "Loại (kind)",
            "Từ (from)",
            "Đến (to)",
            "Lần (attempt)",
            "Trạng thái (status)",
            "Sau (elapsed, ms)",
            "Thành phần (component)",
            "Mã thông điệp (message id)",
            "Lý do (reason)",
        ],
        rows: rows
            .iter()
            .map(|r| {
                vec![
                    r.at.clone(),
                    r.event.clone(),
                    s(&r.kind),
                    s(&r.from),
                    s(&r.to),
                    r.attempt.map(|a| a.to_string()).unwrap_or_default(),
                    r.status.map(|a| a.to_string()).unwrap_or_default(),
                    r.elapsed_ms.to_string(),
                    r.component.clone(),
                    s(&r.message_id),
                    s(&r.reason),
                ]
            })
            .collect(),
    }
}

/// A cell that a spreadsheet would read as a formula (it begins with `=`, `+`, `-`, `@`, a tab
/// or a carriage return) made text by a leading `'` (OWASP, "CSV Injection").
pub fn neutralise(cell: &str) -> std::borrow::Cow<'_, str> {
    match cell.chars().next() {
        Some('=' | '+' | '-' | '@' | '\t' | '\r') => format!("'{cell}").into(),
        _ => cell.into(),
    }
}

/// The sheet as CSV (RFC 4180 quoting, CRLF line ends) in UTF-8 with a byte-order mark, so
/// that Excel reads Vietnamese text as UTF-8; every cell [`neutralise`]d.
pub fn to_csv(sheet: &Sheet) -> Result<Vec<u8>, String> {
    let mut w = csv::WriterBuilder::new()
        .terminator(csv::Terminator::CRLF)
        .from_writer(b"\xEF\xBB\xBF".to_vec());
    let err = |e: csv::Error| format!("writing CSV: {e}");
    w.write_record(&sheet.headers).map_err(err)?;
    for row in &sheet.rows {
        w.write_record(row.iter().map(|c| neutralise(c).into_owned()))
            .map_err(err)?;
    }
    w.into_inner().map_err(|e| format!("writing CSV: {e}"))
}

/// The sheet as an XLSX workbook of one worksheet named `title` (bold headings, frozen first
/// row, autofilter); every cell is a string, [`neutralise`]d, so nothing is read as a formula.
pub fn to_xlsx(sheet: &Sheet, title: &str) -> Result<Vec<u8>, String> {
    use rust_xlsxwriter::{Format, Workbook};
    let err = |e: rust_xlsxwriter::XlsxError| format!("writing XLSX: {e}");
    let mut book = Workbook::new();
    let ws = book.add_worksheet();
    ws.set_name(sheet_name(title)).map_err(err)?;
    let bold = Format::new().set_bold();
    for (c, h) in sheet.headers.iter().enumerate() {
        ws.write_string_with_format(0, c as u16, *h, &bold)
            .map_err(err)?;
    }
    for (r, row) in sheet.rows.iter().enumerate() {
        for (c, cell) in row.iter().enumerate() {
            ws.write_string(r as u32 + 1, c as u16, within_cell(&neutralise(cell)))
                .map_err(err)?;
        }
    }
    let last_col = sheet.headers.len().saturating_sub(1) as u16;
    ws.set_freeze_panes(1, 0).map_err(err)?;
    ws.autofilter(0, 0, sheet.rows.len() as u32, last_col)
        .map_err(err)?;
    ws.autofit();
    book.save_to_buffer().map_err(err)
}

/// `title` as a name Excel takes for a worksheet: at most 31 UTF-16 units, none of `*?:[]\/`,
/// not starting or ending with an apostrophe, not empty (a trace's title holds a dossier code
/// of up to 64 characters).
fn sheet_name(title: &str) -> String {
    let mut name = String::new();
    let mut units = 0;
    for c in title.chars() {
        let c = if matches!(c, '*' | '?' | ':' | '[' | ']' | '\\' | '/') {
            '_'
        } else {
            c
        };
        units += c.len_utf16();
        if units > 31 {
            break;
        }
        name.push(c);
    }
    let name = name.trim_matches('\'');
    if name.is_empty() {
        "Sheet1".into()
    } else {
        name.into()
    }
}

/// `cell` cut to what one Excel cell holds (32,767 UTF-16 units).
fn within_cell(cell: &str) -> std::borrow::Cow<'_, str> {
    const MAX: usize = 32_767;
    if cell.len() <= MAX {
        return cell.into();
    }
    let mut units = 0;
    let end = cell
        .char_indices()
        .find(|(_, c)| {
            units += c.len_utf16();
            units > MAX
        })
        .map_or(cell.len(), |(i, _)| i);
    cell[..end].to_string().into()
}

/// The sheet as an aligned text table for a terminal.
pub fn to_table(sheet: &Sheet) -> String {
    let n = sheet.headers.len();
    let mut width: Vec<usize> = sheet.headers.iter().map(|h| h.chars().count()).collect();
    for row in &sheet.rows {
        for (i, c) in row.iter().enumerate().take(n) {
            width[i] = width[i].max(c.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let mut s = cells
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{c:<w$}", w = width[i]))
            .collect::<Vec<_>>()
            .join("  ");
        s.truncate(s.trim_end().len());
        s.push('\n');
        s
    };
    let mut out = line(sheet.headers.clone());
    for row in &sheet.rows {
        out.push_str(&line(row.iter().map(String::as_str).collect()));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formula_cells_are_neutralised_and_vietnamese_text_survives_csv() {
        for bad in ["=1+1", "+1", "-2", "@SUM(A1)", "\tx", "\rx"] {
            assert!(neutralise(bad).starts_with('\''), "{bad:?}");
        }
        assert_eq!(neutralise("Nguyễn Văn A"), "Nguyễn Văn A");
        let sheet = Sheet {
            headers: vec!["a", "b"],
            rows: vec![vec![
                "Đăng ký, \"khai\" sinh".into(),
                "=HYPERLINK(\"x\")".into(),
            ]],
        };
        let bytes = to_csv(&sheet).expect("csv");
        assert!(bytes.starts_with(b"\xEF\xBB\xBF"), "a BOM for Excel");
        let text = String::from_utf8(bytes[3..].to_vec()).expect("utf-8");
        assert_eq!(
            text,
            "a,b\r\n\"Đăng ký, \"\"khai\"\" sinh\",\"'=HYPERLINK(\"\"x\"\")\"\r\n"
        );
    }

    #[test]
    fn any_title_and_any_cell_make_a_workbook() {
        // A trace's title: `trace-` and a dossier code of up to 64 characters, any of them.
        for title in [
            "trace-000.00.53.H48-220921-0099-long-enough-to-pass-31".to_string(),
            format!("trace-{}", "ỹ[]:*?/\\'".repeat(8)),
            "'".into(),
            String::new(),
        ] {
            let name = sheet_name(&title);
            assert!(
                !name.is_empty() && name.encode_utf16().count() <= 31,
                "{name:?}"
            );
            let sheet = Sheet {
                headers: vec!["a"],
                rows: vec![vec!["đ".repeat(40_000)]],
            };
            assert!(to_xlsx(&sheet, &title).is_ok(), "{title:?}");
        }
        assert_eq!(
            within_cell(&"😀".repeat(20_000)).encode_utf16().count(),
            32_766
        );
    }

    #[test]
    fn filters_are_checked_and_days_are_vietnamese_days() {
        let p = ListParams {
            since: Some("2026-12-01".into()),
            until: Some("2026-12-01".into()),
            limit: 50,
            ..Default::default()
        };
        let q = p.to_query().expect("query");
        // 2026-12-01T00:00+07:00 = 2026-11-30T17:00Z; until is the end of that day.
        assert_eq!(q.since_ms, Some(1_796_058_000_000));
        assert_eq!(q.until_ms, Some(1_796_058_000_000 + 86_400_000));
        let bad = ListParams {
            phase: Some("lost".into()),
            limit: 50,
            ..Default::default()
        };
        assert!(bad.to_query().unwrap_err().contains("running"));
        let bad = ListParams {
            since: Some("yesterday".into()),
            limit: 50,
            ..Default::default()
        };
        assert!(bad.to_query().unwrap_err().contains("since"));
        // A form's empty fields (phase "any") filter nothing.
        let form = ListParams {
            phase: Some(String::new()),
            procedure: Some(String::new()),
            limit: 50,
            ..Default::default()
        };
        let q = form.to_query().expect("empty fields are no filter");
        assert_eq!((q.phase, q.ma_tthc), (None, None));
    }
}
