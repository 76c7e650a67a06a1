//! The broker side of the benchmark: its version (from the server properties of an AMQP
//! `connection.start`), its process, and the shovel plugin and dynamic shovels (in the node or
//! over TCP), driven with `rabbitmq-plugins` and `rabbitmqctl`.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Host and port of an AMQP URL (`amqp://user:pass@host:port/vhost`; port 5672 by default).
pub fn host_port(url: &str) -> (String, u16) {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let rest = rest.rsplit_once('@').map_or(rest, |(_, r)| r);
    let hostport = rest.split(['/', '?']).next().unwrap_or("127.0.0.1");
    match hostport.rsplit_once(':') {
        Some((h, p)) if !h.is_empty() => (h.to_string(), p.parse().unwrap_or(5672)),
        _ => (hostport.to_string(), 5672),
    }
}

/// The broker's `version` server property: open a TCP connection, send the AMQP 0-9-1 protocol
/// header and read the `connection.start` method the server answers with. (lapin does not keep
/// the server properties, so this reads them itself; the connection is then dropped.)
pub async fn server_version(host: &str, port: u16) -> Option<String> {
    let fut = async {
        let mut s = tokio::net::TcpStream::connect((host, port)).await.ok()?;
        s.write_all(b"AMQP\x00\x00\x09\x01").await.ok()?;
        let mut head = [0u8; 7];
        s.read_exact(&mut head).await.ok()?;
        if head[0] != 1 {
            return None;
        }
        let size = u32::from_be_bytes([head[3], head[4], head[5], head[6]]) as usize;
        if size > 1 << 20 {
            return None;
        }
        let mut payload = vec![0u8; size];
        s.read_exact(&mut payload).await.ok()?;
        parse_start_version(&payload)
    };
    tokio::time::timeout(Duration::from_secs(5), fut)
        .await
        .ok()
        .flatten()
}

/// The `version` entry of the server-properties table of a `connection.start` payload.
fn parse_start_version(p: &[u8]) -> Option<String> {
    // class 10, method 10, version-major, version-minor, then the table.
    if p.len() < 10 || p[0..4] != [0, 10, 0, 10] {
        return None;
    }
    let len = u32::from_be_bytes([p[6], p[7], p[8], p[9]]) as usize;
    let table = p.get(10..10 + len)?;
    let mut i = 0;
    let be32 = |b: &[u8], at: usize| -> Option<usize> {
        Some(u32::from_be_bytes(b.get(at..at + 4)?.try_into().ok()?) as usize)
    };
    while i < table.len() {
        let nlen = *table.get(i)? as usize;
        let name = table.get(i + 1..i + 1 + nlen)?;
        i += 1 + nlen;
        let ty = *table.get(i)?;
        i += 1;
        let skip = match ty {
            b'S' | b'F' | b'A' | b'x' => {
                let l = be32(table, i)?;
                if ty == b'S' && name == b"version" {
                    return Some(
                        String::from_utf8_lossy(table.get(i + 4..i + 4 + l)?).into_owned(),
                    );
                }
                4 + l
            }
            b't' | b'b' | b'B' => 1,
            b's' | b'u' => 2,
            b'I' | b'i' | b'f' => 4,
            b'l' | b'L' | b'd' | b'T' => 8,
            b'D' => 5,
            b'V' => 0,
            _ => return None,
        };
        i += skip;
    }
    None
}

/// The broker's `beam.smp`: the process listening on the AMQP port, else a `beam.smp` running
/// RabbitMQ.
pub fn broker_pid(port: u16) -> Option<u32> {
    super::procfs::listener_pid(port)
        .filter(|pid| super::procfs::comm(*pid).is_some_and(|c| c.starts_with("beam")))
        .or_else(super::procfs::rabbit_beam_pid)
}

/// Run a RabbitMQ CLI tool; Ok(stdout) on success, Err(what it said) otherwise.
pub async fn cli(tool: &str, args: &[&str]) -> Result<String, String> {
    let out = tokio::process::Command::new(tool)
        .args(args)
        .output()
        .await
        .map_err(|e| format!("cannot run {tool}: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "{tool} {} failed ({}): {}{}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim(),
            String::from_utf8_lossy(&out.stdout).trim()
        ))
    }
}

/// The same, blocking (for clean-up in `Drop`).
pub fn cli_blocking(tool: &str, args: &[&str]) -> Result<String, String> {
    let out = std::process::Command::new(tool)
        .args(args)
        .output()
        .map_err(|e| format!("cannot run {tool}: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "{tool} {} failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Where the shovel plugin stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ShovelPlugin {
    /// Enabled before the benchmark started: left enabled.
    AlreadyEnabled,
    /// Enabled by the benchmark: disabled again at the end.
    EnabledByUs,
    /// Not usable; the shovel mode is skipped for this reason.
    Unavailable(String),
}

/// The plugin's name.
pub const SHOVEL: &str = "rabbitmq_shovel";

/// Make the shovel plugin usable: enable it when it is present but disabled. Before enabling it,
/// `register` is told the enabled-plugins file and whether it exists, so that the caller's
/// clean-up disables the plugin again (and removes the file if `rabbitmq-plugins` created it),
/// whatever happens next.
pub async fn prepare_shovel_plugin(
    register: impl FnOnce(std::path::PathBuf, bool),
) -> ShovelPlugin {
    // One call (each `rabbitmq-plugins` run costs seconds): `[E*] name version` when enabled
    // explicitly, `[e*]` implicitly, `[  ]` when disabled; no line when absent.
    let list = match cli("rabbitmq-plugins", &["list", SHOVEL]).await {
        Ok(s) => s,
        Err(e) => return ShovelPlugin::Unavailable(e),
    };
    let Some(line) = list
        .lines()
        .find(|l| l.trim_start().starts_with('[') && l.split_whitespace().any(|w| w == SHOVEL))
    else {
        return ShovelPlugin::Unavailable(format!(
            "the {SHOVEL} plugin is not installed with this RabbitMQ"
        ));
    };
    let marks = line
        .trim_start()
        .strip_prefix('[')
        .and_then(|r| r.split(']').next())
        .unwrap_or("");
    if marks.contains('E') || marks.contains('e') {
        return ShovelPlugin::AlreadyEnabled;
    }
    let file = enabled_plugins_file();
    let existed = file.exists();
    register(file, existed);
    eprintln!("enabling {SHOVEL} (it will be disabled again at the end)");
    if let Err(e) = cli("rabbitmq-plugins", &["enable", SHOVEL]).await {
        // A failed enable may have half-enabled it: the registered clean-up disables it.
        return ShovelPlugin::Unavailable(e);
    }
    ShovelPlugin::EnabledByUs
}

/// The file `rabbitmq-plugins` writes (`RABBITMQ_ENABLED_PLUGINS_FILE`, Debian's default
/// otherwise).
fn enabled_plugins_file() -> std::path::PathBuf {
    std::env::var_os("RABBITMQ_ENABLED_PLUGINS_FILE")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| std::path::PathBuf::from("/etc/rabbitmq/enabled_plugins"))
}

/// The URI of RabbitMQ's direct connection inside the node for the virtual host of `url`:
/// `amqp://` (no host: the shovel runs its client in the node itself, without TCP) for the
/// default virtual host, `amqp:///<vhost>` for another.
pub fn in_node_uri(url: &str) -> String {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let rest = rest.rsplit_once('@').map_or(rest, |(_, r)| r);
    let vhost = rest
        .split_once('/')
        .map_or("", |(_, v)| v.split('?').next().unwrap_or(""));
    if vhost.is_empty() || vhost.eq_ignore_ascii_case("%2f") {
        "amqp://".into()
    } else {
        format!("amqp:///{vhost}")
    }
}

/// The JSON definition of a dynamic shovel from `src` to `dest` on `uri`, acking the source
/// only after the destination confirmed (`on-confirm`).
pub fn shovel_definition(uri: &str, src: &str, dest: &str, prefetch: u16) -> String {
    serde_json::json!({
        "src-protocol": "amqp091",
        "src-uri": uri,
        "src-queue": src,
        "src-prefetch-count": prefetch,
        "dest-protocol": "amqp091",
        "dest-uri": uri,
        "dest-queue": dest,
        "ack-mode": "on-confirm",
        "reconnect-delay": 1,
    })
    .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_host_port() {
        assert_eq!(
            host_port("amqp://guest:guest@127.0.0.1:5672/%2f"),
            ("127.0.0.1".into(), 5672)
        );
        assert_eq!(host_port("amqp://localhost"), ("localhost".into(), 5672));
        assert_eq!(host_port("amqp://u:p@h:5673"), ("h".into(), 5673));
    }

    #[test]
    fn the_in_node_uri_keeps_the_vhost() {
        assert_eq!(
            in_node_uri("amqp://guest:guest@127.0.0.1:5672/%2f"),
            "amqp://"
        );
        assert_eq!(in_node_uri("amqp://guest:guest@127.0.0.1:5672"), "amqp://");
        assert_eq!(in_node_uri("amqp://u:p@h:5672/"), "amqp://");
        assert_eq!(in_node_uri("amqp://u:p@h/bus?heartbeat=10"), "amqp:///bus");
    }

    #[test]
    fn start_version() {
        let mut table = Vec::new();
        table.push(7u8);
        table.extend_from_slice(b"product");
        table.push(b'S');
        table.extend_from_slice(&8u32.to_be_bytes());
        table.extend_from_slice(b"RabbitMQ");
        table.push(7u8);
        table.extend_from_slice(b"version");
        table.push(b'S');
        table.extend_from_slice(&6u32.to_be_bytes());
        table.extend_from_slice(b"3.10.8");
        let mut p = vec![0, 10, 0, 10, 0, 9];
        p.extend_from_slice(&(table.len() as u32).to_be_bytes());
        p.extend_from_slice(&table);
        assert_eq!(parse_start_version(&p).as_deref(), Some("3.10.8"));
    }
}
