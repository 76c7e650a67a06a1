//! The config-only adapter (`mapped`): an agency that takes JSON or flat XML over HTTP is
//! connected with configuration alone — a field mapping from the envelope to the agency's
//! document and from its callback back to bus terms, and the rule that tells success from
//! failure. See `adapters/README.md` ("connect a new agency in an hour") for the settings and a
//! worked example; write a Rust adapter instead when the agency needs more (several calls per
//! delivery, nested XML answers, signatures, sessions).
//!
//! Only `dossier.forward` is delivered (a submit); the idempotency key is the envelope's
//! `message_id`, sent as `Idempotency-Key`.

use std::sync::Arc;

use async_trait::async_trait;
use lienthong_core::Envelope;
use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::adapter::{Adapter, AgencyRequest, Operation, ResultsTo, Setup};
use crate::error::{BuildError, CallbackError, NotDeliverable};
use crate::outcome::{AgencyReply, AgencyStatus, Outcome, StatusLookup};
use crate::http::{
    exchange, failure_status, lookup_failed, lookup_unreadable, snippet, unreadable,
};
use crate::xml::{Builder, read_flat};

/// Registry name of this adapter.
pub const NAME: &str = "mapped";

/// How one field of the agency's document is filled.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum Source {
    /// `"/payload/applicant/ho_ten"` (a JSON pointer into the envelope) or a variable:
    /// `$callback_url`, `$now` (the envelope's `sent_at` as yyyyMMddHHmmss, Vietnam time: the
    /// same on every attempt), `$message_id`.
    Path(String),
    /// A field with options.
    Field {
        /// JSON pointer into the envelope, or a variable.
        from: Option<String>,
        /// A literal value instead.
        value: Option<Value>,
        /// `date8` (YYYY-MM-DD → yyyyMMdd), `string` (numbers as text), or none.
        format: Option<String>,
        /// Whether a missing source is an error (default true; false leaves the field out).
        #[serde(default = "yes")]
        required: bool,
    },
}

fn yes() -> bool {
    true
}

/// The success rule of the submit answer.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Success {
    /// HTTP statuses that may be success (default: any 2xx).
    #[serde(default)]
    pub statuses: Vec<u16>,
    /// Field of the answer that must equal `equals` (JSON pointer; XML: element name).
    pub field: Option<String>,
    /// The value of `field` that means success (e.g. `"00"`).
    pub equals: Option<String>,
    /// Field holding the agency's receipt number.
    pub receipt: Option<String>,
    /// Field holding the agency's error text (for the reason of a failure).
    pub message: Option<String>,
}

/// How the agency's callback maps to bus terms (JSON pointers; XML: element names).
#[derive(Debug, Clone, Deserialize)]
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
    /// Bus result field → agency field.
    #[serde(default)]
    pub result: Map<String, Value>,
}

/// The whole configuration of a mapped agency (`[units.reach.settings]`); unknown keys are
/// refused.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MappedConfig {
    /// `json` or `xml`.
    pub format: String,
    /// XML root element of the submit.
    pub xml_root: Option<String>,
    /// XML namespace of the agency's documents.
    pub xml_namespace: Option<String>,
    /// Path of the submit under the endpoint (POST).
    #[serde(default)]
    pub submit_path: String,
    /// Path of the status lookup, with `{ma_ho_so}` (GET; optional).
    pub status_path: Option<String>,
    /// Agency field → source. Nested JSON objects or XML elements with dots: `NguoiNop.HoTen`.
    pub request: Map<String, Value>,
    /// The success rule.
    #[serde(default)]
    pub success: Success,
    /// The callback mapping.
    pub callback: Callback,
    /// Accepted and ignored here: connection options (read by [`crate::http`]).
    #[serde(default)]
    pub connection: Option<Value>,
    /// `"sender"`: callbacks go to the sending unit ([`ResultsTo`]).
    #[serde(default)]
    pub results_to: Option<String>,
}

/// A mapped agency.
pub struct Mapped {
    client: crate::http::Agent,
    endpoint: String,
    callback_url: String,
    cfg: MappedConfig,
    request: Vec<(String, Source)>,
}

/// The adapter of a unit with `adapter = "mapped"` (its registration).
pub fn build(s: Setup<'_>) -> Result<Arc<dyn Adapter>, BuildError> {
    let a = Mapped::new(s.client.clone(), &s.endpoint, &s.callback_url, s.settings).map_err(
        |reason| BuildError::Settings {
            unit: s.unit.code.clone(),
            reason,
        },
    )?;
    Ok(Arc::new(a))
}

fn pointer<'a>(v: &'a Value, p: &str) -> Option<&'a Value> {
    v.pointer(p).filter(|x| !x.is_null())
}

fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

impl Mapped {
    /// An adapter from the unit's settings.
    ///
    /// Errors: settings that do not parse, or name an unknown format or variable.
    pub fn new(
        client: crate::http::Agent,
        endpoint: &str,
        callback_url: &str,
        settings: &Map<String, Value>,
    ) -> Result<Self, String> {
        let cfg: MappedConfig = serde_json::from_value(Value::Object(settings.clone()))
            .map_err(|e| format!("mapped adapter settings: {e}"))?;
        if cfg.format != "json" && cfg.format != "xml" {
            return Err(format!(
                "mapped: format {:?} is neither json nor xml",
                cfg.format
            ));
        }
        if cfg.format == "xml" && (cfg.xml_root.is_none() || cfg.xml_namespace.is_none()) {
            return Err("mapped: format xml needs xml_root and xml_namespace".into());
        }
        for (what, p) in [
            ("submit_path", Some(cfg.submit_path.as_str())),
            ("status_path", cfg.status_path.as_deref()),
        ] {
            if let Some(p) = p
                && !p.is_empty()
                && !p.starts_with('/')
            {
                return Err(format!("mapped: {what} {p:?} must start with '/'"));
            }
        }
        let mut request = Vec::new();
        for (k, v) in &cfg.request {
            let s: Source = serde_json::from_value(v.clone())
                .map_err(|e| format!("mapped: request.{k}: {e}"))?;
            if let Source::Path(p) | Source::Field { from: Some(p), .. } = &s
                && !p.starts_with('/')
                && !matches!(p.as_str(), "$callback_url" | "$now" | "$message_id")
            {
                return Err(format!(
                    "mapped: request.{k}: {p:?} is neither a JSON pointer (/…) nor $callback_url, $now, $message_id"
                ));
            }
            if let Source::Field {
                from,
                value,
                format,
                ..
            } = &s
            {
                if from.is_none() && value.is_none() {
                    return Err(format!(
                        "mapped: request.{k}: a field needs `from` (a JSON pointer or variable) or `value`; its keys are from, value, format, required"
                    ));
                }
                if let Some(f) = format
                    && f != "date8"
                    && f != "string"
                {
                    return Err(format!(
                        "mapped: request.{k}: format {f:?} is neither \"date8\" nor \"string\""
                    ));
                }
            }
            request.push((k.clone(), s));
        }
        Ok(Mapped {
            client,
            endpoint: endpoint.trim_end_matches('/').to_string(),
            callback_url: callback_url.to_string(),
            cfg,
            request,
        })
    }

    fn resolve(&self, env: &Value, from: &str) -> Option<Value> {
        match from {
            "$callback_url" => Some(json!(self.callback_url)),
            "$now" => env
                .get("sent_at")
                .and_then(Value::as_str)
                .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
                .map(|t| json!(lienthong_core::clock::to_dvcqg(t.with_timezone(&chrono::Utc)))),
            "$message_id" => env.get("message_id").cloned(),
            p => pointer(env, p).cloned(),
        }
    }

    /// The agency's fields for `env`, in configuration order: (dotted name, text or JSON).
    pub fn fields(&self, env: &Envelope) -> Result<Vec<(String, Value)>, String> {
        let v = serde_json::to_value(env).map_err(|e| e.to_string())?;
        let mut out = Vec::new();
        for (name, src) in &self.request {
            let (val, format, required) = match src {
                Source::Path(p) => (self.resolve(&v, p), None, true),
                Source::Field {
                    from,
                    value,
                    format,
                    required,
                } => (
                    value
                        .clone()
                        .or_else(|| from.as_deref().and_then(|f| self.resolve(&v, f))),
                    format.as_deref(),
                    *required,
                ),
            };
            let Some(val) = val else {
                if required {
                    return Err(format!("{name}: no value in the envelope ({src:?})"));
                }
                continue;
            };
            let val =
                match format {
                    Some("date8") => json!(crate::mapping::date8(&text(&val)).ok_or_else(
                        || format!("{name}: {} is not a YYYY-MM-DD date", text(&val))
                    )?),
                    Some("string") => json!(text(&val)),
                    Some(other) => return Err(format!("{name}: unknown format {other:?}")),
                    None => val,
                };
            out.push((name.clone(), val));
        }
        Ok(out)
    }

    /// The submit body for `env` (JSON or XML).
    pub fn body(&self, env: &Envelope) -> Result<Vec<u8>, String> {
        let fields = self.fields(env)?;
        if self.cfg.format == "json" {
            let mut doc = Value::Object(Map::new());
            for (name, val) in fields {
                let mut at = &mut doc;
                let parts: Vec<&str> = name.split('.').collect();
                for p in &parts[..parts.len() - 1] {
                    at = at
                        .as_object_mut()
                        .ok_or("not an object")?
                        .entry(p.to_string())
                        .or_insert_with(|| Value::Object(Map::new()));
                }
                if let Some(o) = at.as_object_mut() {
                    o.insert(parts[parts.len() - 1].to_string(), val);
                }
            }
            return serde_json::to_vec(&doc).map_err(|e| e.to_string());
        }
        let root = self.cfg.xml_root.clone().unwrap_or_default();
        let mut b = Builder::new(&root, self.cfg.xml_namespace.as_deref().unwrap_or(""));
        let mut open: Vec<String> = Vec::new();
        for (name, val) in fields {
            let parts: Vec<&str> = name.split('.').collect();
            let parents = &parts[..parts.len() - 1];
            while !open.is_empty()
                && (open.len() > parents.len() || open.iter().zip(parents).any(|(a, b)| a != b))
            {
                if let Some(last) = open.pop() {
                    b.close(&last);
                }
            }
            for p in &parents[open.len()..] {
                b.open(p);
                open.push(p.to_string());
            }
            b.text(parts[parts.len() - 1], &text(&val));
        }
        while let Some(last) = open.pop() {
            b.close(&last);
        }
        Ok(b.finish(&root))
    }

    /// A field of an answer: JSON pointer, or XML element name (flat documents).
    fn answer_field(&self, body: &[u8], field: &str) -> Option<String> {
        self.read(body).ok()?.field(field)
    }

    /// An answer read in the configured format: a JSON object, or a flat XML document in
    /// `xml_namespace`. Errors say why the body is not one.
    fn read(&self, body: &[u8]) -> Result<Answer, String> {
        if self.cfg.format == "json" {
            match serde_json::from_slice::<Value>(body) {
                Ok(v) if v.is_object() => Ok(Answer::Json(v)),
                Ok(_) => Err("the body is JSON but not an object".into()),
                Err(e) => Err(format!("the body is not JSON ({e})")),
            }
        } else {
            let ns = self.cfg.xml_namespace.as_deref().unwrap_or("");
            read_flat(body, ns)
                .map(Answer::Xml)
                .map_err(|e| format!("the body is not an XML document in {ns} ({e})"))
        }
    }

    /// The submit answer under the one rule (the status is among the success statuses): a
    /// body that does not read in the configured format, or lacks the configured
    /// `success.field` or `success.receipt`, is unknown; `success.field` with another value
    /// than `equals` is a permanent failure with the agency's `message`. With neither field
    /// nor receipt configured, an empty body is the receipt (`HTTP <status>`). Public for the
    /// fuzz target `agency_answers`; `send` calls it with the agency's 2xx answer.
    pub fn submit_answer(&self, status: reqwest::StatusCode, body: &[u8]) -> Outcome {
        let s = &self.cfg.success;
        let op = "submit";
        if body.is_empty() && s.field.is_none() && s.receipt.is_none() {
            return Outcome::Delivered {
                receipt: format!("HTTP {}", status.as_u16()),
            };
        }
        let answer = match self.read(body) {
            Ok(a) => a,
            Err(what) => return unreadable(op, status, what, body),
        };
        if let (Some(field), Some(want)) = (&s.field, &s.equals) {
            match answer.field(field) {
                Some(got) if &got == want => {}
                Some(got) => {
                    let message = s
                        .message
                        .as_deref()
                        .and_then(|m| answer.field(m))
                        .unwrap_or_else(|| snippet(body));
                    return Outcome::Permanent {
                        reason: format!(
                            "{op}: HTTP {status} with {field} = {got:?} (success is {want:?}): {message}"
                        ),
                    };
                }
                None => {
                    return unreadable(op, status, format!("{field} is not in the answer"), body);
                }
            }
        }
        match s.receipt.as_deref() {
            None => Outcome::Delivered {
                receipt: format!("HTTP {}", status.as_u16()),
            },
            Some(r) => match answer.field(r).filter(|x| !x.is_empty()) {
                Some(receipt) => Outcome::Delivered { receipt },
                None => unreadable(
                    op,
                    status,
                    format!("the receipt {r} is not in the answer"),
                    body,
                ),
            },
        }
    }
}

/// An agency's answer read in its configured format.
enum Answer {
    /// A JSON object.
    Json(Value),
    /// A flat XML document.
    Xml(crate::xml::Flat),
}

impl Answer {
    /// A field: JSON pointer, or XML element name (a leading `/` is ignored).
    fn field(&self, field: &str) -> Option<String> {
        match self {
            Answer::Json(v) => pointer(v, field).map(text),
            Answer::Xml(f) => f.get(field.trim_start_matches('/')).map(str::to_string),
        }
    }
}

#[async_trait]
impl Adapter for Mapped {
    fn name(&self) -> &'static str {
        NAME
    }

    fn interface(&self) -> &'static str {
        "a mapped agency"
    }

    fn operations(&self) -> &'static [Operation] {
        &[Operation::Submit]
    }

    /// Submit: `POST {endpoint}{submit_path}` with [`Mapped::body`].
    fn request(&self, op: Operation, env: &Envelope) -> Result<AgencyRequest, NotDeliverable> {
        let body = self.body(env).map_err(|reason| NotDeliverable::Unmappable {
            document: "the agency's document",
            reason,
        })?;
        let url = format!("{}{}", self.endpoint, self.cfg.submit_path);
        Ok(AgencyRequest::new(op, "submit", url, env, body))
    }

    async fn send(&self, req: &AgencyRequest) -> Outcome {
        let ct = if self.cfg.format == "json" {
            "application/json"
        } else {
            "application/xml; charset=utf-8"
        };
        let request = self
            .client
            .post(&req.url)
            .header("Idempotency-Key", &req.key)
            .header(reqwest::header::CONTENT_TYPE, ct)
            .body(req.body.clone());
        let r = match exchange(&self.client, "submit", request).await {
            Ok(r) => r,
            Err(o) => return o,
        };
        let s = &self.cfg.success;
        let listed = s.statuses.is_empty() && r.status.is_success()
            || s.statuses.contains(&r.status.as_u16());
        if listed {
            return self.submit_answer(r.status, &r.body);
        }
        if r.status.is_success() {
            return unreadable(
                "submit",
                r.status,
                format!("the status is not among success.statuses {:?}", s.statuses),
                &r.body,
            );
        }
        let message = s
            .message
            .as_deref()
            .and_then(|m| self.answer_field(&r.body, m))
            .unwrap_or_else(|| snippet(&r.body));
        failure_status("submit", r.status, &r.headers, message)
    }

    /// `GET {endpoint}{status_path}` (with `{ma_ho_so}` replaced): a 2xx in the configured
    /// format whose `callback.status` field gives 1–10 (directly or through `status_map`) is
    /// found; a 404 in the configured format is not found; a 2xx that does not read, lacks the
    /// status field or has a value the mapping does not know is unreadable; a 2xx whose
    /// `success.field` says failure, and every other failure, is failed. Without
    /// `status_path`: not supported.
    async fn status(&self, ma_ho_so: &str) -> StatusLookup {
        let Some(path) = &self.cfg.status_path else {
            return StatusLookup::NotSupported {
                reason: "no status_path configured: reachability and TLS only".into(),
            };
        };
        let op = "status lookup";
        let url = format!("{}{}", self.endpoint, path.replace("{ma_ho_so}", ma_ho_so));
        let r = match exchange(&self.client, op, self.client.get(&url)).await {
            Ok(r) => r,
            Err(o) => return lookup_failed(o),
        };
        let answer = self.read(&r.body);
        let message = |a: &Answer| {
            self.cfg
                .success
                .message
                .as_deref()
                .and_then(|m| a.field(m))
                .unwrap_or_else(|| snippet(&r.body))
        };
        if r.status == reqwest::StatusCode::NOT_FOUND
            && let Ok(a) = &answer
        {
            return StatusLookup::NotFound { reason: message(a) };
        }
        if !r.status.is_success() {
            let reason = match &answer {
                Ok(a) => message(a),
                Err(_) => snippet(&r.body),
            };
            return lookup_failed(failure_status(op, r.status, &r.headers, reason));
        }
        let a = match answer {
            Ok(a) => a,
            Err(what) => return lookup_unreadable(op, r.status, what, &r.body),
        };
        let c = &self.cfg.callback;
        match a.field(&c.status) {
            Some(raw) => match self.map_status(&raw) {
                Some(status) => StatusLookup::Found(AgencyStatus {
                    ma_ho_so: ma_ho_so.to_string(),
                    receipt: c.receipt.as_deref().and_then(|f| a.field(f)),
                    status,
                }),
                None => lookup_unreadable(
                    op,
                    r.status,
                    format!(
                        "{} = {raw:?} is neither 1–10 nor in callback.status_map",
                        c.status
                    ),
                    &r.body,
                ),
            },
            None => {
                let s = &self.cfg.success;
                if let (Some(field), Some(want)) = (&s.field, &s.equals)
                    && let Some(got) = a.field(field)
                    && &got != want
                {
                    return StatusLookup::Failed {
                        reason: format!(
                            "{op}: HTTP {} with {field} = {got:?}: {}",
                            r.status,
                            message(&a)
                        ),
                    };
                }
                lookup_unreadable(
                    op,
                    r.status,
                    format!("{} is not in the answer", c.status),
                    &r.body,
                )
            }
        }
    }

    fn parse_callback(&self, _: Option<&str>, body: &[u8]) -> Result<AgencyReply, CallbackError> {
        let c = &self.cfg.callback;
        let need = |f: &str| {
            self.answer_field(body, f)
                .ok_or_else(|| format!("the callback has no {f}"))
        };
        let raw = need(&c.status)?;
        let status = self
            .map_status(&raw)
            .ok_or_else(|| format!("status {raw:?} is neither 1–10 nor in status_map"))?;
        let mut result = Map::new();
        for (bus, field) in &c.result {
            if let Some(f) = field.as_str()
                && let Some(v) = self.answer_field(body, f)
            {
                result.insert(bus.clone(), json!(v));
            }
        }
        Ok(AgencyReply {
            ma_ho_so: need(&c.ma_ho_so)?,
            reference: need(&c.reference)?,
            receipt: c
                .receipt
                .as_deref()
                .and_then(|r| self.answer_field(body, r)),
            status,
            result,
            reason: c.reason.as_deref().and_then(|r| self.answer_field(body, r)),
            officer: c
                .officer
                .as_deref()
                .and_then(|r| self.answer_field(body, r)),
        }
        .cleaned())
    }

    fn results_to(&self) -> ResultsTo {
        match self.cfg.results_to.as_deref() {
            Some("sender") => ResultsTo::Sender,
            _ => ResultsTo::Origin,
        }
    }
}

impl Mapped {
    fn map_status(&self, raw: &str) -> Option<u8> {
        if let Some(v) = self.cfg.callback.status_map.get(raw) {
            return v.as_u64().map(|n| n as u8).filter(|n| (1..=10).contains(n));
        }
        raw.parse::<u8>().ok().filter(|n| (1..=10).contains(n))
    }
}
