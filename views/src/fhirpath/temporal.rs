//! Partial dates, dateTimes and times as FHIR writes them (`2010`, `2010-10`, `2010-10-10T10:00Z`,
//! `12:34`), their comparison precision, and `lowBoundary()` / `highBoundary()`.

/// The parts of a FHIR date or dateTime, each present down to its precision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DateTimeParts<'a> {
    /// Year.
    pub year: u32,
    /// Month 1-12.
    pub month: Option<u32>,
    /// Day 1-31.
    pub day: Option<u32>,
    /// The time, if any.
    pub time: Option<TimeParts<'a>>,
    /// `Z` or `+hh:mm` / `-hh:mm`, as written.
    pub tz: Option<&'a str>,
}

/// The parts of a time of day.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TimeParts<'a> {
    /// Hour.
    pub hour: u32,
    /// Minute.
    pub minute: Option<u32>,
    /// Second.
    pub second: Option<u32>,
    /// Fraction digits as written (without the dot).
    pub fraction: Option<&'a str>,
}

fn number(s: &str, digits: usize, max: u32) -> Option<u32> {
    if s.len() != digits || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok().filter(|v| *v <= max)
}

/// An optional two-digit component: `Some(None)` when absent, `None` when malformed.
fn optional(part: Option<&str>, max: u32) -> Option<Option<u32>> {
    match part {
        None => Some(None),
        Some(p) => number(p, 2, max).map(Some),
    }
}

/// Parses `hh[:mm[:ss[.fff]]]`.
pub fn parse_time(s: &str) -> Option<TimeParts<'_>> {
    let mut parts = s.splitn(3, ':');
    let hour = number(parts.next()?, 2, 23)?;
    let minute = optional(parts.next(), 59)?;
    let (second, fraction) = match parts.next() {
        None => (None, None),
        Some(sec) => {
            let (whole, fraction) = match sec.split_once('.') {
                Some((whole, fraction)) => {
                    if fraction.is_empty() || !fraction.bytes().all(|b| b.is_ascii_digit()) {
                        return None;
                    }
                    (whole, Some(fraction))
                }
                None => (sec, None),
            };
            (Some(number(whole, 2, 60)?), fraction)
        }
    };
    Some(TimeParts {
        hour,
        minute,
        second,
        fraction,
    })
}

impl<'a> DateTimeParts<'a> {
    /// Parses a FHIR date or dateTime of any precision.
    pub fn parse(s: &'a str) -> Option<Self> {
        let (date, rest) = match s.split_once('T') {
            Some((date, rest)) => (date, Some(rest)),
            None => (s, None),
        };
        let mut parts = date.split('-');
        let year = number(parts.next()?, 4, 9999)?;
        let month = optional(parts.next(), 12)?;
        let day = optional(parts.next(), 31)?;
        if parts.next().is_some() || month == Some(0) || day == Some(0) {
            return None;
        }
        let (time, tz) = match rest {
            None => (None, None),
            Some(rest) => {
                day?;
                let split = rest.find(['Z', '+', '-']);
                let (time, tz) = match split {
                    Some(i) => (&rest[..i], Some(&rest[i..])),
                    None => (rest, None),
                };
                if let Some(tz) = tz
                    && tz != "Z"
                    && parse_time(&tz[1..])
                        .filter(|t| t.minute.is_some())
                        .is_none()
                {
                    return None;
                }
                let time = if time.is_empty() {
                    None
                } else {
                    Some(parse_time(time)?)
                };
                (time, tz)
            }
        };
        Some(Self {
            year,
            month,
            day,
            time,
            tz,
        })
    }

    /// How many components are present (year = 1 ... second = 6, fraction = 7).
    pub fn precision(&self) -> u8 {
        let date = 1 + u8::from(self.month.is_some()) + u8::from(self.day.is_some());
        match &self.time {
            None => date,
            Some(t) => date + t.precision(),
        }
    }
}

impl TimeParts<'_> {
    /// Components present (hour = 1 ... fraction = 4).
    pub fn precision(&self) -> u8 {
        1 + u8::from(self.minute.is_some())
            + u8::from(self.second.is_some())
            + u8::from(self.fraction.is_some())
    }

    fn boundary(&self, high: bool) -> String {
        let fill = |v: Option<u32>, max: u32| v.unwrap_or(if high { max } else { 0 });
        let fraction = match &self.fraction {
            Some(f) => {
                let mut f = f.to_string();
                while f.len() < 3 {
                    f.push(if high { '9' } else { '0' });
                }
                f
            }
            None if high => "999".to_string(),
            None => "000".to_string(),
        };
        let minute = fill(self.minute, 59);
        let second = fill(self.second, 59);
        format!("{:02}:{:02}:{:02}.{}", self.hour, minute, second, fraction)
    }
}

fn days_in_month(year: u32, month: u32) -> u32 {
    match month {
        4 | 6 | 9 | 11 => 30,
        2 if (year.is_multiple_of(4) && !year.is_multiple_of(100)) || year.is_multiple_of(400) => {
            29
        }
        2 => 28,
        _ => 31,
    }
}

fn date_boundary(parts: &DateTimeParts, high: bool) -> String {
    let month = parts.month.unwrap_or(if high { 12 } else { 1 });
    let day = match parts.day {
        Some(day) => day,
        None if high => days_in_month(parts.year, month),
        None => 1,
    };
    format!("{:04}-{:02}-{:02}", parts.year, month, day)
}

/// `lowBoundary()` / `highBoundary()` of a date: the first / last day it can mean.
pub fn date_boundary_text(s: &str, high: bool) -> Option<String> {
    let parts = DateTimeParts::parse(s)?;
    if parts.time.is_some() {
        return None;
    }
    Some(date_boundary(&parts, high))
}

/// `lowBoundary()` / `highBoundary()` of a dateTime: the earliest / latest instant it can mean,
/// to the millisecond; without a timezone the widest offsets (+14:00 / -12:00) apply.
pub fn date_time_boundary_text(s: &str, high: bool) -> Option<String> {
    let parts = DateTimeParts::parse(s)?;
    let time = parts.time.clone().unwrap_or(TimeParts {
        hour: if high { 23 } else { 0 },
        minute: None,
        second: None,
        fraction: None,
    });
    let tz = parts.tz.unwrap_or(if high { "-12:00" } else { "+14:00" });
    Some(format!(
        "{}T{}{}",
        date_boundary(&parts, high),
        time.boundary(high),
        tz
    ))
}

/// `lowBoundary()` / `highBoundary()` of a time.
pub fn time_boundary_text(s: &str, high: bool) -> Option<String> {
    Some(parse_time(s)?.boundary(high))
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
fn sort_key(p: &DateTimeParts) -> Vec<u64> {
    let mut key = vec![p.year as u64];
    key.extend(p.month.map(u64::from));
    key.extend(p.day.map(u64::from));
    if let Some(t) = &p.time {
        let offset = p.tz.map(tz_minutes).unwrap_or(0);
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

fn tz_minutes(tz: &str) -> i64 {
    if tz == "Z" {
        return 0;
    }
    let sign = if tz.starts_with('-') { -1 } else { 1 };
    let t = parse_time(&tz[1..]);
    t.map_or(0, |t| {
        sign * (t.hour as i64 * 60 + t.minute.unwrap_or(0) as i64)
    })
}

/// Days since 1970-01-01 of the first day a date (or dateTime's date part) can mean.
pub fn epoch_days(s: &str) -> Option<i32> {
    let p = DateTimeParts::parse(s)?;
    let date = chrono_like_days(p.year as i32, p.month.unwrap_or(1), p.day.unwrap_or(1))?;
    Some(date)
}

/// Microseconds since the Unix epoch (UTC) of the earliest instant a dateTime can mean; a
/// dateTime without timezone is read as UTC.
pub fn epoch_micros(s: &str) -> Option<i64> {
    let p = DateTimeParts::parse(s)?;
    let days = chrono_like_days(p.year as i32, p.month.unwrap_or(1), p.day.unwrap_or(1))? as i64;
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
    let offset = p.tz.map(tz_minutes).unwrap_or(0);
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

/// Days from the civil date to 1970-01-01 (Howard Hinnant's algorithm), validating the day.
fn chrono_like_days(year: i32, month: u32, day: u32) -> Option<i32> {
    if day > days_in_month(year as u32, month) {
        return None;
    }
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month as i32 + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day as i32 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    Some(era * 146_097 + doe - 719_468)
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
    fn epoch_conversions() {
        assert_eq!(epoch_days("1970-01-02"), Some(1));
        assert_eq!(epoch_days("2000-03-01"), Some(11_017));
        assert_eq!(epoch_days("2001-02-29"), None);
        assert_eq!(epoch_micros("1970-01-01T00:00:01.5Z"), Some(1_500_000));
        assert_eq!(epoch_micros("1970-01-01T01:00:00+01:00"), Some(0));
        assert_eq!(time_micros("00:00:02"), Some(2_000_000));
    }
}
