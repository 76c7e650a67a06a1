//! The config-only adapter (`mapped`): an agency that takes one JSON, XML or SOAP document
//! per dossier over HTTP is connected with configuration alone — a field mapping from the
//! envelope to the agency's document (nested, in namespaces, with lists, date formats and code
//! tables), the rule that tells success from failure (SOAP faults included), the status lookup,
//! and the mapping of its callback back to bus terms. See `adapters/README.md` ("connect a new
//! agency in an hour") for the settings and worked examples; write a Rust adapter instead when
//! the agency needs more (several calls per delivery, signatures, sessions).
//!
//! One concern per file: [`config`] (the settings and their compiled form), `document` (the
//! request), `answer` (reading answers and callbacks); this file sends and classifies.
//! Only `dossier.forward` is delivered (a submit); the idempotency key is the envelope's
//! `message_id`, sent as `Idempotency-Key`.

mod answer;
pub mod config;
mod document;

use std::sync::Arc;

use async_trait::async_trait;
use lienthong_core::Envelope;
use reqwest::StatusCode;
use reqwest::header::HeaderMap;
use serde_json::{Map, Value, json};

use self::answer::{Answer, read_field};
use self::config::Compiled;
pub use self::config::{Callback, FaultsConfig, FieldSpec, LookupConfig, MappedConfig, Success};
use self::document::{Item, Vars};
use crate::adapter::{Adapter, AgencyRequest, Operation, ResultsTo, Setup};
use crate::error::{BuildError, CallbackError, NotDeliverable};
use crate::http::{
    exchange, failure_status, lookup_failed, lookup_unreadable, snippet, unreadable,
};
use crate::outcome::{AgencyReply, AgencyStatus, Outcome, StatusLookup};
use crate::path::Path;

/// Registry name of this adapter.
pub const NAME: &str = "mapped";

/// A mapped agency.
pub struct Mapped {
    client: crate::http::Agent,
    endpoint: String,
    callback_url: String,
    cfg: MappedConfig,
    c: Compiled,
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

impl Mapped {
    /// An adapter from the unit's settings.
    ///
    /// Errors: settings that do not parse, or name an unknown format, variable, prefix, date
    /// pattern or code table; a path that does not parse (each naming the setting).
    pub fn new(
        client: crate::http::Agent,
        endpoint: &str,
        callback_url: &str,
        settings: &Map<String, Value>,
    ) -> Result<Self, String> {
        let cfg: MappedConfig = serde_json::from_value(Value::Object(settings.clone()))
            .map_err(|e| format!("mapped adapter settings: {e}"))?;
        let c = cfg.compile()?;
        Ok(Mapped {
            client,
            endpoint: endpoint.trim_end_matches('/').to_string(),
            callback_url: callback_url.to_string(),
            cfg,
            c,
        })
    }

    fn items(&self, env: &Envelope) -> Result<Vec<(String, Item)>, String> {
        let v = serde_json::to_value(env).map_err(|e| e.to_string())?;
        let vars = Vars {
            callback_url: &self.callback_url,
            env: &v,
        };
        document::items(&self.c, &vars)
    }

    /// The agency's fields for `env`, in configuration order: (dotted name, value; a list is
    /// an array).
    ///
    /// Errors: a required value missing, or a transform that cannot apply (naming the field).
    pub fn fields(&self, env: &Envelope) -> Result<Vec<(String, Value)>, String> {
        Ok(self
            .items(env)?
            .into_iter()
            .map(|(n, i)| (n, i.to_json()))
            .collect())
    }

    /// The submit body for `env`: JSON, XML, or XML in a SOAP envelope.
    ///
    /// Errors: as [`Mapped::fields`], and a name given both as a value and as a group.
    pub fn body(&self, env: &Envelope) -> Result<Vec<u8>, String> {
        let tree = document::tree(&self.c, self.items(env)?)?;
        let root = self.cfg.xml_root.as_deref().unwrap_or_default();
        document::write(&self.c, root, &tree)
    }

    fn read(&self, body: &[u8]) -> Result<Answer, String> {
        Answer::read(&self.c, self.cfg.xml_root.as_deref(), body)
    }

    /// The agency's words in an answer (`success.message`), else the body's excerpt.
    fn message(&self, a: Option<&Answer>, body: &[u8]) -> String {
        a.zip(self.c.success_message.as_ref())
            .and_then(|(a, m)| a.field(m))
            .unwrap_or_else(|| snippet(body))
    }

    /// The submit answer under the one rule, as `send` classifies it (public for the fuzz
    /// target `agency_answers`). With `soap`, a fault decides first ([`crate::soap`]), whatever
    /// the status but those the HTTP front end answers ([`crate::soap::status_decides`]). A
    /// status among the success statuses: a body that does not read in the configured format,
    /// or lacks the configured `success.field` or `success.receipt`, is unknown;
    /// `success.field` with another value than `equals` is a permanent failure with the
    /// agency's `message`; with neither field nor receipt configured, an empty body is the
    /// receipt (`HTTP <status>`). Another 2xx is unknown; another status fails by status.
    pub fn submit_answer(&self, status: StatusCode, body: &[u8]) -> Outcome {
        self.classify(status, &HeaderMap::new(), body)
    }

    fn classify(&self, status: StatusCode, headers: &HeaderMap, body: &[u8]) -> Outcome {
        let op = "submit";
        let answer = self.read(body);
        let fault = answer.as_ref().ok().and_then(|a| a.fault(&self.c));
        if let Some(f) = &fault
            && !crate::soap::status_decides(status)
        {
            return f.outcome(op, status, headers, body, &self.c.faults);
        }
        let s = &self.cfg.success;
        let listed =
            s.statuses.is_empty() && status.is_success() || s.statuses.contains(&status.as_u16());
        if listed {
            return self.success_rule(status, body, answer);
        }
        if status.is_success() {
            return unreadable(
                op,
                status,
                format!("the status is not among success.statuses {:?}", s.statuses),
                body,
            );
        }
        let message = match &fault {
            Some(f) => f.describe(&self.c.faults),
            None => self.message(answer.as_ref().ok(), body),
        };
        failure_status(op, status, headers, message)
    }

    fn success_rule(
        &self,
        status: StatusCode,
        body: &[u8],
        answer: Result<Answer, String>,
    ) -> Outcome {
        let op = "submit";
        let s = &self.cfg.success;
        if body.is_empty() && s.field.is_none() && s.receipt.is_none() {
            return Outcome::Delivered {
                receipt: format!("HTTP {}", status.as_u16()),
            };
        }
        let answer = match answer {
            Ok(a) => a,
            Err(what) => return unreadable(op, status, what, body),
        };
        if let (Some(field), Some(want)) = (&self.c.success_field, &s.equals) {
            match answer.field(field) {
                Some(got) if &got == want => {}
                Some(got) => {
                    let message = self.message(Some(&answer), body);
                    return Outcome::Permanent {
                        reason: format!(
                            "{op}: HTTP {status} with {} = {got:?} (success is {want:?}): {message}",
                            field.text()
                        ),
                    };
                }
                None => {
                    return unreadable(
                        op,
                        status,
                        format!("{} is not in the answer", field.text()),
                        body,
                    );
                }
            }
        }
        match &self.c.success_receipt {
            None => Outcome::Delivered {
                receipt: format!("HTTP {}", status.as_u16()),
            },
            Some(r) => match answer.field(r).filter(|x| !x.is_empty()) {
                Some(receipt) => Outcome::Delivered { receipt },
                None => unreadable(
                    op,
                    status,
                    format!("the receipt {} is not in the answer", r.text()),
                    body,
                ),
            },
        }
    }

    /// A POST of `body` with the format's headers (SOAP: its content type and action).
    fn post(&self, url: &str, body: bytes::Bytes, action: Option<&str>) -> reqwest::RequestBuilder {
        let mut rb = self.client.post(url).body(body);
        match self.c.soap {
            Some(v) => {
                for (k, val) in v.headers(action) {
                    rb = rb.header(k, val);
                }
            }
            None => {
                let ct = if self.c.xml {
                    "application/xml; charset=utf-8"
                } else {
                    "application/json"
                };
                rb = rb.header(reqwest::header::CONTENT_TYPE, ct);
            }
        }
        rb
    }

    fn map_status(&self, raw: &str) -> Option<u8> {
        if let Some(v) = self.cfg.callback.status_map.get(raw) {
            return v.as_u64().map(|n| n as u8).filter(|n| (1..=10).contains(n));
        }
        raw.parse::<u8>().ok().filter(|n| (1..=10).contains(n))
    }

    /// A lookup answer's status at `path` (and receipt) as found, or unreadable.
    fn found(
        &self,
        a: &Answer,
        status_at: &Path,
        receipt_at: Option<&Path>,
        ma_ho_so: &str,
        r: &crate::http::Reply,
    ) -> Option<StatusLookup> {
        let op = "status lookup";
        let raw = a.field(status_at)?;
        Some(match self.map_status(&raw) {
            Some(status) => StatusLookup::Found(AgencyStatus {
                ma_ho_so: ma_ho_so.to_string(),
                receipt: receipt_at.and_then(|p| a.field(p)),
                status,
            }),
            None => lookup_unreadable(
                op,
                r.status,
                format!(
                    "{} = {raw:?} is neither 1–10 nor in callback.status_map",
                    status_at.text()
                ),
                &r.body,
            ),
        })
    }

    /// The SOAP status lookup: the `lookup` operation with the dossier code; a fault whose
    /// code is among `not_found` is not found, another fault failed.
    async fn soap_status(&self, l: &LookupConfig, ma_ho_so: &str) -> StatusLookup {
        let op = "status lookup";
        let tree = vec![(l.key.clone(), Item::Scalar(json!(ma_ho_so)))];
        let body = match document::write(&self.c, &l.operation, &tree) {
            Ok(b) => b,
            Err(e) => {
                return StatusLookup::Failed {
                    reason: format!("{op}: {e}"),
                };
            }
        };
        let path = l.path.as_deref().unwrap_or(&self.cfg.submit_path);
        let url = format!("{}{path}", self.endpoint);
        let rb = self.post(&url, body.into(), l.soap_action.as_deref());
        let r = match exchange(&self.client, op, rb).await {
            Ok(r) => r,
            Err(o) => return lookup_failed(o),
        };
        let answer = Answer::read(&self.c, None, &r.body);
        if let Some(f) = answer.as_ref().ok().and_then(|a| a.fault(&self.c)) {
            let what = f.describe(&self.c.faults);
            if f.keys(&self.c.faults)
                .iter()
                .any(|k| l.not_found.contains(k))
            {
                return StatusLookup::NotFound { reason: what };
            }
            return lookup_failed(if crate::soap::status_decides(r.status) {
                failure_status(op, r.status, &r.headers, what)
            } else {
                Outcome::Permanent {
                    reason: format!("{op}: HTTP {} with {what}", r.status),
                }
            });
        }
        if !r.status.is_success() {
            return lookup_failed(failure_status(op, r.status, &r.headers, snippet(&r.body)));
        }
        let a = match answer {
            Ok(a) => a,
            Err(what) => return lookup_unreadable(op, r.status, what, &r.body),
        };
        let (Some(at), receipt) = (&self.c.lookup_status, self.c.lookup_receipt.as_ref()) else {
            return StatusLookup::NotSupported {
                reason: "no lookup.status".into(),
            };
        };
        self.found(&a, at, receipt, ma_ho_so, &r)
            .unwrap_or_else(|| {
                lookup_unreadable(
                    op,
                    r.status,
                    format!("{} is not in the answer", at.text()),
                    &r.body,
                )
            })
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
        let body = self
            .body(env)
            .map_err(|reason| NotDeliverable::Unmappable {
                document: "the agency's document",
                reason,
            })?;
        let url = format!("{}{}", self.endpoint, self.cfg.submit_path);
        Ok(AgencyRequest::new(op, "submit", url, env, body))
    }

    async fn send(&self, req: &AgencyRequest) -> Outcome {
        let request = self
            .post(&req.url, req.body.clone(), self.cfg.soap_action.as_deref())
            .header("Idempotency-Key", &req.key);
        match exchange(&self.client, "submit", request).await {
            Ok(r) => self.classify(r.status, &r.headers, &r.body),
            Err(o) => o,
        }
    }

    /// With `soap`: the `lookup` operation ([`LookupConfig`]). Otherwise `GET
    /// {endpoint}{status_path}` (with `{ma_ho_so}` replaced): a 2xx in the configured format
    /// whose `callback.status` field gives 1–10 (directly or through `status_map`) is found; a
    /// 404 in the configured format is not found; a 2xx that does not read, lacks the status
    /// field or has a value the mapping does not know is unreadable; a 2xx whose
    /// `success.field` says failure, and every other failure, is failed. Without either: not
    /// supported.
    async fn status(&self, ma_ho_so: &str) -> StatusLookup {
        if let Some(l) = &self.cfg.lookup {
            return self.soap_status(l, ma_ho_so).await;
        }
        let Some(path) = &self.cfg.status_path else {
            return StatusLookup::NotSupported {
                reason:
                    "no status_path (or, with soap, lookup) configured: reachability and TLS only"
                        .into(),
            };
        };
        let op = "status lookup";
        let url = format!("{}{}", self.endpoint, path.replace("{ma_ho_so}", ma_ho_so));
        let r = match exchange(&self.client, op, self.client.get(&url)).await {
            Ok(r) => r,
            Err(o) => return lookup_failed(o),
        };
        let answer = self.read(&r.body);
        if r.status == StatusCode::NOT_FOUND
            && let Ok(a) = &answer
        {
            return StatusLookup::NotFound {
                reason: self.message(Some(a), &r.body),
            };
        }
        if !r.status.is_success() {
            let reason = self.message(answer.as_ref().ok(), &r.body);
            return lookup_failed(failure_status(op, r.status, &r.headers, reason));
        }
        let a = match answer {
            Ok(a) => a,
            Err(what) => return lookup_unreadable(op, r.status, what, &r.body),
        };
        let c = &self.c;
        if let Some(found) = self.found(&a, &c.cb_status, c.cb_receipt.as_ref(), ma_ho_so, &r) {
            return found;
        }
        if let (Some(field), Some(want)) = (&c.success_field, &self.cfg.success.equals)
            && let Some(got) = a.field(field)
            && &got != want
        {
            return StatusLookup::Failed {
                reason: format!(
                    "{op}: HTTP {} with {} = {got:?}: {}",
                    r.status,
                    field.text(),
                    self.message(Some(&a), &r.body)
                ),
            };
        }
        lookup_unreadable(
            op,
            r.status,
            format!("{} is not in the answer", c.cb_status.text()),
            &r.body,
        )
    }

    fn parse_callback(&self, _: Option<&str>, body: &[u8]) -> Result<AgencyReply, CallbackError> {
        let c = &self.c;
        let a = self.read(body).map_err(CallbackError::Format)?;
        let need = |p: &Path| {
            a.field(p)
                .ok_or_else(|| format!("the callback has no {}", p.text()))
        };
        let opt = |p: &Option<Path>| p.as_ref().and_then(|p| a.field(p));
        let raw = need(&c.cb_status)?;
        let status = self
            .map_status(&raw)
            .ok_or_else(|| format!("status {raw:?} is neither 1–10 nor in status_map"))?;
        let mut result = Map::new();
        let doc = a.doc();
        for (bus, f) in &c.cb_result {
            if let Some(v) = read_field(&doc, f).map_err(|e| format!("result.{bus}: {e}"))? {
                result.insert(bus.clone(), v);
            }
        }
        Ok(AgencyReply {
            ma_ho_so: need(&c.cb_ma_ho_so)?,
            reference: need(&c.cb_reference)?,
            receipt: opt(&c.cb_receipt),
            status,
            result,
            reason: opt(&c.cb_reason),
            officer: opt(&c.cb_officer),
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
