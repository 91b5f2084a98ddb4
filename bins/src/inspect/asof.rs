//! `asof` and `revisions`: a table as it was published at an instant, and
//! every kept vintage of its periods.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt::Write;
use std::path::Path;

use arrow_array::{Array, Float64Array, RecordBatch, StringArray};
use partition_store::{export_parquet, AsOfSource, PartitionReader, PartitionStore};
use serde_json::json;
use sync_state::{list_runs, utc_to_source_time, DataDir, RunManifest, TableId, Tid};

use super::Report;
use crate::Error;

/// `--at`: an RFC 3339 instant (`2025-03-01T00:00:00Z`), or a date
/// (`2025-03-01`, the start of that day in Copenhagen), as an instant on
/// StatBank's clock (`2025-03-01T01:00:00`), comparable with `updated`.
pub fn parse_instant(at: &str) -> Result<String, Error> {
    let at = at.trim();
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(at) {
        return Ok(utc_to_source_time(t.with_timezone(&chrono::Utc)));
    }
    if let Ok(d) = chrono::NaiveDate::parse_from_str(at, "%Y-%m-%d") {
        return Ok(format!("{d}T00:00:00"));
    }
    Err(Error::Internal(format!(
        "--at {at:?}: expected an RFC 3339 instant such as 2025-03-01T00:00:00Z, or a date such as 2025-03-01"
    )))
}

/// `asof TABLE --at TIME [--tids …] --out FILE.parquet`: writes the table
/// (or the periods `tids`) as published at `at` into one Parquet file,
/// streaming period by period.
pub fn asof(
    dir: &DataDir,
    table: &TableId,
    at: &str,
    tids: Option<&BTreeSet<Tid>>,
    out: &Path,
) -> Result<Report, Error> {
    let at_source = parse_instant(at)?;
    let store = PartitionStore::new(dir);
    let reader = store.read_table_as_of(table, &at_source, tids)?;
    let sources: Vec<(Tid, AsOfSource)> = reader.remaining().cloned().collect();
    let rows = export_parquet(out, reader.map(|r| r.map(|(_, b)| b)))?;
    let from_vintages = sources
        .iter()
        .filter(|(_, s)| matches!(s, AsOfSource::Vintage(_)))
        .count();
    let mut text = String::new();
    let _ = writeln!(
        text,
        "{table} as published at {at_source} (StatBank's clock, Copenhagen): {} period(s), {} from vintages, {rows} rows -> {}",
        sources.len(),
        from_vintages,
        out.display()
    );
    let json = json!({
        "table": table,
        "at": at_source,
        "periods": sources.iter().map(|(t, s)| json!({
            "tid": t,
            "source": match s { AsOfSource::Current => "current".to_string(), AsOfSource::Vintage(v) => v.key.clone() },
        })).collect::<Vec<_>>(),
        "rows": rows,
        "out": out.display().to_string(),
    });
    Ok(Report { text, json })
}

/// One stored version of a period.
struct Version {
    from: Option<String>,
    to: Option<String>,
    reader: Box<dyn Fn() -> Result<PartitionReader, partition_store::Error>>,
}

/// `revisions TABLE [--tid T]`: each kept vintage of each period, oldest
/// first, then the current content: valid from/to (StatBank's clock), rows,
/// how many cells differ from the previous version, and when this mirror
/// published it (the run that reported the change).
pub fn revisions(dir: &DataDir, table: &TableId, tid: Option<&Tid>) -> Result<Report, Error> {
    let store = PartitionStore::new(dir);
    let vintages = store.list_vintages(table)?;
    let current = store.list_tids(table)?;
    let mut periods: BTreeSet<Tid> = current.iter().cloned().collect();
    periods.extend(vintages.keys().cloned());
    if let Some(t) = tid {
        periods.retain(|p| p == t);
    }
    let published = publication_times(dir, table)?;
    let mut text = String::new();
    let mut out = Vec::new();
    for p in &periods {
        let mut versions: Vec<Version> = Vec::new();
        for v in vintages.get(p).into_iter().flatten() {
            let (s, t, v2) = (store.clone(), table.clone(), v.clone());
            versions.push(Version {
                from: v.valid_from.clone(),
                to: Some(v.valid_to.clone()),
                reader: Box::new(move || s.read_vintage(&t, &v2)),
            });
        }
        if current.contains(p) {
            let from = store.footer(table, p)?.valid_from;
            let (s, t, p2) = (store.clone(), table.clone(), p.clone());
            versions.push(Version {
                from,
                to: None,
                reader: Box::new(move || s.read_partition(&t, &p2)),
            });
        }
        let _ = writeln!(text, "{table} {p}:");
        let mut previous: Option<Cells> = None;
        for v in &versions {
            let cells = Cells::read((v.reader)()?)?;
            let differ = previous.as_ref().map(|prev| prev.differences(&cells));
            let local = v
                .from
                .as_ref()
                .and_then(|f| published.get(&(p.clone(), f.clone())));
            let _ = writeln!(
                text,
                "  valid {} .. {}  rows {:>8}  {}{}",
                v.from.as_deref().unwrap_or("(unknown)"),
                v.to.as_deref().unwrap_or("current"),
                cells.rows,
                match differ {
                    Some(n) => format!("{n} cells differ from the previous version"),
                    None => "first kept version".into(),
                },
                local
                    .map(|t| format!("  (published here by run {t})"))
                    .unwrap_or_default()
            );
            out.push(json!({
                "tid": p,
                "valid_from": v.from,
                "valid_to": v.to,
                "rows": cells.rows,
                "cells_differing": differ,
                "published_by_run": local,
            }));
            previous = Some(cells);
        }
    }
    if periods.is_empty() {
        let _ = writeln!(text, "{table}: no partitions or vintages");
    }
    Ok(Report {
        text,
        json: json!({"table": table, "versions": out}),
    })
}

/// For each `(period, catalog updated)`: the run that published that
/// content (listed it in `changed_tids`).
fn publication_times(
    dir: &DataDir,
    table: &TableId,
) -> Result<BTreeMap<(Tid, String), String>, Error> {
    let mut out = BTreeMap::new();
    for id in list_runs(dir)? {
        let m = RunManifest::load(dir, &id)?;
        if let Some(r) = m.tables.get(table) {
            if let Some(u) = &r.catalog_updated {
                for t in &r.changed_tids {
                    out.entry((t.clone(), u.clone()))
                        .or_insert_with(|| format!("{} at {}", m.run_id, m.started_at));
                }
            }
        }
    }
    Ok(out)
}

/// One version's cells: value by the row's codes.
struct Cells {
    rows: u64,
    values: HashMap<Vec<String>, Option<u64>>,
}

impl Cells {
    fn read(reader: PartitionReader) -> Result<Cells, Error> {
        let mut values = HashMap::new();
        let mut rows = 0;
        for b in reader {
            let b: RecordBatch = b?;
            rows += b.num_rows() as u64;
            let schema = b.schema();
            let value_ix = schema.index_of(partition_store::VALUE_COLUMN).ok();
            let codes: Vec<&StringArray> = b
                .columns()
                .iter()
                .enumerate()
                .filter(|(i, _)| Some(*i) != value_ix)
                .filter_map(|(_, c)| c.as_any().downcast_ref::<StringArray>())
                .collect();
            let value = value_ix.and_then(|i| b.column(i).as_any().downcast_ref::<Float64Array>());
            for row in 0..b.num_rows() {
                let key: Vec<String> = codes.iter().map(|c| c.value(row).to_string()).collect();
                let v = value.and_then(|v| (!v.is_null(row)).then(|| v.value(row).to_bits()));
                values.insert(key, v);
            }
        }
        Ok(Cells { rows, values })
    }

    /// Cells whose value differs, plus cells only one side has.
    fn differences(&self, other: &Cells) -> usize {
        let changed = self
            .values
            .iter()
            .filter(|(k, v)| other.values.get(*k) != Some(v))
            .count();
        let added = other
            .values
            .keys()
            .filter(|k| !self.values.contains_key(*k))
            .count();
        changed + added
    }
}
