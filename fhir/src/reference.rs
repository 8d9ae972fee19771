//! The one reader of `Reference.reference` (and of a Bundle's `fullUrl`, `request.url`,
//! `response.location`): every form a FHIR R4 reference is written in, split into its parts
//! without allocating. What each form *means* to a caller (is the type a resource type? is the
//! id a valid id? which patient is it?) is the caller's question, asked of the parts:
//! [`Reference::type_and_id`] for a literal reference to a known resource type with a valid id.
//!
//! Forms ([R4 references](https://hl7.org/fhir/R4/references.html)):
//!
//! | written | parsed as |
//! |---|---|
//! | `Patient/1`, `Patient/1/_history/2`, `Patient/1#x` | [`Reference::Literal`] |
//! | `https://ehr.example/fhir/Patient/1[/_history/2]` | [`Reference::Literal`] with a base |
//! | `Patient?identifier=sys\|1`, `https://x/fhir/Patient?…` (an R4 type before `?`) | [`Reference::Conditional`] |
//! | `Patient/1/`, `Patient/1?_format=json` (trailing `/` and parameters dropped) | [`Reference::Literal`] |
//! | `#p1` | [`Reference::Contained`] |
//! | `urn:uuid:…`, `urn:oid:…` | [`Reference::Uuid`], [`Reference::Oid`] |
//! | `Patient` (a Bundle `request.url` of a create) | [`Reference::TypeOnly`] |
//! | anything else (`patient-1`, empty) | [`Reference::Other`] |

use std::borrow::Cow;

/// A reference split into its parts; every part borrows from the text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reference<'a> {
    /// `[base/]Type/id[/_history/version]`.
    Literal(Literal<'a>),
    /// `[base/]Type?query` with an R4 resource type: a search that names the target
    /// (`identifier=system|value`).
    Conditional {
        /// The service base before the type (`https://ehr.example/fhir`), when written.
        base: Option<&'a str>,
        /// The resource type before `?` (`Patient`).
        resource_type: &'a str,
        /// Everything after the first `?`, not decoded.
        query: &'a str,
    },
    /// `#id`: a resource contained in the referring one (`#` alone is the container itself).
    Contained(&'a str),
    /// `urn:uuid:<uuid>`: a Bundle entry's `fullUrl`.
    Uuid(&'a str),
    /// `urn:oid:<oid>`.
    Oid(&'a str),
    /// A type alone, no id (`Patient`): the `request.url` of a Bundle create.
    TypeOnly(&'a str),
    /// None of the forms above.
    Other,
}

/// The parts of a literal reference `[base/]Type/id[/_history/version]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Literal<'a> {
    /// The service base before the type (`https://ehr.example/fhir`), when written.
    pub base: Option<&'a str>,
    /// The segment before the id; not checked to be a resource type (see
    /// [`Reference::type_and_id`]).
    pub resource_type: &'a str,
    /// The segment after the type; may be empty (`Patient/`), not checked to be a valid id.
    pub id: &'a str,
    /// The version after `/_history/`, when written (may be empty).
    pub version: Option<&'a str>,
    /// What follows a `#` after the id (`Patient/1#x`), when written; not part of the id.
    pub fragment: Option<&'a str>,
}

impl<'a> Reference<'a> {
    /// Splits `reference` into its parts. Never fails: what is no known form is
    /// [`Reference::Other`].
    pub fn parse(reference: &'a str) -> Self {
        if let Some(id) = reference.strip_prefix('#') {
            return Self::Contained(id);
        }
        if let Some(uuid) = reference.strip_prefix("urn:uuid:") {
            return Self::Uuid(uuid);
        }
        if let Some(oid) = reference.strip_prefix("urn:oid:") {
            return Self::Oid(oid);
        }
        let mut path = reference;
        if let Some((before, query)) = reference.split_once('?') {
            let (base, resource_type) = split_last(before);
            if crate::types::is_resource_type(resource_type) {
                return Self::Conditional {
                    base,
                    resource_type,
                    query,
                };
            }
            if base.is_none() {
                return Self::Other; // `Jsmith?x=1`: a search on no resource type
            }
            // `Type/id?_format=json`: a literal reference with search parameters, which go.
            path = before;
        }
        let (path, fragment) = match path.split_once('#') {
            Some((path, fragment)) => (path, Some(fragment)),
            None => (path, None),
        };
        // `Patient/1/` is `Patient/1`.
        let path = path.trim_end_matches('/');
        let (body, version) = split_history(path);
        match body.rsplit_once('/') {
            Some((before, id)) => {
                let (base, resource_type) = split_last(before);
                Self::Literal(Literal {
                    base,
                    resource_type,
                    id,
                    version,
                    fragment,
                })
            }
            None if fragment.is_none() && is_type_name(body) => Self::TypeOnly(body),
            None => Self::Other,
        }
    }

    /// The literal parts, for a [`Reference::Literal`].
    pub fn literal(&self) -> Option<&Literal<'a>> {
        match self {
            Self::Literal(literal) => Some(literal),
            _ => None,
        }
    }

    /// `(type, id)` of a literal reference whose type is an R4 resource type and whose id is a
    /// valid FHIR id ([`is_valid_id`]); `None` for every other reference.
    pub fn type_and_id(&self) -> Option<(&'a str, &'a str)> {
        let literal = self.literal()?;
        (crate::types::is_resource_type(literal.resource_type) && is_valid_id(literal.id))
            .then_some((literal.resource_type, literal.id))
    }
}

/// Whether `id` is a valid FHIR logical id (`[A-Za-z0-9\-\.]{1,64}`).
pub fn is_valid_id(id: &str) -> bool {
    (1..=64).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
}

/// A search value of a conditional reference, percent-decoded (`http://x%7C1` is `http://x|1`);
/// borrowed when there is nothing to decode, the text as written when the bytes it decodes to
/// are not UTF-8.
pub fn percent_decode(text: &str) -> Cow<'_, str> {
    percent_encoding::percent_decode_str(text)
        .decode_utf8()
        .unwrap_or(Cow::Borrowed(text))
}

/// `a/b/c` as `(Some("a/b"), "c")`; `c` as `(None, "c")`.
fn split_last(text: &str) -> (Option<&str>, &str) {
    match text.rsplit_once('/') {
        Some((base, last)) => (Some(base), last),
        None => (None, text),
    }
}

/// `[base/]Type/id/_history/vid` as (`[base/]Type/id`, `Some(vid)`); a `/_history/` counts only
/// with something before it, and is the last `/_history/` of the text.
fn split_history(reference: &str) -> (&str, Option<&str>) {
    let Some(last) = reference.rfind('/') else {
        return (reference, None);
    };
    match reference[..last].strip_suffix("/_history") {
        Some(body) if !body.is_empty() => (body, Some(&reference[last + 1..])),
        _ => (reference, None),
    }
}

/// A resource type's spelling: an ASCII letter first, then letters and digits.
fn is_type_name(text: &str) -> bool {
    let mut bytes = text.bytes();
    bytes.next().is_some_and(|b| b.is_ascii_alphabetic())
        && bytes.all(|b| b.is_ascii_alphanumeric())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn literal<'a>(
        base: Option<&'a str>,
        resource_type: &'a str,
        id: &'a str,
        version: Option<&'a str>,
    ) -> Reference<'a> {
        Reference::Literal(Literal {
            base,
            resource_type,
            id,
            version,
            fragment: None,
        })
    }

    #[test]
    fn every_form() {
        let cases = [
            ("Patient/1", literal(None, "Patient", "1", None)),
            (
                "Patient/1/_history/2",
                literal(None, "Patient", "1", Some("2")),
            ),
            (
                "https://ehr.example/fhir/Patient/a-b.c/_history/2",
                literal(
                    Some("https://ehr.example/fhir"),
                    "Patient",
                    "a-b.c",
                    Some("2"),
                ),
            ),
            ("Patient/", Reference::TypeOnly("Patient")),
            ("Patient/1/", literal(None, "Patient", "1", None)),
            (
                "Patient/1?_format=json",
                literal(None, "Patient", "1", None),
            ),
            ("/Patient/1", literal(Some(""), "Patient", "1", None)),
            ("Jsmith?x=1", Reference::Other),
            (
                "Patient?identifier=http://x%7C1",
                Reference::Conditional {
                    base: None,
                    resource_type: "Patient",
                    query: "identifier=http://x%7C1",
                },
            ),
            (
                "https://ehr.example/fhir/Patient?identifier=1&active=true",
                Reference::Conditional {
                    base: Some("https://ehr.example/fhir"),
                    resource_type: "Patient",
                    query: "identifier=1&active=true",
                },
            ),
            ("#p1", Reference::Contained("p1")),
            ("#", Reference::Contained("")),
            ("urn:uuid:abc-1", Reference::Uuid("abc-1")),
            ("urn:oid:1.2.3", Reference::Oid("1.2.3")),
            ("Patient", Reference::TypeOnly("Patient")),
            (
                "Patient/1#x",
                Reference::Literal(Literal {
                    base: None,
                    resource_type: "Patient",
                    id: "1",
                    version: None,
                    fragment: Some("x"),
                }),
            ),
            ("patient-1", Reference::Other),
            ("", Reference::Other),
            // `_history` needs something before it to be a version.
            ("_history/2", literal(None, "_history", "2", None)),
        ];
        for (text, expected) in cases {
            assert_eq!(Reference::parse(text), expected, "{text}");
        }
    }

    #[test]
    fn type_and_id_needs_a_resource_type_and_a_valid_id() {
        fn t(r: &str) -> Option<(&str, &str)> {
            Reference::parse(r).type_and_id()
        }
        assert_eq!(t("Patient/123"), Some(("Patient", "123")));
        assert_eq!(
            t("http://x.org/fhir/Patient/a-b.c/_history/2"),
            Some(("Patient", "a-b.c"))
        );
        assert_eq!(t("Patient?identifier=x"), None);
        assert_eq!(t("Foo/1"), None);
        assert_eq!(t("Patient/"), None);
        assert_eq!(t("Patient/a b"), None);
        assert_eq!(t("123"), None);
        assert_eq!(t("urn:uuid:1"), None);
    }

    #[test]
    fn percent_decoding() {
        assert_eq!(percent_decode("http://x%7C1"), "http://x|1");
        assert!(matches!(percent_decode("plain"), Cow::Borrowed("plain")));
        assert_eq!(percent_decode("bad%ZZ"), "bad%ZZ");
        assert_eq!(percent_decode("not-utf8%FF"), "not-utf8%FF");
    }

    #[test]
    fn ids() {
        assert!(is_valid_id("a-B.9"));
        assert!(is_valid_id(&"x".repeat(64)));
        assert!(!is_valid_id(&"x".repeat(65)));
        assert!(!is_valid_id(""));
        assert!(!is_valid_id("a/b"));
        assert!(!is_valid_id("a_b"));
    }
}
