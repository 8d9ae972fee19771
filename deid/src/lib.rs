//! The de-identification seam of the ingest pipeline.
//!
//! Every resource passes through a [`Deidentifier`] after it is parsed and before anything is
//! written to the lake. This crate owns that trait and its implementations:
//!
//! * [`PolicyEngine`] applies a [`Policy`] (the built-in `safe-harbor` and `limited-data-set`
//!   profiles, a TOML policy or a Microsoft FHIR anonymizer configuration) with a [`DeidKey`], in
//!   one walk per resource: rule paths ([`path`], a FHIRPath subset) matched against the FHIR R4
//!   type table ([`fhirlake_fhir::types`]), methods ([`methods`]: pseudonyms, encryption, date shifting,
//!   generalization, perturbation, substitution, free-text scrubbing); see `docs/deid.md`.
//! * [`Passthrough`] writes resources unchanged; the CLI hands it out solely behind the explicit
//!   `--unsafe-no-deid` flag, and the lake records it as "no de-identification".
//!
//! [`risk`] reports k-anonymity over a de-identified lake.

use serde_json::Value;

pub mod compartment;
pub mod coverage;
pub mod engine;
pub mod key;
pub mod methods;
pub mod path;
pub mod policy;
pub mod risk;
pub mod vocabulary;

pub use compartment::PatientIndex;
pub use engine::{DeidStats, ExplainEntry, PolicyEngine};
pub use key::{DeidKey, KeyError};
pub use policy::{Policy, PolicyError};

/// Errors of the de-identification stage. Variants name the resource type and JSON path, never values.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A rule could not be applied to a node of a resource.
    #[error("{resource_type} at {path}: {reason}")]
    Rule {
        /// FHIR resource type.
        resource_type: String,
        /// JSON path of the node.
        path: String,
        /// What went wrong (no data values).
        reason: String,
    },
}

/// Result type of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What the de-identifier decided for one resource.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Disposition {
    /// The resource (possibly rewritten in place) goes to the lake.
    Keep,
    /// The resource must not reach the lake (e.g. an unknown `modifierExtension`); counted as dropped.
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
