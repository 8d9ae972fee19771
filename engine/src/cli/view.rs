//! `fhirlake view ...`: SQL-on-FHIR views — run a ViewDefinition over files (`$run`), run a
//! conformance test folder, and add / list / drop / show the views a lake maintains.

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context as _, bail};
use arrow::array::{ArrayRef, BooleanArray, Int64Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema};
use clap::{Args, Subcommand};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use fhirlake::views::registry::{drop_view, register_view};
use fhirlake::views::{lake_views, refresh_view};
use fhirlake_sql::OutputFormat;
use fhirlake_views::builtin::{BUILTIN_VIEWS, builtin_view_text};
use fhirlake_views::conformance::{report, run_dir};
use fhirlake_views::{CompiledView, JsonParser, ViewBatchBuilder};

use super::args::LakeArgs;
use super::deid::{Input, read_inputs};
use super::{EXIT_FAILED, EXIT_REJECTS};

/// `fhirlake view` subcommands.
#[derive(Debug, Subcommand)]
pub enum ViewCommand {
    /// Run a ViewDefinition over FHIR NDJSON / Bundle files and print its rows (SQL-on-FHIR `$run`).
    Run(RunArgs),
    /// Run a folder of SQL-on-FHIR conformance test files (`tests/*.json`) and report the results.
    Test(TestArgs),
    /// Add a custom view to a lake: build its table from the raw tables now and keep it up to
    /// date at every later ingest.
    Add(AddArgs),
    /// List the views of a lake (built-in and custom) with their rows and columns.
    List(ListArgs),
    /// Drop a custom view: its table and its registration in `lake.views`.
    Drop(DropArgs),
    /// Print the ViewDefinition JSON of a built-in view (a starting point for custom views).
    Show(ShowArgs),
}

/// `fhirlake view run` flags.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// ViewDefinition JSON file, or the name of a built-in view (`observation`, ...).
    #[arg(long, env = "FHIRLAKE_VIEW", value_name = "VIEW")]
    pub view: String,

    /// Output format: ndjson (one object per row, keys in column order, explicit nulls,
    /// collections as arrays), csv, json, parquet or table.
    #[arg(
        long,
        env = "FHIRLAKE_FORMAT",
        default_value = "ndjson",
        value_name = "FORMAT"
    )]
    pub format: OutputFormat,

    /// NDJSON / Bundle files, folders or globs with the resources to run the view over.
    #[arg(required = true, value_name = "INPUT")]
    pub inputs: Vec<String>,
}

/// `fhirlake view test` flags.
#[derive(Debug, Args)]
pub struct TestArgs {
    /// Folder of SQL-on-FHIR test files (`*.json` in the format of the official `tests/`).
    #[arg(value_name = "DIR")]
    pub dir: PathBuf,

    /// Write the official test report (`test_report.json` format) to this file.
    #[arg(long, env = "FHIRLAKE_REPORT", value_name = "FILE")]
    pub report: Option<PathBuf>,
}

/// `fhirlake view add` flags.
#[derive(Debug, Args)]
pub struct AddArgs {
    /// ViewDefinition JSON file; its `name` becomes the table name.
    #[arg(value_name = "VIEW.json")]
    pub view: PathBuf,

    #[command(flatten)]
    pub lake: LakeArgs,
}

/// `fhirlake view list` flags.
#[derive(Debug, Args)]
pub struct ListArgs {
    #[command(flatten)]
    pub lake: LakeArgs,

    #[command(flatten)]
    pub format: super::query::FormatArgs,
}

/// `fhirlake view drop` flags.
#[derive(Debug, Args)]
pub struct DropArgs {
    /// Name of the custom view.
    #[arg(value_name = "NAME")]
    pub name: String,

    #[command(flatten)]
    pub lake: LakeArgs,
}

/// `fhirlake view show` flags.
#[derive(Debug, Args)]
pub struct ShowArgs {
    /// Name of a built-in view.
    #[arg(value_name = "NAME")]
    pub name: String,
}

/// Runs a `view` subcommand.
pub async fn run(command: ViewCommand) -> anyhow::Result<ExitCode> {
    match command {
        ViewCommand::Run(args) => run_view(args).await,
        ViewCommand::Test(args) => test(&args),
        ViewCommand::Add(args) => add(args).await,
        ViewCommand::List(args) => list(args).await,
        ViewCommand::Drop(args) => {
            let lake = args.lake.open()?;
            let _lock = lake.lock()?;
            drop_view(&lake, &args.name).await?;
            outln!("dropped view {}", args.name);
            Ok(ExitCode::SUCCESS)
        }
        ViewCommand::Show(args) => match builtin_view_text(&args.name) {
            Some(text) => {
                std::io::stdout().write_all(text.as_bytes())?;
                Ok(ExitCode::SUCCESS)
            }
            None => bail!(
                "no built-in view `{}` (built-ins: {})",
                args.name,
                builtin_names()
            ),
        },
    }
}

fn builtin_names() -> String {
    BUILTIN_VIEWS
        .iter()
        .map(|(n, _)| *n)
        .collect::<Vec<_>>()
        .join(", ")
}

/// Reads a ViewDefinition from a file, or a built-in by name.
fn load_view(spec: &str) -> anyhow::Result<CompiledView> {
    let path = std::path::Path::new(spec);
    let text = if path.exists() {
        std::fs::read_to_string(path).with_context(|| format!("reading {spec}"))?
    } else if let Some(text) = builtin_view_text(spec) {
        text.to_string()
    } else {
        bail!(
            "{spec}: no such file, and not a built-in view ({})",
            builtin_names()
        );
    };
    CompiledView::from_json_text(&text).with_context(|| spec.to_string())
}

async fn write_batches(
    schema: arrow::datatypes::SchemaRef,
    batches: Vec<RecordBatch>,
    format: OutputFormat,
) -> anyhow::Result<()> {
    let stream =
        RecordBatchStreamAdapter::new(schema, futures::stream::iter(batches.into_iter().map(Ok)));
    let stdout = std::io::BufWriter::new(std::io::stdout());
    fhirlake_sql::write_stream(Box::pin(stream), format, stdout).await?;
    Ok(())
}

async fn run_view(args: RunArgs) -> anyhow::Result<ExitCode> {
    if args.format == OutputFormat::Parquet && std::io::IsTerminal::is_terminal(&std::io::stdout())
    {
        bail!("refusing to write Parquet to a terminal; redirect stdout to a file");
    }
    let view = Arc::new(load_view(&args.view)?);
    let mut builder = ViewBatchBuilder::new(view.clone());
    let mut parser = JsonParser::default();
    let mut batches = Vec::new();
    let mut problems = 0u64;
    read_inputs(args.inputs, |input| {
        match input {
            Input::Problem(message) => {
                problems += 1;
                eprintln!("warning: {message}");
            }
            Input::Resource(at, resource) => {
                let problem = match serde_json::to_string(&resource) {
                    Ok(text) => match builder.append_text(&text, &mut parser) {
                        Ok(Ok(_)) => None,
                        Ok(Err(e)) => Some(format!("{}: {}", e.element, e.reason)),
                        Err(e) => Some(e.to_string()),
                    },
                    Err(e) => Some(format!("invalid JSON: {e}")),
                };
                if let Some(problem) = problem {
                    problems += 1;
                    eprintln!("error: {at}: view {}: {problem}", view.label());
                }
                if builder.len() >= 8192 {
                    batches.push(builder.finish()?);
                }
            }
        }
        Ok(())
    })
    .await?;
    if !builder.is_empty() {
        batches.push(builder.finish()?);
    }
    write_batches(view.schema(), batches, args.format).await?;
    Ok(if problems > 0 {
        ExitCode::from(EXIT_REJECTS)
    } else {
        ExitCode::SUCCESS
    })
}

fn test(args: &TestArgs) -> anyhow::Result<ExitCode> {
    let outcomes = run_dir(&args.dir)?;
    let (mut passed, mut total) = (0, 0);
    for file in &outcomes {
        let ok = file.tests.iter().filter(|t| t.passed).count();
        passed += ok;
        total += file.tests.len();
        outln!("{:<28} {ok:>3}/{:<3}", file.file, file.tests.len());
        for test in file.tests.iter().filter(|t| !t.passed) {
            outln!(
                "  FAIL {}: {}",
                test.name,
                test.error.as_deref().unwrap_or("failed")
            );
        }
    }
    outln!("{passed}/{total} tests passed");
    if let Some(path) = &args.report {
        let text = serde_json::to_string_pretty(&report(&outcomes))?;
        std::fs::write(path, text + "\n").with_context(|| format!("writing {}", path.display()))?;
        outln!("report written to {}", path.display());
    }
    Ok(if passed == total {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_FAILED)
    })
}

async fn add(args: AddArgs) -> anyhow::Result<ExitCode> {
    let text = std::fs::read_to_string(&args.view)
        .with_context(|| format!("reading {}", args.view.display()))?;
    let lake = args.lake.open()?;
    let _lock = lake.lock()?;
    let Some(stamp) = fhirlake::views::registry::lake_stamp(&lake).await? else {
        bail!(
            "{} has no tables yet: ingest data first, then add views",
            lake.url()
        );
    };
    let view = register_view(&lake, &stamp, &text).await?;
    let run_id = format!("view-add-{}", uuid::Uuid::now_v7());
    let outcome = refresh_view(&lake, &stamp, &view, &run_id, true).await?;
    outln!(
        "added view {} over raw.{}: {} rows from {} resources{}",
        view.label(),
        fhirlake::lake::snake_case(&view.resource),
        outcome.rows,
        outcome.resources,
        if outcome.failed > 0 {
            format!(
                " ({} resources failed, see the warnings above)",
                outcome.failed
            )
        } else {
            String::new()
        }
    );
    Ok(if outcome.failed > 0 {
        ExitCode::from(EXIT_REJECTS)
    } else {
        ExitCode::SUCCESS
    })
}

async fn list(args: ListArgs) -> anyhow::Result<ExitCode> {
    let lake = args.lake.open()?;
    let (mut names, mut sources, mut resources, mut rows, mut columns, mut present) =
        (vec![], vec![], vec![], vec![], vec![], vec![]);
    for registered in lake_views(&lake).await? {
        let id = registered.table_id();
        let table = lake.load_table(&id).await?;
        let n_rows = match &table {
            Some(table) => Some(fhirlake::lake::table_size(table)?.rows),
            None => None,
        };
        names.push(id.to_string());
        sources.push(registered.source.as_str());
        resources.push(registered.view.resource.clone());
        rows.push(n_rows);
        present.push(table.is_some());
        columns.push(
            registered
                .view
                .columns
                .iter()
                .map(|c| c.name.as_str())
                .collect::<Vec<_>>()
                .join(", "),
        );
    }
    let schema = Arc::new(Schema::new(vec![
        Field::new("view", DataType::Utf8, false),
        Field::new("source", DataType::Utf8, false),
        Field::new("resource", DataType::Utf8, false),
        Field::new("materialized", DataType::Boolean, false),
        Field::new("rows", DataType::Int64, true),
        Field::new("columns", DataType::Utf8, false),
    ]));
    let arrays: Vec<ArrayRef> = vec![
        Arc::new(StringArray::from(names)),
        Arc::new(StringArray::from(sources)),
        Arc::new(StringArray::from(resources)),
        Arc::new(BooleanArray::from(present)),
        Arc::new(Int64Array::from(rows)),
        Arc::new(StringArray::from(columns)),
    ];
    let batch = RecordBatch::try_new(schema.clone(), arrays)?;
    write_batches(schema, vec![batch], args.format.format).await?;
    Ok(ExitCode::SUCCESS)
}
