//! The Flight service: the lake served over Arrow Flight SQL (`fhirlake serve`).
//!
//! [`FlightServer::bind`] checks the users and the lake, opens the audit log and binds the
//! address; [`FlightServer::run`] serves until shutdown. The RPCs, authentication and audit are
//! `fhirlake_sql::flight`; what a query sees is [`query_service::LakeQueryService`].

pub mod query_service;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use fhirlake_sql::flight::{self, AuditLog, FlightSqlServer, ServerLimits, TlsFiles, UserFile};

pub use query_service::LakeQueryService;

use crate::lake::Lake;
use crate::{Error, Result};

/// Validated settings of a Flight SQL server over a lake.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    /// Address to listen on (port 0 picks a free port).
    pub listen: SocketAddr,
    /// TLS certificate and key; `None` serves plaintext.
    pub tls: Option<TlsFiles>,
    /// Token lifetime, concurrency and time limits.
    pub limits: ServerLimits,
    /// Memory one query may use; `None`: unbounded.
    pub memory_limit: Option<usize>,
    /// How often the newest snapshot is reloaded.
    pub snapshot_refresh: Duration,
    /// The audit log (NDJSON, appended; `lake.audit` for stewards).
    pub audit_log: PathBuf,
}

/// A Flight SQL server bound to its address, not yet serving.
pub struct FlightServer {
    server: FlightSqlServer,
    listener: tokio::net::TcpListener,
    tls: Option<TlsFiles>,
}

impl std::fmt::Debug for FlightServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FlightServer")
            .field("listen", &self.listener.local_addr().ok())
            .field("tls", &self.tls.is_some())
            .finish_non_exhaustive()
    }
}

impl FlightServer {
    /// Builds the server over `lake` for `users`, opens the audit log and binds `config.listen`.
    pub async fn bind(lake: Lake, users: UserFile, config: ServeConfig) -> Result<Self> {
        let audit = AuditLog::open(&config.audit_log)?;
        let query = Arc::new(LakeQueryService::new(
            lake,
            config.memory_limit,
            config.audit_log.clone(),
            config.snapshot_refresh,
        ));
        let server = flight::server(query, users, audit, config.limits)?;
        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .map_err(|e| Error::io(format!("listening on {}", config.listen), e))?;
        Ok(Self {
            server,
            listener,
            tls: config.tls,
        })
    }

    /// The address the server listens on (the port chosen when `listen` asked for port 0).
    pub fn local_addr(&self) -> Result<SocketAddr> {
        self.listener
            .local_addr()
            .map_err(|e| Error::io("the server's address", e))
    }

    /// The listening address as a client URL (`grpc://...` or `grpc+tls://...`).
    pub fn describe(&self) -> Result<String> {
        Ok(flight::describe_listen(
            self.local_addr()?,
            self.tls.is_some(),
        ))
    }

    /// Serves until `shutdown` resolves.
    pub async fn run(self, shutdown: impl Future<Output = ()> + Send) -> Result<()> {
        Ok(flight::serve(self.server, self.listener, self.tls, shutdown).await?)
    }
}
