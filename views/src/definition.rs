//! ViewDefinition JSON -> [`CompiledView`]: validation (with the JSON path of the offending
//! element in every message), constant resolution, column slots and output types.

use std::collections::HashSet;
use std::sync::Arc;

use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use serde_json::Value;

use super::fhirpath::{self, Expr, Func, Literal};
use crate::{Error, Result};

/// The Arrow shape of one output column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ColumnKind {
    /// Text (string-like FHIR types, and dates/times unless an `ansi/type` tag says otherwise).
    Utf8,
    /// integer, positiveInt, unsignedInt, integer64.
    Int64,
    /// decimal.
    Float64,
    /// boolean.
    Boolean,
    /// `ansi/type` DATE.
    Date32,
    /// `ansi/type` TIMESTAMP (UTC microseconds).
    Timestamp,
    /// `ansi/type` TIME (microseconds since midnight).
    Time64,
}

impl ColumnKind {
    /// The Arrow type of one value.
    pub fn data_type(self) -> DataType {
        match self {
            ColumnKind::Utf8 => DataType::Utf8,
            ColumnKind::Int64 => DataType::Int64,
            ColumnKind::Float64 => DataType::Float64,
            ColumnKind::Boolean => DataType::Boolean,
            ColumnKind::Date32 => DataType::Date32,
            ColumnKind::Timestamp => DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            ColumnKind::Time64 => DataType::Time64(TimeUnit::Microsecond),
        }
    }

    fn from_fhir_type(ty: &str) -> Option<Self> {
        Some(match ty {
            "boolean" => ColumnKind::Boolean,
            "integer" | "positiveInt" | "unsignedInt" | "integer64" => ColumnKind::Int64,
            "decimal" => ColumnKind::Float64,
            "string" | "code" | "id" | "uri" | "url" | "canonical" | "markdown" | "oid"
            | "uuid" | "base64Binary" | "date" | "dateTime" | "instant" | "time" | "xhtml" => {
                ColumnKind::Utf8
            }
            _ => return None,
        })
    }

    fn from_ansi(ty: &str) -> Option<Self> {
        let upper = ty.trim().to_ascii_uppercase();
        let base = upper.split(['(', ' ']).next().unwrap_or("");
        Some(match base {
            "VARCHAR" | "CHAR" | "CHARACTER" | "TEXT" | "STRING" | "CLOB" | "NVARCHAR" => {
                ColumnKind::Utf8
            }
            "INTEGER" | "INT" | "BIGINT" | "SMALLINT" | "TINYINT" => ColumnKind::Int64,
            "DECIMAL" | "NUMERIC" | "DOUBLE" | "FLOAT" | "REAL" => ColumnKind::Float64,
            "BOOLEAN" | "BOOL" => ColumnKind::Boolean,
            "DATE" => ColumnKind::Date32,
            "TIMESTAMP" | "DATETIME" => ColumnKind::Timestamp,
            "TIME" => ColumnKind::Time64,
            _ => return None,
        })
    }
}

/// One output column.
#[derive(Debug, Clone)]
pub struct ColumnSpec {
    /// Column name.
    pub name: String,
    /// The FHIR type given in the view (`type`), if any.
    pub fhir_type: Option<String>,
    /// Arrow shape of each value.
    pub kind: ColumnKind,
    /// One value per row (false) or an array (true).
    pub collection: bool,
    /// `description` from the view.
    pub description: Option<String>,
}

/// How a select iterates over its focus.
#[derive(Debug, Clone)]
pub(crate) enum Iteration {
    /// Once, on the parent's focus.
    None,
    /// Once per item of the expression; no rows when empty.
    ForEach(Expr),
    /// Once per item; one row of nulls when empty.
    ForEachOrNull(Expr),
    /// Every node reachable by repeatedly applying the expressions, depth first.
    Repeat(Vec<Expr>),
}

/// One column of a select: where its value goes and how it is computed.
#[derive(Debug, Clone)]
pub(crate) struct ColumnExpr {
    /// Output slot (column index in the view).
    pub slot: usize,
    /// The column's FHIRPath.
    pub expr: Expr,
    /// `collection: true`.
    pub collection: bool,
    /// The path compiled to a streaming walk, when it is a plain path.
    pub plan: Option<fhirpath::PathPlan>,
}

/// A compiled `select` element.
#[derive(Debug, Clone)]
pub(crate) struct SelectNode {
    pub iteration: Iteration,
    pub columns: Vec<ColumnExpr>,
    /// First member names of the compiled columns (see `fhirpath::MemberIndex`).
    pub member_names: fhirpath::MemberNames,
    pub selects: Vec<SelectNode>,
    pub union_all: Vec<SelectNode>,
    /// Every slot this select and its descendants fill (nulls for an empty `forEachOrNull`).
    pub subtree_slots: Vec<usize>,
}

/// A validated, compiled ViewDefinition.
#[derive(Debug, Clone)]
pub struct CompiledView {
    /// `name` of the view (may be absent for ad-hoc `$run`).
    pub name: Option<String>,
    /// The resource type the view reads.
    pub resource: String,
    /// Output columns in order.
    pub columns: Vec<ColumnSpec>,
    pub(crate) root: SelectNode,
    pub(crate) filters: Vec<Expr>,
    /// The view as one pass over resource text, when it is flat enough (see `crate::onepass`).
    pub(crate) one_pass: Option<Arc<crate::onepass::OnePassPlan>>,
    schema: SchemaRef,
}

impl CompiledView {
    /// Parses and compiles a ViewDefinition from JSON text.
    pub fn from_json_text(text: &str) -> Result<Self> {
        let value: Value = serde_json::from_str(text).map_err(|e| Error::ViewDefinition {
            path: "$".to_string(),
            reason: format!("not valid JSON: {e}"),
        })?;
        Self::compile(&value)
    }

    /// Compiles a parsed ViewDefinition.
    pub fn compile(view: &Value) -> Result<Self> {
        Compiler::default().view(view)
    }

    /// The Arrow schema of the rows.
    pub fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    /// True when rows can be read from resource text in one pass, without a tree of the
    /// resource (see [`crate::ViewBatchBuilder::append_text`]).
    pub fn reads_text_in_one_pass(&self) -> bool {
        self.one_pass.is_some()
    }

    /// A short label for messages: the view name, or its resource type.
    pub fn label(&self) -> &str {
        self.name.as_deref().unwrap_or(&self.resource)
    }
}

fn invalid<T>(path: &str, reason: impl Into<String>) -> Result<T> {
    Err(Error::ViewDefinition {
        path: path.to_string(),
        reason: reason.into(),
    })
}

#[derive(Default)]
struct Compiler {
    constants: Vec<(String, Literal)>,
    columns: Vec<ColumnSpec>,
    /// Next slot to assign; unionAll branches rewind it so they share slots.
    next_slot: usize,
}

const VIEW_KEYS: &[&str] = &[
    "resourceType",
    "id",
    "url",
    "identifier",
    "name",
    "title",
    "meta",
    "status",
    "experimental",
    "publisher",
    "contact",
    "description",
    "useContext",
    "copyright",
    "resource",
    "resourceVersion",
    "fhirVersion",
    "constant",
    "select",
    "where",
    "extension",
    "text",
    "version",
    "date",
    "profile",
    "language",
    "implicitRules",
    "modifierExtension",
];
const SELECT_KEYS: &[&str] = &[
    "column",
    "select",
    "forEach",
    "forEachOrNull",
    "repeat",
    "unionAll",
    "extension",
    "id",
];
const COLUMN_KEYS: &[&str] = &[
    "name",
    "path",
    "description",
    "collection",
    "type",
    "tag",
    "extension",
    "id",
];

fn check_keys(value: &Value, allowed: &[&str], path: &str) -> Result<()> {
    if let Some(map) = value.as_object() {
        for key in map.keys() {
            if !allowed.contains(&key.as_str()) {
                return invalid(&format!("{path}.{key}"), "unknown element");
            }
        }
    }
    Ok(())
}

fn array<'v>(value: &'v Value, key: &str, path: &str) -> Result<&'v [Value]> {
    match value.get(key) {
        None => Ok(&[]),
        Some(Value::Array(items)) => Ok(items),
        Some(_) => invalid(&format!("{path}.{key}"), "must be an array"),
    }
}

fn is_valid_name(name: &str) -> bool {
    name.starts_with(|c: char| c.is_ascii_alphabetic())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

impl Compiler {
    fn view(mut self, view: &Value) -> Result<CompiledView> {
        if !view.is_object() {
            return invalid("$", "a ViewDefinition must be a JSON object");
        }
        if let Some(rt) = view.get("resourceType")
            && rt != "ViewDefinition"
        {
            return invalid("resourceType", "must be `ViewDefinition`");
        }
        check_keys(view, VIEW_KEYS, "ViewDefinition")?;
        let resource = match view.get("resource") {
            Some(Value::String(r)) if is_valid_name(r) => r.clone(),
            Some(_) => return invalid("resource", "must be a FHIR resource type name"),
            None => return invalid("resource", "is required"),
        };
        let name = match view.get("name") {
            None => None,
            Some(Value::String(n)) if is_valid_name(n) => Some(n.clone()),
            Some(_) => {
                return invalid(
                    "name",
                    "must start with a letter and contain only letters, digits and `_`",
                );
            }
        };
        for (i, constant) in array(view, "constant", "ViewDefinition")?
            .iter()
            .enumerate()
        {
            self.constant(constant, &format!("constant[{i}]"))?;
        }
        let selects = array(view, "select", "ViewDefinition")?;
        if selects.is_empty() {
            return invalid("select", "at least one select is required");
        }
        let mut root_selects = Vec::new();
        for (i, select) in selects.iter().enumerate() {
            root_selects.push(self.select(select, &format!("select[{i}]"))?);
        }
        let mut filters = Vec::new();
        for (i, filter) in array(view, "where", "ViewDefinition")?.iter().enumerate() {
            let path = format!("where[{i}]");
            check_keys(filter, &["path", "description", "extension"], &path)?;
            match filter.get("path") {
                Some(Value::String(p)) => {
                    filters.push(self.expression(p, &format!("{path}.path"))?)
                }
                _ => return invalid(&format!("{path}.path"), "a string FHIRPath is required"),
            }
        }
        let mut seen = HashSet::new();
        for column in &self.columns {
            if !seen.insert(column.name.as_str()) {
                return invalid(
                    "select",
                    format!("column name `{}` is used twice", column.name),
                );
            }
        }
        let subtree_slots = (0..self.columns.len()).collect();
        let root = SelectNode {
            iteration: Iteration::None,
            columns: Vec::new(),
            member_names: fhirpath::MemberNames::new(Vec::new()),
            selects: root_selects,
            union_all: Vec::new(),
            subtree_slots,
        };
        let fields: Vec<Field> = self
            .columns
            .iter()
            .map(|c| {
                let item = c.kind.data_type();
                let data_type = if c.collection {
                    DataType::List(Arc::new(Field::new("item", item, true)))
                } else {
                    item
                };
                Field::new(&c.name, data_type, true)
            })
            .collect();
        let one_pass =
            crate::onepass::OnePassPlan::compile(&resource, &self.columns, &root, &filters)
                .map(Arc::new);
        Ok(CompiledView {
            name,
            resource,
            columns: self.columns,
            root,
            filters,
            one_pass,
            schema: Arc::new(Schema::new(fields)),
        })
    }

    fn constant(&mut self, constant: &Value, path: &str) -> Result<()> {
        let Some(name) = constant.get("name").and_then(Value::as_str) else {
            return invalid(&format!("{path}.name"), "is required");
        };
        if !is_valid_name(name) {
            return invalid(&format!("{path}.name"), "is not a valid name");
        }
        let Some(map) = constant.as_object() else {
            return invalid(path, "must be an object");
        };
        let mut value = None;
        for (key, v) in map {
            let Some(ty) = key.strip_prefix("value") else {
                if key != "name" && key != "description" && key != "extension" && key != "id" {
                    return invalid(&format!("{path}.{key}"), "unknown element");
                }
                continue;
            };
            let bad = || Error::ViewDefinition {
                path: format!("{path}.{key}"),
                reason: "value does not match its type".into(),
            };
            let literal = match ty {
                "Boolean" => Literal::Boolean(v.as_bool().ok_or_else(bad)?),
                "Integer" | "PositiveInt" | "UnsignedInt" | "Integer64" => {
                    Literal::Integer(v.as_i64().ok_or_else(bad)?)
                }
                "Decimal" => {
                    let f = v.as_f64().ok_or_else(bad)?;
                    Literal::Decimal(f, v.to_string())
                }
                "Date" => Literal::Date(v.as_str().ok_or_else(bad)?.to_string()),
                "DateTime" | "Instant" => {
                    Literal::DateTime(v.as_str().ok_or_else(bad)?.to_string())
                }
                "Time" => Literal::Time(v.as_str().ok_or_else(bad)?.to_string()),
                "String" | "Code" | "Id" | "Uri" | "Url" | "Canonical" | "Oid" | "Uuid"
                | "Base64Binary" | "Markdown" => {
                    Literal::String(v.as_str().ok_or_else(bad)?.to_string())
                }
                _ => return invalid(&format!("{path}.{key}"), "unsupported constant type"),
            };
            if value.replace(literal).is_some() {
                return invalid(path, "a constant has exactly one value[x]");
            }
        }
        let Some(value) = value else {
            return invalid(path, "a constant needs a value[x]");
        };
        if self.constants.iter().any(|(n, _)| n == name) {
            return invalid(&format!("{path}.name"), "constant defined twice");
        }
        self.constants.push((name.to_string(), value));
        Ok(())
    }

    fn expression(&self, text: &str, path: &str) -> Result<Expr> {
        let expr = fhirpath::parse(text).map_err(|e| Error::ViewDefinition {
            path: path.to_string(),
            reason: format!("invalid FHIRPath {e}"),
        })?;
        self.resolve(expr, path)
    }

    /// Replaces `%name` with the constant's literal, `%rowIndex` and `%resource` with their nodes.
    fn resolve(&self, expr: Expr, path: &str) -> Result<Expr> {
        let boxed = |e: Box<Expr>| self.resolve(*e, path).map(Box::new);
        Ok(match expr {
            Expr::Constant(name) => match name.as_str() {
                "rowIndex" => Expr::RowIndex,
                "resource" | "rootResource" | "context" => Expr::Resource,
                _ => match self.constants.iter().find(|(n, _)| *n == name) {
                    Some((_, literal)) => Expr::Literal(literal.clone()),
                    None => return invalid(path, format!("undefined constant `%{name}`")),
                },
            },
            Expr::Member(base, name) => Expr::Member(base.map(boxed).transpose()?, name),
            Expr::Index(base, index) => Expr::Index(boxed(base)?, boxed(index)?),
            Expr::OfType(base, ty) => Expr::OfType(boxed(base)?, ty),
            Expr::TypeOp { is, base, ty } => Expr::TypeOp {
                is,
                base: boxed(base)?,
                ty,
            },
            Expr::Call {
                func: func @ (Func::Descendants | Func::NodesByType),
                ..
            } => {
                return invalid(
                    path,
                    format!("invalid FHIRPath: unknown function `{}()`", func.name()),
                );
            }
            Expr::Call {
                base,
                func,
                args,
                type_arg,
            } => Expr::Call {
                base: base.map(boxed).transpose()?,
                func,
                args: args
                    .into_iter()
                    .map(|a| self.resolve(a, path))
                    .collect::<Result<_>>()?,
                type_arg,
            },
            Expr::Binary(op, a, b) => Expr::Binary(op, boxed(a)?, boxed(b)?),
            Expr::Negate(a) => Expr::Negate(boxed(a)?),
            other => other,
        })
    }

    fn string_path(&self, select: &Value, key: &str, path: &str) -> Result<Option<Expr>> {
        match select.get(key) {
            None => Ok(None),
            Some(Value::String(p)) => Ok(Some(self.expression(p, &format!("{path}.{key}"))?)),
            Some(_) => invalid(&format!("{path}.{key}"), "must be a FHIRPath string"),
        }
    }

    fn select(&mut self, select: &Value, path: &str) -> Result<SelectNode> {
        if !select.is_object() {
            return invalid(path, "must be an object");
        }
        check_keys(select, SELECT_KEYS, path)?;
        let for_each = self.string_path(select, "forEach", path)?;
        let for_each_or_null = self.string_path(select, "forEachOrNull", path)?;
        let repeat = match select.get("repeat") {
            None => None,
            Some(Value::Array(paths)) if !paths.is_empty() => {
                let mut exprs = Vec::new();
                for (i, p) in paths.iter().enumerate() {
                    let p_path = format!("{path}.repeat[{i}]");
                    match p {
                        Value::String(text) => exprs.push(self.expression(text, &p_path)?),
                        _ => return invalid(&p_path, "must be a FHIRPath string"),
                    }
                }
                Some(exprs)
            }
            Some(_) => return invalid(&format!("{path}.repeat"), "must be a non-empty array"),
        };
        let iteration = match (for_each, for_each_or_null, repeat) {
            (None, None, None) => Iteration::None,
            (Some(e), None, None) => Iteration::ForEach(e),
            (None, Some(e), None) => Iteration::ForEachOrNull(e),
            (None, None, Some(r)) => Iteration::Repeat(r),
            _ => {
                return invalid(
                    path,
                    "only one of forEach, forEachOrNull and repeat may be given",
                );
            }
        };
        let first_slot = self.next_slot;
        let mut columns = Vec::new();
        for (i, column) in array(select, "column", path)?.iter().enumerate() {
            let (slot, expr, collection) = self.column(column, &format!("{path}.column[{i}]"))?;
            columns.push(ColumnExpr {
                slot,
                plan: fhirpath::PathPlan::compile(&expr),
                expr,
                collection,
            });
        }
        // The first member names of the single-valued compiled columns, for one pass over the
        // focus object per iteration (see `fhirpath::MemberIndex`); worth it from two columns.
        let mut member_names = Vec::new();
        let indexed: Vec<&mut fhirpath::PathPlan> = columns
            .iter_mut()
            .filter(|c| !c.collection)
            .filter_map(|c| c.plan.as_mut())
            .collect();
        if indexed.len() >= 2 {
            for plan in indexed {
                plan.bind_first_member(&mut member_names);
            }
        }
        let mut selects = Vec::new();
        for (i, nested) in array(select, "select", path)?.iter().enumerate() {
            selects.push(self.select(nested, &format!("{path}.select[{i}]"))?);
        }
        let mut union_all = Vec::new();
        let branches = array(select, "unionAll", path)?;
        let union_start = self.next_slot;
        let mut union_end = union_start;
        for (i, branch) in branches.iter().enumerate() {
            let branch_path = format!("{path}.unionAll[{i}]");
            // Every branch fills the same slots: later branches are checked column by column
            // against the first one's (see `column`).
            self.next_slot = union_start;
            let node = self.select(branch, &branch_path)?;
            if i == 0 {
                union_end = self.next_slot;
            } else if self.next_slot != union_end {
                return invalid(
                    &branch_path,
                    "every unionAll branch must have the same columns (names, types, order)",
                );
            }
            union_all.push(node);
        }
        if !branches.is_empty() {
            self.next_slot = union_end;
        }
        if columns.is_empty() && selects.is_empty() && union_all.is_empty() {
            return invalid(path, "a select needs a column, select or unionAll");
        }
        Ok(SelectNode {
            iteration,
            columns,
            member_names: fhirpath::MemberNames::new(member_names),
            selects,
            union_all,
            subtree_slots: (first_slot..self.next_slot).collect(),
        })
    }

    fn column(&mut self, column: &Value, path: &str) -> Result<(usize, Expr, bool)> {
        if !column.is_object() {
            return invalid(path, "must be an object");
        }
        check_keys(column, COLUMN_KEYS, path)?;
        let name = match column.get("name") {
            Some(Value::String(n)) if is_valid_name(n) => n.clone(),
            Some(_) => {
                return invalid(
                    &format!("{path}.name"),
                    "must start with a letter and contain only letters, digits and `_`",
                );
            }
            None => return invalid(&format!("{path}.name"), "is required"),
        };
        let expr = match column.get("path") {
            Some(Value::String(p)) => self.expression(p, &format!("{path}.path"))?,
            _ => return invalid(&format!("{path}.path"), "a string FHIRPath is required"),
        };
        let collection = match column.get("collection") {
            None => false,
            Some(Value::Bool(b)) => *b,
            Some(_) => return invalid(&format!("{path}.collection"), "must be true or false"),
        };
        let fhir_type = match column.get("type") {
            None => None,
            Some(Value::String(t)) => Some(t.clone()),
            Some(_) => return invalid(&format!("{path}.type"), "must be a string"),
        };
        let mut ansi = None;
        for (i, tag) in array(column, "tag", path)?.iter().enumerate() {
            let tag_path = format!("{path}.tag[{i}]");
            let (Some(tag_name), Some(value)) = (
                tag.get("name").and_then(Value::as_str),
                tag.get("value").and_then(Value::as_str),
            ) else {
                return invalid(&tag_path, "a tag needs a string name and value");
            };
            if tag_name == "ansi/type" {
                ansi = Some(ColumnKind::from_ansi(value).map_or_else(
                    || invalid(&format!("{tag_path}.value"), "unsupported ANSI type"),
                    Ok,
                )?);
            }
        }
        let kind = match (ansi, &fhir_type) {
            (Some(kind), _) => kind,
            (None, Some(t)) => ColumnKind::from_fhir_type(t).map_or_else(
                || {
                    invalid(
                        &format!("{path}.type"),
                        format!("`{t}` is not a FHIR primitive type"),
                    )
                },
                Ok,
            )?,
            (None, None) => infer_kind(&expr),
        };
        let slot = self.next_slot;
        self.next_slot += 1;
        let spec = ColumnSpec {
            name,
            fhir_type,
            kind,
            collection,
            description: column
                .get("description")
                .and_then(Value::as_str)
                .map(str::to_string),
        };
        match self.columns.get(slot) {
            // A later unionAll branch: the slot exists and must hold the same column.
            Some(existing) => {
                if existing.name != spec.name
                    || existing.kind != spec.kind
                    || existing.collection != spec.collection
                {
                    return invalid(
                        path,
                        format!(
                            "unionAll branches must have the same columns in the same order: \
                             expected `{}` here",
                            existing.name
                        ),
                    );
                }
            }
            None => self.columns.push(spec),
        }
        Ok((slot, expr, collection))
    }
}

/// The column type of an untyped column, from the shape of its expression.
fn infer_kind(expr: &Expr) -> ColumnKind {
    use fhirpath::BinOp;
    match expr {
        Expr::Literal(Literal::Boolean(_)) => ColumnKind::Boolean,
        Expr::Literal(Literal::Integer(_)) | Expr::RowIndex => ColumnKind::Int64,
        Expr::Literal(Literal::Decimal(..)) => ColumnKind::Float64,
        Expr::Call { func, .. } => match func {
            Func::Exists
            | Func::Empty
            | Func::Not
            | Func::All
            | Func::AllTrue
            | Func::AnyTrue
            | Func::StartsWith
            | Func::EndsWith
            | Func::ContainsStr
            | Func::Matches
            | Func::HasValue
            | Func::ToBoolean => ColumnKind::Boolean,
            Func::Count | Func::Length | Func::ToInteger | Func::IndexOf => ColumnKind::Int64,
            Func::ToDecimal => ColumnKind::Float64,
            _ => ColumnKind::Utf8,
        },
        Expr::Binary(
            BinOp::Eq
            | BinOp::Ne
            | BinOp::Lt
            | BinOp::Gt
            | BinOp::Le
            | BinOp::Ge
            | BinOp::Equiv
            | BinOp::NotEquiv
            | BinOp::And
            | BinOp::Or
            | BinOp::Xor
            | BinOp::Implies
            | BinOp::In
            | BinOp::Contains,
            ..,
        ) => ColumnKind::Boolean,
        Expr::TypeOp { is: true, .. } => ColumnKind::Boolean,
        _ => ColumnKind::Utf8,
    }
}
