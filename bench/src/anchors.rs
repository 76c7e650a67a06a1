//! The anchors lienthong is measured against: the prefetch sweep of the raw pipes and the
//! shovels (its figures, each anchor's best value, its section) and the "Ratios" section,
//! lienthong's median against the best of each anchor and against each at the bench's prefetch.

use std::fmt::Write as _;

use crate::measures::{ModeRuns, Round, median};

/// The sweep's section.
pub const SWEEP_HEADING: &str = "## Prefetch sweep";
/// The ratios' section.
pub const RATIOS_HEADING: &str = "## Ratios";

/// The modes lienthong's ratios are taken against, by name (as [`crate::round::Mode::name`]).
pub const PIPE_PLAIN: &str = "raw pipe (plain)";
pub const PIPE_ARGS: &str = "raw pipe (lienthong args)";
pub const SHOVEL: &str = "shovel (in-node)";
pub const SHOVEL_TCP: &str = "shovel (tcp)";
pub const DIRECT: &str = "direct";
pub const LIENTHONG: &str = "lienthong";

/// One anchor at one prefetch value of the sweep.
#[derive(Debug, Clone, Default)]
pub struct SweepPoint {
    /// The anchor's name.
    pub mode: String,
    pub prefetch: u16,
    pub rounds: Vec<Round>,
}

impl SweepPoint {
    /// Every round moved every message.
    pub fn ok(&self) -> bool {
        !self.rounds.is_empty() && self.rounds.iter().all(Round::ok)
    }

    /// Median msg/s of the rounds, when every one moved every message.
    pub fn rate(&self) -> Option<f64> {
        if !self.ok() {
            return None;
        }
        median(&self.rounds.iter().map(|r| r.rate).collect::<Vec<_>>())
    }
}

/// The sweep: each anchor at each prefetch value, fewer messages than the full rounds.
#[derive(Debug, Clone, Default)]
pub struct Sweep {
    /// The prefetch values, ascending.
    pub values: Vec<u16>,
    /// Rounds per point.
    pub rounds: u32,
    /// Messages per round.
    pub messages: u64,
    pub points: Vec<SweepPoint>,
}

impl Sweep {
    /// Every round of every point moved every message.
    pub fn ok(&self) -> bool {
        self.points.iter().all(SweepPoint::ok)
    }

    /// The anchor's best prefetch: the highest median msg/s of its points that moved every
    /// message (the lower value on a tie).
    pub fn best(&self, mode: &str) -> Option<u16> {
        let mut best: Option<(f64, u16)> = None;
        for p in self.points.iter().filter(|p| p.mode == mode) {
            if let Some(r) = p.rate()
                && best.is_none_or(|(b, _)| r > b)
            {
                best = Some((r, p.prefetch));
            }
        }
        best.map(|(_, p)| p)
    }

    /// The anchors swept, in the order they ran.
    pub fn modes(&self) -> Vec<&str> {
        let mut v: Vec<&str> = Vec::new();
        for p in &self.points {
            if !v.contains(&p.mode.as_str()) {
                v.push(&p.mode);
            }
        }
        v
    }
}

/// The sweep's section: msg/s of each anchor at each prefetch, the best in bold.
pub fn sweep_section(sweep: &Sweep, bench_prefetch: u16) -> String {
    let mut s = format!(
        "Each anchor at each prefetch value (of its consumer in the path — the raw pipe, the \
         shovel's `src-prefetch-count` — and of the sink): {} round{} × {} messages per point, \
         the anchors alternating at each value; median msg/s. Each anchor's best value then ran \
         the full alternating rounds beside the bench's prefetch ({bench_prefetch}): \
         [Throughput](#throughput), \"…, prefetch N\" (the same figures as \"…\" when the best \
         is {bench_prefetch}). [Ratios](#ratios) are to the better of the two.\n\n| anchor |",
        sweep.rounds,
        if sweep.rounds == 1 { "" } else { "s" },
        sweep.messages
    );
    for v in &sweep.values {
        let _ = write!(s, " prefetch {v} |");
    }
    s.push_str(" best |\n|---|");
    for _ in &sweep.values {
        s.push_str("---:|");
    }
    s.push_str("---:|\n");
    for mode in sweep.modes() {
        let best = sweep.best(mode);
        let _ = write!(s, "| {mode} |");
        for v in &sweep.values {
            let cell = match sweep
                .points
                .iter()
                .find(|p| p.mode == mode && p.prefetch == *v)
            {
                None => "–".to_string(),
                Some(p) => match p.rate() {
                    Some(r) if best == Some(*v) => format!("**{r:.0}**"),
                    Some(r) => format!("{r:.0}"),
                    None => {
                        let moved: u64 = p.rounds.iter().map(|r| r.moved).sum();
                        let count: u64 = p.rounds.iter().map(|r| r.count).sum();
                        let why = p
                            .rounds
                            .iter()
                            .find_map(|r| r.error.as_deref())
                            .map_or(String::new(), |e| format!(": {e}"));
                        format!("FAILED ({moved} of {count}{why})")
                    }
                },
            };
            let _ = write!(s, " {cell} |");
        }
        let _ = writeln!(s, " {} |", best.map_or("–".into(), |b| b.to_string()));
    }
    s
}

/// The best of a mode's full rounds: its variant (at the bench's prefetch, or at its best of
/// the sweep; for lienthong, with the sink at the router's prefetch) with the highest median
/// msg/s, that moved every message.
pub fn best_of<'a>(modes: &'a [ModeRuns], mode: &str) -> Option<(f64, &'a ModeRuns)> {
    let mut best: Option<(f64, &ModeRuns)> = None;
    for m in modes
        .iter()
        .filter(|m| m.mode == mode && m.skipped.is_none() && m.ok())
    {
        if let Some(r) = m.median_rate()
            && best.is_none_or(|(b, _)| r > b)
        {
            best = Some((r, m));
        }
    }
    best
}

/// An anchor at the bench's prefetch (its variant named as the mode).
pub fn at_bench(modes: &[ModeRuns], mode: &str) -> Option<f64> {
    modes
        .iter()
        .find(|m| m.name == mode && m.skipped.is_none())
        .and_then(ModeRuns::median_rate)
}

fn ratio(a: Option<f64>, b: Option<f64>) -> String {
    match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => format!("{:.2}", a / b),
        _ => "–".into(),
    }
}

/// The "Ratios" section: lienthong's median against the best of each anchor, then every ratio
/// at the bench's prefetch (those of the reports before issue 21 among them).
pub fn ratios_section(modes: &[ModeRuns], bench_prefetch: u16) -> String {
    let lt = best_of(modes, LIENTHONG);
    let mut s = String::from(
        "Of the median msg/s. lienthong's best against the best of each anchor: the better \
         median of its full rounds at the bench's prefetch and at its best prefetch of the \
         sweep (for lienthong: at the bench's prefetch, or with the sink at the router's \
         prefetch).\n\n\
         | ratio | value | lienthong's median | the anchor's median |\n|---|---:|---|---|\n",
    );
    let at = |b: Option<(f64, &ModeRuns)>| {
        b.map_or("–".into(), |(r, m)| {
            format!("{r:.0} msg/s at prefetch {}", m.prefetch)
        })
    };
    for anchor in [PIPE_PLAIN, SHOVEL, SHOVEL_TCP, PIPE_ARGS] {
        let best = best_of(modes, anchor);
        let _ = writeln!(
            s,
            "| lienthong ÷ best {anchor} | {} | {} | {} |",
            ratio(lt.map(|l| l.0), best.map(|b| b.0)),
            at(lt),
            at(best)
        );
    }
    let _ = writeln!(
        s,
        "\nAt the bench's prefetch ({bench_prefetch}) for every mode. Before issue 21 the report's \
         \"raw pipe\" was the raw pipe on lienthong's arguments and its \"shovel\" the TCP \
         shovel.\n\n| ratio | value |\n|---|---:|"
    );
    for (a, b) in [
        (LIENTHONG, PIPE_PLAIN),
        (LIENTHONG, PIPE_ARGS),
        (LIENTHONG, SHOVEL),
        (LIENTHONG, SHOVEL_TCP),
        (LIENTHONG, DIRECT),
        (PIPE_ARGS, SHOVEL_TCP),
        (PIPE_PLAIN, PIPE_ARGS),
        (SHOVEL, SHOVEL_TCP),
    ] {
        let _ = writeln!(
            s,
            "| {a} ÷ {b} | {} |",
            ratio(at_bench(modes, a), at_bench(modes, b))
        );
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round(rate: f64, ok: bool) -> Round {
        Round {
            round: 1,
            count: 100,
            moved: if ok { 100 } else { 50 },
            rate,
            ..Round::default()
        }
    }

    fn runs(mode: &str, prefetch: u16, bench: u16, rates: &[f64]) -> ModeRuns {
        ModeRuns {
            name: if prefetch == bench {
                mode.into()
            } else {
                format!("{mode}, prefetch {prefetch}")
            },
            mode: mode.into(),
            prefetch,
            rounds: rates.iter().map(|r| round(*r, true)).collect(),
            ..ModeRuns::default()
        }
    }

    #[test]
    fn the_names_are_the_modes() {
        use crate::round::Mode;
        assert_eq!(Mode::PipePlain.name(), PIPE_PLAIN);
        assert_eq!(Mode::Pipe.name(), PIPE_ARGS);
        assert_eq!(Mode::Shovel.name(), SHOVEL);
        assert_eq!(Mode::ShovelTcp.name(), SHOVEL_TCP);
        assert_eq!(Mode::Direct.name(), DIRECT);
        assert_eq!(Mode::Lienthong.name(), LIENTHONG);
    }

    #[test]
    fn the_best_prefetch_is_the_fastest_point_that_moved_everything() {
        let sweep = Sweep {
            values: vec![64, 200, 500],
            rounds: 1,
            messages: 100,
            points: vec![
                SweepPoint {
                    mode: PIPE_PLAIN.into(),
                    prefetch: 64,
                    rounds: vec![round(4000.0, true)],
                },
                SweepPoint {
                    mode: PIPE_PLAIN.into(),
                    prefetch: 200,
                    rounds: vec![round(5000.0, true)],
                },
                SweepPoint {
                    mode: PIPE_PLAIN.into(),
                    prefetch: 500,
                    rounds: vec![round(9000.0, false)],
                },
            ],
        };
        assert_eq!(sweep.best(PIPE_PLAIN), Some(200));
        assert_eq!(sweep.best(SHOVEL), None);
        assert!(!sweep.ok());
        let text = sweep_section(&sweep, 64);
        assert!(
            text.contains("| raw pipe (plain) | 4000 | **5000** | FAILED (50 of 100) | 200 |"),
            "{text}"
        );
    }

    #[test]
    fn ratios_are_to_the_best_of_each_anchor() {
        let modes = vec![
            runs(LIENTHONG, 64, 64, &[1500.0, 1600.0, 1400.0]),
            runs(LIENTHONG, 500, 64, &[2000.0, 2100.0, 1900.0]),
            runs(PIPE_PLAIN, 64, 64, &[4000.0, 4000.0, 4000.0]),
            runs(PIPE_PLAIN, 500, 64, &[5000.0, 5000.0, 5000.0]),
            runs(SHOVEL, 64, 64, &[4000.0, 4000.0, 4000.0]),
            runs(SHOVEL, 200, 64, &[3000.0, 3000.0, 3000.0]),
        ];
        let (r, m) = best_of(&modes, PIPE_PLAIN).expect("a best");
        assert_eq!((r, m.prefetch), (5000.0, 500));
        let (r, m) = best_of(&modes, SHOVEL).expect("a best");
        assert_eq!((r, m.prefetch), (4000.0, 64));
        let text = ratios_section(&modes, 64);
        assert!(
            text.contains(
                "| lienthong ÷ best raw pipe (plain) | 0.40 | 2000 msg/s at prefetch 500 | 5000 msg/s at prefetch 500 |"
            ),
            "{text}"
        );
        assert!(
            text.contains("| lienthong ÷ best shovel (in-node) | 0.50 |"),
            "{text}"
        );
        assert!(
            text.contains("| lienthong ÷ raw pipe (plain) | 0.38 |"),
            "{text}"
        );
        assert!(
            text.contains("| lienthong ÷ best shovel (tcp) | – |"),
            "{text}"
        );
    }
}
