//! The log every `lienthong` process writes to stderr: text lines or JSON lines (`[log]
//! format`), filtered by `RUST_LOG` (default `info,lapin=warn`, the tests' in-process bus uses
//! the same filter), with the directives that keep message bodies out of the log.

use tracing_subscriber::EnvFilter;

/// Directives added after `RUST_LOG`'s, so that they win over it: lapin logs a message the
/// broker returned as a whole (`Server returned us a message`, with its body — an envelope
/// carries citizens' personal data — as a byte array), and at `trace` level every frame with
/// its payload. The bus logs a returned message itself, by message id, dossier code and routing
/// key (`lienthong_core::amqp::Publisher::publish`).
pub const BODY_FREE_DIRECTIVES: [&str; 3] = [
    "lapin::returned_messages=off",
    "lapin::channels=info",
    "lapin::frames=info",
];

/// `RUST_LOG` (or `default` when it is unset or invalid) plus [`BODY_FREE_DIRECTIVES`].
pub fn env_filter(default: &str) -> EnvFilter {
    let spec = std::env::var("RUST_LOG")
        .ok()
        .filter(|s| EnvFilter::try_new(s).is_ok())
        .unwrap_or_else(|| default.to_string());
    filter(&spec)
}

/// The filter of the `RUST_LOG`-style `spec` plus [`BODY_FREE_DIRECTIVES`].
pub fn filter(spec: &str) -> EnvFilter {
    let mut f = EnvFilter::try_new(spec).unwrap_or_else(|_| EnvFilter::new("info"));
    for d in BODY_FREE_DIRECTIVES {
        if let Ok(d) = d.parse() {
            f = f.add_directive(d);
        }
    }
    f
}

/// Install the process's log on stderr: `format` (text, coloured on a terminal; or one JSON
/// object per line with the event's fields at the top level) filtered by [`env_filter`] with
/// `default`.
pub fn init(format: lienthong_core::registry::LogFormat, default: &str) {
    let builder = tracing_subscriber::fmt()
        .with_env_filter(env_filter(default))
        .with_writer(std::io::stderr);
    match format {
        lienthong_core::registry::LogFormat::Text => builder
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init(),
        lienthong_core::registry::LogFormat::Json => builder
            .json()
            .flatten_event(true)
            // Inside a span of the distributed trace (`[telemetry]`), `span.trace_id`.
            .with_current_span(true)
            .with_span_list(false)
            .init(),
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::sync::{Arc, Mutex};

    /// Captures what the subscriber writes.
    #[derive(Clone, Default)]
    struct Sink(Arc<Mutex<Vec<u8>>>);

    impl Write for Sink {
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

    #[test]
    fn lapins_returned_message_and_frame_logs_never_reach_the_log_even_at_trace() {
        let sink = Sink::default();
        let s = sink.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_env_filter(super::filter("trace"))
            .with_writer(move || s.clone())
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            tracing::warn!(target: "lapin::returned_messages", message = ?b"{\"so_dinh_danh\":\"051094000123\"}", "Server returned us a message");
            tracing::trace!(target: "lapin::channels", frame = "{\"ho_ten\":\"Dinh Van Luc\"}", "will handle frame");
            tracing::warn!(target: "lienthong_core::amqp", message_id = "01a2", "the broker returned a message");
        });
        let text = String::from_utf8_lossy(&sink.0.lock().map(|v| v.clone()).unwrap_or_default())
            .to_string();
        assert!(!text.contains("051094000123"), "{text}");
        assert!(!text.contains("Dinh Van Luc"), "{text}");
        assert!(text.contains("01a2"), "the bus's own line stays: {text}");
    }
}
