//! Faults of the broker itself — a restart mid-stream, a memory alarm — made against a
//! private RabbitMQ node that this suite starts (own node name, ports and data directory) and
//! removes afterwards, never against the shared one.

mod common;

use std::collections::{HashMap, HashSet};
use std::process::Command;
use std::time::{Duration, Instant};

use common::private_broker::{PrivateBroker, PrivateBrokerExt};
use common::*;
use futures_lite::StreamExt;
use lapin::options::BasicConsumeOptions;
use lapin::types::FieldTable;
use lienthong_core::envelope::{Envelope, Kind};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_restart_mid_stream_loses_nothing() {
    let broker = PrivateBroker::start("restart");
    let url = broker.url();
    let bus = Bus::start_on("broker-restart", &broker, |s| {
        s.bus.amqp_url = url.clone();
        s.mock.callback_delay_ms = 20;
    })
    .await;
    let mut centre = listen_reconnecting(url.clone(), bus.names.unit_queue(SON_HA));
    const N: u32 = 150;
    let mut sent = HashSet::new();
    for i in 0..N {
        let e = birth(4000 + i, POLICE);
        sent.insert(e.message_id.clone());
        bus.send(&e).await;
    }
    let mut results: HashMap<String, HashSet<String>> = HashMap::new();
    let mut restarted_at = None;
    let until = Instant::now() + Duration::from_secs(180);
    while results.len() < N as usize {
        assert!(
            Instant::now() < until,
            "only {} of {N} after 180 s",
            results.len()
        );
        let Ok(Some(r)) = tokio::time::timeout(Duration::from_secs(5), centre.recv()).await else {
            continue;
        };
        assert_eq!(r.kind.as_str(), Kind::RESULT, "{r:?}");
        let cause = r.causation_id.clone().expect("causation");
        assert!(sent.contains(&cause));
        results.entry(cause).or_default().insert(r.message_id);
        if results.len() == 30 && restarted_at.is_none() {
            broker.ctl(&["stop_app"]);
            // While the broker is down the bus says so.
            let mut degraded = false;
            for _ in 0..50 {
                if let Ok(r) = reqwest::get(format!("{}/readyz", bus.http)).await
                    && r.status() == reqwest::StatusCode::SERVICE_UNAVAILABLE
                {
                    let body: serde_json::Value = r.json().await.unwrap_or_default();
                    degraded = body["status"] == "degraded";
                    break;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            assert!(
                degraded,
                "/readyz reports degraded while the broker is down"
            );
            let h: serde_json::Value = reqwest::get(format!("{}/healthz", bus.http))
                .await
                .expect("healthz")
                .json()
                .await
                .expect("json");
            assert_eq!(h["status"], "degraded");
            broker.ctl(&["start_app"]);
            restarted_at = Some(Instant::now());
        }
    }
    assert!(
        results.values().all(|ids| ids.len() == 1),
        "one result message per dossier"
    );
    let stats = bus.mock_stats().await;
    assert_eq!(stats["police"]["effects"], N, "{stats}");
    record_reliability(Reliability {
        scenario: "broker restarted mid-stream (private node)".into(),
        fault: "rabbitmqctl stop_app + start_app".into(),
        messages: N as usize,
        lost: N as usize - results.len(),
        duplicate_effects: (stats["police"]["effects"].as_u64().unwrap_or(0) as usize)
            .saturating_sub(N as usize),
        recovery_ms: restarted_at.map(|t| t.elapsed().as_millis()),
        redelivered_copies: 0,
    });
    bus.stop().await;
    drop(broker);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_alarm_makes_http_ingress_answer_503_with_retry_after_and_loses_nothing() {
    let broker = PrivateBroker::start("alarm");
    let url = broker.url();
    let bus = Bus::start_on("broker-alarm", &broker, |s| {
        s.bus.amqp_url = url.clone();
        s.mock.callback_delay_ms = 20;
    })
    .await;
    let mut centre = listen_reconnecting(url.clone(), bus.names.unit_queue(SON_HA));
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .expect("client");
    // Dossiers in flight when the alarm goes off: their publishes (router, adapters) block
    // until it clears.
    let background = send_background(&bus, BACKGROUND, 5000).await;
    let mut early = Answers::new();
    while early.len() < 50 {
        let Ok(Some(e)) = tokio::time::timeout(Duration::from_secs(30), centre.recv()).await else {
            panic!("only {} results before the alarm", early.len());
        };
        let cause = e.causation_id.clone().unwrap_or_default();
        early.entry(cause).or_default().push(e);
    }
    broker.ctl(&["set_vm_memory_high_watermark", "0.0000001"]);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let refused = birth(4200, POLICE);
    let started = Instant::now();
    let post = {
        let (client, url, key, body) = (
            client.clone(),
            format!("{}/v1/messages", bus.http),
            bus.key(SON_HA),
            refused.clone(),
        );
        tokio::spawn(async move { client.post(url).bearer_auth(key).json(&body).send().await })
    };
    // While that request waits for its publisher confirm, the broker blocks the HTTP
    // component's connection, and the bus says so.
    let blocked = |m: &str| {
        m.lines()
            .filter(|l| l.starts_with("lienthong_broker_blocked{") && l.ends_with(" 1"))
            .count()
    };
    eventually_async(12, || async {
        (blocked(&bus.metrics().await) > 0).then_some(())
    })
    .await;
    let r = post.await.expect("task").expect("http");
    let took = started.elapsed();
    assert_eq!(r.status(), reqwest::StatusCode::SERVICE_UNAVAILABLE);
    assert!(r.headers().get("retry-after").is_some());
    assert!(
        took < Duration::from_secs(20),
        "answered in {took:?}, not held until the alarm clears"
    );
    broker.ctl(&["set_vm_memory_high_watermark", "0.4"]);
    let cleared_at = Instant::now();
    eventually_async(30, || async {
        (blocked(&bus.metrics().await) == 0).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    // Retried after the alarm, as the 503 asked: accepted and delivered once.
    let mut accepted = None;
    for _ in 0..30 {
        let r = client
            .post(format!("{}/v1/messages", bus.http))
            .bearer_auth(bus.key(SON_HA))
            .json(&refused)
            .send()
            .await
            .expect("http");
        if r.status() == reqwest::StatusCode::ACCEPTED {
            accepted = Some(());
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert!(accepted.is_some(), "accepted once the alarm cleared");
    let mut all = background.clone();
    all.push(refused.clone());
    let ids = ids_of(&all);
    let answers = collect_more_answers(&mut centre, &ids, 120, early).await;
    let (lost, twice) = tally(&ids, &answers);
    assert_eq!((lost, twice), (0, 0), "one result per dossier");
    let (police, bhxh) = per_agency(&all);
    let stats = bus.mock_stats().await;
    assert_eq!(stats["police"]["effects"], police, "{stats}");
    assert_eq!(stats["bhxh"]["effects"], bhxh, "{stats}");
    record_reliability(Reliability {
        scenario: "broker memory alarm (private node)".into(),
        fault: format!(
            "set_vm_memory_high_watermark 0.0000001 with {BACKGROUND} dossiers in flight, then 0.4"
        ),
        messages: ids.len(),
        lost,
        duplicate_effects: effects_beyond(&stats, police, bhxh),
        recovery_ms: Some(cleared_at.elapsed().as_millis()),
        redelivered_copies: 0,
    });
    bus.stop().await;
    drop(broker);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_frozen_with_sigstop_past_the_heartbeat_then_resumed_loses_nothing() {
    let broker = PrivateBroker::start("freeze");
    // A short heartbeat (seconds), so that the freeze outlasts it.
    let url = format!("{}?heartbeat=3", broker.url());
    let bus = Bus::start_on("broker-freeze", &broker, |s| {
        s.bus.amqp_url = url.clone();
        s.mock.callback_delay_ms = 20;
    })
    .await;
    let mut centre = listen_reconnecting(broker.url(), bus.names.unit_queue(SON_HA));
    let pid = std::fs::read_to_string(broker.dir.join("pid"))
        .expect("pid file")
        .trim()
        .to_string();
    const N: u32 = 300;
    let mut sent = HashSet::new();
    for i in 0..N {
        let e = birth(4300 + i, POLICE);
        sent.insert(e.message_id.clone());
        bus.send(&e).await;
    }
    let mut results: HashMap<String, HashSet<String>> = HashMap::new();
    let mut resumed_at = None;
    let until = Instant::now() + Duration::from_secs(180);
    while results.len() < N as usize {
        assert!(
            Instant::now() < until,
            "only {} of {N} after 180 s",
            results.len()
        );
        let Ok(Some(r)) = tokio::time::timeout(Duration::from_secs(5), centre.recv()).await else {
            continue;
        };
        let cause = r.causation_id.clone().expect("causation");
        assert!(sent.contains(&cause));
        results.entry(cause).or_default().insert(r.message_id);
        if results.len() == 20 && resumed_at.is_none() {
            assert!(
                Command::new("kill")
                    .args(["-STOP", &pid])
                    .status()
                    .expect("kill")
                    .success()
            );
            // Past the 3 s heartbeat (missed after two intervals).
            tokio::time::sleep(Duration::from_secs(10)).await;
            assert!(
                Command::new("kill")
                    .args(["-CONT", &pid])
                    .status()
                    .expect("kill")
                    .success()
            );
            resumed_at = Some(Instant::now());
        }
    }
    assert!(
        results.values().all(|ids| ids.len() == 1),
        "one result message per dossier"
    );
    let stats = bus.mock_stats().await;
    assert_eq!(stats["police"]["effects"], N, "{stats}");
    record_reliability(Reliability {
        scenario: "broker frozen (SIGSTOP) past the heartbeat, then resumed (private node)".into(),
        fault: "kill -STOP beam.smp for 10 s with a 3 s heartbeat, kill -CONT".into(),
        messages: N as usize,
        lost: N as usize - results.len(),
        duplicate_effects: (stats["police"]["effects"].as_u64().unwrap_or(0) as usize)
            .saturating_sub(N as usize),
        recovery_ms: resumed_at.map(|t| t.elapsed().as_millis()),
        redelivered_copies: 0,
    });
    bus.stop().await;
    drop(broker);
}

/// Declare a throwaway queue on the node at `url`, publish one message, consume it and never
/// ack. The task ends when the broker closes the consumer's channel, returning how long the
/// delivery was held.
async fn hold_one_delivery_unacked(url: &str) -> tokio::task::JoinHandle<Duration> {
    use lapin::options::{BasicPublishOptions, QueueDeclareOptions};
    let conn = lapin::Connection::connect(url, Default::default())
        .await
        .expect("control connection");
    let ch = conn.create_channel().await.expect("channel");
    let q = ch
        .queue_declare(
            "".into(),
            QueueDeclareOptions {
                exclusive: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .expect("control queue");
    ch.basic_publish(
        "".into(),
        q.name().as_str().into(),
        BasicPublishOptions::default(),
        b"held",
        Default::default(),
    )
    .await
    .expect("publish");
    let mut consumer = ch
        .basic_consume(
            q.name().as_str().into(),
            "control".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .expect("consume");
    tokio::spawn(async move {
        let held = consumer.next().await;
        assert!(matches!(held, Some(Ok(_))), "the control got its delivery");
        let since = Instant::now();
        // Never acked: the next item is the broker closing the channel.
        while let Some(Ok(_)) = consumer.next().await {}
        let _ = (&ch, &conn, held);
        since.elapsed()
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agency_down_past_a_lowered_consumer_timeout_never_gets_the_consumer_cancelled() {
    // consumer_timeout is node-wide and checked about once a minute on RabbitMQ 3.10: the
    // outage below lasts longer than a check interval.
    let broker = PrivateBroker::start_with("ctimeout", "consumer_timeout = 5000");
    let url = broker.url();
    let bus = Bus::start_on("broker-ctimeout", &broker, |s| {
        s.bus.amqp_url = url.clone();
        s.retry.delays_ms = vec![2_000, 5_000];
        s.retry.max_delayed_attempts = 40;
    })
    .await;
    let mut centre = listen_reconnecting(url.clone(), bus.names.unit_queue(SON_HA));
    // Negative control: a consumer that holds one delivery unacked must be cancelled by this
    // node within a check interval, which proves the lowered timeout is in force.
    let control = hold_one_delivery_unacked(&url).await;
    let env = birth(4500, POLICE);
    // About 75 s of 503s: 13 rounds of 6 in-process attempts with 5 s waits in between.
    bus.fault("police", &env.ma_ho_so, &[503; 78]).await;
    let started = Instant::now();
    bus.send(&env).await;
    let others = send_background(&bus, BACKGROUND, 5000).await;
    let mut ids = ids_of(&others);
    ids.push(env.message_id.clone());
    let answers = collect_answers(&mut centre, &ids, 240).await;
    let outage = started.elapsed();
    let (lost, twice) = tally(&ids, &answers);
    assert_eq!((lost, twice), (0, 0), "one result per dossier");
    assert!(
        outage > Duration::from_secs(60),
        "the outage outlasted a consumer-timeout check: {outage:?}"
    );
    let cancelled_after = tokio::time::timeout(Duration::from_secs(90), control)
        .await
        .expect("the control consumer was cancelled by the broker within 90 s")
        .expect("control task");
    let log = std::fs::read_dir(broker.dir.join("log"))
        .map(|d| {
            d.filter_map(|e| e.ok())
                .filter_map(|e| std::fs::read_to_string(e.path()).ok())
                .collect::<String>()
        })
        .unwrap_or_default();
    let timeouts = log.matches("timed out. Timeout value used").count();
    assert_eq!(
        timeouts, 1,
        "exactly one consumer timeout on the node, the control's (none of the bus):\n{log}"
    );
    let (police, bhxh) = per_agency(&others);
    let stats = bus.mock_stats().await;
    assert_eq!(stats["police"]["effects"], police + 1, "{stats}");
    assert_eq!(stats["bhxh"]["effects"], bhxh, "{stats}");
    record_reliability(Reliability {
        scenario: "agency down past a lowered consumer timeout (private node)".into(),
        fault: format!(
            "consumer_timeout = 5 s (a control consumer holding one delivery was cancelled after {} s); 78 × 503 over {} s for one dossier, {BACKGROUND} others alongside",
            cancelled_after.as_secs(),
            outage.as_secs()
        ),
        messages: ids.len(),
        lost,
        duplicate_effects: effects_beyond(&stats, police + 1, bhxh),
        recovery_ms: None,
        redelivered_copies: 0,
    });
    bus.stop().await;
    drop(broker);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_over_the_brokers_max_size_gets_413_and_the_closed_channel_is_reopened_for_the_rest()
 {
    // The broker refuses messages over 200,000 bytes by closing the publishing *channel*
    // (406 PRECONDITION_FAILED): the HTTP API must not be left with a dead channel.
    let broker = PrivateBroker::start_with("maxsize", "max_message_size = 200000");
    let url = broker.url();
    let bus = Bus::start_on("broker-maxsize", &broker, |s| {
        s.bus.amqp_url = url.clone();
        s.mock.callback_delay_ms = 20;
    })
    .await;
    let mut centre = listen_reconnecting(url.clone(), bus.names.unit_queue(SON_HA));
    let background = send_background(&bus, BACKGROUND, 5400).await;
    let client = reqwest::Client::new();
    let post = |env: &Envelope| {
        client
            .post(format!("{}/v1/messages", bus.http))
            .bearer_auth(bus.key(SON_HA))
            .json(env)
            .send()
    };
    // 5 dossiers with a 180 kB scan inline (about 240 kB as JSON: over the broker's limit,
    // within the bus's own), each followed by an ordinary dossier over HTTP.
    use base64::Engine as _;
    use sha2::Digest as _;
    let scan = vec![0x25u8; 180_000];
    let mut accepted = Vec::new();
    for i in 0..5 {
        let mut big = birth(5800 + i, POLICE);
        big.attachments = vec![lienthong_core::envelope::Attachment {
            name: "to-khai.pdf".into(),
            media_type: "application/pdf".into(),
            size_bytes: scan.len() as u64,
            sha256: lienthong_core::envelope::hex(&sha2::Sha256::digest(&scan)),
            content_base64: Some(base64::engine::general_purpose::STANDARD.encode(&scan)),
            reference: None,
        }];
        let r = post(&big).await.expect("POST");
        let status = r.status();
        let body: serde_json::Value = r.json().await.unwrap_or_default();
        assert_eq!(status, reqwest::StatusCode::PAYLOAD_TOO_LARGE, "{body}");
        assert!(
            body["detail"]
                .as_str()
                .is_some_and(|d| d.contains("max size")),
            "the broker's limit is named: {body}"
        );
        let small = birth(5900 + i, BHXH);
        let r = post(&small).await.expect("POST");
        assert_eq!(
            r.status(),
            reqwest::StatusCode::ACCEPTED,
            "the next message goes through on a reopened channel"
        );
        accepted.push(small);
    }
    let mut all = background.clone();
    all.extend(accepted);
    let ids = ids_of(&all);
    let answers = collect_answers(&mut centre, &ids, 120).await;
    let (lost, twice) = tally(&ids, &answers);
    assert_eq!((lost, twice), (0, 0), "one result per dossier");
    let (police, bhxh) = per_agency(&all);
    let stats = bus.mock_stats().await;
    assert_eq!(stats["police"]["effects"], police, "{stats}");
    assert_eq!(stats["bhxh"]["effects"], bhxh, "{stats}");
    let ready = reqwest::get(format!("{}/readyz", bus.http))
        .await
        .expect("readyz");
    assert!(ready.status().is_success(), "ready, without a restart");
    let metrics = bus.metrics().await;
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("lienthong_channel_recoveries_total")
                && l.contains("channel=\"ingress\"")),
        "channel recoveries are counted: {metrics}"
    );
    // Only the first message too large reached the broker: the publisher learned its limit
    // and refused the next four itself, so the shared channel was closed (and reopened) once.
    let reopened: f64 = metrics
        .lines()
        .filter(|l| {
            l.starts_with("lienthong_channel_recoveries_total")
                && l.contains("component=\"http\"")
                && l.contains("channel=\"ingress\"")
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert_eq!(reopened, 1.0, "{metrics}");
    record_reliability(Reliability {
        scenario: "a message over the broker's max_message_size (private node)".into(),
        fault: format!(
            "max_message_size = 200000; 5 POSTs of ~240 kB (each closes the HTTP API's channel with 406 PRECONDITION_FAILED: 413), each followed by an ordinary POST; {BACKGROUND} dossiers alongside"
        ),
        messages: ids.len(),
        lost,
        duplicate_effects: effects_beyond(&stats, police, bhxh),
        recovery_ms: None,
        redelivered_copies: 0,
    });
    bus.stop().await;
    drop(broker);
}
