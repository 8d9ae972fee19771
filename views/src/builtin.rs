//! The built-in views: SQL-on-FHIR ViewDefinitions shipped in the binary and materialized into
//! the lake's default schema at every ingest (documented column by column in docs/views.md).

use std::sync::Arc;

use super::CompiledView;
use crate::Result;

/// (name, ViewDefinition JSON) of every built-in view.
pub const BUILTIN_VIEWS: &[(&str, &str)] = &[
    ("patient", include_str!("builtin/patient.json")),
    ("encounter", include_str!("builtin/encounter.json")),
    ("condition", include_str!("builtin/condition.json")),
    ("observation", include_str!("builtin/observation.json")),
    (
        "observation_component",
        include_str!("builtin/observation_component.json"),
    ),
    (
        "medication_request",
        include_str!("builtin/medication_request.json"),
    ),
    ("procedure", include_str!("builtin/procedure.json")),
    ("immunization", include_str!("builtin/immunization.json")),
    (
        "allergy_intolerance",
        include_str!("builtin/allergy_intolerance.json"),
    ),
    (
        "diagnostic_report",
        include_str!("builtin/diagnostic_report.json"),
    ),
    ("claim", include_str!("builtin/claim.json")),
];

/// Compiles every built-in view.
pub fn builtin_views() -> Result<Vec<Arc<CompiledView>>> {
    BUILTIN_VIEWS
        .iter()
        .map(|(_, text)| CompiledView::from_json_text(text).map(Arc::new))
        .collect()
}

/// The JSON of one built-in view.
pub fn builtin_view_text(name: &str) -> Option<&'static str> {
    BUILTIN_VIEWS
        .iter()
        .find_map(|(n, text)| (*n == name).then_some(*text))
}
