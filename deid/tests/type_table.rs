//! Property tests over the FHIR R4 type table: resources of every R4 resource type, generated
//! from the table (`fhirlake_deid::coverage::generate`: nested datatypes and backbone elements,
//! contained resources, primitive extensions `_x`, extensions inside extensions, Bundles of
//! Bundles), with a unique token in every string-like primitive (`string`, `markdown`, `uri`,
//! `url`, `canonical`, `uuid`, `oid`, `base64Binary`, `xhtml`, `id`, `Resource.id` included).
//! After safe-harbor, no token may survive except in the elements [`KEPT_ON_PURPOSE`] names.
//!
//! Codes are not string-like here: codes come from value sets and are kept on purpose (the views
//! read them), so a token the generator writes into a `code` survives by design and is not
//! checked. Dates are checked by the date tests, not here.
//!
//! Modifier extensions are taken out of the generated instances before de-identification: an
//! unknown one makes safe-harbor drop the whole resource, which would hide every other element
//! from the check. `a_modifier_extension_drops_the_resource` covers them.

use std::collections::BTreeMap;

use fhirlake_deid::coverage::{
    Ask, Choices, EveryElement, Generated, Options, STRING_LIKE_TYPES, Token, generate,
    resource_types, surviving,
};
use fhirlake_deid::{DeidKey, Deidentifier, Disposition, Policy, PolicyEngine};
use fhirlake_fhir::types as fhir_types;
use proptest::prelude::*;
use serde_json::Value;

/// String-like elements safe-harbor keeps as they are, on purpose: `(type, JSON key, reason)`.
/// The type matches its subtypes (`Quantity` covers `Age`, `SimpleQuantity`, ...).
const KEPT_ON_PURPOSE: &[(&str, &str, &str)] = &[
    (
        "Address",
        "state",
        "a state names a population of millions (Safe Harbor keeps it); reviewed in the profile",
    ),
    (
        "Address",
        "country",
        "a country names a population of millions; reviewed in the profile",
    ),
];

fn key() -> DeidKey {
    DeidKey::from_bytes(&[7; 32], "test").expect("a key")
}

fn engine(policy: Policy) -> PolicyEngine {
    PolicyEngine::new(policy, key())
        .with_today(chrono::NaiveDate::from_ymd_opt(2024, 6, 1).expect("a date"))
}

fn safe_harbor() -> PolicyEngine {
    engine(Policy::builtin("safe-harbor").expect("the built-in profile"))
}

/// True when the reviewed list keeps the element a token sits in.
fn kept_on_purpose(token: &Token) -> bool {
    let key = json_key(&token.json_path);
    KEPT_ON_PURPOSE
        .iter()
        .any(|(ty, k, _)| *k == key && fhir_types::is_subtype(&token.owner, ty))
}

/// `Patient.name[0].given[1]` -> `given`.
fn json_key(json_path: &str) -> &str {
    let last = json_path.rsplit('.').next().unwrap_or("");
    last.split('[').next().unwrap_or("")
}

/// `Patient.contact[0].name.given[1]` -> `Patient.contact.name.given`.
fn without_indices(json_path: &str) -> String {
    let mut out = String::with_capacity(json_path.len());
    let mut depth = 0;
    for c in json_path.chars() {
        match c {
            '[' => depth += 1,
            ']' => depth -= 1,
            _ if depth == 0 => out.push(c),
            _ => {}
        }
    }
    out
}

/// Removes every `modifierExtension` (and the tokens in them): see the module doc.
fn without_modifier_extensions(mut generated: Generated) -> Generated {
    fn strip(value: &mut Value) {
        match value {
            Value::Object(map) => {
                map.remove("modifierExtension");
                map.values_mut().for_each(strip);
            }
            Value::Array(items) => items.iter_mut().for_each(strip),
            _ => {}
        }
    }
    strip(&mut generated.resource);
    generated
        .tokens
        .retain(|t| !t.json_path.contains("modifierExtension"));
    generated
}

/// The string-like tokens of `generated` left in its de-identified text, by `owner.key` (with an
/// element path where it was seen), and the disposition.
fn survivors(
    engine: &PolicyEngine,
    generated: &Generated,
) -> (Disposition, BTreeMap<String, String>) {
    let mut resource = generated.resource.clone();
    let disposition = engine
        .deidentify(&mut resource)
        .expect("safe-harbor processes every generated instance");
    let mut left = BTreeMap::new();
    if disposition != Disposition::Keep {
        return (disposition, left);
    }
    let text = resource.to_string();
    for token in surviving(&text, &generated.tokens) {
        if STRING_LIKE_TYPES.contains(&token.type_code) && !kept_on_purpose(token) {
            left.entry(format!("{}.{}", token.owner, json_key(&token.json_path)))
                .or_insert_with(|| without_indices(&token.json_path));
        }
    }
    (disposition, left)
}

fn describe(left: &BTreeMap<String, String>) -> String {
    left.iter()
        .map(|(element, seen)| format!("  {element}  (e.g. {seen})"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Numbers from a proptest tape, in turn (cyclic).
struct Tape {
    numbers: Vec<u32>,
    at: usize,
}

impl Choices for Tape {
    fn pick(&mut self, _ask: Ask, n: usize) -> usize {
        let v = self.numbers[self.at % self.numbers.len()];
        self.at += 1;
        usize::try_from(v).unwrap_or(0) % n.max(1)
    }
}

/// [`EveryElement`], but the first `bundles` nested resources are Bundles (Bundles of Bundles).
struct NestedBundles {
    every: EveryElement,
    bundles: usize,
    bundle_index: usize,
}

impl Choices for NestedBundles {
    fn pick(&mut self, ask: Ask, n: usize) -> usize {
        if ask == Ask::ResourceType && self.bundles > 0 {
            self.bundles -= 1;
            return self.bundle_index;
        }
        self.every.pick(ask, n)
    }

    fn every_choice(&self, ty: &str, depth: usize) -> bool {
        self.every.every_choice(ty, depth)
    }
}

/// The harness finds what survives: a policy that keeps everything keeps every token, one that
/// removes every resource keeps none.
#[test]
fn the_check_sees_surviving_tokens() {
    let keep_all = engine(
        Policy::parse(
            "[defaults]\nelements = \"keep\"\nfree_text = \"keep\"\nextensions = \"keep\"\n\
             modifier_extensions = \"keep\"\nunknown_elements = \"keep\"\n",
            "keep-all",
            "keep-all",
        )
        .expect("a policy"),
    );
    let options = Options::default();
    for rt in ["Patient", "Bundle", "Questionnaire"] {
        let generated =
            without_modifier_extensions(generate(rt, &options, &mut EveryElement::default()));
        let string_like = generated
            .tokens
            .iter()
            .filter(|t| STRING_LIKE_TYPES.contains(&t.type_code) && !kept_on_purpose(t))
            .count();
        let (disposition, left) = survivors(&keep_all, &generated);
        assert_eq!(disposition, Disposition::Keep);
        assert!(
            left.len() > 20 && string_like > left.len(),
            "{rt}: {}",
            left.len()
        );
        // No rule pseudonymizes the id here: it is kept like the rest.
        assert!(left.contains_key(&format!("{rt}.id")), "{rt}: the id");
    }
    let remove_all = engine(
        Policy::parse(
            "[[rules]]\npath = \"Resource\"\nmethod = \"redact\"\n",
            "remove-all",
            "remove-all",
        )
        .expect("a policy"),
    );
    let generated = generate("Patient", &options, &mut EveryElement::default());
    let (_, left) = survivors(&remove_all, &generated);
    assert!(left.is_empty(), "{}", describe(&left));
}

/// An unknown modifier extension anywhere (a contained resource's included) drops the resource.
#[test]
fn a_modifier_extension_drops_the_resource() {
    let engine = safe_harbor();
    let options = Options::default();
    for rt in ["Patient", "Observation", "Bundle"] {
        let generated = generate(rt, &options, &mut EveryElement::default());
        assert!(generated.resource.to_string().contains("modifierExtension"));
        let mut resource = generated.resource.clone();
        let disposition = engine.deidentify(&mut resource).expect("processed");
        assert!(
            matches!(disposition, Disposition::Drop { .. }),
            "{rt}: {disposition:?}"
        );
    }
}

/// Every resource type once with every element (and every choice type near the root), and a
/// Bundle of Bundles of Bundles: deterministic, so each type is covered in every run.
#[test]
fn safe_harbor_leaves_no_token_in_any_resource_type() {
    let engine = safe_harbor();
    let options = Options::default();
    let mut left_by_type: BTreeMap<String, String> = BTreeMap::new();
    let mut all = resource_types()
        .into_iter()
        .map(|rt| {
            (
                rt.to_string(),
                generate(rt, &options, &mut EveryElement::default()),
            )
        })
        .collect::<Vec<_>>();
    let types = resource_types();
    let nested = Options {
        max_depth: 7,
        ..Options::default()
    };
    let mut bundles = NestedBundles {
        every: EveryElement::default(),
        bundles: 2,
        bundle_index: types.iter().position(|t| *t == "Bundle").expect("Bundle"),
    };
    let bundle = generate("Bundle", &nested, &mut bundles);
    assert_eq!(
        bundle.resource["entry"][0]["resource"]["entry"][0]["resource"]["resourceType"],
        "Bundle"
    );
    all.push(("Bundle of Bundles".to_string(), bundle));
    for (name, generated) in all {
        let generated = without_modifier_extensions(generated);
        let (disposition, left) = survivors(&engine, &generated);
        assert_eq!(disposition, Disposition::Keep, "{name}");
        for (element, seen) in left {
            left_by_type.entry(element).or_insert(seen);
        }
    }
    assert!(
        left_by_type.is_empty(),
        "{} string-like elements kept by safe-harbor that KEPT_ON_PURPOSE does not name:\n{}",
        left_by_type.len(),
        describe(&left_by_type)
    );
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, failure_persistence: None, ..ProptestConfig::default() })]

    /// Random valid instances: which elements, how many items, which choice type, which nested
    /// resource types and reference forms all come from the tape.
    #[test]
        fn safe_harbor_leaves_no_token_in_random_resources(
        type_index in 0..146usize,
        numbers in proptest::collection::vec(any::<u32>(), 16..256),
    ) {
        let types = resource_types();
        let rt = types[type_index];
        let options = Options::default();
        let generated = generate(rt, &options, &mut Tape { numbers, at: 0 });
        let generated = without_modifier_extensions(generated);
        let (disposition, left) = survivors(&safe_harbor(), &generated);
        prop_assert_eq!(disposition, Disposition::Keep);
        prop_assert!(left.is_empty(), "{rt}: kept by safe-harbor:\n{}", describe(&left));
    }
}

#[test]
fn the_reviewed_list_names_real_elements() {
    for (ty, key, reason) in KEPT_ON_PURPOSE {
        assert!(
            fhir_types::child(ty, key).is_some(),
            "{ty}.{key} is no element"
        );
        assert!(
            fhir_types::child(ty, key).is_some_and(|c| STRING_LIKE_TYPES.contains(&c.type_code)),
            "{ty}.{key} is not string-like: no need to list it"
        );
        assert!(!reason.is_empty());
    }
}
