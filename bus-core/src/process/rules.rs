//! The rules: [`start`] a dossier's route and [`advance`] it by each message of the dossier into
//! the messages the bus sends next (hand-overs, joins, pauses, refusal, stop, withdrawal,
//! completion). Pure: no I/O.

use std::collections::BTreeMap;

use chrono::{DateTime, FixedOffset};
use serde_json::{Map, Value, json};

use crate::envelope::{Envelope, Handler, Kind, RejectCode, Rejection, TrangThaiHoSo};
use crate::registry::UnitKind;

use super::blocked;
use super::carried::{carry_results, merge_centre_data, snake_id};
use super::due::{dvcqg_time, parse_ts, ts};
use super::route::{chosen, cutoff, handler_officer, resolve_role};
use super::state::{Context, Phase, Process, StepPhase, StepRun, Transition};

fn rejection(code: RejectCode, detail: impl Into<String>) -> Rejection {
    Rejection::new(code, detail)
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
    crate::routing::check_issuer(proc_, &sender.code, &env.ma_ho_so)?;
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
        .filter(|t| sane_start(*t, ctx.now))
        .or_else(|| parse_ts(&env.sent_at).filter(|t| sane_start(*t, ctx.now)))
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

/// Whether a sender-chosen time may start a dossier's clock: within [`SANE_START_DAYS`] of
/// `now` either way. Ingress refuses `ngay_tiep_nhan` outside the narrower configured window
/// (`[envelope] date_window_days_back` / `_ahead`); this bound also covers `sent_at` (used when
/// there is no `ngay_tiep_nhan`), which is not refused: outside it the bus's own time is used.
fn sane_start(t: DateTime<FixedOffset>, now: DateTime<FixedOffset>) -> bool {
    (t - now).num_days().abs() <= SANE_START_DAYS
}

/// How far from now (days, either way) a sender's time may start a dossier's clock.
const SANE_START_DAYS: i64 = 3660;
