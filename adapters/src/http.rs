//! HTTP helpers shared by adapters: the client, one exchange with an agency, and the
//! classification of answers under the one rule of [`crate::adapter`] (408, 425, 429, 5xx and
//! connection problems are transient, Retry-After read in both its seconds and HTTP-date forms;
//! other 4xx permanent; a 2xx that is not the agency's answer unknown), with the JSON receipt
//! and status lookup of the reference REST interfaces.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use reqwest::StatusCode;
use reqwest::header::HeaderMap;
use serde_json::Value;

use crate::outcome::{AgencyStatus, Outcome, StatusLookup, clean_text};
use crate::transport::{Peer, TransportError};

/// A client with the unit's timeout (ms) for the whole request and default connection options.
pub fn client(timeout_ms: u64) -> Result<reqwest::Client, String> {
    client_for(timeout_ms, &ConnectionOptions::default())
}

/// How an adapter authenticates to its agency.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AuthKind {
    /// No credentials (the agency trusts the network or mTLS).
    #[default]
    None,
    /// A static key in a header (`api_key_header`, default `X-API-Key`).
    ApiKey,
    /// A provincial integration platform (LGSP): `AppName`, `AccessKey`, `SecretKey` and
    /// `PartnerCode` headers (the sources name the four credentials, docs/reference/sources.md;
    /// how they are sent is not documented: the header names are an unverified assumption,
    /// configurable later).
    Lgsp,
    /// OAuth2 client credentials (RFC 6749 §4.4): a token from `oauth2_token_url` (client
    /// authenticated with HTTP Basic, §2.3.1), sent as `Authorization: Bearer`, renewed 30 s
    /// before `expires_in` and once after a 401.
    Oauth2ClientCredentials,
}

/// Connection options of an HTTP adapter: `[units.reach.settings.connection]`. Secrets may be
/// written `env:NAME` to read them from the environment variable `NAME`.
#[derive(Debug, Clone, Default, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct ConnectionOptions {
    /// Authentication.
    #[serde(default)]
    pub auth: AuthKind,
    /// Header of the API key (default `X-API-Key`).
    pub api_key_header: Option<String>,
    /// The API key.
    pub api_key: Option<String>,
    /// LGSP `AppName`.
    pub lgsp_app_name: Option<String>,
    /// LGSP `AccessKey`.
    pub lgsp_access_key: Option<String>,
    /// LGSP `SecretKey`.
    pub lgsp_secret_key: Option<String>,
    /// LGSP `PartnerCode`.
    pub lgsp_partner_code: Option<String>,
    /// OAuth2 (RFC 6749 §4.4 client credentials): the token endpoint.
    pub oauth2_token_url: Option<String>,
    /// OAuth2 client id.
    pub oauth2_client_id: Option<String>,
    /// OAuth2 client secret.
    pub oauth2_client_secret: Option<String>,
    /// OAuth2 scope (optional).
    pub oauth2_scope: Option<String>,
    /// PEM file of the CA certificates to trust for this agency **instead of** the system's
    /// roots (an agency's private CA). There is no option to accept invalid certificates.
    pub ca_bundle: Option<String>,
    /// PEM file of the client certificate chain (mTLS); needs `client_key`.
    pub client_cert: Option<String>,
    /// PEM file of the client private key (mTLS).
    pub client_key: Option<String>,
    /// Time to establish the TCP and TLS connection, ms (default min(timeout, 5000)).
    pub connect_timeout_ms: Option<u64>,
    /// Longest stall between two reads of the answer, ms (default: the total timeout).
    pub read_timeout_ms: Option<u64>,
    /// Largest answer body read from this agency, bytes (default [`DEFAULT_MAX_ANSWER_BYTES`],
    /// 4 MiB): a longer one is an unreadable answer (outcome unknown) with that reason.
    pub max_answer_bytes: Option<usize>,
}

/// Largest agency answer body read when the unit's `connection` sets no `max_answer_bytes`,
/// bytes (4 MiB).
pub const DEFAULT_MAX_ANSWER_BYTES: usize = 4 * 1024 * 1024;

/// `env:NAME` → the variable's value; anything else as is.
fn secret(v: &Option<String>, what: &str) -> Result<Option<String>, String> {
    match v.as_deref() {
        Some(s) if s.starts_with("env:") => std::env::var(&s[4..])
            .map(Some)
            .map_err(|_| format!("{what}: environment variable {} is not set", &s[4..])),
        other => Ok(other.map(str::to_string)),
    }
}

impl ConnectionOptions {
    /// Read `settings.connection` (absent: defaults). Errors name the bad field.
    pub fn from_settings(
        settings: &serde_json::Map<String, serde_json::Value>,
    ) -> Result<ConnectionOptions, String> {
        match settings.get("connection") {
            None => Ok(ConnectionOptions::default()),
            Some(v) => serde_json::from_value(v.clone()).map_err(|e| format!("connection: {e}")),
        }
    }

    /// The headers every request carries for this authentication.
    pub fn auth_headers(&self) -> Result<HeaderMap, String> {
        let mut h = HeaderMap::new();
        let mut put = |name: &str, value: Option<String>, what: &str| -> Result<(), String> {
            let v = value.ok_or_else(|| format!("connection: auth needs {what}"))?;
            let name = reqwest::header::HeaderName::from_bytes(name.as_bytes())
                .map_err(|e| format!("connection: header name {name:?}: {e}"))?;
            let mut value = reqwest::header::HeaderValue::from_str(&v)
                .map_err(|e| format!("connection: {what}: {e}"))?;
            value.set_sensitive(true);
            h.insert(name, value);
            Ok(())
        };
        match self.auth {
            AuthKind::None => {}
            AuthKind::ApiKey => put(
                self.api_key_header.as_deref().unwrap_or("X-API-Key"),
                secret(&self.api_key, "api_key")?,
                "api_key",
            )?,
            AuthKind::Lgsp => {
                put(
                    "AppName",
                    secret(&self.lgsp_app_name, "lgsp_app_name")?,
                    "lgsp_app_name",
                )?;
                put(
                    "AccessKey",
                    secret(&self.lgsp_access_key, "lgsp_access_key")?,
                    "lgsp_access_key",
                )?;
                put(
                    "SecretKey",
                    secret(&self.lgsp_secret_key, "lgsp_secret_key")?,
                    "lgsp_secret_key",
                )?;
                put(
                    "PartnerCode",
                    secret(&self.lgsp_partner_code, "lgsp_partner_code")?,
                    "lgsp_partner_code",
                )?;
            }
            // The token is added per request by the Agent.
            AuthKind::Oauth2ClientCredentials => {}
        }
        Ok(h)
    }
}

/// A client for one agency: total timeout `timeout_ms`, connect and per-read stall timeouts,
/// the agency's CA bundle (instead of the system roots) and client certificate, its
/// authentication headers, and **no redirects followed** (a redirect answer is reported as a
/// configuration error naming the new location; see [`failure_status`]).
///
/// Errors: unreadable PEM files, an incomplete mTLS pair, missing credentials.
pub fn client_for(timeout_ms: u64, c: &ConnectionOptions) -> Result<reqwest::Client, String> {
    let read = |p: &str| std::fs::read(p).map_err(|e| format!("connection: {p}: {e}"));
    let mut b = reqwest::Client::builder()
        .timeout(Duration::from_millis(timeout_ms))
        .connect_timeout(Duration::from_millis(
            c.connect_timeout_ms.unwrap_or(timeout_ms.min(5_000)),
        ))
        .read_timeout(Duration::from_millis(
            c.read_timeout_ms.unwrap_or(timeout_ms),
        ))
        .redirect(reqwest::redirect::Policy::none())
        .default_headers(c.auth_headers()?)
        .user_agent(concat!("lienthong/", env!("CARGO_PKG_VERSION")));
    if let Some(p) = &c.ca_bundle {
        let certs = reqwest::Certificate::from_pem_bundle(&read(p)?)
            .map_err(|e| format!("connection: ca_bundle {p}: {e}"))?;
        if certs.is_empty() {
            return Err(format!("connection: ca_bundle {p} holds no certificate"));
        }
        b = b.tls_certs_only(certs);
    }
    match (&c.client_cert, &c.client_key) {
        (Some(cert), Some(key)) => {
            let mut pem = read(cert)?;
            pem.extend_from_slice(b"\n");
            pem.extend_from_slice(&read(key)?);
            let id = reqwest::Identity::from_pem(&pem)
                .map_err(|e| format!("connection: client_cert/client_key: {e}"))?;
            b = b.identity(id);
        }
        (None, None) => {}
        _ => return Err("connection: mTLS needs both client_cert and client_key".into()),
    }
    b.build().map_err(|e| format!("HTTP client: {e}"))
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

/// A reqwest error of a call through `agent` as an outcome, with a reason an operator can act
/// on ([`TransportError`]: the TLS certificate problem, the host that did not resolve, the
/// address that refused, which timeout fired): a failure before anything was sent is
/// transient; a timeout or a broken answer after the request may have been sent leaves the
/// outcome unknown at the agency ([`Outcome::Unknown`], without an answer).
pub fn transport_error(agent: &Agent, op: &str, e: &reqwest::Error) -> Outcome {
    TransportError::new(e, &agent.peer).outcome(op)
}

/// `lienthong_agency_call_seconds{unit}`: time from sending a request to an agency to its
/// answer's head (or the failure), seconds; a histogram.
pub const AGENCY_CALL_SECONDS: &str = "lienthong_agency_call_seconds";
/// `lienthong_agency_responses_total{unit, class}`: agencies' answers by HTTP status class
/// (`2xx`, `4xx`, `5xx`, …), and `error` for a call that got no answer (connection refused,
/// TLS, timeout).
pub const AGENCY_RESPONSES: &str = "lienthong_agency_responses_total";

/// A whole answer of an agency: status, headers and body.
#[derive(Debug, Clone)]
pub struct Reply {
    /// HTTP status.
    pub status: StatusCode,
    /// Headers (Retry-After, Location, Content-Type).
    pub headers: HeaderMap,
    /// The body, read whole.
    pub body: bytes::Bytes,
}

/// Send `request` through `agent` and read the whole answer. Err: the outcome when no whole
/// answer came ([`SendError::outcome`], [`transport_error`]).
pub async fn exchange(
    agent: &Agent,
    op: &str,
    request: reqwest::RequestBuilder,
) -> Result<Reply, Outcome> {
    use lienthong_core::telemetry::{KeyValue, Stage, http_headers, in_span};
    let started = std::time::Instant::now();
    let unit = agent.peer.unit_code.clone();
    let call = async {
        // The agency may continue the trace (W3C `traceparent`).
        let mut request = request;
        for (k, v) in http_headers() {
            request = request.header(k, v);
        }
        let sent = request.send_via(agent).await;
        if let Ok(r) = &sent {
            let status = r.status().as_u16();
            lienthong_core::telemetry::annotate(|| {
                vec![KeyValue::new(
                    "http.response.status_code",
                    i64::from(status),
                )]
            });
            if status >= 500 {
                lienthong_core::telemetry::fail(&format!("HTTP {status}"));
            }
        } else {
            lienthong_core::telemetry::fail("no answer");
        }
        sent
    };
    let sent = in_span(
        Stage::AgencyCall,
        || None,
        || {
            vec![
                KeyValue::new("lienthong.unit", unit.clone()),
                KeyValue::new("lienthong.operation", op.to_string()),
            ]
        },
        call,
    )
    .await;
    metrics::histogram!(AGENCY_CALL_SECONDS, "unit" => unit.clone())
        .record(started.elapsed().as_secs_f64());
    let class = match &sent {
        Ok(r) => format!("{}xx", r.status().as_u16() / 100),
        Err(_) => "error".to_string(),
    };
    metrics::counter!(AGENCY_RESPONSES, "unit" => unit, "class" => class).increment(1);
    let resp = sent.map_err(|e| e.outcome(op))?;
    let status = resp.status();
    let headers = resp.headers().clone();
    let body = read_capped(agent, op, status, &headers, resp).await?;
    Ok(Reply {
        status,
        headers,
        body,
    })
}

/// Read an answer's body, at most the agent's `max_answer_bytes` (checked against
/// `Content-Length` first, then chunk by chunk). Over the cap: for a 2xx the unreadable answer
/// ([`unreadable`], outcome unknown: the agency may have taken the request), for another status
/// the failure it is, both saying the limit.
async fn read_capped(
    agent: &Agent,
    op: &str,
    status: StatusCode,
    headers: &HeaderMap,
    mut resp: reqwest::Response,
) -> Result<bytes::Bytes, Outcome> {
    let cap = agent.max_answer_bytes;
    let over = |seen: u64, first: &[u8]| {
        let what = format!(
            "the answer is over the limit of {cap} bytes ({seen} bytes or more; the unit's connection max_answer_bytes)"
        );
        if status.is_success() {
            unreadable(op, status, what, first)
        } else {
            failure_status(op, status, headers, what)
        }
    };
    if let Some(len) = resp.content_length()
        && len > cap as u64
    {
        return Err(over(len, b""));
    }
    let url = resp.url().clone();
    let mut body = bytes::BytesMut::new();
    while let Some(chunk) = resp
        .chunk()
        .await
        .map_err(|e| transport_error(agent, op, &e.with_url(url.clone())))?
    {
        if body.len() + chunk.len() > cap {
            return Err(over((body.len() + chunk.len()) as u64, &body));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body.freeze())
}

/// The one rule for a 2xx whose body is not the agency's answer (`what` says why): the
/// agency may have recorded the request, so the outcome is unknown, with the body's excerpt as
/// [`Outcome::Unknown::answer`].
pub fn unreadable(
    op: &str,
    status: StatusCode,
    what: impl std::fmt::Display,
    body: &[u8],
) -> Outcome {
    let excerpt = snippet(body);
    Outcome::Unknown {
        reason: format!(
            "{op}: HTTP {status} but {what}; the agency may have taken it: {}",
            if excerpt.is_empty() {
                "(empty body)"
            } else {
                &excerpt
            }
        ),
        answer: Some(excerpt),
    }
}

/// An HTTP failure status as an outcome, with the agency's reason from the body.
pub fn failure_status(
    op: &str,
    status: StatusCode,
    headers: &HeaderMap,
    reason: String,
) -> Outcome {
    let reason = clean_text(&reason);
    if status.is_redirection() {
        let to = headers
            .get(reqwest::header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("(no Location)");
        return Outcome::Permanent {
            reason: format!(
                "{op}: configuration error: HTTP {status} redirects to {to}; a request is never sent on to another address: set the unit's endpoint to it"
            ),
        };
    }
    if status == StatusCode::UNAUTHORIZED {
        return Outcome::Permanent {
            reason: format!(
                "{op}: authentication refused (HTTP 401): check the unit's credentials: {reason}"
            ),
        };
    }
    if status == StatusCode::FORBIDDEN {
        return Outcome::Permanent {
            reason: format!(
                "{op}: no right to this API (HTTP 403): the agency must grant it: {reason}"
            ),
        };
    }
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

/// A JSON object, or why the body is not one.
fn json_object(body: &[u8]) -> Result<serde_json::Map<String, Value>, String> {
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(o)) => Ok(o),
        Ok(_) => Err("the body is JSON but not an object".into()),
        Err(e) => Err(format!("the body is not JSON ({e})")),
    }
}

/// The reference error object `{MaLoi, MoTaLoi}` as "MaLoi MoTaLoi", if `o` is one.
fn json_error(o: &serde_json::Map<String, Value>) -> Option<String> {
    let code = o.get("MaLoi")?.as_str()?;
    let text = o.get("MoTaLoi").and_then(Value::as_str).unwrap_or("");
    Some(format!("{code} {text}").trim().to_string())
}

/// POST a JSON document (`body`, already serialized: the same bytes on every attempt) of the
/// project's reference REST interfaces (Police, Customs) with `Idempotency-Key: key` (submit,
/// cancel). A 2xx answer: `MaTiepNhan` is delivered (its
/// receipt); the reference error object `{MaLoi, MoTaLoi}` is a permanent failure; anything
/// else (no `MaTiepNhan`, not a JSON object, empty, HTML, truncated) leaves the outcome
/// unknown. An HTTP failure carries the agency's `MaLoi`/`MoTaLoi` and is transient or
/// permanent by status ([`failure_status`]).
pub async fn post_json_for_receipt(
    client: &Agent,
    op: &str,
    url: &str,
    key: &str,
    body: bytes::Bytes,
) -> Outcome {
    let request = client
        .post(url)
        .header("Idempotency-Key", key)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .body(body);
    let r = match exchange(client, op, request).await {
        Ok(r) => r,
        Err(o) => return o,
    };
    if !r.status.is_success() {
        let reason = json_object(&r.body)
            .ok()
            .as_ref()
            .and_then(json_error)
            .unwrap_or_else(|| snippet(&r.body));
        return failure_status(op, r.status, &r.headers, reason);
    }
    json_receipt(op, r.status, &r.body)
}

/// A 2xx answer of the reference REST interfaces under the one rule: `MaTiepNhan` (non-empty)
/// is delivered; `{MaLoi, MoTaLoi}` is a permanent failure; anything else is unknown.
pub fn json_receipt(op: &str, status: StatusCode, body: &[u8]) -> Outcome {
    let o = match json_object(body) {
        Ok(o) => o,
        Err(what) => return unreadable(op, status, what, body),
    };
    if let Some(r) = o
        .get("MaTiepNhan")
        .and_then(Value::as_str)
        .filter(|r| !r.is_empty())
    {
        return Outcome::Delivered {
            receipt: r.to_string(),
        };
    }
    if let Some(err) = json_error(&o) {
        return Outcome::Permanent {
            reason: format!("{op}: HTTP {status} with the agency's error {err}"),
        };
    }
    unreadable(
        op,
        status,
        "the answer has neither MaTiepNhan (the receipt) nor MaLoi (an error)",
        body,
    )
}

/// A lookup that got no readable answer, from the outcome the exchange came to.
pub fn lookup_failed(o: Outcome) -> StatusLookup {
    StatusLookup::Failed {
        reason: o.reason().to_string(),
    }
}

/// The status lookup of the reference REST interfaces (Police, Customs): `GET url` answers
/// 2xx `{MaHoSo, MaTiepNhan, TrangThaiHoSo}` (found, with `TrangThaiHoSo` 1–10), or 404 with
/// the reference error body `{MaLoi, MoTaLoi}` (not found). A 2xx without a readable
/// `TrangThaiHoSo` is unreadable; a 404 without the error body, and every other failure, is
/// failed (a 404 from a wrong path says nothing about the dossier).
pub async fn json_status_lookup(agent: &Agent, url: &str, ma_ho_so: &str) -> StatusLookup {
    let op = "status lookup";
    let r = match exchange(agent, op, agent.get(url)).await {
        Ok(r) => r,
        Err(o) => return lookup_failed(o),
    };
    let obj = json_object(&r.body);
    if r.status == StatusCode::NOT_FOUND
        && let Some(err) = obj.as_ref().ok().and_then(json_error)
    {
        return StatusLookup::NotFound { reason: err };
    }
    if !r.status.is_success() {
        let reason = obj
            .as_ref()
            .ok()
            .and_then(json_error)
            .unwrap_or_else(|| snippet(&r.body));
        return lookup_failed(failure_status(op, r.status, &r.headers, reason));
    }
    let o = match obj {
        Ok(o) => o,
        Err(what) => return lookup_unreadable(op, r.status, what, &r.body),
    };
    let status = o
        .get("TrangThaiHoSo")
        .and_then(Value::as_u64)
        .filter(|n| (1..=10).contains(n));
    match status {
        Some(n) => StatusLookup::Found(AgencyStatus {
            ma_ho_so: ma_ho_so.to_string(),
            receipt: o
                .get("MaTiepNhan")
                .and_then(Value::as_str)
                .map(str::to_string),
            status: n as u8,
        }),
        None => match json_error(&o) {
            Some(err) => StatusLookup::Failed {
                reason: format!("{op}: HTTP {} with the agency's error {err}", r.status),
            },
            None => lookup_unreadable(
                op,
                r.status,
                "the answer has no TrangThaiHoSo 1–10",
                &r.body,
            ),
        },
    }
}

/// A lookup whose 2xx answer is not the agency's (`what` says why), with its excerpt.
pub fn lookup_unreadable(
    op: &str,
    status: StatusCode,
    what: impl std::fmt::Display,
    body: &[u8],
) -> StatusLookup {
    let answer = snippet(body);
    StatusLookup::Unreadable {
        reason: format!(
            "{op}: HTTP {status} but {what}: {}",
            if answer.is_empty() {
                "(empty body)"
            } else {
                &answer
            }
        ),
        answer,
    }
}

/// First 300 characters of a body, for reasons, without control characters ([`clean_text`]).
pub fn snippet(body: &[u8]) -> String {
    let s = String::from_utf8_lossy(body);
    let t: String = s.chars().take(300).collect();
    clean_text(t.trim())
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

/// A cached OAuth2 access token source (client credentials grant).
pub struct OAuth2 {
    http: reqwest::Client,
    token_url: String,
    client_id: String,
    client_secret: String,
    scope: Option<String>,
    cached: tokio::sync::Mutex<Option<(String, std::time::Instant)>>,
}

impl OAuth2 {
    /// The current token, fetched when there is none, it is about to expire, or `fresh`;
    /// `peer` names the agency in transport failures.
    pub async fn token(&self, fresh: bool, peer: &Peer) -> Result<String, SendError> {
        let mut c = self.cached.lock().await;
        if !fresh
            && let Some((t, until)) = c.as_ref()
            && std::time::Instant::now() < *until
        {
            return Ok(t.clone());
        }
        let mut form = vec![("grant_type", "client_credentials".to_string())];
        if let Some(s) = &self.scope {
            form.push(("scope", s.clone()));
        }
        let resp = self
            .http
            .post(&self.token_url)
            .basic_auth(&self.client_id, Some(&self.client_secret))
            .form(&form)
            .send()
            .await
            .map_err(|e| SendError::Token {
                reason: format!(
                    "token endpoint {}: {}",
                    self.token_url,
                    TransportError::new(&e, peer)
                ),
                permanent: false,
            })?;
        let status = resp.status();
        let body = resp.bytes().await.map_err(|e| SendError::Token {
            reason: format!(
                "token endpoint {}: {}",
                self.token_url,
                TransportError::new(&e, peer)
            ),
            permanent: false,
        })?;
        if !status.is_success() {
            return Err(SendError::Token {
                reason: format!("token endpoint answered HTTP {status}: {}", snippet(&body)),
                permanent: status.is_client_error() && status != StatusCode::TOO_MANY_REQUESTS,
            });
        }
        let v: serde_json::Value = serde_json::from_slice(&body).map_err(|e| SendError::Token {
            reason: format!("token answer is not JSON: {e}"),
            permanent: false,
        })?;
        let token = v
            .get("access_token")
            .and_then(serde_json::Value::as_str)
            .ok_or_else(|| SendError::Token {
                reason: "token answer has no access_token".into(),
                permanent: false,
            })?
            .to_string();
        let life = v
            .get("expires_in")
            .and_then(serde_json::Value::as_u64)
            .unwrap_or(300);
        let until = std::time::Instant::now() + Duration::from_secs(life.saturating_sub(30).max(1));
        *c = Some((token.clone(), until));
        Ok(token)
    }
}

/// An agency's HTTP client with its authentication: the static headers are in the client; an
/// OAuth2 token, when configured, is added by [`SendVia::send_via`]. Derefs to the client for
/// building requests.
#[derive(Clone)]
pub struct Agent {
    client: reqwest::Client,
    oauth: Option<Arc<OAuth2>>,
    peer: Arc<Peer>,
    /// Largest answer body read, bytes.
    max_answer_bytes: usize,
}

impl std::ops::Deref for Agent {
    type Target = reqwest::Client;
    fn deref(&self) -> &reqwest::Client {
        &self.client
    }
}

impl Agent {
    /// A client without OAuth2, for an agency that is not named (reasons say "the agency").
    pub fn plain(client: reqwest::Client) -> Agent {
        Agent {
            client,
            oauth: None,
            peer: Arc::default(),
            max_answer_bytes: DEFAULT_MAX_ANSWER_BYTES,
        }
    }

    /// This agent reading answers of at most `bytes` bytes.
    pub fn with_max_answer_bytes(mut self, bytes: usize) -> Agent {
        self.max_answer_bytes = bytes;
        self
    }

    /// This agent for the unit `code` (`name`), so that transport failures name it and point
    /// to `lienthong check <code>`.
    pub fn for_unit(mut self, code: &str, name: &str) -> Agent {
        let mut peer = (*self.peer).clone();
        peer.unit_code = code.to_string();
        peer.unit_name = name.to_string();
        self.peer = Arc::new(peer);
        self
    }

    /// Who this agent calls, and its limits.
    pub fn peer(&self) -> &Peer {
        &self.peer
    }

    /// The client and authentication of one agency ([`client_for`] plus OAuth2), with its
    /// limits recorded for reasons (name it with [`Agent::for_unit`]).
    ///
    /// Errors: as [`client_for`]; OAuth2 without its token URL, client id or secret.
    pub fn for_agency(timeout_ms: u64, c: &ConnectionOptions) -> Result<Agent, String> {
        let client = client_for(timeout_ms, c)?;
        let oauth = if c.auth == AuthKind::Oauth2ClientCredentials {
            let need = |v: &Option<String>, what: &str| {
                secret(v, what)?
                    .ok_or_else(|| format!("connection: oauth2_client_credentials needs {what}"))
            };
            let plain = ConnectionOptions {
                auth: AuthKind::None,
                ..c.clone()
            };
            Some(Arc::new(OAuth2 {
                http: client_for(timeout_ms, &plain)?,
                token_url: need(&c.oauth2_token_url, "oauth2_token_url")?,
                client_id: need(&c.oauth2_client_id, "oauth2_client_id")?,
                client_secret: need(&c.oauth2_client_secret, "oauth2_client_secret")?,
                scope: c.oauth2_scope.clone(),
                cached: tokio::sync::Mutex::new(None),
            }))
        } else {
            None
        };
        let peer = Peer {
            connect_timeout_ms: c.connect_timeout_ms.unwrap_or(timeout_ms.min(5_000)),
            read_timeout_ms: c.read_timeout_ms.unwrap_or(timeout_ms),
            timeout_ms,
            ca_bundle: c.ca_bundle.clone(),
            ..Peer::default()
        };
        Ok(Agent {
            client,
            oauth,
            peer: Arc::new(peer),
            max_answer_bytes: c.max_answer_bytes.unwrap_or(DEFAULT_MAX_ANSWER_BYTES),
        })
    }
}

/// Why a request could not be sent.
#[derive(Debug, Clone)]
pub enum SendError {
    /// The HTTP exchange failed (classified, with the agency's name and address).
    Transport(TransportError),
    /// No OAuth2 token could be had.
    Token {
        /// Why.
        reason: String,
        /// Whether retrying cannot help (the token endpoint refused the credentials).
        permanent: bool,
    },
}

impl std::fmt::Display for SendError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SendError::Transport(e) => write!(f, "{e}"),
            SendError::Token { reason, .. } => write!(f, "no OAuth2 token: {reason}"),
        }
    }
}

impl SendError {
    /// As an outcome of operation `op`: a transport error as [`transport_error`]; a token
    /// request refused for the credentials is permanent, other token failures transient (no
    /// request reached the agency).
    pub fn outcome(&self, op: &str) -> Outcome {
        match self {
            SendError::Transport(e) => e.outcome(op),
            SendError::Token {
                reason,
                permanent: true,
            } => Outcome::Permanent {
                reason: format!("{op}: no OAuth2 token: {reason}"),
            },
            SendError::Token { reason, .. } => Outcome::Transient {
                reason: format!("{op}: no OAuth2 token: {reason}"),
                retry_after: None,
            },
        }
    }
}

/// Sending through an [`Agent`]: adds the OAuth2 token when there is one, and after a 401
/// fetches a new token and sends once more.
#[async_trait::async_trait]
pub trait SendVia {
    /// Send with `agent`'s authentication.
    async fn send_via(self, agent: &Agent) -> Result<reqwest::Response, SendError>;
}

#[async_trait::async_trait]
impl SendVia for reqwest::RequestBuilder {
    async fn send_via(self, agent: &Agent) -> Result<reqwest::Response, SendError> {
        let failed = |e: reqwest::Error| SendError::Transport(TransportError::new(&e, &agent.peer));
        let Some(o) = &agent.oauth else {
            return self.send().await.map_err(failed);
        };
        let again = self.try_clone();
        let token = o.token(false, &agent.peer).await?;
        let resp = self.bearer_auth(&token).send().await.map_err(failed)?;
        if resp.status() == StatusCode::UNAUTHORIZED
            && let Some(rb) = again
        {
            let token = o.token(true, &agent.peer).await?;
            return rb.bearer_auth(&token).send().await.map_err(failed);
        }
        Ok(resp)
    }
}
