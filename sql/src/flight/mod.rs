//! `fhirlake serve`: an Arrow Flight SQL server over any [`QueryService`].
//!
//! - [`auth`]: users (argon2 hashes in a TOML file), bearer tokens, sessions and their
//!   prepared statements.
//! - [`audit`]: the append-only audit log (`lake.audit` for stewards).
//! - [`service`]: the Flight SQL RPCs (handshake, statements, prepared statements, metadata,
//!   session options), limits and streaming.
//! - [`metadata`]: SqlInfo values and the key-result schemas of the Flight SQL spec.
//! - [`session_options`]: the Flight session action messages.
//!
//! [`serve`] runs the gRPC server (TLS through rustls when given a certificate and key).

pub mod audit;
pub mod auth;
pub mod metadata;
pub mod service;
pub mod session_options;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use arrow_flight::flight_service_server::FlightServiceServer;
use tonic::transport::{Identity, Server, ServerTlsConfig};

pub use audit::{AuditEvent, AuditLog};
pub use auth::{Sessions, UserFile};
pub use service::FlightSqlServer;

use crate::service::QueryService;
use crate::{Error, Result};

/// Server limits and token lifetime.
#[derive(Debug, Clone)]
pub struct ServerLimits {
    /// Bearer token lifetime.
    pub token_ttl: Duration,
    /// Queries streaming at the same time, all users together.
    pub max_concurrent_queries: usize,
    /// Wall-clock limit of one query, from planning to its last batch.
    pub query_timeout: Duration,
    /// Largest Arrow IPC message sent (bigger batches are split; gRPC's default cap is 16 MiB).
    pub max_message_bytes: usize,
}

impl Default for ServerLimits {
    fn default() -> Self {
        Self {
            token_ttl: Duration::from_secs(8 * 3600),
            max_concurrent_queries: 16,
            query_timeout: Duration::from_secs(600),
            max_message_bytes: 4 * 1024 * 1024,
        }
    }
}

/// PEM certificate chain and private key files for TLS.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    /// Certificate chain (PEM).
    pub cert: PathBuf,
    /// Private key (PEM).
    pub key: PathBuf,
}

/// Serves Flight SQL on `listener` until `shutdown` resolves. `tls: None` is plaintext.
pub async fn serve(
    service: FlightSqlServer,
    listener: tokio::net::TcpListener,
    tls: Option<TlsFiles>,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<()> {
    let mut builder = Server::builder();
    if let Some(tls) = tls {
        // Several crypto back ends are compiled into the binary (object-store clients bring
        // their own): name ring, which tonic's TLS is built with. Fails only if already set.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let read = |path: &PathBuf, what: &str| {
            std::fs::read(path)
                .map_err(|e| Error::Server(format!("reading TLS {what} {}: {e}", path.display())))
        };
        let identity = Identity::from_pem(read(&tls.cert, "certificate")?, read(&tls.key, "key")?);
        builder = builder
            .tls_config(ServerTlsConfig::new().identity(identity))
            .map_err(|e| Error::Server(format!("TLS configuration: {e}")))?;
    }
    let incoming = tonic::transport::server::TcpIncoming::from(listener);
    builder
        .add_service(FlightServiceServer::new(service))
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await
        .map_err(|e| Error::Server(format!("Flight SQL server: {e}")))
}

/// Builds the server over `query` with users, audit log and limits.
pub fn server(
    query: Arc<dyn QueryService>,
    users: UserFile,
    audit: AuditLog,
    limits: ServerLimits,
) -> Result<FlightSqlServer> {
    FlightSqlServer::try_new(query, users, audit, limits)
}

/// Address the server listens on (for logs).
pub fn describe_listen(addr: SocketAddr, tls: bool) -> String {
    format!("{}://{addr}", if tls { "grpc+tls" } else { "grpc" })
}
