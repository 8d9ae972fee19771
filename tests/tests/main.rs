//! The end-to-end tests: the real `fhirlake` binary (this package's `fhirlake-e2e` bin) driven as a
//! user would, against temporary lakes, the S3-compatible server of scripts/s3-server.sh, the mock
//! Bulk Data server of `fhirlake_tests::bulk_server` and Flight SQL clients. One module per area,
//! all in one test binary so that DataFusion and delta-rs are linked once; run them with
//! `cargo test -p fhirlake-tests` (one area: `cargo test -p fhirlake-tests -- ingest::`).

mod bulk;
mod compartment;
mod crash;
mod deid;
mod flight;
mod ingest;
mod lake_privacy;
mod library;
mod planted;
mod purge;
mod s3;
mod shell;
mod sql_logic;
mod views;
