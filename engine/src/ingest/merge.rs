//! Commits one resource type's staged rows to its `raw.<type>` table as a single Delta MERGE.
//!
//! Within the run, rows are first reduced to one per id: the newest `meta.lastUpdated` wins, ties
//! go to the row read last, and a delete read after the winning version removes the resource.
//! The MERGE then applies the same rule against the table: an existing row is replaced only by a
//! version at least as new and different in content (so re-ingesting the same files rewrites
//! nothing), deletes remove rows, new ids are inserted.

use datafusion::execution::context::SessionContext;
use datafusion::prelude::ParquetReadOptions;
use deltalake::kernel::transaction::CommitProperties;

use super::staging::StagedType;
use crate::lake::layout::{self, RAW_SCHEMA};
use crate::lake::runs::TypeCounts;
use crate::lake::{DeidStamp, Lake, TableId};
use crate::{Error, Result};

/// Result of merging one type.
#[derive(Debug, Clone, Copy)]
pub struct MergeOutcome {
    /// Inserted, updated, unchanged and deleted rows.
    pub counts: TypeCounts,
    /// Delta version the commit produced (`None` if nothing had to be written).
    pub version: Option<i64>,
}

/// Merges `staged` into `raw.<resource_type>`.
pub async fn merge_type(
    lake: &Lake,
    stamp: &DeidStamp,
    run_id: &str,
    resource_type: &str,
    staged: &StagedType,
) -> Result<MergeOutcome> {
    let id = TableId::raw(resource_type);
    let table = lake
        .load_or_create_table(
            &id,
            &RAW_SCHEMA,
            stamp,
            &format!("De-identified FHIR {resource_type} resources"),
        )
        .await?;

    let ctx = SessionContext::new();
    let path = staged.path.display().to_string();
    ctx.register_parquet("staged", &path, ParquetReadOptions::default())
        .await
        .map_err(|e| Error::datafusion(format!("reading staged {id}"), e))?;
    let dedup = format!(
        "WITH upserts AS (
            SELECT id, patient_id, last_updated, resource, seq FROM (
                SELECT *, row_number() OVER (
                    PARTITION BY id ORDER BY last_updated DESC NULLS LAST, seq DESC) AS rank
                FROM staged WHERE op = 'upsert')
            WHERE rank = 1),
         deletes AS (SELECT id, max(seq) AS seq FROM staged WHERE op = 'delete' GROUP BY id)
         SELECT coalesce(u.id, d.id) AS id, u.patient_id, u.last_updated,
                coalesce(u.resource, '') AS resource, '{run_id}' AS run_id,
                CASE WHEN d.seq IS NOT NULL AND (u.seq IS NULL OR d.seq > u.seq)
                     THEN 'delete' ELSE 'upsert' END AS op
         FROM upserts u FULL OUTER JOIN deletes d ON u.id = d.id"
    );
    let source = ctx
        .sql(&dedup)
        .await
        .map_err(|e| Error::datafusion(format!("deduplicating {id}"), e))?;
    let upserts = source
        .clone()
        .filter(datafusion::prelude::col("op").eq(datafusion::prelude::lit("upsert")))
        .map_err(|e| Error::datafusion(format!("counting {id}"), e))?
        .count()
        .await
        .map_err(|e| Error::datafusion(format!("counting {id}"), e))? as u64;

    let commit = CommitProperties::default().with_metadata([
        (
            layout::COMMIT_RUN_ID.to_string(),
            serde_json::Value::from(run_id),
        ),
        (
            "fhirlake.keyId".to_string(),
            serde_json::Value::from(stamp.key_id.as_str()),
        ),
    ]);
    let before = table.version();
    let (table, metrics) = table
        .merge(source, "target.id = source.id")
        .with_source_alias("source")
        .with_target_alias("target")
        .with_commit_properties(commit)
        .when_matched_delete(|delete| delete.predicate("source.op = 'delete'"))
        .and_then(|merge| {
            merge.when_matched_update(|update| {
                update
                    .predicate(
                        "source.op = 'upsert' AND source.resource <> target.resource AND \
                         (target.last_updated IS NULL OR source.last_updated IS NULL \
                          OR source.last_updated >= target.last_updated)",
                    )
                    .update("patient_id", "source.patient_id")
                    .update("last_updated", "source.last_updated")
                    .update("resource", "source.resource")
                    .update("run_id", "source.run_id")
            })
        })
        .and_then(|merge| {
            merge.when_not_matched_insert(|insert| {
                insert
                    .predicate("source.op = 'upsert'")
                    .set("id", "source.id")
                    .set("patient_id", "source.patient_id")
                    .set("last_updated", "source.last_updated")
                    .set("resource", "source.resource")
                    .set("run_id", "source.run_id")
            })
        })
        .map_err(|e| Error::delta(&id, e))?
        .await
        .map_err(|e| Error::delta(&id, e))?;

    let inserted = metrics.num_target_rows_inserted as u64;
    let updated = metrics.num_target_rows_updated as u64;
    let deleted = metrics.num_target_rows_deleted as u64;
    let after = table.version();
    Ok(MergeOutcome {
        counts: TypeCounts {
            written: inserted,
            updated,
            unchanged: upserts.saturating_sub(inserted + updated),
            deleted,
            ..TypeCounts::default()
        },
        version: if after != before {
            after.map(|v| v as i64)
        } else {
            None
        },
    })
}
