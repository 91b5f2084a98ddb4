//! `bench-sync`: the sync's speed and memory targets, measured side by side
//! with the alternatives in `../shared/bench/`.
//!
//! ```text
//! cargo run --release -p bins --bin bench-sync -- [--periods 10,100] [--runs 3]
//!     [--python /tmp/peers/bin/python] [--peers-dir ../shared/bench]
//! ```
//!
//! 1. A FOLK1A-shaped table (OMRÅDE 105 × KØN 3 × ALDER 127 × CIVILSTAND 5 =
//!    200,025 cells per quarter) served by the emulator on loopback, and a
//!    bootstrap cycle of it in one BULK request, for each `--periods` count.
//!    Ours runs as a child process (this binary re-executed with
//!    `--child-sync`, which runs `bins::run_sync_cycle` exactly as
//!    `statbank-sync` does and reports its own peak RSS); the peers run under
//!    `/usr/bin/time`. Wall times are whole processes; rounds alternate the
//!    order; medians are printed.
//! 2. A cycle in which nothing changed over the real 2,339-table catalog:
//!    the data folder is prepared (untimed) with one partition and an
//!    up-to-date state entry per table; the forced cycle is timed and its HTTP
//!    requests counted at the emulator.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use arrow_array::{ArrayRef, Float64Array, RecordBatch, StringArray};
use clap::Parser;
use partition_store::{partition_schema, PartitionStore};
use statbank_client::emulator::{EmuTable, Emulator, World};
use statbank_client::StatbankClient;
use sync_state::{DataDir, SyncState, TableId, TableState, Tid};

#[derive(Debug, Parser)]
#[command(name = "bench-sync")]
struct Args {
    /// Period counts to bootstrap (comma-separated).
    #[arg(long, value_delimiter = ',', default_value = "10,100")]
    periods: Vec<usize>,
    /// Timed rounds per configuration.
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// A Python with pandas, pyarrow and httpx for the peers (skipped if absent).
    #[arg(long)]
    python: Option<PathBuf>,
    /// Folder of the peer scripts.
    #[arg(long, default_value = "../shared/bench")]
    peers_dir: PathBuf,
    /// Run the peers only for these period counts (they need a lot of memory).
    #[arg(long, value_delimiter = ',', default_value = "10")]
    peer_periods: Vec<usize>,
    /// Skip the no-change catalog cycle.
    #[arg(long)]
    skip_catalog: bool,
    /// Only serve the FOLK1A-shaped world with this many periods (for
    /// profiling `statbank-sync` against it by hand); ctrl-c to stop.
    #[arg(long)]
    serve: Option<usize>,
    #[arg(long, hide = true)]
    child_sync: bool,
    #[arg(long, hide = true)]
    base_url: Option<String>,
    #[arg(long, hide = true)]
    data_dir: Option<PathBuf>,
    #[arg(long, hide = true)]
    force: bool,
}

fn main() -> Result<()> {
    let args = Args::parse();
    if args.child_sync {
        return child_sync(&args);
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(parent(&args))
}

/// The child: one sync cycle, like `statbank-sync --force-catalog-poll`.
fn child_sync(args: &Args) -> Result<()> {
    let base = args.base_url.clone().ok_or_else(|| anyhow!("--base-url"))?;
    let dir = args.data_dir.clone().ok_or_else(|| anyhow!("--data-dir"))?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let manifest = rt.block_on(async {
        let client = StatbankClient::builder()
            .base_url(&base)
            .min_interval(Duration::ZERO)
            .build()?;
        let mut opts = bins::SyncOptions::new(&dir);
        opts.force_catalog_poll = true;
        bins::run_sync_cycle(&client, &opts)
            .await
            .map_err(anyhow::Error::from)
    })?;
    if !manifest.status.is_ok() {
        bail!("sync status {}: {:?}", manifest.status, manifest.error);
    }
    println!(
        "rows={} files={} hwm_kib={}",
        manifest.summary.rows_written,
        manifest.summary.files_written,
        bins::bench::peak_rss_kib().unwrap_or(0)
    );
    Ok(())
}

#[derive(Debug, Clone, Copy)]
struct Sample {
    wall_s: f64,
    hwm_kib: Option<u64>,
    rows: Option<u64>,
}

fn run_ours(base: &str, dir: &Path) -> Result<Sample> {
    let exe = std::env::current_exe()?;
    let t = Instant::now();
    let out = Command::new(exe)
        .args(["--child-sync", "--base-url", base, "--data-dir"])
        .arg(dir)
        .output()?;
    let wall_s = t.elapsed().as_secs_f64();
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        bail!(
            "child failed: {stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let field = |k: &str| {
        stdout
            .split_whitespace()
            .find_map(|w| w.strip_prefix(&format!("{k}=")).map(str::to_string))
    };
    Ok(Sample {
        wall_s,
        hwm_kib: field("hwm_kib").and_then(|v| v.parse().ok()),
        rows: field("rows").and_then(|v| v.parse().ok()),
    })
}

fn run_peer(python: &Path, script: &Path, base: &str, dir: &Path) -> Result<Sample> {
    let t = Instant::now();
    let out = Command::new("/usr/bin/time")
        .args(["-f", bins::bench::TIME_FORMAT])
        .arg(python)
        .arg(script)
        .args([base, "FOLK1A"])
        .arg(dir)
        .output()
        .context("running /usr/bin/time")?;
    let wall_s = t.elapsed().as_secs_f64();
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        bail!("{} failed: {stderr}", script.display());
    }
    Ok(Sample {
        wall_s,
        hwm_kib: bins::bench::time_maxrss_kib(&stderr),
        rows: String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .next()
            .and_then(|v| v.parse().ok()),
    })
}

fn report(name: &str, samples: &[Sample]) -> (f64, f64) {
    let wall = bins::bench::median(samples.iter().map(|s| s.wall_s).collect());
    let rss = samples.iter().filter_map(|s| s.hwm_kib).max().unwrap_or(0) as f64 / 1024.0;
    let rows = samples.iter().find_map(|s| s.rows).unwrap_or(0);
    println!(
        "  {name:<28} wall {wall:>7.3} s (median of {})  peak RSS {rss:>7.1} MiB  rows {rows}",
        samples.len()
    );
    (wall, rss)
}

fn folk1a_world(periods: usize) -> World {
    let quarters: Vec<String> = (0..periods)
        .map(|i| format!("{}K{}", 2000 + i / 4, i % 4 + 1))
        .collect();
    let codes: Vec<&str> = quarters.iter().map(String::as_str).collect();
    let mut w = World::new();
    w.insert(EmuTable::synthetic(
        "FOLK1A",
        &codes,
        &[
            ("OMRÅDE", 105),
            ("KØN", 3),
            ("ALDER", 127),
            ("CIVILSTAND", 5),
        ],
    ));
    w
}

async fn parent(args: &Args) -> Result<()> {
    if let Some(n) = args.serve {
        let emu = Emulator::start(folk1a_world(n)).await?;
        println!("{}", emu.base_url());
        tokio::signal::ctrl_c().await?;
        return Ok(());
    }
    let work = tempfile::tempdir()?;
    let mut ours_10: Option<f64> = None;
    for &n in &args.periods {
        let emu = Emulator::start(folk1a_world(n)).await?;
        let base = emu.base_url();
        println!(
            "FOLK1A-shaped bootstrap, {n} periods ({} rows), one BULK request, emulator at {base}",
            n * 200_025
        );
        let peers: Vec<(&str, PathBuf)> = match (&args.python, args.peer_periods.contains(&n)) {
            (Some(_), true) => vec![
                (
                    "seed_like_sync.py (original)",
                    args.peers_dir.join("seed_like_sync.py"),
                ),
                (
                    "arrow_sync.py (pyarrow)",
                    args.peers_dir.join("arrow_sync.py"),
                ),
            ],
            _ => vec![],
        };
        let mut ours = Vec::new();
        let mut theirs: Vec<Vec<Sample>> = vec![Vec::new(); peers.len()];
        for round in 0..args.runs.max(1) {
            let mut run_ours_once = || -> Result<()> {
                let d = work.path().join(format!("ours-{n}-{round}"));
                let s = run_ours(&base, &d)?;
                if s.rows != Some((n * 200_025) as u64) {
                    bail!("ours wrote {:?} rows, expected {}", s.rows, n * 200_025);
                }
                ours.push(s);
                std::fs::remove_dir_all(&d)?;
                Ok(())
            };
            if round % 2 == 0 {
                run_ours_once()?;
            }
            for (i, (_, script)) in peers.iter().enumerate() {
                let d = work.path().join(format!("peer{i}-{n}-{round}"));
                let python = args.python.as_deref().unwrap_or(Path::new("python3"));
                match run_peer(python, script, &base, &d) {
                    Ok(s) => theirs[i].push(s),
                    Err(e) => println!("  peer {} failed: {e:#}", script.display()),
                }
                let _ = std::fs::remove_dir_all(&d);
            }
            if round % 2 == 1 {
                run_ours_once()?;
            }
        }
        let (wall, rss) = report("ours (statbank-sync cycle)", &ours);
        for (i, (name, _)) in peers.iter().enumerate() {
            if !theirs[i].is_empty() {
                let (pw, prss) = report(name, &theirs[i]);
                println!(
                    "    ratio ours/peer: wall {:.3}, peak RSS {:.3}",
                    wall / pw,
                    rss / prss
                );
            }
        }
        if n == 10 {
            ours_10 = Some(rss);
            println!("    target: wall <= 0.5 s, peak RSS <= 100 MiB");
        } else if let Some(r10) = ours_10 {
            println!(
                "    peak RSS vs 10 periods: {:+.1}% (target within 10%)",
                (rss / r10 - 1.0) * 100.0
            );
        }
        emu.shutdown().await;
    }
    if !args.skip_catalog {
        no_change_cycle(args, work.path()).await?;
    }
    Ok(())
}

/// Prepares a data folder in which every table of the real catalog is up to
/// date, then times a forced cycle.
async fn no_change_cycle(args: &Args, work: &Path) -> Result<()> {
    let world = World::full_catalog();
    let emu = Emulator::start(world.clone()).await?;
    let base = emu.base_url();
    let dir = work.join("catalog");
    let data = DataDir::new(&dir);
    let store = PartitionStore::new(&data);
    let mut state = SyncState::default();
    let ids: Vec<String> = world.tables.keys().cloned().collect();
    for id in &ids {
        let t = world.table(id).ok_or_else(|| anyhow!("table {id}"))?;
        let table = TableId::new(id.clone())?;
        let tid = Tid::new(t.latest_period().unwrap_or("2024").to_string())?;
        let schema = partition_schema(&["TID", "INDHOLD"]);
        let batch = RecordBatch::try_new(
            schema.clone(),
            vec![
                std::sync::Arc::new(StringArray::from(vec![tid.as_str()])) as ArrayRef,
                std::sync::Arc::new(Float64Array::from(vec![Some(1.0)])) as ArrayRef,
            ],
        )?;
        store.write_partition(&table, &tid, &[batch], &Default::default())?;
        state.tables.insert(
            table,
            TableState {
                last_seen_updated: Some(t.updated.clone()),
                bootstrap_complete: true,
                ..TableState::default()
            },
        );
    }
    state.save(&data)?;
    println!(
        "no-change cycle over the real catalog ({} tables), emulator at {base}",
        ids.len()
    );
    let mut samples = Vec::new();
    for _ in 0..args.runs.max(1) {
        emu.handle().clear_requests();
        let s = run_ours(&base, &dir)?;
        let requests = emu.handle().requests().len();
        println!(
            "  round: wall {:.3} s, HTTP requests {requests}, rows written {:?}",
            s.wall_s, s.rows
        );
        if requests != 1 || s.rows != Some(0) {
            bail!(
                "a no-change cycle made {requests} requests and wrote {:?} rows",
                s.rows
            );
        }
        samples.push(s);
    }
    report("ours (no-change cycle)", &samples);
    println!("    target: exactly 1 request, wall < 0.3 s");
    emu.shutdown().await;
    Ok(())
}
