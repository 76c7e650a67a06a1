//! Benchmarks the message store's body compression (`store::body_codec`): `encode` (zstd level
//! 1, what `MessageWriter::accept` adds to the router's hop) and `decode` (what `messages list`
//! and `resend` add per body) on sample dossiers, and prints how much each input shrinks.
//!
//! Inputs come from `schemas/samples/dossiers.jsonl`: the first birth dossier (`1.001193`, with
//! its inline base64 attachment), the largest line, and all lines one after the other (each
//! compressed alone, as the store does). Each benchmark reports MiB/s of the body as routed.
//!
//! Run: `cargo bench -p lienthong-core --bench body_codec` (add `-- --quick` for a short run).

mod common;

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use lienthong_core::store::BodyCompression;
use lienthong_core::store::body_codec::{decode, encode};

fn bench(c: &mut Criterion) {
    let lines = common::sample_lines();
    let birth = lines
        .iter()
        .find(|l| l.contains("\"ma_tthc\":\"1.001193\""))
        .expect("a birth dossier");
    let largest = lines.iter().max_by_key(|l| l.len()).expect("a line");
    let inputs: [(&str, Vec<&[u8]>); 3] = [
        ("birth", vec![birth.as_bytes()]),
        ("largest", vec![largest.as_bytes()]),
        ("all", lines.iter().map(|l| l.as_bytes()).collect()),
    ];
    let mut g = c.benchmark_group("body_codec");
    for (name, bodies) in &inputs {
        let raw: usize = bodies.iter().map(|b| b.len()).sum();
        let packed: Vec<(Vec<u8>, Option<&'static str>)> = bodies
            .iter()
            .map(|b| match encode(b, BodyCompression::Zstd) {
                Some((p, e)) => (p, Some(e)),
                None => (b.to_vec(), None),
            })
            .collect();
        let kept: usize = packed.iter().map(|(p, _)| p.len()).sum();
        println!(
            "{name}: {} bodies, {raw} bytes as routed, {kept} kept: {:.2}-fold",
            bodies.len(),
            raw as f64 / kept as f64
        );
        g.throughput(Throughput::Bytes(raw as u64));
        g.bench_function(format!("encode/{name}"), |b| {
            b.iter(|| {
                for body in bodies {
                    black_box(encode(black_box(body), BodyCompression::Zstd));
                }
            })
        });
        g.bench_function(format!("decode/{name}"), |b| {
            b.iter(|| {
                for (p, e) in &packed {
                    black_box(decode(black_box(p.clone()), *e).expect("decodes"));
                }
            })
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
