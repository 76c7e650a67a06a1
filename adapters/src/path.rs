//! Paths into an agency's answers: XML paths over a [`crate::xml_doc`] tree (elements and
//! attributes in namespaces bound by prefixes of the configuration), and JSON pointers
//! (RFC 6901) over JSON, each giving one value or, for repeated elements and arrays, a list.
//!
//! **XML path syntax.** Steps separated by `/`, from the document's root element (its
//! children first; a leading `/` is ignored): `soap:Body/tns:KetQua/tns:SoBienNhan`. A step
//! is `prefix:Name` (the prefix bound in the configuration's `namespaces`) or `Name` (the
//! configuration's default namespace, or no namespace when it has none), optionally with a
//! 1-based position among its same-named siblings, `tns:GiayTo[2]`. The last step may be an
//! attribute, `@name` (no namespace, as unprefixed attributes are) or `@prefix:name`. `.` is
//! the element the path starts from (an item of a list).

use std::collections::BTreeMap;

use serde_json::Value;

use crate::xml_doc::Element;

/// Prefix bindings of a configuration: prefix → namespace URI, and the namespace of
/// unprefixed element names (none: no namespace).
#[derive(Debug, Clone, Default)]
pub struct Namespaces {
    /// `prefix` → URI.
    pub prefixes: BTreeMap<String, String>,
    /// The namespace of unprefixed element names.
    pub default: Option<String>,
}

impl Namespaces {
    /// Resolve `name` (`prefix:local` or `local`) as an element name (`attribute`: as an
    /// attribute name, whose unprefixed form has no namespace).
    ///
    /// Errors: an unbound prefix, or a name that is not an XML name.
    pub fn resolve(&self, name: &str, attribute: bool) -> Result<(Option<String>, String), String> {
        let (prefix, local) = match name.split_once(':') {
            Some((p, l)) => (Some(p), l),
            None => (None, name),
        };
        if !is_xml_name(local) || prefix.is_some_and(|p| !is_xml_name(p)) {
            return Err(format!("{name:?} is not an XML name"));
        }
        match prefix {
            Some(p) => match self.prefixes.get(p) {
                Some(uri) => Ok((Some(uri.clone()), local.to_string())),
                None => Err(format!(
                    "the prefix {p:?} of {name:?} is not bound in namespaces (bound: {})",
                    if self.prefixes.is_empty() {
                        "none".to_string()
                    } else {
                        self.prefixes.keys().cloned().collect::<Vec<_>>().join(", ")
                    }
                )),
            },
            None if attribute => Ok((None, local.to_string())),
            None => Ok((self.default.clone(), local.to_string())),
        }
    }
}

/// Whether `s` is an XML name without a colon (letters, digits, `_`, `-`, `.`, not starting
/// with a digit, `-` or `.`).
pub fn is_xml_name(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_alphabetic() || c == '_')
        && chars.all(|c| c.is_alphanumeric() || matches!(c, '_' | '-' | '.'))
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Step {
    ns: Option<String>,
    name: String,
    /// 1-based position among the same-named children of each parent.
    position: Option<usize>,
}

/// A compiled XML path ([module syntax](self)).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct XmlPath {
    /// As written, for reasons.
    pub text: String,
    steps: Vec<Step>,
    attr: Option<(Option<String>, String)>,
}

impl XmlPath {
    /// Compile `text` with the configuration's prefixes.
    ///
    /// Errors name the path and the step: an unbound prefix, an empty step, a bad position,
    /// an attribute step that is not last.
    pub fn parse(text: &str, ns: &Namespaces) -> Result<XmlPath, String> {
        let trimmed = text.trim().trim_start_matches('/');
        let mut steps = Vec::new();
        let mut attr = None;
        let parts: Vec<&str> = if trimmed.is_empty() || trimmed == "." {
            Vec::new()
        } else {
            trimmed.split('/').collect()
        };
        for (i, part) in parts.iter().enumerate() {
            let bad = |why: String| format!("path {text:?}: step {part:?}: {why}");
            if *part == "." && i == 0 {
                continue;
            }
            if let Some(a) = part.strip_prefix('@') {
                if i + 1 != parts.len() {
                    return Err(bad("an attribute must be the last step".into()));
                }
                attr = Some(ns.resolve(a, true).map_err(bad)?);
                continue;
            }
            let (name, position) = match part.split_once('[') {
                Some((n, rest)) => {
                    let p = rest
                        .strip_suffix(']')
                        .and_then(|p| p.parse::<usize>().ok())
                        .filter(|p| *p >= 1)
                        .ok_or_else(|| bad("a position is [1], [2], …".into()))?;
                    (n, Some(p))
                }
                None => (*part, None),
            };
            let (ns, name) = ns.resolve(name, false).map_err(bad)?;
            steps.push(Step { ns, name, position });
        }
        Ok(XmlPath {
            text: text.to_string(),
            steps,
            attr,
        })
    }

    /// The elements the element steps reach from `from` (attribute step ignored), in document
    /// order.
    pub fn elements<'a>(&self, from: &'a Element) -> Vec<&'a Element> {
        let mut at = vec![from];
        for s in &self.steps {
            let mut next = Vec::new();
            for e in at {
                let matching = e.children.iter().filter(|c| c.is(s.ns.as_deref(), &s.name));
                match s.position {
                    Some(p) => next.extend(matching.skip(p - 1).take(1)),
                    None => next.extend(matching),
                }
            }
            at = next;
        }
        at
    }

    /// Every value the path reaches from `from`: element texts, or the attribute's values.
    pub fn values(&self, from: &Element) -> Vec<String> {
        let els = self.elements(from);
        match &self.attr {
            None => els.into_iter().map(|e| e.text.clone()).collect(),
            Some((ns, name)) => els
                .into_iter()
                .filter_map(|e| e.attr(ns.as_deref(), name).map(str::to_string))
                .collect(),
        }
    }

    /// The first value the path reaches from `from`.
    pub fn first(&self, from: &Element) -> Option<String> {
        self.values(from).into_iter().next()
    }
}

/// A path of the configured format: a JSON pointer, or an XML path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Path {
    /// A JSON pointer (RFC 6901), `/a/0/b`.
    Json(String),
    /// An XML path.
    Xml(XmlPath),
}

impl Path {
    /// Compile `text` for the format (`xml`: with `ns`).
    ///
    /// Errors: a JSON pointer not starting with `/` (other than the empty whole-document
    /// pointer), or a bad XML path.
    pub fn parse(text: &str, xml: bool, ns: &Namespaces) -> Result<Path, String> {
        if xml {
            return XmlPath::parse(text, ns).map(Path::Xml);
        }
        if !text.is_empty() && !text.starts_with('/') {
            return Err(format!("{text:?} is not a JSON pointer (/…)"));
        }
        Ok(Path::Json(text.to_string()))
    }

    /// The path as written.
    pub fn text(&self) -> &str {
        match self {
            Path::Json(p) => p,
            Path::Xml(x) => &x.text,
        }
    }
}

/// A document read in the configured format, on which [`Path`]s are looked up.
#[derive(Debug, Clone)]
pub enum Doc<'a> {
    /// JSON.
    Json(&'a Value),
    /// An XML element (the root, or an item of a list).
    Xml(&'a Element),
}

/// A scalar's text: a string as is, anything else as JSON.
pub fn json_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

impl<'a> Doc<'a> {
    /// The path's first value as text (`None`: absent, or JSON `null`).
    pub fn first(&self, p: &Path) -> Option<String> {
        match (self, p) {
            (Doc::Json(v), Path::Json(ptr)) => {
                v.pointer(ptr).filter(|x| !x.is_null()).map(json_text)
            }
            (Doc::Xml(e), Path::Xml(x)) => x.first(e),
            _ => None,
        }
    }

    /// Every value the path reaches, as text: the items of a JSON array (a scalar is a list
    /// of one), or every element or attribute an XML path reaches.
    pub fn all(&self, p: &Path) -> Vec<String> {
        match (self, p) {
            (Doc::Json(v), Path::Json(ptr)) => match v.pointer(ptr) {
                Some(Value::Array(items)) => items
                    .iter()
                    .filter(|x| !x.is_null())
                    .map(json_text)
                    .collect(),
                Some(Value::Null) | None => Vec::new(),
                Some(x) => vec![json_text(x)],
            },
            (Doc::Xml(e), Path::Xml(x)) => x.values(e),
            _ => Vec::new(),
        }
    }

    /// The items a path reaches, as documents to look paths up in relative to each: the
    /// objects of a JSON array (a single object is a list of one), or the elements an XML path
    /// reaches.
    pub fn items(&self, p: &Path) -> Vec<Doc<'a>> {
        match (self, p) {
            (Doc::Json(v), Path::Json(ptr)) => match v.pointer(ptr) {
                Some(Value::Array(items)) => items.iter().map(Doc::Json).collect(),
                Some(Value::Null) | None => Vec::new(),
                Some(x) => vec![Doc::Json(x)],
            },
            (Doc::Xml(e), Path::Xml(x)) => x.elements(e).into_iter().map(Doc::Xml).collect(),
            _ => Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ns() -> Namespaces {
        Namespaces {
            prefixes: [
                ("soap".to_string(), "urn:env".to_string()),
                ("t".to_string(), "urn:t".to_string()),
            ]
            .into_iter()
            .collect(),
            default: None,
        }
    }

    const DOC: &[u8] = br#"<s:Envelope xmlns:s="urn:env"><s:Body><x:Kq xmlns:x="urn:t" so="BN-7">
        <x:GiayTo><x:So>1</x:So></x:GiayTo><x:GiayTo><x:So>2</x:So></x:GiayTo><Plain>p</Plain>
        </x:Kq></s:Body></s:Envelope>"#;

    #[test]
    fn xml_paths_follow_namespaces_positions_and_attributes() {
        let root = crate::xml_doc::parse(DOC).expect("doc");
        let p = |t: &str| XmlPath::parse(t, &ns()).expect(t);
        assert_eq!(
            p("soap:Body/t:Kq/@so").first(&root).as_deref(),
            Some("BN-7")
        );
        assert_eq!(p("/soap:Body/t:Kq/t:GiayTo/t:So").values(&root), ["1", "2"]);
        assert_eq!(p("soap:Body/t:Kq/t:GiayTo[2]/t:So").values(&root), ["2"]);
        assert_eq!(p("soap:Body/t:Kq/Plain").first(&root).as_deref(), Some("p"));
        // The same local name in another namespace is another element.
        assert_eq!(p("soap:Body/Kq/@so").first(&root), None);
        assert_eq!(p("soap:Body/t:Kq/t:GiayTo[3]/t:So").first(&root), None);
        let items = p("soap:Body/t:Kq/t:GiayTo").elements(&root);
        assert_eq!(p("t:So").first(items[1]).as_deref(), Some("2"));
        assert_eq!(p(".").first(items[0]).as_deref(), Some(""));
    }

    #[test]
    fn bad_paths_name_the_step() {
        let e = XmlPath::parse("soap:Body/q:Kq", &ns()).expect_err("unbound");
        assert!(e.contains("\"q:Kq\"") && e.contains("soap, t"), "{e}");
        let e = XmlPath::parse("soap:Body/@a/t:X", &ns()).expect_err("attr not last");
        assert!(e.contains("last"), "{e}");
        let e = XmlPath::parse("t:GiayTo[0]", &ns()).expect_err("position");
        assert!(e.contains("[1]"), "{e}");
        assert!(XmlPath::parse("a b", &ns()).is_err());
        assert!(
            Path::parse("MaHoSo", false, &ns()).is_err(),
            "JSON needs a pointer"
        );
    }

    #[test]
    fn json_pointers_give_values_lists_and_items() {
        let v = json!({"a": {"b": [{"c": "x"}, {"c": 2}], "n": null, "s": "one"}});
        let d = Doc::Json(&v);
        let p = |t: &str| Path::parse(t, false, &Namespaces::default()).expect(t);
        assert_eq!(d.first(&p("/a/b/1/c")).as_deref(), Some("2"));
        assert_eq!(d.first(&p("/a/n")), None);
        assert_eq!(d.all(&p("/a/s")), ["one"]);
        let items = d.items(&p("/a/b"));
        assert_eq!(items.len(), 2);
        assert_eq!(items[0].first(&p("/c")).as_deref(), Some("x"));
        assert!(d.items(&p("/a/missing")).is_empty());
    }
}
