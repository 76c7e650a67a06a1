//! The process's Prometheus recorder: histogram buckets and the handle `/metrics` renders.
//! Every metric the bus exports is listed in docs/operators.md (Metrics).

/// Bucket bounds (upper, seconds) of `lienthong_router_stage_seconds`: fine below 50 ms, where
/// a stage normally lies (the paced hop target is 25 ms, a bound), coarse up to the 10 s of a
/// broker stall. A histogram, not a summary, so that Prometheus can aggregate it across router
/// processes and compute quantiles over any window (`histogram_quantile`).
pub const STAGE_BUCKETS_S: &[f64] = &[
    0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.025, 0.03, 0.04, 0.05, 0.075,
    0.1, 0.15, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Bucket bounds (upper, seconds) of `lienthong_agency_call_seconds`: an agency's system answers
/// in tens of milliseconds to tens of seconds (`timeout_ms` defaults to 10 s).
pub const CALL_BUCKETS_S: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

/// Bucket bounds of `lienthong_store_batch_writes` (writes per group commit, at most 256).
pub const BATCH_BUCKETS: &[f64] = &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0];

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
            let full = |name: &str| metrics_exporter_prometheus::Matcher::Full(name.into());
            metrics_exporter_prometheus::PrometheusBuilder::new()
                .set_buckets_for_metric(full("lienthong_router_stage_seconds"), STAGE_BUCKETS_S)
                .ok()?
                .set_buckets_for_metric(
                    full(lienthong_adapters::http::AGENCY_CALL_SECONDS),
                    CALL_BUCKETS_S,
                )
                .ok()?
                .set_buckets_for_metric(
                    full(lienthong_core::store::writer::STORE_COMMIT_SECONDS),
                    STAGE_BUCKETS_S,
                )
                .ok()?
                .set_buckets_for_metric(
                    full(lienthong_core::store::writer::STORE_BATCH_WRITES),
                    BATCH_BUCKETS,
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
