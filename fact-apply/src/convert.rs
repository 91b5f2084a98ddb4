//! Pure conversions of the original `process_fact_table` (`docs/apply.md`, "Column names and conversions"): column
//! names, period codes (`Tid`) to dates or ranges, age codes to integers or
//! ranges, and the binary wire encodings of the values sent to Postgres.
//!
//! Nothing here touches the database; every function is total (no panics on
//! arbitrary input) and returns a short reason on failure.

use bytes::{BufMut, BytesMut};
use chrono::{Datelike, NaiveDate};
use postgres_types::{to_sql_checked, IsNull, ToSql, Type};

pub use sync_state::column_name;

/// Days between 0001-01-01 (chrono's day 1 of the Common Era) and Postgres'
/// epoch 2000-01-01.
const PG_EPOCH_DAYS_FROM_CE: i32 = 730_120;

/// A date as Postgres sends it: days since 2000-01-01.
pub(crate) fn pg_days(d: NaiveDate) -> i32 {
    d.num_days_from_ce() - PG_EPOCH_DAYS_FROM_CE
}

/// The first day of a period code, for `date` columns:
/// yearly `2024` → 2024-01-01, quarterly `2024K3` → 2024-07-01, monthly
/// `2024M03` → 2024-03-01, daily `2024M03D05` → 2024-03-05, half-yearly
/// `2024H2` → 2024-07-01. Any other form (weeks, seasons, intervals) is an
/// error with a short reason.
///
/// ```
/// use chrono::NaiveDate;
/// let d = |y, m, d| NaiveDate::from_ymd_opt(y, m, d).unwrap();
/// assert_eq!(fact_apply::tid_to_date("2024K3"), Ok(d(2024, 7, 1)));
/// assert_eq!(fact_apply::tid_to_date("2024M03D05"), Ok(d(2024, 3, 5)));
/// assert!(fact_apply::tid_to_date("2024U07").is_err());
/// ```
pub fn tid_to_date(code: &str) -> Result<NaiveDate, &'static str> {
    const NOT_A_DATE: &str = "not a yearly, quarterly, monthly, daily or half-yearly period";
    let b = code.as_bytes();
    if b.len() < 4 || !b[..4].iter().all(u8::is_ascii_digit) {
        return Err(NOT_A_DATE);
    }
    let year = digits(&b[..4]).ok_or(NOT_A_DATE)? as i32;
    let ymd = |m: u32, d: u32| NaiveDate::from_ymd_opt(year, m, d).ok_or("no such calendar day");
    match &b[4..] {
        [] => ymd(1, 1),
        [b'K', q @ b'1'..=b'4'] => ymd(u32::from(q - b'1') * 3 + 1, 1),
        [b'H', h @ b'1'..=b'2'] => ymd(u32::from(h - b'1') * 6 + 1, 1),
        [b'M', m1, m2] if m1.is_ascii_digit() && m2.is_ascii_digit() => {
            let m = u32::from(m1 - b'0') * 10 + u32::from(m2 - b'0');
            if !(1..=12).contains(&m) {
                return Err("month out of range");
            }
            ymd(m, 1)
        }
        [b'M', m1, m2, b'D', d1, d2] if [m1, m2, d1, d2].iter().all(|c| c.is_ascii_digit()) => {
            let m = u32::from(m1 - b'0') * 10 + u32::from(m2 - b'0');
            let d = u32::from(d1 - b'0') * 10 + u32::from(d2 - b'0');
            if !(1..=12).contains(&m) {
                return Err("month out of range");
            }
            ymd(m, d)
        }
        _ => Err(NOT_A_DATE),
    }
}

/// Parses a run of ASCII digits (no sign) that fits in an `i64`.
fn digits(b: &[u8]) -> Option<i64> {
    if b.is_empty() || b.len() > 18 || !b.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(b.iter().fold(0i64, |acc, c| acc * 10 + i64::from(c - b'0')))
}

/// A strict integer: optional `-`, then ASCII digits. Leading zeros are
/// accepted; `+`, spaces and anything else are not.
pub(crate) fn parse_int(s: &str) -> Result<i64, &'static str> {
    let (neg, body) = match s.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, s),
    };
    if body.is_empty() || !body.bytes().all(|c| c.is_ascii_digit()) {
        return Err("not an integer");
    }
    // i64::from_str accepts exactly this shape (it also takes '+', excluded above).
    let v: i64 = body.parse().map_err(|_| "integer out of range")?;
    Ok(if neg { -v } else { v })
}

/// `true` when `s` is an integer written canonically: `0`, or an optional `-`
/// followed by digits without a leading zero (so `000` and `01` are codes, not
/// numbers), and it fits in an `i64`.
pub(crate) fn canonical_int(s: &str) -> Option<i64> {
    let body = s.strip_prefix('-').unwrap_or(s);
    let canonical = match body.as_bytes() {
        [b'0'] => body.len() == s.len(),
        [b'1'..=b'9', rest @ ..] => rest.iter().all(u8::is_ascii_digit),
        _ => false,
    };
    if canonical {
        parse_int(s).ok()
    } else {
        None
    }
}

/// An `int4range` with inclusive lower and exclusive upper bound; `None` is
/// unbounded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IntRange {
    /// Inclusive lower bound (`None`: unbounded).
    pub lower: Option<i32>,
    /// Exclusive upper bound (`None`: unbounded).
    pub upper: Option<i32>,
}

impl std::fmt::Display for IntRange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.lower {
            Some(l) => write!(f, "[{l},")?,
            None => f.write_str("(,")?,
        }
        match self.upper {
            Some(u) => write!(f, "{u})"),
            None => f.write_str(")"),
        }
    }
}

fn to_i32(v: i64) -> Result<i32, &'static str> {
    i32::try_from(v).map_err(|_| "bound out of range for int4range")
}

/// Builds `[lo, hi]` (inclusive) as `[lo, hi + 1)`.
fn closed(lo: i64, hi: i64) -> Result<IntRange, &'static str> {
    if lo > hi {
        return Err("lower bound above upper bound");
    }
    Ok(IntRange {
        lower: Some(to_i32(lo)?),
        upper: Some(to_i32(
            hi.checked_add(1)
                .ok_or("bound out of range for int4range")?,
        )?),
    })
}

/// A code as an `int4range`: the interval period `1840:1849` → `[1840,1850)`,
/// age bands `16-19` → `[16,20)`, open-ended `95-` or `95OV` → `[95,)`,
/// `-19` → `(,20)`, and a plain number `7` → `[7,8)`.
///
/// ```
/// use fact_apply::{code_to_range, IntRange};
/// assert_eq!(code_to_range("1840:1849"), Ok(IntRange { lower: Some(1840), upper: Some(1850) }));
/// assert_eq!(code_to_range("95OV"), Ok(IntRange { lower: Some(95), upper: None }));
/// assert!(code_to_range("IALT").is_err());
/// ```
pub fn code_to_range(code: &str) -> Result<IntRange, &'static str> {
    const NOT_A_RANGE: &str = "not an interval (A:B), band (A-B, A-, AOV, -B) or number";
    let b = code.as_bytes();
    let num = |s: &[u8]| digits(s).ok_or(NOT_A_RANGE);
    if let Some(i) = b.iter().position(|&c| c == b':') {
        return closed(num(&b[..i])?, num(&b[i + 1..])?);
    }
    if let Some(lo) = b.strip_suffix(b"OV") {
        return Ok(IntRange {
            lower: Some(to_i32(num(lo)?)?),
            upper: None,
        });
    }
    if let Some(i) = b.iter().position(|&c| c == b'-') {
        let (lo, hi) = (&b[..i], &b[i + 1..]);
        return match (lo.is_empty(), hi.is_empty()) {
            (true, true) => Err(NOT_A_RANGE),
            (false, true) => Ok(IntRange {
                lower: Some(to_i32(num(lo)?)?),
                upper: None,
            }),
            (true, false) => Ok(IntRange {
                lower: None,
                upper: Some(to_i32(
                    num(hi)?
                        .checked_add(1)
                        .ok_or("bound out of range for int4range")?,
                )?),
            }),
            (false, false) => closed(num(lo)?, num(hi)?),
        };
    }
    let n = num(b)?;
    closed(n, n)
}

/// An age code for an integer column: a plain number, or an open-ended
/// `95-` / `95OV` read as its lower bound (the original allowed one such value
/// per column).
pub(crate) fn open_ended_age(code: &str) -> Option<i64> {
    let lo = code.strip_suffix('-').or_else(|| code.strip_suffix("OV"))?;
    digits(lo.as_bytes())
}

/// Encodes a decimal number (`-12.50`, `3`, `1e5` is not accepted) in
/// Postgres' binary `numeric` format, checking it against `numeric(p,s)`:
/// a value that would be rounded or overflow is an error, never altered.
pub(crate) fn encode_numeric(
    text: &str,
    precision_scale: Option<(i32, i32)>,
) -> Result<Vec<u8>, &'static str> {
    const NOT_A_NUMBER: &str = "not a decimal number";
    let (neg, body) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text),
    };
    let (int_part, frac_part) = match body.split_once('.') {
        Some((i, f)) => (i, f),
        None => (body, ""),
    };
    if (int_part.is_empty() && frac_part.is_empty())
        || !int_part.bytes().all(|c| c.is_ascii_digit())
        || !frac_part.bytes().all(|c| c.is_ascii_digit())
    {
        return Err(NOT_A_NUMBER);
    }
    let int_digits = int_part.trim_start_matches('0');
    let frac_digits = frac_part.trim_end_matches('0');
    if let Some((precision, scale)) = precision_scale {
        if frac_digits.len() as i64 > i64::from(scale) {
            return Err("more decimals than the column's scale (would be rounded)");
        }
        if int_digits.len() as i64 > i64::from(precision) - i64::from(scale) {
            return Err("too many digits for the column's precision");
        }
    }
    if int_digits.len() + frac_digits.len() > 100_000 {
        return Err("number too long");
    }
    // Base-10000 digit groups aligned at the decimal point.
    let int_pad = (4 - int_digits.len() % 4) % 4;
    let mut groups: Vec<i16> = Vec::new();
    let int_str: Vec<u8> = std::iter::repeat_n(b'0', int_pad)
        .chain(int_digits.bytes())
        .collect();
    for chunk in int_str.chunks(4) {
        groups.push(chunk.iter().fold(0i16, |a, c| a * 10 + i16::from(c - b'0')));
    }
    let mut weight = groups.len() as i64 - 1;
    let frac_pad = (4 - frac_digits.len() % 4) % 4;
    let frac_str: Vec<u8> = frac_digits
        .bytes()
        .chain(std::iter::repeat_n(b'0', frac_pad))
        .collect();
    for chunk in frac_str.chunks(4) {
        groups.push(chunk.iter().fold(0i16, |a, c| a * 10 + i16::from(c - b'0')));
    }
    // Strip leading and trailing zero groups.
    let lead = groups.iter().take_while(|&&g| g == 0).count();
    groups.drain(..lead);
    weight -= lead as i64;
    while groups.last() == Some(&0) {
        groups.pop();
    }
    // The display scale Postgres stores: the column's scale under a
    // typmod (it rounds every value to it), else the digits as written.
    let dscale = match precision_scale {
        Some((_, scale)) => scale.clamp(0, 16383) as i16,
        None => frac_part.len().min(16383) as i16,
    };
    let (weight, sign) = if groups.is_empty() {
        (0, 0u16)
    } else {
        (
            i16::try_from(weight).map_err(|_| "number out of range for numeric")?,
            if neg { 0x4000 } else { 0 },
        )
    };
    let ndigits = i16::try_from(groups.len()).map_err(|_| "number too long")?;
    let mut out = Vec::with_capacity(8 + 2 * groups.len());
    out.extend_from_slice(&ndigits.to_be_bytes());
    out.extend_from_slice(&weight.to_be_bytes());
    out.extend_from_slice(&sign.to_be_bytes());
    out.extend_from_slice(&dscale.to_be_bytes());
    for g in groups {
        out.extend_from_slice(&g.to_be_bytes());
    }
    Ok(out)
}

/// One value on its way to Postgres, already converted to the target
/// column's type and written in the binary format.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Cell<'a> {
    Null,
    Text(&'a str),
    Owned(String),
    I16(i16),
    I32(i32),
    I64(i64),
    F32(f32),
    F64(f64),
    /// Days since 2000-01-01.
    Date(i32),
    Range(IntRange),
    /// A pre-encoded binary `numeric`.
    Numeric(Vec<u8>),
}

impl Cell<'_> {
    /// The same value without borrowed text.
    pub(crate) fn into_owned(self) -> Cell<'static> {
        match self {
            Cell::Null => Cell::Null,
            Cell::Text(s) => Cell::Owned(s.to_owned()),
            Cell::Owned(s) => Cell::Owned(s),
            Cell::I16(v) => Cell::I16(v),
            Cell::I32(v) => Cell::I32(v),
            Cell::I64(v) => Cell::I64(v),
            Cell::F32(v) => Cell::F32(v),
            Cell::F64(v) => Cell::F64(v),
            Cell::Date(v) => Cell::Date(v),
            Cell::Range(v) => Cell::Range(v),
            Cell::Numeric(v) => Cell::Numeric(v),
        }
    }
}

impl std::fmt::Display for Cell<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Cell::Null => f.write_str("NULL"),
            Cell::Text(s) => f.write_str(s),
            Cell::Owned(s) => f.write_str(s),
            Cell::I16(v) => write!(f, "{v}"),
            Cell::I32(v) => write!(f, "{v}"),
            Cell::I64(v) => write!(f, "{v}"),
            Cell::F32(v) => write!(f, "{v}"),
            Cell::F64(v) => write!(f, "{v}"),
            Cell::Date(d) => {
                match NaiveDate::from_num_days_from_ce_opt(d + PG_EPOCH_DAYS_FROM_CE) {
                    Some(d) => write!(f, "{d}"),
                    None => write!(f, "date {d}"),
                }
            }
            Cell::Range(r) => write!(f, "{r}"),
            Cell::Numeric(_) => f.write_str("numeric"),
        }
    }
}

/// Flags of the binary range format.
const RANGE_LB_INC: u8 = 0x02;
const RANGE_LB_INF: u8 = 0x08;
const RANGE_UB_INF: u8 = 0x10;

impl ToSql for Cell<'_> {
    fn to_sql(
        &self,
        _ty: &Type,
        out: &mut BytesMut,
    ) -> Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        match self {
            Cell::Null => return Ok(IsNull::Yes),
            Cell::Text(s) => out.put_slice(s.as_bytes()),
            Cell::Owned(s) => out.put_slice(s.as_bytes()),
            Cell::I16(v) => out.put_i16(*v),
            Cell::I32(v) => out.put_i32(*v),
            Cell::I64(v) => out.put_i64(*v),
            Cell::F32(v) => out.put_f32(*v),
            Cell::F64(v) => out.put_f64(*v),
            Cell::Date(v) => out.put_i32(*v),
            Cell::Range(r) => {
                let mut flags = 0u8;
                match r.lower {
                    Some(_) => flags |= RANGE_LB_INC,
                    None => flags |= RANGE_LB_INF,
                }
                if r.upper.is_none() {
                    flags |= RANGE_UB_INF;
                }
                out.put_u8(flags);
                for bound in [r.lower, r.upper].into_iter().flatten() {
                    out.put_i32(4);
                    out.put_i32(bound);
                }
            }
            Cell::Numeric(bytes) => out.put_slice(bytes),
        }
        Ok(IsNull::No)
    }

    fn accepts(_ty: &Type) -> bool {
        // The conversion has already matched every value to its column's
        // type; the same enum serves all of them.
        true
    }

    to_sql_checked!();
}

/// Shortens hostile input for an error message.
pub(crate) fn shorten(s: &str) -> String {
    sync_state::shorten(s, 80)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn d(y: i32, m: u32, day: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(y, m, day).expect("valid date")
    }

    #[test]
    fn names_follow_the_original() {
        assert_eq!(column_name("OMRÅDE"), "omrade");
        assert_eq!(column_name("KØN"), "kon");
        assert_eq!(column_name("ALDER"), "alder");
        assert_eq!(column_name("TID"), "tid");
        assert_eq!(column_name("INDHOLD"), "indhold");
        assert_eq!(column_name("BRÆNDSEL"), "braendsel");
        assert_eq!(column_name("Æbleø"), "aebleo");
    }

    #[test]
    fn every_date_form() {
        assert_eq!(tid_to_date("2024"), Ok(d(2024, 1, 1)));
        assert_eq!(tid_to_date("2024K1"), Ok(d(2024, 1, 1)));
        assert_eq!(tid_to_date("2024K2"), Ok(d(2024, 4, 1)));
        assert_eq!(tid_to_date("2024K3"), Ok(d(2024, 7, 1)));
        assert_eq!(tid_to_date("2024K4"), Ok(d(2024, 10, 1)));
        assert_eq!(tid_to_date("2024M03"), Ok(d(2024, 3, 1)));
        assert_eq!(tid_to_date("2024M12"), Ok(d(2024, 12, 1)));
        assert_eq!(tid_to_date("2024M03D05"), Ok(d(2024, 3, 5)));
        assert_eq!(tid_to_date("2024M02D29"), Ok(d(2024, 2, 29)));
        assert_eq!(tid_to_date("2024H1"), Ok(d(2024, 1, 1)));
        assert_eq!(tid_to_date("2024H2"), Ok(d(2024, 7, 1)));
        for bad in [
            "",
            "202",
            "20245",
            "2024K0",
            "2024K5",
            "2024M13",
            "2024M00",
            "2024M1",
            "2023M02D29",
            "2024M04D31",
            "2024H3",
            "2024U07",
            "2024-01",
            "1840:1849",
            "AUG - DEC 2019",
            "２０２４",
            "2024K3 ",
        ] {
            assert!(tid_to_date(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn ranges_and_bands() {
        let r = |l, u| IntRange { lower: l, upper: u };
        assert_eq!(code_to_range("1840:1849"), Ok(r(Some(1840), Some(1850))));
        assert_eq!(code_to_range("16-19"), Ok(r(Some(16), Some(20))));
        assert_eq!(code_to_range("95-"), Ok(r(Some(95), None)));
        assert_eq!(code_to_range("95OV"), Ok(r(Some(95), None)));
        assert_eq!(code_to_range("-19"), Ok(r(None, Some(20))));
        assert_eq!(code_to_range("7"), Ok(r(Some(7), Some(8))));
        for bad in [
            "",
            "-",
            ":",
            "1849:1840",
            "IALT",
            "a-b",
            "1:2:3",
            "OV",
            "16--19",
            "99999999999-",
        ] {
            assert!(code_to_range(bad).is_err(), "{bad:?}");
        }
        assert_eq!(r(Some(16), Some(20)).to_string(), "[16,20)");
        assert_eq!(r(Some(95), None).to_string(), "[95,)");
        assert_eq!(r(None, Some(20)).to_string(), "(,20)");
    }

    #[test]
    fn integers() {
        assert_eq!(parse_int("42"), Ok(42));
        assert_eq!(parse_int("-7"), Ok(-7));
        assert_eq!(parse_int("007"), Ok(7));
        assert!(parse_int("+7").is_err());
        assert!(parse_int(" 7").is_err());
        assert!(parse_int("").is_err());
        assert!(parse_int("-").is_err());
        assert!(parse_int("99999999999999999999").is_err());
        assert_eq!(canonical_int("0"), Some(0));
        assert_eq!(canonical_int("101"), Some(101));
        assert_eq!(canonical_int("-5"), Some(-5));
        for code in ["000", "084", "-0", "01", "TOT", "1.5", ""] {
            assert_eq!(canonical_int(code), None, "{code:?}");
        }
        assert_eq!(open_ended_age("100-"), Some(100));
        assert_eq!(open_ended_age("95OV"), Some(95));
        assert_eq!(open_ended_age("95"), None);
    }

    #[test]
    fn numeric_encoding_matches_postgres_layout() {
        // 12.5: one group 12 (weight 0), one group 5000 (weight -1), dscale 1
        assert_eq!(
            encode_numeric("12.5", None),
            Ok(vec![0, 2, 0, 0, 0, 0, 0, 1, 0, 12, 0x13, 0x88])
        );
        // 10000: one group 1 at weight 1
        assert_eq!(
            encode_numeric("10000", None),
            Ok(vec![0, 1, 0, 1, 0, 0, 0, 0, 0, 1])
        );
        // -0.001: group 10 at weight -1, dscale 3, negative
        assert_eq!(
            encode_numeric("-0.001", None),
            Ok(vec![0, 1, 0xff, 0xff, 0x40, 0, 0, 3, 0, 10])
        );
        assert_eq!(encode_numeric("0", None), Ok(vec![0, 0, 0, 0, 0, 0, 0, 0]));
        assert!(encode_numeric("1.25", Some((10, 1))).is_err());
        assert!(encode_numeric("1.20", Some((10, 1))).is_ok());
        assert!(encode_numeric("123", Some((4, 2))).is_err());
        assert!(encode_numeric("12", Some((4, 2))).is_ok());
        for bad in ["", "-", ".", "1e5", "1,5", "NaN", "inf", "1.2.3"] {
            assert!(encode_numeric(bad, None).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn cells_encode_in_binary_format() {
        let enc = |c: Cell<'_>| {
            let mut b = BytesMut::new();
            c.to_sql(&Type::TEXT, &mut b).expect("encodes");
            b.to_vec()
        };
        assert_eq!(enc(Cell::Date(pg_days(d(2000, 1, 2)))), vec![0, 0, 0, 1]);
        assert_eq!(enc(Cell::Date(pg_days(d(1999, 12, 31)))), vec![0xff; 4]);
        assert_eq!(
            enc(Cell::Range(IntRange {
                lower: Some(1),
                upper: Some(2)
            })),
            vec![2, 0, 0, 0, 4, 0, 0, 0, 1, 0, 0, 0, 4, 0, 0, 0, 2]
        );
        assert_eq!(
            enc(Cell::Range(IntRange {
                lower: Some(1),
                upper: None
            })),
            vec![0x12, 0, 0, 0, 4, 0, 0, 0, 1]
        );
        assert_eq!(
            enc(Cell::Range(IntRange {
                lower: None,
                upper: Some(2)
            })),
            vec![0x08, 0, 0, 0, 4, 0, 0, 0, 2]
        );
        assert_eq!(Cell::Date(pg_days(d(2024, 7, 1))).to_string(), "2024-07-01");
    }

    proptest! {
        #[test]
        fn parsers_never_panic(s in "\\PC{0,24}") {
            let _ = tid_to_date(&s);
            let _ = code_to_range(&s);
            let _ = parse_int(&s);
            let _ = canonical_int(&s);
            let _ = open_ended_age(&s);
            let _ = encode_numeric(&s, Some((10, 2)));
            let _ = column_name(&s);
        }

        #[test]
        fn near_miss_codes_never_panic(s in "[0-9KMHDUOV:\\-]{0,12}") {
            let _ = tid_to_date(&s);
            let _ = code_to_range(&s);
        }

        #[test]
        fn every_calendar_day_round_trips(days in 0i64..(400 * 366)) {
            let date = d(1800, 1, 1) + chrono::Duration::days(days);
            if date.year() <= 9999 {
                let daily = format!("{:04}M{:02}D{:02}", date.year(), date.month(), date.day());
                prop_assert_eq!(tid_to_date(&daily), Ok(date));
                let monthly = format!("{:04}M{:02}", date.year(), date.month());
                prop_assert_eq!(tid_to_date(&monthly), Ok(date.with_day(1).expect("day 1")));
                let quarterly = format!("{:04}K{}", date.year(), (date.month() - 1) / 3 + 1);
                let q = tid_to_date(&quarterly).expect("quarter");
                prop_assert!(q <= date && (date - q).num_days() < 92);
                prop_assert_eq!(q.day(), 1);
                prop_assert_eq!((q.month() - 1) % 3, 0);
                let half = format!("{:04}H{}", date.year(), (date.month() - 1) / 6 + 1);
                let h = tid_to_date(&half).expect("half");
                prop_assert!(h <= date && (date - h).num_days() < 184);
                let yearly = format!("{:04}", date.year());
                prop_assert_eq!(tid_to_date(&yearly), Ok(d(date.year(), 1, 1)));
                prop_assert_eq!(Cell::Date(pg_days(date)).to_string(), date.to_string());
            }
        }

        #[test]
        fn intervals_and_bands_round_trip(a in 0i64..100_000, len in 0i64..1000) {
            let b = a + len;
            let want = IntRange { lower: Some(a as i32), upper: Some((b + 1) as i32) };
            prop_assert_eq!(code_to_range(&format!("{a}:{b}")), Ok(want));
            prop_assert_eq!(code_to_range(&format!("{a}-{b}")), Ok(want));
            prop_assert_eq!(code_to_range(&format!("{a}-")), Ok(IntRange { lower: Some(a as i32), upper: None }));
            prop_assert_eq!(code_to_range(&format!("{a}OV")), Ok(IntRange { lower: Some(a as i32), upper: None }));
            // the range written back in Postgres' text form names the same ages
            let text = want.to_string();
            prop_assert_eq!(text, format!("[{a},{})", b + 1));
        }

        #[test]
        fn canonical_integers_round_trip(v in any::<i64>()) {
            prop_assert_eq!(canonical_int(&v.to_string()), Some(v));
            prop_assert_eq!(parse_int(&v.to_string()), Ok(v));
        }

        #[test]
        fn numeric_encoding_accepts_every_f64_display(v in any::<f64>().prop_filter("finite", |v| v.is_finite())) {
            let text = v.to_string();
            let bytes = encode_numeric(&text, None).expect("f64 display is a decimal");
            let ndigits = i16::from_be_bytes([bytes[0], bytes[1]]);
            prop_assert_eq!(bytes.len(), 8 + 2 * ndigits as usize);
            for g in bytes[8..].chunks(2) {
                let g = i16::from_be_bytes([g[0], g[1]]);
                prop_assert!((0..10_000).contains(&g));
            }
        }
    }
}
