//! Result output formats of `fhirlake sql` (and every command that prints a table).
//!
//! `table` is for people (collected, then pretty-printed); `csv`, `json`, `ndjson` and `parquet`
//! stream batch by batch. `ndjson` prints one object per row with keys in column order and
//! explicit nulls; `json` prints one array of such objects.

use std::io::Write;

use datafusion::arrow::record_batch::RecordBatch;
use datafusion::execution::SendableRecordBatchStream;
use futures::StreamExt;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::{Error, Result};

/// An output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OutputFormat {
    /// Aligned text table for terminals.
    #[default]
    Table,
    /// CSV with a header row.
    Csv,
    /// One JSON array of objects.
    Json,
    /// One JSON object per line.
    Ndjson,
    /// Apache Parquet (binary; refuse to write it to a terminal).
    Parquet,
}

impl std::str::FromStr for OutputFormat {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "table" => Ok(Self::Table),
            "csv" => Ok(Self::Csv),
            "json" => Ok(Self::Json),
            "ndjson" | "jsonl" => Ok(Self::Ndjson),
            "parquet" => Ok(Self::Parquet),
            other => Err(format!(
                "unknown format `{other}` (expected table, csv, json, ndjson or parquet)"
            )),
        }
    }
}

/// Writes every batch of `stream` to `out` in `format`; returns the number of rows written.
///
/// A reader that goes away (`| head`) surfaces as [`Error::Io`] with kind `BrokenPipe`, whatever
/// encoder was writing (the CSV and JSON encoders turn I/O errors into strings otherwise).
pub async fn write_stream<W: Write + Send>(
    stream: SendableRecordBatchStream,
    format: OutputFormat,
    out: W,
) -> Result<u64> {
    let broken = Arc::new(AtomicBool::new(false));
    let out = PipeWatch {
        inner: out,
        broken: broken.clone(),
    };
    let result = write_stream_inner(stream, format, out).await;
    if broken.load(Ordering::Relaxed) {
        return Err(Error::Io(std::io::ErrorKind::BrokenPipe.into()));
    }
    result
}

/// Remembers whether the output was closed by the reader.
struct PipeWatch<W> {
    inner: W,
    broken: Arc<AtomicBool>,
}

impl<W: Write> Write for PipeWatch<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.watch(|w| w.write(buf))
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.watch(Write::flush)
    }
}

impl<W: Write> PipeWatch<W> {
    fn watch<T>(&mut self, op: impl FnOnce(&mut W) -> std::io::Result<T>) -> std::io::Result<T> {
        let result = op(&mut self.inner);
        if let Err(e) = &result
            && e.kind() == std::io::ErrorKind::BrokenPipe
        {
            self.broken.store(true, Ordering::Relaxed);
        }
        result
    }
}

async fn write_stream_inner<W: Write + Send>(
    mut stream: SendableRecordBatchStream,
    format: OutputFormat,
    out: W,
) -> Result<u64> {
    let schema = stream.schema();
    let mut rows = 0u64;
    match format {
        OutputFormat::Table => {
            let mut batches = Vec::new();
            while let Some(batch) = stream.next().await {
                let batch = batch?;
                rows += batch.num_rows() as u64;
                batches.push(batch);
            }
            write_table(&schema, &batches, out)?;
        }
        OutputFormat::Csv => {
            let mut writer = arrow::csv::WriterBuilder::new()
                .with_header(true)
                .build(out);
            let mut wrote_any = false;
            while let Some(batch) = stream.next().await {
                let batch = batch?;
                rows += batch.num_rows() as u64;
                writer.write(&batch)?;
                wrote_any = true;
            }
            if !wrote_any {
                writer.write(&RecordBatch::new_empty(schema))?;
            }
            writer.into_inner().flush()?;
        }
        OutputFormat::Json | OutputFormat::Ndjson => {
            let mut out = out;
            let array = format == OutputFormat::Json;
            if array {
                out.write_all(b"[")?;
            }
            let mut first = true;
            while let Some(batch) = stream.next().await {
                let batch = batch?;
                rows += batch.num_rows() as u64;
                let buf = fhirlake_views::ndjson_rows(&batch)?;
                if array {
                    for line in buf.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
                        if !first {
                            out.write_all(b",")?;
                        }
                        out.write_all(b"\n")?;
                        out.write_all(line)?;
                        first = false;
                    }
                } else {
                    out.write_all(&buf)?;
                }
            }
            if array {
                out.write_all(if first { b"]\n" } else { b"\n]\n" })?;
            }
            out.flush()?;
        }
        OutputFormat::Parquet => {
            let mut writer = parquet::arrow::ArrowWriter::try_new(out, schema, None)?;
            while let Some(batch) = stream.next().await {
                let batch = batch?;
                rows += batch.num_rows() as u64;
                writer.write(&batch)?;
            }
            writer.flush()?;
            let mut out = writer.into_inner()?;
            out.flush()?;
        }
    }
    Ok(rows)
}

/// Pretty-prints batches (always prints the header, even for zero rows).
pub fn write_table<W: Write>(
    schema: &arrow::datatypes::SchemaRef,
    batches: &[RecordBatch],
    mut out: W,
) -> Result<()> {
    let table = if batches.is_empty() {
        arrow::util::pretty::pretty_format_batches(&[RecordBatch::new_empty(schema.clone())])?
    } else {
        arrow::util::pretty::pretty_format_batches(batches)?
    };
    writeln!(out, "{table}")?;
    out.flush()?;
    Ok(())
}
