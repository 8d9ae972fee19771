//! The re-identification risk report's read of the lake (`fhirlake deid risk`): the
//! quasi-identifiers of every de-identified Patient in `raw.patient`, assessed for k-anonymity by
//! [`fhirlake_deid::risk`].

use arrow::array::StringArray;
use arrow::datatypes::DataType;
use fhirlake_deid::risk::{self, RiskReport};
use futures::StreamExt as _;

use super::Lake;
use super::table_id::TableId;
use crate::{Error, Result};

/// The k-anonymity report of the lake's patients over the quasi-identifiers `attributes`
/// (names of [`risk::KNOWN_QUASI_IDENTIFIERS`]), classes smaller than `k` at risk.
pub async fn risk_report(lake: &Lake, attributes: &[String], k: usize) -> Result<RiskReport> {
    let table = TableId::raw("Patient").to_string();
    let session = lake.session().await?;
    let names: Vec<&str> = attributes.iter().map(String::as_str).collect();
    let mut records = Vec::new();
    let mut stream = session
        .sql(&format!("SELECT resource FROM {table}"))
        .await
        .map_err(|e| Error::Query {
            context: format!("reading {table} (has anything been ingested?)"),
            source: Box::new(e),
        })?
        .execute_stream()
        .await
        .map_err(|e| Error::datafusion(format!("reading {table}"), e))?;
    while let Some(batch) = stream.next().await {
        let batch = batch.map_err(|e| Error::datafusion(format!("reading {table}"), e))?;
        let strings = arrow::compute::cast(batch.column(0), &DataType::Utf8)
            .map_err(|e| Error::datafusion(format!("reading {table}"), e.into()))?;
        let strings = strings
            .as_any()
            .downcast_ref::<StringArray>()
            .ok_or_else(|| Error::BadRow {
                table: table.clone(),
                reason: "its resource column is not text",
                source: None,
            })?;
        for text in strings.iter().flatten() {
            let patient: serde_json::Value =
                serde_json::from_str(text).map_err(|e| Error::BadRow {
                    table: table.clone(),
                    reason: "a row's resource is not JSON",
                    source: Some(e),
                })?;
            records.push(risk::quasi_identifiers_of(&patient, &names)?);
        }
    }
    Ok(risk::assess(attributes, &records, k))
}
