//! The lake layout, owned here and nowhere else (DESIGN.md "Lake layout"): the SQL schemas and
//! the folders they live in, the lake's own table names, the landing zone's folders, the table
//! property and commit-metadata keys (the de-identification stamp), and the Arrow schema of every
//! table fhirlake writes for itself (`raw.<type>`, `lake.runs`, `lake.views`). Code elsewhere
//! names these through the constants; `fhirlake-sql` is handed the schema names.

use std::sync::{Arc, LazyLock};

use arrow::datatypes::{DataType, Field, Fields, Schema, SchemaRef, TimeUnit};
use fhirlake_sql::LakeSchemas;

// SQL schemas (and the folders under the lake root that hold their tables).

/// SQL schema of the SQL-on-FHIR views: the session's default schema.
pub const SCHEMA_VIEWS: &str = "public";
/// SQL schema of the de-identified resources, one table per resource type.
pub const SCHEMA_RAW: &str = "raw";
/// SQL schema of the lake's own tables (`runs`, `views`, and the server's `audit`).
pub const SCHEMA_LAKE: &str = "lake";

/// Folder of the views' tables under the lake root (also accepted as a SQL schema alias).
pub const FOLDER_VIEWS: &str = "views";
/// Folder of the raw tables under the lake root.
pub const FOLDER_RAW: &str = "raw";
/// Folder of the lake's own tables under the lake root.
pub const FOLDER_LAKE: &str = "lake";
/// A table folder's Delta log.
pub const DELTA_LOG: &str = "_delta_log";
/// The writer lock file of a local lake, at its root.
pub const LOCK_FILE: &str = "_fhirlake.lock";

// The lake's own tables (in [`SCHEMA_LAKE`]).

/// The run log, `lake.runs`: one row per finished run.
pub const TABLE_RUNS: &str = "runs";
/// The custom view registry, `lake.views`.
pub const TABLE_VIEWS: &str = "views";
/// The Flight SQL server's audit log as stewards query it, `lake.audit` (not a Delta table).
pub const TABLE_AUDIT: &str = "audit";

// The landing zone (it may hold identified data: never inside the lake).

/// Rejected lines of a run: `<landing>/rejected/<run_id>.ndjson`.
pub const LANDING_REJECTED: &str = "rejected";
/// Staged Parquet of a run: `<landing>/staging/<run_id>/`.
pub const LANDING_STAGING: &str = "staging";
/// A Bulk Data export pulled by `ingest --bulk` / `sync`: `<landing>/bulk/`.
pub const LANDING_BULK: &str = "bulk";

/// The SQL schemas as `fhirlake-sql` is handed them (its sessions, roles and Flight metadata).
pub const LAKE_SCHEMAS: LakeSchemas = LakeSchemas {
    views: SCHEMA_VIEWS,
    resources: SCHEMA_RAW,
    bookkeeping: SCHEMA_LAKE,
};

// Table properties: the de-identification stamp and the statistics restriction.

/// Table property: de-identification key id of the data in the table.
pub const PROP_KEY_ID: &str = "fhirlake.deid.keyId";
/// Table property: hash of the de-identification policy.
pub const PROP_POLICY_HASH: &str = "fhirlake.deid.policyHash";
/// Table property: whether identifiers were removed (`false` only for `--unsafe-no-deid` lakes).
pub const PROP_DEIDENTIFIED: &str = "fhirlake.deid.applied";
/// Delta table property naming the columns that get min/max statistics in the log.
pub const PROP_STATS_COLUMNS: &str = "delta.dataSkippingStatsColumns";
/// Delta table property: how many leading columns get statistics (used when none is safe).
pub const PROP_STATS_NUM_COLUMNS: &str = "delta.dataSkippingNumIndexedCols";

/// Columns whose values may be copied into the Delta log as file statistics (min/max in each
/// `add` action): keys (pseudonyms once de-identified), run ids and instants that are either
/// de-identified (`last_updated`, read from the de-identified resource) or the run's own clock.
/// Every other column (`resource` JSON text, view columns with values taken from resources, view
/// definitions) gets no statistics, so the log holds no resource values: what the log holds is
/// copied into every later checkpoint and outlives the data files a purge rewrites.
pub const STATS_SAFE_COLUMNS: [&str; 7] = [
    "id",
    "patient_id",
    "last_updated",
    "run_id",
    "_resource_id",
    "started_at",
    "finished_at",
];

/// The table properties that keep a table's Delta statistics to [`STATS_SAFE_COLUMNS`]: the
/// safe ones among the table's top-level `columns`, or no statistics at all when it has none (a column count of 0:
/// an empty column list is not a valid `dataSkippingStatsColumns`).
pub fn statistics_properties<'a>(
    columns: impl IntoIterator<Item = &'a str>,
) -> Vec<(String, String)> {
    let safe: Vec<&str> = columns
        .into_iter()
        .filter(|name| STATS_SAFE_COLUMNS.contains(name))
        .collect();
    if safe.is_empty() {
        vec![(PROP_STATS_NUM_COLUMNS.to_string(), "0".to_string())]
    } else {
        vec![(PROP_STATS_COLUMNS.to_string(), safe.join(","))]
    }
}

// Commit metadata.

/// Commit-info key: the run (ingest or purge) that wrote the commit.
pub const COMMIT_RUN_ID: &str = "fhirlake.runId";
/// Commit-info key: how a view's table was refreshed (`full` or `incremental`).
pub const COMMIT_VIEW_REFRESH: &str = "fhirlake.viewRefresh";

// Arrow schemas of the tables fhirlake writes for itself.

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

/// Schema of `lake.views`.
pub static VIEWS_SCHEMA: LazyLock<SchemaRef> = LazyLock::new(|| {
    Arc::new(Schema::new(vec![
        Field::new("name", DataType::Utf8, false),
        Field::new("resource", DataType::Utf8, false),
        Field::new("definition", DataType::Utf8, false),
        Field::new("definition_hash", DataType::Utf8, false),
        Field::new("added_at", timestamp_type(), false),
    ]))
});

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lake::TableId;

    #[test]
    fn names_and_folders_follow_the_layout() {
        assert_eq!(LAKE_SCHEMAS.all(), ["public", "raw", "lake"]);
        assert_eq!(TableId::runs().to_string(), "lake.runs");
        assert_eq!(TableId::runs().relative_path(), "lake/runs");
        assert_eq!(
            crate::views::registry::views_table().to_string(),
            "lake.views"
        );
        assert_eq!(TableId::raw("Patient").relative_path(), "raw/patient");
        assert_eq!(TableId::view("patient").relative_path(), "views/patient");
        assert_eq!(
            TableId::parse("views.patient"),
            Some(TableId::view("patient"))
        );
        assert_eq!(
            TableId::parse("public.patient"),
            Some(TableId::view("patient"))
        );
    }
}
