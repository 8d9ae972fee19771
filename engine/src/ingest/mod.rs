//! Ingest: sources -> parse -> de-identify -> lake, as one run.
//!
//! A run (see [`Ingest::run`]):
//! 1. takes the lake's writer lock and refuses a de-identification key that differs from the lake's;
//! 2. expands the sources (`fhirlake-connectors`); unusable sources are rejected like bad lines
//!    (or, with a [`FileFeed`], takes the files as they arrive, e.g. as a Bulk Data pull downloads them);
//! 3. gathers the patients the run can see by identifier ([`patient_index`]: the Patients of its
//!    sources and of `raw.patient`), so that conditional references resolve;
//! 4. streams every file through the parallel [`pipeline`] into per-type staging Parquet files
//!    in the landing zone, keeping rejected lines in `<landing>/rejected/<run_id>.ndjson`; with a feed,
//!    commits only when the feed says every file was sent (a failed pull commits nothing);
//! 5. commits each resource type with one Delta MERGE ([`merge`]);
//! 6. brings every view up to date (`crate::views`, one commit per changed view);
//! 7. records the run in `lake.runs` — last, so a killed run is never recorded as finished. The
//!    files read are recorded by digest and counts, never by name or path (names can identify
//!    patients), and every column is taken from de-identified data.

pub mod bulk;
pub mod merge;
pub mod observer;
pub mod patient_index;
pub mod pipeline;
pub mod rejects;
pub mod staging;
pub mod validate;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use fhirlake_connectors::{ItemPosition, ReadOptions, SourceFile, StoreOptions, plan_sources};
use fhirlake_deid::Deidentifier;

use crate::lake::runs::{ExportRecord, RunRecord, record_run};
use crate::lake::{DeidStamp, Lake, TableId};
use crate::{Error, Result};
pub use observer::{IngestObserver, Silent};
use patient_index::PatientsByIdentifier;
use pipeline::StageOutcome;
use rejects::RejectWriter;
use staging::Staging;
use validate::Reject;

/// Status of a finished run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunStatus {
    /// Every line was accepted.
    Succeeded,
    /// Committed, but some lines were rejected (exit code 3).
    SucceededWithRejects,
}

impl RunStatus {
    /// The value stored in `lake.runs.status`.
    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Succeeded => "succeeded",
            RunStatus::SucceededWithRejects => "succeeded_with_rejects",
        }
    }
}

/// What a finished run reports.
#[derive(Debug, Clone)]
pub struct IngestReport {
    /// The row written to `lake.runs`.
    pub record: RunRecord,
    /// Outcome.
    pub status: RunStatus,
    /// Resources a view could not turn into rows (they are in `raw.*`, not in that view).
    pub view_failures: u64,
    /// Where rejected lines were kept, if any.
    pub rejects_file: Option<PathBuf>,
    /// Conditional patient references (`Patient?identifier=...`) that matched no patient of the
    /// run or the lake: their rows have no `patient_id` and their own date shift.
    pub unresolved_patient_references: u64,
    /// Input bytes read (decompressed).
    pub bytes: u64,
    /// Wall time of the run.
    pub elapsed: Duration,
}

/// Files that arrive while the run reads them (a Bulk Data pull hands over each file as soon as it is
/// downloaded), instead of planned sources.
#[derive(Debug)]
pub struct FileFeed {
    /// Each file with its place in the source's order (which decides "ties: last read wins"). The
    /// run reads until every sender is dropped.
    pub files: crossbeam_channel::Receiver<(usize, SourceFile)>,
    /// Sent once every file of the source was sent, with the Bulk Data export to record in
    /// `lake.runs`. Dropped without a value when the source failed: the run then commits nothing.
    pub complete: tokio::sync::oneshot::Receiver<Option<ExportRecord>>,
}

/// Configures and runs one ingest.
pub struct Ingest {
    sources: Vec<String>,
    lake: Lake,
    landing: PathBuf,
    deid: Arc<dyn Deidentifier>,
    store_options: StoreOptions,
    max_rejects: Option<u64>,
    max_line_bytes: usize,
    workers: usize,
    observer: Arc<dyn IngestObserver>,
    export: Option<ExportRecord>,
    feed: Option<FileFeed>,
    patients: Option<Arc<PatientsByIdentifier>>,
}

impl std::fmt::Debug for Ingest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ingest")
            // Counted, not listed: source names can identify patients.
            .field("sources", &self.sources.len())
            .field("lake", &self.lake.url().as_str())
            .field("landing", &self.landing)
            .field("policy", &self.deid.policy_name())
            .field("max_rejects", &self.max_rejects)
            .field("max_line_bytes", &self.max_line_bytes)
            .field("workers", &self.workers)
            .finish()
    }
}

impl Ingest {
    /// An ingest of `sources` into `lake`, de-identified by `deid`.
    pub fn new(sources: Vec<String>, lake: Lake, deid: Arc<dyn Deidentifier>) -> Self {
        Self {
            sources,
            lake,
            landing: PathBuf::from("landing"),
            deid,
            store_options: StoreOptions::default(),
            max_rejects: None,
            max_line_bytes: fhirlake_connectors::MAX_LINE_BYTES,
            workers: std::thread::available_parallelism().map_or(2, |n| n.get()),
            observer: Arc::new(Silent),
            export: None,
            feed: None,
            patients: None,
        }
    }

    /// Reads the files of `feed` as they arrive instead of planning `sources` (which are then not
    /// used).
    pub fn with_feed(mut self, feed: FileFeed) -> Self {
        self.feed = Some(feed);
        self
    }

    /// Resolves conditional patient references (`Patient?identifier=...`) through `patients`,
    /// which the run fills before it reads anything. Hand the same index to the policy engine
    /// (`PolicyEngine::with_patient_index`) so that such resources get their patient's date
    /// shift too. Without it, conditional references give no `patient_id`.
    pub fn with_patient_index(mut self, patients: Arc<PatientsByIdentifier>) -> Self {
        self.patients = Some(patients);
        self
    }

    /// Records in `lake.runs` the Bulk Data export the sources come from (for `fhirlake sync`).
    pub fn with_export(mut self, export: Option<ExportRecord>) -> Self {
        self.export = export;
        self
    }

    /// Landing zone for rejected lines and staging files (default `./landing`).
    pub fn with_landing(mut self, landing: impl Into<PathBuf>) -> Self {
        self.landing = landing.into();
        self
    }

    /// Object-store options for `s3://` sources.
    pub fn with_store_options(mut self, options: StoreOptions) -> Self {
        self.store_options = options;
        self
    }

    /// Fail the run (nothing committed) when more than `max` lines are rejected.
    pub fn with_max_rejects(mut self, max: Option<u64>) -> Self {
        self.max_rejects = max;
        self
    }

    /// Longest NDJSON line accepted (default 64 MiB); a longer one is rejected and kept in the
    /// landing zone like any other reject, without being held in memory.
    pub fn with_max_line_bytes(mut self, max: usize) -> Self {
        self.max_line_bytes = max.max(1);
        self
    }

    /// Worker threads for parsing and de-identification (default: all cores).
    pub fn with_workers(mut self, workers: usize) -> Self {
        self.workers = workers.max(1);
        self
    }

    /// Progress reporting.
    pub fn with_observer(mut self, observer: Arc<dyn IngestObserver>) -> Self {
        self.observer = observer;
        self
    }

    /// Runs the ingest. `Err` means nothing was recorded as a finished run.
    pub async fn run(mut self) -> Result<IngestReport> {
        let started = Instant::now();
        let started_at = Utc::now();
        let run_id = uuid::Uuid::now_v7().to_string();
        let stamp = DeidStamp {
            key_id: self.deid.key_id(),
            policy_hash: self.deid.policy_hash(),
            deidentified: self.deid.removes_identifiers(),
        };

        self.lake.ensure_exists()?;
        let _lock = self.lake.lock()?;
        self.lake.check_stamp(&stamp).await?;
        self.lake.restrict_statistics().await?;

        // The files to read: all planned now, or arriving through the feed.
        let mut patient_files = Vec::new();
        let (files, complete, problems, planned) = match self.feed.take() {
            Some(feed) => (feed.files, Some(feed.complete), Vec::new(), None),
            None => {
                let plan = plan_sources(&self.sources, &self.store_options).await;
                self.observer.planned(plan.files.len());
                if self.patients.is_some() {
                    patient_files = plan.files.clone();
                }
                let (tx, rx) = crossbeam_channel::unbounded();
                let planned = plan.files.len();
                for file in plan.files.into_iter().enumerate() {
                    // Cannot fail: `rx` is alive.
                    let _ = tx.send(file);
                }
                (rx, None, plan.problems, Some(planned))
            }
        };
        let mut rejects = RejectWriter::new(&self.landing, &run_id);
        let mut problem_outcome = StageOutcome::default();
        for problem in &problems {
            let reject = Reject {
                pos: ItemPosition {
                    file: Arc::from(problem.location()),
                    line: 0,
                    path: None,
                },
                resource_type: None,
                json_path: None,
                reason: problem.to_string(),
                raw: None,
            };
            self.observer.rejected(&reject.pos, None, &reject.reason);
            pipeline::record_reject(&mut problem_outcome, &mut rejects, &reject)?;
        }
        if planned == Some(0) {
            rejects.finish()?;
            let reasons: Vec<String> = problems.iter().map(ToString::to_string).collect();
            return Err(Error::NoSources(if reasons.is_empty() {
                "no sources given".into()
            } else {
                reasons.join("; ")
            }));
        }

        if let Some(patients) = &self.patients {
            self.observer
                .phase("finding the patients of conditional references");
            patients
                .load(patient_files, &self.lake, self.deid.clone())
                .await?;
        }

        let staging_dir = self
            .landing
            .join(crate::lake::layout::LANDING_STAGING)
            .join(&run_id);
        let staging = Staging::create(staging_dir.clone())?;
        let read_options = ReadOptions {
            max_line_bytes: self.max_line_bytes,
            spill_dir: Some(rejects.spill_dir().to_path_buf()),
        };
        let runtime = tokio::runtime::Handle::current();
        let (deid, observer, workers) = (self.deid.clone(), self.observer.clone(), self.workers);
        let patients = self.patients.clone();
        let (staged, mut rejects) = tokio::task::spawn_blocking(move || {
            let outcome = pipeline::run(
                &files,
                &read_options,
                deid.as_ref(),
                patients.as_deref(),
                staging,
                &mut rejects,
                workers,
                observer.as_ref(),
                &runtime,
            );
            (outcome, rejects)
        })
        .await
        .map_err(|e| Error::Internal(format!("pipeline thread: {e}")))?;
        rejects.finish()?;
        let mut staged = match staged {
            Ok(staged) => staged,
            Err(e) => {
                remove_dir(&staging_dir);
                return Err(e);
            }
        };
        for (resource_type, counts) in problem_outcome.counts {
            staged.counts.entry(resource_type).or_default().add(&counts);
        }
        let export = match complete {
            None => self.export.clone(),
            Some(complete) => match complete.await {
                Ok(export) => export,
                Err(_) => {
                    remove_dir(&staging_dir);
                    return Err(Error::FeedIncomplete);
                }
            },
        };

        let total_rejected: u64 = staged.counts.values().map(|c| c.rejected).sum();
        if let Some(max) = self.max_rejects
            && total_rejected > max
        {
            remove_dir(&staging_dir);
            return Err(Error::TooManyRejects {
                rejected: total_rejected,
                max,
            });
        }

        let mut table_versions = BTreeMap::new();
        for (resource_type, staged_type) in &staged.staged {
            self.observer
                .phase(&format!("committing {}", TableId::raw(resource_type)));
            let merged =
                merge::merge_type(&self.lake, &stamp, &run_id, resource_type, staged_type).await;
            let merged = match merged {
                Ok(merged) => merged,
                Err(e) => {
                    remove_dir(&staging_dir);
                    return Err(e);
                }
            };
            let counts = staged.counts.entry(resource_type.clone()).or_default();
            counts.written += merged.counts.written;
            counts.updated += merged.counts.updated;
            counts.unchanged += merged.counts.unchanged;
            counts.deleted += merged.counts.deleted;
            if let Some(version) = merged.version {
                table_versions.insert(TableId::raw(resource_type).to_string(), version);
            }
        }
        remove_dir(&staging_dir);

        // Views last: they read the raw tables as committed above.
        let mut view_failures = 0;
        for registered in crate::views::lake_views(&self.lake).await? {
            let id = registered.table_id();
            self.observer.phase(&format!("materializing view {id}"));
            let outcome =
                crate::views::refresh_view(&self.lake, &stamp, &registered.view, &run_id, false)
                    .await?;
            view_failures += outcome.failed;
            if let Some(version) = outcome.version {
                table_versions.insert(id.to_string(), version);
            }
        }

        let status = if total_rejected > 0 {
            RunStatus::SucceededWithRejects
        } else {
            RunStatus::Succeeded
        };
        let mut record = RunRecord {
            run_id,
            started_at,
            finished_at: Utc::now(),
            status: status.as_str().to_string(),
            sources: std::mem::take(&mut staged.files)
                .into_iter()
                .map(|(_, file)| file)
                .collect(),
            policy_name: self.deid.policy_name().to_string(),
            stamp,
            deid: self.deid.stats().unwrap_or_default(),
            counts: staged.counts,
            table_versions,
            landing: Some(self.landing.display().to_string()),
            export,
            unresolved_patient_references: self
                .patients
                .as_ref()
                .map_or(0, |patients| patients.unresolved()),
        };
        self.observer.phase("recording the run in lake.runs");
        let runs_version = record_run(&self.lake, &record).await?;
        record
            .table_versions
            .insert(TableId::runs().to_string(), runs_version);
        let unresolved_patient_references = record.unresolved_patient_references;
        Ok(IngestReport {
            record,
            status,
            view_failures,
            rejects_file: rejects.path().map(PathBuf::from),
            unresolved_patient_references,
            bytes: staged.bytes,
            elapsed: started.elapsed(),
        })
    }
}

fn remove_dir(dir: &std::path::Path) {
    if let Err(e) = std::fs::remove_dir_all(dir)
        && e.kind() != std::io::ErrorKind::NotFound
    {
        tracing::warn!("could not remove staging directory {}: {e}", dir.display());
    }
}
