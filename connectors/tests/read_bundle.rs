//! Bundle and single-resource `.json` reading.

mod common;

use common::*;
use fhirlake_connectors::{FileFormat, SourceItem, read_source_file};
use serde_json::{Value, json};

fn resources(items: &[SourceItem]) -> Vec<(u64, Option<String>, Value)> {
    items
        .iter()
        .filter_map(|i| match i {
            SourceItem::Resource { pos, resource } => {
                Some((pos.line, pos.path.clone(), resource.clone()))
            }
            _ => None,
        })
        .collect()
}

fn write_json(dir: &tempfile::TempDir, name: &str, value: &Value) -> std::path::PathBuf {
    let path = dir.path().join(name);
    std::fs::write(&path, serde_json::to_string_pretty(value).unwrap()).unwrap();
    path
}

#[test]
fn bundle_references_to_full_urls_are_rewritten() {
    let dir = tempfile::tempdir().unwrap();
    // The Encounter comes before the Patient it references: pass 1 collects the map first.
    let bundle = json!({
        "resourceType": "Bundle",
        "type": "collection",
        "entry": [
            {"fullUrl": "urn:uuid:e1", "resource": {
                "resourceType": "Encounter", "id": "enc1",
                "subject": {"reference": "urn:uuid:p1"},
                "participant": [{"individual": {"reference": "urn:uuid:not-in-bundle"}}],
                "serviceProvider": {"reference": "http://example.org/fhir/Organization/o1"}
            }},
            {"fullUrl": "urn:uuid:p1", "resource": {"resourceType": "Patient", "id": "pat1",
                "name": [{"family": "Doe"}]}},
            {"fullUrl": "http://example.org/fhir/Organization/o1",
             "resource": {"resourceType": "Organization", "id": "o1"}},
            {"fullUrl": "urn:uuid:x", "resource": {"resourceType": "Observation", "id": "obs1",
                "hasMember": [{"reference": "urn:uuid:e1"}, {"reference": "urn:uuid:p1"}],
                "note": [{"text": "urn:uuid:p1"}]}}
        ]
    });
    let path = write_json(&dir, "b.json", &bundle);
    let (items, stats) = read_all(&local(&path, FileFormat::Bundle, false));
    assert!(rejects(&items).is_empty(), "{:?}", rejects(&items));
    let res = resources(&items);
    assert_eq!(res.len(), 4);
    assert_eq!(stats.lines, 4);
    assert_eq!(stats.bytes, std::fs::metadata(&path).unwrap().len());
    let enc = &res[0].2;
    assert_eq!(enc["subject"]["reference"], "Patient/pat1");
    assert_eq!(
        enc["participant"][0]["individual"]["reference"],
        "urn:uuid:not-in-bundle"
    );
    assert_eq!(enc["serviceProvider"]["reference"], "Organization/o1");
    let obs = &res[3].2;
    assert_eq!(obs["hasMember"][0]["reference"], "Encounter/enc1");
    assert_eq!(obs["hasMember"][1]["reference"], "Patient/pat1");
    assert_eq!(
        obs["note"][0]["text"], "urn:uuid:p1",
        "only `reference` keys are rewritten"
    );
    for (i, (line, path, _)) in res.iter().enumerate() {
        assert_eq!(
            path.as_deref(),
            Some(format!("Bundle.entry[{i}].resource").as_str())
        );
        assert!(*line > 1);
    }
    assert!(
        res.windows(2).all(|w| w[0].0 < w[1].0),
        "entry lines increase"
    );
    // Each entry starts on the line of its `{`, the pretty-printer puts at four spaces of indent.
    let text = std::fs::read_to_string(&path).unwrap();
    let starts: Vec<u64> = text
        .lines()
        .enumerate()
        .filter(|(_, l)| *l == "    {")
        .map(|(i, _)| i as u64 + 1)
        .collect();
    assert_eq!(res.iter().map(|r| r.0).collect::<Vec<_>>(), starts);
}

#[test]
fn transaction_bundle_with_deletes() {
    let dir = tempfile::tempdir().unwrap();
    let bundle = json!({
        "entry": [
            {"request": {"method": "DELETE", "url": "Patient/123"}},
            {"fullUrl": "urn:uuid:a", "resource": {"resourceType": "Patient", "id": "a"},
             "request": {"method": "PUT", "url": "Patient/a"}},
            {"request": {"method": "DELETE", "url": "Patient?identifier=secret-value"}},
            {"request": {"method": "GET", "url": "Patient/1"}},
            {"resource": "oops"},
            42
        ],
        "type": "transaction",
        "resourceType": "Bundle"
    });
    let path = write_json(&dir, "tx.json", &bundle);
    let (items, stats) = read_all(&local(&path, FileFormat::Bundle, false));
    assert_eq!(stats.lines, 6);
    assert_eq!(items.len(), 6);
    match &items[0] {
        SourceItem::Delete {
            pos,
            resource_type,
            id,
        } => {
            assert_eq!((resource_type.as_str(), id.as_str()), ("Patient", "123"));
            assert_eq!(pos.path.as_deref(), Some("Bundle.entry[0]"));
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(&items[1], SourceItem::Resource { resource, .. } if resource["id"] == "a"));
    let rej = rejects(&items);
    let paths: Vec<_> = rej.iter().map(|r| r.1.clone().unwrap()).collect();
    assert_eq!(
        paths,
        vec![
            "Bundle.entry[2]",
            "Bundle.entry[3]",
            "Bundle.entry[4].resource",
            "Bundle.entry[5]"
        ]
    );
    assert!(rej.iter().all(|r| !r.2.contains("secret")));
}

#[test]
fn single_resource_json_and_gzip() {
    let dir = tempfile::tempdir().unwrap();
    let patient = json!({"resourceType": "Patient", "id": "p", "birthDate": "1970-01-01"});
    let path = write_json(&dir, "p.json", &patient);
    let (items, stats) = read_all(&local(&path, FileFormat::Bundle, false));
    assert_eq!(resources(&items), vec![(1, None, patient.clone())]);
    assert_eq!(stats.lines, 1);

    let path = dir.path().join("b.json.gz");
    let bundle = json!({"resourceType": "Bundle", "entry": [{"resource": patient}]});
    std::fs::write(&path, gzip(bundle.to_string().as_bytes())).unwrap();
    let (items, _) = read_all(&local(&path, FileFormat::Bundle, true));
    assert_eq!(resources(&items).len(), 1);
}

#[test]
fn invalid_json_midway_keeps_earlier_entries() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.json");
    let text = "{\"resourceType\": \"Bundle\", \"entry\": [\n\
        {\"resource\": {\"resourceType\": \"Patient\", \"id\": \"a\"}},\n\
        {\"resource\": {\"resourceType\": \"Patient\", \"id\": \"b\"}},\n\
        {\"resource\": {\"resourceType\": \"Patient\", \"name\": secret-name}}\n\
        ]}";
    std::fs::write(&path, text).unwrap();
    let (items, _) = read_all(&local(&path, FileFormat::Bundle, false));
    let res = resources(&items);
    assert_eq!(res.len(), 2);
    assert_eq!((res[0].0, res[1].0), (2, 3));
    let rej = rejects(&items);
    assert_eq!(rej.len(), 1);
    assert_eq!(rej[0].0, 4);
    assert!(
        rej[0].2.starts_with("invalid JSON at line 4 column "),
        "{}",
        rej[0].2
    );
    assert!(!rej[0].2.contains("secret"));
    assert!(matches!(
        items.last(),
        Some(SourceItem::Reject { raw: None, .. })
    ));
}

#[test]
fn odd_json_files_are_rejected() {
    let dir = tempfile::tempdir().unwrap();
    for (name, text, expect) in [
        ("empty.json", "  \n", "empty file"),
        (
            "arr.json",
            "[1, 2]",
            "top-level JSON value is not an object",
        ),
        (
            "nort.json",
            "{\"id\": \"x\"}",
            "top-level JSON object has no resourceType",
        ),
        (
            "trail.json",
            "{\"resourceType\": \"Patient\"} {}",
            "invalid JSON at line 1 column",
        ),
        (
            "trunc.json",
            "{\"resourceType\": \"Bundle\", \"entry\": [",
            "invalid JSON at line 1 column",
        ),
        (
            "deep.json",
            &format!(
                "{{\"resourceType\":\"Bundle\",\"entry\":[{{\"resource\":{}}}]}}",
                "[".repeat(10_000)
            ),
            "invalid JSON",
        ),
    ] {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        let (items, _) = read_all(&local(&path, FileFormat::Bundle, false));
        let rej = rejects(&items);
        assert_eq!(rej.len(), 1, "{name}: {items:?}");
        assert!(rej[0].2.starts_with(expect), "{name}: {}", rej[0].2);
        assert!(resources(&items).is_empty(), "{name}");
    }
}

#[test]
fn emit_false_stops_bundle_reading() {
    let dir = tempfile::tempdir().unwrap();
    let entries: Vec<Value> = (0..10)
        .map(|i| json!({"resource": {"resourceType": "Patient", "id": format!("p{i}")}}))
        .collect();
    let path = write_json(
        &dir,
        "b.json",
        &json!({"resourceType": "Bundle", "entry": entries}),
    );
    let mut seen = 0;
    let stats = read_source_file(&local(&path, FileFormat::Bundle, false), &mut |_| {
        seen += 1;
        seen < 3
    })
    .unwrap();
    assert_eq!(seen, 3);
    assert_eq!(stats.lines, 3);
}

proptest::proptest! {
    #[test]
    fn arbitrary_json_bytes_never_panic(data in proptest::collection::vec(
        proptest::prop_oneof![
            proptest::strategy::Just(b'{'), proptest::strategy::Just(b'}'),
            proptest::strategy::Just(b'['), proptest::strategy::Just(b']'),
            proptest::strategy::Just(b'"'), proptest::strategy::Just(b':'),
            proptest::strategy::Just(b','), proptest::arbitrary::any::<u8>()
        ], 0..300)) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.json");
        let mut text = b"{\"resourceType\":\"Bundle\",\"entry\":[".to_vec();
        text.extend(&data);
        std::fs::write(&path, &text).unwrap();
        let _ = read_all(&local(&path, FileFormat::Bundle, false));
        std::fs::write(&path, &data).unwrap();
        let _ = read_all(&local(&path, FileFormat::Bundle, false));
    }
}
