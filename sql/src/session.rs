//! A DataFusion [`SessionContext`] over a lake snapshot.
//!
//! Each Delta table version is resolved to its Parquet file list and registered as a plain
//! [`ListingTable`] (not delta-rs' own table provider): the plan then contains nothing but Parquet
//! scans, which any DataFusion executor (Ballista included) can run without custom codecs.
//! The schemas are the lake's, named by whoever lays the lake out (the engine) and handed in as
//! [`LakeSchemas`]: this crate spells none of them.
//! A session can be pinned to an earlier snapshot ([`pin_table`]) and given a per-query memory
//! limit with spill to disk ([`limited_runtime`]).

use std::sync::Arc;

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::catalog::{MemorySchemaProvider, TableProvider};
use datafusion::common::TableReference;
use datafusion::datasource::empty::EmptyTable;
use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::datasource::listing::{
    ListingOptions, ListingTable, ListingTableConfig, ListingTableUrl,
};
use datafusion::execution::disk_manager::DiskManagerBuilder;
use datafusion::execution::memory_pool::FairSpillPool;
use datafusion::execution::runtime_env::{RuntimeEnv, RuntimeEnvBuilder};
use datafusion::prelude::{DataFrame, SessionConfig, SessionContext};
use deltalake::logstore::{commit_uri_from_version, extract_version_from_filename};
use deltalake::{DeltaTable, DeltaTableError};
use object_store::{ObjectStore, ObjectStoreExt};
use url::Url;

use crate::service::{AsOf, Role};
use crate::{Error, Result};

/// Name of the default catalog.
pub const CATALOG: &str = "fhirlake";

/// The SQL schemas of a lake, as its layout names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LakeSchemas {
    /// The default schema: the SQL-on-FHIR views (every role reads it).
    pub views: &'static str,
    /// The de-identified resources, one table per type (stewards and researchers).
    pub resources: &'static str,
    /// The lake's own tables: run log, view registry, audit log (stewards).
    pub bookkeeping: &'static str,
}

impl LakeSchemas {
    /// Every schema, the default one first.
    pub fn all(&self) -> [&'static str; 3] {
        [self.views, self.resources, self.bookkeeping]
    }

    /// Whether `role` may read tables of schema `schema`.
    pub fn readable(&self, role: Role, schema: &str) -> bool {
        match role {
            Role::Steward => true,
            Role::Researcher => schema == self.views || schema == self.resources,
            Role::Analyst => schema == self.views,
        }
    }

    /// The schemas `role` may read, the default one first.
    pub fn readable_by(&self, role: Role) -> Vec<&'static str> {
        self.all()
            .into_iter()
            .filter(|schema| self.readable(role, schema))
            .collect()
    }
}

/// One Delta table of the lake, loaded at the version the session should see.
#[derive(Debug)]
pub struct LakeTable {
    /// SQL schema (one of the lake's [`LakeSchemas`]).
    pub schema: String,
    /// SQL table name, e.g. `observation`.
    pub name: String,
    /// The loaded Delta table (its loaded version is what queries see).
    pub table: DeltaTable,
}

/// One table ready to register: its SQL place and the provider that scans it.
#[derive(Clone)]
pub struct ScanTable {
    /// SQL schema.
    pub schema: String,
    /// SQL table name.
    pub name: String,
    /// The scan (from [`parquet_scan`]) or an in-memory table.
    pub provider: Arc<dyn TableProvider>,
}

impl std::fmt::Debug for ScanTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ScanTable({}.{})", self.schema, self.name)
    }
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
    /// Builds a session over just `tables` (each one's schema is created; the default schema
    /// is DataFusion's): a query that names its tables in full. `stores` maps URL roots (e.g.
    /// `s3://bucket`) to the object stores that serve them; local files need none.
    pub fn try_new(
        tables: Vec<LakeTable>,
        stores: Vec<(Url, Arc<dyn ObjectStore>)>,
    ) -> Result<Self> {
        Self::from_scans(
            scans_of(&tables)?,
            None,
            &[],
            stores,
            Arc::new(RuntimeEnv::default()),
        )
    }

    /// Builds a session over a lake's `tables`: `schemas.views` is the default schema, and every
    /// schema of `schemas` exists even when it holds no table.
    pub fn over_lake(
        tables: Vec<LakeTable>,
        schemas: &LakeSchemas,
        stores: Vec<(Url, Arc<dyn ObjectStore>)>,
    ) -> Result<Self> {
        Self::from_scans(
            scans_of(&tables)?,
            Some(schemas.views),
            &schemas.all(),
            stores,
            Arc::new(RuntimeEnv::default()),
        )
    }

    /// Builds a session over already resolved scans (cheap: no I/O) with `default_schema` (`None`:
    /// DataFusion's), creating the SQL schemas `schemas` even when they hold no table, with
    /// `runtime`'s memory pool and spill settings. A server builds one per query from a cached
    /// snapshot.
    pub fn from_scans(
        tables: Vec<ScanTable>,
        default_schema: Option<&str>,
        schemas: &[&str],
        stores: Vec<(Url, Arc<dyn ObjectStore>)>,
        runtime: Arc<RuntimeEnv>,
    ) -> Result<Self> {
        let mut config = SessionConfig::new()
            .with_create_default_catalog_and_schema(true)
            .with_information_schema(true);
        let default_schema = default_schema.map_or_else(
            || config.options().catalog.default_schema.clone(),
            str::to_string,
        );
        config = config.with_default_catalog_and_schema(CATALOG, &default_schema);
        let mut ctx = SessionContext::new_with_config_rt(config, runtime);
        // DataFusion 55's leaf-expression extraction breaks joins whose keys apply a function to
        // `json_get_str(...)` ("Schema error: No field named ... __datafusion_extracted_1",
        // apache/datafusion#22895, fixed upstream after 55). It only helps struct field access
        // prune columns; JSON paths into the `resource` text column gain nothing from it. Put
        // the rules back when the workspace moves to a DataFusion with the fix
        // (tests/slt/joins.slt has the query).
        for rule in ["extract_leaf_expressions", "push_down_leaf_projections"] {
            ctx.remove_optimizer_rule(rule);
        }
        // JSON access into `raw.*.resource` (json_get_str, json_get_int, `->`, `->>` ...).
        datafusion_functions_json::register_all(&mut ctx)?;
        crate::functions::register_all(&ctx);
        for (url, store) in stores {
            ctx.register_object_store(&url, store);
        }
        let catalog = ctx
            .catalog(CATALOG)
            .ok_or_else(|| Error::Output("default catalog missing".into()))?;
        for schema in schemas {
            if catalog.schema(schema).is_none() {
                catalog.register_schema(schema, Arc::new(MemorySchemaProvider::new()))?;
            }
        }
        for table in tables {
            if catalog.schema(&table.schema).is_none() {
                catalog.register_schema(&table.schema, Arc::new(MemorySchemaProvider::new()))?;
            }
            let reference = TableReference::full(CATALOG, table.schema, table.name);
            ctx.register_table(reference, table.provider)?;
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

/// Each table's current version as a Parquet scan.
fn scans_of(tables: &[LakeTable]) -> Result<Vec<ScanTable>> {
    tables
        .iter()
        .map(|t| {
            Ok(ScanTable {
                schema: t.schema.clone(),
                name: t.name.clone(),
                provider: parquet_scan(t)?,
            })
        })
        .collect()
}

/// A runtime whose memory pool holds at most `memory_limit` bytes (fair share between spilling
/// operators, spill files in the OS temporary directory); `None` means unbounded.
pub fn limited_runtime(memory_limit: Option<usize>) -> Result<Arc<RuntimeEnv>> {
    let mut builder =
        RuntimeEnvBuilder::new().with_disk_manager_builder(DiskManagerBuilder::default());
    if let Some(limit) = memory_limit {
        builder = builder.with_memory_pool(Arc::new(FairSpillPool::new(limit)));
    }
    Ok(builder.build_arc()?)
}

/// Loads `table` at the snapshot pin. Returns `false` when the table did not exist at the pin
/// (its history has no such version, or its first commit is newer than the instant), and
/// [`Error::VersionPurged`] / [`Error::InstantPurged`] when the pin is older than the history the
/// table still has (`fhirlake deid purge` removed it), before delta-rs is asked for it.
pub async fn pin_table(table: &mut DeltaTable, as_of: AsOf, sql_name: &str) -> Result<bool> {
    let delta_err = |source| Error::Delta {
        table: sql_name.to_string(),
        source,
    };
    match as_of {
        AsOf::Version(version) => {
            let Ok(version) = u64::try_from(version) else {
                return Ok(false);
            };
            let Some(latest) = table.version() else {
                return Ok(false);
            };
            if version > latest {
                return Ok(false);
            }
            if version < latest {
                let oldest = oldest_version(table).await.map_err(delta_err)?;
                if version < oldest {
                    return Err(Error::VersionPurged {
                        table: sql_name.to_string(),
                        version,
                        oldest,
                    });
                }
            }
            table.load_version(version).await.map_err(delta_err)?;
            Ok(true)
        }
        AsOf::Timestamp(instant) => {
            let oldest = oldest_version(table).await.map_err(delta_err)?;
            if oldest > 0
                && let Some(committed) = commit_time(table, oldest).await
                && instant < committed
            {
                return Err(Error::InstantPurged {
                    table: sql_name.to_string(),
                    instant: instant.to_rfc3339(),
                    oldest,
                    committed: committed.to_rfc3339(),
                });
            }
            table.load_with_datetime(instant).await.map_err(delta_err)?;
            // delta-rs falls back to the oldest version when the instant precedes the table:
            // check the loaded commit's time (the commit file's, as delta-rs' search uses).
            let state = table.snapshot().map_err(delta_err)?;
            Ok(state
                .version_timestamp(state.version())
                .is_none_or(|ts| ts <= instant.timestamp_millis()))
        }
    }
}

/// The oldest version of `table` that can still be loaded: 0 while its whole log is there,
/// otherwise its oldest checkpoint (a purge removes every log file before the checkpoint it
/// writes). Reads the listing of `_delta_log/`, nothing else.
async fn oldest_version(table: &DeltaTable) -> Result<u64, DeltaTableError> {
    let log_store = table.log_store();
    let listing = log_store
        .object_store(None)
        .list_with_delimiter(Some(log_store.log_path()))
        .await?;
    let (mut oldest_commit, mut oldest_checkpoint) = (None::<u64>, None::<u64>);
    for entry in &listing.objects {
        let Some(name) = entry.location.filename() else {
            continue;
        };
        let Some(version) = extract_version_from_filename(name) else {
            continue;
        };
        let oldest = if name.ends_with(".json") {
            &mut oldest_commit
        } else {
            &mut oldest_checkpoint
        };
        *oldest = Some(oldest.map_or(version, |v| v.min(version)));
    }
    Ok(match (oldest_commit, oldest_checkpoint) {
        (Some(0), _) => 0,
        (commit, checkpoint) => checkpoint.or(commit).unwrap_or(0),
    })
}

/// When `version` of `table` was committed: its commit file's time, as delta-rs' time travel
/// reads it; `None` when that file cannot be read.
async fn commit_time(table: &DeltaTable, version: u64) -> Option<chrono::DateTime<chrono::Utc>> {
    let meta = table
        .log_store()
        .object_store(None)
        .head(&commit_uri_from_version(Some(version)))
        .await
        .ok()?;
    Some(meta.last_modified)
}

/// The table's current version as a plain Parquet scan over exactly its active files.
pub fn parquet_scan(lake_table: &LakeTable) -> Result<Arc<dyn TableProvider>> {
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
