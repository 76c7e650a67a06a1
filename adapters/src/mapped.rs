//! The config-only adapter (`mapped`): an agency that takes JSON or flat XML over HTTP is
//! connected with configuration alone — a field mapping from the envelope to the agency's
//! document and from its callback back to bus terms, and the rule that tells success from
//! failure. See `adapters/README.md` ("connect a new agency in an hour") for the settings and a
//! worked example; write a Rust adapter instead when the agency needs more (several calls per
//! delivery, nested XML answers, signatures, sessions).
//!
//! Only `dossier.forward` is delivered (a submit); the idempotency key is the envelope's
//! `message_id`, sent as `Idempotency-Key`.

use async_trait::async_trait;
use lienthong_core::{Envelope, Kind};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::adapter::{Adapter, AgencyReply, AgencyStatus, Outcome};
use crate::http::SendVia;
use crate::http::{Probe, failure_status, probe_get, snippet, transport_error};
use crate::xml::{Builder, read_flat};

/// Registry name of this adapter.
pub const NAME: &str = "mapped";

/// How one field of the agency's document is filled.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum Source {
    /// `"/payload/applicant/ho_ten"` (a JSON pointer into the envelope) or a variable:
    /// `$callback_url`, `$now` (yyyyMMddHHmmss, Vietnam time), `$message_id`.
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
    /// Accepted and ignored here: connection options, `results_to` (read elsewhere).
    #[serde(default)]
    pub connection: Option<Value>,
    /// See above.
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
            "$now" => Some(json!(lienthong_core::clock::to_dvcqg(chrono::Utc::now()))),
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
        if self.cfg.format == "json" {
            let v: Value = serde_json::from_slice(body).ok()?;
            pointer(&v, field).map(text)
        } else {
            let f = read_flat(body, self.cfg.xml_namespace.as_deref().unwrap_or("")).ok()?;
            f.get(field.trim_start_matches('/')).map(str::to_string)
        }
    }
}

#[async_trait]
impl Adapter for Mapped {
    fn name(&self) -> &'static str {
        NAME
    }

    fn check(&self, env: &Envelope) -> Result<(), String> {
        match env.kind.as_str() {
            Kind::FORWARD => self.body(env).map(|_| ()),
            other => Err(format!(
                "a mapped agency takes dossier.forward only, not {other}"
            )),
        }
    }

    async fn deliver(&self, env: &Envelope) -> Outcome {
        if env.kind.as_str() != Kind::FORWARD {
            return Outcome::Permanent {
                reason: format!(
                    "a mapped agency takes dossier.forward only, not {}",
                    env.kind.0
                ),
            };
        }
        let body = match self.body(env) {
            Ok(b) => b,
            Err(reason) => {
                return Outcome::Permanent {
                    reason: format!("cannot map the envelope: {reason}"),
                };
            }
        };
        let ct = if self.cfg.format == "json" {
            "application/json"
        } else {
            "application/xml; charset=utf-8"
        };
        let url = format!("{}{}", self.endpoint, self.cfg.submit_path);
        let resp = match self
            .client
            .post(&url)
            .header("Idempotency-Key", &env.message_id)
            .header(reqwest::header::CONTENT_TYPE, ct)
            .body(body)
            .send_via(&self.client)
            .await
        {
            Ok(r) => r,
            Err(e) => return e.outcome("submit"),
        };
        let status = resp.status();
        let headers = resp.headers().clone();
        let bytes = match resp.bytes().await {
            Ok(b) => b,
            Err(e) => return transport_error("submit", &e),
        };
        let s = &self.cfg.success;
        let message = s
            .message
            .as_deref()
            .and_then(|m| self.answer_field(&bytes, m))
            .unwrap_or_else(|| snippet(&bytes));
        let status_ok = if s.statuses.is_empty() {
            status.is_success()
        } else {
            s.statuses.contains(&status.as_u16())
        };
        if !status_ok {
            return failure_status("submit", status, &headers, message);
        }
        if let (Some(field), Some(want)) = (&s.field, &s.equals) {
            match self.answer_field(&bytes, field) {
                Some(got) if &got == want => {}
                Some(got) => {
                    return Outcome::Permanent {
                        reason: format!(
                            "submit: HTTP {status} with {field} = {got:?} (success is {want:?}): {message}"
                        ),
                    };
                }
                None => {
                    return Outcome::Unknown {
                        reason: format!(
                            "submit: HTTP {status} but {field} is not in the answer: {}",
                            snippet(&bytes)
                        ),
                    };
                }
            }
        }
        let receipt = s
            .receipt
            .as_deref()
            .and_then(|r| self.answer_field(&bytes, r))
            .unwrap_or_else(|| format!("HTTP {}", status.as_u16()));
        Outcome::Delivered { receipt }
    }

    async fn probe(&self) -> Probe {
        let Some(path) = &self.cfg.status_path else {
            return Probe::NotSupported(
                "no status_path configured: reachability and TLS only".into(),
            );
        };
        let url = format!(
            "{}{}",
            self.endpoint,
            path.replace("{ma_ho_so}", crate::adapter::PROBE_MA_HO_SO)
        );
        let json = self.cfg.format == "json";
        let ns = self.cfg.xml_namespace.clone().unwrap_or_default();
        probe_get(&self.client, &url, move |status, body| {
            // A 404 from a wrong route has no body in the agency's format: only a readable one
            // shows that the status path reached the agency's interface.
            let readable = if json {
                serde_json::from_slice::<Value>(body).is_ok_and(|v| v.is_object())
            } else {
                read_flat(body, &ns).is_ok()
            };
            if (status.as_u16() == 404 || status.is_success()) && readable {
                Ok(format!(
                    "status lookup answered HTTP {} in the agency's format",
                    status.as_u16()
                ))
            } else {
                Err("the answer is not in the agency's format: is status_path right?".into())
            }
        })
        .await
    }

    async fn status(&self, ma_ho_so: &str) -> Result<AgencyStatus, String> {
        let path = self
            .cfg
            .status_path
            .as_deref()
            .ok_or("no status_path configured")?;
        let url = format!("{}{}", self.endpoint, path.replace("{ma_ho_so}", ma_ho_so));
        let bytes = self
            .client
            .get(&url)
            .send_via(&self.client)
            .await
            .map_err(|e| e.to_string())?
            .bytes()
            .await
            .map_err(|e| e.to_string())?;
        let c = &self.cfg.callback;
        let status = self
            .answer_field(&bytes, &c.status)
            .and_then(|s| self.map_status(&s))
            .unwrap_or(0);
        Ok(AgencyStatus {
            ma_ho_so: ma_ho_so.to_string(),
            receipt: c
                .receipt
                .as_deref()
                .and_then(|r| self.answer_field(&bytes, r)),
            status,
        })
    }

    fn parse_callback(&self, _: Option<&str>, body: &[u8]) -> Result<AgencyReply, String> {
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
        })
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
