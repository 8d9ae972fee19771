//! The patients of an ingest by identifier, so that a conditional reference
//! (`subject: Patient?identifier=system|value`) names the same patient as `Patient/x`: the same
//! `patient_id` and, through [`PolicyEngine::with_patient_index`], the same date shift.
//!
//! Before the pipeline starts, [`PatientsByIdentifier::load`] gathers the patients a run can see:
//! the Patient resources of its sources (a pre-pass that reads only files that can hold Patients,
//! and parses only the lines that mention `"Patient"`) and the lake's `raw.patient` rows. A key is
//! what a conditional reference's identifier becomes after de-identification: the identifier's
//! pseudonym (see `fhirlake_deid::compartment`), or `system|value` as typed when nothing is
//! de-identified (`--unsafe-no-deid`). The value is the patient's lake id. An identifier that
//! two patients carry resolves to neither.
//!
//! What is not covered: with a [`super::FileFeed`] (a Bulk Data pull) the files are not known
//! before the pipeline starts, so only the lake's patients are in the index; a stored (already
//! pseudonymized) identifier of a lake patient is found only under its system (the pseudonym
//! within no system cannot be derived from it), so a conditional reference without a system
//! finds only the patients of its own run.
//!
//! [`PolicyEngine::with_patient_index`]: fhirlake_deid::PolicyEngine::with_patient_index

use std::collections::HashMap;
use std::sync::RwLock;
use std::sync::atomic::{AtomicU64, Ordering};

use arrow::array::Array as _;
use fhirlake_connectors::{FileRole, SourceFile, SourceItem, read_source_file};
use fhirlake_deid::compartment::{self, PatientIndex};
use fhirlake_deid::{DeidKey, Deidentifier};
use fhirlake_fhir::reference::is_valid_id;
use fhirlake_fhir::types::is_resource_type;
use futures::StreamExt as _;
use serde_json::Value;

use crate::lake::{Lake, TableId, layout};
use crate::{Error, Result};

/// How index keys are made.
#[derive(Clone)]
enum Keying {
    /// De-identified lake: the identifier pseudonyms of this key.
    Pseudonyms(Box<DeidKey>),
    /// Nothing is de-identified: `system|value` as typed (`|value` without a system).
    AsTyped,
}

/// Patients by identifier for one ingest (see the module docs). Shared by the policy engine (date
/// shift) and the pipeline (`patient_id`); [`Self::load`] fills it before each run.
pub struct PatientsByIdentifier {
    keying: Keying,
    /// Key -> lake id; `None` for an identifier that several patients carry.
    patients: RwLock<HashMap<String, Option<String>>>,
    /// Conditional references of the current run that matched no patient.
    unresolved: AtomicU64,
}

impl std::fmt::Debug for PatientsByIdentifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Counted, not listed: keys and ids are pseudonyms, or identifiers as typed.
        f.debug_struct("PatientsByIdentifier")
            .field("keys", &self.patients.read().map(|p| p.len()).unwrap_or(0))
            .finish_non_exhaustive()
    }
}

impl PatientsByIdentifier {
    /// The index of a de-identifying ingest with `key` (the policy engine's key).
    pub fn pseudonymized(key: DeidKey) -> Self {
        Self::with_keying(Keying::Pseudonyms(Box::new(key)))
    }

    /// The index of an ingest that de-identifies nothing (`--unsafe-no-deid`).
    pub fn as_typed() -> Self {
        Self::with_keying(Keying::AsTyped)
    }

    fn with_keying(keying: Keying) -> Self {
        Self {
            keying,
            patients: RwLock::new(HashMap::new()),
            unresolved: AtomicU64::new(0),
        }
    }

    /// Replaces the index with the patients of `files` (before de-identification; lake ids from
    /// `deid`) and of the lake's `raw.patient` table, and resets the unresolved count. Reads the
    /// files on a blocking thread.
    pub async fn load(
        self: &std::sync::Arc<Self>,
        files: Vec<SourceFile>,
        lake: &Lake,
        deid: std::sync::Arc<dyn Deidentifier>,
    ) -> Result<()> {
        let mut patients = HashMap::new();
        for (keys, lake_id) in self.lake_patients(lake).await? {
            insert(&mut patients, keys, lake_id);
        }
        let index = self.clone();
        let from_sources = tokio::task::spawn_blocking(move || {
            let mut found = Vec::new();
            for file in files.iter().filter(|f| may_hold_patients(f)) {
                index.read_patients(file, deid.as_ref(), &mut found);
            }
            found
        })
        .await
        .map_err(|e| Error::Internal(format!("patient pre-pass thread: {e}")))?;
        for (keys, lake_id) in from_sources {
            insert(&mut patients, keys, lake_id);
        }
        *self
            .patients
            .write()
            .map_err(|_| Error::Internal("patient index lock poisoned".into()))? = patients;
        self.unresolved.store(0, Ordering::Relaxed);
        Ok(())
    }

    /// The lake id of the patient that a conditional reference of a resource as stored (after
    /// de-identification) names; counts the reference as unresolved when no patient matches.
    pub fn resolve_stored(&self, system: Option<&str>, value: &str) -> Option<String> {
        let key = match &self.keying {
            Keying::Pseudonyms(_) => value.to_string(),
            Keying::AsTyped => typed_key(system.unwrap_or(""), value),
        };
        let found = self.get(&key);
        if found.is_none() {
            self.unresolved.fetch_add(1, Ordering::Relaxed);
        }
        found
    }

    /// Conditional patient references of the current run that matched no patient.
    pub fn unresolved(&self) -> u64 {
        self.unresolved.load(Ordering::Relaxed)
    }

    fn get(&self, key: &str) -> Option<String> {
        self.patients.read().ok()?.get(key).cloned().flatten()
    }

    /// The keys of a Patient as read from a source (before de-identification).
    fn source_keys(&self, patient: &Value) -> Vec<String> {
        match &self.keying {
            Keying::Pseudonyms(key) => compartment::identifier_keys(key, patient),
            Keying::AsTyped => typed_keys(patient),
        }
    }

    /// The keys of a Patient as stored in the lake (after de-identification).
    fn stored_keys(&self, patient: &Value) -> Vec<String> {
        match &self.keying {
            // `Identifier.value` is already the pseudonym within its system.
            Keying::Pseudonyms(_) => identifiers(patient)
                .map(|(_, value)| value.to_string())
                .collect(),
            Keying::AsTyped => typed_keys(patient),
        }
    }

    /// `(keys, lake id)` of every row of `raw.patient`.
    async fn lake_patients(&self, lake: &Lake) -> Result<Vec<(Vec<String>, String)>> {
        let id = TableId::raw("Patient");
        let Some(table) = lake.load_table(&id).await? else {
            return Ok(Vec::new());
        };
        let session = fhirlake_sql::LakeSession::try_new(
            vec![fhirlake_sql::LakeTable {
                schema: layout::SCHEMA_RAW.to_string(),
                name: id.name.clone(),
                table,
            }],
            vec![lake.store_registration()],
        )?;
        let context = "reading raw.patient for the patient index";
        let mut stream = session
            .sql(&format!("SELECT id, resource FROM {id}"))
            .await?
            .execute_stream()
            .await
            .map_err(|e| Error::datafusion(context, e))?;
        let mut found = Vec::new();
        while let Some(batch) = stream.next().await {
            let batch = batch.map_err(|e| Error::datafusion(context, e))?;
            let ids = text_column(&batch, 0)?;
            let resources = text_column(&batch, 1)?;
            for row in 0..batch.num_rows() {
                // Rows without identifiers (most of them, in many lakes) are not parsed.
                if ids.is_null(row) || !resources.value(row).contains("\"identifier\"") {
                    continue;
                }
                let Ok(patient) = serde_json::from_str::<Value>(resources.value(row)) else {
                    continue;
                };
                let keys = self.stored_keys(&patient);
                if !keys.is_empty() {
                    found.push((keys, ids.value(row).to_string()));
                }
            }
        }
        Ok(found)
    }

    /// Adds the Patients of one source file to `found`. What cannot be read is skipped: the
    /// pipeline reads the file again and reports it.
    fn read_patients(
        &self,
        file: &SourceFile,
        deid: &dyn Deidentifier,
        found: &mut Vec<(Vec<String>, String)>,
    ) {
        let mut add = |patient: &Value| {
            if patient.get("resourceType").and_then(Value::as_str) != Some("Patient") {
                return;
            }
            let Some(id) = patient
                .get("id")
                .and_then(Value::as_str)
                .filter(|id| is_valid_id(id))
            else {
                return;
            };
            let keys = self.source_keys(patient);
            if !keys.is_empty() {
                found.push((keys, deid.lake_id("Patient", id)));
            }
        };
        let _ = read_source_file(file, &mut |item| {
            match item {
                SourceItem::Line { bytes, .. } => {
                    // Only a line that mentions the type as a whole JSON string is parsed.
                    if let Ok(text) = std::str::from_utf8(&bytes)
                        && text.contains("\"Patient\"")
                        && let Ok(resource) = serde_json::from_str::<Value>(text)
                    {
                        add(&resource);
                    }
                }
                SourceItem::Resource { resource, .. } => add(&resource),
                SourceItem::Delete { .. } | SourceItem::Reject { .. } => {}
            }
            true
        });
    }
}

impl PatientIndex for PatientsByIdentifier {
    fn patient_by_identifier(&self, key: &str) -> Option<String> {
        self.get(key)
    }
}

/// Adds a patient's keys; a key that already names another patient names none.
fn insert(patients: &mut HashMap<String, Option<String>>, keys: Vec<String>, lake_id: String) {
    for key in keys {
        patients
            .entry(key)
            .and_modify(|known| {
                if known.as_deref() != Some(lake_id.as_str()) {
                    *known = None;
                }
            })
            .or_insert_with(|| Some(lake_id.clone()));
    }
}

/// Could the file hold Patient resources? Not a file of Bulk Data `deleted[]` entries, not a file
/// the manifest types as another resource type, and not one named after another resource type
/// (`Observation.ndjson`, `12.Observation.000.ndjson.gz`: the first name part that is a type).
fn may_hold_patients(file: &SourceFile) -> bool {
    if file.role == FileRole::Deleted {
        return false;
    }
    let holds = |ty: &str| matches!(ty, "Patient" | "Bundle");
    if let Some(expected) = &file.expected_type {
        return holds(expected);
    }
    let named = file.location.file_name().and_then(|name| {
        name.split(['.', '-', '_'])
            .find(|part| is_resource_type(part))
            .map(str::to_string)
    });
    named.is_none_or(|ty| holds(&ty))
}

/// `(system, value)` of every identifier of a Patient that has a value.
fn identifiers(patient: &Value) -> impl Iterator<Item = (&str, &str)> {
    patient
        .get("identifier")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|identifier| {
            let value = identifier.get("value")?.as_str()?;
            let system = identifier
                .get("system")
                .and_then(Value::as_str)
                .unwrap_or("");
            Some((system, value))
        })
}

/// Keys when nothing is de-identified: `system|value`, and `|value` (a conditional reference
/// may name no system).
fn typed_keys(patient: &Value) -> Vec<String> {
    let mut keys = Vec::new();
    for (system, value) in identifiers(patient) {
        keys.push(typed_key(system, value));
        if !system.is_empty() {
            keys.push(typed_key("", value));
        }
    }
    keys
}

fn typed_key(system: &str, value: &str) -> String {
    format!("{system}|{value}")
}

fn text_column(batch: &arrow::array::RecordBatch, i: usize) -> Result<arrow::array::StringArray> {
    let column = arrow::compute::cast(batch.column(i), &arrow::datatypes::DataType::Utf8)
        .map_err(|e| Error::Internal(format!("raw.patient column {i}: {e}")))?;
    column
        .as_any()
        .downcast_ref::<arrow::array::StringArray>()
        .cloned()
        .ok_or_else(|| Error::Internal(format!("raw.patient column {i} is not text")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use fhirlake_connectors::{FileFormat, Location};
    use serde_json::json;

    fn file(name: &str, expected_type: Option<&str>) -> SourceFile {
        let mut file = SourceFile::new(
            Location::Local(std::path::PathBuf::from("/data").join(name)),
            FileFormat::Ndjson,
            false,
        );
        file.expected_type = expected_type.map(str::to_string);
        file
    }

    #[test]
    fn only_files_that_can_hold_patients_are_read() {
        assert!(may_hold_patients(&file("Patient.ndjson", None)));
        assert!(may_hold_patients(&file("36.Patient.ndjson.gz", None)));
        assert!(may_hold_patients(&file("export.ndjson", None)));
        assert!(may_hold_patients(&file("Aaron697_Brekke496.json", None)));
        assert!(may_hold_patients(&file("Bundle-1.json", None)));
        assert!(!may_hold_patients(&file(
            "12.Observation.000.ndjson.gz",
            None
        )));
        assert!(!may_hold_patients(&file("x.ndjson", Some("Condition"))));
        assert!(may_hold_patients(&file("x.ndjson", Some("Patient"))));
    }

    #[test]
    fn a_shared_identifier_names_no_patient() {
        let index = PatientsByIdentifier::as_typed();
        let mut patients = HashMap::new();
        let one = json!({"identifier": [{"system": "s", "value": "1"}, {"value": "2"}]});
        let two = json!({"identifier": [{"system": "t", "value": "1"}]});
        insert(&mut patients, index.source_keys(&one), "p1".into());
        insert(&mut patients, index.source_keys(&two), "p2".into());
        // The same patient again (the lake and the run) is no conflict.
        insert(&mut patients, index.stored_keys(&one), "p1".into());
        *index.patients.write().unwrap() = patients;
        assert_eq!(index.resolve_stored(Some("s"), "1").as_deref(), Some("p1"));
        assert_eq!(index.resolve_stored(Some("t"), "1").as_deref(), Some("p2"));
        assert_eq!(index.resolve_stored(None, "2").as_deref(), Some("p1"));
        assert_eq!(index.unresolved(), 0);
        // `|1` is carried by both.
        assert_eq!(index.resolve_stored(None, "1"), None);
        assert_eq!(index.resolve_stored(Some("u"), "1"), None);
        assert_eq!(index.unresolved(), 2);
    }

    #[test]
    fn pseudonymized_keys_are_the_stored_identifier_values() {
        let key = DeidKey::from_bytes(&[7; 32], "t").unwrap();
        let index = PatientsByIdentifier::pseudonymized(key.clone());
        let patient = json!({"resourceType": "Patient", "id": "p1",
            "identifier": [{"system": "http://hospital.example/mrn", "value": "MRN-1"}]});
        let keys = index.source_keys(&patient);
        let stored = compartment::reference_key(&key, Some("http://hospital.example/mrn"), "MRN-1");
        assert!(keys.contains(&stored));
        let stored_patient = json!({"identifier": [{"value": stored}]});
        assert_eq!(index.stored_keys(&stored_patient), vec![stored]);
    }
}
