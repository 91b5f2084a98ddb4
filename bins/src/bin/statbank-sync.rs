//! `statbank-sync`: one sync cycle of the StatBank mirror (guide §1–§7).
//!
//! ```text
//! statbank-sync [--data-dir DIR] [--base-url URL] [--force-catalog-poll]
//!               [--run-id ID] [--tables ID,ID] [--max-tables N]
//!               [--prune-deleted-periods] [--log-format text|json]
//! ```
//!
//! Exit status: 0 for `success` and `skipped`, 2 for `partial_failure`,
//! 1 for `failed` (or when the run could not start, e.g. the lock is held).
//! The run manifest is written in every case; its path is printed last.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result};
use bins::cli::{init_logging, stop_on_signals, sync_summary, LogFormat, Progress};
use bins::{run_sync_cycle, StopSignal, SyncOptions};
use clap::Parser;
use statbank_client::{StatbankClient, DEFAULT_BASE_URL};
use sync_state::{RunId, RunStatus, TableId};

/// Mirror Statistics Denmark's StatBank into Tid-partitioned Parquet files,
/// fetching only what changed.
#[derive(Debug, Parser)]
#[command(name = "statbank-sync", version)]
struct Args {
    /// The data folder (partitions, state.json, run manifests).
    #[arg(long, env = "STATBANK_DATA_DIR", default_value = "data/dst")]
    data_dir: std::path::PathBuf,
    /// The StatBank API base URL (the emulator: http://127.0.0.1:8080/v1).
    #[arg(long, env = "STATBANK_BASE_URL", default_value = DEFAULT_BASE_URL)]
    base_url: String,
    /// Poll the catalog even if the last poll is less than 7 days old.
    #[arg(long)]
    force_catalog_poll: bool,
    /// Run id (default: the UTC start time, e.g. 20260126T220000Z).
    #[arg(long)]
    run_id: Option<RunId>,
    /// Only these tables (comma-separated ids).
    #[arg(long, value_delimiter = ',')]
    tables: Option<Vec<TableId>>,
    /// At most this many tables (by id order).
    #[arg(long)]
    max_tables: Option<usize>,
    /// Remove partitions of periods that vanished from the API and report
    /// them as `deleted_tids` (the original never deletes).
    #[arg(long)]
    prune_deleted_periods: bool,
    /// Tables synced at once.
    #[arg(long, default_value_t = 2)]
    table_concurrency: usize,
    /// Maximum concurrent HTTP requests.
    #[arg(long, default_value_t = 2)]
    max_concurrent_requests: usize,
    /// Minimum milliseconds between request starts (politeness).
    #[arg(long, default_value_t = 100)]
    min_interval_ms: u64,
    /// Retries per request on connect errors, timeouts, 5xx and 429.
    #[arg(long, default_value_t = 4)]
    max_retries: usize,
    /// Request timeout in seconds (a BULK body may take long; this bounds
    /// the wait for response headers and for each chunk).
    #[arg(long, default_value_t = 120)]
    timeout_secs: u64,
    /// No progress bar, even on a terminal.
    #[arg(long)]
    no_progress: bool,
    /// Log format (logs go to stderr; the summary to stdout).
    #[arg(long, value_enum, default_value = "text")]
    log_format: LogFormat,
}

fn main() -> ExitCode {
    let args = Args::parse();
    init_logging(args.log_format);
    match run(args) {
        Ok(code) => code,
        Err(e) => {
            tracing::error!(error = %format!("{e:#}"), "statbank-sync failed");
            eprintln!("error: {e:#}");
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
    let client = StatbankClient::builder()
        .base_url(&args.base_url)
        .max_concurrent(args.max_concurrent_requests.max(1))
        .min_interval(Duration::from_millis(args.min_interval_ms))
        .max_retries(args.max_retries)
        .read_timeout(Duration::from_secs(args.timeout_secs))
        .build()
        .with_context(|| format!("building the client for {}", args.base_url))?;
    let stop = StopSignal::new();
    stop_on_signals(stop.clone());
    let progress = Progress::new(!args.no_progress);
    let mut opts = SyncOptions::new(&args.data_dir);
    opts.force_catalog_poll = args.force_catalog_poll;
    opts.run_id = args.run_id;
    opts.tables = args.tables;
    opts.max_tables = args.max_tables;
    opts.prune_deleted_periods = args.prune_deleted_periods;
    opts.table_concurrency = args.table_concurrency.max(1);
    opts.stop = stop;
    opts.progress = Some(progress.clone());
    tracing::info!(data_dir = %args.data_dir.display(), base_url = %args.base_url, "sync cycle starting");
    let manifest = run_sync_cycle(&client, &opts)
        .await
        .with_context(|| format!("sync cycle on {}", args.data_dir.display()))?;
    progress.finish();
    let path = opts.data_dir.manifest_file(&manifest.run_id);
    print!("{}", sync_summary(&manifest, &path));
    let stats = client.stats();
    tracing::info!(
        status = %manifest.status,
        requests = stats.requests,
        retries = stats.retries,
        bytes = stats.bytes,
        manifest = %path.display(),
        "sync finished: {}",
        manifest.status
    );
    Ok(exit_code(manifest.status))
}

fn exit_code(status: RunStatus) -> ExitCode {
    match status {
        RunStatus::Success | RunStatus::Skipped => ExitCode::SUCCESS,
        RunStatus::PartialFailure => ExitCode::from(2),
        RunStatus::Failed => ExitCode::FAILURE,
    }
}
