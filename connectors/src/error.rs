//! The crate's single error type.
//!
//! Messages name the file, directory, object URL or manifest JSON path and the reason. They never contain
//! values read from the data (FHIR data is PHI).

/// Everything that can go wrong while finding or opening sources.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The local path, URL or object does not exist.
    #[error("{location}: no such file, directory or object")]
    NotFound { location: String },
    /// A directory, prefix or glob that holds no file with a FHIR file name.
    #[error(
        "{location}: no FHIR files found (looked for *.ndjson, *.ndjson.gz, *.jsonl, *.jsonl.gz, *.json, *.json.gz)"
    )]
    NoFhirFiles { location: String },
    /// A source that cannot be used as given (bad URL, unsupported scheme, no tokio runtime, ...).
    #[error("{location}: {reason}")]
    InvalidSource { location: String, reason: String },
    /// A Bulk Data `manifest.json` problem; `path` is the JSON path in the manifest, e.g. `output[3].url`.
    #[error("{location}: manifest {path}: {reason}")]
    Manifest {
        location: String,
        path: String,
        reason: String,
    },
    /// An object-store operation failed.
    #[error("{location}: {source}")]
    ObjectStore {
        location: String,
        #[source]
        source: object_store::Error,
    },
    /// An HTTP request could not be sent or its response could not be read (network, TLS, timeout),
    /// after the retries allowed.
    #[error("{location}: {reason}")]
    Http { location: String, reason: String },
    /// A server answered with an error; `outcome` is the text of its OperationOutcome (or a note that
    /// the body was not one, e.g. a proxy's HTML page).
    #[error("{location}: HTTP {status}: {outcome}")]
    Server {
        location: String,
        status: u16,
        outcome: String,
    },
    /// A Bulk Data file or status URL is gone (404 / 410): the export expired on the server.
    #[error(
        "{location}: HTTP {status}: the export expired on the server (its files are gone); {hint}"
    )]
    ExportExpired {
        location: String,
        status: u16,
        hint: String,
    },
    /// A downloaded file does not match its manifest entry (resource type, broken line).
    #[error("{location}: {reason}")]
    Download { location: String, reason: String },
    /// SMART Backend Services: discovery, key or token problems.
    #[error("{location}: {reason}")]
    Auth { location: String, reason: String },
    /// The resume state of a landing folder cannot be used.
    #[error("{location}: {reason}")]
    BulkState { location: String, reason: String },
    /// A local I/O operation failed.
    #[error("{location}: {source}")]
    Io {
        location: String,
        #[source]
        source: std::io::Error,
    },
}

impl Error {
    /// The file, directory, URL or manifest the error is about.
    pub fn location(&self) -> &str {
        match self {
            Error::NotFound { location }
            | Error::NoFhirFiles { location }
            | Error::InvalidSource { location, .. }
            | Error::Manifest { location, .. }
            | Error::ObjectStore { location, .. }
            | Error::Http { location, .. }
            | Error::Server { location, .. }
            | Error::ExportExpired { location, .. }
            | Error::Download { location, .. }
            | Error::Auth { location, .. }
            | Error::BulkState { location, .. }
            | Error::Io { location, .. } => location,
        }
    }

    pub(crate) fn io(location: &(impl std::fmt::Display + ?Sized), source: std::io::Error) -> Self {
        if source.kind() == std::io::ErrorKind::NotFound {
            return Error::NotFound {
                location: location.to_string(),
            };
        }
        Error::Io {
            location: location.to_string(),
            source,
        }
    }

    pub(crate) fn object_store(
        location: &(impl std::fmt::Display + ?Sized),
        source: object_store::Error,
    ) -> Self {
        if matches!(source, object_store::Error::NotFound { .. }) {
            return Error::NotFound {
                location: location.to_string(),
            };
        }
        Error::ObjectStore {
            location: location.to_string(),
            source,
        }
    }

    pub(crate) fn invalid(
        location: &(impl std::fmt::Display + ?Sized),
        reason: impl Into<String>,
    ) -> Self {
        Error::InvalidSource {
            location: location.to_string(),
            reason: reason.into(),
        }
    }
}

/// The crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
