//! Resume state of a pull, kept in `<landing>/.bulk-state.json`: the request, the status URL (saved the
//! moment the kick-off answers), the server's manifest and each file's progress. Every change is
//! written atomically (temporary file, then rename), so a killed process leaves either the old or the
//! new state, and a rerun of the same command re-attaches to the export.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::Error;

/// File name of the state inside the landing folder (a dot file: ingest skips it).
pub const STATE_FILE: &str = ".bulk-state.json";

/// Where the export is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// Kicked off; polling the status URL.
    Exporting,
    /// The manifest is known; downloading files.
    Downloading,
    /// Every file is downloaded and `manifest.json` is written.
    Complete,
}

/// What a file of the manifest holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FileKind {
    /// `output[]`: resources.
    Output,
    /// `deleted[]`: Bundles of DELETE entries.
    Deleted,
    /// `error[]`: OperationOutcomes.
    Error,
}

impl FileKind {
    /// The manifest key / bulk-data-client `itemType` of this kind.
    pub fn as_str(self) -> &'static str {
        match self {
            FileKind::Output => "output",
            FileKind::Deleted => "deleted",
            FileKind::Error => "error",
        }
    }
}

/// One file to download.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FileState {
    pub kind: FileKind,
    /// The server's URL of the file.
    pub url: String,
    /// `type` of the manifest entry.
    pub resource_type: String,
    /// `count` of the manifest entry.
    pub count: Option<u64>,
    /// File name in the landing folder.
    pub local: String,
    /// Whether the file is completely downloaded (and renamed to `local`).
    pub done: bool,
    /// Lines written (when done).
    pub lines: u64,
    /// Bytes written (when done).
    pub bytes: u64,
}

/// The whole resume state.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PullState {
    /// Format version of this file.
    pub version: u32,
    /// Ties the events of `log.ndjson` together across restarts.
    pub export_id: String,
    /// A canonical text of the kick-off request: a rerun re-attaches only to the same request.
    pub request: String,
    /// Kick-off URL.
    pub kickoff_url: String,
    pub phase: Phase,
    /// The status URL (`Content-Location` of the kick-off answer).
    pub status_url: Option<String>,
    /// The server's completion manifest, as received.
    pub manifest: Option<serde_json::Value>,
    pub files: Vec<FileState>,
    /// Whether the status URL was deleted on the server (done or cancelled).
    #[serde(default)]
    pub status_deleted: bool,
}

impl PullState {
    /// A fresh state for a request.
    pub fn new(request: String, kickoff_url: String) -> Self {
        PullState {
            version: 1,
            export_id: uuid::Uuid::now_v7().simple().to_string(),
            request,
            kickoff_url,
            phase: Phase::Exporting,
            status_url: None,
            manifest: None,
            files: Vec::new(),
            status_deleted: false,
        }
    }

    /// Path of the state file in `landing`.
    pub fn path(landing: &Path) -> PathBuf {
        landing.join(STATE_FILE)
    }

    /// Loads the state of `landing`, `None` when there is none.
    pub fn load(landing: &Path) -> Result<Option<Self>, Error> {
        let path = Self::path(landing);
        let bytes = match std::fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Error::io(&path.display(), e)),
        };
        serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| Error::BulkState {
                location: path.display().to_string(),
                reason: format!(
                    "unreadable resume state (line {} column {}); delete it to start a new export",
                    e.line(),
                    e.column()
                ),
            })
    }

    /// Writes the state atomically.
    pub fn save(&self, landing: &Path) -> Result<(), Error> {
        let bytes = serde_json::to_vec_pretty(self).map_err(|e| Error::BulkState {
            location: Self::path(landing).display().to_string(),
            reason: e.to_string(),
        })?;
        write_atomic(&Self::path(landing), &bytes)
    }

    /// Removes the state file (the export is gone or cancelled).
    pub fn remove(landing: &Path) -> Result<(), Error> {
        let path = Self::path(landing);
        match std::fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::io(&path.display(), e)),
        }
    }
}

/// Writes `bytes` to `path` through a temporary file in the same folder, synced, then renamed.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), Error> {
    use std::io::Write;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = path.with_file_name(format!(".{name}.tmp"));
    let write = || -> std::io::Result<()> {
        let mut file = std::fs::File::create(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)
    };
    write().map_err(|e| Error::io(&path.display(), e))
}
