//! The seam itself: the [`Deidentifier`] trait the ingest pipeline calls for every resource,
//! what it decides ([`Disposition`]) and counts ([`DeidStats`]), and [`Passthrough`], the
//! implementation that changes nothing.

use serde_json::Value;

use crate::Result;

/// What the de-identifier decided for one resource.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Disposition {
    /// The resource (possibly rewritten in place) goes to the lake.
    Keep,
    /// The resource must not reach the lake (e.g. an unknown `modifierExtension`); counted as
    /// dropped.
    Drop {
        /// Why, naming the JSON path but no values.
        reason: String,
    },
}

/// Transforms resources before they are written. Implementations must be cheap to share between
/// worker threads: the pipeline calls [`Deidentifier::deidentify`] from every core at once.
pub trait Deidentifier: Send + Sync + std::fmt::Debug {
    /// Human-readable policy name, recorded in `lake.runs` (e.g. `safe-harbor`).
    fn policy_name(&self) -> &str;

    /// Stable hash of the policy text, recorded in `lake.runs` and as a table property.
    fn policy_hash(&self) -> String;

    /// Identifier of the key (a hash prefix, never the key itself); `none` when no key is used.
    fn key_id(&self) -> String;

    /// True when resources leave this stage with identifiers removed. Only [`Passthrough`] says no.
    fn removes_identifiers(&self) -> bool;

    /// Rewrites one resource in place.
    fn deidentify(&self, resource: &mut Value) -> Result<Disposition>;

    /// The id under which a resource of this type and source id is stored in the lake; used to
    /// apply deletes (Bulk Data `deleted[]`, Bundle DELETE entries) to pseudonymized rows.
    fn lake_id(&self, resource_type: &str, id: &str) -> String;

    /// What de-identification did so far (rule hits per method, dropped extensions and
    /// resources); `None` when nothing is counted.
    fn stats(&self) -> Option<DeidStats> {
        None
    }
}

/// Writes resources through unchanged. Identified data: only for synthetic data or a lake the
/// steward has explicitly marked as identified, via `--unsafe-no-deid`.
#[derive(Debug, Default, Clone, Copy)]
pub struct Passthrough;

/// Policy name recorded for [`Passthrough`] runs.
pub const NO_DEID_POLICY: &str = "none (--unsafe-no-deid)";

impl Deidentifier for Passthrough {
    fn policy_name(&self) -> &str {
        NO_DEID_POLICY
    }

    fn policy_hash(&self) -> String {
        "none".to_string()
    }

    fn key_id(&self) -> String {
        "none".to_string()
    }

    fn removes_identifiers(&self) -> bool {
        false
    }

    fn deidentify(&self, _resource: &mut Value) -> Result<Disposition> {
        Ok(Disposition::Keep)
    }

    fn lake_id(&self, _resource_type: &str, id: &str) -> String {
        id.to_string()
    }
}

/// Counts of what de-identification did, for `lake.runs` and the summary (never values).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct DeidStats {
    /// Resources processed.
    pub resources: u64,
    /// Values changed or checked per method (`(name, count)` in
    /// [`METHOD_NAMES`](crate::policy::METHOD_NAMES) order).
    pub rule_hits: Vec<(String, u64)>,
    /// Free-text values handled by the default (removed or scrubbed) because no rule named them.
    pub free_text_default: u64,
    /// Non-FHIR JSON keys removed.
    pub unknown_elements: u64,
    /// Extensions dropped by the allow-list.
    pub dropped_extensions: u64,
    /// Resources dropped (unknown `modifierExtension`).
    pub dropped_resources: u64,
    /// Values removed because their JSON shape is not their FHIR type's (an object or a number
    /// where a date belongs, an array in an array): fail closed, they are not read as text.
    pub malformed: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passthrough_keeps_resources_and_says_so() {
        let deid = Passthrough;
        let mut resource = serde_json::json!({"resourceType": "Patient", "id": "p1"});
        let before = resource.clone();
        assert_eq!(deid.deidentify(&mut resource).unwrap(), Disposition::Keep);
        assert_eq!(resource, before);
        assert!(!deid.removes_identifiers());
        assert_eq!(deid.lake_id("Patient", "p1"), "p1");
        assert_eq!(deid.key_id(), "none");
    }
}
