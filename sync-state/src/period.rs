//! The calendar days a StatBank period code stands for (`meta.periods`,
//! docs/metadata.md, "Period forms").

use chrono::{Datelike, NaiveDate, Weekday};

use crate::Frequency;

/// The first and last day (inclusive) of a period code, and its frequency.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeriodSpan {
    /// The frequency of the code ([`Frequency::of_code`]).
    pub frequency: Frequency,
    /// The first day; `None` for a form that cannot be placed.
    pub start: Option<NaiveDate>,
    /// The last day, inclusive; `None` exactly when `start` is.
    pub end: Option<NaiveDate>,
}

impl PeriodSpan {
    /// The span of `code`. Yearly `2024` is 2024-01-01..2024-12-31,
    /// half-yearly `2024H2` 07-01..12-31, quarterly `2024K3` 07-01..09-30,
    /// monthly `2024M02` 02-01..02-29, ISO week `2024U01` Monday
    /// 2024-01-01..Sunday 2024-01-07, daily `2024M11D05` that day, a span of
    /// years `1840:1849` 1840-01-01..1849-12-31. Every other form (school
    /// years `2020/2021`, week ranges `2014U30-41`, seasons `AUG - DEC
    /// 2019`) and every code that names no real day (`2024M13`, `2023U53`)
    /// has no dates: never a wrong one.
    ///
    /// ```
    /// use chrono::NaiveDate;
    /// use sync_state::PeriodSpan;
    /// let d = |y, m, d| NaiveDate::from_ymd_opt(y, m, d);
    /// let week = PeriodSpan::of("2024U01");
    /// assert_eq!((week.start, week.end), (d(2024, 1, 1), d(2024, 1, 7)));
    /// assert_eq!(PeriodSpan::of("2020/2021").start, None);
    /// ```
    pub fn of(code: &str) -> PeriodSpan {
        let frequency = Frequency::of_code(code);
        let days = match frequency {
            Frequency::Other => year_span(code),
            _ => calendar_span(code, frequency),
        };
        let (start, end) = match days {
            Some((s, e)) if s <= e => (Some(s), Some(e)),
            _ => (None, None),
        };
        PeriodSpan {
            frequency,
            start,
            end,
        }
    }
}

fn number(s: &str) -> Option<u32> {
    (!s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
        .then(|| s.parse().ok())
        .flatten()
}

/// The last day of `month` in `year`.
fn month_end(year: i32, month: u32) -> Option<NaiveDate> {
    let (y, m) = if month == 12 {
        (year + 1, 1)
    } else {
        (year, month + 1)
    };
    NaiveDate::from_ymd_opt(y, m, 1)?.pred_opt()
}

fn months(year: i32, first: u32, last: u32) -> Option<(NaiveDate, NaiveDate)> {
    Some((
        NaiveDate::from_ymd_opt(year, first, 1)?,
        month_end(year, last)?,
    ))
}

/// The forms [`Frequency::of_code`] recognises (its patterns guarantee
/// the shape; the numbers are checked here).
fn calendar_span(code: &str, frequency: Frequency) -> Option<(NaiveDate, NaiveDate)> {
    let year = i32::try_from(number(code.get(..4)?)?).ok()?;
    let rest = code.get(4..)?;
    let n = |r: std::ops::Range<usize>| rest.get(r).and_then(number);
    match frequency {
        Frequency::Yearly => months(year, 1, 12),
        Frequency::HalfYearly => {
            let h = n(1..2)?;
            months(year, h * 6 - 5, h * 6)
        }
        Frequency::Quarterly => {
            let q = n(1..2)?;
            months(year, q * 3 - 2, q * 3)
        }
        Frequency::Monthly => {
            let m = n(1..3)?;
            months(year, m, m)
        }
        Frequency::Daily => {
            let day = NaiveDate::from_ymd_opt(year, n(1..3)?, n(4..6)?)?;
            Some((day, day))
        }
        Frequency::Weekly => {
            let monday = NaiveDate::from_isoywd_opt(year, n(1..3)?, Weekday::Mon)?;
            let sunday = NaiveDate::from_isoywd_opt(year, n(1..3)?, Weekday::Sun)?;
            (monday.iso_week().week() == n(1..3)?).then_some((monday, sunday))
        }
        Frequency::Other => None,
    }
}

/// `1840:1849`: from the first year's first day to the second year's last.
fn year_span(code: &str) -> Option<(NaiveDate, NaiveDate)> {
    let (a, b) = code.split_once(':')?;
    if a.len() != 4 || b.len() != 4 {
        return None;
    }
    let (a, b) = (
        i32::try_from(number(a)?).ok()?,
        i32::try_from(number(b)?).ok()?,
    );
    Some((months(a, 1, 1)?.0, months(b, 12, 12)?.1))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn d(y: i32, m: u32, day: u32) -> Option<NaiveDate> {
        NaiveDate::from_ymd_opt(y, m, day)
    }

    fn span(code: &str) -> (Option<NaiveDate>, Option<NaiveDate>) {
        let s = PeriodSpan::of(code);
        (s.start, s.end)
    }

    #[test]
    fn every_form_the_issue_names() {
        assert_eq!(span("2024"), (d(2024, 1, 1), d(2024, 12, 31)));
        assert_eq!(span("2024H1"), (d(2024, 1, 1), d(2024, 6, 30)));
        assert_eq!(span("2024H2"), (d(2024, 7, 1), d(2024, 12, 31)));
        assert_eq!(span("2024K1"), (d(2024, 1, 1), d(2024, 3, 31)));
        assert_eq!(span("2024K3"), (d(2024, 7, 1), d(2024, 9, 30)));
        assert_eq!(span("2024K4"), (d(2024, 10, 1), d(2024, 12, 31)));
        assert_eq!(span("2024M02"), (d(2024, 2, 1), d(2024, 2, 29)));
        assert_eq!(span("2023M02"), (d(2023, 2, 1), d(2023, 2, 28)));
        assert_eq!(span("2024M12"), (d(2024, 12, 1), d(2024, 12, 31)));
        assert_eq!(span("2024U01"), (d(2024, 1, 1), d(2024, 1, 7)));
        // ISO week 1 of 2021 starts on Monday 2021-01-04; 2020 has 53 weeks.
        assert_eq!(span("2021U01"), (d(2021, 1, 4), d(2021, 1, 10)));
        assert_eq!(span("2020U53"), (d(2020, 12, 28), d(2021, 1, 3)));
        assert_eq!(span("2024M11D05"), (d(2024, 11, 5), d(2024, 11, 5)));
        assert_eq!(span("1840:1849"), (d(1840, 1, 1), d(1849, 12, 31)));
        assert_eq!(PeriodSpan::of("2024U01").frequency, Frequency::Weekly);
        assert_eq!(PeriodSpan::of("1840:1849").frequency, Frequency::Other);
    }

    #[test]
    fn forms_that_cannot_be_placed_have_no_dates() {
        for code in [
            "2020/2021",
            "2014U30-41",
            "AUG - DEC 2019",
            "2024M13",
            "2024M00",
            "2023M02D29",
            "2024U00",
            "2023U53",
            "2024U54",
            "1849:1840",
            "184:1849",
            "",
            "2024K3 ",
        ] {
            assert_eq!(span(code), (None, None), "{code:?}");
        }
    }

    proptest! {
        #[test]
        fn spans_never_panic_and_start_before_end(code in "\\PC{0,16}") {
            let s = PeriodSpan::of(&code);
            prop_assert_eq!(s.start.is_some(), s.end.is_some());
            if let (Some(a), Some(b)) = (s.start, s.end) {
                prop_assert!(a <= b);
            }
        }

        #[test]
        fn every_day_lies_in_its_own_month_quarter_and_week(days in 0i64..(300 * 366)) {
            let day = NaiveDate::from_ymd_opt(1800, 1, 1).expect("day") + chrono::Duration::days(days);
            let (y, m) = (day.year(), day.month());
            let iso = day.iso_week();
            for code in [
                format!("{y}"),
                format!("{y}H{}", m.div_ceil(6)),
                format!("{y}K{}", m.div_ceil(3)),
                format!("{y}M{m:02}"),
                format!("{y}M{m:02}D{:02}", day.day()),
                format!("{}U{:02}", iso.year(), iso.week()),
            ] {
                let s = PeriodSpan::of(&code);
                prop_assert!(s.start <= Some(day) && Some(day) <= s.end, "{} {}", code, day);
            }
        }
    }
}
