//! `fhirlake pull`: download a FHIR Bulk Data export into a landing folder (resumable), and the export
//! and SMART auth flags that `ingest --bulk` and `sync` share.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Args;
use fhirlake_connectors::bulk::{
    ExportLevel, ExportRequest, PullObserver, PullOptions, PullSummary, RetryNote, RetryPolicy,
};
use fhirlake_connectors::smart::{ClientKey, SmartAuth};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::args::GlobalArgs;

/// `fhirlake pull` flags.
#[derive(Debug, Args)]
pub struct PullArgs {
    /// FHIR server base URL, e.g. https://fhir.example.org/r4.
    #[arg(value_name = "BASE_URL", env = "FHIRLAKE_FHIR_URL")]
    pub base_url: String,

    /// Landing folder for the export: NDJSON files, manifest.json, log.ndjson and the resume state.
    /// Rerunning the same pull into the same folder resumes it.
    #[arg(long, env = "FHIRLAKE_LANDING", value_name = "DIR")]
    pub landing: PathBuf,

    /// Cancel the export started in the landing folder (DELETE on its status URL) instead of pulling.
    #[arg(long)]
    pub cancel: bool,

    #[command(flatten)]
    pub export: ExportArgs,

    #[command(flatten)]
    pub auth: AuthArgs,
}

/// Which export to request and how to download it.
#[derive(Debug, Args, Clone)]
pub struct ExportArgs {
    /// Export the members of this Group (`Group/[id]/$export`).
    #[arg(
        long,
        env = "FHIRLAKE_EXPORT_GROUP",
        value_name = "ID",
        conflicts_with = "patient_level"
    )]
    pub group: Option<String>,

    /// Export every patient's compartment (`Patient/$export`) instead of the whole system.
    #[arg(long, env = "FHIRLAKE_EXPORT_PATIENT_LEVEL")]
    pub patient_level: bool,

    /// Resource types to export (`_type`), comma separated.
    #[arg(
        long = "type",
        env = "FHIRLAKE_EXPORT_TYPES",
        value_delimiter = ',',
        value_name = "TYPE"
    )]
    pub types: Vec<String>,

    /// Only resources changed after this instant (`_since`), e.g. 2024-01-31T00:00:00Z.
    #[arg(long, env = "FHIRLAKE_EXPORT_SINCE", value_name = "INSTANT")]
    pub since: Option<String>,

    /// A FHIR search restricting one type (`_typeFilter`), e.g. `Observation?status=final`; repeatable.
    #[arg(
        long = "type-filter",
        env = "FHIRLAKE_EXPORT_TYPE_FILTER",
        value_name = "QUERY"
    )]
    pub type_filters: Vec<String>,

    /// Elements to keep (`_elements`), comma separated.
    #[arg(
        long,
        env = "FHIRLAKE_EXPORT_ELEMENTS",
        value_delimiter = ',',
        value_name = "ELEMENT"
    )]
    pub elements: Vec<String>,

    /// Patients to restrict a Patient or Group export to (`patient`, POST kick-off), comma separated.
    #[arg(
        long = "patient",
        env = "FHIRLAKE_EXPORT_PATIENTS",
        value_delimiter = ',',
        value_name = "ID"
    )]
    pub patients: Vec<String>,

    /// `_outputFormat` (default: the server's, application/fhir+ndjson).
    #[arg(long, env = "FHIRLAKE_EXPORT_OUTPUT_FORMAT", value_name = "MIME")]
    pub output_format: Option<String>,

    /// `includeAssociatedData` codes, comma separated (e.g. LatestProvenanceResources).
    #[arg(
        long,
        env = "FHIRLAKE_EXPORT_ASSOCIATED_DATA",
        value_delimiter = ',',
        value_name = "CODE"
    )]
    pub include_associated_data: Vec<String>,

    /// Kick off with GET and a query string instead of POST with a Parameters body.
    #[arg(long = "get", env = "FHIRLAKE_EXPORT_GET")]
    pub use_get: bool,

    /// Ask the server to ignore parameters it does not support (`Prefer: handling=lenient`).
    #[arg(long, env = "FHIRLAKE_EXPORT_LENIENT")]
    pub lenient: bool,

    /// Files downloaded at the same time.
    #[arg(long, env = "FHIRLAKE_PARALLEL", default_value_t = 4, value_name = "N")]
    pub parallel: usize,

    /// Shortest wait between polls or retries, in ms (a server's Retry-After is clamped to it).
    #[arg(
        long,
        env = "FHIRLAKE_BULK_MIN_WAIT_MS",
        default_value_t = 1000,
        hide = true
    )]
    pub min_wait_ms: u64,

    /// Longest wait between polls or retries, in ms (a server's Retry-After is clamped to it).
    #[arg(
        long,
        env = "FHIRLAKE_BULK_MAX_WAIT_MS",
        default_value_t = 120_000,
        hide = true
    )]
    pub max_wait_ms: u64,

    /// Failed attempts of one request before giving up.
    #[arg(
        long,
        env = "FHIRLAKE_BULK_MAX_ATTEMPTS",
        default_value_t = 6,
        hide = true
    )]
    pub max_attempts: u32,
}

impl ExportArgs {
    /// The export request for `base_url` (validated, no I/O).
    pub fn request(&self, base_url: &str) -> anyhow::Result<ExportRequest> {
        let level = match (&self.group, self.patient_level) {
            (Some(id), _) => ExportLevel::Group(id.clone()),
            (None, true) => ExportLevel::Patient,
            (None, false) => ExportLevel::System,
        };
        let mut request = ExportRequest::new(base_url)
            .with_level(level)
            .with_types(self.types.clone())
            .with_since(self.since.clone());
        request.type_filters = self.type_filters.clone();
        request.elements = self.elements.clone();
        request.patients = self.patients.clone();
        request.output_format = self.output_format.clone();
        request.include_associated_data = self.include_associated_data.clone();
        request.use_get = self.use_get;
        request.lenient = self.lenient;
        request.validate()?;
        Ok(request)
    }

    /// Retry waits and limits.
    pub fn retry(&self) -> anyhow::Result<RetryPolicy> {
        if self.max_attempts == 0 {
            bail!("--max-attempts must be at least 1");
        }
        let min_wait = Duration::from_millis(self.min_wait_ms);
        let max_wait = Duration::from_millis(self.max_wait_ms.max(self.min_wait_ms));
        Ok(RetryPolicy {
            min_wait,
            max_wait,
            backoff: (min_wait * 2).min(max_wait),
            max_attempts: self.max_attempts,
            ..RetryPolicy::default()
        })
    }

    /// Options of a pull into `landing`.
    pub fn options(
        &self,
        landing: &Path,
        auth: Option<Arc<SmartAuth>>,
        quiet: bool,
        rerun_hint: &str,
    ) -> anyhow::Result<PullOptions> {
        if self.parallel == 0 {
            bail!("--parallel must be at least 1");
        }
        let mut options = PullOptions::new(landing)
            .with_parallel(self.parallel)
            .with_retry(self.retry()?)
            .with_auth(auth)
            .with_observer(Arc::new(PullProgress::new(quiet)));
        options.rerun_hint = rerun_hint.to_string();
        Ok(options)
    }
}

/// SMART Backend Services flags.
#[derive(Debug, Args, Clone)]
pub struct AuthArgs {
    /// SMART Backend Services client id (registered with the server). Without it no token is sent.
    #[arg(
        long,
        env = "FHIRLAKE_CLIENT_ID",
        value_name = "ID",
        requires = "client_key"
    )]
    pub client_id: Option<String>,

    /// The client's private key: a JWKS / JWK file (with `d`) or a PEM file; RSA (RS384) or P-384
    /// (ES384).
    #[arg(
        long,
        env = "FHIRLAKE_CLIENT_KEY",
        value_name = "FILE",
        requires = "client_id"
    )]
    pub client_key: Option<PathBuf>,

    /// Key id (`kid`) to pick from the JWKS / to send for a PEM key (default: the JWK's kid, or the
    /// key's RFC 7638 thumbprint).
    #[arg(long, env = "FHIRLAKE_CLIENT_KID", value_name = "KID")]
    pub kid: Option<String>,

    /// Scope to ask for (default: system/*.rs or system/*.read, as the server advertises).
    #[arg(long, env = "FHIRLAKE_SCOPE", value_name = "SCOPE")]
    pub scope: Option<String>,

    /// Token endpoint (default: discovered from BASE_URL/.well-known/smart-configuration).
    #[arg(long, env = "FHIRLAKE_TOKEN_URL", value_name = "URL")]
    pub token_url: Option<String>,
}

impl AuthArgs {
    /// Reads the key and, when a client id is given, discovers the token endpoint.
    pub async fn connect(&self, base_url: &str) -> anyhow::Result<Option<Arc<SmartAuth>>> {
        let (Some(client_id), Some(key_path)) = (&self.client_id, &self.client_key) else {
            return Ok(None);
        };
        let key = ClientKey::from_file(key_path, self.kid.as_deref())?;
        let token_url = self
            .token_url
            .as_deref()
            .map(url::Url::parse)
            .transpose()
            .context("--token-url")?;
        let base = url::Url::parse(base_url).context("FHIR base URL")?;
        let client = fhirlake_connectors::bulk::http::client()?;
        let auth = SmartAuth::connect(
            client,
            &base,
            client_id.clone(),
            key,
            token_url,
            self.scope.clone(),
        )
        .await?;
        tracing::info!(scope = auth.scope(), "SMART Backend Services configured");
        Ok(Some(Arc::new(auth)))
    }
}

/// Runs `fhirlake pull`.
pub async fn run(args: PullArgs, global: &GlobalArgs) -> anyhow::Result<ExitCode> {
    let request = args.export.request(&args.base_url)?;
    let retry = args.export.retry()?;
    let auth = args.auth.connect(&args.base_url).await?;
    if args.cancel {
        match fhirlake_connectors::bulk::cancel(&args.landing, &args.base_url, auth, retry).await? {
            Some(url) => outln!("cancelled the export at {url}"),
            None => outln!("no export to cancel in {}", args.landing.display()),
        }
        return Ok(ExitCode::SUCCESS);
    }
    let options = args.export.options(
        &args.landing,
        auth,
        global.quiet,
        "run the same `fhirlake pull` again to start a new export",
    )?;
    let summary = fhirlake_connectors::bulk::pull(&request, &options).await?;
    print_pull_summary(&summary)?;
    Ok(ExitCode::SUCCESS)
}

/// Prints what a pull downloaded.
pub fn print_pull_summary(summary: &PullSummary) -> anyhow::Result<()> {
    if summary.already_complete {
        outln!(
            "{} already holds this complete export; nothing downloaded",
            summary.landing.display()
        );
    }
    let by_type = summary.resources_by_type();
    for (resource_type, lines) in &by_type {
        outln!("{resource_type}\t{lines}");
    }
    let total: u64 = by_type.values().sum();
    outln!(
        "pulled {total} resources in {} files{} (transactionTime {}) into {}",
        summary.files.len(),
        if summary.resumed { ", resumed" } else { "" },
        summary.transaction_time,
        summary.landing.display()
    );
    let deleted = summary.deleted_bundles();
    if deleted > 0 {
        outln!("{deleted} deletion Bundles (deleted[]) will be applied by the ingest");
    }
    for warning in &summary.warnings {
        eprintln!("warning: {warning}");
    }
    if !summary.errors.is_empty() {
        eprintln!(
            "the server reported {} errors (error[] OperationOutcomes):",
            summary.errors.len()
        );
        for error in &summary.errors {
            eprintln!("  {error}");
        }
    }
    Ok(())
}

/// Pull progress on stderr: a bar on a terminal, log lines otherwise.
#[derive(Debug)]
pub struct PullProgress {
    bar: Option<ProgressBar>,
    quiet: bool,
}

impl PullProgress {
    /// A bar when stderr is a terminal and not quiet.
    pub fn new(quiet: bool) -> Self {
        let bar = (!quiet && std::io::stderr().is_terminal()).then(|| {
            let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
            bar.set_style(
                ProgressStyle::with_template("{spinner} {elapsed_precise} {msg}")
                    .unwrap_or_else(|_| ProgressStyle::default_spinner()),
            );
            bar.enable_steady_tick(Duration::from_millis(120));
            bar
        });
        PullProgress { bar, quiet }
    }

    fn line(&self, text: &str) {
        if self.quiet {
            return;
        }
        match &self.bar {
            Some(bar) => bar.println(text),
            None => eprintln!("{text}"),
        }
    }
}

impl PullObserver for PullProgress {
    fn started(&self, status_url: &str, resumed: bool) {
        self.line(&format!(
            "{} export at {status_url}",
            if resumed {
                "re-attached to the"
            } else {
                "started the"
            }
        ));
    }

    fn progress(&self, progress: Option<&str>) {
        let text = format!(
            "export in progress: {}",
            progress.unwrap_or("(no X-Progress)")
        );
        match &self.bar {
            Some(bar) => bar.set_message(text),
            None => tracing::info!("{text}"),
        }
    }

    fn downloading(&self, total: usize, pending: usize) {
        if let Some(bar) = &self.bar {
            bar.set_style(
                ProgressStyle::with_template(
                    "{spinner} {elapsed_precise} [{bar:30}] {pos}/{len} files {msg}",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
            );
            bar.set_length(total as u64);
            bar.set_position((total - pending) as u64);
            bar.set_message("");
        } else {
            self.line(&format!("downloading {pending} of {total} files"));
        }
    }

    fn file_done(&self, name: &str, lines: u64, _bytes: u64) {
        match &self.bar {
            Some(bar) => bar.inc(1),
            None => tracing::info!("downloaded {name} ({lines} lines)"),
        }
    }

    fn retry(&self, note: &RetryNote) {
        let status = note
            .status
            .map_or("network error".to_string(), |s| format!("HTTP {s}"));
        self.line(&format!(
            "retrying {} in {:.1} s after {status}: {}",
            note.url,
            note.wait.as_secs_f64(),
            note.reason
        ));
    }

    fn warn(&self, message: &str) {
        match &self.bar {
            Some(bar) => bar.println(format!("warning: {message}")),
            None => eprintln!("warning: {message}"),
        }
    }
}

impl Drop for PullProgress {
    fn drop(&mut self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}
