//! Running `lienthong` as child processes in tests: spawn, wait for readiness, signal, and a
//! test-side view of a bus whose components run elsewhere.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::*;

pub const EXE: &str = env!("CARGO_BIN_EXE_lienthong");

/// A child process that is killed if the test fails before stopping it.
pub struct Proc(pub Child);

impl std::ops::Deref for Proc {
    type Target = Child;
    fn deref(&self) -> &Child {
        &self.0
    }
}

impl std::ops::DerefMut for Proc {
    fn deref_mut(&mut self) -> &mut Child {
        &mut self.0
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

pub fn free_port() -> u16 {
    lienthong_testkit::procs::free_port().expect("a free port")
}

pub fn spawn_run(config: &std::path::Path, log: &std::path::Path) -> Proc {
    let out = std::fs::File::create(log).expect("log");
    Proc(
        Command::new(EXE)
            .arg("--config")
            .arg(config)
            .arg("run")
            .env("RUST_LOG", "info,lapin=warn")
            .stdout(Stdio::null())
            .stderr(out)
            .spawn()
            .expect("lienthong run starts"),
    )
}

/// Wait until the `lienthong run` child logging to `log` says its HTTP API listens on
/// 127.0.0.1:`port` (a port from [`free_port`] may have been taken by another test's process
/// meanwhile, which would answer in its stead), then until its `/readyz` answers 2xx.
pub async fn wait_ready_from(log: &std::path::Path, port: u16) {
    let addr = format!("127.0.0.1:{port}");
    lienthong_testkit::procs::wait_listening(
        log,
        lienthong_testkit::procs::HTTP_LISTENING,
        &addr,
        30,
    )
    .await
    .expect("the child listens on its port");
    wait_ready(&format!("http://{addr}/readyz")).await;
}

pub async fn wait_ready(url: &str) {
    let until = Instant::now() + Duration::from_secs(30);
    while Instant::now() < until {
        if let Ok(r) = reqwest::get(url).await
            && r.status().is_success()
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{url} not ready");
}

/// A test-side view of a bus that runs in child processes: a broker connection under its
/// prefix, and the mock agencies' URL.
pub async fn view_of(
    s: &lienthong_core::registry::Settings,
    dir: &std::path::Path,
    mock: &lienthong_testkit::mock::MockServer,
    users: lienthong_testkit::broker_users::BrokerUsers,
) -> Bus {
    let conn = std::sync::Arc::new(
        lapin::Connection::connect(AMQP_URL, Default::default())
            .await
            .expect("broker"),
    );
    let publisher = lienthong_core::amqp::Publisher::new(&conn, 10_000)
        .await
        .expect("publisher");
    // Centres publish as the units' broker user, as in `Bus::start`.
    let unit_publisher = match users.url(&format!("{}.units", s.bus.prefix)) {
        Some(url) => {
            let c = std::sync::Arc::new(
                lapin::Connection::connect(&url, Default::default())
                    .await
                    .expect("the units' broker user connects"),
            );
            lienthong_core::amqp::Publisher::new(&c, 10_000)
                .await
                .expect("publisher")
        }
        None => publisher.clone(),
    };
    Bus {
        users,
        unit_publisher,
        names: lienthong_core::topology::Names::new(&s.bus.prefix),
        settings: s.clone(),
        dir: dir.to_path_buf(),
        mock: None,
        running: None,
        conn,
        publisher,
        http: String::new(),
        mock_url: format!("http://{}", mock.addr),
        cleaned: false,
        children: Vec::new(),
    }
}

/// Start `lienthong run --components <components>` with `config`, logging to `dir/log`.
pub fn spawn_components(
    config: &std::path::Path,
    dir: &std::path::Path,
    components: &str,
    log: &str,
) -> Proc {
    spawn_components_env(config, dir, components, log, &[])
}

/// The same with extra environment variables (e.g. `FAILPOINTS`).
pub fn spawn_components_env(
    config: &std::path::Path,
    dir: &std::path::Path,
    components: &str,
    log: &str,
    env: &[(&str, &str)],
) -> Proc {
    let out = std::fs::File::create(dir.join(log)).expect("log");
    Command::new(EXE)
        .arg("--config")
        .arg(config)
        .args(["run", "--components", components])
        .env("RUST_LOG", "info,lapin=warn")
        .envs(env.iter().copied())
        .stdout(Stdio::null())
        .stderr(out)
        .spawn()
        .map(Proc)
        .expect("spawn")
}

/// The last `lines` lines of each log `names` in `dir`, headed by its name: what a failing test
/// shows of the processes it ran (a log that cannot be read says so).
pub fn log_tails(dir: &std::path::Path, names: &[&str], lines: usize) -> String {
    let mut out = String::new();
    for name in names {
        let text = std::fs::read_to_string(dir.join(name))
            .unwrap_or_else(|e| format!("(cannot read it: {e})"));
        let all: Vec<&str> = text.lines().collect();
        let from = all.len().saturating_sub(lines);
        out.push_str(&format!(
            "--- the last lines of {name}:\n{}\n",
            all[from..].join("\n")
        ));
    }
    out
}

/// Ask `child` to stop (SIGTERM), as systemd does.
pub fn sigterm(child: &Proc) {
    let ok = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status()
        .expect("kill");
    assert!(ok.success());
}

/// What a test needs to start the bus as child processes: the settings `name` (changed by the
/// test first), this test's broker users, the mock agencies the settings point at, the HTTP
/// API's free port, and the configuration file the processes read.
pub struct Prepared {
    pub settings: lienthong_core::registry::Settings,
    pub dir: std::path::PathBuf,
    pub users: lienthong_testkit::broker_users::BrokerUsers,
    pub mock: lienthong_testkit::mock::MockServer,
    pub port: u16,
    pub config: std::path::PathBuf,
}

/// [`Prepared`] for settings `name`, changed by `tweak` before anything else.
pub async fn prepare(
    name: &str,
    tweak: impl FnOnce(&mut lienthong_core::registry::Settings),
) -> Prepared {
    let (mut s, dir) = settings(name);
    tweak(&mut s);
    let users = broker_users(&mut s);
    let mock = lienthong_testkit::mock::serve(&s).await.expect("mock");
    use_mock(&mut s, &mock);
    let port = free_port();
    s.http.listen = format!("127.0.0.1:{port}");
    let config = dir.join("config.toml");
    s.write_file(&config).expect("config");
    Prepared {
        settings: s,
        dir,
        users,
        mock,
        port,
        config,
    }
}

/// A bus split over two processes, as a deployment runs it: `router,tracer` (log
/// `routing.log`) and `adapters,http` (log `delivery.log`), both ready, with the mock agencies
/// and a test-side view.
pub struct Split {
    pub settings: lienthong_core::registry::Settings,
    pub dir: std::path::PathBuf,
    pub mock: lienthong_testkit::mock::MockServer,
    pub view: Bus,
    pub routing: Proc,
    pub delivery: Proc,
}

impl Split {
    /// Start the two processes with settings `name`, changed by `tweak` first.
    pub async fn start(
        name: &str,
        tweak: impl FnOnce(&mut lienthong_core::registry::Settings),
    ) -> Split {
        let Prepared {
            settings: s,
            dir,
            users,
            mock,
            port,
            config,
        } = prepare(name, tweak).await;
        let routing = spawn_components(&config, &dir, "router,tracer", "routing.log");
        let delivery = spawn_components(&config, &dir, "adapters,http", "delivery.log");
        wait_ready_from(&dir.join("delivery.log"), port).await;
        let view = view_of(&s, &dir, &mock, users).await;
        Split {
            settings: s,
            dir,
            mock,
            view,
            routing,
            delivery,
        }
    }

    /// SIGTERM both processes; both exit 0.
    pub fn stop_processes(&mut self) {
        for c in [&self.routing, &self.delivery] {
            sigterm(c);
        }
        for c in [&mut self.routing, &mut self.delivery] {
            let st = c.wait().expect("wait");
            assert!(st.success(), "{st:?}");
        }
    }

    /// Stop the mock, delete the topology and the directory.
    pub async fn clean(self) {
        let _ = self.mock.stop.send(());
        let _ = lienthong_core::topology::Topology::plan(&self.settings)
            .delete(&self.view.conn)
            .await;
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
