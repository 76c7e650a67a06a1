//! What the benchmarks of this crate share: the sample dossiers they run on.

use std::path::Path;

/// The lines of `schemas/samples/dossiers.jsonl` (one envelope each), blank lines left out.
/// Panics when the file cannot be read: a benchmark without its inputs has nothing to measure.
pub fn sample_lines() -> Vec<String> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../schemas/samples/dossiers.jsonl");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(str::to_string)
        .collect()
}
