//! How the pipeline reports progress: the CLI implements [`IngestObserver`] with a progress bar on
//! a terminal and plain log lines otherwise; tests and library users can ignore it.

use fhirlake_connectors::ItemPosition;

/// Receives progress events from every pipeline thread.
pub trait IngestObserver: Send + Sync {
    /// The sources were expanded into `files` files.
    fn planned(&self, _files: usize) {}
    /// `resources` more resources and `bytes` more input bytes went through.
    fn progress(&self, _resources: u64, _bytes: u64) {}
    /// A file was read completely.
    fn file_done(&self, _file: &str, _lines: u64, _bytes: u64) {}
    /// A line or entry was rejected (position and reason only; never values).
    fn rejected(&self, _pos: &ItemPosition, _json_path: Option<&str>, _reason: &str) {}
    /// Something worth telling the user that does not reject anything.
    fn warn(&self, _message: &str) {}
    /// The run moved to a new phase (e.g. committing a table).
    fn phase(&self, _message: &str) {}
}

/// Ignores every event.
#[derive(Debug, Default, Clone, Copy)]
pub struct Silent;

impl IngestObserver for Silent {}
