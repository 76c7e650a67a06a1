//! The comparison (the default run): the anchors' prefetch sweep, then direct, the raw pipes
//! (plain and on lienthong's arguments), the shovels (in the node and over TCP), each anchor
//! also at its best prefetch, and lienthong alternated round by round; then the HTTP adapter end
//! to end, then the paced runs.

use crate::anchors::{Sweep, SweepPoint};
use crate::args::BenchArgs;
use crate::backlog::backlog;
use crate::broker;
use crate::measures::ModeRuns;
use crate::results::{Header, Results};
use crate::round::{Bench, Mode, RoundOpts, print_round};
use crate::soak::soak;

pub(crate) async fn run_all(
    bench: &Bench,
    args: &BenchArgs,
    http_messages: u64,
    paced_count: u64,
    header: &mut Header,
    results: &mut Results,
) -> anyhow::Result<()> {
    if args.soak.is_some() || args.backlog.is_some() || args.scale.is_some() {
        if let Some(n) = args.soak {
            results.soak = Some(soak(bench, n, header).await?);
        }
        if let Some(n) = args.backlog {
            results.backlog = Some(backlog(bench, n, header).await?);
        }
        if let Some(n) = args.scale {
            results.scale = Some(crate::scale::scale(bench, n, header).await?);
        }
        return Ok(());
    }
    let shovels = Mode::Shovel.wanted(args) || Mode::ShovelTcp.wanted(args);
    let plugin = if shovels {
        broker::prepare_shovel_plugin(|file, existed| {
            if let Ok(mut p) = bench.cleanup.plugin.lock() {
                *p = Some((file, existed));
            }
        })
        .await
    } else {
        broker::ShovelPlugin::Unavailable("not selected (--modes)".into())
    };
    let shovel_skip = match &plugin {
        broker::ShovelPlugin::AlreadyEnabled => {
            header.notes.push(format!(
                "{} was already enabled; left enabled",
                broker::SHOVEL
            ));
            None
        }
        broker::ShovelPlugin::EnabledByUs => {
            header.notes.push(format!(
                "{} was disabled: the bench enabled it for the shovel modes and disabled it again at the end",
                broker::SHOVEL
            ));
            None
        }
        broker::ShovelPlugin::Unavailable(why) => {
            if shovels {
                header.notes.push(format!("shovel modes skipped: {why}"));
            }
            Some(why.clone())
        }
    };
    let skipped = |m: Mode| -> Option<String> {
        if !m.wanted(args) {
            Some("not selected (--modes)".into())
        } else if matches!(m, Mode::Shovel | Mode::ShovelTcp) {
            shovel_skip.clone()
        } else {
            None
        }
    };

    // The anchors' prefetch sweep, then each anchor's best beside the bench's prefetch.
    let anchors: Vec<Mode> = Mode::ANCHORS
        .into_iter()
        .filter(|m| skipped(*m).is_none())
        .collect();
    let values = args.sweep_points();
    let mut best: Vec<(Mode, u16)> = Vec::new();
    if !values.is_empty() && !anchors.is_empty() {
        let sw = sweep(bench, args, &anchors, &values).await;
        for m in &anchors {
            if let Some(p) = sw.best(m.name()) {
                eprintln!("  best prefetch of {}: {p}", m.name());
                best.push((*m, p));
            }
        }
        results.sweep = Some(sw);
    }
    // lienthong also with its sink at the router's prefetch: every consumer of its path at one
    // value, as an anchor at its best runs.
    if args.router_prefetch != args.prefetch {
        best.push((Mode::Lienthong, args.router_prefetch));
    }
    let mut variants: Vec<(Mode, u16)> = Vec::new();
    for m in Mode::ALTERNATED {
        variants.push((m, args.prefetch));
        if let Some(&(_, p)) = best.iter().find(|(b, _)| *b == m)
            && p != args.prefetch
        {
            variants.push((m, p));
        }
    }
    let mut runs: Vec<ModeRuns> = variants
        .iter()
        .map(|&(m, p)| ModeRuns {
            name: label(m, p, args.prefetch),
            mode: m.name().into(),
            prefetch: p,
            what: m.what().into(),
            rounds: Vec::new(),
            skipped: skipped(m),
        })
        .collect();
    for round in 1..=args.rounds {
        eprintln!("round {round}/{}", args.rounds);
        for (&(m, p), runs) in variants.iter().zip(runs.iter_mut()) {
            if runs.skipped.is_some() {
                continue;
            }
            let opts = RoundOpts {
                count: args.messages,
                prefetch: p,
                rate: None,
                sample_rss: false,
            };
            let (r, _, _) = bench
                .round(
                    m,
                    round,
                    &tag(&format!("r{round}"), m, p, args.prefetch),
                    opts,
                )
                .await;
            print_round(&runs.name, &r);
            runs.rounds.push(r);
        }
    }
    results.modes = runs;

    if args.wants("http") {
        eprintln!("http adapter, end to end ({http_messages} dossiers)");
        let (r, _, _) = bench
            .round(
                Mode::Http,
                1,
                "http",
                RoundOpts {
                    count: http_messages,
                    prefetch: args.prefetch,
                    rate: None,
                    sample_rss: false,
                },
            )
            .await;
        print_round(Mode::Http.name(), &r);
        results.http = Some(ModeRuns {
            name: Mode::Http.name().into(),
            mode: Mode::Http.name().into(),
            prefetch: args.prefetch,
            what: Mode::Http.what().into(),
            rounds: vec![r],
            skipped: None,
        });
    }

    let paced: &[Mode] = if args.wants("paced") {
        &[Mode::Direct, Mode::Pipe, Mode::Lienthong]
    } else {
        &[]
    };
    // Rounds outside, modes inside: the modes alternate, as in the saturated rounds, so that
    // a slow stretch of the machine falls on every mode alike.
    let mut runs: Vec<ModeRuns> = paced
        .iter()
        .map(|&m| ModeRuns {
            name: format!("{} (paced)", m.name()),
            mode: m.name().into(),
            prefetch: args.prefetch,
            what: m.what().into(),
            rounds: Vec::new(),
            skipped: None,
        })
        .collect();
    for round in 1..=args.paced_rounds {
        for (&m, mr) in paced.iter().zip(runs.iter_mut()) {
            eprintln!(
                "paced: {} at {} msg/s for {} s (run {round} of {})",
                m.name(),
                args.paced_rate,
                args.paced_seconds,
                args.paced_rounds
            );
            let (r, _, _) = bench
                .round(
                    m,
                    round,
                    &format!("paced-r{round}-{}", m.short()),
                    RoundOpts {
                        count: paced_count,
                        prefetch: args.prefetch,
                        rate: Some(args.paced_rate),
                        sample_rss: false,
                    },
                )
                .await;
            print_round(&mr.name, &r);
            mr.rounds.push(r);
        }
    }
    results.paced.extend(runs);
    Ok(())
}

/// A mode's name in the report: with its prefetch when that is not the bench's.
pub(crate) fn label(m: Mode, prefetch: u16, bench_prefetch: u16) -> String {
    if prefetch == bench_prefetch {
        m.name().into()
    } else {
        format!("{}, prefetch {prefetch}", m.name())
    }
}

/// The name of a round's queues and working directory.
fn tag(what: &str, m: Mode, prefetch: u16, bench_prefetch: u16) -> String {
    if prefetch == bench_prefetch {
        format!("{what}-{}", m.short())
    } else {
        format!("{what}-{}-p{prefetch}", m.short())
    }
}

/// The prefetch sweep: at each value, `--sweep-rounds` rounds of every anchor in turn, with
/// `--sweep-messages` messages each.
async fn sweep(bench: &Bench, args: &BenchArgs, anchors: &[Mode], values: &[u16]) -> Sweep {
    let messages = args.sweep_messages.unwrap_or((args.messages / 2).max(1));
    let rounds = args.sweep_rounds.max(1);
    eprintln!(
        "prefetch sweep: {} at prefetch {}, {rounds} round(s) × {messages} messages per point",
        anchors
            .iter()
            .map(|m| m.name())
            .collect::<Vec<_>>()
            .join(", "),
        values
            .iter()
            .map(u16::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    );
    let mut sw = Sweep {
        values: values.to_vec(),
        rounds,
        messages,
        points: Vec::new(),
    };
    for &p in values {
        for m in anchors {
            sw.points.push(SweepPoint {
                mode: m.name().into(),
                prefetch: p,
                rounds: Vec::new(),
            });
        }
        for round in 1..=rounds {
            for &m in anchors {
                let opts = RoundOpts {
                    count: messages,
                    prefetch: p,
                    rate: None,
                    sample_rss: false,
                };
                let what = format!("sweep{round}-{}-p{p}", m.short());
                let (r, _, _) = bench.round(m, round, &what, opts).await;
                print_round(&format!("{} [sweep, prefetch {p}]", m.name()), &r);
                if let Some(point) = sw
                    .points
                    .iter_mut()
                    .find(|x| x.mode == m.name() && x.prefetch == p)
                {
                    point.rounds.push(r);
                }
            }
        }
    }
    sw
}
