//! The metrics contract: after real traffic (a delivery, a retry, a dead letter, a process
//! step) the bus's `/metrics` has the message counters by unit and reason, the agencies'
//! answers by status class and call times, the store's commit times, the broker connection
//! state and the process manager's steps by timeliness; and every expression of the Grafana
//! dashboard and of the Prometheus alert rules in `deploy/` names a metric the bus exports
//! (`promtool check rules` too, where Debian's prometheus package provides promtool).

mod common;

use std::collections::BTreeSet;
use std::path::Path;

use common::*;

/// Every `lienthong_…` name in `text`, a histogram's `_bucket`/`_sum`/`_count` series named by
/// the histogram.
fn metric_names(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let bytes = text.as_bytes();
    let mut i = 0;
    while let Some(at) = text[i..].find("lienthong_") {
        let start = i + at;
        let mut end = start;
        while end < bytes.len()
            && (bytes[end].is_ascii_lowercase()
                || bytes[end].is_ascii_digit()
                || bytes[end] == b'_')
        {
            end += 1;
        }
        let name = &text[start..end];
        let base = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| name.strip_suffix(s))
            .unwrap_or(name);
        out.insert(base.to_string());
        i = end;
    }
    out
}

/// The names the scrape exports (from its `# TYPE` lines).
fn exported(scrape: &str) -> BTreeSet<String> {
    scrape
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_string)
        .collect()
}

/// The sum of the series `name{…}` whose labels include every one of `labels` (`None` when
/// there is no such series).
fn value(scrape: &str, name: &str, labels: &[&str]) -> Option<f64> {
    scrape
        .lines()
        .filter(|l| l.starts_with(&format!("{name}{{")) || l.starts_with(&format!("{name} ")))
        .filter(|l| labels.iter().all(|want| l.contains(want)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .fold(None, |sum, v| Some(sum.unwrap_or(0.0) + v))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traffic_shows_in_the_metrics_and_the_dashboard_and_alert_rules_name_only_exported_metrics()
{
    // No in-process retries: a 503 parks the message in the delayed retry queue.
    let bus = Bus::start_with("metrics", |s| {
        s.retry.max_retries = 0;
        s.retry.delays_ms = vec![500];
    })
    .await;
    answer_as_civil_status_office(&bus).await;
    // One dossier through Police after one 503; one refused (400: dead-lettered).
    let (retried, refused) = (filed_birth(9601), filed_birth(9602));
    bus.fault("police", &retried.ma_ho_so, &[503]).await;
    bus.fault("police", &refused.ma_ho_so, &[400]).await;
    bus.send(&retried).await;
    bus.send(&refused).await;
    // And one addressed to the civil-status office, which the router routes itself.
    bus.send(&birth(9603, SON_HA_CIVIL)).await;
    let scrape = eventually_async(60, || async {
        let m = bus.metrics().await;
        (value(
            &m,
            "lienthong_messages_delivered_total",
            &["unit=\"CA.H48\""],
        )
        .is_some()
            && value(
                &m,
                "lienthong_messages_dead_lettered_total",
                &["reason=\"agency-refused\"", "unit=\"CA.H48\""],
            )
            .is_some()
            && value(&m, "lienthong_process_steps_total", &[]).is_some_and(|v| v > 0.0))
        .then_some(m)
    })
    .await;
    for (name, labels) in [
        (
            "lienthong_messages_received_total",
            vec!["component=\"router\""],
        ),
        ("lienthong_messages_routed_total", vec!["unit=\"CA.H48\""]),
        ("lienthong_messages_retried_total", vec!["unit=\"CA.H48\""]),
        (
            "lienthong_messages_parked_total",
            vec!["unit=\"CA.H48\"", "delay_ms=\"500\""],
        ),
        (
            "lienthong_agency_responses_total",
            vec!["unit=\"CA.H48\"", "class=\"5xx\""],
        ),
        (
            "lienthong_agency_responses_total",
            vec!["unit=\"CA.H48\"", "class=\"2xx\""],
        ),
        (
            "lienthong_agency_responses_total",
            vec!["unit=\"CA.H48\"", "class=\"4xx\""],
        ),
        (
            "lienthong_agency_call_seconds_count",
            vec!["unit=\"CA.H48\""],
        ),
        ("lienthong_store_commit_seconds_count", vec![]),
        (
            "lienthong_router_stage_seconds_count",
            vec!["stage=\"publish_confirm\""],
        ),
        ("lienthong_broker_connected", vec!["component=\"router\""]),
        ("lienthong_process_steps_total", vec!["timeliness="]),
    ] {
        let v = value(&scrape, name, &labels);
        assert!(
            v.is_some_and(|v| v > 0.0),
            "{name}{labels:?} is counted: {v:?}\n{scrape}"
        );
    }
    let exports = exported(&scrape);
    assert!(
        exports.contains("lienthong_messages_in_flight"),
        "the consumers' in-flight gauge: {exports:?}"
    );

    // Every expression of the dashboard and of the alert rules names an exported metric.
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy");
    let dashboard: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(root.join("grafana/lienthong-dashboard.json")).expect("dashboard"),
    )
    .expect("the dashboard is JSON");
    let panels = dashboard["panels"].as_array().expect("panels");
    assert!(!panels.is_empty());
    let mut used = BTreeSet::new();
    for p in panels {
        for t in p["targets"].as_array().expect("targets") {
            let expr = t["expr"].as_str().expect("expr");
            let names = metric_names(expr);
            assert!(!names.is_empty(), "{expr} names a metric");
            used.extend(names);
        }
    }
    let rules_path = root.join("prometheus/lienthong-alerts.yml");
    let rules = std::fs::read_to_string(&rules_path).expect("rules");
    let in_rules = metric_names(
        &rules
            .lines()
            .filter(|l| !l.trim_start().starts_with('#'))
            .collect::<Vec<_>>()
            .join("\n"),
    );
    assert!(in_rules.len() >= 5, "{in_rules:?}");
    used.extend(in_rules);
    let missing: Vec<&String> = used.iter().filter(|n| !exports.contains(*n)).collect();
    assert!(
        missing.is_empty(),
        "the dashboard or the rules name metrics the bus does not export: {missing:?}\nexported: {exports:?}"
    );
    if let Ok(out) = std::process::Command::new("promtool")
        .args(["check", "rules"])
        .arg(&rules_path)
        .output()
    {
        assert!(
            out.status.success(),
            "promtool check rules: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
