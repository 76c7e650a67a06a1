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
use lienthong_testkit::broker_users::BrokerUsers;

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
    let mut users = None;
    let bus = Bus::start_with("sender-auth", |s| {
        let user = format!("{}.son-ha", s.bus.prefix);
        for u in &mut s.units {
            if u.code == SON_HA || u.code == SON_HA_CIVIL {
                u.amqp_user = Some(user.clone());
            }
        }
        users = Some(BrokerUsers::create(s).expect("broker users"));
    })
    .await;
    let users = users.expect("users");
    let user = format!("{}.son-ha", bus.settings.bus.prefix);
    let url = users.url(&user).expect("son-ha's url");
    let conn = std::sync::Arc::new(
        Connection::connect(&url, Default::default())
            .await
            .expect("Sơn Hà's user connects"),
    );
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
    forged.payload.result = serde_json::json!({"so_dang_ky": "TT-1"}).as_object().cloned();
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
    drop(users);
    bus.stop().await;
}
