//! Putting messages back: `lienthong dead-letters replay` and the console re-inject
//! dead-lettered messages (ids, a reason code, or all) into the ingress exchange after a fix;
//! `lienthong messages resend` puts accepted envelopes from the message store back on their
//! receivers' queues (after a queue was deleted or purged by mistake).
//!
//! A replay walks the dead-letter queue once, from its head, one message at a time: a message it
//! replays leaves the queue only after its republish to the ingress exchange is confirmed; a
//! message it does not take is moved to the queue's tail (republished there with a confirm,
//! then acked), never requeued, so a quorum queue's delivery limit (RabbitMQ 4's default is 20)
//! never counts a replay against a dead letter, and nothing is held in memory. The walk covers
//! exactly the messages that were in the queue when it started (new dead letters and moved ones
//! queue behind them) and, for a list of ids, stops as soon as it found them all. One replay at a
//! time per bus: each holds an exclusive lock queue (`<p>.replay.lock`) on its connection.
//!
//! The router validates a replayed message again, and an adapter's delivery log keeps a message
//! that already reached its agency from being sent twice, so replaying twice has no duplicate
//! effect. Each replay is recorded as it goes (every 200 messages or second, and at the end,
//! also when it fails): a `replayed` trace event naming who replayed it, and the dead-letter
//! log's row marked replayed (when, by whom).

use lapin::options::{BasicAckOptions, BasicGetOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use lapin::types::{AMQPValue, LongString};
use lapin::{BasicProperties, Channel};
use lienthong_core::amqp::{Publisher, header_str, message_id_of};
use lienthong_core::deadletter::headers;
use lienthong_core::registry::Settings;
use lienthong_core::senders::ORIGINAL_USER_HEADER;
use lienthong_core::store::MessageWriter;
use lienthong_core::store::dead_letters::mark_replayed_in;
use lienthong_core::store::trace::insert_events_in;
use lienthong_core::topology::Names;
use lienthong_core::trace::{TraceEvent, TraceEventKind};
use std::collections::HashSet;

/// Which dead letters to replay.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    /// These message ids.
    pub ids: Vec<String>,
    /// This reason code (`agency-refused`, `unknown-receiver`, …).
    pub reason_code: Option<String>,
    /// Every dead letter.
    pub all: bool,
}

impl Filter {
    fn matches(&self, ids: &HashSet<&str>, id: &str, code: Option<&str>) -> bool {
        self.all
            || ids.contains(id)
            || (self.reason_code.is_some() && self.reason_code.as_deref() == code)
    }

    /// Only a list of ids: the walk may stop once each was found.
    fn ids_only(&self) -> bool {
        !self.all && self.reason_code.is_none()
    }
}

/// Who replays, and the store writer that records it.
pub struct Replayer<'a> {
    /// The group commit the `replayed` trace events and the dead-letter log's marks go through.
    pub writer: &'a MessageWriter,
    /// Who: `console:<user>` or `cli:<user>`, written into the trace.
    pub by: String,
    /// The component named on the trace events (`console`, `cli`).
    pub component: &'static str,
}

/// What a replay did (so far, while it runs).
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Report {
    /// Messages in the dead-letter queue when the replay started.
    pub total: u64,
    /// Messages taken from the queue and looked at.
    pub examined: u64,
    /// Replayed (republished, confirmed, removed from the dead-letter queue); with `dry_run`,
    /// those that would be.
    pub replayed: Vec<String>,
    /// Left in the queue (moved to its tail).
    pub kept: u64,
    /// Set when part of the replay was done but could not be recorded in the store (the trace
    /// and the dead-letter log do not show it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unrecorded: Option<String>,
}

/// Replay the dead letters matching `filter`, recording each in the trace and the dead-letter
/// log as done by `who`.
pub async fn replay(
    settings: &Settings,
    filter: &Filter,
    dry_run: bool,
    who: &Replayer<'_>,
) -> anyhow::Result<Report> {
    replay_with(settings, filter, dry_run, who, &|_| {}).await
}

/// [`replay`], calling `progress` with the report so far after each message.
pub async fn replay_with(
    settings: &Settings,
    filter: &Filter,
    dry_run: bool,
    who: &Replayer<'_>,
    progress: &(dyn Fn(&Report) + Send + Sync),
) -> anyhow::Result<Report> {
    let names = Names::new(&settings.bus.prefix);
    let conn = std::sync::Arc::new(
        crate::run::connect(settings, &format!("{}/replay", settings.bus.prefix)).await?,
    );
    let bus_user = lienthong_core::amqp::connection_user(&conn);
    let registry = lienthong_core::registry::Registry::new(settings);
    let mut report = Report::default();
    let mut pending = Pending::default();
    let walked = async {
        let _lock = lock(&conn, &names).await?;
        let publisher = Publisher::new(&conn, settings.bus.confirm_timeout_ms).await?;
        let ch = conn.create_channel().await?;
        let q = ch
            .queue_declare(
                names.dead_letter_queue().into(),
                QueueDeclareOptions {
                    passive: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await?;
        report.total = u64::from(q.message_count());
        progress(&report);
        // Progress is told every 200 messages or second (a report carries every id replayed).
        let mut told = (0u64, std::time::Instant::now());
        let tell = |r: &Report, told: &mut (u64, std::time::Instant)| {
            if r.examined >= told.0 + 200 || told.1.elapsed() >= std::time::Duration::from_secs(1)
            {
                *told = (r.examined, std::time::Instant::now());
                progress(r);
            }
        };
        let wanted: HashSet<&str> = filter.ids.iter().map(String::as_str).collect();
        let mut found: HashSet<String> = HashSet::new();
        for _ in 0..report.total {
            if filter.ids_only() && found.len() >= wanted.len() {
                break;
            }
            let Some(m) = ch
                .basic_get(
                    names.dead_letter_queue().into(),
                    BasicGetOptions { no_ack: false },
                )
                .await?
            else {
                break;
            };
            let taken_ms = lienthong_core::clock::now_ms();
            report.examined += 1;
            let d = &m.delivery;
            let id = message_id_of(&d.properties);
            let code =
                header_str(&d.properties, headers::REASON_CODE).unwrap_or_else(|| "broker".into());
            let original = first_publisher(&d.properties, bus_user.as_deref());
            let take = filter.matches(&wanted, &id, Some(&code));
            if take && wanted.contains(id.as_str()) {
                found.insert(id.clone());
            }
            if dry_run || !take {
                if take {
                    report.replayed.push(id.clone());
                } else {
                    report.kept += 1;
                }
                move_to_tail(&publisher, &names, d, &original)
                    .await
                    .map_err(|e| anyhow::anyhow!("moving {id} to the dead-letter queue's tail: {e} (it stays in the queue, perhaps twice)"))?;
                d.ack(BasicAckOptions::default()).await.map_err(|e| {
                    anyhow::anyhow!("{id} was moved to the dead-letter queue's tail but its old copy could not be removed ({e}): it is in the queue twice")
                })?;
                if pending.due()
                    && let Some(e) = pending.flush(who).await
                {
                    report.unrecorded.get_or_insert(e);
                }
                tell(&report, &mut told);
                continue;
            }
            // Stamped before the publish, so that it comes before the router's events in the
            // dossier's timeline; written once the publish is confirmed, within a second.
            let speaks_for = |sender: &str| {
                let user = (!original.is_empty()).then_some(original.as_str());
                lienthong_core::senders::authenticated(&registry, bus_user.as_deref(), user, sender)
            };
            let event = replayed_event(who, &id, &d.data, &speaks_for);
            publisher
                .publish(
                    &names.ingress_exchange(),
                    "",
                    &d.data,
                    replay_properties(&d.properties, &original, &who.by),
                    true,
                )
                .await
                .map_err(|e| anyhow::anyhow!("replaying {id}: {e} (it stays in the dead-letter queue)"))?;
            // Replayed from here on, whatever the ack does: recorded as such.
            pending.push(id.clone(), taken_ms, event);
            report.replayed.push(id.clone());
            d.ack(BasicAckOptions::default()).await.map_err(|e| {
                anyhow::anyhow!("{id} was replayed but could not be removed from the dead-letter queue ({e}): it will be offered again (a second replay has no duplicate effect)")
            })?;
            if pending.due()
                && let Some(e) = pending.flush(who).await
            {
                report.unrecorded.get_or_insert(e);
            }
            tell(&report, &mut told);
        }
        anyhow::Ok(())
    }
    .await;
    // Recorded also when the walk failed half-way: what was replayed stays replayed.
    if let Some(e) = pending.flush(who).await {
        report.unrecorded.get_or_insert(e);
    }
    progress(&report);
    let _ = conn.close(200, "replay done".into()).await;
    walked?;
    Ok(report)
}

/// Take the bus's replay lock: an exclusive, auto-deleted queue `<p>.replay.lock` declared on
/// this connection (RabbitMQ answers 405 RESOURCE_LOCKED to any other connection while it
/// lives); it goes with the connection. Returns the channel that holds it.
async fn lock(conn: &lapin::Connection, names: &Names) -> anyhow::Result<Channel> {
    let ch = conn.create_channel().await?;
    let name = format!("{}.replay.lock", names.prefix());
    match ch
        .queue_declare(
            name.as_str().into(),
            QueueDeclareOptions {
                exclusive: true,
                auto_delete: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
    {
        Ok(_) => Ok(ch),
        Err(e) if is_locked(&e) => Err(anyhow::anyhow!(
            "another replay is running (it holds {name}); try again when it has finished"
        )),
        Err(e) => Err(e.into()),
    }
}

/// Whether `e` is the broker's 405 RESOURCE_LOCKED.
fn is_locked(e: &lapin::Error) -> bool {
    matches!(e.kind(), lapin::ErrorKind::ProtocolError(a) if a.get_id() == 405)
}

/// The broker user a dead letter speaks for ([`lienthong_core::senders::original_user`]). A
/// dead letter the router published before the bus recorded first publishers (the bus's
/// `user_id`, no [`ORIGINAL_USER_HEADER`], `x-lienthong-component: router`) could have been
/// anyone's: it speaks for no one (`""`), so its replay is checked as a sender-mismatch
/// instead of passing as the bus's.
fn first_publisher(props: &BasicProperties, bus_user: Option<&str>) -> String {
    let user = props.user_id().as_ref().map(|u| u.as_str());
    if user.is_some()
        && user == bus_user
        && header_str(props, ORIGINAL_USER_HEADER).is_none()
        && header_str(props, headers::COMPONENT).as_deref() == Some("router")
    {
        return String::new();
    }
    lienthong_core::senders::original_user(props, bus_user)
}

/// Move a dead letter to the tail of the dead-letter queue: the same body and headers (its
/// reason, its history), the first publisher kept in [`ORIGINAL_USER_HEADER`] (the broker
/// stamps the bus's user on the copy).
async fn move_to_tail(
    publisher: &Publisher,
    names: &Names,
    d: &lapin::message::Delivery,
    original: &str,
) -> Result<(), lienthong_core::amqp::PublishError> {
    let mut h = d.properties.headers().clone().unwrap_or_default();
    h.insert(
        ORIGINAL_USER_HEADER.into(),
        AMQPValue::LongString(LongString::from(original)),
    );
    // No per-message TTL: a dead letter stays until it is replayed or removed.
    let props = without_expiration(&d.properties)
        .with_headers(h)
        .with_delivery_mode(2);
    publisher
        .publish("", &names.dead_letter_queue(), &d.data, props, true)
        .await
}

/// The properties of a replayed message: back in as new, without the dead-letter and retry
/// bookkeeping of its last journey; when and by whom it was replayed; and the user that first
/// published it (the bus republishes it as its own broker user, so the router checks the
/// sender against that user instead; `""` when it had none: still a sender-mismatch).
fn replay_properties(props: &BasicProperties, original: &str, by: &str) -> BasicProperties {
    let h = props.headers().clone().unwrap_or_default();
    let mut kept: std::collections::BTreeMap<_, _> = h
        .inner()
        .iter()
        .filter(|(k, _)| {
            !k.as_str().starts_with("x-lienthong-")
                && !k.as_str().starts_with("x-death")
                && !k.as_str().contains("-death-")
        })
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    kept.insert(
        "x-lienthong-replayed-at".into(),
        AMQPValue::LongString(LongString::from(lienthong_core::clock::now_rfc3339())),
    );
    kept.insert(
        "x-lienthong-replayed-by".into(),
        AMQPValue::LongString(LongString::from(by)),
    );
    kept.insert(
        ORIGINAL_USER_HEADER.into(),
        AMQPValue::LongString(LongString::from(original)),
    );
    without_expiration(props)
        .with_headers(kept.into())
        .with_delivery_mode(2)
}

/// `props` without `expiration` (a publisher's per-message TTL, which would send a moved dead
/// letter to parking, or let a replayed message expire on the way); every other property kept.
fn without_expiration(props: &BasicProperties) -> BasicProperties {
    let mut out = BasicProperties::default();
    if let Some(v) = props.content_type() {
        out = out.with_content_type(v.clone());
    }
    if let Some(v) = props.content_encoding() {
        out = out.with_content_encoding(v.clone());
    }
    if let Some(v) = props.headers() {
        out = out.with_headers(v.clone());
    }
    if let Some(v) = props.delivery_mode() {
        out = out.with_delivery_mode(*v);
    }
    if let Some(v) = props.priority() {
        out = out.with_priority(*v);
    }
    if let Some(v) = props.correlation_id() {
        out = out.with_correlation_id(v.clone());
    }
    if let Some(v) = props.reply_to() {
        out = out.with_reply_to(v.clone());
    }
    if let Some(v) = props.message_id() {
        out = out.with_message_id(v.clone());
    }
    if let Some(v) = props.timestamp() {
        out = out.with_timestamp(*v);
    }
    if let Some(v) = props.kind() {
        out = out.with_type(v.clone());
    }
    if let Some(v) = props.user_id() {
        out = out.with_user_id(v.clone());
    }
    if let Some(v) = props.app_id() {
        out = out.with_app_id(v.clone());
    }
    if let Some(v) = props.cluster_id() {
        out = out.with_cluster_id(v.clone());
    }
    out
}

/// Replayed messages not yet recorded in the store.
#[derive(Default)]
struct Pending {
    /// Each message id with the time it was taken from the queue (ms since the epoch): its
    /// dead-letter log rows up to then are marked, not a later one (the replayed message
    /// dead-lettered again meanwhile).
    marks: Vec<(String, i64)>,
    events: Vec<TraceEvent>,
    since: Option<std::time::Instant>,
}

impl Pending {
    fn push(&mut self, id: String, taken_ms: i64, event: TraceEvent) {
        self.since.get_or_insert_with(std::time::Instant::now);
        self.marks.push((id, taken_ms));
        self.events.push(event);
    }

    /// Time to write: 200 waiting, or the oldest waits for a second.
    fn due(&self) -> bool {
        self.marks.len() >= 200
            || self
                .since
                .is_some_and(|t| t.elapsed() >= std::time::Duration::from_secs(1))
    }

    /// Write what waits (see [`record`]); the error when it could not be written.
    async fn flush(&mut self, who: &Replayer<'_>) -> Option<String> {
        self.since = None;
        let marks = std::mem::take(&mut self.marks);
        let events = std::mem::take(&mut self.events);
        record(who, marks, events).await
    }
}

/// The `replayed` trace event of the message `id` with body `body`: its dossier, kind and
/// parties when the body is an envelope whose sender its first publisher may speak for
/// (`speaks_for`); a message published as someone else stays out of the dossier's trace, as the
/// router keeps it out.
fn replayed_event(
    who: &Replayer<'_>,
    id: &str,
    body: &[u8],
    speaks_for: &dyn Fn(&str) -> bool,
) -> TraceEvent {
    let mut ev = TraceEvent::new(TraceEventKind::Replayed, who.component, None)
        .message_id(id)
        .reason(format!("by {}", who.by));
    let env: Option<serde_json::Value> = serde_json::from_slice(body).ok();
    let field = |k: &str| {
        env.as_ref()
            .and_then(|v| v.get(k))
            .and_then(serde_json::Value::as_str)
            .map(str::to_string)
    };
    if field("sender").is_some_and(|s| speaks_for(&s)) {
        ev.ma_ho_so = field("ma_ho_so");
        ev.kind = field("kind");
        ev.correlation_id = field("correlation_id");
        ev.from = field("sender");
        ev.to = field("receiver");
    }
    ev
}

/// Write replays into the store: the trace events and the dead-letter log's marks (each id's rows
/// up to the time it was taken), in one transaction. Returns the error when it failed (the
/// replay itself stands).
async fn record(
    who: &Replayer<'_>,
    marks: Vec<(String, i64)>,
    events: Vec<TraceEvent>,
) -> Option<String> {
    if marks.is_empty() {
        return None;
    }
    let by = who.by.clone();
    let now = lienthong_core::clock::now_ms();
    match who
        .writer
        .transact(move |c| {
            mark_replayed_in(c, &marks, now, &by)?;
            insert_events_in(c, &events)
        })
        .await
    {
        Ok(()) => None,
        Err(e) => {
            tracing::error!(message = "a replay could not be recorded in the store", error = %e);
            Some(e)
        }
    }
}

/// Put stored envelopes (see [`lienthong_core::store::MessageSelection`]) back on their
/// receivers' queues, each with a publisher confirm. Receivers see the same message id again:
/// adapters skip what they already delivered; units dedupe by message id. Returns the ids.
pub async fn resend(
    settings: &Settings,
    sel: &lienthong_core::store::MessageSelection,
) -> anyhow::Result<Vec<String>> {
    let store = lienthong_core::store::Store::open(settings.store.location())?;
    let messages = store.stored_messages(sel)?;
    let names = Names::new(&settings.bus.prefix);
    let conn = std::sync::Arc::new(
        crate::run::connect(settings, &format!("{}/resend", settings.bus.prefix)).await?,
    );
    crate::run::apply_topology(settings, &conn).await?;
    let publisher = Publisher::new(&conn, settings.bus.confirm_timeout_ms).await?;
    let mut done = Vec::new();
    for m in messages {
        let env: lienthong_core::Envelope = serde_json::from_slice(&m.body)?;
        let mut props = lienthong_core::amqp::envelope_properties(&env);
        let mut h = props.headers().clone().unwrap_or_default();
        h.insert(
            "x-lienthong-resent-at".into(),
            AMQPValue::LongString(LongString::from(lienthong_core::clock::now_rfc3339())),
        );
        props = props.with_headers(h);
        publisher
            .publish(&names.deliver_exchange(), &m.receiver, &m.body, props, true)
            .await
            .map_err(|e| anyhow::anyhow!("resending {}: {e}", m.message_id))?;
        done.push(m.message_id);
    }
    let _ = conn.close(200, "resend done".into()).await;
    Ok(done)
}
