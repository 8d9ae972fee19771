//! Runs SQL-on-FHIR v2 conformance test files (the format of the official `tests/*.json`) and
//! writes the official test report (`test_report.json`).
//!
//! Comparison follows the reference runner: rows are an unordered multiset, every row has
//! exactly the expected keys, nulls are explicit, collections compare element by element,
//! numbers compare by value; `expectColumns` checks column order; `expectError` passes when the
//! view fails to compile or to run.

use std::path::Path;
use std::sync::Arc;

use serde_json::{Map, Value};

use super::json::JsonParser;
use super::{CompiledView, ViewBatchBuilder};
use crate::{Error, Result};

/// The outcome of one test.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TestOutcome {
    /// The test's title.
    pub name: String,
    /// Passed?
    pub passed: bool,
    /// Why not.
    pub error: Option<String>,
}

/// The outcomes of one test file.
#[derive(Debug, Clone)]
pub struct FileOutcome {
    /// File name, e.g. `basic.json`.
    pub file: String,
    /// One entry per test, in file order.
    pub tests: Vec<TestOutcome>,
}

/// Runs `view` over `resources`; rows as JSON objects in column order, and the column names.
pub fn run_view(view: Arc<CompiledView>, resources: &[Value]) -> Result<(Vec<String>, Vec<Value>)> {
    let columns: Vec<String> = view.columns.iter().map(|c| c.name.clone()).collect();
    let mut builder = ViewBatchBuilder::new(view.clone());
    let mut parser = JsonParser::default();
    for (i, resource) in resources.iter().enumerate() {
        let location = format!("resource #{}", i + 1);
        // As ingest reads resources: from text, in one pass when the view is flat.
        let text = serde_json::to_string(resource)
            .map_err(|e| Error::TestSuite(format!("{location}: {e}")))?;
        builder
            .append_text(&text, &mut parser)
            .map_err(|e| Error::TestSuite(format!("{location}: {e}")))?
            .map_err(|e| Error::ViewRow {
                view: view.label().to_string(),
                resource_type: resource
                    .get("resourceType")
                    .and_then(Value::as_str)
                    .unwrap_or("?")
                    .to_string(),
                location: location.clone(),
                element: e.element,
                reason: e.reason,
            })?;
    }
    let batch = builder.finish()?;
    let rows = crate::ndjson_rows(&batch)?
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .map(|line| {
            serde_json::from_slice(line)
                .map_err(|e| Error::TestSuite(format!("re-reading rows as JSON: {e}")))
        })
        .collect::<Result<Vec<Value>>>()?;
    Ok((columns, rows))
}

/// Numbers by value (`5` = `5.0`), so the comparison does not depend on number formatting.
fn canonical(value: &Value) -> String {
    match value {
        Value::Number(n) => match n.as_f64() {
            Some(f) if f.fract() == 0.0 && f.abs() < 1e15 => format!("{}", f as i64),
            Some(f) => format!("{f}"),
            None => n.to_string(),
        },
        Value::Array(items) => {
            let parts: Vec<String> = items.iter().map(canonical).collect();
            format!("[{}]", parts.join(","))
        }
        Value::Object(map) => {
            let mut parts: Vec<String> = map
                .iter()
                .map(|(k, v)| format!("{}:{}", Value::String(k.clone()), canonical(v)))
                .collect();
            parts.sort();
            format!("{{{}}}", parts.join(","))
        }
        other => other.to_string(),
    }
}

/// Runs one test of a file against its resources.
pub fn run_test(test: &Value, resources: &[Value]) -> TestOutcome {
    let name = test
        .get("title")
        .and_then(Value::as_str)
        .unwrap_or("(untitled)")
        .to_string();
    let fail = |error: String| TestOutcome {
        name: name.clone(),
        passed: false,
        error: Some(error),
    };
    let expect_error = test.get("expectError").and_then(Value::as_bool) == Some(true);
    let result = test
        .get("view")
        .ok_or_else(|| Error::TestSuite("test has no view".into()))
        .and_then(CompiledView::compile)
        .and_then(|view| run_view(Arc::new(view), resources));
    let (columns, rows) = match (result, expect_error) {
        (Err(_), true) => {
            return TestOutcome {
                name,
                passed: true,
                error: None,
            };
        }
        (Ok(_), true) => return fail("expected an error, the view ran".into()),
        (Err(e), false) => return fail(e.to_string()),
        (Ok(result), false) => result,
    };
    if let Some(expected) = test.get("expectColumns").and_then(Value::as_array) {
        let expected: Vec<&str> = expected.iter().filter_map(Value::as_str).collect();
        if expected != columns {
            return fail(format!("expected columns {expected:?}, got {columns:?}"));
        }
    }
    if let Some(count) = test.get("expectCount").and_then(Value::as_u64)
        && rows.len() as u64 != count
    {
        return fail(format!("expected {count} rows, got {}", rows.len()));
    }
    if let Some(expected) = test.get("expect").and_then(Value::as_array) {
        let mut want: Vec<String> = expected.iter().map(canonical).collect();
        let mut got: Vec<String> = rows.iter().map(canonical).collect();
        want.sort();
        got.sort();
        if want != got {
            let missing: Vec<&String> = want.iter().filter(|w| !got.contains(w)).collect();
            let extra: Vec<&String> = got.iter().filter(|g| !want.contains(g)).collect();
            return fail(format!(
                "expected {} rows, got {}; missing {missing:?}; unexpected {extra:?}",
                want.len(),
                got.len()
            ));
        }
    }
    TestOutcome {
        name,
        passed: true,
        error: None,
    }
}

/// Runs every test of one conformance file.
pub fn run_file(path: &Path) -> Result<FileOutcome> {
    let text = std::fs::read_to_string(path)?;
    let suite: Value = serde_json::from_str(&text)
        .map_err(|e| Error::TestSuite(format!("{}: not a JSON test file: {e}", path.display())))?;
    let resources = suite
        .get("resources")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let tests = suite
        .get("tests")
        .and_then(Value::as_array)
        .ok_or_else(|| Error::TestSuite(format!("{}: no `tests` array", path.display())))?;
    Ok(FileOutcome {
        file: path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
        tests: tests.iter().map(|t| run_test(t, &resources)).collect(),
    })
}

/// Runs every `*.json` test file of a folder, in name order.
pub fn run_dir(dir: &Path) -> Result<Vec<FileOutcome>> {
    let mut files: Vec<_> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    files.sort();
    if files.is_empty() {
        return Err(Error::TestSuite(format!(
            "{}: no *.json test files",
            dir.display()
        )));
    }
    files.iter().map(|f| run_file(f)).collect()
}

/// The official test report: `{ "<file>": { "tests": [ { "name", "result": { "passed", "error"? } } ] } }`.
pub fn report(outcomes: &[FileOutcome]) -> Value {
    let mut report = Map::new();
    for file in outcomes {
        let tests: Vec<Value> = file
            .tests
            .iter()
            .map(|t| {
                let mut result = Map::new();
                result.insert("passed".into(), Value::Bool(t.passed));
                if let Some(error) = &t.error {
                    result.insert("error".into(), Value::String(error.clone()));
                }
                serde_json::json!({ "name": t.name, "result": result })
            })
            .collect();
        report.insert(file.file.clone(), serde_json::json!({ "tests": tests }));
    }
    Value::Object(report)
}
