//! An agency's XML answer read whole into a small namespace-resolved element tree (on
//! quick-xml's `NsReader`), for the path lookups of [`crate::path`] and the SOAP envelopes of
//! [`crate::soap`]; and such a tree written back as a standalone document.
//!
//! Names are resolved to (namespace URI, local name), so any prefix or a default namespace
//! reads the same. A DOCTYPE is refused (no entity expansion), as are documents nested deeper
//! than [`MAX_DEPTH`] and documents that end before their root closes (a truncated answer).

use std::io::Cursor;

use quick_xml::Writer;
use quick_xml::events::{BytesDecl, BytesEnd, BytesStart, BytesText, Event};
use quick_xml::name::{QName, ResolveResult};
use quick_xml::reader::NsReader;

/// Deepest element nesting read; deeper documents are refused (an agency's answer is a few
/// levels deep; the limit keeps a hostile answer from exhausting the stack).
pub const MAX_DEPTH: usize = 64;

/// An attribute, its name resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attr {
    /// Namespace URI (`None` for an unprefixed attribute: attributes take no default
    /// namespace).
    pub ns: Option<String>,
    /// Local name.
    pub name: String,
    /// Value, unescaped.
    pub value: String,
}

/// An element, its name resolved, with its attributes, child elements and text.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Element {
    /// Namespace URI (`None`: no namespace).
    pub ns: Option<String>,
    /// Local name.
    pub name: String,
    /// Attributes (namespace declarations excluded), in document order.
    pub attrs: Vec<Attr>,
    /// Child elements, in document order.
    pub children: Vec<Element>,
    /// The element's own text (text and CDATA directly inside it, concatenated, trimmed).
    pub text: String,
    /// When the text is a QName (`soap:Client`, a SOAP fault code), the namespace its prefix
    /// (or the default namespace) is bound to at this element; `None` otherwise.
    pub text_ns: Option<String>,
}

impl Element {
    /// Whether this element is `{ns}name`.
    pub fn is(&self, ns: Option<&str>, name: &str) -> bool {
        self.name == name && self.ns.as_deref() == ns
    }

    /// The child elements named `{ns}name`.
    pub fn children_named<'a>(
        &'a self,
        ns: Option<&'a str>,
        name: &'a str,
    ) -> impl Iterator<Item = &'a Element> + 'a {
        self.children.iter().filter(move |c| c.is(ns, name))
    }

    /// The first child element named `{ns}name`.
    pub fn child(&self, ns: Option<&str>, name: &str) -> Option<&Element> {
        self.children.iter().find(|c| c.is(ns, name))
    }

    /// The value of attribute `{ns}name`.
    pub fn attr(&self, ns: Option<&str>, name: &str) -> Option<&str> {
        self.attrs
            .iter()
            .find(|a| a.name == name && a.ns.as_deref() == ns)
            .map(|a| a.value.as_str())
    }

    /// The element as `{ns}name` or `name`, for reasons.
    pub fn display_name(&self) -> String {
        match &self.ns {
            Some(ns) => format!("{{{ns}}}{}", self.name),
            None => self.name.clone(),
        }
    }
}

fn ns_of(r: ResolveResult<'_>) -> Result<Option<String>, String> {
    match r {
        ResolveResult::Bound(n) => Ok(Some(n.as_ref().to_string())),
        ResolveResult::Unbound => Ok(None),
        ResolveResult::Unknown(p) => Err(format!("the prefix {p:?} is not bound to a namespace")),
    }
}

/// Whether `s` has the shape of a QName (`prefix:local` or `local`: no spaces, at most one
/// colon, not at either end).
fn looks_like_qname(s: &str) -> bool {
    !s.is_empty()
        && s.matches(':').count() <= 1
        && !s.starts_with(':')
        && !s.ends_with(':')
        && s.chars()
            .all(|c| c.is_alphanumeric() || matches!(c, ':' | '_' | '-' | '.'))
}

/// Read a whole document into its root [`Element`].
///
/// Errors (in words, with the byte position where it applies): not UTF-8, not well-formed, a
/// DOCTYPE, an unbound prefix, nesting deeper than [`MAX_DEPTH`], no root element, or the end
/// of the body before the root closes.
pub fn parse(body: &[u8]) -> Result<Element, String> {
    let text = std::str::from_utf8(body).map_err(|e| format!("the body is not UTF-8: {e}"))?;
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut r = NsReader::from_str(text);
    let mut stack: Vec<Element> = Vec::new();
    let mut root: Option<Element> = None;
    loop {
        let pos = r.buffer_position();
        let (res, ev) = r
            .read_resolved_event()
            .map_err(|e| format!("XML error at byte {pos}: {e}"))?;
        let ns = ns_of(res).map_err(|e| format!("XML error at byte {pos}: {e}"));
        match ev {
            Event::DocType(_) => return Err("a DOCTYPE is not accepted".into()),
            Event::Start(s) | Event::Empty(s) if root.is_some() && stack.is_empty() => {
                return Err(format!(
                    "a second root element <{}> at byte {pos}",
                    s.name().as_ref()
                ));
            }
            Event::Start(ref s) | Event::Empty(ref s) => {
                if stack.len() >= MAX_DEPTH {
                    return Err(format!("elements nested deeper than {MAX_DEPTH}"));
                }
                let mut el = Element {
                    ns: ns?,
                    name: s.local_name().as_ref().to_string(),
                    ..Element::default()
                };
                for a in s.attributes() {
                    let a = a.map_err(|e| format!("XML attribute error at byte {pos}: {e}"))?;
                    if a.key.as_namespace_binding().is_some() {
                        continue;
                    }
                    let (res, local) = r.resolver().resolve_attribute(a.key);
                    let value = a
                        .normalized_value(quick_xml::XmlVersion::Implicit1_0)
                        .map_err(|e| format!("XML attribute error at byte {pos}: {e}"))?;
                    el.attrs.push(Attr {
                        ns: ns_of(res).map_err(|e| format!("XML error at byte {pos}: {e}"))?,
                        name: local.as_ref().to_string(),
                        value: value.into_owned(),
                    });
                }
                if matches!(ev, Event::Empty(_)) {
                    close(&mut stack, &mut root, el);
                } else {
                    stack.push(el);
                }
            }
            Event::Text(t) => {
                if let Some(el) = stack.last_mut() {
                    el.text.push_str(&t.xml10_content());
                }
            }
            Event::CData(t) => {
                if let Some(el) = stack.last_mut() {
                    el.text.push_str(t.as_ref());
                }
            }
            Event::GeneralRef(g) => {
                let ent = format!("&{};", &*g);
                let v = quick_xml::escape::unescape(&ent)
                    .map_err(|e| format!("XML entity {ent} at byte {pos}: {e}"))?;
                if let Some(el) = stack.last_mut() {
                    el.text.push_str(&v);
                }
            }
            Event::End(_) => {
                let Some(mut el) = stack.pop() else {
                    return Err(format!("an end tag without a start at byte {pos}"));
                };
                let trimmed = el.text.trim();
                if trimmed.len() != el.text.len() {
                    el.text = trimmed.to_string();
                }
                // The element's bindings are still in scope at its end tag.
                if looks_like_qname(&el.text) {
                    let (res, _) = r.resolver().resolve_element(QName(el.text.as_str()));
                    el.text_ns = ns_of(res).ok().flatten();
                }
                close(&mut stack, &mut root, el);
            }
            Event::Eof => break,
            _ => {}
        }
    }
    if let Some(open) = stack.first() {
        return Err(format!(
            "the document ends before <{}> closes (truncated)",
            open.name
        ));
    }
    root.ok_or_else(|| "no root element".to_string())
}

fn close(stack: &mut [Element], root: &mut Option<Element>, el: Element) {
    match stack.last_mut() {
        Some(parent) => parent.children.push(el),
        None => *root = Some(el),
    }
}

/// `el` as a standalone UTF-8 document: every namespace it and its descendants use is declared
/// on it (prefixes `ns1`, `ns2`, … in order of first use), so a fragment cut out of a larger
/// document (a SOAP body's operation) can be validated on its own.
pub fn write(el: &Element) -> Vec<u8> {
    let mut uris: Vec<String> = Vec::new();
    collect_ns(el, &mut uris);
    let prefix = |ns: &Option<String>| -> Option<String> {
        ns.as_ref().and_then(|n| {
            uris.iter()
                .position(|u| u == n)
                .map(|i| format!("ns{}", i + 1))
        })
    };
    let mut w = Writer::new(Cursor::new(Vec::new()));
    let _ = w.write_event(Event::Decl(BytesDecl::new("1.0", Some("UTF-8"), None)));
    write_el(&mut w, el, &prefix, Some(&uris));
    w.into_inner().into_inner()
}

fn collect_ns(el: &Element, uris: &mut Vec<String>) {
    for n in std::iter::once(&el.ns).chain(el.attrs.iter().map(|a| &a.ns)) {
        if let Some(n) = n
            && !uris.contains(n)
        {
            uris.push(n.clone());
        }
    }
    for c in &el.children {
        collect_ns(c, uris);
    }
}

fn write_el(
    w: &mut Writer<Cursor<Vec<u8>>>,
    el: &Element,
    prefix: &dyn Fn(&Option<String>) -> Option<String>,
    declare: Option<&[String]>,
) {
    let qualified = |p: Option<String>, local: &str| match p {
        Some(p) => format!("{p}:{local}"),
        None => local.to_string(),
    };
    let name = qualified(prefix(&el.ns), &el.name);
    let mut start = BytesStart::new(name.as_str());
    for (i, uri) in declare.unwrap_or_default().iter().enumerate() {
        start.push_attribute((format!("xmlns:ns{}", i + 1).as_str(), uri.as_str()));
    }
    for a in &el.attrs {
        start.push_attribute((qualified(prefix(&a.ns), &a.name).as_str(), a.value.as_str()));
    }
    let _ = w.write_event(Event::Start(start));
    if !el.text.is_empty() {
        let _ = w.write_event(Event::Text(BytesText::new(&el.text)));
    }
    for c in &el.children {
        write_el(w, c, prefix, None);
    }
    let _ = w.write_event(Event::End(BytesEnd::new(name.as_str())));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_attributes_and_qname_text_are_resolved() {
        let doc = br#"<?xml version="1.0"?>
<s:Envelope xmlns:s="urn:env" xmlns:t="urn:t"><s:Body>
  <Kq xmlns="urn:d" t:ma="01" loai="a &amp; b"><Ma>  X-1 </Ma><Code>s:Client</Code><![CDATA[<raw>]]></Kq>
</s:Body></s:Envelope>"#;
        let root = parse(doc).expect("parse");
        assert!(root.is(Some("urn:env"), "Envelope"));
        let body = root.child(Some("urn:env"), "Body").expect("body");
        let kq = body.child(Some("urn:d"), "Kq").expect("default namespace");
        assert_eq!(kq.attr(Some("urn:t"), "ma"), Some("01"));
        assert_eq!(
            kq.attr(None, "loai"),
            Some("a & b"),
            "unprefixed: no namespace"
        );
        assert_eq!(
            kq.child(Some("urn:d"), "Ma").map(|m| m.text.as_str()),
            Some("X-1")
        );
        let code = kq.child(Some("urn:d"), "Code").expect("code");
        assert_eq!(code.text_ns.as_deref(), Some("urn:env"));
        assert_eq!(kq.text, "<raw>");
    }

    #[test]
    fn truncated_doctype_unbound_and_deep_documents_are_refused() {
        let e = parse(b"<a xmlns=\"urn:x\"><b>1</b>").expect_err("truncated");
        assert!(e.contains("truncated"), "{e}");
        assert!(parse(b"<!DOCTYPE a><a/>").is_err());
        let e = parse(b"<p:a/>").expect_err("unbound");
        assert!(e.contains("\"p\""), "{e}");
        let deep = format!(
            "{}{}",
            "<a>".repeat(MAX_DEPTH + 1),
            "</a>".repeat(MAX_DEPTH + 1)
        );
        assert!(parse(deep.as_bytes()).expect_err("deep").contains("deeper"));
        assert!(parse(b"").expect_err("empty").contains("no root"));
        assert!(parse(b"<a/><b/>").is_err(), "two roots");
        assert!(parse(b"{\"a\": 1}").is_err(), "JSON");
    }

    #[test]
    fn a_fragment_is_written_with_its_namespaces_declared() {
        let doc = br#"<e:Env xmlns:e="urn:env"><t:Op xmlns:t="urn:t" t:v="1"><t:A>1 &lt; 2</t:A><B/></t:Op></e:Env>"#;
        let root = parse(doc).expect("parse");
        let op = &root.children[0];
        let out = write(op);
        let back = parse(&out).expect("standalone");
        assert_eq!(&back, op, "{}", String::from_utf8_lossy(&out));
    }
}
