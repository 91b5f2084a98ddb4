//! Frequency inference, overrides and refresh windows (`docs/sync.md`, "Frequency" and "Period selection").

use std::collections::BTreeMap;
use std::fmt;
use std::sync::OnceLock;

use regex::Regex;
use serde::{Deserialize, Serialize};

use crate::{DataDir, Error, TableId, Tid};

/// How often a table gets a new period. The JSON tokens are exactly
/// `daily`, `weekly`, `monthly`, `quarterly`, `half_yearly`, `yearly`, `other`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Frequency {
    /// `1977M01D03`
    Daily,
    /// `2024U01`
    Weekly,
    /// `2024M01`
    Monthly,
    /// `2024K1`
    Quarterly,
    /// `2024H1`
    HalfYearly,
    /// `2024`
    Yearly,
    /// anything else (`2020/2021`, `1840:1849`, `AUG - DEC 2019`)
    Other,
}

impl Frequency {
    /// Every frequency.
    pub const ALL: [Frequency; 7] = [
        Frequency::Daily,
        Frequency::Weekly,
        Frequency::Monthly,
        Frequency::Quarterly,
        Frequency::HalfYearly,
        Frequency::Yearly,
        Frequency::Other,
    ];

    /// The JSON token.
    pub fn as_str(self) -> &'static str {
        match self {
            Frequency::Daily => "daily",
            Frequency::Weekly => "weekly",
            Frequency::Monthly => "monthly",
            Frequency::Quarterly => "quarterly",
            Frequency::HalfYearly => "half_yearly",
            Frequency::Yearly => "yearly",
            Frequency::Other => "other",
        }
    }

    /// Parses a JSON token; `None` for anything else.
    pub fn from_token(s: &str) -> Option<Frequency> {
        Frequency::ALL.into_iter().find(|f| f.as_str() == s)
    }

    /// How many trailing periods are re-fetched every sync (`docs/sync.md`, "Period selection").
    pub fn refresh_window(self) -> usize {
        match self {
            Frequency::Daily => 14,
            Frequency::Weekly => 12,
            Frequency::Monthly => 18,
            Frequency::Quarterly => 8,
            Frequency::HalfYearly => 6,
            Frequency::Yearly => 4,
            Frequency::Other => 2,
        }
    }

    /// The frequency of one period code, by the patterns of `docs/sync.md`, "Frequency".
    pub fn of_code(code: &str) -> Frequency {
        static PATTERNS: OnceLock<Vec<(Regex, Frequency)>> = OnceLock::new();
        let patterns = PATTERNS.get_or_init(|| {
            [
                (r"^\d{4}$", Frequency::Yearly),
                (r"^\d{4}K[1-4]$", Frequency::Quarterly),
                (r"^\d{4}M\d{2}$", Frequency::Monthly),
                (r"^\d{4}U\d{2}$", Frequency::Weekly),
                (r"^\d{4}M\d{2}D\d{2}$", Frequency::Daily),
                (r"^\d{4}H[12]$", Frequency::HalfYearly),
            ]
            .into_iter()
            .filter_map(|(p, f)| Regex::new(p).ok().map(|r| (r, f)))
            .collect()
        });
        patterns
            .iter()
            .find(|(r, _)| r.is_match(code))
            .map_or(Frequency::Other, |(_, f)| *f)
    }
}

impl fmt::Display for Frequency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Infers a table's frequency from its last non-empty period code
/// (`docs/sync.md`, "Frequency"); `other` when there is none.
///
/// ```
/// use sync_state::{infer_frequency, Frequency, Tid};
/// let tids: Vec<Tid> = ["2024K1", "2024K2"].iter().map(|t| Tid::new(*t).unwrap()).collect();
/// assert_eq!(infer_frequency(&tids), Frequency::Quarterly);
/// ```
pub fn infer_frequency(tids: &[Tid]) -> Frequency {
    tids.iter()
        .rev()
        .map(|t| t.as_str().trim())
        .find(|t| !t.is_empty())
        .map_or(Frequency::Other, Frequency::of_code)
}

/// `frequency_overrides.json`: `{"TABLE_ID": "monthly"}`. Entries whose value
/// is not a frequency token (or whose key is not a table id) are ignored, as
/// in the original.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FrequencyOverrides {
    map: BTreeMap<TableId, Frequency>,
    ignored: Vec<String>,
}

impl FrequencyOverrides {
    /// Loads the overrides file; absent means none; a file that is not a JSON
    /// object is [`Error::Corrupt`].
    pub fn load(dir: &DataDir) -> Result<FrequencyOverrides, Error> {
        let raw: Option<BTreeMap<String, serde_json::Value>> =
            dir.read_json(&dir.overrides_key(), "frequency overrides")?;
        Ok(FrequencyOverrides::from_map(raw.unwrap_or_default()))
    }

    /// Builds overrides from raw entries.
    pub fn from_map(raw: BTreeMap<String, serde_json::Value>) -> FrequencyOverrides {
        let mut out = FrequencyOverrides::default();
        for (k, v) in raw {
            match (TableId::new(&k), v.as_str().and_then(Frequency::from_token)) {
                (Ok(id), Some(f)) => {
                    out.map.insert(id, f);
                }
                _ => out.ignored.push(k),
            }
        }
        out
    }

    /// The override for `table`, if any.
    pub fn get(&self, table: &TableId) -> Option<Frequency> {
        self.map.get(table).copied()
    }

    /// Keys that were ignored because their value or id was invalid.
    pub fn ignored(&self) -> &[String] {
        &self.ignored
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tids(codes: &[&str]) -> Vec<Tid> {
        codes.iter().map(|c| Tid::new(*c).expect("tid")).collect()
    }

    #[test]
    fn infers_the_seven_tokens() {
        let cases = [
            ("1977M01D03", Frequency::Daily),
            ("2024U01", Frequency::Weekly),
            ("2024M01", Frequency::Monthly),
            ("2024K4", Frequency::Quarterly),
            ("2024H2", Frequency::HalfYearly),
            ("2024", Frequency::Yearly),
            ("2020/2021", Frequency::Other),
            ("1840:1849", Frequency::Other),
            ("AUG - DEC 2019", Frequency::Other),
            ("2014U30-41", Frequency::Other),
            ("2024K5", Frequency::Other),
        ];
        for (code, f) in cases {
            assert_eq!(infer_frequency(&tids(&[code])), f, "{code}");
        }
        assert_eq!(infer_frequency(&[]), Frequency::Other);
        // the last non-empty value decides
        assert_eq!(
            infer_frequency(&tids(&["2019", "2020K1", " "])),
            Frequency::Quarterly
        );
        for f in Frequency::ALL {
            assert_eq!(Frequency::from_token(f.as_str()), Some(f));
            assert_eq!(
                serde_json::to_string(&f).expect("json"),
                format!("\"{}\"", f.as_str())
            );
        }
    }

    #[test]
    fn overrides_ignore_invalid_tokens() {
        let raw: BTreeMap<String, serde_json::Value> = serde_json::from_str(
            r#"{"FOLK1A": "monthly", "BIL10": "fortnightly", "../x": "daily", "METROX1": 3}"#,
        )
        .expect("json");
        let o = FrequencyOverrides::from_map(raw);
        assert_eq!(
            o.get(&TableId::new("FOLK1A").expect("id")),
            Some(Frequency::Monthly)
        );
        assert_eq!(o.get(&TableId::new("BIL10").expect("id")), None);
        assert_eq!(o.ignored().len(), 3);
    }

    #[test]
    fn corrupt_overrides_name_the_file() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = DataDir::local(tmp.path());
        dir.storage()
            .put(&dir.overrides_key(), b"[1,2")
            .expect("write");
        let err = FrequencyOverrides::load(&dir).expect_err("corrupt");
        assert!(
            err.to_string().contains("frequency_overrides.json"),
            "{err}"
        );
    }
}
