//! The one retry policy every adapter uses: transient and unknown outcomes are retried in
//! process, always with the same idempotency key, with backon's exponential backoff with
//! jitter, capped, waiting at least the agency's Retry-After; permanent outcomes stop at once.
//! A Retry-After longer than the in-process budget stops the in-process retries at once, so the
//! caller can park the message in a delayed retry queue instead of holding the delivery.
//! Attempts whose 2xx answer could not be read are counted, with the last one's excerpt, so the
//! caller can alert an operator (an agency whose front end answers pages instead of receipts).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};
use lienthong_core::Envelope;
use lienthong_core::registry::RetrySettings;

use crate::adapter::{Adapter, Outcome};

/// The end of a delivery with retries.
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
        /// Attempts whose 2xx answer could not be read as the agency's answer
        /// ([`Outcome::Unknown`] with an answer), in this run of retries.
        unreadable_answers: u32,
        /// Excerpt (at most 300 characters, [`crate::http::snippet`]) of the last of them.
        last_unreadable_answer: Option<String>,
    },
}

/// A failed attempt, as the retry loop sees it.
#[derive(Debug, Clone)]
struct Failure {
    reason: String,
    transient: bool,
    unknown: bool,
    retry_after: Option<Duration>,
}

/// Deliver `env` through `adapter`, retrying transient failures per `settings`.
/// `on_retry(attempt, reason, delay)` is called before each retry's sleep (for the trace).
pub async fn deliver_with_retries<F>(
    adapter: &dyn Adapter,
    env: &Envelope,
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
            if let Ok(mut n) = attempts.lock() {
                *n += 1;
            }
            match adapter.deliver(env).await {
                Outcome::Delivered { receipt } => Ok(receipt),
                Outcome::Transient {
                    reason,
                    retry_after,
                } => {
                    if let Ok(mut h) = history.lock() {
                        h.push(reason.clone());
                    }
                    Err(Failure {
                        reason,
                        transient: true,
                        unknown: false,
                        retry_after,
                    })
                }
                Outcome::Unknown { reason, answer } => {
                    if let Some(a) = answer
                        && let Ok(mut u) = unreadable.lock()
                    {
                        u.0 += 1;
                        u.1 = Some(a);
                    }
                    let reason = format!(
                        "outcome unknown, retrying with the same Idempotency-Key: {reason}"
                    );
                    if let Ok(mut h) = history.lock() {
                        h.push(reason.clone());
                    }
                    Err(Failure {
                        reason,
                        transient: true,
                        unknown: true,
                        retry_after: None,
                    })
                }
                Outcome::Permanent { reason } => {
                    if let Ok(mut h) = history.lock() {
                        h.push(reason.clone());
                    }
                    Err(Failure {
                        reason,
                        transient: false,
                        unknown: false,
                        retry_after: None,
                    })
                }
            }
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
