//! The canonical envelope: its Rust shape, and ingress (size limit, JSON parse, Unicode NFC,
//! JSON Schema 2020-12 validation against `schemas/envelope.schema.json`, field checks).

use std::fmt;

use base64::Engine as _;
use regex::Regex;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use unicode_normalization::{UnicodeNormalization, is_nfc_quick};

use crate::registry::EnvelopeSettings;

/// The envelope JSON Schema (2020-12), compiled into the binary from `schemas/envelope.schema.json`.
pub const ENVELOPE_SCHEMA: &str = include_str!("../../schemas/envelope.schema.json");

/// The value of the `spec` field this bus writes and accepts.
pub const SPEC: &str = "lienthong.envelope/1";

/// Message kind: a dotted lower-case name. The known kinds are constants of this type.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Kind(pub String);

impl Kind {
    /// Hand a dossier to a unit (the receiver may be omitted: the bus will choose it later).
    pub const FORWARD: &'static str = "dossier.forward";
    /// A change of the dossier's `TrangThaiHoSo`.
    pub const STATUS: &'static str = "dossier.status";
    /// The result of a unit's step.
    pub const RESULT: &'static str = "dossier.result";
    /// A notice from the bus to the sender that one of its messages was dead-lettered.
    pub const DEAD_LETTER: &'static str = "bus.dead_letter";

    /// The kinds this version of the bus routes.
    pub const KNOWN: [&'static str; 4] =
        [Self::FORWARD, Self::STATUS, Self::RESULT, Self::DEAD_LETTER];

    /// The kind as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// True for `dossier.forward`.
    pub fn is_forward(&self) -> bool {
        self.0 == Self::FORWARD
    }

    /// True for the replies that go back towards the dossier's centre (status, result).
    pub fn is_reply(&self) -> bool {
        self.0 == Self::STATUS || self.0 == Self::RESULT
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Dossier status as synchronised to the National Public Service Portal (DVCQG field
/// `TrangThaiHoSo`), values 1–10.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct TrangThaiHoSo(pub u8);

impl TrangThaiHoSo {
    /// 1: newly registered (Mới đăng ký).
    pub const NEW: Self = Self(1);
    /// 2: accepted (Được tiếp nhận).
    pub const ACCEPTED: Self = Self(2);
    /// 3: not accepted (Không được tiếp nhận).
    pub const NOT_ACCEPTED: Self = Self(3);
    /// 4: in progress (Đang xử lý).
    pub const IN_PROGRESS: Self = Self(4);
    /// 5: supplement requested (Yêu cầu bổ sung giấy tờ).
    pub const SUPPLEMENT_REQUESTED: Self = Self(5);
    /// 6: financial obligation requested (Yêu cầu thực hiện nghĩa vụ tài chính).
    pub const FINANCIAL_OBLIGATION: Self = Self(6);
    /// 7: withdrawn by the citizen (Công dân yêu cầu rút hồ sơ).
    pub const WITHDRAWN: Self = Self(7);
    /// 8: processing stopped (Dừng xử lý).
    pub const STOPPED: Self = Self(8);
    /// 9: processed (Đã xử lý xong).
    pub const PROCESSED: Self = Self(9);
    /// 10: result returned (Đã trả kết quả).
    pub const RESULT_RETURNED: Self = Self(10);

    /// The Vietnamese name of the status, as DVCQG lists it; `None` outside 1–10.
    pub fn name_vi(self) -> Option<&'static str> {
        Some(match self.0 {
            1 => "Mới đăng ký",
            2 => "Được tiếp nhận",
            3 => "Không được tiếp nhận",
            4 => "Đang xử lý",
            5 => "Yêu cầu bổ sung giấy tờ",
            6 => "Yêu cầu thực hiện nghĩa vụ tài chính",
            7 => "Công dân yêu cầu rút hồ sơ",
            8 => "Dừng xử lý",
            9 => "Đã xử lý xong",
            10 => "Đã trả kết quả",
            _ => return None,
        })
    }
}

/// A person: the applicant (chủ hồ sơ) or a person the dossier is about.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct Person {
    /// Full name (họ và tên).
    pub ho_ten: String,
    /// Date of birth, `YYYY-MM-DD`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ngay_sinh: Option<String>,
    /// Sex: `nam` (male) or `nu` (female).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gioi_tinh: Option<String>,
    /// Personal identification number (số định danh cá nhân), 12 digits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub so_dinh_danh: Option<String>,
    /// Phone number.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub so_dien_thoai: Option<String>,
    /// E-mail address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    /// Address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dia_chi: Option<String>,
    /// Relation of the applicant to the person concerned (cha, me, con, vo, chong, …).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quan_he: Option<String>,
}

/// Who handled a step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct Handler {
    /// Unit code.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unit: Option<String>,
    /// Officer's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub officer: Option<String>,
    /// Officer's title.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
}

/// Business content of an envelope.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct Payload {
    /// The applicant (chủ hồ sơ).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub applicant: Option<Person>,
    /// Procedure-specific fields (snake_case Vietnamese names).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<Map<String, Value>>,
    /// A unit's result (`dossier.result`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<Map<String, Value>>,
    /// Human-readable reason (refusals, status changes, dead-letter notices).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Who handled it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub handler: Option<Handler>,
    /// Any further fields, kept verbatim.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// A document of the dossier: inline (`content_base64`) or by reference (claim check).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Attachment {
    /// File name.
    pub name: String,
    /// Media type, e.g. `application/pdf`.
    pub media_type: String,
    /// Size of the decoded content in bytes.
    pub size_bytes: u64,
    /// SHA-256 of the decoded content, lower-case hex.
    pub sha256: String,
    /// Inline content, standard base64.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_base64: Option<String>,
    /// A URI the receiver fetches the content from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reference: Option<String>,
}

/// The envelope in an OpenAPI document: a reference to its component schema `Envelope`, which
/// the HTTP API's document builds from `schemas/envelope.schema.json` (the one definition).
pub fn openapi_ref() -> utoipa::openapi::Ref {
    utoipa::openapi::Ref::from_schema_name("Envelope")
}

/// The canonical envelope: one per AMQP message. Field docs are in `schemas/envelope.schema.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Envelope {
    /// Always [`SPEC`].
    pub spec: String,
    /// UUIDv7, unique per message; also the idempotency key towards agencies.
    pub message_id: String,
    /// Message kind.
    pub kind: Kind,
    /// Dossier code (mã hồ sơ), issued by the receiving centre.
    pub ma_ho_so: String,
    /// National procedure code (mã thủ tục hành chính).
    pub ma_tthc: String,
    /// Sending unit code.
    pub sender: String,
    /// Receiving unit code (optional only for `dossier.forward`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub receiver: Option<String>,
    /// RFC 3339 send time, +07:00.
    pub sent_at: String,
    /// `TrangThaiHoSo` for `dossier.status`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<TrangThaiHoSo>,
    /// Conversation id shared by every message of the dossier.
    pub correlation_id: String,
    /// `message_id` of the message that caused this one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub causation_id: Option<String>,
    /// Business content.
    pub payload: Payload,
    /// Documents.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub attachments: Vec<Attachment>,
}

/// A new UUIDv7 message id (RFC 9562), lower-case.
pub fn new_message_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

impl Envelope {
    /// A new envelope with a fresh message id and `sent_at` = now (+07:00).
    pub fn new(
        kind: &str,
        ma_ho_so: &str,
        ma_tthc: &str,
        sender: &str,
        receiver: Option<&str>,
        correlation_id: &str,
    ) -> Self {
        Envelope {
            spec: SPEC.to_string(),
            message_id: new_message_id(),
            kind: Kind(kind.to_string()),
            ma_ho_so: ma_ho_so.to_string(),
            ma_tthc: ma_tthc.to_string(),
            sender: sender.to_string(),
            receiver: receiver.map(str::to_string),
            sent_at: crate::clock::now_rfc3339(),
            status: None,
            correlation_id: correlation_id.to_string(),
            causation_id: None,
            payload: Payload::default(),
            attachments: Vec::new(),
        }
    }

    /// A reply to `self` (same dossier, procedure and correlation id; causation = `self.message_id`).
    pub fn reply(&self, kind: &str, sender: &str, receiver: &str) -> Self {
        let mut e = Envelope::new(
            kind,
            &self.ma_ho_so,
            &self.ma_tthc,
            sender,
            Some(receiver),
            &self.correlation_id,
        );
        e.causation_id = Some(self.message_id.clone());
        e
    }

    /// What can be read of a body that failed validation, so that its sender can be told:
    /// the string fields `sender` (required), `message_id`, `kind`, `ma_ho_so`, `ma_tthc`,
    /// `receiver`, `correlation_id`; missing ones become `unknown`. Never routed.
    pub fn salvage(body: &[u8]) -> Option<Envelope> {
        let v: Value = serde_json::from_slice(body).ok()?;
        let s = |k: &str| v.get(k).and_then(Value::as_str).map(|x| clip(x, 100));
        let sender = s("sender")?;
        Some(Envelope {
            spec: SPEC.to_string(),
            message_id: s("message_id").unwrap_or_else(new_message_id),
            kind: Kind(s("kind").unwrap_or_else(|| "unknown".into())),
            ma_ho_so: s("ma_ho_so").unwrap_or_else(|| "unknown".into()),
            ma_tthc: s("ma_tthc").unwrap_or_else(|| "unknown".into()),
            sender,
            receiver: s("receiver"),
            sent_at: crate::clock::now_rfc3339(),
            status: None,
            correlation_id: s("correlation_id").unwrap_or_else(|| "unknown".into()),
            causation_id: None,
            payload: Payload::default(),
            attachments: Vec::new(),
        })
    }

    /// Serialise to JSON bytes (the AMQP body).
    pub fn to_bytes(&self) -> Vec<u8> {
        // Serialising a struct of strings, maps and numbers cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }
}

/// Why an envelope was refused. `code` is stable (used in problem+json `type` and in
/// dead-letter headers); `detail` is for people.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    /// Stable machine code, e.g. `schema-invalid`.
    pub code: RejectCode,
    /// Human-readable explanation.
    pub detail: String,
    /// Individual problems (schema errors with their JSON pointer), if several.
    pub errors: Vec<String>,
    /// The fields a filing lacks for its procedure's route
    /// ([`RejectCode::ProcedureDataInvalid`]), structured; `errors` holds the same as text.
    pub fields: Vec<FieldError>,
}

/// One field of a filing that its procedure's route needs and that is missing or wrong
/// (`procedure-data-invalid`, from the procedure's data schema, `schemas/procedures/`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct FieldError {
    /// JSON pointer (RFC 6901) of the field in the envelope, e.g. `/payload/data/tre/ngay_sinh`;
    /// when any one of several fields will do, the first of them.
    pub pointer: String,
    /// The other fields (JSON pointers) that would do instead of `pointer`; empty for most.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub alternatives: Vec<String>,
    /// What is wrong, in English: `missing`, or the schema's message about the value.
    pub detail: String,
    /// The steps of the route that need the field, in route order.
    pub needed_by: Vec<NeededBy>,
}

/// A step of a procedure's route that needs a field, and who takes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct NeededBy {
    /// Step id in the catalogue, e.g. `thuong-tru`.
    pub step: String,
    /// The step's name, in Vietnamese (`Đăng ký thường trú`).
    pub name: String,
    /// Code of the unit that takes the step for the filing centre: the step's `unit`, or the
    /// unit with its `role` nearest to the centre (as the process manager resolves it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unit: Option<String>,
    /// That unit's name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unit_name: Option<String>,
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.pointer)?;
        if !self.alternatives.is_empty() {
            write!(f, " (or {})", self.alternatives.join(", "))?;
        }
        write!(f, ": {}", self.detail)?;
        if !self.needed_by.is_empty() {
            let who: Vec<String> = self
                .needed_by
                .iter()
                .map(|n| match (&n.unit, &n.unit_name) {
                    (Some(c), Some(name)) => format!("{} at {c} ({name})", n.step),
                    (Some(c), None) => format!("{} at {c}", n.step),
                    _ => n.step.clone(),
                })
                .collect();
            write!(f, "; needed by {}", who.join(", "))?;
        }
        Ok(())
    }
}

/// Stable rejection codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RejectCode {
    /// Body larger than `[envelope] max_envelope_bytes`.
    TooLarge,
    /// Body is not valid UTF-8 JSON.
    MalformedJson,
    /// JSON does not match `schemas/envelope.schema.json`.
    SchemaInvalid,
    /// A filing lacks what its procedure's route needs (its procedure's data schema,
    /// `schemas/procedures/`): the centre can add it and file again.
    ProcedureDataInvalid,
    /// A field has a valid shape but a wrong value (pattern, hash, date…).
    InvalidField,
    /// Kind not routed by this version.
    UnsupportedKind,
    /// Sender is not in the registry.
    UnknownSender,
    /// Receiver is not in the registry.
    UnknownReceiver,
    /// No receiver and the bus cannot choose one yet.
    MissingReceiver,
    /// Procedure not in the catalogue.
    UnknownProcedure,
    /// Procedure excluded from liên thông (flags in the catalogue).
    IneligibleProcedure,
    /// Receiver (or sender) is not on the procedure's route.
    NotOnRoute,
    /// The authenticated HTTP caller is not the envelope's sender.
    SenderMismatch,
    /// The message could not be delivered to the receiver's queue (returned by the broker).
    Unroutable,
    /// The adapter cannot express the message in the agency's interface: it was not sent.
    NotDeliverable,
    /// An agency refused the message (permanent failure).
    AgencyRefused,
    /// Transient failures went on past the retry limit.
    RetriesExhausted,
    /// The broker dead-lettered it (delivery limit, overflow…).
    Broker,
    /// The bus's own handler failed (panicked) while delivering it: a bug, not the agency's
    /// answer; the agency may or may not have it.
    HandlerFailed,
}

impl RejectCode {
    /// The code as a kebab-case string.
    pub fn as_str(self) -> &'static str {
        match self {
            RejectCode::TooLarge => "too-large",
            RejectCode::MalformedJson => "malformed-json",
            RejectCode::SchemaInvalid => "schema-invalid",
            RejectCode::ProcedureDataInvalid => "procedure-data-invalid",
            RejectCode::InvalidField => "invalid-field",
            RejectCode::UnsupportedKind => "unsupported-kind",
            RejectCode::UnknownSender => "unknown-sender",
            RejectCode::UnknownReceiver => "unknown-receiver",
            RejectCode::MissingReceiver => "missing-receiver",
            RejectCode::UnknownProcedure => "unknown-procedure",
            RejectCode::IneligibleProcedure => "ineligible-procedure",
            RejectCode::NotOnRoute => "not-on-route",
            RejectCode::SenderMismatch => "sender-mismatch",
            RejectCode::Unroutable => "unroutable",
            RejectCode::NotDeliverable => "not-deliverable",
            RejectCode::AgencyRefused => "agency-refused",
            RejectCode::RetriesExhausted => "retries-exhausted",
            RejectCode::Broker => "broker",
            RejectCode::HandlerFailed => "handler-failed",
        }
    }

    /// Short English title (problem+json `title`).
    pub fn title(self) -> &'static str {
        match self {
            RejectCode::TooLarge => "Envelope too large",
            RejectCode::MalformedJson => "Malformed JSON",
            RejectCode::SchemaInvalid => "Envelope does not match the schema",
            RejectCode::ProcedureDataInvalid => "Dossier lacks data its procedure's route needs",
            RejectCode::InvalidField => "Invalid field value",
            RejectCode::UnsupportedKind => "Unsupported message kind",
            RejectCode::UnknownSender => "Unknown sender",
            RejectCode::UnknownReceiver => "Unknown receiver",
            RejectCode::MissingReceiver => "Receiver required",
            RejectCode::UnknownProcedure => "Unknown procedure",
            RejectCode::IneligibleProcedure => "Procedure not eligible for liên thông",
            RejectCode::NotOnRoute => "Hop not on the procedure's route",
            RejectCode::SenderMismatch => "Sender is not the authenticated unit",
            RejectCode::Unroutable => "Unroutable",
            RejectCode::NotDeliverable => "Not deliverable to the agency",
            RejectCode::AgencyRefused => "Refused by the agency",
            RejectCode::RetriesExhausted => "Retries exhausted",
            RejectCode::Broker => "Dead-lettered by the broker",
            RejectCode::HandlerFailed => "The bus failed while delivering it",
        }
    }

    /// Whether a dead letter with this code says something about its receiver (its queue, its
    /// adapter, its agency, the broker on the way) rather than about what the sender sent:
    /// only these make a receiving unit look unhealthy.
    pub fn blames_receiver(self) -> bool {
        matches!(
            self,
            RejectCode::Unroutable
                | RejectCode::NotDeliverable
                | RejectCode::AgencyRefused
                | RejectCode::RetriesExhausted
                | RejectCode::Broker
                | RejectCode::HandlerFailed
        )
    }

    /// Every code, in declaration order.
    pub const ALL: [RejectCode; 19] = {
        use RejectCode::*;
        [
            TooLarge,
            MalformedJson,
            SchemaInvalid,
            ProcedureDataInvalid,
            InvalidField,
            UnsupportedKind,
            UnknownSender,
            UnknownReceiver,
            MissingReceiver,
            UnknownProcedure,
            IneligibleProcedure,
            NotOnRoute,
            SenderMismatch,
            Unroutable,
            NotDeliverable,
            AgencyRefused,
            RetriesExhausted,
            Broker,
            HandlerFailed,
        ]
    };

    /// Parse [`RejectCode::as_str`] back.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.as_str() == s)
    }
}

impl Rejection {
    /// A rejection with one detail line.
    pub fn new(code: RejectCode, detail: impl Into<String>) -> Self {
        Rejection {
            code,
            detail: detail.into(),
            errors: Vec::new(),
            fields: Vec::new(),
        }
    }

    /// The reason as one line: `code: detail [errors…]`.
    pub fn reason(&self) -> String {
        if self.errors.is_empty() {
            format!("{}: {}", self.code.as_str(), self.detail)
        } else {
            format!(
                "{}: {} ({})",
                self.code.as_str(),
                self.detail,
                self.errors.join("; ")
            )
        }
    }
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.reason())
    }
}

impl std::error::Error for Rejection {}

/// Normalise every string (keys and values) of a JSON value to Unicode NFC, in place.
/// Returns true if anything changed.
pub fn normalize_nfc(v: &mut Value) -> bool {
    match v {
        Value::String(s) => {
            if is_nfc_quick(s.chars()) == unicode_normalization::IsNormalized::Yes {
                false
            } else {
                let n: String = s.nfc().collect();
                let changed = n != *s;
                *s = n;
                changed
            }
        }
        Value::Array(a) => a.iter_mut().fold(false, |c, x| normalize_nfc(x) | c),
        Value::Object(m) => {
            let needs_key_change = m
                .keys()
                .any(|k| is_nfc_quick(k.chars()) != unicode_normalization::IsNormalized::Yes);
            if needs_key_change {
                let old = std::mem::take(m);
                for (k, mut val) in old {
                    let nk: String = k.nfc().collect();
                    normalize_nfc(&mut val);
                    m.insert(nk, val);
                }
                return true;
            }
            let mut changed = false;
            for val in m.values_mut() {
                changed |= normalize_nfc(val);
            }
            changed
        }
        _ => false,
    }
}

/// Ingress checks shared by the router and the HTTP API: everything that can be said of an
/// envelope without the registry's routes. Built once; cheap to share (`Send + Sync`).
pub struct EnvelopeValidator {
    schema: jsonschema::Validator,
    ma_ho_so_pattern: Regex,
    max_envelope_bytes: usize,
    max_attachment_bytes: usize,
    max_json_depth: usize,
    max_json_nodes: usize,
    date_window_days_back: i64,
    date_window_days_ahead: i64,
}

impl EnvelopeValidator {
    /// Compile the schema and patterns. Errors name the bad setting.
    pub fn new(settings: &EnvelopeSettings) -> Result<Self, String> {
        let schema_json: Value = serde_json::from_str(ENVELOPE_SCHEMA)
            .map_err(|e| format!("envelope schema is not JSON: {e}"))?;
        let schema = jsonschema::draft202012::options()
            .build(&schema_json)
            .map_err(|e| format!("envelope schema does not compile: {e}"))?;
        let ma_ho_so_pattern = Regex::new(&settings.ma_ho_so_pattern)
            .map_err(|e| format!("[envelope] ma_ho_so_pattern is not a valid regex: {e}"))?;
        Ok(EnvelopeValidator {
            schema,
            ma_ho_so_pattern,
            max_envelope_bytes: settings.max_envelope_bytes,
            max_attachment_bytes: settings.max_attachment_bytes,
            max_json_depth: settings.max_json_depth,
            max_json_nodes: settings.max_json_nodes,
            date_window_days_back: i64::from(settings.date_window_days_back),
            date_window_days_ahead: i64::from(settings.date_window_days_ahead),
        })
    }

    /// Parse, NFC-normalise and validate an envelope from raw bytes.
    ///
    /// Errors: [`RejectCode::TooLarge`], [`RejectCode::MalformedJson`] (with line and column),
    /// [`RejectCode::SchemaInvalid`] (each error with its JSON pointer),
    /// [`RejectCode::InvalidField`] (ma_ho_so pattern, sent_at, attachment size, hash or name,
    /// `payload.data.ngay_tiep_nhan` outside the date window). Bodies nested deeper than
    /// `[envelope] max_json_depth` or with more than `max_json_nodes` nodes are refused
    /// ([`RejectCode::TooLarge`]) by one scan of the bytes, before any JSON value is built.
    pub fn accept(&self, body: &[u8]) -> Result<Envelope, Rejection> {
        let (value, plain) = self.parse(body)?;
        self.validate(value, !plain)
    }

    /// The first half of [`Validator::accept`]: the size and shape limits, the JSON parse and
    /// NFC. Returns the value and whether the raw bytes already showed every string plain (no
    /// NFC needed, no forbidden character), for [`Validator::accept_parsed`]. For a caller
    /// that completes the envelope in between (the HTTP API fills in a missing `message_id`).
    pub fn parse(&self, body: &[u8]) -> Result<(Value, bool), Rejection> {
        if body.len() > self.max_envelope_bytes {
            return Err(Rejection::new(
                RejectCode::TooLarge,
                format!(
                    "envelope is {} bytes; the limit is {} bytes",
                    body.len(),
                    self.max_envelope_bytes
                ),
            ));
        }
        json_shape_within(body, self.max_json_depth, self.max_json_nodes)
            .map_err(|detail| Rejection::new(RejectCode::TooLarge, detail))?;
        let mut value: Value = serde_json::from_slice(body).map_err(|e| {
            Rejection::new(
                RejectCode::MalformedJson,
                format!("body is not valid JSON: {e}"),
            )
        })?;
        // One scan of the raw bytes usually shows that no string needs NFC and none holds a
        // forbidden character; when it cannot, the strings are walked one by one.
        let plain = plain_text(body);
        if !plain {
            normalize_nfc(&mut value);
        }
        Ok((value, plain))
    }

    /// The second half of [`Validator::accept`], for a value from [`Validator::parse`] (`plain`
    /// as it returned; a string the caller added must be plain ASCII).
    pub fn accept_parsed(&self, value: Value, plain: bool) -> Result<Envelope, Rejection> {
        self.validate(value, !plain)
    }

    /// Validate an already parsed (and NFC-normalised) JSON value.
    pub fn accept_value(&self, value: Value) -> Result<Envelope, Rejection> {
        self.validate(value, true)
    }

    /// The checks after parsing; `scan_chars` = look for forbidden characters string by string
    /// (false when [`plain_text`] already ruled them out on the raw bytes).
    fn validate(&self, mut value: Value, scan_chars: bool) -> Result<Envelope, Rejection> {
        if let Some((at, c)) = scan_chars
            .then(|| forbidden_char(&value, &mut String::new()))
            .flatten()
        {
            return Err(Rejection::new(
                RejectCode::InvalidField,
                format!(
                    "text at {at} contains U+{:04X}, a control character or noncharacter that XML 1.0 (and so the agencies' XML systems) cannot carry",
                    c as u32
                ),
            ));
        }
        // JSON Schema counts 5.0 as an integer; so does the bus.
        if let Some(st) = value.get_mut("status")
            && let Some(f) = st.as_f64()
            && !st.is_u64()
            && f.fract() == 0.0
            && (1.0..=10.0).contains(&f)
        {
            *st = Value::from(f as u64);
        }
        // `is_valid` stops at the first failure and builds no error values: the usual, valid
        // envelope pays only for the check; the errors are collected when there are some.
        let errors: Vec<String> = if self.schema.is_valid(&value) {
            Vec::new()
        } else {
            self.schema
                .iter_errors(&value)
                .take(20)
                .map(|e| {
                    let at = e.instance_path().to_string();
                    clip(
                        &format!("{}: {}", if at.is_empty() { "/" } else { &at }, e),
                        300,
                    )
                })
                .collect()
        };
        if !errors.is_empty() {
            return Err(Rejection {
                code: RejectCode::SchemaInvalid,
                detail: format!(
                    "envelope does not match schemas/envelope.schema.json ({} error(s))",
                    errors.len()
                ),
                errors,
                fields: Vec::new(),
            });
        }
        let env: Envelope = serde_json::from_value(value).map_err(|e| {
            Rejection::new(RejectCode::SchemaInvalid, format!("envelope shape: {e}"))
        })?;
        self.check_fields(&env)?;
        Ok(env)
    }

    fn check_fields(&self, env: &Envelope) -> Result<(), Rejection> {
        if !self.ma_ho_so_pattern.is_match(&env.ma_ho_so) {
            return Err(Rejection::new(
                RejectCode::InvalidField,
                format!(
                    "ma_ho_so {:?} does not match the configured pattern {}",
                    env.ma_ho_so,
                    self.ma_ho_so_pattern.as_str()
                ),
            ));
        }
        if chrono::DateTime::parse_from_rfc3339(&env.sent_at).is_err() {
            return Err(Rejection::new(
                RejectCode::InvalidField,
                format!("sent_at {:?} is not an RFC 3339 time", env.sent_at),
            ));
        }
        self.check_dates(env, crate::clock::now_vn())?;
        for (i, a) in env.attachments.iter().enumerate() {
            if let Some(why) = bad_file_name(&a.name) {
                return Err(Rejection::new(
                    RejectCode::InvalidField,
                    format!(
                        "attachment {i}: name {:?} {why}; a file name is one plain name",
                        clip(&a.name, 100)
                    ),
                ));
            }
            if let Some(b64) = &a.content_base64 {
                let bytes = base64::engine::general_purpose::STANDARD
                    .decode(b64.as_bytes())
                    .map_err(|e| {
                        Rejection::new(
                            RejectCode::InvalidField,
                            format!(
                                "attachment {i} ({}): content_base64 is not valid base64: {e}",
                                a.name
                            ),
                        )
                    })?;
                if bytes.len() > self.max_attachment_bytes {
                    return Err(Rejection::new(
                        RejectCode::TooLarge,
                        format!(
                            "payload too large: attachment {i} ({}) is {} bytes; the limit is {} bytes per attachment",
                            a.name,
                            bytes.len(),
                            self.max_attachment_bytes
                        ),
                    ));
                }
                if bytes.len() as u64 != a.size_bytes {
                    return Err(Rejection::new(
                        RejectCode::InvalidField,
                        format!(
                            "attachment {i} ({}): size_bytes says {} but the content is {} bytes",
                            a.name,
                            a.size_bytes,
                            bytes.len()
                        ),
                    ));
                }
                let digest = hex(&Sha256::digest(&bytes));
                if digest != a.sha256 {
                    return Err(Rejection::new(
                        RejectCode::InvalidField,
                        format!(
                            "attachment {i} ({}): sha256 says {} but the content hashes to {}",
                            a.name, a.sha256, digest
                        ),
                    ));
                }
            }
        }
        Ok(())
    }
}

impl EnvelopeValidator {
    /// Refuse a sender-chosen date the due times start from when it lies outside
    /// `[now - date_window_days_back, now + date_window_days_ahead]`: `payload.data.ngay_tiep_nhan`
    /// (RFC 3339, or DVCQG `yyyyMMddHHmmss` in +07:00). A value that is neither is left to the
    /// process manager, which then does not use it.
    fn check_dates(
        &self,
        env: &Envelope,
        now: chrono::DateTime<chrono::FixedOffset>,
    ) -> Result<(), Rejection> {
        let Some(raw) = env
            .payload
            .data
            .as_ref()
            .and_then(|d| d.get("ngay_tiep_nhan"))
            .and_then(Value::as_str)
        else {
            return Ok(());
        };
        let Some(t) = parse_sender_time(raw) else {
            return Ok(());
        };
        let from = now - chrono::Duration::days(self.date_window_days_back);
        let to = now + chrono::Duration::days(self.date_window_days_ahead);
        if t < from || t > to {
            return Err(Rejection::new(
                RejectCode::InvalidField,
                format!(
                    "payload.data.ngay_tiep_nhan {:?} is outside the accepted window of {} days back to {} day(s) ahead of now ([envelope] date_window_days_back / date_window_days_ahead)",
                    clip(raw, 40),
                    self.date_window_days_back,
                    self.date_window_days_ahead
                ),
            ));
        }
        Ok(())
    }
}

/// A sender's time: RFC 3339, or DVCQG `yyyyMMddHHmmss` read in +07:00.
pub fn parse_sender_time(s: &str) -> Option<chrono::DateTime<chrono::FixedOffset>> {
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(s) {
        return Some(t);
    }
    if s.len() == 14 && s.bytes().all(|b| b.is_ascii_digit()) {
        let naive = chrono::NaiveDateTime::parse_from_str(s, "%Y%m%d%H%M%S").ok()?;
        return naive.and_local_timezone(crate::clock::vn_offset()).single();
    }
    None
}

/// Why an attachment name is not one plain file name: a path separator (`/`, `\`), `..`, a
/// control character (C0, DEL, C1), or nothing but dots and spaces. `None` when it is fine.
pub fn bad_file_name(name: &str) -> Option<&'static str> {
    if name.contains('/') || name.contains('\\') {
        Some("holds a path separator")
    } else if name.contains("..") {
        Some("holds \"..\"")
    } else if name.chars().any(char::is_control) {
        Some("holds a control character")
    } else if name.trim_matches(|c| c == '.' || c == ' ').is_empty() {
        Some("is empty or only dots")
    } else {
        None
    }
}

/// Whether a JSON body stays within `max_depth` levels of nested objects and arrays and
/// `max_nodes` nodes (objects and arrays, plus one per `,`: about one per element), judged in
/// one pass over the bytes outside strings (strings are skipped with `memchr`). The parser
/// still judges the syntax: a body this lets through may be malformed. Errors say which limit,
/// for the rejection's detail.
pub fn json_shape_within(body: &[u8], max_depth: usize, max_nodes: usize) -> Result<(), String> {
    let (mut i, mut depth, mut nodes) = (0usize, 0usize, 1usize);
    while let Some(&b) = body.get(i) {
        match b {
            b'"' => {
                // Skip the string: to its closing quote, stepping over escapes.
                i += 1;
                loop {
                    match memchr::memchr2(b'"', b'\\', body.get(i..).unwrap_or_default()) {
                        None => return Ok(()),
                        Some(j) if body.get(i + j) == Some(&b'\\') => i += j + 2,
                        Some(j) => {
                            i += j;
                            break;
                        }
                    }
                }
            }
            b'{' | b'[' => {
                depth += 1;
                nodes += 1;
                if depth > max_depth {
                    return Err(format!(
                        "JSON nested more than {max_depth} levels deep; the limit is {max_depth} levels ([envelope] max_json_depth)"
                    ));
                }
            }
            b'}' | b']' => depth = depth.saturating_sub(1),
            b',' => nodes += 1,
            _ => {}
        }
        if nodes > max_nodes {
            return Err(format!(
                "JSON has more than {max_nodes} nodes; the limit is {max_nodes} ([envelope] max_json_nodes)"
            ));
        }
        i += 1;
    }
    Ok(())
}

/// At most `max_chars` characters of `s`, with a note of how much was cut.
pub fn clip(s: &str, max_chars: usize) -> String {
    match s.char_indices().nth(max_chars) {
        None => s.to_string(),
        Some((cut, _)) => format!("{}… ({} more bytes)", &s[..cut], s.len() - cut),
    }
}

/// Whether a JSON body's strings are, as written, already NFC and free of the characters
/// [`forbidden_char`] refuses, judged on the raw bytes in one pass: true when the body is UTF-8,
/// holds no `\u` escape (an escape can spell any character, so such bodies take the string by
/// string walk), no U+FFFE or U+FFFF, and passes the NFC quick check (UAX #15) as a whole.
/// Control characters cannot appear raw inside JSON strings (the parser refuses them), and
/// the other escapes stand for ASCII, which never changes the quick check's answer. The whole
/// passing the quick check implies every string and key in it does: the check looks at each
/// character and at canonical-class order between neighbours, and a string's neighbours are
/// neighbours in the whole. False means "walk the strings", not "invalid".
pub fn plain_text(body: &[u8]) -> bool {
    let Ok(text) = std::str::from_utf8(body) else {
        return false;
    };
    if memchr::memmem::find(body, b"\\u").is_some()
        || memchr::memmem::find(body, "\u{fffe}".as_bytes()).is_some()
        || memchr::memmem::find(body, "\u{ffff}".as_bytes()).is_some()
    {
        return false;
    }
    // Most envelopes are mostly ASCII, which is NFC by itself: check only from the first
    // non-ASCII byte on (a combining mark must follow a character, so starting at a
    // character boundary after ASCII loses nothing).
    match body.iter().position(|b| !b.is_ascii()) {
        None => true,
        Some(i) => is_nfc_quick(text[i..].chars()) == unicode_normalization::IsNormalized::Yes,
    }
}

/// The first string (value or key) holding a character XML 1.0 cannot carry: C0 controls other
/// than tab, LF and CR, and the noncharacters U+FFFE and U+FFFF. Returns its JSON pointer.
fn forbidden_char(v: &Value, path: &mut String) -> Option<(String, char)> {
    let bad = |s: &str| {
        s.chars().find(|c| {
            (*c < ' ' && !matches!(c, '\t' | '\n' | '\r')) || matches!(c, '\u{fffe}' | '\u{ffff}')
        })
    };
    match v {
        Value::String(s) => bad(s).map(|c| {
            (
                if path.is_empty() {
                    "/".to_string()
                } else {
                    path.clone()
                },
                c,
            )
        }),
        Value::Array(a) => a.iter().enumerate().find_map(|(i, x)| {
            let len = path.len();
            path.push_str(&format!("/{i}"));
            let r = forbidden_char(x, path);
            path.truncate(len);
            r
        }),
        Value::Object(m) => m.iter().find_map(|(k, x)| {
            let len = path.len();
            path.push('/');
            path.push_str(k);
            let r = bad(k)
                .map(|c| (path.clone(), c))
                .or_else(|| forbidden_char(x, path));
            path.truncate(len);
            r
        }),
        _ => None,
    }
}

/// Lower-case hex of bytes.
pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn validator() -> EnvelopeValidator {
        EnvelopeValidator::new(&EnvelopeSettings::default()).expect("validator")
    }

    fn sample() -> Value {
        serde_json::json!({
            "spec": SPEC,
            "message_id": "019a1b2c-3d4e-7f00-8a00-000000000001",
            "kind": "dossier.forward",
            "ma_ho_so": "000.20.59.H48-261129-0001",
            "ma_tthc": "1.001193",
            "sender": "000.20.59.H48",
            "receiver": "000.10.59.H48",
            "sent_at": "2026-11-29T09:00:00+07:00",
            "correlation_id": "019a1b2c-3d4e-7f00-8a00-000000000002",
            "payload": {"applicant": {"ho_ten": "Đinh Văn Pố"}},
            "attachments": [{"name": "a.pdf", "media_type": "application/pdf", "size_bytes": 3, "sha256": hex(&Sha256::digest(b"abc")), "content_base64": "YWJj"}]
        })
    }

    #[test]
    fn valid_envelope_is_accepted() {
        let env = validator()
            .accept(sample().to_string().as_bytes())
            .expect("valid");
        assert_eq!(env.sender, "000.20.59.H48");
        assert_eq!(
            env.payload.applicant.expect("applicant").ho_ten,
            "Đinh Văn Pố"
        );
    }

    #[test]
    fn nfd_text_is_normalised_to_nfc() {
        let mut v = sample();
        let nfd: String = "Nguyễn Thị Ánh".nfd().collect();
        v["payload"]["applicant"]["ho_ten"] = Value::String(nfd.clone());
        let env = validator().accept(v.to_string().as_bytes()).expect("valid");
        let name = env.payload.applicant.expect("applicant").ho_ten;
        assert_ne!(name, nfd);
        assert_eq!(name, "Nguyễn Thị Ánh".nfc().collect::<String>());
    }

    #[test]
    fn malformed_json_is_rejected_with_position() {
        let r = validator().accept(b"{\"spec\": ").expect_err("malformed");
        assert_eq!(r.code, RejectCode::MalformedJson);
        assert!(r.detail.contains("line 1"), "{}", r.detail);
    }

    #[test]
    fn schema_errors_name_the_field() {
        let mut v = sample();
        v["kind"] = Value::String("dossier.status".into());
        let r = validator()
            .accept(v.to_string().as_bytes())
            .expect_err("status without status");
        assert_eq!(r.code, RejectCode::SchemaInvalid);
        assert!(
            r.errors.iter().any(|e| e.contains("status")),
            "{:?}",
            r.errors
        );
    }

    #[test]
    fn attachment_hash_mismatch_is_rejected() {
        let mut v = sample();
        v["attachments"][0]["content_base64"] = Value::String("YWJk".into());
        let r = validator()
            .accept(v.to_string().as_bytes())
            .expect_err("hash");
        assert_eq!(r.code, RejectCode::InvalidField);
        assert!(r.detail.contains("sha256"));
    }

    #[test]
    fn control_characters_are_refused_with_their_place() {
        let mut v = sample();
        v["payload"]["applicant"]["ho_ten"] = Value::String("Đinh\u{1}Văn".into());
        let r = validator()
            .accept(v.to_string().as_bytes())
            .expect_err("control char");
        assert_eq!(r.code, RejectCode::InvalidField);
        assert!(
            r.detail.contains("/payload/applicant/ho_ten") && r.detail.contains("U+0001"),
            "{}",
            r.detail
        );
    }

    #[test]
    fn the_raw_scan_sends_only_unusual_bodies_to_the_string_walk() {
        assert!(plain_text(br#"{"a":"plain ASCII"}"#));
        assert!(plain_text(
            "{\"ho_ten\":\"Đinh Văn Lực, Quảng Ngãi\"}".as_bytes()
        ));
        // NFD (a combining mark after its base letter), also at the start of a string.
        assert!(!plain_text("{\"a\":\"Lu\u{031b}\u{0323}c\"}".as_bytes()));
        assert!(!plain_text("{\"a\":\"\u{0301}x\"}".as_bytes()));
        // An escape can spell anything; the noncharacters; bytes that are not UTF-8.
        assert!(!plain_text(br#"{"a":"\u0041"}"#));
        assert!(!plain_text("{\"a\":\"x\u{fffe}\"}".as_bytes()));
        assert!(!plain_text(b"{\"a\":\"\xff\"}"));
        // Other escapes stand for ASCII and stay on the fast path.
        assert!(plain_text(
            r#"{"a":"line\nbreak \"quoted\" Việt"}"#.as_bytes()
        ));
    }

    #[test]
    fn escaped_text_still_gets_the_string_walk() {
        let v = validator();
        let mut env = sample();
        env["payload"]["reason"] = serde_json::json!("x");
        let body = serde_json::to_string(&env).unwrap().replace(
            "\"reason\":\"x\"",
            "\"reason\":\"Lu\\u031b\\u0323c \\u0007\"",
        );
        assert!(!plain_text(body.as_bytes()));
        let err = v.accept(body.as_bytes()).unwrap_err();
        assert!(err.detail.contains("U+0007"), "{}", err.detail);
        let body = body.replace(" \\u0007", "");
        let accepted = v.accept(body.as_bytes()).unwrap();
        assert_eq!(accepted.payload.reason.as_deref(), Some("L\u{1ef1}c"));
    }

    #[test]
    fn huge_values_do_not_blow_up_the_reason() {
        let mut v = sample();
        v["payload"]["applicant"]["ho_ten"] = Value::String("Đ".repeat(300_000));
        v["kind"] = Value::from(5);
        let r = validator()
            .accept(v.to_string().as_bytes())
            .expect_err("invalid");
        assert!(r.reason().len() < 20_000, "{}", r.reason().len());
    }

    #[test]
    fn deep_or_huge_json_is_refused_before_parsing() {
        let mut body = String::new();
        for _ in 0..40 {
            body.push_str("{\"a\":");
        }
        body.push('1');
        for _ in 0..40 {
            body.push('}');
        }
        let r = validator().accept(body.as_bytes()).expect_err("deep");
        assert_eq!(r.code, RejectCode::TooLarge);
        assert!(r.detail.contains("max_json_depth"), "{}", r.detail);
        // Brackets inside strings are text, not nesting.
        let mut v = sample();
        v["payload"]["reason"] = Value::String("[[[[{{{{\\\"".repeat(20));
        validator()
            .accept(v.to_string().as_bytes())
            .expect("brackets in strings");
        // Many nodes at depth 2.
        let mut v = sample();
        v["payload"]["data"] = serde_json::json!({"xs": vec![1; 100_001]});
        let r = validator()
            .accept(v.to_string().as_bytes())
            .expect_err("nodes");
        assert!(r.detail.contains("max_json_nodes"), "{}", r.detail);
        assert!(json_shape_within(b"[[1],[2]]", 2, 10).is_ok());
        assert!(json_shape_within(b"[[[1]]]", 2, 10).is_err());
    }

    #[test]
    fn the_data_has_a_bounded_number_of_keys() {
        let mut v = sample();
        let many: Map<String, Value> = (0..501)
            .map(|i| (format!("k{i}"), Value::from(i)))
            .collect();
        v["payload"]["data"] = Value::Object(many);
        let r = validator()
            .accept(v.to_string().as_bytes())
            .expect_err("keys");
        assert_eq!(r.code, RejectCode::SchemaInvalid);
    }

    #[test]
    fn filing_dates_outside_the_window_are_refused() {
        for bad in [
            "0001-01-01T08:00:00+07:00",
            "9999-12-31T08:00:00+07:00",
            "00010101080000",
        ] {
            let mut v = sample();
            v["payload"]["data"] = serde_json::json!({ "ngay_tiep_nhan": bad });
            let r = validator().accept(v.to_string().as_bytes()).expect_err(bad);
            assert_eq!(r.code, RejectCode::InvalidField);
            assert!(r.detail.contains("ngay_tiep_nhan"), "{}", r.detail);
        }
        let mut v = sample();
        v["payload"]["data"] = serde_json::json!({ "ngay_tiep_nhan": crate::clock::now_rfc3339() });
        validator().accept(v.to_string().as_bytes()).expect("today");
    }

    #[test]
    fn attachment_names_are_plain_names() {
        for bad in [
            "../etc/passwd",
            "a/b.pdf",
            "a\\b.pdf",
            "x..pdf",
            "a\tb.pdf",
            "a\u{9b}.pdf",
            "..",
            " . ",
        ] {
            let mut v = sample();
            v["attachments"][0]["name"] = Value::String(bad.into());
            let r = validator().accept(v.to_string().as_bytes()).expect_err(bad);
            assert_eq!(r.code, RejectCode::InvalidField, "{bad}");
            assert!(r.detail.contains("attachment 0"), "{}", r.detail);
        }
        assert_eq!(bad_file_name("Tờ khai.pdf"), None);
    }

    #[test]
    fn integral_float_status_is_an_integer() {
        let mut v = sample();
        v["kind"] = Value::String("dossier.status".into());
        v["status"] = serde_json::json!(5.0);
        let env = validator()
            .accept(v.to_string().as_bytes())
            .expect("5.0 is 5");
        assert_eq!(env.status, Some(TrangThaiHoSo(5)));
    }

    #[test]
    fn status_outside_dvcqg_range_is_rejected() {
        let mut v = sample();
        v["kind"] = Value::String("dossier.status".into());
        v["status"] = Value::from(11);
        let r = validator()
            .accept(v.to_string().as_bytes())
            .expect_err("range");
        assert_eq!(r.code, RejectCode::SchemaInvalid);
    }
}
