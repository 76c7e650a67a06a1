//! The control sheet rendered as HTML and as PDF, the PDF read back with poppler's tools.

use std::path::{Path, PathBuf};
use std::process::Command;

use chrono::{DateTime, Duration, FixedOffset};
use lienthong::control_sheet::{ControlSheet, ControlSheetRow, TITLE, render_html, render_pdf};
use lienthong_core::calendar::Timeliness;
use unicode_normalization::UnicodeNormalization;

const MA_HO_SO: &str = "000.20.59.H48-261102-0007";
const APPLICANT: &str = "Nguyễn Thị Ánh Tuyết";
const CENTRE: &str = "Trung tâm Hành chính công thành phố Quảng Ngãi";
const PHUONG: &str = "Ủy ban nhân dân phường Nghĩa Lộ (hộ tịch)";
const CONG_AN: &str = "Công an tỉnh Quảng Ngãi";
const BHXH: &str = "Bảo hiểm xã hội tỉnh Quảng Ngãi";
const SCRIPT_NOTE: &str = "<script>alert(\"x\")</script> & \"trích dẫn\"";

fn t(s: &str) -> DateTime<FixedOffset> {
    DateTime::parse_from_rfc3339(s).expect("test time")
}

fn row(
    from: &str,
    to: &str,
    handed: DateTime<FixedOffset>,
    officers: (&str, &str),
    result: Option<Timeliness>,
    note: Option<&str>,
) -> ControlSheetRow {
    ControlSheetRow {
        from_unit: from.to_owned(),
        to_unit: to.to_owned(),
        handed_at: Some(handed),
        received_at: Some(handed + Duration::minutes(25)),
        handing_officer: Some(officers.0.to_owned()),
        receiving_officer: Some(officers.1.to_owned()),
        result,
        note: note.map(str::to_owned),
    }
}

/// A birth liên thông dossier (khai sinh – thường trú – thẻ BHYT) with 3 real hand-overs and
/// 40 more (supplements sent back and forth) so that the table needs a second page.
fn sheet() -> ControlSheet {
    let mut rows = vec![
        row(
            CENTRE,
            PHUONG,
            t("2026-11-02T09:00:00+07:00"),
            ("Trần Văn Minh", "Lê Thị Hoa"),
            Some(Timeliness::Early),
            None,
        ),
        row(
            PHUONG,
            CONG_AN,
            t("2026-11-03T10:00:00+07:00"),
            ("Lê Thị Hoa", "Phạm Đức Thắng"),
            Some(Timeliness::OnTime),
            Some("Đã đăng ký khai sinh, số 125/2026"),
        ),
        row(
            CONG_AN,
            BHXH,
            t("2026-11-04T14:00:00+07:00"),
            ("Phạm Đức Thắng", "Võ Thị Thu Trang"),
            Some(Timeliness::Late),
            Some("Quá hạn 3 giờ làm việc"),
        ),
    ];
    let units = [BHXH, CENTRE, PHUONG, CONG_AN];
    let results = [
        Some(Timeliness::Early),
        Some(Timeliness::OnTime),
        Some(Timeliness::Late),
        None,
    ];
    for i in 0..40usize {
        let handed = t("2026-11-09T08:00:00+07:00") + Duration::hours(26 * i as i64);
        let note = if i == 5 {
            Some(SCRIPT_NOTE.to_owned())
        } else if i % 3 == 0 {
            Some(format!(
                "Bổ sung lần {}: giấy chứng sinh bản chính, tờ khai điều chỉnh thông tin cư trú \
                 (mẫu CT01) có xác nhận của chủ hộ; đã kiểm tra đầy đủ, hợp lệ",
                i + 1
            ))
        } else {
            None
        };
        rows.push(ControlSheetRow {
            note,
            ..row(
                units[i % 4],
                units[(i + 1) % 4],
                handed,
                ("Nguyễn Hữu Phước", "Đặng Thị Mỹ Dung"),
                results[i % 4],
                None,
            )
        });
    }
    ControlSheet {
        ma_ho_so: MA_HO_SO.to_owned(),
        ma_tthc: "1.001193".to_owned(),
        ten_tthc: "Liên thông đăng ký khai sinh, đăng ký thường trú, cấp thẻ bảo hiểm y tế \
                   cho trẻ em dưới 6 tuổi"
            .to_owned(),
        receiving_unit: CENTRE.to_owned(),
        applicant: Some(APPLICANT.to_owned()),
        phone: Some("0905 123 456".to_owned()),
        address: Some("Số 12 đường Nguyễn Nghiêm, phường Nghĩa Lộ, tỉnh Quảng Ngãi".to_owned()),
        received_at: Some(t("2026-11-02T08:15:00+07:00")),
        promised_at: Some(t("2026-11-11T17:00:00+07:00")),
        returned_at: None,
        status_vi: "Đang xử lý".to_owned(),
        rows,
        trace_chain: Some("đã xác minh chuỗi băm (trace chain verified, 12 sự kiện)".to_owned()),
        generated_at: t("2026-11-05T02:30:00Z"),
    }
}

fn nfc(s: &str) -> String {
    s.nfc().collect()
}

/// Runs one of poppler's tools; fails (never skips) when it is missing.
fn poppler(tool: &str, args: &[&str], pdf: &Path) -> String {
    let out = Command::new(tool)
        .args(args)
        .arg(pdf)
        .args(if tool == "pdftotext" {
            &["-"][..]
        } else {
            &[][..]
        })
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run {tool} ({e}): the control-sheet tests need poppler-utils; \
                 run ./scripts/ensure-deps"
            )
        });
    assert!(
        out.status.success(),
        "{tool} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("poppler prints UTF-8")
}

/// Removes a PDF written by [`write_pdf`], unless KEEP_CONTROL_SHEET_PDF is set (to look at it).
fn clean_up(pdf: &Path) {
    if std::env::var_os("KEEP_CONTROL_SHEET_PDF").is_some() {
        eprintln!("kept {}", pdf.display());
    } else if let Some(dir) = pdf.parent() {
        let _ = std::fs::remove_dir_all(dir);
    }
}

fn page_count(pdf: &Path) -> u32 {
    let info = poppler("pdfinfo", &[], pdf);
    info.lines()
        .find_map(|l| l.strip_prefix("Pages:"))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("pdfinfo gave no page count:\n{info}"))
}

fn write_pdf(name: &str, bytes: &[u8]) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("control_sheet-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join("phieu-kiem-soat.pdf");
    std::fs::write(&path, bytes).expect("write the PDF");
    path
}

#[test]
fn pdf_text_is_extractable_vietnamese_in_an_embedded_font_on_several_pages() {
    let sheet = sheet();
    let pdf = render_pdf(&sheet).expect("render the PDF");
    assert!(pdf.starts_with(b"%PDF-"));
    let path = write_pdf("pdf", &pdf);

    // The text, with its diacritics.
    let text = poppler("pdftotext", &["-layout", "-enc", "UTF-8"], &path);
    let text_nfc = nfc(&text);
    for expected in [
        TITLE,
        MA_HO_SO,
        APPLICANT,
        "Trước hạn",
        "Đúng hạn",
        "Quá hạn",
        BHXH,
        CENTRE,
        "Thời gian hẹn trả kết quả: 17:00 ngày 11/11/2026",
        "Lập lúc 09:30 ngày 05/11/2026 bởi lienthong",
    ] {
        assert!(
            text_nfc.contains(&nfc(expected)),
            "pdftotext output lacks {expected:?}:\n{text}"
        );
    }
    // Precomposed letters come back as themselves, not only after normalising.
    for letter in ["ế", "ữ", "ạ", "Đ", "Ủ", "ấ", "ở"] {
        assert!(text.contains(letter), "pdftotext output lacks {letter:?}");
    }
    // Each result sits on its own row: the line with the row's hand-over time carries it.
    for (handed, result) in [
        ("09:00 ngày 02/11/2026", "Trước hạn"),
        ("10:00 ngày 03/11/2026", "Đúng hạn"),
        ("14:00 ngày 04/11/2026", "Quá hạn"),
    ] {
        let line = text_nfc
            .lines()
            .find(|l| l.contains(&format!("Giao: {handed}")))
            .unwrap_or_else(|| panic!("no line with the hand-over at {handed}:\n{text}"));
        assert!(line.contains(&nfc(result)), "{handed}: {line:?}");
    }
    // The table's header is repeated on the second page.
    assert!(text_nfc.matches(&nfc("Tên cơ quan")).count() >= 2, "{text}");

    // Every font embedded (and mapped to Unicode), DejaVu among them.
    let fonts = poppler("pdffonts", &[], &path);
    let lines: Vec<&str> = fonts.lines().collect();
    assert!(lines.len() >= 3, "pdffonts lists no font:\n{fonts}");
    let columns: Vec<(usize, usize)> = {
        let dashes = lines[1];
        let mut spans = Vec::new();
        let mut start = None;
        for (i, c) in dashes.char_indices().chain([(dashes.len(), ' ')]) {
            match (c, start) {
                ('-', None) => start = Some(i),
                (' ', Some(s)) => {
                    spans.push((s, i));
                    start = None;
                }
                _ => {}
            }
        }
        spans
    };
    let column = |name: &str| {
        let at = lines[0].find(name).expect("pdffonts header column");
        *columns
            .iter()
            .find(|(s, e)| (*s..*e).contains(&at))
            .expect("column under the header")
    };
    let (emb, uni) = (column("emb"), column("uni"));
    for line in &lines[2..] {
        assert_eq!(
            line.get(emb.0..emb.1).map(str::trim),
            Some("yes"),
            "not embedded: {line}"
        );
        assert_eq!(
            line.get(uni.0..uni.1).map(str::trim),
            Some("yes"),
            "no ToUnicode: {line}"
        );
    }
    assert!(
        lines[2..].iter().any(|l| l.contains("DejaVu")),
        "no DejaVu font:\n{fonts}"
    );

    // Several pages.
    let pages = page_count(&path);
    assert!(pages >= 2, "{pages} page(s)");
    assert!(text.contains(&format!("Trang {pages}/{pages}")), "{text}");

    clean_up(&path);
}

#[test]
fn a_short_sheet_fits_one_page_and_an_empty_one_renders() {
    let mut sheet = sheet();
    sheet.rows.truncate(3);
    let path = write_pdf("short", &render_pdf(&sheet).expect("render"));
    assert_eq!(page_count(&path), 1);

    sheet.rows.clear();
    sheet.applicant = None;
    let path2 = write_pdf("empty", &render_pdf(&sheet).expect("render"));
    let text = nfc(&poppler("pdftotext", &["-layout", "-enc", "UTF-8"], &path2));
    assert!(text.contains(&nfc("Chưa có lần bàn giao nào")), "{text}");
    assert!(text.contains(&nfc("(Kèm theo hồ sơ của: —)")), "{text}");

    clean_up(&path);
    clean_up(&path2);
}

#[test]
fn html_is_a_complete_escaped_vietnamese_document() {
    let sheet = sheet();
    let html = render_html(&sheet);
    assert!(html.starts_with("<!DOCTYPE html>"), "{}", &html[..80]);
    assert!(html.contains(r#"<html lang="vi">"#));
    assert!(html.contains(r#"charset="utf-8""#));
    for expected in [
        TITLE,
        MA_HO_SO,
        APPLICANT,
        "Mã hồ sơ:",
        "(Kèm theo hồ sơ của:",
        "Thủ tục:</span> 1.001193 – Liên thông đăng ký khai sinh",
        "Cơ quan tiếp nhận:",
        "Thời gian nhận hồ sơ:</span> 08:15 ngày 02/11/2026",
        "Thời gian hẹn trả kết quả:</span> 17:00 ngày 11/11/2026",
        "Trạng thái:</span> Đang xử lý",
        "Giao: 14:00 ngày 04/11/2026",
        "Nhận: 14:25 ngày 04/11/2026",
        "Trước hạn",
        "Đúng hạn",
        "Quá hạn 3 giờ làm việc",
        "→ Nhận: Bảo hiểm xã hội tỉnh Quảng Ngãi",
        "Ủy ban nhân dân phường Nghĩa Lộ (hộ tịch)",
        "Lập lúc 09:30 ngày 05/11/2026 bởi lienthong",
    ] {
        assert!(html.contains(expected), "HTML lacks {expected:?}");
    }
    // One table row per hand-over, plus the header's.
    assert_eq!(html.matches("<tr>").count(), sheet.rows.len() + 1);
    // The note's markup is text, not markup.
    assert!(!html.contains("<script>"), "unescaped <script>");
    assert!(
        html.contains(
            "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; &quot;trích dẫn&quot;"
        )
    );
}

#[test]
fn a_row_taller_than_a_page_is_split_across_pages_without_losing_text() {
    let mut sheet = sheet();
    sheet.rows.truncate(3);
    let note: Vec<String> = (1..=600).map(|i| format!("Ưu{i}")).collect();
    sheet.rows[2].note = Some(note.join(" "));
    let path = write_pdf("tall", &render_pdf(&sheet).expect("render"));
    let text = nfc(&poppler("pdftotext", &["-layout", "-enc", "UTF-8"], &path));
    let words: std::collections::HashSet<&str> = text.split_whitespace().collect();
    for w in &note {
        assert!(words.contains(nfc(w).as_str()), "{w} lost:\n{text}");
    }
    assert!(page_count(&path) >= 2);
    clean_up(&path);
}
