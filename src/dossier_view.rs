//! What operators read about a dossier the process manager runs: where it is (`lienthong
//! dossier`), which steps are near or past due (`lienthong overdue`), and the control sheet
//! ("Phiếu kiểm soát quá trình giải quyết hồ sơ") rebuilt from its hand-overs and the hop log.

use chrono::{DateTime, FixedOffset};
use lienthong_core::calendar::WorkCalendar;
use lienthong_core::process::{OverdueItem, Phase, Process, StepPhase, parse_ts};
use lienthong_core::registry::Registry;
use lienthong_core::trace::TimelineRow;

use crate::control_sheet::{ControlSheet, ControlSheetRow};

fn name(reg: &Registry, code: &str) -> String {
    reg.unit(code)
        .map(|u| u.name.clone())
        .unwrap_or_else(|| code.to_string())
}

fn short(t: Option<&str>) -> String {
    t.and_then(parse_ts)
        .map(|t| {
            t.with_timezone(&lienthong_core::calendar::vn())
                .format("%Y-%m-%d %H:%M")
                .to_string()
        })
        .unwrap_or_else(|| "-".into())
}

fn hours(secs: i64) -> String {
    format!("{:.1} h", secs as f64 / 3600.0)
}

/// The text `lienthong dossier <ma_ho_so>` prints: phase, who holds it, each step with its
/// unit, hand-over time, due time, end and timeliness, and the office time left or overdue.
pub fn render_dossier(
    p: &Process,
    reg: &Registry,
    cal: &WorkCalendar,
    now: DateTime<FixedOffset>,
) -> String {
    let mut s = String::new();
    let proc_name = reg
        .procedure(&p.ma_tthc)
        .map(|x| x.name.clone())
        .unwrap_or_default();
    s.push_str(&format!(
        "dossier {}  ({} {})\n",
        p.ma_ho_so, p.ma_tthc, proc_name
    ));
    s.push_str(&format!(
        "centre   {} ({})\n",
        name(reg, &p.origin_unit),
        p.origin_unit
    ));
    s.push_str(&format!(
        "phase    {:?}: {} (TrangThaiHoSo {})\n",
        p.phase,
        p.phase.vi(),
        p.status
    ));
    s.push_str(&format!("received {}\n", short(Some(&p.received_at))));
    let left = parse_ts(&p.due).map(|d| {
        if now > d {
            format!("{} past due", hours(cal.office_seconds(d, now)))
        } else {
            format!("{} of office time left", hours(cal.office_seconds(now, d)))
        }
    });
    s.push_str(&format!(
        "due      {}{}\n",
        short(Some(&p.due)),
        match (&p.timeliness, p.phase.ended()) {
            (Some(t), _) => format!("  → finished {} ({})", short(p.ended_at.as_deref()), t.vi()),
            (None, true) => format!("  → ended {}", short(p.ended_at.as_deref())),
            (None, false) => format!("  ({})", left.unwrap_or_default()),
        }
    ));
    if let Some(r) = &p.returned_at {
        s.push_str(&format!("returned {}\n", short(Some(r))));
    }
    if let Some(r) = &p.reason {
        s.push_str(&format!("reason   {r}\n"));
    }
    let holders: Vec<String> = p
        .steps
        .iter()
        .filter(|x| x.phase.open())
        .map(|x| format!("{} ({})", name(reg, &x.unit), x.unit))
        .collect();
    if !holders.is_empty() {
        s.push_str(&format!("held by  {}\n", holders.join(", ")));
    }
    if p.phase == Phase::Paused {
        s.push_str(&format!(
            "waiting  for the centre {} to answer (clock stopped)\n",
            p.origin_unit
        ));
    }
    s.push('\n');
    s.push_str(&format!(
        "{:<3} {:<18} {:<16} {:<10} {:<16} {:<16} {:<16} {:<10}\n",
        "grp", "step", "unit", "phase", "handed over", "due", "ended", "timeliness"
    ));
    for x in &p.steps {
        s.push_str(&format!(
            "{:<3} {:<18} {:<16} {:<10} {:<16} {:<16} {:<16} {:<10}{}\n",
            x.group,
            x.id,
            x.unit,
            format!("{:?}", x.phase).to_lowercase(),
            short(x.handed_at.as_deref()),
            short(x.due.as_deref()),
            short(x.ended_at.as_deref()),
            x.timeliness.map(|t| t.vi()).unwrap_or("-"),
            match (&x.note, x.paused_secs) {
                (Some(n), _) => format!("  {n}"),
                (None, s) if s > 0 => format!("  paused {}", hours(s)),
                _ => String::new(),
            }
        ));
    }
    if !p.blocked.is_empty() {
        s.push_str("\nblocked (dead-lettered; nothing moves until recovered)\n");
        for b in &p.blocked {
            s.push_str(&format!(
                "  {}  {}\n    {}\n    dead letter {}\n",
                short(Some(&b.at)),
                b.what(),
                b.why(),
                b.message_id,
            ));
        }
        s.push_str(&format!(
            "  recover: after the fix, `lienthong dead-letters replay <dead letter>` sends the same message again;\n  `lienthong retry {}` hands the blocked steps over again with the dossier's current data\n  (the centre may first amend it with a dossier.forward without receiver, which also hands them over again)\n",
            p.ma_ho_so
        ));
    }
    s
}

/// The table `lienthong overdue` prints.
pub fn render_overdue(items: &[OverdueItem], reg: &Registry) -> String {
    let mut s = format!(
        "{:<9} {:<28} {:<18} {:<16} {:<17} {:>10}  holder name\n",
        "level", "dossier", "step", "held by", "due", "office h"
    );
    for it in items {
        s.push_str(&format!(
            "{:<9} {:<28} {:<18} {:<16} {:<17} {:>10}  {}\n",
            it.level.as_str(),
            it.ma_ho_so,
            it.step.as_deref().unwrap_or("(dossier)"),
            it.holder,
            short(Some(&it.due)),
            format!("{:+.1}", it.office_secs_left as f64 / 3600.0),
            name(reg, &it.holder)
        ));
        if let Some(r) = &it.reason {
            s.push_str(&format!(
                "          {r} (dead letter {})\n",
                it.dead_letter_id.as_deref().unwrap_or("-")
            ));
        }
    }
    s
}

/// When the hop log shows the message `id` reached its unit: the adapter's `delivered`, else
/// the `routed` onto the unit's queue.
fn receipt_time(trace: &[TimelineRow], id: Option<&str>) -> Option<DateTime<FixedOffset>> {
    let id = id?;
    let at = |ev: &str| {
        trace
            .iter()
            .find(|r| r.message_id.as_deref() == Some(id) && r.event == ev)
            .and_then(|r| parse_ts(&r.at))
    };
    at("delivered").or_else(|| at("routed"))
}

/// The control sheet of `p`: one row per hand-over (the centre or the previous step's unit
/// handing the dossier to a step's unit, and the last hand-over of the result back to the
/// centre), with receipt times from the hop log `trace`. A row's result is how the receiving
/// unit's step ended against its due time (the last row: the whole dossier against its legal
/// deadline).
pub fn control_sheet(
    p: &Process,
    reg: &Registry,
    trace: &[TimelineRow],
    now: DateTime<FixedOffset>,
) -> ControlSheet {
    let applicant = p.forward.payload.applicant.clone();
    let mut rows: Vec<ControlSheetRow> = Vec::new();
    let mut steps: Vec<_> = p.steps.iter().filter(|s| s.handed_at.is_some()).collect();
    steps.sort_by(|a, b| a.handed_at.cmp(&b.handed_at).then(a.group.cmp(&b.group)));
    for s in steps {
        let from = s.handed_by.clone().unwrap_or_else(|| p.origin_unit.clone());
        let mut note = s.name.clone();
        match s.phase {
            StepPhase::Open => note.push_str(" — đang xử lý"),
            StepPhase::Paused => note.push_str(" — tạm dừng, chờ công dân"),
            StepPhase::Refused => note.push_str(" — từ chối"),
            StepPhase::Stopped => note.push_str(" — dừng xử lý"),
            StepPhase::Cancelled => note.push_str(" — hủy (rút hồ sơ)"),
            _ => {}
        }
        if let Some(n) = &s.note {
            note.push_str(&format!(". {n}"));
        }
        if let Some(d) = &s.due {
            note.push_str(&format!(". Hạn: {}", short(Some(d))));
        }
        rows.push(ControlSheetRow {
            from_unit: name(reg, &from),
            to_unit: name(reg, &s.unit),
            handed_at: s.handed_at.as_deref().and_then(parse_ts),
            received_at: receipt_time(trace, s.forward_message_id.as_deref())
                .or_else(|| s.handed_at.as_deref().and_then(parse_ts)),
            handing_officer: s.handing_officer.clone(),
            receiving_officer: s.officer.clone(),
            result: s.timeliness,
            note: Some(note),
        });
    }
    if p.phase == Phase::Completed {
        let last: Vec<_> = p
            .steps
            .iter()
            .filter(|s| s.ended_at.is_some())
            .max_by(|a, b| a.ended_at.cmp(&b.ended_at))
            .into_iter()
            .collect();
        let from = last
            .first()
            .map(|s| s.unit.clone())
            .unwrap_or_else(|| p.origin_unit.clone());
        let handed = p.ended_at.as_deref().and_then(parse_ts);
        let received = trace
            .iter()
            .filter(|r| {
                r.event == "routed"
                    && r.to.as_deref() == Some(p.origin_unit.as_str())
                    && r.kind.as_deref() == Some("dossier.result")
            })
            .filter_map(|r| parse_ts(&r.at))
            .next_back();
        rows.push(ControlSheetRow {
            from_unit: name(reg, &from),
            to_unit: name(reg, &p.origin_unit),
            handed_at: handed,
            received_at: received.or(handed),
            handing_officer: last.first().and_then(|s| s.officer.clone()),
            receiving_officer: p.receiving_officer.clone(),
            result: p.timeliness,
            note: Some(format!(
                "Trả kết quả liên thông về bộ phận tiếp nhận. Hạn giải quyết: {}",
                short(Some(&p.due))
            )),
        });
    } else if p.phase.ended() {
        rows.push(ControlSheetRow {
            from_unit: name(reg, &p.origin_unit),
            to_unit: name(reg, &p.origin_unit),
            handed_at: p.ended_at.as_deref().and_then(parse_ts),
            received_at: p.ended_at.as_deref().and_then(parse_ts),
            handing_officer: None,
            receiving_officer: None,
            result: None,
            note: Some(format!(
                "{}: {}",
                p.phase.vi(),
                p.reason.clone().unwrap_or_default()
            )),
        });
    }
    ControlSheet {
        ma_ho_so: p.ma_ho_so.clone(),
        ma_tthc: p.ma_tthc.clone(),
        ten_tthc: reg
            .procedure(&p.ma_tthc)
            .map(|x| x.name.clone())
            .unwrap_or_default(),
        receiving_unit: name(reg, &p.origin_unit),
        applicant: applicant.as_ref().map(|a| a.ho_ten.clone()),
        phone: applicant.as_ref().and_then(|a| a.so_dien_thoai.clone()),
        address: applicant.as_ref().and_then(|a| a.dia_chi.clone()),
        received_at: parse_ts(&p.received_at),
        promised_at: parse_ts(&p.due),
        returned_at: p.returned_at.as_deref().and_then(parse_ts),
        status_vi: match (p.phase, p.timeliness) {
            (Phase::Completed, Some(t)) => format!("{} ({})", p.phase.vi(), t.vi()),
            _ => p.phase.vi().to_string(),
        },
        rows,
        trace_chain: None,
        generated_at: now,
    }
}
