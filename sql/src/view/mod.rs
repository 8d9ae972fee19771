//! SQL on FHIR v2: ViewDefinitions compiled to row generators that write Arrow columns.
//!
//! * [`definition`]: ViewDefinition JSON -> [`CompiledView`] (validation, constants, column
//!   slots, Arrow types from `type` and `ansi/type` tags).
//! * [`fhirpath`]: the FHIRPath subset (parser and evaluator).
//! * [`json`]: the JSON tree views read resources into (sonic-rs).
//! * [`run`]: rows of one resource into [`ViewBatchBuilder`] (Arrow builders).
//! * [`conformance`]: runs SQL-on-FHIR conformance test files and writes the official report.
//! * [`builtin`]: the views fhirlake materializes in every lake.

pub mod builtin;
pub mod conformance;
pub mod definition;
pub mod fhirpath;
pub mod json;
pub mod run;

pub use definition::{ColumnKind, ColumnSpec, CompiledView};
pub use json::{Json, JsonExt};
pub use run::{Cell, RowError, ViewBatchBuilder};
