//! The router's stage times: `lienthong run`'s `lienthong_router_stage_seconds` histogram read
//! from its `/metrics` at the end of a round, its quantiles, and the report's "Router stages"
//! section.

use std::fmt::Write as _;

use crate::measures::{ModeRuns, StageTimes};

/// The bucket bounds (seconds) as the report says them: "0.5, 1, 2 … 500 ms, 1, 2.5 … 10 s".
fn bucket_bounds_text(bounds_s: &[f64]) -> String {
    let ms: Vec<String> = bounds_s
        .iter()
        .filter(|b| **b < 1.0)
        .map(|b| format!("{}", (b * 1e6).round() / 1e3))
        .collect();
    let s: Vec<String> = bounds_s
        .iter()
        .filter(|b| **b >= 1.0)
        .map(|b| format!("{b}"))
        .collect();
    match (ms.is_empty(), s.is_empty()) {
        (false, false) => format!("{} ms, {} s", ms.join(", "), s.join(", ")),
        (false, true) => format!("{} ms", ms.join(", ")),
        (true, _) => format!("{} s", s.join(", ")),
    }
}

/// The quantile `q` (0 to 1) of a Prometheus histogram given as its cumulative buckets
/// (upper bound, count) sorted by bound, the last one `+Inf`: the estimate Prometheus's
/// `histogram_quantile` makes, linear within the bucket the rank falls in (from 0 for the
/// first bucket); the highest finite bound when the rank falls in the `+Inf` bucket. NaN
/// for an empty histogram.
pub fn bucket_quantile(buckets: &[(f64, u64)], q: f64) -> f64 {
    let Some(&(_, total)) = buckets.last() else {
        return f64::NAN;
    };
    if total == 0 {
        return f64::NAN;
    }
    let rank = q * total as f64;
    let (mut lower, mut below) = (0.0, 0u64);
    for &(upper, count) in buckets {
        if count as f64 >= rank && count > below {
            if upper.is_infinite() {
                return lower;
            }
            return lower + (upper - lower) * (rank - below as f64) / (count - below) as f64;
        }
        (lower, below) = (upper, count);
    }
    lower
}

/// The router's stages from Prometheus text: the histogram lines
/// `lienthong_router_stage_seconds_bucket{stage="S",le="B"} N` (cumulative counts, bounds in
/// seconds), whose `+Inf` bucket is the stage's count. Stages without messages are left out.
pub fn parse_stages(text: &str) -> Vec<StageTimes> {
    const BUCKET: &str = "lienthong_router_stage_seconds_bucket{";
    let label = |l: &str, key: &str| -> Option<String> {
        let start = l.find(&format!("{key}=\""))? + key.len() + 2;
        let end = l[start..].find('"')? + start;
        Some(l[start..end].to_string())
    };
    let mut stages: Vec<(String, Vec<(f64, u64)>)> = Vec::new();
    for line in text.lines() {
        let Some((series, value)) = line.rsplit_once(' ') else {
            continue;
        };
        if !series.starts_with(BUCKET) {
            continue;
        }
        let (Some(stage), Some(le), Ok(count)) = (
            label(series, "stage"),
            label(series, "le"),
            value.parse::<f64>(),
        ) else {
            continue;
        };
        let bound = if le == "+Inf" {
            f64::INFINITY
        } else {
            match le.parse::<f64>() {
                Ok(b) => b,
                Err(_) => continue,
            }
        };
        match stages.iter_mut().find(|(s, _)| *s == stage) {
            Some((_, b)) => b.push((bound, count as u64)),
            None => stages.push((stage, vec![(bound, count as u64)])),
        }
    }
    let mut out: Vec<StageTimes> = stages
        .into_iter()
        .filter_map(|(stage, mut b)| {
            b.sort_by(|x, y| x.0.total_cmp(&y.0));
            let count = b.last().map(|x| x.1).unwrap_or(0);
            (count > 0).then(|| StageTimes {
                stage,
                count,
                p50_ms: bucket_quantile(&b, 0.5) * 1000.0,
                p90_ms: bucket_quantile(&b, 0.9) * 1000.0,
                p99_ms: bucket_quantile(&b, 0.99) * 1000.0,
                bounds_s: b.iter().map(|x| x.0).filter(|x| x.is_finite()).collect(),
            })
        })
        .collect();
    // The exporter's order is arbitrary; the report lists the stages in the message's order.
    let rank = |s: &StageTimes| {
        ["store_write", "publish_confirm", "trace_write"]
            .iter()
            .position(|x| *x == s.stage)
            .unwrap_or(3)
    };
    out.sort_by_key(rank);
    out
}

/// The "Router stages" section of the modes that read the router's stages (None when none
/// did).
pub fn section<'a>(modes: impl Iterator<Item = &'a ModeRuns>) -> Option<String> {
    let with_stages: Vec<&ModeRuns> = modes
        .filter(|m| m.rounds.iter().any(|x| !x.stages.is_empty()))
        .collect();
    // The bounds `lienthong run` defines (`lienthong::run::STAGE_BUCKETS_S`), as its
    // `/metrics` gave them.
    let bounds = with_stages
        .iter()
        .flat_map(|m| m.rounds.iter())
        .flat_map(|x| x.stages.iter())
        .map(|st| st.bounds_s.as_slice())
        .find(|b| !b.is_empty())
        .unwrap_or_default();
    if with_stages.is_empty() {
        return None;
    }
    {
        let mut s = format!(
            "What a routed message waits for in `lienthong run`, from its \
                 `lienthong_router_stage_seconds` histogram on `/metrics`, read at the end of each \
                 round (a fresh process per round, so the whole round, warm-up included): the \
                 quantiles are estimated from the buckets as Prometheus's `histogram_quantile` \
                 does (linear within a bucket; bounds {}): `store_write`, \
                 the message store's group commit (beside the publish, except a centre's first \
                 forward); `publish_confirm`, publish to the unit's queue until the broker's \
                 confirm; `trace_write`, the trace events' commit before the ack.\n\n\
                 | mode | round | stage | messages | p50 ms | p90 ms | p99 ms |\n|---|---:|---|---:|---:|---:|---:|\n",
            bucket_bounds_text(bounds)
        );
        for mr in with_stages {
            for x in &mr.rounds {
                for st in &x.stages {
                    let _ = writeln!(
                        s,
                        "| {} | {} | {} | {} | {:.3} | {:.3} | {:.3} |",
                        mr.name, x.round, st.stage, st.count, st.p50_ms, st.p90_ms, st.p99_ms
                    );
                }
            }
        }
        Some(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The report names the router's histogram buckets as `lienthong run` defines them
    /// (`lienthong::run::STAGE_BUCKETS_S`).
    #[test]
    fn the_bucket_bounds_are_said_in_ms_then_s() {
        let bounds = [
            0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.025, 0.03, 0.04, 0.05,
            0.075, 0.1, 0.15, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
        ];
        assert_eq!(
            bucket_bounds_text(&bounds),
            "0.5, 1, 2, 3, 5, 7.5, 10, 15, 20, 25, 30, 40, 50, 75, 100, 150, 250, 500 ms, 1, 2.5, 5, 10 s"
        );
    }

    #[test]
    fn router_stages_from_prometheus_text() {
        let text = "# TYPE lienthong_router_stage_seconds histogram
lienthong_router_stage_seconds_bucket{stage=\"publish_confirm\",le=\"0.005\"} 400
lienthong_router_stage_seconds_bucket{stage=\"publish_confirm\",le=\"0.01\"} 900
lienthong_router_stage_seconds_bucket{stage=\"publish_confirm\",le=\"0.025\"} 990
lienthong_router_stage_seconds_bucket{stage=\"publish_confirm\",le=\"+Inf\"} 1000
lienthong_router_stage_seconds_sum{stage=\"publish_confirm\"} 7.5
lienthong_router_stage_seconds_count{stage=\"publish_confirm\"} 1000
lienthong_router_stage_seconds_bucket{stage=\"trace_write\",le=\"0.005\"} 0
lienthong_router_stage_seconds_bucket{stage=\"trace_write\",le=\"+Inf\"} 0
lienthong_process_alerts_open{level=\"overdue\"} 2
";
        let st = parse_stages(text);
        assert_eq!(st.len(), 1, "{st:?}");
        assert_eq!(st[0].stage, "publish_confirm");
        assert_eq!(st[0].count, 1000);
        assert_eq!(st[0].bounds_s, [0.005, 0.01, 0.025]);
        // Rank 500 lies in (5, 10] ms, 100 of its 500: 5 + 5 × 100/500 = 6 ms.
        assert!((st[0].p50_ms - 6.0).abs() < 1e-9, "{st:?}");
        // Rank 900 is the top of (5, 10] ms.
        assert!((st[0].p90_ms - 10.0).abs() < 1e-9, "{st:?}");
        // Rank 990 is the top of (10, 25] ms.
        assert!((st[0].p99_ms - 25.0).abs() < 1e-9, "{st:?}");
    }

    #[test]
    fn a_quantile_in_the_overflow_bucket_is_the_highest_finite_bound() {
        let b = [(0.001, 10), (0.002, 20), (f64::INFINITY, 100)];
        assert!((bucket_quantile(&b, 0.99) - 0.002).abs() < 1e-12);
        // Rank 5 of the first bucket: 0 + 1 ms × 5/10.
        assert!((bucket_quantile(&b, 0.05) - 0.0005).abs() < 1e-12);
        assert!(bucket_quantile(&[(f64::INFINITY, 0)], 0.5).is_nan());
        assert!(bucket_quantile(&[], 0.5).is_nan());
    }
}
