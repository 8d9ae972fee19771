//! `reference_key(reference [, 'Type'])`: the key a FHIR reference points at.
//!
//! The same rule as the views' `getReferenceKey()` (so the result joins the views' `id` columns):
//! `Patient/123`, `http://server/fhir/Patient/123`, `Patient/123/_history/2` give `123`;
//! `urn:uuid:abc` gives `abc`. A contained (`#x`) or unparseable reference gives NULL. With a type,
//! only references to that type give a key (`urn:uuid:` references name no type, so NULL).

use std::sync::Arc;

use datafusion::arrow::array::{AsArray, StringArray};
use datafusion::arrow::datatypes::DataType;
use datafusion::common::{Result, exec_err, plan_err};
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDFImpl, Signature, Volatility,
};

use super::text_argument;
use crate::view::fhirpath::eval::reference_parts;

/// The key of `reference`, if it names one (and, with `wanted_type`, one of that type).
pub fn reference_key<'a>(reference: &'a str, wanted_type: Option<&str>) -> Option<&'a str> {
    let (ty, id) = reference_parts(reference)?;
    match wanted_type {
        Some(wanted) if ty != Some(wanted) => None,
        _ => Some(id),
    }
}

/// See the [module documentation](self).
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct ReferenceKey {
    signature: Signature,
}

impl ReferenceKey {
    /// The function.
    pub fn new() -> Self {
        Self {
            signature: Signature::user_defined(Volatility::Immutable),
        }
    }
}

impl Default for ReferenceKey {
    fn default() -> Self {
        Self::new()
    }
}

impl ScalarUDFImpl for ReferenceKey {
    fn name(&self) -> &str {
        "reference_key"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(DataType::Utf8)
    }

    fn coerce_types(&self, arg_types: &[DataType]) -> Result<Vec<DataType>> {
        if !(1..=2).contains(&arg_types.len()) {
            return plan_err!(
                "reference_key takes a reference and optionally a resource type: \
                 reference_key(reference, 'Patient'), got {} arguments",
                arg_types.len()
            );
        }
        arg_types
            .iter()
            .enumerate()
            .map(|(i, t)| text_argument(self.name(), i + 1, t))
            .collect()
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let arrays = ColumnarValue::values_to_arrays(&args.args)?;
        let keys: StringArray = match arrays.as_slice() {
            [reference] => reference
                .as_string::<i32>()
                .iter()
                .map(|r| r.and_then(|r| reference_key(r, None)))
                .collect(),
            [reference, wanted] => reference
                .as_string::<i32>()
                .iter()
                .zip(wanted.as_string::<i32>().iter())
                .map(|(r, t)| reference_key(r?, Some(t?)))
                .collect(),
            other => return exec_err!("reference_key takes 1 or 2 arguments, got {}", other.len()),
        };
        Ok(ColumnarValue::Array(Arc::new(keys)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_of_relative_absolute_and_urn_references() {
        assert_eq!(reference_key("Patient/123", None), Some("123"));
        assert_eq!(reference_key("Patient/123", Some("Patient")), Some("123"));
        assert_eq!(reference_key("Patient/123", Some("Group")), None);
        assert_eq!(
            reference_key("https://x.org/fhir/Patient/123/_history/2", Some("Patient")),
            Some("123")
        );
        assert_eq!(reference_key("urn:uuid:abc-1", None), Some("abc-1"));
        assert_eq!(reference_key("urn:uuid:abc-1", Some("Patient")), None);
        assert_eq!(reference_key("#contained", None), None);
        assert_eq!(reference_key("", None), None);
        assert_eq!(reference_key("nonsense", None), None);
    }
}
