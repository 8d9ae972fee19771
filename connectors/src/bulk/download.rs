//! Downloading one manifest file into the landing folder: streamed to `.<name>.part`, each line checked
//! (complete JSON, `resourceType` as the manifest entry says), renamed to its final name only when
//! complete. Transfer failures (cut-off connections, network errors) start the file again after a
//! backoff; 404 / 410 mean the export expired.

use std::path::Path;

use futures::StreamExt;
use reqwest::Method;
use serde::Deserialize;
use serde_json::json;
use tokio::io::AsyncWriteExt;
use url::Url;

use super::http::{GoneMeans, Http, RetryNote, describe_reqwest_error};
use super::log::EventLog;
use super::retry::jitter;
use super::state::{FileKind, FileState};
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
    let target = landing.join(&file.local);
    log.event(
        "download_request",
        json!({"fileUrl": file.url, "itemType": file.kind.as_str()}),
    );
    let mut failures = 0u32;
    loop {
        let result = attempt(http, &url, &part, expected_type, with_token, on_retry).await;
        let reason = match result {
            Ok(done) => {
                tokio::fs::rename(&part, &target)
                    .await
                    .map_err(|e| Error::io(&target.display(), e))?;
                log.event(
                    "download_complete",
                    json!({"fileUrl": file.url, "resourceCount": done.lines, "fileSize": done.bytes}),
                );
                return Ok(done);
            }
            Err(AttemptError::Transfer(reason)) => reason,
            Err(AttemptError::Fatal(e)) => {
                let _ = tokio::fs::remove_file(&part).await;
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
            let _ = tokio::fs::remove_file(&part).await;
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

async fn attempt(
    http: &Http,
    url: &Url,
    part: &Path,
    expected_type: &str,
    with_token: bool,
    on_retry: &(dyn Fn(&RetryNote) + Sync),
) -> Result<Downloaded, AttemptError> {
    let build = |request: reqwest::RequestBuilder| {
        request.header(reqwest::header::ACCEPT, "application/fhir+ndjson")
    };
    let response = http
        .send(
            Method::GET,
            url,
            with_token,
            GoneMeans::Expired,
            &build,
            on_retry,
        )
        .await
        // Network trouble was already retried by `send`; report it as is.
        .map_err(AttemptError::Fatal)?;
    let io = |e: std::io::Error| AttemptError::Fatal(Error::io(&part.display(), e));
    let file = tokio::fs::File::create(part).await.map_err(io)?;
    let mut out = tokio::io::BufWriter::with_capacity(1 << 20, file);
    let mut stream = response.bytes_stream();
    let mut checker = LineChecker::new(expected_type);
    let mut bytes = 0u64;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| {
            AttemptError::Transfer(format!("download cut off: {}", describe_reqwest_error(&e)))
        })?;
        checker
            .feed(&chunk)
            .map_err(|reason| checker_error(reason, url))?;
        out.write_all(&chunk).await.map_err(io)?;
        bytes += chunk.len() as u64;
    }
    let lines = checker
        .finish()
        .map_err(|reason| checker_error(reason, url))?;
    out.flush().await.map_err(io)?;
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
}
