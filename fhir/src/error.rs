//! The crate's one error type: what is wrong and where, never the text of a value.

/// An error of the FHIR floor.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// A FHIRPath expression that does not parse. The message names what was expected or found
    /// (names, symbols, function arities of the expression), never the text of its literals.
    #[error("at offset {offset}: {message}")]
    FhirPathSyntax {
        /// Byte offset of the problem in the expression.
        offset: usize,
        /// What was expected or found.
        message: String,
    },
}

impl Error {
    /// A FHIRPath syntax error at byte `offset`.
    pub fn fhirpath_syntax(offset: usize, message: impl Into<String>) -> Self {
        Self::FhirPathSyntax {
            offset,
            message: message.into(),
        }
    }
}

/// The crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
