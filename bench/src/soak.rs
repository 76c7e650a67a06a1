//! `--soak N`: N messages through the router in one round, its memory sampled every second.

use crate::long_runs::Soak;
use crate::procfs;
use crate::procfs::check_disk;
use crate::results::Header;
use crate::round::{Bench, Mode, RoundOpts, print_round};

/// `--soak N`: N messages through the router with its memory sampled every second.
pub(crate) async fn soak(bench: &Bench, n: u64, header: &mut Header) -> anyhow::Result<Soak> {
    let body = bench.args.body_bytes as u64;
    let notes = check_disk(&[
        (
            bench.args.broker_data_dir.as_path(),
            n * body,
            "the broker's queue log",
        ),
        (
            bench.dir.as_path(),
            n * (body + 2048),
            "the bus's message store and trace",
        ),
    ])?;
    for note in notes {
        eprintln!("{note}");
        header.notes.push(note);
    }
    eprintln!(
        "soak: {n} messages through the router (sink concurrent, at most {} in flight)",
        bench.args.max_in_flight
    );
    let broker_before = bench
        .broker_pid
        .and_then(|p| procfs::status_kib(p, "VmRSS"));
    let (round, rss, store_bytes) = bench
        .round(
            Mode::Lienthong,
            1,
            "soak",
            RoundOpts {
                count: n,
                prefetch: bench.args.prefetch,
                rate: None,
                sample_rss: true,
            },
        )
        .await;
    print_round(Mode::Lienthong.name(), &round);
    let broker_after = bench
        .broker_pid
        .and_then(|p| procfs::status_kib(p, "VmRSS"));
    Ok(Soak {
        round,
        anon: rss.iter().map(|(t, _, a)| (*t, *a)).collect(),
        rss: rss.iter().map(|(t, k, _)| (*t, *k)).collect(),
        broker_rss: (broker_before, broker_after),
        store_bytes,
    })
}
