//! Sender authentication over AMQP, against the real broker with real per-unit broker users
//! created from `topology export`'s definitions: a unit publishes only as its own units, only
//! to `<p>.ingress`, and reads only its own queue.

mod common;

use std::time::Duration;

use common::*;
use lapin::options::{BasicConsumeOptions, BasicPublishOptions, ConfirmSelectOptions};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Connection};
use lienthong_core::amqp::{Publisher, envelope_properties, header_str};
use lienthong_core::deadletter::headers;
use lienthong_core::envelope::Kind;

/// Publish on a fresh confirm channel of `conn`; the broker's refusal as text.
async fn publish_raw(
    conn: &Connection,
    exchange: &str,
    body: &[u8],
    props: BasicProperties,
) -> Result<(), String> {
    let ch = conn.create_channel().await.map_err(|e| e.to_string())?;
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .map_err(|e| e.to_string())?;
    let confirm = ch
        .basic_publish(
            exchange.into(),
            "".into(),
            BasicPublishOptions::default(),
            body,
            props,
        )
        .await
        .map_err(|e| e.to_string())?;
    confirm.await.map_err(|e| e.to_string())?;
    // A refused publish closes the channel asynchronously: give the close a moment to land.
    tokio::time::sleep(Duration::from_millis(300)).await;
    if ch.status().connected() {
        Ok(())
    } else {
        Err("the broker closed the channel".into())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_unit_publishes_only_as_itself_and_only_where_it_may() {
    let (bus, _user, conn) = start_with_son_ha_user("sender-auth").await;
    let son_ha = Publisher::new(&conn, 10_000).await.expect("publisher");
    let mut civil = bus.listen(SON_HA_CIVIL).await;
    let mut centre = bus.listen(SON_HA).await;
    let ingress = bus.names.ingress_exchange();

    // As itself: routed.
    let env = birth(9301, SON_HA_CIVIL);
    son_ha
        .publish(
            &ingress,
            "",
            &env.to_bytes(),
            envelope_properties(&env),
            true,
        )
        .await
        .expect("Sơn Hà may publish to the ingress");
    let got = next(&mut civil, 20).await;
    assert_eq!(got.message_id, env.message_id);

    // As Police, with a result for that dossier: dead-lettered, no effect, no notice.
    let mut forged = env.reply(Kind::RESULT, POLICE, SON_HA);
    forged.payload.result = serde_json::json!({"so_dang_ky": "TT-1"})
        .as_object()
        .cloned();
    son_ha
        .publish(
            &ingress,
            "",
            &forged.to_bytes(),
            envelope_properties(&forged),
            true,
        )
        .await
        .expect("the broker takes it: the router refuses it");
    // Without user_id (a client that does not set it): refused too.
    let bare = birth(9302, SON_HA_CIVIL);
    publish_raw(
        &conn,
        &ingress,
        &bare.to_bytes(),
        envelope_properties(&bare),
    )
    .await
    .expect("the broker takes a message without user_id");
    let dead = bus.dead(2, 20).await;
    assert_eq!(dead.len(), 2, "both refused messages are dead-lettered");
    for (_, props) in &dead {
        assert_eq!(
            header_str(props, headers::REASON_CODE).as_deref(),
            Some("sender-mismatch")
        );
    }
    let reasons: Vec<String> = dead
        .iter()
        .filter_map(|(_, p)| header_str(p, headers::REASON))
        .collect();
    assert!(
        reasons.iter().any(|r| r.contains("not for sender CA.H48")),
        "{reasons:?}"
    );
    assert!(
        reasons.iter().any(|r| r.contains("no user_id")),
        "{reasons:?}"
    );
    // Nothing reached the centre (no result, no notice), nothing else reached the office.
    assert!(
        tokio::time::timeout(Duration::from_secs(2), centre.recv())
            .await
            .is_err(),
        "a forged result or a notice reached Sơn Hà"
    );
    assert!(
        tokio::time::timeout(Duration::from_millis(500), civil.recv())
            .await
            .is_err(),
        "the message without user_id was routed"
    );
    // The dossier's trace knows nothing of the forged result.
    let rows = bus.store().timeline(&env.ma_ho_so).expect("timeline");
    assert!(
        rows.iter()
            .all(|r| r.message_id.as_deref() != Some(forged.message_id.as_str())),
        "the forged result is in the dossier's trace"
    );
    assert!(
        bus.store()
            .timeline(&bare.ma_ho_so)
            .expect("timeline")
            .is_empty(),
        "the unauthenticated filing is in a trace"
    );

    // Where a unit may not write or read: the broker refuses (ACCESS_REFUSED).
    for exchange in [
        bus.names.deliver_exchange(),
        bus.names.dead_letter_exchange(),
        bus.names.trace_exchange(),
        bus.names.retry(300),
    ] {
        let r = publish_raw(&conn, &exchange, b"{}", BasicProperties::default()).await;
        let e = r.expect_err(&format!("Sơn Hà published to {exchange}"));
        assert!(
            e.contains("ACCESS_REFUSED") || e.contains("NOT_FOUND") || e.contains("closed"),
            "{exchange}: {e}"
        );
    }
    let ch = conn.create_channel().await.expect("channel");
    let r = ch
        .basic_consume(
            bus.names.unit_queue(POLICE).into(),
            "thief".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await;
    let Err(e) = r else {
        panic!("Sơn Hà read Police's queue");
    };
    let e = e.to_string();
    assert!(e.contains("ACCESS_REFUSED"), "{e}");
    let _ = conn.close(200, "done".into()).await;
    bus.stop().await;
}

/// The HTTP API key of unit `code` in the test's settings.
fn key_of(bus: &Bus, code: &str) -> String {
    bus.settings
        .units
        .iter()
        .find(|u| u.code == code)
        .and_then(|u| u.api_key.clone())
        .expect("the unit has an API key")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_its_parties_act_on_a_dossier_and_no_centre_takes_anothers_codes_or_ids() {
    const DUC_PHO: &str = "000.20.61.H48";
    let bus = Bus::start("parties").await;
    let client = reqwest::Client::new();
    let url = format!("{}/v1/messages", bus.http);
    let post = |key: String, env: lienthong_core::envelope::Envelope| {
        let (client, url) = (client.clone(), url.clone());
        async move {
            let r = client
                .post(url)
                .bearer_auth(key)
                .json(&env)
                .send()
                .await
                .expect("http");
            let status = r.status();
            let body: serde_json::Value = r.json().await.unwrap_or_default();
            (status, body)
        }
    };
    let mut civil = bus.listen(SON_HA_CIVIL).await;
    // Sơn Hà files a dossier: it is the dossier's origin.
    let filed = birth(9401, SON_HA_CIVIL);
    let (status, _) = post(key_of(&bus, SON_HA), filed.clone()).await;
    assert_eq!(status, reqwest::StatusCode::ACCEPTED);
    assert_eq!(next(&mut civil, 20).await.message_id, filed.message_id);

    // Đức Phổ's centre, over HTTP, sends a status about Sơn Hà's dossier: not a party.
    let mut meddling = filed.reply(Kind::STATUS, DUC_PHO, SON_HA_CIVIL);
    meddling.status = Some(lienthong_core::envelope::TrangThaiHoSo(7));
    meddling.payload.reason = Some("công dân rút hồ sơ".into());
    let (status, p) = post(key_of(&bus, DUC_PHO), meddling.clone()).await;
    assert_eq!(status, reqwest::StatusCode::UNPROCESSABLE_ENTITY, "{p}");
    assert_eq!(p["type"], "urn:lienthong:problem:not-on-route");
    assert!(
        p["detail"]
            .as_str()
            .is_some_and(|d| d.contains("not a party")),
        "{p}"
    );
    // … and over AMQP (published as the units' broker user, which may speak for Đức Phổ, so
    // that only the party rule can refuse it): dead-lettered, nothing reaches the office.
    let mut over_amqp = meddling.clone();
    over_amqp.message_id = uuid::Uuid::now_v7().to_string();
    bus.send(&over_amqp).await;
    let dead = bus.dead(1, 20).await;
    assert_eq!(dead.len(), 1);
    assert_eq!(
        header_str(&dead[0].1, headers::REASON_CODE).as_deref(),
        Some("not-on-route")
    );
    assert!(
        tokio::time::timeout(Duration::from_secs(2), civil.recv())
            .await
            .is_err(),
        "another centre's status reached the office"
    );

    // Đức Phổ opens a dossier under Sơn Hà's code: refused (the code is not its own).
    let mut squat = birth(9402, SON_HA_CIVIL);
    squat.sender = DUC_PHO.into();
    let (status, p) = post(key_of(&bus, DUC_PHO), squat).await;
    assert_eq!(status, reqwest::StatusCode::UNPROCESSABLE_ENTITY, "{p}");
    assert!(
        p["detail"]
            .as_str()
            .is_some_and(|d| d.contains("is not a code of 000.20.61.H48")),
        "{p}"
    );

    // Đức Phổ reuses the message id of Sơn Hà's filing for a dossier of its own: refused.
    let mut own = birth(9403, SON_HA_CIVIL);
    own.sender = DUC_PHO.into();
    own.ma_ho_so = format!("{DUC_PHO}-261129-9403");
    own.message_id = filed.message_id.clone();
    let (status, p) = post(key_of(&bus, DUC_PHO), own.clone()).await;
    assert_eq!(status, reqwest::StatusCode::UNPROCESSABLE_ENTITY, "{p}");
    assert!(
        p["detail"]
            .as_str()
            .is_some_and(|d| d.contains("was already used")),
        "{p}"
    );
    // With an id of its own the same dossier goes through.
    own.message_id = uuid::Uuid::now_v7().to_string();
    let (status, p) = post(key_of(&bus, DUC_PHO), own).await;
    assert_eq!(status, reqwest::StatusCode::ACCEPTED, "{p}");
    bus.stop().await;
}
