//! `fhirlake deid purge` end to end: a policy that leaks a field, the fix, the purge; afterwards
//! the leaked values are in no file of the lake (data files, Delta log, checkpoints), older
//! versions no longer return them, and rows, pseudonyms, joins and views are as before.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use fhirlake_tests::*;

const CONDITIONS: &str = "10.Condition.ndjson.gz";

/// The planted value of name `n` of patient `i`: unique, so a match anywhere is this leak.
fn planted(i: usize, n: usize) -> String {
    format!("Purgeleak{i:03}n{n}Zq")
}

/// The sample's patients with every `name.family` replaced by a planted value; returns the file
/// and the planted values.
fn planted_patients(dir: &Path) -> (PathBuf, Vec<String>) {
    let mut lines = Vec::new();
    let mut values = Vec::new();
    for (i, line) in sample_lines("36.Patient.ndjson.gz").iter().enumerate() {
        let mut patient: serde_json::Value = serde_json::from_str(line).unwrap();
        for (n, name) in patient["name"]
            .as_array_mut()
            .expect("sample patients have names")
            .iter_mut()
            .enumerate()
        {
            name["family"] = serde_json::Value::from(planted(i, n));
            values.push(planted(i, n));
        }
        lines.push(serde_json::to_string(&patient).unwrap());
    }
    let path = dir.join("patients.ndjson");
    std::fs::write(&path, lines.join("\n") + "\n").unwrap();
    (path, values)
}

/// safe-harbor with one extra rule in front that keeps `Patient.name.family`: the policy mistake
/// the purge repairs.
fn leaky_policy(dir: &Path) -> PathBuf {
    let text = fhirlake_deid::policy::builtin_text("safe-harbor").expect("built-in profile");
    let first_rule = text.find("[[rules]]").expect("the profile has rules");
    let text = format!(
        "{}[[rules]]\npath = \"Patient.name.family\"\nmethod = \"keep\"\n\n{}",
        &text[..first_rule],
        &text[first_rule..]
    )
    .replacen("name = \"safe-harbor\"", "name = \"leaky\"", 1);
    let path = dir.join("leaky.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// A custom view with the family name as a column: the leak also reaches a view table (and, where
/// the lake keeps column statistics for view columns, the `add` statistics in the Delta log).
const FAMILY_VIEW: &str = r#"{"resourceType": "ViewDefinition", "name": "patient_family",
  "resource": "Patient", "status": "active",
  "select": [{"column": [{"name": "id", "path": "id"}, {"name": "family", "path": "name.family.first()"}]}]}"#;

/// Ingests the planted patients and the sample's conditions with the leaky policy into `L`, with
/// the family view added.
fn leaky_lake(dir: &Path) -> Vec<String> {
    let (patients, values) = planted_patients(dir);
    let policy = leaky_policy(dir);
    let conditions = sample_dir().join(CONDITIONS);
    let output = run(keyed(dir).args([
        "ingest",
        "--lake",
        "L",
        "-q",
        "--policy",
        policy.to_str().unwrap(),
        patients.to_str().unwrap(),
        conditions.to_str().unwrap(),
    ]));
    assert_code(&output, 0);
    let view = dir.join("patient_family.json");
    std::fs::write(&view, FAMILY_VIEW).unwrap();
    assert_code(
        &run(fhirlake(dir).args(["view", "add", view.to_str().unwrap(), "--lake", "L"])),
        0,
    );
    values
}

/// Versions of the Delta log entries of a table folder (commits, checkpoints, checksums).
fn log_versions(table_dir: &Path) -> Vec<u64> {
    let mut versions: Vec<u64> = std::fs::read_dir(table_dir.join("_delta_log"))
        .unwrap()
        .filter_map(|e| {
            let name = e.unwrap().file_name().to_string_lossy().into_owned();
            name.get(..20).and_then(|digits| digits.parse().ok())
        })
        .collect();
    versions.sort();
    versions.dedup();
    versions
}

/// Every file under `root` with its text: the bytes as they are (Delta log JSON, Parquet footers
/// and page headers) and, for Parquet files (data files and checkpoints), every value decoded.
fn lake_texts(root: &Path) -> BTreeMap<PathBuf, String> {
    let mut texts = BTreeMap::new();
    let mut folders = vec![root.to_path_buf()];
    while let Some(folder) = folders.pop() {
        for entry in std::fs::read_dir(&folder).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                folders.push(path);
                continue;
            }
            let bytes = std::fs::read(&path).unwrap();
            let mut content = String::from_utf8_lossy(&bytes).into_owned();
            if path.extension().is_some_and(|e| e == "parquet") {
                content.push('\n');
                content.push_str(&parquet_values(&bytes));
            }
            texts.insert(path, content);
        }
    }
    texts
}

/// Every value of a Parquet file, as NDJSON.
fn parquet_values(bytes: &[u8]) -> String {
    let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(
        bytes::Bytes::copy_from_slice(bytes),
    )
    .expect("a Parquet file")
    .build()
    .expect("a Parquet reader");
    let mut writer = arrow::json::LineDelimitedWriter::new(Vec::new());
    for batch in reader {
        writer.write(&batch.expect("a record batch")).expect("JSON");
    }
    writer.finish().expect("JSON");
    String::from_utf8(writer.into_inner()).expect("UTF-8 JSON")
}

/// The files of the lake that hold any of `values`, with the first value found.
fn files_with(root: &Path, values: &[String]) -> Vec<(PathBuf, String)> {
    lake_texts(root)
        .into_iter()
        .filter_map(|(path, text)| {
            values
                .iter()
                .find(|v| text.contains(v.as_str()))
                .map(|v| (path, v.clone()))
        })
        .collect()
}

/// Path and size of every file under `root`.
fn listing(root: &Path) -> BTreeMap<PathBuf, usize> {
    lake_texts(root)
        .into_keys()
        .map(|path| {
            let size = std::fs::metadata(&path).unwrap().len() as usize;
            (path, size)
        })
        .collect()
}

fn table_version(cwd: &Path, table: &str) -> i64 {
    let output = run(fhirlake(cwd).args(["tables", "--lake", "L", "--format", "ndjson"]));
    assert_code(&output, 0);
    text(&output.stdout)
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .find(|t| t["table"] == table)
        .and_then(|t| t["version"].as_i64())
        .unwrap_or_else(|| panic!("no table {table}"))
}

fn purge(cwd: &Path, extra: &[&str]) -> std::process::Output {
    run(fhirlake(cwd)
        .args(["deid", "purge", "--lake", "L"])
        .args(extra))
}

/// Pseudonymized keys and the joins between them: what a purge must leave exactly as it was.
fn keys_and_joins(cwd: &Path) -> Vec<serde_json::Value> {
    let mut facts = sql(cwd, "L", "SELECT id FROM raw.patient ORDER BY id");
    facts.extend(sql(
        cwd,
        "L",
        "SELECT id, patient_id FROM raw.condition ORDER BY id",
    ));
    facts.extend(sql(
        cwd,
        "L",
        "SELECT count(*) AS joined FROM raw.condition c JOIN raw.patient p ON c.patient_id = p.id",
    ));
    facts.extend(sql(
        cwd,
        "L",
        "SELECT count(*) AS view_joined FROM condition c JOIN patient p ON c.patient_id = p.id",
    ));
    facts.extend(sql(
        cwd,
        "L",
        "SELECT id, gender, birth_year FROM patient ORDER BY id",
    ));
    facts
}

#[test]
fn purge_removes_a_leaked_value_from_every_file_and_every_version() {
    let dir = tempfile::tempdir().unwrap();
    let cwd = dir.path();
    let lake = cwd.join("L");
    let values = leaky_lake(cwd);

    // The mistake is real: the planted names are in the table and in its files.
    let leaked = sql_count(
        cwd,
        "L",
        "SELECT count(*) FROM raw.patient WHERE resource LIKE '%Purgeleak%'",
    );
    assert_eq!(leaked, 100);
    assert!(!files_with(&lake, &values).is_empty());
    assert_eq!(
        sql_count(
            cwd,
            "L",
            "SELECT count(*) FROM patient_family WHERE family LIKE 'Purgeleak%'"
        ),
        100
    );
    let old_version = table_version(cwd, "raw.patient");
    let rows_before = raw_table_rows(cwd, "L");
    let facts_before = keys_and_joins(cwd);
    let patient_rows = sql_count(cwd, "L", "SELECT count(*) FROM patient");

    // The fix is the profile without the extra rule.
    let output = purge(cwd, &["--policy", "safe-harbor"]);
    assert_code(&output, 0);
    let stdout = text(&output.stdout);
    assert!(
        stdout.contains("raw.patient: 100 rows read, 100 rewritten, 0 removed"),
        "{stdout}"
    );
    assert!(stdout.contains("raw.condition: "), "{stdout}");
    assert!(stdout.contains("history removed"), "{stdout}");
    assert!(values.iter().all(|v| !stdout.contains(v.as_str())));

    // Gone from every file: data files, Delta log commits, checkpoints, statistics.
    let still = files_with(&lake, &values);
    assert!(still.is_empty(), "the leaked value is still in {still:?}");
    for table in [
        "raw/patient",
        "raw/condition",
        "views/patient",
        "views/patient_family",
    ] {
        let versions = log_versions(&lake.join(table));
        assert_eq!(
            versions.len(),
            1,
            "{table}: the log keeps versions {versions:?}"
        );
    }
    assert_eq!(
        sql_count(
            cwd,
            "L",
            "SELECT count(*) FROM patient_family WHERE family IS NOT NULL"
        ),
        0
    );

    // The version that held it cannot be read any more (or no longer holds it).
    let output = run(fhirlake(cwd).args([
        "sql",
        "--lake",
        "L",
        "--format",
        "ndjson",
        "--as-of",
        &old_version.to_string(),
        "SELECT resource FROM raw.patient",
    ]));
    let answer = format!("{}{}", text(&output.stdout), text(&output.stderr));
    assert!(
        values.iter().all(|v| !answer.contains(v.as_str())),
        "--as-of {old_version} still returns the leaked value"
    );
    // It says so plainly: no delta-rs error, no ERROR log line, no storage path of the lake.
    assert_code(&output, 2);
    let stderr = text(&output.stderr);
    let plain = |stderr: &str| {
        !stderr.contains("ERROR")
            && !stderr.contains("Delta table")
            && !stderr.contains("log segment")
            && !stderr.contains(lake.to_str().unwrap())
    };
    assert!(
        stderr.contains(&format!(
            ": version {old_version} is no longer available (the oldest is "
        )) && stderr.contains(": history was purged)")
            && stderr.starts_with("error: table ")
            && plain(&stderr),
        "{stderr}"
    );
    // The same for an instant before the oldest version left.
    let output = run(fhirlake(cwd).args([
        "sql",
        "--lake",
        "L",
        "--as-of",
        "2000-01-01T00:00:00Z",
        "SELECT count(*) FROM raw.patient",
    ]));
    assert_code(&output, 2);
    let stderr = text(&output.stderr);
    assert!(
        stderr
            .contains(": 2000-01-01T00:00:00+00:00 is no longer available (the oldest version is ")
            && stderr.contains(": history was purged)")
            && plain(&stderr),
        "{stderr}"
    );

    // Nothing else changed: rows, pseudonyms, joins, views.
    assert_eq!(raw_table_rows(cwd, "L"), rows_before);
    assert_eq!(keys_and_joins(cwd), facts_before);
    assert_eq!(
        sql_count(cwd, "L", "SELECT count(*) FROM patient"),
        patient_rows
    );
    assert_eq!(
        sql_count(
            cwd,
            "L",
            "SELECT count(*) FROM raw.patient WHERE resource LIKE '%Purgeleak%'"
        ),
        0
    );

    // The purge is recorded; the current version reads normally, history works.
    let runs = sql(
        cwd,
        "L",
        "SELECT policy_name, read, updated, deleted FROM lake.runs WHERE status = 'purged'",
    );
    assert_eq!(runs.len(), 1, "{runs:?}");
    assert_eq!(runs[0]["policy_name"], "safe-harbor");
    assert_eq!(
        runs[0]["updated"].as_i64(),
        Some(100 + changed_conditions(&stdout))
    );
    assert_eq!(runs[0]["deleted"], 0);
    let now = table_version(cwd, "raw.patient");
    assert_eq!(
        sql(cwd, "L", "SELECT count(*) AS n FROM raw.patient"),
        vec![serde_json::json!({"n": 100})]
    );
    let output = run(fhirlake(cwd).args([
        "sql",
        "--lake",
        "L",
        "--as-of",
        &now.to_string(),
        "--format",
        "ndjson",
        "SELECT count(*) AS n FROM raw.patient",
    ]));
    assert_code(&output, 0);
    assert_eq!(text(&output.stdout), "{\"n\":100}\n");
    assert_code(
        &run(fhirlake(cwd).args(["history", "raw.patient", "--lake", "L"])),
        0,
    );

    // The purged lake is what the fixed policy writes: ingesting the same sources with it
    // changes no row.
    let (patients, _) = planted_patients(cwd);
    let conditions = sample_dir().join(CONDITIONS);
    let output = run(keyed(cwd).args([
        "ingest",
        "--lake",
        "L",
        "-q",
        "--policy",
        "safe-harbor",
        patients.to_str().unwrap(),
        conditions.to_str().unwrap(),
    ]));
    assert_code(&output, 0);
    let last = sql(
        cwd,
        "L",
        "SELECT written, updated, deleted FROM lake.runs ORDER BY finished_at DESC LIMIT 1",
    );
    assert_eq!(
        last,
        vec![serde_json::json!({"written": 0, "updated": 0, "deleted": 0})]
    );
    assert!(files_with(&lake, &values).is_empty());
}

/// The number of `raw.condition` rows the purge reports as rewritten.
fn changed_conditions(stdout: &str) -> i64 {
    let line = stdout
        .lines()
        .find(|l| l.starts_with("raw.condition: "))
        .expect("a raw.condition line");
    line.split(", ")
        .nth(1)
        .and_then(|part| part.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{line}"))
}

#[test]
fn dry_run_counts_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let cwd = dir.path();
    let lake = cwd.join("L");
    let values = leaky_lake(cwd);
    let before = listing(&lake);

    let output = purge(
        cwd,
        &["--policy", "safe-harbor", "--type", "Patient", "--dry-run"],
    );
    assert_code(&output, 0);
    let stdout = text(&output.stdout);
    assert!(
        stdout.contains("raw.patient: 100 rows read, 100 would be rewritten, 0 would be removed"),
        "{stdout}"
    );
    assert!(!stdout.contains("raw.condition"), "{stdout}");
    assert!(stdout.contains("nothing was written"), "{stdout}");
    assert_eq!(listing(&lake), before, "a dry run writes nothing");
    assert!(!files_with(&lake, &values).is_empty());
    assert_eq!(
        sql_count(
            cwd,
            "L",
            "SELECT count(*) FROM lake.runs WHERE status = 'purged'"
        ),
        0
    );

    // Refusals: no policy named, a type that is not FHIR, a type the lake does not have.
    let output = purge(cwd, &["--dry-run"]);
    assert_code(&output, 2);
    assert!(text(&output.stderr).contains("--policy is required"));
    let output = purge(cwd, &["--policy", "safe-harbor", "--type", "Patiens"]);
    assert_code(&output, 2);
    assert!(text(&output.stderr).contains("not a FHIR R4 resource type"));
    let output = purge(cwd, &["--policy", "safe-harbor", "--type", "Medication"]);
    assert_code(&output, 2);
    assert!(text(&output.stderr).contains("raw.medication"));
    assert_eq!(listing(&lake), before);
}
