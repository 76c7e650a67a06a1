//! HTTP helpers shared by adapters: the client, and the classification of answers and errors
//! into transient and permanent failures (408, 429, 5xx and connection problems are transient;
//! Retry-After is read in both its seconds and HTTP-date forms).

use std::time::{Duration, SystemTime};

use reqwest::StatusCode;
use reqwest::header::HeaderMap;

use crate::adapter::Outcome;

/// A client with the unit's timeout (ms) for the whole request.
pub fn client(timeout_ms: u64) -> Result<reqwest::Client, reqwest::Error> {
    reqwest::Client::builder()
        .timeout(Duration::from_millis(timeout_ms))
        .connect_timeout(Duration::from_millis(timeout_ms.min(5_000)))
        .user_agent(concat!("lienthong/", env!("CARGO_PKG_VERSION")))
        .build()
}

/// Whether a status is a transient failure (408, 425, 429, 5xx).
pub fn is_transient_status(s: StatusCode) -> bool {
    s == StatusCode::REQUEST_TIMEOUT
        || s == StatusCode::TOO_MANY_REQUESTS
        || s.as_u16() == 425
        || s.is_server_error()
}

/// Retry-After as a duration (delay-seconds or HTTP-date).
pub fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let v = headers
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let when = httpdate::parse_http_date(v).ok()?;
    Some(
        when.duration_since(SystemTime::now())
            .unwrap_or(Duration::ZERO),
    )
}

/// A reqwest error as an outcome. A connection that could not be made is transient (nothing
/// was sent); a timeout or a broken answer after the request may have been sent leaves the
/// outcome unknown at the agency ([`Outcome::Unknown`]).
pub fn transport_error(op: &str, e: &reqwest::Error) -> Outcome {
    if e.is_connect() {
        Outcome::Transient {
            reason: format!("{op} could not connect: {e}"),
            retry_after: None,
        }
    } else if e.is_timeout() {
        Outcome::Unknown {
            reason: format!("{op} timed out after the request was sent: {e}"),
        }
    } else {
        Outcome::Unknown {
            reason: format!("{op} failed after the request was sent: {e}"),
        }
    }
}

/// An HTTP failure status as an outcome, with the agency's reason from the body.
pub fn failure_status(
    op: &str,
    status: StatusCode,
    headers: &HeaderMap,
    reason: String,
) -> Outcome {
    if is_transient_status(status) {
        Outcome::Transient {
            reason: format!("{op}: HTTP {status}: {reason}"),
            retry_after: retry_after(headers),
        }
    } else {
        Outcome::Permanent {
            reason: format!("{op}: HTTP {status}: {reason}"),
        }
    }
}

/// POST a JSON document of the project's reference REST interfaces (Police, Customs) with
/// `Idempotency-Key: key`: a 2xx with `MaTiepNhan` is delivered (its receipt); a 2xx without it
/// is a permanent failure, an unreadable 2xx leaves the outcome unknown; an HTTP failure carries
/// the agency's `MaLoi`/`MoTaLoi` and is transient or permanent by status.
pub async fn post_json_for_receipt(
    client: &reqwest::Client,
    op: &str,
    url: &str,
    key: &str,
    body: &serde_json::Value,
) -> Outcome {
    use serde_json::Value;
    let res = client
        .post(url)
        .header("Idempotency-Key", key)
        .json(body)
        .send()
        .await;
    let resp = match res {
        Ok(r) => r,
        Err(e) => return transport_error(op, &e),
    };
    let status = resp.status();
    let headers = resp.headers().clone();
    let bytes = match resp.bytes().await {
        Ok(b) => b,
        Err(e) => return transport_error(op, &e),
    };
    if status.is_success() {
        let v: Value = match serde_json::from_slice(&bytes) {
            Ok(v) => v,
            Err(e) => {
                return Outcome::Unknown {
                    reason: format!(
                        "{op}: HTTP {status} but the body is not readable JSON ({e}): {}",
                        snippet(&bytes)
                    ),
                };
            }
        };
        let receipt = v
            .get("MaTiepNhan")
            .and_then(Value::as_str)
            .map(str::to_string);
        return match receipt {
            Some(r) => Outcome::Delivered { receipt: r },
            None => Outcome::Permanent {
                reason: format!(
                    "{op}: HTTP {status} without MaTiepNhan: {}",
                    snippet(&bytes)
                ),
            },
        };
    }
    let reason = serde_json::from_slice::<Value>(&bytes)
        .ok()
        .and_then(|v| {
            let code = v.get("MaLoi")?.as_str()?.to_string();
            let text = v
                .get("MoTaLoi")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string();
            Some(format!("{code} {text}"))
        })
        .unwrap_or_else(|| snippet(&bytes));
    failure_status(op, status, &headers, reason)
}

/// First 300 characters of a body, for reasons.
pub fn snippet(body: &[u8]) -> String {
    let s = String::from_utf8_lossy(body);
    let t: String = s.chars().take(300).collect();
    t.trim().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::{HeaderValue, RETRY_AFTER};

    #[test]
    fn retry_after_reads_seconds_and_http_dates() {
        let mut h = HeaderMap::new();
        h.insert(RETRY_AFTER, HeaderValue::from_static("120"));
        assert_eq!(retry_after(&h), Some(Duration::from_secs(120)));
        let when = SystemTime::now() + Duration::from_secs(3600);
        h.insert(
            RETRY_AFTER,
            HeaderValue::from_str(&httpdate::fmt_http_date(when)).expect("header"),
        );
        let d = retry_after(&h).expect("date");
        assert!(
            d > Duration::from_secs(3590) && d <= Duration::from_secs(3600),
            "{d:?}"
        );
        h.insert(
            RETRY_AFTER,
            HeaderValue::from_static("Wed, 21 Oct 2015 07:28:00 GMT"),
        );
        assert_eq!(
            retry_after(&h),
            Some(Duration::ZERO),
            "a date in the past means now"
        );
        h.insert(RETRY_AFTER, HeaderValue::from_static("soon"));
        assert_eq!(retry_after(&h), None);
    }

    #[test]
    fn transient_statuses_are_408_425_429_and_5xx() {
        for s in [408, 425, 429, 500, 502, 503, 504] {
            assert!(
                is_transient_status(StatusCode::from_u16(s).expect("status")),
                "{s}"
            );
        }
        for s in [400, 401, 403, 404, 409, 422] {
            assert!(
                !is_transient_status(StatusCode::from_u16(s).expect("status")),
                "{s}"
            );
        }
    }
}
