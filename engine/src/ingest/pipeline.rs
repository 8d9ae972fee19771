//! The parallel part of an ingest: reader threads -> worker pool -> one sink thread.
//!
//! ```text
//! files --> readers (I/O, ≤2 files at a time) --bounded--> workers (parse, validate, de-identify; all cores)
//!                                                   --bounded--> sink (staging Parquet, rejects, counts)
//! ```
//! Channels are bounded, so a slow sink slows the readers down instead of buffering a file in
//! memory. Files come through a channel with their place in the source order: all at once for
//! planned sources, one by one as they finish downloading for a Bulk Data pull. Items carry a
//! read-order number (`seq`: file place << 32 | item index) so that "ties: last read wins" follows the
//! source order, however the threads interleave and in whichever order the files arrive.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, bounded};
use fhirlake_connectors::{
    ItemPosition, RawInput, ReadOptions, SourceFile, SourceItem, read_source_file_with,
};
use fhirlake_deid::Deidentifier;

use super::observer::IngestObserver;
use super::patient_index::PatientsByIdentifier;
use super::rejects::RejectWriter;
use super::staging::{StagedType, Staging};
use super::validate::{FileContext, Processed, Reject, process};
use crate::Result;
use crate::lake::runs::{SourceFileRecord, TypeCounts};

/// Type key for rejects whose resource type is unknown.
pub const UNKNOWN_TYPE: &str = "(unknown)";

const BATCH_ITEMS: usize = 256;
const BATCH_BYTES: usize = 4 << 20;
/// Files read at the same time.
const READERS: usize = 2;
/// How often a reader waiting for the next file checks whether the run was cancelled.
const CANCEL_CHECK: Duration = Duration::from_millis(100);

struct WorkBatch {
    file: Arc<FileContext>,
    items: Vec<(i64, SourceItem)>,
}

/// What the parallel phase produced.
#[derive(Debug, Default)]
pub struct StageOutcome {
    /// Staged files per resource type.
    pub staged: BTreeMap<String, StagedType>,
    /// Counts per type (read, rejected; the merge adds the rest).
    pub counts: BTreeMap<String, TypeCounts>,
    /// Input bytes (decompressed) read.
    pub bytes: u64,
    /// The files read with their place in the source order, by digest (never by name).
    pub files: Vec<(usize, SourceFileRecord)>,
}

/// Runs readers, workers and the sink until every file is read: until `files` is closed (all its
/// senders dropped) and empty. Each file comes with its place in the source order. `patients`
/// resolves conditional patient references for `patient_id`.
#[allow(clippy::too_many_arguments)]
pub fn run(
    files: &Receiver<(usize, SourceFile)>,
    read_options: &ReadOptions,
    deid: &dyn Deidentifier,
    patients: Option<&PatientsByIdentifier>,
    staging: Staging,
    rejects: &mut RejectWriter,
    workers: usize,
    observer: &dyn IngestObserver,
    runtime: &tokio::runtime::Handle,
) -> Result<StageOutcome> {
    let workers = workers.max(1);
    let (work_tx, work_rx) = bounded::<WorkBatch>(workers * 2);
    let (out_tx, out_rx) = bounded::<Vec<Processed>>(workers * 2);
    let cancel = AtomicBool::new(false);
    let read = Mutex::new(Vec::new());

    let result = std::thread::scope(|scope| {
        for _ in 0..READERS {
            let work_tx = work_tx.clone();
            let (cancel, read) = (&cancel, &read);
            scope.spawn(move || {
                let _runtime = runtime.enter();
                read_files(files, read_options, &work_tx, cancel, observer, read);
            });
        }
        drop(work_tx);
        for _ in 0..workers {
            let (work_rx, out_tx) = (work_rx.clone(), out_tx.clone());
            scope.spawn(move || work(&work_rx, &out_tx, deid, patients));
        }
        drop(work_rx);
        drop(out_tx);
        let result = sink(&out_rx, staging, rejects, observer);
        if result.is_err() {
            cancel.store(true, Ordering::Relaxed);
            // Close the channel so that blocked workers, then readers, see it and stop.
            drop(out_rx);
        }
        result
    });
    let mut outcome = result?;
    outcome.files = read
        .into_inner()
        .map_err(|_| crate::Error::Internal("a reader thread panicked".into()))?;
    outcome.files.sort_by_key(|(index, _)| *index);
    Ok(outcome)
}

/// The next file, `None` when there are no more or the run was cancelled.
fn next_file(
    files: &Receiver<(usize, SourceFile)>,
    cancel: &AtomicBool,
) -> Option<(usize, SourceFile)> {
    loop {
        if cancel.load(Ordering::Relaxed) {
            return None;
        }
        match files.recv_timeout(CANCEL_CHECK) {
            Ok(file) => return Some(file),
            Err(RecvTimeoutError::Timeout) => continue,
            Err(RecvTimeoutError::Disconnected) => return None,
        }
    }
}

fn read_files(
    files: &Receiver<(usize, SourceFile)>,
    read_options: &ReadOptions,
    work_tx: &Sender<WorkBatch>,
    cancel: &AtomicBool,
    observer: &dyn IngestObserver,
    read: &Mutex<Vec<(usize, SourceFileRecord)>>,
) {
    while let Some((index, file)) = next_file(files, cancel) {
        let file = &file;
        let context = Arc::new(FileContext {
            expected_type: file.expected_type.as_deref().map(Arc::from),
        });
        let mut batch = Vec::with_capacity(BATCH_ITEMS);
        let mut batch_bytes = 0usize;
        let mut counter: i64 = 0;
        let base = (index as i64) << 32;
        let send = |items: Vec<(i64, SourceItem)>| {
            work_tx
                .send(WorkBatch {
                    file: context.clone(),
                    items,
                })
                .is_ok()
        };
        let result = read_source_file_with(file, read_options, &mut |item| {
            if cancel.load(Ordering::Relaxed) {
                return false;
            }
            counter += 1;
            batch_bytes += match &item {
                SourceItem::Line { bytes, .. } => bytes.len(),
                _ => 1024,
            };
            batch.push((base | counter, item));
            if batch.len() >= BATCH_ITEMS || batch_bytes >= BATCH_BYTES {
                batch_bytes = 0;
                return send(std::mem::replace(
                    &mut batch,
                    Vec::with_capacity(BATCH_ITEMS),
                ));
            }
            true
        });
        if let Err(e) = &result {
            counter += 1;
            batch.push((
                base | counter,
                SourceItem::Reject {
                    pos: ItemPosition {
                        file: Arc::from(file.location.to_string()),
                        line: 0,
                        path: None,
                    },
                    reason: format!("file could not be read: {e}"),
                    raw: None,
                },
            ));
        }
        if !batch.is_empty() && !send(std::mem::take(&mut batch)) {
            return;
        }
        let stats = result.unwrap_or_default();
        let location = file.location.to_string();
        if let Ok(mut read) = read.lock() {
            read.push((
                index,
                SourceFileRecord {
                    digest: SourceFileRecord::digest_of(&location),
                    lines: stats.lines,
                    bytes: stats.bytes,
                },
            ));
        }
        observer.file_done(&location, stats.lines, stats.bytes);
        if let Some(expected) = file.expected_count
            && expected != stats.lines
        {
            observer.warn(&format!(
                "{}: manifest count is {expected}, the file has {} lines",
                file.location, stats.lines
            ));
        }
    }
}

fn work(
    work_rx: &Receiver<WorkBatch>,
    out_tx: &Sender<Vec<Processed>>,
    deid: &dyn Deidentifier,
    patients: Option<&PatientsByIdentifier>,
) {
    for batch in work_rx {
        let out = batch
            .items
            .into_iter()
            .map(|(seq, item)| process(item, seq, &batch.file, deid, patients))
            .collect();
        if out_tx.send(out).is_err() {
            return;
        }
    }
}

fn sink(
    out_rx: &Receiver<Vec<Processed>>,
    mut staging: Staging,
    rejects: &mut RejectWriter,
    observer: &dyn IngestObserver,
) -> Result<StageOutcome> {
    let mut outcome = StageOutcome::default();
    for results in out_rx {
        let mut resources = 0u64;
        let mut bytes = 0u64;
        for processed in results {
            match processed {
                Processed::Row(row) => {
                    staging.push_row(&row)?;
                    counts(&mut outcome, &row.resource_type).read += 1;
                    resources += 1;
                    bytes += row.input_bytes;
                }
                Processed::Delete {
                    resource_type,
                    id,
                    seq,
                } => {
                    staging.push_delete(&resource_type, &id, seq)?;
                    counts(&mut outcome, &resource_type).read += 1;
                    resources += 1;
                }
                Processed::Reject(reject) => {
                    record_reject(&mut outcome, rejects, &reject)?;
                    observer.rejected(&reject.pos, reject.json_path.as_deref(), &reject.reason);
                    bytes += reject.raw.as_ref().map_or(0, RawInput::byte_len);
                }
            }
        }
        outcome.bytes += bytes;
        observer.progress(resources, bytes);
    }
    rejects.finish()?;
    outcome.staged = staging.finish()?;
    Ok(outcome)
}

/// Records a reject in the counts and the landing zone.
pub fn record_reject(
    outcome: &mut StageOutcome,
    rejects: &mut RejectWriter,
    reject: &Reject,
) -> Result<()> {
    rejects.write(reject)?;
    let key = reject.resource_type.as_deref().unwrap_or(UNKNOWN_TYPE);
    counts(outcome, key).rejected += 1;
    Ok(())
}

fn counts<'a>(outcome: &'a mut StageOutcome, resource_type: &str) -> &'a mut TypeCounts {
    outcome.counts.entry(resource_type.to_string()).or_default()
}
