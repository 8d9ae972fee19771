//! FHIR R4 (4.0.1) element types: which JSON key of which type holds which FHIR type.
//!
//! STUB — being written (see the module's task). API contract:
//!
//! ```ignore
//! pub fn child(parent_type: &str, json_key: &str) -> Option<Child>;
//! pub fn is_primitive(type_code: &str) -> bool;
//! pub fn is_known_type(type_code: &str) -> bool;
//! ```

/// One child element of a FHIR type, as found under a JSON key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Child {
    /// FHIR type code of the value under this key: a primitive (`date`, `string`, ...), a datatype
    /// (`HumanName`, `Reference`, ...), `Resource` (for `contained`, `Bundle.entry.resource`), or
    /// for backbone elements the element path that names its children (`Patient.contact`).
    pub type_code: &'static str,
    /// Element name without the choice suffix (`value` for the key `valueQuantity`).
    pub element: &'static str,
    /// True when the element repeats (JSON array).
    pub is_array: bool,
    /// True for a choice element (`value[x]`).
    pub is_choice: bool,
}

/// The child element under `json_key` of a node of type `parent_type`.
pub fn child(_parent_type: &str, _json_key: &str) -> Option<Child> {
    None
}

/// True for FHIR primitive types (`string`, `date`, `code`, ...).
pub fn is_primitive(_type_code: &str) -> bool {
    false
}
