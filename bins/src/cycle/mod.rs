//! `run_sync_cycle`: the whole storage side of one sync run
//! (the contract: `docs/sync.md`).
//!
//! The steps, in order: take the data folder's lock; settle publishes a
//! crash interrupted; the weekly gate; the catalog; tables gone from (or
//! back in) the catalog; each table (bounded concurrency, see `table.rs`);
//! the manifest; the state.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use futures_util::StreamExt;
use partition_store::{PartitionStore, PublishOptions, WriteLimits};
use statbank_client::{error_chain, Catalog, CatalogEntry, Lang, StatbankClient, TablesRequest};
use sync_state::{
    catalog_gate, CatalogSection, DataDir, FrequencyOverrides, GateDecision, GatePolicy,
    InvalidEntry, RecoveredPublish, RunId, RunManifest, RunStatus, Summary, SyncState, TableId,
    TableResult, TableState, TableStatus, UtcSecond, VanishedReport, VerifyPolicy,
    MAX_ROWS_PER_CALL,
};

use crate::Error;

mod iceberg;
mod languages;
mod schema;
mod table;

pub use iceberg::METADATA_SPAN as ICEBERG_METADATA_SPAN;

/// Where "now" comes from. Tests inject a fixed or moving clock; production
/// uses the system clock.
#[derive(Clone)]
pub struct Clock(Arc<dyn Fn() -> DateTime<Utc> + Send + Sync>);

impl Clock {
    /// The system clock (or the tests' fixed clock when the `test-hooks`
    /// feature is on and `STATBANK_TEST_NOW` is set).
    pub fn system() -> Clock {
        match sync_state::crash::fixed_now() {
            Some(t) => Clock::fixed(t),
            None => Clock(Arc::new(Utc::now)),
        }
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

/// What to do with tables that disappeared from the catalog.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum VanishedTables {
    /// Keep their partitions and state; report them (default).
    #[default]
    Keep,
    /// Move their partitions to `statbank_tables/_archive/<TABLE>/<run>/`
    /// and forget their state.
    Archive,
    /// Remove their partitions, vintages and state.
    Delete,
}

/// Whether a cycle keeps superseded partitions as vintages
/// (`--keep-vintages`, `--no-keep-vintages`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Vintages {
    /// As the data folder records it (`keep_vintages` in `state.json`;
    /// off for a new one).
    #[default]
    AsRecorded,
    /// Keep them, from this cycle on (recorded for later cycles).
    Keep,
    /// Stop keeping them, from this cycle on (kept ones stay).
    Stop,
}

/// Whether a cycle keeps the tables' Iceberg metadata (`--iceberg`,
/// `--no-iceberg`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum IcebergMetadata {
    /// As the data folder records it (`iceberg` in `state.json`; off for a
    /// new one).
    #[default]
    AsRecorded,
    /// Write it, from this cycle on (recorded for later cycles).
    Write,
    /// Stop, and remove the metadata written before.
    Stop,
}

/// The languages a cycle caches tableinfo in: Danish, the language the
/// facts are fetched in, first; then the others (`en`), fetched whenever
/// the Danish one is, for the metadata only.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Languages(Vec<Lang>);

impl Languages {
    /// `langs` (Danish required), each once, Danish first.
    pub fn new(langs: &[Lang]) -> Result<Languages, Error> {
        if !langs.contains(&Lang::Da) {
            return Err(Error::Option {
                option: "--languages",
                reason: format!(
                    "{} lacks da, the language the facts are fetched in",
                    langs
                        .iter()
                        .map(|l| l.as_str())
                        .collect::<Vec<_>>()
                        .join(",")
                ),
            });
        }
        let mut out = vec![Lang::Da];
        for l in langs {
            if !out.contains(l) {
                out.push(*l);
            }
        }
        Ok(Languages(out))
    }

    /// Danish only: the original's requests.
    pub fn danish_only() -> Languages {
        Languages(vec![Lang::Da])
    }

    /// Every language, Danish first.
    pub fn all(&self) -> &[Lang] {
        &self.0
    }

    /// The languages besides Danish.
    pub fn others(&self) -> &[Lang] {
        &self.0[1..]
    }
}

impl Default for Languages {
    /// Danish and English.
    fn default() -> Languages {
        Languages(vec![Lang::Da, Lang::En])
    }
}

/// Settings of one sync cycle.
#[derive(Clone)]
pub struct SyncOptions {
    /// The data folder (`data/dst`, or `s3://bucket/prefix`).
    pub data_dir: DataDir,
    /// When the weekly gate opens.
    pub gate: GatePolicy,
    /// The run id (default: the UTC start time `%Y%m%dT%H%M%SZ`).
    pub run_id: Option<RunId>,
    /// Only these tables (others are not considered at all).
    pub tables: Option<Vec<TableId>>,
    /// At most this many tables (after sorting by id).
    pub max_tables: Option<usize>,
    /// Remove partitions of periods that disappeared from the remote list and
    /// report them as `deleted_tids`.
    pub prune_deleted_periods: bool,
    /// Whether superseded partitions are kept as vintages (recorded in
    /// `state.json`, so it stays as set until set otherwise).
    pub vintages: Vintages,
    /// Whether every table's Iceberg metadata is kept (recorded in
    /// `state.json`, like `vintages`).
    pub iceberg: IcebergMetadata,
    /// Rolling verification of periods older than the refresh window.
    pub verify: VerifyPolicy,
    /// Verify every period of the selected tables in this cycle.
    pub verify_all: bool,
    /// What to do with tables gone from the catalog.
    pub vanished_tables: VanishedTables,
    /// Tables synced at once (the client bounds requests separately).
    pub table_concurrency: usize,
    /// Guards against runaway responses.
    pub limits: WriteLimits,
    /// Rows per BULK request used for batch sizing.
    pub max_rows_per_call: u64,
    /// The languages tableinfo is cached in (default: Danish and English).
    pub languages: Languages,
    /// Only refresh the metadata of the selected tables (tableinfo in the
    /// languages besides Danish, checked against the cached Danish one):
    /// no catalog gate, no data requests.
    pub refresh_metadata: bool,
    /// The clock.
    pub clock: Clock,
    /// Stop flag.
    pub stop: StopSignal,
    /// Progress events.
    pub progress: Option<Arc<dyn ProgressSink>>,
}

impl SyncOptions {
    /// Defaults for the data folder at `location`: a local path, or an
    /// object-store URL (`s3://bucket/prefix`; an unknown scheme, or one
    /// whose backend is not compiled in, is an error, never a local folder
    /// named after it).
    pub fn new(location: impl AsRef<std::path::Path>) -> Result<SyncOptions, Error> {
        let dir = match location.as_ref().to_str() {
            Some(s) => DataDir::open(s)?,
            None => DataDir::local(location.as_ref()),
        };
        Ok(SyncOptions::on(dir))
    }

    /// Defaults for any data folder (local or object store).
    pub fn on(data_dir: DataDir) -> SyncOptions {
        SyncOptions {
            data_dir,
            gate: GatePolicy::default(),
            run_id: None,
            tables: None,
            max_tables: None,
            prune_deleted_periods: false,
            vintages: Vintages::AsRecorded,
            iceberg: IcebergMetadata::AsRecorded,
            verify: VerifyPolicy::default(),
            verify_all: false,
            vanished_tables: VanishedTables::Keep,
            table_concurrency: 2,
            limits: WriteLimits::default(),
            max_rows_per_call: MAX_ROWS_PER_CALL,
            languages: Languages::default(),
            refresh_metadata: false,
            clock: Clock::system(),
            stop: StopSignal::new(),
            progress: None,
        }
    }
}

/// What one cycle shares between its tables.
struct Ctx<'a> {
    client: &'a StatbankClient,
    opts: &'a SyncOptions,
    dir: DataDir,
    store: PartitionStore,
    state: Mutex<SyncState>,
    overrides: FrequencyOverrides,
    run_id: RunId,
    /// Superseded partitions are kept as vintages in this data folder; the
    /// catalog `updated` of this cycle ends their validity.
    keep_vintages: bool,
    /// Each table's Iceberg metadata is regenerated after its publish.
    iceberg: bool,
}

impl Ctx<'_> {
    /// The state as the cycle left it.
    fn into_state(self) -> Result<SyncState, Error> {
        self.state
            .into_inner()
            .map_err(|_| Error::Internal("state lock poisoned".into()))
    }

    fn now(&self) -> UtcSecond {
        UtcSecond::new(self.opts.clock.now())
    }

    fn lock_state(&self) -> Result<std::sync::MutexGuard<'_, SyncState>, Error> {
        self.state
            .lock()
            .map_err(|_| Error::Internal("state lock poisoned".into()))
    }

    /// Changes one table's state entry and saves `state.json`.
    fn update_state(&self, table: &TableId, f: impl FnOnce(&mut TableState)) -> Result<(), Error> {
        let mut state = self.lock_state()?;
        f(state.tables.entry(table.clone()).or_default());
        state.save(&self.dir)?;
        Ok(())
    }

    /// Changes one table's state entry without saving `state.json`: for
    /// what the next save (another table's, or the cycle's last) may carry,
    /// because losing it to a crash costs only work done again.
    fn note_state(&self, table: &TableId, f: impl FnOnce(&mut TableState)) -> Result<(), Error> {
        f(self.lock_state()?.tables.entry(table.clone()).or_default());
        Ok(())
    }

    fn entry(&self, table: &TableId) -> Option<TableState> {
        self.state
            .lock()
            .ok()
            .and_then(|s| s.tables.get(table).cloned())
    }

    fn publish_options(&self, catalog_updated: &str) -> PublishOptions {
        PublishOptions {
            vintages_until: self.keep_vintages.then(|| catalog_updated.to_string()),
        }
    }
}

/// Runs one sync cycle (the original's `run_sync_cycle(force_catalog_poll,
/// run_id)`: [`GatePolicy::force`] and [`SyncOptions::run_id`]): publishes interrupted by a crash are settled first, then the
/// weekly catalog gate, per-table eligibility, tableinfo and metadata cache,
/// schema signature check (a changed signature re-fetches the table whole and
/// swaps its partition set), period selection with rolling verification,
/// streamed BULK downloads into staged partitions published whole, per-table
/// state saves, and the run manifest, which is written in every case (also
/// when the catalog cannot be fetched). Returns the manifest; `Err` only when
/// the manifest itself cannot be written, the lease was lost, or another
/// cycle holds the data folder's lock.
pub async fn run_sync_cycle(
    client: &StatbankClient,
    opts: &SyncOptions,
) -> Result<RunManifest, Error> {
    let started = UtcSecond::new(opts.clock.now());
    let (_lock, dir) = opts.data_dir.lock(&format!("run started {started}"))?;
    let run_id = choose_run_id(&dir, opts, started)?;
    dir.clean_temp_files();
    let mut manifest = RunManifest::new(run_id.clone(), started);
    let outcome = cycle(client, opts, &dir, &run_id, &mut manifest).await;
    finish(&dir, opts, &mut manifest, outcome)?;
    Ok(manifest)
}

/// The run id: as given, or the start time (`_2`, `_3`, … when taken, so a
/// default id never overwrites an earlier run's manifest).
fn choose_run_id(dir: &DataDir, opts: &SyncOptions, started: UtcSecond) -> Result<RunId, Error> {
    match &opts.run_id {
        Some(r) => {
            if dir.storage().head(&dir.manifest_key(r))?.is_some() {
                tracing::warn!(run = %r, "a manifest with this run id exists and will be replaced");
            }
            Ok(r.clone())
        }
        None => unused_run_id(dir, RunId::from_time(started.get())),
    }
}

type Finish = (SyncState, Option<UtcSecond>);

/// Writes the manifest (after the partitions and state it describes), then
/// the state: last poll, last run, and the journal cleared for every table
/// the manifest reports.
fn finish(
    dir: &DataDir,
    opts: &SyncOptions,
    manifest: &mut RunManifest,
    outcome: Result<Finish, Error>,
) -> Result<(), Error> {
    let finish = match outcome {
        Ok(f) => Some(f),
        Err(e) => {
            tracing::error!(error = %error_chain(&e), "sync cycle failed");
            manifest.status = RunStatus::Failed;
            manifest.error = Some(sync_state::shorten_error(error_chain(&e)));
            None
        }
    };
    manifest.finished_at = Some(UtcSecond::new(opts.clock.now()));
    manifest.summary = Summary::of(&manifest.tables);
    manifest.save(dir)?;
    if let Some((mut state, polled_at)) = finish {
        if let Some(t) = polled_at {
            state.last_catalog_poll_at = Some(t);
        }
        state.last_run_id = Some(manifest.run_id.clone());
        for (id, r) in &manifest.tables {
            if r.status != TableStatus::Failed {
                if let Some(e) = state.tables.get_mut(id) {
                    e.pending_changed_tids.clear();
                    e.pending_deleted_tids.clear();
                    e.pending_verified_tids.clear();
                    e.pending_schema_change = None;
                }
            }
        }
        state.save(dir)?;
    }
    Ok(())
}

async fn cycle(
    client: &StatbankClient,
    opts: &SyncOptions,
    dir: &DataDir,
    run_id: &RunId,
    manifest: &mut RunManifest,
) -> Result<Finish, Error> {
    let (mut state, overrides) = load_records(dir, opts)?;
    let mut store = PartitionStore::new(dir);
    settle_interrupted(&store, manifest).await?;
    if opts.iceberg == IcebergMetadata::Stop {
        iceberg::remove_all(&store, &mut state).await?;
    } else if state.iceberg {
        iceberg::check_location(&store, &mut state)?;
        // The metadata step then reads no footer of a file just written.
        store = store.remembering_published();
    }
    let ctx = |state: SyncState| Ctx {
        client,
        opts,
        dir: dir.clone(),
        store: store.clone(),
        keep_vintages: state.keep_vintages,
        iceberg: state.iceberg,
        state: Mutex::new(state),
        overrides: overrides.clone(),
        run_id: run_id.clone(),
    };
    if opts.refresh_metadata {
        let ctx = ctx(state);
        refresh_metadata(&ctx, manifest).await;
        languages::fetch_subjects(&ctx, manifest, languages::SubjectsWhen::Always).await;
        return Ok((ctx.into_state()?, None));
    }
    if !gate_open(&state, opts, manifest) {
        return Ok((state, None));
    }
    let catalog = fetch_catalog(client, manifest).await?;
    let polled_at = UtcSecond::new(opts.clock.now());
    manifest.catalog = CatalogSection {
        polled: true,
        table_count: Some(catalog.len()),
        polled_at: Some(polled_at),
        ..CatalogSection::default()
    };
    let work = select_tables(catalog, opts, manifest);
    let ctx = ctx(state);
    lifecycle(&ctx, &work.in_catalog, manifest, polled_at).await?;
    sync_tables(&ctx, work.items, manifest).await;
    languages::fetch_subjects(&ctx, manifest, languages::SubjectsWhen::Changed).await;
    Ok((ctx.into_state()?, Some(polled_at)))
}

/// `state.json` (with `--keep-vintages` / `--no-keep-vintages` applied)
/// and the frequency overrides.
fn load_records(
    dir: &DataDir,
    opts: &SyncOptions,
) -> Result<(SyncState, FrequencyOverrides), Error> {
    let mut state = SyncState::load(dir)?;
    let overrides = FrequencyOverrides::load(dir)?;
    if !overrides.ignored().is_empty() {
        tracing::warn!(ignored = ?overrides.ignored(), "frequency overrides with an invalid table id or frequency were ignored");
    }
    match opts.vintages {
        Vintages::AsRecorded => {}
        Vintages::Keep => state.keep_vintages = true,
        Vintages::Stop => state.keep_vintages = false,
    }
    match opts.iceberg {
        IcebergMetadata::AsRecorded => {}
        IcebergMetadata::Write => state.iceberg = true,
        IcebergMetadata::Stop => state.iceberg = false,
    }
    Ok((state, overrides))
}

/// The weekly gate: whether the catalog is polled; a closed gate is
/// recorded in `manifest` (`skipped`, `weekly_gate`).
fn gate_open(state: &SyncState, opts: &SyncOptions, manifest: &mut RunManifest) -> bool {
    let now = opts.clock.now();
    match catalog_gate(state, now, &opts.gate) {
        GateDecision::Skip {
            last_catalog_poll_at,
        } => {
            tracing::info!(%last_catalog_poll_at, "weekly gate closed: catalog not polled");
            manifest.status = RunStatus::Skipped;
            manifest.catalog = CatalogSection {
                polled: false,
                reason: Some("weekly_gate".into()),
                last_catalog_poll_at: Some(last_catalog_poll_at),
                ..CatalogSection::default()
            };
            false
        }
        GateDecision::PollClockSkew {
            last_catalog_poll_at,
        } => {
            tracing::warn!(
                %last_catalog_poll_at,
                now = %UtcSecond::new(now),
                "the last catalog poll is recorded in the future (clock skew, or state.json edited): polling now"
            );
            true
        }
        GateDecision::Poll => true,
    }
}

/// Every selected table, `table_concurrency` at a time; their results go
/// into `manifest`, whose status they decide. A table's Iceberg metadata
/// is written as soon as its sync is over, beside the next tables' syncs
/// (as many at a time): it waits for no other table.
async fn sync_tables(ctx: &Ctx<'_>, items: Vec<Work>, manifest: &mut RunManifest) {
    if let Some(p) = &ctx.opts.progress {
        p.start(items.len());
    }
    let lanes = ctx.opts.table_concurrency.max(1);
    let results: Vec<(TableId, TableResult)> = futures_util::stream::iter(items)
        .map(|w| table::process_table(ctx, w))
        .buffer_unordered(lanes)
        .map(|synced| table::finish_table(ctx, synced))
        .buffer_unordered(lanes)
        .collect()
        .await;
    manifest.tables.extend(results);
    let failed = manifest
        .tables
        .values()
        .any(|r| r.status == TableStatus::Failed);
    let invalid = manifest.catalog.invalid_entries.is_some();
    manifest.status = if failed || invalid {
        RunStatus::PartialFailure
    } else {
        RunStatus::Success
    };
}

/// `--refresh-metadata`: the tableinfo of every selected table (default:
/// every table of the state) in the languages besides Danish, checked
/// against its cached Danish tableinfo; no catalog, no data. A table
/// whose metadata changed is applied for it by the next DB apply.
async fn refresh_metadata(ctx: &Ctx<'_>, manifest: &mut RunManifest) {
    let tables: Vec<TableId> = match &ctx.opts.tables {
        Some(t) => t.clone(),
        None => ctx
            .state
            .lock()
            .map(|s| s.tables.keys().cloned().collect())
            .unwrap_or_default(),
    };
    manifest.catalog = CatalogSection {
        polled: false,
        reason: Some("metadata_refresh".into()),
        ..CatalogSection::default()
    };
    let langs = ctx.opts.languages.others();
    let results: Vec<(TableId, TableResult)> = futures_util::stream::iter(tables)
        .map(|table| async move {
            let updated = ctx.entry(&table).and_then(|e| e.last_seen_updated);
            let mut r = TableResult::skipped(updated.as_deref().unwrap_or(""));
            r.reason = Some("metadata_refresh".into());
            match languages::retry(ctx, &table, langs).await {
                Some(m) => m.record(&mut r),
                None => r.reason = Some("no_cached_tableinfo".into()),
            }
            (table, r)
        })
        .buffer_unordered(ctx.opts.table_concurrency.max(1))
        .collect()
        .await;
    manifest.tables.extend(results);
    let failed = manifest.tables.values().any(|r| r.metadata_error.is_some());
    manifest.status = if failed {
        RunStatus::PartialFailure
    } else {
        RunStatus::Success
    };
}

/// Rolls forward (or back) every multi-object publish a crash interrupted,
/// before anything else reads or writes partitions; recorded in the
/// manifest under `recovered`.
async fn settle_interrupted(
    store: &PartitionStore,
    manifest: &mut RunManifest,
) -> Result<(), Error> {
    let s = store.clone();
    let (aborted, recovered) = tokio::task::spawn_blocking(move || {
        let aborted = s.storage().abort_stale_uploads()?;
        Ok::<_, Error>((aborted, s.recover()?))
    })
    .await
    .map_err(|e| Error::Internal(format!("recovery task failed: {e}")))??;
    if aborted > 0 {
        tracing::warn!(
            aborted,
            "aborted uploads that an interrupted run left unfinished"
        );
        manifest.aborted_uploads = Some(aborted as u64);
    }
    if !recovered.is_empty() {
        manifest.recovered = Some(
            recovered
                .into_iter()
                .map(|r| RecoveredPublish {
                    table: r.table,
                    kind: r.kind.to_string(),
                    action: r.action,
                })
                .collect(),
        );
    }
    Ok(())
}

async fn fetch_catalog(
    client: &StatbankClient,
    manifest: &mut RunManifest,
) -> Result<Catalog, Error> {
    match client.tables(&TablesRequest::default()).await {
        Ok(c) => Ok(c),
        Err(e) => {
            manifest.catalog = CatalogSection {
                polled: false,
                reason: Some("catalog_error".into()),
                error: Some(sync_state::shorten_error(error_chain(&e))),
                ..CatalogSection::default()
            };
            Err(e.into())
        }
    }
}

/// One unit of work of the cycle.
enum Work {
    /// A catalog table.
    Table(TableId, CatalogEntry),
    /// A table asked for with `--tables` that the catalog does not list.
    NotInCatalog(TableId),
}

struct Selected {
    items: Vec<Work>,
    /// Every valid id of the catalog (whatever the selection).
    in_catalog: BTreeSet<TableId>,
}

/// The catalog's usable tables, by id; its entries set aside (each alone:
/// a malformed entry never costs the others their sync) are recorded in
/// `manifest`.
fn select_tables(catalog: Catalog, opts: &SyncOptions, manifest: &mut RunManifest) -> Selected {
    if !catalog.rejected.is_empty() {
        tracing::warn!(
            count = catalog.rejected.len(),
            "catalog entries that cannot be used were set aside"
        );
        manifest.catalog.invalid_entries = Some(
            catalog
                .rejected
                .into_iter()
                .map(|r| InvalidEntry {
                    index: Some(r.index),
                    id: r.id,
                    error: r.error,
                })
                .collect(),
        );
    }
    let mut by_id: BTreeMap<TableId, CatalogEntry> = BTreeMap::new();
    for entry in catalog.tables {
        if let Ok(id) = entry.table_id() {
            by_id.entry(id).or_insert(entry);
        }
    }
    let in_catalog: BTreeSet<TableId> = by_id.keys().cloned().collect();
    let mut items: Vec<Work> = match &opts.tables {
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
        items.truncate(n);
    }
    Selected { items, in_catalog }
}

/// Tables with a mirror that the catalog no longer lists keep their
/// partitions and state (`removed_from_catalog_at` records when they were
/// first missed) and are listed in `catalog.removed_tables`; tables that came
/// back lose the mark and resume. Only `--vanished-tables archive|delete`
/// removes anything.
async fn lifecycle(
    ctx: &Ctx<'_>,
    in_catalog: &BTreeSet<TableId>,
    manifest: &mut RunManifest,
    now: UtcSecond,
) -> Result<(), Error> {
    let removed = {
        let mut state = ctx
            .state
            .lock()
            .map_err(|_| Error::Internal("state lock poisoned".into()))?;
        mark_vanished(&mut state, in_catalog, now)
    };
    if removed.is_empty() {
        return Ok(());
    }
    manifest.catalog.removed_tables = Some(removed.clone());
    let opts = ctx.opts;
    if opts.vanished_tables == VanishedTables::Keep {
        return Ok(());
    }
    let archiving = opts.vanished_tables == VanishedTables::Archive;
    // Recorded as a pattern: `statbank_tables/_archive/{TABLE}/<run>`.
    let archive = archiving.then(|| {
        format!(
            "{}/{}/{{TABLE}}/{}",
            sync_state::TABLES_DIR,
            sync_state::ARCHIVE_DIR,
            ctx.run_id
        )
    });
    for id in &removed {
        let s = ctx.store.clone();
        let (table, run) = (id.clone(), ctx.run_id.clone());
        tokio::task::spawn_blocking(move || {
            let moved = if archiving {
                let to = s.data_dir().archive_key(&table, &run);
                s.archive_table(&table, &to)
            } else {
                s.delete_table(&table)
            }?;
            // Its labels and Iceberg metadata go with its partitions (the
            // cached tableinfo stays).
            s.remove_iceberg(&table)?;
            s.remove_labels(&table).map(|_| moved)
        })
        .await
        .map_err(|e| Error::Internal(format!("vanished-table task failed: {e}")))??;
        ctx.state
            .lock()
            .map_err(|_| Error::Internal("state lock poisoned".into()))?
            .tables
            .remove(id);
    }
    manifest.catalog.vanished = Some(VanishedReport {
        action: if archiving { "archive" } else { "delete" }.into(),
        tables: removed,
        archive,
    });
    Ok(())
}

/// Marks the tables with a mirror that `in_catalog` lacks (when first
/// missed), unmarks those back in it; returns the ones missing now.
fn mark_vanished(
    state: &mut SyncState,
    in_catalog: &BTreeSet<TableId>,
    now: UtcSecond,
) -> Vec<TableId> {
    let mut removed = Vec::new();
    for (id, t) in state.tables.iter_mut() {
        if in_catalog.contains(id) {
            if t.removed_from_catalog_at.take().is_some() {
                tracing::info!(table = %id, "table is back in the catalog");
            }
        } else if t.bootstrap_complete || t.partition_count.unwrap_or(0) > 0 {
            if t.removed_from_catalog_at.is_none() {
                tracing::warn!(table = %id, "table is no longer in the catalog: its partitions are kept");
                t.removed_from_catalog_at = Some(now);
            }
            removed.push(id.clone());
        }
    }
    removed
}

/// `base`, or `base_2`, `base_3`, … when a manifest with that id exists.
fn unused_run_id(dir: &DataDir, base: RunId) -> Result<RunId, Error> {
    let taken = |id: &RunId| -> Result<bool, Error> {
        Ok(dir.storage().head(&dir.manifest_key(id))?.is_some())
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
    Err(Error::Internal(format!("no free run id for {base}")))
}
