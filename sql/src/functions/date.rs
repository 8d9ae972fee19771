//! `fhir_date(value)` and `age_in_years(birth, at)`: FHIR dates of any precision in SQL.
//!
//! FHIR dates are text of variable precision (`1970`, `1970-03`, `1970-03-05`, or a dateTime /
//! instant such as `2014-05-21T12:34:18-04:00`); the views keep them as text. A partial date
//! stands for its first day (`1970` is 1970-01-01, `1970-03` is 1970-03-01), and a dateTime for its
//! calendar date as written (its time and offset are dropped, not converted to UTC). Text that is
//! not a valid FHIR date (`1970-02-30`, `03/05/1970`, `''`) gives NULL.

use std::sync::Arc;

use chrono::{Datelike, NaiveDate};
use datafusion::arrow::array::{Array, ArrayRef, AsArray, Date32Array, Int64Array};
use datafusion::arrow::datatypes::{DataType, Date32Type, Int64Type};
use datafusion::common::{Result, exec_err, plan_err};
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDFImpl, Signature, Volatility,
};
use fhirlake_fhir::datetime::{Date, Time};

/// Parses FHIR `date`, `dateTime` or `instant` text into the first calendar day it covers.
///
/// Accepted: `YYYY`, `YYYY-MM`, `YYYY-MM-DD`, and `YYYY-MM-DD` followed by `T` (or a space, as SQL
/// timestamps print) and at least `hh:mm`. Anything else, including impossible days, is `None`.
/// Looser than R4 on purpose (no offset or seconds needed, text after `hh:mm` is not read): the
/// date is all that is kept.
pub fn parse_fhir_date(text: &str) -> Option<NaiveDate> {
    let (date, rest) = Date::scan(text)?;
    if !rest.is_empty() {
        // Only a full date may carry a time; the time must at least have hours and minutes.
        let time_ok = date.day.is_some()
            && rest
                .strip_prefix(['T', ' '])
                .and_then(Time::scan)
                .is_some_and(|(time, _)| {
                    time.hour < 24 && time.minute.is_some_and(|minute| minute < 60)
                });
        if !time_ok {
            return None;
        }
    }
    date.first_day()
}

/// Whole years from `birth` to `at` (the birthday counts on its day; someone born on 29 February
/// has their birthday on 1 March in other years). `None` when `at` is before `birth`.
pub fn whole_years(birth: NaiveDate, at: NaiveDate) -> Option<i64> {
    if at < birth {
        return None;
    }
    let mut years = i64::from(at.year() - birth.year());
    if (at.month(), at.day()) < (birth.month(), birth.day()) {
        years -= 1;
    }
    Some(years)
}

/// The type a date-like argument is cast to: text stays text, dates and timestamps become `DATE`,
/// and (where `year_allowed`) integers are years (`patient.birth_year`).
fn date_argument(
    function: &str,
    position: usize,
    data_type: &DataType,
    year_allowed: bool,
) -> Result<DataType> {
    match data_type {
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View | DataType::Null => {
            Ok(DataType::Utf8)
        }
        DataType::Date32 | DataType::Date64 | DataType::Timestamp(_, _) => Ok(DataType::Date32),
        t if year_allowed && t.is_integer() => Ok(DataType::Int64),
        other => {
            let expected = if year_allowed {
                "a DATE, TIMESTAMP, FHIR date text or a year (integer)"
            } else {
                "a DATE, TIMESTAMP or FHIR date text"
            };
            plan_err!("{function}: argument {position} must be {expected}, got {other}")
        }
    }
}

/// Days since the epoch of each value of a coerced date-like argument (see [`date_argument`]).
fn to_dates(function: &str, array: &ArrayRef) -> Result<Date32Array> {
    match array.data_type() {
        DataType::Utf8 => Ok(array
            .as_string::<i32>()
            .iter()
            .map(|text| {
                text.and_then(parse_fhir_date)
                    .map(Date32Type::from_naive_date)
            })
            .collect()),
        DataType::Date32 => Ok(array.as_primitive::<Date32Type>().clone()),
        DataType::Int64 => Ok(array
            .as_primitive::<Int64Type>()
            .iter()
            .map(|year| {
                year.and_then(|y| i32::try_from(y).ok())
                    .and_then(|y| NaiveDate::from_ymd_opt(y, 1, 1))
                    .map(Date32Type::from_naive_date)
            })
            .collect()),
        other => exec_err!("{function}: unexpected argument type {other} after coercion"),
    }
}

fn check_arity(function: &str, arg_types: &[DataType], arity: usize) -> Result<()> {
    if arg_types.len() != arity {
        return plan_err!(
            "{function} takes {arity} argument{}, got {}",
            if arity == 1 { "" } else { "s" },
            arg_types.len()
        );
    }
    Ok(())
}

/// `fhir_date(value) -> DATE`: a FHIR date, dateTime or instant (text of any precision), a DATE or
/// a TIMESTAMP as a DATE; partial dates give their first day; invalid text gives NULL.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct FhirDate {
    signature: Signature,
}

impl FhirDate {
    /// The function.
    pub fn new() -> Self {
        Self {
            signature: Signature::user_defined(Volatility::Immutable),
        }
    }
}

impl Default for FhirDate {
    fn default() -> Self {
        Self::new()
    }
}

impl ScalarUDFImpl for FhirDate {
    fn name(&self) -> &str {
        "fhir_date"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(DataType::Date32)
    }

    fn coerce_types(&self, arg_types: &[DataType]) -> Result<Vec<DataType>> {
        check_arity(self.name(), arg_types, 1)?;
        Ok(vec![date_argument(self.name(), 1, &arg_types[0], false)?])
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let arrays = ColumnarValue::values_to_arrays(&args.args)?;
        let [value] = arrays.as_slice() else {
            return exec_err!("fhir_date takes 1 argument, got {}", arrays.len());
        };
        Ok(ColumnarValue::Array(Arc::new(to_dates(
            self.name(),
            value,
        )?)))
    }
}

/// `age_in_years(birth, at) -> BIGINT`: whole years from `birth` to `at`.
///
/// `birth` is FHIR date text (`1970`, `1970-03`, `1970-03-05`, a dateTime), a DATE, a TIMESTAMP,
/// or a year as an integer (`patient.birth_year`); `at` is any of those but an integer. Partial
/// dates count from their first day. NULL when either is NULL or invalid, or `at` is before
/// `birth`.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct AgeInYears {
    signature: Signature,
}

impl AgeInYears {
    /// The function.
    pub fn new() -> Self {
        Self {
            signature: Signature::user_defined(Volatility::Immutable),
        }
    }
}

impl Default for AgeInYears {
    fn default() -> Self {
        Self::new()
    }
}

impl ScalarUDFImpl for AgeInYears {
    fn name(&self) -> &str {
        "age_in_years"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(DataType::Int64)
    }

    fn coerce_types(&self, arg_types: &[DataType]) -> Result<Vec<DataType>> {
        check_arity(self.name(), arg_types, 2)?;
        Ok(vec![
            date_argument(self.name(), 1, &arg_types[0], true)?,
            date_argument(self.name(), 2, &arg_types[1], false)?,
        ])
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let arrays = ColumnarValue::values_to_arrays(&args.args)?;
        let [birth, at] = arrays.as_slice() else {
            return exec_err!("age_in_years takes 2 arguments, got {}", arrays.len());
        };
        let (birth, at) = (to_dates(self.name(), birth)?, to_dates(self.name(), at)?);
        let ages: Int64Array = birth
            .iter()
            .zip(at.iter())
            .map(|(birth, at)| {
                let birth = Date32Type::to_naive_date_opt(birth?)?;
                let at = Date32Type::to_naive_date_opt(at?)?;
                whole_years(birth, at)
            })
            .collect();
        Ok(ColumnarValue::Array(Arc::new(ages)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn day(y: i32, m: u32, d: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(y, m, d).unwrap()
    }

    #[test]
    fn partial_dates_give_their_first_day() {
        assert_eq!(parse_fhir_date("1970"), Some(day(1970, 1, 1)));
        assert_eq!(parse_fhir_date("1970-03"), Some(day(1970, 3, 1)));
        assert_eq!(parse_fhir_date("1970-03-05"), Some(day(1970, 3, 5)));
        assert_eq!(
            parse_fhir_date("2014-05-21T23:34:18-04:00"),
            Some(day(2014, 5, 21)),
            "the date as written, not converted to UTC"
        );
        assert_eq!(
            parse_fhir_date("2014-05-21T12:34:18.123Z"),
            Some(day(2014, 5, 21))
        );
        assert_eq!(
            parse_fhir_date("2014-05-21 12:34:18"),
            Some(day(2014, 5, 21))
        );
        assert_eq!(parse_fhir_date("2000-02-29"), Some(day(2000, 2, 29)));
    }

    #[test]
    fn invalid_text_is_none() {
        for bad in [
            "",
            "197",
            "19700",
            "1970-3",
            "1970-13",
            "1970-00",
            "1970-02-30",
            "1900-02-29",
            "1970-03-05T",
            "1970-03-05T25:00",
            "1970-03T10:00",
            "03/05/1970",
            "1970-03-05x",
            "abcd",
            "١٩٧٠",
        ] {
            assert_eq!(parse_fhir_date(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn whole_years_count_birthdays() {
        assert_eq!(whole_years(day(1970, 3, 5), day(2020, 3, 4)), Some(49));
        assert_eq!(whole_years(day(1970, 3, 5), day(2020, 3, 5)), Some(50));
        assert_eq!(whole_years(day(1970, 3, 5), day(1970, 3, 5)), Some(0));
        assert_eq!(whole_years(day(1970, 3, 5), day(1970, 3, 4)), None);
        // Leap day: the birthday is 1 March in common years, 29 February in leap years.
        assert_eq!(whole_years(day(2000, 2, 29), day(2001, 2, 28)), Some(0));
        assert_eq!(whole_years(day(2000, 2, 29), day(2001, 3, 1)), Some(1));
        assert_eq!(whole_years(day(2000, 2, 29), day(2004, 2, 28)), Some(3));
        assert_eq!(whole_years(day(2000, 2, 29), day(2004, 2, 29)), Some(4));
    }
}
