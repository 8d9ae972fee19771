//! `fhirlake-bench`: ingest throughput measured side by side with baselines, in one process, on
//! the same generated data, reported as ratios (DESIGN.md "Performance budget").
//!
//! - `fhirlake-bench generate --scale K --out DIR [--gzip]` writes `K x 100` patients of FHIR
//!   NDJSON (see [`generate`]).
//! - `fhirlake-bench ingest [--scale K] [--gzip] [--workers N] [--runs R] [--json OUT]` generates
//!   data into a temporary directory and times, `R` rounds each (median reported):
//!   - **A** read only: stream every file (gunzip when `--gzip`) and count bytes: the I/O and
//!     decompression ceiling;
//!   - **B** `serde_json` parse of every line to a `Value` and re-serialisation, one thread: the
//!     design's "≈220 MB/s" reference;
//!   - **fhirlake ingest**: a full library ingest (parse, validate, stage Parquet, Delta MERGE, run
//!     log) into a fresh local lake, with [`fhirlake_deid::Passthrough`] (no de-identification);
//!   - **fhirlake safe-harbor**: the same with the `safe-harbor` policy and a fixed bench key,
//!     i.e. what `fhirlake ingest` does by default.
//!
//! Throughput is always computed over the same figure, the uncompressed NDJSON bytes generated,
//! so the ratios compare like with like. Nothing here asserts on time.

mod generate;

use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand};
use fhirlake::ingest::{Ingest, IngestReport};
use fhirlake::lake::Lake;
use flate2::read::MultiGzDecoder;
use serde_json::{Value, json};

use crate::generate::Generated;

/// Patients in one replica of the sample.
const PATIENTS_PER_SCALE: u64 = 100;

#[derive(Debug, Parser)]
#[command(
    name = "fhirlake-bench",
    version,
    about = "fhirlake ingest throughput, side by side with baselines"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Write scale x 100 patients of Synthea NDJSON (the embedded sample, ids rewritten per replica).
    Generate {
        /// Replicas of the 100-patient sample.
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
        scale: u32,
        /// Write `.ndjson.gz` instead of `.ndjson`.
        #[arg(long)]
        gzip: bool,
        /// Output directory (created if missing).
        #[arg(long)]
        out: PathBuf,
    },
    /// Measure ingest throughput against read-only and serde_json baselines.
    Ingest(IngestArgs),
}

#[derive(Debug, Args)]
struct IngestArgs {
    /// Replicas of the 100-patient sample (scale x 100 patients).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    scale: u32,
    /// Generate gzipped files (every measurement then includes decompression).
    #[arg(long)]
    gzip: bool,
    /// fhirlake worker threads (default: all cores).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    workers: Option<u32>,
    /// Rounds of every measurement; the median is reported.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..))]
    runs: u32,
    /// Also write the figures as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Directory for the generated data and the lakes (default: the system temp directory).
    #[arg(long)]
    tmp: Option<PathBuf>,
}

fn main() -> Result<()> {
    match Cli::parse().command {
        Command::Generate { scale, gzip, out } => {
            let generated = generate::generate(&out, scale, gzip)?;
            println!(
                "wrote {} files to {}: {} patients, {} resources, {:.1} MB NDJSON ({:.1} MB on disk)",
                generated.files,
                out.display(),
                u64::from(scale) * PATIENTS_PER_SCALE,
                generated.resources,
                mb(generated.bytes),
                mb(generated.bytes_on_disk),
            );
            Ok(())
        }
        Command::Ingest(args) => ingest(&args),
    }
}

/// One measured line of the table.
#[derive(Debug)]
struct Measurement {
    name: &'static str,
    what: String,
    seconds: Vec<f64>,
}

impl Measurement {
    fn new(name: &'static str, what: String) -> Self {
        Self {
            name,
            what,
            seconds: Vec::new(),
        }
    }

    fn median(&self) -> f64 {
        let mut sorted = self.seconds.clone();
        sorted.sort_by(f64::total_cmp);
        match sorted.len() {
            0 => f64::NAN,
            n if n % 2 == 1 => sorted[n / 2],
            n => (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0,
        }
    }
}

fn ingest(args: &IngestArgs) -> Result<()> {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let workers = args.workers.map_or(cores, |w| w as usize);
    let scratch = match &args.tmp {
        Some(dir) => {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
            tempfile::tempdir_in(dir)
        }
        None => tempfile::tempdir(),
    }
    .context("creating a temporary directory")?;
    let data = scratch.path().join("data");

    eprintln!(
        "generating scale {} ({} patients){} into {} ...",
        args.scale,
        u64::from(args.scale) * PATIENTS_PER_SCALE,
        if args.gzip { ", gzipped" } else { "" },
        data.display()
    );
    let started = Instant::now();
    let generated = generate::generate(&data, args.scale, args.gzip)?;
    eprintln!(
        "generated {} resources, {:.1} MB NDJSON ({:.1} MB on disk) in {:.1} s",
        generated.resources,
        mb(generated.bytes),
        mb(generated.bytes_on_disk),
        started.elapsed().as_secs_f64()
    );
    let files = data_files(&data)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;

    let mut read_only = Measurement::new(
        "A read only",
        if args.gzip {
            "gunzip + read, 1 thread"
        } else {
            "read, 1 thread"
        }
        .to_string(),
    );
    let mut serde = Measurement::new(
        "B serde_json",
        "parse to Value + to_string, 1 thread".to_string(),
    );
    let mut fhirlake = Measurement::new(
        "fhirlake ingest",
        format!(
            "full ingest into a new lake, {workers} worker{}",
            if workers == 1 { "" } else { "s" }
        ),
    );
    let mut safe_harbor = Measurement::new(
        "fhirlake safe-harbor",
        format!(
            "full ingest, safe-harbor policy, {workers} worker{}",
            if workers == 1 { "" } else { "s" }
        ),
    );
    let mut last_report = None;
    for round in 1..=args.runs {
        let (seconds, lines) = timed(|| baseline_read_only(&files))?;
        check_count("A", lines, generated.resources);
        read_only.seconds.push(seconds);

        let (seconds, lines) = timed(|| baseline_serde(&files))?;
        check_count("B", lines, generated.resources);
        serde.seconds.push(seconds);

        let deid_report = runtime.block_on(ingest_once(
            &data,
            scratch.path(),
            workers,
            safe_harbor_engine()?,
        ))?;
        check_count(
            "safe-harbor",
            deid_report.record.totals().read,
            generated.resources,
        );
        safe_harbor.seconds.push(deid_report.elapsed.as_secs_f64());

        let report = runtime.block_on(ingest_once(
            &data,
            scratch.path(),
            workers,
            Arc::new(fhirlake_deid::Passthrough),
        ))?;
        let totals = report.record.totals();
        check_count("fhirlake", totals.read, generated.resources);
        if totals.rejected > 0 {
            eprintln!("warning: fhirlake rejected {} lines", totals.rejected);
        }
        fhirlake.seconds.push(report.elapsed.as_secs_f64());
        eprintln!(
            "round {round}/{}: A {:.3} s, B {:.3} s, fhirlake {:.3} s, safe-harbor {:.3} s",
            args.runs,
            read_only.seconds[read_only.seconds.len() - 1],
            serde.seconds[serde.seconds.len() - 1],
            report.elapsed.as_secs_f64(),
            deid_report.elapsed.as_secs_f64()
        );
        last_report = Some(report);
    }

    let measurements = [read_only, serde, fhirlake, safe_harbor];
    let rows: Vec<Value> = measurements
        .iter()
        .map(|m| {
            row_json(
                m,
                &generated,
                measurements[0].median(),
                measurements[1].median(),
            )
        })
        .collect();
    print_table(args, cores, &generated, &measurements, &rows);

    if let Some(path) = &args.json {
        let report = last_report.as_ref().map(report_json);
        let doc = json!({
            "benchmark": "ingest",
            "scale": args.scale,
            "patients": u64::from(args.scale) * PATIENTS_PER_SCALE,
            "gzip": args.gzip,
            "cores": cores,
            "workers": workers,
            "runs": args.runs,
            "resources": generated.resources,
            "ndjson_bytes": generated.bytes,
            "bytes_on_disk": generated.bytes_on_disk,
            "results": rows,
            "fhirlake_last_report": report,
        });
        let text = serde_json::to_string_pretty(&doc)?;
        std::fs::write(path, text + "\n").with_context(|| format!("writing {}", path.display()))?;
        eprintln!("wrote {}", path.display());
    }
    Ok(())
}

/// The default policy with a fixed key (the figures do not depend on the key).
fn safe_harbor_engine() -> Result<Arc<dyn fhirlake_deid::Deidentifier>> {
    let policy = fhirlake_deid::Policy::builtin("safe-harbor")?;
    let key = fhirlake_deid::DeidKey::from_bytes(&[0x5a; 32], "bench key")?;
    Ok(Arc::new(fhirlake_deid::PolicyEngine::new(policy, key)))
}

/// One fhirlake ingest of `data` into a fresh lake and landing zone under `scratch`.
async fn ingest_once(
    data: &Path,
    scratch: &Path,
    workers: usize,
    deid: Arc<dyn fhirlake_deid::Deidentifier>,
) -> Result<IngestReport> {
    let run_dir = tempfile::tempdir_in(scratch).context("creating a lake directory")?;
    let lake_dir = run_dir.path().join("lake");
    let lake_location = lake_dir
        .to_str()
        .context("the temporary directory path is not UTF-8")?;
    let source = data
        .to_str()
        .context("the data directory path is not UTF-8")?
        .to_string();
    let lake = Lake::open(lake_location, Default::default())?;
    let report = Ingest::new(vec![source], lake, deid)
        .with_landing(run_dir.path().join("landing"))
        .with_workers(workers)
        .run()
        .await?;
    Ok(report)
}

/// Baseline A: stream every file (decompressing `.gz`) and count bytes; returns the line count.
fn baseline_read_only(files: &[PathBuf]) -> Result<u64> {
    let mut buf = vec![0u8; 1 << 20];
    let mut lines = 0u64;
    for path in files {
        let mut reader = open(path)?;
        loop {
            let n = reader
                .read(&mut buf)
                .with_context(|| format!("reading {}", path.display()))?;
            if n == 0 {
                break;
            }
            lines += buf[..n].iter().filter(|&&b| b == b'\n').count() as u64;
        }
    }
    Ok(lines)
}

/// Baseline B: parse every line to a `serde_json::Value` and serialise it again, one thread;
/// returns the resource count.
fn baseline_serde(files: &[PathBuf]) -> Result<u64> {
    let mut line = Vec::with_capacity(1 << 16);
    let mut resources = 0u64;
    let mut out_bytes = 0usize;
    for path in files {
        let mut reader = BufReader::with_capacity(1 << 20, open(path)?);
        for line_no in 1u64.. {
            line.clear();
            let n = reader
                .read_until(b'\n', &mut line)
                .with_context(|| format!("reading {}", path.display()))?;
            if n == 0 {
                break;
            }
            let text = std::str::from_utf8(&line)
                .with_context(|| format!("{} line {line_no}: invalid UTF-8", path.display()))?
                .trim_ascii();
            if text.is_empty() {
                continue;
            }
            let value: Value = serde_json::from_str(text)
                .with_context(|| format!("{} line {line_no}", path.display()))?;
            let written = serde_json::to_string(&value)?;
            out_bytes += std::hint::black_box(written).len();
            resources += 1;
        }
    }
    std::hint::black_box(out_bytes);
    Ok(resources)
}

fn open(path: &Path) -> Result<Box<dyn Read>> {
    let file = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    Ok(if path.extension().is_some_and(|e| e == "gz") {
        Box::new(MultiGzDecoder::new(BufReader::with_capacity(1 << 20, file)))
    } else {
        Box::new(file)
    })
}

/// The generated files, sorted by name.
fn data_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).with_context(|| format!("listing {}", dir.display()))? {
        let entry = entry.with_context(|| format!("listing {}", dir.display()))?;
        if entry.file_type()?.is_file() {
            files.push(entry.path());
        }
    }
    files.sort();
    if files.is_empty() {
        bail!("no data files in {}", dir.display());
    }
    Ok(files)
}

fn timed(f: impl FnOnce() -> Result<u64>) -> Result<(f64, u64)> {
    let started = Instant::now();
    let count = f()?;
    Ok((started.elapsed().as_secs_f64(), count))
}

fn check_count(name: &str, counted: u64, expected: u64) {
    if counted != expected {
        eprintln!("warning: {name} counted {counted} resources, {expected} were generated");
    }
}

/// Decimal megabytes.
fn mb(bytes: u64) -> f64 {
    bytes as f64 / 1e6
}

fn row_json(m: &Measurement, generated: &Generated, median_a: f64, median_b: f64) -> Value {
    let seconds = m.median();
    json!({
        "name": m.name,
        "what": m.what,
        "seconds": seconds,
        "all_seconds": m.seconds,
        "mb_per_s": mb(generated.bytes) / seconds,
        "resources_per_s": generated.resources as f64 / seconds,
        "vs_a": median_a / seconds,
        "vs_b": median_b / seconds,
    })
}

fn report_json(report: &IngestReport) -> Value {
    let totals = report.record.totals();
    json!({
        "run_id": report.record.run_id,
        "status": report.status.as_str(),
        "bytes": report.bytes,
        "elapsed_s": report.elapsed.as_secs_f64(),
        "read": totals.read,
        "written": totals.written,
        "rejected": totals.rejected,
    })
}

fn print_table(
    args: &IngestArgs,
    cores: usize,
    generated: &Generated,
    measurements: &[Measurement],
    rows: &[Value],
) {
    println!(
        "ingest benchmark: scale {} ({} patients), {} resources, {:.1} MB NDJSON{}; \
         {cores} cores, median of {} runs",
        args.scale,
        u64::from(args.scale) * PATIENTS_PER_SCALE,
        generated.resources,
        mb(generated.bytes),
        if args.gzip {
            format!(" ({:.1} MB gzipped)", mb(generated.bytes_on_disk))
        } else {
            String::new()
        },
        args.runs,
    );
    println!(
        "{:<20} {:>9} {:>9} {:>12} {:>7} {:>7}  what",
        "name", "seconds", "MB/s", "resources/s", "vs B", "vs A"
    );
    for (m, row) in measurements.iter().zip(rows) {
        let number = |key: &str| row[key].as_f64().unwrap_or(f64::NAN);
        println!(
            "{:<20} {:>9.3} {:>9.1} {:>12.0} {:>6.2}x {:>6.2}x  {}",
            m.name,
            number("seconds"),
            number("mb_per_s"),
            number("resources_per_s"),
            number("vs_b"),
            number("vs_a"),
            m.what,
        );
    }
}
