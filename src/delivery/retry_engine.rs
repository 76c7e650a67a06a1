//! The retry engine of the delivery component: everything that happens between an adapter's
//! classified outcome and the message's end. The adapter only classifies (delivered,
//! transient, unknown, permanent: [`lienthong_adapters::Outcome`]); this module decides.
//!
//! 1. **Status lookup first.** A message whose last round ended in an unknown outcome
//!    (header [`headers::OUTCOME_UNKNOWN`]) is looked up at the agency before it is sent
//!    again ([`resolve_unknown`]): a readable "found" at status 2 or later is delivered;
//!    anything else sends again.
//! 2. **In-process attempts** ([`attempts`]): transient and unknown outcomes are retried with
//!    the same [`AgencyRequest`] (the same bytes under the same idempotency key), backon's
//!    exponential backoff with jitter (`[retry] min_delay_ms`, `max_delay_ms`, `factor`,
//!    `max_retries`), waiting at least the agency's `Retry-After`; a `Retry-After` longer than
//!    `max_delay_ms` ends the in-process attempts at once. Permanent outcomes stop at once.
//!    Attempts whose 2xx answer could not be read are counted, with the last excerpt.
//! 3. **Delayed rounds** ([`Engine::park_or_give_up`]): when the in-process attempts run out,
//!    the message is published to the delayed retry exchange of the next step of
//!    `[retry] delays_ms` (the smallest step that honours `Retry-After`) with its
//!    [`headers`] (rounds, first attempt, reason history, unknown outcome, unreadable
//!    answers), and acked; nothing stays unacked while it waits. While the retry exchange
//!    cannot take it, the delivery is **held** ([`lienthong_core::hold::Hold`]), not requeued
//!    (a requeue would call the agency again).
//! 4. **Giving up**: past `max_delayed_attempts` rounds or `max_age_ms`, the verdict is a
//!    `retries-exhausted` dead letter with the whole reason history; a permanent outcome is an
//!    `agency-refused` one. The worker settles the delivery with it.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};
use lapin::message::Delivery;
use lapin::types::{AMQPValue, FieldTable, LongString};
use lienthong_adapters::{Adapter, AgencyRequest, Outcome, StatusLookup};
use lienthong_core::amqp::{Publisher, header_i64, header_str};
use lienthong_core::envelope::{Envelope, RejectCode, Rejection};
use lienthong_core::hold::Hold;
use lienthong_core::registry::{RetrySettings, Unit};
use lienthong_core::topology::Names;
use lienthong_core::trace::{TraceEvent, TraceEventKind, Tracer};
use tokio::sync::watch;

/// Headers a message carries through delayed retry rounds.
pub mod headers {
    /// Delayed retry rounds so far (integer).
    pub const DELAYED_ATTEMPTS: &str = "x-lienthong-delayed-attempts";
    /// When the first attempt was made, ms since the epoch.
    pub const FIRST_ATTEMPT_AT: &str = "x-lienthong-first-attempt-at";
    /// Reasons of every failed attempt so far, one per line (the last 30, each clipped to 300
    /// characters).
    pub const HISTORY: &str = "x-lienthong-history";
    /// `true` when the last attempt's outcome was unknown: resolve by a status lookup first.
    pub const OUTCOME_UNKNOWN: &str = "x-lienthong-outcome-unknown";
    /// Unreadable answers so far (attempts and status lookups, every round).
    pub const UNREADABLE_ANSWERS: &str = "x-lienthong-unreadable-answers";
    /// `true` once an operator was alerted about them (one alert per message).
    pub const UNREADABLE_ALERTED: &str = "x-lienthong-unreadable-alerted";
}

/// The end of a message's in-process attempts.
#[derive(Debug, Clone, PartialEq)]
pub enum Final {
    /// Delivered after `attempts` attempts.
    Delivered {
        /// Agency receipt.
        receipt: String,
        /// Attempts made (1 = first try).
        attempts: u32,
        /// Attempts before the receipt whose 2xx answer could not be read
        /// ([`Outcome::Unknown`] with an answer).
        unreadable_answers: u32,
        /// Excerpt (at most 300 characters) of the last of them.
        last_unreadable_answer: Option<String>,
    },
    /// Permanent failure, or transient failures past the retry limit.
    Failed {
        /// The last reason.
        reason: String,
        /// Whether the last failure was transient (the retries ran out).
        exhausted: bool,
        /// Attempts made.
        attempts: u32,
        /// Every failed attempt's reason, oldest first.
        history: Vec<String>,
        /// The agency's last Retry-After, if it asked for a wait.
        retry_after: Option<Duration>,
        /// The last attempt's outcome is unknown (the request may have been taken).
        unknown: bool,
        /// Attempts whose 2xx answer could not be read as the agency's answer, in this run.
        unreadable_answers: u32,
        /// Excerpt (at most 300 characters) of the last of them.
        last_unreadable_answer: Option<String>,
    },
}

impl Final {
    /// (unreadable answers, last excerpt) of this run.
    pub fn unreadable(&self) -> (u32, Option<String>) {
        match self {
            Final::Delivered {
                unreadable_answers,
                last_unreadable_answer,
                ..
            }
            | Final::Failed {
                unreadable_answers,
                last_unreadable_answer,
                ..
            } => (*unreadable_answers, last_unreadable_answer.clone()),
        }
    }
}

/// A failed attempt, as the retry loop sees it.
#[derive(Debug, Clone)]
struct Failure {
    reason: String,
    transient: bool,
    unknown: bool,
    retry_after: Option<Duration>,
}

/// Send `req` through `adapter`, retrying transient and unknown outcomes in process per
/// `settings` (step 2 of the module doc): every attempt sends the same request.
/// `on_retry(attempt, reason, delay)` is called before each retry's sleep (for the trace).
pub async fn attempts<F>(
    adapter: &dyn Adapter,
    req: &AgencyRequest,
    settings: &RetrySettings,
    on_retry: F,
) -> Final
where
    F: Fn(u32, &str, Duration) + Send + Sync,
{
    let attempts = Arc::new(Mutex::new(0u32));
    let history: Arc<Mutex<Vec<String>>> = Arc::default();
    // (count, last excerpt) of the answers that could not be read.
    let unreadable: Arc<Mutex<(u32, Option<String>)>> = Arc::default();
    let max_delay = Duration::from_millis(settings.max_delay_ms);
    let backoff = ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(settings.min_delay_ms))
        .with_max_delay(max_delay)
        .with_factor(settings.factor)
        .with_max_times(settings.max_retries)
        .with_jitter();
    let op = || {
        let attempts = attempts.clone();
        let history = history.clone();
        let unreadable = unreadable.clone();
        async move {
            let n = match attempts.lock() {
                Ok(mut n) => {
                    *n += 1;
                    *n
                }
                Err(_) => 0,
            };
            let attempt = lienthong_core::telemetry::in_span(
                lienthong_core::telemetry::Stage::Attempt,
                || None,
                || {
                    vec![lienthong_core::telemetry::KeyValue::new(
                        "lienthong.attempt",
                        i64::from(n),
                    )]
                },
                adapter.attempt(req),
            );
            let failure = match attempt.await {
                Outcome::Delivered { receipt } => return Ok(receipt),
                Outcome::Transient {
                    reason,
                    retry_after,
                } => Failure {
                    reason,
                    transient: true,
                    unknown: false,
                    retry_after,
                },
                Outcome::Unknown { reason, answer } => {
                    if let Some(a) = answer
                        && let Ok(mut u) = unreadable.lock()
                    {
                        u.0 += 1;
                        u.1 = Some(a);
                    }
                    Failure {
                        reason: format!(
                            "outcome unknown, retrying with the same Idempotency-Key: {reason}"
                        ),
                        transient: true,
                        unknown: true,
                        retry_after: None,
                    }
                }
                Outcome::Permanent { reason } => Failure {
                    reason,
                    transient: false,
                    unknown: false,
                    retry_after: None,
                },
            };
            if let Ok(mut h) = history.lock() {
                h.push(failure.reason.clone());
            }
            Err(failure)
        }
    };
    let count = || attempts.lock().map(|n| *n).unwrap_or(0);
    let result = op
        .retry(backoff)
        .sleep(tokio::time::sleep)
        .when(|f: &Failure| f.transient && f.retry_after.is_none_or(|ra| ra <= max_delay))
        .adjust(|f: &Failure, d: Option<Duration>| {
            d.map(|d| f.retry_after.map_or(d, |ra| ra.max(d)))
        })
        .notify(|f: &Failure, d: Duration| on_retry(count(), &f.reason, d))
        .await;
    let attempts = count();
    let (unreadable_answers, last_unreadable_answer) =
        unreadable.lock().map(|u| u.clone()).unwrap_or_default();
    match result {
        Ok(receipt) => Final::Delivered {
            receipt,
            attempts,
            unreadable_answers,
            last_unreadable_answer,
        },
        Err(f) => Final::Failed {
            reason: f.reason,
            exhausted: f.transient,
            attempts,
            history: history.lock().map(|h| h.clone()).unwrap_or_default(),
            retry_after: f.retry_after,
            unknown: f.unknown,
            unreadable_answers,
            last_unreadable_answer,
        },
    }
}

/// What the status lookup after an unknown outcome came to (step 1 of the module doc).
#[derive(Debug, Clone, PartialEq)]
pub enum Resolution {
    /// The agency has the dossier at status 2 or later: delivered, with this receipt.
    Delivered(String),
    /// Send again; `unreadable` holds the excerpt when the lookup's answer could not be read.
    SendAgain {
        /// Excerpt of an unreadable lookup answer.
        unreadable: Option<String>,
    },
}

/// Whether a delivery's last round left its outcome unknown (its headers say so).
pub fn was_unknown(props: &lapin::BasicProperties) -> bool {
    header_str(props, headers::OUTCOME_UNKNOWN).as_deref() == Some("true")
}

/// Look `env`'s dossier up at the agency before sending again a forward whose last round's
/// outcome was unknown. Only a readable "found" at status 2 or later is delivered.
pub async fn resolve_unknown(adapter: &dyn Adapter, env: &Envelope) -> Resolution {
    match adapter.status(&env.ma_ho_so).await {
        StatusLookup::Found(st) if st.status >= 2 => Resolution::Delivered(
            st.receipt
                .clone()
                .unwrap_or_else(|| format!("TrangThaiHoSo {}", st.status)),
        ),
        StatusLookup::Unreadable { answer, .. } => Resolution::SendAgain {
            unreadable: Some(answer),
        },
        _ => Resolution::SendAgain { unreadable: None },
    }
}

/// Unreadable answers of one message so far: how many, the last one's excerpt, and whether the
/// operator was alerted (carried in [`headers`] through the delayed rounds).
#[derive(Debug, Clone, Default)]
pub struct Unreadable {
    /// How many so far (every round).
    pub count: u32,
    /// Excerpt (at most 300 characters) of the last one, if this round saw one.
    pub last: Option<String>,
    /// Whether the operator was alerted already.
    pub alerted: bool,
}

impl Unreadable {
    /// The count and alert flag a delivery carries.
    pub fn from_headers(props: &lapin::BasicProperties) -> Unreadable {
        Unreadable {
            count: header_i64(props, headers::UNREADABLE_ANSWERS)
                .unwrap_or(0)
                .clamp(0, i64::from(u32::MAX)) as u32,
            last: None,
            alerted: header_str(props, headers::UNREADABLE_ALERTED).as_deref() == Some("true"),
        }
    }

    /// Count `n` more, `last` being the latest excerpt if any.
    pub fn add(&mut self, n: u32, last: Option<String>) {
        self.count = self.count.saturating_add(n);
        if last.is_some() {
            self.last = last;
        }
    }
}

/// `lienthong_messages_parked_total{unit, delay_ms}`: messages parked in a delayed retry queue
/// (`delay_ms`: its wait, `10000`, `60000`, …) after their in-process attempts ran out.
pub const PARKED_TOTAL: &str = "lienthong_messages_parked_total";

/// What becomes of a message whose in-process attempts ran out.
#[derive(Debug)]
pub enum Verdict {
    /// Published to a delayed retry queue and acked.
    Parked,
    /// The retry queue could not take it (shutdown, or the hold gave up): requeued.
    Requeued,
    /// Give up: dead-letter with this rejection, attempts and reason history.
    GiveUp {
        /// `retries-exhausted`, with the unit and the last reason.
        rejection: Rejection,
        /// Attempts of the last round.
        attempts: u32,
        /// Every reason, every round, oldest first.
        history: Vec<String>,
    },
}

/// The failed end of the in-process attempts, as [`Engine::park_or_give_up`] takes it.
#[derive(Debug, Clone)]
pub struct Exhausted {
    /// Attempts of this round.
    pub attempts: u32,
    /// This round's reasons, oldest first.
    pub history: Vec<String>,
    /// The agency's last Retry-After.
    pub retry_after: Option<Duration>,
    /// Whether the last outcome was unknown.
    pub unknown: bool,
}

/// The delayed-round machinery of one unit.
#[derive(Clone)]
pub struct Engine {
    /// The unit delivered to.
    pub unit: Unit,
    /// Trace component name (`adapter:<code>`).
    pub component: String,
    /// `[retry]`.
    pub settings: RetrySettings,
    /// Exchange and queue names.
    pub names: Names,
    /// The channel that publishes to the delayed retry exchanges.
    pub retry: Publisher,
    /// Trace events of the rounds.
    pub tracer: Tracer,
    /// Shutdown, which ends a hold.
    pub shutdown: watch::Receiver<bool>,
    /// Component name for holds (`adapters`).
    pub hold_component: &'static str,
}

impl Engine {
    /// After the in-process attempts ran out (steps 3 and 4 of the module doc): park `d` in the
    /// delayed retry queue of the next step, holding it while the queue cannot take it, or,
    /// past `max_delayed_attempts` rounds or `max_age_ms`, give up.
    pub async fn park_or_give_up(
        &self,
        d: &Delivery,
        env: &Envelope,
        ex: Exhausted,
        unreadable: &Unreadable,
    ) -> Verdict {
        let rs = &self.settings;
        let rounds = header_i64(&d.properties, headers::DELAYED_ATTEMPTS)
            .unwrap_or(0)
            .max(0) as u32;
        let now = lienthong_core::clock::now_ms();
        let first = header_i64(&d.properties, headers::FIRST_ATTEMPT_AT).unwrap_or(now);
        let mut all: Vec<String> = header_str(&d.properties, headers::HISTORY)
            .map(|h| h.lines().map(str::to_string).collect())
            .unwrap_or_default();
        all.extend(ex.history);
        let last = all.last().cloned().unwrap_or_default();
        let age_ms = (now - first).max(0) as u64;
        if rounds >= rs.max_delayed_attempts || age_ms >= rs.max_age_ms || rs.delays_ms.is_empty() {
            let rejection = Rejection::new(
                RejectCode::RetriesExhausted,
                format!(
                    "{} ({}) still failing after {} delayed rounds over {} s (last: {last})",
                    self.unit.name,
                    self.unit.code,
                    rounds,
                    age_ms / 1000
                ),
            );
            let ev = TraceEvent::new(TraceEventKind::Failed, &self.component, Some(env))
                .attempt(ex.attempts)
                .reason(last);
            let _ = self.tracer.emit(&ev).await;
            return Verdict::GiveUp {
                rejection,
                attempts: ex.attempts,
                history: all,
            };
        }
        let delay = next_delay(rs, rounds, ex.retry_after);
        let props = d
            .properties
            .clone()
            .with_headers(round_headers(
                d.properties.headers().clone().unwrap_or_default(),
                rounds + 1,
                first,
                &all,
                ex.unknown,
                unreadable,
            ))
            .with_delivery_mode(2);
        let exchange = self.names.retry(delay);
        // Held (not requeued, which would call the agency again) while the retry queue cannot
        // take it.
        let mut hold = Hold::new(self.hold_component, Some(self.shutdown.clone()));
        let parked = loop {
            match self
                .retry
                .publish(&exchange, &self.unit.code, &d.data, props.clone(), true)
                .await
            {
                Ok(()) => break Ok(()),
                Err(e) => {
                    if !hold
                        .again(&format!("cannot park the message in {exchange}: {e}"))
                        .await
                    {
                        break Err(e);
                    }
                }
            }
        };
        match parked {
            Ok(()) => {
                metrics::counter!(
                    PARKED_TOTAL,
                    "unit" => self.unit.code.clone(),
                    "delay_ms" => delay.to_string()
                )
                .increment(1);
                let ev = TraceEvent::new(TraceEventKind::Retried, &self.component, Some(env))
                    .attempt(ex.attempts)
                    .reason(format!(
                        "{last}; waiting {delay} ms in {exchange} (delayed round {} of at most {})",
                        rounds + 1,
                        rs.max_delayed_attempts
                    ));
                let _ = self.tracer.emit(&ev).await;
                Verdict::Parked
            }
            Err(e) => {
                tracing::error!(message = "cannot park the message in the delayed retry queue; requeueing", error = %e);
                Verdict::Requeued
            }
        }
    }
}

/// The delay (ms) of delayed round `rounds + 1`: the next configured step, or the smallest one
/// that honours `retry_after` (the largest when none does).
fn next_delay(rs: &RetrySettings, rounds: u32, retry_after: Option<Duration>) -> u64 {
    let mut delay = rs.delays_ms[(rounds as usize).min(rs.delays_ms.len() - 1)];
    if let Some(ra) = retry_after {
        let ra = ra.as_millis() as u64;
        delay = rs
            .delays_ms
            .iter()
            .copied()
            .find(|s| *s >= ra.max(delay))
            .unwrap_or_else(|| rs.delays_ms.iter().copied().max().unwrap_or(delay));
    }
    delay
}

/// The headers of a parked message: the delivery's own, without the broker's `x-death`
/// records (a fresh publish, not a dead-letter hop: its cycle detection never sees a loop),
/// with the round's [`headers`].
fn round_headers(
    kept: FieldTable,
    round: u32,
    first_attempt_ms: i64,
    history: &[String],
    unknown: bool,
    unreadable: &Unreadable,
) -> FieldTable {
    let kept: std::collections::BTreeMap<_, _> = kept
        .inner()
        .iter()
        .filter(|(k, _)| {
            !k.as_str().starts_with("x-death")
                && !k.as_str().starts_with("x-first-death")
                && !k.as_str().starts_with("x-last-death")
        })
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let mut h: FieldTable = kept.into();
    let hist: Vec<String> = history
        .iter()
        .rev()
        .take(30)
        .rev()
        .map(|h| lienthong_core::envelope::clip(h, 300))
        .collect();
    let flag = |b: bool| AMQPValue::LongString(LongString::from(if b { "true" } else { "false" }));
    h.insert(
        headers::DELAYED_ATTEMPTS.into(),
        AMQPValue::LongLongInt(i64::from(round)),
    );
    h.insert(
        headers::FIRST_ATTEMPT_AT.into(),
        AMQPValue::LongLongInt(first_attempt_ms),
    );
    h.insert(
        headers::HISTORY.into(),
        AMQPValue::LongString(LongString::from(hist.join("\n"))),
    );
    h.insert(headers::OUTCOME_UNKNOWN.into(), flag(unknown));
    h.insert(
        headers::UNREADABLE_ANSWERS.into(),
        AMQPValue::LongLongInt(i64::from(unreadable.count)),
    );
    h.insert(headers::UNREADABLE_ALERTED.into(), flag(unreadable.alerted));
    h
}
