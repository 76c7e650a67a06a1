//! `lienthong-demo`: the whole bus on the sample dossiers, as the centres' software would see
//! it. The demo starts `lienthong-mock` and `lienthong run` as child processes and talks
//! to them only over AMQP and HTTP: it files each dossier at its centre (most over AMQP, every
//! fourth over the HTTP API), plays the units that read their own queues (civil-status offices,
//! land registration office, Tax, the funeral-allowance department, and the centres), waits
//! until every dossier reaches a terminal outcome at its centre, prints a summary and one
//! dossier's trace, and exits non-zero if any dossier did not complete.

use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;
use std::io::{BufRead, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use futures_lite::StreamExt;
use lapin::options::{BasicAckOptions, BasicConsumeOptions, BasicQosOptions};
use lapin::types::FieldTable;
use lienthong_core::amqp::{Publisher, envelope_properties};
use lienthong_core::envelope::{Envelope, Kind, new_message_id};
use lienthong_core::registry::{Registry, Settings, UnitKind};
use lienthong_core::topology::{Names, Topology};
use lienthong_core::trace::{TimelineRow, UnitStats, percentile, render_timeline};
use serde_json::{Map, Value, json};

use crate::mock::point_adapters_at;
use crate::procs::{
    HTTP_LISTENING, MOCK_LISTENING, connect, exe, free_port, wait_http_with, wait_listening,
};

/// Options of `lienthong-demo`.
#[derive(clap::Args, Debug, Clone)]
pub struct DemoArgs {
    /// Sample dossiers (one envelope per line).
    #[arg(long, default_value = "schemas/samples/dossiers.jsonl")]
    pub file: PathBuf,
    /// Only the first N dossiers (default: all).
    #[arg(long)]
    pub count: Option<usize>,
    /// Topology prefix of the demo (kept apart from a real installation's `lienthong`).
    #[arg(long, default_value = "lienthong-demo")]
    pub prefix: String,
    /// Working directory for the demo's store, config and logs.
    #[arg(long, default_value = "data/demo")]
    pub dir: PathBuf,
    /// Give up after this many seconds.
    #[arg(long, default_value_t = 600)]
    pub timeout_s: u64,
    /// Share of agency answers that are 503 (transient; every dossier still completes).
    #[arg(long, default_value_t = 0.1)]
    pub unavailable_rate: f64,
    /// Share of dossiers the mock agencies refuse (status 3); 0 by default.
    #[arg(long, default_value_t = 0.0)]
    pub refusal_rate: f64,
    /// Use the configured broker (`[bus] amqp_url`, by default the machine's RabbitMQ on
    /// 127.0.0.1:5672, plain AMQP on loopback) instead of a RabbitMQ node of the demo's own
    /// with a TLS listener (`amqps://`, the demo's CA), started and removed by the demo.
    #[arg(long)]
    pub shared_broker: bool,
    /// Keep the bus (and its console) running after the dossiers complete, until Ctrl-C, so
    /// that an operator can look around.
    #[arg(long)]
    pub keep_running: bool,
}

/// What the centre expects back for one dossier.
#[derive(Debug, Clone)]
struct Dossier {
    env: Envelope,
    started: Instant,
    expected: HashSet<String>,
    got: HashSet<String>,
    outcome: Option<Outcome>,
    finished: Option<Duration>,
}

#[derive(Debug, Clone, PartialEq)]
enum Outcome {
    Completed,
    Refused(String),
    DeadLettered(String),
}

#[derive(Default)]
struct Board {
    dossiers: HashMap<String, Dossier>,
    /// Answers the centres gave to pauses (supplement, proof of payment).
    answered_pauses: u64,
}

struct Demo {
    names: Names,
    registry: Registry,
    publisher: Publisher,
    board: Mutex<Board>,
}

struct Child(std::process::Child, &'static str);

impl Drop for Child {
    fn drop(&mut self) {
        // SIGTERM first, so `lienthong run` stops cleanly.
        let _ = std::process::Command::new("kill")
            .arg("-TERM")
            .arg(self.0.id().to_string())
            .status();
        for _ in 0..100 {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
        eprintln!("({} had to be killed)", self.1);
    }
}

fn spawn(
    exe: &Path,
    config: &Path,
    args: &[&str],
    log: &Path,
    name: &'static str,
) -> anyhow::Result<Child> {
    let out = std::fs::File::create(log)?;
    let err = out.try_clone()?;
    let child = std::process::Command::new(exe)
        .arg("--config")
        .arg(config)
        .args(args)
        .env("RUST_LOG", "info,lapin=warn")
        .stdout(out)
        .stderr(err)
        .spawn()
        .with_context(|| format!("starting {name}"))?;
    Ok(Child(child, name))
}

/// The programs the demo runs.
#[derive(Debug, Clone)]
pub struct Programs {
    /// The `lienthong` binary: `lienthong run`, and the operator's commands the demo shows.
    pub lienthong: PathBuf,
    /// The `lienthong-mock` binary; None: the mock agencies are served in the demo's own
    /// process (the tests, which cannot name another package's binary).
    pub mock: Option<PathBuf>,
}

impl Programs {
    /// `lienthong` and `lienthong-mock` beside the running executable (or at `$LIENTHONG_BIN`
    /// and `$LIENTHONG_MOCK_BIN`).
    pub fn beside_me() -> anyhow::Result<Programs> {
        Ok(Programs {
            lienthong: exe("lienthong", "LIENTHONG_BIN")?,
            mock: Some(exe("lienthong-mock", "LIENTHONG_MOCK_BIN")?),
        })
    }
}

/// What a demo run ends with.
#[derive(Debug, Clone)]
pub struct DemoOutcome {
    /// The summary (what `lienthong-demo` prints on standard output).
    pub report: String,
    /// Every dossier completed.
    pub all_completed: bool,
}

/// The mock agencies while the demo runs: a child process, or a server in this process.
enum MockAgencies {
    Child(Child),
    InProcess(crate::mock::MockServer),
}

impl MockAgencies {
    async fn stop(self) {
        match self {
            MockAgencies::Child(c) => drop(c),
            MockAgencies::InProcess(s) => {
                let _ = s.stop.send(());
                let _ = s.task.await;
            }
        }
    }
}

/// Run the demo with `lienthong` and `lienthong-mock` from beside this program: print the
/// summary; exit status success when every dossier completed.
pub async fn run(settings: Settings, args: DemoArgs) -> anyhow::Result<ExitCode> {
    let outcome = run_with(settings, args, &Programs::beside_me()?).await?;
    print!("{}", outcome.report);
    Ok(if outcome.all_completed {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Run the demo on the registry of `settings` (every adapter pointed at the mock agencies it
/// starts) with `programs`; progress goes to standard error, the summary into the outcome.
pub async fn run_with(
    mut settings: Settings,
    args: DemoArgs,
    programs: &Programs,
) -> anyhow::Result<DemoOutcome> {
    let lienthong = programs.lienthong.clone();
    let lines: Vec<String> = std::io::BufReader::new(
        std::fs::File::open(&args.file)
            .with_context(|| format!("opening {}", args.file.display()))?,
    )
    .lines()
    .collect::<Result<_, _>>()?;
    let mut samples = Vec::new();
    for (i, l) in lines
        .iter()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
    {
        let env: Envelope = serde_json::from_str(l)
            .with_context(|| format!("{}:{}: not an envelope", args.file.display(), i + 1))?;
        samples.push(env);
    }
    if let Some(n) = args.count {
        samples.truncate(n);
    }
    // Customs takes part in no documented liên thông flow: a few dossiers of the synthetic
    // procedure SYN.HQ.001 exercise its adapter (labelled synthetic in the catalogue).
    let customs = synthetic_customs(&settings, SYNTHETIC_CUSTOMS);
    let n_customs = customs.len();
    samples.extend(customs);
    std::fs::create_dir_all(&args.dir)?;
    let store_path = args.dir.join("lienthong.db");
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", store_path.display()));
    }
    let (http_port, mock_port) = (free_port()?, free_port()?);
    settings.bus.prefix = args.prefix.clone();
    settings.store.path = store_path.display().to_string();
    settings.store.blob_dir = args.dir.join("blobs").display().to_string();
    settings.http.listen = format!("127.0.0.1:{http_port}");
    settings.http.public_url = None;
    settings.mock.listen = format!("127.0.0.1:{mock_port}");
    settings.mock.unavailable_rate = args.unavailable_rate;
    settings.mock.refusal_rate = args.refusal_rate;
    // Check due times every second, so that the late hand-overs raise their alerts while the
    // demo runs.
    settings.process.scan_ms = 1000;
    // TLS everywhere over HTTP, as in a deployment: a CA made at this start signs the
    // certificate of the bus's HTTP API and of the mock agencies; the adapters, the mock's
    // callbacks and the demo's own requests trust that CA only.
    let ca = crate::tls::DemoCa::create(&args.dir.join("tls"))?;
    let (ca_pem, cert_pem, key_pem) = (
        ca.ca.display().to_string(),
        ca.cert.display().to_string(),
        ca.key.display().to_string(),
    );
    settings.http.tls_cert = Some(cert_pem.clone());
    settings.http.tls_key = Some(key_pem.clone());
    settings.mock.tls_cert = Some(cert_pem);
    settings.mock.tls_key = Some(key_pem);
    settings.mock.ca_bundle = Some(ca_pem.clone());
    point_adapters_at(&mut settings, &format!("https://127.0.0.1:{mock_port}"));
    for u in &mut settings.units {
        if let lienthong_core::registry::Reach::Adapter { settings: s, .. } = &mut u.reach {
            let conn = s.entry("connection").or_insert_with(|| json!({}));
            if let Some(c) = conn.as_object_mut() {
                c.insert("ca_bundle".into(), json!(ca_pem));
            }
        }
    }
    let http = ca.client()?;
    // The trace's checkpoints signed with a key made at this start (Ed25519, 32 random bytes).
    settings.trace.signing_key = Some(format!(
        "file:{}",
        crate::tls::signing_key(&args.dir.join("tls"))?.display()
    ));
    // The shipped keys are placeholders, which `lienthong run` refuses: the demo's own.
    crate::keys::fill(&mut settings);
    // The broker over TLS: a node of the demo's own (its data in a temporary directory,
    // stopped and removed when the demo ends) with a TLS listener serving the demo CA's
    // certificate; the bus and the units connect with amqps:// and trust that CA only.
    let private = if args.shared_broker {
        None
    } else {
        eprintln!("lienthong-demo: starting a RabbitMQ node of its own with a TLS listener …");
        let (node, tls_port) = crate::private_broker::PrivateBroker::try_start_tls(
            "demo", &ca.ca, &ca.cert, &ca.key,
        )
        .context("starting the demo's own broker node (use --shared-broker to use the configured broker)")?;
        settings.bus.amqp_url = format!("amqps://localhost:{tls_port}/%2f");
        settings.bus.tls_ca = Some(ca_pem.clone());
        Some(node)
    };
    // Broker users of the demo's own, as in a deployment: the bus's, and one for the units
    // whose software the demo plays (it reads their queues and answers as them). Without
    // rabbitmqctl rights (not root) the demo runs as the broker's default user, and says so.
    let units_user = format!("{}.units", settings.bus.prefix);
    for u in &mut settings.units {
        if matches!(u.reach, lienthong_core::registry::Reach::Amqp) {
            u.amqp_user = Some(units_user.clone());
        }
    }
    let bus_user = format!("{}.bus", settings.bus.prefix);
    let users = match crate::broker_users::BrokerUsers::create_on(
        &mut settings,
        Some(&bus_user),
        private.as_ref().map(|p| p.node.as_str()),
    ) {
        Ok(u) => u,
        Err(e) => {
            eprintln!(
                "lienthong-demo: WARNING: cannot create the demo's broker users ({e:#}); the bus runs as the broker's default user"
            );
            // The shipped bus user has a placeholder password: the node's default user.
            settings.bus.amqp_url = without_user(&settings.bus.amqp_url);
            crate::broker_users::BrokerUsers::none()
        }
    };
    settings.check()?;
    let config_path = args.dir.join("config.toml");
    settings
        .write_file(&config_path)
        .context("writing the demo config")?;
    let operator_key = settings.http.operator_key.clone().unwrap_or_default();

    eprintln!(
        "lienthong-demo: {} dossiers from {} (+{n_customs} synthetic Customs dossiers), prefix {:?}, broker {}",
        samples.len() - n_customs,
        args.file.display(),
        args.prefix,
        lienthong_core::amqp::redact(&settings.bus.amqp_url)
    );
    // A fresh topology: the demo deletes its own prefix's queues from an earlier run.
    let conn = Arc::new(connect(&settings, "demo").await?);
    let topo = Topology::plan(&settings);
    topo.delete(&conn)
        .await
        .context("cleaning the demo topology")?;
    lienthong_core::topology::declare(&settings, &conn).await?;

    let mock = match &programs.mock {
        Some(mock_exe) => MockAgencies::Child(spawn(
            mock_exe,
            &config_path,
            &[],
            &args.dir.join("mock.log"),
            "lienthong-mock",
        )?),
        None => MockAgencies::InProcess(crate::mock::serve(&settings).await?),
    };
    let _bus = spawn(
        &lienthong,
        &config_path,
        &["run"],
        &args.dir.join("run.log"),
        "lienthong run",
    )?;
    let base = format!("https://127.0.0.1:{http_port}");
    if let MockAgencies::Child(_) = mock {
        wait_listening(
            &args.dir.join("mock.log"),
            MOCK_LISTENING,
            &format!("127.0.0.1:{mock_port}"),
            30,
        )
        .await?;
    }
    wait_http_with(
        &http,
        &format!("https://127.0.0.1:{mock_port}/_mock/stats"),
        30,
    )
    .await?;
    wait_listening(
        &args.dir.join("run.log"),
        HTTP_LISTENING,
        &format!("127.0.0.1:{http_port}"),
        60,
    )
    .await?;
    wait_http_with(&http, &format!("{base}/readyz"), 60)
        .await
        .context("lienthong run did not become ready (see data/demo/run.log)")?;
    eprintln!(
        "mock agencies on https://127.0.0.1:{mock_port}, bus HTTP API on {base} (TLS with the demo's own CA, {}); logs in {}",
        ca.ca.display(),
        args.dir.display()
    );

    // The units the demo plays connect as their own broker user (the bus's user when none
    // could be created).
    let units_conn = match users.url(&units_user) {
        Some(url) => Arc::new(
            lienthong_core::amqp::connect_with(
                &url,
                "demo-units",
                &lienthong_core::amqp::tls_config(&settings.bus).map_err(anyhow::Error::msg)?,
            )
            .await
            .context("connecting as the units' broker user")?,
        ),
        None => conn.clone(),
    };
    let demo = Arc::new(Demo {
        names: Names::new(&settings.bus.prefix),
        registry: Registry::new(&settings),
        publisher: Publisher::new(&units_conn, settings.bus.confirm_timeout_ms).await?,
        board: Mutex::new(Board::default()),
    });
    // Play every unit that reads its own queue.
    let played: Vec<String> = settings
        .units
        .iter()
        .filter(|u| matches!(u.reach, lienthong_core::registry::Reach::Amqp))
        .map(|u| u.code.clone())
        .collect();
    for code in &played {
        let ch = units_conn.create_channel().await?;
        ch.basic_qos(32, BasicQosOptions::default()).await?;
        let mut consumer = ch
            .basic_consume(
                demo.names.unit_queue(code).into(),
                format!("demo-{code}").into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await?;
        let d = demo.clone();
        let code = code.clone();
        tokio::spawn(async move {
            while let Some(Ok(delivery)) = consumer.next().await {
                match serde_json::from_slice::<Envelope>(&delivery.data) {
                    Ok(env) => {
                        if let Err(e) = d.on_message(&code, env).await {
                            eprintln!("demo unit {code}: {e:#}");
                        }
                    }
                    Err(e) => eprintln!("demo unit {code}: unreadable message: {e}"),
                }
                let _ = delivery.ack(BasicAckOptions::default()).await;
            }
            let _ = ch;
        });
    }

    // File every dossier at its centre.
    let started = Instant::now();
    let mut backdated = 0;
    for (i, mut env) in samples.into_iter().enumerate() {
        env.message_id = new_message_id();
        env.correlation_id = new_message_id();
        env.sent_at = lienthong_core::clock::now_rfc3339();
        // The liên thông procedures of the catalogue are filed without a receiver: the bus runs
        // their route (process manager). Every fifth one was received days ago at the centre
        // (late hand-overs and overdue alerts); a few arrive after the 15:00 cut-off.
        if demo
            .registry
            .procedure(&env.ma_tthc)
            .is_some_and(|p| !p.synthetic && p.eligible())
        {
            env.receiver = None;
            if i % 5 == 2 {
                let when = chrono::Local::now().date_naive() - chrono::Duration::days(6);
                let at = when
                    .and_hms_opt(15, 30, 0)
                    .and_then(|t| {
                        t.and_local_timezone(lienthong_core::clock::vn_offset())
                            .single()
                    })
                    .map(|t| t.to_rfc3339());
                if let Some(at) = at {
                    env.payload
                        .data
                        .get_or_insert_with(Map::new)
                        .insert("ngay_tiep_nhan".into(), json!(at));
                    backdated += 1;
                }
            }
        }
        let expected = demo.expected_results(&env);
        {
            let mut b = demo
                .board
                .lock()
                .map_err(|_| anyhow::anyhow!("board poisoned"))?;
            b.dossiers.insert(
                env.ma_ho_so.clone(),
                Dossier {
                    env: env.clone(),
                    started: Instant::now(),
                    expected,
                    got: HashSet::new(),
                    outcome: None,
                    finished: None,
                },
            );
        }
        if i % 4 == 3 {
            let key = demo
                .registry
                .unit(&env.sender)
                .and_then(|u| u.api_key.clone())
                .unwrap_or_default();
            let r = http
                .post(format!("{base}/v1/messages"))
                .bearer_auth(key)
                .json(&env)
                .send()
                .await?;
            if r.status() != reqwest::StatusCode::ACCEPTED {
                let st = r.status();
                let body = r.text().await.unwrap_or_default();
                demo.finish(
                    &env.ma_ho_so,
                    Outcome::DeadLettered(format!("HTTP API refused it: {st} {body}")),
                );
            }
        } else {
            demo.publish(&env).await?;
        }
        if i % 20 == 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    // Wait, showing progress.
    let tty = std::io::stderr().is_terminal();
    let deadline = started + Duration::from_secs(args.timeout_s);
    loop {
        let (total, done, completed, refused, dead) = demo.tally();
        let line = format!(
            "[{:>5.1}s] dossiers {done}/{total} finished: {completed} completed, {refused} refused, {dead} dead-lettered",
            started.elapsed().as_secs_f64()
        );
        if tty {
            eprint!("\r{line}   ");
        } else {
            eprintln!("{line}");
        }
        let _ = std::io::stderr().flush();
        if done == total || Instant::now() > deadline {
            eprintln!();
            break;
        }
        tokio::time::sleep(Duration::from_millis(if tty { 250 } else { 2000 })).await;
    }
    // The process manager keeps the national portal in step: wait until its adapter has
    // handled every progress message routed to it.
    let portal = demo
        .registry
        .units()
        .find(|u| u.kind == UnitKind::Portal)
        .map(|u| u.code.clone());
    if let Some(portal) = &portal {
        let until = Instant::now() + Duration::from_secs(30);
        let mut last = (u64::MAX, 0);
        while Instant::now() < until {
            tokio::time::sleep(Duration::from_millis(500)).await;
            let stats: Vec<UnitStats> = http
                .get(format!("{base}/v1/stats"))
                .bearer_auth(&operator_key)
                .send()
                .await?
                .json()
                .await
                .unwrap_or_default();
            let (routed, handled) = stats
                .iter()
                .find(|s| &s.unit == portal)
                .map(|s| (s.routed, s.delivered + s.dead_lettered))
                .unwrap_or((0, 0));
            if handled >= routed && (routed, handled) == last {
                break;
            }
            last = (routed, handled);
        }
    }
    // Let the tracer write the last events.
    tokio::time::sleep(Duration::from_millis(500)).await;

    // Summary.
    let stats: Vec<UnitStats> = http
        .get(format!("{base}/v1/stats"))
        .bearer_auth(&operator_key)
        .send()
        .await?
        .json()
        .await
        .unwrap_or_default();
    let (total, done, completed, refused, dead) = demo.tally();
    let mut report = String::new();
    let mut e2e: Vec<i64> = demo.durations();
    e2e.sort_unstable();
    report.push('\n');
    let _ = writeln!(
        report,
        "lienthong-demo — {total} dossiers in {:.1} s: {completed} completed, {refused} refused, {dead} dead-lettered, {} unfinished",
        started.elapsed().as_secs_f64(),
        total - done
    );
    let _ = writeln!(
        report,
        "end to end (filed at the centre → last result back at the centre): p50 {} ms, p95 {} ms",
        fmt_ms(percentile(&e2e, 0.5)),
        fmt_ms(percentile(&e2e, 0.95))
    );
    report.push('\n');
    let _ = writeln!(
        report,
        "{:<15} {:<52} {:>7} {:>9} {:>7} {:>7} {:>8} {:>8}",
        "unit", "name", "routed", "delivered", "retried", "dead", "p50 ms", "p95 ms"
    );
    for s in &stats {
        let name = demo
            .registry
            .unit(&s.unit)
            .map(|u| u.name.clone())
            .unwrap_or_else(|| "-".into());
        let name: String = name.chars().take(52).collect();
        let _ = writeln!(
            report,
            "{:<15} {:<52} {:>7} {:>9} {:>7} {:>7} {:>8} {:>8}",
            s.unit,
            name,
            s.routed,
            s.delivered,
            s.retried,
            s.dead_lettered,
            fmt_ms(s.p50_ms),
            fmt_ms(s.p95_ms)
        );
    }
    let _ = writeln!(
        report,
        "(delivered: handed to the agency's system by its adapter; units without an adapter read their queue themselves. p50/p95: ms from entry into the bus to routed or delivered.)"
    );
    // One dossier's trace: a birth dossier that needed retries if there is one.
    if let Some(ma) = demo.showcase(&http, &base, &operator_key).await {
        let rows: Vec<TimelineRow> = http
            .get(format!("{base}/v1/dossiers/{ma}/trace"))
            .bearer_auth(&operator_key)
            .send()
            .await?
            .json()
            .await
            .unwrap_or_default();
        report.push('\n');
        report.push_str(&render_timeline(&ma, &rows));
        let _ = writeln!(
            report,
            "(the same with: lienthong --config {} trace {ma})",
            config_path.display()
        );
    }
    // The process manager's view: each flow's hand-overs and dossiers before / on / past their
    // deadlines, the alerts raised, and one dossier's state and control sheet.
    let bus_cli = BusCli {
        exe: &lienthong,
        config: &config_path,
    };
    match flow_report(&store_path, &settings, &bus_cli, &args.dir, backdated) {
        Ok(text) => report.push_str(&text),
        Err(e) => eprintln!("could not read the process manager's figures: {e:#}"),
    }
    let _ = writeln!(
        report,
        "(the same with: lienthong --config {c} dossier <ma_ho_so> | overdue | control-sheet <ma_ho_so> --pdf x.pdf)",
        c = config_path.display()
    );
    let failed: Vec<String> = demo.unfinished_or_failed();
    if !failed.is_empty() {
        report.push('\n');
        let _ = writeln!(report, "not completed:");
        for f in failed.iter().take(20) {
            let _ = writeln!(report, "  {f}");
        }
    }
    if args.keep_running {
        let _ = writeln!(
            report,
            "\nThe operators' console: {base}/console (certificate from the demo's CA, {ca}); log in with\nan empty user name and the operator key as password: {operator_key}\nThe bus keeps running until Ctrl-C.",
            ca = ca_pem,
        );
        print!("{report}");
        report.clear();
        let _ = tokio::signal::ctrl_c().await;
        eprintln!("lienthong-demo: stopping the bus …");
    } else {
        let _ = writeln!(
            report,
            "\n(with --keep-running the bus stays up after the dossiers complete, with the operators' console at {base}/console)"
        );
    }
    // The demo's queues are not needed any more (its trace stays in the store).
    drop(_bus);
    mock.stop().await;
    if let Err(e) = topo.delete(&conn).await {
        eprintln!("could not delete the demo's queues: {e}");
    }
    let _ = conn.close(200, "demo done".into()).await;
    Ok(DemoOutcome {
        report,
        all_completed: completed == total,
    })
}

fn fmt_ms(v: Option<i64>) -> String {
    v.map(|x| x.to_string()).unwrap_or_else(|| "-".into())
}

/// The `lienthong` binary with the demo's configuration: the operator's commands, as an
/// operator would run them.
struct BusCli<'a> {
    exe: &'a Path,
    config: &'a Path,
}

impl BusCli<'_> {
    /// `lienthong --config <config> <args>`: its standard output, or an error with its
    /// standard error.
    fn output(&self, args: &[&str]) -> anyhow::Result<String> {
        let o = std::process::Command::new(self.exe)
            .arg("--config")
            .arg(self.config)
            .args(args)
            .env("RUST_LOG", "warn")
            .output()
            .with_context(|| format!("running lienthong {}", args.join(" ")))?;
        if !o.status.success() {
            anyhow::bail!(
                "lienthong {} failed: {}",
                args.join(" "),
                String::from_utf8_lossy(&o.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&o.stdout).into_owned())
    }
}

/// Per flow: dossiers and their outcome, hand-overs and dossiers before / on / past their due
/// times, the alerts raised; then one late dossier's state (`lienthong dossier`), with its
/// control sheet written as HTML and PDF into `dir` (`lienthong control-sheet`).
fn flow_report(
    store_path: &Path,
    settings: &Settings,
    bus: &BusCli,
    dir: &Path,
    backdated: usize,
) -> anyhow::Result<String> {
    use lienthong_core::calendar::Timeliness;
    use lienthong_core::process::Phase;
    let store = lienthong_core::store::Store::open(store_path)?;
    let registry = Registry::new(settings);
    let procs = store.processes(true)?;
    let mut out = String::new();
    out.push_str(&format!(
        "\nprocess manager — {} dossiers run from the catalogue ({backdated} received days earlier at their centre)\n",
        procs.len()
    ));
    out.push_str(&format!(
        "{:<10} {:<34} {:>5} {:>5} {:>5} | {:>6} {:>6} {:>6} | {:>8} {:>8} {:>8}\n",
        "procedure",
        "flow",
        "files",
        "done",
        "other",
        "early",
        "ontime",
        "late",
        "d.early",
        "d.ontime",
        "d.late"
    ));
    let mut codes: Vec<String> = procs.iter().map(|p| p.ma_tthc.clone()).collect();
    codes.sort();
    codes.dedup();
    for code in &codes {
        let ps: Vec<_> = procs.iter().filter(|p| &p.ma_tthc == code).collect();
        let count = |t: Timeliness| {
            ps.iter()
                .flat_map(|p| p.steps.iter())
                .filter(|s| s.timeliness == Some(t))
                .count()
        };
        let dcount = |t: Timeliness| ps.iter().filter(|p| p.timeliness == Some(t)).count();
        let done = ps.iter().filter(|p| p.phase == Phase::Completed).count();
        let name: String = registry
            .procedure(code)
            .map(|p| p.name.chars().take(34).collect())
            .unwrap_or_default();
        out.push_str(&format!(
            "{:<10} {:<34} {:>5} {:>5} {:>5} | {:>6} {:>6} {:>6} | {:>8} {:>8} {:>8}\n",
            code,
            name,
            ps.len(),
            done,
            ps.len() - done,
            count(Timeliness::Early),
            count(Timeliness::OnTime),
            count(Timeliness::Late),
            dcount(Timeliness::Early),
            dcount(Timeliness::OnTime),
            dcount(Timeliness::Late),
        ));
    }
    let unclassified = procs
        .iter()
        .flat_map(|p| p.steps.iter())
        .filter(|s| s.phase == lienthong_core::process::StepPhase::Done && s.timeliness.is_none())
        .count();
    out.push_str(&format!(
        "(early/ontime/late: hand-overs, each step against its due time — trước hạn / đúng hạn / quá hạn; d.*: whole dossiers against the legal deadline; {unclassified} finished steps unclassified)\n"
    ));
    let alerts: Vec<(String, i64)> = store.with(|c| {
        let mut st =
            c.prepare("SELECT level, COUNT(*) FROM process_alerts GROUP BY level ORDER BY level")?;
        st.query_map(lienthong_core::params![], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect()
    })?;
    out.push_str(&format!(
        "alerts raised: {}\n",
        if alerts.is_empty() {
            "none".to_string()
        } else {
            alerts
                .iter()
                .map(|(l, n)| format!("{n} {l}"))
                .collect::<Vec<_>>()
                .join(", ")
        }
    ));
    // One late birth dossier (else any completed one): its state and control sheet.
    let pick = procs
        .iter()
        .filter(|p| p.phase == Phase::Completed)
        .max_by_key(|p| {
            (
                p.ma_tthc == "1.001193",
                p.steps
                    .iter()
                    .any(|s| s.timeliness == Some(Timeliness::Late)),
                p.steps
                    .iter()
                    .any(|s| s.timeliness == Some(Timeliness::Early)),
            )
        });
    if let Some(p) = pick {
        out.push('\n');
        out.push_str(&bus.output(&["dossier", &p.ma_ho_so])?);
        let pdf = dir.join(format!("phieu-kiem-soat-{}.pdf", p.ma_ho_so));
        let html = dir.join(format!("phieu-kiem-soat-{}.html", p.ma_ho_so));
        let (pdf_arg, html_arg) = (pdf.display().to_string(), html.display().to_string());
        bus.output(&[
            "control-sheet",
            &p.ma_ho_so,
            "--pdf",
            &pdf_arg,
            "--html",
            &html_arg,
        ])?;
        out.push_str(&format!(
            "control sheet (Phiếu kiểm soát quá trình giải quyết hồ sơ): {} and {}\n",
            pdf.display(),
            html.display()
        ));
    }
    Ok(out)
}

impl Demo {
    async fn publish(&self, env: &Envelope) -> anyhow::Result<()> {
        self.publisher
            .publish(
                &self.names.ingress_exchange(),
                "",
                &env.to_bytes(),
                envelope_properties(env),
                true,
            )
            .await
            .with_context(|| format!("publishing {} for {}", env.kind, env.ma_ho_so))
    }

    /// The units whose results the centre waits for: the final result of the process manager
    /// (it comes from the last step's unit; any unit counts), or the named receiver's.
    fn expected_results(&self, env: &Envelope) -> HashSet<String> {
        env.receiver.iter().cloned().collect()
    }

    fn finish(&self, ma: &str, o: Outcome) {
        if let Ok(mut b) = self.board.lock()
            && let Some(d) = b.dossiers.get_mut(ma)
            && d.outcome.is_none()
        {
            d.outcome = Some(o);
            d.finished = Some(d.started.elapsed());
        }
    }

    fn tally(&self) -> (usize, usize, usize, usize, usize) {
        let Ok(b) = self.board.lock() else {
            return (0, 0, 0, 0, 0);
        };
        let total = b.dossiers.len();
        let mut c = (0, 0, 0);
        for d in b.dossiers.values() {
            match &d.outcome {
                Some(Outcome::Completed) => c.0 += 1,
                Some(Outcome::Refused(_)) => c.1 += 1,
                Some(Outcome::DeadLettered(_)) => c.2 += 1,
                None => {}
            }
        }
        (total, c.0 + c.1 + c.2, c.0, c.1, c.2)
    }

    fn durations(&self) -> Vec<i64> {
        let Ok(b) = self.board.lock() else {
            return Vec::new();
        };
        b.dossiers
            .values()
            .filter(|d| d.outcome == Some(Outcome::Completed))
            .filter_map(|d| d.finished.map(|f| f.as_millis() as i64))
            .collect()
    }

    fn unfinished_or_failed(&self) -> Vec<String> {
        let Ok(b) = self.board.lock() else {
            return Vec::new();
        };
        let mut v: Vec<String> = b
            .dossiers
            .values()
            .filter(|d| d.outcome != Some(Outcome::Completed))
            .map(|d| match &d.outcome {
                None => format!(
                    "{}: unfinished, still waiting for {:?}",
                    d.env.ma_ho_so,
                    d.expected.difference(&d.got).collect::<Vec<_>>()
                ),
                Some(o) => format!("{}: {o:?}", d.env.ma_ho_so),
            })
            .collect();
        v.sort();
        v
    }

    async fn showcase(&self, http: &reqwest::Client, base: &str, key: &str) -> Option<String> {
        let mut births: Vec<String> = {
            let b = self.board.lock().ok()?;
            b.dossiers
                .values()
                .filter(|d| d.env.ma_tthc == "1.001193")
                .map(|d| d.env.ma_ho_so.clone())
                .collect()
        };
        births.sort();
        for ma in births.iter().take(60) {
            let rows: Vec<TimelineRow> = http
                .get(format!("{base}/v1/dossiers/{ma}/trace"))
                .bearer_auth(key)
                .send()
                .await
                .ok()?
                .json()
                .await
                .ok()?;
            if rows.iter().any(|r| r.event == "retried") {
                return Some(ma.clone());
            }
        }
        births.into_iter().next()
    }

    /// What a unit's own software does with a message on its queue.
    async fn on_message(&self, unit_code: &str, env: Envelope) -> anyhow::Result<()> {
        let Some(unit) = self.registry.unit(unit_code) else {
            return Ok(());
        };
        if unit.kind == UnitKind::Centre {
            return self.centre_receives(env).await;
        }
        match (
            unit.roles
                .iter()
                .map(String::as_str)
                .collect::<Vec<_>>()
                .as_slice(),
            env.kind.as_str(),
        ) {
            (r, Kind::FORWARD) if r.contains(&"civil_status") => {
                let (key, what) = if env.ma_tthc == "1.011537" {
                    ("so_dang_ky_khai_tu", "Đã đăng ký khai tử")
                } else {
                    ("so_dang_ky_khai_sinh", "Đã đăng ký khai sinh")
                };
                let mut result = Map::new();
                result.insert(
                    key.into(),
                    json!(format!("{}/2026", 100 + (env.ma_ho_so.len() * 7) % 900)),
                );
                result.insert(
                    "ngay_dang_ky".into(),
                    json!(chrono::Local::now().format("%Y-%m-%d").to_string()),
                );
                result.insert("noi_dung_xu_ly".into(), json!(what));
                self.reply_result(&env, unit_code, result).await
            }
            (r, Kind::FORWARD) if r.contains(&"funeral_allowance") => {
                let mut result = Map::new();
                result.insert("so_tien_tro_cap_vnd".into(), json!(18_000_000));
                result.insert(
                    "noi_dung_xu_ly".into(),
                    json!("Đã quyết định hưởng trợ cấp mai táng"),
                );
                self.reply_result(&env, unit_code, result).await
            }
            (r, Kind::FORWARD) if r.contains(&"tax") => {
                let mut result = Map::new();
                let area = env
                    .payload
                    .data
                    .as_ref()
                    .and_then(|d| {
                        d.get("phieu_chuyen_thong_tin")
                            .and_then(|p| p.pointer("/thua_dat/dien_tich_m2"))
                    })
                    .and_then(Value::as_f64)
                    .unwrap_or(100.0);
                result.insert("thong_bao_nop_tien".into(), json!({"so_thong_bao": format!("TB-{}", &env.ma_ho_so[env.ma_ho_so.len() - 4..]), "le_phi_truoc_ba_vnd": (area * 30_000.0) as i64, "thue_tncn_vnd": (area * 50_000.0) as i64}));
                self.reply_result(&env, unit_code, result).await
            }
            (r, Kind::FORWARD) if r.contains(&"land_registration") => {
                // The land office checks the change and writes the information-transfer form
                // for Tax (first field: the dossier code); the bus carries it on to Tax.
                let d = env.payload.data.clone().unwrap_or_default();
                let mut result = Map::new();
                result.insert(
                    "phieu_chuyen_thong_tin".into(),
                    json!({"ma_ho_so": env.ma_ho_so, "thua_dat": d.get("thua_dat").cloned().unwrap_or(Value::Null),
                           "loai_bien_dong": d.get("loai_bien_dong").cloned().unwrap_or(Value::Null)}),
                );
                result.insert(
                    "noi_dung_xu_ly".into(),
                    json!(
                        "Đã kiểm tra hồ sơ, lập phiếu chuyển thông tin xác định nghĩa vụ tài chính"
                    ),
                );
                self.reply_result(&env, unit_code, result).await
            }
            _ => Ok(()),
        }
    }

    async fn reply_result(
        &self,
        to: &Envelope,
        from: &str,
        result: Map<String, Value>,
    ) -> anyhow::Result<()> {
        let mut r = to.reply(Kind::RESULT, from, &to.sender);
        r.payload.result = Some(result);
        self.publish(&r).await
    }

    async fn centre_receives(&self, env: Envelope) -> anyhow::Result<()> {
        let ma = env.ma_ho_so.clone();
        let status = env.status.map(|s| s.0);
        match (env.kind.as_str(), status) {
            (Kind::DEAD_LETTER, _) => {
                self.finish(
                    &ma,
                    Outcome::DeadLettered(env.payload.reason.unwrap_or_default()),
                );
                Ok(())
            }
            (Kind::STATUS, Some(3 | 7 | 8)) => {
                self.finish(
                    &ma,
                    Outcome::Refused(format!(
                        "{}: {}",
                        env.sender,
                        env.payload.reason.unwrap_or_default()
                    )),
                );
                Ok(())
            }
            // A supplement request or a payment notice: the citizen answers at the centre, and
            // the centre sends the answer to the bus (a forward without receiver resumes the step).
            (Kind::STATUS, Some(s @ (5 | 6))) => self.answer_pause(&env, s).await,
            (Kind::RESULT, _) => {
                let managed = self
                    .board
                    .lock()
                    .ok()
                    .and_then(|b| b.dossiers.get(&ma).map(|d| d.env.receiver.is_none()))
                    .unwrap_or(false);
                let complete = managed || {
                    let Ok(mut b) = self.board.lock() else {
                        return Ok(());
                    };
                    let Some(d) = b.dossiers.get_mut(&ma) else {
                        return Ok(());
                    };
                    d.got.insert(env.sender.clone());
                    d.expected.is_subset(&d.got)
                };
                if complete {
                    self.finish(&ma, Outcome::Completed);
                    if managed {
                        // The centre hands the result to the citizen: status 10 to the bus
                        // (recorded, and synchronised to the national portal).
                        let original = self
                            .board
                            .lock()
                            .ok()
                            .and_then(|b| b.dossiers.get(&ma).map(|d| d.env.clone()));
                        if let Some(o) = original {
                            let mut r = Envelope::new(
                                Kind::STATUS,
                                &ma,
                                &o.ma_tthc,
                                &o.sender,
                                None,
                                &o.correlation_id,
                            );
                            r.status =
                                Some(lienthong_core::envelope::TrangThaiHoSo::RESULT_RETURNED);
                            r.payload.reason = Some("Đã trả kết quả cho công dân".into());
                            self.publish(&r).await?;
                        }
                    }
                }
                Ok(())
            }
            _ => Ok(()),
        }
    }

    /// The centre's answer to a pause: proof of payment for a payment notice (6), the requested
    /// papers for a supplement request (5).
    async fn answer_pause(&self, status: &Envelope, s: u8) -> anyhow::Result<()> {
        let original = self
            .board
            .lock()
            .ok()
            .and_then(|b| b.dossiers.get(&status.ma_ho_so).map(|d| d.env.clone()));
        let Some(o) = original else {
            return Ok(());
        };
        let mut a = Envelope::new(
            Kind::FORWARD,
            &o.ma_ho_so,
            &o.ma_tthc,
            &o.sender,
            None,
            &o.correlation_id,
        );
        a.causation_id = Some(status.message_id.clone());
        let mut data = Map::new();
        if s == 6 {
            let notice = status
                .payload
                .result
                .as_ref()
                .and_then(|r| r.get("thong_bao_nop_tien"))
                .or_else(|| {
                    status
                        .payload
                        .data
                        .as_ref()
                        .and_then(|r| r.get("thong_bao_nop_tien"))
                })
                .cloned()
                .unwrap_or(Value::Null);
            let so_thong_bao = notice
                .get("so_thong_bao")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string();
            let amount = notice
                .get("tong_so_tien_vnd")
                .and_then(Value::as_u64)
                .unwrap_or(0);
            data.insert(
                "chung_tu_nop_tien".into(),
                json!({"so_thong_bao": so_thong_bao, "so_chung_tu": format!("NT-{}", &o.ma_ho_so[o.ma_ho_so.len().saturating_sub(4)..]),
                       "ngay_nop": chrono::Local::now().format("%Y-%m-%d").to_string(), "so_tien_vnd": amount}),
            );
        } else {
            data.insert(
                "bo_sung".into(),
                json!({"noi_dung": "Công dân đã bổ sung giấy tờ theo yêu cầu", "ngay_bo_sung": chrono::Local::now().format("%Y-%m-%d").to_string()}),
            );
        }
        a.payload.data = Some(data);
        if let Ok(mut b) = self.board.lock() {
            b.answered_pauses += 1;
        }
        self.publish(&a).await
    }
}

/// How many synthetic Customs dossiers the demo adds.
const SYNTHETIC_CUSTOMS: usize = 4;

/// `n` dossiers of the synthetic procedure SYN.HQ.001 (confirm an import customs declaration),
/// filed at the provincial centre, when the registry has that procedure and a Customs unit
/// reached by an adapter. Every value is invented.
fn synthetic_customs(settings: &Settings, n: usize) -> Vec<Envelope> {
    let customs = settings.units.iter().find(|u| {
        u.roles.iter().any(|r| r == "customs")
            && matches!(u.reach, lienthong_core::registry::Reach::Adapter { .. })
    });
    let centre = settings
        .units
        .iter()
        .find(|u| u.kind == UnitKind::Centre && u.level == "province");
    let (Some(customs), Some(centre)) = (customs, centre) else {
        return Vec::new();
    };
    if !settings
        .procedures
        .iter()
        .any(|p| p.ma_tthc == "SYN.HQ.001")
    {
        return Vec::new();
    }
    let names = [
        "Trần Minh Khoa",
        "Lê Thị Hồng Nhung",
        "Phạm Quốc Việt",
        "Nguyễn Thị Thu Trang",
    ];
    (0..n)
        .map(|i| {
            let ma = format!("{}-261120-{:04}", centre.code, 9001 + i);
            let mut env = Envelope::new(
                Kind::FORWARD,
                &ma,
                "SYN.HQ.001",
                &centre.code,
                Some(&customs.code),
                &new_message_id(),
            );
            env.payload = serde_json::from_value(json!({
                "applicant": {"ho_ten": names[i % names.len()], "so_dinh_danh": format!("0510880{:05}", 1234 + i)},
                "data": {"to_khai_hai_quan": {"so_to_khai": format!("10560000{:04}", 1000 + i), "ngay_to_khai": "2026-11-18",
                                              "so_khung": format!("RLHFC1234NY{:06}", 100 + i)}}
            }))
            .unwrap_or_default();
            env
        })
        .collect()
}

/// `url` without its user and password (`scheme://host…`): the broker's default user.
fn without_user(url: &str) -> String {
    match (url.find("://"), url.find('@')) {
        (Some(s), Some(at)) if at > s => format!("{}{}", &url[..s + 3], &url[at + 1..]),
        _ => url.to_string(),
    }
}
