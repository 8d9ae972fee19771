//! The query side's error type. Variants carry table names and versions, never values.

/// Errors of the query side.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// DataFusion planning or execution failed.
    #[error(transparent)]
    DataFusion(#[from] datafusion::error::DataFusionError),
    /// Reading a Delta table's snapshot failed.
    #[error("table {table}: {source}")]
    Delta {
        /// SQL name of the table.
        table: String,
        /// The underlying error.
        #[source]
        source: deltalake::DeltaTableError,
    },
    /// A snapshot pin names a version older than the table's history now goes back (`fhirlake
    /// deid purge` removed the versions before `oldest`).
    #[error(
        "table {table}: version {version} is no longer available (the oldest is {oldest}: history was purged)"
    )]
    VersionPurged {
        /// SQL name of the table.
        table: String,
        /// The version asked for.
        version: u64,
        /// The oldest version the table still has.
        oldest: u64,
    },
    /// A snapshot pin names an instant before the oldest version the table still has.
    #[error(
        "table {table}: {instant} is no longer available (the oldest version is {oldest}, of {committed}: history was purged)"
    )]
    InstantPurged {
        /// SQL name of the table.
        table: String,
        /// The instant asked for (RFC 3339).
        instant: String,
        /// The oldest version the table still has.
        oldest: u64,
        /// When that version was committed (RFC 3339).
        committed: String,
    },
    /// Encoding results failed.
    #[error("writing results: {0}")]
    Arrow(#[from] arrow::error::ArrowError),
    /// Writing Parquet results failed.
    #[error("writing results: {0}")]
    Parquet(#[from] parquet::errors::ParquetError),
    /// Writing to the output failed (a closed pipe is reported as `BrokenPipe`).
    #[error("writing results: {0}")]
    Io(#[from] std::io::Error),
    /// The requested output cannot be produced (e.g. Parquet to a terminal).
    #[error("{0}")]
    Output(String),
    /// The Flight SQL server's user file or settings are unusable.
    #[error("{0}")]
    Server(String),
    /// A role may not run this statement or read this table.
    #[error("permission denied: {0}")]
    PermissionDenied(String),
    /// A ViewDefinition is invalid or a resource could not be turned into rows.
    #[error(transparent)]
    View(#[from] fhirlake_views::Error),
}

/// Result type of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
