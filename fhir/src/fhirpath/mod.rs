//! FHIRPath syntax, once for every fhirlake evaluator: the AST ([`Expr`], [`Literal`],
//! [`TypeSpec`], [`BinOp`], [`Func`]), its [`lexer`] and its [`parser`] ([`parse`]).
//!
//! The grammar is the union of what the view compiler (SQL on FHIR v2: `%constants`, `$index`,
//! `getReferenceKey(T)`, date/time literals) and the de-identification rules (the Microsoft
//! anonymizer's `nodesByType('T')`, `ofType('T')`) need. Function names are resolved while
//! parsing, so an unknown function or a wrong number of arguments is a syntax error with its
//! position, never a runtime surprise. Evaluation is not here: views compiles the AST to its
//! allocation-free paths, deid to its one-walk selector automaton.
//!
//! [`is_choice_suffix`] says which JSON key suffixes name a choice element's type (`value` +
//! `Quantity`), from the R4 type table.

pub mod lexer;
pub mod parser;

use std::collections::HashSet;
use std::hash::BuildHasherDefault;
use std::sync::LazyLock;

pub use parser::parse;

use crate::types::{self, WordHasher};

/// A parsed FHIRPath expression.
#[derive(Debug, Clone, PartialEq)]
pub enum Expr {
    /// `{}`
    Empty,
    /// A literal.
    Literal(Literal),
    /// `$this`: the focus.
    This,
    /// `$index` inside `where`/`select`.
    IndexVar,
    /// `%name`, before the compiler resolves it.
    Constant(String),
    /// `%rowIndex` (resolved by the compiler).
    RowIndex,
    /// `%resource` / `%rootResource` / `%context`: the resource the row comes from.
    Resource,
    /// `base.name`, or `name` on the focus.
    Member(Option<Box<Expr>>, String),
    /// `base[index]`.
    Index(Box<Expr>, Box<Expr>),
    /// `base.ofType(T)`.
    OfType(Box<Expr>, TypeSpec),
    /// `base is T` / `base as T`.
    TypeOp {
        /// `is` (true) or `as` (false).
        is: bool,
        /// Operand.
        base: Box<Expr>,
        /// Type.
        ty: TypeSpec,
    },
    /// A function call on `base` (None: on the focus).
    Call {
        /// What the function is invoked on.
        base: Option<Box<Expr>>,
        /// The function.
        func: Func,
        /// Arguments (unevaluated: `where` evaluates per item).
        args: Vec<Expr>,
        /// The type argument of `getReferenceKey(T)`.
        type_arg: Option<TypeSpec>,
    },
    /// A binary operator.
    Binary(BinOp, Box<Expr>, Box<Expr>),
    /// Unary minus.
    Negate(Box<Expr>),
}

/// A literal value.
#[derive(Debug, Clone, PartialEq)]
pub enum Literal {
    /// `'text'`
    String(String),
    /// `42`
    Integer(i64),
    /// `4.20` (value and source text, whose digits set the precision)
    Decimal(f64, String),
    /// `true` / `false`
    Boolean(bool),
    /// `@2020-01-02`
    Date(String),
    /// `@2020-01-02T10:00:00Z`
    DateTime(String),
    /// `@T10:00`
    Time(String),
}

/// A type specifier such as `Quantity`, `FHIR.string` or `System.Integer`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TypeSpec {
    /// `FHIR`, `System` or none.
    pub namespace: Option<String>,
    /// The type name.
    pub name: String,
}

impl TypeSpec {
    /// Builds a type specifier.
    pub fn new(namespace: Option<String>, name: String) -> Self {
        Self { namespace, name }
    }
}

/// Binary operators.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[allow(missing_docs)]
pub enum BinOp {
    Mul,
    Div,
    IntDiv,
    Mod,
    Add,
    Sub,
    Concat,
    Is,
    As,
    Union,
    Lt,
    Gt,
    Le,
    Ge,
    Eq,
    Ne,
    Equiv,
    NotEquiv,
    In,
    Contains,
    And,
    Or,
    Xor,
    Implies,
}

macro_rules! functions {
    ($($variant:ident = $name:literal ($min:literal, $max:literal)),* $(,)?) => {
        /// The functions of the grammar, each with its number of arguments. An evaluator may implement
        /// a subset (views has no `nodesByType`, deid no `join`) and says so when it compiles.
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        #[allow(missing_docs)]
        pub enum Func { $($variant),* }

        impl Func {
            /// The function of this name.
            pub fn from_name(name: &str) -> Option<Self> {
                match name { $($name => Some(Func::$variant),)* _ => None }
            }

            /// Minimum and maximum number of arguments.
            pub fn arity(self) -> (usize, usize) {
                match self { $(Func::$variant => ($min, $max)),* }
            }

            /// The FHIRPath name.
            pub fn name(self) -> &'static str {
                match self { $(Func::$variant => $name),* }
            }
        }
    };
}

functions! {
    Where = "where"(1, 1),
    Select = "select"(1, 1),
    Exists = "exists"(0, 1),
    Empty = "empty"(0, 0),
    Not = "not"(0, 0),
    All = "all"(1, 1),
    AllTrue = "allTrue"(0, 0),
    AnyTrue = "anyTrue"(0, 0),
    First = "first"(0, 0),
    Last = "last"(0, 0),
    Tail = "tail"(0, 0),
    Skip = "skip"(1, 1),
    Take = "take"(1, 1),
    Single = "single"(0, 0),
    Count = "count"(0, 0),
    Distinct = "distinct"(0, 0),
    Join = "join"(0, 1),
    Extension = "extension"(1, 1),
    GetResourceKey = "getResourceKey"(0, 0),
    GetReferenceKey = "getReferenceKey"(0, 1),
    LowBoundary = "lowBoundary"(0, 1),
    HighBoundary = "highBoundary"(0, 1),
    Substring = "substring"(1, 2),
    StartsWith = "startsWith"(1, 1),
    EndsWith = "endsWith"(1, 1),
    ContainsStr = "contains"(1, 1),
    Matches = "matches"(1, 1),
    Replace = "replace"(2, 2),
    IndexOf = "indexOf"(1, 1),
    Upper = "upper"(0, 0),
    Lower = "lower"(0, 0),
    Length = "length"(0, 0),
    Trim = "trim"(0, 0),
    ToString = "toString"(0, 0),
    ToInteger = "toInteger"(0, 0),
    ToDecimal = "toDecimal"(0, 0),
    ToBoolean = "toBoolean"(0, 0),
    ToDate = "toDate"(0, 0),
    ToDateTime = "toDateTime"(0, 0),
    HasValue = "hasValue"(0, 0),
    Iif = "iif"(2, 3),
    Abs = "abs"(0, 0),
    Round = "round"(0, 1),
    Floor = "floor"(0, 0),
    Ceiling = "ceiling"(0, 0),
    Children = "children"(0, 0),
    Descendants = "descendants"(0, 0),
    NodesByType = "nodesByType"(1, 1),
    Trace = "trace"(1, 2),
}

/// Every suffix a choice element's JSON key can carry in R4 (`Quantity` of `valueQuantity`,
/// `DateTime` of `effectiveDateTime`), taken from the choice elements of the type table.
static CHOICE_SUFFIXES: LazyLock<HashSet<&'static str, BuildHasherDefault<WordHasher>>> =
    LazyLock::new(|| {
        types::all_types()
            .flat_map(types::children)
            .filter(|(_, child)| child.is_choice)
            .filter_map(|(key, child)| key.get(child.element.len()..))
            .collect()
    });

/// Is `suffix` the type part of some R4 choice element's JSON key (`Quantity`, `DateTime`,
/// `Base64Binary`)? For navigation that has no parent type at hand: `value` then finds
/// `valueQuantity` but not `valueInteger64` (an R5 type).
pub fn is_choice_suffix(suffix: &str) -> bool {
    CHOICE_SUFFIXES.contains(suffix)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn choice_suffixes_are_the_r4_types() {
        for suffix in [
            "Quantity",
            "DateTime",
            "Base64Binary",
            "Meta",
            "Dosage",
            "String",
        ] {
            assert!(is_choice_suffix(suffix), "{suffix}");
        }
        for suffix in [
            "Integer64",
            "CodeableReference",
            "RatioRange",
            "quantity",
            "",
            "Foo",
        ] {
            assert!(!is_choice_suffix(suffix), "{suffix}");
        }
    }
}
