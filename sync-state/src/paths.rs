//! The on-disk layout of a data folder (guide "Disk Layout").

use std::path::{Path, PathBuf};

use crate::{RunId, TableId};

/// The paths of one data folder (`data/dst` by default):
///
/// ```text
/// <data>/statbank_tables/<TABLE_ID>/<urlquoted_tid>.parquet
/// <data>/statbank_tables/_sync/state.json
/// <data>/statbank_tables/_sync/runs/<run_id>.json
/// <data>/statbank_tables/_sync/frequency_overrides.json
/// <data>/statbank_tables/_sync/lock
/// <data>/metadata/tables_info_raw_da/<TABLE_ID>.json
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataDir {
    root: PathBuf,
}

impl DataDir {
    /// A data folder rooted at `root`.
    pub fn new(root: impl Into<PathBuf>) -> DataDir {
        DataDir { root: root.into() }
    }

    /// The data folder itself.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// `<data>/statbank_tables`, the root of the partitions.
    pub fn tables_root(&self) -> PathBuf {
        self.root.join("statbank_tables")
    }

    /// `<data>/statbank_tables/<TABLE_ID>`.
    pub fn table_dir(&self, table: &TableId) -> PathBuf {
        self.tables_root().join(table.as_str())
    }

    /// `<data>/statbank_tables/_sync`.
    pub fn sync_dir(&self) -> PathBuf {
        self.tables_root().join("_sync")
    }

    /// `<data>/statbank_tables/_sync/state.json`.
    pub fn state_file(&self) -> PathBuf {
        self.sync_dir().join("state.json")
    }

    /// `<data>/statbank_tables/_sync/runs`.
    pub fn runs_dir(&self) -> PathBuf {
        self.sync_dir().join("runs")
    }

    /// `<data>/statbank_tables/_sync/runs/<run_id>.json`.
    pub fn manifest_file(&self, run: &RunId) -> PathBuf {
        self.runs_dir().join(format!("{run}.json"))
    }

    /// `<data>/statbank_tables/_sync/frequency_overrides.json`.
    pub fn overrides_file(&self) -> PathBuf {
        self.sync_dir().join("frequency_overrides.json")
    }

    /// `<data>/statbank_tables/_sync/lock`, held while a cycle runs.
    pub fn lock_file(&self) -> PathBuf {
        self.sync_dir().join("lock")
    }

    /// `<data>/metadata/tables_info_raw_da`.
    pub fn metadata_dir(&self) -> PathBuf {
        self.root.join("metadata").join("tables_info_raw_da")
    }

    /// `<data>/metadata/tables_info_raw_da/<TABLE_ID>.json`.
    pub fn metadata_file(&self, table: &TableId) -> PathBuf {
        self.metadata_dir().join(format!("{table}.json"))
    }
}
