//! A Bulk Data pull streamed into an ingest (`fhirlake ingest --bulk`, `fhirlake sync`).
//!
//! [`pull_and_ingest`] runs the export and the ingest side by side: each file goes from the pull
//! to the ingest through a channel as soon as its download completes, and the run commits only
//! once every file is downloaded and read. A failed or killed pull commits nothing, and the same
//! call resumes the pull (files already downloaded are read again from the landing folder, not
//! downloaded again). The pulled folder is removed after a successful ingest (it holds
//! identified data); after a failure it stays.

use std::sync::Arc;

use fhirlake_connectors::SourceFile;
use fhirlake_connectors::bulk::{ExportRequest, FileSink, PullOptions, PullSummary, ReadyFile};

use super::{FileFeed, Ingest, IngestReport};
use crate::lake::runs::ExportRecord;
use crate::{Error, Result};

/// What a pull-and-ingest did, once the pull itself did not fail.
#[derive(Debug)]
pub struct BulkIngestReport {
    /// The pull's summary; `None` when the ingest failed first and the pull was stopped (the
    /// landing folder stays resumable).
    pub pulled: Option<PullSummary>,
    /// The ingest's outcome (nothing is committed when it failed).
    pub ingest: Result<IngestReport>,
    /// Why the pulled folder could not be removed after a successful ingest.
    pub cleanup: Option<Error>,
}

/// Pulls the export `request` into `pull.landing` and ingests each file as soon as it is
/// downloaded through `ingest` (configured by the caller: lake, de-identification, landing,
/// limits, observer; its sources only describe the run), then records the export in
/// `lake.runs` (for `fhirlake sync`). Returns the pull's own error when the pull failed: the
/// ingest only saw its files stop.
pub async fn pull_and_ingest(
    request: ExportRequest,
    pull: PullOptions,
    ingest: Ingest,
) -> Result<BulkIngestReport> {
    let pull_dir = pull.landing.clone();
    // Finished files go from the pull to the ingest through a channel, with their manifest place.
    let (file_tx, file_rx) = crossbeam_channel::unbounded::<(usize, SourceFile)>();
    let (complete_tx, complete_rx) = tokio::sync::oneshot::channel();
    let sink: FileSink = Arc::new(move |ready: ReadyFile| match ready.source() {
        Some(file) => file_tx.send((ready.index, file)).is_ok(),
        None => true,
    });
    let pull_options = pull.with_file_sink(Some(sink));
    let mut remembered = request.clone();
    remembered.since = None;
    let remembered = serde_json::to_string(&remembered)
        .map_err(|e| Error::Internal(format!("encoding the export request: {e}")))?;
    let pull = async move {
        let result = fhirlake_connectors::bulk::pull(&request, &pull_options).await;
        // Closes the file channel: the ingest reads what it has, then waits for `complete`.
        drop(pull_options);
        if let Ok(summary) = &result {
            let _ = complete_tx.send(Some(ExportRecord {
                base_url: request.base_url.clone(),
                request: remembered,
                transaction_time: summary.transaction_time.clone(),
            }));
        }
        result
    };
    let ingest = ingest
        .with_feed(FileFeed {
            files: file_rx,
            complete: complete_rx,
        })
        .run();
    let (pulled, result) = {
        let (mut pull, mut ingest) = (std::pin::pin!(pull), std::pin::pin!(ingest));
        tokio::select! {
            pulled = &mut pull => (pulled.map(Some), ingest.await),
            // The ingest ends first only when it failed (it waits for the pull to complete): stop
            // pulling; the landing folder stays resumable.
            result = &mut ingest => match result {
                Err(e) => (Ok(None), Err(e)),
                Ok(report) => (pull.await.map(Some), Ok(report)),
            },
        }
    };
    let pulled = pulled?;
    let cleanup = match &result {
        Ok(_) => std::fs::remove_dir_all(&pull_dir)
            .err()
            .map(|e| Error::io(pull_dir.display(), e)),
        Err(_) => None,
    };
    Ok(BulkIngestReport {
        pulled,
        ingest: result,
        cleanup,
    })
}
