//! The patient compartment at ingest: every form of reference to a patient (`Patient/x`,
//! `Patient/x/_history/n`, an absolute URL, and the conditional `Patient?identifier=system|value`
//! with or without its system) gives the same `patient_id` and the same date shift, in the run
//! that ingests the Patient and, through `raw.patient`, in a later run that does not.
//!
//! Synthetic resources only. Shifts are compared between resources (shifted minus original
//! `effectiveDateTime`), never against a fixed number of days.

use std::path::Path;

use fhirlake_tests::*;
use serde_json::{Value, json};

const MRN: &str = "http://hospital.example/mrn";

fn patient(id: &str, mrn: &str) -> Value {
    json!({
        "resourceType": "Patient",
        "id": id,
        "identifier": [{"system": MRN, "value": mrn}],
        "gender": "female",
        "birthDate": "1970-05-06"
    })
}

/// An Observation of `subject` taken at `effective` (an instant).
fn observation(id: &str, subject: &str, effective: &str) -> Value {
    json!({
        "resourceType": "Observation",
        "id": id,
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "8302-2"}]},
        "subject": {"reference": subject},
        "effectiveDateTime": effective,
        "valueQuantity": {"value": 170, "unit": "cm", "system": "http://unitsofmeasure.org", "code": "cm"}
    })
}

fn write_ndjson(path: &Path, resources: &[Value]) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let text: String = resources.iter().map(|r| format!("{r}\n")).collect();
    std::fs::write(path, text).unwrap();
}

/// `fhirlake ingest` into `L`, with the key unless the flags say `--unsafe-no-deid`.
fn ingest(cwd: &Path, extra: &[&str], source: &str) -> std::process::Output {
    let mut command = fhirlake(cwd);
    if !extra.contains(&"--unsafe-no-deid") {
        command.env("FHIRLAKE_DEID_KEY", KEY);
    }
    command
        .args(["ingest", "--lake", "L"])
        .args(extra)
        .arg(source);
    run(&mut command)
}

/// Seconds between two instants (the shifted minus the original).
fn shift_seconds(shifted: &str, original: &str) -> i64 {
    let parse = |t: &str| {
        chrono::DateTime::parse_from_rfc3339(t)
            .unwrap_or_else(|e| panic!("{t}: {e}"))
            .timestamp()
    };
    parse(shifted) - parse(original)
}

/// `(patient_id, shift in seconds)` of every stored Observation, by the Observation's original
/// id, found through the originals: each has its own `effectiveDateTime`, and the lake keeps the
/// order of neither ids nor rows, so rows are matched by `valueQuantity.value`.
fn stored_observations(cwd: &Path, originals: &[Value]) -> Vec<(String, Option<String>, i64)> {
    let rows = sql(cwd, "L", "SELECT patient_id, resource FROM raw.observation");
    originals
        .iter()
        .map(|original| {
            let value = &original["valueQuantity"]["value"];
            let row = rows
                .iter()
                .find(|row| {
                    let resource: Value =
                        serde_json::from_str(row["resource"].as_str().unwrap()).unwrap();
                    &resource["valueQuantity"]["value"] == value
                })
                .unwrap_or_else(|| panic!("{} is not stored: {rows:?}", original["id"]));
            let resource: Value = serde_json::from_str(row["resource"].as_str().unwrap()).unwrap();
            let shifted = resource["effectiveDateTime"]
                .as_str()
                .unwrap_or_else(|| panic!("no effectiveDateTime in {resource}"));
            (
                original["id"].as_str().unwrap().to_string(),
                row["patient_id"].as_str().map(str::to_string),
                shift_seconds(shifted, original["effectiveDateTime"].as_str().unwrap()),
            )
        })
        .collect()
}

/// Observations with distinct values (to find them again) and distinct instants.
fn observations(subjects: &[(&str, &str)], first_value: i64) -> Vec<Value> {
    subjects
        .iter()
        .enumerate()
        .map(|(i, (id, subject))| {
            let mut o = observation(id, subject, &format!("2021-03-{:02}T10:15:00Z", i + 1));
            o["valueQuantity"]["value"] = json!(first_value + i as i64);
            o
        })
        .collect()
}

fn lake_id_of_patient(cwd: &Path, gender: &str) -> String {
    let rows = sql(
        cwd,
        "L",
        &format!("SELECT id FROM raw.patient WHERE json_get_str(resource, 'gender') = '{gender}'"),
    );
    assert_eq!(rows.len(), 1, "{rows:?}");
    rows[0]["id"].as_str().unwrap().to_string()
}

#[test]
fn every_form_of_reference_gives_the_same_patient_and_shift() {
    let dir = tempfile::tempdir().unwrap();
    let cwd = dir.path();
    let mut other = patient("p2", "MRN-2");
    other["gender"] = json!("male");
    let conditional = format!("Patient?identifier={MRN}|MRN-1");
    let encoded = "Patient?identifier=http%3A%2F%2Fhospital.example%2Fmrn%7CMRN-1";
    let first = observations(
        &[
            ("o-plain", "Patient/p1"),
            ("o-history", "Patient/p1/_history/2"),
            ("o-absolute", "https://ehr.hospital.example/fhir/Patient/p1"),
            ("o-conditional", &conditional),
            ("o-encoded", encoded),
            ("o-no-system", "Patient?identifier=MRN-1"),
            ("o-other", "Patient?identifier=MRN-2"),
            ("o-unknown", "Patient?identifier=MRN-404"),
        ],
        100,
    );
    // The Patients in one file, the Observations in another (the pre-pass reads Patient files).
    write_ndjson(
        &cwd.join("src1/Patient.ndjson"),
        &[patient("p1", "MRN-1"), other],
    );
    write_ndjson(&cwd.join("src1/Observation.ndjson"), &first);
    let output = ingest(cwd, &[], "src1");
    assert_code(&output, 0);
    assert!(
        text(&output.stdout).contains("1 conditional patient references"),
        "the unresolved reference is counted in the summary:\n{}",
        text(&output.stdout)
    );

    let runs = sql(
        cwd,
        "L",
        "SELECT unresolved_patient_references AS n, malformed_removed AS m FROM lake.runs",
    );
    assert_eq!(runs.len(), 1, "{runs:?}");
    assert_eq!(
        (runs[0]["n"].as_i64(), runs[0]["m"].as_i64()),
        (Some(1), Some(0)),
        "lake.runs counts it too"
    );

    let p1 = lake_id_of_patient(cwd, "female");
    let p2 = lake_id_of_patient(cwd, "male");
    assert_ne!(p1, p2);
    // The views see the same patient: a resolved conditional reference is written as the
    // literal `Patient/<lake id>`, so the view's `patient_id` agrees with the raw table's.
    let disagree = sql(
        cwd,
        "L",
        "SELECT r.id FROM raw.observation r JOIN observation v ON v.id = r.id \
         WHERE v.patient_id IS DISTINCT FROM r.patient_id",
    );
    assert!(
        disagree.is_empty(),
        "view and raw patient_id differ: {disagree:?}"
    );
    let resolved = sql(
        cwd,
        "L",
        "SELECT count(*) AS n FROM observation WHERE patient_id IS NOT NULL",
    );
    assert_eq!(resolved[0]["n"].as_i64(), Some(7), "{resolved:?}");
    let stored = stored_observations(cwd, &first);
    let shift_of = |id: &str| stored.iter().find(|(o, ..)| o == id).unwrap().2;
    let p1_shift = shift_of("o-plain");
    for (id, patient_id, shift) in &stored {
        match id.as_str() {
            "o-other" => assert_eq!(patient_id.as_deref(), Some(p2.as_str()), "{id}"),
            "o-unknown" => assert_eq!(patient_id.as_deref(), None, "{id}"),
            _ => {
                assert_eq!(patient_id.as_deref(), Some(p1.as_str()), "{id}");
                assert_eq!(
                    *shift, p1_shift,
                    "{id} has another date shift than Patient/p1"
                );
            }
        }
    }
    // The conditional reference to p2 has p2's shift, the one of a plain reference to it.
    let check = observations(&[("o-p2", "Patient/p2")], 900);
    write_ndjson(&cwd.join("src-check/Observation.ndjson"), &check);
    assert_code(&ingest(cwd, &[], "src-check"), 0);
    let p2_plain = stored_observations(cwd, &check);
    assert_eq!(p2_plain[0].1.as_deref(), Some(p2.as_str()));
    assert_eq!(shift_of("o-other"), p2_plain[0].2);

    // A later run with only Observations: their conditional references resolve through the
    // lake's raw.patient.
    let later = observations(
        &[
            ("o-later", &conditional),
            ("o-later-encoded", encoded),
            ("o-later-other", &format!("Patient?identifier={MRN}|MRN-2")),
        ],
        200,
    );
    write_ndjson(&cwd.join("src2/Observation.ndjson"), &later);
    let output = ingest(cwd, &[], "src2");
    assert_code(&output, 0);
    assert!(
        !text(&output.stdout).contains("conditional patient references"),
        "{}",
        text(&output.stdout)
    );
    let stored = stored_observations(cwd, &later);
    for (id, patient_id, shift) in &stored {
        let (expected, expected_shift) = if id == "o-later-other" {
            (&p2, p2_plain[0].2)
        } else {
            (&p1, p1_shift)
        };
        assert_eq!(patient_id.as_deref(), Some(expected.as_str()), "{id}");
        assert_eq!(*shift, expected_shift, "{id}");
    }
}

#[test]
fn conditional_references_resolve_without_deidentification() {
    let dir = tempfile::tempdir().unwrap();
    let cwd = dir.path();
    let conditional = format!("Patient?identifier={MRN}|MRN-1");
    let first = observations(
        &[
            ("o-plain", "Patient/p1"),
            ("o-conditional", &conditional),
            ("o-no-system", "Patient?identifier=MRN-1"),
        ],
        100,
    );
    let mut all = vec![patient("p1", "MRN-1")];
    all.extend(first.iter().cloned());
    write_ndjson(&cwd.join("src1/export.ndjson"), &all);
    let no_deid = ["--unsafe-no-deid", "-q"];
    assert_code(&ingest(cwd, &no_deid, "src1"), 0);
    for (id, patient_id, shift) in stored_observations(cwd, &first) {
        assert_eq!(patient_id.as_deref(), Some("p1"), "{id}");
        assert_eq!(
            shift, 0,
            "{id}: nothing is shifted without de-identification"
        );
    }
    let later = observations(&[("o-later", &conditional)], 200);
    write_ndjson(&cwd.join("src2/export.ndjson"), &later);
    assert_code(&ingest(cwd, &no_deid, "src2"), 0);
    let stored = stored_observations(cwd, &later);
    assert_eq!(stored[0].1.as_deref(), Some("p1"));
}

#[test]
fn a_bundles_patient_resolves_the_conditional_references_beside_it() {
    let dir = tempfile::tempdir().unwrap();
    let cwd = dir.path();
    let conditional = format!("Patient?identifier={MRN}|MRN-7");
    let entries = observations(
        &[
            ("o-urn", "urn:uuid:5b1e4c0a-1f7e-4d3b-9a51-0c1f2e3d4b5a"),
            ("o-conditional", &conditional),
        ],
        300,
    );
    let mut p7 = patient("5b1e4c0a-1f7e-4d3b-9a51-0c1f2e3d4b5a", "MRN-7");
    p7["gender"] = json!("other");
    let mut bundle_entries = vec![json!({
        "fullUrl": "urn:uuid:5b1e4c0a-1f7e-4d3b-9a51-0c1f2e3d4b5a",
        "resource": p7,
        "request": {"method": "POST", "url": "Patient"}
    })];
    for o in &entries {
        bundle_entries
            .push(json!({"resource": o, "request": {"method": "POST", "url": "Observation"}}));
    }
    let bundle = json!({"resourceType": "Bundle", "type": "transaction", "entry": bundle_entries});
    std::fs::create_dir_all(cwd.join("src")).unwrap();
    std::fs::write(cwd.join("src/transaction.json"), bundle.to_string()).unwrap();
    assert_code(&ingest(cwd, &["-q"], "src"), 0);
    let p7 = lake_id_of_patient(cwd, "other");
    let stored = stored_observations(cwd, &entries);
    assert_eq!(
        stored[0].1.as_deref(),
        Some(p7.as_str()),
        "the urn:uuid entry"
    );
    assert_eq!(
        stored[1].1.as_deref(),
        Some(p7.as_str()),
        "the conditional one"
    );
    assert_eq!(stored[0].2, stored[1].2, "the same date shift");
}
