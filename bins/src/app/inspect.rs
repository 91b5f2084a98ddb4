//! `statbank-inspect`: answers the guide's debugging questions, one command
//! each, without changing anything.
//!
//! ```text
//! statbank-inspect [--data-dir DIR] status
//! statbank-inspect [--data-dir DIR] run [RUN_ID]
//! statbank-inspect [--data-dir DIR] table TABLE_ID
//! statbank-inspect [--data-dir DIR] plan TABLE_ID [--base-url URL]
//! ```

use std::process::ExitCode;

use crate::cli::{init_logging, LogFormat};
use crate::inspect as queries;
use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use statbank_client::{StatbankClient, DEFAULT_BASE_URL};
use sync_state::{DataDir, RunId, TableId};

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
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Last catalog poll, last run, tables by status, tables failing for
    /// more than one run.
    Status,
    /// A run manifest pretty-printed (the latest by default).
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
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: Args) -> Result<ExitCode> {
    let dir = DataDir::open(&args.data_dir)?;
    let text = match args.cmd {
        Cmd::Status => queries::status(&dir)?,
        Cmd::Run { run_id } => queries::run(&dir, run_id.as_ref())?,
        Cmd::Table { table } => queries::table(&dir, &table)?,
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
    print!("{text}");
    Ok(ExitCode::SUCCESS)
}
