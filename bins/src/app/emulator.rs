//! `statbank-emulator`: a local StatBank API for demos and tests.
//!
//! ```text
//! statbank-emulator [--port 8080] [--bind 127.0.0.1] [--scenario FILE]
//!                   [--full-catalog]
//! ```
//!
//! Serves `/v1/tables`, `/v1/tableinfo` and `/v1/data` (BULK) in the live
//! API's shapes. The default world is a demo of 12 tables covering every
//! time-code shape; `--scenario` loads a world saved as JSON
//! (`World::to_json`), `--full-catalog` serves the real catalog of 2,339
//! tables (synthetic tableinfo for those not recorded).

use std::net::SocketAddr;
use std::process::ExitCode;

use crate::cli::{init_logging, LogFormat};
use anyhow::{Context, Result};
use clap::Parser;
use statbank_client::emulator::{Emulator, World};

/// Serve a StatBank API emulator on loopback.
#[derive(Debug, Parser)]
#[command(name = "statbank-emulator", version)]
struct Args {
    /// Port to listen on (0 picks a free one).
    #[arg(long, env = "STATBANK_EMULATOR_PORT", default_value_t = 8080)]
    port: u16,
    /// Address to bind.
    #[arg(long, default_value = "127.0.0.1")]
    bind: std::net::IpAddr,
    /// A world saved as JSON (see `World::to_json`).
    #[arg(long, conflicts_with = "full_catalog")]
    scenario: Option<std::path::PathBuf>,
    /// Serve the full real catalog (2,339 tables).
    #[arg(long)]
    full_catalog: bool,
    /// Log format.
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
            eprintln!("error: {}", crate::redact::terminal_safe(&format!("{e:#}")));
            ExitCode::FAILURE
        }
    }
}

fn run(args: Args) -> Result<ExitCode> {
    let world = if let Some(path) = &args.scenario {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading scenario {}", path.display()))?;
        World::from_json(&text).with_context(|| format!("parsing scenario {}", path.display()))?
    } else if args.full_catalog {
        World::full_catalog()
    } else {
        World::demo()
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    rt.block_on(async move {
        let addr = SocketAddr::new(args.bind, args.port);
        let emu = Emulator::start_on(addr, world)
            .await
            .with_context(|| format!("binding {addr}"))?;
        println!("statbank emulator listening on {}", emu.base_url());
        tracing::info!(base_url = %emu.base_url(), "emulator started; ctrl-c to stop");
        tokio::signal::ctrl_c()
            .await
            .context("waiting for ctrl-c")?;
        emu.shutdown().await;
        Ok(ExitCode::SUCCESS)
    })
}
