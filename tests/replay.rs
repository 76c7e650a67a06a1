//! Replaying dead letters, against the real broker with a unit's own broker user: a replay of
//! one id stops once it found it and moves what it passes to the queue's tail (nothing
//! requeued, order kept); a message refused as published by someone else is refused again on
//! every replay (the bus's republishing never makes it the bus's) and never enters the dossier's
//! trace; the dead-letter log marks only the rows that existed when the message was taken; and
//! one replay runs at a time.

mod common;

use std::time::Duration;

use common::*;
use lapin::options::{BasicGetOptions, BasicNackOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Connection};
use lienthong_core::amqp::{Publisher, envelope_properties, header_str};
use lienthong_core::envelope::{Envelope, Kind};

/// The dead-letter log's rows of `id`, once there are `n` of them (newest first).
async fn logged(bus: &Bus, id: &str, n: usize) -> Vec<lienthong_core::trace::DeadLetterRow> {
    let (store, id) = (bus.store(), id.to_string());
    eventually(30, "the dead-letter log has the row", move || {
        let (rows, _) = store.dead_letter(&id).ok()?;
        (rows.len() >= n).then_some(rows)
    })
    .await
}

/// A result of `env`'s dossier claiming to come from Police.
fn forged_result(env: &Envelope) -> Envelope {
    let mut forged = env.reply(Kind::RESULT, POLICE, SON_HA);
    forged.payload.result = serde_json::json!({"so_dang_ky": "TT-1"})
        .as_object()
        .cloned();
    forged
}

/// The message ids and properties in the dead-letter queue, head first (taken and put back by
/// closing the channel, which RabbitMQ returns in order).
async fn peek_dead(bus: &Bus) -> Vec<(String, BasicProperties)> {
    let ch = bus.conn.create_channel().await.expect("channel");
    let mut out = Vec::new();
    while let Ok(Some(m)) = ch
        .basic_get(
            bus.names.dead_letter_queue().into(),
            BasicGetOptions { no_ack: false },
        )
        .await
    {
        let id = m
            .delivery
            .properties
            .message_id()
            .as_ref()
            .map(|m| m.to_string())
            .unwrap_or_default();
        out.push((id, m.delivery.properties.clone()));
    }
    let _ = ch
        .basic_nack(
            0,
            BasicNackOptions {
                multiple: true,
                requeue: true,
            },
        )
        .await;
    let _ = ch.close(200, "peeked".into()).await;
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forged_message_stays_refused_on_every_replay_and_a_replay_moves_what_it_passes() {
    let (bus, user, conn) = start_with_son_ha_user("replay").await;
    let son_ha = Publisher::new(&conn, 10_000).await.expect("publisher");
    let mut centre = bus.listen(SON_HA).await;
    let ingress = bus.names.ingress_exchange();

    // Three results "from Police" published by Sơn Hà's user: each refused (sender-mismatch),
    // one after the other so that the dead-letter queue holds them in this order.
    let mut forged = Vec::new();
    for n in 0..3 {
        let env = birth(9701 + n, SON_HA_CIVIL);
        let f = forged_result(&env);
        son_ha
            .publish(&ingress, "", &f.to_bytes(), envelope_properties(&f), true)
            .await
            .expect("the broker takes it");
        let rows = logged(&bus, &f.message_id, 1).await;
        assert_eq!(rows[0].reason_code, "sender-mismatch");
        forged.push(f);
    }
    let ids: Vec<String> = forged.iter().map(|f| f.message_id.clone()).collect();

    // Replay the middle one: it stops there, the first is moved behind the last (not requeued:
    // no delivery count), the third is not touched.
    let report = bus.replay(std::slice::from_ref(&ids[1])).await;
    assert_eq!(report.total, 3);
    assert_eq!(report.examined, 2, "the walk stops once it found the id");
    assert_eq!(report.replayed, vec![ids[1].clone()]);
    assert_eq!(report.kept, 1);
    let rows = logged(&bus, &ids[1], 2).await;
    assert_eq!(
        rows[0].reason_code, "sender-mismatch",
        "refused again as Sơn Hà's, not taken as the bus's"
    );
    assert!(
        rows[0].replayed_at.is_none(),
        "the new dead-lettering waits: only the rows before the replay are marked"
    );
    assert_eq!(rows[1].replayed_by.as_deref(), Some("cli:test"));
    let queue = peek_dead(&bus).await;
    let order: Vec<&str> = queue.iter().map(|(id, _)| id.as_str()).collect();
    assert_eq!(
        order,
        vec![ids[2].as_str(), ids[0].as_str(), ids[1].as_str()],
        "the third untouched at the head, the first moved behind it, the replayed one dead-lettered again"
    );
    let moved = &queue[1].1;
    assert_eq!(
        header_str(moved, lienthong_core::senders::ORIGINAL_USER_HEADER).as_deref(),
        Some(user.as_str()),
        "the moved dead letter still names its first publisher"
    );
    assert_eq!(
        header_str(moved, lienthong_core::deadletter::headers::REASON_CODE).as_deref(),
        Some("sender-mismatch"),
        "and keeps its reason"
    );

    // Replayed a second time: still Sơn Hà's, still refused.
    let report = bus.replay(std::slice::from_ref(&ids[1])).await;
    assert_eq!(report.replayed, vec![ids[1].clone()]);
    let rows = logged(&bus, &ids[1], 3).await;
    assert_eq!(rows[0].reason_code, "sender-mismatch");
    assert!(
        tokio::time::timeout(Duration::from_secs(2), centre.recv())
            .await
            .is_err(),
        "a replayed forgery reached the centre"
    );
    let timeline = bus.store().timeline(&forged[1].ma_ho_so).expect("timeline");
    assert!(
        timeline
            .iter()
            .all(|r| r.message_id.as_deref() != Some(ids[1].as_str())),
        "the forged result is in the dossier's trace: {timeline:?}"
    );

    // One replay at a time: while another connection holds the lock, a replay is refused.
    let lock = format!("{}.replay.lock", bus.settings.bus.prefix);
    let other = bus.conn.create_channel().await.expect("channel");
    other
        .queue_declare(
            lock.as_str().into(),
            QueueDeclareOptions {
                exclusive: true,
                auto_delete: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .expect("the lock");
    let refused = bus
        .try_replay(&lienthong::replay::Filter {
            all: true,
            ..Default::default()
        })
        .await
        .expect_err("a second replay runs beside the first");
    assert!(
        refused.to_string().contains("another replay is running"),
        "{refused}"
    );
    assert_eq!(peek_dead(&bus).await.len(), 3, "nothing was taken");
    // The lock goes with its connection (here the test's, kept open): released by hand.
    other
        .queue_delete(lock.as_str().into(), Default::default())
        .await
        .expect("released");
    let _ = other.close(200, "done".into()).await;

    // A dead letter as the router left them before it recorded first publishers: the bus's
    // user_id, no first publisher. It could have been anyone's: replayed, it is refused.
    let as_bus = std::sync::Arc::new(
        Connection::connect(&bus.settings.bus.amqp_url, Default::default())
            .await
            .expect("the bus's user connects"),
    );
    let bus_publisher = Publisher::new(&as_bus, 10_000).await.expect("publisher");
    let legacy = forged_result(&birth(9711, SON_HA_CIVIL));
    let mut h = lapin::types::FieldTable::default();
    for (k, v) in [
        (lienthong_core::deadletter::headers::COMPONENT, "router"),
        (
            lienthong_core::deadletter::headers::REASON_CODE,
            "sender-mismatch",
        ),
    ] {
        h.insert(
            k.into(),
            lapin::types::AMQPValue::LongString(v.to_string().into()),
        );
    }
    bus_publisher
        .publish(
            "",
            &bus.names.dead_letter_queue(),
            &legacy.to_bytes(),
            envelope_properties(&legacy).with_headers(h),
            true,
        )
        .await
        .expect("an old dead letter");
    let report = bus.replay(std::slice::from_ref(&legacy.message_id)).await;
    assert_eq!(report.replayed, vec![legacy.message_id.clone()]);
    let rows = logged(&bus, &legacy.message_id, 1).await;
    assert_eq!(
        rows[0].reason_code, "sender-mismatch",
        "an old dead letter of the router is not taken as the bus's"
    );
    let _ = as_bus.close(200, "done".into()).await;
    let _ = conn.close(200, "done".into()).await;
    bus.stop().await;
}
