//! The one-pass text reader (`ViewBatchBuilder::append_text`) against the general path (tape +
//! evaluator, `ViewBatchBuilder::append`): the same rows, the same errors, for every conformance
//! test, every built-in view over the Synthea export, and generated resource texts (valid and
//! broken).

use std::io::Read as _;
use std::path::Path;
use std::sync::Arc;

use arrow::record_batch::RecordBatch;
use fhirlake_views::builtin::{BUILTIN_VIEWS, builtin_view_text};
use fhirlake_views::{CompiledView, JsonParser, TextPaths, ViewBatchBuilder};
use proptest::prelude::*;

const CONFORMANCE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../shared/conformance/sql-on-fhir-v2/tests"
);
const EXPORT: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../shared/data/synthea/bulk-data-server-100-patients"
);

/// What one resource gave.
#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    Rows(usize),
    /// The view failed on the resource (reasons may name the element differently per path, the
    /// outcome may not).
    RowError,
    NotJson,
}

struct Compared {
    one_pass: RecordBatch,
    general: RecordBatch,
    outcomes: Vec<(Outcome, Outcome)>,
    paths: TextPaths,
}

fn compare<S: AsRef<str>>(view: &Arc<CompiledView>, texts: &[S]) -> Compared {
    let mut text_builder = ViewBatchBuilder::new(view.clone()).with_resource_id_column();
    let mut tree_builder = ViewBatchBuilder::new(view.clone()).with_resource_id_column();
    let mut parser = JsonParser::default();
    let mut outcomes = Vec::new();
    let classify = |result: Result<Result<usize, _>, _>| match result {
        Ok(Ok(rows)) => Outcome::Rows(rows),
        Ok(Err(_)) => Outcome::RowError,
        Err(_) => Outcome::NotJson,
    };
    for text in texts {
        let text = text.as_ref();
        let one_pass = classify(text_builder.append_text(text, &mut parser));
        let general = classify(parser.parse(text, |json| tree_builder.append(json)));
        outcomes.push((one_pass, general));
    }
    Compared {
        one_pass: text_builder.finish().expect("batch"),
        general: tree_builder.finish().expect("batch"),
        outcomes,
        paths: text_builder.text_paths(),
    }
}

fn assert_same(label: &str, compared: &Compared) {
    for (i, (one_pass, general)) in compared.outcomes.iter().enumerate() {
        assert_eq!(one_pass, general, "{label}: resource #{i}");
    }
    assert_eq!(compared.one_pass, compared.general, "{label}: rows differ");
}

#[test]
fn conformance_suite_reads_the_same_in_one_pass() {
    let mut one_pass_views = 0;
    let mut one_pass_resources = 0;
    let mut files: Vec<_> = std::fs::read_dir(CONFORMANCE)
        .expect("conformance suite")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    files.sort();
    for file in files {
        let suite: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&file).expect("read")).expect("json");
        let texts: Vec<String> = suite["resources"]
            .as_array()
            .expect("resources")
            .iter()
            .map(|r| serde_json::to_string(r).expect("text"))
            .collect();
        for test in suite["tests"].as_array().expect("tests") {
            let Ok(view) = CompiledView::compile(&test["view"]) else {
                continue; // an expectError view
            };
            if !view.reads_text_in_one_pass() {
                continue;
            }
            one_pass_views += 1;
            let label = format!("{} / {}", file.display(), test["title"]);
            let compared = compare(&Arc::new(view), &texts);
            assert_same(&label, &compared);
            one_pass_resources += compared.paths.one_pass;
        }
    }
    // Enough of the suite takes the one-pass path for this comparison to mean something.
    assert!(one_pass_views >= 15, "only {one_pass_views} one-pass views");
    assert!(
        one_pass_resources >= 50,
        "only {one_pass_resources} resources read in one pass"
    );
}

fn export_lines(resource_type: &str) -> Vec<String> {
    let mut lines = Vec::new();
    let mut files: Vec<_> = std::fs::read_dir(EXPORT)
        .expect("Synthea export")
        .map(|e| e.expect("entry").path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.ends_with(&format!(".{resource_type}.ndjson.gz")))
        })
        .collect();
    files.sort();
    for file in files {
        let mut text = String::new();
        flate2::read::GzDecoder::new(std::fs::File::open(&file).expect("open"))
            .read_to_string(&mut text)
            .expect("gunzip");
        lines.extend(text.lines().map(str::to_string));
    }
    lines
}

#[test]
fn builtin_views_read_the_same_in_one_pass_on_synthea() {
    assert!(Path::new(EXPORT).is_dir());
    let mut one_pass_views = Vec::new();
    for (name, text) in BUILTIN_VIEWS {
        let view = Arc::new(CompiledView::from_json_text(text).expect("compiles"));
        if !view.reads_text_in_one_pass() {
            continue;
        }
        let lines = export_lines(&view.resource);
        assert!(
            !lines.is_empty(),
            "{name}: no {} in the export",
            view.resource
        );
        let compared = compare(&view, &lines);
        assert_same(name, &compared);
        // Synthea resources are plain FHIR: every one is read in one pass.
        assert_eq!(
            compared.paths,
            TextPaths {
                one_pass: lines.len() as u64,
                general: 0
            },
            "{name}"
        );
        one_pass_views.push(*name);
    }
    eprintln!("built-in views read in one pass: {one_pass_views:?}");
    for expected in [
        "observation",
        "observation_component",
        "condition",
        "encounter",
        "procedure",
        "immunization",
    ] {
        assert!(
            one_pass_views.contains(&expected),
            "{expected} should read in one pass (one-pass views: {one_pass_views:?})"
        );
    }
}

/// Observation-like resource texts: plain ones, ones with every shape the one-pass reader must
/// leave to the general path (arrays where objects are expected, nulls, duplicate keys, choice
/// clashes, escapes, exponents, numbers as text), and broken JSON.
fn string_value() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(r#""final""#.to_string()),
        Just(r#""Patient/p1""#.to_string()),
        Just(r#""Encounter/e1""#.to_string()),
        Just(r#""urn:uuid:u1""#.to_string()),
        Just(r#""http://x/fhir/Patient/p2/_history/3""#.to_string()),
        Just(r#""a\"b\\c""#.to_string()),
        Just(r#""\u00e9""#.to_string()),
        Just(r#""é ü 漢 long enough to take the eight-byte steps""#.to_string()),
        Just(r#""""#.to_string()),
        Just(r#""2020-01-02T03:04:05Z""#.to_string()),
    ]
}

fn number_value() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("1".to_string()),
        Just("-0".to_string()),
        Just("2.50".to_string()),
        Just("1e3".to_string()),
        Just("12345678901234567890".to_string()),
        Just("-7".to_string()),
        Just("0.1".to_string()),
    ]
}

fn scalar_value() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => string_value(),
        2 => number_value(),
        1 => Just("true".to_string()),
        1 => Just("false".to_string()),
        1 => Just("null".to_string()),
    ]
}

fn coding() -> impl Strategy<Value = String> {
    (scalar_value(), scalar_value(), scalar_value(), 0..4usize).prop_map(|(s, c, d, shape)| {
        match shape {
            0 => format!(r#"{{"system":{s},"code":{c},"display":{d}}}"#),
            1 => format!(r#"{{"code":{c}}}"#),
            2 => "null".to_string(),
            _ => format!(r#"{{"display":{d},"code":{c},"code":{s}}}"#),
        }
    })
}

fn codeable_concept() -> impl Strategy<Value = String> {
    (prop::collection::vec(coding(), 0..3), 0..4usize).prop_map(|(codings, shape)| {
        let codings = codings.join(",");
        match shape {
            0 | 1 => format!(r#"{{"coding":[{codings}],"text":"t"}}"#),
            2 => format!(r#"[{{"coding":[{codings}]}},{{"coding":[{codings}]}}]"#),
            _ => "null".to_string(),
        }
    })
}

fn reference() -> impl Strategy<Value = String> {
    (string_value(), 0..5usize).prop_map(|(r, shape)| match shape {
        0 | 1 => format!(r#"{{"reference":{r}}}"#),
        2 => format!(r#"[{{"reference":{r}}},{{"reference":"Patient/p9"}}]"#),
        3 => r.clone(),
        _ => format!(r#"{{"display":"d","reference":{r},"reference":"Patient/p8"}}"#),
    })
}

fn member() -> impl Strategy<Value = String> {
    prop_oneof![
        string_value().prop_map(|v| format!(r#""id":{v}"#)),
        scalar_value().prop_map(|v| format!(r#""status":{v}"#)),
        string_value().prop_map(|v| format!(r#""status":[{v}]"#)),
        string_value().prop_map(|v| format!(r#""statusDate":{v}"#)),
        codeable_concept().prop_map(|v| format!(r#""category":[{v}]"#)),
        codeable_concept().prop_map(|v| format!(r#""code":{v}"#)),
        reference().prop_map(|v| format!(r#""subject":{v}"#)),
        reference().prop_map(|v| format!(r#""encounter":{v}"#)),
        (number_value(), scalar_value())
            .prop_map(|(n, u)| format!(r#""valueQuantity":{{"value":{n},"unit":{u}}}"#)),
        number_value().prop_map(|v| format!(r#""value":{v}"#)),
        codeable_concept().prop_map(|v| format!(r#""valueCodeableConcept":{v}"#)),
        scalar_value().prop_map(|v| format!(r#""valueString":{v}"#)),
        scalar_value().prop_map(|v| format!(r#""valueBoolean":{v}"#)),
        scalar_value().prop_map(|v| format!(r#""effectiveDateTime":{v}"#)),
        string_value().prop_map(|v| format!(r#""effectivePeriod":{{"start":{v}}}"#)),
        string_value().prop_map(|v| format!(r#""effectiveInstant":{v}"#)),
        scalar_value().prop_map(|v| format!(r#""issued":{v}"#)),
        (scalar_value(), coding())
            .prop_map(|(v, c)| format!(r#""note":[{{"text":{v},"x":[[{c}],{{}}]}}]"#)),
        string_value().prop_map(|v| format!(r#""st\"atus":{v}"#)),
        prop::collection::vec(component(), 0..4)
            .prop_map(|items| format!(r#""component":[{}]"#, items.join(","))),
        component().prop_map(|item| format!(r#""component":{item}"#)),
    ]
}

/// A `component` item: code and value as Synthea writes them, or a shape to bail on.
fn component() -> impl Strategy<Value = String> {
    (
        codeable_concept(),
        number_value(),
        scalar_value(),
        0..6usize,
    )
        .prop_map(|(code, value, unit, shape)| match shape {
            0..=2 => {
                format!(r#"{{"code":{code},"valueQuantity":{{"value":{value},"unit":{unit}}}}}"#)
            }
            3 => format!(r#"{{"code":{code},"valueCodeableConcept":{code}}}"#),
            4 => "null".to_string(),
            _ => unit,
        })
}

fn resource_text() -> impl Strategy<Value = String> {
    (
        prop_oneof![
            8 => Just(r#""Observation""#.to_string()),
            1 => Just(r#""Patient""#.to_string()),
            1 => Just("1".to_string()),
        ],
        prop::collection::vec(member(), 0..12),
        0..8usize,
        any::<prop::sample::Index>(),
        prop_oneof![
            Just(""),
            Just(","),
            Just("}"),
            Just("\""),
            Just("x"),
            Just("\t"),
            Just("\u{1}"),
            Just("]"),
        ],
    )
        .prop_map(|(resource_type, members, corrupt, at, byte)| {
            let mut text = format!(r#"{{"resourceType":{resource_type}"#);
            for member in members {
                text.push(',');
                text.push_str(&member);
            }
            text.push('}');
            let at = at.index(text.len() + 1);
            let at = (0..=at)
                .rev()
                .find(|i| text.is_char_boundary(*i))
                .unwrap_or(0);
            match corrupt {
                0 => text.truncate(at),
                1 => text.insert_str(at, byte),
                _ => {}
            }
            text
        })
}

#[test]
fn generated_texts_take_both_paths() {
    // The generator is only useful if it reaches both paths often (and valid rows, and errors).
    use proptest::strategy::ValueTree as _;
    let view = Arc::new(
        CompiledView::from_json_text(builtin_view_text("observation").expect("built-in"))
            .expect("compiles"),
    );
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    let texts: Vec<String> = (0..2000)
        .map(|_| {
            resource_text()
                .new_tree(&mut runner)
                .expect("tree")
                .current()
        })
        .collect();
    let compared = compare(&view, &texts);
    assert_same("generated", &compared);
    let count = |o: Outcome| compared.outcomes.iter().filter(|(a, _)| *a == o).count();
    let (rows, errors, not_json) = (
        count(Outcome::Rows(1)),
        count(Outcome::RowError),
        count(Outcome::NotJson),
    );
    eprintln!(
        "{:?}; rows {rows}, row errors {errors}, not JSON {not_json}",
        compared.paths
    );
    assert!(compared.paths.one_pass >= 200 && compared.paths.general >= 200);
    assert!(rows >= 200 && errors >= 50 && not_json >= 50);

    // The same texts through the `forEach` view: rows per component, none without.
    let components = Arc::new(
        CompiledView::from_json_text(builtin_view_text("observation_component").expect("built-in"))
            .expect("compiles"),
    );
    let compared = compare(&components, &texts);
    assert_same("generated, observation_component", &compared);
    let with_rows = |pick: fn(usize) -> bool| {
        compared
            .outcomes
            .iter()
            .filter(|(a, _)| matches!(a, Outcome::Rows(n) if pick(*n)))
            .count()
    };
    let (none, several) = (with_rows(|n| n == 0), with_rows(|n| n > 1));
    eprintln!(
        "observation_component: {:?}; no rows {none}, several rows {several}",
        compared.paths
    );
    assert!(compared.paths.one_pass >= 200 && none >= 100 && several >= 50);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn generated_observations_read_the_same_in_one_pass(
        texts in prop::collection::vec(resource_text(), 1..6)
    ) {
        for name in ["observation", "observation_component"] {
            let view = Arc::new(
                CompiledView::from_json_text(builtin_view_text(name).expect("built-in"))
                    .expect("compiles"),
            );
            prop_assert!(view.reads_text_in_one_pass());
            let compared = compare(&view, &texts);
            for (i, (one_pass, general)) in compared.outcomes.iter().enumerate() {
                prop_assert_eq!(one_pass, general, "{} text {}: {}", name, i, &texts[i]);
            }
            prop_assert_eq!(compared.one_pass, compared.general, "{}", name);
        }
    }
}
