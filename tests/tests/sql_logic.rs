//! SQL behaviour over a real lake, written as sqllogictest files (`tests/slt/*.slt`): the views,
//! joins, the FHIR helper functions, JSON access into `raw.*`, `information_schema`, and errors.
//!
//! The 100-patient Synthea export is ingested once through the `fhirlake` binary with a fixed
//! de-identification key (so pseudonyms are deterministic); each file then runs against a fresh
//! `fhirlake-sql` session over that lake, opened as `fhirlake sql` opens it.
//!
//! To rewrite the expected results after an intended change, run with `FHIRLAKE_SLT_UPDATE=1` and
//! review the diff.

use std::path::{Path, PathBuf};

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::DataType;
use datafusion::arrow::error::ArrowError;
use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};
use fhirlake_sql::LakeSession;
use fhirlake_tests::*;
use sqllogictest::{DBOutput, DefaultColumnType};

/// One sqllogictest connection: a session over the test lake.
struct LakeDb {
    session: LakeSession,
}

#[async_trait::async_trait]
impl sqllogictest::AsyncDB for LakeDb {
    type Error = fhirlake_sql::Error;
    type ColumnType = DefaultColumnType;

    async fn run(&mut self, sql: &str) -> Result<DBOutput<DefaultColumnType>, Self::Error> {
        let frame = self.session.sql(sql).await?;
        let schema = frame.schema().as_arrow().clone();
        let batches = frame.collect().await?;
        if schema.fields().is_empty() {
            return Ok(DBOutput::StatementComplete(0));
        }
        let types = schema
            .fields()
            .iter()
            .map(|f| column_type(f.data_type()))
            .collect();
        let mut rows = Vec::new();
        for batch in &batches {
            rows.extend(batch_rows(batch)?);
        }
        Ok(DBOutput::Rows { types, rows })
    }

    async fn shutdown(&mut self) {}

    fn engine_name(&self) -> &str {
        "fhirlake"
    }

    async fn sleep(duration: std::time::Duration) {
        tokio::time::sleep(duration).await;
    }
}

/// `I` for integers, `R` for floating point, `T` for the rest (as in DataFusion's own tests).
fn column_type(data_type: &DataType) -> DefaultColumnType {
    if data_type.is_integer() {
        DefaultColumnType::Integer
    } else if data_type.is_floating() || matches!(data_type, DataType::Decimal128(_, _)) {
        DefaultColumnType::FloatingPoint
    } else {
        DefaultColumnType::Text
    }
}

/// Cells as text: `NULL` for nulls, `(empty)` for empty strings (sqllogictest trims cells).
fn batch_rows(batch: &RecordBatch) -> Result<Vec<Vec<String>>, ArrowError> {
    let options = FormatOptions::default().with_null("NULL");
    let formatters = batch
        .columns()
        .iter()
        .map(|c| ArrayFormatter::try_new(c.as_ref(), &options))
        .collect::<Result<Vec<_>, _>>()?;
    Ok((0..batch.num_rows())
        .map(|row| {
            formatters
                .iter()
                .map(|f| {
                    let cell = f.value(row).to_string();
                    if cell.is_empty() {
                        "(empty)".to_string()
                    } else {
                        cell
                    }
                })
                .collect()
        })
        .collect())
}

fn slt_files() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(repo_root().join("tests").join("slt"))
        .expect("tests/slt")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "slt"))
        .collect();
    files.sort();
    files
}

fn ingest_lake(dir: &Path) -> PathBuf {
    let export = shared_synthea("bulk-data-server-100-patients");
    let output = run(fhirlake(dir).env("FHIRLAKE_DEID_KEY", KEY).args([
        "ingest",
        "--lake",
        "L",
        "-q",
        export.to_str().unwrap(),
    ]));
    assert_code(&output, 0);
    dir.join("L")
}

#[test]
fn sql_logic_files() {
    let dir = tempfile::tempdir().unwrap();
    let lake_dir = ingest_lake(dir.path());
    let files = slt_files();
    assert!(files.len() >= 4, "{files:?}");
    let update = std::env::var_os("FHIRLAKE_SLT_UPDATE").is_some_and(|v| v == "1");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let failures: Vec<String> = runtime.block_on(async {
        let lake = fhirlake::lake::Lake::open(lake_dir.to_str().unwrap(), Default::default())
            .expect("lake opens");
        let mut failures = Vec::new();
        for file in &files {
            let session = lake.session().await.expect("session");
            let mut runner = sqllogictest::Runner::new(move || {
                let session = session.clone();
                async move { Ok(LakeDb { session }) }
            });
            let result = if update {
                runner
                    .update_test_file(
                        file,
                        " ",
                        sqllogictest::default_validator,
                        sqllogictest::default_normalizer,
                        sqllogictest::default_column_validator,
                    )
                    .await
                    .map_err(|e| e.to_string())
            } else {
                runner.run_file_async(file).await.map_err(|e| e.to_string())
            };
            if let Err(e) = result {
                failures.push(format!("{}: {e}", file.display()));
            }
        }
        failures
    });
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}
