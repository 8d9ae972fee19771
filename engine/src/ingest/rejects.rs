//! The rejected-lines file: `<landing>/rejected/<run_id>.ndjson`, one JSON object per rejected
//! line or entry: `run_id`, `file`, `line`, `path`, `reason`, and the original line (`original`
//! when it is UTF-8 text, `original_base64` otherwise). A rejected Bundle entry is kept as the
//! JSON text of the entry (or of its resource, as read, when the resource itself was rejected).
//! A line over the size limit is kept the same way: the reader writes it to a file in
//! `<landing>/rejected/<run_id>.spill/` as it reads it, and it is copied from there into the record
//! piece by piece, never held in memory whole. The landing zone may hold PHI; this file is where bad input is kept so that nothing is lost,
//! and it is never written into the lake.

use std::fs::File;
use std::io::{self, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use fhirlake_connectors::{RawInput, SpilledLine};
use serde::Serialize;

use super::validate::Reject;
use crate::{Error, Result};

/// Appends rejected lines to the run's file, creating it on the first reject.
#[derive(Debug)]
pub struct RejectWriter {
    path: PathBuf,
    spill_dir: PathBuf,
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
    pub fn new(landing: &Path, run_id: &str) -> Self {
        let dir = landing.join(crate::lake::layout::LANDING_REJECTED);
        Self {
            path: dir.join(format!("{run_id}.ndjson")),
            spill_dir: dir.join(format!("{run_id}.spill")),
            run_id: run_id.to_string(),
            out: None,
            count: 0,
        }
    }

    /// The file path (exists once something was rejected).
    pub fn path(&self) -> Option<&Path> {
        (self.count > 0).then_some(self.path.as_path())
    }

    /// Where the reader writes lines over the size limit until they are copied into the file
    /// (removed by [`RejectWriter::finish`] once empty).
    pub fn spill_dir(&self) -> &Path {
        &self.spill_dir
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
        let (original, original_base64) = match &reject.raw {
            None | Some(RawInput::Spilled(_)) => (None, None),
            Some(RawInput::Bytes(bytes)) => match std::str::from_utf8(bytes) {
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
        match &reject.raw {
            Some(RawInput::Spilled(line)) => write_spilled(out, &record, line, &self.path)?,
            _ => {
                serde_json::to_writer(&mut *out, &record)
                    .map_err(|e| Error::io(self.path.display(), e.into()))?;
                out.write_all(b"\n")
                    .map_err(|e| Error::io(self.path.display(), e))?;
            }
        }
        self.count += 1;
        Ok(())
    }

    /// Flushes the file to disk and removes the (then empty) spill folder.
    pub fn finish(&mut self) -> Result<()> {
        // Fails harmlessly when there is none, or when it still holds a line (a failed run).
        let _ = std::fs::remove_dir(&self.spill_dir);
        if let Some(out) = self.out.as_mut() {
            out.flush().map_err(|e| Error::io(self.path.display(), e))?;
            out.get_ref()
                .sync_all()
                .map_err(|e| Error::io(self.path.display(), e))?;
        }
        Ok(())
    }
}

/// Bytes of a spilled line read at a time; a multiple of 3, so that base64 pieces concatenate.
const SPILL_PIECE: u64 = 3 << 18;

/// Writes `record` with the spilled line as its `original` (or `original_base64` when the line is not
/// UTF-8), reading the line piece by piece: once to check its encoding, once to copy it.
fn write_spilled(
    out: &mut BufWriter<File>,
    record: &RejectRecord<'_>,
    line: &SpilledLine,
    rejects_path: &Path,
) -> Result<()> {
    let spill_error = |e: io::Error| Error::io(line.path().display(), e);
    let write_error = |e: io::Error| Error::io(rejects_path.display(), e);
    let is_utf8 =
        utf8_pieces(line.open().map_err(spill_error)?, |_| Ok(())).map_err(spill_error)?;
    // The record without its closing brace, then the original, then the brace.
    let mut head = serde_json::to_vec(record).map_err(|e| write_error(e.into()))?;
    head.pop();
    out.write_all(&head).map_err(write_error)?;
    let mut input = line.open().map_err(spill_error)?;
    if is_utf8 {
        out.write_all(br#","original":""#).map_err(write_error)?;
        let mut write_failed = false;
        // Each piece as a JSON string, without its quotes.
        let copied = utf8_pieces(&mut input, |text| {
            let quoted = serde_json::to_vec(text).map_err(io::Error::from)?;
            let written = out.write_all(&quoted[1..quoted.len() - 1]);
            write_failed = written.is_err();
            written
        });
        match copied {
            Ok(true) => {}
            Ok(false) => return Err(spill_error(io::Error::other("changed while being copied"))),
            Err(e) if write_failed => return Err(write_error(e)),
            Err(e) => return Err(spill_error(e)),
        }
    } else {
        out.write_all(br#","original_base64":""#)
            .map_err(write_error)?;
        let mut piece = Vec::with_capacity(SPILL_PIECE as usize);
        loop {
            piece.clear();
            let n = (&mut input)
                .take(SPILL_PIECE)
                .read_to_end(&mut piece)
                .map_err(spill_error)?;
            if n == 0 {
                break;
            }
            out.write_all(base64(&piece).as_bytes())
                .map_err(write_error)?;
        }
    }
    out.write_all(b"\"}\n").map_err(write_error)
}

/// Hands `input` to `each` as text, piece by piece (pieces end on character boundaries); `Ok(false)`
/// as soon as it is found not to be UTF-8.
fn utf8_pieces(
    mut input: impl Read,
    mut each: impl FnMut(&str) -> io::Result<()>,
) -> io::Result<bool> {
    let mut buf = Vec::with_capacity(SPILL_PIECE as usize + 4);
    loop {
        let carried = buf.len();
        let n = (&mut input).take(SPILL_PIECE).read_to_end(&mut buf)?;
        if n == 0 {
            // A character cut at the end is not UTF-8.
            return Ok(carried == 0);
        }
        let text = match std::str::from_utf8(&buf) {
            Ok(text) => text,
            // An incomplete character at the end of the piece: carried to the next one.
            Err(e) if e.error_len().is_none() => {
                std::str::from_utf8(&buf[..e.valid_up_to()]).map_err(io::Error::other)?
            }
            Err(_) => return Ok(false),
        };
        let used = text.len();
        each(text)?;
        buf.drain(..used);
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

    #[test]
    fn utf8_pieces_end_on_character_boundaries() {
        // Longer than two pieces, with characters of 2, 3 and 4 bytes across every boundary.
        let text = "aé€😀".repeat(super::SPILL_PIECE as usize / 4);
        let mut pieces = 0;
        let mut copied = String::new();
        let is_utf8 = super::utf8_pieces(text.as_bytes(), |piece| {
            pieces += 1;
            copied.push_str(piece);
            Ok(())
        })
        .unwrap();
        assert!(is_utf8);
        assert!(pieces > 2, "{pieces}");
        assert_eq!(copied, text);

        let mut bad = text.into_bytes();
        bad.pop();
        assert!(!super::utf8_pieces(bad.as_slice(), |_| Ok(())).unwrap());
        assert!(!super::utf8_pieces(&[b'a', 0xff, b'b'][..], |_| Ok(())).unwrap());
    }
}
