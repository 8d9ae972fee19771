//! End-to-end ingest tests through the CLI: the acceptance criteria of the foundation issue.

use std::path::Path;

use fhirlake_tests::*;

const OBSERVATIONS: i64 = 16_315;
const RESOURCES: i64 = 38_483;

fn ingest(cwd: &Path, lake: &str, sources: &[&str], extra: &[&str]) -> std::process::Output {
    let mut command = fhirlake(cwd);
    command.args(["ingest", "--lake", lake, "--unsafe-no-deid", "-q"]);
    command.args(extra);
    command.args(sources);
    run(&mut command)
}

fn raw_total(cwd: &Path, lake: &str) -> i64 {
    raw_table_rows(cwd, lake).iter().map(|(_, rows)| rows).sum()
}

#[test]
fn synthea_export_lands_in_19_raw_tables_and_reingest_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let sample = sample_dir();
    let output = ingest(dir.path(), "L", &[sample.to_str().unwrap()], &[]);
    assert_code(&output, 0);
    let summary = text(&output.stdout);
    assert!(summary.contains("38483"), "{summary}");

    let rows = sql(dir.path(), "L", "SELECT count(*) AS n FROM raw.observation");
    assert_eq!(rows, vec![serde_json::json!({"n": OBSERVATIONS})]);
    // The exact CLI contract: keys in column order, one object per line.
    let out = run(fhirlake(dir.path()).args([
        "sql",
        "--lake",
        "L",
        "--format",
        "ndjson",
        "SELECT count(*) AS n FROM raw.observation",
    ]));
    assert_eq!(text(&out.stdout), "{\"n\":16315}\n");

    let tables = run(fhirlake(dir.path()).args(["tables", "--lake", "L", "--format", "csv"]));
    let listing = text(&tables.stdout);
    assert_eq!(
        listing.lines().filter(|l| l.starts_with("raw.")).count(),
        19,
        "{listing}"
    );
    assert!(listing.contains("lake.runs"), "{listing}");
    assert_eq!(raw_total(dir.path(), "L"), RESOURCES);
    assert_eq!(
        sql_count(
            dir.path(),
            "L",
            "SELECT count(*) FROM raw.observation WHERE patient_id IS NULL"
        ),
        0
    );
    assert_eq!(
        sql_count(
            dir.path(),
            "L",
            "SELECT count(*) FROM raw.observation o JOIN raw.patient p ON o.patient_id = p.id"
        ),
        OBSERVATIONS
    );

    // Same files again: every count unchanged, nothing rewritten.
    let again = ingest(dir.path(), "L", &[sample.to_str().unwrap()], &[]);
    assert_code(&again, 0);
    assert_eq!(raw_total(dir.path(), "L"), RESOURCES);
    let runs = sql(
        dir.path(),
        "L",
        "SELECT read, written, updated, unchanged, rejected, status, deidentified, policy_name \
         FROM lake.runs ORDER BY started_at",
    );
    assert_eq!(runs.len(), 2, "{runs:?}");
    assert_eq!(runs[0]["written"], RESOURCES);
    assert_eq!(runs[1]["written"], 0);
    assert_eq!(runs[1]["updated"], 0);
    assert_eq!(runs[1]["unchanged"], RESOURCES);
    assert_eq!(runs[1]["status"], "succeeded");
    assert_eq!(runs[1]["deidentified"], false);
    // Per-type counts are queryable.
    let per_type = sql_count(
        dir.path(),
        "L",
        "SELECT c.read FROM (SELECT unnest(counts) AS c FROM lake.runs) \
         WHERE c.resource_type = 'Observation' LIMIT 1",
    );
    assert_eq!(per_type, OBSERVATIONS);
}

#[test]
fn ingest_refuses_identified_data_without_the_explicit_flag() {
    let dir = tempfile::tempdir().unwrap();
    let sample = sample_dir().join("36.Patient.ndjson.gz");
    let output =
        run(fhirlake(dir.path()).args(["ingest", "--lake", "L", sample.to_str().unwrap()]));
    assert_code(&output, 2);
    assert!(text(&output.stderr).contains("--unsafe-no-deid"));
    assert!(!dir.path().join("L").exists(), "nothing may be written");
}

#[test]
fn corrupted_lines_are_reported_kept_and_counted() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    std::fs::create_dir(&src).unwrap();
    let secret = "Zyxwvut-Secret-Name";
    let mut lines = sample_lines("36.Patient.ndjson.gz");
    let good = lines.len();
    let bad_lines = [
        format!("{{\"resourceType\":\"Patient\",\"id\":\"x1\",\"name\":\"{secret}\""),
        format!("[\"{secret}\"]"),
        format!("{{\"id\":\"x2\",\"name\":\"{secret}\"}}"),
        format!("{{\"resourceType\":\"Patientt\",\"id\":\"x3\",\"note\":\"{secret}\"}}"),
        format!("{{\"resourceType\":\"Patient\",\"name\":\"{secret}\"}}"),
    ];
    for (i, bad) in bad_lines.iter().enumerate() {
        lines.insert(10 + i * 7, bad.clone());
    }
    let mut bytes = lines.join("\n").into_bytes();
    // Invalid UTF-8 inside a string value.
    bytes.extend_from_slice(
        b"\n{\"resourceType\":\"Patient\",\"id\":\"x4\",\"name\":\"\xff\xfe\"}\n",
    );
    std::fs::write(src.join("Patient.ndjson"), &bytes).unwrap();
    std::fs::write(src.join("Empty.ndjson"), b"").unwrap();
    // A gzip stream cut in the middle: the lines before the cut are kept, the cut is reported.
    let conditions = sample_lines("10.Condition.ndjson.gz").join("\n");
    let mut gz = Vec::new();
    {
        use std::io::Write;
        let mut encoder = flate2::write::GzEncoder::new(&mut gz, flate2::Compression::default());
        encoder.write_all(conditions.as_bytes()).unwrap();
        encoder.finish().unwrap();
    }
    std::fs::write(src.join("Condition.ndjson.gz"), &gz[..gz.len() / 2]).unwrap();

    let output = ingest(
        dir.path(),
        "L",
        &[src.to_str().unwrap()],
        &["--landing", "landing"],
    );
    assert_code(&output, 3);
    let stderr = text(&output.stderr);
    let stdout = text(&output.stdout);
    assert!(
        !stderr.contains(secret) && !stdout.contains(secret),
        "PHI in output:\n{stderr}\n{stdout}"
    );
    // An unknown resourceType is not repeated either (it is whatever the line says).
    assert!(!stderr.contains("Patientt"), "{stderr}");
    for reason in [
        "malformed JSON",
        "not a JSON object",
        "missing resourceType",
        "unknown resourceType",
        "missing id",
        "UTF-8",
        "empty file",
        "gzip",
    ] {
        assert!(stderr.contains(reason), "no `{reason}` in:\n{stderr}");
    }
    assert!(
        stderr.contains("Patient.ndjson:11"),
        "file:line in messages:\n{stderr}"
    );

    // Every good line is in the lake.
    assert_eq!(
        sql_count(dir.path(), "L", "SELECT count(*) FROM raw.patient"),
        good as i64
    );
    let conditions_kept = sql_count(dir.path(), "L", "SELECT count(*) FROM raw.condition");
    assert!(
        conditions_kept > 0 && conditions_kept < 639,
        "{conditions_kept}"
    );

    // Every rejected line is kept in the landing zone with file, line and reason.
    let rejected_dir = dir.path().join("landing").join("rejected");
    let files: Vec<_> = std::fs::read_dir(&rejected_dir).unwrap().collect();
    assert_eq!(files.len(), 1);
    let rejected = std::fs::read_to_string(files[0].as_ref().unwrap().path()).unwrap();
    let records: Vec<serde_json::Value> = rejected
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(records.len(), 8, "{rejected}");
    for record in &records {
        assert!(
            record["file"].is_string() && record["line"].is_u64() && record["reason"].is_string()
        );
    }
    let originals: Vec<&str> = records
        .iter()
        .filter_map(|r| r["original"].as_str())
        .collect();
    for bad in &bad_lines {
        assert!(
            originals.contains(&bad.as_str()),
            "original line kept: {bad}"
        );
    }
    assert!(records.iter().any(|r| r["original_base64"].is_string()));

    let runs = sql(dir.path(), "L", "SELECT rejected, status FROM lake.runs");
    assert_eq!(
        runs,
        vec![serde_json::json!({"rejected": 8, "status": "succeeded_with_rejects"})]
    );

    // Over --max-rejects: exit 2, nothing committed.
    let strict = ingest(
        dir.path(),
        "L2",
        &[src.to_str().unwrap()],
        &["--landing", "landing", "--max-rejects", "3"],
    );
    assert_code(&strict, 2);
    assert!(text(&strict.stderr).contains("max-rejects"));
    let tables = run(fhirlake(dir.path()).args(["tables", "--lake", "L2", "--format", "csv"]));
    assert_eq!(
        text(&tables.stdout).trim(),
        "table,rows,version,files,size_bytes"
    );
}

#[test]
fn missing_sources_are_errors_but_do_not_stop_other_sources() {
    let dir = tempfile::tempdir().unwrap();
    let output = ingest(dir.path(), "L", &["no/such/file.ndjson"], &[]);
    assert_code(&output, 2);
    assert!(text(&output.stderr).contains("no/such/file.ndjson"));

    let empty = dir.path().join("empty-dir");
    std::fs::create_dir(&empty).unwrap();
    std::fs::write(empty.join("notes.txt"), "not FHIR").unwrap();
    let patient = sample_dir().join("36.Patient.ndjson.gz");
    let output = ingest(
        dir.path(),
        "L",
        &[
            patient.to_str().unwrap(),
            empty.to_str().unwrap(),
            "missing.ndjson",
        ],
        &[],
    );
    assert_code(&output, 3);
    let stderr = text(&output.stderr);
    assert!(stderr.contains("no FHIR files"), "{stderr}");
    assert!(stderr.contains("missing.ndjson"), "{stderr}");
    assert_eq!(
        sql_count(dir.path(), "L", "SELECT count(*) FROM raw.patient"),
        100
    );
}

#[test]
fn newest_last_updated_wins_and_ties_go_to_the_last_read() {
    let dir = tempfile::tempdir().unwrap();
    let version = |family: &str, updated: &str| {
        format!(
            "{{\"resourceType\":\"Patient\",\"id\":\"p1\",\"meta\":{{\"lastUpdated\":\"{updated}\"}},\"name\":[{{\"family\":\"{family}\"}}]}}"
        )
    };
    // Within one file: the newer one is first, an older one later, a tie last.
    let first = [
        version("Newer", "2024-05-01T00:00:00Z"),
        version("Older", "2024-01-01T00:00:00Z"),
        version("NewerTie", "2024-05-01T00:00:00Z"),
    ]
    .join("\n");
    std::fs::write(dir.path().join("a.ndjson"), first).unwrap();
    assert_code(&ingest(dir.path(), "L", &["a.ndjson"], &[]), 0);
    let family = |dir: &Path| {
        sql(
            dir,
            "L",
            "SELECT json_get_str(resource, 'name', 0, 'family') AS f FROM raw.patient",
        )
    };
    assert_eq!(
        family(dir.path()),
        vec![serde_json::json!({"f": "NewerTie"})]
    );

    // A later run with an older version changes nothing; a newer one replaces it.
    std::fs::write(
        dir.path().join("b.ndjson"),
        version("Stale", "2023-01-01T00:00:00Z"),
    )
    .unwrap();
    assert_code(&ingest(dir.path(), "L", &["b.ndjson"], &[]), 0);
    assert_eq!(
        family(dir.path()),
        vec![serde_json::json!({"f": "NewerTie"})]
    );
    std::fs::write(
        dir.path().join("c.ndjson"),
        version("Newest", "2025-01-01T00:00:00+02:00"),
    )
    .unwrap();
    assert_code(&ingest(dir.path(), "L", &["c.ndjson"], &[]), 0);
    assert_eq!(family(dir.path()), vec![serde_json::json!({"f": "Newest"})]);
    let runs = sql(
        dir.path(),
        "L",
        "SELECT written, updated, unchanged FROM lake.runs ORDER BY started_at",
    );
    assert_eq!(
        runs,
        vec![
            serde_json::json!({"written": 1, "updated": 0, "unchanged": 0}),
            serde_json::json!({"written": 0, "updated": 0, "unchanged": 1}),
            serde_json::json!({"written": 0, "updated": 1, "unchanged": 0}),
        ]
    );
}

#[test]
fn bulk_landing_folder_applies_output_and_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let landing = dir.path().join("export");
    std::fs::create_dir(&landing).unwrap();
    let patients = sample_lines("36.Patient.ndjson.gz");
    let ids: Vec<String> = patients
        .iter()
        .take(2)
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["id"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    write_gz(
        &landing.join("1.Patient.ndjson.gz"),
        patients.join("\n").as_bytes(),
    );
    let manifest = serde_json::json!({
        "transactionTime": "2026-01-01T00:00:00Z",
        "request": "https://fhir.example.org/$export",
        "requiresAccessToken": false,
        "output": [{"type": "Patient", "url": "https://fhir.example.org/files/1.Patient.ndjson", "count": 100}],
        "deleted": [],
        "error": []
    });
    std::fs::write(landing.join("manifest.json"), manifest.to_string()).unwrap();
    assert_code(
        &ingest(dir.path(), "L", &[landing.to_str().unwrap()], &[]),
        0,
    );
    assert_eq!(
        sql_count(dir.path(), "L", "SELECT count(*) FROM raw.patient"),
        100
    );

    // An incremental export: no output, two deletions.
    let delta = dir.path().join("export2");
    std::fs::create_dir(&delta).unwrap();
    let bundle = serde_json::json!({
        "resourceType": "Bundle", "type": "transaction",
        "entry": ids.iter().map(|id| serde_json::json!({"request": {"method": "DELETE", "url": format!("Patient/{id}")}})).collect::<Vec<_>>()
    });
    std::fs::write(delta.join("del.ndjson"), format!("{bundle}\n")).unwrap();
    let manifest = serde_json::json!({
        "transactionTime": "2026-02-01T00:00:00Z",
        "request": "https://fhir.example.org/$export?_since=2026-01-01T00:00:00Z",
        "requiresAccessToken": false,
        "output": [],
        "deleted": [{"type": "Bundle", "url": "del.ndjson"}],
        "error": []
    });
    std::fs::write(delta.join("manifest.json"), manifest.to_string()).unwrap();
    let output = ingest(dir.path(), "L", &[delta.to_str().unwrap()], &[]);
    assert_code(&output, 0);
    assert_eq!(
        sql_count(dir.path(), "L", "SELECT count(*) FROM raw.patient"),
        98
    );
    let deleted = sql_count(
        dir.path(),
        "L",
        "SELECT deleted FROM lake.runs ORDER BY started_at DESC LIMIT 1",
    );
    assert_eq!(deleted, 2);
}

#[test]
fn bundles_with_urn_uuid_references_resolve_to_patients() {
    let dir = tempfile::tempdir().unwrap();
    let patient = "3b1f7a52-6c1e-4b8e-9d55-1f0b2a7c9e01";
    let encounter = "9e2d4c11-0a6b-4f7e-8c3d-5b6a7e8f9012";
    let bundle = serde_json::json!({
        "resourceType": "Bundle", "type": "transaction",
        "entry": [
            {"fullUrl": format!("urn:uuid:{patient}"), "resource": {"resourceType": "Patient", "id": patient, "gender": "female"},
             "request": {"method": "POST", "url": "Patient"}},
            {"fullUrl": format!("urn:uuid:{encounter}"), "resource": {"resourceType": "Encounter", "id": encounter, "status": "finished",
             "subject": {"reference": format!("urn:uuid:{patient}")}}, "request": {"method": "POST", "url": "Encounter"}},
            {"fullUrl": "urn:uuid:0c5d7e8f-1a2b-4c3d-8e9f-a0b1c2d3e4f5", "resource": {"resourceType": "Observation", "id": "0c5d7e8f-1a2b-4c3d-8e9f-a0b1c2d3e4f5",
             "status": "final", "code": {"text": "x"}, "subject": {"reference": format!("urn:uuid:{patient}")},
             "encounter": {"reference": format!("urn:uuid:{encounter}")}}, "request": {"method": "POST", "url": "Observation"}}
        ]
    });
    std::fs::write(
        dir.path().join("bundle.json"),
        serde_json::to_string_pretty(&bundle).unwrap(),
    )
    .unwrap();
    assert_code(&ingest(dir.path(), "L", &["bundle.json"], &[]), 0);
    let rows = sql(
        dir.path(),
        "L",
        "SELECT o.patient_id, json_get_str(o.resource, 'encounter', 'reference') AS enc \
         FROM raw.observation o JOIN raw.patient p ON o.patient_id = p.id",
    );
    assert_eq!(
        rows,
        vec![serde_json::json!({"patient_id": patient, "enc": format!("Encounter/{encounter}")})]
    );
}

#[test]
fn delta_tables_are_readable_by_another_engine_in_a_fresh_process() {
    let dir = tempfile::tempdir().unwrap();
    let sample = sample_dir();
    let files = [
        sample.join("30.Observation.ndjson.gz"),
        sample.join("32.Observation.ndjson.gz"),
    ];
    let sources: Vec<&str> = files.iter().map(|p| p.to_str().unwrap()).collect();
    assert_code(&ingest(dir.path(), "L", &sources, &[]), 0);

    // This test process never wrote the table: open it with delta-rs' own reader and its own
    // DataFusion table provider (not fhirlake's Parquet listing).
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let url = url::Url::from_directory_path(dir.path().join("L/raw/observation")).unwrap();
        let table = deltalake::open_table(url).await.expect("valid Delta log");
        assert_eq!(table.version(), Some(1));
        let ctx = datafusion::prelude::SessionContext::new();
        let provider = table.table_provider().await.expect("provider");
        ctx.register_table("observation", provider).unwrap();
        let batches = ctx
            .sql("SELECT count(*) AS n, count(DISTINCT id) AS ids FROM observation")
            .await
            .unwrap()
            .collect()
            .await
            .unwrap();
        let text = arrow::util::pretty::pretty_format_batches(&batches)
            .unwrap()
            .to_string();
        assert!(text.contains("| 16315 | 16315 |"), "{text}");
    });
    // The log's first commit has protocol and metadata actions, as other engines expect.
    let first = std::fs::read_to_string(
        dir.path()
            .join("L/raw/observation/_delta_log/00000000000000000000.json"),
    )
    .unwrap();
    assert!(first.contains("\"protocol\"") && first.contains("\"metaData\""));
    assert!(first.contains("fhirlake.deid.keyId"));
}

#[test]
fn quickstart_runs_end_to_end() {
    let dir = tempfile::tempdir().unwrap();
    let output = run(fhirlake(dir.path()).args(["quickstart", "-q"]));
    assert_code(&output, 0);
    let stdout = text(&output.stdout);
    for expected in [
        "38483",
        "Patients by gender",
        "Most common conditions",
        "Body Height",
        "female",
    ] {
        assert!(stdout.contains(expected), "no `{expected}` in:\n{stdout}");
    }
    assert_eq!(
        sql_count(dir.path(), "./lake", "SELECT count(*) FROM raw.patient"),
        100
    );
    // The example queries read the built-in views.
    assert_eq!(
        sql_count(dir.path(), "./lake", "SELECT count(*) FROM patient"),
        100
    );
    // De-identified with a key quickstart created, readable only by its owner.
    use std::os::unix::fs::PermissionsExt as _;
    let key = dir.path().join(".fhirlake/deid.key");
    assert_eq!(
        std::fs::metadata(&key).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert!(
        stdout.contains("de-identified with policy safe-harbor"),
        "{stdout}"
    );
    let original: serde_json::Value =
        serde_json::from_str(&sample_lines("36.Patient.ndjson.gz")[0]).unwrap();
    let family = original["name"][0]["family"].as_str().unwrap();
    assert_eq!(
        sql_count(
            dir.path(),
            "./lake",
            &format!("SELECT count(*) FROM raw.patient WHERE resource LIKE '%{family}%'")
        ),
        0
    );
}

#[test]
fn config_file_and_environment_supply_defaults() {
    let dir = tempfile::tempdir().unwrap();
    let patient = sample_dir().join("36.Patient.ndjson.gz");
    std::fs::write(
        dir.path().join("fhirlake.toml"),
        "lake = \"from-config\"\n[ingest]\nunsafe_no_deid = true\n",
    )
    .unwrap();
    let output = run(fhirlake(dir.path()).args(["ingest", "-q", patient.to_str().unwrap()]));
    assert_code(&output, 0);
    assert!(
        dir.path()
            .join("from-config/raw/patient/_delta_log")
            .exists()
    );
    // Environment beats the config file; the command line beats both.
    let output = run(fhirlake(dir.path()).env("FHIRLAKE_LAKE", "from-env").args([
        "ingest",
        "-q",
        patient.to_str().unwrap(),
    ]));
    assert_code(&output, 0);
    assert!(dir.path().join("from-env/raw/patient/_delta_log").exists());
    let output = run(fhirlake(dir.path()).env("FHIRLAKE_LAKE", "from-env").args([
        "tables",
        "--lake",
        "from-config",
        "--format",
        "csv",
    ]));
    assert!(text(&output.stdout).contains("raw.patient,100,"));
    // A typo in the config file is an error, not silently ignored.
    std::fs::write(dir.path().join("fhirlake.toml"), "lakes = \"x\"\n").unwrap();
    let output = run(fhirlake(dir.path()).args(["tables"]));
    assert_code(&output, 2);
    assert!(text(&output.stderr).contains("lakes"));
}

#[test]
fn sql_output_formats_and_broken_pipe() {
    let dir = tempfile::tempdir().unwrap();
    let patient = sample_dir().join("36.Patient.ndjson.gz");
    assert_code(
        &ingest(dir.path(), "L", &[patient.to_str().unwrap()], &[]),
        0,
    );
    let query = "SELECT id, json_get_str(resource, 'gender') AS gender FROM raw.patient ORDER BY id LIMIT 2";
    let format = |f: &str| {
        let output = run(fhirlake(dir.path()).args(["sql", "--lake", "L", "--format", f, query]));
        assert_code(&output, 0);
        output.stdout
    };
    let csv = text(&format("csv"));
    assert!(
        csv.starts_with("id,gender\n") && csv.lines().count() == 3,
        "{csv}"
    );
    let json: serde_json::Value = serde_json::from_slice(&format("json")).unwrap();
    assert_eq!(json.as_array().unwrap().len(), 2);
    let parquet = format("parquet");
    assert!(parquet.starts_with(b"PAR1") && parquet.ends_with(b"PAR1"));
    assert!(text(&format("table")).contains("| id"));
    // Nulls are explicit in ndjson.
    let rows = sql(dir.path(), "L", "SELECT CAST(NULL AS VARCHAR) AS x, 1 AS y");
    assert_eq!(rows, vec![serde_json::json!({"x": null, "y": 1})]);

    // Bad SQL: exit 2 with the planner's message.
    let output =
        run(fhirlake(dir.path()).args(["sql", "--lake", "L", "SELECT nope FROM raw.patient"]));
    assert_code(&output, 2);
    assert!(text(&output.stderr).contains("nope"));

    // A reader that goes away early (`| head -c1`) is not an error.
    let mut child = fhirlake(dir.path())
        .args([
            "sql",
            "--lake",
            "L",
            "--format",
            "csv",
            "SELECT p1.resource FROM raw.patient p1 CROSS JOIN raw.patient p2",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Read;
        let mut stdout = child.stdout.take().unwrap();
        let mut one = [0u8; 1];
        stdout.read_exact(&mut one).unwrap();
    }
    let output = child.wait_with_output().unwrap();
    assert_code(&output, 0);
}

#[test]
fn history_lists_commits_with_run_ids() {
    let dir = tempfile::tempdir().unwrap();
    let patient = sample_dir().join("36.Patient.ndjson.gz");
    assert_code(
        &ingest(dir.path(), "L", &[patient.to_str().unwrap()], &[]),
        0,
    );
    let output = run(fhirlake(dir.path()).args([
        "history",
        "raw.patient",
        "--lake",
        "L",
        "--format",
        "ndjson",
    ]));
    assert_code(&output, 0);
    let commits: Vec<serde_json::Value> = text(&output.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(commits.len(), 2);
    assert_eq!(commits[0]["version"], 1);
    assert_eq!(commits[0]["operation"], "MERGE");
    let run_id = sql(dir.path(), "L", "SELECT run_id FROM lake.runs");
    assert_eq!(commits[0]["run_id"], run_id[0]["run_id"]);
    let output = run(fhirlake(dir.path()).args(["history", "raw.nothing", "--lake", "L"]));
    assert_code(&output, 2);
    assert!(text(&output.stderr).contains("does not exist"));
}

#[test]
fn lines_over_the_size_limit_are_kept_in_the_landing_zone_byte_for_byte() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    std::fs::create_dir(&src).unwrap();
    let mut lines = sample_lines("36.Patient.ndjson.gz");
    let good = lines.len();
    // Every sample line fits under the limit.
    let limit = lines.iter().map(String::len).max().unwrap() + 16;
    // Over the limit: far longer than the limit and the reader's 1 MiB buffer, in multi-byte
    // UTF-8; and just over it, ending with `\r\n`.
    let huge = format!(
        "{{\"resourceType\":\"Patient\",\"id\":\"huge\",\"text\":{{\"div\":\"{}\"}}}}",
        "é\\\"€".repeat(300_000)
    );
    let over = format!(
        "{{\"resourceType\":\"Patient\",\"id\":\"over\",\"note\":\"{}\"}}",
        "x".repeat(limit)
    );
    lines.insert(3, huge.clone());
    lines.insert(8, format!("{over}\r"));
    std::fs::write(src.join("Patient.ndjson"), lines.join("\n")).unwrap();

    let limit_flag = limit.to_string();
    let output = run(fhirlake(dir.path()).args([
        "ingest",
        "--lake",
        "L",
        "--unsafe-no-deid",
        "--landing",
        "landing",
        "--max-line-bytes",
        &limit_flag,
        src.to_str().unwrap(),
    ]));
    assert_code(&output, 3);
    let stderr = text(&output.stderr);
    let stdout = text(&output.stdout);
    let reason = format!("line longer than {limit} bytes");
    for line in ["Patient.ndjson:4", "Patient.ndjson:9"] {
        assert!(
            stderr.contains(line) && stderr.contains(&reason),
            "{line}: {reason} in:\n{stderr}"
        );
    }
    assert!(stdout.contains("2 lines rejected"), "{stdout}");
    // The other lines land.
    assert_eq!(
        sql_count(dir.path(), "L", "SELECT count(*) FROM raw.patient"),
        good as i64
    );
    let runs = sql(dir.path(), "L", "SELECT rejected, status FROM lake.runs");
    assert_eq!(
        runs,
        vec![serde_json::json!({"rejected": 2, "status": "succeeded_with_rejects"})]
    );

    // Both are kept like every other reject, and nothing else is left in the landing zone's
    // rejected folder.
    let rejected_dir = dir.path().join("landing").join("rejected");
    let files: Vec<_> = std::fs::read_dir(&rejected_dir)
        .unwrap()
        .map(|f| f.unwrap().path())
        .collect();
    assert_eq!(files.len(), 1, "{files:?}");
    let rejected = std::fs::read_to_string(&files[0]).unwrap();
    let records: Vec<serde_json::Value> = rejected
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let mut kept: Vec<(u64, &str, &str)> = records
        .iter()
        .map(|r| {
            assert!(
                r["file"].as_str().unwrap().ends_with("Patient.ndjson"),
                "{r}"
            );
            assert!(r["run_id"].is_string(), "{r}");
            (
                r["line"].as_u64().unwrap(),
                r["reason"].as_str().unwrap(),
                r["original"].as_str().unwrap(),
            )
        })
        .collect();
    kept.sort();
    assert_eq!(
        kept,
        vec![
            (4, reason.as_str(), huge.as_str()),
            (9, reason.as_str(), over.as_str())
        ]
    );

    // The limit is checked before anything is read or written.
    let zero = run(fhirlake(dir.path())
        .env("FHIRLAKE_MAX_LINE_BYTES", "0")
        .args(["ingest", "--lake", "L0", "--unsafe-no-deid"])
        .arg(&src));
    assert_code(&zero, 2);
    assert!(
        text(&zero.stderr).contains("max-line-bytes"),
        "{}",
        text(&zero.stderr)
    );
    assert!(!dir.path().join("L0").exists());
}
