//! The process manager's state: one [`Process`] per dossier (its phase and steps), what a
//! message does to it ([`Transition`]) and what the rules read besides it ([`Context`]).

use chrono::{DateTime, FixedOffset};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::calendar::{Timeliness, WorkCalendar};
use crate::envelope::{Envelope, Kind};
use crate::registry::Registry;

/// Where a dossier is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// Steps are open.
    Running,
    /// Waiting for the centre (supplement or financial obligation); the clock is stopped.
    Paused,
    /// Every step done; the result went to the centre.
    Completed,
    /// A unit refused it (status 3).
    Refused,
    /// Processing stopped (status 8).
    Stopped,
    /// Withdrawn by the citizen (status 7).
    Withdrawn,
}

impl Phase {
    /// Whether nothing more happens to the dossier's steps.
    pub fn ended(self) -> bool {
        !matches!(self, Phase::Running | Phase::Paused)
    }

    /// The Vietnamese wording (DVCQG status names where one applies).
    pub fn vi(self) -> &'static str {
        match self {
            Phase::Running => "Đang xử lý",
            Phase::Paused => "Tạm dừng, chờ công dân bổ sung / thực hiện nghĩa vụ tài chính",
            Phase::Completed => "Đã xử lý xong",
            Phase::Refused => "Không được tiếp nhận / từ chối giải quyết",
            Phase::Stopped => "Dừng xử lý",
            Phase::Withdrawn => "Công dân yêu cầu rút hồ sơ",
        }
    }
}

/// Where one step is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum StepPhase {
    /// Its group has not been reached.
    Waiting,
    /// Forwarded to its unit; not done.
    Open,
    /// Its unit asked for a supplement or a payment; waiting for the centre.
    Paused,
    /// Done (result or status 9).
    Done,
    /// Its unit refused the dossier.
    Refused,
    /// Stopped (by its unit, or because another unit refused or stopped).
    Stopped,
    /// Cancelled by a withdrawal.
    Cancelled,
    /// Its hand-over was dead-lettered (the agency refused it, the retries ran out, the adapter
    /// could not express it…): waiting for an operator's replay or retry, or the centre's
    /// amendment ([`Process::blocked`] says why).
    Blocked,
}

impl StepPhase {
    /// Whether the step is still the unit's to finish: open, paused, or blocked (its unit may
    /// still answer: a dead-lettered hand-over can have reached the agency).
    pub fn open(self) -> bool {
        matches!(
            self,
            StepPhase::Open | StepPhase::Paused | StepPhase::Blocked
        )
    }
}

/// One step of a dossier's route, as run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct StepRun {
    /// Step id of the catalogue (`khai-sinh`).
    pub id: String,
    /// Step name (Vietnamese).
    pub name: String,
    /// Parallel group (1, 2, …).
    pub group: u32,
    /// Working days allowed (0 = the same working day).
    pub deadline_working_days: u32,
    /// The unit that takes the step.
    pub unit: String,
    /// Where it is.
    pub phase: StepPhase,
    /// The unit that handed the dossier to it (the centre, or the previous step's unit).
    pub handed_by: Option<String>,
    /// Officer who handed it over, when known.
    pub handing_officer: Option<String>,
    /// Message id of the forward the bus sent to the unit.
    pub forward_message_id: Option<String>,
    /// When the bus handed it over (RFC 3339 +07:00).
    pub handed_at: Option<String>,
    /// When it falls due (RFC 3339 +07:00; moved on by pauses).
    pub due: Option<String>,
    /// When the unit finished (done, refused, stopped) or the step was cancelled.
    pub ended_at: Option<String>,
    /// Before / on / past the due time, when finished.
    pub timeliness: Option<Timeliness>,
    /// Last TrangThaiHoSo the unit reported.
    pub last_status: Option<u8>,
    /// Officer of the unit who handled it (from the unit's `payload.handler`).
    pub officer: Option<String>,
    /// Office time paused, seconds.
    pub paused_secs: i64,
    /// When the current pause started.
    pub paused_since: Option<String>,
    /// The unit's result.
    #[schema(value_type = Option<Object>)]
    pub result: Option<Map<String, Value>>,
    /// Reason or note (refusal reason, pause reason, "stopped because …").
    pub note: Option<String>,
}

/// A dossier run by the process manager.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Process {
    /// Dossier code (`ma_ho_so`).
    pub ma_ho_so: String,
    /// Procedure code (`ma_tthc`).
    pub ma_tthc: String,
    /// The receiving centre.
    pub origin_unit: String,
    /// Correlation id of the dossier.
    pub correlation_id: String,
    /// Where it is.
    pub phase: Phase,
    /// When the centre received it (RFC 3339 +07:00).
    pub received_at: String,
    /// When the whole dossier falls due (legal deadline, `NgayKetThucTheoQuyDinh`; moved on by
    /// pauses).
    pub due: String,
    /// The group now open (0 once ended).
    pub group: u32,
    /// Every step, in route order.
    pub steps: Vec<StepRun>,
    /// The centre's forward (applicant, data, attachments), as last amended by the centre.
    #[schema(schema_with = crate::envelope::openapi_ref)]
    pub forward: Envelope,
    /// Officer of the centre who received it, when given.
    pub receiving_officer: Option<String>,
    /// Last dossier status (TrangThaiHoSo) synchronised.
    pub status: u8,
    /// When the dossier ended (completed, refused, stopped, withdrawn).
    pub ended_at: Option<String>,
    /// Before / on / past the dossier's due time, once completed.
    pub timeliness: Option<Timeliness>,
    /// When the centre returned the result to the citizen (status 10).
    pub returned_at: Option<String>,
    /// Why it ended, when not completed.
    pub reason: Option<String>,
    /// Messages the bus sent for this dossier that were dead-lettered and not yet recovered
    /// (a step's hand-over, the result to the centre, a cancel, a portal update), oldest first.
    #[serde(default)]
    pub blocked: Vec<BlockedMessage>,
}

/// A message of the process manager that was dead-lettered: what it was, and why.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct BlockedMessage {
    /// Its message id: the dead letter's id (`lienthong dead-letters replay <id>`).
    pub message_id: String,
    /// The step whose hand-over it was, if it was one.
    pub step: Option<String>,
    /// Envelope kind (`dossier.forward`, `dossier.result`, `dossier.status`).
    pub kind: String,
    /// TrangThaiHoSo it carried, if any.
    pub status: Option<u8>,
    /// The unit it was for.
    pub receiver: String,
    /// The dead letter's reason code (`agency-refused`, `retries-exhausted`, …).
    pub reason_code: String,
    /// The dead letter's reason.
    pub reason: String,
    /// When the bus learnt of it (RFC 3339 +07:00).
    pub at: String,
}

impl BlockedMessage {
    /// The dead letter's reason with its code once (`agency-refused: Công an tỉnh … refused
    /// it: …`; the reason header usually starts with the code already).
    pub fn why(&self) -> String {
        if self.reason.starts_with(&format!("{}:", self.reason_code)) {
            self.reason.clone()
        } else {
            format!("{}: {}", self.reason_code, self.reason)
        }
    }

    /// What the message was, in words (`hand-over of step thuong-tru to CA.H48`).
    pub fn what(&self) -> String {
        match (&self.step, self.kind.as_str(), self.status) {
            (Some(step), _, _) => format!("hand-over of step {step} to {}", self.receiver),
            (None, Kind::RESULT, _) => format!("result to {}", self.receiver),
            (None, Kind::STATUS, Some(s)) => format!("status {s} to {}", self.receiver),
            (None, kind, _) => format!("{kind} to {}", self.receiver),
        }
    }
}

/// What [`advance`] decided.
#[derive(Debug, Clone)]
pub struct Transition {
    /// The new state.
    pub process: Process,
    /// Envelopes to publish, in order (to units, to the centre, to the portal).
    pub out: Vec<Envelope>,
    /// What happened, one line per fact, for the trace (`step khai-sinh done: Trước hạn`).
    pub notes: Vec<String>,
    /// Message ids of envelopes already in the outbox to publish once more, with the same id (a
    /// replayed dead letter).
    pub republish: Vec<String>,
}

/// Knobs of [`advance`] that come from the registry.
pub struct Context<'a> {
    /// Units and procedures.
    pub registry: &'a Registry,
    /// Working-day calendar.
    pub calendar: &'a WorkCalendar,
    /// Now.
    pub now: DateTime<FixedOffset>,
}
