//! Date shifting and date generalization, keeping FHIR precision (`YYYY`, `YYYY-MM`, full date,
//! dateTime with its exact time and timezone) so that intervals inside a patient's record are
//! preserved exactly. Also the anonymizer's own date-shift arithmetic for compatibility mode.

use chrono::{Datelike, Days, NaiveDate};

use crate::key::DeidKey;

/// The per-patient offset in days: uniform in `[-n, n]` without 0, from the key and the patient's
/// pseudonym (or, outside any compartment, the resource's own `Type/id`).
pub fn offset_days(key: &DeidKey, scope: &str, n: u32) -> i64 {
    let n = i64::from(n.max(1));
    let h = blake3::keyed_hash(key.date_shift_key(), scope.as_bytes());
    let x = u64::from_le_bytes(h.as_bytes()[..8].try_into().unwrap_or([0; 8]));
    // 2n values: -n..=-1 and 1..=n. The modulo bias of 2^64 % 2n is below 2^-50.
    let r = (x % (2 * n as u64)) as i64 - n;
    if r >= 0 { r + 1 } else { r }
}

/// The date part of a FHIR date/dateTime/instant and the text after it.
fn split(text: &str) -> Option<(Precision, NaiveDate, &str)> {
    let b = text.as_bytes();
    let digits = |r: std::ops::Range<usize>| {
        b.get(r.clone())
            .is_some_and(|s| s.iter().all(u8::is_ascii_digit))
    };
    // Checked digits: read them directly instead of through `str::parse`.
    let number =
        |r: std::ops::Range<usize>| b[r].iter().fold(0u32, |n, d| n * 10 + u32::from(d - b'0'));
    if !digits(0..4) {
        return None;
    }
    let year = number(0..4) as i32;
    if b.len() == 4 {
        return Some((Precision::Year, NaiveDate::from_ymd_opt(year, 7, 1)?, ""));
    }
    if b.get(4) != Some(&b'-') || !digits(5..7) {
        return None;
    }
    let month = number(5..7);
    if b.len() == 7 {
        return Some((
            Precision::Month,
            NaiveDate::from_ymd_opt(year, month, 15)?,
            "",
        ));
    }
    if b.get(7) != Some(&b'-') || !digits(8..10) {
        return None;
    }
    let day = number(8..10);
    let rest = &text[10..];
    // Anything after the day must be a time (and zone): other text is not a FHIR date, and it
    // must not ride along into the output.
    if !(rest.is_empty() || time_len(rest) == Some(rest.len())) {
        return None;
    }
    Some((
        Precision::Day,
        NaiveDate::from_ymd_opt(year, month, day)?,
        rest,
    ))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Precision {
    Year,
    Month,
    Day,
}

fn format(p: Precision, d: NaiveDate, rest: &str) -> String {
    let year = match u32::try_from(d.year()) {
        Ok(y) if y <= 9999 => y,
        _ => return format_slow(p, d, rest),
    };
    // Every shifted date goes through here: digits by hand are several times cheaper than
    // `format!` (same output as `format_slow` for years 0000-9999).
    let mut out = String::with_capacity(10 + rest.len());
    push_digits(&mut out, year, 4);
    if p != Precision::Year {
        out.push('-');
        push_digits(&mut out, d.month(), 2);
    }
    if p == Precision::Day {
        out.push('-');
        push_digits(&mut out, d.day(), 2);
        out.push_str(rest);
    }
    out
}

/// The last `width` decimal digits of `n`, zero-padded.
fn push_digits(out: &mut String, n: u32, width: u32) {
    for i in (0..width).rev() {
        out.push(char::from(b'0' + (n / 10u32.pow(i) % 10) as u8));
    }
}

/// [`format`] for years outside 0000-9999 (signed or longer years).
fn format_slow(p: Precision, d: NaiveDate, rest: &str) -> String {
    match p {
        Precision::Year => format!("{:04}", d.year()),
        Precision::Month => format!("{:04}-{:02}", d.year(), d.month()),
        Precision::Day => format!("{:04}-{:02}-{:02}{rest}", d.year(), d.month(), d.day()),
    }
}

/// Shifts a date, dateTime or instant by `days`, keeping its precision, time and timezone.
/// Year and month precision dates shift their middle (so a year-only date stays in its year for
/// shifts under half a year). `None` if the text is not a FHIR date.
pub fn shift(text: &str, days: i64) -> Option<String> {
    let (p, d, rest) = split(text)?;
    let shifted = if days >= 0 {
        d.checked_add_days(Days::new(days as u64))?
    } else {
        d.checked_sub_days(Days::new(days.unsigned_abs()))?
    };
    Some(format(p, shifted, rest))
}

/// Year of a FHIR date.
pub fn year(text: &str) -> Option<i32> {
    split(text).map(|(_, d, _)| d.year())
}

/// `YYYY` of a date.
pub fn to_year(text: &str) -> Option<String> {
    split(text).map(|(_, d, _)| format!("{:04}", d.year()))
}

/// `YYYY-MM` of a date (or `YYYY` if that is all it has).
pub fn to_month(text: &str) -> Option<String> {
    split(text).map(|(p, d, _)| match p {
        Precision::Year => format!("{:04}", d.year()),
        _ => format!("{:04}-{:02}", d.year(), d.month()),
    })
}

/// Whole years from a birth date to `today` (a year-only date counts from its first day, so the
/// age is never under-estimated for the 90+ rule).
pub fn age_in_years(birth: &str, today: NaiveDate) -> Option<i32> {
    let (p, d, _) = split(birth)?;
    let born = match p {
        Precision::Year => NaiveDate::from_ymd_opt(d.year(), 1, 1)?,
        Precision::Month => NaiveDate::from_ymd_opt(d.year(), d.month(), 1)?,
        Precision::Day => d,
    };
    let mut age = today.year() - born.year();
    if (today.month(), today.day()) < (born.month(), born.day()) {
        age -= 1;
    }
    Some(age)
}

/// The anonymizer's offset: `offset = fold(b -> (offset*131 + b) % 101)` over UTF-8 of
/// `prefix + key`, minus 50, giving `[-50, 50]`.
pub fn ms_offset(prefix: &str, key: &str) -> i64 {
    let mut offset: i64 = 0;
    for b in prefix.bytes().chain(key.bytes()) {
        offset = (offset * 131 + i64::from(b)) % 101;
    }
    offset - 50
}

/// The anonymizer's date shift: the date moves, the time digits become zeros, the zone stays.
/// Like the tool, it reads the leading `YYYY-MM-DD` and ignores what follows unless it is a time
/// (`2001-01-01Z` gives just the shifted date). `None` for dates without a day.
pub fn ms_shift(text: &str, days: i64) -> Option<String> {
    let date = text.get(..10)?;
    let (p, _, _) = split(date)?;
    if p != Precision::Day {
        return None;
    }
    let shifted = shift(date, days)?;
    let rest = &text[10..];
    if !rest.starts_with('T') {
        return Some(shifted);
    }
    // Only the time the tool recognizes is written back; text after it is dropped.
    let rest = &rest[..time_len(rest)?];
    let zeroed: String = rest
        .char_indices()
        .map(|(i, c)| {
            // Zero the time digits, up to the zone designator.
            if c.is_ascii_digit() && !in_zone(rest, i) {
                '0'
            } else {
                c
            }
        })
        .collect();
    Some(format!("{shifted}{zeroed}"))
}

/// Length of the time and zone at the start of `rest` (`T13:28:17.123-05:00`, `T10:00Z`), or
/// `None` when `rest` does not start with one.
fn time_len(rest: &str) -> Option<usize> {
    let b = rest.as_bytes();
    let digits = |r: std::ops::Range<usize>| {
        b.get(r.clone())
            .is_some_and(|s| s.iter().all(u8::is_ascii_digit))
    };
    if b.first() != Some(&b'T') || !digits(1..3) || b.get(3) != Some(&b':') || !digits(4..6) {
        return None;
    }
    let mut i = 6;
    if b.get(6) == Some(&b':') && digits(7..9) {
        i = 9;
        if b.get(9) == Some(&b'.') {
            let frac = b[10..].iter().take_while(|c| c.is_ascii_digit()).count();
            if frac == 0 {
                return None;
            }
            i = 10 + frac;
        }
    }
    match b.get(i) {
        Some(b'Z') => i += 1,
        Some(b'+' | b'-') => {
            if digits(i + 1..i + 3) && b.get(i + 3) == Some(&b':') && digits(i + 4..i + 6) {
                i += 6;
            } else {
                return None;
            }
        }
        _ => {}
    }
    Some(i)
}

fn in_zone(rest: &str, i: usize) -> bool {
    // The zone starts at the last '+' or '-' after the 'T' (or 'Z').
    match rest.rfind(['+', '-']) {
        Some(z) => i > z,
        None => false,
    }
}

/// True when a date is a full date (day precision).
pub fn is_full_date(text: &str) -> bool {
    matches!(split(text), Some((Precision::Day, _, _)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shifting_keeps_precision_time_and_zone() {
        assert_eq!(shift("2015-02-07", -21).unwrap(), "2015-01-17");
        assert_eq!(
            shift("2015-02-07T13:28:17.123-05:00", 30).unwrap(),
            "2015-03-09T13:28:17.123-05:00"
        );
        assert_eq!(
            shift("2015-02-07T13:28:17Z", 1).unwrap(),
            "2015-02-08T13:28:17Z"
        );
        assert_eq!(shift("2015-02", -10).unwrap(), "2015-02");
        assert_eq!(shift("2015-02", -20).unwrap(), "2015-01");
        assert_eq!(shift("2015", 180).unwrap(), "2015");
        assert_eq!(shift("2015", -180).unwrap(), "2015");
        assert!(shift("yesterday", 3).is_none());
        // Text after the time is not a date: nothing of it may survive.
        assert!(shift("1961-03-04T10:00:00 Jane Doe", 3).is_none());
        assert!(shift("2020-01-01Tcall 555-504-7600", 3).is_none());
        assert!(to_year("2020-01-01T10:00:00Z and more").is_none());
        assert_eq!(shift("2015-02-07T13:28", 1).unwrap(), "2015-02-08T13:28");
        assert!(shift("2015-13-01", 3).is_none());
    }

    #[test]
    fn hand_formatting_matches_format() {
        for (y, m, d) in [
            (0, 1, 1),
            (9, 12, 31),
            (1999, 7, 4),
            (2024, 2, 29),
            (9999, 12, 31),
        ] {
            let date = NaiveDate::from_ymd_opt(y, m, d).unwrap();
            for p in [Precision::Year, Precision::Month, Precision::Day] {
                assert_eq!(format(p, date, "T10:00Z"), format_slow(p, date, "T10:00Z"));
            }
        }
        let far = NaiveDate::from_ymd_opt(-1, 12, 31).unwrap();
        assert_eq!(format(Precision::Day, far, ""), "-001-12-31");
        assert_eq!(shift("0000-01-01", -1).unwrap(), "-001-12-31");
    }

    #[test]
    fn offsets_are_in_range_and_never_zero() {
        let key = DeidKey::from_bytes(&[3; 32], "t").unwrap();
        let mut seen_neg = false;
        let mut seen_pos = false;
        for i in 0..2000 {
            let o = offset_days(&key, &format!("p{i}"), 180);
            assert!(o != 0 && (-180..=180).contains(&o));
            seen_neg |= o < 0;
            seen_pos |= o > 0;
        }
        assert!(seen_neg && seen_pos);
        assert_eq!(offset_days(&key, "p1", 1).abs(), 1);
    }

    #[test]
    fn anonymizer_vectors() {
        assert_eq!(ms_offset("", "dummy"), -21);
        assert_eq!(ms_offset("example", "123"), 41);
        assert_eq!(
            ms_shift("2015-02-07T13:28:17-05:00", -21).unwrap(),
            "2015-01-17T00:00:00-05:00"
        );
        assert_eq!(
            ms_shift("2015-02-07T13:28:17Z", -21).unwrap(),
            "2015-01-17T00:00:00Z"
        );
        assert_eq!(
            ms_shift("2015-02-07T13:28:17.12345-05:00", -21).unwrap(),
            "2015-01-17T00:00:00.00000-05:00"
        );
        assert_eq!(ms_shift("2001-01-01Z", 41).unwrap(), "2001-02-11");
        assert_eq!(
            ms_shift("2015-02-07T13:28:17Z Jane Doe", -21).unwrap(),
            "2015-01-17T00:00:00Z"
        );
        assert_eq!(ms_shift("2015-02-07Tcall 555", -21), None);
        assert_eq!(ms_shift("2015-02", 41), None);
        assert_eq!(ms_shift("2015-02-30", 41), None);
    }

    #[test]
    fn ages() {
        let today = NaiveDate::from_ymd_opt(2026, 11, 25).unwrap();
        assert_eq!(age_in_years("1936-11-25", today), Some(90));
        assert_eq!(age_in_years("1936-11-26", today), Some(89));
        assert_eq!(age_in_years("1936", today), Some(90));
    }
}
