//! `run_sync_cycle`: the whole disk side of one sync run (guide §1–§7).

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use futures_util::StreamExt;
use partition_store::{PartitionStore, WriteLimits};
use serde_json::json;
use statbank_client::{error_chain, CatalogEntry, StatbankClient, TablesRequest};
use sync_state::{
    batches, catalog_gate, eligibility, estimate_rows_per_period, periods_per_request,
    select_periods, CatalogSection, DataDir, Eligibility, FrequencyOverrides, GateDecision, RunId,
    RunManifest, RunStatus, Summary, SyncState, TableId, TableResult, TableState, TableStatus, Tid,
    UtcSecond, MAX_ROWS_PER_CALL,
};
use tracing::Instrument;

use crate::fetch::{fetch_batch, FetchError};
use crate::lock::DataDirLock;
use crate::Error;

/// Where "now" comes from. Tests inject a fixed or moving clock; production
/// uses the system clock.
#[derive(Clone)]
pub struct Clock(Arc<dyn Fn() -> DateTime<Utc> + Send + Sync>);

impl Clock {
    /// The system clock.
    pub fn system() -> Clock {
        Clock(Arc::new(Utc::now))
    }
    /// A clock that always says `t`.
    pub fn fixed(t: DateTime<Utc>) -> Clock {
        Clock(Arc::new(move || t))
    }
    /// A clock backed by any function.
    pub fn from_fn(f: impl Fn() -> DateTime<Utc> + Send + Sync + 'static) -> Clock {
        Clock(Arc::new(f))
    }
    /// The current time.
    pub fn now(&self) -> DateTime<Utc> {
        (self.0)()
    }
}

impl Default for Clock {
    fn default() -> Self {
        Clock::system()
    }
}

impl std::fmt::Debug for Clock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Clock")
    }
}

/// A shared "please stop" flag (SIGTERM, ctrl-c). Checked before every table
/// and every request; work in flight finishes its current request and the
/// table is recorded as failed (`interrupted`), so it is retried next time.
#[derive(Debug, Clone, Default)]
pub struct StopSignal(Arc<AtomicBool>);

impl StopSignal {
    /// A signal that is not raised.
    pub fn new() -> StopSignal {
        StopSignal::default()
    }
    /// Raises the signal.
    pub fn stop(&self) {
        self.0.store(true, Ordering::SeqCst);
    }
    /// Whether the signal was raised.
    pub fn is_stopped(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

/// Receives progress events (for a progress bar or log lines).
pub trait ProgressSink: Send + Sync {
    /// The catalog was read: `total` tables will be considered.
    fn start(&self, _total: usize) {}
    /// A table started syncing.
    fn table_started(&self, _table: &TableId) {}
    /// Rows were written.
    fn rows(&self, _rows: u64) {}
    /// A table finished (synced, skipped or failed).
    fn table_finished(&self, _table: &TableId, _result: &TableResult) {}
}

/// Settings of one sync cycle.
#[derive(Clone)]
pub struct SyncOptions {
    /// The data folder (`data/dst`).
    pub data_dir: DataDir,
    /// Poll the catalog even if the weekly gate is closed.
    pub force_catalog_poll: bool,
    /// The run id (default: the UTC start time `%Y%m%dT%H%M%SZ`).
    pub run_id: Option<RunId>,
    /// Only these tables (others are not considered at all).
    pub tables: Option<Vec<TableId>>,
    /// At most this many tables (after sorting by id).
    pub max_tables: Option<usize>,
    /// Remove partitions of periods that disappeared from the remote list and
    /// report them as `deleted_tids`.
    pub prune_deleted_periods: bool,
    /// Tables synced at once (the client bounds requests separately).
    pub table_concurrency: usize,
    /// Guards against runaway responses.
    pub limits: WriteLimits,
    /// Rows per BULK request used for batch sizing.
    pub max_rows_per_call: u64,
    /// The clock.
    pub clock: Clock,
    /// Stop flag.
    pub stop: StopSignal,
    /// Progress events.
    pub progress: Option<Arc<dyn ProgressSink>>,
}

impl SyncOptions {
    /// Defaults for `data_dir`.
    pub fn new(data_dir: impl Into<std::path::PathBuf>) -> SyncOptions {
        SyncOptions {
            data_dir: DataDir::new(data_dir),
            force_catalog_poll: false,
            run_id: None,
            tables: None,
            max_tables: None,
            prune_deleted_periods: false,
            table_concurrency: 2,
            limits: WriteLimits::default(),
            max_rows_per_call: MAX_ROWS_PER_CALL,
            clock: Clock::system(),
            stop: StopSignal::new(),
            progress: None,
        }
    }
}

struct Ctx<'a> {
    client: &'a StatbankClient,
    opts: &'a SyncOptions,
    store: PartitionStore,
    state: Mutex<SyncState>,
    overrides: FrequencyOverrides,
    run_id: RunId,
}

impl Ctx<'_> {
    fn now(&self) -> UtcSecond {
        UtcSecond::new(self.opts.clock.now())
    }

    /// Changes one table's state entry and saves `state.json`.
    fn update_state(&self, table: &TableId, f: impl FnOnce(&mut TableState)) -> Result<(), Error> {
        let mut state = self
            .state
            .lock()
            .map_err(|_| Error::Internal("state lock poisoned".into()))?;
        f(state.tables.entry(table.clone()).or_default());
        state.save(&self.opts.data_dir)?;
        Ok(())
    }

    fn entry(&self, table: &TableId) -> Option<TableState> {
        self.state
            .lock()
            .ok()
            .and_then(|s| s.tables.get(table).cloned())
    }
}

/// Runs one sync cycle (the original's `run_sync_cycle(force_catalog_poll,
/// run_id)`): weekly catalog gate, per-table eligibility, tableinfo and
/// metadata cache, period selection, streamed BULK downloads into staged
/// partitions published atomically, per-table state saves, and the run
/// manifest, which is written in every case (also when the catalog cannot be
/// fetched). Returns the manifest; `Err` only when the manifest itself cannot
/// be written or another cycle holds the data folder's lock.
pub async fn run_sync_cycle(
    client: &StatbankClient,
    opts: &SyncOptions,
) -> Result<RunManifest, Error> {
    let started = UtcSecond::new(opts.clock.now());
    let dir = &opts.data_dir;
    let _lock = DataDirLock::acquire(&dir.lock_file(), &format!("run started {started}"))?;
    // Under the lock: a default run id never overwrites an earlier run's
    // manifest (two runs in the same second get `_2`, `_3`, …, which sort
    // after the first by file name). An explicit id is used as given.
    let run_id = match &opts.run_id {
        Some(r) => {
            if dir.manifest_file(r).exists() {
                tracing::warn!(run = %r, "a manifest with this run id exists and will be replaced");
            }
            r.clone()
        }
        None => unused_run_id(dir, RunId::from_time(started.get()))?,
    };
    clean_json_temp_files(dir);
    let mut manifest = RunManifest {
        run_id: run_id.clone(),
        started_at: started,
        finished_at: None,
        status: RunStatus::Failed,
        catalog: CatalogSection::default(),
        tables: BTreeMap::new(),
        summary: Summary::default(),
        error: None,
        db_apply: None,
        extra: serde_json::Map::new(),
    };
    let outcome = cycle(client, opts, &run_id, &mut manifest).await;
    let finish = match outcome {
        Ok(f) => Some(f),
        Err(e) => {
            tracing::error!(error = %error_chain(&e), "sync cycle failed");
            manifest.status = RunStatus::Failed;
            manifest.error = Some(short_error(error_chain(&e)));
            None
        }
    };
    manifest.finished_at = Some(UtcSecond::new(opts.clock.now()));
    manifest.summary = Summary::of(&manifest.tables);
    // State is written before the manifest for every table; the manifest is
    // written after the partitions and state it describes.
    manifest.save(dir)?;
    if let Some((mut state, polled_at)) = finish {
        if let Some(t) = polled_at {
            state.last_catalog_poll_at = Some(t);
        }
        state.last_run_id = Some(run_id.clone());
        // The manifest now lists the journaled changes: clear the journal.
        for (id, r) in &manifest.tables {
            if r.status != TableStatus::Failed {
                if let Some(e) = state.tables.get_mut(id) {
                    e.pending_changed_tids.clear();
                    e.pending_deleted_tids.clear();
                }
            }
        }
        state.save(dir)?;
    }
    Ok(manifest)
}

type Finish = (SyncState, Option<UtcSecond>);

async fn cycle(
    client: &StatbankClient,
    opts: &SyncOptions,
    run_id: &RunId,
    manifest: &mut RunManifest,
) -> Result<Finish, Error> {
    let dir = &opts.data_dir;
    let state = SyncState::load(dir)?;
    let overrides = FrequencyOverrides::load(dir)?;
    if !overrides.ignored().is_empty() {
        tracing::warn!(ignored = ?overrides.ignored(), "frequency overrides with an invalid table id or frequency were ignored");
    }
    let now = opts.clock.now();
    if let GateDecision::Skip {
        last_catalog_poll_at,
    } = catalog_gate(&state, now, opts.force_catalog_poll)
    {
        tracing::info!(%last_catalog_poll_at, "weekly gate closed: catalog not polled");
        manifest.status = RunStatus::Skipped;
        manifest.catalog = CatalogSection {
            polled: false,
            reason: Some("weekly_gate".into()),
            last_catalog_poll_at: Some(last_catalog_poll_at),
            ..CatalogSection::default()
        };
        return Ok((state, None));
    }
    let catalog = match client.tables(&TablesRequest::default()).await {
        Ok(c) => c,
        Err(e) => {
            manifest.catalog = CatalogSection {
                polled: false,
                reason: Some("catalog_error".into()),
                error: Some(short_error(error_chain(&e))),
                ..CatalogSection::default()
            };
            return Err(e.into());
        }
    };
    let polled_at = UtcSecond::new(opts.clock.now());
    manifest.catalog = CatalogSection {
        polled: true,
        table_count: Some(catalog.len()),
        polled_at: Some(polled_at),
        ..CatalogSection::default()
    };
    let (work, invalid) = select_tables(catalog, opts);
    if !invalid.is_empty() {
        tracing::warn!(
            count = invalid.len(),
            "catalog entries with unusable ids were rejected"
        );
        manifest
            .catalog
            .extra
            .insert("invalid_entries".into(), json!(invalid));
    }
    let ctx = Ctx {
        client,
        opts,
        store: PartitionStore::new(dir.tables_root()),
        state: Mutex::new(state),
        overrides,
        run_id: run_id.clone(),
    };
    if let Some(p) = &opts.progress {
        p.start(work.len());
    }
    let results: Vec<(TableId, TableResult)> = futures_util::stream::iter(work)
        .map(|w| process_table(&ctx, w))
        .buffer_unordered(opts.table_concurrency.max(1))
        .collect()
        .await;
    manifest.tables.extend(results);
    let failed = manifest
        .tables
        .values()
        .any(|r| r.status == TableStatus::Failed);
    manifest.status = if failed || !invalid.is_empty() {
        RunStatus::PartialFailure
    } else {
        RunStatus::Success
    };
    let state = ctx
        .state
        .into_inner()
        .map_err(|_| Error::Internal("state lock poisoned".into()))?;
    Ok((state, Some(polled_at)))
}

enum Work {
    Table(TableId, CatalogEntry),
    NotInCatalog(TableId),
}

fn select_tables(
    catalog: Vec<CatalogEntry>,
    opts: &SyncOptions,
) -> (Vec<Work>, Vec<serde_json::Value>) {
    let mut invalid = Vec::new();
    let mut by_id: BTreeMap<TableId, CatalogEntry> = BTreeMap::new();
    for entry in catalog {
        match entry.table_id() {
            Ok(id) => {
                by_id.entry(id).or_insert(entry);
            }
            Err(e) => invalid.push(json!({"id": entry.id.chars().take(80).collect::<String>(), "error": e.to_string()})),
        }
    }
    let mut work: Vec<Work> = match &opts.tables {
        Some(wanted) => {
            let wanted: BTreeSet<&TableId> = wanted.iter().collect();
            wanted
                .into_iter()
                .map(|id| match by_id.remove(id) {
                    Some(e) => Work::Table(id.clone(), e),
                    None => Work::NotInCatalog(id.clone()),
                })
                .collect()
        }
        None => by_id
            .into_iter()
            .map(|(id, e)| Work::Table(id, e))
            .collect(),
    };
    if let Some(n) = opts.max_tables {
        work.truncate(n);
    }
    (work, invalid)
}

async fn process_table(ctx: &Ctx<'_>, work: Work) -> (TableId, TableResult) {
    let (table, entry) = match work {
        Work::Table(t, e) => (t, e),
        Work::NotInCatalog(t) => {
            let r = TableResult::failed("", format!("table {t} is not in the catalog"));
            if let Some(p) = &ctx.opts.progress {
                p.table_finished(&t, &r);
            }
            return (t, r);
        }
    };
    let prev = ctx.entry(&table);
    let has_local = ctx.store.has_partitions(&table).unwrap_or(false);
    let result = match eligibility(prev.as_ref(), &entry.updated, has_local) {
        Eligibility::Unchanged => {
            let mut r = TableResult::skipped(&entry.updated);
            if let Some(prev) = &prev {
                carry_over(ctx, &table, prev, &mut r, None);
            }
            r
        }
        Eligibility::Sync { bootstrap } => {
            if let Some(p) = &ctx.opts.progress {
                p.table_started(&table);
            }
            let span = tracing::info_span!("table", table = %table, bootstrap);
            match sync_table(ctx, &table, &entry, bootstrap, prev.as_ref())
                .instrument(span)
                .await
            {
                Ok(r) => r,
                Err(e) => {
                    let msg = short_error(error_chain(&e));
                    tracing::warn!(table = %table, error = %msg, "table failed");
                    let r = TableResult::failed(&entry.updated, msg.clone());
                    // Appendix B: keep the old last_seen_updated so the next
                    // cycle retries the table.
                    let now = ctx.now();
                    let run_id = ctx.run_id.clone();
                    if let Err(se) = ctx.update_state(&table, |s| {
                        s.last_status = Some("failed".into());
                        s.last_error = Some(msg);
                        s.last_sync_at = Some(now);
                        s.last_run_id = Some(run_id);
                    }) {
                        tracing::error!(table = %table, error = %error_chain(&se), "cannot save state");
                    }
                    r
                }
            }
        }
    };
    if let Some(p) = &ctx.opts.progress {
        p.table_finished(&table, &result);
    }
    (table, result)
}

/// Adds changes journaled by an earlier, interrupted run to `r`, so the DB
/// apply of this run sees them. `remote` orders them when known.
fn carry_over(
    ctx: &Ctx<'_>,
    table: &TableId,
    prev: &TableState,
    r: &mut TableResult,
    remote: Option<&[Tid]>,
) {
    let mut changed: Vec<Tid> = r.changed_tids.clone();
    let have: HashSet<Tid> = changed.iter().cloned().collect();
    let extra: Vec<Tid> = prev
        .pending_changed_tids
        .iter()
        .filter(|t| !have.contains(*t) && ctx.store.has_partition(table, t))
        .cloned()
        .collect();
    if !extra.is_empty() {
        changed.extend(extra);
        if let Some(remote) = remote {
            let pos: std::collections::HashMap<&Tid, usize> =
                remote.iter().enumerate().map(|(i, t)| (t, i)).collect();
            changed.sort_by_key(|t| pos.get(t).copied().unwrap_or(usize::MAX));
        }
        r.extra.insert("carried_over".into(), json!(true));
        r.changed_tids = changed;
    }
    if !prev.pending_deleted_tids.is_empty() {
        let mut deleted = r.deleted_tids.clone().unwrap_or_default();
        for t in &prev.pending_deleted_tids {
            if !deleted.contains(t) && !ctx.store.has_partition(table, t) {
                deleted.push(t.clone());
            }
        }
        r.deleted_tids = Some(deleted);
    }
}

async fn sync_table(
    ctx: &Ctx<'_>,
    table: &TableId,
    entry: &CatalogEntry,
    bootstrap: bool,
    prev: Option<&TableState>,
) -> Result<TableResult, Error> {
    let dir = &ctx.opts.data_dir;
    let removed = ctx.store.clean_temp_files(table)?;
    if removed > 0 {
        tracing::info!(table = %table, removed, "removed temp files of an interrupted run");
    }
    let (info, raw) = ctx.client.table_info(table).await?;
    sync_state::fsio::write_atomic(&dir.metadata_file(table), &raw)?;
    let remote = info.tids().map_err(|e| Error::Shape {
        table: table.to_string(),
        message: format!("tableinfo: {e}"),
    })?;
    let frequency = ctx
        .overrides
        .get(table)
        .unwrap_or_else(|| sync_state::infer_frequency(&remote));
    let local = ctx.store.list_tids(table)?;
    let sel = select_periods(
        &remote,
        &local,
        frequency,
        bootstrap,
        ctx.opts.prune_deleted_periods,
    );
    let per_request = periods_per_request(
        estimate_rows_per_period(&info.value_counts(), remote.len()),
        ctx.opts.max_rows_per_call,
    );
    let mut changed: HashSet<Tid> = HashSet::new();
    let mut unchanged: Vec<Tid> = Vec::new();
    let (mut rows_written, mut files_written, mut bytes) = (0u64, 0u64, 0u64);
    for batch in batches(&sel.fetch, per_request) {
        if ctx.opts.stop.is_stopped() {
            return Err(Error::Interrupted);
        }
        let fetched = ctx
            .client
            .with_retries("bulk body", || async {
                match fetch_batch(
                    ctx.client,
                    &ctx.store,
                    table,
                    &info,
                    &batch,
                    ctx.opts.limits,
                )
                .await
                {
                    Ok(f) => Ok(Ok(f)),
                    Err(FetchError::Body(Error::Client(e))) => Err(e),
                    Err(other) => Ok(Err(other.into_inner())),
                }
            })
            .await??;
        bytes += fetched.bytes;
        let staged = fetched.staged;
        let plan = staged.compare();
        let to_publish: Vec<Tid> = plan
            .iter()
            .filter(|p| !p.unchanged)
            .map(|p| p.tid.clone())
            .collect();
        if !to_publish.is_empty() {
            // Journal before the renames: a crash after them must not hide
            // these changes from the next manifest.
            ctx.update_state(table, |s| {
                for t in &to_publish {
                    if !s.pending_changed_tids.contains(t) {
                        s.pending_changed_tids.push(t.clone());
                    }
                }
            })?;
        }
        let outcome = tokio::task::spawn_blocking(move || staged.publish(&plan))
            .await
            .map_err(|e| Error::Internal(format!("publish task failed: {e}")))??;
        for (tid, rows) in outcome.changed {
            rows_written += rows;
            files_written += 1;
            if let Some(p) = &ctx.opts.progress {
                p.rows(rows);
            }
            changed.insert(tid);
        }
        unchanged.extend(outcome.unchanged);
    }
    let mut deleted = Vec::new();
    if ctx.opts.prune_deleted_periods && !sel.deleted.is_empty() {
        ctx.update_state(table, |s| {
            for t in &sel.deleted {
                if !s.pending_deleted_tids.contains(t) {
                    s.pending_deleted_tids.push(t.clone());
                }
            }
        })?;
        for t in &sel.deleted {
            ctx.store.remove_partition(table, t)?;
            deleted.push(t.clone());
        }
    }
    let mut r = TableResult::synced(&entry.updated, bootstrap, frequency);
    r.remote_tid_count = Some(remote.len());
    r.local_tid_count_before = Some(local.len());
    r.changed_tids = remote
        .iter()
        .filter(|t| changed.contains(*t))
        .cloned()
        .collect();
    r.new_periods = Some(sel.new_periods);
    r.refresh_periods = Some(sel.refresh_periods);
    r.unchanged_refreshed = Some(unchanged);
    if ctx.opts.prune_deleted_periods {
        r.deleted_tids = Some(deleted);
    }
    r.rows_written = Some(rows_written);
    r.files_written = Some(files_written);
    r.bytes_fetched = Some(bytes);
    if let Some(prev) = prev {
        carry_over(ctx, table, prev, &mut r, Some(&remote));
    }
    let now = ctx.now();
    let run_id = ctx.run_id.clone();
    let updated = entry.updated.clone();
    ctx.update_state(table, |s| {
        s.last_seen_updated = Some(updated);
        s.last_sync_at = Some(now);
        s.frequency = Some(frequency);
        s.bootstrap_complete = true;
        s.last_status = Some("synced".into());
        s.last_error = None;
        s.last_run_id = Some(run_id);
    })?;
    Ok(r)
}

/// Longest error text stored in a manifest or `state.json` (a decode error
/// can quote a whole hostile string: found by fuzzing).
const MAX_ERROR_CHARS: usize = 2000;

/// `msg`, cut to [`MAX_ERROR_CHARS`] characters.
fn short_error(msg: String) -> String {
    match msg.char_indices().nth(MAX_ERROR_CHARS) {
        Some((i, _)) => format!("{}… ({} bytes in all)", &msg[..i], msg.len()),
        None => msg,
    }
}

/// `base`, or `base_2`, `base_3`, … when a manifest with that id exists.
fn unused_run_id(dir: &DataDir, base: RunId) -> Result<RunId, Error> {
    if !dir.manifest_file(&base).exists() {
        return Ok(base);
    }
    for n in 2..10_000 {
        let id = RunId::new(format!("{base}_{n}"))?;
        if !dir.manifest_file(&id).exists() {
            return Ok(id);
        }
    }
    Err(Error::Internal(format!("no free run id for {base}")))
}

/// Removes temp files of the JSON records left by an interrupted run.
fn clean_json_temp_files(dir: &DataDir) {
    for d in [dir.sync_dir(), dir.runs_dir(), dir.metadata_dir()] {
        sync_state::fsio::clean_temp_files(&d);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_errors_are_bounded_and_cut_on_a_character() {
        assert_eq!(short_error("kort".into()), "kort");
        let long = "æ".repeat(MAX_ERROR_CHARS + 10);
        let s = short_error(long.clone());
        assert!(s.starts_with(&"æ".repeat(MAX_ERROR_CHARS)));
        assert!(s.ends_with(&format!("({} bytes in all)", long.len())));
    }
}
