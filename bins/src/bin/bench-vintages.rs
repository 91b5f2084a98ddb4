//! `bench-vintages`: what keeping vintages costs. A FOLK1A-shaped table
//! (OMRÅDE 105 × KØN 3 × ALDER 127 × CIVILSTAND 5 = 200,025 cells per
//! quarter, `--quarters` quarters) goes through `--cycles` weekly cycles in
//! which `--revised` quarters of the refresh window are revised upstream
//! and the catalog `updated` moves; once with vintages kept and once
//! without, into two data folders, from the emulator on loopback.
//!
//! ```text
//! cargo run --release -p bins --features bench --bin bench-vintages -- \
//!     [--quarters 12] [--cycles 20] [--revised 2] [--runs 5]
//! ```
//!
//! Reports: vintage storage as a share of the current mirror, vintage files
//! written (one per revised period per cycle; unchanged refreshes add none),
//! the median cycle time with and without vintages, and the time to read the
//! whole table as of an instant in the middle of the history
//! (`PartitionStore::read_table_as_of`, streaming) against a plain read of
//! the current partitions, medians of `--runs` alternating rounds with the
//! spread. Everything runs in this process; the figures are wall times.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Result};
use clap::Parser;
use partition_store::PartitionStore;
use statbank_client::emulator::Emulator;
use statbank_client::StatbankClient;
use sync_state::{utc_to_source_time, DataDir, RunStatus, TableId};

#[derive(Debug, Parser)]
#[command(name = "bench-vintages")]
struct Args {
    /// Quarters in the table.
    #[arg(long, default_value_t = 12)]
    quarters: usize,
    /// Weekly cycles, each revising `--revised` quarters.
    #[arg(long, default_value_t = 20)]
    cycles: usize,
    /// Quarters revised per cycle (within the 8-quarter refresh window).
    #[arg(long, default_value_t = 2)]
    revised: usize,
    /// Rounds of the read comparison.
    #[arg(long, default_value_t = 5)]
    runs: usize,
}

use bins::bench::folk1a::TABLE;

/// Bytes of the files under `dir` whose path contains `part` (or all).
fn bytes_under(dir: &Path, part: Option<&str>) -> Result<(u64, usize)> {
    let mut total = (0, 0);
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d)? {
            let e = e?;
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "parquet")
                && part.is_none_or(|s| p.to_string_lossy().contains(s))
            {
                total.0 += e.metadata()?.len();
                total.1 += 1;
            }
        }
    }
    Ok(total)
}

/// Runs the cycles into `data`; returns each cycle's wall time (the
/// bootstrap excluded) and the catalog `updated` of each cycle.
async fn cycles(
    args: &Args,
    emu: &Emulator,
    client: &StatbankClient,
    data: &DataDir,
    keep: bool,
    quarters: &[String],
) -> Result<(Vec<f64>, Vec<String>)> {
    let h = emu.handle();
    let mut times = Vec::new();
    let mut updated = Vec::new();
    for i in 0..=args.cycles {
        if i > 0 {
            // Two quarters of the window, rotating through it.
            for k in 0..args.revised {
                let back = (i * args.revised + k) % 8;
                h.revise_period(TABLE, &quarters[quarters.len() - 1 - back]);
            }
        }
        let up = utc_to_source_time(bins::bench::week(i) - chrono::Duration::hours(2));
        h.set_updated(TABLE, &up);
        updated.push(up);
        let mut opts = bins::SyncOptions::on(data.clone());
        opts.gate.force = true;
        opts.vintages = if keep {
            bins::Vintages::Keep
        } else {
            bins::Vintages::Stop
        };
        opts.clock = bins::Clock::fixed(bins::bench::week(i));
        let t = Instant::now();
        let m = bins::run_sync_cycle(client, &opts).await?;
        if i > 0 {
            times.push(t.elapsed().as_secs_f64());
        }
        ensure!(
            m.status == RunStatus::Success,
            "cycle {i}: {} {:?}",
            m.status,
            m.error
        );
        let changed = m
            .tables
            .get(&TableId::new(TABLE)?)
            .map_or(0, |r| r.changed_tids.len());
        let expected = if i == 0 { quarters.len() } else { args.revised };
        ensure!(
            changed == expected,
            "cycle {i}: {changed} changed periods, expected {expected}"
        );
    }
    Ok((times, updated))
}

/// Reads every batch of `reader`, returning the rows.
fn drain<I, T>(reader: I, rows: impl Fn(&T) -> usize) -> Result<u64>
where
    I: Iterator<Item = Result<T, partition_store::Error>>,
{
    let mut n = 0u64;
    for b in reader {
        n += rows(&b?) as u64;
    }
    Ok(n)
}

fn plain_read(store: &PartitionStore, table: &TableId) -> Result<u64> {
    let mut n = 0;
    for tid in store.list_tids(table)? {
        n += drain(store.read_partition(table, &tid)?, |b| b.num_rows())?;
    }
    Ok(n)
}

fn as_of_read(store: &PartitionStore, table: &TableId, at: &str) -> Result<u64> {
    drain(store.read_table_as_of(table, at, None)?, |(_, b)| {
        b.num_rows()
    })
}

fn spread(v: &[f64]) -> String {
    let med = bins::bench::median(v.to_vec());
    let min = v.iter().copied().fold(f64::INFINITY, f64::min);
    let max = v.iter().copied().fold(0.0, f64::max);
    format!("{med:.3} s ({min:.3}–{max:.3})")
}

async fn run(args: &Args) -> Result<()> {
    if args.revised > 8 {
        bail!("--revised must be at most 8 (the refresh window of a quarterly table)");
    }
    let quarters: Vec<String> = (0..args.quarters)
        .map(|i| format!("{}K{}", 2015 + i / 4, i % 4 + 1))
        .collect();
    let tmp = tempfile::tempdir()?;
    let table = TableId::new(TABLE)?;
    let mut results = Vec::new();
    for keep in [true, false] {
        let emu = Emulator::start(bins::bench::folk1a_world(&quarters)).await?;
        let client = StatbankClient::builder()
            .base_url(emu.base_url())
            .min_interval(Duration::ZERO)
            .build()?;
        let data = DataDir::local(tmp.path().join(if keep { "kept" } else { "plain" }));
        let r = cycles(args, &emu, &client, &data, keep, &quarters).await?;
        emu.shutdown().await;
        results.push((data, r));
    }
    let (kept, (times_kept, updated)) = &results[0];
    let (_, (times_plain, _)) = &results[1];
    let Some(kept_root) = kept.local_path("") else {
        bail!("the data folder is not local");
    };
    let (vint_bytes, vint_files) = bytes_under(&kept_root, Some("_vintages"))?;
    let (all_bytes, _) = bytes_under(&kept_root, None)?;
    let current = all_bytes - vint_bytes;
    ensure!(
        vint_files == args.cycles * args.revised,
        "{vint_files} vintage files, expected one per revised period per cycle"
    );

    // As of the middle of the history: half the revised quarters read from
    // vintages.
    let store = PartitionStore::new(kept);
    let mid = &updated[args.cycles / 2];
    let at = format!("{}:01", &mid[..mid.len() - 3]);
    let from_vintages = store
        .as_of(&table, &at, None)?
        .iter()
        .filter(|(_, s)| matches!(s, partition_store::AsOfSource::Vintage(_)))
        .count();
    let mut plain = Vec::new();
    let mut asof = Vec::new();
    let rows = (args.quarters * 200_025) as u64;
    for round in 0..args.runs {
        for which in if round % 2 == 0 { [0, 1] } else { [1, 0] } {
            let t = Instant::now();
            let n = if which == 0 {
                plain_read(&store, &table)?
            } else {
                as_of_read(&store, &table, &at)?
            };
            let s = t.elapsed().as_secs_f64();
            ensure!(n == rows, "read {n} rows, expected {rows}");
            if which == 0 {
                plain.push(s)
            } else {
                asof.push(s)
            }
        }
    }
    let mib = |b: u64| b as f64 / 1_048_576.0;
    println!(
        "bench-vintages: {TABLE}-shaped, {} quarters × 200,025 rows, {} weekly cycles revising {} quarters each",
        args.quarters, args.cycles, args.revised
    );
    println!("\n| measure | value |");
    println!("|---|---|");
    println!(
        "| current mirror | {:.1} MiB in {} partitions |",
        mib(current),
        args.quarters
    );
    println!(
        "| vintages after {} cycles | {:.1} MiB in {vint_files} files = {:.0} % of the current mirror ({:.1} % per cycle) |",
        args.cycles,
        mib(vint_bytes),
        100.0 * vint_bytes as f64 / current as f64,
        100.0 * vint_bytes as f64 / current as f64 / args.cycles as f64
    );
    println!(
        "| cycle time, vintages kept | {} (median over {} cycles) |",
        spread(times_kept),
        times_kept.len()
    );
    println!("| cycle time, vintages off | {} |", spread(times_plain));
    println!(
        "| read the current table (all partitions) | {} |",
        spread(&plain)
    );
    println!(
        "| read the table as of {at} ({from_vintages} of {} periods from vintages) | {} ({:.2}× the plain read) |",
        args.quarters,
        spread(&asof),
        bins::bench::median(asof.clone()) / bins::bench::median(plain.clone())
    );
    Ok(())
}

fn main() -> Result<()> {
    let args = Args::parse();
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(run(&args))
}
