//! The adapter contract: deliver one envelope to an agency's system and say what happened
//! (delivered / transient failure / permanent failure, with the agency's reason); look a
//! dossier up; and read the agency's result callbacks back into bus terms.

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
    /// The request may have reached the agency but its answer was lost (timeout after sending,
    /// unreadable or truncated 2xx body). Never resent blindly: resolved by retrying with the
    /// same idempotency key (the agency replays its first answer) or by a status lookup.
    Unknown {
        /// What was seen.
        reason: String,
    },
    /// Not worth retrying: other 4xx, a 200 whose body says failure, an envelope the agency
    /// interface cannot express.
    Permanent {
        /// The agency's reason.
        reason: String,
    },
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

    /// Look the dossier up at the agency.
    async fn status(&self, ma_ho_so: &str) -> Result<AgencyStatus, String>;

    /// A harmless test call for `lienthong check` (the letter's trial run of the connections):
    /// typically a status lookup of a dossier that cannot exist, whose answer must be the
    /// reference format's "not found". Default: none.
    async fn probe(&self) -> crate::http::Probe {
        crate::http::Probe::NotSupported("this interface has no test call".into())
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
