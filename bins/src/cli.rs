//! What the binaries share: logging setup, progress display, signal handling
//! and the one-screen run summary.

use std::io::IsTerminal;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use sync_state::{DataDir, RunManifest, TableId, TableResult, TableStatus};

use crate::{ProgressSink, StopSignal};

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines (default).
    #[default]
    Text,
    /// One JSON object per line, for log shippers.
    Json,
}

/// The exit status a scheduler acts on: 0 for `success` and `skipped`, 2
/// for `partial_failure`, 1 for `failed`.
pub fn exit_code(status: sync_state::RunStatus) -> std::process::ExitCode {
    use std::process::ExitCode;
    use sync_state::RunStatus;
    match status {
        RunStatus::Success | RunStatus::Skipped => ExitCode::SUCCESS,
        RunStatus::PartialFailure => ExitCode::from(2),
        RunStatus::Failed => ExitCode::FAILURE,
    }
}

/// Sets up `tracing` to stderr. `RUST_LOG` overrides the default `info` level.
pub fn init_logging(format: LogFormat) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

/// Raises `stop` on ctrl-c or SIGTERM. A second signal exits at once (the
/// on-disk state stays consistent either way: files are published by rename
/// and state is written after the data it describes).
pub fn stop_on_signals(stop: StopSignal) {
    tokio::spawn(async move {
        let mut count = 0;
        loop {
            wait_for_signal().await;
            count += 1;
            if count == 1 {
                tracing::warn!("stop requested: finishing the requests in flight; signal again to exit at once");
                stop.stop();
            } else {
                tracing::error!("second stop signal: exiting now");
                std::process::exit(130);
            }
        }
    });
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// A progress bar on a terminal; log lines otherwise.
pub struct Progress {
    bar: Option<ProgressBar>,
    rows: AtomicU64,
    done: AtomicU64,
    total: AtomicU64,
}

impl Progress {
    /// A bar when stderr is a terminal and `enabled`, else log lines.
    pub fn new(enabled: bool) -> Arc<Progress> {
        let bar = (enabled && std::io::stderr().is_terminal()).then(|| {
            let b = ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::stderr());
            let style = ProgressStyle::with_template(
                "{spinner} [{elapsed_precise}] {bar:30} {pos}/{len} tables  {msg}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar());
            b.set_style(style);
            b
        });
        Arc::new(Progress {
            bar,
            rows: AtomicU64::new(0),
            done: AtomicU64::new(0),
            total: AtomicU64::new(0),
        })
    }

    /// Removes the bar.
    pub fn finish(&self) {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
    }
}

impl ProgressSink for Progress {
    fn start(&self, total: usize) {
        self.total.store(total as u64, Ordering::Relaxed);
        if let Some(b) = &self.bar {
            b.set_length(total as u64);
        } else {
            tracing::info!(tables = total, "catalog read");
        }
    }
    fn table_started(&self, table: &TableId) {
        if let Some(b) = &self.bar {
            b.set_message(format!(
                "{} rows  now: {table}",
                self.rows.load(Ordering::Relaxed)
            ));
        }
    }
    fn rows(&self, rows: u64) {
        self.rows.fetch_add(rows, Ordering::Relaxed);
    }
    fn table_finished(&self, table: &TableId, r: &TableResult) {
        let done = self.done.fetch_add(1, Ordering::Relaxed) + 1;
        if let Some(b) = &self.bar {
            b.inc(1);
            b.set_message(format!("{} rows", self.rows.load(Ordering::Relaxed)));
            if r.status == TableStatus::Failed {
                b.suspend(|| {
                    tracing::warn!(table = %table, error = r.error.as_deref().unwrap_or(""), "table failed")
                });
            }
        } else if r.status != TableStatus::Skipped {
            tracing::info!(
                table = %table,
                status = r.status.as_str(),
                changed = r.changed_tids.len(),
                rows = r.rows_written.unwrap_or(0),
                done,
                total = self.total.load(Ordering::Relaxed),
                "table finished"
            );
        }
    }
}

/// The one-screen summary of a sync run.
pub fn sync_summary(m: &RunManifest, manifest_path: &str) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let secs = m
        .finished_at
        .map(|f| (f.get() - m.started_at.get()).num_seconds())
        .unwrap_or(0);
    let _ = writeln!(out, "run {}: {} in {secs}s", m.run_id, m.status);
    catalog_lines(&mut out, m);
    changed_lines(&mut out, m);
    failed_lines(&mut out, m);
    notable_lines(&mut out, m);
    let _ = writeln!(out, "  manifest: {manifest_path}");
    out
}

/// The catalog: why it was not polled, or what the run did with it.
fn catalog_lines(out: &mut String, m: &RunManifest) {
    use std::fmt::Write;
    let s = &m.summary;
    if m.catalog.polled {
        let _ = writeln!(
            out,
            "  tables: {} considered, {} synced, {} unchanged, {} failed",
            s.tables_total, s.tables_synced, s.tables_skipped, s.tables_failed
        );
        let _ = writeln!(
            out,
            "  changed: {} tables, {} files, {} rows",
            s.tables_with_changed_tids, s.files_written, s.rows_written
        );
        return;
    }
    let reason = m.catalog.reason.as_deref().unwrap_or("not polled");
    let _ = writeln!(out, "  catalog not polled ({reason})");
    if let Some(t) = m.catalog.last_catalog_poll_at {
        let _ = writeln!(
            out,
            "  last catalog poll {t}; use --force-catalog-poll to poll now"
        );
    }
    if let Some(e) = &m.catalog.error {
        let _ = writeln!(out, "  error: {e}");
    }
}

/// Up to ten tables with changed periods, four periods each.
fn changed_lines(out: &mut String, m: &RunManifest) {
    use std::fmt::Write;
    let changed: Vec<_> = m
        .tables
        .iter()
        .filter(|(_, r)| !r.changed_tids.is_empty())
        .collect();
    for (id, r) in changed.iter().take(10) {
        let tids: Vec<&str> = r.changed_tids.iter().take(4).map(|t| t.as_str()).collect();
        let more = r.changed_tids.len().saturating_sub(4);
        let more = if more > 0 {
            format!(" +{more}")
        } else {
            String::new()
        };
        let _ = writeln!(out, "    {id:<12} {}{more}", tids.join(", "));
    }
    if changed.len() > 10 {
        let _ = writeln!(out, "    … and {} more tables", changed.len() - 10);
    }
}

/// Up to ten failed tables with their errors, and the run's own error.
fn failed_lines(out: &mut String, m: &RunManifest) {
    use std::fmt::Write;
    let failed: Vec<_> = m
        .tables
        .iter()
        .filter(|(_, r)| r.status == TableStatus::Failed)
        .collect();
    for (id, r) in failed.iter().take(10) {
        let _ = writeln!(
            out,
            "  FAILED {id}: {}",
            r.error.as_deref().unwrap_or("unknown error")
        );
    }
    if failed.len() > 10 {
        let _ = writeln!(out, "  … and {} more failed tables", failed.len() - 10);
    }
    if let Some(e) = &m.error {
        if m.catalog.polled {
            let _ = writeln!(out, "  error: {e}");
        }
    }
}

/// Schema changes, tables gone from the catalog, verification.
fn notable_lines(out: &mut String, m: &RunManifest) {
    use std::fmt::Write;
    let s = &m.summary;
    for (id, r) in &m.tables {
        if let Some(c) = &r.schema_change {
            let _ = writeln!(
                out,
                "  SCHEMA CHANGED {id}: [{}] -> [{}] (re-fetched whole; apply needs --on-schema-change rebuild or a migrated table)",
                c.before.join(", "),
                c.after.join(", ")
            );
        }
    }
    if let Some(removed) = &m.catalog.removed_tables {
        let ids: Vec<&str> = removed.iter().take(10).map(|t| t.as_str()).collect();
        let _ = writeln!(
            out,
            "  no longer in the catalog (kept): {}{}",
            ids.join(", "),
            if removed.len() > 10 { " …" } else { "" }
        );
    }
    if s.periods_verified > 0 || s.verification_debt > 0 {
        let _ = writeln!(
            out,
            "  verified {} older periods; {} still owe a verification",
            s.periods_verified, s.verification_debt
        );
    }
}

/// What a reconcile found (and repaired), as lines for a person: one per
/// table that does not agree, the counters, the report's path.
pub fn reconcile_summary(r: &sync_state::ReconcileReport, data: &DataDir, dry_run: bool) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let s = &r.summary;
    let _ = writeln!(
        out,
        "reconcile {}: {}{}",
        r.reconcile_id,
        r.status,
        if dry_run {
            " (dry run: nothing written)"
        } else {
            ""
        }
    );
    for (id, t) in &r.tables {
        if t.status == sync_state::ReconcileStatus::Agrees {
            continue;
        }
        let mut line = format!("  {:<12} {:<13}", id.as_str(), t.status.as_str());
        if !t.missing_in_db.is_empty() {
            let _ = write!(line, " missing_in_db {}", t.missing_in_db.len());
        }
        if !t.extra_in_db.is_empty() {
            let _ = write!(line, " extra_in_db {}", t.extra_in_db.len());
        }
        if !t.differs.is_empty() {
            let tids: Vec<&str> = t.differs.iter().take(4).map(|d| d.tid.as_str()).collect();
            let _ = write!(line, " differs {} ({})", t.differs.len(), tids.join(", "));
        }
        let _ = writeln!(out, "{line}");
        if let Some(e) = &t.error {
            let _ = writeln!(out, "      error: {e}");
        }
    }
    let _ = writeln!(
        out,
        "tables: {} compared, {} agree, {} differ ({} without a fact table), {} repaired, {} failed; {} rows compared",
        s.tables_total, s.tables_agree, s.tables_differ, s.tables_missing, s.tables_repaired, s.tables_failed, s.rows_compared
    );
    if !dry_run {
        let _ = writeln!(
            out,
            "  report: {}",
            data.display_key(&data.reconcile_report_key(&r.reconcile_id))
        );
    }
    out
}

/// The sync settings shared by `statbank-sync` and `statbank-flow`.
#[derive(Debug, Clone, clap::Args)]
pub struct SyncArgs {
    /// The data folder (partitions, state.json, run manifests): a local
    /// path, or s3://bucket/prefix, gs://bucket/prefix, az://container/prefix
    /// (credentials from the standard AWS_*, GOOGLE_*, AZURE_* variables).
    #[arg(long, env = "STATBANK_DATA_DIR", default_value = "data/dst")]
    pub data_dir: String,
    /// The StatBank API base URL (the emulator: http://127.0.0.1:8080/v1).
    #[arg(long, env = "STATBANK_BASE_URL", default_value = statbank_client::DEFAULT_BASE_URL)]
    pub base_url: String,
    /// Poll the catalog even if the last poll is less than 7 days old.
    #[arg(long)]
    pub force_catalog_poll: bool,
    /// Run id (default: the UTC start time, e.g. 20260126T220000Z).
    #[arg(long)]
    pub run_id: Option<sync_state::RunId>,
    /// Only these tables (comma-separated ids).
    #[arg(long, value_delimiter = ',')]
    pub tables: Option<Vec<TableId>>,
    /// At most this many tables (by id order).
    #[arg(long)]
    pub max_tables: Option<usize>,
    /// Remove partitions of periods that vanished from the API and report
    /// them as `deleted_tids` (the original never deletes).
    #[arg(long)]
    pub prune_deleted_periods: bool,
    /// Tables synced at once.
    #[arg(long, default_value_t = 2)]
    pub table_concurrency: usize,
    /// Maximum concurrent HTTP requests.
    #[arg(long, default_value_t = 2)]
    pub max_concurrent_requests: usize,
    /// Minimum milliseconds between request starts (politeness).
    #[arg(long, default_value_t = 100)]
    pub min_interval_ms: u64,
    /// Retries per request on connect errors, timeouts, 5xx and 429.
    #[arg(long, default_value_t = 4)]
    pub max_retries: usize,
    /// Seconds without progress (response head or next body chunk) before a
    /// request times out.
    #[arg(long, default_value_t = 120)]
    pub timeout_secs: u64,
    /// Keep superseded partitions as vintages under
    /// statbank_tables/_vintages/ (stays on for this data folder until
    /// --no-keep-vintages).
    #[arg(long, conflicts_with = "no_keep_vintages")]
    pub keep_vintages: bool,
    /// Stop keeping vintages in this data folder (kept ones stay).
    #[arg(long)]
    pub no_keep_vintages: bool,
    /// Keep every table's Apache Iceberg metadata under
    /// statbank_tables/_iceberg/<TABLE_ID>/metadata/, regenerated after its
    /// partitions are published (stays on for this data folder until
    /// --no-iceberg).
    #[arg(long, conflicts_with = "no_iceberg")]
    pub iceberg: bool,
    /// Stop keeping Iceberg metadata in this data folder (and remove it).
    #[arg(long)]
    pub no_iceberg: bool,
    /// Rolling verification: when a table's `updated` changes, its periods
    /// outside the refresh window are re-fetched once, spread over this many
    /// cycles (0 = off: only the refresh window, as the original).
    #[arg(long, default_value_t = 4)]
    pub verify_cycles: u32,
    /// At most this many periods verified per table and cycle.
    #[arg(long)]
    pub verify_max_periods: Option<usize>,
    /// At most this many (estimated) rows verified per table and cycle.
    #[arg(long)]
    pub verify_max_rows: Option<u64>,
    /// Verify every period of the selected tables now (e.g. after an
    /// announced benchmark revision); implies --force-catalog-poll.
    #[arg(long)]
    pub verify_all: bool,
    /// What to do with tables that left the catalog: keep them (default),
    /// archive their partitions under statbank_tables/_archive/, or delete
    /// them.
    #[arg(long, value_enum, default_value = "keep")]
    pub vanished_tables: VanishedArg,
    /// Hours before the 7 days are up that a run still polls the catalog
    /// (absorbs scheduler jitter; 0 = strictly 7 days).
    #[arg(long, default_value_t = 12)]
    pub gate_grace_hours: u32,
    /// Languages of the cached tableinfo, comma-separated: `da` (always;
    /// the facts are fetched in it) and `en` (the English titles, units and
    /// labels: one more tableinfo request per changed table). `da` alone
    /// makes the original's requests.
    #[arg(long, value_delimiter = ',', default_value = "da,en")]
    pub languages: Vec<sync_state::tableinfo::Lang>,
    /// Largest response body accepted, in MiB (0 = no limit).
    #[arg(long, default_value_t = 0)]
    pub max_response_mib: u64,
    /// Longest a whole BULK body may stream, in seconds. Default: derived
    /// from the rows the request may return (10 minutes plus 1 second per
    /// 10,000 rows, so 10 min for a small table and 93 min for the largest
    /// request); 0 = no limit. The per-read timeout always applies.
    #[arg(long)]
    pub bulk_timeout_secs: Option<u64>,
}

impl SyncArgs {
    /// The client these settings describe.
    pub fn client(&self) -> Result<statbank_client::StatbankClient, crate::Error> {
        use std::time::Duration;
        Ok(statbank_client::StatbankClient::builder()
            .base_url(&self.base_url)
            .max_concurrent(self.max_concurrent_requests.max(1))
            .min_interval(Duration::from_millis(self.min_interval_ms))
            .max_retries(self.max_retries)
            .read_timeout(Duration::from_secs(self.timeout_secs.max(1)))
            .max_response_bytes((self.max_response_mib > 0).then_some(self.max_response_mib << 20))
            .bulk_timeout(match self.bulk_timeout_secs {
                None => statbank_client::BulkTimeout::Derived,
                Some(0) => statbank_client::BulkTimeout::Unbounded,
                Some(s) => statbank_client::BulkTimeout::Fixed(Duration::from_secs(s)),
            })
            .build()?)
    }

    /// The data folder these settings name.
    pub fn data_dir(&self) -> Result<sync_state::DataDir, crate::Error> {
        Ok(sync_state::DataDir::open(&self.data_dir)?)
    }

    /// The sync options these settings describe (system clock, no stop
    /// signal or progress yet).
    pub fn options(&self) -> Result<crate::SyncOptions, crate::Error> {
        let mut opts = crate::SyncOptions::on(self.data_dir()?);
        opts.gate.force = self.force_catalog_poll || self.verify_all;
        opts.vintages = match (self.keep_vintages, self.no_keep_vintages) {
            (true, _) => crate::Vintages::Keep,
            (_, true) => crate::Vintages::Stop,
            _ => crate::Vintages::AsRecorded,
        };
        opts.iceberg = match (self.iceberg, self.no_iceberg) {
            (true, _) => crate::IcebergMetadata::Write,
            (_, true) => crate::IcebergMetadata::Stop,
            _ => crate::IcebergMetadata::AsRecorded,
        };
        opts.verify = sync_state::VerifyPolicy {
            cycles: self.verify_cycles,
            max_periods: self.verify_max_periods,
            max_rows: self.verify_max_rows,
        };
        opts.verify_all = self.verify_all;
        opts.vanished_tables = match self.vanished_tables {
            VanishedArg::Keep => crate::VanishedTables::Keep,
            VanishedArg::Archive => crate::VanishedTables::Archive,
            VanishedArg::Delete => crate::VanishedTables::Delete,
        };
        opts.gate.grace = chrono::Duration::hours(i64::from(self.gate_grace_hours));
        opts.run_id = self.run_id.clone();
        opts.tables = self.tables.clone();
        opts.max_tables = self.max_tables;
        opts.prune_deleted_periods = self.prune_deleted_periods;
        opts.table_concurrency = self.table_concurrency.max(1);
        opts.languages = crate::Languages::new(&self.languages)?;
        Ok(opts)
    }
}

/// `--vanished-tables` values ([`crate::VanishedTables`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum VanishedArg {
    /// Keep their partitions and state; report them (default).
    #[default]
    Keep,
    /// Move their partitions to `statbank_tables/_archive/<TABLE>/<run>/`
    /// and forget their state.
    Archive,
    /// Remove their partitions, vintages and state.
    Delete,
}

/// `--on-schema-change` values.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum SchemaChangeArg {
    /// Fail the table untouched and keep the run pending (default).
    #[default]
    Fail,
    /// Rebuild the fact table from all of its partitions, or widen
    /// too-narrow columns, in one transaction.
    Rebuild,
}

/// The DB-apply settings shared by `statbank-apply` and `statbank-flow`.
#[derive(Debug, Clone, clap::Args)]
pub struct ApplyFlags {
    /// Create missing fact tables from their partitions instead of skipping
    /// them (a fresh database needs this once).
    #[arg(long)]
    pub create_missing: bool,
    /// With --create-missing: create the tables LIST-partitioned on tid (one
    /// partition per period), so applies swap partitions instead of
    /// deleting rows.
    #[arg(long, requires = "create_missing")]
    pub partitioned: bool,
    /// When a table's partitions no longer fit its fact table (upstream
    /// schema change, values too long or no longer numeric): fail the table
    /// and keep the run pending, or rebuild / widen it.
    #[arg(long, value_enum, default_value = "fail")]
    pub on_schema_change: SchemaChangeArg,
    /// Also maintain SCHEMA_history.TABLE (every published version of
    /// every row, with valid_from / valid_to).
    #[arg(long)]
    pub history: bool,
    /// Schema of the fact tables.
    #[arg(long, default_value = "fact")]
    pub schema: String,
    /// Also maintain the meta schema (titles, units, variables, value labels
    /// and period dates from the cached tableinfo) in each table's
    /// transaction, and the SCHEMA_labeled views (a _label column after
    /// every code column). A metadata failure never blocks the facts.
    #[arg(long)]
    pub metadata: bool,
    /// Schema of the metadata tables (with --metadata).
    #[arg(long, default_value = "meta", requires = "metadata")]
    pub meta_schema: String,
}

impl ApplyFlags {
    /// The apply options these flags describe.
    pub fn options(&self) -> fact_apply::ApplyOptions {
        fact_apply::ApplyOptions {
            create_missing: self.create_missing,
            partitioned: self.partitioned,
            on_schema_change: match self.on_schema_change {
                SchemaChangeArg::Fail => fact_apply::OnSchemaChange::Fail,
                SchemaChangeArg::Rebuild => fact_apply::OnSchemaChange::Rebuild,
            },
            history: self.history,
            schema: self.schema.clone(),
            metadata: if self.metadata {
                fact_apply::Metadata::Maintain {
                    schema: self.meta_schema.clone(),
                }
            } else {
                fact_apply::Metadata::Off
            },
            ..fact_apply::ApplyOptions::default()
        }
    }
}
