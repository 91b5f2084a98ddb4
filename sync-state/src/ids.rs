//! Identifier newtypes shared by every layer: [`TableId`], [`Tid`] and [`RunId`].

use std::fmt;

use chrono::{DateTime, Utc};
use percent_encoding::{percent_decode_str, utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use serde::{Deserialize, Serialize};

use crate::Error;

/// Longest table id accepted.
///
/// Every id of the real catalog (2,339 tables) is upper-case ASCII letters
/// and digits, at most 8 characters long. 20 leaves room for longer ids
/// while every name derived from an id (the fact table, its history, its
/// partitions and staging tables, whose suffixes add up to 43 bytes) stays
/// within Postgres's 63-byte identifiers.
pub const MAX_TABLE_ID_LEN: usize = 20;
/// Longest file name a partition may get (`<quoted tid>.parquet`), the common
/// file-system limit.
pub const MAX_PARTITION_FILE_NAME: usize = 255;
/// Longest run id accepted.
pub const MAX_RUN_ID_LEN: usize = 128;

/// Python's `urllib.parse.quote(s, safe="")`: everything but ASCII letters,
/// digits and `_.-~` is percent-encoded (UTF-8 bytes, upper-case hex).
const QUOTE_SET: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'_')
    .remove(b'.')
    .remove(b'-')
    .remove(b'~');

/// A StatBank table id such as `FOLK1A`.
///
/// Ids come from the network and end up in file paths and SQL names, so
/// only the form real ids have is accepted: ASCII letters and digits, 1 to
/// [`MAX_TABLE_ID_LEN`] of them (`[A-Z0-9]{1,20}` once upper-cased). Ids
/// are case-insensitive at the API and stored upper-cased. No id holds `_`:
/// every name the apply derives from an id (`folk1a_2024K1`,
/// `folk1a__stage0`, …) has one, so none of them can be another table's
/// fact table.
///
/// ```
/// use sync_state::TableId;
/// let id = TableId::new("folk1a").unwrap();
/// assert_eq!(id.as_str(), "FOLK1A");
/// assert_eq!(id.fact_table_name(), "folk1a");
/// assert!(TableId::new("../../etc").is_err());
/// assert!(TableId::new("S__STAGE0").is_err());
/// ```
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct TableId(Box<str>);

impl TableId {
    /// Validates and upper-cases a table id.
    pub fn new(id: impl AsRef<str>) -> Result<TableId, Error> {
        let id = id.as_ref();
        let ok = !id.is_empty()
            && id.len() <= MAX_TABLE_ID_LEN
            && id.bytes().all(|b| b.is_ascii_alphanumeric());
        if ok {
            Ok(TableId(id.to_ascii_uppercase().into()))
        } else {
            Err(Error::InvalidTableId {
                id: truncate_for_message(id),
            })
        }
    }

    /// The id as sent by the API (upper case).
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Name of the Postgres table in schema `fact`: the id lower-cased.
    pub fn fact_table_name(&self) -> String {
        self.0.to_ascii_lowercase()
    }
}

impl TryFrom<String> for TableId {
    type Error = Error;
    fn try_from(s: String) -> Result<Self, Error> {
        TableId::new(s)
    }
}

impl From<TableId> for String {
    fn from(id: TableId) -> String {
        id.0.into()
    }
}

impl std::str::FromStr for TableId {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        TableId::new(s)
    }
}

impl fmt::Display for TableId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for TableId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

impl AsRef<str> for TableId {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

/// A time period code (`Tid`) such as `2024K3`, `2020/2021` or `AUG - DEC 2019`.
///
/// Any text is a period code, as long as it has no control characters and its
/// partition file name (`<quoted>.parquet`) fits in 255 bytes.
///
/// ```
/// use sync_state::Tid;
/// let tid = Tid::new("2020/2021").unwrap();
/// assert_eq!(tid.file_stem(), "2020%2F2021");
/// assert_eq!(Tid::from_file_stem("2020%2F2021").unwrap(), tid);
/// ```
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Tid(Box<str>);

impl Tid {
    /// Validates a period code.
    pub fn new(code: impl Into<String>) -> Result<Tid, Error> {
        let code = code.into();
        if code.is_empty() {
            return Err(Error::InvalidTid {
                tid: code,
                reason: "empty period code",
            });
        }
        if code.chars().any(char::is_control) {
            return Err(Error::InvalidTid {
                tid: truncate_for_message(&code),
                reason: "control character in period code",
            });
        }
        // `.` is not quoted in file names (as in the original's layout), so
        // a leading `.` would give a hidden file that listing skips (found
        // by fuzzing). No real period code starts with one.
        if code.starts_with('.') {
            return Err(Error::InvalidTid {
                tid: truncate_for_message(&code),
                reason: "period code starts with '.'",
            });
        }
        let quoted_len: usize = utf8_percent_encode(&code, QUOTE_SET).map(str::len).sum();
        if quoted_len + ".parquet".len() > MAX_PARTITION_FILE_NAME {
            return Err(Error::InvalidTid {
                tid: truncate_for_message(&code),
                reason: "period code too long for a file name",
            });
        }
        Ok(Tid(code.into()))
    }

    /// The period code as sent by the API.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The partition file stem: the code URL-quoted with no safe characters,
    /// as Python's `quote(tid, safe="")` does.
    pub fn file_stem(&self) -> String {
        utf8_percent_encode(&self.0, QUOTE_SET).to_string()
    }

    /// The reverse of [`Tid::file_stem`]. Returns an error for a stem that is
    /// not the canonical quoting of a valid period code, so a stray file name
    /// is never taken for a partition.
    pub fn from_file_stem(stem: &str) -> Result<Tid, Error> {
        let bad = |reason| Error::InvalidTid {
            tid: truncate_for_message(stem),
            reason,
        };
        let decoded = percent_decode_str(stem)
            .decode_utf8()
            .map_err(|_| bad("file stem does not decode to UTF-8"))?;
        let tid = Tid::new(decoded.into_owned())?;
        if tid.file_stem() != stem {
            return Err(bad("file stem is not the canonical quoting"));
        }
        Ok(tid)
    }
}

impl TryFrom<String> for Tid {
    type Error = Error;
    fn try_from(s: String) -> Result<Self, Error> {
        Tid::new(s)
    }
}

impl TryFrom<&str> for Tid {
    type Error = Error;
    fn try_from(s: &str) -> Result<Self, Error> {
        Tid::new(s)
    }
}

impl From<Tid> for String {
    fn from(t: Tid) -> String {
        t.0.into()
    }
}

impl std::str::FromStr for Tid {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        Tid::new(s)
    }
}

impl fmt::Display for Tid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Tid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

impl AsRef<str> for Tid {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

/// The id of one sync run, by default its UTC start time `20261129T220000Z`.
///
/// Run ids name manifest files, so only ASCII letters, digits, `_`, `-` and
/// `.` are accepted and the id may not start with `.`.
///
/// ```
/// use sync_state::RunId;
/// use chrono::{TimeZone, Utc};
/// let now = Utc.with_ymd_and_hms(2026, 11, 29, 22, 0, 0).unwrap();
/// assert_eq!(RunId::from_time(now).as_str(), "20261129T220000Z");
/// assert!(RunId::new("../x").is_err());
/// ```
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct RunId(String);

impl RunId {
    /// Validates a run id.
    pub fn new(id: impl Into<String>) -> Result<RunId, Error> {
        let id = id.into();
        let ok = !id.is_empty()
            && id.len() <= MAX_RUN_ID_LEN
            && !id.starts_with('.')
            && id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
        if ok {
            Ok(RunId(id))
        } else {
            Err(Error::InvalidRunId {
                id: truncate_for_message(&id),
            })
        }
    }

    /// The default run id for a run started at `now`: `%Y%m%dT%H%M%SZ`.
    pub fn from_time(now: DateTime<Utc>) -> RunId {
        RunId(now.format("%Y%m%dT%H%M%SZ").to_string())
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for RunId {
    type Error = Error;
    fn try_from(s: String) -> Result<Self, Error> {
        RunId::new(s)
    }
}

impl From<RunId> for String {
    fn from(r: RunId) -> String {
        r.0
    }
}

impl std::str::FromStr for RunId {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        RunId::new(s)
    }
}

impl fmt::Display for RunId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for RunId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

/// Cuts hostile input down to a size that fits in an error message.
pub(crate) fn truncate_for_message(s: &str) -> String {
    let clean: String = s
        .chars()
        .map(|c| if c.is_control() { '\u{fffd}' } else { c })
        .collect();
    crate::shorten(&clean, 80)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn quoting_matches_python_quote_with_no_safe_characters() {
        let cases = [
            ("2024K3", "2024K3"),
            ("2020/2021", "2020%2F2021"),
            ("1840:1849", "1840%3A1849"),
            ("AUG - DEC 2019", "AUG%20-%20DEC%202019"),
            ("2014U30-41", "2014U30-41"),
            ("a_b.c~d", "a_b.c~d"),
            ("æøå", "%C3%A6%C3%B8%C3%A5"),
            ("50%", "50%25"),
        ];
        for (tid, stem) in cases {
            let t = Tid::new(tid).expect("valid tid");
            assert_eq!(t.file_stem(), stem, "{tid}");
            assert_eq!(Tid::from_file_stem(stem).expect("stem decodes"), t);
        }
    }

    #[test]
    fn hostile_ids_are_rejected() {
        for id in [
            "",
            "../../etc",
            "A/B",
            "A\0B",
            "-rf",
            "A B",
            "ÆØ",
            "S__STAGE0",
            "P_2023",
            "A-B",
        ] {
            assert!(TableId::new(id).is_err(), "{id:?}");
        }
        assert!(TableId::new("X".repeat(MAX_TABLE_ID_LEN + 1)).is_err());
        assert!(TableId::new("X".repeat(MAX_TABLE_ID_LEN)).is_ok());
        assert!(Tid::new("2024\nK1").is_err());
        assert!(Tid::new("9".repeat(10_000)).is_err());
        assert!(Tid::new("").is_err());
        // a non-canonical stem is not a partition
        assert!(Tid::from_file_stem("2020%2f2021").is_err());
        assert!(Tid::from_file_stem("%ZZ").is_err());
        assert!(RunId::new("../evil").is_err());
        assert!(RunId::new(".hidden").is_err());
        assert!(RunId::new("a/b").is_err());
    }

    #[test]
    fn serde_round_trips_and_validates() {
        let id: TableId = serde_json::from_str("\"folk1a\"").expect("decodes");
        assert_eq!(serde_json::to_string(&id).expect("encodes"), "\"FOLK1A\"");
        assert!(serde_json::from_str::<TableId>("\"../x\"").is_err());
        let run: RunId = serde_json::from_str("\"20261129T220000Z\"").expect("decodes");
        assert_eq!(run.as_str(), "20261129T220000Z");
    }

    proptest! {
        #[test]
        fn any_valid_tid_round_trips_through_its_file_name(s in "\\PC{1,40}") {
            if let Ok(t) = Tid::new(s.clone()) {
                let stem = t.file_stem();
                prop_assert!(stem.bytes().all(|b| b.is_ascii_alphanumeric() || b"%_.-~".contains(&b)));
                prop_assert_eq!(Tid::from_file_stem(&stem).expect("round trip"), t);
            }
        }

        #[test]
        fn table_ids_round_trip(s in "[A-Za-z0-9]{1,20}") {
            let id = TableId::new(&s).expect("valid");
            prop_assert_eq!(TableId::new(id.as_str()).expect("valid"), id.clone());
            prop_assert_eq!(id.as_str(), s.to_ascii_uppercase());
        }

        #[test]
        fn run_ids_round_trip(s in "[A-Za-z0-9_-][A-Za-z0-9_.-]{0,40}") {
            let id = RunId::new(s.clone()).expect("valid");
            let json = serde_json::to_string(&id).expect("encodes");
            prop_assert_eq!(serde_json::from_str::<RunId>(&json).expect("decodes"), id);
        }
    }
}
