//! The client examples of `examples/` (issue 20, item 3), each run as a vendor would run it, as a
//! child process against a live bus (the real broker, the bus in this process, the mock agencies
//! on loopback), in Python (`pika`, `requests`) and JavaScript (`amqplib`, `fetch`), and the
//! `curl` one-liners.
//!
//! For each language, with Police's endpoint pointed at the language's example agency
//! (`agency_police`, the Police reference interface): a centre files a birth dossier over HTTP
//! and another over AMQP (both run their whole route, Police's step taken by the example agency:
//! its receipt recorded, its result sent by callback); the centre reads its queue over AMQP, then
//! over HTTP, each time handling exactly the messages the trace shows the bus sent it and skipping
//! a copy of one (same message id) as a duplicate, acknowledging everything; it answers Tax's
//! payment notice of a land dossier, after which Tax confirms and the dossier completes; the
//! example agency answers the status lookup (`lienthong check`'s, and a found dossier's) and
//! refuses to cancel a decided dossier. The curl script files, reads the inbox, acknowledges and
//! reads the dossier's state and trace.
//!
//! The examples' packages are installed once by `examples/setup` (a virtualenv under
//! `~/.cache/lienthong/`, `npm ci` into `examples/js/node_modules`).

mod common;

use std::collections::{BTreeSet, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use common::*;
use lapin::options::{BasicAckOptions, BasicGetOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Connection};
use lienthong::run::Component;
use lienthong_core::amqp::Publisher;
use lienthong_core::envelope::{Envelope, Kind};
use lienthong_core::process::{Phase, Process, StepPhase};
use lienthong_core::registry::Reach;
use lienthong_core::topology::Names;
use serde_json::{Value, json};
use tokio::io::AsyncBufReadExt;
use tokio::sync::mpsc;

const LAND_OFFICE: &str = "000.10.12.H48";
const TAX: &str = "CT.H48";

fn examples_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("examples")
}

/// `examples/setup <what>` (installs once): the interpreter to run the examples with.
async fn setup(what: &'static str) -> String {
    let out = tokio::process::Command::new(examples_dir().join("setup"))
        .arg(what)
        .output()
        .await
        .expect("examples/setup runs");
    assert!(
        out.status.success(),
        "examples/setup {what} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .last()
        .expect("the interpreter's path")
        .trim()
        .to_string()
}

/// The bus in this process, as [`Bus::start_with`] starts it, but with Police's endpoint at
/// `police` (the example agency) instead of the mock's.
async fn start_bus(name: &str, police: &str) -> Bus {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(lienthong::logging::env_filter("warn,lapin=error"))
        .with_test_writer()
        .try_init();
    let (mut s, dir) = settings(name);
    let users = broker_users(&mut s);
    let mock = lienthong_testkit::mock::serve(&s)
        .await
        .expect("mock agencies");
    use_mock(&mut s, &mock);
    for u in &mut s.units {
        if u.code == POLICE
            && let Reach::Adapter { endpoint, .. } = &mut u.reach
        {
            *endpoint = police.to_string();
        }
    }
    let running = lienthong::run::start(s.clone(), &Component::ALL)
        .await
        .expect("bus starts");
    let http = format!("http://{}", running.http_addr.expect("http addr"));
    let conn = Arc::new(
        Connection::connect(AMQP_URL, Default::default())
            .await
            .expect("the test's control connection"),
    );
    let publisher = Publisher::new(&conn, 10_000).await.expect("publisher");
    let units_url = users
        .url(&format!("{}.units", s.bus.prefix))
        .expect("the units' broker user");
    let unit_conn = Arc::new(
        Connection::connect(&units_url, Default::default())
            .await
            .expect("the units' broker user connects"),
    );
    let unit_publisher = Publisher::new(&unit_conn, 10_000).await.expect("publisher");
    let mock_url = format!("http://{}", mock.addr);
    Bus {
        users,
        unit_publisher,
        names: Names::new(&s.bus.prefix),
        settings: s,
        dir,
        mock: Some(mock),
        running: Some(running),
        conn,
        publisher,
        http,
        mock_url,
        cleaned: false,
        children: Vec::new(),
    }
}

/// One language's examples: `<interpreter> examples/<dir>/<name>.<ext>` with the bus's
/// environment.
struct Examples {
    interpreter: String,
    dir: PathBuf,
    ext: &'static str,
    env: Vec<(&'static str, String)>,
}

/// Variables of the examples that a test never inherits from its own environment.
const CLEARED: [&str; 8] = [
    "LIENTHONG_MA_HO_SO",
    "LIENTHONG_SEEN_FILE",
    "LIENTHONG_IDLE_EXIT_S",
    "LIENTHONG_CA_FILE",
    "LIENTHONG_WAIT_S",
    "NODE_EXTRA_CA_CERTS",
    "AGENCY_LISTEN",
    "AGENCY_DECIDE_AFTER_S",
];

impl Examples {
    fn command(&self, name: &str, env: &[(&str, String)]) -> tokio::process::Command {
        let mut cmd = tokio::process::Command::new(&self.interpreter);
        cmd.arg(self.dir.join(format!("{name}.{}", self.ext)))
            .current_dir(&self.dir)
            .kill_on_drop(true);
        for k in CLEARED {
            cmd.env_remove(k);
        }
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd
    }

    /// Run example `name` to its end (at most 90 s): its stdout's JSON lines. Panics, with its
    /// output, when it fails or prints anything else.
    async fn run(&self, name: &str, env: &[(&str, String)]) -> Vec<Value> {
        let out = tokio::time::timeout(Duration::from_secs(90), self.command(name, env).output())
            .await
            .unwrap_or_else(|_| panic!("{name} did not end within 90 s"))
            .unwrap_or_else(|e| panic!("{name} does not start: {e}"));
        let (stdout, stderr) = (
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
        );
        assert!(
            out.status.success(),
            "{name}: {}\nstdout:\n{stdout}\nstderr:\n{stderr}",
            out.status
        );
        stdout
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| {
                serde_json::from_str(l)
                    .unwrap_or_else(|e| panic!("{name} printed {l:?}, not a JSON line: {e}"))
            })
            .collect()
    }

    /// Run example `name`, which must fail: its exit code and its stdout's JSON lines.
    async fn run_to_failure(&self, name: &str, env: &[(&str, String)]) -> (i32, Vec<Value>) {
        let out = tokio::time::timeout(Duration::from_secs(90), self.command(name, env).output())
            .await
            .unwrap_or_else(|_| panic!("{name} did not end within 90 s"))
            .unwrap_or_else(|e| panic!("{name} does not start: {e}"));
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(!out.status.success(), "{name} succeeded:\n{stdout}");
        let lines = stdout
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect();
        (out.status.code().unwrap_or(-1), lines)
    }

    /// Start example `name` (a server), its standard error written to `log`: the child and its
    /// stdout's JSON lines as they come.
    fn spawn(
        &self,
        name: &str,
        env: &[(&str, String)],
        log: &std::path::Path,
    ) -> (tokio::process::Child, mpsc::UnboundedReceiver<Value>) {
        let stderr = std::fs::File::create(log).expect("the example's log");
        let mut child = self
            .command(name, env)
            .stdout(std::process::Stdio::piped())
            .stderr(stderr)
            .spawn()
            .unwrap_or_else(|e| panic!("{name} does not start: {e}"));
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = mpsc::unbounded_channel();
        let name = name.to_string();
        tokio::spawn(async move {
            let mut lines = tokio::io::BufReader::new(stdout).lines();
            while let Ok(Some(l)) = lines.next_line().await {
                match serde_json::from_str::<Value>(&l) {
                    Ok(v) => {
                        let _ = tx.send(v);
                    }
                    Err(e) => eprintln!("{name} printed {l:?}, not a JSON line: {e}"),
                }
            }
        });
        (child, rx)
    }
}

/// The events of a running example, kept as they come.
struct Events {
    rx: mpsc::UnboundedReceiver<Value>,
    seen: Vec<Value>,
    /// The example's standard error.
    log: PathBuf,
}

impl Events {
    /// The first event (seen or to come within `secs`) for which `f` holds.
    async fn find(&mut self, secs: u64, what: &str, f: impl Fn(&Value) -> bool) -> Value {
        let until = tokio::time::Instant::now() + Duration::from_secs(secs);
        loop {
            if let Some(v) = self.seen.iter().find(|v| f(v)) {
                return v.clone();
            }
            match tokio::time::timeout_at(until, self.rx.recv()).await {
                Ok(Some(v)) => self.seen.push(v),
                _ => panic!(
                    "no event {what} within {secs} s; events: {:?}; its standard error:\n{}",
                    self.seen,
                    std::fs::read_to_string(&self.log).unwrap_or_default()
                ),
            }
        }
    }
}

/// The dossier's process once completed (panics after 60 s).
async fn completed(bus: &Bus, ma: &str) -> Process {
    let store = bus.store();
    let m = ma.to_string();
    eventually(60, &format!("{ma} completed"), move || {
        store
            .process(&m)
            .ok()
            .flatten()
            .filter(|p| p.phase == Phase::Completed)
    })
    .await
}

/// The ids of the messages the trace shows the bus sent the centre about `dossiers`.
fn sent_to_centre(bus: &Bus, dossiers: &[&str]) -> BTreeSet<String> {
    let store = bus.store();
    dossiers
        .iter()
        .flat_map(|ma| store.timeline(ma).expect("trace"))
        .filter(|r| r.event == "routed" && r.to.as_deref() == Some(SON_HA))
        .filter_map(|r| r.message_id)
        .collect()
}

/// Wait until the final result of each of `dossiers` is in the trace: the ids of every message
/// sent to the centre about them.
async fn all_sent_to_centre(bus: &Bus, dossiers: &[&str]) -> BTreeSet<String> {
    let store = bus.store();
    eventually(30, "the final results in the trace", || {
        dossiers
            .iter()
            .all(|ma| final_results_in_trace(&store, ma) == 1)
            .then_some(())
    })
    .await;
    sent_to_centre(bus, dossiers)
}

/// Take one message off the centre's queue and put it back twice, as a redelivery would: the
/// same message (same `message_id`) comes twice. Returns its message id.
async fn duplicate_one(bus: &Bus) -> String {
    let queue = bus.names.unit_queue(SON_HA);
    let ch = bus.conn.create_channel().await.expect("channel");
    let until = tokio::time::Instant::now() + Duration::from_secs(20);
    let got = loop {
        if let Ok(Some(m)) = ch
            .basic_get(queue.as_str().into(), BasicGetOptions { no_ack: false })
            .await
        {
            break m;
        }
        assert!(
            tokio::time::Instant::now() < until,
            "nothing in the centre's queue"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let d = got.delivery;
    let p = &d.properties;
    // The bus's properties, but not its `user_id` (the broker checks it against ours).
    let mut props = BasicProperties::default()
        .with_content_type("application/json".into())
        .with_delivery_mode(2);
    if let Some(id) = p.message_id() {
        props = props.with_message_id(id.clone());
    }
    if let Some(c) = p.correlation_id() {
        props = props.with_correlation_id(c.clone());
    }
    if let Some(h) = p.headers() {
        props = props.with_headers(h.clone());
    }
    for _ in 0..2 {
        bus.publisher
            .publish("", &queue, &d.data, props.clone(), true)
            .await
            .expect("the copy is queued");
    }
    d.acker
        .ack(BasicAckOptions::default())
        .await
        .expect("ack the original");
    let env: Envelope = serde_json::from_slice(&d.data).expect("an envelope");
    env.message_id
}

/// Messages ready in the centre's queue.
async fn ready_in_centre_queue(bus: &Bus) -> u32 {
    let ch = bus.conn.create_channel().await.expect("channel");
    ch.queue_declare(
        bus.names.unit_queue(SON_HA).as_str().into(),
        QueueDeclareOptions {
            passive: true,
            ..Default::default()
        },
        FieldTable::default(),
    )
    .await
    .expect("the centre's queue")
    .message_count()
}

/// What a queue reader printed: the ids it handled (each once), the duplicates it skipped and
/// its closing totals.
fn read_report(name: &str, lines: &[Value]) -> (BTreeSet<String>, Vec<String>) {
    let ids = |event: &str| -> Vec<String> {
        lines
            .iter()
            .filter(|l| l["event"] == event)
            .map(|l| l["message_id"].as_str().expect("message_id").to_string())
            .collect()
    };
    let handled = ids("message");
    let once: BTreeSet<String> = handled.iter().cloned().collect();
    assert_eq!(once.len(), handled.len(), "{name} handled a message twice");
    let duplicates = ids("duplicate");
    let done = lines.last().expect("a closing line");
    assert_eq!(
        (done["event"].as_str(), done["handled"].as_u64()),
        (Some("done"), Some(handled.len() as u64)),
        "{name}: {lines:?}"
    );
    assert_eq!(done["duplicates"].as_u64(), Some(duplicates.len() as u64));
    (once, duplicates)
}

/// A land dossier (1.010059) filed at Sơn Hà without a receiver: land registration office, then
/// Tax.
fn land(ma: &str) -> Envelope {
    let mut env = Envelope::new(
        Kind::FORWARD,
        ma,
        "1.010059",
        SON_HA,
        None,
        &uuid::Uuid::now_v7().to_string(),
    );
    env.payload = serde_json::from_value(json!({
        "applicant": {"ho_ten": "Lê Phương Nguyệt", "so_dinh_danh": "051175040533", "dia_chi": "xã Sơn Hạ, huyện Sơn Hà"},
        "data": {"loai_bien_dong": "tang_cho", "gia_tri_hop_dong_vnd": 301_900_000u64,
                 "thua_dat": {"so_thua": "283", "so_to_ban_do": "7", "dien_tich_m2": 3407.0,
                              "dia_chi": "thôn Gò Da, xã Sơn Hạ, huyện Sơn Hà, tỉnh Quảng Ngãi", "muc_dich_su_dung": "CLN"},
                 "ben_nhan": {"ho_ten": "Nguyễn Quốc Nam", "so_dinh_danh": "051204127183"}}
    }))
    .expect("payload");
    env
}

#[derive(Clone, Copy, PartialEq)]
enum Lang {
    Python,
    JavaScript,
}

/// Every example of `lang` against one bus.
async fn the_examples_run_against_a_live_bus(lang: Lang) {
    let (interpreter, dir, ext, tag, first) = match lang {
        Lang::Python => (setup("python").await, "python", "py", "py", 9100),
        Lang::JavaScript => (setup("js").await, "js", "mjs", "js", 9200),
    };
    let ma = |n: u32| format!("{SON_HA}-261204-{:04}", first + n);
    let port = procs::free_port();
    let agency_url = format!("http://127.0.0.1:{port}");
    let bus = start_bus(&format!("examples-{tag}"), &agency_url).await;
    answer_as_civil_status_office(&bus).await;
    let ex = Examples {
        interpreter,
        dir: examples_dir().join(dir),
        ext,
        env: vec![
            ("LIENTHONG_URL", bus.http.clone()),
            ("LIENTHONG_KEY", bus.key(SON_HA)),
            ("LIENTHONG_UNIT", SON_HA.to_string()),
            ("LIENTHONG_PREFIX", bus.settings.bus.prefix.clone()),
            (
                "LIENTHONG_AMQP_URL",
                bus.users
                    .url(&format!("{}.units", bus.settings.bus.prefix))
                    .expect("the units' broker user"),
            ),
        ],
    };

    // The example agency, where the bus's Police adapter sends Police's steps.
    let agency_log = bus.dir.join("agency_police.log");
    let (mut agency, rx) = ex.spawn(
        "agency_police",
        &[
            ("AGENCY_LISTEN", format!("127.0.0.1:{port}")),
            ("LIENTHONG_CALLBACK_KEY", bus.callback_key(POLICE)),
            ("LIENTHONG_URL", bus.http.clone()),
            ("AGENCY_DECIDE_AFTER_S", "0.5".into()),
        ],
        &agency_log,
    );
    let mut agency_events = Events {
        rx,
        seen: Vec::new(),
        log: agency_log,
    };
    let listening = agency_events
        .find(30, "listening", |e| e["event"] == "listening")
        .await;
    assert_eq!(listening["url"], json!(agency_url));

    // A birth dossier filed over HTTP, another over AMQP.
    let (ma_http, ma_amqp) = (ma(1), ma(2));
    let out = ex
        .run(
            "centre_file_http",
            &[("LIENTHONG_MA_HO_SO", ma_http.clone())],
        )
        .await;
    assert_eq!(out.len(), 1, "{out:?}");
    assert_eq!(
        (&out[0]["ma_ho_so"], &out[0]["status"]),
        (&json!(ma_http), &json!(202))
    );
    let id_http = out[0]["message_id"]
        .as_str()
        .expect("message_id")
        .to_string();
    // A refusal: exit 1, the problem printed.
    let (code, out) = ex
        .run_to_failure("centre_file_http", &[("LIENTHONG_MA_HO_SO", "HS-1".into())])
        .await;
    assert_eq!(code, 1);
    assert_eq!(out.len(), 1, "{out:?}");
    assert_eq!(out[0]["status"], 422, "{out:?}");
    assert!(
        out[0]["problem"]["type"]
            .as_str()
            .is_some_and(|t| t.starts_with("urn:lienthong:problem:")),
        "{out:?}"
    );
    let out = ex
        .run(
            "centre_file_amqp",
            &[("LIENTHONG_MA_HO_SO", ma_amqp.clone())],
        )
        .await;
    assert_eq!(out.len(), 1, "{out:?}");
    assert_eq!(
        (&out[0]["ma_ho_so"], &out[0]["published"]),
        (&json!(ma_amqp), &json!("confirmed"))
    );
    let id_amqp = out[0]["message_id"]
        .as_str()
        .expect("message_id")
        .to_string();
    let store = bus.store();
    for (ma, id) in [(&ma_http, &id_http), (&ma_amqp, &id_amqp)] {
        let v = uuid::Uuid::parse_str(id).expect("a UUID");
        assert_eq!(v.get_version_num(), 7, "{id}");
        // The whole route ran: the civil-status office, Social Insurance (the mock) and Police
        // (the example agency: its receipt and its callback's result).
        let p = completed(&bus, ma).await;
        assert!(
            p.steps.iter().all(|s| s.phase == StepPhase::Done),
            "{ma}: {:?}",
            p.steps
        );
        assert!(
            store
                .timeline(ma)
                .expect("trace")
                .iter()
                .any(|r| r.message_id.as_deref() == Some(id.as_str())
                    && r.from.as_deref() == Some(SON_HA)),
            "the trace of {ma} shows the filing {id}"
        );
        let police = p
            .steps
            .iter()
            .find(|s| s.unit == POLICE)
            .expect("a Police step");
        let receipt = police
            .result
            .as_ref()
            .and_then(|r| r.get("ma_tiep_nhan"))
            .and_then(Value::as_str)
            .unwrap_or_else(|| panic!("Police's result has the receipt: {:?}", police.result))
            .to_string();
        let received = agency_events
            .find(10, "received", |e| {
                e["event"] == "received" && e["ma_ho_so"] == json!(ma)
            })
            .await;
        assert_eq!(received["ma_tiep_nhan"], json!(receipt));
        assert_eq!(received["loai_yeu_cau"], "DANG_KY_THUONG_TRU");
        assert_eq!(
            Some(received["ma_tham_chieu"].as_str().unwrap_or_default()),
            police.forward_message_id.as_deref()
        );
        let callback = agency_events
            .find(10, "callback", |e| {
                e["event"] == "callback" && e["ma_ho_so"] == json!(ma)
            })
            .await;
        assert_eq!(callback["status"], 200, "{callback}");
    }
    let stats = bus.mock_stats().await;
    assert_eq!(
        stats["police"]["calls"].as_u64().unwrap_or(0),
        0,
        "Police's steps went to the example agency, not to the mock: {stats}"
    );

    // The centre reads its queue over AMQP: exactly what the bus sent it about both dossiers,
    // a copy of one of them skipped as a duplicate, everything acknowledged.
    let expected = all_sent_to_centre(&bus, &[&ma_http, &ma_amqp]).await;
    assert!(expected.len() >= 2, "{expected:?}");
    let copy = duplicate_one(&bus).await;
    let lines = ex
        .run(
            "centre_read_queue_amqp",
            &[
                ("LIENTHONG_IDLE_EXIT_S", "3".into()),
                (
                    "LIENTHONG_SEEN_FILE",
                    bus.dir.join("seen-amqp").display().to_string(),
                ),
            ],
        )
        .await;
    let (handled, duplicates) = read_report("centre_read_queue_amqp", &lines);
    assert_eq!(handled, expected);
    assert_eq!(duplicates, vec![copy]);
    assert_eq!(ready_in_centre_queue(&bus).await, 0, "everything acked");
    let kept = std::fs::read_to_string(bus.dir.join("seen-amqp")).expect("the seen file");
    assert_eq!(kept.lines().collect::<BTreeSet<_>>().len(), expected.len());

    // Over HTTP: a third dossier, its messages read from the pull inbox, a copy skipped.
    let ma_inbox = ma(3);
    let out = ex
        .run(
            "centre_file_http",
            &[("LIENTHONG_MA_HO_SO", ma_inbox.clone())],
        )
        .await;
    assert_eq!(out[0]["status"], 202, "{out:?}");
    completed(&bus, &ma_inbox).await;
    let expected = all_sent_to_centre(&bus, &[&ma_inbox]).await;
    let copy = duplicate_one(&bus).await;
    let lines = ex
        .run(
            "centre_read_inbox_http",
            &[
                ("LIENTHONG_IDLE_EXIT_S", "3".into()),
                (
                    "LIENTHONG_SEEN_FILE",
                    bus.dir.join("seen-http").display().to_string(),
                ),
            ],
        )
        .await;
    let (handled, duplicates) = read_report("centre_read_inbox_http", &lines);
    assert_eq!(handled, expected);
    assert_eq!(duplicates, vec![copy]);
    assert_eq!(ready_in_centre_queue(&bus).await, 0, "everything acked");

    // A land dossier: the land registration office (played here) passes it to Tax, whose payment
    // notice reaches the centre; the example answers it with the receipt of payment, Tax confirms
    // and the dossier completes.
    let ma_land = ma(4);
    let r = reqwest::Client::new()
        .post(format!("{}/_mock/decisions", bus.mock_url))
        .json(&json!({"agency": "tax", "ma_ho_so": ma_land, "status": 6, "delay_ms": 50}))
        .send()
        .await
        .expect("decision");
    assert!(r.status().is_success());
    let mut office = bus.listen(LAND_OFFICE).await;
    bus.send(&land(&ma_land)).await;
    let fwd = loop {
        let e = next(&mut office, 30).await;
        if e.kind.as_str() == Kind::FORWARD {
            break e;
        }
    };
    let d = fwd.payload.data.clone().unwrap_or_default();
    let mut r = fwd.reply(Kind::RESULT, LAND_OFFICE, &fwd.sender);
    r.payload.result = json!({"phieu_chuyen_thong_tin": {"ma_ho_so": ma_land, "thua_dat": d["thua_dat"], "loai_bien_dong": "tang_cho"}})
        .as_object()
        .cloned();
    bus.send(&r).await;
    let store = bus.store();
    eventually(30, "Tax's payment notice routed to the centre", || {
        store.timeline(&ma_land).ok().and_then(|t| {
            t.iter()
                .any(|r| {
                    r.event == "routed" && r.to.as_deref() == Some(SON_HA) && r.status == Some(6)
                })
                .then_some(())
        })
    })
    .await;
    let lines = ex
        .run(
            "centre_answer_payment",
            &[("LIENTHONG_IDLE_EXIT_S", "3".into())],
        )
        .await;
    let answered: Vec<&Value> = lines.iter().filter(|l| l["event"] == "answered").collect();
    assert_eq!(answered.len(), 1, "{lines:?}");
    assert_eq!(
        (&answered[0]["ma_ho_so"], &answered[0]["status"]),
        (&json!(ma_land), &json!(202))
    );
    let p = completed(&bus, &ma_land).await;
    let tax = p.steps.iter().find(|s| s.unit == TAX).expect("Tax's step");
    assert_eq!(tax.phase, StepPhase::Done);
    let result = tax.result.clone().unwrap_or_default();
    assert_eq!(
        result["hoan_thanh_nghia_vu_tai_chinh"]["so_thong_bao"], answered[0]["notice"],
        "Tax confirmed the notice the example paid: {result:?}"
    );
    assert!(
        store.timeline(&ma_land).expect("trace").iter().any(|r| {
            r.message_id.as_deref() == answered[0]["message_id"].as_str()
                && r.from.as_deref() == Some(SON_HA)
        }),
        "the answer is in the trace"
    );

    // The example agency's status lookup: the bus's own (`lienthong check`: a dossier that cannot
    // exist is a readable 404), a dossier it decided, and a cancel of it (refused: decided).
    let rows = lienthong::check::check(&bus.settings, &[POLICE.to_string()])
        .await
        .expect("check");
    assert!(
        rows.iter().all(|r| r.result != "fail")
            && rows
                .iter()
                .any(|r| r.step == "interface" && r.result == "pass"),
        "{:?}",
        rows.iter()
            .map(|r| (&r.step, r.result, &r.reason))
            .collect::<Vec<_>>()
    );
    let http = reqwest::Client::new();
    let found: Value = http
        .get(format!("{agency_url}/v1/ho-so/{ma_http}"))
        .send()
        .await
        .expect("lookup")
        .json()
        .await
        .expect("json");
    let police = completed(&bus, &ma_http)
        .await
        .steps
        .into_iter()
        .find(|s| s.unit == POLICE)
        .expect("Police's step");
    assert_eq!(
        (
            &found["MaHoSo"],
            &found["TrangThaiHoSo"],
            &found["MaTiepNhan"]
        ),
        (
            &json!(ma_http),
            &json!(9),
            police
                .result
                .as_ref()
                .expect("result")
                .get("ma_tiep_nhan")
                .expect("receipt")
        ),
        "{found}"
    );
    let cancel = http
        .post(format!("{agency_url}/v1/ho-so/{ma_http}/huy"))
        .header("Idempotency-Key", uuid::Uuid::now_v7().to_string())
        .json(&json!({"MaHoSo": ma_http, "MaThamChieu": uuid::Uuid::now_v7().to_string(), "LyDo": "Công dân rút hồ sơ", "NgayGui": "20261204100000"}))
        .send()
        .await
        .expect("cancel");
    assert_eq!(cancel.status().as_u16(), 422);
    let body: Value = cancel.json().await.expect("json");
    assert!(
        body["MaLoi"].is_string() && body["MoTaLoi"].is_string(),
        "{body}"
    );

    // Stopped with SIGTERM, the agency ends cleanly.
    sigterm_child(agency.id().expect("the agency runs"));
    let status = tokio::time::timeout(Duration::from_secs(10), agency.wait())
        .await
        .expect("the agency stops on SIGTERM")
        .expect("wait");
    assert!(status.success(), "{status}");
    bus.stop().await;
}

/// SIGTERM to a child this test started, by its pid.
fn sigterm_child(pid: u32) {
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_examples_file_read_answer_and_serve_police() {
    the_examples_run_against_a_live_bus(Lang::Python).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_javascript_examples_file_read_answer_and_serve_police() {
    the_examples_run_against_a_live_bus(Lang::JavaScript).await;
}

/// `examples/curl/centre.sh <args>` with the bus's environment: (exit code, stdout).
async fn curl_example(bus: &Bus, args: &[&str]) -> (i32, String) {
    let mut cmd = tokio::process::Command::new("bash");
    for k in CLEARED {
        cmd.env_remove(k);
    }
    let out = cmd
        .arg(examples_dir().join("curl/centre.sh"))
        .args(args)
        .env("LIENTHONG_URL", &bus.http)
        .env("LIENTHONG_KEY", bus.key(SON_HA))
        .env("LIENTHONG_UNIT", SON_HA)
        .env("LIENTHONG_WAIT_S", "5")
        .output()
        .await
        .expect("bash runs");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    eprintln!(
        "centre.sh {args:?}: {}\n{stdout}{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), stdout)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_curl_one_liners_file_read_ack_and_trace() {
    let bus = Bus::start("examples-curl").await;
    answer_as_civil_status_office(&bus).await;
    let ma = format!("{SON_HA}-261204-9301");
    let (code, out) = curl_example(&bus, &["file", &ma]).await;
    assert_eq!(code, 0, "{out}");
    let filed: Value = serde_json::from_str(&out).expect("JSON");
    assert_eq!(filed["status"], "accepted", "{filed}");
    let id = filed["message_id"]
        .as_str()
        .expect("message_id")
        .to_string();
    // The same command again builds another body (sent_at): refused, nothing filed twice.
    let (code, out) = curl_example(&bus, &["file", &ma]).await;
    assert_eq!(code, 22, "{out}");
    let refused: Value = serde_json::from_str(&out).expect("problem+json");
    assert_eq!(
        refused["type"],
        "urn:lienthong:problem:idempotency-key-reused"
    );

    completed(&bus, &ma).await;
    let expected = all_sent_to_centre(&bus, &[&ma]).await;
    let mut got = BTreeSet::new();
    let mut leases = Vec::new();
    let until = tokio::time::Instant::now() + Duration::from_secs(30);
    while got != expected && tokio::time::Instant::now() < until {
        let (code, out) = curl_example(&bus, &["inbox"]).await;
        assert_eq!(code, 0, "{out}");
        let batch: Value = serde_json::from_str(&out).expect("JSON");
        for m in batch["messages"].as_array().expect("messages") {
            got.insert(m["message_id"].as_str().expect("id").to_string());
            leases.push(m["lease_id"].as_str().expect("lease").to_string());
        }
    }
    assert_eq!(got, expected);
    let mut args = vec!["ack"];
    args.extend(leases.iter().map(String::as_str));
    let (code, out) = curl_example(&bus, &args).await;
    assert_eq!(code, 0, "{out}");
    let acked: Value = serde_json::from_str(&out).expect("JSON");
    assert_eq!(
        acked["acked"].as_array().map(Vec::len),
        Some(leases.len()),
        "{acked}"
    );
    assert_eq!(ready_in_centre_queue(&bus).await, 0);

    let (code, out) = curl_example(&bus, &["dossier", &ma]).await;
    assert_eq!(code, 0, "{out}");
    let state: Value = serde_json::from_str(&out).expect("JSON");
    assert_eq!(state["ma_ho_so"], json!(ma), "{state}");
    let (code, out) = curl_example(&bus, &["trace", &ma]).await;
    assert_eq!(code, 0, "{out}");
    let rows: Vec<Value> = serde_json::from_str(&out).expect("JSON");
    let ids: HashSet<&str> = rows
        .iter()
        .filter_map(|r| r["message_id"].as_str())
        .collect();
    assert!(
        ids.contains(id.as_str()),
        "the filing in the trace: {rows:?}"
    );
    // Another centre's dossier is not this key's to read.
    let (code, _) = curl_example(&bus, &["trace", "000.20.61.H48-261204-0001"]).await;
    assert_eq!(code, 22);
    bus.stop().await;
}
