//! The query service: [`LakeQueryService`], the lake side of the Flight SQL server (the
//! [`QueryService`] seam of `fhirlake-sql`).
//!
//! Per query, a fresh DataFusion session (its own memory pool) over a cached lake snapshot,
//! holding only the tables the caller's role may read. The newest snapshot is reloaded at most
//! every `refresh`; pinned snapshots (`as_of`) are kept as they are, a bounded number of them.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use datafusion::prelude::DataFrame;
use fhirlake_sql::session::{CATALOG, ScanTable, limited_runtime, parquet_scan};
use fhirlake_sql::{AsOf, Caller, LakeSchemas, LakeSession, QueryService, Role, TableInfo};

use crate::lake::Lake;
use crate::lake::layout::{self, LAKE_SCHEMAS};

/// Pinned snapshots kept in memory (each pin a client set; the newest snapshot is always kept).
const MAX_PINNED_SNAPSHOTS: usize = 16;

/// One resolved lake snapshot: every table as a Parquet scan.
struct Snapshot {
    loaded: Instant,
    tables: Vec<ScanTable>,
}

/// The query side of the Flight SQL server over a lake.
pub struct LakeQueryService {
    lake: Lake,
    memory_limit: Option<usize>,
    audit_log: PathBuf,
    refresh: Duration,
    snapshots: Mutex<HashMap<Option<AsOf>, Arc<Snapshot>>>,
}

impl std::fmt::Debug for LakeQueryService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LakeQueryService")
            .field("lake", &self.lake.url().as_str())
            .field("memory_limit", &self.memory_limit)
            .field("refresh", &self.refresh)
            .finish_non_exhaustive()
    }
}

impl LakeQueryService {
    /// A service over `lake`: each query may use `memory_limit` bytes (`None`: unbounded),
    /// stewards also see `audit_log` as `lake.audit`, and the newest snapshot is reloaded at most
    /// every `refresh`.
    pub fn new(
        lake: Lake,
        memory_limit: Option<usize>,
        audit_log: PathBuf,
        refresh: Duration,
    ) -> Self {
        Self {
            lake,
            memory_limit,
            audit_log,
            refresh,
            snapshots: Mutex::new(HashMap::new()),
        }
    }

    async fn snapshot(&self, as_of: Option<AsOf>) -> fhirlake_sql::Result<Arc<Snapshot>> {
        {
            let cache = self.snapshots.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(snapshot) = cache.get(&as_of)
                && (as_of.is_some() || snapshot.loaded.elapsed() < self.refresh)
            {
                return Ok(snapshot.clone());
            }
        }
        let loaded = match self.lake.snapshot_tables(as_of).await {
            Ok(tables) => tables,
            // A pin older than the purged history says so as it is.
            Err(crate::Error::Sql(e)) => return Err(*e),
            Err(e) => {
                return Err(fhirlake_sql::Error::Server(format!(
                    "loading the lake: {e}"
                )));
            }
        };
        let mut tables = Vec::with_capacity(loaded.len());
        for lake_table in loaded {
            tables.push(ScanTable {
                provider: parquet_scan(&lake_table)?,
                schema: lake_table.schema,
                name: lake_table.name,
            });
        }
        let snapshot = Arc::new(Snapshot {
            loaded: Instant::now(),
            tables,
        });
        let mut cache = self.snapshots.lock().unwrap_or_else(|e| e.into_inner());
        if cache.len() > MAX_PINNED_SNAPSHOTS {
            cache.retain(|key, _| key.is_none());
        }
        cache.insert(as_of, snapshot.clone());
        Ok(snapshot)
    }

    /// The tables `caller` may read (with `lake.audit` for stewards), sorted by schema and name.
    async fn visible(&self, caller: &Caller) -> fhirlake_sql::Result<Vec<ScanTable>> {
        let snapshot = self.snapshot(caller.options.as_of).await?;
        let mut tables: Vec<ScanTable> = snapshot
            .tables
            .iter()
            .filter(|t| LAKE_SCHEMAS.readable(caller.role, &t.schema))
            .cloned()
            .collect();
        if caller.role == Role::Steward {
            tables.push(ScanTable {
                schema: layout::SCHEMA_LAKE.into(),
                name: layout::TABLE_AUDIT.into(),
                provider: fhirlake_sql::flight::audit::audit_table(&self.audit_log)?,
            });
        }
        tables.sort_by(|a, b| (&a.schema, &a.name).cmp(&(&b.schema, &b.name)));
        Ok(tables)
    }
}

#[async_trait::async_trait]
impl QueryService for LakeQueryService {
    async fn plan(&self, caller: &Caller, sql: &str) -> fhirlake_sql::Result<DataFrame> {
        let tables = self.visible(caller).await?;
        let schemas: Vec<&str> = [layout::SCHEMA_RAW, layout::SCHEMA_LAKE]
            .into_iter()
            .filter(|s| LAKE_SCHEMAS.readable(caller.role, s))
            .collect();
        let session = LakeSession::from_scans(
            tables,
            Some(layout::SCHEMA_VIEWS),
            &schemas,
            vec![self.lake.store_registration()],
            limited_runtime(self.memory_limit)?,
        )?;
        fhirlake_sql::service::plan_read_only(&session, caller, sql).await
    }

    async fn tables(&self, caller: &Caller) -> fhirlake_sql::Result<Vec<TableInfo>> {
        Ok(self
            .visible(caller)
            .await?
            .into_iter()
            .map(|t| TableInfo {
                catalog: CATALOG.to_string(),
                arrow_schema: t.provider.schema(),
                schema: t.schema,
                name: t.name,
                table_type: "TABLE",
            })
            .collect())
    }

    fn schemas(&self) -> LakeSchemas {
        LAKE_SCHEMAS
    }
}
