//! fhirlake engine: the lake (Delta tables on object storage) and the ingest pipeline that fills it.
//!
//! - [`lake`]: the lake layout of DESIGN.md — table naming, Delta table creation, the `lake.runs`
//!   log, the writer lock, and the query snapshot handed to `fhirlake-sql`.
//! - [`ingest`]: sources -> parse -> de-identify -> staged Parquet -> one Delta MERGE per table.
//! - [`views`]: SQL-on-FHIR views materialized in the lake and kept up to date at every ingest.
//! - [`serve`]: the Flight SQL service over the lake and its query service (`fhirlake serve`).
//! - [`sample`]: the embedded Synthea sample used by `fhirlake quickstart`.
//! - [`cli`]: the command line; the `fhirlake` binary (src/main.rs) only calls [`cli::main`], and
//!   so does the copy of it that the end-to-end tests build (tests/src/bin/).

// `cli/` names this crate `fhirlake::`, as the binary that it was written for does.
extern crate self as fhirlake;

pub mod cli;
pub mod error;
pub mod ingest;
pub mod lake;
pub mod sample;
pub mod serve;
pub mod views;

pub use error::{Error, Result};
