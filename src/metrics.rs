//! The process's Prometheus recorder: histogram buckets and the handle `/metrics` renders.

/// Bucket bounds (upper, seconds) of `lienthong_router_stage_seconds`: fine below 50 ms, where
/// a stage normally lies (the paced hop target is 25 ms, a bound), coarse up to the 10 s of a
/// broker stall. A histogram, not a summary, so that Prometheus can aggregate it across router
/// processes and compute quantiles over any window (`histogram_quantile`).
pub const STAGE_BUCKETS_S: &[f64] = &[
    0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.025, 0.03, 0.04, 0.05, 0.075,
    0.1, 0.15, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// How often the recorder's upkeep runs (ms): it drains the samples histograms buffer between
/// two renderings into their buckets.
const METRICS_UPKEEP_MS: u64 = 5_000;

/// The process's Prometheus recorder (installed by the first [`start`]), with a thread that
/// runs its upkeep every [`METRICS_UPKEEP_MS`]: a histogram keeps every sample until upkeep or
/// a scrape drains it, so without it the process would grow by ~60 bytes per routed message
/// when nobody scrapes `/metrics`.
pub fn metrics_handle() -> Option<&'static metrics_exporter_prometheus::PrometheusHandle> {
    static HANDLE: std::sync::OnceLock<Option<metrics_exporter_prometheus::PrometheusHandle>> =
        std::sync::OnceLock::new();
    let handle = HANDLE
        .get_or_init(|| {
            metrics_exporter_prometheus::PrometheusBuilder::new()
                .set_buckets_for_metric(
                    metrics_exporter_prometheus::Matcher::Full(
                        "lienthong_router_stage_seconds".into(),
                    ),
                    STAGE_BUCKETS_S,
                )
                .ok()?
                .install_recorder()
                .ok()
        })
        .as_ref()?;
    static UPKEEP: std::sync::Once = std::sync::Once::new();
    UPKEEP.call_once(|| {
        let spawned = std::thread::Builder::new()
            .name("lienthong-metrics-upkeep".into())
            .spawn(move || {
                loop {
                    std::thread::sleep(std::time::Duration::from_millis(METRICS_UPKEEP_MS));
                    handle.run_upkeep();
                }
            });
        if let Err(e) = spawned {
            tracing::warn!(message = "cannot start the metrics upkeep thread; histograms grow until /metrics is scraped", error = %e);
        }
    });
    Some(handle)
}
