//! `fhirlake serve`: the Arrow Flight SQL server over a lake.
//!
//! The flags are validated into a [`ServeConfig`] before any I/O (TLS or an explicit
//! `--insecure-plaintext`; plaintext only on loopback unless `--allow-remote-plaintext`), then
//! handed to the library's Flight service ([`fhirlake::serve`]), whose query side is
//! [`fhirlake::serve::LakeQueryService`].

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Args;
use fhirlake::serve::{FlightServer, ServeConfig};
use fhirlake_sql::flight::{ServerLimits, TlsFiles, UserFile};

use super::args::LakeArgs;

/// `fhirlake serve` flags.
#[derive(Debug, Args)]
pub struct ServeArgs {
    #[command(flatten)]
    pub lake: LakeArgs,

    /// Address to listen on, HOST:PORT (port 0 picks a free port; the address is printed).
    #[arg(
        long,
        env = "FHIRLAKE_LISTEN",
        default_value = "127.0.0.1:32010",
        value_name = "ADDR"
    )]
    pub listen: String,

    /// User file (TOML) with names, roles and argon2 password hashes; `fhirlake user add`
    /// writes it.
    #[arg(
        long,
        env = "FHIRLAKE_USERS",
        default_value = "fhirlake-users.toml",
        value_name = "FILE"
    )]
    pub users: PathBuf,

    /// Audit log (NDJSON, appended): every request and failed login. Stewards query it as
    /// `lake.audit`.
    #[arg(
        long,
        env = "FHIRLAKE_AUDIT_LOG",
        default_value = "fhirlake-audit.ndjson",
        value_name = "FILE"
    )]
    pub audit_log: PathBuf,

    #[command(flatten)]
    pub tls: TlsArgs,

    #[command(flatten)]
    pub limits: LimitArgs,
}

/// Transport security.
#[derive(Debug, Args)]
pub struct TlsArgs {
    /// TLS certificate chain (PEM). With --tls-key, the server speaks grpc+tls.
    #[arg(
        long,
        env = "FHIRLAKE_TLS_CERT",
        value_name = "FILE",
        requires = "tls_key"
    )]
    pub tls_cert: Option<PathBuf>,

    /// TLS private key (PEM).
    #[arg(
        long,
        env = "FHIRLAKE_TLS_KEY",
        value_name = "FILE",
        requires = "tls_cert"
    )]
    pub tls_key: Option<PathBuf>,

    /// Serve without TLS (passwords and results travel in clear text). Only on a loopback
    /// address unless --allow-remote-plaintext is also given.
    #[arg(long, env = "FHIRLAKE_INSECURE_PLAINTEXT", conflicts_with = "tls_cert")]
    pub insecure_plaintext: bool,

    /// Allow --insecure-plaintext on a non-loopback address (e.g. behind a TLS-terminating proxy).
    #[arg(
        long,
        env = "FHIRLAKE_ALLOW_REMOTE_PLAINTEXT",
        requires = "insecure_plaintext"
    )]
    pub allow_remote_plaintext: bool,
}

/// Server limits.
#[derive(Debug, Args)]
pub struct LimitArgs {
    /// Queries that may run at the same time (all users); more are refused with a clear error.
    #[arg(
        long,
        env = "FHIRLAKE_MAX_CONCURRENT_QUERIES",
        default_value_t = 16,
        value_name = "N"
    )]
    pub max_concurrent_queries: usize,

    /// Time limit of one query in seconds, from planning to its last batch.
    #[arg(
        long,
        env = "FHIRLAKE_QUERY_TIMEOUT",
        default_value_t = 600.0,
        value_name = "SECONDS"
    )]
    pub query_timeout: f64,

    /// Memory one query may use (sorts, joins and aggregations spill to disk first), e.g.
    /// `512MiB`, `2GiB`; `0` means no limit.
    #[arg(
        long,
        env = "FHIRLAKE_QUERY_MEMORY",
        default_value = "2GiB",
        value_name = "BYTES"
    )]
    pub query_memory: String,

    /// Lifetime of a login token in seconds.
    #[arg(
        long,
        env = "FHIRLAKE_TOKEN_TTL",
        default_value_t = 28_800.0,
        value_name = "SECONDS"
    )]
    pub token_ttl: f64,

    /// How often (seconds) the server looks for new table versions in the lake.
    #[arg(
        long,
        env = "FHIRLAKE_SNAPSHOT_REFRESH",
        default_value_t = 10.0,
        value_name = "SECONDS"
    )]
    pub snapshot_refresh: f64,
}

/// Parses `512MiB`, `2GB`, `1048576` into bytes.
pub fn parse_bytes(text: &str) -> anyhow::Result<usize> {
    let t = text.trim();
    let split = t
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let number: f64 = number
        .parse()
        .with_context(|| format!("`{text}` is not a size (e.g. 512MiB, 2GiB)"))?;
    let scale: f64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "k" | "kb" => 1e3,
        "kib" => 1024.0,
        "m" | "mb" => 1e6,
        "mib" => 1024.0 * 1024.0,
        "g" | "gb" => 1e9,
        "gib" => 1024.0 * 1024.0 * 1024.0,
        other => bail!("`{text}`: unknown size unit `{other}` (use B, KiB, MiB, GiB, KB, MB, GB)"),
    };
    Ok((number * scale) as usize)
}

fn seconds(value: f64, flag: &str) -> anyhow::Result<Duration> {
    if !(value.is_finite() && value > 0.0) {
        bail!("--{flag} must be a positive number of seconds");
    }
    Ok(Duration::from_secs_f64(value))
}

impl ServeArgs {
    fn validate(&self) -> anyhow::Result<ServeConfig> {
        let listen: SocketAddr = self
            .listen
            .parse()
            .with_context(|| format!("--listen `{}` is not HOST:PORT", self.listen))?;
        let tls = match (&self.tls.tls_cert, &self.tls.tls_key) {
            (Some(cert), Some(key)) => Some(TlsFiles {
                cert: cert.clone(),
                key: key.clone(),
            }),
            _ => None,
        };
        if tls.is_none() && !self.tls.insecure_plaintext {
            bail!(
                "no TLS: give --tls-cert and --tls-key, or --insecure-plaintext to serve \
                 without encryption (loopback only)"
            );
        }
        if tls.is_none() && !listen.ip().is_loopback() && !self.tls.allow_remote_plaintext {
            bail!(
                "refusing plaintext on {listen}, which is not a loopback address: use TLS, or add \
                 --allow-remote-plaintext if a TLS proxy sits in front"
            );
        }
        if self.limits.max_concurrent_queries == 0 {
            bail!("--max-concurrent-queries must be at least 1");
        }
        let memory = parse_bytes(&self.limits.query_memory)?;
        Ok(ServeConfig {
            listen,
            tls,
            limits: ServerLimits {
                token_ttl: seconds(self.limits.token_ttl, "token-ttl")?,
                max_concurrent_queries: self.limits.max_concurrent_queries,
                query_timeout: seconds(self.limits.query_timeout, "query-timeout")?,
                ..ServerLimits::default()
            },
            memory_limit: (memory > 0).then_some(memory),
            snapshot_refresh: seconds(self.limits.snapshot_refresh, "snapshot-refresh")?,
            audit_log: self.audit_log.clone(),
        })
    }
}

/// Runs `fhirlake serve`.
pub async fn run(args: ServeArgs) -> anyhow::Result<ExitCode> {
    let config = args.validate()?;
    let users = UserFile::load(&args.users).with_context(|| {
        format!(
            "no users: create {} with `fhirlake user add NAME --role analyst --users {}`",
            args.users.display(),
            args.users.display()
        )
    })?;
    if users.users.is_empty() {
        bail!(
            "{} has no users; add one with `fhirlake user add`",
            args.users.display()
        );
    }
    let lake = args.lake.open()?;
    if lake.table_ids().await?.is_empty() {
        bail!("{} has no tables; ingest data first", lake.url());
    }
    let server = FlightServer::bind(lake, users, config).await?;
    outln!(
        "fhirlake Flight SQL server listening on {}",
        server.describe()?
    );
    std::io::stdout().flush()?;
    let shutdown = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    server.run(shutdown).await?;
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_with_units() {
        assert_eq!(parse_bytes("1024").unwrap(), 1024);
        assert_eq!(parse_bytes("2MiB").unwrap(), 2 * 1024 * 1024);
        assert_eq!(parse_bytes("1.5 GB").unwrap(), 1_500_000_000);
        assert!(parse_bytes("lots").is_err());
        assert!(parse_bytes("3 parsecs").is_err());
    }
}
