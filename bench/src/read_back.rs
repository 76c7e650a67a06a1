//! Figures read back from the report's sections that other invocations wrote (the soak, the
//! backlog drain, the scale run), for the targets: each section's date and the few figures a
//! target needs, parsed from the Markdown that [`crate::long_runs`] and [`crate::scale_report`]
//! render.

/// The soak's figures.
#[derive(Debug, Clone, PartialEq)]
pub struct SoakFigures {
    pub date: String,
    pub moved: u64,
    pub count: u64,
    /// The router's RSS, MiB: first, max and last sample, and last − first as written.
    pub first: String,
    pub max: String,
    pub last: String,
    pub growth: String,
    /// The section's verdict: growth under 10 % or under 8 MiB.
    pub flat: bool,
    pub failed: bool,
}

/// The backlog drain's figures.
#[derive(Debug, Clone, PartialEq)]
pub struct BacklogFigures {
    pub date: String,
    pub dossiers: u64,
    /// CPU s of the bus's processes (`lienthong run …`) during the drain, together.
    pub bus_s: f64,
    /// CPU s of the broker during the drain.
    pub broker_s: f64,
    pub failed: bool,
}

/// One cell of the scale table.
#[derive(Debug, Clone, PartialEq)]
pub struct ScaleRow {
    /// `SQLite` or `PostgreSQL`.
    pub store: String,
    pub k: u32,
    /// `HTTP adapter` or `backlog drain`.
    pub path: String,
    pub failed: bool,
    /// CPU µs per dossier of the bus (routers, adapters, HTTP API and tracer).
    pub bus_us: f64,
    /// CPU µs per dossier of the broker.
    pub broker_us: f64,
}

/// The scale run's figures.
#[derive(Debug, Clone, PartialEq)]
pub struct ScaleFigures {
    pub date: String,
    /// Rounds of the grid each row is the median of (`--scale-rounds`; 1 when the section does
    /// not say).
    pub rounds: u32,
    pub rows: Vec<ScaleRow>,
}

/// The date of a section's "Run DATE (`command`) on …" line.
fn run_date(body: &str) -> String {
    body.lines()
        .find_map(|l| l.strip_prefix("Run "))
        .and_then(|l| l.split(" (`").next())
        .unwrap_or("?")
        .to_string()
}

/// The first Markdown table of `body` whose header starts with `| first |`: its header cells
/// and its rows' cells (trimmed, without `*`).
fn table(body: &str, first: &str) -> Option<(Vec<String>, Vec<Vec<String>>)> {
    let cells = |l: &str| -> Vec<String> {
        l.trim()
            .trim_matches('|')
            .split('|')
            .map(|c| c.replace('*', "").trim().to_string())
            .collect()
    };
    let mut lines = body
        .lines()
        .skip_while(|l| !l.starts_with(&format!("| {first} |")));
    let header = cells(lines.next()?);
    let rows = lines
        .skip(1)
        .take_while(|l| l.starts_with('|'))
        .map(cells)
        .collect();
    Some((header, rows))
}

/// The number a cell starts with (`+3.0 MiB` → 3.0, `402 (402)` → 402).
fn num(cell: &str) -> Option<f64> {
    let t = cell.trim().trim_start_matches('+');
    let end = t
        .char_indices()
        .find(|(i, c)| !(c.is_ascii_digit() || *c == '.' || (*c == '-' && *i == 0)))
        .map_or(t.len(), |(i, _)| i);
    t[..end].parse().ok()
}

/// The "Soak" section's figures.
pub fn soak(body: &str) -> Result<SoakFigures, &'static str> {
    let line = body
        .lines()
        .find(|l| l.contains(" messages through `lienthong run"))
        .ok_or("its message count could not be read")?;
    let w: Vec<&str> = line.split_whitespace().collect();
    let (Some(moved), Some(count)) = (
        w.first().and_then(|x| num(x)),
        w.get(2).and_then(|x| num(x)),
    ) else {
        return Err("its message count could not be read");
    };
    let (_, rows) = table(body, "first MiB").ok_or("no memory samples")?;
    let c = rows
        .first()
        .filter(|c| c.len() >= 6)
        .ok_or("no memory samples")?;
    Ok(SoakFigures {
        date: run_date(body),
        moved: moved as u64,
        count: count as u64,
        first: c[0].clone(),
        max: c[2].clone(),
        last: c[3].clone(),
        growth: c[4].clone(),
        flat: c[5].starts_with("yes"),
        failed: body.contains("FAILED"),
    })
}

/// The "Backlog drain" section's figures.
pub fn backlog(body: &str) -> Result<BacklogFigures, &'static str> {
    let dossiers = body
        .lines()
        .find(|l| l.contains(" dossiers for Police"))
        .and_then(|l| num(l.split_whitespace().next().unwrap_or("")))
        .ok_or("its dossier count could not be read")?;
    let (_, rows) =
        table(body, "process (during the drain)").ok_or("its process table could not be read")?;
    let cpu = |starts: &str| -> Vec<f64> {
        rows.iter()
            .filter(|c| c.first().is_some_and(|n| n.starts_with(starts)))
            .filter_map(|c| c.get(1).and_then(|x| num(x)))
            .collect()
    };
    let bus = cpu("lienthong run");
    let broker = cpu("broker");
    if bus.is_empty() || broker.is_empty() {
        return Err("its process table has no bus or no broker");
    }
    Ok(BacklogFigures {
        date: run_date(body),
        dossiers: dossiers as u64,
        bus_s: bus.iter().sum(),
        broker_s: broker.iter().sum(),
        failed: body.contains("FAILED"),
    })
}

/// The "Scale" section's figures.
pub fn scale(body: &str) -> Result<ScaleFigures, &'static str> {
    let (head, rows) = table(body, "store").ok_or("its table could not be read")?;
    let col = |name: &str| head.iter().position(|h| h == name);
    let (Some(s), Some(k), Some(p), Some(d), Some(bus), Some(br)) = (
        col("store"),
        col("k"),
        col("path"),
        col("dossiers/s"),
        col("bus µs/dossier"),
        col("broker"),
    ) else {
        return Err("its table lacks a column");
    };
    let rows = rows
        .iter()
        .filter_map(|c| {
            Some(ScaleRow {
                store: c.get(s)?.clone(),
                k: num(c.get(k)?)? as u32,
                path: c.get(p)?.clone(),
                failed: c.get(d)?.starts_with("FAILED"),
                bus_us: num(c.get(bus)?)?,
                broker_us: num(c.get(br)?)?,
            })
        })
        .collect();
    let rounds = body
        .split("**Rounds.** ")
        .nth(1)
        .and_then(|r| r.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(1);
    Ok(ScaleFigures {
        date: run_date(body),
        rounds,
        rows,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::long_runs::{Backlog, Soak, backlog_section, soak_section};
    use crate::measures::{ProcUse, Round};
    use crate::scale_report::{self, ClassUse, Path, Scale, ScaleCell};

    const RUN: &str = "Run 2026-12-06 01:02:03 +0000 (`lienthong-bench --x`) on a machine.";

    fn proc(name: &str, cpu_s: f64) -> ProcUse {
        ProcUse {
            name: name.into(),
            cpu_s,
            rss_kib: None,
            written: None,
        }
    }

    #[test]
    fn the_soak_as_its_section_says_it() {
        let run = Soak {
            round: Round {
                count: 1_000_000,
                moved: 1_000_000,
                secs: 300.0,
                rate: 3333.0,
                ..Round::default()
            },
            rss: vec![(1.0, 57_000), (100.0, 61_000), (300.0, 60_000)],
            ..Soak::default()
        };
        let f = soak(&soak_section(&run, RUN)).expect("figures");
        assert_eq!(f.date, "2026-12-06 01:02:03 +0000");
        assert_eq!((f.moved, f.count), (1_000_000, 1_000_000));
        assert_eq!(
            (f.first.as_str(), f.max.as_str(), f.last.as_str()),
            ("55.7", "59.6", "58.6")
        );
        assert_eq!(f.growth, "+2.9 MiB");
        assert!(f.flat && !f.failed);
    }

    #[test]
    fn the_backlog_as_its_section_says_it() {
        let b = Backlog {
            count: 200_000,
            drain_s: 180.0,
            procs: vec![
                proc("bench", 10.0),
                proc("lienthong run (router,tracer,http)", 90.0),
                proc("lienthong run (adapters)", 70.0),
                proc("broker (beam.smp)", 120.0),
                proc(crate::measures::OTHERS, 5.0),
            ],
            ..Backlog::default()
        };
        let f = backlog(&backlog_section(&b, RUN)).expect("figures");
        assert_eq!(f.dossiers, 200_000);
        assert_eq!((f.bus_s, f.broker_s), (160.0, 120.0));
        assert!(!f.failed);
    }

    #[test]
    fn the_scale_table_as_its_section_says_it() {
        let cell = |store: &str, k: u32, path: Path, moved: u64| ScaleCell {
            store: store.into(),
            processes: k,
            path,
            dossiers: 1000,
            moved,
            secs: 1.0,
            cores: 2,
            uses: vec![
                ClassUse {
                    class: scale_report::ROUTERS.into(),
                    processes: k as usize,
                    cpu_s: 0.4,
                },
                ClassUse {
                    class: scale_report::ADAPTERS.into(),
                    processes: k as usize,
                    cpu_s: 0.3,
                },
                ClassUse {
                    class: scale_report::BROKER.into(),
                    processes: 1,
                    cpu_s: 0.5,
                },
            ],
            ..ScaleCell::default()
        };
        // Three rounds: the rounds paragraph under the table does not disturb the reading.
        let mut first = cell("SQLite", 1, Path::Http, 1000);
        first.round_bus_us = vec![650.0, 700.0, 720.0];
        first.round = 1;
        let scale_run = Scale {
            count: 1000,
            rounds: 3,
            cells: vec![first, cell("PostgreSQL", 2, Path::Drain, 10)],
        };
        let f = scale(&scale_report::section(&scale_run, RUN)).expect("figures");
        assert_eq!(f.rows.len(), 2, "{f:?}");
        assert_eq!(
            f.rows[0],
            ScaleRow {
                store: "SQLite".into(),
                k: 1,
                path: "HTTP adapter".into(),
                failed: false,
                bus_us: 700.0,
                broker_us: 500.0,
            }
        );
        assert!(f.rows[1].failed);
        assert_eq!(f.rows[1].path, "backlog drain");
        assert_eq!(f.rounds, 3);
    }

    #[test]
    fn numbers_from_cells() {
        assert_eq!(num("+3.0 MiB"), Some(3.0));
        assert_eq!(num("402 (402)"), Some(402.0));
        assert_eq!(num("-2 %"), Some(-2.0));
        assert_eq!(num("–"), None);
    }
}
