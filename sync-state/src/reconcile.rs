//! `_sync/reconcile/<id>.json`: the record of one reconcile (does Postgres
//! hold what the mirror holds?), and of its repair when one was asked for
//! (`docs/apply.md`, "Reconcile and repair").

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::{ApplyTableResult, DataDir, Error, RunId, TableId, Tid, UtcSecond};

/// How a reconcile ended, or one table's comparison.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReconcileStatus {
    /// Every period of the mirror is in the database, row for row, and the
    /// database has no other period.
    Agrees,
    /// Some period is missing, extra or different (or the fact table is).
    Differs,
    /// The table has partitions but no fact table.
    MissingTable,
    /// The differences found were repaired.
    Repaired,
    /// The comparison (or the repair) could not be done; see `error`.
    Failed,
}

impl ReconcileStatus {
    /// The JSON token.
    pub fn as_str(self) -> &'static str {
        match self {
            ReconcileStatus::Agrees => "agrees",
            ReconcileStatus::Differs => "differs",
            ReconcileStatus::MissingTable => "missing_table",
            ReconcileStatus::Repaired => "repaired",
            ReconcileStatus::Failed => "failed",
        }
    }
}

impl std::fmt::Display for ReconcileStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A period whose rows differ between the mirror and the database.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeriodDifference {
    /// The period.
    pub tid: Tid,
    /// Rows the apply would load from the partition.
    pub mirror_rows: u64,
    /// Rows the fact table holds for the period.
    pub db_rows: u64,
    /// Rows of the partition the table lacks (or holds fewer times).
    pub only_in_mirror: u64,
    /// Rows of the table the partition lacks (a changed value, a row added
    /// or duplicated).
    pub only_in_db: u64,
    /// Up to [`EXAMPLE_ROWS`] of each kind, as text.
    #[serde(default, skip_serializing_if = "Examples::is_empty")]
    pub examples: Examples,
}

/// Rows that differ, as text (`column=value, …`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Examples {
    /// Rows only the mirror has.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub only_in_mirror: Vec<String>,
    /// Rows only the database has.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub only_in_db: Vec<String>,
}

impl Examples {
    /// No example of either kind.
    pub fn is_empty(&self) -> bool {
        self.only_in_mirror.is_empty() && self.only_in_db.is_empty()
    }
}

/// Rows of each kind shown in a difference.
pub const EXAMPLE_ROWS: usize = 10;

/// One table's comparison.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TableReconcile {
    /// What the comparison found (`repaired` once a repair fixed it).
    pub status: ReconcileStatus,
    /// Periods with a partition and no rows in the fact table.
    #[serde(default)]
    pub missing_in_db: Vec<Tid>,
    /// `tid` values of the fact table that no partition has, as Postgres
    /// prints them (`2030-01-01`).
    #[serde(default)]
    pub extra_in_db: Vec<String>,
    /// Periods on both sides whose rows differ.
    #[serde(default)]
    pub differs: Vec<PeriodDifference>,
    /// Rows read on both sides.
    #[serde(default)]
    pub rows_compared: u64,
    /// Wall time of the comparison.
    #[serde(default)]
    pub duration_seconds: f64,
    /// Why the comparison or the repair failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// What the repair did (the apply's own result for the table).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repair: Option<ApplyTableResult>,
}

impl TableReconcile {
    /// A comparison that found nothing yet.
    pub fn agrees() -> TableReconcile {
        TableReconcile {
            status: ReconcileStatus::Agrees,
            missing_in_db: Vec::new(),
            extra_in_db: Vec::new(),
            differs: Vec::new(),
            rows_compared: 0,
            duration_seconds: 0.0,
            error: None,
            repair: None,
        }
    }

    /// A comparison that could not be done.
    pub fn failed(error: String) -> TableReconcile {
        TableReconcile {
            status: ReconcileStatus::Failed,
            error: Some(crate::shorten_error(error)),
            ..TableReconcile::agrees()
        }
    }

    /// Whether anything differs (also a missing table).
    pub fn has_differences(&self) -> bool {
        !self.missing_in_db.is_empty()
            || !self.extra_in_db.is_empty()
            || !self.differs.is_empty()
            || self.status == ReconcileStatus::MissingTable
    }
}

/// Counters of a reconcile.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReconcileSummary {
    /// Tables compared.
    pub tables_total: usize,
    /// Tables that agree.
    pub tables_agree: usize,
    /// Tables with a difference (a missing fact table included).
    pub tables_differ: usize,
    /// Tables with partitions and no fact table.
    pub tables_missing: usize,
    /// Tables whose comparison or repair failed.
    pub tables_failed: usize,
    /// Tables repaired.
    pub tables_repaired: usize,
    /// Periods missing from the database, over all tables.
    pub periods_missing_in_db: usize,
    /// Periods only the database has, over all tables.
    pub periods_extra_in_db: usize,
    /// Periods whose rows differ, over all tables.
    pub periods_differing: usize,
    /// Rows read on both sides, over all tables.
    pub rows_compared: u64,
}

impl ReconcileSummary {
    /// The counters of `tables`.
    pub fn of(tables: &BTreeMap<TableId, TableReconcile>) -> ReconcileSummary {
        let mut s = ReconcileSummary {
            tables_total: tables.len(),
            ..ReconcileSummary::default()
        };
        for t in tables.values() {
            match t.status {
                ReconcileStatus::Agrees => s.tables_agree += 1,
                ReconcileStatus::Differs => s.tables_differ += 1,
                ReconcileStatus::MissingTable => {
                    s.tables_differ += 1;
                    s.tables_missing += 1;
                }
                ReconcileStatus::Repaired => s.tables_repaired += 1,
                ReconcileStatus::Failed => s.tables_failed += 1,
            }
            s.periods_missing_in_db += t.missing_in_db.len();
            s.periods_extra_in_db += t.extra_in_db.len();
            s.periods_differing += t.differs.len();
            s.rows_compared += t.rows_compared;
        }
        s
    }
}

/// `_sync/reconcile/<id>.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReconcileReport {
    /// The reconcile's id (also the file name), by default its UTC start
    /// time.
    pub reconcile_id: RunId,
    /// When it started.
    pub started_at: UtcSecond,
    /// When it finished.
    #[serde(default)]
    pub finished_at: Option<UtcSecond>,
    /// `agrees`, `differs` (nothing repaired, or some difference left),
    /// `repaired` (every difference found was repaired) or `failed`.
    pub status: ReconcileStatus,
    /// Whether a repair was asked for.
    #[serde(default)]
    pub repair: bool,
    /// The fact schema compared.
    pub schema: String,
    /// Per table, by id.
    #[serde(default)]
    pub tables: BTreeMap<TableId, TableReconcile>,
    /// Counters.
    pub summary: ReconcileSummary,
    /// Unknown fields, kept as they were.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl ReconcileReport {
    /// Writes the report atomically and durably.
    pub fn save(&self, dir: &DataDir) -> Result<(), Error> {
        dir.write_json(
            &dir.reconcile_report_key(&self.reconcile_id),
            "reconcile report",
            self,
        )
    }

    /// Loads `_sync/reconcile/<id>.json`, if it exists.
    pub fn load(dir: &DataDir, id: &RunId) -> Result<Option<ReconcileReport>, Error> {
        dir.read_table_record(&dir.reconcile_report_key(id), "reconcile report")
    }

    /// A fresh id for a reconcile started at `now`: its UTC time
    /// (`20261201T220000Z`), or `…_2`, `…_3` when a report has it.
    pub fn unused_id(dir: &DataDir, now: UtcSecond) -> Result<RunId, Error> {
        let base = RunId::from_time(now.get());
        let taken = |id: &RunId| -> Result<bool, Error> {
            Ok(dir.storage().head(&dir.reconcile_report_key(id))?.is_some())
        };
        if !taken(&base)? {
            return Ok(base);
        }
        for n in 2..10_000 {
            let id = RunId::new(format!("{base}_{n}"))?;
            if !taken(&id)? {
                return Ok(id);
            }
        }
        Ok(base)
    }

    /// The newest report (by id), if any.
    pub fn latest(dir: &DataDir) -> Result<Option<ReconcileReport>, Error> {
        match ReconcileReport::list(dir)?.last() {
            Some(id) => ReconcileReport::load(dir, id),
            None => Ok(None),
        }
    }

    /// The ids of every report, oldest first (ids sort by time).
    pub fn list(dir: &DataDir) -> Result<Vec<RunId>, Error> {
        let listing = dir.storage().list_dir(&dir.reconcile_key())?;
        let mut ids: Vec<RunId> = listing
            .files
            .iter()
            .filter_map(|(name, _)| name.strip_suffix(".json"))
            .filter_map(|stem| RunId::new(stem).ok())
            .collect();
        ids.sort();
        Ok(ids)
    }
}
