//! Distributed tracing inside the bus: the `[telemetry]` settings, W3C trace context
//! (`traceparent` / `tracestate`, <https://www.w3.org/TR/trace-context/>, through the global
//! propagator the binary installs) carried in AMQP headers and HTTP headers, and the spans of each stage (ingress, routing, a process-manager
//! step, a delivery, each attempt, the agency call). Spans go to the OpenTelemetry global tracer
//! provider, which `lienthong run` sets up (OTLP export) only when `[telemetry] otlp_endpoint`
//! is set; otherwise every function here returns at once, so the hot path pays one relaxed
//! atomic load.

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};

use lapin::types::{AMQPValue, FieldTable, LongString};
use opentelemetry::propagation::{Extractor, Injector};
use opentelemetry::trace::{FutureExt, SpanKind, TraceContextExt, Tracer, TracerProvider as _};
pub use opentelemetry::{Context, KeyValue};
use serde::{Deserialize, Serialize};

/// `[telemetry]`: distributed tracing export (off unless `otlp_endpoint` is set).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TelemetrySettings {
    /// The OTLP/HTTP receiver (an OpenTelemetry Collector, Jaeger, Tempo…), for example
    /// `http://127.0.0.1:4318`; `/v1/traces` is appended unless the URL already ends with it.
    /// Unset: no spans are made and nothing is exported.
    pub otlp_endpoint: Option<String>,
    /// `http/protobuf` (default) or `http/json`, the OTLP encodings over HTTP
    /// (<https://opentelemetry.io/docs/specs/otlp/#otlphttp>).
    pub otlp_protocol: Option<String>,
    /// The `service.name` of the spans (default `lienthong`); each process adds its components
    /// as `service.instance.id`.
    pub service_name: Option<String>,
}

impl TelemetrySettings {
    /// The traces URL: [`TelemetrySettings::otlp_endpoint`] with `/v1/traces` appended when it
    /// does not end with it.
    pub fn traces_url(&self) -> Option<String> {
        let e = self.otlp_endpoint.as_deref()?.trim().trim_end_matches('/');
        (!e.is_empty()).then(|| {
            if e.ends_with("/v1/traces") {
                e.to_string()
            } else {
                format!("{e}/v1/traces")
            }
        })
    }

    /// Check the settings: a URL with a scheme, a known protocol.
    pub fn validate(&self) -> Result<(), String> {
        if let Some(url) = self.traces_url()
            && !(url.starts_with("http://") || url.starts_with("https://"))
        {
            return Err(format!(
                "[telemetry] otlp_endpoint: {url} is not an http:// or https:// URL"
            ));
        }
        match self.otlp_protocol.as_deref() {
            None | Some("http/protobuf") | Some("http/json") => Ok(()),
            Some(p) => Err(format!(
                "[telemetry] otlp_protocol: {p} (use http/protobuf or http/json)"
            )),
        }
    }
}

static ENABLED: AtomicBool = AtomicBool::new(false);

/// Whether spans are made (set by [`enable`] once the exporter is installed).
pub fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

/// Make spans from now on (the caller has installed the global tracer provider).
pub fn enable() {
    ENABLED.store(true, Ordering::Relaxed);
}

/// The instrumentation scope the bus's spans are made in.
const SCOPE: &str = "lienthong";

/// AMQP headers as a carrier.
struct AmqpHeaders<'a>(&'a FieldTable);

/// A trace-context header value as sent by a party the bus does not control (a unit, an
/// agency): printable ASCII and at most 512 bytes, else ignored (W3C Trace Context allows no
/// more; a control character would later make the bus's own HTTP requests unbuildable).
fn well_formed(v: &str) -> Option<&str> {
    (v.len() <= 512 && v.bytes().all(|b| (0x20..=0x7e).contains(&b))).then_some(v)
}

impl Extractor for AmqpHeaders<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        match self.0.inner().get(key)? {
            AMQPValue::LongString(s) => {
                std::str::from_utf8(s.as_bytes()).ok().and_then(well_formed)
            }
            AMQPValue::ShortString(s) => well_formed(s.as_str()),
            _ => None,
        }
    }

    fn keys(&self) -> Vec<&str> {
        self.0.inner().keys().map(|k| k.as_str()).collect()
    }
}

struct AmqpHeadersMut<'a>(&'a mut FieldTable);

impl Injector for AmqpHeadersMut<'_> {
    fn set(&mut self, key: &str, value: String) {
        if value.is_empty() {
            // No `tracestate`: none is sent (and an old one is not kept).
            if self.0.contains_key(key) {
                let kept: std::collections::BTreeMap<_, _> = self
                    .0
                    .inner()
                    .iter()
                    .filter(|(k, _)| k.as_str() != key)
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect();
                *self.0 = kept.into();
            }
            return;
        }
        self.0
            .insert(key.into(), AMQPValue::LongString(LongString::from(value)));
    }
}

/// HTTP headers as a carrier.
struct HttpHeaders<'a>(&'a http::HeaderMap);

impl Extractor for HttpHeaders<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0
            .get(key)
            .and_then(|v| v.to_str().ok())
            .and_then(well_formed)
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(|k| k.as_str()).collect()
    }
}

/// The trace context a message's AMQP headers carry (none: an empty context).
pub fn from_amqp(headers: Option<&FieldTable>) -> Context {
    match headers {
        Some(h) if enabled() => {
            opentelemetry::global::get_text_map_propagator(|p| p.extract(&AmqpHeaders(h)))
        }
        _ => Context::new(),
    }
}

/// The trace context HTTP request headers carry (none: an empty context).
pub fn from_http(headers: &http::HeaderMap) -> Context {
    if !enabled() {
        return Context::new();
    }
    opentelemetry::global::get_text_map_propagator(|p| p.extract(&HttpHeaders(headers)))
}

/// Write the current span's context into AMQP headers (`traceparent`, `tracestate`), replacing
/// what they carried; nothing when there is no current span.
pub fn inject_amqp(headers: &mut FieldTable) {
    if !enabled() {
        return;
    }
    opentelemetry::global::get_text_map_propagator(|p| {
        p.inject_context(&Context::current(), &mut AmqpHeadersMut(headers))
    });
}

/// The current span's context as HTTP headers (`traceparent`, `tracestate`), to send to an
/// agency; empty when there is no current span.
pub fn http_headers() -> Vec<(&'static str, String)> {
    let mut out = Vec::new();
    if !enabled() {
        return out;
    }
    struct Pairs<'a>(&'a mut Vec<(&'static str, String)>);
    impl Injector for Pairs<'_> {
        fn set(&mut self, key: &str, value: String) {
            let key = match key {
                "traceparent" => "traceparent",
                "tracestate" => "tracestate",
                _ => return,
            };
            // Only what an HTTP header may carry, and no empty `tracestate`.
            if value.is_empty() || http::HeaderValue::from_str(&value).is_err() {
                return;
            }
            self.0.push((key, value));
        }
    }
    opentelemetry::global::get_text_map_propagator(|p| {
        p.inject_context(&Context::current(), &mut Pairs(&mut out))
    });
    out
}

/// The stages the bus makes spans for.
#[derive(Debug, Clone, Copy)]
pub enum Stage {
    /// A message taken in over HTTP (`POST /v1/messages`, an agency's callback).
    Ingress,
    /// The router handling one delivery from `<p>.route`.
    Route,
    /// The process manager handling a message of a dossier it runs.
    ProcessStep,
    /// An adapter handling one delivery from its unit's queue.
    Deliver,
    /// One attempt of a delivery to an agency.
    Attempt,
    /// One HTTP exchange with an agency.
    AgencyCall,
}

impl Stage {
    fn name(self) -> &'static str {
        match self {
            Stage::Ingress => "ingress",
            Stage::Route => "route",
            Stage::ProcessStep => "process step",
            Stage::Deliver => "deliver",
            Stage::Attempt => "attempt",
            Stage::AgencyCall => "agency call",
        }
    }

    fn kind(self) -> SpanKind {
        match self {
            Stage::Ingress => SpanKind::Server,
            Stage::Route | Stage::Deliver => SpanKind::Consumer,
            Stage::ProcessStep | Stage::Attempt => SpanKind::Internal,
            Stage::AgencyCall => SpanKind::Client,
        }
    }
}

/// Run `fut` inside a new span of `stage`, child of `parent()` (or of the current span when it
/// gives `None`), with `attributes()`; the span ends when `fut` does. Without telemetry, just
/// `fut` (neither closure is called).
pub async fn in_span<F: Future>(
    stage: Stage,
    parent: impl FnOnce() -> Option<Context>,
    attributes: impl FnOnce() -> Vec<KeyValue>,
    fut: F,
) -> F::Output {
    if !enabled() {
        return fut.await;
    }
    let parent = parent().unwrap_or_else(Context::current);
    let tracer = opentelemetry::global::tracer_provider().tracer(SCOPE);
    let span = tracer
        .span_builder(stage.name())
        .with_kind(stage.kind())
        .with_attributes(attributes())
        .start_with_context(&tracer, &parent);
    let cx = parent.with_span(span);
    // Log lines written inside carry the trace id (a `tracing` span around the future: JSON
    // logs show it as `span.trace_id`).
    let sc = cx.span().span_context().clone();
    let logs = if sc.is_valid() {
        tracing::info_span!("trace", trace_id = %sc.trace_id())
    } else {
        tracing::Span::none()
    };
    let out = tracing::Instrument::instrument(fut.with_context(cx.clone()), logs).await;
    cx.span().end();
    out
}

/// Add attributes to the current span (the dossier code once a message is read, an answer's
/// status); nothing without telemetry.
pub fn annotate(attributes: impl FnOnce() -> Vec<KeyValue>) {
    if !enabled() {
        return;
    }
    let cx = Context::current();
    let span = cx.span();
    for kv in attributes() {
        span.set_attribute(kv);
    }
}

/// Mark the current span as failed with `why`; nothing without telemetry.
pub fn fail(why: &str) {
    if !enabled() {
        return;
    }
    Context::current()
        .span()
        .set_status(opentelemetry::trace::Status::error(why.to_string()));
}

/// The current trace id (32 hex digits), for log lines; `None` without telemetry or outside a
/// span.
pub fn trace_id() -> Option<String> {
    if !enabled() {
        return None;
    }
    let cx = Context::current();
    let sc = cx.span().span_context().clone();
    sc.is_valid().then(|| sc.trace_id().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_traces_url_gets_its_path_once() {
        let s = |e: &str| TelemetrySettings {
            otlp_endpoint: Some(e.into()),
            ..Default::default()
        };
        assert_eq!(
            s("http://127.0.0.1:4318").traces_url().as_deref(),
            Some("http://127.0.0.1:4318/v1/traces")
        );
        assert_eq!(
            s("http://c:4318/v1/traces/").traces_url().as_deref(),
            Some("http://c:4318/v1/traces")
        );
        assert!(s("  ").traces_url().is_none());
        assert!(s("c:4318").validate().is_err());
        assert!(
            TelemetrySettings {
                otlp_protocol: Some("grpc".into()),
                ..Default::default()
            }
            .validate()
            .is_err()
        );
    }
}
