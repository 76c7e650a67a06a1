//! Alerts an operator must see, through one webhook (`[process] webhook_url`): the process
//! manager's (due soon, overdue, blocked: an `OverdueItem`) and the adapters' (an agency whose
//! answers cannot be read: [`UnreadableAnswers`]). Each kind also writes a trace event, a log
//! warning and a metric where it is raised.

use std::time::Duration;

use backon::Retryable;
use lienthong_core::registry::ProcessSettings;
use serde::Serialize;

/// The operator's webhook: each alert is `POST`ed as JSON (timeout `webhook_timeout_ms`, up to
/// 3 retries with backoff from 200 ms); a webhook that still fails is logged, and the alert is
/// not sent again (it stays in the trace, the metrics and, for the process manager's,
/// `lienthong overdue`). Cheap to clone.
#[derive(Clone)]
pub struct Webhook {
    target: Option<(reqwest::Client, String)>,
}

impl Webhook {
    /// The webhook of `[process]`; one that posts nowhere when `webhook_url` is not set.
    pub fn new(settings: &ProcessSettings) -> Webhook {
        let target = settings.webhook_url.as_ref().and_then(|url| {
            let client = reqwest::Client::builder()
                .timeout(Duration::from_millis(settings.webhook_timeout_ms))
                .build();
            match client {
                Ok(c) => Some((c, url.clone())),
                Err(e) => {
                    tracing::error!(message = "cannot build the webhook's HTTP client; alerts go to the trace, the log and the metrics only", error = %e);
                    None
                }
            }
        });
        Webhook { target }
    }

    /// Post `alert` (see [`Webhook`]).
    pub async fn post(&self, alert: &impl Serialize) {
        let Some((http, url)) = &self.target else {
            return;
        };
        let post = || async { http.post(url).json(alert).send().await?.error_for_status() };
        let r = post
            .retry(
                backon::ExponentialBuilder::default()
                    .with_min_delay(Duration::from_millis(200))
                    .with_max_times(3),
            )
            .sleep(tokio::time::sleep)
            .await;
        if let Err(e) = r {
            tracing::warn!(message = "alert webhook failed (the alert stays in the trace and the metrics)", error = %e);
        }
    }
}

/// An agency whose answers the adapter cannot read as its interface's answer (2xx bodies that
/// are HTML, empty, truncated, of another shape), `answers` times for one message, counting its
/// status lookups and every delayed round: usually a misconfigured adapter (endpoint, path,
/// format), sometimes a proxy in front of the agency. Raised once per message when `answers`
/// reaches `[retry] unreadable_alert_after`; the delivery keeps retrying with the same
/// idempotency key meanwhile.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct UnreadableAnswers {
    /// Always `unreadable_answers` (the webhook's alerts are told apart by `level`).
    pub level: &'static str,
    /// Dossier code.
    pub ma_ho_so: String,
    /// Procedure code.
    pub ma_tthc: String,
    /// The message whose delivery got them.
    pub message_id: String,
    /// The agency's unit code.
    pub holder: String,
    /// Unreadable answers so far.
    pub answers: u32,
    /// Excerpt of the last unreadable answer (at most 300 characters).
    pub answer: String,
    /// In words, with the hint.
    pub reason: String,
}

impl UnreadableAnswers {
    /// The `level` of this alert.
    pub const LEVEL: &'static str = "unreadable_answers";
}
