//! End-to-end de-identification through the CLI: keys, ingest with a policy, the steward's tools
//! (check, preview, explain, reidentify, policy show, risk), and no PHI in what the lake or the
//! messages hold.

use std::path::Path;

use fhirlake_tests::*;

const OTHER_KEY: &str = "0000000000000000000000000000000000000000000000000000000000000001";

fn with_key(cwd: &Path, key: &str) -> std::process::Command {
    let mut command = fhirlake(cwd);
    command.env("FHIRLAKE_DEID_KEY", key);
    command
}

fn ingest(cwd: &Path, key: &str, sources: &[&str], extra: &[&str]) -> std::process::Output {
    let mut command = with_key(cwd, key);
    command
        .args(["ingest", "--lake", "L", "-q"])
        .args(extra)
        .args(sources);
    run(&mut command)
}

/// Original names, identifier values and ids of the sample's patients.
fn sample_phi() -> Vec<String> {
    let mut phi = Vec::new();
    for line in sample_lines("36.Patient.ndjson.gz") {
        let p: serde_json::Value = serde_json::from_str(&line).unwrap();
        phi.push(p["id"].as_str().unwrap().to_string());
        for name in p["name"].as_array().unwrap() {
            phi.push(name["family"].as_str().unwrap().to_string());
        }
        for id in p["identifier"].as_array().unwrap() {
            phi.push(id["value"].as_str().unwrap().to_string());
        }
        if let Some(line) = p["address"][0]["line"][0].as_str() {
            phi.push(line.to_string());
        }
        phi.push(p["birthDate"].as_str().unwrap().to_string());
    }
    phi
}

#[test]
fn no_key_no_ingest_and_nothing_written() {
    let dir = tempfile::tempdir().unwrap();
    let sample = sample_dir().join("36.Patient.ndjson.gz");
    let output =
        run(fhirlake(dir.path()).args(["ingest", "--lake", "L", sample.to_str().unwrap()]));
    assert_code(&output, 2);
    let stderr = text(&output.stderr);
    assert!(
        stderr.contains("FHIRLAKE_DEID_KEY") && stderr.contains("--key-file"),
        "{stderr}"
    );
    assert!(!dir.path().join("L").exists(), "nothing may be written");

    // A short key is refused without echoing it.
    let output = ingest(dir.path(), "abcdef", &[sample.to_str().unwrap()], &[]);
    assert_code(&output, 2);
    assert!(!text(&output.stderr).contains("abcdef"));
}

#[test]
fn safe_harbor_ingest_removes_phi_keeps_joins_and_refuses_another_key() {
    let dir = tempfile::tempdir().unwrap();
    let sample = sample_dir();
    let output = ingest(dir.path(), KEY, &[sample.to_str().unwrap()], &[]);
    assert_code(&output, 0);
    let stdout = text(&output.stdout);
    assert!(
        stdout.contains("de-identified with policy safe-harbor"),
        "{stdout}"
    );

    // Every resource arrives; observations still join to patients through pseudonyms.
    assert_eq!(
        sql_count(dir.path(), "L", "SELECT count(*) FROM raw.patient"),
        100
    );
    assert_eq!(
        sql_count(
            dir.path(),
            "L",
            "SELECT count(*) FROM raw.observation o JOIN raw.patient p ON o.patient_id = p.id"
        ),
        16_315
    );
    // No original id, name, identifier value, street or birth date anywhere in raw.patient.
    let rows = sql(dir.path(), "L", "SELECT resource FROM raw.patient");
    let all: String = rows
        .iter()
        .map(|r| r["resource"].as_str().unwrap())
        .collect();
    for phi in sample_phi() {
        assert!(
            !all.contains(&phi),
            "a sample identifier survived de-identification"
        );
    }
    // Encounters are date-shifted: no original period start survives.
    let original: Vec<String> = sample_lines("18.Encounter.ndjson.gz")
        .iter()
        .take(200)
        .map(|l| {
            let e: serde_json::Value = serde_json::from_str(l).unwrap();
            e["period"]["start"].as_str().unwrap().to_string()
        })
        .collect();
    let encounters = sql(dir.path(), "L", "SELECT resource FROM raw.encounter");
    let shifted: String = encounters
        .iter()
        .map(|r| r["resource"].as_str().unwrap())
        .collect();
    let survived = original
        .iter()
        .filter(|s| shifted.contains(s.as_str()))
        .count();
    assert!(
        survived < 5,
        "{survived} of 200 original timestamps survived"
    );

    // lake.runs records policy, key id and counts.
    let runs = sql(
        dir.path(),
        "L",
        "SELECT policy_name, key_id, deidentified, dropped_extensions, rule_hits FROM lake.runs",
    );
    assert_eq!(runs[0]["policy_name"], "safe-harbor");
    assert_eq!(runs[0]["deidentified"], true);
    assert!(runs[0]["dropped_extensions"].as_i64().unwrap() > 0);
    assert!(runs[0]["key_id"].as_str().unwrap().len() == 16);
    assert!(!runs[0]["key_id"].as_str().unwrap().contains(&KEY[..16]));
    let hits = runs[0]["rule_hits"].to_string();
    assert!(
        hits.contains("pseudonymize") && hits.contains("date_shift"),
        "{hits}"
    );

    // Same key again: nothing changes. Another key: refused, nothing written.
    let output = ingest(dir.path(), KEY, &[sample.to_str().unwrap()], &[]);
    assert_code(&output, 0);
    assert_eq!(
        sql_count(dir.path(), "L", "SELECT sum(unchanged) FROM lake.runs"),
        38_483
    );
    let output = ingest(dir.path(), OTHER_KEY, &[sample.to_str().unwrap()], &[]);
    assert_code(&output, 2);
    let stderr = text(&output.stderr);
    assert!(stderr.contains("key"), "{stderr}");
    assert!(!stderr.contains(OTHER_KEY) && !stderr.contains(KEY));
}

#[test]
fn key_files_must_be_private() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = tempfile::tempdir().unwrap();
    let output = run(fhirlake(dir.path()).args(["deid", "keygen", "k.key"]));
    assert_code(&output, 0);
    let key = dir.path().join("k.key");
    assert_eq!(
        std::fs::metadata(&key).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let sample = sample_dir().join("36.Patient.ndjson.gz");
    let ok = run(fhirlake(dir.path()).args([
        "ingest",
        "--lake",
        "L",
        "-q",
        "--key-file",
        "k.key",
        sample.to_str().unwrap(),
    ]));
    assert_code(&ok, 0);
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let refused = run(fhirlake(dir.path()).args([
        "ingest",
        "--lake",
        "L",
        "-q",
        "--key-file",
        "k.key",
        sample.to_str().unwrap(),
    ]));
    assert_code(&refused, 2);
    assert!(text(&refused.stderr).contains("chmod 600"));
}

#[test]
fn check_reports_line_and_column_and_accepts_the_builtins() {
    let dir = tempfile::tempdir().unwrap();
    let shown = run(fhirlake(dir.path()).args(["deid", "policy", "show", "safe-harbor"]));
    assert_code(&shown, 0);
    std::fs::write(dir.path().join("mine.toml"), &shown.stdout).unwrap();
    let ok = run(fhirlake(dir.path()).args(["deid", "check", "mine.toml"]));
    assert_code(&ok, 0);
    assert!(text(&ok.stdout).starts_with("ok: mine.toml"));

    std::fs::write(
        dir.path().join("bad.toml"),
        "name = \"bad\"\n\n[[rules]]\npath = \"Patient.name\"\nmethod = \"smudge\"\n",
    )
    .unwrap();
    let bad = run(fhirlake(dir.path()).args(["deid", "check", "bad.toml"]));
    assert_code(&bad, 2);
    let stderr = text(&bad.stderr);
    assert!(
        stderr.contains("bad.toml:5:10") && stderr.contains("unknown method"),
        "{stderr}"
    );

    std::fs::write(
        dir.path().join("badpath.toml"),
        "[[rules]]\npath = \"Patient.name.where(\"\nmethod = \"redact\"\n",
    )
    .unwrap();
    let bad = run(fhirlake(dir.path()).args(["deid", "check", "badpath.toml"]));
    assert_code(&bad, 2);
    assert!(
        text(&bad.stderr).contains("badpath.toml:2:"),
        "{}",
        text(&bad.stderr)
    );

    // The anonymizer's configuration is accepted as a policy.
    let ms = repo_root().join(
        "../shared/conformance/ms-anonymizer/configs/r4-configuration-sample-safe-harbor.json",
    );
    let ok = run(fhirlake(dir.path()).args(["deid", "check", ms.to_str().unwrap()]));
    assert_code(&ok, 0);
    assert!(text(&ok.stdout).contains("Microsoft anonymizer"));
}

#[test]
fn preview_explain_and_reidentify() {
    let dir = tempfile::tempdir().unwrap();
    let sample = sample_dir().join("36.Patient.ndjson.gz");
    let sample = sample.to_str().unwrap();
    let preview = run(with_key(dir.path(), KEY).args(["deid", "preview", sample]));
    assert_code(&preview, 0);
    let out = text(&preview.stdout);
    assert_eq!(out.lines().count(), 100);
    for phi in sample_phi() {
        assert!(!out.contains(&phi), "a sample identifier survived preview");
    }

    let explain = run(with_key(dir.path(), KEY).args(["deid", "explain", sample]));
    assert_code(&explain, 0);
    let out = text(&explain.stdout);
    assert!(out.contains("Patient.name.family"), "{out}");
    assert!(out.contains("nodesByType('HumanName') (redact)"), "{out}");
    assert!(out.contains("Patient.birthDate"), "{out}");
    for phi in sample_phi() {
        assert!(!out.contains(&phi), "explain printed a value");
    }

    // A steward's policy that encrypts family names; reidentify reverses it with the key.
    std::fs::write(
        dir.path().join("enc.toml"),
        "[[rules]]\npath = \"Patient.name.family\"\nmethod = \"encrypt\"\n\n\
         [[rules]]\npath = \"Resource.id\"\nmethod = \"pseudonymize\"\n",
    )
    .unwrap();
    let preview =
        run(with_key(dir.path(), KEY).args(["deid", "preview", "--policy", "enc.toml", sample]));
    assert_code(&preview, 0);
    let first: serde_json::Value =
        serde_json::from_str(text(&preview.stdout).lines().next().unwrap()).unwrap();
    let token = first["name"][0]["family"].as_str().unwrap().to_string();
    let original: serde_json::Value =
        serde_json::from_str(&sample_lines("36.Patient.ndjson.gz")[0]).unwrap();
    let family = original["name"][0]["family"].as_str().unwrap();
    assert_ne!(token, family);
    let back = run(with_key(dir.path(), KEY).args(["deid", "reidentify", &token]));
    assert_code(&back, 0);
    assert_eq!(text(&back.stdout).trim(), family);
    let wrong = run(with_key(dir.path(), OTHER_KEY).args(["deid", "reidentify", &token]));
    assert_code(&wrong, 2);
}

#[test]
fn phi_laden_broken_input_never_reaches_messages() {
    let dir = tempfile::tempdir().unwrap();
    let lines = [
        // Malformed JSON with a name and an SSN in it.
        r#"{"resourceType":"Patient","id":"p1","name":[{"family":"Zyxwvutson"}],"identifier":[{"value":"987-65-4321"}"#,
        // Unknown resource type carrying PHI.
        r#"{"resourceType":"Patiant","id":"p2","name":[{"family":"Zyxwvutson"}]}"#,
        // Invalid id and a birth date.
        r#"{"resourceType":"Patient","id":"bad id!","birthDate":"1961-04-13","name":[{"family":"Zyxwvutson"}]}"#,
        // Unknown modifierExtension: the resource is dropped by the policy.
        r#"{"resourceType":"Patient","id":"p3","modifierExtension":[{"url":"http://example.org/secret","valueString":"Zyxwvutson"}]}"#,
        // A valid one.
        r#"{"resourceType":"Patient","id":"p4","name":[{"family":"Zyxwvutson"}],"birthDate":"1961-04-13"}"#,
    ];
    std::fs::write(dir.path().join("phi.ndjson"), lines.join("\n")).unwrap();
    let output = ingest(dir.path(), KEY, &["phi.ndjson"], &["-v"]);
    assert_code(&output, 3);
    let messages = format!("{}{}", text(&output.stdout), text(&output.stderr));
    for phi in [
        "Zyxwvutson",
        "987-65-4321",
        "1961-04-13",
        "secret",
        "bad id!",
    ] {
        assert!(
            !messages.contains(phi),
            "`{phi}` appeared in the output:\n{messages}"
        );
    }
    assert!(messages.contains("modifierExtension"), "{messages}");
    let rows = sql(dir.path(), "L", "SELECT resource FROM raw.patient");
    assert_eq!(rows.len(), 1);
    assert!(!rows[0]["resource"].as_str().unwrap().contains("Zyxwvutson"));
    assert!(rows[0]["resource"].as_str().unwrap().contains("\"1961\""));
}

#[test]
fn risk_report_on_the_lake_prints_counts_not_values() {
    let dir = tempfile::tempdir().unwrap();
    let sample = sample_dir();
    assert_code(
        &ingest(dir.path(), KEY, &[sample.to_str().unwrap()], &[]),
        0,
    );
    let report = run(fhirlake(dir.path()).args(["deid", "risk", "--lake", "L"]));
    assert_code(&report, 0);
    let out = text(&report.stdout);
    assert!(out.contains("k = 11") || out.contains("k=11"), "{out}");
    assert!(
        out.contains("birth_year") && out.contains("gender"),
        "{out}"
    );
    for value in ["Massachusetts", "female", "male", "2106-3"] {
        assert!(
            !out.contains(value),
            "risk printed the value `{value}`:\n{out}"
        );
    }
    let json = run(fhirlake(dir.path()).args([
        "deid",
        "risk",
        "--lake",
        "L",
        "--format",
        "json",
        "--k",
        "2",
        "--quasi",
        "gender,birth_year",
    ]));
    assert_code(&json, 0);
    let report: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(report["patients"], 100);
    assert_eq!(report["k"], 2);
}

#[test]
fn policy_coverage_names_rules_flags_defaults_and_needs_no_key() {
    let dir = tempfile::tempdir().unwrap();
    // A policy of the test's own: the built-in profiles change, this does not.
    std::fs::write(
        dir.path().join("mine.toml"),
        "name = \"mine\"\n\n[defaults]\nelements = \"keep\"\nfree_text = \"redact\"\n\
         extensions = \"redact\"\nmodifier_extensions = \"drop_resource\"\n\n\
         [[rules]]\npath = \"Resource.id\"\nmethod = \"pseudonymize\"\n\n\
         [[rules]]\npath = \"nodesByType('HumanName')\"\nmethod = \"redact\"\n",
    )
    .unwrap();
    let shown = run(fhirlake(dir.path()).args([
        "deid",
        "policy",
        "show",
        "--coverage",
        "mine.toml",
        "--type",
        "Patient,Observation",
    ]));
    assert_code(&shown, 0);
    let out = text(&shown.stdout);
    let line = |path: &str| -> String {
        out.lines()
            .find(|l| l.split_whitespace().next() == Some(path))
            .unwrap_or_else(|| panic!("no line for {path}:\n{out}"))
            .to_string()
    };
    let family = line("Patient.name.family");
    assert!(
        family.contains("removed") && family.contains("#2 nodesByType('HumanName') (redact)"),
        "{family}"
    );
    assert!(!family.contains("DEFAULT"), "{family}");
    let id = line("Patient.id");
    assert!(
        id.contains("changed") && id.contains("#1 Resource.id (pseudonymize)"),
        "{id}"
    );
    let gender = line("Patient.gender");
    assert!(
        gender.contains("kept")
            && gender.contains("DEFAULT")
            && gender.contains("default (elements)"),
        "{gender}"
    );
    assert!(line("Observation.status").contains("DEFAULT"));
    assert!(line("Patient.modifierExtension").contains("resource dropped"));
    let summary = out.lines().last().unwrap();
    assert!(
        summary.contains("element paths:") && summary.contains("decided by a default"),
        "{summary}"
    );
    assert!(!out.contains("zqx"), "the report prints no values");

    // JSON, and a built-in profile: every row names a rule or is flagged as a default.
    let json = run(fhirlake(dir.path()).args([
        "deid",
        "policy",
        "show",
        "--coverage",
        "safe-harbor",
        "--type",
        "Patient",
        "--format",
        "json",
    ]));
    assert_code(&json, 0);
    let report: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(report["policy"], "safe-harbor");
    assert_eq!(report["resource_types"], serde_json::json!(["Patient"]));
    let rows = report["rows"].as_array().unwrap();
    assert!(rows.len() > 100, "{}", rows.len());
    for row in rows {
        assert_eq!(row["default"], row["rule"].is_null(), "{row}");
        assert!(
            row["path"].as_str().unwrap().starts_with("Patient"),
            "{row}"
        );
    }
    assert!(
        rows.iter()
            .any(|r| r["path"] == "Patient.id" && r["method"] == "pseudonymize"),
        "Patient.id"
    );
    assert_eq!(
        report["summary"]["paths"].as_u64().unwrap() as usize,
        rows.iter()
            .map(|r| r["path"].as_str().unwrap())
            .collect::<std::collections::BTreeSet<_>>()
            .len()
    );

    // Arguments are checked before the policy is read.
    let bad = run(fhirlake(dir.path()).args([
        "deid",
        "policy",
        "show",
        "--coverage",
        "missing.toml",
        "--type",
        "patient",
    ]));
    assert_code(&bad, 2);
    let stderr = text(&bad.stderr);
    assert!(
        stderr.contains("--type patient") && !stderr.contains("missing.toml"),
        "{stderr}"
    );
    let no_coverage =
        run(fhirlake(dir.path()).args(["deid", "policy", "show", "--type", "Patient"]));
    assert_code(&no_coverage, 2);

    // `deid explain` labels its lines with the same element paths: a contained resource's type,
    // the extensions the policy names.
    std::fs::write(
        dir.path().join("one.ndjson"),
        concat!(
            r#"{"resourceType":"Patient","id":"p1","gender":"female","#,
            r#""contained":[{"resourceType":"Organization","id":"o1","name":"Acme Clinic"}],"#,
            r#""extension":[{"url":"http://hl7.org/fhir/us/core/StructureDefinition/us-core-race","#,
            r#""extension":[{"url":"text","valueString":"Jane's own words"}]}],"#,
            r#""name":[{"family":"Doe"}]}"#,
            "\n"
        ),
    )
    .unwrap();
    let explain = run(with_key(dir.path(), KEY).args(["deid", "explain", "one.ndjson"]));
    assert_code(&explain, 0);
    let out = text(&explain.stdout);
    assert!(
        out.contains("Patient.contained.ofType(Organization).name"),
        "{out}"
    );
    assert!(
        out.contains(
            "Patient.extension('http://hl7.org/fhir/us/core/StructureDefinition/us-core-race')"
        ),
        "{out}"
    );
    for value in ["Acme", "Jane", "Doe"] {
        assert!(!out.contains(value), "explain printed a value: {value}");
    }
}
