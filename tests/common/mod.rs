//! Test harness: a real RabbitMQ on 127.0.0.1:5672, the mock agencies and the bus started in
//! this process on loopback, each test under its own topology prefix and store.
#![allow(dead_code)]

pub mod private_broker;
pub mod procs;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use futures_lite::StreamExt;
use lapin::options::{BasicAckOptions, BasicConsumeOptions, BasicGetOptions};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Connection};
use lienthong::run::{Component, Running};
use lienthong_core::amqp::{Publisher, envelope_properties};
use lienthong_core::envelope::{Envelope, Kind};
use lienthong_core::registry::{DEFAULT_CONFIG, Settings};
use lienthong_core::store::Store;
use lienthong_core::topology::{Names, Topology};
use lienthong_testkit::mock::MockServer;
use serde_json::Value;
use tokio::sync::mpsc;

pub const SON_HA: &str = "000.20.59.H48";
pub const SON_HA_CIVIL: &str = "000.10.59.H48";
pub const POLICE: &str = "CA.H48";
pub const BHXH: &str = "BHXH.H48";
pub const AMQP_URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";

/// Settings for one test: unique prefix, own store, loopback ports picked by the OS, fast
/// retries, a mock without random failures.
pub fn settings(name: &str) -> (Settings, PathBuf) {
    let mut s = Settings::from_toml(DEFAULT_CONFIG, false).expect("shipped config");
    // Only the units the tests use (each unit is a quorum queue per test, and the tests run
    // in parallel against one broker).
    const KEEP: [&str; 10] = [
        "HQ.H48",
        SON_HA,
        SON_HA_CIVIL,
        "000.20.61.H48",
        POLICE,
        BHXH,
        "CT.H48",
        "000.10.12.H48",
        "000.00.15.H48",
        "000.00.07.H48",
    ];
    s.units.retain(|u| KEEP.contains(&u.code.as_str()));
    for u in &mut s.units {
        u.parent = None;
    }
    s.check().expect("trimmed registry");
    // The shipped keys are placeholders, which `lienthong run` refuses: fresh ones per test.
    lienthong_testkit::keys::fill(&mut s);
    // The shipped bus user has a placeholder password: the machine's broker through its
    // default user, from which `Bus::start` (or `broker_users`) makes the bus's own.
    s.bus.amqp_url = AMQP_URL.into();
    let id = uuid::Uuid::now_v7().simple().to_string();
    s.bus.prefix = format!("lt-test-{name}-{}", &id[id.len() - 8..]);
    // Every unit's software connects as one broker user of this test (`Bus::start` creates it,
    // and the bus's own user): the router takes from it envelopes of any of these units.
    let units_user = format!("{}.units", s.bus.prefix);
    for u in &mut s.units {
        u.amqp_user = Some(units_user.clone());
    }
    let dir = std::env::temp_dir().join(format!("lienthong-{}", s.bus.prefix));
    std::fs::create_dir_all(&dir).expect("temp dir");
    s.store.path = dir.join("store.db").display().to_string();
    // LIENTHONG_TEST_STORE=postgres: the same test on a database of its own (dropped with the
    // bus, or by the next run of the same name).
    if lienthong_testkit::pg::wanted() {
        s.store.url = lienthong_testkit::pg::create(&s.bus.prefix).expect("this test's database");
    }
    s.store.blob_dir = dir.join("blobs").display().to_string();
    s.http.listen = "127.0.0.1:0".into();
    // The tests send hundreds of dossiers and callbacks at once: no rate limit or bound on
    // requests at once gets in their way (tests/http_limits.rs sets its own).
    s.http.rate_per_s = 1_000_000;
    s.http.rate_burst = 1_000_000;
    s.http.max_concurrent_requests = 100_000;
    s.mock.listen = "127.0.0.1:0".into();
    s.mock.unavailable_rate = 0.0;
    s.mock.latency_min_ms = 0;
    s.mock.latency_max_ms = 5;
    s.mock.callback_delay_ms = 50;
    s.retry.min_delay_ms = 20;
    s.retry.max_delay_ms = 200;
    s.retry.max_retries = 5;
    s.retry.delays_ms = vec![300, 800];
    s.retry.max_delayed_attempts = 5;
    s.bus.shutdown_grace_ms = 3000;
    (s, dir)
}

/// The broker users of a test that runs the bus in child processes: the bus's own
/// (`<prefix>.bus`, its password put into `[bus] amqp_url`) and the units' (`<prefix>.units`),
/// deleted when the guard (moved into [`procs::view_of`]'s bus) is dropped.
pub fn broker_users(s: &mut Settings) -> lienthong_testkit::broker_users::BrokerUsers {
    let bus_user = format!("{}.bus", s.bus.prefix);
    lienthong_testkit::broker_users::BrokerUsers::create_with_bus(s, Some(&bus_user))
        .expect("this test's broker users")
}

/// Point every adapter at the mock.
pub fn use_mock(s: &mut Settings, mock: &MockServer) {
    lienthong_testkit::mock::point_adapters_at(s, &format!("http://{}", mock.addr));
}

pub struct Bus {
    pub settings: Settings,
    pub dir: PathBuf,
    pub mock: Option<MockServer>,
    pub running: Option<Running>,
    /// The test's own control connection (the broker's default user: listening, dead letters,
    /// injecting faults); the bus never uses it.
    pub conn: std::sync::Arc<Connection>,
    /// Publishes on the control connection: only for what no unit could send (a poison message
    /// straight onto an agency's queue).
    pub publisher: Publisher,
    pub names: Names,
    pub http: String,
    pub mock_url: String,
    /// This test's broker users (the bus's and the units'), deleted when the bus is dropped.
    pub users: lienthong_testkit::broker_users::BrokerUsers,
    /// Publishes as the units' broker user, as a centre's software would.
    pub unit_publisher: Publisher,
    /// Set by [`Bus::stop`]; otherwise (a failed test) `Drop` deletes the topology.
    pub cleaned: bool,
    /// The bus's processes when it runs as child processes ([`Bus::start_processes_on_cluster`]),
    /// by the components they run; killed when the bus is dropped.
    pub children: Vec<(String, procs::Proc)>,
}

impl Drop for Bus {
    fn drop(&mut self) {
        if self.cleaned {
            return;
        }
        // Stop the components first, or their supervisors would re-declare what is deleted.
        if let Some(r) = &self.running {
            r.shutdown();
        }
        for (_, c) in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        let settings = self.settings.clone();
        // A failed test still leaves the shared broker as it found it.
        let _ = std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(1500));
            if let Ok(rt) = tokio::runtime::Runtime::new() {
                rt.block_on(async {
                    if let Ok(conn) =
                        Connection::connect(&settings.bus.amqp_url, Default::default()).await
                    {
                        // Twice, as in `stop`: a component slow to stop may declare again.
                        let _ = Topology::plan(&settings).delete(&conn).await;
                        tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
                        let _ = Topology::plan(&settings).delete(&conn).await;
                        let _ = conn.close(200, "test cleanup".into()).await;
                    }
                });
            }
            if !settings.store.url.is_empty() {
                lienthong_testkit::pg::drop_database(&settings.store.url);
            }
        })
        .join();
    }
}

impl Bus {
    /// Mock agencies + every component of the bus, in process.
    pub async fn start(name: &str) -> Bus {
        Bus::start_with(name, |_| {}).await
    }

    /// The same, with the test's own changes to the settings.
    pub async fn start_with(name: &str, change: impl FnOnce(&mut Settings)) -> Bus {
        Self::start_inner(name, change, None, None, &[]).await
    }

    /// The same on a private node of the test's own (`broker`): the bus and the units get
    /// broker users on that node; the test's control connection is the node's default user.
    pub async fn start_on(
        name: &str,
        broker: &private_broker::PrivateBroker,
        change: impl FnOnce(&mut Settings),
    ) -> Bus {
        Self::start_inner(name, change, Some(broker), Some(broker), &[]).await
    }

    /// The same on a private cluster: the bus connects to node 0 first, with the other nodes
    /// in `[bus] nodes`; the test's own connections (control, the units' software) go to the
    /// last node, so that they outlive the loss of the bus's node.
    pub async fn start_on_cluster(
        name: &str,
        cluster: &lienthong_testkit::private_cluster::PrivateCluster,
        change: impl FnOnce(&mut Settings),
    ) -> Bus {
        Self::start_processes_on_cluster(name, cluster, change, &[]).await
    }

    /// The same with the bus in child processes, one per entry of `processes` (the components
    /// it runs, e.g. `router`; its log file in the bus's directory); one of them must run
    /// `http`. Empty: the bus in this process.
    pub async fn start_processes_on_cluster(
        name: &str,
        cluster: &lienthong_testkit::private_cluster::PrivateCluster,
        change: impl FnOnce(&mut Settings),
        processes: &[(&str, &str)],
    ) -> Bus {
        let others = cluster.addresses()[1..].to_vec();
        let last = cluster.nodes.last();
        Self::start_inner(
            name,
            move |s| {
                change(s);
                s.bus.nodes = others;
            },
            cluster.nodes.first(),
            last,
            processes,
        )
        .await
    }

    async fn start_inner(
        name: &str,
        change: impl FnOnce(&mut Settings),
        node: Option<&private_broker::PrivateBroker>,
        control: Option<&private_broker::PrivateBroker>,
        processes: &[(&str, &str)],
    ) -> Bus {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(lienthong::logging::env_filter("warn,lapin=error"))
            .with_test_writer()
            .try_init();
        let (mut s, dir) = settings(name);
        change(&mut s);
        // Not guest: the bus and the units get broker users of their own, with the
        // permissions `lienthong topology export` gives them, on the shared broker or on the
        // test's private node.
        let users = match node {
            Some(b) => {
                s.bus.amqp_url = b.url();
                let bus_user = format!("{}.bus", s.bus.prefix);
                lienthong_testkit::broker_users::BrokerUsers::create_on(
                    &mut s,
                    Some(&bus_user),
                    Some(&b.node),
                )
                .expect("this test's broker users on its private node")
            }
            None if s.bus.amqp_url == AMQP_URL => broker_users(&mut s),
            None => lienthong_testkit::broker_users::BrokerUsers::none(),
        };
        let mock = lienthong_testkit::mock::serve(&s)
            .await
            .expect("mock agencies");
        use_mock(&mut s, &mock);
        let mut children = Vec::new();
        let (running, http) = if processes.is_empty() {
            let running = lienthong::run::start(s.clone(), &Component::ALL)
                .await
                .expect("bus starts");
            let http = format!("http://{}", running.http_addr.expect("http addr"));
            (Some(running), http)
        } else {
            let port = procs::free_port();
            s.http.listen = format!("127.0.0.1:{port}");
            let config = dir.join("config.toml");
            s.write_file(&config).expect("config");
            for (components, log) in processes {
                children.push((
                    components.to_string(),
                    procs::spawn_components(&config, &dir, components, log),
                ));
            }
            let front = processes
                .iter()
                .find(|(c, _)| c.split(',').any(|c| c == "http"))
                .expect("one process runs the HTTP API");
            procs::wait_ready_from(&dir.join(front.1), port).await;
            (None, format!("http://127.0.0.1:{port}"))
        };
        // The test's own observer (listening on units' queues, reading dead letters, tapping
        // exchanges) administers the broker as its default user; the bus does not use it.
        let control_url = match control {
            Some(b) => b.url(),
            None if users.passwords.is_empty() => s.bus.amqp_url.clone(),
            None => AMQP_URL.to_string(),
        };
        let conn = std::sync::Arc::new(
            Connection::connect(&control_url, Default::default())
                .await
                .expect("the test's control connection to the broker"),
        );
        let publisher = Publisher::new(&conn, 10_000).await.expect("publisher");
        let units_url =
            users
                .url(&format!("{}.units", s.bus.prefix))
                .map(|u| match (node, control) {
                    // The units' software talks to the test's control node.
                    (Some(n), Some(c)) if n.port != c.port => u.replace(
                        &format!("127.0.0.1:{}", n.port),
                        &format!("127.0.0.1:{}", c.port),
                    ),
                    _ => u,
                });
        let unit_publisher = match units_url {
            Some(url) => {
                let unit_conn = std::sync::Arc::new(
                    Connection::connect(&url, Default::default())
                        .await
                        .expect("the units' broker user connects"),
                );
                Publisher::new(&unit_conn, 10_000).await.expect("publisher")
            }
            None => publisher.clone(),
        };
        let mock_url = format!("http://{}", mock.addr);
        Bus {
            users,
            unit_publisher,
            names: Names::new(&s.bus.prefix),
            settings: s,
            dir,
            mock: Some(mock),
            running,
            conn,
            publisher,
            http,
            mock_url,
            cleaned: false,
            children,
        }
    }

    /// The HTTP API key of unit `code` (fresh per test).
    pub fn key(&self, code: &str) -> String {
        self.settings
            .units
            .iter()
            .find(|u| u.code == code)
            .and_then(|u| u.api_key.clone())
            .expect("the unit has an API key")
    }

    /// The callback key of adapter unit `code` (fresh per test).
    pub fn callback_key(&self, code: &str) -> String {
        self.settings
            .units
            .iter()
            .find_map(|u| match &u.reach {
                lienthong_core::registry::Reach::Adapter {
                    callback_key: Some(k),
                    ..
                } if u.code == code => Some(k.clone()),
                _ => None,
            })
            .expect("the unit has a callback key")
    }

    /// The operator key (fresh per test).
    pub fn operator_key(&self) -> String {
        self.settings
            .http
            .operator_key
            .clone()
            .expect("operator key")
    }

    /// `GET /metrics` with the operator key.
    pub async fn metrics(&self) -> String {
        reqwest::Client::new()
            .get(format!("{}/metrics", self.http))
            .bearer_auth(self.settings.http.operator_key.clone().unwrap_or_default())
            .send()
            .await
            .expect("metrics")
            .text()
            .await
            .unwrap_or_default()
    }

    pub fn store(&self) -> Store {
        Store::open(self.settings.store.location()).expect("store")
    }

    /// Replay the dead letters `ids` as `lienthong dead-letters replay` does (recorded as
    /// `cli:test`).
    #[allow(dead_code)]
    pub async fn replay(&self, ids: &[String]) -> lienthong::replay::Report {
        self.try_replay(&lienthong::replay::Filter {
            ids: ids.to_vec(),
            ..Default::default()
        })
        .await
        .expect("replay")
    }

    /// Replay what `filter` matches, as `cli:test`; the replay's error as it is.
    #[allow(dead_code)]
    pub async fn try_replay(
        &self,
        filter: &lienthong::replay::Filter,
    ) -> anyhow::Result<lienthong::replay::Report> {
        let writer = lienthong_core::store::MessageWriter::start(self.settings.store.location())
            .expect("writer");
        let who = lienthong::replay::Replayer {
            writer: &writer,
            by: "cli:test".into(),
            component: "cli",
        };
        lienthong::replay::replay(&self.settings, filter, false, &who).await
    }

    /// Publish an envelope to the ingress exchange over AMQP, as a centre would (as the units'
    /// broker user).
    pub async fn send(&self, env: &Envelope) {
        self.unit_publisher
            .publish(
                &self.names.ingress_exchange(),
                "",
                &env.to_bytes(),
                envelope_properties(env),
                true,
            )
            .await
            .expect("publish confirmed");
    }

    /// Publish raw bytes to the ingress exchange.
    pub async fn send_raw(&self, body: &[u8]) {
        let props = BasicProperties::default()
            .with_delivery_mode(2)
            .with_content_type("application/json".into());
        self.unit_publisher
            .publish(&self.names.ingress_exchange(), "", body, props, true)
            .await
            .expect("publish confirmed");
    }

    /// Consume a unit's queue into a channel of envelopes (acking each).
    pub async fn listen(&self, unit: &str) -> mpsc::UnboundedReceiver<Envelope> {
        let ch = self.conn.create_channel().await.expect("channel");
        let mut consumer = ch
            .basic_consume(
                self.names.unit_queue(unit).into(),
                format!("test-{unit}").into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
            .expect("consume");
        let (tx, rx) = mpsc::unbounded_channel();
        let queue = self.names.unit_queue(unit);
        tokio::spawn(async move {
            // A delivery that is not an envelope, or the consumer's end by an error, is
            // printed: a test that then misses a message says why.
            while let Some(next) = consumer.next().await {
                let d = match next {
                    Ok(d) => d,
                    Err(e) => {
                        eprintln!("listen({queue}): the consumer ended with an error: {e}");
                        break;
                    }
                };
                match serde_json::from_slice::<Envelope>(&d.data) {
                    Ok(env) => {
                        let _ = tx.send(env);
                    }
                    Err(e) => eprintln!(
                        "listen({queue}): delivery {} (message id {:?}) is not an envelope: {e}",
                        d.delivery_tag,
                        d.properties.message_id()
                    ),
                }
                let _ = d.ack(BasicAckOptions::default()).await;
                let _ = &ch;
            }
        });
        rx
    }

    /// Take the dead-lettered messages now in `<prefix>.dead` (waits up to `secs` for at least `n`).
    pub async fn dead(&self, n: usize, secs: u64) -> Vec<(Vec<u8>, BasicProperties)> {
        let ch = self.conn.create_channel().await.expect("channel");
        let mut out = Vec::new();
        let until = Instant::now() + Duration::from_secs(secs);
        while out.len() < n && Instant::now() < until {
            match ch
                .basic_get(
                    self.names.dead_letter_queue().into(),
                    BasicGetOptions { no_ack: true },
                )
                .await
            {
                Ok(Some(m)) => out.push((m.delivery.data.clone(), m.delivery.properties.clone())),
                _ => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
        out
    }

    pub async fn mock_stats(&self) -> Value {
        reqwest::get(format!("{}/_mock/stats", self.mock_url))
            .await
            .expect("stats")
            .json()
            .await
            .expect("json")
    }

    pub async fn mock_requests(&self, agency: &str, ma: &str) -> Vec<Value> {
        reqwest::get(format!("{}/_mock/requests/{agency}/{ma}", self.mock_url))
            .await
            .expect("requests")
            .json()
            .await
            .expect("json")
    }

    pub async fn fault(&self, agency: &str, ma: &str, responses: &[u16]) {
        self.fault_with(agency, ma, responses, None).await
    }

    /// Script a fault with every field of `lienthong_testkit::mock::Fault` as JSON.
    pub async fn fault_json(&self, fault: serde_json::Value) {
        let r = reqwest::Client::new()
            .post(format!("{}/_mock/faults", self.mock_url))
            .json(&fault)
            .send()
            .await
            .expect("fault");
        assert!(r.status().is_success());
    }

    pub async fn fault_with(
        &self,
        agency: &str,
        ma: &str,
        responses: &[u16],
        retry_after_s: Option<u64>,
    ) {
        let r = reqwest::Client::new()
            .post(format!("{}/_mock/faults", self.mock_url))
            .json(&serde_json::json!({"agency": agency, "ma_ho_so": ma, "responses": responses, "retry_after_s": retry_after_s}))
            .send()
            .await
            .expect("fault");
        assert!(r.status().is_success());
    }

    /// Stop everything and delete this test's queues and exchanges.
    pub async fn stop(mut self) {
        self.cleaned = true;
        if let Some(r) = self.running.take() {
            // Clean shutdown itself is asserted by the SIGTERM test (tests/process.rs); here a
            // slow stop under parallel load must not fail a test about message outcomes.
            if let Err(e) = r.stop().await {
                eprintln!("warning: {e:#}");
            }
        }
        for (_, c) in &mut self.children {
            if matches!(c.try_wait(), Ok(None)) {
                procs::sigterm(c);
            }
        }
        for (what, c) in &mut self.children {
            let until = Instant::now() + Duration::from_secs(15);
            while matches!(c.try_wait(), Ok(None)) && Instant::now() < until {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            if matches!(c.try_wait(), Ok(None)) {
                eprintln!("warning: `lienthong run --components {what}` did not stop on SIGTERM");
            }
        }
        if let Some(m) = self.mock.take() {
            let _ = m.stop.send(());
        }
        // Twice: a component that was slow to stop may have declared something again.
        let _ = Topology::plan(&self.settings).delete(&self.conn).await;
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        let _ = Topology::plan(&self.settings).delete(&self.conn).await;
        let _ = self.conn.close(200, "test done".into()).await;
        let _ = std::fs::remove_dir_all(&self.dir);
        if !self.settings.store.url.is_empty() {
            lienthong_testkit::pg::drop_database(&self.settings.store.url);
        }
    }
}

/// The distinct final results the trace shows the process manager sending back to the centre
/// for dossier `ma` (results routed to Sơn Hà, by message id): 1 when its join completed once.
pub fn final_results_in_trace(store: &Store, ma: &str) -> usize {
    store
        .timeline(ma)
        .expect("trace")
        .iter()
        .filter(|r| {
            r.event == "routed"
                && r.to.as_deref() == Some(SON_HA)
                && r.kind.as_deref() == Some(Kind::RESULT)
        })
        .filter_map(|r| r.message_id.clone())
        .collect::<std::collections::HashSet<_>>()
        .len()
}

/// Every dossier of `envs` has its process completed with every step done, and the trace shows
/// one final result sent back for it (its join completed once).
pub async fn assert_completed_once(store: &Store, envs: &[Envelope]) {
    use lienthong_core::process::state::Phase;
    for e in envs {
        let p = eventually(20, "the process completed", || {
            store
                .process(&e.ma_ho_so)
                .ok()
                .flatten()
                .filter(|p| p.phase == Phase::Completed)
        })
        .await;
        assert!(
            p.steps
                .iter()
                .all(|s| s.phase == lienthong_core::process::StepPhase::Done),
            "{}: {:?}",
            e.ma_ho_so,
            p.steps
        );
        // The trace is written before each ack: give the last events a moment.
        let sent = eventually(20, "the final result in the trace", || {
            Some(final_results_in_trace(store, &e.ma_ho_so)).filter(|n| *n > 0)
        })
        .await;
        assert_eq!(
            sent, 1,
            "{}: the join completed {sent} times (distinct final results)",
            e.ma_ho_so
        );
    }
}

/// Wait for the next envelope on `rx` (panics after `secs`).
pub async fn next(rx: &mut mpsc::UnboundedReceiver<Envelope>, secs: u64) -> Envelope {
    tokio::time::timeout(Duration::from_secs(secs), rx.recv())
        .await
        .expect("an envelope in time")
        .expect("channel open")
}

/// After the last expected result: wait 2 s for anything more on `rx`, asserting that each late
/// message is only a copy (same message id) of a result already in `results` (result message
/// ids per sent message id, keyed by the result's causation id). Returns how many copies came.
pub async fn late_copies(
    rx: &mut mpsc::UnboundedReceiver<Envelope>,
    results: &std::collections::HashMap<String, std::collections::HashSet<String>>,
) -> usize {
    let mut copies = 0;
    while let Ok(Some(r)) = tokio::time::timeout(Duration::from_secs(2), rx.recv()).await {
        let seen = results.get(r.causation_id.as_deref().unwrap_or(""));
        assert!(
            seen.is_some_and(|ids| ids.contains(&r.message_id)),
            "a late message is only a copy of one already seen: {r:?}"
        );
        copies += 1;
    }
    copies
}

/// Poll `f` until it returns Some (panics after `secs` with `what`).
pub async fn eventually<T>(secs: u64, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let until = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < until, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A dossier's trace once it holds a `delivered` event (panics after 10 s).
pub async fn delivered_timeline(
    store: &Store,
    ma_ho_so: &str,
) -> Vec<lienthong_core::trace::TimelineRow> {
    eventually(10, &format!("{ma_ho_so} delivered in the trace"), || {
        store
            .timeline(ma_ho_so)
            .ok()
            .filter(|r| r.iter().any(|e| e.event == "delivered"))
    })
    .await
}

/// A birth liên thông dossier filed at Sơn Hà, to `receiver`.
pub fn birth(seq: u32, receiver: &str) -> Envelope {
    let ma = format!("{SON_HA}-261129-{seq:04}");
    let mut env = Envelope::new(
        "dossier.forward",
        &ma,
        "1.001193",
        SON_HA,
        Some(receiver),
        &uuid::Uuid::now_v7().to_string(),
    );
    env.payload = serde_json::from_value(serde_json::json!({
        "applicant": {"ho_ten": "Đinh Văn Lực", "ngay_sinh": "1994-08-12", "gioi_tinh": "nam", "so_dinh_danh": "051094000123",
                      "so_dien_thoai": "0905123456", "dia_chi": "Tổ dân phố Gò Dép, thị trấn Di Lăng, huyện Sơn Hà, tỉnh Quảng Ngãi", "quan_he": "cha"},
        "data": {"loai_lien_thong": "khai_sinh_thuong_tru_bhyt",
                 "tre": {"ho_ten": "Đinh Thị Bảo Ngọc", "ngay_sinh": "2026-11-20", "gioi_tinh": "nu", "noi_sinh": "Trung tâm Y tế huyện Sơn Hà"},
                 "noi_dang_ky_thuong_tru": "Tổ dân phố Gò Dép, thị trấn Di Lăng, huyện Sơn Hà, tỉnh Quảng Ngãi",
                 "noi_dang_ky_kcb_ban_dau": "Trung tâm Y tế huyện Sơn Hà"}
    }))
    .expect("payload");
    env
}

/// One fault scenario's outcome, as counted by the test.
#[derive(serde::Serialize, serde::Deserialize)]
pub struct Reliability {
    pub scenario: String,
    pub fault: String,
    pub messages: usize,
    pub lost: usize,
    pub duplicate_effects: usize,
    pub recovery_ms: Option<u128>,
    /// Extra copies of a message, with its own message id, at a unit that reads its queue
    /// (at-least-once: receivers dedupe by message id).
    #[serde(default)]
    pub redelivered_copies: usize,
}

/// Record a scenario's counts under `target/reliability/` and write `RELIABILITY.md` from every
/// scenario recorded so far (the last test to finish writes the whole table), under a file lock
/// shared by every test process.
pub fn record_reliability(r: Reliability) {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let dir = root.join("target").join("reliability");
    let _ = std::fs::create_dir_all(&dir);
    // Tests run in processes of their own, several at a time (scripts/test, nextest): one at a
    // time writes its row and reads every row back, so no row written meanwhile is left out.
    let lock = std::fs::File::create(dir.join(".lock"));
    let _held = lock.as_ref().map(|f| f.lock());
    let slug: String = r
        .scenario
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    let _ = std::fs::write(
        dir.join(format!("{slug}.json")),
        serde_json::to_vec_pretty(&r).unwrap_or_default(),
    );
    let mut rows: Vec<Reliability> = std::fs::read_dir(&dir)
        .map(|it| {
            it.filter_map(|e| e.ok())
                .filter_map(|e| std::fs::read(e.path()).ok())
                .filter_map(|b| serde_json::from_slice(&b).ok())
                .collect()
        })
        .unwrap_or_default();
    rows.sort_by(|a, b| a.scenario.cmp(&b.scenario));
    let mut md = String::from(
        "# Reliability\n\nWritten by the fault-injection tests (`tests/faults.rs`, `tests/process.rs`, `tests/kill_points.rs`, `tests/broker_faults.rs`, `tests/channel_faults.rs`, `tests/blocked.rs`, `tests/cluster.rs`, `tests/competing.rs`; the second pass of `scripts/test` re-records the store-touching ones on PostgreSQL) each time they run; not edited by hand.\n\
         Each scenario drives its messages through the real broker and mock agencies and counts, per message id, one terminal state\n\
         (result back at the centre, or dead-lettered with a reason); `lost` = messages without one, `duplicate effects` = agency\n\
         registrations beyond one per message; `copies` = the same message (same message id) delivered again to a unit that reads its\n\
         own queue, which at-least-once delivery allows and receivers dedupe. Recovery: ms from the fault to the last terminal state.\n\n\
         | scenario | fault | messages | lost | duplicate effects | copies | recovery ms |\n|---|---|---:|---:|---:|---:|---:|\n",
    );
    for r in &rows {
        md.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {} |\n",
            r.scenario,
            r.fault,
            r.messages,
            r.lost,
            r.duplicate_effects,
            r.redelivered_copies,
            r.recovery_ms
                .map(|v| v.to_string())
                .unwrap_or_else(|| "-".into())
        ));
    }
    let tmp = root.join(format!("RELIABILITY.md.{slug}.tmp"));
    if std::fs::write(&tmp, md).is_ok() {
        let _ = std::fs::rename(&tmp, root.join("RELIABILITY.md"));
    }
}

/// `n` ordinary birth dossiers (sequence numbers from `first_seq`), alternately to Police and
/// Social Insurance, sent alongside a scenario's own dossiers so that every fault scenario runs
/// under a few hundred dossiers of load. Returns them in the order sent.
pub async fn send_background(bus: &Bus, n: u32, first_seq: u32) -> Vec<Envelope> {
    let mut out = Vec::with_capacity(n as usize);
    for i in 0..n {
        let to = if i % 2 == 0 { POLICE } else { BHXH };
        let env = birth(first_seq + i, to);
        bus.send(&env).await;
        out.push(env);
    }
    out
}

/// How many of `envs` went to each agency, as the mock names them (`police`, `bhxh`).
pub fn per_agency(envs: &[Envelope]) -> (u64, u64) {
    let police = envs
        .iter()
        .filter(|e| e.receiver.as_deref() == Some(POLICE))
        .count() as u64;
    let bhxh = envs
        .iter()
        .filter(|e| e.receiver.as_deref() == Some(BHXH))
        .count() as u64;
    (police, bhxh)
}

/// The centre's answers (results and dead-letter notices), keyed by the message id they
/// answer (their causation id).
pub type Answers = std::collections::HashMap<String, Vec<Envelope>>;

/// Read `rx` until every message id in `ids` has at least one answer, then 2 s more so that a
/// duplicate answer would be seen too. Panics after `secs` naming how many are missing.
pub async fn collect_answers(
    rx: &mut mpsc::UnboundedReceiver<Envelope>,
    ids: &[String],
    secs: u64,
) -> Answers {
    collect_more_answers(rx, ids, secs, Answers::new()).await
}

/// [`collect_answers`] starting from answers already read.
pub async fn collect_more_answers(
    rx: &mut mpsc::UnboundedReceiver<Envelope>,
    ids: &[String],
    secs: u64,
    mut answers: Answers,
) -> Answers {
    let until = Instant::now() + Duration::from_secs(secs);
    let missing = |a: &Answers| ids.iter().filter(|id| !a.contains_key(id.as_str())).count();
    while missing(&answers) > 0 {
        let left = until.saturating_duration_since(Instant::now());
        assert!(
            !left.is_zero(),
            "{} of {} messages without an answer after {secs} s",
            missing(&answers),
            ids.len()
        );
        if let Ok(Some(e)) = tokio::time::timeout(left.min(Duration::from_secs(5)), rx.recv()).await
        {
            let cause = e.causation_id.clone().unwrap_or_default();
            answers.entry(cause).or_default().push(e);
        }
    }
    while let Ok(Some(e)) = tokio::time::timeout(Duration::from_secs(2), rx.recv()).await {
        let cause = e.causation_id.clone().unwrap_or_default();
        answers.entry(cause).or_default().push(e);
    }
    answers
}

/// (lost, answered more than once with different message ids) among `ids`.
pub fn tally(ids: &[String], answers: &Answers) -> (usize, usize) {
    let lost = ids.iter().filter(|id| !answers.contains_key(*id)).count();
    // Answered twice = two answers with different message ids; a second copy of one message
    // (a publish tried again after its channel closed: at-least-once) is deduplicated by the
    // receiver, as the documentation asks.
    let twice = ids
        .iter()
        .filter(|id| {
            answers.get(*id).is_some_and(|a| {
                a.iter()
                    .map(|e| e.message_id.as_str())
                    .collect::<std::collections::HashSet<_>>()
                    .len()
                    > 1
            })
        })
        .count();
    (lost, twice)
}

/// The message ids of `envs`.
pub fn ids_of<'a>(envs: impl IntoIterator<Item = &'a Envelope>) -> Vec<String> {
    envs.into_iter().map(|e| e.message_id.clone()).collect()
}

/// How many background dossiers a fault scenario sends alongside its own.
pub const BACKGROUND: u32 = 300;

/// Agency registrations beyond the expected `police` + `bhxh` in the mock's stats.
pub fn effects_beyond(stats: &Value, police: u64, bhxh: u64) -> usize {
    let got = stats["police"]["effects"].as_u64().unwrap_or(0)
        + stats["bhxh"]["effects"].as_u64().unwrap_or(0);
    got.saturating_sub(police + bhxh) as usize
}

/// Poll the async `f` until it returns Some (panics after `secs`).
pub async fn eventually_async<T, F, Fut>(secs: u64, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let until = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(Instant::now() < until, "timed out after {secs} s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Play Sơn Hà's civil-status office, which reads its own queue: answer each forward the
/// process manager hands it (once per message id) with its result, acking the forward only
/// once its answer is confirmed.
pub async fn answer_as_civil_status_office(bus: &Bus) {
    let ch = bus.conn.create_channel().await.expect("channel");
    let mut consumer = ch
        .basic_consume(
            bus.names.unit_queue(SON_HA_CIVIL).into(),
            "test-civil-status".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .expect("consume");
    // The office's software publishes as its broker user.
    let publisher = bus.unit_publisher.clone();
    let ingress = bus.names.ingress_exchange();
    tokio::spawn(async move {
        let mut seen = std::collections::HashSet::new();
        // The answer to each forward not yet confirmed: a forward handed back and delivered
        // again is answered with the same message id (a publish reported as failed may have
        // reached the broker all the same).
        let mut pending: std::collections::HashMap<String, Envelope> = Default::default();
        while let Some(Ok(d)) = consumer.next().await {
            if let Ok(env) = serde_json::from_slice::<Envelope>(&d.data)
                && env.kind.as_str() == Kind::FORWARD
                && !seen.contains(&env.message_id)
            {
                let r = pending
                    .entry(env.message_id.clone())
                    .or_insert_with(|| {
                        let mut r = env.reply(Kind::RESULT, SON_HA_CIVIL, &env.sender);
                        r.payload.result =
                            serde_json::json!({"so_dang_ky": format!("KS-{}", env.ma_ho_so)})
                                .as_object()
                                .cloned();
                        r
                    })
                    .clone();
                // Published with retries, as a client that keeps what it was given until its
                // answer is confirmed (through a cluster's failover, say); the forward is acked
                // only then, and handed back to the queue if the answer has not gone out within
                // 30 s (the office answers one forward at a time: the others wait meanwhile).
                let (body, properties) = (r.to_bytes(), envelope_properties(&r));
                let give_up = Instant::now() + Duration::from_secs(30);
                let mut sent = false;
                while !sent && Instant::now() < give_up {
                    sent = publisher
                        .publish(&ingress, "", &body, properties.clone(), true)
                        .await
                        .is_ok();
                    if !sent {
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                }
                if !sent {
                    let requeue = lapin::options::BasicNackOptions {
                        requeue: true,
                        ..Default::default()
                    };
                    let _ = d.nack(requeue).await;
                    continue;
                }
                pending.remove(&env.message_id);
                seen.insert(env.message_id.clone());
            }
            let _ = d.ack(BasicAckOptions::default()).await;
            let _ = &ch;
        }
    });
}

/// A birth dossier filed at Sơn Hà without a receiver: the process manager runs its route
/// (civil-status office, then Police ∥ Social Insurance).
pub fn filed_birth(seq: u32) -> Envelope {
    let mut e = birth(seq, SON_HA_CIVIL);
    e.receiver = None;
    e
}

/// The operator's webhook, on loopback: (its URL, what it received).
pub async fn webhook() -> (String, mpsc::UnboundedReceiver<Value>) {
    let (tx, rx) = mpsc::unbounded_channel::<Value>();
    let app = axum::Router::new().route(
        "/alerts",
        axum::routing::post(move |axum::Json(v): axum::Json<Value>| {
            let tx = tx.clone();
            async move {
                let _ = tx.send(v);
                axum::http::StatusCode::NO_CONTENT
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}/alerts", listener.local_addr().expect("addr"));
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (url, rx)
}

/// A bus on which Sơn Hà's two units (the centre and its civil-status office) have a broker
/// user of their own (`<prefix>.son-ha`): the bus, that user's name and a connection as it.
#[allow(dead_code)]
pub async fn start_with_son_ha_user(name: &str) -> (Bus, String, std::sync::Arc<Connection>) {
    let bus = Bus::start_with(name, |s| {
        let user = format!("{}.son-ha", s.bus.prefix);
        for u in &mut s.units {
            if u.code == SON_HA || u.code == SON_HA_CIVIL {
                u.amqp_user = Some(user.clone());
            }
        }
    })
    .await;
    let user = format!("{}.son-ha", bus.settings.bus.prefix);
    let url = bus.users.url(&user).expect("son-ha's url");
    let conn = std::sync::Arc::new(
        Connection::connect(&url, Default::default())
            .await
            .expect("Sơn Hà's user connects"),
    );
    (bus, user, conn)
}

/// A consumer of a unit's queue that reconnects (the test's own connection goes down with the
/// broker too).
pub fn listen_reconnecting(
    url: String,
    queue: String,
) -> tokio::sync::mpsc::UnboundedReceiver<Envelope> {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            if tx.is_closed() {
                return;
            }
            let Ok(conn) = lapin::Connection::connect(&url, Default::default()).await else {
                tokio::time::sleep(Duration::from_millis(300)).await;
                continue;
            };
            let Ok(ch) = conn.create_channel().await else {
                continue;
            };
            let Ok(mut consumer) = ch
                .basic_consume(
                    queue.as_str().into(),
                    "test".into(),
                    BasicConsumeOptions::default(),
                    FieldTable::default(),
                )
                .await
            else {
                tokio::time::sleep(Duration::from_millis(300)).await;
                continue;
            };
            while let Some(Ok(d)) = consumer.next().await {
                if let Ok(env) = serde_json::from_slice::<Envelope>(&d.data) {
                    let _ = tx.send(env);
                }
                let _ = d.ack(BasicAckOptions::default()).await;
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    });
    rx
}

/// Every queue of the test's `prefix` with its messages (total, ready, unacknowledged) and
/// consumers, one per line under a header, for a failure's message (with rabbitmqctl's error
/// when it failed or took over 60 s): on the shared node, or on the private node `node`
/// (`rabbitmqctl -n`). RabbitMQ refreshes these counts on each queue's tick (seconds).
pub fn broker_queues(node: Option<&str>, prefix: &str) -> String {
    // Bounded: a node that does not answer must not hold up the failure it is asked to explain.
    let mut cmd = std::process::Command::new("timeout");
    cmd.args(["60", "rabbitmqctl"]);
    if let Some(node) = node {
        cmd.args(["-n", node]);
    }
    let columns = [
        "name",
        "messages",
        "messages_ready",
        "messages_unacknowledged",
        "consumers",
    ];
    match cmd.args(["-q", "list_queues"]).args(columns).output() {
        Ok(o) => {
            let out = String::from_utf8_lossy(&o.stdout);
            let mut lines: Vec<String> = vec![columns.join(" ")];
            lines.extend(
                out.lines()
                    .filter(|l| l.starts_with(prefix))
                    .map(str::to_string),
            );
            if !o.status.success() {
                lines.push(format!(
                    "(rabbitmqctl list_queues: {}; {})",
                    o.status,
                    String::from_utf8_lossy(&o.stderr).trim()
                ));
            }
            lines.join("\n")
        }
        Err(e) => format!("(rabbitmqctl list_queues: {e})"),
    }
}
