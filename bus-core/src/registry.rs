//! Settings and the registry: the units of the province (code, name, kind, level, parent, how
//! each is reached) and the catalogue of liên thông procedures (routes as steps, deadlines,
//! eligibility). Units, levels and parents are data, so the 2017 three-level structure and
//! the 2025 two-tier structure are both just configuration.

use std::collections::{HashMap, HashSet};
use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// The registry shipped as the embedded default (`deploy/config/quang-ngai.toml`).
pub const DEFAULT_CONFIG: &str = include_str!("../../deploy/config/quang-ngai.toml");

/// Errors loading or checking the configuration. Each names the file, unit or procedure at fault.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read or parsed.
    #[error("cannot load configuration: {0}")]
    Load(String),
    /// The configuration parsed but is inconsistent.
    #[error("configuration is inconsistent: {0}")]
    Invalid(String),
}

/// Everything `lienthong` reads from its configuration file.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Settings {
    /// Broker connection and naming.
    #[serde(default)]
    pub bus: BusSettings,
    /// Envelope limits and patterns.
    #[serde(default)]
    pub envelope: EnvelopeSettings,
    /// Queue arguments and prefetch.
    #[serde(default)]
    pub topology: TopologySettings,
    /// HTTP API.
    #[serde(default)]
    pub http: HttpSettings,
    /// Embedded store (trace, dossier origins, adapter deliveries).
    #[serde(default)]
    pub store: StoreSettings,
    /// `[trace]`: the signed checkpoints of the trace's hash chain.
    #[serde(default)]
    pub trace: TraceSettings,
    /// In-process retries of agency calls.
    #[serde(default)]
    pub retry: RetrySettings,
    /// `[mock]`: the mock agencies' behaviour (`lienthong-mock`, testkit/); the bus reads
    /// nothing from it.
    #[serde(default)]
    pub mock: MockSettings,
    /// The working-day calendar (office hours, holidays, the years' announcements).
    #[serde(default)]
    pub calendar: crate::calendar::CalendarSettings,
    /// `[process]`: the process manager (overdue alerts).
    #[serde(default)]
    pub process: ProcessSettings,
    /// `[console]`: the operators' web console's accounts.
    #[serde(default)]
    pub console: crate::console_settings::ConsoleSettings,
    /// `[log]`: how the process writes its log.
    #[serde(default)]
    pub log: LogSettings,
    /// `[telemetry]`: distributed tracing export over OTLP (off by default).
    #[serde(default)]
    pub telemetry: crate::telemetry::TelemetrySettings,
    /// The units of the province.
    #[serde(default)]
    pub units: Vec<Unit>,
    /// The procedure catalogue.
    #[serde(default)]
    pub procedures: Vec<Procedure>,
    /// Where these settings came from, which says where `[[procedures]] data_schema` is read
    /// ([`crate::filing`]). Not a setting: [`Settings::load`] sets it.
    #[serde(skip)]
    pub source: ConfigSource,
}

/// `[log]`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogSettings {
    /// `text` (default: one human-readable line per event) or `json` (one JSON object per
    /// line, for a log collector: `timestamp`, `level`, `target`, `message` and the event's
    /// fields — `ma_ho_so`, `message_id`, `unit`, … where the event has them).
    pub format: LogFormat,
}

/// The log's line format.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// JSON lines.
    Json,
}

/// Where the configuration came from: it says where a procedure's `data_schema` is read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum ConfigSource {
    /// The embedded default (`deploy/config/quang-ngai.toml` compiled in), or TOML given as text:
    /// `data_schema` names one of the copies of `schemas/procedures/` compiled into the binary
    /// ([`crate::filing::EMBEDDED`]).
    #[default]
    Embedded,
    /// A file (`--config FILE`, the path kept for messages): `data_schema` is read from disk.
    /// Every relative path the file holds (`[store] path` and `blob_dir`, `data_schema`, a
    /// unit's `connection` `ca_bundle` / `client_cert` / `client_key`, `[http] tls_cert` / `tls_key`) was resolved against the
    /// file's directory when it was loaded ([`Settings::resolve_paths`]).
    File(std::path::PathBuf),
}

/// `[bus]`: broker connection and naming.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct BusSettings {
    /// Prefix of every exchange and queue name (default `lienthong`). Tests use their own.
    pub prefix: String,
    /// AMQP URI of the broker, with the bus's own broker user (default
    /// `amqp://lienthong@127.0.0.1:5672/%2f`; the password in `amqp_password`).
    pub amqp_url: String,
    /// The bus's broker password, where `amqp_url` should not hold it: `env:NAME` or
    /// `file:PATH` (or the password itself). Put into `amqp_url` when the settings are loaded.
    pub amqp_password: Option<String>,
    /// The hash of the bus's broker password in RabbitMQ's definitions format (`lienthong keys
    /// new --broker` prints one), for `lienthong topology export` to create the bus's user;
    /// without it the user is exported with no password (client certificate only).
    pub amqp_password_hash: Option<String>,
    /// PEM file of the certificate authorities that sign the broker's certificate, for an
    /// `amqps://` URL (default: the system's roots).
    pub tls_ca: Option<String>,
    /// PEM file of the bus's client certificate, for a broker that asks for one (with
    /// `?auth_mechanism=external` in the URL the broker takes the user from it).
    pub tls_client_cert: Option<String>,
    /// PEM file of that certificate's private key (PKCS#8).
    pub tls_client_key: Option<String>,
    /// Allow a plain `amqp://` broker that is not on loopback (default false: `lienthong run`
    /// refuses it, since messages carry citizens' data). When set, every start logs a warning.
    pub insecure: bool,
    /// The other nodes of the broker's cluster, `host:port` each (default none). The bus
    /// connects to the first that answers of `amqp_url`'s node and then these, in order, with
    /// the same user, password, virtual host and TLS settings; a connection lost is made again
    /// the same way, so a node's loss moves the bus to another node.
    pub nodes: Vec<String>,
    /// How long a publisher confirm may take before the publish counts as failed, ms.
    pub confirm_timeout_ms: u64,
    /// Grace period after SIGTERM for in-flight work, ms.
    pub shutdown_grace_ms: u64,
}

impl BusSettings {
    /// Why the broker link may not be used as configured: a plain `amqp://` URL whose host is
    /// not loopback (`127.0.0.0/8`, `::1`, `localhost`), unless `insecure` is set. `None`: fine.
    pub fn transport_problem(&self) -> Option<String> {
        self.urls().iter().find_map(|url| {
            let uri: lapin::uri::AMQPUri = url.parse().ok()?;
            if uri.scheme == lapin::uri::AMQPScheme::AMQPS || self.insecure {
                return None;
            }
            let host = uri.authority.host.trim_matches(['[', ']']).to_string();
            (!crate::loopback::is_loopback_host(&host)).then(|| {
                format!(
                    "the broker {host} is reached over plain amqp:// (unencrypted) and is not on this machine: use amqps:// with [bus] tls_ca, or set [bus] insecure = true to accept it"
                )
            })
        })
    }

    /// The URLs of every node the bus may connect to, in the order it tries them: `amqp_url`,
    /// then `amqp_url` with each of `nodes` as its `host:port`.
    pub fn urls(&self) -> Vec<String> {
        let mut out = vec![self.amqp_url.clone()];
        for node in &self.nodes {
            if let Some(u) = with_authority(&self.amqp_url, node.trim()) {
                out.push(u);
            }
        }
        out
    }

    /// The broker user the bus connects as (the user of `amqp_url`; RabbitMQ's default
    /// `guest` when the URL names none). `None` when the URL does not parse (the connection
    /// then fails with the reason).
    pub fn user(&self) -> Option<String> {
        let uri: lapin::uri::AMQPUri = self.amqp_url.parse().ok()?;
        Some(uri.authority.userinfo.username)
    }
}

/// `url` (`scheme://[user[:password]@]host[:port][/vhost][?query]`) with `host:port` in place
/// of its own. None when `url` has no `://`.
fn with_authority(url: &str, host_port: &str) -> Option<String> {
    let (scheme, rest) = url.split_once("://")?;
    let end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    let userinfo = authority.rsplit_once('@').map(|(u, _)| u);
    Some(match userinfo {
        Some(u) => format!("{scheme}://{u}@{host_port}{tail}"),
        None => format!("{scheme}://{host_port}{tail}"),
    })
}

impl Default for BusSettings {
    fn default() -> Self {
        BusSettings {
            prefix: "lienthong".into(),
            amqp_url: "amqp://lienthong@127.0.0.1:5672/%2f".into(),
            amqp_password: None,
            amqp_password_hash: None,
            tls_ca: None,
            tls_client_cert: None,
            tls_client_key: None,
            insecure: false,
            nodes: Vec::new(),
            confirm_timeout_ms: 15_000,
            shutdown_grace_ms: 10_000,
        }
    }
}

/// `[envelope]`: limits and patterns applied at ingress.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct EnvelopeSettings {
    /// Regex every `ma_ho_so` must match (dossier codes are opaque; shapes differ per issuer).
    pub ma_ho_so_pattern: String,
    /// Largest accepted envelope, bytes (default 64 MiB: a 20 MB scan in base64 fits).
    pub max_envelope_bytes: usize,
    /// Inline attachments larger than this (decoded), bytes (default 256 KiB), are moved to
    /// the claim-check store at ingress; the envelope then carries their reference.
    pub max_inline_attachment_bytes: usize,
    /// Hard cap on one attachment (decoded), bytes (default 50 MiB): larger is refused.
    pub max_attachment_bytes: usize,
    /// Deepest nesting of JSON objects and arrays an envelope may have, levels (default 32;
    /// the envelope itself is level 1): deeper is refused before any JSON value is built.
    pub max_json_depth: usize,
    /// Most JSON nodes (objects, arrays and their elements) an envelope may have (default
    /// 100 000): more is refused before any JSON value is built.
    pub max_json_nodes: usize,
    /// How far in the past `payload.data.ngay_tiep_nhan` (the filing date the due times start
    /// from) may lie, days before now (default 400).
    pub date_window_days_back: u32,
    /// How far in the future `payload.data.ngay_tiep_nhan` may lie, days after now (default 1).
    pub date_window_days_ahead: u32,
}

impl Default for EnvelopeSettings {
    fn default() -> Self {
        EnvelopeSettings {
            ma_ho_so_pattern: r"^[A-Za-z0-9][A-Za-z0-9._-]{0,34}-[0-9]{6,8}-[0-9]{4,8}$".into(),
            max_envelope_bytes: 64 * 1024 * 1024,
            max_inline_attachment_bytes: 256 * 1024,
            max_attachment_bytes: 50 * 1024 * 1024,
            max_json_depth: 32,
            max_json_nodes: 100_000,
            date_window_days_back: 400,
            date_window_days_ahead: 1,
        }
    }
}

/// `[topology]`: queue arguments and prefetch.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct TopologySettings {
    /// `x-delivery-limit` of every work queue. On RabbitMQ 3.x every return counts (consumer
    /// crash, closed channel, timeout), so it is set high: it exists to stop a true poison loop.
    pub delivery_limit: u32,
    /// Prefetch (unacked deliveries) of the router: 500. The router's per-message latency is
    /// its store commit plus the publish confirm, so what it moves is bounded by prefetch ÷
    /// latency: at 64 it moved ~3,000 msg/s here where 500 moved ~3,900, with fewer bytes
    /// written per message (bigger group commits); issue 21, BENCHMARKS.md.
    pub router_prefetch: u16,
    /// Prefetch of each adapter consumer.
    pub adapter_prefetch: u16,
    /// Prefetch of the tracer.
    pub tracer_prefetch: u16,
    /// How often each `lienthong run` process declares the whole topology again, ms (0: never):
    /// an exchange, queue or binding deleted while nothing published to it comes back, and one
    /// declared with other arguments makes `/readyz` answer 503 naming it, within this time.
    pub check_ms: u64,
    /// `x-max-length` of each unit's queue, messages (default 1 000 000; a unit's
    /// `max_queue_length` overrides it). Past it the broker refuses publishes to that queue
    /// (`x-overflow = reject-publish`) and the router parks them (`queue-full`).
    pub unit_max_length: u64,
    /// `x-max-length-bytes` of each unit's queue, bytes of message bodies (default 4 GiB; a
    /// unit's `max_queue_bytes` overrides it).
    pub unit_max_length_bytes: u64,
    /// `x-quorum-initial-group-size` of every queue: how many nodes of a RabbitMQ cluster hold
    /// a replica of it (default unset: RabbitMQ's own, every node up to 7). Three of a
    /// three-node cluster survive the loss of one; set it before the queues are first declared
    /// (it does not move existing replicas: `rabbitmq-queues grow` does).
    pub quorum_initial_group_size: Option<u32>,
}

impl TopologySettings {
    /// The (`x-max-length`, `x-max-length-bytes`) of `unit`'s queue: its own override, else
    /// `[topology] unit_max_length` / `unit_max_length_bytes`.
    pub fn unit_queue_limits(&self, unit: &Unit) -> (u64, u64) {
        (
            unit.max_queue_length.unwrap_or(self.unit_max_length),
            unit.max_queue_bytes.unwrap_or(self.unit_max_length_bytes),
        )
    }
}

impl Default for TopologySettings {
    fn default() -> Self {
        TopologySettings {
            delivery_limit: 50,
            router_prefetch: 500,
            adapter_prefetch: 16,
            tracer_prefetch: 500,
            check_ms: 30_000,
            unit_max_length: 1_000_000,
            unit_max_length_bytes: 4 * 1024 * 1024 * 1024,
            quorum_initial_group_size: None,
        }
    }
}

/// `[http]`: the HTTP API.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct HttpSettings {
    /// Listen address (default `127.0.0.1:8480`; port 0 picks a free one). An address that is
    /// not loopback needs `tls_cert` and `tls_key`, or `insecure = true`.
    pub listen: String,
    /// Base URL agencies use for callbacks; defaults to `http://<listen address>` (`https://`
    /// with TLS).
    pub public_url: Option<String>,
    /// Key for the read endpoints (trace, dead letters, stats) and `/metrics`.
    pub operator_key: Option<String>,
    /// PEM file of the server's certificate chain: with `tls_key`, the API speaks HTTPS only.
    /// Relative to the configuration file's directory; read again on SIGHUP and when the file
    /// changes.
    pub tls_cert: Option<String>,
    /// PEM file of the certificate's private key (PKCS#8, PKCS#1 or SEC1).
    pub tls_key: Option<String>,
    /// Allow plain HTTP on an address that is not loopback (a warning is logged at every
    /// start). Default false: `lienthong run` refuses to start.
    pub insecure: bool,
    /// When set, `/metrics` is served on this address too, without a key (keep it on a
    /// loopback or monitoring-only address); on `listen` it always needs the operator key.
    pub metrics_listen: Option<String>,
    /// Largest body of an agency callback (`POST /v1/callbacks/{unit}`), bytes (default 1 MiB).
    /// `POST /v1/messages` takes up to `[envelope] max_envelope_bytes`.
    pub max_callback_bytes: usize,
    /// Largest body of the other POSTs (an edXML acknowledgement, an operator's retry), bytes
    /// (default 1 MiB).
    pub max_small_body_bytes: usize,
    /// Requests served at once; more are answered 503 with Retry-After (default 256).
    pub max_concurrent_requests: usize,
    /// The longest a request may take, body upload included, ms (default 120000); then 503.
    pub request_timeout_ms: u64,
    /// The longest a client may take to send a request's headers, ms (default 10000); then
    /// the connection is closed (a TLS handshake gets as long).
    pub header_read_timeout_ms: u64,
    /// Requests per second allowed to each unit or agency key, sustained (default 100).
    pub rate_per_s: u32,
    /// Requests a unit or agency key may send at once above the sustained rate (default 1000).
    pub rate_burst: u32,
    /// Requests per second allowed to the operator key (default 20).
    pub operator_rate_per_s: u32,
    /// Burst of the operator key (default 100).
    pub operator_rate_burst: u32,
}

impl Default for HttpSettings {
    fn default() -> Self {
        HttpSettings {
            listen: "127.0.0.1:8480".into(),
            public_url: None,
            operator_key: None,
            tls_cert: None,
            tls_key: None,
            insecure: false,
            metrics_listen: None,
            max_callback_bytes: 1024 * 1024,
            max_small_body_bytes: 1024 * 1024,
            max_concurrent_requests: 256,
            request_timeout_ms: 120_000,
            header_read_timeout_ms: 10_000,
            rate_per_s: 100,
            rate_burst: 1000,
            operator_rate_per_s: 20,
            operator_rate_burst: 100,
        }
    }
}

/// `[store]`: where the store lives (an embedded SQLite file by default, or PostgreSQL) and how
/// long it keeps what.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct StoreSettings {
    /// The store: `postgres://user[:password]@host:port/db?sslmode=require` (libpq's URL form;
    /// keep the URL with its password out of the file: `LIENTHONG__STORE__URL` in the service's
    /// environment file, docs/deploy.md), or `sqlite:<path>`. Empty (the default): the SQLite
    /// file `path`. A server not on this machine needs `sslmode=require`.
    pub url: String,
    /// SQLite file when `url` is empty (default `data/lienthong.db`, relative to the working
    /// directory).
    pub path: String,
    /// Directory of the claim-check blob store (default `data/blobs`).
    pub blob_dir: String,
    /// How long the message store keeps accepted envelopes, days (default 90).
    pub message_retention_days: u32,
    /// How long the process manager's outbox keeps an envelope after the broker confirmed it,
    /// days (default 90, as the message store, which keeps a copy of each). Only dossiers
    /// that are no longer running or paused and have no blocked message are swept: a running
    /// dossier's envelopes may be published again (a replayed dead letter, an operator's retry).
    pub process_outbox_retention_days: u32,
    /// How long the edXML outbox keeps a package after the department acknowledged it (`done`)
    /// or it failed, days (default 30; its envelope stays in the message store).
    pub edxml_outbox_retention_days: u32,
    /// Components write their trace events straight into this store, in their process's group
    /// commit (one writer thread per `lienthong run`), instead of publishing them to the fanout
    /// exchange `<prefix>.trace` for the tracer to store (default true: no trace message
    /// through the broker). Either way an event is stored before the delivery it describes is
    /// acked. Set false when something outside lienthong reads the events from the trace
    /// exchange.
    pub trace_direct: bool,
    /// How long the store's writer, under load (two writes or more queued when it wakes), waits
    /// for more writes before it commits, milliseconds (default 1; 0 to 100). A lone write
    /// commits at once. Every commit rewrites the last page of each table and index it touches,
    /// so a longer wait writes fewer bytes and spends less CPU per message, and each message of
    /// a busy store waits up to this much longer: 4 wrote 11 % fewer bytes per dossier on the
    /// HTTP-adapter path and spent 7 % less CPU, and put the paced p99 at 1,000 msg/s 2–5 ms
    /// higher (20–27 ms against 18–19 ms) on a 2-CPU machine (BENCHMARKS.md). It trades latency
    /// only: a write is answered after its commit either way.
    pub commit_delay_ms: u32,
    /// How long a lone write waits for others before it commits when writes have been arriving
    /// steadily, each between 0.25 ms and this long after the writer answered the last batch,
    /// milliseconds (default 3; 0 to 100; 0: a lone write commits at once, whatever
    /// `commit_delay_ms` says). At a steady rate too low for writes to queue, every commit would
    /// otherwise carry one write: at a paced 1,000 msg/s, 3 wrote 21 % fewer bytes and spent
    /// 20 % less CPU per message than 0, with the median latency 1.1 ms higher and the p99 no
    /// higher, on a 2-CPU machine (BENCHMARKS.md, 2026-12-07 (late morning)). A write after a
    /// quiet spell commits at once. So does a caller that writes one at a time and writes again
    /// at once; one that works between its writes has its first few, then one in 16, wait, as
    /// their waits gather no company (two writes or more). It trades latency only.
    pub steady_commit_delay_ms: u32,
    /// How the message store keeps the envelopes' bodies: `"zstd"` (the default: compressed,
    /// zstd level 1, when that makes a body smaller) or `"none"` (as routed). It trades CPU
    /// only (BENCHMARKS.md, 2026-12-06 (night)); every body reads back byte for byte. Changing
    /// it applies to the bodies written from then on; both kinds read back.
    pub message_compression: crate::store::BodyCompression,
}

/// Largest `[store] commit_delay_ms` and `steady_commit_delay_ms`, milliseconds.
pub const MAX_COMMIT_DELAY_MS: u32 = 100;

impl StoreSettings {
    /// Where the store lives: `url` when set, else the SQLite file `path`.
    pub fn location(&self) -> crate::store::StoreLocation {
        if self.url.trim().is_empty() {
            crate::store::StoreLocation::Sqlite(self.path.clone().into())
        } else {
            crate::store::StoreLocation::parse(&self.url)
        }
    }
}

impl Default for StoreSettings {
    fn default() -> Self {
        StoreSettings {
            url: String::new(),
            path: "data/lienthong.db".into(),
            blob_dir: "data/blobs".into(),
            message_retention_days: 90,
            process_outbox_retention_days: 90,
            edxml_outbox_retention_days: 30,
            trace_direct: true,
            commit_delay_ms: 1,
            steady_commit_delay_ms: 3,
            message_compression: crate::store::BodyCompression::Zstd,
        }
    }
}

/// `[trace]`: the trace's hash chain (`store/chain.rs`) is always computed; these settings are
/// about its signed checkpoints.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct TraceSettings {
    /// The Ed25519 key that signs the checkpoints: `file:/path` or a path (PKCS#8 PEM as
    /// `openssl genpkey -algorithm ed25519` writes it, or 32 bytes raw, hex or base64). None:
    /// checkpoints are written unsigned (a warning at start; `lienthong audit verify` says so).
    pub signing_key: Option<String>,
    /// Seconds between two checkpoints of the store head, written by the tracer component when
    /// the head has moved (default 60).
    pub checkpoint_interval_secs: u64,
}

impl Default for TraceSettings {
    fn default() -> Self {
        TraceSettings {
            signing_key: None,
            checkpoint_interval_secs: 60,
        }
    }
}

/// `[retry]`: in-process retries of transient agency failures (backon, exponential, jitter).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct RetrySettings {
    /// First delay, ms.
    pub min_delay_ms: u64,
    /// Largest in-process delay, ms. A longer Retry-After sends the message to a delayed retry
    /// queue instead.
    pub max_delay_ms: u64,
    /// Growth factor per attempt.
    pub factor: f32,
    /// In-process retries after the first attempt (a short budget: the delivery stays unacked
    /// meanwhile). Then the message waits in a delayed retry queue.
    pub max_retries: usize,
    /// Delayed retry steps, ms: after the in-process budget, the n-th wait uses
    /// `delays_ms[min(n, len - 1)]` in queue `<prefix>.retry.<ms>` (one queue per step:
    /// quorum-queue TTL expires only at the head). Nothing stays unacked meanwhile.
    pub delays_ms: Vec<u64>,
    /// Delayed retries before the message is dead-lettered with its full reason history.
    pub max_delayed_attempts: u32,
    /// Age (since the first attempt) after which a failing message is dead-lettered, ms.
    pub max_age_ms: u64,
    /// Unreadable answers (a 2xx whose body is not the agency's answer, in a delivery attempt or
    /// a status lookup) for one message, over all its rounds, after which an operator is
    /// alerted (trace event `alert`, log, metric, webhook) with an excerpt of the answer; the
    /// delivery keeps retrying. At least 1.
    pub unreadable_alert_after: u32,
}

impl Default for RetrySettings {
    fn default() -> Self {
        RetrySettings {
            min_delay_ms: 100,
            max_delay_ms: 5_000,
            factor: 2.0,
            max_retries: 5,
            delays_ms: vec![10_000, 60_000, 300_000, 1_800_000],
            max_delayed_attempts: 100,
            max_age_ms: 172_800_000,
            unreadable_alert_after: 3,
        }
    }
}

/// `[process]`: the process manager's overdue alerts.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ProcessSettings {
    /// How often open dossiers are checked against their due times, ms.
    pub scan_ms: u64,
    /// A step or dossier within this much office time of its due time is `due_soon`, hours
    /// (office hours of `[calendar]`, not wall-clock hours).
    pub due_soon_margin_office_hours: f64,
    /// Optional webhook: each new alert is POSTed there as JSON (an `OverdueItem`).
    pub webhook_url: Option<String>,
    /// Webhook timeout, ms.
    pub webhook_timeout_ms: u64,
}

impl Default for ProcessSettings {
    fn default() -> Self {
        ProcessSettings {
            scan_ms: 30_000,
            due_soon_margin_office_hours: 4.0,
            webhook_url: None,
            webhook_timeout_ms: 5_000,
        }
    }
}

/// `[mock]`: behaviour of the mock agencies (`lienthong-mock`, testkit/; loopback only).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct MockSettings {
    /// Listen address (default `127.0.0.1:8490`).
    pub listen: String,
    /// Smallest answer latency, ms.
    pub latency_min_ms: u64,
    /// Largest answer latency, ms.
    pub latency_max_ms: u64,
    /// Share of submits answered 503 with Retry-After (0.0–1.0).
    pub unavailable_rate: f64,
    /// Delay before the result callback, ms.
    pub callback_delay_ms: u64,
    /// Share of dossiers the agency refuses (callback with status 3).
    pub refusal_rate: f64,
    /// PEM certificate chain: with `tls_key`, the mock agencies speak HTTPS only (the demo
    /// makes its own CA, testkit/src/tls.rs).
    pub tls_cert: Option<String>,
    /// PEM private key of `tls_cert`.
    pub tls_key: Option<String>,
    /// PEM CA the mock's callbacks to the bus trust (instead of the system's roots).
    pub ca_bundle: Option<String>,
}

impl Default for MockSettings {
    fn default() -> Self {
        MockSettings {
            listen: "127.0.0.1:8490".into(),
            latency_min_ms: 5,
            latency_max_ms: 60,
            unavailable_rate: 0.1,
            callback_delay_ms: 300,
            refusal_rate: 0.0,
            tls_cert: None,
            tls_key: None,
            ca_bundle: None,
        }
    }
}

/// Kind of unit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UnitKind {
    /// A one-stop centre (Trung tâm Hành chính công / Phục vụ hành chính công): receives dossiers.
    Centre,
    /// A provincial department or board (sở, ban, ngành) or a People's Committee office.
    Department,
    /// A vertical agency (Police, Social Insurance, Tax, Customs).
    VerticalAgency,
    /// An office under a department or a People's Committee (civil-status, land registration).
    Office,
    /// A People's Committee (UBND) at any level.
    Committee,
    /// The National Public Service Portal (DVCQG): dossiers' progress is synchronised to it; the
    /// router never routes a dossier to it.
    Portal,
}

/// The keys of an adapter unit's `settings` that hold secrets (`env:`/`file:` allowed).
pub const SECRET_SETTINGS: [&str; 5] = [
    "password",
    "client_secret",
    "token",
    "api_key",
    "webhook_secret",
];

/// `url` with its password replaced by `password` (percent-encoded); `None` when the URL
/// names no user (`scheme://user[:old]@host…`).
fn with_password(url: &str, password: &str) -> Option<String> {
    let start = url.find("://")? + 3;
    let at = start + url[start..].find('@')?;
    let user = url[start..at].split(':').next()?;
    let enc: String = password
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect();
    Some(format!("{}{user}:{enc}{}", &url[..start], &url[at..]))
}

/// The keys of a unit's `[units.reach.settings.connection]` that name files.
const CONNECTION_FILES: [&str; 3] = ["ca_bundle", "client_cert", "client_key"];

/// How the bus reaches a unit.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Reach {
    /// The unit's own software consumes `<prefix>.unit.<code>` itself.
    Amqp,
    /// An adapter of the bus consumes the unit's queue and calls the unit's system.
    Adapter {
        /// Adapter name (`police-rest`, `bhxh-xml`).
        adapter: String,
        /// Base URL of the agency's system.
        endpoint: String,
        /// Timeout of one call, ms.
        #[serde(default = "default_timeout_ms")]
        timeout_ms: u64,
        /// Key the agency presents (Bearer) when it calls the bus back with a result.
        #[serde(default)]
        callback_key: Option<String>,
        /// The agency's next callback key during a rotation, accepted beside `callback_key`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        callback_key_next: Option<String>,
        /// Adapter-specific settings.
        #[serde(default)]
        settings: Map<String, Value>,
    },
}

fn yes() -> bool {
    true
}

fn default_timeout_ms() -> u64 {
    10_000
}

/// A unit: a body that sends or receives dossiers.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Unit {
    /// Electronic identification code (Decision 20/2020/QĐ-TTg shape); opaque string.
    pub code: String,
    /// Official name, in Vietnamese.
    pub name: String,
    /// Kind of unit.
    pub kind: UnitKind,
    /// Level (free text, data: `central`, `province`, `district`, `commune`, …).
    pub level: String,
    /// Code of the parent unit, if any.
    #[serde(default)]
    pub parent: Option<String>,
    /// Roles a procedure step may ask for (`civil_status`, `police_residence`, …).
    #[serde(default)]
    pub roles: Vec<String>,
    /// Key this unit presents to the HTTP API (`Authorization: Bearer …`).
    #[serde(default)]
    pub api_key: Option<String>,
    /// The unit's next key during a rotation: accepted beside `api_key` until the unit's
    /// software has switched; then it becomes `api_key` and this goes (SECURITY.md, Rotating
    /// keys and certificates).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_key_next: Option<String>,
    /// The RabbitMQ user this unit's own software connects as (reach `amqp`, or any unit that
    /// publishes to `<prefix>.ingress` itself). The router takes an envelope from a broker user
    /// only when its `sender` is a unit of that user ([`crate::senders`]); several units (a
    /// centre and its offices run by one system) may share one user. `lienthong topology
    /// export` creates the user with the permissions of its units.
    #[serde(default)]
    pub amqp_user: Option<String>,
    /// The broker password's hash for `amqp_user`, in RabbitMQ's definitions format
    /// (`rabbit_password_hashing_sha256`, base64 of salt + SHA-256), as `lienthong keys new
    /// --broker` prints it: `topology export` puts it into the user's definition. Without it
    /// the user is exported with no password (it must then authenticate with a client
    /// certificate, EXTERNAL).
    #[serde(default)]
    pub amqp_password_hash: Option<String>,
    /// Whether this unit's dossiers are synchronised to the national portal (a later issue).
    #[serde(default)]
    pub syncs_to_portal: bool,
    /// How the bus reaches it.
    #[serde(default = "default_reach")]
    pub reach: Reach,
    /// Where the code comes from / whether it is verified.
    #[serde(default)]
    pub note: Option<String>,
    /// `x-max-length` of this unit's queue, messages (default `[topology] unit_max_length`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_queue_length: Option<u64>,
    /// `x-max-length-bytes` of this unit's queue, bytes (default `[topology]
    /// unit_max_length_bytes`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_queue_bytes: Option<u64>,
}

fn default_reach() -> Reach {
    Reach::Amqp
}

/// Why a procedure is excluded from liên thông (letter 5287/UBND-NC of 29 August 2017).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Exclusion {
    /// Resolved and answered on the spot by law.
    OnTheSpot,
    /// Needs much explanation or confrontation in the field of finance.
    Finance,
    /// Citizen reception.
    CitizenReception,
    /// Complaints.
    Complaint,
    /// Denunciations.
    Denunciation,
    /// Notarisation.
    Notarisation,
    /// Property auction.
    PropertyAuction,
    /// A Customs / Tax / Police / Social Insurance procedure the agency already handles well alone.
    AgencyHandlesAlone,
}

/// One step of a procedure's route.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Step {
    /// Step id, unique in the procedure.
    pub id: String,
    /// What is done, in Vietnamese.
    pub name: String,
    /// A fixed unit code …
    #[serde(default)]
    pub unit: Option<String>,
    /// … or a role; any unit with that role qualifies (e.g. the civil-status office of the
    /// centre's district).
    #[serde(default)]
    pub role: Option<String>,
    /// Order: steps run group by group in ascending order; steps of the same group run in parallel.
    pub group: u32,
    /// Deadline of the step in working days; 0 = the same working day.
    pub deadline_working_days: u32,
    /// The applicant may choose whether this step is done (the death flow).
    #[serde(default)]
    pub optional: bool,
    /// Value in `payload.data.thu_tuc_lua_chon` that selects an optional step.
    #[serde(default)]
    pub choice: Option<String>,
}

/// A procedure of the catalogue.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Procedure {
    /// National procedure code (MaTTHC).
    pub ma_tthc: String,
    /// Name, in Vietnamese.
    pub name: String,
    /// Exclusions (empty = eligible for liên thông).
    #[serde(default)]
    pub exclusions: Vec<Exclusion>,
    /// A made-up procedure to exercise a party that no documented flow involves.
    #[serde(default)]
    pub synthetic: bool,
    /// Whether a dossier code (`ma_ho_so`) of this procedure is built from the code of the
    /// centre that received it (`<centre code>-<yyMMdd>-<seq>`, the shape of
    /// `[envelope] ma_ho_so_pattern` and of the codes the one-stop software issues; default
    /// true). When it is, a centre may open a dossier only under its own code, so no centre
    /// can take another's codes ([`crate::routing::check_issuer`]). Unverified as a legal
    /// rule: it is how the codes in the sample dossiers are built.
    #[serde(default = "yes")]
    pub ma_ho_so_carries_issuer: bool,
    /// Time of day (`HH:MM`, +07:00) after which a dossier counts from the next working day.
    #[serde(default)]
    pub cutoff_time: Option<String>,
    /// Whole-procedure deadline in working days.
    #[serde(default)]
    pub deadline_working_days: Option<u32>,
    /// Whole-procedure deadline when verification is needed, working days.
    #[serde(default)]
    pub deadline_working_days_with_verification: Option<u32>,
    /// Statuses (TrangThaiHoSo) that pause the clock until the centre answers (default 5, 6).
    #[serde(default = "default_pausing")]
    pub clock_pausing_statuses: Vec<u8>,
    /// Fewest optional steps the applicant must choose.
    #[serde(default)]
    pub min_optional_steps: u32,
    /// The route.
    #[serde(default)]
    pub steps: Vec<Step>,
    /// Where the facts come from.
    #[serde(default)]
    pub source: Option<String>,
    /// Whether the facts were checked against the official text.
    #[serde(default)]
    pub verified: bool,
    /// What the route needs from the centre's filing: a JSON Schema 2020-12 over the envelope
    /// (`schemas/procedures/<ma_tthc>.schema.json`), checked at ingress against the filing
    /// ([`crate::filing`]); where it is read from depends on [`ConfigSource`]. None: the filing
    /// is checked against the envelope schema only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_schema: Option<String>,
}

fn default_pausing() -> Vec<u8> {
    vec![5, 6]
}

impl Procedure {
    /// Eligible for liên thông when no exclusion applies.
    pub fn eligible(&self) -> bool {
        self.exclusions.is_empty()
    }
}

impl Settings {
    /// Load settings: the file at `path` (TOML), or the embedded default; then environment
    /// overrides `LIENTHONG__<SECTION>__<KEY>` (e.g. `LIENTHONG__BUS__PREFIX=test1`).
    /// Procedure schemas (`data_schema`) are read as [`ConfigSource`] says: from the binary for
    /// the embedded default, from disk for a file.
    pub fn load(path: Option<&Path>) -> Result<Settings, ConfigError> {
        match path {
            Some(p) => {
                let text = std::fs::read_to_string(p)
                    .map_err(|e| ConfigError::Load(format!("{}: {e}", p.display())))?;
                Self::from_toml_with(&text, true, ConfigSource::File(p.to_path_buf()))
            }
            None => Self::from_toml_with(DEFAULT_CONFIG, true, ConfigSource::Embedded),
        }
    }

    /// Parse settings from TOML text, optionally applying environment overrides; `data_schema`
    /// names the schemas compiled into the binary ([`ConfigSource::Embedded`]).
    pub fn from_toml(text: &str, env_overrides: bool) -> Result<Settings, ConfigError> {
        Self::from_toml_with(text, env_overrides, ConfigSource::Embedded)
    }

    /// [`Settings::from_toml`], with `data_schema` read as `source` says.
    pub fn from_toml_with(
        text: &str,
        env_overrides: bool,
        source: ConfigSource,
    ) -> Result<Settings, ConfigError> {
        let mut b = config::Config::builder()
            .add_source(config::File::from_str(text, config::FileFormat::Toml));
        if env_overrides {
            b = b.add_source(
                config::Environment::with_prefix("LIENTHONG")
                    .prefix_separator("__")
                    .separator("__")
                    .try_parsing(true),
            );
        }
        let mut settings: Settings = b
            .build()
            .and_then(|c| c.try_deserialize())
            .map_err(|e| ConfigError::Load(e.to_string()))?;
        let base = match &source {
            ConfigSource::File(p) => match p.parent() {
                Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
                _ => std::path::PathBuf::from("."),
            },
            ConfigSource::Embedded => std::path::PathBuf::from("."),
        };
        if let ConfigSource::File(_) = &source {
            settings.resolve_paths(&base);
        }
        settings
            .resolve_secrets(&base)
            .map_err(|e| ConfigError::Load(e.to_string()))?;
        settings.source = source;
        settings.check()?;
        Ok(settings)
    }

    /// Read every secret setting that says where it is (`env:NAME`, `file:PATH` relative to
    /// `base`; [`crate::secret::resolve`]): the units' `api_key` and `callback_key`, `[http]
    /// operator_key`, `[bus] amqp_password` (then put into `amqp_url` as its password), and in
    /// an adapter unit's settings the keys named in [`SECRET_SETTINGS`].
    pub fn resolve_secrets(&mut self, base: &Path) -> Result<(), crate::secret::SecretError> {
        use crate::secret::resolve;
        if let Some(k) = &self.http.operator_key {
            self.http.operator_key = Some(resolve("http.operator_key", k, base)?);
        }
        if let Some(pw) = &self.bus.amqp_password {
            let pw = resolve("bus.amqp_password", pw, base)?;
            // A URL without a user keeps RabbitMQ's default one and gets no password: the
            // connection then fails with the broker's reason.
            if let Some(url) = with_password(&self.bus.amqp_url, &pw) {
                self.bus.amqp_url = url;
            }
            self.bus.amqp_password = None;
        }
        for u in &mut self.units {
            if let Some(k) = &u.api_key {
                u.api_key = Some(resolve(&format!("units.{}.api_key", u.code), k, base)?);
            }
            if let Some(k) = &u.api_key_next {
                u.api_key_next = Some(resolve(&format!("units.{}.api_key_next", u.code), k, base)?);
            }
            if let Reach::Adapter {
                callback_key,
                callback_key_next,
                settings,
                ..
            } = &mut u.reach
            {
                if let Some(k) = callback_key {
                    *k = resolve(&format!("units.{}.callback_key", u.code), k, base)?;
                }
                if let Some(k) = callback_key_next {
                    *k = resolve(&format!("units.{}.callback_key_next", u.code), k, base)?;
                }
                for name in SECRET_SETTINGS {
                    if let Some(Value::String(v)) = settings.get_mut(name) {
                        *v = resolve(&format!("units.{}.settings.{name}", u.code), v, base)?;
                    }
                }
            }
        }
        Ok(())
    }

    /// Every key the bus checks that is too weak to run with ([`crate::secret::weakness`]):
    /// `(setting, why)`. `lienthong run` refuses to start while this is not empty.
    pub fn weak_keys(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        // The bus's broker password is judged by the broker; only a shipped placeholder is
        // refused here.
        if let Ok(uri) = self.bus.amqp_url.parse::<lapin::uri::AMQPUri>()
            && crate::secret::is_placeholder(&uri.authority.userinfo.password)
        {
            out.push((
                "bus.amqp_password".into(),
                "it is a placeholder from an example configuration (the bus's broker password: `lienthong keys new --broker`)".into(),
            ));
        }
        let mut judge = |setting: String, key: &str| {
            if let Some(why) = crate::secret::weakness(key) {
                out.push((setting, why));
            }
        };
        if let Some(k) = &self.http.operator_key {
            judge("http.operator_key".into(), k);
        }
        for u in &self.units {
            if let Some(k) = &u.api_key {
                judge(format!("units.{}.api_key", u.code), k);
            }
            if let Some(k) = &u.api_key_next {
                judge(format!("units.{}.api_key_next", u.code), k);
            }
            if let Reach::Adapter {
                callback_key,
                callback_key_next,
                settings,
                ..
            } = &u.reach
            {
                if let Some(Value::String(k)) = settings.get("webhook_secret") {
                    judge(format!("units.{}.settings.webhook_secret", u.code), k);
                }
                if let Some(k) = callback_key {
                    judge(format!("units.{}.callback_key", u.code), k);
                }
                if let Some(k) = callback_key_next {
                    judge(format!("units.{}.callback_key_next", u.code), k);
                }
            }
        }
        out
    }

    /// Make every relative path of the settings relative to `base` instead (a config file's
    /// directory, so that a config works from any working directory, as nginx's or RabbitMQ's
    /// do): `[store] path` and `blob_dir`, each procedure's `data_schema`, `[http] tls_cert` and `tls_key`, and each adapter
    /// unit's `[units.reach.settings.connection]` `ca_bundle`, `client_cert`, `client_key`.
    /// Absolute paths are kept as they are.
    pub fn resolve_paths(&mut self, base: &Path) {
        let join = |p: &mut String| {
            if !p.is_empty() && Path::new(p.as_str()).is_relative() {
                *p = base.join(p.as_str()).display().to_string();
            }
        };
        join(&mut self.store.path);
        if !self.store.url.trim().is_empty()
            && let crate::store::StoreLocation::Sqlite(p) =
                crate::store::StoreLocation::parse(&self.store.url)
            && p.is_relative()
        {
            self.store.url = format!("sqlite:{}", base.join(p).display());
        }
        join(&mut self.store.blob_dir);
        for f in [
            &mut self.bus.tls_ca,
            &mut self.bus.tls_client_cert,
            &mut self.bus.tls_client_key,
            &mut self.http.tls_cert,
            &mut self.http.tls_key,
        ]
        .into_iter()
        .flatten()
        {
            join(f);
        }
        for proc_ in &mut self.procedures {
            if let Some(d) = &mut proc_.data_schema {
                join(d);
            }
        }
        for u in &mut self.units {
            if let Reach::Adapter { settings, .. } = &mut u.reach
                && let Some(Value::Object(conn)) = settings.get_mut("connection")
            {
                for key in CONNECTION_FILES {
                    if let Some(Value::String(f)) = conn.get_mut(key) {
                        join(f);
                    }
                }
            }
        }
    }

    /// Write these settings as a TOML config file at `path` that another process (a child
    /// `lienthong run`, a test's bus) loads to the same effect, from any working directory:
    /// relative paths are made absolute against the working directory (settings loaded from a
    /// file hold absolute paths already), and for settings that came from the embedded default
    /// each procedure's compiled-in `data_schema` is written beside the file at its relative
    /// path (`<dir>/schemas/procedures/…`), which the file then names.
    pub fn write_file(&self, path: &Path) -> Result<(), ConfigError> {
        let io = |what: &Path, e: std::io::Error| {
            ConfigError::Load(format!("writing {}: {e}", what.display()))
        };
        let dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => std::path::PathBuf::from("."),
        };
        let mut out = self.clone();
        if out.source == ConfigSource::Embedded {
            for proc_ in &out.procedures {
                if let Some(d) = &proc_.data_schema
                    && let Some((_, text)) = crate::embedded::schema(d)
                {
                    let target = dir.join(d);
                    if let Some(parent) = target.parent() {
                        std::fs::create_dir_all(parent).map_err(|e| io(parent, e))?;
                    }
                    std::fs::write(&target, text).map_err(|e| io(&target, e))?;
                }
            }
            // The schemas just written sit beside the file, where its loader looks.
            let keep: Vec<Option<String>> = out
                .procedures
                .iter()
                .map(|p| p.data_schema.clone())
                .collect();
            let cwd = std::env::current_dir().map_err(|e| io(Path::new("."), e))?;
            out.resolve_paths(&cwd);
            for (p, d) in out.procedures.iter_mut().zip(keep) {
                p.data_schema = d;
            }
        } else {
            let cwd = std::env::current_dir().map_err(|e| io(Path::new("."), e))?;
            out.resolve_paths(&cwd);
        }
        let text = toml::to_string(&out)
            .map_err(|e| ConfigError::Load(format!("writing {}: {e}", path.display())))?;
        std::fs::write(path, text).map_err(|e| io(path, e))
    }

    /// Check the registry: unique codes, known parents without cycles, routes naming known units
    /// or roles some unit has, valid cut-off times and statuses. The procedures' `data_schema`
    /// files are checked where they are compiled (`filing::FilingSchemas::load`), which
    /// `lienthong` does right after loading the settings.
    pub fn check(&self) -> Result<(), ConfigError> {
        let bad = |m: String| Err(ConfigError::Invalid(m));
        if let Err(e) = crate::calendar::WorkCalendar::new(&self.calendar) {
            return bad(format!("[calendar] {e}"));
        }
        if self.bus.prefix.is_empty()
            || !self
                .bus
                .prefix
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        {
            return bad(format!(
                "[bus] prefix {:?} must be non-empty ASCII letters, digits, '-', '_' or '.'",
                self.bus.prefix
            ));
        }
        if let Err(e) = self.telemetry.validate() {
            return bad(e);
        }
        if self.store.commit_delay_ms > MAX_COMMIT_DELAY_MS {
            return bad(format!(
                "[store] commit_delay_ms = {} is above {MAX_COMMIT_DELAY_MS}: every message of a busy store would wait that long for its commit",
                self.store.commit_delay_ms
            ));
        }
        if self.store.steady_commit_delay_ms > MAX_COMMIT_DELAY_MS {
            return bad(format!(
                "[store] steady_commit_delay_ms = {} is above {MAX_COMMIT_DELAY_MS}: every message at a steady rate would wait that long for its commit",
                self.store.steady_commit_delay_ms
            ));
        }
        let h = &self.http;
        if h.tls_cert.is_some() != h.tls_key.is_some() {
            return bad("[http] tls_cert and tls_key go together: give both or neither".into());
        }
        if h.rate_per_s == 0
            || h.rate_burst == 0
            || h.operator_rate_per_s == 0
            || h.operator_rate_burst == 0
            || h.max_concurrent_requests == 0
            || h.header_read_timeout_ms == 0
            || h.request_timeout_ms == 0
        {
            return bad(
                "[http] rates, bursts, max_concurrent_requests and timeouts must be above 0".into(),
            );
        }
        let mut codes = HashSet::new();
        let mut keys = HashSet::new();
        for u in &self.units {
            if !codes.insert(u.code.as_str()) {
                return bad(format!("unit {} is listed twice", u.code));
            }
            if u.code.len() > 35
                || u.code.is_empty()
                || !u
                    .code
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
            {
                return bad(format!(
                    "unit code {:?} must be 1–35 ASCII letters, digits, '.', '_' or '-'",
                    u.code
                ));
            }
            // Placeholders are alike by nature (and refused by `lienthong run` anyway).
            for k in [&u.api_key, &u.api_key_next].into_iter().flatten() {
                if crate::secret::weakness(k).is_none() && !keys.insert(k.as_str()) {
                    return bad(format!(
                        "unit {} shares its api_key (or api_key_next) with another unit",
                        u.code
                    ));
                }
            }
        }
        let by_code: HashMap<&str, &Unit> =
            self.units.iter().map(|u| (u.code.as_str(), u)).collect();
        for u in &self.units {
            let mut seen = HashSet::new();
            let mut cur = u.parent.as_deref();
            while let Some(p) = cur {
                if !seen.insert(p) {
                    return bad(format!("unit {}: its parent chain loops at {p}", u.code));
                }
                match by_code.get(p) {
                    Some(pu) => cur = pu.parent.as_deref(),
                    None => {
                        return bad(format!(
                            "unit {}: parent {p} is not a unit of the registry",
                            u.code
                        ));
                    }
                }
            }
        }
        let mut seen_tthc = HashSet::new();
        for p in &self.procedures {
            if !seen_tthc.insert(p.ma_tthc.as_str()) {
                return bad(format!("procedure {} is listed twice", p.ma_tthc));
            }
            if let Some(t) = &p.cutoff_time
                && chrono::NaiveTime::parse_from_str(t, "%H:%M").is_err()
            {
                return bad(format!(
                    "procedure {}: cutoff_time {t:?} is not HH:MM",
                    p.ma_tthc
                ));
            }
            if let Some(s) = p
                .clock_pausing_statuses
                .iter()
                .find(|s| !(1..=10).contains(*s))
            {
                return bad(format!(
                    "procedure {}: clock_pausing_statuses has {s}, outside TrangThaiHoSo 1–10",
                    p.ma_tthc
                ));
            }
            let mut step_ids = HashSet::new();
            for s in &p.steps {
                if !step_ids.insert(s.id.as_str()) {
                    return bad(format!(
                        "procedure {}: step id {} is used twice",
                        p.ma_tthc, s.id
                    ));
                }
                match (&s.unit, &s.role) {
                    (Some(code), None) => {
                        if !by_code.contains_key(code.as_str()) {
                            return bad(format!(
                                "procedure {} step {}: unit {code} is not in the registry",
                                p.ma_tthc, s.id
                            ));
                        }
                    }
                    (None, Some(role)) => {
                        if !self.units.iter().any(|u| u.roles.iter().any(|r| r == role)) {
                            return bad(format!(
                                "procedure {} step {}: no unit has role {role}",
                                p.ma_tthc, s.id
                            ));
                        }
                    }
                    _ => {
                        return bad(format!(
                            "procedure {} step {}: give exactly one of unit or role",
                            p.ma_tthc, s.id
                        ));
                    }
                }
                if s.optional && s.choice.is_none() {
                    return bad(format!(
                        "procedure {} step {}: an optional step needs a choice value",
                        p.ma_tthc, s.id
                    ));
                }
            }
        }
        Ok(())
    }
}

/// Read-only indexes over [`Settings`]: units by code and by API key, procedures by code.
#[derive(Debug, Clone)]
pub struct Registry {
    units: HashMap<String, Unit>,
    /// Broker user → the codes of the units it publishes for.
    by_amqp_user: HashMap<String, Vec<String>>,
    /// SHA-256 of each unit's HTTP API key → unit code (keys are not kept in clear).
    by_key: HashMap<crate::secret::KeyHash, String>,
    /// SHA-256 of the operator key.
    operator_key: Option<crate::secret::KeyHash>,
    /// SHA-256 of each adapter unit's callback key, by unit code.
    /// (unit, callback key's hash): one or two per adapter unit (two during a rotation).
    callback_keys: Vec<(String, crate::secret::KeyHash)>,
    procedures: HashMap<String, Procedure>,
}

impl Registry {
    /// The unit with `role` nearest to `near` in the parent tree (ties: lowest code).
    pub fn resolve_role(&self, role: &str, near: &str) -> Option<String> {
        let ancestors = |code: &str| -> Vec<String> {
            let mut v = Vec::new();
            let mut cur = self.unit(code).and_then(|u| u.parent.clone());
            while let Some(c) = cur {
                if v.contains(&c) {
                    break;
                }
                cur = self.unit(&c).and_then(|u| u.parent.clone());
                v.push(c);
            }
            v
        };
        let mine = ancestors(near);
        let mut best: Option<(usize, String)> = None;
        for u in self.units().filter(|u| u.roles.iter().any(|r| r == role)) {
            let theirs = ancestors(&u.code);
            let dist = mine
                .iter()
                .position(|a| theirs.contains(a) || *a == u.code)
                .unwrap_or(usize::MAX);
            let cand = (dist, u.code.clone());
            if best.as_ref().is_none_or(|b| cand < *b) {
                best = Some(cand);
            }
        }
        best.map(|b| b.1)
    }

    /// Build the indexes (settings are assumed checked by [`Settings::check`]).
    pub fn new(settings: &Settings) -> Self {
        Registry {
            units: settings
                .units
                .iter()
                .map(|u| (u.code.clone(), u.clone()))
                .collect(),
            by_amqp_user: settings
                .units
                .iter()
                .filter_map(|u| Some((u.amqp_user.clone()?, u.code.clone())))
                .fold(HashMap::new(), |mut m, (user, code)| {
                    m.entry(user).or_insert_with(Vec::new).push(code);
                    m
                }),
            by_key: settings
                .units
                .iter()
                .flat_map(|u| {
                    [&u.api_key, &u.api_key_next]
                        .into_iter()
                        .flatten()
                        .map(|k| (crate::secret::KeyHash::from_config(k), u.code.clone()))
                })
                .collect(),
            operator_key: settings
                .http
                .operator_key
                .as_deref()
                .map(crate::secret::KeyHash::from_config),
            callback_keys: settings
                .units
                .iter()
                .flat_map(|u| match &u.reach {
                    Reach::Adapter {
                        callback_key,
                        callback_key_next,
                        ..
                    } => [callback_key, callback_key_next]
                        .into_iter()
                        .flatten()
                        .map(|k| (u.code.clone(), crate::secret::KeyHash::from_config(k)))
                        .collect(),
                    _ => Vec::new(),
                })
                .collect(),
            procedures: settings
                .procedures
                .iter()
                .map(|p| (p.ma_tthc.clone(), p.clone()))
                .collect(),
        }
    }

    /// A unit by code.
    pub fn unit(&self, code: &str) -> Option<&Unit> {
        self.units.get(code)
    }

    /// Every unit.
    pub fn units(&self) -> impl Iterator<Item = &Unit> {
        self.units.values()
    }

    /// The codes of the units broker user `user` publishes for (empty: none).
    pub fn units_of_amqp_user(&self, user: &str) -> &[String] {
        self.by_amqp_user
            .get(user)
            .map(Vec::as_slice)
            .unwrap_or(&[])
    }

    /// The unit that owns an HTTP API key (looked up by the key's SHA-256: a lookup's timing
    /// tells nothing of the key).
    pub fn unit_by_api_key(&self, key: &str) -> Option<&Unit> {
        self.by_key
            .get(&crate::secret::KeyHash::of(key))
            .and_then(|c| self.units.get(c))
    }

    /// Whether `key` is the operator key (`[http] operator_key`), compared in constant time.
    pub fn is_operator_key(&self, key: &str) -> bool {
        self.operator_key.as_ref().is_some_and(|h| h.matches(key))
    }

    /// Whether `key` is the callback key of adapter unit `unit`, compared in constant time.
    pub fn is_callback_key(&self, unit: &str, key: &str) -> bool {
        // Every key of the unit is compared (current and next), each in constant time.
        self.callback_keys
            .iter()
            .filter(|(u, _)| u == unit)
            .fold(false, |found, (_, h)| h.matches(key) | found)
    }

    /// The adapter unit whose callback key `key` is, if any.
    pub fn unit_by_callback_key(&self, key: &str) -> Option<&Unit> {
        self.callback_keys
            .iter()
            .find(|(_, h)| h.matches(key))
            .and_then(|(c, _)| self.units.get(c))
    }

    /// A procedure by national code.
    pub fn procedure(&self, ma_tthc: &str) -> Option<&Procedure> {
        self.procedures.get(ma_tthc)
    }

    /// The step of `procedure` that `unit` may take, if any.
    pub fn step_for<'a>(&self, procedure: &'a Procedure, unit: &Unit) -> Option<&'a Step> {
        procedure.steps.iter().find(|s| {
            s.unit.as_deref() == Some(unit.code.as_str())
                || s.role.as_ref().is_some_and(|r| unit.roles.contains(r))
        })
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_cluster_nodes_take_the_urls_user_vhost_and_query() {
        let bus = super::BusSettings {
            amqp_url: "amqps://bus:pw@mq1.tinh:5671/lienthong?heartbeat=30".into(),
            nodes: vec!["mq2.tinh:5671".into(), "10.0.0.3:5671".into()],
            ..Default::default()
        };
        assert_eq!(
            bus.urls(),
            vec![
                "amqps://bus:pw@mq1.tinh:5671/lienthong?heartbeat=30",
                "amqps://bus:pw@mq2.tinh:5671/lienthong?heartbeat=30",
                "amqps://bus:pw@10.0.0.3:5671/lienthong?heartbeat=30",
            ]
        );
        let plain = super::BusSettings {
            amqp_url: "amqp://bus@127.0.0.1:5672/%2f".into(),
            nodes: vec!["10.0.0.2:5672".into()],
            ..Default::default()
        };
        assert!(
            plain
                .transport_problem()
                .is_some_and(|p| p.contains("10.0.0.2"))
        );
    }

    use super::*;

    #[test]
    fn the_broker_password_goes_into_the_url_and_secrets_come_from_env_or_file() {
        assert_eq!(
            with_password("amqp://lienthong@10.0.0.5:5672/%2f", "p@ss/w").as_deref(),
            Some("amqp://lienthong:p%40ss%2Fw@10.0.0.5:5672/%2f")
        );
        assert_eq!(
            with_password("amqps://bus:old@h/v", "new").as_deref(),
            Some("amqps://bus:new@h/v")
        );
        assert_eq!(with_password("amqp://h:5672/%2f", "x"), None);
        let dir = std::env::temp_dir().join(format!("lienthong-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        std::fs::write(dir.join("op.key"), "operator-secret-from-file\n").expect("write");
        let mut s = Settings::from_toml(DEFAULT_CONFIG, false).expect("config");
        s.http.operator_key = Some("file:op.key".into());
        s.bus.amqp_password = Some("file:op.key".into());
        s.bus.amqp_url = "amqp://lienthong@127.0.0.1:5672/%2f".into();
        s.resolve_secrets(&dir).expect("secrets");
        assert_eq!(
            s.http.operator_key.as_deref(),
            Some("operator-secret-from-file")
        );
        assert_eq!(
            s.bus.amqp_url,
            "amqp://lienthong:operator-secret-from-file@127.0.0.1:5672/%2f"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn during_a_rotation_the_current_and_the_next_key_both_work_and_stay_unique() {
        let mut s = Settings::from_toml(DEFAULT_CONFIG, false).expect("shipped config");
        let key = |n: u8| format!("{n:02x}").repeat(32);
        let mut agency = None;
        for u in &mut s.units {
            if u.code == "000.20.59.H48" {
                u.api_key = Some(key(1));
                u.api_key_next = Some(key(2));
            }
            if let Reach::Adapter {
                callback_key,
                callback_key_next,
                ..
            } = &mut u.reach
                && agency.is_none()
            {
                *callback_key = Some(key(3));
                *callback_key_next = Some(key(4));
                agency = Some(u.code.clone());
            }
        }
        let agency = agency.expect("an adapter unit");
        let r = Registry::new(&s);
        for k in [key(1), key(2)] {
            assert_eq!(
                r.unit_by_api_key(&k).map(|u| u.code.as_str()),
                Some("000.20.59.H48")
            );
        }
        assert!(r.unit_by_api_key(&key(5)).is_none());
        for k in [key(3), key(4)] {
            assert!(r.is_callback_key(&agency, &k), "{k}");
            assert_eq!(
                r.unit_by_callback_key(&k).map(|u| u.code.clone()),
                Some(agency.clone())
            );
        }
        assert!(!r.is_callback_key(&agency, &key(1)));
        assert!(!r.is_callback_key("000.20.59.H48", &key(3)));
        // A next key that is another unit's key is refused, as a shared key is.
        for u in &mut s.units {
            if u.code == "000.20.51.H48" {
                u.api_key = Some(key(2));
            }
        }
        let e = s.check().expect_err("shared next key").to_string();
        assert!(e.contains("shares its api_key"), "{e}");
    }

    #[test]
    fn shipped_config_loads_and_names_the_parties_of_the_letter() {
        let s = Settings::from_toml(DEFAULT_CONFIG, false).expect("shipped config");
        let r = Registry::new(&s);
        for role in [
            "civil_status",
            "police_residence",
            "social_insurance",
            "tax",
            "customs",
            "land_registration",
            "funeral_allowance",
            "justice",
        ] {
            assert!(
                r.units().any(|u| u.roles.iter().any(|x| x == role)),
                "no unit with role {role}"
            );
        }
        assert_eq!(r.units().filter(|u| u.kind == UnitKind::Centre).count(), 4);
        for code in ["1.001193", "1.011537", "1.010059"] {
            assert!(r.procedure(code).is_some_and(Procedure::eligible), "{code}");
        }
    }

    #[test]
    fn the_shipped_bus_user_is_not_guest_and_its_placeholder_password_is_refused() {
        for text in [
            DEFAULT_CONFIG,
            include_str!("../../deploy/config/quang-ngai-2025.toml"),
        ] {
            let mut s = Settings::from_toml(text, false).expect("shipped config");
            assert_eq!(s.bus.user().as_deref(), Some("lienthong"));
            let weak = s.weak_keys();
            assert!(
                weak.iter().any(|(k, _)| k == "bus.amqp_password"),
                "{weak:?}"
            );
            s.bus.amqp_url =
                with_password(&s.bus.amqp_url, &crate::secret::new_key().expect("key"))
                    .expect("url with a user");
            assert!(
                !s.weak_keys().iter().any(|(k, _)| k == "bus.amqp_password"),
                "a fresh password is not refused"
            );
        }
    }

    #[test]
    fn two_tier_2025_structure_is_config_only() {
        let text = include_str!("../../deploy/config/quang-ngai-2025.toml");
        let s = Settings::from_toml(text, false).expect("2025 config");
        assert!(
            s.units.iter().all(|u| u.level != "district"),
            "no district level after 1 July 2025"
        );
        assert!(
            s.units
                .iter()
                .any(|u| u.kind == UnitKind::Centre && u.level == "commune")
        );
    }

    #[test]
    fn parent_cycle_is_refused() {
        let t = r#"
[[units]]
code = "A"
name = "A"
kind = "centre"
level = "x"
parent = "B"
[[units]]
code = "B"
name = "B"
kind = "centre"
level = "x"
parent = "A"
"#;
        let e = Settings::from_toml(t, false).expect_err("cycle");
        assert!(e.to_string().contains("loops"), "{e}");
    }

    #[test]
    fn the_store_commit_delay_is_read_and_bounded() {
        let shipped = Settings::from_toml("", false).expect("defaults");
        assert_eq!(shipped.store.commit_delay_ms, 1);
        let s = Settings::from_toml("[store]\ncommit_delay_ms = 4\n", false).expect("4 ms");
        assert_eq!(s.store.commit_delay_ms, 4);
        let e = Settings::from_toml("[store]\ncommit_delay_ms = 500\n", false)
            .expect_err("above the limit");
        assert!(e.to_string().contains("commit_delay_ms = 500"), "{e}");
        assert_eq!(shipped.store.steady_commit_delay_ms, 3);
        let s = Settings::from_toml("[store]\nsteady_commit_delay_ms = 0\n", false).expect("off");
        assert_eq!(s.store.steady_commit_delay_ms, 0);
        let e = Settings::from_toml("[store]\nsteady_commit_delay_ms = 101\n", false)
            .expect_err("above the limit");
        assert!(
            e.to_string().contains("steady_commit_delay_ms = 101"),
            "{e}"
        );
    }

    #[test]
    fn the_message_store_compresses_by_default_and_can_be_told_not_to() {
        use crate::store::BodyCompression;
        let shipped = Settings::from_toml("", false).expect("defaults");
        assert_eq!(shipped.store.message_compression, BodyCompression::Zstd);
        let s =
            Settings::from_toml("[store]\nmessage_compression = \"none\"\n", false).expect("none");
        assert_eq!(s.store.message_compression, BodyCompression::None);
        let e = Settings::from_toml("[store]\nmessage_compression = \"gzip\"\n", false)
            .expect_err("unknown");
        assert!(e.to_string().contains("gzip"), "{e}");
    }
}
