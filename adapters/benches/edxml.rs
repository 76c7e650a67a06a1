//! Benchmarks edXML: the streaming reader on the largest sample package, and the writer.
//!
//! The input is the largest file in `schemas/samples/edxml/` (`edoc_update.edxml`, about
//! 370 KB, nearly all of it one base64 attachment), read when the bench starts. Reading decodes
//! the attachment and hashes it (SHA-256) into a sink that keeps nothing, as the edXML adapter
//! does (`read::read_bytes`); writing encodes the same header and attachment back into a `Vec`
//! (about the same size). Both report MiB/s of package XML.
//!
//! Run: `cargo bench -p lienthong-adapters --bench edxml` (add `-- --quick` for a short run).

use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use lienthong_adapters::edxml::read::{Discard, InMemory, Limits, read};
use lienthong_adapters::edxml::write::{OutAttachment, write};

/// The largest `.edxml` file of the samples.
fn largest_sample() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../schemas/samples/edxml");
    std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "edxml"))
        .max_by_key(|p| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0))
        .expect("an edXML sample")
}

fn edxml(c: &mut Criterion) {
    let path = largest_sample();
    let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();

    // The package and its attachments' content, for the writer.
    let mut sink = InMemory::default();
    let pkg = read(&bytes[..], &mut sink, Limits::default()).expect("the sample reads");
    assert!(!pkg.attachments.is_empty(), "{name} has attachments");
    let write_once = || {
        let attachments = pkg
            .attachments
            .iter()
            .zip(&sink.0)
            .map(|(a, content)| OutAttachment {
                content_id: a.content_id.clone().unwrap_or_default(),
                attachment_name: a.attachment_name.clone().unwrap_or_default(),
                description: a.description.clone(),
                content_type: a.content_type.clone().unwrap_or_default(),
                content: Box::new(&content[..]),
            })
            .collect();
        write(&pkg, attachments, Vec::with_capacity(bytes.len() + 4096)).expect("write")
    };
    let (written, _) = write_once();
    let back = read(&written[..], &mut Discard, Limits::default()).expect("the output reads");
    assert_eq!(back.attachments, pkg.attachments, "same attachments back");

    eprintln!(
        "input {name}: {} bytes read, {} bytes written back",
        bytes.len(),
        written.len()
    );
    let mut g = c.benchmark_group("edxml");
    // A read takes over a millisecond: 100 samples need more than criterion's default 5 s.
    g.measurement_time(Duration::from_secs(10));
    g.throughput(Throughput::Bytes(bytes.len() as u64));
    g.bench_function(format!("read/{name}"), |b| {
        b.iter(|| read(black_box(&bytes[..]), &mut Discard, Limits::default()).expect("read"))
    });
    g.throughput(Throughput::Bytes(written.len() as u64));
    g.bench_function(format!("write/like_{name}"), |b| {
        b.iter(|| black_box(write_once()))
    });
    g.finish();
}

criterion_group!(benches, edxml);
criterion_main!(benches);
