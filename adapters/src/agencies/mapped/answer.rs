//! Reading a mapped agency's answers and callbacks: the body in the configured format (a JSON
//! object; an XML document whose root is in the configured namespace; a SOAP envelope of the
//! configured version), the values the configured paths reach, and the callback's result
//! fields with their transforms and lists.

use serde_json::{Map, Value, json};

use super::config::{Compiled, ReadField};
use crate::path::{Doc, Path};
use crate::xml_doc::Element;

/// An agency's answer read in its configured format.
#[derive(Debug)]
pub(super) enum Answer {
    /// A JSON object.
    Json(Value),
    /// An XML document's root (with `soap`, the Envelope, whose Body is known to exist).
    Xml(Element),
}

impl Answer {
    /// Read `body`.
    ///
    /// Errors say why the body is not an answer of the format: not JSON or not an object; not
    /// XML, or its root outside the configured namespace; not a SOAP envelope of the version,
    /// or without a Body.
    pub fn read(c: &Compiled, root: Option<&str>, body: &[u8]) -> Result<Answer, String> {
        if !c.xml {
            return match serde_json::from_slice::<Value>(body) {
                Ok(v) if v.is_object() => Ok(Answer::Json(v)),
                Ok(_) => Err("the body is JSON but not an object".into()),
                Err(e) => Err(format!("the body is not JSON ({e})")),
            };
        }
        let doc = crate::xml_doc::parse(body).map_err(|e| format!("the body is not XML ({e})"))?;
        match c.soap {
            Some(v) => {
                crate::soap::body(&doc, v)?;
            }
            None => {
                // The answer's root is in the namespace of the configured root element.
                let ns = root
                    .and_then(|r| c.ns.resolve(r, false).ok())
                    .and_then(|(ns, _)| ns);
                if doc.ns != ns {
                    return Err(format!(
                        "the root element <{}> is not in namespace {}",
                        doc.display_name(),
                        ns.as_deref().unwrap_or("(none)")
                    ));
                }
            }
        }
        Ok(Answer::Xml(doc))
    }

    /// The document to look paths up in.
    pub fn doc(&self) -> Doc<'_> {
        match self {
            Answer::Json(v) => Doc::Json(v),
            Answer::Xml(e) => Doc::Xml(e),
        }
    }

    /// The first value of `p`.
    pub fn field(&self, p: &Path) -> Option<String> {
        self.doc().first(p)
    }

    /// The SOAP fault in the answer's Body, if the answer is a SOAP envelope holding one.
    pub fn fault(&self, c: &Compiled) -> Option<crate::soap::Fault> {
        match (self, c.soap) {
            (Answer::Xml(doc), Some(v)) => crate::soap::body(doc, v)
                .ok()
                .and_then(|b| crate::soap::fault(b, v)),
            _ => None,
        }
    }
}

/// One value read with its transforms: an agency date in the bus's form, an agency code in the
/// bus's. Errors name the path and the value.
fn convert(f: &ReadField, raw: String) -> Result<Value, String> {
    let mut v = raw;
    if let Some(d) = &f.date {
        v = d
            .to_bus(&v)
            .map_err(|e| format!("{}: {e}", f.path.text()))?;
    }
    if let Some(c) = &f.codes {
        v = c
            .lookup(&v)
            .map_err(|e| format!("{}: {e}", f.path.text()))?;
    }
    Ok(json!(v))
}

/// A result field read from `doc`: a value, a list of values (`list`), or a list of objects
/// (`each` with `fields`); `None` when the path reaches nothing.
///
/// Errors: a value a transform cannot take (naming the path and the value).
pub(super) fn read_field(doc: &Doc<'_>, f: &ReadField) -> Result<Option<Value>, String> {
    if let Some(fields) = &f.fields {
        let items = doc.items(&f.path);
        if items.is_empty() {
            return Ok(None);
        }
        let mut out = Vec::new();
        for item in &items {
            let mut obj = Map::new();
            for (k, inner) in fields {
                if let Some(v) = read_field(item, inner)? {
                    obj.insert(k.clone(), v);
                }
            }
            out.push(Value::Object(obj));
        }
        return Ok(Some(Value::Array(out)));
    }
    if f.list {
        let all = doc.all(&f.path);
        if all.is_empty() {
            return Ok(None);
        }
        return all
            .into_iter()
            .map(|v| convert(f, v))
            .collect::<Result<Vec<_>, _>>()
            .map(|v| Some(Value::Array(v)));
    }
    doc.first(&f.path).map(|v| convert(f, v)).transpose()
}
