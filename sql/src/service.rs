//! The seam between a query front end (the Flight SQL server) and the lake: [`QueryService`].
//!
//! A front end authenticates a [`Caller`] (user, [`Role`], session options) and asks the service
//! to plan SQL or to list the tables that caller may read. The service decides what the role
//! sees: tables a role may not read are neither queryable nor listed.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::error::DataFusionError;
use datafusion::execution::context::SQLOptions;
use datafusion::prelude::DataFrame;

use crate::session::{LakeSchemas, LakeSession};
use crate::{Error, Result};

/// What a user may do, from the server's user file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Data steward: every schema (views, `raw`, `lake`, the audit log).
    Steward,
    /// Researcher: views and `raw`, read-only.
    Researcher,
    /// Analyst: views only, read-only.
    Analyst,
}

impl Role {
    /// The role's name as written in the user file.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Steward => "steward",
            Role::Researcher => "researcher",
            Role::Analyst => "analyst",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "steward" => Ok(Role::Steward),
            "researcher" => Ok(Role::Researcher),
            "analyst" => Ok(Role::Analyst),
            other => Err(format!(
                "unknown role `{other}` (expected steward, researcher or analyst)"
            )),
        }
    }
}

/// A lake snapshot pin: every Delta table read at this version or as of this instant.
///
/// Tables that did not exist at the pin (created later, or with fewer versions) are left out of
/// the session, so a study re-run with the same pin sees exactly the data it first saw.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AsOf {
    /// A Delta table version.
    Version(i64),
    /// The newest commit at or before this instant.
    Timestamp(DateTime<Utc>),
}

impl FromStr for AsOf {
    type Err = String;

    /// `42` (a version) or an RFC 3339 timestamp / `YYYY-MM-DD` (midnight UTC).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        if let Ok(version) = s.parse::<i64>() {
            if version < 0 {
                return Err(format!("version {version} is negative"));
            }
            return Ok(AsOf::Version(version));
        }
        if let Ok(instant) = DateTime::parse_from_rfc3339(s) {
            return Ok(AsOf::Timestamp(instant.with_timezone(&Utc)));
        }
        if let Ok(date) = chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d")
            && let Some(midnight) = date.and_hms_opt(0, 0, 0)
        {
            return Ok(AsOf::Timestamp(midnight.and_utc()));
        }
        Err(format!(
            "`{s}` is neither a table version (e.g. 3) nor a timestamp \
             (e.g. 2026-01-31T12:00:00Z or 2026-01-31)"
        ))
    }
}

impl fmt::Display for AsOf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AsOf::Version(v) => write!(f, "{v}"),
            AsOf::Timestamp(t) => write!(f, "{}", t.to_rfc3339()),
        }
    }
}

/// Options a client sets for its session (Flight SQL SetSessionOptions).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct QueryOptions {
    /// Snapshot pin; `None` reads the newest version of every table.
    pub as_of: Option<AsOf>,
}

/// Who is asking, with which session options.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// User name.
    pub user: String,
    /// The user's role.
    pub role: Role,
    /// Session options.
    pub options: QueryOptions,
}

/// One table a caller may read.
#[derive(Debug, Clone)]
pub struct TableInfo {
    /// Catalog name.
    pub catalog: String,
    /// SQL schema name.
    pub schema: String,
    /// Table name.
    pub name: String,
    /// Flight SQL table type (`TABLE` or `VIEW`).
    pub table_type: &'static str,
    /// Arrow schema of its rows.
    pub arrow_schema: SchemaRef,
}

/// Answers SQL for authenticated callers.
#[async_trait::async_trait]
pub trait QueryService: Send + Sync + 'static {
    /// Plans one read-only statement for `caller`. The returned DataFrame is executed by the
    /// front end (its memory limit is already part of its session).
    async fn plan(&self, caller: &Caller, sql: &str) -> Result<DataFrame>;

    /// Every table `caller` may read, sorted by schema then name.
    async fn tables(&self, caller: &Caller) -> Result<Vec<TableInfo>>;

    /// The lake's SQL schemas (which a role may read: [`LakeSchemas::readable`]).
    fn schemas(&self) -> LakeSchemas;
}

/// What every server session allows: queries only (no DDL, DML, COPY or `SET`).
pub fn read_only_options() -> SQLOptions {
    SQLOptions::new()
        .with_allow_ddl(false)
        .with_allow_dml(false)
        .with_allow_statements(false)
}

/// Plans `sql` in `session` read-only; a refused statement is [`Error::PermissionDenied`] naming
/// the caller's role.
pub async fn plan_read_only(
    session: &LakeSession,
    caller: &Caller,
    sql: &str,
) -> Result<DataFrame> {
    match session
        .context()
        .sql_with_options(sql, read_only_options())
        .await
    {
        Ok(df) => Ok(df),
        Err(DataFusionError::Plan(message))
            if [
                "DDL not supported",
                "DML not supported",
                "Statement not supported",
            ]
            .iter()
            .any(|p| message.starts_with(p)) =>
        {
            Err(Error::PermissionDenied(format!(
                "the server is read-only for every role (user `{}`, role {}): {message}",
                caller.user, caller.role
            )))
        }
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_see_only_their_schemas() {
        let schemas = LakeSchemas {
            views: "public",
            resources: "raw",
            bookkeeping: "lake",
        };
        assert!(schemas.readable(Role::Analyst, "public"));
        assert!(!schemas.readable(Role::Analyst, "raw"));
        assert!(schemas.readable(Role::Researcher, "raw"));
        assert!(!schemas.readable(Role::Researcher, "lake"));
        assert!(schemas.readable(Role::Steward, "lake"));
        assert_eq!(schemas.readable_by(Role::Researcher), ["public", "raw"]);
        assert_eq!("analyst".parse::<Role>(), Ok(Role::Analyst));
        assert!("admin".parse::<Role>().is_err());
    }

    #[test]
    fn as_of_parses_versions_and_timestamps() {
        assert_eq!("3".parse::<AsOf>(), Ok(AsOf::Version(3)));
        assert!(matches!(
            "2026-01-31T12:00:00Z".parse::<AsOf>(),
            Ok(AsOf::Timestamp(_))
        ));
        assert!(matches!(
            "2026-01-31".parse::<AsOf>(),
            Ok(AsOf::Timestamp(_))
        ));
        assert!("-1".parse::<AsOf>().is_err());
        assert!("yesterday".parse::<AsOf>().is_err());
    }
}
