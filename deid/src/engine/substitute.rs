//! `substitute` on a whole node: the replacement fills in around what earlier rules kept inside
//! the node, as the Microsoft anonymizer does (a kept child keeps its slot, a removed one is
//! replaced at its position).

use serde_json::{Map, Value};

use super::walk::Walk;
use super::{Outcome, ms_compat};

impl Walk<'_> {
    /// Writes the substitution of rule `rule` into `value`, an object node whose children were
    /// walked: `kept` is what is left of them (what earlier rules handled inside; the rest was
    /// removed).
    pub(super) fn finish_substitute(
        &mut self,
        value: &mut Value,
        mut kept: Map<String, Value>,
        rule: usize,
        replacement: &Value,
        ext_part: bool,
    ) -> Outcome {
        match replacement {
            // The value of a primitive is in its sibling key, substituted there.
            _ if ext_part => {
                prune_placeholders(&mut kept);
                *value = Value::Object(kept);
            }
            Value::Object(r) => {
                merge_substitute(&mut kept, r);
                prune_placeholders(&mut kept);
                *value = Value::Object(kept);
            }
            other => *value = other.clone(),
        }
        self.ms_ops |= ms_compat::OP_SUBSTITUTE;
        self.counts.methods[6] += 1;
        self.record(Some(rule), "", "changed");
        if value.as_object().is_some_and(Map::is_empty) {
            Outcome::Remove
        } else {
            Outcome::Changed
        }
    }
}

/// Merges a `substitute` replacement into what is left of the substituted node (the parts earlier
/// rules handled), as the anonymizer does: a kept child stays and takes its slot, a removed one
/// (a `null` placeholder in an array) is replaced by the replacement's value at its position, a
/// partly kept object is merged with the replacement's, and the replacement's extra values are
/// appended.
fn merge_substitute(kept: &mut Map<String, Value>, replacement: &Map<String, Value>) {
    for (key, target) in replacement {
        let targets: &[Value] = match target {
            Value::Array(items) => items,
            other => std::slice::from_ref(other),
        };
        match kept.get_mut(key) {
            None => {
                kept.insert(key.clone(), target.clone());
            }
            Some(Value::Array(items)) => {
                let n = items.len();
                let mut out = Vec::with_capacity(n.max(targets.len()));
                for (p, item) in std::mem::take(items).into_iter().enumerate() {
                    match (item, targets.get(p)) {
                        (Value::Null, Some(t)) => out.push(t.clone()),
                        (Value::Null, None) => {}
                        (Value::Object(mut m), Some(Value::Object(t))) => {
                            merge_substitute(&mut m, t);
                            out.push(Value::Object(m));
                        }
                        (other, _) => out.push(other),
                    }
                }
                out.extend(targets.iter().skip(n).cloned());
                *items = out;
            }
            Some(Value::Object(m)) => {
                if let Some(Value::Object(t)) = targets.first() {
                    merge_substitute(m, t);
                }
            }
            // A value an earlier rule handled: it stays.
            Some(_) => {}
        }
    }
}

/// Removes the `null` placeholders a substitution left in arrays (not in `_x` arrays, where
/// `null` keeps positions), and the emptied containers.
fn prune_placeholders(map: &mut Map<String, Value>) {
    map.retain(|key, value| match value {
        Value::Array(items) => {
            for item in items.iter_mut() {
                if let Value::Object(m) = item {
                    prune_placeholders(m);
                    if m.is_empty() {
                        *item = Value::Null;
                    }
                }
            }
            if !key.starts_with('_') {
                items.retain(|v| !v.is_null());
            }
            !items.iter().all(Value::is_null)
        }
        Value::Object(m) => {
            if m.contains_key("resourceType") {
                return true;
            }
            prune_placeholders(m);
            !m.is_empty()
        }
        Value::Null => false,
        _ => true,
    });
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::super::test_support::{engine, run};

    #[test]
    fn substitute_keeps_what_an_earlier_rule_did_inside() {
        // Before the fix each leaf under the substituted node was replaced by the whole
        // replacement object, and those leaves were then merged back over the replacement.
        let e = engine(
            r#"
            [[rules]]
            path = "Patient.name.period"
            method = "keep"
            [[rules]]
            path = "Patient.name"
            method = "substitute"
            params = { replace_with = { family = "X", given = ["A", "B"] } }
            "#,
        );
        let out = run(
            &e,
            json!({"resourceType": "Patient", "name": [
                {"family": "Doe", "given": ["Jane"], "use": "official", "period": {"start": "2001"}}
            ]}),
        );
        assert_eq!(
            out["name"],
            json!([{"family": "X", "given": ["A", "B"], "period": {"start": "2001"}}])
        );
        let counts = e.stats();
        assert_eq!(counts.rule_hits[6], ("substitute".to_string(), 1));
    }
}
