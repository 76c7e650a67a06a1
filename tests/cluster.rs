//! The bus on a three-node RabbitMQ cluster of the test's own (distinct node names, ports and
//! data directories on this machine; removed afterwards even when the test fails), with
//! `[bus] nodes` naming the others: 300 dossiers in flight (agencies slowed so that most are in flight when the fault lands) while the node the bus is
//! connected to, which leads its queues, is killed outright (`kill -9`) and started again,
//! then while another node is stopped for good. Every dossier is answered once, every agency
//! takes each once; rows go to RELIABILITY.md. Against real RabbitMQ nodes, the bus in
//! process, the mock agencies on loopback, the suite's store.

mod common;

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use common::*;
use lienthong_core::envelope::{Envelope, Kind};
use lienthong_testkit::private_cluster::PrivateCluster;
use tokio::sync::mpsc;

/// Send `n` dossiers from `first`, run `fault` once `at` of them are answered, and wait for
/// every answer: (results per dossier, when the fault was injected).
async fn run_with_fault(
    bus: &Bus,
    centre: &mut mpsc::UnboundedReceiver<Envelope>,
    n: u32,
    first: u32,
    at: usize,
    fault: impl FnOnce(),
) -> (HashMap<String, HashSet<String>>, Instant, Vec<Envelope>) {
    let envs = send_background(bus, n, first).await;
    let sent: HashSet<String> = envs.iter().map(|e| e.message_id.clone()).collect();
    let mut results: HashMap<String, HashSet<String>> = HashMap::new();
    let mut fault = Some(fault);
    let mut fault_at = Instant::now();
    let mut in_flight = 0;
    let until = Instant::now() + Duration::from_secs(240);
    while results.len() < n as usize {
        assert!(
            Instant::now() < until,
            "only {} of {n} answered after 240 s",
            results.len()
        );
        let Ok(Some(r)) = tokio::time::timeout(Duration::from_secs(5), centre.recv()).await else {
            continue;
        };
        if r.kind.as_str() != Kind::RESULT {
            continue;
        }
        let Some(cause) = r.causation_id.clone().filter(|c| sent.contains(c)) else {
            continue;
        };
        results.entry(cause).or_default().insert(r.message_id);
        if results.len() >= at
            && let Some(f) = fault.take()
        {
            // Recovery counts from the fault's start (a graceful stop takes seconds itself).
            fault_at = Instant::now();
            in_flight = n as usize - results.len();
            f();
        }
    }
    assert!(
        in_flight >= n as usize / 2,
        "the fault landed with {in_flight} of {n} dossiers still in flight"
    );
    (results, fault_at, envs)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_killed_and_a_node_stopped_for_good_lose_nothing_and_duplicate_nothing() {
    let cluster = PrivateCluster::try_start("cluster", 3).expect("a three-node cluster");
    let bus = Bus::start_on_cluster("cluster", &cluster, |s| {
        // Agencies slow enough that the faults land with most dossiers in flight.
        s.mock.latency_min_ms = 100;
        s.mock.latency_max_ms = 400;
        s.mock.callback_delay_ms = 300;
        s.topology.quorum_initial_group_size = Some(3);
    })
    .await;
    let control = cluster.nodes[2].url();
    let mut centre = listen_reconnecting(control, bus.names.unit_queue(SON_HA));

    // 1. The node the bus is connected to, where its queues' leaders are, dies outright, and
    //    comes back.
    const N: u32 = 300;
    let pid = cluster.nodes[0].os_pid().expect("node 0's pid");
    let (results, fault_at, envs) = run_with_fault(&bus, &mut centre, N, 5000, 20, || {
        let killed = std::process::Command::new("kill")
            .args(["-9", &pid.to_string()])
            .status();
        assert!(killed.is_ok_and(|s| s.success()), "kill -9 {pid}");
    })
    .await;
    let recovery = fault_at.elapsed();
    cluster.nodes[0].restart().expect("node 0 starts again");
    cluster
        .wait_running(3, Duration::from_secs(60))
        .expect("node 0 rejoins");
    let twice = results.values().filter(|ids| ids.len() > 1).count();
    let stats = bus.mock_stats().await;
    let (police, bhxh) = per_agency(&envs);
    let dup = effects_beyond(&stats, police, bhxh);
    assert_eq!(twice, 0, "one result message per dossier");
    assert_eq!(stats["police"]["effects"], police, "{stats}");
    assert_eq!(stats["bhxh"]["effects"], bhxh, "{stats}");
    record_reliability(Reliability {
        scenario: "cluster: the bus's node (queue leaders) killed, then restarted".into(),
        fault: "kill -9 of one of three RabbitMQ nodes".into(),
        messages: N as usize,
        lost: N as usize - results.len(),
        duplicate_effects: dup,
        recovery_ms: Some(recovery.as_millis()),
        redelivered_copies: 0,
    });

    // 2. Another node is stopped for good; two of three remain, a majority of every queue.
    let (results, fault_at, envs) = run_with_fault(&bus, &mut centre, N, 6000, 20, || {
        cluster.nodes[1]
            .try_ctl(&["stop"])
            .expect("node 1 stops for good");
    })
    .await;
    let twice = results.values().filter(|ids| ids.len() > 1).count();
    let stats = bus.mock_stats().await;
    let (p2, b2) = per_agency(&envs);
    let dup = effects_beyond(&stats, police + p2, bhxh + b2);
    assert_eq!(twice, 0, "one result message per dossier");
    assert_eq!(stats["police"]["effects"], police + p2, "{stats}");
    assert_eq!(stats["bhxh"]["effects"], bhxh + b2, "{stats}");
    record_reliability(Reliability {
        scenario: "cluster: a node stopped for good".into(),
        fault: "rabbitmqctl stop of one of three RabbitMQ nodes".into(),
        messages: N as usize,
        lost: N as usize - results.len(),
        duplicate_effects: dup,
        recovery_ms: Some(fault_at.elapsed().as_millis()),
        redelivered_copies: 0,
    });
    bus.stop().await;
    drop(cluster);
}
