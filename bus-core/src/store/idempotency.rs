//! The HTTP API's idempotency keys (`Idempotency-Key`, IETF draft-ietf-httpapi-idempotency-key-header):
//! which message id a unit's key stands for, so that a resend of one request files one message.

use crate::params;

use super::MessageWriter;

/// What a unit's idempotency key stands for: the message id the bus gave the first request
/// that carried it, and the SHA-256 (hex) of that request's body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotentRequest {
    /// The message id of the first request with the key (a UUIDv7).
    pub message_id: String,
    /// SHA-256 of the first request's body, lower-case hex (64 characters).
    pub body_sha256: String,
}

impl MessageWriter {
    /// Claim idempotency key `key` of unit `unit` for a request whose body hashes to
    /// `body_sha256`, with `message_id` as the id it gets when the key is new. Returns what the
    /// key stands for: the claim just made, or the first request's when the key was used
    /// before (the caller compares the hashes: the same key with another body is the client's
    /// error). Keys are kept as long as messages ([`MessageWriter::purge_idempotency_keys`]).
    pub async fn claim_idempotency_key(
        &self,
        unit: &str,
        key: &str,
        body_sha256: &str,
        message_id: &str,
    ) -> Result<IdempotentRequest, String> {
        let (unit, key) = (unit.to_string(), key.to_string());
        let (sha, id) = (body_sha256.to_string(), message_id.to_string());
        self.transact(move |c| {
            c.prepare_cached(
                "INSERT INTO http_idempotency (unit, idem_key, message_id, body_sha256, at_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT (unit, idem_key) DO NOTHING",
            )?
            .execute(params![unit, key, id, sha, crate::clock::now_ms()])?;
            // The row is there: this claim's, or the first one's.
            c.prepare_cached(
                "SELECT message_id, body_sha256 FROM http_idempotency WHERE unit = ?1 AND idem_key = ?2",
            )?
            .query_row(params![unit, key], |r| {
                Ok(IdempotentRequest {
                    message_id: r.get(0)?,
                    body_sha256: r.get(1)?,
                })
            })
        })
        .await
    }

    /// Forget idempotency keys claimed more than `retention_ms` ago (the message retention:
    /// a resend after it is a new message). Returns how many.
    pub async fn purge_idempotency_keys(&self, retention_ms: i64) -> Result<usize, String> {
        let cutoff = crate::clock::now_ms() - retention_ms;
        self.transact(move |c| {
            c.prepare_cached("DELETE FROM http_idempotency WHERE at_ms < ?1")?
                .execute(params![cutoff])
        })
        .await
    }
}
