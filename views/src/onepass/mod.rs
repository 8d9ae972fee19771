//! One pass over a resource's JSON text for flat views: the rows of a view whose columns are all
//! plain paths are read straight from the text, without building a tree of the resource.
//!
//! A view qualifies when it has no `where`, its selects are plain ones plus at most one `forEach`
//! or `forEachOrNull` over plain member steps with no selects inside it (no `repeat`, no
//! `unionAll`), and every column is a single-valued text, decimal, integer or boolean column whose
//! path compiled to a [`PathPlan`] of member steps, `ofType` on a choice element, `first()`,
//! `getResourceKey()` (outside the `forEach`), `getReferenceKey([T])` and `(a | b | ...).first()`.
//! Seven of the eleven built-in views qualify, `observation` and `observation_component`
//! included. A `forEach` member's items are read at a trie node of their own, with slots and
//! `first()` flags that restart with every item; its rows are put together once the whole text has
//! been read (the resource's own columns may come after the items).
//!
//! Compiling merges the columns' paths into a trie of member names ([`PlanNode`]): shared
//! prefixes such as `code.coding.first()` are read once. The scanner walks the text once; in an
//! object of the trie it matches each key against that node's members (a cache of the previous
//! object's key order first, then a first-byte filter) and skips every other value without
//! looking inside it more than validation needs. Values land in
//! per-row slots; the row is converted and appended only when the whole text has been read.
//!
//! The one-pass result must be exactly the general path's (simd-json tape + [`PathPlan`] walk).
//! Every case where matching FHIRPath's rules would need more than the trie knows makes the
//! scanner bail, and the resource goes through the general path: a key naming a choice type of a
//! plain member (`statusDate` for `status`), the bare name of a choice member (`value` beside
//! `valueQuantity`), an object or array where a value is read, a number where text is read, any
//! escape in a key or in a value read, exponents and `\u` escapes anywhere. Views and resources
//! the trie does not fit take the general path from the start. Tests in `views/tests/one_pass.rs`
//! compare both paths over the conformance suite, every built-in view on the Synthea export and
//! generated variants.

mod scanner;

use scanner::{Bail, Key, MAX_DEPTH, Name, Scalar, ScalarKind, Scan, Scanner, key_word};

use crate::definition::{ColumnExpr, ColumnKind, ColumnSpec, Iteration, SelectNode};
use crate::fhirpath::Expr;
use crate::fhirpath::eval::{is_choice_type, reference_parts};
use crate::fhirpath::path::{PathPlan, Source, Step};

/// How a member key is matched in an object (FHIRPath's rules, restricted to what one pass can
/// follow).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum MatchMode {
    /// `.name`: the first member named exactly `name` (FHIRPath stops there); a member named
    /// `name` + a choice type before or after it makes the scanner bail.
    Plain,
    /// `.name.ofType(T)`: every member named `nameT`; a member named `name` alone bails.
    Choice { base_len: usize },
    /// The first member named exactly so, nothing else considered (`resourceType`, `id`, and a
    /// reference's `reference`, as the evaluator reads them).
    Raw,
}

/// What the value of a matched member feeds.
#[derive(Debug, Clone)]
enum Target {
    /// An object (or array of objects) the trie goes on into.
    Node(usize),
    /// Scalars read into slots.
    Leaves(Vec<Leaf>),
    /// The items of a `forEach`: each object (or each object of an array) is one row's focus,
    /// read at this trie node.
    Items(usize),
}

/// One use of a scalar member value.
#[derive(Debug, Clone)]
enum Leaf {
    /// The value itself (array items flattened, nulls skipped).
    Item(usize),
    /// The value when it is a string (`getResourceKey()` from `id`).
    StrOnly(usize),
    /// The id part of a `reference` string, when its type is the wanted one.
    ReferenceKey { slot: usize, wanted: Option<String> },
    /// The resource's `id` (for the `_resource_id` column).
    Id,
    /// The resource's `resourceType`.
    ResourceType,
}

#[derive(Debug, Clone)]
struct Member {
    key: String,
    name: Name,
    /// The choice element's own name (`value` of `valueQuantity`), for [`MatchMode::Choice`].
    base: Option<Name>,
    mode: MatchMode,
    target: Target,
}

/// One object position of the trie.
#[derive(Debug, Clone)]
struct PlanNode {
    members: Vec<Member>,
    /// Bit `i` of entry `b`: member `i`'s key starts with byte `b`.
    by_first_byte: Box<[u64; 256]>,
    /// Only the first item reaching this position in a row is read (a `first()` after it).
    first_only: bool,
}

/// What a key is in a node.
#[derive(Debug, Clone, Copy)]
enum Lookup {
    Skip,
    Member(usize),
    Bail,
}

/// The `k`-th key of the last object read at a node, and what it was there. Resources of one type
/// mostly list the same keys in the same order, so a key is usually found by comparing it with one
/// cached key (a predictable branch) instead of the node's candidates.
#[derive(Debug, Clone, Copy)]
struct CachedKey {
    len: usize,
    words: [u64; 3],
    found: Lookup,
}

/// Keys longer than this are looked up every time.
const CACHED_KEY_MAX: usize = 24;
/// Key positions per node that are cached.
const CACHED_KEYS: usize = 64;

impl PlanNode {
    fn new(first_only: bool) -> Self {
        Self {
            members: Vec::new(),
            by_first_byte: Box::new([0; 256]),
            first_only,
        }
    }

    #[inline]
    fn lookup(&self, text: &[u8], key: Key) -> Lookup {
        let Some(&first) = text.get(key.start).filter(|_| key.len > 0) else {
            return Lookup::Skip;
        };
        let mut candidates = self.by_first_byte[first as usize];
        let mut found = Lookup::Skip;
        while candidates != 0 {
            let i = candidates.trailing_zeros() as usize;
            candidates &= candidates - 1;
            let member = &self.members[i];
            if member.name.is(text, key) {
                found = Lookup::Member(i);
                continue;
            }
            let clash = match (member.mode, &member.base) {
                (MatchMode::Plain, _) => {
                    let len = member.name.len();
                    key.len > len
                        && member.name.starts(text, key)
                        && text
                            .get(key.start + len..key.start + key.len)
                            .filter(|suffix| suffix[0].is_ascii_uppercase())
                            .and_then(|suffix| std::str::from_utf8(suffix).ok())
                            .is_some_and(is_choice_type)
                }
                (MatchMode::Choice { .. }, Some(base)) => base.is(text, key),
                _ => false,
            };
            if clash {
                return Lookup::Bail;
            }
        }
        found
    }
}

/// How a slot takes a second value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SlotMode {
    /// A second value is an error of the general path ("returned 2 values"): bail.
    Single,
    /// Only the first value counts (`first()`, a `FirstOf` branch).
    First,
}

/// Where a column's value comes from.
#[derive(Debug, Clone)]
enum ColumnSource {
    Slot(usize),
    /// `(a | b | ...).first()`: the first branch with a value.
    FirstOf(Vec<usize>),
}

/// A flat view compiled to a trie of member names over the resource text.
#[derive(Debug, Clone)]
pub(crate) struct OnePassPlan {
    resource: Name,
    nodes: Vec<PlanNode>,
    slot_modes: Vec<SlotMode>,
    columns: Vec<(ColumnSource, ColumnKind)>,
    /// The view's `forEach` / `forEachOrNull`, when it has one.
    items: Option<ItemScope>,
}

/// Where a `forEach` select's own trie nodes and slots start: both are created after the
/// resource's, so a number tells the scopes apart. Its `first()` flags and slots restart with
/// every item.
#[derive(Debug, Clone, Copy)]
struct ItemScope {
    first_node: usize,
    first_slot: usize,
    /// `forEachOrNull`: a resource without items still has one row (item columns null).
    or_null: bool,
}

/// A converted column value; text as offsets into the resource text.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Value {
    Null,
    Str(u32, u32),
    F64(f64),
    I64(i64),
    Bool(bool),
}

/// Per-row state, kept by the batch builder so that rows allocate nothing.
#[derive(Debug, Default)]
pub(crate) struct RowState {
    /// Per trie node, kept across rows (see [`CachedKey`]).
    keys: Vec<Vec<CachedKey>>,
    slots: Vec<Option<Scalar>>,
    /// The slots of every `forEach` item read so far, one stride per item.
    item_slots: Vec<Option<Scalar>>,
    items: usize,
    taken: Vec<bool>,
    id: Option<Scalar>,
    resource_type: Option<Scalar>,
    /// The rows' values, row after row, each in column order (after [`OnePassPlan::row`]).
    pub values: Vec<Value>,
}

impl RowState {
    /// The resource's `id` (empty when it has none): what `_resource_id` holds.
    pub fn id<'t>(&self, text: &'t str) -> &'t str {
        self.id
            .and_then(|s| text.get(s.start as usize..s.end as usize))
            .unwrap_or_default()
    }
}

/// One member step of a column path.
struct Edge {
    key: String,
    mode: MatchMode,
    first: bool,
}

impl OnePassPlan {
    /// The plan of a view, or `None` when the view does not fit one pass.
    pub(crate) fn compile(
        resource: &str,
        specs: &[ColumnSpec],
        root: &SelectNode,
        filters: &[Expr],
    ) -> Option<Self> {
        if !filters.is_empty() {
            return None;
        }
        let mut columns: Vec<Option<&ColumnExpr>> = vec![None; specs.len()];
        let mut for_each = None;
        collect_columns(root, &mut columns, &mut for_each)?;
        let mut plan = Self {
            resource: Name::new(resource),
            nodes: vec![PlanNode::new(false)],
            slot_modes: Vec::new(),
            columns: Vec::with_capacity(specs.len()),
            items: None,
        };
        plan.add_leaf(0, "resourceType", MatchMode::Raw, Leaf::ResourceType)?;
        plan.add_leaf(0, "id", MatchMode::Raw, Leaf::Id)?;
        let item_columns: Vec<usize> = for_each
            .map(|select: &SelectNode| select.columns.iter().map(|c| c.slot).collect())
            .unwrap_or_default();
        let mut sources: Vec<Option<(ColumnSource, ColumnKind)>> = vec![None; specs.len()];
        // The resource's columns first, then the items' (see `ItemScope`).
        for item_scope in [false, true] {
            if item_scope {
                let Some(select) = for_each else { break };
                plan.items = Some(plan.item_scope(select)?);
            }
            for (slot, (spec, column)) in specs.iter().zip(&columns).enumerate() {
                if item_columns.contains(&slot) != item_scope {
                    continue;
                }
                let column = (*column)?;
                let readable = matches!(
                    spec.kind,
                    ColumnKind::Utf8
                        | ColumnKind::Float64
                        | ColumnKind::Int64
                        | ColumnKind::Boolean
                );
                if column.collection || !readable {
                    return None;
                }
                let start = plan.items.map_or(0, |items| items.first_node);
                let source = plan.column_source(column.plan.as_ref()?, start)?;
                sources[slot] = Some((source, spec.kind));
            }
        }
        plan.columns = sources.into_iter().collect::<Option<_>>()?;
        Some(plan)
    }

    /// Adds the `forEach` path of `select` to the trie, ending in a node its columns start from.
    fn item_scope(&mut self, select: &SelectNode) -> Option<ItemScope> {
        let (Iteration::ForEach(expr) | Iteration::ForEachOrNull(expr)) = &select.iteration else {
            return None;
        };
        let path = PathPlan::compile(expr)?;
        if !matches!(path.source, Source::Focus) {
            return None;
        }
        // Plain member steps only (`component`, `contact.telecom`).
        let edges = path
            .steps
            .iter()
            .map(|step| match step {
                Step::Member(name) if !name.is_empty() => Some(Edge {
                    key: name.clone(),
                    mode: MatchMode::Plain,
                    first: false,
                }),
                _ => None,
            })
            .collect::<Option<Vec<_>>>()?;
        let (last, path) = edges.split_last()?;
        let parent = self.descend(0, path)?;
        let first_node = self.nodes.len();
        self.nodes.push(PlanNode::new(false));
        self.add_member(parent, &last.key, last.mode, Target::Items(first_node))?;
        Some(ItemScope {
            first_node,
            first_slot: self.slot_modes.len(),
            or_null: matches!(select.iteration, Iteration::ForEachOrNull(_)),
        })
    }

    /// Adds a column's path to the trie from node `start` (the resource, or a `forEach` item).
    fn column_source(&mut self, path: &PathPlan, start: usize) -> Option<ColumnSource> {
        match &path.source {
            Source::Focus => self
                .route(start, &path.steps, SlotMode::Single)
                .map(ColumnSource::Slot),
            // The resource's key, read at the resource's root only.
            Source::ResourceKey if start != 0 => None,
            Source::ResourceKey => {
                let mode = first_steps_only(&path.steps)?;
                let slot = self.new_slot(mode);
                self.add_leaf(0, "id", MatchMode::Raw, Leaf::StrOnly(slot))?;
                Some(ColumnSource::Slot(slot))
            }
            Source::FirstOf(branches) => {
                if !path.steps.is_empty() {
                    return None;
                }
                let slots = branches
                    .iter()
                    .map(|branch| match branch.source {
                        Source::Focus => self.route(start, &branch.steps, SlotMode::First),
                        _ => None,
                    })
                    .collect::<Option<Vec<_>>>()?;
                Some(ColumnSource::FirstOf(slots))
            }
        }
    }

    fn new_slot(&mut self, mode: SlotMode) -> usize {
        self.slot_modes.push(mode);
        self.slot_modes.len() - 1
    }

    /// Adds the path `steps` (from trie node `start`) to the trie; its slot.
    fn route(&mut self, start: usize, steps: &[Step], mode: SlotMode) -> Option<usize> {
        let mut edges = Vec::new();
        let mut reference = None;
        let mut i = 0;
        while i < steps.len() {
            match &steps[i] {
                Step::Member(name) if !name.is_empty() => {
                    let (key, mode) = match steps.get(i + 1) {
                        Some(Step::OfType(ty)) => {
                            i += 1;
                            let suffix = choice_suffix(&ty.name)?;
                            let base_len = name.len();
                            (format!("{name}{suffix}"), MatchMode::Choice { base_len })
                        }
                        _ => (name.clone(), MatchMode::Plain),
                    };
                    i += 1;
                    let first = count_firsts(steps, &mut i) > 0;
                    edges.push(Edge { key, mode, first });
                }
                Step::ReferenceKey(wanted) => {
                    i += 1;
                    let first = count_firsts(steps, &mut i) > 0;
                    if i != steps.len() {
                        return None;
                    }
                    reference = Some((wanted.as_ref().map(|t| t.name.clone()), first));
                }
                _ => return None,
            }
        }
        match reference {
            Some((wanted, first)) => {
                let node = self.descend(start, &edges)?;
                let slot = self.new_slot(if first { SlotMode::First } else { mode });
                self.add_leaf(
                    node,
                    "reference",
                    MatchMode::Raw,
                    Leaf::ReferenceKey { slot, wanted },
                )?;
                Some(slot)
            }
            None => {
                let (last, path) = edges.split_last()?;
                let node = self.descend(start, path)?;
                let slot = self.new_slot(if last.first { SlotMode::First } else { mode });
                self.add_leaf(node, &last.key, last.mode, Leaf::Item(slot))?;
                Some(slot)
            }
        }
    }

    /// The node at the end of `edges` from node `start`, created as needed.
    fn descend(&mut self, start: usize, edges: &[Edge]) -> Option<usize> {
        let mut node = start;
        for edge in edges {
            let existing = self.nodes[node]
                .members
                .iter()
                .position(|m| m.key == edge.key);
            node = match existing {
                Some(i) => {
                    let member = &mut self.nodes[node].members[i];
                    member.mode = merge_modes(member.mode, edge.mode)?;
                    let Target::Node(child) = member.target else {
                        return None;
                    };
                    if self.nodes[child].first_only != edge.first {
                        return None;
                    }
                    child
                }
                None => {
                    let child = self.nodes.len();
                    self.nodes.push(PlanNode::new(edge.first));
                    self.add_member(node, &edge.key, edge.mode, Target::Node(child))?;
                    child
                }
            };
        }
        Some(node)
    }

    fn add_leaf(&mut self, node: usize, key: &str, mode: MatchMode, leaf: Leaf) -> Option<()> {
        let members = &mut self.nodes[node].members;
        match members.iter_mut().find(|m| m.key == key) {
            Some(member) => {
                member.mode = merge_modes(member.mode, mode)?;
                match &mut member.target {
                    Target::Leaves(leaves) => leaves.push(leaf),
                    Target::Node(_) | Target::Items(_) => return None,
                }
                Some(())
            }
            None => self.add_member(node, key, mode, Target::Leaves(vec![leaf])),
        }
    }

    fn add_member(
        &mut self,
        node: usize,
        key: &str,
        mode: MatchMode,
        target: Target,
    ) -> Option<()> {
        let node = &mut self.nodes[node];
        let i = node.members.len();
        if i >= 64 {
            return None;
        }
        let first = *key.as_bytes().first()?;
        node.by_first_byte[first as usize] |= 1 << i;
        let base = match mode {
            MatchMode::Choice { base_len } => Some(Name::new(key.get(..base_len)?)),
            _ => None,
        };
        node.members.push(Member {
            key: key.to_string(),
            name: Name::new(key),
            base,
            mode,
            target,
        });
        Some(())
    }

    /// Reads one resource text: `Ok(n)`, its `n` rows in `state.values` (none when the resource is
    /// of another type, or has no `forEach` items); `Err(Bail)`: the general path must read it.
    pub(crate) fn row(&self, text: &str, state: &mut RowState) -> Scan<usize> {
        state.slots.clear();
        state.slots.resize(self.slot_modes.len(), None);
        state.item_slots.clear();
        state.items = 0;
        state.taken.clear();
        state.taken.resize(self.nodes.len(), false);
        state.id = None;
        state.resource_type = None;
        state.keys.resize(self.nodes.len(), Vec::new());
        let mut scanner = Scanner::new(text);
        scanner.ws();
        self.object(&mut scanner, 0, state)?;
        scanner.ws();
        if !scanner.at_end() {
            return Err(Bail);
        }
        let of_the_view = state.resource_type.is_some_and(|s| {
            let key = Key {
                start: s.start as usize,
                len: (s.end - s.start) as usize,
            };
            self.resource.is(text.as_bytes(), key)
        });
        if !of_the_view {
            return Ok(0);
        }
        let rows = match self.items {
            None => 1,
            Some(items) if state.items == 0 => usize::from(items.or_null),
            Some(_) => state.items,
        };
        state.values.clear();
        for row in 0..rows {
            for (source, kind) in &self.columns {
                let scalar = match source {
                    ColumnSource::Slot(slot) => self.slot_value(state, row, *slot),
                    ColumnSource::FirstOf(slots) => slots
                        .iter()
                        .find_map(|slot| self.slot_value(state, row, *slot)),
                };
                let value = match scalar {
                    None => Value::Null,
                    Some(scalar) => convert(*kind, scalar, text)?,
                };
                state.values.push(value);
            }
        }
        Ok(rows)
    }

    /// What `slot` holds for row `row` (item slots per item; none for a `forEachOrNull` row
    /// without an item).
    fn slot_value(&self, state: &RowState, row: usize, slot: usize) -> Option<Scalar> {
        match self.items {
            Some(items) if slot >= items.first_slot => {
                let stride = self.slot_modes.len() - items.first_slot;
                state
                    .item_slots
                    .get(row * stride + slot - items.first_slot)
                    .copied()
                    .flatten()
            }
            _ => state.slots[slot],
        }
    }

    /// The members of one object at trie node `node`.
    fn object(&self, scanner: &mut Scanner<'_>, node: usize, state: &mut RowState) -> Scan<()> {
        let plan = &self.nodes[node];
        if !scanner.open(b'{', b'}')? {
            return Ok(());
        }
        let mut seen = 0u64;
        let mut position = 0;
        loop {
            let key = scanner.key()?;
            let found = cached_lookup(plan, &mut state.keys[node], position, scanner.bytes(), key);
            position += 1;
            match found {
                Lookup::Skip => scanner.skip_value(MAX_DEPTH)?,
                Lookup::Bail => return Err(Bail),
                Lookup::Member(i) => {
                    let member = &plan.members[i];
                    let repeated =
                        !matches!(member.mode, MatchMode::Choice { .. }) && seen & (1 << i) != 0;
                    seen |= 1 << i;
                    match &member.target {
                        _ if repeated => scanner.skip_value(MAX_DEPTH)?,
                        Target::Node(child) => {
                            self.objects(scanner, *child, state, Self::item_object)?
                        }
                        Target::Leaves(leaves) => self.leaves_value(scanner, leaves, state)?,
                        Target::Items(node) => self.objects(scanner, *node, state, Self::item)?,
                    }
                }
            }
            if !scanner.next_or_close(b'}')? {
                return Ok(());
            }
        }
    }

    /// A member value read as objects: an object, an array of objects and nulls, or null. `each`
    /// reads every object at trie node `node` (a `forEach` item, or an object the trie goes into);
    /// anything else bails.
    #[inline]
    fn objects(
        &self,
        scanner: &mut Scanner<'_>,
        node: usize,
        state: &mut RowState,
        each: impl Fn(&Self, &mut Scanner<'_>, usize, &mut RowState) -> Scan<()>,
    ) -> Scan<()> {
        let one = |scanner: &mut Scanner<'_>, state: &mut RowState| match scanner.peek()? {
            b'{' => each(self, scanner, node, state),
            b'n' if scanner.scalar()?.kind == ScalarKind::Null => Ok(()),
            _ => Err(Bail),
        };
        if scanner.peek()? != b'[' {
            return one(scanner, state);
        }
        if scanner.open(b'[', b']')? {
            loop {
                one(scanner, state)?;
                if !scanner.next_or_close(b']')? {
                    break;
                }
            }
        }
        Ok(())
    }

    /// One `forEach` item: fresh slots and `first()` flags, then its members.
    fn item(&self, scanner: &mut Scanner<'_>, node: usize, state: &mut RowState) -> Scan<()> {
        let items = self.items.ok_or(Bail)?;
        state.items += 1;
        let stride = self.slot_modes.len() - items.first_slot;
        state
            .item_slots
            .resize(state.item_slots.len() + stride, None);
        state.taken[items.first_node..].fill(false);
        self.object(scanner, node, state)
    }

    fn item_object(
        &self,
        scanner: &mut Scanner<'_>,
        node: usize,
        state: &mut RowState,
    ) -> Scan<()> {
        if self.nodes[node].first_only {
            if state.taken[node] {
                return scanner.skip_value(MAX_DEPTH);
            }
            state.taken[node] = true;
        }
        self.object(scanner, node, state)
    }

    /// A member value read into slots.
    fn leaves_value(
        &self,
        scanner: &mut Scanner<'_>,
        leaves: &[Leaf],
        state: &mut RowState,
    ) -> Scan<()> {
        let items = leaves.iter().any(|leaf| matches!(leaf, Leaf::Item(_)));
        match scanner.peek()? {
            // An object read as a value (its JSON text, in the general path), or one only the
            // raw leaves see (they ignore anything but a string).
            b'{' if items => Err(Bail),
            b'{' => scanner.skip_value(MAX_DEPTH),
            b'[' if items => {
                if scanner.open(b'[', b']')? {
                    loop {
                        let item = match scanner.peek()? {
                            b'{' | b'[' => return Err(Bail),
                            _ => scanner.scalar()?,
                        };
                        if item.kind != ScalarKind::Null {
                            for leaf in leaves {
                                if let Leaf::Item(slot) = leaf {
                                    self.hit(state, *slot, item)?;
                                }
                            }
                        }
                        if !scanner.next_or_close(b']')? {
                            break;
                        }
                    }
                }
                Ok(())
            }
            b'[' => scanner.skip_value(MAX_DEPTH),
            _ => {
                let value = scanner.scalar()?;
                if value.kind == ScalarKind::Null {
                    return Ok(());
                }
                for leaf in leaves {
                    self.leaf(state, leaf, value, scanner)?;
                }
                Ok(())
            }
        }
    }

    fn leaf(
        &self,
        state: &mut RowState,
        leaf: &Leaf,
        value: Scalar,
        scanner: &Scanner<'_>,
    ) -> Scan<()> {
        let string = match value.kind {
            ScalarKind::Str => Some(value),
            ScalarKind::EscapedStr => return Err(Bail),
            _ => None,
        };
        match leaf {
            Leaf::Item(slot) => self.hit(state, *slot, value),
            Leaf::StrOnly(slot) => match string {
                Some(s) => self.hit(state, *slot, s),
                None => Ok(()),
            },
            Leaf::Id => {
                state.id = string;
                Ok(())
            }
            Leaf::ResourceType => {
                state.resource_type = string;
                Ok(())
            }
            Leaf::ReferenceKey { slot, wanted } => {
                let Some(s) = string else {
                    return Ok(());
                };
                let text = scanner.text();
                let reference = text.get(s.start as usize..s.end as usize).ok_or(Bail)?;
                let Some((ty, id)) = reference_parts(reference) else {
                    return Ok(());
                };
                if wanted.as_deref().is_some_and(|w| ty != Some(w)) {
                    return Ok(());
                }
                let start = id.as_ptr() as usize - text.as_ptr() as usize;
                let key = Scalar {
                    kind: ScalarKind::Str,
                    start: u32::try_from(start).map_err(|_| Bail)?,
                    end: u32::try_from(start + id.len()).map_err(|_| Bail)?,
                };
                self.hit(state, *slot, key)
            }
        }
    }

    #[inline]
    fn hit(&self, state: &mut RowState, slot: usize, value: Scalar) -> Scan<()> {
        if value.kind == ScalarKind::EscapedStr {
            return Err(Bail);
        }
        let cell = match self.items {
            Some(items) if slot >= items.first_slot => {
                let stride = self.slot_modes.len() - items.first_slot;
                let at =
                    (state.items.checked_sub(1).ok_or(Bail)?) * stride + slot - items.first_slot;
                state.item_slots.get_mut(at).ok_or(Bail)?
            }
            _ => &mut state.slots[slot],
        };
        match (&cell, self.slot_modes[slot]) {
            (None, _) => {
                *cell = Some(value);
                Ok(())
            }
            (Some(_), SlotMode::First) => Ok(()),
            (Some(_), SlotMode::Single) => Err(Bail),
        }
    }
}

/// [`PlanNode::lookup`] through the node's key cache.
#[inline]
fn cached_lookup(
    plan: &PlanNode,
    cache: &mut Vec<CachedKey>,
    position: usize,
    text: &[u8],
    key: Key,
) -> Lookup {
    if key.len > CACHED_KEY_MAX {
        return plan.lookup(text, key);
    }
    let word = |k: usize| key_word(text, key.start + 8 * k, key.len.saturating_sub(8 * k));
    // Word by word, and only as many as the key has (an array compare of words just stored
    // stalls on store forwarding).
    if let Some(cached) = cache.get(position)
        && cached.len == key.len
        && cached.words[0] == word(0)
        && (key.len <= 8 || cached.words[1] == word(1))
        && (key.len <= 16 || cached.words[2] == word(2))
    {
        return cached.found;
    }
    let words = [word(0), word(1), word(2)];
    let found = plan.lookup(text, key);
    if position < CACHED_KEYS {
        if cache.len() <= position {
            cache.resize(
                position + 1,
                CachedKey {
                    len: usize::MAX,
                    words: [0; 3],
                    found: Lookup::Skip,
                },
            );
        }
        cache[position] = CachedKey {
            len: key.len,
            words,
            found,
        };
    }
    found
}

/// A scalar as a value of a column kind, exactly as the general path appends it, or bail.
fn convert(kind: ColumnKind, scalar: Scalar, text: &str) -> Scan<Value> {
    let range = scalar.start as usize..scalar.end as usize;
    let raw = text.get(range).ok_or(Bail)?;
    Ok(match (kind, scalar.kind) {
        (ColumnKind::Utf8, ScalarKind::Str) => Value::Str(scalar.start, scalar.end),
        // `-0` is an integer zero to the tape parser; leave the sign question to it.
        (ColumnKind::Float64, ScalarKind::Num { int: true }) if raw != "-0" => {
            Value::F64(raw.parse::<i64>().map_err(|_| Bail)? as f64)
        }
        (ColumnKind::Float64, ScalarKind::Num { int: false }) => {
            Value::F64(raw.parse::<f64>().map_err(|_| Bail)?)
        }
        (ColumnKind::Int64, ScalarKind::Num { int: true }) => {
            Value::I64(raw.parse::<i64>().map_err(|_| Bail)?)
        }
        (ColumnKind::Boolean, ScalarKind::True) => Value::Bool(true),
        (ColumnKind::Boolean, ScalarKind::False) => Value::Bool(false),
        _ => return Err(Bail),
    })
}

/// The columns of `select` and its nested selects by slot, and the one `forEach` /
/// `forEachOrNull` select among them, if any; `None` when the selects do not fit one pass (a
/// `repeat`, a `unionAll`, two `forEach`, or selects nested in a `forEach`).
fn collect_columns<'v>(
    select: &'v SelectNode,
    out: &mut [Option<&'v ColumnExpr>],
    for_each: &mut Option<&'v SelectNode>,
) -> Option<()> {
    if !select.union_all.is_empty() {
        return None;
    }
    match select.iteration {
        Iteration::None => {}
        Iteration::ForEach(_) | Iteration::ForEachOrNull(_)
            if for_each.is_none() && select.selects.is_empty() =>
        {
            *for_each = Some(select);
        }
        _ => return None,
    }
    for column in &select.columns {
        *out.get_mut(column.slot)? = Some(column);
    }
    for nested in &select.selects {
        collect_columns(nested, out, for_each)?;
    }
    Some(())
}

/// Consumes the `first()` steps at `*i`; how many.
fn count_firsts(steps: &[Step], i: &mut usize) -> usize {
    let from = *i;
    while let Some(Step::First) = steps.get(*i) {
        *i += 1;
    }
    *i - from
}

/// `First` when `steps` are only `first()` steps (at least one), `Single` when empty.
fn first_steps_only(steps: &[Step]) -> Option<SlotMode> {
    let mut i = 0;
    let firsts = count_firsts(steps, &mut i);
    (i == steps.len()).then_some(if firsts > 0 {
        SlotMode::First
    } else {
        SlotMode::Single
    })
}

/// The key suffix of choice type `ty` (`Quantity`, `dateTime` -> `DateTime`), when it is one.
fn choice_suffix(ty: &str) -> Option<String> {
    let mut chars = ty.chars();
    let suffix: String = chars.next()?.to_uppercase().chain(chars).collect();
    is_choice_type(&suffix).then_some(suffix)
}

fn merge_modes(a: MatchMode, b: MatchMode) -> Option<MatchMode> {
    match (a, b) {
        _ if a == b => Some(a),
        (MatchMode::Plain, MatchMode::Raw) | (MatchMode::Raw, MatchMode::Plain) => {
            Some(MatchMode::Plain)
        }
        _ => None,
    }
}
