//! The bus on a three-node RabbitMQ cluster of the test's own (distinct node names, ports and
//! data directories on this machine; removed afterwards even when the test fails), with
//! `[bus] nodes` naming the others, run as a deployment runs it: two router processes and two
//! adapter processes (one of them with the HTTP API) on one PostgreSQL store. Three faults,
//! each with 300 birth dossiers in flight through the parallel join (Police ∥ Social
//! Insurance; agencies slowed so that most are in flight when the fault lands): the node the
//! bus connects to first, which leads its queues, is killed outright (`kill -9`) and started
//! again; another node is stopped for good; one router process and one adapter process are
//! killed (`kill -9`). Each: every dossier gets its one final result, every agency takes each
//! dossier once, every process completes once; rows go to RELIABILITY.md. Against real
//! RabbitMQ nodes, the bus's own binary, a real PostgreSQL (`LIENTHONG_TEST_PG`, started by
//! scripts/ensure-postgres), the mock agencies on loopback.

mod common;

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use common::*;
use lienthong_core::envelope::{Envelope, Kind};
use lienthong_testkit::private_cluster::PrivateCluster;
use tokio::sync::mpsc;

/// Dossiers of each fault.
const N: u32 = 300;

/// The bus's processes: (components, log file).
const PROCESSES: [(&str, &str); 4] = [
    ("router,tracer", "router-1.log"),
    ("router", "router-2.log"),
    ("adapters,http", "adapters-1.log"),
    ("adapters", "adapters-2.log"),
];

/// What one fault run saw at the centre.
struct Outcome {
    /// Final result message ids per dossier code.
    results: HashMap<String, HashSet<String>>,
    /// Deliveries of a result already seen (same message id): at-least-once after a fault.
    copies: usize,
    /// From the fault's start to the last dossier's final result.
    recovery: Duration,
    envs: Vec<Envelope>,
}

/// File `N` birth dossiers from `first`, run `fault` once `at` of them have their final
/// result, and wait for every final result (`node`: the control node, for a failure's message).
async fn run_with_fault(
    bus: &Bus,
    node: &str,
    centre: &mut mpsc::UnboundedReceiver<Envelope>,
    first: u32,
    at: usize,
    fault: impl FnOnce(),
) -> Outcome {
    let envs: Vec<Envelope> = (0..N).map(|i| filed_birth(first + i)).collect();
    for e in &envs {
        bus.send(e).await;
    }
    let mine: HashSet<&str> = envs.iter().map(|e| e.ma_ho_so.as_str()).collect();
    let mut results: HashMap<String, HashSet<String>> = HashMap::new();
    let mut copies = 0;
    let mut fault = Some(fault);
    let mut fault_at = Instant::now();
    let mut in_flight = 0;
    let until = Instant::now() + Duration::from_secs(300);
    let mut take = |r: Envelope, results: &mut HashMap<String, HashSet<String>>| {
        if r.kind.as_str() == Kind::RESULT
            && mine.contains(r.ma_ho_so.as_str())
            && !results.entry(r.ma_ho_so).or_default().insert(r.message_id)
        {
            copies += 1;
        }
    };
    while results.len() < N as usize {
        if Instant::now() >= until {
            let missing: Vec<&str> = envs
                .iter()
                .map(|e| e.ma_ho_so.as_str())
                .filter(|ma| !results.contains_key(*ma))
                .collect();
            panic!(
                "only {} of {N} dossiers have their final result after 300 s; {}",
                results.len(),
                where_they_are(bus, node, &missing)
            );
        }
        let Ok(Some(r)) = tokio::time::timeout(Duration::from_secs(5), centre.recv()).await else {
            continue;
        };
        take(r, &mut results);
        if results.len() >= at
            && let Some(f) = fault.take()
        {
            // Recovery counts from the fault's start (a graceful stop takes seconds itself).
            fault_at = Instant::now();
            in_flight = N as usize - results.len();
            f();
        }
    }
    let recovery = fault_at.elapsed();
    // A few seconds for anything more (a second final result would be a duplicate).
    while let Ok(Some(r)) = tokio::time::timeout(Duration::from_secs(3), centre.recv()).await {
        take(r, &mut results);
    }
    assert!(
        in_flight >= N as usize / 2,
        "the fault landed with {in_flight} of {N} dossiers still in flight"
    );
    Outcome {
        results,
        copies,
        recovery,
        envs,
    }
}

/// For a failure's message: where each dossier of `missing` is (its process's phase and steps,
/// the last events of its trace), the queues' depths on the control node and the last lines of
/// the bus's process logs.
fn where_they_are(bus: &Bus, node: &str, missing: &[&str]) -> String {
    let store = bus.store();
    let mut out = format!("{} without a final result:\n", missing.len());
    for ma in missing.iter().take(10) {
        let process = match store.process(ma) {
            Ok(Some(p)) => format!(
                "{:?}, steps {:?}",
                p.phase,
                p.steps
                    .iter()
                    .map(|s| (&s.unit, s.phase))
                    .collect::<Vec<_>>()
            ),
            // (Also a process whose state does not parse: `Store::process` reads it as none.)
            Ok(None) => "no process".into(),
            Err(e) => format!("process unreadable: {e}"),
        };
        out.push_str(&format!("- {ma}: {process}\n"));
        match store.timeline(ma) {
            Ok(rows) => {
                for r in rows.iter().rev().take(8).rev() {
                    out.push_str(&format!(
                        "    {} {} {} {:?} {:?}->{:?} attempt {:?} {:?}\n",
                        r.at, r.component, r.event, r.kind, r.from, r.to, r.attempt, r.reason
                    ));
                }
            }
            Err(e) => out.push_str(&format!("    trace unreadable: {e}\n")),
        }
    }
    let names: Vec<&str> = PROCESSES.iter().map(|(_, log)| *log).collect();
    out.push_str(&format!(
        "queues:\n{}\n{}",
        broker_queues(Some(node), &bus.settings.bus.prefix),
        procs::log_tails(&bus.dir, &names, 40)
    ));
    out
}

/// Every dossier of `o` has one final result, each agency took each dossier once (`before`:
/// the agencies' effects before this run), every process completed once; a RELIABILITY.md row.
async fn check_and_record(bus: &Bus, o: &Outcome, before: u64, scenario: &str, fault: &str) {
    let twice: Vec<_> = o.results.iter().filter(|(_, ids)| ids.len() > 1).collect();
    assert!(twice.is_empty(), "one final result per dossier: {twice:?}");
    let n = u64::from(N);
    let stats = bus.mock_stats().await;
    assert_eq!(stats["police"]["effects"], before + n, "{stats}");
    assert_eq!(stats["bhxh"]["effects"], before + n, "{stats}");
    let store = bus.store();
    assert_completed_once(&store, &o.envs).await;
    record_reliability(Reliability {
        scenario: scenario.into(),
        fault: fault.into(),
        messages: N as usize,
        lost: N as usize - o.results.len(),
        duplicate_effects: effects_beyond(&stats, before + n, before + n),
        recovery_ms: Some(o.recovery.as_millis()),
        redelivered_copies: o.copies,
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_and_processes_lost_mid_run_lose_nothing_and_duplicate_nothing() {
    let cluster = PrivateCluster::try_start("cluster", 3).expect("a three-node cluster");
    let mut bus = Bus::start_processes_on_cluster(
        "cluster",
        &cluster,
        |s| {
            // Agencies slow enough that the faults land with most dossiers in flight.
            s.mock.latency_min_ms = 100;
            s.mock.latency_max_ms = 400;
            s.mock.callback_delay_ms = 300;
            s.topology.quorum_initial_group_size = Some(3);
            // On PostgreSQL, as a deployment on several hosts runs (in the suite's second
            // pass the database exists already).
            if s.store.url.is_empty() {
                s.store.url = lienthong_testkit::pg::create(&s.bus.prefix).expect(
                    "a database on the suite's PostgreSQL (scripts/ensure-postgres starts it; LIENTHONG_TEST_PG names it)",
                );
            }
        },
        &PROCESSES,
    )
    .await;
    answer_as_civil_status_office(&bus).await;
    let control = cluster.nodes[2].url();
    let control_node = cluster.nodes[2].node.clone();
    let mut centre = listen_reconnecting(control, bus.names.unit_queue(SON_HA));

    // 1. The node the bus connects to first, where its queues' leaders are, dies outright,
    //    and comes back.
    let pid = cluster.nodes[0].os_pid().expect("node 0's pid");
    let o = run_with_fault(&bus, &control_node, &mut centre, 5000, 20, || {
        let killed = std::process::Command::new("kill")
            .args(["-9", &pid.to_string()])
            .status();
        assert!(killed.is_ok_and(|s| s.success()), "kill -9 {pid}");
    })
    .await;
    cluster.nodes[0].restart().expect("node 0 starts again");
    cluster
        .wait_running(3, Duration::from_secs(60))
        .expect("node 0 rejoins");
    check_and_record(
        &bus,
        &o,
        0,
        "cluster, 2 routers + 2 adapter processes on PostgreSQL: the node leading the queues killed, then restarted",
        "kill -9 of one of three RabbitMQ nodes (birth flow's parallel join)",
    )
    .await;

    // 2. Another node is stopped for good; two of three remain, a majority of every queue.
    let o = run_with_fault(&bus, &control_node, &mut centre, 6000, 20, || {
        cluster.nodes[1]
            .try_ctl(&["stop"])
            .expect("node 1 stops for good");
    })
    .await;
    check_and_record(
        &bus,
        &o,
        u64::from(N),
        "cluster, 2 routers + 2 adapter processes on PostgreSQL: a node stopped for good",
        "rabbitmqctl stop of one of three RabbitMQ nodes (birth flow's parallel join)",
    )
    .await;

    // 3. One router process and one adapter process die outright (on the two nodes left).
    let mut victims = vec![bus.children.remove(3), bus.children.remove(1)];
    let o = run_with_fault(&bus, &control_node, &mut centre, 7000, 20, || {
        for (_, c) in &mut victims {
            let _ = c.kill();
            let _ = c.wait();
        }
    })
    .await;
    check_and_record(
        &bus,
        &o,
        2 * u64::from(N),
        "cluster, 2 routers + 2 adapter processes on PostgreSQL: one router and one adapter process killed",
        "kill -9 of a router process and an adapter process (birth flow's parallel join)",
    )
    .await;
    for log in [
        "router-1.log",
        "router-2.log",
        "adapters-1.log",
        "adapters-2.log",
    ] {
        let text = std::fs::read_to_string(bus.dir.join(log)).unwrap_or_default();
        assert!(!text.contains("panicked"), "{log}: {text}");
    }
    bus.stop().await;
    drop(cluster);
}
