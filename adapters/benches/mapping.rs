//! Benchmarks the agency mappings: envelope → agency document, and agency callback → bus terms.
//!
//! The adapters are built with the shipped settings (`deploy/config/quang-ngai.toml`: `CA.H48`,
//! `BHXH.H48`, `CT.H48`, and `000.10.61.H48`, the Đức Phổ civil-status office connected by the
//! config-only `mapped` adapter). No call leaves the process: only the document builders
//! and the callback parsers run. Envelopes are lines of `schemas/samples/dossiers.jsonl` put
//! through the ingress validator: the first birth dossier (`1.001193`) for Police and BHXH, the
//! first birth dossier addressed to `000.10.61.H48` for `mapped`, the first land dossier
//! (`1.010059`) for Tax. Callbacks are the reference examples in `schemas/agencies/`, and for
//! `mapped` the civil-status answer of `tests/mapped.rs`. Each benchmark reports documents/s.
//!
//! Run: `cargo bench -p lienthong-adapters --bench mapping` (add `-- --quick` for a short run).

use std::hint::black_box;
use std::path::Path;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use lienthong_adapters::Adapter;
use lienthong_adapters::bhxh_xml::BhxhXml;
use lienthong_adapters::http::{Agent, ConnectionOptions};
use lienthong_adapters::mapped::Mapped;
use lienthong_adapters::police_rest::PoliceRest;
use lienthong_adapters::tax_xml::TaxXml;
use lienthong_core::Envelope;
use lienthong_core::envelope::EnvelopeValidator;
use lienthong_core::registry::{DEFAULT_CONFIG, Reach, Settings};
use serde_json::{Map, Value, json};

/// The bus's public base URL in the callback URLs the documents carry.
const CALLBACK_BASE: &str = "http://127.0.0.1:8480";

fn repo_file(rel: &str) -> Vec<u8> {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(rel);
    std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// The first sample envelope that `pick` chooses, as the ingress validator hands it on.
fn sample(validator: &EnvelopeValidator, what: &str, pick: impl Fn(&Value) -> bool) -> Envelope {
    let text = String::from_utf8(repo_file("schemas/samples/dossiers.jsonl")).expect("UTF-8");
    let line = text
        .lines()
        .find(|l| serde_json::from_str::<Value>(l).is_ok_and(|v| pick(&v)))
        .unwrap_or_else(|| panic!("no {what} in dossiers.jsonl"));
    validator
        .accept(line.as_bytes())
        .unwrap_or_else(|r| panic!("{what}: {r}"))
}

/// A shipped unit's adapter settings, endpoint, callback URL and HTTP agent (as
/// `lienthong_adapters::build` makes them).
fn reach(s: &Settings, code: &str) -> (Map<String, Value>, String, String, Agent) {
    let unit = s
        .units
        .iter()
        .find(|u| u.code == code)
        .unwrap_or_else(|| panic!("unit {code} in the shipped config"));
    let Reach::Adapter {
        endpoint,
        timeout_ms,
        settings,
        ..
    } = &unit.reach
    else {
        panic!("unit {code} is not reached by an adapter");
    };
    let options = ConnectionOptions::from_settings(settings).expect("connection options");
    let agent = Agent::for_agency(*timeout_ms, &options).expect("HTTP agent");
    (
        settings.clone(),
        endpoint.clone(),
        format!("{CALLBACK_BASE}/v1/callbacks/{code}"),
        agent,
    )
}

fn mapping(c: &mut Criterion) {
    let s = Settings::from_toml(DEFAULT_CONFIG, false).expect("shipped config");
    let validator = EnvelopeValidator::new(&s.envelope).expect("validator");
    let birth = sample(&validator, "birth dossier", |v| v["ma_tthc"] == "1.001193");
    let birth_duc_pho = sample(&validator, "birth dossier to 000.10.61.H48", |v| {
        v["ma_tthc"] == "1.001193" && v["receiver"] == "000.10.61.H48"
    });
    let land = sample(&validator, "land dossier", |v| v["ma_tthc"] == "1.010059");

    let (settings, endpoint, callback, agent) = reach(&s, "CA.H48");
    let police = PoliceRest::new(agent, &endpoint, &callback, settings);
    let (settings, endpoint, callback, agent) = reach(&s, "BHXH.H48");
    let bhxh = BhxhXml::new(agent, &endpoint, &callback, settings);
    let (_, endpoint, callback, agent) = reach(&s, "CT.H48");
    let tax = TaxXml::new(agent, &endpoint, &callback);
    let (settings, endpoint, callback, agent) = reach(&s, "000.10.61.H48");
    let mapped = Mapped::new(agent, &endpoint, &callback, &settings).expect("mapped settings");

    let police_callback = repo_file("schemas/agencies/police-residence/examples/callback.json");
    let bhxh_callback = repo_file("schemas/agencies/bhxh/examples/callback.xml");
    let mapped_callback = json!({
        "MaHoSo": birth_duc_pho.ma_ho_so, "MaThamChieu": birth_duc_pho.message_id,
        "MaTiepNhan": "HT-1", "KetQua": "DA_DANG_KY", "SoDangKy": "123/2026",
        "QuyenSo": "01/2026", "NgayDangKy": "20261129", "CanBo": "Lê Thị Hộ Tịch"
    })
    .to_string()
    .into_bytes();

    // Every input maps: a benchmark of an error path would measure the wrong thing.
    police.submit_body(&birth).expect("police body");
    bhxh.submit_body(&birth).expect("bhxh body");
    tax.form(&land).expect("tax form");
    mapped.body(&birth_duc_pho).expect("mapped body");
    police
        .parse_callback(Some("application/json"), &police_callback)
        .expect("police callback");
    bhxh.parse_callback(Some("application/xml"), &bhxh_callback)
        .expect("bhxh callback");
    mapped
        .parse_callback(Some("application/json"), &mapped_callback)
        .expect("mapped callback");

    let mut g = c.benchmark_group("mapping");
    g.throughput(Throughput::Elements(1));
    // The JSON body as it goes on the wire (reqwest serialises the Value the same way).
    g.bench_function("police_rest/submit_body", |b| {
        b.iter(|| {
            let v = police.submit_body(black_box(&birth)).expect("body");
            serde_json::to_vec(&v).expect("serialises")
        })
    });
    g.bench_function("bhxh_xml/submit_body", |b| {
        b.iter(|| bhxh.submit_body(black_box(&birth)).expect("body"))
    });
    g.bench_function("tax_xml/form", |b| {
        b.iter(|| tax.form(black_box(&land)).expect("form"))
    });
    g.bench_function("mapped/body", |b| {
        b.iter(|| mapped.body(black_box(&birth_duc_pho)).expect("body"))
    });
    g.bench_function("police_rest/parse_callback", |b| {
        b.iter(|| {
            police
                .parse_callback(Some("application/json"), black_box(&police_callback))
                .expect("callback")
        })
    });
    g.bench_function("bhxh_xml/parse_callback", |b| {
        b.iter(|| {
            bhxh.parse_callback(Some("application/xml"), black_box(&bhxh_callback))
                .expect("callback")
        })
    });
    g.bench_function("mapped/parse_callback", |b| {
        b.iter(|| {
            mapped
                .parse_callback(Some("application/json"), black_box(&mapped_callback))
                .expect("callback")
        })
    });
    g.finish();
}

criterion_group!(benches, mapping);
criterion_main!(benches);
