//! `fhirlake serve` end to end: the real binary over a lake ingested from the 100-patient export,
//! driven by arrow-flight's `FlightSqlServiceClient`, the Python ADBC Flight SQL driver and
//! flightsql-dbapi (Superset's dialect). Every server listens on 127.0.0.1 on a free port and is
//! killed when its test ends; every client call is bounded by a timeout.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::Int64Type;
use arrow_flight::sql::client::FlightSqlServiceClient;
use arrow_flight::sql::{
    CommandGetDbSchemas, CommandGetExportedKeys, CommandGetPrimaryKeys, CommandGetTables, SqlInfo,
};
use arrow_flight::{Action, FlightInfo};
use fhirlake_tests::*;
use futures::TryStreamExt;
use serde_json::Value;
use tonic::transport::{Channel, Endpoint};

const PASSWORD: &str = "correct horse battery";
/// Bound on every client call.
const CALL: Duration = Duration::from_secs(60);

/// The 100-patient export ingested once for all tests (read-only from then on).
fn shared_lake() -> &'static Path {
    static LAKE: OnceLock<(tempfile::TempDir, PathBuf)> = OnceLock::new();
    &LAKE
        .get_or_init(|| {
            let dir = tempfile::tempdir().unwrap();
            let export = shared_synthea("bulk-data-server-100-patients");
            let output = run(fhirlake(dir.path()).env("FHIRLAKE_DEID_KEY", KEY).args([
                "ingest",
                "--lake",
                "L",
                "-q",
                export.to_str().unwrap(),
            ]));
            assert_code(&output, 0);
            let lake = dir.path().join("L");
            (dir, lake)
        })
        .1
}

/// A running `fhirlake serve`, killed on drop.
struct Server {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    fn uri(&self) -> String {
        format!("grpc://127.0.0.1:{}", self.port)
    }

    fn audit(&self) -> Vec<Value> {
        std::fs::read_to_string(self.dir.path().join("audit.ndjson"))
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }
}

/// Starts a server over `lake` with users `steward`, `researcher` and `analyst` (one per role).
fn serve(lake: &Path, extra: &[&str]) -> Server {
    let dir = tempfile::tempdir().unwrap();
    let users = dir.path().join("users.toml");
    for role in ["steward", "researcher", "analyst"] {
        let output = run(fhirlake(dir.path())
            .env("FHIRLAKE_PASSWORD", PASSWORD)
            .args(["user", "add", role, "--role", role, "--users"])
            .arg(&users));
        assert_code(&output, 0);
    }
    let mut command = fhirlake(dir.path());
    command
        .args(["serve", "--listen", "127.0.0.1:0", "--lake"])
        .arg(lake);
    if !extra.contains(&"--tls-cert") {
        command.arg("--insecure-plaintext");
    }
    let mut child = command
        .arg("--users")
        .arg(&users)
        .arg("--audit-log")
        .arg(dir.path().join("audit.ndjson"))
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("fhirlake serve starts");
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = BufReader::new(stdout).read_line(&mut line);
        let _ = tx.send(line);
    });
    let line = rx
        .recv_timeout(Duration::from_secs(60))
        .expect("server prints its address within 60 s");
    let port = line
        .trim()
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no port in {line:?}"));
    Server { child, port, dir }
}

async fn connect(server: &Server) -> FlightSqlServiceClient<Channel> {
    let channel = Endpoint::from_shared(format!("http://127.0.0.1:{}", server.port))
        .unwrap()
        .connect_timeout(Duration::from_secs(10))
        .timeout(CALL)
        .connect()
        .await
        .expect("connects");
    FlightSqlServiceClient::new(channel)
}

async fn login(server: &Server, user: &str) -> FlightSqlServiceClient<Channel> {
    let mut client = connect(server).await;
    client.handshake(user, PASSWORD).await.expect("login");
    assert!(client.token().is_some());
    client
}

/// Fetches every batch of every endpoint of `info`.
async fn fetch(
    client: &mut FlightSqlServiceClient<Channel>,
    info: FlightInfo,
) -> Result<Vec<RecordBatch>, String> {
    assert_eq!(info.endpoint.len(), 1, "one endpoint");
    assert!(info.endpoint[0].location.is_empty(), "no location");
    let ticket = info.endpoint[0].ticket.clone().expect("ticket");
    let stream = client.do_get(ticket).await.map_err(|e| e.to_string())?;
    stream.try_collect().await.map_err(|e| e.to_string())
}

async fn query(
    client: &mut FlightSqlServiceClient<Channel>,
    sql: &str,
) -> Result<Vec<RecordBatch>, String> {
    let info = client
        .execute(sql.to_string(), None)
        .await
        .map_err(|e| e.to_string())?;
    fetch(client, info).await
}

fn rows(batches: &[RecordBatch]) -> usize {
    batches.iter().map(RecordBatch::num_rows).sum()
}

fn single_i64(batches: &[RecordBatch]) -> i64 {
    assert_eq!(rows(batches), 1, "{batches:?}");
    let batch = batches.iter().find(|b| b.num_rows() == 1).unwrap();
    batch.column(0).as_primitive::<Int64Type>().value(0)
}

/// One text value bound to a prepared statement's `$1`.
fn text_parameter(value: &str) -> RecordBatch {
    RecordBatch::try_from_iter([(
        "$1",
        std::sync::Arc::new(arrow::array::StringArray::from(vec![value])) as _,
    )])
    .unwrap()
}

fn strings(batches: &[RecordBatch], column: &str) -> Vec<String> {
    let mut out = Vec::new();
    for batch in batches {
        let array = batch.column_by_name(column).unwrap();
        let array = arrow::compute::cast(array, &arrow::datatypes::DataType::Utf8).unwrap();
        let array = array.as_string::<i32>();
        out.extend((0..array.len()).map(|i| array.value(i).to_string()));
    }
    out
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// Expected `(gender, count)` from the CLI over the same lake.
fn expected_genders(lake: &Path) -> Vec<(String, i64)> {
    let cwd = lake.parent().unwrap();
    sql(
        cwd,
        lake.to_str().unwrap(),
        "SELECT gender, count(*) AS n FROM patient GROUP BY gender ORDER BY gender",
    )
    .into_iter()
    .map(|r| {
        (
            r["gender"].as_str().unwrap().to_string(),
            r["n"].as_i64().unwrap(),
        )
    })
    .collect()
}

fn python() -> PathBuf {
    let python = repo_root().join(".venv/bin/python");
    assert!(
        python.exists(),
        "{} missing: run scripts/test-env.sh to install the pinned Flight SQL clients",
        python.display()
    );
    python
}

fn run_python(script: &str, args: &[String]) -> Value {
    let mut command = Command::new(python());
    command
        .arg(repo_root().join("tests/python").join(script))
        .args(args);
    let output = command.output().expect("python runs");
    assert!(
        output.status.success(),
        "{script} failed\nstdout:\n{}\nstderr:\n{}",
        text(&output.stdout),
        text(&output.stderr)
    );
    serde_json::from_str(text(&output.stdout).trim()).expect("one JSON object")
}

/// The acceptance of the issue, as a new user does it: ADBC login, `adbc_get_objects` shows the
/// views with their columns, the gender counts are right; plus bound parameters and a
/// 1-million-row result.
#[test]
fn python_adbc_driver_lists_views_and_queries() {
    let lake = shared_lake();
    let server = serve(lake, &[]);
    let out = run_python(
        "adbc_client.py",
        &[server.uri(), "analyst".into(), PASSWORD.into()],
    );
    let tables = out["tables"].as_object().unwrap();
    let patient = tables["fhirlake.public.patient"].as_array().unwrap();
    assert!(patient.iter().any(|c| c == "gender"), "{patient:?}");
    assert!(patient.iter().any(|c| c == "id"), "{patient:?}");
    assert!(tables.contains_key("fhirlake.public.observation"));
    // An analyst sees views only.
    assert!(
        !tables
            .keys()
            .any(|k| k.contains(".raw.") || k.contains(".lake.")),
        "{tables:?}"
    );
    let expected = expected_genders(lake);
    let got: Vec<(String, i64)> = out["genders"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r[0].as_str().unwrap().to_string(), r[1].as_i64().unwrap()))
        .collect();
    assert_eq!(got, expected);
    assert_eq!(got.iter().map(|(_, n)| n).sum::<i64>(), 100);
    let female = expected.iter().find(|(g, _)| g == "female").unwrap().1;
    assert_eq!(out["female"].as_i64(), Some(female));
    assert_eq!(out["million_rows"].as_i64(), Some(1_000_000));
    assert_eq!(out["million_sum"].as_i64(), Some(500_000_500_000));
}

/// Superset's path: flightsql-dbapi's SQLAlchemy dialect connects (SqlInfo), lists schemas,
/// tables and columns, and queries.
#[test]
fn python_flightsql_dbapi_sqlalchemy_dialect() {
    let lake = shared_lake();
    let server = serve(lake, &[]);
    let out = run_python(
        "flightsql_dbapi_client.py",
        &[
            "127.0.0.1".into(),
            server.port.to_string(),
            "researcher".into(),
            PASSWORD.into(),
        ],
    );
    assert_eq!(out["schemas"], serde_json::json!(["public", "raw"]));
    let tables: Vec<&str> = out["tables"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap())
        .collect();
    assert!(
        tables.contains(&"patient") && tables.contains(&"observation"),
        "{tables:?}"
    );
    assert!(
        out["patient_columns"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c == "gender")
    );
    let got: Vec<(String, i64)> = out["genders"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r[0].as_str().unwrap().to_string(), r[1].as_i64().unwrap()))
        .collect();
    assert_eq!(got, expected_genders(lake));
}

/// Every metadata RPC, statement and prepared-statement queries, session options and
/// CloseSession through the Rust client.
#[test]
fn rust_client_covers_the_rpcs() {
    let lake = shared_lake();
    let server = serve(lake, &[]);
    runtime().block_on(async {
        let mut client = login(&server, "researcher").await;

        // SqlInfo: what Superset and JDBC read on connect.
        let info = client
            .get_sql_info(vec![
                SqlInfo::FlightSqlServerName,
                SqlInfo::FlightSqlServerVersion,
                SqlInfo::FlightSqlServerArrowVersion,
                SqlInfo::FlightSqlServerReadOnly,
                SqlInfo::FlightSqlServerTransaction,
                SqlInfo::SqlIdentifierQuoteChar,
                SqlInfo::SqlKeywords,
                SqlInfo::SqlAnsi92SupportedLevel,
            ])
            .await
            .unwrap();
        let batches = fetch(&mut client, info).await.unwrap();
        let ids: Vec<u32> = batches
            .iter()
            .flat_map(|b| {
                b.column(0)
                    .as_primitive::<arrow::datatypes::UInt32Type>()
                    .values()
                    .to_vec()
            })
            .collect();
        for id in [0, 1, 2, 3, 8, 504, 508, 526] {
            assert!(ids.contains(&id), "sql info {id} in {ids:?}");
        }

        let info = client.get_catalogs().await.unwrap();
        assert_eq!(
            strings(&fetch(&mut client, info).await.unwrap(), "catalog_name"),
            ["fhirlake"]
        );

        // XdbcTypeInfo: what JDBC's getTypeInfo (DBeaver) reads; all types, or one by data type.
        let info = client
            .get_xdbc_type_info(arrow_flight::sql::CommandGetXdbcTypeInfo { data_type: None })
            .await
            .unwrap();
        let types = fetch(&mut client, info).await.unwrap();
        assert_eq!(
            strings(&types, "type_name"),
            [
                "BOOLEAN",
                "BIGINT",
                "INTEGER",
                "DOUBLE",
                "VARCHAR",
                "DATE",
                "TIME",
                "TIMESTAMP"
            ]
        );
        let info = client
            .get_xdbc_type_info(arrow_flight::sql::CommandGetXdbcTypeInfo {
                data_type: Some(arrow_flight::sql::XdbcDataType::XdbcVarchar as i32),
            })
            .await
            .unwrap();
        assert_eq!(
            strings(&fetch(&mut client, info).await.unwrap(), "type_name"),
            ["VARCHAR"]
        );

        let info = client
            .get_db_schemas(CommandGetDbSchemas::default())
            .await
            .unwrap();
        let schemas = strings(&fetch(&mut client, info).await.unwrap(), "db_schema_name");
        assert_eq!(schemas, ["public", "raw"]);

        // GetTables, unset catalog = all, with a schema filter and include_schema.
        let info = client
            .get_tables(CommandGetTables {
                catalog: None,
                db_schema_filter_pattern: Some("ra%".into()),
                table_name_filter_pattern: Some("pat%".into()),
                table_types: vec![],
                include_schema: true,
            })
            .await
            .unwrap();
        let batches = fetch(&mut client, info).await.unwrap();
        assert_eq!(strings(&batches, "table_name"), ["patient"]);
        assert_eq!(strings(&batches, "db_schema_name"), ["raw"]);
        let schema_bytes = batches[0]
            .column_by_name("table_schema")
            .unwrap()
            .as_binary::<i32>()
            .value(0)
            .to_vec();
        let schema =
            arrow::datatypes::Schema::try_from(arrow_flight::IpcMessage(schema_bytes.into()))
                .unwrap();
        assert!(schema.field_with_name("resource").is_ok(), "{schema:?}");
        let info = client
            .get_tables(CommandGetTables::default())
            .await
            .unwrap();
        let all = fetch(&mut client, info).await.unwrap();
        assert!(rows(&all) > 10);
        assert!(all[0].column_by_name("table_schema").is_none());

        let info = client.get_table_types().await.unwrap();
        assert_eq!(
            strings(&fetch(&mut client, info).await.unwrap(), "table_type"),
            ["TABLE"]
        );

        let info = client
            .get_primary_keys(CommandGetPrimaryKeys {
                catalog: None,
                db_schema: None,
                table: "patient".into(),
            })
            .await
            .unwrap();
        let batches = fetch(&mut client, info).await.unwrap();
        assert_eq!(rows(&batches), 0);
        let info = client
            .get_exported_keys(CommandGetExportedKeys {
                catalog: None,
                db_schema: None,
                table: "patient".into(),
            })
            .await
            .unwrap();
        assert_eq!(rows(&fetch(&mut client, info).await.unwrap()), 0);

        // A statement query.
        let n = single_i64(
            &query(&mut client, "SELECT count(*) FROM raw.patient")
                .await
                .unwrap(),
        );
        assert_eq!(n, 100);

        // A prepared statement with a bound parameter.
        let mut prepared = client
            .prepare("SELECT count(*) FROM patient WHERE gender = ?".into(), None)
            .await
            .unwrap();
        assert_eq!(prepared.parameter_schema().unwrap().fields().len(), 1);
        prepared.set_parameters(text_parameter("female")).unwrap();
        let info = prepared.execute().await.unwrap();
        let female = single_i64(&fetch(&mut client, info).await.unwrap());
        let expected = expected_genders(lake);
        assert_eq!(
            female,
            expected.iter().find(|(g, _)| g == "female").unwrap().1
        );
        // A bound parameter is a constant to fhir_code_in (its codes must be constants).
        let mut prepared_codes = client
            .prepare(
                "SELECT count(*) FROM condition WHERE fhir_code_in(code_system, code, 'snomed', ?)"
                    .into(),
                None,
            )
            .await
            .unwrap();
        prepared_codes
            .set_parameters(text_parameter("44054006"))
            .unwrap();
        let info = prepared_codes.execute().await.unwrap();
        let by_code_in = single_i64(&fetch(&mut client, info).await.unwrap());
        let by_equality = single_i64(
            &query(
                &mut client,
                "SELECT count(*) FROM condition WHERE code = '44054006'",
            )
            .await
            .unwrap(),
        );
        assert!(by_equality > 0);
        assert_eq!(by_code_in, by_equality);
        prepared_codes.close().await.unwrap();
        // Prepared statements belong to their session: another login cannot use the handle.
        let mut other = login(&server, "researcher").await;
        let stolen = prepared_handle_probe(&mut other).await;
        assert!(stolen.contains("no such prepared statement"), "{stolen}");
        prepared.close().await.unwrap();

        // SetSessionOptions (accepted; unknown names reported), then CloseSession.
        let set = session_action(
            &mut client,
            "SetSessionOptions",
            &[("as_of", "2999-01-01T00:00:00Z"), ("no_such_option", "1")],
        )
        .await;
        assert!(set.is_ok(), "{set:?}");
        let n = single_i64(
            &query(&mut client, "SELECT count(*) FROM patient")
                .await
                .unwrap(),
        );
        assert_eq!(n, 100);
        session_action(&mut client, "CloseSession", &[])
            .await
            .unwrap();
        let after = query(&mut client, "SELECT 1").await.unwrap_err();
        assert!(after.contains("invalid token"), "{after}");
    });
}

/// A GetFlightInfo for a prepared handle this session did not create.
async fn prepared_handle_probe(client: &mut FlightSqlServiceClient<Channel>) -> String {
    use arrow_flight::sql::{CommandPreparedStatementQuery, ProstMessageExt};
    use prost::Message;
    let cmd = CommandPreparedStatementQuery {
        prepared_statement_handle: "00000000000000000000000000000000".into(),
    };
    let descriptor = arrow_flight::FlightDescriptor::new_cmd(cmd.as_any().encode_to_vec());
    let mut inner = client.inner().clone();
    let mut request = tonic::Request::new(descriptor);
    let token = client.token().unwrap().clone();
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    match inner.get_flight_info(request).await {
        Ok(_) => "accepted".into(),
        Err(status) => status.message().to_string(),
    }
}

/// Sends a Flight session action with string options (encoded by hand: protobuf map entries).
async fn session_action(
    client: &mut FlightSqlServiceClient<Channel>,
    action: &str,
    options: &[(&str, &str)],
) -> Result<Vec<u8>, String> {
    // SetSessionOptionsRequest { map<string, SessionOptionValue> session_options = 1; }
    // SessionOptionValue { string string_value = 1; }
    let mut body = Vec::new();
    for (name, value) in options {
        let mut option = vec![0x0a, value.len() as u8];
        option.extend_from_slice(value.as_bytes());
        let mut entry = vec![0x0a, name.len() as u8];
        entry.extend_from_slice(name.as_bytes());
        entry.push(0x12);
        entry.push(option.len() as u8);
        entry.extend_from_slice(&option);
        body.push(0x0a);
        body.push(entry.len() as u8);
        body.extend_from_slice(&entry);
    }
    let stream = client
        .do_action(Action {
            r#type: action.into(),
            body: body.into(),
        })
        .await
        .map_err(|e| e.to_string())?;
    let results: Vec<arrow_flight::Result> =
        stream.try_collect().await.map_err(|e| e.to_string())?;
    Ok(results.into_iter().flat_map(|r| r.body.to_vec()).collect())
}

/// Wrong passwords and expired tokens are refused (and audited); the server keeps serving.
#[test]
fn wrong_passwords_and_expired_tokens_are_refused() {
    let lake = shared_lake();
    let server = serve(lake, &["--token-ttl", "2"]);
    runtime().block_on(async {
        let mut client = connect(&server).await;
        let err = client
            .handshake("analyst", "wrong password")
            .await
            .unwrap_err();
        assert!(
            err.to_string().contains("wrong user name or password"),
            "{err}"
        );
        let err = client.handshake("nobody", PASSWORD).await.unwrap_err();
        assert!(
            err.to_string().contains("wrong user name or password"),
            "{err}"
        );
        // No token, a forged token.
        let err = query(&mut client, "SELECT 1").await.unwrap_err();
        assert!(err.contains("log in"), "{err}");
        client.set_token("abc.def".into());
        let err = query(&mut client, "SELECT 1").await.unwrap_err();
        assert!(err.contains("invalid token"), "{err}");

        let mut client = login(&server, "analyst").await;
        assert_eq!(
            single_i64(
                &query(&mut client, "SELECT count(*) FROM patient")
                    .await
                    .unwrap()
            ),
            100
        );
        tokio::time::sleep(Duration::from_millis(2500)).await;
        let err = query(&mut client, "SELECT count(*) FROM patient")
            .await
            .unwrap_err();
        assert!(err.contains("token expired"), "{err}");
        // A new login works.
        let mut client = login(&server, "analyst").await;
        assert_eq!(
            single_i64(
                &query(&mut client, "SELECT count(*) FROM patient")
                    .await
                    .unwrap()
            ),
            100
        );
    });
    let audit = server.audit();
    let denied: Vec<&Value> = audit
        .iter()
        .filter(|e| e["action"] == "login" && e["outcome"].as_str().unwrap().starts_with("denied"))
        .collect();
    assert_eq!(denied.len(), 2, "{audit:?}");
    assert!(!text(&serde_json::to_vec(&audit).unwrap()).contains("wrong password"));
}

/// Roles: an analyst neither sees nor reads `raw`; nobody runs DDL, DML or COPY; a steward reads
/// `lake.*` and the audit log, which records queries with rows and outcome.
#[test]
fn roles_limit_what_is_listed_and_read() {
    let lake = shared_lake();
    let server = serve(lake, &[]);
    runtime().block_on(async {
        let mut analyst = login(&server, "analyst").await;
        let err = query(&mut analyst, "SELECT count(*) FROM raw.patient").await.unwrap_err();
        assert!(err.contains("raw.patient") && err.contains("not found"), "{err}");
        let err = query(&mut analyst, "SELECT * FROM lake.runs").await.unwrap_err();
        assert!(err.contains("not found"), "{err}");
        let info = analyst.get_tables(CommandGetTables::default()).await.unwrap();
        let schemas = strings(&fetch(&mut analyst, info).await.unwrap(), "db_schema_name");
        assert!(schemas.iter().all(|s| s == "public"), "{schemas:?}");
        let info = analyst.get_db_schemas(CommandGetDbSchemas::default()).await.unwrap();
        assert_eq!(strings(&fetch(&mut analyst, info).await.unwrap(), "db_schema_name"), ["public"]);

        let mut researcher = login(&server, "researcher").await;
        for statement in [
            "CREATE TABLE t AS SELECT 1",
            "CREATE EXTERNAL TABLE x STORED AS CSV LOCATION '/etc/passwd'",
            "INSERT INTO patient SELECT * FROM patient",
            "COPY (SELECT 1) TO '/tmp/fhirlake-flight-test.csv'",
            "SET datafusion.execution.batch_size = 1",
        ] {
            let err = query(&mut researcher, statement).await.unwrap_err();
            assert!(err.contains("read-only"), "{statement}: {err}");
        }
        let err = query(&mut researcher, "SELECT * FROM lake.audit").await.unwrap_err();
        assert!(err.contains("not found"), "{err}");
        // Still serving.
        assert_eq!(single_i64(&query(&mut researcher, "SELECT count(*) FROM raw.patient").await.unwrap()), 100);

        let mut steward = login(&server, "steward").await;
        assert!(single_i64(&query(&mut steward, "SELECT count(*) FROM lake.runs").await.unwrap()) >= 1);
        let batches = query(
            &mut steward,
            "SELECT user, role, rows, outcome FROM lake.audit \
             WHERE action = 'query' AND sql = 'SELECT count(*) FROM raw.patient' AND outcome = 'ok'",
        )
        .await
        .unwrap();
        assert_eq!(strings(&batches, "user"), ["researcher"]);
        let denied = single_i64(
            &query(
                &mut steward,
                "SELECT count(*) FROM lake.audit WHERE user = 'researcher' AND outcome LIKE 'denied%'",
            )
            .await
            .unwrap(),
        );
        assert_eq!(denied, 5);
    });
}

/// A query over the memory limit fails clearly, a concurrent-query limit refuses extra queries,
/// a client that drops its stream cancels its query, and the server keeps serving.
#[test]
fn limits_and_disconnects_leave_the_server_serving() {
    let lake = shared_lake();
    let server = serve(
        lake,
        &[
            "--query-memory",
            "8MiB",
            "--max-concurrent-queries",
            "1",
            "--query-timeout",
            "20",
        ],
    );
    runtime().block_on(async {
        let mut client = login(&server, "analyst").await;
        // A hash join cannot spill: its build side must fit the per-query pool.
        let err = query(
            &mut client,
            "SELECT count(*) FROM generate_series(1, 3000000) a \
             JOIN generate_series(1, 3000000) b ON a.value = b.value",
        )
        .await
        .unwrap_err();
        assert!(err.contains("memory limit"), "{err}");
        assert_eq!(
            single_i64(
                &query(&mut client, "SELECT count(*) FROM patient")
                    .await
                    .unwrap()
            ),
            100
        );

        // Hold a streaming query open: the one slot is taken.
        let info = client
            .execute(
                "SELECT value FROM generate_series(1, 100000000)".into(),
                None,
            )
            .await
            .unwrap();
        let ticket = info.endpoint[0].ticket.clone().unwrap();
        let mut stream = client.do_get(ticket).await.unwrap();
        let first = futures::StreamExt::next(&mut stream)
            .await
            .unwrap()
            .unwrap();
        assert!(first.num_rows() > 0);
        let mut other = login(&server, "researcher").await;
        let err = query(&mut other, "SELECT 1").await.unwrap_err();
        assert!(err.contains("too many queries"), "{err}");

        // Disconnect mid-stream: the query is cancelled and the slot comes back.
        drop(stream);
        drop(client);
        let mut freed = false;
        for _ in 0..100 {
            if let Ok(batches) = query(&mut other, "SELECT count(*) FROM patient").await {
                assert_eq!(single_i64(&batches), 100);
                freed = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(freed, "the dropped query's slot was not released");

        // Over the time limit: a clear error, and the next query runs.
        let err = query(
            &mut other,
            "SELECT count(*) FROM generate_series(1, 100000000000)",
        )
        .await
        .unwrap_err();
        assert!(err.contains("time limit"), "{err}");
        assert_eq!(
            single_i64(
                &query(&mut other, "SELECT count(*) FROM patient")
                    .await
                    .unwrap()
            ),
            100
        );
    });
    let audit = server.audit();
    let cancelled = audit
        .iter()
        .find(|e| e["outcome"].as_str().unwrap().starts_with("cancelled"))
        .unwrap_or_else(|| panic!("{audit:?}"));
    let sent = cancelled["rows"].as_u64().unwrap();
    assert!(sent > 0 && sent < 100_000_000, "{cancelled}");
}

/// `fhirlake sql --as-of` and the server's `as_of` session option read an earlier snapshot.
#[test]
fn as_of_pins_an_earlier_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let export = shared_synthea("bulk-data-server-100-patients");
    let ingest = |source: &Path| {
        let output = run(fhirlake(dir.path()).env("FHIRLAKE_DEID_KEY", KEY).args([
            "ingest",
            "--lake",
            "L",
            "-q",
            source.to_str().unwrap(),
        ]));
        assert_code(&output, 0);
    };
    ingest(&export);
    let version = |table: &str| -> String {
        let output =
            run(fhirlake(dir.path()).args(["tables", "--lake", "L", "--format", "ndjson"]));
        assert_code(&output, 0);
        text(&output.stdout)
            .lines()
            .map(|l| serde_json::from_str::<Value>(l).unwrap())
            .find(|t| t["table"] == table)
            .unwrap()["version"]
            .to_string()
    };
    let first_version = version("raw.patient");
    std::thread::sleep(Duration::from_millis(1100));
    let pin = chrono::Utc::now().to_rfc3339();
    std::thread::sleep(Duration::from_millis(1100));
    let extra = dir.path().join("extra.ndjson");
    std::fs::write(
        &extra,
        r#"{"resourceType":"Patient","id":"as-of-test-1","gender":"female","birthDate":"1990-02-03"}"#
            .to_string()
            + "\n",
    )
    .unwrap();
    ingest(&extra);
    let count = |as_of: Option<&str>| {
        let mut args = vec!["sql", "--lake", "L", "--format", "ndjson"];
        if let Some(v) = as_of {
            args.extend(["--as-of", v]);
        }
        args.push("SELECT count(*) AS n FROM raw.patient");
        let output = run(fhirlake(dir.path()).args(&args));
        assert_code(&output, 0);
        serde_json::from_str::<Value>(text(&output.stdout).trim()).unwrap()["n"]
            .as_i64()
            .unwrap()
    };
    assert_eq!(count(None), 101);
    assert_eq!(count(Some(&first_version)), 100);
    assert_eq!(count(Some(&pin)), 100);
    assert_eq!(count(Some("2999-01-01T00:00:00Z")), 101);
    // Before the lake existed there is no table at all.
    let output = run(fhirlake(dir.path()).args([
        "sql",
        "--lake",
        "L",
        "--as-of",
        "2000-01-01",
        "SELECT count(*) FROM raw.patient",
    ]));
    assert_code(&output, 2);
    assert!(
        text(&output.stderr).contains("not found"),
        "{}",
        text(&output.stderr)
    );
    let output =
        run(fhirlake(dir.path()).args(["sql", "--lake", "L", "--as-of", "yesterday", "SELECT 1"]));
    assert_code(&output, 2);

    let server = serve(&dir.path().join("L"), &[]);
    runtime().block_on(async {
        let mut client = login(&server, "researcher").await;
        let latest = single_i64(
            &query(&mut client, "SELECT count(*) FROM raw.patient")
                .await
                .unwrap(),
        );
        assert_eq!(latest, 101);
        session_action(&mut client, "SetSessionOptions", &[("as_of", &pin)])
            .await
            .unwrap();
        let pinned = single_i64(
            &query(&mut client, "SELECT count(*) FROM raw.patient")
                .await
                .unwrap(),
        );
        assert_eq!(pinned, 100);
    });
}

/// TLS with certificate and key files; a plaintext client cannot talk to it; the server refuses
/// to start without TLS unless plaintext is asked for, and plaintext off loopback unless allowed.
#[test]
fn tls_and_plaintext_rules() {
    let dir = tempfile::tempdir().unwrap();
    let rcgen::CertifiedKey { cert, signing_key } =
        rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let (cert_path, key_path) = (dir.path().join("server.crt"), dir.path().join("server.key"));
    std::fs::write(&cert_path, cert.pem()).unwrap();
    std::fs::write(&key_path, signing_key.serialize_pem()).unwrap();
    let lake = shared_lake();
    let server = serve(
        lake,
        &[
            "--tls-cert",
            cert_path.to_str().unwrap(),
            "--tls-key",
            key_path.to_str().unwrap(),
        ],
    );
    let _ = rustls::crypto::ring::default_provider().install_default();
    runtime().block_on(async {
        let tls = tonic::transport::ClientTlsConfig::new()
            .ca_certificate(tonic::transport::Certificate::from_pem(cert.pem()))
            .domain_name("localhost");
        let channel = Endpoint::from_shared(format!("https://localhost:{}", server.port))
            .unwrap()
            .tls_config(tls)
            .unwrap()
            .timeout(CALL)
            .connect()
            .await
            .expect("TLS connection");
        let mut client = FlightSqlServiceClient::new(channel);
        client
            .handshake("analyst", PASSWORD)
            .await
            .expect("login over TLS");
        let n = single_i64(
            &query(&mut client, "SELECT count(*) FROM patient")
                .await
                .unwrap(),
        );
        assert_eq!(n, 100);
        // A plaintext client gets no answer from the TLS port.
        let mut plain = connect(&server).await;
        assert!(plain.handshake("analyst", PASSWORD).await.is_err());
    });

    let users = dir.path().join("users.toml");
    let output = run(fhirlake(dir.path())
        .env("FHIRLAKE_PASSWORD", PASSWORD)
        .args(["user", "add", "ana", "--role", "analyst", "--users"])
        .arg(&users));
    assert_code(&output, 0);
    let lake_arg = lake.to_str().unwrap();
    let users_arg = users.to_str().unwrap();
    let output = run(fhirlake(dir.path()).args([
        "serve",
        "--lake",
        lake_arg,
        "--users",
        users_arg,
        "--listen",
        "127.0.0.1:0",
    ]));
    assert_code(&output, 2);
    assert!(
        text(&output.stderr).contains("--insecure-plaintext"),
        "{}",
        text(&output.stderr)
    );
    let output = run(fhirlake(dir.path()).args([
        "serve",
        "--lake",
        lake_arg,
        "--users",
        users_arg,
        "--listen",
        "0.0.0.0:0",
        "--insecure-plaintext",
    ]));
    assert_code(&output, 2);
    assert!(
        text(&output.stderr).contains("not a loopback"),
        "{}",
        text(&output.stderr)
    );
    // The user file holds an argon2 hash, never the password.
    let file = std::fs::read_to_string(&users).unwrap();
    assert!(
        file.contains("$argon2id$") && !file.contains(PASSWORD),
        "{file}"
    );
}
