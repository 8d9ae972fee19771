//! Source planning: directories, globs, landing folders, URLs, problems; plus the Synthea fixture end to end.

mod common;

use std::path::Path;

use common::*;
use fhirlake_connectors::plan::FileRole;
use fhirlake_connectors::{
    Error, FileFormat, SourceItem, SourcePlan, StoreOptions, plan_sources, read_source_file,
};
use serde_json::{Value, json};

fn plan_specs(specs: &[&str]) -> SourcePlan {
    let specs: Vec<String> = specs.iter().map(|s| s.to_string()).collect();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(plan_sources(&specs, &StoreOptions::default()))
}

/// Reads a file the way the engine does: on a blocking thread of a tokio runtime.
fn read_in_runtime(file: &fhirlake_connectors::SourceFile) -> Vec<SourceItem> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let file = file.clone();
    rt.block_on(async move {
        tokio::task::spawn_blocking(move || read_all(&file).0)
            .await
            .unwrap()
    })
}

fn names(plan: &SourcePlan, root: &Path) -> Vec<String> {
    let root = root.to_str().unwrap();
    plan.files
        .iter()
        .map(|f| {
            let text = f.location.to_string();
            let text = text.strip_prefix("file://").unwrap_or(&text).to_owned();
            text.strip_prefix(root)
                .unwrap_or(&text)
                .trim_start_matches('/')
                .to_owned()
        })
        .collect()
}

fn touch(root: &Path, rel: &str, data: &[u8]) {
    let path = root.join(rel);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, data).unwrap();
}

/// A plain directory with files that must be skipped.
fn plain_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    for rel in [
        "b.ndjson",
        "a.json",
        "sub/c.jsonl.gz",
        "sub/deeper/d.NDJSON",
        "manifest.as-exported.json",
        "log.ndjson",
        "rejected/x.ndjson",
        "staging/y.ndjson",
        ".hidden.ndjson",
        ".git/z.ndjson",
        "README.txt",
        "LICENSE",
    ] {
        touch(root, rel, b"{}\n");
    }
    dir
}

#[test]
fn directories_are_walked_sorted_with_skip_rules() {
    let dir = plain_dir();
    let plan = plan_specs(&[dir.path().to_str().unwrap()]);
    assert!(plan.problems.is_empty(), "{:?}", plan.problems);
    assert_eq!(
        names(&plan, dir.path()),
        vec![
            "a.json",
            "b.ndjson",
            "sub/c.jsonl.gz",
            "sub/deeper/d.NDJSON"
        ]
    );
    let kinds: Vec<_> = plan
        .files
        .iter()
        .map(|f| (f.format, f.gzip, f.role))
        .collect();
    assert_eq!(
        kinds,
        vec![
            (FileFormat::Bundle, false, FileRole::Output),
            (FileFormat::Ndjson, false, FileRole::Output),
            (FileFormat::Ndjson, true, FileRole::Output),
            (FileFormat::Ndjson, false, FileRole::Output),
        ]
    );
}

#[test]
fn file_urls_list_like_directories() {
    let dir = plain_dir();
    let url = format!("file://{}/", dir.path().display());
    let plan = plan_specs(&[&url]);
    assert!(plan.problems.is_empty(), "{:?}", plan.problems);
    assert_eq!(
        names(&plan, dir.path()),
        vec![
            "a.json",
            "b.ndjson",
            "sub/c.jsonl.gz",
            "sub/deeper/d.NDJSON"
        ]
    );
    assert!(plan.files[0].location.to_string().starts_with("file:///"));

    // Without the trailing slash, and a single object, and a glob.
    let bare = format!("file://{}", dir.path().display());
    let file = format!("file://{}/sub/c.jsonl.gz", dir.path().display());
    let glob = format!("file://{}/sub/*.jsonl.gz", dir.path().display());
    let plan = plan_specs(&[&bare, &file, &glob]);
    assert!(plan.problems.is_empty(), "{:?}", plan.problems);
    assert_eq!(plan.files.len(), 6);
    assert!(plan.files[4].gzip && plan.files[5].gzip);
    let items = read_in_runtime(&plan.files[1]);
    assert_eq!(lines(&items), vec![(1, "{}".to_owned())]);
}

#[test]
fn local_globs() {
    let dir = plain_dir();
    let pattern = format!("{}/*.ndjson", dir.path().display());
    let nothing = format!("{}/*.nothing", dir.path().display());
    let no_fhir = format!("{}/*.txt", dir.path().display());
    let subdirs = format!("{}/s*", dir.path().display());
    let plan = plan_specs(&[&pattern, &nothing, &no_fhir, &subdirs]);
    // log.ndjson and hidden files are skipped; a matched directory is walked.
    assert_eq!(
        names(&plan, dir.path()),
        vec!["b.ndjson", "sub/c.jsonl.gz", "sub/deeper/d.NDJSON"]
    );
    assert_eq!(plan.problems.len(), 2, "{:?}", plan.problems);
    assert!(matches!(&plan.problems[0], Error::NotFound { location } if location == &nothing));
    assert!(matches!(&plan.problems[1], Error::NoFhirFiles { location } if location == &no_fhir));
}

#[test]
fn problems_do_not_stop_the_plan() {
    let dir = plain_dir();
    let empty = tempfile::tempdir().unwrap();
    touch(empty.path(), "notes.txt", b"x");
    let explicit = dir.path().join("README.txt");
    let plan = plan_specs(&[
        "/no/such/path.ndjson",
        empty.path().to_str().unwrap(),
        explicit.to_str().unwrap(),
        "ftp://host/x.ndjson",
        "s3://",
        "file:///no/such/dir/",
    ]);
    assert_eq!(names(&plan, dir.path()), vec!["README.txt"]);
    assert_eq!(
        plan.files[0].format,
        FileFormat::Ndjson,
        "unknown extension: NDJSON"
    );
    assert_eq!(plan.problems.len(), 5, "{:?}", plan.problems);
    assert!(
        matches!(&plan.problems[4], Error::NotFound { .. }),
        "{}",
        plan.problems[4]
    );
    assert!(matches!(&plan.problems[0], Error::NotFound { .. }));
    assert_eq!(
        plan.problems[0].to_string(),
        "/no/such/path.ndjson: no such file, directory or object"
    );
    assert!(matches!(&plan.problems[1], Error::NoFhirFiles { .. }));
    assert!(plan.problems[1].to_string().contains("no FHIR files found"));
    assert!(matches!(&plan.problems[2], Error::InvalidSource { .. }));
    assert!(
        plan.problems[2]
            .to_string()
            .contains("unsupported URL scheme")
    );
    assert!(matches!(&plan.problems[3], Error::InvalidSource { .. }));
}

/// A landing folder built from the real Synthea export manifest, plus a deleted[] file and a missing output.
fn landing_dir(copy: bool) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let src = Path::new(SYNTHEA_BULK);
    let mut manifest: Value =
        serde_json::from_slice(&std::fs::read(src.join("manifest.as-exported.json")).unwrap())
            .unwrap();
    for entry in std::fs::read_dir(src).unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name().into_string().unwrap();
        if name.ends_with(".ndjson.gz") {
            if copy {
                std::fs::copy(entry.path(), dir.path().join(&name)).unwrap();
            } else {
                std::os::unix::fs::symlink(entry.path(), dir.path().join(&name)).unwrap();
            }
        }
    }
    manifest["output"]
        .as_array_mut()
        .unwrap()
        .push(json!({"type": "Patient", "url": "http://h/fhir/bulkfiles/99.Missing.ndjson"}));
    manifest["deleted"] = json!([{"type": "Bundle", "url": "deleted/del.ndjson"}]);
    manifest["error"] = json!([{"type": "OperationOutcome", "url": "err.ndjson"}]);
    std::fs::write(dir.path().join("manifest.json"), manifest.to_string()).unwrap();
    touch(
        dir.path(),
        "deleted/del.ndjson",
        br#"{"resourceType":"Bundle","type":"transaction","entry":[{"request":{"method":"DELETE","url":"Patient/gone"}}]}"#,
    );
    // Not listed in the manifest: ignored.
    touch(dir.path(), "log.ndjson", b"{}\n");
    touch(dir.path(), "extra.ndjson", b"{}\n");
    dir
}

fn check_landing_plan(plan: &SourcePlan) {
    assert_eq!(plan.problems.len(), 1, "{:?}", plan.problems);
    match &plan.problems[0] {
        Error::Manifest { path, reason, .. } => {
            assert_eq!(path, "output[20].url");
            assert!(reason.contains("99.Missing.ndjson"), "{reason}");
        }
        other => panic!("{other}"),
    }
    assert_eq!(plan.files.len(), 21);
    let outputs: Vec<_> = plan
        .files
        .iter()
        .filter(|f| f.role == FileRole::Output)
        .collect();
    assert_eq!(outputs.len(), 20);
    assert!(
        outputs
            .iter()
            .all(|f| f.gzip && f.format == FileFormat::Ndjson)
    );
    let allergy = outputs
        .iter()
        .find(|f| {
            f.location
                .to_string()
                .ends_with("/2.AllergyIntolerance.ndjson.gz")
        })
        .unwrap();
    assert_eq!(allergy.expected_type.as_deref(), Some("AllergyIntolerance"));
    assert_eq!(allergy.expected_count, Some(38));
    let last = plan.files.last().unwrap();
    assert_eq!(last.role, FileRole::Deleted);
    assert!(!last.gzip);
    let deletes: Vec<String> = read_in_runtime(last)
        .into_iter()
        .filter_map(|item| match item {
            SourceItem::Delete {
                resource_type, id, ..
            } => Some(format!("{resource_type}/{id}")),
            _ => None,
        })
        .collect();
    assert_eq!(deletes, vec!["Patient/gone"]);
}

#[test]
fn landing_folder_uses_the_manifest() {
    let dir = landing_dir(false);
    check_landing_plan(&plan_specs(&[dir.path().to_str().unwrap()]));
    // Naming manifest.json itself works too.
    check_landing_plan(&plan_specs(&[dir
        .path()
        .join("manifest.json")
        .to_str()
        .unwrap()]));
}

#[test]
fn landing_folder_through_a_file_url() {
    let dir = landing_dir(true);
    let url = format!("file://{}/", dir.path().display());
    let plan = plan_specs(&[&url]);
    check_landing_plan(&plan);
    assert!(plan.files[0].location.to_string().starts_with("file:///"));
}

#[test]
fn invalid_manifest_is_a_problem() {
    let dir = tempfile::tempdir().unwrap();
    touch(dir.path(), "manifest.json", b"{\"output\": [");
    touch(dir.path(), "a.ndjson", b"{}\n");
    let bad_entries = tempfile::tempdir().unwrap();
    touch(
        bad_entries.path(),
        "manifest.json",
        br#"{"output": [{"type": "Patient"}, 3, {"url": "../../etc/passwd"}, {"url": "a.ndjson", "count": -1}]}"#,
    );
    touch(bad_entries.path(), "a.ndjson", b"{}\n");
    let plan = plan_specs(&[
        dir.path().to_str().unwrap(),
        bad_entries.path().to_str().unwrap(),
    ]);
    let paths: Vec<String> = plan
        .problems
        .iter()
        .map(|p| match p {
            Error::Manifest { path, .. } => path.clone(),
            other => panic!("{other}"),
        })
        .collect();
    assert_eq!(
        paths,
        vec![
            "$",
            "output[0].url",
            "output[1]",
            "output[2].url",
            "output[3].count"
        ]
    );
    assert_eq!(plan.files.len(), 1);
    assert_eq!(plan.files[0].expected_count, None);
}

#[test]
fn synthea_bulk_export_plans_and_reads_completely() {
    let plan = plan_specs(&[SYNTHEA_BULK]);
    assert!(plan.problems.is_empty(), "{:?}", plan.problems);
    assert_eq!(plan.files.len(), 20);
    assert!(
        plan.files
            .iter()
            .all(|f| f.gzip && f.format == FileFormat::Ndjson)
    );
    let mut total = 0u64;
    let mut rejected = 0u64;
    for file in &plan.files {
        let mut count = 0u64;
        let stats = read_source_file(file, &mut |item| {
            match item {
                SourceItem::Line { .. } => count += 1,
                _ => rejected += 1,
            }
            true
        })
        .unwrap();
        assert_eq!(stats.lines, count, "{}", file.location);
        total += count;
    }
    assert_eq!(rejected, 0);
    assert_eq!(total, 38_483);
}
