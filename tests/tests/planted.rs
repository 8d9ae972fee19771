//! Issue 16's acceptance test, end to end: a corpus built from the shared Synthea export
//! (`sample-bulk-fhir-10-patients`) plus hand-written resources, with a unique token planted in
//! every place the issue lists (primitive extensions, sub-extensions of the US Core race /
//! ethnicity / birth-sex extensions, `meta`, `implicitRules`, `contained`, Bundles stored as a
//! type and Bundles inside Bundles, free text, URLs, host names and IP addresses, absolute and
//! versioned patient references, ages and dates over 89, malformed dates, a source file named
//! after a patient), ingested with the default policy (safe-harbor). Then:
//!
//! 1. no file of the lake (raw tables, views, `lake.runs`, Delta logs and checkpoints, every other
//!    file; Parquet values decoded) and no message of the run holds any planted text;
//! 2. no date shift can be recovered: row columns equal the de-identified resource, no resource
//!    keeps one of its own original dates, a patient's resources share one shift (versioned
//!    references included), nothing dated 90+ years back survives, ages over 89 are capped;
//! 3. the coverage report (`fhirlake deid policy show --coverage safe-harbor --format json`)
//!    names the element path of every value the lake keeps, as kept, changed or added by the
//!    engine (the 90+ age band).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use arrow::array::{Array, ArrayRef, AsArray};
use arrow::datatypes::DataType;
use chrono::NaiveDate;
use fhirlake_tests::*;
use serde_json::{Value, json};

const SYNTHEA: &str = "sample-bulk-fhir-10-patients";

/// A Bundle file named after its patient, as Synthea names them (the two name parts are planted).
const BUNDLE_FILE: &str = "Zebediah123_Quaxleyplant456_6f1e2d3c-1a2b-4c3d-8e9f-0a1b2c3d4e5f.json";
/// The patient of that Bundle file.
const BUNDLE_PATIENT: &str = "6f1e2d3c-1a2b-4c3d-8e9f-0a1b2c3d4e5f";

/// Identifying text in realistic shapes, planted beside the `PLANT-<n>-<kind>` tokens.
const SHAPES: [&str; 10] = [
    "Zebediah123",
    "Quaxleyplant456",
    "Marigoldine Thistlewaite",
    "555-301-7749",
    "zeb.quaxley@plantmail.example",
    "10.20.30.40",
    "ehr.planthost.example",
    "https://portal.planturl.example/chart/88123",
    // Malformed dates planted as numbers: they must not be kept either.
    "19190317",
    "19870605",
];

const UCUM: &str = "http://unitsofmeasure.org";
const RACE: &str = "http://hl7.org/fhir/us/core/StructureDefinition/us-core-race";
const ETHNICITY: &str = "http://hl7.org/fhir/us/core/StructureDefinition/us-core-ethnicity";
const BIRTH_SEX: &str = "http://hl7.org/fhir/us/core/StructureDefinition/us-core-birthsex";
const OMB: &str = "urn:oid:2.16.840.1.113883.6.238";

/// Hands out the planted tokens: `PLANT-<n>-<kind>`, each distinct (`n` is never reused).
#[derive(Default)]
struct Plants {
    tokens: Vec<String>,
}

impl Plants {
    fn token(&mut self, kind: &str) -> String {
        let token = format!("PLANT-{}-{kind}", self.tokens.len());
        self.tokens.push(token.clone());
        token
    }

    /// A primitive extension (`_x`) holding a planted `valueString` and element id.
    fn primitive_extension(&mut self, kind: &str) -> Value {
        json!({
            "id": self.token(&format!("{kind}-id")),
            "extension": [{"url": "http://example.org/fhir/StructureDefinition/note",
                           "valueString": self.token(kind)}]
        })
    }
}

/// One input resource with where it is found in the lake.
struct Original {
    resource_type: String,
    id: String,
    /// The original patient id of its compartment (the Patient's own id for a Patient).
    patient: Option<String>,
    resource: Value,
}

/// The patient id of a reference in any of the forms the compartment rule reads.
fn patient_of_reference(reference: &str) -> Option<String> {
    if let Some(uuid) = reference.strip_prefix("urn:uuid:") {
        return (uuid == BUNDLE_PATIENT).then(|| uuid.to_string());
    }
    let mut parts = reference.split('/');
    while let Some(part) = parts.next() {
        if part == "Patient" {
            return parts.next().map(String::from);
        }
    }
    None
}

fn compartment_patient(resource: &Value) -> Option<String> {
    if resource["resourceType"] == "Patient" {
        return resource["id"].as_str().map(String::from);
    }
    ["subject", "patient", "beneficiary"]
        .iter()
        .find_map(|k| resource[*k]["reference"].as_str())
        .and_then(patient_of_reference)
}

/// The unique `meta.lastUpdated` of the `i`-th resource (UTC, so the row column's instant is the
/// same text).
fn last_updated(i: usize) -> String {
    let base = chrono::DateTime::parse_from_rfc3339("2022-01-01T00:00:00Z")
        .unwrap()
        .to_utc();
    let at = base
        + chrono::Duration::days((i % 300) as i64)
        + chrono::Duration::seconds(((i * 37) % 86_400) as i64)
        + chrono::Duration::milliseconds(123);
    at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// What every resource gets: `meta.source` (a URL with a host), tag and security displays,
/// `implicitRules`, an `_id` extension, a unique `meta.lastUpdated`.
fn plant_common(resource: &mut Value, plants: &mut Plants, i: usize) {
    let host = plants.token("source-host");
    resource["meta"] = json!({
        "lastUpdated": last_updated(i),
        "source": format!("https://{host}.example/fhir#{}", plants.token("source-frag")),
        "tag": [{"system": "http://example.org/fhir/tags", "code": "imported",
                 "display": plants.token("tag-display")}],
        "security": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ActReason",
                      "code": "HTEST", "display": plants.token("security-display")}]
    });
    resource["implicitRules"] = json!(format!("https://{}.example/rules", plants.token("rules")));
    resource["_id"] = plants.primitive_extension("underscore-id");
}

/// The Patient plantings: primitive extensions, race / ethnicity / birth-sex sub-extensions,
/// contained resources and `#` references, free text, telecom, a malformed or 90+ birth date.
fn plant_patient(patient: &mut Value, plants: &mut Plants, n: usize) {
    patient["_birthDate"] = plants.primitive_extension("birthdate-ext");
    patient["_gender"] = plants.primitive_extension("gender-ext");
    for address in patient["address"].as_array_mut().into_iter().flatten() {
        address["_state"] = plants.primitive_extension("state-ext");
        address["_city"] = plants.primitive_extension("city-ext");
        address["_postalCode"] = plants.primitive_extension("zip-ext");
    }
    if let Some(name) = patient["name"][0].as_object_mut() {
        name.insert("_family".into(), plants.primitive_extension("family-ext"));
        name.insert("text".into(), json!(SHAPES[2]));
    }
    for extension in patient["extension"].as_array_mut().into_iter().flatten() {
        let url = extension["url"].as_str().unwrap_or_default().to_string();
        if url == RACE || url == ETHNICITY {
            let subs = extension["extension"].as_array_mut().unwrap();
            subs.extend([
                json!({"url": "ombCategory", "valueCoding": {"system": OMB, "code": "2106-3",
                       "display": plants.token("race-display-known-code")}}),
                json!({"url": "detailed", "valueCoding": {"system": OMB, "code": "9999-9",
                       "display": plants.token("race-display-unknown-code")}}),
                json!({"url": "text", "valueString": plants.token("race-text")}),
                json!({"url": "ombCategory", "valueString": plants.token("race-valuestring")}),
                json!({"url": "detailed", "valueHumanName": {"family": plants.token("race-family"),
                       "given": [SHAPES[0]]}}),
                json!({"url": "detailed", "valueAddress": {"line": [plants.token("race-line")],
                       "city": plants.token("race-city"), "postalCode": "02139"}}),
                json!({"url": "detailed", "valueContactPoint": {"system": "phone",
                       "value": SHAPES[3]}}),
                json!({"url": "detailed", "valueDateTime": "1931-02-03"}),
                json!({"url": "detailed", "extension": [{"url": "note",
                       "valueString": plants.token("race-sub-sub")}]}),
                json!({"url": plants.token("race-url"), "valueString": plants.token("race-odd-url")}),
            ]);
            extension["_url"] = plants.primitive_extension("race-url-ext");
        } else if url == BIRTH_SEX {
            extension["_valueCode"] = plants.primitive_extension("birthsex-ext");
            extension["extension"] =
                json!([{"url": "note", "valueString": plants.token("birthsex-sub")}]);
        }
    }
    let contained_id = plants.token("contained-id");
    patient["contained"] = json!([{
        "resourceType": "Organization", "id": contained_id,
        "alias": [plants.token("contained-alias")],
        "telecom": [{"system": "email", "value": SHAPES[4]}]
    }]);
    // An organization contained in a Patient can be its employer: its name must not survive
    // (safe-harbor kept `Organization.name` until this test found it inside `contained`).
    patient["contained"][0]["name"] = json!(plants.token("contained-name"));
    patient["managingOrganization"] =
        json!({"reference": format!("#{contained_id}"), "display": plants.token("org-display")});
    for communication in patient["communication"]
        .as_array_mut()
        .into_iter()
        .flatten()
    {
        communication["language"]["text"] = json!(plants.token("language-text"));
        communication["language"]["coding"][0]["display"] =
            json!(plants.token("language-display-known-code"));
    }
    patient["maritalStatus"]["text"] = json!(plants.token("marital-text"));
    patient["maritalStatus"]["coding"][0]["display"] =
        json!(plants.token("marital-display-known-code"));
    patient["contact"] = json!([{
        "relationship": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0131",
                                      "code": "N"}],
                          "text": plants.token("contact-relationship-text")}],
        "name": {"family": plants.token("contact-family"), "given": [SHAPES[2]]},
        "telecom": [{"system": "email", "value": SHAPES[4]}, {"system": "url", "value": SHAPES[7]}]
    }]);
    let telecom = patient["telecom"].as_array_mut().unwrap();
    telecom.push(json!({"system": "phone", "value": SHAPES[3]}));
    telecom.push(json!({"system": "other", "value": SHAPES[5]}));
    patient["text"]["div"] = json!(format!(
        "<div xmlns=\"http://www.w3.org/1999/xhtml\">{}</div>",
        plants.token("narrative")
    ));
    match n {
        // Malformed birth dates: a number and an object.
        0 => patient["birthDate"] = json!(19190317),
        1 => patient["birthDate"] = json!({"year": 1919, "note": plants.token("birthdate-object")}),
        // A person over 89.
        2 => patient["birthDate"] = json!("1921-06-07"),
        _ => {}
    }
}

/// Condition plantings by position: ages over 89 in years, months, weeks and days; unknown and
/// known codes with typed displays; versioned and absolute patient references; an onset more than
/// 89 years ago; malformed dates.
fn plant_condition(condition: &mut Value, plants: &mut Plants, n: usize) {
    let patient = patient_of_reference(condition["subject"]["reference"].as_str().unwrap())
        .expect("Synthea conditions have a subject");
    let object = condition.as_object_mut().unwrap();
    let onset_age = |value: f64, code: &str| json!({"value": value, "unit": code, "system": UCUM, "code": code});
    match n {
        0 => {
            object.remove("onsetDateTime");
            object.insert("onsetAge".into(), onset_age(95.0, "a"));
            object.insert(
                "note".into(),
                json!([{"text": plants.token("annotation"), "authorString": SHAPES[2]}]),
            );
        }
        1 => {
            object.remove("onsetDateTime");
            object.insert("onsetAge".into(), onset_age(1150.0, "mo"));
        }
        2 => {
            object.remove("onsetDateTime");
            object.insert("onsetAge".into(), onset_age(35000.0, "d"));
        }
        3 => {
            object.remove("abatementDateTime");
            object.insert("abatementAge".into(), onset_age(5000.0, "wk"));
        }
        4 => {
            object.insert(
                "subject".into(),
                json!({"reference": format!("Patient/{patient}/_history/3")}),
            );
        }
        5 => {
            object.insert(
                "subject".into(),
                json!({"reference": format!("https://{}.example/fhir/Patient/{patient}",
                                            plants.token("absolute-ref-host"))}),
            );
        }
        6 => {
            object.insert("onsetDateTime".into(), json!("1925-04-05T10:00:00Z"));
        }
        7 => {
            object.insert("recordedDate".into(), json!(19870605));
        }
        8 => {
            object.insert(
                "onsetDateTime".into(),
                json!({"value": "2010-01-01", "note": plants.token("date-object")}),
            );
        }
        _ => {}
    }
    if n < 12 {
        let code = &mut object["code"];
        code["text"] = json!(plants.token("code-text"));
        code["coding"][0]["display"] = json!(plants.token("display-known-code"));
        code["coding"][0]["_display"] = plants.primitive_extension("display-ext");
        code["coding"].as_array_mut().unwrap().push(json!({
            "system": "http://snomed.info/sct", "code": "999999999",
            "display": plants.token("display-unknown-code")
        }));
    }
}

/// Plantings in the other Synthea types (the first few resources of each).
fn plant_other(resource: &mut Value, plants: &mut Plants, n: usize) {
    if n >= 4 {
        return;
    }
    let ty = resource["resourceType"].as_str().unwrap().to_string();
    let note =
        |plants: &mut Plants| json!([{"text": plants.token("note"), "authorString": SHAPES[2]}]);
    match ty.as_str() {
        "Encounter" => {
            resource["type"][0]["text"] = json!(plants.token("encounter-type-text"));
            resource["serviceProvider"]["display"] = json!(plants.token("provider-display"));
            resource["participant"][0]["individual"]["display"] = json!(SHAPES[2]);
            resource["reasonCode"] = json!([{"text": plants.token("reason-text")}]);
            resource["_status"] = plants.primitive_extension("status-ext");
        }
        "DocumentReference" => {
            resource["description"] = json!(plants.token("doc-description"));
            resource["content"][0]["attachment"]["url"] = json!(SHAPES[7]);
            resource["content"][0]["attachment"]["title"] = json!(plants.token("doc-title"));
        }
        "Device" => {
            resource["url"] = json!(match n {
                0 => format!("https://{}.example/devices/1", plants.token("device-host")),
                1 => format!("http://{}/devices/7", SHAPES[5]),
                _ => format!(
                    "https://{}/devices/{}",
                    SHAPES[6],
                    plants.token("device-path")
                ),
            });
            resource["note"] = note(plants);
        }
        "Procedure" => {
            resource["note"] = note(plants);
            resource["code"]["text"] = json!(plants.token("procedure-text"));
            resource["code"]["coding"][0]["_display"] = plants.primitive_extension("display-ext");
            resource["_status"] = plants.primitive_extension("status-ext");
        }
        "MedicationRequest" => {
            resource["note"] = note(plants);
            resource["dosageInstruction"] = json!([{"text": plants.token("dosage-text"),
                "patientInstruction": plants.token("patient-instruction")}]);
        }
        "AllergyIntolerance" => {
            let object = resource.as_object_mut().unwrap();
            object.remove("onsetDateTime");
            object.insert(
                "onsetAge".into(),
                json!({"value": 92, "unit": "a", "system": UCUM, "code": "a"}),
            );
            object.insert("note".into(), note(plants));
            object.insert(
                "reaction".into(),
                json!([{"description": plants.token("reaction-description"),
                        "manifestation": [{"text": plants.token("manifestation-text")}]}]),
            );
        }
        "Immunization" => {
            resource["note"] = note(plants);
            resource["lotNumber"] = json!(plants.token("lot"));
        }
        "Location" | "Organization" | "PractitionerRole" => {
            let telecom = json!([{"system": "phone", "value": SHAPES[3]},
                                 {"system": "email", "value": SHAPES[4]}]);
            resource["telecom"] = telecom;
            if ty == "Location" {
                resource["description"] = json!(plants.token("location-description"));
                resource["address"]["line"] = json!([plants.token("location-line")]);
            }
        }
        "Practitioner" => {
            resource["name"] = json!([{"family": plants.token("practitioner-family"),
                                       "given": [SHAPES[2]]}]);
        }
        _ => {}
    }
}

/// Hand-written resources of the patient `p0` and `p1`: QuestionnaireResponse answers,
/// Communication payloads, FamilyMemberHistory relationship text and age, an Observation with a
/// typed unit and a versioned subject, and Bundles of every type stored as resources (with
/// Bundles inside).
fn handwritten(plants: &mut Plants, p0: &str, p1: &str) -> Vec<Value> {
    let subject = |p: &str| json!({"reference": format!("Patient/{p}")});
    let patient_entry = |plants: &mut Plants, id: &str| {
        json!({"resourceType": "Patient", "id": id,
               "name": [{"family": plants.token("bundle-family"), "given": [SHAPES[0]]}],
               "telecom": [{"system": "phone", "value": SHAPES[3]}],
               "gender": "male", "birthDate": "1980-02-03",
               "_birthDate": plants.primitive_extension("bundle-birthdate-ext")})
    };
    let condition_entry = |plants: &mut Plants, id: &str, p: &str| {
        json!({"resourceType": "Condition", "id": id, "subject": subject(p),
               "code": {"coding": [{"system": "http://snomed.info/sct", "code": "44054006",
                                    "display": plants.token("bundle-display")}],
                        "text": plants.token("bundle-code-text")},
               "onsetDateTime": "2011-04-05T06:07:08Z",
               "note": [{"text": plants.token("bundle-note")}]})
    };
    let url = |plants: &mut Plants, kind: &str, tail: &str| {
        format!("https://{}.example/fhir/{tail}", plants.token(kind))
    };
    let searchset = json!({
        "resourceType": "Bundle", "id": plants.token("nested-bundle-id"), "type": "searchset",
        "link": [{"relation": "self", "url": url(plants, "nested-link", "Condition?patient=x")}],
        "entry": [{"fullUrl": url(plants, "nested-fullurl", "Condition/nested-c1"),
                   "resource": condition_entry(plants, "nested-c1", p0),
                   "search": {"mode": "match", "score": 1}}]
    });
    vec![
        json!({"resourceType": "QuestionnaireResponse", "id": "planted-qr-1", "status": "completed",
               "subject": subject(p0), "authored": "2020-03-04T05:06:07Z",
               "item": [{"linkId": "1", "text": plants.token("qr-item-text"),
                         "answer": [{"valueString": plants.token("qr-valuestring")},
                                    {"valueUri": url(plants, "qr-valueuri", "a")},
                                    {"valueString": format!("call me at {}", SHAPES[3])}],
                         "item": [{"linkId": "1.1",
                                   "answer": [{"valueString": plants.token("qr-nested")}]}]}]}),
        json!({"resourceType": "Communication", "id": "planted-comm-1", "status": "completed",
               "subject": subject(p0), "sent": "2020-05-06T07:08:09Z",
               "payload": [{"contentString": plants.token("payload")},
                           {"contentString": format!("write to {}", SHAPES[4])}],
               "note": [{"text": plants.token("comm-note")}]}),
        json!({"resourceType": "FamilyMemberHistory", "id": "planted-fmh-1", "status": "completed",
               "patient": subject(p1), "date": "2019-08-09",
               "relationship": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-RoleCode",
                                            "code": "FTH"}],
                                "text": plants.token("fmh-relationship-text")},
               "name": SHAPES[2],
               "ageAge": {"value": 97, "unit": "a", "system": UCUM, "code": "a"}}),
        json!({"resourceType": "Observation", "id": "planted-obs-1", "status": "final",
               "subject": {"reference": format!("Patient/{p1}/_history/7")},
               "code": {"coding": [{"system": "http://loinc.org", "code": "8302-2"}],
                        "text": plants.token("obs-code-text")},
               "effectiveDateTime": "2018-07-06T05:04:03Z",
               "valueQuantity": {"value": 180, "unit": plants.token("obs-unit"),
                                 "system": UCUM, "code": "cm"},
               "note": [{"text": plants.token("obs-note")}]}),
        json!({"resourceType": "Bundle", "id": "planted-collection", "type": "collection",
               "identifier": {"system": "urn:ietf:rfc:3986", "value": plants.token("bundle-identifier")},
               "link": [{"relation": "self", "url": url(plants, "link", "Bundle/1")}],
               "entry": [{"fullUrl": url(plants, "fullurl", &format!("Patient/{p0}")),
                          "resource": patient_entry(plants, p0)},
                         {"fullUrl": "urn:uuid:3e0b8f4a-0000-4000-8000-000000000001",
                          "resource": searchset}]}),
        json!({"resourceType": "Bundle", "id": "planted-transaction", "type": "transaction",
               "entry": [{"fullUrl": "urn:uuid:3e0b8f4a-0000-4000-8000-000000000002",
                          "resource": condition_entry(plants, "tx-c1", p1),
                          "request": {"method": "PUT",
                                      "url": format!("Condition?identifier={}", plants.token("request-query"))}},
                         {"request": {"method": "POST",
                                      "url": url(plants, "request-url", "Patient"),
                                      "ifNoneExist": format!("name={}", plants.token("if-none-exist"))}}]}),
        json!({"resourceType": "Bundle", "id": "planted-history", "type": "history",
               "entry": [{"fullUrl": url(plants, "history-fullurl", &format!("Patient/{p1}")),
                          "resource": patient_entry(plants, p1),
                          "request": {"method": "PUT", "url": format!("Patient/{p1}")},
                          "response": {"status": "200 OK",
                                       "location": url(plants, "location", &format!("Patient/{p1}/_history/2")),
                                       "etag": format!("W/\"{}\"", plants.token("etag"))}}]}),
    ]
}

/// The Bundle file named after its patient: a new patient, a condition by `urn:uuid:`, and a
/// Bundle entry holding another Bundle (stored as a resource of type Bundle).
fn bundle_file(plants: &mut Plants) -> Value {
    let patient_url = format!("urn:uuid:{BUNDLE_PATIENT}");
    json!({
        "resourceType": "Bundle", "type": "transaction",
        "entry": [
            {"fullUrl": patient_url,
             "resource": {"resourceType": "Patient", "id": BUNDLE_PATIENT,
                          "meta": {"lastUpdated": "2023-03-03T03:03:03.333Z",
                                   "source": format!("https://{}/fhir", SHAPES[6])},
                          "name": [{"family": SHAPES[1], "given": [SHAPES[0]]}],
                          "gender": "male", "birthDate": "1975-09-10",
                          "_birthDate": plants.primitive_extension("file-birthdate-ext")},
             "request": {"method": "POST", "url": "Patient"}},
            {"fullUrl": "urn:uuid:7a0c1d2e-0000-4000-8000-00000000c001",
             "resource": {"resourceType": "Condition", "id": "7a0c1d2e-0000-4000-8000-00000000c001",
                          "subject": {"reference": patient_url},
                          "code": {"coding": [{"system": "http://snomed.info/sct", "code": "44054006"}],
                                   "text": plants.token("file-code-text")},
                          "onsetDateTime": "2012-05-06T07:08:09Z",
                          "recordedDate": "2012-05-07"},
             "request": {"method": "POST", "url": "Condition"}},
            {"fullUrl": "urn:uuid:7a0c1d2e-0000-4000-8000-00000000b001",
             "resource": {"resourceType": "Bundle", "id": "7a0c1d2e-0000-4000-8000-00000000b001",
                          "type": "collection",
                          "link": [{"relation": "self",
                                    "url": format!("https://{}.example/b", plants.token("file-nested-link"))}],
                          "entry": [{"fullUrl": format!("https://{}.example/fhir/Observation/o1",
                                                        plants.token("file-nested-fullurl")),
                                     "resource": {"resourceType": "Observation", "id": "o1",
                                                  "status": "final",
                                                  "subject": {"reference": format!("Patient/{BUNDLE_PATIENT}")},
                                                  "code": {"coding": [{"system": "http://loinc.org", "code": "8302-2"}]},
                                                  "effectiveDateTime": "2012-05-06",
                                                  "valueString": plants.token("file-nested-value")}}]},
             "request": {"method": "POST", "url": "Bundle"}}
        ]
    })
}

/// Decompressed lines of a file of the shared Synthea export.
fn synthea_lines(path: &Path) -> Vec<String> {
    use std::io::BufRead;
    let file = std::fs::File::open(path).expect("a Synthea file");
    std::io::BufReader::new(flate2::read::MultiGzDecoder::new(file))
        .lines()
        .map(|l| l.expect("a line"))
        .collect()
}

struct Corpus {
    sources: PathBuf,
    tokens: Vec<String>,
    originals: Vec<Original>,
}

/// Writes the planted corpus into `<dir>/export/` and returns it with every token planted;
fn build_corpus(dir: &Path) -> Corpus {
    let sources = dir.join("export");
    std::fs::create_dir_all(&sources).unwrap();
    let mut plants = Plants::default();
    let mut originals = Vec::new();
    let record = |resource: &Value, originals: &mut Vec<Original>| {
        originals.push(Original {
            resource_type: resource["resourceType"].as_str().unwrap().to_string(),
            id: resource["id"].as_str().unwrap().to_string(),
            patient: compartment_patient(resource),
            resource: resource.clone(),
        });
    };
    let mut files: Vec<PathBuf> = std::fs::read_dir(shared_synthea(SYNTHEA))
        .expect("the shared Synthea export")
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().ends_with(".ndjson.gz"))
        .collect();
    files.sort();
    let mut patients = Vec::new();
    let mut counter = 0;
    for path in &files {
        let mut out = String::new();
        for (n, line) in synthea_lines(path).iter().enumerate() {
            let mut resource: Value = serde_json::from_str(line).unwrap();
            plant_common(&mut resource, &mut plants, counter);
            counter += 1;
            match resource["resourceType"].as_str().unwrap() {
                "Patient" => {
                    patients.push(resource["id"].as_str().unwrap().to_string());
                    plant_patient(&mut resource, &mut plants, n);
                }
                "Condition" => plant_condition(&mut resource, &mut plants, n),
                _ => plant_other(&mut resource, &mut plants, n),
            }
            record(&resource, &mut originals);
            out.push_str(&resource.to_string());
            out.push('\n');
        }
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        write_gz(&sources.join(name), out.as_bytes());
    }
    // p0 and p1: patients with a well-formed birth date under 90 (n >= 3).
    let (p0, p1) = (patients[3].clone(), patients[4].clone());
    let mut out = String::new();
    for mut resource in handwritten(&mut plants, &p0, &p1) {
        plant_common(&mut resource, &mut plants, counter);
        counter += 1;
        record(&resource, &mut originals);
        out.push_str(&resource.to_string());
        out.push('\n');
    }
    std::fs::write(sources.join("handwritten.ndjson"), out).unwrap();
    let bundle = bundle_file(&mut plants);
    for entry in bundle["entry"].as_array().unwrap() {
        record(&entry["resource"], &mut originals);
    }
    std::fs::write(
        sources.join(BUNDLE_FILE),
        serde_json::to_string_pretty(&bundle).unwrap(),
    )
    .unwrap();
    let mut tokens = plants.tokens;
    tokens.extend(SHAPES.iter().map(|s| s.to_string()));
    Corpus {
        sources,
        tokens,
        originals,
    }
}

/// The corpus ingested with the default policy into `<dir>/L` (landing zone `<dir>/landing`,
/// outside the lake, as by default); returns the corpus and the run's messages.
fn planted_lake(dir: &Path) -> (Corpus, String) {
    let corpus = build_corpus(dir);
    let output = run(keyed(dir).args([
        "ingest",
        "--lake",
        "L",
        "--landing",
        "landing",
        corpus.sources.to_str().unwrap(),
    ]));
    assert_code(&output, 0);
    let messages = format!("{}{}", text(&output.stdout), text(&output.stderr));
    (corpus, messages)
}

// ---------------------------------------------------------------------------------------------
// Scanning the lake

/// Every value of `array` as text (nested values included), appended to `out` one per line.
fn push_values(array: &ArrayRef, out: &mut String) {
    match array.data_type() {
        DataType::Utf8 => push_lines(array.as_string::<i32>().iter().flatten(), out),
        DataType::LargeUtf8 => push_lines(array.as_string::<i64>().iter().flatten(), out),
        DataType::Utf8View => push_lines(array.as_string_view().iter().flatten(), out),
        DataType::Binary => push_bytes(array.as_binary::<i32>().iter().flatten(), out),
        DataType::LargeBinary => push_bytes(array.as_binary::<i64>().iter().flatten(), out),
        DataType::BinaryView => push_bytes(array.as_binary_view().iter().flatten(), out),
        DataType::List(_) => push_values(array.as_list::<i32>().values(), out),
        DataType::LargeList(_) => push_values(array.as_list::<i64>().values(), out),
        DataType::Struct(_) => {
            for column in array.as_struct().columns() {
                push_values(column, out);
            }
        }
        DataType::Map(_, _) => {
            let map = array.as_map();
            push_values(map.keys(), out);
            push_values(map.values(), out);
        }
        _ => {
            for i in 0..array.len() {
                if array.is_valid(i) {
                    out.push_str(
                        &arrow::util::display::array_value_to_string(array, i).unwrap_or_default(),
                    );
                    out.push('\n');
                }
            }
        }
    }
}

fn push_lines<'a>(values: impl Iterator<Item = &'a str>, out: &mut String) {
    for value in values {
        out.push_str(value);
        out.push('\n');
    }
}

fn push_bytes<'a>(values: impl Iterator<Item = &'a [u8]>, out: &mut String) {
    for value in values {
        out.push_str(&String::from_utf8_lossy(value));
        out.push('\n');
    }
}

/// The text of a file: its bytes as they are and, for Parquet (data files, checkpoints), every
/// value of every column of every row group, decoded (pages are compressed).
fn file_text(path: &Path) -> String {
    let bytes = std::fs::read(path).unwrap();
    let mut text = String::from_utf8_lossy(&bytes).into_owned();
    if path.extension().is_some_and(|e| e == "parquet") {
        let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(
            bytes::Bytes::from(bytes),
        )
        .unwrap_or_else(|e| panic!("{}: not Parquet: {e}", path.display()))
        .build()
        .unwrap();
        for batch in reader {
            for column in batch.unwrap().columns() {
                text.push('\n');
                push_values(column, &mut text);
            }
        }
    }
    text
}

/// The planted text found in `text` (case-insensitively): every `plant-<digit>` occurrence (no
/// Synthea text has one) and every realistic shape.
fn planted_in(text: &str) -> Vec<String> {
    let lower = text.to_lowercase();
    let mut found = Vec::new();
    for (at, _) in lower.match_indices("plant-") {
        let rest = &lower[at..];
        if rest[6..].starts_with(|c: char| c.is_ascii_digit()) {
            let end = rest
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '-'))
                .unwrap_or(rest.len());
            found.push(rest[..end].to_string());
        }
    }
    for shape in SHAPES {
        if lower.contains(&shape.to_lowercase()) {
            found.push(shape.to_string());
        }
    }
    found.sort();
    found.dedup();
    found
}

/// Check 1: no planted text in any file of the lake, nor in the run's messages.
fn check_files(dir: &Path, corpus: &Corpus, messages: &str) -> Vec<String> {
    let mut failures = Vec::new();
    // The corpus really holds every token, and the scanner finds them there.
    let mut input = String::new();
    for path in files_under(&corpus.sources) {
        let bytes = std::fs::read(&path).unwrap();
        if path.to_string_lossy().ends_with(".gz") {
            use std::io::Read;
            flate2::read::MultiGzDecoder::new(&bytes[..])
                .read_to_string(&mut input)
                .unwrap();
        } else {
            input.push_str(&String::from_utf8_lossy(&bytes));
        }
        input.push_str(&path.to_string_lossy());
    }
    let in_input: BTreeSet<String> = planted_in(&input).into_iter().collect();
    for token in &corpus.tokens {
        assert!(
            in_input.contains(&token.to_lowercase()) || in_input.contains(token),
            "{token} is not in the corpus"
        );
    }
    assert!(corpus.tokens.len() > 40_000, "{}", corpus.tokens.len());

    // Every file of the lake. The landing zone (rejected lines, kept on purpose with their
    // original text: docs/deid.md "What else the lake holds") is `<dir>/landing`, outside the
    // lake, so nothing under the lake is excluded.
    let lake = dir.join("L");
    let mut folders = BTreeSet::new();
    for path in files_under(&lake) {
        let relative = path
            .strip_prefix(&lake)
            .unwrap()
            .to_string_lossy()
            .into_owned();
        folders.insert(relative.split('/').take(2).collect::<Vec<_>>().join("/"));
        let planted = planted_in(&file_text(&path));
        if !planted.is_empty() {
            failures.push(format!(
                "planted text in the lake file {relative}: {planted:?}"
            ));
        }
    }
    for expected in [
        "raw/patient",
        "raw/bundle",
        "raw/condition",
        "lake/runs",
        "views/patient",
    ] {
        assert!(
            folders.contains(expected),
            "no {expected} in the lake: {folders:?}"
        );
    }

    // The run's messages repeat no value either. File names may appear there (they are the
    // operator's terminal, docs/deid.md "Messages"), so the two name parts of the Bundle file's
    // name are not looked for.
    let planted: Vec<String> = planted_in(messages)
        .into_iter()
        .filter(|p| !BUNDLE_FILE.to_lowercase().contains(&p.to_lowercase()))
        .collect();
    if !planted.is_empty() {
        failures.push(format!("planted text in the run's messages: {planted:?}"));
    }
    failures
}

// ---------------------------------------------------------------------------------------------
// Dates

/// `raw.<snake_case type>`.
fn table_of(resource_type: &str) -> String {
    let mut table = String::from("raw.");
    for (i, c) in resource_type.chars().enumerate() {
        if c.is_ascii_uppercase() && i > 0 {
            table.push('_');
        }
        table.push(c.to_ascii_lowercase());
    }
    table
}

/// Every scalar leaf of `value` with its JSON path (`code.coding[0].display`, no root).
fn leaves<'a>(value: &'a Value, path: &str, out: &mut Vec<(String, &'a Value)>) {
    match value {
        Value::Object(map) => {
            for (key, child) in map {
                let path = if path.is_empty() {
                    key.clone()
                } else {
                    format!("{path}.{key}")
                };
                leaves(child, &path, out);
            }
        }
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                leaves(item, &format!("{path}[{i}]"), out);
            }
        }
        _ => out.push((path.to_string(), value)),
    }
}

/// The full date a text starts with (`2011-04-05`, `2011-04-05T06:07:08Z`).
fn leading_date(text: &str) -> Option<NaiveDate> {
    NaiveDate::parse_from_str(text.get(..10)?, "%Y-%m-%d").ok()
}

/// Every full date written anywhere in `text` (`YYYY-MM-DD` at a word start).
fn dates_in(text: &str) -> BTreeSet<NaiveDate> {
    let bytes = text.as_bytes();
    (0..bytes.len().saturating_sub(9))
        .filter(|&i| i == 0 || !bytes[i - 1].is_ascii_digit())
        .filter_map(|i| leading_date(text.get(i..)?))
        .collect()
}

/// An instant in microseconds, from a FHIR date / dateTime / instant or a SQL timestamp text.
fn micros(text: &str) -> Option<i64> {
    if let Ok(at) = chrono::DateTime::parse_from_rfc3339(text) {
        return Some(at.timestamp_micros());
    }
    for format in ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%d %H:%M:%S%.f"] {
        if let Ok(at) = chrono::NaiveDateTime::parse_from_str(text, format) {
            return Some(at.and_utc().timestamp_micros());
        }
    }
    let date = NaiveDate::parse_from_str(text, "%Y-%m-%d").ok()?;
    Some(date.and_hms_opt(0, 0, 0)?.and_utc().timestamp_micros())
}

/// An age in years, when `quantity` has a UCUM time code.
fn age_years(quantity: &Value) -> Option<f64> {
    let value = quantity["value"].as_f64()?;
    let per_year = match quantity["code"].as_str()? {
        "a" => 1.0,
        "mo" => 12.0,
        "wk" => 52.1775,
        "d" => 365.25,
        "h" => 8766.0,
        "min" => 525_960.0,
        _ => return None,
    };
    Some(value / per_year)
}

/// One raw table row, its resource parsed.
struct Row {
    table: String,
    columns: serde_json::Map<String, Value>,
    resource: Value,
}

/// Every row of every raw table, with `last_updated` also as microseconds.
fn raw_rows(cwd: &Path) -> BTreeMap<(String, String), Row> {
    let mut rows = BTreeMap::new();
    for (table, _) in raw_table_rows(cwd, "L") {
        let query =
            format!("SELECT *, CAST(last_updated AS BIGINT) AS last_updated_micros FROM {table}");
        for row in sql(cwd, "L", &query) {
            let Value::Object(columns) = row else {
                panic!("{table}: a row is not an object")
            };
            let resource: Value =
                serde_json::from_str(columns["resource"].as_str().expect("resource text"))
                    .expect("resource JSON");
            let id = columns["id"].as_str().expect("id").to_string();
            rows.insert(
                (table.clone(), id),
                Row {
                    table: table.clone(),
                    columns,
                    resource,
                },
            );
        }
    }
    rows
}

/// Check 2: no date shift can be recovered from any column or resource.
fn check_dates(corpus: &Corpus, rows: &BTreeMap<(String, String), Row>) -> Vec<String> {
    let mut failures = Vec::new();
    let key = fhirlake_deid::DeidKey::parse(KEY, "test").unwrap();
    let pseudo = |ty: &str, id: &str| fhirlake_deid::methods::pseudonym::pseudo_id(&key, ty, id);
    let today = chrono::Utc::now().date_naive();
    // More than 89 years back, less the largest shift (safe-harbor: 180 days) and a day.
    let cutoff = today - chrono::Months::new(90 * 12) - chrono::Duration::days(181);

    // Row columns hold what the de-identified resource holds.
    for row in rows.values() {
        let (table, resource) = (&row.table, &row.resource);
        let in_resource = resource["meta"]["lastUpdated"].as_str().and_then(micros);
        if row.columns["last_updated_micros"].as_i64() != in_resource {
            failures.push(format!(
                "{table}: last_updated is not the resource's meta.lastUpdated"
            ));
        }
        let mut resource_leaves = Vec::new();
        leaves(resource, "", &mut resource_leaves);
        let instants: BTreeSet<i64> = resource_leaves
            .iter()
            .filter_map(|(_, v)| v.as_str().and_then(micros))
            .collect();
        for (column, value) in &row.columns {
            if column == "resource" || column == "last_updated_micros" {
                continue;
            }
            let Some(text) = value.as_str().filter(|t| leading_date(t).is_some()) else {
                continue;
            };
            if !micros(text).is_some_and(|m| instants.contains(&m)) {
                failures.push(format!(
                    "{table}.{column}: a date that is not in the resource"
                ));
            }
        }
        // Nothing dated more than 89 years back, and no age over 90 years.
        for (path, value) in &resource_leaves {
            if let Some(date) = value.as_str().and_then(leading_date)
                && date < cutoff
            {
                failures.push(format!("{table}: {path} is dated more than 89 years back"));
            }
        }
        age_leaves(resource, "", &mut |path, years| {
            if years > 90.01 {
                failures.push(format!("{table}: {path} is an age over 90 years"));
            }
        });
    }

    // Per input resource: its row, its patient, its shift.
    let mut shifts_by_patient: BTreeMap<&str, BTreeMap<i64, Vec<String>>> = BTreeMap::new();
    for original in &corpus.originals {
        let ty = original.resource_type.as_str();
        let table = table_of(ty);
        let what = format!("{table} (input {ty} #{})", short(&original.id));
        let Some(row) = rows.get(&(table.clone(), pseudo(ty, &original.id))) else {
            failures.push(format!("{what}: not in the lake"));
            continue;
        };
        if let Some(patient) = &original.patient
            && row.columns["patient_id"].as_str() != Some(pseudo("Patient", patient).as_str())
        {
            failures.push(format!("{what}: patient_id is not its patient's pseudonym"));
        }
        let mut before = Vec::new();
        leaves(&original.resource, "", &mut before);
        let mut after = Vec::new();
        leaves(&row.resource, "", &mut after);
        let after_dates: BTreeMap<&str, NaiveDate> = after
            .iter()
            .filter_map(|(p, v)| Some((p.as_str(), v.as_str().and_then(leading_date)?)))
            .collect();
        let mut shifts = BTreeSet::new();
        for (path, value) in &before {
            let Some(date) = value.as_str().and_then(leading_date) else {
                continue;
            };
            // Arrays of extensions shrink when entries are removed: positions there do not match.
            if path.contains("extension") {
                continue;
            }
            if let Some(shifted) = after_dates.get(path.as_str()) {
                let shift = (*shifted - date).num_days();
                if shift == 0 {
                    failures.push(format!("{what}: {path} is not shifted"));
                }
                shifts.insert(shift);
            }
        }
        // No original date anywhere in the de-identified text, unless it is another of the
        // resource's dates shifted onto it by chance.
        let original_dates = dates_in(&original.resource.to_string());
        let coincidences: BTreeSet<NaiveDate> = original_dates
            .iter()
            .flat_map(|d| shifts.iter().map(move |s| *d + chrono::Duration::days(*s)))
            .collect();
        for date in dates_in(&row.resource.to_string()) {
            if original_dates.contains(&date) && !coincidences.contains(&date) {
                failures.push(format!("{what}: holds its original date {date}"));
            }
        }
        // Ages: over 89 capped to 90 years in their own unit, others as they were.
        age_leaves(&original.resource, "", &mut |path, years| {
            let out = lookup(&row.resource, path);
            if out.is_null() {
                return;
            }
            if years > 90.0 {
                let capped = age_years(out).unwrap_or(f64::NAN);
                if !(89.99..=90.01).contains(&capped)
                    || out["code"] != lookup(&original.resource, path)["code"]
                {
                    failures.push(format!(
                        "{what}: {path} is not capped to 90 years in its unit"
                    ));
                }
            } else if out["value"] != lookup(&original.resource, path)["value"] {
                failures.push(format!("{what}: {path} (under 90 years) changed"));
            }
        });
        if let Some(patient) = &original.patient {
            for shift in shifts {
                shifts_by_patient
                    .entry(patient.as_str())
                    .or_default()
                    .entry(shift)
                    .or_default()
                    .push(what.clone());
            }
        }
    }
    // One shift per patient: versioned, absolute and urn:uuid references give the same patient.
    assert!(
        shifts_by_patient.len() >= 10,
        "shifts seen for {} patients only",
        shifts_by_patient.len()
    );
    for (patient, shifts) in &shifts_by_patient {
        if shifts.len() > 1 {
            let fewest = shifts.values().min_by_key(|w| w.len()).unwrap();
            failures.push(format!(
                "patient #{}: {} different date shifts; the rarest in {:?}",
                short(patient),
                shifts.len(),
                &fewest[..fewest.len().min(3)]
            ));
        }
    }
    failures
}

/// The first characters of a Synthea uuid: enough to find the resource, in messages of a test
/// over synthetic data.
fn short(id: &str) -> &str {
    &id[..id.len().min(8)]
}

/// The value at a JSON path of [`leaves`]' form.
fn lookup<'a>(value: &'a Value, path: &str) -> &'a Value {
    let mut at = value;
    for segment in path.split('.') {
        let (key, index) = match segment.find('[') {
            Some(i) => (
                &segment[..i],
                segment[i + 1..segment.len() - 1].parse::<usize>().ok(),
            ),
            None => (segment, None),
        };
        at = &at[key];
        if let Some(i) = index {
            at = &at[i];
        }
    }
    at
}

/// Calls `found` with the JSON path and years of every `…Age` quantity with a time code.
fn age_leaves(value: &Value, path: &str, found: &mut dyn FnMut(&str, f64)) {
    match value {
        Value::Object(map) => {
            for (key, child) in map {
                let path = if path.is_empty() {
                    key.clone()
                } else {
                    format!("{path}.{key}")
                };
                if key.ends_with("Age")
                    && let Some(years) = age_years(child)
                {
                    found(&path, years);
                }
                age_leaves(child, &path, found);
            }
        }
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                age_leaves(item, &format!("{path}[{i}]"), found);
            }
        }
        _ => {}
    }
}

// ---------------------------------------------------------------------------------------------
// Coverage

/// `(resource type, element path)` -> the `(outcome, method)` pairs of the coverage report.
type Coverage = BTreeMap<(String, String), BTreeSet<(String, String)>>;

fn coverage_report(cwd: &Path, types: &BTreeSet<String>) -> Coverage {
    let list = types.iter().cloned().collect::<Vec<_>>().join(",");
    let output = run(fhirlake(cwd).args([
        "deid",
        "policy",
        "show",
        "--coverage",
        "safe-harbor",
        "--type",
        &list,
        "--format",
        "json",
    ]));
    assert_code(&output, 0);
    let report: Value = serde_json::from_slice(&output.stdout).expect("a JSON report");
    assert_eq!(report["errors"], json!([]), "the report has errors");
    let mut coverage = Coverage::new();
    for row in report["rows"].as_array().unwrap() {
        let field = |k: &str| row[k].as_str().unwrap().to_string();
        coverage
            .entry((field("resource_type"), field("path")))
            .or_default()
            .insert((field("outcome"), field("method")));
    }
    coverage
}

/// Resource types of `resource` and of every resource nested in it.
fn nested_types(value: &Value, out: &mut BTreeSet<String>) {
    match value {
        Value::Object(map) => {
            if let Some(ty) = map.get("resourceType").and_then(Value::as_str) {
                out.insert(ty.to_string());
            }
            map.values().for_each(|v| nested_types(v, out));
        }
        Value::Array(items) => items.iter().for_each(|v| nested_types(v, out)),
        _ => {}
    }
}

/// How an element path of the lake is found in the coverage report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Covered {
    /// A `kept`, `changed` or `added` (the engine's 90+ age band) row of the path itself.
    Exactly,
    /// Only through the innermost nested resource's own type: the report generates one nested
    /// resource type per container (`Bundle.entry.resource.ofType(ActivityDefinition)`), so
    /// `Bundle.entry.resource.ofType(Patient).gender` is looked up as `Patient.gender` (docs/deid.md,
    /// Coverage report, says so).
    AsNestedType,
    /// Named, but only as `removed` (or `resource dropped`): the value the lake keeps has a fate
    /// the report does not show (it shows a token's and a plausible value's, e.g. a display that
    /// is the code's own).
    Listed,
    /// Not named at all.
    Missing,
}

fn covered_by(coverage: &Coverage, ty: &str, path: &str) -> Covered {
    let rows = |ty: &str, path: &str| coverage.get(&(ty.to_string(), path.to_string()));
    let keeps = |rows: Option<&BTreeSet<(String, String)>>| {
        rows.is_some_and(|r| {
            r.iter()
                .any(|(o, _)| o == "kept" || o == "changed" || o == "added")
        })
    };
    let listed = |rows: Option<&BTreeSet<(String, String)>>| rows.is_some_and(|r| !r.is_empty());
    if keeps(rows(ty, path)) {
        return Covered::Exactly;
    }
    let inner = path.rfind(".ofType(").map(|at| {
        let rest = &path[at + ".ofType(".len()..];
        let close = rest.find(')').unwrap();
        (
            &rest[..close],
            format!("{}{}", &rest[..close], &rest[close + 1..]),
        )
    });
    if let Some((inner_ty, inner_path)) = &inner
        && keeps(rows(inner_ty, inner_path))
    {
        return Covered::AsNestedType;
    }
    if listed(rows(ty, path)) || inner.as_ref().is_some_and(|(t, p)| listed(rows(t, p))) {
        return Covered::Listed;
    }
    Covered::Missing
}

/// Check 3: the coverage report names the element path of every value the lake keeps. Returns
/// the paths by how they are covered, with a count of values.
fn coverage_of_the_lake(
    cwd: &Path,
    rows: &BTreeMap<(String, String), Row>,
) -> BTreeMap<Covered, BTreeMap<String, usize>> {
    let mut types = BTreeSet::new();
    for row in rows.values() {
        nested_types(&row.resource, &mut types);
    }
    let coverage = coverage_report(cwd, &types);
    let policy = fhirlake_deid::Policy::builtin("safe-harbor").unwrap();
    let named_urls = fhirlake_deid::coverage::named_urls(&policy);
    let mut by_kind: BTreeMap<Covered, BTreeMap<String, usize>> = BTreeMap::new();
    for row in rows.values() {
        let ty = row.resource["resourceType"].as_str().unwrap();
        let mut found = Vec::new();
        leaves(&row.resource, "", &mut found);
        for (path, value) in found {
            if path == "resourceType" || path.ends_with(".resourceType") || !value.is_string() {
                continue;
            }
            let json_path = format!("{ty}.{path}");
            let element =
                fhirlake_deid::coverage::element_path(&row.resource, &json_path, &named_urls);
            let kind = covered_by(&coverage, ty, &element);
            *by_kind.entry(kind).or_default().entry(element).or_default() += 1;
        }
    }
    by_kind
}

#[test]
fn a_planted_corpus_leaves_no_trace_and_no_recoverable_date_shift() {
    let dir = tempfile::tempdir().unwrap();
    let (corpus, messages) = planted_lake(dir.path());
    let mut failures = check_files(dir.path(), &corpus, &messages);
    let rows = raw_rows(dir.path());
    failures.extend(check_dates(&corpus, &rows));
    // The coverage report is read and matched (its findings: the two ignored tests below).
    let coverage = coverage_of_the_lake(dir.path(), &rows);
    assert!(
        coverage
            .get(&Covered::Exactly)
            .is_some_and(|p| p.len() > 50)
    );
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// Check 3: every element path the lake keeps is named by the coverage report.
#[test]
fn coverage_report_names_every_kept_path() {
    let dir = tempfile::tempdir().unwrap();
    planted_lake(dir.path());
    let rows = raw_rows(dir.path());
    let coverage = coverage_of_the_lake(dir.path(), &rows);
    assert!(
        !coverage.contains_key(&Covered::Missing),
        "element paths the lake keeps that the coverage report does not name: {:#?}",
        coverage[&Covered::Missing]
    );
}

/// The strict form of check 3: every element path the lake keeps is a `kept`, `changed` or
/// `added` row of the report, under its own path or, inside a nested resource, under the nested
/// resource's own type (the report generates one nested type per container). Value-dependent
/// paths (a Coding's display, a ZIP, an Age's unit, `meta.lastUpdated`, the OMB category) count
/// because the report runs plausible values too and lists their fate beside the token's.
#[test]
fn coverage_report_names_every_kept_path_as_kept() {
    let dir = tempfile::tempdir().unwrap();
    planted_lake(dir.path());
    let rows = raw_rows(dir.path());
    let coverage = coverage_of_the_lake(dir.path(), &rows);
    // What used to be named only as `removed`: value-dependent paths, a sub-extension allowed
    // with one value type, the engine's age band.
    let exactly = &coverage[&Covered::Exactly];
    for path in [
        "Condition.code.coding.display".to_string(),
        "Patient.address.postalCode".to_string(),
        format!("Patient.extension('{RACE}').extension('ombCategory').value[x]:valueCoding.code"),
        "Patient.extension('https://fhirlake.dev/fhir/StructureDefinition/age-band').url"
            .to_string(),
    ] {
        assert!(exactly.contains_key(&path), "{path}: {exactly:#?}");
    }
    let not_kept: BTreeMap<Covered, &BTreeMap<String, usize>> = coverage
        .iter()
        .filter(|(kind, _)| !matches!(kind, Covered::Exactly | Covered::AsNestedType))
        .map(|(kind, paths)| (*kind, paths))
        .collect();
    assert!(
        not_kept.is_empty(),
        "element paths the lake keeps that the report does not name as kept or changed: \
         {not_kept:#?}"
    );
}
