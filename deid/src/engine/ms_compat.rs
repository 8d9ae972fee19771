//! What exists only to reproduce the Microsoft FHIR anonymizer's output (a policy read from its
//! configuration, [`MsOptions`]): the `meta.security` labels naming what was done, the date-shift
//! prefix that follows the rule governing the resource id, HMAC pseudonyms, its redaction of
//! partial dates, ages and ZIP codes, and what it writes for a resource it skipped.
//!
//! The walk itself has a few anonymizer-mode turns beside these (each marked where it is): a
//! primitive and its `_x` part are matched as one node, a repeating element given as a single
//! value comes out as an array, an unknown element is an error, and nothing is removed for its
//! JSON shape.

use serde_json::{Map, Value};

use super::walk::{Parent, ResourceCtx, Walk};
use super::{DATE_TYPES, Outcome, set_string};
use crate::methods::{self, dates, pseudonym};
use crate::path::NodeInfo;
use crate::policy::Method;
use crate::policy::ms::MsOptions;

/// Operations the anonymizer reports in `meta.security`, in the order it adds the labels.
pub(super) const OP_REDACT: u8 = 1;
pub(super) const OP_ABSTRACT: u8 = 1 << 1;
pub(super) const OP_CRYPTOHASH: u8 = 1 << 2;
pub(super) const OP_ENCRYPT: u8 = 1 << 3;
pub(super) const OP_PERTURB: u8 = 1 << 4;
pub(super) const OP_SUBSTITUTE: u8 = 1 << 5;
pub(super) const OP_GENERALIZE: u8 = 1 << 6;

const V3_OBSERVATION_VALUE: &str = "http://terminology.hl7.org/CodeSystem/v3-ObservationValue";

/// `(operation, system, code, display)` of the anonymizer's security labels.
const MS_LABELS: [(u8, Option<&str>, &str, &str); 7] = [
    (
        OP_REDACT,
        Some(V3_OBSERVATION_VALUE),
        "REDACTED",
        "redacted",
    ),
    (
        OP_ABSTRACT,
        Some(V3_OBSERVATION_VALUE),
        "ABSTRED",
        "abstracted",
    ),
    (
        OP_CRYPTOHASH,
        Some(V3_OBSERVATION_VALUE),
        "CRYTOHASH",
        "cryptographic hash function",
    ),
    (
        OP_ENCRYPT,
        None,
        "ENCRYPT",
        "exact value is transformed into ciphertext",
    ),
    (
        OP_PERTURB,
        None,
        "PERTURBED",
        "exact value is replaced with another exact value",
    ),
    (
        OP_SUBSTITUTE,
        None,
        "SUBSTITUTED",
        "exact value is replaced with a predefined value",
    ),
    (
        OP_GENERALIZE,
        None,
        "GENERALIZED",
        "exact value is replaced with a general value",
    ),
];

impl Walk<'_> {
    /// The anonymizer's date offsets of a resource that is not contained: `(before, after,
    /// rule)`, the offsets for dates before and after the rule governing the root's `id`, and
    /// that rule (see [`ResourceCtx`]). Zeros outside anonymizer mode.
    pub(super) fn ms_offsets(
        &self,
        res: &Value,
        rt: &str,
        id: &str,
        outer: Option<&ResourceCtx>,
    ) -> (i64, i64, usize) {
        match (&self.engine.policy.ms, outer) {
            (Some(ms), _) if !ms.embedded_keys => (0, 0, usize::MAX),
            (Some(ms), _) if ms.date_shift_fixed_offset.is_some() => {
                let fixed = ms.date_shift_fixed_offset.unwrap_or(0);
                (fixed, fixed, usize::MAX)
            }
            // A resource inside a Bundle: the tool takes the prefix from the root, which
            // it has processed completely before.
            (Some(_), Some(o)) => (o.ms_offset_after, o.ms_offset_after, usize::MAX),
            (Some(ms), None) => {
                let (rule, final_id) = self.ms_final_id(res, rt, id);
                (
                    dates::ms_offset(id, &ms.date_shift_key),
                    dates::ms_offset(&final_id, &ms.date_shift_key),
                    rule,
                )
            }
            (None, _) => (0, 0, usize::MAX),
        }
    }

    /// The rule governing the root resource's `id` and the id as that rule leaves it: the
    /// anonymizer's date shift reads the id when it gets to a date, so dates its rules reach
    /// after the id's rule use the new id as prefix (`Resource.id: cryptoHash` first).
    fn ms_final_id(&self, res: &Value, rt: &str, id: &str) -> (usize, String) {
        let Some(id_value) = res.get("id") else {
            return (usize::MAX, id.to_string());
        };
        let root = NodeInfo {
            element: "",
            ty: rt,
            value: res,
        };
        let id_node = NodeInfo {
            element: "id",
            ty: "id",
            value: id_value,
        };
        for (i, rule) in self.rules().iter().enumerate() {
            let (state, matched) = rule.selector.start(root);
            if !matched && (state.is_dead() || !rule.selector.step(state, id_node).1) {
                continue;
            }
            let hash_key = self
                .engine
                .policy
                .ms
                .as_ref()
                .map_or("", |m| m.crypto_hash_key.as_str());
            let final_id = match &rule.method {
                Method::Pseudonymize => pseudonym::hmac_hex(hash_key, id),
                Method::Redact => String::new(),
                Method::Substitute(Value::String(s)) => s.clone(),
                Method::Substitute(_) => String::new(),
                _ => id.to_string(),
            };
            return (i, final_id);
        }
        (usize::MAX, id.to_string())
    }

    /// `redact` as the anonymizer does it: with its partial options a ZIP code keeps its first
    /// three digits, a date its year, an age up to 89 its value.
    pub(super) fn ms_redact(
        &mut self,
        value: &mut Value,
        element: &str,
        ty: &str,
        parent: &Parent<'_>,
        options: &MsOptions,
    ) -> Outcome {
        let engine = self.engine;
        match value {
            Value::Null => return Outcome::Keep,
            // Nothing to label, but nothing to keep either.
            Value::String(text) if text.is_empty() => return Outcome::Remove,
            _ => {}
        }
        if options.partial_zip
            && element == "postalCode"
            && let Some(text) = value.as_str()
        {
            self.ms_ops |= OP_ABSTRACT;
            let z = methods::ms_zip(text, &engine.policy.defaults.restricted_zip3);
            return set_string(value, z);
        }
        self.ms_ops |= OP_REDACT;
        if options.partial_dates
            && DATE_TYPES.contains(&ty)
            && let Some(text) = value.as_str()
        {
            let head = date_head(text);
            if dates::age_in_years(head, engine.today).is_some_and(|a| a > 89) {
                return Outcome::Remove;
            }
            return match dates::to_year(head) {
                Some(y) => set_string(value, y),
                None => Outcome::Remove,
            };
        }
        if options.partial_ages
            && parent.ty == "Age"
            && element == "value"
            && let Some(n) = value.as_f64()
        {
            return if n > 89.0 {
                Outcome::Remove
            } else {
                Outcome::Keep
            };
        }
        Outcome::Remove
    }

    /// `dateShift` as the anonymizer does it (a date string; `rule` is the governing rule): by
    /// its offset for the resource, and a date it cannot shift (partial, or over 89 years old)
    /// is redacted instead, as its redact would.
    pub(super) fn ms_date_shift(
        &mut self,
        value: &mut Value,
        rule: usize,
        options: &MsOptions,
        ctx: &ResourceCtx,
    ) -> Outcome {
        let Some(text) = value.as_str() else {
            return Outcome::Keep;
        };
        let head = date_head(text);
        let over_89 = dates::age_in_years(head, self.engine.today).is_some_and(|a| a > 89);
        let shifted = if over_89 {
            None
        } else {
            let days = if !options.embedded_keys {
                ctx.offset_days
            } else if ctx.ms_id_rule < rule {
                ctx.ms_offset_after
            } else {
                ctx.ms_offset_before
            };
            dates::ms_shift(text, days)
        };
        match shifted {
            Some(s) => {
                self.ms_ops |= OP_PERTURB;
                set_string(value, s)
            }
            None => {
                self.ms_ops |= OP_REDACT;
                let partial = options.partial_dates && !over_89;
                match dates::to_year(head).filter(|_| partial) {
                    Some(y) => set_string(value, y),
                    None => Outcome::Remove,
                }
            }
        }
    }
}

/// `cryptoHash` with the configuration's key: HMAC-SHA256 hex, of the id part only for a
/// reference.
pub(super) fn pseudonym(
    options: &MsOptions,
    parent: &Parent<'_>,
    element: &str,
    text: &str,
) -> String {
    if parent.ty == "Reference" && element == "reference" {
        pseudonym::hmac_reference(&options.crypto_hash_key, text)
    } else {
        pseudonym::hmac_hex(&options.crypto_hash_key, text)
    }
}

/// `generalize` to an age in anonymizer mode: a number over 89 becomes 90.
pub(super) fn generalize_age(value: &mut Value) -> Outcome {
    match value.as_f64() {
        Some(n) if n > 89.0 => {
            *value = Value::from(90);
            Outcome::Changed
        }
        _ => Outcome::Keep,
    }
}

/// The end of a resource in anonymizer mode: it is never removed (an emptied one keeps its
/// type), and a resource that is not contained gets the labels of what was done in it (`ops`;
/// a contained resource's work counts for its container, an entry's for its Bundle).
pub(super) fn finish_resource(
    map: &mut Map<String, Value>,
    mut outcome: Outcome,
    contained: bool,
    ops: u8,
) -> Outcome {
    if outcome == Outcome::Remove {
        outcome = Outcome::Changed;
    }
    if !contained && add_security_labels(map, ops) {
        outcome = Outcome::Changed;
    }
    outcome
}

/// The anonymizer's output for a resource skipped after a processing error: its type and a
/// label.
pub(super) fn skipped_resource(resource_type: &str) -> Value {
    let mut empty = Map::new();
    let ty = if fhirlake_fhir::types::is_resource_type(resource_type) {
        resource_type.to_string()
    } else {
        "Resource".to_string()
    };
    empty.insert("resourceType".into(), Value::String(ty));
    add_security_labels(&mut empty, OP_REDACT);
    Value::Object(empty)
}

/// Adds the anonymizer's `meta.security` labels for `ops` (those not there yet, by code).
/// Returns whether anything was added.
fn add_security_labels(map: &mut Map<String, Value>, ops: u8) -> bool {
    if ops == 0 {
        return false;
    }
    let meta = map
        .entry("meta")
        .or_insert_with(|| Value::Object(Map::new()));
    if !meta.is_object() {
        *meta = Value::Object(Map::new());
    }
    let Value::Object(meta) = meta else {
        return false;
    };
    let security = meta
        .entry("security")
        .or_insert_with(|| Value::Array(Vec::new()));
    if !security.is_array() {
        *security = Value::Array(Vec::new());
    }
    let Value::Array(list) = security else {
        return false;
    };
    let mut added = false;
    for (op, system, code, display) in MS_LABELS {
        if ops & op == 0
            || list.iter().any(|l| {
                l.get("code")
                    .and_then(Value::as_str)
                    .is_some_and(|c| c.eq_ignore_ascii_case(code))
            })
        {
            continue;
        }
        let mut label = Map::new();
        if let Some(system) = system {
            label.insert("system".into(), Value::String(system.into()));
        }
        label.insert("code".into(), Value::String(code.into()));
        label.insert("display".into(), Value::String(display.into()));
        list.push(Value::Object(label));
        added = true;
    }
    added
}

/// The date the anonymizer reads from a value: its leading `YYYY-MM-DD` when there is one (it
/// matches a pattern, so `2001-01-01Z` is read as `2001-01-01`), else the whole text.
fn date_head(text: &str) -> &str {
    text.get(..10)
        .filter(|head| dates::is_full_date(head))
        .unwrap_or(text)
}

#[cfg(test)]
mod tests {
    use chrono::NaiveDate;
    use serde_json::json;

    use super::super::PolicyEngine;
    use super::super::test_support::{engine, run};
    use super::V3_OBSERVATION_VALUE;
    use crate::key::DeidKey;
    use crate::methods::{dates, pseudonym};

    #[test]
    fn security_labels_only_in_anonymizer_mode() {
        let native = engine(
            r#"
            [[rules]]
            path = "Patient.name"
            method = "redact"
            "#,
        );
        let out = run(
            &native,
            json!({"resourceType": "Patient", "name": [{"family": "Doe"}], "gender": "male"}),
        );
        assert_eq!(out, json!({"resourceType": "Patient", "gender": "male"}));

        let ms = engine(
            r#"{"fhirPathRules": [
                {"path": "Patient.name", "method": "redact"},
                {"path": "Patient.id", "method": "cryptoHash"}
            ], "parameters": {"cryptoHashKey": "123"}}"#,
        );
        let out = run(
            &ms,
            json!({"resourceType": "Patient", "id": "example", "name": [{"family": "Doe"}],
                   "meta": {"security": [{"code": "REDACTED"}]}}),
        );
        assert_eq!(
            out["meta"]["security"],
            json!([
                {"code": "REDACTED"},
                {"system": V3_OBSERVATION_VALUE, "code": "CRYTOHASH",
                 "display": "cryptographic hash function"}
            ])
        );
        assert!(out.get("name").is_none());
    }

    #[test]
    fn anonymizer_mode_keeps_emptied_resources_and_arrays_repeating_elements() {
        let ms = engine(r#"{"fhirPathRules": [{"path": "Resource", "method": "redact"}]}"#);
        let out = run(
            &ms,
            json!({"resourceType": "Condition", "id": "c",
                   "contained": [{"resourceType": "Practitioner", "id": "p1"}]}),
        );
        assert_eq!(
            out,
            json!({"resourceType": "Condition",
                   "contained": [{"resourceType": "Practitioner"}],
                   "meta": {"security": [{"system": V3_OBSERVATION_VALUE, "code": "REDACTED",
                                          "display": "redacted"}]}})
        );
        let keep = engine(r#"{"fhirPathRules": [{"path": "Resource", "method": "keep"}]}"#);
        let out = run(
            &keep,
            json!({"resourceType": "Patient", "communication": {"language": {"text": "en"}}}),
        );
        assert_eq!(out["communication"], json!([{"language": {"text": "en"}}]));
    }

    #[test]
    fn anonymizer_date_shift_prefix_follows_the_id_rule() {
        // The tool reads the resource id when it reaches a date: after `Resource.id: cryptoHash`
        // it is the hashed id.
        let hashed_first = engine(
            r#"{"fhirPathRules": [
                {"path": "Resource.id", "method": "cryptoHash"},
                {"path": "nodesByType('date')", "method": "dateShift"}
            ], "parameters": {"cryptoHashKey": "123", "dateShiftKey": "123"}}"#,
        )
        .policy
        .clone()
        .with_embedded_ms_keys();
        let e = PolicyEngine::new(
            hashed_first,
            DeidKey::from_bytes(&[7; 32], "t").expect("key"),
        )
        .with_today(NaiveDate::from_ymd_opt(2025, 1, 1).expect("date"));
        let out = run(
            &e,
            json!({"resourceType": "Patient", "id": "example", "birthDate": "2016-01-01"}),
        );
        let hashed = pseudonym::hmac_hex("123", "example");
        let days = dates::ms_offset(&hashed, "123");
        assert_eq!(
            out["birthDate"],
            json!(dates::shift("2016-01-01", days).expect("date"))
        );
    }
}
