//! The FHIRPath subset of SQL on FHIR v2: the AST ([`Expr`]), its parser ([`parse`]) and the
//! evaluator ([`eval`]) over the JSON tree of [`crate::json`], and compiled plain paths ([`path`]).
//!
//! Covered: member navigation (choice elements by their FHIR name: `value` finds `valueQuantity`),
//! indexers, `$this`, `$index`, `%constants`, `%rowIndex`, literals (string, integer, decimal,
//! boolean, date, dateTime, time, `{}`), the operators `* / div mod + - & | < > <= >= = != ~ !~
//! in contains and or xor implies is as`, and the functions listed in [`Func`] — the suite's
//! "shareable" and "experimental" sets (`join`, `lowBoundary`, `highBoundary`,
//! `getResourceKey`, `getReferenceKey`) plus the common string, conversion and collection ones.

pub mod eval;
pub mod parse;
pub mod path;
pub mod temporal;

pub use eval::{Env, Item, Prim, evaluate};
pub use parse::{ParseError, parse};
pub use path::{MemberIndex, MemberNames, PathPlan};

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
        /// The functions the evaluator implements.
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
    Trace = "trace"(1, 2),
}
