//! The emulator's data model: [`World`], [`EmuTable`] and their builders.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::OnceLock;

use serde::{Deserialize, Serialize};

use super::time;

const TABLEINFO_FOLK1A: &str = include_str!("../../testdata/tableinfo_FOLK1A_da.json");
const TABLEINFO_BIL10: &str = include_str!("../../testdata/tableinfo_BIL10_da.json");
const TABLEINFO_FOLK1A_EN: &str = include_str!("../../testdata/tableinfo_FOLK1A_en.json");
const TABLEINFO_METROX1: &str = include_str!("../../testdata/tableinfo_METROX1_en.json");
const CATALOG_CSV: &str = include_str!("../../testdata/tables_catalog_da_2024-11-27.csv");

/// Everything the emulator serves: a set of tables keyed by upper-case table id.
///
/// The serde form of this struct is the `--scenario FILE` format (see
/// [`World::from_json`]).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct World {
    /// The tables, keyed by upper-case id.
    pub tables: BTreeMap<String, EmuTable>,
    /// The subject tree `/v1/subjects` serves (top level first).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub subjects: Vec<EmuSubject>,
}

/// A subject of the emulated subject tree.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct EmuSubject {
    /// `3401`.
    pub id: String,
    /// The Danish description (`Befolkning`).
    pub description: String,
    /// The English one (`Population`; default: the Danish one).
    #[serde(default)]
    pub description_en: Option<String>,
    /// Whether it is active.
    #[serde(default = "default_true")]
    pub active: bool,
    /// Its sub-subjects.
    #[serde(default)]
    pub subjects: Vec<EmuSubject>,
    /// The ids of the tables filed directly under it (ids the world does
    /// not have are left out of answers).
    #[serde(default)]
    pub tables: Vec<String>,
}

impl EmuSubject {
    /// A subject with its descriptions in both languages.
    pub fn new(id: &str, da: &str, en: &str) -> EmuSubject {
        EmuSubject {
            id: id.into(),
            description: da.into(),
            description_en: Some(en.into()),
            active: true,
            ..EmuSubject::default()
        }
    }
}

/// One emulated StatBank table: its metadata, its variables and how its cells
/// are generated.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EmuTable {
    /// Table id as shown in responses (e.g. `FOLK1A`).
    pub id: String,
    /// Table title.
    #[serde(default)]
    pub text: String,
    /// Unit of `INDHOLD` (e.g. `Antal`).
    #[serde(default = "default_unit")]
    pub unit: String,
    /// Version token `YYYY-MM-DDTHH:MM:SS` shown in the catalog and in tableinfo.
    #[serde(default = "default_updated")]
    pub updated: String,
    /// Inactive tables only show up in the catalog with `includeInactive`.
    #[serde(default = "default_true")]
    pub active: bool,
    /// Tableinfo `description`.
    #[serde(default)]
    pub description: String,
    /// Tableinfo `suppressedDataValue`.
    #[serde(default = "default_suppressed")]
    pub suppressed_data_value: String,
    /// Tableinfo `contacts` (served verbatim).
    #[serde(default = "default_contacts")]
    pub contacts: serde_json::Value,
    /// Tableinfo `documentation` (served verbatim; `null` allowed).
    #[serde(default)]
    pub documentation: serde_json::Value,
    /// Tableinfo `footnote` (served verbatim; `null` allowed).
    #[serde(default)]
    pub footnote: serde_json::Value,
    /// Non-time variables, in tableinfo order.
    #[serde(default)]
    pub variables: Vec<EmuVariable>,
    /// The `Tid` variable's values, in order (oldest first).
    #[serde(default)]
    pub time_values: Vec<EmuValue>,
    /// Fraction of cells that exist (1.0 = dense). Absent cells are omitted
    /// from BULK output, deterministically per (period, cell).
    #[serde(default = "default_one")]
    pub density: f64,
    /// Fraction of existing cells whose `INDHOLD` is `..`.
    #[serde(default)]
    pub missing_rate: f64,
    /// Number of decimals of `INDHOLD` (0 => integers, 1 => `37,7`).
    #[serde(default)]
    pub decimals: u8,
    /// Revision per period code (default 0); bumping it changes that period's values.
    #[serde(default)]
    pub revisions: BTreeMap<String, u32>,
    /// Seed of the value generator.
    #[serde(default)]
    pub seed: u64,
    /// The texts `lang=en` serves (each absent one: the Danish text).
    #[serde(default, skip_serializing_if = "EmuEnglish::is_empty")]
    pub english: EmuEnglish,
}

/// The English texts of an [`EmuTable`], served with `lang=en` (tableinfo
/// and catalog); a text not given here is served in Danish. Codes never
/// change with the language.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct EmuEnglish {
    /// Title.
    #[serde(default)]
    pub text: Option<String>,
    /// Unit.
    #[serde(default)]
    pub unit: Option<String>,
    /// Description.
    #[serde(default)]
    pub description: Option<String>,
    /// Variable texts by variable id.
    #[serde(default)]
    pub variables: BTreeMap<String, String>,
    /// Value texts by variable id, then code.
    #[serde(default)]
    pub values: BTreeMap<String, BTreeMap<String, String>>,
}

impl EmuEnglish {
    /// No English text at all.
    pub fn is_empty(&self) -> bool {
        self == &EmuEnglish::default()
    }

    /// The English text of value `code` of `variable`, if given.
    pub fn value(&self, variable: &str, code: &str) -> Option<&str> {
        self.values.get(variable)?.get(code).map(String::as_str)
    }
}

/// English texts of [`EmuTable::synthetic`]: `Synthetic table <ID>`,
/// variable `<name> (en)`, values `Total` and `<name> <i> (en)`.
fn synthetic_english(id: &str, dims: &[(&str, usize)]) -> EmuEnglish {
    let mut en = EmuEnglish {
        text: Some(format!("Synthetic table {}", id.to_uppercase())),
        unit: Some("Number".into()),
        ..EmuEnglish::default()
    };
    for (name, n) in dims {
        let (vid, text) = (name.to_uppercase(), name.to_lowercase());
        en.variables.insert(vid.clone(), format!("{text} (en)"));
        let values = (0..*n)
            .map(|i| match i {
                0 => ("TOT".to_string(), "Total".to_string()),
                i => (i.to_string(), format!("{text} {i} (en)")),
            })
            .collect();
        en.values.insert(vid, values);
    }
    en
}

/// A non-time variable of an [`EmuTable`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EmuVariable {
    /// Variable id (e.g. `OMRÅDE`).
    pub id: String,
    /// Variable text (e.g. `område`); the catalog lists it lower-cased.
    #[serde(default)]
    pub text: String,
    /// Tableinfo `elimination`.
    #[serde(default = "default_true")]
    pub elimination: bool,
    /// Tableinfo `map` (only geographic variables have one).
    #[serde(default)]
    pub map: Option<String>,
    /// Values in display order.
    #[serde(default)]
    pub values: Vec<EmuValue>,
}

/// One value (code + text) of a variable.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EmuValue {
    /// The code (`000`, `2024K1`, ...).
    pub id: String,
    /// The display text (`Hele landet`, ...). Empty in a scenario file means "same as id".
    #[serde(default)]
    pub text: String,
}

impl EmuValue {
    /// A value whose text equals its code (the usual case for time values).
    pub fn code(code: &str) -> EmuValue {
        EmuValue {
            id: code.to_string(),
            text: code.to_string(),
        }
    }

    /// A value with a code and a text.
    pub fn new(id: &str, text: &str) -> EmuValue {
        EmuValue {
            id: id.to_string(),
            text: text.to_string(),
        }
    }
}

fn default_unit() -> String {
    "Antal".to_string()
}
fn default_updated() -> String {
    "2024-01-01T08:00:00".to_string()
}
fn default_true() -> bool {
    true
}
fn default_one() -> f64 {
    1.0
}
fn default_suppressed() -> String {
    "0".to_string()
}
fn default_contacts() -> serde_json::Value {
    serde_json::json!([{
        "name": "StatBank Emulator",
        "phone": "+4500000000",
        "mail": "emulator@example.invalid"
    }])
}

/// Seed derived from a table id, so different tables get different numbers.
pub(crate) fn seed_for(id: &str) -> u64 {
    xxhash_rust::xxh3::xxh3_64(id.to_uppercase().as_bytes())
}

/// The real tableinfo JSON shape, used by [`EmuTable::from_tableinfo_json`].
#[derive(Deserialize)]
struct RawTableInfo {
    id: String,
    #[serde(default)]
    text: String,
    #[serde(default)]
    description: String,
    #[serde(default)]
    unit: String,
    #[serde(rename = "suppressedDataValue", default)]
    suppressed_data_value: String,
    #[serde(default)]
    updated: String,
    #[serde(default = "default_true")]
    active: bool,
    #[serde(default)]
    contacts: serde_json::Value,
    #[serde(default)]
    documentation: serde_json::Value,
    #[serde(default)]
    footnote: serde_json::Value,
    #[serde(default)]
    variables: Vec<RawVariable>,
}

#[derive(Deserialize)]
struct RawVariable {
    id: String,
    #[serde(default)]
    text: String,
    #[serde(default)]
    elimination: bool,
    #[serde(default)]
    time: bool,
    #[serde(default)]
    map: Option<String>,
    #[serde(default)]
    values: Vec<EmuValue>,
}

impl EmuTable {
    /// Builds a table from a real `/v1/tableinfo` JSON response (pretty or
    /// compact). The time variable (`"time": true`) becomes
    /// [`EmuTable::time_values`]; cells are dense integers.
    pub fn from_tableinfo_json(json: &str) -> Result<EmuTable, serde_json::Error> {
        let raw: RawTableInfo = serde_json::from_str(json)?;
        let mut variables = Vec::new();
        let mut time_values = Vec::new();
        for v in raw.variables {
            if v.time {
                time_values = v.values;
            } else {
                variables.push(EmuVariable {
                    id: v.id,
                    text: v.text,
                    elimination: v.elimination,
                    map: v.map,
                    values: v.values,
                });
            }
        }
        let seed = seed_for(&raw.id);
        Ok(EmuTable {
            id: raw.id.to_uppercase(),
            text: raw.text,
            unit: raw.unit,
            updated: raw.updated,
            active: raw.active,
            description: raw.description,
            suppressed_data_value: raw.suppressed_data_value,
            contacts: raw.contacts,
            documentation: raw.documentation,
            footnote: raw.footnote,
            variables,
            time_values,
            density: 1.0,
            missing_rate: 0.0,
            decimals: 0,
            revisions: BTreeMap::new(),
            seed,
            english: EmuEnglish::default(),
        })
    }

    /// The English texts from a real `lang=en` tableinfo of the same table
    /// (title, unit, description, variable and value texts, matched by id
    /// and code; the time variable's are derived from its codes).
    pub fn with_english_tableinfo_json(
        mut self,
        json: &str,
    ) -> Result<EmuTable, serde_json::Error> {
        let raw: RawTableInfo = serde_json::from_str(json)?;
        let mut en = EmuEnglish {
            text: Some(raw.text),
            unit: Some(raw.unit),
            description: Some(raw.description),
            ..EmuEnglish::default()
        };
        for v in raw.variables.into_iter().filter(|v| !v.time) {
            en.variables.insert(v.id.clone(), v.text);
            en.values
                .insert(v.id, v.values.into_iter().map(|x| (x.id, x.text)).collect());
        }
        self.english = en;
        Ok(self)
    }

    /// A small synthetic table. `dims` are `(variable name, number of values)`;
    /// the variable id is the name upper-cased and its text the name
    /// lower-cased. Values are `TOT` ("I alt") followed by `1`, `2`, … (so
    /// code order as strings — `1, 10, 2, …, TOT` — differs from display
    /// order). Time values are `tid_codes` with text = code. Dense integers.
    pub fn synthetic(id: &str, tid_codes: &[&str], dims: &[(&str, usize)]) -> EmuTable {
        let variables: Vec<EmuVariable> = dims
            .iter()
            .map(|(name, n)| {
                let text = name.to_lowercase();
                let values = (0..*n)
                    .map(|i| {
                        if i == 0 {
                            EmuValue::new("TOT", "I alt")
                        } else {
                            EmuValue::new(&i.to_string(), &format!("{text} {i}"))
                        }
                    })
                    .collect();
                EmuVariable {
                    id: name.to_uppercase(),
                    text,
                    elimination: true,
                    map: None,
                    values,
                }
            })
            .collect();
        let text = format!("Syntetisk tabel {}", id.to_uppercase());
        let description = describe(&text, &variables);
        EmuTable {
            id: id.to_uppercase(),
            text,
            unit: default_unit(),
            updated: default_updated(),
            active: true,
            description,
            suppressed_data_value: default_suppressed(),
            contacts: default_contacts(),
            documentation: serde_json::Value::Null,
            footnote: serde_json::Value::Null,
            variables,
            time_values: tid_codes.iter().map(|c| EmuValue::code(c)).collect(),
            density: 1.0,
            missing_rate: 0.0,
            decimals: 0,
            revisions: BTreeMap::new(),
            seed: seed_for(id),
            english: synthetic_english(id, dims),
        }
    }

    /// Code of the first period, if any.
    pub fn first_period(&self) -> Option<&str> {
        self.time_values.first().map(|v| v.id.as_str())
    }

    /// Code of the latest (last) period, if any.
    pub fn latest_period(&self) -> Option<&str> {
        self.time_values.last().map(|v| v.id.as_str())
    }

    /// Revision of a period (0 unless bumped).
    pub fn revision(&self, period: &str) -> u32 {
        self.revisions.get(period).copied().unwrap_or(0)
    }

    /// Number of cell combinations per period (product of the non-time
    /// variables' value counts), before sparsity.
    pub fn cells_per_period(&self) -> u64 {
        self.variables
            .iter()
            .map(|v| v.values.len() as u64)
            .product()
    }
}

/// `"<text> efter a, b og tid"`, the way real descriptions read.
fn describe(text: &str, vars: &[EmuVariable]) -> String {
    let mut names: Vec<String> = vars.iter().map(|v| v.text.to_lowercase()).collect();
    names.push("tid".to_string());
    let last = names.pop().unwrap_or_default();
    if names.is_empty() {
        format!("{text} efter {last}")
    } else {
        format!("{text} efter {} og {last}", names.join(", "))
    }
}

/// One row of the real catalog CSV.
#[derive(Clone, Debug)]
pub(crate) struct CatalogRow {
    pub id: String,
    pub text: String,
    pub unit: String,
    pub updated: String,
    pub first: String,
    pub latest: String,
    pub active: bool,
    pub variables: Vec<String>,
}

/// The real catalog of 2024-11-27, parsed once.
pub(crate) fn catalog() -> &'static [CatalogRow] {
    static CATALOG: OnceLock<Vec<CatalogRow>> = OnceLock::new();
    CATALOG.get_or_init(parse_catalog)
}

fn parse_catalog() -> Vec<CatalogRow> {
    let mut rdr = csv::ReaderBuilder::new()
        .delimiter(b';')
        .has_headers(true)
        .from_reader(CATALOG_CSV.as_bytes());
    let headers = match rdr.headers() {
        Ok(h) => h.clone(),
        Err(_) => return Vec::new(),
    };
    let col = |name: &str| headers.iter().position(|h| h == name);
    let (Some(ci), Some(ct), Some(cu), Some(cup), Some(cf), Some(cl), Some(ca), Some(cv)) = (
        col("id"),
        col("text"),
        col("unit"),
        col("updated"),
        col("firstPeriod"),
        col("latestPeriod"),
        col("active"),
        col("variables"),
    ) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for rec in rdr.records().flatten() {
        let get = |i: usize| rec.get(i).unwrap_or("").to_string();
        let id = get(ci);
        if id.is_empty() {
            continue;
        }
        let variables = get(cv)
            .split(',')
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .collect();
        out.push(CatalogRow {
            id,
            text: get(ct),
            unit: get(cu),
            updated: get(cup),
            first: get(cf),
            latest: get(cl),
            active: get(ca).eq_ignore_ascii_case("true"),
            variables,
        });
    }
    out
}

fn catalog_row(id: &str) -> Option<&'static CatalogRow> {
    catalog().iter().find(|r| r.id.eq_ignore_ascii_case(id))
}

/// Derives a variable id from a catalog variable text: upper-case, letters and
/// digits only (`mors uddannelse` → `MORSUDDANNELSE`).
fn var_id_from_text(text: &str, index: usize) -> String {
    let id: String = text
        .chars()
        .filter(|c| c.is_alphanumeric())
        .flat_map(char::to_uppercase)
        .collect();
    if id.is_empty() {
        format!("VAR{index}")
    } else {
        id
    }
}

fn var(id: &str, text: &str, values: &[(&str, &str)]) -> EmuVariable {
    EmuVariable {
        id: id.to_string(),
        text: text.to_string(),
        elimination: true,
        map: None,
        values: values.iter().map(|(c, t)| EmuValue::new(c, t)).collect(),
    }
}

/// A table with real id/text/unit/updated from the catalog and the given
/// variables and periods.
fn catalog_table(id: &str, variables: Vec<EmuVariable>, periods: &[String]) -> EmuTable {
    let mut t = EmuTable::synthetic(id, &[], &[]);
    if let Some(row) = catalog_row(id) {
        t.text = row.text.clone();
        t.unit = row.unit.clone();
        t.updated = row.updated.clone();
    }
    t.description = describe(&t.text, &variables);
    t.variables = variables;
    t.time_values = periods.iter().map(|p| EmuValue::code(p)).collect();
    t
}

/// Takes text and `updated` from the catalog and cuts periods after the
/// catalog's `latestPeriod`, so the table is a consistent 2024-11-27 snapshot.
fn align_with_catalog(t: &mut EmuTable) {
    if let Some(row) = catalog_row(&t.id) {
        t.text = row.text.clone();
        t.updated = row.updated.clone();
        if let Some(pos) = t.time_values.iter().position(|v| v.id == row.latest) {
            t.time_values.truncate(pos + 1);
        }
    }
}

impl World {
    /// An empty world.
    pub fn new() -> World {
        World::default()
    }

    /// Adds (or replaces) a table, keyed by its upper-case id.
    pub fn insert(&mut self, table: EmuTable) {
        self.tables.insert(table.id.to_uppercase(), table);
    }

    /// Looks a table up by id, case-insensitively.
    pub fn table(&self, id: &str) -> Option<&EmuTable> {
        self.tables.get(&id.to_uppercase())
    }

    /// Mutable lookup by id, case-insensitively.
    pub fn table_mut(&mut self, id: &str) -> Option<&mut EmuTable> {
        self.tables.get_mut(&id.to_uppercase())
    }

    /// Parses a scenario file (the serde JSON form of [`World`]). Map keys are
    /// normalised to the tables' upper-case ids and empty value texts default
    /// to the value code.
    pub fn from_json(s: &str) -> Result<World, serde_json::Error> {
        let parsed: World = serde_json::from_str(s)?;
        let mut world = World::new();
        for (_, mut t) in parsed.tables {
            t.id = t.id.to_uppercase();
            for v in t
                .variables
                .iter_mut()
                .flat_map(|v| v.values.iter_mut())
                .chain(t.time_values.iter_mut())
            {
                if v.text.is_empty() {
                    v.text = v.id.clone();
                }
            }
            world.insert(t);
        }
        world.subjects = parsed.subjects;
        Ok(world)
    }

    /// Serialises the world as a scenario file (pretty JSON).
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_default()
    }

    /// A small world (about 270k BULK rows in total) covering every real time
    /// format: FOLK1A, BIL10 and METROX1 from real tableinfo recordings, plus
    /// synthetic tables with real ids and texts (BEFOLK1, FOLK1AM, VAN1UGE,
    /// DNVALD, KORN2, SCENE01A, HISB7, BARLOV1) and one made-up table
    /// (`UGEINT1`) with week-interval periods such as `2014U30-41`.
    pub fn demo() -> World {
        let mut w = World::new();
        for t in recorded_demo_tables() {
            w.insert(t);
        }
        for t in [
            befolk1(),
            folk1am(),
            van1uge(),
            dnvald(),
            korn2(),
            scene01a(),
            hisb7(),
            barlov1(),
            ugeint1(),
        ] {
            w.insert(t);
        }
        w.subjects = demo_subjects();
        w
    }

    /// All 2,339 tables of the real catalog of 2024-11-27, each tiny: ids,
    /// texts, units, `updated` and first/latest period are real; variables are
    /// derived from the catalog's variable texts with two values each
    /// (`TOT`/"I alt" and `1`); periods are enumerated from firstPeriod to
    /// latestPeriod where the format allows (years, quarters, months, ISO
    /// weeks, business days, half-years, seasons, `AUG - DEC 2019`-style),
    /// otherwise (intervals like `1840:1849`) just `[firstPeriod, latestPeriod]`.
    pub fn full_catalog() -> World {
        let mut w = World::new();
        for row in catalog() {
            let mut seen = BTreeSet::new();
            let variables: Vec<EmuVariable> = row
                .variables
                .iter()
                .filter(|t| !t.eq_ignore_ascii_case("tid"))
                .enumerate()
                .map(|(i, text)| {
                    let mut id = var_id_from_text(text, i);
                    if !seen.insert(id.clone()) {
                        id = format!("{id}{i}");
                        seen.insert(id.clone());
                    }
                    EmuVariable {
                        id,
                        text: text.clone(),
                        elimination: true,
                        map: None,
                        values: vec![
                            EmuValue::new("TOT", "I alt"),
                            EmuValue::new("1", &format!("{text} 1")),
                        ],
                    }
                })
                .collect();
            let periods = time::enumerate_periods(&row.first, &row.latest);
            let mut t = EmuTable::synthetic(&row.id, &[], &[]);
            t.text = row.text.clone();
            t.unit = row.unit.clone();
            t.updated = row.updated.clone();
            t.active = row.active;
            t.description = describe(&t.text, &variables);
            t.variables = variables;
            t.time_values = periods.iter().map(|p| EmuValue::code(p)).collect();
            if t.unit.contains("Pct") || t.unit.contains("ndeks") || t.unit.contains("ndex") {
                t.decimals = 1;
            }
            w.insert(t);
        }
        w
    }
}

// The demo world's tables.

/// FOLK1A, BIL10 and METROX1 from their real tableinfo recordings.
/// A small subject tree for [`World::demo`] in the real shape (top-level
/// subject, subject, leaf subject with its tables), in both languages.
fn demo_subjects() -> Vec<EmuSubject> {
    let leaf = |id: &str, da: &str, en: &str, tables: &[&str]| EmuSubject {
        tables: tables.iter().map(|t| t.to_string()).collect(),
        ..EmuSubject::new(id, da, en)
    };
    let node = |id: &str, da: &str, en: &str, subjects: Vec<EmuSubject>| EmuSubject {
        subjects,
        ..EmuSubject::new(id, da, en)
    };
    vec![
        node(
            "1",
            "Borgere",
            "People",
            vec![node(
                "3401",
                "Befolkning",
                "Population",
                vec![
                    leaf(
                        "20021",
                        "Befolkningstal",
                        "Population figures",
                        &["FOLK1A", "FOLK1AM", "BEFOLK1"],
                    ),
                    leaf("20014", "Dødsfald", "Deaths", &[]),
                ],
            )],
        ),
        node(
            "6",
            "Transport",
            "Transport",
            vec![node(
                "3444",
                "Trafik",
                "Traffic",
                vec![
                    leaf("20091", "Bilparken", "Stock of vehicles", &["BIL10"]),
                    leaf(
                        "20095",
                        "Kollektiv trafik",
                        "Public transport",
                        &["METROX1"],
                    ),
                ],
            )],
        ),
    ]
}

fn recorded_demo_tables() -> Vec<EmuTable> {
    let mut out = Vec::new();
    // FOLK1A: real tableinfo, the 4 quarters up to the catalog's latest
    // period (2024K1..2024K4), sparse so the world stays small.
    if let Ok(mut t) = EmuTable::from_tableinfo_json(TABLEINFO_FOLK1A) {
        align_with_catalog(&mut t);
        if let Ok(en) = t.clone().with_english_tableinfo_json(TABLEINFO_FOLK1A_EN) {
            t = en;
        }
        let n = t.time_values.len();
        t.time_values.drain(..n.saturating_sub(4));
        t.density = 0.3;
        out.push(t);
    }
    // BIL10: real tableinfo, yearly 1993..2024.
    if let Ok(mut t) = EmuTable::from_tableinfo_json(TABLEINFO_BIL10) {
        align_with_catalog(&mut t);
        out.push(t);
    }
    // METROX1: real (English) tableinfo, weekly with gaps, one decimal.
    if let Ok(mut t) = EmuTable::from_tableinfo_json(TABLEINFO_METROX1) {
        align_with_catalog(&mut t);
        t.decimals = 1;
        out.push(t);
    }
    out
}

fn kon() -> EmuVariable {
    var(
        "KØN",
        "køn",
        &[("TOT", "I alt"), ("1", "Mænd"), ("2", "Kvinder")],
    )
}

/// OMRÅDE with its first `n` codes (a map, like the real variable).
fn omrade(n: usize) -> EmuVariable {
    let all = [
        ("000", "Hele landet"),
        ("084", "Region Hovedstaden"),
        ("101", "København"),
        ("147", "Frederiksberg"),
        ("851", "Aalborg"),
    ];
    let mut v = var("OMRÅDE", "område", &all[..n.min(all.len())]);
    v.map = Some("Denmark_municipality_07".to_string());
    v
}

/// ALDER: the total and `n - 1` single years.
fn alder(n: usize) -> EmuVariable {
    let mut vals = vec![EmuValue::new("IALT", "Alder i alt")];
    vals.extend(
        (0..n.saturating_sub(1)).map(|a| EmuValue::new(&a.to_string(), &format!("{a} år"))),
    );
    EmuVariable {
        id: "ALDER".to_string(),
        text: "alder".to_string(),
        elimination: true,
        map: None,
        values: vals,
    }
}

/// BEFOLK1: yearly, with some `..` values.
fn befolk1() -> EmuTable {
    let mut t = catalog_table(
        "BEFOLK1",
        vec![
            kon(),
            alder(10),
            var(
                "CIVILSTAND",
                "civilstand",
                &[
                    ("TOT", "I alt"),
                    ("U", "Ugift"),
                    ("G", "Gift/separeret"),
                    ("E", "Enke/enkemand"),
                    ("F", "Fraskilt"),
                ],
            ),
        ],
        &time::enumerate_periods("1971", "2024"),
    );
    t.missing_rate = 0.05;
    t
}

/// FOLK1AM: monthly.
fn folk1am() -> EmuTable {
    catalog_table(
        "FOLK1AM",
        vec![omrade(5), kon(), alder(10)],
        &time::enumerate_periods("2021M10", "2024M10"),
    )
}

/// VAN1UGE: weekly (ISO weeks, no gaps), sparse.
fn van1uge() -> EmuTable {
    let mut t = catalog_table(
        "VAN1UGE",
        vec![
            omrade(2),
            kon(),
            var(
                "ALDER",
                "alder",
                &[
                    ("IALT", "Alder i alt"),
                    ("0-19", "0-19 år"),
                    ("20-", "20 år og derover"),
                ],
            ),
            var(
                "INDVLAND",
                "indvandringsland",
                &[("0000", "I alt"), ("5100", "Danmark"), ("5999", "Uoplyst")],
            ),
            var(
                "STATSB",
                "statsborgerskab",
                &[("0000", "I alt"), ("5100", "Dansk"), ("5999", "Udenlandsk")],
            ),
        ],
        &time::enumerate_periods("2024U01", "2024U43"),
    );
    t.density = 0.7;
    t
}

/// DNVALD: daily `1977M01D03`-style codes, 60 business days, 2 decimals.
fn dnvald() -> EmuTable {
    let days = time::enumerate_periods("2024M09D02", "2024M11D26");
    let days: Vec<String> = days[days.len().saturating_sub(60)..].to_vec();
    let mut t = catalog_table(
        "DNVALD",
        vec![
            var(
                "VALUTA",
                "valuta",
                &[
                    ("EUR", "Euro"),
                    ("USD", "Amerikanske dollar"),
                    ("GBP", "Britiske pund"),
                    ("SEK", "Svenske kroner"),
                    ("NOK", "Norske kroner"),
                ],
            ),
            var(
                "KURTYP",
                "kurstype",
                &[
                    ("KBH", "Kurs (DKK pr. 100 enheder)"),
                    ("ULT", "Kurs ultimo"),
                ],
            ),
        ],
        &days,
    );
    t.decimals = 2;
    t
}

/// KORN2: half-yearly, with `..` values.
fn korn2() -> EmuTable {
    let mut t = catalog_table(
        "KORN2",
        vec![
            var(
                "AFGRØDE",
                "afgrøde",
                &[
                    ("A100", "Korn i alt"),
                    ("A110", "Hvede"),
                    ("A120", "Rug"),
                    ("A130", "Byg"),
                ],
            ),
            var(
                "AKTØR",
                "aktører",
                &[
                    ("LAND", "Landbruget"),
                    ("HAND", "Handelen"),
                    ("IND", "Industrien"),
                ],
            ),
        ],
        &time::enumerate_periods("2000H1", "2023H2"),
    );
    t.missing_rate = 0.1;
    t
}

/// SCENE01A: theatre seasons `2020/2021`.
fn scene01a() -> EmuTable {
    catalog_table(
        "SCENE01A",
        vec![
            var(
                "TEATERKAT",
                "teaterkategori",
                &[
                    ("1", "Alle teatre"),
                    ("2", "Storbyteatre"),
                    ("3", "Øvrige teatre"),
                ],
            ),
            var(
                "AKTIVITET",
                "aktivitet",
                &[
                    ("PROD", "Produktioner"),
                    ("OPF", "Opførelser"),
                    ("PUB", "Publikum"),
                ],
            ),
            var(
                "GENRE",
                "genre",
                &[
                    ("0", "Alle genrer"),
                    ("1", "Skuespil"),
                    ("2", "Musikteater"),
                    ("3", "Danseforestillinger"),
                ],
            ),
        ],
        &time::enumerate_periods("2020/2021", "2022/2023"),
    )
}

/// HISB7: intervals `1840:1849` (decades, then overlapping two-year periods).
fn hisb7() -> EmuTable {
    let mut hisb7_periods: Vec<String> = (1840..1980)
        .step_by(10)
        .map(|y| format!("{y}:{}", y + 9))
        .collect();
    hisb7_periods.extend((1980..=2022).map(|y| format!("{y}:{}", y + 1)));
    let mut t = catalog_table("HISB7", vec![kon()], &hisb7_periods);
    t.decimals = 2;
    t
}

/// BARLOV1: free-text periods `AUG - DEC 2019`, sparse.
fn barlov1() -> EmuTable {
    let udd = |id: &str, text: &str| {
        var(
            id,
            text,
            &[
                ("TOT", "I alt"),
                ("H10", "Grundskole"),
                ("H70", "Lang videregående uddannelse"),
            ],
        )
    };
    let mut t = catalog_table(
        "BARLOV1",
        vec![
            var(
                "ENHED",
                "enhed",
                &[("DAGE", "Dage i gennemsnit"), ("PERS", "Personer")],
            ),
            var(
                "BERET",
                "berettigelse",
                &[
                    ("BEGGE", "Begge forældre berettigede"),
                    ("MOR", "Kun mor berettiget"),
                ],
            ),
            udd("MORUDD", "mors uddannelse"),
            udd("FARUDD", "fars uddannelse"),
            omrade(3),
        ],
        &time::enumerate_periods("AUG - DEC 2019", "AUG - DEC 2022"),
    );
    t.density = 0.7;
    t
}

/// UGEINT1 (made up: no table in the 2024 catalog uses this format):
/// week intervals `2014U30-41`.
fn ugeint1() -> EmuTable {
    let periods: Vec<String> = (2014..=2023).map(|y| format!("{y}U30-41")).collect();
    let mut t = catalog_table(
        "UGEINT1",
        vec![
            kon(),
            var(
                "SKOLE",
                "skoletype",
                &[("TOT", "I alt"), ("GRUND", "Grundskoler")],
            ),
        ],
        &periods,
    );
    t.text = "Elever i sommerferieperioden (syntetisk tabel med ugeintervaller)".to_string();
    t.description = describe(&t.text, &t.variables);
    t.updated = "2023-10-02T08:00:00".to_string();
    t
}
