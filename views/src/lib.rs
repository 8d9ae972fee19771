//! SQL on FHIR v2: ViewDefinitions compiled to row generators that write Arrow columns.
//!
//! A crate of its own (arrow + simd-json, no DataFusion) so that the view compiler is found by its
//! path, the query side and the ingest engine share it, and its benchmark builds in minutes.
//!
//! * [`definition`]: ViewDefinition JSON -> [`CompiledView`] (validation, constants, column
//!   slots, Arrow types from `type` and `ansi/type` tags).
//! * [`fhirpath`]: the FHIRPath subset: the evaluator and compiled paths over the AST of
//!   `fhirlake_fhir::fhirpath` (the one parser).
//! * [`json`]: the JSON tree views read resources into (a simd-json tape).
//! * [`run`]: rows of one resource into [`ViewBatchBuilder`] (Arrow builders).
//! * `onepass`: rows of flat views read straight from resource text, without a tree.
//! * [`conformance`]: runs SQL-on-FHIR conformance test files and writes the official report.
//! * [`builtin`]: the views fhirlake materializes in every lake.

pub mod builtin;
pub mod conformance;
pub mod definition;
pub mod fhirpath;
pub mod json;
mod onepass;
pub mod run;

pub use definition::{ColumnKind, ColumnSpec, CompiledView};
pub use json::{Json, JsonParser};
pub use run::{Cell, RowError, TextPaths, ViewBatchBuilder, ndjson_rows};

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
