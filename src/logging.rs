//! The log filter every `lienthong` process (and the tests' in-process bus) uses: `RUST_LOG`
//! (default `info,lapin=warn`), with the directives that keep message bodies out of the log.

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
    let mut f = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    for d in BODY_FREE_DIRECTIVES {
        if let Ok(d) = d.parse() {
            f = f.add_directive(d);
        }
    }
    f
}
