//! Policies: what a data steward writes. A policy is a TOML file (or a built-in profile, or a
//! Microsoft FHIR anonymizer JSON configuration) holding an ordered list of rules
//! `{ path, method, params }` and the defaults for nodes no rule matches.
//!
//! Loading validates everything before any data is touched: unknown methods, bad paths, missing or
//! wrong parameters are reported with the line and column of the offending rule.

pub mod ms;
mod native;

use serde_json::Value;

use crate::path::{Expr, Selector};

pub use crate::error::PolicyError;
pub use ms::MsOptions;

/// The built-in profiles: `(name, TOML text)`.
pub const BUILTIN: &[(&str, &str)] = &[
    ("safe-harbor", include_str!("builtin/safe-harbor.toml")),
    (
        "limited-data-set",
        include_str!("builtin/limited-data-set.toml"),
    ),
];

/// The default profile.
pub const DEFAULT_PROFILE: &str = "safe-harbor";

/// ZIP3 prefixes with fewer than 20,000 people: HHS's 17 plus those other tools add.
pub const RESTRICTED_ZIP3: &[&str] = &[
    "036", "059", "063", "102", "203", "205", "369", "556", "692", "790", "821", "823", "830",
    "831", "878", "879", "884", "890", "893",
];

/// What happens to nodes no rule matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fallback {
    /// Leave the node as it is.
    Keep,
    /// Remove the node.
    Redact,
    /// Scrub the text (free-text strings only).
    Scrub,
    /// Drop the whole resource (unknown `modifierExtension`).
    DropResource,
}

impl Fallback {
    fn parse(text: &str, allowed: &[Fallback]) -> Option<Self> {
        let f = match text {
            "keep" => Fallback::Keep,
            "redact" => Fallback::Redact,
            "scrub" => Fallback::Scrub,
            "drop_resource" => Fallback::DropResource,
            _ => return None,
        };
        allowed.contains(&f).then_some(f)
    }

    /// The name used in policy files.
    pub fn name(self) -> &'static str {
        match self {
            Fallback::Keep => "keep",
            Fallback::Redact => "redact",
            Fallback::Scrub => "scrub",
            Fallback::DropResource => "drop_resource",
        }
    }
}

/// The defaults of a policy.
#[derive(Debug, Clone, PartialEq)]
pub struct Defaults {
    /// Elements (not free text, not extensions) no rule matches.
    pub elements: Fallback,
    /// `string`/`markdown`/`xhtml` values no rule matches.
    pub free_text: Fallback,
    /// `extension` entries no rule matches (allow-list: `redact`).
    pub extensions: Fallback,
    /// `modifierExtension` entries no rule matches (allow-list: `drop_resource`).
    pub modifier_extensions: Fallback,
    /// JSON keys that are not FHIR R4 elements.
    pub unknown_elements: Fallback,
    /// Date shift range: offsets are uniform in `[-N, N]` days, never 0.
    pub date_shift_days: u32,
    /// ZIP3 prefixes generalized to `000`.
    pub restricted_zip3: Vec<String>,
    /// `date_shift` of a date more than 89 years before today: `Redact` removes it (Safe Harbor:
    /// a date that old is indicative of an age over 89), `Keep` shifts it like any other.
    pub dates_over_89: Fallback,
    /// Vocabulary files the `terminology` method trusts beside the built-in table, as written in
    /// the policy (relative to the policy file), with the 1-based line that names them.
    pub vocabulary_files: Vec<(String, usize)>,
}

impl Default for Defaults {
    fn default() -> Self {
        Self {
            elements: Fallback::Keep,
            free_text: Fallback::Keep,
            extensions: Fallback::Keep,
            modifier_extensions: Fallback::Keep,
            unknown_elements: Fallback::Keep,
            date_shift_days: 180,
            restricted_zip3: RESTRICTED_ZIP3.iter().map(|s| s.to_string()).collect(),
            dates_over_89: Fallback::Keep,
            vocabulary_files: Vec::new(),
        }
    }
}

/// Target of a `generalize` rule.
#[derive(Debug, Clone, PartialEq)]
pub enum Generalize {
    /// Dates to their year; with `over_89_band`, a birth date 90 or more years ago is removed
    /// and the patient flagged `90+`.
    Year {
        /// Apply the 90+ rule (birth dates).
        over_89_band: bool,
    },
    /// Dates to year and month.
    Month,
    /// ZIP codes to their first 3 digits; restricted prefixes to `000`.
    Zip3,
    /// Ages (numbers) over 89 to 90.
    Age,
    /// FHIRPath cases `condition -> result`, first true wins; otherwise keep or redact.
    Cases {
        /// `(condition, result)` in policy order.
        cases: Vec<(Expr, Expr)>,
        /// What happens when no case is true.
        other: Fallback,
    },
}

/// Noise of a `perturb` rule.
#[derive(Debug, Clone, PartialEq)]
pub struct Perturb {
    /// Width of the noise interval (`[-span/2, span/2]`).
    pub span: f64,
    /// Span is a fraction of the value instead of an absolute amount.
    pub proportional: bool,
    /// Decimal places kept.
    pub round_to: u32,
}

/// A rule's method with its parameters.
#[derive(Debug, Clone, PartialEq)]
pub enum Method {
    /// Leave the subtree as it is.
    Keep,
    /// Remove the subtree.
    Redact,
    /// Keyed BLAKE3 pseudonyms for ids, references and identifier values.
    Pseudonymize,
    /// Deterministic AES-256-GCM-SIV, reversible with the key.
    Encrypt,
    /// Shift dates by the patient's offset.
    DateShift,
    /// Coarsen values.
    Generalize(Generalize),
    /// Replace with a fixed value.
    Substitute(Value),
    /// Add bounded noise to numbers.
    Perturb(Perturb),
    /// Replace PHI spans in free text.
    Scrub,
    /// Let an extension through the extensions allow-list without governing what is inside it:
    /// its `url`, sub-extensions and value follow the other rules and the defaults. (`keep` on an
    /// extension keeps its whole subtree, sub-extensions and free-text values included.)
    Allow,
    /// Text that terminology can vouch for: a `Coding.display`, `CodeableConcept.text` or
    /// `Quantity.unit` is kept when it is a known display (unit) of its own code, replaced by the
    /// code's canonical display when the code is known, removed otherwise; a system URI is kept
    /// when it is a known code or identifier system (`crate::vocabulary`), a `Reference.type`
    /// when it is a resource type; anything else is removed.
    Terminology,
}

/// Method names, in the order counts are reported.
pub const METHOD_NAMES: &[&str] = &[
    "keep",
    "redact",
    "pseudonymize",
    "encrypt",
    "date_shift",
    "generalize",
    "substitute",
    "perturb",
    "scrub",
    "allow",
    "terminology",
];

/// Number of methods ([`METHOD_NAMES`]`.len()`).
pub const METHOD_COUNT: usize = 11;
const _: () = assert!(METHOD_NAMES.len() == METHOD_COUNT);

impl Method {
    /// The name used in policy files.
    pub fn name(&self) -> &'static str {
        METHOD_NAMES[self.index()]
    }

    /// Position in [`METHOD_NAMES`].
    pub fn index(&self) -> usize {
        match self {
            Method::Keep => 0,
            Method::Redact => 1,
            Method::Pseudonymize => 2,
            Method::Encrypt => 3,
            Method::DateShift => 4,
            Method::Generalize(_) => 5,
            Method::Substitute(_) => 6,
            Method::Perturb(_) => 7,
            Method::Scrub => 8,
            Method::Allow => 9,
            Method::Terminology => 10,
        }
    }
}

/// One rule.
#[derive(Debug, Clone)]
pub struct Rule {
    /// Where it matches.
    pub selector: Selector,
    /// What it does.
    pub method: Method,
    /// 1-based line in the policy file (0 when unknown).
    pub line: usize,
}

/// A validated policy.
#[derive(Debug, Clone)]
pub struct Policy {
    /// Name recorded in `lake.runs` (profile name or file stem).
    pub name: String,
    /// BLAKE3 of the policy text (first 16 hex chars).
    pub hash: String,
    /// Rules, first match wins.
    pub rules: Vec<Rule>,
    /// Defaults for unmatched nodes.
    pub defaults: Defaults,
    /// Set for Microsoft anonymizer configurations: that tool's own methods and options.
    pub ms: Option<MsOptions>,
    /// The steward's vocabulary (`[defaults] vocabulary`), loaded with the policy.
    pub vocabulary: Option<std::sync::Arc<crate::vocabulary::Vocabulary>>,
}

impl Policy {
    /// A built-in profile by name.
    pub fn builtin(name: &str) -> Result<Self, PolicyError> {
        let text = builtin_text(name).ok_or_else(|| PolicyError {
            source_name: name.to_string(),
            line: 0,
            column: 0,
            message: format!(
                "no built-in profile of that name (built-ins: {})",
                BUILTIN
                    .iter()
                    .map(|(n, _)| *n)
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        })?;
        native::parse(text, name, name)
    }

    /// A policy from text: a Microsoft anonymizer JSON configuration (detected by content) or TOML.
    /// Vocabulary files it names are read relative to the current directory.
    pub fn parse(text: &str, source_name: &str, name: &str) -> Result<Self, PolicyError> {
        Self::parse_at(text, source_name, name, None)
    }

    /// [`Policy::parse`], with vocabulary files read relative to `base` (the policy's folder).
    pub fn parse_at(
        text: &str,
        source_name: &str,
        name: &str,
        base: Option<&std::path::Path>,
    ) -> Result<Self, PolicyError> {
        let trimmed = text.trim_start_matches('\u{feff}').trim_start();
        if trimmed.starts_with('{') {
            return ms::parse(trimmed, source_name, name);
        }
        let mut policy = native::parse(text, source_name, name)?;
        policy.load_vocabulary(text, source_name, base)?;
        Ok(policy)
    }

    /// Reads the vocabulary files the policy names; the policy hash then covers them too (they
    /// change what the policy keeps).
    fn load_vocabulary(
        &mut self,
        text: &str,
        source_name: &str,
        base: Option<&std::path::Path>,
    ) -> Result<(), PolicyError> {
        if self.defaults.vocabulary_files.is_empty() {
            return Ok(());
        }
        let mut vocabulary = crate::vocabulary::Vocabulary::default();
        let mut hashed = text.to_string();
        for (file, line) in &self.defaults.vocabulary_files {
            let path = match base {
                Some(base) => base.join(file),
                None => std::path::PathBuf::from(file),
            };
            let content = std::fs::read_to_string(&path).map_err(|e| PolicyError {
                source_name: source_name.to_string(),
                line: *line,
                column: 0,
                message: format!("cannot read the vocabulary file {}: {e}", path.display()),
            })?;
            vocabulary.add_text(&content).map_err(|e| PolicyError {
                source_name: path.display().to_string(),
                line: e.line,
                column: 0,
                message: e.reason.to_string(),
            })?;
            hashed.push('\0');
            hashed.push_str(&content);
        }
        self.hash = text_hash(&hashed);
        self.vocabulary = Some(std::sync::Arc::new(vocabulary));
        Ok(())
    }

    /// A policy from a file path, or a built-in profile when `spec` names one.
    pub fn load(spec: &str) -> Result<Self, PolicyError> {
        if builtin_text(spec).is_some() {
            return Self::builtin(spec);
        }
        let path = std::path::Path::new(spec);
        let text = std::fs::read_to_string(path).map_err(|e| PolicyError {
            source_name: spec.to_string(),
            line: 0,
            column: 0,
            message: format!("cannot read the policy: {e}"),
        })?;
        let name = path
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or("custom")
            .to_string();
        Self::parse_at(&text, spec, &name, path.parent())
    }
}

/// The TOML text of a built-in profile.
pub fn builtin_text(name: &str) -> Option<&'static str> {
    BUILTIN.iter().find(|(n, _)| *n == name).map(|(_, t)| *t)
}

pub(crate) fn text_hash(text: &str) -> String {
    blake3::hash(text.as_bytes()).to_hex()[..16].to_string()
}

/// 1-based line and column of a byte offset.
pub(crate) fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}
