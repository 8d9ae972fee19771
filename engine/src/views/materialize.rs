//! Materializing a view into its `views/<name>` table.
//!
//! * No table yet (first ingest, `view add`), a table whose columns no longer match the
//!   definition (an upgraded built-in), or a forced rebuild: every row of the raw table is run
//!   through the view and the table is written in one commit (create, or overwrite).
//! * Otherwise (after an ingest) only the rows of resources that changed are replaced, in one
//!   Delta MERGE matched on `_resource_id`: old rows of those resources are deleted, new rows
//!   inserted. "Changed" is read from the lake itself, so that a run killed between its raw
//!   commits and its view commits is repaired by the next run: resources whose `raw.<type>`
//!   row was written by a run not (yet) recorded in `lake.runs` (this run, or a killed one), and
//!   view rows whose resource is no longer in the raw table (deleted).
//!
//! Resource JSON is read back from the raw table (the raw MERGE decides which version of a
//! resource wins only after the pipeline's parse is gone) and handed to
//! `ViewBatchBuilder::append_text`: flat views read it in one pass over the text, the others
//! parse it into the tree of `fhirlake_views::JsonParser`.

use std::sync::Arc;

use arrow::array::{ArrayRef, RecordBatch, StringArray, new_null_array};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::datasource::MemTable;
use datafusion::prelude::SessionContext;
use deltalake::DeltaTable;
use deltalake::kernel::transaction::CommitProperties;
use deltalake::protocol::SaveMode;
use fhirlake_sql::{LakeSession, LakeTable};
use fhirlake_views::run::RESOURCE_ID_COLUMN;
use fhirlake_views::{CompiledView, JsonParser, ViewBatchBuilder};
use futures::{StreamExt, TryStreamExt};

use crate::lake::{DeidStamp, Lake, TableId, layout};
use crate::{Error, Result};

/// The result of refreshing one view.
#[derive(Debug, Clone, Default)]
pub struct ViewOutcome {
    /// Rows written.
    pub rows: u64,
    /// Resources whose rows were replaced or removed.
    pub resources: u64,
    /// Resources the view could not turn into rows (reported, not written).
    pub failed: u64,
    /// The Delta version written, if a commit was made.
    pub version: Option<i64>,
    /// Whether the whole table was (re)built.
    pub rebuilt: bool,
}

const OP_COLUMN: &str = "_op";

/// Brings the table of `view` up to date with `raw.<view.resource>`; `run_id` labels the
/// commit, `force_rebuild` recomputes every row.
pub async fn refresh_view(
    lake: &Lake,
    stamp: &DeidStamp,
    view: &Arc<CompiledView>,
    run_id: &str,
    force_rebuild: bool,
) -> Result<ViewOutcome> {
    let name = view
        .name
        .clone()
        .ok_or(crate::error::ViewRefusal::UnnamedMaterialized)?;
    let id = TableId::view(&name);
    let raw_id = TableId::raw(&view.resource);
    let builder = ViewBatchBuilder::new(view.clone()).with_resource_id_column();
    let schema = builder.schema();
    let existing = lake.load_table(&id).await?;
    let rebuild = force_rebuild
        || match &existing {
            None => true,
            Some(table) => !same_columns(table, &schema),
        };
    let raw = lake.load_table(&raw_id).await?;
    let commit = |mode: &str| {
        CommitProperties::default().with_metadata([
            (
                layout::COMMIT_RUN_ID.to_string(),
                serde_json::Value::from(run_id),
            ),
            (
                layout::COMMIT_VIEW_REFRESH.to_string(),
                serde_json::Value::from(mode),
            ),
        ])
    };
    if rebuild {
        let (batches, touched, failed) = match raw {
            Some(raw) => {
                let session = session(lake, vec![(layout::SCHEMA_RAW, raw_id.name.clone(), raw)])?;
                let query = format!("SELECT id, resource FROM {raw_id}");
                compute_rows(&session, &query, builder, view).await?
            }
            None => (Vec::new(), Vec::new(), 0),
        };
        let rows: u64 = batches.iter().map(|b| b.num_rows() as u64).sum();
        let created = existing.is_none();
        let table = match existing {
            Some(table) => table,
            None => {
                lake.load_or_create_table(
                    &id,
                    &schema,
                    stamp,
                    &format!("SQL-on-FHIR view `{name}` over {raw_id}"),
                )
                .await?
            }
        };
        let mut batches = batches;
        if batches.is_empty() {
            if created {
                // A new, empty view (no resources of its type yet): the table exists, queries work.
                return Ok(ViewOutcome {
                    version: table.version().map(|v| v as i64),
                    rebuilt: true,
                    ..ViewOutcome::default()
                });
            }
            // Overwriting with no rows needs one (empty) batch to write.
            batches.push(RecordBatch::new_empty(schema.clone()));
        }
        let before = table.version();
        let table = table
            .write(batches)
            .with_save_mode(SaveMode::Overwrite)
            .with_schema_mode(deltalake::operations::write::SchemaMode::Overwrite)
            .with_commit_properties(commit("rebuild"))
            .await
            .map_err(|e| Error::delta(&id, e))?;
        let after = table.version();
        return Ok(ViewOutcome {
            rows,
            resources: touched.len() as u64,
            failed,
            version: (after != before)
                .then_some(after)
                .flatten()
                .map(|v| v as i64),
            rebuilt: true,
        });
    }
    let Some(table) = existing else {
        return Err(Error::Internal("view table vanished".into()));
    };
    let Some(raw) = raw else {
        // No raw table: nothing can have changed (tables are never dropped by ingest).
        return Ok(ViewOutcome::default());
    };
    let mut tables = vec![
        (layout::SCHEMA_RAW, raw_id.name.clone(), raw),
        (layout::SCHEMA_VIEWS, name.clone(), table.clone()),
    ];
    let runs_id = TableId::runs();
    let runs = lake.load_table(&runs_id).await?;
    let recorded_filter = if let Some(runs) = runs {
        tables.push((layout::SCHEMA_LAKE, runs_id.name.clone(), runs));
        format!(" WHERE run_id NOT IN (SELECT run_id FROM {runs_id})")
    } else {
        String::new()
    };
    let session = session(lake, tables)?;
    let query = format!("SELECT id, resource FROM {raw_id}{recorded_filter}");
    let (batches, mut affected, failed) = compute_rows(&session, &query, builder, view).await?;
    // View rows whose resource was deleted from the raw table.
    let orphans = format!(
        "SELECT DISTINCT {RESOURCE_ID_COLUMN} FROM {views}.{name} \
         EXCEPT SELECT id FROM {raw_id}",
        views = layout::SCHEMA_VIEWS,
    );
    let context = format!("finding deleted resources of view {name}");
    let orphan_batches: Vec<RecordBatch> = session
        .sql(&orphans)
        .await?
        .execute_stream()
        .await
        .map_err(|e| Error::datafusion(&context, e))?
        .try_collect()
        .await
        .map_err(|e| Error::datafusion(&context, e))?;
    for batch in &orphan_batches {
        let ids = text_column(batch, 0)?;
        affected.extend((0..batch.num_rows()).map(|i| ids.value(i).to_string()));
    }
    affected.sort();
    affected.dedup();
    if affected.is_empty() {
        return Ok(ViewOutcome::default());
    }
    let rows: u64 = batches.iter().map(|b| b.num_rows() as u64).sum();
    let resources = affected.len() as u64;
    let source = merge_source(&schema, batches, affected)?;
    let before = table.version();
    let (table, _metrics) = table
        .merge(
            source,
            format!(
                "target.{RESOURCE_ID_COLUMN} = source.{RESOURCE_ID_COLUMN} AND source.{OP_COLUMN} = 'delete'"
            ),
        )
        .with_source_alias("source")
        .with_target_alias("target")
        .with_commit_properties(commit("incremental"))
        .when_matched_delete(|delete| delete)
        .and_then(|merge| {
            merge.when_not_matched_insert(|insert| {
                let mut insert = insert.predicate(format!("source.{OP_COLUMN} = 'insert'"));
                for field in schema.fields() {
                    insert = insert.set(
                        format!("\"{}\"", field.name()),
                        format!("source.\"{}\"", field.name()),
                    );
                }
                insert
            })
        })
        .map_err(|e| Error::delta(&id, e))?
        .await
        .map_err(|e| Error::delta(&id, e))?;
    let after = table.version();
    Ok(ViewOutcome {
        rows,
        resources,
        failed,
        version: (after != before)
            .then_some(after)
            .flatten()
            .map(|v| v as i64),
        rebuilt: false,
    })
}

fn session(lake: &Lake, tables: Vec<(&str, String, DeltaTable)>) -> Result<LakeSession> {
    Ok(LakeSession::over_lake(
        tables
            .into_iter()
            .map(|(schema, name, table)| LakeTable {
                schema: schema.to_string(),
                name,
                table,
            })
            .collect(),
        &layout::LAKE_SCHEMAS,
        vec![lake.store_registration()],
    )?)
}

/// Does the table have exactly the view's columns (names and types, in order)?
fn same_columns(table: &DeltaTable, schema: &SchemaRef) -> bool {
    let Ok(snapshot) = table.snapshot() else {
        return false;
    };
    let existing = snapshot.snapshot().arrow_schema();
    existing.fields().len() == schema.fields().len()
        && existing
            .fields()
            .iter()
            .zip(schema.fields())
            .all(|(a, b)| a.name() == b.name() && equivalent(a.data_type(), b.data_type()))
}

/// Types equal after a Delta round trip (list item names and nullability may differ).
fn equivalent(a: &DataType, b: &DataType) -> bool {
    match (a, b) {
        (DataType::List(x), DataType::List(y)) => equivalent(x.data_type(), y.data_type()),
        (DataType::Utf8 | DataType::Utf8View | DataType::LargeUtf8, DataType::Utf8) => true,
        _ => a == b,
    }
}

/// Runs the view over the `(id, resource)` rows of `query`; returns the row batches, the ids of
/// the resources read, and how many resources failed.
async fn compute_rows(
    session: &LakeSession,
    query: &str,
    mut builder: ViewBatchBuilder,
    view: &Arc<CompiledView>,
) -> Result<(Vec<RecordBatch>, Vec<String>, u64)> {
    let context = format!("reading resources for view {}", view.label());
    let mut stream = session
        .sql(query)
        .await?
        .execute_stream()
        .await
        .map_err(|e| Error::datafusion(&context, e))?;
    let mut batches = Vec::new();
    let mut touched = Vec::new();
    let mut failed = 0u64;
    let mut parser = JsonParser::default();
    while let Some(batch) = stream.next().await {
        let batch = batch.map_err(|e| Error::datafusion(&context, e))?;
        let ids = text_column(&batch, 0)?;
        let resources = text_column(&batch, 1)?;
        for i in 0..batch.num_rows() {
            let id = ids.value(i);
            touched.push(id.to_string());
            let outcome = match builder.append_text(resources.value(i), &mut parser) {
                Ok(appended) => appended
                    .map(|_| ())
                    .map_err(|e| format!("{}: {}", e.element, e.reason)),
                Err(_) => Err("stored resource is not valid JSON".to_string()),
            };
            if let Err(reason) = outcome {
                failed += 1;
                // Lake ids are pseudonyms; the reason names view elements, never values.
                tracing::warn!(
                    "view {}: {} {id}: {reason}; the resource has no rows in the view",
                    view.label(),
                    view.resource
                );
            }
        }
        if builder.len() >= 65_536 {
            batches.push(builder.finish()?);
        }
    }
    if !builder.is_empty() {
        batches.push(builder.finish()?);
    }
    Ok((batches, touched, failed))
}

/// Column `i` of a raw-table batch as text (also read by `lake::purge`).
pub(crate) fn text_column(batch: &RecordBatch, i: usize) -> Result<StringArray> {
    let column = batch.column(i);
    let column = arrow::compute::cast(column, &DataType::Utf8)
        .map_err(|e| Error::arrow(format!("raw column {i}"), e))?;
    column
        .as_any()
        .downcast_ref::<StringArray>()
        .cloned()
        .ok_or_else(|| Error::Internal(format!("raw column {i} is not text")))
}

/// The MERGE source: new rows (`_op` = insert) and one delete marker per affected resource.
fn merge_source(
    schema: &SchemaRef,
    batches: Vec<RecordBatch>,
    affected: Vec<String>,
) -> Result<datafusion::prelude::DataFrame> {
    let mut fields: Vec<Field> = schema.fields().iter().map(|f| f.as_ref().clone()).collect();
    fields.push(Field::new(OP_COLUMN, DataType::Utf8, false));
    let source_schema = Arc::new(Schema::new(fields));
    let internal = |e| Error::arrow("view merge source", e);
    let mut source = Vec::with_capacity(batches.len() + 1);
    for batch in batches {
        let mut columns = batch.columns().to_vec();
        columns.push(Arc::new(StringArray::from(vec!["insert"; batch.num_rows()])) as ArrayRef);
        source.push(RecordBatch::try_new(source_schema.clone(), columns).map_err(internal)?);
    }
    let markers = affected.len();
    let mut columns: Vec<ArrayRef> = schema
        .fields()
        .iter()
        .map(|f| {
            if f.name() == RESOURCE_ID_COLUMN {
                Arc::new(StringArray::from(affected.clone())) as ArrayRef
            } else {
                new_null_array(f.data_type(), markers)
            }
        })
        .collect();
    columns.push(Arc::new(StringArray::from(vec!["delete"; markers])));
    source.push(RecordBatch::try_new(source_schema.clone(), columns).map_err(internal)?);
    let table = MemTable::try_new(source_schema, vec![source])
        .map_err(|e| Error::datafusion("view merge source", e))?;
    SessionContext::new()
        .read_table(Arc::new(table))
        .map_err(|e| Error::datafusion("view merge source", e))
}
