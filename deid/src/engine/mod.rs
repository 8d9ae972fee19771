//! The policy engine: applies a [`Policy`] to resources, in place, in one walk per resource.
//!
//! Semantics: for every node, the governing rule is the first rule (in policy order) that matches
//! the node or one of its ancestors. So a rule covers its whole subtree, except where an earlier
//! rule matches something inside it (`nodesByType('HumanName').use: keep` before
//! `nodesByType('HumanName'): redact` keeps `use`). Nodes no rule governs follow the policy's
//! defaults (free text, extensions, modifier extensions, unknown elements). Methods act on
//! primitive values; `substitute` replaces a whole node, keeping descendants an earlier rule
//! already handled; emptied objects and arrays are pruned.
//!
//! This module owns the engine built from a policy (the rule indices by type and by resource
//! type, the JSON shape and sibling kind of every type of the table) and its counters. The phases
//! live beside it:
//!
//! * `walk.rs`: the one walk per resource, carrying rule states from parent to child and deciding
//!   the governing rule of every node;
//! * `apply.rs`: the methods applied to the primitive values the walk reaches;
//! * `substitute.rs`: `substitute` on a whole node, merged with what earlier rules kept inside it;
//! * `ms_compat.rs`: what exists only to reproduce the Microsoft FHIR anonymizer's output
//!   (`meta.security` labels, its date-shift prefixes, its redaction of partial values).

mod apply;
mod ms_compat;
mod substitute;
mod walk;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use chrono::NaiveDate;
use fhirlake_fhir::types as fhir_types;
use serde_json::Value;

pub use crate::DeidStats;
use crate::compartment::{self, PatientIndex, PatientRef};
use crate::key::DeidKey;
use crate::methods::{dates, pseudonym, scrub::Scrubber};
use crate::policy::{Fallback, METHOD_COUNT, METHOD_NAMES, Method, Policy};
use crate::{Deidentifier, Disposition, Result};
use walk::{Walk, Worker};

/// Per-run counters, safe to update from every worker.
#[derive(Debug, Default)]
struct Counters {
    methods: [AtomicU64; METHOD_COUNT],
    free_text_default: AtomicU64,
    unknown_elements: AtomicU64,
    dropped_extensions: AtomicU64,
    malformed: AtomicU64,
    dropped_resources: AtomicU64,
    resources: AtomicU64,
}

#[derive(Debug, Default, Clone, Copy)]
struct LocalCounts {
    methods: [u64; METHOD_COUNT],
    free_text_default: u64,
    unknown_elements: u64,
    dropped_extensions: u64,
    malformed: u64,
}

/// One line of `fhirlake deid explain`: which rule decided a value and what it did.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ExplainEntry {
    /// JSON path of the value (`Patient.name[0].family`).
    pub path: String,
    /// 0-based rule index, `None` for a default.
    pub rule: Option<usize>,
    /// Rule path text, or `default (...)`.
    pub rule_path: String,
    /// Method name.
    pub method: String,
    /// What happened: `kept`, `removed`, `changed`, `resource dropped`.
    pub outcome: String,
}

/// Applies a [`Policy`] with a key. Shared by all workers.
#[derive(Debug)]
pub struct PolicyEngine {
    policy: Policy,
    key: DeidKey,
    scrubber: Option<Scrubber>,
    today: NaiveDate,
    counters: Counters,
    /// Rules that start `nodesByType('T')` at any resource, by the node types that enter them
    /// (sorted rule indices), indexed by [`TypeId::index`](fhir_types::TypeId::index). Such a
    /// search is open at every node, so instead of carrying it from parent to child for every
    /// rule, each node looks its type up here once.
    type_triggers: Vec<Vec<usize>>,
    /// Rules that can start at a resource of a type: those rooted at that type plus those rooted
    /// at any resource or an abstract/datatype root (sorted rule indices). Saves trying every
    /// rule's root on every resource. Global `nodesByType` rules are not in it: they never match
    /// a root itself and enter below it through `type_triggers`.
    root_rules: fhir_types::FastMap<Vec<usize>>,
    /// Rules for resource types not in `root_rules` (unknown types): all but the global
    /// `nodesByType` ones.
    all_rules: Vec<usize>,
    /// Unique per engine in the process (never 0): tells a worker thread's memos of keyed hashes
    /// which engine, so which key, they belong to.
    id: u64,
    /// Resources are already de-identified (a purge re-applies a fixed policy to the lake).
    reapply: bool,
    /// The JSON shape of every type of the table, by
    /// [`TypeId::index`](fhir_types::TypeId::index) (see [`walk::malformed`]).
    shapes: Vec<Shape>,
    /// Resolves conditional patient references (set by the ingest).
    patient_index: Option<Arc<dyn PatientIndex>>,
    /// What `terminology` and `generalize` read from an object of each type, by
    /// [`TypeId::index`](fhir_types::TypeId::index) (see [`walk`]).
    siblings: Vec<SiblingKind>,
}

/// Types whose children `terminology` and age generalization decide from their siblings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SiblingKind {
    /// No such child.
    None,
    /// `Coding` (display) and `CodeableConcept` (text).
    Coded,
    /// `Quantity` and its kin (unit; the unit's length in years).
    Quantity,
}

impl SiblingKind {
    fn of(type_code: &str) -> Self {
        match type_code {
            "Coding" | "CodeableConcept" => SiblingKind::Coded,
            t if is_quantity(t) => SiblingKind::Quantity,
            _ => SiblingKind::None,
        }
    }
}

/// The JSON shape a FHIR type takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Shape {
    /// Complex types, backbone elements, resources, `Element` (`_x` parts): an object.
    Object,
    /// `boolean`.
    Bool,
    /// `decimal`, `integer`, `positiveInt`, `unsignedInt`.
    Number,
    /// Every other primitive: a string.
    String,
}

impl Shape {
    fn of(type_code: &str) -> Self {
        match type_code {
            "boolean" => Shape::Bool,
            t if NUMBER_TYPES.contains(&t) => Shape::Number,
            t if fhir_types::is_primitive(t) => Shape::String,
            _ => Shape::Object,
        }
    }
}

/// The next [`PolicyEngine::id`].
static NEXT_ENGINE_ID: AtomicU64 = AtomicU64::new(1);

/// What became of a node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Keep,
    Changed,
    Remove,
}

const FREE_TEXT_TYPES: [&str; 3] = ["string", "markdown", "xhtml"];
const DATE_TYPES: [&str; 3] = ["date", "dateTime", "instant"];
const NUMBER_TYPES: [&str; 4] = ["decimal", "integer", "positiveInt", "unsignedInt"];

impl PolicyEngine {
    /// An engine for `policy` with `key`.
    pub fn new(policy: Policy, key: DeidKey) -> Self {
        let uses_scrub = policy.defaults.free_text == Fallback::Scrub
            || policy.rules.iter().any(|r| r.method == Method::Scrub);
        let type_triggers = type_triggers(&policy);
        let root_rules = root_rules(&policy);
        let all_rules = (0..policy.rules.len())
            .filter(|&i| !policy.rules[i].selector.global_type_search())
            .collect();
        Self {
            scrubber: uses_scrub.then(Scrubber::new),
            policy,
            key,
            today: chrono::Utc::now().date_naive(),
            counters: Counters::default(),
            type_triggers,
            root_rules,
            all_rules,
            id: NEXT_ENGINE_ID.fetch_add(1, Ordering::Relaxed),
            reapply: false,
            patient_index: None,
            shapes: by_type_index(Shape::Object, Shape::of),
            siblings: by_type_index(SiblingKind::None, SiblingKind::of),
        }
    }

    /// Re-applies the policy to resources that are already de-identified (`fhirlake deid purge`
    /// after a policy fix): `pseudonymize`, `encrypt`, `date_shift` and `perturb` leave values as
    /// they are (they ran at ingest and are not idempotent: a second pass would re-key ids and
    /// shift dates twice), and the 90+ age-band extension the engine added stays. Everything else
    /// (`redact`, `generalize`, `scrub`, `terminology`, the defaults) applies again, so what the
    /// fixed policy no longer allows is removed.
    pub fn with_reapply(mut self, reapply: bool) -> Self {
        self.reapply = reapply;
        self
    }

    /// Pins "today" for the 90+ rule (tests and reproducible re-runs).
    pub fn with_today(mut self, today: NaiveDate) -> Self {
        self.today = today;
        self
    }

    /// The policy.
    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// The key (for `reidentify`).
    pub fn key(&self) -> &DeidKey {
        &self.key
    }

    /// De-identifies one resource and lists, per value, which rule decided it.
    pub fn explain(&self, resource: &mut Value) -> (Result<Disposition>, Vec<ExplainEntry>) {
        let mut walk = Walk::new(self, true);
        let result = walk.run(resource);
        (result, walk.explain.unwrap_or_default())
    }

    /// What de-identification has done so far.
    pub fn stats(&self) -> DeidStats {
        let c = &self.counters;
        DeidStats {
            resources: c.resources.load(Ordering::Relaxed),
            rule_hits: METHOD_NAMES
                .iter()
                .zip(&c.methods)
                .map(|(n, v)| (n.to_string(), v.load(Ordering::Relaxed)))
                .collect(),
            free_text_default: c.free_text_default.load(Ordering::Relaxed),
            unknown_elements: c.unknown_elements.load(Ordering::Relaxed),
            dropped_extensions: c.dropped_extensions.load(Ordering::Relaxed),
            dropped_resources: c.dropped_resources.load(Ordering::Relaxed),
            malformed: c.malformed.load(Ordering::Relaxed),
        }
    }

    fn add(&self, local: &LocalCounts, dropped: bool) {
        let c = &self.counters;
        for (a, v) in c.methods.iter().zip(local.methods) {
            if v > 0 {
                a.fetch_add(v, Ordering::Relaxed);
            }
        }
        c.free_text_default
            .fetch_add(local.free_text_default, Ordering::Relaxed);
        c.unknown_elements
            .fetch_add(local.unknown_elements, Ordering::Relaxed);
        c.dropped_extensions
            .fetch_add(local.dropped_extensions, Ordering::Relaxed);
        c.malformed.fetch_add(local.malformed, Ordering::Relaxed);
        c.resources.fetch_add(1, Ordering::Relaxed);
        if dropped {
            c.dropped_resources.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Resolves conditional patient references (`Patient?identifier=...`) through `index`, so
    /// that such a resource gets its patient's date shift (see [`compartment`]).
    pub fn with_patient_index(mut self, index: Arc<dyn PatientIndex>) -> Self {
        self.patient_index = Some(index);
        self
    }

    /// A reference rewritten to its pseudonymized target. A conditional patient reference
    /// (`Patient?identifier=...`) that the patient index resolves becomes the literal
    /// `Patient/<lake id>`: views, `patient_id` and joins then read it like any other (a FHIR
    /// server resolves conditional references the same way when it stores a transaction).
    fn rewrite_reference(&self, reference: &str) -> String {
        if let Some(index) = &self.patient_index
            && let Some((system, value)) = compartment::conditional_identifier(reference)
        {
            let key = compartment::reference_key(&self.key, system.as_deref(), &value);
            if let Some(lake_id) = index.patient_by_identifier(&key) {
                return format!("Patient/{lake_id}");
            }
        }
        pseudonym::rewrite_reference(&self.key, reference)
    }

    /// The date-shift scope of a resource's patient: the patient's lake id (its pseudonym), the
    /// same for every form of reference to it; `None` outside any patient's compartment or for a
    /// conditional reference the index does not resolve.
    fn patient_scope(&self, resource: &Value, worker: &mut Worker) -> Option<i64> {
        let shift_days = self.policy.defaults.date_shift_days;
        match compartment::patient_ref(resource)? {
            // All resources of a patient share its offset: worth remembering.
            PatientRef::Id(patient) => Some(worker.offsets.get_or_insert_with(patient, |p| {
                let scope = pseudonym::pseudo_id(&self.key, "Patient", p);
                dates::offset_days(&self.key, &scope, shift_days)
            })),
            PatientRef::Identifier { system, value } => {
                let key = compartment::reference_key(&self.key, system.as_deref(), &value);
                let lake_id = self.patient_index.as_ref()?.patient_by_identifier(&key)?;
                Some(dates::offset_days(&self.key, &lake_id, shift_days))
            }
        }
    }
}

/// [`PolicyEngine::type_triggers`]: the global `nodesByType` rules each type enters.
fn type_triggers(policy: &Policy) -> Vec<Vec<usize>> {
    let mut type_triggers: Vec<Vec<usize>> = vec![Vec::new(); fhir_types::type_count()];
    let null = Value::Null;
    for (i, rule) in policy.rules.iter().enumerate() {
        if !rule.selector.global_type_search() {
            continue;
        }
        for ty in fhir_types::all_types() {
            if rule.selector.global_type_accepts(ty, &null)
                && let Some(list) = fhir_types::type_id(ty)
                    .index()
                    .and_then(|t| type_triggers.get_mut(t))
            {
                list.push(i);
            }
        }
    }
    type_triggers
}

/// [`PolicyEngine::root_rules`]: the rules that can start at a resource of each type.
fn root_rules(policy: &Policy) -> fhir_types::FastMap<Vec<usize>> {
    let mut root_rules: fhir_types::FastMap<Vec<usize>> = Default::default();
    for ty in fhir_types::all_types().filter(|t| fhir_types::is_resource_type(t)) {
        let list = policy
            .rules
            .iter()
            .enumerate()
            .filter(|(_, rule)| !rule.selector.global_type_search())
            .filter(|(_, rule)| match rule.selector.resource_type() {
                Some(root) if fhir_types::is_resource_type(root) => root == ty,
                _ => true,
            })
            .map(|(i, _)| i)
            .collect();
        root_rules.insert(ty, list);
    }
    root_rules
}

/// `of(type)` for every type of the table, by [`TypeId::index`](fhir_types::TypeId::index)
/// (`missing` where a type has no index).
fn by_type_index<T: Copy>(missing: T, of: impl Fn(&str) -> T) -> Vec<T> {
    let mut by_index = vec![missing; fhir_types::type_count()];
    for ty in fhir_types::all_types() {
        if let Some(i) = fhir_types::type_id(ty).index() {
            by_index[i] = of(ty);
        }
    }
    by_index
}

/// Quantity and the datatypes built on it.
fn is_quantity(ty: &str) -> bool {
    matches!(
        ty,
        "Quantity" | "Age" | "Duration" | "Distance" | "Count" | "SimpleQuantity" | "MoneyQuantity"
    )
}

/// Writes a new string; `Keep` when it is the value already there.
#[inline]
fn set_string(value: &mut Value, new: String) -> Outcome {
    if value.as_str() == Some(new.as_str()) {
        return Outcome::Keep;
    }
    *value = Value::String(new);
    Outcome::Changed
}

/// The name of an outcome in `explain`.
fn outcome_name(o: Outcome) -> &'static str {
    match o {
        Outcome::Keep => "kept",
        Outcome::Changed => "changed",
        Outcome::Remove => "removed",
    }
}

impl Deidentifier for PolicyEngine {
    fn policy_name(&self) -> &str {
        &self.policy.name
    }

    fn policy_hash(&self) -> String {
        self.policy.hash.clone()
    }

    fn key_id(&self) -> String {
        self.key.id().to_string()
    }

    fn removes_identifiers(&self) -> bool {
        true
    }

    fn deidentify(&self, resource: &mut Value) -> Result<Disposition> {
        thread_local! {
            /// What this worker thread keeps between resources (see [`Worker`]).
            static WORKER: std::cell::RefCell<Worker> = std::cell::RefCell::new(Worker::default());
        }
        let mut walk = Walk::new(self, false);
        let mut worker = WORKER.with(|w| std::mem::take(&mut *w.borrow_mut()));
        if worker.engine != self.id {
            // Another engine (another key) used this thread: its memos do not apply.
            worker = Worker {
                engine: self.id,
                pool: worker.pool,
                ..Worker::default()
            };
        }
        walk.worker = worker;
        let result = walk.run(resource);
        let worker = std::mem::take(&mut walk.worker);
        WORKER.with(|w| *w.borrow_mut() = worker);
        result
    }

    fn lake_id(&self, resource_type: &str, id: &str) -> String {
        let mut probe = serde_json::json!({ "resourceType": resource_type, "id": id });
        let mut walk = Walk::new(self, false);
        let _ = walk.resource(&mut probe, None, None);
        probe
            .get("id")
            .and_then(Value::as_str)
            .unwrap_or(id)
            .to_string()
    }

    fn stats(&self) -> Option<DeidStats> {
        Some(PolicyEngine::stats(self))
    }
}

/// An engine for a policy text and a resource run through it, for the tests of every phase.
#[cfg(test)]
mod test_support {
    use chrono::NaiveDate;
    use serde_json::Value;

    use super::PolicyEngine;
    use crate::{DeidKey, Deidentifier as _, Policy};

    pub(super) fn engine(policy_text: &str) -> PolicyEngine {
        let policy = Policy::parse(policy_text, "test", "test").expect("policy");
        let key = DeidKey::from_bytes(&[7; 32], "test").expect("key");
        PolicyEngine::new(policy, key)
            .with_today(NaiveDate::from_ymd_opt(2025, 1, 1).expect("date"))
    }

    pub(super) fn run(engine: &PolicyEngine, mut resource: Value) -> Value {
        engine.deidentify(&mut resource).expect("deidentify");
        resource
    }
}
