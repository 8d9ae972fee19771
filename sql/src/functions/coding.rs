//! `fhir_code_in(system, code, 'system', 'code1', 'code2', ...)`: whether a coding is one of a list
//! of codes of one code system.
//!
//! The first two arguments are the coding's system and code (view columns such as
//! `condition.code_system` and `condition.code`, or JSON values); the third names the code system,
//! by URI (`http://snomed.info/sct`) or by one of the aliases of [`SYSTEM_ALIASES`]; the rest are
//! the codes. System and codes must be constants. The result is NULL when the code is NULL (as
//! `code IN (...)` is), false when the coding has another or no system.

use std::collections::HashSet;
use std::sync::Arc;

use datafusion::arrow::array::{AsArray, BooleanArray};
use datafusion::arrow::datatypes::DataType;
use datafusion::common::{Result, ScalarValue, exec_err, plan_err};
use datafusion::logical_expr::simplify::{ExprSimplifyResult, SimplifyContext};
use datafusion::logical_expr::{
    ColumnarValue, Expr, ScalarFunctionArgs, ScalarUDFImpl, Signature, Volatility,
};

use super::text_argument;

/// Short names accepted for the code systems population-health queries use most (case-insensitive).
pub const SYSTEM_ALIASES: &[(&str, &str)] = &[
    ("loinc", "http://loinc.org"),
    ("snomed", "http://snomed.info/sct"),
    ("sct", "http://snomed.info/sct"),
    ("rxnorm", "http://www.nlm.nih.gov/research/umls/rxnorm"),
    ("cvx", "http://hl7.org/fhir/sid/cvx"),
    ("icd10", "http://hl7.org/fhir/sid/icd-10"),
    ("icd10cm", "http://hl7.org/fhir/sid/icd-10-cm"),
    ("icd9cm", "http://hl7.org/fhir/sid/icd-9-cm"),
    ("ucum", "http://unitsofmeasure.org"),
];

/// The system URI an argument names: an alias from [`SYSTEM_ALIASES`], or the text itself.
pub fn resolve_system(name: &str) -> &str {
    SYSTEM_ALIASES
        .iter()
        .find(|(alias, _)| alias.eq_ignore_ascii_case(name))
        .map_or(name, |(_, uri)| uri)
}

/// See the [module documentation](self).
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct FhirCodeIn {
    signature: Signature,
}

impl FhirCodeIn {
    /// The function.
    pub fn new() -> Self {
        Self {
            signature: Signature::user_defined(Volatility::Immutable),
        }
    }
}

impl Default for FhirCodeIn {
    fn default() -> Self {
        Self::new()
    }
}

/// A constant text argument (1-based `position`), never NULL.
fn constant_text(value: &ColumnarValue, position: usize) -> Result<&str> {
    match value {
        ColumnarValue::Scalar(
            ScalarValue::Utf8(Some(text))
            | ScalarValue::LargeUtf8(Some(text))
            | ScalarValue::Utf8View(Some(text)),
        ) => Ok(text),
        ColumnarValue::Scalar(scalar) if scalar.is_null() => {
            exec_err!("fhir_code_in: argument {position} is NULL; give a code system or code")
        }
        _ => exec_err!(
            "fhir_code_in: argument {position} must be a constant (the code system and the codes \
             are literals, e.g. fhir_code_in(code_system, code, 'snomed', '44054006'))"
        ),
    }
}

impl ScalarUDFImpl for FhirCodeIn {
    fn name(&self) -> &str {
        "fhir_code_in"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(DataType::Boolean)
    }

    fn coerce_types(&self, arg_types: &[DataType]) -> Result<Vec<DataType>> {
        if arg_types.len() < 4 {
            return plan_err!(
                "fhir_code_in takes a system column, a code column, a code system and at least \
                 one code: fhir_code_in(code_system, code, 'snomed', '44054006', ...), got {} \
                 arguments",
                arg_types.len()
            );
        }
        arg_types
            .iter()
            .enumerate()
            .map(|(i, t)| text_argument(self.name(), i + 1, t))
            .collect()
    }

    /// Rejects a code system or code that is not a constant at planning time. The check in
    /// `invoke_with_args` alone is not enough: a column whose values are all equal can reach the
    /// function as a scalar (DataFusion knows it from the file statistics), so
    /// `fhir_code_in(code_system, code, code_system, ...)` ran on a real lake. Constant
    /// sub-expressions are folded before this is called, and placeholders of prepared statements
    /// are bound to literals before the optimizer runs.
    fn simplify(&self, args: Vec<Expr>, _info: &SimplifyContext) -> Result<ExprSimplifyResult> {
        // A placeholder may come wrapped in the cast type coercion put around it.
        fn constant(expr: &Expr) -> bool {
            match expr {
                Expr::Literal(..) | Expr::Placeholder(_) => true,
                Expr::Cast(cast) => constant(&cast.expr),
                Expr::TryCast(cast) => constant(&cast.expr),
                _ => false,
            }
        }
        for (i, arg) in args.iter().enumerate().skip(2) {
            if !constant(arg) {
                return plan_err!(
                    "fhir_code_in: argument {} must be a constant (the code system and the codes \
                     are literals, e.g. fhir_code_in(code_system, code, 'snomed', '44054006'))",
                    i + 1
                );
            }
        }
        Ok(ExprSimplifyResult::Original(args))
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let rows = args.number_rows;
        let [system, code, wanted_system, codes @ ..] = args.args.as_slice() else {
            return exec_err!("fhir_code_in needs at least 4 arguments");
        };
        let wanted_system = resolve_system(constant_text(wanted_system, 3)?);
        let codes: HashSet<&str> = codes
            .iter()
            .enumerate()
            .map(|(i, c)| constant_text(c, i + 4))
            .collect::<Result<_>>()?;
        let (system, code) = (system.to_array(rows)?, code.to_array(rows)?);
        let (system, code) = (system.as_string::<i32>(), code.as_string::<i32>());
        let matches: BooleanArray = system
            .iter()
            .zip(code.iter())
            .map(|(system, code)| {
                let code = code?;
                Some(system == Some(wanted_system) && codes.contains(code))
            })
            .collect();
        Ok(ColumnarValue::Array(Arc::new(matches)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aliases_resolve_case_insensitively() {
        assert_eq!(resolve_system("SNOMED"), "http://snomed.info/sct");
        assert_eq!(resolve_system("loinc"), "http://loinc.org");
        assert_eq!(resolve_system("http://x.org/cs"), "http://x.org/cs");
    }
}
