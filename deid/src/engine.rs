//! The policy engine: applies a [`Policy`] to resources, in place, in one walk per resource.
//!
//! Semantics: for every node, the governing rule is the first rule (in policy order) that matches
//! the node or one of its ancestors. So a rule covers its whole subtree, except where an earlier
//! rule matches something inside it (`nodesByType('HumanName').use: keep` before
//! `nodesByType('HumanName'): redact` keeps `use`). Nodes no rule governs follow the policy's
//! defaults (free text, extensions, modifier extensions, unknown elements). Methods act on
//! primitive values; `substitute` replaces a whole node, keeping descendants an earlier rule
//! already handled; emptied objects and arrays are pruned.

use std::sync::atomic::{AtomicU64, Ordering};

use chrono::NaiveDate;
use serde_json::{Map, Value};

use crate::fhir_types;
use crate::key::DeidKey;
use crate::methods::{self, crypt, dates, pseudonym, scrub::Scrubber};
use crate::path::{Item, MatchState, NodeInfo, eval};
use crate::policy::{Fallback, Generalize, METHOD_NAMES, Method, Policy, ms::ProcessingErrors};
use crate::risk::AGE_BAND_EXTENSION_URL;
use crate::{Deidentifier, Disposition, Error, Result};

/// Per-run counters, safe to update from every worker.
#[derive(Debug, Default)]
struct Counters {
    methods: [AtomicU64; 9],
    free_text_default: AtomicU64,
    unknown_elements: AtomicU64,
    dropped_extensions: AtomicU64,
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
}

#[derive(Debug, Default, Clone, Copy)]
struct LocalCounts {
    methods: [u64; 9],
    free_text_default: u64,
    unknown_elements: u64,
    dropped_extensions: u64,
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
}

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
    ms_offset: i64,
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
}

const FREE_TEXT_TYPES: [&str; 3] = ["string", "markdown", "xhtml"];
const DATE_TYPES: [&str; 3] = ["date", "dateTime", "instant"];
const NUMBER_TYPES: [&str; 4] = ["decimal", "integer", "positiveInt", "unsignedInt"];

impl PolicyEngine {
    /// An engine for `policy` with `key`.
    pub fn new(policy: Policy, key: DeidKey) -> Self {
        let uses_scrub = policy.defaults.free_text == Fallback::Scrub
            || policy.rules.iter().any(|r| r.method == Method::Scrub);
        Self {
            scrubber: uses_scrub.then(Scrubber::new),
            policy,
            key,
            today: chrono::Utc::now().date_naive(),
            counters: Counters::default(),
        }
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
        c.resources.fetch_add(1, Ordering::Relaxed);
        if dropped {
            c.dropped_resources.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The source patient id of a resource's compartment (before pseudonymization).
    fn patient_of(resource: &Value) -> Option<String> {
        let rt = resource.get("resourceType")?.as_str()?;
        if rt == "Patient" {
            return resource.get("id")?.as_str().map(str::to_string);
        }
        for field in ["subject", "patient", "beneficiary"] {
            let Some(reference) = resource
                .get(field)
                .and_then(|r| r.get("reference"))
                .and_then(Value::as_str)
            else {
                continue;
            };
            if let Some(uuid) = reference.strip_prefix("urn:uuid:") {
                return Some(uuid.to_string());
            }
            let mut parts = reference.rsplit('/');
            let (id, ty) = (parts.next(), parts.next());
            if ty == Some("Patient") {
                return id.map(str::to_string);
            }
        }
        None
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
        }
    }

    fn run(&mut self, resource: &mut Value) -> Result<Disposition> {
        let rt = resource
            .get("resourceType")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        if self.explain.is_some() {
            self.path.push(rt.clone());
        }
        let outcome = self.resource(resource, None, None);
        let disposition = if let Some(error) = self.error.take() {
            match self.engine.policy.ms.as_ref().map(|m| m.processing_errors) {
                Some(ProcessingErrors::Skip) => {
                    *resource = Value::Object(Map::new());
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
            self.fail(&rt, "", "unknown resource type");
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
                ..outer.clone()
            },
            None => {
                let scope = match PolicyEngine::patient_of(res) {
                    Some(patient) => pseudonym::pseudo_id(&engine.key, "Patient", &patient),
                    None => format!("{rt}/{id}"),
                };
                let ms_offset = match &engine.policy.ms {
                    Some(ms) => ms.date_shift_fixed_offset.unwrap_or_else(|| {
                        let prefix = match outer {
                            Some(o) if ms.date_shift_scope == "resource" => o.ms_prefix(),
                            _ => id.clone(),
                        };
                        dates::ms_offset(&prefix, &ms.date_shift_key)
                    }),
                    None => 0,
                };
                ResourceCtx {
                    resource_type: rt.clone(),
                    seed: format!("{rt}/{id}"),
                    offset_days: dates::offset_days(
                        &engine.key,
                        &scope,
                        engine.policy.defaults.date_shift_days,
                    ),
                    ms_offset,
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
        let mut states = Vec::new();
        let mut first = None;
        {
            let root = NodeInfo {
                element: "",
                ty: &rt,
                value: res,
            };
            for (i, rule) in self.rules().iter().enumerate() {
                if governing.is_some_and(|g| i >= g) {
                    break;
                }
                let (state, matched) = rule.selector.start(root);
                if matched && first.is_none() {
                    first = Some(i);
                }
                if !state.is_dead() {
                    states.push((i, state));
                }
            }
        }
        let gov = first.or(governing);
        let Value::Object(map) = res else {
            return Outcome::Keep;
        };
        let (outcome, _) = self.object(map, &rt, &states, gov, &mut ctx);
        if ctx.age_band_90 {
            if let Value::Object(map) = res {
                let ext = serde_json::json!({"url": AGE_BAND_EXTENSION_URL, "valueString": "90+"});
                match map.get_mut("extension") {
                    Some(Value::Array(list)) => list.push(ext),
                    _ => {
                        map.insert("extension".into(), Value::Array(vec![ext]));
                    }
                }
                return Outcome::Changed;
            }
        }
        outcome
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
        let mut removed_any = false;
        let mut changed = false;
        let mut touched = false;
        let explaining = self.explain.is_some();
        for (key, value) in map.iter_mut() {
            if key == "resourceType" {
                continue;
            }
            let child = fhir_types::child(ty, key);
            let (element, child_ty): (&str, &str) = match child {
                Some(c) => (c.element, c.type_code),
                None => (key.as_str(), ""),
            };
            let parent = Parent {
                ty,
                system: system.as_deref(),
                known: child.is_some(),
            };
            if explaining {
                self.path.push(key.clone());
            }
            let outcome = match value {
                Value::Array(items) => {
                    let mut any_changed = false;
                    for (i, item) in items.iter_mut().enumerate() {
                        if explaining {
                            self.path.push(format!("[{i}]"));
                        }
                        let (o, t) =
                            self.node(item, element, child_ty, states, governing, &parent, ctx);
                        touched |= t;
                        if explaining {
                            self.path.pop();
                        }
                        match o {
                            Outcome::Remove => *item = Value::Null,
                            Outcome::Changed => any_changed = true,
                            Outcome::Keep => {}
                        }
                    }
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
                _ => {
                    let (o, t) =
                        self.node(value, element, child_ty, states, governing, &parent, ctx);
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

    #[allow(clippy::too_many_arguments)]
    fn node(
        &mut self,
        value: &mut Value,
        element: &str,
        ty: &str,
        parent_states: &[(usize, MatchState)],
        governing: Option<usize>,
        parent: &Parent<'_>,
        ctx: &mut ResourceCtx,
    ) -> (Outcome, bool) {
        if value.is_null() {
            return (Outcome::Keep, false);
        }
        let rules = self.rules();
        let mut states = Vec::new();
        let mut first = None;
        let is_resource = ty == "Resource";
        let node_ty: &str = if is_resource {
            value
                .get("resourceType")
                .and_then(Value::as_str)
                .unwrap_or("Resource")
        } else {
            ty
        };
        let node_ty = node_ty.to_string();
        {
            let info = NodeInfo {
                element,
                ty: &node_ty,
                value,
            };
            for &(i, state) in parent_states {
                if governing.is_some_and(|g| i >= g) {
                    break;
                }
                let (next, matched) = rules[i].selector.step(state, info);
                if matched && first.is_none() {
                    first = Some(i);
                }
                if !next.is_dead() {
                    states.push((i, next));
                }
            }
        }
        let gov = first.or(governing);
        let touched = first.is_some();
        if is_resource {
            let outer = ResourceCtx {
                contained: element == "contained",
                ..ctx.clone()
            };
            return (self.resource(value, gov, Some(&outer)), touched);
        }
        if !parent.known && !parent.ty.is_empty() && gov.is_none() {
            if self.engine.policy.ms.is_some() {
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
                if gov.is_none() && ty == "Extension" {
                    let defaults = &self.engine.policy.defaults;
                    let fallback = if element == "modifierExtension" {
                        defaults.modifier_extensions
                    } else {
                        defaults.extensions
                    };
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
                let (outcome, inner_touched) = self.object(map, ty, &states, gov, ctx);
                if let (Some(i), Some(Method::Substitute(replacement))) =
                    (first, gov.map(|g| &rules[g].method))
                {
                    debug_assert_eq!(Some(i), gov);
                    let mut new = replacement.clone();
                    if let (Value::Object(new_map), true) = (&mut new, inner_touched) {
                        // Keep what an earlier rule did inside the substituted node.
                        for (k, v) in map.iter() {
                            new_map.insert(k.clone(), v.clone());
                        }
                    }
                    *value = new;
                    self.counts.methods[6] += 1;
                    self.record(Some(i), "", "changed");
                    return (Outcome::Changed, true);
                }
                (outcome, touched || inner_touched)
            }
            Value::Array(_) => (Outcome::Keep, touched),
            _ => (self.leaf(value, element, ty, gov, parent, ctx), touched),
        }
    }

    fn record(&mut self, rule: Option<usize>, default_label: &str, outcome: &str) {
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
        parent: &Parent<'_>,
        ctx: &mut ResourceCtx,
    ) -> Outcome {
        let engine = self.engine;
        let Some(i) = gov else {
            let defaults = &engine.policy.defaults;
            let fallback = if FREE_TEXT_TYPES.contains(&ty) {
                defaults.free_text
            } else {
                defaults.elements
            };
            let outcome = match fallback {
                Fallback::Redact => Outcome::Remove,
                Fallback::Scrub => self.scrub(value, ctx),
                _ => Outcome::Keep,
            };
            if outcome != Outcome::Keep && FREE_TEXT_TYPES.contains(&ty) {
                self.counts.free_text_default += 1;
            }
            if outcome != Outcome::Keep || self.explain.is_some() {
                let label = if FREE_TEXT_TYPES.contains(&ty) {
                    "default (free_text)"
                } else {
                    "default (elements)"
                };
                self.record(None, label, outcome_name(outcome));
            }
            return outcome;
        };
        let method = &engine.policy.rules[i].method;
        let ms = engine.policy.ms.as_ref().filter(|m| m.embedded_keys);
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
                                text.clone()
                            } else {
                                pseudonym::pseudo_id(&engine.key, &ctx.resource_type, text)
                            }
                        } else if parent.ty == "Reference" && element == "reference" {
                            pseudonym::rewrite_reference(&engine.key, text)
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
                set_string(value, new)
            }
            Method::Encrypt => match value {
                Value::String(text) => {
                    let c = crypt::encrypt(&engine.key, text);
                    set_string(value, c)
                }
                _ => Outcome::Remove,
            },
            Method::DateShift => match (value.as_str(), DATE_TYPES.contains(&ty)) {
                (Some(text), true) => match (&engine.policy.ms, ms) {
                    (Some(m), _) => {
                        if dates::age_in_years(text, engine.today).is_some_and(|a| a > 89) {
                            Outcome::Remove
                        } else if !dates::is_full_date(text) {
                            if m.partial_dates {
                                match dates::to_year(text) {
                                    Some(y) => set_string(value, y),
                                    None => Outcome::Remove,
                                }
                            } else {
                                Outcome::Remove
                            }
                        } else {
                            let days = if m.embedded_keys {
                                ctx.ms_offset
                            } else {
                                ctx.offset_days
                            };
                            match dates::ms_shift(text, days) {
                                Some(s) => set_string(value, s),
                                None => Outcome::Remove,
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
            Method::Generalize(g) => self.generalize(value, ty, g, ctx),
            Method::Substitute(replacement) => {
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
                    Outcome::Changed
                }
                _ => Outcome::Keep,
            },
            Method::Scrub => self.scrub(value, ctx),
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
        if partial_dates && DATE_TYPES.contains(&ty) {
            if let Some(text) = value.as_str() {
                if dates::age_in_years(text, engine.today).is_some_and(|a| a > 89) {
                    return Outcome::Remove;
                }
                return match dates::to_year(text) {
                    Some(y) => set_string(value, y),
                    None => Outcome::Remove,
                };
            }
        }
        if partial_ages && parent.ty == "Age" && element == "value" {
            if let Some(n) = value.as_f64() {
                return if n > 89.0 {
                    Outcome::Remove
                } else {
                    Outcome::Keep
                };
            }
        }
        if partial_zip && element == "postalCode" {
            if let Some(text) = value.as_str() {
                let z = methods::ms_zip(text, &engine.policy.defaults.restricted_zip3);
                return set_string(value, z);
            }
        }
        Outcome::Remove
    }

    fn generalize(
        &mut self,
        value: &mut Value,
        ty: &str,
        g: &Generalize,
        ctx: &mut ResourceCtx,
    ) -> Outcome {
        let engine = self.engine;
        match g {
            Generalize::Year { over_89_band } => {
                let Some(text) = value.as_str().filter(|_| DATE_TYPES.contains(&ty)) else {
                    return Outcome::Keep;
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
                None => Outcome::Keep,
            },
            Generalize::Zip3 => match value.as_str() {
                Some(text) => match methods::zip3(text, &engine.policy.defaults.restricted_zip3) {
                    Some(z) => set_string(value, z),
                    None => Outcome::Remove,
                },
                None => Outcome::Remove,
            },
            Generalize::Age => match value.as_f64() {
                Some(n) if n > 89.0 => {
                    *value = Value::from(90);
                    Outcome::Changed
                }
                _ => Outcome::Keep,
            },
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

/// What a child needs to know about its parent.
struct Parent<'a> {
    ty: &'a str,
    system: Option<&'a str>,
    known: bool,
}

fn set_string(value: &mut Value, new: String) -> Outcome {
    if value.as_str() == Some(new.as_str()) {
        return Outcome::Keep;
    }
    *value = Value::String(new);
    Outcome::Changed
}

fn outcome_name(o: Outcome) -> &'static str {
    match o {
        Outcome::Keep => "kept",
        Outcome::Changed => "changed",
        Outcome::Remove => "removed",
    }
}

impl ResourceCtx {
    fn ms_prefix(&self) -> String {
        self.seed
            .split('#')
            .next()
            .unwrap_or("")
            .rsplit('/')
            .next()
            .unwrap_or("")
            .to_string()
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
        Walk::new(self, false).run(resource)
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
