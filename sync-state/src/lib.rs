//! Durable records and pure decisions of statbank-sync: the identifier
//! newtypes ([`TableId`], [`Tid`], [`RunId`]), `state.json` ([`SyncState`]),
//! run manifests ([`RunManifest`]), frequency inference and the period
//! selection of a sync cycle.
//!
//! Every decision (`plan`: the gate, eligibility, period selection,
//! verification) takes `now` as a parameter and touches nothing. The rest
//! is the storage under those decisions: JSON records written atomically
//! (temp file, fsync, rename, fsync of the folder; a corrupt file is an
//! error, never silently replaced), and [`Storage`], which talks to a local
//! folder or an object store; its lease ([`DataDirLock`]) reads the clock
//! and, on an object store, the network, and renews itself from a thread.
//!
//! ```
//! use std::collections::BTreeSet;
//! use sync_state::{infer_frequency, select_periods, SelectOptions, Tid};
//!
//! let remote: Vec<Tid> = ["2023", "2024", "2025"].iter().map(|t| Tid::new(*t).unwrap()).collect();
//! let local: BTreeSet<Tid> = remote[..2].iter().cloned().collect();
//! let freq = infer_frequency(&remote);
//! let plan = select_periods(&remote, &local, freq, SelectOptions::default());
//! assert_eq!(plan.new_periods, vec![Tid::new("2025").unwrap()]);
//! assert_eq!(plan.fetch.len(), 3); // yearly tables refresh the last 4 periods
//! ```
//!
//! # Crate features
//!
//! - `s3`, `gcs`, `azure`: the object-store backends of [`Storage`]
//!   (`s3://`, `gs://`, `az://` data folders); none by default, so a local
//!   mirror compiles no cloud client.
//! - `test-hooks`: the crash points of [`crash`] and the tests' fixed clock
//!   (`STATBANK_TEST_NOW`); for the crash tests only, never in release
//!   builds of the programs.
//! - `fuzz-support`: the mutation engine other crates' fuzz tests share
//!   (`fuzz_support`); from a dev-dependency only.
#![warn(missing_docs)]
#![warn(unreachable_pub)]

mod columns;
pub mod crash;
mod error;
mod frequency;
pub mod fsio;
#[cfg(test)]
mod fuzz;
#[cfg(any(test, feature = "fuzz-support"))]
pub mod fuzz_support;
mod ids;
mod manifest;
mod paths;
mod period;
mod plan;
mod reconcile;
mod state;
pub mod storage;
pub mod subjects;
pub mod tableinfo;
mod time;

pub use columns::{
    check_variable_columns, column_name, MAX_IDENTIFIER_BYTES, RESERVED_COLUMNS, TIME_COLUMN,
    VALUE_COLUMN,
};
pub use error::{error_chain, one_line, shorten, shorten_error, Error, MAX_ERROR_CHARS};
pub use frequency::{infer_frequency, Frequency, FrequencyOverrides};
pub use ids::{RunId, TableId, Tid, MAX_PARTITION_FILE_NAME, MAX_RUN_ID_LEN, MAX_TABLE_ID_LEN};
pub use manifest::{
    latest_run, list_runs, pending_runs, AlertOutcome, ApplyStatus, ApplySummary, ApplyTableResult,
    CatalogSection, DbApplyReport, EarlierRun, FlowReconcile, FlowSection, InvalidEntry,
    PeriodCounts, RecoveredPublish, RunManifest, RunStatus, SchemaChange, SubjectsSection, Summary,
    TableResult, TableStatus, TypeChange, VanishedReport,
};
pub use paths::{
    DataDir, ARCHIVE_DIR, ICEBERG_DIR, METADATA_DIR, PARTITION_EXT, SYNC_DIR, TABLES_DIR,
    TEMP_PREFIX, VINTAGES_DIR,
};
pub use period::PeriodSpan;
pub use plan::{
    batches, catalog_gate, eligibility, estimate_rows_per_period, periods_per_request,
    plan_verification, refresh_window, select_periods, Eligibility, GateDecision, GatePolicy,
    PeriodSelection, SelectOptions, VerifyInputs, VerifyPlan, VerifyPolicy,
    CATALOG_POLL_INTERVAL_DAYS, MAX_ROWS_PER_CALL,
};
pub use reconcile::{
    Examples, PeriodDifference, ReconcileReport, ReconcileStatus, ReconcileSummary, TableReconcile,
    EXAMPLE_ROWS,
};
pub use state::{SyncState, TableState};
pub use storage::{DataDirLock, Storage};
pub use time::{
    canonical_source_time, source_time_to_utc, utc_to_source_time, UtcSecond, SOURCE_TIME_ZONE,
};
