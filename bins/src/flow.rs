//! `run_flow`: the original Prefect flow as a library function — the sync
//! cycle with retries, then the DB apply (with its own retry) only when some
//! table changed, then metrics and an alert. Also the cron schedule loop.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use fact_apply::ApplyOptions;
use serde_json::json;
use statbank_client::{error_chain, ClientStats, StatbankClient};
use sync_state::{
    DbApplyReport, EarlierRun, FlowReconcile, FlowSection, ReconcileReport, ReconcileStatus, RunId,
    RunManifest, RunStatus, TableStatus,
};

use crate::metrics::{write_metrics, MetricsInput};
use crate::redact::{url_origin, DatabaseUrl};
use crate::{run_sync_cycle, Error, StopSignal, SyncOptions};

/// Settings of one flow run.
#[derive(Clone)]
pub struct FlowOptions {
    /// The sync cycle's settings.
    pub sync: SyncOptions,
    /// Postgres connection string; `None` = sync to disk only.
    pub database_url: Option<DatabaseUrl>,
    /// The DB apply's settings.
    pub apply: ApplyOptions,
    /// Waits before the sync's retries (default 30 s, 120 s, 300 s: three retries).
    pub sync_retry_delays: Vec<Duration>,
    /// Waits before the apply's retries (default 60 s: one retry).
    pub apply_retry_delays: Vec<Duration>,
    /// POST a JSON summary here on `partial_failure` or `failed`, and when a
    /// scheduled run is skipped by the weekly gate.
    pub alert_webhook: Option<String>,
    /// Write Prometheus text-format metrics here after the run.
    pub metrics_file: Option<PathBuf>,
    /// Also PUT the metrics to this Pushgateway URL
    /// (e.g. `http://pushgateway:9091/metrics/job/statbank_sync`).
    pub metrics_push_url: Option<String>,
    /// The run was started by a schedule (cron, timer, CronJob, Prefect): a
    /// run the weekly gate skips then raises an alert. `run_schedule` sets it.
    pub scheduled: bool,
    /// Reconcile the database with the mirror after the apply, once every
    /// this many runs (0: never). A reconcile that finds differences
    /// raises the alert.
    pub reconcile_every: u32,
    /// Repair what the reconcile finds.
    pub reconcile_repair: bool,
}

impl FlowOptions {
    /// The original flow's defaults around `sync`.
    pub fn new(sync: SyncOptions) -> FlowOptions {
        FlowOptions {
            sync,
            database_url: None,
            apply: ApplyOptions::default(),
            sync_retry_delays: [30, 120, 300].map(Duration::from_secs).to_vec(),
            apply_retry_delays: vec![Duration::from_secs(60)],
            alert_webhook: None,
            metrics_file: None,
            metrics_push_url: None,
            scheduled: false,
            reconcile_every: 0,
            reconcile_repair: false,
        }
    }
}

pub use sync_state::AlertOutcome;

/// What one flow run did.
#[derive(Debug, Clone)]
pub struct FlowReport {
    /// The run (of the last sync attempt).
    pub run_id: RunId,
    /// Combined status of sync and apply.
    pub status: RunStatus,
    /// Status of the (last) sync attempt.
    pub sync_status: RunStatus,
    /// Sync attempts made (1 + retries).
    pub sync_attempts: u32,
    /// The apply report, when the apply ran (or was skipped for no changes).
    pub apply: Option<DbApplyReport>,
    /// Apply attempts made.
    pub apply_attempts: u32,
    /// The apply's error when it could not run at all.
    pub apply_error: Option<String>,
    /// Why the apply was not run, in words.
    pub apply_note: Option<String>,
    /// The alert, when one was sent.
    pub alert: Option<AlertOutcome>,
    /// Wall time of the sync attempts (with retry waits).
    pub sync_seconds: f64,
    /// Wall time of the apply attempts.
    pub apply_seconds: f64,
    /// The final manifest (as written).
    pub manifest: RunManifest,
    /// Earlier runs whose pending apply this run retried.
    pub earlier_runs: Vec<EarlierRun>,
    /// The reconcile after the apply, when one was due.
    pub reconcile: Option<FlowReconcile>,
}

/// Runs the flow once. `Err` only when not even a manifest could be written
/// (for example the data folder is locked by another run).
pub async fn run_flow(client: &StatbankClient, opts: &FlowOptions) -> Result<FlowReport, Error> {
    let dir = opts.sync.data_dir.clone();
    let stats_before = client.stats();
    let sync_started = Instant::now();
    let (mut manifest, sync_attempts) = sync_with_retries(client, opts).await?;
    let sync_seconds = sync_started.elapsed().as_secs_f64();
    let run_id = manifest.run_id.clone();
    let sync_status = manifest.status;

    let (earlier, earlier_failed) = apply_earlier_runs(opts, &run_id, sync_status).await?;
    let apply_started = Instant::now();
    let step = apply_this_run(opts, &mut manifest).await?;
    let apply_seconds = apply_started.elapsed().as_secs_f64();

    let mut status = step.flow_status(sync_status);
    if earlier_failed && status.is_ok() {
        status = RunStatus::PartialFailure;
    }
    let reconcile = reconcile_if_due(opts, sync_status).await?;
    let unresolved = reconcile.as_ref().is_some_and(|r| {
        !matches!(
            r.status,
            Some(ReconcileStatus::Agrees | ReconcileStatus::Repaired)
        )
    });
    if unresolved && status.is_ok() {
        status = RunStatus::PartialFailure;
    }
    let mut report = FlowReport {
        run_id: run_id.clone(),
        status,
        sync_status,
        sync_attempts,
        apply: step.report,
        apply_attempts: step.attempts,
        apply_error: step.error,
        apply_note: step.note,
        alert: None,
        sync_seconds,
        apply_seconds,
        manifest,
        earlier_runs: earlier,
        reconcile,
    };
    log_failures(&report);
    if let Some(reason) = alert_reason(&report, opts.scheduled) {
        if let Some(url) = &opts.alert_webhook {
            report.alert = Some(send_alert(url, &report, &reason, &dir).await);
        }
    }
    record_flow(&mut report, &dir)?;
    let stats = client.stats();
    let delta = ClientStats {
        requests: stats.requests - stats_before.requests,
        retries: stats.retries - stats_before.retries,
        bytes: stats.bytes - stats_before.bytes,
    };
    emit_metrics(opts, &report, delta).await;
    tracing::info!(run = %run_id, status = %status, "flow finished: {status}");
    Ok(report)
}

/// One attempt's outcome: final, or worth another try.
enum Attempt<T> {
    /// Done: no retry.
    Done(T),
    /// Failed in a way a retry may fix.
    Again(T),
}

/// Calls `attempt` (with its 1-based number) until it is done, waiting
/// `delays[i]` before retry `i + 1`; stops early when `stop` is raised.
/// Returns the last outcome and the attempts made. An `Err` ends it at once.
async fn with_retries<T>(
    what: &str,
    delays: &[Duration],
    stop: &StopSignal,
    mut attempt: impl AsyncFnMut(u32) -> Result<Attempt<T>, Error>,
) -> Result<(T, u32), Error> {
    let mut n = 0u32;
    loop {
        n += 1;
        let again = match attempt(n).await? {
            Attempt::Done(t) => return Ok((t, n)),
            Attempt::Again(t) => t,
        };
        let Some(wait) = delays.get(n as usize - 1) else {
            return Ok((again, n));
        };
        tracing::info!(wait_secs = wait.as_secs_f64(), "retrying the {what}");
        if !sleep_unless_stopped(*wait, stop).await {
            return Ok((again, n));
        }
    }
}

/// The sync cycle, retried while the run as a whole fails (catalog
/// unreachable, disk error). Per-table failures are not retried here: the
/// tables keep their old state and the next cycle retries them.
async fn sync_with_retries(
    client: &StatbankClient,
    opts: &FlowOptions,
) -> Result<(RunManifest, u32), Error> {
    let (last, attempts) = with_retries(
        "sync",
        &opts.sync_retry_delays,
        &opts.sync.stop,
        async |n| match run_sync_cycle(client, &opts.sync).await {
            Ok(m) if m.status != RunStatus::Failed => Ok(Attempt::Done(Ok(m))),
            Ok(m) => {
                tracing::warn!(attempt = n, run = %m.run_id, error = m.error.as_deref().unwrap_or(""), "sync attempt failed");
                Ok(Attempt::Again(Ok(m)))
            }
            Err(e) if e.is_locked() => Err(e),
            Err(e) => {
                tracing::warn!(attempt = n, error = %error_chain(&e), "sync attempt failed");
                Ok(Attempt::Again(Err(e)))
            }
        },
    )
    .await?;
    Ok((last?, attempts))
}

/// Earlier runs whose apply failed or never ran: their periods are not in
/// this run's `changed_tids`, so they are applied first, oldest first (each
/// against the current partitions, which is correct: the partitions are the
/// truth). Returns what was done and whether any of them failed.
async fn apply_earlier_runs(
    opts: &FlowOptions,
    this_run: &RunId,
    sync_status: RunStatus,
) -> Result<(Vec<EarlierRun>, bool), Error> {
    let mut earlier = Vec::new();
    let mut failed = false;
    let Some(url) = &opts.database_url else {
        return Ok((earlier, failed));
    };
    if sync_status == RunStatus::Failed {
        return Ok((earlier, failed));
    }
    let dir = &opts.sync.data_dir;
    let pending = match sync_state::pending_runs(dir) {
        Ok(p) => p,
        Err(e) => {
            // An unreadable earlier manifest must not cost this run its apply.
            let msg = error_chain(&e);
            tracing::warn!(error = %msg, "cannot list the runs awaiting an apply");
            earlier.push(EarlierRun::Unlisted { error: msg });
            return Ok((earlier, true));
        }
    };
    for run in pending.into_iter().filter(|r| r != this_run) {
        tracing::info!(run = %run, "applying an earlier run whose apply had not succeeded");
        let (result, n) = apply_with_retries(url, dir, &run, opts).await?;
        let (status, error) = match &result {
            Ok(rep) => (Some(rep.status), None),
            Err(e) => (None, Some(e.clone())),
        };
        if error.is_some() || status.is_some_and(|s| !s.is_ok()) {
            failed = true;
            tracing::warn!(run = %run, status = ?status, error = error.as_deref().unwrap_or(""), "an earlier run's apply did not succeed");
        }
        earlier.push(EarlierRun::Applied {
            run_id: run,
            status,
            error,
            attempts: n,
        });
    }
    Ok((earlier, failed))
}

/// What the apply of this run did.
struct ApplyStep {
    /// Some table has changed or deleted periods.
    changed: bool,
    report: Option<DbApplyReport>,
    attempts: u32,
    error: Option<String>,
    note: Option<String>,
}

/// Applies this run, only when something changed; records `db_apply` in
/// `manifest` (reloaded after the apply wrote it).
async fn apply_this_run(
    opts: &FlowOptions,
    manifest: &mut RunManifest,
) -> Result<ApplyStep, Error> {
    let dir = &opts.sync.data_dir;
    let run_id = manifest.run_id.clone();
    let changed = manifest.tables.values().any(|r| {
        !r.changed_tids.is_empty() || r.deleted_tids.as_ref().is_some_and(|d| !d.is_empty())
    });
    let mut step = ApplyStep {
        changed,
        report: None,
        attempts: 0,
        error: None,
        note: None,
    };
    if manifest.status == RunStatus::Failed {
        step.note = Some("sync failed: apply not run".into());
    } else if !changed {
        let report = DbApplyReport::no_changed_tids(run_id);
        manifest.db_apply = Some(report.clone());
        manifest.save(dir)?;
        step.report = Some(report);
        step.note = Some("no table has changed periods: nothing to apply".into());
    } else if let Some(url) = &opts.database_url {
        let (result, n) = apply_with_retries(url, dir, &run_id, opts).await?;
        step.attempts = n;
        match result {
            Ok(rep) => step.report = Some(rep),
            Err(e) => step.error = Some(e),
        }
        *manifest = RunManifest::load(dir, &run_id)?;
    } else {
        let note = "no database URL given: the DB apply was NOT run (run statbank-apply later)";
        tracing::warn!("{note}");
        step.note = Some(note.into());
        let mut report = DbApplyReport::no_changed_tids(run_id);
        report.reason = Some("no_database_url".into());
        manifest.db_apply = Some(report);
    }
    Ok(step)
}

/// Applies one run with the configured retries. Returns the last report,
/// or the last error (the password scrubbed) when no report could be
/// produced, and the attempts made.
async fn apply_with_retries(
    url: &DatabaseUrl,
    dir: &sync_state::DataDir,
    run: &RunId,
    opts: &FlowOptions,
) -> Result<(Result<DbApplyReport, String>, u32), Error> {
    with_retries(
        "apply",
        &opts.apply_retry_delays,
        &opts.sync.stop,
        async |n| {
            let (u, d, r, o) = (
                url.clone(),
                dir.clone(),
                run.clone(),
                opts.apply.clone(),
            );
            let res = tokio::task::spawn_blocking(move || apply_blocking(&u, &d, &r, &o))
                .await
                .map_err(|e| Error::Internal(format!("apply task failed: {e}")))?;
            Ok(match res {
                Ok(rep) if rep.status != RunStatus::Failed => Attempt::Done(Ok(rep)),
                Ok(rep) => {
                    tracing::warn!(run = %run, attempt = n, failed = %failed_apply_tables(&rep), "apply attempt failed");
                    Attempt::Again(Ok(rep))
                }
                Err(e) => {
                    let msg = url.scrub(&error_chain(&e));
                    tracing::warn!(run = %run, attempt = n, error = %msg, "apply attempt failed");
                    Attempt::Again(Err(msg))
                }
            })
        },
    )
    .await
}

/// `TABLE (reason): error; …` of the failed tables of an apply.
fn failed_apply_tables(rep: &DbApplyReport) -> String {
    let failed: Vec<String> = rep
        .tables
        .iter()
        .flatten()
        .filter(|t| t.status == sync_state::ApplyStatus::Failed)
        .map(|t| {
            format!(
                "{} ({}): {}",
                t.table,
                t.reason.as_deref().unwrap_or("failed"),
                t.error.as_deref().unwrap_or("")
            )
        })
        .collect();
    if failed.is_empty() {
        rep.reason.clone().unwrap_or_default()
    } else {
        failed.join("; ")
    }
}

/// Failed tables at WARN, one line each, so log-based alerting sees them.
fn log_failures(report: &FlowReport) {
    for (id, r) in &report.manifest.tables {
        if r.status == TableStatus::Failed {
            tracing::warn!(table = %id, error = r.error.as_deref().unwrap_or(""), "table failed to sync");
        }
    }
    for t in report.apply.iter().flat_map(|a| a.tables.iter().flatten()) {
        if t.status == sync_state::ApplyStatus::Failed {
            tracing::warn!(table = %t.table, reason = t.reason.as_deref().unwrap_or(""), error = t.error.as_deref().unwrap_or(""), "table failed to apply");
        }
    }
}

impl ApplyStep {
    /// The flow's status: the sync's, and this apply's when the run
    /// changed something (an apply that failed after a clean sync makes a
    /// partial failure; after a partial one, a failure).
    fn flow_status(&self, sync: RunStatus) -> RunStatus {
        if sync == RunStatus::Failed {
            return RunStatus::Failed;
        }
        let apply_status = match &self.report {
            _ if self.error.is_some() => RunStatus::Failed,
            Some(a) => a.status,
            None => RunStatus::Skipped,
        };
        match (sync, apply_status) {
            (_, RunStatus::Failed) if self.changed => {
                if sync == RunStatus::PartialFailure {
                    RunStatus::Failed
                } else {
                    RunStatus::PartialFailure
                }
            }
            (RunStatus::PartialFailure, _) | (_, RunStatus::PartialFailure) => {
                RunStatus::PartialFailure
            }
            (RunStatus::Skipped, RunStatus::Skipped) => RunStatus::Skipped,
            _ => RunStatus::Success,
        }
    }
}

/// The synchronous apply (never on an async worker thread).
fn apply_blocking(
    url: &DatabaseUrl,
    dir: &sync_state::DataDir,
    run: &RunId,
    opts: &ApplyOptions,
) -> Result<DbApplyReport, Error> {
    let mut client = url.connect("statbank-flow")?;
    Ok(fact_apply::apply_run(&mut client, dir, run, opts)?)
}

/// Reconciles (and repairs, when asked) after the apply, when
/// `reconcile_every` runs have passed since the last reconcile report.
async fn reconcile_if_due(
    opts: &FlowOptions,
    sync: RunStatus,
) -> Result<Option<FlowReconcile>, Error> {
    let Some(url) = &opts.database_url else {
        return Ok(None);
    };
    let dir = opts.sync.data_dir.clone();
    if opts.reconcile_every == 0
        || sync == RunStatus::Failed
        || !reconcile_due(&dir, opts.reconcile_every)
    {
        return Ok(None);
    }
    let now = sync_state::UtcSecond::new(opts.sync.clock.now());
    let id = ReconcileReport::unused_id(&dir, now)?;
    let ropts = fact_apply::ReconcileOptions {
        apply: opts.apply.clone(),
        tables: None,
        repair: opts.reconcile_repair,
        read_connection: Some(url.read_config("statbank-flow")?),
    };
    tracing::info!(reconcile = %id, repair = opts.reconcile_repair, "reconciling the database with the mirror");
    let (u, rid) = (url.clone(), id.clone());
    let result = tokio::task::spawn_blocking(move || {
        let mut client = u.connect("statbank-flow")?;
        Ok::<_, Error>(fact_apply::reconcile(&mut client, &dir, &rid, &ropts)?)
    })
    .await
    .map_err(|e| Error::Internal(format!("reconcile task failed: {e}")))?;
    Ok(Some(match result {
        Ok(r) => FlowReconcile {
            reconcile_id: Some(r.reconcile_id),
            status: Some(r.status),
            summary: Some(r.summary),
            error: None,
        },
        Err(e) => {
            let msg = url.scrub(&error_chain(&e));
            tracing::warn!(error = %msg, "the reconcile could not run");
            FlowReconcile {
                reconcile_id: None,
                status: None,
                summary: None,
                error: Some(msg),
            }
        }
    }))
}

/// Whether `every` runs (this one included) have passed since the last
/// one whose flow reconciled (or none did); runs are read newest first.
fn reconcile_due(dir: &sync_state::DataDir, every: u32) -> bool {
    let runs = sync_state::list_runs(dir).unwrap_or_default();
    let mut since = 0usize;
    for id in runs.iter().rev() {
        let reconciled = RunManifest::load(dir, id)
            .ok()
            .and_then(|m| m.flow)
            .is_some_and(|f| f.reconcile.is_some());
        if reconciled {
            break;
        }
        since += 1;
        if since >= every as usize {
            return true;
        }
    }
    since >= every as usize || since == runs.len()
}

/// Records the flow's own section in the manifest and saves it.
fn record_flow(report: &mut FlowReport, dir: &sync_state::DataDir) -> Result<(), Error> {
    report.manifest.flow = Some(FlowSection {
        status: report.status,
        sync_attempts: report.sync_attempts,
        apply_attempts: report.apply_attempts,
        apply_error: report.apply_error.clone(),
        apply_note: report.apply_note.clone(),
        earlier_runs_applied: report.earlier_runs.clone(),
        sync_seconds: report.sync_seconds,
        apply_seconds: report.apply_seconds,
        alert: report.alert.clone(),
        reconcile: report.reconcile.clone(),
    });
    report.manifest.save(dir)?;
    Ok(())
}

/// Writes and pushes the metrics, as configured; failures are logged.
async fn emit_metrics(opts: &FlowOptions, report: &FlowReport, client: ClientStats) {
    if opts.metrics_file.is_none() && opts.metrics_push_url.is_none() {
        return;
    }
    let dir = &opts.sync.data_dir;
    let state = match sync_state::SyncState::load(dir) {
        Ok(s) => Some(s),
        Err(e) => {
            tracing::warn!(error = %error_chain(&e), "metrics: cannot read the sync state");
            None
        }
    };
    let pending_runs = match sync_state::pending_runs(dir) {
        Ok(r) => Some(r.len()),
        Err(e) => {
            tracing::warn!(error = %error_chain(&e), "metrics: cannot count the runs awaiting an apply");
            None
        }
    };
    let last_reconcile = ReconcileReport::latest(dir).ok().flatten();
    let input = MetricsInput {
        report,
        client,
        now: opts.sync.clock.now(),
        state: state.as_ref(),
        pending_runs,
        last_success: last_success(dir),
        scheduled: opts.scheduled,
        last_reconcile: last_reconcile.as_ref(),
    };
    if let Err(e) = write_metrics(
        opts.metrics_file.as_deref(),
        opts.metrics_push_url.as_deref(),
        &input,
    )
    .await
    {
        tracing::error!(error = %error_chain(&e), "cannot write metrics");
    }
}

/// When the newest run whose flow ended `success` finished, from the
/// manifests (newest first, stopping at the first).
fn last_success(dir: &sync_state::DataDir) -> Option<DateTime<Utc>> {
    let runs = sync_state::list_runs(dir).ok()?;
    runs.iter().rev().find_map(|id| {
        let m = RunManifest::load(dir, id).ok()?;
        let ok = m.flow?.status == RunStatus::Success;
        ok.then(|| m.finished_at.unwrap_or(m.started_at).get())
    })
}

/// Sleeps `d`, waking early (and returning `false`) when `stop` is raised.
pub async fn sleep_unless_stopped(d: Duration, stop: &StopSignal) -> bool {
    let deadline = tokio::time::Instant::now() + d;
    loop {
        if stop.is_stopped() {
            return false;
        }
        let now = tokio::time::Instant::now();
        if now >= deadline {
            return true;
        }
        tokio::time::sleep((deadline - now).min(Duration::from_millis(200))).await;
    }
}

/// Why this run is worth an alert, if it is: its reconcile found the
/// database differing from the mirror (repaired or not: something changed
/// it behind the apply's back) or could not run, it failed or partially
/// failed, or a scheduled run was skipped by the weekly gate (the schedule
/// expected a catalog poll).
fn alert_reason(report: &FlowReport, scheduled: bool) -> Option<String> {
    if let Some(r) = &report.reconcile {
        let found = r
            .summary
            .as_ref()
            .is_some_and(|s| s.tables_differ + s.tables_repaired + s.tables_failed > 0);
        if let Some(e) = &r.error {
            return Some(format!(
                "{}: the reconcile could not run: {e}",
                report.status
            ));
        }
        if found {
            return Some(format!(
                "{}: the reconcile found the database differing from the mirror ({})",
                report.status,
                r.status.map_or("failed", |s| s.as_str())
            ));
        }
    }
    match report.status {
        RunStatus::Failed | RunStatus::PartialFailure => Some(report.status.to_string()),
        RunStatus::Skipped
            if scheduled && report.manifest.catalog.reason.as_deref() == Some("weekly_gate") =>
        {
            let last = report
                .manifest
                .catalog
                .last_catalog_poll_at
                .map(|t| t.to_string())
                .unwrap_or_default();
            tracing::warn!(last_catalog_poll_at = %last, "a scheduled run was skipped by the weekly gate: the catalog was polled too recently");
            Some(format!(
                "scheduled run skipped by the weekly gate (catalog last polled {last})"
            ))
        }
        _ => None,
    }
}

/// This machine's name, for the alert (empty when unknown).
fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_string())
        .unwrap_or_default()
}

/// The alert body: chat-ready `text` (Slack, Teams, Mattermost and most
/// webhook receivers show it), and the details as fields.
fn alert_body(report: &FlowReport, reason: &str, dir: &sync_state::DataDir) -> serde_json::Value {
    let m = &report.manifest;
    let host = host_name();
    let manifest = dir.display_key(&dir.manifest_key(&report.run_id));
    let failed: Vec<_> = m
        .tables
        .iter()
        .filter(|(_, r)| r.status == TableStatus::Failed)
        .map(|(id, r)| json!({"table": id, "error": r.error}))
        .collect();
    let apply_failed: Vec<_> = report
        .apply
        .iter()
        .flat_map(|a| a.tables.iter().flatten())
        .filter(|t| t.status == sync_state::ApplyStatus::Failed)
        .map(|t| json!({"table": t.table, "reason": t.reason, "error": t.error}))
        .collect();
    let earlier_failed: Vec<&EarlierRun> = report
        .earlier_runs
        .iter()
        .filter(|r| !r.succeeded())
        .collect();
    let mut text = alert_headline(report, reason, &host);
    alert_failures(&mut text, report, &earlier_failed);
    let _ = std::fmt::Write::write_fmt(
        &mut text,
        format_args!("\nmanifest: {}", crate::redact::chat_escape(&manifest)),
    );
    json!({
        "text": text,
        "source": "statbank-sync",
        "host": host,
        "data_dir": dir.describe(),
        "manifest": manifest,
        "time": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        "reason": reason,
        "run_id": report.run_id,
        "status": report.status,
        "sync_status": report.sync_status,
        "sync_error": m.error,
        "failed_tables": failed,
        "apply_error": report.apply_error,
        "apply_failed_tables": apply_failed,
        "earlier_runs_failed": earlier_failed,
        "summary": m.summary,
    })
}

/// The alert's first line: host, run, why. Every piece of text from a
/// record or from upstream in the alert is escaped for the chat format
/// (`<!channel>`, disguised links) and kept on its line.
fn alert_headline(report: &FlowReport, reason: &str, host: &str) -> String {
    let esc = crate::redact::chat_escape;
    format!(
        "statbank-sync on {}: run {} {}",
        if host.is_empty() {
            "?".into()
        } else {
            esc(host)
        },
        report.run_id,
        esc(reason)
    )
}

/// One line per failure: the sync's, up to five tables', the apply's, and
/// each earlier run still not applied.
fn alert_failures(text: &mut String, report: &FlowReport, earlier_failed: &[&EarlierRun]) {
    use std::fmt::Write;
    let esc = crate::redact::chat_escape;
    let m = &report.manifest;
    if let Some(e) = &m.error {
        let _ = write!(text, "\nsync failed: {}", esc(e));
    }
    let failed: Vec<_> = m
        .tables
        .iter()
        .filter(|(_, r)| r.status == TableStatus::Failed)
        .collect();
    for (id, r) in failed.iter().take(5) {
        let _ = write!(
            text,
            "\n• {id}: {}",
            esc(r.error.as_deref().unwrap_or("failed"))
        );
    }
    if failed.len() > 5 {
        let _ = write!(
            text,
            "\n• … {} more tables failed to sync",
            failed.len() - 5
        );
    }
    if let Some(a) = &report.apply {
        if a.status == RunStatus::Failed || a.status == RunStatus::PartialFailure {
            let _ = write!(
                text,
                "\napply {}: {}",
                a.status,
                esc(&failed_apply_tables(a))
            );
        }
    }
    if let Some(e) = &report.apply_error {
        let _ = write!(text, "\napply failed: {}", esc(e));
    }
    for r in earlier_failed {
        let (run, why) = match r {
            EarlierRun::Applied {
                run_id,
                status,
                error,
                ..
            } => (
                run_id.as_str(),
                error
                    .clone()
                    .or_else(|| status.map(|s| s.as_str().to_string()))
                    .unwrap_or_else(|| "failed".into()),
            ),
            EarlierRun::Unlisted { error } => ("?", error.clone()),
        };
        let _ = write!(
            text,
            "\nearlier run {} still not applied: {}",
            esc(run),
            esc(&why)
        );
    }
}

/// POSTs the alert (three tries on network errors and 5xx). Only the
/// webhook's scheme and host are ever logged or recorded.
async fn send_alert(
    url: &str,
    report: &FlowReport,
    reason: &str,
    dir: &sync_state::DataDir,
) -> AlertOutcome {
    let body = alert_body(report, reason, dir);
    let shown = url_origin(url);
    let mut last = AlertOutcome {
        url: shown.clone(),
        delivered: false,
        http_status: None,
        error: None,
    };
    let client = match reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
    {
        Ok(c) => c,
        Err(e) => {
            last.error = Some(error_chain(&e));
            return last;
        }
    };
    for attempt in 0..3 {
        if attempt > 0 {
            tokio::time::sleep(Duration::from_millis(500 * attempt)).await;
        }
        match client.post(url).json(&body).send().await {
            Ok(resp) => {
                let status = resp.status();
                last.http_status = Some(status.as_u16());
                if status.is_success() {
                    last.delivered = true;
                    last.error = None;
                    tracing::info!(url = %shown, "alert delivered");
                    return last;
                }
                last.error = Some(format!("http status {status}"));
                if status.is_client_error() {
                    break;
                }
            }
            Err(e) => {
                // reqwest errors name the URL: keep only its origin.
                let text = error_chain(&e.without_url());
                last.error = Some(text.replace(url, "<webhook url>"));
            }
        }
    }
    tracing::error!(url = %shown, error = last.error.as_deref().unwrap_or(""), "alert not delivered");
    last
}

/// The next time `cron` (UTC; 5 fields, or 6 with seconds) fires strictly
/// after `after`.
pub fn next_fire(cron: &croner::Cron, after: DateTime<Utc>) -> Result<DateTime<Utc>, Error> {
    cron.find_next_occurrence(&after, false)
        .map_err(|e| Error::Internal(format!("cron pattern has no next occurrence: {e}")))
}

/// Parses a cron pattern, naming it in the error.
pub fn parse_cron(pattern: &str) -> Result<croner::Cron, Error> {
    pattern
        .parse::<croner::Cron>()
        .map_err(|e| Error::Internal(format!("invalid cron schedule {pattern:?}: {e}")))
}

/// Runs the flow on `cron` until `stop` is raised (or `max_runs` runs).
/// Runs never overlap: the next fire time is computed after a run ends, and
/// fire times missed while a run was going are skipped (logged).
pub async fn run_schedule(
    client: &StatbankClient,
    opts: &FlowOptions,
    cron: &croner::Cron,
    max_runs: Option<usize>,
    mut on_report: impl FnMut(&Result<FlowReport, Error>),
) -> Result<usize, Error> {
    let mut runs = 0usize;
    let mut last_fire: Option<DateTime<Utc>> = None;
    loop {
        let now = Utc::now();
        let next = next_fire(cron, now)?;
        if let Some(fired) = last_fire {
            // Fire times that passed while the last run was going.
            let missed = next_fire(cron, fired)?;
            if missed < now {
                tracing::warn!(missed = %missed.to_rfc3339(), "a scheduled run was skipped: the previous run was still going");
            }
        }
        last_fire = Some(next);
        tracing::info!(next_run = %next.to_rfc3339(), "next scheduled run");
        let wait = (next - now).to_std().unwrap_or(Duration::ZERO);
        if !sleep_unless_stopped(wait, &opts.sync.stop).await {
            tracing::info!("stop requested: schedule ended");
            return Ok(runs);
        }
        let mut o = opts.clone();
        o.sync.run_id = None;
        o.scheduled = true;
        let result = run_flow(client, &o).await;
        runs += 1;
        on_report(&result);
        if max_runs.is_some_and(|m| runs >= m) || opts.sync.stop.is_stopped() {
            return Ok(runs);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn t(y: i32, mo: u32, d: u32, h: u32, mi: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(y, mo, d, h, mi, 0)
            .single()
            .expect("time")
    }

    #[test]
    fn weekly_default_fires_sunday_22_utc() {
        let cron = parse_cron("0 22 * * 0").expect("cron");
        // 2026-11-26 is a Thursday.
        assert_eq!(
            next_fire(&cron, t(2026, 11, 26, 1, 0)).expect("next"),
            t(2026, 11, 29, 22, 0)
        );
        // Exactly at the fire time: the next one, a week later.
        assert_eq!(
            next_fire(&cron, t(2026, 11, 29, 22, 0)).expect("next"),
            t(2026, 12, 6, 22, 0)
        );
        assert!(parse_cron("not a cron").is_err());
    }

    fn report(status: RunStatus) -> DbApplyReport {
        let mut r = DbApplyReport::no_changed_tids(RunId::new("r").expect("id"));
        r.status = status;
        r
    }

    #[test]
    fn combined_status() {
        use RunStatus::*;
        let step = |apply: Option<RunStatus>, failed: bool, changed: bool| ApplyStep {
            changed,
            report: apply.map(report),
            attempts: 1,
            error: failed.then(|| "connection refused".to_string()),
            note: None,
        };
        assert_eq!(step(None, false, false).flow_status(Failed), Failed);
        assert_eq!(
            step(Some(Skipped), false, false).flow_status(Success),
            Success
        );
        assert_eq!(
            step(Some(Skipped), false, false).flow_status(Skipped),
            Skipped
        );
        assert_eq!(
            step(Some(Success), false, true).flow_status(Success),
            Success
        );
        assert_eq!(
            step(Some(PartialFailure), false, true).flow_status(Success),
            PartialFailure
        );
        assert_eq!(step(None, true, true).flow_status(Success), PartialFailure);
        assert_eq!(
            step(Some(Success), false, true).flow_status(PartialFailure),
            PartialFailure
        );
        assert_eq!(step(None, true, true).flow_status(PartialFailure), Failed);
    }
}
