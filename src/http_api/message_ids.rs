//! The message id of an envelope filed over HTTP: the sender's own `message_id`, or one the bus
//! gives it (a UUIDv7, which Java 17 and .NET 8 cannot make without a library), and the
//! `Idempotency-Key` header (IETF draft-ietf-httpapi-idempotency-key-header) that makes a
//! resend of one request file one message.

use sha2::{Digest, Sha256};

use super::*;

/// The longest `Idempotency-Key` taken, characters.
pub(super) const MAX_IDEMPOTENCY_KEY: usize = 255;

/// The envelope of a `POST /v1/messages` body from `unit`, validated, with its message id:
/// the body's own; else, under an `Idempotency-Key`, the id the key was first given; else a
/// new UUIDv7. A key used before with another body is a 422 (`idempotency-key-reused`).
/// Returns the envelope and whether the request carried an `Idempotency-Key`.
pub(super) async fn accept_envelope(
    api: &Api,
    unit: &Unit,
    headers: &HeaderMap,
    body: &Bytes,
) -> Result<(Envelope, bool), Problem> {
    let key = idempotency_key(headers)?;
    let validator = api.ctx.validator.clone();
    let b = body.clone();
    // Without a key: one parse and validation on the blocking pool, as `Validator::accept`
    // does, with the id filled in between when the body has none.
    if key.is_none() {
        return tokio::task::spawn_blocking(move || {
            let (mut value, plain) = validator.parse(&b)?;
            if let Some(o) = value.as_object_mut()
                && !o.contains_key("message_id")
            {
                let id = lienthong_core::envelope::new_message_id();
                o.insert("message_id".into(), Value::String(id));
            }
            validator.accept_parsed(value, plain)
        })
        .await
        .map_err(Problem::internal)?
        .map(|e| (e, false))
        .map_err(Problem::from);
    }
    let v = validator.clone();
    let (mut value, plain) = tokio::task::spawn_blocking(move || v.parse(&b))
        .await
        .map_err(Problem::internal)??;
    let given = value
        .get("message_id")
        .and_then(Value::as_str)
        .map(str::to_string);
    let id = match &key {
        Some(key) => {
            let sha = lienthong_core::envelope::hex(&Sha256::digest(body));
            let candidate = given
                .clone()
                .unwrap_or_else(lienthong_core::envelope::new_message_id);
            let first = api
                .ctx
                .writer
                .claim_idempotency_key(&unit.code, key, &sha, &candidate)
                .await
                .map_err(|e| {
                    Problem::unavailable_because(
                        "the store did not record the Idempotency-Key",
                        5,
                        e,
                    )
                })?;
            if first.body_sha256 != sha {
                return Err(Problem::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "idempotency-key-reused",
                    "Idempotency-Key reused",
                    format!(
                        "this Idempotency-Key was first used with another body (message_id {}); a new message needs a new key",
                        first.message_id
                    ),
                ));
            }
            first.message_id
        }
        None => given
            .clone()
            .unwrap_or_else(lienthong_core::envelope::new_message_id),
    };
    if given.is_none()
        && let Some(o) = value.as_object_mut()
    {
        o.insert("message_id".into(), Value::String(id));
    }
    tokio::task::spawn_blocking(move || validator.accept_parsed(value, plain))
        .await
        .map_err(Problem::internal)?
        .map(|e| (e, key.is_some()))
        .map_err(Problem::from)
}

/// The request's `Idempotency-Key`: a string of 1–255 visible ASCII characters, bare or
/// quoted (the draft makes it an RFC 8941 structured-field string). Errors: 400
/// `bad-idempotency-key`.
pub(super) fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, Problem> {
    let Some(raw) = headers.get("idempotency-key") else {
        return Ok(None);
    };
    let bad = |why: &str| {
        Problem::new(
            StatusCode::BAD_REQUEST,
            "bad-idempotency-key",
            "Bad Idempotency-Key",
            format!(
                "Idempotency-Key {why}: send 1 to {MAX_IDEMPOTENCY_KEY} visible ASCII characters, e.g. a UUID"
            ),
        )
    };
    let text = raw.to_str().map_err(|_| bad("is not ASCII"))?.trim();
    let text = text
        .strip_prefix('"')
        .and_then(|t| t.strip_suffix('"'))
        .unwrap_or(text);
    if text.is_empty() || text.len() > MAX_IDEMPOTENCY_KEY {
        return Err(bad("is empty or too long"));
    }
    if !text.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(bad("holds a space or a control character"));
    }
    Ok(Some(text.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_key(v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert("idempotency-key", v.parse().expect("header"));
        h
    }

    #[test]
    fn an_idempotency_key_is_taken_bare_or_quoted_and_a_bad_one_is_a_400() {
        assert_eq!(idempotency_key(&HeaderMap::new()).ok(), Some(None));
        assert_eq!(
            idempotency_key(&with_key("abc-1"))
                .ok()
                .flatten()
                .as_deref(),
            Some("abc-1")
        );
        assert_eq!(
            idempotency_key(&with_key("\"8e2f\""))
                .ok()
                .flatten()
                .as_deref(),
            Some("8e2f")
        );
        for bad in ["\"\"", "a b", &"x".repeat(256)] {
            let p = idempotency_key(&with_key(bad)).expect_err(bad);
            assert_eq!(p.status, StatusCode::BAD_REQUEST);
            assert_eq!(p.code, "bad-idempotency-key");
        }
    }
}
