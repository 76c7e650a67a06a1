//! SOAP 1.1 and 1.2 over HTTP for configured agencies: the envelope around a request's
//! operation element, the HTTP headers each version requires, opening an answer's envelope,
//! and reading a SOAP fault as the agency's refusal or a transient failure.
//!
//! Sources: SOAP 1.1, W3C Note 8 May 2000 (§4 envelope, §4.4 `Fault` with `faultcode`
//! `Client`/`Server` and dotted subcodes, `faultstring`, `detail`; §6 HTTP binding:
//! `Content-Type: text/xml`, the `SOAPAction` header, faults with HTTP 500); SOAP 1.2, W3C
//! Recommendation 27 April 2007 (Part 1 §5.4 `Fault` with `Code/Value` `Sender`/`Receiver`,
//! nested `Subcode/Value`, `Reason/Text`, `Detail`; Part 2 §7 HTTP binding:
//! `application/soap+xml` with an optional `action` parameter, a `Sender` fault answered 400
//! and others 500).
//!
//! **Faults.** A `Client` (1.1) or `Sender` (1.2) fault is the agency's refusal (permanent:
//! dead-lettered with its reason); a `Server` or `Receiver` fault is transient (retried);
//! `VersionMismatch`, `MustUnderstand` and `DataEncodingUnknown` are permanent (the bus's
//! envelope is not what the agency takes: a configuration matter). A code the rules do not
//! know is a refusal. [`FaultRules::codes`] overrides any of these by the agency's own code
//! (in the detail), a subcode, or the fault code.

use std::collections::BTreeMap;
use std::io::Cursor;

use quick_xml::Writer;
use quick_xml::events::{BytesDecl, BytesEnd, BytesStart, Event};
use reqwest::StatusCode;
use reqwest::header::HeaderMap;

use crate::outcome::Outcome;
use crate::path::XmlPath;
use crate::xml_doc::Element;

/// The SOAP 1.1 envelope namespace.
pub const SOAP11_NS: &str = "http://schemas.xmlsoap.org/soap/envelope/";
/// The SOAP 1.2 envelope namespace.
pub const SOAP12_NS: &str = "http://www.w3.org/2003/05/soap-envelope";
/// The prefix the bus writes the envelope's elements with, and that paths into answers use
/// for it (`soap:Body/…`) unless the configuration binds it itself.
pub const PREFIX: &str = "soap";

/// A SOAP version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    /// SOAP 1.1 (W3C Note 2000).
    V1_1,
    /// SOAP 1.2 (W3C Recommendation 2007).
    V1_2,
}

impl Version {
    /// `"1.1"` or `"1.2"`.
    ///
    /// Errors: anything else.
    pub fn parse(s: &str) -> Result<Version, String> {
        match s {
            "1.1" => Ok(Version::V1_1),
            "1.2" => Ok(Version::V1_2),
            other => Err(format!("soap {other:?} is neither \"1.1\" nor \"1.2\"")),
        }
    }

    /// The envelope namespace.
    pub fn ns(self) -> &'static str {
        match self {
            Version::V1_1 => SOAP11_NS,
            Version::V1_2 => SOAP12_NS,
        }
    }

    /// `SOAP 1.1` or `SOAP 1.2`, for reasons.
    pub fn label(self) -> &'static str {
        match self {
            Version::V1_1 => "SOAP 1.1",
            Version::V1_2 => "SOAP 1.2",
        }
    }

    /// The HTTP headers of a request with `action`: 1.1 `Content-Type: text/xml;
    /// charset=utf-8` and `SOAPAction: "<action>"` (quoted; `""` without an action); 1.2
    /// `Content-Type: application/soap+xml; charset=utf-8; action="<action>"` (no parameter
    /// without an action).
    pub fn headers(self, action: Option<&str>) -> Vec<(&'static str, String)> {
        match self {
            Version::V1_1 => vec![
                ("Content-Type", "text/xml; charset=utf-8".to_string()),
                ("SOAPAction", format!("\"{}\"", action.unwrap_or(""))),
            ],
            Version::V1_2 => vec![(
                "Content-Type",
                match action {
                    Some(a) => format!("application/soap+xml; charset=utf-8; action=\"{a}\""),
                    None => "application/soap+xml; charset=utf-8".to_string(),
                },
            )],
        }
    }
}

/// A request envelope: `<soap:Envelope>` declaring `soap` and each of `declare` (prefix,
/// URI), `<soap:Body>`, what `body` writes (the operation element), and the closing tags;
/// UTF-8 with an XML declaration.
pub fn envelope(
    version: Version,
    declare: &[(String, String)],
    body: impl FnOnce(&mut Writer<Cursor<Vec<u8>>>),
) -> Vec<u8> {
    let mut w = Writer::new_with_indent(Cursor::new(Vec::new()), b' ', 2);
    let _ = w.write_event(Event::Decl(BytesDecl::new("1.0", Some("UTF-8"), None)));
    let env = format!("{PREFIX}:Envelope");
    let mut start = BytesStart::new(env.as_str());
    start.push_attribute((format!("xmlns:{PREFIX}").as_str(), version.ns()));
    for (p, uri) in declare {
        if p != PREFIX {
            start.push_attribute((format!("xmlns:{p}").as_str(), uri.as_str()));
        }
    }
    let _ = w.write_event(Event::Start(start));
    let b = format!("{PREFIX}:Body");
    let _ = w.write_event(Event::Start(BytesStart::new(b.as_str())));
    body(&mut w);
    let _ = w.write_event(Event::End(BytesEnd::new(b.as_str())));
    let _ = w.write_event(Event::End(BytesEnd::new(env.as_str())));
    w.into_inner().into_inner()
}

/// The `Body` of an answer read as an envelope of `version`.
///
/// Errors: the root is not an `Envelope` of that version (naming what it is, and saying so
/// when it is the other version's), or there is no `Body`.
pub fn body(doc: &Element, version: Version) -> Result<&Element, String> {
    let other = match version {
        Version::V1_1 => Version::V1_2,
        Version::V1_2 => Version::V1_1,
    };
    if doc.is(Some(other.ns()), "Envelope") {
        return Err(format!(
            "the answer is a {} envelope, not {} (set the unit's soap to \"{}\")",
            other.label(),
            version.label(),
            if other == Version::V1_1 { "1.1" } else { "1.2" }
        ));
    }
    if !doc.is(Some(version.ns()), "Envelope") {
        return Err(format!(
            "the answer's root is <{}>, not a {} Envelope",
            doc.display_name(),
            version.label()
        ));
    }
    doc.child(Some(version.ns()), "Body")
        .ok_or_else(|| format!("the {} Envelope has no Body", version.label()))
}

/// The class of a fault, from its code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FaultClass {
    /// 1.1 `Client`, 1.2 `Sender`: the request is wrong; the agency refuses it.
    Sender,
    /// 1.1 `Server`, 1.2 `Receiver`: the agency failed to process it; may succeed later.
    Receiver,
    /// The envelope's version is not the agency's.
    VersionMismatch,
    /// A header the agency had to understand was not understood.
    MustUnderstand,
    /// 1.2: an encoding the agency does not support.
    DataEncodingUnknown,
    /// A code outside the standard ones (an application's own, as written).
    Other(String),
}

/// A SOAP fault read from an answer's `Body`.
#[derive(Debug, Clone, PartialEq)]
pub struct Fault {
    /// The class of the code.
    pub class: FaultClass,
    /// The code as written (`soap:Client.Authentication`, `env:Sender`).
    pub code: String,
    /// Subcodes, outermost first, by local name: 1.1 the dotted parts after the class
    /// (`Authentication`), 1.2 the `Subcode/Value`s.
    pub subcodes: Vec<String>,
    /// `faultstring` (1.1) or the first `Reason/Text` (1.2; Vietnamese when there is one).
    pub reason: String,
    /// `detail` (1.1) or `Detail` (1.2).
    pub detail: Option<Element>,
}

/// How a fault comes out ([`FaultRules::codes`] values).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// The agency's refusal (permanent).
    Refused,
    /// A transient failure (retried).
    Transient,
    /// The agency may have taken the request (an unknown outcome: retried with the same key
    /// and looked up).
    Unknown,
}

/// A configuration's reading of faults: where the agency's own error code and message are in
/// the detail, and which codes mean what.
#[derive(Debug, Clone, Default)]
pub struct FaultRules {
    /// Path, from the `detail`/`Detail` element, to the agency's own error code.
    pub detail_code: Option<XmlPath>,
    /// Path, from the `detail`/`Detail` element, to the agency's error text (added to the
    /// reason).
    pub detail_message: Option<XmlPath>,
    /// Code → verdict. A key matches, in this order: the agency's code in the detail; a
    /// subcode (innermost first; 1.1: the dotted code after the envelope prefix,
    /// `Server.Busy`); the class (`Client`, `Server`, `Sender`, `Receiver`).
    pub codes: BTreeMap<String, Verdict>,
}

fn local(qname: &str) -> &str {
    qname.rsplit_once(':').map_or(qname, |(_, l)| l)
}

/// The fault in `body`, if its first child element is one.
pub fn fault(body: &Element, version: Version) -> Option<Fault> {
    let env = Some(version.ns());
    let f = body.children.first().filter(|c| c.is(env, "Fault"))?;
    match version {
        Version::V1_1 => {
            // faultcode, faultstring and detail are unqualified (§4.4); accept them qualified too.
            let part = |name: &str| f.child(None, name).or_else(|| f.child(env, name));
            let code_el = part("faultcode");
            let code = code_el.map(|c| c.text.clone()).unwrap_or_default();
            let standard =
                code_el.is_some_and(|c| c.text_ns.is_none() || c.text_ns.as_deref() == env);
            let mut dotted = local(&code).split('.').map(str::to_string);
            let head = dotted.next().unwrap_or_default();
            let class = match (standard, head.as_str()) {
                (true, "Client") => FaultClass::Sender,
                (true, "Server") => FaultClass::Receiver,
                (true, "VersionMismatch") => FaultClass::VersionMismatch,
                (true, "MustUnderstand") => FaultClass::MustUnderstand,
                _ => FaultClass::Other(code.clone()),
            };
            Some(Fault {
                class,
                subcodes: dotted.collect(),
                reason: part("faultstring")
                    .map(|s| s.text.clone())
                    .unwrap_or_default(),
                detail: part("detail").cloned(),
                code,
            })
        }
        Version::V1_2 => {
            let code_el = f.child(env, "Code");
            let value = |el: Option<&Element>| {
                el.and_then(|c| c.child(env, "Value"))
                    .map(|v| (v.text.clone(), v.text_ns.clone()))
            };
            let (code, code_ns) = value(code_el).unwrap_or_default();
            let class = match (code_ns.as_deref() == env, local(&code)) {
                (true, "Sender") => FaultClass::Sender,
                (true, "Receiver") => FaultClass::Receiver,
                (true, "VersionMismatch") => FaultClass::VersionMismatch,
                (true, "MustUnderstand") => FaultClass::MustUnderstand,
                (true, "DataEncodingUnknown") => FaultClass::DataEncodingUnknown,
                _ => FaultClass::Other(code.clone()),
            };
            let mut subcodes = Vec::new();
            let mut at = code_el.and_then(|c| c.child(env, "Subcode"));
            while let Some(s) = at {
                if let Some((v, _)) = value(Some(s)) {
                    subcodes.push(local(&v).to_string());
                }
                at = s.child(env, "Subcode");
            }
            let texts: Vec<&Element> = f
                .child(env, "Reason")
                .map(|r| r.children_named(env, "Text").collect())
                .unwrap_or_default();
            let xml_ns = Some("http://www.w3.org/XML/1998/namespace");
            let reason = texts
                .iter()
                .find(|t| t.attr(xml_ns, "lang").is_some_and(|l| l.starts_with("vi")))
                .or(texts.first())
                .map(|t| t.text.clone())
                .unwrap_or_default();
            Some(Fault {
                class,
                code,
                subcodes,
                reason,
                detail: f.child(env, "Detail").cloned(),
            })
        }
    }
}

impl Fault {
    /// The agency's own code, from the detail, when the rules say where it is.
    pub fn detail_code(&self, rules: &FaultRules) -> Option<String> {
        let d = self.detail.as_ref()?;
        rules
            .detail_code
            .as_ref()?
            .first(d)
            .filter(|c| !c.is_empty())
    }

    /// The codes a table may name this fault by, in the order they are tried: the agency's
    /// code in the detail, the subcodes innermost first, the fault code without its prefix
    /// (`Server.Busy`), its class (`Server`).
    pub fn keys(&self, rules: &FaultRules) -> Vec<String> {
        let dotted = local(&self.code).to_string();
        let class_name = dotted.split('.').next().unwrap_or_default().to_string();
        self.detail_code(rules)
            .into_iter()
            .chain(self.subcodes.iter().rev().cloned())
            .chain([dotted, class_name])
            .collect()
    }

    /// The verdict under `rules`, and the code that decided it when the table did.
    pub fn verdict(&self, rules: &FaultRules) -> (Verdict, Option<String>) {
        for k in self.keys(rules) {
            if let Some(v) = rules.codes.get(&k) {
                return (*v, Some(k));
            }
        }
        let v = match self.class {
            FaultClass::Receiver => Verdict::Transient,
            _ => Verdict::Refused,
        };
        (v, None)
    }

    /// The fault in words: `SOAP fault soap:Client [E_DU_LIEU]: faultstring: detail message`.
    pub fn describe(&self, rules: &FaultRules) -> String {
        let mut s = format!("SOAP fault {}", self.code);
        if !self.subcodes.is_empty() && !self.code.contains('.') {
            s.push_str(&format!(" ({})", self.subcodes.join(" / ")));
        }
        if let Some(c) = self.detail_code(rules) {
            s.push_str(&format!(" [{c}]"));
        }
        if !self.reason.is_empty() {
            s.push_str(&format!(": {}", self.reason));
        }
        let message = self
            .detail
            .as_ref()
            .zip(rules.detail_message.as_ref())
            .and_then(|(d, p)| p.first(d))
            .filter(|m| !m.is_empty() && *m != self.reason);
        if let Some(m) = message {
            s.push_str(&format!(": {m}"));
        }
        crate::outcome::clean_text(&s)
    }

    /// The outcome of operation `op` whose answer (HTTP `status`, `headers`, `body`) is this
    /// fault: refused → permanent; transient → transient with the answer's Retry-After;
    /// unknown → unknown with the body's excerpt. A version or header mismatch says the
    /// configuration is at fault.
    pub fn outcome(
        &self,
        op: &str,
        status: StatusCode,
        headers: &HeaderMap,
        body: &[u8],
        rules: &FaultRules,
    ) -> Outcome {
        let what = self.describe(rules);
        let (verdict, by) = self.verdict(rules);
        if by.is_none()
            && matches!(
                self.class,
                FaultClass::VersionMismatch
                    | FaultClass::MustUnderstand
                    | FaultClass::DataEncodingUnknown
            )
        {
            return Outcome::Permanent {
                reason: format!(
                    "{op}: HTTP {status} with {what}: the agency does not take the bus's envelope (check the unit's soap version and settings)"
                ),
            };
        }
        let reason = format!("{op}: HTTP {status} with {what}");
        match verdict {
            Verdict::Refused => Outcome::Permanent { reason },
            Verdict::Transient => Outcome::Transient {
                reason,
                retry_after: crate::http::retry_after(headers),
            },
            Verdict::Unknown => Outcome::Unknown {
                reason,
                answer: Some(crate::http::snippet(body)),
            },
        }
    }
}

/// Whether an HTTP status keeps its HTTP meaning even when the body is a SOAP fault: 401,
/// 403, 408, 429, 502, 503, 504 and redirects are the HTTP front end's (authentication,
/// rate limits, a proxy or a stopped service), not the agency's processing. With any other
/// status (200, 400, 500 …) a fault in the body decides the outcome.
pub fn status_decides(status: StatusCode) -> bool {
    status.is_redirection() || matches!(status.as_u16(), 401 | 403 | 408 | 429 | 502 | 503 | 504)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::path::Namespaces;

    fn rules() -> FaultRules {
        let ns = Namespaces {
            prefixes: [("ht".to_string(), "urn:ht".to_string())]
                .into_iter()
                .collect(),
            default: None,
        };
        FaultRules {
            detail_code: Some(XmlPath::parse("ht:Loi/ht:MaLoi", &ns).expect("path")),
            detail_message: Some(XmlPath::parse("ht:Loi/ht:MoTa", &ns).expect("path")),
            codes: [
                ("E_QUA_TAI".to_string(), Verdict::Transient),
                ("E_TRUNG".to_string(), Verdict::Refused),
                ("Server.Timeout".to_string(), Verdict::Unknown),
            ]
            .into_iter()
            .collect(),
        }
    }

    fn fault11(code: &str, detail_code: &str) -> Fault {
        let doc = format!(
            r#"<s:Envelope xmlns:s="{SOAP11_NS}"><s:Body><s:Fault><faultcode>{code}</faultcode>
            <faultstring>Lỗi &amp; lý do</faultstring><detail><h:Loi xmlns:h="urn:ht"><h:MaLoi>{detail_code}</h:MaLoi>
            <h:MoTa>Mô tả</h:MoTa></h:Loi></detail></s:Fault></s:Body></s:Envelope>"#
        );
        let root = crate::xml_doc::parse(doc.as_bytes()).expect("doc");
        let b = body(&root, Version::V1_1).expect("body");
        fault(b, Version::V1_1).expect("a fault")
    }

    #[test]
    fn soap11_client_refuses_server_retries_and_the_table_overrides() {
        let f = fault11("s:Client", "E_DU_LIEU");
        assert_eq!(f.class, FaultClass::Sender);
        assert_eq!(f.reason, "Lỗi & lý do");
        assert_eq!(f.verdict(&rules()), (Verdict::Refused, None));
        let h = HeaderMap::new();
        let o = f.outcome(
            "submit",
            StatusCode::INTERNAL_SERVER_ERROR,
            &h,
            b"",
            &rules(),
        );
        assert!(
            matches!(&o, Outcome::Permanent { reason } if reason.contains("s:Client [E_DU_LIEU]: Lỗi & lý do: Mô tả") && reason.contains("HTTP 500")),
            "{o:?}"
        );
        let f = fault11("s:Server", "E_LOI_CSDL");
        assert!(matches!(
            f.outcome(
                "submit",
                StatusCode::INTERNAL_SERVER_ERROR,
                &h,
                b"",
                &rules()
            ),
            Outcome::Transient { .. }
        ));
        // The agency's own code decides before the class.
        assert_eq!(
            fault11("s:Client", "E_QUA_TAI").verdict(&rules()).0,
            Verdict::Transient
        );
        assert_eq!(
            fault11("s:Server", "E_TRUNG").verdict(&rules()).0,
            Verdict::Refused
        );
        // A dotted 1.1 code.
        let f = fault11("s:Server.Timeout", "");
        assert_eq!(f.subcodes, ["Timeout"]);
        assert_eq!(
            f.verdict(&rules()),
            (Verdict::Unknown, Some("Server.Timeout".into()))
        );
        // A code outside the envelope namespace is the application's: a refusal by default.
        let f = fault11("h:E_ABC", "");
        assert_eq!(f.class, FaultClass::Other("h:E_ABC".into()));
        assert_eq!(f.verdict(&FaultRules::default()).0, Verdict::Refused);
        let f = fault11("s:VersionMismatch", "");
        let o = f.outcome(
            "submit",
            StatusCode::INTERNAL_SERVER_ERROR,
            &h,
            b"",
            &rules(),
        );
        assert!(
            matches!(&o, Outcome::Permanent { reason } if reason.contains("soap version")),
            "{o:?}"
        );
    }

    #[test]
    fn soap12_codes_subcodes_and_reasons_are_read() {
        let doc = format!(
            r#"<env:Envelope xmlns:env="{SOAP12_NS}" xmlns:m="urn:m"><env:Body><env:Fault>
            <env:Code><env:Value>env:Receiver</env:Value><env:Subcode><env:Value>m:Busy</env:Value>
            <env:Subcode><env:Value>m:E_QUA_TAI</env:Value></env:Subcode></env:Subcode></env:Code>
            <env:Reason><env:Text xml:lang="en">Busy</env:Text><env:Text xml:lang="vi">Quá tải</env:Text></env:Reason>
            </env:Fault></env:Body></env:Envelope>"#
        );
        let root = crate::xml_doc::parse(doc.as_bytes()).expect("doc");
        assert!(
            body(&root, Version::V1_1)
                .expect_err("1.2 to 1.1")
                .contains("\"1.2\"")
        );
        let f = fault(body(&root, Version::V1_2).expect("body"), Version::V1_2).expect("fault");
        assert_eq!(f.class, FaultClass::Receiver);
        assert_eq!(f.subcodes, ["Busy", "E_QUA_TAI"]);
        assert_eq!(f.reason, "Quá tải");
        assert_eq!(f.verdict(&FaultRules::default()).0, Verdict::Transient);
        let mut r = FaultRules::default();
        r.codes.insert("E_QUA_TAI".into(), Verdict::Refused);
        r.codes.insert("Busy".into(), Verdict::Unknown);
        assert_eq!(
            f.verdict(&r),
            (Verdict::Refused, Some("E_QUA_TAI".into())),
            "innermost first"
        );
        let sender = doc.replace("env:Receiver", "env:Sender");
        let root = crate::xml_doc::parse(sender.as_bytes()).expect("doc");
        let f = fault(body(&root, Version::V1_2).expect("body"), Version::V1_2).expect("fault");
        assert_eq!(f.verdict(&FaultRules::default()).0, Verdict::Refused);
    }

    #[test]
    fn envelopes_are_written_with_the_versions_headers() {
        let out = envelope(Version::V1_1, &[("ht".into(), "urn:ht".into())], |w| {
            let _ = w.create_element("ht:Op").write_empty();
        });
        let root = crate::xml_doc::parse(&out).expect("well-formed");
        let b = body(&root, Version::V1_1).expect("a 1.1 envelope");
        assert!(b.children[0].is(Some("urn:ht"), "Op"));
        assert!(fault(b, Version::V1_1).is_none());
        assert_eq!(
            Version::V1_1.headers(Some("urn:ht#Op")),
            [
                ("Content-Type", "text/xml; charset=utf-8".to_string()),
                ("SOAPAction", "\"urn:ht#Op\"".to_string())
            ]
        );
        assert_eq!(
            Version::V1_2.headers(Some("urn:ht#Op")),
            [(
                "Content-Type",
                "application/soap+xml; charset=utf-8; action=\"urn:ht#Op\"".to_string()
            )]
        );
        assert!(status_decides(StatusCode::SERVICE_UNAVAILABLE));
        assert!(!status_decides(StatusCode::INTERNAL_SERVER_ERROR));
        assert!(!status_decides(StatusCode::BAD_REQUEST));
    }
}
