//! Evaluates an [`Expr`] over the JSON tree of one resource (the general evaluator; plain paths
//! run through [`super::path`] instead).
//!
//! Collections are vectors of [`Item`]s: nodes of the resource (borrowed, with the FHIR type when
//! a choice element's name told it) or values computed by operators and functions. Errors name
//! the function or operator, never a value from the resource.

use std::borrow::Cow;
use std::cmp::Ordering;
use std::ops::ControlFlow;

use super::temporal::{
    DateTimeParts, compare_temporal, date_boundary_text, date_time_boundary_text, decimal_boundary,
    parse_time, time_boundary_text,
};
use super::{BinOp, Expr, Func, Literal, TypeSpec};
use crate::json::{Json, Kind, format_float};
use fhirlake_fhir::reference::Reference;

/// A primitive value.
#[derive(Debug, Clone, PartialEq)]
pub enum Prim<'a> {
    /// Boolean.
    Bool(bool),
    /// Integer.
    Int(i64),
    /// Decimal with the number of fraction digits it was written with (for boundaries).
    Dec(f64, u32),
    /// String (and every string-like FHIR primitive: code, id, uri, ...).
    Str(Cow<'a, str>),
    /// A date (`YYYY[-MM[-DD]]`).
    Date(Cow<'a, str>),
    /// A dateTime or instant.
    DateTime(Cow<'a, str>),
    /// A time of day.
    Time(Cow<'a, str>),
}

impl Prim<'_> {
    /// The FHIRPath type name.
    fn type_name(&self) -> &'static str {
        match self {
            Prim::Bool(_) => "boolean",
            Prim::Int(_) => "integer",
            Prim::Dec(..) => "decimal",
            Prim::Str(_) => "string",
            Prim::Date(_) => "date",
            Prim::DateTime(_) => "dateTime",
            Prim::Time(_) => "time",
        }
    }

    /// The value as text (`toString()`).
    pub fn to_text(&self) -> Cow<'_, str> {
        match self {
            Prim::Bool(b) => Cow::Borrowed(if *b { "true" } else { "false" }),
            Prim::Int(i) => Cow::Owned(i.to_string()),
            Prim::Dec(f, _) => Cow::Owned(format_float(*f)),
            Prim::Str(s) | Prim::Date(s) | Prim::DateTime(s) | Prim::Time(s) => {
                Cow::Borrowed(s.as_ref())
            }
        }
    }

    fn as_f64(&self) -> Option<f64> {
        match self {
            Prim::Int(i) => Some(*i as f64),
            Prim::Dec(f, _) => Some(*f),
            _ => None,
        }
    }

    fn is_text(&self) -> bool {
        matches!(
            self,
            Prim::Str(_) | Prim::Date(_) | Prim::DateTime(_) | Prim::Time(_)
        )
    }

    fn is_temporal(&self) -> bool {
        matches!(self, Prim::Date(_) | Prim::DateTime(_) | Prim::Time(_))
    }
}

/// One element of a FHIRPath collection.
#[derive(Debug, Clone)]
pub enum Item<'a> {
    /// A node of the resource and its FHIR type name when known (`Quantity`, `dateTime`, ...).
    Node(Json<'a>, Option<&'a str>),
    /// A computed value.
    Prim(Prim<'a>),
}

/// Number of fraction digits a float prints with (its shortest round-trip form).
fn fraction_digits(f: f64) -> u32 {
    let text = format_float(f);
    match text.split_once('.') {
        Some((_, frac)) => frac
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(frac.len()) as u32,
        None => 0,
    }
}

fn is_type(name: Option<&str>, wanted: &str) -> bool {
    name.is_some_and(|n| n.eq_ignore_ascii_case(wanted))
}

impl<'a> Item<'a> {
    /// The item as a primitive, if it is one (objects and arrays are not).
    pub fn prim(&self) -> Option<Prim<'a>> {
        match self {
            Item::Prim(p) => Some(p.clone()),
            Item::Node(json, ty) => match json.kind() {
                Kind::Bool(b) => Some(Prim::Bool(b)),
                Kind::Int(i) if is_type(*ty, "decimal") => Some(Prim::Dec(i as f64, 0)),
                Kind::Int(i) => Some(Prim::Int(i)),
                Kind::Float(f) => Some(Prim::Dec(f, fraction_digits(f))),
                Kind::Str(s) => Some(match ty {
                    Some(t) if t.eq_ignore_ascii_case("date") => Prim::Date(Cow::Borrowed(s)),
                    Some(t)
                        if t.eq_ignore_ascii_case("dateTime")
                            || t.eq_ignore_ascii_case("instant") =>
                    {
                        Prim::DateTime(Cow::Borrowed(s))
                    }
                    Some(t) if t.eq_ignore_ascii_case("time") => Prim::Time(Cow::Borrowed(s)),
                    _ => Prim::Str(Cow::Borrowed(s)),
                }),
                _ => None,
            },
        }
    }

    fn json(&self) -> Option<Json<'a>> {
        match self {
            Item::Node(json, _) => Some(*json),
            Item::Prim(_) => None,
        }
    }
}

/// What an evaluation sees besides its focus.
#[derive(Debug, Clone, Copy)]
pub struct Env<'a> {
    /// The resource the row comes from (`%resource`, `getResourceKey()` fallback).
    pub resource: Json<'a>,
    /// `%rowIndex` of the innermost iteration.
    pub row_index: i64,
    /// `$index` inside `where`/`select`/`all`.
    pub index: i64,
}

/// An evaluation error (no resource values in the message).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EvalError(pub String);

impl std::fmt::Display for EvalError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

type Coll<'a> = Vec<Item<'a>>;
type Res<T> = Result<T, EvalError>;

fn err<T>(message: impl Into<String>) -> Res<T> {
    Err(EvalError(message.into()))
}

/// Is `suffix` a FHIR R4 data type name that can follow a choice element's name (`value` +
/// `Quantity`)? The suffixes are those of the R4 type table's choice elements
/// ([`fhirlake_fhir::fhirpath::is_choice_suffix`]), so an R5-only type (`valueInteger64`) is an
/// ordinary key.
#[inline]
pub(crate) fn is_choice_type(suffix: &str) -> bool {
    fhirlake_fhir::fhirpath::is_choice_suffix(suffix)
}

/// The FHIR type a member key names when it is `name` itself (`Some(None)`) or the choice element
/// `name` + a type (`Some(Some(type))`), e.g. `valueQuantity` for `value`.
#[inline]
pub(crate) fn member_match<'k>(key: &'k str, name: &str) -> Option<Option<&'k str>> {
    let (k, n) = (key.as_bytes(), name.as_bytes());
    if k.len() < n.len() || k.first() != n.first() {
        return None;
    }
    if k.len() == n.len() {
        return (k == n).then_some(None);
    }
    let suffix = key.get(name.len()..)?;
    (suffix.starts_with(|c: char| c.is_ascii_uppercase())
        && key.starts_with(name)
        && is_choice_type(suffix))
    .then_some(Some(suffix))
}

/// Pushes the children named `name` of `json` (array members flattened, nulls skipped).
fn push_member<'a>(json: Json<'a>, name: &str, out: &mut Coll<'a>) {
    let _ = for_each_member(json, name, &mut |item| {
        out.push(item);
        ControlFlow::Continue(())
    });
}

/// Calls `f` with each child named `name` of `json` (array members flattened, nulls skipped), in
/// document order, until it breaks. The evaluator and the compiled paths share this.
pub(crate) fn for_each_member<'a>(
    json: Json<'a>,
    name: &str,
    f: &mut dyn FnMut(Item<'a>) -> ControlFlow<()>,
) -> ControlFlow<()> {
    let Some(members) = json.object() else {
        return ControlFlow::Continue(());
    };
    for (key, value) in members.iter() {
        let Some(ty) = member_match(key, name) else {
            continue;
        };
        for_each_member_value(value, ty, f)?;
        if ty.is_none() {
            break;
        }
    }
    ControlFlow::Continue(())
}

/// The items of one member's value: an array's non-null elements, or the value unless null.
pub(crate) fn for_each_member_value<'a>(
    value: Json<'a>,
    ty: Option<&'a str>,
    f: &mut dyn FnMut(Item<'a>) -> ControlFlow<()>,
) -> ControlFlow<()> {
    if let Some(items) = value.array() {
        for child in items.iter() {
            if !child.is_null() {
                f(Item::Node(child, ty))?;
            }
        }
    } else if !value.is_null() {
        f(Item::Node(value, ty))?;
    }
    ControlFlow::Continue(())
}

/// The resource `getResourceKey()` reads: the focus when it is one resource, else the row's.
pub(crate) fn resource_key_target<'a>(focus: &[Item<'a>], resource: Json<'a>) -> Json<'a> {
    match focus {
        [Item::Node(json, _)] if json.resource_type().is_some() => *json,
        _ => resource,
    }
}

/// `getReferenceKey([T])` of one item: the id part of its `reference`, when of type `T`.
pub(crate) fn reference_key<'a>(item: &Item<'a>, wanted: Option<&TypeSpec>) -> Option<Item<'a>> {
    let reference = item.json()?.member("reference").and_then(Json::text)?;
    let (ty, id) = reference_parts(reference)?;
    if let Some(wanted) = wanted
        && ty != Some(wanted.name.as_str())
    {
        return None;
    }
    Some(Item::Prim(Prim::Str(Cow::Borrowed(id))))
}

/// Does `item` have type `spec`?
pub(crate) fn has_type(item: &Item<'_>, spec: &TypeSpec) -> bool {
    let wanted = spec.name.as_str();
    match item {
        Item::Prim(p) => {
            p.type_name().eq_ignore_ascii_case(wanted)
                || (matches!(p, Prim::Str(_)) && is_string_like(wanted))
        }
        Item::Node(_, Some(ty)) => ty.eq_ignore_ascii_case(wanted),
        Item::Node(json, None) => match json.kind() {
            Kind::Bool(_) => wanted.eq_ignore_ascii_case("boolean"),
            Kind::Int(_) => matches!(
                wanted,
                "integer"
                    | "Integer"
                    | "decimal"
                    | "Decimal"
                    | "positiveInt"
                    | "unsignedInt"
                    | "integer64"
            ),
            Kind::Float(_) => wanted.eq_ignore_ascii_case("decimal"),
            Kind::Str(_) => is_string_like(wanted),
            Kind::Object(_) => match json.resource_type() {
                Some(rt) => rt == wanted || wanted == "Resource" || wanted == "DomainResource",
                None => wanted.starts_with(|c: char| c.is_ascii_uppercase()) && !is_system(wanted),
            },
            _ => false,
        },
    }
}

fn is_system(name: &str) -> bool {
    matches!(
        name,
        "String" | "Boolean" | "Integer" | "Decimal" | "Date" | "DateTime" | "Time"
    )
}

fn is_string_like(name: &str) -> bool {
    matches!(
        name,
        "string"
            | "String"
            | "code"
            | "id"
            | "uri"
            | "url"
            | "canonical"
            | "markdown"
            | "oid"
            | "uuid"
            | "base64Binary"
            | "date"
            | "dateTime"
            | "instant"
            | "time"
            | "xhtml"
    )
}

/// Boolean value of a collection in a boolean context: empty is unknown, a single non-boolean
/// item is true, several items are an error.
fn to_bool(coll: &[Item<'_>], what: &str) -> Res<Option<bool>> {
    match coll {
        [] => Ok(None),
        [item] => match item.prim() {
            Some(Prim::Bool(b)) => Ok(Some(b)),
            _ => Ok(Some(true)),
        },
        _ => err(format!("{what} expects a single value, got {}", coll.len())),
    }
}

fn boolean<'a>(b: Option<bool>) -> Coll<'a> {
    b.map(|b| vec![Item::Prim(Prim::Bool(b))])
        .unwrap_or_default()
}

fn singleton<'a>(coll: &Coll<'a>, what: &str) -> Res<Option<Item<'a>>> {
    match coll.as_slice() {
        [] => Ok(None),
        [item] => Ok(Some(item.clone())),
        _ => err(format!("{what} expects a single value, got {}", coll.len())),
    }
}

fn single_prim<'a>(coll: &Coll<'a>, what: &str) -> Res<Option<Prim<'a>>> {
    Ok(singleton(coll, what)?.and_then(|i| i.prim()))
}

/// FHIRPath `=`: `None` when the result is empty.
fn equals(a: &Item<'_>, b: &Item<'_>) -> Option<bool> {
    match (a.prim(), b.prim()) {
        (Some(pa), Some(pb)) => prim_equals(&pa, &pb),
        (None, None) => Some(a.json() == b.json()),
        _ => Some(false),
    }
}

fn prim_equals(a: &Prim<'_>, b: &Prim<'_>) -> Option<bool> {
    if let (Some(x), Some(y)) = (a.as_f64(), b.as_f64()) {
        return Some(x == y);
    }
    if a.is_text() && b.is_text() {
        if a.is_temporal() || b.is_temporal() {
            return compare_temporal(&a.to_text(), &b.to_text()).map(|o| o == Ordering::Equal);
        }
        return Some(a.to_text() == b.to_text());
    }
    match (a, b) {
        (Prim::Bool(x), Prim::Bool(y)) => Some(x == y),
        _ => Some(false),
    }
}

fn compare(a: &Prim<'_>, b: &Prim<'_>) -> Res<Option<Ordering>> {
    if let (Some(x), Some(y)) = (a.as_f64(), b.as_f64()) {
        return Ok(x.partial_cmp(&y));
    }
    if a.is_text() && b.is_text() {
        if a.is_temporal() || b.is_temporal() {
            return Ok(compare_temporal(&a.to_text(), &b.to_text()));
        }
        return Ok(Some(a.to_text().cmp(&b.to_text())));
    }
    err(format!(
        "cannot compare {} with {}",
        a.type_name(),
        b.type_name()
    ))
}

fn distinct_push<'a>(out: &mut Coll<'a>, item: Item<'a>) {
    if !out.iter().any(|o| equals(o, &item) == Some(true)) {
        out.push(item);
    }
}

/// Evaluates `expr` with `focus` as the input collection.
pub fn evaluate<'a>(expr: &Expr, focus: &[Item<'a>], env: &Env<'a>) -> Res<Coll<'a>> {
    match expr {
        Expr::Empty => Ok(Vec::new()),
        Expr::Literal(lit) => Ok(vec![Item::Prim(literal(lit))]),
        Expr::This => Ok(focus.to_vec()),
        Expr::IndexVar => Ok(vec![Item::Prim(Prim::Int(env.index))]),
        Expr::RowIndex => Ok(vec![Item::Prim(Prim::Int(env.row_index))]),
        Expr::Resource => Ok(vec![Item::Node(env.resource, None)]),
        Expr::Constant(name) => err(format!("undefined constant `%{name}`")),
        Expr::Member(base, name) => {
            let input;
            let input = match base {
                Some(base) => {
                    input = evaluate(base, focus, env)?;
                    input.as_slice()
                }
                None => focus,
            };
            let mut out = Vec::new();
            for item in input {
                if let Item::Node(json, _) = item {
                    // `Patient.name`: a leading type name selects the resource itself.
                    if base.is_none()
                        && name.starts_with(|c: char| c.is_ascii_uppercase())
                        && json.resource_type() == Some(name.as_str())
                    {
                        out.push(item.clone());
                        continue;
                    }
                    push_member(*json, name, &mut out);
                }
            }
            Ok(out)
        }
        Expr::Index(base, index) => {
            let input = evaluate(base, focus, env)?;
            let index = evaluate(index, focus, env)?;
            match single_prim(&index, "indexer")? {
                Some(Prim::Int(i)) if i >= 0 => {
                    Ok(input.into_iter().nth(i as usize).into_iter().collect())
                }
                Some(Prim::Int(_)) | None => Ok(Vec::new()),
                Some(_) => err("an indexer needs an integer"),
            }
        }
        Expr::OfType(base, ty) => {
            let input = evaluate(base, focus, env)?;
            Ok(input.into_iter().filter(|i| has_type(i, ty)).collect())
        }
        Expr::TypeOp { is, base, ty } => {
            let input = evaluate(base, focus, env)?;
            let item = singleton(&input, if *is { "is" } else { "as" })?;
            match item {
                None => Ok(Vec::new()),
                Some(item) if *is => Ok(boolean(Some(has_type(&item, ty)))),
                Some(item) => Ok(if has_type(&item, ty) {
                    vec![item]
                } else {
                    Vec::new()
                }),
            }
        }
        Expr::Negate(inner) => {
            let value = evaluate(inner, focus, env)?;
            match single_prim(&value, "unary minus")? {
                None => Ok(Vec::new()),
                Some(Prim::Int(i)) => Ok(vec![Item::Prim(Prim::Int(-i))]),
                Some(Prim::Dec(f, d)) => Ok(vec![Item::Prim(Prim::Dec(-f, d))]),
                Some(_) => err("unary minus needs a number"),
            }
        }
        Expr::Binary(op, lhs, rhs) => binary(*op, lhs, rhs, focus, env),
        Expr::Call {
            base,
            func,
            args,
            type_arg,
        } => {
            let input;
            let input = match base {
                Some(base) => {
                    input = evaluate(base, focus, env)?;
                    input.as_slice()
                }
                None => focus,
            };
            call(*func, input, args, type_arg.as_ref(), focus, env)
        }
    }
}

fn literal(lit: &Literal) -> Prim<'static> {
    match lit {
        Literal::String(s) => Prim::Str(Cow::Owned(s.clone())),
        Literal::Integer(i) => Prim::Int(*i),
        Literal::Decimal(f, text) => Prim::Dec(
            *f,
            text.split_once('.')
                .map_or(0, |(_, frac)| frac.len() as u32),
        ),
        Literal::Boolean(b) => Prim::Bool(*b),
        Literal::Date(s) => Prim::Date(Cow::Owned(s.clone())),
        Literal::DateTime(s) => Prim::DateTime(Cow::Owned(s.clone())),
        Literal::Time(s) => Prim::Time(Cow::Owned(s.clone())),
    }
}

fn binary<'a>(
    op: BinOp,
    lhs: &Expr,
    rhs: &Expr,
    focus: &[Item<'a>],
    env: &Env<'a>,
) -> Res<Coll<'a>> {
    let left = evaluate(lhs, focus, env)?;
    // `and` / `or` / `implies` short-circuit on the left value.
    match op {
        BinOp::And if to_bool(&left, "and")? == Some(false) => return Ok(boolean(Some(false))),
        BinOp::Or if to_bool(&left, "or")? == Some(true) => return Ok(boolean(Some(true))),
        BinOp::Implies if to_bool(&left, "implies")? == Some(false) => {
            return Ok(boolean(Some(true)));
        }
        _ => {}
    }
    let right = evaluate(rhs, focus, env)?;
    match op {
        BinOp::And => {
            let (a, b) = (to_bool(&left, "and")?, to_bool(&right, "and")?);
            Ok(boolean(match (a, b) {
                (Some(false), _) | (_, Some(false)) => Some(false),
                (Some(true), Some(true)) => Some(true),
                _ => None,
            }))
        }
        BinOp::Or => {
            let (a, b) = (to_bool(&left, "or")?, to_bool(&right, "or")?);
            Ok(boolean(match (a, b) {
                (Some(true), _) | (_, Some(true)) => Some(true),
                (Some(false), Some(false)) => Some(false),
                _ => None,
            }))
        }
        BinOp::Xor => {
            let (a, b) = (to_bool(&left, "xor")?, to_bool(&right, "xor")?);
            Ok(boolean(a.zip(b).map(|(a, b)| a != b)))
        }
        BinOp::Implies => {
            let (a, b) = (to_bool(&left, "implies")?, to_bool(&right, "implies")?);
            Ok(boolean(match (a, b) {
                (Some(true), b) => b,
                (None, Some(true)) => Some(true),
                _ => None,
            }))
        }
        BinOp::Union => {
            let mut out = Vec::new();
            for item in left.into_iter().chain(right) {
                distinct_push(&mut out, item);
            }
            Ok(out)
        }
        BinOp::Eq | BinOp::Ne => {
            if left.is_empty() || right.is_empty() {
                return Ok(Vec::new());
            }
            let result = if left.len() != right.len() {
                Some(false)
            } else {
                let mut all = Some(true);
                for (a, b) in left.iter().zip(&right) {
                    match equals(a, b) {
                        Some(true) => {}
                        Some(false) => {
                            all = Some(false);
                            break;
                        }
                        None => all = None,
                    }
                }
                all
            };
            Ok(boolean(if op == BinOp::Ne {
                result.map(|b| !b)
            } else {
                result
            }))
        }
        BinOp::Equiv | BinOp::NotEquiv => {
            let result = if left.len() != right.len() {
                false
            } else {
                left.iter()
                    .zip(&right)
                    .all(|(a, b)| match (a.prim(), b.prim()) {
                        (Some(pa), Some(pb)) if pa.is_text() && pb.is_text() => {
                            pa.to_text().trim().to_lowercase() == pb.to_text().trim().to_lowercase()
                        }
                        _ => equals(a, b) == Some(true),
                    })
            };
            Ok(boolean(Some(result != (op == BinOp::NotEquiv))))
        }
        BinOp::Lt | BinOp::Gt | BinOp::Le | BinOp::Ge => {
            let (Some(a), Some(b)) = (
                single_prim(&left, "comparison")?,
                single_prim(&right, "comparison")?,
            ) else {
                return Ok(Vec::new());
            };
            let ord = compare(&a, &b)?;
            Ok(boolean(ord.map(|o| match op {
                BinOp::Lt => o == Ordering::Less,
                BinOp::Gt => o == Ordering::Greater,
                BinOp::Le => o != Ordering::Greater,
                _ => o != Ordering::Less,
            })))
        }
        BinOp::In | BinOp::Contains => {
            let (needle, haystack) = if op == BinOp::In {
                (&left, &right)
            } else {
                (&right, &left)
            };
            match singleton(needle, "in/contains")? {
                None => Ok(Vec::new()),
                Some(n) => Ok(boolean(Some(
                    haystack.iter().any(|h| equals(&n, h) == Some(true)),
                ))),
            }
        }
        BinOp::Concat => {
            let a = single_prim(&left, "&")?;
            let b = single_prim(&right, "&")?;
            let text =
                |p: Option<Prim<'_>>| p.map(|p| p.to_text().into_owned()).unwrap_or_default();
            Ok(vec![Item::Prim(Prim::Str(Cow::Owned(text(a) + &text(b))))])
        }
        BinOp::Add | BinOp::Sub | BinOp::Mul | BinOp::Div | BinOp::IntDiv | BinOp::Mod => {
            let (Some(a), Some(b)) = (
                single_prim(&left, "arithmetic")?,
                single_prim(&right, "arithmetic")?,
            ) else {
                return Ok(Vec::new());
            };
            arithmetic(op, &a, &b).map(|p| p.map(Item::Prim).into_iter().collect())
        }
        BinOp::Is | BinOp::As => err("type operator without a type"),
    }
}

fn arithmetic<'a>(op: BinOp, a: &Prim<'a>, b: &Prim<'a>) -> Res<Option<Prim<'a>>> {
    if let (Prim::Int(x), Prim::Int(y)) = (a, b) {
        let (x, y) = (*x, *y);
        return Ok(match op {
            BinOp::Add => x.checked_add(y).map(Prim::Int),
            BinOp::Sub => x.checked_sub(y).map(Prim::Int),
            BinOp::Mul => x.checked_mul(y).map(Prim::Int),
            BinOp::Div => (y != 0).then(|| Prim::Dec(x as f64 / y as f64, 8)),
            BinOp::IntDiv => x.checked_div(y).map(Prim::Int),
            _ => x.checked_rem(y).map(Prim::Int),
        });
    }
    if let (Some(x), Some(y)) = (a.as_f64(), b.as_f64()) {
        let digits = match (a, b) {
            (Prim::Dec(_, d), Prim::Dec(_, e)) => (*d).max(*e),
            (Prim::Dec(_, d), _) | (_, Prim::Dec(_, d)) => *d,
            _ => 0,
        };
        return Ok(match op {
            BinOp::Add => Some(Prim::Dec(x + y, digits)),
            BinOp::Sub => Some(Prim::Dec(x - y, digits)),
            BinOp::Mul => Some(Prim::Dec(x * y, digits)),
            BinOp::Div => (y != 0.0).then(|| Prim::Dec(x / y, 8)),
            BinOp::IntDiv => (y != 0.0).then(|| Prim::Int((x / y).trunc() as i64)),
            _ => (y != 0.0).then(|| Prim::Dec(x % y, digits)),
        });
    }
    if op == BinOp::Add && matches!(a, Prim::Str(_)) && matches!(b, Prim::Str(_)) {
        return Ok(Some(Prim::Str(Cow::Owned(
            a.to_text().into_owned() + &b.to_text(),
        ))));
    }
    err(format!(
        "arithmetic on {} and {} is not supported",
        a.type_name(),
        b.type_name()
    ))
}

/// Evaluates the optional argument `i` to at most one primitive.
fn prim_arg<'a>(
    args: &[Expr],
    i: usize,
    focus: &[Item<'a>],
    env: &Env<'a>,
    what: &str,
) -> Res<Option<Prim<'a>>> {
    match args.get(i) {
        None => Ok(None),
        Some(arg) => single_prim(&evaluate(arg, focus, env)?, what),
    }
}

fn string_arg<'a>(
    args: &[Expr],
    i: usize,
    focus: &[Item<'a>],
    env: &Env<'a>,
    what: &str,
) -> Res<Option<String>> {
    Ok(prim_arg(args, i, focus, env, what)?.map(|p| p.to_text().into_owned()))
}

fn int_arg<'a>(
    args: &[Expr],
    i: usize,
    focus: &[Item<'a>],
    env: &Env<'a>,
    what: &str,
) -> Res<Option<i64>> {
    match prim_arg(args, i, focus, env, what)? {
        None => Ok(None),
        Some(Prim::Int(i)) => Ok(Some(i)),
        Some(_) => err(format!("{what} needs an integer argument")),
    }
}

/// The resource key of a resource node: its `id`.
pub(crate) fn resource_key(json: Json<'_>) -> Option<Item<'_>> {
    json.member("id")
        .filter(|id| matches!(id.kind(), Kind::Str(_)))
        .map(|id| Item::Node(id, None))
}

/// The position of the only `/` of `bytes` when it has exactly one and no `?` or `#`. Eight bytes
/// at a time: references are read for every row of most views.
fn single_slash(bytes: &[u8]) -> Option<usize> {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const LOW7: u64 = 0x7f7f_7f7f_7f7f_7f7f;
    // The high bit of each zero byte of `x`, exactly (no borrow between bytes).
    let zeros = |x: u64| !(((x & LOW7) + LOW7) | x | LOW7);
    let mut slash = None;
    let mut from = 0;
    while from < bytes.len() {
        let end = (from + 8).min(bytes.len());
        let word = match bytes.get(from..from + 8).map(<[u8; 8]>::try_from) {
            Some(Ok(chunk)) => u64::from_le_bytes(chunk),
            _ => {
                // The tail, zero-padded (zeros are none of the bytes looked for).
                let mut tail = [0u8; 8];
                for (t, b) in tail.iter_mut().zip(&bytes[from..end]) {
                    *t = *b;
                }
                u64::from_le_bytes(tail)
            }
        };
        let slashes = zeros(word ^ (ONES * u64::from(b'/')));
        let stops = zeros(word ^ (ONES * u64::from(b'?'))) | zeros(word ^ (ONES * u64::from(b'#')));
        if stops != 0 {
            return None;
        }
        if slashes != 0 {
            if slash.is_some() || slashes.count_ones() > 1 {
                return None;
            }
            slash = Some(from + (slashes.trailing_zeros() / 8) as usize);
        }
        from = end;
    }
    slash
}

/// Splits a reference into type and id: `Type/id`, `http://x/Type/id`, `Type/id/_history/1`,
/// `urn:uuid:id` (no type).
pub fn reference_parts(reference: &str) -> Option<(Option<&str>, &str)> {
    if let Some(uuid) = reference
        .strip_prefix("urn:uuid:")
        .or_else(|| reference.strip_prefix("urn:oid:"))
    {
        return Some((None, uuid));
    }
    if reference.starts_with('#') {
        return None;
    }
    // The common `Type/id` in one scan (one `/`, no `?` or `#`, a type starting upper case); the
    // general split below gives the same answer for it.
    if reference
        .as_bytes()
        .first()
        .is_some_and(u8::is_ascii_uppercase)
        && let Some(at) = single_slash(reference.as_bytes())
        && let (Some(ty), Some(id)) = (reference.get(..at), reference.get(at + 1..))
        && !id.is_empty()
    {
        return Some((Some(ty), id));
    }
    general_reference_parts(reference)
}

/// [`reference_parts`] after its prefixes, without the one-scan `Type/id` path: the one reference
/// reader of `fhirlake_fhir::reference`, with the views' rule that a type starts upper case.
fn general_reference_parts(reference: &str) -> Option<(Option<&str>, &str)> {
    let literal = *Reference::parse(reference).literal()?;
    (literal
        .resource_type
        .starts_with(|c: char| c.is_ascii_uppercase())
        && !literal.id.is_empty())
    .then_some((Some(literal.resource_type), literal.id))
}

fn call<'a>(
    func: Func,
    input: &[Item<'a>],
    args: &[Expr],
    type_arg: Option<&TypeSpec>,
    outer_focus: &[Item<'a>],
    env: &Env<'a>,
) -> Res<Coll<'a>> {
    let per_item = |item: &Item<'a>, i: usize, arg: &Expr| {
        let env = Env {
            index: i as i64,
            ..*env
        };
        evaluate(arg, std::slice::from_ref(item), &env)
    };
    let prims = || input.iter().filter_map(Item::prim);
    let one = |what: &str| single_prim(&input.to_vec(), what);
    let text_of = |p: Prim<'a>| -> Cow<'a, str> {
        match p {
            Prim::Str(s) | Prim::Date(s) | Prim::DateTime(s) | Prim::Time(s) => s,
            other => Cow::Owned(other.to_text().into_owned()),
        }
    };
    let str_value = |s: String| vec![Item::Prim(Prim::Str(Cow::Owned(s)))];
    match func {
        Func::Where => {
            let mut out = Vec::new();
            for (i, item) in input.iter().enumerate() {
                if to_bool(&per_item(item, i, &args[0])?, "where")? == Some(true) {
                    out.push(item.clone());
                }
            }
            Ok(out)
        }
        Func::Select => {
            let mut out = Vec::new();
            for (i, item) in input.iter().enumerate() {
                out.extend(per_item(item, i, &args[0])?);
            }
            Ok(out)
        }
        Func::Exists => match args.first() {
            None => Ok(boolean(Some(!input.is_empty()))),
            Some(arg) => {
                for (i, item) in input.iter().enumerate() {
                    if to_bool(&per_item(item, i, arg)?, "exists")? == Some(true) {
                        return Ok(boolean(Some(true)));
                    }
                }
                Ok(boolean(Some(false)))
            }
        },
        Func::All => {
            for (i, item) in input.iter().enumerate() {
                if to_bool(&per_item(item, i, &args[0])?, "all")? != Some(true) {
                    return Ok(boolean(Some(false)));
                }
            }
            Ok(boolean(Some(true)))
        }
        Func::AllTrue => Ok(boolean(Some(prims().all(|p| p == Prim::Bool(true))))),
        Func::AnyTrue => Ok(boolean(Some(prims().any(|p| p == Prim::Bool(true))))),
        Func::Empty => Ok(boolean(Some(input.is_empty()))),
        Func::Not => Ok(boolean(to_bool(input, "not()")?.map(|b| !b))),
        Func::First => Ok(input.first().cloned().into_iter().collect()),
        Func::Last => Ok(input.last().cloned().into_iter().collect()),
        Func::Tail => Ok(input.iter().skip(1).cloned().collect()),
        Func::Skip => {
            let n = int_arg(args, 0, outer_focus, env, "skip()")?
                .unwrap_or(0)
                .max(0);
            Ok(input.iter().skip(n as usize).cloned().collect())
        }
        Func::Take => {
            let n = int_arg(args, 0, outer_focus, env, "take()")?
                .unwrap_or(0)
                .max(0);
            Ok(input.iter().take(n as usize).cloned().collect())
        }
        Func::Single => match input {
            [] => Ok(Vec::new()),
            [item] => Ok(vec![item.clone()]),
            _ => err(format!("single() got {} values", input.len())),
        },
        Func::Count => Ok(vec![Item::Prim(Prim::Int(input.len() as i64))]),
        Func::Distinct => {
            let mut out = Vec::new();
            for item in input {
                distinct_push(&mut out, item.clone());
            }
            Ok(out)
        }
        Func::Join => {
            let sep = string_arg(args, 0, outer_focus, env, "join()")?.unwrap_or_default();
            let parts: Vec<String> = prims().map(|p| p.to_text().into_owned()).collect();
            Ok(str_value(parts.join(&sep)))
        }
        Func::Extension => {
            let Some(url) = string_arg(args, 0, outer_focus, env, "extension()")? else {
                return Ok(Vec::new());
            };
            let mut out = Vec::new();
            for item in input {
                if let Item::Node(json, _) = item {
                    let mut extensions = Vec::new();
                    push_member(*json, "extension", &mut extensions);
                    out.extend(extensions.into_iter().filter(|e| {
                        e.json().and_then(|j| j.member("url")).and_then(Json::text)
                            == Some(url.as_str())
                    }));
                }
            }
            Ok(out)
        }
        Func::GetResourceKey => Ok(resource_key(resource_key_target(input, env.resource))
            .into_iter()
            .collect()),
        Func::GetReferenceKey => Ok(input
            .iter()
            .filter_map(|item| reference_key(item, type_arg))
            .collect()),
        Func::LowBoundary | Func::HighBoundary => {
            let high = func == Func::HighBoundary;
            let Some(p) = one(func.name())? else {
                return Ok(Vec::new());
            };
            let precision = int_arg(args, 0, outer_focus, env, func.name())?;
            Ok(boundary(&p, high, precision)
                .map(Item::Prim)
                .into_iter()
                .collect())
        }
        Func::Substring => {
            let Some(p) = one("substring()")? else {
                return Ok(Vec::new());
            };
            let text = p.to_text();
            let start = int_arg(args, 0, outer_focus, env, "substring()")?;
            let Some(start) = start.filter(|s| *s >= 0 && (*s as usize) < text.chars().count())
            else {
                return Ok(Vec::new());
            };
            let len = int_arg(args, 1, outer_focus, env, "substring()")?;
            let chars = text.chars().skip(start as usize);
            let s: String = match len {
                Some(len) => chars.take(len.max(0) as usize).collect(),
                None => chars.collect(),
            };
            Ok(str_value(s))
        }
        Func::StartsWith | Func::EndsWith | Func::ContainsStr | Func::Matches | Func::IndexOf => {
            let Some(p) = one(func.name())? else {
                return Ok(Vec::new());
            };
            let Some(arg) = string_arg(args, 0, outer_focus, env, func.name())? else {
                return Ok(Vec::new());
            };
            let text = p.to_text();
            Ok(match func {
                Func::StartsWith => boolean(Some(text.starts_with(arg.as_str()))),
                Func::EndsWith => boolean(Some(text.ends_with(arg.as_str()))),
                Func::ContainsStr => boolean(Some(text.contains(arg.as_str()))),
                Func::IndexOf => vec![Item::Prim(Prim::Int(
                    text.find(arg.as_str())
                        .map_or(-1, |i| text[..i].chars().count() as i64),
                ))],
                _ => {
                    let re = regex::Regex::new(&arg)
                        .map_err(|_| EvalError("matches(): invalid regular expression".into()))?;
                    boolean(Some(re.is_match(&text)))
                }
            })
        }
        Func::Replace => {
            let Some(p) = one("replace()")? else {
                return Ok(Vec::new());
            };
            let (Some(pattern), Some(with)) = (
                string_arg(args, 0, outer_focus, env, "replace()")?,
                string_arg(args, 1, outer_focus, env, "replace()")?,
            ) else {
                return Ok(Vec::new());
            };
            Ok(str_value(p.to_text().replace(&pattern, &with)))
        }
        Func::Upper | Func::Lower | Func::Trim | Func::Length => {
            let Some(p) = one(func.name())? else {
                return Ok(Vec::new());
            };
            let text = p.to_text();
            Ok(match func {
                Func::Upper => str_value(text.to_uppercase()),
                Func::Lower => str_value(text.to_lowercase()),
                Func::Trim => str_value(text.trim().to_string()),
                _ => vec![Item::Prim(Prim::Int(text.chars().count() as i64))],
            })
        }
        Func::ToString => Ok(one("toString()")?
            .map(|p| Item::Prim(Prim::Str(text_of(p))))
            .into_iter()
            .collect()),
        Func::ToInteger => Ok(one("toInteger()")?
            .and_then(|p| match p {
                Prim::Int(i) => Some(i),
                Prim::Bool(b) => Some(i64::from(b)),
                Prim::Str(s) => s.trim().parse::<i64>().ok(),
                _ => None,
            })
            .map(|i| Item::Prim(Prim::Int(i)))
            .into_iter()
            .collect()),
        Func::ToDecimal => Ok(one("toDecimal()")?
            .and_then(|p| match p {
                Prim::Int(i) => Some(Prim::Dec(i as f64, 0)),
                Prim::Dec(f, d) => Some(Prim::Dec(f, d)),
                Prim::Bool(b) => Some(Prim::Dec(if b { 1.0 } else { 0.0 }, 0)),
                Prim::Str(s) => s.trim().parse::<f64>().ok().map(|f| {
                    let digits = s.split_once('.').map_or(0, |(_, f)| f.len() as u32);
                    Prim::Dec(f, digits)
                }),
                _ => None,
            })
            .map(Item::Prim)
            .into_iter()
            .collect()),
        Func::ToBoolean => Ok(boolean(one("toBoolean()")?.and_then(|p| match p {
            Prim::Bool(b) => Some(b),
            Prim::Int(1) => Some(true),
            Prim::Int(0) => Some(false),
            Prim::Str(s) => match s.to_ascii_lowercase().as_str() {
                "true" | "t" | "yes" | "y" | "1" | "1.0" => Some(true),
                "false" | "f" | "no" | "n" | "0" | "0.0" => Some(false),
                _ => None,
            },
            _ => None,
        }))),
        Func::ToDate | Func::ToDateTime => Ok(one(func.name())?
            .and_then(|p| {
                let text = text_of(p);
                let parts = DateTimeParts::parse(&text)?;
                Some(if func == Func::ToDate {
                    let end = text.find('T').unwrap_or(text.len());
                    let _ = parts;
                    Prim::Date(Cow::Owned(text[..end].to_string()))
                } else {
                    Prim::DateTime(text)
                })
            })
            .map(Item::Prim)
            .into_iter()
            .collect()),
        Func::HasValue => Ok(boolean(Some(
            matches!(input, [item] if item.prim().is_some()),
        ))),
        Func::Iif => {
            let condition = evaluate(&args[0], input, env)?;
            if to_bool(&condition, "iif()")? == Some(true) {
                evaluate(&args[1], input, env)
            } else if let Some(otherwise) = args.get(2) {
                evaluate(otherwise, input, env)
            } else {
                Ok(Vec::new())
            }
        }
        Func::Abs | Func::Floor | Func::Ceiling | Func::Round => {
            let Some(p) = one(func.name())? else {
                return Ok(Vec::new());
            };
            let digits = int_arg(args, 0, outer_focus, env, "round()")?.unwrap_or(0);
            Ok(match (func, p) {
                (Func::Abs, Prim::Int(i)) => vec![Item::Prim(Prim::Int(i.abs()))],
                (Func::Abs, Prim::Dec(f, d)) => vec![Item::Prim(Prim::Dec(f.abs(), d))],
                (Func::Floor, Prim::Int(i)) | (Func::Ceiling, Prim::Int(i)) => {
                    vec![Item::Prim(Prim::Int(i))]
                }
                (Func::Floor, Prim::Dec(f, _)) => vec![Item::Prim(Prim::Int(f.floor() as i64))],
                (Func::Ceiling, Prim::Dec(f, _)) => vec![Item::Prim(Prim::Int(f.ceil() as i64))],
                (Func::Round, Prim::Int(i)) => vec![Item::Prim(Prim::Int(i))],
                (Func::Round, Prim::Dec(f, _)) => {
                    let scale = 10f64.powi(digits as i32);
                    vec![Item::Prim(Prim::Dec(
                        (f * scale).round() / scale,
                        digits as u32,
                    ))]
                }
                _ => return err(format!("{}() needs a number", func.name())),
            })
        }
        Func::Children => {
            let mut out = Vec::new();
            for item in input {
                if let Some(Kind::Object(members)) = item.json().map(Json::kind) {
                    for (_, value) in members.iter() {
                        match value.kind() {
                            Kind::Array(items) => {
                                out.extend(items.iter().map(|i| Item::Node(i, None)))
                            }
                            _ => out.push(Item::Node(value, None)),
                        }
                    }
                }
            }
            Ok(out)
        }
        Func::Trace => Ok(input.to_vec()),
        // The view compiler rejects these (deid's rule paths use them); never reached from a view.
        Func::Descendants | Func::NodesByType => {
            err(format!("{}() is not supported in views", func.name()))
        }
    }
}

/// `lowBoundary()` / `highBoundary()` of one value.
fn boundary<'a>(p: &Prim<'a>, high: bool, precision: Option<i64>) -> Option<Prim<'a>> {
    match p {
        Prim::Int(i) => Some(Prim::Dec(decimal_boundary(*i as f64, 0, high), 1)),
        Prim::Dec(f, digits) => {
            let value = decimal_boundary(*f, *digits, high);
            Some(match precision {
                Some(p) if (0..=28).contains(&p) => {
                    let scale = 10f64.powi(p as i32);
                    let v = if high {
                        (value * scale).ceil()
                    } else {
                        (value * scale).floor()
                    };
                    Prim::Dec(v / scale, p as u32)
                }
                _ => Prim::Dec(value, digits + 1),
            })
        }
        Prim::Date(s) => date_boundary_text(s, high)
            .map(|t| truncate_date(t, precision))
            .map(|t| Prim::Date(Cow::Owned(t))),
        Prim::DateTime(s) => {
            date_time_boundary_text(s, high).map(|t| Prim::DateTime(Cow::Owned(t)))
        }
        Prim::Time(s) => time_boundary_text(s, high).map(|t| Prim::Time(Cow::Owned(t))),
        Prim::Str(s) => {
            // An element whose type the JSON does not tell: decide by its shape.
            if parse_time(s).is_some() && s.contains(':') && !s.contains('-') {
                time_boundary_text(s, high).map(|t| Prim::Time(Cow::Owned(t)))
            } else if s.contains('T') {
                date_time_boundary_text(s, high).map(|t| Prim::DateTime(Cow::Owned(t)))
            } else {
                date_boundary_text(s, high)
                    .map(|t| truncate_date(t, precision))
                    .map(|t| Prim::Date(Cow::Owned(t)))
            }
        }
        Prim::Bool(_) => None,
    }
}

fn truncate_date(text: String, precision: Option<i64>) -> String {
    match precision {
        Some(4) => text[..4].to_string(),
        Some(6) => text[..7].to_string(),
        _ => text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fhirpath::parse;

    fn eval_on(text: &str, path: &str) -> Vec<String> {
        crate::json::parse(text, |json| {
            let env = Env {
                resource: json,
                row_index: 0,
                index: 0,
            };
            let expr = parse(path).unwrap();
            evaluate(&expr, &[Item::Node(json, None)], &env)
                .unwrap()
                .iter()
                .map(|i| match i.prim() {
                    Some(p) => p.to_text().into_owned(),
                    None => i.json().map(|j| j.to_json_string()).unwrap_or_default(),
                })
                .collect()
        })
        .unwrap()
    }

    const OBS: &str = r#"{"resourceType":"Observation","id":"o1","subject":{"reference":"Patient/p1"},
        "code":{"coding":[{"system":"http://loinc.org","code":"1"},{"system":"s","code":"2"}]},
        "valueQuantity":{"value":1.5,"unit":"mg"},"effectiveDateTime":"2020-01-02T10:00:00Z",
        "component":[{"valueInteger":3},{"valueString":"x"}]}"#;

    #[test]
    fn navigation_and_choice_types() {
        assert_eq!(eval_on(OBS, "code.coding.code"), ["1", "2"]);
        assert_eq!(eval_on(OBS, "Observation.code.coding[1].system"), ["s"]);
        assert_eq!(eval_on(OBS, "value.ofType(Quantity).value"), ["1.5"]);
        assert!(eval_on(OBS, "value.ofType(string)").is_empty());
        assert_eq!(eval_on(OBS, "component.value.ofType(integer)"), ["3"]);
        assert_eq!(eval_on(OBS, "subject.getReferenceKey(Patient)"), ["p1"]);
        assert!(eval_on(OBS, "subject.getReferenceKey(Group)").is_empty());
        assert_eq!(eval_on(OBS, "getResourceKey()"), ["o1"]);
        assert_eq!(
            eval_on(OBS, "code.coding.where(system = 'http://loinc.org').code"),
            ["1"]
        );
        assert_eq!(eval_on(OBS, "code.coding.code.join('|')"), ["1|2"]);
        assert_eq!(eval_on(OBS, "code.coding.count() + 1"), ["3"]);
        assert_eq!(
            eval_on(OBS, "effective.ofType(dateTime) > @2020-01-01T00:00:00Z"),
            ["true"]
        );
        assert_eq!(eval_on(OBS, "'2019'.toInteger() + 1"), ["2020"]);
        assert_eq!(eval_on(OBS, "iif(id = 'o1', 'yes', 'no')"), ["yes"]);
    }

    #[test]
    fn choice_suffixes_are_r4_types() {
        let obs = r#"{"resourceType":"Observation","component":[{"valueInteger64":"5"},
            {"valueBase64Binary":"QQ=="},{"valueCodeableReference":{}}]}"#;
        assert_eq!(eval_on(obs, "component.value"), ["QQ=="]);
        assert_eq!(eval_on(obs, "component.valueInteger64"), ["5"]);
    }

    #[test]
    fn three_valued_logic() {
        assert!(eval_on(OBS, "missing = 1").is_empty());
        assert_eq!(eval_on(OBS, "missing.exists() or true"), ["true"]);
        assert_eq!(eval_on(OBS, "(missing = 1) and false"), ["false"]);
        assert!(eval_on(OBS, "(missing = 1) and true").is_empty());
        assert_eq!(eval_on(OBS, "(id = 'x').not()"), ["true"]);
    }

    #[test]
    fn references() {
        assert_eq!(reference_parts("Patient/1"), Some((Some("Patient"), "1")));
        assert_eq!(
            reference_parts("http://x/fhir/Patient/1/_history/2"),
            Some((Some("Patient"), "1"))
        );
        assert_eq!(reference_parts("urn:uuid:abc"), Some((None, "abc")));
        assert_eq!(reference_parts("#c1"), None);
        // The one-scan `Type/id` path and the general split agree at their border.
        assert_eq!(
            reference_parts("Patient/1?x=y"),
            Some((Some("Patient"), "1"))
        );
        assert_eq!(
            reference_parts("Patient/1#frag"),
            Some((Some("Patient"), "1"))
        );
        assert_eq!(reference_parts("Patient/1/"), Some((Some("Patient"), "1")));
        assert_eq!(reference_parts("Patient/"), None);
        assert_eq!(reference_parts("patient/1"), None);
        assert_eq!(reference_parts("/Patient/1"), Some((Some("Patient"), "1")));
        assert_eq!(
            reference_parts("Patient/1/_history/2"),
            Some((Some("Patient"), "1"))
        );
        assert_eq!(reference_parts("_history/2"), None);
    }

    proptest::proptest! {
        /// The eight-bytes-at-a-time `Type/id` path answers as the general split does.
        #[test]
        fn one_scan_references_equal_the_general_split(
            parts in proptest::collection::vec(
                proptest::sample::select(vec![
                    "Patient", "/", "?", "#", "a", "1", "_history", "http:", "x", "é", "Encounter",
                    "0123456789abcdef",
                ]),
                0..10,
            )
        ) {
            let reference: String = parts.concat();
            if !reference.starts_with("urn:") && !reference.starts_with('#') {
                proptest::prop_assert_eq!(
                    reference_parts(&reference),
                    general_reference_parts(&reference),
                    "{}", reference
                );
            }
        }
    }
}
