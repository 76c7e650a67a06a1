//! The `mapped` adapter's declarative reach beyond flat documents, on the shipped SOAP 1.1
//! civil-status office of TP Quảng Ngãi (`000.10.51.H48`, built from the shipped registry as
//! the bus builds it) against canned answers from a real HTTP server on loopback: the envelope
//! and its elements in the configured namespaces, `SOAPAction` and the content type, answers
//! read by nested paths and attributes, faults read as a refusal or a transient failure (by
//! class, by the agency's code in the detail, in a 500 and in a 200), SOAP 1.2, the SOAP status
//! lookup, a callback with repeated elements, dates and code tables, JSON lists, and errors that
//! name the field, the value or the path.

mod common;

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use common::*;
use lienthong_adapters::soap::{SOAP11_NS, SOAP12_NS};
use lienthong_adapters::xml_doc::{Element, parse};
use lienthong_adapters::{Adapter, Outcome, StatusLookup};
use lienthong_core::envelope::Envelope;
use serde_json::{Value, json};

/// TP Quảng Ngãi's civil-status office: SOAP 1.1.
const SOAP_UNIT: &str = "000.10.51.H48";
const NS: &str = "urn:lienthong:agency:civil-status-soap:1";
const ACTION: &str = "urn:lienthong:agency:civil-status-soap:1/TiepNhanHoSo";

/// A canned reply: status, content type, body, extra header.
type Canned = (
    u16,
    &'static str,
    String,
    Option<(&'static str, &'static str)>,
);

#[derive(Clone, Default)]
struct Agency {
    replies: Arc<Mutex<VecDeque<Canned>>>,
    seen: Arc<Mutex<Vec<(HeaderMap, Bytes)>>>,
}

async fn answer(
    axum::extract::State(a): axum::extract::State<Agency>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    a.seen.lock().expect("lock").push((headers, body));
    let Some((status, ct, text, extra)) = a.replies.lock().expect("lock").pop_front() else {
        return StatusCode::NOT_IMPLEMENTED.into_response();
    };
    let mut r = (StatusCode::from_u16(status).expect("status"), text).into_response();
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(ct));
    if let Some((k, v)) = extra {
        r.headers_mut().insert(k, HeaderValue::from_static(v));
    }
    r
}

async fn agency(replies: Vec<Canned>) -> (String, Agency) {
    let a = Agency::default();
    a.replies.lock().expect("lock").extend(replies);
    let app = axum::Router::new()
        .fallback(axum::routing::any(answer))
        .with_state(a.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (format!("http://{addr}"), a)
}

fn adapter(endpoint: &str, patch: Option<Value>) -> Arc<dyn Adapter> {
    build(&unit(SOAP_UNIT, endpoint, patch))
}

const XML11: &str = "text/xml; charset=utf-8";

fn env11(body: &str) -> String {
    format!(
        r#"<?xml version="1.0" encoding="utf-8"?><s:Envelope xmlns:s="{SOAP11_NS}"><s:Body>{body}</s:Body></s:Envelope>"#
    )
}

fn receipt(state: &str, extra: &str) -> String {
    env11(&format!(
        r#"<TiepNhanHoSoResponse xmlns="{NS}"><KetQua trangThai="{state}">{extra}</KetQua></TiepNhanHoSoResponse>"#
    ))
}

fn fault11(code: &str, ma_loi: &str, text: &str) -> String {
    env11(&format!(
        r#"<s:Fault><faultcode>s:{code}</faultcode><faultstring>{text}</faultstring><detail><h:LoiNghiepVu xmlns:h="{NS}"><h:MaLoi>{ma_loi}</h:MaLoi><h:MoTaLoi>{text} ({ma_loi})</h:MoTaLoi></h:LoiNghiepVu></detail></s:Fault>"#
    ))
}

fn death_with_attachments() -> Envelope {
    let mut env = birth(SOAP_UNIT);
    env.ma_tthc = "1.011537".into();
    env.payload.data = json!({"loai_lien_thong": "khai_tu_xoa_thuong_tru_mai_tang",
        "thu_tuc_lua_chon": ["khai_tu", "bhxh_tu_tuat"],
        "nguoi_mat": {"ho_ten": "Nguyễn Quốc Hùng", "ngay_mat": "2026-11-01", "so_dinh_danh": "051062949985"}})
    .as_object()
    .cloned();
    env.attachments = serde_json::from_value(json!([
        {"name": "to_khai.pdf", "media_type": "application/pdf", "size_bytes": 411, "sha256": "4".repeat(64)},
        {"name": "giay_bao_tu.pdf", "media_type": "application/pdf", "size_bytes": 77, "sha256": "7".repeat(64),
         "reference": "urn:lienthong:blob:sha256:7777"}
    ]))
    .expect("attachments");
    env
}

/// Every element under `el` (itself included), with its depth-first path of local names.
fn all(el: &Element) -> Vec<&Element> {
    let mut out = vec![el];
    for c in &el.children {
        out.extend(all(c));
    }
    out
}

fn texts(el: &Element, path: &[&str]) -> Vec<String> {
    let mut at = vec![el];
    for step in path {
        at = at
            .into_iter()
            .flat_map(|e| e.children_named(Some(NS), step))
            .collect();
    }
    at.into_iter().map(|e| e.text.clone()).collect()
}

#[tokio::test]
async fn the_shipped_soap_mapping_sends_a_soap11_envelope_in_the_agencys_namespace() {
    let (base, seen) = agency(vec![(
        200,
        XML11,
        receipt("DA_TIEP_NHAN", "<MaTiepNhan>HTS-1</MaTiepNhan>"),
        None,
    )])
    .await;
    let a = adapter(&base, None);
    let env = birth(SOAP_UNIT);
    let out = a.deliver(&env).await;
    assert_eq!(
        out,
        Outcome::Delivered {
            receipt: "HTS-1".into()
        }
    );
    let (headers, body) = seen.seen.lock().expect("lock")[0].clone();
    assert_eq!(headers["content-type"], XML11);
    assert_eq!(headers["soapaction"], format!("\"{ACTION}\"").as_str());
    assert_eq!(headers["idempotency-key"], env.message_id.as_str());
    let root = parse(&body).expect("well-formed");
    assert!(root.is(Some(SOAP11_NS), "Envelope"));
    let op = &root.child(Some(SOAP11_NS), "Body").expect("Body").children[0];
    assert!(op.is(Some(NS), "TiepNhanHoSo"), "{op:?}");
    // Every element of the operation is in the agency's namespace, none in the SOAP one.
    assert!(
        all(op).iter().all(|e| e.ns.as_deref() == Some(NS)),
        "{}",
        String::from_utf8_lossy(&body)
    );
    let hs = op.child(Some(NS), "HoSo").expect("HoSo");
    assert_eq!(hs.attr(None, "phienBan"), Some("1.0"));
    assert_eq!(texts(hs, &["MaHoSo"]), std::slice::from_ref(&env.ma_ho_so));
    assert_eq!(texts(hs, &["LoaiHoSo"]), ["KS"], "code table");
    assert_eq!(
        texts(hs, &["TreEm", "NgaySinh"]),
        ["20/11/2026"],
        "date pattern"
    );
    assert_eq!(texts(hs, &["TreEm", "GioiTinh"]), ["2"], "code table");
    let sent = texts(hs, &["NgayGui"]).remove(0);
    let want = chrono::DateTime::parse_from_rfc3339(&env.sent_at)
        .expect("sent_at")
        .with_timezone(&lienthong_core::clock::vn_offset())
        .format("%d/%m/%Y %H:%M:%S")
        .to_string();
    assert_eq!(sent, want, "sent_at in Vietnam time");
    assert!(
        hs.child(Some(NS), "NguoiMat").is_none(),
        "optional group left out"
    );
    // The order of the XSD sequence, as configured.
    let names: Vec<&str> = hs.children.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "MaHoSo",
            "MaThamChieu",
            "MaTTHC",
            "LoaiHoSo",
            "NgayGui",
            "UrlPhanHoi",
            "NguoiYeuCau",
            "TreEm"
        ]
    );

    // A death dossier: lists from arrays, each item through the code table or its fields.
    let death = death_with_attachments();
    let body = a.prepare(&death).expect("mapped").body;
    let root = parse(&body).expect("well-formed");
    let hs = root.children[0].children[0]
        .child(Some(NS), "HoSo")
        .expect("HoSo")
        .clone();
    assert_eq!(texts(&hs, &["LoaiHoSo"]), ["KT"]);
    assert_eq!(texts(&hs, &["ThuTucLuaChon", "MaThuTuc"]), ["KT", "TT"]);
    assert_eq!(
        texts(&hs, &["GiayToDinhKem", "TepDinhKem", "TenTep"]),
        ["to_khai.pdf", "giay_bao_tu.pdf"]
    );
    assert_eq!(
        texts(&hs, &["GiayToDinhKem", "TepDinhKem", "KichThuoc"]),
        ["411", "77"]
    );
    assert_eq!(texts(&hs, &["NguoiMat", "NgayMat"]), ["01/11/2026"]);
}

fn reason(o: &Outcome) -> &str {
    o.reason()
}

#[tokio::test]
async fn soap_answers_and_faults_are_classified_by_the_one_rule() {
    let html = "<!DOCTYPE html><html><body>Bảo trì</body></html>".to_string();
    let ok = receipt("DA_TIEP_NHAN", "<MaTiepNhan>HTS-2</MaTiepNhan>");
    let cases: Vec<(&str, Canned, &str, &str)> = vec![
        (
            "success",
            (200, XML11, ok.clone(), None),
            "delivered",
            "HTS-2",
        ),
        (
            "refusal in a 200",
            (
                200,
                XML11,
                receipt("TU_CHOI", "<MoTaLoi>Thiếu tờ khai</MoTaLoi>"),
                None,
            ),
            "permanent",
            "Thiếu tờ khai",
        ),
        (
            "Client fault, 500",
            (
                500,
                XML11,
                fault11("Client", "E_DU_LIEU", "Dữ liệu không hợp lệ"),
                None,
            ),
            "permanent",
            "[E_DU_LIEU]: Dữ liệu không hợp lệ",
        ),
        (
            "Server fault, 500",
            (
                500,
                XML11,
                fault11("Server", "E_HE_THONG", "Lỗi hệ thống"),
                None,
            ),
            "transient",
            "s:Server [E_HE_THONG]",
        ),
        (
            "Client fault the table makes transient",
            (500, XML11, fault11("Client", "E_QUA_TAI", "Quá tải"), None),
            "transient",
            "E_QUA_TAI",
        ),
        (
            "Server fault in a 200",
            (200, XML11, fault11("Server", "E_HE_THONG", "Lỗi"), None),
            "transient",
            "HTTP 200 OK with SOAP fault",
        ),
        (
            "Client fault in a 200",
            (200, XML11, fault11("Client", "E_DU_LIEU", "Sai"), None),
            "permanent",
            "s:Client",
        ),
        (
            "VersionMismatch",
            (
                500,
                XML11,
                fault11("VersionMismatch", "", "Phiên bản"),
                None,
            ),
            "permanent",
            "soap version",
        ),
        (
            "a 401 keeps its meaning",
            (
                401,
                XML11,
                fault11("Client", "E_XAC_THUC", "Sai khóa"),
                None,
            ),
            "permanent",
            "authentication refused",
        ),
        (
            "503 with Retry-After",
            (
                503,
                XML11,
                fault11("Server", "E_BAO_TRI", "Bảo trì"),
                Some(("retry-after", "7")),
            ),
            "transient",
            "E_BAO_TRI",
        ),
        (
            "a 500 without a fault",
            (500, "text/html", html.clone(), None),
            "transient",
            "HTTP 500",
        ),
        (
            "an HTML page (200)",
            (200, "text/html", html.clone(), None),
            "unknown",
            "not XML",
        ),
        (
            "empty (200)",
            (200, XML11, String::new(), None),
            "unknown",
            "empty body",
        ),
        (
            "truncated (200)",
            (200, XML11, ok[..ok.len() / 2].to_string(), None),
            "unknown",
            "not XML",
        ),
        (
            "the receipt missing",
            (200, XML11, receipt("DA_TIEP_NHAN", ""), None),
            "unknown",
            "MaTiepNhan is not in the answer",
        ),
        (
            "a SOAP 1.2 envelope",
            (
                200,
                "application/soap+xml",
                ok.replace(SOAP11_NS, SOAP12_NS),
                None,
            ),
            "unknown",
            "\"1.2\"",
        ),
        (
            "JSON",
            (
                200,
                "application/json",
                json!({"MaTiepNhan": "X"}).to_string(),
                None,
            ),
            "unknown",
            "not XML",
        ),
    ];
    let (base, _) = agency(cases.iter().map(|c| c.1.clone()).collect()).await;
    let a = adapter(&base, None);
    for (what, _, class, words) in &cases {
        let out = a.deliver(&birth(SOAP_UNIT)).await;
        let got = match &out {
            Outcome::Delivered { .. } => "delivered",
            Outcome::Permanent { .. } => "permanent",
            Outcome::Transient { .. } => "transient",
            Outcome::Unknown { .. } => "unknown",
        };
        assert_eq!(got, *class, "{what}: {out:?}");
        assert!(reason(&out).contains(words), "{what}: {out:?}");
        if *what == "503 with Retry-After" {
            assert!(
                matches!(out, Outcome::Transient { retry_after: Some(d), .. } if d == Duration::from_secs(7)),
                "{out:?}"
            );
        }
    }
}

#[tokio::test]
async fn the_soap_status_lookup_finds_a_dossier_and_reads_not_found_from_a_fault() {
    let found = env11(&format!(
        r#"<TraCuuHoSoResponse xmlns="{NS}"><MaHoSo>M-1</MaHoSo><MaTiepNhan>HTS-9</MaTiepNhan><TrangThai>DANG_XU_LY</TrangThai><NgayCapNhat>29/11/2026 10:00:00</NgayCapNhat></TraCuuHoSoResponse>"#
    ));
    let (base, seen) = agency(vec![
        (200, XML11, found.clone(), None),
        (
            500,
            XML11,
            fault11("Client", "E_KHONG_TIM_THAY", "Không tìm thấy hồ sơ"),
            None,
        ),
        (500, XML11, fault11("Server", "E_HE_THONG", "Lỗi"), None),
        (200, XML11, found.replace("DANG_XU_LY", "KHAC"), None),
        (200, "text/html", "<html/>".into(), None),
    ])
    .await;
    let a = adapter(&base, None);
    let st = a.status("M-1").await;
    assert!(
        matches!(&st, StatusLookup::Found(s) if s.status == 4 && s.receipt.as_deref() == Some("HTS-9")),
        "{st:?}"
    );
    let (headers, body) = seen.seen.lock().expect("lock")[0].clone();
    assert_eq!(
        headers["soapaction"],
        "\"urn:lienthong:agency:civil-status-soap:1/TraCuuHoSo\""
    );
    let root = parse(&body).expect("xml");
    let op = &root.children[0].children[0];
    assert!(op.is(Some(NS), "TraCuuHoSo"));
    assert_eq!(texts(op, &["MaHoSo"]), ["M-1"]);
    let st = a.status("M-2").await;
    assert!(
        matches!(&st, StatusLookup::NotFound { reason } if reason.contains("E_KHONG_TIM_THAY")),
        "{st:?}"
    );
    assert!(matches!(a.status("M-3").await, StatusLookup::Failed { .. }));
    let st = a.status("M-4").await;
    assert!(
        matches!(&st, StatusLookup::Unreadable { reason, .. } if reason.contains("\"KHAC\"")),
        "{st:?}"
    );
    assert!(matches!(
        a.status("M-5").await,
        StatusLookup::Unreadable { .. }
    ));
}

fn callback(state: &str, extra: &str) -> String {
    format!(
        r#"<?xml version="1.0"?><soapenv:Envelope xmlns:soapenv="{SOAP11_NS}"><soapenv:Body><k:CapNhatKetQua xmlns:k="{NS}"><k:KetQuaHoSo>
        <k:MaHoSo>M-1</k:MaHoSo><k:MaThamChieu>01a226b5-6400-7000-8000-0000000000aa</k:MaThamChieu><k:MaTiepNhan>HTS-1</k:MaTiepNhan>
        <k:LoaiHoSo>KS</k:LoaiHoSo><k:TrangThai>{state}</k:TrangThai>{extra}</k:KetQuaHoSo></k:CapNhatKetQua></soapenv:Body></soapenv:Envelope>"#
    )
}

#[test]
fn a_soap_callback_reads_nested_repeated_and_transformed_values() {
    let a = adapter("http://127.0.0.1:9", None);
    let done = callback(
        "DA_DANG_KY",
        r#"<k:CanBo>Lê Thị Hộ Tịch</k:CanBo><k:DangKy><k:SoDangKy>123/2026</k:SoDangKy><k:QuyenSo>01/2026</k:QuyenSo><k:NgayDangKy>29/11/2026</k:NgayDangKy></k:DangKy>
        <k:GiayTo loai="BAN_CHINH"><k:So>KS-123</k:So><k:NgayCap>29/11/2026</k:NgayCap></k:GiayTo>
        <k:GiayTo loai="BAN_SAO"><k:So>TL-124</k:So><k:NgayCap>30/11/2026</k:NgayCap></k:GiayTo>"#,
    );
    let r = a
        .parse_callback(Some(XML11), done.as_bytes())
        .expect("callback");
    assert_eq!(
        (r.status, r.ma_ho_so.as_str(), r.receipt.as_deref()),
        (9, "M-1", Some("HTS-1"))
    );
    assert_eq!(r.officer.as_deref(), Some("Lê Thị Hộ Tịch"));
    assert_eq!(
        Value::Object(r.result.clone()),
        json!({"so_dang_ky": "123/2026", "quyen_so": "01/2026", "ngay_dang_ky": "2026-11-29",
               "loai_lien_thong": "khai_sinh_thuong_tru_bhyt",
               "giay_to": [{"loai": "ban_chinh", "so": "KS-123", "ngay_cap": "2026-11-29"},
                           {"loai": "ban_sao", "so": "TL-124", "ngay_cap": "2026-11-30"}]})
    );
    let refused = callback("TU_CHOI", "<k:LyDo>Thiếu giấy chứng sinh</k:LyDo>");
    let r = a
        .parse_callback(None, refused.as_bytes())
        .expect("callback");
    assert_eq!(
        (r.status, r.reason.as_deref()),
        (3, Some("Thiếu giấy chứng sinh"))
    );
    let bad_date = done.replace("<k:NgayDangKy>29/11/2026", "<k:NgayDangKy>31/02/2026");
    let e = a
        .parse_callback(None, bad_date.as_bytes())
        .expect_err("no such date")
        .to_string();
    assert!(e.contains("NgayDangKy") && e.contains("31/02/2026"), "{e}");
    let unknown_code = done.replace("<k:LoaiHoSo>KS", "<k:LoaiHoSo>XX");
    let e = a
        .parse_callback(None, unknown_code.as_bytes())
        .expect_err("no such code")
        .to_string();
    assert!(e.contains("\"XX\"") && e.contains("loai_lien_thong"), "{e}");
    let e = a
        .parse_callback(None, br#"{"MaHoSo": "M-1"}"#)
        .expect_err("JSON")
        .to_string();
    assert!(e.contains("not XML"), "{e}");
    let e = a
        .parse_callback(None, done.replace(SOAP11_NS, SOAP12_NS).as_bytes())
        .expect_err("1.2")
        .to_string();
    assert!(e.contains("SOAP 1.2"), "{e}");
}

#[tokio::test]
async fn soap_1_2_sends_its_content_type_with_the_action_and_reads_sender_and_receiver() {
    let env12 = |body: String| {
        format!(r#"<e:Envelope xmlns:e="{SOAP12_NS}"><e:Body>{body}</e:Body></e:Envelope>"#)
    };
    let fault12 = |code: &str| {
        env12(format!(
            r#"<e:Fault><e:Code><e:Value>e:{code}</e:Value></e:Code><e:Reason><e:Text xml:lang="vi">Lỗi {code}</e:Text></e:Reason></e:Fault>"#
        ))
    };
    let ok = env12(format!(
        r#"<TiepNhanHoSoResponse xmlns="{NS}"><KetQua trangThai="DA_TIEP_NHAN"><MaTiepNhan>HTS-12</MaTiepNhan></KetQua></TiepNhanHoSoResponse>"#
    ));
    let ct = "application/soap+xml; charset=utf-8";
    let (base, seen) = agency(vec![
        (200, ct, ok, None),
        (400, ct, fault12("Sender"), None),
        (500, ct, fault12("Receiver"), None),
    ])
    .await;
    let a = adapter(&base, Some(json!({"soap": "1.2"})));
    assert_eq!(
        a.deliver(&birth(SOAP_UNIT)).await,
        Outcome::Delivered {
            receipt: "HTS-12".into()
        }
    );
    let out = a.deliver(&birth(SOAP_UNIT)).await;
    assert!(
        matches!(&out, Outcome::Permanent { reason } if reason.contains("e:Sender: Lỗi Sender")),
        "{out:?}"
    );
    assert!(matches!(
        a.deliver(&birth(SOAP_UNIT)).await,
        Outcome::Transient { .. }
    ));
    let (headers, body) = seen.seen.lock().expect("lock")[0].clone();
    assert_eq!(
        headers["content-type"],
        format!("application/soap+xml; charset=utf-8; action=\"{ACTION}\"").as_str()
    );
    assert!(!headers.contains_key("soapaction"));
    assert!(parse(&body).expect("xml").is(Some(SOAP12_NS), "Envelope"));
}

#[test]
fn mapping_errors_name_the_field_the_value_and_the_path() {
    let a = adapter("http://127.0.0.1:9", None);
    let mut env = birth(SOAP_UNIT);
    env.payload.data.as_mut().expect("data")["tre"]["gioi_tinh"] = json!("khac");
    let e = a.prepare(&env).expect_err("unknown code").to_string();
    assert!(
        e.contains("HoSo.TreEm.GioiTinh")
            && e.contains("\"khac\"")
            && e.contains("code_tables.gioi_tinh"),
        "{e}"
    );
    let mut env = birth(SOAP_UNIT);
    env.payload.data.as_mut().expect("data")["tre"]["ngay_sinh"] = json!("20/11/2026");
    let e = a.prepare(&env).expect_err("not ISO").to_string();
    assert!(
        e.contains("HoSo.TreEm.NgaySinh") && e.contains("20/11/2026"),
        "{e}"
    );
    let mut env = birth(SOAP_UNIT);
    env.payload.applicant = None;
    let e = a.prepare(&env).expect_err("required").to_string();
    assert!(
        e.contains("HoSo.NguoiYeuCau.HoTen") && e.contains("/payload/applicant/ho_ten"),
        "{e}"
    );

    let refused = |patch: Value| {
        lienthong_adapters::build(
            &unit(SOAP_UNIT, "http://127.0.0.1:9", Some(patch)),
            "http://127.0.0.1:1",
        )
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default()
    };
    let e = refused(json!({"success": {"receipt": "soap:Body/x:KetQua"}}));
    assert!(e.contains("success.receipt") && e.contains("\"x\""), "{e}");
    let e = refused(json!({"request": {"A": {"from": "/x", "date": "dd/MMM/yyyy"}}}));
    assert!(e.contains("request.A") && e.contains("dd/MMM/yyyy"), "{e}");
    let e = refused(json!({"request": {"A": {"from": "/x", "codes": "khong_co"}}}));
    assert!(
        e.contains("request.A") && e.contains("khong_co") && e.contains("gioi_tinh"),
        "{e}"
    );
    let e = refused(json!({"request": {"A": {"from": "/x", "default": "0"}}}));
    assert!(e.contains("needs codes"), "{e}");
    let e = refused(json!({"status_path": "/x/{ma_ho_so}"}));
    assert!(e.contains("[lookup]"), "{e}");
    let e = refused(json!({"soap": "1.3"}));
    assert!(e.contains("1.3"), "{e}");
    let e = refused(json!({"namespaces": {"soap": "urn:other"}}));
    assert!(e.contains("namespaces.soap"), "{e}");
    let e = refused(json!({"request": {"HoSo.q:Ten": "/ma_ho_so"}}));
    assert!(
        e.contains("request.HoSo.q:Ten") && e.contains("\"q\""),
        "{e}"
    );
    let e = refused(json!({"faults": {"codes": {"E": "maybe"}}}));
    assert!(e.contains("maybe"), "{e}");
}

#[test]
fn json_and_plain_xml_mappings_take_lists_indexes_prefixes_and_attributes() {
    let make = |settings: Value| {
        lienthong_adapters::mapped::Mapped::new(
            lienthong_adapters::http::Agent::plain(reqwest::Client::new()),
            "http://127.0.0.1:9",
            "http://127.0.0.1:2/cb",
            settings.as_object().expect("object"),
        )
        .expect("settings")
    };
    let env = death_with_attachments();
    let cb = json!({"ma_ho_so": "MaHoSo", "reference": "MaThamChieu", "status": "TrangThai"});
    let js = make(json!({
        "format": "json", "code_tables": {"thu_tuc": {"khai_tu": "KT", "bhxh_tu_tuat": "TT"}},
        "request": {
            "HoSo.Ma": "/ma_ho_so",
            "HoSo.TepDau": "/attachments/0/name",
            "HoSo.ThuTuc": {"each": "/payload/data/thu_tuc_lua_chon", "codes": "thu_tuc"},
            "HoSo.Tep": {"each": "/attachments", "fields": {"Ten": "/name", "Kich.Bytes": "/size_bytes"}},
            "HoSo.NgayMat": {"from": "/payload/data/nguoi_mat/ngay_mat", "date": "yyyyMMdd"}
        },
        "callback": cb
    }));
    let body: Value = serde_json::from_slice(&js.body(&env).expect("body")).expect("json");
    assert_eq!(
        body["HoSo"],
        json!({"Ma": env.ma_ho_so, "TepDau": "to_khai.pdf", "ThuTuc": ["KT", "TT"],
               "Tep": [{"Ten": "to_khai.pdf", "Kich": {"Bytes": 411}}, {"Ten": "giay_bao_tu.pdf", "Kich": {"Bytes": 77}}],
               "NgayMat": "20261101"})
    );
    let xml = make(json!({
        "format": "xml", "xml_root": "a:HoSo", "namespaces": {"a": "urn:a", "b": "urn:b"},
        "request": {"@b:phienBan": {"value": "2"}, "a:Ma": "/ma_ho_so", "b:Tep.b:Ten": "/attachments/1/name"},
        "success": {"receipt": "a:KetQua/@so"},
        "callback": cb
    }));
    let body = xml.body(&env).expect("body");
    let root = parse(&body).expect("xml");
    assert!(root.is(Some("urn:a"), "HoSo"));
    assert_eq!(root.attr(Some("urn:b"), "phienBan"), Some("2"));
    assert_eq!(
        root.child(Some("urn:a"), "Ma").map(|m| m.text.as_str()),
        Some(env.ma_ho_so.as_str())
    );
    let tep = root.child(Some("urn:b"), "Tep").expect("b:Tep");
    assert_eq!(
        tep.child(Some("urn:b"), "Ten").map(|m| m.text.as_str()),
        Some("giay_bao_tu.pdf")
    );
    let ok = br#"<x:BienNhan xmlns:x="urn:a"><x:KetQua so="BN-1"/></x:BienNhan>"#;
    assert_eq!(
        xml.submit_answer(reqwest::StatusCode::OK, ok),
        Outcome::Delivered {
            receipt: "BN-1".into()
        }
    );
    let other_ns = br#"<x:BienNhan xmlns:x="urn:c"><x:KetQua so="BN-1"/></x:BienNhan>"#;
    assert!(matches!(
        xml.submit_answer(reqwest::StatusCode::OK, other_ns),
        Outcome::Unknown { .. }
    ));
}

#[test]
fn the_mapping_keeps_its_element_order_when_the_configuration_is_written_back() {
    // The demo and the process tests hand the shipped registry to `lienthong run` through
    // `Settings::write_file`; TOML writers put a table's plain values before its sub-tables, so
    // the shipped mapping writes every line as a table and its order survives.
    let shipped = lienthong_core::registry::Settings::from_toml(
        lienthong_core::registry::DEFAULT_CONFIG,
        false,
    )
    .expect("shipped config");
    let dir = std::env::temp_dir().join(format!("lienthong-mapped-soap-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let path = dir.join("config.toml");
    shipped.write_file(&path).expect("written");
    let again = lienthong_core::registry::Settings::load(Some(&path)).expect("read back");
    let _ = std::fs::remove_dir_all(&dir);
    let env = death_with_attachments();
    let body = |s: &lienthong_core::registry::Settings| {
        let u = s
            .units
            .iter()
            .find(|u| u.code == SOAP_UNIT)
            .expect("the office");
        let a = lienthong_adapters::build(u, "http://127.0.0.1:1").expect("adapter");
        a.prepare(&env).expect("mapped").body
    };
    assert_eq!(
        String::from_utf8_lossy(&body(&shipped)),
        String::from_utf8_lossy(&body(&again))
    );
}
