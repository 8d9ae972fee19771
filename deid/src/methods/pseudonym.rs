//! Pseudonyms: keyed BLAKE3 over `Type/id`, rendered as valid FHIR ids, and the rewriting of every
//! reference form so that joins survive (`Type/id`, absolute URLs, `urn:uuid:`, conditional
//! `Type?identifier=system|value`, contained `#id`). Also the anonymizer's HMAC-SHA256 `cryptoHash`
//! for compatibility mode.

use hmac::{Hmac, Mac};
use sha2::Sha256;

use fhirlake_fhir::reference::{Reference, percent_decode};

use crate::key::{DeidKey, hex_encode};

/// Hex characters of a pseudonym (128 bits).
const PSEUDONYM_HEX: usize = 32;

/// Keyed BLAKE3 over the parts joined by NUL bytes.
fn keyed(key: &[u8; 32], parts: &[&str]) -> blake3::Hash {
    // Ids and references are short: joined in a stack buffer they hash in one call, which costs
    // less than the incremental hasher (same bytes, same hash).
    let mut buf = [0u8; 256];
    let len = parts
        .iter()
        .map(|p| p.len() + 1)
        .sum::<usize>()
        .saturating_sub(1);
    if len <= buf.len() {
        let mut at = 0;
        for (i, part) in parts.iter().enumerate() {
            if i > 0 {
                at += 1; // the NUL separator (the buffer is zeroed)
            }
            buf[at..at + part.len()].copy_from_slice(part.as_bytes());
            at += part.len();
        }
        return blake3::keyed_hash(key, &buf[..len]);
    }
    let mut hasher = blake3::Hasher::new_keyed(key);
    for (i, part) in parts.iter().enumerate() {
        if i > 0 {
            hasher.update(&[0]);
        }
        hasher.update(part.as_bytes());
    }
    hasher.finalize()
}

/// Appends `bytes` as lowercase hex.
fn push_hex(out: &mut String, bytes: &[u8]) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for &b in bytes {
        out.push(char::from(HEX[usize::from(b >> 4)]));
        out.push(char::from(HEX[usize::from(b & 15)]));
    }
}

/// The first [`PSEUDONYM_HEX`] hex characters of a hash (`to_hex()[..32]` without rendering the
/// other half).
fn pseudonym_hex(hash: &blake3::Hash) -> String {
    let mut out = String::with_capacity(PSEUDONYM_HEX);
    push_hex(&mut out, &hash.as_bytes()[..PSEUDONYM_HEX / 2]);
    out
}

/// The pseudonym of resource `resource_type/id`: 32 lowercase hex characters (a valid FHIR id).
pub fn pseudo_id(key: &DeidKey, resource_type: &str, id: &str) -> String {
    pseudonym_hex(&keyed(key.pseudonym_key(), &[resource_type, id]))
}

/// The pseudonym of an identifier value within its system (the system is kept beside it).
pub fn pseudo_identifier(key: &DeidKey, system: &str, value: &str) -> String {
    pseudonym_hex(&keyed(key.identifier_key(), &[system, value]))
}

/// A pseudonym for any other string (e.g. a URL with no resource id in it).
pub fn pseudo_text(key: &DeidKey, text: &str) -> String {
    pseudonym_hex(&keyed(key.identifier_key(), &["text", text]))
}

/// The pseudonym of a contained resource's local id (`contained[].id`, and `#id` in references
/// to it): keyed like the others, so the two stay the same, and the original local id (often a
/// source-system name: `#medication-for-jsmith`) is gone.
pub fn pseudo_local_id(key: &DeidKey, id: &str) -> String {
    pseudonym_hex(&keyed(key.pseudonym_key(), &["#", id]))
}

/// Rewrites a `Reference.reference` (or a Bundle's `fullUrl`, `request.url`,
/// `response.location`) so that it points at the pseudonymized target. What is not a resource
/// type, an id or a numeric version (a base URL with its host, a query's search values, a
/// version id that is text) does not survive.
pub fn rewrite_reference(key: &DeidKey, reference: &str) -> String {
    match Reference::parse(reference) {
        Reference::Contained("") => reference.to_string(),
        Reference::Contained(local) => {
            let mut out = String::with_capacity(1 + PSEUDONYM_HEX);
            out.push('#');
            out.push_str(&pseudo_local_id(key, local));
            out
        }
        Reference::Uuid(uuid) => pseudo_urn_uuid(key, uuid),
        // `[base/]Type?query`: the base (a host) goes, the type stays when it is one.
        Reference::Conditional {
            resource_type,
            query,
            ..
        } if fhirlake_is_resource_type(resource_type) => {
            format!("{resource_type}?{}", rewrite_query(key, query))
        }
        // A Bundle `request.url` of a create: `Patient`.
        Reference::TypeOnly(resource_type) if fhirlake_is_resource_type(resource_type) => {
            reference.to_string()
        }
        // `[base/]Type/id[/_history/vid]`: the Type/id pair (no allocation but the result); the
        // base and a fragment go.
        Reference::Literal(literal)
            if !literal.id.is_empty() && fhirlake_is_resource_type(literal.resource_type) =>
        {
            // A version id is kept when it is a number (a server's counter); text could be
            // anything.
            let version = literal
                .version
                .filter(|vid| !vid.is_empty() && vid.bytes().all(|b| b.is_ascii_digit()));
            let ty = literal.resource_type;
            let hash = keyed(key.pseudonym_key(), &[ty, literal.id]);
            let history = version.map_or(0, |vid| "/_history/".len() + vid.len());
            let mut out = String::with_capacity(ty.len() + 1 + PSEUDONYM_HEX + history);
            out.push_str(ty);
            out.push('/');
            push_hex(&mut out, &hash.as_bytes()[..PSEUDONYM_HEX / 2]);
            if let Some(vid) = version {
                out.push_str("/_history/");
                out.push_str(vid);
            }
            out
        }
        _ => pseudo_text(key, reference),
    }
}

/// The pseudonym of a `urn:uuid:` (a Bundle entry's `fullUrl`): a uuid again, 8-4-4-4-12 hex
/// digits, the first 16 bytes of the keyed hash in groups of 4, 2, 2, 2, 6.
fn pseudo_urn_uuid(key: &DeidKey, uuid: &str) -> String {
    let h = keyed(key.pseudonym_key(), &["urn:uuid", uuid]);
    let bytes = &h.as_bytes()[..16];
    let mut out = String::with_capacity(9 + 36);
    out.push_str("urn:uuid:");
    for (i, group) in [
        &bytes[0..4],
        &bytes[4..6],
        &bytes[6..8],
        &bytes[8..10],
        &bytes[10..16],
    ]
    .into_iter()
    .enumerate()
    {
        if i > 0 {
            out.push('-');
        }
        push_hex(&mut out, group);
    }
    out
}

fn fhirlake_is_resource_type(name: &str) -> bool {
    fhirlake_fhir::types::is_resource_type(name)
}

/// Rewrites the search parameters of a conditional reference: `identifier=system|value` keeps the
/// system and pseudonymizes the value exactly as `Identifier.value` is, so it still matches;
/// every other parameter value is replaced by a pseudonym (it may be a name or a birth date).
fn rewrite_query(key: &DeidKey, query: &str) -> String {
    query
        .split('&')
        .map(|param| match param.split_once('=') {
            Some(("identifier", value)) => {
                let value = percent_decode(value);
                match value.split_once('|') {
                    Some((system, v)) if crate::vocabulary::is_known_system(system) => {
                        format!("identifier={system}|{}", pseudo_identifier(key, system, v))
                    }
                    // A hospital's own system names the hospital: only the value's pseudonym.
                    Some((system, v)) => {
                        format!("identifier={}", pseudo_identifier(key, system, v))
                    }
                    None => format!("identifier={}", pseudo_identifier(key, "", &value)),
                }
            }
            Some((name, value)) => format!("{name}={}", pseudo_text(key, value)),
            None => pseudo_text(key, param),
        })
        .collect::<Vec<_>>()
        .join("&")
}

/// The anonymizer's `cryptoHash`: HMAC-SHA256 with the configuration's key, lowercase hex.
pub fn hmac_hex(key: &str, value: &str) -> String {
    if value.is_empty() {
        return String::new();
    }
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(key.as_bytes()) else {
        return String::new();
    };
    mac.update(value.as_bytes());
    hex_encode(&mac.finalize().into_bytes())
}

/// The anonymizer's reference hashing: only the id part is hashed, the rest is kept.
pub fn hmac_reference(key: &str, reference: &str) -> String {
    if let Some(local) = reference.strip_prefix('#') {
        return if local.is_empty() {
            reference.to_string()
        } else {
            format!("#{}", hmac_hex(key, local))
        };
    }
    for prefix in ["urn:uuid:", "urn:oid:"] {
        if let Some(rest) = reference.strip_prefix(prefix) {
            return format!("{prefix}{}", hmac_hex(key, rest));
        }
    }
    let segments: Vec<&str> = reference.split('/').collect();
    let history = segments.len() >= 4 && segments[segments.len() - 2] == "_history";
    let end = if history {
        segments.len() - 2
    } else {
        segments.len()
    };
    if end >= 2 && !segments[end - 1].is_empty() {
        let ty = segments[end - 2];
        if ty.chars().next().is_some_and(char::is_uppercase)
            && ty.chars().all(char::is_alphanumeric)
        {
            let mut parts: Vec<String> = segments.iter().map(|s| s.to_string()).collect();
            parts[end - 1] = hmac_hex(key, segments[end - 1]);
            return parts.join("/");
        }
    }
    hmac_hex(key, reference)
}

#[cfg(test)]
mod tests {
    use super::*;
    use fhirlake_fhir::compartment::patient_id_in;

    fn key(byte: u8) -> DeidKey {
        DeidKey::from_bytes(&[byte; 32], "test").unwrap()
    }

    #[test]
    fn pseudonyms_are_valid_ids_and_keyed() {
        let p = pseudo_id(&key(1), "Patient", "123");
        assert_eq!(p.len(), 32);
        assert!(p.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_eq!(p, pseudo_id(&key(1), "Patient", "123"));
        assert_ne!(p, pseudo_id(&key(2), "Patient", "123"));
        assert_ne!(p, pseudo_id(&key(1), "Observation", "123"));
    }

    #[test]
    fn every_reference_form_is_rewritten_consistently() {
        let k = key(7);
        let p = pseudo_id(&k, "Patient", "123");
        assert_eq!(rewrite_reference(&k, "Patient/123"), format!("Patient/{p}"));
        assert_eq!(
            rewrite_reference(&k, "https://ehr.example.org/fhir/Patient/123"),
            format!("Patient/{p}")
        );
        assert_eq!(
            rewrite_reference(&k, "Patient/123/_history/4"),
            format!("Patient/{p}/_history/4")
        );
        assert_eq!(
            rewrite_reference(&k, "#med1"),
            format!("#{}", pseudo_local_id(&k, "med1"))
        );
        assert_eq!(rewrite_reference(&k, "#"), "#");
        // Text version ids and the hosts of conditional references do not survive.
        assert_eq!(
            rewrite_reference(&k, "Patient/123/_history/jsmith-edit"),
            format!("Patient/{p}")
        );
        let c = rewrite_reference(&k, "https://ehr.stmarys.example/fhir/Patient?name=Smith");
        assert!(
            c.starts_with("Patient?") && !c.contains("stmarys") && !c.contains("Smith"),
            "{c}"
        );
        let c = rewrite_reference(
            &k,
            "Patient?identifier=https://ehr.stmarys.example/mrn|mrn-jsmith",
        );
        assert!(!c.contains("stmarys") && !c.contains("jsmith"), "{c}");
        assert_eq!(rewrite_reference(&k, "Patient"), "Patient");
        let c = rewrite_reference(&k, "Jsmith?x=1");
        assert!(!c.contains("Jsmith"), "{c}");
        // The compartment of every form is the same patient.
        for r in [
            "Patient/123",
            "Patient/123/_history/2",
            "https://ehr.example.org/fhir/Patient/123",
            "https://ehr.example.org/fhir/Patient/123/_history/2",
        ] {
            assert_eq!(patient_id_in(r), Some("123"), "{r}");
        }
        assert_eq!(patient_id_in("urn:uuid:abc"), Some("abc"));
        assert_eq!(patient_id_in("Patient?identifier=x|1"), None);
        assert_eq!(patient_id_in("Group/123"), None);
        let npi = "9999993494";
        let r = rewrite_reference(
            &k,
            &format!("Practitioner?identifier=http://hl7.org/fhir/sid/us-npi|{npi}"),
        );
        assert!(!r.contains(npi), "{r}");
        assert_eq!(
            r,
            format!(
                "Practitioner?identifier=http://hl7.org/fhir/sid/us-npi|{}",
                pseudo_identifier(&k, "http://hl7.org/fhir/sid/us-npi", npi)
            )
        );
        let u = rewrite_reference(&k, "urn:uuid:c757873d-ec9a-4326-a141-556f43239520");
        assert!(u.starts_with("urn:uuid:") && !u.contains("c757873d"));
        let odd = rewrite_reference(&k, "not a reference");
        assert!(!odd.contains("reference"));
    }

    #[test]
    fn fast_paths_match_the_plain_forms() {
        let k = key(7);
        let long = "x".repeat(300);
        for (ty, id) in [("Patient", "123"), ("", ""), ("Observation", long.as_str())] {
            let mut hasher = blake3::Hasher::new_keyed(k.pseudonym_key());
            hasher.update(ty.as_bytes());
            hasher.update(&[0]);
            hasher.update(id.as_bytes());
            let want = hasher.finalize().to_hex()[..PSEUDONYM_HEX].to_string();
            assert_eq!(pseudo_id(&k, ty, id), want);
        }
        let h = keyed(k.pseudonym_key(), &["urn:uuid", "c757873d"]).to_hex();
        assert_eq!(
            rewrite_reference(&k, "urn:uuid:c757873d"),
            format!(
                "urn:uuid:{}-{}-{}-{}-{}",
                &h[0..8],
                &h[8..12],
                &h[12..16],
                &h[16..20],
                &h[20..32]
            )
        );
        let p = pseudo_id(&k, "Patient", "123");
        for (reference, want) in [
            ("Patient/123/_history/4", format!("Patient/{p}/_history/4")),
            ("/_history/4", pseudo_text(&k, "/_history/4")),
            (
                "Patient/123/_history/4/x",
                pseudo_text(&k, "Patient/123/_history/4/x"),
            ),
            (
                "a/_history/_history/4",
                pseudo_text(&k, "a/_history/_history/4"),
            ),
            (
                "http://x/fhir/Patient/123/_history/_history/4",
                pseudo_text(&k, "http://x/fhir/Patient/123/_history/_history/4"),
            ),
        ] {
            assert_eq!(rewrite_reference(&k, reference), want, "{reference}");
        }
    }

    #[test]
    fn hmac_matches_the_anonymizer_vectors() {
        assert_eq!(
            hmac_hex("123", "abc"),
            "8f16771f9f8851b26f4d460fa17de93e2711c7e51337cb8a608a0f81e1c1b6ae"
        );
        assert_eq!(hmac_hex("123", ""), "");
        assert_eq!(
            hmac_reference("123", "Patient/example"),
            "Patient/698d54f0494528a759f19c8e87a9f99e75a5881b9267ee3926bcf62c992d84ba"
        );
        assert_eq!(hmac_reference("123", "#"), "#");
    }
}
