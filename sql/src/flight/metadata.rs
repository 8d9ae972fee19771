//! What GetSqlInfo and GetXdbcTypeInfo answer, and the result schemas of the key RPCs (which
//! arrow-flight has no builder for). fhirlake tables have no primary or foreign keys, so those results are empty,
//! but their schemas must match the Flight SQL spec exactly (clients check nullability).

use std::sync::Arc;

use arrow_flight::sql::metadata::{
    SqlInfoData, SqlInfoDataBuilder, XdbcTypeInfo, XdbcTypeInfoData, XdbcTypeInfoDataBuilder,
};
use arrow_flight::sql::{
    Nullable, Searchable, SqlInfo, SqlNullOrdering, SqlSupportedCaseSensitivity,
    SqlSupportedTransaction, XdbcDataType, XdbcDatetimeSubcode,
};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::arrow::record_batch::RecordBatch;

use crate::Result;

/// SQL keywords DataFusion understands beyond SQL-92 (reported in SQL_KEYWORDS).
const KEYWORDS: &[&str] = &[
    "ARRAY", "EXPLAIN", "FILTER", "ILIKE", "LIMIT", "OFFSET", "QUALIFY", "RANGE", "SHOW", "STRUCT",
    "UNNEST", "WINDOW", "WITHIN",
];

/// The server's SqlInfo values.
pub fn sql_info() -> Result<SqlInfoData> {
    let mut b = SqlInfoDataBuilder::new();
    b.append(SqlInfo::FlightSqlServerName, "fhirlake");
    b.append(SqlInfo::FlightSqlServerVersion, env!("CARGO_PKG_VERSION"));
    b.append(SqlInfo::FlightSqlServerArrowVersion, "59");
    b.append(SqlInfo::FlightSqlServerReadOnly, true);
    b.append(SqlInfo::FlightSqlServerSql, true);
    b.append(SqlInfo::FlightSqlServerSubstrait, false);
    b.append(
        SqlInfo::FlightSqlServerTransaction,
        SqlSupportedTransaction::None as i32,
    );
    b.append(SqlInfo::FlightSqlServerCancel, false);
    b.append(SqlInfo::FlightSqlServerBulkIngestion, false);
    b.append(SqlInfo::FlightSqlServerStatementTimeout, 0i32);
    b.append(SqlInfo::SqlDdlCatalog, false);
    b.append(SqlInfo::SqlDdlSchema, false);
    b.append(SqlInfo::SqlDdlTable, false);
    b.append(
        SqlInfo::SqlIdentifierCase,
        SqlSupportedCaseSensitivity::SqlCaseSensitivityLowercase as i32,
    );
    b.append(SqlInfo::SqlIdentifierQuoteChar, "\"");
    b.append(
        SqlInfo::SqlQuotedIdentifierCase,
        SqlSupportedCaseSensitivity::SqlCaseSensitivityCaseInsensitive as i32,
    );
    b.append(SqlInfo::SqlAllTablesAreSelectable, true);
    b.append(
        SqlInfo::SqlNullOrdering,
        SqlNullOrdering::SqlNullsSortedHigh as i32,
    );
    b.append(SqlInfo::SqlKeywords, KEYWORDS);
    b.append(SqlInfo::SqlSearchStringEscape, "\\");
    b.append(SqlInfo::SqlSupportsColumnAliasing, true);
    b.append(SqlInfo::SqlNullPlusNullIsNull, true);
    // SupportedAnsi92SqlGrammarLevel::ANSI92_ENTRY_SQL (arrow-flight 59 does not export the enum).
    const ANSI92_ENTRY_SQL: i32 = 0;
    b.append(SqlInfo::SqlAnsi92SupportedLevel, ANSI92_ENTRY_SQL);
    b.append(SqlInfo::SqlTransactionsSupported, false);
    b.build()
        .map_err(|e| crate::Error::Server(format!("building SqlInfo: {e}")))
}

/// The SQL types fhirlake's tables and views use (what JDBC / ODBC clients such as DBeaver list
/// and map columns with), ordered by data type as `getTypeInfo` expects.
pub fn xdbc_type_info() -> Result<XdbcTypeInfoData> {
    struct Type {
        name: &'static str,
        data_type: XdbcDataType,
        column_size: Option<i32>,
        quoted: bool,
        radix: Option<i32>,
        subcode: Option<XdbcDatetimeSubcode>,
    }
    let number = |name, data_type, bits| Type {
        name,
        data_type,
        column_size: Some(bits),
        quoted: false,
        radix: Some(2),
        subcode: None,
    };
    let temporal = |name, data_type, size, subcode| Type {
        name,
        data_type,
        column_size: Some(size),
        quoted: true,
        radix: None,
        subcode: Some(subcode),
    };
    let types = [
        Type {
            name: "BOOLEAN",
            data_type: XdbcDataType::XdbcBit,
            column_size: Some(1),
            quoted: false,
            radix: None,
            subcode: None,
        },
        number("BIGINT", XdbcDataType::XdbcBigint, 64),
        number("INTEGER", XdbcDataType::XdbcInteger, 32),
        number("DOUBLE", XdbcDataType::XdbcDouble, 53),
        Type {
            name: "VARCHAR",
            data_type: XdbcDataType::XdbcVarchar,
            column_size: Some(i32::MAX),
            quoted: true,
            radix: None,
            subcode: None,
        },
        // XDBC_SUBCODE_DATE is an alias of XDBC_SUBCODE_YEAR (1) in the protocol.
        temporal(
            "DATE",
            XdbcDataType::XdbcDate,
            10,
            XdbcDatetimeSubcode::XdbcSubcodeYear,
        ),
        temporal(
            "TIME",
            XdbcDataType::XdbcTime,
            15,
            XdbcDatetimeSubcode::XdbcSubcodeTime,
        ),
        temporal(
            "TIMESTAMP",
            XdbcDataType::XdbcTimestamp,
            32,
            XdbcDatetimeSubcode::XdbcSubcodeTimestamp,
        ),
    ];
    let mut builder = XdbcTypeInfoDataBuilder::new();
    for ty in types {
        let quote = ty.quoted.then(|| "'".to_string());
        builder.append(XdbcTypeInfo {
            type_name: ty.name.into(),
            data_type: ty.data_type,
            column_size: ty.column_size,
            literal_prefix: quote.clone(),
            literal_suffix: quote,
            create_params: None,
            nullable: Nullable::NullabilityNullable,
            case_sensitive: ty.name == "VARCHAR",
            searchable: Searchable::Full,
            unsigned_attribute: ty.radix.map(|_| false),
            fixed_prec_scale: false,
            auto_increment: ty.radix.map(|_| false),
            local_type_name: Some(ty.name.into()),
            minimum_scale: None,
            maximum_scale: None,
            sql_data_type: ty.data_type,
            datetime_subcode: ty.subcode,
            num_prec_radix: ty.radix,
            interval_precision: None,
        });
    }
    builder
        .build()
        .map_err(|e| crate::Error::Server(format!("building XdbcTypeInfo: {e}")))
}

/// Schema of CommandGetPrimaryKeys results.
pub fn primary_keys_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("catalog_name", DataType::Utf8, true),
        Field::new("db_schema_name", DataType::Utf8, true),
        Field::new("table_name", DataType::Utf8, false),
        Field::new("column_name", DataType::Utf8, false),
        Field::new("key_name", DataType::Utf8, true),
        Field::new("key_sequence", DataType::Int32, false),
    ]))
}

/// Schema of CommandGetExportedKeys / ImportedKeys / CrossReference results.
pub fn foreign_keys_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("pk_catalog_name", DataType::Utf8, true),
        Field::new("pk_db_schema_name", DataType::Utf8, true),
        Field::new("pk_table_name", DataType::Utf8, false),
        Field::new("pk_column_name", DataType::Utf8, false),
        Field::new("fk_catalog_name", DataType::Utf8, true),
        Field::new("fk_db_schema_name", DataType::Utf8, true),
        Field::new("fk_table_name", DataType::Utf8, false),
        Field::new("fk_column_name", DataType::Utf8, false),
        Field::new("key_sequence", DataType::Int32, false),
        Field::new("fk_key_name", DataType::Utf8, true),
        Field::new("pk_key_name", DataType::Utf8, true),
        Field::new("update_rule", DataType::UInt8, false),
        Field::new("delete_rule", DataType::UInt8, false),
    ]))
}

/// An empty result of `schema`.
pub fn empty(schema: SchemaRef) -> RecordBatch {
    RecordBatch::new_empty(schema)
}
