//! `statbank-inspect`: answers the debugging questions, one command each,
//! without changing anything; `--json` for programs.
//!
//! ```text
//! statbank-inspect [--data-dir DIR] [--json] status
//! statbank-inspect [--data-dir DIR] [--json] history [--last N]
//! statbank-inspect [--data-dir DIR] [--json] run [RUN_ID]
//! statbank-inspect [--data-dir DIR] [--json] table TABLE_ID
//! statbank-inspect [--data-dir DIR] [--json] plan TABLE_ID [--base-url URL]
//! statbank-inspect [--data-dir DIR] [--json] asof TABLE_ID --at TIME [--tids T,T] --out FILE.parquet
//! statbank-inspect [--data-dir DIR] [--json] revisions TABLE_ID [--tid T]
//! ```

use std::process::ExitCode;

use crate::cli::{init_logging, LogFormat};
use crate::inspect as queries;
use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use statbank_client::{StatbankClient, DEFAULT_BASE_URL};
use sync_state::{DataDir, RunId, TableId, Tid};

/// Inspect a statbank-sync data folder.
#[derive(Debug, Parser)]
#[command(name = "statbank-inspect", version)]
struct Args {
    /// The data folder.
    #[arg(
        long,
        env = "STATBANK_DATA_DIR",
        default_value = "data/dst",
        global = true
    )]
    data_dir: String,
    /// Print JSON instead of text.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Last catalog poll, last run, tables by status, tables failing for
    /// more than one run, pending applies, verification debt.
    Status,
    /// One line per run over time (status, tables, rows, duration, apply).
    History {
        /// How many runs (the newest).
        #[arg(long, default_value_t = 20)]
        last: usize,
    },
    /// A summary of a run (the latest by default); --json: the manifest.
    Run {
        /// The run id.
        run_id: Option<RunId>,
    },
    /// One table: state, local periods, recent results and DB apply.
    Table {
        /// The table id.
        table: TableId,
    },
    /// What the next run would fetch for a table (tableinfo only, no data).
    Plan {
        /// The table id.
        table: TableId,
        /// The StatBank API base URL.
        #[arg(long, env = "STATBANK_BASE_URL", default_value = DEFAULT_BASE_URL)]
        base_url: String,
    },
    /// Writes a table as it was published at an instant (from the current
    /// partitions and the kept vintages) into one Parquet file.
    Asof {
        /// The table id.
        table: TableId,
        /// The instant: RFC 3339 (2025-03-01T00:00:00Z) or a date (2025-03-01).
        #[arg(long)]
        at: String,
        /// Only these periods.
        #[arg(long, value_delimiter = ',')]
        tids: Option<Vec<Tid>>,
        /// The Parquet file to write.
        #[arg(long)]
        out: std::path::PathBuf,
    },
    /// Every kept vintage of a table's periods: validity, rows, cells that
    /// differ from the previous version.
    Revisions {
        /// The table id.
        table: TableId,
        /// Only this period.
        #[arg(long)]
        tid: Option<Tid>,
    },
}

/// The program: parses `argv` (program name first) and runs it.
pub fn main<I, T>(argv: I) -> ExitCode
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    let args = Args::parse_from(argv);
    init_logging(LogFormat::Text);
    match run(args) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {}", crate::redact::terminal_safe(&format!("{e:#}")));
            ExitCode::FAILURE
        }
    }
}

fn run(args: Args) -> Result<ExitCode> {
    let dir = DataDir::open(&args.data_dir)?;
    let report = match args.cmd {
        Cmd::Status => queries::status(&dir)?,
        Cmd::History { last } => queries::history(&dir, last)?,
        Cmd::Run { run_id } => queries::run(&dir, run_id.as_ref())?,
        Cmd::Table { table } => queries::table(&dir, &table)?,
        Cmd::Asof {
            table,
            at,
            tids,
            out,
        } => {
            let tids = tids.map(|t| t.into_iter().collect());
            queries::asof(&dir, &table, &at, tids.as_ref(), &out)?
        }
        Cmd::Revisions { table, tid } => queries::revisions(&dir, &table, tid.as_ref())?,
        Cmd::Plan { table, base_url } => {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .context("starting the async runtime")?;
            rt.block_on(async {
                let client = StatbankClient::new(&base_url)?;
                queries::plan(&dir, &client, &table).await
            })?
        }
    };
    print!(
        "{}",
        crate::redact::terminal_lines(&report.render(if args.json {
            queries::Format::Json
        } else {
            queries::Format::Text
        }))
    );
    Ok(ExitCode::SUCCESS)
}
