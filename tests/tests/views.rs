//! End-to-end SQL-on-FHIR views through the CLI: the conformance suite run by an independent
//! harness over `fhirlake view run`, `view test --report`, built-in views materialized at
//! ingest over de-identified data, custom views, and incremental maintenance on upserts and
//! deletes.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use fhirlake_tests::*;
use serde_json::Value;

fn suite_dir() -> PathBuf {
    repo_root().join("../shared/conformance/sql-on-fhir-v2/tests")
}

/// Numbers by value, objects with sorted keys: rows compare as the reference runner does.
fn canonical(value: &Value) -> String {
    match value {
        Value::Number(n) => {
            let f = n.as_f64().unwrap_or(f64::NAN);
            if f.fract() == 0.0 {
                format!("{}", f as i64)
            } else {
                format!("{f}")
            }
        }
        Value::Array(items) => format!(
            "[{}]",
            items.iter().map(canonical).collect::<Vec<_>>().join(",")
        ),
        Value::Object(map) => {
            let mut parts: Vec<String> = map
                .iter()
                .map(|(k, v)| format!("{k:?}:{}", canonical(v)))
                .collect();
            parts.sort();
            format!("{{{}}}", parts.join(","))
        }
        other => other.to_string(),
    }
}

/// Every test of the official suite through `fhirlake view run --format ndjson`, one process per
/// test: the view and the resources go through files, the rows come back as NDJSON and are
/// compared here (unordered multiset, exact keys, explicit nulls, column order where the test
/// asks for it), independently of the library's own conformance runner.
#[test]
fn conformance_suite_through_view_run() {
    let dir = tempfile::tempdir().unwrap();
    let mut files: Vec<PathBuf> = std::fs::read_dir(suite_dir())
        .expect("SQL on FHIR conformance suite next to the repository")
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    files.sort();
    assert_eq!(files.len(), 22);
    let (mut total, mut failures) = (0, Vec::new());
    for file in &files {
        let suite: Value = serde_json::from_str(&std::fs::read_to_string(file).unwrap()).unwrap();
        let resources: Vec<String> = suite["resources"]
            .as_array()
            .unwrap()
            .iter()
            .map(Value::to_string)
            .collect();
        let input = dir.path().join("resources.ndjson");
        std::fs::write(&input, resources.join("\n") + "\n").unwrap();
        for test in suite["tests"].as_array().unwrap() {
            total += 1;
            let title = format!(
                "{} / {}",
                file.file_name().unwrap().to_string_lossy(),
                test["title"].as_str().unwrap()
            );
            let view = dir.path().join("view.json");
            std::fs::write(&view, test["view"].to_string()).unwrap();
            let output = run(fhirlake(dir.path()).args([
                "view",
                "run",
                "--view",
                view.to_str().unwrap(),
                "--format",
                "ndjson",
                input.to_str().unwrap(),
            ]));
            if test["expectError"] == true {
                if code(&output) == 0 {
                    failures.push(format!("{title}: expected an error, exit 0"));
                }
                continue;
            }
            if code(&output) != 0 {
                failures.push(format!(
                    "{title}: exit {}: {}",
                    code(&output),
                    text(&output.stderr)
                ));
                continue;
            }
            let stdout = text(&output.stdout);
            let lines: Vec<&str> = stdout.lines().collect();
            if let Some(columns) = test["expectColumns"].as_array() {
                // Keys in column order (serde_json keeps them sorted, so read the line itself).
                let expected: Vec<&str> = columns.iter().map(|c| c.as_str().unwrap()).collect();
                for line in &lines {
                    let positions: Vec<usize> = expected
                        .iter()
                        .map(|c| line.find(&format!("\"{c}\":")).unwrap_or(usize::MAX))
                        .collect();
                    if positions.windows(2).any(|w| w[0] >= w[1]) {
                        failures.push(format!("{title}: columns out of order in {line}"));
                    }
                }
            }
            let mut got: Vec<String> = lines
                .iter()
                .map(|l| canonical(&serde_json::from_str(l).unwrap()))
                .collect();
            let mut want: Vec<String> = test["expect"]
                .as_array()
                .unwrap()
                .iter()
                .map(canonical)
                .collect();
            got.sort();
            want.sort();
            if got != want {
                failures.push(format!("{title}:\n  want {want:?}\n  got  {got:?}"));
            }
        }
    }
    assert_eq!(total, 134);
    assert!(
        failures.is_empty(),
        "{} of {total} failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn view_test_writes_the_official_report() {
    let dir = tempfile::tempdir().unwrap();
    let report = dir.path().join("test_report.json");
    let output = run(fhirlake(dir.path()).args([
        "view",
        "test",
        suite_dir().to_str().unwrap(),
        "--report",
        report.to_str().unwrap(),
    ]));
    assert_code(&output, 0);
    assert!(text(&output.stdout).contains("134/134 tests passed"));
    let report: Value = serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
    let files = report.as_object().unwrap();
    assert_eq!(files.len(), 22);
    let passed: usize = files
        .values()
        .map(|f| {
            f["tests"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|t| t["result"]["passed"] == true)
                .count()
        })
        .sum();
    assert_eq!(passed, 134);
}

#[test]
fn invalid_views_point_at_the_offending_element() {
    let dir = tempfile::tempdir().unwrap();
    let view = dir.path().join("bad.json");
    std::fs::write(
        &view,
        r#"{"resourceType":"ViewDefinition","resource":"Patient","select":[{"column":[{"name":"id","path":"id"},{"name":"x","path":"name.where("}]}]}"#,
    )
    .unwrap();
    let input = dir.path().join("p.ndjson");
    std::fs::write(&input, "{\"resourceType\":\"Patient\",\"id\":\"p1\"}\n").unwrap();
    let output = run(fhirlake(dir.path()).args([
        "view",
        "run",
        "--view",
        view.to_str().unwrap(),
        input.to_str().unwrap(),
    ]));
    assert_code(&output, 2);
    let stderr = text(&output.stderr);
    assert!(stderr.contains("select[0].column[1].path"), "{stderr}");
}

#[test]
fn collection_errors_name_file_line_and_column_never_values() {
    let dir = tempfile::tempdir().unwrap();
    let view = dir.path().join("names.json");
    std::fs::write(
        &view,
        r#"{"resourceType":"ViewDefinition","resource":"Patient","select":[{"column":[{"name":"id","path":"id"},{"name":"family","path":"name.family"}]}]}"#,
    )
    .unwrap();
    let input = dir.path().join("p.ndjson");
    std::fs::write(
        &input,
        "{\"resourceType\":\"Patient\",\"id\":\"p1\",\"name\":[{\"family\":\"Secretname\"}]}\n\
         {\"resourceType\":\"Patient\",\"id\":\"p2\",\"name\":[{\"family\":\"Hiddenname\"},{\"family\":\"Othername\"}]}\n",
    )
    .unwrap();
    let output = run(fhirlake(dir.path()).args([
        "view",
        "run",
        "--view",
        view.to_str().unwrap(),
        input.to_str().unwrap(),
    ]));
    assert_code(&output, 3);
    let stderr = text(&output.stderr);
    assert!(stderr.contains("p.ndjson:2"), "{stderr}");
    assert!(stderr.contains("column `family`"), "{stderr}");
    assert!(
        !stderr.contains("Hiddenname") && !stderr.contains("Othername"),
        "{stderr}"
    );
    // The good resource's row is still printed.
    assert_eq!(
        text(&output.stdout),
        "{\"id\":\"p1\",\"family\":\"Secretname\"}\n"
    );
}

fn views_by_name(cwd: &Path) -> BTreeMap<String, Value> {
    let output = run(fhirlake(cwd).args(["view", "list", "--lake", "L", "--format", "ndjson"]));
    assert_code(&output, 0);
    text(&output.stdout)
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .map(|v| (v["view"].as_str().unwrap().to_string(), v))
        .collect()
}

/// The acceptance test of the issue: the 100-patient export, de-identified, gives one `patient`
/// row per patient, one `observation` row per Observation, and the README's join runs.
#[test]
fn builtin_views_are_materialized_at_ingest_and_maintained() {
    let dir = tempfile::tempdir().unwrap();
    let export = shared_synthea("bulk-data-server-100-patients");
    let output =
        run(keyed(dir.path()).args(["ingest", "--lake", "L", "-q", export.to_str().unwrap()]));
    assert_code(&output, 0);
    let count = |q: &str| sql_count(dir.path(), "L", q);
    assert_eq!(count("SELECT count(*) FROM patient"), 100);
    assert_eq!(count("SELECT count(*) FROM observation"), 16_315);
    assert_eq!(
        count("SELECT count(*) FROM observation o JOIN patient p ON o.patient_id = p.id"),
        16_315
    );
    assert_eq!(
        count("SELECT count(*) FROM condition c JOIN patient p ON c.patient_id = p.id"),
        count("SELECT count(*) FROM raw.condition")
    );
    // Keys agree with the pseudonymized raw ids.
    assert_eq!(
        count("SELECT count(*) FROM patient v JOIN raw.patient r ON v.id = r.id"),
        100
    );
    // Blood pressure lives in components.
    assert!(count("SELECT count(*) FROM observation_component") > 0);
    let listed = views_by_name(dir.path());
    for name in [
        "patient",
        "encounter",
        "condition",
        "observation",
        "observation_component",
        "medication_request",
        "procedure",
        "immunization",
        "allergy_intolerance",
        "diagnostic_report",
        "claim",
    ] {
        let view = listed
            .get(name)
            .unwrap_or_else(|| panic!("{name} in {listed:?}"));
        assert_eq!(view["materialized"], true, "{name}");
        assert_eq!(view["source"], "builtin");
    }
    // The README's join query.
    let rows = sql(
        dir.path(),
        "L",
        "SELECT p.gender, count(DISTINCT c.id) AS conditions, count(DISTINCT o.id) AS observations \
         FROM patient p JOIN condition c ON c.patient_id = p.id \
         JOIN observation o ON o.patient_id = p.id GROUP BY p.gender ORDER BY p.gender",
    );
    assert_eq!(rows.len(), 2, "{rows:?}");

    // Re-ingesting the same export changes no view.
    let before = count("SELECT count(*) FROM observation");
    let again =
        run(keyed(dir.path()).args(["ingest", "--lake", "L", "-q", export.to_str().unwrap()]));
    assert_code(&again, 0);
    assert_eq!(count("SELECT count(*) FROM observation"), before);
    let history = run(fhirlake(dir.path()).args([
        "history",
        "observation",
        "--lake",
        "L",
        "--format",
        "ndjson",
    ]));
    assert_eq!(
        text(&history.stdout).lines().count(),
        2,
        "create + first build only"
    );

    // A custom view, maintained by later ingests.
    let custom = dir.path().join("bp.json");
    std::fs::write(
        &custom,
        r#"{"resourceType":"ViewDefinition","name":"systolic","resource":"Observation","status":"active",
            "select":[{"column":[{"name":"id","path":"getResourceKey()","type":"id"},
                                 {"name":"patient_id","path":"subject.getReferenceKey(Patient)","type":"id"}]},
                      {"forEach":"component.where(code.coding.code = '8480-6')",
                       "column":[{"name":"value","path":"value.ofType(Quantity).value","type":"decimal"}]}]}"#,
    )
    .unwrap();
    let added =
        run(fhirlake(dir.path()).args(["view", "add", custom.to_str().unwrap(), "--lake", "L"]));
    assert_code(&added, 0);
    let systolic = count("SELECT count(*) FROM systolic");
    assert!(systolic > 0);
    assert_eq!(
        systolic,
        count("SELECT count(*) FROM observation_component WHERE code = '8480-6'")
    );
    assert_eq!(views_by_name(dir.path())["systolic"]["source"], "custom");

    // Deletes through a Bulk Data landing folder remove the patient's rows from every view.
    let patients = sql(
        dir.path(),
        "L",
        "SELECT id FROM patient ORDER BY id LIMIT 1",
    );
    let lake_id = patients[0]["id"].as_str().unwrap().to_string();
    let source_id = {
        // Find the source id whose pseudonym is `lake_id` by de-identifying the sample patients.
        let preview = run(keyed(dir.path()).args([
            "deid",
            "preview",
            export.join("36.Patient.ndjson.gz").to_str().unwrap(),
        ]));
        let lines: Vec<String> = text(&preview.stdout).lines().map(str::to_string).collect();
        let originals = sample_lines("36.Patient.ndjson.gz");
        let index = lines
            .iter()
            .position(|l| serde_json::from_str::<Value>(l).unwrap()["id"] == lake_id.as_str())
            .expect("pseudonym found");
        serde_json::from_str::<Value>(&originals[index]).unwrap()["id"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let delta = dir.path().join("delta");
    std::fs::create_dir(&delta).unwrap();
    let bundle = serde_json::json!({"resourceType": "Bundle", "type": "transaction",
        "entry": [{"request": {"method": "DELETE", "url": format!("Patient/{source_id}")}}]});
    std::fs::write(delta.join("del.ndjson"), format!("{bundle}\n")).unwrap();
    let manifest = serde_json::json!({"transactionTime": "2026-02-01T00:00:00Z",
        "request": "https://x/$export", "requiresAccessToken": false, "output": [],
        "deleted": [{"type": "Bundle", "url": "del.ndjson"}], "error": []});
    std::fs::write(delta.join("manifest.json"), manifest.to_string()).unwrap();
    let output =
        run(keyed(dir.path()).args(["ingest", "--lake", "L", "-q", delta.to_str().unwrap()]));
    assert_code(&output, 0);
    assert_eq!(count("SELECT count(*) FROM patient"), 99);
    assert_eq!(
        count(&format!(
            "SELECT count(*) FROM patient WHERE id = '{lake_id}'"
        )),
        0
    );

    // Drop the custom view; built-ins cannot be dropped.
    assert_code(
        &run(fhirlake(dir.path()).args(["view", "drop", "systolic", "--lake", "L"])),
        0,
    );
    assert!(!views_by_name(dir.path()).contains_key("systolic"));
    assert_code(
        &run(fhirlake(dir.path()).args(["view", "drop", "patient", "--lake", "L"])),
        2,
    );
}

/// An upsert (newer `meta.lastUpdated`) replaces the resource's row in the view; an older version
/// read later does not.
#[test]
fn upserts_replace_view_rows() {
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, gender: &str, updated: &str| {
        let path = dir.path().join(name);
        let line = serde_json::json!({"resourceType": "Patient", "id": "p1", "gender": gender,
            "meta": {"lastUpdated": updated}, "birthDate": "1970-01-01"});
        let other = serde_json::json!({"resourceType": "Patient", "id": "p2", "gender": "female"});
        std::fs::write(&path, format!("{line}\n{other}\n")).unwrap();
        path
    };
    let ingest = |path: &Path| {
        let output = run(fhirlake(dir.path()).args([
            "ingest",
            "--lake",
            "L",
            "--unsafe-no-deid",
            "-q",
            path.to_str().unwrap(),
        ]));
        assert_code(&output, 0);
    };
    ingest(&write("a.ndjson", "male", "2024-01-01T00:00:00Z"));
    let gender = || {
        sql(
            dir.path(),
            "L",
            "SELECT gender, birth_year FROM patient WHERE id = 'p1'",
        )
    };
    assert_eq!(
        gender(),
        vec![serde_json::json!({"gender": "male", "birth_year": 1970})]
    );
    ingest(&write("b.ndjson", "female", "2025-01-01T00:00:00Z"));
    assert_eq!(
        gender(),
        vec![serde_json::json!({"gender": "female", "birth_year": 1970})]
    );
    ingest(&write("c.ndjson", "other", "2023-01-01T00:00:00Z"));
    assert_eq!(
        gender(),
        vec![serde_json::json!({"gender": "female", "birth_year": 1970})]
    );
    assert_eq!(
        sql_count(dir.path(), "L", "SELECT count(*) FROM patient"),
        2
    );
    let history =
        run(fhirlake(dir.path()).args(["history", "patient", "--lake", "L", "--format", "ndjson"]));
    // create, build, one incremental MERGE (the older version changed nothing).
    assert_eq!(
        text(&history.stdout).lines().count(),
        3,
        "{}",
        text(&history.stdout)
    );
}
