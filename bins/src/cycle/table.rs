//! One table of a cycle, as named steps: eligibility; `prepare` (tableinfo,
//! periods, schema signature, metadata cache); then either the `incremental`
//! path (new ∪ refresh window ∪ verification slice, published in place) or
//! the `rebootstrap` path (a changed signature: every period fetched into a
//! new set that is swapped in whole); then the result and the state entry.

use std::collections::{BTreeSet, HashMap, HashSet};

use partition_store::{PartitionMeta, PublishOptions, TableSet};
use statbank_client::{error_chain, CatalogEntry, TableInfo, TableInfoExt};
use sync_state::{
    batches, eligibility, estimate_rows_per_period, periods_per_request, plan_verification,
    select_periods, Eligibility, Frequency, PeriodSelection, SchemaChange, SelectOptions, TableId,
    TableResult, TableState, Tid, VerifyInputs, VerifyPlan,
};
use tracing::Instrument;

use super::{iceberg, languages, schema, Ctx, Work};
use crate::fetch::{fetch_batch, FetchError, FetchJob};
use crate::Error;

/// A table whose sync is over: its result, and the catalog `updated` its
/// Iceberg metadata is due for (`--iceberg`), which [`finish_table`]
/// writes.
pub(super) struct Synced {
    table: TableId,
    result: TableResult,
    metadata_due: Option<String>,
}

/// The table's sync: everything but its Iceberg metadata.
pub(super) async fn process_table(ctx: &Ctx<'_>, work: Work) -> Synced {
    let (table, entry) = match work {
        Work::Table(t, e) => (t, e),
        Work::NotInCatalog(t) => {
            let result = not_in_catalog(ctx, &t);
            return Synced {
                table: t,
                result,
                metadata_due: None,
            };
        }
    };
    let mut prev = ctx.entry(&table);
    if ctx.opts.verify.cycles == 0 {
        // Rolling verification off: an old debt neither visits the table nor
        // survives its next sync.
        if let Some(p) = prev.as_mut() {
            p.verify_debt.clear();
        }
    }
    let local = has_local(ctx, &table, prev.as_ref());
    let decision = match eligibility(prev.as_ref(), &entry.updated, local) {
        // `--verify-all` visits every selected table.
        Eligibility::Unchanged if ctx.opts.verify_all => Eligibility::Sync { bootstrap: false },
        d => d,
    };
    let (result, metadata_due) = match decision {
        Eligibility::Unchanged => {
            let mut r = TableResult::skipped(&entry.updated);
            let mut due = None;
            if let Some(prev) = &prev {
                carry_over(ctx, &table, prev, &mut r, None);
                let pending = pending_languages(ctx, prev);
                if let Some(m) = languages::retry(ctx, &table, &pending).await {
                    m.record(&mut r);
                }
                due = prev
                    .last_seen_updated
                    .clone()
                    .filter(|_| iceberg::behind(ctx, prev));
            }
            (r, due)
        }
        Eligibility::Sync { bootstrap } => {
            if let Some(p) = &ctx.opts.progress {
                p.table_started(&table);
            }
            let span = tracing::info_span!("table", table = %table, bootstrap);
            let r = match sync_table(ctx, &table, &entry, bootstrap, prev.as_ref())
                .instrument(span)
                .await
            {
                Ok(r) => r,
                Err(e) => failed(ctx, &table, &entry, &e),
            };
            // Also after a failure: a request published before it failed.
            (r, Some(entry.updated.clone()))
        }
    };
    Synced {
        table,
        result,
        metadata_due,
    }
}

/// The table's Iceberg metadata, when due (`--iceberg`); then the table is
/// done. The cycle runs this beside the next tables' syncs.
pub(super) async fn finish_table(ctx: &Ctx<'_>, synced: Synced) -> (TableId, TableResult) {
    let Synced {
        table,
        mut result,
        metadata_due,
    } = synced;
    if let Some(updated) = metadata_due {
        iceberg::refresh(ctx, &table, &updated, &mut result).await;
    }
    if let Some(p) = &ctx.opts.progress {
        p.table_finished(&table, &result);
    }
    (table, result)
}

/// The languages still pending for a table that this cycle still fetches.
pub(super) fn pending_languages(ctx: &Ctx<'_>, prev: &TableState) -> Vec<statbank_client::Lang> {
    prev.metadata_pending
        .iter()
        .copied()
        .filter(|l| ctx.opts.languages.others().contains(l))
        .collect()
}

/// A table asked for by `--tables` that the catalog does not list: skipped
/// when it has a mirror (it left the catalog), failed otherwise.
fn not_in_catalog(ctx: &Ctx<'_>, table: &TableId) -> TableResult {
    match ctx.entry(table) {
        Some(e) if e.removed_from_catalog_at.is_some() => {
            let mut r = TableResult::skipped(e.last_seen_updated.as_deref().unwrap_or(""));
            r.reason = Some("removed_from_catalog".into());
            r
        }
        _ => TableResult::failed("", format!("table {table} is not in the catalog")),
    }
}

/// Records a failed table; it keeps its old `last_seen_updated` so the
/// next cycle retries it.
fn failed(ctx: &Ctx<'_>, table: &TableId, entry: &CatalogEntry, e: &Error) -> TableResult {
    let msg = sync_state::shorten_error(error_chain(e));
    tracing::warn!(table = %table, error = %msg, "table failed");
    let r = TableResult::failed(&entry.updated, msg.clone());
    let now = ctx.now();
    let run_id = ctx.run_id.clone();
    if let Err(se) = ctx.update_state(table, |s| {
        s.last_status = Some("failed".into());
        s.last_error = Some(msg);
        s.consecutive_failures = s.consecutive_failures.saturating_add(1);
        s.last_sync_at = Some(now);
        s.last_run_id = Some(run_id);
    }) {
        tracing::error!(table = %table, error = %error_chain(&se), "cannot save state");
    }
    r
}

/// Whether the table has partitions. A local folder is listed (cheap and
/// exact). On an object store the state's partition count answers, so that
/// a cycle with nothing to do costs a constant number of requests; a table
/// without a count, or named with `--tables`, is listed.
fn has_local(ctx: &Ctx<'_>, table: &TableId, prev: Option<&TableState>) -> bool {
    let counted = prev.and_then(|p| p.partition_count);
    let list = ctx.dir.storage().is_local() || ctx.opts.tables.is_some() || counted.is_none();
    if list {
        ctx.store.has_partitions(table).unwrap_or(false)
    } else {
        counted.unwrap_or(0) > 0
    }
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
        .filter(|t| !have.contains(*t) && ctx.store.has_partition(table, t).unwrap_or(false))
        .cloned()
        .collect();
    if !extra.is_empty() {
        changed.extend(extra);
        if let Some(remote) = remote {
            let pos: HashMap<&Tid, usize> =
                remote.iter().enumerate().map(|(i, t)| (t, i)).collect();
            changed.sort_by_key(|t| pos.get(t).copied().unwrap_or(usize::MAX));
        }
        r.carried_over = Some(true);
        r.changed_tids = changed;
    }
    if r.schema_change.is_none() {
        if let Some(c) = &prev.pending_schema_change {
            r.schema_change = Some(c.clone());
        }
    }
    if !prev.pending_verified_tids.is_empty() {
        let mut verified = r.verified_periods.clone().unwrap_or_default();
        push_unique(&mut verified, &prev.pending_verified_tids);
        r.verified_periods = Some(verified);
    }
    if !prev.pending_deleted_tids.is_empty() {
        let mut deleted = r.deleted_tids.clone().unwrap_or_default();
        for t in &prev.pending_deleted_tids {
            if !deleted.contains(t) && !ctx.store.has_partition(table, t).unwrap_or(true) {
                deleted.push(t.clone());
            }
        }
        r.deleted_tids = Some(deleted);
    }
}

/// What `prepare` learned about a table before any data request.
struct Prepared {
    info: TableInfo,
    remote: Vec<Tid>,
    local: BTreeSet<Tid>,
    frequency: Frequency,
    per_request: usize,
    signature: Vec<String>,
    schema_change: Option<SchemaChange>,
    /// The other languages' tableinfo, and whether any cache changed.
    metadata: languages::Outcome,
}

async fn sync_table(
    ctx: &Ctx<'_>,
    table: &TableId,
    entry: &CatalogEntry,
    bootstrap: bool,
    prev: Option<&TableState>,
) -> Result<TableResult, Error> {
    let p = prepare(ctx, table, entry, prev).await?;
    let mut r = if p.schema_change.is_some() {
        rebootstrap(ctx, table, entry, &p).await?
    } else {
        incremental(ctx, table, entry, bootstrap, prev, &p).await?
    };
    if let Some(prev) = prev {
        carry_over(ctx, table, prev, &mut r, Some(&p.remote));
    }
    let mut metadata = p.metadata;
    metadata.publish_labels(ctx, table, &p.info);
    metadata.record(&mut r);
    Ok(r)
}

/// Tableinfo, the remote periods (a table without a time variable fails
/// here, with nothing written), the local periods, the schema signature
/// before and after, and the metadata cache.
async fn prepare(
    ctx: &Ctx<'_>,
    table: &TableId,
    entry: &CatalogEntry,
    prev: Option<&TableState>,
) -> Result<Prepared, Error> {
    let dir = &ctx.dir;
    let removed = ctx.store.clean_temp_files(table);
    if removed > 0 {
        tracing::info!(table = %table, removed, "removed temp files of an interrupted run");
    }
    let cache_key = dir.metadata_file_key(table);
    let cached: Option<TableInfo> = dir
        .storage()
        .get(&cache_key)?
        .and_then(|b| serde_json::from_slice(&b).ok());
    let (info, raw) = match cached.clone().filter(|_| debt_only_visit(ctx, entry, prev)) {
        // The table did not change upstream (`updated` is the one its
        // cache was written under): its cached tableinfo still holds.
        Some(info) => (info, None),
        None => {
            let (info, raw) = ctx.client.table_info(table).await?;
            (info, Some(raw))
        }
    };
    let remote = info.tids()?;
    let da_changed = raw.is_some() && cached.as_ref() != Some(&info);
    let da_change = cached.as_ref().filter(|_| da_changed).and_then(|old| {
        sync_state::tableinfo::metadata_change(sync_state::tableinfo::Lang::Da, old, &info)
    });
    // Variables the apply could never load are refused before any data.
    sync_state::check_variable_columns(table, info.variables.iter().map(|v| v.id.as_str()))?;
    let local = ctx.store.list_tids(table)?;
    let signature = schema::signature_of(&info);
    let before = {
        let (store, table, prev, local) = (
            ctx.store.clone(),
            table.clone(),
            prev.cloned(),
            local.clone(),
        );
        tokio::task::spawn_blocking(move || {
            schema::before(&store, &table, prev.as_ref(), &local, cached.as_ref())
        })
        .await
        .map_err(|e| Error::Internal(format!("signature task failed: {e}")))??
    };
    let mut metadata = match raw {
        Some(raw) => {
            dir.storage().put(&cache_key, &raw)?;
            languages::fetch(ctx, table, &info, ctx.opts.languages.others()).await
        }
        // A debt-only visit: `info` is the cached Danish tableinfo; only
        // the languages still pending are fetched (the labels file is
        // published once, after the partitions, by `sync_table`).
        None => {
            let pending = prev.map(|p| pending_languages(ctx, p)).unwrap_or_default();
            languages::fetch(ctx, table, &info, &pending).await
        }
    };
    metadata.changed |= da_changed;
    metadata.changes.splice(0..0, da_change);
    let schema_change = before
        .filter(|b| b.mixed || !schema::same(&b.signature, &signature))
        .map(|b| SchemaChange {
            before: b.signature,
            after: signature.clone(),
        });
    if let Some(c) = &schema_change {
        tracing::warn!(table = %table, before = ?c.before, after = ?c.after,
            "the table's variables changed: re-fetching it whole");
    }
    let frequency = ctx
        .overrides
        .get(table)
        .unwrap_or_else(|| sync_state::infer_frequency(&remote));
    let per_request = periods_per_request(
        estimate_rows_per_period(&info.value_counts(), remote.len()),
        ctx.opts.max_rows_per_call,
    );
    Ok(Prepared {
        info,
        remote,
        local,
        frequency,
        per_request,
        signature,
        schema_change,
        metadata,
    })
}

/// A visit only to pay verification debt: the table synced completely
/// before, under the same catalog `updated`, and owes verifications.
fn debt_only_visit(ctx: &Ctx<'_>, entry: &CatalogEntry, prev: Option<&TableState>) -> bool {
    prev.is_some_and(|s| {
        s.bootstrap_complete
            && !s.verify_debt.is_empty()
            && s.last_seen_updated.as_deref() == Some(entry.updated.as_str())
    }) && !ctx.opts.verify_all
}

/// The usual path: new periods, the refresh window and this cycle's slice of
/// verification debt, each published in place when its content changed
/// (superseded content kept as a vintage when vintages are on); pruned
/// periods removed on request.
async fn incremental(
    ctx: &Ctx<'_>,
    table: &TableId,
    entry: &CatalogEntry,
    bootstrap: bool,
    prev: Option<&TableState>,
    p: &Prepared,
) -> Result<TableResult, Error> {
    let sel = select_periods(
        &p.remote,
        &p.local,
        p.frequency,
        SelectOptions {
            bootstrap,
            prune: ctx.opts.prune_deleted_periods,
        },
    );
    let updated_changed =
        prev.and_then(|s| s.last_seen_updated.as_deref()) != Some(entry.updated.as_str());
    let vplan = verification(ctx, prev, p, &sel, bootstrap, updated_changed);
    // A visit only to pay verification debt (`updated` unchanged) fetches
    // only that slice.
    let debt_only = !bootstrap && !updated_changed && !ctx.opts.verify_all;
    let wanted: HashSet<&Tid> = if debt_only {
        vplan.verify.iter().collect()
    } else {
        sel.fetch.iter().chain(&vplan.verify).collect()
    };
    let fetch: Vec<Tid> = p
        .remote
        .iter()
        .filter(|t| wanted.contains(t))
        .cloned()
        .collect();
    let set = ctx.store.current_set(table);
    let published = fetch_and_publish(ctx, &set, entry, p, &fetch).await?;
    let deleted = prune(ctx, table, entry, &sel).await?;
    let mut r = TableResult::synced(&entry.updated, bootstrap, p.frequency);
    r.remote_tid_count = Some(p.remote.len());
    r.local_tid_count_before = Some(p.local.len());
    r.changed_tids = in_remote_order(&p.remote, &published.changed);
    if debt_only {
        r.reason = Some("verification_only".into());
        r.new_periods = Some(Vec::new());
        r.refresh_periods = Some(Vec::new());
    } else {
        r.new_periods = Some(sel.new_periods.clone());
        r.refresh_periods = Some(sel.refresh_periods.clone());
    }
    // Verified periods have their own field; `unchanged_refreshed` keeps
    // its meaning (refreshed periods whose content was identical).
    let verified: HashSet<&Tid> = vplan.verify.iter().collect();
    r.unchanged_refreshed = Some(
        published
            .unchanged
            .iter()
            .filter(|t| !verified.contains(t))
            .cloned()
            .collect(),
    );
    if ctx.opts.prune_deleted_periods {
        r.deleted_tids = Some(deleted.clone());
    }
    published.fill(&mut r);
    if !vplan.verify.is_empty() {
        r.verified_periods = Some(vplan.verify.clone());
    }
    if !vplan.verify.is_empty() || !vplan.debt_after.is_empty() {
        r.verification_debt = Some(vplan.debt_after.len());
    }
    let mut after: BTreeSet<Tid> = p.local.clone();
    after.extend(fetch.iter().cloned());
    for t in &deleted {
        after.remove(t);
    }
    save_synced(ctx, table, entry, p, after.len(), Some(&vplan))?;
    Ok(r)
}

/// This cycle's verification slice ([`plan_verification`]); none on a
/// bootstrap.
fn verification(
    ctx: &Ctx<'_>,
    prev: Option<&TableState>,
    p: &Prepared,
    sel: &PeriodSelection,
    bootstrap: bool,
    updated_changed: bool,
) -> VerifyPlan {
    if bootstrap {
        return VerifyPlan::default();
    }
    let empty = Vec::new();
    let inputs = VerifyInputs {
        debt: prev.map(|s| &s.verify_debt).unwrap_or(&empty),
        per_cycle: prev.and_then(|s| s.verify_per_cycle),
        updated_changed,
        verify_all: ctx.opts.verify_all,
        rows_per_period: estimate_rows_per_period(&p.info.value_counts(), p.remote.len()),
    };
    plan_verification(&p.remote, sel, inputs, &ctx.opts.verify)
}

/// A changed schema signature: every remote period is fetched into a new
/// set built aside, which is then swapped in whole. `changed_tids` is the
/// whole new set; periods only the old set had leave with it
/// (`deleted_tids`).
async fn rebootstrap(
    ctx: &Ctx<'_>,
    table: &TableId,
    entry: &CatalogEntry,
    p: &Prepared,
) -> Result<TableResult, Error> {
    let set = {
        let (store, table, id) = (ctx.store.clone(), table.clone(), ctx.run_id.to_string());
        tokio::task::spawn_blocking(move || store.new_set(&table, &id))
            .await
            .map_err(|e| Error::Internal(format!("staging task failed: {e}")))??
    };
    let published = fetch_and_publish(ctx, &set, entry, p, &p.remote).await?;
    let new_tids: Vec<Tid> = p.remote.clone();
    let gone: Vec<Tid> = p
        .local
        .iter()
        .filter(|t| !new_tids.contains(t))
        .cloned()
        .collect();
    // Journal the whole change before the swap: a crash after it must not
    // hide it from the DB apply.
    let change = p.schema_change.clone();
    ctx.update_state(table, |s| {
        push_unique(&mut s.pending_changed_tids, &new_tids);
        push_unique(&mut s.pending_deleted_tids, &gone);
        s.pending_schema_change = change;
    })?;
    let opts = ctx.publish_options(&entry.updated);
    let swap = {
        let store = ctx.store.clone();
        tokio::task::spawn_blocking(move || store.commit_set(&set, &opts))
            .await
            .map_err(|e| Error::Internal(format!("swap task failed: {e}")))??
    };
    let sel = select_periods(
        &p.remote,
        &BTreeSet::new(),
        p.frequency,
        SelectOptions {
            bootstrap: true,
            prune: false,
        },
    );
    let mut r = TableResult::synced(&entry.updated, true, p.frequency);
    r.remote_tid_count = Some(p.remote.len());
    r.local_tid_count_before = Some(p.local.len());
    r.new_periods = Some(sel.new_periods);
    r.refresh_periods = Some(sel.refresh_periods);
    r.changed_tids = new_tids;
    r.deleted_tids = Some(in_remote_order(
        &p.local.iter().cloned().collect::<Vec<_>>(),
        &swap.removed_tids.iter().cloned().collect(),
    ));
    r.schema_change = p.schema_change.clone();
    r.unchanged_refreshed = Some(Vec::new());
    published.fill(&mut r);
    save_synced(ctx, table, entry, p, swap.new_tids.len(), None)?;
    Ok(r)
}

fn push_unique(into: &mut Vec<Tid>, tids: &[Tid]) {
    for t in tids {
        if !into.contains(t) {
            into.push(t.clone());
        }
    }
}

fn in_remote_order(remote: &[Tid], set: &HashSet<Tid>) -> Vec<Tid> {
    remote
        .iter()
        .filter(|t| set.contains(*t))
        .cloned()
        .collect()
}

/// The table's state entry after a successful sync: `last_seen_updated`
/// advances only now, after its partitions are published.
fn save_synced(
    ctx: &Ctx<'_>,
    table: &TableId,
    entry: &CatalogEntry,
    p: &Prepared,
    partitions: usize,
    vplan: Option<&VerifyPlan>,
) -> Result<(), Error> {
    let now = ctx.now();
    let run_id = ctx.run_id.clone();
    let updated = entry.updated.clone();
    let (freq, signature) = (p.frequency, p.signature.clone());
    ctx.update_state(table, |s| {
        s.last_seen_updated = Some(updated);
        s.last_sync_at = Some(now);
        s.frequency = Some(freq);
        s.bootstrap_complete = true;
        s.last_status = Some("synced".into());
        s.last_error = None;
        s.consecutive_failures = 0;
        s.last_run_id = Some(run_id);
        s.variables = Some(signature);
        s.partition_count = Some(partitions);
        s.removed_from_catalog_at = None;
        s.verify_debt = vplan.map(|v| v.debt_after.clone()).unwrap_or_default();
        s.verify_per_cycle = vplan.and_then(|v| v.per_cycle);
        if let Some(v) = vplan {
            push_unique(&mut s.pending_verified_tids, &v.verify);
        }
    })
}

/// Removes (or keeps as vintages) the local periods gone from the remote
/// list, when asked; journaled first.
async fn prune(
    ctx: &Ctx<'_>,
    table: &TableId,
    entry: &CatalogEntry,
    sel: &PeriodSelection,
) -> Result<Vec<Tid>, Error> {
    if !ctx.opts.prune_deleted_periods || sel.deleted.is_empty() {
        return Ok(Vec::new());
    }
    ctx.update_state(table, |s| {
        push_unique(&mut s.pending_deleted_tids, &sel.deleted)
    })?;
    let (store, table, tids, opts) = (
        ctx.store.clone(),
        table.clone(),
        sel.deleted.clone(),
        ctx.publish_options(&entry.updated),
    );
    let removed = tokio::task::spawn_blocking(move || store.remove_periods(&table, &tids, &opts))
        .await
        .map_err(|e| Error::Internal(format!("prune task failed: {e}")))??;
    // A period already gone counts as deleted too (it is gone either way).
    let mut out = removed;
    for t in &sel.deleted {
        if !out.contains(t) {
            out.push(t.clone());
        }
    }
    Ok(out)
}

/// What the requests of one table published.
#[derive(Default)]
struct Published {
    changed: HashSet<Tid>,
    unchanged: Vec<Tid>,
    rows: u64,
    files: u64,
    bytes: u64,
}

impl Published {
    fn fill(&self, r: &mut TableResult) {
        r.rows_written = Some(self.rows);
        r.files_written = Some(self.files);
        r.bytes_fetched = Some(self.bytes);
    }
}

/// Fetches `fetch` in batches into `set`, publishing after each request
/// that parsed completely. For the current set (not a staged new set,
/// [`TableSet::is_staging`]), the periods about to change are journaled in
/// the state before they are published.
async fn fetch_and_publish(
    ctx: &Ctx<'_>,
    set: &TableSet,
    entry: &CatalogEntry,
    p: &Prepared,
    fetch: &[Tid],
) -> Result<Published, Error> {
    let table = set.table();
    let meta = PartitionMeta {
        variables: Some(p.signature.clone()),
        valid_from: Some(entry.updated.clone()),
    };
    let opts: PublishOptions = ctx.publish_options(&entry.updated);
    let mut out = Published::default();
    for batch in batches(fetch, p.per_request) {
        if ctx.opts.stop.is_stopped() {
            return Err(Error::Interrupted);
        }
        let job = FetchJob::new(set, &p.info, &batch, ctx.opts.limits, &meta);
        let fetched = ctx
            .client
            .with_retries("bulk body", || async {
                match fetch_batch(ctx.client, &p.info, &job).await {
                    Ok(f) => Ok(Ok(f)),
                    Err(FetchError::Body(Error::Client(e))) => Err(e),
                    Err(other) => Ok(Err(other.into_inner())),
                }
            })
            .await??;
        out.bytes += fetched.bytes;
        let staged = fetched.staged;
        let comparison = staged.compare();
        let to_publish: Vec<Tid> = comparison
            .iter()
            .filter(|p| !p.unchanged)
            .map(|p| p.tid.clone())
            .collect();
        if !set.is_staging() && !to_publish.is_empty() {
            // Journal before publishing: a crash after it must not hide
            // these changes from the next manifest.
            ctx.update_state(table, |s| {
                push_unique(&mut s.pending_changed_tids, &to_publish)
            })?;
        }
        let o = opts.clone();
        let outcome = tokio::task::spawn_blocking(move || staged.publish(&comparison, &o))
            .await
            .map_err(|e| Error::Internal(format!("publish task failed: {e}")))??;
        for (tid, rows) in outcome.changed {
            out.rows += rows;
            out.files += 1;
            if let Some(p) = &ctx.opts.progress {
                p.rows(rows);
            }
            out.changed.insert(tid);
        }
        out.unchanged.extend(outcome.unchanged);
    }
    Ok(out)
}
