//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::io::Write;
use std::path::Path;

use fhirlake_connectors::plan::FileRole;
use fhirlake_connectors::read::{ReadOptions, ReadStats, read_source_file_with};
use fhirlake_connectors::{FileFormat, Location, SourceFile, SourceItem, read_source_file};

pub fn gzip(data: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    enc.write_all(data).unwrap();
    enc.finish().unwrap()
}

pub fn local(path: &Path, format: FileFormat, gzip: bool) -> SourceFile {
    SourceFile::new(Location::Local(path.to_path_buf()), format, gzip)
}

pub fn deleted(path: &Path, gzip: bool) -> SourceFile {
    SourceFile {
        role: FileRole::Deleted,
        ..local(path, FileFormat::Ndjson, gzip)
    }
}

pub fn read_all(file: &SourceFile) -> (Vec<SourceItem>, ReadStats) {
    let mut items = Vec::new();
    let stats = read_source_file(file, &mut |item| {
        items.push(item);
        true
    })
    .expect("file can be read");
    (items, stats)
}

pub fn read_all_with(file: &SourceFile, options: &ReadOptions) -> (Vec<SourceItem>, ReadStats) {
    let mut items = Vec::new();
    let stats = read_source_file_with(file, options, &mut |item| {
        items.push(item);
        true
    })
    .expect("file can be read");
    (items, stats)
}

/// `(line, text)` of each Line item.
pub fn lines(items: &[SourceItem]) -> Vec<(u64, String)> {
    items
        .iter()
        .filter_map(|item| match item {
            SourceItem::Line { pos, bytes } => {
                Some((pos.line, String::from_utf8_lossy(bytes).into_owned()))
            }
            _ => None,
        })
        .collect()
}

/// `(line, path, reason)` of each Reject item.
pub fn rejects(items: &[SourceItem]) -> Vec<(u64, Option<String>, String)> {
    items
        .iter()
        .filter_map(|item| match item {
            SourceItem::Reject { pos, reason, .. } => {
                Some((pos.line, pos.path.clone(), reason.clone()))
            }
            _ => None,
        })
        .collect()
}

pub const SYNTHEA_BULK: &str = "/work/shared/data/synthea/bulk-data-server-100-patients";
