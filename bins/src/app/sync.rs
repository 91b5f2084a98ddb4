//! `statbank-sync`: one sync cycle of the StatBank mirror (`docs/sync.md`).
//!
//! ```text
//! statbank-sync [--data-dir DIR] [--base-url URL] [--force-catalog-poll]
//!               [--run-id ID] [--tables ID,ID] [--max-tables N]
//!               [--prune-deleted-periods] [--vanished-tables keep|archive|delete]
//!               [--keep-vintages | --no-keep-vintages]
//!               [--verify-cycles N] [--verify-max-periods N]
//!               [--verify-max-rows N] [--verify-all] [--gate-grace-hours H]
//!               [--table-concurrency N] [--max-concurrent-requests N]
//!               [--min-interval-ms MS] [--max-retries N] [--timeout-secs S]
//!               [--max-response-mib MIB] [--bulk-timeout-secs S]
//!               [--languages da,en] [--refresh-metadata]
//!               [--no-progress] [--log-format text|json]
//! ```
//!
//! Each flag, its default and where its behaviour is described:
//! `docs/sync.md`, "Options".
//!
//! Exit status: 0 for `success` and `skipped`, 2 for `partial_failure`,
//! 1 for `failed` (or when the run could not start, e.g. the lock is held).
//! The run manifest is written in every case; its path is printed last.

use std::process::ExitCode;

use crate::cli::{
    exit_code, init_logging, stop_on_signals, sync_summary, LogFormat, Progress, SyncArgs,
};
use crate::{run_sync_cycle, StopSignal};
use anyhow::{Context, Result};
use clap::Parser;

/// Mirror Statistics Denmark's StatBank into Tid-partitioned Parquet files,
/// fetching only what changed.
#[derive(Debug, Parser)]
#[command(name = "statbank-sync", version)]
struct Args {
    #[command(flatten)]
    sync: SyncArgs,
    /// Only refresh the metadata: the tableinfo of every table (or
    /// --tables) in the languages besides Danish (--languages), checked
    /// against the cached Danish one; no catalog poll, no data requests.
    /// Tables whose metadata changed are applied for it by the next
    /// `statbank-apply --metadata`.
    #[arg(long)]
    refresh_metadata: bool,
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
    match run(args) {
        Ok(code) => code,
        Err(e) => {
            let text = crate::redact::terminal_safe(&format!("{e:#}"));
            tracing::error!(error = %text, "statbank-sync failed");
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
    let progress = Progress::new(!args.no_progress);
    let mut opts = args.sync.options()?;
    opts.refresh_metadata = args.refresh_metadata;
    opts.stop = stop;
    opts.progress = Some(progress.clone());
    tracing::info!(data_dir = %args.sync.data_dir, base_url = %args.sync.base_url, "sync cycle starting");
    let manifest = run_sync_cycle(&client, &opts)
        .await
        .with_context(|| format!("sync cycle on {}", args.sync.data_dir))?;
    progress.finish();
    let path = opts
        .data_dir
        .display_key(&opts.data_dir.manifest_key(&manifest.run_id));
    print!(
        "{}",
        crate::redact::terminal_lines(&sync_summary(&manifest, &path))
    );
    let stats = client.stats();
    tracing::info!(
        status = %manifest.status,
        requests = stats.requests,
        retries = stats.retries,
        bytes = stats.bytes,
        manifest = %path,
        "sync finished: {}",
        manifest.status
    );
    Ok(exit_code(manifest.status))
}
