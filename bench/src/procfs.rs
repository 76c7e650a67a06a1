//! What the benchmark reads from Linux's `/proc`: CPU seconds (user + system) and memory of a
//! process, the machine's description, the pid of the process listening on a TCP port (the
//! broker's `beam.smp`), and the free space of a file system (`df`).

use std::path::Path;
use std::sync::OnceLock;

/// Clock ticks per second of `/proc/<pid>/stat` (`getconf CLK_TCK`; 100 on every Linux ABI
/// we know of, used when `getconf` is missing).
fn clk_tck() -> f64 {
    static TCK: OnceLock<f64> = OnceLock::new();
    *TCK.get_or_init(|| {
        std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|s| s.trim().parse::<f64>().ok())
            .filter(|t| *t > 0.0)
            .unwrap_or(100.0)
    })
}

/// CPU seconds (user + system, all threads) the process has used so far.
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may hold spaces: count after the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // `rest` starts at field 3 (state); utime and stime are fields 14 and 15.
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / clk_tck())
}

/// Bytes the process has caused to be written to storage so far (`write_bytes` of
/// `/proc/<pid>/io`: counted when the process dirties a page-cache page of a block-backed file,
/// so a page written again before it reaches the disk counts once; tmpfs does not count).
/// Needs the right to read that file (the same user, or root).
pub fn write_bytes(pid: u32) -> Option<u64> {
    let io = std::fs::read_to_string(format!("/proc/{pid}/io")).ok()?;
    io.lines()
        .find_map(|l| l.strip_prefix("write_bytes:"))?
        .trim()
        .parse()
        .ok()
}

/// CPU seconds the whole machine has been busy (every CPU: user, nice, system, irq, softirq,
/// steal; from `/proc/stat`).
pub fn machine_busy_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    let f: Vec<f64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal (guest time is already in user).
    let busy = [0, 1, 2, 5, 6, 7]
        .iter()
        .filter_map(|i| f.get(*i))
        .sum::<f64>();
    Some(busy / clk_tck())
}

/// A `kB` field of `/proc/<pid>/status` (`VmRSS`, `VmHWM`), in KiB.
pub fn status_kib(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status.lines().find_map(|l| {
        let v = l.strip_prefix(field)?.strip_prefix(':')?;
        v.split_whitespace().next()?.parse().ok()
    })
}

/// The machine, from `/proc` and `/etc/os-release`.
#[derive(Debug, Clone, Default)]
pub struct Machine {
    /// CPU model name.
    pub cpu: String,
    /// Logical CPUs.
    pub cores: usize,
    /// Memory, bytes.
    pub ram_bytes: u64,
    /// Operating system (PRETTY_NAME).
    pub os: String,
    /// Kernel release.
    pub kernel: String,
}

/// Describe this machine.
pub fn machine() -> Machine {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpu = cpuinfo
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            (k.trim() == "model name").then(|| v.trim().to_string())
        })
        .unwrap_or_else(|| "unknown".into());
    let cores = cpuinfo
        .lines()
        .filter(|l| l.split(':').next().is_some_and(|k| k.trim() == "processor"))
        .count()
        .max(std::thread::available_parallelism().map_or(1, |n| n.get()));
    let ram_bytes = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines().find_map(|l| {
                let v = l.strip_prefix("MemTotal:")?;
                v.split_whitespace().next()?.parse::<u64>().ok()
            })
        })
        .unwrap_or(0)
        * 1024;
    let os = std::fs::read_to_string("/etc/os-release")
        .ok()
        .and_then(|t| {
            t.lines().find_map(|l| {
                l.strip_prefix("PRETTY_NAME=")
                    .map(|v| v.trim_matches('"').to_string())
            })
        })
        .unwrap_or_else(|| "Linux".into());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_default();
    Machine {
        cpu,
        cores,
        ram_bytes,
        os,
        kernel,
    }
}

/// The pid of the process with a listening TCP socket on `port` (from `/proc/net/tcp{,6}` and
/// every process's file descriptors; needs the right to read them, root for the broker).
pub fn listener_pid(port: u16) -> Option<u32> {
    let mut inodes = Vec::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(table) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() < 10 || f[3] != "0A" {
                continue;
            }
            let p = f[1]
                .rsplit(':')
                .next()
                .and_then(|h| u16::from_str_radix(h, 16).ok());
            if p == Some(port) {
                inodes.push(format!("socket:[{}]", f[9]));
            }
        }
    }
    if inodes.is_empty() {
        return None;
    }
    for (pid, dir) in processes()? {
        let Ok(fds) = std::fs::read_dir(dir.join("fd")) else {
            continue;
        };
        for fd in fds.flatten() {
            if let Ok(target) = std::fs::read_link(fd.path())
                && inodes.iter().any(|i| target.as_os_str() == i.as_str())
            {
                return Some(pid);
            }
        }
    }
    None
}

/// The pid of a `beam.smp` running RabbitMQ (`-s rabbit boot`), when the listener cannot be
/// found.
pub fn rabbit_beam_pid() -> Option<u32> {
    for (pid, dir) in processes()? {
        let Ok(cmd) = std::fs::read(dir.join("cmdline")) else {
            continue;
        };
        let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
        if cmd.contains("beam.smp") && cmd.contains("rabbit boot") {
            return Some(pid);
        }
    }
    None
}

/// The name of a process (`/proc/<pid>/comm`).
pub fn comm(pid: u32) -> Option<String> {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .ok()
        .map(|s| s.trim().to_string())
}

/// The pids of every process named `name` (`/proc/<pid>/comm`), e.g. all of PostgreSQL's
/// (`postgres`: the postmaster, its background workers and one backend per connection).
pub fn pids_named(name: &str) -> Vec<u32> {
    processes()
        .map(|ps| {
            ps.filter(|(pid, _)| comm(*pid).is_some_and(|c| c == name))
                .map(|(pid, _)| pid)
                .collect()
        })
        .unwrap_or_default()
}

/// The 1, 5 and 15 minute load averages (`/proc/loadavg`).
pub fn loadavg() -> Option<String> {
    let t = std::fs::read_to_string("/proc/loadavg").ok()?;
    Some(t.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
}

/// Free bytes for an unprivileged user and the mount point of the file system holding `path`
/// (`df -P -B1`).
pub fn free_space(path: &Path) -> Option<(u64, String)> {
    let out = std::process::Command::new("df")
        .arg("-P")
        .arg("-B1")
        .arg(path)
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text.lines().nth(1)?;
    let f: Vec<&str> = line.split_whitespace().collect();
    Some((f.get(3)?.parse().ok()?, f.get(5)?.to_string()))
}

/// Every process of the machine: (pid, its `/proc/<pid>` directory). `None` when `/proc` cannot
/// be read.
fn processes() -> Option<impl Iterator<Item = (u32, std::path::PathBuf)>> {
    let entries = std::fs::read_dir("/proc").ok()?;
    Some(entries.flatten().filter_map(|e| {
        let pid = e.file_name().to_str()?.parse::<u32>().ok()?;
        Some((pid, e.path()))
    }))
}

/// Check that each path's file system has at least twice the bytes needed there free (needs on
/// the same file system add up). Err says what is missing; Ok gives notes for the report.
pub(crate) fn check_disk(checks: &[(&Path, u64, &str)]) -> anyhow::Result<Vec<String>> {
    let mut by_mount: Vec<(String, u64, u64, Vec<String>)> = Vec::new();
    let mut notes = Vec::new();
    for (path, need, what) in checks {
        match free_space(path) {
            Some((free, mount)) => match by_mount.iter_mut().find(|m| m.0 == mount) {
                Some(m) => {
                    m.2 += need;
                    m.3.push(what.to_string());
                }
                None => by_mount.push((mount, free, *need, vec![what.to_string()])),
            },
            None => notes.push(format!(
                "could not check the free space of {} ({what})",
                path.display()
            )),
        }
    }
    for (mount, free, need, whats) in &by_mount {
        let gib = |b: u64| b as f64 / (1u64 << 30) as f64;
        if *free < 2 * need {
            anyhow::bail!(
                "refusing to run: {} need about {:.1} GiB on {mount}; twice that must be free and only {:.1} GiB is",
                whats.join(" + "),
                gib(*need),
                gib(*free)
            );
        }
        notes.push(format!(
            "disk: {:.1} GiB free on {mount}, about {:.1} GiB needed ({})",
            gib(*free),
            gib(*need),
            whats.join(" + ")
        ));
    }
    Ok(notes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_this_process() {
        let pid = std::process::id();
        assert!(cpu_seconds(pid).is_some());
        assert!(status_kib(pid, "VmRSS").is_some_and(|k| k > 0));
        assert!(status_kib(pid, "VmHWM").is_some_and(|k| k > 0));
        assert!(machine().cores >= 1);
        assert!(machine_busy_seconds().is_some_and(|s| s > 0.0));
    }
}
