//! A RabbitMQ cluster of the test's own on this machine: N [`PrivateBroker`] nodes (distinct
//! node names, AMQP and distribution ports, data directories), the second and later joined to
//! the first (`rabbitmqctl join_cluster`). Every node is stopped and its directory removed when
//! the cluster is dropped, whatever the test did.

use std::time::{Duration, Instant};

use crate::private_broker::PrivateBroker;

/// The nodes of a private cluster; node 0 is the one the others joined.
pub struct PrivateCluster {
    /// The nodes, in the order they were started.
    pub nodes: Vec<PrivateBroker>,
}

impl PrivateCluster {
    /// Start `n` nodes named after `name` and cluster them. Errors: a node cannot start, or
    /// cannot join (each names its node and log directory).
    pub fn try_start(name: &str, n: usize) -> anyhow::Result<PrivateCluster> {
        let mut nodes = Vec::with_capacity(n);
        for i in 0..n {
            nodes.push(PrivateBroker::try_start_with_files(
                &format!("{name}{i}"),
                "",
                &[],
            )?);
        }
        let cluster = PrivateCluster { nodes };
        let first = cluster.nodes[0].node.clone();
        for b in &cluster.nodes[1..] {
            b.try_ctl(&["stop_app"])?;
            b.try_ctl(&["join_cluster", &first])?;
            b.try_ctl(&["start_app"])?;
        }
        cluster.wait_running(n, Duration::from_secs(60))?;
        Ok(cluster)
    }

    /// Wait until node 0 (or, when it is down, the next that answers) sees `n` running nodes.
    ///
    /// Errors: not within `within`.
    pub fn wait_running(&self, n: usize, within: Duration) -> anyhow::Result<()> {
        let until = Instant::now() + within;
        loop {
            if self.running_nodes() >= n {
                return Ok(());
            }
            anyhow::ensure!(
                Instant::now() < until,
                "the cluster did not reach {n} running nodes"
            );
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    /// How many nodes the first answering node sees running (`rabbitmqctl eval`).
    pub fn running_nodes(&self) -> usize {
        for b in self.nodes.iter().filter(|b| b.answers()) {
            let out = std::process::Command::new("timeout")
                .args([
                    "30",
                    "rabbitmqctl",
                    "-q",
                    "-n",
                    &b.node,
                    "eval",
                    "length(rabbit_nodes:all_running()).",
                ])
                .output();
            if let Ok(o) = out
                && let Ok(n) = String::from_utf8_lossy(&o.stdout).trim().parse::<usize>()
            {
                return n;
            }
        }
        0
    }

    /// `host:port` of each node's AMQP listener on loopback, for `[bus] nodes`.
    pub fn addresses(&self) -> Vec<String> {
        self.nodes
            .iter()
            .map(|b| format!("127.0.0.1:{}", b.port))
            .collect()
    }
}
