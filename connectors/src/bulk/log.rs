//! `log.ndjson` in the landing folder: one JSON event per line in the format of the SMART
//! bulk-data-client (`{"exportId", "timestamp", "eventId", "eventDetail"}`), so that tools reading
//! that client's logs read ours. Events: `kickoff`, `status_progress`, `status_complete`,
//! `status_error`, `manifest_complete`, `download_request`, `download_complete`, `download_error`,
//! `export_complete`. Details carry URLs, counts, headers and server error texts, never resource data.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde_json::{Value, json};

use crate::error::Error;

/// File name of the event log inside the landing folder.
pub const LOG_FILE: &str = "log.ndjson";

/// Appends events to `log.ndjson`. Writing is best effort: a failing log never fails the export.
#[derive(Debug)]
pub struct EventLog {
    path: PathBuf,
    export_id: String,
    file: Mutex<Option<std::fs::File>>,
}

impl EventLog {
    /// Opens (appends to) `<landing>/log.ndjson`. `export_id` ties the events of one export together
    /// across restarts.
    pub fn open(landing: &Path, export_id: &str) -> Result<Self, Error> {
        let path = landing.join(LOG_FILE);
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|e| Error::io(&path.display(), e))?;
        Ok(EventLog {
            path,
            export_id: export_id.to_string(),
            file: Mutex::new(Some(file)),
        })
    }

    /// Where the log is.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends one event.
    pub fn event(&self, event_id: &str, detail: Value) {
        let line = json!({
            "exportId": self.export_id,
            "timestamp": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            "eventId": event_id,
            "eventDetail": detail,
        });
        let Ok(mut guard) = self.file.lock() else {
            return;
        };
        if let Some(file) = guard.as_mut()
            && let Err(e) = writeln!(file, "{line}")
        {
            tracing::warn!(path = %self.path.display(), error = %e, "cannot write the bulk event log; continuing without it");
            *guard = None;
        }
    }
}
