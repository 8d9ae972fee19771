//! FHIR `date`, `dateTime`, `instant` and `time`, read once: partial dates (`2010`, `2010-10`),
//! times to any precision, the UTC offset as written, the lowest / highest instant a partial
//! value stands for, conversion to chrono, and formatting back with the same precision and
//! offset.
//!
//! The module has two layers.
//!
//! * **Scanners** ([`Date::scan`], [`Time::scan`], [`Offset::scan`], [`DateTime::scan`]) read the
//!   longest well-formed prefix of a text and hand back what follows. They check the shape and the
//!   month (01-12) and day (01-31) numbers; whether the day exists in its month
//!   ([`Date::is_valid`]), whether the time is a time of day ([`Time::is_valid`]) and whether the
//!   offset is one R4 allows ([`Offset::is_valid`]) are separate checks, so a reader that keeps an
//!   older, looser reading (the SQL functions, the de-identifier) says exactly which checks it
//!   makes.
//! * **Readers** apply a grammar on top: R4's ([`Date::parse`], [`DateTime::parse`],
//!   [`DateTime::parse_instant`], [`Time::parse`]) and FHIRPath's, where a time may stop at the
//!   hour or minute and the offset is optional ([`DateTime::parse_fhirpath`],
//!   [`Time::parse_fhirpath`]).
//!
//! Values borrow their fraction-of-second digits from the text they were read from, so reading
//! never allocates and formatting gives back every digit as written.

use std::fmt;

use chrono::{Datelike, FixedOffset, NaiveDate, NaiveTime, TimeZone};

/// How far a value is written down, from the year to the fraction of a second.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Precision {
    /// `YYYY`.
    Year,
    /// `YYYY-MM`.
    Month,
    /// `YYYY-MM-DD`.
    Day,
    /// `hh`, FHIRPath only.
    Hour,
    /// `hh:mm`, FHIRPath only.
    Minute,
    /// `hh:mm:ss`.
    Second,
    /// `hh:mm:ss.f...`.
    Fraction,
}

/// Which end of the span a partial value stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Boundary {
    /// The earliest moment (FHIRPath `lowBoundary()`).
    Low,
    /// The latest moment (FHIRPath `highBoundary()`).
    High,
}

impl Boundary {
    fn is_high(self) -> bool {
        self == Boundary::High
    }
}

/// A calendar date to year, month or day precision. A `day` is only meaningful with a `month`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Date {
    /// The year; read from four digits (0000-9999), any year when built by hand (a date shifted
    /// across year 0 or 9999 formats as chrono's `{:04}` does, `-001`, `10000`).
    pub year: i32,
    /// Month 1-12, when written.
    pub month: Option<u8>,
    /// Day 1-31, when written.
    pub day: Option<u8>,
}

/// A time of day to hour, minute, second or fraction precision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Time<'a> {
    /// Hour (two digits as written; 0-23 when [`Time::is_valid`]).
    pub hour: u8,
    /// Minute, when written.
    pub minute: Option<u8>,
    /// Second (60 is a leap second), when written.
    pub second: Option<u8>,
    /// Fraction-of-second digits as written, without the dot (one digit or more).
    pub fraction: Option<&'a str>,
}

/// A UTC offset as written: `Z`, or `+hh:mm` / `-hh:mm` (`-00:00` stays `-00:00`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Offset {
    /// `Z`.
    Utc,
    /// `+hh:mm` or `-hh:mm`.
    Fixed {
        /// Written with `-` (west of UTC).
        negative: bool,
        /// Hours (two digits as written).
        hours: u8,
        /// Minutes (two digits as written).
        minutes: u8,
    },
}

/// A FHIR `date`, `dateTime` or `instant`: a date, a time when the date has a day, and an offset.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct DateTime<'a> {
    /// The date.
    pub date: Date,
    /// The time of day, if written.
    pub time: Option<Time<'a>>,
    /// The offset, if written. FHIRPath's reading keeps an offset written without a time
    /// (`2010-10-10TZ`); R4's never has one.
    pub offset: Option<Offset>,
}

/// The widest offsets FHIR allows: the earliest a zone-less value can mean is at +14:00, the
/// latest at -12:00.
const EARLIEST_OFFSET: Offset = Offset::Fixed {
    negative: false,
    hours: 14,
    minutes: 0,
};
const LATEST_OFFSET: Offset = Offset::Fixed {
    negative: true,
    hours: 12,
    minutes: 0,
};

/// Two ASCII digits at `at`, as a number.
fn two_digits(b: &[u8], at: usize) -> Option<u8> {
    match b.get(at..at + 2)? {
        [x, y] if x.is_ascii_digit() && y.is_ascii_digit() => Some((x - b'0') * 10 + (y - b'0')),
        _ => None,
    }
}

/// `sep` at `at` followed by two digits.
fn field(b: &[u8], at: usize, sep: u8) -> Option<u8> {
    if b.get(at) == Some(&sep) {
        two_digits(b, at + 1)
    } else {
        None
    }
}

/// Days in `month` (1-12) of `year` in the proleptic Gregorian calendar.
pub fn days_in_month(year: i32, month: u8) -> u8 {
    match month {
        4 | 6 | 9 | 11 => 30,
        2 if (year % 4 == 0 && year % 100 != 0) || year % 400 == 0 => 29,
        2 => 28,
        _ => 31,
    }
}

/// Appends `n` (0-99) as two digits.
fn push_two(out: &mut String, n: u8) {
    out.push(char::from(b'0' + n / 10 % 10));
    out.push(char::from(b'0' + n % 10));
}

/// Fraction digits as nanoseconds: the first nine, padded with `fill`.
fn fraction_nanos(fraction: Option<&str>, fill: u8) -> u32 {
    let digits = fraction.unwrap_or("").bytes();
    digits
        .chain(std::iter::repeat(fill))
        .take(9)
        .fold(0, |acc, d| acc * 10 + u32::from(d - b'0'))
}

impl Date {
    /// Reads `YYYY`, `YYYY-MM` or `YYYY-MM-DD` at the start of `text` and returns what follows.
    /// `None` when `text` does not start with four digits or a written month / day is out of
    /// 01-12 / 01-31; a `-` not followed by two digits ends the date there.
    #[inline]
    pub fn scan(text: &str) -> Option<(Date, &str)> {
        let b = text.as_bytes();
        let year = match b.get(..4)? {
            digits if digits.iter().all(u8::is_ascii_digit) => digits
                .iter()
                .fold(0i32, |n, d| n * 10 + i32::from(d - b'0')),
            _ => return None,
        };
        let mut date = Date {
            year,
            month: None,
            day: None,
        };
        let mut end = 4;
        if let Some(month) = field(b, 4, b'-') {
            if !(1..=12).contains(&month) {
                return None;
            }
            date.month = Some(month);
            end = 7;
            if let Some(day) = field(b, 7, b'-') {
                if !(1..=31).contains(&day) {
                    return None;
                }
                date.day = Some(day);
                end = 10;
            }
        }
        // Everything read is ASCII, so `end` is a character boundary.
        Some((date, &text[end..]))
    }

    /// R4 `date`: `YYYY`, `YYYY-MM` or `YYYY-MM-DD`, year 0001 or later, a day that exists.
    pub fn parse(text: &str) -> Option<Date> {
        let (date, rest) = Date::scan(text)?;
        (rest.is_empty() && date.year >= 1 && date.is_valid()).then_some(date)
    }

    /// How far the date is written.
    #[inline]
    pub fn precision(&self) -> Precision {
        match (self.month, self.day) {
            (None, _) => Precision::Year,
            (Some(_), None) => Precision::Month,
            (Some(_), Some(_)) => Precision::Day,
        }
    }

    /// True when the month is 1-12 and the day exists in it (`2021-02-29` does not).
    #[inline]
    pub fn is_valid(&self) -> bool {
        match (self.month, self.day) {
            (None, None) => true,
            (None, Some(_)) => false,
            (Some(month), day) => {
                (1..=12).contains(&month)
                    && day.is_none_or(|day| day >= 1 && day <= days_in_month(self.year, month))
            }
        }
    }

    /// The date filled out to a day: the first (`Low`) or last (`High`) day it can mean. A written
    /// day is kept as it is.
    pub fn boundary(&self, boundary: Boundary) -> Date {
        let high = boundary.is_high();
        let month = self.month.unwrap_or(if high { 12 } else { 1 });
        let day = match self.day {
            Some(day) => day,
            None if high => days_in_month(self.year, month),
            None => 1,
        };
        Date {
            year: self.year,
            month: Some(month),
            day: Some(day),
        }
    }

    /// The first day the date can mean (`2010` is 2010-01-01); `None` when it is not a calendar
    /// date.
    #[inline]
    pub fn first_day(&self) -> Option<NaiveDate> {
        let month = self.month.unwrap_or(1);
        NaiveDate::from_ymd_opt(self.year, month.into(), self.day.unwrap_or(1).into())
    }

    /// The last day the date can mean (`2024-02` is 2024-02-29).
    pub fn last_day(&self) -> Option<NaiveDate> {
        self.first_day()?;
        let last = self.boundary(Boundary::High);
        NaiveDate::from_ymd_opt(last.year, last.month?.into(), last.day?.into())
    }

    /// Days from 1970-01-01 to the first day the date can mean (Arrow's `Date32`); `None` when it
    /// is not a calendar date.
    pub fn epoch_days(&self) -> Option<i32> {
        let epoch = NaiveDate::from_ymd_opt(1970, 1, 1)?;
        i32::try_from(self.first_day()?.signed_duration_since(epoch).num_days()).ok()
    }

    /// `date` written to `precision` (Year, Month or Day; finer precisions give Day).
    #[inline]
    pub fn from_naive(date: NaiveDate, precision: Precision) -> Date {
        Date {
            year: date.year(),
            month: (precision >= Precision::Month).then(|| date.month() as u8),
            day: (precision >= Precision::Day).then(|| date.day() as u8),
        }
    }

    /// Appends the date as FHIR writes it, to its precision.
    pub fn write_to(&self, out: &mut String) {
        match u32::try_from(self.year) {
            // Every shifted date comes through here: digits by hand are several times cheaper
            // than `format!` (same output for years 0000-9999).
            Ok(year) if year <= 9999 => {
                push_two(out, (year / 100) as u8);
                push_two(out, (year % 100) as u8);
            }
            _ => out.push_str(&format!("{:04}", self.year)),
        }
        if let Some(month) = self.month {
            out.push('-');
            push_two(out, month);
            if let Some(day) = self.day {
                out.push('-');
                push_two(out, day);
            }
        }
    }
}

impl<'a> Time<'a> {
    /// Reads `hh`, `hh:mm`, `hh:mm:ss` or `hh:mm:ss.f...` at the start of `text` and returns what
    /// follows; `None` unless `text` starts with two digits. The digits are not range-checked
    /// (see [`Time::is_valid`]); a `:` or `.` not followed by digits ends the time there.
    #[inline]
    pub fn scan(text: &'a str) -> Option<(Time<'a>, &'a str)> {
        let b = text.as_bytes();
        let mut time = Time {
            hour: two_digits(b, 0)?,
            minute: None,
            second: None,
            fraction: None,
        };
        let mut end = 2;
        if let Some(minute) = field(b, 2, b':') {
            time.minute = Some(minute);
            end = 5;
            if let Some(second) = field(b, 5, b':') {
                time.second = Some(second);
                end = 8;
                if b.get(8) == Some(&b'.') {
                    let digits = b[9..].iter().take_while(|d| d.is_ascii_digit()).count();
                    if digits > 0 {
                        time.fraction = Some(&text[9..9 + digits]);
                        end = 9 + digits;
                    }
                }
            }
        }
        Some((time, &text[end..]))
    }

    /// R4 `time`: `hh:mm:ss` with an optional fraction, a valid time of day, nothing else.
    pub fn parse(text: &'a str) -> Option<Time<'a>> {
        let (time, rest) = Time::scan(text)?;
        (rest.is_empty() && time.second.is_some() && time.is_valid()).then_some(time)
    }

    /// A FHIRPath time: `hh`, `hh:mm`, `hh:mm:ss` or with a fraction, a valid time of day.
    pub fn parse_fhirpath(text: &'a str) -> Option<Time<'a>> {
        let (time, rest) = Time::scan(text)?;
        (rest.is_empty() && time.is_valid()).then_some(time)
    }

    /// How far the time is written.
    pub fn precision(&self) -> Precision {
        match (self.minute, self.second, self.fraction) {
            (None, _, _) => Precision::Hour,
            (Some(_), None, _) => Precision::Minute,
            (Some(_), Some(_), None) => Precision::Second,
            (Some(_), Some(_), Some(_)) => Precision::Fraction,
        }
    }

    /// True for a time of day: hour 0-23, minute 0-59, second 0-60 (60 is a leap second).
    pub fn is_valid(&self) -> bool {
        self.hour <= 23
            && self.minute.is_none_or(|m| m <= 59)
            && self.second.is_none_or(|s| s <= 60)
    }

    /// The time filled out to milliseconds, `hh:mm:ss.fff`: missing parts are 0 (`Low`) or their
    /// largest value (`High`); fraction digits beyond three are kept as written.
    pub fn boundary_text(&self, boundary: Boundary) -> String {
        let high = boundary.is_high();
        let fill = |v: Option<u8>| v.unwrap_or(if high { 59 } else { 0 });
        let mut out = String::with_capacity(12);
        push_two(&mut out, self.hour);
        out.push(':');
        push_two(&mut out, fill(self.minute));
        out.push(':');
        push_two(&mut out, fill(self.second));
        out.push('.');
        let fraction = self.fraction.unwrap_or("");
        out.push_str(fraction);
        for _ in fraction.len()..3 {
            out.push(if high { '9' } else { '0' });
        }
        out
    }

    /// The earliest (`Low`) or latest (`High`) time of day it can mean, to the nanosecond; a
    /// leap second is chrono's leap second. `None` when it is not a time of day.
    pub fn to_naive(&self, boundary: Boundary) -> Option<NaiveTime> {
        if !self.is_valid() {
            return None;
        }
        let high = boundary.is_high();
        let fill = |v: Option<u8>| u32::from(v.unwrap_or(if high { 59 } else { 0 }));
        let nanos = match (self.second, self.fraction) {
            (None, _) if high => 999_999_999,
            (_, fraction) => fraction_nanos(fraction, if high { b'9' } else { b'0' }),
        };
        let (second, leap) = match fill(self.second) {
            60 => (59, 1_000_000_000),
            s => (s, 0),
        };
        NaiveTime::from_hms_nano_opt(self.hour.into(), fill(self.minute), second, nanos + leap)
    }

    /// Appends the time as written (without a leading `T`).
    pub fn write_to(&self, out: &mut String) {
        push_two(out, self.hour);
        if let Some(minute) = self.minute {
            out.push(':');
            push_two(out, minute);
            if let Some(second) = self.second {
                out.push(':');
                push_two(out, second);
                if let Some(fraction) = self.fraction {
                    out.push('.');
                    out.push_str(fraction);
                }
            }
        }
    }
}

impl Offset {
    /// Reads `Z`, `+hh:mm` or `-hh:mm` at the start of `text`; no offset (and `text` unread) when
    /// it starts with anything else, including a sign not followed by `hh:mm`. The digits are
    /// not range-checked (see [`Offset::is_valid`]).
    #[inline]
    pub fn scan(text: &str) -> (Option<Offset>, &str) {
        let b = text.as_bytes();
        match b.first() {
            Some(b'Z') => (Some(Offset::Utc), &text[1..]),
            Some(&sign @ (b'+' | b'-')) => match (two_digits(b, 1), field(b, 3, b':')) {
                (Some(hours), Some(minutes)) => (
                    Some(Offset::Fixed {
                        negative: sign == b'-',
                        hours,
                        minutes,
                    }),
                    &text[6..],
                ),
                _ => (None, text),
            },
            _ => (None, text),
        }
    }

    /// True for an offset R4 allows: `Z`, or -13:59 to +13:59 and ±14:00.
    pub fn is_valid(&self) -> bool {
        match *self {
            Offset::Utc => true,
            Offset::Fixed { hours, minutes, .. } => {
                (hours <= 13 && minutes <= 59) || (hours == 14 && minutes == 0)
            }
        }
    }

    /// Minutes east of UTC (`-05:00` is -300).
    pub fn minutes_east(&self) -> i32 {
        match *self {
            Offset::Utc => 0,
            Offset::Fixed {
                negative,
                hours,
                minutes,
            } => {
                let minutes = i32::from(hours) * 60 + i32::from(minutes);
                if negative { -minutes } else { minutes }
            }
        }
    }

    /// The offset as chrono's; `None` beyond a day.
    pub fn to_fixed(&self) -> Option<FixedOffset> {
        FixedOffset::east_opt(self.minutes_east() * 60)
    }

    /// Appends the offset as written.
    pub fn write_to(&self, out: &mut String) {
        match *self {
            Offset::Utc => out.push('Z'),
            Offset::Fixed {
                negative,
                hours,
                minutes,
            } => {
                out.push(if negative { '-' } else { '+' });
                push_two(out, hours);
                out.push(':');
                push_two(out, minutes);
            }
        }
    }
}

impl<'a> DateTime<'a> {
    /// Reads a date at the start of `text`, then, when the date has a day, `T` and a time (see
    /// [`Time::scan`]) and an offset (see [`Offset::scan`]); returns what follows. A `T` not
    /// followed by two digits is left unread.
    #[inline]
    pub fn scan(text: &'a str) -> Option<(DateTime<'a>, &'a str)> {
        let (date, rest) = Date::scan(text)?;
        let mut value = DateTime {
            date,
            time: None,
            offset: None,
        };
        if date.day.is_none() {
            return Some((value, rest));
        }
        let Some((time, after_time)) = rest.strip_prefix('T').and_then(Time::scan) else {
            return Some((value, rest));
        };
        value.time = Some(time);
        let (offset, rest) = Offset::scan(after_time);
        value.offset = offset;
        Some((value, rest))
    }

    /// R4 `dateTime`: a date of any precision (year 0001 or later, a day that exists), or a full
    /// date with `Thh:mm:ss`, an optional fraction and a required offset.
    pub fn parse(text: &'a str) -> Option<DateTime<'a>> {
        let (value, rest) = DateTime::scan(text)?;
        let time_ok = match value.time {
            None => value.offset.is_none(),
            Some(time) => {
                time.second.is_some()
                    && time.is_valid()
                    && value.offset.is_some_and(|o| o.is_valid())
            }
        };
        (rest.is_empty() && time_ok && value.date.year >= 1 && value.date.is_valid())
            .then_some(value)
    }

    /// R4 `instant`: a `dateTime` written to the second (or finer) with its offset.
    pub fn parse_instant(text: &'a str) -> Option<DateTime<'a>> {
        DateTime::parse(text).filter(|v| v.time.is_some())
    }

    /// A FHIRPath date or dateTime (without the `@`): a date of any precision, or a full date, `T`
    /// and optionally a time to any precision and an offset (hours up to 23). The day is checked
    /// against 01-31 only, as FHIRPath's grammar does; the time must be a time of day.
    pub fn parse_fhirpath(text: &'a str) -> Option<DateTime<'a>> {
        let (date, rest) = Date::scan(text)?;
        let mut value = DateTime {
            date,
            time: None,
            offset: None,
        };
        if rest.is_empty() {
            return Some(value);
        }
        let rest = rest.strip_prefix('T')?;
        date.day?;
        let rest = match rest.as_bytes().first() {
            None | Some(b'Z' | b'+' | b'-') => rest,
            Some(_) => {
                let (time, rest) = Time::scan(rest).filter(|(t, _)| t.is_valid())?;
                value.time = Some(time);
                rest
            }
        };
        let (offset, rest) = Offset::scan(rest);
        let offset_ok = offset.is_none_or(|o| match o {
            Offset::Utc => true,
            Offset::Fixed { hours, minutes, .. } => hours <= 23 && minutes <= 59,
        });
        value.offset = offset;
        (rest.is_empty() && offset_ok).then_some(value)
    }

    /// How far the value is written.
    pub fn precision(&self) -> Precision {
        match &self.time {
            None => self.date.precision(),
            Some(time) => time.precision(),
        }
    }

    /// FHIRPath `lowBoundary()` / `highBoundary()` of a dateTime as text,
    /// `YYYY-MM-DDThh:mm:ss.fff` and an offset: the date and time filled out (see
    /// [`Date::boundary`], [`Time::boundary_text`]; no time is 00 / 23 o'clock) and, without an
    /// offset, the widest ones (+14:00 for `Low`, -12:00 for `High`).
    pub fn boundary_text(&self, boundary: Boundary) -> String {
        let high = boundary.is_high();
        let time = self.time.unwrap_or(Time {
            hour: if high { 23 } else { 0 },
            minute: None,
            second: None,
            fraction: None,
        });
        let offset = self
            .offset
            .unwrap_or(if high { LATEST_OFFSET } else { EARLIEST_OFFSET });
        let mut out = String::with_capacity(29);
        self.date.boundary(boundary).write_to(&mut out);
        out.push('T');
        out.push_str(&time.boundary_text(boundary));
        offset.write_to(&mut out);
        out
    }

    /// The earliest (`Low`) or latest (`High`) instant the value can mean, to the nanosecond;
    /// without an offset the widest offsets apply (+14:00 / -12:00). `None` when the date or time
    /// is not a calendar one.
    pub fn instant(&self, boundary: Boundary) -> Option<chrono::DateTime<FixedOffset>> {
        let high = boundary.is_high();
        let day = if high {
            self.date.last_day()?
        } else {
            self.date.first_day()?
        };
        let time = match &self.time {
            Some(time) => time.to_naive(boundary)?,
            None if high => NaiveTime::from_hms_nano_opt(23, 59, 59, 999_999_999)?,
            None => NaiveTime::MIN,
        };
        let offset = self
            .offset
            .unwrap_or(if high { LATEST_OFFSET } else { EARLIEST_OFFSET });
        offset
            .to_fixed()?
            .from_local_datetime(&day.and_time(time))
            .single()
    }

    /// Appends the value as written: its date, `T` and its time when it has one, its offset.
    pub fn write_to(&self, out: &mut String) {
        self.date.write_to(out);
        if let Some(time) = &self.time {
            out.push('T');
            time.write_to(out);
        } else if self.offset.is_some() {
            out.push('T');
        }
        if let Some(offset) = &self.offset {
            offset.write_to(out);
        }
    }
}

macro_rules! display_by_write_to {
    ($($ty:ty),*) => {$(
        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                let mut out = String::new();
                self.write_to(&mut out);
                f.write_str(&out)
            }
        }
    )*};
}

display_by_write_to!(Date, Time<'_>, Offset, DateTime<'_>);

#[cfg(test)]
mod tests;
