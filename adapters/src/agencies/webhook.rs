//! A unit's webhook: the bus pushes every message of the unit's queue to the unit's own HTTPS
//! endpoint, as the envelope the bus carries (the same JSON an AMQP consumer reads), signed with
//! HMAC-SHA256 under a secret the unit shares with the bus. Retries, backoff and the dead-letter
//! queue after the retry budget are the delivery component's, as for every adapter: a 2xx is
//! delivered; 408, 429, a 5xx, a timeout or a lost answer are retried with the same message;
//! any other 4xx is refused (dead-lettered with the unit's answer as the reason).
//!
//! Headers of each POST: `Content-Type: application/json`, `Idempotency-Key` and
//! `X-Lienthong-Message-Id` (the envelope's `message_id`: a receiver deduplicates by it, since a
//! message whose answer was lost is sent again), and `X-Lienthong-Signature: t=<unix seconds>,
//! v1=<hex>`, where `<hex>` is HMAC-SHA256 (RFC 2104, FIPS 180-4) of `<t>.<body>` under the
//! secret: the receiver recomputes it over the raw body, compares in constant time and refuses a
//! `t` more than a few minutes old (a replay). The scheme is the one Stripe and GitHub webhooks
//! made familiar.

use std::sync::Arc;

use async_trait::async_trait;
use hmac::{Hmac, Mac};
use lienthong_core::Envelope;
use sha2::Sha256;

use crate::adapter::{Adapter, AgencyRequest, Operation, Setup};
use crate::error::{BuildError, CallbackError, NotDeliverable};
use crate::http::{exchange, failure_status, snippet};
use crate::outcome::{AgencyReply, Outcome, StatusLookup};

/// Registry name of this adapter.
pub const NAME: &str = "webhook";

/// The signature header.
pub const SIGNATURE_HEADER: &str = "X-Lienthong-Signature";

/// The message id header.
pub const MESSAGE_ID_HEADER: &str = "X-Lienthong-Message-Id";

/// The adapter of one unit's webhook.
pub struct Webhook {
    client: crate::http::Agent,
    url: String,
    secret: Vec<u8>,
}

/// The adapter of a unit with `adapter = "webhook"`: `endpoint` is the full URL messages are
/// POSTed to; `settings.webhook_secret` (required; `env:NAME` or `file:PATH`, at least 32
/// random bytes as `lienthong keys new` makes) is the HMAC key.
pub fn build(s: Setup<'_>) -> Result<Arc<dyn Adapter>, BuildError> {
    let secret = s
        .settings
        .get("webhook_secret")
        .and_then(|v| v.as_str())
        .filter(|v| !v.is_empty())
        .ok_or_else(|| BuildError::Settings {
            unit: s.unit.code.clone(),
            reason: "a webhook needs settings.webhook_secret (the HMAC key the unit checks signatures with; env:NAME or file:PATH)".into(),
        })?;
    Ok(Arc::new(Webhook {
        client: s.client.clone(),
        url: s.endpoint.clone(),
        secret: secret.as_bytes().to_vec(),
    }))
}

/// `t=<unix seconds>,v1=<hex of HMAC-SHA256(secret, "<t>.<body>")>`: the value of
/// [`SIGNATURE_HEADER`] for `body` sent at `t`.
pub fn signature(secret: &[u8], t: i64, body: &[u8]) -> String {
    // HMAC takes a key of any length (RFC 2104): `new_from_slice` cannot fail for it.
    let mut mac = match Hmac::<Sha256>::new_from_slice(secret) {
        Ok(m) => m,
        Err(_) => return String::new(),
    };
    mac.update(t.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    let hex: String = mac
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("t={t},v1={hex}")
}

#[async_trait]
impl Adapter for Webhook {
    fn name(&self) -> &'static str {
        NAME
    }

    fn interface(&self) -> &'static str {
        "the unit's webhook"
    }

    fn operations(&self) -> &'static [Operation] {
        &[Operation::Push]
    }

    /// Every message is pushed as it is, whatever its kind.
    fn prepare(&self, env: &Envelope) -> Result<AgencyRequest, NotDeliverable> {
        self.request(Operation::Push, env)
    }

    /// The envelope's JSON, byte for byte what an AMQP consumer of the queue reads.
    fn request(&self, op: Operation, env: &Envelope) -> Result<AgencyRequest, NotDeliverable> {
        Ok(AgencyRequest::new(
            op,
            "webhook",
            self.url.clone(),
            env,
            env.to_bytes(),
        ))
    }

    /// One POST, signed at the time it is sent (a retry an hour later carries a fresh `t`).
    async fn send(&self, req: &AgencyRequest) -> Outcome {
        let t = chrono::Utc::now().timestamp();
        let request = self
            .client
            .post(&req.url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header("Idempotency-Key", &req.key)
            .header(MESSAGE_ID_HEADER, &req.key)
            .header(SIGNATURE_HEADER, signature(&self.secret, t, &req.body))
            .body(req.body.clone());
        match exchange(&self.client, req.label, request).await {
            Ok(r) if r.status.is_success() => Outcome::Delivered {
                receipt: format!("HTTP {}", r.status.as_u16()),
            },
            Ok(r) => failure_status(req.label, r.status, &r.headers, snippet(&r.body)),
            // The receiver deduplicates by message id: a lost answer is simply sent again.
            Err(Outcome::Unknown { reason, .. }) => Outcome::Transient {
                reason,
                retry_after: None,
            },
            Err(o) => o,
        }
    }

    /// A webhook has no status lookup: an unknown outcome is resent instead.
    async fn status(&self, _: &str) -> StatusLookup {
        StatusLookup::NotSupported {
            reason: "a unit's webhook has no status lookup (messages are resent, deduplicated by message_id)".into(),
        }
    }

    /// A webhook unit answers over `POST /v1/messages`, not by callback.
    fn parse_callback(&self, _: Option<&str>, _: &[u8]) -> Result<AgencyReply, CallbackError> {
        Err(CallbackError::NoCallbacks {
            interface: "the unit's webhook (answer with POST /v1/messages)",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signature_is_hmac_sha256_of_time_dot_body_in_hex() {
        // Known answer, computed apart (Python: hmac.new(b"whsec-test",
        // b'1700000000.{"a":1}', hashlib.sha256).hexdigest()).
        assert_eq!(
            signature(b"whsec-test", 1_700_000_000, br#"{"a":1}"#),
            "t=1700000000,v1=fed7a1a6c799a6367d73724d76bc70c16678908a32a879cd1ded6565ac05cece"
        );
        // Another time or body is another signature.
        assert_ne!(signature(b"k", 1, b"{}"), signature(b"k", 2, b"{}"));
        assert_ne!(signature(b"k", 1, b"{}"), signature(b"k", 1, b"[]"));
    }
}
