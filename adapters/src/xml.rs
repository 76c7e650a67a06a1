//! Small XML helpers on quick-xml for flat agency documents: write an element tree with
//! escaping, and read a namespace-checked root's child elements (matched on namespace URI and
//! local name, so any prefix or a default namespace reads the same).

use std::collections::BTreeMap;
use std::io::Cursor;

use quick_xml::Writer;
use quick_xml::events::{BytesDecl, BytesEnd, BytesStart, BytesText, Event};
use quick_xml::name::ResolveResult;
use quick_xml::reader::NsReader;

use crate::http::{
    exchange, failure_status, lookup_failed, lookup_unreadable, snippet, unreadable,
};
use crate::outcome::{Outcome, StatusLookup};

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

/// POST an XML document (`body`, built once: the same bytes on every attempt) of the
/// project's reference XML interfaces (BHXH, Tax: submit, payment confirmation, cancel) with `Idempotency-Key: key`, and read the synchronous `BienNhan`
/// receipt in namespace `ns` ([`xml_receipt`]); HTTP failures and transport errors are
/// classified as for every adapter, with the agency's `MaLoi`/`MoTaLoi` when the body has them.
pub async fn post_for_receipt(
    client: &crate::http::Agent,
    op: &str,
    url: &str,
    key: &str,
    body: bytes::Bytes,
    ns: &str,
) -> Outcome {
    let request = client
        .post(url)
        .header("Idempotency-Key", key)
        .header(
            reqwest::header::CONTENT_TYPE,
            "application/xml; charset=utf-8",
        )
        .body(body);
    let r = match exchange(client, op, request).await {
        Ok(r) => r,
        Err(o) => return o,
    };
    if !r.status.is_success() {
        let reason = read_flat(&r.body, ns)
            .ok()
            .and_then(|f| {
                Some(format!(
                    "{} {}",
                    f.get("MaLoi")?,
                    f.get("MoTaLoi").unwrap_or("")
                ))
            })
            .unwrap_or_else(|| snippet(&r.body));
        return failure_status(op, r.status, &r.headers, reason);
    }
    xml_receipt(op, r.status, &r.body, ns)
}

/// A 2xx answer of the reference XML interfaces under the one rule: `<BienNhan>` in `ns` with
/// `KetQua` `THANH_CONG` and a `MaTiepNhan` is delivered (the receipt); `KetQua` `LOI` is a
/// permanent failure with `MaLoi`/`MoTaLoi` (a 200 can still be a failure); anything else (not
/// XML, another root or namespace, no `KetQua`, another `KetQua`, no `MaTiepNhan`, empty,
/// HTML, truncated) leaves the outcome unknown.
pub fn xml_receipt(op: &str, status: reqwest::StatusCode, body: &[u8], ns: &str) -> Outcome {
    let flat = match read_flat(body, ns) {
        Ok(f) if f.root == "BienNhan" => f,
        Ok(f) => {
            return unreadable(
                op,
                status,
                format!("the answer is <{}>, not the <BienNhan> receipt", f.root),
                body,
            );
        }
        Err(e) => {
            return unreadable(
                op,
                status,
                format!("the body is not a <BienNhan> receipt in {ns} ({e})"),
                body,
            );
        }
    };
    match (flat.get("KetQua"), flat.get("MaTiepNhan")) {
        (Some("THANH_CONG"), Some(r)) if !r.is_empty() => Outcome::Delivered {
            receipt: r.to_string(),
        },
        (Some("LOI"), _) => Outcome::Permanent {
            reason: format!(
                "{op}: BienNhan LOI {} {}",
                flat.get("MaLoi").unwrap_or("?"),
                flat.get("MoTaLoi").unwrap_or("")
            )
            .trim()
            .to_string(),
        },
        (Some("THANH_CONG"), _) => unreadable(
            op,
            status,
            "the <BienNhan> says THANH_CONG without a MaTiepNhan",
            body,
        ),
        (other, _) => unreadable(
            op,
            status,
            format!("the <BienNhan> has KetQua {other:?}, neither THANH_CONG nor LOI"),
            body,
        ),
    }
}

/// The reference interfaces' "no such dossier" code (defined with the outcomes).
pub use crate::outcome::NOT_FOUND_CODE;

/// The status lookup of the reference XML interfaces (BHXH, Tax): `GET url` answers
/// `<TrangThai>` in `ns` (`MaTiepNhan`, `TrangThaiHoSo` 1–10: found), or, for an unknown
/// dossier, a `<BienNhan>` `LOI` `E_KHONG_TIM_THAY` (BHXH with 200, Tax with 404: not found).
/// Another `LOI` is failed (the lookup was refused); a 2xx that reads as neither is
/// unreadable; other HTTP failures and transport errors are failed.
pub async fn status_lookup(
    client: &crate::http::Agent,
    url: &str,
    ma_ho_so: &str,
    ns: &str,
) -> StatusLookup {
    let op = "status lookup";
    let r = match exchange(client, op, client.get(url)).await {
        Ok(r) => r,
        Err(o) => return lookup_failed(o),
    };
    let flat = read_flat(&r.body, ns);
    if let Ok(f) = &flat
        && f.root == "BienNhan"
        && f.get("KetQua") == Some("LOI")
        && (r.status.is_success() || r.status == reqwest::StatusCode::NOT_FOUND)
    {
        let err = format!(
            "{} {}",
            f.get("MaLoi").unwrap_or("?"),
            f.get("MoTaLoi").unwrap_or("")
        )
        .trim()
        .to_string();
        return if f.get("MaLoi") == Some(NOT_FOUND_CODE) {
            StatusLookup::NotFound { reason: err }
        } else {
            StatusLookup::Failed {
                reason: format!("{op}: HTTP {}: BienNhan LOI {err}", r.status),
            }
        };
    }
    if !r.status.is_success() {
        let reason = flat
            .ok()
            .and_then(|f| {
                Some(format!(
                    "{} {}",
                    f.get("MaLoi")?,
                    f.get("MoTaLoi").unwrap_or("")
                ))
            })
            .unwrap_or_else(|| snippet(&r.body));
        return lookup_failed(failure_status(op, r.status, &r.headers, reason));
    }
    let f = match flat {
        Ok(f) if f.root == "TrangThai" => f,
        Ok(f) => {
            return lookup_unreadable(
                op,
                r.status,
                format!("the answer is <{}>, not <TrangThai>", f.root),
                &r.body,
            );
        }
        Err(e) => {
            return lookup_unreadable(
                op,
                r.status,
                format!("the body is not a <TrangThai> in {ns} ({e})"),
                &r.body,
            );
        }
    };
    match f
        .get("TrangThaiHoSo")
        .and_then(|s| s.parse::<u8>().ok())
        .filter(|n| (1..=10).contains(n))
    {
        Some(status) => StatusLookup::Found(crate::outcome::AgencyStatus {
            ma_ho_so: ma_ho_so.to_string(),
            receipt: f.get("MaTiepNhan").map(str::to_string),
            status,
        }),
        None => lookup_unreadable(
            op,
            r.status,
            "the <TrangThai> has no TrangThaiHoSo 1–10",
            &r.body,
        ),
    }
}

/// The cancel document of the reference XML interfaces (`YeuCauHuy` in namespace `ns`): the
/// dossier, the message id, the reason (default "Dừng xử lý theo yêu cầu") and the envelope's
/// `sent_at` ([`crate::mapping::sent_time`]), so that every attempt sends the same bytes.
///
/// Errors: `sent_at` is not an RFC 3339 time.
pub fn cancel_document(env: &lienthong_core::Envelope, ns: &str) -> Result<Vec<u8>, String> {
    let sent = crate::mapping::sent_time(env)?;
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
        .text("NgayGui", &sent);
    Ok(b.finish("YeuCauHuy"))
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
