//! Deterministic crashes of the adapters process at the two points between an agency's answer
//! and the ack, and of the router between the process manager's commit and its publish, made
//! with fail points (built only with `--features failpoints`, which `./scripts/test` turns on):
//! the process is held at the point, killed with SIGKILL, and started again; the agency must
//! see no second effect and the route no double step. A third fail point makes a delivery
//! handler panic: its delivery must be dead-lettered with the panic's message and its prefetch
//! slot freed.

mod common;

use std::time::Duration;

use common::procs::*;
use common::*;
use lienthong_adapters::deliveries::DeliveryLog;

/// Where in the adapter the crash happens.
#[derive(Clone, Copy, PartialEq)]
enum Point {
    /// The agency answered 2xx; the delivery log still says `sending`.
    AfterAgencyAnswer,
    /// The delivery log says `delivered`; the ack was not sent.
    BeforeAck,
}

impl Point {
    fn name(self) -> &'static str {
        match self {
            Point::AfterAgencyAnswer => "adapter-after-agency-answer",
            Point::BeforeAck => "adapter-before-ack",
        }
    }
}

/// The `ma_ho_so` and message id the adapters process logged when it stopped at `point`.
fn held_at(log: &std::path::Path, point: Point) -> Option<(String, String)> {
    let text = std::fs::read_to_string(log).ok()?;
    let line = text
        .lines()
        .find(|l| l.contains(&format!("fail point {}", point.name())))?;
    let field = |k: &str| {
        line.split_whitespace()
            .find_map(|w| w.strip_prefix(&format!("{k}=")))
            .map(str::to_string)
    };
    Some((field("ma_ho_so")?, field("message_id")?))
}

async fn crash_at(point: Point, name: &str, scenario: &str) {
    let Prepared {
        settings: s,
        dir,
        users,
        mock,
        port,
        config,
    } = prepare(name, |s| {
        s.mock.latency_min_ms = 2;
        s.mock.latency_max_ms = 10;
        s.mock.callback_delay_ms = 20;
    })
    .await;
    let failpoints = format!("{}=1*return", point.name());
    let mut adapters = spawn_components_env(
        &config,
        &dir,
        "adapters",
        "adapters1.log",
        &[("FAILPOINTS", failpoints.as_str())],
    );
    let rest = spawn_components(&config, &dir, "router,tracer,http", "others.log");
    wait_ready_from(&dir.join("others.log"), port).await;
    let view = view_of(&s, &dir, &mock, users).await;
    let mut centre = view.listen(SON_HA).await;
    let all = send_background(&view, BACKGROUND, 6000).await;
    let log1 = dir.join("adapters1.log");
    let (ma, message_id) = eventually(60, "the adapters process at the fail point", || {
        held_at(&log1, point)
    })
    .await;
    let held = all
        .iter()
        .find(|e| e.message_id == message_id)
        .expect("the held message is one we sent");
    let agency = if held.receiver.as_deref() == Some(POLICE) {
        "police"
    } else {
        "bhxh"
    };
    // The precondition of the crash: the agency has taken the dossier...
    assert_eq!(view.mock_requests(agency, &ma).await.len(), 1);
    // ...and the delivery log is where the point says.
    let log = DeliveryLog::open(s.store.location()).expect("delivery log");
    let rec = eventually(10, "the delivery log row", || {
        log.get(&message_id).ok().flatten()
    })
    .await;
    assert_eq!(
        rec.delivered,
        point == Point::BeforeAck,
        "delivery log state at {}",
        point.name()
    );
    adapters.kill().expect("SIGKILL");
    let _ = adapters.wait();
    let killed_at = std::time::Instant::now();
    let adapters = spawn_components(&config, &dir, "adapters", "adapters2.log");
    let ids = ids_of(&all);
    let answers = collect_answers(&mut centre, &ids, 120).await;
    let (lost, twice) = tally(&ids, &answers);
    assert_eq!((lost, twice), (0, 0), "one result per dossier");
    let (police, bhxh) = per_agency(&all);
    let stats = view.mock_stats().await;
    assert_eq!(stats["police"]["effects"], police, "{stats}");
    assert_eq!(stats["bhxh"]["effects"], bhxh, "{stats}");
    let calls = view.mock_requests(agency, &ma).await;
    let store = view.store();
    let rows = delivered_timeline(&store, &ma).await;
    match point {
        Point::AfterAgencyAnswer => {
            // Redelivered with the log at `sending`: sent again with the same key, and the
            // agency answered from its idempotency record.
            assert_eq!(calls.len(), 2, "{calls:#?}");
            assert!(
                stats[agency]["replays"].as_u64().unwrap_or(0) >= 1,
                "{stats}"
            );
        }
        Point::BeforeAck => {
            assert_eq!(calls.len(), 1, "not sent again: {calls:#?}");
            assert!(
                rows.iter().any(|r| r
                    .reason
                    .as_deref()
                    .is_some_and(|x| x.contains("redelivery acked without calling the agency"))),
                "{rows:#?}"
            );
        }
    }
    record_reliability(Reliability {
        scenario: scenario.into(),
        fault: format!(
            "fail point {} held one delivery, kill -9 of the adapters process, restarted; {BACKGROUND} dossiers",
            point.name()
        ),
        messages: ids.len(),
        lost,
        duplicate_effects: effects_beyond(&stats, police, bhxh),
        recovery_ms: Some(killed_at.elapsed().as_millis()),
        redelivered_copies: 0,
    });
    for c in [&adapters, &rest] {
        sigterm(c);
    }
    drop((adapters, rest));
    let _ = mock.stop.send(());
    let _ = lienthong_core::topology::Topology::plan(&s)
        .delete(&view.conn)
        .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn adapters_killed_after_the_agency_answered_before_the_delivery_log_resend_with_the_same_key()
 {
    crash_at(
        Point::AfterAgencyAnswer,
        "kp-answer",
        "adapters killed after the agency's 2xx, before the delivery log (fail point)",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn adapters_killed_after_the_delivery_log_before_the_ack_never_call_the_agency_again() {
    crash_at(
        Point::BeforeAck,
        "kp-ack",
        "adapters killed after the delivery log, before the ack (fail point)",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn router_killed_between_the_process_commit_and_the_publish_sends_the_next_steps_once() {
    use lienthong_core::envelope::{Kind, TrangThaiHoSo};
    use lienthong_core::process::StepPhase;
    let (mut s, dir) = settings("kp-process");
    let users = broker_users(&mut s);
    s.mock.callback_delay_ms = 20;
    let mock = lienthong_testkit::mock::serve(&s).await.expect("mock");
    use_mock(&mut s, &mock);
    let port = free_port();
    s.http.listen = format!("127.0.0.1:{port}");
    s.process.scan_ms = 500;
    let config = dir.join("config.toml");
    s.write_file(&config).expect("config");
    // The first transition (the start) goes through; the second (the civil-status result, which
    // fans out to Police and Social Insurance) is held after its commit.
    let mut router = spawn_components_env(
        &config,
        &dir,
        "router",
        "router1.log",
        &[("FAILPOINTS", "process-after-commit=1*off->1*return")],
    );
    let rest = spawn_components(&config, &dir, "adapters,tracer,http", "others.log");
    wait_ready_from(&dir.join("others.log"), port).await;
    let view = view_of(&s, &dir, &mock, users).await;
    let mut civil = view.listen(SON_HA_CIVIL).await;
    let mut centre = view.listen(SON_HA).await;
    let mut env = birth(8701, SON_HA_CIVIL);
    env.receiver = None;
    let ma = env.ma_ho_so.clone();
    view.send(&env).await;
    let fwd = next(&mut civil, 30).await;
    assert_eq!(fwd.kind.as_str(), Kind::FORWARD);
    let mut result = fwd.reply(Kind::RESULT, SON_HA_CIVIL, &fwd.sender);
    result.payload.result = serde_json::json!({"so_dang_ky_khai_sinh": "91/2026"})
        .as_object()
        .cloned();
    view.send(&result).await;
    let log1 = dir.join("router1.log");
    eventually(60, "the router at the fail point", || {
        std::fs::read_to_string(&log1)
            .ok()
            .filter(|t| t.contains("fail point process-after-commit"))
    })
    .await;
    // The precondition: the step is committed as handed over, the forwards wait in the outbox,
    // and no agency has the dossier yet.
    let store = view.store();
    let p = store.process(&ma).expect("store").expect("process");
    assert!(p.steps[1..].iter().all(|s| s.phase == StepPhase::Open));
    assert_eq!(store.unsent(Some(&ma), 0).expect("outbox").len(), 2);
    assert!(view.mock_requests("police", &ma).await.is_empty());
    router.kill().expect("SIGKILL");
    let _ = router.wait();
    let killed_at = std::time::Instant::now();
    let router = spawn_components(&config, &dir, "router", "router2.log");
    let done = loop {
        let e = next(&mut centre, 60).await;
        if e.kind.as_str() == Kind::RESULT {
            break e;
        }
    };
    assert_eq!(done.status, Some(TrangThaiHoSo::PROCESSED));
    for agency in ["police", "bhxh"] {
        assert_eq!(
            view.mock_requests(agency, &ma).await.len(),
            1,
            "{agency}: the step once"
        );
    }
    let again = tokio::time::timeout(Duration::from_secs(2), centre.recv()).await;
    assert!(
        !matches!(&again, Ok(Some(e)) if e.kind.as_str() == Kind::RESULT),
        "one final result"
    );
    let stats = view.mock_stats().await;
    record_reliability(Reliability {
        scenario: "router killed between the process manager's commit and its publish (fail point)".into(),
        fault: "fail point process-after-commit held the civil-status result of a birth dossier run by the process manager, kill -9 of the router process, restarted".into(),
        messages: 1,
        lost: 0,
        duplicate_effects: effects_beyond(&stats, 1, 1),
        recovery_ms: Some(killed_at.elapsed().as_millis()),
        redelivered_copies: 0,
    });
    for c in [&router, &rest] {
        sigterm(c);
    }
    drop((router, rest));
    let _ = mock.stop.send(());
    let _ = lienthong_core::topology::Topology::plan(&s)
        .delete(&view.conn)
        .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_delivery_handler_dead_letters_its_delivery_and_frees_its_slot() {
    use lienthong_core::deadletter::headers;
    use lienthong_core::envelope::Kind;
    let (mut s, dir) = settings("kp-panic");
    let users = broker_users(&mut s);
    s.mock.callback_delay_ms = 20;
    // One prefetch slot: a delivery that kept it would stop the unit's queue.
    s.topology.adapter_prefetch = 1;
    let mock = lienthong_testkit::mock::serve(&s).await.expect("mock");
    use_mock(&mut s, &mock);
    let port = free_port();
    s.http.listen = format!("127.0.0.1:{port}");
    let config = dir.join("config.toml");
    s.write_file(&config).expect("config");
    let adapters = spawn_components_env(
        &config,
        &dir,
        "adapters",
        "adapters.log",
        &[("FAILPOINTS", "adapter-handler-panic=1*return")],
    );
    let rest = spawn_components(&config, &dir, "router,tracer,http", "others.log");
    wait_ready_from(&dir.join("others.log"), port).await;
    let view = view_of(&s, &dir, &mock, users).await;
    let mut centre = view.listen(SON_HA).await;
    let first = birth(8801, POLICE);
    view.send(&first).await;
    let dead = view.dead(1, 60).await;
    assert_eq!(dead.len(), 1, "the panicking delivery is dead-lettered");
    let code = lienthong_core::amqp::header_str(&dead[0].1, headers::REASON_CODE);
    assert_eq!(code.as_deref(), Some("handler-failed"));
    let reason = lienthong_core::amqp::header_str(&dead[0].1, headers::REASON).unwrap_or_default();
    assert!(
        reason.contains("fail point adapter-handler-panic"),
        "the panic's message is the reason: {reason}"
    );
    assert!(
        view.mock_requests("police", &first.ma_ho_so)
            .await
            .is_empty(),
        "it panicked before calling the agency"
    );
    // The slot is free: the next dossier goes through to its result.
    let second = birth(8802, POLICE);
    view.send(&second).await;
    let result = loop {
        let e = next(&mut centre, 60).await;
        if e.ma_ho_so == second.ma_ho_so && e.kind.as_str() == Kind::RESULT {
            break e;
        }
    };
    assert_eq!(result.sender, POLICE);
    for c in [&adapters, &rest] {
        sigterm(c);
    }
    drop((adapters, rest));
    let _ = mock.stop.send(());
    let _ = lienthong_core::topology::Topology::plan(&s)
        .delete(&view.conn)
        .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let _ = std::fs::remove_dir_all(&dir);
}
