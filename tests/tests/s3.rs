//! Ingest from an `s3://` source into an `s3://` lake on a real S3-compatible server.
//!
//! `scripts/test.sh` starts `moto_server` on 127.0.0.1, creates the bucket and sets
//! `FHIRLAKE_TEST_S3_ENDPOINT` / `FHIRLAKE_TEST_S3_BUCKET` (and `FHIRLAKE_REQUIRE_S3=1`, so that a
//! missing server fails the run instead of skipping the test).

use std::sync::Arc;

use fhirlake_tests::*;
use object_store::aws::AmazonS3Builder;
use object_store::{ObjectStore, ObjectStoreExt};

#[test]
fn s3_source_into_s3_lake() {
    let (Ok(endpoint), Ok(bucket)) = (
        std::env::var("FHIRLAKE_TEST_S3_ENDPOINT"),
        std::env::var("FHIRLAKE_TEST_S3_BUCKET"),
    ) else {
        assert!(
            std::env::var("FHIRLAKE_REQUIRE_S3").is_err(),
            "FHIRLAKE_REQUIRE_S3 is set but no S3 endpoint was given"
        );
        eprintln!("skipped: no S3 endpoint (run scripts/test.sh)");
        return;
    };
    let prefix = format!("run-{}", std::process::id());
    let store: Arc<dyn ObjectStore> = Arc::new(
        AmazonS3Builder::new()
            .with_endpoint(&endpoint)
            .with_bucket_name(&bucket)
            .with_allow_http(true)
            .with_region("us-east-1")
            .with_access_key_id("test")
            .with_secret_access_key("test")
            .build()
            .unwrap(),
    );
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        for name in [
            "36.Patient.ndjson.gz",
            "10.Condition.ndjson.gz",
            "30.Observation.ndjson.gz",
        ] {
            let bytes = std::fs::read(sample_dir().join(name)).unwrap();
            let path = object_store::path::Path::from(format!("{prefix}/source/{name}"));
            store.put(&path, bytes.into()).await.unwrap();
        }
    });

    let dir = tempfile::tempdir().unwrap();
    let source = format!("s3://{bucket}/{prefix}/source/");
    let lake = format!("s3://{bucket}/{prefix}/lake");
    let with_s3 = |command: &mut std::process::Command| {
        command
            .env("AWS_ENDPOINT", &endpoint)
            .env("AWS_ALLOW_HTTP", "true")
            .env("AWS_ACCESS_KEY_ID", "test")
            .env("AWS_SECRET_ACCESS_KEY", "test")
            .env("AWS_REGION", "us-east-1");
    };
    for round in 0..2 {
        let mut command = fhirlake(dir.path());
        with_s3(&mut command);
        command.args(["ingest", "--lake", &lake, "--unsafe-no-deid", "-q", &source]);
        let output = run(&mut command);
        assert_code(&output, 0);
        let mut command = fhirlake(dir.path());
        with_s3(&mut command);
        command.args([
            "sql",
            "--lake",
            &lake,
            "--format",
            "ndjson",
            "SELECT (SELECT count(*) FROM raw.patient) AS patients, \
                    (SELECT count(*) FROM raw.condition) AS conditions, \
                    (SELECT count(*) FROM raw.observation) AS observations, \
                    (SELECT count(*) FROM lake.runs) AS runs",
        ]);
        let output = run(&mut command);
        assert_code(&output, 0);
        assert_eq!(
            text(&output.stdout),
            format!(
                "{{\"patients\":100,\"conditions\":639,\"observations\":10000,\"runs\":{}}}\n",
                round + 1
            )
        );
    }
    // The Delta log is on the object store, not on local disk.
    runtime.block_on(async {
        let log = object_store::path::Path::from(format!(
            "{prefix}/lake/raw/patient/_delta_log/00000000000000000000.json"
        ));
        store.head(&log).await.expect("Delta log on S3");
    });
}
