//! `--console N`: the operators' console timed over HTTP against a store holding N dossiers.
//! The store is filled the way the router and tracer fill it (dossier index rows through
//! `note_in`, hash-chained trace events through `insert_events_in`, dead letters), spread over
//! 100 days; then `lienthong run --components http` serves it and each page is fetched after a
//! login: one warm-up, then `ROUNDS` timed fetches, median and slowest. Prints a Markdown table
//! (and writes it to `--out` when given); BENCHMARKS.md is not touched.

use std::time::{Duration, Instant};

use lienthong_core::store::dead_letters::{DeadLetterRecord, insert_dead_letters_in};
use lienthong_core::store::dossiers::Origin;
use lienthong_core::store::dossiers::note_in;
use lienthong_core::store::trace::insert_events_in;
use lienthong_core::store::{DossierNote, MessageWriter};
use lienthong_core::trace::{DeadLetterRow, TraceEvent, TraceEventKind};
use lienthong_testkit::procs::{HTTP_LISTENING, wait_http, wait_listening};

use crate::children::Child;
use crate::round::{Bench, CENTRE, POLICE};

/// Timed fetches per page.
const ROUNDS: usize = 5;
/// Dossiers written per transaction while filling.
const CHUNK: u64 = 2_000;
/// The days the dossiers are spread over.
const DAYS: i64 = 100;

const FAMILY: [&str; 6] = ["Nguyễn", "Trần", "Lê", "Phạm", "Huỳnh", "Võ"];
const MIDDLE: [&str; 4] = ["Thị", "Văn", "Minh", "Ngọc"];
const GIVEN: [&str; 8] = ["Đào", "An", "Bình", "Chi", "Dũng", "Hà", "Khánh", "Lan"];

/// Fill the store at `path` with `n` dossiers: each filed by the centre to Police (received,
/// routed, delivered) and answered (received, routed back), 1 in 100 also dead-lettered once.
async fn fill(path: &std::path::Path, n: u64) -> anyhow::Result<()> {
    let writer = MessageWriter::start(path)?;
    let now = chrono::Utc::now().timestamp_millis();
    let step = (DAYS * 86_400_000) / n.max(1) as i64;
    let mut i = 0u64;
    while i < n {
        let end = (i + CHUNK).min(n);
        let range = i..end;
        writer
            .transact(move |c| {
                for k in range {
                    let at = now - (n - k) as i64 * step;
                    let ma = format!("000.20.59.H48-{:06}-{:04}", 260000 + k / 10_000, k % 10_000);
                    let name = format!(
                        "{} {} {}",
                        FAMILY[(k % 6) as usize],
                        MIDDLE[(k / 6 % 4) as usize],
                        GIVEN[(k / 24 % 8) as usize]
                    );
                    let origin = Origin {
                        ma_ho_so: ma.clone(),
                        ma_tthc: "1.001193".into(),
                        origin_unit: CENTRE.into(),
                        correlation_id: format!("c-{k}"),
                    };
                    let note = DossierNote {
                        ma_ho_so: ma.clone(),
                        ma_tthc: "1.001193".into(),
                        kind: "dossier.forward".into(),
                        status: None,
                        sender: CENTRE.into(),
                        receiver: POLICE.into(),
                        applicant: Some(name),
                    };
                    note_in(c, Some(&origin), &note, at)?;
                    let result = DossierNote {
                        kind: "dossier.result".into(),
                        sender: POLICE.into(),
                        receiver: CENTRE.into(),
                        ..note.clone()
                    };
                    note_in(c, None, &result, at + 60_000)?;
                    let mut events = Vec::new();
                    for (m, from, to, kinds, t0) in [
                        (
                            format!("f-{k}"),
                            CENTRE,
                            POLICE,
                            &[
                                TraceEventKind::Received,
                                TraceEventKind::Routed,
                                TraceEventKind::Delivered,
                            ][..],
                            at,
                        ),
                        (
                            format!("r-{k}"),
                            POLICE,
                            CENTRE,
                            &[TraceEventKind::Received, TraceEventKind::Routed][..],
                            at + 60_000,
                        ),
                    ] {
                        for (j, kind) in kinds.iter().enumerate() {
                            let mut e = TraceEvent::new(*kind, "router", None).message_id(&m);
                            e.ma_ho_so = Some(ma.clone());
                            e.from = Some(from.into());
                            e.to = Some(to.into());
                            e.at_ms = t0 + j as i64 * 20;
                            e.at = lienthong_core::clock::to_rfc3339(
                                chrono::DateTime::from_timestamp_millis(e.at_ms)
                                    .unwrap_or_default(),
                            );
                            events.push(e);
                        }
                    }
                    insert_events_in(c, &events)?;
                    if k.is_multiple_of(100) {
                        let row = DeadLetterRow {
                            at: lienthong_core::clock::to_rfc3339(
                                chrono::DateTime::from_timestamp_millis(at).unwrap_or_default(),
                            ),
                            message_id: format!("d-{k}"),
                            ma_ho_so: Some(ma.clone()),
                            kind: Some("dossier.forward".into()),
                            sender: Some(CENTRE.into()),
                            receiver: Some(POLICE.into()),
                            reason_code: if k.is_multiple_of(200) {
                                "agency-refused"
                            } else {
                                "retries-exhausted"
                            }
                            .into(),
                            reason: "benchmark".into(),
                            component: Some("adapter:CA.H48".into()),
                            queue: None,
                            attempts: Some(6),
                            history: None,
                            replayed_at: None,
                            replayed_by: None,
                        };
                        insert_dead_letters_in(
                            c,
                            &[DeadLetterRecord {
                                at_ms: at,
                                row,
                                body: b"{}".to_vec(),
                            }],
                        )?;
                    }
                }
                Ok(())
            })
            .await
            .map_err(|e| anyhow::anyhow!("filling the store: {e}"))?;
        i = end;
        if i.is_multiple_of(20_000) || i == n {
            eprintln!("console: {i} of {n} dossiers in the store");
        }
    }
    Ok(())
}

/// `--console N`: fill, serve, time each page; the Markdown table.
pub(crate) async fn console(bench: &Bench, n: u64) -> anyhow::Result<String> {
    let prefix = bench.tag("console");
    let dir = bench.dir.join(&prefix);
    let s = bench.bus_settings(&prefix, &dir, None)?;
    let config = bench.bus_topology(&s, &dir).await?;
    let store = std::path::PathBuf::from(&s.store.path);
    if let Some(d) = store.parent() {
        std::fs::create_dir_all(d)?;
    }
    let t = Instant::now();
    fill(&store, n).await?;
    let fill_s = t.elapsed().as_secs_f64();
    let store_mib = std::fs::metadata(&store).map(|m| m.len()).unwrap_or(0) as f64 / 1048576.0;
    let child = Child::spawn(
        &bench.lienthong,
        Some(&config),
        &["run", "--components", "http"],
        &dir.join("run.log"),
        "lienthong run (http)",
    )?;
    let result = async {
        wait_listening(&dir.join("run.log"), HTTP_LISTENING, &s.http.listen, 60).await?;
        let base = format!("http://{}", s.http.listen);
        wait_http(&format!("{base}/readyz"), 30).await?;
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(120))
            .build()?;
        let key = s.http.operator_key.clone().unwrap_or_default();
        let login = client
            .post(format!("{base}/console/login"))
            .form(&[("user", ""), ("password", key.as_str())])
            .send()
            .await?;
        let cookie = login
            .headers()
            .get("set-cookie")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .ok_or_else(|| anyhow::anyhow!("the console login failed: {}", login.status()))?
            .to_string();
        let one = format!(
            "000.20.59.H48-{:06}-{:04}",
            260000 + n / 2 / 10_000,
            n / 2 % 10_000
        );
        let pages = [
            (
                "dossiers, first page (50 newest)",
                "/console/dossiers".to_string(),
            ),
            (
                "dossiers, search `nguyen thi dao` (no diacritics)",
                "/console/dossiers?q=nguyen+thi+dao".into(),
            ),
            (
                "dossiers, one centre's, late only",
                format!("/console/dossiers?centre={CENTRE}&late=true"),
            ),
            (
                "dossiers, a dossier code",
                format!("/console/dossiers?q={one}"),
            ),
            (
                "dossiers, page 1000",
                "/console/dossiers?offset=50000".into(),
            ),
            (
                "dossiers export (CSV, 50 rows)",
                "/console/dossiers/export?format=csv".into(),
            ),
            (
                "a dossier (hand-overs, chain check)",
                format!("/console/dossiers/{one}"),
            ),
            ("overdue", "/console/overdue".into()),
            (
                "units (last hour and day, broker queues)",
                "/console/units".into(),
            ),
            ("dead letters, waiting", "/console/dead-letters".into()),
            (
                "dead letters, one reason",
                "/console/dead-letters?reason=agency-refused&state=all".into(),
            ),
        ];
        let mut rows = Vec::new();
        for (name, path) in pages {
            let mut times = Vec::new();
            for round in 0..=ROUNDS {
                let t = Instant::now();
                let r = client
                    .get(format!("{base}{path}"))
                    .header("cookie", &cookie)
                    .send()
                    .await?;
                let status = r.status();
                let body = r.bytes().await?;
                if !status.is_success() {
                    anyhow::bail!("{path}: {status}: {}", String::from_utf8_lossy(&body));
                }
                if round > 0 {
                    times.push(t.elapsed().as_secs_f64() * 1000.0);
                }
            }
            times.sort_by(f64::total_cmp);
            rows.push((name, times[times.len() / 2], times[times.len() - 1]));
        }
        Ok::<_, anyhow::Error>(rows)
    }
    .await;
    child.term();
    child.stop().await;
    let rows = result?;
    let slowest = rows
        .iter()
        .max_by(|a, b| a.1.total_cmp(&b.1))
        .map(|r| format!("{} ({:.0} ms median)", r.0, r.1))
        .unwrap_or_default();
    let mut md = format!(
        "Console pages with {n} dossiers in the store ({} trace events, {} dead letters, spread over {DAYS} days; store {store_mib:.0} MiB, filled in {fill_s:.0} s). Each page: {ROUNDS} fetches after a warm-up, over HTTP on loopback, one at a time. Slowest: {slowest}.\n\n| page | median ms | slowest ms |\n|---|---:|---:|\n",
        n * 5,
        n.div_ceil(100)
    );
    for (name, median, max) in rows {
        md.push_str(&format!("| {name} | {median:.1} | {max:.1} |\n"));
    }
    Ok(md)
}
