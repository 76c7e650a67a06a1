//! What a procedure's route needs from a filing: the per-procedure data schemas
//! (`schemas/procedures/<ma_tthc>.schema.json`, JSON Schema 2020-12, named by the catalogue's
//! `[[procedures]] data_schema`), found and compiled once at startup, and the check of a filing
//! against them, whose errors carry each missing or wrong field's JSON pointer and the route's
//! steps (and the units taking them) that need it.
//!
//! A *filing* is the centre's message that hands a new dossier to the bus: its
//! `dossier.forward` without receiver that starts the process manager's run ([`starts_run`]),
//! or its first forward of a dossier it drives itself (the one that records the dossier's origin,
//! [`crate::routing::RouteDecision::records_origin`]). Later messages are never checked here: a
//! centre's answer to a supplement request carries only the new keys.
//!
//! Where `data_schema` is read from ([`crate::registry::ConfigSource`]): with the embedded
//! default configuration, from the copies of `schemas/procedures/` compiled into the binary
//! ([`EMBEDDED`]); with `--config FILE`, from disk, a relative path being relative to the working
//! directory (as `[store] path` is). A schema that is missing, not JSON, not JSON Schema 2020-12,
//! that does not compile, or whose `x-needed-by` names a step the procedure does not have, is a
//! configuration error naming the procedure and the path.

use std::collections::HashMap;
use std::path::Path;

use serde_json::{Map, Value, json};

use crate::envelope::{Envelope, FieldError, NeededBy, RejectCode, Rejection, clip};
use crate::registry::{ConfigError, ConfigSource, Procedure, Registry, Settings, UnitKind};

/// The annotation keyword of a procedure schema naming the catalogue steps (their `id`s) that
/// need a field: `"x-needed-by": ["thuong-tru", "the-bhyt"]`. On a property, an `anyOf`/`if`
/// branch or an object; the deepest one on an error's path is the one reported.
pub const NEEDED_BY: &str = "x-needed-by";

/// The `$schema` a procedure schema may declare (it may also leave it out).
pub const DRAFT_2020_12: &str = "https://json-schema.org/draft/2020-12/schema";

pub use crate::embedded::EMBEDDED;

/// Most field errors reported for one filing.
const MAX_ERRORS: usize = 20;

/// Longest text of one field error, in characters (it also travels in a dead-letter header).
const MAX_ERROR_CHARS: usize = 300;

/// One procedure's compiled data schema.
struct ProcedureSchema {
    /// `data_schema` as the catalogue writes it (for messages).
    path: String,
    /// The schema document (to read `x-needed-by` and `anyOf` branches when reporting).
    doc: Value,
    /// Compiled once, with format checks on (`date` is a real date).
    validator: jsonschema::Validator,
    /// The procedure's steps: id, name, unit or role (to name who needs a field).
    steps: Vec<(String, String, Option<String>, Option<String>)>,
}

/// Every procedure's data schema, compiled. Built once at startup ([`FilingSchemas::load`]);
/// cheap to share (`Send + Sync`).
pub struct FilingSchemas {
    by_procedure: HashMap<String, ProcedureSchema>,
}

impl std::fmt::Debug for FilingSchemas {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut m: Vec<(&String, &String)> = self
            .by_procedure
            .iter()
            .map(|(k, v)| (k, &v.path))
            .collect();
        m.sort();
        f.debug_struct("FilingSchemas")
            .field("by_procedure", &m)
            .finish()
    }
}

/// A `dossier.forward` with no receiver: what starts a process (a filing), or a centre's answer
/// to a pause of a dossier the process manager runs.
pub fn forward_without_receiver(env: &Envelope) -> bool {
    env.kind.is_forward() && env.receiver.is_none()
}

/// Whether `env` files a dossier for the process manager: a `dossier.forward` without receiver
/// from a centre, for a dossier the process manager does not run yet (`runs`, read from the
/// store by [`crate::store::Store::lookup_dossier`]). A forward without receiver for a dossier
/// it runs is the centre's answer to a pause (supplement, payment), not a filing; one from a unit
/// that is not a centre is refused by the process manager (`missing-receiver`).
pub fn starts_run(registry: &Registry, env: &Envelope, runs: bool) -> bool {
    forward_without_receiver(env)
        && !runs
        && registry
            .unit(&env.sender)
            .is_some_and(|u| u.kind == UnitKind::Centre)
}

/// The text of the schema `path` names for `procedure`, from where `source` says.
fn read_schema(source: &ConfigSource, procedure: &str, path: &str) -> Result<String, ConfigError> {
    let bad = |why: String| {
        ConfigError::Invalid(format!(
            "procedure {procedure}: data_schema {path:?}: {why}"
        ))
    };
    match source {
        ConfigSource::Embedded => EMBEDDED
            .iter()
            .find(|(p, _)| *p == path)
            .map(|(_, text)| (*text).to_string())
            .ok_or_else(|| {
                bad(format!(
                    "no such schema is compiled into this binary (the embedded configuration can name: {}; give --config FILE to read schemas from disk)",
                    EMBEDDED.map(|(p, _)| p).join(", ")
                ))
            }),
        ConfigSource::File(file) => std::fs::read_to_string(Path::new(path)).map_err(|e| {
            bad(format!(
                "cannot read it: {e} (a relative path in a config file is read from the file's directory, {})",
                file.parent()
                    .map(|d| d.display().to_string())
                    .filter(|d| !d.is_empty())
                    .unwrap_or_else(|| ".".into())
            ))
        }),
    }
}

/// Every `x-needed-by` value of `v` (recursively) that is not one of `ids`, or is not an array
/// of strings; with the JSON pointer of the annotation.
fn bad_needed_by(v: &Value, at: &mut String, ids: &[&str], out: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            for (k, x) in m {
                let len = at.len();
                at.push('/');
                at.push_str(&k.replace('~', "~0").replace('/', "~1"));
                if k == NEEDED_BY {
                    match x.as_array() {
                        Some(a) if !a.is_empty() => {
                            for s in a {
                                match s.as_str() {
                                    Some(id) if ids.contains(&id) => {}
                                    _ => out
                                        .push(format!("{at}: {s} is not a step of the procedure")),
                                }
                            }
                        }
                        _ => out.push(format!("{at}: must be a non-empty array of step ids")),
                    }
                } else {
                    bad_needed_by(x, at, ids, out);
                }
                at.truncate(len);
            }
        }
        Value::Array(a) => {
            for (i, x) in a.iter().enumerate() {
                let len = at.len();
                at.push_str(&format!("/{i}"));
                bad_needed_by(x, at, ids, out);
                at.truncate(len);
            }
        }
        _ => {}
    }
}

/// Read, parse and compile the data schema of `p` (which names one).
fn compile(
    source: &ConfigSource,
    p: &Procedure,
    path: &str,
) -> Result<ProcedureSchema, ConfigError> {
    let bad = |why: String| {
        ConfigError::Invalid(format!(
            "procedure {}: data_schema {path:?}: {why}",
            p.ma_tthc
        ))
    };
    let text = read_schema(source, &p.ma_tthc, path)?;
    let doc: Value = serde_json::from_str(&text).map_err(|e| bad(format!("not JSON: {e}")))?;
    if !doc.is_object() {
        return Err(bad("not a JSON Schema object".into()));
    }
    if let Some(s) = doc.get("$schema")
        && s.as_str().map(|s| s.trim_end_matches('#')) != Some(DRAFT_2020_12)
    {
        return Err(bad(format!(
            "$schema is {s}; procedure schemas are JSON Schema 2020-12 ({DRAFT_2020_12})"
        )));
    }
    let validator = jsonschema::draft202012::options()
        .should_validate_formats(true)
        .build(&doc)
        .map_err(|e| {
            bad(format!(
                "not a valid JSON Schema 2020-12: {}",
                clip(&e.to_string(), 500)
            ))
        })?;
    let ids: Vec<&str> = p.steps.iter().map(|s| s.id.as_str()).collect();
    let mut wrong = Vec::new();
    bad_needed_by(&doc, &mut String::new(), &ids, &mut wrong);
    if !wrong.is_empty() {
        return Err(bad(format!(
            "{NEEDED_BY} must name steps of the procedure ({}): {}",
            ids.join(", "),
            wrong.join("; ")
        )));
    }
    Ok(ProcedureSchema {
        path: path.to_string(),
        validator,
        steps: p
            .steps
            .iter()
            .map(|s| (s.id.clone(), s.name.clone(), s.unit.clone(), s.role.clone()))
            .collect(),
        doc,
    })
}

impl FilingSchemas {
    /// Find and compile the data schema of every procedure whose catalogue entry names one
    /// (`data_schema`), from where `settings.source` says (see the module docs).
    ///
    /// Errors: [`ConfigError::Invalid`] naming the procedure and the path: the schema is not
    /// there, is not JSON, declares another draft, does not compile, or its `x-needed-by` names
    /// a step the procedure does not have.
    pub fn load(settings: &Settings) -> Result<FilingSchemas, ConfigError> {
        let mut by_procedure = HashMap::new();
        for p in &settings.procedures {
            if let Some(path) = &p.data_schema {
                by_procedure.insert(p.ma_tthc.clone(), compile(&settings.source, p, path)?);
            }
        }
        Ok(FilingSchemas { by_procedure })
    }

    /// No schema at all: every filing passes (for tools that do not route).
    pub fn none() -> FilingSchemas {
        FilingSchemas {
            by_procedure: HashMap::new(),
        }
    }

    /// The `data_schema` path of a procedure, if it has one.
    pub fn path(&self, ma_tthc: &str) -> Option<&str> {
        self.by_procedure.get(ma_tthc).map(|s| s.path.as_str())
    }

    /// Check a filing against its procedure's data schema (no schema: Ok). The envelope is
    /// checked as JSON, attachments without their content (`content_base64` left out).
    ///
    /// Errors: [`RejectCode::ProcedureDataInvalid`], one [`FieldError`] per field (its JSON
    /// pointer into the envelope, the alternatives when any one of several fields will do, and
    /// the steps that need it, each with the unit that takes it for this centre); the same
    /// errors as text in `errors`, so that the dead-letter reason carries the pointers.
    pub fn check(&self, registry: &Registry, env: &Envelope) -> Result<(), Rejection> {
        let Some(schema) = self.by_procedure.get(&env.ma_tthc) else {
            return Ok(());
        };
        let instance = instance_of(env);
        if schema.validator.is_valid(&instance) {
            return Ok(());
        }
        Err(schema.rejection(registry, &env.ma_tthc, &env.sender, &instance))
    }

    /// [`FilingSchemas::check`] on an envelope given as JSON (`ma_tthc` and `sender` read from
    /// it), for tools and tests that hold a value that is not (yet) an [`Envelope`].
    pub fn check_value(&self, registry: &Registry, value: &Value) -> Result<(), Rejection> {
        let tthc = value.get("ma_tthc").and_then(Value::as_str).unwrap_or("");
        let Some(schema) = self.by_procedure.get(tthc) else {
            return Ok(());
        };
        if schema.validator.is_valid(value) {
            return Ok(());
        }
        let sender = value.get("sender").and_then(Value::as_str).unwrap_or("");
        Err(schema.rejection(registry, tthc, sender, value))
    }
}

/// The envelope as the schema sees it: every field, attachments without `content_base64`.
fn instance_of(env: &Envelope) -> Value {
    let mut v = Map::new();
    let s = |x: &str| Value::String(x.to_string());
    v.insert("spec".into(), s(&env.spec));
    v.insert("message_id".into(), s(&env.message_id));
    v.insert("kind".into(), s(env.kind.as_str()));
    v.insert("ma_ho_so".into(), s(&env.ma_ho_so));
    v.insert("ma_tthc".into(), s(&env.ma_tthc));
    v.insert("sender".into(), s(&env.sender));
    if let Some(r) = &env.receiver {
        v.insert("receiver".into(), s(r));
    }
    v.insert("sent_at".into(), s(&env.sent_at));
    if let Some(st) = env.status {
        v.insert("status".into(), Value::from(st.0));
    }
    v.insert("correlation_id".into(), s(&env.correlation_id));
    if let Some(c) = &env.causation_id {
        v.insert("causation_id".into(), s(c));
    }
    v.insert(
        "payload".into(),
        serde_json::to_value(&env.payload).unwrap_or(Value::Null),
    );
    if !env.attachments.is_empty() {
        let atts = env
            .attachments
            .iter()
            .map(|a| {
                let mut m = json!({"name": a.name, "media_type": a.media_type,
                                   "size_bytes": a.size_bytes, "sha256": a.sha256});
                if let Some(r) = &a.reference {
                    m["reference"] = json!(r);
                }
                m
            })
            .collect();
        v.insert("attachments".into(), Value::Array(atts));
    }
    Value::Object(v)
}

/// The segments of a JSON pointer, unescaped.
fn segments(pointer: &str) -> Vec<String> {
    pointer
        .split('/')
        .skip(1)
        .map(|s| s.replace("~1", "/").replace("~0", "~"))
        .collect()
}

/// The schema nodes along an evaluation path (keyword locations through `$ref`s: a `$ref`
/// segment jumps to the local target, `#/…`), from the root; stops where the path leaves the
/// document.
fn walk<'a>(root: &'a Value, path: &str) -> Vec<&'a Value> {
    let mut nodes = vec![root];
    let mut cur = root;
    for seg in segments(path) {
        let next = if seg == "$ref" {
            cur.get("$ref")
                .and_then(Value::as_str)
                .and_then(|r| r.strip_prefix('#'))
                .and_then(|p| root.pointer(p))
        } else {
            match cur {
                Value::Object(m) => m.get(&seg),
                Value::Array(a) => seg.parse::<usize>().ok().and_then(|i| a.get(i)),
                _ => None,
            }
        };
        match next {
            Some(n) => {
                cur = n;
                nodes.push(n);
            }
            None => break,
        }
    }
    nodes
}

/// The step ids of the deepest `x-needed-by` among `nodes`.
fn needed_by_of(nodes: &[&Value]) -> Vec<String> {
    nodes
        .iter()
        .rev()
        .find_map(|n| n.get(NEEDED_BY).and_then(Value::as_array))
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// The field an `anyOf` branch asks for, as a JSON pointer under `base`: follow its `required`
/// (one name each) and `properties` down to the deepest required name. `None` when the branch is
/// not such a chain.
fn branch_pointer(branch: &Value, base: &str) -> Option<String> {
    let mut at = base.to_string();
    let mut node = branch;
    let mut found = false;
    loop {
        let req = node.get("required").and_then(Value::as_array);
        let Some([name]) = req.map(Vec::as_slice) else {
            break;
        };
        let name = name.as_str()?;
        at.push('/');
        at.push_str(&name.replace('~', "~0").replace('/', "~1"));
        found = true;
        match node.get("properties").and_then(|p| p.get(name)) {
            Some(next) => node = next,
            None => break,
        }
    }
    found.then_some(at)
}

impl ProcedureSchema {
    /// The rejection for an instance that failed: field errors merged by pointer.
    fn rejection(
        &self,
        registry: &Registry,
        ma_tthc: &str,
        centre: &str,
        instance: &Value,
    ) -> Rejection {
        let mut fields: Vec<(String, Vec<String>, String, Vec<String>)> = Vec::new();
        for e in self.validator.iter_errors(instance).take(MAX_ERRORS) {
            let nodes = walk(&self.doc, &e.evaluation_path().to_string());
            let (pointer, alternatives, detail, mut steps) = match e.kind() {
                jsonschema::error::ValidationErrorKind::Required { property } => {
                    let name = property.as_str().unwrap_or_default();
                    // The node holding `required` is the one before the `required` array.
                    let holder = nodes.len().checked_sub(2).map(|i| nodes[i]);
                    let own = holder
                        .and_then(|h| h.get("properties"))
                        .and_then(|p| p.get(name))
                        .map(|p| needed_by_of(&[p]))
                        .filter(|v| !v.is_empty());
                    (
                        e.instance_path().join(name).to_string(),
                        Vec::new(),
                        "missing".to_string(),
                        own.unwrap_or_else(|| needed_by_of(&nodes)),
                    )
                }
                jsonschema::error::ValidationErrorKind::AnyOf { context } => {
                    let base = e.instance_path().to_string();
                    let branches = nodes.last().and_then(|n| n.as_array());
                    let mut ptrs: Vec<String> = Vec::new();
                    for (i, errs) in context.iter().enumerate() {
                        let p = branches
                            .and_then(|b| b.get(i))
                            .and_then(|b| branch_pointer(b, &base))
                            .or_else(|| {
                                errs.first().map(|x| match x.kind() {
                                    jsonschema::error::ValidationErrorKind::Required {
                                        property,
                                    } => x
                                        .instance_path()
                                        .join(property.as_str().unwrap_or_default())
                                        .to_string(),
                                    _ => x.instance_path().to_string(),
                                })
                            });
                        if let Some(p) = p
                            && !ptrs.contains(&p)
                        {
                            ptrs.push(p);
                        }
                    }
                    let first = ptrs.first().cloned().unwrap_or(base);
                    let rest: Vec<String> = ptrs.into_iter().skip(1).collect();
                    let detail = if rest.is_empty() {
                        "missing".to_string()
                    } else {
                        "missing (any one of the alternatives will do)".to_string()
                    };
                    (first, rest, detail, needed_by_of(&nodes))
                }
                _ => {
                    let at = e.instance_path().to_string();
                    (
                        at,
                        Vec::new(),
                        clip(&e.to_string(), 200),
                        needed_by_of(&nodes),
                    )
                }
            };
            let pointer = if pointer.is_empty() {
                "/".into()
            } else {
                pointer
            };
            match fields.iter_mut().find(|f| f.0 == pointer) {
                Some(f) => {
                    steps.retain(|s| !f.3.contains(s));
                    f.3.append(&mut steps);
                    if f.2 != detail && !f.2.contains(&detail) {
                        f.2 = format!("{}; {detail}", f.2);
                    }
                }
                None => fields.push((pointer, alternatives, detail, steps)),
            }
        }
        let fields: Vec<FieldError> = fields
            .into_iter()
            .map(|(pointer, alternatives, detail, steps)| FieldError {
                pointer,
                alternatives,
                detail,
                needed_by: self.needed_by(registry, centre, &steps),
            })
            .collect();
        let errors = fields
            .iter()
            .map(|f| clip(&f.to_string(), MAX_ERROR_CHARS))
            .collect();
        Rejection {
            code: RejectCode::ProcedureDataInvalid,
            detail: format!(
                "the dossier lacks what the route of procedure {} needs ({} field(s); {}): the centre can add it and file again",
                ma_tthc,
                fields.len(),
                self.path
            ),
            errors,
            fields,
        }
    }

    /// The steps `ids` in route order, each with the unit that takes it for `centre`.
    fn needed_by(&self, registry: &Registry, centre: &str, ids: &[String]) -> Vec<NeededBy> {
        self.steps
            .iter()
            .filter(|(id, ..)| ids.contains(id))
            .map(|(id, name, unit, role)| {
                let code = unit.clone().or_else(|| {
                    role.as_deref()
                        .and_then(|r| registry.resolve_role(r, centre))
                });
                let unit_name = code
                    .as_deref()
                    .and_then(|c| registry.unit(c))
                    .map(|u| u.name.clone());
                NeededBy {
                    step: id.clone(),
                    name: name.clone(),
                    unit: code,
                    unit_name,
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests;
