//! FHIR Bulk Data Access (IG 2.0) client: kick-off, status polling, manifest, parallel downloads, and
//! resume, writing a *landing folder* that `fhirlake ingest` reads (`manifest.json` with local file
//! names, the NDJSON files, `deleted[]` Bundles, and `log.ndjson`).
//!
//! [`pull`] runs the whole export. Its progress is persisted in the landing folder the moment it is
//! known ([`state`]): rerunning the same pull after a crash re-attaches to the export through the saved
//! status URL and downloads only the files still missing. Module map: [`request`] (kick-off parameters),
//! [`http`] (retries, tokens), [`retry`] (`Retry-After` and backoff), [`manifest`], [`download`],
//! [`state`], [`log`] (the bulk-data-client event log), [`outcome`] (OperationOutcome texts).

pub mod download;
pub mod http;
pub mod log;
pub mod manifest;
pub mod outcome;
pub mod request;
pub mod retry;
pub mod state;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use futures::TryStreamExt;
use reqwest::Method;
use serde_json::{Value, json};
use url::Url;

use crate::error::Error;
use crate::location::Location;
use crate::plan::{FileFormat, FileRole, SourceFile};
use crate::smart::SmartAuth;
pub use http::RetryNote;
use http::{GoneMeans, Http, read_body};
use log::EventLog;
pub use manifest::{Manifest, ManifestEntry};
pub use request::{ExportLevel, ExportRequest};
pub use retry::RetryPolicy;
pub use state::{FileKind, FileState, Phase, PullState};

/// Progress of a pull, for a progress bar or log lines. Every method has an empty default.
pub trait PullObserver: Send + Sync {
    /// The export was kicked off (or re-attached) at `status_url`.
    fn started(&self, _status_url: &str, _resumed: bool) {}
    /// The server is still working; `progress` is its `X-Progress` text.
    fn progress(&self, _progress: Option<&str>) {}
    /// The manifest is known: `total` files, `pending` still to download.
    fn downloading(&self, _total: usize, _pending: usize) {}
    /// One file is downloaded.
    fn file_done(&self, _name: &str, _lines: u64, _bytes: u64) {}
    /// A request is retried after `note.wait`.
    fn retry(&self, _note: &RetryNote) {}
    /// Something the user should know that does not stop the pull.
    fn warn(&self, _message: &str) {}
}

/// A file of the export that is complete in the landing folder (downloaded and renamed, its state saved).
#[derive(Debug, Clone)]
pub struct ReadyFile {
    /// Its place among the export's files: `output[]`, then `deleted[]`, then `error[]`, each in manifest
    /// order (the order a landing folder is ingested in).
    pub index: usize,
    /// Where it is.
    pub path: PathBuf,
    /// Its entry in the resume state.
    pub file: FileState,
}

impl ReadyFile {
    /// The file as an ingest source, as a landing folder's `manifest.json` would list it; `None` for
    /// `error[]` files (OperationOutcomes are reported, not ingested).
    pub fn source(&self) -> Option<SourceFile> {
        let role = match self.file.kind {
            FileKind::Output => FileRole::Output,
            FileKind::Deleted => FileRole::Deleted,
            FileKind::Error => return None,
        };
        let output = role == FileRole::Output;
        Some(SourceFile {
            location: Location::Local(self.path.clone()),
            format: FileFormat::Ndjson,
            gzip: false,
            role,
            expected_type: output.then(|| self.file.resource_type.clone()),
            expected_count: if output { self.file.count } else { None },
        })
    }
}

/// Receives each file the moment it is complete (files completed by an earlier run first, then each
/// download as it finishes); returns `false` when it takes no more files, which stops the pull (the
/// landing folder stays resumable).
pub type FileSink = Arc<dyn Fn(ReadyFile) -> bool + Send + Sync>;

/// An observer that reports nothing.
#[derive(Debug, Default)]
pub struct QuietPull;
impl PullObserver for QuietPull {}

/// How to pull.
#[derive(Clone)]
pub struct PullOptions {
    /// The landing folder to write.
    pub landing: PathBuf,
    /// Downloads at the same time.
    pub parallel: usize,
    /// Retry waits and limits.
    pub retry: RetryPolicy,
    /// SMART Backend Services session, when the server needs a token.
    pub auth: Option<Arc<SmartAuth>>,
    /// Progress reporting.
    pub observer: Arc<dyn PullObserver>,
    /// The command that reruns this pull (used in "export expired, run ... again" messages).
    pub rerun_hint: String,
    /// Where complete files go as soon as they are complete (`ingest --bulk` streams them into the
    /// ingest).
    pub on_file: Option<FileSink>,
}

impl std::fmt::Debug for PullOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PullOptions")
            .field("landing", &self.landing)
            .field("parallel", &self.parallel)
            .field("retry", &self.retry)
            .field("auth", &self.auth)
            .field("on_file", &self.on_file.is_some())
            .finish_non_exhaustive()
    }
}

impl PullOptions {
    /// Defaults: 4 parallel downloads, default retry policy, no auth, no progress.
    pub fn new(landing: impl Into<PathBuf>) -> Self {
        PullOptions {
            landing: landing.into(),
            parallel: 4,
            retry: RetryPolicy::default(),
            auth: None,
            observer: Arc::new(QuietPull),
            rerun_hint: "run the same command again to start a new export".into(),
            on_file: None,
        }
    }

    /// Hands each complete file to `sink` as soon as it is complete.
    pub fn with_file_sink(mut self, sink: Option<FileSink>) -> Self {
        self.on_file = sink;
        self
    }

    /// Downloads at the same time (at least 1).
    pub fn with_parallel(mut self, parallel: usize) -> Self {
        self.parallel = parallel.max(1);
        self
    }

    /// Retry waits and limits.
    pub fn with_retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    /// SMART Backend Services session.
    pub fn with_auth(mut self, auth: Option<Arc<SmartAuth>>) -> Self {
        self.auth = auth;
        self
    }

    /// Progress reporting.
    pub fn with_observer(mut self, observer: Arc<dyn PullObserver>) -> Self {
        self.observer = observer;
        self
    }
}

/// What a finished pull reports.
#[derive(Debug, Clone)]
pub struct PullSummary {
    pub landing: PathBuf,
    /// The manifest's `transactionTime` (the `_since` of the next incremental export).
    pub transaction_time: String,
    /// The files, with their line counts.
    pub files: Vec<FileState>,
    /// Texts of the OperationOutcomes of the manifest's `error[]` files.
    pub errors: Vec<String>,
    /// Problems that did not stop the pull (count mismatches, a status URL that could not be deleted).
    pub warnings: Vec<String>,
    /// Whether this run re-attached to an export started earlier.
    pub resumed: bool,
    /// Whether the folder already held the complete export (nothing was requested).
    pub already_complete: bool,
}

impl PullSummary {
    /// Lines per resource type of the `output[]` files.
    pub fn resources_by_type(&self) -> std::collections::BTreeMap<String, u64> {
        let mut counts = std::collections::BTreeMap::new();
        for file in self.files.iter().filter(|f| f.kind == FileKind::Output) {
            *counts.entry(file.resource_type.clone()).or_default() += file.lines;
        }
        counts
    }

    /// Lines of the `deleted[]` files (Bundles of deletions).
    pub fn deleted_bundles(&self) -> u64 {
        self.files
            .iter()
            .filter(|f| f.kind == FileKind::Deleted)
            .map(|f| f.lines)
            .sum()
    }
}

/// Runs (or resumes) the export `request` into `options.landing`.
pub async fn pull(request: &ExportRequest, options: &PullOptions) -> Result<PullSummary, Error> {
    request.validate()?;
    let base = request.base()?;
    let kickoff_url = request.kickoff_url()?;
    let landing = options.landing.as_path();
    std::fs::create_dir_all(landing).map_err(|e| Error::io(&landing.display(), e))?;
    let fingerprint = serde_json::to_string(request).map_err(|e| Error::BulkState {
        location: landing.display().to_string(),
        reason: e.to_string(),
    })?;
    let state_location = PullState::path(landing).display().to_string();
    let (mut state, resumed) = match PullState::load(landing)? {
        Some(state) if state.request == fingerprint => (state, true),
        Some(state) => {
            return Err(Error::BulkState {
                location: state_location,
                reason: format!(
                    "the folder holds {} export of another request ({}); use another folder{}",
                    if state.phase == Phase::Complete {
                        "the complete"
                    } else {
                        "an unfinished"
                    },
                    state.kickoff_url,
                    if state.phase == Phase::Complete {
                        ""
                    } else {
                        ", or cancel that export first (pull --cancel)"
                    }
                ),
            });
        }
        None => {
            if landing.join("manifest.json").exists() {
                return Err(Error::BulkState {
                    location: landing.display().to_string(),
                    reason: "the folder already holds an export (manifest.json) that this client did not start; use an empty folder".into(),
                });
            }
            (PullState::new(fingerprint, kickoff_url.to_string()), false)
        }
    };
    if state.phase == Phase::Complete {
        hand_over_done(options, &state.files)?;
        return summarize(landing, &state, true, true, Vec::new());
    }
    state.save(landing)?;
    let log = EventLog::open(landing, &state.export_id)?;
    let http = Http::new(
        http::client()?,
        &base,
        options.auth.clone(),
        options.retry,
        options.rerun_hint.clone(),
    );
    let observer = options.observer.clone();
    let on_retry = |note: &RetryNote| {
        tracing::info!(url = %note.url, status = ?note.status, wait_ms = note.wait.as_millis() as u64, reason = %note.reason, "retrying");
        observer.retry(note);
    };
    let started = Instant::now();

    let result = run_export(
        request, options, &http, &log, &mut state, resumed, &on_retry,
    )
    .await;
    if let Err(e @ Error::ExportExpired { .. }) = &result {
        // The server forgot the export: the next run must start a new one.
        log.event(
            "status_error",
            json!({"code": error_status(e), "message": e.to_string(), "body": null}),
        );
        PullState::remove(landing)?;
    }
    let warnings = result?;

    // Tell the server it may delete the files; a failure here loses nothing.
    let mut warnings = warnings;
    if let Some(status_url) = state.status_url.clone()
        && !state.status_deleted
    {
        match delete_status(&http, &status_url).await {
            Ok(()) => {}
            Err(e) => warnings.push(format!("could not delete the export on the server: {e}")),
        }
        state.status_deleted = true;
        state.save(landing)?;
    }
    let summary = summarize(landing, &state, resumed, false, warnings)?;
    let resources: u64 = summary.resources_by_type().values().sum();
    let bytes: u64 = state.files.iter().map(|f| f.bytes).sum();
    log.event(
        "export_complete",
        json!({"files": state.files.len(), "resources": resources, "bytes": bytes, "attachments": 0, "duration": started.elapsed().as_millis() as u64}),
    );
    Ok(summary)
}

fn error_status(e: &Error) -> Option<u16> {
    match e {
        Error::Server { status, .. } | Error::ExportExpired { status, .. } => Some(*status),
        _ => None,
    }
}

/// Kick-off (unless resumed), polling (unless the manifest is known), downloads, `manifest.json`.
/// Returns warnings.
async fn run_export(
    request: &ExportRequest,
    options: &PullOptions,
    http: &Http,
    log: &EventLog,
    state: &mut PullState,
    resumed: bool,
    on_retry: &(dyn Fn(&RetryNote) + Sync),
) -> Result<Vec<String>, Error> {
    let landing = options.landing.as_path();
    let observer = options.observer.as_ref();
    let status_url = match &state.status_url {
        Some(url) => parse_url(url)?,
        None => {
            let url = kick_off(request, http, log, on_retry).await?;
            state.status_url = Some(url.to_string());
            state.save(landing)?;
            url
        }
    };
    observer.started(status_url.as_str(), resumed);

    if state.manifest.is_none() {
        let (manifest, raw) = poll_status(http, log, &status_url, observer, on_retry).await?;
        log.event(
            "manifest_complete",
            json!({
                "transactionTime": manifest.transaction_time,
                "totalOutputFileCount": manifest.output.len(),
                "totalDeletedFileCount": manifest.deleted.len(),
                "totalErrorFileCount": manifest.error.len(),
                "totalManifests": raw.get("totalManifests").and_then(Value::as_u64).unwrap_or(1),
            }),
        );
        state.files = plan_files(&manifest, &status_url)?;
        state.manifest = Some(raw);
        state.phase = Phase::Downloading;
        state.save(landing)?;
    }
    let manifest: Manifest = serde_json::from_value(state.manifest.clone().unwrap_or(Value::Null))
        .map_err(|e| Error::BulkState {
            location: PullState::path(landing).display().to_string(),
            reason: format!("saved manifest unreadable: {e}"),
        })?;

    let pending: Vec<(usize, FileState)> = state
        .files
        .iter()
        .enumerate()
        .filter(|(_, f)| !f.done)
        .map(|(i, f)| (i, f.clone()))
        .collect();
    observer.downloading(state.files.len(), pending.len());
    hand_over_done(options, &state.files)?;
    let shared = Arc::new(Mutex::new(std::mem::replace(
        state,
        PullState::new(String::new(), String::new()),
    )));
    let result = futures::stream::iter(pending.into_iter().map(Ok::<_, Error>))
        .try_for_each_concurrent(options.parallel, |(index, file)| {
            let shared = shared.clone();
            async move {
                // The token goes only where the manifest says one is needed, and only to the
                // server's own origin (checked again by `Http`).
                let with_token = manifest.requires_access_token;
                let done = download::download_file(http, log, landing, &file, with_token, on_retry)
                    .await?;
                observer.file_done(&file.local, done.lines, done.bytes);
                let ready = {
                    let mut state = shared.lock().map_err(|_| poisoned(landing))?;
                    let entry = &mut state.files[index];
                    entry.done = true;
                    entry.lines = done.lines;
                    entry.bytes = done.bytes;
                    let ready = entry.clone();
                    state.save(landing)?;
                    ready
                };
                // Saved as done first: a reader never gets a file a rerun would download again.
                hand_over(options, index, &ready)
            }
        })
        .await;
    *state = Arc::try_unwrap(shared)
        .map_err(|_| poisoned(landing))?
        .into_inner()
        .map_err(|_| poisoned(landing))?;
    result?;

    let mut warnings = Vec::new();
    for file in &state.files {
        if let Some(count) = file.count
            && count != file.lines
        {
            let message = format!(
                "{}: the manifest count is {count}, the file has {} lines (kept as downloaded)",
                file.url, file.lines
            );
            observer.warn(&message);
            warnings.push(message);
        }
    }
    write_local_manifest(landing, &manifest, &state.files)?;
    state.phase = Phase::Complete;
    state.save(landing)?;
    Ok(warnings)
}

/// Hands the files already complete to the file sink.
fn hand_over_done(options: &PullOptions, files: &[FileState]) -> Result<(), Error> {
    for (index, file) in files.iter().enumerate().filter(|(_, f)| f.done) {
        hand_over(options, index, file)?;
    }
    Ok(())
}

/// Hands one complete file to the file sink, if any.
fn hand_over(options: &PullOptions, index: usize, file: &FileState) -> Result<(), Error> {
    let Some(sink) = &options.on_file else {
        return Ok(());
    };
    let ready = ReadyFile {
        index,
        path: options.landing.join(&file.local),
        file: file.clone(),
    };
    if sink(ready) {
        Ok(())
    } else {
        Err(Error::BulkState {
            location: options.landing.display().to_string(),
            reason: "the reader of the downloaded files stopped, so the pull stopped too; the same command resumes it".into(),
        })
    }
}

fn poisoned(landing: &Path) -> Error {
    Error::BulkState {
        location: PullState::path(landing).display().to_string(),
        reason: "internal: download state lock poisoned".into(),
    }
}

fn parse_url(text: &str) -> Result<Url, Error> {
    Url::parse(text).map_err(|e| Error::invalid(text, format!("invalid URL: {e}")))
}

/// Sends the kick-off request; returns the status URL.
async fn kick_off(
    request: &ExportRequest,
    http: &Http,
    log: &EventLog,
    on_retry: &(dyn Fn(&RetryNote) + Sync),
) -> Result<Url, Error> {
    let mut url = request.kickoff_url()?;
    let (method, body) = if request.use_get {
        url.query_pairs_mut().extend_pairs(request.query_pairs());
        (Method::GET, None)
    } else {
        (Method::POST, Some(request.parameters_body().to_string()))
    };
    let build = |builder: reqwest::RequestBuilder| {
        let builder = builder
            .header(reqwest::header::ACCEPT, "application/fhir+json")
            .header("Prefer", request.prefer_header());
        match &body {
            Some(body) => builder
                .header(reqwest::header::CONTENT_TYPE, "application/fhir+json")
                .body(body.clone()),
            None => builder,
        }
    };
    let parameters: Value = request
        .query_pairs()
        .into_iter()
        .map(|(k, v)| (k, Value::String(v)))
        .collect::<serde_json::Map<_, _>>()
        .into();
    let response = match http
        .send(method, &url, true, GoneMeans::Error, &build, on_retry)
        .await
    {
        Ok(response) => response,
        Err(e) => {
            log.event(
                "kickoff",
                json!({"exportUrl": url.as_str(), "errorCode": error_status(&e), "errorBody": e.to_string(), "requestParameters": parameters}),
            );
            return Err(e);
        }
    };
    let status = response.status().as_u16();
    let location = response
        .headers()
        .get(reqwest::header::CONTENT_LOCATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    log.event(
        "kickoff",
        json!({"exportUrl": url.as_str(), "errorCode": null, "errorBody": null, "requestParameters": parameters, "responseHeaders": {"content-location": location}}),
    );
    let Some(location) = location.filter(|_| status == 202) else {
        return Err(Error::Server {
            location: url.to_string(),
            status,
            outcome: "the kick-off answer is not `202 Accepted` with a Content-Location status URL"
                .into(),
        });
    };
    url.join(&location)
        .map_err(|e| Error::invalid(&location, format!("status URL: {e}")))
}

/// Polls the status URL until the manifest arrives.
async fn poll_status(
    http: &Http,
    log: &EventLog,
    status_url: &Url,
    observer: &dyn PullObserver,
    on_retry: &(dyn Fn(&RetryNote) + Sync),
) -> Result<(Manifest, Value), Error> {
    let build = |builder: reqwest::RequestBuilder| {
        builder.header(reqwest::header::ACCEPT, "application/json")
    };
    let log_retry = |note: &RetryNote| {
        log.event(
            "status_error",
            json!({"code": note.status, "body": null, "message": note.reason, "retryAfterMs": note.wait.as_millis() as u64}),
        );
        on_retry(note);
    };
    let mut polls = 0u32;
    loop {
        let response = match http
            .send(
                Method::GET,
                status_url,
                true,
                GoneMeans::Expired,
                &build,
                &log_retry,
            )
            .await
        {
            Ok(response) => response,
            Err(e) => {
                log.event(
                    "status_error",
                    json!({"code": error_status(&e), "body": null, "message": e.to_string()}),
                );
                return Err(e);
            }
        };
        if response.status() == reqwest::StatusCode::ACCEPTED {
            let header = |name: &str| {
                response
                    .headers()
                    .get(name)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned)
            };
            let progress = header("x-progress");
            let retry_after = header("retry-after");
            log.event(
                "status_progress",
                json!({"body": null, "xProgress": progress, "retryAfter": retry_after}),
            );
            observer.progress(progress.as_deref());
            let wait = http.policy.wait(retry_after.as_deref(), polls.min(6));
            polls += 1;
            tokio::time::sleep(wait).await;
            continue;
        }
        let (manifest, next) = read_manifest_page(response, status_url).await?;
        log.event(
            "status_complete",
            json!({"transactionTime": manifest.transaction_time}),
        );
        return follow_pages(http, status_url, manifest, next, &log_retry).await;
    }
}

/// Most manifest pages followed (a guard against a server that never ends its `next` links).
const MAX_MANIFEST_PAGES: usize = 100_000;

/// Reads one manifest page: the manifest and its `link` with `relation: next`, resolved against the
/// page's URL.
async fn read_manifest_page(
    response: reqwest::Response,
    page_url: &Url,
) -> Result<(Manifest, Option<Url>), Error> {
    let location = page_url.to_string();
    let (body, complete) = read_body(response, http::MAX_MANIFEST_BODY).await;
    if !complete {
        return Err(Error::Manifest {
            location,
            path: "$".into(),
            reason: format!(
                "the manifest was cut off or is larger than {} MiB",
                http::MAX_MANIFEST_BODY >> 20
            ),
        });
    }
    let manifest = Manifest::parse(&body, &location)?;
    let raw: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let mut next = None;
    if let Some(links) = raw.get("link").and_then(Value::as_array) {
        for (i, link) in links.iter().enumerate() {
            if link.get("relation").and_then(Value::as_str) != Some("next") {
                continue;
            }
            let url = link
                .get("url")
                .and_then(Value::as_str)
                .and_then(|url| page_url.join(url).ok())
                .ok_or_else(|| Error::Manifest {
                    location: location.clone(),
                    path: format!("link[{i}].url"),
                    reason: "missing or not a URL".into(),
                })?;
            next = Some(url);
            break;
        }
    }
    Ok((manifest, next))
}

/// Follows the `next` links of a paged manifest (Bulk Data 2.0), with the same token and origin rules
/// as the status URL, and returns the pages' `output[]`, `deleted[]` and `error[]` as one manifest
/// (file URLs resolved against their page) and the manifest as saved in the resume state.
async fn follow_pages(
    http: &Http,
    status_url: &Url,
    mut manifest: Manifest,
    mut next: Option<Url>,
    on_retry: &(dyn Fn(&RetryNote) + Sync),
) -> Result<(Manifest, Value), Error> {
    let build = |builder: reqwest::RequestBuilder| {
        builder.header(reqwest::header::ACCEPT, "application/json")
    };
    let mut seen = std::collections::HashSet::from([status_url.to_string()]);
    let mut pages = 1usize;
    while let Some(page_url) = next.take() {
        if !seen.insert(page_url.to_string()) || pages >= MAX_MANIFEST_PAGES {
            return Err(Error::Manifest {
                location: page_url.to_string(),
                path: "link".into(),
                reason: format!(
                    "the manifest's next links loop or exceed {MAX_MANIFEST_PAGES} pages"
                ),
            });
        }
        let response = http
            .send(
                Method::GET,
                &page_url,
                true,
                GoneMeans::Expired,
                &build,
                on_retry,
            )
            .await?;
        let (page, page_next) = read_manifest_page(response, &page_url).await?;
        manifest.requires_access_token |= page.requires_access_token;
        let resolve = |mut entry: ManifestEntry| {
            if let Ok(url) = page_url.join(&entry.url) {
                entry.url = url.to_string();
            }
            entry
        };
        manifest.output.extend(page.output.into_iter().map(resolve));
        manifest
            .deleted
            .extend(page.deleted.into_iter().map(resolve));
        manifest.error.extend(page.error.into_iter().map(resolve));
        next = page_next;
        pages += 1;
    }
    let mut raw = serde_json::to_value(&manifest).unwrap_or(Value::Null);
    raw["totalManifests"] = json!(pages);
    Ok((manifest, raw))
}

/// The files of a manifest, with their local names.
fn plan_files(manifest: &Manifest, status_url: &Url) -> Result<Vec<FileState>, Error> {
    let mut files = Vec::new();
    let kinds = [
        (FileKind::Output, &manifest.output),
        (FileKind::Deleted, &manifest.deleted),
        (FileKind::Error, &manifest.error),
    ];
    for (kind, entries) in kinds {
        for (i, entry) in entries.iter().enumerate() {
            let url = status_url.join(&entry.url).map_err(|e| Error::Manifest {
                location: status_url.to_string(),
                path: format!("{}[{i}].url", kind.as_str()),
                reason: e.to_string(),
            })?;
            if kind == FileKind::Output
                && (entry.resource_type.is_empty()
                    || !entry.resource_type.bytes().all(|b| b.is_ascii_alphabetic()))
            {
                return Err(Error::Manifest {
                    location: status_url.to_string(),
                    path: format!("output[{i}].type"),
                    reason: "missing or not a resource type".into(),
                });
            }
            let local = match kind {
                FileKind::Output => {
                    format!("{:04}.{}.ndjson", files.len() + 1, entry.resource_type)
                }
                FileKind::Deleted => format!("{:04}.deleted.ndjson", files.len() + 1),
                FileKind::Error => format!("{:04}.error.ndjson", files.len() + 1),
            };
            files.push(FileState {
                kind,
                url: url.to_string(),
                resource_type: entry.resource_type.clone(),
                count: entry.count,
                local,
                done: false,
                lines: 0,
                bytes: 0,
            });
        }
    }
    Ok(files)
}

/// Writes `manifest.json` with local file names: what `fhirlake ingest` reads.
fn write_local_manifest(
    landing: &Path,
    manifest: &Manifest,
    files: &[FileState],
) -> Result<(), Error> {
    let entries = |kind: FileKind| -> Vec<Value> {
        files
            .iter()
            .filter(|f| f.kind == kind)
            .map(|f| {
                let mut entry = json!({"type": f.resource_type, "url": f.local});
                if let Some(count) = f.count {
                    entry["count"] = json!(count);
                }
                entry["extension"] = json!({"sourceUrl": f.url});
                entry
            })
            .collect()
    };
    let doc = json!({
        "transactionTime": manifest.transaction_time,
        "request": manifest.request,
        "requiresAccessToken": false,
        "output": entries(FileKind::Output),
        "deleted": entries(FileKind::Deleted),
        "error": entries(FileKind::Error),
    });
    let bytes = serde_json::to_vec_pretty(&doc).map_err(|e| Error::BulkState {
        location: landing.display().to_string(),
        reason: e.to_string(),
    })?;
    state::write_atomic(&landing.join("manifest.json"), &bytes)
}

fn summarize(
    landing: &Path,
    state: &PullState,
    resumed: bool,
    already_complete: bool,
    warnings: Vec<String>,
) -> Result<PullSummary, Error> {
    let transaction_time = state
        .manifest
        .as_ref()
        .and_then(|m| m.get("transactionTime"))
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let mut errors = Vec::new();
    for file in state.files.iter().filter(|f| f.kind == FileKind::Error) {
        let path = landing.join(&file.local);
        let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path.display(), e))?;
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            if let Ok(doc) = serde_json::from_str::<Value>(line) {
                errors.push(outcome::outcome_text(&doc));
            }
        }
    }
    Ok(PullSummary {
        landing: landing.to_path_buf(),
        transaction_time,
        files: state.files.clone(),
        errors,
        warnings,
        resumed,
        already_complete,
    })
}

async fn delete_status(http: &Http, status_url: &str) -> Result<(), Error> {
    let url = parse_url(status_url)?;
    let (status, text) = http.send_once(Method::DELETE, &url).await?;
    if (200..300).contains(&status) || status == 404 || status == 410 {
        Ok(())
    } else {
        Err(Error::Server {
            location: status_url.to_string(),
            status,
            outcome: text,
        })
    }
}

/// Cancels the export whose state is in `landing` (DELETE on its status URL) and forgets it. Returns the
/// status URL cancelled, `None` when the folder has no export to cancel.
pub async fn cancel(
    landing: &Path,
    base_url: &str,
    auth: Option<Arc<SmartAuth>>,
    retry: RetryPolicy,
) -> Result<Option<String>, Error> {
    let Some(state) = PullState::load(landing)? else {
        return Ok(None);
    };
    let base = ExportRequest::new(base_url).base()?;
    let http = Http::new(http::client()?, &base, auth, retry, String::new());
    let result = match &state.status_url {
        Some(url) if !state.status_deleted => {
            delete_status(&http, url).await?;
            let log = EventLog::open(landing, &state.export_id)?;
            log.event("export_cancelled", json!({"statusUrl": url}));
            Some(url.clone())
        }
        _ => None,
    };
    PullState::remove(landing)?;
    Ok(result)
}
