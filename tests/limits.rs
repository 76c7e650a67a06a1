//! Limits that bad input cannot get past (issue 17, item 5), against the real broker on
//! 127.0.0.1:5672, the bus and the mock agencies on loopback: a deeply nested payload is refused
//! before it is parsed (dead letter with the reason over AMQP, 413 problem+json over HTTP) while
//! the next message flows; a filing date (`ngay_tiep_nhan`) in year 1 or year 9999 is refused
//! and `/v1/overdue` still answers; an attachment named with a path is refused; one unit's
//! queue flooded past its `x-max-length` (nobody consuming it) parks the overflow (`queue-full`)
//! while the other units' messages keep flowing and nothing is dead-lettered; once a consumer
//! drains the queue every flooded message arrives, none twice (on a private node with the
//! shipped deploy/rabbitmq/advanced.config, which sets how soon the broker tries a refused
//! dead letter again).

mod common;

use std::time::Duration;

use common::private_broker::{PrivateBroker, PrivateBrokerExt};
use common::*;
use lienthong_core::amqp::header_str;
use lienthong_core::deadletter::headers;
use lienthong_core::envelope::{Attachment, Envelope};
use serde_json::{Value, json};

async fn post(bus: &Bus, env: &Envelope) -> reqwest::Response {
    reqwest::Client::new()
        .post(format!("{}/v1/messages", bus.http))
        .bearer_auth(bus.key(SON_HA))
        .timeout(Duration::from_secs(10))
        .json(env)
        .send()
        .await
        .expect("http")
}

/// `{"a":{"a":…1…}}`, `levels` deep.
fn nested(levels: usize) -> Value {
    (0..levels).fold(json!(1), |inner, _| json!({ "a": inner }))
}

/// The dead letters' (reason code, reason) for the message ids `ids`, waiting up to 15 s.
async fn dead_reasons(bus: &Bus, ids: &[&str]) -> Vec<(String, String)> {
    let dead = bus.dead(ids.len(), 15).await;
    assert_eq!(
        dead.len(),
        ids.len(),
        "every refused message is dead-lettered"
    );
    dead.iter()
        .map(|(body, props)| {
            let id = serde_json::from_slice::<Value>(body)
                .ok()
                .and_then(|v| v["message_id"].as_str().map(str::to_string))
                .unwrap_or_default();
            assert!(ids.contains(&id.as_str()), "dead letter of {id}");
            (
                header_str(props, headers::REASON_CODE).unwrap_or_default(),
                header_str(props, headers::REASON).unwrap_or_default(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deeply_nested_payload_is_refused_over_amqp_and_http_and_the_next_message_flows() {
    let bus = Bus::start("limits-nested").await;
    let mut civil = bus.listen(SON_HA_CIVIL).await;
    let mut deep = birth(1, SON_HA_CIVIL);
    if let Some(d) = deep.payload.data.as_mut() {
        d.insert("x".into(), nested(100));
    }
    bus.send(&deep).await;
    let good = birth(2, SON_HA_CIVIL);
    bus.send(&good).await;
    assert_eq!(next(&mut civil, 15).await.message_id, good.message_id);
    let reasons = dead_reasons(&bus, &[&deep.message_id]).await;
    assert_eq!(reasons[0].0, "too-large", "{reasons:?}");
    assert!(reasons[0].1.contains("max_json_depth"), "{reasons:?}");

    // HTTP: 413 problem+json with the same reason.
    let mut deep = birth(3, SON_HA_CIVIL);
    if let Some(d) = deep.payload.data.as_mut() {
        d.insert("x".into(), nested(40));
    }
    let r = post(&bus, &deep).await;
    assert_eq!(r.status(), reqwest::StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(
        r.headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok()),
        Some("application/problem+json")
    );
    let p: Value = r.json().await.expect("problem+json");
    assert!(
        p["detail"]
            .as_str()
            .is_some_and(|d| d.contains("max_json_depth")),
        "{p}"
    );
    bus.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filing_dates_in_year_1_and_9999_are_refused_and_the_overdue_list_still_answers() {
    let bus = Bus::start("limits-dates").await;
    let mut ids = Vec::new();
    for (seq, when) in [
        (1, "0001-01-01T08:00:00+07:00"),
        (2, "9999-12-31T08:00:00+07:00"),
    ] {
        let mut f = filed_birth(seq);
        if let Some(d) = f.payload.data.as_mut() {
            d.insert("ngay_tiep_nhan".into(), json!(when));
        }
        bus.send(&f).await;
        ids.push(f.message_id.clone());
    }
    // A dossier the process manager runs, so that the overdue scan has work.
    let ok = filed_birth(3);
    bus.send(&ok).await;
    let id_refs: Vec<&str> = ids.iter().map(String::as_str).collect();
    for (code, reason) in dead_reasons(&bus, &id_refs).await {
        assert_eq!(code, "invalid-field", "{reason}");
        assert!(
            reason.contains("ngay_tiep_nhan") && reason.contains("date_window_days_back"),
            "{reason}"
        );
    }
    // Over HTTP too: 422.
    let mut f = filed_birth(4);
    if let Some(d) = f.payload.data.as_mut() {
        d.insert("ngay_tiep_nhan".into(), json!("9999-12-31T08:00:00+07:00"));
    }
    let r = post(&bus, &f).await;
    assert!(r.status().is_client_error(), "{}", r.status());
    // The overdue list answers (the request returns within the client's 5 s).
    let key = bus.settings.http.operator_key.clone().unwrap_or_default();
    let r = reqwest::Client::new()
        .get(format!("{}/v1/overdue", bus.http))
        .bearer_auth(&key)
        .timeout(Duration::from_secs(5))
        .send()
        .await
        .expect("/v1/overdue answers");
    assert!(r.status().is_success(), "{}", r.status());
    let items: Value = r.json().await.expect("json");
    assert!(items.is_array(), "{items}");
    bus.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_attachment_named_with_a_path_is_refused() {
    let bus = Bus::start("limits-attachment").await;
    for name in ["../../etc/passwd", "a\\b.pdf", "giay\u{1b}[2J.pdf"] {
        let mut env = birth(1, SON_HA_CIVIL);
        env.attachments.push(Attachment {
            name: name.into(),
            media_type: "application/pdf".into(),
            size_bytes: 3,
            sha256: "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad".into(),
            content_base64: Some("YWJj".into()),
            reference: None,
        });
        let r = post(&bus, &env).await;
        assert_eq!(
            r.status(),
            reqwest::StatusCode::UNPROCESSABLE_ENTITY,
            "{name}"
        );
        let p: Value = r.json().await.expect("problem+json");
        assert!(
            p["detail"]
                .as_str()
                .is_some_and(|d| d.contains("attachment 0") || d.contains("/attachments/0/name")),
            "{name}: {p}"
        );
    }
    bus.stop().await;
}

/// Messages in `queue` now (a passive declare).
async fn depth(bus: &Bus, queue: &str) -> u32 {
    let ch = bus.conn.create_channel().await.expect("channel");
    let q = ch
        .queue_declare(
            queue.into(),
            lapin::options::QueueDeclareOptions {
                passive: true,
                ..Default::default()
            },
            lapin::types::FieldTable::default(),
        )
        .await
        .expect("queue exists");
    let _ = ch.close(200, "checked".into()).await;
    q.message_count()
}

/// The shipped `advanced.config` of the broker nodes (deploy/rabbitmq/): the flood test's
/// private node runs with it, as a deployment does.
const ADVANCED_CONFIG: &str = include_str!("../deploy/rabbitmq/advanced.config");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flooded_unit_queue_parks_its_overflow_while_other_units_flow_and_loses_nothing() {
    const LIMIT: u32 = 20;
    const FLOOD: u32 = 60;
    // A private node with the shipped advanced.config: how soon a parked message comes back is
    // the broker's dead-letter worker's setting (`dead_letter_worker_publisher_confirm_timeout`,
    // 10 s there, 180 s by RabbitMQ's default), so this runs on a node configured as deployed
    // rather than on the machine's shared one.
    let broker =
        PrivateBroker::start_with_files("flood", "", &[("advanced.config", ADVANCED_CONFIG)]);
    let bus = Bus::start_on("limits-flood", &broker, |s| {
        if let Some(u) = s.units.iter_mut().find(|u| u.code == SON_HA_CIVIL) {
            u.max_queue_length = Some(u64::from(LIMIT));
        }
    })
    .await;
    let mut centre = bus.listen(SON_HA).await;
    // Nobody consumes the civil-status office's queue while 60 dossiers go to it, and 40 to
    // the agencies alongside.
    let mut flood = Vec::new();
    let mut flooded = Vec::new();
    let mut others = Vec::new();
    for i in 0..FLOOD {
        let e = birth(1000 + i, SON_HA_CIVIL);
        bus.send(&e).await;
        flood.push(e.message_id.clone());
        flooded.push(e.ma_ho_so.clone());
        if i % 3 == 0 {
            others.extend(send_background(&bus, 2, 2000 + i * 2).await);
        }
    }
    // The others are delivered to their agencies and answered.
    let ids = ids_of(&others);
    let answers = collect_answers(&mut centre, &ids, 90).await;
    assert_eq!(tally(&ids, &answers), (0, 0), "others: (lost, twice)");
    // The flooded queue holds about its limit (a quorum queue checks the limit as publishes
    // arrive, so a few in flight may pass it), far from all 60; nothing was dead-lettered.
    let civil_queue = bus.names.unit_queue(SON_HA_CIVIL);
    let held = depth(&bus, &civil_queue).await;
    assert!(held <= LIMIT + 10, "{held} messages in a queue of {LIMIT}");
    assert!(bus.dead(1, 1).await.is_empty(), "nothing dead-lettered");
    // The overflow is visible in the trace as parked, queue-full.
    let store = bus.store();
    let parked = eventually(10, "a queue-full trace", || {
        flooded.iter().find_map(|ma| {
            store.timeline(ma).ok()?.into_iter().find(|r| {
                r.reason
                    .as_deref()
                    .is_some_and(|x| x.starts_with("queue-full"))
            })
        })
    })
    .await;
    assert!(
        parked
            .reason
            .as_deref()
            .is_some_and(|r| r.contains(&civil_queue)),
        "{parked:?}"
    );
    // A consumer drains the queue: every flooded message arrives, none twice. Those the full
    // queue refused come back from the retry queue once it has room: RabbitMQ's at-least-once
    // dead-lettering tries a refused dead letter again every 10 s (the advanced.config), so
    // within 20 s; 120 s leaves room for a loaded machine.
    let mut civil = bus.listen(SON_HA_CIVIL).await;
    let mut seen = std::collections::HashMap::<String, u32>::new();
    let until = std::time::Instant::now() + Duration::from_secs(120);
    while seen.len() < flood.len() && std::time::Instant::now() < until {
        if let Ok(Some(e)) = tokio::time::timeout(Duration::from_secs(5), civil.recv()).await {
            *seen.entry(e.message_id).or_default() += 1;
        }
    }
    // A second copy of any would come in the same stream: a few seconds more to catch it.
    while let Ok(Some(e)) = tokio::time::timeout(Duration::from_secs(3), civil.recv()).await {
        *seen.entry(e.message_id).or_default() += 1;
    }
    // What did not arrive, each with its dossier's trace as `lienthong trace` prints it.
    let missing: Vec<String> = flood
        .iter()
        .zip(&flooded)
        .filter(|(id, _)| !seen.contains_key(*id))
        .map(|(id, ma)| match store.timeline(ma) {
            Ok(rows) => format!(
                "{id}:\n{}",
                lienthong_core::trace::render_timeline(ma, &rows)
            ),
            Err(e) => format!("{id} ({ma}): no trace: {e}"),
        })
        .collect();
    let twice = seen.values().filter(|n| **n > 1).count();
    assert!(
        missing.is_empty(),
        "{} of {FLOOD} flooded messages did not arrive in 120 s:\n{}\nthe broker's queues:\n{}",
        missing.len(),
        missing.join("\n"),
        broker_queues(Some(&broker.node), &bus.settings.bus.prefix)
    );
    assert_eq!(twice, 0, "no flooded message delivered twice");
    bus.stop().await;
}
