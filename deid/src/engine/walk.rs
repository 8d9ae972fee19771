//! The one walk per resource: from the root down, every node steps the rule states its parent
//! carried (and enters the global `nodesByType` rules its type triggers), so the governing rule of
//! every node is known without matching any rule path twice. Containers hand their live states on
//! to their children; leaves go to [`apply`](super::apply) with their governing rule.

use fhirlake_fhir::types::{self as fhir_types, Children, ElementId, TypeId};
use serde_json::{Map, Value};

use super::{
    ExplainEntry, LocalCounts, Outcome, PolicyEngine, Shape, SiblingKind, apply, ms_compat,
};
use crate::methods::{self, dates, memo::Memo};
use crate::path::eval::EvalError;
use crate::path::{MatchState, Node};
use crate::policy::{Fallback, Method, Rule, ms::ProcessingErrors};
use crate::risk::AGE_BAND_EXTENSION_URL;
use crate::vocabulary::{TextDecision, Vocabulary};
use crate::{Disposition, Error, Result, RuleError};

/// Context of the resource being walked.
#[derive(Debug, Clone)]
pub(super) struct ResourceCtx {
    pub(super) resource_type: String,
    /// Original `Type/id` (a seed for perturbation).
    pub(super) seed: String,
    pub(super) offset_days: i64,
    /// The anonymizer's offset for dates processed before the rule governing the root
    /// resource's `id` (prefix: the original id) ...
    pub(super) ms_offset_before: i64,
    /// ... and after it (prefix: the id as that rule left it). The same for nested resources,
    /// which the tool processes after their root.
    pub(super) ms_offset_after: i64,
    /// Index of the rule governing the root resource's `id` (`usize::MAX`: none).
    pub(super) ms_id_rule: usize,
    pub(super) contained: bool,
    pub(super) names: Vec<String>,
    pub(super) age_band_90: bool,
}

/// One resource's walk: what it counted, why it dropped the resource or failed, and (for
/// `explain`) the path it is at.
pub(super) struct Walk<'e> {
    pub(super) engine: &'e PolicyEngine,
    pub(super) counts: LocalCounts,
    drop_reason: Option<String>,
    error: Option<Error>,
    pub(super) explain: Option<Vec<ExplainEntry>>,
    pub(super) path: Vec<String>,
    /// Operations done in the current resource (anonymizer mode: `meta.security` labels).
    pub(super) ms_ops: u8,
    /// Depth of `substitute` subtrees being walked (array placeholders are kept inside them).
    in_subst: u32,
    /// What this worker thread keeps between resources.
    pub(super) worker: Worker,
}

/// What a worker thread keeps from resource to resource, for one engine: spare rule-state
/// vectors (reused from node to node instead of allocated per container) and memos of keyed
/// hashes (which depend on the engine's key).
#[derive(Debug, Default)]
pub(super) struct Worker {
    /// [`PolicyEngine::id`] of the engine the memos belong to.
    pub(super) engine: u64,
    pub(super) pool: Vec<Vec<(usize, MatchState)>>,
    /// `Reference.reference` rewrites.
    pub(super) references: Memo<String>,
    /// Date offsets of patients, by source patient id.
    pub(super) offsets: Memo<i64>,
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

/// What the rules decided for a node.
#[derive(Debug, Clone, Copy)]
struct Governed {
    /// The first rule matching the node itself.
    first: Option<usize>,
    /// The governing rule: `first` or the one governing an ancestor.
    gov: Option<usize>,
    /// An `allow` rule matched: an extension passes the allow-list (it governs nothing).
    allowed: bool,
}

/// What a child needs to know about its parent.
pub(super) struct Parent<'a> {
    pub(super) ty: &'a str,
    /// What `terminology` and age generalization read from the parent's type.
    pub(super) kind: SiblingKind,
    pub(super) system: Option<&'a str>,
    /// The steward's vocabulary (beside the built-in table).
    pub(super) vocabulary: Option<&'a Vocabulary>,
    /// `terminology` on the parent's display-like child (`Coding.display`,
    /// `CodeableConcept.text`, a quantity's `unit`), decided from its siblings.
    pub(super) text: Option<TextDecision<'a>>,
    /// For a quantity: years per unit of its value (`mo` -> 1/12), when the unit is a time unit.
    pub(super) years_per_unit: Option<f64>,
}

impl<'e> Walk<'e> {
    pub(super) fn new(engine: &'e PolicyEngine, explain: bool) -> Self {
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

    pub(super) fn run(&mut self, resource: &mut Value) -> Result<Disposition> {
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
                    *resource = ms_compat::skipped_resource(&rt);
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
                // Everything was redacted; keep the resource type so the result is still a
                // resource.
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

    pub(super) fn rules(&self) -> &'e [Rule] {
        &self.engine.policy.rules
    }

    /// Walks a resource (the root, or one inside a Bundle, `contained` or a substituted node).
    pub(super) fn resource(
        &mut self,
        res: &mut Value,
        governing: Option<usize>,
        outer: Option<&ResourceCtx>,
    ) -> Outcome {
        let rt = res
            .get("resourceType")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        if !fhir_types::is_resource_type(&rt) {
            // The value is not named: a `resourceType` that is no type may hold anything.
            self.fail("Resource", RuleError::UnknownResourceType);
            return Outcome::Keep;
        }
        let id = res
            .get("id")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        let contained = outer.is_some_and(|o| o.contained);
        let mut ctx = self.resource_ctx(res, &rt, &id, outer);
        let type_id = fhir_types::type_id(&rt);
        let mut states = self.worker.pool.pop().unwrap_or_default();
        let first = self.start_root(res, &rt, type_id, governing, &mut states);
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
        if self.engine.policy.ms.is_some() {
            outcome = ms_compat::finish_resource(map, outcome, contained, mine);
        }
        if ctx.age_band_90 {
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

    /// The context of a resource: a contained one inherits its container's (patient, offsets,
    /// names); any other gets its own.
    fn resource_ctx(
        &mut self,
        res: &Value,
        rt: &str,
        id: &str,
        outer: Option<&ResourceCtx>,
    ) -> ResourceCtx {
        let engine = self.engine;
        let contained = outer.is_some_and(|o| o.contained);
        if let Some(outer) = outer.filter(|_| contained) {
            return ResourceCtx {
                resource_type: rt.to_string(),
                seed: format!("{}#{rt}/{id}", outer.seed),
                contained: true,
                names: outer.names.clone(),
                age_band_90: false,
                ms_offset_before: outer.ms_offset_after,
                ms_id_rule: usize::MAX,
                ..outer.clone()
            };
        }
        let shift_days = engine.policy.defaults.date_shift_days;
        let offset_days = match engine.patient_scope(res, &mut self.worker) {
            Some(days) => days,
            None => dates::offset_days(&engine.key, &format!("{rt}/{id}"), shift_days),
        };
        let (ms_offset_before, ms_offset_after, ms_id_rule) = self.ms_offsets(res, rt, id, outer);
        ResourceCtx {
            resource_type: rt.to_string(),
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

    /// Starts the rules that can apply at a resource root (those before `governing`), pushing
    /// the live states to `states`. Returns the first rule matching the root itself.
    fn start_root(
        &self,
        res: &Value,
        rt: &str,
        type_id: TypeId,
        governing: Option<usize>,
        states: &mut Vec<(usize, MatchState)>,
    ) -> Option<usize> {
        let engine = self.engine;
        let root = Node {
            element: "",
            element_id: ElementId::UNKNOWN,
            ty: rt,
            type_id,
            value: res,
        };
        let candidates = engine.root_rules.get(rt).unwrap_or(&engine.all_rules);
        let mut first = None;
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
        first
    }

    /// Records the first error of the resource (at the current path): the walk goes on, and
    /// [`Walk::run`] returns it (or skips the resource, as the anonymizer's
    /// `processingErrors` says).
    pub(super) fn fail(&mut self, resource_type: &str, reason: RuleError) {
        if self.error.is_none() {
            self.error = Some(Error::Rule {
                resource_type: resource_type.to_string(),
                path: self.path.join("."),
                reason,
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
        // The same for every child (built once: it is passed to every node).
        let parent = self.parent(map, ty, type_id, system.as_deref());
        let mut removed_any = false;
        let mut changed = false;
        let mut touched = false;
        let children = Children::of_id(type_id);
        for (key, value) in map.iter_mut() {
            let Some((outcome, t)) =
                self.child(key, value, children, states, governing, &parent, ctx)
            else {
                continue;
            };
            touched |= t;
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

    /// What the children of an object of type `ty` need to know about it.
    fn parent<'a>(
        &self,
        map: &Map<String, Value>,
        ty: &'a str,
        type_id: TypeId,
        system: Option<&'a str>,
    ) -> Parent<'a>
    where
        'e: 'a,
    {
        let ms = self.engine.policy.ms.is_some();
        let vocabulary = self.engine.policy.vocabulary.as_deref();
        let kind = match type_id.index().and_then(|i| self.engine.siblings.get(i)) {
            Some(kind) if !ms => *kind,
            _ => SiblingKind::None,
        };
        let (text, years) = if kind == SiblingKind::None {
            (None, None)
        } else if kind == SiblingKind::Coded {
            (apply::text_decision(vocabulary, ty, map), None)
        } else {
            let (code, unit) = (map.get("code"), map.get("unit"));
            let unit = if code.is_none() && unit.is_none() {
                // A quantity an age rule names, with no unit: an age in years (`onsetRange`).
                Some(1.0)
            } else {
                code.and_then(Value::as_str)
                    .and_then(apply::years_per_unit)
                    .or_else(|| unit.and_then(Value::as_str).and_then(apply::years_per_unit))
            };
            (apply::text_decision(vocabulary, ty, map), unit)
        };
        Parent {
            ty,
            kind,
            system,
            vocabulary,
            text,
            years_per_unit: years,
        }
    }

    /// Walks the value under `key` of an object. `None` for the `resourceType` of a resource
    /// (not walked); else its outcome and whether an earlier rule acted inside.
    #[inline(always)]
    #[allow(clippy::too_many_arguments)]
    fn child(
        &mut self,
        key: &str,
        value: &mut Value,
        children: Children,
        states: &[(usize, MatchState)],
        governing: Option<usize>,
        parent: &Parent<'_>,
        ctx: &mut ResourceCtx,
    ) -> Option<(Outcome, bool)> {
        let ms = self.engine.policy.ms.is_some();
        let explaining = self.explain.is_some();
        let entry = children.entry(key);
        if key == "resourceType" && entry.is_none() {
            // A resource's type (no element of it: `ExampleScenario.instance.resourceType`
            // is one, and is walked like any code).
            return None;
        }
        let child = entry.map(|e| e.child);
        let (element, element_id, child_ty, child_type_id) = match entry {
            Some(e) => (e.child.element, e.element_id, e.child.type_code, e.type_id),
            None => (key, fhir_types::element_id(key), "", TypeId::UNKNOWN),
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
                self.path.push(key.to_string());
            }
            self.counts.malformed += 1;
            self.record(None, "malformed value", "removed");
            if explaining {
                self.path.pop();
            }
            return Some((Outcome::Remove, false));
        }
        // Repeating elements written as a single value come out as arrays (as the tool
        // serializes them).
        let wrapped =
            ms && child.is_some_and(|c| c.is_array) && !value.is_array() && !value.is_null();
        if wrapped {
            let single = std::mem::take(value);
            *value = Value::Array(vec![single]);
        }
        if explaining {
            self.path.push(key.to_string());
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
        let (mut outcome, touched) = match value {
            Value::Array(items) => self.array(items, slot, states, governing, parent, ctx),
            _ => self.node(value, slot, states, governing, parent, ctx),
        };
        if explaining {
            self.path.pop();
        }
        if wrapped && outcome == Outcome::Keep {
            outcome = Outcome::Changed;
        }
        Some((outcome, touched))
    }

    /// Walks the items of a repeating element.
    fn array(
        &mut self,
        items: &mut Vec<Value>,
        slot: Slot<'_>,
        states: &[(usize, MatchState)],
        governing: Option<usize>,
        parent: &Parent<'_>,
        ctx: &mut ResourceCtx,
    ) -> (Outcome, bool) {
        let explaining = self.explain.is_some();
        let mut any_changed = false;
        let mut any_removed = false;
        let mut touched = false;
        for (i, item) in items.iter_mut().enumerate() {
            if explaining {
                self.path.push(format!("[{i}]"));
            }
            let (o, t) = self.node(item, slot, states, governing, parent, ctx);
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
        let outcome = if slot.ext_part || self.in_subst > 0 {
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
        };
        (outcome, touched)
    }

    /// Walks one node (an object, or a primitive value): decides its governing rule, then walks
    /// its children or applies the rule's method.
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
        let rules = self.rules();
        let ms = self.engine.policy.ms.is_some();
        if !ms
            && let Some(shape) = slot.type_id.index().and_then(|i| self.engine.shapes.get(i))
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
        let mut governed = self.match_rules(
            value,
            slot,
            parent_states,
            governing,
            is_container,
            &mut states,
        );
        if slot.ext_part
            && !ms
            && governed
                .gov
                .is_some_and(|g| !matches!(rules[g].method, Method::Redact))
        {
            // `_birthDate` holds the id and extensions of `birthDate`, not its value: the rule
            // for the value (generalize, date_shift, keep ...) means nothing there, and keeping
            // by it would let the extensions' text through. Only removal carries over; inside,
            // the other rules and the defaults decide.
            governed.first = None;
            governed.gov = None;
        }
        let touched = governed.first.is_some();
        if slot.ty == "Resource" {
            let outer = ResourceCtx {
                contained: slot.element == "contained",
                ..ctx.clone()
            };
            return (self.resource(value, governed.gov, Some(&outer)), touched);
        }
        if !slot.known && !parent.ty.is_empty() && governed.gov.is_none() {
            if ms {
                self.fail(&ctx.resource_type, RuleError::UnknownElement);
                return (Outcome::Keep, touched);
            }
            if self.engine.policy.defaults.unknown_elements == Fallback::Redact {
                self.counts.unknown_elements += 1;
                self.record(None, "unknown element", "removed");
                return (Outcome::Remove, touched);
            }
        }
        match value {
            Value::Object(_) => self.object_node(value, slot, states, governed, ctx),
            Value::Array(_) => (Outcome::Keep, touched),
            _ => (
                self.leaf(
                    value,
                    slot.element,
                    slot.ty,
                    governed.gov,
                    touched,
                    parent,
                    ctx,
                ),
                touched,
            ),
        }
    }

    /// Steps the rule states the parent carried and enters the rules this node's type triggers,
    /// in rule order, up to `governing`. A container keeps the live states in `states` (for its
    /// children); a leaf stops at its first match.
    #[inline(always)]
    fn match_rules(
        &self,
        value: &Value,
        slot: Slot<'_>,
        parent_states: &[(usize, MatchState)],
        governing: Option<usize>,
        is_container: bool,
        states: &mut Vec<(usize, MatchState)>,
    ) -> Governed {
        let rules = self.rules();
        let mut first = None;
        let mut allowed = false;
        let (node_ty, node_type_id) = if slot.ty == "Resource" {
            let rt = value
                .get("resourceType")
                .and_then(Value::as_str)
                .unwrap_or("Resource");
            (rt, fhir_types::type_id(rt))
        } else {
            (slot.match_ty, slot.match_type_id)
        };
        let info = Node {
            element: slot.element,
            element_id: slot.element_id,
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
        Governed {
            first,
            gov: first.or(governing),
            allowed,
        }
    }

    /// Walks an object node's children under its governing rule: the extension allow-list
    /// first, then the children, then a `substitute` that governs the node itself.
    fn object_node(
        &mut self,
        value: &mut Value,
        slot: Slot<'_>,
        mut states: Vec<(usize, MatchState)>,
        governed: Governed,
        ctx: &mut ResourceCtx,
    ) -> (Outcome, bool) {
        let rules = self.rules();
        let ms = self.engine.policy.ms.is_some();
        let touched = governed.first.is_some();
        let Value::Object(map) = value else {
            return (Outcome::Keep, touched);
        };
        if governed.gov.is_none()
            && slot.ty == "Extension"
            && !governed.allowed
            && let Some(outcome) = self.extension_default(map, slot.element, ctx)
        {
            return (outcome, touched);
        }
        if ms
            && !slot.ext_part
            && matches!(
                governed.gov.map(|g| &rules[g].method),
                Some(Method::Generalize(_))
            )
        {
            // The anonymizer generalizes primitive values only.
            self.fail(&ctx.resource_type, RuleError::GeneralizeNotPrimitive);
            return (Outcome::Keep, touched);
        }
        let substitute = match governed.first.map(|i| (i, &rules[i].method)) {
            Some((i, Method::Substitute(replacement))) => Some((i, replacement)),
            _ => None,
        };
        if substitute.is_some() {
            self.in_subst += 1;
        }
        let (mut outcome, inner_touched) =
            self.object(map, slot.ty, slot.type_id, &states, governed.gov, ctx);
        states.clear();
        self.worker.pool.push(states);
        if !ms && slot.ty == "Extension" && map.len() == 1 && map.contains_key("url") {
            // Its value and sub-extensions are gone: a bare url says nothing (and would
            // still say that something was there).
            outcome = Outcome::Remove;
        }
        if let Some((i, replacement)) = substitute {
            self.in_subst -= 1;
            let kept = std::mem::take(map);
            let outcome = self.finish_substitute(value, kept, i, replacement, slot.ext_part);
            return (outcome, true);
        }
        (outcome, touched || inner_touched)
    }

    /// The defaults for an extension no rule governs or allows: `None` when it is walked like
    /// any node, else what happens to it (kept by re-apply, dropped, or the resource dropped).
    fn extension_default(
        &mut self,
        map: &Map<String, Value>,
        element: &str,
        ctx: &ResourceCtx,
    ) -> Option<Outcome> {
        let defaults = &self.engine.policy.defaults;
        let fallback = if element == "modifierExtension" {
            defaults.modifier_extensions
        } else {
            defaults.extensions
        };
        if reapply_keeps(self.engine, map) {
            return Some(Outcome::Keep);
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
                Some(Outcome::Remove)
            }
            Fallback::Redact => {
                self.counts.dropped_extensions += 1;
                self.record(None, "default (extensions)", "removed");
                Some(Outcome::Remove)
            }
            _ => None,
        }
    }

    #[inline]
    pub(super) fn record(&mut self, rule: Option<usize>, default_label: &str, outcome: &str) {
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

    /// A `generalize` case that could not be evaluated: an error, unless the anonymizer's
    /// `processingErrors` says to keep the value.
    pub(super) fn eval_failed(&mut self, ctx: &ResourceCtx, error: EvalError) -> Outcome {
        match self.engine.policy.ms.as_ref().map(|m| m.processing_errors) {
            Some(ProcessingErrors::Keep) => Outcome::Keep,
            _ => {
                self.fail(&ctx.resource_type, RuleError::Eval(error));
                Outcome::Keep
            }
        }
    }
}

/// True when a value's JSON shape is not its FHIR type's: an array inside an array, a primitive
/// given as an object or array or as the wrong JSON type (a `birthDate` as a number), a complex
/// type given as a scalar. Such values are removed (fail closed), never read as text.
pub(super) fn malformed(value: &Value, shape: Shape) -> bool {
    match value {
        Value::Array(_) => true,
        Value::Null => false,
        Value::Object(_) => shape != Shape::Object,
        Value::Bool(_) => shape != Shape::Bool,
        Value::Number(_) => shape != Shape::Number,
        Value::String(_) => shape != Shape::String,
    }
}

/// In re-apply mode the engine's own 90+ age-band extension stays (it replaced a birth date that
/// is gone from the lake, so it cannot be derived again).
fn reapply_keeps(engine: &PolicyEngine, ext: &Map<String, Value>) -> bool {
    engine.reapply && ext.get("url").and_then(Value::as_str) == Some(AGE_BAND_EXTENSION_URL)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::super::test_support::{engine, run};
    use crate::Deidentifier as _;

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
}
