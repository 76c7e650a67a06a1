//! OTLP export of the bus's spans (`[telemetry]`): `lienthong run` installs the tracer provider
//! (batched export over OTLP/HTTP, protobuf or JSON) and the W3C trace-context propagator when
//! `otlp_endpoint` is set, and flushes what is left when the process ends. The spans themselves
//! are made in `lienthong_core::telemetry`.

use lienthong_core::telemetry::TelemetrySettings;
use opentelemetry::KeyValue;
use opentelemetry_otlp::{Protocol, WithExportConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;

/// The installed exporter; [`Telemetry::shutdown`] exports what is still batched.
pub struct Telemetry {
    provider: SdkTracerProvider,
}

/// Install OTLP export for this process when `settings` name an endpoint (`None`: telemetry
/// off, nothing installed). `instance` names the process among the bus's (its components).
/// Call it outside the async runtime: the exporter's HTTP client runs on a thread of its own.
pub fn init(settings: &TelemetrySettings, instance: &str) -> anyhow::Result<Option<Telemetry>> {
    let Some(url) = settings.traces_url() else {
        return Ok(None);
    };
    settings.validate().map_err(anyhow::Error::msg)?;
    let protocol = match settings.otlp_protocol.as_deref() {
        Some("http/json") => Protocol::HttpJson,
        _ => Protocol::HttpBinary,
    };
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(protocol)
        .with_endpoint(url.clone())
        .with_timeout(std::time::Duration::from_secs(10))
        .build()?;
    let resource = Resource::builder()
        .with_service_name(
            settings
                .service_name
                .clone()
                .unwrap_or_else(|| "lienthong".into()),
        )
        .with_attributes([
            KeyValue::new(
                "service.instance.id",
                format!("{instance}@{}", std::process::id()),
            ),
            KeyValue::new("service.version", env!("CARGO_PKG_VERSION")),
            KeyValue::new("lienthong.components", instance.to_string()),
        ])
        .build();
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource)
        .build();
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    opentelemetry::global::set_tracer_provider(provider.clone());
    lienthong_core::telemetry::enable();
    tracing::info!(message = "exporting spans over OTLP", endpoint = %url, protocol = ?protocol);
    Ok(Some(Telemetry { provider }))
}

impl Telemetry {
    /// Export what is still batched and stop (at most 5 s).
    pub fn shutdown(self) {
        if let Err(e) = self
            .provider
            .shutdown_with_timeout(std::time::Duration::from_secs(5))
        {
            tracing::warn!(message = "the last spans could not be exported", error = %e);
        }
    }
}

/// The attributes of a span about `env`: its dossier code, message id, kind and parties.
pub fn envelope_attributes(env: &lienthong_core::Envelope) -> Vec<KeyValue> {
    vec![
        KeyValue::new("lienthong.ma_ho_so", env.ma_ho_so.clone()),
        KeyValue::new("messaging.message.id", env.message_id.clone()),
        KeyValue::new("lienthong.kind", env.kind.0.clone()),
        KeyValue::new("lienthong.sender", env.sender.clone()),
        KeyValue::new(
            "lienthong.receiver",
            env.receiver.clone().unwrap_or_default(),
        ),
    ]
}
