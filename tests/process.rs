//! `lienthong` as separate processes: SIGTERM in the middle of traffic and a restart lose
//! nothing; the demo completes on the sample dossiers.

mod common;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use common::procs::*;
use common::*;
use lienthong_core::envelope::Kind;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_mid_traffic_and_restart_loses_nothing() {
    let Prepared {
        settings: s,
        dir,
        users,
        mock,
        port,
        config,
    } = prepare("sigterm", |s| {
        s.mock.latency_min_ms = 20;
        s.mock.latency_max_ms = 80;
        s.mock.callback_delay_ms = 300;
        s.mock.unavailable_rate = 0.15;
    })
    .await;

    let mut child = spawn_run(&config, &dir.join("run1.log"));
    wait_ready_from(&dir.join("run1.log"), port).await;
    let bus_view = view_of(&s, &dir, &mock, users).await;
    let mut centre = bus_view.listen(SON_HA).await;

    const N: u32 = 30;
    for i in 0..N {
        for agency in [POLICE, BHXH] {
            bus_view.send(&birth(100 + i, agency)).await;
        }
    }
    let mut got: HashSet<(String, String)> = HashSet::new();
    while got.len() < 10 {
        let e = next(&mut centre, 30).await;
        assert_eq!(e.kind.as_str(), Kind::RESULT, "{e:?}");
        got.insert((e.ma_ho_so, e.sender));
    }
    // Stop the bus in the middle of the traffic, then start it again.
    sigterm(&child);
    let until = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(st) = child.try_wait().expect("wait") {
            break st;
        }
        assert!(
            Instant::now() < until,
            "lienthong run did not stop within its grace period"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(status.success(), "clean exit on SIGTERM: {status:?}");
    child = spawn_run(&config, &dir.join("run2.log"));
    wait_ready_from(&dir.join("run2.log"), port).await;
    while got.len() < (2 * N) as usize {
        let e = next(&mut centre, 60).await;
        assert_eq!(e.kind.as_str(), Kind::RESULT, "{e:?}");
        got.insert((e.ma_ho_so, e.sender));
    }
    let stats = bus_view.mock_stats().await;
    assert_eq!(
        stats["police"]["effects"], N,
        "each dossier registered once: {stats}"
    );
    assert_eq!(stats["bhxh"]["effects"], N, "{stats}");
    assert!(
        bus_view.dead(1, 1).await.is_empty(),
        "nothing dead-lettered"
    );
    record_reliability(Reliability {
        scenario: "lienthong run stopped with SIGTERM mid-stream and restarted".into(),
        fault: "SIGTERM, restart".into(),
        messages: (2 * N) as usize,
        lost: (2 * N) as usize - got.len(),
        duplicate_effects: ((stats["police"]["effects"].as_u64().unwrap_or(0)
            + stats["bhxh"]["effects"].as_u64().unwrap_or(0)) as usize)
            .saturating_sub((2 * N) as usize),
        recovery_ms: None,
        redelivered_copies: 0,
    });

    sigterm(&child);
    let _ = tokio::task::spawn_blocking(move || child.wait()).await;
    let _ = mock.stop.send(());
    let _ = lienthong_core::topology::Topology::plan(&s)
        .delete(&bus_view.conn)
        .await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_completes_every_sample_dossier() {
    let dir = std::env::temp_dir().join(format!(
        "lienthong-demo-test-{}",
        uuid::Uuid::now_v7().simple()
    ));
    let prefix = format!(
        "lt-test-demo-{}",
        &uuid::Uuid::now_v7().simple().to_string()[24..]
    );
    // The demo driver runs in this process with the mock agencies (a test cannot name the
    // `lienthong-mock` binary: it belongs to another package); `lienthong run` and the
    // operator's commands it shows are this package's binary.
    let settings = lienthong_core::registry::Settings::load(None).expect("shipped config");
    let args = lienthong_testkit::demo::DemoArgs {
        file: "schemas/samples/dossiers.jsonl".into(),
        count: Some(60),
        prefix: prefix.clone(),
        dir: dir.clone(),
        timeout_s: 120,
        unavailable_rate: 0.1,
        refusal_rate: 0.0,
        // The demo's default: its own broker node over TLS (amqps://, its own CA).
        shared_broker: false,
        keep_running: false,
    };
    let programs = lienthong_testkit::demo::Programs {
        lienthong: EXE.into(),
        mock: None,
    };
    let out = lienthong_testkit::demo::run_with(settings, args, &programs)
        .await
        .expect("the demo runs");
    let stdout = out.report;
    assert!(out.all_completed, "demo failed:\n{stdout}");
    // 60 samples and the 4 synthetic Customs dossiers, all completed; every adapter of the
    // shipped config that has traffic delivered something, the portal sync included.
    assert!(
        stdout.contains("64 dossiers") && stdout.contains("64 completed"),
        "{stdout}"
    );
    for unit in ["CA.H48", "BHXH.H48", "HQ.H48", "DVCQG"] {
        let line = stdout
            .lines()
            .find(|l| l.starts_with(&format!("{unit} ")))
            .unwrap_or_else(|| panic!("no summary row for {unit}:\n{stdout}"));
        let delivered: u64 = line
            .split_whitespace()
            .rev()
            .nth(4)
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        assert!(delivered > 0, "{unit} delivered nothing: {line}");
    }
    assert!(stdout.contains("Trace of dossier"), "{stdout}");
    // The 60 samples ran through the process manager: every flow's hand-overs classified, the
    // backdated receipts late and alerted, and a control sheet written as PDF.
    assert!(
        stdout.contains("process manager — 60 dossiers run from the catalogue"),
        "{stdout}"
    );
    assert!(stdout.contains("0 finished steps unclassified"), "{stdout}");
    let alerts = stdout
        .lines()
        .find(|l| l.starts_with("alerts raised: "))
        .unwrap_or_default();
    assert!(alerts.contains("overdue"), "{alerts}");
    for code in ["1.001193", "1.010059", "1.011537"] {
        let row = stdout
            .lines()
            .find(|l| l.starts_with(code))
            .unwrap_or_else(|| panic!("no flow row for {code}:\n{stdout}"));
        let n: Vec<u64> = row
            .split('|')
            .nth(1)
            .unwrap_or_default()
            .split_whitespace()
            .filter_map(|v| v.parse().ok())
            .collect();
        assert!(
            n.iter().sum::<u64>() > 0,
            "no classified hand-over for {code}: {row}"
        );
    }
    let pdf = std::fs::read_dir(&dir)
        .expect("demo dir")
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|x| x == "pdf"))
        .expect("the demo wrote a control sheet PDF");
    assert!(std::fs::read(&pdf).expect("pdf").starts_with(b"%PDF"));
    let s = {
        let mut s = lienthong_core::registry::Settings::from_toml(
            lienthong_core::registry::DEFAULT_CONFIG,
            false,
        )
        .expect("config");
        s.bus.prefix = prefix;
        s
    };
    let conn = lapin::Connection::connect(AMQP_URL, Default::default())
        .await
        .expect("broker");
    let _ = lienthong_core::topology::Topology::plan(&s)
        .delete(&conn)
        .await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn components_run_as_separate_processes() {
    // JSON log lines, as a log collector reads them.
    let mut split = Split::start("split", |s| {
        s.log.format = lienthong_core::registry::LogFormat::Json;
    })
    .await;
    let (view, dir) = (&split.view, split.dir.clone());
    let mut centre = view.listen(SON_HA).await;
    let env = birth(200, POLICE);
    view.send(&env).await;
    let result = next(&mut centre, 30).await;
    assert_eq!(result.kind.as_str(), Kind::RESULT);
    assert_eq!(
        result.causation_id.as_deref(),
        Some(env.message_id.as_str())
    );
    // The tracer process wrote the hops of the other processes.
    let store = view.store();
    let ma = env.ma_ho_so.clone();
    let rows = eventually(10, "trace from both processes", || {
        let rows = store.timeline(&ma).ok()?;
        (rows.iter().any(|r| r.component == "router")
            && rows.iter().any(|r| r.component == "adapter:CA.H48")
            && rows.iter().any(|r| r.component == "http"))
        .then_some(rows)
    })
    .await;
    assert!(rows.iter().any(|r| r.event == "delivered"));
    // A message to an unknown receiver: the router's log line names its dossier and id, as
    // JSON fields; every line of both logs is a JSON object.
    let lost = birth(201, "000.99.99.H48");
    view.send(&lost).await;
    let line = eventually(10, "the router's JSON log line", || {
        std::fs::read_to_string(dir.join("routing.log"))
            .ok()?
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .find(|v| v["message"] == "dead-lettering")
    })
    .await;
    assert_eq!(line["ma_ho_so"], lost.ma_ho_so.as_str(), "{line}");
    assert_eq!(line["message_id"], lost.message_id.as_str(), "{line}");
    assert_eq!(line["level"], "INFO", "{line}");
    for log in ["routing.log", "delivery.log"] {
        let text = std::fs::read_to_string(dir.join(log)).unwrap_or_default();
        for l in text.lines().filter(|l| !l.trim().is_empty()) {
            assert!(
                serde_json::from_str::<serde_json::Value>(l).is_ok_and(|v| v.is_object()),
                "{log}: not a JSON line: {l}"
            );
        }
    }
    split.stop_processes();
    split.clean().await;
}

/// Kill the process running `victim` with SIGKILL after 40 of 200 results, start it again, and
/// count: every dossier one result, no duplicate effect at the agency.
async fn kill_mid_stream(name: &str, victim: &str, others: &str, scenario: &str) {
    let (mut s, dir) = settings(name);
    let users = broker_users(&mut s);
    s.mock.latency_min_ms = 2;
    s.mock.latency_max_ms = 10;
    s.mock.callback_delay_ms = 20;
    let mock = lienthong_testkit::mock::serve(&s).await.expect("mock");
    use_mock(&mut s, &mock);
    let port = free_port();
    s.http.listen = format!("127.0.0.1:{port}");
    let config = dir.join("config.toml");
    s.write_file(&config).expect("config");
    let spawn = |components: &str, log: &str| spawn_components(&config, &dir, components, log);
    let mut router = spawn(victim, "victim1.log");
    let mut rest = spawn(others, "others.log");
    let http_log = if victim.contains("http") {
        "victim1.log"
    } else {
        "others.log"
    };
    wait_ready_from(&dir.join(http_log), port).await;
    let view = view_of(&s, &dir, &mock, users).await;
    let mut centre = view.listen(SON_HA).await;
    const N: u32 = 200;
    let mut sent = std::collections::HashSet::new();
    for i in 0..N {
        let e = birth(3000 + i, POLICE);
        sent.insert(e.message_id.clone());
        view.send(&e).await;
    }
    // At-least-once towards units that read their own queue: a result the killed router had
    // routed but not yet acked is routed again, with the same message id (units dedupe by it).
    let mut results: std::collections::HashMap<String, std::collections::HashSet<String>> =
        std::collections::HashMap::new();
    let mut killed_at = None;
    let mut copies = 0u32;
    while results.len() < N as usize {
        let r = next(&mut centre, 60).await;
        assert_eq!(r.kind.as_str(), Kind::RESULT, "{r:?}");
        let cause = r.causation_id.clone().expect("causation");
        assert!(sent.contains(&cause));
        if !results
            .entry(cause)
            .or_default()
            .insert(r.message_id.clone())
        {
            copies += 1;
        }
        if results.len() == 40 && killed_at.is_none() {
            router.kill().expect("SIGKILL");
            let _ = router.wait();
            killed_at = Some(Instant::now());
            router = spawn(victim, "victim2.log");
        }
    }
    copies += late_copies(&mut centre, &results).await as u32;
    assert!(
        results.values().all(|ids| ids.len() == 1),
        "one result message per dossier"
    );
    eprintln!("redelivered copies (same message id): {copies}");
    let stats = view.mock_stats().await;
    assert_eq!(stats["police"]["effects"], N, "{stats}");
    record_reliability(Reliability {
        scenario: scenario.into(),
        fault: format!("kill -9 of a `run --components {victim}` process, restarted"),
        messages: N as usize,
        lost: N as usize - results.len(),
        duplicate_effects: (stats["police"]["effects"].as_u64().unwrap_or(0) as usize)
            .saturating_sub(N as usize),
        recovery_ms: killed_at.map(|t| t.elapsed().as_millis()),
        redelivered_copies: copies as usize,
    });
    for c in [&router, &rest] {
        sigterm(c);
    }
    let _ = router.wait();
    let _ = rest.wait();
    let _ = mock.stop.send(());
    let _ = lienthong_core::topology::Topology::plan(&s)
        .delete(&view.conn)
        .await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn router_killed_with_sigkill_mid_stream_loses_nothing_and_duplicates_nothing() {
    kill_mid_stream(
        "sigkill-router",
        "router",
        "adapters,tracer,http",
        "router killed with SIGKILL mid-stream",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn adapters_killed_with_sigkill_between_agency_answers_and_acks_duplicate_no_effect() {
    kill_mid_stream(
        "sigkill-adapters",
        "adapters",
        "router,tracer,http",
        "adapters killed with SIGKILL mid-stream (between agency answers and acks)",
    )
    .await;
}
