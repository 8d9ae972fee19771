//! The FHIRPath subset of SQL on FHIR v2: the evaluator ([`eval`]) over the JSON tree of
//! [`crate::json`] and compiled plain paths ([`path`]). The syntax (AST and [`parse`]) is
//! [`fhirlake_fhir::fhirpath`]'s, re-exported here.
//!
//! Covered: member navigation (choice elements by their FHIR name: `value` finds `valueQuantity`),
//! indexers, `$this`, `$index`, `%constants`, `%rowIndex`, literals (string, integer, decimal,
//! boolean, date, dateTime, time, `{}`), the operators `* / div mod + - & | < > <= >= = != ~ !~
//! in contains and or xor implies is as`, and the functions of [`Func`] but `descendants` and `nodesByType` — the suite's
//! "shareable" and "experimental" sets (`join`, `lowBoundary`, `highBoundary`,
//! `getResourceKey`, `getReferenceKey`) plus the common string, conversion and collection ones.

pub mod eval;
pub mod path;
pub mod temporal;

pub use eval::{Env, Item, Prim, evaluate};
pub use fhirlake_fhir::fhirpath::{BinOp, Expr, Func, Literal, TypeSpec, parse};
pub use path::{MemberIndex, MemberNames, PathPlan};
