//! The comparison (the default run): direct, raw pipe, shovel and lienthong alternated round by
//! round, then the HTTP adapter end to end, then the paced runs.

use crate::args::BenchArgs;
use crate::backlog::backlog;
use crate::broker;
use crate::report::{Header, ModeRuns, Results};
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
    let plugin = if args.wants("shovel") {
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
                "{} was disabled: the bench enabled it for the shovel mode and disabled it again at the end",
                broker::SHOVEL
            ));
            None
        }
        broker::ShovelPlugin::Unavailable(why) => {
            if args.wants("shovel") {
                header.notes.push(format!("shovel mode skipped: {why}"));
            }
            Some(why.clone())
        }
    };
    let modes = [Mode::Direct, Mode::Pipe, Mode::Shovel, Mode::Lienthong];
    let mut runs: Vec<ModeRuns> = modes
        .iter()
        .map(|m| ModeRuns {
            name: m.name().into(),
            what: m.what().into(),
            rounds: Vec::new(),
            skipped: if args.wants(short(*m)) {
                (*m == Mode::Shovel).then(|| shovel_skip.clone()).flatten()
            } else {
                Some("not selected (--modes)".into())
            },
        })
        .collect();
    let opts = RoundOpts {
        count: args.messages,
        rate: None,
        sample_rss: false,
    };
    for round in 1..=args.rounds {
        eprintln!("round {round}/{}", args.rounds);
        for (m, runs) in modes.iter().zip(runs.iter_mut()) {
            if runs.skipped.is_some() {
                continue;
            }
            let (r, _, _) = bench
                .round(*m, round, &format!("r{round}-{}", short(*m)), opts)
                .await;
            print_round(*m, &r);
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
                    rate: None,
                    sample_rss: false,
                },
            )
            .await;
        print_round(Mode::Http, &r);
        results.http = Some(ModeRuns {
            name: Mode::Http.name().into(),
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
    for &m in paced {
        eprintln!(
            "paced: {} at {} msg/s for {} s",
            m.name(),
            args.paced_rate,
            args.paced_seconds
        );
        let (r, _, _) = bench
            .round(
                m,
                1,
                &format!("paced-{}", short(m)),
                RoundOpts {
                    count: paced_count,
                    rate: Some(args.paced_rate),
                    sample_rss: false,
                },
            )
            .await;
        print_round(m, &r);
        results.paced.push(ModeRuns {
            name: format!("{} (paced)", m.name()),
            what: m.what().into(),
            rounds: vec![r],
            skipped: None,
        });
    }
    Ok(())
}

/// The mode's short name: `--modes` and the working directories' names.
pub(crate) fn short(m: Mode) -> &'static str {
    match m {
        Mode::Direct => "direct",
        Mode::Pipe => "pipe",
        Mode::Shovel => "shovel",
        Mode::Lienthong => "lienthong",
        Mode::Http => "http",
    }
}
