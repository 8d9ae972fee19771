//! Synthetic scale-up of the real Synthea sample: the 100-patient export embedded in the engine
//! ([`fhirlake::sample::SAMPLE_FILES`]) replicated `K` times, so that scale `K` is `K x 100`
//! patients with the same shape, sizes and type mix as a real Bulk Data export.
//!
//! Replica `k` gets the suffix `-k{k}` on
//! - the top-level `id` of every resource, and
//! - every `reference` value of the form `Type/<id>` or `urn:uuid:<id>`,
//!
//! so references stay consistent inside a replica and replicas never collide in the lake.
//! Contained resources (`contained[].id`) and local references (`#referral`) are left alone,
//! as are absolute URLs and conditional references. The rewrite works on the JSON text, so key
//! order and every other byte of the original lines are kept.
//!
//! Output: one `<Type>.ndjson` (or `<Type>.ndjson.gz`) per resource type. Everything is
//! streamed line by line; memory use does not grow with `K`.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::Path;

use anyhow::{Context, Result, bail};
use flate2::Compression;
use flate2::read::MultiGzDecoder;
use flate2::write::GzEncoder;

/// What [`generate`] wrote.
#[derive(Debug, Clone, Copy, Default)]
pub struct Generated {
    /// Files written.
    pub files: usize,
    /// Uncompressed NDJSON bytes written (newlines included).
    pub bytes: u64,
    /// Bytes on disk (equal to `bytes` without gzip).
    pub bytes_on_disk: u64,
    /// Resources (lines) written.
    pub resources: u64,
}

/// Writes `scale` replicas of the embedded sample into `dir`, one file per resource type.
pub fn generate(dir: &Path, scale: u32, gzip: bool) -> Result<Generated> {
    if scale == 0 {
        bail!("scale must be at least 1");
    }
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut stats = Generated::default();
    for (resource_type, inputs) in sample_by_type()? {
        let name = format!("{resource_type}.ndjson{}", if gzip { ".gz" } else { "" });
        let path = dir.join(&name);
        let write_err = || format!("writing {}", path.display());
        let file = File::create(&path).with_context(|| format!("creating {}", path.display()))?;
        let mut file = BufWriter::with_capacity(1 << 20, file);
        if gzip {
            let mut encoder = GzEncoder::new(file, Compression::default());
            write_replicas(&mut encoder, &inputs, scale, &mut stats).with_context(write_err)?;
            file = encoder.finish().with_context(write_err)?;
        } else {
            write_replicas(&mut file, &inputs, scale, &mut stats).with_context(write_err)?;
        }
        file.flush().with_context(write_err)?;
        drop(file);
        stats.files += 1;
        stats.bytes_on_disk += std::fs::metadata(&path)
            .with_context(|| format!("reading {}", path.display()))?
            .len();
    }
    Ok(stats)
}

/// Writes `scale` rewritten copies of `inputs` (the sample files of one type) to `out`.
fn write_replicas(
    out: &mut dyn Write,
    inputs: &[SampleFile],
    scale: u32,
    stats: &mut Generated,
) -> Result<()> {
    let mut line = Vec::new();
    let mut rewritten = Vec::new();
    for k in 0..scale {
        let suffix = format!("-k{k}");
        for &(input_name, gz_bytes) in inputs {
            let mut reader = BufReader::new(MultiGzDecoder::new(gz_bytes));
            for line_no in 1u64.. {
                line.clear();
                let n = reader
                    .read_until(b'\n', &mut line)
                    .with_context(|| format!("reading sample file {input_name}"))?;
                if n == 0 {
                    break;
                }
                let body = trim_line(&line);
                if body.is_empty() {
                    continue;
                }
                rewritten.clear();
                rewrite_line(body, suffix.as_bytes(), &mut rewritten)
                    .with_context(|| format!("{input_name} line {line_no}"))?;
                rewritten.push(b'\n');
                out.write_all(&rewritten)?;
                stats.bytes += rewritten.len() as u64;
                stats.resources += 1;
            }
        }
    }
    Ok(())
}

/// `(file name, gzipped NDJSON)` of one embedded sample file.
type SampleFile = (&'static str, &'static [u8]);

/// The embedded sample files grouped by resource type (`30.Observation.ndjson.gz` ->
/// `Observation`), in the sample's order within each type.
fn sample_by_type() -> Result<BTreeMap<String, Vec<SampleFile>>> {
    let mut by_type: BTreeMap<String, Vec<SampleFile>> = BTreeMap::new();
    for &(name, bytes) in fhirlake::sample::SAMPLE_FILES {
        let resource_type = name
            .strip_suffix(".ndjson.gz")
            .and_then(|stem| stem.split_once('.'))
            .map(|(_, t)| t)
            .filter(|t| !t.is_empty() && t.bytes().all(|b| b.is_ascii_alphanumeric()))
            .with_context(|| format!("unexpected sample file name {name}"))?;
        by_type
            .entry(resource_type.to_string())
            .or_default()
            .push((name, bytes));
    }
    Ok(by_type)
}

fn trim_line(line: &[u8]) -> &[u8] {
    let end = line
        .iter()
        .rposition(|b| !b.is_ascii_whitespace())
        .map_or(0, |i| i + 1);
    &line[..end]
}

enum Frame {
    /// An object; `key` is the byte range (in the line) of the key whose value comes next.
    Object {
        expect_key: bool,
        key: (usize, usize),
    },
    Array,
}

/// Copies one NDJSON line (one JSON object) to `out`, appending `suffix` to the top-level `id`
/// and to every rewritable `reference` value (see the module docs).
pub fn rewrite_line(line: &[u8], suffix: &[u8], out: &mut Vec<u8>) -> Result<()> {
    let mut stack: Vec<Frame> = Vec::with_capacity(16);
    let mut copied = 0;
    let mut i = 0;
    while i < line.len() {
        match line[i] {
            b'{' => stack.push(Frame::Object {
                expect_key: true,
                key: (0, 0),
            }),
            b'[' => stack.push(Frame::Array),
            b'}' | b']' => {
                let Some(_) = stack.pop() else {
                    bail!("malformed JSON: unbalanced `{}`", char::from(line[i]));
                };
            }
            b',' => {
                if let Some(Frame::Object { expect_key, .. }) = stack.last_mut() {
                    *expect_key = true;
                }
            }
            b'"' => {
                let end = string_end(line, i)?;
                let depth = stack.len();
                if let Some(Frame::Object { expect_key, key }) = stack.last_mut() {
                    if *expect_key {
                        *expect_key = false;
                        *key = (i + 1, end);
                    } else {
                        let key = &line[key.0..key.1];
                        let value = &line[i + 1..end];
                        let rewrite = match key {
                            b"id" => depth == 1 && is_plain_id(value),
                            b"reference" => is_rewritable_reference(value),
                            _ => false,
                        };
                        if rewrite {
                            out.extend_from_slice(&line[copied..end]);
                            out.extend_from_slice(suffix);
                            copied = end;
                        }
                    }
                }
                i = end;
            }
            _ => {}
        }
        i += 1;
    }
    if !stack.is_empty() {
        bail!("malformed JSON: unclosed object or array");
    }
    out.extend_from_slice(&line[copied..]);
    Ok(())
}

/// Index of the closing quote of the string that opens at `start`.
fn string_end(line: &[u8], start: usize) -> Result<usize> {
    let mut j = start + 1;
    while j < line.len() {
        match line[j] {
            b'\\' => j += 2,
            b'"' => return Ok(j),
            _ => j += 1,
        }
    }
    bail!("malformed JSON: unterminated string at byte {start}")
}

/// A FHIR id: `[A-Za-z0-9\-.]{1,64}`.
fn is_plain_id(s: &[u8]) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.iter()
            .all(|&b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
}

/// `Type/<id>` (relative literal reference) or `urn:uuid:<id>`.
fn is_rewritable_reference(s: &[u8]) -> bool {
    if let Some(id) = s.strip_prefix(b"urn:uuid:") {
        return is_plain_id(id);
    }
    let Some(slash) = s.iter().position(|&b| b == b'/') else {
        return false;
    };
    let (resource_type, id) = (&s[..slash], &s[slash + 1..]);
    resource_type.first().is_some_and(u8::is_ascii_uppercase)
        && resource_type.iter().all(u8::is_ascii_alphanumeric)
        && is_plain_id(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rewrite(line: &str) -> String {
        let mut out = Vec::new();
        rewrite_line(line.as_bytes(), b"-k7", &mut out).unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn rewrites_ids_and_references_only() {
        let line = r##"{"resourceType":"Encounter","id":"e1","contained":[{"resourceType":"Coverage","id":"cov","beneficiary":{"reference":"urn:uuid:p1"}}],"subject":{"reference":"Patient/p1","display":"id"},"insurance":[{"coverage":{"reference":"#cov"}}],"x":{"id":"nested"},"u":{"reference":"http://h/Patient/p1"},"c":{"reference":"Practitioner?identifier=a|b"},"n":1,"s":"\"id\""}"##;
        let expected = r##"{"resourceType":"Encounter","id":"e1-k7","contained":[{"resourceType":"Coverage","id":"cov","beneficiary":{"reference":"urn:uuid:p1-k7"}}],"subject":{"reference":"Patient/p1-k7","display":"id"},"insurance":[{"coverage":{"reference":"#cov"}}],"x":{"id":"nested"},"u":{"reference":"http://h/Patient/p1"},"c":{"reference":"Practitioner?identifier=a|b"},"n":1,"s":"\"id\""}"##;
        assert_eq!(rewrite(line), expected);
    }

    #[test]
    fn rejects_malformed_lines() {
        let mut out = Vec::new();
        assert!(rewrite_line(br#"{"id":"a"#, b"-k0", &mut out).is_err());
        assert!(rewrite_line(br#"{"id":"a"}}"#, b"-k0", &mut out).is_err());
        assert!(rewrite_line(br#"{"id":["a""#, b"-k0", &mut out).is_err());
        assert!(generate(Path::new("/nonexistent"), 0, false).is_err());
    }

    #[test]
    fn generated_data_is_consistent() {
        let dir = tempfile::tempdir().unwrap();
        let stats = generate(dir.path(), 2, true).unwrap();
        assert_eq!(stats.files, 19);
        assert_eq!(stats.resources, 2 * fhirlake::sample::SAMPLE_RESOURCES);
        let mut ids = std::collections::HashSet::new();
        let mut references = Vec::new();
        for entry in std::fs::read_dir(dir.path()).unwrap() {
            let file = File::open(entry.unwrap().path()).unwrap();
            for line in BufReader::new(MultiGzDecoder::new(file)).lines() {
                let value: serde_json::Value = serde_json::from_str(&line.unwrap()).unwrap();
                let id = value["id"].as_str().unwrap();
                assert!(id.ends_with("-k0") || id.ends_with("-k1"), "{id}");
                assert!(ids.insert(format!("{}/{id}", value["resourceType"].as_str().unwrap())));
                if let Some(patient) = value["subject"]["reference"].as_str() {
                    references.push(patient.to_string());
                }
            }
        }
        assert_eq!(ids.len() as u64, stats.resources);
        assert!(!references.is_empty());
        for reference in references {
            assert!(ids.contains(&reference), "dangling {reference}");
        }
    }
}
