//! Safe Harbor on real-shaped data: every NDJSON file of the three Synthea bulk exports under
//! `shared/data/synthea` goes through the built-in `safe-harbor` profile (and, for the limited
//! data set, `limited-data-set`), and the output is checked for what must not survive (names,
//! telecom, street addresses, cities, identifiers, patient ids, birth dates, timestamps) and for
//! what must (joins between resources, the intervals inside a patient's record, the US Core
//! demographics extensions).
//!
//! # Sampling
//!
//! The three exports hold 48,949 resources (63 MB of NDJSON). De-identifying all of them takes
//! about 45 s in a debug build on one core, so by default the tests sample *by patient*, which
//! keeps every patient's record whole (references and intervals stay checkable):
//!
//! * every resource outside a patient compartment (Organization, Practitioner, Location,
//!   PractitionerRole, Group, ...) and every `Patient` is kept;
//! * of the resources in a patient compartment (`subject`/`patient`/`beneficiary` points at a
//!   patient), those of every n-th patient of the export (in the order of its Patient file) are
//!   kept: 1 in 4 for the bulk-data-server export, 1 in 3 and 1 in 2 for the others (`EXPORTS`);
//! * a file left empty by that keeps its first resource, so every file and every resource type
//!   of every export is covered (asserted in [`every_file_and_resource_type_is_covered`]).
//!
//! Set `FHIRLAKE_DEID_FULL=1` to run over every resource of every file instead.
//!
//! # What counts as PHI found in the output
//!
//! From the ORIGINAL resources of an export: every HumanName part (`family`, `given`, `prefix`,
//! `suffix`, `text`, split at white space) and every word of the `patient-mothersMaidenName`
//! extension; every `ContactPoint.value`; every `Address.line` and `Address.city` (extensions'
//! `valueAddress` included); every `Identifier.value`; every `Patient.id`; every DICOM UID of an
//! `ImagingStudy` (series and instance). Values shorter than 4 characters are not searched for
//! (`Dr.`, `Jr.`, `Li`: too common to mean anything). A value is found when it occurs in the
//! serialized de-identified JSON with no letter or digit directly before or after it (so the NPI
//! `9999999999` is not "found" in the amount `150.81199999999998`). Values that also occur
//! (case-insensitively) in what the profile keeps on purpose as terminology in the original
//! export -- `Coding.display`, `CodeableConcept.text`, `Quantity.unit`, the words of the US Core
//! race and ethnicity extensions -- are searched for in the output with those elements blanked
//! (the family name `White` is also a race); all other values in the
//! whole output. The limited data set keeps `Address.city`, so there the cities are blanked too.
//! ZIP codes are checked where they are: only a Patient's `Address.postalCode` survives, as 3
//! digits.
//!
//! Dates are checked per resource: every full date (`YYYY-MM-DD`, with its time when it has one)
//! in a de-identified resource must be one of the original resource's dates moved by one and the
//! same non-zero number of days, so no original date or timestamp survives in its resource, and a
//! birth date that shows up elsewhere is only ever the shifted image of another date.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};

use chrono::{DateTime, FixedOffset, NaiveDate};
use fhirlake_deid::risk::AGE_BAND_EXTENSION_URL;
use fhirlake_deid::{DeidKey, Deidentifier, Disposition, Policy, PolicyEngine};
use fhirlake_fhir::types as fhir_types;
use proptest::prelude::*;
use serde_json::{Value, json};

const DATA: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/data/synthea");
const BULK: &str = "bulk-data-server-100-patients";
const SAMPLE_10: &str = "sample-bulk-fhir-10-patients";
const PARTIAL: &str = "sample-bulk-fhir-100-patients-partial";
/// The exports and the patient stride of the default sample.
const EXPORTS: [(&str, usize); 3] = [(BULK, 4), (SAMPLE_10, 3), (PARTIAL, 2)];

/// The policy's date shift range (`date_shift_days` of both built-in profiles' defaults).
const SHIFT_DAYS: i64 = 180;
const MOTHERS_MAIDEN_NAME: &str =
    "http://hl7.org/fhir/StructureDefinition/patient-mothersMaidenName";
/// A US Core race or ethnicity extension without its `text` sub-extension (which safe-harbor does
/// not allow through: it is typed text, the OMB category's display says the same).
fn without_text(ext: &Value) -> Value {
    let mut ext = ext.clone();
    if let Some(list) = ext.get_mut("extension").and_then(Value::as_array_mut) {
        list.retain(|e| e["url"] != "text");
    }
    ext
}

const US_CORE_EXTENSIONS: [&str; 3] = [
    "http://hl7.org/fhir/us/core/StructureDefinition/us-core-race",
    "http://hl7.org/fhir/us/core/StructureDefinition/us-core-ethnicity",
    "http://hl7.org/fhir/us/core/StructureDefinition/us-core-birthsex",
];

fn today() -> NaiveDate {
    NaiveDate::from_ymd_opt(2026, 11, 25).unwrap()
}

fn key(byte: u8) -> DeidKey {
    DeidKey::from_bytes(&[byte; 32], "test").unwrap()
}

fn engine(profile: &str, key_byte: u8) -> PolicyEngine {
    PolicyEngine::new(Policy::builtin(profile).unwrap(), key(key_byte)).with_today(today())
}

fn full_run() -> bool {
    std::env::var_os("FHIRLAKE_DEID_FULL").is_some_and(|v| !v.is_empty() && v != "0")
}

// --- Loading the exports ------------------------------------------------------------------------

struct SourceFile {
    name: String,
    /// Resources in the file.
    lines: usize,
    /// The sampled resources, in file order.
    resources: Vec<Value>,
}

struct Export {
    name: &'static str,
    files: Vec<SourceFile>,
}

impl Export {
    fn resources(&self) -> impl Iterator<Item = &Value> {
        self.files.iter().flat_map(|f| f.resources.iter())
    }
}

fn read_ndjson(path: &Path) -> String {
    let raw = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    if path.extension().is_some_and(|e| e == "gz") {
        let mut text = String::new();
        flate2::read::GzDecoder::new(&raw[..])
            .read_to_string(&mut text)
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        text
    } else {
        String::from_utf8(raw).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    }
}

/// Maps `f` over `items` on every core; results in input order.
fn par_map<T: Sync, R: Send>(items: &[T], f: impl Fn(&T) -> R + Sync) -> Vec<R> {
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .clamp(1, items.len().max(1));
    let next = AtomicUsize::new(0);
    let mut results: Vec<(usize, R)> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                scope.spawn(|| {
                    let mut out = Vec::new();
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let Some(item) = items.get(i) else { break };
                        out.push((i, f(item)));
                    }
                    out
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|w| w.join().expect("worker panicked"))
            .collect()
    });
    results.sort_by_key(|(i, _)| *i);
    results.into_iter().map(|(_, r)| r).collect()
}

/// The patient (source id) whose compartment a resource is in, as the engine scopes date shifts.
fn patient_of(resource: &Value) -> Option<&str> {
    if resource["resourceType"] == "Patient" {
        return resource["id"].as_str();
    }
    ["subject", "patient", "beneficiary"]
        .iter()
        .find_map(|field| {
            let reference = resource.get(field)?.get("reference")?.as_str()?;
            reference
                .strip_prefix("urn:uuid:")
                .or_else(|| reference.strip_prefix("Patient/"))
        })
}

fn exports() -> &'static [Export] {
    static EXPORTS_DATA: OnceLock<Vec<Export>> = OnceLock::new();
    EXPORTS_DATA.get_or_init(|| {
        let base = PathBuf::from(DATA);
        let mut paths = Vec::new();
        for (export, _) in EXPORTS {
            let dir = base.join(export);
            let listing = std::fs::read_dir(&dir).unwrap_or_else(|e| {
                panic!(
                    "the Synthea test data is missing: {} ({e}). The tests need the three bulk \
                     exports {BULK}, {SAMPLE_10} and {PARTIAL} under shared/data/synthea \
                     (see their SOURCE.txt).",
                    dir.display()
                )
            });
            let mut files: Vec<PathBuf> = listing
                .map(|e| e.expect("readable directory entry").path())
                .filter(|p| {
                    let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
                    name.ends_with(".ndjson") || name.ends_with(".ndjson.gz")
                })
                .collect();
            files.sort();
            assert!(
                !files.is_empty(),
                "no NDJSON files in {} -- the Synthea test data is incomplete",
                dir.display()
            );
            paths.extend(files.into_iter().map(|p| (export, p)));
        }
        let parsed: Vec<(String, Vec<Value>)> = par_map(&paths, |(_, path)| {
            let text = read_ndjson(path);
            let resources = text
                .lines()
                .filter(|l| !l.trim().is_empty())
                .enumerate()
                .map(|(i, line)| {
                    serde_json::from_str(line)
                        .unwrap_or_else(|e| panic!("{}:{}: {e}", path.display(), i + 1))
                })
                .collect();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            (name, resources)
        });
        let mut parsed = parsed.into_iter();
        EXPORTS
            .iter()
            .map(|&(export, stride)| {
                let files: Vec<(String, Vec<Value>)> = paths
                    .iter()
                    .filter(|(e, _)| *e == export)
                    .map(|_| parsed.next().unwrap())
                    .collect();
                sample(export, files, if full_run() { 1 } else { stride })
            })
            .collect()
    })
}

fn sample(export: &'static str, files: Vec<(String, Vec<Value>)>, stride: usize) -> Export {
    let patients: Vec<&str> = files
        .iter()
        .flat_map(|(_, rs)| rs.iter())
        .filter(|r| r["resourceType"] == "Patient")
        .filter_map(|r| r["id"].as_str())
        .collect();
    assert!(!patients.is_empty(), "{export}: no Patient resources");
    let chosen: HashSet<String> = patients
        .iter()
        .step_by(stride)
        .map(|p| p.to_string())
        .collect();
    let files = files
        .into_iter()
        .map(|(name, resources)| {
            let lines = resources.len();
            let first = resources.first().cloned();
            let mut kept: Vec<Value> = resources
                .into_iter()
                .filter(|r| {
                    r["resourceType"] == "Patient"
                        || patient_of(r).is_none_or(|p| chosen.contains(p))
                })
                .collect();
            if kept.is_empty() {
                kept.extend(first);
            }
            SourceFile {
                name,
                lines,
                resources: kept,
            }
        })
        .collect();
    Export {
        name: export,
        files,
    }
}

fn export(name: &str) -> &'static Export {
    exports().iter().find(|e| e.name == name).unwrap()
}

// --- The de-identified corpus (safe-harbor, key 7), shared by the tests ---------------------------

struct Deidentified {
    /// Index of the source file in its export.
    file: usize,
    orig: &'static Value,
    out: Value,
    /// `out` serialized (what the lake would store).
    text: String,
}

struct Run {
    export: &'static Export,
    items: Vec<Deidentified>,
}

fn safe_harbor() -> &'static PolicyEngine {
    static ENGINE: OnceLock<PolicyEngine> = OnceLock::new();
    ENGINE.get_or_init(|| engine("safe-harbor", 7))
}

fn deidentify_kept(engine: &PolicyEngine, orig: &Value) -> Value {
    let mut out = orig.clone();
    match engine.deidentify(&mut out) {
        Ok(Disposition::Keep) => out,
        other => panic!(
            "{}/{}: expected Keep, got {other:?}",
            orig["resourceType"], orig["id"]
        ),
    }
}

fn corpus() -> &'static [Run] {
    static CORPUS: OnceLock<Vec<Run>> = OnceLock::new();
    CORPUS.get_or_init(|| {
        let engine = safe_harbor();
        exports()
            .iter()
            .map(|export| {
                let inputs: Vec<(usize, &'static Value)> = export
                    .files
                    .iter()
                    .enumerate()
                    .flat_map(|(i, f)| f.resources.iter().map(move |r| (i, r)))
                    .collect();
                let items = par_map(&inputs, |&(file, orig)| {
                    let out = deidentify_kept(engine, orig);
                    let text = serde_json::to_string(&out).unwrap();
                    Deidentified {
                        file,
                        orig,
                        out,
                        text,
                    }
                });
                Run { export, items }
            })
            .collect()
    })
}

fn run(name: &str) -> &'static Run {
    corpus().iter().find(|r| r.export.name == name).unwrap()
}

// --- Typed walks over FHIR JSON -------------------------------------------------------------------

/// Calls `f(type, node)` for every node of `value` whose FHIR type is known (`ty` is the type of
/// `value`; `Resource` means "look at resourceType"), parents before children.
fn walk<'a>(value: &'a Value, ty: &'a str, f: &mut impl FnMut(&'a str, &'a Value)) {
    let ty = if ty == "Resource" {
        value["resourceType"].as_str().unwrap_or("")
    } else {
        ty
    };
    f(ty, value);
    let Value::Object(map) = value else { return };
    for (key, child) in map {
        let Some(c) = fhir_types::child(ty, key) else {
            continue;
        };
        match child {
            Value::Array(items) => items.iter().for_each(|i| walk(i, c.type_code, f)),
            _ => walk(child, c.type_code, f),
        }
    }
}

fn walk_resource<'a>(resource: &'a Value, f: &mut impl FnMut(&'a str, &'a Value)) {
    walk(resource, "Resource", f);
}

/// Blanks what the profile keeps on purpose as terminology: `Coding.display`,
/// `CodeableConcept.text`, `Quantity.unit` (and its profiles), and the `text` part of the US Core
/// race and ethnicity extensions.
fn blank_terminology(value: &mut Value, ty: &str, cities: bool) {
    let ty = if ty == "Resource" {
        value["resourceType"].as_str().unwrap_or("").to_string()
    } else {
        ty.to_string()
    };
    if ty == "Extension" && US_CORE_EXTENSIONS[..2].contains(&value["url"].as_str().unwrap_or("")) {
        // The race or ethnicity in words: `{"url": "text", "valueString": "White"}`.
        for part in value["extension"].as_array_mut().into_iter().flatten() {
            if part["url"] == "text" {
                part["valueString"] = Value::String(String::new());
            }
        }
    }
    let blanked = match ty.as_str() {
        "Coding" => Some("display"),
        "CodeableConcept" => Some("text"),
        "Address" if cities => Some("city"),
        t if fhir_types::is_subtype(t, "Quantity") => Some("unit"),
        _ => None,
    };
    let Value::Object(map) = value else { return };
    for (key, child) in map.iter_mut() {
        if blanked == Some(key.as_str()) {
            *child = Value::String(String::new());
            continue;
        }
        let Some(c) = fhir_types::child(&ty, key) else {
            continue;
        };
        match child {
            Value::Array(items) => items
                .iter_mut()
                .for_each(|i| blank_terminology(i, c.type_code, cities)),
            _ => blank_terminology(child, c.type_code, cities),
        }
    }
}

fn strings(value: &Value) -> Vec<&str> {
    match value {
        Value::String(s) => vec![s.as_str()],
        Value::Array(items) => items.iter().filter_map(Value::as_str).collect(),
        _ => Vec::new(),
    }
}

// --- PHI from the original resources -------------------------------------------------------------

/// Values shorter than this (in characters) are not searched for.
const MIN_PHI_CHARS: usize = 4;

#[derive(Default)]
struct Phi {
    /// value -> category
    values: BTreeMap<String, &'static str>,
    /// Full birth dates of the export's patients.
    birth_dates: HashSet<NaiveDate>,
    /// Values under MIN_PHI_CHARS, not searched for.
    too_short: BTreeSet<String>,
}

impl Phi {
    fn add(&mut self, category: &'static str, value: &str) {
        let value = value.trim();
        if value.chars().count() < MIN_PHI_CHARS {
            if !value.is_empty() {
                self.too_short.insert(value.to_string());
            }
            return;
        }
        self.values.entry(value.to_string()).or_insert(category);
    }

    fn add_words(&mut self, category: &'static str, text: &str) {
        for word in text.split_whitespace() {
            self.add(category, word);
        }
    }
}

fn collect_phi<'a>(resources: impl Iterator<Item = &'a Value>, with_cities: bool) -> Phi {
    let mut phi = Phi::default();
    for resource in resources {
        if resource["resourceType"] == "Patient" {
            if let Some(id) = resource["id"].as_str() {
                phi.add("Patient.id", id);
            }
            if let Some(Ok(d)) = resource["birthDate"]
                .as_str()
                .map(|b| NaiveDate::parse_from_str(b, "%Y-%m-%d"))
            {
                phi.birth_dates.insert(d);
            }
        }
        walk_resource(resource, &mut |ty, node| match ty {
            "HumanName" => {
                for part in ["family", "given", "prefix", "suffix", "text"] {
                    for s in strings(&node[part]) {
                        phi.add_words("name", s);
                    }
                }
            }
            "ContactPoint" => {
                if let Some(v) = node["value"].as_str() {
                    phi.add("telecom", v);
                }
            }
            "Address" => {
                for line in strings(&node["line"]) {
                    phi.add("address line", line);
                }
                if let (true, Some(city)) = (with_cities, node["city"].as_str()) {
                    phi.add("city", city);
                }
            }
            "Identifier" => {
                if let Some(v) = node["value"].as_str() {
                    phi.add("identifier", v);
                }
            }
            "Extension" if node["url"] == MOTHERS_MAIDEN_NAME => {
                if let Some(v) = node["valueString"].as_str() {
                    phi.add_words("name", v);
                }
            }
            "ImagingStudy.series" | "ImagingStudy.series.instance" => {
                if let Some(v) = node["uid"].as_str() {
                    phi.add("DICOM UID", v);
                }
            }
            _ => {}
        });
    }
    phi
}

/// Lower-cased terminology the profiles keep on purpose, one entry a line.
fn kept_terminology<'a>(resources: impl Iterator<Item = &'a Value>, cities: bool) -> String {
    let mut terms = BTreeSet::new();
    for resource in resources {
        walk_resource(resource, &mut |ty, node| {
            let text = match ty {
                "Extension"
                    if US_CORE_EXTENSIONS[..2].contains(&node["url"].as_str().unwrap_or("")) =>
                {
                    for part in node["extension"].as_array().into_iter().flatten() {
                        if let (true, Some(t)) =
                            (part["url"] == "text", part["valueString"].as_str())
                        {
                            terms.insert(t.to_lowercase());
                        }
                    }
                    return;
                }
                "Coding" => &node["display"],
                "CodeableConcept" => &node["text"],
                "Address" if cities => &node["city"],
                t if fhir_types::is_subtype(t, "Quantity") => &node["unit"],
                _ => return,
            };
            if let Some(t) = text.as_str() {
                terms.insert(t.to_lowercase());
            }
        });
    }
    terms.into_iter().collect::<Vec<_>>().join("\n")
}

fn is_word_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b >= 0x80
}

/// Finds PHI values in serialized JSON, bounded by non-word characters (see the module docs).
struct Finder {
    /// First word of a value (as serialized) -> (its byte offset in the value, value, category).
    by_anchor: HashMap<String, Vec<(usize, String, &'static str)>>,
}

impl Finder {
    fn new<'a>(values: impl Iterator<Item = (&'a str, &'static str)>) -> Self {
        let mut by_anchor: HashMap<String, Vec<(usize, String, &'static str)>> = HashMap::new();
        for (value, category) in values {
            let escaped = serde_json::to_string(value).unwrap();
            let escaped = escaped[1..escaped.len() - 1].to_string();
            let bytes = escaped.as_bytes();
            let Some(start) = bytes.iter().position(|&b| is_word_byte(b)) else {
                continue;
            };
            let end = bytes[start..]
                .iter()
                .position(|&b| !is_word_byte(b))
                .map_or(bytes.len(), |n| start + n);
            let anchor = escaped[start..end].to_string();
            by_anchor
                .entry(anchor)
                .or_default()
                .push((start, escaped, category));
        }
        Self { by_anchor }
    }

    fn is_empty(&self) -> bool {
        self.by_anchor.is_empty()
    }

    fn find(&self, text: &str, hit: &mut impl FnMut(&'static str, &str)) {
        let b = text.as_bytes();
        let mut i = 0;
        while i < b.len() {
            if !is_word_byte(b[i]) {
                i += 1;
                continue;
            }
            let start = i;
            while i < b.len() && is_word_byte(b[i]) {
                i += 1;
            }
            let Some(candidates) = self.by_anchor.get(&text[start..i]) else {
                continue;
            };
            for (offset, value, category) in candidates {
                let Some(s) = start.checked_sub(*offset) else {
                    continue;
                };
                let e = s + value.len();
                let vb = value.as_bytes();
                let matches = text.get(s..e) == Some(value.as_str())
                    && (!is_word_byte(vb[0]) || s == 0 || !is_word_byte(b[s - 1]))
                    && (!is_word_byte(vb[vb.len() - 1]) || e == b.len() || !is_word_byte(b[e]));
                if matches {
                    hit(category, value);
                }
            }
        }
    }
}

/// PHI found in de-identified resources: `(category, value, where)`.
/// PHI found in de-identified resources. `cities`: the policy keeps `Address.city` (a name that is
/// also a city is then only searched for outside the cities).
fn find_phi(phi: &Phi, terminology: &str, items: &[&Deidentified], cities: bool) -> Vec<String> {
    let (colliding, plain): (Vec<_>, Vec<_>) = phi
        .values
        .iter()
        .partition(|(v, _)| terminology.contains(&v.to_lowercase()));
    let plain = Finder::new(plain.into_iter().map(|(v, c)| (v.as_str(), *c)));
    let colliding = Finder::new(colliding.into_iter().map(|(v, c)| (v.as_str(), *c)));
    let found = par_map(items, |item| {
        let mut hits = Vec::new();
        let mut record = |category: &'static str, value: &str| {
            hits.push(format!(
                "{category} {value:?} in de-identified {}/{}",
                item.out["resourceType"].as_str().unwrap_or("?"),
                item.out["id"].as_str().unwrap_or("?")
            ));
        };
        plain.find(&item.text, &mut record);
        if !colliding.is_empty() {
            let mut blanked = item.out.clone();
            blank_terminology(&mut blanked, "Resource", cities);
            colliding.find(&serde_json::to_string(&blanked).unwrap(), &mut record);
        }
        hits
    });
    found.into_iter().flatten().collect()
}

// --- Dates ------------------------------------------------------------------------------------------

/// A full date found in a string value, with the time that follows it (if any).
type DateOcc = (NaiveDate, String);

/// Every full date (`YYYY-MM-DD`, not inside a longer digit run) in the string values of `value`.
fn dates_in(value: &Value, out: &mut Vec<DateOcc>) {
    match value {
        Value::String(s) => {
            let b = s.as_bytes();
            let digit = |i: usize| b.get(i).is_some_and(u8::is_ascii_digit);
            let mut i = 0;
            while i + 10 <= b.len() {
                let shaped = (0..4).all(|k| digit(i + k))
                    && b[i + 4] == b'-'
                    && digit(i + 5)
                    && digit(i + 6)
                    && b[i + 7] == b'-'
                    && digit(i + 8)
                    && digit(i + 9)
                    && (i == 0 || !digit(i - 1))
                    && !digit(i + 10);
                if !shaped {
                    i += 1;
                    continue;
                }
                if let Ok(d) = NaiveDate::parse_from_str(&s[i..i + 10], "%Y-%m-%d") {
                    let rest = &s[i + 10..];
                    let time_len = if rest.starts_with('T') {
                        rest.bytes()
                            .position(|c| !(c.is_ascii_digit() || b"T:.+-Z".contains(&c)))
                            .unwrap_or(rest.len())
                    } else {
                        0
                    };
                    out.push((d, rest[..time_len].to_string()));
                }
                i += 10;
            }
        }
        Value::Array(items) => items.iter().for_each(|v| dates_in(v, out)),
        Value::Object(map) => map.values().for_each(|v| dates_in(v, out)),
        _ => {}
    }
}

/// The day offsets `o` (non-zero, within the shift range) for which every full date of `out` is a
/// date of `orig` moved by `o` days, with the same time of day and zone. `None` when `out` has no
/// full dates; `Some(empty)` when no such offset exists (a date survived or moved differently).
fn shift_offsets(orig: &Value, out: &Value) -> Option<Vec<i64>> {
    let (mut before, mut after) = (Vec::new(), Vec::new());
    dates_in(orig, &mut before);
    dates_in(out, &mut after);
    let first = after.first()?;
    let originals: HashSet<&DateOcc> = before.iter().collect();
    let candidates: BTreeSet<i64> = before
        .iter()
        .filter(|(_, time)| *time == first.1)
        .map(|(d, _)| (first.0 - *d).num_days())
        .filter(|o| *o != 0 && o.abs() <= SHIFT_DAYS)
        .collect();
    Some(
        candidates
            .into_iter()
            .filter(|&o| {
                after.iter().all(|(d, time)| {
                    let back = *d - chrono::TimeDelta::days(o);
                    originals.contains(&(back, time.clone()))
                })
            })
            .collect(),
    )
}

type Instant = DateTime<FixedOffset>;

fn instant(text: &str) -> Option<Instant> {
    DateTime::parse_from_rfc3339(text).ok()
}

// --- 0. Coverage ------------------------------------------------------------------------------------

#[test]
fn every_file_and_resource_type_is_covered() {
    let mut summary = Vec::new();
    for export in exports() {
        let mut all_types = BTreeSet::new();
        let mut sampled_types = BTreeMap::<&str, usize>::new();
        let (mut lines, mut sampled) = (0, 0);
        for file in &export.files {
            assert!(
                !file.resources.is_empty(),
                "{}/{}: nothing sampled",
                export.name,
                file.name
            );
            lines += file.lines;
            sampled += file.resources.len();
            for r in &file.resources {
                *sampled_types
                    .entry(r["resourceType"].as_str().unwrap())
                    .or_default() += 1;
            }
            // The type of a file is in its name (`30.Observation.ndjson.gz`, `Patient.000.ndjson`).
            let ty = file
                .name
                .split('.')
                .find(|part| fhir_types::is_resource_type(part))
                .unwrap_or_else(|| panic!("{}: no resource type in the name", file.name));
            all_types.insert(ty);
        }
        for ty in &all_types {
            assert!(
                sampled_types.contains_key(ty),
                "{}: no {ty} sampled",
                export.name
            );
        }
        summary.push(format!(
            "{}: {} files, {sampled} of {lines} resources, types {:?}",
            export.name,
            export.files.len(),
            sampled_types
        ));
    }
    assert_eq!(exports().len(), 3);
    eprintln!("{}", summary.join("\n"));
}

// --- 1. No PHI survives -------------------------------------------------------------------------------

#[test]
fn safe_harbor_output_holds_no_original_phi() {
    let mut report = Vec::new();
    for run in corpus() {
        let originals = run.items.iter().map(|i| i.orig);
        let phi = collect_phi(originals.clone(), true);
        let terminology = kept_terminology(originals, false);
        let items: Vec<&Deidentified> = run.items.iter().collect();
        let hits = find_phi(&phi, &terminology, &items, false);
        assert!(
            hits.is_empty(),
            "{}: {} PHI values survived safe-harbor, e.g.:\n{}",
            run.export.name,
            hits.len(),
            hits.iter().take(20).cloned().collect::<Vec<_>>().join("\n")
        );
        let mut per_category = BTreeMap::<&str, usize>::new();
        for c in phi.values.values() {
            *per_category.entry(c).or_default() += 1;
        }
        report.push(format!(
            "{}: searched {} resources for {:?} (+{} birth dates); {} values under {MIN_PHI_CHARS} \
             characters not searched: {:?}",
            run.export.name,
            items.len(),
            per_category,
            phi.birth_dates.len(),
            phi.too_short.len(),
            phi.too_short
        ));
    }
    eprintln!("{}", report.join("\n"));
}

#[test]
fn safe_harbor_moves_every_date_of_a_resource_by_one_nonzero_offset() {
    let mut report = Vec::new();
    for run in corpus() {
        let phi = collect_phi(run.items.iter().map(|i| i.orig), false);
        let (mut shifted, mut timestamps, mut birth_date_images) = (0, 0, 0);
        let original_timestamps: HashSet<String> = {
            let mut all = Vec::new();
            run.items.iter().for_each(|i| dates_in(i.orig, &mut all));
            all.into_iter()
                .filter(|(_, t)| !t.is_empty())
                .map(|(d, t)| format!("{d}{t}"))
                .collect()
        };
        let mut coincidences = 0;
        for item in &run.items {
            let what = format!(
                "{}: {}/{}",
                run.export.name, item.orig["resourceType"], item.orig["id"]
            );
            if item.orig["resourceType"] == "Patient" {
                let birth = item.out["birthDate"].as_str();
                assert!(
                    birth.is_none_or(|b| b.len() == 4),
                    "{what}: birthDate keeps more than the year"
                );
            }
            let Some(offsets) = shift_offsets(item.orig, &item.out) else {
                continue;
            };
            assert!(
                !offsets.is_empty(),
                "{what}: some full date is not the original moved by the resource's offset \
                 (an original date survived or dates moved by different amounts)\n{}",
                item.text
            );
            shifted += 1;
            let mut after = Vec::new();
            dates_in(&item.out, &mut after);
            for (d, time) in &after {
                if phi.birth_dates.contains(d) {
                    // Only ever the shifted image of another of the resource's own dates.
                    birth_date_images += 1;
                }
                if !time.is_empty() {
                    timestamps += 1;
                    coincidences +=
                        usize::from(original_timestamps.contains(&format!("{d}{time}")));
                }
            }
        }
        assert!(shifted > 0, "{}: no dates checked", run.export.name);
        report.push(format!(
            "{}: {shifted} resources with dates, all moved by one non-zero offset; {timestamps} \
             timestamps, of which {coincidences} equal some other original timestamp of the \
             export and {birth_date_images} dates equal some patient's birth date (each the \
             shifted image of a different date of its own resource)",
            run.export.name
        ));
    }
    eprintln!("{}", report.join("\n"));
}

#[test]
fn safe_harbor_keeps_three_digit_zips_of_patients_only() {
    for run in corpus() {
        for item in &run.items {
            let is_patient = item.orig["resourceType"] == "Patient";
            walk_resource(&item.out, &mut |ty, node| {
                if ty != "Address" {
                    return;
                }
                assert!(
                    node.get("line").is_none() && node.get("city").is_none(),
                    "{}: street or city survived: {node}",
                    run.export.name
                );
                if let Some(zip) = node.get("postalCode") {
                    let zip = zip.as_str().unwrap_or("");
                    assert!(
                        is_patient && zip.len() == 3 && zip.bytes().all(|b| b.is_ascii_digit()),
                        "{}: postalCode {zip:?} in {}",
                        run.export.name,
                        item.orig["resourceType"]
                    );
                }
            });
        }
    }
}

// --- 2. References still resolve ---------------------------------------------------------------------

/// The `Reference.reference` strings of a resource, in document order.
fn references(resource: &Value) -> Vec<&str> {
    let mut refs = Vec::new();
    walk_resource(resource, &mut |ty, node| {
        if let ("Reference", Some(r)) = (ty, node["reference"].as_str()) {
            refs.push(r);
        }
    });
    refs
}

fn type_id(resource: &Value) -> String {
    format!(
        "{}/{}",
        resource["resourceType"].as_str().unwrap_or(""),
        resource["id"].as_str().unwrap_or("")
    )
}

fn literal(reference: &str) -> Option<(&str, &str)> {
    let (ty, id) = reference.split_once('/')?;
    (fhir_types::is_resource_type(ty) && !id.is_empty() && !id.contains('/')).then_some((ty, id))
}

#[test]
fn ids_are_pseudonyms_and_every_reference_is_rewritten_to_match() {
    let engine = safe_harbor();
    for run in corpus() {
        for item in &run.items {
            let ty = item.orig["resourceType"].as_str().unwrap();
            let id = item.orig["id"].as_str().unwrap();
            let new_id = item.out["id"].as_str().unwrap();
            assert_eq!(new_id, engine.lake_id(ty, id), "{ty}/{id}");
            assert!(
                new_id.len() == 32 && new_id.bytes().all(|b| b.is_ascii_hexdigit()),
                "{new_id}"
            );
            let (before, after) = (references(item.orig), references(&item.out));
            assert_eq!(
                before.len(),
                after.len(),
                "{}: {ty}/{id}: references lost",
                run.export.name
            );
            for (b, a) in before.iter().zip(&after) {
                if let Some((rt, rid)) = literal(b) {
                    assert_eq!(*a, format!("{rt}/{}", engine.lake_id(rt, rid)), "{b}");
                } else if b.starts_with('#') {
                    // Local ids are pseudonymized, the references to them alike.
                    assert!(a.starts_with('#') && a != b, "{a}");
                    let contained = item.out["contained"].as_array().unwrap();
                    assert!(
                        contained.iter().any(|c| c["id"] == a[1..]),
                        "{ty}/{id}: {a} no longer resolves"
                    );
                } else if let Some(uuid) = b.strip_prefix("urn:uuid:") {
                    assert!(a.starts_with("urn:uuid:") && !a.contains(uuid), "{a}");
                } else {
                    assert!(b.contains('?'), "unexpected reference form {b}");
                    let value = b.rsplit('|').next().unwrap();
                    assert!(!a.contains(value), "{a}");
                }
            }
        }
    }
}

#[test]
fn every_reference_that_resolved_still_resolves() {
    let mut report = Vec::new();
    for run in corpus() {
        let before: HashSet<String> = run.items.iter().map(|i| type_id(i.orig)).collect();
        let after: HashSet<String> = run.items.iter().map(|i| type_id(&i.out)).collect();
        let mut resolved = BTreeMap::<&str, usize>::new();
        let mut dangling = 0;
        for item in &run.items {
            for (b, a) in references(item.orig).into_iter().zip(references(&item.out)) {
                let Some((ty, _)) = literal(b) else { continue };
                if before.contains(b) {
                    assert!(
                        after.contains(a),
                        "{}: {b} resolved before de-identification, {a} does not after",
                        run.export.name
                    );
                    *resolved.entry(ty).or_default() += 1;
                } else {
                    assert!(!after.contains(a));
                    dangling += 1;
                }
            }
        }
        report.push(format!(
            "{}: resolved {:?}; {dangling} dangling in the source (not in the sample or not \
             exported) stay dangling",
            run.export.name, resolved
        ));
    }
    eprintln!("{}", report.join("\n"));

    // The bulk-data-server export has every patient: each `Patient/x` in the output is a
    // de-identified Patient, and each `Encounter/x` of an Observation a de-identified Encounter.
    let run = run(BULK);
    let ids = |ty: &str| -> HashSet<&str> {
        run.items
            .iter()
            .filter(|i| i.out["resourceType"] == ty)
            .map(|i| i.out["id"].as_str().unwrap())
            .collect()
    };
    let (patients, encounters) = (ids("Patient"), ids("Encounter"));
    let (mut to_patients, mut to_encounters) = (0, 0);
    for item in &run.items {
        for r in references(&item.out) {
            if let Some(id) = r.strip_prefix("Patient/") {
                assert!(patients.contains(id), "{r} is not a de-identified Patient");
                to_patients += 1;
            }
            let from_observation = item.out["resourceType"] == "Observation";
            if let (true, Some(id)) = (from_observation, r.strip_prefix("Encounter/")) {
                assert!(
                    encounters.contains(id),
                    "{r} is not a de-identified Encounter"
                );
                to_encounters += 1;
            }
        }
    }
    assert!(to_patients > 1000 && to_encounters > 1000);
}

// --- 3. Intervals inside a patient -------------------------------------------------------------------

#[test]
fn intervals_inside_each_patient_are_unchanged() {
    let mut report = Vec::new();
    for name in [BULK, SAMPLE_10, PARTIAL] {
        let run = run(name);
        // Per patient: (original, de-identified) event times, and the offsets each resource allows.
        let mut events: BTreeMap<&str, Vec<(Instant, Instant)>> = BTreeMap::new();
        let mut deceased = BTreeMap::new();
        let mut offsets: BTreeMap<&str, Option<BTreeSet<i64>>> = BTreeMap::new();
        for item in &run.items {
            let Some(patient) = patient_of(item.orig) else {
                continue;
            };
            let event = match item.orig["resourceType"].as_str().unwrap() {
                "Encounter" => Some(("period", "start")),
                "Immunization" => Some(("occurrenceDateTime", "")),
                "Patient" => {
                    if let (Some(b), Some(a)) = (
                        item.orig["deceasedDateTime"].as_str().and_then(instant),
                        item.out["deceasedDateTime"].as_str().and_then(instant),
                    ) {
                        deceased.insert(patient, (b, a));
                    }
                    None
                }
                _ => None,
            };
            if let Some((field, sub)) = event {
                let get = |v: &Value| {
                    let v = if sub.is_empty() {
                        &v[field]
                    } else {
                        &v[field][sub]
                    };
                    v.as_str().and_then(instant)
                };
                if let (Some(b), Some(a)) = (get(item.orig), get(&item.out)) {
                    events.entry(patient).or_default().push((b, a));
                }
            }
            if let Some(allowed) = shift_offsets(item.orig, &item.out) {
                let allowed: BTreeSet<i64> = allowed.into_iter().collect();
                let entry = offsets.entry(patient).or_insert(None);
                *entry = Some(match entry.take() {
                    None => allowed,
                    Some(prev) => prev.intersection(&allowed).copied().collect(),
                });
            }
        }
        let mut checked = 0;
        for (patient, list) in &events {
            let (b0, a0) = list[0];
            let shift = a0 - b0;
            assert_eq!(shift.num_seconds() % 86_400, 0, "{patient}: not whole days");
            assert!(shift.num_days() != 0 && shift.num_days().abs() <= SHIFT_DAYS);
            for (b, a) in list {
                assert_eq!(
                    *a - a0,
                    *b - b0,
                    "{name}: patient {patient}: interval changed"
                );
                checked += 1;
            }
            if let Some((b, a)) = deceased.get(patient) {
                assert_eq!(*a - a0, *b - b0, "{name}: patient {patient}: death moved");
            }
        }
        assert!(checked > 0, "{name}: no events checked");
        // Every resource of a patient's record moved by the same number of days ...
        let mut per_patient = Vec::new();
        for (patient, allowed) in &offsets {
            let allowed = allowed.as_ref().unwrap();
            assert!(
                !allowed.is_empty(),
                "{name}: the resources of patient {patient} were not all moved by one offset"
            );
            per_patient.push(*allowed.iter().next().unwrap());
        }
        // ... and patients by different numbers of days.
        let distinct: BTreeSet<i64> = per_patient.iter().copied().collect();
        assert!(
            distinct.len() * 2 > per_patient.len(),
            "{name}: {} offsets for {} patients",
            distinct.len(),
            per_patient.len()
        );
        report.push(format!(
            "{name}: {checked} event times of {} patients keep their intervals; {} patients, {} \
             distinct offsets",
            events.len(),
            per_patient.len(),
            distinct.len()
        ));
    }
    eprintln!("{}", report.join("\n"));
}

// --- 4. Determinism and keying -------------------------------------------------------------------------

/// Up to `n` resources of every file of every export.
fn subset(n: usize) -> Vec<&'static Deidentified> {
    corpus()
        .iter()
        .flat_map(|run| {
            (0..run.export.files.len())
                .flat_map(move |f| run.items.iter().filter(move |i| i.file == f).take(n))
        })
        .collect()
}

#[test]
fn same_key_same_bytes_other_key_other_ids_and_shifts() {
    let items = subset(40);
    let again = engine("safe-harbor", 7);
    let other = engine("safe-harbor", 8);
    let (mut same_shift, mut with_dates) = (0, 0);
    for item in &items {
        let text = serde_json::to_string(&deidentify_kept(&again, item.orig)).unwrap();
        assert_eq!(text, item.text, "same key, different output");

        let out = deidentify_kept(&other, item.orig);
        let ty = item.orig["resourceType"].as_str().unwrap();
        assert_ne!(out["id"], item.out["id"], "{ty}: same id under another key");
        assert_ne!(
            other.lake_id(ty, item.orig["id"].as_str().unwrap()),
            item.out["id"].as_str().unwrap()
        );
        if let (Some(a), Some(b)) = (
            shift_offsets(item.orig, &item.out),
            shift_offsets(item.orig, &out),
        ) {
            with_dates += 1;
            same_shift += usize::from(a.iter().any(|o| b.contains(o)));
        }
    }
    assert!(with_dates > 100, "{with_dates}");
    assert!(
        same_shift * 20 < with_dates,
        "{same_shift} of {with_dates} resources moved by the same offset under another key"
    );
    assert_ne!(again.key_id(), other.key_id());
}

// --- 5. Extensions ---------------------------------------------------------------------------------

#[test]
fn unknown_modifier_extensions_drop_and_unknown_extensions_are_removed_and_counted() {
    let engine = engine("safe-harbor", 7);
    let race = json!({
        "url": US_CORE_EXTENSIONS[0],
        "extension": [
            {"url": "ombCategory", "valueCoding": {"system": "urn:oid:2.16.840.1.113883.6.238", "code": "2106-3", "display": "White"}},
            {"url": "text", "valueString": "White"}
        ]
    });
    let ethnicity = json!({
        "url": US_CORE_EXTENSIONS[1],
        "extension": [
            {"url": "ombCategory", "valueCoding": {"system": "urn:oid:2.16.840.1.113883.6.238", "code": "2186-5", "display": "Not Hispanic or Latino"}},
            {"url": "text", "valueString": "Not Hispanic or Latino"}
        ]
    });
    let birthsex = json!({"url": US_CORE_EXTENSIONS[2], "valueCode": "F"});
    let mut patient = json!({
        "resourceType": "Patient",
        "id": "ext-1",
        "extension": [
            race.clone(), ethnicity.clone(), birthsex.clone(),
            {"url": "http://example.org/fhir/StructureDefinition/favourite-nurse", "valueString": "Nurse Ratched"},
            {"url": MOTHERS_MAIDEN_NAME, "valueString": "Pacocha935"}
        ],
        "gender": "female"
    });
    assert_eq!(engine.deidentify(&mut patient).unwrap(), Disposition::Keep);
    // The race and ethnicity `text` sub-extensions (typed text) are not allowed through.
    assert_eq!(
        patient["extension"],
        json!([without_text(&race), without_text(&ethnicity), birthsex])
    );
    let stats = engine.stats();
    assert_eq!(stats.dropped_extensions, 4);
    assert_eq!((stats.resources, stats.dropped_resources), (1, 0));

    let modifier = json!({"url": "http://example.org/fhir/StructureDefinition/not-really", "valueBoolean": true});
    let mut patient = json!({"resourceType": "Patient", "id": "ext-2", "modifierExtension": [modifier], "gender": "male"});
    let Disposition::Drop { reason } = engine.deidentify(&mut patient).unwrap() else {
        panic!("an unknown modifierExtension must drop the resource");
    };
    assert!(reason.contains("modifierExtension"), "{reason}");
    // Deep inside the resource too.
    let mut encounter = json!({
        "resourceType": "Encounter", "id": "ext-3", "status": "finished",
        "participant": [{"modifierExtension": [modifier], "individual": {"reference": "Practitioner/1"}}]
    });
    assert!(matches!(
        engine.deidentify(&mut encounter).unwrap(),
        Disposition::Drop { .. }
    ));
    let stats = engine.stats();
    assert_eq!((stats.resources, stats.dropped_resources), (3, 2));
    assert_eq!(stats.dropped_extensions, 4);
}

#[test]
fn synthea_patients_keep_race_ethnicity_and_birthsex_and_lose_the_rest() {
    let mut checked = 0;
    for run in corpus() {
        for item in run
            .items
            .iter()
            .filter(|i| i.orig["resourceType"] == "Patient")
        {
            let urls = |v: &Value| -> Vec<String> {
                v["extension"]
                    .as_array()
                    .map(|l| {
                        l.iter()
                            .map(|e| e["url"].as_str().unwrap().to_string())
                            .collect()
                    })
                    .unwrap_or_default()
            };
            let after = urls(&item.out);
            for url in urls(item.orig) {
                let keep = US_CORE_EXTENSIONS.contains(&url.as_str())
                    || url.starts_with("http://synthetichealth.github.io/synthea/");
                assert_eq!(after.contains(&url), keep, "{url}");
                if US_CORE_EXTENSIONS.contains(&url.as_str()) {
                    let find = |v: &Value| {
                        v["extension"]
                            .as_array()
                            .unwrap()
                            .iter()
                            .find(|e| e["url"] == url.as_str())
                            .cloned()
                    };
                    assert_eq!(
                        find(item.orig).map(|e| without_text(&e)),
                        find(&item.out),
                        "{url} changed"
                    );
                    checked += 1;
                }
            }
            assert!(after.iter().all(|u| {
                US_CORE_EXTENSIONS.contains(&u.as_str())
                    || u.starts_with("http://synthetichealth.github.io/synthea/")
                    || u == AGE_BAND_EXTENSION_URL
            }));
        }
    }
    // sample-bulk-fhir-10 (13 patients) and -100-partial (120) carry all three.
    assert_eq!(checked, 3 * (13 + 120));
    let stats = safe_harbor().stats();
    assert!(stats.dropped_extensions > 0 && stats.dropped_resources == 0);
}

// --- 6. 90+ and 7. ZIP -----------------------------------------------------------------------------

fn age_band(patient: &Value) -> Option<&Value> {
    patient["extension"]
        .as_array()?
        .iter()
        .find(|e| e["url"] == AGE_BAND_EXTENSION_URL)
}

#[test]
fn patients_over_89_lose_the_birth_date_and_get_the_age_band() {
    let engine = engine("safe-harbor", 7);
    let deid = |birth: &str| {
        deidentify_kept(
            &engine,
            &json!({"resourceType": "Patient", "id": format!("p-{birth}"), "birthDate": birth, "gender": "other"}),
        )
    };
    for born in ["1931-11-25", "1936-11-25", "1931", "1901-02-03"] {
        let p = deid(born);
        assert!(p.get("birthDate").is_none(), "{born}: {p}");
        assert_eq!(
            age_band(&p),
            Some(&json!({"url": AGE_BAND_EXTENSION_URL, "valueString": "90+"})),
            "{born}"
        );
    }
    for (born, year) in [
        ("1986-11-25", "1986"),
        ("1936-11-26", "1936"),
        ("2020-02", "2020"),
    ] {
        let p = deid(born);
        assert_eq!(p["birthDate"], year, "{born}");
        assert!(age_band(&p).is_none(), "{born}");
    }
    // The Synthea patients: the band exactly where the original birth date is 90+ years ago.
    let mut banded = 0;
    for run in corpus() {
        for item in run
            .items
            .iter()
            .filter(|i| i.orig["resourceType"] == "Patient")
        {
            let born =
                NaiveDate::parse_from_str(item.orig["birthDate"].as_str().unwrap(), "%Y-%m-%d")
                    .unwrap();
            let over_89 = born
                .checked_add_months(chrono::Months::new(90 * 12))
                .unwrap()
                <= today();
            assert_eq!(age_band(&item.out).is_some(), over_89, "{}", item.text);
            assert_eq!(item.out.get("birthDate").is_none(), over_89);
            banded += usize::from(over_89);
        }
    }
    assert!(banded > 0);
}

#[test]
fn relatives_birth_dates_and_age_ranges_follow_the_90_plus_rule() {
    let engine = engine("safe-harbor", 7);
    let band = json!({"url": AGE_BAND_EXTENSION_URL, "valueString": "90+"});
    for ty in ["RelatedPerson", "Person"] {
        let old = deidentify_kept(
            &engine,
            &json!({"resourceType": ty, "id": "r1", "patient": {"reference": "Patient/p1"}, "birthDate": "1931-05-05"}),
        );
        assert!(old.get("birthDate").is_none(), "{old}");
        assert_eq!(old["extension"], json!([band]));
        let young = deidentify_kept(
            &engine,
            &json!({"resourceType": ty, "id": "r2", "patient": {"reference": "Patient/p1"}, "birthDate": "1961-05-05"}),
        );
        assert_eq!(young["birthDate"], "1961", "{ty}: {young}");
    }
    let history = deidentify_kept(
        &engine,
        &json!({
            "resourceType": "FamilyMemberHistory", "id": "f1", "status": "completed",
            "patient": {"reference": "Patient/p1"}, "relationship": {"text": "mother"},
            "bornDate": "1930-02-03",
            "condition": [{"code": {"text": "Stroke"}, "onsetRange": {"low": {"value": 91, "unit": "a"}, "high": {"value": 93, "unit": "a"}}}]
        }),
    );
    assert!(history.get("bornDate").is_none(), "{history}");
    assert_eq!(
        history["condition"][0]["onsetRange"],
        json!({"low": {"value": 90, "unit": "a"}, "high": {"value": 90, "unit": "a"}})
    );
    let condition = deidentify_kept(
        &engine,
        &json!({
            "resourceType": "Condition", "id": "c1", "subject": {"reference": "Patient/p1"},
            "onsetRange": {"low": {"value": 92}, "high": {"value": 95}},
            "abatementAge": {"value": 97, "unit": "a"}
        }),
    );
    assert_eq!(
        condition["onsetRange"],
        json!({"low": {"value": 90}, "high": {"value": 90}})
    );
    assert_eq!(condition["abatementAge"]["value"], 90);
    // A dose range is not an age.
    let request = deidentify_kept(
        &engine,
        &json!({
            "resourceType": "MedicationRequest", "id": "m1", "status": "active", "intent": "order",
            "subject": {"reference": "Patient/p1"},
            "dosageInstruction": [{"doseAndRate": [{"doseRange": {"low": {"value": 100}, "high": {"value": 200}}}]}]
        }),
    );
    assert_eq!(
        request["dosageInstruction"][0]["doseAndRate"][0]["doseRange"]["high"]["value"],
        200
    );
}

#[test]
fn zip_codes_become_three_digits_and_small_areas_000() {
    let engine = engine("safe-harbor", 7);
    let patient = deidentify_kept(
        &engine,
        &json!({
            "resourceType": "Patient", "id": "zip",
            "address": [
                {"line": ["77 Massachusetts Ave"], "city": "Cambridge", "state": "MA", "postalCode": "02139", "country": "US"},
                {"city": "Berlin", "state": "NH", "postalCode": "03601"},
                {"state": "MA", "postalCode": "02139-4307"},
                {"state": "WY", "postalCode": "82190"}
            ]
        }),
    );
    assert_eq!(
        patient["address"],
        json!([
            {"state": "MA", "postalCode": "021", "country": "US"},
            {"state": "NH", "postalCode": "000"},
            {"state": "MA", "postalCode": "021"},
            {"state": "WY", "postalCode": "000"}
        ])
    );
    let org = deidentify_kept(
        &engine,
        &json!({"resourceType": "Organization", "id": "o", "name": "MIT Medical",
                "address": [{"line": ["25 Carleton St"], "city": "Cambridge", "state": "MA", "postalCode": "02139"}]}),
    );
    assert_eq!(org["address"], json!([{"state": "MA"}]));
}

// --- 8. Conditional references ---------------------------------------------------------------------

#[test]
fn conditional_references_stay_joinable_to_the_pseudonymized_identifier() {
    let engine = engine("safe-harbor", 7);
    let npi = "9999993494";
    let practitioner = deidentify_kept(
        &engine,
        &json!({
            "resourceType": "Practitioner", "id": "pr1",
            "identifier": [{"system": "http://hl7.org/fhir/sid/us-npi", "value": npi}],
            "name": [{"family": "Bergstrom287", "given": ["Randy380"], "prefix": ["Dr."]}]
        }),
    );
    let encounter = deidentify_kept(
        &engine,
        &json!({
            "resourceType": "Encounter", "id": "e1", "status": "finished",
            "subject": {"reference": "Patient/p1"},
            "participant": [{"individual": {
                "reference": format!("Practitioner?identifier=http://hl7.org/fhir/sid/us-npi|{npi}"),
                "display": "Dr. Randy380 Bergstrom287"
            }}]
        }),
    );
    let reference = encounter["participant"][0]["individual"]["reference"]
        .as_str()
        .unwrap();
    assert!(!reference.contains(npi), "{reference}");
    assert!(
        encounter["participant"][0]["individual"]
            .get("display")
            .is_none()
    );
    let (prefix, value) = reference.rsplit_once('|').unwrap();
    assert_eq!(
        prefix,
        "Practitioner?identifier=http://hl7.org/fhir/sid/us-npi"
    );
    assert_eq!(value, practitioner["identifier"][0]["value"]);
    assert!(practitioner.get("name").is_none());

    // Percent-encoded, it joins the same way; other search parameters (a name, a birth date)
    // are pseudonymized.
    let encoded = deidentify_kept(
        &engine,
        &json!({
            "resourceType": "Encounter", "id": "e2", "status": "finished",
            "subject": {"reference": "Patient?name=Sarabia&birthdate=1949-11-14"},
            "participant": [{"individual": {
                "reference": format!("Practitioner?identifier=http%3A%2F%2Fhl7.org%2Ffhir%2Fsid%2Fus-npi%7C{npi}")
            }}]
        }),
    );
    assert_eq!(
        encoded["participant"][0]["individual"]["reference"],
        reference
    );
    let subject = encoded["subject"]["reference"].as_str().unwrap();
    assert!(subject.starts_with("Patient?name="), "{subject}");
    assert!(
        !subject.contains("Sarabia") && !subject.contains("1949-11-14"),
        "{subject}"
    );

    // The Synthea samples use conditional references for every Practitioner, Organization and
    // Location: each still finds its target by identifier.
    for name in [SAMPLE_10, PARTIAL] {
        let run = run(name);
        let mut targets = HashSet::new();
        for item in &run.items {
            for id in item.out["identifier"].as_array().into_iter().flatten() {
                targets.insert(format!(
                    "{}?identifier={}|{}",
                    item.out["resourceType"].as_str().unwrap(),
                    id["system"].as_str().unwrap_or(""),
                    id["value"].as_str().unwrap_or("")
                ));
            }
        }
        let mut joined = BTreeMap::<&str, usize>::new();
        for item in &run.items {
            for r in references(&item.out) {
                if let Some((ty, _)) = r.split_once("?identifier=") {
                    assert!(targets.contains(r), "{name}: {r} finds nothing");
                    *joined.entry(ty).or_default() += 1;
                }
            }
        }
        // The partial export has no Encounters: only Immunization.location is conditional there.
        let least = if name == SAMPLE_10 { 3 } else { 1 };
        assert!(joined.len() >= least, "{name}: {joined:?}");
        eprintln!("{name}: conditional references joined: {joined:?}");
    }
}

// --- 9. Limited data set ---------------------------------------------------------------------------

#[test]
fn limited_data_set_keeps_dates_and_places_but_not_direct_identifiers() {
    let engine = engine("limited-data-set", 7);
    // Every Patient of every export, and up to 30 resources of every file.
    let mut originals: Vec<&'static Value> = subset(30).into_iter().map(|i| i.orig).collect();
    for export in exports() {
        originals.extend(
            export
                .resources()
                .filter(|r| r["resourceType"] == "Patient"),
        );
    }
    let outs = par_map(&originals, |orig| {
        let out = deidentify_kept(&engine, orig);
        let text = serde_json::to_string(&out).unwrap();
        Deidentified {
            file: 0,
            orig,
            out,
            text,
        }
    });
    let phi = collect_phi(originals.iter().copied(), false);
    let terminology = kept_terminology(originals.iter().copied(), true);
    let items: Vec<&Deidentified> = outs.iter().collect();
    let hits = find_phi(&phi, &terminology, &items, true);
    assert!(
        hits.is_empty(),
        "limited-data-set left direct identifiers:\n{}",
        hits.iter().take(20).cloned().collect::<Vec<_>>().join("\n")
    );
    let mut places = 0;
    for item in &outs {
        let what = format!("{}/{}", item.orig["resourceType"], item.orig["id"]);
        // Dates are kept as they are.
        let (mut before, mut after) = (Vec::new(), Vec::new());
        dates_in(item.orig, &mut before);
        dates_in(&item.out, &mut after);
        let before: HashSet<_> = before.into_iter().collect();
        assert!(after.iter().all(|d| before.contains(d)), "{what}");
        for key in ["name", "telecom"] {
            assert!(item.out.get(key).is_none(), "{what}: {key}");
        }
        if item.orig["resourceType"] == "Patient" {
            assert_eq!(item.out["birthDate"], item.orig["birthDate"], "{what}");
            assert_eq!(item.out["deceasedDateTime"], item.orig["deceasedDateTime"]);
            let (a, b) = (&item.orig["address"], &item.out["address"]);
            for (i, address) in a.as_array().unwrap().iter().enumerate() {
                for field in ["city", "state", "postalCode", "country"] {
                    assert_eq!(b[i][field], address[field], "{what}: address {field}");
                }
                assert!(b[i].get("line").is_none());
                places += 1;
            }
        }
    }
    assert!(places > 200);
}

// --- 10. Properties --------------------------------------------------------------------------------

fn patient_with(
    id: &str,
    family: &str,
    given: &str,
    phone: &str,
    line: &str,
    city: &str,
    mrn: &str,
    free: &str,
) -> Value {
    json!({
        "resourceType": "Patient",
        "id": id,
        "identifier": [{"system": "http://hospital.example.org/mrn", "value": mrn}],
        "name": [{"use": "official", "family": family, "given": [given, free], "text": format!("{given} {family}")}],
        "telecom": [
            {"system": "phone", "value": phone, "use": "home"},
            {"system": "email", "value": format!("{given}.{family}@example.org")}
        ],
        "address": [{"line": [line, free], "city": city, "state": "MA", "postalCode": "02139"}],
        "birthDate": "1980-06-15",
        "gender": "unknown"
    })
}

proptest! {
    #![proptest_config(ProptestConfig {
        // No regression files: the test data lives beside the test, not in the source tree.
        failure_persistence: None,
        ..ProptestConfig::with_cases(96)
    })]

    #[test]
    fn random_phi_never_survives_and_pseudonyms_stay_joinable(
        id in "[A-Za-z0-9.-]{1,64}",
        family in "[A-ZÀ-Ý][a-zà-ÿ]{3,11}",
        given in "[A-Z][a-z]{3,9}( [A-Z][a-z]{3,9})?",
        phone in r"\+?1? ?\(?[2-9][0-9]{2}\)?[ .-]?[0-9]{3}-[0-9]{4}",
        line in "[1-9][0-9]{0,4} [A-Z][a-z]{3,10} (Street|Avenue|Road|Lane|Trail)( Apt [0-9]{1,3})?",
        city in "[A-Z][a-z]{3,10}( [A-Z][a-z]{3,8})?",
        mrn in "[A-Z]{1,3}[0-9]{4,9}",
        free in r"\PC{4,30}",
    ) {
        let engine = safe_harbor();
        let source = patient_with(&id, &family, &given, &phone, &line, &city, &mrn, &free);
        let out = deidentify_kept(engine, &source);
        let text = serde_json::to_string(&out).unwrap();
        // What the output holds whatever the values are (keys, systems, codes, the year).
        let skeleton = deidentify_kept(
            engine,
            &patient_with(&id, "~", "~", "~", "~", "~", "~", "~"),
        );
        let skeleton = serde_json::to_string(&skeleton).unwrap();
        let email = format!("{given}.{family}@example.org");
        let mut values = vec![&family, &given, &phone, &line, &city, &mrn, &email];
        // Arbitrary text is only meaningful where no pseudonym (lowercase hex) could hold it.
        if free.chars().any(|c| !matches!(c, '0'..='9' | 'a'..='f')) {
            values.push(&free);
        }
        for value in values {
            let escaped = serde_json::to_string(value).unwrap();
            let escaped = &escaped[1..escaped.len() - 1];
            prop_assert!(
                !text.contains(escaped) || skeleton.contains(escaped),
                "{value:?} survived: {text}"
            );
        }
        prop_assert!(out.get("name").is_none() && out.get("telecom").is_none());
        prop_assert_eq!(&out["birthDate"], "1980");

        let lake_id = engine.lake_id("Patient", &id);
        prop_assert_eq!(out["id"].as_str(), Some(lake_id.as_str()));
        let observation = deidentify_kept(engine, &json!({
            "resourceType": "Observation", "id": format!("obs-{}", id.len()), "status": "final",
            "code": {"text": "Body weight"},
            "subject": {"reference": format!("Patient/{id}"), "display": format!("{given} {family}")},
            "effectiveDateTime": "2020-01-02T03:04:05Z"
        }));
        let subject = format!("Patient/{lake_id}");
        prop_assert_eq!(observation["subject"]["reference"].as_str(), Some(subject.as_str()));
        prop_assert!(observation["subject"].get("display").is_none());
    }
}

// --- 11. No PHI in errors --------------------------------------------------------------------------

const SECRET_NAME: &str = "Sarabia";
const SECRET_PHONE: &str = "555-504-7600";
const SECRET_DATE: &str = "1949-11-14";

fn assert_no_secrets(what: &str, text: &str) {
    for secret in [SECRET_NAME, SECRET_PHONE, SECRET_DATE, "Ramón", "S99927077"] {
        assert!(!text.contains(secret), "{what} leaks {secret:?}: {text}");
    }
}

#[test]
fn errors_and_drop_reasons_carry_no_values() {
    let engine = engine("safe-harbor", 7);
    let name = json!([{"family": SECRET_NAME, "given": ["Ramón"]}]);
    let telecom = json!([{"system": "phone", "value": SECRET_PHONE}]);

    // Not a resource at all.
    for mut broken in [
        json!(format!("Ramón {SECRET_NAME} {SECRET_PHONE}")),
        json!([SECRET_NAME, SECRET_DATE]),
        json!({"name": name, "telecom": telecom, "birthDate": SECRET_DATE}),
        json!({"resourceType": 42, "name": name, "birthDate": SECRET_DATE}),
        json!({"resourceType": "Patient", "contained": [{"resourceType": "Unheard", "name": name}], "telecom": telecom}),
    ] {
        let err = engine.deidentify(&mut broken).unwrap_err();
        assert_no_secrets("error", &err.to_string());
        assert_no_secrets("error (Debug)", &format!("{err:?}"));
        assert!(err.to_string().contains("unknown resource type"), "{err}");
    }

    // Broken values are removed, silently.
    let mut patient = json!({
        "resourceType": "Patient", "id": "p1", "name": name, "telecom": telecom,
        "birthDate": format!("{SECRET_NAME} {SECRET_DATE}"),
        "deceasedDateTime": format!("{SECRET_DATE} ({SECRET_NAME})")
    });
    assert_eq!(engine.deidentify(&mut patient).unwrap(), Disposition::Keep);
    assert_no_secrets("output", &patient.to_string());
    let mut encounter = json!({
        "resourceType": "Encounter", "id": "e1", "status": "finished",
        "subject": {"reference": "Patient/p1", "display": format!("Ramón {SECRET_NAME}")},
        "period": {"start": "1949-13-45T10:00:00Z", "end": format!("{SECRET_DATE} or so")}
    });
    assert_eq!(
        engine.deidentify(&mut encounter).unwrap(),
        Disposition::Keep
    );
    assert_no_secrets("output", &encounter.to_string());
    assert!(!encounter.to_string().contains("1949-13-45"));

    // Drop reasons name the element, not what is in it.
    let mut patient = json!({
        "resourceType": "Patient", "id": "p2", "name": name,
        "modifierExtension": [{"url": format!("http://example.org/{SECRET_NAME}"), "valueString": SECRET_PHONE}]
    });
    let Disposition::Drop { reason } = engine.deidentify(&mut patient).unwrap() else {
        panic!("must drop");
    };
    assert_no_secrets("drop reason", &reason);

    // explain: paths, rules and outcomes, never values.
    let mut patient = json!({
        "resourceType": "Patient", "id": "p3", "name": name, "telecom": telecom,
        "birthDate": SECRET_DATE, "identifier": [{"system": "urn:oid:2.16.840.1.113883.4.3.25", "value": "S99927077"}],
        "text": {"status": "generated", "div": format!("<div>Ramón {SECRET_NAME}</div>")}
    });
    let (result, entries) = engine.explain(&mut patient);
    assert_eq!(result.unwrap(), Disposition::Keep);
    assert!(entries.len() >= 5);
    assert_no_secrets("explain", &serde_json::to_string(&entries).unwrap());

    // A generalize case that cannot be evaluated on the value it meets.
    let policy = Policy::parse(
        "[[rules]]\npath = \"Patient.name.family\"\nmethod = \"generalize\"\nparams = { cases = { \"$this < 18\" = \"'child'\" } }\n",
        "cases.toml",
        "cases",
    )
    .unwrap();
    let cases = PolicyEngine::new(policy, key(7)).with_today(today());
    let mut patient = json!({"resourceType": "Patient", "id": "p4", "name": name});
    if let Err(err) = cases.deidentify(&mut patient) {
        assert_no_secrets("generalize error", &err.to_string());
    } else {
        assert_no_secrets("output", &patient.to_string());
    }
}

#[test]
fn an_unknown_resource_type_is_not_echoed_in_the_error() {
    let engine = engine("safe-harbor", 7);
    let mut broken =
        json!({"resourceType": format!("Ramón {SECRET_NAME}"), "birthDate": SECRET_DATE});
    let err = engine.deidentify(&mut broken).unwrap_err();
    assert_no_secrets("error", &err.to_string());
}

#[test]
fn a_date_time_with_trailing_text_does_not_survive() {
    let engine = engine("safe-harbor", 7);
    let mut encounter = json!({
        "resourceType": "Encounter", "id": "e2", "status": "finished",
        "subject": {"reference": "Patient/p1"},
        "period": {"start": format!("{SECRET_DATE}T10:00:00 {SECRET_NAME}"), "end": "2020-01-01Tcall 555-504-7600"}
    });
    assert_eq!(
        engine.deidentify(&mut encounter).unwrap(),
        Disposition::Keep
    );
    assert_no_secrets("output", &encounter.to_string());
}

#[test]
fn scrubbed_free_text_loses_the_city() {
    let text = fhirlake_deid::policy::builtin_text("safe-harbor")
        .unwrap()
        .replace("free_text = \"redact\"", "free_text = \"scrub\"");
    let engine = PolicyEngine::new(Policy::parse(&text, "scrub.toml", "scrub").unwrap(), key(7));
    let mut observation = json!({
        "resourceType": "Observation", "id": "o5", "status": "final",
        "code": {"text": "Social history"}, "subject": {"reference": "Patient/p5"},
        "valueString": "Lives alone in Boston, Massachusetts since 2019."
    });
    engine.deidentify(&mut observation).unwrap();
    assert!(!observation.to_string().contains("Boston"), "{observation}");
}

// --- 12. Snapshots -----------------------------------------------------------------------------------

/// The resources of the export's first patient (always in the sample), in file order.
fn first_patient(export: &Export) -> impl Iterator<Item = &Value> {
    let patient = export
        .resources()
        .find(|r| r["resourceType"] == "Patient")
        .and_then(|p| p["id"].as_str())
        .unwrap();
    export
        .resources()
        .filter(move |r| patient_of(r) == Some(patient))
}

fn first(export: &Export, pred: impl Fn(&Value) -> bool) -> &Value {
    first_patient(export)
        .find(|r| pred(r))
        .expect("a resource to snapshot")
}

#[test]
fn snapshot_synthea_patient() {
    let orig = first(export(SAMPLE_10), |r| r["resourceType"] == "Patient");
    insta::assert_json_snapshot!("synthea_patient", deidentify_kept(safe_harbor(), orig));
}

#[test]
fn snapshot_observation_with_value_quantity() {
    let orig = first(export(BULK), |r| {
        r["resourceType"] == "Observation" && r.get("valueQuantity").is_some()
    });
    insta::assert_json_snapshot!(
        "observation_value_quantity",
        deidentify_kept(safe_harbor(), orig)
    );
}

#[test]
fn snapshot_encounter() {
    let orig = first(export(SAMPLE_10), |r| r["resourceType"] == "Encounter");
    insta::assert_json_snapshot!("encounter", deidentify_kept(safe_harbor(), orig));
}

#[test]
fn snapshot_explanation_of_benefit_with_contained_resources() {
    // The shortest EOB of the first patient (they all carry a contained ServiceRequest and Coverage).
    let orig = first_patient(export(BULK))
        .filter(|r| r["resourceType"] == "ExplanationOfBenefit" && r.get("contained").is_some())
        .min_by_key(|r| r.to_string().len())
        .unwrap();
    insta::assert_json_snapshot!(
        "explanation_of_benefit",
        deidentify_kept(safe_harbor(), orig)
    );
}

#[test]
fn snapshot_document_reference() {
    let orig = first(export(SAMPLE_10), |r| {
        r["resourceType"] == "DocumentReference"
    });
    insta::assert_json_snapshot!("document_reference", deidentify_kept(safe_harbor(), orig));
}

const CUSTOM_POLICY: &str = r#"
name = "snapshot-methods"
description = "one rule per method family, for the snapshot test"

[defaults]
elements = "keep"
free_text = "scrub"
extensions = "redact"
modifier_extensions = "drop_resource"
unknown_elements = "redact"
date_shift_days = 30

[[rules]]
path = "Resource.id"
method = "pseudonymize"

[[rules]]
path = "nodesByType('Reference').reference"
method = "pseudonymize"

[[rules]]
path = "nodesByType('Reference').display"
method = "redact"

[[rules]]
path = "Patient.identifier.where(system='http://hl7.org/fhir/sid/us-ssn').value"
method = "encrypt"

[[rules]]
path = "nodesByType('Identifier').value"
method = "pseudonymize"

[[rules]]
path = "Patient.name.family"
method = "substitute"
params = { replace_with = "Doe" }

[[rules]]
path = "Patient.name.given"
method = "redact"

[[rules]]
path = "nodesByType('ContactPoint')"
method = "substitute"
params = { replace_with = { system = "phone", value = "555-0100" } }

[[rules]]
path = "Patient.birthDate"
method = "generalize"
params = { to = "month" }

[[rules]]
path = "Patient.address.postalCode"
method = "generalize"
params = { to = "zip3" }

[[rules]]
path = "Patient.address.city"
method = "generalize"
params = { cases = { "$this in ('Boston' | 'Cambridge' | 'Somerville')" = "'Greater Boston'" }, other_values = "redact" }

[[rules]]
path = "Patient.address"
method = "redact"

[[rules]]
path = "nodesByType('Age')"
method = "generalize"
params = { to = "age" }

[[rules]]
path = "Observation.value.ofType(Quantity).value"
method = "perturb"
params = { span = 0.1, range_type = "proportional", round_to = 1 }

[[rules]]
path = "nodesByType('Annotation').text"
method = "scrub"

[[rules]]
path = "nodesByType('Coding').display"
method = "keep"

[[rules]]
path = "nodesByType('CodeableConcept').text"
method = "keep"

[[rules]]
path = "nodesByType('Quantity').unit"
method = "keep"

[[rules]]
path = "nodesByType('date')"
method = "date_shift"

[[rules]]
path = "nodesByType('dateTime')"
method = "date_shift"

[[rules]]
path = "nodesByType('instant')"
method = "date_shift"
"#;

#[test]
fn snapshot_custom_policy_methods() {
    let policy = Policy::parse(CUSTOM_POLICY, "snapshot-methods.toml", "snapshot-methods")
        .expect("the custom policy is valid");
    let engine = PolicyEngine::new(policy, key(7)).with_today(today());
    let ssn = "999-88-8662";
    let patient = json!({
        "resourceType": "Patient", "id": "e6dde18e-af01-4f2f-b74a-1ec7d0368f93",
        "text": {"status": "generated", "div": "<div xmlns=\"http://www.w3.org/1999/xhtml\">Ramón Sarabia, born 2002-09-09, lives at 711 Hand Trail</div>"},
        "identifier": [
            {"system": "http://hl7.org/fhir/sid/us-ssn", "value": ssn},
            {"system": "http://hospital.smarthealthit.org", "value": "e6dde18e-af01-4f2f-b74a-1ec7d0368f93"}
        ],
        "name": [{"use": "official", "family": "Sarabia", "given": ["Ramón"]}],
        "telecom": [{"system": "phone", "value": "555-504-7600", "use": "home"}],
        "gender": "male",
        "birthDate": "2002-09-09",
        "address": [
            {"line": ["711 Hand Trail"], "city": "Boston", "state": "Massachusetts", "postalCode": "02215", "country": "US"},
            {"line": ["1 Main St"], "city": "Berlin", "state": "New Hampshire", "postalCode": "03570"}
        ]
    });
    let observation = first(export(BULK), |r| {
        r["resourceType"] == "Observation" && r.get("valueQuantity").is_some()
    });
    let condition = json!({
        "resourceType": "Condition", "id": "c1",
        "subject": {"reference": "Patient/e6dde18e-af01-4f2f-b74a-1ec7d0368f93", "display": "Ramón Sarabia"},
        "code": {"coding": [{"system": "http://snomed.info/sct", "code": "44054006", "display": "Diabetes"}], "text": "Diabetes"},
        "onsetAge": {"value": 93, "unit": "years", "system": "http://unitsofmeasure.org", "code": "a"},
        "recordedDate": "2020-03-04T10:11:12-05:00",
        "note": [{"text": "Seen by Dr. Alvarez on 2020-03-04; call Ramón Sarabia at 555-504-7600 or ramon@example.com."}]
    });
    let outs: Vec<Value> = [&patient, observation, &condition]
        .into_iter()
        .map(|r| deidentify_kept(&engine, r))
        .collect();
    let token = outs[0]["identifier"][0]["value"].as_str().unwrap();
    assert_eq!(
        fhirlake_deid::methods::crypt::decrypt(engine.key(), token).as_deref(),
        Some(ssn),
        "encrypt is reversible with the key"
    );
    insta::assert_json_snapshot!(
        "custom_policy_methods",
        json!({"Patient": outs[0], "Observation": outs[1], "Condition": outs[2]})
    );
    let hits: Vec<(String, u64)> = engine
        .stats()
        .rule_hits
        .into_iter()
        .filter(|(_, n)| *n > 0)
        .collect();
    for method in [
        "pseudonymize",
        "encrypt",
        "date_shift",
        "generalize",
        "substitute",
        "perturb",
        "scrub",
    ] {
        assert!(hits.iter().any(|(m, _)| m == method), "{method}: {hits:?}");
    }
}
