//! Date shifting and date generalization, keeping FHIR precision (`YYYY`, `YYYY-MM`, full date,
//! dateTime with its exact time and timezone) so that intervals inside a patient's record are
//! preserved exactly. Also the anonymizer's own date-shift arithmetic for compatibility mode.

use chrono::{Datelike, Days, NaiveDate};
use fhirlake_fhir::datetime::{Date, DateTime, Precision, Time};

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

/// A FHIR date, dateTime or instant as the de-identifier reads it: a date of any precision that
/// exists in the calendar, or a full date with `Thh:mm`, optional seconds and fraction, and an
/// optional offset. The time's digits are not range-checked (a shift keeps them as written).
/// Anything after that is not a FHIR date, and it must not ride along into the output.
fn read(text: &str) -> Option<DateTime<'_>> {
    let (value, rest) = DateTime::scan(text)?;
    let time_ok = value.time.is_none_or(|time| time.minute.is_some());
    (rest.is_empty() && time_ok && value.date.is_valid()).then_some(value)
}

/// The day a date is shifted from: year and month precision dates shift their middle (1 July,
/// the 15th).
fn anchor(date: &Date) -> Option<NaiveDate> {
    match date.precision() {
        Precision::Year => NaiveDate::from_ymd_opt(date.year, 7, 1),
        Precision::Month => NaiveDate::from_ymd_opt(date.year, date.month?.into(), 15),
        _ => date.first_day(),
    }
}

/// Shifts a date, dateTime or instant by `days`, keeping its precision, time and timezone.
/// Year and month precision dates shift their middle (so a year-only date stays in its year for
/// shifts under half a year). `None` if the text is not a FHIR date.
pub fn shift(text: &str, days: i64) -> Option<String> {
    let value = read(text)?;
    let d = anchor(&value.date)?;
    let shifted = if days >= 0 {
        d.checked_add_days(Days::new(days as u64))?
    } else {
        d.checked_sub_days(Days::new(days.unsigned_abs()))?
    };
    let mut out = String::with_capacity(text.len() + 1);
    Date::from_naive(shifted, value.date.precision()).write_to(&mut out);
    // The time and zone are kept as written: `read` took the whole text, and the date is its
    // first ten characters (what `DateTime::write_to` would give back, without re-writing it).
    if value.time.is_some() {
        out.push_str(&text[10..]);
    }
    Some(out)
}

/// Year of a FHIR date.
pub fn year(text: &str) -> Option<i32> {
    read(text).map(|v| v.date.year)
}

/// `YYYY` of a date.
pub fn to_year(text: &str) -> Option<String> {
    read(text).map(|v| {
        written(Date {
            month: None,
            day: None,
            ..v.date
        })
    })
}

/// `YYYY-MM` of a date (or `YYYY` if that is all it has).
pub fn to_month(text: &str) -> Option<String> {
    read(text).map(|v| {
        written(Date {
            day: None,
            ..v.date
        })
    })
}

/// The date as FHIR writes it (one allocation; `to_string` would take two).
fn written(date: Date) -> String {
    let mut out = String::with_capacity(7);
    date.write_to(&mut out);
    out
}

/// Whole years from a birth date to `today` (a year-only date counts from its first day, so the
/// age is never under-estimated for the 90+ rule).
pub fn age_in_years(birth: &str, today: NaiveDate) -> Option<i32> {
    let born = read(birth)?.date.first_day()?;
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
    if !is_full_date(date) {
        return None;
    }
    let shifted = shift(date, days)?;
    if !text[10..].starts_with('T') {
        return Some(shifted);
    }
    // Only the time the tool recognizes is written back; text after it is dropped.
    let (value, after) = DateTime::scan(text)?;
    let time = value.time.filter(|time| time.minute.is_some())?;
    // The tool's pattern fails, rather than stops, at a dot without digits after the seconds
    // or at an offset sign without `hh:mm`.
    let stopped_short = value.offset.is_none()
        && (after.starts_with(['+', '-'])
            || (time.second.is_some() && time.fraction.is_none() && after.starts_with('.')));
    if stopped_short {
        return None;
    }
    let zeros = time.fraction.map(|f| "0".repeat(f.len()));
    let zeroed = Time {
        hour: 0,
        minute: Some(0),
        second: time.second.map(|_| 0),
        fraction: zeros.as_deref(),
    };
    let mut out = shifted;
    out.push('T');
    zeroed.write_to(&mut out);
    if let Some(offset) = value.offset {
        offset.write_to(&mut out);
    }
    Some(out)
}

/// True when a date is a full date (day precision).
pub fn is_full_date(text: &str) -> bool {
    read(text).is_some_and(|v| v.date.day.is_some())
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
        // The hand-written digits moved to fhirlake_fhir::datetime (tested there); a shift by 0
        // days goes through them and must give what `format!` gives.
        for (y, m, d) in [
            (0, 1, 1),
            (9, 12, 31),
            (1999, 7, 4),
            (2024, 2, 29),
            (9999, 12, 31),
        ] {
            let year = format!("{y:04}");
            let month = format!("{y:04}-{m:02}");
            let day = format!("{y:04}-{m:02}-{d:02}T10:00Z");
            for text in [year, month, day] {
                assert_eq!(shift(&text, 0).unwrap(), text);
            }
        }
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
