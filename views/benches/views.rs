//! Materializing the built-in `observation` view from resource JSON text, in rows per second on
//! one core, beside two baselines over the same lines in the same run:
//!
//! * `serde_json::Value parse`: parsing every line into a `serde_json::Value` (what a generic
//!   interpreter over a DOM would start from);
//! * `tree parse`: parsing into the view engine's JSON tree only (a simd-json tape), the floor a view
//!   that reads whole resources cannot go below;
//! * `observation view (tree)`: the general path: the tape parse + every row of the built-in
//!   `observation` view into Arrow builders + the record batch;
//! * `observation view`: what ingest does per changed Observation
//!   (`ViewBatchBuilder::append_text`): the same rows and batch read in one pass over the text,
//!   without a tree (the view is flat; see `views/src/onepass/`);
//! * `observation_component view` and its `(tree)` twin: the same for the `forEach` view (one row
//!   per component), in Observations read per second.
//!
//! Input: every Observation of the Synthea bulk-data-server export (16,315 resources, identified
//! source data; de-identified resources in a lake are smaller, so this is the harder case). Run
//! with `cargo bench -p fhirlake-views --bench views -- --warm-up-time 1 --measurement-time 5`.

use std::hint::black_box;
use std::io::Read as _;
use std::sync::Arc;

use arrow::record_batch::RecordBatch;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use fhirlake_views::builtin::builtin_view_text;
use fhirlake_views::{CompiledView, JsonParser, ViewBatchBuilder};

const EXPORT: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../shared/data/synthea/bulk-data-server-100-patients"
);

/// Every line of the export's Observation files (gunzipped once, into memory).
fn load_lines() -> Vec<String> {
    let mut lines = Vec::new();
    for file in ["30.Observation.ndjson.gz", "32.Observation.ndjson.gz"] {
        let gz = std::fs::File::open(format!("{EXPORT}/{file}")).expect("Synthea observations");
        let mut text = String::new();
        flate2::read::GzDecoder::new(gz)
            .read_to_string(&mut text)
            .expect("gunzip observations");
        lines.extend(text.lines().map(str::to_string));
    }
    lines
}

/// Every line through the general path (tape parse + tree walk) into one batch.
fn through_the_tree(view: &Arc<CompiledView>, lines: &[String]) -> RecordBatch {
    let mut builder = ViewBatchBuilder::new(view.clone());
    let mut parser = JsonParser::default();
    for line in lines {
        parser
            .parse(line, |json| builder.append(json))
            .expect("json")
            .expect("rows");
    }
    builder.finish().expect("batch")
}

/// Every line through `append_text`, asserting that each took the one-pass path.
fn in_one_pass(view: &Arc<CompiledView>, lines: &[String]) -> RecordBatch {
    let mut builder = ViewBatchBuilder::new(view.clone());
    let mut parser = JsonParser::default();
    for line in lines {
        builder
            .append_text(line, &mut parser)
            .expect("json")
            .expect("rows");
    }
    assert_eq!(builder.text_paths().general, 0, "every line in one pass");
    builder.finish().expect("batch")
}

fn bench(c: &mut Criterion) {
    let lines = load_lines();
    let view = Arc::new(
        CompiledView::from_json_text(builtin_view_text("observation").expect("built-in"))
            .expect("observation view compiles"),
    );
    let rows = through_the_tree(&view, &lines).num_rows() as u64;
    let mut group = c.benchmark_group("views");
    group.throughput(Throughput::Elements(rows));
    group.bench_function("serde_json::Value parse", |b| {
        b.iter(|| {
            for line in &lines {
                black_box(serde_json::from_str::<serde_json::Value>(line).expect("json"));
            }
        })
    });
    group.bench_function("tree parse", |b| {
        b.iter(|| {
            let mut parser = JsonParser::default();
            for line in &lines {
                black_box(parser.parse(line, |json| json.is_null()).expect("json"));
            }
        })
    });
    group.bench_function("observation view (tree)", |b| {
        b.iter(|| black_box(through_the_tree(&view, &lines)))
    });
    group.bench_function("observation view", |b| {
        b.iter(|| black_box(in_one_pass(&view, &lines)))
    });
    group.finish();

    // The `forEach` view over the same lines (one row per component; most Observations have
    // none): its throughput is per Observation read, not per row.
    let components = Arc::new(
        CompiledView::from_json_text(builtin_view_text("observation_component").expect("built-in"))
            .expect("observation_component view compiles"),
    );
    let mut group = c.benchmark_group("views (resources/s)");
    group.throughput(Throughput::Elements(lines.len() as u64));
    group.bench_function("observation_component view (tree)", |b| {
        b.iter(|| black_box(through_the_tree(&components, &lines)))
    });
    group.bench_function("observation_component view", |b| {
        b.iter(|| black_box(in_one_pass(&components, &lines)))
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
