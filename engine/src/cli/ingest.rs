//! `fhirlake ingest`: validate the flags into a config, run the ingest, print the summary. With `--bulk`
//! the source is a FHIR server: the export is pulled into `<landing>/bulk` (see `pull`) and each file
//! is streamed into the ingest as soon as its download completes.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::bail;
use arrow::array::{ArrayRef, Int64Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema};
use clap::Args;
use fhirlake::ingest::patient_index::PatientsByIdentifier;
use fhirlake::ingest::{Ingest, IngestReport, RunStatus};
use fhirlake::lake::runs::TypeCounts;
use fhirlake::lake::{Lake, layout};
use fhirlake_deid::Deidentifier;

use super::args::{GlobalArgs, LakeArgs};
use super::deid::DeidOptions;
use super::progress::CliObserver;
use super::pull::{AuthArgs, ExportArgs, print_pull_summary};
use super::{EXIT_FAILED, EXIT_REJECTS};

/// `fhirlake ingest` flags.
#[derive(Debug, Args)]
pub struct IngestArgs {
    /// Files, directories, globs, `file://` / `s3://` URLs or Bulk Data landing folders
    /// (a folder with the export's manifest.json); with `--bulk`, one FHIR server base URL.
    #[arg(required = true, value_name = "SOURCE")]
    pub sources: Vec<String>,

    #[command(flatten)]
    pub lake: LakeArgs,

    #[command(flatten)]
    pub ingest: IngestOptions,

    /// SOURCE is a FHIR server: run a Bulk Data export ($export) into <landing>/bulk and ingest it.
    #[arg(long, env = "FHIRLAKE_BULK")]
    pub bulk: bool,

    #[command(flatten)]
    pub export: ExportArgs,

    #[command(flatten)]
    pub auth: AuthArgs,
}

/// Ingest options shared with `quickstart`.
#[derive(Debug, Args)]
pub struct IngestOptions {
    /// Landing zone: rejected lines go to <landing>/rejected/<run_id>.ndjson, staging files to
    /// <landing>/staging/. It may hold identified data: keep it where the steward controls it.
    #[arg(
        long,
        env = "FHIRLAKE_LANDING",
        default_value = "./landing",
        value_name = "DIR"
    )]
    pub landing: PathBuf,

    #[command(flatten)]
    pub deid: DeidOptions,

    /// Write resources WITHOUT de-identification (no policy, no key). Only for synthetic data or a
    /// lake that may hold PHI; the lake records it (tables are stamped `fhirlake.deid.applied = false`).
    #[arg(long, env = "FHIRLAKE_UNSAFE_NO_DEID")]
    pub unsafe_no_deid: bool,

    /// Fail (exit 2, nothing committed) when more than N lines are rejected.
    #[arg(long, env = "FHIRLAKE_MAX_REJECTS", value_name = "N")]
    pub max_rejects: Option<u64>,

    /// Longest NDJSON line accepted, in bytes (default 64 MiB). A longer line is rejected and kept
    /// in <landing>/rejected/ like any other reject, without being held in memory.
    #[arg(
        long,
        env = "FHIRLAKE_MAX_LINE_BYTES",
        value_name = "N",
        default_value_t = fhirlake_connectors::MAX_LINE_BYTES,
        value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..)
    )]
    pub max_line_bytes: usize,

    /// Worker threads for parsing and de-identification (default: all cores).
    #[arg(long, env = "FHIRLAKE_THREADS", value_name = "N")]
    pub threads: Option<usize>,
}

impl IngestOptions {
    /// Picks the de-identification stage: the policy engine with the key, or (explicitly) none;
    /// with the index of patients by identifier that resolves conditional patient references (the
    /// engine's date shift, and `patient_id`). Hand both to the [`Ingest`] ([`Self::ingest`]).
    pub fn deidentifier(
        &self,
    ) -> anyhow::Result<(Arc<dyn Deidentifier>, Arc<PatientsByIdentifier>)> {
        if self.unsafe_no_deid {
            let passthrough = self.deid.deidentifier(true)?;
            return Ok((passthrough, Arc::new(PatientsByIdentifier::as_typed())));
        }
        let engine = self.deid.engine()?;
        let patients = Arc::new(PatientsByIdentifier::pseudonymized(engine.key().clone()));
        let engine = engine.with_patient_index(patients.clone());
        Ok((Arc::new(engine), patients))
    }

    /// An ingest of `sources` into `lake` through the de-identification stage of
    /// [`Self::deidentifier`].
    pub fn ingest(
        &self,
        sources: Vec<String>,
        lake: Lake,
        (deid, patients): (Arc<dyn Deidentifier>, Arc<PatientsByIdentifier>),
    ) -> Ingest {
        Ingest::new(sources, lake, deid).with_patient_index(patients)
    }

    /// Applies the options to an ingest.
    pub fn configure(&self, ingest: Ingest) -> anyhow::Result<Ingest> {
        if self.threads == Some(0) {
            bail!("--threads must be at least 1");
        }
        let mut ingest = ingest
            .with_landing(self.landing.clone())
            .with_max_rejects(self.max_rejects)
            .with_max_line_bytes(self.max_line_bytes);
        if let Some(threads) = self.threads {
            ingest = ingest.with_workers(threads);
        }
        Ok(ingest)
    }
}

/// Runs `fhirlake ingest`.
pub async fn run(args: IngestArgs, global: &GlobalArgs) -> anyhow::Result<ExitCode> {
    if args.bulk {
        let [base_url] = args.sources.as_slice() else {
            bail!("--bulk takes exactly one SOURCE: the FHIR server base URL");
        };
        let request = args.export.request(base_url)?;
        return ingest_bulk(
            request,
            &args.export,
            &args.auth,
            &args.lake,
            &args.ingest,
            global,
            "run the same `fhirlake ingest --bulk` again to start a new export",
        )
        .await;
    }
    // Validate everything before any I/O.
    let deid = args.ingest.deidentifier()?;
    let lake = args.lake.open()?;
    let observer = Arc::new(CliObserver::new(global.quiet));
    let ingest = args
        .ingest
        .ingest(args.sources.clone(), lake.clone(), deid)
        .with_store_options(args.lake.storage.options())
        .with_observer(observer.clone());
    let ingest = args.ingest.configure(ingest)?;
    let result = ingest.run().await;
    observer.finish();
    match result {
        Ok(report) => {
            print_summary(&report, lake.url().as_str())?;
            Ok(exit_code(&report))
        }
        Err(e @ fhirlake::Error::TooManyRejects { .. }) => {
            eprintln!("error: {e}");
            eprintln!(
                "rejected lines are kept in {}",
                args.ingest.landing.join(layout::LANDING_REJECTED).display()
            );
            Ok(ExitCode::from(EXIT_FAILED))
        }
        Err(e) => Err(e.into()),
    }
}

/// Exit code of a finished run: 0, or 3 when lines were rejected.
pub fn exit_code(report: &IngestReport) -> ExitCode {
    match report.status {
        RunStatus::Succeeded => ExitCode::SUCCESS,
        RunStatus::SucceededWithRejects => ExitCode::from(EXIT_REJECTS),
    }
}

/// Prints the per-type summary table and the run line.
pub fn print_summary(report: &IngestReport, lake: &str) -> anyhow::Result<()> {
    let record = &report.record;
    let mut types = vec![];
    let mut columns: [Vec<i64>; 6] = Default::default();
    let mut push = |name: &str, c: &TypeCounts| {
        types.push(name.to_string());
        for (column, n) in columns.iter_mut().zip(c.values()) {
            column.push(n as i64);
        }
    };
    for (resource_type, counts) in &record.counts {
        push(resource_type, counts);
    }
    let total = record.totals();
    push("total", &total);
    let mut fields = vec![Field::new("resource_type", DataType::Utf8, false)];
    fields.extend(
        TypeCounts::NAMES
            .iter()
            .map(|n| Field::new(*n, DataType::Int64, false)),
    );
    let mut arrays: Vec<ArrayRef> = vec![Arc::new(StringArray::from(types))];
    arrays.extend(
        columns
            .into_iter()
            .map(|c| Arc::new(Int64Array::from(c)) as ArrayRef),
    );
    let schema = Arc::new(Schema::new(fields));
    let batch = RecordBatch::try_new(schema.clone(), arrays)?;
    let stdout = std::io::stdout();
    fhirlake_sql::format::write_table(&schema, &[batch], stdout.lock())?;

    let secs = report.elapsed.as_secs_f64().max(1e-3);
    outln!(
        "run {} {}: {} resources in {:.1} s ({:.1} MB/s, {:.0} resources/s) into {lake}",
        record.run_id,
        record.status,
        total.read,
        secs,
        report.bytes as f64 / 1e6 / secs,
        total.read as f64 / secs,
    );
    if record.stamp.deidentified {
        let d = &record.deid;
        let hits: Vec<String> = d
            .rule_hits
            .iter()
            .filter(|(_, n)| *n > 0)
            .map(|(m, n)| format!("{m} {n}"))
            .collect();
        outln!(
            "de-identified with policy {} ({}), key id {}: {}; free text removed {}, extensions dropped {}, malformed values removed {}, resources dropped {}",
            record.policy_name,
            record.stamp.policy_hash,
            record.stamp.key_id,
            if hits.is_empty() {
                "no rule hits".to_string()
            } else {
                hits.join(", ")
            },
            d.free_text_default,
            d.dropped_extensions,
            d.malformed,
            d.dropped_resources,
        );
    } else {
        outln!("note: written WITHOUT de-identification (--unsafe-no-deid); the lake records this");
    }
    if report.unresolved_patient_references > 0 {
        outln!(
            "{} conditional patient references (Patient?identifier=...) matched no patient of this \
             run or the lake: those resources have no patient_id and a date shift of their own",
            report.unresolved_patient_references
        );
    }
    if let Some(path) = &report.rejects_file {
        outln!(
            "{} lines rejected; kept with file, line and reason in {}",
            total.rejected,
            path.display()
        );
    }
    Ok(())
}

/// Pulls the export `request` into `<landing>/bulk` and ingests each file as soon as it is
/// downloaded ([`fhirlake::ingest::bulk::pull_and_ingest`]), then prints the pull's and the run's
/// summaries.
pub async fn ingest_bulk(
    request: fhirlake_connectors::bulk::ExportRequest,
    export: &ExportArgs,
    auth: &AuthArgs,
    lake_args: &LakeArgs,
    options: &IngestOptions,
    global: &GlobalArgs,
    rerun_hint: &str,
) -> anyhow::Result<ExitCode> {
    // Validate everything before any I/O.
    let deid = options.deidentifier()?;
    let lake = lake_args.open()?;
    let pull_dir = options.landing.join(layout::LANDING_BULK);
    let auth = auth.connect(&request.base_url).await?;
    let pull_options = export.options(&pull_dir, auth, global.quiet, rerun_hint)?;
    let observer = Arc::new(CliObserver::new(global.quiet));
    let ingest = options
        .ingest(vec![pull_dir.display().to_string()], lake.clone(), deid)
        .with_observer(observer.clone());
    let ingest = options.configure(ingest)?;
    let outcome = fhirlake::ingest::bulk::pull_and_ingest(request, pull_options, ingest).await;
    observer.finish();
    let outcome = outcome?;
    if let Some(summary) = &outcome.pulled {
        if !global.quiet {
            print_pull_summary(summary)?;
        } else {
            for warning in &summary.warnings {
                eprintln!("warning: {warning}");
            }
            for error in &summary.errors {
                eprintln!("server error[]: {error}");
            }
        }
    }
    match outcome.ingest {
        Ok(report) => {
            print_summary(&report, lake.url().as_str())?;
            if let Some(e) = outcome.cleanup {
                eprintln!("warning: could not remove {e}");
            }
            Ok(exit_code(&report))
        }
        Err(e @ fhirlake::Error::TooManyRejects { .. }) => {
            eprintln!("error: {e}");
            eprintln!(
                "rejected lines are kept in {}; the export stays in {}",
                options.landing.join(layout::LANDING_REJECTED).display(),
                pull_dir.display()
            );
            Ok(ExitCode::from(EXIT_FAILED))
        }
        Err(e) => Err(e.into()),
    }
}
