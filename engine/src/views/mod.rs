//! View maintenance: which SQL-on-FHIR views a lake has, and keeping their `views/<name>` tables
//! in step with the raw tables.
//!
//! * [`registry`]: the built-in views (shipped in `fhirlake-sql`) and the custom ones a steward
//!   added with `fhirlake view add` (kept in `lake.views`).
//! * [`materialize`]: builds a view table from its raw table, or, after an ingest, replaces only
//!   the rows of the resources that changed or were deleted (matched on `_resource_id`), in one
//!   Delta commit per view.

pub mod materialize;
pub mod registry;

pub use materialize::{ViewOutcome, refresh_view};
pub use registry::{RegisteredView, ViewSource, lake_views};
