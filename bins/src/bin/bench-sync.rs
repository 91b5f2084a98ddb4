//! `bench-sync`: the sync's speed and memory targets, measured side by side
//! with the references in `bins/bench/reference/` (see its README).
//!
//! ```text
//! cargo run --release -p bins --features bench --bin bench-sync -- \
//!     [--periods 10,100] [--daily 5000] [--runs 5] \
//!     [--python /tmp/peers/bin/python --reference-dir bins/bench/reference] \
//!     [--s3-endpoint http://127.0.0.1:8333 --s3-bucket statbank-test]
//! ```
//!
//! Every case is a whole process: ours is this binary re-executed with
//! `--child-sync` (it runs `bins::run_sync_cycle` exactly as `statbank-sync`
//! does and reports its own peak RSS and object-store requests); the
//! references run under `/usr/bin/time`. Rounds alternate the order; the
//! table at the end gives medians with the spread (min–max) of the rounds.
//!
//! 1. A FOLK1A-shaped table (OMRÅDE 105 × KØN 3 × ALDER 127 × CIVILSTAND 5 =
//!    200,025 cells per quarter) bootstrapped in one BULK request from the
//!    emulator on loopback, for each `--periods` count.
//! 2. A daily table of `--daily` periods (20 series) in one request.
//! 3. With an S3 server: the 10-period bootstrap into a bucket prefix,
//!    against the local one in the same rounds.
//! 4. A cycle in which nothing changed over the real 2,339-table catalog
//!    (locally, and on S3 when given): API requests, object-store requests,
//!    wall time.
//! 5. The FOLK1A-shaped body of `--interleaved` quarters with its periods
//!    alternating row by row (the emulator's `Interleave` fault), against
//!    the same body in order, in the same rounds.
//! 6. Wide rows: 8 codes of 4,000 bytes each, `--wide-periods` periods of
//!    1,024 rows (32 MB of body each) in one request.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use arrow_array::{ArrayRef, Float64Array, RecordBatch, StringArray};
use clap::Parser;
use partition_store::{partition_schema, PartitionStore};
use statbank_client::emulator::{EmuTable, EmuValue, Emulator, Endpoint, Fault, FaultKind, World};
use statbank_client::StatbankClient;
use sync_state::{DataDir, SyncState, TableId, TableState, Tid};

#[derive(Debug, Clone, Parser)]
#[command(name = "bench-sync")]
struct Args {
    /// FOLK1A-shaped period counts to bootstrap (comma-separated).
    #[arg(long, value_delimiter = ',', default_value = "10,100")]
    periods: Vec<usize>,
    /// Periods of the daily table (0 = skip).
    #[arg(long, default_value_t = 5000)]
    daily: usize,
    /// Quarters of the interleaved body (0 = skip).
    #[arg(long, default_value_t = 5)]
    interleaved: usize,
    /// Periods of the wide-row table, 32 MB of body each (0 = skip).
    #[arg(long, default_value_t = 40)]
    wide_periods: usize,
    /// Timed rounds per case.
    #[arg(long, default_value_t = 5)]
    runs: usize,
    /// A Python with the references' packages (bins/bench/reference/requirements.txt).
    #[arg(long)]
    python: Option<PathBuf>,
    /// The folder of the reference scripts (bins/bench/reference).
    #[arg(long)]
    reference_dir: Option<PathBuf>,
    /// Run the references only for these period counts (they need a lot of memory).
    #[arg(long, value_delimiter = ',', default_value = "10")]
    reference_periods: Vec<usize>,
    /// An S3 endpoint for the object-store cases (credentials from
    /// AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY).
    #[arg(long, env = "STATBANK_TEST_S3_ENDPOINT")]
    s3_endpoint: Option<String>,
    /// The bucket for the object-store cases.
    #[arg(long, default_value = "statbank-test")]
    s3_bucket: String,
    /// Skip the no-change catalog cycles.
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
    data_dir: Option<String>,
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
    let data = DataDir::open(&dir)?;
    let (manifest, store_requests) = rt.block_on(async {
        let client = StatbankClient::builder()
            .base_url(&base)
            .min_interval(Duration::ZERO)
            .build()?;
        let mut opts = bins::SyncOptions::on(data.clone());
        opts.gate.force = true;
        let m = bins::run_sync_cycle(&client, &opts).await?;
        Ok::<_, anyhow::Error>((m, data.storage().requests()))
    })?;
    if !manifest.status.is_ok() {
        bail!("sync status {}: {:?}", manifest.status, manifest.error);
    }
    println!(
        "rows={} files={} hwm_kib={} store_requests={store_requests}",
        manifest.summary.rows_written,
        manifest.summary.files_written,
        bins::bench::peak_rss_kib().unwrap_or(0)
    );
    Ok(())
}

#[derive(Debug, Clone, Copy, Default)]
struct Sample {
    wall_s: f64,
    hwm_kib: Option<u64>,
    rows: Option<u64>,
    store_requests: Option<u64>,
}

fn run_ours(base: &str, dir: &str, env: &[(String, String)]) -> Result<Sample> {
    let exe = std::env::current_exe()?;
    let t = Instant::now();
    let out = Command::new(exe)
        .args(["--child-sync", "--base-url", base, "--data-dir", dir])
        .envs(env.iter().map(|(k, v)| (k, v)))
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
        stdout.split_whitespace().find_map(|w| {
            w.strip_prefix(&format!("{k}="))
                .and_then(|v| v.parse().ok())
        })
    };
    Ok(Sample {
        wall_s,
        hwm_kib: field("hwm_kib"),
        rows: field("rows"),
        store_requests: field("store_requests"),
    })
}

fn run_reference(python: &Path, script: &Path, base: &str, dir: &Path) -> Result<Sample> {
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
        store_requests: None,
    })
}

/// Median and spread of a case.
struct Stats {
    wall: f64,
    wall_min: f64,
    wall_max: f64,
    rss_mib: f64,
    rss_min: f64,
}

fn stats(samples: &[Sample]) -> Stats {
    let walls: Vec<f64> = samples.iter().map(|s| s.wall_s).collect();
    let rss: Vec<f64> = samples
        .iter()
        .filter_map(|s| s.hwm_kib)
        .map(|k| k as f64 / 1024.0)
        .collect();
    Stats {
        wall: bins::bench::median(walls.clone()),
        wall_min: walls.iter().copied().fold(f64::INFINITY, f64::min),
        wall_max: walls.iter().copied().fold(0.0, f64::max),
        rss_mib: rss.iter().copied().fold(0.0, f64::max),
        rss_min: rss.iter().copied().fold(f64::INFINITY, f64::min),
    }
}

impl std::fmt::Display for Stats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{:.3} s ({:.3}–{:.3}), peak {:.1} MiB ({:.1}–{:.1})",
            self.wall, self.wall_min, self.wall_max, self.rss_mib, self.rss_min, self.rss_mib
        )
    }
}

/// The summary table, row by row.
#[derive(Default)]
struct Table(Vec<[String; 5]>);

impl Table {
    fn row(&mut self, work: &str, ours: String, reference: String, ratio: String, target: &str) {
        self.0
            .push([work.into(), ours, reference, ratio, target.into()]);
    }

    fn print(&self) {
        println!("\n| work | ours (median, min–max) | reference | ratio | target |");
        println!("|---|---|---|---|---|");
        for r in &self.0 {
            println!("| {} | {} | {} | {} | {} |", r[0], r[1], r[2], r[3], r[4]);
        }
    }
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

fn daily_world(days: usize) -> World {
    let start = chrono::NaiveDate::from_ymd_opt(1990, 1, 1).unwrap_or_default();
    let codes: Vec<String> = (0..days)
        .map(|i| {
            (start + chrono::Duration::days(i as i64))
                .format("%YM%mD%d")
                .to_string()
        })
        .collect();
    let refs: Vec<&str> = codes.iter().map(String::as_str).collect();
    let mut w = World::new();
    let mut t = EmuTable::synthetic("DNVALD", &refs, &[("VALUTA", 20)]);
    t.decimals = 4;
    w.insert(t);
    w
}

fn s3_env() -> Vec<(String, String)> {
    vec![("AWS_ALLOW_HTTP".into(), "true".into())]
}

async fn parent(args: &Args) -> Result<()> {
    if let Some(n) = args.serve {
        let emu = Emulator::start(folk1a_world(n)).await?;
        println!("{}", emu.base_url());
        tokio::signal::ctrl_c().await?;
        return Ok(());
    }
    let work = tempfile::tempdir()?;
    let mut table = Table::default();
    let mut first_rss: Option<f64> = None;
    for &n in &args.periods {
        folk1a_case(args, work.path(), n, &mut table, &mut first_rss).await?;
    }
    if args.daily > 0 {
        let emu = Emulator::start(daily_world(args.daily)).await?;
        let base = emu.base_url();
        let mut ours = Vec::new();
        for round in 0..args.runs.max(1) {
            let d = work.path().join(format!("daily-{round}"));
            ours.push(run_ours(&base, &d.display().to_string(), &[])?);
            std::fs::remove_dir_all(&d)?;
        }
        let s = stats(&ours);
        println!("daily table, {} periods in one request: {s}", args.daily);
        table.row(
            &format!(
                "bootstrap, daily table, {} periods × 20 series, one request",
                args.daily
            ),
            s.to_string(),
            "—".into(),
            first_rss
                .map(|r| format!("peak {:+.0}% vs 10 quarters", (s.rss_mib / r - 1.0) * 100.0))
                .unwrap_or_default(),
            "≤ 64 MiB",
        );
        emu.shutdown().await;
    }
    if args.interleaved > 0 {
        interleaved_case(args, work.path(), &mut table).await?;
    }
    if args.wide_periods > 0 {
        wide_case(args, work.path(), &mut table).await?;
    }
    if !args.skip_catalog {
        no_change_local(args, work.path(), &mut table).await?;
        if let Some(endpoint) = &args.s3_endpoint {
            no_change_s3(args, endpoint, &mut table).await?;
        }
    }
    table.print();
    Ok(())
}

/// The FOLK1A-shaped bootstrap of `n` quarters: ours, the references (for
/// `--reference-periods`), and on S3 (10 quarters, with an S3 endpoint).
async fn folk1a_case(
    args: &Args,
    work: &Path,
    n: usize,
    table: &mut Table,
    first_rss: &mut Option<f64>,
) -> Result<()> {
    let emu = Emulator::start(folk1a_world(n)).await?;
    let base = emu.base_url();
    let rows = (n * 200_025) as u64;
    println!(
        "FOLK1A-shaped bootstrap, {n} quarters ({rows} rows), one BULK request, emulator at {base}"
    );
    let references: Vec<(&str, PathBuf)> = match (&args.python, &args.reference_dir) {
        (Some(_), Some(dir)) if args.reference_periods.contains(&n) => vec![
            ("original (pandas)", dir.join("original_sync.py")),
            ("pyarrow", dir.join("pyarrow_sync.py")),
            ("DuckDB", dir.join("duckdb_sync.py")),
        ],
        _ => vec![],
    };
    let s3 = args.s3_endpoint.as_ref().filter(|_| n == 10);
    let mut ours = Vec::new();
    let mut ours_s3 = Vec::new();
    let mut theirs: Vec<Vec<Sample>> = vec![Vec::new(); references.len()];
    for round in 0..args.runs.max(1) {
        let mut once = || -> Result<()> {
            let d = work.join(format!("ours-{n}-{round}"));
            let s = run_ours(&base, &d.display().to_string(), &[])?;
            if s.rows != Some(rows) {
                bail!("ours wrote {:?} rows, expected {rows}", s.rows);
            }
            ours.push(s);
            std::fs::remove_dir_all(&d)?;
            if let Some(endpoint) = s3 {
                let url = format!(
                    "s3://{}/bench-{}-{n}-{round}",
                    args.s3_bucket,
                    std::process::id()
                );
                let mut env = s3_env();
                env.push(("AWS_ENDPOINT_URL".into(), endpoint.clone()));
                let s = run_ours(&base, &url, &env)?;
                if s.rows != Some(rows) {
                    bail!("ours on S3 wrote {:?} rows, expected {rows}", s.rows);
                }
                ours_s3.push(s);
            }
            Ok(())
        };
        if round % 2 == 0 {
            once()?;
        }
        for (i, (_, script)) in references.iter().enumerate() {
            let d = work.join(format!("ref{i}-{n}-{round}"));
            let python = args.python.as_deref().unwrap_or(Path::new("python3"));
            match run_reference(python, script, &base, &d) {
                Ok(s) => theirs[i].push(s),
                Err(e) => println!("  reference {} failed: {e:#}", script.display()),
            }
            let _ = std::fs::remove_dir_all(&d);
        }
        if round % 2 == 1 {
            once()?;
        }
    }
    let s = stats(&ours);
    println!("  ours: {s}");
    let first = *first_rss.get_or_insert(s.rss_mib);
    let mut reference = "—".to_string();
    let mut ratio = if n == args.periods[0] {
        String::new()
    } else {
        format!(
            "peak {:+.0}% vs {} quarters",
            (s.rss_mib / first - 1.0) * 100.0,
            args.periods[0]
        )
    };
    for (i, (name, _)) in references.iter().enumerate() {
        if theirs[i].is_empty() {
            continue;
        }
        let t = stats(&theirs[i]);
        println!("  {name}: {t}");
        println!(
            "    ratio ours/{name}: wall {:.3}, peak {:.3}",
            s.wall / t.wall,
            s.rss_mib / t.rss_mib
        );
        if i == 0 {
            reference = format!("{name} {:.3} s, {:.0} MiB", t.wall, t.rss_mib);
            ratio = format!("{:.3} (wall)", s.wall / t.wall);
        }
    }
    table.row(
        &format!("bootstrap, FOLK1A-shaped, {n} quarters, {rows} rows, one BULK body"),
        s.to_string(),
        reference,
        ratio,
        if n == args.periods[0] {
            "≤ 0.2× the original (stretch 0.12×); ≤ 64 MiB"
        } else {
            "≤ 64 MiB, independent of body size"
        },
    );
    if !ours_s3.is_empty() {
        let t = stats(&ours_s3);
        let reqs = ours_s3
            .iter()
            .filter_map(|x| x.store_requests)
            .max()
            .unwrap_or(0);
        println!("  ours into S3: {t}, {reqs} object-store requests");
        table.row(
            &format!("bootstrap into S3 (SeaweedFS), {n} quarters"),
            format!("{t}; {reqs} store requests"),
            format!("local disk {:.3} s", s.wall),
            format!("{:.2}× local", t.wall / s.wall),
            "≤ 1.5× local; ≤ 100 MiB",
        );
    }
    emu.shutdown().await;
    Ok(())
}

/// Ours on `base` for `runs` rounds, each into a fresh folder; every round
/// must write `rows` rows.
fn rounds(args: &Args, base: &str, work: &Path, name: &str, rows: u64) -> Result<Vec<Sample>> {
    let mut out = Vec::new();
    for round in 0..args.runs.max(1) {
        let d = work.join(format!("{name}-{round}"));
        let s = run_ours(base, &d.display().to_string(), &[])?;
        if s.rows != Some(rows) {
            bail!("{name}: wrote {:?} rows, expected {rows}", s.rows);
        }
        out.push(s);
        std::fs::remove_dir_all(&d)?;
    }
    Ok(out)
}

/// The same FOLK1A-shaped body in order and with its periods alternating
/// row by row, round after round.
async fn interleaved_case(args: &Args, work: &Path, table: &mut Table) -> Result<()> {
    let n = args.interleaved;
    let rows = (n * 200_025) as u64;
    let ordered = Emulator::start(folk1a_world(n)).await?;
    let mixed = Emulator::start(folk1a_world(n)).await?;
    mixed
        .handle()
        .add_fault(Fault::always(Endpoint::Data, FaultKind::Interleave));
    let (mut a, mut b) = (Vec::new(), Vec::new());
    for round in 0..args.runs.max(1) {
        let one = Args {
            runs: 1,
            ..args.clone()
        };
        let o = rounds(
            &one,
            &ordered.base_url(),
            work,
            &format!("ordered-{round}"),
            rows,
        )?;
        let m = rounds(
            &one,
            &mixed.base_url(),
            work,
            &format!("mixed-{round}"),
            rows,
        )?;
        a.extend(o);
        b.extend(m);
    }
    let (o, m) = (stats(&a), stats(&b));
    println!("interleaved body, {n} quarters ({rows} rows): {m}; in order: {o}");
    table.row(
        &format!("bootstrap, {n} quarters ({rows} rows), periods alternating row by row"),
        m.to_string(),
        format!(
            "the same body in order {:.3} s, {:.1} MiB",
            o.wall, o.rss_mib
        ),
        format!("{:.2}× (wall)", m.wall / o.wall),
        "≤ 2× the ordered body; ≤ 64 MiB",
    );
    ordered.shutdown().await;
    mixed.shutdown().await;
    Ok(())
}

/// A table of 8 codes of 4,000 bytes: 1,024 rows (32 MB of body) a period.
fn wide_world(periods: usize) -> World {
    let codes: Vec<String> = (0..periods).map(|i| format!("{}", 1900 + i)).collect();
    let refs: Vec<&str> = codes.iter().map(String::as_str).collect();
    let dims: Vec<(String, usize)> = (0..8)
        .map(|i| (format!("V{i}"), if i == 0 { 8 } else { 2 }))
        .collect();
    let dim_refs: Vec<(&str, usize)> = dims.iter().map(|(n, k)| (n.as_str(), *k)).collect();
    let mut t = EmuTable::synthetic("WIDE", &refs, &dim_refs);
    for v in &mut t.variables {
        for (k, value) in v.values.iter_mut().enumerate() {
            *value = EmuValue::code(&format!("{k}{}", "w".repeat(3999)));
        }
    }
    let mut w = World::new();
    w.insert(t);
    w
}

async fn wide_case(args: &Args, work: &Path, table: &mut Table) -> Result<()> {
    let n = args.wide_periods;
    let rows = (n * 1024) as u64;
    let emu = Emulator::start(wide_world(n)).await?;
    let s = stats(&rounds(args, &emu.base_url(), work, "wide", rows)?);
    let mb = rows as f64 * 8.0 * 4001.0 / 1e6;
    println!("wide rows, {n} periods ({rows} rows of 32 KB, {mb:.0} MB of body): {s}");
    table.row(
        &format!("bootstrap, wide rows (8 codes of 4,000 bytes), {rows} rows, {mb:.0} MB body"),
        s.to_string(),
        "—".into(),
        String::new(),
        "≤ 64 MiB whatever the row width",
    );
    emu.shutdown().await;
    Ok(())
}

/// One partition and an up-to-date state entry per table of the catalog.
fn prepare_catalog(world: &World, data: &DataDir) -> Result<usize> {
    let store = PartitionStore::new(data);
    let mut state = SyncState::default();
    for (id, t) in &world.tables {
        let table = TableId::new(id.clone())?;
        let tid = Tid::new(t.latest_period().unwrap_or("2024").to_string())?;
        let schema = partition_schema(&["TID", "INDHOLD"]);
        let batch = RecordBatch::try_new(
            schema,
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
                partition_count: Some(1),
                ..TableState::default()
            },
        );
    }
    state.save(data)?;
    Ok(world.tables.len())
}

async fn no_change(
    args: &Args,
    emu: &Emulator,
    location: &str,
    env: &[(String, String)],
) -> Result<(Stats, usize, u64)> {
    let mut samples = Vec::new();
    let mut api = 0;
    for _ in 0..args.runs.max(1) {
        emu.handle().clear_requests();
        let s = run_ours(&emu.base_url(), location, env)?;
        api = emu.handle().requests().len();
        if api != 1 || s.rows != Some(0) {
            bail!(
                "a no-change cycle made {api} API requests and wrote {:?} rows",
                s.rows
            );
        }
        samples.push(s);
    }
    let store = samples
        .iter()
        .filter_map(|s| s.store_requests)
        .max()
        .unwrap_or(0);
    Ok((stats(&samples), api, store))
}

async fn no_change_local(args: &Args, work: &Path, table: &mut Table) -> Result<()> {
    let world = World::full_catalog();
    let emu = Emulator::start(world.clone()).await?;
    let dir = work.join("catalog");
    let n = prepare_catalog(&world, &DataDir::local(&dir))?;
    let (s, api, _) = no_change(args, &emu, &dir.display().to_string(), &[]).await?;
    println!("no-change cycle over the real catalog ({n} tables), local: {s}, {api} API request");
    table.row(
        &format!("no-change cycle, real catalog ({n} tables), local disk"),
        format!("{s}; {api} API request"),
        "—".into(),
        String::new(),
        "1 API request",
    );
    emu.shutdown().await;
    Ok(())
}

async fn no_change_s3(args: &Args, endpoint: &str, table: &mut Table) -> Result<()> {
    let world = World::full_catalog();
    let emu = Emulator::start(world.clone()).await?;
    let url = format!(
        "s3://{}/bench-catalog-{}",
        args.s3_bucket,
        std::process::id()
    );
    let options = vec![
        ("aws_endpoint".to_string(), endpoint.to_string()),
        ("aws_allow_http".to_string(), "true".to_string()),
    ];
    let data = DataDir::open_with(&url, &options)?;
    let t = Instant::now();
    let n = tokio::task::spawn_blocking(move || prepare_catalog(&world, &data)).await??;
    println!(
        "prepared {n} tables on {url} in {:.1} s (untimed)",
        t.elapsed().as_secs_f64()
    );
    let mut env = s3_env();
    env.push(("AWS_ENDPOINT_URL".into(), endpoint.to_string()));
    let (s, api, store) = no_change(args, &emu, &url, &env).await?;
    println!("no-change cycle over the real catalog ({n} tables), S3: {s}, {api} API request, {store} store requests");
    table.row(
        &format!("no-change cycle, real catalog ({n} tables), S3"),
        format!("{s}; {api} API request, {store} store requests"),
        "—".into(),
        String::new(),
        "1 API request, constant store requests, ≤ 0.5 s",
    );
    emu.shutdown().await;
    Ok(())
}
