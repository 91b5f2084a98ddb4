//! `bench-metadata`: fills an empty `meta` schema for the real 2,339-table
//! catalog (the emulator's world of it) — what the first
//! `statbank-apply --metadata` on an existing mirror does — and reports the
//! time and peak memory.
//!
//! ```text
//! cargo run --release -p bins --features bench --bin bench-metadata -- \
//!     --database-url postgres://postgres@127.0.0.1:5432/postgres [--runs 3] [--history]
//! ```
//!
//! Set-up (not timed): the emulator serves `World::full_catalog()`; a data
//! folder gets a table folder per table and its tableinfo in Danish and
//! English and the subject trees, cached as the sync caches them (fetched
//! from the emulator); a scratch database `bench_metadata_<pid>` is created
//! on the server of `--database-url` and dropped at the end.
//!
//! Each run drops the `meta` schema (untimed) and re-executes this binary as
//! a child calling `fact_apply::prepare_metadata`, timed as a whole process
//! (connection included); peak RSS from the child's `VmHWM`. The tables
//! have no fact tables, so the figure is the metadata alone: one
//! transaction per table with its `meta.tables`, `meta.variables`,
//! `meta.value_labels` and `meta.periods` rows in both languages, then the
//! subject tree.

use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;

use anyhow::{anyhow, bail, Context, Result};
use bins::bench::{spread, spread_text, with_dbname, Scratch};
use clap::Parser;
use fact_apply::postgres::{Client, NoTls};
use fact_apply::{ApplyOptions, Metadata};
use statbank_client::emulator::{Emulator, World};
use statbank_client::{Lang, StatbankClient};
use sync_state::{DataDir, TableId};

#[derive(Debug, Parser)]
#[command(name = "bench-metadata")]
struct Args {
    /// Server to benchmark on (a scratch database is created there and dropped).
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    database_url: String,
    /// Timed runs.
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Also keep `meta_history` (`--history`).
    #[arg(long)]
    history: bool,
    /// Keep the scratch database.
    #[arg(long)]
    keep: bool,
    /// Internal: fill the schema once and report (used by the parent).
    #[arg(long, hide = true)]
    child: bool,
    /// Internal: data folder of the child.
    #[arg(long, hide = true)]
    data_dir: Option<PathBuf>,
}

fn main() -> Result<()> {
    let args = Args::parse();
    if args.child {
        return child(&args);
    }
    parent(&args)
}

fn options(history: bool) -> ApplyOptions {
    ApplyOptions {
        history,
        metadata: Metadata::Maintain {
            schema: "meta".into(),
        },
        ..ApplyOptions::default()
    }
}

fn child(args: &Args) -> Result<()> {
    let data = DataDir::local(args.data_dir.clone().ok_or_else(|| anyhow!("--data-dir"))?);
    let t0 = Instant::now();
    let mut client = Client::connect(&args.database_url, NoTls)?;
    let filled = fact_apply::prepare_metadata(&mut client, &data, &options(args.history))?
        .ok_or_else(|| anyhow!("the meta schema existed already"))?;
    println!(
        "CHILD total_s={:.3} hwm_kib={} tables={} failed={}",
        t0.elapsed().as_secs_f64(),
        bins::bench::peak_rss_kib().unwrap_or(0),
        filled.tables,
        filled.failed
    );
    Ok(())
}

/// The mirror's side: a folder per table, its tableinfo in both languages
/// and the subject trees, fetched from the emulator as the sync would.
async fn prepare(world: &World, data: &DataDir) -> Result<usize> {
    let emu = Emulator::start(world.clone()).await?;
    let client = StatbankClient::builder()
        .base_url(emu.base_url())
        .min_interval(std::time::Duration::ZERO)
        .max_concurrent(8)
        .build()?;
    for id in world.tables.keys() {
        let table = TableId::new(id.clone())?;
        std::fs::create_dir_all(
            data.local_root()
                .ok_or_else(|| anyhow!("a local data folder"))?
                .join(data.table_key(&table)),
        )?;
        for lang in Lang::ALL {
            let (_, raw) = client
                .table_info_in(&table, lang)
                .await
                .with_context(|| format!("tableinfo of {table} in {lang}"))?;
            data.storage()
                .put(&data.metadata_file_key_in(&table, lang), &raw)?;
        }
    }
    for lang in Lang::ALL {
        let (_, raw) = client.subjects_in(lang).await?;
        data.storage().put(&data.subjects_key(lang), &raw)?;
    }
    emu.shutdown().await;
    Ok(world.tables.len())
}

fn parent(args: &Args) -> Result<()> {
    let scratch = Scratch::new("bench-metadata")?;
    let data = DataDir::local(scratch.0.join("data"));
    let world = World::full_catalog();
    let t = Instant::now();
    let n = tokio::runtime::Runtime::new()?.block_on(prepare(&world, &data))?;
    eprintln!(
        "set-up: {n} tables' tableinfo (da, en) and the subject trees cached in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    let db = format!("bench_metadata_{}", std::process::id());
    let mut admin = Client::connect(&args.database_url, NoTls)?;
    admin.batch_execute(&format!("CREATE DATABASE {db}"))?;
    let url = with_dbname(&args.database_url, &db);
    let result = runs(args, &url, &data, n);
    if !args.keep {
        admin.batch_execute(&format!("DROP DATABASE {db} WITH (FORCE)"))?;
    }
    result
}

fn runs(args: &Args, url: &str, data: &DataDir, n: usize) -> Result<()> {
    let mut db = Client::connect(url, NoTls)?;
    let (mut secs, mut peaks) = (Vec::new(), Vec::new());
    let mut counts = (0, 0, 0);
    for _ in 0..args.runs.max(1) {
        db.batch_execute(
            "DROP SCHEMA IF EXISTS meta CASCADE; DROP SCHEMA IF EXISTS meta_history CASCADE; CHECKPOINT",
        )?;
        let t = Instant::now();
        let mut cmd = Command::new(std::env::current_exe()?);
        cmd.arg("--child")
            .arg("--database-url")
            .arg(url)
            .arg("--data-dir")
            .arg(data.describe());
        if args.history {
            cmd.arg("--history");
        }
        let out = cmd.env_remove("DATABASE_URL").output()?;
        let wall = t.elapsed().as_secs_f64();
        let stdout = String::from_utf8_lossy(&out.stdout);
        if out.status.success() && !out.stderr.is_empty() {
            eprint!("{}", String::from_utf8_lossy(&out.stderr));
        }
        if !out.status.success() {
            bail!(
                "the child failed: {stdout}{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let field = |k: &str| {
            stdout
                .split_whitespace()
                .find_map(|kv| kv.strip_prefix(k).and_then(|v| v.strip_prefix('=')))
                .and_then(|v| v.parse::<u64>().ok())
        };
        if field("failed") != Some(0) || field("tables") != Some(n as u64) {
            bail!("the child filled {stdout}, expected {n} tables and none failed");
        }
        secs.push(wall);
        peaks.push(field("hwm_kib").unwrap_or(0) as f64 / 1024.0);
        let count = |db: &mut Client, t: &str| -> Result<i64> {
            Ok(db
                .query_one(&format!("SELECT count(*) FROM meta.{t}"), &[])?
                .get(0))
        };
        counts = (
            count(&mut db, "tables")?,
            count(&mut db, "value_labels")?,
            count(&mut db, "periods")?,
        );
    }
    println!(
        "| case | time (median, spread) | peak RSS (median, spread) | rows |\n|---|---|---|---|\n\
         | metadata of the real catalog ({n} tables, da + en) into an empty meta schema{} | {} | {} | {} tables rows, {} value labels, {} periods |",
        if args.history { ", with --history" } else { "" },
        spread_text(&secs),
        spread(&peaks, "MiB", 1),
        counts.0,
        counts.1,
        counts.2
    );
    Ok(())
}
