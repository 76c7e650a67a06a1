//! The adapter contract: deliver one envelope to an agency's system and say what happened
//! (delivered / transient failure / unknown outcome / permanent failure, with the agency's
//! reason); look a dossier up (found / not found / unreadable / failed); and read the agency's
//! result callbacks back into bus terms.
//!
//! **The one rule for outcomes**, which every adapter and every operation follows: a 2xx is
//! delivered only when its body reads as the agency's answer and that answer says success; a
//! 2xx whose body cannot be read as the agency's answer (a key field missing, another shape,
//! an HTML page, an empty or truncated body, another format) is an *unknown* outcome, since
//! the agency may have recorded the dossier; a *permanent* failure is kept for answers that
//! say so: a 4xx, or a business error in a readable body.

use std::time::Duration;

use async_trait::async_trait;
use lienthong_core::Envelope;
use serde_json::{Map, Value};

/// What one delivery attempt came to.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// The agency accepted it; `receipt` is its receipt number (MaTiepNhan) or answer.
    Delivered {
        /// Agency receipt.
        receipt: String,
    },
    /// Worth retrying with the same idempotency key: connect error, timeout, 408, 429, 5xx.
    Transient {
        /// What went wrong, in the agency's words where it gave any.
        reason: String,
        /// The agency's Retry-After, if it sent one.
        retry_after: Option<Duration>,
    },
    /// The request may have reached the agency but its answer was lost or cannot be read
    /// (timeout after sending, connection closed mid-answer, a 2xx whose body is not the
    /// agency's answer). Never resent blindly: resolved by retrying with the same idempotency
    /// key (the agency replays its first answer) or by a status lookup.
    Unknown {
        /// What was seen.
        reason: String,
        /// The 2xx body that could not be read, as an excerpt (at most 300 characters,
        /// [`crate::http::snippet`]; empty for an empty body); `None` when no answer came
        /// (timeout, broken connection). The worker counts these to alert an operator.
        answer: Option<String>,
    },
    /// Not worth retrying: a 4xx, a readable answer whose business code says failure
    /// (`BienNhan` `LOI`, an `error_code` other than `"00"`, an edXML status 02), an envelope
    /// the agency interface cannot express.
    Permanent {
        /// The agency's reason.
        reason: String,
    },
}

impl Outcome {
    /// The reason (for [`Outcome::Delivered`], the receipt).
    pub fn reason(&self) -> &str {
        match self {
            Outcome::Delivered { receipt } => receipt,
            Outcome::Transient { reason, .. }
            | Outcome::Unknown { reason, .. }
            | Outcome::Permanent { reason } => reason,
        }
    }
}

/// A cancel (a `dossier.status` 7 or 8) whose answer is the reference interfaces' readable
/// "not found" ([`crate::xml::NOT_FOUND_CODE`], `E_KHONG_TIM_THAY`: Police's 404
/// `{MaLoi, MoTaLoi}`, BHXH's and Tax's `BienNhan` `LOI`): the agency does not hold the
/// dossier, so there is nothing to cancel, and the cancel has done its job (delivered). Any
/// other outcome is kept.
pub fn cancel_outcome(o: Outcome) -> Outcome {
    match o {
        Outcome::Permanent { reason }
            if reason
                .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .any(|w| w == crate::xml::NOT_FOUND_CODE) =>
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

/// A dossier's status at the agency (status lookup).
#[derive(Debug, Clone, PartialEq)]
pub struct AgencyStatus {
    /// Dossier code.
    pub ma_ho_so: String,
    /// Agency receipt number, if any.
    pub receipt: Option<String>,
    /// TrangThaiHoSo.
    pub status: u8,
}

/// What a status lookup at the agency came to.
#[derive(Debug, Clone, PartialEq)]
pub enum StatusLookup {
    /// The agency has the dossier: its answer was read, with a `TrangThaiHoSo` of 1–10.
    Found(AgencyStatus),
    /// The agency answered, readably, that it has no such dossier (the reference format's
    /// "not found": Police/Customs 404 `{MaLoi, MoTaLoi}`, BHXH/Tax `BienNhan` `LOI`
    /// `E_KHONG_TIM_THAY`, DVCQG an empty `result`, a mapped agency's 404 in its format).
    NotFound {
        /// The agency's words.
        reason: String,
    },
    /// The agency answered 2xx with a body that is not its answer (missing field, another
    /// shape or format, HTML, empty, truncated).
    Unreadable {
        /// What could not be read.
        reason: String,
        /// Excerpt of the body (at most 300 characters, [`crate::http::snippet`]).
        answer: String,
    },
    /// No readable answer: a transport failure, 429/5xx, another HTTP failure, or an answer
    /// refusing the lookup itself (a business error other than "not found").
    Failed {
        /// Why, in the agency's words where it gave any.
        reason: String,
    },
    /// This interface has no status lookup (edXML; a mapped agency without `status_path`).
    NotSupported {
        /// Why.
        reason: String,
    },
}

impl StatusLookup {
    /// The agency's status when the lookup found the dossier, else `None`.
    pub fn found(self) -> Option<AgencyStatus> {
        match self {
            StatusLookup::Found(s) => Some(s),
            _ => None,
        }
    }
}

/// A result or status an agency posted back to the bus (callback), in bus terms.
#[derive(Debug, Clone, PartialEq)]
pub struct AgencyReply {
    /// Dossier code.
    pub ma_ho_so: String,
    /// The bus message id the agency was answering (MaThamChieu).
    pub reference: String,
    /// Agency receipt number.
    pub receipt: Option<String>,
    /// TrangThaiHoSo: 9 processed, 3 refused, …
    pub status: u8,
    /// Result fields (snake_case, for `payload.result`).
    pub result: Map<String, Value>,
    /// Reason (refusals) or what was done.
    pub reason: Option<String>,
    /// Officer who handled it.
    pub officer: Option<String>,
}

/// The dossier code `lienthong check` looks up: shaped like a code, issued by no centre.
pub const PROBE_MA_HO_SO: &str = "LIENTHONG-CHECK-000101-0000";

/// An agency adapter. Implementations are stateless apart from their HTTP client; the
/// idempotency key of every call is the envelope's `message_id`.
#[async_trait]
pub trait Adapter: Send + Sync {
    /// Adapter name as used in the registry (`police-rest`).
    fn name(&self) -> &'static str;

    /// Whether `env` can be expressed in the agency's interface at all (kind supported, the
    /// fields the agency requires present), without calling the agency. Err says why not.
    fn check(&self, env: &Envelope) -> Result<(), String>;

    /// One attempt to deliver `env`: a `dossier.forward` is submitted; a `dossier.status` 7
    /// (withdrawn) or 8 (stopped) cancels the dossier at the agency. Other kinds are a
    /// permanent failure naming the kind.
    async fn deliver(&self, env: &Envelope) -> Outcome;

    /// Look the dossier up at the agency (used when an outcome was unknown).
    async fn status(&self, ma_ho_so: &str) -> StatusLookup;

    /// A harmless test call for `lienthong check` (the letter's trial run of the connections).
    /// Default: the status lookup of [`PROBE_MA_HO_SO`], a dossier that cannot exist, whose
    /// answer must be the agency's readable "not found" — the same lookup, read by the same
    /// code, as the worker uses to resolve an unknown outcome, so the check is never stricter
    /// or looser than the real work.
    async fn probe(&self) -> crate::http::Probe {
        crate::http::Probe::from_lookup(self.status(PROBE_MA_HO_SO).await)
    }

    /// Read a callback body (the agency's result) into bus terms. Errors say what is wrong with it.
    fn parse_callback(
        &self,
        content_type: Option<&str>,
        body: &[u8],
    ) -> Result<AgencyReply, String>;
}

/// The operations every reference interface has: a `dossier.forward` is a submit (checked by
/// `submit`), a `dossier.status` 7 (withdrawn) or 8 (stopped) is a cancel; anything else is
/// not deliverable. `interface` names the interface in the error.
pub fn check_operation(
    env: &Envelope,
    interface: &str,
    submit: impl FnOnce() -> Result<(), String>,
) -> Result<(), String> {
    use lienthong_core::{Kind, TrangThaiHoSo};
    match env.kind.as_str() {
        Kind::FORWARD => submit(),
        Kind::STATUS
            if matches!(
                env.status,
                Some(TrangThaiHoSo::WITHDRAWN) | Some(TrangThaiHoSo::STOPPED)
            ) =>
        {
            Ok(())
        }
        other => Err(format!(
            "{interface} has no operation for a {other} message (it takes dossier.forward, and dossier.status 7 or 8 as a cancel)"
        )),
    }
}
