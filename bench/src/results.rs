//! Everything one invocation of the bench measured (its header, the comparison's modes, the
//! sweep, and the soak, backlog and scale runs) and the names of the sections they fill.

use crate::long_runs::{Backlog, Soak};
use crate::measures::ModeRuns;
use crate::procfs::Machine;

/// The soak's section (`--soak N`).
pub const SOAK: &str = "## Soak";

/// The backlog drain's section (`--backlog N`).
pub const BACKLOG: &str = "## Backlog drain";

/// Where and with what the run happened.
#[derive(Debug, Clone, Default)]
pub struct Header {
    /// The machine.
    pub machine: Machine,
    /// RabbitMQ version (server property `version`).
    pub broker_version: String,
    /// How the broker process was found, and its pid.
    pub broker_pid: Option<u32>,
    /// `git rev-parse --short HEAD` (+ `-dirty`).
    pub commit: String,
    /// Local date and time of the run.
    pub date: String,
    /// The command line.
    pub command: String,
    /// Settings, as (name, value).
    pub settings: Vec<(String, String)>,
    /// Notes (plugin enabled, modes skipped, …).
    pub notes: Vec<String>,
    /// Wall-clock time of the whole invocation, s.
    pub wall_s: f64,
    /// Body size of every message, bytes.
    pub body_bytes: usize,
    /// The bench's prefetch (`--prefetch`).
    pub prefetch: u16,
    /// Rate of the paced runs, msg/s.
    pub paced_rate: f64,
}

/// Everything one invocation measured.
#[derive(Debug, Clone, Default)]
pub struct Results {
    /// Where and how.
    pub header: Header,
    /// The alternated modes, in order (direct, raw pipes, shovels, lienthong), each anchor at
    /// the bench's prefetch and at its best of the sweep.
    pub modes: Vec<ModeRuns>,
    /// The anchors' prefetch sweep, when it ran.
    pub sweep: Option<crate::anchors::Sweep>,
    /// The HTTP adapter, end to end.
    pub http: Option<ModeRuns>,
    /// Paced runs (direct, raw pipe, lienthong).
    pub paced: Vec<ModeRuns>,
    /// The soak, when asked.
    pub soak: Option<Soak>,
    /// The backlog drain, when asked.
    pub backlog: Option<Backlog>,
    /// The scale run, when asked.
    pub scale: Option<crate::scale_report::Scale>,
}
