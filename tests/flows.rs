//! The process manager end to end, through the real broker, the mock agencies and the HTTP API:
//! the birth flow with its parallel join (and the national portal kept in step, the control
//! sheet served), a refusal in one branch stopping the other, the land flow paused by a
//! supplement request and a payment notice and resumed by the centre, a withdrawal cancelling
//! every open step, and a restart of the bus in the middle of a flow without double steps.

mod common;

use std::time::Duration;

use common::*;
use lienthong_core::envelope::{Envelope, Kind, TrangThaiHoSo};
use lienthong_core::process::{Phase, StepPhase};
use lienthong_core::registry::{DEFAULT_CONFIG, Settings};
use serde_json::{Map, Value, json};
use tokio::sync::mpsc;

const LAND_OFFICE: &str = "000.10.12.H48";

/// The shipped registry's national portal, and Sơn Hà syncing to it.
fn with_portal(s: &mut Settings) {
    let full = Settings::from_toml(DEFAULT_CONFIG, false).expect("config");
    if let Some(portal) = full.units.iter().find(|u| u.code == "DVCQG") {
        s.units.push(portal.clone());
    }
    for u in &mut s.units {
        if u.code == SON_HA {
            u.syncs_to_portal = true;
        }
    }
    s.process.scan_ms = 500;
}

fn land(seq: u32) -> Envelope {
    let ma = format!("{SON_HA}-261129-{seq:04}");
    let mut env = Envelope::new(
        Kind::FORWARD,
        &ma,
        "1.010059",
        SON_HA,
        None,
        &uuid::Uuid::now_v7().to_string(),
    );
    env.payload = serde_json::from_value(json!({
        "applicant": {"ho_ten": "Lê Phương Nguyệt", "so_dinh_danh": "051175040533", "dia_chi": "xã Sơn Hạ, huyện Sơn Hà"},
        "data": {"loai_bien_dong": "tang_cho", "gia_tri_hop_dong_vnd": 301_900_000u64,
                 "thua_dat": {"so_thua": "283", "so_to_ban_do": "7", "dien_tich_m2": 3407.0,
                              "dia_chi": "thôn Gò Da, xã Sơn Hạ, huyện Sơn Hà, tỉnh Quảng Ngãi", "muc_dich_su_dung": "CLN"},
                 "ben_nhan": {"ho_ten": "Nguyễn Quốc Nam", "so_dinh_danh": "051204127183"}}
    }))
    .expect("payload");
    env
}

/// Script the mock's decision for one dossier at one agency.
async fn decide(bus: &Bus, agency: &str, ma: &str, status: u8, delay_ms: u64, reason: &str) {
    let r = reqwest::Client::new()
        .post(format!("{}/_mock/decisions", bus.mock_url))
        .json(&if reason.is_empty() {
            json!({"agency": agency, "ma_ho_so": ma, "status": status, "delay_ms": delay_ms})
        } else {
            json!({"agency": agency, "ma_ho_so": ma, "status": status, "delay_ms": delay_ms, "reason": reason})
        })
        .send()
        .await
        .expect("decision");
    let st = r.status();
    assert!(
        st.is_success(),
        "decision refused: {st} {}",
        r.text().await.unwrap_or_default()
    );
}

/// Answer a forward as a unit reading its own queue would: its result, back to the sender.
async fn reply(bus: &Bus, to: &Envelope, from: &str, result: Value) -> Envelope {
    let mut r = to.reply(Kind::RESULT, from, &to.sender);
    r.payload.result = result.as_object().cloned();
    bus.send(&r).await;
    r
}

/// Whether a `kind` envelope arrives on `rx` within `secs`.
async fn arrives(rx: &mut mpsc::UnboundedReceiver<Envelope>, kind: &str, secs: u64) -> bool {
    let until = tokio::time::Instant::now() + Duration::from_secs(secs);
    while let Ok(Some(e)) = tokio::time::timeout_at(until, rx.recv()).await {
        if e.kind.as_str() == kind {
            return true;
        }
    }
    false
}

/// The next envelope on `rx` of `kind` (others are skipped).
async fn next_kind(rx: &mut mpsc::UnboundedReceiver<Envelope>, kind: &str, secs: u64) -> Envelope {
    loop {
        let e = next(rx, secs).await;
        if e.kind.as_str() == kind {
            return e;
        }
    }
}

async fn process_of(bus: &Bus, ma: &str) -> lienthong_core::process::Process {
    let store = bus.store();
    let m = ma.to_string();
    eventually(10, "the process is stored", move || {
        store.process(&m).ok().flatten()
    })
    .await
}

async fn wait_phase(bus: &Bus, ma: &str, phase: Phase) -> lienthong_core::process::Process {
    let store = bus.store();
    let m = ma.to_string();
    eventually(30, &format!("dossier {ma} reaches {phase:?}"), move || {
        store
            .process(&m)
            .ok()
            .flatten()
            .filter(|p| p.phase == phase)
    })
    .await
}

fn operator_key(bus: &Bus) -> String {
    bus.settings.http.operator_key.clone().unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_birth_flow_runs_the_route_joins_the_parallel_steps_and_keeps_the_portal_in_step() {
    let bus = Bus::start_with("flow-birth", with_portal).await;
    let mut civil = bus.listen(SON_HA_CIVIL).await;
    let mut centre = bus.listen(SON_HA).await;
    let env = filed_birth(8101);
    let ma = env.ma_ho_so.clone();
    bus.send(&env).await;

    // Step 1: the civil-status office gets the dossier from its centre, with a due time.
    let fwd = next_kind(&mut civil, Kind::FORWARD, 20).await;
    assert_eq!(fwd.sender, SON_HA);
    let data = fwd.payload.data.clone().expect("data");
    assert_eq!(data["buoc"], "khai-sinh");
    assert!(
        data["han_xu_ly_buoc"]
            .as_str()
            .is_some_and(|d| d.ends_with("+07:00"))
    );
    let p = process_of(&bus, &ma).await;
    assert_eq!(p.phase, Phase::Running);
    assert_eq!(p.steps[0].phase, StepPhase::Open);
    assert!(p.steps[1..].iter().all(|s| s.phase == StepPhase::Waiting));

    // Its result, delivered twice (at-least-once): one step, not two.
    let result = reply(
        &bus,
        &fwd,
        SON_HA_CIVIL,
        json!({"so_dang_ky_khai_sinh": "87/2026", "noi_dung_xu_ly": "Đã đăng ký khai sinh"}),
    )
    .await;
    bus.send(&result).await;

    // Police and Social Insurance in parallel, each carrying the birth registration.
    let done = next_kind(&mut centre, Kind::RESULT, 30).await;
    assert_eq!(done.status, Some(TrangThaiHoSo::PROCESSED));
    let res = done.payload.result.clone().expect("result");
    assert_eq!(res["khai_sinh"]["so_dang_ky_khai_sinh"], "87/2026");
    assert!(
        res["thuong_tru"].is_object() && res["the_bhyt"].is_object(),
        "{res:?}"
    );
    for agency in ["police", "bhxh"] {
        let reqs = bus.mock_requests(agency, &ma).await;
        assert_eq!(reqs.len(), 1, "{agency} got the dossier once: {reqs:?}");
        assert!(
            reqs[0].to_string().contains("87/2026"),
            "{agency} got the birth registration: {}",
            reqs[0]
        );
    }
    let p = wait_phase(&bus, &ma, Phase::Completed).await;
    assert!(
        p.steps
            .iter()
            .all(|s| s.phase == StepPhase::Done && s.timeliness.is_some())
    );
    assert!(p.timeliness.is_some());
    // No second result reaches the centre.
    assert!(
        !arrives(&mut centre, Kind::RESULT, 2).await,
        "one final result"
    );

    // The centre returns the result to the citizen (status 10, no receiver).
    let mut returned = Envelope::new(
        Kind::STATUS,
        &ma,
        "1.001193",
        SON_HA,
        None,
        &env.correlation_id,
    );
    returned.status = Some(TrangThaiHoSo::RESULT_RETURNED);
    bus.send(&returned).await;
    let store = bus.store();
    let m = ma.clone();
    eventually(10, "return recorded", move || {
        store
            .process(&m)
            .ok()
            .flatten()
            .filter(|p| p.returned_at.is_some())
    })
    .await;

    // The national portal saw each status change, with handler and legal deadline.
    let client = reqwest::Client::new();
    let url = format!("{}/_mock/dvcqg/{ma}", bus.mock_url);
    let view: Value = eventually_async(30, || async {
        let v: Value = client.get(&url).send().await.ok()?.json().await.ok()?;
        let statuses: Vec<String> = v["progress"]
            .as_array()?
            .iter()
            .filter_map(|p| p["TrangThai"].as_str().map(str::to_string))
            .collect();
        (statuses.contains(&"9".to_string()) && statuses.contains(&"10".to_string())).then_some(v)
    })
    .await;
    let progress = view["progress"].as_array().expect("progress");
    assert!(
        progress
            .iter()
            .any(|p| p["TrangThai"] == "4" && p["PhongBanXuLy"] == SON_HA_CIVIL)
    );
    assert!(
        progress.iter().all(|p| p["NgayKetThucTheoQuyDinh"]
            .as_str()
            .is_some_and(|d| d.len() == 14)),
        "{progress:?}"
    );
    assert_eq!(
        view["dossier"]["NgayTiepNhan"].as_str().map(str::len),
        Some(14)
    );

    // The HTTP API serves the state and the control sheet.
    let key = operator_key(&bus);
    let state: Value = client
        .get(format!("{}/v1/dossiers/{ma}", bus.http))
        .bearer_auth(&key)
        .send()
        .await
        .expect("state")
        .json()
        .await
        .expect("json");
    assert_eq!(state["phase"], "completed");
    // Its trace chain verifies (tests/trace_chain.rs: what an edit does).
    assert_eq!(state["trace_verified"], true, "{}", state["trace_chain"]);
    let html = client
        .get(format!("{}/v1/dossiers/{ma}/control-sheet", bus.http))
        .bearer_auth(&key)
        .send()
        .await
        .expect("html")
        .text()
        .await
        .expect("text");
    assert!(
        html.contains("PHIẾU KIỂM SOÁT") && html.contains(&ma),
        "{html}"
    );
    assert!(
        html.contains("Công an tỉnh Quảng Ngãi")
            && html.contains("Bảo hiểm xã hội tỉnh Quảng Ngãi")
    );
    assert!(html.contains("trace chain verified"), "{html}");
    let pdf = client
        .get(format!(
            "{}/v1/dossiers/{ma}/control-sheet?format=pdf",
            bus.http
        ))
        .bearer_auth(&key)
        .send()
        .await
        .expect("pdf");
    assert_eq!(
        pdf.headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok()),
        Some("application/pdf")
    );
    assert!(pdf.bytes().await.expect("bytes").starts_with(b"%PDF"));
    let missing = client
        .get(format!(
            "{}/v1/dossiers/NOPE-261129-0001/control-sheet",
            bus.http
        ))
        .bearer_auth(&key)
        .send()
        .await
        .expect("404");
    assert_eq!(missing.status(), reqwest::StatusCode::NOT_FOUND);
    bus.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refusal_in_one_branch_stops_the_other_and_returns_the_reason_to_the_centre() {
    let bus = Bus::start_with("flow-refusal", with_portal).await;
    let mut civil = bus.listen(SON_HA_CIVIL).await;
    let mut centre = bus.listen(SON_HA).await;
    let env = filed_birth(8201);
    let ma = env.ma_ho_so.clone();
    decide(
        &bus,
        "police",
        &ma,
        3,
        50,
        "Nơi đăng ký thường trú không có thật (giả lập)",
    )
    .await;
    decide(&bus, "bhxh", &ma, 9, 60_000, "").await;
    bus.send(&env).await;
    let fwd = next_kind(&mut civil, Kind::FORWARD, 20).await;
    reply(
        &bus,
        &fwd,
        SON_HA_CIVIL,
        json!({"so_dang_ky_khai_sinh": "88/2026"}),
    )
    .await;

    let refusal = next_kind(&mut centre, Kind::STATUS, 30).await;
    assert_eq!(refusal.status, Some(TrangThaiHoSo::NOT_ACCEPTED));
    assert_eq!(refusal.sender, POLICE);
    assert!(
        refusal
            .payload
            .reason
            .as_deref()
            .is_some_and(|r| r.contains("không có thật")),
        "{:?}",
        refusal.payload.reason
    );
    let p = wait_phase(&bus, &ma, Phase::Refused).await;
    assert_eq!(p.steps[1].phase, StepPhase::Refused);
    assert_eq!(p.steps[2].phase, StepPhase::Stopped);
    // Social Insurance was told to stop: its pending result is never sent.
    let stats = eventually_async(20, || async {
        let s = bus.mock_stats().await;
        (s["bhxh"]["cancels"].as_u64() == Some(1)).then_some(s)
    })
    .await;
    assert_eq!(stats["bhxh"]["callbacks"].as_u64(), Some(0), "{stats}");
    assert!(
        !arrives(&mut centre, Kind::RESULT, 2).await,
        "no result after the refusal"
    );
    bus.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_land_flow_pauses_for_a_supplement_and_a_payment_and_resumes_the_same_step() {
    let bus = Bus::start_with("flow-land", with_portal).await;
    let mut office = bus.listen(LAND_OFFICE).await;
    let mut centre = bus.listen(SON_HA).await;
    let env = land(8301);
    let ma = env.ma_ho_so.clone();
    decide(
        &bus,
        "tax",
        &ma,
        5,
        50,
        "Bổ sung hợp đồng tặng cho có công chứng",
    )
    .await;
    bus.send(&env).await;
    let fwd = next_kind(&mut office, Kind::FORWARD, 20).await;
    let d = fwd.payload.data.clone().unwrap_or_default();
    reply(
        &bus,
        &fwd,
        LAND_OFFICE,
        json!({"phieu_chuyen_thong_tin": {"ma_ho_so": ma, "thua_dat": d["thua_dat"], "loai_bien_dong": "tang_cho"}}),
    )
    .await;

    // Tax asks for more papers: back to the centre, the clock stops.
    let more = next_kind(&mut centre, Kind::STATUS, 30).await;
    assert_eq!(more.status, Some(TrangThaiHoSo::SUPPLEMENT_REQUESTED));
    let p = wait_phase(&bus, &ma, Phase::Paused).await;
    assert_eq!(p.steps[1].phase, StepPhase::Paused);
    assert!(p.steps[1].paused_since.is_some());

    // The citizen brings the papers; this time Tax issues a payment notice.
    decide(&bus, "tax", &ma, 6, 50, "").await;
    let mut supplement = Envelope::new(
        Kind::FORWARD,
        &ma,
        "1.010059",
        SON_HA,
        None,
        &env.correlation_id,
    );
    supplement.payload.data = json!({"bo_sung": {"noi_dung": "Hợp đồng tặng cho đã công chứng"}})
        .as_object()
        .cloned();
    bus.send(&supplement).await;
    let notice = next_kind(&mut centre, Kind::STATUS, 30).await;
    assert_eq!(notice.status, Some(TrangThaiHoSo::FINANCIAL_OBLIGATION));
    let body = notice
        .payload
        .result
        .clone()
        .or(notice.payload.data.clone())
        .unwrap_or_default();
    let so_thong_bao = body["thong_bao_nop_tien"]["so_thong_bao"]
        .as_str()
        .expect("notice number")
        .to_string();
    let p = wait_phase(&bus, &ma, Phase::Paused).await;
    assert_eq!(
        bus.mock_requests("tax", &ma).await.len(),
        2,
        "the same step resumed at Tax"
    );

    // Paid: the same step resumes and Tax confirms; the result goes to the centre.
    let mut paid = Envelope::new(
        Kind::FORWARD,
        &ma,
        "1.010059",
        SON_HA,
        None,
        &env.correlation_id,
    );
    let mut receipt = Map::new();
    receipt.insert(
        "chung_tu_nop_tien".into(),
        json!({"so_thong_bao": so_thong_bao, "so_chung_tu": "NT-8301", "ngay_nop": "2026-11-29", "so_tien_vnd": 7_547_500u64}),
    );
    paid.payload.data = Some(receipt);
    bus.send(&paid).await;
    let done = next_kind(&mut centre, Kind::RESULT, 30).await;
    assert_eq!(done.status, Some(TrangThaiHoSo::PROCESSED));
    assert!(
        done.payload
            .result
            .as_ref()
            .is_some_and(|r| r["thue"]["hoan_thanh_nghia_vu_tai_chinh"].is_object()),
        "{:?}",
        done.payload.result
    );
    let p2 = wait_phase(&bus, &ma, Phase::Completed).await;
    assert!(p2.steps[1].paused_secs >= p.steps[1].paused_secs);
    assert!(p2.steps[1].paused_since.is_none());
    // A forward without receiver for a running or ended dossier is dead-lettered with why.
    let mut again = paid.clone();
    again.message_id = uuid::Uuid::now_v7().to_string();
    bus.send(&again).await;
    let dl = next_kind(&mut centre, Kind::DEAD_LETTER, 20).await;
    assert!(
        dl.payload
            .reason
            .as_deref()
            .is_some_and(|r| r.contains("Completed")),
        "{:?}",
        dl.payload.reason
    );
    bus.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_withdrawal_cancels_every_open_step() {
    let bus = Bus::start_with("flow-withdraw", with_portal).await;
    let mut civil = bus.listen(SON_HA_CIVIL).await;
    let env = filed_birth(8401);
    let ma = env.ma_ho_so.clone();
    decide(&bus, "police", &ma, 9, 60_000, "").await;
    decide(&bus, "bhxh", &ma, 9, 60_000, "").await;
    bus.send(&env).await;
    let fwd = next_kind(&mut civil, Kind::FORWARD, 20).await;
    reply(
        &bus,
        &fwd,
        SON_HA_CIVIL,
        json!({"so_dang_ky_khai_sinh": "89/2026"}),
    )
    .await;
    let store = bus.store();
    let m = ma.clone();
    eventually(30, "police and BHXH hold the dossier", move || {
        store
            .process(&m)
            .ok()
            .flatten()
            .filter(|p| p.steps[1..].iter().all(|s| s.phase == StepPhase::Open))
    })
    .await;
    eventually_async(20, || async {
        let s = bus.mock_stats().await;
        (s["police"]["effects"].as_u64() == Some(1) && s["bhxh"]["effects"].as_u64() == Some(1))
            .then_some(())
    })
    .await;
    let mut withdraw = Envelope::new(
        Kind::STATUS,
        &ma,
        "1.001193",
        SON_HA,
        None,
        &env.correlation_id,
    );
    withdraw.status = Some(TrangThaiHoSo::WITHDRAWN);
    withdraw.payload.reason = Some("Công dân rút hồ sơ để bổ sung giấy chứng sinh".into());
    bus.send(&withdraw).await;
    let p = wait_phase(&bus, &ma, Phase::Withdrawn).await;
    assert!(p.steps[1..].iter().all(|s| s.phase == StepPhase::Cancelled));
    let stats = eventually_async(20, || async {
        let s = bus.mock_stats().await;
        (s["police"]["cancels"].as_u64() == Some(1) && s["bhxh"]["cancels"].as_u64() == Some(1))
            .then_some(s)
    })
    .await;
    assert_eq!(stats["police"]["callbacks"].as_u64(), Some(0), "{stats}");
    bus.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_of_the_bus_in_the_middle_of_a_flow_continues_it_without_double_steps() {
    let mut bus = Bus::start_with("flow-restart", with_portal).await;
    let mut civil = bus.listen(SON_HA_CIVIL).await;
    let mut centre = bus.listen(SON_HA).await;
    let env = filed_birth(8501);
    let ma = env.ma_ho_so.clone();
    bus.send(&env).await;
    let fwd = next_kind(&mut civil, Kind::FORWARD, 20).await;
    // Stop the bus while the civil-status office holds the dossier …
    if let Some(r) = bus.running.take() {
        r.stop().await.expect("bus stops");
    }
    // … the office answers meanwhile (the message waits in the broker) …
    reply(
        &bus,
        &fwd,
        SON_HA_CIVIL,
        json!({"so_dang_ky_khai_sinh": "90/2026"}),
    )
    .await;
    // … and a new bus process on the same store and broker carries on.
    bus.running = Some(
        lienthong::run::start(bus.settings.clone(), &lienthong::run::Component::ALL)
            .await
            .expect("bus restarts"),
    );
    let done = next_kind(&mut centre, Kind::RESULT, 40).await;
    assert_eq!(done.status, Some(TrangThaiHoSo::PROCESSED));
    wait_phase(&bus, &ma, Phase::Completed).await;
    for agency in ["police", "bhxh"] {
        assert_eq!(
            bus.mock_requests(agency, &ma).await.len(),
            1,
            "{agency}: one step"
        );
    }
    assert!(
        !arrives(&mut centre, Kind::RESULT, 2).await,
        "one final result"
    );
    bus.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_overdue_step_raises_a_trace_event_a_metric_and_a_webhook_and_is_listed() {
    // The operator's webhook, on loopback.
    let (hook_url, mut hooks) = webhook().await;
    let url = hook_url.clone();
    let bus = Bus::start_with("flow-overdue", move |s| {
        with_portal(s);
        s.process.webhook_url = Some(url);
    })
    .await;
    let mut civil = bus.listen(SON_HA_CIVIL).await;
    // Received at the centre a week ago: the civil-status step (same working day) is past due
    // as soon as it is handed over, and the office does not answer.
    let mut env = filed_birth(8601);
    let week_ago = (chrono::Utc::now() - chrono::Duration::days(7))
        .with_timezone(&lienthong_core::clock::vn_offset())
        .to_rfc3339();
    env.payload
        .data
        .get_or_insert_with(Map::new)
        .insert("ngay_tiep_nhan".into(), json!(week_ago));
    let ma = env.ma_ho_so.clone();
    bus.send(&env).await;
    next_kind(&mut civil, Kind::FORWARD, 20).await;

    let hook = loop {
        let v = tokio::time::timeout(Duration::from_secs(20), hooks.recv())
            .await
            .expect("a webhook call")
            .expect("hook");
        if v["step"] == "khai-sinh" {
            break v;
        }
    };
    assert_eq!(hook["ma_ho_so"], ma.as_str());
    assert_eq!(hook["level"], "overdue");
    assert_eq!(hook["holder"], SON_HA_CIVIL);
    assert!(hook["office_secs_left"].as_i64().is_some_and(|s| s < 0));

    let client = reqwest::Client::new();
    let key = operator_key(&bus);
    let listed: Vec<Value> = client
        .get(format!("{}/v1/overdue", bus.http))
        .bearer_auth(&key)
        .send()
        .await
        .expect("overdue")
        .json()
        .await
        .expect("json");
    assert!(
        listed.iter().any(|i| i["ma_ho_so"] == ma.as_str()
            && i["holder"] == SON_HA_CIVIL
            && i["level"] == "overdue"),
        "{listed:?}"
    );
    let metrics = client
        .get(format!("{}/metrics", bus.http))
        .bearer_auth(bus.settings.http.operator_key.clone().unwrap_or_default())
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    assert!(
        metrics.contains("lienthong_process_alerts_total") && metrics.contains(SON_HA_CIVIL),
        "{metrics}"
    );
    let store = bus.store();
    let m = ma.clone();
    eventually(10, "an overdue trace event", move || {
        store
            .timeline(&m)
            .ok()
            .filter(|rows| rows.iter().any(|r| r.event == "overdue"))
    })
    .await;
    // Alerted once: the next scans do not repeat it.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let mut again = 0;
    while let Ok(v) = hooks.try_recv() {
        if v["step"] == "khai-sinh" {
            again += 1;
        }
    }
    assert_eq!(again, 0, "one webhook call per step, level and due time");
    bus.stop().await;
}
