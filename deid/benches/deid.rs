//! Safe Harbor throughput on real-shaped data: the Synthea bulk-data-server export (100 patients,
//! 20 NDJSON files, 19 resource types), decompressed into memory once.
//!
//! Three benchmarks over the same lines, in bytes of NDJSON per second:
//!
//! * `parse+serialize`: `serde_json` parse and serialize only, the floor of any pipeline stage;
//! * `parse+safe-harbor+serialize`: the same with the built-in `safe-harbor` profile in between;
//! * `safe-harbor only`: de-identification of already parsed resources (the clone that feeds
//!   each iteration is not timed), the cost of the stage alone.
//!
//! By default every 4th resource of every file is used (about 12 MB, the export's mix of types);
//! `DEID_BENCH_STRIDE=1` takes all 49 MB. Run with
//! `cargo bench -p fhirlake-deid --bench deid -- --warm-up-time 1 --measurement-time 5`.

use std::hint::black_box;
use std::io::Read as _;
use std::path::PathBuf;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use fhirlake_deid::{DeidKey, Deidentifier, Disposition, Policy, PolicyEngine};
use serde_json::Value;

const EXPORT: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../shared/data/synthea/bulk-data-server-100-patients"
);

/// Every `stride`-th line of every NDJSON file of the export, in file order.
fn load_lines(stride: usize) -> Vec<String> {
    let dir = PathBuf::from(EXPORT);
    let listing = std::fs::read_dir(&dir).unwrap_or_else(|e| {
        panic!(
            "the Synthea benchmark data is missing: {} ({e})",
            dir.display()
        )
    });
    let mut files: Vec<PathBuf> = listing
        .map(|e| e.expect("readable directory entry").path())
        .filter(|p| p.to_string_lossy().ends_with(".ndjson.gz"))
        .collect();
    files.sort();
    assert!(
        !files.is_empty(),
        "no .ndjson.gz files in {}",
        dir.display()
    );
    let mut lines = Vec::new();
    for path in files {
        let raw = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let mut text = String::new();
        flate2::read::GzDecoder::new(&raw[..])
            .read_to_string(&mut text)
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        lines.extend(
            text.lines()
                .filter(|l| !l.trim().is_empty())
                .step_by(stride)
                .map(str::to_string),
        );
    }
    lines
}

fn engine() -> PolicyEngine {
    let key = DeidKey::from_bytes(&[7u8; 32], "bench").expect("a 32-byte key");
    PolicyEngine::new(Policy::builtin("safe-harbor").expect("built-in"), key)
        .with_today(chrono::NaiveDate::from_ymd_opt(2026, 11, 25).expect("a date"))
}

fn bench(c: &mut Criterion) {
    let stride = std::env::var("DEID_BENCH_STRIDE")
        .ok()
        .and_then(|s| s.parse().ok())
        .filter(|&s: &usize| s > 0)
        .unwrap_or(4);
    let lines = load_lines(stride);
    // NDJSON bytes, newlines included.
    let bytes: u64 = lines.iter().map(|l| l.len() as u64 + 1).sum();
    let engine = engine();
    let parsed: Vec<Value> = lines
        .iter()
        .map(|l| serde_json::from_str(l).expect("valid JSON"))
        .collect();
    eprintln!(
        "deid bench: {} resources, {:.1} MB of NDJSON (1 in {stride} lines of every file of {EXPORT})",
        lines.len(),
        bytes as f64 / 1e6
    );

    let mut group = c.benchmark_group("safe-harbor");
    group.throughput(Throughput::Bytes(bytes));
    let mut out = Vec::with_capacity(1 << 20);

    group.bench_function("parse+serialize", |b| {
        b.iter(|| {
            out.clear();
            for line in &lines {
                let value: Value = serde_json::from_str(line).expect("valid JSON");
                serde_json::to_writer(&mut out, &value).expect("serializable");
                out.push(b'\n');
            }
            black_box(out.len())
        })
    });

    group.bench_function("parse+safe-harbor+serialize", |b| {
        b.iter(|| {
            out.clear();
            for line in &lines {
                let mut value: Value = serde_json::from_str(line).expect("valid JSON");
                if let Ok(Disposition::Keep) = engine.deidentify(&mut value) {
                    serde_json::to_writer(&mut out, &value).expect("serializable");
                    out.push(b'\n');
                }
            }
            black_box(out.len())
        })
    });

    group.bench_function("safe-harbor only", |b| {
        b.iter_batched(
            || parsed.clone(),
            |mut values| {
                for value in &mut values {
                    black_box(engine.deidentify(value).ok());
                }
                values
            },
            BatchSize::PerIteration,
        )
    });
    group.finish();
}

criterion_group! {
    name = benches;
    // One iteration de-identifies ~12 MB: ten samples are plenty.
    config = Criterion::default().sample_size(10);
    targets = bench
}
criterion_main!(benches);
