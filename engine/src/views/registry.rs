//! The views of a lake: every built-in view, plus custom ViewDefinitions registered in the
//! `lake.views` table (name, resource type, definition JSON, hash, when added).

use std::sync::Arc;

use arrow::array::{ArrayRef, RecordBatch, StringArray, TimestampMicrosecondArray};
use chrono::Utc;
use deltalake::kernel::transaction::CommitProperties;
use deltalake::protocol::SaveMode;
use fhirlake_sql::{LakeSession, LakeTable};
use fhirlake_views::CompiledView;
use fhirlake_views::builtin::{BUILTIN_VIEWS, builtin_views};
use futures::TryStreamExt;

use crate::error::ViewRefusal;
use crate::lake::layout::{self, VIEWS_SCHEMA};
use crate::lake::{DeidStamp, Lake, TableGroup, TableId};
use crate::{Error, Result};

/// Where a view's definition comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ViewSource {
    /// Shipped in the binary.
    Builtin,
    /// Added with `fhirlake view add` (stored in `lake.views`).
    Custom,
}

impl ViewSource {
    /// `builtin` / `custom`.
    pub fn as_str(self) -> &'static str {
        match self {
            ViewSource::Builtin => "builtin",
            ViewSource::Custom => "custom",
        }
    }
}

/// A view the lake maintains.
#[derive(Debug, Clone)]
pub struct RegisteredView {
    /// The compiled definition.
    pub view: Arc<CompiledView>,
    /// Built-in or custom.
    pub source: ViewSource,
}

impl RegisteredView {
    /// The view's table.
    pub fn table_id(&self) -> TableId {
        TableId::view(self.view.name.as_deref().unwrap_or_default())
    }
}

/// `lake.views`.
pub fn views_table() -> TableId {
    TableId {
        group: TableGroup::Lake,
        name: layout::TABLE_VIEWS.to_string(),
    }
}

/// Every view of the lake: the built-ins, then the custom ones by name.
pub async fn lake_views(lake: &Lake) -> Result<Vec<RegisteredView>> {
    let mut views: Vec<RegisteredView> = builtin_views()?
        .into_iter()
        .map(|view| RegisteredView {
            view,
            source: ViewSource::Builtin,
        })
        .collect();
    for (_, definition) in custom_definitions(lake).await? {
        let view = CompiledView::from_json_text(&definition)?;
        views.push(RegisteredView {
            view: Arc::new(view),
            source: ViewSource::Custom,
        });
    }
    Ok(views)
}

/// (name, definition JSON) of the custom views, by name.
pub async fn custom_definitions(lake: &Lake) -> Result<Vec<(String, String)>> {
    let id = views_table();
    let Some(table) = lake.load_table(&id).await? else {
        return Ok(Vec::new());
    };
    let session = LakeSession::try_new(
        vec![LakeTable {
            schema: layout::SCHEMA_LAKE.into(),
            name: layout::TABLE_VIEWS.into(),
            table,
        }],
        vec![lake.store_registration()],
    )?;
    let batches = session
        .sql(&format!("SELECT name, definition FROM {id} ORDER BY name"))
        .await?
        .execute_stream()
        .await
        .map_err(|e| Error::datafusion("reading lake.views", e))?
        .try_collect::<Vec<_>>()
        .await
        .map_err(|e| Error::datafusion("reading lake.views", e))?;
    let mut out = Vec::new();
    for batch in batches {
        let names = string_column(&batch, 0)?;
        let definitions = string_column(&batch, 1)?;
        for i in 0..batch.num_rows() {
            out.push((names.value(i).to_string(), definitions.value(i).to_string()));
        }
    }
    Ok(out)
}

fn string_column(batch: &RecordBatch, i: usize) -> Result<&StringArray> {
    batch
        .column(i)
        .as_any()
        .downcast_ref::<StringArray>()
        .ok_or_else(|| Error::Internal("lake.views: unexpected column type".into()))
}

/// Registers a custom view (validated by compiling it). Its name must be new and not a built-in.
pub async fn register_view(
    lake: &Lake,
    stamp: &DeidStamp,
    definition: &str,
) -> Result<Arc<CompiledView>> {
    let view = CompiledView::from_json_text(definition)?;
    let Some(name) = view.name.clone() else {
        return Err(ViewRefusal::Unnamed.into());
    };
    if name.starts_with('_') || name.bytes().any(|b| b.is_ascii_uppercase()) {
        return Err(ViewRefusal::NotSnakeCase(name).into());
    }
    if BUILTIN_VIEWS.iter().any(|(n, _)| *n == name) {
        return Err(ViewRefusal::BuiltinName(name).into());
    }
    if custom_definitions(lake)
        .await?
        .iter()
        .any(|(n, _)| *n == name)
    {
        return Err(ViewRefusal::Exists(name).into());
    }
    let id = views_table();
    let table = lake
        .load_or_create_table(
            &id,
            &VIEWS_SCHEMA,
            stamp,
            "Custom SQL-on-FHIR views of this lake",
        )
        .await?;
    let row = RecordBatch::try_new(
        VIEWS_SCHEMA.clone(),
        vec![
            Arc::new(StringArray::from(vec![name.clone()])) as ArrayRef,
            Arc::new(StringArray::from(vec![view.resource.clone()])),
            Arc::new(StringArray::from(vec![definition.to_string()])),
            Arc::new(StringArray::from(vec![
                blake3::hash(definition.as_bytes()).to_hex()[..16].to_string(),
            ])),
            Arc::new(
                TimestampMicrosecondArray::from(vec![Utc::now().timestamp_micros()])
                    .with_timezone("UTC"),
            ),
        ],
    )
    .map_err(|e| Error::arrow(format!("{id} row"), e))?;
    table
        .write(vec![row])
        .with_save_mode(SaveMode::Append)
        .with_commit_properties(CommitProperties::default())
        .await
        .map_err(|e| Error::delta(&id, e))?;
    Ok(Arc::new(view))
}

/// The de-identification stamp of a lake (read from its tables); `None` for an empty lake.
pub async fn lake_stamp(lake: &Lake) -> Result<Option<DeidStamp>> {
    for (_, table) in lake.load_all().await? {
        if let Some(stamp) = crate::lake::table_stamp(&table) {
            return Ok(Some(stamp));
        }
    }
    Ok(None)
}

/// Removes a custom view: its row in `lake.views` and its table. Built-ins cannot be dropped.
pub async fn drop_view(lake: &Lake, name: &str) -> Result<()> {
    if BUILTIN_VIEWS.iter().any(|(n, _)| *n == name) {
        return Err(ViewRefusal::BuiltinDrop(name.to_string()).into());
    }
    if !custom_definitions(lake)
        .await?
        .iter()
        .any(|(n, _)| n == name)
    {
        return Err(ViewRefusal::NoSuchView(name.to_string()).into());
    }
    let id = views_table();
    if let Some(table) = lake.load_table(&id).await? {
        let predicate = format!("name = '{}'", name.replace('\'', "''"));
        table
            .delete()
            .with_predicate(predicate)
            .await
            .map_err(|e| Error::delta(&id, e))?;
    }
    lake.remove_table(&TableId::view(name)).await
}
