//! The engine's error type. Variants carry table names, files, lines and JSON paths, never values.

/// Errors of the lake and the ingest pipeline.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The lake location is not usable.
    #[error("lake {location}: {reason}")]
    Lake {
        /// Lake URL or path.
        location: String,
        /// What is wrong.
        reason: String,
    },
    /// A Delta operation on one table failed.
    #[error("table {table}: {source}")]
    Delta {
        /// SQL name of the table.
        table: String,
        /// The underlying error.
        #[source]
        source: Box<deltalake::DeltaTableError>,
    },
    /// Another writer holds the lake.
    #[error(
        "lake {location} is being written by another fhirlake process (lock {lock}); wait for it to finish and retry"
    )]
    Locked {
        /// Lake URL or path.
        location: String,
        /// The lock file.
        lock: String,
    },
    /// Another process committed to the table while this run was writing it (object-store lakes,
    /// which have no lake-wide lock). The table is intact; re-running is safe.
    #[error(
        "table {table}: another writer committed to it during this run ({reason}); the table is intact and re-running the ingest is safe"
    )]
    ConcurrentWrite {
        /// SQL name of the table.
        table: String,
        /// The conflict delta-rs reported.
        reason: String,
    },
    /// The lake was written with a different de-identification key (or without one).
    #[error(
        "table {table} was written with de-identification key id `{lake_key}`, this run uses `{run_key}`: pseudonym spaces must never mix; use the lake's key or a new lake"
    )]
    KeyMismatch {
        /// SQL name of the table.
        table: String,
        /// Key id recorded in the table.
        lake_key: String,
        /// Key id of this run.
        run_key: String,
    },
    /// Too many rejected lines.
    #[error("{rejected} lines rejected, more than --max-rejects {max}; nothing was committed")]
    TooManyRejects {
        /// Lines rejected.
        rejected: u64,
        /// The limit.
        max: u64,
    },
    /// A streamed source (a Bulk Data pull) stopped before it had sent every file.
    #[error("the source stopped before every file arrived; nothing was committed")]
    FeedIncomplete,
    /// No source could be read at all.
    #[error("no readable FHIR source: {0}")]
    NoSources(String),
    /// A source problem that stops the run.
    #[error(transparent)]
    Source(Box<fhirlake_connectors::Error>),
    /// Query side error.
    #[error(transparent)]
    Sql(Box<fhirlake_sql::Error>),
    /// A query over the lake failed (e.g. the risk report's read of `raw.patient`).
    #[error("{context}: {source}")]
    Query {
        /// What was being read.
        context: String,
        /// The underlying error.
        #[source]
        source: Box<fhirlake_sql::Error>,
    },
    /// A lake table holds a row fhirlake cannot read (not written by fhirlake, or damaged).
    #[error("{table}: {reason}")]
    BadRow {
        /// SQL name of the table.
        table: String,
        /// What is wrong with the row (never its values).
        reason: &'static str,
        /// The JSON error, when the row is not JSON.
        #[source]
        source: Option<serde_json::Error>,
    },
    /// The risk report cannot be made as asked, or a row is not a Patient.
    #[error(transparent)]
    Risk(#[from] fhirlake_deid::risk::RiskError),
    /// DataFusion error while staging or merging.
    #[error("{context}: {source}")]
    DataFusion {
        /// What was being done.
        context: String,
        /// The underlying error.
        #[source]
        source: Box<datafusion::error::DataFusionError>,
    },
    /// Local I/O (landing zone, staging, lock file).
    #[error("{path}: {source}")]
    Io {
        /// The file or directory.
        path: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// Arrow / Parquet encoding of staged rows.
    #[error("staging {table}: {reason}")]
    Staging {
        /// Table being staged.
        table: String,
        /// What went wrong.
        reason: String,
    },
    /// A view cannot be added, dropped or materialized as asked.
    #[error("{0}")]
    View(ViewRefusal),
    /// A ViewDefinition is invalid or a resource could not be turned into rows.
    #[error(transparent)]
    ViewDefinition(Box<fhirlake_views::Error>),
    /// Unexpected internal state (a bug).
    #[error("internal error: {0}")]
    Internal(String),
}

/// Result type of the engine.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub(crate) fn io(path: impl std::fmt::Display, source: std::io::Error) -> Self {
        Self::Io {
            path: path.to_string(),
            source,
        }
    }

    pub(crate) fn delta(table: impl std::fmt::Display, source: deltalake::DeltaTableError) -> Self {
        use deltalake::DeltaTableError as D;
        use deltalake::kernel::transaction::TransactionError as T;
        match &source {
            D::VersionAlreadyExists(_)
            | D::Transaction {
                source: T::VersionAlreadyExists(_) | T::CommitConflict(_) | T::MaxCommitAttempts(_),
            } => {
                return Self::ConcurrentWrite {
                    table: table.to_string(),
                    reason: source.to_string(),
                };
            }
            _ => {}
        }
        Self::Delta {
            table: table.to_string(),
            source: Box::new(source),
        }
    }

    /// An Arrow error (casting a column, assembling a batch) while `context`.
    pub(crate) fn arrow(context: impl std::fmt::Display, source: arrow::error::ArrowError) -> Self {
        Self::datafusion(context, source.into())
    }

    pub(crate) fn datafusion(
        context: impl std::fmt::Display,
        source: datafusion::error::DataFusionError,
    ) -> Self {
        Self::DataFusion {
            context: context.to_string(),
            source: Box::new(source),
        }
    }
}

impl From<fhirlake_connectors::Error> for Error {
    fn from(e: fhirlake_connectors::Error) -> Self {
        Self::Source(Box::new(e))
    }
}

impl From<fhirlake_sql::Error> for Error {
    fn from(e: fhirlake_sql::Error) -> Self {
        Self::Sql(Box::new(e))
    }
}

impl From<fhirlake_views::Error> for Error {
    fn from(e: fhirlake_views::Error) -> Self {
        Self::ViewDefinition(Box::new(e))
    }
}

impl From<ViewRefusal> for Error {
    fn from(refusal: ViewRefusal) -> Self {
        Self::View(refusal)
    }
}

/// Why a view cannot be added, dropped or materialized (the view's name, never its rows).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ViewRefusal {
    /// A custom view without a `name`.
    #[error("the ViewDefinition needs a `name`: it becomes the table name")]
    Unnamed,
    /// A materialized view without a name.
    #[error("a materialized view needs a name")]
    UnnamedMaterialized,
    /// A name that is not lower snake case.
    #[error("view name `{0}`: use lower snake case (it becomes the SQL table name)")]
    NotSnakeCase(String),
    /// A custom view named like a built-in.
    #[error("`{0}` is a built-in view; give the custom view another name")]
    BuiltinName(String),
    /// A custom view of that name exists.
    #[error("a view named `{0}` exists already; `fhirlake view drop {0}` first")]
    Exists(String),
    /// Built-in views cannot be dropped.
    #[error("`{0}` is a built-in view and is maintained by every ingest; it cannot be dropped")]
    BuiltinDrop(String),
    /// No custom view of that name.
    #[error("no custom view named `{0}`")]
    NoSuchView(String),
}
