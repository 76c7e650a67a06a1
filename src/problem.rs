//! RFC 9457 problem details (`application/problem+json`), written once for every endpoint;
//! internal errors are logged under an id and answered with that id only.

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
    /// Seconds for Retry-After (503, 429).
    pub retry_after_s: Option<u32>,
    /// The id under which the cause was logged (an internal error), answered as `instance`
    /// `urn:lienthong:error:<16 hex digits>`; the log line carries the same `error_id`. (An
    /// integer and a u32 Retry-After keep a `Problem` within clippy's size for an `Err`.)
    pub error_id: Option<std::num::NonZeroU64>,
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
            error_id: None,
        }
    }

    /// A problem whose cause is internal (a store, broker or task error): the cause is logged
    /// with a new error id and never sent; the answer carries `detail` (for people, naming no
    /// internals) and `instance` = `urn:lienthong:error:<id>`, so an operator finds the log line.
    pub fn hidden(
        status: StatusCode,
        code: &str,
        title: &str,
        detail: impl Into<String>,
        cause: impl std::fmt::Display,
    ) -> Self {
        // The random low half of a UUIDv7.
        let id = std::num::NonZeroU64::new(uuid::Uuid::now_v7().as_u64_pair().1)
            .unwrap_or(std::num::NonZeroU64::MIN);
        let detail = detail.into();
        tracing::error!(message = "HTTP API: internal error", error_id = %format!("{id:016x}"), code, detail = %detail, error = %format!("{cause:#}"));
        let mut p = Problem::new(status, code, title, detail);
        p.error_id = Some(id);
        p
    }

    /// 500 for an internal failure (a task that panicked, a store error): see [`Problem::hidden`].
    pub fn internal(cause: impl std::fmt::Display) -> Self {
        Problem::hidden(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "Internal error",
            "the bus failed on this request; the operator can find the cause by this instance",
            cause,
        )
    }

    /// 503 with Retry-After whose cause is internal (a store or broker error): see
    /// [`Problem::hidden`].
    pub fn unavailable_because(
        detail: impl Into<String>,
        retry_after_s: u32,
        cause: impl std::fmt::Display,
    ) -> Self {
        let mut p = Problem::hidden(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "Bus temporarily unavailable",
            detail,
            cause,
        );
        p.retry_after_s = Some(retry_after_s);
        p
    }

    /// 429 with Retry-After: the key sent more than its rate.
    pub fn too_many(retry_after_s: u32) -> Self {
        let mut p = Problem::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate-limited",
            "Too many requests",
            format!("this key sent more requests than its rate allows; retry in {retry_after_s} s"),
        );
        p.retry_after_s = Some(retry_after_s);
        p
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
        p.retry_after_s = Some(u32::try_from(retry_after_s).unwrap_or(u32::MAX));
        p
    }
}

/// The HTTP status of a problem made from a rejection with `code`.
pub fn rejection_status(code: RejectCode) -> StatusCode {
    match code {
        RejectCode::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
        RejectCode::MalformedJson => StatusCode::BAD_REQUEST,
        RejectCode::SenderMismatch => StatusCode::FORBIDDEN,
        _ => StatusCode::UNPROCESSABLE_ENTITY,
    }
}

/// The problem types the HTTP API answers besides the rejection codes ([`RejectCode::ALL`],
/// [`rejection_status`]): each code (`urn:lienthong:problem:<code>`), its status(es) and when
/// it is answered. The OpenAPI document lists them; a test keeps this list and the
/// `Problem::new` / `Problem::hidden` calls of `src/` in step.
pub const PROBLEM_TYPES: &[(&str, &str, &str)] = &[
    (
        "unauthorized",
        "401",
        "no key, an unknown key, or a key that may not call this route",
    ),
    (
        "rate-limited",
        "429",
        "the key sent more requests than its rate allows (Retry-After)",
    ),
    (
        "unavailable",
        "503",
        "the broker or the store cannot take the request now, or the bus serves as many requests as it may at once (Retry-After); nothing was accepted",
    ),
    (
        "timeout",
        "503",
        "the request took longer than `[http] request_timeout_ms` (Retry-After); it may or may not have taken effect: retry with the same message id",
    ),
    (
        "bad-body",
        "400",
        "the body could not be read (a broken transfer)",
    ),
    (
        "unsupported-media-type",
        "415",
        "`POST /v1/messages` without `Content-Type: application/json`",
    ),
    (
        "bad-idempotency-key",
        "400",
        "an `Idempotency-Key` header that is not 1 to 255 visible ASCII characters",
    ),
    (
        "idempotency-key-reused",
        "422",
        "an `Idempotency-Key` first used with another body",
    ),
    (
        "bad-query",
        "400",
        "an unknown, repeated or out-of-range query parameter",
    ),
    (
        "bad-path",
        "400",
        "a path parameter that is not UTF-8 once percent-decoded",
    ),
    (
        "delivered-by-adapter",
        "409",
        "`GET /v1/inbox` by a unit the bus reaches through an adapter (no queue to read)",
    ),
    (
        "not-found",
        "404",
        "no such dossier of the key's unit, or a dossier the process manager does not run",
    ),
    (
        "no-such-step",
        "422",
        "`POST /v1/dossiers/{ma_ho_so}/retry` naming a step the dossier does not have",
    ),
    (
        "not-blocked",
        "409",
        "`POST /v1/dossiers/{ma_ho_so}/retry` when nothing (or not that step) is blocked",
    ),
    (
        "unknown-blob",
        "404",
        "no attachment with that SHA-256 in a dossier of the key's unit",
    ),
    ("unknown-unit", "404", "no unit of that code"),
    (
        "no-adapter",
        "404",
        "the unit is not reached through an adapter",
    ),
    (
        "invalid-callback",
        "400",
        "the agency's callback could not be read, or gives an invalid envelope",
    ),
    (
        "unknown-reference",
        "404",
        "a callback naming no delivery (`MaThamChieu`) to this unit",
    ),
    (
        "reference-mismatch",
        "409",
        "a callback whose delivery reference belongs to another dossier",
    ),
    (
        "callback-differs",
        "409",
        "a repeated callback whose content differs from the first one, taken but not yet published: send the first one again",
    ),
    (
        "not-edxml-pull",
        "404",
        "the unit is not reached by the edxml adapter with `transport = \"pull\"`",
    ),
    (
        "no-package",
        "404",
        "no such waiting edXML package of the unit",
    ),
    (
        "invalid-ack",
        "400",
        "an edXML acknowledgement that is not `{\"status\": \"done\" | \"fail\", \"reason\"?}`",
    ),
    (
        "internal",
        "500",
        "the bus failed on the request (a bug); `instance` names the log line",
    ),
    (
        "store",
        "500",
        "the store failed on the request; `instance` names the log line",
    ),
    (
        "render",
        "500",
        "the control sheet could not be rendered; `instance` names the log line",
    ),
];

impl From<Rejection> for Problem {
    fn from(r: Rejection) -> Self {
        let status = rejection_status(r.code);
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
            error_id: None,
        }
    }
}

/// The `type` of a problem with `code`.
pub fn problem_type(code: &str) -> String {
    format!("urn:lienthong:problem:{code}")
}

/// The rejection codes a problem of the HTTP API may carry: those about what the sender sent
/// (the others, [`RejectCode::blames_receiver`], name only dead letters).
pub fn answered_rejections() -> impl Iterator<Item = RejectCode> {
    RejectCode::ALL.into_iter().filter(|c| !c.blames_receiver())
}

/// The problem+json body in the OpenAPI document: its `type` is one of the rejection codes
/// ([`answered_rejections`]) or of [`PROBLEM_TYPES`], listed with their statuses.
impl utoipa::PartialSchema for Problem {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{ArrayBuilder, Object, ObjectBuilder, OneOfBuilder, Type};
        let mut types = Vec::new();
        let mut table =
            String::from("`urn:lienthong:problem:<code>`, one of these (status: code, when):\n");
        for c in answered_rejections() {
            types.push(problem_type(c.as_str()));
            table.push_str(&format!(
                "\n- {}: `{}`, {}",
                rejection_status(c).as_u16(),
                c.as_str(),
                c.title()
            ));
        }
        for (code, status, when) in PROBLEM_TYPES {
            types.push(problem_type(code));
            table.push_str(&format!("\n- {status}: `{code}`, {when}"));
        }
        let text = |d: &str| {
            ObjectBuilder::new()
                .schema_type(Type::String)
                .description(Some(d))
        };
        ObjectBuilder::new()
            .description(Some(
                "An RFC 9457 problem (`application/problem+json`): what went wrong, for programs \
                 (`type`) and for people (`title`, `detail`). Nothing was taken unless the \
                 problem says it may have been (`timeout`).",
            ))
            .property("type", text(&table).enum_values(Some(types)))
            .required("type")
            .property("title", text("Short title of the problem type."))
            .required("title")
            .property(
                "status",
                ObjectBuilder::new()
                    .schema_type(Type::Integer)
                    .minimum(Some(400))
                    .maximum(Some(599))
                    .description(Some("The HTTP status.")),
            )
            .required("status")
            .property("detail", text("What is wrong, for people."))
            .required("detail")
            .property(
                "errors",
                ArrayBuilder::new()
                    .items(
                        OneOfBuilder::new()
                            .item(Object::with_type(Type::String))
                            .item(utoipa::openapi::Ref::from_schema_name("FieldError")),
                    )
                    .description(Some(
                        "Individual errors: each schema error with its JSON pointer (strings), or \
                         for `procedure-data-invalid` each field the procedure's route needs \
                         (objects).",
                    )),
            )
            .property(
                "instance",
                text(
                    "An internal error's id (`urn:lienthong:error:<16 hex digits>`): the operator \
                     finds the cause in the log under `error_id`.",
                )
                .pattern(Some("^urn:lienthong:error:[0-9a-f]{16}$")),
            )
            .into()
    }
}

impl utoipa::ToSchema for Problem {
    fn schemas(
        schemas: &mut Vec<(
            String,
            utoipa::openapi::RefOr<utoipa::openapi::schema::Schema>,
        )>,
    ) {
        use lienthong_core::envelope::FieldError;
        use utoipa::PartialSchema;
        schemas.push((
            <FieldError as utoipa::ToSchema>::name().into(),
            FieldError::schema(),
        ));
        <FieldError as utoipa::ToSchema>::schemas(schemas);
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let mut body = json!({
            "type": problem_type(&self.code),
            "title": self.title,
            "status": self.status.as_u16(),
            "detail": self.detail,
        });
        if !self.errors.is_empty() {
            body["errors"] = json!(self.errors);
        }
        if let Some(id) = self.error_id {
            body["instance"] = json!(format!("urn:lienthong:error:{id:016x}"));
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    /// A log writer into a shared buffer.
    #[derive(Clone, Default)]
    struct Buf(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Buf {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            if let Ok(mut v) = self.0.lock() {
                v.extend_from_slice(b);
            }
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[tokio::test]
    async fn an_internal_error_is_logged_under_the_id_it_is_answered_with() {
        let log = Buf::default();
        let writer = log.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .finish();
        let p = tracing::subscriber::with_default(subscriber, || {
            Problem::internal("disk I/O error: no such table: dead_letters")
        });
        let resp = p.into_response();
        assert_eq!(resp.status(), StatusCode::INTERNAL_SERVER_ERROR);
        let body = axum::body::to_bytes(resp.into_body(), 1 << 20)
            .await
            .unwrap_or_default();
        let body: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
        let text = body.to_string();
        assert!(
            !text.contains("dead_letters") && !text.contains("I/O"),
            "{text}"
        );
        let id = body["instance"]
            .as_str()
            .and_then(|i| i.strip_prefix("urn:lienthong:error:"))
            .unwrap_or_default()
            .to_string();
        assert_eq!(id.len(), 16, "{text}");
        let logged = log
            .0
            .lock()
            .map(|v| String::from_utf8_lossy(&v).into_owned())
            .unwrap_or_default();
        assert!(
            logged.contains(&format!("error_id={id}"))
                && logged.contains("no such table: dead_letters"),
            "the log line carries the id and the cause: {logged}"
        );
    }
}
