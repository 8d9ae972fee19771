//! Free-text scrubbing: the `scrub` method for narrative a data steward chose to keep (clinical
//! notes, `valueString`, `CodeableConcept.text` when opted in, ...).
//!
//! This module owns the detection of HIPAA Safe Harbor identifiers inside free text and their
//! replacement with kind tokens (`[NAME]`, `[DATE]`, `[PHONE]`, `[EMAIL]`, `[SSN]`, `[ID]`,
//! `[URL]`, `[IP]`, `[ADDRESS]`, `[ZIP]`, `[AGE]`), plus [`name_parts`], which gathers the name
//! parts of a FHIR resource so that a record's own names are found in its text.
//!
//! It is hand-written on top of `regex` because no well-kept Rust crate does clinical PHI
//! scrubbing (the established tools are Java/Python: Philter, scrubadub, Presidio, deid). The
//! patterns are deliberately conservative about clinical content: units and values
//! (`120/80 mmHg`, `5 mg`, `HbA1c 7.2%`), codes (`8480-6`), medication and condition names must
//! survive; where a choice had to be made between a leak and a damaged note, the comment at the
//! pattern says which way it went.
//!
//! How it works: every detector is a regex of the pattern table (`patterns`, with the word lists
//! the patterns and post-checks use), compiled once in [`Scrubber::new`]. Cheap byte
//! features of the text (digits, `@`, capitals, `:`) decide what can run at all, so a text
//! without any of them (and no names to look for) comes back after one byte scan; one
//! [`RegexSet`] pass says which of the non-name detectors match, and only those run for spans.
//! Overlapping spans are merged into their union (so a date inside a URL, or a name inside an
//! email, never leaks half of the outer value), named after the longest constituent; names
//! separated only by blanks become one `[NAME]`. Name parts known for the record, and names learnt
//! from titles, labels and relations in the same text (`Dr. Jane Smith` teaches `Smith`), are
//! matched word by word. The output is written in one pass. Values never leave this module other
//! than in the returned text: no logging, and the counts carry kinds only.
//!
//! Known limitations (each a choice for the clinical content; see the patterns):
//! - Names are found only from the record's name parts, after a title (`Dr.`, `Mr.`, `Mrs.`,
//!   `Ms.`, `Prof.`), after a few labels (`Name:`, `Patient:` with two words, `signed by`),
//!   after a relation with a comma (`her daughter, Lucia`), after `seen by` (two words), or as
//!   Synthea-style words with digits. A bare unknown name in prose (`Lucia called`) stays.
//!   A record name part that is also a word (`Will`, `May`, `Hope`) is replaced everywhere.
//! - Dates: written months in Title or UPPER case only (`may 5` stays); month/day without a
//!   year only in words (`March 3`), not as `3/14`; seasons, holidays and weekdays stay.
//! - Phones: seven-digit numbers only after a phone label; bare ten-digit runs become `[ID]`.
//! - ZIP codes only after a state, a ZIP label, or as ZIP+4; cities only before `ST 12345`.
//! - Street addresses need a house number, capitalised words and a known suffix; risky suffixes
//!   (`Center`, `Spur`, `Walk`, ...) need a house number of two digits or more.
//! - IDs: after a label, seven or more digits in a row (not after a code-system label such as
//!   `SNOMED`), capitals + six digits, three dashed groups of eight digits or more, UUIDs.
//! - Ages over 89 in digits, `ninety...`/`one hundred...` and `nonagenarian`/`centenarian`;
//!   only the number is replaced (`a [AGE]-year-old`).
//! - Unicode names are compared by lower case, not normalised: composed `é` and decomposed
//!   `e` + accent are different spellings.

mod patterns;

use regex::{Regex, RegexSet};
use serde_json::Value;

use patterns::{CARE_WORDS, CODE_LABELS, is_generic_name_word};

/// What the scrubber replaced, by kind (for the run's rule-hit counts; never the values).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ScrubCounts {
    /// `[NAME]` replacements.
    pub names: u64,
    /// `[DATE]` replacements.
    pub dates: u64,
    /// `[PHONE]` replacements (phone and fax numbers).
    pub phones: u64,
    /// `[EMAIL]` replacements.
    pub emails: u64,
    /// `[SSN]` replacements.
    pub ssns: u64,
    /// `[ID]` replacements (MRN, account, record, licence and other identifying numbers).
    pub ids: u64,
    /// `[URL]` replacements.
    pub urls: u64,
    /// `[IP]` replacements.
    pub ips: u64,
    /// `[ADDRESS]` replacements (street addresses, PO boxes, the city before `ST 12345`).
    pub addresses: u64,
    /// `[ZIP]` replacements.
    pub zips: u64,
    /// `[AGE]` replacements (ages over 89).
    pub ages: u64,
}

impl ScrubCounts {
    /// All replacements together.
    pub fn total(&self) -> u64 {
        self.names
            + self.dates
            + self.phones
            + self.emails
            + self.ssns
            + self.ids
            + self.urls
            + self.ips
            + self.addresses
            + self.zips
            + self.ages
    }

    /// Adds `other` into `self` (per-thread counts into the run's counts).
    pub fn add(&mut self, other: &ScrubCounts) {
        self.names += other.names;
        self.dates += other.dates;
        self.phones += other.phones;
        self.emails += other.emails;
        self.ssns += other.ssns;
        self.ids += other.ids;
        self.urls += other.urls;
        self.ips += other.ips;
        self.addresses += other.addresses;
        self.zips += other.zips;
        self.ages += other.ages;
    }
}

/// The kinds of identifier, in tie-break order: when two overlapping spans are equally long, the
/// earlier kind names the merged span (a `2020-01-05` after `record no.` is a date, not an ID).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    Url,
    Email,
    Ip,
    Ssn,
    Phone,
    Date,
    Age,
    Zip,
    Address,
    Id,
    Name,
}

impl Kind {
    fn token(self) -> &'static str {
        match self {
            Kind::Url => "[URL]",
            Kind::Email => "[EMAIL]",
            Kind::Ip => "[IP]",
            Kind::Ssn => "[SSN]",
            Kind::Phone => "[PHONE]",
            Kind::Date => "[DATE]",
            Kind::Age => "[AGE]",
            Kind::Zip => "[ZIP]",
            Kind::Address => "[ADDRESS]",
            Kind::Id => "[ID]",
            Kind::Name => "[NAME]",
        }
    }

    fn count(self, counts: &mut ScrubCounts) {
        let slot = match self {
            Kind::Url => &mut counts.urls,
            Kind::Email => &mut counts.emails,
            Kind::Ip => &mut counts.ips,
            Kind::Ssn => &mut counts.ssns,
            Kind::Phone => &mut counts.phones,
            Kind::Date => &mut counts.dates,
            Kind::Age => &mut counts.ages,
            Kind::Zip => &mut counts.zips,
            Kind::Address => &mut counts.addresses,
            Kind::Id => &mut counts.ids,
            Kind::Name => &mut counts.names,
        };
        *slot += 1;
    }
}

/// Cheap byte features of a text; a detector runs only when all the features it needs are there.
mod feat {
    /// An ASCII digit.
    pub const DIGIT: u8 = 1;
    /// An `@`.
    pub const AT: u8 = 2;
    /// An ASCII capital or any non-ASCII byte (which may be a Unicode capital).
    pub const UPPER: u8 = 4;
    /// Maybe a URL or a spelled-out age: `://`, `www.`, `ninet`, `hundred`, `enarian` (any
    /// case), or a digit (see [`super::features`]).
    pub const HINT: u8 = 8;
    /// A `:` (IPv6).
    pub const COLON: u8 = 16;
    /// Any feature that some detector other than the name detectors needs.
    pub const NOT_NAMES: u8 = DIGIT | AT | HINT | COLON;
}

/// A post-check on a match: may move or reject the span.
#[derive(Debug, Clone, Copy)]
enum Check {
    /// Keep as matched.
    None,
    /// Trim trailing sentence punctuation from a URL.
    TrimUrl,
    /// Reject a digit run that is part of a decimal number (`3.8227768159`) or a code
    /// ([`Check::NotCode`]).
    NotDecimalOrCode,
    /// Reject a span with fewer than this many ASCII digits.
    MinDigits(usize),
    /// Drop a possessive `'s` from the end of a name.
    Possessive,
    /// Drop a possessive `'s`, and reject the span when a word of it is a care-setting or
    /// clinical word (`Physical Therapy`, `Internal Medicine`, `Stable`).
    NotCareWords,
    /// Reject a number right after a code-system label (`SNOMED 38341003`, `RxNorm: 860975`).
    NotCode,
    /// Reject FDA application numbers in drug names (`NDA020503`, `BLA125057`): they name a
    /// product, not a person.
    NotDrugApplication,
}

#[derive(Debug)]
struct Detector {
    re: Regex,
    /// Capture group and the kind its text is replaced as (group 0 is the whole match).
    groups: &'static [(usize, Kind)],
    /// Features (see [`feat`]) the text must have for this detector to run.
    needs: u8,
    check: Check,
    /// Names found by this detector are also searched for elsewhere in the same text.
    learn: bool,
}

/// A span of the input to replace.
#[derive(Debug, Clone, Copy)]
struct Span {
    start: usize,
    end: usize,
    kind: Kind,
    /// Length of the constituent that named the span (longest wins when spans merge).
    best: usize,
}

/// Compiled once, shared by all worker threads (Send + Sync).
#[derive(Debug)]
pub struct Scrubber {
    /// Detectors of everything but names, in the order of `set`.
    detectors: Vec<Detector>,
    /// All of `detectors` in one automaton: one pass says which of them can match at all.
    set: RegexSet,
    /// Literals that let a text without digits reach the detector set (see [`features`]).
    hints: Regex,
    /// Detectors of names without a list (titles, labels, Synthea-style names). They run on
    /// their own: their Unicode letter classes would make the combined automaton slow.
    name_detectors: Vec<Detector>,
}

impl Default for Scrubber {
    fn default() -> Self {
        Self::new()
    }
}

impl Scrubber {
    /// Compiles all detectors (the pattern table, `patterns`). Do this once and share the
    /// scrubber between threads.
    pub fn new() -> Self {
        let (detectors, name_detectors) = patterns::detectors();
        let set = RegexSet::new(detectors.iter().map(|d| d.re.as_str()))
            .expect("scrub: constant patterns compile as a set");
        let hints = Regex::new(r"(?i)://|www\.|ninet|hundred|enarian")
            .expect("scrub: constant pattern compiles");
        Scrubber {
            detectors,
            set,
            hints,
            name_detectors,
        }
    }

    /// Replaces PHI spans in `text`. `names` are name parts known for this record (the patient's
    /// given/family names, prefixes, practitioner names): each occurrence (case-insensitive,
    /// whole word, Unicode aware, also possessive "Smith's") is replaced with `[NAME]`. Parts
    /// shorter than 2 chars are ignored, and so are generic titles and credentials (`Mr.`,
    /// `Dr.`, `MD`, `Jr.`); a part with trailing digits (`Jose871`) also matches its
    /// letters alone (`Jose`), and the other way round.
    pub fn scrub(&self, text: &str, names: &[&str], counts: &mut ScrubCounts) -> String {
        let features = features(text, &self.hints);
        if names.is_empty() && features == 0 {
            return text.to_owned();
        }

        let mut spans: Vec<Span> = Vec::new();
        let mut learnt: Vec<&str> = Vec::new();
        if features & feat::NOT_NAMES != 0 {
            for i in self.set.matches(text).iter() {
                self.run(&self.detectors[i], text, features, &mut spans, &mut learnt);
            }
        }
        if features & feat::UPPER != 0 {
            for d in &self.name_detectors {
                self.run(d, text, features, &mut spans, &mut learnt);
            }
        }

        if !names.is_empty() || !learnt.is_empty() {
            self.match_names(text, names, &learnt, &mut spans);
        }
        if spans.is_empty() {
            return text.to_owned();
        }
        let spans = merge(text, spans);

        let mut out = String::with_capacity(text.len());
        let mut at = 0;
        for s in &spans {
            out.push_str(&text[at..s.start]);
            out.push_str(s.kind.token());
            s.kind.count(counts);
            at = s.end;
        }
        out.push_str(&text[at..]);
        out
    }

    /// Runs one detector (when the text has the features it needs) and records its spans.
    fn run<'t>(
        &self,
        d: &Detector,
        text: &'t str,
        features: u8,
        spans: &mut Vec<Span>,
        learnt: &mut Vec<&'t str>,
    ) {
        if features & d.needs != d.needs {
            return;
        }
        if let [(0, kind)] = d.groups {
            for m in d.re.find_iter(text) {
                self.push_span(text, d, m.start(), m.end(), *kind, spans, learnt);
            }
        } else {
            for caps in d.re.captures_iter(text) {
                for &(group, kind) in d.groups {
                    if let Some(m) = caps.get(group) {
                        self.push_span(text, d, m.start(), m.end(), kind, spans, learnt);
                    }
                }
            }
        }
    }

    /// Checks one match and records it; words of learning detectors' names are remembered.
    #[allow(clippy::too_many_arguments)]
    fn push_span<'t>(
        &self,
        text: &'t str,
        d: &Detector,
        start: usize,
        end: usize,
        kind: Kind,
        spans: &mut Vec<Span>,
        learnt: &mut Vec<&'t str>,
    ) {
        let Some((start, end)) = check(text, start, end, d.check) else {
            return;
        };
        if start >= end {
            return;
        }
        if d.learn && kind == Kind::Name {
            for (ws, we) in words(&text[start..end]) {
                let w = &text[start + ws..start + we];
                if usable_name_word(w) && w.chars().next().is_some_and(char::is_uppercase) {
                    learnt.push(w);
                }
            }
        }
        spans.push(Span {
            start,
            end,
            kind,
            best: end - start,
        });
    }

    /// Finds the record's name parts (any case) and learnt names (capitalised only) word by word.
    fn match_names(&self, text: &str, names: &[&str], learnt: &[&str], spans: &mut Vec<Span>) {
        // Name stems, split the way the text is split. A small stack buffer covers the usual
        // handful of name parts without allocating.
        const INLINE: usize = 32;
        let mut inline = [NameStem::EMPTY; INLINE];
        let mut inline_len = 0;
        let mut overflow: Vec<NameStem> = Vec::new();
        for name in names {
            for (ws, we) in words(name) {
                let w = &name[ws..we];
                if !usable_name_word(w) {
                    continue;
                }
                let stem = NameStem::new(w);
                if inline_len < INLINE {
                    inline[inline_len] = stem;
                    inline_len += 1;
                } else {
                    overflow.push(stem);
                }
            }
        }
        if inline_len == 0 && learnt.is_empty() {
            return;
        }
        let listed = &inline[..inline_len];
        let learnt: Vec<NameStem> = learnt.iter().map(|w| NameStem::new(w)).collect();

        for (start, end) in words(text) {
            let word = &text[start..end];
            let capitalised = word.chars().next().is_some_and(char::is_uppercase);
            let hit = |candidate: &str| {
                let c = NameStem::new(candidate);
                c.stem.len() >= 2
                    && (listed.iter().chain(&overflow).any(|n| c.same(n))
                        || (capitalised && learnt.iter().any(|n| c.same(n))))
            };
            let end = if hit(word) {
                end
            } else if let Some(stem) = possessive_stem(word).filter(|s| hit(s)) {
                start + stem.len()
            } else {
                continue;
            };
            spans.push(Span {
                start,
                end,
                kind: Kind::Name,
                best: end - start,
            });
        }
    }
}

/// A name word without its trailing digits (`Jose871` -> `Jose`), ready for comparison.
#[derive(Debug, Clone, Copy)]
struct NameStem<'a> {
    stem: &'a str,
    ascii: bool,
}

impl<'a> NameStem<'a> {
    const EMPTY: NameStem<'static> = NameStem {
        stem: "",
        ascii: true,
    };

    fn new(word: &'a str) -> Self {
        let stem = word.trim_end_matches(|c: char| c.is_ascii_digit());
        NameStem {
            stem,
            ascii: stem.is_ascii(),
        }
    }

    /// Case-insensitive (Unicode lower case), curly and straight apostrophes alike.
    fn same(&self, other: &NameStem<'_>) -> bool {
        if self.ascii && other.ascii {
            return self.stem.eq_ignore_ascii_case(other.stem);
        }
        let fold = |c: char| if c == '’' { '\'' } else { c };
        self.stem
            .chars()
            .map(fold)
            .flat_map(char::to_lowercase)
            .eq(other.stem.chars().map(fold).flat_map(char::to_lowercase))
    }
}

/// The [`feat`] bits of `text`: one byte pass, plus the `hints` regex (a vectorised literal
/// search for `://`, `www.` and spelled-out ages) only when the text has no digit.
fn features(text: &str, hints: &Regex) -> u8 {
    let mut f = 0;
    for &b in text.as_bytes() {
        f |= match b {
            b'0'..=b'9' => feat::DIGIT,
            b'@' => feat::AT,
            b'A'..=b'Z' | 0x80..=0xff => feat::UPPER,
            b':' => feat::COLON,
            _ => 0,
        };
    }
    // With a digit the detector set runs anyway, and it rejects a text without a URL or a
    // spelled age in the same pass; without one, the hints decide whether it runs at all.
    if f & feat::DIGIT != 0 || hints.is_match(text) {
        f |= feat::HINT;
    }
    f
}

/// The words of `text` as byte ranges: runs of letters, digits and combining marks, with inner
/// apostrophes (`O'Brien`, `Smith's`). Everything else separates words (`Smith-Jones` is two).
fn words(text: &str) -> impl Iterator<Item = (usize, usize)> + '_ {
    let mut chars = text.char_indices().peekable();
    std::iter::from_fn(move || {
        let start = loop {
            let (i, c) = chars.next()?;
            if is_word_char(c) {
                break i;
            }
        };
        let mut end = text.len();
        while let Some(&(i, c)) = chars.peek() {
            if is_word_char(c) {
                chars.next();
                continue;
            }
            if c == '\'' || c == '’' {
                let after = text[i + c.len_utf8()..].chars().next();
                if after.is_some_and(is_word_char) {
                    chars.next();
                    continue;
                }
            }
            end = i;
            break;
        }
        Some((start, end))
    })
}

fn is_word_char(c: char) -> bool {
    if c.is_ascii() {
        return c.is_ascii_alphanumeric();
    }
    c.is_alphanumeric() || is_combining_mark(c)
}

/// The combining-mark blocks that decomposed Latin, Greek and Cyrillic names use.
fn is_combining_mark(c: char) -> bool {
    matches!(c, '\u{0300}'..='\u{036F}' | '\u{1AB0}'..='\u{1AFF}' | '\u{1DC0}'..='\u{1DFF}' | '\u{20D0}'..='\u{20FF}' | '\u{FE20}'..='\u{FE2F}')
}

/// Applies a detector's post-check to the span `start..end` of `text`.
fn check(text: &str, start: usize, end: usize, what: Check) -> Option<(usize, usize)> {
    let bytes = text.as_bytes();
    match what {
        Check::None => Some((start, end)),
        Check::TrimUrl => {
            let trimmed =
                text[start..end].trim_end_matches(['.', ',', ';', ':', '!', '?', '\'', '"']);
            (trimmed.len() > 4).then_some((start, start + trimmed.len()))
        }
        Check::NotDecimalOrCode => {
            check(text, start, end, Check::NotCode)?;
            let before =
                start >= 2 && bytes[start - 1] == b'.' && bytes[start - 2].is_ascii_digit();
            let after =
                end + 1 < bytes.len() && bytes[end] == b'.' && bytes[end + 1].is_ascii_digit();
            (!before && !after).then_some((start, end))
        }
        Check::NotCareWords => {
            let (start, end) = check(text, start, end, Check::Possessive)?;
            let care = words(&text[start..end]).any(|(ws, we)| {
                let w = &text[start + ws..start + we];
                CARE_WORDS.iter().any(|c| c.eq_ignore_ascii_case(w))
            });
            (!care).then_some((start, end))
        }
        Check::NotCode => {
            let before = text[..start].trim_end_matches([' ', '\t', ':', '#', '(', '=', '-']);
            let code = CODE_LABELS.iter().any(|l| {
                before.len() >= l.len()
                    && before.is_char_boundary(before.len() - l.len())
                    && before[before.len() - l.len()..].eq_ignore_ascii_case(l)
                    && !before[..before.len() - l.len()]
                        .chars()
                        .next_back()
                        .is_some_and(char::is_alphanumeric)
            });
            (!code).then_some((start, end))
        }
        Check::NotDrugApplication => {
            let span = &text[start..end];
            (!(span.starts_with("NDA") || span.starts_with("BLA"))).then_some((start, end))
        }
        Check::MinDigits(n) => {
            let digits = bytes[start..end]
                .iter()
                .filter(|b| b.is_ascii_digit())
                .count();
            (digits >= n).then_some((start, end))
        }
        Check::Possessive => {
            let span = &text[start..end];
            let keep = span
                .strip_suffix("'s")
                .or_else(|| span.strip_suffix("’s"))
                .filter(|s| s.chars().last().is_some_and(char::is_alphabetic))
                .map_or(span.len(), str::len);
            Some((start, start + keep))
        }
    }
}

/// Sorts spans and merges them: overlapping spans become their union, named after the longest
/// constituent (ties by [`Kind`] order); names separated only by blanks become one name.
fn merge(text: &str, mut spans: Vec<Span>) -> Vec<Span> {
    spans.sort_unstable_by(|a, b| {
        a.start
            .cmp(&b.start)
            .then(b.end.cmp(&a.end))
            .then(a.kind.cmp(&b.kind))
    });
    let mut merged: Vec<Span> = Vec::with_capacity(spans.len());
    for s in spans {
        if let Some(last) = merged.last_mut() {
            if s.start < last.end {
                last.end = last.end.max(s.end);
                if s.best > last.best || (s.best == last.best && s.kind < last.kind) {
                    last.kind = s.kind;
                    last.best = s.best;
                }
                continue;
            }
            if last.kind == Kind::Name
                && s.kind == Kind::Name
                && text[last.end..s.start]
                    .bytes()
                    .all(|b| b == b' ' || b == b'\t')
            {
                last.end = s.end;
                last.best += s.best;
                continue;
            }
        }
        merged.push(s);
    }
    merged
}

/// A name word worth matching: two or more characters besides trailing digits, with a letter,
/// and not a generic title or credential.
fn usable_name_word(word: &str) -> bool {
    let stem = word.trim_end_matches(|c: char| c.is_ascii_digit());
    stem.chars().nth(1).is_some()
        && stem.chars().any(char::is_alphabetic)
        && !is_generic_name_word(stem)
}

/// `Smith` for `Smith's` / `Smith’s`.
fn possessive_stem(word: &str) -> Option<&str> {
    word.strip_suffix("'s")
        .or_else(|| word.strip_suffix("'S"))
        .or_else(|| word.strip_suffix("’s"))
        .or_else(|| word.strip_suffix("’S"))
        .filter(|s| !s.is_empty())
}

/// Collects name parts from a FHIR resource JSON, for use as `names` in [`Scrubber::scrub`]:
/// every HumanName anywhere in the resource (`name`, `contact[].name`, contained resources,
/// `valueHumanName` extensions) gives its `given[]`, `family`, `prefix[]`, `suffix[]` and the
/// words of `text`; the `patient-mothersMaidenName` extension and the `display` of references to
/// a Patient, Practitioner, RelatedPerson or Person (`"Dr. Chelsey293 Simonis280"`) give their
/// words too. Words are split on white space, trimmed of surrounding punctuation (`Mr.` gives
/// `Mr`), kept when two or more characters long, and deduplicated ignoring case, in document
/// order. Generic titles are collected as written; [`Scrubber::scrub`] skips them.
pub fn name_parts(resource: &Value) -> Vec<String> {
    let mut out = Vec::new();
    collect_names(resource, &mut out, 0);
    out
}

/// FHIR nesting is shallow; this bounds recursion on hostile input.
const MAX_DEPTH: usize = 64;

fn collect_names(value: &Value, out: &mut Vec<String>, depth: usize) {
    if depth > MAX_DEPTH {
        return;
    }
    match value {
        Value::Object(map) => {
            for key in ["name", "valueHumanName"] {
                match map.get(key) {
                    Some(Value::Array(items)) => items.iter().for_each(|n| human_name(n, out)),
                    Some(n @ Value::Object(_)) => human_name(n, out),
                    _ => {}
                }
            }
            let url = map.get("url").and_then(Value::as_str);
            if url.is_some_and(|u| u.ends_with("patient-mothersMaidenName"))
                && let Some(s) = map.get("valueString").and_then(Value::as_str)
            {
                push_words(s, out);
            }
            let person_ref = map
                .get("reference")
                .and_then(Value::as_str)
                .is_some_and(|r| {
                    ["Patient", "Practitioner", "RelatedPerson", "Person"]
                        .iter()
                        .any(|t| {
                            r.strip_prefix(t)
                                .is_some_and(|rest| rest.starts_with('/') || rest.starts_with('?'))
                        })
                })
                || map.get("type").and_then(Value::as_str).is_some_and(|t| {
                    matches!(t, "Patient" | "Practitioner" | "RelatedPerson" | "Person")
                });
            if person_ref && let Some(s) = map.get("display").and_then(Value::as_str) {
                push_words(s, out);
            }
            for child in map.values() {
                if child.is_object() || child.is_array() {
                    collect_names(child, out, depth + 1);
                }
            }
        }
        Value::Array(items) => {
            for item in items {
                collect_names(item, out, depth + 1);
            }
        }
        _ => {}
    }
}

/// Adds the parts of one HumanName (an object with any of family/given/prefix/suffix/text).
fn human_name(name: &Value, out: &mut Vec<String>) {
    let Value::Object(map) = name else {
        return;
    };
    for key in ["prefix", "given", "family", "suffix", "text"] {
        match map.get(key) {
            Some(Value::String(s)) => push_words(s, out),
            // `family` is a list in DSTU2.
            Some(Value::Array(items)) => {
                for s in items.iter().filter_map(Value::as_str) {
                    push_words(s, out);
                }
            }
            _ => {}
        }
    }
}

fn push_words(s: &str, out: &mut Vec<String>) {
    for w in s.split_whitespace() {
        let w = w.trim_matches(|c: char| !c.is_alphanumeric());
        if w.chars().nth(1).is_none() {
            continue;
        }
        if !out.iter().any(|o| same_case_insensitive(o, w)) {
            out.push(w.to_string());
        }
    }
}

fn same_case_insensitive(a: &str, b: &str) -> bool {
    a.chars()
        .flat_map(char::to_lowercase)
        .eq(b.chars().flat_map(char::to_lowercase))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::OnceLock;

    fn scrubber() -> &'static Scrubber {
        static S: OnceLock<Scrubber> = OnceLock::new();
        S.get_or_init(Scrubber::new)
    }

    fn scrub(text: &str) -> String {
        scrub_with(text, &[])
    }

    fn scrub_with(text: &str, names: &[&str]) -> String {
        let mut counts = ScrubCounts::default();
        scrubber().scrub(text, names, &mut counts)
    }

    fn scrub_counts(text: &str, names: &[&str]) -> (String, ScrubCounts) {
        let mut counts = ScrubCounts::default();
        let out = scrubber().scrub(text, names, &mut counts);
        (out, counts)
    }

    #[test]
    fn scrubber_is_send_and_sync() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<Scrubber>();
    }

    #[test]
    fn plain_text_is_returned_unchanged() {
        let text = "patient reports mild cough, no fever. continue current plan.";
        let (out, counts) = scrub_counts(text, &[]);
        assert_eq!(out, text);
        assert_eq!(counts.total(), 0);
    }

    #[test]
    fn iso_dates_and_datetimes() {
        assert_eq!(
            scrub("Seen on 2020-01-05 for cough."),
            "Seen on [DATE] for cough."
        );
        assert_eq!(scrub("Admitted 2020-01-05T10:00:00Z."), "Admitted [DATE].");
        assert_eq!(scrub("at 2020-01-05T10:00:00.123+02:00 ok"), "at [DATE] ok");
        assert_eq!(scrub("since 2020/01/05"), "since [DATE]");
        assert_eq!(scrub("onset 2019-11"), "onset [DATE]");
    }

    #[test]
    fn us_dates() {
        assert_eq!(
            scrub("DOB 01/05/2020, follow up 1/5/20."),
            "DOB [DATE], follow up [DATE]."
        );
        assert_eq!(scrub("on 12-31-1999"), "on [DATE]");
        assert_eq!(scrub("in 03/2021"), "in [DATE]");
    }

    #[test]
    fn written_dates() {
        assert_eq!(scrub("on January 5, 2020 she"), "on [DATE] she");
        assert_eq!(scrub("on 5 Jan 2020 she"), "on [DATE] she");
        assert_eq!(scrub("since Jan 2020"), "since [DATE]");
        assert_eq!(scrub("since Jan. 5th, 2020"), "since [DATE]");
        assert_eq!(scrub("on the 5th of January, 2020"), "on the [DATE]");
        assert_eq!(scrub("dated 05-JAN-2020"), "dated [DATE]");
        assert_eq!(scrub("next visit March 3"), "next visit [DATE]");
        assert_eq!(scrub("seen 3 September"), "seen [DATE]");
    }

    #[test]
    fn bare_years_stay() {
        let text = "Diagnosed in 2020, quit smoking in 1999.";
        assert_eq!(scrub(text), text);
    }

    #[test]
    fn phones_and_fax() {
        assert_eq!(scrub("Call (555) 123-4567."), "Call [PHONE].");
        assert_eq!(scrub("home 555-123-4567"), "home [PHONE]");
        assert_eq!(scrub("cell +1 555 123 4567"), "cell [PHONE]");
        assert_eq!(scrub("office 555.123.4567"), "office [PHONE]");
        assert_eq!(
            scrub("work 555-123-4567 ext 12, thanks"),
            "work [PHONE], thanks"
        );
        assert_eq!(scrub("Fax: 1-800-555-0199"), "Fax: [PHONE]");
        assert_eq!(scrub("fax 555-0199"), "fax [PHONE]");
        assert_eq!(scrub("UK +44 20 7946 0958"), "UK [PHONE]");
        let (_, counts) = scrub_counts("555-123-4567 or (555) 765-4321", &[]);
        assert_eq!(counts.phones, 2);
    }

    #[test]
    fn ssn() {
        assert_eq!(scrub("SSN 123-45-6789."), "SSN [SSN].");
        assert_eq!(
            scrub("social security number: 123456789"),
            "social security number: [SSN]"
        );
    }

    #[test]
    fn emails() {
        let (out, counts) = scrub_counts("Contact jane.doe+1@example.co.uk today", &[]);
        assert_eq!(out, "Contact [EMAIL] today");
        assert_eq!(counts.emails, 1);
    }

    #[test]
    fn urls() {
        assert_eq!(
            scrub("See https://portal.example.org/p?id=7."),
            "See [URL]."
        );
        assert_eq!(scrub("visit www.example.com, then"), "visit [URL], then");
        assert_eq!(scrub("(http://x.example/a)"), "([URL])");
    }

    #[test]
    fn ip_addresses() {
        assert_eq!(scrub("from 192.168.1.20 at login"), "from [IP] at login");
        assert_eq!(
            scrub("v6 2001:0db8:85a3:0000:0000:8a2e:0370:7334 ok"),
            "v6 [IP] ok"
        );
        assert_eq!(scrub("v6 fe80::1ff:fe23:4567:890a ok"), "v6 [IP] ok");
        assert_eq!(scrub("at 10:30:00 today"), "at 10:30:00 today");
    }

    #[test]
    fn record_numbers() {
        assert_eq!(scrub("MRN: 12345678"), "MRN: [ID]");
        assert_eq!(scrub("MRN 1234-5678"), "MRN [ID]");
        assert_eq!(scrub("account #123456 closed"), "account #[ID] closed");
        assert_eq!(scrub("acct 12345"), "acct [ID]");
        assert_eq!(scrub("record no. 998877"), "record no. [ID]");
        assert_eq!(scrub("Member ID: XZ-449912"), "Member ID: [ID]");
        assert_eq!(scrub("ref 99887766 noted"), "ref [ID] noted");
        assert_eq!(scrub("id 3fa85f64-5717-4562-b3fc-2c963f66afa6"), "id [ID]");
        let (_, counts) = scrub_counts("MRN: 12345678", &[]);
        assert_eq!(counts.ids, 1);
    }

    #[test]
    fn street_addresses_and_zips() {
        assert_eq!(
            scrub("Lives at 123 Main St with"),
            "Lives at [ADDRESS] with"
        );
        assert_eq!(
            scrub("moved to 45 Oak Avenue Apt 4."),
            "moved to [ADDRESS]."
        );
        assert_eq!(scrub("718 D'Amore Byway Apt 11"), "[ADDRESS]");
        assert_eq!(scrub("8929 PARALLEL PARKWAY"), "[ADDRESS]");
        assert_eq!(scrub("1045 Schmitt Spur"), "[ADDRESS]");
        assert_eq!(scrub("PO Box 1234"), "[ADDRESS]");
        assert_eq!(
            scrub("Lives alone in Boston, Massachusetts since 2019."),
            "Lives alone in [ADDRESS], Massachusetts since 2019."
        );
        assert_eq!(
            scrub("Moved from Springfield, Illinois."),
            "Moved from [ADDRESS], Illinois."
        );
        assert_eq!(
            scrub("123 Main St, Boston, MA 02139"),
            "[ADDRESS], [ADDRESS], MA [ZIP]"
        );
        assert_eq!(scrub("Kansas City, KS 66104-1234"), "[ADDRESS], KS [ZIP]");
        assert_eq!(scrub("ZIP 02139"), "ZIP [ZIP]");
        assert_eq!(scrub("zip code: 66104"), "zip code: [ZIP]");
    }

    #[test]
    fn ages_over_89_only() {
        assert_eq!(scrub("a 92-year-old man"), "a [AGE]-year-old man");
        assert_eq!(scrub("a 89-year-old man"), "a 89-year-old man");
        assert_eq!(scrub("at age 95 she"), "at age [AGE] she");
        assert_eq!(scrub("age 89 she"), "age 89 she");
        assert_eq!(scrub("aged 101,"), "aged [AGE],");
        assert_eq!(scrub("is 90 years old"), "is [AGE] years old");
        assert_eq!(scrub("Age: 90"), "Age: [AGE]");
        assert_eq!(scrub("a 93 yo female"), "a [AGE] yo female");
        assert_eq!(scrub("she is in her late 90s"), "she is in her late [AGE]");
        assert_eq!(scrub("a ninety-two year old"), "a [AGE] year old");
        assert_eq!(scrub("a healthy nonagenarian"), "a healthy [AGE]");
        assert_eq!(scrub("a 60 year-old woman"), "a 60 year-old woman");
        let (_, counts) = scrub_counts("92-year-old, age 95", &[]);
        assert_eq!(counts.ages, 2);
    }

    #[test]
    fn titles_find_names_without_a_list() {
        assert_eq!(
            scrub("Seen by Dr. Jane Smith today."),
            "Seen by [NAME] today."
        );
        assert_eq!(scrub("Mr. Smith reports pain."), "[NAME] reports pain.");
        assert_eq!(scrub("Mrs. O'Brien and Ms. Lee"), "[NAME] and [NAME]");
        assert_eq!(scrub("Prof. J. R. Tolkien"), "[NAME]");
        assert_eq!(
            scrub("Mr. Jose871 Harvey63 is a 40 year-old"),
            "[NAME] is a 40 year-old"
        );
        assert_eq!(scrub("Patient: John Smith"), "Patient: [NAME]");
        assert_eq!(
            scrub("Electronically signed by Mary Jones"),
            "Electronically signed by [NAME]"
        );
    }

    #[test]
    fn names_after_relations_particles_and_seen_by() {
        assert_eq!(
            scrub("Her daughter, Lucia García, called 911."),
            "Her daughter, [NAME], called 911."
        );
        assert_eq!(scrub("a friend named Ana Ruiz"), "a friend named [NAME]");
        assert_eq!(scrub("Dr. Alfredo17 de Anda129"), "[NAME]");
        assert_eq!(scrub("Seen by Jane Doe, NP."), "Seen by [NAME], NP.");
        assert_eq!(scrub("DR. JOHN SMITH"), "[NAME]");
        assert_eq!(scrub("Provider: Robert Chen"), "Provider: [NAME]");
    }

    #[test]
    fn learnt_names_are_found_elsewhere() {
        assert_eq!(
            scrub("Dr. Smith examined. Smith recommends rest; the smith forge"),
            "[NAME] examined. [NAME] recommends rest; the smith forge"
        );
    }

    #[test]
    fn synthea_style_names() {
        assert_eq!(
            scrub("Sumiko254 Larue605\n is a 60 year-old nonhispanic white female."),
            "[NAME]\n is a 60 year-old nonhispanic white female."
        );
        // A single capitalised word with digits is not a name by itself.
        assert_eq!(scrub("Covid19 vaccine given"), "Covid19 vaccine given");
    }

    #[test]
    fn record_names_any_case_whole_word() {
        let names = ["Jose871", "Harvey63"];
        assert_eq!(
            scrub_with("jose said HARVEY called; Harveyson and joseph not", &names),
            "[NAME] said [NAME] called; Harveyson and joseph not"
        );
        let (out, counts) = scrub_counts("Jose Harvey came.", &names);
        assert_eq!(out, "[NAME] came.");
        assert_eq!(counts.names, 1);
    }

    #[test]
    fn possessives() {
        assert_eq!(
            scrub_with("Smith's wife and Smith’s son", &["Smith"]),
            "[NAME]'s wife and [NAME]’s son"
        );
        assert_eq!(scrub("Dr. Smith's note"), "[NAME]'s note");
    }

    #[test]
    fn unicode_names() {
        let names = ["José", "Müller", "Zoë", "Ñúñez"];
        assert_eq!(
            scrub_with("josé and MÜLLER met Zoë; Müller's chart; Ñúñez", &names),
            "[NAME] and [NAME] met [NAME]; [NAME]'s chart; [NAME]"
        );
        // Not inside longer words.
        assert_eq!(
            scrub_with("Joséphine Müllerova", &names),
            "Joséphine Müllerova"
        );
        assert_eq!(scrub("Dr. Zoë Müller-Lüdenscheidt"), "[NAME]");
    }

    #[test]
    fn decomposed_accents_stay_inside_the_word() {
        // "José" written as `e` + combining acute accent.
        let decomposed = "Jose\u{301}";
        assert_eq!(scrub_with("Jose\u{301} came", &[decomposed]), "[NAME] came");
        // A different name that shares the letters before the mark is not matched.
        assert_eq!(
            scrub_with("Jose\u{301} came", &["Jose"]),
            "Jose\u{301} came"
        );
    }

    #[test]
    fn short_and_generic_name_parts_are_ignored() {
        assert_eq!(
            scrub_with("A x MD note", &["A", "x", "MD", "Mr."]),
            "A x MD note"
        );
    }

    #[test]
    fn date_inside_url_is_one_url() {
        let (out, counts) = scrub_counts("see https://example.org/notes/2020-01-05/view now", &[]);
        assert_eq!(out, "see [URL] now");
        assert_eq!(counts.urls, 1);
        assert_eq!(counts.dates, 0);
    }

    #[test]
    fn name_inside_email_is_one_email() {
        let (out, counts) = scrub_counts(
            "mail Randy380.Bergstrom287@example.com",
            &["Randy380", "Bergstrom287"],
        );
        assert_eq!(out, "mail [EMAIL]");
        assert_eq!((counts.emails, counts.names), (1, 0));
    }

    #[test]
    fn clinical_content_survives() {
        for text in [
            "BP 120/80 mmHg, HR 72 bpm, temp 37.2 C",
            "Take 5 mg daily and 2 tablets at night",
            "HbA1c 7.2% (LOINC 4548-4); systolic 8480-6",
            "SNOMED 44054006 diabetes; SCTID: 38341003; RxNorm 860975; code 1234567",
            "Take 1/2 tablet; dilute 1:1000; dose 250-1000 mg",
            "acetaminophen 325 mg oral tablet; Level 1 Trauma Center",
            "Stage 2 Heel Spur; chronic kidney disease stage 3",
            "eGFR 45 mL/min/1.73m2; Vitamin B12 400 pg/mL",
            "Patient may require 3 doses; march forward",
            "1 ml epoetin alfa 4000 unt/ml injection [epogen]",
            "Type 2 Diabetes Mellitus; COVID-19 PCR negative; SARS-CoV-2 IgG; Covid19 vaccine",
            "TNM T4 N2 M0, Gleason 3+4=7, ICD-10 E11.9, CPT 99213, G6PD normal, BRCA1",
            "Patient: Alert and oriented x3. Pt: Stable. Mother: Breast Cancer.",
            "Moderate MR. Echo shows EF 55%. DR Screening negative. MS Contin 30 mg.",
            "Family history: mother Diabetes, father CAD, sister Asthma.",
            "Seen by Physical Therapy. Discussed with Pharmacy. Provider: Internal Medicine",
            "6 Minute Walk Test; 12 Lead ECG; 24 Hour Urine Protein 300 mg; 2 Way Foley",
            "Plt 250,000; INR 2.5; Pain 7/10; walked 90 meters; O2 sat 90%; 100 units heparin",
            "tapered over 90 days; ratio 1:10000; dilution 1/2000; Version 2.3.1",
            "NDA020503 200 ACTUAT Albuterol 0.09 MG/ACTUAT Metered Dose Inhaler",
            "Received 12345 units of heparin; platelets 25000.",
        ] {
            assert_eq!(scrub(text), text, "damaged: {text}");
        }
    }

    #[test]
    fn decimals_are_not_ids() {
        let text = "QALY 57.177223184091154";
        assert_eq!(scrub(text), text);
    }

    #[test]
    fn counts_total_and_add() {
        let (_, a) = scrub_counts(
            "Mr. Smith, 2020-01-05, 555-123-4567, a@b.org, 123-45-6789, MRN 12345678, \
             http://x.org, 10.0.0.1, 123 Main St, ZIP 02139, age 95",
            &[],
        );
        let expected = ScrubCounts {
            names: 1,
            dates: 1,
            phones: 1,
            emails: 1,
            ssns: 1,
            ids: 1,
            urls: 1,
            ips: 1,
            addresses: 1,
            zips: 1,
            ages: 1,
        };
        assert_eq!(a, expected);
        assert_eq!(a.total(), 11);
        let mut sum = a.clone();
        sum.add(&a);
        assert_eq!(sum.total(), 22);
        assert_eq!(sum.names, 2);
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(512))]

        /// Any text, any names: no panic (spans always fall on char boundaries), and a text
        /// with nothing to find comes back unchanged.
        #[test]
        fn never_panics_and_leaves_plain_text_alone(
            text in "[a-zA-Z0-9 .,:;/@#()'’\\-éÜñß\u{301}\n]{0,160}",
            plain in "[a-z .,;()'\\-é\n]{0,160}",
            names in proptest::collection::vec("[A-Za-zéÜ'0-9]{0,8}", 0..4),
        ) {
            let names: Vec<&str> = names.iter().map(String::as_str).collect();
            let mut counts = ScrubCounts::default();
            let _ = scrubber().scrub(&text, &names, &mut counts);
            let out = scrubber().scrub(&plain, &[], &mut counts);
            let hint = ["www.", "ninet", "hundred", "enarian"].iter().any(|h| plain.contains(h));
            if !hint {
                proptest::prop_assert_eq!(out, plain);
            }
        }
    }

    #[test]
    fn name_parts_from_synthea_patient() {
        let patient: Value = serde_json::json!({
            "resourceType": "Patient",
            "name": [{"use": "official", "family": "Harvey63", "given": ["Jose871"], "prefix": ["Mr."]}]
        });
        assert_eq!(name_parts(&patient), vec!["Mr", "Jose871", "Harvey63"]);
    }

    #[test]
    fn name_parts_from_contacts_extensions_and_references() {
        let resource: Value = serde_json::json!({
            "resourceType": "Patient",
            "extension": [{
                "url": "http://hl7.org/fhir/StructureDefinition/patient-mothersMaidenName",
                "valueString": "Harold594 VonRueden376"
            }],
            "name": [
                {"family": "Müller", "given": ["Zoë", "Anne Marie"], "text": "Zoë Anne Marie Müller, PhD"},
                {"use": "maiden", "family": "müller"}
            ],
            "contact": [{"name": {"family": "O'Brien", "given": ["Pat"]}}],
            "generalPractitioner": [{"reference": "Practitioner/1", "display": "Dr. Chelsey293 Simonis280"}],
            "managingOrganization": {"reference": "Organization/2", "display": "Good Hospital"}
        });
        let parts = name_parts(&resource);
        for want in [
            "Zoë",
            "Anne",
            "Marie",
            "Müller",
            "PhD",
            "O'Brien",
            "Pat",
            "Harold594",
            "VonRueden376",
            "Chelsey293",
            "Simonis280",
        ] {
            assert!(
                parts.iter().any(|p| p == want),
                "missing {want} in {parts:?}"
            );
        }
        assert!(!parts.iter().any(|p| p == "Hospital"));
        assert_eq!(
            parts
                .iter()
                .filter(|p| p.to_lowercase() == "müller")
                .count(),
            1
        );
    }

    #[test]
    fn record_names_from_name_parts_scrub_a_note() {
        let patient: Value = serde_json::json!({
            "resourceType": "Patient",
            "name": [{"use": "official", "family": "Harvey63", "given": ["Jose871"], "prefix": ["Mr."]}]
        });
        let parts = name_parts(&patient);
        let names: Vec<&str> = parts.iter().map(String::as_str).collect();
        let (out, counts) = scrub_counts(
            "2019-03-04\n\n# History\nJose871 Harvey63\n is a 92 year-old male. Mr. Harvey's wife called 555-123-4567.",
            &names,
        );
        assert_eq!(
            out,
            "[DATE]\n\n# History\n[NAME]\n is a [AGE] year-old male. [NAME]'s wife called [PHONE]."
        );
        assert_eq!(
            (counts.names, counts.dates, counts.ages, counts.phones),
            (2, 1, 1, 1)
        );
    }
}
