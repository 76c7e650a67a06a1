//! Dead-lettered messages of a dossier the bus runs: the step whose hand-over was dead-lettered
//! is **blocked** (visible, and alerted by the overdue scan) instead of waiting silently; it
//! resumes when the dead letter is replayed (the same message, same id), when an operator
//! retries it, or when the centre amends the data (a new hand-over with a new id). A result to
//! the centre, a cancel or a portal update that was dead-lettered is recorded the same way.

use serde_json::json;

use crate::envelope::{Envelope, Kind, RejectCode, Rejection};

use super::carried::{carry_results, merge_centre_data};
use super::due::{parse_ts, ts};
use super::state::{BlockedMessage, Context, Process, StepPhase, Transition};

/// A dead letter of a message the process manager sent, as read off the dead letter channel
/// (`<p>.dead.process`): the envelope's identity and the dead letter's reason headers.
#[derive(Debug, Clone, PartialEq)]
pub struct DeadLetterNotice {
    /// Message id of the dead-lettered envelope.
    pub message_id: String,
    /// Its kind.
    pub kind: String,
    /// Its TrangThaiHoSo, if any.
    pub status: Option<u8>,
    /// The unit it was for.
    pub receiver: String,
    /// `x-lienthong-reason-code` (`broker` for the broker's own dead-lettering).
    pub reason_code: String,
    /// `x-lienthong-reason`.
    pub reason: String,
}

fn transition(p: &Process) -> Transition {
    Transition {
        process: p.clone(),
        out: Vec::new(),
        notes: Vec::new(),
        republish: Vec::new(),
    }
}

/// Record that message `dl` of `p` was dead-lettered: its step (when it was the step's current
/// hand-over and the step is open) becomes [`StepPhase::Blocked`]; the message joins
/// [`Process::blocked`] (or its entry is refreshed). A dead letter of a hand-over that a newer
/// one superseded, or of a step already finished, is only noted.
pub fn dead_lettered(ctx: &Context<'_>, mut p: Process, dl: &DeadLetterNotice) -> Transition {
    let mut t = transition(&p);
    let step = p
        .steps
        .iter()
        .position(|s| s.forward_message_id.as_deref() == Some(dl.message_id.as_str()));
    let superseded = dl.kind == Kind::FORWARD && step.is_none();
    if superseded || step.is_some_and(|i| !p.steps[i].phase.open()) {
        t.notes.push(format!(
            "dead letter of {} {} to {} noted; nothing waits on it ({}): {}",
            dl.kind,
            dl.message_id,
            dl.receiver,
            if superseded {
                "a newer hand-over replaced it"
            } else {
                "its step has ended"
            },
            dl.reason
        ));
        t.process = p;
        return t;
    }
    let entry = BlockedMessage {
        message_id: dl.message_id.clone(),
        step: step.map(|i| p.steps[i].id.clone()),
        kind: dl.kind.clone(),
        status: dl.status,
        receiver: dl.receiver.clone(),
        reason_code: dl.reason_code.clone(),
        reason: dl.reason.clone(),
        at: ts(ctx.now),
    };
    let (what, why) = (entry.what(), entry.why());
    match p.blocked.iter_mut().find(|b| b.message_id == dl.message_id) {
        Some(b) => *b = entry,
        None => p.blocked.push(entry),
    }
    if let Some(i) = step {
        p.steps[i].phase = StepPhase::Blocked;
        p.steps[i].note = Some(format!("không chuyển được: {why}"));
    }
    t.notes.push(format!(
        "blocked: the {what} was dead-lettered ({why}); replay it after the fix (lienthong dead-letters replay {}) or retry (lienthong retry {})",
        dl.message_id, p.ma_ho_so
    ));
    t.process = p;
    t
}

/// A dead letter of `p` was replayed (the message `message_id`, which the process manager sent
/// and recorded as blocked, came back through the ingress): it is published again with the same
/// message id (an adapter that already delivered it acks it without a second call) and its step
/// is open again. A replay of a message that is not blocked (recovered already, or superseded)
/// is noted and otherwise ignored, so a replay never hands a dossier over twice.
pub fn replayed(p: Process, message_id: &str) -> Transition {
    let mut t = transition(&p);
    let mut p = p;
    let Some(at) = p.blocked.iter().position(|b| b.message_id == message_id) else {
        t.notes.push(format!(
            "ignored: replayed message {message_id} is not blocked (already recovered or superseded)"
        ));
        t.process = p;
        return t;
    };
    let b = p.blocked.remove(at);
    if let Some(step) = &b.step
        && let Some(s) = p.steps.iter_mut().find(|s| &s.id == step)
        && s.phase == StepPhase::Blocked
    {
        s.phase = StepPhase::Open;
        s.note = Some(format!(
            "chuyển lại sau khi xử lý thư lỗi ({})",
            b.reason_code
        ));
    }
    t.notes.push(format!(
        "replayed: the {} goes out again with the same message id {message_id}",
        b.what()
    ));
    t.republish.push(message_id.to_string());
    t.process = p;
    t
}

/// An operator (`by`) retries the blocked messages of `p` — every one, or only the hand-over of
/// `step`: a step's hand-over goes to its unit again with a **new** message id and the dossier's
/// current data (the centre may have amended it), keeping its due time; any other blocked
/// message (a result to the centre, a cancel, a portal update) goes out again unchanged.
/// Errors: nothing of `p` is blocked (or not `step`).
pub fn retry_blocked(
    ctx: &Context<'_>,
    mut p: Process,
    step: Option<&str>,
    by: &str,
) -> Result<Transition, Rejection> {
    let mut t = transition(&p);
    let picked: Vec<BlockedMessage> = p
        .blocked
        .iter()
        .filter(|b| step.is_none() || b.step.as_deref() == step)
        .cloned()
        .collect();
    if picked.is_empty() {
        return Err(Rejection::new(
            RejectCode::InvalidField,
            match step {
                Some(s) => format!(
                    "step {s} of dossier {} is not blocked (blocked: {})",
                    p.ma_ho_so,
                    describe(&p)
                ),
                None => format!("nothing of dossier {} is blocked", p.ma_ho_so),
            },
        ));
    }
    p.blocked
        .retain(|b| !picked.iter().any(|x| x.message_id == b.message_id));
    for b in picked {
        match b
            .step
            .as_deref()
            .and_then(|id| p.steps.iter().position(|s| s.id == id))
        {
            Some(i) if !p.phase.ended() => {
                let f = hand_over_again(ctx, &mut p, i, &b.message_id);
                t.notes.push(format!(
                    "retried by {by}: step {} handed to {} again as {} (the dead-lettered {} is superseded)",
                    p.steps[i].id, p.steps[i].unit, f.message_id, b.message_id
                ));
                t.out.push(f);
            }
            // The dossier has ended: nothing to hand over any more.
            Some(_) => {}
            None => {
                t.notes.push(format!(
                    "retried by {by}: the {} goes out again with the same message id {}",
                    b.what(),
                    b.message_id
                ));
                t.republish.push(b.message_id.clone());
            }
        }
    }
    t.process = p;
    Ok(t)
}

/// The centre sends a `dossier.forward` without receiver while a step's hand-over is blocked:
/// its data is merged into the dossier and every blocked step is handed over again (new message
/// ids), so a centre can fix what an agency could not take in the same conversation.
pub(super) fn amend(ctx: &Context<'_>, p: &mut Process, env: &Envelope, t: &mut Transition) {
    merge_centre_data(p, env);
    let keys: Vec<String> = env
        .payload
        .data
        .as_ref()
        .map(|d| d.keys().cloned().collect())
        .unwrap_or_default();
    t.notes.push(format!(
        "the centre amended the dossier ({}); its blocked steps are handed over again",
        if keys.is_empty() {
            "no data keys".to_string()
        } else {
            keys.join(", ")
        }
    ));
    let blocked: Vec<(usize, String)> = p
        .steps
        .iter()
        .enumerate()
        .filter(|(_, s)| s.phase == StepPhase::Blocked)
        .map(|(i, s)| (i, s.forward_message_id.clone().unwrap_or_default()))
        .collect();
    for (i, old) in blocked {
        p.blocked.retain(|b| b.message_id != old);
        let mut f = hand_over_again(ctx, p, i, &old);
        f.causation_id = Some(env.message_id.clone());
        t.notes.push(format!(
            "step {} handed to {} again as {} after the centre's amendment",
            p.steps[i].id, p.steps[i].unit, f.message_id
        ));
        t.out.push(f);
    }
}

/// A new hand-over of step `i` (replacing the dead-lettered `old`): the dossier's current data,
/// the earlier steps' results, the step's unchanged due time; the step is open again.
fn hand_over_again(ctx: &Context<'_>, p: &mut Process, i: usize, old: &str) -> Envelope {
    let group = p.steps[i].group;
    let mut data = p.forward.payload.data.clone().unwrap_or_default();
    carry_results(
        &mut data,
        p.steps
            .iter()
            .filter(|s| s.group < group && s.phase == StepPhase::Done),
    );
    let s = &mut p.steps[i];
    let mut f = p.forward.clone();
    f.message_id = crate::envelope::new_message_id();
    f.sender = s.handed_by.clone().unwrap_or_else(|| p.origin_unit.clone());
    f.receiver = Some(s.unit.clone());
    f.sent_at = ts(ctx.now);
    f.causation_id = Some(old.to_string());
    f.status = None;
    data.insert("ngay_tiep_nhan".into(), json!(p.received_at));
    if let Some(due) = s.due.as_deref().and_then(parse_ts) {
        data.insert("han_xu_ly_buoc".into(), json!(ts(due)));
    }
    data.insert("buoc".into(), json!(s.id));
    f.payload.data = Some(data);
    f.payload.result = None;
    f.payload.reason = None;
    s.phase = StepPhase::Open;
    s.forward_message_id = Some(f.message_id.clone());
    s.note = Some("chuyển lại sau khi xử lý thư lỗi".into());
    f
}

/// Step `i`'s unit answered while its hand-over was recorded as blocked: it has the dossier.
pub(super) fn unblock_answered(p: &mut Process, i: usize, unit: &str, t: &mut Transition) {
    let id = p.steps[i].id.clone();
    p.blocked.retain(|b| b.step.as_deref() != Some(id.as_str()));
    p.steps[i].phase = StepPhase::Open;
    p.steps[i].note = None;
    t.notes.push(format!(
        "step {id}: {unit} answered, so it has the dossier; no longer blocked"
    ));
}

/// The blocked messages of `p`, in words.
fn describe(p: &Process) -> String {
    if p.blocked.is_empty() {
        return "nothing".into();
    }
    p.blocked
        .iter()
        .map(BlockedMessage::what)
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use chrono::{DateTime, FixedOffset};
    use serde_json::{Map, json};

    use super::super::due::{AlertLevel, overdue_items};
    use super::super::rules::{advance, start};
    use super::super::state::{Context, Phase, Process, StepPhase};
    use super::*;
    use crate::calendar::WorkCalendar;
    use crate::envelope::TrangThaiHoSo;
    use crate::registry::{DEFAULT_CONFIG, Registry, Settings};

    const CENTRE: &str = "000.20.59.H48";
    const CIVIL: &str = "000.10.59.H48";

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

    fn ctx<'a>(r: &'a Registry, c: &'a WorkCalendar, now: &str) -> Context<'a> {
        Context {
            registry: r,
            calendar: c,
            now: at(now),
        }
    }

    fn answer(p: &Process, from: &str, kind: &str, status: Option<u8>) -> Envelope {
        let mut e = Envelope::new(kind, &p.ma_ho_so, &p.ma_tthc, from, Some(CENTRE), "c1");
        e.status = status.map(TrangThaiHoSo);
        e.payload.result = Some(Map::new());
        e
    }

    /// A birth dossier filed Monday 09:00 whose civil-status step is done: Police and Social
    /// Insurance hold it in parallel.
    fn at_police(r: &Registry, c: &WorkCalendar) -> Process {
        let mut env = Envelope::new(
            Kind::FORWARD,
            "000.20.59.H48-261130-0001",
            "1.001193",
            CENTRE,
            None,
            "c1",
        );
        env.sent_at = "2026-11-30T09:00:00+07:00".into();
        env.payload.data = json!({"tre": {"ho_ten": "Đinh Thị Bảo Ngọc"}})
            .as_object()
            .cloned();
        let t = start(&ctx(r, c, "2026-11-30T09:00:00+07:00"), &env).expect("start");
        let done = answer(&t.process, CIVIL, Kind::RESULT, None);
        advance(&ctx(r, c, "2026-11-30T10:00:00+07:00"), t.process, &done)
            .expect("civil status done")
            .process
    }

    fn police_dead_letter(p: &Process) -> DeadLetterNotice {
        let police = p
            .steps
            .iter()
            .find(|s| s.unit == "CA.H48")
            .expect("police step");
        DeadLetterNotice {
            message_id: police.forward_message_id.clone().expect("handed over"),
            kind: Kind::FORWARD.into(),
            status: None,
            receiver: "CA.H48".into(),
            reason_code: "agency-refused".into(),
            reason: "Công an tỉnh refused it: HTTP 400: E_THIEU_DIA_CHI".into(),
        }
    }

    #[test]
    fn a_dead_lettered_hand_over_blocks_its_step_and_is_listed_first_with_the_reason() {
        let (r, c) = setup();
        let p = at_police(&r, &c);
        let dl = police_dead_letter(&p);
        let t = dead_lettered(&ctx(&r, &c, "2026-11-30T10:05:00+07:00"), p, &dl);
        let p = t.process;
        let police = p.steps.iter().find(|s| s.unit == "CA.H48").expect("police");
        assert_eq!(police.phase, StepPhase::Blocked);
        assert!(police.phase.open(), "its unit may still answer");
        assert_eq!(p.phase, Phase::Running);
        assert_eq!(p.blocked.len(), 1);
        assert_eq!(p.blocked[0].step.as_deref(), Some(police.id.as_str()));
        assert!(t.notes[0].contains("agency-refused"), "{:?}", t.notes);
        assert!(t.out.is_empty(), "nothing is sent");
        // Listed (and alerted) at once, long before any due time.
        let items = overdue_items(&p, &c, at("2026-11-30T10:06:00+07:00"), 4 * 3600);
        assert_eq!(items.len(), 1, "{items:?}");
        assert_eq!(items[0].level, AlertLevel::Blocked);
        assert_eq!(items[0].holder, "CA.H48");
        assert_eq!(
            items[0].dead_letter_id.as_deref(),
            Some(dl.message_id.as_str())
        );
        assert!(
            items[0]
                .reason
                .as_deref()
                .is_some_and(|r| r.contains("E_THIEU_DIA_CHI"))
        );
        // The same dead letter again changes nothing.
        let again = dead_lettered(&ctx(&r, &c, "2026-11-30T10:07:00+07:00"), p.clone(), &dl);
        assert_eq!(again.process.blocked.len(), 1);
    }

    #[test]
    fn a_replayed_dead_letter_goes_out_again_with_its_id_once() {
        let (r, c) = setup();
        let p = at_police(&r, &c);
        let dl = police_dead_letter(&p);
        let p = dead_lettered(&ctx(&r, &c, "2026-11-30T10:05:00+07:00"), p, &dl).process;
        let t = replayed(p, &dl.message_id);
        assert_eq!(t.republish, vec![dl.message_id.clone()]);
        assert!(t.out.is_empty(), "the same message, not a new one");
        let p = t.process;
        assert!(p.blocked.is_empty());
        let police = p.steps.iter().find(|s| s.unit == "CA.H48").expect("police");
        assert_eq!(police.phase, StepPhase::Open);
        assert_eq!(
            police.forward_message_id.as_deref(),
            Some(dl.message_id.as_str())
        );
        // A second copy of the replay finds nothing blocked: nothing goes out twice.
        let t2 = replayed(p, &dl.message_id);
        assert!(t2.republish.is_empty());
        assert!(t2.notes[0].starts_with("ignored"), "{:?}", t2.notes);
    }

    #[test]
    fn an_operators_retry_hands_the_step_over_with_a_new_id_and_the_same_due_time() {
        let (r, c) = setup();
        let p = at_police(&r, &c);
        let dl = police_dead_letter(&p);
        let due = p
            .steps
            .iter()
            .find(|s| s.unit == "CA.H48")
            .and_then(|s| s.due.clone());
        let p = dead_lettered(&ctx(&r, &c, "2026-11-30T10:05:00+07:00"), p, &dl).process;
        let e = retry_blocked(
            &ctx(&r, &c, "2026-11-30T11:00:00+07:00"),
            p.clone(),
            Some("the-bhyt"),
            "lan",
        )
        .expect_err("Social Insurance's step is not blocked");
        assert!(e.detail.contains("not blocked"), "{}", e.detail);
        let t = retry_blocked(&ctx(&r, &c, "2026-11-30T11:00:00+07:00"), p, None, "lan")
            .expect("retry");
        assert_eq!(t.out.len(), 1);
        let f = &t.out[0];
        assert_ne!(
            f.message_id, dl.message_id,
            "a new hand-over, a new idempotency key"
        );
        assert_eq!(f.receiver.as_deref(), Some("CA.H48"));
        assert_eq!(
            f.sender, CIVIL,
            "handed over by the civil-status office, as before"
        );
        let data = f.payload.data.as_ref().expect("data");
        assert!(
            data.contains_key("ket_qua_khai_sinh"),
            "earlier results carried"
        );
        assert_eq!(
            data["han_xu_ly_buoc"],
            json!(due),
            "the due time does not move"
        );
        let police = t
            .process
            .steps
            .iter()
            .find(|s| s.unit == "CA.H48")
            .expect("police");
        assert_eq!(police.phase, StepPhase::Open);
        assert_eq!(
            police.forward_message_id.as_deref(),
            Some(f.message_id.as_str())
        );
        assert!(
            t.notes[0].contains("lan"),
            "the operator is named: {:?}",
            t.notes
        );
        // The old dead letter, replayed later, is superseded: it is not sent again.
        let late = replayed(t.process.clone(), &dl.message_id);
        assert!(late.republish.is_empty());
        // And a dead letter of the old hand-over arriving late is only noted.
        let noted = dead_lettered(&ctx(&r, &c, "2026-11-30T11:05:00+07:00"), t.process, &dl);
        assert!(noted.process.blocked.is_empty());
    }

    #[test]
    fn the_centres_amendment_merges_its_data_and_hands_the_blocked_step_over_again() {
        let (r, c) = setup();
        let p = at_police(&r, &c);
        let dl = police_dead_letter(&p);
        let p = dead_lettered(&ctx(&r, &c, "2026-11-30T10:05:00+07:00"), p, &dl).process;
        let mut fix = Envelope::new(Kind::FORWARD, &p.ma_ho_so, &p.ma_tthc, CENTRE, None, "c1");
        fix.payload.data = json!({"noi_dang_ky_thuong_tru": "thôn Gò Da, xã Sơn Hạ"})
            .as_object()
            .cloned();
        let t = advance(&ctx(&r, &c, "2026-11-30T14:00:00+07:00"), p, &fix).expect("amendment");
        let fwd: Vec<&Envelope> = t.out.iter().filter(|e| e.kind.is_forward()).collect();
        assert_eq!(fwd.len(), 1, "only the blocked step: {:?}", t.out);
        let data = fwd[0].payload.data.as_ref().expect("data");
        assert_eq!(data["noi_dang_ky_thuong_tru"], "thôn Gò Da, xã Sơn Hạ");
        assert_eq!(
            fwd[0].causation_id.as_deref(),
            Some(fix.message_id.as_str())
        );
        assert!(t.process.blocked.is_empty());
        assert_eq!(
            t.process.forward.payload.data.as_ref().expect("data")["noi_dang_ky_thuong_tru"],
            "thôn Gò Da, xã Sơn Hạ",
            "kept for later steps"
        );
    }

    #[test]
    fn an_answer_from_the_blocked_steps_unit_unblocks_and_completes_it() {
        let (r, c) = setup();
        let p = at_police(&r, &c);
        let dl = police_dead_letter(&p);
        let p = dead_lettered(&ctx(&r, &c, "2026-11-30T10:05:00+07:00"), p, &dl).process;
        let t = advance(
            &ctx(&r, &c, "2026-11-30T15:00:00+07:00"),
            p.clone(),
            &answer(&p, "CA.H48", Kind::RESULT, None),
        )
        .expect("police answers");
        let police = t
            .process
            .steps
            .iter()
            .find(|s| s.unit == "CA.H48")
            .expect("police");
        assert_eq!(police.phase, StepPhase::Done);
        assert!(t.process.blocked.is_empty());
    }

    #[test]
    fn an_undelivered_result_to_the_centre_is_listed_after_the_dossier_completed() {
        let (r, c) = setup();
        let p = at_police(&r, &c);
        let t = advance(
            &ctx(&r, &c, "2026-11-30T15:00:00+07:00"),
            p.clone(),
            &answer(&p, "CA.H48", Kind::RESULT, None),
        )
        .expect("police");
        let t = advance(
            &ctx(&r, &c, "2026-11-30T16:00:00+07:00"),
            t.process.clone(),
            &answer(&t.process, "BHXH.H48", Kind::RESULT, None),
        )
        .expect("bhxh");
        assert_eq!(t.process.phase, Phase::Completed);
        let result = t
            .out
            .iter()
            .find(|e| e.receiver.as_deref() == Some(CENTRE))
            .expect("the result to the centre");
        let dl = DeadLetterNotice {
            message_id: result.message_id.clone(),
            kind: Kind::RESULT.into(),
            status: Some(9),
            receiver: CENTRE.into(),
            reason_code: "broker".into(),
            reason: "dead-lettered by the broker: delivery_limit".into(),
        };
        let p = dead_lettered(&ctx(&r, &c, "2026-11-30T16:10:00+07:00"), t.process, &dl).process;
        let items = overdue_items(&p, &c, at("2026-11-30T16:11:00+07:00"), 4 * 3600);
        assert_eq!(items.len(), 1);
        assert_eq!(items[0].level, AlertLevel::Blocked);
        assert_eq!(items[0].step, None);
        assert!(
            items[0]
                .reason
                .as_deref()
                .is_some_and(|r| r.starts_with("result to"))
        );
        // The operator's retry sends the very same result again.
        let t = retry_blocked(&ctx(&r, &c, "2026-11-30T16:20:00+07:00"), p, None, "lan")
            .expect("retry");
        assert!(t.out.is_empty());
        assert_eq!(t.republish, vec![result.message_id.clone()]);
    }

    #[test]
    fn a_withdrawal_sends_no_cancel_for_a_hand_over_the_agency_refused() {
        let (r, c) = setup();
        let p = at_police(&r, &c);
        let dl = police_dead_letter(&p);
        let p = dead_lettered(&ctx(&r, &c, "2026-11-30T10:05:00+07:00"), p, &dl).process;
        let mut w = Envelope::new(Kind::STATUS, &p.ma_ho_so, &p.ma_tthc, CENTRE, None, "c1");
        w.status = Some(TrangThaiHoSo::WITHDRAWN);
        let t = advance(&ctx(&r, &c, "2026-11-30T11:00:00+07:00"), p, &w).expect("withdrawal");
        assert_eq!(t.process.phase, Phase::Withdrawn);
        assert!(t.process.blocked.is_empty());
        assert!(
            !t.out
                .iter()
                .any(|e| e.receiver.as_deref() == Some("CA.H48")),
            "Police never registered it: no cancel ({:?})",
            t.out
        );
        assert!(
            t.out
                .iter()
                .any(|e| e.receiver.as_deref() == Some("BHXH.H48")
                    && e.status == Some(TrangThaiHoSo::WITHDRAWN)),
            "Social Insurance holds it: it is told"
        );
        let police = t
            .process
            .steps
            .iter()
            .find(|s| s.unit == "CA.H48")
            .expect("police");
        assert_eq!(police.phase, StepPhase::Cancelled);
    }

    #[test]
    fn a_withdrawal_cancels_a_blocked_step_at_its_unit_and_clears_the_block() {
        let (r, c) = setup();
        let p = at_police(&r, &c);
        let mut dl = police_dead_letter(&p);
        // The retries ran out: the agency may hold it after all.
        dl.reason_code = "retries-exhausted".into();
        let p = dead_lettered(&ctx(&r, &c, "2026-11-30T10:05:00+07:00"), p, &dl).process;
        let mut w = Envelope::new(Kind::STATUS, &p.ma_ho_so, &p.ma_tthc, CENTRE, None, "c1");
        w.status = Some(TrangThaiHoSo::WITHDRAWN);
        let t = advance(&ctx(&r, &c, "2026-11-30T11:00:00+07:00"), p, &w).expect("withdrawal");
        assert_eq!(t.process.phase, Phase::Withdrawn);
        assert!(t.process.blocked.is_empty());
        assert!(
            t.out.iter().any(|e| e.receiver.as_deref() == Some("CA.H48")
                && e.status == Some(TrangThaiHoSo::WITHDRAWN)),
            "the agency may hold it after all: it is told"
        );
    }
}
