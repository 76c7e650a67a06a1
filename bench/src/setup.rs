//! How each mode is set up for a round and taken down: a queue (direct), two queues and the
//! raw pipe child or a shovel in the node or over TCP (raw pipes, shovels), a bus topology with
//! `lienthong run` and, for the HTTP adapter, `lienthong-mock` (lienthong, http adapter).

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;

use anyhow::Context as _;
use lienthong_core::registry::{Reach, Settings};
use lienthong_core::topology::{Names, Topology};
use lienthong_testkit::mock::point_adapters_at;
use lienthong_testkit::procs::{
    HTTP_LISTENING, MOCK_LISTENING, free_port, wait_http, wait_listening,
};

use crate::broker;
use crate::children::Child;
use crate::cleanup::{delete_queue, forget, purge};
use crate::round::{Bench, CENTRE, CIVIL, KEEP_UNITS, Mode, POLICE, Setup};
use crate::traffic::KeyBy;

impl Bench {
    /// The directory of a round's store: `--store-dir`/<the round's directory name>, or the
    /// round's directory itself.
    pub(crate) fn store_dir(&self, dir: &Path) -> PathBuf {
        match (&self.args.store_dir, dir.file_name()) {
            (Some(root), Some(name)) => root.join(name),
            _ => dir.to_path_buf(),
        }
    }

    /// The bus's settings for a round: the registry trimmed as the tests trim it, the
    /// receiver read over AMQP, stores in `dir`, the mock agency fast and reliable.
    pub(crate) fn bus_settings(
        &self,
        prefix: &str,
        dir: &Path,
        mock_port: Option<u16>,
    ) -> anyhow::Result<Settings> {
        let mut s = self.base.clone();
        s.units.retain(|u| KEEP_UNITS.contains(&u.code.as_str()));
        for u in &mut s.units {
            u.parent = None;
            if u.code == CIVIL {
                u.reach = Reach::Amqp;
            }
        }
        if let Some(port) = mock_port {
            point_adapters_at(&mut s, &format!("http://127.0.0.1:{port}"));
            if !s
                .units
                .iter()
                .any(|u| u.code == POLICE && matches!(u.reach, Reach::Adapter { .. }))
            {
                anyhow::bail!(
                    "the configuration's Police unit {POLICE} is not reached by an adapter (the HTTP-adapter mode sends to it)"
                );
            }
        }
        s.bus.prefix = prefix.into();
        s.bus.amqp_url = self.url.clone();
        s.bus.shutdown_grace_ms = 1000;
        s.store.path = self.store_dir(dir).join("store.db").display().to_string();
        s.store.blob_dir = dir.join("blobs").display().to_string();
        s.topology.router_prefetch = self.args.router_prefetch;
        s.http.listen = format!("127.0.0.1:{}", free_port()?);
        s.http.public_url = None;
        // /metrics without the operator key, on a listener of its own; and no rate limit or
        // bound on requests at once that a benchmark's agency callbacks would hit.
        s.http.metrics_listen = Some(format!("127.0.0.1:{}", free_port()?));
        s.http.rate_per_s = 1_000_000;
        s.http.rate_burst = 1_000_000;
        s.http.max_concurrent_requests = 100_000;
        s.mock.listen = format!("127.0.0.1:{}", mock_port.unwrap_or(0));
        s.mock.latency_min_ms = 0;
        s.mock.latency_max_ms = 0;
        s.mock.unavailable_rate = 0.0;
        s.mock.refusal_rate = 0.0;
        s.mock.callback_delay_ms = 0;
        // The shipped keys are placeholders, which `lienthong run` refuses.
        lienthong_testkit::keys::fill(&mut s);
        s.check()?;
        Ok(s)
    }

    /// Declare a bus topology (tracked for clean-up), purge its queues and write its config.
    pub(crate) async fn bus_topology(&self, s: &Settings, dir: &Path) -> anyhow::Result<PathBuf> {
        if let Ok(mut t) = self.cleanup.topologies.lock() {
            t.push(s.clone());
        }
        lienthong_core::topology::declare(s, &self.ctl).await?;
        for q in &Topology::plan(s).queues {
            purge(&self.ctl, &q.name).await?;
        }
        std::fs::create_dir_all(dir)?;
        let config = dir.join("config.toml");
        s.write_file(&config)
            .context("writing the bus configuration")?;
        Ok(config)
    }

    /// Set up `mode` for a round; `prefetch` is the raw pipe's or the shovel's (lienthong's
    /// router keeps `--prefetch`).
    pub(crate) async fn setup(
        &self,
        mode: Mode,
        what: &str,
        prefetch: u16,
    ) -> anyhow::Result<Setup> {
        let mut st = Setup::new(mode);
        match mode {
            Mode::Direct => {
                let q = format!("{}.direct", self.tag(what));
                self.declare_queue(&q, false).await?;
                st.routing_key = q.clone();
                st.sink_queue = q.clone();
                st.queues.push(q);
            }
            Mode::PipePlain | Mode::Pipe | Mode::Shovel | Mode::ShovelTcp => {
                let t = self.tag(what);
                let (a, b) = (format!("{t}.a"), format!("{t}.b"));
                self.declare_queue(&a, mode.plain_queues()).await?;
                st.queues.push(a.clone());
                self.declare_queue(&b, mode.plain_queues()).await?;
                st.queues.push(b.clone());
                if matches!(mode, Mode::PipePlain | Mode::Pipe) {
                    let prefetch = prefetch.to_string();
                    let child = Child::spawn(
                        &self.me,
                        None,
                        &[
                            "pipe",
                            "--from",
                            &a,
                            "--to",
                            &b,
                            "--prefetch",
                            &prefetch,
                            "--amqp-url",
                            &self.url,
                        ],
                        &self.dir.join(format!("{t}-pipe.log")),
                        "bench-pipe",
                    )?;
                    st.children.push(child);
                } else {
                    let name = format!("{t}-shovel");
                    // In the node: RabbitMQ's direct connection (`amqp://`, no host), the
                    // shovel's best case; over TCP: the bench's own URL, as a shovel to
                    // another node connects.
                    let uri = if mode == Mode::Shovel {
                        broker::in_node_uri(&self.url)
                    } else {
                        self.url.clone()
                    };
                    let def = broker::shovel_definition(&uri, &a, &b, prefetch);
                    if let Ok(mut s) = self.cleanup.shovels.lock() {
                        s.push(name.clone());
                    }
                    broker::cli(
                        "rabbitmqctl",
                        &["set_parameter", "shovel", name.as_str(), def.as_str()],
                    )
                    .await
                    .map_err(anyhow::Error::msg)?;
                    st.shovel = Some(name);
                }
                self.wait_consumers(&[(a.as_str(), 1)], &mut st.children, 30)
                    .await?;
                st.routing_key = a;
                st.sink_queue = b;
            }
            Mode::Lienthong | Mode::Http => {
                let prefix = self.tag(what);
                let dir = self.dir.join(&prefix);
                let mock_port = if mode == Mode::Http {
                    Some(free_port()?)
                } else {
                    None
                };
                let s = self.bus_settings(&prefix, &dir, mock_port)?;
                st.dir = Some(dir.clone());
                st.topology = Some(s.clone());
                let config = self.bus_topology(&s, &dir).await?;
                let names = Names::new(&prefix);
                if mode == Mode::Http {
                    let mock = Child::spawn(
                        &self.mock,
                        Some(&config),
                        &[],
                        &dir.join("mock.log"),
                        "lienthong-mock",
                    )?;
                    st.children.push(mock);
                    wait_listening(&dir.join("mock.log"), MOCK_LISTENING, &s.mock.listen, 30)
                        .await?;
                    wait_http(&format!("http://{}/_mock/stats", s.mock.listen), 30).await?;
                }
                // The HTTP component serves the router's stage times on /metrics (it idles
                // otherwise in the lienthong mode).
                let components = if mode == Mode::Http {
                    "router,adapters,tracer,http"
                } else {
                    "router,tracer,http"
                };
                let bus = Child::spawn(
                    &self.lienthong,
                    Some(&config),
                    &["run", "--components", components],
                    &dir.join("run.log"),
                    "lienthong run",
                )?;
                st.router_pid = Some(bus.pid);
                st.children.push(bus);
                let router_q = names.router_queue();
                let trace_q = names.trace_queue();
                let police_q = names.unit_queue(POLICE);
                // The tracer consumes `dead.log` in every mode (`trace.store` exists only with
                // `[store] trace_direct = false`; a queue that does not exist drains at once).
                let dead_log_q = names.dead_log_queue();
                let mut wait: Vec<(&str, u32)> =
                    vec![(router_q.as_str(), 1), (dead_log_q.as_str(), 1)];
                if mode == Mode::Http {
                    wait.push((police_q.as_str(), 1));
                }
                self.wait_consumers(&wait, &mut st.children, 60).await?;
                wait_listening(&dir.join("run.log"), HTTP_LISTENING, &s.http.listen, 30).await?;
                wait_http(&format!("http://{}/readyz", s.http.listen), 30).await?;
                st.metrics_url = s
                    .http
                    .metrics_listen
                    .as_ref()
                    .map(|m| format!("http://{m}/metrics"));
                if mode == Mode::Http {
                    st.key_by = KeyBy::CorrelationId;
                    st.receiver = POLICE;
                    st.sink_queue = names.unit_queue(CENTRE);
                } else {
                    st.sink_queue = names.unit_queue(CIVIL);
                }
                st.exchange = names.ingress_exchange();
                st.trace_queue = Some(trace_q);
            }
        }
        Ok(st)
    }

    pub(crate) async fn teardown(&self, st: Setup, failed: bool) {
        for c in st.children {
            c.stop().await;
        }
        if let Some(name) = &st.shovel {
            match broker::cli("rabbitmqctl", &["clear_parameter", "shovel", name]).await {
                Ok(_) => forget(&self.cleanup.shovels, name),
                Err(e) => eprintln!("warning: {e}"),
            }
        }
        for q in &st.queues {
            match delete_queue(&self.ctl, q).await {
                Ok(()) => forget(&self.cleanup.queues, q),
                Err(e) => eprintln!("warning: deleting {q}: {e}"),
            }
        }
        if let Some(s) = &st.topology {
            match Topology::plan(s).delete(&self.ctl).await {
                Ok(()) => {
                    if let Ok(mut t) = self.cleanup.topologies.lock() {
                        t.retain(|x| x.bus.prefix != s.bus.prefix);
                    }
                }
                Err(e) => eprintln!("warning: deleting prefix {}: {e}", s.bus.prefix),
            }
        }
        if let Some(dir) = &st.dir {
            if failed {
                self.failed_dirs.store(true, Ordering::Relaxed);
            } else if !self.args.keep_dir {
                let _ = std::fs::remove_dir_all(self.store_dir(dir));
                let _ = std::fs::remove_dir_all(dir);
            }
        }
    }
}
