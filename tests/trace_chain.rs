//! The tamper-evident trace against a real RabbitMQ and a real store: the events of a dossier are
//! chained and checkpointed (signed), `lienthong audit verify` finds an edited and a deleted
//! row, the control sheet's line follows, and a forged trace event published to `<p>.trace`
//! never reaches the store (with `trace_direct`, the exchange does not exist; without it, the
//! tracer keeps only the bus's own trace messages).

mod common;

use std::path::Path;
use std::time::Duration;

use common::*;
use lapin::BasicProperties;
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions, ExchangeDeclareOptions};
use lapin::types::FieldTable;
use lienthong_core::envelope::Kind;
use lienthong_core::store::chain::{SigningKey, VerifyingKey};
use lienthong_core::trace::{TraceEvent, TraceEventKind};

/// A signing key file (hex of 32 bytes) in `dir`, and its public half.
fn key_file(dir: &Path) -> (String, VerifyingKey) {
    std::fs::create_dir_all(dir).expect("dir");
    let key = SigningKey::from_bytes(&[42u8; 32]);
    let path = dir.join("trace-signing.key");
    let hex: String = key.to_bytes().iter().map(|b| format!("{b:02x}")).collect();
    std::fs::write(&path, hex).expect("key file");
    (format!("file:{}", path.display()), key.verifying_key())
}

/// A "delivered" event nobody delivered.
fn forged(ma_ho_so: &str) -> TraceEvent {
    let mut e = TraceEvent::new(
        TraceEventKind::Delivered,
        &format!("adapter:{POLICE}"),
        None,
    )
    .message_id("forged-message")
    .reason("receipt FORGED-1");
    e.ma_ho_so = Some(ma_ho_so.to_string());
    e
}

/// Publish `body` to `exchange` on a confirm channel of its own: true when the broker acked it.
async fn published(bus: &Bus, exchange: &str, body: &[u8], props: BasicProperties) -> bool {
    let ch = bus.conn.create_channel().await.expect("channel");
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .expect("confirms");
    let Ok(confirm) = ch
        .basic_publish(
            exchange.into(),
            "".into(),
            BasicPublishOptions::default(),
            body,
            props,
        )
        .await
    else {
        return false;
    };
    matches!(
        tokio::time::timeout(Duration::from_secs(10), confirm).await,
        Ok(Ok(c)) if c.is_ack()
    )
}

/// `lienthong audit verify` on the bus's configuration: exit status and stdout.
fn audit_verify(bus: &Bus) -> (bool, String) {
    let config = bus.dir.join("config.toml");
    bus.settings.write_file(&config).expect("config");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_lienthong"))
        .arg("--config")
        .arg(&config)
        .args(["audit", "verify"])
        .output()
        .expect("lienthong runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edited_and_deleted_trace_rows_are_found_and_a_forged_event_never_reaches_the_store() {
    let dir = std::env::temp_dir().join(format!(
        "lt-chain-key-{}",
        lienthong_core::envelope::new_message_id()
    ));
    let (key_ref, public) = key_file(&dir);
    let bus = Bus::start_with("trace-chain", |s| {
        s.trace.signing_key = Some(key_ref.clone());
        s.trace.checkpoint_interval_secs = 1;
    })
    .await;
    assert!(bus.settings.store.trace_direct);

    // The trace exchange does not exist: a forged "delivered" published there is refused.
    let ch = bus.conn.create_channel().await.expect("channel");
    let declared = ch
        .exchange_declare(
            bus.names.trace_exchange().as_str().into(),
            lapin::ExchangeKind::Fanout,
            ExchangeDeclareOptions {
                passive: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await;
    assert!(
        declared.is_err(),
        "no {} exchange",
        bus.names.trace_exchange()
    );

    // Two dossiers through Police and back.
    let mut centre = bus.listen(SON_HA).await;
    let (a, b) = (birth(8101, POLICE), birth(8102, POLICE));
    bus.send(&a).await;
    bus.send(&b).await;
    for _ in 0..2 {
        assert_eq!(next(&mut centre, 20).await.kind.as_str(), Kind::RESULT);
    }
    let store = bus.store();
    delivered_timeline(&store, &a.ma_ho_so).await;
    delivered_timeline(&store, &b.ma_ho_so).await;

    let fake = forged(&a.ma_ho_so);
    let body = serde_json::to_vec(&fake).expect("json");
    assert!(
        !published(
            &bus,
            &bus.names.trace_exchange(),
            &body,
            BasicProperties::default()
        )
        .await,
        "the broker refuses a publish to the trace exchange"
    );

    // A signed checkpoint covers the events, and everything verifies.
    eventually(15, "a signed checkpoint", || {
        let r = store.verify_trace(None, Some(&public)).ok()?;
        (r.checkpoints_signed_ok > 0 && r.ok()).then_some(())
    })
    .await;
    let (ok, text) = audit_verify(&bus);
    assert!(ok, "{text}");
    assert!(text.contains("OK: the trace verifies"), "{text}");
    assert!(!text.contains("FORGED"), "{text}");
    let timeline = store.timeline(&a.ma_ho_so).expect("timeline");
    assert!(
        timeline
            .iter()
            .all(|r| r.message_id.as_deref() != Some("forged-message")),
        "{timeline:?}"
    );
    assert!(
        store
            .verify_dossier_chain(&a.ma_ho_so)
            .expect("chain")
            .verified
    );

    // Someone edits Police's receipt of dossier A, and deletes dossier B's `received`.
    // On either engine, through a connection of its own (as anyone with the database's
    // credentials could).
    let db = lienthong_core::store::migrations::open_connection(&bus.settings.store.location())
        .expect("open the store");
    let id_of = |ma: &str, ev: &str| -> String {
        db.query_row(
            "SELECT event_id FROM trace_events WHERE ma_ho_so = ?1 AND event = ?2 AND component LIKE 'adapter:%'",
            lienthong_core::params![ma, ev],
            |r| r.get(0),
        )
        .expect("event")
    };
    let edited = id_of(&a.ma_ho_so, "delivered");
    let deleted = id_of(&b.ma_ho_so, "received");
    db.execute(
        "UPDATE trace_events SET reason = 'receipt CHANGED' WHERE event_id = ?1",
        lienthong_core::params![edited],
    )
    .expect("edit");
    db.execute(
        "DELETE FROM trace_events WHERE event_id = ?1",
        lienthong_core::params![deleted],
    )
    .expect("delete");

    let (ok, text) = audit_verify(&bus);
    assert!(!ok, "audit verify fails: {text}");
    let line = |id: &str| text.lines().find(|l| l.contains(id)).map(str::to_string);
    assert!(
        line(&edited).is_some_and(|l| l.trim_start().starts_with("edited:")),
        "{text}"
    );
    // The deletion shows at the event after the gap, in words.
    assert!(
        text.lines()
            .any(|l| l.trim_start().starts_with("deleted:") && l.contains("1 event(s) missing")),
        "{text}"
    );
    let report = lienthong::audit::verify(&bus.settings, None).expect("verify");
    use lienthong_core::store::chain::BreakKind;
    assert!(
        report
            .breaks
            .iter()
            .any(|b| b.kind == BreakKind::Edited && b.event_id.as_deref() == Some(&*edited)),
        "{:?}",
        report.breaks
    );
    assert!(
        report.breaks.iter().any(|b| b.kind == BreakKind::Deleted),
        "{:?}",
        report.breaks
    );

    // The control sheet's line for each dossier.
    for (ma, what) in [(&a.ma_ho_so, "edited"), (&b.ma_ho_so, "deleted")] {
        let chain = store.verify_dossier_chain(ma).expect("chain");
        let line = lienthong::control_sheet::trace_chain_line(&chain);
        assert!(
            line.contains("NOT verified") && line.contains(what),
            "{ma}: {line}"
        );
    }
    bus.stop().await;
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn through_the_trace_exchange_the_tracer_keeps_only_the_bus_s_own_trace_messages() {
    let bus = Bus::start_with("trace-forged", |s| s.store.trace_direct = false).await;
    let mut centre = bus.listen(SON_HA).await;
    let a = birth(8201, POLICE);
    bus.send(&a).await;
    assert_eq!(next(&mut centre, 20).await.kind.as_str(), Kind::RESULT);
    let store = bus.store();
    delivered_timeline(&store, &a.ma_ho_so).await;

    // Forged without a user id: the broker routes it, the tracer drops it.
    let fake = forged(&a.ma_ho_so);
    let body = serde_json::to_vec(&fake).expect("json");
    assert!(
        published(
            &bus,
            &bus.names.trace_exchange(),
            &body,
            BasicProperties::default()
        )
        .await
    );
    // Claiming another broker user: RabbitMQ refuses it (user_id must be the connection's).
    let other = forged(&a.ma_ho_so);
    assert!(
        !published(
            &bus,
            &bus.names.trace_exchange(),
            &serde_json::to_vec(&other).expect("json"),
            BasicProperties::default().with_user_id("lienthong-bus".into())
        )
        .await
    );
    // A dossier after the forgery: once its events are stored, the forged one was handled.
    let b = birth(8202, POLICE);
    bus.send(&b).await;
    assert_eq!(next(&mut centre, 20).await.kind.as_str(), Kind::RESULT);
    delivered_timeline(&store, &b.ma_ho_so).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let timeline = store.timeline(&a.ma_ho_so).expect("timeline");
    assert!(
        timeline
            .iter()
            .all(|r| r.message_id.as_deref() != Some("forged-message")),
        "{timeline:?}"
    );
    // What the tracer stored from the exchange is chained like the rest.
    let report = lienthong::audit::verify(&bus.settings, None).expect("verify");
    assert!(report.ok(), "{:?}", report.breaks);
    assert!(report.checked >= 8, "{report:?}");
    bus.stop().await;
}
