//! `fhirlake sql` without a query reads statements from stdin when it is not a terminal: a
//! multi-statement script with dot commands, errors that do not stop the rest, the exit status.
//! `fhirlake user add` on a terminal asks for the password twice without echoing it.

use std::io::{Read, Write};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use fhirlake_tests::*;

/// A small lake, ingested without de-identification so that ids are readable.
fn small_lake(dir: &Path) {
    let patients = [
        serde_json::json!({"resourceType": "Patient", "id": "p1", "gender": "female",
            "birthDate": "1970-03-05"}),
        serde_json::json!({"resourceType": "Patient", "id": "p2", "gender": "male",
            "birthDate": "2000-02-29"}),
    ];
    let observation = serde_json::json!({"resourceType": "Observation", "id": "o1",
        "status": "final", "subject": {"reference": "Patient/p1"},
        "effectiveDateTime": "2020-03-04T10:00:00Z",
        "code": {"coding": [{"system": "http://loinc.org", "code": "8302-2"}]},
        "valueQuantity": {"value": 170.5, "unit": "cm"}});
    let lines: Vec<String> = patients
        .iter()
        .chain([&observation])
        .map(|r| r.to_string())
        .collect();
    let input = dir.join("in.ndjson");
    std::fs::write(&input, lines.join("\n") + "\n").unwrap();
    let output = run(fhirlake(dir).args([
        "ingest",
        "--lake",
        "L",
        "--unsafe-no-deid",
        "-q",
        input.to_str().unwrap(),
    ]));
    assert_code(&output, 0);
}

/// Runs `fhirlake sql --lake L [args]` with `script` on stdin.
fn shell(dir: &Path, args: &[&str], script: &str) -> Output {
    let mut child = fhirlake(dir)
        .args(["sql", "--lake", "L"])
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("fhirlake starts");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(script.as_bytes())
        .unwrap();
    child.wait_with_output().expect("fhirlake exits")
}

#[test]
fn script_on_stdin_runs_statements_commands_and_survives_errors() {
    let dir = tempfile::tempdir().unwrap();
    small_lake(dir.path());
    let script = "\
-- a comment line; not a statement
SELECT id, age_in_years(json_get_str(resource, 'birthDate'), '2020-03-04') AS age
FROM raw.patient
ORDER BY id;
.format csv
SELECT count(*) AS n FROM no_such_table;
SELECT 'a;b' AS text, reference_key('Patient/p1') AS key; SELECT
  o.id, p.gender FROM observation o JOIN patient p ON p.id = o.patient_id;
.nonsense
.format ndjson
SELECT fhir_code_in(code_system, code, 'loinc', '8302-2') AS height
FROM observation
";
    let output = shell(dir.path(), &["--format", "table"], script);
    let (stdout, stderr) = (text(&output.stdout), text(&output.stderr));
    // Two statements failed (an unknown table and an unknown command): exit status 2, but every
    // other statement ran, in order, in the format set at that point.
    assert_code(&output, 2);
    let table_at = stdout.find("| p1 | 49  |").expect(&stdout);
    assert!(stdout.contains("| p2 | 20  |"), "{stdout}");
    let csv_at = stdout.find("text,key\na;b,p1\n").expect(&stdout);
    let join_at = stdout.find("id,gender\no1,female\n").expect(&stdout);
    let ndjson_at = stdout.find("{\"height\":true}\n").expect(&stdout);
    assert!(
        table_at < csv_at && csv_at < join_at && join_at < ndjson_at,
        "{stdout}"
    );
    assert!(stderr.contains("no_such_table"), "{stderr}");
    assert!(stderr.contains("unknown command `.nonsense`"), "{stderr}");
    assert_eq!(stderr.matches("error:").count(), 2, "{stderr}");
}

#[test]
fn dot_commands_list_tables_views_and_columns() {
    let dir = tempfile::tempdir().unwrap();
    small_lake(dir.path());
    let script = ".tables raw\n.views\n.schema raw.patient\n.schema nowhere.nothing\n.help\n.quit\nSELECT 'not reached';\n";
    let output = shell(dir.path(), &["--format", "csv"], script);
    let (stdout, stderr) = (text(&output.stdout), text(&output.stderr));
    assert_code(&output, 2);
    assert!(
        stdout.contains("schema,name,type\nraw,observation,BASE TABLE\nraw,patient,BASE TABLE\n"),
        "{stdout}"
    );
    assert!(stdout.contains("view\nallergy_intolerance\n"), "{stdout}");
    assert!(stdout.contains("\npatient\n"), "{stdout}");
    assert!(stdout.contains("column,type,nullable\nid,"), "{stdout}");
    assert!(stdout.contains("\nresource,"), "{stdout}");
    assert!(stdout.contains(".schema TABLE"), "help text: {stdout}");
    assert!(!stdout.contains("not reached"), "{stdout}");
    assert!(stderr.contains("no table `nowhere.nothing`"), "{stderr}");
}

#[test]
fn clean_script_exits_zero_and_unterminated_last_statement_runs() {
    let dir = tempfile::tempdir().unwrap();
    small_lake(dir.path());
    let output = shell(
        dir.path(),
        &["--format", "ndjson"],
        ".timer on\nSELECT count(*) AS patients FROM patient;\nSELECT 1 AS one",
    );
    assert_code(&output, 0);
    assert_eq!(text(&output.stdout), "{\"patients\":2}\n{\"one\":1}\n");
    assert!(
        text(&output.stderr).contains("1 row in "),
        "{}",
        text(&output.stderr)
    );
    // Parquet is refused up front: the shell prints several results.
    let output = shell(dir.path(), &["--format", "parquet"], "SELECT 1;\n");
    assert_code(&output, 2);
    assert!(text(&output.stderr).contains("parquet"));
}

/// Runs `fhirlake user add alice` on a pseudo-terminal (util-linux `script`), typing `first` and
/// `second` at the two prompts as they appear; what the terminal showed and the exit status.
fn user_add_on_a_terminal(dir: &Path, first: &str, second: &str) -> (String, i32) {
    let bin = fhirlake(dir).get_program().to_owned();
    let command = format!(
        "{} user add alice --role researcher --users users.toml",
        Path::new(&bin).display()
    );
    let mut script = Command::new("script");
    script
        .args(["-qfec", &command, "/dev/null"])
        .current_dir(dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("FHIRLAKE_") {
            script.env_remove(key);
        }
    }
    let mut child = script.spawn().expect("util-linux `script` runs");
    let mut stdin = child.stdin.take().unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let (chunks, received) = mpsc::channel();
    std::thread::spawn(move || {
        let mut buf = [0u8; 256];
        while let Ok(n @ 1..) = stdout.read(&mut buf) {
            if chunks.send(buf[..n].to_vec()).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut shown = String::new();
    let wait_for = |needle: &str, shown: &mut String| {
        while !shown.contains(needle) {
            let left = deadline.saturating_duration_since(Instant::now());
            match received.recv_timeout(left) {
                Ok(chunk) => shown.push_str(&String::from_utf8_lossy(&chunk)),
                Err(_) => panic!("no `{needle}` prompt; the terminal showed: {shown:?}"),
            }
        }
        // The prompt is printed before echo is turned off: type as a person would, a moment
        // after it appears (typed sooner, the terminal would echo it before rpassword reads).
        std::thread::sleep(Duration::from_millis(500));
    };
    wait_for("password: ", &mut shown);
    stdin.write_all(format!("{first}\n").as_bytes()).unwrap();
    wait_for("password again: ", &mut shown);
    stdin.write_all(format!("{second}\n").as_bytes()).unwrap();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("`fhirlake user add` did not finish; the terminal showed: {shown:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    drop(stdin);
    while let Ok(chunk) = received.recv_timeout(Duration::from_secs(2)) {
        shown.push_str(&String::from_utf8_lossy(&chunk));
    }
    (shown, status.code().unwrap_or(-1))
}

#[test]
fn user_add_asks_twice_on_a_terminal_without_echo() {
    let dir = tempfile::tempdir().unwrap();
    let password = "correct-horse-battery";
    let (shown, status) = user_add_on_a_terminal(dir.path(), password, password);
    assert_eq!(status, 0, "{shown}");
    assert!(
        !shown.contains(password),
        "the password was echoed: {shown:?}"
    );
    assert!(shown.contains("user alice (researcher) saved"), "{shown}");
    let file = std::fs::read_to_string(dir.path().join("users.toml")).unwrap();
    assert!(file.contains("$argon2id$") && !file.contains(password));

    // Two different answers: nothing is saved.
    let other = tempfile::tempdir().unwrap();
    let (shown, status) = user_add_on_a_terminal(other.path(), password, "correct-horse-batterz");
    assert_ne!(status, 0, "{shown}");
    assert!(shown.contains("differ"), "{shown}");
    assert!(!other.path().join("users.toml").exists());
}
