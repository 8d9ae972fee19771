//! Source planning: expands user-given specs (local files, directories, globs, `file://` / `s3://` URLs and
//! Bulk Data landing folders with a `manifest.json`) into an ordered list of [`SourceFile`]s to read, plus the
//! problems met on the way. Planning never fails as a whole; each unusable spec becomes a problem.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use futures::TryStreamExt;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt};
use serde_json::Value;
use url::Url;

use crate::error::Error;
use crate::location::{Location, StoreOptions, object_store_for_url, url_for_path};

/// How a file's content is framed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FileFormat {
    /// One JSON value (a resource, or for [`FileRole::Deleted`] a Bundle) per line.
    Ndjson,
    /// One JSON document: a Bundle, or a single resource.
    Bundle,
}

impl FileFormat {
    /// Classifies a file name by extension (case-insensitive): `.ndjson`/`.jsonl` -> [`FileFormat::Ndjson`],
    /// `.json` -> [`FileFormat::Bundle`], each optionally followed by `.gz`. Returns the format and whether the
    /// file is gzip-compressed, or `None` for other names.
    pub fn from_file_name(name: &str) -> Option<(FileFormat, bool)> {
        let lower = name.to_ascii_lowercase();
        let (stem, gzip) = match lower.strip_suffix(".gz") {
            Some(stem) => (stem, true),
            None => (lower.as_str(), false),
        };
        if stem.ends_with(".ndjson") || stem.ends_with(".jsonl") {
            Some((FileFormat::Ndjson, gzip))
        } else if stem.ends_with(".json") {
            Some((FileFormat::Bundle, gzip))
        } else {
            None
        }
    }
}

/// What a file holds in a Bulk Data export.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FileRole {
    /// Resources (`output[]` in a manifest; every file found outside a manifest).
    Output,
    /// Bundles of DELETE entries (`deleted[]` in a manifest).
    Deleted,
}

/// One file to read.
#[derive(Clone, Debug)]
pub struct SourceFile {
    pub location: Location,
    pub format: FileFormat,
    pub gzip: bool,
    pub role: FileRole,
    /// The resource type a manifest `output[].type` announced.
    pub expected_type: Option<String>,
    /// The resource count a manifest `output[].count` announced.
    pub expected_count: Option<u64>,
}

impl SourceFile {
    /// An output file with no manifest expectations.
    pub fn new(location: Location, format: FileFormat, gzip: bool) -> Self {
        SourceFile {
            location,
            format,
            gzip,
            role: FileRole::Output,
            expected_type: None,
            expected_count: None,
        }
    }
}

/// The result of planning: files to read and sources that could not be used.
#[derive(Debug, Default)]
pub struct SourcePlan {
    /// Files in a deterministic order: specs in the order given; within a spec sorted by location text
    /// (a landing folder lists its `output[]` files, sorted, then its `deleted[]` files, sorted).
    pub files: Vec<SourceFile>,
    /// Sources that could not be used (missing file, directory with no FHIR files, bad manifest, ...).
    pub problems: Vec<Error>,
}

impl SourcePlan {
    fn append(&mut self, other: SourcePlan) {
        self.files.extend(other.files);
        self.problems.extend(other.problems);
    }
}

/// Name of the Bulk Data completion manifest that marks a landing folder.
const MANIFEST: &str = "manifest.json";
/// Maximum depth of a directory walk (guards against symlink loops).
const MAX_DEPTH: usize = 32;

/// Expands user-given sources. Never fails as a whole: each bad spec becomes a `problems` entry.
pub async fn plan_sources(specs: &[String], opts: &StoreOptions) -> SourcePlan {
    let mut plan = SourcePlan::default();
    for spec in specs {
        let part = if is_url(spec) {
            plan_url(spec, opts).await
        } else {
            plan_local_off_runtime(spec).await
        };
        tracing::debug!(
            spec = %spec,
            files = part.files.len(),
            problems = part.problems.len(),
            "planned source"
        );
        plan.append(part);
    }
    plan
}

fn is_url(spec: &str) -> bool {
    match spec.split_once("://") {
        Some((scheme, _)) => {
            scheme.len() > 1
                && scheme
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"+-.".contains(&b))
        }
        None => false,
    }
}

fn has_glob_chars(s: &str) -> bool {
    s.contains(['*', '?', '['])
}

/// Whether a file found while walking a directory or prefix is never a data file.
fn skip_file_name(name: &str) -> bool {
    name.starts_with('.') || name.starts_with("manifest") || name == "log.ndjson"
}

/// Whether a directory met while walking is skipped.
fn skip_dir_name(name: &str) -> bool {
    name.starts_with('.') || name == "rejected" || name == "staging"
}

// ---------------------------------------------------------------------------------------------------------
// Local files

async fn plan_local_off_runtime(spec: &str) -> SourcePlan {
    if tokio::runtime::Handle::try_current().is_ok() {
        let owned = spec.to_owned();
        match tokio::task::spawn_blocking(move || plan_local(&owned)).await {
            Ok(plan) => return plan,
            Err(e) => tracing::warn!(error = %e, "local planning task failed; planning inline"),
        }
    }
    plan_local(spec)
}

fn plan_local(spec: &str) -> SourcePlan {
    let path = PathBuf::from(spec);
    let mut plan = SourcePlan::default();
    match std::fs::metadata(&path) {
        Ok(meta) if meta.is_dir() => plan_local_dir(&path, &mut plan),
        Ok(_) => {
            let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
            if name.as_deref() == Some(MANIFEST) {
                let dir = match path.parent() {
                    Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
                    _ => PathBuf::from("."),
                };
                plan_local_landing(&dir, &path, &mut plan);
            } else {
                let (format, gzip) = name
                    .as_deref()
                    .and_then(FileFormat::from_file_name)
                    .unwrap_or((FileFormat::Ndjson, spec.ends_with(".gz")));
                plan.files
                    .push(SourceFile::new(Location::Local(path), format, gzip));
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && has_glob_chars(spec) => {
            plan_local_glob(spec, &mut plan);
        }
        Err(e) => plan.problems.push(Error::io(spec, e)),
    }
    plan
}

fn plan_local_glob(spec: &str, plan: &mut SourcePlan) {
    let options = glob::MatchOptions {
        case_sensitive: true,
        require_literal_separator: true,
        require_literal_leading_dot: true,
    };
    let paths = match glob::glob_with(spec, options) {
        Ok(paths) => paths,
        Err(e) => {
            plan.problems.push(Error::invalid(
                spec,
                format!("invalid glob pattern: {}", e.msg),
            ));
            return;
        }
    };
    let mut matched = Vec::new();
    for entry in paths {
        match entry {
            Ok(path) => matched.push(path),
            Err(e) => {
                let location = e.path().display().to_string();
                plan.problems.push(Error::io(&location, e.into()));
            }
        }
    }
    if matched.is_empty() {
        plan.problems.push(Error::NotFound {
            location: spec.to_owned(),
        });
        return;
    }
    matched.sort_by_key(|p| p.display().to_string());
    let before = plan.files.len();
    for path in matched {
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        match std::fs::metadata(&path) {
            Ok(meta) if meta.is_dir() => {
                if !skip_dir_name(&name) {
                    plan_local_dir(&path, plan);
                }
            }
            Ok(_) => {
                if skip_file_name(&name) {
                    continue;
                }
                if let Some((format, gzip)) = FileFormat::from_file_name(&name) {
                    plan.files
                        .push(SourceFile::new(Location::Local(path), format, gzip));
                }
            }
            Err(e) => plan.problems.push(Error::io(&path.display(), e)),
        }
    }
    if plan.files.len() == before {
        plan.problems.push(Error::NoFhirFiles {
            location: spec.to_owned(),
        });
    }
}

fn plan_local_dir(dir: &Path, plan: &mut SourcePlan) {
    let manifest = dir.join(MANIFEST);
    if manifest.is_file() {
        plan_local_landing(dir, &manifest, plan);
        return;
    }
    let mut found = Vec::new();
    walk_local(dir, 0, &mut found, &mut plan.problems);
    if found.is_empty() {
        plan.problems.push(Error::NoFhirFiles {
            location: dir.display().to_string(),
        });
        return;
    }
    found.sort_by(|a, b| a.0.cmp(&b.0));
    plan.files.extend(found.into_iter().map(|(_, f)| f));
}

fn walk_local(
    dir: &Path,
    depth: usize,
    found: &mut Vec<(String, SourceFile)>,
    problems: &mut Vec<Error>,
) {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) => {
            problems.push(Error::io(&dir.display(), e));
            return;
        }
    };
    let mut entries: Vec<_> = entries.filter_map(|e| e.ok()).map(|e| e.path()).collect();
    entries.sort();
    for path in entries {
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let Ok(meta) = std::fs::metadata(&path) else {
            tracing::warn!(path = %path.display(), "skipping an entry that cannot be read (broken link?)");
            continue;
        };
        if meta.is_dir() {
            if skip_dir_name(&name) {
                continue;
            }
            if depth >= MAX_DEPTH {
                tracing::warn!(path = %path.display(), "directory nesting too deep; skipped");
                continue;
            }
            walk_local(&path, depth + 1, found, problems);
        } else if !skip_file_name(&name)
            && let Some((format, gzip)) = FileFormat::from_file_name(&name)
        {
            let key = path.display().to_string();
            found.push((key, SourceFile::new(Location::Local(path), format, gzip)));
        }
    }
}

fn plan_local_landing(dir: &Path, manifest: &Path, plan: &mut SourcePlan) {
    let location = manifest.display().to_string();
    let bytes = match std::fs::read(manifest) {
        Ok(bytes) => bytes,
        Err(e) => {
            plan.problems.push(Error::io(&location, e));
            return;
        }
    };
    let lookup = |rel: &str| -> Option<Location> {
        [rel.to_owned(), format!("{rel}.gz")]
            .into_iter()
            .map(|name| dir.join(name))
            .find(|p| p.is_file())
            .map(Location::Local)
    };
    plan_manifest(&bytes, &location, &lookup, plan);
}

// ---------------------------------------------------------------------------------------------------------
// Object stores

async fn plan_url(spec: &str, opts: &StoreOptions) -> SourcePlan {
    let mut plan = SourcePlan::default();
    let url = match Url::parse(spec) {
        Ok(url) => url,
        Err(e) => {
            plan.problems
                .push(Error::invalid(spec, format!("invalid URL: {e}")));
            return plan;
        }
    };
    let (store, path) = match object_store_for_url(&url, opts) {
        Ok(found) => found,
        Err(e) => {
            plan.problems.push(e);
            return plan;
        }
    };
    if has_glob_chars(path.as_ref()) {
        plan_object_glob(&store, &url, &path, &mut plan).await;
        return plan;
    }
    let looks_like_dir = url.path().ends_with('/') || path.as_ref().is_empty();
    if !looks_like_dir {
        match store.head(&path).await {
            Ok(meta) => {
                let name = meta.location.filename().unwrap_or_default().to_owned();
                if name == MANIFEST {
                    let dir = meta.location.parent().unwrap_or_default();
                    let listing = match list_objects(&store, &url, &dir).await {
                        Ok(listing) => listing,
                        Err(e) => {
                            plan.problems.push(e);
                            return plan;
                        }
                    };
                    plan_object_landing(&store, &url, &dir, &listing, &mut plan).await;
                } else {
                    let (format, gzip) = FileFormat::from_file_name(&name)
                        .unwrap_or((FileFormat::Ndjson, name.ends_with(".gz")));
                    let location = object_location(&store, &url, meta.location);
                    plan.files.push(SourceFile::new(location, format, gzip));
                }
                return plan;
            }
            Err(object_store::Error::NotFound { .. }) => {}
            Err(e) => {
                plan.problems.push(Error::object_store(&url, e));
                return plan;
            }
        }
    }
    let listing = match list_objects(&store, &url, &path).await {
        Ok(listing) => listing,
        Err(e) => {
            plan.problems.push(e);
            return plan;
        }
    };
    if listing.is_empty() {
        plan.problems.push(Error::NotFound {
            location: url.to_string(),
        });
        return plan;
    }
    let manifest = path.clone().join(MANIFEST);
    if listing.contains(&manifest) {
        plan_object_landing(&store, &url, &path, &listing, &mut plan).await;
        return plan;
    }
    let prefix_parts = path.parts().count();
    let mut found: Vec<(String, SourceFile)> = listing
        .into_iter()
        .filter_map(|object| {
            let parts: Vec<String> = object
                .parts()
                .skip(prefix_parts)
                .map(|p| p.as_ref().to_owned())
                .collect();
            let (name, dirs) = parts.split_last()?;
            if dirs.iter().any(|d| skip_dir_name(d)) || skip_file_name(name) {
                return None;
            }
            let (format, gzip) = FileFormat::from_file_name(name)?;
            let location = object_location(&store, &url, object);
            Some((
                location.to_string(),
                SourceFile::new(location, format, gzip),
            ))
        })
        .collect();
    if found.is_empty() {
        plan.problems.push(Error::NoFhirFiles {
            location: url.to_string(),
        });
        return plan;
    }
    found.sort_by(|a, b| a.0.cmp(&b.0));
    plan.files.extend(found.into_iter().map(|(_, f)| f));
    plan
}

/// `path/rel` where `rel` is a `/`-separated relative path.
fn join_rel(path: &ObjectPath, rel: &str) -> ObjectPath {
    rel.split('/')
        .filter(|s| !s.is_empty())
        .fold(path.clone(), |acc, part| acc.join(part))
}

fn object_location(store: &Arc<dyn ObjectStore>, base: &Url, path: ObjectPath) -> Location {
    Location::Object {
        store: Arc::clone(store),
        url: url_for_path(base, &path),
        path,
    }
}

/// All object paths under `prefix` (recursively).
async fn list_objects(
    store: &Arc<dyn ObjectStore>,
    url: &Url,
    prefix: &ObjectPath,
) -> Result<Vec<ObjectPath>, Error> {
    let prefix = (!prefix.as_ref().is_empty()).then_some(prefix);
    let stream = store.list(prefix);
    let objects: Vec<_> = stream
        .map_ok(|meta| meta.location)
        .try_collect()
        .await
        .map_err(|e| match e {
            object_store::Error::NotFound { .. } => Error::NotFound {
                location: url.to_string(),
            },
            e => Error::object_store(url, e),
        })?;
    Ok(objects)
}

async fn plan_object_glob(
    store: &Arc<dyn ObjectStore>,
    url: &Url,
    pattern_path: &ObjectPath,
    plan: &mut SourcePlan,
) {
    let text = pattern_path.as_ref();
    let pattern = match glob::Pattern::new(text) {
        Ok(p) => p,
        Err(e) => {
            plan.problems.push(Error::invalid(
                url,
                format!("invalid glob pattern: {}", e.msg),
            ));
            return;
        }
    };
    let literal = &text[..text.find(['*', '?', '[']).unwrap_or(text.len())];
    let prefix = ObjectPath::from(literal.rsplit_once('/').map_or("", |(dir, _)| dir));
    let listing = match list_objects(store, url, &prefix).await {
        Ok(listing) => listing,
        Err(e) => {
            plan.problems.push(e);
            return;
        }
    };
    let options = glob::MatchOptions {
        case_sensitive: true,
        require_literal_separator: true,
        require_literal_leading_dot: true,
    };
    let matched: Vec<ObjectPath> = listing
        .into_iter()
        .filter(|p| pattern.matches_with(p.as_ref(), options))
        .collect();
    if matched.is_empty() {
        plan.problems.push(Error::NotFound {
            location: url.to_string(),
        });
        return;
    }
    let mut found: Vec<(String, SourceFile)> = matched
        .into_iter()
        .filter_map(|object| {
            let name = object.filename()?.to_owned();
            if skip_file_name(&name) {
                return None;
            }
            let (format, gzip) = FileFormat::from_file_name(&name)?;
            let location = object_location(store, url, object);
            Some((
                location.to_string(),
                SourceFile::new(location, format, gzip),
            ))
        })
        .collect();
    if found.is_empty() {
        plan.problems.push(Error::NoFhirFiles {
            location: url.to_string(),
        });
        return;
    }
    found.sort_by(|a, b| a.0.cmp(&b.0));
    plan.files.extend(found.into_iter().map(|(_, f)| f));
}

async fn plan_object_landing(
    store: &Arc<dyn ObjectStore>,
    url: &Url,
    dir: &ObjectPath,
    listing: &[ObjectPath],
    plan: &mut SourcePlan,
) {
    let manifest = dir.clone().join(MANIFEST);
    let manifest_url = url_for_path(url, &manifest);
    let bytes = match store.get(&manifest).await {
        Ok(result) => result.bytes().await,
        Err(e) => Err(e),
    };
    let bytes = match bytes {
        Ok(bytes) => bytes,
        Err(e) => {
            plan.problems.push(Error::object_store(&manifest_url, e));
            return;
        }
    };
    let present: HashSet<&ObjectPath> = listing.iter().collect();
    let lookup = |rel: &str| -> Option<Location> {
        [rel.to_owned(), format!("{rel}.gz")]
            .into_iter()
            .map(|name| join_rel(dir, &name))
            .find(|p| present.contains(p))
            .map(|p| object_location(store, url, p))
    };
    plan_manifest(&bytes, manifest_url.as_str(), &lookup, plan);
}

// ---------------------------------------------------------------------------------------------------------
// Bulk Data completion manifests

/// Plans the files a Bulk Data 2.0 completion manifest lists. `lookup` maps a folder-relative name to the
/// file (trying `name` then `name.gz`).
fn plan_manifest(
    bytes: &[u8],
    location: &str,
    lookup: &dyn Fn(&str) -> Option<Location>,
    plan: &mut SourcePlan,
) {
    let problem = |path: String, reason: String| Error::Manifest {
        location: location.to_owned(),
        path,
        reason,
    };
    let doc: Value = match serde_json::from_slice(bytes) {
        Ok(doc) => doc,
        Err(e) => {
            plan.problems.push(problem(
                "$".into(),
                format!("invalid JSON at line {} column {}", e.line(), e.column()),
            ));
            return;
        }
    };
    let Some(doc) = doc.as_object() else {
        plan.problems
            .push(problem("$".into(), "not a JSON object".into()));
        return;
    };
    for (key, role) in [("output", FileRole::Output), ("deleted", FileRole::Deleted)] {
        let entries = match doc.get(key) {
            None | Some(Value::Null) => continue,
            Some(Value::Array(entries)) => entries,
            Some(_) => {
                plan.problems
                    .push(problem(key.into(), "not an array".into()));
                continue;
            }
        };
        let mut found: Vec<(String, SourceFile)> = Vec::new();
        for (i, entry) in entries.iter().enumerate() {
            let path = format!("{key}[{i}]");
            let Some(entry) = entry.as_object() else {
                plan.problems
                    .push(problem(path, "not a JSON object".into()));
                continue;
            };
            let Some(file_url) = entry.get("url").and_then(Value::as_str) else {
                plan.problems.push(problem(
                    format!("{path}.url"),
                    "missing or not a string".into(),
                ));
                continue;
            };
            let rel = match manifest_url_to_name(file_url) {
                Ok(rel) => rel,
                Err(reason) => {
                    plan.problems.push(problem(format!("{path}.url"), reason));
                    continue;
                }
            };
            let Some(file_location) = lookup(&rel) else {
                plan.problems.push(problem(
                    format!("{path}.url"),
                    format!("listed file not found in the folder (looked for {rel} and {rel}.gz)"),
                ));
                continue;
            };
            let expected_type = match entry.get("type") {
                None | Some(Value::Null) => None,
                Some(Value::String(t)) => Some(t.clone()),
                Some(_) => {
                    plan.problems
                        .push(problem(format!("{path}.type"), "not a string".into()));
                    None
                }
            };
            let expected_count = match entry.get("count") {
                None | Some(Value::Null) => None,
                Some(count) => match count.as_u64() {
                    Some(c) => Some(c),
                    None => {
                        plan.problems.push(problem(
                            format!("{path}.count"),
                            "not a non-negative integer".into(),
                        ));
                        None
                    }
                },
            };
            let gzip = file_location
                .file_name()
                .is_some_and(|n| n.to_ascii_lowercase().ends_with(".gz"));
            found.push((
                file_location.to_string(),
                SourceFile {
                    location: file_location,
                    format: FileFormat::Ndjson,
                    gzip,
                    role,
                    expected_type: if role == FileRole::Output {
                        expected_type
                    } else {
                        None
                    },
                    expected_count: if role == FileRole::Output {
                        expected_count
                    } else {
                        None
                    },
                },
            ));
        }
        found.sort_by(|a, b| a.0.cmp(&b.0));
        plan.files.extend(found.into_iter().map(|(_, f)| f));
    }
}

/// Maps a manifest `url` to a folder-relative file name: an absolute URL maps to the last segment of its
/// path; a relative one is used as a relative path (no `..`, no absolute paths).
fn manifest_url_to_name(file_url: &str) -> Result<String, String> {
    if let Ok(parsed) = Url::parse(file_url) {
        let last = parsed
            .path_segments()
            .and_then(|mut segments| segments.next_back())
            .filter(|s| !s.is_empty())
            .ok_or_else(|| "URL has no file name".to_owned())?;
        let name = ObjectPath::from_url_path(last)
            .map_err(|_| "URL file name is not valid".to_owned())?
            .to_string();
        if name.is_empty() || name.contains('/') || name == ".." || name == "." {
            return Err("URL file name is not valid".into());
        }
        return Ok(name);
    }
    let rel = file_url.split(['?', '#']).next().unwrap_or_default();
    if rel.is_empty() || rel.starts_with('/') || rel.starts_with('\\') {
        return Err("relative URL is empty or absolute".into());
    }
    let parts: Vec<&str> = rel
        .split('/')
        .filter(|p| !p.is_empty() && *p != ".")
        .collect();
    if parts.is_empty() || parts.iter().any(|p| *p == ".." || p.contains('\\')) {
        return Err("relative URL points outside the folder".into());
    }
    Ok(parts.join("/"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_are_classified() {
        use FileFormat::*;
        assert_eq!(
            FileFormat::from_file_name("a.ndjson"),
            Some((Ndjson, false))
        );
        assert_eq!(
            FileFormat::from_file_name("a.NDJSON.GZ"),
            Some((Ndjson, true))
        );
        assert_eq!(
            FileFormat::from_file_name("a.jsonl.gz"),
            Some((Ndjson, true))
        );
        assert_eq!(FileFormat::from_file_name("b.json"), Some((Bundle, false)));
        assert_eq!(
            FileFormat::from_file_name("b.json.gz"),
            Some((Bundle, true))
        );
        assert_eq!(FileFormat::from_file_name("LICENSE"), None);
        assert_eq!(FileFormat::from_file_name("x.gz"), None);
    }

    #[test]
    fn manifest_urls_map_to_names() {
        assert_eq!(
            manifest_url_to_name("http://h:1/x/fhir/bulkfiles/2.AllergyIntolerance.ndjson")
                .unwrap(),
            "2.AllergyIntolerance.ndjson"
        );
        assert_eq!(
            manifest_url_to_name("sub/./Patient.ndjson").unwrap(),
            "sub/Patient.ndjson"
        );
        assert!(manifest_url_to_name("../etc/passwd").is_err());
        assert!(manifest_url_to_name("/etc/passwd").is_err());
        assert!(manifest_url_to_name("http://h/").is_err());
    }

    #[test]
    fn urls_are_told_from_paths() {
        assert!(is_url("s3://b/k"));
        assert!(is_url("file:///tmp"));
        assert!(!is_url("/tmp/a.ndjson"));
        assert!(!is_url("C://x"));
        assert!(!is_url("data/*.ndjson"));
    }
}
