//! The de-identification seam of the ingest pipeline.
//!
//! Every resource passes through a [`Deidentifier`] after it is parsed and before anything is
//! written to the lake. This crate owns that trait and its implementations:
//!
//! * [`PolicyEngine`] applies a [`Policy`] (the built-in `safe-harbor` and `limited-data-set`
//!   profiles, a TOML policy or a Microsoft FHIR anonymizer configuration) with a [`DeidKey`], in
//!   one walk per resource: rule paths ([`path`], a FHIRPath subset) matched against the FHIR R4
//!   type table ([`fhirlake_fhir::types`]), methods ([`methods`]: pseudonyms, encryption, date
//!   shifting, generalization, perturbation, substitution, free-text scrubbing); see
//!   `docs/deid.md`.
//! * [`Passthrough`] writes resources unchanged; the CLI hands it out solely behind the explicit
//!   `--unsafe-no-deid` flag, and the lake records it as "no de-identification".
//!
//! [`risk`] reports k-anonymity over a de-identified lake. The trait, what it decides and counts
//! live in `deidentifier.rs`; the crate's one error type, [`Error`], in `error.rs`.

pub mod compartment;
pub mod coverage;
mod deidentifier;
pub mod engine;
mod error;
pub mod key;
pub mod methods;
pub mod path;
pub mod policy;
pub mod risk;
pub mod vocabulary;

pub use compartment::PatientIndex;
pub use deidentifier::{DeidStats, Deidentifier, Disposition, NO_DEID_POLICY, Passthrough};
pub use engine::{ExplainEntry, PolicyEngine};
pub use error::{Error, KeyError, PolicyError, Result, RuleError};
pub use key::DeidKey;
pub use policy::Policy;
