//! fhirlake-fhir: what FHIR R4 means, once, under every other fhirlake crate.
//!
//! The connectors, the de-identifier and the view compiler each need to know FHIR: which
//! resource types exist, which element of which type holds what, how a reference is spelled,
//! which patient a resource belongs to, how a partial date is read, how a FHIRPath expression is
//! written. This crate is the single answer to each of those questions; it has no DataFusion and
//! no Arrow, so every leaf crate can sit on it.
//!
//! * [`types`]: the R4 type table (resource types, datatypes, backbone elements, choice keys),
//!   generated from `hl7.fhir.r4.core` 4.0.1 by `scripts/gen-fhir-types.py`.
//! * [`reference`]: the one reader of a reference's spelling (relative, absolute, `_history`,
//!   conditional, contained, `urn:uuid:`).
//! * [`compartment`]: the patient compartment (from the R4 CompartmentDefinition, by the same
//!   generator) and the one patient a resource is about.
//! * [`datetime`]: FHIR `date`, `dateTime`, `instant` and `time` (partial dates, the offset as
//!   written, low / high boundaries, chrono conversion, formatting back to the same precision).
//! * [`fhirpath`]: FHIRPath syntax (lexer, parser, AST) that views and deid both compile from.
//! * [`error`]: the crate's one error type.

pub mod compartment;
pub mod datetime;
pub mod error;
pub mod fhirpath;
pub mod reference;
pub mod types;

pub use error::{Error, Result};
