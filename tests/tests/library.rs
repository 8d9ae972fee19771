//! The library without the binary: the functions `fhirlake serve`, `fhirlake sql --as-of`,
//! `fhirlake ingest --bulk` and `fhirlake deid risk` call, driven directly on synthetic lakes.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use arrow::array::{Array, Int64Array};
use fhirlake::ingest::Ingest;
use fhirlake::lake::Lake;
use fhirlake::serve::LakeQueryService;
use fhirlake_connectors::StoreOptions;
use fhirlake_deid::Passthrough;
use fhirlake_sql::{AsOf, Caller, QueryOptions, QueryService, Role};

/// Synthetic patients, one NDJSON line each.
fn patients(ids: &[&str]) -> String {
    ids.iter()
        .map(|id| {
            format!(
                r#"{{"resourceType":"Patient","id":"{id}","gender":"female","birthDate":"1970-01-01","meta":{{"lastUpdated":"2026-01-01T00:00:00Z"}}}}"#
            ) + "\n"
        })
        .collect()
}

/// Ingests `text` (NDJSON) into the lake at `dir/lake`, without de-identification.
async fn ingest(dir: &Path, name: &str, text: &str) -> Lake {
    let source = dir.join(name);
    std::fs::write(&source, text).unwrap();
    let lake = Lake::open(dir.join("lake").to_str().unwrap(), StoreOptions::default()).unwrap();
    Ingest::new(
        vec![source.display().to_string()],
        lake.clone(),
        Arc::new(Passthrough),
    )
    .with_landing(dir.join("landing"))
    .run()
    .await
    .unwrap();
    lake
}

fn caller(role: Role, as_of: Option<AsOf>) -> Caller {
    Caller {
        user: "test".into(),
        role,
        options: QueryOptions { as_of },
    }
}

async fn count(service: &LakeQueryService, caller: &Caller, sql: &str) -> i64 {
    let batches = service
        .plan(caller, sql)
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    let column = batches[0].column(0);
    let counts = column.as_any().downcast_ref::<Int64Array>().unwrap();
    counts.value(0)
}

#[tokio::test]
async fn query_service_pins_snapshots_and_hides_schemas_by_role() {
    let dir = tempfile::tempdir().unwrap();
    let lake = ingest(dir.path(), "a.ndjson", &patients(&["a", "b"])).await;
    let first = lake
        .load_table(&fhirlake::lake::TableId::raw("Patient"))
        .await
        .unwrap()
        .unwrap()
        .version()
        .unwrap();
    ingest(dir.path(), "b.ndjson", &patients(&["c"])).await;
    let service = LakeQueryService::new(
        lake.clone(),
        None,
        dir.path().join("audit.ndjson"),
        Duration::from_secs(3600),
    );
    let sql = "SELECT count(*) FROM raw.patient";
    let steward = caller(Role::Steward, None);
    assert_eq!(count(&service, &steward, sql).await, 3);
    let pinned = caller(Role::Researcher, Some(AsOf::Version(first as i64)));
    assert_eq!(count(&service, &pinned, sql).await, 2);
    // `sql --as-of` reads through the same pin.
    let session = lake
        .session_as_of(Some(AsOf::Version(first as i64)))
        .await
        .unwrap();
    let batches = session.sql(sql).await.unwrap().collect().await.unwrap();
    let counts = batches[0].column(0);
    assert_eq!(
        counts
            .as_any()
            .downcast_ref::<Int64Array>()
            .unwrap()
            .value(0),
        2
    );

    let analyst = caller(Role::Analyst, None);
    assert!(service.plan(&analyst, sql).await.is_err());
    let listed = |tables: Vec<fhirlake_sql::TableInfo>| {
        tables
            .into_iter()
            .map(|t| format!("{}.{}", t.schema, t.name))
            .collect::<Vec<_>>()
    };
    let analyst_tables = listed(service.tables(&analyst).await.unwrap());
    assert!(analyst_tables.iter().all(|t| t.starts_with("public.")));
    let steward_tables = listed(service.tables(&steward).await.unwrap());
    for table in ["raw.patient", "lake.runs", "lake.audit"] {
        assert!(
            steward_tables.iter().any(|t| t == table),
            "{table} in {steward_tables:?}"
        );
    }
}

#[tokio::test]
async fn flight_server_binds_a_free_port() {
    let dir = tempfile::tempdir().unwrap();
    let lake = ingest(dir.path(), "a.ndjson", &patients(&["a"])).await;
    let config = fhirlake::serve::ServeConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        tls: None,
        limits: fhirlake_sql::flight::ServerLimits::default(),
        memory_limit: Some(64 * 1024 * 1024),
        snapshot_refresh: Duration::from_secs(1),
        audit_log: dir.path().join("audit.ndjson"),
    };
    let mut users = fhirlake_sql::flight::UserFile::default();
    users
        .upsert("steward", Role::Steward, "a long test password")
        .unwrap();
    let server = fhirlake::serve::FlightServer::bind(lake, users, config)
        .await
        .unwrap();
    assert_ne!(server.local_addr().unwrap().port(), 0);
    assert!(server.describe().unwrap().starts_with("grpc://127.0.0.1:"));
    server.run(async {}).await.unwrap();
    assert!(dir.path().join("audit.ndjson").exists());
}

/// Rows of `SELECT count(*) ...` over the lake's newest snapshot.
async fn lake_count(lake: &Lake, sql: &str) -> i64 {
    let batches = lake
        .session()
        .await
        .unwrap()
        .sql(sql)
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    let counts = batches[0].column(0);
    counts
        .as_any()
        .downcast_ref::<Int64Array>()
        .unwrap()
        .value(0)
}

#[tokio::test]
async fn pull_and_ingest_commits_the_export_and_removes_the_pulled_folder() {
    use fhirlake_connectors::bulk::{ExportRequest, PullOptions, RetryPolicy};
    use fhirlake_tests::bulk_server::{Faults, MockBulkServer};

    let data = fhirlake_tests::shared_synthea("bulk-data-server-100-patients");
    let server = MockBulkServer::start(&data, 1, Faults::default(), None);
    let types = ["Patient", "AllergyIntolerance"];
    let dir = tempfile::tempdir().unwrap();
    let lake = Lake::open(
        dir.path().join("lake").to_str().unwrap(),
        StoreOptions::default(),
    )
    .unwrap();
    let landing = dir.path().join("landing");
    let pull_dir = landing.join("bulk");
    let request = ExportRequest::new(server.base_url())
        .with_types(types.iter().map(|t| t.to_string()).collect());
    let pull = PullOptions::new(&pull_dir).with_retry(RetryPolicy {
        min_wait: Duration::from_millis(5),
        max_wait: Duration::from_millis(100),
        backoff: Duration::from_millis(5),
        ..RetryPolicy::default()
    });
    let ingest = Ingest::new(
        vec![pull_dir.display().to_string()],
        lake.clone(),
        Arc::new(Passthrough),
    )
    .with_landing(&landing);
    let report = fhirlake::ingest::bulk::pull_and_ingest(request, pull, ingest)
        .await
        .unwrap();
    let pulled = report.pulled.expect("the pull finished");
    let expected = server.expected_counts(&types);
    assert_eq!(
        pulled
            .resources_by_type()
            .into_iter()
            .map(|(t, n)| (t, n as usize))
            .collect::<std::collections::BTreeMap<_, _>>(),
        expected
    );
    report.ingest.expect("the ingest committed");
    assert!(report.cleanup.is_none());
    assert!(
        !pull_dir.exists(),
        "the pulled folder holds identified data"
    );
    assert_eq!(
        lake_count(&lake, "SELECT count(*) FROM raw.patient").await as usize,
        expected["Patient"]
    );
    assert_eq!(
        lake_count(&lake, "SELECT count(*) FROM raw.allergy_intolerance").await as usize,
        expected["AllergyIntolerance"]
    );
    // The export is recorded for `fhirlake sync`.
    let last = fhirlake::lake::runs::last_export(&lake)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(last.transaction_time, pulled.transaction_time);
}

#[tokio::test]
async fn risk_report_reads_the_lake_patients() {
    let dir = tempfile::tempdir().unwrap();
    let mut text = patients(&["a", "b", "c"]);
    text.push_str(
        r#"{"resourceType":"Patient","id":"d","gender":"male","birthDate":"1980-05-05","meta":{"lastUpdated":"2026-01-01T00:00:00Z"}}"#,
    );
    text.push('\n');
    let lake = ingest(dir.path(), "a.ndjson", &text).await;
    let attributes = vec!["birth_year".to_string(), "gender".to_string()];
    let report = fhirlake::lake::risk::risk_report(&lake, &attributes, 2)
        .await
        .unwrap();
    assert_eq!(report.patients, 4);
    assert_eq!(report.classes, 2);
    assert_eq!(report.smallest_class, 1);
    assert_eq!(report.unique_patients, 1);
    assert_eq!(report.patients_below_k, 1);
}

#[tokio::test]
async fn risk_report_of_an_empty_lake_says_what_is_missing() {
    let dir = tempfile::tempdir().unwrap();
    let lake = Lake::open(
        dir.path().join("lake").to_str().unwrap(),
        StoreOptions::default(),
    )
    .unwrap();
    let error = fhirlake::lake::risk::risk_report(&lake, &["gender".to_string()], 2)
        .await
        .unwrap_err();
    assert!(
        error
            .to_string()
            .contains("reading raw.patient (has anything been ingested?)"),
        "{error}"
    );
}
