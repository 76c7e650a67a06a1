//! The adapter contract: which operation an envelope asks of an agency (written once, here),
//! the request an adapter builds for it once ([`AgencyRequest`], the same bytes on every
//! attempt), sending that request and classifying the answer ([`Outcome`], under the one rule
//! of [`crate::outcome`]), the status lookup, the harmless test call of `lienthong check`, and
//! reading the agency's callbacks back into bus terms. The retry machinery is not here: the
//! bus's delivery component drives [`Adapter::prepare`] once and [`Adapter::send`] per attempt.

use async_trait::async_trait;
use bytes::Bytes;
use lienthong_core::registry::Unit;
use lienthong_core::{Envelope, Kind, TrangThaiHoSo};
use serde_json::{Map, Value};

use crate::error::{CallbackError, NotDeliverable};
use crate::outcome::{AgencyReply, Outcome, PROBE_MA_HO_SO, Probe, StatusLookup};

/// What an envelope asks of an agency. Decided by [`Operation::of`] for every adapter alike.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Operation {
    /// A `dossier.forward`: hand the dossier to the agency.
    Submit,
    /// A `dossier.status` 7 (withdrawn) or 8 (stopped): cancel the dossier at the agency. A
    /// readable "not found" is delivered ([`cancel_outcome`]).
    Cancel,
    /// Any other `dossier.status`, or a `dossier.result`: the dossier's progress (only the
    /// national portal sync takes it).
    Progress,
    /// Any message, handed on as the bus carries it: a unit's webhook
    /// ([`crate::agencies::webhook`]), which takes every kind. [`Operation::of`] never gives it.
    Push,
}

impl Operation {
    /// The operation `env` means: forward → submit; status 7 or 8 → cancel; another status or
    /// a result → progress; any other kind → `None`.
    pub fn of(env: &Envelope) -> Option<Operation> {
        match env.kind.as_str() {
            Kind::FORWARD => Some(Operation::Submit),
            Kind::STATUS
                if matches!(
                    env.status,
                    Some(TrangThaiHoSo::WITHDRAWN) | Some(TrangThaiHoSo::STOPPED)
                ) =>
            {
                Some(Operation::Cancel)
            }
            Kind::STATUS | Kind::RESULT => Some(Operation::Progress),
            _ => None,
        }
    }

    /// The messages that mean this operation, in words (for reasons).
    pub fn messages(self) -> &'static str {
        match self {
            Operation::Submit => "dossier.forward",
            Operation::Cancel => "dossier.status 7 or 8 as a cancel",
            Operation::Progress => "dossier.result and other dossier.status as progress",
            Operation::Push => "every message, as the bus carries it",
        }
    }
}

/// One request to an agency, built once per message by [`Adapter::prepare`] and sent as is
/// on every attempt: the same bytes under the same idempotency key.
#[derive(Debug, Clone, PartialEq)]
pub struct AgencyRequest {
    /// What it asks.
    pub operation: Operation,
    /// The operation's name in the agency's terms, for reasons (`submit`, `cancel`,
    /// `payment confirmation`, `edXML push`).
    pub label: &'static str,
    /// Where it goes: the full URL (empty when the adapter does not call a URL, e.g. the edXML
    /// pull transport's outbox).
    pub url: String,
    /// The idempotency key (the envelope's `message_id`), sent as `Idempotency-Key`.
    pub key: String,
    /// The dossier (MaHoSo).
    pub ma_ho_so: String,
    /// The document, byte-exact (JSON or XML, per the interface).
    pub body: Bytes,
    /// The envelope itself, kept only by adapters that store it with the document (the edXML
    /// pull outbox, which hands it back on a department's `fail`); never used to build a
    /// document at send time.
    pub envelope: Option<std::sync::Arc<Envelope>>,
}

impl AgencyRequest {
    /// A request for `env` with the key and dossier taken from it.
    pub fn new(
        operation: Operation,
        label: &'static str,
        url: String,
        env: &Envelope,
        body: impl Into<Bytes>,
    ) -> AgencyRequest {
        AgencyRequest {
            operation,
            label,
            url,
            key: env.message_id.clone(),
            ma_ho_so: env.ma_ho_so.clone(),
            body: body.into(),
            envelope: None,
        }
    }
}

/// Who gets an agency's callbacks (results and statuses).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ResultsTo {
    /// The dossier's centre (its origin unit), else the sender.
    #[default]
    Origin,
    /// The unit that sent the message (unit setting `results_to = "sender"`: Tax answers the
    /// land registration office that sent the form).
    Sender,
}

/// What an adapter is built from: the unit, its HTTP client, its endpoint and callback URL,
/// its registry settings and the bus's store.
pub struct Setup<'a> {
    /// The unit the adapter reaches.
    pub unit: &'a Unit,
    /// The unit's HTTP client (timeouts, TLS, authentication).
    pub client: crate::http::Agent,
    /// The agency's base URL, without a trailing `/`.
    pub endpoint: String,
    /// Where the agency posts results: `<bus base>/v1/callbacks/<unit code>`.
    pub callback_url: String,
    /// `[units.reach.settings]`.
    pub settings: &'a Map<String, Value>,
    /// The bus's store, for adapters that keep state (the edXML pull outbox).
    pub store: Option<lienthong_core::store::Store>,
}

impl Setup<'_> {
    /// The unit setting `results_to` (`"sender"`, else the dossier's centre).
    pub fn results_to(&self) -> ResultsTo {
        match self.settings.get("results_to").and_then(Value::as_str) {
            Some("sender") => ResultsTo::Sender,
            _ => ResultsTo::Origin,
        }
    }
}

/// An agency adapter: one per agency interface, in `src/agencies/`. Implementations hold
/// their HTTP client and settings; the idempotency key of every call is the envelope's
/// `message_id`.
#[async_trait]
pub trait Adapter: Send + Sync {
    /// Adapter name as used in the registry (`police-rest`).
    fn name(&self) -> &'static str;

    /// The interface as reasons name it ("the police residence interface").
    fn interface(&self) -> &'static str;

    /// The operations this interface has.
    fn operations(&self) -> &'static [Operation];

    /// Build the request of `op` (one of [`Adapter::operations`]) for `env`: the document, its
    /// URL and key. Pure: no call to the agency, no clock (times come from the envelope).
    ///
    /// Errors: the envelope lacks what the document needs ([`NotDeliverable::Unmappable`]).
    fn request(&self, op: Operation, env: &Envelope) -> Result<AgencyRequest, NotDeliverable>;

    /// The request for `env`, built once per message: the operation it asks
    /// ([`Operation::of`]), refused when the interface has no such operation, then
    /// [`Adapter::request`].
    fn prepare(&self, env: &Envelope) -> Result<AgencyRequest, NotDeliverable> {
        match Operation::of(env) {
            Some(op) if self.operations().contains(&op) => self.request(op, env),
            _ => Err(NotDeliverable::NoOperation {
                interface: self.interface(),
                kind: env.kind.0.clone(),
                status: env.status.map(|s| s.0),
                takes: self
                    .operations()
                    .iter()
                    .map(|o| o.messages())
                    .collect::<Vec<_>>()
                    .join(", and "),
            }),
        }
    }

    /// One attempt: send `req` and classify the answer. Every attempt of a message sends the
    /// same `req`.
    async fn send(&self, req: &AgencyRequest) -> Outcome;

    /// One attempt as the bus counts it: [`Adapter::send`], with the one rule every adapter's
    /// cancel follows applied ([`cancel_outcome`]: an agency that does not hold the dossier
    /// has nothing to cancel). What the retry engine calls; not meant to be overridden.
    async fn attempt(&self, req: &AgencyRequest) -> Outcome {
        let o = self.send(req).await;
        match req.operation {
            Operation::Cancel => cancel_outcome(o),
            _ => o,
        }
    }

    /// One attempt without retries: [`Adapter::prepare`] then [`Adapter::attempt`]; an envelope
    /// that cannot be expressed is a permanent failure with the reason. (Tests and tools; the
    /// bus prepares once and sends per attempt.)
    async fn deliver(&self, env: &Envelope) -> Outcome {
        match self.prepare(env) {
            Ok(req) => self.attempt(&req).await,
            Err(e) => Outcome::Permanent {
                reason: e.to_string(),
            },
        }
    }

    /// Look the dossier up at the agency (used when an outcome was unknown).
    async fn status(&self, ma_ho_so: &str) -> StatusLookup;

    /// A harmless test call for `lienthong check` (the letter's trial run of the connections).
    /// Default: the status lookup of [`PROBE_MA_HO_SO`], a dossier that cannot exist, whose
    /// answer must be the agency's readable "not found" — the same lookup, read by the same
    /// code, as the worker uses to resolve an unknown outcome, so the check is never stricter
    /// or looser than the real work.
    async fn probe(&self) -> Probe {
        Probe::from_lookup(self.status(PROBE_MA_HO_SO).await)
    }

    /// Read a callback body (the agency's result, posted to `/v1/callbacks/<unit>`) into bus
    /// terms. `content_type` is the request's Content-Type, if any.
    fn parse_callback(
        &self,
        content_type: Option<&str>,
        body: &[u8],
    ) -> Result<AgencyReply, CallbackError>;

    /// Who gets this agency's callbacks. Default: the dossier's centre.
    fn results_to(&self) -> ResultsTo {
        ResultsTo::Origin
    }
}

/// A cancel whose answer is the reference interfaces' readable "not found"
/// ([`crate::outcome::NOT_FOUND_CODE`], `E_KHONG_TIM_THAY`: Police's 404 `{MaLoi, MoTaLoi}`,
/// BHXH's and Tax's `BienNhan` `LOI`): the agency does not hold the dossier, so there is
/// nothing to cancel, and the cancel has done its job (delivered). Any other outcome is kept.
pub fn cancel_outcome(o: Outcome) -> Outcome {
    match o {
        Outcome::Permanent { reason }
            if reason
                .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .any(|w| w == crate::outcome::NOT_FOUND_CODE) =>
        {
            Outcome::Delivered {
                receipt: format!(
                    "nothing to cancel: the agency does not hold the dossier ({reason})"
                ),
            }
        }
        other => other,
    }
}
