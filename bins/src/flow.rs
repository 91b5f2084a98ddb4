//! `run_flow`: the original Prefect flow as a library function — the sync
//! cycle with retries, then the DB apply (with its own retry) only when some
//! table changed, then metrics and an alert. Also the cron schedule loop.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use fact_apply::postgres::{Config, NoTls};
use fact_apply::ApplyOptions;
use serde_json::json;
use statbank_client::{error_chain, ClientStats, StatbankClient};
use sync_state::{DbApplyReport, RunId, RunManifest, RunStatus, TableStatus};

use crate::metrics::{write_metrics, MetricsInput};
use crate::{password_of, redact_url, run_sync_cycle, scrub, Error, StopSignal, SyncOptions};

/// Settings of one flow run.
#[derive(Clone)]
pub struct FlowOptions {
    /// The sync cycle's settings.
    pub sync: SyncOptions,
    /// Postgres connection string; `None` = sync to disk only.
    pub database_url: Option<String>,
    /// The DB apply's settings.
    pub apply: ApplyOptions,
    /// Waits before the sync's retries (default 30 s, 120 s, 300 s: three retries).
    pub sync_retry_delays: Vec<Duration>,
    /// Waits before the apply's retries (default 60 s: one retry).
    pub apply_retry_delays: Vec<Duration>,
    /// POST a JSON summary here on `partial_failure` or `failed`.
    pub alert_webhook: Option<String>,
    /// Write Prometheus text-format metrics here after the run.
    pub metrics_file: Option<PathBuf>,
    /// Also PUT the metrics to this Pushgateway URL
    /// (e.g. `http://pushgateway:9091/metrics/job/statbank_sync`).
    pub metrics_push_url: Option<String>,
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
        }
    }
}

/// Whether the alert webhook received the summary.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct AlertOutcome {
    /// The webhook URL, credentials removed.
    pub url: String,
    /// A 2xx answer was received.
    pub delivered: bool,
    /// The HTTP status, when there was an answer.
    pub http_status: Option<u16>,
    /// Why delivery failed.
    pub error: Option<String>,
}

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
}

/// Runs the flow once. `Err` only when not even a manifest could be written
/// (for example the data folder is locked by another run).
pub async fn run_flow(client: &StatbankClient, opts: &FlowOptions) -> Result<FlowReport, Error> {
    let dir = opts.sync.data_dir.clone();
    let stats_before = client.stats();

    // 1. Sync, retried while the run as a whole fails (catalog unreachable,
    //    disk error). Per-table failures are not retried here: the tables
    //    keep their old state and the next cycle retries them.
    let sync_started = Instant::now();
    let mut attempts = 0u32;
    let mut last_err: Option<Error> = None;
    let mut manifest: Option<RunManifest> = None;
    loop {
        attempts += 1;
        match run_sync_cycle(client, &opts.sync).await {
            Ok(m) if m.status != RunStatus::Failed => {
                manifest = Some(m);
                break;
            }
            Ok(m) => {
                tracing::warn!(attempt = attempts, run = %m.run_id, error = m.error.as_deref().unwrap_or(""), "sync attempt failed");
                manifest = Some(m);
            }
            Err(e) if e.is_locked() => return Err(e),
            Err(e) => {
                tracing::warn!(attempt = attempts, error = %error_chain(&e), "sync attempt failed");
                last_err = Some(e);
            }
        }
        let Some(wait) = opts.sync_retry_delays.get(attempts as usize - 1) else {
            break;
        };
        tracing::info!(wait_secs = wait.as_secs_f64(), "retrying the sync");
        if !sleep_unless_stopped(*wait, &opts.sync.stop).await {
            break;
        }
    }
    let sync_seconds = sync_started.elapsed().as_secs_f64();
    let Some(mut manifest) = manifest else {
        return Err(last_err.unwrap_or_else(|| Error::Internal("no sync attempt ran".into())));
    };
    let run_id = manifest.run_id.clone();
    let sync_status = manifest.status;

    // 2a. Earlier runs whose apply failed or never ran: their periods are
    //     not in this run's changed_tids, so they are applied first, oldest
    //     first (each against the current partitions, which is correct:
    //     the partitions are the truth).
    let mut earlier: Vec<serde_json::Value> = Vec::new();
    let mut earlier_failed = false;
    if let (Some(url), false) = (&opts.database_url, sync_status == RunStatus::Failed) {
        for run in sync_state::pending_runs(&dir)?
            .into_iter()
            .filter(|r| *r != run_id)
        {
            tracing::info!(run = %run, "applying an earlier run whose apply had not succeeded");
            let (rep, err, n) = apply_with_retries(url, &dir, &run, opts).await?;
            let status = rep.as_ref().map(|r| r.status);
            if err.is_some() || status.is_some_and(|s| !s.is_ok()) {
                earlier_failed = true;
            }
            earlier.push(json!({"run_id": run, "status": status, "error": err, "attempts": n}));
        }
    }

    // 2. Apply, only when something changed.
    let changed = manifest.tables.values().any(|r| {
        !r.changed_tids.is_empty() || r.deleted_tids.as_ref().is_some_and(|d| !d.is_empty())
    });
    let apply_started = Instant::now();
    let mut apply: Option<DbApplyReport> = None;
    let mut apply_attempts = 0u32;
    let mut apply_error: Option<String> = None;
    let mut apply_note: Option<String> = None;
    if sync_status == RunStatus::Failed {
        apply_note = Some("sync failed: apply not run".into());
    } else if !changed {
        let report = DbApplyReport::no_changed_tids(run_id.clone());
        manifest.db_apply = Some(report.clone());
        manifest.save(&dir)?;
        apply = Some(report);
        apply_note = Some("no table has changed periods: nothing to apply".into());
    } else if let Some(url) = &opts.database_url {
        let (rep, err, n) = apply_with_retries(url, &dir, &run_id, opts).await?;
        apply = rep;
        apply_error = err;
        apply_attempts = n;
        // apply_run wrote db_apply into the manifest: reload it.
        manifest = RunManifest::load(&dir, &run_id)?;
    } else {
        let note = "no database URL given: the DB apply was NOT run (run statbank-apply later)";
        tracing::warn!("{note}");
        apply_note = Some(note.into());
        let mut report = DbApplyReport::no_changed_tids(run_id.clone());
        report.reason = Some("no_database_url".into());
        manifest.db_apply = Some(report);
    }
    let apply_seconds = apply_started.elapsed().as_secs_f64();

    let mut status = combine(sync_status, apply.as_ref(), apply_error.is_some(), changed);
    if earlier_failed && status.is_ok() {
        status = RunStatus::PartialFailure;
    }
    let mut report = FlowReport {
        run_id: run_id.clone(),
        status,
        sync_status,
        sync_attempts: attempts,
        apply,
        apply_attempts,
        apply_error,
        apply_note,
        alert: None,
        sync_seconds,
        apply_seconds,
        manifest: manifest.clone(),
    };

    // 3. Alert, then record the flow in the manifest.
    if matches!(status, RunStatus::PartialFailure | RunStatus::Failed) {
        if let Some(url) = &opts.alert_webhook {
            report.alert = Some(send_alert(url, &report).await);
        }
    }
    manifest.extra.insert(
        "flow".into(),
        json!({
            "status": status,
            "sync_attempts": attempts,
            "apply_attempts": apply_attempts,
            "apply_error": report.apply_error,
            "apply_note": report.apply_note,
            "earlier_runs_applied": earlier,
            "sync_seconds": sync_seconds,
            "apply_seconds": apply_seconds,
            "alert": report.alert,
        }),
    );
    manifest.save(&dir)?;
    report.manifest = manifest;

    // 4. Metrics.
    let stats = client.stats();
    let delta = ClientStats {
        requests: stats.requests - stats_before.requests,
        retries: stats.retries - stats_before.retries,
        bytes: stats.bytes - stats_before.bytes,
    };
    if opts.metrics_file.is_some() || opts.metrics_push_url.is_some() {
        let input = MetricsInput {
            report: &report,
            client: delta,
            now: opts.sync.clock.now(),
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
    tracing::info!(run = %run_id, status = %status, "flow finished: {status}");
    Ok(report)
}

/// Applies one run with the configured retries. Returns the last report,
/// the last error (when no report could be produced) and the attempts made.
async fn apply_with_retries(
    url: &str,
    dir: &sync_state::DataDir,
    run: &RunId,
    opts: &FlowOptions,
) -> Result<(Option<DbApplyReport>, Option<String>, u32), Error> {
    let secret = password_of(url);
    let mut attempts = 0u32;
    let mut report = None;
    let mut error: Option<String>;
    loop {
        attempts += 1;
        let (u, d, r, o) = (
            url.to_string(),
            dir.clone(),
            run.clone(),
            opts.apply.clone(),
        );
        let res = tokio::task::spawn_blocking(move || apply_blocking(&u, &d, &r, &o))
            .await
            .map_err(|e| Error::Internal(format!("apply task failed: {e}")))?;
        match res {
            Ok(rep) if rep.status != RunStatus::Failed => {
                return Ok((Some(rep), None, attempts));
            }
            Ok(rep) => {
                tracing::warn!(run = %run, attempt = attempts, "apply attempt failed");
                report = Some(rep);
                error = None;
            }
            Err(e) => {
                let msg = scrub(&e, secret.as_deref());
                tracing::warn!(run = %run, attempt = attempts, error = %msg, "apply attempt failed");
                error = Some(msg);
            }
        }
        let Some(wait) = opts.apply_retry_delays.get(attempts as usize - 1) else {
            return Ok((report, error, attempts));
        };
        tracing::info!(wait_secs = wait.as_secs_f64(), "retrying the apply");
        if !sleep_unless_stopped(*wait, &opts.sync.stop).await {
            return Ok((report, error, attempts));
        }
    }
}

fn combine(
    sync: RunStatus,
    apply: Option<&DbApplyReport>,
    apply_error: bool,
    changed: bool,
) -> RunStatus {
    if sync == RunStatus::Failed {
        return RunStatus::Failed;
    }
    let apply_status = match apply {
        _ if apply_error => RunStatus::Failed,
        Some(a) => a.status,
        None => RunStatus::Skipped,
    };
    match (sync, apply_status) {
        (_, RunStatus::Failed) if changed => {
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

/// The synchronous apply (never on an async worker thread).
fn apply_blocking(
    url: &str,
    dir: &sync_state::DataDir,
    run: &RunId,
    opts: &ApplyOptions,
) -> Result<DbApplyReport, String> {
    let shown = redact_url(url);
    let mut config: Config = url
        .parse()
        .map_err(|_| format!("invalid database URL {shown}"))?;
    if config.get_application_name().is_none() {
        config.application_name("statbank-flow");
    }
    let mut client = config
        .connect(NoTls)
        .map_err(|e| format!("connecting to {shown}: {}", error_chain(&e)))?;
    fact_apply::apply_run(&mut client, dir, run, opts)
        .map_err(|e| format!("applying run {run}: {}", error_chain(&e)))
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

async fn send_alert(url: &str, report: &FlowReport) -> AlertOutcome {
    let m = &report.manifest;
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
    let body = json!({
        "source": "statbank-sync",
        "run_id": report.run_id,
        "status": report.status,
        "sync_status": report.sync_status,
        "sync_error": m.error,
        "failed_tables": failed,
        "apply_error": report.apply_error,
        "apply_failed_tables": apply_failed,
        "summary": m.summary,
    });
    let shown = redact_url(url);
    let client = match reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
    {
        Ok(c) => c,
        Err(e) => {
            return AlertOutcome {
                url: shown,
                delivered: false,
                http_status: None,
                error: Some(error_chain(&e)),
            }
        }
    };
    let mut last = AlertOutcome {
        url: shown.clone(),
        delivered: false,
        http_status: None,
        error: None,
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
                // reqwest errors include the URL: scrub it.
                last.error = Some(scrub(&error_chain(&e), Some(url)).replace(url, &shown));
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
    loop {
        let now = Utc::now();
        let next = next_fire(cron, now)?;
        tracing::info!(next_run = %next.to_rfc3339(), "next scheduled run");
        let wait = (next - now).to_std().unwrap_or(Duration::ZERO);
        if !sleep_unless_stopped(wait, &opts.sync.stop).await {
            tracing::info!("stop requested: schedule ended");
            return Ok(runs);
        }
        let mut o = opts.clone();
        o.sync.run_id = None;
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
        assert_eq!(combine(Failed, None, false, false), Failed);
        assert_eq!(
            combine(Success, Some(&report(Skipped)), false, false),
            Success
        );
        assert_eq!(
            combine(Skipped, Some(&report(Skipped)), false, false),
            Skipped
        );
        assert_eq!(
            combine(Success, Some(&report(Success)), false, true),
            Success
        );
        assert_eq!(
            combine(Success, Some(&report(PartialFailure)), false, true),
            PartialFailure
        );
        assert_eq!(combine(Success, None, true, true), PartialFailure);
        assert_eq!(
            combine(PartialFailure, Some(&report(Success)), false, true),
            PartialFailure
        );
        assert_eq!(combine(PartialFailure, None, true, true), Failed);
    }
}
