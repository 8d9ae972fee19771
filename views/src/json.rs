//! The JSON tree views evaluate FHIRPath over, and the one place that knows its representation.
//!
//! Views read resource JSON text (NDJSON lines, the lake's `resource` column). Parsing is the
//! larger half of a view's cost, so the tree is [`sonic_rs::Value`]: sonic-rs parses with SIMD
//! into one arena per document, about twice as fast as `serde_json` into a borrowed tree and four
//! times `serde_json::Value` (see `views/benches/views.rs`). The evaluator sees a node through
//! [`JsonExt::kind`], a small borrowed enum, so nothing else depends on sonic-rs.

use sonic_rs::{JsonContainerTrait, JsonNumberTrait, JsonValueTrait, ValueRef};

/// One parsed JSON document (or a node of one).
pub type Json = sonic_rs::Value;

/// The members of a JSON object, in document order.
pub type JsonObject = sonic_rs::Object;

/// Parses one JSON document (trailing non-whitespace is an error).
pub fn parse(text: &str) -> sonic_rs::Result<Json> {
    sonic_rs::from_str(text)
}

/// The tree of a `serde_json` value (resources read by the file sources).
pub fn from_serde(value: &serde_json::Value) -> Json {
    sonic_rs::to_value(value).unwrap_or_default()
}

/// What a node is, borrowed.
#[derive(Debug, Clone, Copy)]
pub enum Kind<'a> {
    /// `null`
    Null,
    /// `true` / `false`
    Bool(bool),
    /// A number without fraction or exponent that fits an `i64`.
    Int(i64),
    /// Any other number.
    Float(f64),
    /// A string.
    Str(&'a str),
    /// An array.
    Array(&'a [Json]),
    /// An object.
    Object(&'a JsonObject),
}

/// Accessors the evaluator uses on [`Json`] nodes.
pub trait JsonExt {
    /// What this node is.
    fn kind(&self) -> Kind<'_>;
    /// The members, if this is an object (cheaper than [`Self::kind`] on sonic-rs nodes, which
    /// unpack a node once per type test).
    fn object(&self) -> Option<&JsonObject>;
    /// The items, if this is an array.
    fn array(&self) -> Option<&[Json]>;
    /// Is this `null`?
    fn is_null_value(&self) -> bool;
    /// The member `key` of an object.
    fn member(&self, key: &str) -> Option<&Json>;
    /// The string, if this is one.
    fn text(&self) -> Option<&str>;
    /// The `resourceType` of a resource object.
    fn resource_type(&self) -> Option<&str>;
    /// Compact JSON text of this value (used when a complex value lands in a text column).
    fn to_json_string(&self) -> String;
}

impl JsonExt for Json {
    #[inline]
    fn kind(&self) -> Kind<'_> {
        match self.as_ref() {
            ValueRef::Null => Kind::Null,
            ValueRef::Bool(b) => Kind::Bool(b),
            ValueRef::Number(n) => match n.as_i64() {
                Some(i) => Kind::Int(i),
                None => Kind::Float(n.as_f64().unwrap_or(f64::NAN)),
            },
            ValueRef::String(s) => Kind::Str(s),
            ValueRef::Array(items) => Kind::Array(items.as_slice()),
            ValueRef::Object(members) => Kind::Object(members),
        }
    }

    #[inline]
    fn object(&self) -> Option<&JsonObject> {
        <Json as JsonContainerTrait>::as_object(self)
    }

    #[inline]
    fn array(&self) -> Option<&[Json]> {
        <Json as JsonContainerTrait>::as_array(self).map(|items| items.as_slice())
    }

    #[inline]
    fn is_null_value(&self) -> bool {
        <Json as JsonValueTrait>::is_null(self)
    }

    #[inline]
    fn member(&self, key: &str) -> Option<&Json> {
        <Json as JsonContainerTrait>::as_object(self)?
            .iter()
            .find_map(|(k, v)| (k == key).then_some(v))
    }

    #[inline]
    fn text(&self) -> Option<&str> {
        self.as_str()
    }

    fn resource_type(&self) -> Option<&str> {
        self.member("resourceType").and_then(JsonExt::text)
    }

    fn to_json_string(&self) -> String {
        sonic_rs::to_string(self).unwrap_or_else(|_| "null".to_string())
    }
}

/// A float as JSON text (shortest round-trip form; never `NaN`).
pub fn format_float(f: f64) -> String {
    if f.is_finite() {
        serde_json::Number::from_f64(f)
            .map(|n| n.to_string())
            .unwrap_or_else(|| "null".to_string())
    } else {
        "null".to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_kind() {
        let text = r#"{"resourceType":"Patient","id":"p1","n":[1,2.5,-3,18446744073709551615,1.0],"s":"a\"b","t":true,"z":null}"#;
        let json = parse(text).unwrap();
        assert_eq!(json.resource_type(), Some("Patient"));
        assert_eq!(json.member("id").and_then(JsonExt::text), Some("p1"));
        assert_eq!(json.member("s").and_then(JsonExt::text), Some("a\"b"));
        let Some(Kind::Array(n)) = json.member("n").map(JsonExt::kind) else {
            panic!("array expected")
        };
        assert!(matches!(n[0].kind(), Kind::Int(1)));
        assert!(matches!(n[1].kind(), Kind::Float(f) if f == 2.5));
        assert!(matches!(n[2].kind(), Kind::Int(-3)));
        assert!(matches!(n[3].kind(), Kind::Float(_)));
        assert!(matches!(n[4].kind(), Kind::Float(_)));
        assert!(matches!(
            json.member("t").map(JsonExt::kind),
            Some(Kind::Bool(true))
        ));
        assert!(matches!(
            json.member("z").map(JsonExt::kind),
            Some(Kind::Null)
        ));
        assert_eq!(parse(&json.to_json_string()).unwrap(), json);
        let via_serde = from_serde(&serde_json::from_str(text).unwrap());
        assert_eq!(via_serde, json);
    }

    #[test]
    fn rejects_trailing_text() {
        assert!(parse("{} x").is_err());
        assert!(parse("{").is_err());
    }
}
