//! The Flight SQL RPCs of `fhirlake serve` ([`FlightSqlServer`]).
//!
//! Every call but Handshake needs `authorization: Bearer <token>`. Statement queries answer
//! GetFlightInfo with one endpoint (no location: "this server") whose ticket DoGet redeems;
//! DoGet streams the DataFusion result batch by batch (split to stay under the message limit),
//! holding a concurrency permit and a deadline, and stops the query when the client goes away
//! (dropping the stream drops the DataFusion tasks). Each request is audited.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use arrow_flight::encode::FlightDataEncoderBuilder;
use arrow_flight::error::FlightError;
use arrow_flight::flight_service_server::FlightService;
use arrow_flight::sql::metadata::{
    GetCatalogsBuilder, GetDbSchemasBuilder, GetTablesBuilder, SqlInfoData, XdbcTypeInfoData,
};
use arrow_flight::sql::server::{FlightSqlService, PeekableFlightDataStream};
use arrow_flight::sql::{
    ActionClosePreparedStatementRequest, ActionCreatePreparedStatementRequest,
    ActionCreatePreparedStatementResult, Any, CommandGetCatalogs, CommandGetCrossReference,
    CommandGetDbSchemas, CommandGetExportedKeys, CommandGetImportedKeys, CommandGetPrimaryKeys,
    CommandGetSqlInfo, CommandGetTableTypes, CommandGetTables, CommandGetXdbcTypeInfo,
    CommandPreparedStatementQuery, CommandStatementQuery, DoPutPreparedStatementResult,
    ProstMessageExt, SqlInfo, TicketStatementQuery,
};
use arrow_flight::{
    Action, ActionType, FlightData, FlightDescriptor, FlightEndpoint, FlightInfo, HandshakeRequest,
    HandshakeResponse, IpcMessage, SchemaAsIpc, Ticket, decode::FlightRecordBatchStream,
};
use base64::Engine as _;
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::arrow::ipc::writer::IpcWriteOptions;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::common::ScalarValue;
use datafusion::error::DataFusionError;
use datafusion::prelude::DataFrame;
use futures::{Stream, StreamExt, TryStreamExt};
use prost::Message;
use tokio::sync::Semaphore;
use tonic::metadata::MetadataValue;
use tonic::{Request, Response, Status, Streaming};

use super::ServerLimits;
use super::audit::{AuditEvent, AuditLog};
use super::auth::{Prepared, Sessions, TokenError, UserFile};
use super::metadata::{empty, foreign_keys_schema, primary_keys_schema, sql_info, xdbc_type_info};
use super::session_options::{
    CLOSE_SESSION, CloseSessionResult, CloseSessionStatus, ErrorValue, GET_SESSION_OPTIONS,
    GetSessionOptionsResult, OptionValue, SET_SESSION_OPTIONS, SessionOptionValue,
    SetSessionOptionError, SetSessionOptionsRequest, SetSessionOptionsResult,
};
use crate::service::{AsOf, Caller, QueryOptions, QueryService, Role};
use crate::session::CATALOG;

type DoGetStream = Pin<Box<dyn Stream<Item = Result<FlightData, Status>> + Send + 'static>>;

/// Name of the session option that pins the lake snapshot.
pub const AS_OF_OPTION: &str = "as_of";
/// Rows a DoPut may bind to a prepared query (one execution per statement).
const MAX_BOUND_ROWS: usize = 1;

/// The Flight SQL service.
#[derive(Clone)]
pub struct FlightSqlServer {
    inner: Arc<Inner>,
}

struct Inner {
    query: Arc<dyn QueryService>,
    users: UserFile,
    sessions: Sessions,
    audit: AuditLog,
    limits: ServerLimits,
    running: Arc<Semaphore>,
    sql_info: SqlInfoData,
    xdbc_types: XdbcTypeInfoData,
}

impl std::fmt::Debug for FlightSqlServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FlightSqlServer")
            .field("limits", &self.inner.limits)
            .finish_non_exhaustive()
    }
}

/// An authenticated request's session id and caller.
struct Authed {
    session: String,
    caller: Caller,
    peer: Option<String>,
}

impl FlightSqlServer {
    /// A server over `query`.
    pub fn try_new(
        query: Arc<dyn QueryService>,
        users: UserFile,
        audit: AuditLog,
        limits: ServerLimits,
    ) -> crate::Result<Self> {
        Ok(Self {
            inner: Arc::new(Inner {
                query,
                users,
                sessions: Sessions::new(limits.token_ttl),
                audit,
                running: Arc::new(Semaphore::new(limits.max_concurrent_queries.max(1))),
                limits,
                sql_info: sql_info()?,
                xdbc_types: xdbc_type_info()?,
            }),
        })
    }

    fn authenticate<T>(&self, request: &Request<T>) -> Result<Authed, Status> {
        let peer = request.remote_addr().map(|a| a.to_string());
        let header = request
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| {
                Status::unauthenticated("missing `authorization: Bearer <token>`; log in first")
            })?;
        let token = strip_scheme(header, "bearer")
            .ok_or_else(|| Status::unauthenticated("authorization must be a Bearer token"))?;
        match self.inner.sessions.authenticate(token) {
            Ok((session, caller)) => Ok(Authed {
                session,
                caller,
                peer,
            }),
            Err(TokenError::Expired) => Err(Status::unauthenticated("token expired; log in again")),
            Err(TokenError::Invalid) => Err(Status::unauthenticated("invalid token")),
        }
    }

    fn audit(
        &self,
        authed: &Authed,
        action: &str,
        sql: Option<&str>,
        start: Instant,
        outcome: &str,
    ) {
        self.inner.audit.record(AuditEvent {
            user: authed.caller.user.clone(),
            role: authed.caller.role.to_string(),
            action: action.to_string(),
            sql: sql.map(str::to_string),
            duration_ms: start.elapsed().as_millis() as u64,
            outcome: outcome.to_string(),
            peer: authed.peer.clone(),
            ..AuditEvent::default()
        });
    }

    /// Plans `sql` for the caller; records a failure in the audit log.
    async fn plan(
        &self,
        authed: &Authed,
        action: &str,
        sql: &str,
        params: Option<Vec<ScalarValue>>,
    ) -> Result<DataFrame, Status> {
        let start = Instant::now();
        let planned: crate::Result<DataFrame> = async {
            let df = self.inner.query.plan(&authed.caller, sql).await?;
            let Some(params) = params else {
                return Ok(df);
            };
            // Clients send what their language has (large strings, other int widths): cast each
            // value to the type DataFusion inferred for its placeholder.
            let types = df.logical_plan().get_parameter_types()?;
            let params = params
                .into_iter()
                .enumerate()
                .map(|(i, value)| match types.get(&format!("${}", i + 1)) {
                    Some(Some(ty)) if value.data_type() != *ty => value.cast_to(ty),
                    _ => Ok(value),
                })
                .collect::<Result<Vec<_>, _>>()?;
            Ok(df.with_param_values(params)?)
        }
        .await;
        planned.map_err(|e| {
            let status = error_status(&e, &self.inner.limits);
            self.audit(authed, action, Some(sql), start, &outcome_of(&status));
            status
        })
    }

    /// Runs `sql` and streams its batches.
    async fn execute(
        &self,
        authed: Authed,
        action: &str,
        sql: String,
        params: Option<Vec<ScalarValue>>,
    ) -> Result<Response<DoGetStream>, Status> {
        let start = Instant::now();
        let permit = match self.inner.running.clone().try_acquire_owned() {
            Ok(permit) => permit,
            Err(_) => {
                let status = Status::resource_exhausted(format!(
                    "too many queries running (server limit {}); retry later",
                    self.inner.limits.max_concurrent_queries
                ));
                self.audit(&authed, action, Some(&sql), start, &outcome_of(&status));
                return Err(status);
            }
        };
        let deadline = tokio::time::Instant::now() + self.inner.limits.query_timeout;
        let df = self.plan(&authed, action, &sql, params).await?;
        let schema: SchemaRef = Arc::new(df.schema().as_arrow().clone());
        let stream = match tokio::time::timeout_at(deadline, df.execute_stream()).await {
            Ok(Ok(stream)) => stream,
            Ok(Err(e)) => {
                let status = error_status(&e.into(), &self.inner.limits);
                self.audit(&authed, action, Some(&sql), start, &outcome_of(&status));
                return Err(status);
            }
            Err(_) => {
                let status = timeout_status(&self.inner.limits);
                self.audit(&authed, action, Some(&sql), start, &outcome_of(&status));
                return Err(status);
            }
        };
        let rows = Arc::new(AtomicU64::new(0));
        let record = QueryRecord {
            audit: self.inner.audit.clone(),
            event: AuditEvent {
                user: authed.caller.user.clone(),
                role: authed.caller.role.to_string(),
                action: action.to_string(),
                sql: Some(sql),
                peer: authed.peer.clone(),
                ..AuditEvent::default()
            },
            start,
            rows: rows.clone(),
            bytes: 0,
            outcome: None,
            _permit: permit,
        };
        let limits = self.inner.limits.clone();
        // Batches under the deadline; the first error ends the stream.
        let batches = futures::stream::unfold((stream, false), move |(mut stream, done)| {
            let rows = rows.clone();
            let limits = limits.clone();
            async move {
                if done {
                    return None;
                }
                match tokio::time::timeout_at(deadline, stream.next()).await {
                    Err(_) => Some((
                        Err(FlightError::Tonic(Box::new(timeout_status(&limits)))),
                        (stream, true),
                    )),
                    Ok(None) => None,
                    Ok(Some(Ok(batch))) => {
                        rows.fetch_add(batch.num_rows() as u64, Ordering::Relaxed);
                        Some((Ok(batch), (stream, false)))
                    }
                    Ok(Some(Err(e))) => Some((
                        Err(FlightError::Tonic(Box::new(error_status(
                            &e.into(),
                            &limits,
                        )))),
                        (stream, true),
                    )),
                }
            }
        });
        let encoded = FlightDataEncoderBuilder::new()
            .with_schema(schema)
            .with_max_flight_data_size(self.inner.limits.max_message_bytes)
            .build(batches);
        let out: DoGetStream = Box::pin(futures::stream::unfold(
            (encoded, Some(record)),
            |(mut encoded, record)| async move {
                let mut record = record?;
                match encoded.next().await {
                    Some(Ok(data)) => {
                        record.bytes += (data.data_body.len() + data.data_header.len()) as u64;
                        Some((Ok(data), (encoded, Some(record))))
                    }
                    Some(Err(e)) => {
                        let status = flight_error_status(e);
                        record.outcome = Some(outcome_of(&status));
                        drop(record);
                        Some((Err(status), (encoded, None)))
                    }
                    None => {
                        record.outcome = Some("ok".into());
                        None
                    }
                }
            },
        ));
        Ok(Response::new(out))
    }

    /// A FlightInfo whose one ticket is `ticket` (no location: fetch from this server).
    fn flight_info(
        schema: &Schema,
        ticket: Vec<u8>,
        descriptor: FlightDescriptor,
    ) -> Result<Response<FlightInfo>, Status> {
        let info = FlightInfo::new()
            .try_with_schema(schema)
            .map_err(|e| Status::internal(format!("encoding schema: {e}")))?
            .with_endpoint(FlightEndpoint::new().with_ticket(Ticket::new(ticket)))
            .with_descriptor(descriptor)
            .with_total_records(-1)
            .with_ordered(true);
        Ok(Response::new(info))
    }

    /// Streams a metadata result and audits it.
    fn metadata_batch(
        &self,
        authed: &Authed,
        action: &str,
        start: Instant,
        batch: Result<RecordBatch, FlightError>,
    ) -> Result<Response<DoGetStream>, Status> {
        let batch = batch.map_err(|e| Status::internal(format!("building {action}: {e}")))?;
        self.inner.audit.record(AuditEvent {
            user: authed.caller.user.clone(),
            role: authed.caller.role.to_string(),
            action: format!("metadata:{action}"),
            rows: batch.num_rows() as u64,
            bytes: batch.get_array_memory_size() as u64,
            duration_ms: start.elapsed().as_millis() as u64,
            outcome: "ok".into(),
            peer: authed.peer.clone(),
            ..AuditEvent::default()
        });
        let schema = batch.schema();
        let stream = FlightDataEncoderBuilder::new()
            .with_schema(schema)
            .with_max_flight_data_size(self.inner.limits.max_message_bytes)
            .build(futures::stream::once(async move { Ok(batch) }))
            .map_err(flight_error_status);
        let stream: DoGetStream = Box::pin(stream);
        Ok(Response::new(stream))
    }

    async fn tables(&self, authed: &Authed) -> Result<Vec<crate::TableInfo>, Status> {
        self.inner
            .query
            .tables(&authed.caller)
            .await
            .map_err(|e| error_status(&e, &self.inner.limits))
    }

    fn schemas_of(&self, role: Role) -> Vec<&'static str> {
        self.inner.query.schemas().readable_by(role)
    }

    async fn login(
        &self,
        request: &Request<Streaming<HandshakeRequest>>,
    ) -> Result<String, Status> {
        let peer = request.remote_addr().map(|a| a.to_string());
        let header = request
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| {
                Status::unauthenticated(
                    "Handshake needs `authorization: Basic <base64 user:password>` or a Bearer token",
                )
            })?;
        if let Some(token) = strip_scheme(header, "bearer") {
            // A client re-presenting its token: confirm it and hand it back.
            return match self.inner.sessions.authenticate(token) {
                Ok(_) => Ok(token.to_string()),
                Err(TokenError::Expired) => {
                    Err(Status::unauthenticated("token expired; log in again"))
                }
                Err(TokenError::Invalid) => Err(Status::unauthenticated("invalid token")),
            };
        }
        let basic = strip_scheme(header, "basic")
            .ok_or_else(|| Status::unauthenticated("authorization must be Basic or Bearer"))?;
        // Go clients (ADBC) send unpadded base64, others padded: accept both.
        let lenient = base64::engine::GeneralPurpose::new(
            &base64::alphabet::STANDARD,
            base64::engine::GeneralPurposeConfig::new()
                .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent),
        );
        let decoded = lenient
            .decode(basic.trim())
            .ok()
            .and_then(|b| String::from_utf8(b).ok())
            .ok_or_else(|| Status::invalid_argument("malformed Basic credentials"))?;
        let (user, password) = decoded
            .split_once(':')
            .ok_or_else(|| Status::invalid_argument("malformed Basic credentials"))?;
        let start = Instant::now();
        // argon2 is deliberately slow: keep it off the async workers.
        let users = self.inner.users.clone();
        let (name, secret) = (user.to_string(), password.to_string());
        let role = tokio::task::spawn_blocking(move || users.verify(&name, &secret))
            .await
            .map_err(|_| Status::internal("password check failed"))?;
        let mut event = AuditEvent {
            user: user.to_string(),
            action: "login".into(),
            peer,
            ..AuditEvent::default()
        };
        let Some(role) = role else {
            event.duration_ms = start.elapsed().as_millis() as u64;
            event.outcome = "denied: wrong user name or password".into();
            self.inner.audit.record(event);
            return Err(Status::unauthenticated("wrong user name or password"));
        };
        let token = self
            .inner
            .sessions
            .issue(user, role)
            .map_err(|e| Status::internal(e.to_string()))?;
        event.role = role.to_string();
        event.duration_ms = start.elapsed().as_millis() as u64;
        event.outcome = "ok".into();
        self.inner.audit.record(event);
        Ok(token)
    }
}

/// Audits a streamed query when it ends, however it ends (a dropped stream is a cancel).
struct QueryRecord {
    audit: AuditLog,
    event: AuditEvent,
    start: Instant,
    rows: Arc<AtomicU64>,
    bytes: u64,
    outcome: Option<String>,
    _permit: tokio::sync::OwnedSemaphorePermit,
}

impl Drop for QueryRecord {
    fn drop(&mut self) {
        let mut event = std::mem::take(&mut self.event);
        event.rows = self.rows.load(Ordering::Relaxed);
        event.bytes = self.bytes;
        event.duration_ms = self.start.elapsed().as_millis() as u64;
        event.outcome = self
            .outcome
            .take()
            .unwrap_or_else(|| "cancelled: client went away".into());
        self.audit.record(event);
    }
}

fn strip_scheme<'a>(header: &'a str, scheme: &str) -> Option<&'a str> {
    let (given, rest) = header.split_once(' ')?;
    given.eq_ignore_ascii_case(scheme).then(|| rest.trim())
}

fn timeout_status(limits: &ServerLimits) -> Status {
    Status::deadline_exceeded(format!(
        "query exceeded the server's time limit of {} s",
        limits.query_timeout.as_secs_f64()
    ))
}

fn outcome_of(status: &Status) -> String {
    match status.code() {
        tonic::Code::PermissionDenied => format!("denied: {}", status.message()),
        _ => format!("error: {}", status.message()),
    }
}

fn flight_error_status(e: FlightError) -> Status {
    match e {
        FlightError::Tonic(status) => *status,
        other => Status::internal(other.to_string()),
    }
}

/// Maps a query error to a status. Messages name tables, columns and limits, never row values
/// (DataFusion errors carry plan information only).
fn error_status(e: &crate::Error, _limits: &ServerLimits) -> Status {
    match e {
        crate::Error::PermissionDenied(m) => Status::permission_denied(m.clone()),
        crate::Error::VersionPurged { .. } | crate::Error::InstantPurged { .. } => {
            Status::not_found(e.to_string())
        }
        crate::Error::DataFusion(df) => match df.find_root() {
            DataFusionError::ResourcesExhausted(m) => Status::resource_exhausted(format!(
                "query exceeded the server's per-query memory limit: {m}"
            )),
            DataFusionError::Plan(_)
            | DataFusionError::SQL(..)
            | DataFusionError::SchemaError(..) => Status::invalid_argument(df.to_string()),
            DataFusionError::Execution(m) if m.contains("Memory") || m.contains("memory") => {
                Status::resource_exhausted(format!(
                    "query exceeded the server's per-query memory limit: {m}"
                ))
            }
            other => Status::internal(other.to_string()),
        },
        other => Status::internal(other.to_string()),
    }
}

/// DataFusion numbers placeholders `$1`, `$2`; ADBC, JDBC and DB-API send `?`. Rewrites each
/// `?` placeholder token (not inside strings or comments) to the next `$n`.
pub fn number_placeholders(sql: &str) -> Result<String, Status> {
    use datafusion::sql::sqlparser::dialect::GenericDialect;
    use datafusion::sql::sqlparser::tokenizer::{Token, Tokenizer};
    let tokens = Tokenizer::new(&GenericDialect {}, sql)
        .tokenize()
        .map_err(|e| Status::invalid_argument(format!("SQL: {e}")))?;
    if !tokens
        .iter()
        .any(|t| matches!(t, Token::Placeholder(p) if p == "?"))
    {
        return Ok(sql.to_string());
    }
    let mut n = 0;
    Ok(tokens
        .into_iter()
        .map(|t| match t {
            Token::Placeholder(p) if p == "?" => {
                n += 1;
                format!("${n}")
            }
            other => other.to_string(),
        })
        .collect())
}

/// Parameter schema of a planned statement: `$1`, `$2`, ... with their inferred types.
fn parameter_schema(df: &DataFrame) -> Result<Schema, Status> {
    let types = df
        .logical_plan()
        .get_parameter_types()
        .map_err(|e| Status::invalid_argument(e.to_string()))?;
    let mut params: Vec<(usize, String, DataType)> = types
        .into_iter()
        .map(|(name, ty)| {
            let index = name.trim_start_matches('$').parse().unwrap_or(usize::MAX);
            (index, name, ty.unwrap_or(DataType::Null))
        })
        .collect();
    params.sort();
    Ok(Schema::new(
        params
            .into_iter()
            .map(|(_, name, ty)| Field::new(name, ty, true))
            .collect::<Vec<_>>(),
    ))
}

fn schema_bytes(schema: &Schema) -> Result<bytes::Bytes, Status> {
    let message: Result<IpcMessage, _> =
        SchemaAsIpc::new(schema, &IpcWriteOptions::default()).try_into();
    message
        .map(|IpcMessage(bytes)| bytes)
        .map_err(|e| Status::internal(format!("encoding schema: {e}")))
}

fn session_option_value(value: &SessionOptionValue) -> Option<String> {
    match value.option_value.as_ref()? {
        OptionValue::StringValue(s) => Some(s.clone()),
        OptionValue::Int64Value(i) => Some(i.to_string()),
        _ => None,
    }
}

#[tonic::async_trait]
impl FlightSqlService for FlightSqlServer {
    type FlightService = FlightSqlServer;

    async fn do_handshake(
        &self,
        request: Request<Streaming<HandshakeRequest>>,
    ) -> Result<
        Response<Pin<Box<dyn Stream<Item = Result<HandshakeResponse, Status>> + Send>>>,
        Status,
    > {
        let token = self.login(&request).await?;
        let reply = HandshakeResponse {
            protocol_version: 0,
            payload: token.clone().into_bytes().into(),
        };
        let mut response: Response<
            Pin<Box<dyn Stream<Item = Result<HandshakeResponse, Status>> + Send>>,
        > = Response::new(Box::pin(futures::stream::iter([Ok(reply)])));
        let header = MetadataValue::try_from(format!("Bearer {token}"))
            .map_err(|_| Status::internal("token is not a header value"))?;
        response.metadata_mut().insert("authorization", header);
        Ok(response)
    }

    async fn get_flight_info_statement(
        &self,
        query: CommandStatementQuery,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let authed = self.authenticate(&request)?;
        let df = self.plan(&authed, "query", &query.query, None).await?;
        let schema = df.schema().as_arrow().clone();
        let ticket = TicketStatementQuery {
            statement_handle: query.query.into_bytes().into(),
        };
        Self::flight_info(
            &schema,
            ticket.as_any().encode_to_vec(),
            request.into_inner(),
        )
    }

    async fn do_get_statement(
        &self,
        ticket: TicketStatementQuery,
        request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        let authed = self.authenticate(&request)?;
        let sql = String::from_utf8(ticket.statement_handle.to_vec())
            .map_err(|_| Status::invalid_argument("statement handle is not a query"))?;
        self.execute(authed, "query", sql, None).await
    }

    async fn do_action_create_prepared_statement(
        &self,
        query: ActionCreatePreparedStatementRequest,
        request: Request<Action>,
    ) -> Result<ActionCreatePreparedStatementResult, Status> {
        let authed = self.authenticate(&request)?;
        let start = Instant::now();
        let sql = number_placeholders(&query.query)?;
        let df = self.plan(&authed, "prepare", &sql, None).await?;
        let dataset_schema = schema_bytes(df.schema().as_arrow())?;
        let parameter_schema = schema_bytes(&parameter_schema(&df)?)?;
        let handle = self
            .inner
            .sessions
            .add_prepared(
                &authed.session,
                Prepared {
                    sql: sql.clone(),
                    params: None,
                },
            )
            .map_err(|e| Status::unauthenticated(e.to_string()))?;
        self.audit(&authed, "prepare", Some(&sql), start, "ok");
        Ok(ActionCreatePreparedStatementResult {
            prepared_statement_handle: handle.into_bytes().into(),
            dataset_schema,
            parameter_schema,
        })
    }

    async fn get_flight_info_prepared_statement(
        &self,
        cmd: CommandPreparedStatementQuery,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let authed = self.authenticate(&request)?;
        let prepared = self.prepared(&authed, &cmd.prepared_statement_handle)?;
        let df = self
            .plan(&authed, "prepared query", &prepared.sql, prepared.params)
            .await?;
        let schema = df.schema().as_arrow().clone();
        Self::flight_info(&schema, cmd.as_any().encode_to_vec(), request.into_inner())
    }

    async fn do_get_prepared_statement(
        &self,
        cmd: CommandPreparedStatementQuery,
        request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        let authed = self.authenticate(&request)?;
        let prepared = self.prepared(&authed, &cmd.prepared_statement_handle)?;
        self.execute(authed, "prepared query", prepared.sql, prepared.params)
            .await
    }

    async fn do_put_prepared_statement_query(
        &self,
        cmd: CommandPreparedStatementQuery,
        request: Request<PeekableFlightDataStream>,
    ) -> Result<DoPutPreparedStatementResult, Status> {
        let authed = self.authenticate(&request)?;
        let start = Instant::now();
        let handle = cmd.prepared_statement_handle.clone();
        let prepared = self.prepared(&authed, &handle)?;
        let mut batches = FlightRecordBatchStream::new_from_flight_data(
            request
                .into_inner()
                .map_err(|s| FlightError::Tonic(Box::new(s))),
        );
        let mut params: Option<Vec<ScalarValue>> = None;
        let mut rows = 0usize;
        while let Some(batch) = batches.next().await {
            let batch = batch.map_err(|e| Status::invalid_argument(format!("parameters: {e}")))?;
            for row in 0..batch.num_rows() {
                rows += 1;
                if rows > MAX_BOUND_ROWS {
                    return Err(Status::invalid_argument(format!(
                        "bind one row of parameters per execution (got more than {MAX_BOUND_ROWS})"
                    )));
                }
                params = Some(
                    batch
                        .columns()
                        .iter()
                        .map(|column| ScalarValue::try_from_array(column, row))
                        .collect::<Result<_, _>>()
                        .map_err(|e| Status::invalid_argument(format!("parameters: {e}")))?,
                );
            }
        }
        let bound = params.unwrap_or_default();
        let handle_text = String::from_utf8_lossy(&handle).into_owned();
        if !self
            .inner
            .sessions
            .bind(&authed.session, &handle_text, bound)
        {
            return Err(Status::not_found(
                "no such prepared statement in this session",
            ));
        }
        self.audit(&authed, "bind", Some(&prepared.sql), start, "ok");
        Ok(DoPutPreparedStatementResult {
            prepared_statement_handle: Some(handle),
        })
    }

    async fn do_action_close_prepared_statement(
        &self,
        query: ActionClosePreparedStatementRequest,
        request: Request<Action>,
    ) -> Result<(), Status> {
        let authed = self.authenticate(&request)?;
        let handle = String::from_utf8_lossy(&query.prepared_statement_handle).into_owned();
        if self
            .inner
            .sessions
            .remove_prepared(&authed.session, &handle)
        {
            Ok(())
        } else {
            Err(Status::not_found(
                "no such prepared statement in this session",
            ))
        }
    }

    async fn get_flight_info_catalogs(
        &self,
        query: CommandGetCatalogs,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.authenticate(&request)?;
        let schema = query.into_builder().schema();
        Self::flight_info(
            &schema,
            query.as_any().encode_to_vec(),
            request.into_inner(),
        )
    }

    async fn do_get_catalogs(
        &self,
        _query: CommandGetCatalogs,
        request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        let authed = self.authenticate(&request)?;
        let start = Instant::now();
        let mut builder = GetCatalogsBuilder::new();
        builder.append(CATALOG);
        self.metadata_batch(&authed, "GetCatalogs", start, builder.build())
    }

    async fn get_flight_info_schemas(
        &self,
        query: CommandGetDbSchemas,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.authenticate(&request)?;
        let schema = query.clone().into_builder().schema();
        Self::flight_info(
            &schema,
            query.as_any().encode_to_vec(),
            request.into_inner(),
        )
    }

    async fn do_get_schemas(
        &self,
        query: CommandGetDbSchemas,
        request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        let authed = self.authenticate(&request)?;
        let start = Instant::now();
        let mut builder: GetDbSchemasBuilder = query.into_builder();
        for schema in self.schemas_of(authed.caller.role) {
            builder.append(CATALOG, schema);
        }
        self.metadata_batch(&authed, "GetDbSchemas", start, builder.build())
    }

    async fn get_flight_info_tables(
        &self,
        query: CommandGetTables,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.authenticate(&request)?;
        let schema = query.clone().into_builder().schema();
        Self::flight_info(
            &schema,
            query.as_any().encode_to_vec(),
            request.into_inner(),
        )
    }

    async fn do_get_tables(
        &self,
        query: CommandGetTables,
        request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        let authed = self.authenticate(&request)?;
        let start = Instant::now();
        let mut builder: GetTablesBuilder = query.into_builder();
        for table in self.tables(&authed).await? {
            builder
                .append(
                    &table.catalog,
                    &table.schema,
                    &table.name,
                    table.table_type,
                    &table.arrow_schema,
                )
                .map_err(|e| Status::internal(format!("encoding table schema: {e}")))?;
        }
        self.metadata_batch(&authed, "GetTables", start, builder.build())
    }

    async fn get_flight_info_table_types(
        &self,
        query: CommandGetTableTypes,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.authenticate(&request)?;
        let schema = query.into_builder().schema();
        Self::flight_info(
            &schema,
            query.as_any().encode_to_vec(),
            request.into_inner(),
        )
    }

    async fn do_get_table_types(
        &self,
        query: CommandGetTableTypes,
        request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        let authed = self.authenticate(&request)?;
        let start = Instant::now();
        let mut builder = query.into_builder();
        builder.append("TABLE");
        self.metadata_batch(&authed, "GetTableTypes", start, builder.build())
    }

    async fn get_flight_info_sql_info(
        &self,
        query: CommandGetSqlInfo,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.authenticate(&request)?;
        let schema = query.clone().into_builder(&self.inner.sql_info).schema();
        Self::flight_info(
            &schema,
            query.as_any().encode_to_vec(),
            request.into_inner(),
        )
    }

    async fn do_get_sql_info(
        &self,
        query: CommandGetSqlInfo,
        request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        let authed = self.authenticate(&request)?;
        let start = Instant::now();
        let batch = query.into_builder(&self.inner.sql_info).build();
        self.metadata_batch(&authed, "GetSqlInfo", start, batch)
    }

    async fn get_flight_info_xdbc_type_info(
        &self,
        query: CommandGetXdbcTypeInfo,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.authenticate(&request)?;
        let schema = query.into_builder(&self.inner.xdbc_types).schema();
        Self::flight_info(
            &schema,
            query.as_any().encode_to_vec(),
            request.into_inner(),
        )
    }

    async fn do_get_xdbc_type_info(
        &self,
        query: CommandGetXdbcTypeInfo,
        request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        let authed = self.authenticate(&request)?;
        let start = Instant::now();
        let batch = query.into_builder(&self.inner.xdbc_types).build();
        self.metadata_batch(&authed, "GetXdbcTypeInfo", start, batch)
    }

    async fn get_flight_info_primary_keys(
        &self,
        query: CommandGetPrimaryKeys,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.authenticate(&request)?;
        Self::flight_info(
            &primary_keys_schema(),
            query.as_any().encode_to_vec(),
            request.into_inner(),
        )
    }

    async fn do_get_primary_keys(
        &self,
        _query: CommandGetPrimaryKeys,
        request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        let authed = self.authenticate(&request)?;
        let batch = Ok(empty(primary_keys_schema()));
        self.metadata_batch(&authed, "GetPrimaryKeys", Instant::now(), batch)
    }

    async fn get_flight_info_exported_keys(
        &self,
        query: CommandGetExportedKeys,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.authenticate(&request)?;
        Self::flight_info(
            &foreign_keys_schema(),
            query.as_any().encode_to_vec(),
            request.into_inner(),
        )
    }

    async fn do_get_exported_keys(
        &self,
        _query: CommandGetExportedKeys,
        request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        let authed = self.authenticate(&request)?;
        let batch = Ok(empty(foreign_keys_schema()));
        self.metadata_batch(&authed, "GetExportedKeys", Instant::now(), batch)
    }

    async fn get_flight_info_imported_keys(
        &self,
        query: CommandGetImportedKeys,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.authenticate(&request)?;
        Self::flight_info(
            &foreign_keys_schema(),
            query.as_any().encode_to_vec(),
            request.into_inner(),
        )
    }

    async fn do_get_imported_keys(
        &self,
        _query: CommandGetImportedKeys,
        request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        let authed = self.authenticate(&request)?;
        let batch = Ok(empty(foreign_keys_schema()));
        self.metadata_batch(&authed, "GetImportedKeys", Instant::now(), batch)
    }

    async fn get_flight_info_cross_reference(
        &self,
        query: CommandGetCrossReference,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.authenticate(&request)?;
        Self::flight_info(
            &foreign_keys_schema(),
            query.as_any().encode_to_vec(),
            request.into_inner(),
        )
    }

    async fn do_get_cross_reference(
        &self,
        _query: CommandGetCrossReference,
        request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        let authed = self.authenticate(&request)?;
        let batch = Ok(empty(foreign_keys_schema()));
        self.metadata_batch(&authed, "GetCrossReference", Instant::now(), batch)
    }

    async fn list_custom_actions(&self) -> Option<Vec<Result<ActionType, Status>>> {
        Some(
            [
                (
                    SET_SESSION_OPTIONS,
                    "Sets session options (`as_of`: a lake snapshot pin).",
                ),
                (GET_SESSION_OPTIONS, "Returns the session options."),
                (
                    CLOSE_SESSION,
                    "Ends the session: its token and prepared statements stop working.",
                ),
            ]
            .into_iter()
            .map(|(r#type, description)| {
                Ok(ActionType {
                    r#type: r#type.into(),
                    description: description.into(),
                })
            })
            .collect(),
        )
    }

    async fn do_action_fallback(
        &self,
        request: Request<Action>,
    ) -> Result<Response<<Self as FlightService>::DoActionStream>, Status> {
        let authed = self.authenticate(&request)?;
        let start = Instant::now();
        let action = request.into_inner();
        let body: Vec<u8> = match action.r#type.as_str() {
            SET_SESSION_OPTIONS => {
                let req = SetSessionOptionsRequest::decode(action.body.as_ref())
                    .map_err(|e| Status::invalid_argument(format!("SetSessionOptions: {e}")))?;
                let mut options = authed.caller.options.clone();
                let mut errors = std::collections::HashMap::new();
                for (name, value) in req.session_options {
                    if name != AS_OF_OPTION {
                        errors.insert(
                            name,
                            SetSessionOptionError {
                                value: ErrorValue::InvalidName as i32,
                            },
                        );
                        continue;
                    }
                    if value.option_value.is_none() {
                        options = QueryOptions::default();
                        continue;
                    }
                    match session_option_value(&value).and_then(|v| v.parse::<AsOf>().ok()) {
                        Some(as_of) => options.as_of = Some(as_of),
                        None => {
                            errors.insert(
                                name,
                                SetSessionOptionError {
                                    value: ErrorValue::InvalidValue as i32,
                                },
                            );
                        }
                    }
                }
                self.inner.sessions.set_options(&authed.session, options);
                self.audit(&authed, "SetSessionOptions", None, start, "ok");
                SetSessionOptionsResult { errors }.encode_to_vec()
            }
            GET_SESSION_OPTIONS => {
                let mut session_options = std::collections::HashMap::new();
                if let Some(as_of) = authed.caller.options.as_of {
                    session_options.insert(
                        AS_OF_OPTION.to_string(),
                        SessionOptionValue {
                            option_value: Some(OptionValue::StringValue(as_of.to_string())),
                        },
                    );
                }
                GetSessionOptionsResult { session_options }.encode_to_vec()
            }
            CLOSE_SESSION => {
                self.inner.sessions.close(&authed.session);
                self.audit(&authed, "CloseSession", None, start, "ok");
                CloseSessionResult {
                    status: CloseSessionStatus::Closed as i32,
                }
                .encode_to_vec()
            }
            other => {
                return Err(Status::unimplemented(format!(
                    "action `{other}` is not supported by this server"
                )));
            }
        };
        let result = arrow_flight::Result { body: body.into() };
        let stream: <Self as FlightService>::DoActionStream =
            Box::pin(futures::stream::iter([Ok(result)]));
        Ok(Response::new(stream))
    }

    async fn do_get_fallback(
        &self,
        request: Request<Ticket>,
        message: Any,
    ) -> Result<Response<DoGetStream>, Status> {
        self.authenticate(&request)?;
        Err(Status::unimplemented(format!(
            "DoGet for {} is not supported by this server",
            message.type_url
        )))
    }

    async fn register_sql_info(&self, _id: i32, _result: &SqlInfo) {}
}

impl FlightSqlServer {
    fn prepared(&self, authed: &Authed, handle: &[u8]) -> Result<Prepared, Status> {
        let handle = String::from_utf8_lossy(handle);
        self.inner
            .sessions
            .prepared(&authed.session, &handle)
            .ok_or_else(|| Status::not_found("no such prepared statement in this session"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn question_marks_become_numbered_placeholders() {
        assert_eq!(
            number_placeholders("SELECT * FROM t WHERE a = ? AND b = '?' AND c > ?").unwrap(),
            "SELECT * FROM t WHERE a = $1 AND b = '?' AND c > $2"
        );
        assert_eq!(number_placeholders("SELECT 1").unwrap(), "SELECT 1");
    }
}
