//! The rejected-lines file: `<landing>/rejected/<run_id>.ndjson`, one JSON object per rejected
//! line or entry: `run_id`, `file`, `line`, `path`, `reason`, and the original line (`original`
//! when it is UTF-8 text, `original_base64` otherwise). A rejected Bundle entry is kept as the
//! JSON text of the entry (or of its resource, as read, when the resource itself was rejected).
//! The landing zone may hold PHI; this file is where bad input is kept so that nothing is lost,
//! and it is never written into the lake.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::PathBuf;

use serde::Serialize;

use super::validate::Reject;
use crate::{Error, Result};

/// Appends rejected lines to the run's file, creating it on the first reject.
#[derive(Debug)]
pub struct RejectWriter {
    path: PathBuf,
    run_id: String,
    out: Option<BufWriter<File>>,
    count: u64,
}

#[derive(Serialize)]
struct RejectRecord<'a> {
    run_id: &'a str,
    file: &'a str,
    line: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    path: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    resource_type: Option<&'a str>,
    reason: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    original: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    original_base64: Option<String>,
}

impl RejectWriter {
    /// A writer for `<landing>/rejected/<run_id>.ndjson`.
    pub fn new(landing: &std::path::Path, run_id: &str) -> Self {
        Self {
            path: landing.join("rejected").join(format!("{run_id}.ndjson")),
            run_id: run_id.to_string(),
            out: None,
            count: 0,
        }
    }

    /// The file path (exists once something was rejected).
    pub fn path(&self) -> Option<&std::path::Path> {
        (self.count > 0).then_some(self.path.as_path())
    }

    /// Rejects written so far.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// Appends one reject.
    pub fn write(&mut self, reject: &Reject) -> Result<()> {
        if self.out.is_none() {
            if let Some(dir) = self.path.parent() {
                std::fs::create_dir_all(dir).map_err(|e| Error::io(dir.display(), e))?;
            }
            let file = File::create(&self.path).map_err(|e| Error::io(self.path.display(), e))?;
            self.out = Some(BufWriter::new(file));
        }
        let (original, original_base64) = match reject.raw.as_deref() {
            None => (None, None),
            Some(bytes) => match std::str::from_utf8(bytes) {
                Ok(text) => (Some(text), None),
                Err(_) => (None, Some(base64(bytes))),
            },
        };
        let record = RejectRecord {
            run_id: &self.run_id,
            file: &reject.pos.file,
            line: reject.pos.line,
            path: reject.json_path.as_deref().or(reject.pos.path.as_deref()),
            resource_type: reject.resource_type.as_deref(),
            reason: &reject.reason,
            original,
            original_base64,
        };
        let out = self
            .out
            .as_mut()
            .ok_or_else(|| Error::Internal("reject writer".into()))?;
        serde_json::to_writer(&mut *out, &record)
            .map_err(|e| Error::io(self.path.display(), e.into()))?;
        out.write_all(b"\n")
            .map_err(|e| Error::io(self.path.display(), e))?;
        self.count += 1;
        Ok(())
    }

    /// Flushes the file to disk.
    pub fn finish(&mut self) -> Result<()> {
        if let Some(out) = self.out.as_mut() {
            out.flush().map_err(|e| Error::io(self.path.display(), e))?;
            out.get_ref()
                .sync_all()
                .map_err(|e| Error::io(self.path.display(), e))?;
        }
        Ok(())
    }
}

/// Standard base64 (RFC 4648) of a rejected line that is not UTF-8. Hand-written: a dozen lines
/// for the rare non-UTF-8 line do not justify another dependency.
fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn base64_matches_rfc4648() {
        assert_eq!(super::base64(b""), "");
        assert_eq!(super::base64(b"f"), "Zg==");
        assert_eq!(super::base64(b"fo"), "Zm8=");
        assert_eq!(super::base64(b"foo"), "Zm9v");
        assert_eq!(super::base64(b"foob"), "Zm9vYg==");
        assert_eq!(super::base64(&[0xff, 0xfe]), "//4=");
    }
}
