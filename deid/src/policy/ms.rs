//! Compatibility mode: the Microsoft FHIR anonymizer's JSON configuration (`fhirPathRules` +
//! `parameters`) accepted as a policy. Its methods map onto ours (`cryptoHash` -> pseudonymize,
//! `dateShift` -> date_shift, ...); the tool's own arithmetic (HMAC-SHA256 hashes, its date-shift
//! formula, partial redaction of dates, ages and ZIP codes) is used only when the caller opts in
//! to the keys embedded in the configuration ([`Policy::with_embedded_ms_keys`]). Otherwise the
//! lake key is used, since keys never come from policy files.

use serde::Deserialize;
use serde::de::{self, MapAccess, Visitor};
use serde_json::Value;

use super::{
    Defaults, Fallback, Generalize, Method, Perturb, Policy, PolicyError, Rule, text_hash,
};
use crate::path::{Selector, parse as parse_expr};

/// What happens when a rule cannot be applied to a node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProcessingErrors {
    /// Fail the resource (the tool's default).
    Raise,
    /// Leave the resource out, with an empty result.
    Skip,
    /// Keep the node unchanged.
    Keep,
}

/// The anonymizer's own parameters.
#[derive(Debug, Clone, PartialEq)]
pub struct MsOptions {
    /// Use the keys and arithmetic of the configuration (HMAC-SHA256, the tool's date shift).
    pub embedded_keys: bool,
    /// `cryptoHashKey`.
    pub crypto_hash_key: String,
    /// `dateShiftKey`.
    pub date_shift_key: String,
    /// `dateShiftScope`: `resource`, `file` or `folder`.
    pub date_shift_scope: String,
    /// `dateShiftFixedOffsetInDays`.
    pub date_shift_fixed_offset: Option<i64>,
    /// `encryptKey`.
    pub encrypt_key: String,
    /// `enablePartialAgesForRedact`.
    pub partial_ages: bool,
    /// `enablePartialDatesForRedact`.
    pub partial_dates: bool,
    /// `enablePartialZipCodesForRedact`.
    pub partial_zip: bool,
    /// `processingErrors`.
    pub processing_errors: ProcessingErrors,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawConfig {
    #[serde(default)]
    fhir_version: Option<String>,
    #[serde(default)]
    processing_errors: Option<String>,
    fhir_path_rules: Option<Vec<RawRule>>,
    #[serde(default)]
    parameters: Option<RawParameters>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawParameters {
    #[serde(default)]
    date_shift_key: Option<String>,
    #[serde(default)]
    date_shift_scope: Option<String>,
    #[serde(default)]
    date_shift_fixed_offset_in_days: Option<i64>,
    #[serde(default)]
    crypto_hash_key: Option<String>,
    #[serde(default)]
    encrypt_key: Option<String>,
    #[serde(default)]
    enable_partial_ages_for_redact: Option<bool>,
    #[serde(default)]
    enable_partial_dates_for_redact: Option<bool>,
    #[serde(default)]
    enable_partial_zip_codes_for_redact: Option<bool>,
    #[serde(default)]
    restricted_zip_code_tabulation_areas: Option<Vec<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawRule {
    path: Option<String>,
    method: Option<String>,
    #[serde(default, deserialize_with = "ordered_cases")]
    cases: Option<Vec<(String, String)>>,
    #[serde(default)]
    other_values: Option<String>,
    #[serde(default)]
    replace_with: Option<Value>,
    #[serde(default)]
    span: Option<f64>,
    #[serde(default)]
    range_type: Option<String>,
    #[serde(default)]
    round_to: Option<f64>,
}

/// `cases` in document order (the first true case wins, so order matters).
fn ordered_cases<'de, D: de::Deserializer<'de>>(
    d: D,
) -> Result<Option<Vec<(String, String)>>, D::Error> {
    struct V;
    impl<'de> Visitor<'de> for V {
        type Value = Option<Vec<(String, String)>>;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("an object of condition: result")
        }
        fn visit_none<E>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_unit<E>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_some<D: de::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
            d.deserialize_map(V)
        }
        fn visit_map<M: MapAccess<'de>>(self, mut map: M) -> Result<Self::Value, M::Error> {
            let mut out = Vec::new();
            while let Some((k, v)) = map.next_entry::<String, Value>()? {
                let v = match v {
                    Value::String(s) => s,
                    other => other.to_string(),
                };
                out.push((k, v));
            }
            Ok(Some(out))
        }
    }
    d.deserialize_option(V)
}

/// The tool reads its configuration with Json.NET, which accepts trailing commas (`[1, 2,]`);
/// they are blanked (replaced by a space, so error positions stay right) outside strings.
fn blank_trailing_commas(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = text.as_bytes().to_vec();
    let mut in_string = false;
    let mut escaped = false;
    for (i, &b) in bytes.iter().enumerate() {
        if in_string {
            match b {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b',' => {
                let next = bytes[i + 1..].iter().find(|c| !c.is_ascii_whitespace());
                if matches!(next, Some(b']' | b'}')) {
                    out[i] = b' ';
                }
            }
            _ => {}
        }
    }
    // Only an ASCII comma was replaced by an ASCII space: still UTF-8.
    String::from_utf8(out).unwrap_or_else(|_| text.to_string())
}

fn error(source_name: &str, message: impl Into<String>) -> PolicyError {
    PolicyError {
        source_name: source_name.to_string(),
        line: 0,
        column: 0,
        message: message.into(),
    }
}

/// Parses and validates an anonymizer configuration.
pub fn parse(text: &str, source_name: &str, name: &str) -> Result<Policy, PolicyError> {
    let lenient = blank_trailing_commas(text);
    let raw: RawConfig = serde_json::from_str(&lenient).map_err(|e| PolicyError {
        source_name: source_name.to_string(),
        line: e.line(),
        column: e.column(),
        message: format!("not a valid anonymizer configuration: {e}"),
    })?;
    match raw.fhir_version.as_deref() {
        None | Some("") | Some("R4") => {}
        Some(other) => {
            return Err(error(
                source_name,
                format!("fhirVersion `{other}` is not supported (this build reads R4)"),
            ));
        }
    }
    let processing_errors = match raw
        .processing_errors
        .as_deref()
        .map(str::to_ascii_lowercase)
    {
        None => ProcessingErrors::Raise,
        Some(p) if p == "raise" => ProcessingErrors::Raise,
        Some(p) if p == "skip" => ProcessingErrors::Skip,
        Some(p) if p == "keep" => ProcessingErrors::Keep,
        Some(_) => {
            return Err(error(
                source_name,
                "processingErrors is raise, skip or keep",
            ));
        }
    };
    let Some(raw_rules) = raw.fhir_path_rules else {
        return Err(error(source_name, "the configuration has no fhirPathRules"));
    };
    let params = raw.parameters.unwrap_or_default();
    let encrypt_key = params.encrypt_key.clone().unwrap_or_default();
    if !encrypt_key.is_empty() && ![16, 24, 32].contains(&encrypt_key.len()) {
        return Err(error(
            source_name,
            "parameters.encryptKey must be 16, 24 or 32 bytes (AES key sizes)",
        ));
    }
    let mut rules = Vec::with_capacity(raw_rules.len());
    for (i, r) in raw_rules.iter().enumerate() {
        let at = |m: String| error(source_name, format!("fhirPathRules[{i}]: {m}"));
        let path = r.path.as_deref().ok_or_else(|| at("no path".into()))?;
        let method = r.method.as_deref().ok_or_else(|| at("no method".into()))?;
        let selector = Selector::compile(path)
            .map_err(|e| at(format!("bad path: {e}")))?
            .with_exact_node_types();
        let method = match method.to_ascii_lowercase().as_str() {
            "keep" => Method::Keep,
            "redact" => Method::Redact,
            "cryptohash" => Method::Pseudonymize,
            "encrypt" => Method::Encrypt,
            "dateshift" => Method::DateShift,
            "substitute" => Method::Substitute(
                r.replace_with
                    .clone()
                    .ok_or_else(|| at("substitute needs replaceWith".into()))?,
            ),
            "perturb" => {
                let span = r.span.ok_or_else(|| at("perturb needs span".into()))?;
                if span < 0.0 {
                    return Err(at("perturb span must not be negative".into()));
                }
                let proportional = match r.range_type.as_deref().map(str::to_ascii_lowercase) {
                    None => false,
                    Some(t) if t == "fixed" => false,
                    Some(t) if t == "proportional" => true,
                    Some(_) => return Err(at("perturb rangeType is fixed or proportional".into())),
                };
                let round_to = match r.round_to {
                    None => 2,
                    Some(n) if n.fract() == 0.0 && (0.0..=28.0).contains(&n) => n as u32,
                    Some(_) => return Err(at("perturb roundTo is an integer 0 to 28".into())),
                };
                Method::Perturb(Perturb {
                    span,
                    proportional,
                    round_to,
                })
            }
            "generalize" => {
                let cases = r
                    .cases
                    .as_ref()
                    .ok_or_else(|| at("generalize needs cases".into()))?;
                let mut compiled = Vec::with_capacity(cases.len());
                for (cond, result) in cases {
                    let c = parse_expr(cond)
                        .map_err(|e| at(format!("generalize case condition: {e}")))?;
                    let v = parse_expr(result)
                        .map_err(|e| at(format!("generalize case result: {e}")))?;
                    compiled.push((c, v));
                }
                let other = match r.other_values.as_deref().map(str::to_ascii_lowercase) {
                    None => Fallback::Redact,
                    Some(o) if o == "redact" => Fallback::Redact,
                    Some(o) if o == "keep" => Fallback::Keep,
                    Some(_) => return Err(at("generalize otherValues is redact or keep".into())),
                };
                Method::Generalize(Generalize::Cases {
                    cases: compiled,
                    other,
                })
            }
            other => return Err(at(format!("unsupported method `{other}`"))),
        };
        rules.push(Rule {
            selector,
            method,
            line: 0,
        });
    }
    let defaults = Defaults {
        restricted_zip3: params
            .restricted_zip_code_tabulation_areas
            .clone()
            .unwrap_or_default(),
        ..Defaults::default()
    };
    Ok(Policy {
        name: name.to_string(),
        hash: text_hash(text),
        rules,
        defaults,
        ms: Some(MsOptions {
            embedded_keys: false,
            crypto_hash_key: params.crypto_hash_key.unwrap_or_default(),
            date_shift_key: params.date_shift_key.unwrap_or_default(),
            date_shift_scope: params
                .date_shift_scope
                .unwrap_or_else(|| "resource".to_string()),
            date_shift_fixed_offset: params.date_shift_fixed_offset_in_days,
            encrypt_key,
            partial_ages: params.enable_partial_ages_for_redact.unwrap_or(false),
            partial_dates: params.enable_partial_dates_for_redact.unwrap_or(false),
            partial_zip: params.enable_partial_zip_codes_for_redact.unwrap_or(false),
            processing_errors,
        }),
        vocabulary: None,
    })
}

impl Policy {
    /// For anonymizer configurations: use the keys written in the configuration and the tool's
    /// own arithmetic, to reproduce its output exactly. Only for conformance testing and
    /// migration; production keys belong in `FHIRLAKE_DEID_KEY` or a key file.
    pub fn with_embedded_ms_keys(mut self) -> Self {
        if let Some(ms) = &mut self.ms {
            ms.embedded_keys = true;
        }
        self
    }
}
