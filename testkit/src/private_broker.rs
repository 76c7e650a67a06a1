//! A RabbitMQ node of its own (own node name, ports and data directory), for the tests that
//! stop, restart or reconfigure a broker or need a TLS listener, and for the demo's broker
//! over TLS: never the machine's shared node. Stopped and removed on drop.

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::Context;

/// A RabbitMQ node started with `rabbitmq-server -detached` under its own node name
/// (`lt-<name>-<tag>@localhost`), AMQP port, distribution port and directories; stopped and
/// its directory removed on drop.
pub struct PrivateBroker {
    /// The Erlang node name (`rabbitmqctl -n`).
    pub node: String,
    /// The plain AMQP listener's port, on 127.0.0.1.
    pub port: u16,
    /// The node's directory (config, data, logs).
    pub dir: PathBuf,
    /// The Erlang distribution port (kept for a restart).
    pub dist: u16,
}

impl PrivateBroker {
    /// Start a node with extra `rabbitmq.conf` lines and `files` (name, content) written into
    /// its directory first (an `enabled_plugins` file among them replaces the default of no
    /// plugin; an `advanced.config` file is the node's advanced configuration, Erlang terms, for
    /// the settings `rabbitmq.conf` has no key for); `{dir}` in `conf` stands for that
    /// directory. Waits (up to 90 s) until its AMQP listener answers.
    ///
    /// Errors: `rabbitmq-server` missing or failing, or the node not answering in time (the
    /// error names its log directory).
    pub fn try_start_with_files(
        name: &str,
        conf: &str,
        files: &[(&str, &str)],
    ) -> anyhow::Result<PrivateBroker> {
        let id = uuid::Uuid::now_v7().simple().to_string();
        let tag = &id[id.len() - 8..];
        let (port, dist) = (crate::procs::free_port()?, crate::procs::free_port()?);
        let node = format!("lt-{name}-{tag}@localhost");
        let dir = std::env::temp_dir().join(format!("lienthong-broker-{name}-{tag}"));
        std::fs::create_dir_all(dir.join("mnesia"))?;
        std::fs::create_dir_all(dir.join("log"))?;
        for (file, content) in files {
            std::fs::write(dir.join(file), content)?;
        }
        let conf = conf.replace("{dir}", &dir.display().to_string());
        std::fs::write(
            dir.join("rabbitmq.conf"),
            format!("listeners.tcp.default = 127.0.0.1:{port}\n{conf}\n"),
        )?;
        // No plugin, unless `files` names some (e.g. `[rabbitmq_auth_mechanism_ssl].`).
        if !files.iter().any(|(f, _)| *f == "enabled_plugins") {
            std::fs::write(dir.join("enabled_plugins"), "[].\n")?;
        }
        // The Debian server script runs the node as the rabbitmq user.
        let _ = Command::new("chown")
            .args(["-R", "rabbitmq:rabbitmq"])
            .arg(&dir)
            .status();
        launch(&node, port, dist, &dir)?;
        // From here on, the node is stopped and removed on every way out.
        let b = PrivateBroker {
            node,
            port,
            dir,
            dist,
        };
        let until = Instant::now() + Duration::from_secs(90);
        while !b.answers() {
            anyhow::ensure!(
                Instant::now() < until,
                "private broker {} did not start (logs in {})",
                b.node,
                b.dir.join("log").display()
            );
            std::thread::sleep(Duration::from_millis(500));
        }
        Ok(b)
    }

    /// A node with a TLS listener on 127.0.0.1 (a free port) that serves the certificate
    /// chain `cert` and key `key` (PEM files) and trusts `ca`; the plain listener stays on
    /// loopback for `rabbitmqctl`-free health checks. Returns the node and its TLS port.
    ///
    /// Errors: see [`PrivateBroker::try_start_with_files`]; the TLS listener not answering.
    pub fn try_start_tls(
        name: &str,
        ca: &std::path::Path,
        cert: &std::path::Path,
        key: &std::path::Path,
    ) -> anyhow::Result<(PrivateBroker, u16)> {
        let tls_port = crate::procs::free_port()?;
        let read = |p: &std::path::Path| {
            std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))
        };
        let (ca_pem, cert_pem, key_pem) = (read(ca)?, read(cert)?, read(key)?);
        let conf = format!(
            "listeners.ssl.default = 127.0.0.1:{tls_port}\n\
             ssl_options.cacertfile = {{dir}}/ca.pem\n\
             ssl_options.certfile = {{dir}}/cert.pem\n\
             ssl_options.keyfile = {{dir}}/key.pem\n\
             ssl_options.verify = verify_none\n\
             ssl_options.fail_if_no_peer_cert = false"
        );
        let node = Self::try_start_with_files(
            name,
            &conf,
            &[
                ("ca.pem", &ca_pem),
                ("cert.pem", &cert_pem),
                ("key.pem", &key_pem),
            ],
        )?;
        // The TLS listener starts with the node; give it a moment if the TCP one came first.
        for _ in 0..50 {
            if std::net::TcpStream::connect(("127.0.0.1", tls_port)).is_ok() {
                return Ok((node, tls_port));
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        anyhow::bail!(
            "the TLS listener of {} (port {tls_port}) did not answer (logs in {})",
            node.node,
            node.dir.join("log").display()
        )
    }

    /// The node's operating-system process id (`rabbitmqctl eval 'os:getpid().'`).
    ///
    /// Errors: rabbitmqctl failing, or an answer that is not a number.
    pub fn os_pid(&self) -> anyhow::Result<u32> {
        let out = Command::new("timeout")
            .args([
                "60",
                "rabbitmqctl",
                "-q",
                "-n",
                &self.node,
                "eval",
                "os:getpid().",
            ])
            .output()
            .context("cannot run rabbitmqctl")?;
        let text = String::from_utf8_lossy(&out.stdout);
        text.trim()
            .trim_matches('"')
            .parse()
            .with_context(|| format!("the pid of {}: {text:?}", self.node))
    }

    /// Kill the node outright (`kill -9` of its Erlang VM): no clean shutdown, as a crashed
    /// host. Waits until its listener is gone.
    ///
    /// Errors: its pid cannot be found, or it still answers after 30 s.
    pub fn kill9(&self) -> anyhow::Result<()> {
        let pid = self.os_pid()?;
        let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
        let until = Instant::now() + Duration::from_secs(30);
        while self.answers() {
            anyhow::ensure!(
                Instant::now() < until,
                "{} still answers after kill -9",
                self.node
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        Ok(())
    }

    /// Start the node again (same name, ports and data) after [`Self::kill9`] or a `stop`;
    /// waits (up to 90 s) until it answers.
    ///
    /// Errors: rabbitmq-server failing, or the node not answering in time.
    pub fn restart(&self) -> anyhow::Result<()> {
        launch(&self.node, self.port, self.dist, &self.dir)?;
        let until = Instant::now() + Duration::from_secs(90);
        while !self.answers() {
            anyhow::ensure!(
                Instant::now() < until,
                "{} did not start again (logs in {})",
                self.node,
                self.dir.join("log").display()
            );
            std::thread::sleep(Duration::from_millis(500));
        }
        Ok(())
    }

    /// `amqp://guest:guest@127.0.0.1:<port>/%2f`: the node's default user, which RabbitMQ
    /// lets in from loopback only.
    pub fn url(&self) -> String {
        format!("amqp://guest:guest@127.0.0.1:{}/%2f", self.port)
    }

    /// Whether the node's AMQP listener answers a protocol header.
    pub fn answers(&self) -> bool {
        use std::io::{Read, Write};
        let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", self.port)) else {
            return false;
        };
        let _ = s.set_read_timeout(Some(Duration::from_secs(3)));
        let mut buf = [0u8; 8];
        s.write_all(b"AMQP\x00\x00\x09\x01").is_ok()
            && s.read(&mut buf).map(|n| n > 0).unwrap_or(false)
    }

    /// `rabbitmqctl -n <node> <args>` (at most 120 s).
    ///
    /// Errors: rabbitmqctl missing, failing or timing out.
    pub fn try_ctl(&self, args: &[&str]) -> anyhow::Result<()> {
        let st = Command::new("timeout")
            .arg("120")
            .arg("rabbitmqctl")
            .args(["-q", "-n", &self.node])
            .args(args)
            .stdout(std::process::Stdio::null())
            .status()
            .context("cannot run rabbitmqctl")?;
        anyhow::ensure!(st.success(), "rabbitmqctl {args:?} on {} failed", self.node);
        Ok(())
    }
}

/// `rabbitmq-server -detached` for node `node` with its ports and the directory `dir`
/// ([`PrivateBroker::try_start_with_files`] wrote its config there).
fn launch(node: &str, port: u16, dist: u16, dir: &std::path::Path) -> anyhow::Result<()> {
    let mut cmd = Command::new("rabbitmq-server");
    // The node's advanced configuration, when `try_start_with_files` was given one.
    let advanced = dir.join("advanced.config");
    if advanced.exists() {
        cmd.env("RABBITMQ_ADVANCED_CONFIG_FILE", advanced);
    }
    let st = cmd
        .arg("-detached")
        .env("RABBITMQ_NODENAME", node)
        .env("RABBITMQ_NODE_PORT", port.to_string())
        .env("RABBITMQ_DIST_PORT", dist.to_string())
        .env("RABBITMQ_MNESIA_BASE", dir.join("mnesia"))
        .env("RABBITMQ_LOG_BASE", dir.join("log"))
        .env("RABBITMQ_PID_FILE", dir.join("pid"))
        .env("RABBITMQ_ENABLED_PLUGINS_FILE", dir.join("enabled_plugins"))
        .env("RABBITMQ_CONFIG_FILE", dir.join("rabbitmq.conf"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .context("cannot run rabbitmq-server")?;
    anyhow::ensure!(st.success(), "rabbitmq-server -detached failed ({st})");
    Ok(())
}

impl PrivateBroker {
    /// Print to stderr the last `lines` lines of the node's log files that are not `[debug]`
    /// or `[info]` (warnings, errors, crash reports), each file named first.
    pub fn print_log_tail(&self, lines: usize) {
        let Ok(entries) = std::fs::read_dir(self.dir.join("log")) else {
            return;
        };
        for entry in entries.flatten() {
            let Ok(text) = std::fs::read_to_string(entry.path()) else {
                continue;
            };
            let kept: Vec<&str> = text
                .lines()
                .filter(|l| !l.contains("[debug]") && !l.contains("[info]"))
                .collect();
            let tail = &kept[kept.len().saturating_sub(lines)..];
            eprintln!(
                "--- {} ({} of {} lines that are not debug or info) ---\n{}",
                entry.path().display(),
                tail.len(),
                kept.len(),
                tail.join("\n")
            );
        }
    }
}

impl Drop for PrivateBroker {
    fn drop(&mut self) {
        // A test failing on this node: what the broker logged goes to the test's output
        // before the directory is removed (CI keeps only the output of a failing run).
        if std::thread::panicking() {
            self.print_log_tail(200);
        }
        let _ = Command::new("timeout")
            .args(["120", "rabbitmqctl", "-q", "-n", &self.node, "stop"])
            .status();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
