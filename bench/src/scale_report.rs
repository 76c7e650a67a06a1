//! The scale run's figures (`--scale N`) and their section of BENCHMARKS.md: dossiers/s and CPU
//! per dossier of each kind of process, per store and process count, and where it saturates.

use std::fmt::Write as _;

/// The kinds of process the CPU is counted for, in the report's order.
pub const ROUTERS: &str = "routers";
pub const ADAPTERS: &str = "adapters";
pub const FRONT: &str = "HTTP API + tracer";
pub const MOCK: &str = "mock agency";
pub const BROKER: &str = "broker";
pub const POSTGRES: &str = "PostgreSQL";
pub const BENCH: &str = "bench (producer, sink)";

/// The heading of the section.
pub const HEADING: &str = "## Scale";

/// Which pass of a cell.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Path {
    /// N dossiers through ingress → router → adapter → agency → callback → router → centre.
    #[default]
    Http,
    /// N dossiers waiting in the agency's queue, drained once the adapters start.
    Drain,
}

impl Path {
    pub fn name(self) -> &'static str {
        match self {
            Path::Http => "HTTP adapter",
            Path::Drain => "backlog drain",
        }
    }
}

/// CPU of one kind of process during a pass.
#[derive(Debug, Clone, Default)]
pub struct ClassUse {
    /// [`ROUTERS`], [`ADAPTERS`], [`FRONT`], [`MOCK`], [`BROKER`], [`POSTGRES`], [`BENCH`].
    pub class: String,
    /// Processes of that kind (PostgreSQL: the postmaster, its workers, one backend per
    /// connection).
    pub processes: usize,
    /// CPU seconds (user + system), all of them together.
    pub cpu_s: f64,
}

/// One pass of one store and process count.
#[derive(Debug, Clone, Default)]
pub struct ScaleCell {
    /// `SQLite` or `PostgreSQL`.
    pub store: String,
    /// Router processes, and as many adapter processes.
    pub processes: u32,
    pub path: Path,
    /// Dossiers sent.
    pub dossiers: u64,
    /// Results back at the centre (distinct).
    pub moved: u64,
    /// HTTP adapter: first send to last result; drain: adapters' start to last result, s.
    pub secs: f64,
    /// Logical CPUs of the machine.
    pub cores: usize,
    /// CPU seconds the whole machine was busy during the pass.
    pub busy_s: Option<f64>,
    pub uses: Vec<ClassUse>,
    /// PostgreSQL: the mean number of the database's sessions waiting for the store's write
    /// lock, sampled five times a second.
    pub lock_waiters: Option<f64>,
    pub error: Option<String>,
    /// With `--scale-rounds` above 1: this cell's bus CPU per dossier (µs) in every round, in
    /// the order they ran; the row is the round at [`ScaleCell::round`]. Empty for one round.
    pub round_bus_us: Vec<f64>,
    /// Which round (0-based) this row's figures are from.
    pub round: usize,
}

impl ScaleCell {
    /// Dossiers per second.
    pub fn rate(&self) -> f64 {
        if self.secs > 0.0 {
            self.moved as f64 / self.secs
        } else {
            0.0
        }
    }

    /// CPU µs per dossier of one kind of process (all of them together).
    pub fn us(&self, class: &str) -> f64 {
        self.uses
            .iter()
            .filter(|u| u.class == class)
            .map(|u| u.cpu_s)
            .sum::<f64>()
            * 1e6
            / self.moved.max(1) as f64
    }

    /// CPU µs per dossier of the bus: routers, adapters, HTTP API and tracer.
    pub fn bus_us(&self) -> f64 {
        [ROUTERS, ADAPTERS, FRONT].iter().map(|c| self.us(c)).sum()
    }

    /// Share of the machine's CPUs busy during the pass, 0–1.
    pub fn busy(&self) -> Option<f64> {
        let wall = self.secs;
        self.busy_s
            .filter(|_| wall > 0.0 && self.cores > 0)
            .map(|b| b / (wall * self.cores as f64))
    }

    pub fn ok(&self) -> bool {
        self.error.is_none() && self.moved == self.dossiers
    }
}

/// Everything `--scale N` measured.
#[derive(Debug, Clone, Default)]
pub struct Scale {
    /// Dossiers per pass.
    pub count: u64,
    /// Rounds of the whole grid (`--scale-rounds`); 0 or 1 is one.
    pub rounds: u32,
    /// One row per store, process count and path: with several rounds, the median round's
    /// ([`medians`]).
    pub cells: Vec<ScaleCell>,
}

/// One row per cell from several rounds of the grid (`rounds[r]` = round `r`'s cells): the
/// round whose bus CPU per dossier is the median (the lower of the two middle ones for an even
/// count), with every round's figure in [`ScaleCell::round_bus_us`]. A failure is never hidden
/// by the median: a cell that failed in any round is reported as that failed round. Rows keep
/// the first round's order.
pub fn medians(rounds: Vec<Vec<ScaleCell>>) -> Vec<ScaleCell> {
    let single = rounds.len() <= 1;
    let mut groups: Vec<Vec<ScaleCell>> = Vec::new();
    for (r, cells) in rounds.into_iter().enumerate() {
        for mut c in cells {
            c.round = r;
            match groups.iter_mut().find(|g| {
                g[0].store == c.store && g[0].processes == c.processes && g[0].path == c.path
            }) {
                Some(g) => g.push(c),
                None => groups.push(vec![c]),
            }
        }
    }
    groups
        .into_iter()
        .map(|mut g| {
            let each: Vec<f64> = if single {
                Vec::new()
            } else {
                g.iter().map(ScaleCell::bus_us).collect()
            };
            let pick = match g.iter().position(|c| !c.ok()) {
                Some(failed) => failed,
                None => {
                    let mut order: Vec<usize> = (0..g.len()).collect();
                    order.sort_by(|a, b| g[*a].bus_us().total_cmp(&g[*b].bus_us()));
                    order[(order.len().max(1) - 1) / 2]
                }
            };
            let mut row = g.swap_remove(pick);
            row.round_bus_us = each;
            row
        })
        .collect()
}

impl Scale {
    pub fn ok(&self) -> bool {
        self.cells.iter().all(ScaleCell::ok)
    }
}

fn us(x: f64) -> String {
    format!("{x:.0}")
}

/// The section's body: `run` (date, command, machine) first.
pub fn section(scale: &Scale, run: &str) -> String {
    let mut s = format!("{run}\n\n");
    let _ = writeln!(
        s,
        "Each cell on a topology and a store of its own: `lienthong-mock` (latency 0, no failures, \
         callback without delay), one `lienthong run --components http,tracer` (the agencies' \
         callbacks come to it), *k* × `--components router` and *k* × `--components adapters`, \
         all on this machine. **HTTP adapter**: {n} dossiers for Police (`CA.H48`) through \
         ingress → router → adapter → agency → callback → router → the centre's queue, first \
         send to last result. **Backlog drain**: the adapters stop, {n} dossiers pile up in \
         Police's queue, *k* adapter processes start and drain it; from their start to the last \
         result at the centre. CPU is user + system time of each kind of process during the \
         pass, divided by the dossiers (µs per dossier; routers and adapters: all *k* together, \
         and per process); PostgreSQL: every `postgres` process of the machine (the postmaster, \
         its workers, one backend per connection). The machine is busy for other work too \
         (\"machine busy\" counts everything). \"Lock waiters\": on PostgreSQL, the mean number \
         of the database's sessions waiting for the store's write lock (`pg_stat_activity`, \
         five samples a second).\n",
        n = scale.count
    );
    s.push_str(
        "| store | k | path | dossiers/s | machine busy | lock waiters | bus µs/dossier | routers (each) | adapters (each) | HTTP API + tracer | broker | PostgreSQL | mock agency | bench |\n\
         |---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    for c in &scale.cells {
        let per = |class: &str| {
            let n = c
                .uses
                .iter()
                .find(|u| u.class == class)
                .map_or(1, |u| u.processes.max(1));
            format!("{} ({})", us(c.us(class)), us(c.us(class) / n as f64))
        };
        let pg = if c.uses.iter().any(|u| u.class == POSTGRES) {
            us(c.us(POSTGRES))
        } else {
            "–".into()
        };
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} | {} | **{}** | {} | {} | {} | {} | {} | {} | {} |",
            c.store,
            c.processes,
            c.path.name(),
            if c.ok() {
                format!("**{:.0}**", c.rate())
            } else {
                format!(
                    "FAILED ({} of {}): {}",
                    c.moved,
                    c.dossiers,
                    c.error.as_deref().unwrap_or("not every result came back")
                )
            },
            c.busy()
                .map_or("–".into(), |b| format!("{:.0} %", b * 100.0)),
            c.lock_waiters.map_or("–".into(), |w| format!("{w:.1}")),
            us(c.bus_us()),
            per(ROUTERS),
            per(ADAPTERS),
            us(c.us(FRONT)),
            us(c.us(BROKER)),
            pg,
            us(c.us(MOCK)),
            us(c.us(BENCH)),
        );
    }
    if scale.rounds > 1 {
        let _ = writeln!(
            s,
            "\n**Rounds.** {} rounds of the whole grid, the stores' order alternating from one \
             round to the next. Each row above is the round whose bus CPU per dossier is the \
             median of its cell's rounds (a failed round is shown instead, if any). Every \
             round's bus µs per dossier, in the order they ran (the row's in bold), and the \
             spread (highest ÷ lowest − 1):\n",
            scale.rounds
        );
        for c in &scale.cells {
            let each: Vec<String> = c
                .round_bus_us
                .iter()
                .enumerate()
                .map(|(r, v)| {
                    if r == c.round {
                        format!("**{}**", us(*v))
                    } else {
                        us(*v)
                    }
                })
                .collect();
            let (lo, hi) = c
                .round_bus_us
                .iter()
                .fold((f64::MAX, 0.0f64), |(lo, hi), v| (lo.min(*v), hi.max(*v)));
            let spread = if lo > 0.0 && lo < f64::MAX {
                format!("{:.0} %", (hi / lo - 1.0) * 100.0)
            } else {
                "–".into()
            };
            let _ = writeln!(
                s,
                "- {}, k = {}, {}: {} (spread {spread})",
                c.store,
                c.processes,
                c.path.name(),
                each.join(", ")
            );
        }
    }
    let _ = writeln!(s, "\nWhere it saturates:\n");
    for line in saturation(scale) {
        let _ = writeln!(s, "- {line}");
    }
    s
}

/// One line per store and path: the rates from the fewest processes to the most, the machine's
/// load, and whether more processes bought anything.
pub fn saturation(scale: &Scale) -> Vec<String> {
    let mut out = Vec::new();
    let mut keys: Vec<(String, Path)> = Vec::new();
    for c in &scale.cells {
        if !keys.contains(&(c.store.clone(), c.path)) {
            keys.push((c.store.clone(), c.path));
        }
    }
    for (store, path) in keys {
        let row: Vec<&ScaleCell> = scale
            .cells
            .iter()
            .filter(|c| c.store == store && c.path == path && c.ok())
            .collect();
        let (Some(first), Some(last)) = (row.first(), row.last()) else {
            continue;
        };
        let list = |f: &dyn Fn(&ScaleCell) -> String| {
            row.iter().map(|c| f(c)).collect::<Vec<_>>().join(" → ")
        };
        let busiest = row.iter().filter_map(|c| c.busy()).fold(0.0f64, f64::max);
        let best = row
            .iter()
            .max_by(|a, b| a.rate().total_cmp(&b.rate()))
            .map_or(first.processes, |c| c.processes);
        let waiters = row
            .iter()
            .filter_map(|c| c.lock_waiters)
            .fold(None, |m: Option<f64>, w| Some(m.map_or(w, |m| m.max(w))));
        let verdict = if let Some(w) = waiters.filter(|w| *w >= 0.5 && busiest < 0.85) {
            format!(
                "the machine is at most {:.0} % busy while up to {w:.1} writers on average wait for the store's write lock: bound by the lock, whose holder waits on its statements' round trips",
                busiest * 100.0
            )
        } else if busiest >= 0.85 {
            format!(
                "the machine's CPUs are up to {:.0} % busy: CPU-bound; more processes share the same cores",
                busiest * 100.0
            )
        } else {
            format!(
                "the machine is at most {:.0} % busy: not CPU-bound; the path waits (confirms, commits, the agency's round trip)",
                busiest * 100.0
            )
        };
        out.push(format!(
            "{store}, {}: k = {}: {} dossiers/s (machine busy {}); bus CPU {} µs/dossier; best at k = {best}; {verdict}; from k = {} to k = {} the bus's CPU per dossier changes by {:+.0} %.",
            path.name(),
            list(&|c| c.processes.to_string()),
            list(&|c| format!("{:.0}", c.rate())),
            list(&|c| c.busy().map_or("–".into(), |b| format!("{:.0} %", b * 100.0))),
            list(&|c| us(c.bus_us())),
            first.processes,
            last.processes,
            if first.bus_us() > 0.0 {
                (last.bus_us() / first.bus_us() - 1.0) * 100.0
            } else {
                0.0
            }
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cell(k: u32, secs: f64, router_s: f64, busy_s: f64) -> ScaleCell {
        ScaleCell {
            store: "SQLite".into(),
            processes: k,
            path: Path::Http,
            dossiers: 1000,
            moved: 1000,
            secs,
            cores: 2,
            busy_s: Some(busy_s),
            uses: vec![
                ClassUse {
                    class: ROUTERS.into(),
                    processes: k as usize,
                    cpu_s: router_s,
                },
                ClassUse {
                    class: BROKER.into(),
                    processes: 1,
                    cpu_s: 0.5,
                },
            ],
            lock_waiters: None,
            error: None,
            ..ScaleCell::default()
        }
    }

    /// Per dossier and per process, the rate, the machine's load and the verdict.
    #[test]
    fn a_cell_is_reported_per_dossier_and_per_process() {
        let scale = Scale {
            count: 1000,
            rounds: 1,
            cells: vec![cell(1, 2.0, 0.4, 3.8), cell(2, 2.5, 0.6, 4.9)],
        };
        let text = section(&scale, "Run now.");
        assert!(
            text.contains(
                "| SQLite | 1 | HTTP adapter | **500** | 95 % | – | **400** | 400 (400) |"
            ),
            "{text}"
        );
        assert!(
            text.contains(
                "| SQLite | 2 | HTTP adapter | **400** | 98 % | – | **600** | 600 (300) |"
            ),
            "{text}"
        );
        let lines = saturation(&scale);
        assert_eq!(lines.len(), 1);
        assert!(lines[0].contains("500 → 400 dossiers/s"), "{}", lines[0]);
        assert!(lines[0].contains("CPU-bound"), "{}", lines[0]);
        assert!(lines[0].contains("+50 %"), "{}", lines[0]);
    }

    /// A PostgreSQL row that waits on the write lock says so.
    #[test]
    fn lock_waiters_name_the_lock() {
        let mut a = cell(1, 2.0, 0.4, 2.0);
        a.store = "PostgreSQL".into();
        a.lock_waiters = Some(2.4);
        let scale = Scale {
            count: 1000,
            rounds: 1,
            cells: vec![a],
        };
        assert!(section(&scale, "").contains("| 50 % | 2.4 |"));
        assert!(saturation(&scale)[0].contains("bound by the lock"));
    }

    /// Three rounds: each row is its cell's median round, with every round's figure beside it;
    /// a round that failed is shown instead of the median.
    #[test]
    fn several_rounds_give_each_cell_its_median_round() {
        // Bus CPU per dossier: 400, 300 and 500 µs for k = 1; k = 2 fails in round 3.
        let k1 = [0.4, 0.3, 0.5].map(|r| cell(1, 2.0, r, 3.8));
        let mut failed = cell(2, 2.5, 0.1, 4.9);
        failed.moved = 10;
        failed.error = Some("stalled".into());
        let rounds = vec![
            vec![k1[0].clone(), cell(2, 2.5, 0.6, 4.9)],
            vec![cell(2, 2.5, 0.7, 4.9), k1[1].clone()],
            vec![k1[2].clone(), failed],
        ];
        let cells = medians(rounds);
        assert_eq!(cells.len(), 2);
        assert_eq!((cells[0].processes, cells[0].round), (1, 0));
        assert_eq!(cells[0].round_bus_us, vec![400.0, 300.0, 500.0]);
        assert_eq!((cells[1].processes, cells[1].round), (2, 2));
        assert!(!cells[1].ok());
        let scale = Scale {
            count: 1000,
            rounds: 3,
            cells,
        };
        let text = section(&scale, "");
        assert!(
            text.contains("| SQLite | 1 | HTTP adapter | **500** | 95 % | – | **400** |"),
            "{text}"
        );
        assert!(
            text.contains("- SQLite, k = 1, HTTP adapter: **400**, 300, 500 (spread 67 %)"),
            "{text}"
        );
        assert!(
            text.contains("- SQLite, k = 2, HTTP adapter: 600, 700, **10000**"),
            "{text}"
        );
        // One round: no rounds paragraph, and the row as measured.
        let one = medians(vec![vec![cell(1, 2.0, 0.4, 3.8)]]);
        assert!(one[0].round_bus_us.is_empty());
        assert!(
            !section(
                &Scale {
                    count: 1000,
                    rounds: 1,
                    cells: one
                },
                ""
            )
            .contains("**Rounds.**")
        );
    }

    /// A failed cell says so, and is left out of the saturation line.
    #[test]
    fn a_failed_cell_says_so() {
        let mut bad = cell(4, 1.0, 0.1, 1.0);
        bad.moved = 10;
        bad.error = Some("stalled".into());
        let scale = Scale {
            count: 1000,
            rounds: 1,
            cells: vec![cell(1, 2.0, 0.4, 3.8), bad],
        };
        assert!(!scale.ok());
        assert!(section(&scale, "").contains("FAILED (10 of 1000): stalled"));
        assert!(saturation(&scale)[0].contains("k = 1: 500 dossiers/s"));
    }
}
