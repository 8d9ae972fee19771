//! Safe-harbor by allow-list: the long tail of FHIR that a remove-list lets through (issue 16).
//! Each test plants identifying text where realistic exports carry it and checks that none of it
//! survives, while what the views need (codes, values, pseudonymized keys, shifted dates) stays.

use chrono::NaiveDate;
use fhirlake_deid::methods::pseudonym;
use fhirlake_deid::{DeidKey, Deidentifier, Disposition, Policy, PolicyEngine};
use serde_json::{Value, json};

const RACE: &str = "http://hl7.org/fhir/us/core/StructureDefinition/us-core-race";
const PLANTED: &[&str] = &[
    "Ratched",
    "Springfield General",
    "ehr.stmarys",
    "10.20.30.40",
    "555-0199",
    "jsmith",
    "Chest pain after fall",
];

fn key() -> DeidKey {
    DeidKey::from_bytes(&[7; 32], "test").unwrap()
}

fn engine(profile: &str) -> PolicyEngine {
    PolicyEngine::new(Policy::builtin(profile).unwrap(), key())
        .with_today(NaiveDate::from_ymd_opt(2026, 12, 1).unwrap())
}

fn run(engine: &PolicyEngine, resource: Value) -> Value {
    let mut out = resource;
    match engine.deidentify(&mut out) {
        Ok(Disposition::Keep) => out,
        other => panic!("expected Keep, got {other:?}"),
    }
}

/// Fails with the planted fragments found in the output text.
fn assert_clean(out: &Value) {
    let text = out.to_string();
    let found: Vec<_> = PLANTED.iter().filter(|p| text.contains(*p)).collect();
    assert!(found.is_empty(), "planted text survived {found:?}: {text}");
}

#[test]
fn primitive_extensions_are_not_kept_by_the_primitives_rule() {
    let out = run(
        &engine("safe-harbor"),
        json!({
            "resourceType": "Patient", "id": "p1", "gender": "female", "birthDate": "1970-03-04",
            "_birthDate": {"id": "jsmith-dob", "extension": [
                {"url": "http://hl7.org/fhir/StructureDefinition/patient-birthTime", "valueDateTime": "1970-03-04T10:11:00Z"},
                {"url": "http://example.org/nurse", "valueString": "Nurse Ratched"}
            ]},
            "_gender": {"extension": [{"url": "http://example.org/note", "valueString": "told by Ratched"}]},
            "address": [{"state": "MA", "_state": {"extension": [{"url": "http://example.org/x", "valueString": "Springfield General"}]}}]
        }),
    );
    assert_clean(&out);
    assert_eq!(out["birthDate"], "1970");
    assert_eq!(out["gender"], "female");
    assert_eq!(out["address"][0]["state"], "MA");
    assert!(
        !out.to_string().contains("1970-03-04"),
        "the birth time extension holds the full date: {out}"
    );
}

#[test]
fn sub_extensions_are_allowed_by_url_and_the_rest_dropped() {
    let out = run(
        &engine("safe-harbor"),
        json!({
            "resourceType": "Patient", "id": "p1",
            "extension": [{"url": RACE, "extension": [
                {"url": "ombCategory", "valueCoding": {"system": "urn:oid:2.16.840.1.113883.6.238", "code": "2106-3", "display": "White"}},
                {"url": "ombCategory", "valueString": "Nurse Ratched"},
                {"url": "detailed", "valueHumanName": {"family": "Ratched"}},
                {"url": "text", "valueString": "Ratched"},
                {"url": "mother", "valueAddress": {"city": "Springfield General", "state": "MA"}},
                {"url": "phone", "valueContactPoint": {"value": "555-0199"}},
                {"url": "when", "valueDateTime": "2001-02-03"}
            ]}]
        }),
    );
    assert_clean(&out);
    assert_eq!(
        out["extension"],
        json!([{"url": RACE, "extension": [
            {"url": "ombCategory", "valueCoding": {"system": "urn:oid:2.16.840.1.113883.6.238", "code": "2106-3", "display": "White"}}
        ]}])
    );
}

#[test]
fn meta_implicit_rules_and_contained_ids_do_not_survive() {
    let out = run(
        &engine("safe-harbor"),
        json!({
            "resourceType": "MedicationRequest", "id": "m1", "status": "active", "intent": "order",
            "implicitRules": "https://ehr.stmarys.example/rules",
            "meta": {
                "versionId": "jsmith-3", "lastUpdated": "2020-01-02T03:04:05Z",
                "source": "https://ehr.stmarys.example/fhir#10.20.30.40",
                "profile": ["https://ehr.stmarys.example/StructureDefinition/x"],
                "tag": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ActReason", "code": "HTEST", "display": "entered by Ratched"}],
                "security": [{"system": "https://ehr.stmarys.example/labels", "code": "R", "display": "Springfield General only"}]
            },
            "subject": {"reference": "Patient/p1", "display": "Nurse Ratched"},
            "contained": [{"resourceType": "Medication", "id": "jsmith-med",
                           "code": {"coding": [{"system": "http://www.nlm.nih.gov/research/umls/rxnorm", "code": "313782"}]}}],
            "medicationReference": {"reference": "#jsmith-med"}
        }),
    );
    assert_clean(&out);
    let local = &out["contained"][0]["id"];
    assert_eq!(
        out["medicationReference"]["reference"],
        format!("#{}", local.as_str().unwrap())
    );
    assert!(out["meta"]["lastUpdated"].is_string(), "{out}");
    assert_eq!(out["meta"]["tag"][0]["code"], "HTEST");
    assert!(out["meta"]["security"][0].get("system").is_none(), "{out}");
    assert_eq!(out["contained"][0]["code"]["coding"][0]["code"], "313782");
}

#[test]
fn bundles_stored_as_resources_are_de_identified_like_any_other() {
    let patient = json!({"resourceType": "Patient", "id": "p1", "name": [{"family": "Ratched"}], "gender": "male"});
    let engine = engine("safe-harbor");
    let out = run(
        &engine,
        json!({
            "resourceType": "Bundle", "id": "b1", "type": "transaction",
            "link": [{"relation": "self", "url": "https://ehr.stmarys.example/fhir/Patient?name=Ratched"}],
            "entry": [
                {"fullUrl": "https://ehr.stmarys.example/fhir/Patient/p1", "resource": patient,
                 "request": {"method": "PUT", "url": "Patient/p1"},
                 "response": {"status": "201 Created", "location": "https://ehr.stmarys.example/fhir/Patient/p1/_history/1"}},
                {"fullUrl": "urn:uuid:6d1c3f3e-0000-4000-8000-000000000001",
                 "resource": {"resourceType": "Bundle", "id": "inner", "type": "collection",
                              "entry": [{"resource": {"resourceType": "Observation", "id": "o1", "status": "final",
                                                       "code": {"text": "Chest pain after fall"},
                                                       "subject": {"reference": "Patient/p1"},
                                                       "valueString": "Nurse Ratched says 555-0199"}}]}}
            ]
        }),
    );
    assert_clean(&out);
    let p = engine.lake_id("Patient", "p1");
    assert_eq!(out["entry"][0]["fullUrl"], format!("Patient/{p}"));
    assert_eq!(out["entry"][0]["request"]["url"], format!("Patient/{p}"));
    assert_eq!(
        out["entry"][0]["response"]["location"],
        format!("Patient/{p}/_history/1")
    );
    assert_eq!(out["entry"][0]["resource"]["id"], p.as_str());
    assert_eq!(
        out["entry"][1]["resource"]["entry"][0]["resource"]["subject"]["reference"],
        format!("Patient/{p}")
    );
}

#[test]
fn free_text_is_replaced_from_the_vocabulary_or_removed() {
    let sct = "http://snomed.info/sct";
    let out = run(
        &engine("safe-harbor"),
        json!({
            "resourceType": "Condition", "id": "c1", "subject": {"reference": "Patient/p1"},
            "code": {"coding": [{"system": sct, "code": "44054006", "display": "Chest pain after fall at Ratched's"}],
                     "text": "Chest pain after fall"},
            "category": [{"text": "Springfield General intake"}],
            "note": [{"text": "Ratched called 555-0199"}],
            "bodySite": [{"coding": [{"system": "https://ehr.stmarys.example/sites", "code": "L1", "display": "jsmith's left arm"}]}]
        }),
    );
    assert_clean(&out);
    let canonical = fhirlake_deid::vocabulary::displays(sct, "44054006").unwrap()[0].as_str();
    assert_eq!(out["code"]["coding"][0]["display"], canonical);
    assert_eq!(out["code"]["text"], canonical);
    assert!(
        out.get("category").is_none() && out.get("note").is_none(),
        "{out}"
    );
    // An unknown system: the URI goes, the code stays.
    assert_eq!(out["bodySite"][0], json!({"coding": [{"code": "L1"}]}));

    let qr = run(
        &engine("safe-harbor"),
        json!({
            "resourceType": "QuestionnaireResponse", "id": "q1", "status": "completed",
            "item": [{"linkId": "1", "text": "Who referred you?", "answer": [
                {"valueString": "Nurse Ratched"}, {"valueUri": "https://ehr.stmarys.example/u/jsmith"}, {"valueInteger": 3}
            ]}]
        }),
    );
    assert_clean(&qr);
    assert_eq!(qr["item"][0]["answer"], json!([{"valueInteger": 3}]));

    let comm = run(
        &engine("safe-harbor"),
        json!({"resourceType": "Communication", "id": "m1", "status": "completed",
               "payload": [{"contentString": "Call Ratched at 555-0199"}]}),
    );
    assert_clean(&comm);
}

#[test]
fn urls_host_names_and_addresses_do_not_survive() {
    let out = run(
        &engine("safe-harbor"),
        json!({
            "resourceType": "Device", "id": "d1", "status": "active",
            "url": "http://10.20.30.40/pump/jsmith",
            "patient": {"reference": "https://ehr.stmarys.example/fhir/Patient/p1"},
            "owner": {"reference": "https://ehr.stmarys.example/fhir/Organization?name=Springfield+General"},
            "identifier": [{"system": "https://ehr.stmarys.example/devices", "value": "jsmith-pump"}]
        }),
    );
    assert_clean(&out);
    assert_eq!(
        out["patient"]["reference"],
        format!("Patient/{}", pseudonym::pseudo_id(&key(), "Patient", "p1"))
    );
    assert!(out["identifier"][0].get("system").is_none(), "{out}");
}

#[test]
fn every_form_of_a_patient_reference_gets_the_same_date_shift() {
    let engine = engine("safe-harbor");
    let date = |reference: &str| {
        let out = run(
            &engine,
            json!({"resourceType": "Observation", "id": "o1", "status": "final",
                   "subject": {"reference": reference}, "effectiveDateTime": "2020-06-15"}),
        );
        out["effectiveDateTime"].as_str().unwrap().to_string()
    };
    let plain = date("Patient/p1");
    assert_ne!(plain, "2020-06-15");
    for r in [
        "Patient/p1/_history/3",
        "https://ehr.stmarys.example/fhir/Patient/p1",
        "https://ehr.stmarys.example/fhir/Patient/p1/_history/3",
    ] {
        assert_eq!(date(r), plain, "{r}");
    }
}

#[test]
fn ages_over_89_become_90_years_in_their_own_unit() {
    let out = run(
        &engine("safe-harbor"),
        json!({
            "resourceType": "FamilyMemberHistory", "id": "f1", "status": "completed",
            "patient": {"reference": "Patient/p1"},
            "ageAge": {"value": 1200, "unit": "months", "system": "http://unitsofmeasure.org", "code": "mo"},
            "condition": [
                {"code": {"coding": [{"system": "http://snomed.info/sct", "code": "44054006"}]},
                 "onsetAge": {"value": 40, "unit": "a", "system": "http://unitsofmeasure.org", "code": "a"}},
                {"code": {"coding": [{"system": "http://snomed.info/sct", "code": "44054006"}]},
                 "onsetAge": {"value": 36000, "unit": "d", "system": "http://unitsofmeasure.org", "code": "d"}},
                {"code": {"coding": [{"system": "http://snomed.info/sct", "code": "44054006"}]},
                 "onsetAge": {"value": 95, "unit": "Ratched units"}}
            ]
        }),
    );
    assert_clean(&out);
    assert_eq!(out["ageAge"]["value"], 1080);
    assert_eq!(out["ageAge"]["code"], "mo");
    assert_eq!(out["condition"][0]["onsetAge"]["value"], 40);
    assert_eq!(out["condition"][1]["onsetAge"]["value"], 32873);
    // A number in a unit that is not a time unit cannot be read as an age: removed over 89.
    assert!(out["condition"][2].get("onsetAge").is_none(), "{out}");
}

#[test]
fn dates_more_than_89_years_ago_are_removed() {
    let out = run(
        &engine("safe-harbor"),
        json!({"resourceType": "Condition", "id": "c1", "subject": {"reference": "Patient/p1"},
               "onsetDateTime": "1931-05-01", "recordedDate": "2020-01-01"}),
    );
    assert!(out.get("onsetDateTime").is_none(), "{out}");
    assert!(out["recordedDate"].is_string());
    // The limited data set keeps dates.
    let lds = run(
        &engine("limited-data-set"),
        json!({"resourceType": "Condition", "id": "c1", "subject": {"reference": "Patient/p1"},
               "onsetDateTime": "1931-05-01"}),
    );
    assert_eq!(lds["onsetDateTime"], "1931-05-01");
}

#[test]
fn malformed_values_fail_closed() {
    let engine = engine("safe-harbor");
    let out = run(
        &engine,
        json!({
            "resourceType": "Patient", "id": "p1", "gender": "male",
            "birthDate": {"value": "1970-01-01", "name": "Ratched"},
            "deceasedDateTime": 19700101,
            "active": "Ratched",
            "multipleBirthInteger": [[3]],
            "maritalStatus": "Nurse Ratched",
            "communication": [{"language": {"coding": [{"code": ["en", "jsmith"]}]}}]
        }),
    );
    assert_clean(&out);
    assert_eq!(
        out,
        json!({"resourceType": "Patient", "id": pseudonym::pseudo_id(&key(), "Patient", "p1"), "gender": "male"})
    );
    assert!(engine.stats().malformed >= 5, "{:?}", engine.stats());
}

#[test]
fn limited_data_set_is_default_deny_too() {
    let out = run(
        &engine("limited-data-set"),
        json!({
            "resourceType": "Patient", "id": "p1", "birthDate": "1970-03-04",
            "address": [{"line": ["1 Main St"], "city": "Boston", "state": "MA", "postalCode": "02118",
                         "_city": {"extension": [{"url": "http://example.org/x", "valueString": "Ratched"}]}}],
            "maritalStatus": {"text": "Springfield General"},
            "contact": [{"relationship": [{"text": "jsmith's neighbour"}], "gender": "female"}]
        }),
    );
    assert_clean(&out);
    assert_eq!(out["birthDate"], "1970-03-04");
    assert_eq!(out["address"][0]["city"], "Boston");
    assert_eq!(out["address"][0]["postalCode"], "02118");
    assert!(out["address"][0].get("line").is_none());
    assert_eq!(out["contact"][0], json!({"gender": "female"}));
}

#[test]
fn conditional_patient_references_resolve_through_the_index() {
    use fhirlake_deid::compartment::{self, PatientIndex};
    use std::collections::HashMap;
    use std::sync::Arc;

    #[derive(Debug)]
    struct Index(HashMap<String, String>);
    impl PatientIndex for Index {
        fn patient_by_identifier(&self, key: &str) -> Option<String> {
            self.0.get(key).cloned()
        }
    }
    let patient = json!({"resourceType": "Patient", "id": "p1",
        "identifier": [{"system": "https://ehr.stmarys.example/mrn", "value": "MRN-jsmith"}]});
    let lake_id = pseudonym::pseudo_id(&key(), "Patient", "p1");
    let index = Index(
        compartment::identifier_keys(&key(), &patient)
            .into_iter()
            .map(|k| (k, lake_id.clone()))
            .collect(),
    );
    let engine = engine("safe-harbor").with_patient_index(Arc::new(index));
    let date = |reference: &str| {
        let out = run(
            &engine,
            json!({"resourceType": "Observation", "id": "o1", "status": "final",
                   "subject": {"reference": reference}, "effectiveDateTime": "2020-06-15"}),
        );
        assert_clean(&out);
        out["effectiveDateTime"].as_str().unwrap().to_string()
    };
    let plain = date("Patient/p1");
    for r in [
        "Patient?identifier=https://ehr.stmarys.example/mrn|MRN-jsmith",
        "Patient?identifier=https%3A%2F%2Fehr.stmarys.example%2Fmrn%7CMRN-jsmith",
        "Patient?identifier=MRN-jsmith",
    ] {
        assert_eq!(date(r), plain, "{r}");
        // And the reference is resolved: a literal one to the patient's lake id.
        let out = run(
            &engine,
            json!({"resourceType": "Observation", "id": "o1", "status": "final",
                   "subject": {"reference": r}}),
        );
        assert_eq!(
            out["subject"]["reference"],
            format!("Patient/{lake_id}"),
            "{r}"
        );
    }
    // Not in the index: a shift of its own (never the real date).
    assert_ne!(date("Patient?identifier=MRN-other"), "2020-06-15");
}

#[test]
fn a_stewards_vocabulary_file_keeps_the_displays_of_its_codes() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("lab.tsv"),
        "code\thttps://terminology.stmarys.example/lab\tK1\tPotassium\tK+\nunit\tmEq/L\n",
    )
    .unwrap();
    let mut policy = Policy::builtin("safe-harbor").unwrap();
    let text = fhirlake_deid::policy::builtin_text("safe-harbor")
        .unwrap()
        .replace(
            "dates_over_89 = \"redact\"",
            "dates_over_89 = \"redact\"\nvocabulary = [\"lab.tsv\"]",
        );
    std::fs::write(dir.path().join("p.toml"), &text).unwrap();
    let loaded = Policy::load(dir.path().join("p.toml").to_str().unwrap()).unwrap();
    assert_ne!(
        loaded.hash, policy.hash,
        "the vocabulary is part of the policy"
    );
    policy = loaded;
    let engine = PolicyEngine::new(policy, key());
    let out = run(
        &engine,
        json!({"resourceType": "Observation", "id": "o1", "status": "final",
               "code": {"coding": [{"system": "https://terminology.stmarys.example/lab", "code": "K1", "display": "K+"}],
                        "text": "K for Nurse Ratched"},
               "valueQuantity": {"value": 4.1, "unit": "mEq/L"}}),
    );
    assert_clean(&out);
    assert_eq!(
        out["code"],
        json!({"coding": [{"system": "https://terminology.stmarys.example/lab", "code": "K1", "display": "K+"}],
               "text": "Potassium"})
    );
    assert_eq!(out["valueQuantity"]["unit"], "mEq/L");
    // A missing file is an error that names the policy line.
    std::fs::remove_file(dir.path().join("lab.tsv")).unwrap();
    let e = Policy::load(dir.path().join("p.toml").to_str().unwrap()).unwrap_err();
    assert!(e.line > 0 && e.message.contains("vocabulary"), "{e}");
}
