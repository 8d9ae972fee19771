//! fhirlake query side: a DataFusion session over one snapshot of a lake, and result formatting.
//!
//! The engine resolves which Delta tables exist and at which version; this crate registers each
//! table version as a plain Parquet scan (see [`session`]) and writes query results in the formats
//! the CLI offers (see [`format`]).

pub mod error;
pub mod flight;
pub mod format;
pub mod functions;
pub mod service;
pub mod session;

/// The SQL-on-FHIR view compiler (its own crate), re-exported for the query side's users.
pub use fhirlake_views as view;

pub use error::{Error, Result};
pub use format::{OutputFormat, write_stream};
pub use service::{AsOf, Caller, QueryOptions, QueryService, Role, TableInfo};
pub use session::{LakeSchemas, LakeSession, LakeTable, ScanTable};
