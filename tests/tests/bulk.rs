//! End-to-end tests of the Bulk Data client (`fhirlake pull`, `ingest --bulk`, `sync`) against the
//! mock Bulk Data server of `fhirlake_tests::bulk_server`, with a fault injected in each: the run
//! recovers (and the lake holds exactly the exported resources) or fails with a clear message.

use std::collections::BTreeMap;
use std::io::BufRead;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use fhirlake_tests::bulk_server::{Faults, MockBulkServer, test_client, test_rsa_client};
use fhirlake_tests::*;
use serde_json::{Value, json};

/// Small types that keep most tests quick.
const SMALL: &[&str] = &["Patient", "Condition", "AllergyIntolerance", "Device"];

fn data_dir() -> std::path::PathBuf {
    shared_synthea("bulk-data-server-100-patients")
}

fn server(faults: Faults) -> MockBulkServer {
    MockBulkServer::start(&data_dir(), 1, faults, None)
}

/// A fhirlake command with tiny retry waits (Retry-After values are clamped into 5..100 ms).
fn cli(cwd: &Path) -> Command {
    let mut command = fhirlake(cwd);
    command
        .env("FHIRLAKE_BULK_MIN_WAIT_MS", "5")
        .env("FHIRLAKE_BULK_MAX_WAIT_MS", "100")
        .arg("-q");
    command
}

fn pull(cwd: &Path, base: &str, landing: &str, extra: &[&str]) -> Output {
    run(cli(cwd)
        .args(["pull", base, "--landing", landing])
        .args(extra))
}

fn ingest_bulk(cwd: &Path, base: &str, extra: &[&str]) -> Output {
    run(cli(cwd)
        .args(["ingest", base, "--bulk", "--lake", "L", "--unsafe-no-deid"])
        .args(extra))
}

/// Rows per resource type in the lake's raw tables, keyed by lower-case type.
fn lake_counts(cwd: &Path) -> BTreeMap<String, usize> {
    raw_table_rows(cwd, "L")
        .into_iter()
        .filter(|(_, rows)| *rows > 0)
        // `raw.allergy_intolerance` -> `allergyintolerance`, comparable with lower-cased type names.
        .map(|(table, rows)| {
            (
                table.trim_start_matches("raw.").replace('_', ""),
                rows as usize,
            )
        })
        .collect()
}

fn lower(counts: BTreeMap<String, usize>) -> BTreeMap<String, usize> {
    counts
        .into_iter()
        .map(|(t, n)| (t.to_ascii_lowercase(), n))
        .collect()
}

/// Lines per type in a pulled landing folder (from its manifest.json, counting the files' lines).
fn landing_counts(landing: &Path) -> BTreeMap<String, usize> {
    let manifest: Value =
        serde_json::from_slice(&std::fs::read(landing.join("manifest.json")).unwrap()).unwrap();
    let mut counts = BTreeMap::new();
    for entry in manifest["output"].as_array().unwrap() {
        let text = std::fs::read_to_string(landing.join(entry["url"].as_str().unwrap())).unwrap();
        *counts
            .entry(entry["type"].as_str().unwrap().to_ascii_lowercase())
            .or_default() += text.lines().filter(|l| !l.trim().is_empty()).count();
    }
    counts
}

fn events(landing: &Path) -> Vec<Value> {
    std::fs::read_to_string(landing.join("log.ndjson"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn event_ids(landing: &Path) -> Vec<String> {
    events(landing)
        .iter()
        .map(|e| e["eventId"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn ingest_bulk_lands_every_exported_resource_once() {
    let server = server(Faults {
        polls_before_ready: 3,
        ..Faults::default()
    });
    let dir = tempfile::tempdir().unwrap();
    let output = ingest_bulk(dir.path(), &server.base_url(), &[]);
    assert_code(&output, 0);
    let expected = lower(server.expected_counts(&[]));
    assert_eq!(expected.values().sum::<usize>(), 38_483);
    assert_eq!(lake_counts(dir.path()), expected);
    let counters = server.counters();
    assert_eq!(counters.kickoffs, 1);
    assert_eq!(counters.kickoff_methods, ["POST /fhir/$export"]);
    assert!(counters.status_polls >= 4, "{counters:?}");
    assert_eq!(
        counters.status_deletes, 1,
        "DELETE on the status URL when done"
    );
    assert!(
        counters.file_requests.values().all(|n| *n == 1),
        "{counters:?}"
    );
    // The pulled folder (identified data) is removed after the ingest; the run records the export.
    assert!(!dir.path().join("landing/bulk").exists());
    let rows = sql(
        dir.path(),
        "L",
        "SELECT bulk_base_url, transaction_time FROM lake.runs",
    );
    assert_eq!(rows[0]["bulk_base_url"], server.base_url());
    assert!(
        rows[0]["transaction_time"]
            .as_str()
            .unwrap()
            .starts_with("20")
    );
}

#[test]
fn pull_writes_a_landing_folder_with_the_bulk_data_client_event_log() {
    let server = server(Faults {
        polls_before_ready: 2,
        ..Faults::default()
    });
    let dir = tempfile::tempdir().unwrap();
    let output = pull(
        dir.path(),
        &server.base_url(),
        "export",
        &["--group", "g1", "--type", "Patient,Device", "--get"],
    );
    assert_code(&output, 0);
    assert_eq!(
        server.counters().kickoff_methods,
        ["GET /fhir/Group/g1/$export"]
    );
    let landing = dir.path().join("export");
    assert_eq!(
        landing_counts(&landing),
        lower(server.expected_counts(&["Patient", "Device"]))
    );
    let ids = event_ids(&landing);
    let first = |id: &str| {
        ids.iter()
            .position(|e| e == id)
            .unwrap_or_else(|| panic!("{id} in {ids:?}"))
    };
    assert!(first("kickoff") < first("status_progress"));
    assert!(first("status_progress") < first("status_complete"));
    assert!(first("status_complete") < first("manifest_complete"));
    assert!(first("manifest_complete") < first("download_request"));
    assert!(first("download_request") < first("download_complete"));
    assert_eq!(ids.last().unwrap(), "export_complete");
    let all = events(&landing);
    assert!(
        all.iter()
            .all(|e| e["exportId"] == all[0]["exportId"] && e["timestamp"].is_string())
    );
    let progress = all
        .iter()
        .find(|e| e["eventId"] == "status_progress")
        .unwrap();
    assert_eq!(progress["eventDetail"]["xProgress"], "33% complete");
    // The same pull again finds the complete export and downloads nothing.
    let output = pull(
        dir.path(),
        &server.base_url(),
        "export",
        &["--group", "g1", "--type", "Patient,Device", "--get"],
    );
    assert_code(&output, 0);
    assert!(text(&output.stdout).contains("already holds"));
    assert_eq!(server.counters().kickoffs, 1);
    // A different request into the same folder is refused.
    let output = pull(
        dir.path(),
        &server.base_url(),
        "export",
        &["--type", "Patient"],
    );
    assert_code(&output, 2);
    assert!(
        text(&output.stderr).contains("another request"),
        "{}",
        text(&output.stderr)
    );
    // Bad input is refused before any request.
    let output = pull(
        dir.path(),
        &server.base_url(),
        "other",
        &["--since", "yesterday"],
    );
    assert_code(&output, 2);
    assert!(text(&output.stderr).contains("_since"));
}

#[test]
fn throttling_with_each_retry_after_form_and_transient_errors_are_retried() {
    let http_date = (chrono::Utc::now() + chrono::Duration::seconds(2))
        .to_rfc2822()
        .replace("+0000", "GMT");
    let server = server(Faults {
        kickoff_429: Some("1".into()),
        status_429: vec!["2".into(), http_date, "99999999999999".into()],
        status_transient_500: 2,
        status_proxy_502: 2,
        polls_before_ready: 1,
        ..Faults::default()
    });
    let dir = tempfile::tempdir().unwrap();
    let started = Instant::now();
    let output = ingest_small(dir.path(), &server, &[]);
    assert_code(&output, 0);
    // Waits were clamped to the test maximum: an epoch in ms is not a 50-year sleep.
    assert!(started.elapsed() < Duration::from_secs(60));
    assert_eq!(
        lake_counts(dir.path()),
        lower(server.expected_counts(SMALL))
    );
    let counters = server.counters();
    assert_eq!(counters.kickoffs, 1);
    // 2 proxy 502 + 2 transient 500 + 3 throttled + 1 in progress + the manifest.
    assert_eq!(counters.status_polls, 9, "{counters:?}");
}

#[test]
fn a_non_transient_server_error_is_reported_with_its_operation_outcome() {
    let server = server(Faults::default());
    let dir = tempfile::tempdir().unwrap();
    // The mock rejects a kick-off on an unknown endpoint with an OperationOutcome.
    let base = format!("{}/nowhere", server.base_url());
    let output = pull(dir.path(), &base, "export", &[]);
    assert_code(&output, 2);
    let stderr = text(&output.stderr);
    assert!(
        stderr.contains("HTTP 404") && stderr.contains("no such endpoint"),
        "{stderr}"
    );
}

#[test]
fn smart_backend_services_tokens_are_renewed_while_downloading() {
    let dir = tempfile::tempdir().unwrap();
    let (client, key) = test_client(dir.path(), Duration::from_millis(1500));
    let types = [
        "Patient",
        "Condition",
        "CarePlan",
        "Immunization",
        "AllergyIntolerance",
    ];
    let server = MockBulkServer::start(
        &data_dir(),
        1,
        Faults {
            chunk_delay: Duration::from_millis(40),
            polls_before_ready: 1,
            ..Faults::default()
        },
        Some(client),
    );
    // Without credentials: a clear refusal.
    let output = pull(dir.path(), &server.base_url(), "noauth", &[]);
    assert_code(&output, 2);
    assert!(
        text(&output.stderr).contains("requires authorization"),
        "{}",
        text(&output.stderr)
    );
    let key = key.to_str().unwrap();
    let output = ingest_bulk(
        dir.path(),
        &server.base_url(),
        &[
            "--type",
            &types.join(","),
            "--parallel",
            "2",
            "--client-id",
            "fhirlake-test",
            "--client-key",
            key,
        ],
    );
    assert_code(&output, 0);
    assert_eq!(
        lake_counts(dir.path()),
        lower(server.expected_counts(&types))
    );
    let counters = server.counters();
    assert!(counters.tokens_issued >= 2, "tokens renewed: {counters:?}");
}

#[test]
fn an_expired_file_stops_with_a_restart_hint_and_the_rerun_starts_over() {
    let server = server(Faults {
        gone_type: Some("Condition".into()),
        ..Faults::default()
    });
    let dir = tempfile::tempdir().unwrap();
    let output = pull(
        dir.path(),
        &server.base_url(),
        "export",
        &["--type", "Patient,Condition"],
    );
    assert_code(&output, 2);
    let stderr = text(&output.stderr);
    assert!(
        stderr.contains("HTTP 410") && stderr.contains("expired"),
        "{stderr}"
    );
    assert!(
        stderr.contains("run the same `fhirlake pull` again"),
        "{stderr}"
    );
    assert!(!dir.path().join("export/.bulk-state.json").exists());
    assert!(event_ids(&dir.path().join("export")).contains(&"download_error".to_string()));
    server.set_faults(Faults::default());
    let output = pull(
        dir.path(),
        &server.base_url(),
        "export",
        &["--type", "Patient,Condition"],
    );
    assert_code(&output, 0);
    assert_eq!(server.counters().kickoffs, 2);
    assert_eq!(
        landing_counts(&dir.path().join("export")),
        lower(server.expected_counts(&["Patient", "Condition"]))
    );
}

#[test]
fn a_cut_download_is_retried_and_a_wrong_count_is_reported() {
    let server = server(Faults {
        cut_type: Some("Condition".into()),
        wrong_count_type: Some("Patient".into()),
        ..Faults::default()
    });
    let dir = tempfile::tempdir().unwrap();
    let output = ingest_small(dir.path(), &server, &[]);
    assert_code(&output, 0);
    let stderr = text(&output.stderr);
    assert!(
        stderr.contains("the manifest count is 105, the file has 100 lines"),
        "{stderr}"
    );
    assert_eq!(
        lake_counts(dir.path()),
        lower(server.expected_counts(SMALL))
    );
    assert_eq!(server.counters().file_requests["Condition.1.ndjson"], 2);
}

#[test]
fn a_cut_download_resumes_with_a_range_request_when_the_server_takes_ranges() {
    let server = server(Faults {
        cut_type: Some("Condition".into()),
        accept_ranges: true,
        ..Faults::default()
    });
    let dir = tempfile::tempdir().unwrap();
    let output = ingest_small(dir.path(), &server, &[]);
    assert_code(&output, 0);
    assert_exactly_exported(dir.path(), &server, SMALL);
    let counters = server.counters();
    assert_eq!(counters.file_requests["Condition.1.ndjson"], 2);
    // The second request asked only for the rest: after the complete lines of the first.
    assert_eq!(counters.range_requests.len(), 1, "{counters:?}");
    let (name, start) = &counters.range_requests[0];
    assert_eq!(name, "Condition.1.ndjson");
    assert!(*start > 0, "{counters:?}");
}

#[test]
fn sync_applies_updates_and_deletes_since_the_last_export() {
    let server = server(Faults::default());
    let dir = tempfile::tempdir().unwrap();
    let types = "Patient,Condition";
    assert_code(
        &ingest_bulk(dir.path(), &server.base_url(), &["--type", types]),
        0,
    );
    let first_time =
        sql(dir.path(), "L", "SELECT transaction_time FROM lake.runs")[0]["transaction_time"]
            .as_str()
            .unwrap()
            .to_string();
    std::thread::sleep(Duration::from_millis(20));

    let patients = server.ids("Patient", 5);
    for id in &patients[..3] {
        server.update("Patient", id, "gender", json!("other"));
    }
    server.delete("Patient", &patients[3]);
    server.delete("Patient", &patients[4]);
    let condition = server.ids("Condition", 1).remove(0);
    server.delete("Condition", &condition);
    server.set_faults(Faults {
        error_outcomes: 1,
        ..Faults::default()
    });

    let output = run(cli(dir.path()).args(["sync", "--lake", "L", "--unsafe-no-deid"]));
    assert_code(&output, 0);
    assert!(
        text(&output.stderr).contains("export error number 0"),
        "error[] surfaced: {}",
        text(&output.stderr)
    );
    let counters = server.counters();
    assert_eq!(counters.since_values, [None, Some(first_time)]);
    assert_eq!(
        lake_counts(dir.path()),
        lower(server.expected_counts(&["Patient", "Condition"]))
    );
    assert_eq!(
        sql_count(dir.path(), "L", "SELECT count(*) FROM raw.patient"),
        98
    );
    assert_eq!(
        sql_count(
            dir.path(),
            "L",
            "SELECT count(*) FROM raw.patient WHERE resource LIKE '%\"gender\":\"other\"%'"
        ),
        3
    );
    let last = sql(
        dir.path(),
        "L",
        "SELECT updated, deleted FROM lake.runs ORDER BY started_at DESC LIMIT 1",
    );
    assert_eq!(last[0]["updated"], 3);
    assert_eq!(last[0]["deleted"], 3);

    // A lake without an export has nothing to sync from.
    let output = run(cli(dir.path()).args(["sync", "--lake", "Empty", "--unsafe-no-deid"]));
    assert_code(&output, 2);
    assert!(text(&output.stderr).contains("no earlier Bulk Data export"));
}

fn state(landing: &Path) -> Option<Value> {
    let bytes = std::fs::read(landing.join(".bulk-state.json")).ok()?;
    serde_json::from_slice(&bytes).ok()
}

fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_killed_pull_resumes_and_downloads_only_what_is_missing() {
    let types = "Patient,Condition,CarePlan,Immunization";
    let server = server(Faults {
        chunk_delay: Duration::from_millis(60),
        ..Faults::default()
    });
    let dir = tempfile::tempdir().unwrap();
    let landing = dir.path().join("export");
    let mut child = cli(dir.path())
        .args([
            "pull",
            &server.base_url(),
            "--landing",
            "export",
            "--type",
            types,
            "--parallel",
            "1",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_for("a first finished file", || {
        state(&landing).is_some_and(|s| {
            s["files"]
                .as_array()
                .is_some_and(|f| f.iter().any(|f| f["done"] == true))
        })
    });
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let before = state(&landing).unwrap();
    let done_before: Vec<String> = before["files"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["done"] == true)
        .map(|f| {
            f["url"]
                .as_str()
                .unwrap()
                .rsplit('/')
                .next()
                .unwrap()
                .to_string()
        })
        .collect();
    assert!(!done_before.is_empty());
    assert!(!landing.join("manifest.json").exists());

    server.set_faults(Faults::default());
    let output = pull(
        dir.path(),
        &server.base_url(),
        "export",
        &["--type", types, "--parallel", "1"],
    );
    assert_code(&output, 0);
    let counters = server.counters();
    assert_eq!(counters.kickoffs, 1, "re-attached to the same export");
    for name in &done_before {
        assert_eq!(counters.file_requests[name], 1, "{name} downloaded once");
    }
    assert_eq!(
        landing_counts(&landing),
        lower(server.expected_counts(&types.split(',').collect::<Vec<_>>()))
    );
    // No partial file is left, and the export was deleted on the server.
    let leftovers: Vec<_> = std::fs::read_dir(&landing)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().ends_with(".part"))
        .collect();
    assert!(leftovers.is_empty());
    assert_eq!(counters.status_deletes, 1);
    // The landing folder ingests with exactly the exported resources.
    let output = run(fhirlake(dir.path()).args([
        "ingest",
        "--lake",
        "L",
        "--unsafe-no-deid",
        "-q",
        "export",
    ]));
    assert_code(&output, 0);
    assert_eq!(lake_counts(dir.path()), landing_counts(&landing));
}

#[test]
fn cancel_deletes_a_running_export() {
    let server = server(Faults {
        polls_before_ready: 100_000,
        ..Faults::default()
    });
    let dir = tempfile::tempdir().unwrap();
    let landing = dir.path().join("export");
    let mut child = cli(dir.path())
        .args(["pull", &server.base_url(), "--landing", "export"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_for("the status URL", || {
        state(&landing).is_some_and(|s| s["status_url"].is_string())
    });
    child.kill().unwrap();
    child.wait().unwrap();
    let output = pull(dir.path(), &server.base_url(), "export", &["--cancel"]);
    assert_code(&output, 0);
    assert!(text(&output.stdout).contains("cancelled the export at"));
    assert_eq!(server.counters().status_deletes, 1);
    assert!(state(&landing).is_none());
}

/// The lines a child writes to stderr, as they come.
fn stderr_lines(child: &mut Child) -> mpsc::Receiver<String> {
    let stderr = child.stderr.take().expect("piped stderr");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// Waits (at most a minute) until `lines` has shown a line for which `wanted` holds; returns the
/// lines seen and whether one matched.
fn wait_for_line(
    lines: &mpsc::Receiver<String>,
    mut wanted: impl FnMut(&str) -> bool,
) -> (Vec<String>, bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut seen = Vec::new();
    while Instant::now() < deadline {
        match lines.recv_timeout(Duration::from_millis(50)) {
            Ok(line) => {
                let found = wanted(&line);
                seen.push(line);
                if found {
                    return (seen, true);
                }
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
    }
    (seen, false)
}

#[test]
fn ingest_bulk_reads_each_file_as_it_lands_and_a_killed_run_commits_nothing() {
    // Condition downloads are held by the server until released: every other file can only be
    // ingested while a download is still running.
    let types = "Patient,Condition,Device";
    let server = server(Faults {
        hold_type: Some("Condition".into()),
        ..Faults::default()
    });
    let dir = tempfile::tempdir().unwrap();
    let mut child = fhirlake(dir.path())
        .env("FHIRLAKE_BULK_MIN_WAIT_MS", "5")
        .env("FHIRLAKE_BULK_MAX_WAIT_MS", "100")
        .args(["ingest", &server.base_url(), "--bulk", "--lake", "L"])
        .args(["--unsafe-no-deid", "--type", types, "--parallel", "2"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let lines = stderr_lines(&mut child);
    let mut read = Vec::new();
    let (seen, both_read) = wait_for_line(&lines, |line| {
        // The ingest's progress line for a file it finished reading.
        if line.starts_with("read ") {
            read.extend(
                ["Patient", "Device"]
                    .into_iter()
                    .filter(|t| line.contains(t)),
            );
        }
        read.contains(&"Patient") && read.contains(&"Device")
    });
    let held = server
        .counters()
        .file_requests
        .get("Condition.1.ndjson")
        .copied();
    child.kill().unwrap(); // SIGKILL, with Condition still downloading
    child.wait().unwrap();
    server.release_held();
    assert!(
        both_read,
        "Patient and Device ingested while Condition downloads: {seen:#?}"
    );
    assert_eq!(held, Some(1), "Condition was requested and held");
    // Nothing was committed by the killed run.
    assert!(
        lake_counts(dir.path()).is_empty(),
        "{:?}",
        lake_counts(dir.path())
    );

    // The same command again: re-attaches to the export, downloads only Condition, ingests all.
    server.set_faults(Faults::default());
    let output = ingest_bulk(
        dir.path(),
        &server.base_url(),
        &["--type", types, "--parallel", "2"],
    );
    assert_code(&output, 0);
    let expected: Vec<&str> = types.split(',').collect();
    assert_eq!(
        lake_counts(dir.path()),
        lower(server.expected_counts(&expected))
    );
    let counters = server.counters();
    assert_eq!(counters.kickoffs, 1, "re-attached to the same export");
    assert_eq!(counters.file_requests["Patient.1.ndjson"], 1);
    assert_eq!(counters.file_requests["Device.1.ndjson"], 1);
    assert_eq!(counters.file_requests["Condition.1.ndjson"], 2);
    assert_eq!(
        sql_count(dir.path(), "L", "SELECT count(*) FROM lake.runs"),
        1
    );
    assert!(!dir.path().join("landing/bulk").exists());
}

#[test]
fn a_paged_manifest_is_followed_to_its_last_page_with_the_token() {
    let dir = tempfile::tempdir().unwrap();
    let (client, key) = test_client(dir.path(), Duration::from_secs(600));
    // Two file entries per page: the SMALL types' files and the error[] file span 3 pages.
    let server = MockBulkServer::start(
        &data_dir(),
        1,
        Faults {
            manifest_page_size: 2,
            error_outcomes: 1,
            ..Faults::default()
        },
        Some(client),
    );
    let output = ingest_small_with_auth(dir.path(), &server, &key, &["--landing", "landing"]);
    assert_code(&output, 0);
    assert_eq!(
        lake_counts(dir.path()),
        lower(server.expected_counts(SMALL))
    );
    let counters = server.counters();
    assert_eq!(counters.manifest_pages, 2, "{counters:?}");
    assert_eq!(counters.unauthorized, 0, "every page with the token");
    assert!(
        counters.file_requests.values().all(|n| *n == 1),
        "{counters:?}"
    );
    // The error[] entry of the last page is surfaced.
    assert!(
        text(&output.stderr).contains("export error number 0"),
        "{}",
        text(&output.stderr)
    );
}

/// The lake holds exactly the resources of `types` the server exports (count by type), and the last
/// run read each of them once (no line read twice).
fn assert_exactly_exported(cwd: &Path, server: &MockBulkServer, types: &[&str]) {
    let expected = server.expected_counts(types);
    assert_eq!(lake_counts(cwd), lower(expected.clone()));
    let read = sql_count(
        cwd,
        "L",
        "SELECT \"read\" FROM lake.runs ORDER BY started_at DESC LIMIT 1",
    );
    assert_eq!(read as usize, expected.values().sum::<usize>());
}

/// `ingest --bulk` of the SMALL types from `server`.
fn ingest_small(cwd: &Path, server: &MockBulkServer, extra: &[&str]) -> Output {
    let types = SMALL.join(",");
    let mut args = vec!["--type", &types];
    args.extend_from_slice(extra);
    ingest_bulk(cwd, &server.base_url(), &args)
}

/// `ingest --bulk` of the SMALL types with the SMART client flags.
fn ingest_small_with_auth(
    cwd: &Path,
    server: &MockBulkServer,
    key: &Path,
    extra: &[&str],
) -> Output {
    let key = key.to_str().unwrap();
    let mut args = vec!["--client-id", "fhirlake-test", "--client-key", key];
    args.extend_from_slice(extra);
    ingest_small(cwd, server, &args)
}

#[test]
fn rs384_client_assertions_and_a_401_mid_download_get_a_new_token() {
    let dir = tempfile::tempdir().unwrap();
    let (client, key) = test_rsa_client(dir.path(), Duration::from_secs(600));
    let server = MockBulkServer::start(
        &data_dir(),
        1,
        Faults {
            // The token is revoked when the Condition download starts: 401, new token, go on.
            unauthorized_type: Some("Condition".into()),
            ..Faults::default()
        },
        Some(client),
    );
    let output = ingest_small_with_auth(dir.path(), &server, &key, &["--kid", "rsa-test-key"]);
    assert_code(&output, 0);
    assert_exactly_exported(dir.path(), &server, SMALL);
    let counters = server.counters();
    assert!(counters.unauthorized >= 1, "{counters:?}");
    assert!(counters.tokens_issued >= 2, "a new token: {counters:?}");
    assert_eq!(counters.file_requests["Condition.1.ndjson"], 2);
    assert_eq!(counters.file_requests["Patient.1.ndjson"], 1);
}

#[test]
fn a_transient_503_on_a_file_download_is_retried() {
    let server = server(Faults {
        unavailable_type: Some("Condition".into()),
        ..Faults::default()
    });
    let dir = tempfile::tempdir().unwrap();
    let output = ingest_small(dir.path(), &server, &[]);
    assert_code(&output, 0);
    assert_exactly_exported(dir.path(), &server, SMALL);
    let counters = server.counters();
    assert_eq!(counters.file_requests["Condition.1.ndjson"], 2);
    assert_eq!(counters.file_requests["Patient.1.ndjson"], 1);
}

#[test]
fn the_token_goes_to_no_other_origin_and_not_to_files_that_need_none() {
    let dir = tempfile::tempdir().unwrap();
    let (client, key) = test_client(dir.path(), Duration::from_secs(600));
    // Files on a second listener (another port: another origin), the manifest requiring a token.
    let server = MockBulkServer::start(
        &data_dir(),
        1,
        Faults {
            files_on_other_origin: true,
            ..Faults::default()
        },
        Some(client.clone()),
    );
    let output = ingest_small_with_auth(dir.path(), &server, &key, &[]);
    assert_code(&output, 0);
    assert_exactly_exported(dir.path(), &server, SMALL);
    let counters = server.counters();
    assert_eq!(
        counters.other_origin_requests,
        SMALL.len() as u32,
        "{counters:?}"
    );
    assert_eq!(counters.file_requests_with_token, 0, "{counters:?}");
    assert_eq!(counters.unauthorized, 0, "the server itself got the token");
    assert!(counters.tokens_issued >= 1);

    // Files on the server's own origin, the manifest saying `requiresAccessToken: false`.
    let dir = tempfile::tempdir().unwrap();
    let server = MockBulkServer::start(
        &data_dir(),
        1,
        Faults {
            files_without_token: true,
            ..Faults::default()
        },
        Some(client),
    );
    let output = ingest_small_with_auth(dir.path(), &server, &key, &[]);
    assert_code(&output, 0);
    assert_exactly_exported(dir.path(), &server, SMALL);
    let counters = server.counters();
    assert_eq!(counters.file_requests.len(), SMALL.len(), "{counters:?}");
    assert_eq!(counters.file_requests_with_token, 0, "{counters:?}");
    assert_eq!(counters.other_origin_requests, 0);
    assert_eq!(counters.unauthorized, 0);
}

/// The acceptance run of issue 7 at scale (not part of CI: run by `scripts/acceptance-bulk.sh`): the
/// mock server simulates `FHIRLAKE_ACCEPTANCE_MULTIPLIER` (default 100) times the 100-patient export,
/// `fhirlake ingest BASE --bulk --lake L` with the default de-identification ingests it, and the lake
/// must hold every exported resource (count by type). Prints the figures.
#[test]
#[ignore = "slow: run by scripts/acceptance-bulk.sh"]
fn acceptance_ingest_bulk_at_scale() {
    let multiplier: u32 = std::env::var("FHIRLAKE_ACCEPTANCE_MULTIPLIER")
        .ok()
        .and_then(|m| m.parse().ok())
        .unwrap_or(100);
    let loading = Instant::now();
    let server = MockBulkServer::start(&data_dir(), multiplier, Faults::default(), None);
    let expected = server.expected_counts(&[]);
    let total: usize = expected.values().sum();
    eprintln!(
        "mock server: {multiplier} x 100 patients, {total} resources in {} types, loaded in {:.1} s",
        expected.len(),
        loading.elapsed().as_secs_f64()
    );
    let dir = tempfile::tempdir().unwrap();
    assert_code(
        &run(fhirlake(dir.path()).args(["deid", "keygen", "deid.key"])),
        0,
    );
    let started = Instant::now();
    let output = run(fhirlake(dir.path()).args([
        "ingest",
        &server.base_url(),
        "--bulk",
        "--lake",
        "L",
        "--key-file",
        "deid.key",
    ]));
    let wall = started.elapsed().as_secs_f64();
    assert_code(&output, 0);
    eprintln!("{}", text(&output.stdout));
    assert_eq!(lake_counts(dir.path()), lower(expected));
    eprintln!(
        "acceptance: {total} resources ({} patients) in {wall:.1} s wall ({:.0} resources/s), \
         download and ingest overlapped; lake counts by type equal the server's",
        100 * multiplier,
        total as f64 / wall
    );
}
