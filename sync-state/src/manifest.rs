//! `runs/<run_id>.json`: the immutable record of one run (`docs/records.md`,
//! "Run manifest"), including the `db_apply` section.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::{DataDir, Error, Frequency, RunId, TableId, Tid, UtcSecond};

/// Status of a whole run (sync or DB apply).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    /// Every table succeeded (or was skipped as unchanged).
    Success,
    /// Some table failed; the others went on.
    PartialFailure,
    /// The run itself failed (for example the catalog could not be fetched).
    Failed,
    /// Nothing was done (weekly gate closed, or nothing to apply).
    Skipped,
}

impl RunStatus {
    /// The JSON token.
    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Success => "success",
            RunStatus::PartialFailure => "partial_failure",
            RunStatus::Failed => "failed",
            RunStatus::Skipped => "skipped",
        }
    }

    /// `true` for `success` and `skipped`: the statuses a scheduler treats as
    /// fine (exit status 0).
    pub fn is_ok(self) -> bool {
        matches!(self, RunStatus::Success | RunStatus::Skipped)
    }
}

impl std::fmt::Display for RunStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `catalog` section of a manifest.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CatalogSection {
    /// Whether the catalog was fetched in this run.
    pub polled: bool,
    /// Number of tables in the catalog (when polled).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub table_count: Option<usize>,
    /// When the catalog was fetched (when polled).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub polled_at: Option<UtcSecond>,
    /// Why it was not polled (`weekly_gate`) or why polling failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The previous poll time, when the gate skipped the poll.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_catalog_poll_at: Option<UtcSecond>,
    /// The error, when fetching the catalog failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Tables with local partitions that the catalog no longer lists (they
    /// keep their partitions and state unless `vanished` says otherwise).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub removed_tables: Option<Vec<TableId>>,
    /// What was done to tables gone from the catalog, when asked
    /// (`--vanished-tables archive|delete`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vanished: Option<VanishedReport>,
    /// Catalog entries set aside (unusable id, `updated` no instant, not
    /// an object, …); they make the run `partial_failure`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub invalid_entries: Option<Vec<InvalidEntry>>,
    /// Unknown fields, kept as they were.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// A catalog entry set aside (`catalog.invalid_entries`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct InvalidEntry {
    /// Its position in the catalog (0-based; not in manifests written
    /// before it was recorded).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub index: Option<usize>,
    /// Its id, when that is a string (at most 80 characters).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// Why it was set aside.
    pub error: String,
}

/// What was done to tables gone from the catalog.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VanishedReport {
    /// `archive` or `delete`.
    pub action: String,
    /// The tables acted on.
    pub tables: Vec<TableId>,
    /// Where archived partitions went (`statbank_tables/_archive/<TABLE>/<run>/`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub archive: Option<String>,
}

/// A change of a table's schema signature (its variable ids).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SchemaChange {
    /// The variable ids of the partitions before.
    pub before: Vec<String>,
    /// The variable ids from tableinfo now.
    pub after: Vec<String>,
}

/// Status of one table in a sync run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TableStatus {
    /// Fetched and written.
    Synced,
    /// Not fetched (`unchanged_updated`).
    Skipped,
    /// Failed; see `error`.
    Failed,
}

impl TableStatus {
    /// The JSON token.
    pub fn as_str(self) -> &'static str {
        match self {
            TableStatus::Synced => "synced",
            TableStatus::Skipped => "skipped",
            TableStatus::Failed => "failed",
        }
    }
}

/// One table's result in a sync manifest. The three shapes of `docs/records.md` ("Table results") are
/// built by [`TableResult::skipped`], [`TableResult::synced`] and
/// [`TableResult::failed`]; absent fields are not written.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TableResult {
    /// `synced`, `skipped` or `failed`.
    pub status: TableStatus,
    /// Why the table was skipped (`unchanged_updated`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The catalog's `updated` value seen in this run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub catalog_updated: Option<String>,
    /// Whether this was a bootstrap (no local partitions before).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bootstrap: Option<bool>,
    /// The frequency used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub frequency: Option<Frequency>,
    /// Number of periods in the remote `Tid` list.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remote_tid_count: Option<usize>,
    /// Number of local partitions before the sync.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub local_tid_count_before: Option<usize>,
    /// Remote periods without a local partition.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub new_periods: Option<Vec<Tid>>,
    /// The trailing refresh window.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refresh_periods: Option<Vec<Tid>>,
    /// Periods whose partition was written with new content, in remote order.
    #[serde(default)]
    pub changed_tids: Vec<Tid>,
    /// Refreshed periods whose content was identical and were not rewritten.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unchanged_refreshed: Option<Vec<Tid>>,
    /// Periods removed because they disappeared from the remote list
    /// (only with `--prune-deleted-periods`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deleted_tids: Option<Vec<Tid>>,
    /// Rows written to changed partitions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rows_written: Option<u64>,
    /// Partition files written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub files_written: Option<u64>,
    /// HTTP requests made for this table.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requests: Option<u64>,
    /// Bytes of response bodies received for this table.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes_fetched: Option<u64>,
    /// The table's variables changed: the whole table was re-fetched and its
    /// partition set swapped (`changed_tids` is the whole new set).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schema_change: Option<SchemaChange>,
    /// Periods outside the refresh window re-fetched in this cycle to verify
    /// them against the source (rolling verification).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verified_periods: Option<Vec<Tid>>,
    /// Periods that still owe a verification after this cycle.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verification_debt: Option<usize>,
    /// The error chain of a failed table.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// `true` when `changed_tids` includes periods an interrupted earlier
    /// run published but never reported (the pending-tids journal).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub carried_over: Option<bool>,
    /// `true` when the cached tableinfo changed in some language (by
    /// content: a title, unit, label, value list or `updated`; not key
    /// order or whitespace): the DB apply then writes the table's
    /// metadata even when no period changed.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub metadata_changed: bool,
    /// The Iceberg metadata version written for the table this cycle
    /// (`v<N>.metadata.json`, `--iceberg`); absent when none was written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iceberg_version: Option<u64>,
    /// Why the table's Iceberg metadata could not be written (its
    /// partitions are published; it is written again next cycle).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iceberg_error: Option<String>,
    /// What changed in each language's tableinfo (texts, labels added,
    /// removed, relabelled), when a previous version was cached.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub metadata_changes: Vec<crate::tableinfo::MetadataChange>,
    /// Why the tableinfo of a language besides Danish could not be had
    /// (the facts are unaffected; the language is fetched again next
    /// cycle).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata_error: Option<String>,
    /// Unknown fields, kept as they were.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl TableResult {
    fn empty(status: TableStatus) -> TableResult {
        TableResult {
            status,
            reason: None,
            catalog_updated: None,
            bootstrap: None,
            frequency: None,
            remote_tid_count: None,
            local_tid_count_before: None,
            new_periods: None,
            refresh_periods: None,
            changed_tids: Vec::new(),
            unchanged_refreshed: None,
            deleted_tids: None,
            rows_written: None,
            files_written: None,
            requests: None,
            bytes_fetched: None,
            schema_change: None,
            verified_periods: None,
            verification_debt: None,
            error: None,
            carried_over: None,
            metadata_changed: false,
            metadata_changes: Vec::new(),
            iceberg_version: None,
            iceberg_error: None,
            metadata_error: None,
            extra: Map::new(),
        }
    }

    /// `{"status":"skipped","reason":"unchanged_updated","catalog_updated","bootstrap":false,"changed_tids":[]}`
    pub fn skipped(catalog_updated: &str) -> TableResult {
        TableResult {
            reason: Some("unchanged_updated".into()),
            catalog_updated: Some(catalog_updated.into()),
            bootstrap: Some(false),
            ..TableResult::empty(TableStatus::Skipped)
        }
    }

    /// A synced table; fill in the remaining fields.
    pub fn synced(catalog_updated: &str, bootstrap: bool, frequency: Frequency) -> TableResult {
        TableResult {
            catalog_updated: Some(catalog_updated.into()),
            bootstrap: Some(bootstrap),
            frequency: Some(frequency),
            rows_written: Some(0),
            files_written: Some(0),
            ..TableResult::empty(TableStatus::Synced)
        }
    }

    /// `{"status":"failed","catalog_updated","error","changed_tids":[]}`
    pub fn failed(catalog_updated: &str, error: String) -> TableResult {
        TableResult {
            catalog_updated: Some(catalog_updated.into()),
            error: Some(error),
            ..TableResult::empty(TableStatus::Failed)
        }
    }
}

/// `summary` section of a sync manifest.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Summary {
    /// Tables in the catalog (or in the `--tables` selection).
    pub tables_total: usize,
    /// Tables synced.
    pub tables_synced: usize,
    /// Tables skipped as unchanged.
    pub tables_skipped: usize,
    /// Tables that failed.
    pub tables_failed: usize,
    /// Tables with a non-empty `changed_tids`.
    pub tables_with_changed_tids: usize,
    /// Tables with a non-empty `deleted_tids`.
    #[serde(default)]
    pub tables_with_deleted_tids: usize,
    /// Rows written in the run.
    #[serde(default)]
    pub rows_written: u64,
    /// Partition files written in the run.
    #[serde(default)]
    pub files_written: u64,
    /// Tables whose schema signature changed (re-fetched whole).
    #[serde(default)]
    pub tables_schema_changed: usize,
    /// Periods verified outside the refresh window in the run.
    #[serde(default)]
    pub periods_verified: usize,
    /// Periods still owing a verification after the run, over all tables.
    #[serde(default)]
    pub verification_debt: usize,
    /// Unknown fields, kept as they were.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl Summary {
    /// Counts the results of a run.
    pub fn of(tables: &BTreeMap<TableId, TableResult>) -> Summary {
        let mut s = Summary {
            tables_total: tables.len(),
            ..Summary::default()
        };
        for r in tables.values() {
            match r.status {
                TableStatus::Synced => s.tables_synced += 1,
                TableStatus::Skipped => s.tables_skipped += 1,
                TableStatus::Failed => s.tables_failed += 1,
            }
            if !r.changed_tids.is_empty() {
                s.tables_with_changed_tids += 1;
            }
            if r.deleted_tids.as_ref().is_some_and(|d| !d.is_empty()) {
                s.tables_with_deleted_tids += 1;
            }
            s.rows_written += r.rows_written.unwrap_or(0);
            s.files_written += r.files_written.unwrap_or(0);
            if r.schema_change.is_some() {
                s.tables_schema_changed += 1;
            }
            s.periods_verified += r.verified_periods.as_ref().map_or(0, Vec::len);
            s.verification_debt += r.verification_debt.unwrap_or(0);
        }
        s
    }
}

/// Status of one table in a DB apply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ApplyStatus {
    /// The delta was applied (or, in a dry run, would be).
    Applied,
    /// Not applied (`missing_fact_table`).
    Skipped,
    /// Failed and rolled back; see `reason` / `error`.
    Failed,
}

/// One table's result in `db_apply.tables`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ApplyTableResult {
    /// The table id.
    pub table: TableId,
    /// `applied`, `skipped` or `failed`.
    pub status: ApplyStatus,
    /// `missing_fact_table` or `missing_partition_files`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The periods applied.
    #[serde(default)]
    pub changed_tids: Vec<Tid>,
    /// Periods deleted because they were pruned at the source.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deleted_tids: Option<Vec<Tid>>,
    /// Changed periods without a partition file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub missing_tids: Option<Vec<Tid>>,
    /// Rows deleted from the target.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deleted_rows: Option<u64>,
    /// Rows inserted into the target.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inserted_rows: Option<u64>,
    /// Rows dropped because `indhold` was missing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dropped_null_rows: Option<u64>,
    /// Per-period figures (`{"2024K1": {"deleted": 10, "inserted": 12}}`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub periods: Option<BTreeMap<String, PeriodCounts>>,
    /// `true` when this table was created by `--create-missing`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<bool>,
    /// Partition columns the fact table lacks (`reason: schema_changed`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub added_columns: Option<Vec<String>>,
    /// Fact-table columns the partitions no longer have
    /// (`reason: schema_changed`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub removed_columns: Option<Vec<String>>,
    /// Columns whose type cannot hold the new values (`reason:
    /// type_changed`), or that were widened by a rebuild.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub type_changes: Option<Vec<TypeChange>>,
    /// `true` when the fact table was rebuilt from all of the table's
    /// partitions (`--on-schema-change rebuild`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rebuilt: Option<bool>,
    /// `true` when the periods were swapped in as whole partitions of a
    /// `tid`-partitioned fact table (no row deletes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partition_swap: Option<bool>,
    /// Rows written to `fact_history.<table>` (`--history`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub history_rows: Option<u64>,
    /// `tid` values deleted that no period of the mirror has (a
    /// reconcile's repair of `extra_in_db`), as Postgres prints them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub removed_values: Option<Vec<String>>,
    /// The error chain of a failed table.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Value labels written into the `meta` schema (`--metadata`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata_labels: Option<u64>,
    /// Why the table's metadata was not written (`--metadata`); its facts
    /// were applied all the same.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata_error: Option<String>,
    /// Unknown fields, kept as they were.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl ApplyTableResult {
    /// A result with only the table, status and periods set.
    pub fn new(table: TableId, status: ApplyStatus, changed_tids: Vec<Tid>) -> ApplyTableResult {
        ApplyTableResult {
            table,
            status,
            reason: None,
            changed_tids,
            deleted_tids: None,
            missing_tids: None,
            deleted_rows: None,
            inserted_rows: None,
            dropped_null_rows: None,
            periods: None,
            created: None,
            added_columns: None,
            removed_columns: None,
            type_changes: None,
            rebuilt: None,
            partition_swap: None,
            history_rows: None,
            removed_values: None,
            error: None,
            metadata_labels: None,
            metadata_error: None,
            extra: Map::new(),
        }
    }
}

/// A column whose type does not fit the partitions' values.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TypeChange {
    /// The fact-table column.
    pub column: String,
    /// Its type before.
    pub old_type: String,
    /// The type it needs (or was widened to).
    pub new_type: String,
    /// A value that does not fit the old type.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    /// The period of that value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tid: Option<Tid>,
}

/// Rows deleted and inserted for one period.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeriodCounts {
    /// Rows deleted (or, in a dry run, that would be).
    pub deleted: u64,
    /// Rows inserted (or, in a dry run, that would be).
    pub inserted: u64,
}

/// `db_apply.summary`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApplySummary {
    /// Tables with changed periods.
    pub tables_total: usize,
    /// Tables applied.
    pub tables_applied: usize,
    /// Tables skipped.
    pub tables_skipped: usize,
    /// Tables failed.
    pub tables_failed: usize,
    /// Unknown fields, kept as they were.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl ApplySummary {
    /// Counts table results.
    pub fn of(tables: &[ApplyTableResult]) -> ApplySummary {
        let count = |s| tables.iter().filter(|t| t.status == s).count();
        ApplySummary {
            tables_total: tables.len(),
            tables_applied: count(ApplyStatus::Applied),
            tables_skipped: count(ApplyStatus::Skipped),
            tables_failed: count(ApplyStatus::Failed),
            extra: Map::new(),
        }
    }
}

/// The `db_apply` section of a manifest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DbApplyReport {
    /// The run that was applied.
    pub run_id: RunId,
    /// When the apply started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<UtcSecond>,
    /// When it finished.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<UtcSecond>,
    /// `success`, `partial_failure`, or `skipped` (`no_changed_tids`).
    pub status: RunStatus,
    /// Why the apply was skipped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// `true` for a `--dry-run` report (nothing was changed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dry_run: Option<bool>,
    /// Per-table results, in the order applied; written as a map keyed by
    /// table id (`db_apply.tables["FOLK1A"].reason`), read from a map or a
    /// list.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "apply_tables_map"
    )]
    pub tables: Option<Vec<ApplyTableResult>>,
    /// Counters.
    pub summary: ApplySummary,
    /// Unknown fields, kept as they were.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl DbApplyReport {
    /// `{"run_id","status":"skipped","reason":"no_changed_tids","summary":{…all 0}}`
    pub fn no_changed_tids(run_id: RunId) -> DbApplyReport {
        DbApplyReport {
            run_id,
            started_at: None,
            finished_at: None,
            status: RunStatus::Skipped,
            reason: Some("no_changed_tids".into()),
            dry_run: None,
            tables: None,
            summary: ApplySummary::default(),
            extra: Map::new(),
        }
    }
}

/// `db_apply.tables` as the original writes it: an object keyed by table id.
/// Lists (written by earlier versions of this project) are read too.
mod apply_tables_map {
    use super::ApplyTableResult;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};
    use serde_json::Value;

    pub(super) fn serialize<S: Serializer>(
        v: &Option<Vec<ApplyTableResult>>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        let Some(tables) = v else {
            return s.serialize_none();
        };
        let mut map = serde_json::Map::new();
        for t in tables {
            let value = serde_json::to_value(t).map_err(serde::ser::Error::custom)?;
            map.insert(t.table.to_string(), value);
        }
        map.serialize(s)
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<Vec<ApplyTableResult>>, D::Error> {
        let v = Option::<Value>::deserialize(d)?;
        let items: Vec<Value> = match v {
            None | Some(Value::Null) => return Ok(None),
            Some(Value::Array(a)) => a,
            Some(Value::Object(m)) => m
                .into_iter()
                .map(|(k, mut v)| {
                    if let Value::Object(o) = &mut v {
                        o.entry("table").or_insert(Value::String(k));
                    }
                    v
                })
                .collect(),
            Some(_) => {
                return Err(serde::de::Error::custom(
                    "db_apply.tables must be an object",
                ))
            }
        };
        items
            .into_iter()
            .map(|v| serde_json::from_value(v).map_err(serde::de::Error::custom))
            .collect::<Result<Vec<_>, _>>()
            .map(Some)
    }
}

/// Contents of `runs/<run_id>.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunManifest {
    /// The run id (also the file name).
    pub run_id: RunId,
    /// When the run started.
    pub started_at: UtcSecond,
    /// When the run finished.
    #[serde(default)]
    pub finished_at: Option<UtcSecond>,
    /// `success`, `partial_failure`, `failed` or `skipped`.
    pub status: RunStatus,
    /// The catalog section.
    pub catalog: CatalogSection,
    /// Per-table results, by table id.
    #[serde(default)]
    pub tables: BTreeMap<TableId, TableResult>,
    /// Counters.
    pub summary: Summary,
    /// The error of a run that failed as a whole.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The DB apply report, once the run was applied.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub db_apply: Option<DbApplyReport>,
    /// Abandoned multipart uploads of an interrupted run that this run
    /// aborted first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aborted_uploads: Option<u64>,
    /// Multi-object publishes an interrupted run left, settled first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recovered: Option<Vec<RecoveredPublish>>,
    /// What `statbank-flow` did around this run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flow: Option<FlowSection>,
    /// The subject tree, when this run fetched it (some table's metadata
    /// changed, or an earlier fetch failed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subjects: Option<SubjectsSection>,
    /// Unknown fields, kept as they were.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// What fetching the subject tree came to in a run.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubjectsSection {
    /// The languages whose tree was fetched and cached
    /// (`metadata/subjects_<lang>.json`).
    #[serde(default)]
    pub fetched: Vec<crate::tableinfo::Lang>,
    /// Whether some cached tree changed.
    #[serde(default)]
    pub changed: bool,
    /// Why some language's tree could not be had (fetched again next
    /// cycle; the facts are unaffected).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// A publish an interrupted run left, and how it was settled.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecoveredPublish {
    /// The table.
    pub table: TableId,
    /// `replace`, `remove` or `swap`.
    pub kind: String,
    /// What was done, in words.
    pub action: String,
}

/// The `flow` section: what `statbank-flow` did around the run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FlowSection {
    /// Sync and apply together.
    pub status: RunStatus,
    /// Sync attempts made (1 + retries).
    pub sync_attempts: u32,
    /// Apply attempts made.
    pub apply_attempts: u32,
    /// Why the apply could not run at all (password removed).
    pub apply_error: Option<String>,
    /// Why the apply was not run, in words.
    pub apply_note: Option<String>,
    /// Earlier runs whose pending apply this run retried first.
    pub earlier_runs_applied: Vec<EarlierRun>,
    /// Wall time of the sync attempts (retry waits included).
    pub sync_seconds: f64,
    /// Wall time of the apply attempts.
    pub apply_seconds: f64,
    /// The alert, when one was sent.
    pub alert: Option<AlertOutcome>,
    /// The reconcile the flow ran after the apply (`--reconcile-every`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reconcile: Option<FlowReconcile>,
}

/// What the flow's reconcile found (its report is
/// `_sync/reconcile/<id>.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FlowReconcile {
    /// The reconcile's id, or `null` when it could not run.
    pub reconcile_id: Option<RunId>,
    /// Its status.
    pub status: Option<crate::ReconcileStatus>,
    /// Its counters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub summary: Option<crate::ReconcileSummary>,
    /// Why it could not run (password removed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// An earlier run whose apply the flow retried, or why the pending runs
/// could not be listed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum EarlierRun {
    /// The run was applied (again).
    Applied {
        /// The run.
        run_id: RunId,
        /// The apply's status, when it produced a report.
        status: Option<RunStatus>,
        /// The error, when it produced none (password removed).
        error: Option<String>,
        /// Attempts made.
        attempts: u32,
    },
    /// The runs awaiting an apply could not be listed.
    Unlisted {
        /// Why.
        error: String,
    },
}

impl EarlierRun {
    /// Whether this earlier run is applied now.
    pub fn succeeded(&self) -> bool {
        matches!(
            self,
            EarlierRun::Applied {
                status: Some(RunStatus::Success),
                ..
            }
        )
    }
}

/// Whether the alert webhook received the summary.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AlertOutcome {
    /// The webhook's scheme and host only (its path may hold a token).
    pub url: String,
    /// A 2xx answer was received.
    pub delivered: bool,
    /// The HTTP status, when there was an answer.
    pub http_status: Option<u16>,
    /// Why delivery failed.
    pub error: Option<String>,
}

impl RunManifest {
    /// A manifest of run `run_id` started at `started_at`: status `failed`
    /// and every section empty until the run fills them in.
    pub fn new(run_id: RunId, started_at: UtcSecond) -> RunManifest {
        RunManifest {
            run_id,
            started_at,
            finished_at: None,
            status: RunStatus::Failed,
            catalog: CatalogSection::default(),
            tables: BTreeMap::new(),
            summary: Summary::default(),
            error: None,
            db_apply: None,
            aborted_uploads: None,
            recovered: None,
            flow: None,
            subjects: None,
            extra: Map::new(),
        }
    }

    /// Loads `runs/<run_id>.json`; [`Error::ManifestNotFound`] if absent.
    pub fn load(dir: &DataDir, run: &RunId) -> Result<RunManifest, Error> {
        let key = dir.manifest_key(run);
        dir.read_table_record(&key, "run manifest")?
            .ok_or_else(|| Error::ManifestNotFound {
                path: dir.display_key(&key),
            })
    }

    /// Writes the manifest atomically and durably.
    pub fn save(&self, dir: &DataDir) -> Result<(), Error> {
        dir.write_json(&dir.manifest_key(&self.run_id), "run manifest", self)
    }

    /// Tables with changed or deleted periods, in id order.
    pub fn tables_with_changes(&self) -> impl Iterator<Item = (&TableId, &TableResult)> {
        self.tables.iter().filter(|(_, r)| {
            !r.changed_tids.is_empty() || r.deleted_tids.as_ref().is_some_and(|d| !d.is_empty())
        })
    }

    /// The tables whose cached tableinfo changed and no period did: a DB
    /// apply with metadata writes their metadata alone.
    pub fn tables_with_metadata_only(&self) -> impl Iterator<Item = (&TableId, &TableResult)> {
        self.tables.iter().filter(|(_, r)| {
            r.metadata_changed
                && r.changed_tids.is_empty()
                && r.deleted_tids.as_ref().is_none_or(|d| d.is_empty())
        })
    }
}

impl RunManifest {
    /// Whether this run's changes still need a DB apply: it has changed or
    /// deleted periods and its `db_apply` is absent, `failed`,
    /// `partial_failure`, or `skipped` because no database was configured.
    /// A later sync does not list these periods again (their partitions are
    /// unchanged since), so such a run must be applied by itself.
    pub fn needs_apply(&self) -> bool {
        if self.tables_with_changes().next().is_none()
            && self.tables_with_metadata_only().next().is_none()
        {
            return false;
        }
        match &self.db_apply {
            None => true,
            Some(a) => match a.status {
                RunStatus::Failed | RunStatus::PartialFailure => true,
                RunStatus::Skipped => a.reason.as_deref() == Some("no_database_url"),
                RunStatus::Success => false,
            },
        }
    }
}

/// Runs whose changes still need a DB apply ([`RunManifest::needs_apply`]),
/// oldest first. A manifest that cannot be read is an error naming it.
pub fn pending_runs(dir: &DataDir) -> Result<Vec<RunId>, Error> {
    let mut out = Vec::new();
    for id in list_runs(dir)? {
        if RunManifest::load(dir, &id)?.needs_apply() {
            out.push(id);
        }
    }
    Ok(out)
}

/// Run ids of every manifest in `runs/`, sorted by file name (so the last is
/// the latest run). Files that are not `<valid run id>.json` are ignored.
pub fn list_runs(dir: &DataDir) -> Result<Vec<RunId>, Error> {
    let listing = dir.storage().list_dir(&dir.runs_key())?;
    let mut runs: Vec<RunId> = listing
        .files
        .iter()
        .filter_map(|(name, _)| name.strip_suffix(".json"))
        .filter_map(|stem| RunId::new(stem).ok())
        .collect();
    runs.sort_by(|a, b| a.as_str().cmp(b.as_str()));
    Ok(runs)
}

/// The latest run id (last manifest by file name), if any.
pub fn latest_run(dir: &DataDir) -> Result<Option<RunId>, Error> {
    Ok(list_runs(dir)?.pop())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tid(s: &str) -> Tid {
        Tid::new(s).expect("tid")
    }

    #[test]
    fn a_manifest_written_before_the_typed_records_is_written_back_unchanged() {
        let before = include_str!("../testdata/manifest_before_typed_records.json");
        let m: RunManifest = serde_json::from_str(before).expect("reads");
        assert!(m.extra.is_empty(), "every field is typed: {:?}", m.extra);
        assert!(m.catalog.extra.is_empty(), "{:?}", m.catalog.extra);
        assert!(m.tables.values().all(|t| t.extra.is_empty()));
        assert_eq!(m.aborted_uploads, Some(2));
        let flow = m.flow.as_ref().expect("flow");
        assert_eq!(flow.earlier_runs_applied.len(), 3);
        assert!(flow.earlier_runs_applied[0].succeeded());
        assert!(matches!(
            flow.earlier_runs_applied[2],
            EarlierRun::Unlisted { .. }
        ));
        let again = crate::fsio::encode_json(&m, "run manifest").expect("encodes");
        assert_eq!(String::from_utf8(again).expect("utf-8"), before);
    }

    #[test]
    fn needs_apply_follows_db_apply() {
        let mut m = RunManifest::new(
            RunId::new("r1").expect("id"),
            UtcSecond::new(chrono::DateTime::UNIX_EPOCH),
        );
        m.status = RunStatus::Success;
        assert!(!m.needs_apply(), "nothing changed");
        let mut r = TableResult::skipped("u");
        r.changed_tids = vec![tid("2024")];
        m.tables.insert(TableId::new("T").expect("id"), r);
        assert!(m.needs_apply(), "never applied");
        let mut a = DbApplyReport::no_changed_tids(m.run_id.clone());
        a.reason = Some("no_database_url".into());
        m.db_apply = Some(a.clone());
        assert!(m.needs_apply(), "synced without a database");
        for (status, pending) in [
            (RunStatus::Failed, true),
            (RunStatus::PartialFailure, true),
            (RunStatus::Success, false),
        ] {
            a.status = status;
            a.reason = None;
            m.db_apply = Some(a.clone());
            assert_eq!(m.needs_apply(), pending, "{status}");
        }
    }

    #[test]
    fn table_result_shapes_match_appendix_a() {
        let skipped =
            serde_json::to_value(TableResult::skipped("2024-08-12T08:00:00")).expect("json");
        assert_eq!(
            skipped,
            serde_json::json!({"status":"skipped","reason":"unchanged_updated",
                "catalog_updated":"2024-08-12T08:00:00","bootstrap":false,"changed_tids":[]})
        );
        let failed = serde_json::to_value(TableResult::failed("u", "boom".into())).expect("json");
        assert_eq!(
            failed,
            serde_json::json!({"status":"failed","catalog_updated":"u","error":"boom","changed_tids":[]})
        );
        let mut synced = TableResult::synced("u", true, Frequency::Quarterly);
        synced.remote_tid_count = Some(2);
        synced.local_tid_count_before = Some(0);
        synced.new_periods = Some(vec![tid("2024K1"), tid("2024K2")]);
        synced.refresh_periods = Some(vec![tid("2024K1"), tid("2024K2")]);
        synced.changed_tids = vec![tid("2024K1"), tid("2024K2")];
        let v = serde_json::to_value(&synced).expect("json");
        for key in [
            "status",
            "catalog_updated",
            "bootstrap",
            "frequency",
            "remote_tid_count",
            "local_tid_count_before",
            "new_periods",
            "refresh_periods",
            "changed_tids",
            "rows_written",
            "files_written",
        ] {
            assert!(v.get(key).is_some(), "{key}");
        }
        assert_eq!(v["status"], "synced");
        assert_eq!(v["frequency"], "quarterly");
    }

    #[test]
    fn manifest_round_trips_with_unknown_fields() {
        let json = r#"{"run_id":"20261129T220000Z","started_at":"2026-11-29T22:00:00Z",
          "finished_at":"2026-11-29T22:00:05Z","status":"partial_failure",
          "catalog":{"polled":true,"table_count":2,"polled_at":"2026-11-29T22:00:01Z"},
          "tables":{"A":{"status":"failed","catalog_updated":"u","error":"e","changed_tids":[]}},
          "summary":{"tables_total":1,"tables_synced":0,"tables_skipped":0,"tables_failed":1,"tables_with_changed_tids":0},
          "db_apply":{"run_id":"20261129T220000Z","status":"skipped","reason":"no_changed_tids",
             "summary":{"tables_total":0,"tables_applied":0,"tables_skipped":0,"tables_failed":0}},
          "operator_note":"hi"}"#;
        let m: RunManifest = serde_json::from_str(json).expect("parses");
        assert_eq!(m.status, RunStatus::PartialFailure);
        let v = serde_json::to_value(&m).expect("json");
        assert_eq!(v["operator_note"], "hi");
        assert_eq!(v["db_apply"]["reason"], "no_changed_tids");
        assert!(v["db_apply"].get("tables").is_none());
    }

    #[test]
    fn latest_run_is_last_by_file_name() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = DataDir::local(tmp.path());
        let runs_dir = tmp.path().join("statbank_tables/_sync/runs");
        std::fs::create_dir_all(&runs_dir).expect("mkdir");
        for name in [
            "20261129T220000Z.json",
            "20261122T220000Z.json",
            "notes.txt",
            ".tmp-x.json.tmp",
        ] {
            std::fs::write(runs_dir.join(name), b"{}").expect("write");
        }
        assert_eq!(
            latest_run(&dir).expect("list").expect("some").as_str(),
            "20261129T220000Z"
        );
        assert_eq!(list_runs(&dir).expect("list").len(), 2);
    }

    #[test]
    fn db_apply_tables_are_a_map_keyed_by_table_and_lists_still_read() {
        let mut r = DbApplyReport::no_changed_tids(RunId::new("r1").expect("id"));
        r.status = RunStatus::PartialFailure;
        let mut a = ApplyTableResult::new(
            TableId::new("FOLK1A").expect("id"),
            ApplyStatus::Failed,
            vec![],
        );
        a.reason = Some("missing_partition_files".into());
        let b = ApplyTableResult::new(
            TableId::new("BIL10").expect("id"),
            ApplyStatus::Applied,
            vec![],
        );
        r.tables = Some(vec![a, b]);
        let v = serde_json::to_value(&r).expect("json");
        assert_eq!(v["tables"]["FOLK1A"]["reason"], "missing_partition_files");
        assert_eq!(v["tables"]["BIL10"]["status"], "applied");
        // insertion order is kept (the order applied)
        let keys: Vec<&String> = v["tables"].as_object().expect("map").keys().collect();
        assert_eq!(keys, vec!["FOLK1A", "BIL10"]);
        let back: DbApplyReport = serde_json::from_value(v.clone()).expect("reads the map");
        assert_eq!(back, r);
        // the list an earlier version wrote
        let mut old = v;
        old["tables"] = serde_json::json!([
            {"table": "FOLK1A", "status": "failed", "reason": "missing_partition_files", "changed_tids": []},
            {"table": "BIL10", "status": "applied", "changed_tids": []}
        ]);
        let back: DbApplyReport = serde_json::from_value(old).expect("reads the list");
        assert_eq!(back, r);
        // a map entry without "table" takes its key
        let m: DbApplyReport = serde_json::from_value(serde_json::json!({
            "run_id": "r1", "status": "success",
            "tables": {"X1": {"status": "applied", "changed_tids": []}},
            "summary": {"tables_total": 1, "tables_applied": 1, "tables_skipped": 0, "tables_failed": 0}
        }))
        .expect("reads");
        assert_eq!(m.tables.expect("tables")[0].table.as_str(), "X1");
    }
}
