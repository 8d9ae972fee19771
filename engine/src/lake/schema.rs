//! Arrow schemas of the lake's own tables (`raw.<type>` and `lake.runs`).

use std::sync::{Arc, LazyLock};

use arrow::datatypes::{DataType, Field, Fields, Schema, SchemaRef, TimeUnit};

/// Timestamps in the lake: microseconds, UTC (Delta's `timestamp`).
pub fn timestamp_type() -> DataType {
    DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
}

/// Schema of every `raw.<type>` table.
pub static RAW_SCHEMA: LazyLock<SchemaRef> = LazyLock::new(|| {
    Arc::new(Schema::new(vec![
        Field::new("id", DataType::Utf8, false),
        Field::new("patient_id", DataType::Utf8, true),
        Field::new("last_updated", timestamp_type(), true),
        Field::new("resource", DataType::Utf8, false),
        Field::new("run_id", DataType::Utf8, false),
    ]))
});

/// Per-type counts inside a `lake.runs` row.
pub fn type_counts_fields() -> Fields {
    let mut fields = vec![Field::new("resource_type", DataType::Utf8, false)];
    fields.extend(
        super::runs::TypeCounts::NAMES
            .iter()
            .map(|name| Field::new(*name, DataType::Int64, false)),
    );
    Fields::from(fields)
}

/// Table versions written by a run.
pub fn table_version_fields() -> Fields {
    Fields::from(vec![
        Field::new("table", DataType::Utf8, false),
        Field::new("version", DataType::Int64, false),
    ])
}

/// The files a run read: digest (never the name) and counts.
pub fn source_file_fields() -> Fields {
    Fields::from(vec![
        Field::new("digest", DataType::Utf8, false),
        Field::new("lines", DataType::Int64, false),
        Field::new("bytes", DataType::Int64, false),
    ])
}

/// De-identification rule hits per method.
pub fn rule_hit_fields() -> Fields {
    Fields::from(vec![
        Field::new("method", DataType::Utf8, false),
        Field::new("count", DataType::Int64, false),
    ])
}

/// Schema of `lake.runs`: one row per finished ingest run.
pub static RUNS_SCHEMA: LazyLock<SchemaRef> = LazyLock::new(|| {
    let list_of = |fields: Fields| {
        DataType::List(Arc::new(Field::new(
            "element",
            DataType::Struct(fields),
            true,
        )))
    };
    Arc::new(Schema::new(vec![
        Field::new("run_id", DataType::Utf8, false),
        Field::new("started_at", timestamp_type(), false),
        Field::new("finished_at", timestamp_type(), false),
        Field::new("status", DataType::Utf8, false),
        // One `blake3:` digest per file read (see `SourceFileRecord::digest_of`).
        Field::new(
            "sources",
            DataType::List(Arc::new(Field::new("element", DataType::Utf8, true))),
            false,
        ),
        Field::new("policy_name", DataType::Utf8, false),
        Field::new("policy_hash", DataType::Utf8, false),
        Field::new("key_id", DataType::Utf8, false),
        Field::new("deidentified", DataType::Boolean, false),
        // Added with the policy engine; nullable so that lakes written before it gain them by
        // schema merge on their next run (older rows read as null).
        Field::new("rule_hits", list_of(rule_hit_fields()), true),
        Field::new("free_text_removed", DataType::Int64, true),
        Field::new("unknown_elements_removed", DataType::Int64, true),
        Field::new("dropped_extensions", DataType::Int64, true),
        Field::new("dropped_resources", DataType::Int64, true),
        Field::new("read", DataType::Int64, false),
        Field::new("written", DataType::Int64, false),
        Field::new("updated", DataType::Int64, false),
        Field::new("unchanged", DataType::Int64, false),
        Field::new("deleted", DataType::Int64, false),
        Field::new("rejected", DataType::Int64, false),
        Field::new("counts", list_of(type_counts_fields()), false),
        Field::new("table_versions", list_of(table_version_fields()), false),
        Field::new("landing", DataType::Utf8, true),
        Field::new("fhirlake_version", DataType::Utf8, false),
        // Added with the Bulk Data client (nullable: older lakes gain them by schema merge).
        Field::new("bulk_base_url", DataType::Utf8, true),
        Field::new("bulk_request", DataType::Utf8, true),
        Field::new("transaction_time", DataType::Utf8, true),
        // Added with the source digests: from then on `sources` holds digests (rows written
        // before hold the sources as given on the command line).
        Field::new("source_files", list_of(source_file_fields()), true),
        // Added with the allow-list policies (nullable: older lakes gain them by schema merge):
        // values removed because their JSON shape was not their FHIR type's, and conditional
        // patient references (`Patient?identifier=...`) that matched no patient.
        Field::new("malformed_removed", DataType::Int64, true),
        Field::new("unresolved_patient_references", DataType::Int64, true),
    ]))
});
