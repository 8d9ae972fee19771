//! The lake as a query sees it: every table loaded at its newest version, or pinned to an earlier
//! snapshot (`--as-of`, the Flight `as_of` session option). The one place a pin is applied to
//! the lake's tables; `fhirlake sql` and the Flight query service both read through it.

use fhirlake_sql::{AsOf, LakeSession, LakeTable};

use super::Lake;
use crate::Result;

impl Lake {
    /// Every table at the snapshot `as_of` (`None`: the newest version). Tables that did not
    /// exist at the pin are left out; a pin older than a table's purged history is an error
    /// ([`fhirlake_sql::Error::VersionPurged`] / [`fhirlake_sql::Error::InstantPurged`]).
    pub async fn snapshot_tables(&self, as_of: Option<AsOf>) -> Result<Vec<LakeTable>> {
        let mut tables = Vec::new();
        for (id, mut table) in self.load_all().await? {
            if let Some(as_of) = as_of
                && !fhirlake_sql::session::pin_table(&mut table, as_of, &id.to_string()).await?
            {
                continue;
            }
            tables.push(LakeTable {
                schema: id.group.sql_schema().to_string(),
                name: id.name,
                table,
            });
        }
        Ok(tables)
    }

    /// A query session over the snapshot `as_of` (`None`: the newest version of every table).
    pub async fn session_as_of(&self, as_of: Option<AsOf>) -> Result<LakeSession> {
        let tables = self.snapshot_tables(as_of).await?;
        Ok(LakeSession::over_lake(
            tables,
            &super::layout::LAKE_SCHEMAS,
            vec![self.store_registration()],
        )?)
    }
}
