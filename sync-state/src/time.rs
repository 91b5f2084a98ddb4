//! UTC timestamps to the second, written as `2026-11-29T22:00:00Z`.

use std::fmt;

use chrono::{DateTime, SecondsFormat, SubsecRound, Utc};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::Error;

/// StatBank's clock: catalog `updated` values are Copenhagen local times
/// without a zone (`2024-08-12T08:00:00`).
pub const SOURCE_TIME_ZONE: chrono_tz::Tz = chrono_tz::Europe::Copenhagen;

/// The instant of a catalog `updated` value (`2024-08-12T08:00:00`,
/// Copenhagen local time); `None` when it is not in that form. An hour
/// repeated by the autumn clock change takes its first occurrence; one
/// skipped in spring the instant after the gap.
///
/// ```
/// use sync_state::source_time_to_utc;
/// assert_eq!(source_time_to_utc("2024-08-12T08:00:00").unwrap().to_rfc3339(),
///            "2024-08-12T06:00:00+00:00");
/// assert_eq!(source_time_to_utc("2024-01-12T08:00:00").unwrap().to_rfc3339(),
///            "2024-01-12T07:00:00+00:00");
/// ```
pub fn source_time_to_utc(updated: &str) -> Option<DateTime<Utc>> {
    use chrono::TimeZone;
    let naive =
        chrono::NaiveDateTime::parse_from_str(updated.trim(), "%Y-%m-%dT%H:%M:%S%.f").ok()?;
    let local = match SOURCE_TIME_ZONE.from_local_datetime(&naive) {
        chrono::LocalResult::Single(t) => t,
        chrono::LocalResult::Ambiguous(a, _) => a,
        chrono::LocalResult::None => SOURCE_TIME_ZONE
            .from_local_datetime(&(naive + chrono::Duration::hours(1)))
            .earliest()?,
    };
    Some(local.with_timezone(&Utc))
}

/// A catalog `updated` value in its one canonical text: StatBank's own
/// form `YYYY-MM-DDTHH:MM:SS` on StatBank's clock, with `.fff` when it has
/// milliseconds. Also read: a space instead of `T`, a fraction, and an
/// explicit zone (`Z`, `+01:00`), converted to StatBank's clock. `None` for
/// anything else: such a value is not a version this project can name
/// files after, compare or time-travel to.
///
/// ```
/// use sync_state::canonical_source_time as c;
/// assert_eq!(c("2024-08-12T08:00:00").as_deref(), Some("2024-08-12T08:00:00"));
/// assert_eq!(c("2024-08-12 08:00:00").as_deref(), Some("2024-08-12T08:00:00"));
/// assert_eq!(c("2024-08-12T06:00:00Z").as_deref(), Some("2024-08-12T08:00:00"));
/// assert_eq!(c("2024-08-12T08:00:00.250").as_deref(), Some("2024-08-12T08:00:00.250"));
/// assert_eq!(c("2024-08-12T08:00:00.000").as_deref(), Some("2024-08-12T08:00:00"));
/// assert_eq!(c("yesterday"), None);
/// ```
pub fn canonical_source_time(updated: &str) -> Option<String> {
    use chrono::{Datelike, Timelike};
    let s = updated.trim();
    if s.len() < 19 || s.len() > 40 || !s.is_ascii() {
        return None;
    }
    let (date, rest) = s.split_at(10);
    let rest = rest.strip_prefix(['T', ' '])?;
    let joined = format!("{date}T{rest}");
    let has_zone = rest.ends_with('Z') || rest[8..].contains(['+', '-']);
    let naive = if has_zone {
        DateTime::parse_from_rfc3339(&joined)
            .ok()?
            .with_timezone(&SOURCE_TIME_ZONE)
            .naive_local()
    } else {
        chrono::NaiveDateTime::parse_from_str(&joined, "%Y-%m-%dT%H:%M:%S%.f").ok()?
    };
    if !(1..=9999).contains(&naive.year()) {
        return None;
    }
    let millis = naive.nanosecond() / 1_000_000;
    let base = naive.format("%Y-%m-%dT%H:%M:%S").to_string();
    Some(if millis == 0 {
        base
    } else {
        format!("{base}.{millis:03}")
    })
}

/// An instant on StatBank's clock (`2025-03-01T01:00:00` for
/// `2025-03-01T00:00:00Z`), comparable as text with catalog `updated` values.
pub fn utc_to_source_time(t: DateTime<Utc>) -> String {
    t.with_timezone(&SOURCE_TIME_ZONE)
        .format("%Y-%m-%dT%H:%M:%S")
        .to_string()
}

/// A UTC instant truncated to the second; its JSON form is
/// `2026-11-29T22:00:00Z` (`docs/records.md`). Any RFC 3339 offset is accepted on
/// read (`+00:00` as written by Python's `isoformat`).
///
/// ```
/// use sync_state::UtcSecond;
/// let t: UtcSecond = "2026-11-29T22:00:00+00:00".parse().unwrap();
/// assert_eq!(t.to_string(), "2026-11-29T22:00:00Z");
/// ```
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct UtcSecond(DateTime<Utc>);

impl UtcSecond {
    /// Truncates `t` to the second.
    pub fn new(t: DateTime<Utc>) -> UtcSecond {
        UtcSecond(t.trunc_subsecs(0))
    }

    /// The instant.
    pub fn get(self) -> DateTime<Utc> {
        self.0
    }
}

impl From<DateTime<Utc>> for UtcSecond {
    fn from(t: DateTime<Utc>) -> Self {
        UtcSecond::new(t)
    }
}

impl std::str::FromStr for UtcSecond {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        let bad = || Error::InvalidTimestamp {
            value: crate::ids::truncate_for_message(s),
        };
        let t = match DateTime::parse_from_rfc3339(s) {
            Ok(t) => t.with_timezone(&Utc),
            // Python's datetime.utcnow().isoformat() has no offset: read it as UTC.
            Err(_) => chrono::NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S%.f")
                .map(|n| n.and_utc())
                .map_err(|_| bad())?,
        };
        // Only years this type can write back in the same form (found by
        // fuzzing: `+10000-…` was read but written in a form not read back).
        if !(1..=9999).contains(&chrono::Datelike::year(&t)) {
            return Err(bad());
        }
        Ok(UtcSecond::new(t))
    }
}

impl fmt::Display for UtcSecond {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0.to_rfc3339_opts(SecondsFormat::Secs, true))
    }
}

impl fmt::Debug for UtcSecond {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl Serialize for UtcSecond {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for UtcSecond {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn formats_with_z_to_the_second() {
        let t = Utc
            .with_ymd_and_hms(2026, 11, 29, 22, 0, 0)
            .single()
            .expect("valid")
            + chrono::Duration::milliseconds(750);
        let u = UtcSecond::new(t);
        assert_eq!(u.to_string(), "2026-11-29T22:00:00Z");
        let back: UtcSecond = u.to_string().parse().expect("parses");
        assert_eq!(back, u);
        assert!("yesterday".parse::<UtcSecond>().is_err());
        let naive: UtcSecond = "2026-11-29T22:00:00.123456".parse().expect("naive");
        assert_eq!(naive, u);
    }
}
