//! A dossier the bus runs never waits silently: when the hand-over of one of its steps is
//! dead-lettered (the agency refused it, the retries ran out), the process manager blocks the
//! step visibly — `lienthong dossier`, `GET /v1/overdue`, an `alert` trace event, the metric and
//! the webhook — and each way of recovering resumes it: replaying the dead letter after the fix,
//! the centre amending the data, an operator's retry. Through the real broker and mock agencies.

mod common;

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use common::*;
use lienthong_core::envelope::{Envelope, Kind};
use lienthong_core::process::StepPhase;
use serde_json::{Value, json};
use tokio::sync::mpsc;

/// Wait until the police step of `ma` is blocked; returns the dead letter's id and reason code.
async fn blocked_at_police(bus: &Bus, ma: &str) -> (String, String) {
    let store = bus.store();
    let m = ma.to_string();
    eventually(30, &format!("{ma}'s police step blocked"), move || {
        let p = store.process(&m).ok().flatten()?;
        let s = p.steps.iter().find(|s| s.unit == POLICE)?;
        if s.phase != StepPhase::Blocked {
            return None;
        }
        let b = p.blocked.first()?;
        Some((b.message_id.clone(), b.reason_code.clone()))
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_lettered_hand_over_blocks_its_step_visibly_and_replay_amendment_and_retry_resume_it()
 {
    let (hook_url, mut hooks) = webhook().await;
    let bus = Bus::start_with("blocked", move |s| {
        s.process.scan_ms = 300;
        s.process.webhook_url = Some(hook_url);
        // Retries run out quickly: 6 attempts in process, twice parked, then dead-lettered.
        s.retry.max_delayed_attempts = 2;
    })
    .await;
    answer_as_civil_status_office(&bus).await;
    let mut centre = bus.listen(SON_HA).await;
    // Four dossiers whose Police hand-over is dead-lettered, 60 others alongside.
    let replayed = filed_birth(8001);
    let amended = filed_birth(8002);
    let retried = filed_birth(8003);
    let retried_cli = filed_birth(8004);
    bus.fault("police", &replayed.ma_ho_so, &[400]).await;
    bus.fault("police", &amended.ma_ho_so, &[400]).await;
    // 1 + 5 attempts per round, three rounds: exhausted after the 18th.
    bus.fault("police", &retried.ma_ho_so, &[503; 18]).await;
    bus.fault("police", &retried_cli.ma_ho_so, &[503; 18]).await;
    let mine = [&replayed, &amended, &retried, &retried_cli];
    let others: Vec<Envelope> = (0..60).map(|i| filed_birth(8100 + i)).collect();
    for e in mine.into_iter().chain(others.iter()) {
        bus.send(e).await;
    }
    let (replayed_dl, code) = blocked_at_police(&bus, &replayed.ma_ho_so).await;
    assert_eq!(code, "agency-refused");
    let (_, code) = blocked_at_police(&bus, &amended.ma_ho_so).await;
    assert_eq!(code, "agency-refused");
    let (_, code) = blocked_at_police(&bus, &retried.ma_ho_so).await;
    assert_eq!(code, "retries-exhausted");
    let (_, code) = blocked_at_police(&bus, &retried_cli.ma_ho_so).await;
    assert_eq!(code, "retries-exhausted");
    let blocked_at = Instant::now();

    // Visible everywhere an operator looks.
    let key = bus.settings.http.operator_key.clone().unwrap_or_default();
    let client = reqwest::Client::new();
    let listed: Vec<Value> = client
        .get(format!("{}/v1/overdue", bus.http))
        .bearer_auth(&key)
        .send()
        .await
        .expect("overdue")
        .json()
        .await
        .expect("json");
    for e in mine {
        assert!(
            listed.iter().any(|i| i["ma_ho_so"] == e.ma_ho_so.as_str()
                && i["level"] == "blocked"
                && i["holder"] == POLICE
                && i["dead_letter_id"].is_string()),
            "{} listed as blocked: {listed:?}",
            e.ma_ho_so
        );
    }
    assert_eq!(listed[0]["level"], "blocked", "most urgent first");
    let mut hooked = HashSet::new();
    let until = Instant::now() + Duration::from_secs(20);
    while hooked.len() < mine.len() {
        let left = until.saturating_duration_since(Instant::now());
        let v = tokio::time::timeout(left, hooks.recv())
            .await
            .expect("a webhook call per blocked dossier")
            .expect("hook");
        if v["level"] == "blocked" {
            assert!(
                v["reason"]
                    .as_str()
                    .is_some_and(|r| r.contains("hand-over of step"))
            );
            hooked.insert(v["ma_ho_so"].as_str().unwrap_or_default().to_string());
        }
    }
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
        metrics
            .lines()
            .any(|l| l.starts_with("lienthong_process_alerts_total")
                && l.contains("level=\"blocked\"")),
        "{metrics}"
    );
    let store = bus.store();
    let rows = store.timeline(&replayed.ma_ho_so).expect("trace");
    assert!(
        rows.iter().any(|r| r.event == "alert"),
        "an alert event in the dossier's trace"
    );
    let p = store
        .process(&replayed.ma_ho_so)
        .expect("store")
        .expect("process");
    let reg = lienthong_core::registry::Registry::new(&bus.settings);
    let cal = lienthong_core::calendar::WorkCalendar::new(&bus.settings.calendar).expect("cal");
    let text =
        lienthong::dossier_view::render_dossier(&p, &reg, &cal, lienthong::process_manager::now());
    assert!(
        text.contains("blocked") && text.contains(&replayed_dl) && text.contains("agency-refused"),
        "{text}"
    );

    // 1. After the fix, the operator replays the dead letter: the same hand-over goes out again.
    let report = bus.replay(std::slice::from_ref(&replayed_dl)).await;
    assert_eq!(report.replayed, vec![replayed_dl.clone()]);
    // 2. The centre amends the dossier (a dossier.forward without receiver).
    let mut fix = Envelope::new(
        Kind::FORWARD,
        &amended.ma_ho_so,
        &amended.ma_tthc,
        SON_HA,
        None,
        &amended.correlation_id,
    );
    fix.payload.data = json!({"noi_dang_ky_thuong_tru": "thôn Gò Da, xã Sơn Hạ, huyện Sơn Hà"})
        .as_object()
        .cloned();
    bus.send(&fix).await;
    // 3. The operator retries the step over HTTP.
    let r = client
        .post(format!(
            "{}/v1/dossiers/{}/retry",
            bus.http, retried.ma_ho_so
        ))
        .bearer_auth(&key)
        .json(&json!({"step": "thuong-tru", "by": "Lan (provincial centre)"}))
        .send()
        .await
        .expect("retry");
    let status = r.status();
    assert_eq!(
        status,
        reqwest::StatusCode::OK,
        "{}",
        r.text().await.unwrap_or_default()
    );
    let again = client
        .post(format!(
            "{}/v1/dossiers/{}/retry",
            bus.http, retried.ma_ho_so
        ))
        .bearer_auth(&key)
        .send()
        .await
        .expect("retry");
    assert_eq!(
        again.status(),
        reqwest::StatusCode::CONFLICT,
        "nothing left to retry"
    );
    // A mistyped request does nothing and says why.
    for (body, status) in [
        (
            json!({"stepp": "thuong-tru"}),
            reqwest::StatusCode::BAD_REQUEST,
        ),
        (
            json!({"step": "khong-co"}),
            reqwest::StatusCode::UNPROCESSABLE_ENTITY,
        ),
    ] {
        let r = client
            .post(format!(
                "{}/v1/dossiers/{}/retry",
                bus.http, retried_cli.ma_ho_so
            ))
            .bearer_auth(&key)
            .json(&body)
            .send()
            .await
            .expect("retry");
        assert_eq!(r.status(), status, "{body}");
    }
    // 4. … or with the command line, on the bus's configuration.
    let config = bus.dir.join("config.toml");
    bus.settings.write_file(&config).expect("config");
    let cli = |args: &[&str]| {
        std::process::Command::new(procs::EXE)
            .arg("--config")
            .arg(&config)
            .args(args)
            .output()
            .expect("lienthong runs")
    };
    let shown = cli(&["dossier", &retried_cli.ma_ho_so]);
    let text = String::from_utf8_lossy(&shown.stdout);
    assert!(
        text.contains("blocked") && text.contains("retries-exhausted"),
        "{text}"
    );
    let done = cli(&["retry", &retried_cli.ma_ho_so, "--by", "Minh"]);
    assert!(
        done.status.success(),
        "{}",
        String::from_utf8_lossy(&done.stderr)
    );
    let nothing = cli(&["retry", &retried_cli.ma_ho_so]);
    assert_eq!(nothing.status.code(), Some(3), "nothing left to retry");

    // Every dossier completes, with one final result and one registration at Police.
    let all: Vec<&Envelope> = mine.into_iter().chain(others.iter()).collect();
    let mut results: HashMap<String, HashSet<String>> = HashMap::new();
    let until = Instant::now() + Duration::from_secs(90);
    while results.len() < all.len() {
        let left = until.saturating_duration_since(Instant::now());
        assert!(
            !left.is_zero(),
            "{} of {} dossiers completed",
            results.len(),
            all.len()
        );
        let Ok(Some(e)) = tokio::time::timeout(left, centre.recv()).await else {
            continue;
        };
        if e.kind.as_str() == Kind::RESULT {
            results
                .entry(e.ma_ho_so.clone())
                .or_default()
                .insert(e.message_id.clone());
        }
    }
    let recovery = blocked_at.elapsed();
    let copies = late_copies_by_dossier(&mut centre, &mut results).await;
    let twice = results.values().filter(|ids| ids.len() > 1).count();
    assert_eq!(twice, 0, "one final result per dossier");
    let stats = bus.mock_stats().await;
    let n = all.len() as u64;
    assert_eq!(stats["police"]["effects"], n, "{stats}");
    assert_eq!(stats["bhxh"]["effects"], n, "{stats}");
    for e in mine {
        let p = store.process(&e.ma_ho_so).expect("store").expect("process");
        assert!(p.blocked.is_empty(), "{}: {:?}", e.ma_ho_so, p.blocked);
    }
    let amended_state = store
        .process(&amended.ma_ho_so)
        .expect("store")
        .expect("process");
    let police = bus.mock_requests("police", &amended.ma_ho_so).await;
    assert!(
        police
            .last()
            .is_some_and(|r| r.to_string().contains("thôn Gò Da")),
        "Police got the amended data: {police:?}"
    );
    assert_eq!(
        amended_state.phase,
        lienthong_core::process::Phase::Completed
    );
    let retried_rows = store.timeline(&retried.ma_ho_so).expect("trace");
    assert!(
        retried_rows.iter().any(|r| r
            .reason
            .as_deref()
            .is_some_and(|x| x.contains("Lan (provincial centre)"))),
        "the retry is in the trace with the operator's name"
    );
    record_reliability(Reliability {
        scenario: "a step's hand-over dead-lettered in a dossier the bus runs".into(),
        fault: "Police refuses 2 dossiers (400) and answers 503 until the retries run out for 2 more, 60 others alongside; recovered by dead-letters replay, the centre's amendment, POST /v1/dossiers/{ma}/retry and lienthong retry".into(),
        messages: all.len(),
        lost: all.len() - results.len(),
        duplicate_effects: effects_beyond(&stats, n, n),
        recovery_ms: Some(recovery.as_millis()),
        redelivered_copies: copies,
    });
    bus.stop().await;
}

/// After the last result: 2 s more, counting copies (same message id) and noting any second
/// result of a dossier in `results`.
async fn late_copies_by_dossier(
    rx: &mut mpsc::UnboundedReceiver<Envelope>,
    results: &mut HashMap<String, HashSet<String>>,
) -> usize {
    let mut copies = 0;
    while let Ok(Some(e)) = tokio::time::timeout(Duration::from_secs(2), rx.recv()).await {
        if e.kind.as_str() == Kind::RESULT
            && !results
                .entry(e.ma_ho_so.clone())
                .or_default()
                .insert(e.message_id.clone())
        {
            copies += 1;
        }
    }
    copies
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_result_the_centre_rejects_is_listed_as_blocked_and_a_replay_delivers_it() {
    let bus = Bus::start_with("blocked-result", |s| {
        s.process.scan_ms = 300;
    })
    .await;
    answer_as_civil_status_office(&bus).await;
    // The centre's software rejects the first final result it gets (basic.reject without
    // requeue): the broker dead-letters it from the centre's queue.
    let ch = bus.conn.create_channel().await.expect("channel");
    let mut consumer = ch
        .basic_consume(
            bus.names.unit_queue(SON_HA).into(),
            "test-centre".into(),
            lapin::options::BasicConsumeOptions::default(),
            lapin::types::FieldTable::default(),
        )
        .await
        .expect("consume");
    let (tx, mut got) = mpsc::unbounded_channel::<Envelope>();
    tokio::spawn(async move {
        use futures_lite::StreamExt;
        let mut rejected = false;
        while let Some(Ok(d)) = consumer.next().await {
            let Ok(env) = serde_json::from_slice::<Envelope>(&d.data) else {
                continue;
            };
            if env.kind.as_str() == Kind::RESULT && !rejected {
                rejected = true;
                let _ = d
                    .reject(lapin::options::BasicRejectOptions { requeue: false })
                    .await;
                continue;
            }
            let _ = d.ack(lapin::options::BasicAckOptions::default()).await;
            let _ = tx.send(env);
            let _ = &ch;
        }
    });
    let env = filed_birth(8401);
    let ma = env.ma_ho_so.clone();
    bus.send(&env).await;
    let store = bus.store();
    let m = ma.clone();
    let blocked = eventually(
        30,
        "the result to the centre listed as blocked",
        move || {
            let p = store.process(&m).ok().flatten()?;
            (p.phase == lienthong_core::process::Phase::Completed)
                .then_some(())
                .and_then(|_| p.blocked.first().cloned())
        },
    )
    .await;
    assert_eq!(blocked.step, None);
    assert_eq!(blocked.receiver, SON_HA);
    assert_eq!(blocked.reason_code, "broker", "{blocked:?}");
    let key = bus.settings.http.operator_key.clone().unwrap_or_default();
    let listed: Vec<Value> = reqwest::Client::new()
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
            && i["level"] == "blocked"
            && i["reason"]
                .as_str()
                .is_some_and(|r| r.starts_with("result to"))),
        "a completed dossier whose result did not arrive is listed: {listed:?}"
    );
    // Replayed, the same result reaches the centre.
    let report = bus.replay(std::slice::from_ref(&blocked.message_id)).await;
    assert_eq!(report.replayed, vec![blocked.message_id.clone()]);
    let result = loop {
        let e = next(&mut got, 30).await;
        if e.kind.as_str() == Kind::RESULT {
            break e;
        }
    };
    assert_eq!(
        result.message_id, blocked.message_id,
        "the very same message"
    );
    let store = bus.store();
    let m = ma.clone();
    eventually(10, "nothing blocked any more", move || {
        store
            .process(&m)
            .ok()
            .flatten()
            .filter(|p| p.blocked.is_empty())
    })
    .await;
    bus.stop().await;
}
