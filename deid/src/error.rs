//! The errors of this crate: [`Error`], the crate's one error type, and the errors of loading a
//! policy ([`PolicyError`], located in the policy text) and a key ([`KeyError`]), which are its
//! sources where they meet. Errors name the resource type, file, line and JSON path of a problem,
//! never a value of a resource and never key material.

use std::fmt;

use crate::key::MIN_KEY_BYTES;
use crate::path::eval::EvalError;

/// Errors of the de-identification stage. Variants name the resource type and JSON path, never
/// values.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A rule could not be applied to a node of a resource.
    #[error("{resource_type} at {path}: {reason}")]
    Rule {
        /// FHIR resource type.
        resource_type: String,
        /// JSON path of the node.
        path: String,
        /// What went wrong (no data values).
        reason: RuleError,
    },
    /// A policy could not be loaded.
    #[error(transparent)]
    Policy(#[from] PolicyError),
    /// A key could not be loaded.
    #[error(transparent)]
    Key(#[from] KeyError),
    /// A risk report could not be computed.
    #[error(transparent)]
    Risk(#[from] crate::risk::RiskError),
}

/// Result type of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Why a rule could not be applied to a node ([`Error::Rule`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RuleError {
    /// The resource's `resourceType` is no FHIR R4 resource type (it is not echoed: it may hold
    /// anything).
    #[error("unknown resource type")]
    UnknownResourceType,
    /// A JSON key that is no element of its parent's type (anonymizer mode).
    #[error("unknown element for FHIR R4")]
    UnknownElement,
    /// `generalize` governs an object (anonymizer mode).
    #[error("generalize applies to primitive values only")]
    GeneralizeNotPrimitive,
    /// A `generalize` case could not be evaluated.
    #[error(transparent)]
    Eval(#[from] EvalError),
}

/// Errors loading or parsing a key. Never carries key material.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The text is neither hex nor base64.
    #[error("{source_name}: the key is neither hex nor base64")]
    Encoding {
        /// Where the key came from (variable name or file path).
        source_name: String,
    },
    /// Fewer than [`MIN_KEY_BYTES`] bytes.
    #[error("{source_name}: the key has {bytes} bytes; at least {MIN_KEY_BYTES} are required")]
    TooShort {
        /// Where the key came from.
        source_name: String,
        /// Decoded length.
        bytes: usize,
    },
    /// The key file may be read by group or others.
    #[error(
        "{path}: key file is readable by group or others (mode {mode:o}); run `chmod 600 {path}`"
    )]
    Permissions {
        /// Key file.
        path: String,
        /// Its permission bits.
        mode: u32,
    },
    /// The key file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// Key file.
        path: String,
        /// Cause.
        source: std::io::Error,
    },
}

/// A policy problem, located in the policy text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct PolicyError {
    /// File name or profile name.
    pub source_name: String,
    /// 1-based line (0 when unknown).
    pub line: usize,
    /// 1-based column (0 when unknown).
    pub column: usize,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for PolicyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line > 0 {
            write!(
                f,
                "{}:{}:{}: {}",
                self.source_name, self.line, self.column, self.message
            )
        } else {
            write!(f, "{}: {}", self.source_name, self.message)
        }
    }
}
