//! Competing consumers on one store (issue 19, item 2): two router processes and two adapter
//! processes (and one HTTP process) share one broker and one store, as a deployment on several
//! hosts runs them; the birth flow's parallel join (Police ∥ Social Insurance, whose results
//! reach either router) completes once for every dossier: one final result to the centre (a
//! copy of it with the same message id, after a kill, is counted as a redelivered copy), one
//! effect at each agency, the process completed; one router process and one adapter process are
//! killed (`kill -9`) while most dossiers are in flight, and the others finish their work. Run
//! on PostgreSQL by the suite's second pass
//! (`LIENTHONG_TEST_STORE=postgres`), on one SQLite file by the first. Against the real broker,
//! the mock agencies on loopback, and the bus's own binary.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::procs::*;
use common::*;
use lienthong_core::envelope::Kind;

/// Dossiers in flight at once.
const DOSSIERS: u32 = 60;

/// The processes' logs, in `spawn_components` order (shown when the test fails).
const LOGS: [&str; 4] = [
    "router-1.log",
    "router-2.log",
    "adapters-1.log",
    "adapters-2.log",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_routers_and_two_adapter_workers_complete_every_join_once() {
    let Prepared {
        settings: s,
        dir,
        users,
        mock,
        port,
        config,
    } = prepare("competing", |s| {
        // Agencies slow enough that the kills land with most dossiers in flight.
        s.mock.latency_min_ms = 100;
        s.mock.latency_max_ms = 300;
        s.mock.callback_delay_ms = 200;
    })
    .await;
    let mut procs = [
        spawn_components(&config, &dir, "router,tracer", LOGS[0]),
        spawn_components(&config, &dir, "router", LOGS[1]),
        spawn_components(&config, &dir, "adapters,http", LOGS[2]),
        spawn_components(&config, &dir, "adapters", LOGS[3]),
    ];
    wait_ready_from(&dir.join(LOGS[2]), port).await;
    let view = view_of(&s, &dir, &mock, users).await;
    answer_as_civil_status_office(&view).await;
    let mut centre = view.listen(SON_HA).await;

    let envs: Vec<_> = (0..DOSSIERS).map(|i| filed_birth(9100 + i)).collect();
    for e in &envs {
        view.send(e).await;
    }
    // Every dossier's final result, and then a few seconds for any second one.
    let mut results: HashMap<String, usize> = HashMap::new();
    let mut ids: HashMap<String, std::collections::HashSet<String>> = HashMap::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    let mut killed_at = None;
    let mut in_flight = 0;
    while results.len() < envs.len() {
        // A router and an adapter worker die outright once the first results are out.
        if results.len() >= 5 && killed_at.is_none() {
            for i in [1, 3] {
                let _ = procs[i].kill();
                let _ = procs[i].wait();
            }
            killed_at = Some(std::time::Instant::now());
            in_flight = envs.len() - results.len();
        }
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        match tokio::time::timeout(left, centre.recv()).await {
            Ok(Some(e)) if e.kind.as_str() == Kind::RESULT => {
                *results.entry(e.ma_ho_so.clone()).or_default() += 1;
                ids.entry(e.ma_ho_so.clone())
                    .or_default()
                    .insert(e.message_id.clone());
            }
            Ok(Some(_)) => {}
            _ => panic!(
                "only {} of {} dossiers got their result; mock agencies: {}\n{}",
                results.len(),
                envs.len(),
                view.mock_stats().await,
                log_tails(&dir, &LOGS, 40)
            ),
        }
    }
    let recovery = killed_at.map(|t| t.elapsed().as_millis());
    while let Ok(Some(e)) = tokio::time::timeout(Duration::from_secs(3), centre.recv()).await {
        if e.kind.as_str() == Kind::RESULT {
            *results.entry(e.ma_ho_so.clone()).or_default() += 1;
            ids.entry(e.ma_ho_so.clone())
                .or_default()
                .insert(e.message_id.clone());
        }
    }
    let twice: Vec<_> = results.iter().filter(|(_, n)| **n != 1).collect();
    let distinct: Vec<_> = ids.iter().filter(|(_, m)| m.len() != 1).collect();
    assert!(
        distinct.is_empty(),
        "one final result per dossier: {distinct:?}"
    );
    // A copy of a result with its own message id is at-least-once delivery after a kill (the
    // killed router published it and died before recording so; the survivor's sweeper sends it
    // again): the centre deduplicates by message id. Counted, not an effect.
    let copies: usize = twice.iter().map(|(_, n)| **n - 1).sum();

    // Each agency took each dossier once, and the process manager completed each once.
    let stats = view.mock_stats().await;
    assert_eq!(stats["police"]["effects"], u64::from(DOSSIERS), "{stats}");
    assert_eq!(stats["bhxh"]["effects"], u64::from(DOSSIERS), "{stats}");
    let store = view.store();
    assert_completed_once(&store, &envs).await;
    assert!(
        in_flight >= envs.len() / 2,
        "the kill landed with {in_flight} of {} in flight",
        envs.len()
    );
    for log in &LOGS[..2] {
        let text = std::fs::read_to_string(dir.join(log)).unwrap_or_default();
        assert!(!text.contains("panicked"), "{log}: {text}");
    }
    let engine = match s.store.location() {
        lienthong_core::store::StoreLocation::Postgres(_) => "PostgreSQL",
        lienthong_core::store::StoreLocation::Sqlite(_) => "SQLite",
    };
    record_reliability(Reliability {
        scenario: format!(
            "two routers and two adapter processes on one {engine} store; one of each killed mid-run"
        ),
        fault: "kill -9 of a router process and an adapter process (birth flow's parallel join)"
            .into(),
        messages: envs.len(),
        lost: envs.len() - results.len(),
        duplicate_effects: effects_beyond(&stats, u64::from(DOSSIERS), u64::from(DOSSIERS)),
        recovery_ms: recovery,
        redelivered_copies: copies,
    });

    // The survivors stop cleanly.
    for i in [0, 2] {
        sigterm(&procs[i]);
    }
    for i in [0, 2] {
        let st = procs[i].wait().expect("wait");
        assert!(st.success(), "{st:?}");
    }
    drop(store);
    let _ = mock.stop.send(());
    view.stop().await;
}
