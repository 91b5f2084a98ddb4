//! `bench-iceberg`: what `--iceberg` costs per cycle.
//!
//! ```text
//! cargo run --release -p bins --features bench --bin bench-iceberg -- \
//!     [--quarters 10] [--cycles 5] [--revised 2] [--catalog] [--s3-bucket B]
//! ```
//!
//! Two cases, from the emulator on loopback, into a local folder or (with
//! `STATBANK_TEST_S3_ENDPOINT` set, credentials from `AWS_ACCESS_KEY_ID` /
//! `AWS_SECRET_ACCESS_KEY`) an S3 bucket:
//!
//! - **large**: a FOLK1A-shaped table of `--quarters` quarters (200,025
//!   rows each: 2 M rows at 10), vintages kept, bootstrapped and then put
//!   through `--cycles` weekly cycles that each revise `--revised` quarters.
//!   After every cycle (run without `--iceberg`), the step `--iceberg` adds
//!   to it, [`PartitionStore::write_iceberg`], is run and timed on the same
//!   folder: its time against the cycle's, the requests it sends to the
//!   object store, and the bytes of metadata it writes.
//! - **catalog** (`--catalog`): the real catalog's 2,339 tables, tiny, one
//!   bootstrap cycle; then the metadata of every table, as the first cycle
//!   with `--iceberg` writes it, against that cycle; then a regeneration
//!   of every table with nothing changed (what a cycle does when the state
//!   says a table's metadata is behind but its files are as described).
//!
//! Figures are medians with the spread (min–max) over the cycles.

use std::time::{Duration, Instant};

use anyhow::{ensure, Result};
use clap::Parser;
use partition_store::{IcebergOptions, PartitionStore};
use statbank_client::emulator::{Emulator, World};
use statbank_client::StatbankClient;
use sync_state::{utc_to_source_time, DataDir, RunStatus, SyncState, TableId};

#[derive(Debug, Parser)]
#[command(name = "bench-iceberg")]
struct Args {
    /// Quarters of the large table (200,025 rows each).
    #[arg(long, default_value_t = 10)]
    quarters: usize,
    /// Weekly cycles after the bootstrap.
    #[arg(long, default_value_t = 5)]
    cycles: usize,
    /// Quarters revised per cycle (within the 8-quarter refresh window).
    #[arg(long, default_value_t = 2)]
    revised: usize,
    /// Also run the catalog case (2,339 tiny tables).
    #[arg(long)]
    catalog: bool,
    /// An S3 endpoint: the data folders go to this bucket.
    #[arg(long, env = "STATBANK_TEST_S3_ENDPOINT")]
    s3_endpoint: Option<String>,
    /// The bucket for the S3 case.
    #[arg(long, default_value = "statbank-test")]
    s3_bucket: String,
}

use bins::bench::folk1a::TABLE;

fn main() -> Result<()> {
    let args = Args::parse();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(run(&args))
}

/// A fresh data folder named `name`: local, or in the S3 bucket.
fn data_dir(args: &Args, tmp: &std::path::Path, name: &str) -> Result<DataDir> {
    Ok(match &args.s3_endpoint {
        Some(endpoint) => {
            let url = format!(
                "s3://{}/bench-iceberg-{name}-{}",
                args.s3_bucket,
                std::process::id()
            );
            let options = [
                ("aws_endpoint".to_string(), endpoint.clone()),
                ("aws_allow_http".to_string(), "true".to_string()),
            ];
            DataDir::open_with(&url, &options)?
        }
        None => DataDir::local(tmp.join(name)),
    })
}

async fn cycle(client: &StatbankClient, data: &DataDir, i: usize) -> Result<(f64, usize)> {
    let mut opts = bins::SyncOptions::on(data.clone());
    opts.gate.force = true;
    opts.vintages = bins::Vintages::Keep;
    opts.verify.cycles = 0;
    opts.clock = bins::Clock::fixed(bins::bench::week(i));
    let t = Instant::now();
    let m = bins::run_sync_cycle(client, &opts).await?;
    let secs = t.elapsed().as_secs_f64();
    ensure!(
        m.status == RunStatus::Success,
        "cycle {i}: {} {:?}",
        m.status,
        m.error
    );
    let changed = m.tables.values().map(|r| r.changed_tids.len()).sum();
    Ok((secs, changed))
}

/// One `write_iceberg` over `tables`: seconds, object-store requests,
/// bytes written, versions written.
#[derive(Debug, Default, Clone, Copy)]
struct Step {
    secs: f64,
    requests: u64,
    bytes: u64,
    written: usize,
}

fn iceberg_step(data: &DataDir, tables: &[(TableId, String)], i: usize) -> Result<Step> {
    let store = PartitionStore::new(data);
    let opts = IcebergOptions::at(bins::bench::week(i).timestamp_millis());
    let before = data.storage().requests();
    let t = Instant::now();
    let mut step = Step::default();
    for (table, updated) in tables {
        let o = store.write_iceberg(table, updated, &opts)?;
        step.bytes += o.bytes_written;
        step.written += usize::from(o.written);
    }
    step.secs = t.elapsed().as_secs_f64();
    step.requests = data.storage().requests() - before;
    Ok(step)
}

/// Every table of the state with the `updated` it is synced at.
fn synced_tables(data: &DataDir) -> Result<Vec<(TableId, String)>> {
    let state = SyncState::load(data)?;
    Ok(state
        .tables
        .into_iter()
        .filter_map(|(id, t)| t.last_seen_updated.map(|u| (id, u)))
        .collect())
}

fn spread(v: &[f64], unit: &str, digits: usize) -> String {
    let med = bins::bench::median(v.to_vec());
    let min = v.iter().copied().fold(f64::INFINITY, f64::min);
    let max = v.iter().copied().fold(0.0, f64::max);
    format!("{med:.digits$} {unit} ({min:.digits$}–{max:.digits$})")
}

async fn large(args: &Args, tmp: &std::path::Path) -> Result<()> {
    let quarters: Vec<String> = (0..args.quarters)
        .map(|i| format!("{}K{}", 2015 + i / 4, i % 4 + 1))
        .collect();
    let emu = Emulator::start(bins::bench::folk1a_world(&quarters)).await?;
    let client = StatbankClient::builder()
        .base_url(emu.base_url())
        .min_interval(Duration::ZERO)
        .build()?;
    let data = data_dir(args, tmp, "large")?;
    let h = emu.handle();
    let (mut cycles, mut steps) = (Vec::new(), Vec::new());
    for i in 0..=args.cycles {
        if i > 0 {
            for k in 0..args.revised {
                let back = (i * args.revised + k) % 8;
                h.revise_period(TABLE, &quarters[quarters.len() - 1 - back]);
            }
        }
        h.set_updated(
            TABLE,
            &utc_to_source_time(bins::bench::week(i) - chrono::Duration::hours(2)),
        );
        let (secs, changed) = cycle(&client, &data, i).await?;
        let expected = if i == 0 { quarters.len() } else { args.revised };
        ensure!(changed == expected, "cycle {i}: {changed} changed periods");
        let step = iceberg_step(&data, &synced_tables(&data)?, i)?;
        ensure!(step.written == 1, "cycle {i}: one new metadata version");
        println!(
            "large cycle {i}: cycle {secs:.3} s, iceberg step {:.4} s ({:.2} %), {} store requests, {} bytes of metadata",
            step.secs,
            100.0 * step.secs / secs,
            step.requests,
            step.bytes
        );
        if i > 0 {
            cycles.push(secs);
            steps.push(step);
        }
    }
    emu.shutdown().await;
    let share: Vec<f64> = cycles
        .iter()
        .zip(&steps)
        .map(|(c, s)| 100.0 * s.secs / c)
        .collect();
    let f = |g: fn(&Step) -> f64| steps.iter().map(g).collect::<Vec<f64>>();
    println!(
        "large ({} rows, {} quarters, {} revised per cycle, {} cycles, {}): cycle {}, iceberg step {}, share {}, store requests {}, metadata bytes {}",
        args.quarters * 200_025,
        args.quarters,
        args.revised,
        args.cycles,
        data.storage().describe(),
        spread(&cycles, "s", 3),
        spread(&f(|s| s.secs), "s", 4),
        spread(&share, "%", 2),
        spread(&f(|s| s.requests as f64), "", 0),
        spread(&f(|s| s.bytes as f64), "B", 0),
    );
    Ok(())
}

async fn catalog(args: &Args, tmp: &std::path::Path) -> Result<()> {
    let emu = Emulator::start(World::full_catalog()).await?;
    let client = StatbankClient::builder()
        .base_url(emu.base_url())
        .min_interval(Duration::ZERO)
        .build()?;
    let data = data_dir(args, tmp, "catalog")?;
    let (secs, _) = cycle(&client, &data, 0).await?;
    emu.shutdown().await;
    let tables = synced_tables(&data)?;
    let first = iceberg_step(&data, &tables, 0)?;
    ensure!(
        first.written == tables.len(),
        "every table gets its metadata"
    );
    let again = iceberg_step(&data, &tables, 0)?;
    ensure!(again.written == 0, "nothing changed, nothing written");
    println!(
        "catalog ({} tables, {}): bootstrap cycle {secs:.2} s; metadata of every table {:.2} s ({:.1} % of the cycle), {} store requests, {} bytes; regenerated unchanged {:.2} s, {} store requests, 0 bytes",
        tables.len(),
        data.storage().describe(),
        first.secs,
        100.0 * first.secs / secs,
        first.requests,
        first.bytes,
        again.secs,
        again.requests
    );
    Ok(())
}

async fn run(args: &Args) -> Result<()> {
    let tmp = tempfile::tempdir()?;
    large(args, tmp.path()).await?;
    if args.catalog {
        catalog(args, tmp.path()).await?;
    }
    Ok(())
}
