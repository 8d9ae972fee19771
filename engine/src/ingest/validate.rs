//! Turns one source item into a lake row: parse, validate, de-identify, extract the row columns.
//!
//! Runs on the worker pool, once per resource. Reasons name JSON paths and R4 type names, never
//! values, unknown type names or unknown keys: they are printed, logged and stored next to the
//! original line in the landing zone. Every row column is read from the de-identified resource.

use std::sync::Arc;

use fhirlake_connectors::{ItemPosition, RawInput, SourceItem};
use fhirlake_deid::{Deidentifier, Disposition};
use fhirlake_fhir::compartment::{self, PatientRef};
use fhirlake_fhir::reference::is_valid_id;
use fhirlake_fhir::types::is_resource_type;
use serde_json::Value;

use super::patient_index::PatientsByIdentifier;

/// The outcome for one source item.
#[derive(Debug)]
pub enum Processed {
    /// A resource to upsert.
    Row(Row),
    /// A delete of `(resource_type, lake id)`.
    Delete {
        /// FHIR resource type.
        resource_type: String,
        /// Id as stored in the lake (pseudonymized when de-identification is on).
        id: String,
        /// Read order, for "last read wins".
        seq: i64,
    },
    /// Rejected input, kept in the landing zone.
    Reject(Reject),
}

/// One row of a `raw.<type>` table, before staging.
#[derive(Debug)]
pub struct Row {
    /// FHIR resource type (table).
    pub resource_type: String,
    /// Resource id after de-identification.
    pub id: String,
    /// Patient compartment id after de-identification.
    pub patient_id: Option<String>,
    /// `meta.lastUpdated` of the de-identified resource (the value inside `resource`), in
    /// microseconds since the epoch.
    pub last_updated: Option<i64>,
    /// De-identified resource JSON.
    pub resource: String,
    /// Read order, for "ties: last read wins".
    pub seq: i64,
    /// Bytes of input this row came from.
    pub input_bytes: u64,
}

/// A rejected line or entry.
#[derive(Debug)]
pub struct Reject {
    /// Where it came from.
    pub pos: ItemPosition,
    /// Resource type when it could be read (for per-type counts).
    pub resource_type: Option<String>,
    /// JSON path of the problem, when there is one.
    pub json_path: Option<String>,
    /// Why (no values).
    pub reason: String,
    /// The original bytes (in memory, or in a spill file for a line over the size limit), kept in
    /// the landing zone.
    pub raw: Option<RawInput>,
}

/// Per-file context shared by the items of one batch.
#[derive(Debug, Clone)]
pub struct FileContext {
    /// Type the manifest says the file holds.
    pub expected_type: Option<Arc<str>>,
}

/// Processes one item. `patients` resolves conditional patient references (`patient_id`).
pub fn process(
    item: SourceItem,
    seq: i64,
    file: &FileContext,
    deid: &dyn Deidentifier,
    patients: Option<&PatientsByIdentifier>,
) -> Processed {
    match item {
        SourceItem::Line { pos, bytes } => {
            let input_bytes = bytes.len() as u64;
            let text = match std::str::from_utf8(&bytes) {
                Ok(text) => text,
                Err(e) => {
                    return reject(
                        pos,
                        None,
                        None,
                        format!("invalid UTF-8 at byte {}", e.valid_up_to()),
                        Some(bytes),
                    );
                }
            };
            match serde_json::from_str::<Value>(text) {
                Ok(value) => resource_to_row(
                    value,
                    pos,
                    seq,
                    (file, deid, patients),
                    input_bytes,
                    Some(bytes),
                ),
                Err(e) => reject(
                    pos,
                    None,
                    None,
                    format!(
                        "malformed JSON ({} at column {})",
                        json_error_kind(&e),
                        e.column()
                    ),
                    Some(bytes),
                ),
            }
        }
        SourceItem::Resource { pos, resource } => {
            // A Bundle entry has no line of its own: its resource as read is what a reject keeps
            // in the landing zone. Taken before de-identification changes it.
            let original = serde_json::to_vec(&resource).ok();
            resource_to_row(resource, pos, seq, (file, deid, patients), 0, original)
        }
        SourceItem::Delete {
            pos,
            resource_type,
            id,
        } => {
            if !is_resource_type(&resource_type) {
                return reject(
                    pos,
                    None,
                    Some("request.url".into()),
                    "delete of an unknown resource type (not an R4 resource type)".into(),
                    None,
                );
            }
            if !is_valid_id(&id) {
                return reject(
                    pos,
                    Some(resource_type),
                    Some("request.url".into()),
                    "delete with an invalid FHIR id".into(),
                    None,
                );
            }
            let id = deid.lake_id(&resource_type, &id);
            Processed::Delete {
                resource_type,
                id,
                seq,
            }
        }
        SourceItem::Reject { pos, reason, raw } => Processed::Reject(Reject {
            pos,
            resource_type: None,
            json_path: None,
            reason,
            raw,
        }),
    }
}

fn reject(
    pos: ItemPosition,
    resource_type: Option<String>,
    json_path: Option<String>,
    reason: String,
    raw: Option<Vec<u8>>,
) -> Processed {
    Processed::Reject(Reject {
        pos,
        resource_type,
        json_path,
        reason,
        raw: raw.map(RawInput::Bytes),
    })
}

fn resource_to_row(
    mut value: Value,
    pos: ItemPosition,
    seq: i64,
    (file, deid, patients): (
        &FileContext,
        &dyn Deidentifier,
        Option<&PatientsByIdentifier>,
    ),
    input_bytes: u64,
    raw: Option<Vec<u8>>,
) -> Processed {
    let base = pos.path.as_deref();
    // An owned type: de-identification rewrites the resource it was read from.
    let checked = checked_resource_type(&value, file, base)
        .map(str::to_string)
        .and_then(|resource_type| {
            check_id_and_last_updated(&value, &resource_type, base)?;
            deidentify(deid, &mut value, &resource_type, base)?;
            stored_row(&value, resource_type, base, patients, seq, input_bytes)
        });
    match checked {
        Ok(row) => Processed::Row(row),
        Err(refusal) => reject(
            pos,
            refusal.resource_type,
            refusal.json_path,
            refusal.reason,
            raw,
        ),
    }
}

/// Why a resource is refused: its type when known, the JSON path of what is wrong, the reason
/// (names and kinds, never values).
struct Refusal {
    resource_type: Option<String>,
    json_path: Option<String>,
    reason: String,
}

impl Refusal {
    fn new(resource_type: Option<&str>, json_path: Option<String>, reason: String) -> Self {
        Self {
            resource_type: resource_type.map(str::to_string),
            json_path,
            reason,
        }
    }
}

/// The JSON path `suffix` under the item's own path (`entry[3].resource` in a Bundle).
fn at(base: Option<&str>, suffix: &str) -> Option<String> {
    Some(match base {
        Some(base) => format!("{base}.{suffix}"),
        None => suffix.to_string(),
    })
}

/// The resource's `resourceType`: a JSON object's, an R4 type, the manifest entry's type.
fn checked_resource_type<'v>(
    value: &'v Value,
    file: &FileContext,
    base: Option<&str>,
) -> Result<&'v str, Refusal> {
    let Some(object) = value.as_object() else {
        return Err(Refusal::new(
            None,
            base.map(str::to_string),
            format!("not a JSON object (found {})", json_kind(value)),
        ));
    };
    let refuse = |reason: String| Refusal::new(None, at(base, "resourceType"), reason);
    let resource_type = match object.get("resourceType") {
        Some(Value::String(t)) if is_resource_type(t) => t.as_str(),
        Some(Value::String(_)) => {
            return Err(refuse(
                "unknown resourceType (not an R4 resource type)".into(),
            ));
        }
        Some(other) => {
            return Err(refuse(format!(
                "resourceType is a {}, not a string",
                json_kind(other)
            )));
        }
        None => return Err(refuse("missing resourceType".into())),
    };
    if let Some(expected) = &file.expected_type
        && expected.as_ref() != resource_type
    {
        let reason = if is_resource_type(expected) {
            format!(
                "resourceType {resource_type} does not match the manifest entry type {expected}"
            )
        } else {
            format!(
                "resourceType {resource_type} does not match the manifest entry type \
                 (not an R4 resource type)"
            )
        };
        return Err(Refusal::new(
            Some(resource_type),
            at(base, "resourceType"),
            reason,
        ));
    }
    Ok(resource_type)
}

/// A valid `id`, and a `meta.lastUpdated` that is an instant when there is one.
fn check_id_and_last_updated(
    value: &Value,
    resource_type: &str,
    base: Option<&str>,
) -> Result<(), Refusal> {
    let refuse = |suffix: &str, reason: String| {
        Err(Refusal::new(Some(resource_type), at(base, suffix), reason))
    };
    match value.get("id") {
        Some(Value::String(id)) if is_valid_id(id) => {}
        Some(Value::String(_)) => {
            return refuse(
                "id",
                "id is not a valid FHIR id ([A-Za-z0-9-.]{1,64})".into(),
            );
        }
        Some(other) => {
            return refuse("id", format!("id is a {}, not a string", json_kind(other)));
        }
        None => return refuse("id", "missing id".into()),
    }
    // The original `meta.lastUpdated` is only checked here; the column is read from the
    // de-identified resource, so that it carries the same (shifted) instant as the `resource`
    // text: the original next to the shifted copy would give away the date shift.
    match value.get("meta").and_then(|m| m.get("lastUpdated")) {
        None | Some(Value::Null) => Ok(()),
        Some(Value::String(instant)) => match chrono::DateTime::parse_from_rfc3339(instant) {
            Ok(_) => Ok(()),
            Err(_) => refuse(
                "meta.lastUpdated",
                "meta.lastUpdated is not a valid FHIR instant".into(),
            ),
        },
        Some(other) => refuse(
            "meta.lastUpdated",
            format!("meta.lastUpdated is a {}, not a string", json_kind(other)),
        ),
    }
}

/// De-identifies the resource in place; a policy's drop or an engine failure refuses it.
fn deidentify(
    deid: &dyn Deidentifier,
    value: &mut Value,
    resource_type: &str,
    base: Option<&str>,
) -> Result<(), Refusal> {
    let reason = match deid.deidentify(value) {
        Ok(Disposition::Keep) => return Ok(()),
        Ok(Disposition::Drop { reason }) => format!("dropped by policy: {reason}"),
        Err(e) => format!("de-identification failed: {e}"),
    };
    Err(Refusal::new(
        Some(resource_type),
        base.map(str::to_string),
        reason,
    ))
}

/// The row of a de-identified resource: its id and references are in the lake's (pseudonym)
/// space now.
fn stored_row(
    value: &Value,
    resource_type: String,
    base: Option<&str>,
    patients: Option<&PatientsByIdentifier>,
    seq: i64,
    input_bytes: u64,
) -> Result<Row, Refusal> {
    let Some(id) = value.get("id").and_then(Value::as_str).map(str::to_string) else {
        return Err(Refusal::new(
            Some(&resource_type),
            at(base, "id"),
            "de-identification removed the id".into(),
        ));
    };
    let patient_id = patient_compartment(value, patients);
    let last_updated = deidentified_last_updated(value);
    let resource = serde_json::to_string(value).map_err(|e| {
        Refusal::new(
            Some(&resource_type),
            base.map(str::to_string),
            format!("re-serialisation failed: {e}"),
        )
    })?;
    Ok(Row {
        resource_type,
        id,
        patient_id,
        last_updated,
        input_bytes: if input_bytes > 0 {
            input_bytes
        } else {
            resource.len() as u64
        },
        resource,
        seq,
    })
}

/// `meta.lastUpdated` of the resource as it is stored (after de-identification) in microseconds
/// since the epoch; `None` when the policy removed it or left something that is not an instant.
fn deidentified_last_updated(resource: &Value) -> Option<i64> {
    let instant = resource.get("meta")?.get("lastUpdated")?.as_str()?;
    chrono::DateTime::parse_from_rfc3339(instant)
        .ok()
        .map(|t| t.timestamp_micros())
}

/// The patient a resource as stored (after de-identification) belongs to, by the one rule of
/// `fhirlake_fhir::compartment` (from the R4 CompartmentDefinition): the Patient itself, else the
/// first Patient reference along the resource type's patient paths (Observation `subject`,
/// Coverage `beneficiary`, ...) — `Patient/x`, `.../_history/n`, an absolute URL, or a conditional
/// `Patient?identifier=...` that `patients` resolves. A `urn:uuid:` reference is passed over: the
/// connectors already turned the ones their Bundle names into `Patient/x`, and another names no
/// resource the lake knows (its pseudonym is no patient's id).
pub fn patient_compartment(
    resource: &Value,
    patients: Option<&PatientsByIdentifier>,
) -> Option<String> {
    compartment_with(resource, |system, value| {
        patients?.resolve_stored(system, value)
    })
}

/// [`patient_compartment`] of a resource read back from the lake (a purge re-applying a policy):
/// a conditional reference keeps the `patient_id` it was given at ingest (`stored`), when the
/// run's patients were at hand.
pub fn stored_patient_compartment(resource: &Value, stored: Option<&str>) -> Option<String> {
    compartment_with(resource, |_, _| stored.map(str::to_string))
}

/// The compartment rule, with conditional references resolved by `resolve(system, value)`.
fn compartment_with(
    resource: &Value,
    resolve: impl Fn(Option<&str>, &str) -> Option<String>,
) -> Option<String> {
    let not_a_bundle_uuid = |reference: &str| !reference.starts_with("urn:uuid:");
    let resource_type = resource.get("resourceType").and_then(Value::as_str)?;
    if resource_type == "Patient" {
        return match compartment::patient_ref(resource)? {
            PatientRef::Id(id) => Some(id.to_string()),
            PatientRef::Identifier { .. } => None,
        };
    }
    compartment::patient_paths(resource_type)
        .iter()
        .flat_map(|path| compartment::references_at(resource, path))
        .filter(|reference| not_a_bundle_uuid(reference))
        .find_map(|reference| match compartment::patient_in(reference)? {
            PatientRef::Id(id) => Some(id.to_string()),
            PatientRef::Identifier { system, value } => resolve(system.as_deref(), &value),
        })
}

fn json_kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn json_error_kind(e: &serde_json::Error) -> &'static str {
    match e.classify() {
        serde_json::error::Category::Io => "I/O error",
        serde_json::error::Category::Syntax => "syntax error",
        serde_json::error::Category::Data => "invalid data",
        serde_json::error::Category::Eof => "unexpected end of input",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fhirlake_deid::Passthrough;

    fn line(text: &str) -> SourceItem {
        SourceItem::Line {
            pos: ItemPosition {
                file: Arc::from("f.ndjson"),
                line: 7,
                path: None,
            },
            bytes: text.as_bytes().to_vec(),
        }
    }

    fn run(text: &str) -> Processed {
        let file = FileContext {
            expected_type: None,
        };
        process(line(text), 1, &file, &Passthrough, None)
    }

    fn reason(p: Processed) -> String {
        match p {
            Processed::Reject(r) => r.reason,
            other => panic!("expected a reject, got {other:?}"),
        }
    }

    #[test]
    fn accepts_a_resource_and_finds_its_patient() {
        let Processed::Row(row) = run(
            r#"{"resourceType":"Observation","id":"o1","meta":{"lastUpdated":"2024-01-02T03:04:05Z"},"subject":{"reference":"Patient/p1"}}"#,
        ) else {
            panic!("expected a row")
        };
        assert_eq!(row.resource_type, "Observation");
        assert_eq!(row.id, "o1");
        assert_eq!(row.patient_id.as_deref(), Some("p1"));
        assert_eq!(row.last_updated, Some(1_704_164_645_000_000));
    }

    /// Moves `meta.lastUpdated` one day back, as a policy's date shift would.
    #[derive(Debug)]
    struct ShiftLastUpdated;

    impl Deidentifier for ShiftLastUpdated {
        fn policy_name(&self) -> &str {
            "shift-test"
        }
        fn policy_hash(&self) -> String {
            "test".into()
        }
        fn key_id(&self) -> String {
            "test".into()
        }
        fn removes_identifiers(&self) -> bool {
            true
        }
        fn deidentify(&self, resource: &mut Value) -> fhirlake_deid::Result<Disposition> {
            if let Some(meta) = resource.get_mut("meta") {
                meta["lastUpdated"] = Value::from("2024-01-01T03:04:05Z");
            }
            Ok(Disposition::Keep)
        }
        fn lake_id(&self, _resource_type: &str, id: &str) -> String {
            id.to_string()
        }
    }

    #[test]
    fn last_updated_column_is_the_deidentified_instant() {
        let file = FileContext {
            expected_type: None,
        };
        let text =
            r#"{"resourceType":"Patient","id":"p1","meta":{"lastUpdated":"2024-01-02T03:04:05Z"}}"#;
        let Processed::Row(row) = process(line(text), 1, &file, &ShiftLastUpdated, None) else {
            panic!("expected a row")
        };
        assert!(row.resource.contains("2024-01-01T03:04:05Z"));
        assert_eq!(row.last_updated, Some(1_704_078_245_000_000));
    }

    #[test]
    fn rejects_without_echoing_values() {
        let secret = "Jane-Doe-555";
        let typed_secret = "JaneDoe555";
        for (text, expect) in [
            (
                format!(r#"{{"resourceType":"Patient","id":"{secret}""#),
                "malformed JSON",
            ),
            ("[1,2]".to_string(), "not a JSON object"),
            (format!(r#"{{"id":"{secret}"}}"#), "missing resourceType"),
            (
                format!(r#"{{"resourceType":"Pat ient {secret}","id":"x"}}"#),
                "unknown resourceType",
            ),
            (
                r#"{"resourceType":"JaneDoe555","id":"x"}"#.to_string(),
                "unknown resourceType",
            ),
            (
                format!(r#"{{"resourceType":"Patient","name":"{secret}"}}"#),
                "missing id",
            ),
            (
                format!(r#"{{"resourceType":"Patient","id":"{secret} !"}}"#),
                "not a valid FHIR id",
            ),
            (
                format!(
                    r#"{{"resourceType":"Patient","id":"x","meta":{{"lastUpdated":"{secret}"}}}}"#
                ),
                "meta.lastUpdated",
            ),
        ] {
            let why = reason(run(&text));
            assert!(why.contains(expect), "{why} should contain {expect}");
            assert!(!why.contains(secret), "reason leaks a value: {why}");
            assert!(!why.contains(typed_secret), "reason echoes a type: {why}");
        }
    }

    #[test]
    fn invalid_utf8_is_rejected_with_the_bytes_kept() {
        let item = SourceItem::Line {
            pos: ItemPosition {
                file: Arc::from("f"),
                line: 1,
                path: None,
            },
            bytes: vec![b'{', 0xff, b'}'],
        };
        let file = FileContext {
            expected_type: None,
        };
        match process(item, 1, &file, &Passthrough, None) {
            Processed::Reject(r) => {
                assert!(r.reason.contains("UTF-8"));
                assert!(
                    matches!(&r.raw, Some(RawInput::Bytes(bytes)) if bytes == &[b'{', 0xff, b'}'])
                );
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn manifest_type_is_enforced() {
        let file = FileContext {
            expected_type: Some(Arc::from("Observation")),
        };
        let p = process(
            line(r#"{"resourceType":"Patient","id":"p"}"#),
            1,
            &file,
            &Passthrough,
            None,
        );
        assert!(reason(p).contains("does not match the manifest"));
        // A manifest type that is no R4 type (it could be any text) is not repeated.
        let file = FileContext {
            expected_type: Some(Arc::from("JaneDoe555")),
        };
        let p = process(
            line(r#"{"resourceType":"Patient","id":"p"}"#),
            1,
            &file,
            &Passthrough,
            None,
        );
        let why = reason(p);
        assert!(why.contains("does not match the manifest") && !why.contains("JaneDoe555"));
    }

    #[test]
    fn patient_references() {
        // Each field on a resource type whose patient it names (R4 CompartmentDefinition).
        let stored = |field: &str, reference: &str| {
            let resource_type = match field {
                "patient" => "Claim",
                "beneficiary" => "Coverage",
                _ => "Observation",
            };
            serde_json::json!({"resourceType": resource_type, "id": "o", field: {"reference": reference}})
        };
        let at =
            |field: &str, reference: &str| patient_compartment(&stored(field, reference), None);
        assert_eq!(at("subject", "Patient/abc").as_deref(), Some("abc"));
        assert_eq!(
            at("subject", "https://x.org/fhir/Patient/abc").as_deref(),
            Some("abc")
        );
        assert_eq!(
            at("patient", "Patient/abc/_history/2").as_deref(),
            Some("abc")
        );
        assert_eq!(at("beneficiary", "Patient/abc").as_deref(), Some("abc"));
        assert_eq!(at("subject", "Group/abc"), None);
        assert_eq!(at("subject", "#contained"), None);
        assert_eq!(at("subject", "urn:uuid:0f3a"), None);
        // Without an index a conditional reference names no patient; read back from the lake it
        // keeps the one it was given.
        assert_eq!(at("subject", "Patient?identifier=s%7C1"), None);
        let conditional = stored("subject", "Patient?identifier=s%7C1");
        assert_eq!(
            stored_patient_compartment(&conditional, Some("p9")).as_deref(),
            Some("p9")
        );
        let plain = stored("subject", "Patient/abc");
        assert_eq!(
            stored_patient_compartment(&plain, Some("p9")).as_deref(),
            Some("abc")
        );
        let patient = serde_json::json!({"resourceType": "Patient", "id": "p1"});
        assert_eq!(patient_compartment(&patient, None).as_deref(), Some("p1"));
        // The first field that names a patient decides; one that names none is passed over.
        let both = serde_json::json!({"resourceType": "Claim", "id": "c",
            "subject": {"reference": "urn:uuid:0f3a"}, "patient": {"reference": "Patient/p2"}});
        assert_eq!(patient_compartment(&both, None).as_deref(), Some("p2"));
    }

    #[test]
    fn the_patient_comes_from_the_r4_compartment_definition() {
        let at = |resource: Value| patient_compartment(&resource, None);
        // Coverage is about its beneficiary, not the policy holder named first.
        let coverage = serde_json::json!({"resourceType": "Coverage", "id": "c",
            "policyHolder": {"reference": "Patient/parent"},
            "beneficiary": {"reference": "Patient/child"}});
        assert_eq!(at(coverage).as_deref(), Some("child"));
        // Paths through arrays: the first participant that is a Patient.
        let appointment = serde_json::json!({"resourceType": "Appointment", "id": "a",
            "participant": [{"actor": {"reference": "Practitioner/d"}},
                            {"actor": {"reference": "Patient/p3"}}]});
        assert_eq!(at(appointment).as_deref(), Some("p3"));
        let provenance = serde_json::json!({"resourceType": "Provenance", "id": "v",
            "target": [{"reference": "Encounter/e"}, {"reference": "Patient/p4"}]});
        assert_eq!(at(provenance).as_deref(), Some("p4"));
        // A Group is in each member's compartment and about none of them; a Practitioner's
        // `subject`-like fields do not exist.
        let group = serde_json::json!({"resourceType": "Group", "id": "g",
            "member": [{"entity": {"reference": "Patient/p1"}}]});
        assert_eq!(at(group), None);
        let practitioner = serde_json::json!({"resourceType": "Practitioner", "id": "d",
            "subject": {"reference": "Patient/p1"}});
        assert_eq!(at(practitioner), None);
    }
}
