//! The policy engine: applies a [`Policy`] to resources, in place, in one walk per resource.
//!
//! Semantics: for every node, the governing rule is the first rule (in policy order) that matches
//! the node or one of its ancestors. So a rule covers its whole subtree, except where an earlier
//! rule matches something inside it (`nodesByType('HumanName').use: keep` before
//! `nodesByType('HumanName'): redact` keeps `use`). Nodes no rule governs follow the policy's
//! defaults (free text, extensions, modifier extensions, unknown elements). Methods act on
//! primitive values; `substitute` replaces a whole node, keeping descendants an earlier rule
//! already handled; emptied objects and arrays are pruned.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use chrono::{Datelike as _, NaiveDate};
use serde_json::{Map, Value};

use crate::compartment::{self, PatientIndex, PatientRef};
use crate::key::DeidKey;
use crate::methods::{self, crypt, dates, memo::Memo, pseudonym, scrub::Scrubber};
use crate::path::{Item, MatchState, Node, NodeInfo, eval};
use crate::policy::{
    Fallback, Generalize, METHOD_COUNT, METHOD_NAMES, Method, Policy, ms::ProcessingErrors,
};
use crate::risk::AGE_BAND_EXTENSION_URL;
use crate::vocabulary::{self, TextDecision, Vocabulary};
use crate::{Deidentifier, Disposition, Error, Result};
use fhirlake_fhir::types as fhir_types;
use fhirlake_fhir::types::{ElementId, TypeId};

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

/// Counts of what de-identification did, for `lake.runs` and the summary (never values).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct DeidStats {
    /// Resources processed.
    pub resources: u64,
    /// Values changed or checked per method (`(name, count)` in [`METHOD_NAMES`] order).
    pub rule_hits: Vec<(String, u64)>,
    /// Free-text values handled by the default (removed or scrubbed) because no rule named them.
    pub free_text_default: u64,
    /// Non-FHIR JSON keys removed.
    pub unknown_elements: u64,
    /// Extensions dropped by the allow-list.
    pub dropped_extensions: u64,
    /// Resources dropped (unknown `modifierExtension`).
    pub dropped_resources: u64,
    /// Values removed because their JSON shape is not their FHIR type's (an object or a number
    /// where a date belongs, an array in an array): fail closed, they are not read as text.
    pub malformed: u64,
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
    /// (sorted rule indices), indexed by [`TypeId::index`]. Such a search is open at every node,
    /// so instead of carrying it from parent to child for every rule, each node looks its type up
    /// here once.
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
    /// The JSON shape of every type of the table, by [`TypeId::index`] (see [`malformed`]).
    shapes: Vec<Shape>,
    /// Resolves conditional patient references (set by the ingest).
    patient_index: Option<Arc<dyn PatientIndex>>,
    /// What `terminology` and `generalize` read from an object of each type, by
    /// [`TypeId::index`] (see [`Walk::object`]).
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

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Keep,
    Changed,
    Remove,
}

/// Context of the resource being walked.
#[derive(Debug, Clone)]
struct ResourceCtx {
    resource_type: String,
    /// Original `Type/id` (a seed for perturbation).
    seed: String,
    offset_days: i64,
    /// The anonymizer's offset for dates processed before the rule governing the root
    /// resource's `id` (prefix: the original id) ...
    ms_offset_before: i64,
    /// ... and after it (prefix: the id as that rule left it). The same for nested resources,
    /// which the tool processes after their root.
    ms_offset_after: i64,
    /// Index of the rule governing the root resource's `id` (`usize::MAX`: none).
    ms_id_rule: usize,
    contained: bool,
    names: Vec<String>,
    age_band_90: bool,
}

struct Walk<'e> {
    engine: &'e PolicyEngine,
    counts: LocalCounts,
    drop_reason: Option<String>,
    error: Option<Error>,
    explain: Option<Vec<ExplainEntry>>,
    path: Vec<String>,
    /// Operations done in the current resource (anonymizer mode: `meta.security` labels).
    ms_ops: u8,
    /// Depth of `substitute` subtrees being walked (array placeholders are kept inside them).
    in_subst: u32,
    /// What this worker thread keeps between resources.
    worker: Worker,
}

/// What a worker thread keeps from resource to resource, for one engine: spare rule-state
/// vectors (reused from node to node instead of allocated per container) and memos of keyed
/// hashes (which depend on the engine's key).
#[derive(Debug, Default)]
struct Worker {
    /// [`PolicyEngine::id`] of the engine the memos belong to.
    engine: u64,
    pool: Vec<Vec<(usize, MatchState)>>,
    /// `Reference.reference` rewrites.
    references: Memo<String>,
    /// Date offsets of patients, by source patient id.
    offsets: Memo<i64>,
}

/// Operations the anonymizer reports in `meta.security`, in the order it adds the labels.
const OP_REDACT: u8 = 1;
const OP_ABSTRACT: u8 = 1 << 1;
const OP_CRYPTOHASH: u8 = 1 << 2;
const OP_ENCRYPT: u8 = 1 << 3;
const OP_PERTURB: u8 = 1 << 4;
const OP_SUBSTITUTE: u8 = 1 << 5;
const OP_GENERALIZE: u8 = 1 << 6;

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

const FREE_TEXT_TYPES: [&str; 3] = ["string", "markdown", "xhtml"];
const DATE_TYPES: [&str; 3] = ["date", "dateTime", "instant"];
const NUMBER_TYPES: [&str; 4] = ["decimal", "integer", "positiveInt", "unsignedInt"];

impl PolicyEngine {
    /// An engine for `policy` with `key`.
    pub fn new(policy: Policy, key: DeidKey) -> Self {
        let uses_scrub = policy.defaults.free_text == Fallback::Scrub
            || policy.rules.iter().any(|r| r.method == Method::Scrub);
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
            shapes: {
                let mut shapes = vec![Shape::Object; fhir_types::type_count()];
                for ty in fhir_types::all_types() {
                    if let Some(i) = fhir_types::type_id(ty).index() {
                        shapes[i] = Shape::of(ty);
                    }
                }
                shapes
            },
            siblings: {
                let mut kinds = vec![SiblingKind::None; fhir_types::type_count()];
                for ty in fhir_types::all_types() {
                    if let Some(i) = fhir_types::type_id(ty).index() {
                        kinds[i] = match ty {
                            "Coding" | "CodeableConcept" => SiblingKind::Coded,
                            t if is_quantity(t) => SiblingKind::Quantity,
                            _ => SiblingKind::None,
                        };
                    }
                }
                kinds
            },
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

impl<'e> Walk<'e> {
    fn new(engine: &'e PolicyEngine, explain: bool) -> Self {
        Self {
            engine,
            counts: LocalCounts::default(),
            drop_reason: None,
            error: None,
            explain: explain.then(Vec::new),
            path: Vec::new(),
            ms_ops: 0,
            in_subst: 0,
            worker: Worker::default(),
        }
    }

    fn run(&mut self, resource: &mut Value) -> Result<Disposition> {
        let rt = resource
            .get("resourceType")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        if self.explain.is_some() {
            self.path.push(if fhir_types::is_resource_type(&rt) {
                rt.clone()
            } else {
                "Resource".to_string()
            });
        }
        let outcome = self.resource(resource, None, None);
        let disposition = if let Some(error) = self.error.take() {
            match self.engine.policy.ms.as_ref().map(|m| m.processing_errors) {
                Some(ProcessingErrors::Skip) => {
                    // The anonymizer's output for a skipped resource: the type and a label.
                    let mut empty = Map::new();
                    let ty = if fhir_types::is_resource_type(&rt) {
                        rt.clone()
                    } else {
                        "Resource".to_string()
                    };
                    empty.insert("resourceType".into(), Value::String(ty));
                    add_security_labels(&mut empty, OP_REDACT);
                    *resource = Value::Object(empty);
                    Disposition::Drop {
                        reason: format!("skipped after a processing error: {error}"),
                    }
                }
                _ => return Err(error),
            }
        } else if let Some(reason) = self.drop_reason.take() {
            Disposition::Drop { reason }
        } else {
            if outcome == Outcome::Remove {
                // Everything was redacted; keep the resource type so the result is still a resource.
                *resource = serde_json::json!({ "resourceType": rt });
            }
            Disposition::Keep
        };
        self.engine.add(
            &self.counts,
            matches!(disposition, Disposition::Drop { .. }),
        );
        Ok(disposition)
    }

    fn rules(&self) -> &'e [crate::policy::Rule] {
        &self.engine.policy.rules
    }

    fn resource(
        &mut self,
        res: &mut Value,
        governing: Option<usize>,
        outer: Option<&ResourceCtx>,
    ) -> Outcome {
        let engine = self.engine;
        let rt = res
            .get("resourceType")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        if !fhir_types::is_resource_type(&rt) {
            // The value is not named: a `resourceType` that is no type may hold anything.
            self.fail("Resource", "", "unknown resource type");
            return Outcome::Keep;
        }
        let id = res
            .get("id")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        let contained = outer.is_some_and(|o| o.contained);
        let mut ctx = match outer.filter(|_| contained) {
            Some(outer) => ResourceCtx {
                resource_type: rt.clone(),
                seed: format!("{}#{rt}/{id}", outer.seed),
                contained: true,
                names: outer.names.clone(),
                age_band_90: false,
                ms_offset_before: outer.ms_offset_after,
                ms_id_rule: usize::MAX,
                ..outer.clone()
            },
            None => {
                let shift_days = engine.policy.defaults.date_shift_days;
                let offset_days = match engine.patient_scope(res, &mut self.worker) {
                    Some(days) => days,
                    None => dates::offset_days(&engine.key, &format!("{rt}/{id}"), shift_days),
                };
                let (ms_offset_before, ms_offset_after, ms_id_rule) =
                    match (&engine.policy.ms, outer) {
                        (Some(ms), _) if !ms.embedded_keys => (0, 0, usize::MAX),
                        (Some(ms), _) if ms.date_shift_fixed_offset.is_some() => {
                            let fixed = ms.date_shift_fixed_offset.unwrap_or(0);
                            (fixed, fixed, usize::MAX)
                        }
                        // A resource inside a Bundle: the tool takes the prefix from the root, which
                        // it has processed completely before.
                        (Some(_), Some(o)) => (o.ms_offset_after, o.ms_offset_after, usize::MAX),
                        (Some(ms), None) => {
                            let (rule, final_id) = self.ms_final_id(res, &rt, &id);
                            (
                                dates::ms_offset(&id, &ms.date_shift_key),
                                dates::ms_offset(&final_id, &ms.date_shift_key),
                                rule,
                            )
                        }
                        (None, _) => (0, 0, usize::MAX),
                    };
                ResourceCtx {
                    resource_type: rt.clone(),
                    seed: format!("{rt}/{id}"),
                    offset_days,
                    ms_offset_before,
                    ms_offset_after,
                    ms_id_rule,
                    contained: false,
                    names: if engine.scrubber.is_some() {
                        methods::scrub::name_parts(res)
                    } else {
                        Vec::new()
                    },
                    age_band_90: false,
                }
            }
        };
        let type_id = fhir_types::type_id(&rt);
        let mut states = self.worker.pool.pop().unwrap_or_default();
        let mut first = None;
        {
            let root = Node {
                element: "",
                element_id: ElementId::UNKNOWN,
                ty: &rt,
                type_id,
                value: res,
            };
            let candidates = engine
                .root_rules
                .get(rt.as_str())
                .unwrap_or(&engine.all_rules);
            for &i in candidates {
                if governing.is_some_and(|g| i >= g) {
                    break;
                }
                let rule = &self.rules()[i];
                let (state, matched) = rule.selector.start_node(root);
                if matched && first.is_none() && !matches!(rule.method, Method::Allow) {
                    first = Some(i);
                }
                let state = rule.selector.without_global_search(state);
                if !state.is_dead() {
                    states.push((i, state));
                }
            }
        }
        let gov = first.or(governing);
        let Value::Object(map) = res else {
            return Outcome::Keep;
        };
        let outer_ops = std::mem::take(&mut self.ms_ops);
        // A resource inside a substituted node is a resource of its own.
        let outer_subst = std::mem::take(&mut self.in_subst);
        let (mut outcome, _) = self.object(map, &rt, type_id, &states, gov, &mut ctx);
        states.clear();
        self.worker.pool.push(states);
        self.in_subst = outer_subst;
        let mine = self.ms_ops;
        self.ms_ops = outer_ops | mine;
        if engine.policy.ms.is_some() {
            // The anonymizer never removes a resource (an emptied one keeps its type), and labels
            // what it did in `meta.security` (a contained resource's work counts for its
            // container, an entry's for its Bundle).
            if outcome == Outcome::Remove {
                outcome = Outcome::Changed;
            }
            if !contained && add_security_labels(map, mine) {
                outcome = Outcome::Changed;
            }
        }
        if ctx.age_band_90
            && let Value::Object(map) = res
        {
            let ext = serde_json::json!({"url": AGE_BAND_EXTENSION_URL, "valueString": "90+"});
            match map.get_mut("extension") {
                Some(Value::Array(list)) => list.push(ext),
                _ => {
                    map.insert("extension".into(), Value::Array(vec![ext]));
                }
            }
            return Outcome::Changed;
        }
        outcome
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

    fn fail(&mut self, resource_type: &str, path: &str, reason: &str) {
        if self.error.is_none() {
            self.error = Some(Error::Rule {
                resource_type: resource_type.to_string(),
                path: if path.is_empty() {
                    self.path.join(".")
                } else {
                    path.to_string()
                },
                reason: reason.to_string(),
            });
        }
    }

    /// Walks an object's children. Returns its outcome and whether an earlier rule acted inside.
    fn object(
        &mut self,
        map: &mut Map<String, Value>,
        ty: &str,
        type_id: TypeId,
        states: &[(usize, MatchState)],
        governing: Option<usize>,
        ctx: &mut ResourceCtx,
    ) -> (Outcome, bool) {
        let system = if ty == "Identifier" {
            map.get("system")
                .and_then(Value::as_str)
                .map(str::to_string)
        } else {
            None
        };
        let ms = self.engine.policy.ms.is_some();
        let vocabulary = self.engine.policy.vocabulary.as_deref();
        let kind = match type_id.index().and_then(|i| self.engine.siblings.get(i)) {
            Some(kind) if !ms => *kind,
            _ => SiblingKind::None,
        };
        let (text, years) = if kind == SiblingKind::None {
            (None, None)
        } else if kind == SiblingKind::Coded {
            (text_decision(vocabulary, ty, map), None)
        } else {
            let (code, unit) = (map.get("code"), map.get("unit"));
            let unit = if code.is_none() && unit.is_none() {
                // A quantity an age rule names, with no unit: an age in years (`onsetRange`).
                Some(1.0)
            } else {
                code.and_then(Value::as_str)
                    .and_then(years_per_unit)
                    .or_else(|| unit.and_then(Value::as_str).and_then(years_per_unit))
            };
            (text_decision(vocabulary, ty, map), unit)
        };
        // The same for every child (built once: it is passed to every node).
        let parent = Parent {
            ty,
            kind,
            system: system.as_deref(),
            vocabulary,
            text,
            years_per_unit: years,
        };
        let mut removed_any = false;
        let mut changed = false;
        let mut touched = false;
        let explaining = self.explain.is_some();
        let children = fhir_types::Children::of_id(type_id);
        for (key, value) in map.iter_mut() {
            let entry = children.entry(key);
            if key == "resourceType" && entry.is_none() {
                // A resource's type (no element of it: `ExampleScenario.instance.resourceType`
                // is one, and is walked like any code).
                continue;
            }
            let child = entry.map(|e| e.child);
            let (element, element_id, child_ty, child_type_id) = match entry {
                Some(e) => (e.child.element, e.element_id, e.child.type_code, e.type_id),
                None => (
                    key.as_str(),
                    fhir_types::element_id(key),
                    "",
                    TypeId::UNKNOWN,
                ),
            };
            // `_birthDate`: the id and extensions of the primitive `birthDate`.
            let ext_part = child_ty == "Element" && key.starts_with('_');
            // The anonymizer sees a primitive and its `_x` part as one node, of the primitive's
            // type (`nodesByType('date')` covers the extensions of a date too).
            let (match_ty, match_type_id) = if ms && ext_part {
                key.get(1..)
                    .and_then(|k| children.entry(k))
                    .map_or((child_ty, child_type_id), |e| {
                        (e.child.type_code, e.type_id)
                    })
            } else {
                (child_ty, child_type_id)
            };
            if !ms && value.is_array() && child.is_some_and(|c| !c.is_array) {
                // A single-valued element given as an array: not read item by item (each item
                // would pass as a valid value), removed.
                if explaining {
                    self.path.push(key.clone());
                }
                self.counts.malformed += 1;
                self.record(None, "malformed value", "removed");
                if explaining {
                    self.path.pop();
                }
                *value = Value::Null;
                removed_any = true;
                continue;
            }
            // Repeating elements written as a single value come out as arrays (as the tool
            // serializes them).
            if ms && child.is_some_and(|c| c.is_array) && !value.is_array() && !value.is_null() {
                let single = std::mem::take(value);
                *value = Value::Array(vec![single]);
                changed = true;
            }
            if explaining {
                self.path.push(key.clone());
            }
            let slot = Slot {
                element,
                element_id,
                ty: child_ty,
                type_id: child_type_id,
                match_ty,
                match_type_id,
                ext_part,
                known: child.is_some(),
            };
            let outcome = match value {
                Value::Array(items) => {
                    let mut any_changed = false;
                    let mut any_removed = false;
                    for (i, item) in items.iter_mut().enumerate() {
                        if explaining {
                            self.path.push(format!("[{i}]"));
                        }
                        let (o, t) = self.node(item, slot, states, governing, &parent, ctx);
                        touched |= t;
                        if explaining {
                            self.path.pop();
                        }
                        match o {
                            Outcome::Remove => {
                                *item = Value::Null;
                                any_removed = true;
                            }
                            Outcome::Changed => any_changed = true,
                            Outcome::Keep => {}
                        }
                    }
                    if ext_part || self.in_subst > 0 {
                        // Positions matter: `_given[i]` belongs to `given[i]`, and a substitution
                        // fills the slots of what it replaced.
                        if items.iter().all(Value::is_null) {
                            Outcome::Remove
                        } else if any_removed || any_changed {
                            Outcome::Changed
                        } else {
                            Outcome::Keep
                        }
                    } else {
                        let before = items.len();
                        items.retain(|v| !v.is_null());
                        if items.is_empty() {
                            Outcome::Remove
                        } else if items.len() != before || any_changed {
                            Outcome::Changed
                        } else {
                            Outcome::Keep
                        }
                    }
                }
                _ => {
                    let (o, t) = self.node(value, slot, states, governing, &parent, ctx);
                    touched |= t;
                    o
                }
            };
            if explaining {
                self.path.pop();
            }
            match outcome {
                Outcome::Remove => {
                    *value = Value::Null;
                    removed_any = true;
                }
                Outcome::Changed => changed = true,
                Outcome::Keep => {}
            }
        }
        if removed_any {
            map.retain(|k, v| !v.is_null() || k == "resourceType");
        }
        let only_type = map.len() == 1 && map.contains_key("resourceType");
        let outcome = if map.is_empty() || (only_type && removed_any) {
            Outcome::Remove
        } else if removed_any || changed {
            Outcome::Changed
        } else {
            Outcome::Keep
        };
        (outcome, touched)
    }

    fn node(
        &mut self,
        value: &mut Value,
        slot: Slot<'_>,
        parent_states: &[(usize, MatchState)],
        governing: Option<usize>,
        parent: &Parent<'_>,
        ctx: &mut ResourceCtx,
    ) -> (Outcome, bool) {
        if value.is_null() {
            return (Outcome::Keep, false);
        }
        let Slot {
            element,
            element_id,
            ty,
            type_id,
            match_ty,
            match_type_id,
            ext_part,
            known,
        } = slot;
        let rules = self.rules();
        let ms = self.engine.policy.ms.is_some();
        if !ms
            && let Some(shape) = type_id.index().and_then(|i| self.engine.shapes.get(i))
            && malformed(value, *shape)
        {
            self.counts.malformed += 1;
            self.record(None, "malformed value", "removed");
            return (Outcome::Remove, false);
        }
        // Only containers need their rule states (for their children); most nodes are leaves,
        // which need just the first match, so they allocate nothing.
        let is_container = value.is_object() || value.is_array();
        let mut states = if is_container {
            self.worker.pool.pop().unwrap_or_default()
        } else {
            Vec::new()
        };
        let mut first = None;
        // An `allow` rule matched: an extension passes the allow-list (it governs nothing).
        let mut allowed = false;
        let is_resource = ty == "Resource";
        {
            let (node_ty, node_type_id) = if is_resource {
                let rt = value
                    .get("resourceType")
                    .and_then(Value::as_str)
                    .unwrap_or("Resource");
                (rt, fhir_types::type_id(rt))
            } else {
                (match_ty, match_type_id)
            };
            let info = Node {
                element,
                element_id,
                ty: node_ty,
                type_id: node_type_id,
                value,
            };
            let triggers: &[usize] = node_type_id
                .index()
                .and_then(|t| self.engine.type_triggers.get(t))
                .map_or(&[], Vec::as_slice);
            // Merge the carried states and the rules this node's type enters, in rule order.
            let (mut p, mut t) = (0, 0);
            loop {
                let next_carried = parent_states.get(p).map(|(i, _)| *i);
                let next_trigger = triggers.get(t).copied();
                let i = match (next_carried, next_trigger) {
                    (None, None) => break,
                    (Some(a), Some(b)) => a.min(b),
                    (Some(a), None) => a,
                    (None, Some(b)) => b,
                };
                if governing.is_some_and(|g| i >= g) {
                    break;
                }
                let selector = &rules[i].selector;
                let mut state = MatchState::default();
                let mut matched = false;
                if next_carried == Some(i) {
                    let (next, m) = selector.step_node(parent_states[p].1, info);
                    state = next;
                    matched |= m;
                    p += 1;
                }
                if next_trigger == Some(i) {
                    let (entered, m) = selector.enter_typed_node(info);
                    state = crate::path::Selector::merge(state, entered);
                    matched |= m;
                    t += 1;
                }
                if matched && matches!(rules[i].method, Method::Allow) {
                    allowed = true;
                } else if matched && first.is_none() {
                    first = Some(i);
                    if !is_container {
                        break;
                    }
                }
                if is_container && !state.is_dead() {
                    states.push((i, state));
                }
            }
        }
        let mut gov = first.or(governing);
        if ext_part && !ms && gov.is_some_and(|g| !matches!(rules[g].method, Method::Redact)) {
            // `_birthDate` holds the id and extensions of `birthDate`, not its value: the rule
            // for the value (generalize, date_shift, keep ...) means nothing there, and keeping
            // by it would let the extensions' text through. Only removal carries over; inside,
            // the other rules and the defaults decide.
            first = None;
            gov = None;
        }
        let touched = first.is_some();
        if is_resource {
            let outer = ResourceCtx {
                contained: element == "contained",
                ..ctx.clone()
            };
            return (self.resource(value, gov, Some(&outer)), touched);
        }
        if !known && !parent.ty.is_empty() && gov.is_none() {
            if ms {
                self.fail(&ctx.resource_type, "", "unknown element for FHIR R4");
                return (Outcome::Keep, touched);
            }
            if self.engine.policy.defaults.unknown_elements == Fallback::Redact {
                self.counts.unknown_elements += 1;
                self.record(None, "unknown element", "removed");
                return (Outcome::Remove, touched);
            }
        }
        match value {
            Value::Object(map) => {
                if gov.is_none() && ty == "Extension" && !allowed {
                    let defaults = &self.engine.policy.defaults;
                    let fallback = if element == "modifierExtension" {
                        defaults.modifier_extensions
                    } else {
                        defaults.extensions
                    };
                    if engine_reapply_keeps(self.engine, map) {
                        return (Outcome::Keep, touched);
                    }
                    match fallback {
                        Fallback::DropResource => {
                            self.drop_reason = Some(format!(
                                "{}: unknown modifierExtension at {}",
                                ctx.resource_type,
                                if self.path.is_empty() {
                                    element.to_string()
                                } else {
                                    self.path.join(".")
                                }
                            ));
                            self.record(None, "default (modifier_extensions)", "resource dropped");
                            return (Outcome::Remove, touched);
                        }
                        Fallback::Redact => {
                            self.counts.dropped_extensions += 1;
                            self.record(None, "default (extensions)", "removed");
                            return (Outcome::Remove, touched);
                        }
                        _ => {}
                    }
                }
                if ms
                    && !ext_part
                    && matches!(gov.map(|g| &rules[g].method), Some(Method::Generalize(_)))
                {
                    // The anonymizer generalizes primitive values only.
                    self.fail(
                        &ctx.resource_type,
                        "",
                        "generalize applies to primitive values only",
                    );
                    return (Outcome::Keep, touched);
                }
                let substitute = match first.map(|i| (i, &rules[i].method)) {
                    Some((i, Method::Substitute(replacement))) => Some((i, replacement)),
                    _ => None,
                };
                if substitute.is_some() {
                    self.in_subst += 1;
                }
                let (mut outcome, inner_touched) = self.object(map, ty, type_id, &states, gov, ctx);
                states.clear();
                self.worker.pool.push(std::mem::take(&mut states));
                if !ms && ty == "Extension" && map.len() == 1 && map.contains_key("url") {
                    // Its value and sub-extensions are gone: a bare url says nothing (and would
                    // still say that something was there).
                    outcome = Outcome::Remove;
                }
                if let Some((i, replacement)) = substitute {
                    self.in_subst -= 1;
                    // What is left of the node is what earlier rules handled inside it (the rest
                    // was removed); the replacement fills in around it.
                    let mut kept = std::mem::take(map);
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
                    self.ms_ops |= OP_SUBSTITUTE;
                    self.counts.methods[6] += 1;
                    self.record(Some(i), "", "changed");
                    let empty = value.as_object().is_some_and(Map::is_empty);
                    return (
                        if empty {
                            Outcome::Remove
                        } else {
                            Outcome::Changed
                        },
                        true,
                    );
                }
                (outcome, touched || inner_touched)
            }
            Value::Array(_) => (Outcome::Keep, touched),
            _ => (
                self.leaf(value, element, ty, gov, first.is_some(), parent, ctx),
                touched,
            ),
        }
    }

    #[inline]
    fn record(&mut self, rule: Option<usize>, default_label: &str, outcome: &str) {
        if self.explain.is_some() {
            self.record_entry(rule, default_label, outcome);
        }
    }

    #[cold]
    fn record_entry(&mut self, rule: Option<usize>, default_label: &str, outcome: &str) {
        let Some(explain) = &mut self.explain else {
            return;
        };
        let (rule_path, method) = match rule {
            Some(i) => {
                let r = &self.engine.policy.rules[i];
                (r.selector.text().to_string(), r.method.name().to_string())
            }
            None => (default_label.to_string(), "default".to_string()),
        };
        explain.push(ExplainEntry {
            path: self.path.join(".").replace(".[", "["),
            rule,
            rule_path,
            method,
            outcome: outcome.to_string(),
        });
    }

    fn leaf(
        &mut self,
        value: &mut Value,
        element: &str,
        ty: &str,
        gov: Option<usize>,
        direct: bool,
        parent: &Parent<'_>,
        ctx: &mut ResourceCtx,
    ) -> Outcome {
        let engine = self.engine;
        let Some(i) = gov else {
            let defaults = &engine.policy.defaults;
            let free_text = FREE_TEXT_TYPES.contains(&ty);
            let fallback = if free_text {
                defaults.free_text
            } else {
                defaults.elements
            };
            let outcome = match fallback {
                Fallback::Redact => Outcome::Remove,
                Fallback::Scrub => self.scrub(value, ctx),
                _ => Outcome::Keep,
            };
            if outcome != Outcome::Keep && free_text {
                self.counts.free_text_default += 1;
            }
            if outcome != Outcome::Keep || self.explain.is_some() {
                let label = if free_text {
                    "default (free_text)"
                } else {
                    "default (elements)"
                };
                self.record(None, label, outcome_name(outcome));
            }
            return outcome;
        };
        let method = &engine.policy.rules[i].method;
        if *method == Method::DateShift
            && engine.policy.ms.is_none()
            && engine.policy.defaults.dates_over_89 == Fallback::Redact
            && value.as_str().is_some_and(|text| {
                // Most dates are recent: their year alone says so, without parsing the date.
                let recent = text
                    .get(..4)
                    .and_then(|y| y.parse::<i32>().ok())
                    .is_some_and(|y| y > engine.today.year() - 89);
                !recent && dates::age_in_years(text, engine.today).is_some_and(|age| age > 89)
            })
        {
            // A date that old says the person it is about is over 89 (Safe Harbor): shifting it
            // by at most a year would not hide that.
            self.counts.methods[method.index()] += 1;
            self.record(Some(i), "", "removed");
            return Outcome::Remove;
        }
        if engine.reapply
            && matches!(
                method,
                Method::Pseudonymize | Method::Encrypt | Method::DateShift | Method::Perturb(_)
            )
        {
            self.record(Some(i), "", "kept");
            return Outcome::Keep;
        }
        if matches!(method, Method::Substitute(_)) && !direct {
            // Inside a substituted node: replaced along with it (see `node`).
            return Outcome::Remove;
        }
        let ms = engine.policy.ms.as_ref().filter(|m| m.embedded_keys);
        let ms_mode = engine.policy.ms.is_some();
        let had_value = !value.is_null() && value.as_str() != Some("");
        let outcome = match method {
            Method::Keep => Outcome::Keep,
            Method::Redact => match engine.policy.ms.as_ref() {
                Some(m) => self.ms_redact(
                    value,
                    element,
                    ty,
                    parent,
                    m.partial_dates,
                    m.partial_ages,
                    m.partial_zip,
                ),
                None => Outcome::Remove,
            },
            Method::Pseudonymize => {
                let Value::String(text) = value else {
                    return Outcome::Remove;
                };
                let new = match ms {
                    Some(m) => {
                        if parent.ty == "Reference" && element == "reference" {
                            pseudonym::hmac_reference(&m.crypto_hash_key, text)
                        } else {
                            pseudonym::hmac_hex(&m.crypto_hash_key, text)
                        }
                    }
                    None => {
                        if element == "id" && ty == "id" && fhir_types::is_resource_type(parent.ty)
                        {
                            if ctx.contained {
                                pseudonym::pseudo_local_id(&engine.key, text)
                            } else {
                                pseudonym::pseudo_id(&engine.key, &ctx.resource_type, text)
                            }
                        } else if (parent.ty == "Reference" && element == "reference")
                            || is_bundle_reference(parent.ty, element)
                        {
                            self.worker
                                .references
                                .get_or_insert_with(text, |r| engine.rewrite_reference(r))
                        } else if parent.ty == "Identifier" && element == "value" {
                            pseudonym::pseudo_identifier(
                                &engine.key,
                                parent.system.unwrap_or(""),
                                text,
                            )
                        } else {
                            pseudonym::pseudo_text(&engine.key, text)
                        }
                    }
                };
                if ms_mode && had_value {
                    self.ms_ops |= OP_CRYPTOHASH;
                }
                set_string(value, new)
            }
            Method::Encrypt => match value {
                Value::String(text) => {
                    let c = crypt::encrypt(&engine.key, text);
                    if ms_mode {
                        self.ms_ops |= OP_ENCRYPT;
                    }
                    set_string(value, c)
                }
                _ => Outcome::Remove,
            },
            Method::DateShift => match (value.as_str(), DATE_TYPES.contains(&ty)) {
                (Some(text), true) => match (&engine.policy.ms, ms) {
                    (Some(m), _) => {
                        // A date the tool cannot shift (partial, or over 89 years old) is
                        // redacted instead, as its redact would.
                        let head = ms_date_head(text);
                        let over_89 =
                            dates::age_in_years(head, engine.today).is_some_and(|a| a > 89);
                        let shifted = if over_89 {
                            None
                        } else {
                            let days = if !m.embedded_keys {
                                ctx.offset_days
                            } else if ctx.ms_id_rule < i {
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
                                let partial = m.partial_dates && !over_89;
                                match dates::to_year(head).filter(|_| partial) {
                                    Some(y) => set_string(value, y),
                                    None => Outcome::Remove,
                                }
                            }
                        }
                    }
                    (None, _) => match dates::shift(text, ctx.offset_days) {
                        Some(s) => set_string(value, s),
                        // Not a date we can read: it must not survive as it is.
                        None => Outcome::Remove,
                    },
                },
                _ => Outcome::Keep,
            },
            Method::Generalize(g) => {
                if ms_mode && !value.is_null() {
                    self.ms_ops |= OP_GENERALIZE;
                }
                self.generalize(value, element, ty, g, parent, ctx)
            }
            Method::Substitute(replacement) => {
                self.ms_ops |= OP_SUBSTITUTE;
                *value = replacement.clone();
                Outcome::Changed
            }
            Method::Perturb(p) => match value.as_f64() {
                Some(n) if NUMBER_TYPES.contains(&ty) || ty.is_empty() => {
                    let seed = format!("{}|{}|{}", ctx.seed, self.path.join("."), n);
                    let mut v =
                        methods::perturb(&engine.key, &seed, n, p.span, p.proportional, p.round_to);
                    if matches!(ty, "integer" | "positiveInt" | "unsignedInt") {
                        v = v.round();
                        if ty != "integer" {
                            v = v.max(if ty == "positiveInt" { 1.0 } else { 0.0 });
                        }
                    }
                    *value = eval::number_json(v);
                    if ms_mode {
                        self.ms_ops |= OP_PERTURB;
                    }
                    Outcome::Changed
                }
                _ => Outcome::Keep,
            },
            Method::Scrub => self.scrub(value, ctx),
            Method::Terminology => terminology(value, element, ty, parent),
            // Never governs (see `node`); here only if a policy names a primitive with it.
            Method::Allow => Outcome::Keep,
        };
        self.counts.methods[method.index()] += 1;
        self.record(Some(i), "", outcome_name(outcome));
        outcome
    }

    fn scrub(&mut self, value: &mut Value, ctx: &ResourceCtx) -> Outcome {
        let (Some(scrubber), Value::String(text)) = (&self.engine.scrubber, &*value) else {
            return Outcome::Keep;
        };
        let names: Vec<&str> = ctx.names.iter().map(String::as_str).collect();
        let mut counts = methods::scrub::ScrubCounts::default();
        let new = scrubber.scrub(text, &names, &mut counts);
        if counts.total() == 0 {
            return Outcome::Keep;
        }
        set_string(value, new)
    }

    #[allow(clippy::too_many_arguments)]
    fn ms_redact(
        &mut self,
        value: &mut Value,
        element: &str,
        ty: &str,
        parent: &Parent<'_>,
        partial_dates: bool,
        partial_ages: bool,
        partial_zip: bool,
    ) -> Outcome {
        let engine = self.engine;
        match value {
            Value::Null => return Outcome::Keep,
            // Nothing to label, but nothing to keep either.
            Value::String(text) if text.is_empty() => return Outcome::Remove,
            _ => {}
        }
        if partial_zip
            && element == "postalCode"
            && let Some(text) = value.as_str()
        {
            self.ms_ops |= OP_ABSTRACT;
            let z = methods::ms_zip(text, &engine.policy.defaults.restricted_zip3);
            return set_string(value, z);
        }
        self.ms_ops |= OP_REDACT;
        if partial_dates
            && DATE_TYPES.contains(&ty)
            && let Some(text) = value.as_str()
        {
            let head = ms_date_head(text);
            if dates::age_in_years(head, engine.today).is_some_and(|a| a > 89) {
                return Outcome::Remove;
            }
            return match dates::to_year(head) {
                Some(y) => set_string(value, y),
                None => Outcome::Remove,
            };
        }
        if partial_ages
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

    fn generalize(
        &mut self,
        value: &mut Value,
        element: &str,
        ty: &str,
        g: &Generalize,
        parent: &Parent<'_>,
        ctx: &mut ResourceCtx,
    ) -> Outcome {
        let engine = self.engine;
        match g {
            Generalize::Year { over_89_band } => {
                let Some(text) = value.as_str().filter(|_| DATE_TYPES.contains(&ty)) else {
                    // Not a date (a date's `_x` part is not governed here): nothing to coarsen,
                    // so nothing that may stay.
                    return if engine.policy.ms.is_some() {
                        Outcome::Keep
                    } else {
                        Outcome::Remove
                    };
                };
                if *over_89_band && dates::age_in_years(text, engine.today).is_some_and(|a| a >= 90)
                {
                    ctx.age_band_90 = true;
                    return Outcome::Remove;
                }
                match dates::to_year(text) {
                    Some(y) => set_string(value, y),
                    None => Outcome::Remove,
                }
            }
            Generalize::Month => match value.as_str().filter(|_| DATE_TYPES.contains(&ty)) {
                Some(text) => match dates::to_month(text) {
                    Some(m) => set_string(value, m),
                    None => Outcome::Remove,
                },
                None if engine.policy.ms.is_some() => Outcome::Keep,
                None => Outcome::Remove,
            },
            Generalize::Zip3 => match value.as_str() {
                Some(text) => match methods::zip3(text, &engine.policy.defaults.restricted_zip3) {
                    Some(z) => set_string(value, z),
                    None => Outcome::Remove,
                },
                None => Outcome::Remove,
            },
            Generalize::Age if engine.policy.ms.is_some() => match value.as_f64() {
                Some(n) if n > 89.0 => {
                    *value = Value::from(90);
                    Outcome::Changed
                }
                _ => Outcome::Keep,
            },
            Generalize::Age => age(value, element, ty, parent),
            Generalize::Cases { cases, other } => {
                let mut result = None;
                {
                    let this = Item::Node { value, ty };
                    for (cond, expr) in cases {
                        match eval::eval(cond, std::slice::from_ref(&this), &this) {
                            Ok(r) if eval::truthy(&r) => {
                                match eval::eval(expr, std::slice::from_ref(&this), &this) {
                                    Ok(items) => result = Some(items.first().map(Item::to_json)),
                                    Err(e) => return self.eval_failed(ctx, &e.to_string()),
                                }
                                break;
                            }
                            Ok(_) => {}
                            Err(e) => return self.eval_failed(ctx, &e.to_string()),
                        }
                    }
                }
                match result {
                    Some(Some(new)) => {
                        let new = match (value.is_string(), new) {
                            // Keep the JSON shape of the element: `"20"` stays a number for numbers.
                            (false, Value::String(s)) if value.is_number() => s
                                .parse::<f64>()
                                .map(eval::number_json)
                                .unwrap_or(Value::String(s)),
                            (true, Value::Number(n)) => Value::String(n.to_string()),
                            (_, v) => v,
                        };
                        if new == *value {
                            Outcome::Keep
                        } else {
                            *value = new;
                            Outcome::Changed
                        }
                    }
                    Some(None) => Outcome::Remove,
                    None => match other {
                        Fallback::Keep => Outcome::Keep,
                        _ => Outcome::Remove,
                    },
                }
            }
        }
    }

    fn eval_failed(&mut self, ctx: &ResourceCtx, reason: &str) -> Outcome {
        match self.engine.policy.ms.as_ref().map(|m| m.processing_errors) {
            Some(ProcessingErrors::Keep) => Outcome::Keep,
            _ => {
                self.fail(&ctx.resource_type, "", reason);
                Outcome::Keep
            }
        }
    }
}

/// Where a node sits: its element name, its type (for its children), the type rules match it
/// as, and whether it is the `_x` part of a primitive.
#[derive(Debug, Clone, Copy)]
struct Slot<'a> {
    element: &'a str,
    element_id: ElementId,
    ty: &'a str,
    type_id: TypeId,
    match_ty: &'a str,
    match_type_id: TypeId,
    ext_part: bool,
    /// The element is one of the parent type's (not an unknown JSON key).
    known: bool,
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

/// What a child needs to know about its parent.
struct Parent<'a> {
    ty: &'a str,
    /// What `terminology` and age generalization read from the parent's type.
    kind: SiblingKind,
    system: Option<&'a str>,
    /// The steward's vocabulary (beside the built-in table).
    vocabulary: Option<&'a Vocabulary>,
    /// `terminology` on the parent's display-like child (`Coding.display`,
    /// `CodeableConcept.text`, a quantity's `unit`), decided from its siblings.
    text: Option<TextDecision<'a>>,
    /// For a quantity: years per unit of its value (`mo` -> 1/12), when the unit is a time unit.
    years_per_unit: Option<f64>,
}

/// True for the Bundle elements that hold references: `entry.fullUrl`, `entry.request.url`,
/// `entry.response.location`. They are rewritten like `Reference.reference`, so an entry still
/// matches the references to it.
fn is_bundle_reference(parent_ty: &str, element: &str) -> bool {
    matches!(
        (parent_ty, element),
        ("Bundle.entry", "fullUrl")
            | ("Bundle.entry.request", "url")
            | ("Bundle.entry.response", "location")
    )
}

/// The `terminology` method (see [`Method::Terminology`]).
fn terminology(value: &mut Value, element: &str, ty: &str, parent: &Parent<'_>) -> Outcome {
    // `display` is a Coding's, `text` a CodeableConcept's (neither has the other).
    let display_like = match parent.kind {
        SiblingKind::Coded => matches!(element, "display" | "text"),
        SiblingKind::Quantity => element == "unit",
        SiblingKind::None => false,
    };
    if display_like {
        return match parent.text {
            Some(TextDecision::Keep) => Outcome::Keep,
            Some(TextDecision::Replace(display)) => set_string(value, display.to_string()),
            _ => Outcome::Remove,
        };
    }
    let Some(text) = value.as_str() else {
        return Outcome::Remove;
    };
    let known = if parent.ty == "Reference" && element == "type" {
        fhir_types::is_resource_type(text)
    } else {
        matches!(ty, "uri" | "url" | "canonical" | "oid" | "code")
            && (vocabulary::is_known_system(text)
                || parent.vocabulary.is_some_and(|v| v.has_system(text)))
    };
    if known {
        Outcome::Keep
    } else {
        Outcome::Remove
    }
}

/// `generalize` to `age` (not in anonymizer mode): an age over 89 years becomes 90 years in the
/// quantity's own unit (1080 `mo`, not 90 `mo`); a number whose unit is not a time unit cannot be
/// read as an age, so over 89 it is removed. The quantity's other parts: codes stay, the unit and
/// system as `terminology` decides, anything else is removed.
fn age(value: &mut Value, element: &str, ty: &str, parent: &Parent<'_>) -> Outcome {
    if let Some(n) = value.as_f64() {
        let years_per_unit = parent
            .years_per_unit
            .or((parent.kind != SiblingKind::Quantity).then_some(1.0));
        return match years_per_unit {
            Some(y) if n * y > 89.0 => {
                *value = eval::number_json((90.0 / y).round());
                Outcome::Changed
            }
            Some(_) => Outcome::Keep,
            None if n > 89.0 => Outcome::Remove,
            None => Outcome::Keep,
        };
    }
    match ty {
        "code" => Outcome::Keep,
        _ => terminology(value, element, ty, parent),
    }
}

/// Quantity and the datatypes built on it.
fn is_quantity(ty: &str) -> bool {
    matches!(
        ty,
        "Quantity" | "Age" | "Duration" | "Distance" | "Count" | "SimpleQuantity" | "MoneyQuantity"
    )
}

/// Years per unit of a time unit (UCUM code or a plain word); `None` for other units.
fn years_per_unit(unit: &str) -> Option<f64> {
    Some(match unit {
        "a" | "year" | "years" | "yr" | "yrs" | "Year" | "Years" => 1.0,
        "mo" | "month" | "months" | "Month" | "Months" => 1.0 / 12.0,
        "wk" | "week" | "weeks" | "Week" | "Weeks" => 7.0 / 365.25,
        "d" | "day" | "days" | "Day" | "Days" => 1.0 / 365.25,
        "h" | "hour" | "hours" => 1.0 / (365.25 * 24.0),
        "min" | "minute" | "minutes" => 1.0 / (365.25 * 24.0 * 60.0),
        "s" | "second" | "seconds" => 1.0 / (365.25 * 24.0 * 3600.0),
        _ => return None,
    })
}

/// `terminology` for the display-like child of a Coding, CodeableConcept or quantity.
fn text_decision<'v>(
    vocabulary: Option<&'v Vocabulary>,
    ty: &str,
    map: &Map<String, Value>,
) -> Option<TextDecision<'v>> {
    fn str_of<'m>(m: &'m Map<String, Value>, k: &str) -> Option<&'m str> {
        m.get(k).and_then(Value::as_str)
    }
    fn pair(m: &Map<String, Value>) -> Option<(&str, &str)> {
        Some((m.get("system")?.as_str()?, m.get("code")?.as_str()?))
    }
    match ty {
        "Coding" => {
            let display = str_of(map, "display")?;
            Some(vocabulary::decide_text_with(vocabulary, display, pair(map)))
        }
        "CodeableConcept" => {
            let text = str_of(map, "text")?;
            let codings = map.get("coding").and_then(Value::as_array);
            let pairs = codings
                .into_iter()
                .flatten()
                .filter_map(|c| c.as_object().and_then(pair));
            Some(vocabulary::decide_text_with(vocabulary, text, pairs))
        }
        _ => {
            let unit = str_of(map, "unit")?;
            let known = str_of(map, "code") == Some(unit)
                || vocabulary::is_known_unit(unit)
                || vocabulary.is_some_and(|v| v.has_unit(unit))
                || years_per_unit(unit).is_some();
            Some(if known {
                TextDecision::Keep
            } else {
                TextDecision::Remove
            })
        }
    }
}

/// True when a value's JSON shape is not its FHIR type's: an array inside an array, a primitive
/// given as an object or array or as the wrong JSON type (a `birthDate` as a number), a complex
/// type given as a scalar. Such values are removed (fail closed), never read as text.
fn malformed(value: &Value, shape: Shape) -> bool {
    match value {
        Value::Array(_) => true,
        Value::Null => false,
        Value::Object(_) => shape != Shape::Object,
        Value::Bool(_) => shape != Shape::Bool,
        Value::Number(_) => shape != Shape::Number,
        Value::String(_) => shape != Shape::String,
    }
}

/// The date the anonymizer reads from a value: its leading `YYYY-MM-DD` when there is one (it
/// matches a pattern, so `2001-01-01Z` is read as `2001-01-01`), else the whole text.
fn ms_date_head(text: &str) -> &str {
    text.get(..10)
        .filter(|head| dates::is_full_date(head))
        .unwrap_or(text)
}

fn set_string(value: &mut Value, new: String) -> Outcome {
    if value.as_str() == Some(new.as_str()) {
        return Outcome::Keep;
    }
    *value = Value::String(new);
    Outcome::Changed
}

/// In re-apply mode the engine's own 90+ age-band extension stays (it replaced a birth date that
/// is gone from the lake, so it cannot be derived again).
fn engine_reapply_keeps(engine: &PolicyEngine, ext: &Map<String, Value>) -> bool {
    engine.reapply && ext.get("url").and_then(Value::as_str) == Some(AGE_BAND_EXTENSION_URL)
}

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

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn engine(policy_text: &str) -> PolicyEngine {
        let policy = Policy::parse(policy_text, "test", "test").expect("policy");
        let key = DeidKey::from_bytes(&[7; 32], "test").expect("key");
        PolicyEngine::new(policy, key)
            .with_today(NaiveDate::from_ymd_opt(2025, 1, 1).expect("date"))
    }

    fn run(engine: &PolicyEngine, mut resource: Value) -> Value {
        engine.deidentify(&mut resource).expect("deidentify");
        resource
    }

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

    #[test]
    fn an_unknown_resource_type_is_not_echoed() {
        let e = engine("[[rules]]\npath = \"Patient.name\"\nmethod = \"redact\"\n");
        let mut bad = json!({"resourceType": "Jane Doe", "id": "x"});
        let err = e.deidentify(&mut bad).expect_err("unknown type");
        assert!(!err.to_string().contains("Jane"), "{err}");
        let (result, _) = e.explain(&mut bad);
        let err = result.expect_err("unknown type");
        assert!(!err.to_string().contains("Jane"), "{err}");
    }

    #[test]
    fn primitive_extension_arrays_keep_their_positions() {
        // `_given[i]` belongs to `given[i]`: removing an entry must not shift the others.
        let e = engine(
            r#"
            [[rules]]
            path = "nodesByType('Extension')"
            method = "redact"
            "#,
        );
        let out = run(
            &e,
            json!({"resourceType": "Patient", "name": [{
                "given": ["A", "B", "C"],
                "_given": [null, {"id": "g2", "extension": [{"url": "u", "valueString": "x"}]},
                           {"extension": [{"url": "u", "valueString": "y"}]}]
            }]}),
        );
        assert_eq!(out["name"][0]["_given"], json!([null, {"id": "g2"}, null]));
        assert_eq!(out["name"][0]["given"], json!(["A", "B", "C"]));
    }

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
