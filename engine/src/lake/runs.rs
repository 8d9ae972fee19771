//! `lake.runs`: one row per finished ingest run — source file digests, times, counts per type, policy, key id
//! and the Delta versions the run wrote. A run is recorded only after all its table commits, so a
//! killed or failed run is never recorded as finished.

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow::array::{
    ArrayRef, BooleanArray, Int64Array, ListBuilder, RecordBatch, StringArray, StringBuilder,
    StructBuilder, TimestampMicrosecondArray,
};
use arrow::datatypes::DataType;
use chrono::{DateTime, Utc};
use deltalake::protocol::SaveMode;

use super::layout::{
    RUNS_SCHEMA, rule_hit_fields, source_file_fields, table_version_fields, type_counts_fields,
};
use super::{DeidStamp, Lake, TableId};
use crate::{Error, Result};

/// Counts for one resource type in one run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TypeCounts {
    /// Resources read from the sources (parsed, valid or not de-identifiable).
    pub read: u64,
    /// New rows inserted.
    pub written: u64,
    /// Existing rows replaced by a newer (or equally new, later read) version.
    pub updated: u64,
    /// Rows read again with no newer version (re-ingest of the same data).
    pub unchanged: u64,
    /// Rows deleted (Bulk Data `deleted[]`, Bundle DELETE entries).
    pub deleted: u64,
    /// Lines or entries rejected (kept in the landing zone).
    pub rejected: u64,
}

impl TypeCounts {
    /// Names of the counts, in the order of [`TypeCounts::values`] (and of `lake.runs.counts`).
    pub const NAMES: [&'static str; 6] = [
        "read",
        "written",
        "updated",
        "unchanged",
        "deleted",
        "rejected",
    ];

    /// The counts in the order of [`TypeCounts::NAMES`].
    pub fn values(&self) -> [u64; 6] {
        [
            self.read,
            self.written,
            self.updated,
            self.unchanged,
            self.deleted,
            self.rejected,
        ]
    }

    /// Adds another set of counts.
    pub fn add(&mut self, other: &TypeCounts) {
        self.read += other.read;
        self.written += other.written;
        self.updated += other.updated;
        self.unchanged += other.unchanged;
        self.deleted += other.deleted;
        self.rejected += other.rejected;
    }
}

/// Everything `lake.runs` records about one run.
#[derive(Debug, Clone)]
pub struct RunRecord {
    /// Run id (UUID v7, time ordered).
    pub run_id: String,
    /// When the run started.
    pub started_at: DateTime<Utc>,
    /// When the last table commit finished.
    pub finished_at: DateTime<Utc>,
    /// `succeeded` or `succeeded_with_rejects`.
    pub status: String,
    /// The files the run read, in source order, each by digest (never by name: see
    /// [`SourceFileRecord::digest`]).
    pub sources: Vec<SourceFileRecord>,
    /// Policy name.
    pub policy_name: String,
    /// The de-identification stamp of the run.
    pub stamp: DeidStamp,
    /// What de-identification did (rule hits per method, dropped extensions and resources).
    pub deid: fhirlake_deid::DeidStats,
    /// Counts per resource type (`(unknown)` for lines whose type could not be read).
    pub counts: BTreeMap<String, TypeCounts>,
    /// Delta version written per table.
    pub table_versions: BTreeMap<String, i64>,
    /// Landing zone location (where rejected lines are kept).
    pub landing: Option<String>,
    /// The Bulk Data export the run ingested (`fhirlake ingest --bulk`, `fhirlake sync`).
    pub export: Option<ExportRecord>,
    /// Conditional patient references that matched no patient (their `patient_id` is null).
    pub unresolved_patient_references: u64,
}

/// One file a run read, as `lake.runs` records it: a digest and counts, no name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceFileRecord {
    /// `blake3:` and the first 16 hex digits of the BLAKE3 hash of the file's location text
    /// (see [`SourceFileRecord::digest_of`]).
    pub digest: String,
    /// Lines (NDJSON) or Bundle entries read.
    pub lines: u64,
    /// Bytes read (decompressed).
    pub bytes: u64,
}

impl SourceFileRecord {
    /// The digest of a file location (its path or URL, as the run shows it).
    ///
    /// File names and folders can identify a patient (Synthea names every file after its
    /// patient, and so do many hand-made exports), so the lake keeps only this digest. It is the
    /// digest of the location rather than of the file's bytes because it exists for every file,
    /// also one that could not be read, costs no second pass over the data, and stays the same
    /// when the same file is ingested again; a steward who has the files can recompute it
    /// (`printf %s PATH | b3sum`). It is not a secret: someone who guesses a whole location can
    /// confirm that it was ingested, which a long folder path or a random part in the name (the
    /// UUID of Synthea's names) makes impractical.
    pub fn digest_of(location: &str) -> String {
        let hash = blake3::hash(location.as_bytes()).to_hex();
        format!("blake3:{}", &hash[..16])
    }
}

/// The Bulk Data export a run ingested: what `fhirlake sync` needs for the next incremental export.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportRecord {
    /// The FHIR server's base URL.
    pub base_url: String,
    /// The export settings (JSON of the connector's `ExportRequest`).
    pub request: String,
    /// The manifest's `transactionTime`: the `_since` of the next incremental export.
    pub transaction_time: String,
}

impl RunRecord {
    /// Totals over all types.
    pub fn totals(&self) -> TypeCounts {
        let mut total = TypeCounts::default();
        for counts in self.counts.values() {
            total.add(counts);
        }
        total
    }

    fn to_batch(&self) -> Result<RecordBatch> {
        let total = self.totals();
        let ts = |t: &DateTime<Utc>| {
            Arc::new(
                TimestampMicrosecondArray::from(vec![t.timestamp_micros()]).with_timezone("UTC"),
            ) as ArrayRef
        };
        let string = |s: &str| Arc::new(StringArray::from(vec![s])) as ArrayRef;
        let optional = |s: Option<&str>| Arc::new(StringArray::from(vec![s])) as ArrayRef;
        let int = |n: u64| Arc::new(Int64Array::from(vec![n as i64])) as ArrayRef;

        let mut sources = ListBuilder::new(StringBuilder::new()).with_field(Arc::new(
            arrow::datatypes::Field::new("element", DataType::Utf8, true),
        ));
        for source in &self.sources {
            sources.values().append_value(&source.digest);
        }
        sources.append(true);

        let file_fields = source_file_fields();
        let mut files = ListBuilder::new(StructBuilder::from_fields(file_fields.clone(), 0))
            .with_field(Arc::new(arrow::datatypes::Field::new(
                "element",
                DataType::Struct(file_fields),
                true,
            )));
        for source in &self.sources {
            let s = files.values();
            s.field_builder::<StringBuilder>(0)
                .ok_or_else(|| Error::Internal("runs.source_files builder".into()))?
                .append_value(&source.digest);
            for (i, n) in [source.lines, source.bytes].into_iter().enumerate() {
                s.field_builder::<arrow::array::Int64Builder>(i + 1)
                    .ok_or_else(|| Error::Internal("runs.source_files builder".into()))?
                    .append_value(n as i64);
            }
            s.append(true);
        }
        files.append(true);

        let counts_fields = type_counts_fields();
        let mut counts = ListBuilder::new(StructBuilder::from_fields(counts_fields.clone(), 0))
            .with_field(Arc::new(arrow::datatypes::Field::new(
                "element",
                DataType::Struct(counts_fields),
                true,
            )));
        for (resource_type, c) in &self.counts {
            let s = counts.values();
            s.field_builder::<StringBuilder>(0)
                .ok_or_else(|| Error::Internal("runs.counts builder".into()))?
                .append_value(resource_type);
            for (i, n) in c.values().into_iter().enumerate() {
                s.field_builder::<arrow::array::Int64Builder>(i + 1)
                    .ok_or_else(|| Error::Internal("runs.counts builder".into()))?
                    .append_value(n as i64);
            }
            s.append(true);
        }
        counts.append(true);

        let hit_fields = rule_hit_fields();
        let mut hits = ListBuilder::new(StructBuilder::from_fields(hit_fields.clone(), 0))
            .with_field(Arc::new(arrow::datatypes::Field::new(
                "element",
                DataType::Struct(hit_fields),
                true,
            )));
        for (method, count) in &self.deid.rule_hits {
            let s = hits.values();
            s.field_builder::<StringBuilder>(0)
                .ok_or_else(|| Error::Internal("runs.rule_hits builder".into()))?
                .append_value(method);
            s.field_builder::<arrow::array::Int64Builder>(1)
                .ok_or_else(|| Error::Internal("runs.rule_hits builder".into()))?
                .append_value(*count as i64);
            s.append(true);
        }
        hits.append(true);

        let version_fields = table_version_fields();
        let mut versions = ListBuilder::new(StructBuilder::from_fields(version_fields.clone(), 0))
            .with_field(Arc::new(arrow::datatypes::Field::new(
                "element",
                DataType::Struct(version_fields),
                true,
            )));
        for (table, version) in &self.table_versions {
            let s = versions.values();
            s.field_builder::<StringBuilder>(0)
                .ok_or_else(|| Error::Internal("runs.table_versions builder".into()))?
                .append_value(table);
            s.field_builder::<arrow::array::Int64Builder>(1)
                .ok_or_else(|| Error::Internal("runs.table_versions builder".into()))?
                .append_value(*version);
            s.append(true);
        }
        versions.append(true);

        let columns: Vec<ArrayRef> = vec![
            string(&self.run_id),
            ts(&self.started_at),
            ts(&self.finished_at),
            string(&self.status),
            Arc::new(sources.finish()),
            string(&self.policy_name),
            string(&self.stamp.policy_hash),
            string(&self.stamp.key_id),
            Arc::new(BooleanArray::from(vec![self.stamp.deidentified])),
            Arc::new(hits.finish()),
            int(self.deid.free_text_default),
            int(self.deid.unknown_elements),
            int(self.deid.dropped_extensions),
            int(self.deid.dropped_resources),
            int(total.read),
            int(total.written),
            int(total.updated),
            int(total.unchanged),
            int(total.deleted),
            int(total.rejected),
            Arc::new(counts.finish()),
            Arc::new(versions.finish()),
            Arc::new(StringArray::from(vec![self.landing.as_deref()])),
            string(env!("CARGO_PKG_VERSION")),
            optional(self.export.as_ref().map(|e| e.base_url.as_str())),
            optional(self.export.as_ref().map(|e| e.request.as_str())),
            optional(self.export.as_ref().map(|e| e.transaction_time.as_str())),
            Arc::new(files.finish()),
            int(self.deid.malformed),
            int(self.unresolved_patient_references),
        ];
        RecordBatch::try_new(RUNS_SCHEMA.clone(), columns).map_err(|e| Error::Staging {
            table: TableId::runs().to_string(),
            reason: e.to_string(),
        })
    }
}

/// Appends one run to `lake.runs` (one Delta commit); returns the version written.
pub async fn record_run(lake: &Lake, record: &RunRecord) -> Result<i64> {
    let id = TableId::runs();
    let table = lake
        .load_or_create_table(&id, &RUNS_SCHEMA, &record.stamp, "fhirlake ingest runs")
        .await?;
    let batch = record.to_batch()?;
    let table = table
        .write(vec![batch])
        .with_save_mode(SaveMode::Append)
        // Lakes from before a column was added gain it here instead of failing the run.
        .with_schema_mode(deltalake::operations::write::SchemaMode::Merge)
        .await
        .map_err(|e| Error::delta(&id, e))?;
    Ok(table.version().unwrap_or_default() as i64)
}

/// The export of the last successful run that ingested one, `None` when there is none (also for lakes
/// written before `lake.runs` had the export columns).
pub async fn last_export(lake: &Lake) -> Result<Option<ExportRecord>> {
    let id = TableId::runs();
    if !lake.table_exists(&id).await? {
        return Ok(None);
    }
    let session = lake.session().await?;
    let probe = session.sql(&format!("SELECT * FROM {id} LIMIT 0")).await?;
    let has_columns = ["bulk_base_url", "bulk_request", "transaction_time"]
        .iter()
        .all(|c| probe.schema().has_column_with_unqualified_name(c));
    if !has_columns {
        return Ok(None);
    }
    let batches = session
        .sql(&format!(
            "SELECT bulk_base_url, bulk_request, transaction_time FROM {id} \
             WHERE transaction_time IS NOT NULL ORDER BY finished_at DESC LIMIT 1",
        ))
        .await?
        .collect()
        .await
        .map_err(|e| Error::datafusion(format!("reading {id}"), e))?;
    let Some(batch) = batches.iter().find(|b| b.num_rows() > 0) else {
        return Ok(None);
    };
    let column = |i: usize| -> Result<String> {
        let array = arrow::compute::cast(batch.column(i), &DataType::Utf8)
            .map_err(|e| Error::arrow(format!("reading {id}"), e))?;
        let strings = array
            .as_any()
            .downcast_ref::<StringArray>()
            .ok_or_else(|| Error::Internal("lake.runs export columns are not text".into()))?;
        Ok(strings.value(0).to_string())
    };
    Ok(Some(ExportRecord {
        base_url: column(0)?,
        request: column(1)?,
        transaction_time: column(2)?,
    }))
}
