//! The Flight session actions (`SetSessionOptions`, `GetSessionOptions`, `CloseSession`).
//!
//! arrow-flight 59 does not ship these messages of Flight.proto, so they are declared here with
//! prost, field numbers as in the Arrow repository's `format/Flight.proto`. The action bodies are
//! the plain serialized messages (not wrapped in `Any`), as the Flight spec says.

use std::collections::HashMap;

/// Action type names.
pub const SET_SESSION_OPTIONS: &str = "SetSessionOptions";
/// Action type names.
pub const GET_SESSION_OPTIONS: &str = "GetSessionOptions";
/// Action type names.
pub const CLOSE_SESSION: &str = "CloseSession";

/// A list of strings (a session option value).
#[derive(Clone, PartialEq, prost::Message)]
pub struct StringListValue {
    /// The strings.
    #[prost(string, repeated, tag = "1")]
    pub values: Vec<String>,
}

/// One option value.
#[derive(Clone, PartialEq, prost::Oneof)]
pub enum OptionValue {
    /// A string.
    #[prost(string, tag = "1")]
    StringValue(String),
    /// A boolean.
    #[prost(bool, tag = "2")]
    BoolValue(bool),
    /// An integer.
    #[prost(sfixed64, tag = "3")]
    Int64Value(i64),
    /// A float.
    #[prost(double, tag = "4")]
    DoubleValue(f64),
    /// A list of strings.
    #[prost(message, tag = "5")]
    StringListValue(StringListValue),
}

/// A session option value (unset = remove the option).
#[derive(Clone, PartialEq, prost::Message)]
pub struct SessionOptionValue {
    /// The value.
    #[prost(oneof = "OptionValue", tags = "1, 2, 3, 4, 5")]
    pub option_value: Option<OptionValue>,
}

/// SetSessionOptions request.
#[derive(Clone, PartialEq, prost::Message)]
pub struct SetSessionOptionsRequest {
    /// Options by name.
    #[prost(map = "string, message", tag = "1")]
    pub session_options: HashMap<String, SessionOptionValue>,
}

/// Per-option error codes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, prost::Enumeration)]
#[repr(i32)]
pub enum ErrorValue {
    /// Unspecified.
    Unspecified = 0,
    /// No such option.
    InvalidName = 1,
    /// Bad value for the option.
    InvalidValue = 2,
    /// Other error.
    Error = 3,
}

/// One option's error.
#[derive(Clone, PartialEq, prost::Message)]
pub struct SetSessionOptionError {
    /// The error code.
    #[prost(enumeration = "ErrorValue", tag = "1")]
    pub value: i32,
}

/// SetSessionOptions result: the options that were not set.
#[derive(Clone, PartialEq, prost::Message)]
pub struct SetSessionOptionsResult {
    /// Errors by option name.
    #[prost(map = "string, message", tag = "1")]
    pub errors: HashMap<String, SetSessionOptionError>,
}

/// GetSessionOptions result.
#[derive(Clone, PartialEq, prost::Message)]
pub struct GetSessionOptionsResult {
    /// Options by name.
    #[prost(map = "string, message", tag = "1")]
    pub session_options: HashMap<String, SessionOptionValue>,
}

/// CloseSession status codes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, prost::Enumeration)]
#[repr(i32)]
pub enum CloseSessionStatus {
    /// Unspecified.
    Unspecified = 0,
    /// The session is closed.
    Closed = 1,
    /// Closing.
    Closing = 2,
    /// Cannot be closed.
    NotClosable = 3,
}

/// CloseSession result.
#[derive(Clone, PartialEq, prost::Message)]
pub struct CloseSessionResult {
    /// The status.
    #[prost(enumeration = "CloseSessionStatus", tag = "1")]
    pub status: i32,
}
