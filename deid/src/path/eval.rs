//! Evaluates FHIRPath-subset expressions over raw FHIR JSON: `where(...)` filters of rule paths and
//! the `cases` of `generalize` rules (`$this < 18`, `$this in ('a' | 'b')`,
//! `$this.substring(0,3) + '**'`). Types come from the R4 element table, so choice elements
//! (`value` for `valueQuantity`) and primitive types (`date` vs `string`) resolve as in FHIRPath.

use std::borrow::Cow;

use serde_json::Value;

use super::{BinOp, Expr, Func, Literal};
use fhirlake_fhir::types as fhir_types;

/// One item of a FHIRPath collection.
#[derive(Debug, Clone)]
pub enum Item<'a> {
    /// A node of the resource, with its FHIR type code.
    Node {
        /// The JSON value.
        value: &'a Value,
        /// FHIR type code (`HumanName`, `date`, a resource type, `Patient.contact`); empty if unknown.
        ty: &'a str,
    },
    /// A string: a literal of the expression (borrowed) or computed.
    String(Cow<'a, str>),
    /// A computed number.
    Number(f64),
    /// A computed boolean.
    Bool(bool),
    /// A date, dateTime or instant (ISO text, no `@`).
    DateTime(String),
}

/// A primitive view of an item, for comparisons and functions.
#[derive(Debug, Clone, PartialEq)]
pub enum Prim {
    /// Text.
    Str(String),
    /// Number.
    Num(f64),
    /// Boolean.
    Bool(bool),
    /// Date or dateTime text.
    Date(String),
}

/// Evaluation errors (type names and function names only, never values).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EvalError {
    /// Unknown function.
    #[error("unsupported function {0}()")]
    UnknownFunction(String),
    /// Wrong arguments.
    #[error("{0}() called with wrong arguments")]
    BadArguments(String),
    /// An operator applied to values it does not take.
    #[error("operator {0} does not apply to these operand types")]
    BadOperands(&'static str),
    /// A construct of the FHIRPath grammar that rule expressions do not have (`%constant`,
    /// `$index`); [`super::parse`] rejects them, so only a hand-built [`Expr`] gets here.
    #[error("{0} is not supported in rule expressions")]
    Unsupported(&'static str),
}

type R<T> = Result<T, EvalError>;

const DATE_TYPES: [&str; 3] = ["date", "dateTime", "instant"];

impl<'a> Item<'a> {
    /// The item as a primitive, if it is one.
    pub fn prim(&self) -> Option<Prim> {
        match self {
            Item::Node { value, ty } => match value {
                Value::String(s) if DATE_TYPES.contains(ty) => Some(Prim::Date(s.clone())),
                Value::String(s) => Some(Prim::Str(s.clone())),
                Value::Number(n) => n.as_f64().map(Prim::Num),
                Value::Bool(b) => Some(Prim::Bool(*b)),
                _ => None,
            },
            Item::String(s) => Some(Prim::Str(s.to_string())),
            Item::Number(n) => Some(Prim::Num(*n)),
            Item::Bool(b) => Some(Prim::Bool(*b)),
            Item::DateTime(d) => Some(Prim::Date(d.clone())),
        }
    }

    /// [`Item::prim`] without copying text, for equality tests.
    fn prim_ref(&self) -> Option<PrimRef<'_>> {
        match self {
            Item::Node { value, ty } => match value {
                Value::String(s) if DATE_TYPES.contains(ty) => Some(PrimRef::Date(s)),
                Value::String(s) => Some(PrimRef::Str(s)),
                Value::Number(n) => n.as_f64().map(PrimRef::Num),
                Value::Bool(b) => Some(PrimRef::Bool(*b)),
                _ => None,
            },
            Item::String(s) => Some(PrimRef::Str(s)),
            Item::Number(n) => Some(PrimRef::Num(*n)),
            Item::Bool(b) => Some(PrimRef::Bool(*b)),
            Item::DateTime(d) => Some(PrimRef::Date(d)),
        }
    }

    /// The item as a JSON value (for `substitute`/`generalize` results).
    pub fn to_json(&self) -> Value {
        match self {
            Item::Node { value, .. } => (*value).clone(),
            Item::String(s) => Value::String(s.to_string()),
            Item::DateTime(s) => Value::String(s.clone()),
            Item::Number(n) => number_json(*n),
            Item::Bool(b) => Value::Bool(*b),
        }
    }

    fn type_name(&self) -> &str {
        match self {
            Item::Node { ty, value } => {
                if ty.is_empty() {
                    value
                        .get("resourceType")
                        .and_then(Value::as_str)
                        .unwrap_or("")
                } else {
                    ty
                }
            }
            Item::String(_) => "string",
            Item::Number(_) => "decimal",
            Item::Bool(_) => "boolean",
            Item::DateTime(_) => "dateTime",
        }
    }
}

/// A number as JSON: integral values become integers.
pub fn number_json(n: f64) -> Value {
    if n.fract() == 0.0 && n.abs() < 9.0e15 {
        Value::from(n as i64)
    } else {
        serde_json::Number::from_f64(n).map_or(Value::Null, Value::Number)
    }
}

/// Is a node of type `ty` an instance of `of` (FHIR type hierarchy, resources included)?
pub fn type_matches(ty: &str, value: &Value, of: &str) -> bool {
    if ty == of {
        return true;
    }
    if matches!(of, "Resource" | "DomainResource") {
        return value.get("resourceType").is_some_and(Value::is_string)
            && (of == "Resource" || value.get("resourceType") != Some(&Value::from("Bundle")));
    }
    fhir_types::is_subtype(ty, of)
}

/// The children of `value` (of type `ty`) whose element name is `name`, flattened.
pub fn members<'a>(value: &'a Value, ty: &'a str, name: &str, out: &mut Vec<Item<'a>>) {
    let Value::Object(map) = value else {
        return;
    };
    // A plain (non-choice) element is its own JSON key: one lookup instead of a scan.
    if let Some(child) = fhir_types::child(ty, name).filter(|c| !c.is_choice && c.element == name) {
        if let Some(child_value) = map.get(name) {
            let child_ty: &'a str = if child.type_code == "Resource" {
                child_value
                    .get("resourceType")
                    .and_then(Value::as_str)
                    .unwrap_or("Resource")
            } else {
                child.type_code
            };
            push_flat(child_value, child_ty, out);
        }
        return;
    }
    for (key, child_value) in map {
        let child_ty: &'a str = match fhir_types::child(ty, key) {
            Some(child) if child.element == name => {
                if child.type_code == "Resource" {
                    child_value
                        .get("resourceType")
                        .and_then(Value::as_str)
                        .unwrap_or("Resource")
                } else {
                    child.type_code
                }
            }
            Some(_) => continue,
            None if key == name => "",
            None => continue,
        };
        push_flat(child_value, child_ty, out);
    }
}

fn push_flat<'a>(value: &'a Value, ty: &'a str, out: &mut Vec<Item<'a>>) {
    match value {
        Value::Array(items) => {
            for item in items {
                if !item.is_null() {
                    out.push(Item::Node { value: item, ty });
                }
            }
        }
        Value::Null => {}
        _ => out.push(Item::Node { value, ty }),
    }
}

/// All descendants (not the node itself) of `value` whose type is `of`.
pub fn descendants_of_type<'a>(value: &'a Value, ty: &'a str, of: &str, out: &mut Vec<Item<'a>>) {
    let Value::Object(map) = value else {
        return;
    };
    for (key, child_value) in map {
        let Some(child) = fhir_types::child(ty, key) else {
            continue;
        };
        let items: Vec<&Value> = match child_value {
            Value::Array(items) => items.iter().collect(),
            other => vec![other],
        };
        for item in items {
            let child_ty: &'a str = if child.type_code == "Resource" {
                item.get("resourceType")
                    .and_then(Value::as_str)
                    .unwrap_or("Resource")
            } else {
                child.type_code
            };
            if type_matches(child_ty, item, of) {
                out.push(Item::Node {
                    value: item,
                    ty: child_ty,
                });
            }
            descendants_of_type(item, child_ty, of, out);
        }
    }
}

/// Evaluates `expr` with focus `focus` (also `$this`).
pub fn eval<'a>(expr: &'a Expr, focus: &[Item<'a>], this: &Item<'a>) -> R<Vec<Item<'a>>> {
    Ok(match expr {
        Expr::This => vec![this.clone()],
        Expr::Empty => vec![],
        Expr::Literal(lit) => match lit {
            // Borrowed: filters compare node values with literals, per node.
            Literal::String(s) => vec![Item::String(Cow::Borrowed(s))],
            Literal::Integer(n) => vec![Item::Number(*n as f64)],
            Literal::Decimal(n, _) => vec![Item::Number(*n)],
            Literal::Boolean(b) => vec![Item::Bool(*b)],
            Literal::Date(d) | Literal::DateTime(d) => vec![Item::DateTime(d.clone())],
            Literal::Time(t) => vec![Item::DateTime(format!("T{t}"))],
        },
        Expr::Member(None, name) => {
            // A type name that matches the focus selects it (`Patient.name` on a Patient).
            let mut out = Vec::new();
            for item in focus {
                if let Item::Node { value, ty } = item {
                    if name.chars().next().is_some_and(char::is_uppercase)
                        && type_matches(item.type_name(), value, name)
                    {
                        out.push(item.clone());
                    } else {
                        members(value, ty, name, &mut out);
                    }
                }
            }
            out
        }
        Expr::Member(Some(base), name) => {
            let base = eval(base, focus, this)?;
            let mut out = Vec::new();
            for item in &base {
                if let Item::Node { value, ty } = item {
                    members(value, ty, name, &mut out);
                }
            }
            out
        }
        Expr::Index(base, index) => {
            let base = eval(base, focus, this)?;
            let index = eval(index, focus, this)?;
            match index.first().and_then(Item::prim) {
                Some(Prim::Num(i)) if i >= 0.0 => {
                    base.get(i as usize).cloned().into_iter().collect()
                }
                _ => vec![],
            }
        }
        Expr::OfType(base, ty)
        | Expr::TypeOp {
            is: false,
            base,
            ty,
        } => eval(base, focus, this)?
            .into_iter()
            .filter(|item| item_is(item, &ty.name))
            .collect(),
        Expr::TypeOp { is: true, base, ty } => {
            let base = eval(base, focus, this)?;
            match base.as_slice() {
                [item] => vec![Item::Bool(item_is(item, &ty.name))],
                _ => vec![],
            }
        }
        Expr::Negate(inner) => match single_prim(&eval(inner, focus, this)?) {
            Some(Prim::Num(n)) => vec![Item::Number(-n)],
            None => vec![],
            _ => return Err(EvalError::BadOperands("-")),
        },
        Expr::Call {
            base, func, args, ..
        } => {
            let input = match base {
                Some(base) => eval(base, focus, this)?,
                None => focus.to_vec(),
            };
            call(*func, &input, args, this)?
        }
        Expr::Binary(op, lhs, rhs) => {
            let l = eval(lhs, focus, this)?;
            let r = eval(rhs, focus, this)?;
            binary(*op, l, r)?
        }
        Expr::Constant(_) | Expr::Resource | Expr::RowIndex => {
            return Err(EvalError::Unsupported("a %constant"));
        }
        Expr::IndexVar => return Err(EvalError::Unsupported("$index")),
    })
}

fn item_is(item: &Item<'_>, ty: &str) -> bool {
    match item {
        Item::Node { value, ty: t } => type_matches(t, value, ty),
        Item::String(_) => ty.eq_ignore_ascii_case("string"),
        Item::Number(_) => matches!(ty, "decimal" | "integer" | "Decimal" | "Integer"),
        Item::Bool(_) => ty.eq_ignore_ascii_case("boolean"),
        Item::DateTime(_) => matches!(ty, "date" | "dateTime" | "DateTime" | "Date"),
    }
}

fn single_prim(items: &[Item<'_>]) -> Option<Prim> {
    match items {
        [item] => item.prim(),
        _ => None,
    }
}

/// FHIRPath truthiness of a collection: empty is false, a single boolean is itself, other single items are true.
pub fn truthy(items: &[Item<'_>]) -> bool {
    match items {
        [] => false,
        [item] => !matches!(item.prim(), Some(Prim::Bool(false))),
        _ => true,
    }
}

/// Argument `i` of function `f`, evaluated on `$this`, as a single primitive (`None` otherwise).
fn prim_arg<'a>(args: &'a [Expr], i: usize, this: &Item<'a>, f: &str) -> R<Option<Prim>> {
    let Some(arg) = args.get(i) else {
        return Err(EvalError::BadArguments(f.to_string()));
    };
    Ok(single_prim(&eval(arg, std::slice::from_ref(this), this)?))
}

fn string_arg<'a>(args: &'a [Expr], i: usize, this: &Item<'a>, f: &str) -> R<Option<String>> {
    Ok(match prim_arg(args, i, this, f)? {
        Some(Prim::Str(s)) | Some(Prim::Date(s)) => Some(s),
        Some(Prim::Num(n)) => Some(n.to_string()),
        _ => None,
    })
}

fn num_arg<'a>(args: &'a [Expr], i: usize, this: &Item<'a>, f: &str) -> R<Option<f64>> {
    Ok(match prim_arg(args, i, this, f)? {
        Some(Prim::Num(n)) => Some(n),
        _ => None,
    })
}

fn call<'a>(func: Func, input: &[Item<'a>], args: &'a [Expr], this: &Item<'a>) -> R<Vec<Item<'a>>> {
    let bool1 = |b: bool| vec![Item::Bool(b)];
    let name = func.name();
    Ok(match func {
        Func::Exists => {
            if let Some(cond) = args.first() {
                let mut any = false;
                for item in input {
                    if truthy(&eval(cond, std::slice::from_ref(item), item)?) {
                        any = true;
                        break;
                    }
                }
                bool1(any)
            } else {
                bool1(!input.is_empty())
            }
        }
        Func::Empty => bool1(input.is_empty()),
        Func::Not => match single_prim(input) {
            Some(Prim::Bool(b)) => bool1(!b),
            _ => vec![],
        },
        Func::Count => vec![Item::Number(input.len() as f64)],
        Func::First => input.first().cloned().into_iter().collect(),
        Func::Last => input.last().cloned().into_iter().collect(),
        Func::Where => {
            let cond = args
                .first()
                .ok_or_else(|| EvalError::BadArguments(name.into()))?;
            let mut out = Vec::new();
            for item in input {
                if truthy(&eval(cond, std::slice::from_ref(item), item)?) {
                    out.push(item.clone());
                }
            }
            out
        }
        Func::NodesByType => {
            let ty = match args.first() {
                Some(Expr::Literal(Literal::String(t))) => t.clone(),
                _ => return Err(EvalError::BadArguments(name.into())),
            };
            let mut out = Vec::new();
            for item in input {
                if let Item::Node { value, ty: t } = item {
                    descendants_of_type(value, t, &ty, &mut out);
                }
            }
            out
        }
        Func::StartsWith | Func::EndsWith | Func::ContainsStr | Func::Matches => {
            let (Some(Prim::Str(s)), Some(arg)) =
                (single_prim(input), string_arg(args, 0, this, name)?)
            else {
                return Ok(vec![]);
            };
            bool1(match func {
                Func::StartsWith => s.starts_with(&arg),
                Func::EndsWith => s.ends_with(&arg),
                Func::ContainsStr => s.contains(&arg),
                _ => regex::Regex::new(&arg)
                    .map_err(|_| EvalError::BadArguments(name.into()))?
                    .is_match(&s),
            })
        }
        Func::Substring => {
            let Some(Prim::Str(s) | Prim::Date(s)) = single_prim(input) else {
                return Ok(vec![]);
            };
            let chars: Vec<char> = s.chars().collect();
            let start = num_arg(args, 0, this, name)?.unwrap_or(0.0).max(0.0) as usize;
            if start >= chars.len() {
                return Ok(vec![]);
            }
            let len = match args.get(1) {
                Some(_) => num_arg(args, 1, this, name)?.unwrap_or(0.0).max(0.0) as usize,
                None => chars.len() - start,
            };
            let end = (start + len).min(chars.len());
            vec![Item::String(
                chars[start..end].iter().collect::<String>().into(),
            )]
        }
        Func::Length => match single_prim(input) {
            Some(Prim::Str(s)) => vec![Item::Number(s.chars().count() as f64)],
            _ => vec![],
        },
        Func::Upper | Func::Lower => match single_prim(input) {
            Some(Prim::Str(s)) => vec![Item::String(if func == Func::Upper {
                s.to_uppercase().into()
            } else {
                s.to_lowercase().into()
            })],
            _ => vec![],
        },
        Func::ToString => match single_prim(input) {
            Some(Prim::Str(s) | Prim::Date(s)) => vec![Item::String(s.into())],
            Some(Prim::Num(n)) => vec![Item::String(n.to_string().into())],
            Some(Prim::Bool(b)) => vec![Item::String(b.to_string().into())],
            None => vec![],
        },
        Func::HasValue => bool1(single_prim(input).is_some()),
        Func::Iif => {
            let cond = args
                .first()
                .ok_or_else(|| EvalError::BadArguments(name.into()))?;
            let focus: Vec<Item<'a>> = input.to_vec();
            if truthy(&eval(cond, &focus, this)?) {
                match args.get(1) {
                    Some(e) => eval(e, &focus, this)?,
                    None => vec![],
                }
            } else {
                match args.get(2) {
                    Some(e) => eval(e, &focus, this)?,
                    None => vec![],
                }
            }
        }
        _ => return Err(EvalError::UnknownFunction(name.to_string())),
    })
}

/// [`Prim`] borrowing its text.
#[derive(Debug, Clone, Copy)]
enum PrimRef<'x> {
    Str(&'x str),
    Num(f64),
    Bool(bool),
    Date(&'x str),
}

/// [`prim_eq`] on borrowed primitives.
fn prim_ref_eq(a: PrimRef<'_>, b: PrimRef<'_>) -> bool {
    match (a, b) {
        (PrimRef::Num(x), PrimRef::Num(y)) => x == y,
        (PrimRef::Str(x) | PrimRef::Date(x), PrimRef::Str(y) | PrimRef::Date(y)) => x == y,
        (PrimRef::Bool(x), PrimRef::Bool(y)) => x == y,
        _ => false,
    }
}

fn prim_eq(a: &Prim, b: &Prim) -> bool {
    match (a, b) {
        (Prim::Num(x), Prim::Num(y)) => x == y,
        (Prim::Str(x) | Prim::Date(x), Prim::Str(y) | Prim::Date(y)) => x == y,
        (Prim::Bool(x), Prim::Bool(y)) => x == y,
        _ => false,
    }
}

/// Compares dates of possibly different precision; `None` when the result is uncertain.
fn date_cmp(a: &str, b: &str) -> Option<std::cmp::Ordering> {
    let (a_key, b_key) = (date_key(a), date_key(b));
    let n = a_key.len().min(b_key.len());
    let ord = a_key[..n].cmp(&b_key[..n]);
    if ord == std::cmp::Ordering::Equal && a_key.len() != b_key.len() {
        return None;
    }
    Some(ord)
}

/// Digits of a date/dateTime in UTC order (timezone applied when a time is present).
fn date_key(text: &str) -> String {
    if let Ok(dt) = chrono::DateTime::parse_from_rfc3339(text) {
        return dt
            .with_timezone(&chrono::Utc)
            .format("%Y%m%d%H%M%S%.f")
            .to_string()
            .replace('.', "");
    }
    text.chars().filter(char::is_ascii_digit).collect()
}

fn compare(a: &Prim, b: &Prim) -> Option<std::cmp::Ordering> {
    match (a, b) {
        (Prim::Num(x), Prim::Num(y)) => x.partial_cmp(y),
        (Prim::Date(x), Prim::Date(y)) => date_cmp(x, y),
        (Prim::Str(x), Prim::Str(y)) => Some(x.cmp(y)),
        // A date node compared to a string literal, or a numeric string to a number.
        (Prim::Date(x), Prim::Str(y)) | (Prim::Str(x), Prim::Date(y)) => date_cmp(x, y),
        (Prim::Str(x), Prim::Num(y)) => x.parse::<f64>().ok()?.partial_cmp(y),
        (Prim::Num(x), Prim::Str(y)) => x.partial_cmp(&y.parse::<f64>().ok()?),
        _ => None,
    }
}

/// Whether two values can be ordered: numbers, texts and dates among themselves, and a text
/// that reads as a number with a number.
fn comparable(a: &Prim, b: &Prim) -> bool {
    match (a, b) {
        (Prim::Num(_), Prim::Num(_)) => true,
        (Prim::Str(_) | Prim::Date(_), Prim::Str(_) | Prim::Date(_)) => true,
        (Prim::Str(s), Prim::Num(_)) | (Prim::Num(_), Prim::Str(s)) => {
            s.trim().parse::<f64>().is_ok()
        }
        _ => false,
    }
}

/// [`single_prim`] without copying text.
fn single_ref<'x>(items: &'x [Item<'_>]) -> Option<PrimRef<'x>> {
    match items {
        [item] => item.prim_ref(),
        _ => None,
    }
}

/// Is either side a single date (`=` then compares dates, not texts)?
fn has_date(l: &[Item<'_>], r: &[Item<'_>]) -> bool {
    let date = |items: &[Item<'_>]| matches!(single_ref(items), Some(PrimRef::Date(_)));
    date(l) || date(r)
}

fn binary<'a>(op: BinOp, l: Vec<Item<'a>>, r: Vec<Item<'a>>) -> R<Vec<Item<'a>>> {
    use std::cmp::Ordering::*;
    let bool1 = |b: bool| Ok(vec![Item::Bool(b)]);
    match op {
        BinOp::Union => {
            let mut out = l;
            for item in r {
                let p = item.prim();
                if p.is_none() || !out.iter().any(|o| o.prim().is_some_and(|q| Some(q) == p)) {
                    out.push(item);
                }
            }
            Ok(out)
        }
        BinOp::In | BinOp::Contains => {
            let (needle, hay) = if op == BinOp::In { (l, r) } else { (r, l) };
            let Some(n) = single_prim(&needle) else {
                return Ok(vec![]);
            };
            bool1(
                hay.iter()
                    .any(|h| h.prim().is_some_and(|p| prim_eq(&p, &n))),
            )
        }
        BinOp::And | BinOp::Or | BinOp::Xor | BinOp::Implies => {
            let as_bool = |items: &[Item<'_>]| match items {
                [] => None,
                _ => Some(truthy(items)),
            };
            let (a, b) = (as_bool(&l), as_bool(&r));
            let out = match op {
                BinOp::And => match (a, b) {
                    (Some(false), _) | (_, Some(false)) => Some(false),
                    (Some(true), Some(true)) => Some(true),
                    _ => None,
                },
                BinOp::Or => match (a, b) {
                    (Some(true), _) | (_, Some(true)) => Some(true),
                    (Some(false), Some(false)) => Some(false),
                    _ => None,
                },
                BinOp::Xor => a.zip(b).map(|(a, b)| a != b),
                _ => match (a, b) {
                    (Some(false), _) | (_, Some(true)) => Some(true),
                    (Some(true), Some(false)) => Some(false),
                    _ => None,
                },
            };
            Ok(out.map(|b| vec![Item::Bool(b)]).unwrap_or_default())
        }
        BinOp::Eq | BinOp::Equiv | BinOp::Ne | BinOp::NotEquiv
            if !matches!(op, BinOp::Eq | BinOp::Equiv) || !has_date(&l, &r) =>
        {
            // Equality of texts without copying them (the `where(system = '...')` of rules,
            // evaluated per node); only `=` on dates needs the date comparison below.
            let (Some(a), Some(b)) = (single_ref(&l), single_ref(&r)) else {
                return Ok(vec![]);
            };
            let eq = prim_ref_eq(a, b);
            bool1(if matches!(op, BinOp::Ne | BinOp::NotEquiv) {
                !eq
            } else {
                eq
            })
        }
        _ => {
            let (Some(a), Some(b)) = (single_prim(&l), single_prim(&r)) else {
                return Ok(vec![]);
            };
            match op {
                BinOp::Eq | BinOp::Equiv => bool1(match (&a, &b) {
                    (Prim::Date(_), _) | (_, Prim::Date(_)) => compare(&a, &b) == Some(Equal),
                    _ => prim_eq(&a, &b),
                }),
                BinOp::Ne | BinOp::NotEquiv => bool1(!prim_eq(&a, &b)),
                BinOp::Lt | BinOp::Le | BinOp::Gt | BinOp::Ge if !comparable(&a, &b) => {
                    // FHIRPath: ordering values of different types is an error, not "false".
                    Err(EvalError::BadOperands("comparison"))
                }
                BinOp::Lt | BinOp::Le | BinOp::Gt | BinOp::Ge => match compare(&a, &b) {
                    None => Ok(vec![]),
                    Some(ord) => bool1(match op {
                        BinOp::Lt => ord == Less,
                        BinOp::Le => ord != Greater,
                        BinOp::Gt => ord == Greater,
                        _ => ord != Less,
                    }),
                },
                BinOp::Add => match (a, b) {
                    (Prim::Num(x), Prim::Num(y)) => Ok(vec![Item::Number(x + y)]),
                    (Prim::Str(x) | Prim::Date(x), Prim::Str(y) | Prim::Date(y)) => {
                        Ok(vec![Item::String((x + &y).into())])
                    }
                    _ => Err(EvalError::BadOperands("+")),
                },
                BinOp::Concat => {
                    let text = |p: Prim| match p {
                        Prim::Str(s) | Prim::Date(s) => s,
                        Prim::Num(n) => n.to_string(),
                        Prim::Bool(b) => b.to_string(),
                    };
                    Ok(vec![Item::String((text(a) + &text(b)).into())])
                }
                BinOp::Sub | BinOp::Mul | BinOp::Div | BinOp::IntDiv | BinOp::Mod => match (a, b) {
                    (Prim::Num(x), Prim::Num(y)) => Ok(match op {
                        BinOp::Sub => vec![Item::Number(x - y)],
                        BinOp::Mul => vec![Item::Number(x * y)],
                        _ if y == 0.0 => vec![],
                        BinOp::IntDiv => vec![Item::Number((x / y).trunc())],
                        BinOp::Mod => vec![Item::Number(x % y)],
                        _ => vec![Item::Number(x / y)],
                    }),
                    _ => Err(EvalError::BadOperands("arithmetic")),
                },
                _ => Ok(vec![]),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::path::parse;

    fn run(expr: &str, value: &Value, ty: &str) -> R<bool> {
        let this = Item::Node { value, ty };
        eval(
            &parse(expr).expect("expression"),
            std::slice::from_ref(&this),
            &this,
        )
        .map(|r| truthy(&r))
    }

    #[test]
    fn ordering_values_of_different_types_is_an_error() {
        let name = Value::from("Chalmers");
        assert!(run("$this >= 0 and $this < 20", &name, "string").is_err());
        assert!(run("$this < true", &Value::from(3), "integer").is_err());
        // A text that reads as a number still compares with numbers; equality never errors.
        assert_eq!(run("$this < 20", &Value::from("12"), "string"), Ok(true));
        assert_eq!(run("$this = 0", &name, "string"), Ok(false));
        assert_eq!(
            run("$this >= 0 and $this < 20", &Value::from(5), "integer"),
            Ok(true)
        );
    }
}
