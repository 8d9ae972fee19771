//! The server's audit log: one JSON object per line, appended and flushed per event.
//!
//! Every request (login, query, metadata call, prepared-statement action, session option) is
//! recorded with user, role, time, SQL, rows, bytes, duration and outcome; failed logins too.
//! Stewards query it as `lake.audit` ([`audit_table`]); other roles never see it.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use datafusion::catalog::TableProvider;
use datafusion::datasource::MemTable;

use crate::{Error, Result};

/// One audited request.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct AuditEvent {
    /// When the request ended, RFC 3339 UTC.
    pub time: String,
    /// Login name (as sent, for failed logins).
    pub user: String,
    /// Role, empty for failed logins.
    pub role: String,
    /// What was asked: `login`, `query`, `prepare`, `metadata:GetTables`, ...
    pub action: String,
    /// The SQL text, if any.
    pub sql: Option<String>,
    /// Rows sent.
    pub rows: u64,
    /// Bytes sent (Arrow IPC bodies).
    pub bytes: u64,
    /// Duration in milliseconds.
    pub duration_ms: u64,
    /// `ok`, `denied`, `cancelled`, or `error: <message>`.
    pub outcome: String,
    /// Client address, if known.
    pub peer: Option<String>,
}

/// Append-only audit log file.
#[derive(Debug, Clone)]
pub struct AuditLog {
    path: PathBuf,
    file: Arc<Mutex<std::fs::File>>,
}

impl AuditLog {
    /// Opens (creating) the log for appending.
    pub fn open(path: &Path) -> Result<Self> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|e| Error::Server(format!("opening audit log {}: {e}", path.display())))?;
        Ok(Self {
            path: path.to_path_buf(),
            file: Arc::new(Mutex::new(file)),
        })
    }

    /// Where the log is.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends one event (stamped now). A failing write is logged, never fatal to the request.
    pub fn record(&self, mut event: AuditEvent) {
        event.time = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        let Ok(mut line) = serde_json::to_vec(&event) else {
            return;
        };
        line.push(b'\n');
        let mut file = self
            .file
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Err(e) = file.write_all(&line).and_then(|()| file.flush()) {
            tracing::error!("writing audit log {}: {e}", self.path.display());
        }
    }
}

/// Arrow schema of `lake.audit`.
pub fn audit_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new(
            "time",
            DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())),
            false,
        ),
        Field::new("user", DataType::Utf8, false),
        Field::new("role", DataType::Utf8, false),
        Field::new("action", DataType::Utf8, false),
        Field::new("sql", DataType::Utf8, true),
        Field::new("rows", DataType::UInt64, false),
        Field::new("bytes", DataType::UInt64, false),
        Field::new("duration_ms", DataType::UInt64, false),
        Field::new("outcome", DataType::Utf8, false),
        Field::new("peer", DataType::Utf8, true),
    ]))
}

/// The audit log as a table (read when a steward's query is planned).
pub fn audit_table(path: &Path) -> Result<Arc<dyn TableProvider>> {
    let schema = audit_schema();
    let mut batches = Vec::new();
    if path.exists() {
        let file = std::fs::File::open(path)?;
        let reader =
            arrow::json::ReaderBuilder::new(schema.clone()).build(std::io::BufReader::new(file))?;
        for batch in reader {
            batches.push(batch?);
        }
    }
    Ok(Arc::new(MemTable::try_new(schema, vec![batches])?))
}
