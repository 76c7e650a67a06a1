//! A RabbitMQ node of one test (own node name, ports and data directory), for tests that stop,
//! restart or reconfigure a broker, or need one with a TLS listener: never the shared one.

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

/// A RabbitMQ node of this test only: `rabbitmq-server -detached` with its own node name,
/// AMQP and distribution ports and directories; stopped and removed on drop.
pub struct PrivateBroker {
    pub node: String,
    pub port: u16,
    pub dir: PathBuf,
}

fn free_port() -> u16 {
    lienthong_testkit::procs::free_port().expect("a free port")
}

impl PrivateBroker {
    pub fn start(name: &str) -> PrivateBroker {
        Self::start_with(name, "")
    }

    /// Start with extra `rabbitmq.conf` lines.
    pub fn start_with(name: &str, conf: &str) -> PrivateBroker {
        Self::start_with_files(name, conf, &[])
    }

    /// Start with extra `rabbitmq.conf` lines and `files` (name, content) written into the
    /// node's directory first; `{dir}` in `conf` stands for that directory.
    pub fn start_with_files(name: &str, conf: &str, files: &[(&str, &str)]) -> PrivateBroker {
        let id = uuid::Uuid::now_v7().simple().to_string();
        let tag = &id[id.len() - 8..];
        let (port, dist) = (free_port(), free_port());
        let node = format!("lt-{name}-{tag}@localhost");
        let dir = std::env::temp_dir().join(format!("lienthong-broker-{name}-{tag}"));
        std::fs::create_dir_all(dir.join("mnesia")).expect("dir");
        std::fs::create_dir_all(dir.join("log")).expect("dir");
        for (file, content) in files {
            std::fs::write(dir.join(file), content).expect("node file");
        }
        let conf = conf.replace("{dir}", &dir.display().to_string());
        std::fs::write(
            dir.join("rabbitmq.conf"),
            format!("listeners.tcp.default = 127.0.0.1:{port}\n{conf}\n"),
        )
        .expect("conf");
        std::fs::write(dir.join("enabled_plugins"), "[].\n").expect("plugins");
        // The Debian server script runs the node as the rabbitmq user.
        let _ = Command::new("chown")
            .args(["-R", "rabbitmq:rabbitmq"])
            .arg(&dir)
            .status();
        let st = Command::new("rabbitmq-server")
            .arg("-detached")
            .env("RABBITMQ_NODENAME", &node)
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
            .expect("rabbitmq-server");
        assert!(st.success(), "rabbitmq-server -detached failed");
        let b = PrivateBroker { node, port, dir };
        let until = Instant::now() + Duration::from_secs(90);
        while !b.answers() {
            assert!(
                Instant::now() < until,
                "private broker {} did not start (logs in {})",
                b.node,
                b.dir.display()
            );
            std::thread::sleep(Duration::from_millis(500));
        }
        b
    }

    pub fn url(&self) -> String {
        format!("amqp://guest:guest@127.0.0.1:{}/%2f", self.port)
    }

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

    pub fn ctl(&self, args: &[&str]) {
        let st = Command::new("timeout")
            .arg("120")
            .arg("rabbitmqctl")
            .args(["-q", "-n", &self.node])
            .args(args)
            .stdout(std::process::Stdio::null())
            .status()
            .expect("rabbitmqctl");
        assert!(st.success(), "rabbitmqctl {args:?} on {}", self.node);
    }
}

impl Drop for PrivateBroker {
    fn drop(&mut self) {
        let _ = Command::new("timeout")
            .args(["120", "rabbitmqctl", "-q", "-n", &self.node, "stop"])
            .status();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
