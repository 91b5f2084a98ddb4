//! What the benchmark binaries share: peak RSS of this process and of a
//! child timed by `/usr/bin/time`, medians, scratch databases and folders,
//! and the FOLK1A-shaped table of `bench-apply` and `bench-reconcile`
//! ([`folk1a`]).

use std::path::PathBuf;

/// Monday 08:00 UTC of week `i` of the weekly benches (week 0 = the
/// bootstrap, 2025-01-06).
pub fn week(i: usize) -> chrono::DateTime<chrono::Utc> {
    use chrono::TimeZone;
    let start = chrono::Utc
        .with_ymd_and_hms(2025, 1, 6, 8, 0, 0)
        .single()
        .expect("valid date");
    start + chrono::Duration::weeks(i64::try_from(i).unwrap_or(i64::MAX))
}

/// The emulator's FOLK1A-shaped table (OMRÅDE 105 × KØN 3 × ALDER 127 ×
/// CIVILSTAND 5 = 200,025 cells per period) with `periods`, `updated`
/// 2025-01-01T08:00:00: the world of `bench-vintages` and `bench-iceberg`.
pub fn folk1a_world(periods: &[String]) -> statbank_client::emulator::World {
    use statbank_client::emulator::{EmuTable, World};
    let codes: Vec<&str> = periods.iter().map(String::as_str).collect();
    let mut w = World::new();
    let mut t = EmuTable::synthetic(
        folk1a::TABLE,
        &codes,
        &[
            ("OMRÅDE", 105),
            ("KØN", 3),
            ("ALDER", 127),
            ("CIVILSTAND", 5),
        ],
    );
    t.updated = "2025-01-01T08:00:00".into();
    w.insert(t);
    w
}

/// The `/usr/bin/time -f` format whose output [`time_maxrss_kib`] reads.
pub const TIME_FORMAT: &str = "MAXRSS %M";

/// Peak resident set size of this process in KiB (`VmHWM`).
pub fn peak_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// The child's peak RSS in KiB from `/usr/bin/time -f "MAXRSS %M"` output.
pub fn time_maxrss_kib(stderr: &str) -> Option<u64> {
    stderr
        .lines()
        .find_map(|l| l.strip_prefix("MAXRSS "))
        .and_then(|v| v.trim().parse().ok())
}

/// The median (mean of the middle two for an even count; NaN when empty).
pub fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

/// `median s (min–max)` of `v`.
pub fn spread_text(v: &[f64]) -> String {
    spread(v, "s", 3)
}

/// `median unit (min–max)` of `v`, to `digits` decimals.
pub fn spread(v: &[f64], unit: &str, digits: usize) -> String {
    let med = median(v.to_vec());
    let min = v.iter().copied().fold(f64::INFINITY, f64::min);
    let max = v.iter().copied().fold(0.0, f64::max);
    format!("{med:.digits$} {unit} ({min:.digits$}–{max:.digits$})")
}

/// `url` with its database name replaced by `db` (a URL or a libpq
/// `key=value` string).
pub fn with_dbname(url: &str, db: &str) -> String {
    if let Some(scheme_end) = url.find("://") {
        let (base, query) = match url.find('?') {
            Some(q) => (&url[..q], &url[q..]),
            None => (url, ""),
        };
        let after = scheme_end + 3;
        let host_part = match base[after..].find('/') {
            Some(p) => &base[..after + p],
            None => base,
        };
        format!("{host_part}/{db}{query}")
    } else {
        format!("{url} dbname={db}")
    }
}

/// A scratch folder, removed when dropped.
#[derive(Debug)]
pub struct Scratch(pub PathBuf);

impl Scratch {
    /// `<temp>/<name>-<pid>`, created.
    pub fn new(name: &str) -> std::io::Result<Scratch> {
        let p = std::env::temp_dir().join(format!("{name}-{}", std::process::id()));
        std::fs::create_dir_all(&p)?;
        Ok(Scratch(p))
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The FOLK1A-shaped table: 200,025 rows a quarter (omrade 105 × kon 3 ×
/// alder 127 × civilstand 5), quarters counted from 2015K1.
pub mod folk1a {
    use std::sync::Arc;

    use arrow_array::{ArrayRef, Float64Array, RecordBatch, StringArray};
    use partition_store::{partition_schema, PartitionStore};
    use sync_state::{TableId, Tid};

    /// The table id.
    pub const TABLE: &str = "FOLK1A";
    /// Rows of one quarter.
    pub const ROWS_PER_QUARTER: usize = 105 * 3 * 127 * 5;

    /// The codes of omrade, kon, alder and civilstand.
    pub fn codes() -> [Vec<String>; 4] {
        let mut omrade: Vec<String> = ["000", "084", "085", "081", "082", "083"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        omrade.extend((0..99).map(|i| format!("{}", 101 + i * 7)));
        let kon = ["TOT", "1", "2"].iter().map(|s| s.to_string()).collect();
        let mut alder = vec!["IALT".to_string()];
        alder.extend((0..126).map(|i| i.to_string()));
        let civ = ["TOT", "U", "G", "E", "F"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        [omrade, kon, alder, civ]
    }

    /// Quarter `i` counted from 2015K1: (code, first day).
    pub fn quarter(i: usize) -> (String, String) {
        let year = 2015 + i / 4;
        let q = i % 4 + 1;
        (
            format!("{year}K{q}"),
            format!("{year}-{:02}-01", (q - 1) * 3 + 1),
        )
    }

    /// The value of row `row` in the `q`-th quarter written.
    pub fn value(q: usize, row: usize) -> f64 {
        ((row * 7919 + q * 31) % 100_000) as f64 / 10.0
    }

    /// Writes quarter `code` (the `q`-th written) as a partition of
    /// FOLK1A, calling `on_row(codes, value)` for every row written.
    pub fn write_quarter(
        store: &PartitionStore,
        q: usize,
        code: &str,
        mut on_row: impl FnMut([&str; 4], f64) -> std::io::Result<()>,
    ) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        let [omrade, kon, alder, civ] = codes();
        let schema = partition_schema(&["OMRÅDE", "KØN", "ALDER", "CIVILSTAND", "TID", "INDHOLD"]);
        let mut batches = Vec::new();
        let mut cols: [Vec<&str>; 5] = Default::default();
        let mut vals: Vec<Option<f64>> = Vec::new();
        let mut row = 0usize;
        let mut flush = |cols: &mut [Vec<&str>; 5], vals: &mut Vec<Option<f64>>| {
            let mut arrays: Vec<ArrayRef> = cols
                .iter_mut()
                .map(|c| Arc::new(StringArray::from(std::mem::take(c))) as ArrayRef)
                .collect();
            arrays.push(Arc::new(Float64Array::from(std::mem::take(vals))));
            RecordBatch::try_new(schema.clone(), arrays).map(|b| batches.push(b))
        };
        for o in &omrade {
            for k in &kon {
                for a in &alder {
                    for c in &civ {
                        let v = value(q, row);
                        row += 1;
                        for (col, x) in cols.iter_mut().zip([o, k, a, c]) {
                            col.push(x);
                        }
                        cols[4].push(code);
                        vals.push(Some(v));
                        on_row([o, k, a, c], v)?;
                        if vals.len() == 65_536 {
                            flush(&mut cols, &mut vals)?;
                        }
                    }
                }
            }
        }
        if !vals.is_empty() {
            flush(&mut cols, &mut vals)?;
        }
        store.write_partition(
            &TableId::new(TABLE)?,
            &Tid::new(code)?,
            &batches,
            &Default::default(),
        )?;
        Ok(())
    }

    /// Caches FOLK1A's Danish tableinfo for `quarters` quarters, as a sync
    /// would (`metadata/tables_info_raw_da/FOLK1A.json`): the variables and
    /// codes the partitions hold.
    pub fn write_tableinfo(
        data: &sync_state::DataDir,
        quarters: usize,
    ) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        let value = |id: &str| serde_json::json!({"id": id, "text": id});
        let names = ["OMRÅDE", "KØN", "ALDER", "CIVILSTAND"];
        let mut variables: Vec<serde_json::Value> = names
            .iter()
            .zip(codes())
            .map(|(name, codes)| {
                serde_json::json!({
                    "id": name, "text": name.to_lowercase(), "elimination": true, "time": false,
                    "values": codes.iter().map(|c| value(c)).collect::<Vec<_>>(),
                })
            })
            .collect();
        variables.push(serde_json::json!({
            "id": "Tid", "text": "tid", "elimination": false, "time": true,
            "values": (0..quarters).map(|q| value(&quarter(q).0)).collect::<Vec<_>>(),
        }));
        let info = serde_json::json!({
            "id": TABLE, "text": "Befolkningen den 1. i kvartalet", "unit": "Antal",
            "updated": "2026-01-01T08:00:00", "active": true, "variables": variables,
        });
        data.storage().put(
            &data.metadata_file_key(&TableId::new(TABLE)?),
            &serde_json::to_vec(&info)?,
        )?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians_and_time_output() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(vec![4.0, 1.0, 2.0, 3.0]), 2.5);
        assert!(median(vec![]).is_nan());
        assert_eq!(time_maxrss_kib("noise\nMAXRSS 1234\n"), Some(1234));
        assert_eq!(time_maxrss_kib("nothing"), None);
        assert_eq!(spread_text(&[2.0, 1.0, 3.0]), "2.000 s (1.000–3.000)");
    }

    #[test]
    fn database_names_replaced() {
        assert_eq!(
            with_dbname("postgres://u@h:5432/test?sslmode=disable", "x"),
            "postgres://u@h:5432/x?sslmode=disable"
        );
        assert_eq!(with_dbname("postgres://u@h", "x"), "postgres://u@h/x");
        assert_eq!(with_dbname("host=h user=u", "x"), "host=h user=u dbname=x");
    }
}
