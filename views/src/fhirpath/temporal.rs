//! Partial dates, dateTimes and times as FHIR writes them (`2010`, `2010-10`, `2010-10-10T10:00Z`,
//! `12:34`), their comparison precision, and `lowBoundary()` / `highBoundary()`. Reading,
//! boundaries and formatting are `fhirlake_fhir::datetime`'s (its FHIRPath reading); the
//! comparison rules and the epoch conversions the view columns need are here.

use fhirlake_fhir::datetime::{Boundary, DateTime, Offset, Precision, Time};

/// A FHIR date or dateTime as FHIRPath reads it ([`DateTime::parse_fhirpath`]), or as the
/// views' older reader also accepted it (see [`legacy_zone`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DateTimeParts<'a> {
    /// The value.
    pub value: DateTime<'a>,
    /// The zone as written when only the older reading accepts it (`Z05:00`, `+05:30:00`).
    pub legacy_zone: Option<&'a str>,
}

/// The parts of a time of day.
pub type TimeParts<'a> = Time<'a>;

/// Parses `hh[:mm[:ss[.fff]]]`.
pub fn parse_time(s: &str) -> Option<TimeParts<'_>> {
    Time::parse_fhirpath(s)
}

/// The views' reader before `fhirlake_fhir::datetime` took any `Z`, `+` or `-` after the `T`
/// followed by `hh:mm` (and optionally seconds) as the zone, `-` west and otherwise east: `Z05:00`
/// was +05:00 and `+05:30:00` was +05:30. FHIRPath has no such zones; they are still read, so a
/// view over such values keeps building as it did. Returns the value and the zone as written.
fn legacy_zone(s: &str) -> Option<(DateTime<'_>, &str)> {
    let t = s.find('T')?;
    let zone_at = t + 1 + s[t + 1..].find(['Z', '+', '-'])?;
    let zone = &s[zone_at..];
    let zone_time = parse_time(zone.get(1..)?)?;
    let mut value = DateTime::parse_fhirpath(&s[..zone_at])?;
    value.offset = Some(Offset::Fixed {
        negative: zone.starts_with('-'),
        hours: zone_time.hour,
        minutes: zone_time.minute?,
    });
    Some((value, zone))
}

impl<'a> DateTimeParts<'a> {
    /// Parses a FHIR date or dateTime of any precision.
    pub fn parse(s: &'a str) -> Option<Self> {
        match DateTime::parse_fhirpath(s) {
            Some(value) => Some(Self {
                value,
                legacy_zone: None,
            }),
            None => legacy_zone(s).map(|(value, zone)| Self {
                value,
                legacy_zone: Some(zone),
            }),
        }
    }

    /// How many components are present (year = 1 ... second = 6, fraction = 7).
    pub fn precision(&self) -> u8 {
        match self.value.precision() {
            Precision::Year => 1,
            Precision::Month => 2,
            Precision::Day => 3,
            Precision::Hour => 4,
            Precision::Minute => 5,
            Precision::Second => 6,
            Precision::Fraction => 7,
        }
    }
}

fn boundary(high: bool) -> Boundary {
    if high { Boundary::High } else { Boundary::Low }
}

/// `lowBoundary()` / `highBoundary()` of a date: the first / last day it can mean.
pub fn date_boundary_text(s: &str, high: bool) -> Option<String> {
    let parts = DateTimeParts::parse(s)?.value;
    if parts.time.is_some() {
        return None;
    }
    Some(parts.date.boundary(boundary(high)).to_string())
}

/// `lowBoundary()` / `highBoundary()` of a dateTime: the earliest / latest instant it can mean,
/// to the millisecond; without a timezone the widest offsets (+14:00 / -12:00) apply.
pub fn date_time_boundary_text(s: &str, high: bool) -> Option<String> {
    let parts = DateTimeParts::parse(s)?;
    let mut text = parts.value.boundary_text(boundary(high));
    if let Some(zone) = parts.legacy_zone {
        // The zone is written back as it was (a fixed offset takes six characters).
        text.truncate(text.len() - 6);
        text.push_str(zone);
    }
    Some(text)
}

/// `lowBoundary()` / `highBoundary()` of a time.
pub fn time_boundary_text(s: &str, high: bool) -> Option<String> {
    Some(parse_time(s)?.boundary_text(boundary(high)))
}

/// `lowBoundary()` / `highBoundary()` of a decimal written with `digits` fraction digits: the
/// value minus / plus half a unit of its last digit.
pub fn decimal_boundary(value: f64, digits: u32, high: bool) -> f64 {
    let half = 0.5 * 10f64.powi(-(digits as i32));
    let bound = if high { value + half } else { value - half };
    let scale = 10f64.powi(digits as i32 + 1);
    (bound * scale).round() / scale
}

/// Compares two temporal values of the same kind; `None` when their precisions differ and the
/// shared components are equal (FHIRPath: the result is empty).
pub fn compare_temporal(a: &str, b: &str) -> Option<std::cmp::Ordering> {
    match (DateTimeParts::parse(a), DateTimeParts::parse(b)) {
        (Some(pa), Some(pb)) => precision_compare(&sort_key(&pa), &sort_key(&pb)),
        _ => match (parse_time(a), parse_time(b)) {
            (Some(ta), Some(tb)) => precision_compare(&time_key(&ta), &time_key(&tb)),
            _ => Some(a.cmp(b)),
        },
    }
}

/// Compares component lists; equal shared components with different lengths are incomparable.
fn precision_compare(a: &[u64], b: &[u64]) -> Option<std::cmp::Ordering> {
    let shared = a.len().min(b.len());
    match a[..shared].cmp(&b[..shared]) {
        std::cmp::Ordering::Equal if a.len() != b.len() => None,
        ord => Some(ord),
    }
}

/// Components as comparable numbers (timezones are normalised to UTC minutes when present).
fn sort_key(parts: &DateTimeParts) -> Vec<u64> {
    let p = &parts.value;
    let mut key = vec![p.date.year as u64];
    key.extend(p.date.month.map(u64::from));
    key.extend(p.date.day.map(u64::from));
    if let Some(t) = &p.time {
        let offset = tz_minutes(p.offset);
        let minutes = t.hour as i64 * 60 + t.minute.unwrap_or(0) as i64 - offset;
        // Shifting by the offset can cross midnight; fold days into the hour component so the
        // ordering stays right for instants within the same date.
        key.push((minutes.div_euclid(60) + 48) as u64);
        if t.minute.is_some() {
            key.push(minutes.rem_euclid(60) as u64);
        }
        key.extend(t.second.map(u64::from));
        key.extend(t.fraction.map(|f| fraction_units(f, 9)));
    }
    key
}

fn time_key(t: &TimeParts) -> Vec<u64> {
    let mut key = vec![t.hour as u64];
    key.extend(t.minute.map(u64::from));
    key.extend(t.second.map(u64::from));
    key.extend(t.fraction.map(|f| fraction_units(f, 9)));
    key
}

/// Fraction-of-second digits (as written, digits only) in units of 10^-`digits` s: `"5"` at 6
/// digits is 500,000 µs; extra digits are cut.
fn fraction_units(fraction: &str, digits: usize) -> u64 {
    fraction
        .bytes()
        .chain(std::iter::repeat(b'0'))
        .take(digits)
        .fold(0, |acc, b| acc * 10 + u64::from(b - b'0'))
}

/// Minutes east of UTC; a dateTime without an offset is read as UTC.
fn tz_minutes(offset: Option<Offset>) -> i64 {
    offset.map_or(0, |o| i64::from(o.minutes_east()))
}

/// Days since 1970-01-01 of the first day a date (or dateTime's date part) can mean.
pub fn epoch_days(s: &str) -> Option<i32> {
    DateTimeParts::parse(s)?.value.date.epoch_days()
}

/// Microseconds since the Unix epoch (UTC) of the earliest instant a dateTime can mean; a
/// dateTime without timezone is read as UTC.
pub fn epoch_micros(s: &str) -> Option<i64> {
    let p = DateTimeParts::parse(s)?.value;
    let days = i64::from(p.date.epoch_days()?);
    let (h, m, sec, micros) = match &p.time {
        None => (0, 0, 0, 0),
        Some(t) => {
            let micros = t.fraction.map_or(0, |f| fraction_units(f, 6) as i64);
            (
                t.hour as i64,
                t.minute.unwrap_or(0) as i64,
                t.second.unwrap_or(0) as i64,
                micros,
            )
        }
    };
    let offset = tz_minutes(p.offset);
    let seconds = days * 86_400 + h * 3600 + (m - offset) * 60 + sec;
    Some(seconds * 1_000_000 + micros)
}

/// Microseconds since midnight of a time of day.
pub fn time_micros(s: &str) -> Option<i64> {
    let t = parse_time(s)?;
    let micros = t.fraction.map_or(0, |f| fraction_units(f, 6) as i64);
    Some(
        ((t.hour as i64 * 60 + t.minute.unwrap_or(0) as i64) * 60 + t.second.unwrap_or(0) as i64)
            * 1_000_000
            + micros,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cmp::Ordering;

    #[test]
    fn boundaries_follow_the_suite() {
        assert_eq!(
            date_time_boundary_text("2010-10-10", false).unwrap(),
            "2010-10-10T00:00:00.000+14:00"
        );
        assert_eq!(
            date_time_boundary_text("2010-10-10", true).unwrap(),
            "2010-10-10T23:59:59.999-12:00"
        );
        assert_eq!(date_boundary_text("1970-06", false).unwrap(), "1970-06-01");
        assert_eq!(date_boundary_text("1970-06", true).unwrap(), "1970-06-30");
        assert_eq!(date_boundary_text("2024-02", true).unwrap(), "2024-02-29");
        assert_eq!(
            time_boundary_text("12:34:00", false).unwrap(),
            "12:34:00.000"
        );
        assert_eq!(
            time_boundary_text("12:34:00", true).unwrap(),
            "12:34:00.999"
        );
        assert_eq!(decimal_boundary(1.0, 1, false), 0.95);
        assert_eq!(decimal_boundary(1.0, 1, true), 1.05);
        assert_eq!(decimal_boundary(1.587, 3, false), 1.5865);
    }

    #[test]
    fn comparisons_respect_precision() {
        assert_eq!(
            compare_temporal("2010-10-10", "2010-10-10"),
            Some(Ordering::Equal)
        );
        assert_eq!(compare_temporal("2010-10", "2010-10-10"), None);
        assert_eq!(compare_temporal("2009", "2010-10-10"), Some(Ordering::Less));
        assert_eq!(
            compare_temporal("2015-02-07T13:28:17.239+02:00", "2015-02-07T11:28:17.239Z"),
            Some(Ordering::Equal)
        );
        assert_eq!(
            compare_temporal("18:12:00", "18:32:00"),
            Some(Ordering::Less)
        );
    }

    #[test]
    fn legacy_zones_are_still_read() {
        // Zones FHIRPath does not have, read as the views' reader always read them.
        assert_eq!(epoch_micros("1970-01-01T05:00:00Z05:00"), Some(0));
        assert_eq!(epoch_micros("1970-01-01T05:30+05:30:59"), Some(0));
        assert_eq!(epoch_micros("1970-01-01T-01:00"), Some(3_600_000_000));
        assert_eq!(
            date_time_boundary_text("2010-10-10T10Z05:00", true).unwrap(),
            "2010-10-10T10:59:59.999Z05:00"
        );
        assert_eq!(
            compare_temporal("2015-02-07T13:28:17Z02:00", "2015-02-07T11:28:17Z"),
            Some(Ordering::Equal)
        );
        assert!(DateTimeParts::parse("2015-02-07T13:28Z5:00").is_none());
        assert!(DateTimeParts::parse("2015-02-07T13:28+05").is_none());
    }

    #[test]
    fn epoch_conversions() {
        assert_eq!(epoch_days("1970-01-02"), Some(1));
        assert_eq!(epoch_days("2000-03-01"), Some(11_017));
        assert_eq!(epoch_days("2001-02-29"), None);
        assert_eq!(epoch_micros("1970-01-01T00:00:01.5Z"), Some(1_500_000));
        assert_eq!(epoch_micros("1970-01-01T01:00:00+01:00"), Some(0));
        assert_eq!(time_micros("00:00:02"), Some(2_000_000));
    }
}
