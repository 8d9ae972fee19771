//! The kick-off request of a Bulk Data export: level (system, `Patient`, `Group/[id]`), parameters, and
//! their two encodings (a GET query string, or a POST `Parameters` body).

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use url::Url;

use crate::error::Error;

/// Which resources the export covers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum ExportLevel {
    /// `[base]/$export`: the whole server.
    #[default]
    System,
    /// `[base]/Patient/$export`: every patient's compartment.
    Patient,
    /// `[base]/Group/[id]/$export`: the compartments of a group's members.
    Group(String),
}

/// A kick-off request: everything that defines an export (also what a rerun must repeat to re-attach).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct ExportRequest {
    /// FHIR base URL, e.g. `https://fhir.example.org/r4`.
    pub base_url: String,
    pub level: ExportLevel,
    /// Kick off with GET and a query string instead of POST and a `Parameters` body.
    pub use_get: bool,
    /// `_type`: resource types to export (empty: all).
    pub types: Vec<String>,
    /// `_since`: only resources changed after this FHIR instant.
    pub since: Option<String>,
    /// `_typeFilter`: FHIR search queries such as `Observation?status=final`.
    pub type_filters: Vec<String>,
    /// `_elements`: elements to keep (`Type.element` or `element`).
    pub elements: Vec<String>,
    /// `patient`: patient references to restrict a Patient or Group export to (POST only).
    pub patients: Vec<String>,
    /// `_outputFormat` (default `application/fhir+ndjson`).
    pub output_format: Option<String>,
    /// `includeAssociatedData` codes, e.g. `LatestProvenanceResources`.
    pub include_associated_data: Vec<String>,
    /// `Prefer: handling=lenient`: the server may ignore parameters it does not support.
    pub lenient: bool,
}

impl ExportRequest {
    /// A system-level export of everything from `base_url`.
    pub fn new(base_url: impl Into<String>) -> Self {
        ExportRequest {
            base_url: base_url.into().trim_end_matches('/').to_string(),
            ..ExportRequest::default()
        }
    }

    /// Sets the export level.
    pub fn with_level(mut self, level: ExportLevel) -> Self {
        self.level = level;
        self
    }

    /// Restricts the export to resource types.
    pub fn with_types(mut self, types: Vec<String>) -> Self {
        self.types = types;
        self
    }

    /// Only resources changed after `since`.
    pub fn with_since(mut self, since: Option<String>) -> Self {
        self.since = since;
        self
    }

    /// The base URL, parsed.
    pub fn base(&self) -> Result<Url, Error> {
        let url = Url::parse(&self.base_url)
            .map_err(|e| Error::invalid(&self.base_url, format!("invalid FHIR base URL: {e}")))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(Error::invalid(
                &self.base_url,
                "the FHIR base URL must be http:// or https://",
            ));
        }
        Ok(url)
    }

    /// Checks the request before any I/O.
    pub fn validate(&self) -> Result<(), Error> {
        self.base()?;
        let here = |reason: String| Error::invalid(&self.base_url, reason);
        if self.use_get && !self.patients.is_empty() {
            return Err(here(
                "the `patient` parameter needs a POST kick-off (drop the GET option)".into(),
            ));
        }
        if !self.patients.is_empty() && self.level == ExportLevel::System {
            return Err(here(
                "the `patient` parameter applies to Patient or Group exports only".into(),
            ));
        }
        if let Some(since) = &self.since
            && chrono::DateTime::parse_from_rfc3339(since).is_err()
        {
            return Err(here(format!(
                "`_since` must be a FHIR instant with a time zone, e.g. 2024-01-31T12:00:00Z (got `{since}`)"
            )));
        }
        if let ExportLevel::Group(id) = &self.level
            && (id.is_empty()
                || !id
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.'))
        {
            return Err(here(format!("`{id}` is not a FHIR id (Group)")));
        }
        for t in &self.types {
            if t.is_empty() || !t.bytes().all(|b| b.is_ascii_alphabetic()) {
                return Err(here(format!("`{t}` is not a resource type (_type)")));
            }
        }
        Ok(())
    }

    /// The kick-off URL (without a query string).
    pub fn kickoff_url(&self) -> Result<Url, Error> {
        let base = self.base()?;
        let path = match &self.level {
            ExportLevel::System => "$export".to_string(),
            ExportLevel::Patient => "Patient/$export".to_string(),
            ExportLevel::Group(id) => format!("Group/{id}/$export"),
        };
        let text = format!("{}/{path}", base.as_str().trim_end_matches('/'));
        Url::parse(&text).map_err(|e| Error::invalid(&self.base_url, format!("kick-off URL: {e}")))
    }

    /// The parameters as (name, value) pairs, in the GET query encoding: list parameters joined by
    /// commas, `_typeFilter` repeated.
    pub fn query_pairs(&self) -> Vec<(String, String)> {
        let mut pairs = Vec::new();
        if !self.types.is_empty() {
            pairs.push(("_type".into(), self.types.join(",")));
        }
        if let Some(since) = &self.since {
            pairs.push(("_since".into(), since.clone()));
        }
        for filter in &self.type_filters {
            pairs.push(("_typeFilter".into(), filter.clone()));
        }
        if !self.elements.is_empty() {
            pairs.push(("_elements".into(), self.elements.join(",")));
        }
        if let Some(format) = &self.output_format {
            pairs.push(("_outputFormat".into(), format.clone()));
        }
        if !self.include_associated_data.is_empty() {
            pairs.push((
                "includeAssociatedData".into(),
                self.include_associated_data.join(","),
            ));
        }
        pairs
    }

    /// The POST body: a FHIR `Parameters` resource.
    pub fn parameters_body(&self) -> Value {
        let mut parameters = Vec::new();
        let mut string = |name: &str, value: &str| {
            parameters.push(json!({"name": name, "valueString": value}));
        };
        if let Some(format) = &self.output_format {
            string("_outputFormat", format);
        }
        if !self.types.is_empty() {
            string("_type", &self.types.join(","));
        }
        if !self.elements.is_empty() {
            string("_elements", &self.elements.join(","));
        }
        for filter in &self.type_filters {
            string("_typeFilter", filter);
        }
        if let Some(since) = &self.since {
            parameters.push(json!({"name": "_since", "valueInstant": since}));
        }
        for code in &self.include_associated_data {
            parameters.push(json!({"name": "includeAssociatedData", "valueCode": code}));
        }
        for patient in &self.patients {
            let reference = if patient.contains('/') {
                patient.clone()
            } else {
                format!("Patient/{patient}")
            };
            parameters.push(json!({"name": "patient", "valueReference": {"reference": reference}}));
        }
        json!({"resourceType": "Parameters", "parameter": parameters})
    }

    /// The `Prefer` header.
    pub fn prefer_header(&self) -> &'static str {
        if self.lenient {
            "respond-async, handling=lenient"
        } else {
            "respond-async"
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_and_parameters() {
        let mut request = ExportRequest::new("http://127.0.0.1:1/fhir/")
            .with_level(ExportLevel::Group("g1".into()))
            .with_types(vec!["Patient".into(), "Observation".into()])
            .with_since(Some("2024-01-01T00:00:00Z".into()));
        request.type_filters = vec!["Observation?status=final".into()];
        request.patients = vec!["p1".into()];
        request.validate().unwrap();
        assert_eq!(
            request.kickoff_url().unwrap().as_str(),
            "http://127.0.0.1:1/fhir/Group/g1/$export"
        );
        let body = request.parameters_body();
        let names: Vec<&str> = body["parameter"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["_type", "_typeFilter", "_since", "patient"]);
        assert_eq!(
            body["parameter"][3]["valueReference"]["reference"],
            "Patient/p1"
        );
        request.use_get = true;
        assert!(request.validate().is_err(), "patient needs POST");
        request.patients.clear();
        assert_eq!(
            request.query_pairs()[0],
            ("_type".into(), "Patient,Observation".into())
        );
        request.since = Some("yesterday".into());
        assert!(request.validate().is_err());
    }
}
