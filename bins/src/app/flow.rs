//! `statbank-flow`: the original weekly flow — sync with retries, then the DB
//! apply only when some table changed — once, or on a cron schedule.
//!
//! ```text
//! statbank-flow [sync flags of statbank-sync] [--database-url URL]
//!               [--schedule "0 22 * * 0"] [--metrics-file FILE]
//!               [--alert-webhook URL] [--scheduled] [--log-format text|json]
//! ```
//!
//! Exit status (one run): 0 for `success`/`skipped`, 2 for
//! `partial_failure`, 1 for `failed`. The last log line and the last printed
//! line name the status. With `--schedule` the process runs until SIGTERM or
//! ctrl-c and exits 0 after a clean stop.

use std::process::ExitCode;
use std::time::Duration;

use crate::cli::{exit_code, init_logging, stop_on_signals, LogFormat, Progress, SyncArgs};
use crate::flow::{parse_cron, run_flow, run_schedule, FlowOptions, FlowReport};
use crate::StopSignal;
use anyhow::{Context, Result};
use clap::Parser;

/// Sync StatBank to disk and apply the changed periods into Postgres.
#[derive(Debug, Parser)]
#[command(name = "statbank-flow", version)]
struct Args {
    #[command(flatten)]
    sync: SyncArgs,
    /// Postgres connection string; without it the flow syncs to disk only.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    database_url: Option<crate::redact::DatabaseUrl>,
    #[command(flatten)]
    apply: crate::cli::ApplyFlags,
    /// Seconds to wait before each sync retry (the count is the number of retries).
    #[arg(long, value_delimiter = ',', default_value = "30,120,300")]
    sync_retry_delays: Vec<u64>,
    /// Seconds to wait before each apply retry.
    #[arg(long, value_delimiter = ',', default_value = "60")]
    apply_retry_delays: Vec<u64>,
    /// Run on this cron schedule (UTC; 5 fields, or 6 with seconds) instead
    /// of once. The original deployment: "0 22 * * 0".
    #[arg(long, env = "STATBANK_SCHEDULE")]
    schedule: Option<String>,
    /// Write Prometheus metrics here after each run (textfile collector).
    #[arg(long, env = "STATBANK_METRICS_FILE")]
    metrics_file: Option<std::path::PathBuf>,
    /// Also PUT the metrics to this Pushgateway URL.
    #[arg(long, env = "STATBANK_METRICS_PUSH_URL", hide_env_values = true)]
    metrics_push_url: Option<String>,
    /// POST a JSON summary (with a chat-ready `text`) here when a run ends in
    /// partial_failure or failed, or a --scheduled run is skipped by the gate.
    #[arg(long, env = "STATBANK_ALERT_WEBHOOK", hide_env_values = true)]
    alert_webhook: Option<String>,
    /// This run was started by a scheduler (systemd timer, CronJob): a run
    /// the weekly gate skips then raises the alert. Implied by --schedule.
    #[arg(long, env = "STATBANK_SCHEDULED")]
    scheduled: bool,
    /// After the apply, reconcile the database with the mirror (every table,
    /// period by period) once every N runs (0 = never; weekly runs: 4 =
    /// monthly). A reconcile that finds differences raises the alert.
    #[arg(long, env = "STATBANK_RECONCILE_EVERY", default_value_t = 0)]
    reconcile_every: u32,
    /// Repair what the reconcile finds (re-apply exactly those periods).
    #[arg(long, requires = "reconcile_every")]
    reconcile_repair: bool,
    /// No progress bar, even on a terminal.
    #[arg(long)]
    no_progress: bool,
    /// Log format (logs go to stderr; the summary to stdout).
    #[arg(long, value_enum, default_value = "text")]
    log_format: LogFormat,
}

/// The program: parses `argv` (program name first) and runs it.
pub fn main<I, T>(argv: I) -> ExitCode
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    let args = Args::parse_from(argv);
    init_logging(args.log_format);
    let db = args.database_url.clone();
    match run(args) {
        Ok(code) => code,
        Err(e) => {
            let text = format!("{e:#}");
            let text = db.as_ref().map_or(text.clone(), |d| d.scrub(&text));
            let text = crate::redact::terminal_safe(&text);
            tracing::error!(error = %text, "statbank-flow failed");
            eprintln!("error: {text}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: Args) -> Result<ExitCode> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    rt.block_on(async_run(args))
}

async fn async_run(args: Args) -> Result<ExitCode> {
    let client = args.sync.client()?;
    let stop = StopSignal::new();
    stop_on_signals(stop.clone());
    let mut sync = args.sync.options()?;
    sync.stop = stop.clone();
    let mut opts = FlowOptions::new(sync);
    opts.database_url = args.database_url.clone();
    opts.apply = args.apply.options();
    opts.sync_retry_delays = args
        .sync_retry_delays
        .iter()
        .map(|s| Duration::from_secs(*s))
        .collect();
    opts.apply_retry_delays = args
        .apply_retry_delays
        .iter()
        .map(|s| Duration::from_secs(*s))
        .collect();
    opts.metrics_file = args.metrics_file.clone();
    opts.metrics_push_url = args.metrics_push_url.clone();
    opts.alert_webhook = args.alert_webhook.clone();
    opts.scheduled = args.scheduled;
    opts.reconcile_every = args.reconcile_every;
    opts.reconcile_repair = args.reconcile_repair;
    if opts.database_url.is_none() {
        tracing::warn!("no --database-url / DATABASE_URL: the flow syncs to disk only");
    }
    if let Some(pattern) = &args.schedule {
        let cron = parse_cron(pattern)?;
        tracing::info!(schedule = %pattern, "running on a schedule (UTC); ctrl-c or SIGTERM stops");
        let runs = run_schedule(&client, &opts, &cron, None, |r| match r {
            Ok(report) => print!("{}", crate::redact::terminal_lines(&summary(report))),
            Err(e) => tracing::error!(error = %statbank_client::error_chain(e), "flow run failed"),
        })
        .await?;
        tracing::info!(runs, "schedule stopped");
        return Ok(ExitCode::SUCCESS);
    }
    let progress = Progress::new(!args.no_progress);
    opts.sync.progress = Some(progress.clone());
    let report = run_flow(&client, &opts).await?;
    progress.finish();
    print!("{}", crate::redact::terminal_lines(&summary(&report)));
    Ok(exit_code(report.status))
}

fn summary(r: &FlowReport) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "sync: {} after {} attempt(s) in {:.1}s",
        r.sync_status, r.sync_attempts, r.sync_seconds
    );
    let m = &r.manifest;
    let _ = writeln!(
        out,
        "  tables: {} synced, {} unchanged, {} failed; {} changed ({} rows)",
        m.summary.tables_synced,
        m.summary.tables_skipped,
        m.summary.tables_failed,
        m.summary.tables_with_changed_tids,
        m.summary.rows_written
    );
    for (id, t) in m.tables.iter().filter(|(_, t)| t.error.is_some()).take(10) {
        let _ = writeln!(out, "  FAILED {id}: {}", t.error.as_deref().unwrap_or(""));
    }
    match (&r.apply, &r.apply_error) {
        (_, Some(e)) => {
            let _ = writeln!(
                out,
                "apply: failed after {} attempt(s): {e}",
                r.apply_attempts
            );
        }
        (Some(a), None) => {
            let _ = writeln!(
                out,
                "apply: {}{} ({} applied, {} skipped, {} failed)",
                a.status,
                a.reason
                    .as_deref()
                    .map(|x| format!(" ({x})"))
                    .unwrap_or_default(),
                a.summary.tables_applied,
                a.summary.tables_skipped,
                a.summary.tables_failed
            );
        }
        (None, None) => {}
    }
    if let Some(note) = &r.apply_note {
        let _ = writeln!(out, "  {note}");
    }
    if let Some(a) = &r.alert {
        let _ = writeln!(
            out,
            "alert to {}: {}",
            a.url,
            if a.delivered {
                "delivered"
            } else {
                "NOT delivered"
            }
        );
    }
    let _ = writeln!(out, "flow {}: {}", r.run_id, r.status);
    out
}
