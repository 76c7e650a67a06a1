//! Due times: the time format of the stored state, and which open steps or dossiers are near
//! (`due_soon`) or past (`overdue`) their due time, or blocked by a dead letter
//! ([`overdue_items`], the scan behind `lienthong overdue` and the alerts).

use chrono::{DateTime, FixedOffset, SecondsFormat};
use serde::{Deserialize, Serialize};

use crate::calendar::WorkCalendar;

use super::state::{Phase, Process, StepPhase};

/// `t` as stored: RFC 3339, +07:00, with ms.
pub fn ts(t: DateTime<FixedOffset>) -> String {
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

/// What `lienthong overdue` lists: an open step (or dossier) near or past its due time.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
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
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, utoipa::ToSchema,
)]
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
