//! The patient compartment: which patient a resource belongs to. De-identification shifts every
//! date of a patient's resources by that patient's offset, so every form of reference to the same
//! patient must give the same patient: `Patient/x`, `Patient/x/_history/n`, `https://…/Patient/x`,
//! `urn:uuid:x` (Bundles) and the conditional `Patient?identifier=system|value`, which names no id
//! and is resolved through a [`PatientIndex`] that the ingest builds (the Patients of the run and
//! of the lake, by identifier pseudonym).
//!
//! The references looked at are the Patient compartment's own: `subject`, `patient` and
//! `beneficiary` (what Synthea and US Core resources use). The full R4 CompartmentDefinition
//! (`performer`, `payee`, `policyHolder` ...) is the next step of the single FHIR floor (issue 14).

use std::borrow::Cow;

use serde_json::Value;

use crate::key::DeidKey;
use crate::methods::pseudonym;

/// The references of a resource that name its patient, in the order they are tried.
pub const PATIENT_REFERENCE_FIELDS: [&str; 3] = ["subject", "patient", "beneficiary"];

/// The patient a resource belongs to, as the resource names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PatientRef<'a> {
    /// The patient's id in the source (`Patient/x` and its other forms, or the Patient itself).
    Id(&'a str),
    /// A conditional reference `Patient?identifier=[system|]value` (percent-decoded).
    Identifier {
        /// The identifier's system, when the reference gives one.
        system: Option<Cow<'a, str>>,
        /// The identifier's value.
        value: Cow<'a, str>,
    },
}

/// The patient of a resource (before de-identification), `None` when it is in no patient's
/// compartment (a Practitioner, an Organization).
pub fn patient_ref(resource: &Value) -> Option<PatientRef<'_>> {
    if resource.get("resourceType")?.as_str()? == "Patient" {
        return resource.get("id")?.as_str().map(PatientRef::Id);
    }
    PATIENT_REFERENCE_FIELDS.iter().find_map(|field| {
        let reference = resource.get(field)?.get("reference")?.as_str()?;
        match pseudonym::patient_in_reference(reference) {
            Some(id) => Some(PatientRef::Id(id)),
            None => conditional_identifier(reference)
                .map(|(system, value)| PatientRef::Identifier { system, value }),
        }
    })
}

/// The identifier of a conditional patient reference: `[base/]Patient?identifier=[system|]value`
/// (other search parameters beside it are ignored). After de-identification the value is the
/// identifier's pseudonym, so the same function reads both forms.
pub fn conditional_identifier(reference: &str) -> Option<(Option<Cow<'_, str>>, Cow<'_, str>)> {
    let (before, query) = reference.split_once('?')?;
    if before.rsplit('/').next() != Some("Patient") {
        return None;
    }
    let raw = query
        .split('&')
        .find_map(|param| param.strip_prefix("identifier="))?;
    let decoded = pseudonym::percent_decode_cow(raw);
    let (system, value) = match decoded {
        Cow::Borrowed(text) => match text.split_once('|') {
            Some((s, v)) => (Some(Cow::Borrowed(s)), Cow::Borrowed(v)),
            None => (None, Cow::Borrowed(text)),
        },
        Cow::Owned(text) => match text.split_once('|') {
            Some((s, v)) => (Some(Cow::Owned(s.to_string())), Cow::Owned(v.to_string())),
            None => (None, Cow::Owned(text)),
        },
    };
    (!value.is_empty()).then_some((system.filter(|s| !s.is_empty()), value))
}

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
    fn every_reference_form_names_the_patient() {
        let obs = |r: &str| json!({"resourceType": "Observation", "subject": {"reference": r}});
        for r in [
            "Patient/p1",
            "Patient/p1/_history/2",
            "https://ehr.example/fhir/Patient/p1",
        ] {
            assert_eq!(patient_ref(&obs(r)), Some(PatientRef::Id("p1")), "{r}");
        }
        let o = obs("Patient?identifier=http://hospital.example/mrn%7CMRN-1");
        assert_eq!(
            patient_ref(&o),
            Some(PatientRef::Identifier {
                system: Some("http://hospital.example/mrn".into()),
                value: "MRN-1".into()
            })
        );
        let o = obs("Patient?identifier=MRN-1&active=true");
        assert_eq!(
            patient_ref(&o),
            Some(PatientRef::Identifier {
                system: None,
                value: "MRN-1".into()
            })
        );
        assert_eq!(patient_ref(&obs("Group?identifier=x|1")), None);
        assert_eq!(patient_ref(&obs("Practitioner/1")), None);
    }

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
