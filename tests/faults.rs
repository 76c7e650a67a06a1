//! Fault injection against the real broker, made from outside the process under test with
//! `rabbitmqctl` (only this test's own connections and queues are touched: the shared broker
//! stays as it was). Each scenario drives a few hundred messages and counts, per message id,
//! that each ends in exactly one terminal state with zero lost and zero duplicate effects.

mod common;

use std::collections::{HashMap, HashSet};
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use lienthong_core::envelope::Kind;

/// Close every broker connection whose name carries `prefix` (the bus names its connections
/// `lienthong/<prefix>/<component>`). Returns how many were closed.
fn close_connections(prefix: &str) -> usize {
    let out = Command::new("rabbitmqctl")
        .args(["-q", "list_connections", "pid", "client_properties"])
        .output()
        .expect("rabbitmqctl");
    let text = String::from_utf8_lossy(&out.stdout);
    let needle = format!("lienthong/{prefix}/");
    let pids: Vec<String> = text
        .lines()
        .filter(|l| l.contains(&needle))
        .filter_map(|l| l.split_whitespace().next().map(str::to_string))
        .collect();
    for pid in &pids {
        let st = Command::new("rabbitmqctl")
            .args(["-q", "close_connection", pid, "fault test: forced close"])
            .status()
            .expect("rabbitmqctl");
        assert!(st.success());
    }
    pids.len()
}

/// Send `n` birth dossiers to Police and collect one result per dossier at Sơn Hà, running
/// `fault` once `after` results are in. A copy of a result already seen (the same message id,
/// redelivered: at-least-once allows it when a connection drops between a publisher confirm and
/// the ack, and receivers dedupe by message id) is counted, not an error; a second result
/// message for a dossier is. Returns (result message ids per sent message id, copies, elapsed
/// after the fault).
async fn drive(
    bus: &Bus,
    n: u32,
    after: usize,
    fault: impl FnOnce(),
) -> (HashMap<String, HashSet<String>>, usize, Duration) {
    let mut centre = bus.listen(SON_HA).await;
    let mut ids: HashMap<String, HashSet<String>> = HashMap::new();
    for i in 0..n {
        let env = birth(1000 + i, POLICE);
        ids.insert(env.message_id.clone(), HashSet::new());
        bus.send(&env).await;
    }
    let mut fault = Some(fault);
    let mut got = 0;
    let mut copies = 0;
    let mut fault_at = Instant::now();
    let until = Instant::now() + Duration::from_secs(120);
    while got < n as usize {
        assert!(
            Instant::now() < until,
            "only {got} of {n} results after 120 s"
        );
        let e = next(&mut centre, 60).await;
        assert_eq!(e.kind.as_str(), Kind::RESULT, "{e:?}");
        let cause = e.causation_id.clone().expect("causation");
        let seen = ids.get_mut(&cause).expect("a result for a message we sent");
        if !seen.insert(e.message_id.clone()) {
            copies += 1;
            continue;
        }
        assert_eq!(seen.len(), 1, "a second result message for {cause}: {e:?}");
        got += 1;
        if got == after
            && let Some(f) = fault.take()
        {
            f();
            fault_at = Instant::now();
        }
    }
    // Anything more must be a copy of a result already seen.
    copies += late_copies(&mut centre, &ids).await;
    eprintln!("redelivered copies (same message id): {copies}");
    (ids, copies, fault_at.elapsed())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_force_closed_by_the_broker_mid_stream_loses_nothing() {
    let bus = Bus::start_with("fault-close", |s| {
        s.mock.latency_min_ms = 2;
        s.mock.latency_max_ms = 20;
        s.mock.callback_delay_ms = 20;
    })
    .await;
    let prefix = bus.settings.bus.prefix.clone();
    const N: u32 = 300;
    let (ids, copies, recovery) = drive(&bus, N, 60, || {
        let closed = close_connections(&prefix);
        assert!(closed >= 4, "closed {closed} connections");
    })
    .await;
    assert_eq!(ids.len(), N as usize);
    assert!(
        ids.values().all(|r| r.len() == 1),
        "every dossier exactly one result message"
    );
    let stats = bus.mock_stats().await;
    assert_eq!(
        stats["police"]["effects"], N,
        "no duplicate effect at the agency: {stats}"
    );
    assert!(bus.dead(1, 1).await.is_empty(), "nothing dead-lettered");
    record_reliability(Reliability {
        scenario: "connection force-closed by the broker mid-stream".into(),
        fault: "rabbitmqctl close_connection (every connection of the bus)".into(),
        messages: N as usize,
        lost: ids.values().filter(|r| r.is_empty()).count(),
        duplicate_effects: (stats["police"]["effects"].as_u64().unwrap_or(0) as usize)
            .saturating_sub(N as usize),
        recovery_ms: Some(recovery.as_millis()),
        redelivered_copies: copies,
    });
    let ready = reqwest::get(format!("{}/readyz", bus.http))
        .await
        .expect("readyz");
    assert!(ready.status().is_success(), "reconnected");
    bus.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agency_down_past_the_in_process_budget_waits_in_a_delayed_queue_while_others_flow() {
    let bus = Bus::start("fault-down").await;
    let mut centre = bus.listen(SON_HA).await;
    let slow = birth(2001, POLICE);
    // 6 in-process attempts fail (1 + max_retries 5), the message waits 300 ms in
    // <p>.retry.300, then fails twice more and gets through.
    bus.fault("police", &slow.ma_ho_so, &[503; 8]).await;
    bus.send(&slow).await;
    let others: Vec<_> = (0..200).map(|i| birth(2100 + i, POLICE)).collect();
    for o in &others {
        bus.send(o).await;
    }
    let mut order = Vec::new();
    for _ in 0..201 {
        let r = next(&mut centre, 30).await;
        assert_eq!(r.kind.as_str(), Kind::RESULT, "{r:?}");
        order.push(r.ma_ho_so);
    }
    let slow_at = order
        .iter()
        .position(|m| m == &slow.ma_ho_so)
        .expect("the slow dossier got through");
    assert!(
        slow_at >= 20,
        "the failing dossier does not hold the others up (it came back at position {slow_at})"
    );
    let stats = bus.mock_stats().await;
    assert_eq!(stats["police"]["effects"], 201, "{stats}");
    assert_eq!(stats["police"]["calls"], 201 + 8, "{stats}");
    record_reliability(Reliability {
        scenario: "agency down longer than the in-process retry budget".into(),
        fault: "8 × 503 for one dossier; 200 others behind it".into(),
        messages: 201,
        lost: 201 - order.len(),
        duplicate_effects: (stats["police"]["effects"].as_u64().unwrap_or(0) as usize)
            .saturating_sub(201),
        recovery_ms: None,
        redelivered_copies: 0,
    });
    let store = bus.store();
    let ma = slow.ma_ho_so.clone();
    let rows = delivered_timeline(&store, &ma).await;
    assert!(
        rows.iter().any(|r| r.event == "retried"
            && r.reason
                .as_deref()
                .is_some_and(|x| x.contains(".retry.300"))),
        "{rows:#?}"
    );
    bus.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn absurd_retry_after_is_honoured_up_to_the_longest_delay_step() {
    let bus = Bus::start("fault-retryafter").await;
    let mut centre = bus.listen(SON_HA).await;
    let env = birth(2201, BHXH);
    bus.fault_with("bhxh", &env.ma_ho_so, &[429], Some(1_000_000_000))
        .await;
    // The same with Retry-After as an HTTP date an hour ahead.
    let dated = birth(2202, POLICE);
    bus.fault_json(serde_json::json!({"agency": "police", "ma_ho_so": dated.ma_ho_so, "responses": [429], "retry_after_s": 3600, "retry_after_as_date": true}))
        .await;
    bus.send(&env).await;
    bus.send(&dated).await;
    let mut all = send_background(&bus, BACKGROUND, 5000).await;
    all.push(env.clone());
    all.push(dated.clone());
    let ids = ids_of(&all);
    let answers = collect_answers(&mut centre, &ids, 120).await;
    let (lost, twice) = tally(&ids, &answers);
    assert_eq!((lost, twice), (0, 0), "one answer per dossier");
    assert!(
        answers
            .values()
            .flatten()
            .all(|a| a.kind.as_str() == Kind::RESULT),
        "every dossier delivered"
    );
    let store = bus.store();
    let dma = dated.ma_ho_so.clone();
    let drows = delivered_timeline(&store, &dma).await;
    assert!(
        drows.iter().any(|r| r.event == "retried"
            && r.reason
                .as_deref()
                .is_some_and(|x| x.contains("waiting 800 ms"))),
        "{drows:#?}"
    );
    let ma = env.ma_ho_so.clone();
    let rows = delivered_timeline(&store, &ma).await;
    let parked: Vec<_> = rows.iter().filter(|r| r.event == "retried").collect();
    assert_eq!(
        parked.len(),
        1,
        "no in-process sleep for a long Retry-After: {rows:#?}"
    );
    assert!(
        parked[0]
            .reason
            .as_deref()
            .is_some_and(|x| x.contains("waiting 800 ms")),
        "{parked:?}"
    );
    let (police, bhxh) = per_agency(&all);
    let stats = bus.mock_stats().await;
    assert_eq!(stats["police"]["effects"], police, "{stats}");
    assert_eq!(stats["bhxh"]["effects"], bhxh, "{stats}");
    record_reliability(Reliability {
        scenario: "429 with an absurd Retry-After, in seconds and as an HTTP date".into(),
        fault: format!(
            "429, Retry-After: 1000000000 s; 429, Retry-After: <date an hour ahead>; {BACKGROUND} other dossiers alongside"
        ),
        messages: ids.len(),
        lost,
        duplicate_effects: effects_beyond(&stats, police, bhxh),
        recovery_ms: None,
        redelivered_copies: 0,
    });
    bus.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_past_the_limit_are_dead_lettered_with_the_whole_reason_history() {
    let bus = Bus::start_with("fault-exhaust", |s| s.retry.max_delayed_attempts = 2).await;
    let mut centre = bus.listen(SON_HA).await;
    let env = birth(2301, POLICE);
    bus.fault("police", &env.ma_ho_so, &[503; 40]).await;
    bus.send(&env).await;
    let background = send_background(&bus, BACKGROUND, 5000).await;
    let mut ids = ids_of(&background);
    ids.push(env.message_id.clone());
    let answers = collect_answers(&mut centre, &ids, 120).await;
    let (lost, twice) = tally(&ids, &answers);
    assert_eq!((lost, twice), (0, 0), "one answer per dossier");
    let notice = &answers[&env.message_id][0];
    assert_eq!(notice.kind.as_str(), Kind::DEAD_LETTER);
    assert!(
        notice
            .payload
            .reason
            .as_deref()
            .is_some_and(|r| r.starts_with("retries-exhausted") && r.contains("2 delayed rounds")),
        "{notice:?}"
    );
    assert!(
        background
            .iter()
            .all(|b| answers[&b.message_id][0].kind.as_str() == Kind::RESULT),
        "the others were delivered"
    );
    let dead = bus.dead(2, 5).await;
    assert_eq!(dead.len(), 1, "only the failing dossier is dead-lettered");
    let history =
        lienthong_core::amqp::header_str(&dead[0].1, lienthong_core::deadletter::headers::HISTORY)
            .unwrap_or_default();
    assert_eq!(
        history.lines().count(),
        18,
        "3 rounds × 6 attempts:\n{history}"
    );
    assert!(history.lines().all(|l| l.contains("503")));
    let (police, bhxh) = per_agency(&background);
    let stats = bus.mock_stats().await;
    assert_eq!(stats["police"]["effects"], police, "{stats}");
    assert_eq!(stats["bhxh"]["effects"], bhxh, "{stats}");
    record_reliability(Reliability {
        scenario: "agency never recovers: retries exhausted".into(),
        fault: format!(
            "503 on every attempt (3 rounds × 6 attempts) for one dossier; {BACKGROUND} others alongside"
        ),
        messages: ids.len(),
        lost,
        duplicate_effects: effects_beyond(&stats, police, bhxh),
        recovery_ms: None,
        redelivered_copies: 0,
    });
    bus.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn truncated_answer_and_answer_after_the_client_timeout_are_resolved_without_a_second_effect()
{
    let bus = Bus::start_with("fault-unknown", |s| {
        for u in &mut s.units {
            if let lienthong_core::registry::Reach::Adapter { timeout_ms, .. } = &mut u.reach {
                *timeout_ms = 1_000;
            }
        }
    })
    .await;
    let mut centre = bus.listen(SON_HA).await;
    let truncated = birth(2401, POLICE);
    let slow = birth(2402, BHXH);
    bus.fault(
        "police",
        &truncated.ma_ho_so,
        &[lienthong_testkit::mock::COMMIT_TRUNCATED],
    )
    .await;
    bus.fault(
        "bhxh",
        &slow.ma_ho_so,
        &[lienthong_testkit::mock::COMMIT_SLOW],
    )
    .await;
    bus.send(&truncated).await;
    bus.send(&slow).await;
    let mut all = send_background(&bus, BACKGROUND, 5000).await;
    all.push(truncated.clone());
    all.push(slow.clone());
    let ids = ids_of(&all);
    let answers = collect_answers(&mut centre, &ids, 120).await;
    let (lost, twice) = tally(&ids, &answers);
    assert_eq!((lost, twice), (0, 0), "one answer per dossier");
    assert!(
        answers
            .values()
            .flatten()
            .all(|a| a.kind.as_str() == Kind::RESULT)
    );
    let (police, bhxh) = per_agency(&all);
    let stats = bus.mock_stats().await;
    assert_eq!(stats["police"]["effects"], police, "{stats}");
    assert_eq!(stats["bhxh"]["effects"], bhxh, "{stats}");
    assert!(
        stats["police"]["replays"].as_u64().unwrap_or(0) >= 1,
        "resolved by the same key: {stats}"
    );
    record_reliability(Reliability {
        scenario: "agency commits but its answer is lost".into(),
        fault: format!(
            "truncated 202 body (Police); answer 3 s after a 1 s client timeout (BHXH); {BACKGROUND} other dossiers alongside"
        ),
        messages: ids.len(),
        lost,
        duplicate_effects: effects_beyond(&stats, police, bhxh),
        recovery_ms: None,
        redelivered_copies: 0,
    });
    let store = bus.store();
    for ma in [truncated.ma_ho_so.clone(), slow.ma_ho_so.clone()] {
        let rows = delivered_timeline(&store, &ma).await;
        assert!(
            rows.iter().any(|r| r
                .reason
                .as_deref()
                .is_some_and(|x| x.contains("outcome unknown"))),
            "{rows:#?}"
        );
    }
    bus.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_replayed_after_a_fix_are_delivered_once_and_a_second_replay_does_nothing() {
    let bus = Bus::start("fault-replay").await;
    let mut centre = bus.listen(SON_HA).await;
    let env = birth(2501, POLICE);
    bus.fault("police", &env.ma_ho_so, &[400]).await;
    bus.send(&env).await;
    let background = send_background(&bus, BACKGROUND, 5000).await;
    let mut ids = ids_of(&background);
    ids.push(env.message_id.clone());
    let answers = collect_answers(&mut centre, &ids, 120).await;
    assert_eq!(tally(&ids, &answers), (0, 0), "one answer per dossier");
    assert_eq!(answers[&env.message_id][0].kind.as_str(), Kind::DEAD_LETTER);
    // The dead letter is in <p>.dead; the agency's problem is fixed (the fault was one answer).
    let ids = [env.message_id.clone()];
    let mut report = bus.replay(&ids).await;
    for _ in 0..50 {
        if !report.replayed.is_empty() {
            break;
        }
        // The dead letter may still be on its way into the queue.
        tokio::time::sleep(Duration::from_millis(100)).await;
        report = bus.replay(&ids).await;
    }
    assert_eq!(report.replayed, vec![env.message_id.clone()]);
    let result = next(&mut centre, 20).await;
    assert_eq!(result.kind.as_str(), Kind::RESULT);
    assert_eq!(
        result.causation_id.as_deref(),
        Some(env.message_id.as_str())
    );
    let again = bus.replay(&ids).await;
    assert!(
        again.replayed.is_empty(),
        "nothing left to replay: {again:?}"
    );
    assert!(
        tokio::time::timeout(Duration::from_secs(2), centre.recv())
            .await
            .is_err()
    );
    // Every background dossier once, the replayed one once.
    let (police, bhxh) = per_agency(&background);
    let stats = bus.mock_stats().await;
    assert_eq!(stats["police"]["effects"], police + 1, "{stats}");
    assert_eq!(stats["bhxh"]["effects"], bhxh, "{stats}");
    record_reliability(Reliability {
        scenario: "dead letter replayed twice after a fix".into(),
        fault: format!(
            "400 from the agency, then lienthong dead-letters replay × 2; {BACKGROUND} other dossiers alongside"
        ),
        messages: ids.len(),
        lost: 0,
        duplicate_effects: effects_beyond(&stats, police + 1, bhxh),
        recovery_ms: None,
        redelivered_copies: 0,
    });
    bus.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_unit_queue_deleted_by_hand_is_declared_again_and_its_messages_come_back_from_the_message_store()
 {
    let bus = Bus::start("fault-deleted").await;
    let queue = bus.names.unit_queue(SON_HA_CIVIL);
    let started = lienthong_core::clock::now_rfc3339();
    // 40 dossiers wait in the civil-status office's queue (its software is not reading)…
    let mut sent = std::collections::HashSet::new();
    for i in 0..200 {
        let env = birth(2600 + i, SON_HA_CIVIL);
        sent.insert(env.message_id.clone());
        bus.send(&env).await;
    }
    let store = bus.store();
    eventually(15, "40 messages routed", || {
        let n: usize = (0..200)
            .filter(|i| {
                store
                    .timeline(&format!("{SON_HA}-261129-{:04}", 2600 + i))
                    .map(|r| r.iter().any(|e| e.event == "routed"))
                    .unwrap_or(false)
            })
            .count();
        (n == 200).then_some(())
    })
    .await;
    // … when someone deletes the queue, and all 40 with it.
    let st = Command::new("rabbitmqctl")
        .args(["-q", "delete_queue", &queue])
        .status()
        .expect("rabbitmqctl");
    assert!(st.success());
    // The next message makes the router declare the queue again.
    let late = birth(2900, SON_HA_CIVIL);
    sent.insert(late.message_id.clone());
    bus.send(&late).await;
    let late_ma = late.ma_ho_so.clone();
    eventually(15, "the late message routed", || {
        store
            .timeline(&late_ma)
            .ok()
            .filter(|r| r.iter().any(|e| e.event == "routed"))
            .map(|_| ())
    })
    .await;
    let mut civil = bus.listen(SON_HA_CIVIL).await;
    assert_eq!(next(&mut civil, 20).await.message_id, late.message_id);
    // The operator puts back everything the office was sent since the start.
    let sel = lienthong_core::store::MessageSelection {
        receiver: Some(SON_HA_CIVIL.into()),
        since_ms: chrono::DateTime::parse_from_rfc3339(&started)
            .ok()
            .map(|t| t.timestamp_millis()),
        ..Default::default()
    };
    let resent = lienthong::replay::resend(&bus.settings, &sel)
        .await
        .expect("resend");
    assert_eq!(resent.len(), 201);
    let mut got = std::collections::HashSet::new();
    got.insert(late.message_id.clone());
    while got.len() < 201 {
        got.insert(next(&mut civil, 20).await.message_id);
    }
    assert_eq!(got, sent, "every message is back, none invented");
    record_reliability(Reliability {
        scenario: "unit queue deleted with messages in it".into(),
        fault: "rabbitmqctl delete_queue; recovered with lienthong messages resend".into(),
        messages: sent.len(),
        lost: sent.difference(&got).count(),
        duplicate_effects: 0,
        recovery_ms: None,
        redelivered_copies: 0,
    });
    bus.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poison_message_on_an_agency_queue_never_stops_the_messages_behind_it() {
    let bus = Bus::start("fault-poison").await;
    let mut centre = bus.listen(SON_HA).await;
    // Straight onto the Police queue, past the router: not an envelope at all.
    let props = lapin::BasicProperties::default().with_delivery_mode(2);
    bus.publisher
        .publish(
            &bus.names.deliver_exchange(),
            POLICE,
            b"\x00\xffnot json",
            props,
            true,
        )
        .await
        .expect("published");
    let behind: Vec<_> = (0..200).map(|i| birth(2700 + i, POLICE)).collect();
    for e in &behind {
        bus.send(e).await;
    }
    let mut got = std::collections::HashSet::new();
    while got.len() < behind.len() {
        let r = next(&mut centre, 30).await;
        assert_eq!(r.kind.as_str(), Kind::RESULT);
        got.insert(r.causation_id.expect("causation"));
    }
    let dead = bus.dead(1, 10).await;
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].0, b"\x00\xffnot json".to_vec());
    assert_eq!(
        lienthong_core::amqp::header_str(
            &dead[0].1,
            lienthong_core::deadletter::headers::REASON_CODE
        )
        .as_deref(),
        Some("malformed-json")
    );
    let stats = bus.mock_stats().await;
    record_reliability(Reliability {
        scenario: "a poison message ahead of 200 dossiers".into(),
        fault: "bytes that are not an envelope on the Police queue".into(),
        messages: 201,
        lost: 200 - got.len(),
        duplicate_effects: (stats["police"]["effects"].as_u64().unwrap_or(0) as usize)
            .saturating_sub(200),
        recovery_ms: None,
        redelivered_copies: 0,
    });
    bus.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agency_queue_deleted_under_its_adapter_is_recovered_from_the_message_store_without_duplicates()
 {
    let bus = Bus::start_with("fault-deleted-adapter", |s| {
        s.mock.latency_min_ms = 100;
        s.mock.latency_max_ms = 200;
        s.mock.callback_delay_ms = 20;
        s.topology.adapter_prefetch = 2;
    })
    .await;
    let mut centre = bus.listen(SON_HA).await;
    let started = lienthong_core::clock::now_ms();
    let mut sent = std::collections::HashSet::new();
    for i in 0..200 {
        let e = birth(2800 + i, POLICE);
        sent.insert(e.message_id.clone());
        bus.send(&e).await;
    }
    let mut got = std::collections::HashSet::new();
    while got.len() < 5 {
        got.insert(next(&mut centre, 30).await.causation_id.expect("causation"));
    }
    // Deleted under the adapter's consumer: the consumer is cancelled, what waited is gone.
    let queue = bus.names.unit_queue(POLICE);
    assert!(
        Command::new("rabbitmqctl")
            .args(["-q", "delete_queue", &queue])
            .status()
            .expect("rabbitmqctl")
            .success()
    );
    // The adapter reconnects and declares the queue again; the operator resends from the store.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let sel = lienthong_core::store::MessageSelection {
        receiver: Some(POLICE.into()),
        since_ms: Some(started),
        ..Default::default()
    };
    let resent = lienthong::replay::resend(&bus.settings, &sel)
        .await
        .expect("resend");
    assert_eq!(resent.len(), 200);
    let until = Instant::now() + Duration::from_secs(90);
    while got.len() < 200 {
        assert!(Instant::now() < until, "{} of 200", got.len());
        if let Ok(Some(r)) = tokio::time::timeout(Duration::from_secs(5), centre.recv()).await {
            got.insert(r.causation_id.expect("causation"));
        }
    }
    assert_eq!(got, sent);
    let stats = bus.mock_stats().await;
    assert_eq!(
        stats["police"]["effects"], 200,
        "resent copies of delivered messages were not sent again: {stats}"
    );
    record_reliability(Reliability {
        scenario: "agency queue deleted under its adapter's consumer".into(),
        fault: "rabbitmqctl delete_queue with most of 200 messages waiting or in flight; lienthong messages resend".into(),
        messages: 200,
        lost: 200 - got.len(),
        duplicate_effects: (stats["police"]["effects"].as_u64().unwrap_or(0) as usize).saturating_sub(200),
        recovery_ms: None,
        redelivered_copies: 0,
    });
    bus.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agency_whose_answers_cannot_be_read_alerts_the_operator_once_and_the_dossier_still_goes_through_once()
 {
    let (hook_url, mut hooks) = webhook().await;
    let bus = Bus::start_with("fault-unreadable", move |s| {
        s.process.webhook_url = Some(hook_url);
        s.retry.unreadable_alert_after = 3;
    })
    .await;
    let mut centre = bus.listen(SON_HA).await;
    // Police registers the dossier at once, then answers four times with a truncated body
    // (the same Idempotency-Key each time: it replays its record), then readably.
    let garbled = birth(2501, POLICE);
    bus.fault(
        "police",
        &garbled.ma_ho_so,
        &[lienthong_testkit::mock::COMMIT_TRUNCATED; 4],
    )
    .await;
    bus.send(&garbled).await;
    let mut all = send_background(&bus, BACKGROUND, 5400).await;
    all.push(garbled.clone());
    let ids = ids_of(&all);
    let answers = collect_answers(&mut centre, &ids, 120).await;
    let (lost, twice) = tally(&ids, &answers);
    assert_eq!((lost, twice), (0, 0), "one answer per dossier");
    let (police, bhxh) = per_agency(&all);
    let stats = bus.mock_stats().await;
    assert_eq!(stats["police"]["effects"], police, "{stats}");
    // The operator hears of it once, with what the agency answered.
    let mut alerts = Vec::new();
    while let Ok(Some(v)) = tokio::time::timeout(Duration::from_secs(3), hooks.recv()).await {
        if v["level"] == "unreadable_answers" {
            alerts.push(v);
        }
    }
    assert_eq!(alerts.len(), 1, "one alert per message: {alerts:?}");
    let a = &alerts[0];
    assert_eq!(a["ma_ho_so"], garbled.ma_ho_so.as_str());
    assert_eq!(a["holder"], POLICE);
    assert_eq!(a["message_id"], garbled.message_id.as_str());
    assert!(a["answers"].as_u64().is_some_and(|n| n >= 3), "{a}");
    assert!(
        a["answer"]
            .as_str()
            .is_some_and(|x| x.contains("MaTiepNhan") || x.contains('{')),
        "an excerpt of the raw answer: {a}"
    );
    assert!(
        a["reason"]
            .as_str()
            .is_some_and(|r| r.contains("lienthong check CA.H48")),
        "{a}"
    );
    let store = bus.store();
    let rows = delivered_timeline(&store, &garbled.ma_ho_so).await;
    assert!(
        rows.iter().any(|r| r.event == "alert"
            && r.reason
                .as_deref()
                .is_some_and(|x| x.starts_with("unreadable_answers"))),
        "an alert event in the dossier's trace"
    );
    let metrics = bus.metrics().await;
    assert!(
        metrics.lines().any(
            |l| l.starts_with("lienthong_adapter_unreadable_answers_total") && l.contains(POLICE)
        ),
        "{metrics}"
    );
    record_reliability(Reliability {
        scenario: "agency answers that cannot be read, alerting an operator".into(),
        fault: format!(
            "Police registers a dossier and answers 4 times with a truncated 2xx body, then readably (unreadable_alert_after = 3); {BACKGROUND} other dossiers alongside"
        ),
        messages: ids.len(),
        lost,
        duplicate_effects: effects_beyond(&stats, police, bhxh),
        recovery_ms: None,
        redelivered_copies: 0,
    });
    bus.stop().await;
}
