//! `fhirlake sql`, `fhirlake tables` and `fhirlake history`: read-only views of the lake.

use std::io::{IsTerminal, Read};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, bail};
use arrow::array::{ArrayRef, Int64Array, RecordBatch, StringArray, TimestampMillisecondArray};
use arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use clap::Args;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use fhirlake::lake::TableId;
use fhirlake_sql::OutputFormat;
use futures::TryStreamExt;

use super::args::LakeArgs;

/// How results are printed.
#[derive(Debug, Args, Clone)]
pub struct FormatArgs {
    /// Output format: table, csv, json, ndjson (one object per row, keys in column order) or parquet.
    #[arg(
        long,
        env = "FHIRLAKE_FORMAT",
        default_value = "table",
        value_name = "FORMAT"
    )]
    pub format: OutputFormat,
}

/// `fhirlake sql` flags.
#[derive(Debug, Args)]
pub struct SqlArgs {
    #[command(flatten)]
    pub lake: LakeArgs,

    #[command(flatten)]
    pub format: FormatArgs,

    /// Read the lake as it was: a Delta table version (e.g. `3`) or a timestamp
    /// (`2026-01-31T12:00:00Z`, `2026-01-31`). Tables that did not exist then are absent.
    #[arg(long, env = "FHIRLAKE_AS_OF", value_name = "VERSION|TIMESTAMP")]
    pub as_of: Option<fhirlake_sql::AsOf>,

    /// The SQL statement; `-` reads it from stdin. Tables: views in the default schema,
    /// `raw.<resource_type>`, `lake.runs`. Without a query: the interactive shell (or, when stdin
    /// is not a terminal, the statements read from it, each ending with `;`).
    #[arg(value_name = "QUERY")]
    pub query: Option<String>,

    #[command(flatten)]
    pub shell: super::shell::ShellArgs,
}

/// `fhirlake tables` flags.
#[derive(Debug, Args)]
pub struct TablesArgs {
    #[command(flatten)]
    pub lake: LakeArgs,

    #[command(flatten)]
    pub format: FormatArgs,
}

/// `fhirlake history` flags.
#[derive(Debug, Args)]
pub struct HistoryArgs {
    /// Table name as in SQL: `raw.observation`, `lake.runs`, `patient`.
    #[arg(value_name = "TABLE")]
    pub table: String,

    #[command(flatten)]
    pub lake: LakeArgs,

    #[command(flatten)]
    pub format: FormatArgs,

    /// Show at most N commits, newest first.
    #[arg(long, env = "FHIRLAKE_LIMIT", value_name = "N")]
    pub limit: Option<usize>,
}

fn check_output(format: OutputFormat) -> anyhow::Result<()> {
    if format == OutputFormat::Parquet && std::io::stdout().is_terminal() {
        bail!("refusing to write Parquet to a terminal; redirect stdout to a file");
    }
    Ok(())
}

/// Runs `fhirlake sql`.
pub async fn sql(args: SqlArgs) -> anyhow::Result<ExitCode> {
    check_output(args.format.format)?;
    let lake = args.lake.open()?;
    let session = lake.session_as_of(args.as_of).await?;
    let query = match args.query.as_deref() {
        Some("-") => {
            let mut text = String::new();
            std::io::stdin()
                .read_to_string(&mut text)
                .context("reading the query from stdin")?;
            text
        }
        Some(query) => query.to_string(),
        None => return super::shell::run(session, args.format.format, args.shell).await,
    };
    let stream = session.sql(&query).await?.execute_stream().await?;
    let stdout = std::io::BufWriter::new(std::io::stdout());
    fhirlake_sql::write_stream(stream, args.format.format, stdout).await?;
    Ok(ExitCode::SUCCESS)
}

async fn print_batch(batch: RecordBatch, format: OutputFormat) -> anyhow::Result<()> {
    let schema = batch.schema();
    let stream =
        RecordBatchStreamAdapter::new(schema, futures::stream::once(async move { Ok(batch) }));
    let stdout = std::io::BufWriter::new(std::io::stdout());
    fhirlake_sql::write_stream(Box::pin(stream), format, stdout).await?;
    Ok(())
}

/// Runs `fhirlake tables`.
pub async fn tables(args: TablesArgs) -> anyhow::Result<ExitCode> {
    check_output(args.format.format)?;
    let lake = args.lake.open()?;
    let (mut names, mut rows, mut versions, mut files, mut bytes) =
        (vec![], vec![], vec![], vec![], vec![]);
    for (id, table) in lake.load_all().await? {
        let size = fhirlake::lake::table_size(&table)?;
        names.push(id.to_string());
        rows.push(size.rows);
        versions.push(table.version().unwrap_or_default() as i64);
        files.push(size.files);
        bytes.push(size.bytes);
    }
    let schema = Arc::new(Schema::new(vec![
        Field::new("table", DataType::Utf8, false),
        Field::new("rows", DataType::Int64, false),
        Field::new("version", DataType::Int64, false),
        Field::new("files", DataType::Int64, false),
        Field::new("size_bytes", DataType::Int64, false),
    ]));
    let columns: Vec<ArrayRef> = vec![
        Arc::new(StringArray::from(names)),
        Arc::new(Int64Array::from(rows)),
        Arc::new(Int64Array::from(versions)),
        Arc::new(Int64Array::from(files)),
        Arc::new(Int64Array::from(bytes)),
    ];
    print_batch(RecordBatch::try_new(schema, columns)?, args.format.format).await?;
    Ok(ExitCode::SUCCESS)
}

/// Runs `fhirlake history TABLE`.
pub async fn history(args: HistoryArgs) -> anyhow::Result<ExitCode> {
    check_output(args.format.format)?;
    let id = TableId::parse(&args.table).with_context(|| {
        format!(
            "`{}` is not a table name (expected e.g. raw.observation, lake.runs, patient)",
            args.table
        )
    })?;
    let lake = args.lake.open()?;
    let table = lake
        .load_table(&id)
        .await?
        .with_context(|| format!("table {id} does not exist in {}", lake.url()))?;
    let current = table.version().unwrap_or_default() as i64;
    let commits: Vec<_> = table.history(args.limit).try_collect().await?;
    let (mut version, mut timestamp, mut operation, mut run_id, mut metrics) =
        (vec![], vec![], vec![], vec![], vec![]);
    for (i, commit) in commits.iter().enumerate() {
        version.push(current - i as i64);
        timestamp.push(commit.timestamp);
        operation.push(commit.operation.clone());
        run_id.push(
            commit
                .info
                .get(fhirlake::lake::layout::COMMIT_RUN_ID)
                .and_then(|v| v.as_str())
                .map(str::to_string),
        );
        metrics.push(commit.info.get("operationMetrics").map(|m| m.to_string()));
    }
    let schema = Arc::new(Schema::new(vec![
        Field::new("version", DataType::Int64, false),
        Field::new(
            "timestamp",
            DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())),
            true,
        ),
        Field::new("operation", DataType::Utf8, true),
        Field::new("run_id", DataType::Utf8, true),
        Field::new("metrics", DataType::Utf8, true),
    ]));
    let columns: Vec<ArrayRef> = vec![
        Arc::new(Int64Array::from(version)),
        Arc::new(TimestampMillisecondArray::from(timestamp).with_timezone("UTC")),
        Arc::new(StringArray::from(operation)),
        Arc::new(StringArray::from(run_id)),
        Arc::new(StringArray::from(metrics)),
    ];
    print_batch(RecordBatch::try_new(schema, columns)?, args.format.format).await?;
    Ok(ExitCode::SUCCESS)
}
