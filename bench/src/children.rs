//! The benchmark's child processes (`lienthong run`, `lienthong-mock`, the raw pipe) and the
//! lock that keeps one benchmark at a time on a machine.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context as _;

use crate::procfs;

/// A child process (`lienthong run`, `lienthong-mock`, `lienthong-bench pipe`) with its
/// log file; stopped with SIGTERM (then killed) when dropped.
pub(crate) struct Child {
    pub(crate) child: Option<std::process::Child>,
    pub(crate) name: String,
    pub(crate) pid: u32,
    pub(crate) log: PathBuf,
}

impl Child {
    pub(crate) fn spawn(
        exe: &Path,
        config: Option<&Path>,
        args: &[&str],
        log: &Path,
        name: impl Into<String>,
    ) -> anyhow::Result<Child> {
        let name = name.into();
        let out =
            std::fs::File::create(log).with_context(|| format!("creating {}", log.display()))?;
        let err = out.try_clone()?;
        let mut cmd = std::process::Command::new(exe);
        if let Some(c) = config {
            cmd.arg("--config").arg(c);
        }
        let child = cmd
            .args(args)
            .env("RUST_LOG", "info,lapin=warn")
            .env_remove("LIENTHONG_CONFIG")
            .stdin(std::process::Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .with_context(|| format!("starting {name}"))?;
        Ok(Child {
            pid: child.id(),
            child: Some(child),
            name,
            log: log.to_path_buf(),
        })
    }

    /// Still running?
    pub(crate) fn alive(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// The end of its log, for an error message.
    pub(crate) fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(15)..].join("\n")
    }

    pub(crate) fn term(&self) {
        let _ = std::process::Command::new("kill")
            .arg("-TERM")
            .arg(self.pid.to_string())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status();
    }

    /// SIGTERM, wait up to 15 s, then SIGKILL.
    pub(crate) async fn stop(mut self) {
        let Some(mut c) = self.child.take() else {
            return;
        };
        if matches!(c.try_wait(), Ok(None)) {
            self.term();
            let until = Instant::now() + Duration::from_secs(15);
            while matches!(c.try_wait(), Ok(None)) && Instant::now() < until {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        if matches!(c.try_wait(), Ok(None)) {
            eprintln!("({} did not stop on SIGTERM; killed)", self.name);
            let _ = c.kill();
        }
        let _ = c.wait();
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        let Some(mut c) = self.child.take() else {
            return;
        };
        if matches!(c.try_wait(), Ok(None)) {
            self.term();
            for _ in 0..100 {
                if !matches!(c.try_wait(), Ok(None)) {
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = c.kill();
        }
        let _ = c.wait();
    }
}

/// `<temp>/lienthong-bench.lock`, holding the pid of the running benchmark; removed on drop.
pub(crate) struct RunLock(PathBuf);

impl RunLock {
    pub(crate) fn take() -> anyhow::Result<RunLock> {
        let path = std::env::temp_dir().join("lienthong-bench.lock");
        for _ in 0..2 {
            match std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&path)
            {
                Ok(mut f) => {
                    use std::io::Write as _;
                    write!(f, "{}", std::process::id())?;
                    return Ok(RunLock(path));
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    let holder = std::fs::read_to_string(&path)
                        .ok()
                        .and_then(|t| t.trim().parse::<u32>().ok());
                    let alive = holder.is_some_and(|pid| {
                        procfs::comm(pid).is_some_and(|c| c.starts_with("lienthong"))
                    });
                    if alive {
                        anyhow::bail!(
                            "another `lienthong-bench` (pid {}) is running on this machine; wait for it (two runs would skew each other's figures), or remove {} if that process is not a benchmark",
                            holder.unwrap_or_default(),
                            path.display()
                        );
                    }
                    // A stale lock (its process is gone): take it over.
                    let _ = std::fs::remove_file(&path);
                }
                Err(e) => {
                    return Err(
                        anyhow::Error::from(e).context(format!("creating {}", path.display()))
                    );
                }
            }
        }
        anyhow::bail!("cannot take {}", path.display())
    }
}

impl Drop for RunLock {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}
