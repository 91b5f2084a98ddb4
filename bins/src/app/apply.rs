//! `statbank-apply`: applies the changed periods of a sync run into the
//! Postgres `fact.*` tables and records `db_apply` in the run manifest.
//!
//! ```text
//! statbank-apply [--data-dir DIR] [--database-url URL] [--run-id ID]
//!                [--pending] [--dry-run] [--create-missing] [--partitioned]
//!                [--on-schema-change fail|rebuild] [--history] [--no-strict]
//!                [--schema fact] [--log-format text|json]
//! ```
//!
//! Without `--run-id` the latest run (last manifest by file name) is applied.
//! Exit status: 0 when every table was applied or skipped, 2 when some table
//! failed (`partial_failure`), 1 when the run could not be applied at all.
//! Synchronous: no async runtime is started here (the `postgres` client
//! drives its own).

use std::process::ExitCode;

use crate::cli::{init_logging, LogFormat};
use anyhow::{anyhow, Context, Result};
use clap::Parser;
use fact_apply::{apply_run, ApplyOptions};
use sync_state::{latest_run, ApplyStatus, DataDir, DbApplyReport, RunId};

/// Apply the changed StatBank periods of a sync run into Postgres fact tables.
#[derive(Debug, Parser)]
#[command(name = "statbank-apply", version)]
struct Args {
    /// The data folder (partitions and run manifests): a local path or
    /// s3://bucket/prefix (gs://, az://).
    #[arg(long, env = "STATBANK_DATA_DIR", default_value = "data/dst")]
    data_dir: String,
    /// Postgres connection string (URL or key=value). Never logged with its password.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    database_url: crate::redact::DatabaseUrl,
    /// The run to apply (default: the latest run).
    #[arg(long, conflicts_with = "pending")]
    run_id: Option<RunId>,
    /// Apply every run whose changes were never applied successfully
    /// (failed, partial, or synced without a database), oldest first.
    #[arg(long)]
    pending: bool,
    /// Report what would be deleted and inserted; change nothing (not even
    /// the manifest, or a reconcile's report).
    #[arg(long)]
    dry_run: bool,
    /// Instead of applying a run: compare every table that has partitions
    /// (or --tables) with its fact table, period by period, and write the
    /// report to `_sync/reconcile/<id>.json`. Exit 0 when they agree, 2 when
    /// something differs, 1 on error.
    #[arg(long, conflicts_with_all = ["run_id", "pending"])]
    reconcile: bool,
    /// With --reconcile: repair what differs (re-apply exactly those
    /// periods, delete values no period has, create missing tables); exit 0
    /// when everything found was repaired.
    #[arg(long, requires = "reconcile")]
    repair: bool,
    /// With --reconcile: only these tables (comma-separated ids).
    #[arg(long, value_delimiter = ',', requires = "reconcile")]
    tables: Option<Vec<sync_state::TableId>>,
    #[command(flatten)]
    apply: crate::cli::ApplyFlags,
    /// Lenient mode of the original: apply the periods that have files, and
    /// only log row-count differences.
    #[arg(long)]
    no_strict: bool,
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
            // `{:#}` prints the whole chain; the password is scrubbed from it
            // in case a lower layer ever echoes the connection string.
            let text = crate::redact::terminal_safe(&db.scrub(&format!("{e:#}")));
            tracing::error!(error = %text, "statbank-apply failed");
            eprintln!("error: {text}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: Args) -> Result<ExitCode> {
    let data = DataDir::open(&args.data_dir)?;
    if args.reconcile {
        return reconcile(&args, &data);
    }
    let runs_dir = data.display_key(&data.runs_key());
    let runs: Vec<RunId> = match (&args.run_id, args.pending) {
        (Some(r), _) => vec![r.clone()],
        (None, true) => sync_state::pending_runs(&data)
            .with_context(|| format!("finding pending runs in {runs_dir}"))?,
        (None, false) => vec![latest_run(&data)
            .with_context(|| format!("listing runs in {runs_dir}"))?
            .ok_or_else(|| anyhow!("no run manifest in {runs_dir}"))?],
    };
    let opts = ApplyOptions {
        dry_run: args.dry_run,
        strict: !args.no_strict,
        ..args.apply.options()
    };
    let nothing_pending = || {
        println!("no pending runs: every run with changes has been applied");
        Ok(ExitCode::SUCCESS)
    };
    if runs.is_empty() && opts.metadata.schema().is_none() {
        return nothing_pending();
    }
    tracing::info!(runs = runs.len(), database = %args.database_url, dry_run = args.dry_run, "applying");
    let mut client = args.database_url.connect("statbank-apply")?;
    if let Some(filled) = fact_apply::prepare_metadata(&mut client, &data, &opts)
        .context("creating the meta schema")?
    {
        println!(
            "metadata: new schema filled for {} tables of the mirror ({} failed; see the log)",
            filled.tables, filled.failed
        );
    }
    if runs.is_empty() {
        return nothing_pending();
    }
    let mut all_ok = true;
    for run in &runs {
        let report = apply_run(&mut client, &data, run, &opts)
            .with_context(|| format!("applying run {run}"))?;
        print_summary(&report);
        all_ok &= report.status.is_ok();
    }
    Ok(if all_ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(2)
    })
}

/// `--reconcile [--repair]`.
fn reconcile(args: &Args, data: &DataDir) -> Result<ExitCode> {
    let opts = fact_apply::ReconcileOptions {
        apply: ApplyOptions {
            dry_run: args.dry_run,
            strict: !args.no_strict,
            ..args.apply.options()
        },
        tables: args.tables.clone(),
        repair: args.repair,
        read_connection: Some(args.database_url.read_config("statbank-apply")?),
    };
    let now = sync_state::UtcSecond::new(chrono::Utc::now());
    let id = sync_state::ReconcileReport::unused_id(data, now)?;
    tracing::info!(reconcile = %id, database = %args.database_url, repair = args.repair, dry_run = args.dry_run, "reconciling");
    let mut client = args.database_url.connect("statbank-apply")?;
    let report = fact_apply::reconcile(&mut client, data, &id, &opts)
        .with_context(|| format!("reconcile {id}"))?;
    print!(
        "{}",
        crate::redact::terminal_lines(&crate::cli::reconcile_summary(&report, data, args.dry_run))
    );
    Ok(match report.status {
        sync_state::ReconcileStatus::Agrees | sync_state::ReconcileStatus::Repaired => {
            ExitCode::SUCCESS
        }
        sync_state::ReconcileStatus::Failed
            if report.summary.tables_failed == report.summary.tables_total =>
        {
            ExitCode::FAILURE
        }
        _ => ExitCode::from(2),
    })
}

fn print_summary(report: &DbApplyReport) {
    let dry = if report.dry_run == Some(true) {
        " (dry run: nothing changed)"
    } else {
        ""
    };
    println!("run {}: {}{dry}", report.run_id, report.status);
    if let Some(reason) = &report.reason {
        println!("  {reason}");
    }
    for t in report.tables.iter().flatten() {
        let status = match t.status {
            ApplyStatus::Applied if report.dry_run == Some(true) => "would apply",
            ApplyStatus::Applied => "applied",
            ApplyStatus::Skipped => "skipped",
            ApplyStatus::Failed => "FAILED",
        };
        let mut line = format!("  {:<12} {:<11}", t.table.as_str(), status);
        if let (Some(d), Some(i)) = (t.deleted_rows, t.inserted_rows) {
            line.push_str(&format!(
                " periods {:>4}  deleted {:>10}  inserted {:>10}",
                t.changed_tids.len(),
                d,
                i
            ));
            if let Some(n) = t.dropped_null_rows.filter(|n| *n > 0) {
                line.push_str(&format!("  dropped '..' {n}"));
            }
        }
        if t.created == Some(true) {
            line.push_str("  (created)");
        }
        if let Some(reason) = &t.reason {
            line.push_str(&format!("  {reason}"));
        }
        if let Some(m) = t.missing_tids.as_ref().filter(|m| !m.is_empty()) {
            let m: Vec<&str> = m.iter().map(|t| t.as_str()).collect();
            line.push_str(&format!("  missing: {}", m.join(", ")));
        }
        println!("{line}");
        if let Some(e) = &t.error {
            println!("      error: {}", crate::redact::terminal_safe(e));
        }
    }
    let s = &report.summary;
    println!(
        "tables: {} total, {} applied, {} skipped, {} failed",
        s.tables_total, s.tables_applied, s.tables_skipped, s.tables_failed
    );
    let missing = report
        .tables
        .iter()
        .flatten()
        .filter(|t| t.reason.as_deref() == Some("missing_fact_table"))
        .count();
    if missing > 0 {
        println!(
            "hint: {missing} table(s) have no fact table yet; --create-missing creates them from their partitions"
        );
    }
}
