//! The fixture every DB-apply test starts from: its own database (from
//! [`crate::pg::test_db`]) with an empty schema `fact`, its own data folder
//! and partition store, and writers for partitions and run manifests.

use std::collections::BTreeMap;
use std::sync::Arc;

use anyhow::{Context, Result};
use arrow_array::{ArrayRef, Float64Array, RecordBatch, StringArray};
use partition_store::{partition_schema, PartitionStore};
use sync_state::{
    ApplyTableResult, DataDir, DbApplyReport, Frequency, RunId, RunManifest, RunStatus, Summary,
    TableId, TableResult, Tid, UtcSecond,
};

use crate::pg::{test_db, TestDb};

/// One test's database, data folder and partition store.
pub struct Fx {
    /// The test's database (dropped with the fixture).
    pub db: TestDb,
    /// The set-up and inspection connection.
    pub client: postgres::Client,
    /// The data folder's owner (removed with the fixture).
    pub tmp: tempfile::TempDir,
    /// The data folder.
    pub data: DataDir,
    /// Its partition store.
    pub store: PartitionStore,
}

/// A new fixture.
pub fn fx() -> Result<Fx> {
    let db = test_db()?;
    let mut client = db.client()?;
    client.batch_execute("CREATE SCHEMA fact")?;
    let tmp = tempfile::tempdir()?;
    let data = DataDir::local(tmp.path());
    let store = PartitionStore::new(&data);
    Ok(Fx {
        db,
        client,
        tmp,
        data,
        store,
    })
}

impl Fx {
    /// The `db_apply` section as written into run `run`'s manifest (raw
    /// JSON, to check the on-disk contract), if any.
    pub fn saved_db_apply(&self, run: &RunId) -> Result<Option<serde_json::Value>> {
        let key = self.data.manifest_key(run);
        let bytes = self
            .data
            .storage()
            .get(&key)?
            .with_context(|| format!("manifest {key} missing"))?;
        let v: serde_json::Value = serde_json::from_slice(&bytes)?;
        Ok(v.get("db_apply").cloned())
    }
}

/// One table's result in a saved `db_apply` (a map keyed by table id, as
/// the original writes it).
pub fn saved_table<'v>(db_apply: &'v serde_json::Value, t: &str) -> &'v serde_json::Value {
    db_apply["tables"]
        .get(t)
        .unwrap_or_else(|| panic!("no saved result for {t} in {db_apply}"))
}

/// A period code known to be valid.
pub fn tid(s: &str) -> Tid {
    Tid::new(s).expect("valid tid")
}

/// Period codes known to be valid.
pub fn tids(v: &[&str]) -> Vec<Tid> {
    v.iter().map(|s| tid(s)).collect()
}

/// A table id known to be valid.
pub fn table(s: &str) -> TableId {
    TableId::new(s).expect("valid table id")
}

/// A row: the codes (in header order, without INDHOLD) and the value.
pub type Row<'a> = (&'a [&'a str], Option<f64>);

impl Fx {
    /// Writes one partition; `headers` is the BULK header, INDHOLD last.
    pub fn part(&self, t: &str, period: &str, headers: &[&str], rows: &[Row<'_>]) -> Result<()> {
        let schema = partition_schema(headers);
        let n_codes = headers.len() - 1;
        let mut cols: Vec<ArrayRef> = (0..n_codes)
            .map(|i| {
                Arc::new(StringArray::from(
                    rows.iter().map(|(codes, _)| codes[i]).collect::<Vec<_>>(),
                )) as ArrayRef
            })
            .collect();
        cols.push(Arc::new(Float64Array::from(
            rows.iter().map(|(_, v)| *v).collect::<Vec<_>>(),
        )));
        let batch = RecordBatch::try_new(schema, cols)?;
        self.store
            .write_partition(&table(t), &tid(period), &[batch], &Default::default())
            .with_context(|| format!("writing partition {t}/{period}"))?;
        Ok(())
    }

    /// Writes manifest `run` with the given tables' changed and deleted periods.
    pub fn manifest(&self, run: &str, tables: &[(&str, &[&str], &[&str])]) -> Result<RunId> {
        let run_id = RunId::new(run)?;
        let mut results = BTreeMap::new();
        for (t, changed, deleted) in tables {
            let mut r = TableResult::synced("2026-11-29T08:00:00", false, Frequency::Quarterly);
            r.changed_tids = tids(changed);
            if !deleted.is_empty() {
                r.deleted_tids = Some(tids(deleted));
            }
            results.insert(table(t), r);
        }
        let now: UtcSecond = "2026-11-29T22:00:00Z".parse()?;
        let mut m = RunManifest::new(run_id.clone(), now);
        m.finished_at = Some(now);
        m.status = RunStatus::Success;
        m.summary = Summary::of(&results);
        m.tables = results;
        m.save(&self.data)?;
        Ok(run_id)
    }

    /// Every row of `fact.<t>` as text, sorted.
    pub fn dump(&mut self, t: &str) -> Result<Vec<String>> {
        Ok(self
            .client
            .query(
                &format!("SELECT x::text COLLATE \"C\" AS r FROM fact.{t} x ORDER BY r"),
                &[],
            )?
            .iter()
            .map(|r| r.get::<_, String>(0))
            .collect())
    }
}

/// The result of table `t` in `report` (panics when absent).
pub fn result<'r>(report: &'r DbApplyReport, t: &str) -> &'r ApplyTableResult {
    report
        .tables
        .as_ref()
        .and_then(|ts| ts.iter().find(|r| r.table.as_str() == t))
        .unwrap_or_else(|| panic!("no result for {t} in {report:?}"))
}
