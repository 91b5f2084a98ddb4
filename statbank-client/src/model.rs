//! Typed request and response models of the StatBank API.

use serde::{Deserialize, Serialize};
pub use sync_state::tableinfo::{
    Contact, Documentation, Footnote, Lang, TableInfo, Variable, VariableValue, MAX_PERIODS,
};
use sync_state::{TableId, Tid};

/// One entry of `/v1/tables`.
///
/// `id` stays a plain string here: a hostile or odd id must not make the
/// whole catalog undecodable; validate it with [`CatalogEntry::table_id`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CatalogEntry {
    /// Table id, upper case (`FOLK1A`).
    pub id: String,
    /// Title.
    #[serde(default)]
    pub text: String,
    /// Unit (`Antal`).
    #[serde(default)]
    pub unit: String,
    /// Last update, `YYYY-MM-DDTHH:MM:SS` (Copenhagen time); an opaque
    /// version token: compare for equality only.
    pub updated: String,
    /// First period code.
    #[serde(default)]
    pub first_period: Option<String>,
    /// Latest period code.
    #[serde(default)]
    pub latest_period: Option<String>,
    /// Whether the table is active.
    #[serde(default = "yes")]
    pub active: bool,
    /// Variable texts (lower case), not ids.
    #[serde(default)]
    pub variables: Vec<String>,
}

fn yes() -> bool {
    true
}

impl CatalogEntry {
    /// The validated table id.
    pub fn table_id(&self) -> Result<TableId, sync_state::Error> {
        TableId::new(&self.id)
    }

    /// One catalog element, decoded and checked: an object with a valid
    /// table id and an `updated` that is an instant (then in its canonical
    /// form). The error says what is wrong, in words.
    fn checked(item: serde_json::Value) -> Result<CatalogEntry, String> {
        if !item.is_object() {
            return Err("entry is not an object".into());
        }
        let mut e: CatalogEntry = serde_json::from_value(item).map_err(|e| e.to_string())?;
        e.table_id().map_err(|e| e.to_string())?;
        e.updated = sync_state::canonical_source_time(&e.updated).ok_or_else(|| {
            format!(
                "updated {:?} is not an instant (YYYY-MM-DDTHH:MM:SS)",
                sync_state::shorten(&e.updated, 40)
            )
        })?;
        Ok(e)
    }
}

/// The catalog as decoded: the usable entries, and the entries set aside
/// (each one alone: one malformed entry never costs the others).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Catalog {
    /// Entries that decode, with a valid table id and an `updated` that is
    /// an instant (rewritten in its canonical form,
    /// [`sync_state::canonical_source_time`]).
    pub tables: Vec<CatalogEntry>,
    /// Entries set aside, in catalog order.
    pub rejected: Vec<RejectedEntry>,
}

/// A catalog entry that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RejectedEntry {
    /// Its position in the catalog (0-based).
    pub index: usize,
    /// Its `id`, when that is a string (shortened).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// Why it was set aside.
    pub error: String,
}

impl Catalog {
    /// Decodes a `/v1/tables` body: it must be a JSON array; each element
    /// is decoded, and checked, on its own.
    pub fn from_json(body: &[u8]) -> Result<Catalog, serde_json::Error> {
        let items: Vec<serde_json::Value> = serde_json::from_slice(body)?;
        let mut out = Catalog::default();
        for (index, item) in items.into_iter().enumerate() {
            let id = item
                .get("id")
                .and_then(|v| v.as_str())
                .map(|s| sync_state::shorten(s, 80));
            match CatalogEntry::checked(item) {
                Ok(e) => out.tables.push(e),
                Err(error) => out.rejected.push(RejectedEntry { index, id, error }),
            }
        }
        Ok(out)
    }

    /// The number of entries, used or not.
    pub fn len(&self) -> usize {
        self.tables.len() + self.rejected.len()
    }

    /// Whether the catalog had no entry at all.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Parameters of `/v1/tables`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TablesRequest {
    /// Language (the client's default when `None`).
    pub lang: Option<Lang>,
    /// Only tables of these subjects.
    pub subjects: Vec<String>,
    /// Only tables updated in the last N days.
    pub past_days: Option<u32>,
    /// Include inactive tables.
    pub include_inactive: bool,
}

/// The period codes of a tableinfo, as the sync stores them.
pub trait TableInfoExt {
    /// The remote period codes, in the API's order. Errors (naming the
    /// table) when the table has no time variable, lists more than
    /// [`MAX_PERIODS`], or a period code cannot be stored.
    fn tids(&self) -> Result<Vec<Tid>, crate::Error>;
}

impl TableInfoExt for TableInfo {
    fn tids(&self) -> Result<Vec<Tid>, crate::Error> {
        let table = sync_state::shorten(&self.id, 40);
        let var = self
            .time_variable()
            .ok_or_else(|| crate::Error::NoTimeVariable {
                table: table.clone(),
            })?;
        if var.values.len() > MAX_PERIODS {
            return Err(crate::Error::TooManyPeriods {
                table,
                count: var.values.len(),
            });
        }
        var.values
            .iter()
            .map(|v| {
                Tid::new(v.id.clone()).map_err(|source| crate::Error::InvalidPeriod {
                    table: table.clone(),
                    source,
                })
            })
            .collect()
    }
}

/// How cells are presented in BULK output.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ValuePresentation {
    /// Codes (`000`, `TOT`): what the sync uses.
    #[default]
    Code,
    /// The API default: value texts (`Hele landet`).
    Text,
}

/// A selection of values of one variable in a data request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VariableSelection {
    /// Variable id.
    pub code: String,
    /// Value codes or expressions (`*`, `2023*`, `(-n+5)`).
    pub values: Vec<String>,
}

/// A `/v1/data` request in format BULK.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataRequest {
    /// The table.
    pub table: TableId,
    /// Language (the client's default when `None`).
    pub lang: Option<Lang>,
    /// Cell presentation.
    pub value_presentation: ValuePresentation,
    /// One selection per variable (BULK requires every variable).
    pub variables: Vec<VariableSelection>,
    /// How many rows the request is expected to return, at most (the
    /// product of the selected value counts): bounds how long its body may
    /// stream ([`crate::BulkTimeout::Derived`]). Not sent.
    pub expected_rows: u64,
}

impl DataRequest {
    /// The sync's request: every non-time variable `*`, the time variable
    /// restricted to `tids` (`docs/sync.md`, "BULK request").
    pub fn all_values_for_periods(table: TableId, info: &TableInfo, tids: &[Tid]) -> DataRequest {
        let time_id = info.time_variable().map(|v| v.id.clone());
        let variables = info
            .variables
            .iter()
            .map(|v| {
                if Some(&v.id) == time_id.as_ref() {
                    VariableSelection {
                        code: v.id.clone(),
                        values: tids.iter().map(|t| t.as_str().to_string()).collect(),
                    }
                } else {
                    VariableSelection {
                        code: v.id.clone(),
                        values: vec!["*".into()],
                    }
                }
            })
            .collect();
        let expected_rows = info
            .variables
            .iter()
            .filter(|v| Some(&v.id) != time_id.as_ref())
            .fold(tids.len() as u64, |n, v| {
                n.saturating_mul(v.values.len().max(1) as u64)
            });
        DataRequest {
            table,
            lang: None,
            value_presentation: ValuePresentation::Code,
            variables,
            expected_rows,
        }
    }

    pub(crate) fn body(&self, lang: Lang) -> serde_json::Value {
        let mut body = serde_json::json!({
            "table": self.table.as_str(),
            "format": "BULK",
            "lang": self.lang.unwrap_or(lang).as_str(),
            "variables": self.variables,
        });
        if self.value_presentation == ValuePresentation::Code {
            body["valuePresentation"] = "Code".into();
        }
        body
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> String {
        let path = format!("{}/testdata/{name}", env!("CARGO_MANIFEST_DIR"));
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
    }

    #[test]
    fn catalog_entries_are_checked_one_by_one_and_updated_made_canonical() {
        let body = br#"[
            {"id":"FOLK1A","updated":"2024-08-12T08:00:00"},
            {"id":"ZULU","updated":"2024-08-12T06:00:00Z"},
            {"id":"SPACE","updated":"2024-08-12 08:00:00.500"},
            {"id":7,"updated":"2024-08-12T08:00:00"},
            {"id":"A_B","updated":"2024-08-12T08:00:00"},
            {"id":"NOW","updated":"now"},
            {"id":"ACTIVE","updated":"2024-08-12T08:00:00","active":"yes"},
            null
        ]"#;
        let c = Catalog::from_json(body).expect("an array");
        let used: Vec<(&str, &str)> = c
            .tables
            .iter()
            .map(|e| (e.id.as_str(), e.updated.as_str()))
            .collect();
        assert_eq!(
            used,
            [
                ("FOLK1A", "2024-08-12T08:00:00"),
                ("ZULU", "2024-08-12T08:00:00"),
                ("SPACE", "2024-08-12T08:00:00.500")
            ]
        );
        let rejected: Vec<usize> = c.rejected.iter().map(|r| r.index).collect();
        assert_eq!(rejected, [3, 4, 5, 6, 7]);
        assert_eq!(c.len(), 8);
        assert!(
            c.rejected[2].error.contains("not an instant"),
            "{:?}",
            c.rejected[2]
        );
        assert!(Catalog::from_json(b"{\"id\":1}").is_err(), "not an array");
    }

    #[test]
    fn the_bulk_timeout_is_derived_from_the_expected_rows() {
        use crate::BulkTimeout;
        use std::time::Duration;
        let info: TableInfo =
            serde_json::from_str(&fixture("tableinfo_FOLK1A_da.json")).expect("parses");
        let tids = info.tids().expect("tids");
        let req = DataRequest::all_values_for_periods(
            TableId::new("FOLK1A").expect("id"),
            &info,
            &tids[..2],
        );
        let cells: u64 = info
            .variables
            .iter()
            .filter(|v| !v.time)
            .map(|v| v.values.len() as u64)
            .product();
        assert_eq!(req.expected_rows, cells * 2);
        let t = BulkTimeout::default()
            .for_rows(req.expected_rows)
            .expect("bounded");
        assert!(
            t >= BulkTimeout::DERIVED_BASE && t < Duration::from_secs(3600),
            "{t:?}"
        );
        assert_eq!(
            BulkTimeout::Derived.for_rows(50_000_000),
            Some(Duration::from_secs(600 + 5000))
        );
        assert_eq!(BulkTimeout::Unbounded.for_rows(1), None);
    }

    #[test]
    fn real_tableinfo_fixtures_parse() {
        let folk: TableInfo =
            serde_json::from_str(&fixture("tableinfo_FOLK1A_da.json")).expect("FOLK1A");
        assert_eq!(folk.id, "FOLK1A");
        let ids: Vec<&str> = folk.variables.iter().map(|v| v.id.as_str()).collect();
        assert_eq!(ids, ["OMRÅDE", "KØN", "ALDER", "CIVILSTAND", "Tid"]);
        assert_eq!(
            folk.variables[0].map.as_deref(),
            Some("Denmark_municipality_07")
        );
        assert_eq!(folk.variables[0].values[0].id, "000");
        let tids = folk.tids().expect("tids");
        assert!(tids.iter().all(
            |t| sync_state::Frequency::of_code(t.as_str()) == sync_state::Frequency::Quarterly
        ));
        assert_eq!(
            sync_state::infer_frequency(&tids),
            sync_state::Frequency::Quarterly
        );

        let bil: TableInfo =
            serde_json::from_str(&fixture("tableinfo_BIL10_da.json")).expect("BIL10");
        assert!(bil.footnote.as_ref().is_some_and(|f| f.mandatory));
        assert_eq!(
            sync_state::infer_frequency(&bil.tids().expect("tids")),
            sync_state::Frequency::Yearly
        );

        let metro: TableInfo =
            serde_json::from_str(&fixture("tableinfo_METROX1_en.json")).expect("METROX1");
        assert!(metro.documentation.is_none());
        assert_eq!(metro.variables[0].id, "SÆSON");
        assert_eq!(
            sync_state::infer_frequency(&metro.tids().expect("tids")),
            sync_state::Frequency::Weekly
        );
    }

    #[test]
    fn real_catalog_head_parses() {
        // The recording is cut off mid-array: keep its complete entries.
        let text = fixture("tables_da_head_2024-08-12.json");
        let cut = text.rfind("},").expect("complete entries");
        let json = format!("{}}}]", &text[..cut]);
        let entries: Vec<CatalogEntry> = serde_json::from_str(&json).expect("catalog");
        assert!(entries.len() >= 4);
        assert_eq!(entries[0].id, "FOLK1A");
        assert_eq!(entries[0].updated, "2024-08-12T08:00:00");
        assert_eq!(entries[0].first_period.as_deref(), Some("2008K1"));
        assert_eq!(
            entries[0].variables,
            ["område", "køn", "alder", "civilstand", "tid"]
        );
        assert!(entries.iter().all(|e| e.table_id().is_ok() && e.active));
    }

    #[test]
    fn unknown_fields_are_tolerated_and_missing_ones_named() {
        let info: TableInfo = serde_json::from_str(
            r#"{"id":"X","variables":[{"id":"Tid","time":true,"values":[{"id":"2024","text":"2024","extra":1}]}],"newField":true}"#,
        )
        .expect("tolerant");
        assert_eq!(info.tids().expect("tids").len(), 1);
        let err = serde_json::from_str::<TableInfo>(
            r#"{"id":"X","variables":[{"id":"Tid","time":true}]}"#,
        )
        .expect_err("missing values");
        assert!(err.to_string().contains("values"), "{err}");
    }

    #[test]
    fn data_request_body_selects_all_but_time() {
        let folk: TableInfo =
            serde_json::from_str(&fixture("tableinfo_FOLK1A_da.json")).expect("FOLK1A");
        let tids = [
            Tid::new("2024K1").expect("t"),
            Tid::new("2024K2").expect("t"),
        ];
        let req =
            DataRequest::all_values_for_periods(TableId::new("FOLK1A").expect("id"), &folk, &tids);
        let body = req.body(Lang::Da);
        assert_eq!(
            body,
            serde_json::json!({"table":"FOLK1A","format":"BULK","lang":"da","valuePresentation":"Code",
              "variables":[{"code":"OMRÅDE","values":["*"]},{"code":"KØN","values":["*"]},
                {"code":"ALDER","values":["*"]},{"code":"CIVILSTAND","values":["*"]},
                {"code":"Tid","values":["2024K1","2024K2"]}]})
        );
    }
}
