//! The agency's document for one envelope, from the compiled `request` lines: each value taken
//! from the envelope (a pointer, a variable, a literal, or one per item of an array) and
//! transformed, placed at its dotted name, then written as JSON, or as XML with the element
//! names in the namespaces the configuration gives them (inside a SOAP envelope with `soap`).

use std::io::Cursor;

use quick_xml::Writer;
use quick_xml::events::{BytesDecl, BytesEnd, BytesStart, BytesText, Event};
use serde_json::{Map, Value, json};

use super::config::{Compiled, From, Leaf, Req, Transforms};
use crate::path::json_text;

/// A value of the document, before it is written.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Item {
    /// A value: a JSON value, or an XML element's text (an attribute's value for `@name`).
    Scalar(Value),
    /// A JSON object, or an XML element with children (and attributes, `@name`).
    Group(Vec<(String, Item)>),
    /// A JSON array, or the same element repeated.
    List(Vec<Item>),
}

impl Item {
    /// As JSON.
    pub fn to_json(&self) -> Value {
        match self {
            Item::Scalar(v) => v.clone(),
            Item::List(items) => Value::Array(items.iter().map(Item::to_json).collect()),
            Item::Group(children) => {
                let mut m = Map::new();
                for (k, v) in children {
                    m.insert(k.clone(), v.to_json());
                }
                Value::Object(m)
            }
        }
    }
}

/// What variables resolve to for one envelope.
pub(super) struct Vars<'a> {
    pub callback_url: &'a str,
    /// The envelope as JSON.
    pub env: &'a Value,
}

fn pointer<'a>(v: &'a Value, p: &str) -> Option<&'a Value> {
    v.pointer(p).filter(|x| !x.is_null())
}

fn resolve(from: &From, vars: &Vars<'_>, at: &Value) -> Option<Value> {
    match from {
        From::CallbackUrl => Some(json!(vars.callback_url)),
        From::Now => vars
            .env
            .get("sent_at")
            .and_then(Value::as_str)
            .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
            .map(|t| {
                json!(lienthong_core::clock::to_dvcqg(
                    t.with_timezone(&chrono::Utc)
                ))
            }),
        From::MessageId => vars.env.get("message_id").cloned(),
        From::Pointer(p) => pointer(at, p).cloned(),
        From::Value(v) => Some(v.clone()),
    }
}

fn describe(from: &From) -> String {
    match from {
        From::CallbackUrl => "$callback_url".into(),
        From::Now => "$now (the envelope's sent_at)".into(),
        From::MessageId => "$message_id".into(),
        From::Pointer(p) if p.is_empty() => "the item".into(),
        From::Pointer(p) => p.clone(),
        From::Value(_) => "its value".into(),
    }
}

/// `val` through the transforms, for the field `name`. Errors name the field and the value.
fn transform(name: &str, val: Value, t: &Transforms) -> Result<Value, String> {
    let mut val = val;
    if t.date8 {
        let s = json_text(&val);
        val = json!(
            crate::mapping::date8(&s)
                .ok_or_else(|| format!("{name}: {s} is not a YYYY-MM-DD date"))?
        );
    }
    if t.string {
        val = json!(json_text(&val));
    }
    if let Some(p) = &t.date {
        val = json!(
            p.to_agency(&json_text(&val))
                .map_err(|e| format!("{name}: {e}"))?
        );
    }
    if let Some(c) = &t.codes {
        val = json!(
            c.lookup(&json_text(&val))
                .map_err(|e| format!("{name}: {e}"))?
        );
    }
    Ok(val)
}

fn leaf(name: &str, l: &Leaf, vars: &Vars<'_>, at: &Value) -> Result<Option<Value>, String> {
    match resolve(&l.from, vars, at) {
        Some(v) => transform(name, v, &l.t).map(Some),
        None if l.required => Err(format!(
            "{name}: no value in the envelope at {}",
            describe(&l.from)
        )),
        None => Ok(None),
    }
}

/// Place `item` at the dotted `parts` under `into`. XML (`merge_any` false) reopens an
/// element only while it is the last one written, so fields given apart make two elements,
/// in the order given; JSON merges into the object of that name wherever it is.
pub(super) fn insert(
    into: &mut Vec<(String, Item)>,
    parts: &[&str],
    item: Item,
    merge_any: bool,
) -> Result<(), String> {
    let Some((head, rest)) = parts.split_first() else {
        return Ok(());
    };
    if rest.is_empty() {
        if merge_any && into.iter().any(|(n, _)| n == head) {
            return Err(format!("{head} is given twice"));
        }
        into.push((head.to_string(), item));
        return Ok(());
    }
    let found = if merge_any {
        match into.iter().position(|(n, _)| n == head) {
            Some(i) if !matches!(into[i].1, Item::Group(_)) => {
                return Err(format!("{head} is both a value and a group of fields"));
            }
            found => found,
        }
    } else {
        into.len()
            .checked_sub(1)
            .filter(|&i| into[i].0 == *head && matches!(into[i].1, Item::Group(_)))
    };
    let i = match found {
        Some(i) => i,
        None => {
            into.push((head.to_string(), Item::Group(Vec::new())));
            into.len() - 1
        }
    };
    match &mut into[i].1 {
        Item::Group(children) => insert(children, rest, item, merge_any),
        _ => Ok(()),
    }
}

/// The document's values for one envelope, in configuration order: (dotted name, item).
///
/// Errors: a required value missing (naming the field and where it was looked for), a
/// transform that cannot apply (naming the field and the value).
pub(super) fn items(c: &Compiled, vars: &Vars<'_>) -> Result<Vec<(String, Item)>, String> {
    let mut out = Vec::new();
    for (name, r) in &c.request {
        match r {
            Req::Leaf(l) => {
                if let Some(v) = leaf(name, l, vars, vars.env)? {
                    out.push((name.clone(), Item::Scalar(v)));
                }
            }
            Req::List {
                each,
                fields,
                item,
                required,
            } => {
                let entries = match pointer(vars.env, each) {
                    Some(Value::Array(a)) => a.as_slice(),
                    Some(_) => {
                        return Err(format!("{name}: {each} in the envelope is not an array"));
                    }
                    None if *required => {
                        return Err(format!("{name}: no array in the envelope at {each}"));
                    }
                    None => continue,
                };
                let mut list = Vec::new();
                for (i, entry) in entries.iter().enumerate() {
                    let at = format!("{name}[{}]", i + 1);
                    match fields {
                        None => list.push(Item::Scalar(transform(&at, entry.clone(), item)?)),
                        Some(fields) => {
                            let mut group = Vec::new();
                            for (k, l) in fields {
                                if let Some(v) = leaf(&format!("{at}.{k}"), l, vars, entry)? {
                                    let parts: Vec<&str> = k.split('.').collect();
                                    insert(&mut group, &parts, Item::Scalar(v), !c.xml)
                                        .map_err(|e| format!("{at}: {e}"))?;
                                }
                            }
                            list.push(Item::Group(group));
                        }
                    }
                }
                out.push((name.clone(), Item::List(list)));
            }
        }
    }
    Ok(out)
}

/// The items placed in their tree (dotted names nested).
pub(super) fn tree(
    c: &Compiled,
    items: Vec<(String, Item)>,
) -> Result<Vec<(String, Item)>, String> {
    let mut root = Vec::new();
    for (name, item) in items {
        let parts: Vec<&str> = name.split('.').collect();
        insert(&mut root, &parts, item, !c.xml).map_err(|e| format!("{name}: {e}"))?;
    }
    Ok(root)
}

type W = Writer<Cursor<Vec<u8>>>;

fn attributes(children: &[(String, Item)]) -> impl Iterator<Item = (&str, String)> {
    children
        .iter()
        .filter_map(|(n, i)| match (n.strip_prefix('@'), i) {
            (Some(a), Item::Scalar(v)) => Some((a, json_text(v))),
            _ => None,
        })
}

fn write_children(w: &mut W, children: &[(String, Item)]) {
    for (name, item) in children.iter().filter(|(n, _)| !n.starts_with('@')) {
        write_element(w, name, item);
    }
}

fn write_element(w: &mut W, name: &str, item: &Item) {
    match item {
        Item::Scalar(v) => {
            let _ = w
                .create_element(name)
                .write_text_content(BytesText::new(&json_text(v)));
        }
        Item::List(items) => {
            for i in items {
                write_element(w, name, i);
            }
        }
        Item::Group(children) => {
            let mut start = BytesStart::new(name);
            for (a, v) in attributes(children) {
                start.push_attribute((a, v.as_str()));
            }
            if children.iter().all(|(n, _)| n.starts_with('@')) {
                let _ = w.write_event(Event::Empty(start));
                return;
            }
            let _ = w.write_event(Event::Start(start));
            write_children(w, children);
            let _ = w.write_event(Event::End(BytesEnd::new(name)));
        }
    }
}

/// The element `root` holding `children`, with `xmlns` declarations (`(prefix, URI)`; an
/// empty prefix is the default namespace) on it.
fn write_root(w: &mut W, root: &str, declare: &[(String, String)], children: &[(String, Item)]) {
    let mut start = BytesStart::new(root);
    for (p, uri) in declare {
        let attr = if p.is_empty() {
            "xmlns".to_string()
        } else {
            format!("xmlns:{p}")
        };
        start.push_attribute((attr.as_str(), uri.as_str()));
    }
    for (a, v) in attributes(children) {
        start.push_attribute((a, v.as_str()));
    }
    let _ = w.write_event(Event::Start(start));
    write_children(w, children);
    let _ = w.write_event(Event::End(BytesEnd::new(root)));
}

/// The document: JSON; or XML with the root (or, with `soap`, the operation inside the
/// envelope's Body) named `root`, declaring the default namespace and (for plain XML) the
/// configured prefixes; with `soap` the prefixes are declared on the Envelope.
pub(super) fn write(c: &Compiled, root: &str, tree: &[(String, Item)]) -> Result<Vec<u8>, String> {
    if !c.xml {
        return serde_json::to_vec(&Item::Group(tree.to_vec()).to_json())
            .map_err(|e| e.to_string());
    }
    let default: Vec<(String, String)> =
        c.ns.default
            .iter()
            .map(|d| (String::new(), d.clone()))
            .collect();
    let prefixes: Vec<(String, String)> =
        c.ns.prefixes
            .iter()
            .filter(|(p, _)| c.soap.is_none() || p.as_str() != crate::soap::PREFIX)
            .map(|(p, u)| (p.clone(), u.clone()))
            .collect();
    Ok(match c.soap {
        Some(v) => crate::soap::envelope(v, &prefixes, |w| write_root(w, root, &default, tree)),
        None => {
            let mut w = Writer::new_with_indent(Cursor::new(Vec::new()), b' ', 2);
            let _ = w.write_event(Event::Decl(BytesDecl::new("1.0", Some("UTF-8"), None)));
            let declare: Vec<(String, String)> = default.into_iter().chain(prefixes).collect();
            write_root(&mut w, root, &declare, tree);
            w.into_inner().into_inner()
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xml_reopens_only_the_last_element_and_json_merges() {
        let mut xml = Vec::new();
        for n in ["A.B", "C", "A.D"] {
            let parts: Vec<&str> = n.split('.').collect();
            insert(&mut xml, &parts, Item::Scalar(json!(n)), false).expect("insert");
        }
        assert_eq!(
            xml.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>(),
            ["A", "C", "A"]
        );
        let mut js = Vec::new();
        for n in ["A.B", "C", "A.D"] {
            let parts: Vec<&str> = n.split('.').collect();
            insert(&mut js, &parts, Item::Scalar(json!(n)), true).expect("insert");
        }
        assert_eq!(
            Item::Group(js.clone()).to_json(),
            json!({"A": {"B": "A.B", "D": "A.D"}, "C": "C"})
        );
        let e = insert(&mut js, &["C", "X"], Item::Scalar(json!(1)), true).expect_err("clash");
        assert!(e.contains("both"), "{e}");
    }
}
