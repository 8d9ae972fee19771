//! The whole SQL on FHIR v2 conformance suite (`../shared/conformance/sql-on-fhir-v2/tests`, 22
//! files, 134 tests, the experimental ones included) through the view compiler: every test must
//! pass. A missing suite is a failure, not a skip.

use std::path::PathBuf;

use fhirlake_views::conformance::{report, run_dir};

fn suite_dir() -> PathBuf {
    PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../shared/conformance/sql-on-fhir-v2/tests"
    ))
}

#[test]
fn every_conformance_test_passes() {
    let dir = suite_dir();
    assert!(
        dir.is_dir(),
        "the SQL on FHIR conformance suite is missing: expected {} (shared/ next to the repository)",
        dir.display()
    );
    let outcomes = run_dir(&dir).expect("suite runs");
    assert_eq!(outcomes.len(), 22, "test files");
    let total: usize = outcomes.iter().map(|f| f.tests.len()).sum();
    assert_eq!(total, 134, "tests");
    let failures: Vec<String> = outcomes
        .iter()
        .flat_map(|f| {
            f.tests.iter().filter(|t| !t.passed).map(move |t| {
                format!(
                    "{} / {}: {}",
                    f.file,
                    t.name,
                    t.error.as_deref().unwrap_or("failed")
                )
            })
        })
        .collect();
    assert!(
        failures.is_empty(),
        "{} of {total} conformance tests fail:\n{}",
        failures.len(),
        failures.join("\n")
    );
    // The report has one entry per file and per test, in the official shape.
    let report = report(&outcomes);
    let files = report.as_object().expect("object");
    assert_eq!(files.len(), 22);
    for (file, entry) in files {
        let tests = entry["tests"].as_array().expect("tests array");
        assert!(!tests.is_empty(), "{file}");
        for test in tests {
            assert!(test["name"].is_string());
            assert_eq!(test["result"]["passed"], true);
        }
    }
}
