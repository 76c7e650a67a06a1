//! The `lienthong` command: run the bus or parts of it, manage the topology, and the operator's
//! commands (traces, dossiers, overdue steps, control sheets, dead letters, the message store,
//! connection checks, edXML packages).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use lienthong::run::Component;
use lienthong_core::calendar::WorkCalendar;
use lienthong_core::registry::{Registry, Settings};
use lienthong_core::store::Store;
use lienthong_core::topology::Topology;

/// mimalloc instead of glibc's malloc: the bus allocates and frees many small buffers per
/// message on several threads, where glibc's malloc (its arena locks, `malloc_consolidate`)
/// took about 13 % of the process's CPU (issue 21's profile, BENCHMARKS.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "lienthong",
    version,
    about = "Integration bus for Vietnam's liên thông administrative procedures"
)]
struct Cli {
    /// Configuration file (TOML). Default: the embedded deploy/config/quang-ngai.toml.
    /// Environment overrides: LIENTHONG__<SECTION>__<KEY>, e.g. LIENTHONG__BUS__PREFIX.
    #[arg(long, short, global = true, env = "LIENTHONG_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the bus: router, adapters, tracer and HTTP API (or a subset) in this process.
    Run {
        /// Components to start (comma-separated). Default: all.
        #[arg(long, value_delimiter = ',', value_enum)]
        components: Vec<Component>,
        /// Serve this process's `/metrics` (no key) on ADDR, overriding `[http] metrics_listen`:
        /// how a process without the HTTP component is scraped (each on a port of its own).
        #[arg(long, value_name = "ADDR")]
        metrics_listen: Option<String>,
    },
    /// Declare, export or delete the AMQP topology.
    Topology {
        #[command(subcommand)]
        action: TopologyAction,
    },
    /// Print the hop timeline of a dossier from the trace store.
    Trace {
        /// Dossier code (ma_ho_so).
        ma_ho_so: String,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
        /// Write it as CSV (UTF-8 with BOM, for Excel) here.
        #[arg(long)]
        csv: Option<PathBuf>,
        /// Write it as an Excel workbook (XLSX) here.
        #[arg(long)]
        xlsx: Option<PathBuf>,
    },
    /// List dossiers, newest received first: by centre, holder, procedure, phase, lateness,
    /// dates, or words of the code or the applicant's name (without diacritics). Open or ended,
    /// run by the process manager or routed: every dossier the bus has seen.
    Dossiers {
        #[command(flatten)]
        filter: lienthong::dossier_list::ListParams,
        /// Print JSON (one page, with the total) instead of a table.
        #[arg(long)]
        json: bool,
        /// Write the page as CSV (UTF-8 with BOM, for Excel) here.
        #[arg(long)]
        csv: Option<PathBuf>,
        /// Write the page as an Excel workbook (XLSX) here.
        #[arg(long)]
        xlsx: Option<PathBuf>,
    },
    /// Where a dossier run by the process manager is: phase, who holds it, each step with its
    /// hand-over, due time and timeliness.
    Dossier {
        /// Dossier code (ma_ho_so).
        ma_ho_so: String,
        /// Print the stored state as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Hand the blocked steps of a dossier the bus runs over again, after their hand-over was
    /// dead-lettered and the cause was fixed (or the centre amended the data): new message ids,
    /// the dossier's current data, the same due times. A blocked result to the centre, cancel
    /// or portal update goes out again unchanged. (To send the very same message again, replay
    /// its dead letter: `lienthong dead-letters replay <id>`.)
    Retry {
        /// Dossier code (ma_ho_so).
        ma_ho_so: String,
        /// Only this step (its id, e.g. thuong-tru).
        #[arg(long)]
        step: Option<String>,
        /// Who retries (recorded in the trace).
        #[arg(long, env = "USER", default_value = "operator")]
        by: String,
    },
    /// Open steps and dossiers near ([process] due_soon_margin_office_hours) or past their due
    /// time, with the unit that holds each, most urgent first.
    Overdue {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// The dossier's control sheet ("Phiếu kiểm soát quá trình giải quyết hồ sơ") as HTML or
    /// PDF, rebuilt from its hand-overs and the hop log.
    ControlSheet {
        /// Dossier code (ma_ho_so).
        ma_ho_so: String,
        /// Write the PDF here.
        #[arg(long)]
        pdf: Option<PathBuf>,
        /// Write the HTML here (default: HTML on stdout when --pdf is not given).
        #[arg(long)]
        html: Option<PathBuf>,
    },
    /// List dead-lettered messages with their reasons, newest first; or replay them.
    DeadLetters {
        #[command(subcommand)]
        action: Option<DeadLettersAction>,
        /// How many.
        #[arg(long, default_value_t = 50)]
        limit: u32,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// The message store: every envelope the router accepted, kept for
    /// [store] message_retention_days.
    Messages {
        #[command(subcommand)]
        action: MessagesAction,
    },
    /// Test every configured connection (the letter's trial run): configuration, endpoint
    /// reachable, TLS handshake and certificate dates, the adapter's test call with the bus's
    /// credentials. Prints a table; exits 1 if any step fails.
    Check {
        /// Only these units (codes). Default: every unit reached by an adapter.
        units: Vec<String>,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Audit the trace: `audit verify [--from DATE] [--json]` recomputes its hash chain and
    /// checks the signed checkpoints (src/audit.rs).
    Audit {
        #[command(subcommand)]
        action: lienthong::audit::AuditAction,
    },
    /// edXML (QCVN 102:2016) packages: inspect one, or build one from an envelope.
    Edxml {
        #[command(subcommand)]
        action: EdxmlAction,
    },
    /// The store: `store migrate` brings its schema to this build's version, `store copy
    /// --to URL` copies it into another (SQLite into PostgreSQL) (src/store_cli.rs).
    Store {
        #[command(subcommand)]
        action: lienthong::store_cli::StoreAction,
    },
    /// Keys: `keys new` prints a fresh key and its hash for the configuration.
    Keys {
        #[command(subcommand)]
        action: KeysAction,
    },
    /// Print the HTTP API's OpenAPI 3.1 document (`> schemas/openapi.json`).
    Openapi,
}

#[derive(Subcommand)]
enum KeysAction {
    /// A fresh key (32 random bytes, base64url) and its `sha256:` hash.
    New {
        /// A broker password instead, with its RabbitMQ hash (`amqp_password_hash`).
        #[arg(long)]
        broker: bool,
        /// A console password for this account name instead, with its argon2 hash and the
        /// `[[console.accounts]]` entry.
        #[arg(long, value_name = "USER", conflicts_with = "broker")]
        console: Option<String>,
        /// The console account's role.
        #[arg(long, default_value = "viewer", value_parser = ["viewer", "operator"], requires = "console")]
        role: String,
    },
}

#[derive(Subcommand)]
enum EdxmlAction {
    /// Print a package as JSON (header fields, trace headers, business block, status,
    /// attachments with name, type, size and SHA-256), or a clear error with the byte position
    /// and exit 1.
    Inspect {
        /// The package file.
        file: PathBuf,
        /// Also write the decoded attachments into this directory.
        #[arg(long)]
        save_attachments: Option<PathBuf>,
    },
    /// Build the package the edXML adapter would send for an envelope (JSON file, or - for
    /// stdin), to stdout or --out.
    Build {
        /// The envelope (lienthong.envelope/1 JSON), or - for stdin.
        envelope: PathBuf,
        /// Receiving unit code (default: the envelope's receiver).
        #[arg(long)]
        to: Option<String>,
        /// Write the package here instead of stdout.
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum MessagesAction {
    /// List stored messages (ids, or a receiver since a time, or a dossier).
    List {
        #[command(flatten)]
        sel: Selection,
    },
    /// Put stored messages back on their receivers' queues (same message ids).
    Resend {
        #[command(flatten)]
        sel: Selection,
    },
}

/// Which stored messages.
#[derive(clap::Args)]
struct Selection {
    /// Message ids.
    ids: Vec<String>,
    /// Every message routed to this unit …
    #[arg(long)]
    receiver: Option<String>,
    /// … accepted at or after this RFC 3339 time.
    #[arg(long)]
    since: Option<String>,
    /// Every message of this dossier.
    #[arg(long)]
    ma_ho_so: Option<String>,
}

impl Selection {
    fn to_core(&self) -> anyhow::Result<lienthong_core::store::MessageSelection> {
        if self.ids.is_empty() && self.receiver.is_none() && self.ma_ho_so.is_none() {
            anyhow::bail!("name message ids, --receiver UNIT [--since TIME] or --ma-ho-so CODE");
        }
        let since_ms = match &self.since {
            Some(t) => Some(
                chrono::DateTime::parse_from_rfc3339(t)
                    .map_err(|e| anyhow::anyhow!("--since {t:?}: {e}"))?
                    .timestamp_millis(),
            ),
            None => None,
        };
        Ok(lienthong_core::store::MessageSelection {
            ids: self.ids.clone(),
            receiver: self.receiver.clone(),
            since_ms,
            ma_ho_so: self.ma_ho_so.clone(),
        })
    }
}

#[derive(Subcommand)]
enum DeadLettersAction {
    /// Re-inject dead-lettered messages into the ingress exchange after a fix (the router
    /// checks them again). Replaying twice has no duplicate effect.
    Replay {
        /// Message ids to replay.
        ids: Vec<String>,
        /// Replay every dead letter with this reason code (e.g. agency-refused).
        #[arg(long)]
        reason: Option<String>,
        /// Replay every dead letter.
        #[arg(long)]
        all: bool,
        /// Only count what would be replayed.
        #[arg(long)]
        dry_run: bool,
    },
}

#[derive(Subcommand)]
enum TopologyAction {
    /// Declare every exchange, queue and binding (idempotent).
    Apply,
    /// Print the topology as a RabbitMQ definitions file (JSON).
    Export {
        /// Virtual host to write into the definitions.
        #[arg(long, default_value = "/")]
        vhost: String,
    },
    /// Delete every queue and exchange of this prefix (messages in them are lost).
    Delete {
        /// Required: confirms that queued messages may be lost.
        #[arg(long)]
        yes: bool,
    },
}

/// Print to stdout, ignoring a closed pipe (`lienthong topology export | head`).
fn out(text: &str) {
    use std::io::Write;
    let mut o = std::io::stdout().lock();
    let _ = o.write_all(text.as_bytes()).and_then(|_| o.flush());
}

/// Write an export (CSV or XLSX bytes, or why they could not be made) to `path`.
fn write_export(path: &std::path::Path, bytes: Result<Vec<u8>, String>) -> anyhow::Result<()> {
    let bytes = bytes.map_err(anyhow::Error::msg)?;
    std::fs::write(path, bytes).map_err(|e| anyhow::anyhow!("writing {}: {e}", path.display()))?;
    eprintln!("wrote {}", path.display());
    Ok(())
}

/// Open the store for reading; a missing file is an error (not a new empty store).
fn open_store(settings: &Settings) -> anyhow::Result<Store> {
    let path = settings.store.location();
    if !path.exists() {
        anyhow::bail!(
            "no store at {path} (is --config the bus's configuration? [store] path is relative to the working directory)"
        );
    }
    Ok(Store::open(&path)?)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // The document depends on the code only, not on a configuration.
    if let Command::Openapi = cli.command {
        out(&lienthong::http_api::openapi::document_text());
        return ExitCode::SUCCESS;
    }
    // The configuration first, for its `[log] format`; a configuration that does not load is
    // reported by `run` below, on a text log.
    let settings = Settings::load(cli.config.as_deref());
    let format = settings.as_ref().map(|s| s.log.format).unwrap_or_default();
    lienthong::logging::init(format, "info,lapin=warn");
    // The clock offset and fail points exist only in `testing` builds: any other refuses them.
    if let Err(e) = lienthong::testing::refuse_in_production() {
        eprintln!("error: {e:#}");
        return ExitCode::FAILURE;
    }
    // Fail points from the FAILPOINTS environment variable; only a `testing` build has any.
    let _failpoints = fail::FailScenario::setup();
    // Span export for `run` when `[telemetry] otlp_endpoint` is set, installed outside the
    // runtime (its HTTP client runs on a thread of its own) and flushed after it.
    let telemetry = match (&cli.command, &settings) {
        (Command::Run { components, .. }, Ok(s)) => {
            let instance = if components.is_empty() {
                "all".to_string()
            } else {
                components
                    .iter()
                    .map(|c| format!("{c:?}").to_lowercase())
                    .collect::<Vec<_>>()
                    .join(",")
            };
            match lienthong::telemetry::init(&s.telemetry, &instance) {
                Ok(t) => t,
                Err(e) => {
                    eprintln!("error: [telemetry]: {e:#}");
                    return ExitCode::FAILURE;
                }
            }
        }
        _ => None,
    };
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let code = match rt.block_on(run(cli, settings)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    };
    drop(rt);
    if let Some(t) = telemetry {
        t.shutdown();
    }
    code
}

async fn run(
    cli: Cli,
    settings: Result<Settings, lienthong_core::registry::ConfigError>,
) -> anyhow::Result<ExitCode> {
    let settings = settings?;
    // Every procedure's data schema found, JSON Schema 2020-12, compiling, naming only its own
    // steps: a bad one stops every command here, not only `run`.
    lienthong_core::filing::FilingSchemas::load(&settings)?;
    match cli.command {
        Command::Run {
            components,
            metrics_listen,
        } => {
            let components = if components.is_empty() {
                Component::ALL.to_vec()
            } else {
                components
            };
            // SIGTERM is taken over before startup: one that arrives while the components start
            // waits for them, instead of killing the process with the default action.
            let mut term =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
            let running =
                lienthong::run::start_with_metrics(settings, &components, metrics_listen).await?;
            // A signal asks the components to stop; if they are not done within the grace
            // period (plus a margin) the process exits anyway: unacked work is redelivered.
            let stop = running.shutdown_handle();
            let hard_limit = running.grace() + std::time::Duration::from_secs(5);
            tokio::spawn(async move {
                tokio::select! {
                    _ = term.recv() => {},
                    _ = tokio::signal::ctrl_c() => {},
                }
                tracing::info!(message = "stopping: no new deliveries; finishing in-flight work");
                let _ = stop.send(true);
                tokio::time::sleep(hard_limit).await;
                tracing::error!(message = "grace period exceeded; exiting");
                std::process::exit(1);
            });
            // A component that fails (e.g. its broker connection is gone) stops the others and
            // the process exits non-zero, for the service manager to restart it.
            running.wait().await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Topology { action } => {
            let topo = Topology::plan(&settings);
            match action {
                TopologyAction::Export { vhost } => {
                    let mut defs = topo.export(&vhost);
                    defs["users"] = lienthong_core::broker_users::users(&settings).into();
                    defs["permissions"] =
                        lienthong_core::broker_users::permissions(&settings, &vhost).into();
                    out(&format!("{}\n", serde_json::to_string_pretty(&defs)?));
                }
                TopologyAction::Apply => {
                    let conn = lienthong::run::connect(&settings, "topology").await?;
                    lienthong::run::apply_topology(&settings, &conn).await?;
                    println!(
                        "topology applied: {} exchanges, {} queues, {} bindings (prefix {})",
                        topo.exchanges.len(),
                        topo.queues.len(),
                        topo.bindings.len(),
                        settings.bus.prefix
                    );
                }
                TopologyAction::Delete { yes } => {
                    if !yes {
                        anyhow::bail!(
                            "refusing to delete queues without --yes (their messages would be lost)"
                        );
                    }
                    let conn = lienthong::run::connect(&settings, "topology").await?;
                    topo.delete(&conn).await?;
                    println!(
                        "deleted {} queues and {} exchanges of prefix {}",
                        topo.queues.len(),
                        topo.exchanges.len(),
                        settings.bus.prefix
                    );
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Dossier { ma_ho_so, json } => {
            let store = open_store(&settings)?;
            let Some(p) = store.process(&ma_ho_so)? else {
                eprintln!(
                    "dossier {ma_ho_so} is not run by the process manager in {} (see `lienthong trace {ma_ho_so}`)",
                    settings.store.location()
                );
                return Ok(ExitCode::from(3));
            };
            if json {
                out(&format!("{}\n", serde_json::to_string_pretty(&p)?));
            } else {
                let cal = WorkCalendar::new(&settings.calendar).map_err(anyhow::Error::msg)?;
                let reg = Registry::new(&settings);
                out(&lienthong::dossier_view::render_dossier(
                    &p,
                    &reg,
                    &cal,
                    lienthong::process_manager::now(),
                ));
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Retry { ma_ho_so, step, by } => {
            let ctx = lienthong::run::tool_context(settings, "retry").await?;
            let pm = lienthong::process_manager::ProcessManager::new(
                ctx.clone(),
                ctx.publisher("retry", "process outbox").await?,
                ctx.tracer("retry", "trace").await?,
            );
            let r = pm.retry(&ma_ho_so, step, &by).await;
            let _ = ctx.conn.close(200, "retry done".into()).await;
            use lienthong::process_manager::RetryError;
            match r {
                Ok(()) => {}
                Err(RetryError::NotRun) => {
                    eprintln!(
                        "dossier {ma_ho_so} is not run by the process manager in {}",
                        ctx.settings.store.location()
                    );
                    return Ok(ExitCode::from(3));
                }
                Err(RetryError::NoSuchStep(why) | RetryError::NothingBlocked(why)) => {
                    eprintln!("error: {why}");
                    return Ok(ExitCode::from(3));
                }
                Err(RetryError::Failed(e)) => {
                    anyhow::bail!("the retry could not finish (run it again): {e}")
                }
            }
            if let Some(p) = ctx.store.process(&ma_ho_so)? {
                out(&lienthong::dossier_view::render_dossier(
                    &p,
                    &ctx.registry,
                    &ctx.calendar,
                    lienthong::process_manager::now(),
                ));
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Dossiers {
            filter,
            json,
            csv,
            xlsx,
        } => {
            let query = filter.to_query().map_err(anyhow::Error::msg)?;
            let store = open_store(&settings)?;
            let page = store.dossiers(&query, lienthong_core::clock::now_ms())?;
            let sheet = || lienthong::dossier_list::dossier_sheet(&page.items);
            if let Some(path) = &csv {
                write_export(path, lienthong::dossier_list::to_csv(&sheet()))?;
            }
            if let Some(path) = &xlsx {
                write_export(path, lienthong::dossier_list::to_xlsx(&sheet(), "Dossiers"))?;
            }
            if json {
                out(&format!("{}\n", serde_json::to_string_pretty(&page)?));
            } else if csv.is_none() && xlsx.is_none() {
                out(&lienthong::dossier_list::to_table(&sheet()));
            }
            let shown = page.items.len() as u64;
            if !json && page.total > u64::from(page.offset) + shown {
                eprintln!(
                    "{shown} of {} (rows {}–{}); the next page: --offset {}",
                    page.total,
                    page.offset + 1,
                    u64::from(page.offset) + shown,
                    u64::from(page.offset) + shown
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Overdue { json } => {
            let store = open_store(&settings)?;
            let cal = WorkCalendar::new(&settings.calendar).map_err(anyhow::Error::msg)?;
            let items = lienthong::process_manager::overdue_in(
                &store,
                &cal,
                settings.process.due_soon_margin_office_hours,
                lienthong::process_manager::now(),
            )?;
            if json {
                out(&format!("{}\n", serde_json::to_string_pretty(&items)?));
            } else if items.is_empty() {
                eprintln!("nothing is near or past its due time");
            } else {
                out(&lienthong::dossier_view::render_overdue(
                    &items,
                    &Registry::new(&settings),
                ));
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::ControlSheet {
            ma_ho_so,
            pdf,
            html,
        } => {
            let store = open_store(&settings)?;
            let Some(p) = store.process(&ma_ho_so)? else {
                eprintln!(
                    "dossier {ma_ho_so} is not run by the process manager in {}",
                    settings.store.location()
                );
                return Ok(ExitCode::from(3));
            };
            let trace = store.timeline(&ma_ho_so)?;
            let mut sheet = lienthong::dossier_view::control_sheet(
                &p,
                &Registry::new(&settings),
                &trace,
                lienthong::process_manager::now(),
            );
            let chain = store.verify_dossier_chain(&ma_ho_so)?;
            sheet.trace_chain = Some(lienthong::control_sheet::trace_chain_line(&chain));
            if let Some(path) = &pdf {
                let bytes = lienthong::control_sheet::render_pdf(&sheet)?;
                std::fs::write(path, bytes)?;
                eprintln!("wrote {}", path.display());
            }
            match (&html, &pdf) {
                (Some(path), _) => {
                    std::fs::write(path, lienthong::control_sheet::render_html(&sheet))?;
                    eprintln!("wrote {}", path.display());
                }
                (None, None) => out(&lienthong::control_sheet::render_html(&sheet)),
                _ => {}
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Trace {
            ma_ho_so,
            json,
            csv,
            xlsx,
        } => {
            let store = open_store(&settings)?;
            let rows = store.timeline(&ma_ho_so)?;
            let sheet = || lienthong::dossier_list::trace_sheet(&rows);
            if let Some(path) = &csv {
                write_export(path, lienthong::dossier_list::to_csv(&sheet()))?;
            }
            if let Some(path) = &xlsx {
                write_export(path, lienthong::dossier_list::to_xlsx(&sheet(), "Trace"))?;
            }
            if (csv.is_some() || xlsx.is_some()) && !json {
                return Ok(ExitCode::SUCCESS);
            }
            if json {
                out(&format!("{}\n", serde_json::to_string_pretty(&rows)?));
            } else if rows.is_empty() {
                eprintln!(
                    "no trace for dossier {ma_ho_so} in {}",
                    settings.store.location()
                );
                return Ok(ExitCode::from(3));
            } else {
                out(&lienthong_core::trace::render_timeline(&ma_ho_so, &rows));
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::DeadLetters {
            action:
                Some(DeadLettersAction::Replay {
                    ids,
                    reason,
                    all,
                    dry_run,
                }),
            ..
        } => {
            if ids.is_empty() && reason.is_none() && !all {
                anyhow::bail!("name message ids, --reason CODE or --all");
            }
            let filter = lienthong::replay::Filter {
                ids: ids.clone(),
                reason_code: reason,
                all,
            };
            let writer = lienthong_core::store::MessageWriter::start(settings.store.location())?;
            let who = lienthong::replay::Replayer {
                writer: &writer,
                by: format!(
                    "cli:{}",
                    std::env::var("USER")
                        .or_else(|_| std::env::var("LOGNAME"))
                        .unwrap_or_else(|_| "unknown".into())
                ),
                component: "cli",
            };
            let report = lienthong::replay::replay(&settings, &filter, dry_run, &who).await?;
            if let Some(e) = &report.unrecorded {
                eprintln!("the replay is done but could not be recorded in the store: {e}");
            }
            out(&format!(
                "examined {} of {} dead letter(s): {} {}, kept {}{}\n",
                report.examined,
                report.total,
                if dry_run { "would replay" } else { "replayed" },
                report.replayed.len(),
                report.kept,
                if dry_run { " (dry run)" } else { "" }
            ));
            for id in &report.replayed {
                out(&format!(
                    "{} {id}\n",
                    if dry_run { "would replay" } else { "replayed" }
                ));
            }
            // An id that is not in the dead-letter queue (mistyped, or replayed already) is
            // said, and the exit code says it too.
            let missing: Vec<&String> = ids
                .iter()
                .filter(|id| !report.replayed.contains(id))
                .collect();
            for id in &missing {
                eprintln!(
                    "not in the dead-letter queue: {id} (replayed already, or not a dead letter's id; `lienthong dead-letters` lists them)"
                );
            }
            if !missing.is_empty() {
                return Ok(ExitCode::from(3));
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::DeadLetters {
            action: None,
            limit,
            json,
        } => {
            let store = open_store(&settings)?;
            let rows = store.dead_letters(limit)?;
            if json {
                out(&format!("{}\n", serde_json::to_string_pretty(&rows)?));
            } else {
                let total = store.dead_letter_count()?;
                let mut text = format!(
                    "{total} dead-lettered message(s); showing the newest {}\n",
                    rows.len()
                );
                for r in rows {
                    text.push_str(&format!(
                        "{}  {}  dossier {}  {} → {}  [{}] {}\n",
                        r.at,
                        r.message_id,
                        r.ma_ho_so.as_deref().unwrap_or("-"),
                        r.sender.as_deref().unwrap_or("-"),
                        r.receiver.as_deref().unwrap_or("-"),
                        r.reason_code,
                        r.reason
                    ));
                    if let Some(at) = &r.replayed_at {
                        text.push_str(&format!(
                            "    replayed {at} by {}\n",
                            r.replayed_by.as_deref().unwrap_or("-")
                        ));
                    }
                }
                out(&text);
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Messages { action } => match action {
            MessagesAction::List { sel } => {
                let store = open_store(&settings)?;
                let rows = store.stored_messages(&sel.to_core()?)?;
                let mut text = format!("{} stored message(s)\n", rows.len());
                for m in rows {
                    let at = chrono::DateTime::from_timestamp_millis(m.accepted_at_ms)
                        .map(lienthong_core::clock::to_rfc3339)
                        .unwrap_or_default();
                    text.push_str(&format!(
                        "{at}  {}  {}  {} → {}  dossier {}\n",
                        m.message_id, m.kind, m.sender, m.receiver, m.ma_ho_so
                    ));
                }
                out(&text);
                Ok(ExitCode::SUCCESS)
            }
            MessagesAction::Resend { sel } => {
                let ids = lienthong::replay::resend(&settings, &sel.to_core()?).await?;
                out(&format!("resent {} message(s)\n", ids.len()));
                Ok(ExitCode::SUCCESS)
            }
        },
        Command::Check { units, json } => {
            let rows = lienthong::check::check(&settings, &units).await?;
            Ok(lienthong::check::report(&rows, json))
        }
        Command::Keys {
            action:
                KeysAction::New {
                    broker,
                    console,
                    role,
                },
        } => {
            match console {
                Some(user) => out(&lienthong::keys::console_account(&user, &role)?),
                None => out(&lienthong::keys::new(broker)?),
            }
            Ok(ExitCode::SUCCESS)
        }
        // Printed by `main`, before any configuration is read.
        Command::Openapi => Ok(ExitCode::SUCCESS),
        Command::Audit { action } => lienthong::audit::run(&settings, &action),
        Command::Store { action } => lienthong::store_cli::run(&settings, &action),
        Command::Edxml { action } => Ok(match action {
            EdxmlAction::Inspect {
                file,
                save_attachments,
            } => lienthong::edxml_cli::inspect(&file, save_attachments.as_deref()),
            EdxmlAction::Build { envelope, to, out } => {
                lienthong::edxml_cli::build(&settings, &envelope, to.as_deref(), out.as_deref())
            }
        }),
    }
}
