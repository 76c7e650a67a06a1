//! edXML adapter (QCVN 102:2016) for the departments' document systems, with two transports:
//! `push` (HTTP POST of the package to the department's system) and `pull` (the package waits
//! in the bus's durable outbox, [`crate::outbox`], until the department's system lists, fetches
//! and acknowledges it, as the national document-exchange axis works).
//!
//! Registry settings of a unit with `adapter = "edxml"`: `transport = "push" | "pull"`
//! (default push); for pull, `on_fail = "retry" | "dead-letter"` (default retry) and
//! `max_fetches` (default 5): what a department's `fail` acknowledgement does.
//! The idempotency key is the package's `DocumentId`, which carries the message id
//! ([`crate::edxml::dossier::document_id`]); push requests also carry `Idempotency-Key`.
//! Results come back as status packages posted to the unit's callback URL (content type
//! `application/xml`), mapped by [`crate::edxml::StatusCode::to_bus`].
//!
//! **The push answer** follows the one rule of [`crate::adapter`]: the receipt is a status
//! package in the 2xx answer (01 arrived, 03 accepted, 04–06 as the standard lists them; 15
//! for a recall), answering this dossier; 02 (rejected) and 16 (recall refused) are permanent
//! failures with the department's `Description`. A 2xx without a status package — empty, a
//! document package, another format, a status package for another dossier or with a code the
//! standard does not list — is an unknown outcome: the package is sent again with the same
//! `DocumentId`, which a document system keeps once, until a readable answer comes. (A plain
//! 2xx is not taken as the receipt: a proxy's or load balancer's page says nothing about the
//! department's document system, and QCVN 102's status 01 is the department's own "arrived".)

use std::sync::Arc;

use async_trait::async_trait;
use lienthong_core::store::Store;
use lienthong_core::{Envelope, Kind};
use serde_json::{Map, Value};

use crate::adapter::{Adapter, AgencyRequest, Operation, ResultsTo, Setup};
use crate::error::{BuildError, CallbackError, NotDeliverable};
use crate::outcome::{AgencyReply, Outcome, StatusLookup};
use crate::edxml::{StatusCode, dossier, read, write};
use crate::http::{exchange, failure_status, snippet, unreadable};
use crate::outbox::Outbox;

/// Registry name of this adapter.
pub const NAME: &str = "edxml";

/// Header carrying the unit's callback URL on push (a lienthong convention: where to post
/// status packages; a department's system may ignore it and use its configured address).
pub const CALLBACK_HEADER: &str = "X-Lienthong-Callback-Url";

/// How packages reach the department.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// POST to the department's endpoint.
    Push,
    /// Wait in the outbox for the department to pull.
    Pull,
}

/// The adapter for one department reached over edXML.
pub struct EdxmlAdapter {
    client: crate::http::Agent,
    endpoint: String,
    callback_url: String,
    unit_code: String,
    unit_name: String,
    transport: Transport,
    outbox: Option<Outbox>,
    results_to: ResultsTo,
}

/// The adapter of a unit with `adapter = "edxml"` (its registration).
pub fn build(s: Setup<'_>) -> Result<Arc<dyn Adapter>, BuildError> {
    let mut a = EdxmlAdapter::new(
        s.client.clone(),
        &s.endpoint,
        &s.callback_url,
        &s.unit.code,
        &s.unit.name,
        s.settings,
        s.store.clone(),
    )
    .map_err(|reason| BuildError::Settings {
        unit: s.unit.code.clone(),
        reason,
    })?;
    a.results_to = s.results_to();
    Ok(Arc::new(a))
}

impl EdxmlAdapter {
    /// An adapter for the unit `unit_code` (`unit_name`), posting to `endpoint` (push) or
    /// storing into `store`'s outbox (pull).
    ///
    /// Errors: an unknown `transport` setting, or pull without a store.
    pub fn new(
        client: crate::http::Agent,
        endpoint: &str,
        callback_url: &str,
        unit_code: &str,
        unit_name: &str,
        settings: &Map<String, Value>,
        store: Option<Store>,
    ) -> Result<Self, String> {
        let transport = match settings.get("transport").and_then(Value::as_str) {
            None | Some("push") => Transport::Push,
            Some("pull") => Transport::Pull,
            Some(other) => {
                return Err(format!(
                    "edxml transport {other:?} is neither \"push\" nor \"pull\""
                ));
            }
        };
        let outbox = match (transport, store) {
            (Transport::Pull, Some(s)) => Some(Outbox::new(s).map_err(|e| e.to_string())?),
            (Transport::Pull, None) => {
                return Err("the edxml pull transport needs the bus store".into());
            }
            (Transport::Push, _) => None,
        };
        Ok(EdxmlAdapter {
            client,
            endpoint: endpoint.trim_end_matches('/').to_string(),
            callback_url: callback_url.to_string(),
            unit_code: unit_code.to_string(),
            unit_name: unit_name.to_string(),
            transport,
            outbox,
            results_to: ResultsTo::Origin,
        })
    }

    /// The transport this unit uses.
    pub fn transport(&self) -> Transport {
        self.transport
    }

    /// The package for `env` to this unit; see [`build_package`].
    pub fn package(&self, env: &Envelope) -> Result<Vec<u8>, String> {
        build_package(env, &self.unit_code, &self.unit_name)
    }

    async fn push(&self, req: &AgencyRequest) -> Outcome {
        let op = req.label;
        let request = self
            .client
            .post(&req.url)
            .header("Idempotency-Key", &req.key)
            .header(CALLBACK_HEADER, &self.callback_url)
            .header(
                reqwest::header::CONTENT_TYPE,
                "application/xml; charset=utf-8",
            )
            .body(req.body.clone());
        let r = match exchange(&self.client, op, request).await {
            Ok(r) => r,
            Err(o) => return o,
        };
        if !r.status.is_success() {
            let reason = read::read_bytes(&r.body)
                .ok()
                .and_then(|p| p.message_header.description)
                .unwrap_or_else(|| snippet(&r.body));
            return failure_status(op, r.status, &r.headers, reason);
        }
        push_answer(op, r.status, &r.body, &req.ma_ho_so)
    }
}

/// A department's 2xx answer to a pushed package for dossier `ma_ho_so`, under the one rule
/// (see the module documentation): a status package is the receipt, 02 and 16 refusals;
/// anything else is unknown.
pub fn push_answer(op: &str, status: reqwest::StatusCode, body: &[u8], ma_ho_so: &str) -> Outcome {
    let p = match read::read_bytes(body) {
        Ok(p) => p,
        Err(e) => {
            return unreadable(
                op,
                status,
                format!("the body is not an edXML status package ({e})"),
                body,
            );
        }
    };
    let h = &p.message_header;
    let Some(code) = h.status_code.as_ref().filter(|c| !c.0.is_empty()) else {
        return unreadable(
            op,
            status,
            "the answer is an edXML package without MessageHeader/StatusCode (not a status package)",
            body,
        );
    };
    if let Some((_, _, ma, _)) = h
        .response_for
        .iter()
        .find_map(|r| r.document_id.as_deref())
        .and_then(dossier::split_document_id)
        && ma != ma_ho_so
    {
        return unreadable(
            op,
            status,
            format!("the status package answers dossier {ma}, not {ma_ho_so}"),
            body,
        );
    }
    let description = h.description.clone().unwrap_or_default();
    match code.0.as_str() {
        StatusCode::REJECTED => Outcome::Permanent {
            reason: format!("{op}: the department rejected the package (02): {description}"),
        },
        StatusCode::RECALL_REFUSED => Outcome::Permanent {
            reason: format!("{op}: the department refused the recall (16): {description}"),
        },
        c => match code.meaning() {
            Some(m) => Outcome::Delivered {
                receipt: format!("edXML {c} {m}"),
            },
            None => unreadable(
                op,
                status,
                format!("the status package's StatusCode {c:?} is not one QCVN 102 lists"),
                body,
            ),
        },
    }
}

/// The package for `env` to the unit `unit_code` (`unit_name`): a document package for a
/// forward, a status package with 13 (recall requested) for a withdrawal (7) or a stop (8),
/// answering the forward the status was caused by.
///
/// Errors: another kind or status (named), or the package could not be written.
pub fn build_package(env: &Envelope, unit_code: &str, unit_name: &str) -> Result<Vec<u8>, String> {
    match env.kind.as_str() {
        Kind::FORWARD => dossier::build(env, unit_code, unit_name)
            .map_err(|e| format!("cannot build the edXML package: {e}")),
        Kind::STATUS => {
            let code = env
                .status
                .and_then(StatusCode::from_bus)
                .filter(|c| c.0 == StatusCode::RECALL_REQUESTED)
                .ok_or_else(|| {
                    format!(
                        "the edXML interface takes a dossier.status only for 7 (withdrawn) or 8 (stopped), not {:?}",
                        env.status.map(|s| s.0)
                    )
                })?;
            // The recall answers the forward this status follows; its date is not known here,
            // so the status's own date is used (stable across retries of this message).
            let vn = chrono::FixedOffset::east_opt(7 * 3600).ok_or("offset")?;
            let when = chrono::DateTime::parse_from_rfc3339(&env.sent_at)
                .map_err(|e| format!("sent_at {:?} is not an RFC 3339 time ({e})", env.sent_at))?
                .with_timezone(&vn);
            let date = when.format("%Y/%m/%d").to_string();
            let mut about = env.clone();
            if let Some(c) = &env.causation_id {
                about.message_id = c.clone();
            }
            let mut pkg = dossier::status_package(
                &env.sender,
                &dossier::document_id(&about, &date),
                &code.0,
                env.payload
                    .reason
                    .as_deref()
                    .unwrap_or("Đề nghị thu hồi hồ sơ"),
                "",
            );
            // Stamped with the envelope's time, not the clock: every attempt sends the same bytes.
            pkg.message_header.timestamp = Some(when.format("%Y/%m/%d %H:%M:%S").to_string());
            write::write(&pkg, Vec::new(), Vec::new())
                .map(|(b, _)| b)
                .map_err(|e| e.to_string())
        }
        other => Err(format!("the edXML interface has no operation for {other}")),
    }
}

#[async_trait]
impl Adapter for EdxmlAdapter {
    fn name(&self) -> &'static str {
        NAME
    }

    fn interface(&self) -> &'static str {
        "the edXML interface"
    }

    fn operations(&self) -> &'static [Operation] {
        &[Operation::Submit, Operation::Cancel]
    }

    /// The package ([`build_package`]): pushed to `{endpoint}` or put in the outbox (pull).
    fn request(&self, op: Operation, env: &Envelope) -> Result<AgencyRequest, NotDeliverable> {
        let body = self
            .package(env)
            .map_err(|reason| NotDeliverable::Unmappable {
                document: "an edXML package",
                reason,
            })?;
        let label = match op {
            Operation::Submit => "edXML push",
            _ => "edXML recall",
        };
        let mut req = AgencyRequest::new(op, label, self.endpoint.clone(), env, body);
        if self.transport == Transport::Pull {
            req.envelope = Some(Arc::new(env.clone()));
        }
        Ok(req)
    }

    async fn send(&self, req: &AgencyRequest) -> Outcome {
        match (&self.transport, &self.outbox) {
            (Transport::Pull, Some(outbox)) => {
                let Some(env) = req.envelope.as_deref() else {
                    return Outcome::Permanent {
                        reason: "the edXML pull request was prepared without its envelope".into(),
                    };
                };
                let body = req.body.clone();
                let doc = read::read_bytes(&body)
                    .ok()
                    .and_then(|p| {
                        p.message_header.document_id.or_else(|| {
                            p.message_header
                                .response_for
                                .first()
                                .and_then(|r| r.document_id.clone())
                        })
                    })
                    .unwrap_or_default();
                // In the process's group commit.
                match outbox.put(&self.unit_code, env, &doc, body.to_vec()).await {
                    Ok(()) => Outcome::Delivered {
                        receipt: "in the edXML outbox, waiting for the department to pull it"
                            .into(),
                    },
                    Err(e) => Outcome::Transient {
                        reason: format!("the outbox did not take the package: {e}"),
                        retry_after: None,
                    },
                }
            }
            _ => self.push(req).await,
        }
    }

    /// Not supported: an unknown outcome is resolved by sending again with the same
    /// `DocumentId`. (So `lienthong check` skips the test call.)
    async fn status(&self, _ma_ho_so: &str) -> StatusLookup {
        StatusLookup::NotSupported {
            reason: match self.transport {
                Transport::Push => "edXML push has no status lookup and no harmless test call (reachability and TLS were checked); an unknown outcome is resolved by sending again with the same DocumentId".into(),
                Transport::Pull => "pull: nothing to call; the department's system calls the bus (GET /v1/edxml/<unit>/packages)".into(),
            },
        }
    }

    fn parse_callback(
        &self,
        _content_type: Option<&str>,
        body: &[u8],
    ) -> Result<AgencyReply, CallbackError> {
        let pkg = read::read_bytes(body).map_err(|e| CallbackError::Format(e.to_string()))?;
        Ok(dossier::reply_from_status(&pkg)?)
    }

    fn results_to(&self) -> ResultsTo {
        self.results_to
    }
}
