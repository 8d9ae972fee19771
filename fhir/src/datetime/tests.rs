use super::*;
use proptest::prelude::*;

fn text<T: fmt::Display>(value: T) -> String {
    value.to_string()
}

fn date(year: i32, month: Option<u8>, day: Option<u8>) -> Date {
    Date { year, month, day }
}

fn time(hour: u8, minute: Option<u8>, second: Option<u8>, fraction: Option<&str>) -> Time<'_> {
    Time {
        hour,
        minute,
        second,
        fraction,
    }
}

fn fixed(negative: bool, hours: u8, minutes: u8) -> Offset {
    Offset::Fixed {
        negative,
        hours,
        minutes,
    }
}

#[test]
fn r4_dates_of_each_precision() {
    assert_eq!(Date::parse("2010"), Some(date(2010, None, None)));
    assert_eq!(Date::parse("2010-06"), Some(date(2010, Some(6), None)));
    assert_eq!(
        Date::parse("2010-06-30"),
        Some(date(2010, Some(6), Some(30)))
    );
    assert_eq!(
        Date::parse("2024-02-29").map(text).as_deref(),
        Some("2024-02-29")
    );
    for bad in [
        "",
        "201",
        "20100",
        "2010-6",
        "2010-13",
        "2010-00",
        "2010-06-31",
        "2023-02-29",
        "1900-02-29",
        "2010-06-00",
        "2010-06-1",
        "0000",
        "2010-06-30T10:00:00Z",
        "2010/06",
        "abcd",
        "١٩٧٠",
        " 2010",
    ] {
        assert_eq!(Date::parse(bad), None, "{bad:?}");
    }
    assert_eq!(Date::parse("2010").unwrap().precision(), Precision::Year);
    assert_eq!(
        Date::parse("2010-06").unwrap().precision(),
        Precision::Month
    );
    assert_eq!(
        Date::parse("2010-06-30").unwrap().precision(),
        Precision::Day
    );
}

#[test]
fn r4_date_times_need_seconds_and_an_offset_once_a_time_is_written() {
    let value = DateTime::parse("2015-02-07T13:28:17.239+02:00").unwrap();
    assert_eq!(value.date, date(2015, Some(2), Some(7)));
    assert_eq!(value.time, Some(time(13, Some(28), Some(17), Some("239"))));
    assert_eq!(value.offset, Some(fixed(false, 2, 0)));
    assert_eq!(value.precision(), Precision::Fraction);
    for good in [
        "2015",
        "2015-02",
        "2015-02-07",
        "2015-02-07T13:28:17Z",
        "2015-02-07T13:28:17-00:00",
        "2015-02-07T13:28:60Z",
        "2015-02-07T13:28:17.000000000001+14:00",
        "2015-02-07T00:00:00-13:59",
    ] {
        assert!(DateTime::parse(good).is_some(), "{good:?}");
    }
    for bad in [
        "2015-02-07T13:28:17",
        "2015-02-07T13:28Z",
        "2015-02-07T13Z",
        "2015-02-07T",
        "2015-02-07TZ",
        "2015-02T13:28:17Z",
        "2015T13:28:17Z",
        "2015-02-07T24:00:00Z",
        "2015-02-07T13:60:00Z",
        "2015-02-07T13:28:61Z",
        "2015-02-07T13:28:17.Z",
        "2015-02-07T13:28:17+14:01",
        "2015-02-07T13:28:17+15:00",
        "2015-02-07T13:28:17+05",
        "2015-02-07T13:28:17+0500",
        "2015-02-07T13:28:17Z ",
        "2015-02-07 13:28:17Z",
        "2015-02-30T13:28:17Z",
        "2015-02-07Z",
    ] {
        assert_eq!(DateTime::parse(bad), None, "{bad:?}");
    }
}

#[test]
fn instants_are_full_date_times() {
    assert!(DateTime::parse_instant("2015-02-07T13:28:17.239+02:00").is_some());
    assert!(DateTime::parse_instant("2015-02-07T13:28:17Z").is_some());
    for bad in ["2015", "2015-02", "2015-02-07", "2015-02-07T13:28:17"] {
        assert_eq!(DateTime::parse_instant(bad), None, "{bad:?}");
    }
}

#[test]
fn r4_and_fhirpath_times() {
    assert_eq!(
        Time::parse("12:34:56"),
        Some(time(12, Some(34), Some(56), None))
    );
    assert_eq!(
        Time::parse("12:34:56.5").unwrap().precision(),
        Precision::Fraction
    );
    for bad in [
        "12",
        "12:34",
        "24:00:00",
        "12:34:56.",
        "12:34:56Z",
        "1:34:56",
        "12:3:56",
    ] {
        assert_eq!(Time::parse(bad), None, "{bad:?}");
    }
    assert_eq!(Time::parse_fhirpath("12"), Some(time(12, None, None, None)));
    assert_eq!(
        Time::parse_fhirpath("12:34").unwrap().precision(),
        Precision::Minute
    );
    assert_eq!(
        Time::parse_fhirpath("12").unwrap().precision(),
        Precision::Hour
    );
    for bad in [
        "",
        "1",
        "12:",
        "12:3",
        "12:34:",
        "12:34:56.",
        "23:60",
        "24",
        "12:34:56+01:00",
    ] {
        assert_eq!(Time::parse_fhirpath(bad), None, "{bad:?}");
    }
}

#[test]
fn fhirpath_date_times_may_stop_at_any_component() {
    let hour = DateTime::parse_fhirpath("2015-02-07T13").unwrap();
    assert_eq!(hour.time, Some(time(13, None, None, None)));
    assert_eq!((hour.offset, hour.precision()), (None, Precision::Hour));
    let bare = DateTime::parse_fhirpath("2015-02-07T").unwrap();
    assert_eq!((bare.time, bare.offset), (None, None));
    let zone_only = DateTime::parse_fhirpath("2015-02-07TZ").unwrap();
    assert_eq!(
        (zone_only.time, zone_only.offset),
        (None, Some(Offset::Utc))
    );
    assert_eq!(text(zone_only), "2015-02-07TZ");
    assert!(DateTime::parse_fhirpath("2015-02-07T13:28+23:59").is_some());
    // FHIRPath's grammar is lexical: a day is 01-31 whatever the month.
    assert!(DateTime::parse_fhirpath("2015-02-31").is_some());
    assert!(DateTime::parse_fhirpath("0000").is_some());
    for bad in [
        "",
        "2015T",
        "2015-02T10",
        "2015-02-07x",
        "2015-02-07T25",
        "2015-02-07T13:5",
        "2015-02-07T13:28:17.Z",
        "2015-02-07T13ZZ",
        "2015-02-07T13+05",
        "2015-02-07T13+24:00",
        "2015-02-07T13+05:30:00",
        "2015-02-07T10:00T",
        "2015-02-32",
        "2015-13",
    ] {
        assert_eq!(DateTime::parse_fhirpath(bad), None, "{bad:?}");
    }
}

#[test]
fn scanners_read_the_longest_well_formed_prefix() {
    assert_eq!(Date::scan("1970-3"), Some((date(1970, None, None), "-3")));
    assert_eq!(
        Date::scan("1970-03-05T10:00"),
        Some((date(1970, Some(3), Some(5)), "T10:00"))
    );
    assert_eq!(Date::scan("1970-13-01"), None);
    assert_eq!(Date::scan("1970-12-32"), None);
    assert_eq!(Date::scan("197"), None);
    // The time scanner checks shape, not range.
    assert_eq!(
        Time::scan("99:99x"),
        Some((time(99, Some(99), None, None), "x"))
    );
    assert_eq!(
        Time::scan("10:00:00.Z"),
        Some((time(10, Some(0), Some(0), None), ".Z"))
    );
    assert_eq!(Time::scan("10:0"), Some((time(10, None, None, None), ":0")));
    assert_eq!(Offset::scan("+05"), (None, "+05"));
    assert_eq!(
        Offset::scan("-05:30 rest"),
        (Some(fixed(true, 5, 30)), " rest")
    );
    assert_eq!(Offset::scan("Zulu"), (Some(Offset::Utc), "ulu"));
    let (value, rest) = DateTime::scan("2020-01-01Tcall 555").unwrap();
    assert_eq!((value.time, rest), (None, "Tcall 555"));
    let (value, rest) = DateTime::scan("2020-01-01T10:00:00Z Jane").unwrap();
    assert_eq!(value.offset, Some(Offset::Utc));
    assert_eq!(rest, " Jane");
}

#[test]
fn formatting_gives_back_the_text_as_written() {
    for written in [
        "2015",
        "2015-02",
        "2015-02-07",
        "2015-02-07T13:28:17-00:00",
        "2015-02-07T13:28:17.120000+05:30",
        "2015-02-07T13:28:17Z",
        "2015-02-07T13:28:17.000000000000001Z",
    ] {
        assert_eq!(text(DateTime::parse(written).unwrap()), written);
    }
    for written in [
        "2015-02-07T13",
        "2015-02-07T13:28",
        "2015-02-07T13:28+01:00",
    ] {
        assert_eq!(text(DateTime::parse_fhirpath(written).unwrap()), written);
    }
    assert_eq!(text(Time::parse("01:02:03.4").unwrap()), "01:02:03.4");
}

#[test]
fn hand_formatting_matches_format() {
    // Moved from deid's dates (its hand-written digits now live here).
    for (y, m, d) in [
        (0, 1, 1),
        (9, 12, 31),
        (1999, 7, 4),
        (2024, 2, 29),
        (9999, 12, 31),
    ] {
        let day = NaiveDate::from_ymd_opt(y, m, d).unwrap();
        for p in [Precision::Year, Precision::Month, Precision::Day] {
            let slow = match p {
                Precision::Year => format!("{:04}", day.year()),
                Precision::Month => format!("{:04}-{:02}", day.year(), day.month()),
                _ => format!("{:04}-{:02}-{:02}", day.year(), day.month(), day.day()),
            };
            assert_eq!(text(Date::from_naive(day, p)), slow);
        }
    }
    let far = NaiveDate::from_ymd_opt(-1, 12, 31).unwrap();
    assert_eq!(text(Date::from_naive(far, Precision::Day)), "-001-12-31");
    let far = NaiveDate::from_ymd_opt(10_000, 1, 1).unwrap();
    assert_eq!(text(Date::from_naive(far, Precision::Month)), "10000-01");
}

#[test]
fn boundaries_fill_what_is_not_written() {
    let bound = |s: &str, b| DateTime::parse_fhirpath(s).unwrap().boundary_text(b);
    assert_eq!(
        bound("2010-10-10", Boundary::Low),
        "2010-10-10T00:00:00.000+14:00"
    );
    assert_eq!(
        bound("2010-10-10", Boundary::High),
        "2010-10-10T23:59:59.999-12:00"
    );
    assert_eq!(
        bound("2010", Boundary::High),
        "2010-12-31T23:59:59.999-12:00"
    );
    assert_eq!(
        bound("2024-02", Boundary::High),
        "2024-02-29T23:59:59.999-12:00"
    );
    assert_eq!(
        bound("2010-10-10T10:30Z", Boundary::Low),
        "2010-10-10T10:30:00.000Z"
    );
    assert_eq!(
        bound("2010-10-10T10:30:00.5Z", Boundary::High),
        "2010-10-10T10:30:00.599Z"
    );
    assert_eq!(
        bound("2010-10-10T10:30:00.12345-05:00", Boundary::Low),
        "2010-10-10T10:30:00.12345-05:00"
    );
    assert_eq!(
        text(Date::parse("1970-06").unwrap().boundary(Boundary::High)),
        "1970-06-30"
    );
    assert_eq!(
        text(Date::parse("2023-02").unwrap().boundary(Boundary::High)),
        "2023-02-28"
    );
    assert_eq!(
        text(Date::parse("1970").unwrap().boundary(Boundary::Low)),
        "1970-01-01"
    );
    let t = Time::parse_fhirpath("12:34").unwrap();
    assert_eq!(t.boundary_text(Boundary::Low), "12:34:00.000");
    assert_eq!(t.boundary_text(Boundary::High), "12:34:59.999");
}

#[test]
fn chrono_conversions() {
    let day = |y, m, d| NaiveDate::from_ymd_opt(y, m, d).unwrap();
    let year = Date::parse("2024").unwrap();
    assert_eq!(year.first_day(), Some(day(2024, 1, 1)));
    assert_eq!(year.last_day(), Some(day(2024, 12, 31)));
    assert_eq!(
        Date::parse("2023-02").unwrap().last_day(),
        Some(day(2023, 2, 28))
    );
    assert_eq!(date(2023, Some(2), Some(29)).first_day(), None);
    assert_eq!(date(2023, Some(2), Some(29)).last_day(), None);
    assert_eq!(Date::parse("1970-01-02").unwrap().epoch_days(), Some(1));
    assert_eq!(Date::parse("1969").unwrap().epoch_days(), Some(-365));
    // Hinnant's civil-days figure for 0000-03-01.
    assert_eq!(date(0, Some(3), Some(1)).epoch_days(), Some(-719_468));
    assert_eq!(date(2001, Some(2), Some(29)).epoch_days(), None);

    let value = DateTime::parse("2015-02-07T13:28:17.239+02:00").unwrap();
    let low = value.instant(Boundary::Low).unwrap();
    assert_eq!(low.to_rfc3339(), "2015-02-07T13:28:17.239+02:00");
    let high = value.instant(Boundary::High).unwrap();
    assert_eq!(high.timestamp_subsec_nanos(), 239_999_999);
    let whole_day = DateTime::parse("2015-02-07").unwrap();
    assert_eq!(
        whole_day.instant(Boundary::Low).unwrap().to_rfc3339(),
        "2015-02-07T00:00:00+14:00"
    );
    assert_eq!(
        whole_day.instant(Boundary::High).unwrap().to_rfc3339(),
        "2015-02-07T23:59:59.999999999-12:00"
    );
    let leap = DateTime::parse("2016-12-31T23:59:60Z").unwrap();
    assert!(leap.instant(Boundary::Low).is_some());
    assert_eq!(fixed(true, 5, 30).minutes_east(), -330);
    assert_eq!(
        fixed(false, 14, 0).to_fixed(),
        FixedOffset::east_opt(14 * 3600)
    );
    assert_eq!(
        Time::parse_fhirpath("10").unwrap().to_naive(Boundary::High),
        NaiveTime::from_hms_nano_opt(10, 59, 59, 999_999_999)
    );
    assert_eq!(time(24, Some(0), None, None).to_naive(Boundary::Low), None);
}

fn r4_offset() -> impl Strategy<Value = Offset> {
    prop_oneof![
        Just(Offset::Utc),
        (any::<bool>(), 0u8..=13, 0u8..=59).prop_map(|(n, h, m)| fixed(n, h, m)),
        any::<bool>().prop_map(|n| fixed(n, 14, 0)),
    ]
}

/// A valid date of any precision, year 0001-9999.
fn r4_date() -> impl Strategy<Value = Date> {
    (1i32..=9999, 1u8..=12, 1u8..=31, 0u8..3).prop_map(|(year, month, day, precision)| {
        let day = day.min(days_in_month(year, month));
        match precision {
            0 => date(year, None, None),
            1 => date(year, Some(month), None),
            _ => date(year, Some(month), Some(day)),
        }
    })
}

/// Components of a time (the fraction as owned digits, borrowed by the test body).
fn time_parts() -> impl Strategy<Value = (u8, Option<u8>, Option<u8>, Option<String>)> {
    (
        0u8..=23,
        proptest::option::of(0u8..=59),
        proptest::option::of(0u8..=60),
        proptest::option::of("[0-9]{1,12}"),
    )
}

fn build<'a>(parts: &'a (u8, Option<u8>, Option<u8>, Option<String>)) -> Time<'a> {
    let (hour, minute, second, fraction) = parts;
    // A part is only written when the ones before it are.
    let minute = *minute;
    let second = second.filter(|_| minute.is_some());
    let fraction = fraction.as_deref().filter(|_| second.is_some());
    time(*hour, minute, second, fraction)
}

proptest! {
    #[test]
    fn r4_values_read_back_what_formatting_wrote(
        d in r4_date(),
        parts in time_parts(),
        offset in r4_offset(),
        with_time in any::<bool>(),
    ) {
        prop_assert_eq!(Date::parse(&text(d)), Some(d));
        let mut t = build(&parts);
        t.minute.get_or_insert(0);
        t.second.get_or_insert(0);
        let full = Date { month: d.month.or(Some(1)), day: d.day.or(Some(1)), ..d };
        let value = if with_time {
            DateTime { date: full, time: Some(t), offset: Some(offset) }
        } else {
            DateTime { date: d, time: None, offset: None }
        };
        let written = text(value);
        prop_assert_eq!(DateTime::parse(&written), Some(value));
        prop_assert_eq!(DateTime::parse_fhirpath(&written), Some(value));
        prop_assert_eq!(DateTime::parse_instant(&written).is_some(), with_time);
        let t_written = text(t);
        prop_assert_eq!(Time::parse(&t_written), Some(t));
    }

    #[test]
    fn fhirpath_values_read_back_what_formatting_wrote(
        d in r4_date(),
        parts in time_parts(),
        offset in proptest::option::of(r4_offset()),
    ) {
        let t = build(&parts);
        let full = Date { month: d.month.or(Some(1)), day: d.day.or(Some(1)), ..d };
        let value = DateTime { date: full, time: Some(t), offset };
        let written = text(value);
        prop_assert_eq!(DateTime::parse_fhirpath(&written), Some(value));
        let t_written = text(t);
        prop_assert_eq!(Time::parse_fhirpath(&t_written), Some(t));
    }

    #[test]
    fn boundaries_are_ordered(
        d in r4_date(),
        parts in time_parts(),
        offset in proptest::option::of(r4_offset()),
        with_time in any::<bool>(),
    ) {
        let t = build(&parts);
        let value = if with_time {
            let full = Date { month: d.month.or(Some(1)), day: d.day.or(Some(1)), ..d };
            DateTime { date: full, time: Some(t), offset }
        } else {
            DateTime { date: d, time: None, offset: None }
        };
        let low = value.instant(Boundary::Low).unwrap();
        let high = value.instant(Boundary::High).unwrap();
        prop_assert!(low <= high);
        prop_assert!(d.first_day().unwrap() <= d.last_day().unwrap());
        // The text boundaries are instants at millisecond precision that bracket the same span.
        let low_text = value.boundary_text(Boundary::Low);
        let high_text = value.boundary_text(Boundary::High);
        let low_back = DateTime::parse_instant(&low_text).unwrap().instant(Boundary::Low).unwrap();
        let high_back = DateTime::parse_instant(&high_text).unwrap().instant(Boundary::Low).unwrap();
        prop_assert!(low_back <= high_back);
        prop_assert_eq!(low_back, low);
        prop_assert!(high_back <= high);
        prop_assert!(high - high_back < chrono::TimeDelta::milliseconds(1));
    }
}
