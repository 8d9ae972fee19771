//! `fhirlake deid purge`: removing a value that a faulty policy let into the lake, for good.
//!
//! After a policy fix, a purge
//! 1. takes the writer lock, restricts column statistics like an ingest does
//!    ([`Lake::restrict_statistics`]) and reads the lake's de-identification stamp (a lake written
//!    with `--unsafe-no-deid` is refused: its ids were never pseudonymized);
//! 2. re-applies the fixed policy to every row of the chosen `raw.<type>` tables with a
//!    [`PolicyEngine`] in re-apply mode (pseudonyms, encryption, date shifts and perturbation are
//!    left as they are, everything that removes or coarsens applies again) and rewrites, in one
//!    Delta MERGE per table, the rows whose resource text, `patient_id` or `last_updated` is not
//!    what the fixed policy gives; a resource the policy now drops is deleted;
//! 3. brings the views of those types up to date (the ingest's incremental refresh: the rewritten
//!    rows carry the purge's run id, not yet in `lake.runs`);
//! 4. records the purge in `lake.runs` (status `purged`);
//! 5. removes the history of every table it covered (the raw tables and their views): a full
//!    `VACUUM` with retention 0 deletes every data file the current version does not use, a
//!    checkpoint is written at the current version, and every log file before it (commits with
//!    their `add` statistics, older checkpoints) is deleted. Older versions can no longer be read
//!    (`--as-of` them fails); the current one is the only one left.
//!
//! The engine is given a fresh random key that is never stored or printed: re-apply mode derives
//! nothing from key material, and a random key makes sure that, should any method still use it,
//! its output could not be linked to anything. The lake's key is therefore not needed.
//!
//! Every step is safe to repeat: a purge killed part-way leaves each table at a committed version,
//! and running it again finishes the job (the views are repaired by the same "run not recorded"
//! rule the ingest uses, history is removed again).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, Int64Array, RecordBatch, StringArray, TimestampMicrosecondArray,
};
use arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use chrono::Utc;
use datafusion::datasource::MemTable;
use datafusion::prelude::SessionContext;
use deltalake::DeltaTable;
use deltalake::kernel::transaction::CommitProperties;
use deltalake::operations::vacuum::VacuumMode;
use fhirlake_deid::{DeidKey, Deidentifier as _, Disposition, Policy, PolicyEngine};
use fhirlake_sql::{LakeSession, LakeTable};
use futures::{StreamExt as _, TryStreamExt as _};
use serde_json::Value;

use super::layout::{self, timestamp_type};
use super::runs::{RunRecord, TypeCounts, record_run};
use super::{DeidStamp, Lake, TableGroup, TableId, table_stamp};
use crate::ingest::validate::stored_patient_compartment;
use crate::views::ViewOutcome;
use crate::views::materialize::text_column;
use crate::{Error, Result};

/// `lake.runs.status` of a purge.
pub const PURGE_STATUS: &str = "purged";

/// What the purge did (or, in a dry run, would do) to one raw table.
#[derive(Debug, Clone)]
pub struct TablePurge {
    /// The raw table.
    pub table: TableId,
    /// Its FHIR resource type (read from the rows; the table name when it is empty).
    pub resource_type: String,
    /// Rows read.
    pub rows: u64,
    /// Rows rewritten: their resource, `patient_id` or `last_updated` changed.
    pub rewritten: u64,
    /// Rows deleted: the fixed policy drops the whole resource.
    pub removed: u64,
    /// The Delta version of the rewrite (`None`: nothing to write, or a dry run).
    pub version: Option<i64>,
}

/// The history removed from one table.
#[derive(Debug, Clone)]
pub struct HistoryPurge {
    /// The table.
    pub table: TableId,
    /// The only version left (a checkpoint is written at it).
    pub version: i64,
    /// Data files deleted (no longer used by that version).
    pub files_deleted: u64,
    /// Delta log files deleted (commits and checkpoints before that version).
    pub log_files_deleted: u64,
}

/// The outcome of a purge.
#[derive(Debug, Clone)]
pub struct PurgeReport {
    /// The run id of the purge (in `lake.runs` and the commits' `fhirlake.runId`).
    pub run_id: String,
    /// Nothing was written.
    pub dry_run: bool,
    /// Policy name and hash re-applied.
    pub policy_name: String,
    /// Hash of the policy.
    pub policy_hash: String,
    /// Per raw table.
    pub tables: Vec<TablePurge>,
    /// Views refreshed after the rewrite.
    pub views: Vec<(TableId, ViewOutcome)>,
    /// History removed, per table (raw tables and their views).
    pub history: Vec<HistoryPurge>,
    /// The `lake.runs` version that records the purge.
    pub runs_version: Option<i64>,
}

/// Configures and runs one purge.
#[derive(Debug)]
pub struct Purge {
    lake: Lake,
    engine: Arc<PolicyEngine>,
    types: Vec<String>,
    dry_run: bool,
}

/// One raw row the fixed policy changes.
enum Change {
    /// New column values for the row `id`.
    Rewrite {
        id: String,
        patient_id: Option<String>,
        last_updated: Option<i64>,
        resource: String,
    },
    /// The policy drops the resource.
    Remove { id: String },
}

/// What re-applying the policy to one table found.
struct TableScan {
    resource_type: Option<String>,
    rows: u64,
    changes: Vec<Change>,
}

impl Purge {
    /// A purge of `lake` with the (fixed) `policy`, over every raw table.
    pub fn new(lake: Lake, policy: Policy) -> Result<Self> {
        let mut bytes = [0u8; 32];
        getrandom::fill(&mut bytes)
            .map_err(|e| Error::Internal(format!("no random bytes for the purge key: {e}")))?;
        let key = DeidKey::from_bytes(&bytes, "purge key")
            .map_err(|e| Error::Internal(format!("purge key: {e}")))?;
        Ok(Self {
            lake,
            engine: Arc::new(PolicyEngine::new(policy, key).with_reapply(true)),
            types: Vec::new(),
            dry_run: false,
        })
    }

    /// Only these resource types (`Observation`, ...); default: every raw table.
    pub fn with_types(mut self, types: Vec<String>) -> Self {
        self.types = types;
        self
    }

    /// Read and count only: nothing is written or deleted.
    pub fn with_dry_run(mut self, dry_run: bool) -> Self {
        self.dry_run = dry_run;
        self
    }

    /// Runs the purge.
    pub async fn run(self) -> Result<PurgeReport> {
        let started_at = Utc::now();
        let run_id = uuid::Uuid::now_v7().to_string();
        let _lock = if self.dry_run {
            None
        } else {
            Some(self.lake.lock()?)
        };
        if !self.dry_run {
            // Files the purge writes carry statistics of keys and instants only, also in a lake
            // written before statistics were restricted.
            self.lake.restrict_statistics().await?;
        }
        let raw_tables = self.selected_tables().await?;
        let stamp = self.lake_stamp(&raw_tables)?;
        let policy = self.engine.policy();
        let mut report = PurgeReport {
            run_id: run_id.clone(),
            dry_run: self.dry_run,
            policy_name: policy.name.clone(),
            policy_hash: policy.hash.clone(),
            tables: Vec::new(),
            views: Vec::new(),
            history: Vec::new(),
            runs_version: None,
        };

        let commit = CommitProperties::default().with_metadata([
            (
                layout::COMMIT_RUN_ID.to_string(),
                Value::from(run_id.as_str()),
            ),
            (
                "fhirlake.keyId".to_string(),
                Value::from(stamp.key_id.as_str()),
            ),
            (
                "fhirlake.purgePolicyHash".to_string(),
                Value::from(policy.hash.as_str()),
            ),
        ]);
        let mut table_versions = BTreeMap::new();
        let mut counts = BTreeMap::new();
        for (id, table) in raw_tables {
            let scan = self.scan(&id, &table).await?;
            let resource_type = scan
                .resource_type
                .clone()
                .unwrap_or_else(|| id.name.clone());
            let removed = scan
                .changes
                .iter()
                .filter(|c| matches!(c, Change::Remove { .. }))
                .count() as u64;
            let mut outcome = TablePurge {
                table: id.clone(),
                resource_type: resource_type.clone(),
                rows: scan.rows,
                rewritten: scan.changes.len() as u64 - removed,
                removed,
                version: None,
            };
            if !self.dry_run && !scan.changes.is_empty() {
                outcome.version = rewrite(&id, table, scan.changes, &run_id, &commit).await?;
                if let Some(version) = outcome.version {
                    table_versions.insert(id.to_string(), version);
                }
            }
            counts.insert(
                resource_type,
                TypeCounts {
                    read: outcome.rows,
                    updated: outcome.rewritten,
                    unchanged: outcome.rows - outcome.rewritten - outcome.removed,
                    deleted: outcome.removed,
                    ..TypeCounts::default()
                },
            );
            report.tables.push(outcome);
        }
        if self.dry_run {
            return Ok(report);
        }

        // The views of the purged types, brought up to date the way an ingest does it.
        let purged_raw: BTreeSet<TableId> = report.tables.iter().map(|t| t.table.clone()).collect();
        let mut history_tables: Vec<TableId> = purged_raw.iter().cloned().collect();
        for registered in crate::views::lake_views(&self.lake).await? {
            if !purged_raw.contains(&TableId::raw(&registered.view.resource)) {
                continue;
            }
            let id = registered.table_id();
            let outcome =
                crate::views::refresh_view(&self.lake, &stamp, &registered.view, &run_id, false)
                    .await?;
            if let Some(version) = outcome.version {
                table_versions.insert(id.to_string(), version);
            }
            history_tables.push(id.clone());
            report.views.push((id, outcome));
        }

        let record = RunRecord {
            run_id: run_id.clone(),
            started_at,
            finished_at: Utc::now(),
            status: PURGE_STATUS.to_string(),
            sources: Vec::new(),
            policy_name: report.policy_name.clone(),
            stamp: DeidStamp {
                policy_hash: report.policy_hash.clone(),
                ..stamp
            },
            deid: self.engine.stats(),
            counts,
            table_versions,
            landing: None,
            export: None,
            unresolved_patient_references: 0,
        };
        report.runs_version = Some(record_run(&self.lake, &record).await?);

        // Last: once history is gone, the purge cannot be undone.
        for id in history_tables {
            if let Some(table) = self.lake.load_table(&id).await? {
                report
                    .history
                    .push(drop_history(&id, table, &commit).await?);
            }
        }
        Ok(report)
    }

    /// The raw tables to purge, loaded at their newest version.
    async fn selected_tables(&self) -> Result<Vec<(TableId, DeltaTable)>> {
        let mut tables = Vec::new();
        if self.types.is_empty() {
            for (id, table) in self.lake.load_all().await? {
                if id.group == TableGroup::Raw {
                    tables.push((id, table));
                }
            }
            if tables.is_empty() {
                return Err(self.lake_error("has no raw tables: nothing to purge".into()));
            }
            return Ok(tables);
        }
        let mut seen = BTreeSet::new();
        for resource_type in &self.types {
            if !fhirlake_fhir::types::is_resource_type(resource_type) {
                return Err(self.lake_error(format!(
                    "--type {resource_type} is not a FHIR R4 resource type"
                )));
            }
            let id = TableId::raw(resource_type);
            if !seen.insert(id.clone()) {
                continue;
            }
            let table = self.lake.load_table(&id).await?.ok_or_else(|| {
                self.lake_error(format!("has no table {id} (--type {resource_type})"))
            })?;
            tables.push((id, table));
        }
        Ok(tables)
    }

    /// The lake's de-identification stamp (every table has the same key id: ingest refuses
    /// another); a lake without de-identification cannot be purged by re-applying a policy.
    fn lake_stamp(&self, tables: &[(TableId, DeltaTable)]) -> Result<DeidStamp> {
        let mut lake_stamp: Option<DeidStamp> = None;
        for (id, table) in tables {
            let stamp = table_stamp(table).ok_or_else(|| Error::Lake {
                location: id.to_string(),
                reason: "table has no fhirlake de-identification properties".into(),
            })?;
            if !stamp.deidentified {
                return Err(Error::Lake {
                    location: id.to_string(),
                    reason: "was written with --unsafe-no-deid: its ids and dates were never \
                             de-identified, and a purge only re-applies what removes values; \
                             ingest the sources into a new lake with a policy instead"
                        .into(),
                });
            }
            match &lake_stamp {
                Some(first) if first.key_id != stamp.key_id => {
                    return Err(Error::KeyMismatch {
                        table: id.to_string(),
                        lake_key: first.key_id.clone(),
                        run_key: stamp.key_id,
                    });
                }
                Some(_) => {}
                None => lake_stamp = Some(stamp),
            }
        }
        lake_stamp.ok_or_else(|| self.lake_error("has no raw tables: nothing to purge".into()))
    }

    /// Re-applies the policy to every row of one raw table; keeps only the rows that change.
    async fn scan(&self, id: &TableId, table: &DeltaTable) -> Result<TableScan> {
        let session = LakeSession::try_new(
            vec![LakeTable {
                schema: id.group.sql_schema().to_string(),
                name: id.name.clone(),
                table: table.clone(),
            }],
            vec![self.lake.store_registration()],
        )?;
        let context = format!("reading {id} for the purge");
        let mut stream = session
            .sql(&format!(
                "SELECT id, patient_id, last_updated, resource FROM {id}"
            ))
            .await?
            .execute_stream()
            .await
            .map_err(|e| Error::datafusion(&context, e))?;
        let mut scan = TableScan {
            resource_type: None,
            rows: 0,
            changes: Vec::new(),
        };
        while let Some(batch) = stream.next().await {
            let batch = batch.map_err(|e| Error::datafusion(&context, e))?;
            let engine = self.engine.clone();
            let table = id.clone();
            let part = tokio::task::spawn_blocking(move || reapply_batch(&engine, &table, &batch))
                .await
                .map_err(|e| Error::Internal(format!("purge worker: {e}")))??;
            scan.rows += part.rows;
            scan.changes.extend(part.changes);
            if scan.resource_type.is_none() {
                scan.resource_type = part.resource_type;
            }
        }
        Ok(scan)
    }

    fn lake_error(&self, reason: String) -> Error {
        Error::Lake {
            location: self.lake.url().to_string(),
            reason,
        }
    }
}

/// Re-applies the policy to one batch of `(id, patient_id, last_updated, resource)` rows.
fn reapply_batch(engine: &PolicyEngine, table: &TableId, batch: &RecordBatch) -> Result<TableScan> {
    let ids = text_column(batch, 0)?;
    let patients = text_column(batch, 1)?;
    let last_updated = micros_column(batch, 2)?;
    let resources = text_column(batch, 3)?;
    let fail = |row: usize, reason: String| Error::Lake {
        location: table.to_string(),
        // Row ids are pseudonyms; reasons name types and JSON paths, never values.
        reason: format!("row {}: {reason}", ids.value(row)),
    };
    let mut scan = TableScan {
        resource_type: None,
        rows: batch.num_rows() as u64,
        changes: Vec::new(),
    };
    for row in 0..batch.num_rows() {
        let id = ids.value(row);
        let old_text = resources.value(row);
        let mut resource: Value = serde_json::from_str(old_text).map_err(|e| {
            fail(
                row,
                format!("stored resource is not JSON (column {})", e.column()),
            )
        })?;
        let resource_type = resource
            .get("resourceType")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        match engine.deidentify(&mut resource) {
            Ok(Disposition::Keep) => {}
            Ok(Disposition::Drop { .. }) => {
                scan.changes.push(Change::Remove { id: id.to_string() });
                continue;
            }
            Err(e) => return Err(fail(row, format!("re-applying the policy failed: {e}"))),
        }
        if resource.get("id").and_then(Value::as_str) != Some(id) {
            return Err(fail(
                row,
                "re-applying the policy changed or removed the id; a purge never re-keys ids"
                    .into(),
            ));
        }
        let text = serde_json::to_string(&resource)
            .map_err(|e| fail(row, format!("re-serialisation failed: {e}")))?;
        let old_patient = (!patients.is_null(row)).then(|| patients.value(row));
        let patient_id = stored_patient_compartment(&resource, old_patient);
        let updated = stored_last_updated(&resource);
        let old_updated = (!last_updated.is_null(row)).then(|| last_updated.value(row));
        if text != old_text || patient_id.as_deref() != old_patient || updated != old_updated {
            scan.changes.push(Change::Rewrite {
                id: id.to_string(),
                patient_id,
                last_updated: updated,
                resource: text,
            });
        }
        if scan.resource_type.is_none() && !resource_type.is_empty() {
            scan.resource_type = Some(resource_type);
        }
    }
    Ok(scan)
}

/// `last_updated` as the ingest stores it: `meta.lastUpdated` of the de-identified resource,
/// in microseconds; `None` when the policy removed it.
fn stored_last_updated(resource: &Value) -> Option<i64> {
    let instant = resource.get("meta")?.get("lastUpdated")?.as_str()?;
    chrono::DateTime::parse_from_rfc3339(instant)
        .ok()
        .map(|t| t.timestamp_micros())
}

/// Writes the changed rows of one raw table in one MERGE; returns the version written.
async fn rewrite(
    id: &TableId,
    table: DeltaTable,
    changes: Vec<Change>,
    run_id: &str,
    commit: &CommitProperties,
) -> Result<Option<i64>> {
    let source = changes_frame(changes, run_id)?;
    let before = table.version();
    let (table, _metrics) = table
        .merge(source, "target.id = source.id")
        .with_source_alias("source")
        .with_target_alias("target")
        .with_commit_properties(commit.clone())
        .when_matched_delete(|delete| delete.predicate("source.op = 'remove'"))
        .and_then(|merge| {
            merge.when_matched_update(|update| {
                update
                    .predicate("source.op = 'rewrite'")
                    .update("patient_id", "source.patient_id")
                    .update("last_updated", "source.last_updated")
                    .update("resource", "source.resource")
                    .update("run_id", "source.run_id")
            })
        })
        .map_err(|e| Error::delta(id, e))?
        .await
        .map_err(|e| Error::delta(id, e))?;
    let after = table.version();
    Ok((after != before)
        .then_some(after)
        .flatten()
        .map(|v| v as i64))
}

/// The MERGE source: one row per change, `op` = `rewrite` or `remove`.
fn changes_frame(changes: Vec<Change>, run_id: &str) -> Result<datafusion::prelude::DataFrame> {
    let schema = Arc::new(Schema::new(vec![
        Field::new("id", DataType::Utf8, false),
        Field::new("patient_id", DataType::Utf8, true),
        Field::new("last_updated", timestamp_type(), true),
        Field::new("resource", DataType::Utf8, false),
        Field::new("run_id", DataType::Utf8, false),
        Field::new("op", DataType::Utf8, false),
    ]));
    let rows = changes.len();
    let (mut ids, mut patients, mut updated, mut resources, mut ops) = (
        Vec::with_capacity(rows),
        Vec::with_capacity(rows),
        Vec::with_capacity(rows),
        Vec::with_capacity(rows),
        Vec::with_capacity(rows),
    );
    for change in changes {
        match change {
            Change::Rewrite {
                id,
                patient_id,
                last_updated,
                resource,
            } => {
                ids.push(id);
                patients.push(patient_id);
                updated.push(last_updated);
                resources.push(resource);
                ops.push("rewrite");
            }
            Change::Remove { id } => {
                ids.push(id);
                patients.push(None);
                updated.push(None);
                resources.push(String::new());
                ops.push("remove");
            }
        }
    }
    let columns: Vec<ArrayRef> = vec![
        Arc::new(StringArray::from(ids)),
        Arc::new(StringArray::from(patients)),
        Arc::new(TimestampMicrosecondArray::from(updated).with_timezone("UTC")),
        Arc::new(StringArray::from(resources)),
        Arc::new(StringArray::from(vec![run_id; rows])),
        Arc::new(StringArray::from(ops)),
    ];
    let batch = RecordBatch::try_new(schema.clone(), columns)
        .map_err(|e| Error::arrow("purge merge source", e))?;
    let table = MemTable::try_new(schema, vec![vec![batch]])
        .map_err(|e| Error::datafusion("purge merge source", e))?;
    SessionContext::new()
        .read_table(Arc::new(table))
        .map_err(|e| Error::datafusion("purge merge source", e))
}

/// Deletes every data file and log entry of `table` except those of its current version.
async fn drop_history(
    id: &TableId,
    table: DeltaTable,
    commit: &CommitProperties,
) -> Result<HistoryPurge> {
    // Full mode: also files no tombstone names any more (expired tombstones, killed writers).
    let (table, metrics) = table
        .vacuum()
        .with_mode(VacuumMode::Full)
        .with_retention_period(chrono::Duration::zero())
        .with_enforce_retention_duration(false)
        .with_commit_properties(commit.clone())
        .await
        .map_err(|e| Error::delta(id, e))?;
    let version = table
        .version()
        .ok_or_else(|| Error::Internal(format!("{id} has no version after vacuum")))?;
    deltalake::checkpoints::create_checkpoint(&table, None)
        .await
        .map_err(|e| Error::delta(id, e))?;
    let log_store = table.log_store();
    // Cutoff "end of time": every log file before the checkpoint goes, however recent.
    let mut log_files_deleted = deltalake::checkpoints::cleanup_expired_logs_for(
        version,
        log_store.as_ref(),
        i64::MAX,
        None,
    )
    .await
    .map_err(|e| Error::delta(id, e))? as u64;
    // What the cleanup does not name (version checksums, compacted logs) but an old version owns.
    let store = log_store.object_store(None);
    let entries: Vec<object_store::ObjectMeta> = store
        .list(Some(log_store.log_path()))
        .try_collect()
        .await
        .map_err(|e| Error::Lake {
            location: id.to_string(),
            reason: format!("listing the Delta log: {e}"),
        })?;
    for entry in entries {
        let older = entry
            .location
            .filename()
            .and_then(log_file_version)
            .is_some_and(|v| v < version);
        if older {
            match object_store::ObjectStoreExt::delete(store.as_ref(), &entry.location).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => log_files_deleted += 1,
                Err(e) => {
                    return Err(Error::Lake {
                        location: id.to_string(),
                        reason: format!("deleting an old Delta log file: {e}"),
                    });
                }
            }
        }
    }
    Ok(HistoryPurge {
        table: id.clone(),
        version: version as i64,
        files_deleted: metrics.files_deleted.len() as u64,
        log_files_deleted,
    })
}

/// The version a Delta log file belongs to: its leading 20 digits.
fn log_file_version(name: &str) -> Option<u64> {
    let digits = name.get(..20)?;
    if !digits.bytes().all(|b| b.is_ascii_digit()) || name.as_bytes().get(20) != Some(&b'.') {
        return None;
    }
    digits.parse().ok()
}

fn micros_column(batch: &RecordBatch, i: usize) -> Result<Int64Array> {
    let internal = |e| Error::arrow(format!("raw column {i}"), e);
    let micros = arrow::compute::cast(
        batch.column(i),
        &DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
    )
    .map_err(internal)?;
    let column = arrow::compute::cast(&micros, &DataType::Int64).map_err(internal)?;
    column
        .as_any()
        .downcast_ref::<Int64Array>()
        .cloned()
        .ok_or_else(|| Error::Internal(format!("raw column {i} is not a timestamp")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_file_versions() {
        assert_eq!(log_file_version("00000000000000000007.json"), Some(7));
        assert_eq!(
            log_file_version("00000000000000000012.checkpoint.parquet"),
            Some(12)
        );
        assert_eq!(log_file_version("00000000000000000003.crc"), Some(3));
        assert_eq!(log_file_version("_last_checkpoint"), None);
        assert_eq!(log_file_version("0000000000000000000x.json"), None);
    }

    #[test]
    fn last_updated_is_read_from_the_stored_resource() {
        let resource = serde_json::json!({"meta": {"lastUpdated": "2024-01-02T03:04:05Z"}});
        assert_eq!(stored_last_updated(&resource), Some(1_704_164_645_000_000));
        assert_eq!(stored_last_updated(&serde_json::json!({"meta": {}})), None);
        assert_eq!(
            stored_last_updated(&serde_json::json!({"meta": {"lastUpdated": 3}})),
            None
        );
    }
}
