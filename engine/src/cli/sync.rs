//! `fhirlake sync`: an incremental Bulk Data export into a lake. `_since` is the `transactionTime` of
//! the last run that ingested an export (stored in `lake.runs`); the server, level and parameters of
//! that export are reused unless a BASE_URL is given (then the export flags of this command apply).
//! Updates are merged and `deleted[]` entries deleted, as in any ingest.

use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::Args;
use fhirlake_connectors::bulk::ExportRequest;

use super::args::{GlobalArgs, LakeArgs};
use super::ingest::{IngestOptions, ingest_bulk};
use super::pull::{AuthArgs, ExportArgs};

/// `fhirlake sync` flags.
#[derive(Debug, Args)]
pub struct SyncArgs {
    /// FHIR server base URL (default: the server of the lake's last export, with its export settings).
    #[arg(value_name = "BASE_URL")]
    pub base_url: Option<String>,

    #[command(flatten)]
    pub lake: LakeArgs,

    #[command(flatten)]
    pub ingest: IngestOptions,

    #[command(flatten)]
    pub export: ExportArgs,

    #[command(flatten)]
    pub auth: AuthArgs,
}

/// Runs `fhirlake sync`.
pub async fn run(args: SyncArgs, global: &GlobalArgs) -> anyhow::Result<ExitCode> {
    let lake = args.lake.open()?;
    let Some(last) = fhirlake::lake::runs::last_export(&lake).await? else {
        bail!(
            "{}: no earlier Bulk Data export in lake.runs to continue from; run \
             `fhirlake ingest BASE_URL --bulk` first",
            lake.url()
        );
    };
    let mut request = match &args.base_url {
        Some(base_url) => args.export.request(base_url)?,
        None => serde_json::from_str::<ExportRequest>(&last.request)
            .context("lake.runs.bulk_request of the last export")?,
    };
    request.since = Some(args.export.since.clone().unwrap_or(last.transaction_time));
    request.validate()?;
    if !global.quiet {
        eprintln!(
            "syncing from {} with _since={}",
            request.base_url,
            request.since.as_deref().unwrap_or_default()
        );
    }
    ingest_bulk(
        request,
        &args.export,
        &args.auth,
        &args.lake,
        &args.ingest,
        global,
        "run `fhirlake sync` again to start a new export",
    )
    .await
}
