//! Crash and concurrency safety: SIGKILL at any point leaves every table readable and the run
//! unrecorded; two writers on one lake never corrupt it.

use std::path::Path;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use fhirlake_tests::*;

fn start_ingest(cwd: &Path, lake: &str, source: &Path) -> Child {
    fhirlake(cwd)
        .args(["ingest", "--lake", lake, "--unsafe-no-deid", "-q"])
        .arg(source)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn ingest")
}

/// A copy of the sample where every resource has a newer `meta.lastUpdated`, so that a second
/// ingest really rewrites every table (MERGE updates), which is where a kill hurts most.
fn updated_sample(dir: &Path) -> std::path::PathBuf {
    let out = dir.join("updated");
    std::fs::create_dir_all(&out).unwrap();
    for entry in std::fs::read_dir(sample_dir()).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_str().unwrap().to_string();
        if !name.ends_with(".ndjson.gz") {
            continue;
        }
        let lines: Vec<String> = sample_lines(&name)
            .into_iter()
            .map(|line| {
                let mut value: serde_json::Value = serde_json::from_str(&line).unwrap();
                value["meta"] = serde_json::json!({"lastUpdated": "2030-01-01T00:00:00Z"});
                value.to_string()
            })
            .collect();
        write_gz(&out.join(name), lines.join("\n").as_bytes());
    }
    out
}

#[test]
fn sigkill_at_any_point_leaves_a_consistent_lake() {
    let dir = tempfile::tempdir().unwrap();
    let baseline = run(fhirlake(dir.path())
        .args(["ingest", "--lake", "L", "--unsafe-no-deid", "-q"])
        .arg(sample_dir()));
    assert_code(&baseline, 0);
    let expected = raw_table_rows(dir.path(), "L");
    assert_eq!(expected.len(), 19);
    let updated = updated_sample(dir.path());

    // Time the same update run on a copy of the lake to spread the kill points over it.
    copy_dir(&dir.path().join("L"), &dir.path().join("Ltiming"));
    let started = Instant::now();
    let timing = start_ingest(dir.path(), "Ltiming", &updated)
        .wait_with_output()
        .unwrap();
    assert_code(&timing, 0);
    let full = started.elapsed();

    let updated_rows = "SELECT count(*) FROM raw.observation \
                        WHERE last_updated = TIMESTAMP '2030-01-01T00:00:00Z'";
    let mut runs = 1;
    for fraction in [0.05, 0.25, 0.45, 0.65, 0.85] {
        let mut child = start_ingest(dir.path(), "L", &updated);
        std::thread::sleep(full.mul_f64(fraction));
        let _ = child.kill(); // SIGKILL
        let _ = child.wait();
        // Every table still answers with the same row counts (same ids, old or new versions).
        assert_eq!(
            raw_table_rows(dir.path(), "L"),
            expected,
            "after a kill at {fraction}"
        );
        let unique = sql_count(
            dir.path(),
            "L",
            "SELECT count(DISTINCT id) FROM raw.observation",
        );
        assert_eq!(unique, 16_315);
        // A run is recorded only when it is complete.
        let now = sql_count(dir.path(), "L", "SELECT count(*) FROM lake.runs");
        if now > runs {
            assert_eq!(now, runs + 1);
            assert_eq!(sql_count(dir.path(), "L", updated_rows), 16_315);
            runs = now;
        }
    }
    // The next ingest completes normally and brings every table to the new versions.
    let output = start_ingest(dir.path(), "L", &updated)
        .wait_with_output()
        .unwrap();
    assert_code(&output, 0);
    assert_eq!(raw_table_rows(dir.path(), "L"), expected);
    assert_eq!(sql_count(dir.path(), "L", updated_rows), 16_315);
    assert_eq!(
        sql_count(dir.path(), "L", "SELECT count(*) FROM lake.runs"),
        runs + 1
    );
    // Views killed half way are repaired by that run: one row per resource, none twice.
    for (view, raw, n) in [
        ("observation", "raw.observation", 16_315),
        ("patient", "raw.patient", 100),
    ] {
        assert_eq!(
            sql_count(dir.path(), "L", &format!("SELECT count(*) FROM {view}")),
            n,
            "{view}"
        );
        assert_eq!(
            sql_count(
                dir.path(),
                "L",
                &format!("SELECT count(*) FROM {view} v JOIN {raw} r ON v.id = r.id")
            ),
            n,
            "{view}"
        );
    }
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

#[test]
fn a_second_writer_on_the_same_lake_fails_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let first = start_ingest(dir.path(), "L", &sample_dir());
    // Wait until the first run holds the lock (the lock file appears when it is taken).
    let lock = dir.path().join("L/_fhirlake.lock");
    let deadline = Instant::now() + Duration::from_secs(30);
    while !lock.exists() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let patient = sample_dir().join("36.Patient.ndjson.gz");
    let second = start_ingest(dir.path(), "L", &patient)
        .wait_with_output()
        .unwrap();
    let first = first.wait_with_output().unwrap();
    assert_code(&first, 0);
    assert_code(&second, 2);
    assert!(
        text(&second.stderr).contains("being written by another fhirlake process"),
        "{}",
        text(&second.stderr)
    );
    // The lake is intact and the lock is free again.
    assert_eq!(
        raw_table_rows(dir.path(), "L")
            .iter()
            .map(|(_, n)| n)
            .sum::<i64>(),
        38_483
    );
    assert_code(
        &start_ingest(dir.path(), "L", &patient)
            .wait_with_output()
            .unwrap(),
        0,
    );
}
