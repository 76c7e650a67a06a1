//! Fault injection against the real broker, made from outside the process under test with
//! `rabbitmqctl` (only this test's own connections and queues are touched: the shared broker
//! stays as it was). Each scenario drives a few hundred messages and counts, per message id,
//! that each ends in exactly one terminal state with zero lost and zero duplicate effects.

mod common;

use std::collections::HashMap;
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
/// `fault` once `after` results are in. Returns (results per message id, elapsed after fault).
async fn drive(
    bus: &Bus,
    n: u32,
    after: usize,
    fault: impl FnOnce(),
) -> (HashMap<String, usize>, Duration) {
    let mut centre = bus.listen(SON_HA).await;
    let mut ids = HashMap::new();
    for i in 0..n {
        let env = birth(1000 + i, POLICE);
        ids.insert(env.message_id.clone(), 0usize);
        bus.send(&env).await;
    }
    let mut fault = Some(fault);
    let mut got = 0;
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
        *ids.get_mut(&cause).expect("a result for a message we sent") += 1;
        got += 1;
        if got == after
            && let Some(f) = fault.take()
        {
            f();
            fault_at = Instant::now();
        }
    }
    // Anything more would be a duplicate.
    let extra = tokio::time::timeout(Duration::from_secs(2), centre.recv()).await;
    assert!(extra.is_err(), "an extra message arrived: {extra:?}");
    (ids, fault_at.elapsed())
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
    let (ids, _) = drive(&bus, N, 60, || {
        let closed = close_connections(&prefix);
        assert!(closed >= 4, "closed {closed} connections");
    })
    .await;
    assert_eq!(ids.len(), N as usize);
    assert!(
        ids.values().all(|n| *n == 1),
        "every dossier exactly one result"
    );
    let stats = bus.mock_stats().await;
    assert_eq!(
        stats["police"]["effects"], N,
        "no duplicate effect at the agency: {stats}"
    );
    assert!(bus.dead(1, 1).await.is_empty(), "nothing dead-lettered");
    let ready = reqwest::get(format!("{}/readyz", bus.http))
        .await
        .expect("readyz");
    assert!(ready.status().is_success(), "reconnected");
    bus.stop().await;
}
