//! Policy coverage over the FHIR R4 type table: what a policy does to every element of every
//! resource type, and which elements only a default decides.
//!
//! [`report`] generates instances of every resource type with every element once ([`generate`]
//! with [`EveryElement`], plus the extensions the policy names in `where(url='...')`, each with
//! the value type its condition asks for), runs them through [`PolicyEngine::explain`] (the
//! engine's real semantics, not a re-implementation of rule matching) and merges the entries by
//! element path ([`element_path`]: array indices dropped, choice elements as
//! `value[x]:valueQuantity`, nested resources as `contained.ofType(Organization)`, named
//! extensions as `extension('url')`). `fhirlake deid policy show --coverage` prints it;
//! `fhirlake deid explain` labels its lines the same way.
//!
//! Where a disposition depends on the value (`terminology` keeps a known display and removes a
//! typed one, `generalize` keeps a ZIP3 but removes what is no ZIP, a date over 89 years back is
//! removed), one instance cannot show both fates. So each type is generated three times
//! ([`INSTANCES`]): with tokens (text nobody vetted), with plausible values (known codes,
//! displays, units, systems, a ZIP, recent dates: [`Values::Plausible`]) and with the same
//! values but dates over 89 years back. A path whose dispositions differ between the instances
//! is flagged [`Row::depends_on_value`]. What the engine writes itself, the 90+ age band
//! extension, is listed as `added`, by the rule that removed the birth date.

pub mod generate;

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::sync::LazyLock;

use regex::Regex;
use serde_json::Value;

use crate::policy::{Generalize, Method};
use crate::risk::AGE_BAND_EXTENSION_URL;
use crate::{Policy, PolicyEngine};
use fhirlake_fhir::types as fhir_types;
pub use generate::{
    Ask, Choices, EveryElement, Generated, NamedExtension, Options, STRING_LIKE_TYPES, Token,
    Values, dates_over_89, generate, resource_types, surviving,
};

/// How deep [`report`] generates: the resource's elements, their datatypes and three more
/// levels (`Patient.contact.name.period.start`, `Patient.extension.extension.valueCoding.code`).
pub const REPORT_DEPTH: usize = 4;

/// The instances [`report`] runs per resource type (see the module doc).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Instance {
    /// [`Values::Tokens`].
    Tokens,
    /// [`Values::Plausible`].
    Plausible,
    /// [`Values::Plausible`] after [`dates_over_89`].
    PlausibleOver89,
}

/// Every [`Instance`], in the order [`report`] runs them.
pub const INSTANCES: [Instance; 3] = [
    Instance::Tokens,
    Instance::Plausible,
    Instance::PlausibleOver89,
];

/// The `rule_path` (method `engine`) of an `added` row of the 90+ age band extension when the
/// rule that made the engine add it is not found. The rows name that rule: the `generalize` rule
/// with `over_89_band` that removed the resource's birth date.
pub const ENGINE_AGE_BAND: &str = "engine (90+ band)";

/// One element path and what the policy does there (one row per distinct disposition).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Row {
    /// The resource type of the instance (`Patient`).
    pub resource_type: String,
    /// Element path, [`element_path`] form (`Patient.name.family`).
    pub path: String,
    /// `kept`, `changed`, `removed`, `resource dropped`, or `added`: not in the input, written
    /// by the engine because the rule named removed a birth date 90 or more years back (the age
    /// band extension).
    pub outcome: String,
    /// 0-based rule index; `None` when a default decided.
    pub rule: Option<usize>,
    /// The rule's path text, or the default (`default (elements)`).
    pub rule_path: String,
    /// The rule's method (`default` for a default).
    pub method: String,
    /// True when no rule decided: the policy's `[defaults]` did.
    pub default: bool,
    /// Values of the generated instances seen with this disposition.
    pub values: u64,
    /// True when this disposition was not seen in every generated instance ([`INSTANCES`]): what
    /// happens there depends on the value (a known display is kept, a typed one removed; the age
    /// band is added for a birth date over 89 years back), and the path's other rows say what
    /// else can happen.
    pub depends_on_value: bool,
}

/// What a policy does to every element path of the resource types asked for.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Report {
    /// Policy name.
    pub policy: String,
    /// Policy hash.
    pub policy_hash: String,
    /// Resource types covered.
    pub resource_types: Vec<String>,
    /// Rows sorted by resource type and path.
    pub rows: Vec<Row>,
    /// Resource types the engine could not process (`(type, message)`; messages name paths,
    /// never values).
    pub errors: Vec<(String, String)>,
    /// Counts over the rows.
    pub summary: Summary,
}

/// Counts of a [`Report`], by distinct element path (a path with several dispositions counts
/// once in each).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Summary {
    /// Distinct element paths (resource type and path).
    pub paths: usize,
    /// Paths where a value is kept as it was.
    pub kept: usize,
    /// Paths where a value is changed (pseudonymized, shifted, generalized, ...).
    pub changed: usize,
    /// Paths where a value is removed.
    pub removed: usize,
    /// Paths whose value makes the engine drop the whole resource.
    pub resource_dropped: usize,
    /// Paths a `[defaults]` entry decides (no rule names them).
    pub defaulted: usize,
    /// Paths a default keeps as they were: what a default-deny profile must have none of.
    pub kept_by_default: usize,
    /// Paths the engine writes itself (the 90+ age band).
    pub added: usize,
    /// Paths whose disposition depends on the value ([`Row::depends_on_value`]).
    pub depends_on_value: usize,
}

impl Summary {
    fn of(rows: &[Row]) -> Self {
        let distinct = |keep: &dyn Fn(&Row) -> bool| {
            let mut seen: Vec<(&str, &str)> = rows
                .iter()
                .filter(|r| keep(r))
                .map(|r| (r.resource_type.as_str(), r.path.as_str()))
                .collect();
            seen.dedup();
            seen.len()
        };
        Self {
            paths: distinct(&|_| true),
            kept: distinct(&|r| r.outcome == "kept"),
            changed: distinct(&|r| r.outcome == "changed"),
            removed: distinct(&|r| r.outcome == "removed"),
            resource_dropped: distinct(&|r| r.outcome == "resource dropped"),
            defaulted: distinct(&|r| r.default),
            kept_by_default: distinct(&|r| r.default && r.outcome == "kept"),
            added: distinct(&|r| r.outcome == "added"),
            depends_on_value: distinct(&|r| r.depends_on_value),
        }
    }
}

impl Report {
    /// Rows a default decided.
    pub fn defaulted(&self) -> impl Iterator<Item = &Row> {
        self.rows.iter().filter(|r| r.default)
    }

    /// The rows of one element path.
    pub fn rows_for<'a>(&'a self, path: &str) -> impl Iterator<Item = &'a Row> + use<'a> {
        let path = path.to_string();
        self.rows.iter().filter(move |r| r.path == path)
    }

    /// The report as a text table: one line per element path and disposition, paths left to a
    /// default flagged `DEFAULT`, paths whose disposition depends on the value `VALUE`.
    pub fn render_table(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "# policy {} ({}), {} resource types",
            self.policy,
            self.policy_hash,
            self.resource_types.len(),
        );
        let width = self
            .rows
            .iter()
            .map(|r| r.path.len())
            .max()
            .unwrap_or(0)
            .clamp(20, 90);
        let _ = writeln!(
            out,
            "{:<width$} {:<16} {:<13} rule",
            "path", "outcome", "flag"
        );
        for row in &self.rows {
            let flag = match (row.default, row.depends_on_value) {
                (true, true) => "DEFAULT,VALUE",
                (true, false) => "DEFAULT",
                (false, true) => "VALUE",
                (false, false) => "",
            };
            let _ = writeln!(
                out,
                "{:<width$} {:<16} {:<13} {}",
                row.path,
                row.outcome,
                flag,
                rule_label(row.rule, &row.rule_path, &row.method)
            );
        }
        for (ty, message) in &self.errors {
            let _ = writeln!(out, "# {ty}: error: {message}");
        }
        let _ = writeln!(out, "{}", self.summary_line());
        out
    }

    /// `N element paths: K kept, ... D decided by a default (X of them kept); V depend on the
    /// value` (a path counts once per outcome it has).
    pub fn summary_line(&self) -> String {
        let s = &self.summary;
        format!(
            "{} element paths: {} kept, {} changed, {} removed, {} drop the resource, {} added (90+ \
             band); {} decided by a default ({} of them kept); {} depend on the value",
            s.paths,
            s.kept,
            s.changed,
            s.removed,
            s.resource_dropped,
            s.added,
            s.defaulted,
            s.kept_by_default,
            s.depends_on_value
        )
    }
}

/// The deciding rule as `fhirlake deid explain` and the coverage report print it:
/// `#27 nodesByType('HumanName') (redact)` (1-based), or the default (`default (elements)`).
pub fn rule_label(rule: Option<usize>, rule_path: &str, method: &str) -> String {
    match rule {
        Some(i) => format!("#{} {rule_path} ({method})", i + 1),
        None => rule_path.to_string(),
    }
}

/// What [`report`] merges explain entries by: resource type, element path, outcome, rule index,
/// rule path, method.
type RowKey = (String, String, String, Option<usize>, String, String);

/// The coverage of `engine`'s policy over `types` (all concrete resource types when empty).
pub fn report(engine: &PolicyEngine, types: &[&str]) -> Report {
    let policy = engine.policy();
    let named = named_extensions(policy);
    let urls = named_urls(policy);
    // An age band in the input (a policy naming its url) is not one the engine added.
    let band_generated = named.iter().any(|n| n.url == AGE_BAND_EXTENSION_URL);
    let options = |values| Options {
        max_depth: REPORT_DEPTH,
        max_items: 1,
        named_extensions: named.clone(),
        values,
    };
    let (tokens, plausible) = (options(Values::Tokens), options(Values::Plausible));
    let all = resource_types();
    let types: Vec<&str> = if types.is_empty() {
        all.clone()
    } else {
        types.to_vec()
    };
    // Row key -> (values, the instances it was seen in as a bit set).
    let mut merged: BTreeMap<RowKey, (u64, u8)> = BTreeMap::new();
    let mut errors = Vec::new();
    for &rt in &types {
        if !fhir_types::is_resource_type(rt) {
            errors.push((
                rt.to_string(),
                "not a concrete R4 resource type".to_string(),
            ));
            continue;
        }
        let mut plausible_instance = Value::Null;
        // The instances share their shape (the same choices; only values differ), so a JSON path
        // has one element path in all of them.
        let mut paths: HashMap<String, String> = HashMap::new();
        for (i, instance) in INSTANCES.into_iter().enumerate() {
            let seen_in = 1u8 << i;
            let original = match instance {
                Instance::Tokens => generate(rt, &tokens, &mut EveryElement::default()).resource,
                Instance::Plausible => {
                    plausible_instance =
                        generate(rt, &plausible, &mut EveryElement::default()).resource;
                    plausible_instance.clone()
                }
                Instance::PlausibleOver89 => {
                    let mut old = std::mem::take(&mut plausible_instance);
                    dates_over_89(&mut old);
                    old
                }
            };
            let mut resource = original.clone();
            let (result, entries) = engine.explain(&mut resource);
            if let Err(e) = result {
                // One message per type: the instances share their shape.
                if !errors.iter().any(|(t, _)| t == rt) {
                    errors.push((rt.to_string(), e.to_string()));
                }
            }
            let mut add = |key: RowKey| {
                let (values, instances) = merged.entry(key).or_default();
                *values += 1;
                *instances |= seen_in;
            };
            // Where a rule with the 90+ band removed a birth date: (JSON path, rule).
            let banded: Vec<(String, usize)> = entries
                .iter()
                .filter(|e| e.outcome == "removed")
                .filter_map(|e| Some((e.path.clone(), e.rule?)))
                .filter(|(_, i)| policy.rules.get(*i).is_some_and(has_age_band))
                .collect();
            for e in entries {
                let path = match paths.get(&e.path) {
                    Some(path) => path.clone(),
                    None => {
                        let path = element_path(&original, &e.path, &urls);
                        paths.insert(e.path, path.clone());
                        path
                    }
                };
                add((
                    rt.to_string(),
                    path,
                    e.outcome,
                    e.rule,
                    e.rule_path,
                    e.method,
                ));
            }
            if !band_generated {
                for json_path in age_bands(&resource) {
                    // The rule whose removal of a birth date in this resource added the band
                    // (the resource's own, not a nested one's: the shortest path).
                    let owner = json_path
                        .rsplit_once(".extension[")
                        .map_or("", |(owner, _)| owner);
                    let rule = banded
                        .iter()
                        .filter(|(p, _)| {
                            p.strip_prefix(owner)
                                .is_some_and(|rest| rest.starts_with('.'))
                        })
                        .min_by_key(|(p, _)| p.len())
                        .map(|(_, i)| *i);
                    let (rule_path, method) = match rule.and_then(|i| policy.rules.get(i)) {
                        Some(r) => (r.selector.text().to_string(), r.method.name().to_string()),
                        None => (ENGINE_AGE_BAND.to_string(), "engine".to_string()),
                    };
                    for leaf in ["url", "valueString"] {
                        let path = element_path(&resource, &format!("{json_path}.{leaf}"), &urls);
                        add((
                            rt.to_string(),
                            path,
                            "added".to_string(),
                            rule,
                            rule_path.clone(),
                            method.clone(),
                        ));
                    }
                }
            }
        }
    }
    // A disposition not seen in every instance depends on the value.
    let every: u8 = (1 << INSTANCES.len()) - 1;
    let rows: Vec<Row> = merged
        .into_iter()
        .map(
            |((resource_type, path, outcome, rule, rule_path, method), (values, instances))| Row {
                resource_type,
                path,
                outcome,
                default: rule.is_none() && method == "default",
                rule,
                rule_path,
                method,
                values,
                depends_on_value: instances != every,
            },
        )
        .collect();
    Report {
        policy: policy.name.clone(),
        policy_hash: policy.hash.clone(),
        resource_types: types.iter().map(|t| t.to_string()).collect(),
        summary: Summary::of(&rows),
        rows,
        errors,
    }
}

/// JSON paths (the engine's form, `Bundle.entry[0].resource.extension[2]`) of the 90+ age band
/// extensions in a de-identified `resource`, nested resources included.
fn age_bands(resource: &Value) -> Vec<String> {
    fn walk(value: &Value, path: &str, out: &mut Vec<String>) {
        match value {
            Value::Object(map) => {
                for (key, child) in map {
                    let path = format!("{path}.{key}");
                    if key == "extension"
                        && let Value::Array(items) = child
                    {
                        for (i, item) in items.iter().enumerate() {
                            if item.get("url").and_then(Value::as_str)
                                == Some(AGE_BAND_EXTENSION_URL)
                            {
                                out.push(format!("{path}[{i}]"));
                            }
                        }
                    }
                    walk(child, &path, out);
                }
            }
            Value::Array(items) => {
                for (i, item) in items.iter().enumerate() {
                    walk(item, &format!("{path}[{i}]"), out);
                }
            }
            _ => {}
        }
    }
    let mut out = Vec::new();
    if let Some(rt) = resource.get("resourceType").and_then(Value::as_str) {
        walk(resource, rt, &mut out);
    }
    out
}

/// True for a `generalize` rule with `over_89_band` (the engine adds its age band extension
/// where it removes a birth date).
fn has_age_band(rule: &crate::policy::Rule) -> bool {
    matches!(
        rule.method,
        Method::Generalize(Generalize::Year { over_89_band: true })
    )
}

/// True when `policy` has a rule that can make the engine add its age band extension.
fn adds_age_band(policy: &Policy) -> bool {
    policy.rules.iter().any(has_age_band)
}

/// `extension.where(url='...')` / `modifierExtension.where(url = '...')` in a rule path, maybe
/// with a value type: `where(url='...' and value.ofType(Coding).exists())`.
static EXTENSION_URL: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        r"(?:^|\.)(extension|modifierExtension)\.where\(\s*url\s*=\s*'([^']*)'\s*(?:and\s+value\.ofType\(\s*(?:FHIR\.)?([A-Za-z]+)\s*\)\.exists\(\s*\)\s*)?\)",
    )
    .expect("a valid pattern")
});

/// Any `url = '...'` literal.
static ANY_URL: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"url\s*=\s*'([^']*)'").expect("a valid pattern"));

/// The extension urls `policy` names in its rules' `where(url='...')` conditions, with where to
/// generate them: at the element the path names before `.extension` when that part is a plain
/// path from a resource type (`Patient.extension.where(url=...)`: on the Patient), otherwise in
/// every extension array of the rule's resource type (or of any resource), a sub-extension
/// (`...extension.where(url='a').extension.where(url='b')`) only inside its extension; and with
/// the value
/// type the condition asks for (`where(url='...' and value.ofType(Coding).exists())`: a
/// valueCoding). A condition of another form names its urls all the same (every `url = '...'`
/// literal), placed everywhere, with the value types in turn.
pub fn named_extensions(policy: &Policy) -> Vec<NamedExtension> {
    let mut out: Vec<NamedExtension> = Vec::new();
    let mut push = |n: NamedExtension| {
        if !out.contains(&n) {
            out.push(n);
        }
    };
    for rule in &policy.rules {
        let text = rule.selector.text();
        let root = text
            .split(['.', '('])
            .next()
            .filter(|r| fhir_types::is_resource_type(r))
            .map(str::to_string);
        let mut caught = Vec::new();
        // The extension a match follows directly (`...where(url='a').extension.where(url='b')`:
        // `b` is a sub-extension of `a`): (end of its match, url).
        let mut previous: Option<(usize, String)> = None;
        for m in EXTENSION_URL.captures_iter(text) {
            let (Some(whole), Some(kind), Some(url)) = (m.get(0), m.get(1), m.get(2)) else {
                continue;
            };
            let value_type = m
                .get(3)
                .map(|t| t.as_str())
                .filter(|t| fhir_types::is_known_type(t))
                .map(str::to_string);
            caught.push(url.start());
            let within = previous
                .take()
                .filter(|(end, _)| *end == whole.start())
                .map(|(_, url)| url);
            previous = Some((whole.end(), url.as_str().to_string()));
            let prefix = &text[..whole.start()];
            let mut segments = prefix.split('.');
            let first = segments.next().unwrap_or("");
            let rest: Vec<&str> = segments.collect();
            let plain_root = fhir_types::is_resource_type(first)
                || matches!(first, "Resource" | "DomainResource");
            let plain = plain_root
                && rest
                    .iter()
                    .all(|s| !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric()));
            push(NamedExtension {
                url: url.as_str().to_string(),
                resource_type: root.clone(),
                at: plain.then(|| rest.iter().map(|s| s.to_string()).collect()),
                modifier: kind.as_str() == "modifierExtension",
                value_type,
                within,
            });
        }
        for m in ANY_URL.captures_iter(text) {
            let Some(url) = m.get(1) else { continue };
            if caught.contains(&url.start()) {
                continue;
            }
            for modifier in [false, true] {
                push(NamedExtension {
                    url: url.as_str().to_string(),
                    resource_type: root.clone(),
                    at: None,
                    modifier,
                    value_type: None,
                    within: None,
                });
            }
        }
    }
    out
}

/// The extension urls a policy names (what [`element_path`] spells out), and the engine's own
/// 90+ age band url when the policy can make the engine add it.
pub fn named_urls(policy: &Policy) -> Vec<String> {
    let mut urls: Vec<String> = named_extensions(policy)
        .into_iter()
        .map(|n| n.url)
        .collect();
    if adds_age_band(policy) {
        urls.push(AGE_BAND_EXTENSION_URL.to_string());
    }
    urls.sort_unstable();
    urls.dedup();
    urls
}

/// The element path of a JSON path of `resource` (as [`crate::ExplainEntry::path`] gives it,
/// `Observation.component[0].valueQuantity.value`): indices dropped, a choice key as
/// `value[x]:valueQuantity`, a nested resource (`contained`, `Bundle.entry.resource`) followed
/// by `.ofType(Type)`, an extension whose url is one of `named_urls` as `extension('url')`.
/// Extension urls are policy text; no other value of the resource is written.
pub fn element_path(resource: &Value, json_path: &str, named_urls: &[String]) -> String {
    let mut segments = json_path.split('.');
    let root = segments.next().unwrap_or("");
    let mut out = root.to_string();
    let mut ty: String = resource
        .get("resourceType")
        .and_then(Value::as_str)
        .filter(|t| fhir_types::is_resource_type(t))
        .unwrap_or(root)
        .to_string();
    let mut value = Some(resource);
    for segment in segments {
        let (key, indices) = match segment.find('[') {
            Some(i) => (&segment[..i], &segment[i..]),
            None => (segment, ""),
        };
        let child = fhir_types::child(&ty, key);
        let mut v = value.and_then(|v| v.get(key));
        for index in indices.split(['[', ']']).filter(|s| !s.is_empty()) {
            v = v.and_then(|v| v.get(index.parse::<usize>().ok()?));
        }
        match child {
            Some(c) if c.is_choice && !key.starts_with('_') => {
                let _ = write!(out, ".{}[x]:{key}", c.element);
            }
            _ => {
                out.push('.');
                out.push_str(key);
            }
        }
        ty = match child {
            Some(c) if c.type_code == "Resource" => {
                match v
                    .and_then(|v| v.get("resourceType"))
                    .and_then(Value::as_str)
                    .filter(|t| fhir_types::is_resource_type(t))
                {
                    Some(rt) => {
                        let _ = write!(out, ".ofType({rt})");
                        rt.to_string()
                    }
                    None => "Resource".to_string(),
                }
            }
            Some(c) => {
                if (key == "extension" || key == "modifierExtension")
                    && let Some(url) = v
                        .and_then(|v| v.get("url"))
                        .and_then(Value::as_str)
                        .filter(|u| named_urls.iter().any(|n| n == u))
                {
                    let _ = write!(out, "('{url}')");
                }
                c.type_code.to_string()
            }
            None => String::new(),
        };
        value = v;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::DeidKey;
    use serde_json::json;

    fn key() -> DeidKey {
        DeidKey::from_bytes(&[7; 32], "test").expect("a key")
    }

    fn engine(policy: Policy) -> PolicyEngine {
        PolicyEngine::new(policy, key())
            .with_today(chrono::NaiveDate::from_ymd_opt(2024, 6, 1).expect("a date"))
    }

    /// A policy of this test's own, so the assertions do not follow the built-in profiles.
    const POLICY: &str = r#"
        name = "coverage-test"
        [defaults]
        elements = "keep"
        free_text = "redact"
        extensions = "redact"
        modifier_extensions = "drop_resource"
        unknown_elements = "redact"

        [[rules]]
        path = "Resource.id"
        method = "pseudonymize"

        [[rules]]
        path = "nodesByType('HumanName').use"
        method = "keep"

        [[rules]]
        path = "nodesByType('HumanName')"
        method = "redact"

        [[rules]]
        path = "Patient.extension.where(url='http://example.org/fhir/kept')"
        method = "keep"

        [[rules]]
        path = "Patient.birthDate"
        method = "generalize"
        params = { to = "year" }
    "#;

    /// Every key of every object is an element of its type (or `resourceType` of a resource, or
    /// the `_x` part of a primitive), arrays exactly where the element repeats.
    fn assert_known(value: &Value, ty: &str, path: &str) {
        let Value::Object(map) = value else {
            panic!("{path}: not an object");
        };
        let resource = ty == "Resource";
        let ty = if resource {
            let rt = map
                .get("resourceType")
                .and_then(Value::as_str)
                .unwrap_or_else(|| panic!("{path}: no resourceType"));
            assert!(fhir_types::is_resource_type(rt), "{path}: {rt}");
            rt
        } else {
            ty
        };
        for (key, v) in map {
            if key == "resourceType" && resource {
                continue;
            }
            // `ExampleScenario.instance.resourceType` is an element (a code) of its own.
            let child = fhir_types::child(ty, key)
                .unwrap_or_else(|| panic!("{path}.{key}: not an element of {ty}"));
            assert_eq!(v.is_array(), child.is_array, "{path}.{key}: array-ness");
            let items: Vec<&Value> = match v {
                Value::Array(items) => {
                    assert!(!items.is_empty(), "{path}.{key}: empty array");
                    items.iter().collect()
                }
                v => vec![v],
            };
            for item in items {
                if fhir_types::is_primitive(child.type_code) {
                    assert!(!item.is_object() && !item.is_array(), "{path}.{key}");
                } else if !item.is_null() || !key.starts_with('_') {
                    assert_known(item, child.type_code, &format!("{path}.{key}"));
                }
            }
            if let Some(base) = key.strip_prefix('_') {
                let values = map
                    .get(base)
                    .unwrap_or_else(|| panic!("{path}.{key}: alone"));
                if let (Value::Array(a), Value::Array(b)) = (values, v) {
                    assert_eq!(a.len(), b.len(), "{path}.{key}: not aligned");
                }
            }
        }
    }

    /// A xorshift source of choices, seeded per resource type.
    fn random(seed: u64) -> impl FnMut(Ask, usize) -> usize {
        let mut state = 0x2545_f491_4f6c_dd1d_u64 ^ seed;
        move |_: Ask, n: usize| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            usize::try_from(state % n as u64).unwrap_or(0)
        }
    }

    #[test]
    fn every_resource_type_generates_known_elements_and_unique_tokens() {
        let options = Options::default();
        let mut seen = 0;
        for rt in resource_types() {
            for mode in 0..2 {
                let generated = if mode == 0 {
                    generate(rt, &options, &mut EveryElement::default())
                } else {
                    generate(rt, &options, &mut random(rt.len() as u64))
                };
                assert_eq!(generated.resource["resourceType"], rt);
                assert!(generated.resource.get("id").is_some(), "{rt}: id");
                assert_known(&generated.resource, "Resource", rt);
                let mut needles: Vec<&str> =
                    generated.tokens.iter().map(|t| t.needle.as_str()).collect();
                needles.sort_unstable();
                let n = needles.len();
                needles.dedup();
                assert_eq!(needles.len(), n, "{rt}: tokens are unique");
                let text = generated.resource.to_string();
                let found = surviving(&text, &generated.tokens);
                assert_eq!(found.len(), n, "{rt}: every token is in the instance");
                for t in &generated.tokens {
                    assert!(fhir_types::is_known_type(&t.owner), "{rt}: {}", t.owner);
                    assert!(
                        t.owner == "Element"
                            || fhir_types::child(&t.owner, last_key(&t.json_path)).is_some(),
                        "{rt}: {} is no element of {}",
                        t.json_path,
                        t.owner
                    );
                }
                seen += 1;
            }
        }
        assert_eq!(seen, 2 * 146, "R4 has 146 concrete resource types");
    }

    /// `Patient.name[0].given[1]` -> `given`.
    fn last_key(json_path: &str) -> &str {
        let last = json_path.rsplit('.').next().unwrap_or("");
        last.split('[').next().unwrap_or("")
    }

    #[test]
    fn surviving_finds_exactly_the_tokens_left() {
        let options = Options::default();
        let generated = generate("Patient", &options, &mut EveryElement::default());
        let mut some: Vec<&Token> = generated.tokens.iter().step_by(3).collect();
        some.push(
            generated
                .tokens
                .iter()
                .find(|t| t.type_code == "base64Binary")
                .expect("a base64 token"),
        );
        let text = some
            .iter()
            .map(|t| format!("[{}]", t.needle))
            .collect::<Vec<_>>()
            .join(" ");
        let found = surviving(&text, &generated.tokens);
        assert_eq!(found.len(), some.len());
        assert!(found.iter().all(|t| some.contains(t)));
        assert!(surviving("zqx0tok2024-13 urn:oid:1.2.999.x", &generated.tokens).is_empty());
    }

    #[test]
    fn generated_instances_have_the_tricky_shapes() {
        let options = Options::default();
        let patient = generate("Patient", &options, &mut EveryElement::default()).resource;
        assert!(patient["_birthDate"]["id"].is_string());
        assert!(patient["_birthDate"]["extension"][0]["url"].is_string());
        let name = &patient["name"][0];
        assert_eq!(
            name["given"].as_array().map(Vec::len),
            name["_given"].as_array().map(Vec::len)
        );
        assert!(patient["contained"][0]["resourceType"].is_string());
        assert!(patient["extension"][0]["extension"][0]["url"].is_string());
        assert!(patient["deceasedBoolean"].is_boolean() && patient["deceasedDateTime"].is_string());
        let div = patient["text"]["div"].as_str().unwrap_or("");
        assert!(div.starts_with("<div xmlns=\"http://www.w3.org/1999/xhtml\">zqx"));
        let bundle = generate("Bundle", &options, &mut EveryElement::default()).resource;
        assert!(bundle["entry"][0]["resource"]["resourceType"].is_string());
        let questionnaire = generate("Questionnaire", &options, &mut EveryElement::default());
        assert!(questionnaire.resource["item"][0]["item"][0]["linkId"].is_string());
        // Bounded: Extension.extension, Identifier.assigner -> Reference.identifier, ...
        fn depth(v: &Value, d: usize, deepest: &mut usize) {
            *deepest = (*deepest).max(d);
            match v {
                Value::Object(m) => m.values().for_each(|v| depth(v, d + 1, deepest)),
                Value::Array(a) => a.iter().for_each(|v| depth(v, d, deepest)),
                _ => {}
            }
        }
        let mut deepest = 0;
        depth(&patient, 0, &mut deepest);
        assert!(deepest <= options.max_depth + 2, "{deepest}");
        // Owners: the type whose element holds a value.
        let generated = generate("Patient", &options, &mut EveryElement::default());
        let owner = |json_path: &str| {
            generated
                .tokens
                .iter()
                .find(|t| t.json_path == json_path)
                .map(|t| t.owner.as_str())
        };
        assert_eq!(owner("Patient.name[0].family"), Some("HumanName"));
        assert_eq!(owner("Patient.contact[0].name.family"), Some("HumanName"));
        assert_eq!(owner("Patient._birthDate.id"), Some("Element"));
        assert_eq!(owner("Patient.id"), Some("Patient"));
    }

    #[test]
    fn named_extensions_are_generated_where_the_policy_names_them() {
        let policy = Policy::parse(POLICY, "test", "coverage-test").expect("a policy");
        let named = named_extensions(&policy);
        assert_eq!(
            named,
            [NamedExtension {
                url: "http://example.org/fhir/kept".into(),
                resource_type: Some("Patient".into()),
                at: Some(Vec::new()),
                modifier: false,
                value_type: None,
                within: None,
            }]
        );
        let options = Options {
            named_extensions: named,
            ..Options::default()
        };
        let patient = generate("Patient", &options, &mut EveryElement::default()).resource;
        let urls = |v: &Value| -> Vec<String> {
            v.as_array()
                .into_iter()
                .flatten()
                .filter_map(|e| e["url"].as_str().map(str::to_string))
                .collect()
        };
        assert!(urls(&patient["extension"]).contains(&"http://example.org/fhir/kept".into()));
        assert!(
            !urls(&patient["address"][0]["extension"])
                .iter()
                .any(|u| u.contains("example.org"))
        );
        let observation = generate("Observation", &options, &mut EveryElement::default()).resource;
        assert!(!observation.to_string().contains("example.org/fhir/kept"));
    }

    #[test]
    fn element_paths() {
        let obs = serde_json::json!({
            "resourceType": "Observation",
            "component": [{"valueQuantity": {"value": 1}}],
            "contained": [{"resourceType": "Organization", "name": "x"}],
            "extension": [{"url": "http://a.example/named", "valueString": "x"},
                          {"url": "http://b.example/other", "valueString": "y"}],
            "_status": {"extension": [{"url": "http://b.example/other"}]}
        });
        let named = vec!["http://a.example/named".to_string()];
        let path = |p: &str| element_path(&obs, p, &named);
        assert_eq!(
            path("Observation.component[0].valueQuantity.value"),
            "Observation.component.value[x]:valueQuantity.value"
        );
        assert_eq!(
            path("Observation.contained[0].name"),
            "Observation.contained.ofType(Organization).name"
        );
        assert_eq!(
            path("Observation.extension[0].valueString"),
            "Observation.extension('http://a.example/named').value[x]:valueString"
        );
        assert_eq!(
            path("Observation.extension[1].valueString"),
            "Observation.extension.value[x]:valueString",
            "an url no rule names is data: not printed"
        );
        assert_eq!(
            path("Observation._status.extension[0].url"),
            "Observation._status.extension.url"
        );
        assert_eq!(path("Observation.nope[3].x"), "Observation.nope.x");
        let bundle = serde_json::json!({"resourceType": "Bundle", "entry": [
            {"resource": {"resourceType": "Bundle", "entry": [{"resource": {"resourceType": "Patient"}}]}}
        ]});
        assert_eq!(
            element_path(
                &bundle,
                "Bundle.entry[0].resource.entry[0].resource.id",
                &[]
            ),
            "Bundle.entry.resource.ofType(Bundle).entry.resource.ofType(Patient).id"
        );
    }

    #[test]
    fn report_names_the_deciding_rule_and_flags_defaults() {
        let policy = Policy::parse(POLICY, "test", "coverage-test").expect("a policy");
        let engine = engine(policy);
        let report = report(&engine, &["Patient", "Observation"]);
        assert!(report.errors.is_empty(), "{:?}", report.errors);
        assert_eq!(report.resource_types, ["Patient", "Observation"]);
        fn only<'r>(report: &'r Report, path: &str) -> &'r Row {
            let rows: Vec<&Row> = report.rows_for(path).collect();
            assert_eq!(rows.len(), 1, "{path}: {rows:?}");
            rows[0]
        }
        let family = only(&report, "Patient.name.family");
        assert_eq!(
            (
                family.outcome.as_str(),
                family.rule,
                family.rule_path.as_str(),
                family.method.as_str()
            ),
            ("removed", Some(2), "nodesByType('HumanName')", "redact")
        );
        assert!(!family.default);
        let name_use = only(&report, "Patient.name.use");
        assert_eq!(
            (name_use.outcome.as_str(), name_use.rule),
            ("kept", Some(1))
        );
        let contact = only(&report, "Patient.contact.name.family");
        assert_eq!(contact.rule, Some(2));
        let id = only(&report, "Patient.id");
        assert_eq!(
            (id.outcome.as_str(), id.method.as_str()),
            ("changed", "pseudonymize")
        );
        let birth = only(&report, "Patient.birthDate");
        assert_eq!((birth.outcome.as_str(), birth.rule), ("changed", Some(4)));
        // What no rule names: the defaults, flagged.
        let gender = only(&report, "Patient.gender");
        assert!(gender.default && gender.rule.is_none());
        assert_eq!(
            (gender.outcome.as_str(), gender.rule_path.as_str()),
            ("kept", "default (elements)")
        );
        let text = only(&report, "Observation.note.text");
        assert_eq!(
            (text.outcome.as_str(), text.rule_path.as_str()),
            ("removed", "default (free_text)")
        );
        // The named extension is spelled out and kept by its rule; other extensions are removed
        // by the default.
        let kept = "Patient.extension('http://example.org/fhir/kept').value[x]:valueString";
        let kept = only(&report, kept);
        assert_eq!((kept.outcome.as_str(), kept.rule), ("kept", Some(3)));
        assert!(
            report.rows_for("Patient.extension").any(|r| r.default
                && r.rule_path == "default (extensions)"
                && r.outcome == "removed")
        );
        let modifier = only(&report, "Patient.modifierExtension");
        assert_eq!(modifier.outcome, "resource dropped");
        assert!(
            report
                .rows_for("Observation.component.value[x]:valueQuantity.value")
                .next()
                .is_some()
        );
        assert!(
            report
                .rows
                .iter()
                .any(|r| r.path.starts_with("Observation.contained.ofType(")
                    && r.path.ends_with(").id")),
            "a contained resource's id"
        );
        // Summary.
        let s = &report.summary;
        assert!(s.paths > 500, "{s:?}");
        assert!(s.kept > 0 && s.changed > 0 && s.removed > 0 && s.resource_dropped >= 2);
        assert!(
            s.kept_by_default > 0 && s.kept_by_default <= s.defaulted && s.defaulted <= s.paths
        );
        let defaulted: Vec<(&str, &str)> = report
            .defaulted()
            .map(|r| (r.resource_type.as_str(), r.path.as_str()))
            .collect();
        let mut distinct = defaulted.clone();
        distinct.dedup();
        assert_eq!(distinct.len(), s.defaulted);
        let table = report.render_table();
        let gender_line = table
            .lines()
            .find(|l| l.starts_with("Patient.gender "))
            .expect("a line for Patient.gender");
        assert!(
            gender_line.contains("DEFAULT") && gender_line.contains("default (elements)"),
            "{gender_line}"
        );
        let family_line = table
            .lines()
            .find(|l| l.starts_with("Patient.name.family "))
            .expect("a line for Patient.name.family");
        assert!(
            family_line.contains("#3 nodesByType('HumanName') (redact)")
                && !family_line.contains("DEFAULT"),
            "{family_line}"
        );
        assert!(table.trim_end().ends_with(&report.summary_line()));
        assert!(!table.contains("zqx"), "the report prints no values");
        let json = serde_json::to_string(&report).expect("json");
        assert!(!json.contains("zqx"), "the report prints no values");
    }

    #[test]
    fn report_of_every_type_with_a_builtin_runs_without_errors() {
        for (profile, types) in [
            ("safe-harbor", resource_types()),
            (
                "limited-data-set",
                vec!["Bundle", "Patient", "Questionnaire"],
            ),
        ] {
            let engine = engine(Policy::builtin(profile).expect("a built-in"));
            let all = types.len() == 146;
            let report = report(&engine, if all { &[] } else { &types });
            assert!(report.errors.is_empty(), "{profile}: {:?}", report.errors);
            assert_eq!(report.resource_types, types);
            for rt in types {
                assert!(
                    report
                        .rows
                        .iter()
                        .any(|r| r.resource_type == rt && r.path == format!("{rt}.id")),
                    "{profile}: {rt}.id"
                );
            }
            for row in &report.rows {
                assert_eq!(row.default, row.rule.is_none());
                assert_eq!(row.default, row.method == "default");
                assert!(row.path.starts_with(&row.resource_type));
                let no_choices = row.path.replace("[x]", "");
                assert!(!no_choices.contains('['), "an index in {}", row.path);
                assert!(!row.path.contains("zqx"), "a value in {}", row.path);
            }
        }
        let bad = report(
            &engine(Policy::builtin("safe-harbor").expect("a built-in")),
            &["Nope"],
        );
        assert_eq!(bad.errors.len(), 1);
        assert!(bad.rows.is_empty());
    }

    #[test]
    fn value_type_conditions_are_read_and_others_fall_back() {
        let policy = Policy::builtin("safe-harbor").expect("a built-in");
        let named = named_extensions(&policy);
        let find =
            |url: &str| -> Vec<&NamedExtension> { named.iter().filter(|n| n.url == url).collect() };
        let omb = find("ombCategory");
        assert_eq!(omb.len(), 2, "race and ethnicity: {omb:?}");
        for (n, parent) in omb.iter().zip([
            crate::risk::US_CORE_RACE_URL,
            crate::risk::US_CORE_ETHNICITY_URL,
        ]) {
            assert_eq!(
                (
                    n.value_type.as_deref(),
                    n.within.as_deref(),
                    n.at.as_ref(),
                    n.modifier
                ),
                (Some("Coding"), Some(parent), None, false),
                "a sub-extension: inside its extension only"
            );
            assert_eq!(n.resource_type.as_deref(), Some("Patient"));
        }
        let birth_sex = find("http://hl7.org/fhir/us/core/StructureDefinition/us-core-birthsex");
        assert_eq!(birth_sex.len(), 1);
        assert_eq!(
            (
                birth_sex[0].value_type.as_deref(),
                birth_sex[0].at.as_deref()
            ),
            (Some("code"), Some(&[][..]))
        );
        let race = find(crate::risk::US_CORE_RACE_URL);
        assert_eq!(race.len(), 1);
        assert_eq!((&race[0].value_type, &race[0].within), (&None, &None));
        // A condition of another form (or an unknown type): every url literal, everywhere, the
        // value types in turn.
        let other = Policy::parse(
            r#"
            name = "conditions"
            [[rules]]
            path = "Observation.extension.where(url='http://a.example/x' and value.exists())"
            method = "keep"
            [[rules]]
            path = "Observation.extension.where(url='http://a.example/y' and value.ofType(Nope).exists())"
            method = "keep"
            "#,
            "test",
            "conditions",
        )
        .expect("a policy");
        let named = named_extensions(&other);
        let x: Vec<&NamedExtension> = named
            .iter()
            .filter(|n| n.url == "http://a.example/x")
            .collect();
        assert_eq!(x.len(), 2, "extension and modifierExtension: {x:?}");
        assert!(x.iter().all(|n| n.at.is_none() && n.value_type.is_none()));
        let y: Vec<&NamedExtension> = named
            .iter()
            .filter(|n| n.url == "http://a.example/y")
            .collect();
        assert_eq!(y.len(), 1, "{y:?}");
        assert_eq!(
            (y[0].at.as_deref(), y[0].value_type.as_deref()),
            (Some(&[][..]), None)
        );
    }

    #[test]
    fn named_extensions_get_the_value_type_their_rule_asks_for() {
        let options = Options {
            named_extensions: vec![NamedExtension {
                url: "http://a.example/coded".into(),
                resource_type: Some("Patient".into()),
                at: None,
                modifier: false,
                value_type: Some("Coding".into()),
                within: None,
            }],
            ..Options::default()
        };
        let patient = generate("Patient", &options, &mut EveryElement::default()).resource;
        let mut found = Vec::new();
        fn walk<'v>(v: &'v Value, out: &mut Vec<&'v serde_json::Map<String, Value>>) {
            match v {
                Value::Object(m) => {
                    if m.get("url").and_then(Value::as_str) == Some("http://a.example/coded") {
                        out.push(m);
                    }
                    m.values().for_each(|v| walk(v, out));
                }
                Value::Array(a) => a.iter().for_each(|v| walk(v, out)),
                _ => {}
            }
        }
        walk(&patient, &mut found);
        // On the Patient and inside its extensions; at the depth limit a Coding does not fit,
        // and there the extension has no value at all rather than one of another type.
        let mut coded = 0;
        for ext in &found {
            let values: Vec<&String> = ext.keys().filter(|k| k.starts_with("value")).collect();
            if !values.is_empty() {
                assert_eq!(values, ["valueCoding"]);
                assert!(ext["valueCoding"]["code"].is_string());
                coded += 1;
            }
        }
        assert!(
            coded > 2 && found.len() > coded,
            "{coded} of {}",
            found.len()
        );
    }

    #[test]
    fn plausible_instances_hold_values_a_policy_may_keep() {
        let options = Options {
            values: Values::Plausible,
            ..Options::default()
        };
        let generated = generate("Patient", &options, &mut EveryElement::default());
        let patient = &generated.resource;
        let (system, code, display) = generate::PLAUSIBLE_CODING;
        assert!(
            crate::vocabulary::displays(system, code)
                .is_some_and(|d| d.iter().any(|x| x == display)),
            "the vocabulary knows the plausible coding"
        );
        let coding = &patient["maritalStatus"]["coding"][0];
        assert_eq!(
            (&coding["system"], &coding["code"], &coding["display"]),
            (&json!(system), &json!(code), &json!(display))
        );
        assert_eq!(patient["maritalStatus"]["text"], display);
        assert_eq!(patient["address"][0]["postalCode"], generate::PLAUSIBLE_ZIP);
        assert_eq!(
            patient["identifier"][0]["system"],
            generate::PLAUSIBLE_IDENTIFIER_SYSTEM
        );
        assert!(crate::vocabulary::is_known_system(
            generate::PLAUSIBLE_IDENTIFIER_SYSTEM
        ));
        assert_eq!(patient["birthDate"], generate::PLAUSIBLE_DATE);
        let last_updated = patient["meta"]["lastUpdated"].as_str().unwrap_or("");
        assert!(
            last_updated.starts_with(generate::PLAUSIBLE_DATE),
            "{last_updated}"
        );
        // Free text still carries tokens; replaced values are no tokens.
        assert!(
            patient["name"][0]["family"]
                .as_str()
                .unwrap_or("")
                .starts_with("zqx")
        );
        assert!(
            !generated
                .tokens
                .iter()
                .any(|t| t.json_path == "Patient.address[0].postalCode"
                    || t.json_path == "Patient.maritalStatus.coding[0].display")
        );
        let text = patient.to_string();
        assert_eq!(
            surviving(&text, &generated.tokens).len(),
            generated.tokens.len()
        );
        // The same shape as the token instance: the same choices were made.
        let tokens = generate("Patient", &Options::default(), &mut EveryElement::default());
        let mut a = Vec::new();
        let mut b = Vec::new();
        fn keys(v: &Value, path: &str, out: &mut Vec<String>) {
            match v {
                Value::Object(m) => m
                    .iter()
                    .for_each(|(k, v)| keys(v, &format!("{path}.{k}"), out)),
                Value::Array(x) => x.iter().for_each(|v| keys(v, &format!("{path}[]"), out)),
                _ => out.push(path.to_string()),
            }
        }
        keys(patient, "", &mut a);
        keys(&tokens.resource, "", &mut b);
        assert_eq!(a, b);
        let mut old = patient.clone();
        dates_over_89(&mut old);
        assert_eq!(old["birthDate"], generate::PLAUSIBLE_OVER_89_DATE);
        assert!(
            old["meta"]["lastUpdated"]
                .as_str()
                .is_some_and(|t| t.starts_with(generate::PLAUSIBLE_OVER_89_DATE))
        );
        assert!(!old.to_string().contains(generate::PLAUSIBLE_DATE));
    }

    #[test]
    fn safe_harbor_report_names_what_depends_on_the_value_and_what_the_engine_adds() {
        let engine = engine(Policy::builtin("safe-harbor").expect("a built-in"));
        let report = report(&engine, &["Patient", "Observation"]);
        assert!(report.errors.is_empty(), "{:?}", report.errors);
        let outcomes = |path: &str| -> Vec<(String, String, bool)> {
            report
                .rows_for(path)
                .filter(|r| r.resource_type == path.split('.').next().unwrap_or(""))
                .map(|r| (r.outcome.clone(), r.method.clone(), r.depends_on_value))
                .collect()
        };
        let has = |path: &str, outcome: &str, method: &str| {
            outcomes(path)
                .iter()
                .any(|(o, m, _)| o == outcome && m == method)
        };
        // 1. Sub-extensions allowed with one value type are generated with it.
        let race = crate::risk::US_CORE_RACE_URL;
        let omb = format!("Patient.extension('{race}').extension('ombCategory')");
        assert!(
            has(&format!("{omb}.url"), "kept", "keep"),
            "{:?}",
            outcomes(&format!("{omb}.url"))
        );
        assert!(has(
            &format!("{omb}.value[x]:valueCoding.code"),
            "kept",
            "keep"
        ));
        let display = format!("{omb}.value[x]:valueCoding.display");
        assert!(
            has(&display, "kept", "terminology"),
            "{:?}",
            outcomes(&display)
        );
        assert!(
            has(&display, "removed", "terminology"),
            "{:?}",
            outcomes(&display)
        );
        assert!(outcomes(&display).iter().all(|(_, _, v)| *v));
        // Sub-extensions only inside their extension.
        assert!(
            report
                .rows
                .iter()
                .filter(|r| r.path.contains("extension('ombCategory')"))
                .all(|r| r
                    .path
                    .starts_with("Patient.extension('http://hl7.org/fhir/us/core/")),
            "ombCategory outside race / ethnicity"
        );
        let birth_sex = "Patient.extension('http://hl7.org/fhir/us/core/StructureDefinition/\
                         us-core-birthsex').value[x]:valueCode";
        assert!(has(birth_sex, "kept", "keep"), "{:?}", outcomes(birth_sex));
        // 2. The engine's age band, for the instance born more than 89 years ago.
        let band = format!("Patient.extension('{AGE_BAND_EXTENSION_URL}')");
        for leaf in [".url", ".value[x]:valueString"] {
            let rows: Vec<&Row> = report.rows_for(&format!("{band}{leaf}")).collect();
            assert_eq!(rows.len(), 1, "{band}{leaf}: {rows:?}");
            let row = rows[0];
            let rule = row.rule.and_then(|i| engine.policy().rules.get(i));
            assert_eq!(
                (
                    row.outcome.as_str(),
                    rule.map(|r| r.selector.text()),
                    row.rule_path.as_str(),
                    row.method.as_str()
                ),
                (
                    "added",
                    Some("Patient.birthDate"),
                    "Patient.birthDate",
                    "generalize"
                )
            );
            assert!(!row.default && row.depends_on_value);
        }
        assert!(has("Patient.birthDate", "changed", "generalize"));
        assert!(has("Patient.birthDate", "removed", "generalize"));
        // 3. Value-dependent methods: both fates, flagged.
        for (path, fate, method) in [
            (
                "Patient.maritalStatus.coding.display",
                "kept",
                "terminology",
            ),
            ("Patient.maritalStatus.coding.system", "kept", "terminology"),
            ("Patient.maritalStatus.text", "kept", "terminology"),
            ("Patient.identifier.system", "kept", "terminology"),
            ("Patient.address.postalCode", "changed", "generalize"),
            ("Patient.meta.lastUpdated", "changed", "date_shift"),
            (
                "Observation.value[x]:valueQuantity.unit",
                "kept",
                "terminology",
            ),
        ] {
            assert!(has(path, fate, method), "{path}: {:?}", outcomes(path));
            assert!(has(path, "removed", method), "{path}: {:?}", outcomes(path));
            assert!(outcomes(path).iter().all(|(_, _, v)| *v), "{path}");
        }
        // What does not depend on the value is not flagged.
        for path in ["Patient.gender", "Patient.name.family", "Patient.id"] {
            let rows = outcomes(path);
            assert_eq!(rows.len(), 1, "{path}: {rows:?}");
            assert!(!rows[0].2, "{path}");
        }
        assert!(report.summary.depends_on_value > 10 && report.summary.added == 2);
        let table = report.render_table();
        let line = table
            .lines()
            .find(|l| l.starts_with("Patient.address.postalCode "))
            .expect("a postalCode line");
        assert!(line.contains("VALUE"), "{line}");
        assert!(
            table
                .lines()
                .any(|l| l.contains("age-band').url ") && l.contains(" added ")),
            "{table}"
        );
        assert!(!table.contains("zqx"), "the report prints no values");
    }
}
