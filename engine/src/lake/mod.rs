//! The lake: one URL (local directory, `file://` or `s3://`) holding one Delta table per table name.
//!
//! Layout ([`layout`]): `raw/<type>`, `views/<name>`, `lake/runs`, `lake/views`. This module owns
//! opening and creating those tables, recording the de-identification key id and policy hash as
//! table properties (and refusing to mix key ids), discovering the tables for a query snapshot,
//! and the writer lock.

pub mod layout;
mod lock;
pub mod purge;
pub mod risk;
pub mod runs;
mod snapshot;
mod store;
pub mod table_id;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use arrow::datatypes::SchemaRef;
use deltalake::kernel::StructType;
use deltalake::kernel::engine::arrow_conversion::TryIntoKernel;
use deltalake::{DeltaTable, DeltaTableBuilder, DeltaTableError};
use fhirlake_connectors::StoreOptions;
use fhirlake_sql::LakeSession;
use futures::TryStreamExt;
use object_store::ObjectStore;
use object_store::path::Path as StorePath;
use url::Url;

pub use layout::{
    PROP_DEIDENTIFIED, PROP_KEY_ID, PROP_POLICY_HASH, PROP_STATS_COLUMNS, PROP_STATS_NUM_COLUMNS,
    STATS_SAFE_COLUMNS, statistics_properties,
};
pub use lock::LakeLock;
pub use table_id::{TableGroup, TableId, snake_case};

use crate::{Error, Result};

/// The de-identification facts stamped on every table a run creates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeidStamp {
    /// Key id (hash prefix) or `none`.
    pub key_id: String,
    /// Policy hash.
    pub policy_hash: String,
    /// Whether identifiers were removed.
    pub deidentified: bool,
}

/// A lake location with its object store.
#[derive(Debug, Clone)]
pub struct Lake {
    url: Url,
    store: Arc<dyn ObjectStore>,
    root: StorePath,
    options: StoreOptions,
}

impl Lake {
    /// Resolves a lake location: a local path (made absolute) or a `file://` / `s3://` URL.
    /// Does no I/O for remote lakes; creates nothing.
    pub fn open(location: &str, options: StoreOptions) -> Result<Self> {
        let url = parse_location(location)?;
        store::register_delta_handlers(&url);
        let (store, root) = fhirlake_connectors::object_store_for_url(&url, &options)?;
        Ok(Self {
            url,
            store,
            root,
            options,
        })
    }

    /// The lake URL (always ends with `/`).
    pub fn url(&self) -> &Url {
        &self.url
    }

    /// The local directory of a `file://` lake.
    pub fn local_dir(&self) -> Option<PathBuf> {
        (self.url.scheme() == "file")
            .then(|| self.url.to_file_path().ok())
            .flatten()
    }

    /// Root object store (bucket or filesystem root) and the URL it serves, for query sessions.
    pub fn store_registration(&self) -> (Url, Arc<dyn ObjectStore>) {
        let mut root = self.url.clone();
        root.set_path("/");
        (root, self.store.clone())
    }

    /// Creates the local lake directory if needed (remote lakes need no folders).
    pub fn ensure_exists(&self) -> Result<()> {
        if let Some(dir) = self.local_dir() {
            std::fs::create_dir_all(&dir).map_err(|e| Error::io(dir.display(), e))?;
        }
        Ok(())
    }

    /// Takes the writer lock (see [`LakeLock`]).
    pub fn lock(&self) -> Result<LakeLock> {
        LakeLock::acquire(self)
    }

    /// URL of a table folder.
    pub fn table_url(&self, id: &TableId) -> Result<Url> {
        self.url
            .join(&format!("{}/", id.relative_path()))
            .map_err(|e| Error::Lake {
                location: self.url.to_string(),
                reason: format!("bad table path {}: {e}", id.relative_path()),
            })
    }

    fn builder(&self, id: &TableId) -> Result<DeltaTableBuilder> {
        let options: HashMap<String, String> = self.options.options.iter().cloned().collect();
        Ok(DeltaTableBuilder::from_url(self.table_url(id)?)
            .map_err(|e| Error::delta(id, e))?
            .with_storage_options(options))
    }

    /// Loads a table at its newest version; `None` when it does not exist yet.
    pub async fn load_table(&self, id: &TableId) -> Result<Option<DeltaTable>> {
        if !self.table_exists(id).await? {
            return Ok(None);
        }
        self.load_listed_table(id).await
    }

    /// Loads a table already known to have a Delta log (skips the existence listing).
    async fn load_listed_table(&self, id: &TableId) -> Result<Option<DeltaTable>> {
        match self.builder(id)?.load().await {
            Ok(table) => Ok(Some(table)),
            Err(DeltaTableError::NotATable(_)) => Ok(None),
            Err(e) => Err(Error::delta(id, e)),
        }
    }

    /// Loads a table, creating it with `schema` and the run's de-identification stamp if missing.
    /// An existing table whose key id differs from the stamp is refused.
    pub async fn load_or_create_table(
        &self,
        id: &TableId,
        schema: &SchemaRef,
        stamp: &DeidStamp,
        comment: &str,
    ) -> Result<DeltaTable> {
        if let Some(table) = self.load_table(id).await? {
            check_stamp(id, &table, stamp)?;
            return Ok(table);
        }
        let kernel_schema: StructType =
            schema
                .as_ref()
                .try_into_kernel()
                .map_err(|e| Error::Staging {
                    table: id.to_string(),
                    reason: format!("schema conversion: {e}"),
                })?;
        let table = self.builder(id)?.build().map_err(|e| Error::delta(id, e))?;
        let configuration: HashMap<String, Option<String>> = [
            (PROP_KEY_ID.to_string(), stamp.key_id.clone()),
            (PROP_POLICY_HASH.to_string(), stamp.policy_hash.clone()),
            (
                PROP_DEIDENTIFIED.to_string(),
                stamp.deidentified.to_string(),
            ),
        ]
        .into_iter()
        .chain(statistics_properties(
            schema.fields().iter().map(|f| f.name().as_str()),
        ))
        .map(|(k, v)| (k, Some(v)))
        .collect();
        let created = table
            .create()
            .with_table_name(id.to_string())
            .with_comment(comment)
            .with_columns(kernel_schema.fields().cloned())
            .with_configuration(configuration)
            .with_raise_if_key_not_exists(false)
            .await;
        match created {
            Ok(table) => Ok(table),
            // Another writer created it between our load and create: use theirs.
            Err(DeltaTableError::VersionAlreadyExists(_)) | Err(DeltaTableError::Generic(_)) => {
                let table = self.load_table(id).await?.ok_or_else(|| {
                    Error::Internal(format!("table {id} vanished during creation"))
                })?;
                check_stamp(id, &table, stamp)?;
                Ok(table)
            }
            Err(e) => Err(Error::delta(id, e)),
        }
    }

    /// Whether the table folder has a Delta log.
    pub async fn table_exists(&self, id: &TableId) -> Result<bool> {
        let log = self
            .root
            .clone()
            .join(id.group.folder())
            .join(id.name.as_str());
        self.has_delta_log(&log).await
    }

    async fn has_delta_log(&self, table_dir: &StorePath) -> Result<bool> {
        let log = table_dir.clone().join(layout::DELTA_LOG);
        Ok(self
            .store
            .list(Some(&log))
            .try_next()
            .await
            .map_err(|e| self.store_error(e))?
            .is_some())
    }

    /// Deletes a table folder and everything in it (`fhirlake view drop`).
    pub async fn remove_table(&self, id: &TableId) -> Result<()> {
        let prefix = self
            .root
            .clone()
            .join(id.group.folder())
            .join(id.name.as_str());
        let paths: Vec<StorePath> = self
            .store
            .list(Some(&prefix))
            .map_ok(|meta| meta.location)
            .try_collect()
            .await
            .map_err(|e| self.store_error(e))?;
        for path in paths {
            match object_store::ObjectStoreExt::delete(self.store.as_ref(), &path).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(self.store_error(e)),
            }
        }
        if let Some(dir) = self.local_dir() {
            // Local stores leave empty folders behind.
            let _ = std::fs::remove_dir_all(dir.join(id.relative_path()));
        }
        Ok(())
    }

    /// Every table that exists in the lake, sorted by group then name.
    pub async fn table_ids(&self) -> Result<Vec<TableId>> {
        let mut ids = Vec::new();
        for group in TableGroup::ALL {
            let prefix = self.root.clone().join(group.folder());
            let listing = self
                .store
                .list_with_delimiter(Some(&prefix))
                .await
                .map_err(|e| self.store_error(e))?;
            for dir in listing.common_prefixes {
                let Some(name) = dir.filename() else { continue };
                let Some(id) = TableId::parse(&format!("{}.{}", group.sql_schema(), name)) else {
                    continue;
                };
                if self.has_delta_log(&dir).await? {
                    ids.push(id);
                }
            }
        }
        ids.sort();
        Ok(ids)
    }

    /// Loads every table at its newest version.
    pub async fn load_all(&self) -> Result<Vec<(TableId, DeltaTable)>> {
        let mut tables = Vec::new();
        // `table_ids` lists only folders with a Delta log: no second existence check per table.
        for id in self.table_ids().await? {
            if let Some(table) = self.load_listed_table(&id).await? {
                tables.push((id, table));
            }
        }
        Ok(tables)
    }

    /// A query session over the newest version of every table.
    pub async fn session(&self) -> Result<LakeSession> {
        self.session_as_of(None).await
    }

    /// Gives every table written before statistics were restricted the properties of
    /// [`statistics_properties`] (one commit per such table), so that the files a run adds from
    /// now on carry no statistics of resource values. The statistics already in older log
    /// entries stay until those versions are purged.
    pub async fn restrict_statistics(&self) -> Result<()> {
        for (id, table) in self.load_all().await? {
            let snapshot = table.snapshot().map_err(|e| Error::delta(&id, e))?;
            let configuration = snapshot.metadata().configuration();
            if configuration.contains_key(PROP_STATS_COLUMNS)
                || configuration.contains_key(PROP_STATS_NUM_COLUMNS)
            {
                continue;
            }
            let schema = snapshot.schema();
            let properties: HashMap<String, String> =
                statistics_properties(schema.fields().map(|f| f.name().as_str()))
                    .into_iter()
                    .collect();
            table
                .set_tbl_properties()
                .with_properties(properties)
                .await
                .map_err(|e| Error::delta(&id, e))?;
        }
        Ok(())
    }

    /// Refuses a run whose de-identification stamp differs from any existing table's.
    pub async fn check_stamp(&self, stamp: &DeidStamp) -> Result<()> {
        for (id, table) in self.load_all().await? {
            check_stamp(&id, &table, stamp)?;
        }
        Ok(())
    }

    fn store_error(&self, e: object_store::Error) -> Error {
        Error::Lake {
            location: self.url.to_string(),
            reason: e.to_string(),
        }
    }
}

/// Rows (from the Delta file statistics), data files and bytes of a table's current version.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TableSize {
    /// Rows, summed from each file's `numRecords` statistic.
    pub rows: i64,
    /// Active data files.
    pub files: i64,
    /// Bytes of the active data files.
    pub bytes: i64,
}

/// Sizes a loaded table without reading its data.
pub fn table_size(table: &DeltaTable) -> Result<TableSize> {
    let snapshot = table
        .snapshot()
        .map_err(|e| Error::delta("table snapshot", e))?;
    let mut size = TableSize::default();
    for file in snapshot.log_data().iter() {
        size.files += 1;
        size.bytes += file.size();
        size.rows += file
            .stats()
            .and_then(|s| serde_json::from_str::<serde_json::Value>(&s).ok())
            .and_then(|s| s.get("numRecords").and_then(serde_json::Value::as_i64))
            .unwrap_or(0);
    }
    Ok(size)
}

/// Reads the de-identification stamp of a table.
pub fn table_stamp(table: &DeltaTable) -> Option<DeidStamp> {
    let config = &table.snapshot().ok()?.table_config().unknown_properties;
    Some(DeidStamp {
        key_id: config.get(PROP_KEY_ID)?.clone(),
        policy_hash: config.get(PROP_POLICY_HASH).cloned().unwrap_or_default(),
        deidentified: config.get(PROP_DEIDENTIFIED).map(String::as_str) == Some("true"),
    })
}

fn check_stamp(id: &TableId, table: &DeltaTable, stamp: &DeidStamp) -> Result<()> {
    match table_stamp(table) {
        Some(existing) if existing.key_id != stamp.key_id => Err(Error::KeyMismatch {
            table: id.to_string(),
            lake_key: existing.key_id,
            run_key: stamp.key_id.clone(),
        }),
        Some(_) => Ok(()),
        None => Err(Error::Lake {
            location: id.to_string(),
            reason:
                "table has no fhirlake de-identification properties; it was not written by fhirlake"
                    .into(),
        }),
    }
}

fn parse_location(location: &str) -> Result<Url> {
    let bad = |reason: String| Error::Lake {
        location: location.to_string(),
        reason,
    };
    let mut url = if location.contains("://") {
        Url::parse(location).map_err(|e| bad(e.to_string()))?
    } else {
        let path = std::path::absolute(location).map_err(|e| bad(e.to_string()))?;
        Url::from_directory_path(&path).map_err(|()| bad("not an absolute path".into()))?
    };
    if !matches!(url.scheme(), "file" | "s3" | "memory") {
        return Err(bad(format!(
            "unsupported scheme `{}` (use a path, file:// or s3://)",
            url.scheme()
        )));
    }
    if !url.path().ends_with('/') {
        let path = format!("{}/", url.path());
        url.set_path(&path);
    }
    Ok(url)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations() {
        let url = parse_location("/tmp/x/lake").unwrap();
        assert_eq!(url.as_str(), "file:///tmp/x/lake/");
        let url = parse_location("s3://bucket/some/lake").unwrap();
        assert_eq!(url.as_str(), "s3://bucket/some/lake/");
        assert!(parse_location("ftp://x/y").is_err());
    }
}
