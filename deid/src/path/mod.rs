//! Rule paths: the FHIRPath subset of the Microsoft FHIR anonymizer (`Resource.id`,
//! `Patient.address.state`, `nodesByType('HumanName')`, `Observation.value as Quantity`,
//! `.where(...)`, `.ofType(T)`), compiled into selectors matched against raw JSON in one walk.
//!
//! The syntax is [`fhirlake_fhir::fhirpath`]'s ([`parse`] checks that an expression uses only what
//! rule expressions evaluate); this module compiles its AST.
//!
//! A [`Selector`] is a list of steps. The engine walks a resource once; for every node it derives
//! each live rule's [`MatchState`] from the parent's (an NFA over the steps), so a rule costs a few
//! bit operations per node instead of a full FHIRPath evaluation per rule.

pub mod eval;

use serde_json::Value;

pub use eval::{EvalError, Item, Prim, truthy, type_matches};
pub use fhirlake_fhir::fhirpath::{BinOp, Expr, Func, Literal, TypeSpec};
use fhirlake_fhir::types::{self as fhir_types, ElementId, TypeId};

/// One step of a compiled rule path.
#[derive(Debug, Clone)]
pub enum Step {
    /// The resource root: a resource type, or any resource (`Resource`, `DomainResource`).
    Root(Option<String>),
    /// A child element by element name (choice types match every `value[x]` key).
    Child(String),
    /// Every descendant of a FHIR type (`nodesByType('T')`), or of any type (`descendants()`).
    Descendants(Option<String>),
    /// Keep the node only if it is of a type (`ofType(T)`, `as T`).
    OfType(String),
    /// Keep the node only if the expression is true on it (`where(...)`).
    Filter(Expr),
}

/// A compiled rule path.
#[derive(Debug, Clone)]
pub struct Selector {
    steps: Vec<Step>,
    text: String,
    /// Per step: for `Child(name)`, the number of `name` ([`ElementId::UNKNOWN`] otherwise or when
    /// no type has such an element), so the per-node test is an integer compare.
    child_ids: Vec<ElementId>,
    /// Per step: for `Descendants(Some(T))` and `OfType(T)`, the types that match (for
    /// `nodesByType` exactly `T` with the Microsoft anonymizer's lookup by instance type, else `T`
    /// and its subtypes), computed once, so the per-node test is a bit test instead of a walk up
    /// the type hierarchy.
    type_sets: Vec<Option<TypeSet>>,
    /// The root step names a concrete resource type (which only matches itself).
    root_is_concrete: bool,
    /// Bit `s` is set when step `s` acts on the node it is reached at (`ofType`, `where`,
    /// `nodesByType`): the only steps [`Selector::close`] has to visit.
    on_node: u32,
}

/// The types a `nodesByType('T')` or `ofType(T)` step accepts.
#[derive(Debug, Clone)]
struct TypeSet {
    /// Bit [`TypeId::index`] is set for every accepted type of the table.
    bits: Box<[u64]>,
    /// `T` is `Resource` / `DomainResource`: any resource node matches (decided on the value).
    resources: Option<String>,
    /// `T` is not a known type: compare by name only.
    fallback: Option<String>,
}

impl TypeSet {
    fn new(of: &str, exact: bool) -> Self {
        if matches!(of, "Resource" | "DomainResource") {
            return Self {
                bits: Box::new([]),
                resources: Some(of.to_string()),
                fallback: None,
            };
        }
        Self {
            bits: fhir_types::subtype_bits(of, exact).into_boxed_slice(),
            resources: None,
            fallback: (fhir_types::type_id(of) == TypeId::UNKNOWN).then(|| of.to_string()),
        }
    }

    fn contains(&self, node: &Node<'_>) -> bool {
        if let Some(of) = &self.resources {
            return type_matches(node.ty, node.value, of);
        }
        if let Some(of) = &self.fallback {
            return node.ty == of;
        }
        node.type_id.index().is_some_and(|i| {
            self.bits
                .get(i / 64)
                .is_some_and(|w| w >> (i % 64) & 1 == 1)
        })
    }
}

fn type_sets(steps: &[Step], exact: bool) -> Vec<Option<TypeSet>> {
    steps
        .iter()
        .map(|step| match step {
            Step::Descendants(Some(t)) => Some(TypeSet::new(t, exact)),
            // `ofType` follows the type hierarchy in both modes (as `type_matches` does).
            Step::OfType(t) => Some(TypeSet::new(t, false)),
            _ => None,
        })
        .collect()
}

/// Where a rule stands at one node: which steps are matched, which descendant searches are open.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MatchState {
    reached: u32,
    searching: u32,
}

impl MatchState {
    /// No step matched and no search open: the rule cannot match here or below.
    pub fn is_dead(&self) -> bool {
        self.reached == 0 && self.searching == 0
    }
}

/// The node being matched: its element name, FHIR type and value.
#[derive(Debug, Clone, Copy)]
pub struct NodeInfo<'a> {
    /// Element name (choice suffix removed); empty for a resource root.
    pub element: &'a str,
    /// FHIR type code; the resource type for a resource root; empty when unknown.
    pub ty: &'a str,
    /// The JSON value.
    pub value: &'a Value,
}

/// A [`NodeInfo`] with the table numbers of its element name and type, as the engine has them
/// from [`fhir_types::Children::entry`] without a lookup.
#[derive(Debug, Clone, Copy)]
pub struct Node<'a> {
    /// Element name (choice suffix removed); empty for a resource root.
    pub element: &'a str,
    /// The number of `element`.
    pub element_id: ElementId,
    /// FHIR type code; the resource type for a resource root; empty when unknown.
    pub ty: &'a str,
    /// The number of `ty`.
    pub type_id: TypeId,
    /// The JSON value.
    pub value: &'a Value,
}

impl<'a> From<NodeInfo<'a>> for Node<'a> {
    fn from(info: NodeInfo<'a>) -> Self {
        Node {
            element: info.element,
            element_id: fhir_types::element_id(info.element),
            ty: info.ty,
            type_id: fhir_types::type_id(info.ty),
            value: info.value,
        }
    }
}

/// Why a path or a rule expression does not compile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathError {
    /// 0-based character offset.
    pub offset: usize,
    /// What is wrong.
    pub message: String,
}

impl std::fmt::Display for PathError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} (at character {})", self.message, self.offset + 1)
    }
}

impl PathError {
    /// A syntax error of `text`, its byte offset turned into a character offset.
    fn syntax(text: &str, error: fhirlake_fhir::Error) -> Self {
        let fhirlake_fhir::Error::FhirPathSyntax { offset, message } = error;
        let before = text.get(..offset).unwrap_or(text);
        Self {
            offset: before.chars().count(),
            message,
        }
    }
}

/// Parses a rule expression (a `where(...)` condition, a `generalize` case): FHIRPath syntax
/// without the view language's `%constants` and `$index`, which rules have no value for.
pub fn parse(text: &str) -> Result<Expr, PathError> {
    let expr = fhirlake_fhir::fhirpath::parse(text).map_err(|e| PathError::syntax(text, e))?;
    match unsupported(&expr) {
        None => Ok(expr),
        Some((needle, message)) => Err(PathError {
            offset: text
                .find(&needle)
                .or_else(|| text.find(&needle[..1]))
                .map_or(0, |at| text[..at].chars().count()),
            message: message.to_string(),
        }),
    }
}

/// The first construct of `expr` that rule expressions do not evaluate: its text (to point at
/// it) and why.
fn unsupported(expr: &Expr) -> Option<(String, &'static str)> {
    let inner = |e: &Expr| unsupported(e);
    let constant = "%constants are not supported in rule expressions";
    match expr {
        Expr::Constant(name) => Some((format!("%{name}"), constant)),
        Expr::Resource | Expr::RowIndex => Some(("%".to_string(), constant)),
        Expr::IndexVar => Some(("$index".to_string(), "only the variable $this is supported")),
        Expr::Member(base, _) => base.as_deref().and_then(inner),
        Expr::Index(a, b) | Expr::Binary(_, a, b) => inner(a).or_else(|| inner(b)),
        Expr::OfType(base, _) | Expr::TypeOp { base, .. } | Expr::Negate(base) => inner(base),
        Expr::Call { base, args, .. } => base
            .as_deref()
            .and_then(inner)
            .or_else(|| args.iter().find_map(inner)),
        Expr::Empty | Expr::Literal(_) | Expr::This => None,
    }
}

const MAX_STEPS: usize = 30;

impl Selector {
    /// Compiles a rule path.
    pub fn compile(text: &str) -> Result<Self, PathError> {
        let expr = fhirlake_fhir::fhirpath::parse(text).map_err(|e| PathError::syntax(text, e))?;
        let mut steps = Vec::new();
        compile_into(&expr, &mut steps).map_err(|message| PathError { offset: 0, message })?;
        if steps.len() > MAX_STEPS {
            return Err(PathError {
                offset: 0,
                message: format!("a rule path has at most {MAX_STEPS} steps"),
            });
        }
        Ok(Self {
            root_is_concrete: matches!(steps.first(), Some(Step::Root(Some(t))) if fhir_types::is_resource_type(t)),
            child_ids: steps
                .iter()
                .map(|step| match step {
                    Step::Child(name) => fhir_types::element_id(name),
                    _ => ElementId::UNKNOWN,
                })
                .collect(),
            type_sets: type_sets(&steps, false),
            on_node: steps
                .iter()
                .enumerate()
                .filter(|(_, step)| {
                    matches!(
                        step,
                        Step::OfType(_) | Step::Filter(_) | Step::Descendants(_)
                    )
                })
                .fold(0, |bits, (s, _)| bits | 1 << s),
            steps,
            text: text.to_string(),
        })
    }

    /// Makes `nodesByType('T')` match nodes of exactly type `T`, not its subtypes
    /// (`nodesByType('integer')` then skips `positiveInt`), as the Microsoft anonymizer does.
    pub fn with_exact_node_types(mut self) -> Self {
        self.type_sets = type_sets(&self.steps, true);
        self
    }

    /// The path as written.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// The steps.
    pub fn steps(&self) -> &[Step] {
        &self.steps
    }

    /// The resource type the path is limited to, if any (`Patient.name` -> `Patient`).
    pub fn resource_type(&self) -> Option<&str> {
        match self.steps.first() {
            Some(Step::Root(Some(t))) => Some(t),
            _ => None,
        }
    }

    /// State at a resource root. Returns the state and whether the root itself matches.
    pub fn start(&self, root: NodeInfo<'_>) -> (MatchState, bool) {
        self.start_node(root.into())
    }

    /// [`Selector::start`] on a [`Node`].
    pub fn start_node(&self, root: Node<'_>) -> (MatchState, bool) {
        let mut state = MatchState::default();
        match &self.steps[0] {
            Step::Root(None) => state.reached = 1 << 1,
            Step::Root(Some(t)) if root.ty == t => state.reached = 1 << 1,
            // A concrete resource type only matches itself; abstract and datatype roots go
            // through the hierarchy.
            Step::Root(Some(t))
                if !self.root_is_concrete && type_matches(root.ty, root.value, t) =>
            {
                state.reached = 1 << 1
            }
            _ => return (state, false),
        }
        self.close(&mut state, root)
    }

    /// State at a child node, from its parent's state.
    pub fn step(&self, parent: MatchState, child: NodeInfo<'_>) -> (MatchState, bool) {
        self.step_node(parent, child.into())
    }

    /// [`Selector::step`] on a [`Node`].
    #[inline]
    pub fn step_node(&self, parent: MatchState, child: Node<'_>) -> (MatchState, bool) {
        // Most carried states wait at one `Child` step and no search (`nodesByType('Coding')`
        // at a Coding, waiting for `display`): every other child kills them, which one integer
        // compare tells without the general stepping below.
        if parent.searching == 0 && parent.reached.is_power_of_two() {
            let s = parent.reached.trailing_zeros() as usize;
            if let Some(&id) = self.child_ids.get(s)
                && id != ElementId::UNKNOWN
                && id != child.element_id
            {
                return (MatchState::default(), false);
            }
        }
        self.step_general(parent, child)
    }

    fn step_general(&self, parent: MatchState, child: Node<'_>) -> (MatchState, bool) {
        let mut state = MatchState {
            reached: 0,
            searching: parent.searching,
        };
        let mut bits = parent.reached;
        while bits != 0 {
            let s = bits.trailing_zeros() as usize;
            bits &= bits - 1;
            if let Some(Step::Child(name)) = self.steps.get(s) {
                // Equal numbers are equal names; a name no type has (no number) can still be an
                // unknown JSON key's.
                let hit = match self.child_ids.get(s) {
                    Some(&id) if id != ElementId::UNKNOWN => id == child.element_id,
                    _ => child.element_id == ElementId::UNKNOWN && name == child.element,
                };
                if hit {
                    state.reached |= 1 << (s + 1);
                }
            }
        }
        let mut bits = state.searching;
        while bits != 0 {
            let s = bits.trailing_zeros() as usize;
            bits &= bits - 1;
            if let Some(Step::Descendants(of)) = self.steps.get(s) {
                let hit = match (of, self.type_sets.get(s)) {
                    (None, _) => true,
                    (Some(_), Some(Some(set))) => set.contains(&child),
                    (Some(t), _) => type_matches(child.ty, child.value, t),
                };
                if hit {
                    state.reached |= 1 << (s + 1);
                }
            }
        }
        if state.reached == 0 {
            // Nothing reached at this node: only the open searches carry on.
            return (state, false);
        }
        self.close(&mut state, child)
    }

    /// Applies the steps that stay on the same node (type tests, filters, opening searches).
    #[inline]
    fn close(&self, state: &mut MatchState, node: Node<'_>) -> (MatchState, bool) {
        // Visit only the reached steps that act on this node, in order; a step may reach the
        // next one. (A reached `Child` step waits for a child: nothing to do here.)
        let mut pending = state.reached & self.on_node;
        while pending != 0 {
            let s = pending.trailing_zeros() as usize;
            pending &= pending - 1;
            let advance = match self.steps.get(s) {
                Some(Step::OfType(t)) => match self.type_sets.get(s) {
                    Some(Some(set)) => set.contains(&node),
                    _ => type_matches(node.ty, node.value, t),
                },
                Some(Step::Filter(expr)) => filter_holds(expr, node),
                Some(Step::Descendants(_)) => {
                    state.searching |= 1 << s;
                    false
                }
                _ => false,
            };
            if advance && state.reached & (1 << (s + 1)) == 0 {
                state.reached |= 1 << (s + 1);
                pending |= 1 << (s + 1) & self.on_node;
            }
        }
        let matched = state.reached & (1 << self.steps.len()) != 0;
        (*state, matched)
    }

    /// For paths that start `nodesByType('T')` at any resource (`[Root(None), Descendants(T), ...]`):
    /// the search is open at every node below the root, so the engine does not carry it from node
    /// to node; it looks the node's type up in an index instead and enters the path here
    /// ([`Selector::enter_typed`]).
    pub fn global_type_search(&self) -> bool {
        matches!(
            self.steps.as_slice(),
            [Step::Root(None), Step::Descendants(Some(_)), ..]
        ) && matches!(self.type_sets.get(1), Some(Some(set)) if set.resources.is_none())
    }

    /// Does the global `nodesByType` search accept a node of this type? (See
    /// [`Selector::global_type_search`].)
    pub fn global_type_accepts(&self, ty: &str, value: &Value) -> bool {
        let node = Node::from(NodeInfo {
            element: "",
            ty,
            value,
        });
        matches!(self.type_sets.get(1), Some(Some(set)) if set.contains(&node))
    }

    /// State at a node whose type the global `nodesByType` step accepted.
    pub fn enter_typed(&self, node: NodeInfo<'_>) -> (MatchState, bool) {
        self.enter_typed_node(node.into())
    }

    /// [`Selector::enter_typed`] on a [`Node`].
    pub fn enter_typed_node(&self, node: Node<'_>) -> (MatchState, bool) {
        let mut state = MatchState {
            reached: 1 << 2,
            searching: 0,
        };
        self.close(&mut state, node)
    }

    /// Removes the global search from a state (the engine handles it through its index).
    pub fn without_global_search(&self, mut state: MatchState) -> MatchState {
        if self.global_type_search() {
            // The reached bit of the `nodesByType` step only opened the search (it is no `Child`
            // step for children to advance from); left set, it would keep a state that can never
            // match alive, and every child of every resource root would step it for nothing.
            state.searching &= !(1 << 1);
            state.reached &= !(1 << 1);
        }
        state
    }

    /// Merges two states of the same rule at the same node.
    pub fn merge(a: MatchState, b: MatchState) -> MatchState {
        MatchState {
            reached: a.reached | b.reached,
            searching: a.searching | b.searching,
        }
    }
}

/// Evaluates a `where(...)` condition on a node. Kept out of line so that the selector's hot
/// loop stays small. An expression error is "no match": filters never abort a run.
#[inline(never)]
fn filter_holds(expr: &Expr, node: Node<'_>) -> bool {
    let item = Item::Node {
        value: node.value,
        ty: node.ty,
    };
    eval::eval(expr, std::slice::from_ref(&item), &item).is_ok_and(|r| truthy(&r))
}

fn compile_into(expr: &Expr, steps: &mut Vec<Step>) -> Result<(), String> {
    match expr {
        Expr::Member(None, name) if steps.is_empty() => {
            if !name.chars().next().is_some_and(char::is_uppercase) {
                return Err(format!(
                    "a rule path starts with a resource type, `Resource` or nodesByType(...), not `{name}`"
                ));
            }
            steps.push(Step::Root(match name.as_str() {
                "Resource" | "DomainResource" => None,
                _ => Some(name.clone()),
            }));
        }
        Expr::Call {
            base: None,
            func,
            args,
            ..
        } if steps.is_empty() => {
            steps.push(Step::Root(None));
            compile_call(*func, args, steps)?;
        }
        // `ofType(T)` at the start of a path: on any resource.
        Expr::OfType(base, ty) if steps.is_empty() && **base == Expr::This => {
            steps.push(Step::Root(None));
            steps.push(Step::OfType(ty.name.clone()));
        }
        Expr::Member(Some(base), name) => {
            compile_into(base, steps)?;
            steps.push(Step::Child(name.clone()));
        }
        Expr::Call {
            base: Some(base),
            func,
            args,
            ..
        } => {
            compile_into(base, steps)?;
            compile_call(*func, args, steps)?;
        }
        Expr::OfType(base, ty)
        | Expr::TypeOp {
            is: false,
            base,
            ty,
        } => {
            compile_into(base, steps)?;
            steps.push(Step::OfType(ty.name.clone()));
        }
        _ => {
            return Err(
                "a rule path is a chain of elements, nodesByType(), where(), ofType() and `as`"
                    .to_string(),
            );
        }
    }
    Ok(())
}

fn compile_call(func: Func, args: &[Expr], steps: &mut Vec<Step>) -> Result<(), String> {
    match (func, args) {
        (Func::NodesByType, [Expr::Literal(Literal::String(t))] | [Expr::Member(None, t)]) => {
            steps.push(Step::Descendants(Some(t.clone())));
        }
        (Func::NodesByType, _) => return Err("nodesByType() takes one type name".to_string()),
        (Func::Descendants, []) => steps.push(Step::Descendants(None)),
        (Func::Where, [cond]) => {
            if let Some((_, message)) = unsupported(cond) {
                return Err(message.to_string());
            }
            steps.push(Step::Filter(cond.clone()));
        }
        (other, _) => {
            return Err(format!(
                "{}() cannot select nodes in a rule path (use nodesByType, where, ofType)",
                other.name()
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn node<'a>(element: &'a str, ty: &'a str, value: &'a Value) -> NodeInfo<'a> {
        NodeInfo { element, ty, value }
    }

    #[test]
    fn compiles_the_anonymizer_forms() {
        for (path, n) in [
            ("Resource.id", 2),
            ("Patient.address.state", 3),
            ("nodesByType('HumanName')", 2),
            ("Patient.nodesByType('Address').where(city='KeepTest')", 3),
            ("Observation.value as Quantity", 3),
            ("Observation.value.ofType(Quantity)", 3),
            ("Device.where(id.exists()).id", 3),
        ] {
            assert_eq!(Selector::compile(path).unwrap().steps().len(), n, "{path}");
        }
        assert!(Selector::compile("name.given").is_err());
        assert!(Selector::compile("Patient.name.first()").is_err());
        assert!(Selector::compile("Patient.name.where(").is_err());
    }

    #[test]
    fn rule_expressions_are_fhirpath_without_view_constants() {
        assert!(parse("$this in ('en-AU' | 'en-CA')").is_ok());
        let e = parse("%resource.id = 'x'").unwrap_err();
        assert!(e.message.contains("%constants"), "{e}");
        assert_eq!(parse("$this = $index").unwrap_err().offset, 8);
        // Offsets count characters, not bytes (the policy checker's columns).
        assert_eq!(parse("'é' = x.").unwrap_err().offset, 8);
        assert!(Selector::compile("Patient.name.where(%x = 1)").is_err());
    }

    #[test]
    fn child_and_filter_steps() {
        let sel = Selector::compile("Patient.address.where(city='KeepTest').state").unwrap();
        let patient = json!({"resourceType": "Patient"});
        let keep = json!({"city": "KeepTest", "state": "WA"});
        let other = json!({"city": "Elsewhere"});
        let state_value = json!("WA");
        let (root, m) = sel.start(node("", "Patient", &patient));
        assert!(!m);
        let (addr, m) = sel.step(root, node("address", "Address", &keep));
        assert!(!m);
        let (_, m) = sel.step(addr, node("state", "string", &state_value));
        assert!(m);
        let (addr2, _) = sel.step(root, node("address", "Address", &other));
        assert!(
            sel.step(addr2, node("state", "string", &state_value))
                .0
                .is_dead()
        );
        let obs = json!({"resourceType": "Observation"});
        assert!(sel.start(node("", "Observation", &obs)).0.is_dead());
    }

    #[test]
    fn exact_node_types_skip_subtypes() {
        let v = json!(1);
        let root_value = json!({});
        for (exact, hit) in [(false, true), (true, false)] {
            let mut sel = Selector::compile("nodesByType('integer')").unwrap();
            if exact {
                sel = sel.with_exact_node_types();
            }
            let (root, _) = sel.start(node("", "Patient", &root_value));
            assert_eq!(sel.step(root, node("rank", "positiveInt", &v)).1, hit);
            assert!(sel.step(root, node("n", "integer", &v)).1);
        }
    }

    #[test]
    fn descendant_search_spans_levels() {
        let sel = Selector::compile("nodesByType('HumanName').use").unwrap();
        let v = json!({});
        let (root, _) = sel.start(node("", "Patient", &v));
        let (contact, m) = sel.step(root, node("contact", "Patient.contact", &v));
        assert!(!m);
        let (name, m) = sel.step(contact, node("name", "HumanName", &v));
        assert!(!m);
        assert!(sel.step(name, node("use", "code", &v)).1);
        assert!(!sel.step(name, node("family", "string", &v)).1);
    }
}
