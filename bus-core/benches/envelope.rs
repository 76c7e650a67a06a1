//! Benchmarks envelope ingress: `EnvelopeValidator::accept` and `normalize_nfc` on sample
//! dossiers, and `FilingSchemas::check` (a filing against its procedure's data schema, what the
//! router adds for a centre's filing), and `json_shape_within` alone (the depth and node bound
//! `accept` runs before parsing).
//!
//! Inputs come from `schemas/samples/dossiers.jsonl`, read when the bench starts. They are the
//! first birth dossier (`1.001193`), the first birth dossier whose names are in NFD, the largest
//! line, and the first birth dossier rebuilt as a text-only envelope of about 5 KiB of Vietnamese
//! text (attachments left out, a `data.ghi_chu` note added). The validator is built as
//! `src/run.rs` builds it, from the shipped configuration. Each `accept` benchmark reports
//! envelopes/s and MiB/s.
//!
//! Run: `cargo bench -p lienthong-core --bench envelope` (add `-- --quick` for a short run).

mod common;

use std::hint::black_box;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use lienthong_core::envelope::{EnvelopeValidator, json_shape_within, normalize_nfc};
use lienthong_core::filing::FilingSchemas;
use lienthong_core::registry::{DEFAULT_CONFIG, Registry, Settings};
use serde_json::Value;
use unicode_normalization::{UnicodeNormalization, is_nfc};

/// Size the padded envelope is brought to, in bytes of JSON.
const PADDED_BYTES: usize = 5 * 1024;

/// One paragraph of the note that pads the text-only envelope.
const NOTE: &str = "Công dân đề nghị đăng ký khai sinh cho trẻ, đăng ký thường trú tại nơi cư trú \
    của cha mẹ và cấp thẻ bảo hiểm y tế cho trẻ em dưới sáu tuổi. Hồ sơ gồm tờ khai đăng ký khai \
    sinh, giấy chứng sinh do bệnh viện cấp và giấy chứng nhận kết hôn của cha mẹ; cán bộ một cửa \
    đã kiểm tra đầy đủ thành phần, đối chiếu bản chính và hướng dẫn người nộp theo dõi kết quả. ";

fn parse(line: &str) -> Value {
    serde_json::from_str(line).expect("a sample line is JSON")
}

fn is_birth(v: &Value) -> bool {
    v["ma_tthc"] == "1.001193"
}

fn applicant_is_nfd(v: &Value) -> bool {
    v["payload"]["applicant"]["ho_ten"]
        .as_str()
        .is_some_and(|n| !is_nfc(n))
}

/// The birth envelope without attachments, with a Vietnamese note that brings it to about
/// [`PADDED_BYTES`].
fn padded(birth: &Value) -> Vec<u8> {
    let mut v = birth.clone();
    if let Some(o) = v.as_object_mut() {
        o.remove("attachments");
    }
    let mut note = String::new();
    loop {
        v["payload"]["data"]["ghi_chu"] = Value::String(note.clone());
        let len = serde_json::to_vec(&v).expect("serialises").len();
        if len >= PADDED_BYTES {
            break;
        }
        let missing = PADDED_BYTES - len;
        if missing >= NOTE.len() {
            note.push_str(NOTE);
        } else {
            // Cut on a character boundary.
            let cut = (0..=missing)
                .rev()
                .find(|&i| NOTE.is_char_boundary(i))
                .unwrap_or(0);
            note.push_str(&NOTE[..cut]);
            v["payload"]["data"]["ghi_chu"] = Value::String(note);
            break;
        }
    }
    serde_json::to_vec(&v).expect("serialises")
}

/// Every string (keys and values) in NFD.
fn to_nfd(v: &mut Value) {
    match v {
        Value::String(s) => *s = s.nfd().collect(),
        Value::Array(a) => a.iter_mut().for_each(to_nfd),
        Value::Object(m) => {
            let old = std::mem::take(m);
            for (k, mut x) in old {
                to_nfd(&mut x);
                m.insert(k.nfd().collect(), x);
            }
        }
        _ => {}
    }
}

fn accept(c: &mut Criterion) {
    let settings = Settings::from_toml(DEFAULT_CONFIG, false).expect("shipped config");
    let validator = EnvelopeValidator::new(&settings.envelope).expect("validator");

    let lines = common::sample_lines();
    let values: Vec<Value> = lines.iter().map(|l| parse(l)).collect();
    let first_birth = values.iter().position(is_birth).expect("a birth dossier");
    let nfd_birth = values
        .iter()
        .position(|v| is_birth(v) && applicant_is_nfd(v))
        .expect("a birth dossier with NFD names");
    let largest = (0..lines.len())
        .max_by_key(|&i| lines[i].len())
        .expect("sample lines");

    let inputs: Vec<(&str, Vec<u8>)> = vec![
        ("birth", lines[first_birth].clone().into_bytes()),
        ("birth_nfd", lines[nfd_birth].clone().into_bytes()),
        ("largest_line", lines[largest].clone().into_bytes()),
        ("padded_5k_vietnamese", padded(&values[first_birth])),
    ];

    for (name, body) in &inputs {
        eprintln!("input {name}: {} bytes", body.len());
    }
    let mut g = c.benchmark_group("accept");
    for (name, body) in &inputs {
        if let Err(r) = validator.accept(body) {
            panic!("sample {name} is refused: {r}");
        }
        g.throughput(Throughput::ElementsAndBytes {
            elements: 1,
            bytes: body.len() as u64,
        });
        g.bench_function(*name, |b| {
            b.iter(|| validator.accept(black_box(body)).expect("accepted"))
        });
    }
    g.finish();

    // The depth / node bound alone (`json_shape_within`, part of `accept` above): its share.
    let mut g = c.benchmark_group("json_shape");
    for (name, body) in &inputs {
        g.throughput(Throughput::Bytes(body.len() as u64));
        g.bench_function(*name, |b| {
            b.iter(|| json_shape_within(black_box(body), 32, 100_000).expect("within"))
        });
    }
    g.finish();

    // The same ~5 KiB of Vietnamese text, parsed, once in NFC and once decomposed.
    let nfc: Value = serde_json::from_slice(&inputs[3].1).expect("JSON");
    let mut nfd = nfc.clone();
    to_nfd(&mut nfd);
    assert!(
        normalize_nfc(&mut nfd.clone()),
        "the decomposed payload needs normalising"
    );
    let mut g = c.benchmark_group("normalize_nfc");
    for (name, v) in [("already_nfc", &nfc), ("decomposed_nfd", &nfd)] {
        g.throughput(Throughput::ElementsAndBytes {
            elements: 1,
            bytes: serde_json::to_vec(v).expect("serialises").len() as u64,
        });
        g.bench_function(name, |b| {
            b.iter_batched_ref(
                || v.clone(),
                |v| normalize_nfc(black_box(v)),
                BatchSize::SmallInput,
            )
        });
    }
    g.finish();

    // A filing against its procedure's data schema (valid: the router's usual case), for the
    // first sample of each flow and the padded birth envelope.
    let schemas = FilingSchemas::load(&settings).expect("procedure schemas");
    let registry = Registry::new(&settings);
    let mut filings: Vec<(String, lienthong_core::Envelope)> = ["1.001193", "1.011537", "1.010059"]
        .iter()
        .map(|tthc| {
            let line = values
                .iter()
                .position(|v| v["ma_tthc"] == *tthc)
                .expect("a sample of the flow");
            let env = validator.accept(lines[line].as_bytes()).expect("accepted");
            (format!("{tthc}_sample"), env)
        })
        .collect();
    filings.push((
        "1.001193_padded_5k".into(),
        validator.accept(&inputs[3].1).expect("accepted"),
    ));
    let mut g = c.benchmark_group("filing_check");
    for (name, env) in &filings {
        schemas
            .check(&registry, env)
            .unwrap_or_else(|r| panic!("sample {name} is refused: {r}"));
        g.throughput(Throughput::Elements(1));
        g.bench_function(name.as_str(), |b| {
            b.iter(|| schemas.check(&registry, black_box(env)).expect("valid"))
        });
    }
    g.finish();
}

criterion_group!(benches, accept);
criterion_main!(benches);
