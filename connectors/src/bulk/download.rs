//! Downloading one manifest file into the landing folder: streamed to `.<name>.part`, each line checked
//! (complete JSON, `resourceType` as the manifest entry says), renamed to its final name only when
//! complete. 404 / 410 mean the export expired.
//!
//! Transfer failures (cut-off connections, network errors) try again after a backoff. When the server
//! advertised `Accept-Ranges: bytes` for the file, the retry (or a rerun after a crash: what is known
//! is kept in `.<name>.part-info.json`) keeps the complete lines of the `.part` file and asks for the
//! rest with `Range: bytes=N-` (`If-Range` with the file's validator, `Accept-Encoding: identity`
//! so that offsets are those of the file itself); a `200` instead of `206` starts the file again, as
//! does a server without ranges.

use std::path::Path;

use futures::StreamExt;
use reqwest::{Method, StatusCode};
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::io::AsyncWriteExt;
use url::Url;

use super::http::{GoneMeans, Http, RetryNote, describe_reqwest_error};
use super::log::EventLog;
use super::retry::jitter;
use super::state::{FileKind, FileState, write_atomic};
use crate::error::Error;

/// A finished download.
#[derive(Debug, Clone, Copy)]
pub struct Downloaded {
    pub lines: u64,
    pub bytes: u64,
}

#[derive(Deserialize)]
struct LineHead<'a> {
    #[serde(rename = "resourceType", borrow)]
    resource_type: Option<std::borrow::Cow<'a, str>>,
}

/// Why one attempt failed.
enum AttemptError {
    /// Worth another attempt (connection cut, broken last line).
    Transfer(String),
    /// Final.
    Fatal(Error),
}

/// Downloads `file` into `landing`, retrying transfer failures.
pub async fn download_file(
    http: &Http,
    log: &EventLog,
    landing: &Path,
    file: &FileState,
    with_token: bool,
    on_retry: &(dyn Fn(&RetryNote) + Sync),
) -> Result<Downloaded, Error> {
    let url = Url::parse(&file.url).map_err(|e| Error::Download {
        location: file.url.clone(),
        reason: format!("invalid file URL: {e}"),
    })?;
    let expected_type = match file.kind {
        FileKind::Output => file.resource_type.as_str(),
        FileKind::Deleted => "Bundle",
        FileKind::Error => "OperationOutcome",
    };
    let part = landing.join(format!(".{}.part", file.local));
    let info = landing.join(format!(".{}.part-info.json", file.local));
    let target = landing.join(&file.local);
    let paths = PartPaths {
        part: &part,
        info: &info,
    };
    log.event(
        "download_request",
        json!({"fileUrl": file.url, "itemType": file.kind.as_str()}),
    );
    let mut failures = 0u32;
    loop {
        let result = attempt(http, &url, paths, expected_type, with_token, on_retry).await;
        let reason = match result {
            Ok(done) => {
                tokio::fs::rename(&part, &target)
                    .await
                    .map_err(|e| Error::io(&target.display(), e))?;
                let _ = tokio::fs::remove_file(&info).await;
                log.event(
                    "download_complete",
                    json!({"fileUrl": file.url, "resourceCount": done.lines, "fileSize": done.bytes}),
                );
                return Ok(done);
            }
            Err(AttemptError::Transfer(reason)) => reason,
            Err(AttemptError::Fatal(e)) => {
                paths.remove().await;
                let code = match &e {
                    Error::Server { status, .. } | Error::ExportExpired { status, .. } => {
                        Some(*status)
                    }
                    _ => None,
                };
                log.event(
                    "download_error",
                    json!({"fileUrl": file.url, "itemType": file.kind.as_str(), "code": code, "body": null, "message": e.to_string()}),
                );
                return Err(e);
            }
        };
        failures += 1;
        if failures >= http.policy.max_attempts {
            paths.remove().await;
            let message = format!("{reason} (gave up after {failures} attempts)");
            log.event(
                "download_error",
                json!({"fileUrl": file.url, "itemType": file.kind.as_str(), "code": null, "body": null, "message": message}),
            );
            return Err(Error::Http {
                location: file.url.clone(),
                reason: message,
            });
        }
        let wait = http.policy.backoff_wait(failures - 1);
        let wait = wait + jitter(wait);
        on_retry(&RetryNote {
            url: file.url.clone(),
            status: None,
            reason,
            wait,
        });
        tokio::time::sleep(wait).await;
    }
}

/// The partial file of a download and what is known about the server's copy.
#[derive(Clone, Copy)]
struct PartPaths<'a> {
    part: &'a Path,
    info: &'a Path,
}

impl PartPaths<'_> {
    async fn remove(self) {
        let _ = tokio::fs::remove_file(self.part).await;
        let _ = tokio::fs::remove_file(self.info).await;
    }
}

/// What a response said about resuming its file: kept next to the `.part` file.
#[derive(Debug, Default, Serialize, Deserialize)]
struct PartInfo {
    /// `Accept-Ranges: bytes` was sent.
    accept_ranges: bool,
    /// The strong validator for `If-Range`: `ETag` (not a weak one), else `Last-Modified`.
    validator: Option<String>,
}

impl PartInfo {
    fn of(response: &reqwest::Response) -> Self {
        let header = |name: reqwest::header::HeaderName| {
            response
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        let accept_ranges = header(reqwest::header::ACCEPT_RANGES)
            .is_some_and(|v| v.split(',').any(|u| u.trim().eq_ignore_ascii_case("bytes")));
        let etag = header(reqwest::header::ETAG).filter(|e| !e.starts_with("W/"));
        PartInfo {
            accept_ranges,
            validator: etag.or_else(|| header(reqwest::header::LAST_MODIFIED)),
        }
    }
}

/// The complete lines an earlier attempt left in the `.part` file, when the server takes ranges.
struct Resume {
    bytes: u64,
    lines: u64,
    validator: Option<String>,
}

/// Keeps the complete, valid lines of an earlier attempt's `.part` file (truncating it after the last
/// one) when the server said it takes ranges; `None` (and no `.part` file) otherwise.
async fn resumable_part(paths: PartPaths<'_>, expected_type: &str) -> Option<Resume> {
    let info: PartInfo = tokio::fs::read(paths.info)
        .await
        .ok()
        .and_then(|bytes| serde_json::from_slice(&bytes).ok())
        .unwrap_or_default();
    if !info.accept_ranges {
        paths.remove().await;
        return None;
    }
    let part = paths.part.to_path_buf();
    let expected_type = expected_type.to_string();
    let kept = tokio::task::spawn_blocking(move || keep_complete_lines(&part, &expected_type))
        .await
        .ok()
        .flatten();
    match kept {
        Some((bytes, lines)) if bytes > 0 => Some(Resume {
            bytes,
            lines,
            validator: info.validator,
        }),
        _ => {
            paths.remove().await;
            None
        }
    }
}

/// Truncates `part` after its last complete line, if every line up to it checks; returns the bytes
/// and lines kept.
fn keep_complete_lines(part: &Path, expected_type: &str) -> Option<(u64, u64)> {
    use std::io::Read;
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(part)
        .ok()?;
    let mut checker = LineChecker::new(expected_type);
    let mut buffer = vec![0u8; 1 << 20];
    let (mut read, mut last_newline) = (0u64, 0u64);
    loop {
        let n = file.read(&mut buffer).ok()?;
        if n == 0 {
            break;
        }
        checker.feed(&buffer[..n]).ok()?;
        if let Some(end) = memchr::memrchr(b'\n', &buffer[..n]) {
            last_newline = read + end as u64 + 1;
        }
        read += n as u64;
    }
    file.set_len(last_newline).ok()?;
    file.sync_all().ok()?;
    Some((last_newline, checker.lines))
}

async fn attempt(
    http: &Http,
    url: &Url,
    paths: PartPaths<'_>,
    expected_type: &str,
    with_token: bool,
    on_retry: &(dyn Fn(&RetryNote) + Sync),
) -> Result<Downloaded, AttemptError> {
    let part = paths.part;
    let resume = resumable_part(paths, expected_type).await;
    let build = |request: reqwest::RequestBuilder| {
        let request = request.header(reqwest::header::ACCEPT, "application/fhir+ndjson");
        match &resume {
            Some(resume) => {
                let request = request
                    .header(reqwest::header::RANGE, format!("bytes={}-", resume.bytes))
                    .header(reqwest::header::ACCEPT_ENCODING, "identity");
                match &resume.validator {
                    Some(validator) => request.header(reqwest::header::IF_RANGE, validator),
                    None => request,
                }
            }
            None => request,
        }
    };
    let response = match http
        .send(
            Method::GET,
            url,
            with_token,
            GoneMeans::Expired,
            &build,
            on_retry,
        )
        .await
    {
        Ok(response) => response,
        // The kept part does not fit the server's file: start again.
        Err(Error::Server { status: 416, .. }) if resume.is_some() => {
            paths.remove().await;
            return Err(AttemptError::Transfer(
                "the server refused the range of the rest of the file; starting it again".into(),
            ));
        }
        // Network trouble was already retried by `send`; report it as is.
        Err(e) => return Err(AttemptError::Fatal(e)),
    };
    let io = |e: std::io::Error| AttemptError::Fatal(Error::io(&part.display(), e));
    // A 206 continues the kept part; a 200 (the file changed, or ranges are ignored) replaces it.
    let resume = resume.filter(|resume| {
        response.status() == StatusCode::PARTIAL_CONTENT
            && response
                .headers()
                .get(reqwest::header::CONTENT_RANGE)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| v.starts_with(&format!("bytes {}-", resume.bytes)))
    });
    if response.status() == StatusCode::PARTIAL_CONTENT && resume.is_none() {
        paths.remove().await;
        return Err(AttemptError::Transfer(
            "the server answered a range that was not asked for; starting the file again".into(),
        ));
    }
    let info = PartInfo::of(&response);
    if resume.is_none() {
        if info.accept_ranges {
            let bytes = serde_json::to_vec(&info).unwrap_or_default();
            write_atomic(paths.info, &bytes).map_err(AttemptError::Fatal)?;
        } else {
            let _ = tokio::fs::remove_file(paths.info).await;
        }
    }
    let (file, mut checker, mut bytes) = match &resume {
        Some(resume) => {
            let file = tokio::fs::OpenOptions::new()
                .append(true)
                .open(part)
                .await
                .map_err(io)?;
            let mut checker = LineChecker::new(expected_type);
            checker.lines = resume.lines;
            (file, checker, resume.bytes)
        }
        None => (
            tokio::fs::File::create(part).await.map_err(io)?,
            LineChecker::new(expected_type),
            0,
        ),
    };
    let mut out = tokio::io::BufWriter::with_capacity(1 << 20, file);
    let mut stream = response.bytes_stream();
    let outcome = loop {
        match stream.next().await {
            Some(Ok(chunk)) => {
                if let Err(reason) = checker.feed(&chunk) {
                    break Err(checker_error(reason, url));
                }
                out.write_all(&chunk).await.map_err(io)?;
                bytes += chunk.len() as u64;
            }
            Some(Err(e)) => {
                break Err(AttemptError::Transfer(format!(
                    "download cut off: {}",
                    describe_reqwest_error(&e)
                )));
            }
            None => {
                break checker
                    .finish()
                    .map_err(|reason| checker_error(reason, url));
            }
        }
    };
    // Also after a cut-off transfer: a retry may keep what arrived and ask for the rest.
    let flushed = out.flush().await;
    let lines = outcome?;
    flushed.map_err(io)?;
    let file = out.into_inner();
    file.sync_all().await.map_err(io)?;
    Ok(Downloaded { lines, bytes })
}

fn checker_error(reason: CheckError, url: &Url) -> AttemptError {
    match reason {
        CheckError::Broken(reason) => AttemptError::Transfer(reason),
        CheckError::WrongType(reason) => AttemptError::Fatal(Error::Download {
            location: url.to_string(),
            reason,
        }),
    }
}

enum CheckError {
    /// A line that is not complete JSON (a cut transfer, or a broken file).
    Broken(String),
    /// A resource of another type than the manifest entry says.
    WrongType(String),
}

/// Splits a byte stream into NDJSON lines and checks each (never keeping or reporting line content).
struct LineChecker<'a> {
    expected_type: &'a str,
    pending: Vec<u8>,
    lines: u64,
}

impl<'a> LineChecker<'a> {
    fn new(expected_type: &'a str) -> Self {
        LineChecker {
            expected_type,
            pending: Vec::new(),
            lines: 0,
        }
    }

    fn feed(&mut self, mut chunk: &[u8]) -> Result<(), CheckError> {
        while let Some(end) = memchr::memchr(b'\n', chunk) {
            if self.pending.is_empty() {
                self.check(&chunk[..end])?;
            } else {
                self.pending.extend_from_slice(&chunk[..end]);
                let line = std::mem::take(&mut self.pending);
                self.check(&line)?;
            }
            chunk = &chunk[end + 1..];
        }
        self.pending.extend_from_slice(chunk);
        Ok(())
    }

    fn finish(mut self) -> Result<u64, CheckError> {
        let line = std::mem::take(&mut self.pending);
        self.check(&line)?;
        Ok(self.lines)
    }

    fn check(&mut self, line: &[u8]) -> Result<(), CheckError> {
        if line.iter().all(u8::is_ascii_whitespace) {
            return Ok(());
        }
        self.lines += 1;
        let head: LineHead<'_> = serde_json::from_slice(line).map_err(|e| {
            CheckError::Broken(format!(
                "line {} is not complete JSON ({}): truncated or broken download",
                self.lines,
                e.classify_name()
            ))
        })?;
        match head.resource_type.as_deref() {
            Some(t) if t == self.expected_type => Ok(()),
            Some(t) => Err(CheckError::WrongType(format!(
                "line {} is a {t}, the manifest entry says {}",
                self.lines, self.expected_type
            ))),
            None => Err(CheckError::WrongType(format!(
                "line {} has no resourceType (the manifest entry says {})",
                self.lines, self.expected_type
            ))),
        }
    }
}

trait ClassifyName {
    fn classify_name(&self) -> &'static str;
}

impl ClassifyName for serde_json::Error {
    fn classify_name(&self) -> &'static str {
        match self.classify() {
            serde_json::error::Category::Eof => "ends early",
            serde_json::error::Category::Syntax => "syntax error",
            serde_json::error::Category::Data => "not an object",
            serde_json::error::Category::Io => "read error",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_counted_across_chunks_and_checked() {
        let mut checker = LineChecker::new("Patient");
        checker.feed(b"{\"resourceType\":\"Pat").ok().unwrap();
        checker
            .feed(b"ient\",\"id\":\"1\"}\n\n{\"resourceType\":\"Patient\"}")
            .ok()
            .unwrap();
        assert_eq!(checker.finish().ok(), Some(2));
        let mut checker = LineChecker::new("Patient");
        checker
            .feed(b"{\"resourceType\":\"Patient\"}\n{\"resourceType\":\"Pa")
            .ok()
            .unwrap();
        assert!(matches!(checker.finish(), Err(CheckError::Broken(_))));
        let mut checker = LineChecker::new("Patient");
        assert!(matches!(
            checker.feed(b"{\"resourceType\":\"Observation\"}\n"),
            Err(CheckError::WrongType(_))
        ));
    }

    #[test]
    fn a_part_file_keeps_its_complete_lines_only() {
        let dir = tempfile::tempdir().unwrap();
        let part = dir.path().join(".x.part");
        let complete = "{\"resourceType\":\"Patient\"}\n\n{\"resourceType\":\"Patient\"}\n";
        std::fs::write(&part, format!("{complete}{{\"resourceType\":\"Pat")).unwrap();
        assert_eq!(
            keep_complete_lines(&part, "Patient"),
            Some((complete.len() as u64, 2))
        );
        assert_eq!(std::fs::read_to_string(&part).unwrap(), complete);
        // A broken or foreign line before the end: nothing is kept.
        std::fs::write(&part, "{\"resourceType\":\"Observation\"}\n{").unwrap();
        assert_eq!(keep_complete_lines(&part, "Patient"), None);
    }
}
