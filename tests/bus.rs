//! The bus end to end against a real RabbitMQ and real HTTP servers on loopback.

mod common;

use std::time::Duration;

use common::*;
use lapin::options::QueueDeclareOptions;
use lapin::types::FieldTable;
use lienthong_core::amqp::header_str;
use lienthong_core::deadletter::headers;
use lienthong_core::envelope::{Envelope, Kind};
use serde_json::{Map, Value, json};
use unicode_normalization::UnicodeNormalization;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn birth_dossier_from_son_ha_reaches_police_and_bhxh_and_both_results_come_back_in_order() {
    let bus = Bus::start("birth").await;
    let mut centre = bus.listen(SON_HA).await;
    let mut civil = bus.listen(SON_HA_CIVIL).await;

    // Sơn Hà files the dossier with its civil-status office.
    let filed = birth(1, SON_HA_CIVIL);
    bus.send(&filed).await;
    let at_civil = next(&mut civil, 15).await;
    assert_eq!(at_civil.message_id, filed.message_id);

    // The civil-status office registers the birth and answers the centre.
    let mut result = at_civil.reply(Kind::RESULT, SON_HA_CIVIL, SON_HA);
    result.payload.result = Some(Map::from_iter([(
        "so_dang_ky_khai_sinh".to_string(),
        json!("152/2026"),
    )]));
    bus.send(&result).await;
    let back = next(&mut centre, 15).await;
    assert_eq!(back.kind.as_str(), Kind::RESULT);
    assert_eq!(back.sender, SON_HA_CIVIL);

    // The centre forwards to Police and Social Insurance in parallel, with the birth result.
    let mut ids = Vec::new();
    for agency in [POLICE, BHXH] {
        let mut f = filed.clone();
        f.message_id = lienthong_core::envelope::new_message_id();
        f.receiver = Some(agency.to_string());
        f.causation_id = Some(back.message_id.clone());
        if let Some(d) = f.payload.data.as_mut() {
            d.insert(
                "ket_qua_khai_sinh".into(),
                json!({"so_dang_ky_khai_sinh": "152/2026"}),
            );
        }
        ids.push(f.message_id.clone());
        bus.send(&f).await;
    }
    let mut from = Vec::new();
    for _ in 0..2 {
        let r = next(&mut centre, 20).await;
        assert_eq!(r.kind.as_str(), Kind::RESULT, "{r:?}");
        assert_eq!(r.ma_ho_so, filed.ma_ho_so);
        assert_eq!(r.correlation_id, filed.correlation_id);
        assert!(ids.contains(r.causation_id.as_ref().expect("causation")));
        from.push(r.sender.clone());
        if r.sender == BHXH {
            let res = r.payload.result.as_ref().expect("result");
            assert!(
                res.get("so_the_bhyt")
                    .and_then(Value::as_str)
                    .is_some_and(|s| s.starts_with("TE")),
                "{res:?}"
            );
        }
    }
    from.sort();
    assert_eq!(from, vec![BHXH.to_string(), POLICE.to_string()]);
    let stats = bus.mock_stats().await;
    assert_eq!(stats["police"]["effects"], 1);
    assert_eq!(stats["bhxh"]["effects"], 1);

    // Every hop is in the trace store, in order.
    let store = bus.store();
    let ma = filed.ma_ho_so.clone();
    let rows = eventually(15, "the whole trace", || {
        let rows = store.timeline(&ma).ok()?;
        let routed_back = rows
            .iter()
            .filter(|r| r.event == "routed" && r.to.as_deref() == Some(SON_HA))
            .count();
        (routed_back == 3).then_some(rows)
    })
    .await;
    let pos = |event: &str, to: &str| {
        rows.iter()
            .position(|r| r.event == event && r.to.as_deref() == Some(to))
            .unwrap_or_else(|| panic!("no {event} to {to}: {rows:#?}"))
    };
    assert!(pos("routed", SON_HA_CIVIL) < pos("routed", SON_HA));
    for agency in [POLICE, BHXH] {
        assert!(pos("received", agency) < pos("routed", agency));
        assert!(pos("routed", agency) < pos("delivered", agency));
    }
    let last_routed_back = rows
        .iter()
        .rposition(|r| r.event == "routed" && r.to.as_deref() == Some(SON_HA))
        .expect("result routed");
    assert!(
        pos("delivered", POLICE) < last_routed_back && pos("delivered", BHXH) < last_routed_back
    );
    assert!(
        rows.windows(2).all(|w| w[0].at <= w[1].at),
        "timeline is time-ordered"
    );
    bus.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_json_is_dead_lettered_with_a_reason_and_the_next_message_still_flows() {
    let bus = Bus::start("malformed").await;
    let mut civil = bus.listen(SON_HA_CIVIL).await;
    bus.send_raw(b"{\"spec\": \"lienthong.envelope/1\", \"kind\": ")
        .await;
    let good = birth(2, SON_HA_CIVIL);
    bus.send(&good).await;
    assert_eq!(next(&mut civil, 15).await.message_id, good.message_id);
    let dead = bus.dead(1, 10).await;
    assert_eq!(dead.len(), 1);
    assert_eq!(
        dead[0].0,
        b"{\"spec\": \"lienthong.envelope/1\", \"kind\": ".to_vec(),
        "the body is kept verbatim"
    );
    assert_eq!(
        header_str(&dead[0].1, headers::REASON_CODE).as_deref(),
        Some("malformed-json")
    );
    assert!(
        header_str(&dead[0].1, headers::REASON)
            .is_some_and(|r| r.contains("not valid JSON") && r.contains("line 1"))
    );
    let store = bus.store();
    let listed = eventually(10, "the dead-letter log", || {
        store.dead_letters(10).ok().filter(|v| !v.is_empty())
    })
    .await;
    assert_eq!(listed[0].reason_code, "malformed-json");
    bus.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_receiver_and_hop_off_the_route_are_refused_over_amqp_and_http() {
    let bus = Bus::start("refused").await;
    let mut centre = bus.listen(SON_HA).await;
    let mut civil = bus.listen(SON_HA_CIVIL).await;

    // AMQP: an unknown receiver, and Tax (not on the birth route) → dead letters, and the
    // centre is told why (the two notices may come in either order).
    let unknown = birth(3, "000.99.99.H48");
    let off_route = birth(4, "CT.H48");
    bus.send(&unknown).await;
    bus.send(&off_route).await;
    let mut notices = std::collections::HashMap::new();
    for _ in 0..2 {
        let n = next(&mut centre, 15).await;
        assert_eq!(n.kind.as_str(), Kind::DEAD_LETTER);
        notices.insert(
            n.causation_id.clone().expect("causation"),
            n.payload.reason.clone().unwrap_or_default(),
        );
    }
    let r = &notices[&unknown.message_id];
    assert!(r.starts_with("unknown-receiver"), "{r}");
    let r = &notices[&off_route.message_id];
    assert!(r.starts_with("not-on-route") && r.contains("CT.H48"), "{r}");
    let dead = bus.dead(2, 10).await;
    let codes: Vec<String> = dead
        .iter()
        .filter_map(|(_, p)| header_str(p, headers::REASON_CODE))
        .collect();
    assert!(
        codes.contains(&"unknown-receiver".to_string())
            && codes.contains(&"not-on-route".to_string()),
        "{codes:?}"
    );

    // HTTP: the same refusals as problem+json, nothing published.
    let client = reqwest::Client::new();
    for (env, code) in [
        (birth(5, "000.99.99.H48"), "unknown-receiver"),
        (birth(6, "CT.H48"), "not-on-route"),
    ] {
        let r = client
            .post(format!("{}/v1/messages", bus.http))
            .bearer_auth(bus.key(SON_HA))
            .json(&env)
            .send()
            .await
            .expect("http");
        assert_eq!(r.status(), reqwest::StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(r.headers()["content-type"], "application/problem+json");
        let p: Value = r.json().await.expect("problem");
        assert_eq!(p["type"], format!("urn:lienthong:problem:{code}"));
        assert_eq!(p["status"], 422);
        assert!(p["detail"].as_str().is_some_and(|d| !d.is_empty()));
    }
    // HTTP: another unit's key may not send as Sơn Hà; a good one is accepted.
    let r = client
        .post(format!("{}/v1/messages", bus.http))
        .bearer_auth(bus.key("000.20.61.H48"))
        .json(&birth(7, SON_HA_CIVIL))
        .send()
        .await
        .expect("http");
    assert_eq!(r.status(), reqwest::StatusCode::FORBIDDEN);
    let good = birth(8, SON_HA_CIVIL);
    let r = client
        .post(format!("{}/v1/messages", bus.http))
        .bearer_auth(bus.key(SON_HA))
        .json(&good)
        .send()
        .await
        .expect("http");
    assert_eq!(r.status(), reqwest::StatusCode::ACCEPTED);
    let body: Value = r.json().await.expect("json");
    assert_eq!(body["message_id"], good.message_id);
    assert_eq!(next(&mut civil, 15).await.message_id, good.message_id);
    // The router's stages of a routed message are timed on /metrics.
    let url = format!("{}/metrics", bus.http);
    let op = bus.settings.http.operator_key.clone().unwrap_or_default();
    let metrics = eventually_async(10, || {
        let (client, url, op) = (client.clone(), url.clone(), op.clone());
        async move {
            let text = client
                .get(url)
                .bearer_auth(op)
                .send()
                .await
                .ok()?
                .text()
                .await
                .ok()?;
            ["store_write", "publish_confirm", "trace_write"]
                .iter()
                .all(|s| {
                    text.contains(&format!(
                        "lienthong_router_stage_seconds_count{{stage=\"{s}\"}}"
                    ))
                })
                .then_some(text)
        }
    })
    .await;
    assert!(
        metrics.contains(
            "lienthong_router_stage_seconds_bucket{stage=\"publish_confirm\",le=\"0.025\"}"
        ),
        "{metrics}"
    );
    bus.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agency_answering_503_twice_then_accepting_gets_the_dossier_exactly_once_with_two_retries_traced()
 {
    let bus = Bus::start("retry").await;
    let mut centre = bus.listen(SON_HA).await;
    let env = birth(9, POLICE);
    bus.fault("police", &env.ma_ho_so, &[503, 503]).await;
    bus.send(&env).await;
    let result = next(&mut centre, 20).await;
    assert_eq!(result.kind.as_str(), Kind::RESULT);
    assert_eq!(result.sender, POLICE);
    let stats = bus.mock_stats().await;
    assert_eq!(stats["police"]["calls"], 3, "{stats}");
    assert_eq!(stats["police"]["effects"], 1, "{stats}");
    let store = bus.store();
    let ma = env.ma_ho_so.clone();
    let rows = delivered_timeline(&store, &ma).await;
    let retried: Vec<_> = rows
        .iter()
        .filter(|r| {
            r.event == "retried" && r.message_id.as_deref() == Some(env.message_id.as_str())
        })
        .collect();
    assert_eq!(retried.len(), 2, "{rows:#?}");
    assert!(
        retried
            .iter()
            .all(|r| r.reason.as_deref().is_some_and(|x| x.contains("503")))
    );
    let delivered = rows
        .iter()
        .find(|r| r.event == "delivered")
        .expect("delivered");
    assert_eq!(delivered.attempt, Some(3));
    bus.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agency_answering_400_dead_letters_that_dossier_with_its_reason_and_others_keep_flowing() {
    let bus = Bus::start("permanent").await;
    let mut centre = bus.listen(SON_HA).await;
    let bad = birth(10, BHXH);
    let good = birth(11, BHXH);
    bus.fault("bhxh", &bad.ma_ho_so, &[400]).await;
    bus.send(&bad).await;
    bus.send(&good).await;
    let mut notice = None;
    let mut result = None;
    for _ in 0..2 {
        let e = next(&mut centre, 20).await;
        match e.kind.as_str() {
            Kind::DEAD_LETTER => notice = Some(e),
            Kind::RESULT => result = Some(e),
            other => panic!("unexpected {other}"),
        }
    }
    let notice = notice.expect("dead-letter notice to the centre");
    assert_eq!(notice.ma_ho_so, bad.ma_ho_so);
    let reason = notice.payload.reason.clone().unwrap_or_default();
    assert!(
        reason.starts_with("agency-refused") && reason.contains("400"),
        "{reason}"
    );
    assert_eq!(
        result.expect("the good dossier's result").ma_ho_so,
        good.ma_ho_so
    );
    let dead = bus.dead(1, 10).await;
    assert_eq!(dead.len(), 1);
    let env: Envelope = serde_json::from_slice(&dead[0].0).expect("envelope kept");
    assert_eq!(env.message_id, bad.message_id);
    assert_eq!(
        header_str(&dead[0].1, headers::REASON_CODE).as_deref(),
        Some("agency-refused")
    );
    assert_eq!(
        header_str(&dead[0].1, headers::COMPONENT).as_deref(),
        Some("adapter:BHXH.H48")
    );
    bus.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nfd_name_arrives_at_the_agency_as_nfc() {
    let bus = Bus::start("nfc").await;
    let mut centre = bus.listen(SON_HA).await;
    let mut env = birth(12, POLICE);
    let nfd_child: String = "Đinh Thị Bảo Ngọc".nfd().collect();
    let nfd_parent: String = "Đinh Văn Lực".nfd().collect();
    assert_ne!(nfd_child, "Đinh Thị Bảo Ngọc");
    if let Some(d) = env.payload.data.as_mut() {
        d.insert(
            "tre".into(),
            json!({"ho_ten": nfd_child, "ngay_sinh": "2026-11-20", "gioi_tinh": "nu"}),
        );
    }
    if let Some(a) = env.payload.applicant.as_mut() {
        a.ho_ten = nfd_parent;
    }
    // Sent as raw JSON so nothing on the sending side normalises it.
    bus.send_raw(&serde_json::to_vec(&env).expect("json")).await;
    next(&mut centre, 20).await;
    let reqs = bus.mock_requests("police", &env.ma_ho_so).await;
    assert_eq!(reqs.len(), 1);
    let child = reqs[0]["CongDan"]["HoVaTen"].as_str().expect("name");
    let parent = reqs[0]["ChuHoSo"]["HoVaTen"].as_str().expect("name");
    assert_eq!(child, "Đinh Thị Bảo Ngọc".nfc().collect::<String>());
    assert_eq!(parent, "Đinh Văn Lực".nfc().collect::<String>());
    assert!(unicode_normalization::is_nfc(child) && unicode_normalization::is_nfc(parent));
    bus.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_precreated_with_other_arguments_gives_a_named_startup_error() {
    let (s, dir) = settings("mismatch");
    let conn = lapin::Connection::connect(AMQP_URL, Default::default())
        .await
        .expect("broker");
    let ch = conn.create_channel().await.expect("channel");
    // The router queue as a classic queue without arguments; a unit queue as a quorum queue
    // whose only difference is its delivery limit.
    let router = format!("{}.router", s.bus.prefix);
    ch.queue_declare(
        router.as_str().into(),
        QueueDeclareOptions {
            durable: true,
            ..Default::default()
        },
        FieldTable::default(),
    )
    .await
    .expect("classic queue");
    let unit = format!("{}.unit.{POLICE}", s.bus.prefix);
    let mut args = FieldTable::default();
    let long = |v: String| lapin::types::AMQPValue::LongString(v.into());
    args.insert("x-queue-type".into(), long("quorum".into()));
    args.insert(
        "x-dead-letter-exchange".into(),
        long(format!("{}.dlx", s.bus.prefix)),
    );
    args.insert(
        "x-dead-letter-strategy".into(),
        long("at-least-once".into()),
    );
    args.insert("x-overflow".into(), long("reject-publish".into()));
    // A queue declared before the unit queues were bounded (issue 17): the argument set of
    // then, without x-max-length; the migration in docs/deploy.md starts from this error.
    let old_unit = format!("{}.unit.{BHXH}", s.bus.prefix);
    let mut old_args = args.clone();
    old_args.insert(
        "x-delivery-limit".into(),
        lapin::types::AMQPValue::LongLongInt(i64::from(s.topology.delivery_limit)),
    );
    ch.queue_declare(
        old_unit.as_str().into(),
        QueueDeclareOptions {
            durable: true,
            ..Default::default()
        },
        old_args,
    )
    .await
    .expect("quorum queue of an older version");
    let num = |v: u64| lapin::types::AMQPValue::LongLongInt(v as i64);
    args.insert("x-max-length".into(), num(s.topology.unit_max_length));
    args.insert(
        "x-max-length-bytes".into(),
        num(s.topology.unit_max_length_bytes),
    );
    args.insert(
        "x-delivery-limit".into(),
        lapin::types::AMQPValue::LongLongInt(3),
    );
    ch.queue_declare(
        unit.as_str().into(),
        QueueDeclareOptions {
            durable: true,
            ..Default::default()
        },
        args,
    )
    .await
    .expect("quorum queue");
    let err = match lienthong::run::start(s.clone(), &lienthong::run::Component::ALL).await {
        Ok(_) => panic!("startup must fail"),
        Err(e) => format!("{e:#}"),
    };
    assert!(
        err.contains(&format!(
            "queue \"{router}\" already exists with a different \"x-dead-letter-exchange\" argument"
        )),
        "{err}"
    );
    assert!(
        err.contains(&format!(
            "queue \"{unit}\" already exists with a different \"x-delivery-limit\" argument"
        )),
        "{err}"
    );
    assert!(
        err.contains(&format!(
            "queue \"{old_unit}\" already exists with a different \"x-max-length\" argument"
        )),
        "{err}"
    );
    let _ = lienthong_core::topology::Topology::plan(&s)
        .delete(&conn)
        .await;
    let _ = conn.close(200, "done".into()).await;
    // No `Bus` ran to drop it: the PostgreSQL pass's database of this test.
    if !s.store.url.is_empty() {
        lienthong_testkit::pg::drop_database(&s.store.url);
    }
    let _ = std::fs::remove_dir_all(dir);
    tokio::time::sleep(Duration::from_millis(10)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_after_from_the_agency_sets_the_wait_before_the_next_attempt() {
    let bus = Bus::start_with("retryafter", |s| {
        s.retry.min_delay_ms = 10;
        s.retry.max_delay_ms = 3_000;
    })
    .await;
    let mut centre = bus.listen(SON_HA).await;
    let env = birth(13, POLICE);
    bus.fault_with("police", &env.ma_ho_so, &[429], Some(1))
        .await;
    bus.send(&env).await;
    assert_eq!(next(&mut centre, 20).await.kind.as_str(), Kind::RESULT);
    let store = bus.store();
    let ma = env.ma_ho_so.clone();
    let rows = delivered_timeline(&store, &ma).await;
    let retried = rows
        .iter()
        .find(|r| r.event == "retried")
        .expect("one retry");
    let reason = retried.reason.clone().unwrap_or_default();
    assert!(
        reason.contains("429") && reason.contains("next attempt in 1000 ms"),
        "{reason}"
    );
    bus.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bhxh_receipt_saying_loi_in_a_200_is_a_permanent_failure() {
    let bus = Bus::start("loi").await;
    let mut centre = bus.listen(SON_HA).await;
    let env = birth(14, BHXH);
    bus.fault("bhxh", &env.ma_ho_so, &[200]).await;
    bus.send(&env).await;
    // 199 other dossiers around it.
    for i in 0..199 {
        bus.send(&birth(5000 + i, BHXH)).await;
    }
    let mut notice = None;
    let mut results = std::collections::HashSet::new();
    while notice.is_none() || results.len() < 199 {
        let e = next(&mut centre, 30).await;
        match e.kind.as_str() {
            Kind::DEAD_LETTER => notice = Some(e),
            _ => {
                results.insert(e.causation_id.expect("causation"));
            }
        }
    }
    let notice = notice.expect("notice");
    assert_eq!(notice.ma_ho_so, env.ma_ho_so);
    let reason = notice.payload.reason.unwrap_or_default();
    assert!(
        reason.starts_with("agency-refused") && reason.contains("BienNhan LOI E_DU_LIEU"),
        "{reason}"
    );
    let stats = bus.mock_stats().await;
    assert_eq!(
        stats["bhxh"]["calls"], 200,
        "no retry of a permanent failure: {stats}"
    );
    assert_eq!(stats["bhxh"]["effects"], 199, "{stats}");
    record_reliability(Reliability {
        scenario: "200 with an error in the body (BienNhan LOI)".into(),
        fault: "one dossier answered 200 + KetQua LOI among 200".into(),
        messages: 200,
        lost: 199 - results.len(),
        duplicate_effects: (stats["bhxh"]["effects"].as_u64().unwrap_or(0) as usize)
            .saturating_sub(199),
        recovery_ms: None,
        redelivered_copies: 0,
    });
    bus.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn withdrawal_cancels_the_dossier_at_the_agency_and_the_status_lookup_shows_it() {
    // The agency takes its time, so the dossier is still open when the citizen withdraws it.
    let bus = Bus::start_with("cancel", |s| s.mock.callback_delay_ms = 60_000).await;
    let env = birth(15, POLICE);
    bus.send(&env).await;
    let police = bus
        .settings
        .units
        .iter()
        .find(|u| u.code == POLICE)
        .expect("police unit")
        .clone();
    let adapter = lienthong_adapters::build(&police, "http://127.0.0.1:9").expect("adapter");
    let ma = env.ma_ho_so.clone();
    let mut st = None;
    for _ in 0..100 {
        if let Some(s) = adapter.status(&ma).await.found() {
            st = Some(s);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let st = st.expect("the dossier reached the agency");
    assert_eq!(st.status, 2, "accepted, not decided yet");
    let mut withdraw = env.reply(Kind::STATUS, SON_HA, POLICE);
    withdraw.status = Some(lienthong_core::TrangThaiHoSo::WITHDRAWN);
    withdraw.payload.reason = Some("Công dân rút hồ sơ".into());
    bus.send(&withdraw).await;
    let mut now = 0;
    for _ in 0..100 {
        now = adapter
            .status(&ma)
            .await
            .found()
            .map(|s| s.status)
            .unwrap_or(0);
        if now == 8 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(now, 8, "processing stopped at the agency");
    assert_eq!(bus.mock_stats().await["police"]["cancels"], 1);
    bus.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envelope_with_huge_schema_errors_is_dead_lettered_and_the_bus_keeps_going() {
    let bus = Bus::start("huge").await;
    let mut civil = bus.listen(SON_HA_CIVIL).await;
    let mut centre = bus.listen(SON_HA).await;
    // 600 KB of name plus a schema error that would repeat it: the reason must still fit in
    // an AMQP header frame, or the router's connection is closed by the broker.
    let mut poison = serde_json::to_value(birth(16, SON_HA_CIVIL)).expect("json");
    poison["payload"]["applicant"]["ho_ten"] = Value::String("Đ".repeat(300_000));
    poison["payload"]["applicant"]["nope"] = Value::String("x".repeat(100_000));
    bus.send_raw(&serde_json::to_vec(&poison).expect("json"))
        .await;
    let good = birth(17, SON_HA_CIVIL);
    bus.send(&good).await;
    assert_eq!(next(&mut civil, 15).await.message_id, good.message_id);
    let notice = next(&mut centre, 15).await;
    assert_eq!(notice.kind.as_str(), Kind::DEAD_LETTER);
    assert!(
        notice
            .payload
            .reason
            .as_deref()
            .is_some_and(|r| r.starts_with("schema-invalid") && r.len() <= 2100)
    );
    let dead = bus.dead(1, 10).await;
    assert_eq!(dead.len(), 1);
    assert_eq!(
        header_str(&dead[0].1, headers::REASON_CODE).as_deref(),
        Some("schema-invalid")
    );
    assert!(bus.running.as_ref().is_some(), "still running");
    let ready = reqwest::get(format!("{}/readyz", bus.http))
        .await
        .expect("readyz");
    assert!(ready.status().is_success());
    bus.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_refuses_oversized_bodies_wrong_media_types_and_control_characters_as_problems() {
    let bus = Bus::start_with("httpedges", |s| s.envelope.max_envelope_bytes = 100_000).await;
    // No connection reuse: the server may close a connection whose oversized body it refused.
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .expect("client");
    let url = format!("{}/v1/messages", bus.http);
    let big = vec![b' '; 300_000];
    let r = client
        .post(&url)
        .bearer_auth(bus.key(SON_HA))
        .header("content-type", "application/json")
        .body(big)
        .send()
        .await
        .expect("http");
    assert_eq!(r.status(), reqwest::StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(r.headers()["content-type"], "application/problem+json");
    let p: Value = r.json().await.expect("problem");
    assert_eq!(p["type"], "urn:lienthong:problem:too-large");
    let env = birth(18, SON_HA_CIVIL);
    let r = client
        .post(&url)
        .bearer_auth(bus.key(SON_HA))
        .header("content-type", "text/plain")
        .body(serde_json::to_vec(&env).expect("json"))
        .send()
        .await
        .expect("http");
    assert_eq!(r.status(), reqwest::StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let mut bad = birth(19, SON_HA_CIVIL);
    if let Some(a) = bad.payload.applicant.as_mut() {
        a.ho_ten = "Đinh\u{1}Lực".into();
    }
    let r = client
        .post(&url)
        .bearer_auth(bus.key(SON_HA))
        .json(&bad)
        .send()
        .await
        .expect("http");
    assert_eq!(r.status(), reqwest::StatusCode::UNPROCESSABLE_ENTITY);
    let p: Value = r.json().await.expect("problem");
    assert_eq!(p["type"], "urn:lienthong:problem:invalid-field");
    assert!(
        p["detail"]
            .as_str()
            .is_some_and(|d| d.contains("/payload/applicant/ho_ten")),
        "{p}"
    );
    // Read endpoints take the operator key only.
    let r = client
        .get(format!("{}/v1/dead-letters", bus.http))
        .bearer_auth(bus.key(SON_HA))
        .send()
        .await
        .expect("http");
    assert_eq!(r.status(), reqwest::StatusCode::UNAUTHORIZED);
    let r = client
        .get(format!("{}/v1/dead-letters", bus.http))
        .bearer_auth(bus.operator_key())
        .send()
        .await
        .expect("http");
    assert!(r.status().is_success());
    bus.stop().await;
}

/// A dossier for Police delivered to the mock agency, which does not call back by itself
/// (`callback_delay_ms` far away): the test plays the agency's callback. Returns the centre's
/// listener, the dossier, and Police's status-9 callback for it (`SoHoSoCuTru` = `record`).
async fn delivered_to_police_awaiting_callback(
    bus: &Bus,
    n: u32,
    record: &str,
) -> (
    tokio::sync::mpsc::UnboundedReceiver<Envelope>,
    Envelope,
    Value,
) {
    let centre = bus.listen(SON_HA).await;
    let env = birth(n, POLICE);
    bus.send(&env).await;
    let mut delivered = false;
    for _ in 0..100 {
        if bus.mock_stats().await["police"]["effects"] == 1 {
            delivered = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(delivered);
    // The delivery is recorded just after the agency's receipt; give it a moment.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let callback = json!({"MaHoSo": env.ma_ho_so, "MaThamChieu": env.message_id, "MaTiepNhan": format!("CA.H48.{record}"), "TrangThaiHoSo": 9,
        "ThoiDiemXuLy": "20261130100512", "NguoiXuLy": "Thượng úy Lê Văn Phúc", "NoiDungXuLy": "Đã đăng ký thường trú",
        "KetQua": {"NoiThuongTru": "Di Lăng, Sơn Hà", "NgayDangKy": "20261130", "SoHoSoCuTru": record}});
    (centre, env, callback)
}

/// Post `callback` to Police's callback route with `key`; the answer.
async fn send_police_callback(bus: &Bus, key: &str, callback: &Value) -> reqwest::Response {
    reqwest::Client::new()
        .post(format!("{}/v1/callbacks/{POLICE}", bus.http))
        .bearer_auth(key)
        .json(callback)
        .send()
        .await
        .expect("callback")
}

/// Post Police's `callback` `times` times; the bus message id of each answer (every one 200).
async fn post_police_callback(bus: &Bus, callback: &Value, times: usize) -> Vec<String> {
    let mut ids = Vec::new();
    for _ in 0..times {
        let r = send_police_callback(bus, &bus.callback_key(POLICE), callback).await;
        assert_eq!(r.status(), reqwest::StatusCode::OK);
        let v: Value = r.json().await.expect("json");
        ids.push(v["message_id"].as_str().expect("id").to_string());
    }
    ids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repeated_agency_callback_gives_the_centre_one_result() {
    let bus = Bus::start_with("callback", |s| s.mock.callback_delay_ms = 600_000).await;
    let (mut centre, _, callback) = delivered_to_police_awaiting_callback(&bus, 20, "051.1").await;
    let ids = post_police_callback(&bus, &callback, 2).await;
    assert_eq!(ids[0], ids[1], "the same bus message both times");
    let result = next(&mut centre, 15).await;
    assert_eq!(result.message_id, ids[0]);
    assert!(
        tokio::time::timeout(Duration::from_millis(1500), centre.recv())
            .await
            .is_err(),
        "no second result"
    );
    // A wrong key and a 9 without KetQua are refused.
    let r = send_police_callback(&bus, "wrong", &callback).await;
    assert_eq!(r.status(), reqwest::StatusCode::UNAUTHORIZED);
    let mut no_result = callback.clone();
    no_result.as_object_mut().expect("object").remove("KetQua");
    let r = send_police_callback(&bus, &bus.callback_key(POLICE), &no_result).await;
    assert_eq!(r.status(), reqwest::StatusCode::BAD_REQUEST);
    bus.stop().await;
}

/// A repeat of a callback whose publish the bus could not mark confirmed (it stopped in
/// between): published again as the same bytes (the first claim's message id and `sent_at`),
/// which the centre dedupes; a repeat with another content is refused (`409 callback-differs`)
/// and publishes nothing; once marked, a repeat only gets the id.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repeat_before_the_confirmed_publish_goes_out_as_the_same_bytes() {
    use lienthong_adapters::deliveries::{Claim, Fixed, claim_callback_in};
    let bus = Bus::start_with("callback-claimed", |s| s.mock.callback_delay_ms = 600_000).await;
    let (mut centre, env, callback) =
        delivered_to_police_awaiting_callback(&bus, 23, "051.2").await;
    let ids = post_police_callback(&bus, &callback, 1).await;
    let first = next(&mut centre, 15).await;
    assert_eq!(first.message_id, ids[0]);
    // As if the bus had stopped between the confirm and its mark.
    let reference = env.message_id.clone();
    bus.store()
        .with(move |db| {
            db.execute_batch(&format!(
                "UPDATE agency_callbacks SET published = 0 WHERE reference = '{reference}'"
            ))
        })
        .expect("unmark");
    // Another content is refused, and nothing reaches the centre.
    let mut changed = callback.clone();
    changed["KetQua"]["SoHoSoCuTru"] = json!("051.9");
    let r = send_police_callback(&bus, &bus.callback_key(POLICE), &changed).await;
    assert_eq!(r.status(), reqwest::StatusCode::CONFLICT);
    let problem: Value = r.json().await.expect("json");
    assert_eq!(
        problem["type"], "urn:lienthong:problem:callback-differs",
        "{problem}"
    );
    // The same content again goes out as the same envelope: same id, same time, same result.
    assert_eq!(post_police_callback(&bus, &callback, 1).await, ids);
    let again = next(&mut centre, 15).await;
    assert_eq!(
        serde_json::to_value(&again).expect("json"),
        serde_json::to_value(&first).expect("json"),
        "the repeat's publish is the first one's envelope"
    );
    assert!(
        tokio::time::timeout(Duration::from_millis(1500), centre.recv())
            .await
            .is_err(),
        "nothing else"
    );
    // Its publish marked the claim again: a further claim only gets the id.
    let (reference, other) = (
        env.message_id.clone(),
        Fixed {
            message_id: lienthong_core::envelope::new_message_id(),
            sent_at: None,
            sha256: None,
        },
    );
    let now = bus
        .store()
        .with(move |db| claim_callback_in(db, POLICE, &reference, 9, &other))
        .expect("claim");
    assert_eq!(now, Claim::Published(ids[0].clone()));
    bus.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reused_message_id_is_dead_lettered_not_silently_acked() {
    let bus = Bus::start("reuse").await;
    let mut centre = bus.listen(SON_HA).await;
    let first = birth(21, POLICE);
    bus.send(&first).await;
    assert_eq!(next(&mut centre, 20).await.kind.as_str(), Kind::RESULT);
    let mut second = birth(22, POLICE);
    second.message_id = first.message_id.clone();
    bus.send(&second).await;
    let notice = next(&mut centre, 20).await;
    assert_eq!(notice.kind.as_str(), Kind::DEAD_LETTER);
    assert_eq!(notice.ma_ho_so, second.ma_ho_so);
    assert!(
        notice
            .payload
            .reason
            .as_deref()
            .is_some_and(|r| r.starts_with("invalid-field") && r.contains("already used")),
        "{notice:?}"
    );
    assert_eq!(bus.mock_stats().await["police"]["effects"], 1);
    bus.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_20_mb_dossier_goes_through_by_claim_check() {
    use base64::Engine as _;
    use sha2::Digest as _;
    let bus = Bus::start("claimcheck").await;
    let mut centre = bus.listen(SON_HA).await;
    let scan: Vec<u8> = (0..20_000_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect();
    let sha = lienthong_core::envelope::hex(&sha2::Sha256::digest(&scan));
    let mut env = birth(23, POLICE);
    env.attachments = vec![lienthong_core::envelope::Attachment {
        name: "ban_scan_ho_so.pdf".into(),
        media_type: "application/pdf".into(),
        size_bytes: scan.len() as u64,
        sha256: sha.clone(),
        content_base64: Some(base64::engine::general_purpose::STANDARD.encode(&scan)),
        reference: None,
    }];
    let r = reqwest::Client::new()
        .post(format!("{}/v1/messages", bus.http))
        .bearer_auth(bus.key(SON_HA))
        .json(&env)
        .send()
        .await
        .expect("http");
    assert_eq!(
        r.status(),
        reqwest::StatusCode::ACCEPTED,
        "{}",
        r.text().await.unwrap_or_default()
    );
    let result = next(&mut centre, 60).await;
    assert_eq!(result.kind.as_str(), Kind::RESULT);
    // What went through the broker was small; the agency got a link it can fetch.
    let stored = bus
        .store()
        .stored_messages(&lienthong_core::store::MessageSelection {
            ids: vec![env.message_id.clone()],
            ..Default::default()
        })
        .expect("store");
    assert_eq!(stored.len(), 1);
    // Read back as routed (the store keeps it compressed): the same envelope, claim-checked.
    let kept: Envelope = serde_json::from_slice(&stored[0].body).expect("the stored envelope");
    assert_eq!(
        (kept.message_id.as_str(), kept.ma_ho_so.as_str()),
        (env.message_id.as_str(), env.ma_ho_so.as_str())
    );
    assert!(
        stored[0].body.len() < 100_000,
        "envelope through the broker: {} bytes",
        stored[0].body.len()
    );
    let reqs = bus.mock_requests("police", &env.ma_ho_so).await;
    let file = &reqs[0]["TepDinhKem"][0];
    assert!(file.get("NoiDung").is_none());
    let link = file["DuongDan"].as_str().expect("link").to_string();
    assert!(link.ends_with(&sha), "{link}");
    let fetched = reqwest::Client::new()
        .get(&link)
        .bearer_auth(bus.callback_key(POLICE))
        .send()
        .await
        .expect("fetch");
    assert!(fetched.status().is_success());
    assert_eq!(fetched.headers()["x-content-type-options"], "nosniff");
    assert!(
        fetched.headers()["content-disposition"]
            .to_str()
            .is_ok_and(|d| d.starts_with("attachment")),
        "{:?}",
        fetched.headers()
    );
    let bytes = fetched.bytes().await.expect("bytes");
    assert_eq!(bytes.len(), scan.len());
    assert_eq!(
        lienthong_core::envelope::hex(&sha2::Sha256::digest(&bytes)),
        sha
    );
    let anonymous = reqwest::get(&link).await.expect("fetch");
    assert_eq!(anonymous.status(), reqwest::StatusCode::UNAUTHORIZED);
    // Its centre and the operator may fetch it; a centre that is not a party of the dossier
    // gets the same answer as for a blob that does not exist.
    for (key, status) in [
        (bus.key(SON_HA), reqwest::StatusCode::OK),
        (bus.operator_key(), reqwest::StatusCode::OK),
        (bus.key("000.20.61.H48"), reqwest::StatusCode::NOT_FOUND),
    ] {
        let r = reqwest::Client::new()
            .get(&link)
            .bearer_auth(key)
            .send()
            .await
            .expect("fetch");
        assert_eq!(r.status(), status);
    }
    // Only the bus mints blob references; a sender's own must be https.
    let mut thief = birth(24, POLICE);
    thief.sender = "000.20.61.H48".into();
    thief.ma_ho_so = "000.20.61.H48-261129-0024".into();
    for reference in [
        format!("urn:lienthong:blob:sha256:{sha}"),
        "http://files.example/scan.pdf".to_string(),
    ] {
        thief.message_id = uuid::Uuid::now_v7().to_string();
        thief.attachments = vec![lienthong_core::envelope::Attachment {
            name: "ban_scan_ho_so.pdf".into(),
            media_type: "application/pdf".into(),
            size_bytes: scan.len() as u64,
            sha256: sha.clone(),
            content_base64: None,
            reference: Some(reference.clone()),
        }];
        let r = reqwest::Client::new()
            .post(format!("{}/v1/messages", bus.http))
            .bearer_auth(bus.key("000.20.61.H48"))
            .json(&thief)
            .send()
            .await
            .expect("http");
        assert_eq!(
            r.status(),
            reqwest::StatusCode::UNPROCESSABLE_ENTITY,
            "{reference}"
        );
        let p: Value = r.json().await.expect("problem");
        assert!(
            p["detail"]
                .as_str()
                .is_some_and(|d| d.contains("is not allowed")),
            "{p}"
        );
    }
    bus.stop().await;
}

/// Bind an exclusive, auto-delete queue of the test to the trace exchange and return its name.
async fn tap_trace_exchange(bus: &Bus, ch: &lapin::Channel) -> String {
    let q = ch
        .queue_declare(
            "".into(),
            QueueDeclareOptions {
                exclusive: true,
                auto_delete: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .expect("tap queue");
    let name = q.name().as_str().to_string();
    ch.queue_bind(
        name.as_str().into(),
        bus.names.trace_exchange().as_str().into(),
        "".into(),
        Default::default(),
        FieldTable::default(),
    )
    .await
    .expect("bind the tap");
    name
}

/// The router's trace events of `message_id` in the store (received, routed).
async fn router_events_stored(bus: &Bus, ma_ho_so: &str, message_id: &str) -> Vec<String> {
    let store = bus.store();
    eventually(15, "the router's two events in the store", || {
        let rows = store.timeline(ma_ho_so).ok()?;
        let ev: Vec<String> = rows
            .iter()
            .filter(|r| r.component == "router" && r.message_id.as_deref() == Some(message_id))
            .map(|r| r.event.clone())
            .collect();
        (ev.len() == 2).then_some(ev)
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trace_events_go_straight_into_the_store_by_default_and_through_the_trace_exchange_when_asked()
 {
    use futures_lite::StreamExt;
    use lapin::options::BasicConsumeOptions;
    use lienthong_core::trace::parse_trace_message;

    // Default (`trace_direct`): the events are in the store and there is no trace exchange for
    // anything to cross (or to publish to).
    let bus = Bus::start("trace-direct").await;
    assert!(bus.settings.store.trace_direct);
    let ch = bus.conn.create_channel().await.expect("channel");
    let declared = ch
        .exchange_declare(
            bus.names.trace_exchange().as_str().into(),
            lapin::ExchangeKind::Fanout,
            lapin::options::ExchangeDeclareOptions {
                passive: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await;
    assert!(declared.is_err(), "no trace exchange with trace_direct");
    let mut civil = bus.listen(SON_HA_CIVIL).await;
    let filed = birth(7001, SON_HA_CIVIL);
    bus.send(&filed).await;
    assert_eq!(next(&mut civil, 15).await.message_id, filed.message_id);
    let ev = router_events_stored(&bus, &filed.ma_ho_so, &filed.message_id).await;
    assert_eq!(ev, ["received", "routed"]);
    bus.stop().await;

    // `trace_direct = false`: the router's events are published to `<p>.trace` (any queue bound
    // there sees them) and the tracer stores them.
    let bus = Bus::start_with("trace-exchange", |s| s.store.trace_direct = false).await;
    let ch = bus.conn.create_channel().await.expect("channel");
    let tap = tap_trace_exchange(&bus, &ch).await;
    let mut consumer = ch
        .basic_consume(
            tap.as_str().into(),
            "trace-tap".into(),
            BasicConsumeOptions {
                no_ack: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .expect("consume the tap");
    let mut civil = bus.listen(SON_HA_CIVIL).await;
    let filed = birth(7002, SON_HA_CIVIL);
    bus.send(&filed).await;
    assert_eq!(next(&mut civil, 15).await.message_id, filed.message_id);
    let mut seen = Vec::new();
    while seen.len() < 2 {
        let d = tokio::time::timeout(Duration::from_secs(15), consumer.next())
            .await
            .expect("trace messages on the exchange")
            .expect("a delivery")
            .expect("not an error");
        for e in parse_trace_message(&d.data).expect("a trace message") {
            if e.component == "router" && e.message_id.as_deref() == Some(&filed.message_id) {
                seen.push(e.event.as_str().to_string());
            }
        }
    }
    assert_eq!(seen, ["received", "routed"]);
    let ev = router_events_stored(&bus, &filed.ma_ho_so, &filed.message_id).await;
    assert_eq!(ev, ["received", "routed"]);

    // Through an adapter: its delivery-log writes commit in the group commit while its events
    // go through the exchange (`Tracer::emit_with`); the agency's callback comes back as a
    // result, and the adapter's `received` and `delivered` are stored by the tracer.
    let mut centre = bus.listen(SON_HA).await;
    let to_police = birth(7003, POLICE);
    bus.send(&to_police).await;
    let back = next(&mut centre, 20).await;
    assert_eq!(back.kind.as_str(), Kind::RESULT, "{back:?}");
    assert_eq!(back.ma_ho_so, to_police.ma_ho_so);
    assert_eq!(
        back.causation_id.as_deref(),
        Some(to_police.message_id.as_str())
    );
    let rows = delivered_timeline(&bus.store(), &to_police.ma_ho_so).await;
    let adapter: Vec<&str> = rows
        .iter()
        .filter(|r| r.component == format!("adapter:{POLICE}"))
        .map(|r| r.event.as_str())
        .collect();
    assert_eq!(adapter, ["received", "delivered"], "{rows:?}");
    let log = lienthong_adapters::deliveries::DeliveryLog::new(bus.store()).expect("log");
    let rec = log
        .get(&to_police.message_id)
        .expect("read the delivery log")
        .expect("a delivery record");
    assert!(rec.delivered && !rec.receipt.is_empty(), "{rec:?}");
    assert_eq!(rec.reply_to, SON_HA);
    bus.stop().await;
}

/// The demo, the bench and the tests wait for the line `lienthong run` logs once its HTTP API
/// listens; the test kit (which does not depend on this package) names it too.
#[test]
fn the_test_kit_waits_for_the_line_lienthong_run_logs() {
    assert_eq!(
        lienthong_testkit::procs::HTTP_LISTENING,
        lienthong::run::HTTP_LISTENING
    );
}
