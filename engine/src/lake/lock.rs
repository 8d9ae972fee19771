//! The lake writer lock.
//!
//! Local lakes: an OS file lock (`flock`) on `<lake>/_fhirlake.lock`. The kernel releases it when
//! the process dies, SIGKILL included, so a crashed ingest never blocks the next one.
//! Object-store lakes have no such primitive; there every table commit is protected by Delta's
//! optimistic concurrency (put-if-absent on the log), so a concurrent writer fails with a conflict
//! instead of corrupting a table.

use std::fs::{File, OpenOptions, TryLockError};

use super::Lake;
use crate::{Error, Result};

/// Held for the duration of an ingest; released on drop or process exit.
#[derive(Debug)]
pub struct LakeLock {
    _file: Option<File>,
}

impl LakeLock {
    pub(super) fn acquire(lake: &Lake) -> Result<Self> {
        let Some(dir) = lake.local_dir() else {
            return Ok(Self { _file: None });
        };
        std::fs::create_dir_all(&dir).map_err(|e| Error::io(dir.display(), e))?;
        let path = dir.join(super::layout::LOCK_FILE);
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| Error::io(path.display(), e))?;
        match file.try_lock() {
            Ok(()) => Ok(Self { _file: Some(file) }),
            Err(TryLockError::WouldBlock) => Err(Error::Locked {
                location: lake.url().to_string(),
                lock: path.display().to_string(),
            }),
            Err(TryLockError::Error(e)) => Err(Error::io(path.display(), e)),
        }
    }
}
