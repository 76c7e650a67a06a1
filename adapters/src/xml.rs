//! Small XML helpers on quick-xml for flat agency documents: write an element tree with
//! escaping, and read a namespace-checked root's child elements (matched on namespace URI and
//! local name, so any prefix or a default namespace reads the same).

use std::collections::BTreeMap;
use std::io::Cursor;

use quick_xml::Writer;
use quick_xml::events::{BytesDecl, BytesEnd, BytesStart, BytesText, Event};
use quick_xml::name::ResolveResult;
use quick_xml::reader::NsReader;

use crate::adapter::Outcome;
use crate::http::{SendVia, failure_status, snippet, transport_error};

/// A flat XML document read back: root local name, child text by local name (repeated
/// children keep the last value; `lists` keeps them all).
#[derive(Debug, Default, Clone)]
pub struct Flat {
    /// Root element local name.
    pub root: String,
    /// Text of each direct child element.
    pub fields: BTreeMap<String, String>,
}

impl Flat {
    /// A field's text.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.fields.get(name).map(String::as_str)
    }
}

/// Read a document whose root is in namespace `ns`, collecting the text of the root's direct
/// children. Errors: not well-formed (with the byte position), a DOCTYPE, a root in another
/// namespace, a child in another namespace.
pub fn read_flat(body: &[u8], ns: &str) -> Result<Flat, String> {
    let text = std::str::from_utf8(body).map_err(|e| format!("body is not UTF-8: {e}"))?;
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut r = NsReader::from_str(text);
    let mut flat = Flat::default();
    let mut depth = 0usize;
    let mut current: Option<String> = None;
    let mut buf = String::new();
    loop {
        let pos = r.buffer_position();
        let (res, ev) = r
            .read_resolved_event()
            .map_err(|e| format!("XML error at byte {pos}: {e}"))?;
        let in_ns = matches!(&res, ResolveResult::Bound(n) if n.as_ref() == ns);
        match ev {
            Event::DocType(_) => return Err("a DOCTYPE is not accepted".into()),
            Event::Start(s) | Event::Empty(s) if depth == 0 => {
                if !in_ns {
                    return Err(format!(
                        "root element <{}> is not in namespace {ns}",
                        s.name().as_ref()
                    ));
                }
                flat.root = s.local_name().as_ref().to_string();
                depth = 1;
            }
            Event::Start(s) => {
                if depth == 1 {
                    if !in_ns {
                        return Err(format!(
                            "element <{}> is not in namespace {ns}",
                            s.name().as_ref()
                        ));
                    }
                    current = Some(s.local_name().as_ref().to_string());
                    buf.clear();
                }
                depth += 1;
            }
            Event::Empty(s) if depth == 1 => {
                flat.fields
                    .insert(s.local_name().as_ref().to_string(), String::new());
            }
            Event::Text(t) if depth == 2 => buf.push_str(&t.xml10_content()),
            Event::CData(t) if depth == 2 => buf.push_str(t.as_ref()),
            Event::GeneralRef(g) if depth == 2 => {
                let ent = format!("&{};", &*g);
                let v = quick_xml::escape::unescape(&ent)
                    .map_err(|e| format!("XML entity {ent} at byte {pos}: {e}"))?;
                buf.push_str(&v);
            }
            Event::End(_) => {
                depth = depth.saturating_sub(1);
                if depth == 1
                    && let Some(name) = current.take()
                {
                    flat.fields.insert(name, buf.trim().to_string());
                }
            }
            Event::Eof => break,
            _ => {}
        }
    }
    if flat.root.is_empty() {
        return Err("no root element".into());
    }
    Ok(flat)
}

/// POST an XML document of the project's reference XML interfaces (BHXH, Tax) and read the
/// synchronous `BienNhan` receipt in namespace `ns`: `KetQua` `THANH_CONG` is delivered (receipt
/// `MaTiepNhan`), `LOI` a permanent failure with `MaLoi`/`MoTaLoi` (a 200 can still be a
/// failure); HTTP failures and transport errors are classified as for every adapter; a 2xx whose
/// receipt cannot be read leaves the outcome unknown. `key` is sent as `Idempotency-Key`.
pub async fn post_for_receipt(
    client: &crate::http::Agent,
    op: &str,
    url: &str,
    key: &str,
    body: Vec<u8>,
    ns: &str,
) -> Outcome {
    let res = client
        .post(url)
        .header("Idempotency-Key", key)
        .header(
            reqwest::header::CONTENT_TYPE,
            "application/xml; charset=utf-8",
        )
        .body(body)
        .send_via(client)
        .await;
    let resp = match res {
        Ok(r) => r,
        Err(e) => return e.outcome(op),
    };
    let status = resp.status();
    let headers = resp.headers().clone();
    let bytes = match resp.bytes().await {
        Ok(b) => b,
        Err(e) => return transport_error(op, &e),
    };
    if !status.is_success() {
        let reason = read_flat(&bytes, ns)
            .ok()
            .and_then(|f| {
                Some(format!(
                    "{} {}",
                    f.get("MaLoi")?,
                    f.get("MoTaLoi").unwrap_or("")
                ))
            })
            .unwrap_or_else(|| snippet(&bytes));
        return failure_status(op, status, &headers, reason);
    }
    let flat = match read_flat(&bytes, ns) {
        Ok(f) if f.root == "BienNhan" => f,
        Ok(f) => {
            return Outcome::Permanent {
                reason: format!("{op}: expected <BienNhan>, got <{}>", f.root),
            };
        }
        Err(e) => {
            return Outcome::Unknown {
                reason: format!("{op}: HTTP {status} but the receipt is not readable: {e}"),
            };
        }
    };
    match flat.get("KetQua") {
        Some("THANH_CONG") => Outcome::Delivered {
            receipt: flat.get("MaTiepNhan").unwrap_or("THANH_CONG").to_string(),
        },
        Some("LOI") => Outcome::Permanent {
            reason: format!(
                "{op}: BienNhan LOI {} {}",
                flat.get("MaLoi").unwrap_or("?"),
                flat.get("MoTaLoi").unwrap_or("")
            ),
        },
        other => Outcome::Permanent {
            reason: format!("{op}: BienNhan with unknown KetQua {other:?}"),
        },
    }
}

/// The test call of the reference XML interfaces: `GET {endpoint}{path}/<PROBE_MA_HO_SO>` must
/// answer the "not found" receipt: `<BienNhan>` in namespace `ns` with `KetQua` `LOI` and a
/// `MaLoi`.
pub async fn probe_xml_not_found(
    client: &crate::http::Agent,
    endpoint: &str,
    path: &str,
    ns: &str,
) -> crate::http::Probe {
    let url = format!("{endpoint}{path}/{}", crate::adapter::PROBE_MA_HO_SO);
    crate::http::probe_get(client, &url, |_, body| {
        let f = read_flat(body, ns)?;
        match (f.root.as_str(), f.get("KetQua"), f.get("MaLoi")) {
            ("BienNhan", Some("LOI"), Some(code)) => Ok(format!(
                "status lookup of an unknown dossier answered <BienNhan> LOI {code} in {ns}, as the reference format says"
            )),
            _ => Err(format!(
                "expected <BienNhan> with KetQua LOI and MaLoi in {ns}, got <{}>",
                f.root
            )),
        }
    })
    .await
}

/// The status lookup of the reference XML interfaces: `GET url` answers `<TrangThai>`
/// (`MaTiepNhan`, `TrangThaiHoSo`) in namespace `ns`, or a receipt with `MaLoi`/`MoTaLoi`.
///
/// Errors: transport, an unreadable answer, or the agency's error.
pub async fn status_lookup(
    client: &crate::http::Agent,
    url: &str,
    ma_ho_so: &str,
    ns: &str,
) -> Result<crate::adapter::AgencyStatus, String> {
    let resp = client
        .get(url)
        .send_via(client)
        .await
        .map_err(|e| format!("status lookup: {e}"))?;
    let status = resp.status();
    let bytes = resp
        .bytes()
        .await
        .map_err(|e| format!("status lookup: {e}"))?;
    let f = read_flat(&bytes, ns).map_err(|e| format!("status lookup: HTTP {status}: {e}"))?;
    if f.root != "TrangThai" {
        return Err(format!(
            "status lookup: {} {}",
            f.get("MaLoi").unwrap_or(&f.root),
            f.get("MoTaLoi").unwrap_or("")
        ));
    }
    Ok(crate::adapter::AgencyStatus {
        ma_ho_so: ma_ho_so.to_string(),
        receipt: f.get("MaTiepNhan").map(str::to_string),
        status: f
            .get("TrangThaiHoSo")
            .and_then(|s| s.parse().ok())
            .unwrap_or(0),
    })
}

/// The cancel document of the reference XML interfaces (`YeuCauHuy` in namespace `ns`): the
/// dossier, the message id, the reason (default "Dừng xử lý theo yêu cầu") and the time.
pub fn cancel_document(env: &lienthong_core::Envelope, ns: &str) -> Vec<u8> {
    let mut b = Builder::new("YeuCauHuy", ns);
    b.text("MaHoSo", &env.ma_ho_so)
        .text("MaThamChieu", &env.message_id)
        .text(
            "LyDo",
            env.payload
                .reason
                .as_deref()
                .unwrap_or("Dừng xử lý theo yêu cầu"),
        )
        .text(
            "NgayGui",
            &lienthong_core::clock::to_dvcqg(chrono::Utc::now()),
        );
    b.finish("YeuCauHuy")
}

/// Builds a namespaced document with escaped text.
pub struct Builder {
    w: Writer<Cursor<Vec<u8>>>,
}

impl Builder {
    /// Start a document (XML declaration, UTF-8) with root `root` in default namespace `ns`.
    pub fn new(root: &str, ns: &str) -> Self {
        let mut w = Writer::new_with_indent(Cursor::new(Vec::new()), b' ', 2);
        let _ = w.write_event(Event::Decl(BytesDecl::new("1.0", Some("UTF-8"), None)));
        let mut start = BytesStart::new(root);
        start.push_attribute(("xmlns", ns));
        let _ = w.write_event(Event::Start(start));
        Builder { w }
    }

    /// `<name>text</name>`.
    pub fn text(&mut self, name: &str, text: &str) -> &mut Self {
        let _ = self
            .w
            .create_element(name)
            .write_text_content(BytesText::new(text));
        self
    }

    /// `<name attr="v">text</name>`.
    pub fn text_attr(&mut self, name: &str, attr: (&str, &str), text: &str) -> &mut Self {
        let _ = self
            .w
            .create_element(name)
            .with_attribute(attr)
            .write_text_content(BytesText::new(text));
        self
    }

    /// Open `<name>`.
    pub fn open(&mut self, name: &str) -> &mut Self {
        let _ = self.w.write_event(Event::Start(BytesStart::new(name)));
        self
    }

    /// Close `</name>`.
    pub fn close(&mut self, name: &str) -> &mut Self {
        let _ = self.w.write_event(Event::End(BytesEnd::new(name)));
        self
    }

    /// Close the root and return the bytes.
    pub fn finish(mut self, root: &str) -> Vec<u8> {
        let _ = self.w.write_event(Event::End(BytesEnd::new(root)));
        self.w.into_inner().into_inner()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixed_and_default_namespaces_read_the_same() {
        let a = br#"<BienNhan xmlns="urn:x"><KetQua>THANH_CONG</KetQua><MoTaLoi>a &amp; b</MoTaLoi></BienNhan>"#;
        let b = br#"<b:BienNhan xmlns:b="urn:x"><b:KetQua>THANH_CONG</b:KetQua><b:MoTaLoi>a &amp; b</b:MoTaLoi></b:BienNhan>"#;
        let fa = read_flat(a, "urn:x").expect("a");
        let fb = read_flat(b, "urn:x").expect("b");
        assert_eq!(fa.fields, fb.fields);
        assert_eq!(fa.get("MoTaLoi"), Some("a & b"));
    }

    #[test]
    fn wrong_namespace_and_doctype_are_refused() {
        assert!(
            read_flat(
                br#"<BienNhan xmlns="urn:y"><KetQua>x</KetQua></BienNhan>"#,
                "urn:x"
            )
            .is_err()
        );
        assert!(read_flat(br#"<!DOCTYPE x><BienNhan xmlns="urn:x"/>"#, "urn:x").is_err());
    }

    #[test]
    fn builder_escapes_text() {
        let mut b = Builder::new("R", "urn:x");
        b.text("A", "1 < 2 & Đ");
        let out = b.finish("R");
        let f = read_flat(&out, "urn:x").expect("round trip");
        assert_eq!(f.get("A"), Some("1 < 2 & Đ"));
    }
}
