//! Renders a dossier's processing control sheet ("Phiếu kiểm soát quá trình giải quyết hồ sơ") as HTML and as PDF.
//!
//! The sheet is the paper that travels with a dossier through the agencies of a liên thông
//! procedure (form 06 under Circular 03/2025/TT-VPCP, before that a form of Circular
//! 01/2018/TT-VPCP): a header about the dossier, then one row per hand-over with the agencies,
//! the hand-over and receipt times, the officers, whether the step finished before, on or past
//! its deadline, and a note. The caller fills a [`ControlSheet`]; [`render_html`] and
//! [`render_pdf`] only lay it out.
//!
//! The PDF embeds a subset of DejaVu Sans (shipped in `assets/fonts/`, so nothing is needed at
//! run time) with a ToUnicode map, so its text can be searched and extracted with its Vietnamese
//! diacritics. Cell text is wrapped at the break opportunities of the Unicode line-breaking
//! algorithm, measured by shaping it with the same shaper that draws it.

use chrono::{DateTime, FixedOffset};
use krilla::Document;
use krilla::color::luma;
use krilla::geom::{PathBuilder, Point, Rect};
use krilla::metadata::Metadata;
use krilla::page::PageSettings;
use krilla::paint::{Fill, Stroke};
use krilla::text::{Font, TextDirection};
use lienthong_core::calendar::{Timeliness, vn};
use maud::{DOCTYPE, Markup, PreEscaped, html};
use unicode_linebreak::BreakOpportunity;
use unicode_normalization::UnicodeNormalization;

/// Everything the sheet shows.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ControlSheet {
    /// The dossier code (Mã hồ sơ).
    pub ma_ho_so: String,
    /// The procedure's code in the national procedure database (mã thủ tục hành chính).
    pub ma_tthc: String,
    /// The procedure's name.
    pub ten_tthc: String,
    /// Name of the one-stop centre that received the dossier (Cơ quan tiếp nhận).
    pub receiving_unit: String,
    /// The applicant / owner of the dossier (Người nộp / chủ hồ sơ).
    pub applicant: Option<String>,
    /// The applicant's phone number.
    pub phone: Option<String>,
    /// The applicant's address.
    pub address: Option<String>,
    /// When the dossier was received (Thời gian nhận hồ sơ).
    pub received_at: Option<DateTime<FixedOffset>>,
    /// The legal deadline of the whole dossier (Thời gian hẹn trả kết quả).
    pub promised_at: Option<DateTime<FixedOffset>>,
    /// When the result was returned to the applicant, once it was.
    pub returned_at: Option<DateTime<FixedOffset>>,
    /// The dossier's status in Vietnamese, e.g. "Đang xử lý", "Đã xử lý xong".
    pub status_vi: String,
    /// The hand-overs, in order.
    pub rows: Vec<ControlSheetRow>,
    /// Whether the dossier's trace chain verifies, in words ([`trace_chain_line`]); None: not
    /// checked (the line is left out).
    pub trace_chain: Option<String>,
    /// When the sheet was made (shown in the footer).
    pub generated_at: DateTime<FixedOffset>,
}

/// One hand-over.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ControlSheetRow {
    /// The handing agency (name).
    pub from_unit: String,
    /// The receiving agency (name).
    pub to_unit: String,
    /// When the dossier was handed over.
    pub handed_at: Option<DateTime<FixedOffset>>,
    /// When the receiving agency acknowledged receipt.
    pub received_at: Option<DateTime<FixedOffset>>,
    /// The officer who handed the dossier over.
    pub handing_officer: Option<String>,
    /// The officer who received it.
    pub receiving_officer: Option<String>,
    /// Before / on / past the deadline; `None` while not yet classified (shown as "—").
    pub result: Option<Timeliness>,
    /// Free-text note (Ghi chú).
    pub note: Option<String>,
}

/// Why a PDF could not be made.
#[derive(Debug, thiserror::Error)]
pub enum ControlSheetError {
    /// An embedded font could not be read.
    #[error("control sheet: the embedded font {0} could not be read")]
    Font(&'static str),
    /// The page size was refused.
    #[error("control sheet: invalid page size {0} × {1} pt")]
    PageSize(f32, f32),
    /// krilla could not write the PDF.
    #[error("control sheet: writing the PDF failed: {0}")]
    Pdf(String),
}

/// The sheet's title.
pub const TITLE: &str = "PHIẾU KIỂM SOÁT QUÁ TRÌNH GIẢI QUYẾT HỒ SƠ";

const COLUMN_HEADERS: [&str; 6] = [
    "TT",
    "Tên cơ quan",
    "Thời gian giao, nhận hồ sơ",
    "Người giao / Người nhận",
    "Kết quả giải quyết hồ sơ (Trước hạn/Đúng hạn/Quá hạn)",
    "Ghi chú",
];

const NONE: &str = "—";

/// `HH:MM ngày DD/MM/YYYY` in Vietnam's time.
fn vn_time(t: &DateTime<FixedOffset>) -> String {
    t.with_timezone(&vn())
        .format("%H:%M ngày %d/%m/%Y")
        .to_string()
}

fn vn_time_or_none(t: Option<&DateTime<FixedOffset>>) -> String {
    t.map_or_else(|| NONE.to_owned(), vn_time)
}

fn or_none(s: Option<&String>) -> String {
    match s.map(|s| s.trim()) {
        Some(s) if !s.is_empty() => s.to_owned(),
        _ => NONE.to_owned(),
    }
}

/// One line of the sheet's header: a bold label and its value.
struct HeaderLine {
    label: &'static str,
    value: String,
}

fn header_lines(sheet: &ControlSheet) -> Vec<HeaderLine> {
    let mut lines = vec![
        HeaderLine {
            label: "Mã hồ sơ:",
            value: sheet.ma_ho_so.clone(),
        },
        HeaderLine {
            label: "(Kèm theo hồ sơ của:",
            value: format!("{})", or_none(sheet.applicant.as_ref())),
        },
        HeaderLine {
            label: "Thủ tục:",
            value: format!("{} – {}", sheet.ma_tthc, sheet.ten_tthc),
        },
        HeaderLine {
            label: "Cơ quan tiếp nhận:",
            value: sheet.receiving_unit.clone(),
        },
        HeaderLine {
            label: "Địa chỉ:",
            value: or_none(sheet.address.as_ref()),
        },
        HeaderLine {
            label: "Số điện thoại:",
            value: or_none(sheet.phone.as_ref()),
        },
        HeaderLine {
            label: "Thời gian nhận hồ sơ:",
            value: vn_time_or_none(sheet.received_at.as_ref()),
        },
        HeaderLine {
            label: "Thời gian hẹn trả kết quả:",
            value: vn_time_or_none(sheet.promised_at.as_ref()),
        },
    ];
    if let Some(returned) = &sheet.returned_at {
        lines.push(HeaderLine {
            label: "Thời gian trả kết quả:",
            value: vn_time(returned),
        });
    }
    lines.push(HeaderLine {
        label: "Trạng thái:",
        value: sheet.status_vi.clone(),
    });
    if let Some(chain) = &sheet.trace_chain {
        lines.push(HeaderLine {
            label: "Nhật ký liên thông:",
            value: chain.clone(),
        });
    }
    lines
}

/// The sheet's line about the dossier's trace chain (`lienthong_core::store::chain`):
/// "đã xác minh (trace chain verified …)" or "KHÔNG xác minh được (trace chain NOT verified:
/// reason)".
pub fn trace_chain_line(c: &lienthong_core::store::chain::DossierChain) -> String {
    if c.verified {
        let mut s = format!(
            "đã xác minh chuỗi băm (trace chain verified, {} sự kiện)",
            c.events
        );
        if let Some(r) = &c.reason {
            s.push_str(&format!("; {r}"));
        }
        s
    } else {
        format!(
            "KHÔNG xác minh được (trace chain NOT verified: {})",
            c.reason.as_deref().unwrap_or("unknown")
        )
    }
}

fn footer_text(sheet: &ControlSheet) -> String {
    format!(
        "Lập lúc {} bởi lienthong (từ nhật ký bàn giao của trục liên thông)",
        vn_time(&sheet.generated_at)
    )
}

/// A row's six cells, each a list of paragraphs.
fn row_cells(number: usize, row: &ControlSheetRow) -> [Vec<String>; 6] {
    [
        vec![number.to_string()],
        vec![
            format!("Giao: {}", row.from_unit),
            format!("→ Nhận: {}", row.to_unit),
        ],
        vec![
            format!("Giao: {}", vn_time_or_none(row.handed_at.as_ref())),
            format!("Nhận: {}", vn_time_or_none(row.received_at.as_ref())),
        ],
        vec![
            format!("Giao: {}", or_none(row.handing_officer.as_ref())),
            format!("Nhận: {}", or_none(row.receiving_officer.as_ref())),
        ],
        vec![row.result.map_or(NONE, Timeliness::vi).to_owned()],
        vec![row.note.clone().unwrap_or_default()],
    ]
}

// ---------------------------------------------------------------------------------------------
// HTML

const CSS: &str = r#"
@page { size: A4 landscape; margin: 12mm; }
* { box-sizing: border-box; }
body { font-family: "DejaVu Sans", "Noto Sans", Arial, sans-serif; font-size: 10pt; color: #000;
       background: #fff; margin: 0 auto; max-width: 297mm; padding: 8mm; line-height: 1.35; }
h1 { font-size: 14pt; text-align: center; margin: 0 0 4mm; }
.header { margin: 0 0 4mm; }
.header p { margin: 0.5mm 0; }
.header .label { font-weight: bold; }
table { width: 100%; border-collapse: collapse; }
thead { display: table-header-group; }
tr { page-break-inside: avoid; break-inside: avoid; }
th, td { border: 0.5pt solid #000; padding: 1.5mm; vertical-align: top; text-align: left;
         overflow-wrap: anywhere; }
th { background: #e6e6e6; font-weight: bold; }
td.tt, th.tt { text-align: center; width: 3%; }
td.result { white-space: nowrap; }
td.result.late { font-weight: bold; }
.footer { margin-top: 4mm; font-size: 8pt; color: #333; }
@media print { body { padding: 0; max-width: none; } }
"#;

fn result_class(result: Option<Timeliness>) -> &'static str {
    match result {
        Some(Timeliness::Early) => "result early",
        Some(Timeliness::OnTime) => "result on-time",
        Some(Timeliness::Late) => "result late",
        None => "result pending",
    }
}

fn paragraphs(cell: &[String]) -> Markup {
    html! {
        @for (i, p) in cell.iter().enumerate() {
            @if i > 0 { br; }
            (p)
        }
    }
}

/// The sheet as a complete HTML5 document (UTF-8, `lang="vi"`, inline print-friendly CSS);
/// every piece of data is escaped.
pub fn render_html(sheet: &ControlSheet) -> String {
    let markup = html! {
        (DOCTYPE)
        html lang="vi" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (TITLE) " – " (sheet.ma_ho_so) }
                style { (PreEscaped(CSS)) }
            }
            body {
                h1 { (TITLE) }
                div.header {
                    @for line in header_lines(sheet) {
                        p { span.label { (line.label) } " " (line.value) }
                    }
                }
                table {
                    thead {
                        tr {
                            @for (i, h) in COLUMN_HEADERS.iter().enumerate() {
                                th class=[(i == 0).then_some("tt")] scope="col" { (h) }
                            }
                        }
                    }
                    tbody {
                        @if sheet.rows.is_empty() {
                            tr { td colspan="6" { "(Chưa có lần bàn giao nào)" } }
                        }
                        @for (i, row) in sheet.rows.iter().enumerate() {
                            @let cells = row_cells(i + 1, row);
                            tr {
                                td.tt { (paragraphs(&cells[0])) }
                                td { (paragraphs(&cells[1])) }
                                td { (paragraphs(&cells[2])) }
                                td { (paragraphs(&cells[3])) }
                                td class=(result_class(row.result)) { (paragraphs(&cells[4])) }
                                td { (paragraphs(&cells[5])) }
                            }
                        }
                    }
                }
                p.footer { (footer_text(sheet)) }
            }
        }
    };
    markup.into_string()
}

// ---------------------------------------------------------------------------------------------
// PDF

const REGULAR_TTF: &[u8] = include_bytes!("../assets/fonts/DejaVuSans.ttf");
const BOLD_TTF: &[u8] = include_bytes!("../assets/fonts/DejaVuSans-Bold.ttf");

/// A4 landscape, in points.
const PAGE_W: f32 = 841.89;
const PAGE_H: f32 = 595.28;
const MARGIN_X: f32 = 36.0;
const MARGIN_TOP: f32 = 36.0;
/// The table stops this far above the page's bottom edge; the footer sits below it.
const MARGIN_BOTTOM: f32 = 44.0;
const FOOTER_BASELINE: f32 = PAGE_H - 22.0;

const TITLE_SIZE: f32 = 14.0;
const HEADER_SIZE: f32 = 10.0;
const CELL_SIZE: f32 = 8.5;
const FOOTER_SIZE: f32 = 7.5;
/// Line height as a multiple of the font size (room for Vietnamese stacked diacritics).
const LEADING: f32 = 1.3;
const CELL_PAD: f32 = 4.0;
const RULE_WIDTH: f32 = 0.5;

/// Column widths in points; they add up to the width between the margins.
const COLUMN_WIDTHS: [f32; 6] = [24.0, 250.0, 142.0, 120.0, 84.0, 149.89];

#[derive(Clone, Copy, PartialEq, Eq)]
enum Weight {
    Regular,
    Bold,
}

/// Measures text by shaping it with rustybuzz, as krilla does when it draws it.
struct Measurer<'a> {
    regular: rustybuzz::Face<'a>,
    bold: rustybuzz::Face<'a>,
}

impl Measurer<'static> {
    fn new() -> Result<Self, ControlSheetError> {
        Ok(Measurer {
            regular: rustybuzz::Face::from_slice(REGULAR_TTF, 0)
                .ok_or(ControlSheetError::Font("DejaVuSans.ttf"))?,
            bold: rustybuzz::Face::from_slice(BOLD_TTF, 0)
                .ok_or(ControlSheetError::Font("DejaVuSans-Bold.ttf"))?,
        })
    }
}

impl Measurer<'_> {
    fn shape(&self, text: &str, weight: Weight) -> (rustybuzz::GlyphBuffer, f32) {
        let face = match weight {
            Weight::Regular => &self.regular,
            Weight::Bold => &self.bold,
        };
        let mut buffer = rustybuzz::UnicodeBuffer::new();
        buffer.push_str(text);
        buffer.guess_segment_properties();
        let units_per_em = face.units_per_em().max(1) as f32;
        (rustybuzz::shape(face, &[], buffer), units_per_em)
    }

    /// The advance width of `text` set on one line, in points.
    fn width(&self, text: &str, weight: Weight, size: f32) -> f32 {
        let (glyphs, units_per_em) = self.shape(text, weight);
        let advance: i64 = glyphs
            .glyph_positions()
            .iter()
            .map(|p| i64::from(p.x_advance))
            .sum();
        advance as f32 / units_per_em * size
    }

    /// The byte length of the longest run of whole clusters (grapheme-like units the shaper
    /// keeps together) at the start of `text` that fits in `max`; at least one cluster.
    fn fitting_prefix(&self, text: &str, weight: Weight, size: f32, max: f32) -> usize {
        let (glyphs, units_per_em) = self.shape(text, weight);
        let mut width = 0.0;
        let mut fit = 0;
        let infos = glyphs.glyph_infos();
        for (i, (info, pos)) in infos.iter().zip(glyphs.glyph_positions()).enumerate() {
            let cluster = info.cluster as usize;
            let starts_cluster = i == 0 || infos[i - 1].cluster != info.cluster;
            if starts_cluster && cluster > 0 {
                if width > max {
                    break;
                }
                fit = cluster;
            }
            width += pos.x_advance as f32 / units_per_em * size;
        }
        if width <= max {
            fit = text.len();
        }
        if fit == 0 {
            // Not even one cluster fits: take the first one anyway.
            fit = infos
                .iter()
                .map(|info| info.cluster as usize)
                .find(|&c| c > 0)
                .unwrap_or(text.len());
        }
        fit
    }

    /// Greedy wrapping of one paragraph at the Unicode line-break opportunities (UAX #14);
    /// a word wider than `max` is cut between clusters. Always at least one line.
    fn wrap(&self, text: &str, weight: Weight, size: f32, max: f32) -> Vec<String> {
        let mut lines = Vec::new();
        let mut start = 0;
        let mut fit_end: Option<usize> = None;
        for (pos, opportunity) in unicode_linebreak::linebreaks(text) {
            if self.width(text[start..pos].trim_end(), weight, size) > max {
                if let Some(end) = fit_end.take() {
                    lines.push(text[start..end].trim_end().to_owned());
                    start = end;
                }
                loop {
                    let rest = text[start..pos].trim_end();
                    if rest.is_empty() || self.width(rest, weight, size) <= max {
                        break;
                    }
                    let cut = self.fitting_prefix(rest, weight, size, max);
                    if cut >= rest.len() {
                        break;
                    }
                    lines.push(rest[..cut].to_owned());
                    start += cut;
                }
            }
            if opportunity == BreakOpportunity::Mandatory {
                lines.push(text[start..pos].trim_end().to_owned());
                start = pos;
                fit_end = None;
            } else {
                fit_end = Some(pos);
            }
        }
        if lines.is_empty() {
            lines.push(String::new());
        }
        lines
    }

    /// Every paragraph of `cell` wrapped to `max`.
    fn wrap_cell(&self, cell: &[String], weight: Weight, size: f32, max: f32) -> Vec<String> {
        let mut lines: Vec<String> = cell
            .iter()
            .flat_map(|p| self.wrap(p, weight, size, max))
            .collect();
        if lines.is_empty() {
            lines.push(String::new());
        }
        lines
    }
}

/// One drawing operation; `y` grows downwards from the page's top edge, as in krilla.
enum Op {
    Text {
        x: f32,
        baseline: f32,
        weight: Weight,
        size: f32,
        text: String,
    },
    /// A cell: its border, with a grey fill for the table's header.
    Cell {
        x: f32,
        y: f32,
        w: f32,
        h: f32,
        shaded: bool,
    },
}

/// Lays the sheet out on pages of drawing operations.
struct Layout<'m> {
    m: &'m Measurer<'m>,
    pages: Vec<Vec<Op>>,
    y: f32,
    /// Whether the current page has table rows yet (a row that does not fit moves to the next
    /// page whole unless the page is still empty).
    page_has_rows: bool,
}

impl<'m> Layout<'m> {
    fn ops(&mut self) -> &mut Vec<Op> {
        if self.pages.is_empty() {
            self.pages.push(Vec::new());
        }
        let last = self.pages.len() - 1;
        &mut self.pages[last]
    }

    fn text(&mut self, x: f32, baseline: f32, weight: Weight, size: f32, text: String) {
        self.ops().push(Op::Text {
            x,
            baseline,
            weight,
            size,
            text,
        });
    }

    fn bottom(&self) -> f32 {
        PAGE_H - MARGIN_BOTTOM
    }

    fn title(&mut self) {
        let w = self.m.width(TITLE, Weight::Bold, TITLE_SIZE);
        let baseline = self.y + TITLE_SIZE;
        self.text(
            ((PAGE_W - w) / 2.0).max(MARGIN_X),
            baseline,
            Weight::Bold,
            TITLE_SIZE,
            TITLE.to_owned(),
        );
        self.y = baseline + TITLE_SIZE;
    }

    /// A bold label, then its value wrapped with a hanging indent.
    fn header_line(&mut self, line: &HeaderLine) {
        let line_h = HEADER_SIZE * LEADING;
        let label_w = self.m.width(line.label, Weight::Bold, HEADER_SIZE);
        let gap = self.m.width(" ", Weight::Regular, HEADER_SIZE);
        let value_x = MARGIN_X + label_w + gap;
        let max = PAGE_W - MARGIN_X - value_x;
        let baseline = self.y + HEADER_SIZE;
        self.text(
            MARGIN_X,
            baseline,
            Weight::Bold,
            HEADER_SIZE,
            line.label.to_owned(),
        );
        let wrapped = self
            .m
            .wrap(&line.value, Weight::Regular, HEADER_SIZE, max.max(100.0));
        for (i, l) in wrapped.into_iter().enumerate() {
            self.text(
                value_x,
                baseline + i as f32 * line_h,
                Weight::Regular,
                HEADER_SIZE,
                l,
            );
            self.y += line_h;
        }
    }

    /// Draws one table row (or the part `from..to` of its lines) at `self.y`.
    fn row_part(&mut self, cells: &[Vec<String>], from: usize, to: usize, header: bool) {
        let size = CELL_SIZE;
        let line_h = size * LEADING;
        let h = (to - from) as f32 * line_h + 2.0 * CELL_PAD;
        let weight = if header {
            Weight::Bold
        } else {
            Weight::Regular
        };
        let mut x = MARGIN_X;
        for (cell, w) in cells.iter().zip(COLUMN_WIDTHS) {
            let y = self.y;
            self.ops().push(Op::Cell {
                x,
                y,
                w,
                h,
                shaded: header,
            });
            for (i, line) in cell.iter().enumerate().take(to).skip(from) {
                self.text(
                    x + CELL_PAD,
                    y + CELL_PAD + size + (i - from) as f32 * line_h,
                    weight,
                    size,
                    line.clone(),
                );
            }
            x += w;
        }
        self.y += h;
    }

    fn wrapped_row(&self, cells: &[Vec<String>], weight: Weight) -> Vec<Vec<String>> {
        cells
            .iter()
            .zip(COLUMN_WIDTHS)
            .map(|(cell, w)| {
                self.m
                    .wrap_cell(cell, weight, CELL_SIZE, w - 2.0 * CELL_PAD)
            })
            .collect()
    }

    fn table_header(&mut self, header: &[Vec<String>]) {
        let lines = header.iter().map(Vec::len).max().unwrap_or(1);
        self.row_part(header, 0, lines, true);
    }

    fn new_page(&mut self, ma_ho_so: &str, header: &[Vec<String>]) {
        self.pages.push(Vec::new());
        self.y = MARGIN_TOP;
        let baseline = self.y + HEADER_SIZE;
        self.text(
            MARGIN_X,
            baseline,
            Weight::Regular,
            HEADER_SIZE,
            format!("Phiếu kiểm soát hồ sơ {ma_ho_so} (tiếp theo)"),
        );
        self.y = baseline + HEADER_SIZE;
        self.table_header(header);
        self.page_has_rows = false;
    }

    /// A body row, moved to the next page if it does not fit, or split across pages if it
    /// does not fit on a page of its own.
    fn row(&mut self, cells: &[Vec<String>], ma_ho_so: &str, header: &[Vec<String>]) {
        let line_h = CELL_SIZE * LEADING;
        let total = cells.iter().map(Vec::len).max().unwrap_or(1).max(1);
        let mut from = 0;
        loop {
            let room = ((self.bottom() - self.y - 2.0 * CELL_PAD) / line_h).floor();
            let fit = if room > 0.0 { room as usize } else { 0 };
            if fit >= total - from {
                self.row_part(cells, from, total, false);
                self.page_has_rows = true;
                return;
            }
            if self.page_has_rows {
                self.new_page(ma_ho_so, header);
                continue;
            }
            // Taller than a page: split it (at least one line per page, so this ends).
            let part = fit.max(1);
            self.row_part(cells, from, from + part, false);
            from += part;
            self.new_page(ma_ho_so, header);
        }
    }
}

fn nfc(s: &str) -> String {
    s.nfc().collect()
}

/// A copy of the sheet with every string in Unicode NFC, so each Vietnamese letter is one
/// precomposed glyph and extracts as one character.
fn normalized(sheet: &ControlSheet) -> ControlSheet {
    let opt = |s: &Option<String>| s.as_deref().map(nfc);
    ControlSheet {
        ma_ho_so: nfc(&sheet.ma_ho_so),
        ma_tthc: nfc(&sheet.ma_tthc),
        ten_tthc: nfc(&sheet.ten_tthc),
        receiving_unit: nfc(&sheet.receiving_unit),
        applicant: opt(&sheet.applicant),
        phone: opt(&sheet.phone),
        address: opt(&sheet.address),
        status_vi: nfc(&sheet.status_vi),
        rows: sheet
            .rows
            .iter()
            .map(|r| ControlSheetRow {
                from_unit: nfc(&r.from_unit),
                to_unit: nfc(&r.to_unit),
                handing_officer: opt(&r.handing_officer),
                receiving_officer: opt(&r.receiving_officer),
                note: opt(&r.note),
                ..r.clone()
            })
            .collect(),
        ..sheet.clone()
    }
}

fn layout(sheet: &ControlSheet, m: &Measurer<'_>) -> Vec<Vec<Op>> {
    let mut l = Layout {
        m,
        pages: vec![Vec::new()],
        y: MARGIN_TOP,
        page_has_rows: false,
    };
    l.title();
    for line in header_lines(sheet) {
        l.header_line(&line);
    }
    l.y += HEADER_SIZE * 0.6;

    let header_cells: Vec<Vec<String>> = COLUMN_HEADERS
        .iter()
        .map(|h| vec![(*h).to_owned()])
        .collect();
    let header = l.wrapped_row(&header_cells, Weight::Bold);
    // Keep the table's header with at least its first row.
    if l.y + 6.0 * CELL_SIZE * LEADING > l.bottom() {
        l.pages.push(Vec::new());
        l.y = MARGIN_TOP;
    }
    l.table_header(&header);
    if sheet.rows.is_empty() {
        let line_h = CELL_SIZE * LEADING;
        let h = line_h + 2.0 * CELL_PAD;
        let y = l.y;
        l.ops().push(Op::Cell {
            x: MARGIN_X,
            y,
            w: PAGE_W - 2.0 * MARGIN_X,
            h,
            shaded: false,
        });
        l.text(
            MARGIN_X + CELL_PAD,
            y + CELL_PAD + CELL_SIZE,
            Weight::Regular,
            CELL_SIZE,
            "(Chưa có lần bàn giao nào)".to_owned(),
        );
        l.y += h;
    }
    for (i, row) in sheet.rows.iter().enumerate() {
        let cells = l.wrapped_row(&row_cells(i + 1, row), Weight::Regular);
        l.row(&cells, &sheet.ma_ho_so, &header);
    }

    // Footers, now that the number of pages is known.
    let footer = footer_text(sheet);
    let pages = l.pages.len();
    for (i, ops) in l.pages.iter_mut().enumerate() {
        ops.push(Op::Text {
            x: MARGIN_X,
            baseline: FOOTER_BASELINE,
            weight: Weight::Regular,
            size: FOOTER_SIZE,
            text: footer.clone(),
        });
        let number = format!("Trang {}/{}", i + 1, pages);
        let w = m.width(&number, Weight::Regular, FOOTER_SIZE);
        ops.push(Op::Text {
            x: PAGE_W - MARGIN_X - w,
            baseline: FOOTER_BASELINE,
            weight: Weight::Regular,
            size: FOOTER_SIZE,
            text: number,
        });
    }
    l.pages
}

fn pdf_date(t: &DateTime<FixedOffset>) -> krilla::metadata::DateTime {
    use chrono::{Datelike, Timelike};
    let t = t.with_timezone(&vn());
    // Each value is in range by chrono's own invariants (month 1–12, hour 0–23, …).
    let small = |v: u32| u8::try_from(v).unwrap_or(0);
    krilla::metadata::DateTime::new(u16::try_from(t.year()).unwrap_or(0))
        .month(small(t.month()))
        .day(small(t.day()))
        .hour(small(t.hour()))
        .minute(small(t.minute()))
        .second(small(t.second()))
        .utc_offset_hour(7)
        .utc_offset_minute(0)
}

/// The sheet as a PDF: A4 landscape, the table's cells wrapped, as many pages as the rows need
/// (the table's header repeated on each), a footer with the page number on each page. The text
/// is real text in an embedded subset of DejaVu Sans, so it can be searched and copied.
pub fn render_pdf(sheet: &ControlSheet) -> Result<Vec<u8>, ControlSheetError> {
    let sheet = normalized(sheet);
    let measurer = Measurer::new()?;
    let pages = layout(&sheet, &measurer);

    let regular =
        Font::new(REGULAR_TTF.into(), 0).ok_or(ControlSheetError::Font("DejaVuSans.ttf"))?;
    let bold =
        Font::new(BOLD_TTF.into(), 0).ok_or(ControlSheetError::Font("DejaVuSans-Bold.ttf"))?;
    let black = Fill {
        paint: luma::Color::black().into(),
        ..Fill::default()
    };
    let shade = Fill {
        paint: luma::Color::new(230).into(),
        ..Fill::default()
    };
    let rule = Stroke {
        paint: luma::Color::black().into(),
        width: RULE_WIDTH,
        ..Stroke::default()
    };

    let mut document = Document::new();
    document.set_metadata(
        Metadata::new()
            .title(format!(
                "Phiếu kiểm soát quá trình giải quyết hồ sơ {}",
                sheet.ma_ho_so
            ))
            .language("vi".to_owned())
            .creator("lienthong".to_owned())
            .creation_date(pdf_date(&sheet.generated_at)),
    );
    for ops in pages {
        let settings = PageSettings::from_wh(PAGE_W, PAGE_H)
            .ok_or(ControlSheetError::PageSize(PAGE_W, PAGE_H))?;
        let mut page = document.start_page_with(settings);
        let mut surface = page.surface();
        for op in ops {
            match op {
                Op::Text {
                    x,
                    baseline,
                    weight,
                    size,
                    text,
                } => {
                    if text.is_empty() {
                        continue;
                    }
                    surface.set_stroke(None);
                    surface.set_fill(Some(black.clone()));
                    let font = match weight {
                        Weight::Regular => regular.clone(),
                        Weight::Bold => bold.clone(),
                    };
                    surface.draw_text(
                        Point::from_xy(x, baseline),
                        font,
                        size,
                        &text,
                        false,
                        TextDirection::Auto,
                    );
                }
                Op::Cell { x, y, w, h, shaded } => {
                    let Some(rect) = Rect::from_xywh(x, y, w, h) else {
                        continue;
                    };
                    let mut builder = PathBuilder::new();
                    builder.push_rect(rect);
                    let Some(path) = builder.finish() else {
                        continue;
                    };
                    surface.set_fill(shaded.then(|| shade.clone()));
                    surface.set_stroke(Some(rule.clone()));
                    surface.draw_path(&path);
                }
            }
        }
        surface.finish();
        page.finish();
    }
    document
        .finish()
        .map_err(|e| ControlSheetError::Pdf(format!("{e:?}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn measurer() -> Measurer<'static> {
        Measurer::new().expect("embedded fonts")
    }

    #[test]
    fn times_are_shown_in_vietnam_time() {
        let t = DateTime::parse_from_rfc3339("2026-11-02T01:05:00Z").expect("time");
        assert_eq!(vn_time(&t), "08:05 ngày 02/11/2026");
    }

    #[test]
    fn wrapping_keeps_every_line_within_the_width_and_loses_no_text() {
        let m = measurer();
        let text = "Liên thông đăng ký khai sinh, đăng ký thường trú, cấp thẻ bảo hiểm y tế cho trẻ em dưới 6 tuổi";
        for max in [40.0, 80.0, 150.0, 400.0] {
            let lines = m.wrap(text, Weight::Regular, 9.0, max);
            for line in &lines {
                let w = m.width(line, Weight::Regular, 9.0);
                // A single word wider than the column is the only thing allowed to overflow,
                // and the wrapper cuts those between clusters.
                assert!(w <= max + 0.01, "{line:?} is {w} pt wide, more than {max}");
            }
            assert_eq!(lines.join(" "), text, "at {max} pt");
        }
        assert_eq!(
            m.wrap(text, Weight::Regular, 9.0, 1000.0),
            vec![text.to_owned()]
        );
    }

    #[test]
    fn an_overlong_word_is_cut_between_letters() {
        let m = measurer();
        let word = "000.20.59.H48-261102-0007-ĐẶC-BIỆT-DÀI-KHÔNG-CÓ-KHOẢNG-TRẮNG";
        let lines = m.wrap(word, Weight::Regular, 9.0, 50.0);
        assert!(lines.len() > 1);
        assert_eq!(lines.concat(), word);
        for line in &lines {
            assert!(
                m.width(line, Weight::Regular, 9.0) <= 50.0 + 0.01,
                "{line:?}"
            );
        }
    }

    #[test]
    fn empty_and_multi_paragraph_text() {
        let m = measurer();
        assert_eq!(m.wrap("", Weight::Regular, 9.0, 50.0), vec![String::new()]);
        assert_eq!(
            m.wrap("một\nhai", Weight::Regular, 9.0, 500.0),
            vec!["một".to_owned(), "hai".to_owned()]
        );
    }
}
