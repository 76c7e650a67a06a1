//! The process manager inside the router: applies each message of a dossier the bus runs
//! ([`lienthong_core::process`]) in one savepoint of the process's group commit (inbox + state +
//! outbox + origin), then publishes
//! the outbox with publisher confirms; and the sweeper that re-publishes what a crash left in
//! the outbox and raises due-soon / overdue alerts (trace, metric, webhook).

use std::time::Duration;

use chrono::{DateTime, FixedOffset};
use lapin::message::Delivery;
use lapin::options::BasicAckOptions;
use lienthong_core::amqp::{PublishError, Publisher};
use lienthong_core::envelope::{Envelope, Rejection};
use lienthong_core::hold::Hold;
use lienthong_core::process::{self, OverdueItem};
use lienthong_core::store::{Applied, DossierNote, Origin};
use lienthong_core::trace::{TraceEvent, TraceEventKind, Tracer};

use crate::context::Ctx;

const COMPONENT: &str = "process";

/// Why an operator's retry ([`ProcessManager::retry`]) did nothing.
#[derive(Debug)]
pub enum RetryError {
    /// The bus does not run the dossier.
    NotRun,
    /// The dossier has no step of that id (the text lists its steps).
    NoSuchStep(String),
    /// Nothing (or not that step) is blocked.
    NothingBlocked(String),
    /// Store or broker trouble: try again.
    Failed(String),
}

/// Why a message could not be applied.
#[derive(Debug)]
pub enum PmError {
    /// The message is wrong for this dossier: dead-letter it with this reason.
    Reject(Rejection),
    /// Store or broker trouble: requeue the delivery and try again.
    Retry(String),
}

/// The process manager's handles (cheap to clone).
#[derive(Clone)]
pub struct ProcessManager {
    ctx: Ctx,
    publisher: Publisher,
    tracer: Tracer,
    /// One flush at a time, so that two results of one dossier arriving together do not publish
    /// the same outbox entry twice.
    flushing: std::sync::Arc<tokio::sync::Mutex<()>>,
}

/// "Now" for the process manager: the clock, moved by `LIENTHONG_CLOCK_OFFSET_S` seconds when
/// that variable is set in a `testing` build (tests use it to run a dossier across working days;
/// other builds refuse it: [`crate::testing`]).
pub fn now() -> DateTime<FixedOffset> {
    lienthong_core::clock::now_vn() + chrono::Duration::seconds(crate::testing::clock_offset_s())
}

impl ProcessManager {
    /// A process manager publishing on `publisher` and tracing on `tracer`.
    pub fn new(ctx: Ctx, publisher: Publisher, tracer: Tracer) -> Self {
        // Every series exists from the start at 0, so that `rate()` and `increase()` see the
        // first step and the first completed dossier of each timeliness.
        for t in ["early", "on_time", "late"] {
            metrics::counter!(STEPS_TOTAL, "timeliness" => t).increment(0);
            metrics::counter!(COMPLETED_TOTAL, "timeliness" => t).increment(0);
        }
        ProcessManager {
            ctx,
            publisher,
            tracer,
            flushing: Default::default(),
        }
    }

    /// Whether `env` is the process manager's: a forward with no receiver, or any message of a
    /// dossier it runs (`runs`, from [`lienthong_core::store::Store::lookup_dossier`]), except the
    /// centre's own messages to the national portal.
    pub async fn manages(&self, env: &Envelope, runs: bool) -> bool {
        // A message to the national portal is routed as usual, unless it is the process
        // manager's own portal update coming back as a replayed dead letter.
        process::manages(&self.ctx.registry, env, runs)
            || (runs && self.own_message(&env.message_id).await.is_some())
    }

    /// The dossier of `message_id` when the process manager sent that message (it comes back
    /// through the ingress when an operator replays its dead letter).
    async fn own_message(&self, message_id: &str) -> Option<String> {
        let id = message_id.to_string();
        match self.ctx.store.read(move |s| s.outbox_dossier(&id)).await {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!(message = "cannot read the process outbox", error = %e);
                None
            }
        }
    }

    /// Apply `env` and publish what follows. Ok(()) once everything it caused is confirmed by
    /// the broker (the caller then acks the delivery).
    pub async fn handle(&self, env: &Envelope) -> Result<(), PmError> {
        if let Some(ma) = self.own_message(&env.message_id).await {
            // A replayed dead letter of a message the process manager sent: publish it again (same
            // id) and resume what it blocked.
            let id = env.message_id.clone();
            return self
                .apply_event(&ma, move |_, p| Ok(process::replayed(p, &id)))
                .await;
        }
        let e = env.clone();
        // A filing records the dossier's origin, in the same savepoint as its first state.
        let origin = process::starts_process(env).then(|| Origin {
            ma_ho_so: env.ma_ho_so.clone(),
            ma_tthc: env.ma_tthc.clone(),
            origin_unit: env.sender.clone(),
            correlation_id: env.correlation_id.clone(),
        });
        let applied = self
            .apply(
                Some(env.message_id.clone()),
                &env.ma_ho_so,
                origin,
                move |ctx, current| match current {
                    Some(p) => process::advance(ctx, p, &e).map(Some),
                    None if process::starts_process(&e) => process::start(ctx, &e).map(Some),
                    None => Ok(None),
                },
            )
            .await?;
        let only = match applied {
            Applied::Rejected(r) => return Err(PmError::Reject(r)),
            Applied::Duplicate => {
                tracing::info!(
                    message = "message already applied; publishing what is left in the outbox",
                    ma_ho_so = env.ma_ho_so,
                    message_id = env.message_id
                );
                None
            }
            Applied::Done { notes, outbox, .. } => {
                // Crash test hook: the state and the outbox are committed, nothing is published
                // and the delivery is not acked; held until the process is killed.
                #[cfg(feature = "testing")]
                if fail::eval("process-after-commit", |_| ()).is_some() {
                    tracing::warn!(message = "fail point process-after-commit: holding the delivery", ma_ho_so = %env.ma_ho_so, message_id = %env.message_id);
                    std::future::pending::<()>().await;
                }
                count_timeliness(&notes);
                let events = notes
                    .into_iter()
                    .map(|n| TraceEvent::new(TraceEventKind::Step, COMPONENT, Some(env)).reason(n))
                    .collect();
                self.tracer
                    .emit_all(events)
                    .await
                    .map_err(|e| PmError::Retry(e.to_string()))?;
                Some(outbox)
            }
        };
        self.flush_where(Some(&env.ma_ho_so), only.as_deref()).await
    }

    /// Run `f` on dossier `ma`'s stored state in one savepoint of the process's group commit
    /// ([`lienthong_core::store::MessageWriter::apply_process`], deduplicated by `inbox` when
    /// given, recording `origin` with the new state), with the process manager's clock; `f`
    /// runs on the writer thread. `Reject` (not-on-route) when `f` finds no process to act on;
    /// `Retry` for store trouble.
    async fn apply(
        &self,
        inbox: Option<String>,
        ma: &str,
        origin: Option<Origin>,
        f: impl FnOnce(
            &process::Context<'_>,
            Option<process::Process>,
        ) -> Result<Option<process::Transition>, Rejection>
        + Send
        + 'static,
    ) -> Result<Applied, PmError> {
        let registry = self.ctx.registry.clone();
        let calendar = self.ctx.calendar.clone();
        let applied = self
            .ctx
            .writer
            .apply_process(inbox, ma.to_string(), origin, move |current| {
                let ctx = process::Context {
                    registry: &registry,
                    calendar: &calendar,
                    now: now(),
                };
                f(&ctx, current)
            })
            .await
            .map_err(PmError::Retry)?;
        applied.ok_or_else(|| {
            PmError::Reject(Rejection::new(
                lienthong_core::envelope::RejectCode::NotOnRoute,
                format!("dossier {ma} is not run by the process manager"),
            ))
        })
    }

    /// Apply an event the inbox does not deduplicate (a dead letter, a replay, an operator's
    /// retry: each transition is idempotent by itself) to dossier `ma`, trace its notes and
    /// publish what it sends. `Reject` when `f` refuses, or the bus does not run the dossier.
    async fn apply_event(
        &self,
        ma: &str,
        f: impl FnOnce(
            &process::Context<'_>,
            process::Process,
        ) -> Result<process::Transition, Rejection>
        + Send
        + 'static,
    ) -> Result<(), PmError> {
        let applied = self
            .apply(None, ma, None, move |ctx, current| match current {
                Some(p) => f(ctx, p).map(Some),
                None => Ok(None),
            })
            .await?;
        let only = match applied {
            Applied::Rejected(r) => return Err(PmError::Reject(r)),
            Applied::Duplicate => None,
            Applied::Done {
                process,
                notes,
                outbox,
            } => {
                let events = notes
                    .into_iter()
                    .map(|n| {
                        let mut ev =
                            TraceEvent::new(TraceEventKind::Step, COMPONENT, None).reason(n);
                        ev.ma_ho_so = Some(process.ma_ho_so.clone());
                        ev
                    })
                    .collect();
                self.tracer
                    .emit_all(events)
                    .await
                    .map_err(|e| PmError::Retry(e.to_string()))?;
                Some(outbox)
            }
        };
        self.flush_where(Some(ma), only.as_deref()).await
    }

    /// A dead letter on `<p>.dead.process`: when it is a message the process manager sent for a
    /// dossier it runs, block what waits on it ([`process::dead_lettered`]); anything else is
    /// not the process manager's and is only acked (the tracer logs every dead letter).
    pub async fn dead_letter(&self, d: Delivery) {
        let (row, _) = lienthong_core::deadletter::read_dead_letter(&d.data, &d.properties);
        let env = serde_json::from_slice::<Envelope>(&d.data).ok();
        let mine = match &env {
            Some(e) => self.own_message(&e.message_id).await,
            None => None,
        };
        let (Some(e), Some(ma)) = (env, mine) else {
            let _ = d.ack(BasicAckOptions::default()).await;
            return;
        };
        let notice = process::DeadLetterNotice {
            message_id: e.message_id.clone(),
            kind: e.kind.0.clone(),
            status: e.status.map(|s| s.0),
            receiver: e.receiver.clone().unwrap_or_default(),
            reason_code: row.reason_code,
            reason: row.reason,
        };
        tracing::warn!(
            message =
                "a message of a dossier the bus runs was dead-lettered; blocking what waits on it",
            ma_ho_so = ma,
            message_id = e.message_id,
            reason_code = notice.reason_code
        );
        // Held and tried again while the store fails (a requeue counts against the queue's
        // delivery limit).
        let mut hold = Hold::new("process dead letters", Some(self.ctx.shutdown.clone()));
        loop {
            let n = notice.clone();
            match self
                .apply_event(&ma, move |ctx, p| Ok(process::dead_lettered(ctx, p, &n)))
                .await
            {
                Ok(()) | Err(PmError::Reject(_)) => {
                    let _ = d.ack(BasicAckOptions::default()).await;
                    return;
                }
                Err(PmError::Retry(e)) => {
                    if !hold
                        .again(&format!("cannot record a dead letter in the process: {e}"))
                        .await
                    {
                        crate::consume::requeue(&d).await;
                        return;
                    }
                }
            }
        }
    }

    /// An operator (`by`) hands the blocked steps of dossier `ma` over again — every one, or only
    /// `step` — with the dossier's current data and new message ids; a blocked result, cancel
    /// or portal update goes out again unchanged ([`process::retry_blocked`]). Ok once
    /// published.
    pub async fn retry(&self, ma: &str, step: Option<String>, by: &str) -> Result<(), RetryError> {
        let key = ma.to_string();
        let p = self
            .ctx
            .store
            .read(move |s| s.process(&key))
            .await
            .map_err(|e| RetryError::Failed(e.to_string()))?
            .ok_or(RetryError::NotRun)?;
        if let Some(id) = &step
            && !p.steps.iter().any(|s| &s.id == id)
        {
            return Err(RetryError::NoSuchStep(format!(
                "dossier {ma} has no step {id:?} (its steps: {})",
                p.steps
                    .iter()
                    .map(|s| s.id.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
        let by = by.to_string();
        self.apply_event(ma, move |ctx, p| {
            process::retry_blocked(ctx, p, step.as_deref(), &by)
        })
        .await
        .map_err(|e| match e {
            PmError::Reject(r) if r.code == lienthong_core::envelope::RejectCode::NotOnRoute => {
                RetryError::NotRun
            }
            PmError::Reject(r) => RetryError::NothingBlocked(r.detail),
            PmError::Retry(e) => RetryError::Failed(e),
        })
    }

    /// Publish the outbox (of one dossier, or everything older than 5 s), each envelope with a
    /// publisher confirm, then mark it sent.
    pub async fn flush(&self, ma_ho_so: Option<&str>) -> Result<(), PmError> {
        self.flush_where(ma_ho_so, None).await
    }

    /// [`Self::flush`], of the envelopes `only` names when given: those of the transition this
    /// process just applied (a transition of the same dossier applied by another process, a
    /// router on another host, is that process's to publish). `None`: everything unsent (the
    /// sweeper; a message applied before, come again after a crash).
    async fn flush_where(
        &self,
        ma_ho_so: Option<&str>,
        only: Option<&[String]>,
    ) -> Result<(), PmError> {
        if only.is_some_and(|ids| ids.is_empty()) {
            return Ok(());
        }
        let _one = self.flushing.lock().await;
        let key = ma_ho_so.map(str::to_string);
        let mut entries = self
            .ctx
            .store
            .read(move |s| s.unsent(key.as_deref(), 5_000))
            .await
            .map_err(|e| PmError::Retry(e.to_string()))?;
        if let Some(ids) = only {
            entries.retain(|e| ids.contains(&e.message_id));
        }
        for entry in entries {
            let Ok(env) = serde_json::from_slice::<Envelope>(&entry.body) else {
                tracing::error!(message = "unreadable outbox entry skipped", seq = entry.seq);
                continue;
            };
            // Kept in the message store (first copy wins), like every envelope the router routes.
            self.ctx
                .writer
                .accept(
                    None,
                    &env.message_id,
                    DossierNote::of(&env, &entry.receiver),
                    &entry.body,
                )
                .await
                .map_err(PmError::Retry)?;
            // A unit queue deleted by hand is declared again by the publisher (see
            // `Publisher::publish_to_unit`).
            let failed = |e: PublishError| {
                PmError::Retry(format!(
                    "publishing {} to {} failed: {e}",
                    env.kind, entry.receiver
                ))
            };
            let unit_queue = self.ctx.names.unit_queue(&entry.receiver);
            let routed = match self.publish_to(&entry.receiver, &entry.body, &env).await {
                Ok(()) => TraceEvent::new(TraceEventKind::Routed, COMPONENT, Some(&env))
                    .reason(format!("to queue {unit_queue} (process manager)")),
                // The unit's queue is full (reject-publish): park it for that unit, so that the
                // rest of the outbox (other units) goes out.
                Err(PublishError::Nacked) => {
                    let (queue, delay) = lienthong_core::overflow::park_queue_full(
                        &self.publisher,
                        &self.ctx.names,
                        &self.ctx.settings.retry.delays_ms,
                        &entry.receiver,
                        &entry.body,
                        &env,
                    )
                    .await
                    .map_err(failed)?;
                    metrics::counter!("lienthong_queue_full_parked_total", "component" => COMPONENT)
                        .increment(1);
                    TraceEvent::new(TraceEventKind::Retried, COMPONENT, Some(&env)).reason(format!(
                        "{}: the broker refused it for queue {unit_queue} (x-max-length / x-max-length-bytes reached); parked in {queue}, offered to the queue again in {delay} ms (held by the broker while it is still full; process manager)",
                        lienthong_core::overflow::QUEUE_FULL
                    ))
                }
                Err(e) => return Err(failed(e)),
            };
            self.tracer
                .emit(&routed)
                .await
                .map_err(|e| PmError::Retry(e.to_string()))?;
            self.ctx
                .writer
                .mark_sent(entry.seq)
                .await
                .map_err(PmError::Retry)?;
        }
        Ok(())
    }

    async fn publish_to(
        &self,
        receiver: &str,
        body: &[u8],
        env: &Envelope,
    ) -> Result<(), PublishError> {
        self.publisher
            .publish_to_unit(&self.ctx.names.deliver_exchange(), receiver, body, env)
            .await
    }

    /// Run the sweeper until shutdown: every `[process] scan_ms`, publish what a crash left in
    /// the outbox and raise the new due-soon / overdue alerts.
    pub async fn sweep_forever(self) {
        let period = Duration::from_millis(self.ctx.settings.process.scan_ms.max(200));
        let mut stop = self.ctx.shutdown.clone();
        let webhook = crate::alerts::Webhook::new(&self.ctx.settings.process);
        loop {
            if let Err(e) = self.flush(None).await {
                tracing::warn!(message = "outbox sweep failed; trying again later", error = ?e);
            }
            if let Err(e) = self.scan(&webhook).await {
                tracing::warn!(message = "overdue scan failed; trying again later", error = %e);
            }
            tokio::select! {
                _ = tokio::time::sleep(period) => {}
                _ = stop.changed() => return,
            }
        }
    }

    /// One overdue scan: each new alert is traced, counted and sent to the webhook.
    pub async fn scan(&self, webhook: &crate::alerts::Webhook) -> anyhow::Result<usize> {
        let items = {
            let ctx = self.ctx.clone();
            let at = now();
            tokio::task::spawn_blocking(move || overdue(&ctx, at)).await??
        };
        let mut open = std::collections::BTreeMap::<&str, f64>::new();
        for it in &items {
            *open.entry(it.level.as_str()).or_default() += 1.0;
        }
        for level in ["due_soon", "overdue", "blocked"] {
            metrics::gauge!("lienthong_process_alerts_open", "level" => level)
                .set(open.get(level).copied().unwrap_or(0.0));
        }
        let mut new = 0;
        for it in items {
            let fresh = self
                .ctx
                .writer
                .record_alert(it.clone())
                .await
                .map_err(anyhow::Error::msg)?;
            if !fresh {
                continue;
            }
            new += 1;
            metrics::counter!("lienthong_process_alerts_total", "level" => it.level.as_str(), "holder" => it.holder.clone()).increment(1);
            let mut ev = match it.level {
                process::AlertLevel::Blocked => {
                    TraceEvent::new(TraceEventKind::Alert, COMPONENT, None).reason(format!(
                        "blocked: {} (dead letter {}); due {}",
                        it.reason.as_deref().unwrap_or("-"),
                        it.dead_letter_id.as_deref().unwrap_or("-"),
                        it.due
                    ))
                }
                _ => TraceEvent::new(TraceEventKind::Overdue, COMPONENT, None).reason(format!(
                    "{} {}: held by {}, due {} ({} office minutes {})",
                    it.step.as_deref().unwrap_or("dossier"),
                    it.level.as_str(),
                    it.holder,
                    it.due,
                    it.office_secs_left.abs() / 60,
                    if it.office_secs_left < 0 {
                        "late"
                    } else {
                        "left"
                    }
                )),
            };
            ev.ma_ho_so = Some(it.ma_ho_so.clone());
            ev.to = Some(it.holder.clone());
            let _ = self.tracer.emit(&ev).await;
            tracing::warn!(message = "process alert", ma_ho_so = it.ma_ho_so, step = ?it.step, level = it.level.as_str(), holder = it.holder, due = it.due, reason = it.reason.as_deref().unwrap_or("-"));
            webhook.post(&it).await;
        }
        Ok(new)
    }
}

/// Every open step or dossier near or past its due time at `now` (`[process]` margin), most
/// urgent first. Blocking (it reads the store): from async code, on the blocking pool.
pub fn overdue(ctx: &Ctx, now: DateTime<FixedOffset>) -> anyhow::Result<Vec<OverdueItem>> {
    overdue_in(
        &ctx.store,
        &ctx.calendar,
        ctx.settings.process.due_soon_margin_office_hours,
        now,
    )
}

/// [`overdue`] from a store and calendar (for the CLI). Blocking (it reads the store).
pub fn overdue_in(
    store: &lienthong_core::store::Store,
    calendar: &lienthong_core::calendar::WorkCalendar,
    margin_hours: f64,
    now: DateTime<FixedOffset>,
) -> anyhow::Result<Vec<OverdueItem>> {
    let margin = (margin_hours * 3600.0) as i64;
    let mut out: Vec<OverdueItem> = store
        .processes(false)?
        .iter()
        .flat_map(|p| process::overdue_items(p, calendar, now, margin))
        .collect();
    out.sort_by(|a, b| {
        b.level
            .cmp(&a.level)
            .then(a.office_secs_left.cmp(&b.office_secs_left))
    });
    Ok(out)
}

/// `lienthong_process_steps_total{timeliness}`: steps the process manager saw done, by
/// timeliness (`early`, `on_time`, `late`: trước / đúng / quá hạn).
pub const STEPS_TOTAL: &str = "lienthong_process_steps_total";
/// `lienthong_process_dossiers_completed_total{timeliness}`: dossiers completed, by timeliness.
pub const COMPLETED_TOTAL: &str = "lienthong_process_dossiers_completed_total";

/// Count the steps done and the dossiers completed in a transition's notes (`step … done at …:
/// <timeliness>`, `dossier completed: <timeliness>`, the timeliness in Vietnamese as
/// [`lienthong_core::calendar::Timeliness::vi`] writes it).
fn count_timeliness(notes: &[String]) {
    use lienthong_core::calendar::Timeliness;
    let of = |text: &str| {
        [
            (Timeliness::Early, "early"),
            (Timeliness::OnTime, "on_time"),
            (Timeliness::Late, "late"),
        ]
        .into_iter()
        .find(|(t, _)| text.ends_with(t.vi()))
        .map(|(_, name)| name)
    };
    for n in notes {
        if n.starts_with("step ") && n.contains(" done at ") {
            if let Some(t) = of(n) {
                metrics::counter!(STEPS_TOTAL, "timeliness" => t).increment(1);
            }
        } else if n.starts_with("dossier completed: ")
            && let Some(t) = of(n)
        {
            metrics::counter!(COMPLETED_TOTAL, "timeliness" => t).increment(1);
        }
    }
}
