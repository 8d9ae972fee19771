//! The JSON tree views evaluate FHIRPath over, and the one place that knows its representation.
//!
//! Views read resource JSON text (NDJSON lines, the lake's `resource` column). A document is
//! parsed by simd-json into a *tape*: one flat vector of nodes in document order, where an array
//! or object node is followed by its whole subtree and knows its size. A [`Json`] is a borrowed
//! slice of that tape (a node and its subtree), so reading a member, an item or a string is plain
//! slice indexing, with no allocation and nothing to unpack. That matters more than the parse:
//! with a DOM whose every access decodes a tagged node (sonic-rs), a 16-column view spent three
//! times the parse in node accesses (see `views/benches/views.rs` and benchmarks/README.md).
//! The parser's buffers (input copy, tape, simd-json stage buffers) are reused across documents
//! by [`JsonParser`].

use simd_json::{Node, StaticNode, Tape};

/// A JSON value: one node of a parsed document and its subtree.
#[derive(Clone, Copy)]
pub struct Json<'a>(&'a [Node<'a>]);

/// The members of a JSON object, in document order.
#[derive(Clone, Copy)]
pub struct JsonObject<'a>(&'a [Node<'a>]);

/// The items of a JSON array.
#[derive(Clone, Copy)]
pub struct JsonArray<'a>(&'a [Node<'a>]);

/// Why a text is not one JSON document (never carries the text).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError(pub String);

impl std::fmt::Display for ParseError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "invalid JSON: {}", self.0)
    }
}

impl std::error::Error for ParseError {}

/// Parses documents one after the other, reusing its buffers.
pub struct JsonParser {
    input: Vec<u8>,
    buffers: simd_json::Buffers,
    tape: Tape<'static>,
}

impl Default for JsonParser {
    fn default() -> Self {
        Self {
            input: Vec::new(),
            buffers: simd_json::Buffers::default(),
            tape: Tape(Vec::new()),
        }
    }
}

impl std::fmt::Debug for JsonParser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JsonParser").finish_non_exhaustive()
    }
}

impl JsonParser {
    /// Parses `text` (one JSON document; trailing non-whitespace is an error) and calls `f` with
    /// its root. The tree lives until `f` returns.
    pub fn parse<R>(&mut self, text: &str, f: impl FnOnce(Json<'_>) -> R) -> Result<R, ParseError> {
        self.input.clear();
        self.input.extend_from_slice(text.as_bytes());
        let mut tape = std::mem::replace(&mut self.tape, Tape(Vec::new())).reset();
        let result = match simd_json::fill_tape(&mut self.input, &mut self.buffers, &mut tape) {
            Ok(()) if !tape.0.is_empty() => Ok(f(Json(&tape.0))),
            Ok(()) => Err(ParseError("empty document".into())),
            Err(e) => Err(ParseError(format!("{:?}", e.error()))),
        };
        self.tape = tape.reset();
        result
    }
}

/// Parses one document with fresh buffers (see [`JsonParser`] for many).
pub fn parse<R>(text: &str, f: impl FnOnce(Json<'_>) -> R) -> Result<R, ParseError> {
    JsonParser::default().parse(text, f)
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
    Array(JsonArray<'a>),
    /// An object.
    Object(JsonObject<'a>),
}

/// Number of tape nodes of the subtree starting at `node` (itself included).
#[inline]
fn span(node: &Node<'_>) -> usize {
    match node {
        Node::Object { count, .. } | Node::Array { count, .. } => count + 1,
        _ => 1,
    }
}

impl<'a> Json<'a> {
    /// What this node is.
    #[inline]
    pub fn kind(self) -> Kind<'a> {
        match self.0[0] {
            Node::String(s) => Kind::Str(s),
            Node::Object { .. } => Kind::Object(JsonObject(self.0)),
            Node::Array { .. } => Kind::Array(JsonArray(self.0)),
            Node::Static(StaticNode::Null) => Kind::Null,
            Node::Static(StaticNode::Bool(b)) => Kind::Bool(b),
            Node::Static(StaticNode::I64(i)) => Kind::Int(i),
            Node::Static(StaticNode::U64(u)) => match i64::try_from(u) {
                Ok(i) => Kind::Int(i),
                Err(_) => Kind::Float(u as f64),
            },
            Node::Static(StaticNode::F64(f)) => Kind::Float(f),
            #[allow(unreachable_patterns)] // 128-bit integers when a feature enables them
            Node::Static(_) => Kind::Float(f64::NAN),
        }
    }

    /// The members, if this is an object.
    #[inline]
    pub fn object(self) -> Option<JsonObject<'a>> {
        matches!(self.0[0], Node::Object { .. }).then_some(JsonObject(self.0))
    }

    /// The items, if this is an array.
    #[inline]
    pub fn array(self) -> Option<JsonArray<'a>> {
        matches!(self.0[0], Node::Array { .. }).then_some(JsonArray(self.0))
    }

    /// Is this `null`?
    #[inline]
    pub fn is_null(self) -> bool {
        matches!(self.0[0], Node::Static(StaticNode::Null))
    }

    /// The member `key` of an object.
    #[inline]
    pub fn member(self, key: &str) -> Option<Json<'a>> {
        self.object()?
            .iter()
            .find_map(|(k, v)| (k == key).then_some(v))
    }

    /// The string, if this is one.
    #[inline]
    pub fn text(self) -> Option<&'a str> {
        match self.0[0] {
            Node::String(s) => Some(s),
            _ => None,
        }
    }

    /// The `resourceType` of a resource object.
    pub fn resource_type(self) -> Option<&'a str> {
        self.member("resourceType").and_then(Json::text)
    }

    /// Compact JSON text of this value (used when a complex value lands in a text column).
    pub fn to_json_string(self) -> String {
        let mut out = String::new();
        self.write_json(&mut out);
        out
    }

    fn write_json(self, out: &mut String) {
        match self.kind() {
            Kind::Null => out.push_str("null"),
            Kind::Bool(b) => out.push_str(if b { "true" } else { "false" }),
            Kind::Int(i) => out.push_str(&i.to_string()),
            Kind::Float(f) => out.push_str(&format_float(f)),
            Kind::Str(s) => write_string(s, out),
            Kind::Array(items) => {
                out.push('[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    item.write_json(out);
                }
                out.push(']');
            }
            Kind::Object(members) => {
                out.push('{');
                for (i, (key, value)) in members.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    write_string(key, out);
                    out.push(':');
                    value.write_json(out);
                }
                out.push('}');
            }
        }
    }
}

/// A JSON string literal (escaping as serde_json does).
fn write_string(s: &str, out: &mut String) {
    out.push_str(&serde_json::Value::from(s).to_string());
}

impl PartialEq for Json<'_> {
    /// Structural equality: objects as unordered maps, numbers by value.
    fn eq(&self, other: &Self) -> bool {
        match (self.kind(), other.kind()) {
            (Kind::Null, Kind::Null) => true,
            (Kind::Bool(a), Kind::Bool(b)) => a == b,
            (Kind::Int(a), Kind::Int(b)) => a == b,
            (Kind::Int(a), Kind::Float(b)) | (Kind::Float(b), Kind::Int(a)) => a as f64 == b,
            (Kind::Float(a), Kind::Float(b)) => a == b,
            (Kind::Str(a), Kind::Str(b)) => a == b,
            (Kind::Array(a), Kind::Array(b)) => {
                a.len() == b.len() && a.iter().zip(b.iter()).all(|(x, y)| x == y)
            }
            (Kind::Object(a), Kind::Object(b)) => {
                a.len() == b.len()
                    && a.iter().all(|(k, v)| {
                        b.iter()
                            .find_map(|(k2, v2)| (k2 == k).then_some(v2))
                            .is_some_and(|v2| v2 == v)
                    })
            }
            _ => false,
        }
    }
}

impl std::fmt::Debug for Json<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.to_json_string())
    }
}

impl std::fmt::Debug for JsonObject<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        Json(self.0).fmt(f)
    }
}

impl std::fmt::Debug for JsonArray<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        Json(self.0).fmt(f)
    }
}

impl<'a> JsonObject<'a> {
    /// Number of members.
    pub fn len(self) -> usize {
        match self.0[0] {
            Node::Object { len, .. } => len,
            _ => 0,
        }
    }

    /// True when the object has no members.
    pub fn is_empty(self) -> bool {
        self.len() == 0
    }

    /// The members in document order.
    #[inline]
    pub fn iter(self) -> impl Iterator<Item = (&'a str, Json<'a>)> {
        let mut rest = &self.0[1..];
        std::iter::from_fn(move || {
            let (key, tail) = rest.split_first()?;
            let Node::String(key) = key else {
                return None;
            };
            let (value, tail) = tail.split_at(span(tail.first()?));
            rest = tail;
            Some((*key, Json(value)))
        })
    }
}

impl<'a> JsonArray<'a> {
    /// Number of items.
    pub fn len(self) -> usize {
        match self.0[0] {
            Node::Array { len, .. } => len,
            _ => 0,
        }
    }

    /// True when the array has no items.
    pub fn is_empty(self) -> bool {
        self.len() == 0
    }

    /// The items in order.
    #[inline]
    pub fn iter(self) -> impl Iterator<Item = Json<'a>> {
        let mut rest = &self.0[1..];
        std::iter::from_fn(move || {
            let (item, tail) = rest.split_at(span(rest.first()?));
            rest = tail;
            Some(Json(item))
        })
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
        let text = r#"{"resourceType":"Patient","id":"p1","n":[1,2.5,-3,18446744073709551615,1.0],"s":"a\"b","t":true,"z":null,"o":{"x":[{}, []]}}"#;
        parse(text, |json| {
            assert_eq!(json.resource_type(), Some("Patient"));
            assert_eq!(json.member("id").and_then(Json::text), Some("p1"));
            assert_eq!(json.member("s").and_then(Json::text), Some("a\"b"));
            let Some(Kind::Array(n)) = json.member("n").map(Json::kind) else {
                panic!("array expected")
            };
            let n: Vec<Json<'_>> = n.iter().collect();
            assert_eq!(n.len(), 5);
            assert!(matches!(n[0].kind(), Kind::Int(1)));
            assert!(matches!(n[1].kind(), Kind::Float(f) if f == 2.5));
            assert!(matches!(n[2].kind(), Kind::Int(-3)));
            assert!(matches!(n[3].kind(), Kind::Float(_)));
            assert!(matches!(n[4].kind(), Kind::Float(_)));
            assert!(matches!(
                json.member("t").map(Json::kind),
                Some(Kind::Bool(true))
            ));
            assert!(json.member("z").is_some_and(Json::is_null));
            assert_eq!(json.object().map(JsonObject::len), Some(7));
            let printed = json.to_json_string();
            parse(&printed, |again| assert_eq!(again, json)).unwrap();
            let value: serde_json::Value = serde_json::from_str(text).unwrap();
            parse(&value.to_string(), |via_serde| assert_eq!(via_serde, json)).unwrap();
        })
        .unwrap();
    }

    #[test]
    fn rejects_trailing_text() {
        assert!(parse("{} x", |_| ()).is_err());
        assert!(parse("{", |_| ()).is_err());
        assert!(parse("", |_| ()).is_err());
    }

    #[test]
    fn parser_reuses_buffers() {
        let mut parser = JsonParser::default();
        for i in 0..3 {
            let text = format!(r#"{{"id":"x{i}","a":[{i}]}}"#);
            let id = parser
                .parse(&text, |json| {
                    json.member("id").and_then(Json::text).map(str::to_string)
                })
                .unwrap();
            assert_eq!(id.as_deref(), Some(format!("x{i}").as_str()));
        }
        assert!(parser.parse("[1,", |_| ()).is_err());
        // Escapes are decoded; the printed form re-escapes what JSON requires.
        let text = r#"{"s":"caf\u00e9 \"x\"\n","e":""}"#;
        parser
            .parse(text, |json| {
                assert_eq!(json.member("s").and_then(Json::text), Some("café \"x\"\n"));
                assert_eq!(json.member("e").and_then(Json::text), Some(""));
                assert_eq!(json.to_json_string(), r#"{"s":"café \"x\"\n","e":""}"#);
            })
            .unwrap();
        assert_eq!(
            parser.parse("[1]", |json| json.array().map(JsonArray::len)),
            Ok(Some(1))
        );
    }
}
