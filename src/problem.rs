//! RFC 9457 problem details (`application/problem+json`), written once for every endpoint.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use lienthong_core::envelope::{RejectCode, Rejection};
use serde_json::json;

/// A problem answer.
#[derive(Debug, Clone)]
pub struct Problem {
    /// HTTP status.
    pub status: StatusCode,
    /// Stable code: the `type` is `urn:lienthong:problem:<code>`.
    pub code: String,
    /// Short title.
    pub title: String,
    /// What is wrong, for people.
    pub detail: String,
    /// Individual errors: strings (a schema error with its JSON pointer), or for
    /// `procedure-data-invalid` objects `{pointer, alternatives?, detail, needed_by: [{step,
    /// name, unit?, unit_name?}]}` (a [`lienthong_core::envelope::FieldError`] each).
    pub errors: Vec<serde_json::Value>,
    /// Seconds for Retry-After (503).
    pub retry_after_s: Option<u64>,
}

impl Problem {
    /// A problem.
    pub fn new(status: StatusCode, code: &str, title: &str, detail: impl Into<String>) -> Self {
        Problem {
            status,
            code: code.into(),
            title: title.into(),
            detail: detail.into(),
            errors: Vec::new(),
            retry_after_s: None,
        }
    }

    /// 401: no or unknown key.
    pub fn unauthorized(detail: &str) -> Self {
        Problem::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "Unauthorized",
            detail,
        )
    }

    /// 503 with Retry-After.
    pub fn unavailable(detail: impl Into<String>, retry_after_s: u64) -> Self {
        let mut p = Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "Bus temporarily unavailable",
            detail,
        );
        p.retry_after_s = Some(retry_after_s);
        p
    }
}

impl From<Rejection> for Problem {
    fn from(r: Rejection) -> Self {
        let status = match r.code {
            RejectCode::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            RejectCode::MalformedJson => StatusCode::BAD_REQUEST,
            RejectCode::SenderMismatch => StatusCode::FORBIDDEN,
            _ => StatusCode::UNPROCESSABLE_ENTITY,
        };
        Problem {
            status,
            code: r.code.as_str().into(),
            title: r.code.title().into(),
            detail: r.detail,
            errors: if r.fields.is_empty() {
                r.errors
                    .into_iter()
                    .map(serde_json::Value::String)
                    .collect()
            } else {
                r.fields
                    .iter()
                    .map(|f| serde_json::to_value(f).unwrap_or_default())
                    .collect()
            },
            retry_after_s: None,
        }
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let mut body = json!({
            "type": format!("urn:lienthong:problem:{}", self.code),
            "title": self.title,
            "status": self.status.as_u16(),
            "detail": self.detail,
        });
        if !self.errors.is_empty() {
            body["errors"] = json!(self.errors);
        }
        let mut resp = (self.status, body.to_string()).into_response();
        resp.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        if let Some(s) = self.retry_after_s
            && let Ok(v) = HeaderValue::from_str(&s.to_string())
        {
            resp.headers_mut().insert(header::RETRY_AFTER, v);
        }
        resp
    }
}
