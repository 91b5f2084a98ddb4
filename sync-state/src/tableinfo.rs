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

/// At most this many examples of changed labels in a [`MetadataChange`].
pub const MAX_CHANGE_EXAMPLES: usize = 5;

/// What changed from `old` to `new` (two versions of a table's tableinfo
/// in `lang`): the table's texts, variables added and removed, and the
/// value labels added, removed and relabelled (the time variable's values
/// counted apart, as periods). `None` when nothing a reader sees changed
/// (`updated` alone is not such a change).
pub fn metadata_change(lang: Lang, old: &TableInfo, new: &TableInfo) -> Option<MetadataChange> {
    let mut c = MetadataChange {
        lang,
        ..MetadataChange::default()
    };
    let fields: [(&str, bool); 7] = [
        ("title", old.text != new.text),
        ("description", old.description != new.description),
        ("unit", old.unit != new.unit),
        ("footnote", old.footnote != new.footnote),
        ("documentation", old.documentation != new.documentation),
        ("contacts", old.contacts != new.contacts),
        ("active", old.active != new.active),
    ];
    c.fields = fields
        .iter()
        .filter(|(_, changed)| *changed)
        .map(|(f, _)| (*f).to_owned())
        .collect();
    let time = new.time_variable().map(|v| v.id.as_str());
    for v in &new.variables {
        let Some(before) = old.variables.iter().find(|o| o.id == v.id) else {
            c.variables_added.push(v.id.clone());
            continue;
        };
        if v.text != before.text {
            c.fields.push(format!("variable {}", v.id));
        }
        compare_values(&mut c, v, before, time == Some(v.id.as_str()));
    }
    c.variables_removed = old
        .variables
        .iter()
        .filter(|o| !new.variables.iter().any(|v| v.id == o.id))
        .map(|o| o.id.clone())
        .collect();
    (!c.is_empty()).then_some(c)
}

/// One variable's values, old against new, counted into `c`.
fn compare_values(c: &mut MetadataChange, new: &Variable, old: &Variable, is_time: bool) {
    let before: std::collections::HashMap<&str, &str> = old
        .values
        .iter()
        .map(|v| (v.id.as_str(), v.text.as_str()))
        .collect();
    let now: std::collections::HashSet<&str> = new.values.iter().map(|v| v.id.as_str()).collect();
    let removed = old.values.iter().filter(|v| !now.contains(v.id.as_str()));
    let (added, removed) = (
        new.values
            .iter()
            .filter(|v| !before.contains_key(v.id.as_str()))
            .count() as u64,
        removed.count() as u64,
    );
    if is_time {
        c.periods_added += added;
        c.periods_removed += removed;
    } else {
        c.labels_added += added;
        c.labels_removed += removed;
    }
    for v in &new.values {
        let Some(text) = before.get(v.id.as_str()) else {
            continue;
        };
        if *text != v.text {
            c.labels_relabelled += 1;
            if c.examples.len() < MAX_CHANGE_EXAMPLES {
                c.examples.push(LabelChange {
                    variable: new.id.clone(),
                    code: v.id.clone(),
                    before: (*text).to_owned(),
                    after: v.text.clone(),
                });
            }
        }
    }
}

/// What changed in one language's tableinfo of a table between two
/// syncs (in a table's run result, `metadata_changes`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MetadataChange {
    /// The language.
    pub lang: Lang,
    /// The texts that changed: `title`, `description`, `unit`, `footnote`,
    /// `documentation`, `contacts`, `active`, `variable <ID>` (a
    /// variable's text).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub fields: Vec<String>,
    /// Variables that are new.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub variables_added: Vec<String>,
    /// Variables that are gone.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub variables_removed: Vec<String>,
    /// Codes (of variables other than time) that are new.
    #[serde(default)]
    pub labels_added: u64,
    /// Codes that are gone.
    #[serde(default)]
    pub labels_removed: u64,
    /// Codes whose label text changed.
    #[serde(default)]
    pub labels_relabelled: u64,
    /// Periods (values of the time variable) that are new.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub periods_added: u64,
    /// Periods that are gone.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub periods_removed: u64,
    /// The first relabellings (at most [`MAX_CHANGE_EXAMPLES`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub examples: Vec<LabelChange>,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

impl MetadataChange {
    /// Whether nothing changed.
    pub fn is_empty(&self) -> bool {
        self.fields.is_empty()
            && self.variables_added.is_empty()
            && self.variables_removed.is_empty()
            && self.labels_added == 0
            && self.labels_removed == 0
            && self.labels_relabelled == 0
            && self.periods_added == 0
            && self.periods_removed == 0
    }
}

impl std::fmt::Display for MetadataChange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut parts: Vec<String> = Vec::new();
        if !self.fields.is_empty() {
            parts.push(format!("changed {}", self.fields.join(", ")));
        }
        for (n, what) in [
            (self.labels_added, "label(s) added"),
            (self.labels_removed, "label(s) removed"),
            (self.labels_relabelled, "relabelled"),
            (self.periods_added, "period(s) added"),
            (self.periods_removed, "period(s) removed"),
        ] {
            if n > 0 {
                parts.push(format!("{n} {what}"));
            }
        }
        if !self.variables_added.is_empty() {
            parts.push(format!(
                "variables added {}",
                self.variables_added.join(",")
            ));
        }
        if !self.variables_removed.is_empty() {
            parts.push(format!(
                "variables removed {}",
                self.variables_removed.join(",")
            ));
        }
        write!(f, "{}: {}", self.lang.as_str(), parts.join("; "))?;
        for e in &self.examples {
            write!(
                f,
                "; {} {}: {:?} → {:?}",
                e.variable, e.code, e.before, e.after
            )?;
        }
        Ok(())
    }
}

/// One relabelled code.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LabelChange {
    /// The variable's id.
    pub variable: String,
    /// The code.
    pub code: String,
    /// The label before.
    pub before: String,
    /// The label now.
    pub after: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn folk1a() -> TableInfo {
        serde_json::from_str(include_str!(
            "../../statbank-client/testdata/tableinfo_FOLK1A_da.json"
        ))
        .expect("the recorded FOLK1A tableinfo decodes")
    }

    #[test]
    fn the_same_tableinfo_has_no_change_and_updated_alone_is_none() {
        let old = folk1a();
        let mut new = old.clone();
        assert_eq!(metadata_change(Lang::Da, &old, &new), None);
        new.updated = Some("2030-01-01T08:00:00".into());
        assert_eq!(metadata_change(Lang::Da, &old, &new), None);
    }

    #[test]
    fn relabels_additions_removals_and_periods_are_told_apart() {
        let old = folk1a();
        let mut new = old.clone();
        new.text = "Befolkningen".into();
        let kon = new
            .variables
            .iter_mut()
            .find(|v| v.id == "KØN")
            .expect("FOLK1A has KØN");
        let before = kon.values[1].text.clone();
        kon.values[1].text = "Mænd i alt".into();
        kon.values.push(VariableValue {
            id: "9".into(),
            text: "Uoplyst".into(),
        });
        let omrade = new
            .variables
            .iter_mut()
            .find(|v| v.id == "OMRÅDE")
            .expect("FOLK1A has OMRÅDE");
        omrade.values.retain(|v| v.id != "101");
        let time = new.variables.iter_mut().find(|v| v.time).expect("time");
        time.values.push(VariableValue {
            id: "2099K1".into(),
            text: "2099K1".into(),
        });
        let c = metadata_change(Lang::Da, &old, &new).expect("a change");
        assert_eq!(c.fields, vec!["title".to_owned()]);
        assert_eq!(
            (c.labels_added, c.labels_removed, c.labels_relabelled),
            (1, 1, 1)
        );
        assert_eq!((c.periods_added, c.periods_removed), (1, 0));
        assert_eq!(
            c.examples,
            vec![LabelChange {
                variable: "KØN".into(),
                code: "1".into(),
                before,
                after: "Mænd i alt".into(),
            }]
        );
        let text = c.to_string();
        assert!(
            text.starts_with("da: changed title; 1 label(s) added"),
            "{text}"
        );
    }
}
