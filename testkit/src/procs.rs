//! Starting bus processes from outside: where the `lienthong` and `lienthong-mock` binaries
//! are, free loopback ports, waiting for a child to say it listens, and a broker connection
//! that waits for the broker. Shared by the demo, the bench and the tests.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use lienthong_core::registry::Settings;

/// How the line starts that `lienthong-mock` prints once it listens (the address follows).
pub const MOCK_LISTENING: &str = "mock agencies listening on";

/// How the line starts that `lienthong run` logs once its HTTP API listens (the address
/// follows). The same text as `lienthong::run::HTTP_LISTENING`, which the test kit cannot name
/// (it does not depend on the `lienthong` package); `tests/bus.rs` checks that they agree.
pub const HTTP_LISTENING: &str = "HTTP API listening on";

/// The executable `name` (e.g. `lienthong`, `lienthong-mock`): the path in the environment
/// variable `env` if set, else the file of that name beside the running executable (cargo
/// builds every binary of the workspace into the same directory). Errors: neither exists.
pub fn exe(name: &str, env: &str) -> anyhow::Result<PathBuf> {
    if let Some(p) = std::env::var_os(env) {
        let p = PathBuf::from(p);
        if !p.is_file() {
            anyhow::bail!("{env}={} is not a file", p.display());
        }
        return Ok(p);
    }
    let me = std::env::current_exe().context("cannot find the running executable")?;
    let dir = me.parent().unwrap_or(Path::new("."));
    let p = dir.join(name);
    if p.is_file() {
        return Ok(p);
    }
    anyhow::bail!(
        "no `{name}` beside {}: build it (`cargo build --bin {name}`) or set {env} to its path",
        me.display()
    )
}

/// A free loopback TCP port for a child process (bound and released; the demo, the bench and
/// the tests give it to a child). Picked at random below the kernel's ephemeral range
/// (`/proc/sys/net/ipv4/ip_local_port_range`), where a server binding port 0 — such as another
/// test's in-process mock — cannot be handed the same port before the child binds it. Falls back
/// to a port the kernel picks when no such range is known or free. The caller should still wait
/// for the child to say it listens ([`wait_listening`]).
pub fn free_port() -> anyhow::Result<u16> {
    use rand::Rng;
    let ephemeral_low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|t| {
            t.split_whitespace()
                .next()
                .and_then(|p| p.parse::<u16>().ok())
        });
    if let Some(low) = ephemeral_low.filter(|l| *l > 20_000) {
        let mut rng = rand::rng();
        for _ in 0..200 {
            let port = rng.random_range(15_000..low);
            if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
                return Ok(port);
            }
        }
    }
    let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(l.local_addr()?.port())
}

/// Wait until the child process writing `log` says it listens on `addr` (a line holding
/// `what` and `addr`), polling every 100 ms, at most `secs` seconds. A port picked with
/// [`free_port`] may be taken by another process before the child binds it; that process's
/// server would then answer [`wait_http`] in the child's stead. Errors: the line did not come
/// (the log's last lines say why, e.g. "cannot listen on …: Address in use").
pub async fn wait_listening(log: &Path, what: &str, addr: &str, secs: u64) -> anyhow::Result<()> {
    let until = Instant::now() + Duration::from_secs(secs);
    loop {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        if text.lines().any(|l| l.contains(what) && l.contains(addr)) {
            return Ok(());
        }
        if Instant::now() > until {
            let tail: Vec<&str> = text.lines().rev().take(5).collect();
            anyhow::bail!(
                "{} did not say it listens on {addr} within {secs} s; its log ends with:\n{}",
                log.display(),
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Wait until `url` answers 2xx (polling every 100 ms), at most `secs` seconds.
pub async fn wait_http(url: &str, secs: u64) -> anyhow::Result<()> {
    wait_http_with(&reqwest::Client::new(), url, secs).await
}

/// [`wait_http`] with `client` (e.g. one that trusts the demo's CA, for an `https://` URL).
pub async fn wait_http_with(client: &reqwest::Client, url: &str, secs: u64) -> anyhow::Result<()> {
    let until = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Ok(r) = client.get(url).send().await
            && r.status().is_success()
        {
            return Ok(());
        }
        if Instant::now() > until {
            anyhow::bail!("{url} did not answer within {secs} s");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Connect to the broker of `settings`, retrying every second for up to about 30 s (the broker
/// may still be starting).
pub async fn connect(settings: &Settings, name: &str) -> anyhow::Result<lapin::Connection> {
    let url = &settings.bus.amqp_url;
    // amqps:// with the CA and client certificate of [bus], as `lienthong run` connects.
    let tls = lienthong_core::amqp::tls_config(&settings.bus).map_err(anyhow::Error::msg)?;
    let mut tries = 0;
    loop {
        match lienthong_core::amqp::connect_with(url, name, &tls).await {
            Ok(c) => return Ok(c),
            Err(e) if tries < 30 => {
                tries += 1;
                tracing::warn!(message = "broker not reachable yet", error = %e);
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            Err(e) => {
                return Err(e).with_context(|| {
                    format!(
                        "cannot connect to the broker at {}",
                        lienthong_core::amqp::redact(url)
                    )
                });
            }
        }
    }
}
