//! The settings of a mapped agency (`[units.reach.settings]`) as written in the registry, and
//! their compiled form: every path parsed, every prefix resolved, every date pattern and code
//! table checked once, when the unit is built, so that a mistake is a start-up error naming
//! the setting rather than a dead letter later.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::{Map, Value};

use crate::path::{Namespaces, Path, is_xml_name};
use crate::soap::{self, FaultRules, Verdict, Version};
use crate::transform::{CodeTable, DatePattern};

/// A value of `request` given as a table: `{ from = …, date = "dd/MM/yyyy", codes = …, required = false }`, or
/// a list: `{ each = "/attachments", fields = { … } }`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FieldSpec {
    /// JSON pointer into the envelope (in `fields`: into the list's item; `""` is the item), or
    /// a variable.
    pub from: Option<String>,
    /// A literal value instead.
    pub value: Option<Value>,
    /// `date8` (YYYY-MM-DD → yyyyMMdd), `string` (numbers as text), or none.
    pub format: Option<String>,
    /// The agency's date or time pattern (`dd/MM/yyyy`, `yyyyMMdd`, `dd/MM/yyyy HH:mm:ss`):
    /// the bus's `YYYY-MM-DD` or RFC 3339 value is written in it.
    pub date: Option<String>,
    /// A code table, bus code → agency code: inline (`{ nam = "1", nu = "2" }`) or the name of
    /// a table of `code_tables`.
    pub codes: Option<Value>,
    /// The agency code for a bus code the table lacks (without it, such a value is an error
    /// naming it).
    pub default: Option<Value>,
    /// Whether a missing source is an error (default true; false leaves the field out).
    #[serde(default = "yes")]
    pub required: bool,
    /// A JSON pointer to an array of the envelope: one element (XML) or array item (JSON) per
    /// entry.
    pub each: Option<String>,
    /// With `each`: each item's fields, name → source relative to the item. Without it, each
    /// item is a value (with `date`, `codes`, `format` applied).
    pub fields: Option<Map<String, Value>>,
}

fn yes() -> bool {
    true
}

/// The success rule of the submit answer (paths: JSON pointers, or XML paths from the
/// answer's root element; a bare name is a top-level field).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Success {
    /// HTTP statuses that may be success (default: any 2xx).
    #[serde(default)]
    pub statuses: Vec<u16>,
    /// Field of the answer that must equal `equals`.
    pub field: Option<String>,
    /// The value of `field` that means success (e.g. `"00"`).
    pub equals: Option<String>,
    /// Field holding the agency's receipt number.
    pub receipt: Option<String>,
    /// Field holding the agency's error text (for the reason of a failure).
    pub message: Option<String>,
}

/// How the agency's callback maps to bus terms (paths as in [`Success`]).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Callback {
    /// The dossier code.
    pub ma_ho_so: String,
    /// The bus message id the agency answers (the `Idempotency-Key` it was sent).
    pub reference: String,
    /// The status (a number 1–10, or a value of `status_map`).
    pub status: String,
    /// Agency value → `TrangThaiHoSo`.
    #[serde(default)]
    pub status_map: Map<String, Value>,
    /// The reason or what was done.
    pub reason: Option<String>,
    /// The officer.
    pub officer: Option<String>,
    /// The receipt number.
    pub receipt: Option<String>,
    /// Bus result field → agency field: a path, or `{ path, date, codes, default, list }`
    /// (`list = true`: every value the path reaches, as an array), or `{ each, fields }` (an
    /// array of objects, one per element or item `each` reaches, `fields` relative to it).
    #[serde(default)]
    pub result: Map<String, Value>,
}

/// How SOAP faults are read (`[units.reach.settings.faults]`; [`crate::soap`]).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FaultsConfig {
    /// XML path, from the fault's `detail` (1.1) or `Detail` (1.2), to the agency's own code.
    pub code: Option<String>,
    /// XML path, from the same element, to the agency's error text.
    pub message: Option<String>,
    /// Code → `refused`, `transient` or `unknown`, overriding the fault's class: the agency's
    /// code, a subcode, or the fault code (`Server.Busy`, `Client`).
    #[serde(default)]
    pub codes: BTreeMap<String, Verdict>,
}

/// A SOAP status lookup (`[units.reach.settings.lookup]`): one operation taking the dossier
/// code.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LookupConfig {
    /// POST path under the endpoint (default: `submit_path`).
    pub path: Option<String>,
    /// The operation's SOAP action.
    pub soap_action: Option<String>,
    /// The operation element (`ht:TraCuuHoSo`).
    pub operation: String,
    /// The element under the operation that takes the dossier code (`ht:MaHoSo`).
    pub key: String,
    /// XML path of the status in the answer (a number 1–10 or a value of
    /// `callback.status_map`).
    pub status: String,
    /// XML path of the receipt in the answer.
    pub receipt: Option<String>,
    /// Fault codes (as in `faults.codes`) that mean "no such dossier".
    #[serde(default)]
    pub not_found: Vec<String>,
}

/// The whole configuration of a mapped agency (`[units.reach.settings]`); unknown keys are
/// refused.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MappedConfig {
    /// `json` or `xml`.
    pub format: String,
    /// XML root element of the submit; with `soap`, the operation element inside the Body.
    pub xml_root: Option<String>,
    /// The namespace of unprefixed XML element names (none: no namespace).
    pub xml_namespace: Option<String>,
    /// Prefix → namespace URI, for element names (`tns:HoSo`) and paths.
    #[serde(default)]
    pub namespaces: BTreeMap<String, String>,
    /// `"1.1"` or `"1.2"`: the document goes in a SOAP envelope ([`crate::soap`]).
    pub soap: Option<String>,
    /// The submit's SOAP action (`SOAPAction` in 1.1, the `action` parameter in 1.2).
    pub soap_action: Option<String>,
    /// How SOAP faults are read.
    pub faults: Option<FaultsConfig>,
    /// Named code tables, bus code → agency code, for `codes = "<name>"` (read back reversed
    /// in the callback).
    #[serde(default)]
    pub code_tables: Map<String, Value>,
    /// Path of the submit under the endpoint (POST).
    #[serde(default)]
    pub submit_path: String,
    /// Path of the status lookup, with `{ma_ho_so}` (GET; optional; not with `soap`).
    pub status_path: Option<String>,
    /// The SOAP status lookup (only with `soap`).
    pub lookup: Option<LookupConfig>,
    /// Agency field → source. Nested JSON objects or XML elements with dots: `NguoiNop.HoTen`;
    /// an XML attribute as the last part: `HoSo.@phienBan`.
    pub request: Map<String, Value>,
    /// The success rule.
    #[serde(default)]
    pub success: Success,
    /// The callback mapping.
    pub callback: Callback,
    /// Accepted and ignored here: connection options (read by [`crate::http`]).
    #[serde(default)]
    pub connection: Option<Value>,
    /// `"sender"`: callbacks go to the sending unit ([`crate::adapter::ResultsTo`]).
    #[serde(default)]
    pub results_to: Option<String>,
}

/// Where a request value comes from.
#[derive(Debug, Clone)]
pub(super) enum From {
    /// `$callback_url`.
    CallbackUrl,
    /// `$now`.
    Now,
    /// `$message_id`.
    MessageId,
    /// A JSON pointer (into the envelope, or into a list's item).
    Pointer(String),
    /// A literal.
    Value(Value),
}

/// The transforms of one value, in order: `format`, then `date`, then `codes`.
#[derive(Debug, Clone, Default)]
pub(super) struct Transforms {
    pub date8: bool,
    pub string: bool,
    pub date: Option<DatePattern>,
    pub codes: Option<CodeTable>,
}

/// One value of the request.
#[derive(Debug, Clone)]
pub(super) struct Leaf {
    pub from: From,
    pub t: Transforms,
    pub required: bool,
}

/// One line of `request`, compiled.
#[derive(Debug, Clone)]
pub(super) enum Req {
    /// A value.
    Leaf(Leaf),
    /// One element or item per entry of the array at `each`: `fields` (name → value) per item,
    /// or the item itself through `item`.
    List {
        each: String,
        fields: Option<Vec<(String, Leaf)>>,
        item: Transforms,
        required: bool,
    },
}

/// A value read from an answer or callback, compiled.
#[derive(Debug, Clone)]
pub(super) struct ReadField {
    pub path: Path,
    pub date: Option<DatePattern>,
    pub codes: Option<CodeTable>,
    pub list: bool,
    /// `{ each, fields }`: an array of objects.
    pub fields: Option<Vec<(String, ReadField)>>,
}

/// Everything compiled from [`MappedConfig`].
#[derive(Debug, Clone)]
pub(super) struct Compiled {
    pub xml: bool,
    pub soap: Option<Version>,
    pub ns: Namespaces,
    pub request: Vec<(String, Req)>,
    pub success_field: Option<Path>,
    pub success_receipt: Option<Path>,
    pub success_message: Option<Path>,
    pub cb_ma_ho_so: Path,
    pub cb_reference: Path,
    pub cb_status: Path,
    pub cb_reason: Option<Path>,
    pub cb_officer: Option<Path>,
    pub cb_receipt: Option<Path>,
    pub cb_result: Vec<(String, ReadField)>,
    pub faults: FaultRules,
    pub lookup_status: Option<Path>,
    pub lookup_receipt: Option<Path>,
}

const VARIABLES: [&str; 3] = ["$callback_url", "$now", "$message_id"];

impl MappedConfig {
    /// Check and compile the settings. Errors name the setting.
    pub(super) fn compile(&self) -> Result<Compiled, String> {
        let xml = match self.format.as_str() {
            "json" => false,
            "xml" => true,
            other => {
                return Err(format!("mapped: format {other:?} is neither json nor xml"));
            }
        };
        let soap = self
            .soap
            .as_deref()
            .map(Version::parse)
            .transpose()
            .map_err(|e| format!("mapped: {e}"))?;
        if soap.is_some() && !xml {
            return Err("mapped: soap needs format = \"xml\"".into());
        }
        let mut prefixes = BTreeMap::new();
        for (p, uri) in &self.namespaces {
            if !is_xml_name(p) || p.eq_ignore_ascii_case("xml") || p.eq_ignore_ascii_case("xmlns") {
                return Err(format!("mapped: namespaces.{p}: not a usable prefix"));
            }
            if uri.is_empty() {
                return Err(format!("mapped: namespaces.{p}: the URI is empty"));
            }
            prefixes.insert(p.clone(), uri.clone());
        }
        if let Some(v) = soap {
            match prefixes.get(soap::PREFIX) {
                Some(uri) if uri != v.ns() => {
                    return Err(format!(
                        "mapped: namespaces.{}: the prefix is the {} envelope's ({}), not {uri}",
                        soap::PREFIX,
                        v.label(),
                        v.ns()
                    ));
                }
                _ => {
                    prefixes.insert(soap::PREFIX.to_string(), v.ns().to_string());
                }
            }
        }
        let ns = Namespaces {
            prefixes,
            default: self.xml_namespace.clone().filter(|n| !n.is_empty()),
        };
        if xml {
            let Some(root) = &self.xml_root else {
                return Err(if soap.is_some() {
                    "mapped: soap needs xml_root, the operation element (tns:Operation)".into()
                } else {
                    "mapped: format xml needs xml_root and xml_namespace".into()
                });
            };
            let (root_ns, _) = ns
                .resolve(root, false)
                .map_err(|e| format!("mapped: xml_root: {e}"))?;
            if soap.is_none() && root_ns.is_none() {
                return Err(
                    "mapped: format xml needs xml_root and xml_namespace (or a prefixed xml_root)"
                        .into(),
                );
            }
        }
        if soap.is_none() {
            for (what, set) in [
                ("soap_action", self.soap_action.is_some()),
                ("faults", self.faults.is_some()),
                ("lookup", self.lookup.is_some()),
            ] {
                if set {
                    return Err(format!("mapped: {what} needs soap = \"1.1\" or \"1.2\""));
                }
            }
        } else if self.status_path.is_some() {
            return Err("mapped: with soap, the status lookup is [lookup] (a SOAP operation), not status_path".into());
        }
        let lookup_path = self.lookup.as_ref().and_then(|l| l.path.as_deref());
        for (what, p) in [
            ("submit_path", Some(self.submit_path.as_str())),
            ("status_path", self.status_path.as_deref()),
            ("lookup.path", lookup_path),
        ] {
            if let Some(p) = p
                && !p.is_empty()
                && !p.starts_with('/')
            {
                return Err(format!("mapped: {what} {p:?} must start with '/'"));
            }
        }
        let tables = self.tables()?;
        let mut request = Vec::new();
        for (k, v) in &self.request {
            check_name(k, xml, &ns).map_err(|e| format!("mapped: request.{k}: {e}"))?;
            let r =
                compile_req(v, &tables, true).map_err(|e| format!("mapped: request.{k}: {e}"))?;
            request.push((k.clone(), r));
        }
        let path = |what: &str, p: &str| {
            let p = if !xml && !p.is_empty() && !p.starts_with('/') {
                format!("/{p}")
            } else {
                p.to_string()
            };
            Path::parse(&p, xml, &ns).map_err(|e| format!("mapped: {what}: {e}"))
        };
        let opt = |what: &str, p: &Option<String>| p.as_deref().map(|p| path(what, p)).transpose();
        let s = &self.success;
        let c = &self.callback;
        let mut cb_result = Vec::new();
        for (bus, v) in &c.result {
            let what = format!("callback.result.{bus}");
            cb_result.push((bus.clone(), compile_read(v, &tables, &path, &what)?));
        }
        let f = self.faults.clone().unwrap_or_default();
        let xml_path = |what: &str, p: &Option<String>| {
            p.as_deref()
                .map(|p| {
                    crate::path::XmlPath::parse(p, &ns).map_err(|e| format!("mapped: {what}: {e}"))
                })
                .transpose()
        };
        let faults = FaultRules {
            detail_code: xml_path("faults.code", &f.code)?,
            detail_message: xml_path("faults.message", &f.message)?,
            codes: f.codes.clone(),
        };
        if let Some(l) = &self.lookup {
            ns.resolve(&l.operation, false)
                .map_err(|e| format!("mapped: lookup.operation: {e}"))?;
            ns.resolve(&l.key, false)
                .map_err(|e| format!("mapped: lookup.key: {e}"))?;
        }
        Ok(Compiled {
            xml,
            soap,
            request,
            success_field: opt("success.field", &s.field)?,
            success_receipt: opt("success.receipt", &s.receipt)?,
            success_message: opt("success.message", &s.message)?,
            cb_ma_ho_so: path("callback.ma_ho_so", &c.ma_ho_so)?,
            cb_reference: path("callback.reference", &c.reference)?,
            cb_status: path("callback.status", &c.status)?,
            cb_reason: opt("callback.reason", &c.reason)?,
            cb_officer: opt("callback.officer", &c.officer)?,
            cb_receipt: opt("callback.receipt", &c.receipt)?,
            cb_result,
            faults,
            lookup_status: self
                .lookup
                .as_ref()
                .map(|l| path("lookup.status", &l.status))
                .transpose()?,
            lookup_receipt: self
                .lookup
                .as_ref()
                .map(|l| opt("lookup.receipt", &l.receipt))
                .transpose()?
                .flatten(),
            ns,
        })
    }

    fn tables(&self) -> Result<BTreeMap<String, CodeTable>, String> {
        let mut out = BTreeMap::new();
        for (name, v) in &self.code_tables {
            let entries = v
                .as_object()
                .ok_or_else(|| format!("mapped: code_tables.{name} is not a table"))?;
            out.insert(
                name.clone(),
                CodeTable::new(&format!("code_tables.{name}"), entries, None)
                    .map_err(|e| format!("mapped: {e}"))?,
            );
        }
        Ok(out)
    }
}

/// A name of `request`: dotted parts, each an XML name (optionally prefixed), the last one
/// possibly `@attribute`; for JSON, non-empty parts.
fn check_name(name: &str, xml: bool, ns: &Namespaces) -> Result<(), String> {
    let parts: Vec<&str> = name.split('.').collect();
    for (i, p) in parts.iter().enumerate() {
        if p.is_empty() {
            return Err("an empty part in the name".into());
        }
        if !xml {
            continue;
        }
        match p.strip_prefix('@') {
            Some(_) if i + 1 != parts.len() => {
                return Err(format!(
                    "{p}: an attribute is the last part (alone: the root's)"
                ));
            }
            Some(a) => ns.resolve(a, true).map(|_| ())?,
            None => ns.resolve(p, false).map(|_| ())?,
        }
    }
    if !xml && parts.iter().any(|p| p.starts_with('@')) {
        return Err("attributes (@…) exist only in XML".into());
    }
    Ok(())
}

fn table(
    v: &Value,
    default: &Option<Value>,
    tables: &BTreeMap<String, CodeTable>,
    reverse: bool,
) -> Result<CodeTable, String> {
    let default = match default {
        None => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(v @ (Value::Number(_) | Value::Bool(_))) => Some(v.to_string()),
        Some(_) => return Err("default is not a string or number".into()),
    };
    let t = match v {
        Value::String(name) => {
            let t = tables.get(name).ok_or_else(|| {
                format!(
                    "codes {name:?} is not a table of code_tables (it has {})",
                    if tables.is_empty() {
                        "none".to_string()
                    } else {
                        tables.keys().cloned().collect::<Vec<_>>().join(", ")
                    }
                )
            })?;
            if reverse { t.reversed()? } else { t.clone() }
        }
        Value::Object(entries) => CodeTable::new("its codes", entries, None)?,
        _ => return Err("codes is a table or the name of one of code_tables".into()),
    };
    Ok(t.with_default(default))
}

fn compile_leaf(
    spec: &FieldSpec,
    tables: &BTreeMap<String, CodeTable>,
    top: bool,
) -> Result<(Option<From>, Transforms), String> {
    let from = match (&spec.from, &spec.value) {
        (Some(_), Some(_)) => return Err("a field has `from` or `value`, not both".into()),
        (Some(f), None) => Some(source(f, top)?),
        (None, Some(v)) => Some(From::Value(v.clone())),
        (None, None) => None,
    };
    let mut t = Transforms::default();
    match spec.format.as_deref() {
        None => {}
        Some("date8") => t.date8 = true,
        Some("string") => t.string = true,
        Some(f) => return Err(format!("format {f:?} is neither \"date8\" nor \"string\"")),
    }
    if let Some(d) = &spec.date {
        if t.date8 {
            return Err("format date8 and date together: use date = \"yyyyMMdd\"".into());
        }
        t.date = Some(DatePattern::parse(d)?);
    }
    match (&spec.codes, &spec.default) {
        (Some(c), d) => t.codes = Some(table(c, d, tables, false)?),
        (None, Some(_)) => {
            return Err("default is the code for a value codes lacks: it needs codes".into());
        }
        (None, None) => {}
    }
    Ok((from, t))
}

/// A source: a variable, or a JSON pointer (in a list's `fields`, relative to the item, `""`
/// for the item itself).
fn source(f: &str, top: bool) -> Result<From, String> {
    Ok(match f {
        "$callback_url" => From::CallbackUrl,
        "$now" => From::Now,
        "$message_id" => From::MessageId,
        p if p.starts_with('/') || (!top && p.is_empty()) => From::Pointer(p.to_string()),
        p => {
            return Err(format!(
                "{p:?} is neither a JSON pointer (/…) nor {}",
                VARIABLES.join(", ")
            ));
        }
    })
}

fn compile_req(v: &Value, tables: &BTreeMap<String, CodeTable>, top: bool) -> Result<Req, String> {
    let spec: FieldSpec = match v {
        Value::String(p) => {
            return Ok(Req::Leaf(Leaf {
                from: source(p, top)?,
                t: Transforms::default(),
                required: true,
            }));
        }
        Value::Object(_) => serde_json::from_value(v.clone()).map_err(|e| e.to_string())?,
        _ => return Err("a source is a JSON pointer, a variable or a table { from = … }".into()),
    };
    let (from, t) = compile_leaf(&spec, tables, top)?;
    let Some(each) = &spec.each else {
        if spec.fields.is_some() {
            return Err("fields needs each (the array the items come from)".into());
        }
        let from = from.ok_or(
            "a field needs `from` (a JSON pointer or variable) or `value`; its keys are from, value, format, date, codes, default, required, each, fields",
        )?;
        return Ok(Req::Leaf(Leaf {
            from,
            t,
            required: spec.required,
        }));
    };
    if !top {
        return Err("a list's fields cannot hold another list".into());
    }
    if from.is_some() {
        return Err("a list has `each`, not `from` or `value`".into());
    }
    if !each.starts_with('/') {
        return Err(format!("each {each:?} is not a JSON pointer (/…)"));
    }
    let fields = match &spec.fields {
        None => None,
        Some(m) => {
            let mut out = Vec::new();
            for (k, v) in m {
                let what = |e: String| format!("fields.{k}: {e}");
                match compile_req(v, tables, false).map_err(what)? {
                    Req::Leaf(l) => out.push((k.clone(), l)),
                    Req::List { .. } => return Err(format!("fields.{k}: a list in a list")),
                }
            }
            Some(out)
        }
    };
    Ok(Req::List {
        each: each.clone(),
        fields,
        item: t,
        required: spec.required,
    })
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ReadSpec {
    path: Option<String>,
    date: Option<String>,
    codes: Option<Value>,
    default: Option<Value>,
    #[serde(default)]
    list: bool,
    each: Option<String>,
    fields: Option<Map<String, Value>>,
}

fn compile_read(
    v: &Value,
    tables: &BTreeMap<String, CodeTable>,
    path: &dyn Fn(&str, &str) -> Result<Path, String>,
    what: &str,
) -> Result<ReadField, String> {
    let spec = match v {
        Value::String(p) => ReadSpec {
            path: Some(p.clone()),
            ..ReadSpec::default()
        },
        Value::Object(_) => {
            serde_json::from_value(v.clone()).map_err(|e| format!("mapped: {what}: {e}"))?
        }
        _ => return Err(format!("mapped: {what}: a path or a table {{ path = … }}")),
    };
    let bad = |e: String| format!("mapped: {what}: {e}");
    let date = spec
        .date
        .as_deref()
        .map(DatePattern::parse)
        .transpose()
        .map_err(bad)?;
    let codes = match (&spec.codes, &spec.default) {
        (Some(c), d) => Some(table(c, d, tables, true).map_err(bad)?),
        (None, Some(_)) => return Err(bad("default needs codes".into())),
        (None, None) => None,
    };
    match (&spec.path, &spec.each, &spec.fields) {
        (Some(p), None, None) => Ok(ReadField {
            path: path(what, p)?,
            date,
            codes,
            list: spec.list,
            fields: None,
        }),
        (None, Some(each), Some(m)) => {
            if spec.list || date.is_some() || codes.is_some() {
                return Err(bad(
                    "each takes fields only (list, date and codes go on the fields)".into(),
                ));
            }
            let mut fields = Vec::new();
            for (k, v) in m {
                let inner = compile_read(v, tables, path, &format!("{what}.fields.{k}"))?;
                if inner.fields.is_some() {
                    return Err(bad(format!("fields.{k}: a list in a list")));
                }
                fields.push((k.clone(), inner));
            }
            Ok(ReadField {
                path: path(what, each)?,
                date: None,
                codes: None,
                list: true,
                fields: Some(fields),
            })
        }
        _ => Err(bad(
            "a field has either `path` or `each` with `fields`".into()
        )),
    }
}
