//! Compiled member paths: the column expressions views are mostly made of
//! (`code.coding.first().code`, `value.ofType(Quantity).value`, `subject.getReferenceKey(Patient)`,
//! `(a | b).first()`), run as a streaming walk over the resource with no collection allocated.
//!
//! The general evaluator ([`super::evaluate`]) builds a vector per sub-expression; for a view of
//! 16 such columns that is most of the time spent per resource. [`PathPlan::compile`] accepts
//! only expressions whose streaming result is exactly the general evaluator's, and the view
//! falls back to the evaluator for everything else. The equivalence is checked over the
//! SQL-on-FHIR conformance suite, which runs every column through this path when it compiles.

use std::ops::ControlFlow;

use super::eval::{
    Item, for_each_member, for_each_member_value, has_type, member_match, reference_key,
    resource_key, resource_key_target,
};
use super::{BinOp, Expr, Func, TypeSpec};
use crate::json::Json;

/// Where a path starts.
#[derive(Debug, Clone)]
pub(crate) enum Source {
    /// The focus item(s).
    Focus,
    /// `getResourceKey()` on the focus.
    ResourceKey,
    /// `(a | b | ...).first()`: the first item of the first branch that has one.
    FirstOf(Vec<PathPlan>),
}

/// One streaming step.
#[derive(Debug, Clone)]
pub(crate) enum Step {
    /// `.name` (choice elements by their FHIR name, as the evaluator).
    Member(String),
    /// `.ofType(T)`.
    OfType(TypeSpec),
    /// `.first()`: the first item reaching it, then the walk upstream stops.
    First,
    /// `.getReferenceKey([T])`.
    ReferenceKey(Option<TypeSpec>),
}

/// A compiled member path.
#[derive(Debug, Clone)]
pub struct PathPlan {
    pub(crate) source: Source,
    pub(crate) steps: Vec<Step>,
    /// Index of the first member name in the select's [`MemberIndex`] names, when the path
    /// starts with `.name` on its focus (see [`PathPlan::bind_first_member`]).
    first: Option<usize>,
}

/// The members of one focus object that a select's paths start from, found in one pass.
///
/// Objects are scanned member by member; a view of 16 columns that each scan the resource's
/// dozen members for their first name would walk the root object 16 times per resource. The
/// select lists its columns' first names once (at compile time) and the object is walked once
/// per focus.
#[derive(Debug)]
pub struct MemberIndex<'a> {
    /// `(choice type, value, next hit of the same name)` in document order.
    hits: Vec<(Option<&'a str>, Json<'a>, u16)>,
    /// The first hit of each name ([`NO_HIT`] when none): a column follows its own chain.
    heads: [u16; MemberNames::MAX],
}

impl<'a> MemberIndex<'a> {
    /// The members of `focus` matching `names` (`None` when the focus is not an object).
    pub fn build(focus: Json<'a>, names: &MemberNames) -> Option<Self> {
        let members = focus.object()?;
        let mut hits = Vec::with_capacity(16);
        let mut heads = [NO_HIT; MemberNames::MAX];
        let mut tails = [NO_HIT; MemberNames::MAX];
        for (key, value) in members.iter() {
            // Only the names starting with the key's first byte can match it.
            let mut candidates = key
                .as_bytes()
                .first()
                .map_or(0, |b| names.by_first_byte[*b as usize]);
            while candidates != 0 {
                let i = candidates.trailing_zeros() as usize;
                candidates &= candidates - 1;
                if let Some(ty) = member_match(key, &names.names[i]) {
                    let Some(at) = u16::try_from(hits.len()).ok().filter(|&at| at != NO_HIT) else {
                        return None; // more hits than a chain counts: walk without the index
                    };
                    hits.push((ty, value, NO_HIT));
                    match tails[i] {
                        NO_HIT => heads[i] = at,
                        tail => hits[tail as usize].2 = at,
                    }
                    tails[i] = at;
                }
            }
        }
        Some(Self { hits, heads })
    }
}

/// No hit (end of a chain) in a [`MemberIndex`].
const NO_HIT: u16 = u16::MAX;

/// The first member names a select's columns start from, with a first-byte filter.
#[derive(Debug, Clone)]
pub struct MemberNames {
    names: Vec<String>,
    /// Bit `i` of entry `b`: name `i` starts with byte `b`.
    by_first_byte: Box<[u64; 256]>,
}

impl MemberNames {
    /// At most this many names are indexed (one bit each).
    pub const MAX: usize = 64;

    /// The index over `names` (at most [`Self::MAX`]).
    pub fn new(names: Vec<String>) -> Self {
        let mut by_first_byte = Box::new([0u64; 256]);
        for (i, name) in names.iter().enumerate().take(Self::MAX) {
            if let Some(b) = name.as_bytes().first() {
                by_first_byte[*b as usize] |= 1 << i;
            }
        }
        Self {
            names,
            by_first_byte,
        }
    }

    /// True when no name is indexed.
    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }
}

/// Whether the walk goes on after an item.
type Flow = ControlFlow<()>;

impl PathPlan {
    /// Compiles `expr` when it is a plain path; `None` means "use the general evaluator".
    pub fn compile(expr: &Expr) -> Option<Self> {
        let mut plan = match expr {
            Expr::This => Self::from_focus(),
            Expr::Member(None, name) => {
                // `Patient.name` (a leading type name) selects the resource: the evaluator's job.
                if name.starts_with(|c: char| c.is_ascii_uppercase()) {
                    return None;
                }
                let mut plan = Self::from_focus();
                plan.steps.push(Step::Member(name.clone()));
                return Some(plan);
            }
            Expr::Member(Some(base), name) => {
                let mut plan = Self::compile(base)?;
                plan.steps.push(Step::Member(name.clone()));
                return Some(plan);
            }
            Expr::OfType(base, ty) => {
                let mut plan = Self::compile(base)?;
                plan.steps.push(Step::OfType(ty.clone()));
                return Some(plan);
            }
            Expr::Call {
                base,
                func,
                args,
                type_arg,
            } if args.is_empty() => match (func, base.as_deref()) {
                (Func::GetResourceKey, None) => Self {
                    source: Source::ResourceKey,
                    steps: Vec::new(),
                    first: None,
                },
                (Func::First, Some(Expr::Binary(BinOp::Union, ..))) => {
                    let mut branches = Vec::new();
                    union_branches(base.as_deref()?, &mut branches)?;
                    Self {
                        source: Source::FirstOf(branches),
                        steps: Vec::new(),
                        first: None,
                    }
                }
                (Func::First, Some(base)) => {
                    let mut plan = Self::compile(base)?;
                    plan.steps.push(Step::First);
                    plan
                }
                (Func::GetReferenceKey, Some(base)) => {
                    let mut plan = Self::compile(base)?;
                    plan.steps.push(Step::ReferenceKey(type_arg.clone()));
                    plan
                }
                _ => return None,
            },
            _ => return None,
        };
        plan.steps.shrink_to_fit();
        Some(plan)
    }

    fn from_focus() -> Self {
        Self {
            source: Source::Focus,
            steps: Vec::new(),
            first: None,
        }
    }

    /// Registers the member name this path (or each `FirstOf` branch) starts with in `names`,
    /// so that [`Self::for_each_indexed`] can take it from a [`MemberIndex`] over those names.
    pub fn bind_first_member(&mut self, names: &mut Vec<String>) {
        match (&mut self.source, self.steps.first()) {
            (Source::Focus, Some(Step::Member(name))) => {
                let i = match names.iter().position(|n| n == name) {
                    Some(i) => i,
                    None if names.len() < MemberNames::MAX => {
                        names.push(name.clone());
                        names.len() - 1
                    }
                    None => return,
                };
                self.first = Some(i);
            }
            (Source::FirstOf(branches), _) => {
                for branch in branches {
                    branch.bind_first_member(names);
                }
            }
            _ => {}
        }
    }

    /// Calls `sink` with every item of the path's result over `focus`, in order (the general
    /// evaluator's collection, item by item). `resource` is the row's resource.
    pub fn for_each<'a>(
        &self,
        focus: &[Item<'a>],
        resource: Json<'a>,
        sink: &mut dyn FnMut(Item<'a>),
    ) {
        self.for_each_indexed(focus, resource, None, sink);
    }

    /// [`Self::for_each`] where `index` holds the members of the one focus object, built over
    /// the names this plan was bound to.
    pub fn for_each_indexed<'a>(
        &self,
        focus: &[Item<'a>],
        resource: Json<'a>,
        index: Option<&MemberIndex<'a>>,
        sink: &mut dyn FnMut(Item<'a>),
    ) {
        let _ = self.run(focus, resource, index, &mut |item| {
            sink(item);
            ControlFlow::Continue(())
        });
    }

    /// [`Self::for_each_indexed`] with a sink that may stop the walk.
    fn run<'a>(
        &self,
        focus: &[Item<'a>],
        resource: Json<'a>,
        index: Option<&MemberIndex<'a>>,
        sink: &mut dyn FnMut(Item<'a>) -> Flow,
    ) -> Flow {
        match &self.source {
            Source::Focus => {
                if let (Some(first), Some(index)) = (self.first, index) {
                    // The first `.name` step, taken from the index (as `for_each_member`).
                    let rest = &self.steps[1..];
                    let mut at = index.heads[first];
                    while let Some(&(ty, value, next)) = index.hits.get(at as usize) {
                        at = next;
                        for_each_member_value(value, ty, &mut |child| walk(rest, child, sink))?;
                        if ty.is_none() {
                            break;
                        }
                    }
                    return ControlFlow::Continue(());
                }
                for item in focus {
                    walk(&self.steps, item.clone(), sink)?;
                }
                ControlFlow::Continue(())
            }
            Source::ResourceKey => match resource_key(resource_key_target(focus, resource)) {
                Some(id) => walk(&self.steps, id, sink),
                None => ControlFlow::Continue(()),
            },
            Source::FirstOf(branches) => {
                let mut first = None;
                for branch in branches {
                    let _ = branch.run(focus, resource, index, &mut |item| {
                        first = Some(item);
                        ControlFlow::Break(())
                    });
                    if let Some(item) = first.take() {
                        return walk(&self.steps, item, sink);
                    }
                }
                ControlFlow::Continue(())
            }
        }
    }
}

/// The branches of `a | b | c`, each a compiled path.
fn union_branches(expr: &Expr, out: &mut Vec<PathPlan>) -> Option<()> {
    match expr {
        Expr::Binary(BinOp::Union, lhs, rhs) => {
            union_branches(lhs, out)?;
            union_branches(rhs, out)
        }
        other => {
            out.push(PathPlan::compile(other)?);
            Some(())
        }
    }
}

/// Runs `steps` on `item`, handing each result to `sink`. `Break` stops every step upstream:
/// a `first()` has passed its item on.
fn walk<'a>(steps: &[Step], item: Item<'a>, sink: &mut dyn FnMut(Item<'a>) -> Flow) -> Flow {
    let Some((step, rest)) = steps.split_first() else {
        return sink(item);
    };
    match step {
        Step::Member(name) => match item {
            Item::Node(json, _) => {
                for_each_member(json, name, &mut |child| walk(rest, child, sink))
            }
            Item::Prim(_) => ControlFlow::Continue(()),
        },
        Step::OfType(ty) => {
            if has_type(&item, ty) {
                walk(rest, item, sink)
            } else {
                ControlFlow::Continue(())
            }
        }
        Step::First => {
            let _ = walk(rest, item, sink);
            ControlFlow::Break(())
        }
        Step::ReferenceKey(wanted) => match reference_key(&item, wanted.as_ref()) {
            Some(key) => walk(rest, key, sink),
            None => ControlFlow::Continue(()),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fhirpath::{Env, evaluate, parse};

    const OBSERVATION: &str = r#"{"resourceType":"Observation","id":"o1",
        "category":[{"coding":[{"code":"vital-signs"},{"code":"x"}]},{"coding":[{"code":"y"}]}],
        "code":{"coding":[{"system":"http://loinc.org","code":"8302-2"},{"code":"b"}]},
        "subject":{"reference":"Patient/p1"},"encounter":{"reference":"urn:uuid:e1"},
        "performer":[{"reference":"Practitioner/x"},{"reference":"Organization/y"}],
        "effectivePeriod":{"start":"2020-01-01"},"valueQuantity":{"value":1.5,"unit":"cm"},
        "component":[{"valueString":"a"},{"valueQuantity":{"value":2}},{"valueBoolean":true}],
        "note":[null,{"text":"n"}]}"#;

    fn both(path: &str) -> (Vec<String>, Option<Vec<String>>) {
        crate::json::parse(OBSERVATION, |json| {
            let focus = [Item::Node(json, None)];
            let env = Env {
                resource: json,
                row_index: 0,
                index: 0,
            };
            let expr = parse(path).unwrap();
            let show = |item: &Item<'_>| match item.prim() {
                Some(p) => format!("{p:?}"),
                None => format!("{:?}", item),
            };
            let general = evaluate(&expr, &focus, &env)
                .unwrap()
                .iter()
                .map(show)
                .collect();
            let compiled = PathPlan::compile(&expr).map(|mut plan| {
                let mut out = Vec::new();
                plan.for_each(&focus, json, &mut |item| out.push(show(&item)));
                // The same through a member index shared with other names.
                let mut names = vec!["code".to_string(), "valueString".to_string()];
                plan.bind_first_member(&mut names);
                let index = MemberIndex::build(json, &MemberNames::new(names)).unwrap();
                let mut indexed = Vec::new();
                plan.for_each_indexed(&focus, json, Some(&index), &mut |item| {
                    indexed.push(show(&item))
                });
                assert_eq!(out, indexed, "{path} through the member index");
                out
            });
            (general, compiled)
        })
        .unwrap()
    }

    #[test]
    fn compiled_paths_equal_the_evaluator() {
        for path in [
            "id",
            "getResourceKey()",
            "subject.getReferenceKey(Patient)",
            "subject.getReferenceKey(Encounter)",
            "encounter.getReferenceKey()",
            "performer.getReferenceKey()",
            "performer.getReferenceKey(Organization)",
            "category.coding.code",
            "category.first().coding.first().code",
            "category.coding.first().code",
            "code.coding.first().system",
            "value.ofType(Quantity).value",
            "value.ofType(CodeableConcept).coding.first().code",
            "component.value.ofType(string)",
            "component.value.ofType(Quantity).value",
            "component.value",
            "(effective.ofType(dateTime) | effective.ofType(Period).start).first()",
            "(missing | category.coding.code).first()",
            "note.text",
            "note.first().text",
            "missing.first()",
            "$this.id",
        ] {
            let (general, compiled) = both(path);
            let compiled = compiled.unwrap_or_else(|| panic!("{path} should compile"));
            assert_eq!(general, compiled, "{path}");
        }
    }

    #[test]
    fn other_expressions_use_the_evaluator() {
        for path in [
            "Observation.id",
            "category.coding.code | code.coding.code",
            "name.where(use = 'official')",
            "id + 'x'",
            "'literal'",
            "code.coding[0].code",
        ] {
            assert!(both(path).1.is_none(), "{path} should not compile");
        }
    }
}
