//! The patient compartment as de-identification needs it: the rule itself (which patient a
//! resource is about, every spelling of a patient reference) is `fhirlake_fhir::compartment`,
//! from the R4 CompartmentDefinition; this module adds what needs the key. De-identification
//! shifts every date of a patient's resources by that patient's offset, and a conditional
//! reference `Patient?identifier=system|value`, which names no id, is resolved through a
//! [`PatientIndex`] that the ingest builds (the Patients of the run and of the lake, by identifier
//! pseudonym).

pub use fhirlake_fhir::compartment::{PatientRef, conditional_identifier, patient_ref};
use serde_json::Value;

use crate::key::DeidKey;
use crate::methods::pseudonym;

/// Finds a patient by identifier, for conditional references. Keys are identifier pseudonyms
/// ([`identifier_keys`]); values are the patient's lake id (its pseudonymized id).
pub trait PatientIndex: Send + Sync + std::fmt::Debug {
    /// The lake id of the patient that carries the identifier whose pseudonym is `key`.
    fn patient_by_identifier(&self, key: &str) -> Option<String>;
}

/// The keys under which a Patient (before de-identification) is found in a [`PatientIndex`]: per
/// identifier, its pseudonym within its system (what `Identifier.value` becomes, and what a
/// conditional `identifier=system|value` is rewritten to), and within no system (a conditional
/// `identifier=value` names none). Each key maps to the Patient's lake id
/// (`pseudonym::pseudo_id(key, "Patient", id)`).
pub fn identifier_keys(key: &DeidKey, patient: &Value) -> Vec<String> {
    let Some(identifiers) = patient.get("identifier").and_then(Value::as_array) else {
        return Vec::new();
    };
    let mut keys = Vec::with_capacity(identifiers.len() * 2);
    for identifier in identifiers {
        let Some(value) = identifier.get("value").and_then(Value::as_str) else {
            continue;
        };
        let system = identifier
            .get("system")
            .and_then(Value::as_str)
            .unwrap_or("");
        keys.push(pseudonym::pseudo_identifier(key, system, value));
        if !system.is_empty() {
            keys.push(pseudonym::pseudo_identifier(key, "", value));
        }
    }
    keys
}

/// The index key of a conditional reference's identifier (before de-identification).
pub fn reference_key(key: &DeidKey, system: Option<&str>, value: &str) -> String {
    pseudonym::pseudo_identifier(key, system.unwrap_or(""), value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_patients_keys_match_its_conditional_references() {
        let key = DeidKey::from_bytes(&[3; 32], "t").unwrap();
        let patient = json!({"resourceType": "Patient", "id": "p1",
            "identifier": [{"system": "http://hospital.example/mrn", "value": "MRN-1"}]});
        let keys = identifier_keys(&key, &patient);
        assert!(keys.contains(&reference_key(
            &key,
            Some("http://hospital.example/mrn"),
            "MRN-1"
        )));
        assert!(keys.contains(&reference_key(&key, None, "MRN-1")));
        assert!(!keys.contains(&reference_key(&key, Some("http://other"), "MRN-1")));
    }
}
