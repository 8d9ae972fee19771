//! The view compiler's and runner's one error type.

/// Errors of the view compiler and runner. Variants name view elements and resource locations,
/// never resource values.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A ViewDefinition is invalid; `path` is the JSON path of the offending element.
    #[error("invalid ViewDefinition at {path}: {reason}")]
    ViewDefinition {
        /// JSON path in the ViewDefinition, e.g. `select[0].column[2].path`.
        path: String,
        /// What is wrong.
        reason: String,
    },
    /// A resource could not be turned into rows of a view (never carries resource values).
    #[error("view {view}: {resource_type} at {location}: {element}: {reason}")]
    ViewRow {
        /// View name (or resource type of an unnamed view).
        view: String,
        /// Resource type of the failing resource.
        resource_type: String,
        /// Where the resource came from (`file:line`).
        location: String,
        /// The view element that failed (`column `x``, `where[0]`).
        element: String,
        /// What went wrong.
        reason: String,
    },
    /// A conformance test file or folder is unusable.
    #[error("{0}")]
    TestSuite(String),
    /// Building or encoding Arrow data failed.
    #[error("{0}")]
    Arrow(#[from] arrow::error::ArrowError),
    /// Reading test files or writing a report failed.
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// Result type of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
