//! FHIR R4 names the connectors answer to; they live in `fhirlake-fhir` (one floor under every
//! crate). This module re-exports them for the engine until its callers import them from there.

pub use fhirlake_fhir::reference::is_valid_id;
pub use fhirlake_fhir::types::is_resource_type;
