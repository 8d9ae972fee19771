//! What an ingest writes to the lake besides the de-identified `resource` text: the row columns
//! (`last_updated`, `patient_id`, `id`), the Delta log's file statistics, `lake.runs`, and the
//! rejects it keeps in the landing zone. None of it may give away what de-identification removed.
//!
//! The input is the embedded Synthea sample with a `meta.lastUpdated` added to every resource
//! (the sample has almost none): a unique instant per resource, in 2031, whose time of day is
//! unique too, so that no whole-day date shift turns one resource's instant into another's.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray};
use arrow::datatypes::{DataType, TimeUnit};
use fhirlake_tests::*;

/// Sample files of patient-compartment types (every resource gets a per-patient date shift).
const SAMPLE_FILES: [&str; 5] = [
    "36.Patient.ndjson.gz",
    "10.Condition.ndjson.gz",
    "2.AllergyIntolerance.ndjson.gz",
    "12.Device.ndjson.gz",
    "26.Immunization.ndjson.gz",
];

/// A file name as Synthea writes them: after the patient.
const PATIENT_FILE_NAME: &str = "Aaron697_Brekke496_2fa15bc7-8866-461a-9000-f739e425860a.json";
/// A folder named after a patient too.
const PATIENT_FOLDER: &str = "Zyxwvut_Qponml_records";

struct Original {
    /// `meta.lastUpdated` as written in the input.
    text: String,
    /// The same instant in microseconds since the epoch.
    micros: i64,
}

/// The `meta.lastUpdated` given to the `i`-th resource.
fn instant(i: usize) -> chrono::DateTime<chrono::Utc> {
    let base = chrono::DateTime::parse_from_rfc3339("2031-01-01T00:00:00Z")
        .unwrap()
        .to_utc();
    let seconds = ((i * 37) % 86_400) as i64;
    base + chrono::Duration::days((i % 300) as i64)
        + chrono::Duration::seconds(seconds)
        + chrono::Duration::milliseconds(123)
}

/// Writes the NDJSON sources into `<dir>/<PATIENT_FOLDER>/` and returns their original instants.
fn write_sources(dir: &Path) -> (PathBuf, Vec<Original>) {
    let src = dir.join(PATIENT_FOLDER);
    std::fs::create_dir_all(&src).unwrap();
    let mut originals = Vec::new();
    for name in SAMPLE_FILES {
        let mut out = String::new();
        for line in sample_lines(name) {
            let mut resource: serde_json::Value = serde_json::from_str(&line).unwrap();
            let at = instant(originals.len());
            let text = at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
            resource["meta"] = serde_json::json!({"lastUpdated": text});
            originals.push(Original {
                text,
                micros: at.timestamp_micros(),
            });
            out.push_str(&resource.to_string());
            out.push('\n');
        }
        let file = name.trim_end_matches(".gz");
        std::fs::write(src.join(file), out).unwrap();
    }
    (src, originals)
}

fn ingest(cwd: &Path, sources: &[&str]) -> std::process::Output {
    let mut command = fhirlake(cwd);
    command
        .env("FHIRLAKE_DEID_KEY", KEY)
        .args(["ingest", "--lake", "L", "--landing", "landing", "-q"])
        .args(sources);
    run(&mut command)
}

/// Every text value and every microsecond timestamp of `array`, nested values included.
fn collect_values(array: &ArrayRef, texts: &mut Vec<String>, instants: &mut Vec<i64>) {
    match array.data_type() {
        DataType::Utf8 => texts.extend(array.as_string::<i32>().iter().flatten().map(String::from)),
        DataType::LargeUtf8 => {
            texts.extend(array.as_string::<i64>().iter().flatten().map(String::from))
        }
        DataType::Utf8View => {
            texts.extend(array.as_string_view().iter().flatten().map(String::from))
        }
        DataType::Timestamp(TimeUnit::Microsecond, _) => instants.extend(
            array
                .as_primitive::<arrow::datatypes::TimestampMicrosecondType>()
                .iter()
                .flatten(),
        ),
        DataType::List(_) => collect_values(array.as_list::<i32>().values(), texts, instants),
        DataType::LargeList(_) => collect_values(array.as_list::<i64>().values(), texts, instants),
        DataType::Struct(_) => {
            for column in array.as_struct().columns() {
                collect_values(column, texts, instants);
            }
        }
        DataType::Map(_, _) => {
            let map = array.as_map();
            collect_values(map.keys(), texts, instants);
            collect_values(map.values(), texts, instants);
        }
        _ => {}
    }
}

/// Text values and timestamps of every column of a Parquet file.
fn parquet_values(path: &Path) -> (Vec<String>, Vec<i64>) {
    let file = std::fs::File::open(path).unwrap();
    let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file)
        .unwrap()
        .build()
        .unwrap();
    let (mut texts, mut instants) = (Vec::new(), Vec::new());
    for batch in reader {
        for column in batch.unwrap().columns() {
            collect_values(&Arc::clone(column), &mut texts, &mut instants);
        }
    }
    (texts, instants)
}

/// `meta.lastUpdated` inside a resource's JSON text, in microseconds.
fn last_updated_in(resource: &serde_json::Value) -> Option<i64> {
    let text = resource.get("meta")?.get("lastUpdated")?.as_str()?;
    Some(
        chrono::DateTime::parse_from_rfc3339(text)
            .ok()?
            .timestamp_micros(),
    )
}

#[test]
fn row_columns_are_taken_from_the_deidentified_resource() {
    let dir = tempfile::tempdir().unwrap();
    let (src, originals) = write_sources(dir.path());
    assert_code(&ingest(dir.path(), &[src.to_str().unwrap()]), 0);

    let tables = raw_table_rows(dir.path(), "L");
    assert_eq!(tables.len(), SAMPLE_FILES.len(), "{tables:?}");
    let mut rows_seen = 0;
    for (table, _) in &tables {
        let rows = sql(
            dir.path(),
            "L",
            &format!(
                "SELECT id, patient_id, CAST(last_updated AS BIGINT) AS last_updated, resource \
                 FROM {table}"
            ),
        );
        for row in rows {
            rows_seen += 1;
            let text = row["resource"].as_str().unwrap();
            let resource: serde_json::Value = serde_json::from_str(text).unwrap();
            // The column holds what the resource holds (or null where the resource has none).
            assert_eq!(
                row["last_updated"].as_i64(),
                last_updated_in(&resource),
                "{table}: last_updated differs from meta.lastUpdated in the resource"
            );
            assert_eq!(row["id"], resource["id"], "{table}: id");
            if let Some(patient) = row["patient_id"].as_str() {
                let own = resource["resourceType"] == "Patient" && resource["id"] == patient;
                assert!(
                    own || text.contains(&format!("\"Patient/{patient}\"")),
                    "{table}: patient_id is not the resource's patient reference"
                );
            }
        }
    }
    assert_eq!(rows_seen, originals.len());

    // No original (unshifted) instant anywhere in the lake's Parquet files: raw tables, views,
    // lake.runs, Delta checkpoints, old versions.
    let original_micros: BTreeSet<i64> = originals.iter().map(|o| o.micros).collect();
    let parquet_files: Vec<PathBuf> = files_under(&dir.path().join("L"))
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "parquet"))
        .collect();
    assert!(!parquet_files.is_empty());
    for path in &parquet_files {
        let (texts, instants) = parquet_values(path);
        for micros in &instants {
            assert!(
                !original_micros.contains(micros),
                "{}: an original meta.lastUpdated is stored as a timestamp",
                path.display()
            );
        }
        for text in &texts {
            for original in &originals {
                // Date and time of day to the second, whatever the format around it.
                assert!(
                    !text.contains(&original.text[..19]),
                    "{}: the original instant {} is in a text value",
                    path.display(),
                    original.text
                );
            }
        }
    }
}

#[test]
fn delta_log_statistics_hold_no_resource_values() {
    let dir = tempfile::tempdir().unwrap();
    let (src, _) = write_sources(dir.path());
    assert_code(&ingest(dir.path(), &[src.to_str().unwrap()]), 0);
    // A second run with changed content, so that the MERGE path writes files too.
    let patients = src.join("36.Patient.ndjson");
    let changed: String = std::fs::read_to_string(&patients)
        .unwrap()
        .lines()
        .map(|l| {
            let mut p: serde_json::Value = serde_json::from_str(l).unwrap();
            p["meta"]["lastUpdated"] = serde_json::json!("2032-06-01T10:00:00.000Z");
            p["gender"] = serde_json::json!("unknown");
            format!("{p}\n")
        })
        .collect();
    std::fs::write(&patients, changed).unwrap();
    assert_code(&ingest(dir.path(), &[patients.to_str().unwrap()]), 0);

    let safe = [
        "id",
        "patient_id",
        "last_updated",
        "run_id",
        "_resource_id",
        "started_at",
        "finished_at",
    ];
    let mut adds = 0;
    for path in files_under(&dir.path().join("L")) {
        let in_log = path
            .parent()
            .is_some_and(|p| p.file_name().is_some_and(|n| n == "_delta_log"));
        if !in_log || path.extension().is_none_or(|e| e != "json") {
            continue;
        }
        let log = std::fs::read_to_string(&path).unwrap();
        assert!(
            !log.contains("resourceType"),
            "{}: resource text in the Delta log",
            path.display()
        );
        for line in log.lines() {
            let action: serde_json::Value = serde_json::from_str(line).unwrap();
            let Some(stats) = action["add"]["stats"].as_str() else {
                continue;
            };
            adds += 1;
            let stats: serde_json::Value = serde_json::from_str(stats).unwrap();
            assert!(stats["numRecords"].is_u64(), "{}: {stats}", path.display());
            for bound in ["minValues", "maxValues"] {
                let Some(columns) = stats[bound].as_object() else {
                    continue;
                };
                for column in columns.keys() {
                    assert!(
                        safe.contains(&column.as_str()),
                        "{}: {bound} of column `{column}` in the Delta log",
                        path.display()
                    );
                }
            }
        }
    }
    assert!(adds > 0, "no add actions with statistics found");
    // Row counts still come from the statistics.
    let patients = raw_table_rows(dir.path(), "L")
        .into_iter()
        .find(|(t, _)| t == "raw.patient");
    assert_eq!(patients, Some(("raw.patient".to_string(), 100)));
}

#[test]
fn runs_record_digests_not_file_names_and_bundle_rejects_are_kept() {
    let dir = tempfile::tempdir().unwrap();
    let folder = dir.path().join(PATIENT_FOLDER);
    std::fs::create_dir_all(&folder).unwrap();
    // A Synthea-style patient Bundle: two good entries, an unknown resource type whose name is an
    // identifier, an entry without an id, and an entry that is not an object.
    let patient = "3b1f7a52-6c1e-4b8e-9d55-1f0b2a7c9e01";
    let bundle = serde_json::json!({
        "resourceType": "Bundle", "type": "collection",
        "entry": [
            {"fullUrl": format!("urn:uuid:{patient}"),
             "resource": {"resourceType": "Patient", "id": patient, "gender": "female"}},
            {"resource": {"resourceType": "Condition", "id": "c1",
                          "subject": {"reference": format!("urn:uuid:{patient}")}}},
            {"resource": {"resourceType": "Brekke496Record", "id": "x1"}},
            {"resource": {"resourceType": "Observation", "status": "final"}},
            "Aaron697"
        ]
    });
    let bundle_path = folder.join(PATIENT_FILE_NAME);
    std::fs::write(&bundle_path, serde_json::to_string_pretty(&bundle).unwrap()).unwrap();
    let output = ingest(dir.path(), &[folder.to_str().unwrap()]);
    assert_code(&output, 3);
    // No message names the unknown type (it could be anything, here a name).
    let messages = format!("{}{}", text(&output.stdout), text(&output.stderr));
    assert!(!messages.contains("Brekke496Record"), "{messages}");
    assert!(messages.contains("unknown resourceType"), "{messages}");

    // lake.runs: one digest per file read, with counts, and no name or folder.
    let runs = sql(
        dir.path(),
        "L",
        "SELECT sources, source_files, read, rejected FROM lake.runs",
    );
    assert_eq!(runs.len(), 1);
    let sources = runs[0]["sources"].as_array().unwrap();
    assert_eq!(sources.len(), 1, "{runs:?}");
    let digest = sources[0].as_str().unwrap();
    assert!(
        digest.starts_with("blake3:") && digest.len() == "blake3:".len() + 16,
        "{digest}"
    );
    assert_eq!(runs[0]["source_files"][0]["digest"], digest);
    assert_eq!(runs[0]["source_files"][0]["lines"], 5);
    assert_eq!(runs[0]["rejected"], 3);
    assert_eq!(runs[0]["read"], 2);

    // Nowhere in the lake: not in lake.runs, not in any Delta log or data file.
    let secrets = ["Aaron697", "Brekke496", "Zyxwvut", "Qponml"];
    for path in files_under(&dir.path().join("L")) {
        let mut values = Vec::new();
        if path.extension().is_some_and(|e| e == "parquet") {
            values = parquet_values(&path).0;
        }
        values.push(String::from_utf8_lossy(&std::fs::read(&path).unwrap()).into_owned());
        for value in &values {
            for secret in secrets {
                assert!(
                    !value.contains(secret),
                    "`{secret}` is in {}",
                    path.display()
                );
            }
        }
    }

    // Every rejected entry is kept in the landing zone with its JSON.
    let rejected_dir = dir.path().join("landing").join("rejected");
    let files = files_under(&rejected_dir);
    assert_eq!(files.len(), 1, "{files:?}");
    let records: Vec<serde_json::Value> = std::fs::read_to_string(&files[0])
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(records.len(), 3, "{records:?}");
    let originals: Vec<serde_json::Value> = records
        .iter()
        .map(|r| {
            serde_json::from_str(r["original"].as_str().expect("original kept"))
                .expect("original is JSON")
        })
        .collect();
    assert!(originals.contains(&bundle["entry"][2]["resource"]));
    assert!(originals.contains(&bundle["entry"][3]["resource"]));
    assert!(originals.contains(&bundle["entry"][4]));
}
