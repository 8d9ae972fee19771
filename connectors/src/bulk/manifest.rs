//! The completion manifest a status URL returns on 200 (Bulk Data IG 2.0): `transactionTime`,
//! `request`, `requiresAccessToken`, `output[]`, `deleted[]`, `error[]`. Unknown keys are ignored.

use serde::{Deserialize, Serialize};

use crate::error::Error;

/// A completion manifest.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Manifest {
    #[serde(rename = "transactionTime")]
    pub transaction_time: String,
    #[serde(default)]
    pub request: Option<String>,
    #[serde(rename = "requiresAccessToken", default)]
    pub requires_access_token: bool,
    #[serde(default)]
    pub output: Vec<ManifestEntry>,
    #[serde(default)]
    pub deleted: Vec<ManifestEntry>,
    #[serde(default)]
    pub error: Vec<ManifestEntry>,
}

/// One file of a manifest.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ManifestEntry {
    #[serde(rename = "type", default)]
    pub resource_type: String,
    pub url: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub count: Option<u64>,
}

impl Manifest {
    /// Parses a manifest body; `location` names the status URL in errors.
    pub fn parse(bytes: &[u8], location: &str) -> Result<Self, Error> {
        serde_json::from_slice(bytes).map_err(|e| Error::Manifest {
            location: location.to_string(),
            path: "$".into(),
            reason: format!(
                "not a Bulk Data completion manifest ({} at line {} column {})",
                match e.classify() {
                    serde_json::error::Category::Data => "missing or mistyped key",
                    _ => "invalid JSON",
                },
                e.line(),
                e.column()
            ),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_keys_are_ignored() {
        let manifest = Manifest::parse(
            br#"{"transactionTime":"2024-01-01T00:00:00Z","request":"x","requiresAccessToken":true,
                "outputOrganizedBy":"","link":[],"extension":{"a":1},
                "output":[{"type":"Patient","url":"http://h/1.ndjson","count":3,"extension":{}}]}"#,
            "status",
        )
        .unwrap();
        assert!(manifest.requires_access_token);
        assert_eq!(manifest.output[0].count, Some(3));
        assert!(manifest.deleted.is_empty() && manifest.error.is_empty());
        assert!(Manifest::parse(b"{}", "status").is_err());
    }
}
