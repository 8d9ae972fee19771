//! FHIR helper SQL functions registered in every [`LakeSession`](crate::LakeSession).
//!
//! * [`date`]: `fhir_date(text)` (FHIR partial date -> `DATE`) and `age_in_years(birth, at)`.
//! * [`coding`]: `fhir_code_in(system, code, 'system', 'code', ...)`, whether a coding is in a
//!   list of codes of one code system.
//! * [`reference`]: `reference_key(reference [, 'Type'])`, the key a FHIR reference points at, as
//!   the views' `*_id` columns hold it.
//!
//! JSON access into `raw.<type>.resource` comes from `datafusion-functions-json` (registered by
//! the session). docs/sql.md documents every function with examples.
//!
//! Argument types are normalized in `coerce_types` (text of any Arrow string type, dates,
//! timestamps, integers where a year is meant), so each `invoke` only handles one type per argument.
//! Text that is not what a function expects gives NULL (as `try_cast` does); an argument of a type
//! that can never work is a planning error.

pub mod coding;
pub mod date;
pub mod reference;

use datafusion::arrow::datatypes::DataType;
use datafusion::common::{Result, plan_err};
use datafusion::logical_expr::ScalarUDF;
use datafusion::prelude::SessionContext;

/// Every fhirlake SQL function.
pub fn all() -> Vec<ScalarUDF> {
    vec![
        ScalarUDF::from(date::FhirDate::new()),
        ScalarUDF::from(date::AgeInYears::new()),
        ScalarUDF::from(coding::FhirCodeIn::new()),
        ScalarUDF::from(reference::ReferenceKey::new()),
    ]
}

/// Registers every fhirlake SQL function in `ctx`.
pub fn register_all(ctx: &SessionContext) {
    for udf in all() {
        ctx.register_udf(udf);
    }
}

/// The type a text argument is cast to (any string type, or an untyped NULL).
fn text_argument(function: &str, position: usize, data_type: &DataType) -> Result<DataType> {
    match data_type {
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View | DataType::Null => {
            Ok(DataType::Utf8)
        }
        other => plan_err!("{function}: argument {position} must be text, got {other}"),
    }
}

#[cfg(test)]
mod tests {
    use datafusion::arrow::util::pretty::pretty_format_batches;

    use super::*;

    async fn query(sql: &str) -> Result<String> {
        let ctx = SessionContext::new();
        register_all(&ctx);
        let batches = ctx.sql(sql).await?.collect().await?;
        Ok(pretty_format_batches(&batches)?.to_string())
    }

    /// The values of a one-column result, top to bottom (`NULL` for nulls).
    async fn column(sql: &str) -> Vec<String> {
        let table = query(sql).await.unwrap_or_else(|e| panic!("{sql}: {e}"));
        table
            .lines()
            .skip(3)
            .filter(|l| l.starts_with('|'))
            .map(|l| {
                let cell = l.trim_matches('|').trim();
                if cell.is_empty() { "NULL" } else { cell }.to_string()
            })
            .collect()
    }

    const DATES: &str = "(VALUES ('1970'), ('1970-03'), ('2000-02-29'), \
        ('2014-05-21T23:34:18-04:00'), ('1970-02-30'), ('not a date'), (NULL)) AS t(d)";

    #[tokio::test]
    async fn fhir_date_over_text_dates_and_timestamps() {
        assert_eq!(
            column(&format!("SELECT fhir_date(d) FROM {DATES}")).await,
            [
                "1970-01-01",
                "1970-03-01",
                "2000-02-29",
                "2014-05-21",
                "NULL",
                "NULL",
                "NULL"
            ]
        );
        assert_eq!(
            column("SELECT fhir_date(TIMESTAMP '2020-06-30 23:59:00')").await,
            ["2020-06-30"]
        );
        assert_eq!(
            column("SELECT fhir_date(arrow_cast('2020-06', 'Utf8View'))").await,
            ["2020-06-01"]
        );
        assert_eq!(column("SELECT fhir_date(NULL)").await, ["NULL"]);
    }

    #[tokio::test]
    async fn age_in_years_on_all_argument_kinds() {
        assert_eq!(
            column(&format!(
                "SELECT age_in_years(d, '2020-03-01') FROM {DATES}"
            ))
            .await,
            ["50", "50", "20", "5", "NULL", "NULL", "NULL"]
        );
        assert_eq!(
            column("SELECT age_in_years('2000-02-29', DATE '2001-02-28')").await,
            ["0"]
        );
        assert_eq!(
            column("SELECT age_in_years('2000-02-29', TIMESTAMP '2001-03-01 00:00:00')").await,
            ["1"]
        );
        // A year as an integer (patient.birth_year).
        assert_eq!(
            column("SELECT age_in_years(CAST(1970 AS BIGINT), '2020-06-30T10:00:00Z')").await,
            ["50"]
        );
        assert_eq!(column("SELECT age_in_years(1970, NULL)").await, ["NULL"]);
        // Before birth.
        assert_eq!(
            column("SELECT age_in_years('2020-01-02', '2020-01-01')").await,
            ["NULL"]
        );
    }

    #[tokio::test]
    async fn age_in_years_rejects_wrong_arity_and_types() {
        let err = query("SELECT age_in_years('1970')").await.unwrap_err();
        assert!(
            err.to_string().contains("age_in_years takes 2 arguments"),
            "{err}"
        );
        let err = query("SELECT age_in_years('1970', 2020)")
            .await
            .unwrap_err();
        assert!(err.to_string().contains("argument 2 must be"), "{err}");
        let err = query("SELECT fhir_date(true)").await.unwrap_err();
        assert!(err.to_string().contains("fhir_date: argument 1"), "{err}");
    }

    #[tokio::test]
    async fn fhir_code_in_matches_system_and_codes() {
        let codings = "(VALUES ('http://snomed.info/sct', '44054006'), \
            ('http://snomed.info/sct', '15777000'), ('http://loinc.org', '44054006'), \
            (NULL, '44054006'), ('http://snomed.info/sct', NULL)) AS t(s, c)";
        assert_eq!(
            column(&format!(
                "SELECT fhir_code_in(s, c, 'http://snomed.info/sct', '44054006', '1234') FROM {codings}"
            ))
            .await,
            ["true", "false", "false", "false", "NULL"]
        );
        assert_eq!(
            column(&format!(
                "SELECT fhir_code_in(s, c, 'SNOMED', '15777000') FROM {codings}"
            ))
            .await,
            ["false", "true", "false", "false", "NULL"]
        );
        let err = query(&format!(
            "SELECT fhir_code_in(s, c, 'snomed') FROM {codings}"
        ))
        .await
        .unwrap_err();
        assert!(err.to_string().contains("at least one code"), "{err}");
        let err = query(&format!("SELECT fhir_code_in(s, c, s, '1') FROM {codings}"))
            .await
            .unwrap_err();
        assert!(err.to_string().contains("must be a constant"), "{err}");
        let err = query(&format!(
            "SELECT fhir_code_in(s, c, NULL, '1') FROM {codings}"
        ))
        .await
        .unwrap_err();
        assert!(err.to_string().contains("argument 3 is NULL"), "{err}");
        let err = query("SELECT fhir_code_in('a', 1, 'snomed', '1')")
            .await
            .unwrap_err();
        assert!(err.to_string().contains("argument 2 must be text"), "{err}");
    }

    #[tokio::test]
    async fn reference_key_with_and_without_type() {
        let refs = "(VALUES ('Patient/p1'), ('http://x/fhir/Patient/p2/_history/3'), \
            ('urn:uuid:u3'), ('Encounter/e4'), ('#c'), (NULL)) AS t(r)";
        assert_eq!(
            column(&format!("SELECT reference_key(r) FROM {refs}")).await,
            ["p1", "p2", "u3", "e4", "NULL", "NULL"]
        );
        assert_eq!(
            column(&format!("SELECT reference_key(r, 'Patient') FROM {refs}")).await,
            ["p1", "p2", "NULL", "NULL", "NULL", "NULL"]
        );
        let err = query("SELECT reference_key()").await.unwrap_err();
        assert!(err.to_string().contains("reference_key takes"), "{err}");
    }
}
