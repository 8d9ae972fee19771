//! fhirlake sources: find FHIR files (local paths, directories, globs, object-store URLs and Bulk Data
//! landing folders) and stream their content as [`SourceItem`]s without holding a whole file in memory.
//!
//! The crate owns *where data comes from and how it is framed* (NDJSON lines, Bundle entries, manifest
//! `deleted[]` entries), and the FHIR Bulk Data client ([`bulk`], with SMART Backend Services auth in
//! [`smart`]) that downloads an export into such a landing folder. Parsing and validating NDJSON lines
//! is left to the caller's worker pool, so that reading (I/O bound) and parsing (CPU bound) run on
//! different threads.

pub mod bulk;
pub mod error;
pub mod location;
pub mod plan;
pub mod read;
pub mod smart;

pub use error::{Error, Result};
pub use location::{Location, StoreOptions, object_store_for_url};
pub use plan::{FileFormat, FileRole, SourceFile, SourcePlan, plan_sources};
pub use read::{
    ItemPosition, MAX_LINE_BYTES, RawInput, ReadOptions, ReadStats, SourceItem, SpilledLine,
    read_source_file, read_source_file_with,
};
