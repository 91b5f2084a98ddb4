//! `--create-missing`: the column types the original's initial loader would
//! have chosen, inferred from a table's partitions.

use std::collections::{BTreeMap, BTreeSet};

use arrow_array::{Array, LargeStringArray, StringArray, StringViewArray};
use arrow_schema::DataType;
use partition_store::PartitionStore;
use sync_state::{TableId, Tid};

use crate::catalog::{qualified, quote_ident};
use crate::convert::{canonical_int, code_to_range, column_name, open_ended_age, tid_to_date};
use crate::Error;

/// What the values of one text column allow.
#[derive(Debug, Clone)]
struct TextStats {
    values: u64,
    all_canonical_int: bool,
    min: i64,
    max: i64,
    /// Distinct open-ended values (`95-`, `95OV`) seen, at most 2 kept.
    open_ended: BTreeSet<String>,
    all_int_or_open_ended: bool,
    all_range: bool,
    any_band: bool,
    max_chars: usize,
    /// Codes of an `alder` column by the value they would get, to tell
    /// whether the typed column would merge two distinct codes (`10` and
    /// `10-` both 10; `95-` and `95OV` both `[95,)`). `None` for other
    /// columns (their types never merge codes).
    distinct: Option<DistinctCodes>,
}

/// What [`TextStats`] tracks of an `alder` column.
#[derive(Debug, Clone, Default)]
struct DistinctCodes {
    /// Plain integers seen.
    ints: BTreeSet<i64>,
    /// The first code seen for each range (`(lower, upper)`).
    ranges: BTreeMap<(Option<i32>, Option<i32>), String>,
    /// Two codes would share an `int4range` value.
    range_collision: bool,
    /// More distinct codes than are tracked: no typed column is safe.
    overflow: bool,
}

/// Distinct codes tracked per `alder` column (real ones have about 130).
const MAX_TRACKED_CODES: usize = 100_000;

impl Default for TextStats {
    fn default() -> Self {
        TextStats {
            values: 0,
            all_canonical_int: true,
            min: i64::MAX,
            max: i64::MIN,
            open_ended: BTreeSet::new(),
            all_int_or_open_ended: true,
            all_range: true,
            any_band: false,
            max_chars: 0,
            distinct: None,
        }
    }
}

impl TextStats {
    /// Stats of the column `name` (codes tracked for `alder`).
    fn for_column(name: &str) -> TextStats {
        TextStats {
            distinct: (name == "alder").then(DistinctCodes::default),
            ..TextStats::default()
        }
    }

    fn add(&mut self, s: &str) {
        self.values += 1;
        let chars = if s.is_ascii() {
            s.len()
        } else {
            s.chars().count()
        };
        self.max_chars = self.max_chars.max(chars);
        match canonical_int(s) {
            Some(v) => {
                self.min = self.min.min(v);
                self.max = self.max.max(v);
                if let Some(d) = self.distinct.as_mut() {
                    if d.ints.len() < MAX_TRACKED_CODES {
                        d.ints.insert(v);
                    } else if !d.ints.contains(&v) {
                        d.overflow = true;
                    }
                }
            }
            None => {
                self.all_canonical_int = false;
                match open_ended_age(s).filter(|_| !s.starts_with('0') || s.starts_with("0-")) {
                    Some(v) => {
                        self.min = self.min.min(v);
                        self.max = self.max.max(v);
                        if self.open_ended.len() < 2 {
                            self.open_ended.insert(s.to_owned());
                        }
                    }
                    None => self.all_int_or_open_ended = false,
                }
            }
        }
        if self.all_range {
            if let Ok(r) = code_to_range(s) {
                if s.contains(['-', ':']) || s.ends_with("OV") {
                    self.any_band = true;
                }
                if let Some(d) = self.distinct.as_mut() {
                    match d.ranges.get(&(r.lower, r.upper)) {
                        Some(first) => d.range_collision |= first != s,
                        None if d.ranges.len() < MAX_TRACKED_CODES => {
                            d.ranges.insert((r.lower, r.upper), s.to_owned());
                        }
                        None => d.overflow = true,
                    }
                }
            } else {
                self.all_range = false;
            }
        }
    }

    /// An integer `alder` column holds each code as a distinct value: at
    /// most one open-ended code, and its number not also a plain code.
    fn ints_distinct(&self) -> bool {
        let Some(d) = &self.distinct else {
            return true;
        };
        !d.overflow
            && self
                .open_ended
                .iter()
                .all(|o| open_ended_age(o).is_none_or(|v| !d.ints.contains(&v)))
    }

    /// An `int4range` `alder` column holds each code as a distinct range.
    fn ranges_distinct(&self) -> bool {
        self.distinct
            .as_ref()
            .is_none_or(|d| !d.overflow && !d.range_collision)
    }

    fn int_type(&self) -> &'static str {
        if self.min >= i64::from(i16::MIN) && self.max <= i64::from(i16::MAX) {
            "smallint"
        } else if self.min >= i64::from(i32::MIN) && self.max <= i64::from(i32::MAX) {
            "integer"
        } else {
            "bigint"
        }
    }

    fn text_type(&self) -> String {
        if self.max_chars == 0 {
            "text".into()
        } else {
            format!("varchar({})", self.max_chars)
        }
    }

    /// The type of a code column (not `tid`, not `indhold`).
    fn column_type(&self, name: &str) -> String {
        if self.values == 0 {
            return "text".into();
        }
        if self.all_canonical_int {
            return self.int_type().into();
        }
        if name == "alder" {
            // Typed only when no two distinct codes would become one value.
            if self.all_int_or_open_ended && self.open_ended.len() <= 1 && self.ints_distinct() {
                return self.int_type().into();
            }
            if self.all_range && self.any_band && self.ranges_distinct() {
                return "int4range".into();
            }
        }
        self.text_type()
    }
}

/// The type of the `tid` column from the period codes: `date` when every code
/// is a yearly/quarterly/monthly/daily/half-yearly period, `int4range` when
/// every code is an interval `1840:1849`, otherwise `text`.
pub(crate) fn tid_type<'a>(tids: impl IntoIterator<Item = &'a Tid> + Clone) -> &'static str {
    let mut any = false;
    if tids.clone().into_iter().all(|t| {
        any = true;
        tid_to_date(t.as_str()).is_ok()
    }) && any
    {
        return "date";
    }
    if tids
        .into_iter()
        .all(|t| t.as_str().contains(':') && code_to_range(t.as_str()).is_ok())
        && any
    {
        return "int4range";
    }
    "text"
}

/// An inferred table: columns with types, and the `CREATE` statements.
#[derive(Debug, Clone)]
pub(crate) struct InferredTable {
    /// `(name, type)` in partition order.
    pub columns: Vec<(String, String)>,
    /// The longest value of each column, in characters (0 for `tid`,
    /// `indhold`).
    pub max_chars: Vec<usize>,
}

impl InferredTable {
    /// `CREATE TABLE schema.table (...)`.
    pub(crate) fn create_sql(&self, schema: &str, table: &str) -> String {
        let cols: Vec<String> = self
            .columns
            .iter()
            .map(|(n, t)| format!("{} {t}", quote_ident(n)))
            .collect();
        format!(
            "CREATE TABLE {} ({})",
            qualified(schema, table),
            cols.join(", ")
        )
    }

    /// A btree index on every column but `indhold` (GiST for `int4range`).
    pub(crate) fn index_sql(&self, schema: &str, table: &str) -> Vec<String> {
        self.columns
            .iter()
            .filter(|(n, _)| n != "indhold")
            .map(|(n, t)| {
                let method = if t == "int4range" { "gist" } else { "btree" };
                format!(
                    "CREATE INDEX ON {} USING {method} ({})",
                    qualified(schema, table),
                    quote_ident(n)
                )
            })
            .collect()
    }
}

/// Scans every partition of `tids` and infers the column types.
pub(crate) fn infer_table(
    store: &PartitionStore,
    table: &TableId,
    tids: &[Tid],
) -> Result<InferredTable, Error> {
    // (header, column name, type) of the first partition, with its stats.
    let mut headers: Vec<(String, String, DataType)> = Vec::new();
    let mut stats: Vec<TextStats> = Vec::new();
    for tid in tids {
        let part_err = |source| Error::Read {
            table: table.clone(),
            tid: tid.clone(),
            path: store.display_partition(table, tid),
            source: Box::new(source),
        };
        let reader = store.read_partition(table, tid).map_err(part_err)?;
        let schema = reader.schema();
        if headers.is_empty() {
            headers = first_headers(table, tid, &schema)?;
            stats = headers
                .iter()
                .map(|(_, n, _)| TextStats::for_column(n))
                .collect();
        }
        let mapping = column_positions(table, tid, &headers, &schema)?;
        for batch in reader {
            add_codes(&batch.map_err(part_err)?, &headers, &mapping, &mut stats);
        }
    }
    let columns = headers
        .iter()
        .zip(&stats)
        .map(|((_, name, dt), st)| {
            let ty = match name.as_str() {
                "tid" => tid_type(tids).to_string(),
                "indhold" => "double precision".to_string(),
                _ if !matches!(
                    dt,
                    DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View
                ) =>
                {
                    "double precision".to_string()
                }
                _ => st.column_type(name),
            };
            (name.clone(), ty)
        })
        .collect();
    let max_chars = stats.iter().map(|s| s.max_chars).collect();
    Ok(InferredTable { columns, max_chars })
}

/// The columns of the first partition: usable, distinct, with a `tid`.
fn first_headers(
    table: &TableId,
    tid: &Tid,
    schema: &arrow_schema::Schema,
) -> Result<Vec<(String, String, DataType)>, Error> {
    crate::tx::check_partition_columns(table, schema)?;
    let mut headers: Vec<(String, String, DataType)> = Vec::new();
    for f in schema.fields() {
        let name = column_name(f.name());
        if let Some((first, _, _)) = headers.iter().find(|(_, n, _)| *n == name) {
            return Err(Error::DuplicateColumn {
                table: table.clone(),
                first: first.clone(),
                second: f.name().clone(),
                column: name,
            });
        }
        headers.push((f.name().clone(), name, f.data_type().clone()));
    }
    if !headers.iter().any(|(_, n, _)| n == "tid") {
        return Err(Error::NoTidColumn {
            table: table.clone(),
            tid: tid.clone(),
        });
    }
    Ok(headers)
}

/// Where each of `headers` is in a partition's `schema`; every one must be.
fn column_positions(
    table: &TableId,
    tid: &Tid,
    headers: &[(String, String, DataType)],
    schema: &arrow_schema::Schema,
) -> Result<Vec<usize>, Error> {
    headers
        .iter()
        .map(|(_, name, _)| {
            schema
                .fields()
                .iter()
                .position(|f| column_name(f.name()) == *name)
                .ok_or_else(|| Error::PartitionColumnMissing {
                    table: table.clone(),
                    tid: tid.clone(),
                    column: name.clone(),
                })
        })
        .collect()
}

/// Adds the codes of one batch to the stats of their columns (`tid` and
/// `indhold` are typed otherwise).
fn add_codes(
    batch: &arrow_array::RecordBatch,
    headers: &[(String, String, DataType)],
    mapping: &[usize],
    stats: &mut [TextStats],
) {
    for (k, &ix) in mapping.iter().enumerate() {
        let (_, name, _) = &headers[k];
        if name == "tid" || name == "indhold" {
            continue;
        }
        let Some(col) = batch.columns().get(ix) else {
            continue;
        };
        let any = col.as_any();
        let st = &mut stats[k];
        let mut add = |s: Option<&str>| {
            if let Some(s) = s {
                st.add(s)
            }
        };
        if let Some(a) = any.downcast_ref::<StringArray>() {
            a.iter().for_each(&mut add);
        } else if let Some(a) = any.downcast_ref::<LargeStringArray>() {
            a.iter().for_each(&mut add);
        } else if let Some(a) = any.downcast_ref::<StringViewArray>() {
            a.iter().for_each(&mut add);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stats(values: &[&str]) -> TextStats {
        stats_of("alder", values)
    }

    fn stats_of(name: &str, values: &[&str]) -> TextStats {
        let mut s = TextStats::for_column(name);
        values.iter().for_each(|v| s.add(v));
        s
    }

    #[test]
    fn codes_with_leading_zeros_stay_text() {
        assert_eq!(
            stats(&["000", "084", "101"]).column_type("omrade"),
            "varchar(3)"
        );
        assert_eq!(
            stats(&["101", "147", "851"]).column_type("omrade"),
            "smallint"
        );
        assert_eq!(stats(&["TOT", "1", "2"]).column_type("kon"), "varchar(3)");
        assert_eq!(stats(&["1", "70000"]).column_type("x"), "integer");
        assert_eq!(stats(&["1", "7000000000"]).column_type("x"), "bigint");
    }

    #[test]
    fn alder_forms() {
        assert_eq!(
            stats(&["0", "1", "99", "100-"]).column_type("alder"),
            "smallint"
        );
        assert_eq!(
            stats(&["0", "1", "99-", "100-"]).column_type("alder"),
            "int4range" // two open-ended values: not plain ages
        );
        assert_eq!(
            stats(&["0", "1", "99-", "100-", "IALT"]).column_type("alder"),
            "varchar(4)"
        );
        assert_eq!(
            stats(&["0-4", "5-9", "95OV"]).column_type("alder"),
            "int4range"
        );
        assert_eq!(stats(&["IALT", "0-4"]).column_type("alder"), "varchar(4)");
        // elsewhere a band is just a code
        assert_eq!(
            stats_of("x", &["0-4", "5-9"]).column_type("x"),
            "varchar(3)"
        );
    }

    #[test]
    fn alder_never_merges_distinct_codes() {
        // `10` and `10-` would both be 10 in an integer column; as ranges
        // they differ ([10,11) and [10,)).
        assert_eq!(stats(&["9", "10", "10-"]).column_type("alder"), "int4range");
        assert_eq!(
            stats(&["9", "10", "10-", "IALT"]).column_type("alder"),
            "varchar(4)"
        );
        // `95-` and `95OV` would both be [95,) in an int4range column.
        assert_eq!(
            stats(&["0-4", "95-", "95OV"]).column_type("alder"),
            "varchar(4)"
        );
        // `7` and `7-7`, `07` and `7`: the same range.
        assert_eq!(
            stats(&["0-4", "7", "7-7"]).column_type("alder"),
            "varchar(3)"
        );
        assert_eq!(
            stats(&["0-4", "7", "07"]).column_type("alder"),
            "varchar(3)"
        );
        // Repeated codes are not distinct codes.
        assert_eq!(
            stats(&["0-4", "0-4", "95OV", "95OV"]).column_type("alder"),
            "int4range"
        );
        assert_eq!(
            stats(&["9", "9", "10-", "10-"]).column_type("alder"),
            "smallint"
        );
    }

    #[test]
    fn tid_types() {
        let t = |v: &[&str]| -> Vec<Tid> { v.iter().map(|s| Tid::new(*s).expect("tid")).collect() };
        assert_eq!(tid_type(&t(&["2024K1", "2024K2"])), "date");
        assert_eq!(tid_type(&t(&["2024", "2025"])), "date");
        assert_eq!(tid_type(&t(&["1840:1849", "1850:1859"])), "int4range");
        assert_eq!(tid_type(&t(&["2024U01"])), "text");
        assert_eq!(tid_type(&t(&[])), "text");
    }
}
