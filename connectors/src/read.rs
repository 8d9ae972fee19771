//! Reading one planned file as a stream of [`SourceItem`]s: NDJSON lines (bounded buffering, never a
//! whole file in memory), Bundle / single-resource `.json` files (streaming parse, `urn:uuid:` references
//! rewritten to `Type/id`), and Bulk Data `deleted[]` files (Bundles of DELETE entries), from local files or
//! object stores, optionally gzip-compressed.
//!
//! Problems with the data (corrupt gzip, invalid JSON, over-long lines, empty files) become
//! [`SourceItem::Reject`] items; reasons name positions and JSON paths, never data values. An over-long
//! line is never held in memory: with [`ReadOptions::spill_dir`] its bytes are written to a file there as
//! they are read ([`SpilledLine`]), so that the caller can keep it with the other rejected input.

use std::cell::Cell;
use std::collections::HashMap;
use std::fmt;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::Arc;

use flate2::read::MultiGzDecoder;
use futures::TryStreamExt;
use object_store::ObjectStoreExt;
use serde::Deserialize;
use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::Value;
use tokio_util::io::{StreamReader, SyncIoBridge};

use crate::error::{Error, Result};
use crate::location::Location;
use crate::plan::{FileFormat, FileRole, SourceFile};
use fhirlake_fhir::reference::{Reference, is_valid_id};
use fhirlake_fhir::types::is_resource_type;

/// Longest NDJSON line accepted (64 MiB); longer lines are skipped and rejected without being buffered.
pub const MAX_LINE_BYTES: usize = 64 * 1024 * 1024;

/// Read buffer size.
const BUF_CAPACITY: usize = 1 << 20;

/// Where an item came from.
#[derive(Clone, Debug)]
pub struct ItemPosition {
    /// The file's [`Location`] display text.
    pub file: Arc<str>,
    /// 1-based physical line in the (decompressed) file; 0 = the file as a whole.
    pub line: u64,
    /// JSON path for Bundle entries, e.g. `Bundle.entry[3].resource`; `None` for NDJSON lines.
    pub path: Option<String>,
}

impl ItemPosition {
    fn new(file: &Arc<str>, line: u64, path: Option<String>) -> Self {
        ItemPosition {
            file: Arc::clone(file),
            line,
            path,
        }
    }
}

impl fmt::Display for ItemPosition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file)?;
        if self.line > 0 {
            write!(f, ":{}", self.line)?;
        }
        if let Some(path) = &self.path {
            write!(f, " {path}")?;
        }
        Ok(())
    }
}

/// One unit of input.
#[derive(Debug)]
pub enum SourceItem {
    /// One NDJSON line, without `\n` / `\r\n`. Blank and whitespace-only lines are skipped.
    Line { pos: ItemPosition, bytes: Vec<u8> },
    /// One resource from a Bundle or single-resource `.json` file.
    Resource { pos: ItemPosition, resource: Value },
    /// A deletion: from a manifest `deleted[]` file, or a Bundle entry with `request.method` DELETE.
    Delete {
        pos: ItemPosition,
        resource_type: String,
        id: String,
    },
    /// Unreadable input; `raw` holds the original bytes when there are some (the line).
    Reject {
        pos: ItemPosition,
        reason: String,
        raw: Option<RawInput>,
    },
}

/// The original bytes of rejected input.
#[derive(Debug)]
pub enum RawInput {
    /// Held in memory (a line within the size limit, a Bundle entry's JSON text).
    Bytes(Vec<u8>),
    /// A line over the size limit, in a file of [`ReadOptions::spill_dir`].
    Spilled(SpilledLine),
}

impl RawInput {
    /// Number of original bytes.
    pub fn byte_len(&self) -> u64 {
        match self {
            RawInput::Bytes(bytes) => bytes.len() as u64,
            RawInput::Spilled(line) => line.byte_len(),
        }
    }
}

/// A line over the size limit, as read (without its `\n` / `\r\n`), written to a file in
/// [`ReadOptions::spill_dir`] while it was read. The file is only readable by its owner and is removed
/// when this is dropped.
#[derive(Debug)]
pub struct SpilledLine {
    path: tempfile::TempPath,
    len: u64,
}

impl SpilledLine {
    /// The file holding the line.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Length of the line in bytes.
    pub fn byte_len(&self) -> u64 {
        self.len
    }

    /// Opens the file for reading.
    pub fn open(&self) -> io::Result<std::fs::File> {
        std::fs::File::open(&self.path)
    }
}

impl SourceItem {
    /// The item's position.
    pub fn pos(&self) -> &ItemPosition {
        match self {
            SourceItem::Line { pos, .. }
            | SourceItem::Resource { pos, .. }
            | SourceItem::Delete { pos, .. }
            | SourceItem::Reject { pos, .. } => pos,
        }
    }
}

/// What reading a file went through.
#[derive(Debug, Default, Clone, Copy)]
pub struct ReadStats {
    /// Physical lines read (NDJSON) or Bundle entries.
    pub lines: u64,
    /// Decompressed bytes read.
    pub bytes: u64,
}

/// Reader settings.
#[derive(Debug, Clone)]
pub struct ReadOptions {
    /// Longest NDJSON line accepted (including a trailing `\r`); default [`MAX_LINE_BYTES`].
    pub max_line_bytes: usize,
    /// Where a longer line is written as it is read (created when needed; one file per line, see
    /// [`SpilledLine`]); `None` (the default): such a line is skipped and its reject has no `raw`.
    pub spill_dir: Option<PathBuf>,
}

impl Default for ReadOptions {
    fn default() -> Self {
        ReadOptions {
            max_line_bytes: MAX_LINE_BYTES,
            spill_dir: None,
        }
    }
}

/// Reads `file` and hands each item to `emit`; `emit` returns `false` to stop early (then this returns `Ok`).
///
/// Blocking: call from a blocking thread (`tokio::task::spawn_blocking`, or a std thread while a tokio
/// runtime is reachable through `Handle::try_current`). Object-store files need that runtime; calling this
/// from inside an async task would block (and tokio panics on nested `block_on`).
///
/// Errors about the data are emitted as [`SourceItem::Reject`] and reading goes on where possible. `Err` is
/// for files that cannot be opened or read (missing, permission, network failure mid-stream).
pub fn read_source_file(
    file: &SourceFile,
    emit: &mut dyn FnMut(SourceItem) -> bool,
) -> Result<ReadStats> {
    read_source_file_with(file, &ReadOptions::default(), emit)
}

/// [`read_source_file`] with explicit [`ReadOptions`].
pub fn read_source_file_with(
    file: &SourceFile,
    options: &ReadOptions,
    emit: &mut dyn FnMut(SourceItem) -> bool,
) -> Result<ReadStats> {
    let name: Arc<str> = file.location.to_string().into();
    match (file.role, file.format) {
        (FileRole::Deleted, _) => {
            let mut reader = open(file)?;
            let mut on_item = |item: SourceItem| match item {
                SourceItem::Line { pos, bytes } => deleted_line(pos, bytes, emit),
                other => emit(other),
            };
            read_lines(&mut reader, file.gzip, &name, options, &mut on_item)
        }
        (FileRole::Output, FileFormat::Ndjson) => {
            let mut reader = open(file)?;
            read_lines(&mut reader, file.gzip, &name, options, emit)
        }
        (FileRole::Output, FileFormat::Bundle) => read_bundle(file, &name, emit),
    }
}

// ---------------------------------------------------------------------------------------------------------
// Opening

fn open(file: &SourceFile) -> Result<Box<dyn BufRead>> {
    let raw: Box<dyn Read> = match &file.location {
        Location::Local(path) => {
            Box::new(std::fs::File::open(path).map_err(|e| Error::io(&file.location, e))?)
        }
        Location::Object { store, path, url } => {
            let handle = tokio::runtime::Handle::try_current().map_err(|_| {
                Error::invalid(
                    url,
                    "reading an object-store file needs a tokio runtime (call from spawn_blocking)",
                )
            })?;
            let result = handle
                .block_on(store.get(path))
                .map_err(|e| Error::object_store(url, e))?;
            let stream = result.into_stream().map_err(io::Error::other);
            Box::new(SyncIoBridge::new_with_handle(
                StreamReader::new(stream),
                handle,
            ))
        }
    };
    Ok(if file.gzip {
        Box::new(BufReader::with_capacity(
            BUF_CAPACITY,
            MultiGzDecoder::new(BufReader::with_capacity(BUF_CAPACITY, raw)),
        ))
    } else {
        Box::new(BufReader::with_capacity(BUF_CAPACITY, raw))
    })
}

/// Whether a read error from a gzip-compressed file is about the compressed data (rather than I/O).
fn is_gzip_data_error(gzip: bool, e: &io::Error) -> bool {
    gzip && matches!(
        e.kind(),
        io::ErrorKind::UnexpectedEof | io::ErrorKind::InvalidInput | io::ErrorKind::InvalidData
    )
}

fn gzip_reason(e: &io::Error) -> String {
    // flate2's messages are fixed texts ("corrupt deflate stream", "invalid gzip header", ...).
    format!("truncated or corrupt gzip stream ({e})")
}

fn human_bytes(n: usize) -> String {
    const MIB: usize = 1024 * 1024;
    if n >= MIB && n.is_multiple_of(MIB) {
        format!("{} MiB", n / MIB)
    } else {
        format!("{n} bytes")
    }
}

// ---------------------------------------------------------------------------------------------------------
// NDJSON

/// Splits `reader` into lines with a bounded buffer and emits them as [`SourceItem::Line`].
fn read_lines(
    reader: &mut dyn BufRead,
    gzip: bool,
    file: &Arc<str>,
    options: &ReadOptions,
    emit: &mut dyn FnMut(SourceItem) -> bool,
) -> Result<ReadStats> {
    let max_line = options.max_line_bytes;
    let mut stats = ReadStats::default();
    let mut state = LineState {
        file,
        max_line,
        spill_dir: options.spill_dir.as_deref(),
        spill: None,
        line: Vec::new(),
        too_long: false,
        line_no: 0,
        saw_content: false,
    };
    loop {
        let buf = match reader.fill_buf() {
            Ok(buf) => buf,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) if is_gzip_data_error(gzip, &e) => {
                let partial = !state.line.is_empty() || state.too_long;
                // A partial over-long line is dropped with its spill file.
                let raw = (!state.line.is_empty())
                    .then(|| RawInput::Bytes(std::mem::take(&mut state.line)));
                stats.lines = state.line_no + u64::from(partial);
                emit(SourceItem::Reject {
                    pos: ItemPosition::new(file, state.line_no + 1, None),
                    reason: gzip_reason(&e),
                    raw,
                });
                return Ok(stats);
            }
            Err(e) => return Err(Error::io(file, e)),
        };
        if buf.is_empty() {
            break;
        }
        let newline = memchr::memchr(b'\n', buf);
        let chunk_len = newline.unwrap_or(buf.len());
        let keep_going = match newline {
            // Fast path: a whole line inside the buffer is copied once, at its exact size.
            Some(end) if state.line.is_empty() && !state.too_long => {
                state.line_no += 1;
                if end > max_line {
                    state.start_spill(&buf[..end])?;
                    state.finish(emit)?
                } else {
                    let line = &buf[..end];
                    let line = line.strip_suffix(b"\r").unwrap_or(line);
                    state.emit_line(line.to_vec(), emit)
                }
            }
            _ => {
                if state.too_long {
                    state.spill(&buf[..chunk_len])?;
                } else if state.line.len() + chunk_len > max_line {
                    state.start_spill(&buf[..chunk_len])?;
                } else {
                    state.line.extend_from_slice(&buf[..chunk_len]);
                }
                if newline.is_some() {
                    state.line_no += 1;
                    state.finish(emit)?
                } else {
                    true
                }
            }
        };
        let consumed = chunk_len + usize::from(newline.is_some());
        reader.consume(consumed);
        stats.bytes += consumed as u64;
        if !keep_going {
            stats.lines = state.line_no;
            return Ok(stats);
        }
    }
    if !state.line.is_empty() || state.too_long {
        state.line_no += 1;
        if !state.finish(emit)? {
            stats.lines = state.line_no;
            return Ok(stats);
        }
    }
    stats.lines = state.line_no;
    if !state.saw_content {
        emit(SourceItem::Reject {
            pos: ItemPosition::new(file, 0, None),
            reason: "empty file".into(),
            raw: None,
        });
    }
    Ok(stats)
}

struct LineState<'a> {
    file: &'a Arc<str>,
    max_line: usize,
    /// Where over-long lines are written; `None`: they are skipped.
    spill_dir: Option<&'a Path>,
    /// The file the current over-long line is being written to.
    spill: Option<Spill>,
    /// The current line's bytes when it spans buffer refills.
    line: Vec<u8>,
    /// The current line exceeded `max_line`; its bytes are being spilled or skipped.
    too_long: bool,
    /// Physical lines completed so far (= the current line's number once it ends).
    line_no: u64,
    saw_content: bool,
}

/// An over-long line being written to a file.
struct Spill {
    file: tempfile::NamedTempFile,
    len: u64,
    last_byte: Option<u8>,
}

impl LineState<'_> {
    /// The current line is over the limit: its bytes so far (the buffered ones, then `chunk`) go to
    /// a new spill file, if there is a spill directory.
    fn start_spill(&mut self, chunk: &[u8]) -> Result<()> {
        self.too_long = true;
        let buffered = std::mem::take(&mut self.line);
        let Some(dir) = self.spill_dir else {
            return Ok(());
        };
        std::fs::create_dir_all(dir).map_err(|e| Error::io(&dir.display(), e))?;
        let file = tempfile::Builder::new()
            .prefix("line-")
            .tempfile_in(dir)
            .map_err(|e| Error::io(&dir.display(), e))?;
        self.spill = Some(Spill {
            file,
            len: 0,
            last_byte: None,
        });
        self.spill(&buffered)?;
        self.spill(chunk)
    }

    /// Appends `chunk` to the current spill file, if there is one.
    fn spill(&mut self, chunk: &[u8]) -> Result<()> {
        let Some(spill) = self.spill.as_mut() else {
            return Ok(());
        };
        if chunk.is_empty() {
            return Ok(());
        }
        spill
            .file
            .write_all(chunk)
            .map_err(|e| Error::io(&spill.file.path().display(), e))?;
        spill.len += chunk.len() as u64;
        spill.last_byte = chunk.last().copied();
        Ok(())
    }

    /// Closes the current spill file, without the line's trailing `\r`.
    fn finish_spill(&mut self) -> Result<Option<SpilledLine>> {
        let Some(mut spill) = self.spill.take() else {
            return Ok(None);
        };
        let location = spill.file.path().display().to_string();
        if spill.last_byte == Some(b'\r') {
            spill.len -= 1;
            spill
                .file
                .as_file()
                .set_len(spill.len)
                .map_err(|e| Error::io(&location, e))?;
        }
        spill.file.flush().map_err(|e| Error::io(&location, e))?;
        Ok(Some(SpilledLine {
            path: spill.file.into_temp_path(),
            len: spill.len,
        }))
    }

    /// Ends the current (buffered, spilled or skipped) line.
    fn finish(&mut self, emit: &mut dyn FnMut(SourceItem) -> bool) -> Result<bool> {
        if self.too_long {
            self.too_long = false;
            self.saw_content = true;
            let raw = self.finish_spill()?.map(RawInput::Spilled);
            return Ok(emit(SourceItem::Reject {
                pos: ItemPosition::new(self.file, self.line_no, None),
                reason: format!("line longer than {}", human_bytes(self.max_line)),
                raw,
            }));
        }
        let mut line = std::mem::take(&mut self.line);
        if line.last() == Some(&b'\r') {
            line.pop();
        }
        Ok(self.emit_line(line, emit))
    }

    fn emit_line(&mut self, line: Vec<u8>, emit: &mut dyn FnMut(SourceItem) -> bool) -> bool {
        if line.iter().all(u8::is_ascii_whitespace) {
            return true;
        }
        self.saw_content = true;
        emit(SourceItem::Line {
            pos: ItemPosition::new(self.file, self.line_no, None),
            bytes: line,
        })
    }
}

// ---------------------------------------------------------------------------------------------------------
// Bulk Data deleted[] files

/// One line of a `deleted[]` file: a Bundle whose entries are `DELETE Type/id` requests.
fn deleted_line(
    pos: ItemPosition,
    bytes: Vec<u8>,
    emit: &mut dyn FnMut(SourceItem) -> bool,
) -> bool {
    let reject = |pos: ItemPosition, reason: String, bytes: &[u8]| SourceItem::Reject {
        pos,
        reason,
        raw: Some(RawInput::Bytes(bytes.to_vec())),
    };
    let bundle: Value = match serde_json::from_slice(&bytes) {
        Ok(v) => v,
        Err(e) => {
            let reason = format!(
                "invalid JSON at column {}: {}",
                e.column(),
                json_category(&e)
            );
            return emit(SourceItem::Reject {
                pos,
                reason,
                raw: Some(RawInput::Bytes(bytes)),
            });
        }
    };
    if bundle.get("resourceType").and_then(Value::as_str) != Some("Bundle") {
        return emit(reject(pos, "deleted[] line is not a Bundle".into(), &bytes));
    }
    let entries = match bundle.get("entry") {
        None | Some(Value::Null) => return true,
        Some(Value::Array(entries)) => entries,
        Some(_) => {
            let pos = ItemPosition {
                path: Some("Bundle.entry".into()),
                ..pos
            };
            return emit(reject(pos, "Bundle.entry is not an array".into(), &bytes));
        }
    };
    for (i, entry) in entries.iter().enumerate() {
        let entry_pos = ItemPosition {
            path: Some(format!("Bundle.entry[{i}]")),
            ..pos.clone()
        };
        let item = match delete_request(entry.get("request")) {
            Some(Ok((resource_type, id))) => SourceItem::Delete {
                pos: entry_pos,
                resource_type,
                id,
            },
            Some(Err(reason)) => reject(entry_pos, reason.into(), &bytes),
            None => reject(
                entry_pos,
                "entry is not a DELETE request (request.method)".into(),
                &bytes,
            ),
        };
        if !emit(item) {
            return false;
        }
    }
    true
}

/// `None` when an entry's `request` is not a DELETE; otherwise its `Type/id` or why it is unusable.
fn delete_request(request: Option<&Value>) -> Option<Result<(String, String), &'static str>> {
    let request = request?;
    let method = request.get("method").and_then(Value::as_str)?;
    if !method.eq_ignore_ascii_case("DELETE") {
        return None;
    }
    Some(match request.get("url").and_then(Value::as_str) {
        None => Err("DELETE entry has no request.url"),
        Some(url) => match Reference::parse(url).type_and_id() {
            Some((ty, id)) => Ok((ty.to_owned(), id.to_owned())),
            None => {
                Err("DELETE request.url is not Type/id (conditional deletes are not supported)")
            }
        },
    })
}

// ---------------------------------------------------------------------------------------------------------
// Bundles and single-resource JSON files

fn json_category(e: &serde_json::Error) -> &'static str {
    match e.classify() {
        serde_json::error::Category::Syntax => "syntax error",
        serde_json::error::Category::Eof => "unexpected end of input",
        serde_json::error::Category::Data => "unexpected JSON structure",
        serde_json::error::Category::Io => "read error",
    }
}

/// Turns a JSON error met while reading a Bundle into a Reject (data problems) or an `Err` (I/O).
fn bundle_error(
    e: serde_json::Error,
    gzip: bool,
    file: &Arc<str>,
    counters: &Counters,
    emit: &mut dyn FnMut(SourceItem) -> bool,
) -> Result<()> {
    let (line, reason) = if e.is_io() {
        let io_error: io::Error = e.into();
        if !is_gzip_data_error(gzip, &io_error) {
            return Err(Error::io(file, io_error));
        }
        (counters.newlines.get() + 1, gzip_reason(&io_error))
    } else if e.is_eof() && !counters.non_ws.get() {
        (0, "empty file".to_owned())
    } else {
        let reason = format!(
            "invalid JSON at line {} column {}: {}",
            e.line(),
            e.column(),
            json_category(&e)
        );
        (e.line() as u64, reason)
    };
    emit(SourceItem::Reject {
        pos: ItemPosition::new(file, line, None),
        reason,
        raw: None,
    });
    Ok(())
}

/// Counts what serde_json pulls through the reader (it reads byte by byte, so the counts are exact).
#[derive(Default)]
struct Counters {
    newlines: Cell<u64>,
    bytes: Cell<u64>,
    non_ws: Cell<bool>,
}

struct CountingReader<R> {
    inner: R,
    counters: Rc<Counters>,
}

impl<R: Read> Read for CountingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        let data = &buf[..n];
        let c = &self.counters;
        c.bytes.set(c.bytes.get() + n as u64);
        c.newlines
            .set(c.newlines.get() + memchr::memchr_iter(b'\n', data).count() as u64);
        if !c.non_ws.get() && !data.iter().all(u8::is_ascii_whitespace) {
            c.non_ws.set(true);
        }
        Ok(n)
    }
}

type CountingDeserializer =
    serde_json::Deserializer<serde_json::de::IoRead<CountingReader<Box<dyn BufRead>>>>;

fn counting_deserializer(file: &SourceFile) -> Result<(CountingDeserializer, Rc<Counters>)> {
    let counters = Rc::new(Counters::default());
    let reader = CountingReader {
        inner: open(file)?,
        counters: Rc::clone(&counters),
    };
    Ok((serde_json::Deserializer::from_reader(reader), counters))
}

fn read_bundle(
    file: &SourceFile,
    name: &Arc<str>,
    emit: &mut dyn FnMut(SourceItem) -> bool,
) -> Result<ReadStats> {
    // Pass 1: the top-level resourceType and the fullUrl -> Type/id map, skipping resource bodies.
    let (mut de, counters) = counting_deserializer(file)?;
    let mut head = Pass1::default();
    let pass1 = TopPass1(&mut head).deserialize(&mut de);
    let pass1 = pass1.and_then(|()| de.end());
    drop(de);
    let mut stats = ReadStats {
        lines: 0,
        bytes: counters.bytes.get(),
    };
    match head.resource_type.as_deref() {
        Some("Bundle") => {}
        _ if pass1.is_err() => {
            if let Err(e) = pass1 {
                bundle_error(e, file.gzip, name, &counters, emit)?;
            }
            return Ok(stats);
        }
        Some(_) => {
            let (mut de, counters) = counting_deserializer(file)?;
            let parsed = Value::deserialize(&mut de).and_then(|v| de.end().map(|()| v));
            stats.bytes = counters.bytes.get();
            match parsed {
                Ok(resource) => {
                    stats.lines = 1;
                    emit(SourceItem::Resource {
                        pos: ItemPosition::new(name, 1, None),
                        resource,
                    });
                }
                Err(e) => bundle_error(e, file.gzip, name, &counters, emit)?,
            }
            return Ok(stats);
        }
        None => {
            let reason = if head.top_is_object {
                "top-level JSON object has no resourceType"
            } else {
                "top-level JSON value is not an object"
            };
            emit(SourceItem::Reject {
                pos: ItemPosition::new(name, 1, None),
                reason: reason.into(),
                raw: None,
            });
            return Ok(stats);
        }
    }

    // Pass 2: stream the entries, rewriting references to mapped fullUrls.
    let (mut de, counters) = counting_deserializer(file)?;
    let mut ctx = Pass2 {
        file: name,
        refs: &head.refs,
        counters: &counters,
        emit,
        stopped: false,
        entries: 0,
    };
    let result = TopPass2(&mut ctx)
        .deserialize(&mut de)
        .and_then(|()| de.end());
    drop(de);
    stats.lines = ctx.entries;
    stats.bytes = counters.bytes.get();
    if ctx.stopped {
        return Ok(stats);
    }
    if let Err(e) = result {
        bundle_error(e, file.gzip, name, &counters, ctx.emit)?;
    }
    Ok(stats)
}

/// Object keys the Bundle visitors care about.
enum Field {
    ResourceType,
    Entry,
    FullUrl,
    Resource,
    Id,
    Other,
}

impl<'de> Deserialize<'de> for Field {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct FieldVisitor;
        impl Visitor<'_> for FieldVisitor {
            type Value = Field;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an object key")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Field, E> {
                Ok(match v {
                    "resourceType" => Field::ResourceType,
                    "entry" => Field::Entry,
                    "fullUrl" => Field::FullUrl,
                    "resource" => Field::Resource,
                    "id" => Field::Id,
                    _ => Field::Other,
                })
            }
        }
        d.deserialize_identifier(FieldVisitor)
    }
}

/// Accepts any JSON scalar and yields the default.
macro_rules! lenient_scalar_visits {
    () => {
        fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
            Ok(Default::default())
        }
        fn visit_i64<E: de::Error>(self, _: i64) -> Result<Self::Value, E> {
            Ok(Default::default())
        }
        fn visit_u64<E: de::Error>(self, _: u64) -> Result<Self::Value, E> {
            Ok(Default::default())
        }
        fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
            Ok(Default::default())
        }
        fn visit_str<E: de::Error>(self, _: &str) -> Result<Self::Value, E> {
            Ok(Default::default())
        }
        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(Default::default())
        }
        fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(Default::default())
        }
    };
}

/// Accepts any JSON value other than an object (whose visit is written by hand) and yields the default.
macro_rules! lenient_non_map_visits {
    () => {
        lenient_scalar_visits!();
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
            while seq.next_element::<IgnoredAny>()?.is_some() {}
            Ok(Default::default())
        }
    };
}

/// A string, or `None` for any other JSON value.
#[derive(Default)]
struct MaybeString(Option<String>);

impl<'de> Deserialize<'de> for MaybeString {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = MaybeString;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_bool<E: de::Error>(self, _: bool) -> Result<MaybeString, E> {
                Ok(MaybeString(None))
            }
            fn visit_i64<E: de::Error>(self, _: i64) -> Result<MaybeString, E> {
                Ok(MaybeString(None))
            }
            fn visit_u64<E: de::Error>(self, _: u64) -> Result<MaybeString, E> {
                Ok(MaybeString(None))
            }
            fn visit_f64<E: de::Error>(self, _: f64) -> Result<MaybeString, E> {
                Ok(MaybeString(None))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<MaybeString, E> {
                Ok(MaybeString(Some(v.to_owned())))
            }
            fn visit_unit<E: de::Error>(self) -> Result<MaybeString, E> {
                Ok(MaybeString(None))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<MaybeString, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(MaybeString(None))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<MaybeString, A::Error> {
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(MaybeString(None))
            }
        }
        d.deserialize_any(V)
    }
}

/// Pass 1 result.
#[derive(Default)]
struct Pass1 {
    top_is_object: bool,
    resource_type: Option<String>,
    /// `fullUrl` -> `Type/id`.
    refs: HashMap<String, String>,
}

/// `resource.resourceType` / `resource.id` of an entry, skipping the rest of the resource.
#[derive(Default)]
struct ResourceHead {
    resource_type: Option<String>,
    id: Option<String>,
}

impl<'de> Deserialize<'de> for ResourceHead {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = ResourceHead;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a resource")
            }
            lenient_non_map_visits!();
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<ResourceHead, A::Error> {
                let mut head = ResourceHead::default();
                while let Some(key) = map.next_key::<Field>()? {
                    match key {
                        Field::ResourceType => {
                            head.resource_type = map.next_value::<MaybeString>()?.0
                        }
                        Field::Id => head.id = map.next_value::<MaybeString>()?.0,
                        _ => {
                            map.next_value::<IgnoredAny>()?;
                        }
                    }
                }
                Ok(head)
            }
        }
        d.deserialize_any(V)
    }
}

/// `fullUrl` and the resource head of an entry.
#[derive(Default)]
struct EntryHead {
    full_url: Option<String>,
    resource: ResourceHead,
}

impl<'de> Deserialize<'de> for EntryHead {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = EntryHead;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a Bundle entry")
            }
            lenient_non_map_visits!();
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<EntryHead, A::Error> {
                let mut head = EntryHead::default();
                while let Some(key) = map.next_key::<Field>()? {
                    match key {
                        Field::FullUrl => head.full_url = map.next_value::<MaybeString>()?.0,
                        Field::Resource => head.resource = map.next_value()?,
                        _ => {
                            map.next_value::<IgnoredAny>()?;
                        }
                    }
                }
                Ok(head)
            }
        }
        d.deserialize_any(V)
    }
}

/// Whether a `fullUrl` can be the target of references that are rewritten to `Type/id`.
fn is_mappable_full_url(full_url: &str) -> bool {
    full_url.starts_with("urn:uuid:")
        || full_url.starts_with("urn:oid:")
        || full_url.contains("://")
}

struct TopPass1<'a>(&'a mut Pass1);

impl<'de> DeserializeSeed<'de> for TopPass1<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for TopPass1<'_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a FHIR resource")
    }
    lenient_non_map_visits!();
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        self.0.top_is_object = true;
        while let Some(key) = map.next_key::<Field>()? {
            match key {
                Field::ResourceType => self.0.resource_type = map.next_value::<MaybeString>()?.0,
                Field::Entry => map.next_value_seed(EntriesPass1(&mut *self.0))?,
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(())
    }
}

struct EntriesPass1<'a>(&'a mut Pass1);

impl<'de> DeserializeSeed<'de> for EntriesPass1<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for EntriesPass1<'_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Bundle entries")
    }
    lenient_scalar_visits!();
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while let Some(head) = seq.next_element::<EntryHead>()? {
            let (Some(full_url), Some(ty), Some(id)) =
                (head.full_url, head.resource.resource_type, head.resource.id)
            else {
                continue;
            };
            if is_mappable_full_url(&full_url) && is_resource_type(&ty) && is_valid_id(&id) {
                self.0.refs.insert(full_url, format!("{ty}/{id}"));
            }
        }
        Ok(())
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(())
    }
}

/// Pass 2 state: where to emit, the reference map, progress.
struct Pass2<'a, 'e> {
    file: &'a Arc<str>,
    refs: &'a HashMap<String, String>,
    counters: &'a Counters,
    emit: &'e mut dyn FnMut(SourceItem) -> bool,
    stopped: bool,
    entries: u64,
}

impl Pass2<'_, '_> {
    fn entry(&mut self, index: u64, line: u64, entry: Value) -> bool {
        let entry_path = format!("Bundle.entry[{index}]");
        // A rejected entry is kept as its JSON text (the file's own bytes are not at hand once
        // the entry is parsed), for the caller to store with the other rejected input.
        let reject = |path: String, reason: &str, entry: &Value| SourceItem::Reject {
            pos: ItemPosition::new(self.file, line, Some(path)),
            reason: reason.into(),
            raw: serde_json::to_vec(entry).ok().map(RawInput::Bytes),
        };
        let Value::Object(mut object) = entry else {
            return (self.emit)(reject(entry_path, "entry is not a JSON object", &entry));
        };
        let item = match delete_request(object.get("request")) {
            Some(Ok((resource_type, id))) => SourceItem::Delete {
                pos: ItemPosition::new(self.file, line, Some(entry_path)),
                resource_type,
                id,
            },
            Some(Err(reason)) => reject(entry_path, reason, &Value::Object(object)),
            None => match object.remove("resource") {
                Some(Value::Object(resource)) => {
                    let mut resource = Value::Object(resource);
                    if !self.refs.is_empty() {
                        rewrite_references(&mut resource, self.refs);
                    }
                    SourceItem::Resource {
                        pos: ItemPosition::new(
                            self.file,
                            line,
                            Some(format!("{entry_path}.resource")),
                        ),
                        resource,
                    }
                }
                Some(other) => {
                    object.insert("resource".into(), other);
                    reject(
                        format!("{entry_path}.resource"),
                        "resource is not a JSON object",
                        &Value::Object(object),
                    )
                }
                None => reject(
                    entry_path,
                    "entry has neither a resource nor a DELETE request",
                    &Value::Object(object),
                ),
            },
        };
        (self.emit)(item)
    }
}

/// Rewrites every `"reference"` string that names a mapped `fullUrl` to its `Type/id`.
fn rewrite_references(value: &mut Value, refs: &HashMap<String, String>) {
    match value {
        Value::Object(map) => {
            for (key, child) in map.iter_mut() {
                if key == "reference"
                    && let Value::String(reference) = child
                {
                    if let Some(target) = refs.get(reference.as_str()) {
                        target.clone_into(reference);
                    }
                    continue;
                }
                rewrite_references(child, refs);
            }
        }
        Value::Array(items) => {
            for item in items {
                rewrite_references(item, refs);
            }
        }
        _ => {}
    }
}

const STOPPED: &str = "reading stopped by the caller";

struct TopPass2<'p, 'a, 'e>(&'p mut Pass2<'a, 'e>);

impl<'de> DeserializeSeed<'de> for TopPass2<'_, '_, '_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for TopPass2<'_, '_, '_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a Bundle")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while let Some(key) = map.next_key::<Field>()? {
            match key {
                Field::Entry => map.next_value_seed(EntriesPass2(&mut *self.0))?,
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(())
    }
}

struct EntriesPass2<'p, 'a, 'e>(&'p mut Pass2<'a, 'e>);

impl<'de> DeserializeSeed<'de> for EntriesPass2<'_, '_, '_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for EntriesPass2<'_, '_, '_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an array of Bundle entries")
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let ctx = self.0;
        while let Some((line, entry)) = seq.next_element_seed(EntryWithLine(ctx.counters))? {
            let index = ctx.entries;
            ctx.entries += 1;
            if !ctx.entry(index, line, entry) {
                ctx.stopped = true;
                return Err(de::Error::custom(STOPPED));
            }
        }
        Ok(())
    }
}

/// One entry as a [`Value`], with the line its first byte is on.
struct EntryWithLine<'a>(&'a Counters);

impl<'de> DeserializeSeed<'de> for EntryWithLine<'_> {
    type Value = (u64, Value);
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(u64, Value), D::Error> {
        // serde_json has peeked the entry's first byte, so the newlines before it have been counted.
        let line = self.0.newlines.get() + 1;
        Ok((line, Value::deserialize(d)?))
    }
}
