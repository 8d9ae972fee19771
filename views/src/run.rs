//! Row generation: a [`CompiledView`] applied to one resource emits its rows straight into
//! Arrow builders ([`ViewBatchBuilder`]).
//!
//! The select tree is walked depth first with an explicit stack of pending selects and one row
//! buffer: a select fills its columns for one focus, pushes its nested selects and its unionAll,
//! and the row is emitted when nothing is pending. That is the cartesian product of nested
//! selects and the concatenation of unionAll branches the spec defines, without materializing
//! partial rows.

use std::sync::Arc;

use arrow::array::{
    ArrayBuilder, ArrayRef, BooleanBuilder, Date32Builder, Float64Builder, Int64Builder, ListArray,
    StringBuilder, Time64MicrosecondBuilder, TimestampMicrosecondBuilder,
};
use arrow::buffer::{NullBuffer, OffsetBuffer};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow::record_batch::RecordBatch;

use super::definition::{ColumnKind, CompiledView, Iteration, SelectNode};
use super::fhirpath::temporal::{epoch_days, epoch_micros, time_micros};
use super::fhirpath::{Env, Item, MemberIndex, Prim, evaluate};
use super::json::{Json, JsonParser, Kind, ParseError};
use super::onepass::{RowState, Value};
use crate::Result;

/// One cell of the row being built.
#[derive(Debug, Clone)]
pub enum Cell<'a> {
    /// No value.
    Null,
    /// One value.
    One(Item<'a>),
    /// A `collection: true` column's values.
    Many(Vec<Item<'a>>),
}

/// Why a resource produced no rows or an error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RowError {
    /// The JSON path of the view element (e.g. `select[0].column[2]` or `where[0]`).
    pub element: String,
    /// What went wrong (never a value).
    pub reason: String,
}

enum Task<'s, 'a> {
    Select(&'s SelectNode, Item<'a>, i64),
    Union(&'s SelectNode, Item<'a>, i64),
}

struct Walk<'s, 'a, 'e> {
    resource: Json<'a>,
    buf: Vec<Cell<'a>>,
    emit: &'e mut dyn FnMut(&[Cell<'a>]) -> Result<(), RowError>,
    _view: &'s CompiledView,
}

fn eval_error(e: super::fhirpath::eval::EvalError) -> RowError {
    RowError {
        element: "select".into(),
        reason: e.0,
    }
}

fn too_many_values(slot: usize, count: usize) -> RowError {
    RowError {
        element: format!("column slot {slot}"),
        reason: format!(
            "the path returned {count} values; set `collection: true` or select one (e.g. `.first()`)"
        ),
    }
}

impl<'s, 'a> Walk<'s, 'a, '_> {
    fn env(&self, row_index: i64) -> Env<'a> {
        Env {
            resource: self.resource,
            row_index,
            index: 0,
        }
    }

    fn fill_columns(
        &mut self,
        node: &'s SelectNode,
        focus: &[Item<'a>],
        row_index: i64,
    ) -> Result<(), RowError> {
        let env = self.env(row_index);
        let index = match focus {
            [Item::Node(json, _)] if !node.member_names.is_empty() => {
                MemberIndex::build(*json, &node.member_names)
            }
            _ => None,
        };
        for column in &node.columns {
            let slot = column.slot;
            if let (Some(plan), false) = (&column.plan, column.collection) {
                // The common case: a plain path into a single-valued column, no allocation.
                let mut count = 0usize;
                let mut cell = Cell::Null;
                plan.for_each_indexed(focus, self.resource, index.as_ref(), &mut |item| {
                    count += 1;
                    if count == 1 {
                        cell = Cell::One(item);
                    }
                });
                if count > 1 {
                    return Err(too_many_values(slot, count));
                }
                self.buf[slot] = cell;
                continue;
            }
            let values = evaluate(&column.expr, focus, &env).map_err(eval_error)?;
            self.buf[slot] = if column.collection {
                Cell::Many(values)
            } else {
                let count = values.len();
                let mut values = values.into_iter();
                match (values.next(), count) {
                    (None, _) => Cell::Null,
                    (Some(item), 1) => Cell::One(item),
                    _ => return Err(too_many_values(slot, count)),
                }
            };
        }
        Ok(())
    }

    /// One iteration of `node`: its columns on `item`, then its nested selects and unionAll.
    fn select_on(
        &mut self,
        node: &'s SelectNode,
        item: Item<'a>,
        index: i64,
        stack: &mut Vec<Task<'s, 'a>>,
    ) -> Result<(), RowError> {
        self.fill_columns(node, std::slice::from_ref(&item), index)?;
        let mark = stack.len();
        if !node.union_all.is_empty() {
            stack.push(Task::Union(node, item.clone(), index));
        }
        for nested in node.selects.iter().rev() {
            stack.push(Task::Select(nested, item.clone(), index));
        }
        self.run(stack)?;
        stack.truncate(mark);
        Ok(())
    }

    fn run(&mut self, stack: &mut Vec<Task<'s, 'a>>) -> Result<(), RowError> {
        let Some(task) = stack.pop() else {
            return (self.emit)(&self.buf);
        };
        match &task {
            Task::Union(node, focus, row_index) => {
                for branch in &node.union_all {
                    stack.push(Task::Select(branch, focus.clone(), *row_index));
                    self.run(stack)?;
                    stack.pop();
                }
            }
            Task::Select(node, focus, row_index) => {
                let env = self.env(*row_index);
                let input = std::slice::from_ref(focus);
                let foci: Vec<(Item<'a>, i64)> = match &node.iteration {
                    Iteration::None => {
                        // Once, on the parent's focus: no collection to build.
                        self.select_on(node, focus.clone(), *row_index, stack)?;
                        stack.push(task);
                        return Ok(());
                    }
                    Iteration::ForEach(e) | Iteration::ForEachOrNull(e) => evaluate(e, input, &env)
                        .map_err(eval_error)?
                        .into_iter()
                        .zip(0..)
                        .collect(),
                    Iteration::Repeat(paths) => {
                        let mut out = Vec::new();
                        repeat(paths, focus, &env, &mut out).map_err(eval_error)?;
                        out.into_iter().zip(0..).collect()
                    }
                };
                if foci.is_empty() && matches!(node.iteration, Iteration::ForEachOrNull(_)) {
                    // One row of nulls for this select's subtree; its own columns still see
                    // `%rowIndex` (0) and literals.
                    for slot in &node.subtree_slots {
                        self.buf[*slot] = Cell::Null;
                    }
                    self.fill_columns(node, &[], 0)?;
                    self.run(stack)?;
                }
                for (item, index) in foci {
                    self.select_on(node, item, index, stack)?;
                }
            }
        }
        stack.push(task);
        Ok(())
    }
}

/// Depth-first, pre-order closure of `paths` from `focus` (the focus itself excluded).
fn repeat<'a>(
    paths: &[super::fhirpath::Expr],
    focus: &Item<'a>,
    env: &Env<'a>,
    out: &mut Vec<Item<'a>>,
) -> Result<(), super::fhirpath::eval::EvalError> {
    for path in paths {
        for child in evaluate(path, std::slice::from_ref(focus), env)? {
            out.push(child.clone());
            repeat(paths, &child, env, out)?;
        }
    }
    Ok(())
}

impl CompiledView {
    /// Does the view read resources of this type?
    pub fn applies_to(&self, resource: Json<'_>) -> bool {
        resource.resource_type() == Some(self.resource.as_str())
    }

    /// Calls `emit` with every row of `resource` (none when it is of another type or filtered
    /// out by `where`).
    pub fn rows<'a>(
        &self,
        resource: Json<'a>,
        emit: &mut dyn FnMut(&[Cell<'a>]) -> Result<(), RowError>,
    ) -> Result<(), RowError> {
        if !self.applies_to(resource) {
            return Ok(());
        }
        let focus = Item::Node(resource, None);
        let env = Env {
            resource,
            row_index: 0,
            index: 0,
        };
        for (i, filter) in self.filters.iter().enumerate() {
            let result =
                evaluate(filter, std::slice::from_ref(&focus), &env).map_err(|e| RowError {
                    element: format!("where[{i}]"),
                    reason: e.0,
                })?;
            let keep = match result.as_slice() {
                [] => false,
                [item] => match item.prim() {
                    Some(Prim::Bool(b)) => b,
                    _ => {
                        return Err(RowError {
                            element: format!("where[{i}]"),
                            reason: "the path must return a boolean".into(),
                        });
                    }
                },
                _ => {
                    return Err(RowError {
                        element: format!("where[{i}]"),
                        reason: format!("the path must return one boolean, got {}", result.len()),
                    });
                }
            };
            if !keep {
                return Ok(());
            }
        }
        let mut walk = Walk {
            resource,
            buf: vec![Cell::Null; self.columns.len()],
            emit,
            _view: self,
        };
        let mut stack = vec![Task::Select(&self.root, focus, 0)];
        walk.run(&mut stack).map_err(|mut e| {
            if let Some(slot) = e.element.strip_prefix("column slot ")
                && let Some(column) = slot.parse::<usize>().ok().and_then(|s| self.columns.get(s))
            {
                e.element = format!("column `{}`", column.name);
            }
            e
        })
    }
}

/// Builds Arrow record batches of a view's rows.
pub struct ViewBatchBuilder {
    view: Arc<CompiledView>,
    columns: Vec<ColumnBuilder>,
    rows: usize,
    /// Complete rows set aside when a later resource failed half way (see `rollback`).
    done: Vec<RecordBatch>,
    /// The `_resource_id` maintenance column, when asked for.
    resource_ids: Option<StringBuilder>,
    schema: SchemaRef,
    /// Per-row state of the one-pass reader (kept so that rows allocate nothing).
    one_pass: RowState,
    /// Resources read in one pass / through the general path by [`Self::append_text`].
    text_paths: TextPaths,
}

/// How [`ViewBatchBuilder::append_text`] read resources (for tests and benchmarks).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TextPaths {
    /// Resources read in one pass over their text.
    pub one_pass: u64,
    /// Resources parsed into a tree and run through the general path.
    pub general: u64,
}

/// Name of the maintenance column materialized views carry: the resource each row came from.
pub const RESOURCE_ID_COLUMN: &str = "_resource_id";

impl std::fmt::Debug for ViewBatchBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ViewBatchBuilder")
            .field("view", &self.view.label())
            .field("rows", &self.rows)
            .finish()
    }
}

enum Values {
    Utf8(StringBuilder),
    Int64(Int64Builder),
    Float64(Float64Builder),
    Boolean(BooleanBuilder),
    Date32(Date32Builder),
    Timestamp(TimestampMicrosecondBuilder),
    Time64(Time64MicrosecondBuilder),
}

struct ColumnBuilder {
    kind: ColumnKind,
    values: Values,
    /// Offsets and validity of a `collection` column.
    list: Option<(Vec<i32>, Vec<bool>)>,
}

impl ColumnBuilder {
    fn new(kind: ColumnKind, collection: bool) -> Self {
        let values = match kind {
            ColumnKind::Utf8 => Values::Utf8(StringBuilder::new()),
            ColumnKind::Int64 => Values::Int64(Int64Builder::new()),
            ColumnKind::Float64 => Values::Float64(Float64Builder::new()),
            ColumnKind::Boolean => Values::Boolean(BooleanBuilder::new()),
            ColumnKind::Date32 => Values::Date32(Date32Builder::new()),
            ColumnKind::Timestamp => {
                Values::Timestamp(TimestampMicrosecondBuilder::new().with_timezone("UTC"))
            }
            ColumnKind::Time64 => Values::Time64(Time64MicrosecondBuilder::new()),
        };
        Self {
            kind,
            values,
            list: collection.then(|| (vec![0], Vec::new())),
        }
    }

    fn len(&self) -> usize {
        match &self.values {
            Values::Utf8(b) => b.len(),
            Values::Int64(b) => b.len(),
            Values::Float64(b) => b.len(),
            Values::Boolean(b) => b.len(),
            Values::Date32(b) => b.len(),
            Values::Timestamp(b) => b.len(),
            Values::Time64(b) => b.len(),
        }
    }

    fn append_null(&mut self) {
        match &mut self.values {
            Values::Utf8(b) => b.append_null(),
            Values::Int64(b) => b.append_null(),
            Values::Float64(b) => b.append_null(),
            Values::Boolean(b) => b.append_null(),
            Values::Date32(b) => b.append_null(),
            Values::Timestamp(b) => b.append_null(),
            Values::Time64(b) => b.append_null(),
        }
    }

    /// Appends one value; `Err` names the expected type.
    fn append_item(&mut self, item: &Item<'_>) -> Result<(), &'static str> {
        // Straight from the JSON node for the common cases (no `Prim` built: a decimal's `Prim`
        // carries its printed precision, which costs a float formatting).
        if let Item::Node(json, _) = item {
            match (&mut self.values, json.kind()) {
                (Values::Utf8(b), Kind::Str(s)) => {
                    b.append_value(s);
                    return Ok(());
                }
                (Values::Float64(b), Kind::Float(f)) => {
                    b.append_value(f);
                    return Ok(());
                }
                (Values::Float64(b), Kind::Int(i)) => {
                    b.append_value(i as f64);
                    return Ok(());
                }
                _ => {}
            }
        }
        let prim = item.prim();
        match &mut self.values {
            Values::Utf8(b) => match (prim, item) {
                (Some(p), _) => b.append_value(p.to_text()),
                (None, Item::Node(json, _)) => b.append_value(json.to_json_string()),
                (None, Item::Prim(_)) => b.append_null(),
            },
            Values::Int64(b) => match prim {
                Some(Prim::Int(i)) => b.append_value(i),
                Some(Prim::Dec(f, _)) if f.fract() == 0.0 && f.abs() < 9.0e15 => {
                    b.append_value(f as i64)
                }
                Some(Prim::Str(s)) => b.append_value(s.trim().parse().map_err(|_| "integer")?),
                _ => return Err("integer"),
            },
            Values::Float64(b) => match prim {
                Some(Prim::Int(i)) => b.append_value(i as f64),
                Some(Prim::Dec(f, _)) => b.append_value(f),
                Some(Prim::Str(s)) => b.append_value(s.trim().parse().map_err(|_| "decimal")?),
                _ => return Err("decimal"),
            },
            Values::Boolean(b) => match prim {
                Some(Prim::Bool(v)) => b.append_value(v),
                _ => return Err("boolean"),
            },
            Values::Date32(b) => {
                let text = prim
                    .as_ref()
                    .filter(|p| !matches!(p, Prim::Bool(_) | Prim::Int(_) | Prim::Dec(..)));
                b.append_value(text.and_then(|p| epoch_days(&p.to_text())).ok_or("date")?)
            }
            Values::Timestamp(b) => {
                let text = prim
                    .as_ref()
                    .filter(|p| !matches!(p, Prim::Bool(_) | Prim::Int(_) | Prim::Dec(..)));
                b.append_value(
                    text.and_then(|p| epoch_micros(&p.to_text()))
                        .ok_or("timestamp")?,
                )
            }
            Values::Time64(b) => {
                let text = prim
                    .as_ref()
                    .filter(|p| !matches!(p, Prim::Bool(_) | Prim::Int(_) | Prim::Dec(..)));
                b.append_value(text.and_then(|p| time_micros(&p.to_text())).ok_or("time")?)
            }
        }
        Ok(())
    }

    fn append(&mut self, cell: &Cell<'_>) -> Result<(), &'static str> {
        match (&mut self.list, cell) {
            (None, Cell::Null) => self.append_null(),
            (None, Cell::One(item)) => self.append_item(item)?,
            (None, Cell::Many(_)) => return Err("single value"),
            (Some(_), Cell::Null) => {
                let (offsets, valid) = self.list.as_mut().ok_or("list")?;
                offsets.push(*offsets.last().unwrap_or(&0));
                valid.push(false);
            }
            (Some(_), Cell::One(item)) => {
                self.append_item(item)?;
                self.close_list(true);
            }
            (Some(_), Cell::Many(items)) => {
                for item in items {
                    self.append_item(item)?;
                }
                self.close_list(true);
            }
        }
        Ok(())
    }

    /// Appends a one-pass value (its kind was checked against the column's when converted).
    fn append_value(&mut self, value: Value, text: &str) {
        match (&mut self.values, value) {
            (Values::Utf8(b), Value::Str(start, end)) => {
                b.append_value(text.get(start as usize..end as usize).unwrap_or_default())
            }
            (Values::Float64(b), Value::F64(f)) => b.append_value(f),
            (Values::Int64(b), Value::I64(i)) => b.append_value(i),
            (Values::Boolean(b), Value::Bool(v)) => b.append_value(v),
            _ => self.append_null(),
        }
    }

    fn close_list(&mut self, valid: bool) {
        let len = self.len() as i32;
        if let Some((offsets, validity)) = &mut self.list {
            offsets.push(len);
            validity.push(valid);
        }
    }

    fn finish(&mut self) -> ArrayRef {
        let values: ArrayRef = match &mut self.values {
            Values::Utf8(b) => Arc::new(b.finish()),
            Values::Int64(b) => Arc::new(b.finish()),
            Values::Float64(b) => Arc::new(b.finish()),
            Values::Boolean(b) => Arc::new(b.finish()),
            Values::Date32(b) => Arc::new(b.finish()),
            Values::Timestamp(b) => Arc::new(b.finish()),
            Values::Time64(b) => Arc::new(b.finish()),
        };
        match &mut self.list {
            None => values,
            Some((offsets, valid)) => {
                let field = Arc::new(Field::new("item", self.kind.data_type(), true));
                let offsets_buf = OffsetBuffer::new(std::mem::replace(offsets, vec![0]).into());
                let nulls = NullBuffer::from(std::mem::take(valid));
                Arc::new(ListArray::new(field, offsets_buf, values, Some(nulls)))
            }
        }
    }
}

impl ViewBatchBuilder {
    /// A builder for `view`'s rows.
    pub fn new(view: Arc<CompiledView>) -> Self {
        let columns = view
            .columns
            .iter()
            .map(|c| ColumnBuilder::new(c.kind, c.collection))
            .collect();
        Self {
            schema: view.schema(),
            view,
            columns,
            rows: 0,
            done: Vec::new(),
            resource_ids: None,
            one_pass: RowState::default(),
            text_paths: TextPaths::default(),
        }
    }

    /// Adds the `_resource_id` column (the resource's `id`) after the view's columns.
    pub fn with_resource_id_column(mut self) -> Self {
        let mut fields: Vec<Field> = self
            .view
            .schema()
            .fields()
            .iter()
            .map(|f| f.as_ref().clone())
            .collect();
        fields.push(Field::new(RESOURCE_ID_COLUMN, DataType::Utf8, false));
        self.schema = Arc::new(Schema::new(fields));
        self.resource_ids = Some(StringBuilder::new());
        self
    }

    /// The schema of the batches this builder produces.
    pub fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    /// The view.
    pub fn view(&self) -> &Arc<CompiledView> {
        &self.view
    }

    /// Rows appended since the last [`Self::finish`].
    pub fn len(&self) -> usize {
        self.buffered_rows()
    }

    /// True when no row is buffered.
    pub fn is_empty(&self) -> bool {
        self.buffered_rows() == 0
    }

    /// Appends the rows of one resource. Either all its rows are appended or none: a resource
    /// that fails part way is reported and the rows appended before it are kept.
    pub fn append(&mut self, resource: Json<'_>) -> Result<usize, RowError> {
        let view = self.view.clone();
        let columns = &mut self.columns;
        let mut count = 0;
        let result = view.rows(resource, &mut |cells| {
            for ((builder, cell), spec) in columns.iter_mut().zip(cells).zip(&view.columns) {
                builder.append(cell).map_err(|expected| RowError {
                    element: format!("column `{}`", spec.name),
                    reason: format!("the value is not a(n) {expected}"),
                })?;
            }
            count += 1;
            Ok(())
        });
        match result {
            Ok(()) => {
                if let Some(ids) = &mut self.resource_ids {
                    let id = resource
                        .member("id")
                        .and_then(Json::text)
                        .unwrap_or_default();
                    for _ in 0..count {
                        ids.append_value(id);
                    }
                }
                self.rows += count;
                Ok(count)
            }
            Err(e) => {
                self.rollback();
                Err(e)
            }
        }
    }

    /// Appends the rows of one resource given as JSON text: in one pass over the text when the
    /// view and the resource allow it (see `crate::onepass`), else parsed by `parser` and
    /// appended as [`Self::append`] does. The rows are the same either way.
    pub fn append_text(
        &mut self,
        text: &str,
        parser: &mut JsonParser,
    ) -> Result<Result<usize, RowError>, ParseError> {
        if let Some(plan) = &self.view.one_pass
            && let Ok(rows) = plan.row(text, &mut self.one_pass)
        {
            self.text_paths.one_pass += 1;
            let width = self.columns.len();
            for row in self.one_pass.values.chunks(width.max(1)).take(rows) {
                for (builder, value) in self.columns.iter_mut().zip(row) {
                    builder.append_value(*value, text);
                }
            }
            if let Some(ids) = &mut self.resource_ids {
                let id = self.one_pass.id(text);
                for _ in 0..rows {
                    ids.append_value(id);
                }
            }
            self.rows += rows;
            return Ok(Ok(rows));
        }
        self.text_paths.general += 1;
        parser.parse(text, |json| self.append(json))
    }

    /// How [`Self::append_text`] has read resources so far.
    pub fn text_paths(&self) -> TextPaths {
        self.text_paths
    }

    /// Drops whatever a failed resource appended: the rows before it move to `done`.
    fn rollback(&mut self) {
        let keep = self.rows;
        let arrays: Vec<ArrayRef> = self
            .take_arrays()
            .into_iter()
            .map(|a| a.slice(0, keep))
            .collect();
        if keep > 0
            && let Ok(batch) = RecordBatch::try_new(self.schema.clone(), arrays)
        {
            self.done.push(batch);
        }
    }

    /// Every column's values so far (view columns, then `_resource_id`); the builders restart.
    fn take_arrays(&mut self) -> Vec<ArrayRef> {
        self.rows = 0;
        self.columns
            .iter_mut()
            .map(ColumnBuilder::finish)
            .chain(
                self.resource_ids
                    .as_mut()
                    .map(|ids| Arc::new(ids.finish()) as ArrayRef),
            )
            .collect()
    }

    /// The buffered rows as a record batch; the builder starts empty again.
    pub fn finish(&mut self) -> Result<RecordBatch> {
        let arrays = self.take_arrays();
        let batch = RecordBatch::try_new(self.schema.clone(), arrays)?;
        if self.done.is_empty() {
            return Ok(batch);
        }
        let mut batches = std::mem::take(&mut self.done);
        batches.push(batch);
        Ok(arrow::compute::concat_batches(&self.schema, &batches)?)
    }

    /// Rows buffered, including those kept across a rollback.
    pub fn buffered_rows(&self) -> usize {
        self.rows + self.done.iter().map(RecordBatch::num_rows).sum::<usize>()
    }
}

/// One JSON object per row, keys in column order, nulls explicit, lists as arrays: the `$run`
/// ndjson output (also what `fhirlake sql --format ndjson` writes).
pub fn ndjson_rows(batch: &RecordBatch) -> Result<Vec<u8>> {
    let mut buf = Vec::new();
    let mut writer = arrow::json::WriterBuilder::new()
        .with_explicit_nulls(true)
        .build::<_, arrow::json::writer::LineDelimited>(&mut buf);
    writer.write(batch)?;
    writer.finish()?;
    drop(writer);
    Ok(buf)
}
