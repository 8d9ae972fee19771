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
mod error;
pub mod fhirpath;
pub mod json;
mod onepass;
pub mod run;

pub use definition::{ColumnKind, ColumnSpec, CompiledView};
pub use error::{Error, Result};
pub use json::{Json, JsonParser};
pub use run::{Cell, RowError, TextPaths, ViewBatchBuilder, ndjson_rows};
