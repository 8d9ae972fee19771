//! Shared helpers of the end-to-end tests: locating the `fhirlake` binary and the test data, and
//! running commands with a clean environment.
//!
//! The tests drive the real binary (as a user would) against temporary lakes. They are one
//! integration test (tests/main.rs) of this package, whose `fhirlake-e2e` bin is the `fhirlake`
//! binary built from the same `fhirlake::cli::main`, so cargo builds it first and tells them where
//! it is.

pub mod bulk_server;

use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The de-identification key of the tests (synthetic; 32 bytes in hex).
pub const KEY: &str = "4f1c2a9e8b7d6c5e4f3a2b1c0d9e8f7a6b5c4d3e2f1a0b9c8d7e6f5a4b3c2d1e";

/// Repository root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// The embedded Synthea sample (complete 100-patient bulk export, 38,483 resources, 19 types).
pub fn sample_dir() -> PathBuf {
    repo_root().join("engine").join("sample")
}

/// `../shared/data/synthea/<name>` next to the repository.
pub fn shared_synthea(name: &str) -> PathBuf {
    repo_root()
        .join("..")
        .join("shared")
        .join("data")
        .join("synthea")
        .join(name)
}

/// A `fhirlake` command running in `cwd`, with every `FHIRLAKE_*` variable removed so that the
/// developer's environment cannot change test outcomes. The program is this package's
/// `fhirlake-e2e` bin, started as `fhirlake` (`argv[0]`) so that its messages read as a user's.
pub fn fhirlake(cwd: &Path) -> Command {
    let bin = assert_cmd::cargo::cargo_bin("fhirlake-e2e");
    let mut command = Command::new(bin);
    command.arg0("fhirlake").current_dir(cwd);
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("FHIRLAKE_") {
            command.env_remove(key);
        }
    }
    command
}

/// A `fhirlake` command with the test key ([`KEY`]) in the environment.
pub fn keyed(cwd: &Path) -> Command {
    let mut command = fhirlake(cwd);
    command.env("FHIRLAKE_DEID_KEY", KEY);
    command
}

/// Runs a command and returns its output; panics with both streams when it cannot start.
pub fn run(command: &mut Command) -> Output {
    command.output().expect("fhirlake runs")
}

/// Exit code (panics on a signal).
pub fn code(output: &Output) -> i32 {
    output.status.code().unwrap_or_else(|| {
        panic!(
            "killed by a signal\nstdout:\n{}\nstderr:\n{}",
            text(&output.stdout),
            text(&output.stderr)
        )
    })
}

/// Lossy UTF-8.
pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Asserts an exit code, printing both streams when it differs.
pub fn assert_code(output: &Output, expected: i32) {
    assert_eq!(
        code(output),
        expected,
        "stdout:\n{}\nstderr:\n{}",
        text(&output.stdout),
        text(&output.stderr)
    );
}

/// Runs `fhirlake sql --format ndjson` and parses the rows.
pub fn sql(cwd: &Path, lake: &str, query: &str) -> Vec<serde_json::Value> {
    let output = run(fhirlake(cwd).args(["sql", "--lake", lake, "--format", "ndjson", query]));
    assert_code(&output, 0);
    text(&output.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("ndjson row"))
        .collect()
}

/// Runs a query that returns one integer.
pub fn sql_count(cwd: &Path, lake: &str, query: &str) -> i64 {
    let rows = sql(cwd, lake, query);
    assert_eq!(rows.len(), 1, "{query}: {rows:?}");
    let object = rows[0].as_object().expect("row object");
    object
        .values()
        .next()
        .and_then(serde_json::Value::as_i64)
        .unwrap_or_else(|| panic!("{query}: {rows:?}"))
}

/// Gzips `bytes` into `path`.
/// Every file under `dir`, recursively, sorted (for tests that scan a whole lake).
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else {
                files.push(path);
            }
        }
    }
    files.sort();
    files
}

pub fn write_gz(path: &Path, bytes: &[u8]) {
    use std::io::Write;
    let file = std::fs::File::create(path).expect("create");
    let mut gz = flate2::write::GzEncoder::new(file, flate2::Compression::default());
    gz.write_all(bytes).expect("write");
    gz.finish().expect("finish");
}

/// Decompressed lines of a sample file.
pub fn sample_lines(name: &str) -> Vec<String> {
    use std::io::BufRead;
    let file = std::fs::File::open(sample_dir().join(name)).expect("sample file");
    std::io::BufReader::new(flate2::read::MultiGzDecoder::new(file))
        .lines()
        .map(|l| l.expect("line"))
        .collect()
}

/// `(table, rows)` of every `raw.*` table, from `fhirlake tables`.
pub fn raw_table_rows(cwd: &Path, lake: &str) -> Vec<(String, i64)> {
    let output = run(fhirlake(cwd).args(["tables", "--lake", lake, "--format", "ndjson"]));
    assert_code(&output, 0);
    text(&output.stdout)
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).expect("ndjson row"))
        .filter(|t| t["table"].as_str().is_some_and(|n| n.starts_with("raw.")))
        .map(|t| {
            (
                t["table"].as_str().unwrap_or_default().to_string(),
                t["rows"].as_i64().unwrap_or(-1),
            )
        })
        .collect()
}
