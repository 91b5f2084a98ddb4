//! Calendar helpers: enumerating StatBank period codes and parsing `updated`.

/// Upper bound on an enumerated period list; beyond it we fall back to
/// `[first, last]`.
const MAX_PERIODS: usize = 50_000;

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm).
pub(crate) fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let m = i64::from(m);
    let d = i64::from(d);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Inverse of [`days_from_civil`].
pub(crate) fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = if z >= 0 { z } else { z - 146_096 } / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// 0 = Monday … 6 = Sunday.
fn weekday(days: i64) -> i64 {
    (days + 3).rem_euclid(7)
}

fn is_leap(y: i64) -> bool {
    (y % 4 == 0 && y % 100 != 0) || y % 400 == 0
}

/// Number of ISO weeks (52 or 53) in year `y`.
pub(crate) fn iso_weeks_in_year(y: i64) -> u32 {
    let jan1 = weekday(days_from_civil(y, 1, 1));
    if jan1 == 3 || (is_leap(y) && jan1 == 2) {
        53
    } else {
        52
    }
}

fn all_digits(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())
}

/// Parses `YYYY-MM-DDTHH:MM:SS` into seconds since the epoch (treating the
/// local time as UTC; good enough for `pastDays`).
pub(crate) fn parse_updated(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if b.len() < 19
        || b[4] != b'-'
        || b[7] != b'-'
        || b[10] != b'T'
        || b[13] != b':'
        || b[16] != b':'
    {
        return None;
    }
    let num = |r: std::ops::Range<usize>| {
        s.get(r)
            .filter(|x| all_digits(x))
            .and_then(|x| x.parse::<i64>().ok())
    };
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, se) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) {
        return None;
    }
    Some(days_from_civil(y, mo as u32, d as u32) * 86_400 + h * 3600 + mi * 60 + se)
}

/// The English text of a period code: quarters `2024K1` read `2024Q1`;
/// every other code is unchanged.
pub(crate) fn english_period_text(code: &str) -> Option<String> {
    let b = code.as_bytes();
    if b.len() == 6 && all_digits(&code[..4]) && b[4] == b'K' && b[5].is_ascii_digit() {
        Some(format!("{}Q{}", &code[..4], &code[5..]))
    } else {
        None
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Period {
    Year(i64),
    /// Year, sub-period letter (K, H, M, U), number, zero-padded width.
    Sub(i64, char, u32, usize),
    Day(i64, u32, u32),
    Season(i64),
    /// A single 4-digit year inside fixed text (`AUG - DEC 2019`).
    Text(String, i64, String),
}

fn parse_period(s: &str) -> Option<Period> {
    let b = s.as_bytes();
    if b.len() == 4 && all_digits(s) {
        return s.parse().ok().map(Period::Year);
    }
    if b.len() == 10
        && all_digits(&s[..4])
        && b[4] == b'M'
        && b[7] == b'D'
        && all_digits(&s[5..7])
        && all_digits(&s[8..10])
    {
        let y = s[..4].parse().ok()?;
        let m: u32 = s[5..7].parse().ok()?;
        let d: u32 = s[8..10].parse().ok()?;
        return Some(Period::Day(y, m, d));
    }
    if b.len() >= 6
        && all_digits(&s[..4])
        && matches!(b[4], b'K' | b'H' | b'M' | b'U')
        && all_digits(&s[5..])
    {
        let y = s[..4].parse().ok()?;
        let n = s[5..].parse().ok()?;
        return Some(Period::Sub(y, char::from(b[4]), n, s.len() - 5));
    }
    if b.len() == 9 && b[4] == b'/' && all_digits(&s[..4]) && all_digits(&s[5..]) {
        let a: i64 = s[..4].parse().ok()?;
        let c: i64 = s[5..].parse().ok()?;
        return (c == a + 1).then_some(Period::Season(a));
    }
    // Exactly one run of digits, of length 4, anywhere in otherwise non-digit text.
    let runs: Vec<(usize, usize)> = {
        let mut runs = Vec::new();
        let mut start = None;
        for (i, c) in b.iter().enumerate() {
            match (c.is_ascii_digit(), start) {
                (true, None) => start = Some(i),
                (false, Some(st)) => {
                    runs.push((st, i));
                    start = None;
                }
                _ => {}
            }
        }
        if let Some(st) = start {
            runs.push((st, b.len()));
        }
        runs
    };
    if let [(st, en)] = runs[..] {
        if en - st == 4 && !s.contains(':') && !s.contains('/') {
            let y = s[st..en].parse().ok()?;
            return Some(Period::Text(s[..st].to_string(), y, s[en..].to_string()));
        }
    }
    None
}

fn subs_per_year(kind: char, y: i64) -> u32 {
    match kind {
        'K' => 4,
        'H' => 2,
        'M' => 12,
        _ => iso_weeks_in_year(y),
    }
}

fn enumerate_inner(first: &str, last: &str) -> Option<Vec<String>> {
    let mut out = Vec::new();
    match (parse_period(first)?, parse_period(last)?) {
        (Period::Year(a), Period::Year(b)) => {
            for y in a..=b {
                out.push(format!("{y:04}"));
                if out.len() > MAX_PERIODS {
                    return None;
                }
            }
        }
        (Period::Season(a), Period::Season(b)) => {
            for y in a..=b {
                out.push(format!("{y:04}/{:04}", y + 1));
                if out.len() > MAX_PERIODS {
                    return None;
                }
            }
        }
        (Period::Text(p1, a, s1), Period::Text(p2, b, s2)) if p1 == p2 && s1 == s2 => {
            for y in a..=b {
                out.push(format!("{p1}{y:04}{s1}"));
                if out.len() > MAX_PERIODS {
                    return None;
                }
            }
        }
        (Period::Sub(ya, ka, na, wa), Period::Sub(yb, kb, nb, _)) if ka == kb => {
            let (mut y, mut n) = (ya, na);
            loop {
                out.push(format!("{y:04}{ka}{n:0wa$}"));
                if (y, n) == (yb, nb) || y > yb || out.len() > MAX_PERIODS {
                    break;
                }
                n += 1;
                if n > subs_per_year(ka, y) {
                    y += 1;
                    n = 1;
                }
            }
        }
        (Period::Day(ya, ma, da), Period::Day(yb, mb, db)) => {
            let start = days_from_civil(ya, ma, da);
            let end = days_from_civil(yb, mb, db);
            for z in start..=end {
                if z == start || z == end || weekday(z) < 5 {
                    let (y, m, d) = civil_from_days(z);
                    out.push(format!("{y:04}M{m:02}D{d:02}"));
                }
                if out.len() > MAX_PERIODS {
                    return None;
                }
            }
        }
        _ => return None,
    }
    Some(out)
}

/// All period codes from `first` to `last` inclusive, for the formats that can
/// be enumerated (years, quarters `K`, half-years `H`, months `M`, ISO weeks
/// `U`, business days `YYYYMmmDdd`, seasons `YYYY/YYYY`, text around a single
/// year). Anything else — or an enumeration that would not start at `first`
/// and end at `last` — yields `[first, last]` (or `[first]` if equal).
pub(crate) fn enumerate_periods(first: &str, last: &str) -> Vec<String> {
    if first.is_empty() && last.is_empty() {
        return Vec::new();
    }
    if first == last || last.is_empty() {
        return vec![first.to_string()];
    }
    if first.is_empty() {
        return vec![last.to_string()];
    }
    match enumerate_inner(first, last) {
        Some(v)
            if v.len() >= 2
                && v.first().map(String::as_str) == Some(first)
                && v.last().map(String::as_str) == Some(last) =>
        {
            v
        }
        _ => vec![first.to_string(), last.to_string()],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enumerates_every_format() {
        assert_eq!(enumerate_periods("2022", "2024"), ["2022", "2023", "2024"]);
        assert_eq!(
            enumerate_periods("2023K3", "2024K2"),
            ["2023K3", "2023K4", "2024K1", "2024K2"]
        );
        assert_eq!(
            enumerate_periods("2023M11", "2024M02"),
            ["2023M11", "2023M12", "2024M01", "2024M02"]
        );
        assert_eq!(
            enumerate_periods("2000H1", "2001H1"),
            ["2000H1", "2000H2", "2001H1"]
        );
        assert_eq!(
            enumerate_periods("2020U52", "2021U02"),
            ["2020U52", "2020U53", "2021U01", "2021U02"]
        );
        assert_eq!(
            enumerate_periods("2021U52", "2022U01"),
            ["2021U52", "2022U01"]
        );
        assert_eq!(
            enumerate_periods("2024M11D22", "2024M11D26"),
            ["2024M11D22", "2024M11D25", "2024M11D26"]
        );
        assert_eq!(
            enumerate_periods("2020/2021", "2022/2023"),
            ["2020/2021", "2021/2022", "2022/2023"]
        );
        assert_eq!(
            enumerate_periods("AUG - DEC 2019", "AUG - DEC 2021"),
            ["AUG - DEC 2019", "AUG - DEC 2020", "AUG - DEC 2021"]
        );
        assert_eq!(
            enumerate_periods("1840:1849", "2022:2023"),
            ["1840:1849", "2022:2023"]
        );
        assert_eq!(enumerate_periods("2024", "2024"), ["2024"]);
        // Reversed ranges fall back.
        assert_eq!(enumerate_periods("2024", "2020"), ["2024", "2020"]);
        let dnvald = enumerate_periods("1977M01D03", "2024M11D26");
        assert!((12_000..13_000).contains(&dnvald.len()), "{}", dnvald.len());
    }

    #[test]
    fn calendar_round_trips() {
        for z in [-800_000_i64, -1, 0, 1, 19_000, 20_000, 2_000_000] {
            let (y, m, d) = civil_from_days(z);
            assert_eq!(days_from_civil(y, m, d), z);
        }
        assert_eq!(weekday(days_from_civil(2024, 11, 27)), 2); // a Wednesday
        assert_eq!(iso_weeks_in_year(2020), 53);
        assert_eq!(iso_weeks_in_year(2021), 52);
        assert_eq!(parse_updated("1970-01-02T00:00:01"), Some(86_401));
        assert_eq!(parse_updated("garbage"), None);
        assert_eq!(english_period_text("2024K1").as_deref(), Some("2024Q1"));
        assert_eq!(english_period_text("2024M01"), None);
    }
}
