//! `lienthong demo`: the whole bus on the sample dossiers, as the centres' software would see
//! it. The demo starts `lienthong mock-agency` and `lienthong run` as child processes and talks
//! to them only over AMQP and HTTP: it files each dossier at its centre (most over AMQP, every
//! fourth over the HTTP API), plays the units that read their own queues (civil-status offices,
//! land registration office, Tax, the funeral-allowance department, and the centres), waits
//! until every dossier reaches a terminal outcome at its centre, prints a summary and one
//! dossier's trace, and exits non-zero if any dossier did not complete.

use std::collections::{HashMap, HashSet};
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

/// Options of `lienthong demo`.
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
    /// Land dossiers waiting at the land registration office for Tax: ma_ho_so → centre.
    land_waiting: HashMap<String, Envelope>,
    /// Results the centres sent to the national portal (their sync).
    portal_syncs: u64,
}

struct Demo {
    names: Names,
    registry: Registry,
    publisher: Publisher,
    board: Mutex<Board>,
}

fn free_port() -> anyhow::Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(l.local_addr()?.port())
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

async fn wait_http(url: &str, secs: u64) -> anyhow::Result<()> {
    let client = reqwest::Client::new();
    let until = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Ok(r) = client.get(url).send().await
            && r.status().is_success()
        {
            return Ok(());
        }
        if Instant::now() > until {
            anyhow::bail!("{url} did not answer within {secs} s");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Run the demo.
pub async fn run(
    mut settings: Settings,
    _config: Option<PathBuf>,
    args: DemoArgs,
) -> anyhow::Result<ExitCode> {
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
    let configured_mock = format!("http://{}", settings.mock.listen);
    settings.bus.prefix = args.prefix.clone();
    settings.store.path = store_path.display().to_string();
    settings.store.blob_dir = args.dir.join("blobs").display().to_string();
    settings.http.listen = format!("127.0.0.1:{http_port}");
    settings.http.public_url = None;
    settings.mock.listen = format!("127.0.0.1:{mock_port}");
    settings.mock.unavailable_rate = args.unavailable_rate;
    settings.mock.refusal_rate = args.refusal_rate;
    for u in &mut settings.units {
        if let lienthong_core::registry::Reach::Adapter { endpoint, .. } = &mut u.reach
            && let Some(rest) = endpoint.strip_prefix(configured_mock.as_str())
        {
            *endpoint = format!("http://127.0.0.1:{mock_port}{rest}");
        }
    }
    settings.check()?;
    let config_path = args.dir.join("config.toml");
    std::fs::write(
        &config_path,
        toml::to_string(&settings).context("writing the demo config")?,
    )?;
    let operator_key = settings.http.operator_key.clone().unwrap_or_default();

    eprintln!(
        "lienthong demo: {} dossiers from {} (+{n_customs} synthetic Customs dossiers), prefix {:?}, broker {}",
        samples.len() - n_customs,
        args.file.display(),
        args.prefix,
        crate::run::redact(&settings.bus.amqp_url)
    );
    // A fresh topology: the demo deletes its own prefix's queues from an earlier run.
    let conn = crate::run::connect(&settings, "demo").await?;
    let topo = Topology::plan(&settings);
    topo.delete(&conn)
        .await
        .context("cleaning the demo topology")?;
    crate::run::apply_topology(&settings, &conn).await?;

    let exe = std::env::current_exe()?;
    let _mock = spawn(
        &exe,
        &config_path,
        &["mock-agency"],
        &args.dir.join("mock-agency.log"),
        "mock-agency",
    )?;
    let _bus = spawn(
        &exe,
        &config_path,
        &["run"],
        &args.dir.join("run.log"),
        "lienthong run",
    )?;
    let base = format!("http://127.0.0.1:{http_port}");
    wait_http(&format!("http://127.0.0.1:{mock_port}/_mock/stats"), 30).await?;
    wait_http(&format!("{base}/readyz"), 60)
        .await
        .context("lienthong run did not become ready (see data/demo/run.log)")?;
    eprintln!(
        "mock agencies on 127.0.0.1:{mock_port}, bus HTTP API on {base}; logs in {}",
        args.dir.display()
    );

    let demo = Arc::new(Demo {
        names: Names::new(&settings.bus.prefix),
        registry: Registry::new(&settings),
        publisher: Publisher::new(&conn, settings.bus.confirm_timeout_ms).await?,
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
        let ch = conn.create_channel().await?;
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
    let http = reqwest::Client::new();
    let started = Instant::now();
    for (i, mut env) in samples.into_iter().enumerate() {
        env.message_id = new_message_id();
        env.correlation_id = new_message_id();
        env.sent_at = lienthong_core::clock::now_rfc3339();
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
    // The centres' results to the national portal: wait until its adapter has synced them.
    let syncs = demo.board.lock().map(|b| b.portal_syncs).unwrap_or(0);
    let portal = demo
        .registry
        .units()
        .find(|u| u.kind == UnitKind::Portal)
        .map(|u| u.code.clone());
    if let Some(portal) = &portal
        && syncs > 0
    {
        let until = Instant::now() + Duration::from_secs(30);
        while Instant::now() < until {
            let stats: Vec<UnitStats> = http
                .get(format!("{base}/v1/stats"))
                .bearer_auth(&operator_key)
                .send()
                .await?
                .json()
                .await
                .unwrap_or_default();
            let synced = stats
                .iter()
                .find(|s| &s.unit == portal)
                .map(|s| s.delivered + s.dead_lettered)
                .unwrap_or(0);
            if synced >= syncs {
                break;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
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
    let mut e2e: Vec<i64> = demo.durations();
    e2e.sort_unstable();
    println!();
    println!(
        "lienthong demo — {total} dossiers in {:.1} s: {completed} completed, {refused} refused, {dead} dead-lettered, {} unfinished",
        started.elapsed().as_secs_f64(),
        total - done
    );
    println!(
        "end to end (filed at the centre → last result back at the centre): p50 {} ms, p95 {} ms",
        fmt_ms(percentile(&e2e, 0.5)),
        fmt_ms(percentile(&e2e, 0.95))
    );
    println!();
    println!(
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
        println!(
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
    println!(
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
        println!();
        print!("{}", render_timeline(&ma, &rows));
        println!(
            "(the same with: lienthong --config {} trace {ma})",
            config_path.display()
        );
    }
    let failed: Vec<String> = demo.unfinished_or_failed();
    if !failed.is_empty() {
        println!();
        println!("not completed:");
        for f in failed.iter().take(20) {
            println!("  {f}");
        }
    }
    // The demo's queues are not needed any more (its trace stays in the store).
    drop(_bus);
    drop(_mock);
    if let Err(e) = topo.delete(&conn).await {
        eprintln!("could not delete the demo's queues: {e}");
    }
    let _ = conn.close(200, "demo done".into()).await;
    Ok(if completed == total {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn fmt_ms(v: Option<i64>) -> String {
    v.map(|x| x.to_string()).unwrap_or_else(|| "-".into())
}

fn role_unit(reg: &Registry, role: &str) -> Option<String> {
    let mut v: Vec<String> = reg
        .units()
        .filter(|u| u.roles.iter().any(|r| r == role))
        .map(|u| u.code.clone())
        .collect();
    v.sort();
    v.into_iter().next()
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

    /// The units whose results the centre waits for.
    fn expected_results(&self, env: &Envelope) -> HashSet<String> {
        let chosen: Vec<String> = env
            .payload
            .data
            .as_ref()
            .and_then(|d| d.get("thu_tuc_lua_chon"))
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        let mut out = HashSet::new();
        match env.ma_tthc.as_str() {
            "1.001193" => {
                out.extend(role_unit(&self.registry, "police_residence"));
                out.extend(role_unit(&self.registry, "social_insurance"));
            }
            "1.011537" => {
                for (choice, role) in [
                    ("xoa_thuong_tru", "police_residence"),
                    ("tro_cap_mai_tang", "funeral_allowance"),
                    ("bhxh_tu_tuat", "social_insurance"),
                ] {
                    if chosen.iter().any(|c| c == choice) {
                        out.extend(role_unit(&self.registry, role));
                    }
                }
                if out.is_empty() {
                    out.extend(env.receiver.clone());
                }
            }
            _ => {
                out.extend(env.receiver.clone());
            }
        }
        out
    }

    /// As the centre's software would: tell the national portal that the dossier's result was
    /// returned (status 10), through the bus, when the centre syncs to the portal.
    async fn sync_to_portal(&self, ma: &str) -> anyhow::Result<()> {
        let Some(portal) = self
            .registry
            .units()
            .find(|u| u.kind == UnitKind::Portal)
            .map(|u| u.code.clone())
        else {
            return Ok(());
        };
        let original = self
            .board
            .lock()
            .ok()
            .and_then(|b| b.dossiers.get(ma).map(|d| d.env.clone()));
        let Some(original) = original else {
            return Ok(());
        };
        if !self
            .registry
            .unit(&original.sender)
            .is_some_and(|u| u.syncs_to_portal)
        {
            return Ok(());
        }
        let mut r = original.reply(Kind::RESULT, &original.sender, &portal);
        r.status = Some(lienthong_core::envelope::TrangThaiHoSo::RESULT_RETURNED);
        r.payload.applicant = original.payload.applicant.clone();
        r.payload.reason = Some("Đã trả kết quả cho công dân".into());
        let mut result = Map::new();
        result.insert("trang_thai".into(), json!(10));
        result.insert(
            "noi_dung_xu_ly".into(),
            json!("Đã trả kết quả cho công dân"),
        );
        r.payload.result = Some(result);
        r.sent_at = original.sent_at.clone();
        self.publish(&r).await?;
        if let Ok(mut b) = self.board.lock() {
            b.portal_syncs += 1;
        }
        Ok(())
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
                // Prepare the information-transfer form (first field: the dossier code) and send it to Tax.
                let Some(tax) = role_unit(&self.registry, "tax") else {
                    return Ok(());
                };
                if let Ok(mut b) = self.board.lock() {
                    b.land_waiting.insert(env.ma_ho_so.clone(), env.clone());
                }
                let mut fwd = env.reply(Kind::FORWARD, unit_code, &tax);
                let mut data = Map::new();
                data.insert(
                    "phieu_chuyen_thong_tin".into(),
                    json!({"ma_ho_so": env.ma_ho_so, "thua_dat": env.payload.data.as_ref().and_then(|d| d.get("thua_dat")).cloned().unwrap_or(Value::Null),
                           "loai_bien_dong": env.payload.data.as_ref().and_then(|d| d.get("loai_bien_dong")).cloned().unwrap_or(Value::Null)}),
                );
                fwd.payload.applicant = env.payload.applicant.clone();
                fwd.payload.data = Some(data);
                self.publish(&fwd).await
            }
            // Tax's answer: a payment notice (status 6, in payload.data) or a result.
            (r, Kind::RESULT | Kind::STATUS) if r.contains(&"land_registration") => {
                let original = self
                    .board
                    .lock()
                    .ok()
                    .and_then(|mut b| b.land_waiting.remove(&env.ma_ho_so));
                let Some(original) = original else {
                    return Ok(());
                };
                let mut result = env
                    .payload
                    .result
                    .clone()
                    .or_else(|| env.payload.data.clone())
                    .unwrap_or_default();
                result.insert(
                    "noi_dung_xu_ly".into(),
                    json!("Đã cập nhật biến động; chuyển thông báo nộp tiền cho người sử dụng đất"),
                );
                self.reply_result(&original, unit_code, result).await
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
        match env.kind.as_str() {
            Kind::DEAD_LETTER => {
                self.finish(
                    &ma,
                    Outcome::DeadLettered(env.payload.reason.unwrap_or_default()),
                );
                Ok(())
            }
            Kind::STATUS
                if env.status.map(|s| s.0) == Some(3) || env.status.map(|s| s.0) == Some(8) =>
            {
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
            Kind::RESULT => {
                let is_first_step = self
                    .registry
                    .unit(&env.sender)
                    .is_some_and(|u| u.roles.iter().any(|r| r == "civil_status"));
                if is_first_step {
                    return self.forward_next_steps(&env).await;
                }
                let complete = {
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
                    self.sync_to_portal(&ma).await?;
                }
                Ok(())
            }
            _ => Ok(()),
        }
    }

    /// After the civil-status result: forward to the next steps in parallel, carrying the result.
    async fn forward_next_steps(&self, result: &Envelope) -> anyhow::Result<()> {
        let (original, expected) = {
            let Ok(b) = self.board.lock() else {
                return Ok(());
            };
            let Some(d) = b.dossiers.get(&result.ma_ho_so) else {
                return Ok(());
            };
            (d.env.clone(), d.expected.clone())
        };
        let mut targets: Vec<String> = expected
            .into_iter()
            .filter(|t| Some(t) != original.receiver.as_ref())
            .collect();
        targets.sort();
        if targets.is_empty() {
            self.finish(&result.ma_ho_so, Outcome::Completed);
            return self.sync_to_portal(&result.ma_ho_so).await;
        }
        let key = if original.ma_tthc == "1.011537" {
            "ket_qua_khai_tu"
        } else {
            "ket_qua_khai_sinh"
        };
        for t in targets {
            let mut fwd = original.clone();
            fwd.message_id = new_message_id();
            fwd.sent_at = lienthong_core::clock::now_rfc3339();
            fwd.receiver = Some(t);
            fwd.causation_id = Some(result.message_id.clone());
            let mut data = fwd.payload.data.clone().unwrap_or_default();
            data.insert(
                key.into(),
                Value::Object(result.payload.result.clone().unwrap_or_default()),
            );
            fwd.payload.data = Some(data);
            self.publish(&fwd).await?;
        }
        Ok(())
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
