//! A DataFusion [`SessionContext`] over a lake snapshot.
//!
//! Each Delta table version is resolved to its Parquet file list and registered as a plain
//! [`ListingTable`] (not delta-rs' own table provider): the plan then contains nothing but Parquet
//! scans, which any DataFusion executor (Ballista included) can run without custom codecs.
//! Schemas: the default schema holds views, `raw` the de-identified resources, `lake` the run log.

use std::sync::Arc;

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::catalog::{MemorySchemaProvider, TableProvider};
use datafusion::common::TableReference;
use datafusion::datasource::empty::EmptyTable;
use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::datasource::listing::{
    ListingOptions, ListingTable, ListingTableConfig, ListingTableUrl,
};
use datafusion::prelude::{DataFrame, SessionConfig, SessionContext};
use deltalake::DeltaTable;
use object_store::ObjectStore;
use url::Url;

use crate::{Error, Result};

/// Name of the default catalog.
pub const CATALOG: &str = "fhirlake";
/// Default schema (SQL-on-FHIR views).
pub const DEFAULT_SCHEMA: &str = "public";

/// One Delta table of the lake, loaded at the version the session should see.
#[derive(Debug)]
pub struct LakeTable {
    /// SQL schema: `raw`, `lake`, or [`DEFAULT_SCHEMA`] for views.
    pub schema: String,
    /// SQL table name, e.g. `observation`.
    pub name: String,
    /// The loaded Delta table (its loaded version is what queries see).
    pub table: DeltaTable,
}

/// A query session over one snapshot of a lake.
#[derive(Clone)]
pub struct LakeSession {
    ctx: SessionContext,
}

impl std::fmt::Debug for LakeSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LakeSession")
            .field("session_id", &self.ctx.session_id())
            .finish()
    }
}

impl LakeSession {
    /// Builds a session over `tables`. `stores` maps URL roots (e.g. `s3://bucket`) to the object
    /// stores that serve them; local files need none.
    pub fn try_new(
        tables: Vec<LakeTable>,
        stores: Vec<(Url, Arc<dyn ObjectStore>)>,
    ) -> Result<Self> {
        let config = SessionConfig::new()
            .with_default_catalog_and_schema(CATALOG, DEFAULT_SCHEMA)
            .with_create_default_catalog_and_schema(true)
            .with_information_schema(true);
        let mut ctx = SessionContext::new_with_config(config);
        // JSON access into `raw.*.resource` (json_get_str, json_get_int, `->`, `->>` ...).
        datafusion_functions_json::register_all(&mut ctx)?;
        crate::functions::register_all(&ctx);
        for (url, store) in stores {
            ctx.register_object_store(&url, store);
        }
        let catalog = ctx
            .catalog(CATALOG)
            .ok_or_else(|| Error::Output("default catalog missing".into()))?;
        for schema in ["raw", "lake"] {
            catalog.register_schema(schema, Arc::new(MemorySchemaProvider::new()))?;
        }
        for lake_table in tables {
            let provider = parquet_scan(&lake_table)?;
            let reference =
                TableReference::full(CATALOG, lake_table.schema.clone(), lake_table.name.clone());
            ctx.register_table(reference, provider)?;
        }
        Ok(Self { ctx })
    }

    /// The underlying DataFusion context (to register functions or inspect the catalog).
    pub fn context(&self) -> &SessionContext {
        &self.ctx
    }

    /// Plans one SQL statement.
    pub async fn sql(&self, query: &str) -> Result<DataFrame> {
        Ok(self.ctx.sql(query).await?)
    }
}

/// The table's current version as a plain Parquet scan over exactly its active files.
fn parquet_scan(lake_table: &LakeTable) -> Result<Arc<dyn TableProvider>> {
    let sql_name = format!("{}.{}", lake_table.schema, lake_table.name);
    let delta_err = |source| Error::Delta {
        table: sql_name.clone(),
        source,
    };
    let schema: SchemaRef = lake_table
        .table
        .snapshot()
        .map_err(delta_err)?
        .snapshot()
        .arrow_schema();
    let urls = lake_table
        .table
        .get_file_uris()
        .map_err(delta_err)?
        .map(|uri| ListingTableUrl::parse(uri.as_str()))
        .collect::<Result<Vec<_>, _>>()?;
    if urls.is_empty() {
        return Ok(Arc::new(EmptyTable::new(schema)));
    }
    let options =
        ListingOptions::new(Arc::new(ParquetFormat::default())).with_file_extension(".parquet");
    let config = ListingTableConfig::new_with_multi_paths(urls)
        .with_listing_options(options)
        .with_schema(schema);
    Ok(Arc::new(ListingTable::try_new(config)?))
}
