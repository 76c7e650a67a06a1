//! The mock of TP Quảng Ngãi's civil-status software behind a SOAP 1.1 service
//! (`POST /civil-status-soap/<unit>/HoTichService`), the interface of
//! `schemas/agencies/civil-status-soap/` (WSDL and XSD): it checks the content type, the
//! envelope's version, `SOAPAction` against the Body's operation and the operation's
//! namespace, validates the operation against the XSD (libxml2), and answers `TiepNhanHoSo`
//! (submit: a receipt, idempotent by `Idempotency-Key` = `MaThamChieu`, then the result by a
//! `CapNhatKetQua` call on `UrlPhanHoi`) and `TraCuuHoSo` (status lookup). Faults are HTTP
//! 500 with `faultcode` Client or Server and `LoiNghiepVu` in the detail; `/_mock/faults`
//! scripts a Client fault ([`SOAP_CLIENT_FAULT`]), a Server fault ([`SOAP_SERVER_FAULT`]), a
//! Client fault the shipped configuration reads as transient ([`SOAP_BUSY_FAULT`]), an HTML
//! page in a 200 ([`GARBAGE`]), a refusal inside a 200 ([`ERROR_IN_200`]), or any HTTP status
//! (a 5xx carries a Server fault).
//!
//! Its XML is written here by hand, not with the adapters' writer it tests.

use super::*;
use lienthong_adapters::xml_doc::{self, Element};

const XSD: &str = include_str!("../../../schemas/agencies/civil-status-soap/ho-tich.xsd");
/// The namespace of the service's elements.
pub const NS: &str = "urn:lienthong:agency:civil-status-soap:1";
const SOAP11: &str = "http://schemas.xmlsoap.org/soap/envelope/";
const SOAP12: &str = "http://www.w3.org/2003/05/soap-envelope";
/// The `SOAPAction` of the result the software posts to the bus.
pub const CALLBACK_ACTION: &str = "urn:lienthong:agency:civil-status-soap:1/CapNhatKetQua";
const XML: &str = "text/xml; charset=utf-8";

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn envelope(body: &str) -> String {
    format!(
        r#"<?xml version="1.0" encoding="utf-8"?><soap:Envelope xmlns:soap="{SOAP11}"><soap:Body>{body}</soap:Body></soap:Envelope>"#
    )
}

/// A fault answer: HTTP `status`, `faultcode` `soap:<code>`, the office's `ma_loi` and text.
pub(super) fn fault(status: StatusCode, code: &str, ma_loi: &str, text: &str) -> Answer {
    Answer {
        status,
        content_type: XML,
        body: envelope(&format!(
            r#"<soap:Fault><faultcode>soap:{code}</faultcode><faultstring>{t}</faultstring><detail><ht:LoiNghiepVu xmlns:ht="{NS}"><ht:MaLoi>{ma_loi}</ht:MaLoi><ht:MoTaLoi>{t}</ht:MoTaLoi></ht:LoiNghiepVu></detail></soap:Fault>"#,
            t = esc(text)
        )),
    }
}

fn client(ma_loi: &str, text: &str) -> Answer {
    fault(StatusCode::INTERNAL_SERVER_ERROR, "Client", ma_loi, text)
}

/// The answer to an injected HTTP status: a 5xx carries a Server fault, another status a
/// Client fault; `Retry-After` as scripted.
pub(super) fn injected(status: u16, retry_after: Option<(u64, bool)>) -> Response {
    let st = StatusCode::from_u16(status).unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
    let a = if st.is_server_error() {
        fault(
            st,
            "Server",
            "E_HE_THONG",
            "Hệ thống tạm thời không phục vụ (giả lập)",
        )
    } else {
        fault(
            st,
            "Client",
            "E_DU_LIEU",
            "Dữ liệu hồ sơ không hợp lệ (lỗi giả lập)",
        )
    };
    let mut r = answer(&a);
    if let Some((s, as_date)) = retry_after {
        let text = if as_date {
            httpdate::fmt_http_date(std::time::SystemTime::now() + Duration::from_secs(s))
        } else {
            s.to_string()
        };
        if let Ok(v) = HeaderValue::from_str(&text) {
            r.headers_mut().insert(header::RETRY_AFTER, v);
        }
    }
    r
}

/// An element tree as JSON for `/_mock/requests`: children by local name (repeated ones as
/// arrays), attributes as `@name`, text leaves as strings.
fn to_json(el: &Element) -> Value {
    if el.children.is_empty() && el.attrs.is_empty() {
        return json!(el.text);
    }
    let mut m = serde_json::Map::new();
    for a in &el.attrs {
        m.insert(format!("@{}", a.name), json!(a.value));
    }
    for c in &el.children {
        let v = to_json(c);
        match m.get_mut(&c.name) {
            Some(Value::Array(items)) => items.push(v),
            Some(prev) => *prev = json!([prev.take(), v]),
            None => {
                m.insert(c.name.clone(), v);
            }
        }
    }
    Value::Object(m)
}

fn text<'a>(el: &'a Element, path: &[&str]) -> Option<&'a str> {
    let mut at = el;
    for step in path {
        at = at.child(Some(NS), step)?;
    }
    Some(at.text.as_str())
}

/// dd/MM/yyyy of now, Vietnam time (and with the time).
fn today() -> (String, String) {
    let now = lienthong_core::clock::now_vn();
    (
        now.format("%d/%m/%Y").to_string(),
        now.format("%d/%m/%Y %H:%M:%S").to_string(),
    )
}

/// `POST /civil-status-soap/{unit}/HoTichService`.
pub(super) async fn service(
    State(m): State<Mock>,
    Path(unit): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let a = Agency::CivilStatusSoap;
    m.count(a, |c| c.calls += 1);
    m.latency().await;
    let invalid = |why: String| {
        m.count(a, |c| c.invalid += 1);
        answer(&client("E_DU_LIEU", &why))
    };
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !ct.to_ascii_lowercase().starts_with("text/xml") {
        m.count(a, |c| c.invalid += 1);
        return (
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!("SOAP 1.1 takes text/xml, not {ct:?}"),
        )
            .into_response();
    }
    let doc = match xml_doc::parse(&body) {
        Ok(d) => d,
        Err(e) => return invalid(format!("XML không hợp lệ: {e}")),
    };
    if doc.is(Some(SOAP12), "Envelope") {
        m.count(a, |c| c.invalid += 1);
        return answer(&fault(
            StatusCode::INTERNAL_SERVER_ERROR,
            "VersionMismatch",
            "E_PHIEN_BAN",
            "Dịch vụ dùng SOAP 1.1",
        ));
    }
    let Some(op) = doc
        .child(Some(SOAP11), "Body")
        .filter(|_| doc.is(Some(SOAP11), "Envelope"))
        .and_then(|b| b.children.first())
    else {
        return invalid("không phải một SOAP 1.1 Envelope có Body".into());
    };
    let action = headers
        .get("SOAPAction")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("(none)");
    let want = format!("\"{NS}/{}\"", op.name);
    if action != want {
        m.count(a, |c| c.invalid += 1);
        return answer(&client(
            "E_SOAP_ACTION",
            &format!(
                "SOAPAction {action} không khớp thao tác {} (cần {want})",
                op.name
            ),
        ));
    }
    if op.ns.as_deref() != Some(NS) {
        return invalid(format!(
            "phần tử {} không thuộc namespace {NS}",
            op.display_name()
        ));
    }
    let fragment = xml_doc::write(op);
    let lock = m.xml_lock.clone();
    let checked = tokio::task::spawn_blocking(move || {
        let _g = lock.lock();
        validate_xsd(XSD, &fragment)
    })
    .await
    .unwrap_or_else(|e| Err(vec![e.to_string()]));
    if let Err(errors) = checked {
        return invalid(format!("không đúng XSD: {}", errors.join("; ")));
    }
    match op.name.as_str() {
        "TiepNhanHoSo" => submit(&m, &unit, &headers, op).await,
        "TraCuuHoSo" => lookup(&m, op),
        other => answer(&client(
            "E_SOAP_ACTION",
            &format!("không có thao tác {other}"),
        )),
    }
}

async fn submit(m: &Mock, unit: &str, headers: &HeaderMap, op: &Element) -> Response {
    let a = Agency::CivilStatusSoap;
    let Some(hs) = op.child(Some(NS), "HoSo") else {
        return answer(&client("E_DU_LIEU", "thiếu HoSo"));
    };
    let ma = text(hs, &["MaHoSo"]).unwrap_or("").to_string();
    let Some(key) = idem_key(headers).filter(|k| text(hs, &["MaThamChieu"]) == Some(k.as_str()))
    else {
        return answer(&client(
            "E_THAM_CHIEU",
            "Idempotency-Key phải bằng MaThamChieu",
        ));
    };
    let mut behaviour = None;
    if let Some((s, ra)) = m.injected(a, &ma) {
        match s {
            s if s >= 100 => return injected(s, ra),
            SOAP_CLIENT_FAULT => {
                return answer(&client("E_DU_LIEU", "Dữ liệu hồ sơ không hợp lệ (giả lập)"));
            }
            SOAP_SERVER_FAULT => {
                return answer(&fault(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "Server",
                    "E_HE_THONG",
                    "Lỗi cơ sở dữ liệu hộ tịch (giả lập)",
                ));
            }
            SOAP_BUSY_FAULT => {
                return answer(&client("E_QUA_TAI", "Hệ thống đang quá tải (giả lập)"));
            }
            GARBAGE => {
                return (
                    StatusCode::OK,
                    [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
                    "<html><body><h1>Hệ thống đang bảo trì</h1></body></html>",
                )
                    .into_response();
            }
            ERROR_IN_200 => {
                return answer(&Answer {
                    status: StatusCode::OK,
                    content_type: XML,
                    body: envelope(&format!(
                        r#"<TiepNhanHoSoResponse xmlns="{NS}"><KetQua trangThai="TU_CHOI"><MoTaLoi>Hồ sơ đã được tiếp nhận ở nơi khác (giả lập)</MoTaLoi></KetQua></TiepNhanHoSoResponse>"#
                    )),
                });
            }
            other => behaviour = Some(other),
        }
    }
    let receipt = format!("HTS-{}", &key[key.len().saturating_sub(10)..]);
    let (_, at) = today();
    let fresh = Answer {
        status: StatusCode::OK,
        content_type: XML,
        body: envelope(&format!(
            r#"<TiepNhanHoSoResponse xmlns="{NS}"><KetQua trangThai="DA_TIEP_NHAN"><MaTiepNhan>{receipt}</MaTiepNhan><NgayTiepNhan>{at}</NgayTiepNhan></KetQua></TiepNhanHoSoResponse>"#
        )),
    };
    let mut request = to_json(hs);
    request["SOAPAction"] = json!(format!("{NS}/TiepNhanHoSo"));
    let claimed = m.claim_key(
        a,
        &key,
        &ma,
        &receipt,
        request,
        |owner| {
            client(
                "E_THAM_CHIEU",
                &format!("Idempotency-Key đã dùng cho hồ sơ {owner}"),
            )
        },
        || fresh,
    );
    let Some((ans, first)) = claimed else {
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    };
    if !first {
        m.count(a, |c| c.replays += 1);
        return answered(&ans, behaviour).await;
    }
    m.count(a, |c| c.effects += 1);
    let dec = m.decision(a, &ma);
    let refused = m.refuses(dec.as_ref());
    let (day, _) = today();
    let loai = text(hs, &["LoaiHoSo"]).unwrap_or("KS");
    let so = 100 + (ma.len() * 7 + ma.bytes().map(usize::from).sum::<usize>()) % 900;
    let outcome = if refused {
        let why = dec
            .as_ref()
            .and_then(|d| d.reason.clone())
            .unwrap_or_else(|| "Giấy chứng sinh không hợp lệ (giả lập)".into());
        format!(
            "<TrangThai>TU_CHOI</TrangThai><LyDo>{}</LyDo><CanBo>Công chức hộ tịch (giả lập)</CanBo>",
            esc(&why)
        )
    } else {
        format!(
            r#"<TrangThai>DA_DANG_KY</TrangThai><CanBo>Phạm Thị Hộ Tịch (giả lập)</CanBo><DangKy><SoDangKy>{so}/2026</SoDangKy><QuyenSo>02/2026</QuyenSo><NgayDangKy>{day}</NgayDangKy></DangKy><GiayTo loai="BAN_CHINH"><So>{loai}-{so}</So><NgayCap>{day}</NgayCap></GiayTo><GiayTo loai="BAN_SAO"><So>TL-{so}</So><NgayCap>{day}</NgayCap></GiayTo>"#
        )
    };
    let cb = envelope(&format!(
        r#"<CapNhatKetQua xmlns="{NS}"><KetQuaHoSo><MaHoSo>{ma}</MaHoSo><MaThamChieu>{key}</MaThamChieu><MaTiepNhan>{receipt}</MaTiepNhan><LoaiHoSo>{loai}</LoaiHoSo>{outcome}</KetQuaHoSo></CapNhatKetQua>"#,
        ma = esc(&ma),
        key = esc(&key),
        loai = esc(loai),
    ));
    if let Some(url) = text(hs, &["UrlPhanHoi"]) {
        m.callback_later(Later {
            traceparent: None,
            agency: a,
            ma: ma.clone(),
            decided: if refused { 3 } else { 9 },
            url: url.to_string(),
            body: cb,
            content_type: XML,
            key: m.edxml_keys.get(unit).cloned(),
            delay_ms: dec.and_then(|d| d.delay_ms),
            notice: None,
        });
    }
    answered(&ans, behaviour).await
}

fn lookup(m: &Mock, op: &Element) -> Response {
    let ma = text(op, &["MaHoSo"]).unwrap_or("").to_string();
    let found = m.data.lock().ok().and_then(|d| {
        d.dossiers
            .get(&(Agency::CivilStatusSoap, ma.clone()))
            .cloned()
    });
    let Some((receipt, st)) = found else {
        return answer(&client("E_KHONG_TIM_THAY", "Không tìm thấy hồ sơ"));
    };
    let state = match st {
        2 => "DA_TIEP_NHAN",
        3 => "TU_CHOI",
        9 | 10 => "DA_DANG_KY",
        _ => "DANG_XU_LY",
    };
    let (_, at) = today();
    answer(&Answer {
        status: StatusCode::OK,
        content_type: XML,
        body: envelope(&format!(
            r#"<TraCuuHoSoResponse xmlns="{NS}"><MaHoSo>{}</MaHoSo><MaTiepNhan>{}</MaTiepNhan><TrangThai>{state}</TrangThai><NgayCapNhat>{at}</NgayCapNhat></TraCuuHoSoResponse>"#,
            esc(&ma),
            esc(&receipt)
        )),
    })
}
