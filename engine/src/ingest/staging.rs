//! Staging: rows of one run, per resource type, in local Parquet files under
//! `<landing>/staging/<run_id>/`. Memory stays bounded by one row group per type; the merge step
//! then reads them back (deduplicated by id) into one Delta MERGE per table.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::{Arc, LazyLock};

use arrow::array::{
    ArrayRef, Int64Builder, RecordBatch, StringBuilder, TimestampMicrosecondBuilder,
};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use parquet::arrow::ArrowWriter;
use parquet::basic::Compression;
use parquet::file::properties::WriterProperties;

use super::validate::Row;
use crate::lake::layout::timestamp_type;
use crate::{Error, Result};

/// Operation of a staged row.
pub const OP_UPSERT: &str = "upsert";
/// Operation of a staged delete.
pub const OP_DELETE: &str = "delete";

/// Schema of staged rows: the raw table columns (less `run_id`) plus `op` and read order `seq`.
pub static STAGING_SCHEMA: LazyLock<SchemaRef> = LazyLock::new(|| {
    Arc::new(Schema::new(vec![
        Field::new("id", DataType::Utf8, false),
        Field::new("patient_id", DataType::Utf8, true),
        Field::new("last_updated", timestamp_type(), true),
        Field::new("resource", DataType::Utf8, false),
        Field::new("op", DataType::Utf8, false),
        Field::new("seq", DataType::Int64, false),
    ]))
});

const FLUSH_ROWS: usize = 4096;
const FLUSH_BYTES: usize = 16 << 20;

struct TypeStage {
    path: PathBuf,
    writer: ArrowWriter<File>,
    id: StringBuilder,
    patient_id: StringBuilder,
    last_updated: TimestampMicrosecondBuilder,
    resource: StringBuilder,
    op: StringBuilder,
    seq: Int64Builder,
    pending_rows: usize,
    pending_bytes: usize,
    rows: u64,
}

impl TypeStage {
    fn new(path: PathBuf) -> Result<Self> {
        let file = File::create(&path).map_err(|e| Error::io(path.display(), e))?;
        let props = WriterProperties::builder()
            .set_compression(Compression::SNAPPY)
            .set_max_row_group_row_count(Some(FLUSH_ROWS * 4))
            .build();
        let writer = ArrowWriter::try_new(file, STAGING_SCHEMA.clone(), Some(props))
            .map_err(|e| staging_err(&path, e))?;
        Ok(Self {
            path,
            writer,
            id: StringBuilder::new(),
            patient_id: StringBuilder::new(),
            last_updated: TimestampMicrosecondBuilder::new().with_timezone("UTC"),
            resource: StringBuilder::new(),
            op: StringBuilder::new(),
            seq: Int64Builder::new(),
            pending_rows: 0,
            pending_bytes: 0,
            rows: 0,
        })
    }

    fn push(
        &mut self,
        id: &str,
        patient_id: Option<&str>,
        last_updated: Option<i64>,
        resource: &str,
        op: &str,
        seq: i64,
    ) -> Result<()> {
        self.id.append_value(id);
        self.patient_id.append_option(patient_id);
        self.last_updated.append_option(last_updated);
        self.resource.append_value(resource);
        self.op.append_value(op);
        self.seq.append_value(seq);
        self.pending_rows += 1;
        self.pending_bytes += resource.len() + id.len();
        self.rows += 1;
        if self.pending_rows >= FLUSH_ROWS || self.pending_bytes >= FLUSH_BYTES {
            self.flush()?;
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<()> {
        if self.pending_rows == 0 {
            return Ok(());
        }
        let columns: Vec<ArrayRef> = vec![
            Arc::new(self.id.finish()),
            Arc::new(self.patient_id.finish()),
            Arc::new(self.last_updated.finish()),
            Arc::new(self.resource.finish()),
            Arc::new(self.op.finish()),
            Arc::new(self.seq.finish()),
        ];
        let batch = RecordBatch::try_new(STAGING_SCHEMA.clone(), columns)
            .map_err(|e| staging_err(&self.path, e))?;
        self.writer
            .write(&batch)
            .map_err(|e| staging_err(&self.path, e))?;
        self.pending_rows = 0;
        self.pending_bytes = 0;
        Ok(())
    }
}

fn staging_err(path: &Path, e: impl std::fmt::Display) -> Error {
    Error::Staging {
        table: path.display().to_string(),
        reason: e.to_string(),
    }
}

/// A finished staging file for one resource type.
#[derive(Debug, Clone)]
pub struct StagedType {
    /// The Parquet file.
    pub path: PathBuf,
    /// Rows staged (upserts and deletes, before deduplication).
    pub rows: u64,
}

/// Staging writers of one run.
pub struct Staging {
    dir: PathBuf,
    types: BTreeMap<String, TypeStage>,
}

impl std::fmt::Debug for Staging {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Staging").field("dir", &self.dir).finish()
    }
}

impl Staging {
    /// Creates the run's staging directory.
    pub fn create(dir: PathBuf) -> Result<Self> {
        std::fs::create_dir_all(&dir).map_err(|e| Error::io(dir.display(), e))?;
        Ok(Self {
            dir,
            types: BTreeMap::new(),
        })
    }

    fn stage(&mut self, resource_type: &str) -> Result<&mut TypeStage> {
        if !self.types.contains_key(resource_type) {
            let path = self.dir.join(format!("{resource_type}.parquet"));
            self.types
                .insert(resource_type.to_string(), TypeStage::new(path)?);
        }
        self.types
            .get_mut(resource_type)
            .ok_or_else(|| Error::Internal("staging map".into()))
    }

    /// Stages one resource.
    pub fn push_row(&mut self, row: &Row) -> Result<()> {
        self.stage(&row.resource_type)?.push(
            &row.id,
            row.patient_id.as_deref(),
            row.last_updated,
            &row.resource,
            OP_UPSERT,
            row.seq,
        )
    }

    /// Stages one delete.
    pub fn push_delete(&mut self, resource_type: &str, id: &str, seq: i64) -> Result<()> {
        self.stage(resource_type)?
            .push(id, None, None, "", OP_DELETE, seq)
    }

    /// Closes every file; returns them by resource type.
    pub fn finish(self) -> Result<BTreeMap<String, StagedType>> {
        let mut out = BTreeMap::new();
        for (resource_type, mut stage) in self.types {
            stage.flush()?;
            let path = stage.path.clone();
            stage.writer.close().map_err(|e| staging_err(&path, e))?;
            out.insert(
                resource_type,
                StagedType {
                    path,
                    rows: stage.rows,
                },
            );
        }
        Ok(out)
    }
}
