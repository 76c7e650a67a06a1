//! What an agency's system answered, in bus terms: the outcome of one delivery attempt, the
//! result of a status lookup, a callback read into bus terms, and `lienthong check`'s verdict.
//! Plain data with no behaviour beyond reading it: every other file of the crate may use it.
//!
//! **The one rule for outcomes**, which every adapter and every operation follows: a 2xx is
//! delivered only when its body reads as the agency's answer and that answer says success; a
//! 2xx whose body cannot be read as the agency's answer (a key field missing, another shape,
//! an HTML page, an empty or truncated body, another format) is an *unknown* outcome, since
//! the agency may have recorded the dossier; a *permanent* failure is kept for answers that
//! say so: a 4xx, or a business error in a readable body.

use std::time::Duration;

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

impl AgencyReply {
    /// The reply with every text the agency wrote passed through [`clean_text`]: dossier code,
    /// reference, receipt, reason, officer, and each string of `result` (at any depth).
    /// Every adapter's `parse_callback` returns its reply through this.
    pub fn cleaned(mut self) -> AgencyReply {
        fn walk(v: &mut Value) {
            match v {
                Value::String(s) => *s = clean_text(s),
                Value::Array(a) => a.iter_mut().for_each(walk),
                Value::Object(m) => m.values_mut().for_each(walk),
                _ => {}
            }
        }
        self.ma_ho_so = clean_text(&self.ma_ho_so);
        self.reference = clean_text(&self.reference);
        for t in [&mut self.receipt, &mut self.reason, &mut self.officer]
            .into_iter()
            .flatten()
        {
            *t = clean_text(t);
        }
        let keys_clean = self.result.keys().all(|k| clean_text(k) == *k);
        if !keys_clean {
            self.result = std::mem::take(&mut self.result)
                .into_iter()
                .map(|(k, v)| (clean_text(&k), v))
                .collect();
        }
        self.result.values_mut().for_each(walk);
        self
    }
}

/// Agency text as it may enter traces, logs and terminals: control characters (C0 but tab and
/// line feed, DEL, C1 — terminal escapes among them), the bidirectional overrides and
/// isolates (U+202A–U+202E, U+2066–U+2069) and the noncharacters U+FFFE/U+FFFF removed; CR
/// becomes a line feed. Everything else is kept as the agency wrote it.
pub fn clean_text(s: &str) -> String {
    let bad = |c: char| {
        (c.is_control() && c != '\t' && c != '\n')
            || matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}' | '\u{fffe}' | '\u{ffff}')
    };
    if !s.chars().any(bad) {
        return s.to_string();
    }
    s.chars()
        .filter_map(|c| match c {
            '\r' => Some('\n'),
            c if bad(c) => None,
            c => Some(c),
        })
        .collect()
}

/// The dossier code `lienthong check` looks up: shaped like a code, issued by no centre.
pub const PROBE_MA_HO_SO: &str = "LIENTHONG-CHECK-000101-0000";

/// The reference interfaces' business code for "no such dossier" (`MaLoi` of Police's 404,
/// BHXH's and Tax's `BienNhan` `LOI`).
pub const NOT_FOUND_CODE: &str = "E_KHONG_TIM_THAY";

/// What `lienthong check` learnt from an adapter's test call.
#[derive(Debug, Clone, PartialEq)]
pub enum Probe {
    /// The interface answered as its reference format says, with the bus's credentials.
    Passed(String),
    /// It did not (the reason).
    Failed(String),
    /// This interface has no harmless test call.
    NotSupported(String),
}

impl Probe {
    /// The test call's verdict from the status lookup of [`PROBE_MA_HO_SO`]: only the
    /// agency's readable "not found" passes.
    pub fn from_lookup(lookup: StatusLookup) -> Probe {
        match lookup {
            StatusLookup::NotFound { reason } => Probe::Passed(format!(
                "status lookup of a dossier that cannot exist answered \"not found\" in the agency's format ({reason})"
            )),
            StatusLookup::Found(s) => Probe::Failed(format!(
                "status lookup of {}, a dossier that cannot exist, answered that it exists (TrangThaiHoSo {}): the status path or the agency's lookup is wrong",
                s.ma_ho_so, s.status
            )),
            StatusLookup::Unreadable { reason, .. } | StatusLookup::Failed { reason } => {
                Probe::Failed(reason)
            }
            StatusLookup::NotSupported { reason } => Probe::NotSupported(reason),
        }
    }
}
