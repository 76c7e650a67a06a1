//! Tests of the process manager's rules: a route run end to end on the default catalogue, with
//! the working-day calendar.

use chrono::{DateTime, FixedOffset};
use serde_json::{Map, Value, json};

use super::*;
use crate::calendar::{Timeliness, WorkCalendar};
use crate::envelope::{Envelope, Kind, RejectCode, TrangThaiHoSo};
use crate::registry::{DEFAULT_CONFIG, Registry, Settings};

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
    let t = advance(&ctx(&r, &c, "2026-12-02T10:00:00+07:00"), t.process, &paid).expect("resume");
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
