//! The tableinfo record (`/v1/tableinfo` of one table): what the sync
//! fetches and caches as raw JSON in `metadata/tables_info_raw_<lang>/`,
//! and what the apply reads back for the `meta` schema. Defined here, the
//! lowest layer both need; `statbank_client` re-exports it.

use serde::{Deserialize, Serialize};

use crate::{DataDir, Error, TableId};

/// A StatBank language: `da` (the default, what the facts are fetched
/// in) or `en`. Tableinfo is cached per language
/// (`metadata/tables_info_raw_<lang>/`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Lang {
    /// Danish: decimal comma in BULK values.
    #[default]
    Da,
    /// English: decimal point in BULK values.
    En,
}

impl Lang {
    /// Every language, Danish first.
    pub const ALL: [Lang; 2] = [Lang::Da, Lang::En];

    /// The query value.
    pub fn as_str(self) -> &'static str {
        match self {
            Lang::Da => "da",
            Lang::En => "en",
        }
    }

    /// The decimal separator of BULK values in this language.
    pub fn decimal_separator(self) -> u8 {
        match self {
            Lang::Da => b',',
            Lang::En => b'.',
        }
    }
}

impl std::str::FromStr for Lang {
    type Err = String;

    fn from_str(s: &str) -> Result<Lang, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "da" => Ok(Lang::Da),
            "en" => Ok(Lang::En),
            other => Err(format!("unknown language {other:?} (da or en)")),
        }
    }
}

impl std::fmt::Display for Lang {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

fn yes() -> bool {
    true
}

/// `/v1/tableinfo` of one table. Unknown fields are ignored; a missing
/// required field (`id`, `variables`, a value's `id`) is a decode error.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TableInfo {
    /// Table id.
    pub id: String,
    /// Title.
    #[serde(default)]
    pub text: String,
    /// Description.
    #[serde(default)]
    pub description: String,
    /// Unit.
    #[serde(default)]
    pub unit: String,
    /// The value shown for suppressed cells.
    #[serde(default)]
    pub suppressed_data_value: Option<String>,
    /// Last update (same token as the catalog's).
    #[serde(default)]
    pub updated: Option<String>,
    /// Whether the table is active.
    #[serde(default = "yes")]
    pub active: bool,
    /// Contacts.
    #[serde(default)]
    pub contacts: Vec<Contact>,
    /// Documentation link.
    #[serde(default)]
    pub documentation: Option<Documentation>,
    /// Footnote.
    #[serde(default)]
    pub footnote: Option<Footnote>,
    /// Variables; the time variable (`Tid`) comes last.
    pub variables: Vec<Variable>,
}

/// A contact person of a table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Contact {
    /// Name.
    #[serde(default)]
    pub name: String,
    /// Phone.
    #[serde(default)]
    pub phone: String,
    /// E-mail.
    #[serde(default)]
    pub mail: String,
}

/// Documentation of a table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Documentation {
    /// Id.
    #[serde(default)]
    pub id: Option<String>,
    /// URL.
    #[serde(default)]
    pub url: Option<String>,
}

/// A table footnote.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Footnote {
    /// Text.
    #[serde(default)]
    pub text: String,
    /// Whether it must be shown.
    #[serde(default)]
    pub mandatory: bool,
}

/// A variable of a table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Variable {
    /// Id (`OMRÅDE`, `Tid`); BULK headers upper-case it.
    pub id: String,
    /// Text (`område`).
    #[serde(default)]
    pub text: String,
    /// Whether it can be eliminated (summed over).
    #[serde(default)]
    pub elimination: bool,
    /// Whether it is the time variable.
    #[serde(default)]
    pub time: bool,
    /// Map name, on geographic variables.
    #[serde(default)]
    pub map: Option<String>,
    /// Values in display order.
    pub values: Vec<VariableValue>,
}

/// One value of a variable.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VariableValue {
    /// Code (`000`, `2024K1`).
    pub id: String,
    /// Text (`Hele landet`).
    #[serde(default)]
    pub text: String,
}

impl TableInfo {
    /// The time variable: the one marked `time`, else the one with id `Tid`.
    pub fn time_variable(&self) -> Option<&Variable> {
        self.variables.iter().find(|v| v.time).or_else(|| {
            self.variables
                .iter()
                .find(|v| v.id.eq_ignore_ascii_case("tid"))
        })
    }

    /// Number of values of every variable (time included), for batch sizing.
    pub fn value_counts(&self) -> Vec<usize> {
        self.variables.iter().map(|v| v.values.len()).collect()
    }
}

/// Most periods a table may list (the largest real table, a daily series,
/// has a few thousand).
pub const MAX_PERIODS: usize = 100_000;

/// The cached Danish tableinfo of `table` (`metadata/tables_info_raw_da/<ID>.json`,
/// on disk or on the object store); `Ok(None)` when there is none,
/// [`Error::Corrupt`] naming the file when it does not parse.
pub fn cached_tableinfo(data: &DataDir, table: &TableId) -> Result<Option<TableInfo>, Error> {
    cached_tableinfo_in(data, table, Lang::Da)
}

/// The cached tableinfo of `table` in `lang`
/// (`metadata/tables_info_raw_<lang>/<ID>.json`); as [`cached_tableinfo`].
pub fn cached_tableinfo_in(
    data: &DataDir,
    table: &TableId,
    lang: Lang,
) -> Result<Option<TableInfo>, Error> {
    data.read_json(&data.metadata_file_key_in(table, lang), "cached tableinfo")
}

/// Why `other` (the tableinfo of the same table in another language) does
/// not describe the same variables and values as `da`, the one the facts
/// were fetched with: `None` when it does (same variable ids in the same
/// order, each with the same value codes in the same order, the same
/// `updated`).
pub fn mismatch(da: &TableInfo, other: &TableInfo) -> Option<String> {
    if !da.id.eq_ignore_ascii_case(&other.id) {
        return Some(format!("it is of table {:?}", other.id));
    }
    if da.updated != other.updated {
        return Some(format!(
            "it was updated at {:?}, the Danish one at {:?}",
            other.updated, da.updated
        ));
    }
    let ids = |i: &TableInfo| i.variables.iter().map(|v| v.id.clone()).collect::<Vec<_>>();
    if ids(da) != ids(other) {
        return Some(format!(
            "its variables are {:?}, the Danish ones {:?}",
            ids(other),
            ids(da)
        ));
    }
    for (a, b) in da.variables.iter().zip(&other.variables) {
        if a.values.len() != b.values.len() {
            return Some(format!(
                "variable {} has {} values, {} in Danish",
                a.id,
                b.values.len(),
                a.values.len()
            ));
        }
        if let Some((x, y)) = a.values.iter().zip(&b.values).find(|(x, y)| x.id != y.id) {
            return Some(format!(
                "variable {} has value {:?} where the Danish one has {:?}",
                a.id, y.id, x.id
            ));
        }
    }
    None
}
