//! `state.json`: the mutable sync state (`docs/records.md`, "State file").

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::{DataDir, Error, Frequency, RunId, TableId, Tid, UtcSecond};

/// Contents of `statbank_tables/_sync/state.json`.
///
/// Fields this version does not know are kept in `extra` and written back.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SyncState {
    /// When the catalog was last polled (drives the weekly gate).
    #[serde(default)]
    pub last_catalog_poll_at: Option<UtcSecond>,
    /// The last run that touched this state.
    #[serde(default)]
    pub last_run_id: Option<RunId>,
    /// Per-table state, by table id.
    #[serde(default)]
    pub tables: BTreeMap<TableId, TableState>,
    /// Whether superseded partitions are kept as vintages in this data
    /// folder (`--keep-vintages`, until `--no-keep-vintages`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub keep_vintages: bool,
    /// Whether the tables' Iceberg metadata is kept under
    /// `statbank_tables/_iceberg/` (`--iceberg`, until `--no-iceberg`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub iceberg: bool,
    /// Where the data folder was when its Iceberg metadata was written (an
    /// absolute path or a URL): the metadata names files by it, so a folder
    /// found elsewhere (copied, moved) has every table's metadata
    /// regenerated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iceberg_location: Option<String>,
    /// The last fetch of the subject tree failed: the next cycle fetches
    /// it even when no table changed.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub subjects_pending: bool,
    /// Unknown fields, kept as they were.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// Per-table entry of `state.json`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TableState {
    /// The catalog `updated` value the local partitions correspond to.
    #[serde(default)]
    pub last_seen_updated: Option<String>,
    /// When the table was last synced successfully or attempted.
    #[serde(default)]
    pub last_sync_at: Option<UtcSecond>,
    /// The frequency used for the refresh window.
    #[serde(default)]
    pub frequency: Option<Frequency>,
    /// Whether a full bootstrap has completed.
    #[serde(default)]
    pub bootstrap_complete: bool,
    /// `synced` or `failed`.
    #[serde(default)]
    pub last_status: Option<String>,
    /// The error of the last failed attempt, else `null`.
    #[serde(default)]
    pub last_error: Option<String>,
    /// Runs in a row in which this table failed (0, and absent, after a
    /// success).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub consecutive_failures: u32,
    /// The run that last touched this table.
    #[serde(default)]
    pub last_run_id: Option<RunId>,
    /// Journal: periods whose partitions were (or were about to be) written
    /// but not yet reported in a finished run manifest. Written *before* the
    /// renames, cleared only after a manifest listing them is on disk, so a
    /// crash never hides a change from the DB apply.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pending_changed_tids: Vec<Tid>,
    /// Journal: periods removed at the source (pruned) but not yet reported.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pending_deleted_tids: Vec<Tid>,
    /// The schema signature of the local partitions: the table's variable
    /// ids in tableinfo order, time variable included
    /// (`["OMRÅDE", "KØN", "Tid"]`). `None` for a mirror written before
    /// signatures were kept (derived from the partitions on the next sync).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variables: Option<Vec<String>>,
    /// The catalog `updated` the table's Iceberg metadata was last
    /// generated for (`--iceberg`); regenerated when it differs from
    /// `last_seen_updated`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iceberg_updated: Option<String>,
    /// How many partitions the table has, as of its last sync (lets a
    /// no-change cycle on an object store skip listing every table).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partition_count: Option<usize>,
    /// When the table was first missing from the catalog (it keeps its
    /// partitions); cleared when it comes back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub removed_from_catalog_at: Option<UtcSecond>,
    /// Periods outside the refresh window that still owe one verification
    /// against the source (see [`crate::VerifyPolicy`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub verify_debt: Vec<Tid>,
    /// How many periods of the debt are verified per cycle (fixed when the
    /// debt was incurred, so it clears within the policy's cycles).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verify_per_cycle: Option<usize>,
    /// Journal: a schema change whose new set was (or was about to be)
    /// swapped in but not yet reported in a finished run manifest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending_schema_change: Option<crate::SchemaChange>,
    /// Journal: periods verified but not yet reported in a finished run
    /// manifest (as `pending_changed_tids`, for `verified_periods`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pending_verified_tids: Vec<Tid>,
    /// Languages besides Danish whose tableinfo the last visit could not
    /// fetch (or that did not match the Danish one): fetched again next
    /// cycle, without data requests.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub metadata_pending: Vec<crate::tableinfo::Lang>,
    /// Unknown fields, kept as they were.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl SyncState {
    /// Loads `state.json`; an absent file is an empty state (first run), a
    /// corrupt one is [`Error::Corrupt`] and is never replaced silently.
    pub fn load(dir: &DataDir) -> Result<SyncState, Error> {
        Ok(dir
            .read_table_record(&dir.state_key(), "state")?
            .unwrap_or_default())
    }

    /// Writes `state.json` atomically and durably.
    pub fn save(&self, dir: &DataDir) -> Result<(), Error> {
        dir.write_json(&dir.state_key(), "state", self)
    }
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_unknown_fields_and_reads_python_state() {
        let json = r#"{
          "last_catalog_poll_at": "2026-11-22T22:00:01Z",
          "last_run_id": "20261122T220000Z",
          "schema_version": 7,
          "tables": {
            "FOLK1A": {"last_seen_updated": "2024-08-12T08:00:00", "last_sync_at": "2026-11-22T22:01:00Z",
                       "frequency": "quarterly", "bootstrap_complete": true, "last_status": "synced",
                       "last_error": null, "last_run_id": "20261122T220000Z", "future": [1, 2]}
          }
        }"#;
        let s: SyncState = serde_json::from_str(json).expect("parses");
        let t = &s.tables[&TableId::new("FOLK1A").expect("id")];
        assert_eq!(t.frequency, Some(Frequency::Quarterly));
        let out = serde_json::to_value(&s).expect("encodes");
        assert_eq!(out["schema_version"], 7);
        assert_eq!(out["tables"]["FOLK1A"]["future"], serde_json::json!([1, 2]));
        assert_eq!(out["last_catalog_poll_at"], "2026-11-22T22:00:01Z");
        for key in [
            "last_seen_updated",
            "last_sync_at",
            "frequency",
            "bootstrap_complete",
            "last_status",
            "last_error",
            "last_run_id",
        ] {
            assert!(out["tables"]["FOLK1A"].get(key).is_some(), "{key}");
        }
    }

    #[test]
    fn entries_of_ids_no_longer_valid_are_kept_aside() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = DataDir::local(tmp.path());
        let file = tmp.path().join("statbank_tables/_sync/state.json");
        std::fs::create_dir_all(file.parent().expect("parent")).expect("mkdir");
        std::fs::write(
            &file,
            br#"{"tables": {"FOLK1A": {"bootstrap_complete": true}, "S__STAGE0": {"bootstrap_complete": true}}}"#,
        )
        .expect("write");
        let s = SyncState::load(&dir).expect("loads");
        assert_eq!(s.tables.len(), 1);
        s.save(&dir).expect("saves");
        let again: Value =
            serde_json::from_slice(&std::fs::read(&file).expect("read")).expect("json");
        assert_eq!(
            again["invalid_table_ids"]["S__STAGE0"]["bootstrap_complete"],
            true
        );
        assert_eq!(SyncState::load(&dir).expect("loads").tables.len(), 1);
    }

    #[test]
    fn corrupt_state_is_an_error_and_not_replaced() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = DataDir::local(tmp.path());
        let file = tmp.path().join("statbank_tables/_sync/state.json");
        std::fs::create_dir_all(file.parent().expect("parent")).expect("mkdir");
        std::fs::write(&file, b"{\"tables\": 3}").expect("write");
        let err = SyncState::load(&dir).expect_err("corrupt");
        assert!(err.to_string().contains("state.json"));
        assert_eq!(
            std::fs::read(&file).expect("still there"),
            b"{\"tables\": 3}"
        );
        assert_eq!(
            SyncState::load(&DataDir::local(tmp.path().join("none"))).expect("empty"),
            SyncState::default()
        );
    }
}
