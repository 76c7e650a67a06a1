//! The process manager's state machine: one [`Process`] per dossier that a centre filed without
//! naming a receiver, advanced by each message of that dossier into the messages the bus sends
//! next (the route of the catalogue: step by step, parallel groups fanning out and joining,
//! pauses, refusal, stop and withdrawal), with a due time and a before / on / past
//! classification for every hand-over (working days of [`crate::calendar`]).
//!
//! This module is pure (no I/O): [`advance`] takes the stored state, the incoming envelope and
//! "now", and returns the new state and the envelopes to publish. Persistence (with an inbox for
//! idempotency and a transactional outbox) is [`ProcessStore`].
//!
//! ## Rules (docs/reference/process-manager.md documents them for operators)
//!
//! * **Start.** A `dossier.forward` from a centre with no `receiver`, for a dossier the bus has
//!   not seen, starts the procedure's route. The optional steps are the ones whose `choice` is in
//!   `payload.data.thu_tuc_lua_chon` (the procedures the applicant chose). A role is resolved to
//!   the unit with that role nearest to the receiving centre in the registry's parent tree.
//! * **Clock.** The dossier is received at `payload.data.ngay_tiep_nhan` (RFC 3339) when the
//!   centre gives it, else at the envelope's `sent_at`. The first group's steps fall due
//!   [`crate::calendar::WorkCalendar::due`] working days after the receipt, with the procedure's
//!   cut-off; a later group's steps count from the hand-over to them (no cut-off: a hand-over
//!   after office hours counts from the next working day). The dossier falls due after the
//!   procedure's `deadline_working_days` (`deadline_working_days_with_verification` when
//!   `payload.data.can_xac_minh` is true), else the sum over groups of the longest step.
//! * **Step done.** A `dossier.result`, or a `dossier.status` 9 or 10, from a unit holding an open
//!   step closes that step, classified against its due time. When every step of the group is
//!   closed, the next group is forwarded, carrying each earlier step's result as
//!   `payload.data.ket_qua_<step id>` (and its top-level fields where `payload.data` lacks them,
//!   e.g. the land office's `phieu_chuyen_thong_tin` for Tax). After the last group, one
//!   `dossier.result` (status 9) goes to the receiving centre with every step's result.
//! * **Refusal (3) or stop (8)** from any unit ends the dossier: the other open units get a
//!   `dossier.status` 8 (stop), the centre gets the refusal with its reason.
//! * **Pause (5 supplement, 6 financial obligation).** The step's status goes to the centre and
//!   the step's clock (and the dossier's) stops, when the status is one of the procedure's
//!   `clock_pausing_statuses`. The centre answers with a `dossier.forward` with
//!   no receiver: the office time paused is added to the due times and the same step resumes (the
//!   unit gets the forward with the centre's new data).
//! * **Withdrawal (7)** by the centre cancels every open step (`dossier.status` 7 to each unit).
//!   A `dossier.status` 8 from the centre stops them the same way.
//! * **Result returned (10)** from the centre after completion records the return time.
//! * Anything for an ended dossier is recorded and otherwise ignored (no status regression).

use std::collections::BTreeMap;

use chrono::{DateTime, FixedOffset, NaiveTime, SecondsFormat};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use crate::calendar::{Timeliness, WorkCalendar};
use crate::envelope::{Envelope, Handler, Kind, RejectCode, Rejection, TrangThaiHoSo};
use crate::registry::{Procedure, Registry, UnitKind};
use crate::store::{Store, StoreError};
use rusqlite::{OptionalExtension, params};

mod blocked;
pub use blocked::{DeadLetterNotice, dead_lettered, replayed, retry_blocked};

/// Where a dossier is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
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
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
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
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
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
    pub result: Option<Map<String, Value>>,
    /// Reason or note (refusal reason, pause reason, "stopped because …").
    pub note: Option<String>,
}

/// A dossier run by the process manager.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
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
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
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

fn ts(t: DateTime<FixedOffset>) -> String {
    t.with_timezone(&crate::clock::vn_offset())
        .to_rfc3339_opts(SecondsFormat::Millis, false)
}

/// Parse a stored RFC 3339 time.
pub fn parse_ts(s: &str) -> Option<DateTime<FixedOffset>> {
    DateTime::parse_from_rfc3339(s).ok()
}

/// `t` in the DVCQG format `yyyyMMddHHmmss` (+07:00).
pub fn dvcqg_time(t: DateTime<FixedOffset>) -> String {
    t.with_timezone(&crate::clock::vn_offset())
        .format("%Y%m%d%H%M%S")
        .to_string()
}

/// A step id as a JSON key: `khai-sinh` → `khai_sinh`.
pub fn snake_id(id: &str) -> String {
    id.replace(['-', '.', ' '], "_")
}

fn rejection(code: RejectCode, detail: impl Into<String>) -> Rejection {
    Rejection::new(code, detail)
}

/// The unit with `role` nearest to `near` in the parent tree (ties: lowest code).
pub fn resolve_role(registry: &Registry, role: &str, near: &str) -> Option<String> {
    let ancestors = |code: &str| -> Vec<String> {
        let mut v = Vec::new();
        let mut cur = registry.unit(code).and_then(|u| u.parent.clone());
        while let Some(c) = cur {
            if v.contains(&c) {
                break;
            }
            cur = registry.unit(&c).and_then(|u| u.parent.clone());
            v.push(c);
        }
        v
    };
    let mine = ancestors(near);
    let mut best: Option<(usize, String)> = None;
    for u in registry
        .units()
        .filter(|u| u.roles.iter().any(|r| r == role))
    {
        let theirs = ancestors(&u.code);
        let dist = mine
            .iter()
            .position(|a| theirs.contains(a) || *a == u.code)
            .unwrap_or(usize::MAX);
        let cand = (dist, u.code.clone());
        if best.as_ref().is_none_or(|b| cand < *b) {
            best = Some(cand);
        }
    }
    best.map(|b| b.1)
}

fn chosen(env: &Envelope) -> Vec<String> {
    env.payload
        .data
        .as_ref()
        .and_then(|d| d.get("thu_tuc_lua_chon"))
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

fn cutoff(p: &Procedure) -> Option<NaiveTime> {
    p.cutoff_time
        .as_deref()
        .and_then(|c| crate::calendar::hhmm(c).ok())
}

/// Whether `env` starts a process: a `dossier.forward` with no receiver.
pub fn starts_process(env: &Envelope) -> bool {
    env.kind.is_forward() && env.receiver.is_none()
}

/// Whether `env` is the process manager's rather than the routing rules': a forward with no
/// receiver, or any message of a dossier it runs (`runs`, from
/// [`crate::store::Store::lookup_dossier`]), except a message addressed to the national portal
/// (routed as usual). The router and the HTTP API both ask this, with the same store read.
pub fn manages(registry: &Registry, env: &Envelope, runs: bool) -> bool {
    let to_portal = env
        .receiver
        .as_deref()
        .and_then(|r| registry.unit(r))
        .is_some_and(|u| u.kind == UnitKind::Portal);
    !to_portal && (starts_process(env) || runs)
}

fn handler_officer(env: &Envelope) -> Option<String> {
    env.payload.handler.as_ref().and_then(|h| h.officer.clone())
}

/// Start a process for `env` (see the module rules). Errors name what is wrong: sender not a
/// centre, procedure unknown or excluded, a role with no unit, no step chosen.
pub fn start(ctx: &Context<'_>, env: &Envelope) -> Result<Transition, Rejection> {
    let reg = ctx.registry;
    let Some(sender) = reg.unit(&env.sender) else {
        return Err(rejection(
            RejectCode::UnknownSender,
            format!("sender {} is not a unit of the registry", env.sender),
        ));
    };
    if sender.kind != UnitKind::Centre {
        return Err(rejection(
            RejectCode::MissingReceiver,
            format!(
                "only a centre may file a dossier without naming a receiver (the bus then runs the procedure's route); {} ({}) is not a centre: name the receiver",
                sender.code, sender.name
            ),
        ));
    }
    let Some(proc_) = reg.procedure(&env.ma_tthc) else {
        return Err(rejection(
            RejectCode::UnknownProcedure,
            format!("procedure {} is not in the catalogue", env.ma_tthc),
        ));
    };
    if !proc_.eligible() {
        return Err(rejection(
            RejectCode::IneligibleProcedure,
            format!(
                "procedure {} ({}) is excluded from liên thông",
                proc_.ma_tthc, proc_.name
            ),
        ));
    }
    let picked = chosen(env);
    let mut steps = Vec::new();
    for s in &proc_.steps {
        if s.optional
            && !s
                .choice
                .as_ref()
                .is_some_and(|c| picked.iter().any(|p| p == c))
        {
            continue;
        }
        let unit = match (&s.unit, &s.role) {
            (Some(u), _) => Some(u.clone()),
            (None, Some(r)) => resolve_role(reg, r, &sender.code),
            (None, None) => None,
        };
        let Some(unit) = unit else {
            return Err(rejection(
                RejectCode::NotOnRoute,
                format!(
                    "step {} of {} needs a unit with role {:?}, and the registry has none",
                    s.id, proc_.ma_tthc, s.role
                ),
            ));
        };
        steps.push(StepRun {
            id: s.id.clone(),
            name: s.name.clone(),
            group: s.group,
            deadline_working_days: s.deadline_working_days,
            unit,
            phase: StepPhase::Waiting,
            handed_by: None,
            handing_officer: None,
            forward_message_id: None,
            handed_at: None,
            due: None,
            ended_at: None,
            timeliness: None,
            last_status: None,
            officer: None,
            paused_secs: 0,
            paused_since: None,
            result: None,
            note: None,
        });
    }
    let optional_taken = steps
        .iter()
        .filter(|s| proc_.steps.iter().any(|p| p.id == s.id && p.optional))
        .count() as u32;
    if optional_taken < proc_.min_optional_steps {
        return Err(rejection(
            RejectCode::InvalidField,
            format!(
                "procedure {} needs at least {} of the optional procedures in payload.data.thu_tuc_lua_chon (choices: {})",
                proc_.ma_tthc,
                proc_.min_optional_steps,
                proc_
                    .steps
                    .iter()
                    .filter_map(|s| s.choice.clone())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        ));
    }
    if steps.is_empty() {
        return Err(rejection(
            RejectCode::NotOnRoute,
            format!("procedure {} has no step to run", proc_.ma_tthc),
        ));
    }
    let received = env
        .payload
        .data
        .as_ref()
        .and_then(|d| d.get("ngay_tiep_nhan"))
        .and_then(Value::as_str)
        .and_then(parse_ts)
        .or_else(|| parse_ts(&env.sent_at))
        .unwrap_or(ctx.now);
    // `payload.data.can_xac_minh` = true: the dossier needs verification, and the procedure's
    // longer deadline applies where it has one (birth group: 5 working days instead of 3).
    let verification = env
        .payload
        .data
        .as_ref()
        .and_then(|d| d.get("can_xac_minh"))
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let legal = if verification {
        proc_
            .deadline_working_days_with_verification
            .or(proc_.deadline_working_days)
    } else {
        proc_.deadline_working_days
    };
    let total_days = legal.unwrap_or_else(|| {
        let mut by_group: BTreeMap<u32, u32> = BTreeMap::new();
        for s in &steps {
            let e = by_group.entry(s.group).or_default();
            *e = (*e).max(s.deadline_working_days);
        }
        by_group.values().sum::<u32>().max(1)
    });
    let due = ctx.calendar.due(received, total_days, cutoff(proc_));
    let mut forward = env.clone();
    forward.attachments = env.attachments.clone();
    let mut p = Process {
        ma_ho_so: env.ma_ho_so.clone(),
        ma_tthc: env.ma_tthc.clone(),
        origin_unit: env.sender.clone(),
        correlation_id: env.correlation_id.clone(),
        phase: Phase::Running,
        received_at: ts(received),
        due: ts(due),
        group: 0,
        steps,
        forward,
        receiving_officer: handler_officer(env),
        status: TrangThaiHoSo::ACCEPTED.0,
        ended_at: None,
        timeliness: None,
        returned_at: None,
        reason: None,
        blocked: Vec::new(),
    };
    let mut t = Transition {
        process: p.clone(),
        out: Vec::new(),
        republish: Vec::new(),
        notes: vec![format!(
            "process started: {} step(s), received {}, due {}",
            p.steps.len(),
            p.received_at,
            p.due
        )],
    };
    // The portal learns the dossier as accepted by its centre, then each hand-over.
    let centre = p.origin_unit.clone();
    portal(
        ctx,
        &p,
        TrangThaiHoSo::ACCEPTED.0,
        &centre,
        p.receiving_officer.clone(),
        None,
        "Tiếp nhận hồ sơ liên thông",
        &mut t,
    );
    let first = p.steps.iter().map(|s| s.group).min().unwrap_or(1);
    open_group(ctx, &mut p, first, env, &mut t);
    t.process = p;
    Ok(t)
}

/// Put the results of `steps` into `data`: each as `ket_qua_<step id>`, and its top-level fields
/// where `data` lacks them.
fn carry_results<'a>(data: &mut Map<String, Value>, steps: impl Iterator<Item = &'a StepRun>) {
    for s in steps {
        if let Some(r) = &s.result {
            data.insert(
                format!("ket_qua_{}", snake_id(&s.id)),
                Value::Object(r.clone()),
            );
            for (k, v) in r {
                if !data.contains_key(k) {
                    data.insert(k.clone(), v.clone());
                }
            }
        }
    }
}

/// Merge the keys of the centre's `payload.data` (except `ngay_tiep_nhan`) and its new
/// attachments into the dossier's forward.
fn merge_centre_data(p: &mut Process, env: &Envelope) {
    let mut data = p.forward.payload.data.clone().unwrap_or_default();
    for (k, v) in env.payload.data.clone().unwrap_or_default() {
        if k != "ngay_tiep_nhan" {
            data.insert(k, v);
        }
    }
    p.forward.payload.data = Some(data);
    p.forward
        .attachments
        .extend(env.attachments.iter().cloned());
}

/// Forward every step of `group` to its unit.
fn open_group(
    ctx: &Context<'_>,
    p: &mut Process,
    group: u32,
    cause: &Envelope,
    t: &mut Transition,
) {
    p.group = group;
    let proc_ = ctx.registry.procedure(&p.ma_tthc);
    let first = p.steps.iter().map(|s| s.group).min() == Some(group);
    let received = parse_ts(&p.received_at).unwrap_or(ctx.now);
    // Results of the steps before this group, carried on.
    let mut carried = p.forward.payload.data.clone().unwrap_or_default();
    carry_results(&mut carried, p.steps.iter().filter(|s| s.group < group));
    let previous: Vec<(String, Option<String>)> = p
        .steps
        .iter()
        .filter(|s| s.group < group && s.phase == StepPhase::Done)
        .map(|s| (s.unit.clone(), s.officer.clone()))
        .collect();
    let (handed_by, handing_officer) = if first {
        (p.origin_unit.clone(), p.receiving_officer.clone())
    } else {
        previous
            .last()
            .cloned()
            .unwrap_or((p.origin_unit.clone(), None))
    };
    let mut opened = Vec::new();
    for s in p.steps.iter_mut().filter(|s| s.group == group) {
        let due = if first {
            ctx.calendar
                .due(received, s.deadline_working_days, proc_.and_then(cutoff))
        } else {
            ctx.calendar.due(ctx.now, s.deadline_working_days, None)
        };
        let mut f = p.forward.clone();
        f.message_id = crate::envelope::new_message_id();
        f.sender = handed_by.clone();
        f.receiver = Some(s.unit.clone());
        f.sent_at = ts(ctx.now);
        f.causation_id = Some(cause.message_id.clone());
        f.status = None;
        let mut data = carried.clone();
        data.insert("ngay_tiep_nhan".into(), json!(p.received_at));
        data.insert("han_xu_ly_buoc".into(), json!(ts(due)));
        data.insert("buoc".into(), json!(s.id));
        f.payload.data = Some(data);
        f.payload.result = None;
        f.payload.reason = None;
        s.phase = StepPhase::Open;
        s.handed_by = Some(handed_by.clone());
        s.handing_officer = handing_officer.clone();
        s.forward_message_id = Some(f.message_id.clone());
        s.handed_at = Some(ts(ctx.now));
        s.due = Some(ts(due));
        t.notes.push(format!(
            "step {} handed from {} to {}, due {}",
            s.id,
            handed_by,
            s.unit,
            ts(due)
        ));
        opened.push((s.unit.clone(), due));
        t.out.push(f);
    }
    p.status = TrangThaiHoSo::IN_PROGRESS.0;
    if let Some((unit, due)) = opened.first() {
        portal(
            ctx,
            p,
            TrangThaiHoSo::IN_PROGRESS.0,
            unit,
            None,
            Some(*due),
            &format!("Chuyển hồ sơ đến {}", unit_name(ctx, unit)),
            t,
        );
    }
}

fn unit_name(ctx: &Context<'_>, code: &str) -> String {
    ctx.registry
        .unit(code)
        .map(|u| u.name.clone())
        .unwrap_or_else(|| code.to_string())
}

/// A `dossier.status` of the dossier from its centre to `to`, sent now.
fn status_from_centre(ctx: &Context<'_>, p: &Process, to: &str, status: u8) -> Envelope {
    let mut e = Envelope::new(
        Kind::STATUS,
        &p.ma_ho_so,
        &p.ma_tthc,
        &p.origin_unit,
        Some(to),
        &p.correlation_id,
    );
    e.sent_at = ts(ctx.now);
    e.status = Some(TrangThaiHoSo(status));
    e
}

/// A progress message to the national portal, when the centre syncs to it.
#[allow(clippy::too_many_arguments)]
fn portal(
    ctx: &Context<'_>,
    p: &Process,
    status: u8,
    handler_unit: &str,
    officer: Option<String>,
    step_due: Option<DateTime<FixedOffset>>,
    what: &str,
    t: &mut Transition,
) {
    let Some(centre) = ctx.registry.unit(&p.origin_unit) else {
        return;
    };
    if !centre.syncs_to_portal {
        return;
    }
    let Some(portal) = ctx.registry.units().find(|u| u.kind == UnitKind::Portal) else {
        return;
    };
    let mut e = status_from_centre(ctx, p, &portal.code, status);
    e.payload.applicant = p.forward.payload.applicant.clone();
    e.payload.handler = Some(Handler {
        unit: Some(handler_unit.to_string()),
        officer,
        title: None,
    });
    e.payload.reason = Some(what.to_string());
    let due = parse_ts(&p.due);
    let mut data = Map::new();
    if let Some(proc_) = ctx.registry.procedure(&p.ma_tthc) {
        data.insert("ten_tthc".into(), json!(proc_.name));
    }
    if let Some(r) = parse_ts(&p.received_at) {
        data.insert("ngay_tiep_nhan".into(), json!(dvcqg_time(r)));
    }
    if let Some(d) = due {
        data.insert("ngay_hen_tra".into(), json!(dvcqg_time(d)));
    }
    data.insert("thoi_diem_xu_ly".into(), json!(dvcqg_time(ctx.now)));
    data.insert("ngay_bat_dau".into(), json!(dvcqg_time(ctx.now)));
    data.insert(
        "ngay_ket_thuc_theo_quy_dinh".into(),
        json!(step_due.or(due).map(dvcqg_time).unwrap_or_default()),
    );
    e.payload.data = Some(data);
    t.out.push(e);
}

fn step_index_for(p: &Process, unit: &str) -> Option<usize> {
    p.steps
        .iter()
        .position(|s| s.unit == unit && s.phase.open())
        .or_else(|| p.steps.iter().position(|s| s.unit == unit))
}

fn to_centre(ctx: &Context<'_>, p: &Process, cause: &Envelope, kind: &str, status: u8) -> Envelope {
    let mut e = cause.reply(kind, &cause.sender, &p.origin_unit);
    e.sent_at = ts(ctx.now);
    e.correlation_id = p.correlation_id.clone();
    e.status = Some(TrangThaiHoSo(status));
    e.payload = cause.payload.clone();
    e.attachments = cause.attachments.clone();
    e
}

/// Tell every open step's unit to stop (`status` 8) or cancel (7); closes those steps.
fn close_open_steps(
    ctx: &Context<'_>,
    p: &mut Process,
    except: Option<usize>,
    status: u8,
    why: &str,
    t: &mut Transition,
) {
    let phase = if status == TrangThaiHoSo::WITHDRAWN.0 {
        StepPhase::Cancelled
    } else {
        StepPhase::Stopped
    };
    for i in 0..p.steps.len() {
        if Some(i) == except || !p.steps[i].phase.open() {
            let s = &mut p.steps[i];
            if s.phase == StepPhase::Waiting {
                s.phase = phase;
                s.note = Some(why.to_string());
            }
            continue;
        }
        // A blocked step whose hand-over the agency refused, or the adapter could not express,
        // never reached the agency: there is nothing to cancel there.
        let id = p.steps[i].id.clone();
        let never_held = p.steps[i].phase == StepPhase::Blocked
            && p.blocked.iter().any(|b| {
                b.step.as_deref() == Some(id.as_str())
                    && matches!(
                        b.reason_code.as_str(),
                        "agency-refused" | "not-deliverable" | "invalid-field"
                    )
            });
        if never_held {
            let s = &mut p.steps[i];
            s.phase = phase;
            s.ended_at = Some(ts(ctx.now));
            s.note = Some(why.to_string());
            t.notes.push(format!(
                "step {} at {}: {} (its hand-over never reached {}: no cancel sent)",
                s.id, s.unit, why, s.unit
            ));
            continue;
        }
        let mut e = status_from_centre(ctx, p, &p.steps[i].unit, status);
        let s = &mut p.steps[i];
        e.causation_id = s.forward_message_id.clone();
        e.payload.reason = Some(why.to_string());
        s.phase = phase;
        s.ended_at = Some(ts(ctx.now));
        s.note = Some(why.to_string());
        t.notes
            .push(format!("step {} at {}: {}", s.id, s.unit, why));
        t.out.push(e);
    }
}

/// Advance `p` with `env` (a message of its dossier). Errors: the sender holds no step of the
/// dossier and is not its centre, or a centre message that makes no sense in the current phase.
pub fn advance(ctx: &Context<'_>, mut p: Process, env: &Envelope) -> Result<Transition, Rejection> {
    let mut t = Transition {
        process: p.clone(),
        out: Vec::new(),
        notes: Vec::new(),
        republish: Vec::new(),
    };
    let status = env.status.map(|s| s.0);
    if env.sender == p.origin_unit {
        centre_message(ctx, &mut p, env, status, &mut t)?;
        t.process = p;
        return Ok(t);
    }
    let Some(i) = step_index_for(&p, &env.sender) else {
        return Err(rejection(
            RejectCode::NotOnRoute,
            format!(
                "{} holds no step of dossier {} (route: {}) and is not its centre {}",
                env.sender,
                p.ma_ho_so,
                p.steps
                    .iter()
                    .map(|s| format!("{} ({})", s.id, s.unit))
                    .collect::<Vec<_>>()
                    .join(", "),
                p.origin_unit
            ),
        ));
    };
    if env.kind.is_forward() {
        return Err(rejection(
            RejectCode::NotOnRoute,
            format!(
                "dossier {} is run by the bus (process manager): {} reports its step with dossier.result or dossier.status, and the bus forwards the dossier to the next step",
                p.ma_ho_so, env.sender
            ),
        ));
    }
    if p.phase.ended() || !p.steps[i].phase.open() {
        t.notes.push(format!(
            "ignored: {} from {} after step {} ended ({:?}) / dossier {:?}",
            env.kind, env.sender, p.steps[i].id, p.steps[i].phase, p.phase
        ));
        t.process = p;
        return Ok(t);
    }
    let done = env.kind.as_str() == Kind::RESULT && !matches!(status, Some(3 | 5 | 6 | 7 | 8))
        || matches!(status, Some(9 | 10));
    if let Some(o) = handler_officer(env) {
        p.steps[i].officer = Some(o);
    }
    p.steps[i].last_status = status.or(p.steps[i].last_status);
    if p.steps[i].phase == StepPhase::Blocked {
        // The unit answers: it has the dossier after all (the dead-lettered hand-over reached
        // it, or an earlier copy did).
        blocked::unblock_answered(&mut p, i, &env.sender, &mut t);
    }
    if done {
        let due = p.steps[i]
            .due
            .as_deref()
            .and_then(parse_ts)
            .unwrap_or(ctx.now);
        let tl = ctx.calendar.classify(ctx.now, due);
        let step_id = p.steps[i].id.clone();
        p.blocked
            .retain(|b| b.step.as_deref() != Some(step_id.as_str()));
        let s = &mut p.steps[i];
        s.phase = StepPhase::Done;
        s.ended_at = Some(ts(ctx.now));
        s.timeliness = Some(tl);
        s.result = env
            .payload
            .result
            .clone()
            .or_else(|| env.payload.data.clone())
            .or_else(|| Some(Map::new()));
        if let Some(r) = &env.payload.reason {
            s.note = Some(r.clone());
        }
        t.notes
            .push(format!("step {} done at {}: {}", s.id, s.unit, tl.vi()));
        let group = s.group;
        let group_done = p
            .steps
            .iter()
            .filter(|s| s.group == group)
            .all(|s| s.phase == StepPhase::Done);
        if group_done {
            let next = p
                .steps
                .iter()
                .filter(|s| s.group > group)
                .map(|s| s.group)
                .min();
            match next {
                Some(g) => open_group(ctx, &mut p, g, env, &mut t),
                None => complete(ctx, &mut p, env, &mut t),
            }
        } else {
            let unit = env.sender.clone();
            portal(
                ctx,
                &p,
                TrangThaiHoSo::IN_PROGRESS.0,
                &unit,
                handler_officer(env),
                p.steps[i].due.as_deref().and_then(parse_ts),
                &format!(
                    "{}: đã xử lý xong bước {}",
                    unit_name(ctx, &unit),
                    p.steps[i].name
                ),
                &mut t,
            );
        }
        t.process = p;
        return Ok(t);
    }
    match status {
        Some(3) | Some(8) => {
            let s = status.unwrap_or(3);
            let reason = env
                .payload
                .reason
                .clone()
                .unwrap_or_else(|| "(no reason given)".into());
            {
                let st = &mut p.steps[i];
                st.phase = if s == 3 {
                    StepPhase::Refused
                } else {
                    StepPhase::Stopped
                };
                st.ended_at = Some(ts(ctx.now));
                let due = st.due.as_deref().and_then(parse_ts).unwrap_or(ctx.now);
                st.timeliness = Some(ctx.calendar.classify(ctx.now, due));
                st.note = Some(reason.clone());
            }
            let who = unit_name(ctx, &env.sender);
            let why = format!(
                "{} {}: {reason}",
                who,
                if s == 3 {
                    "từ chối"
                } else {
                    "dừng xử lý"
                }
            );
            close_open_steps(ctx, &mut p, Some(i), TrangThaiHoSo::STOPPED.0, &why, &mut t);
            let phase = if s == 3 {
                Phase::Refused
            } else {
                Phase::Stopped
            };
            end(ctx, &mut p, (phase, s), &why, false, &mut t);
            t.out.push(to_centre(ctx, &p, env, Kind::STATUS, s));
            portal(
                ctx,
                &p,
                s,
                &env.sender,
                handler_officer(env),
                None,
                &why,
                &mut t,
            );
        }
        Some(5) | Some(6) => {
            let s = status.unwrap_or(5);
            {
                let st = &mut p.steps[i];
                st.phase = StepPhase::Paused;
                st.paused_since = Some(ts(ctx.now));
                st.note = env.payload.reason.clone();
                if let Some(r) = env.payload.result.clone().or(env.payload.data.clone()) {
                    st.result = Some(r);
                }
            }
            p.phase = Phase::Paused;
            p.status = s;
            t.notes.push(format!(
                "step {} paused by {} (status {s}): the clock stops until the centre answers",
                p.steps[i].id, env.sender
            ));
            t.out.push(to_centre(ctx, &p, env, Kind::STATUS, s));
            let reason = env.payload.reason.clone().unwrap_or_default();
            portal(
                ctx,
                &p,
                s,
                &env.sender,
                handler_officer(env),
                None,
                &reason,
                &mut t,
            );
        }
        _ => {
            // 2, 4 or no status: progress at the unit.
            t.notes.push(format!(
                "step {} at {}: status {}",
                p.steps[i].id,
                env.sender,
                status.map(|s| s.to_string()).unwrap_or_else(|| "-".into())
            ));
        }
    }
    t.process = p;
    Ok(t)
}

/// End the dossier in `phase` with TrangThaiHoSo `status` for `why` (`by_centre`: the centre
/// ended it, else a unit).
fn end(
    ctx: &Context<'_>,
    p: &mut Process,
    (phase, status): (Phase, u8),
    why: &str,
    by_centre: bool,
    t: &mut Transition,
) {
    p.phase = phase;
    p.status = status;
    p.ended_at = Some(ts(ctx.now));
    p.reason = Some(why.to_string());
    p.group = 0;
    // A blocked hand-over no longer matters once the dossier has ended (its step is closed).
    p.blocked.retain(|b| b.step.is_none());
    t.notes.push(if by_centre {
        format!("dossier ended by the centre: {why}")
    } else {
        format!("dossier ended: {why}")
    });
}

fn complete(ctx: &Context<'_>, p: &mut Process, cause: &Envelope, t: &mut Transition) {
    let due = parse_ts(&p.due).unwrap_or(ctx.now);
    let tl = ctx.calendar.classify(ctx.now, due);
    p.phase = Phase::Completed;
    p.status = TrangThaiHoSo::PROCESSED.0;
    p.ended_at = Some(ts(ctx.now));
    p.timeliness = Some(tl);
    p.group = 0;
    let mut result = Map::new();
    for s in &p.steps {
        result.insert(
            snake_id(&s.id),
            Value::Object(s.result.clone().unwrap_or_default()),
        );
    }
    let mut e = cause.reply(Kind::RESULT, &cause.sender, &p.origin_unit);
    e.sent_at = ts(ctx.now);
    e.correlation_id = p.correlation_id.clone();
    e.status = Some(TrangThaiHoSo::PROCESSED);
    e.payload.applicant = p.forward.payload.applicant.clone();
    e.payload.result = Some(result);
    e.payload.handler = cause.payload.handler.clone();
    e.payload.reason = Some(format!(
        "Đã xử lý xong {} bước liên thông ({})",
        p.steps.len(),
        tl.vi()
    ));
    t.notes.push(format!("dossier completed: {}", tl.vi()));
    t.out.push(e);
    portal(
        ctx,
        p,
        TrangThaiHoSo::PROCESSED.0,
        &cause.sender,
        handler_officer(cause),
        None,
        "Đã xử lý xong",
        t,
    );
}

fn centre_message(
    ctx: &Context<'_>,
    p: &mut Process,
    env: &Envelope,
    status: Option<u8>,
    t: &mut Transition,
) -> Result<(), Rejection> {
    let phase_err = |what: &str| {
        rejection(
            RejectCode::InvalidField,
            format!(
                "dossier {} is {:?} ({}): {what}",
                p.ma_ho_so,
                p.phase,
                p.phase.vi()
            ),
        )
    };
    match (env.kind.as_str(), status) {
        (Kind::FORWARD, _) if env.receiver.is_none() => {
            if p.phase == Phase::Running && p.steps.iter().any(|s| s.phase == StepPhase::Blocked) {
                // The centre amends the data of a dossier whose hand-over was dead-lettered.
                blocked::amend(ctx, p, env, t);
                return Ok(());
            }
            if p.phase != Phase::Paused {
                return Err(phase_err(
                    "the bus is already running its route; a new dossier.forward without receiver is only an answer to a supplement request or a payment notice, or an amendment of a dossier whose hand-over was dead-lettered",
                ));
            }
            // Resume: the centre's answer (supplement, proof of payment) goes to the paused step.
            merge_centre_data(p, env);
            let mut resumed = Vec::new();
            let mut paused_total = 0;
            let pausing = ctx
                .registry
                .procedure(&p.ma_tthc)
                .map(|x| x.clock_pausing_statuses.clone())
                .unwrap_or_default();
            for s in p.steps.iter_mut().filter(|s| s.phase == StepPhase::Paused) {
                let since = s
                    .paused_since
                    .as_deref()
                    .and_then(parse_ts)
                    .unwrap_or(ctx.now);
                // Only the statuses of the procedure's `clock_pausing_statuses` stop the clock;
                // another pause waits for the centre with the clock running.
                let secs = if s.last_status.is_some_and(|st| pausing.contains(&st)) {
                    ctx.calendar.office_seconds(since, ctx.now)
                } else {
                    0
                };
                paused_total = paused_total.max(secs);
                s.paused_secs += secs;
                s.paused_since = None;
                if let Some(d) = s.due.as_deref().and_then(parse_ts) {
                    s.due = Some(ts(ctx.calendar.add_office_seconds(d, secs)));
                }
                s.phase = StepPhase::Open;
                let mut f = p.forward.clone();
                f.message_id = crate::envelope::new_message_id();
                f.sender = p.origin_unit.clone();
                f.receiver = Some(s.unit.clone());
                f.sent_at = ts(ctx.now);
                f.causation_id = Some(env.message_id.clone());
                f.status = None;
                let mut data = f.payload.data.clone().unwrap_or_default();
                data.insert("han_xu_ly_buoc".into(), json!(s.due.clone()));
                data.insert("buoc".into(), json!(s.id));
                data.insert("tiep_tuc_sau_tam_dung".into(), json!(true));
                f.payload.data = Some(data);
                s.forward_message_id = Some(f.message_id.clone());
                s.note = Some(format!(
                    "tạm dừng {} giờ làm việc (không tính vào thời hạn)",
                    (secs as f64 / 3600.0 * 10.0).round() / 10.0
                ));
                t.notes.push(format!(
                    "step {} resumed after {secs} s of office time paused; due {}",
                    s.id,
                    s.due.clone().unwrap_or_default()
                ));
                resumed.push((s.unit.clone(), f));
            }
            // Earlier results the resumed step needs.
            for (_, f) in resumed.iter_mut() {
                let mut data = f.payload.data.clone().unwrap_or_default();
                carry_results(
                    &mut data,
                    p.steps.iter().filter(|s| s.phase == StepPhase::Done),
                );
                f.payload.data = Some(data);
            }
            if let Some(d) = parse_ts(&p.due) {
                p.due = ts(ctx.calendar.add_office_seconds(d, paused_total));
            }
            p.phase = Phase::Running;
            p.status = TrangThaiHoSo::IN_PROGRESS.0;
            let first = resumed.first().map(|(u, _)| u.clone());
            for (_, f) in resumed {
                t.out.push(f);
            }
            if let Some(u) = first {
                let due = p
                    .steps
                    .iter()
                    .find(|s| s.unit == u)
                    .and_then(|s| s.due.as_deref().and_then(parse_ts));
                portal(
                    ctx,
                    p,
                    TrangThaiHoSo::IN_PROGRESS.0,
                    &u,
                    handler_officer(env),
                    due,
                    "Công dân đã bổ sung / thực hiện nghĩa vụ tài chính; tiếp tục xử lý",
                    t,
                );
            }
            Ok(())
        }
        (Kind::STATUS, Some(7)) | (Kind::STATUS, Some(8)) => {
            if p.phase.ended() {
                return Err(phase_err("it has already ended"));
            }
            let s = status.unwrap_or(7);
            let why = env.payload.reason.clone().unwrap_or_else(|| {
                if s == 7 {
                    "Công dân yêu cầu rút hồ sơ".into()
                } else {
                    "Dừng xử lý theo yêu cầu của cơ quan tiếp nhận".into()
                }
            });
            close_open_steps(ctx, p, None, s, &why, t);
            let phase = if s == 7 {
                Phase::Withdrawn
            } else {
                Phase::Stopped
            };
            end(ctx, p, (phase, s), &why, true, t);
            portal(
                ctx,
                p,
                s,
                &p.origin_unit.clone(),
                handler_officer(env),
                None,
                &why,
                t,
            );
            Ok(())
        }
        (Kind::STATUS, Some(10)) => {
            if p.phase != Phase::Completed {
                return Err(phase_err(
                    "status 10 (result returned) comes after the bus has returned the result",
                ));
            }
            if p.returned_at.is_none() {
                p.returned_at = Some(ts(ctx.now));
                p.status = 10;
                t.notes.push("result returned to the citizen".into());
                portal(
                    ctx,
                    p,
                    10,
                    &p.origin_unit.clone(),
                    handler_officer(env),
                    None,
                    "Đã trả kết quả cho công dân",
                    t,
                );
            }
            Ok(())
        }
        _ => Err(phase_err(&format!(
            "a {} with status {:?} from the centre is not a step of the process (the centre may send: dossier.forward without receiver to answer a pause, dossier.status 7 withdrawal, 8 stop, 10 result returned)",
            env.kind, status
        ))),
    }
}

/// What `lienthong overdue` lists: an open step (or dossier) near or past its due time.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OverdueItem {
    /// Dossier code.
    pub ma_ho_so: String,
    /// Procedure code.
    pub ma_tthc: String,
    /// Step id, or `None` for the dossier as a whole.
    pub step: Option<String>,
    /// The unit that holds it (for a paused dossier: the centre, waiting for the citizen).
    pub holder: String,
    /// Due time (RFC 3339 +07:00).
    pub due: String,
    /// `due_soon` (within the margin) or `overdue`.
    pub level: AlertLevel,
    /// Office time left (negative: past due), seconds.
    pub office_secs_left: i64,
    /// `blocked`: what was dead-lettered and why (`hand-over of step thuong-tru to CA.H48:
    /// agency-refused: …`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// `blocked`: the dead letter's id (the message id to replay).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dead_letter_id: Option<String>,
}

impl OverdueItem {
    /// What makes the alert unique in `process_alerts`: a due-time alert is raised once per
    /// step, level and due time; a `blocked` one once per dead letter.
    pub fn alert_key(&self) -> &str {
        self.dead_letter_id.as_deref().unwrap_or(&self.due)
    }
}

/// How urgent an [`OverdueItem`] is (ordered: `blocked` is the most urgent).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertLevel {
    /// Within the configured margin of its due time.
    DueSoon,
    /// Past its due time.
    Overdue,
    /// A message of the dossier was dead-lettered and nothing moves until it is recovered
    /// (replayed, retried, or the centre amends the dossier).
    Blocked,
}

impl AlertLevel {
    /// snake_case name.
    pub fn as_str(self) -> &'static str {
        match self {
            AlertLevel::DueSoon => "due_soon",
            AlertLevel::Overdue => "overdue",
            AlertLevel::Blocked => "blocked",
        }
    }
}

/// The open steps of `p` (and the dossier itself) that are due within `margin_secs` of office
/// time or past due at `now`. A paused step is not counted (its clock is stopped).
pub fn overdue_items(
    p: &Process,
    cal: &WorkCalendar,
    now: DateTime<FixedOffset>,
    margin_secs: i64,
) -> Vec<OverdueItem> {
    let mut out = Vec::new();
    // Dead-lettered messages first: nothing moves until someone recovers them, whatever the
    // due time (also after the dossier has ended: a result or cancel that did not arrive).
    for b in &p.blocked {
        let step = b
            .step
            .as_deref()
            .and_then(|id| p.steps.iter().find(|s| s.id == id));
        let due = step
            .and_then(|s| s.due.as_deref())
            .unwrap_or(&p.due)
            .to_string();
        let left = parse_ts(&due)
            .map(|d| {
                if now > d {
                    -cal.office_seconds(d, now).max(1)
                } else {
                    cal.office_seconds(now, d)
                }
            })
            .unwrap_or(0);
        out.push(OverdueItem {
            ma_ho_so: p.ma_ho_so.clone(),
            ma_tthc: p.ma_tthc.clone(),
            step: b.step.clone(),
            holder: b.receiver.clone(),
            due,
            level: AlertLevel::Blocked,
            office_secs_left: left,
            reason: Some(format!("{}: {}", b.what(), b.why())),
            dead_letter_id: Some(b.message_id.clone()),
        });
    }
    if p.phase.ended() {
        return out;
    }
    let left = |due: DateTime<FixedOffset>| {
        if now > due {
            -cal.office_seconds(due, now).max(1)
        } else {
            cal.office_seconds(now, due)
        }
    };
    let level = |due: DateTime<FixedOffset>, l: i64| {
        if now > due {
            Some(AlertLevel::Overdue)
        } else if l <= margin_secs {
            Some(AlertLevel::DueSoon)
        } else {
            None
        }
    };
    for s in p.steps.iter().filter(|s| s.phase == StepPhase::Open) {
        let Some(due) = s.due.as_deref().and_then(parse_ts) else {
            continue;
        };
        let l = left(due);
        if let Some(lv) = level(due, l) {
            out.push(OverdueItem {
                ma_ho_so: p.ma_ho_so.clone(),
                ma_tthc: p.ma_tthc.clone(),
                step: Some(s.id.clone()),
                holder: s.unit.clone(),
                due: ts(due),
                level: lv,
                office_secs_left: l,
                reason: None,
                dead_letter_id: None,
            });
        }
    }
    if p.phase == Phase::Running
        && let Some(due) = parse_ts(&p.due)
    {
        let l = left(due);
        if let Some(lv) = level(due, l) {
            let holder = p
                .steps
                .iter()
                .find(|s| s.phase == StepPhase::Open)
                .map(|s| s.unit.clone())
                .unwrap_or_else(|| p.origin_unit.clone());
            out.push(OverdueItem {
                ma_ho_so: p.ma_ho_so.clone(),
                ma_tthc: p.ma_tthc.clone(),
                step: None,
                holder,
                due: ts(due),
                level: lv,
                office_secs_left: l,
                reason: None,
                dead_letter_id: None,
            });
        }
    }
    out
}

/// What [`Store::apply_process`] did with a message.
#[derive(Debug)]
pub enum Applied {
    /// The message was applied before (same message id): nothing changed.
    Duplicate,
    /// The message cannot be applied; the reason goes to the dead-letter queue.
    Rejected(Rejection),
    /// Applied: the state was saved and the envelopes to send are in the outbox.
    Done {
        /// The new state.
        process: Box<Process>,
        /// What happened, for the trace.
        notes: Vec<String>,
    },
}

/// One envelope waiting in the process outbox.
#[derive(Debug, Clone)]
pub struct OutboxEntry {
    /// Outbox sequence number.
    pub seq: i64,
    /// Message id of the envelope.
    pub message_id: String,
    /// Dossier code.
    pub ma_ho_so: String,
    /// Receiver unit (routing key on the deliver exchange).
    pub receiver: String,
    /// The envelope (JSON).
    pub body: Vec<u8>,
}

impl Store {
    /// Apply message `message_id` of dossier `ma_ho_so` in one transaction: skip it if the inbox
    /// has it (idempotent consumer), else run `f` on the stored state and save the new state, the
    /// envelopes to send (transactional outbox) and the message id, atomically. `f` returns
    /// `Ok(None)` when the dossier is not run by the process manager.
    pub fn apply_process(
        &self,
        message_id: &str,
        ma_ho_so: &str,
        f: impl FnOnce(Option<Process>) -> Result<Option<Transition>, Rejection>,
    ) -> Result<Option<Applied>, StoreError> {
        self.apply_process_as(Some(message_id), ma_ho_so, f)
    }

    /// [`Store::apply_process`] for an event the inbox does not deduplicate (`inbox` = None):
    /// one whose transition is idempotent by itself (a dead letter, a replay, an operator's
    /// retry). Also publishes again, with their ids, the outbox envelopes the transition names
    /// in [`Transition::republish`], and keeps `process_blocked` (the dossiers with a blocked
    /// message, which the overdue scan reads even after they ended) in step.
    pub fn apply_process_as(
        &self,
        inbox: Option<&str>,
        ma_ho_so: &str,
        f: impl FnOnce(Option<Process>) -> Result<Option<Transition>, Rejection>,
    ) -> Result<Option<Applied>, StoreError> {
        self.with(|c| {
            // IMMEDIATE: the write lock is taken before the reads, so a commit of another
            // connection between them (the group-commit writer's) cannot make the upgrade fail
            // with SQLITE_BUSY (a snapshot too old to write from, which no busy timeout waits out).
            let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            if let Some(message_id) = inbox {
                let seen: Option<i64> = tx
                    .query_row(
                        "SELECT 1 FROM process_inbox WHERE message_id = ?1",
                        params![message_id],
                        |r| r.get(0),
                    )
                    .optional()?;
                if seen.is_some() {
                    return Ok(Some(Applied::Duplicate));
                }
            }
            let state: Option<String> = tx
                .query_row(
                    "SELECT state FROM processes WHERE ma_ho_so = ?1",
                    params![ma_ho_so],
                    |r| r.get(0),
                )
                .optional()?;
            let current = match state.map(|s| serde_json::from_str::<Process>(&s)) {
                None => None,
                Some(Ok(p)) => Some(p),
                Some(Err(e)) => {
                    return Ok(Some(Applied::Rejected(Rejection::new(
                        RejectCode::InvalidField,
                        format!("the stored process of {ma_ho_so} is unreadable: {e}"),
                    ))));
                }
            };
            let t = match f(current) {
                Ok(Some(t)) => t,
                Ok(None) => return Ok(None),
                Err(r) => return Ok(Some(Applied::Rejected(r))),
            };
            let now = crate::clock::now_ms();
            let p = &t.process;
            let json = serde_json::to_string(p).unwrap_or_default();
            let phase = serde_json::to_value(p.phase)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default();
            tx.execute(
                "INSERT INTO processes (ma_ho_so, ma_tthc, origin_unit, phase, updated_ms, state) VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                 ON CONFLICT (ma_ho_so) DO UPDATE SET phase = excluded.phase, updated_ms = excluded.updated_ms, state = excluded.state",
                params![p.ma_ho_so, p.ma_tthc, p.origin_unit, phase, now, json],
            )?;
            for e in &t.out {
                tx.execute(
                    "INSERT OR IGNORE INTO process_outbox (message_id, ma_ho_so, receiver, body, created_ms) VALUES (?1, ?2, ?3, ?4, ?5)",
                    params![e.message_id, e.ma_ho_so, e.receiver.clone().unwrap_or_default(), e.to_bytes(), now],
                )?;
            }
            for id in &t.republish {
                tx.execute(
                    "UPDATE process_outbox SET sent_ms = NULL WHERE message_id = ?1 AND ma_ho_so = ?2",
                    params![id, p.ma_ho_so],
                )?;
            }
            if p.blocked.is_empty() {
                tx.execute(
                    "DELETE FROM process_blocked WHERE ma_ho_so = ?1",
                    params![p.ma_ho_so],
                )?;
            } else {
                tx.execute(
                    "INSERT OR IGNORE INTO process_blocked (ma_ho_so, since_ms) VALUES (?1, ?2)",
                    params![p.ma_ho_so, now],
                )?;
            }
            if let Some(message_id) = inbox {
                tx.execute(
                    "INSERT INTO process_inbox (message_id, ma_ho_so, at_ms) VALUES (?1, ?2, ?3)",
                    params![message_id, ma_ho_so, now],
                )?;
            }
            tx.commit()?;
            Ok(Some(Applied::Done {
                process: Box::new(t.process),
                notes: t.notes,
            }))
        })
    }

    /// What the router needs to know of a dossier, in one lock: whether the process manager runs
    /// it, and its recorded origin.
    pub fn lookup_dossier(
        &self,
        ma_ho_so: &str,
    ) -> Result<(bool, Option<crate::store::Origin>), StoreError> {
        self.with(|c| {
            let managed = c
                .prepare_cached("SELECT 1 FROM processes WHERE ma_ho_so = ?1")?
                .query_row(params![ma_ho_so], |_| Ok(()))
                .optional()?
                .is_some();
            let origin = c
                .prepare_cached("SELECT ma_ho_so, ma_tthc, origin_unit, correlation_id FROM dossier_origins WHERE ma_ho_so = ?1")?
                .query_row(params![ma_ho_so], |r| {
                    Ok(crate::store::Origin {
                        ma_ho_so: r.get(0)?,
                        ma_tthc: r.get(1)?,
                        origin_unit: r.get(2)?,
                        correlation_id: r.get(3)?,
                    })
                })
                .optional()?;
            Ok((managed, origin))
        })
    }

    /// Whether the process manager runs dossier `ma_ho_so`.
    pub fn has_process(&self, ma_ho_so: &str) -> Result<bool, StoreError> {
        self.with(|c| {
            c.prepare_cached("SELECT 1 FROM processes WHERE ma_ho_so = ?1")?
                .query_row(params![ma_ho_so], |_| Ok(()))
                .optional()
                .map(|o| o.is_some())
        })
    }

    /// The process of a dossier.
    pub fn process(&self, ma_ho_so: &str) -> Result<Option<Process>, StoreError> {
        let s: Option<String> = self.with(|c| {
            c.prepare_cached("SELECT state FROM processes WHERE ma_ho_so = ?1")?
                .query_row(params![ma_ho_so], |r| r.get(0))
                .optional()
        })?;
        Ok(s.and_then(|s| serde_json::from_str(&s).ok()))
    }

    /// Every process still running or paused or with a blocked message, or every process when
    /// `all`.
    pub fn processes(&self, all: bool) -> Result<Vec<Process>, StoreError> {
        let rows: Vec<String> = self.with(|c| {
            let sql = if all {
                "SELECT state FROM processes ORDER BY ma_ho_so"
            } else {
                "SELECT state FROM processes WHERE phase IN ('running', 'paused') OR ma_ho_so IN (SELECT ma_ho_so FROM process_blocked) ORDER BY ma_ho_so"
            };
            let mut st = c.prepare(sql)?;
            st.query_map([], |r| r.get(0))?.collect()
        })?;
        Ok(rows
            .iter()
            .filter_map(|s| serde_json::from_str(s).ok())
            .collect())
    }

    /// Outbox envelopes not yet confirmed by the broker: of one dossier, or all created at least
    /// `older_than_ms` ago (the sweeper). Oldest first.
    pub fn unsent(
        &self,
        ma_ho_so: Option<&str>,
        older_than_ms: i64,
    ) -> Result<Vec<OutboxEntry>, StoreError> {
        let cutoff = crate::clock::now_ms() - older_than_ms;
        self.with(|c| {
            let row = |r: &rusqlite::Row<'_>| {
                Ok(OutboxEntry {
                    seq: r.get(0)?,
                    message_id: r.get(1)?,
                    ma_ho_so: r.get(2)?,
                    receiver: r.get(3)?,
                    body: r.get(4)?,
                })
            };
            match ma_ho_so {
                Some(m) => {
                    let mut st = c.prepare_cached("SELECT seq, message_id, ma_ho_so, receiver, body FROM process_outbox WHERE sent_ms IS NULL AND ma_ho_so = ?1 ORDER BY seq")?;
                    st.query_map(params![m], row)?.collect()
                }
                None => {
                    let mut st = c.prepare_cached("SELECT seq, message_id, ma_ho_so, receiver, body FROM process_outbox WHERE sent_ms IS NULL AND created_ms <= ?1 ORDER BY seq LIMIT 1000")?;
                    st.query_map(params![cutoff], row)?.collect()
                }
            }
        })
    }

    /// The dossier of outbox envelope `message_id`, when the process manager sent it (a
    /// replayed dead letter of the process manager's own comes back with its id).
    pub fn outbox_dossier(&self, message_id: &str) -> Result<Option<String>, StoreError> {
        self.with(|c| {
            c.prepare_cached("SELECT ma_ho_so FROM process_outbox WHERE message_id = ?1")?
                .query_row(params![message_id], |r| r.get(0))
                .optional()
        })
    }

    /// Mark an outbox envelope as confirmed by the broker.
    pub fn mark_sent(&self, seq: i64) -> Result<(), StoreError> {
        self.with(|c| {
            c.prepare_cached("UPDATE process_outbox SET sent_ms = ?2 WHERE seq = ?1")?
                .execute(params![seq, crate::clock::now_ms()])
                .map(|_| ())
        })
    }

    /// Record an alert; true when it is new (each step, level and due time alerts once).
    pub fn record_alert(&self, item: &OverdueItem) -> Result<bool, StoreError> {
        self.with(|c| {
            c.prepare_cached("INSERT OR IGNORE INTO process_alerts (ma_ho_so, step, level, due, holder, at_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6)")?
                .execute(params![
                    item.ma_ho_so,
                    item.step.clone().unwrap_or_else(|| "*".into()),
                    item.level.as_str(),
                    item.alert_key(),
                    item.holder,
                    crate::clock::now_ms()
                ])
            .map(|n| n == 1)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::{DEFAULT_CONFIG, Settings};

    const CENTRE: &str = "000.20.59.H48";

    fn setup() -> (Registry, WorkCalendar) {
        let s = Settings::from_toml(DEFAULT_CONFIG, false).expect("config");
        (
            Registry::new(&s),
            WorkCalendar::new(&s.calendar).expect("calendar"),
        )
    }

    fn at(s: &str) -> DateTime<FixedOffset> {
        DateTime::parse_from_rfc3339(s).expect("time")
    }

    fn filed(ma_tthc: &str, received: &str, data: Value) -> Envelope {
        let mut e = Envelope::new(
            Kind::FORWARD,
            "000.20.59.H48-261127-0001",
            ma_tthc,
            CENTRE,
            None,
            "c1",
        );
        e.sent_at = received.into();
        e.payload.data = data.as_object().cloned();
        e
    }

    fn answer(p: &Process, from: &str, kind: &str, status: Option<u8>) -> Envelope {
        let mut e = Envelope::new(kind, &p.ma_ho_so, &p.ma_tthc, from, Some(CENTRE), "c1");
        e.status = status.map(TrangThaiHoSo);
        e.payload.result = Some(Map::new());
        e
    }

    fn ctx<'a>(r: &'a Registry, c: &'a WorkCalendar, now: &str) -> Context<'a> {
        Context {
            registry: r,
            calendar: c,
            now: at(now),
        }
    }

    fn receivers(t: &Transition) -> Vec<(String, Option<u8>)> {
        t.out
            .iter()
            .map(|e| {
                (
                    e.receiver.clone().unwrap_or_default(),
                    e.status.map(|s| s.0),
                )
            })
            .collect()
    }

    #[test]
    fn birth_after_the_cutoff_on_friday_counts_from_monday_and_joins_the_parallel_group() {
        let (r, c) = setup();
        // Friday 27 November 2026, 15:30: after the 15:00 cut-off of the birth group.
        let env = filed("1.001193", "2026-11-27T15:30:00+07:00", json!({}));
        let st = start(&ctx(&r, &c, "2026-11-27T15:30:05+07:00"), &env).expect("start");
        let p = st.process.clone();
        assert_eq!(p.received_at, "2026-11-27T15:30:00.000+07:00");
        // 3 working days from Monday 30 November: Wednesday 2 December at the end of office hours.
        assert_eq!(p.due, "2026-12-02T17:00:00.000+07:00");
        assert_eq!(
            receivers(&st),
            vec![
                ("DVCQG".to_string(), Some(2)),
                ("000.10.59.H48".to_string(), None),
                ("DVCQG".to_string(), Some(4)),
            ]
        );
        let civil = &p.steps[0];
        assert_eq!(civil.due.as_deref(), Some("2026-11-30T17:00:00.000+07:00"));
        assert_eq!(civil.phase, StepPhase::Open);
        assert!(p.steps[1..].iter().all(|s| s.phase == StepPhase::Waiting));
        // A unit on the route does not address the next step itself.
        let mut own = answer(&p, "000.10.59.H48", Kind::FORWARD, None);
        own.receiver = Some("CA.H48".into());
        let e = advance(&ctx(&r, &c, "2026-11-30T08:30:00+07:00"), p.clone(), &own)
            .expect_err("forward from a step unit");
        assert_eq!(e.code, RejectCode::NotOnRoute);
        assert!(e.detail.contains("dossier.result"), "{}", e.detail);
        // Civil status done on Monday morning: both parallel steps are forwarded, carrying it.
        let mut done = answer(&p, "000.10.59.H48", Kind::RESULT, None);
        done.payload.result = json!({"so_dang_ky_khai_sinh": "12/2026"})
            .as_object()
            .cloned();
        let t2 = advance(&ctx(&r, &c, "2026-11-30T09:00:00+07:00"), p, &done).expect("done");
        let p = t2.process.clone();
        assert_eq!(p.steps[0].timeliness, Some(Timeliness::OnTime));
        let fwd: Vec<&Envelope> = t2.out.iter().filter(|e| e.kind.is_forward()).collect();
        assert_eq!(fwd.len(), 2, "police and social insurance in parallel");
        for f in &fwd {
            let d = f.payload.data.as_ref().expect("data");
            assert_eq!(d["ket_qua_khai_sinh"]["so_dang_ky_khai_sinh"], "12/2026");
            assert_eq!(
                f.sender, "000.10.59.H48",
                "handed over by the civil-status office"
            );
        }
        // Two working days from the Monday 09:00 hand-over: Tuesday 17:00.
        assert_eq!(
            p.steps[1].due.as_deref(),
            Some("2026-12-01T17:00:00.000+07:00")
        );
        // Police first: nothing goes to the centre until Social Insurance is done too.
        let t3 = advance(
            &ctx(&r, &c, "2026-11-30T10:00:00+07:00"),
            p,
            &answer(&t2.process, "CA.H48", Kind::RESULT, None),
        )
        .expect("police");
        assert!(t3.out.iter().all(|e| e.receiver.as_deref() != Some(CENTRE)));
        // Social Insurance late on Wednesday: the join completes, the result goes to the centre.
        let t4 = advance(
            &ctx(&r, &c, "2026-12-02T08:00:00+07:00"),
            t3.process.clone(),
            &answer(&t3.process, "BHXH.H48", Kind::STATUS, Some(9)),
        )
        .expect("bhxh");
        let p = t4.process;
        assert_eq!(p.phase, Phase::Completed);
        assert_eq!(p.steps[1].timeliness, Some(Timeliness::Early));
        assert_eq!(p.steps[2].timeliness, Some(Timeliness::Late));
        assert_eq!(
            p.timeliness,
            Some(Timeliness::OnTime),
            "dossier due Wednesday 17:00"
        );
        let to_centre: Vec<&Envelope> = t4
            .out
            .iter()
            .filter(|e| e.receiver.as_deref() == Some(CENTRE))
            .collect();
        assert_eq!(to_centre.len(), 1);
        assert_eq!(to_centre[0].kind.as_str(), Kind::RESULT);
        let res = to_centre[0].payload.result.as_ref().expect("result");
        assert!(
            res.contains_key("khai_sinh")
                && res.contains_key("thuong_tru")
                && res.contains_key("the_bhyt")
        );
    }

    #[test]
    fn a_refusal_stops_the_other_open_branch_and_a_late_answer_is_ignored() {
        let (r, c) = setup();
        let env = filed("1.001193", "2026-11-30T08:00:00+07:00", json!({}));
        let p = start(&ctx(&r, &c, "2026-11-30T08:00:00+07:00"), &env)
            .expect("start")
            .process;
        let p = advance(
            &ctx(&r, &c, "2026-11-30T09:00:00+07:00"),
            p.clone(),
            &answer(&p, "000.10.59.H48", Kind::RESULT, None),
        )
        .expect("civil")
        .process;
        let mut refusal = answer(&p, "CA.H48", Kind::STATUS, Some(3));
        refusal.payload.reason = Some("Địa chỉ thường trú không đúng".into());
        let t = advance(&ctx(&r, &c, "2026-11-30T10:00:00+07:00"), p, &refusal).expect("refusal");
        assert_eq!(t.process.phase, Phase::Refused);
        let out = receivers(&t);
        assert!(out.contains(&("BHXH.H48".to_string(), Some(8))), "{out:?}");
        assert!(out.contains(&(CENTRE.to_string(), Some(3))), "{out:?}");
        assert_eq!(t.process.steps[2].phase, StepPhase::Stopped);
        let late = advance(
            &ctx(&r, &c, "2026-11-30T11:00:00+07:00"),
            t.process.clone(),
            &answer(&t.process, "BHXH.H48", Kind::RESULT, None),
        )
        .expect("late");
        assert!(late.out.is_empty());
        assert_eq!(late.process.phase, Phase::Refused, "no status regression");
        let stranger = advance(
            &ctx(&r, &c, "2026-11-30T11:00:00+07:00"),
            t.process.clone(),
            &answer(&t.process, "CT.H48", Kind::RESULT, None),
        );
        assert_eq!(
            stranger.expect_err("not on the route").code,
            RejectCode::NotOnRoute
        );
    }

    #[test]
    fn a_payment_notice_pauses_the_clock_and_the_centres_answer_resumes_the_same_step() {
        let (r, c) = setup();
        let env = filed(
            "1.010059",
            "2026-11-30T08:00:00+07:00",
            json!({"thua_dat": {"so_thua": "1"}}),
        );
        let p = start(&ctx(&r, &c, "2026-11-30T08:00:00+07:00"), &env)
            .expect("start")
            .process;
        assert_eq!(p.steps[0].unit, "000.10.12.H48");
        let mut form = answer(&p, "000.10.12.H48", Kind::RESULT, None);
        form.payload.result = json!({"phieu_chuyen_thong_tin": {"ma_ho_so": p.ma_ho_so}})
            .as_object()
            .cloned();
        let t = advance(&ctx(&r, &c, "2026-11-30T09:00:00+07:00"), p, &form).expect("land office");
        let to_tax = t
            .out
            .iter()
            .find(|e| e.receiver.as_deref() == Some("CT.H48"))
            .expect("to Tax");
        assert!(
            to_tax
                .payload
                .data
                .as_ref()
                .is_some_and(|d| d.contains_key("phieu_chuyen_thong_tin")),
            "the form is carried to Tax at the top level"
        );
        let tax_due = t.process.steps[1].due.clone().expect("due");
        assert_eq!(
            tax_due, "2026-12-02T17:00:00.000+07:00",
            "3 working days from Monday"
        );
        // Notice on Monday 10:00; the citizen pays on Wednesday 10:00: 2 full office days
        // (2 × 7.5 h) are not counted.
        let notice = answer(&t.process, "CT.H48", Kind::STATUS, Some(6));
        let t = advance(
            &ctx(&r, &c, "2026-11-30T10:00:00+07:00"),
            t.process,
            &notice,
        )
        .expect("notice");
        assert_eq!(t.process.phase, Phase::Paused);
        // The centre gets the notice; the national portal is told (the centre syncs to it).
        assert_eq!(
            receivers(&t),
            vec![
                (CENTRE.to_string(), Some(6)),
                ("DVCQG".to_string(), Some(6))
            ]
        );
        let portal = &t.out[1];
        assert_eq!(portal.sender, CENTRE);
        assert_eq!(
            portal
                .payload
                .handler
                .as_ref()
                .and_then(|h| h.unit.as_deref()),
            Some("CT.H48")
        );
        let pd = portal.payload.data.as_ref().expect("progress data");
        assert_eq!(pd["thoi_diem_xu_ly"], "20261130100000");
        assert_eq!(
            pd["ngay_ket_thuc_theo_quy_dinh"], "20261211170000",
            "the dossier's legal deadline: 10 working days"
        );
        assert!(
            overdue_items(&t.process, &c, at("2026-12-09T10:00:00+07:00"), 0).is_empty(),
            "a paused dossier raises no alert"
        );
        let mut paid = filed(
            "1.010059",
            "2026-12-02T10:00:00+07:00",
            json!({"chung_tu_nop_tien": {"so_thong_bao": "TB-1"}}),
        );
        paid.ma_ho_so = t.process.ma_ho_so.clone();
        let t =
            advance(&ctx(&r, &c, "2026-12-02T10:00:00+07:00"), t.process, &paid).expect("resume");
        assert_eq!(t.process.phase, Phase::Running);
        let again = t
            .out
            .iter()
            .find(|e| e.receiver.as_deref() == Some("CT.H48"))
            .expect("resumed at Tax");
        let d = again.payload.data.as_ref().expect("data");
        assert_eq!(d["chung_tu_nop_tien"]["so_thong_bao"], "TB-1");
        assert!(d.contains_key("phieu_chuyen_thong_tin"));
        let s = &t.process.steps[1];
        assert_eq!(s.paused_secs, 15 * 3600);
        assert_eq!(
            s.due.as_deref(),
            Some("2026-12-04T17:00:00.000+07:00"),
            "due moved on by two working days"
        );
    }

    #[test]
    fn withdrawal_cancels_every_open_step_and_the_death_flow_takes_only_the_chosen_procedures() {
        let (r, c) = setup();
        let env = filed(
            "1.011537",
            "2026-11-30T08:00:00+07:00",
            json!({"thu_tuc_lua_chon": ["khai_tu", "xoa_thuong_tru", "tro_cap_mai_tang"]}),
        );
        let p = start(&ctx(&r, &c, "2026-11-30T08:00:00+07:00"), &env)
            .expect("start")
            .process;
        let ids: Vec<&str> = p.steps.iter().map(|s| s.id.as_str()).collect();
        assert_eq!(ids, ["khai-tu", "xoa-thuong-tru", "tro-cap-mai-tang"]);
        let t = advance(
            &ctx(&r, &c, "2026-11-30T09:00:00+07:00"),
            p.clone(),
            &answer(&p, "000.10.59.H48", Kind::RESULT, None),
        )
        .expect("civil");
        let mut withdraw = Envelope::new(Kind::STATUS, &p.ma_ho_so, &p.ma_tthc, CENTRE, None, "c1");
        withdraw.status = Some(TrangThaiHoSo::WITHDRAWN);
        let t = advance(
            &ctx(&r, &c, "2026-11-30T10:00:00+07:00"),
            t.process,
            &withdraw,
        )
        .expect("withdraw");
        assert_eq!(t.process.phase, Phase::Withdrawn);
        let mut out = receivers(&t);
        out.sort();
        assert_eq!(
            out,
            vec![
                ("000.00.15.H48".to_string(), Some(7)),
                ("CA.H48".to_string(), Some(7)),
                ("DVCQG".to_string(), Some(7))
            ]
        );
        assert!(
            t.process.steps[1..]
                .iter()
                .all(|s| s.phase == StepPhase::Cancelled)
        );
        let none = filed(
            "1.011537",
            "2026-11-30T08:00:00+07:00",
            json!({"thu_tuc_lua_chon": ["khai_tu"]}),
        );
        let e = start(&ctx(&r, &c, "2026-11-30T08:00:00+07:00"), &none)
            .expect_err("at least one optional procedure");
        assert!(e.detail.contains("thu_tuc_lua_chon"), "{}", e.detail);
    }

    #[test]
    fn a_dossier_needing_verification_gets_the_longer_legal_deadline() {
        let (r, c) = setup();
        let env = filed(
            "1.001193",
            "2026-11-30T08:00:00+07:00",
            json!({"can_xac_minh": true}),
        );
        let p = start(&ctx(&r, &c, "2026-11-30T08:00:00+07:00"), &env)
            .expect("start")
            .process;
        // 5 working days from Monday 30 November: Friday 4 December.
        assert_eq!(p.due, "2026-12-04T17:00:00.000+07:00");
    }

    #[test]
    fn overdue_and_due_soon_are_counted_in_office_time() {
        let (r, c) = setup();
        let env = filed("1.001193", "2026-11-30T08:00:00+07:00", json!({}));
        let p = start(&ctx(&r, &c, "2026-11-30T08:00:00+07:00"), &env)
            .expect("start")
            .process;
        // Civil status is due Monday 17:00.
        assert!(overdue_items(&p, &c, at("2026-11-30T08:30:00+07:00"), 3600).is_empty());
        let soon = overdue_items(&p, &c, at("2026-11-30T16:30:00+07:00"), 3600);
        assert_eq!(soon.len(), 1);
        assert_eq!(soon[0].level, AlertLevel::DueSoon);
        assert_eq!(soon[0].holder, "000.10.59.H48");
        let late = overdue_items(&p, &c, at("2026-12-01T08:30:00+07:00"), 3600);
        assert_eq!(late[0].level, AlertLevel::Overdue);
        assert_eq!(late[0].office_secs_left, -3600);
    }
}
