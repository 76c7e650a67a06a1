//! The one rule for outcomes, as a table: every adapter, built from the shipped registry as the
//! bus builds it, meets the same set of canned agency replies from a real HTTP server on
//! loopback (axum), for every operation it has — readable success, readable refusal (in a 4xx
//! and in a 2xx), readable "not found", a readable body with its key field missing, an HTML
//! page, an empty body, a truncated body, the other format family, and a 503 — and each cell's
//! classification is asserted. The tables are built from the outcomes and must appear verbatim
//! in `adapters/README.md`, so the documented table is the tested one.

mod common;

use std::sync::Arc;

use axum::body::Bytes;
use axum::http::{HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use common::*;
use lienthong_adapters::edxml::{dossier, read, write};
use lienthong_adapters::http::snippet;
use lienthong_adapters::{Adapter, Outcome, StatusLookup};
use lienthong_core::envelope::Envelope;
use serde_json::{Value, json};

/// The canned replies, in table order: (URL segment, the table's words).
const ROWS: [(&str, &str); 10] = [
    ("success", "readable success"),
    ("refusal-4xx", "readable refusal in a 4xx"),
    ("refusal-2xx", "readable refusal in a 2xx"),
    ("not-found", "readable \"not found\""),
    ("key-missing", "readable, key field missing"),
    ("html", "HTML page (200)"),
    ("empty", "empty body (200)"),
    ("truncated", "truncated body"),
    ("other-format", "the other format"),
    ("unavailable", "503"),
];

/// A long HTML page, as a proxy or a maintenance screen answers (over 300 characters, so the
/// excerpt shows its clipping).
fn html_page() -> String {
    format!(
        "<!DOCTYPE html><html><head><title>Bảo trì hệ thống</title></head><body><h1>Hệ thống đang bảo trì</h1><p>{}</p></body></html>",
        "Xin quý khách vui lòng quay lại sau. ".repeat(12)
    )
}

const JSON: &str = "application/json";
const XML: &str = "application/xml; charset=utf-8";
const BHXH_NS: &str = "urn:lienthong:agency:bhxh:1";
const TAX_NS: &str = "urn:lienthong:agency:tax-land:1";
const MAPPED_NS: &str = "urn:example:agency:1";
/// The shipped SOAP civil-status office's namespace (mapped, SOAP 1.1).
const SOAP_NS: &str = "urn:lienthong:agency:civil-status-soap:1";
/// TP Quảng Ngãi's civil-status office (mapped, SOAP 1.1).
const MAPPED_SOAP: &str = "000.10.51.H48";

/// A SOAP 1.1 envelope around `body`.
fn soap(body: &str) -> String {
    format!(
        r#"<s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/"><s:Body>{body}</s:Body></s:Envelope>"#
    )
}

/// A SOAP 1.1 fault of class `code` with the office's `ma_loi` in the detail.
fn soap_fault(code: &str, ma_loi: &str) -> String {
    soap(&format!(
        r#"<s:Fault><faultcode>s:{code}</faultcode><faultstring>Lỗi {ma_loi}</faultstring><detail><LoiNghiepVu xmlns="{SOAP_NS}"><MaLoi>{ma_loi}</MaLoi><MoTaLoi>Lỗi</MoTaLoi></LoiNghiepVu></detail></s:Fault>"#
    ))
}

/// A canned answer: status, content type, body.
type Canned = (u16, &'static str, String);

fn xml(root: &str, ns: &str, fields: &[(&str, &str)]) -> String {
    let mut b = lienthong_adapters::xml::Builder::new(root, ns);
    for (k, v) in fields {
        b.text(k, v);
    }
    String::from_utf8_lossy(&b.finish(root)).into_owned()
}

/// What the interface family answers for `op` (`submit`, `cancel`, `payment`, `status`, or a
/// DVCQG service) in the rows that are its own: success, refusals, not found, key missing.
fn family_reply(family: &str, op: &str, row: &str, request: &[u8]) -> Option<Canned> {
    let status_op = op == "status";
    Some(match (family, row) {
        ("police" | "customs", "success") if status_op => (
            200,
            JSON,
            json!({"MaHoSo": "M", "MaTiepNhan": "R-1", "TrangThaiHoSo": 4, "ThoiDiemCapNhat": "20261129143000"}).to_string(),
        ),
        ("police" | "customs", "success") => (
            202,
            JSON,
            json!({"MaHoSo": "M", "MaTiepNhan": "R-1", "TrangThaiHoSo": 2, "ThoiDiemTiepNhan": "20261129091501"}).to_string(),
        ),
        ("police" | "customs", "refusal-4xx") => (
            422,
            JSON,
            json!({"MaLoi": "E_DU_LIEU_KHONG_HOP_LE", "MoTaLoi": "Trường NgaySinh không hợp lệ"})
                .to_string(),
        ),
        ("police" | "customs", "refusal-2xx") => (
            200,
            JSON,
            json!({"MaLoi": "E_DU_LIEU_KHONG_HOP_LE", "MoTaLoi": "Trường NgaySinh không hợp lệ"})
                .to_string(),
        ),
        ("police" | "customs", "not-found") => (
            404,
            JSON,
            json!({"MaLoi": "E_KHONG_TIM_THAY", "MoTaLoi": "Không tìm thấy hồ sơ"}).to_string(),
        ),
        ("police" | "customs", "key-missing") if status_op => (
            200,
            JSON,
            json!({"MaHoSo": "M", "MaTiepNhan": "R-1"}).to_string(),
        ),
        ("police" | "customs", "key-missing") => {
            (202, JSON, json!({"MaHoSo": "M", "TrangThaiHoSo": 2}).to_string())
        }
        ("bhxh" | "tax", _) => {
            let ns = if family == "bhxh" { BHXH_NS } else { TAX_NS };
            match row {
                "success" if status_op => (
                    200,
                    XML,
                    xml(
                        "TrangThai",
                        ns,
                        &[("MaHoSo", "M"), ("MaTiepNhan", "R-1"), ("TrangThaiHoSo", "4")],
                    ),
                ),
                "success" => (
                    200,
                    XML,
                    xml(
                        "BienNhan",
                        ns,
                        &[
                            ("KetQua", "THANH_CONG"),
                            ("MaHoSo", "M"),
                            ("MaTiepNhan", "R-1"),
                            ("ThoiDiemTiepNhan", "20261129091502"),
                        ],
                    ),
                ),
                "refusal-4xx" | "refusal-2xx" => (
                    if row == "refusal-4xx" { 422 } else { 200 },
                    XML,
                    xml(
                        "BienNhan",
                        ns,
                        &[
                            ("KetQua", "LOI"),
                            ("MaHoSo", "M"),
                            ("MaLoi", "E_DOI_TUONG"),
                            ("MoTaLoi", "Đối tượng đã có thẻ BHYT còn hạn"),
                        ],
                    ),
                ),
                // BHXH answers an unknown dossier 200, Tax 404 (their reference interfaces).
                "not-found" => (
                    if family == "bhxh" { 200 } else { 404 },
                    XML,
                    xml(
                        "BienNhan",
                        ns,
                        &[
                            ("KetQua", "LOI"),
                            ("MaHoSo", "M"),
                            ("MaLoi", "E_KHONG_TIM_THAY"),
                            ("MoTaLoi", "Không tìm thấy hồ sơ"),
                        ],
                    ),
                ),
                "key-missing" if status_op => (
                    200,
                    XML,
                    xml("TrangThai", ns, &[("MaHoSo", "M"), ("MaTiepNhan", "R-1")]),
                ),
                "key-missing" => (
                    200,
                    XML,
                    xml("BienNhan", ns, &[("MaHoSo", "M"), ("MaTiepNhan", "R-1")]),
                ),
                _ => return None,
            }
        }
        ("mapped-json", _) => match row {
            "success" if status_op => (
                200,
                JSON,
                json!({"MaHoSo": "M", "MaTiepNhan": "HT-1", "KetQua": "DA_DANG_KY"}).to_string(),
            ),
            "success" => (
                200,
                JSON,
                json!({"error_code": "00", "message": "Thành công", "MaTiepNhan": "HT-1"})
                    .to_string(),
            ),
            "refusal-4xx" => (
                422,
                JSON,
                json!({"error_code": "05", "message": "Dữ liệu không hợp lệ"}).to_string(),
            ),
            "refusal-2xx" => (
                200,
                JSON,
                json!({"error_code": "99", "message": "Lỗi hệ thống"}).to_string(),
            ),
            "not-found" => (
                404,
                JSON,
                json!({"error_code": "04", "message": "Không tìm thấy hồ sơ"}).to_string(),
            ),
            "key-missing" if status_op => {
                (200, JSON, json!({"MaHoSo": "M", "MaTiepNhan": "HT-1"}).to_string())
            }
            "key-missing" => (
                200,
                JSON,
                json!({"message": "Thành công", "MaTiepNhan": "HT-1"}).to_string(),
            ),
            _ => return None,
        },
        ("mapped-xml", _) => match row {
            "success" if status_op => (
                200,
                XML,
                xml(
                    "HoSo",
                    MAPPED_NS,
                    &[("MaHoSo", "M"), ("TrangThaiHoSo", "4")],
                ),
            ),
            "success" => (
                200,
                XML,
                xml(
                    "KetQuaTiepNhan",
                    MAPPED_NS,
                    &[("KetQua", "THANH_CONG"), ("MaTiepNhan", "X-1")],
                ),
            ),
            "refusal-4xx" | "refusal-2xx" | "not-found" => (
                match row {
                    "refusal-4xx" => 422,
                    "refusal-2xx" => 200,
                    _ => 404,
                },
                XML,
                xml(
                    "KetQuaTiepNhan",
                    MAPPED_NS,
                    &[("KetQua", "LOI"), ("MoTaLoi", "Không tiếp nhận")],
                ),
            ),
            "key-missing" if status_op => (200, XML, xml("HoSo", MAPPED_NS, &[("MaHoSo", "M")])),
            "key-missing" => (
                200,
                XML,
                xml("KetQuaTiepNhan", MAPPED_NS, &[("MaTiepNhan", "X-1")]),
            ),
            _ => return None,
        },
        // SOAP 1.1: refusals are Client faults (in a 400, in a 200), "not found" the Client
        // fault E_KHONG_TIM_THAY (the lookup's `not_found`), in the 500 SOAP 1.1 uses.
        ("mapped-soap", _) => match row {
            "success" if status_op => (
                200,
                XML,
                soap(&format!(
                    r#"<TraCuuHoSoResponse xmlns="{SOAP_NS}"><MaHoSo>M</MaHoSo><MaTiepNhan>HTS-1</MaTiepNhan><TrangThai>DANG_XU_LY</TrangThai></TraCuuHoSoResponse>"#
                )),
            ),
            "success" => (
                200,
                XML,
                soap(&format!(
                    r#"<TiepNhanHoSoResponse xmlns="{SOAP_NS}"><KetQua trangThai="DA_TIEP_NHAN"><MaTiepNhan>HTS-1</MaTiepNhan></KetQua></TiepNhanHoSoResponse>"#
                )),
            ),
            "refusal-4xx" => (400, XML, soap_fault("Client", "E_DU_LIEU")),
            "refusal-2xx" => (200, XML, soap_fault("Client", "E_DU_LIEU")),
            "not-found" => (500, XML, soap_fault("Client", "E_KHONG_TIM_THAY")),
            "key-missing" if status_op => (
                200,
                XML,
                soap(&format!(
                    r#"<TraCuuHoSoResponse xmlns="{SOAP_NS}"><MaHoSo>M</MaHoSo></TraCuuHoSoResponse>"#
                )),
            ),
            "key-missing" => (
                200,
                XML,
                soap(&format!(
                    r#"<TiepNhanHoSoResponse xmlns="{SOAP_NS}"><KetQua trangThai="DA_TIEP_NHAN"/></TiepNhanHoSoResponse>"#
                )),
            ),
            _ => return None,
        },
        ("dvcqg", _) => match (op, row) {
            ("login", "success") => (200, JSON, json!({"error_code": "00", "session": "s-1"}).to_string()),
            ("login", "key-missing") => (200, JSON, json!({"error_code": "00"}).to_string()),
            ("TraCuuHoSo", "success") => (
                200,
                JSON,
                json!({"error_code": "00", "result": [{"MaHoSo": "M", "TrangThaiHoSo": "4"}]})
                    .to_string(),
            ),
            ("TraCuuHoSo", "not-found") => {
                (200, JSON, json!({"error_code": "00", "result": []}).to_string())
            }
            ("TraCuuHoSo", "key-missing") => (200, JSON, json!({"error_code": "00"}).to_string()),
            (_, "success") => (200, JSON, json!({"error_code": "00"}).to_string()),
            (_, "key-missing") => (200, JSON, json!({"message": "ok"}).to_string()),
            (_, "refusal-4xx") => (
                400,
                JSON,
                json!({"error_code": "05", "message": "thiếu data"}).to_string(),
            ),
            (_, "refusal-2xx") => (
                200,
                JSON,
                json!({"error_code": "99", "message": "Lỗi hệ thống"}).to_string(),
            ),
            (_, "not-found") => (
                200,
                JSON,
                json!({"error_code": "04", "message": "Không tìm thấy hồ sơ"}).to_string(),
            ),
            _ => return None,
        },
        ("edxml", _) => {
            let pkg = read::read_bytes(request).ok()?;
            let h = &pkg.message_header;
            let recall = h.status_code.is_some();
            let doc = if recall {
                h.response_for.first()?.document_id.clone()?
            } else {
                h.document_id.clone()?
            };
            let status_package = |code: &str, text: &str, with_code: bool| {
                let mut p = dossier::status_package(EDXML, &doc, code, text, "Lê Thị Mai");
                if !with_code {
                    p.message_header.status_code = None;
                }
                write::write(&p, Vec::new(), Vec::new())
                    .map(|(b, _)| String::from_utf8_lossy(&b).into_owned())
                    .unwrap_or_default()
            };
            match row {
                "success" if recall => (200, XML, status_package("15", "Đồng ý thu hồi", true)),
                "success" => (200, XML, status_package("01", "Đã đến", true)),
                "refusal-2xx" if recall => {
                    (200, XML, status_package("16", "Hồ sơ đã được giải quyết", true))
                }
                "refusal-2xx" => (200, XML, status_package("02", "Không thuộc thẩm quyền", true)),
                "refusal-4xx" => (
                    400,
                    "text/plain; charset=utf-8",
                    "not an edXML package".into(),
                ),
                "not-found" => (
                    404,
                    "text/plain; charset=utf-8",
                    format!("no document {doc}"),
                ),
                "key-missing" => (200, XML, status_package("01", "Đã đến", false)),
                _ => return None,
            }
        }
        _ => return None,
    })
}

/// The canned answer of `row` for `family`/`op`: the rows every family shares are made from its
/// success answer (truncated: its first half; the other format: a JSON family gets XML and an
/// XML family JSON, with the words of success in them).
fn reply(family: &str, op: &str, row: &str, request: &[u8]) -> Canned {
    if let Some(c) = family_reply(family, op, row, request) {
        return c;
    }
    let success =
        family_reply(family, op, "success", request).unwrap_or((200, JSON, String::new()));
    let json_family = success.1 == JSON;
    match row {
        "html" => (200, "text/html; charset=utf-8", html_page()),
        "empty" => (200, success.1, String::new()),
        "truncated" => {
            let mut cut = success.2.len() / 2;
            while !success.2.is_char_boundary(cut) {
                cut -= 1;
            }
            (success.0, success.1, success.2[..cut].to_string())
        }
        "other-format" if json_family => (
            200,
            XML,
            xml(
                "BienNhan",
                BHXH_NS,
                &[("KetQua", "THANH_CONG"), ("MaTiepNhan", "R-1"), ("error_code", "00")],
            ),
        ),
        "other-format" => (
            200,
            JSON,
            json!({"KetQua": "THANH_CONG", "MaTiepNhan": "R-1", "TrangThaiHoSo": 4, "StatusCode": "01"})
                .to_string(),
        ),
        _ => (
            503,
            "text/plain; charset=utf-8",
            "Service Unavailable".into(),
        ),
    }
}

/// The agency server: `/{row}/{family}/…` answers `row`'s canned reply for the operation the
/// rest of the path (and, for DVCQG, the `service`) names. A DVCQG family is `dvcqg-<call>`:
/// only that call gets the row, the others succeed.
async fn agency(method: Method, uri: Uri, body: Bytes) -> Response {
    let parts: Vec<&str> = uri.path().trim_start_matches('/').splitn(3, '/').collect();
    let (row, family, rest) = (
        parts.first().copied().unwrap_or(""),
        parts.get(1).copied().unwrap_or(""),
        parts.get(2).copied().unwrap_or(""),
    );
    let (family, op, row) = if let Some(target) = family.strip_prefix("dvcqg-") {
        let call = if rest == "auth" {
            "login".to_string()
        } else {
            serde_json::from_slice::<Value>(&body)
                .ok()
                .and_then(|v| v.get("service").and_then(Value::as_str).map(str::to_string))
                .unwrap_or_default()
        };
        let applies = call == target || (target == "status" && call == "TraCuuHoSo");
        ("dvcqg", call, if applies { row } else { "success" })
    } else {
        let op = if method == Method::GET
            || (family == "mapped-soap" && String::from_utf8_lossy(&body).contains("TraCuuHoSo"))
        {
            "status"
        } else if rest.ends_with("/huy") {
            "cancel"
        } else if rest.ends_with("nop-tien") {
            "payment"
        } else {
            "submit"
        };
        (family, op.to_string(), row)
    };
    let (status, ct, text) = reply(family, &op, row, &body);
    let mut r = (
        StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        text,
    )
        .into_response();
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(ct));
    r
}

async fn serve() -> String {
    let app = axum::Router::new().fallback(agency);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    format!("http://{addr}")
}

/// One column of a table: an adapter's operation.
struct Column {
    /// The table's heading.
    heading: &'static str,
    /// The unit (shipped registry).
    unit: &'static str,
    /// The family segment of the endpoint.
    family: &'static str,
    /// What the unit's settings get on top of the shipped ones.
    settings: Option<Value>,
    /// The envelope the operation delivers (none: the status lookup).
    envelope: Option<fn() -> Envelope>,
}

fn mapped_xml_settings() -> Value {
    json!({
        "format": "xml", "xml_root": "HoSo", "xml_namespace": MAPPED_NS,
        "submit_path": "/ho-so", "status_path": "/ho-so/{ma_ho_so}",
        "request": {"MaHoSo": "/ma_ho_so", "MaThamChieu": "/message_id"},
        "success": {"field": "KetQua", "equals": "THANH_CONG", "receipt": "MaTiepNhan",
                    "message": "MoTaLoi"},
        "callback": {"ma_ho_so": "MaHoSo", "reference": "MaThamChieu", "status": "TrangThaiHoSo"}
    })
}

fn col(
    heading: &'static str,
    unit: &'static str,
    family: &'static str,
    envelope: Option<fn() -> Envelope>,
) -> Column {
    Column {
        heading,
        unit,
        family,
        settings: None,
        envelope,
    }
}

fn delivering() -> Vec<Column> {
    vec![
        col("Police submit", POLICE, "police", Some(|| birth(POLICE))),
        col("Police cancel", POLICE, "police", Some(|| cancel(POLICE))),
        col("Customs submit", CUSTOMS, "customs", Some(customs)),
        col("BHXH submit", BHXH, "bhxh", Some(|| birth(BHXH))),
        col("BHXH cancel", BHXH, "bhxh", Some(|| cancel(BHXH))),
        col("Tax form", TAX, "tax", Some(tax_form)),
        col("Tax XacNhanNopTien", TAX, "tax", Some(tax_payment)),
        col("Tax cancel", TAX, "tax", Some(|| cancel(TAX))),
        col(
            "mapped JSON submit",
            MAPPED,
            "mapped-json",
            Some(|| birth(MAPPED)),
        ),
        Column {
            settings: Some(mapped_xml_settings()),
            ..col(
                "mapped XML submit",
                MAPPED,
                "mapped-xml",
                Some(|| birth(MAPPED)),
            )
        },
        col(
            "mapped SOAP submit",
            MAPPED_SOAP,
            "mapped-soap",
            Some(|| birth(MAPPED_SOAP)),
        ),
        col("DVCQG login", DVCQG, "dvcqg-login", Some(portal_status)),
        col(
            "DVCQG TraCuuHoSo",
            DVCQG,
            "dvcqg-TraCuuHoSo",
            Some(portal_status),
        ),
        col(
            "DVCQG DongBoHoSoMC",
            DVCQG,
            "dvcqg-DongBoHoSoMC",
            Some(portal_status),
        ),
        col(
            "DVCQG CapNhatTienDoHoSoMC",
            DVCQG,
            "dvcqg-CapNhatTienDoHoSoMC",
            Some(portal_status),
        ),
        col("edXML push", EDXML, "edxml", Some(|| birth(EDXML))),
        col("edXML recall", EDXML, "edxml", Some(|| cancel(EDXML))),
    ]
}

fn lookups() -> Vec<Column> {
    vec![
        col("Police", POLICE, "police", None),
        col("Customs", CUSTOMS, "customs", None),
        col("BHXH", BHXH, "bhxh", None),
        col("Tax", TAX, "tax", None),
        col("mapped JSON", MAPPED, "mapped-json", None),
        Column {
            settings: Some(mapped_xml_settings()),
            ..col("mapped XML", MAPPED, "mapped-xml", None)
        },
        col("mapped SOAP", MAPPED_SOAP, "mapped-soap", None),
        col("DVCQG (TraCuuHoSo)", DVCQG, "dvcqg-status", None),
        col("edXML", EDXML, "edxml", None),
    ]
}

fn adapter(base: &str, row: &str, c: &Column) -> Arc<dyn Adapter> {
    let endpoint = format!("{base}/{row}/{}", c.family);
    build(&unit(c.unit, &endpoint, c.settings.clone()))
}

/// A delivery's cell: `delivered`, `unknown`, `permanent` or `transient`. An unknown outcome
/// from a 2xx must carry the body's excerpt (at most 300 characters).
async fn delivery_cell(base: &str, row: &str, c: &Column) -> &'static str {
    let Some(make) = c.envelope else {
        return "?";
    };
    let env = make();
    let a = adapter(base, row, c);
    assert_eq!(
        a.prepare(&env).err(),
        None,
        "{} can express the envelope",
        c.heading
    );
    match a.deliver(&env).await {
        Outcome::Delivered { .. } => "delivered",
        Outcome::Transient { .. } => "transient",
        Outcome::Permanent { .. } => "permanent",
        Outcome::Unknown { reason, answer } => {
            let answer =
                answer.unwrap_or_else(|| panic!("{} / {row}: no excerpt: {reason}", c.heading));
            assert!(answer.chars().count() <= 300, "{reason}");
            if row == "html" {
                assert_eq!(answer, snippet(html_page().as_bytes()), "{reason}");
                assert!(answer.len() < html_page().len(), "clipped: {reason}");
            }
            if row == "empty" {
                assert_eq!(answer, "", "{reason}");
            }
            "unknown"
        }
    }
}

/// A status lookup's cell: `found`, `not found`, `unreadable`, `failed` or `—` (none).
async fn lookup_cell(base: &str, row: &str, c: &Column) -> &'static str {
    match adapter(base, row, c)
        .status("000.20.59.H48-261129-0001")
        .await
    {
        StatusLookup::Found(s) => {
            assert!((1..=10).contains(&s.status), "{} / {row}", c.heading);
            "found"
        }
        StatusLookup::NotFound { .. } => "not found",
        StatusLookup::Unreadable { reason, answer } => {
            assert!(answer.chars().count() <= 300, "{reason}");
            "unreadable"
        }
        StatusLookup::Failed { .. } => "failed",
        StatusLookup::NotSupported { .. } => "—",
    }
}

/// The markdown table: rows = replies, columns = `columns`, cells from `cell`.
fn markdown(columns: &[Column], cells: &[Vec<&str>]) -> String {
    let mut t = String::from("| reply |");
    for c in columns {
        t.push_str(&format!(" {} |", c.heading));
    }
    t.push_str("\n|---|");
    for _ in columns {
        t.push_str("---|");
    }
    t.push('\n');
    for ((_, words), row) in ROWS.iter().zip(cells) {
        t.push_str(&format!("| {words} |"));
        for cell in row {
            t.push_str(&format!(" {cell} |"));
        }
        t.push('\n');
    }
    t
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_adapter_classifies_every_reply_by_the_one_rule() {
    let base = serve().await;
    let deliveries = delivering();
    let mut cells = Vec::new();
    for (row, _) in ROWS {
        let mut line = Vec::new();
        for c in &deliveries {
            line.push(delivery_cell(&base, row, c).await);
        }
        cells.push(line);
    }
    let got = markdown(&deliveries, &cells);
    // DVCQG's TraCuuHoSo "not found" is a readable answer: the dossier is inserted; a cancel of a
    // dossier the agency does not hold has nothing to cancel.
    let d = "delivered";
    let u = "unknown";
    let p = "permanent";
    let t = "transient";
    let expected: Vec<Vec<&str>> = vec![
        vec![d; 17],
        vec![p; 17],
        vec![p; 17],
        vec![p, d, p, p, d, p, p, d, p, p, p, p, d, p, p, p, p],
        vec![u; 17],
        vec![u; 17],
        vec![u; 17],
        vec![u; 17],
        vec![u; 17],
        vec![t; 17],
    ];
    assert_eq!(got, markdown(&deliveries, &expected));
    let readme = include_str!("../README.md");
    assert!(
        readme.contains(&got),
        "adapters/README.md must carry the tested table:\n{got}"
    );

    let columns = lookups();
    let mut cells = Vec::new();
    for (row, _) in ROWS {
        let mut line = Vec::new();
        for c in &columns {
            line.push(lookup_cell(&base, row, c).await);
        }
        cells.push(line);
    }
    let got = markdown(&columns, &cells);
    let (f, nf, ur, x, none) = ("found", "not found", "unreadable", "failed", "—");
    let expected: Vec<Vec<&str>> = vec![
        vec![f, f, f, f, f, f, f, f, none],
        vec![x, x, x, x, x, x, x, x, none],
        vec![x, x, x, x, x, x, x, x, none],
        vec![nf, nf, nf, nf, nf, nf, nf, nf, none],
        vec![ur, ur, ur, ur, ur, ur, ur, ur, none],
        vec![ur, ur, ur, ur, ur, ur, ur, ur, none],
        vec![ur, ur, ur, ur, ur, ur, ur, ur, none],
        vec![ur, ur, ur, ur, ur, ur, ur, ur, none],
        vec![ur, ur, ur, ur, ur, ur, ur, ur, none],
        vec![x, x, x, x, x, x, x, x, none],
    ];
    assert_eq!(got, markdown(&columns, &expected));
    assert!(
        readme.contains(&got),
        "adapters/README.md must carry the tested table:\n{got}"
    );
}
