//! `bench-reconcile`: measures `fact_apply::reconcile` on the FOLK1A-shaped
//! table of `bench-apply`, with nothing to find and with one edited row,
//! against two floors measured in the same run: `COPY fact.folk1a TO STDOUT
//! (FORMAT binary)` by `psql` (the database side's bytes) and reading
//! every partition (the mirror side's rows).
//!
//! ```text
//! cargo run --release -p bins --features bench --bin bench-reconcile -- \
//!     --database-url postgres://postgres@127.0.0.1:5432/test [--quarters 10] [--runs 5]
//! ```
//!
//! Set-up (not timed): a fresh database `bench_reconcile_<pid>` on the
//! server of `--database-url`, `--quarters` × 200,025 rows written as
//! partitions and loaded into `fact.folk1a` by the apply (`--create-missing`,
//! run as a child). Each round runs, in rotating order and each as a whole
//! process after an untimed `VACUUM ANALYZE` and `CHECKPOINT`: the
//! reconcile (`--reconcile`, report written), the COPY floor, the read
//! floor, and the same apply again into a schema of its own (created by
//! it, dropped after), whose peak RSS is the apply's budget for the same
//! table. Then one row's `indhold` is edited and the reconcile timed
//! again, `--runs` times; then every figure of that row's quarter is
//! revised by hand (a period restored from an old copy: 200,025 rows on
//! each side that the other lacks) and the reconcile timed again. Every
//! reconcile's report is checked (nothing found; then exactly that period
//! with one row, then every row, on each side). Peak RSS from `VmHWM` or
//! `/usr/bin/time`; a child's peak heap (what it allocated at most at
//! once) from an instrumented system allocator: the peak RSS also counts
//! the program's own pages as far as it ran them, which vary by a few
//! hundred KiB between runs of the same work. Prints one table of medians
//! with the spread.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{anyhow, bail, Context, Result};
use bins::bench::folk1a::{self, quarter, ROWS_PER_QUARTER, TABLE};
use bins::bench::{median, spread, spread_text, with_dbname, Scratch};
use clap::{Parser, ValueEnum};
use fact_apply::postgres::{Client, NoTls};
use fact_apply::{apply_run, reconcile, ApplyOptions, ReconcileOptions};
use partition_store::PartitionStore;
use peakmem_alloc::PeakMemAllocTrait;
use sync_state::{
    DataDir, Frequency, ReconcileStatus, RunId, RunManifest, RunStatus, Summary, TableId,
    TableResult, Tid, UtcSecond,
};

#[derive(Debug, Parser)]
#[command(name = "bench-reconcile")]
struct Args {
    /// Server to benchmark on (a scratch database is created there and dropped).
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    database_url: String,
    /// Quarters in the table (10: 2,000,250 rows).
    #[arg(long, default_value_t = 10)]
    quarters: usize,
    /// Timed rounds.
    #[arg(long, default_value_t = 5)]
    runs: usize,
    /// Keep the scratch database and data folder (to profile a child on
    /// them: `--child reconcile --data-dir … --database-url …`).
    #[arg(long)]
    keep: bool,
    /// Do not cache the table's tableinfo: the reconcile then has no column
    /// to narrow a differing period by, and reads its differing buckets
    /// again instead.
    #[arg(long)]
    no_tableinfo: bool,
    /// Internal: what the child runs.
    #[arg(long, hide = true, value_enum)]
    child: Option<Child>,
    /// Internal: data folder of the child.
    #[arg(long, hide = true)]
    data_dir: Option<PathBuf>,
    /// Internal: the schema the apply child loads into.
    #[arg(long, hide = true, default_value = "fact")]
    schema: String,
}

/// What a child process runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Child {
    /// The set-up's apply (every quarter, the table created).
    Apply,
    /// One reconcile.
    Reconcile,
    /// Reads every partition (the mirror floor).
    Read,
}

const RUN: &str = "20260101T000000Z";

/// The system allocator, counting the heap's peak (the children's
/// `heap_kib`).
#[global_allocator]
static HEAP: &peakmem_alloc::PeakMemAlloc<std::alloc::System> = &peakmem_alloc::INSTRUMENTED_SYSTEM;

fn main() -> Result<()> {
    let args = Args::parse();
    match args.child {
        Some(kind) => child(&args, kind),
        None => parent(&args),
    }
}

fn child(args: &Args, kind: Child) -> Result<()> {
    // RUST_LOG=fact_apply=debug shows the reconcile's passes.
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .init();
    let data = DataDir::local(args.data_dir.clone().ok_or_else(|| anyhow!("--data-dir"))?);
    let t0 = Instant::now();
    let line = match kind {
        Child::Apply => {
            let mut client = Client::connect(&args.database_url, NoTls)?;
            let opts = ApplyOptions {
                create_missing: true,
                schema: args.schema.clone(),
                ..ApplyOptions::default()
            };
            let r = apply_run(&mut client, &data, &RunId::new(RUN)?, &opts)?;
            if r.status != RunStatus::Success {
                bail!("the set-up apply ended {}: {:?}", r.status, r.tables);
            }
            String::new()
        }
        Child::Reconcile => {
            let mut client = Client::connect(&args.database_url, NoTls)?;
            let now = UtcSecond::new(chrono::Utc::now());
            let id = sync_state::ReconcileReport::unused_id(&data, now)?;
            let opts = ReconcileOptions {
                read_connection: Some(args.database_url.parse()?),
                ..ReconcileOptions::default()
            };
            let r = reconcile(&mut client, &data, &id, &opts)?;
            let t = r
                .tables
                .get(&TableId::new(TABLE)?)
                .ok_or_else(|| anyhow!("no {TABLE} in the report"))?;
            let (only_m, only_d): (u64, u64) = t
                .differs
                .iter()
                .map(|d| (d.only_in_mirror, d.only_in_db))
                .fold((0, 0), |a, b| (a.0 + b.0, a.1 + b.1));
            format!(
                " status={} differs={} only_in_mirror={only_m} only_in_db={only_d} missing={} extra={} rows_compared={}",
                r.status,
                t.differs.len(),
                t.missing_in_db.len(),
                t.extra_in_db.len(),
                t.rows_compared
            )
        }
        Child::Read => {
            let store = PartitionStore::new(&data);
            let table = TableId::new(TABLE)?;
            let mut rows = 0usize;
            for tid in store.list_tids(&table)? {
                for batch in store.read_partition(&table, &tid)? {
                    rows += batch?.num_rows();
                }
            }
            format!(" rows={rows}")
        }
    };
    println!(
        "CHILD wall_s={:.3} hwm_kib={} heap_kib={}{line}",
        t0.elapsed().as_secs_f64(),
        bins::bench::peak_rss_kib().unwrap_or(0),
        HEAP.get_peak_memory() / 1024
    );
    Ok(())
}

/// A timed process: wall time, peak RSS, peak heap (a child of this
/// binary), its `CHILD` line's fields.
struct Sample {
    wall_s: f64,
    hwm_kib: u64,
    heap_kib: Option<u64>,
    line: String,
}

impl Sample {
    fn field(&self, k: &str) -> Option<&str> {
        self.line
            .split_whitespace()
            .find_map(|kv| kv.strip_prefix(k).and_then(|v| v.strip_prefix('=')))
    }
}

/// Runs this binary as a child of `kind` (an apply into `schema`).
fn time_child(url: &str, data: &DataDir, kind: Child, schema: &str) -> Result<Sample> {
    let exe = std::env::current_exe()?;
    let name = kind.to_possible_value().map(|v| v.get_name().to_string());
    let t = Instant::now();
    let out = Command::new(exe)
        .args(["--child", name.as_deref().unwrap_or_default()])
        .arg("--database-url")
        .arg(url)
        .arg("--data-dir")
        .arg(data.describe())
        .args(["--schema", schema])
        .env_remove("DATABASE_URL")
        .output()?;
    let wall_s = t.elapsed().as_secs_f64();
    let stdout = String::from_utf8_lossy(&out.stdout);
    eprint!("{}", String::from_utf8_lossy(&out.stderr));
    if !out.status.success() {
        bail!(
            "the {kind:?} child failed: {stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let line = stdout
        .lines()
        .find(|l| l.starts_with("CHILD"))
        .ok_or_else(|| anyhow!("no CHILD line: {stdout}"))?
        .to_string();
    let mut s = Sample {
        wall_s,
        hwm_kib: 0,
        heap_kib: None,
        line,
    };
    s.hwm_kib = s.field("hwm_kib").and_then(|v| v.parse().ok()).unwrap_or(0);
    s.heap_kib = s.field("heap_kib").and_then(|v| v.parse().ok());
    Ok(s)
}

/// `psql` copying the whole table out in binary, the output discarded.
fn time_copy(url: &str) -> Result<Sample> {
    let mut argv: Vec<String> = Vec::new();
    if std::path::Path::new("/usr/bin/time").exists() {
        argv.extend(["/usr/bin/time", "-f", bins::bench::TIME_FORMAT].map(String::from));
    }
    argv.extend(
        [
            "psql",
            "-X",
            "-q",
            "-d",
            url,
            "-o",
            "/dev/null",
            "-c",
            "COPY fact.folk1a TO STDOUT (FORMAT binary)",
        ]
        .map(String::from),
    );
    let t = Instant::now();
    let out = Command::new(&argv[0])
        .args(&argv[1..])
        .stdout(Stdio::null())
        .output()?;
    let wall_s = t.elapsed().as_secs_f64();
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        bail!("psql COPY failed: {stderr}");
    }
    Ok(Sample {
        wall_s,
        hwm_kib: bins::bench::time_maxrss_kib(&stderr).unwrap_or(0),
        heap_kib: None,
        line: String::new(),
    })
}

/// Writes every quarter as a partition and a manifest listing them all.
fn write_mirror(args: &Args, data: &DataDir) -> Result<()> {
    let store = PartitionStore::new(data);
    let mut tids = Vec::new();
    for q in 0..args.quarters {
        let (code, _) = quarter(q);
        folk1a::write_quarter(&store, q, &code, |_, _| Ok(()))
            .map_err(|e| anyhow!("writing {code}: {e}"))?;
        tids.push(Tid::new(code)?);
    }
    if !args.no_tableinfo {
        folk1a::write_tableinfo(data, args.quarters).map_err(|e| anyhow!("tableinfo: {e}"))?;
    }
    let mut r = TableResult::synced("bench", false, Frequency::Quarterly);
    r.changed_tids = tids;
    let mut tables = std::collections::BTreeMap::new();
    tables.insert(TableId::new(TABLE)?, r);
    let now = UtcSecond::new(chrono::Utc::now());
    let mut m = RunManifest::new(RunId::new(RUN)?, now);
    m.finished_at = Some(now);
    m.status = RunStatus::Success;
    m.summary = Summary::of(&tables);
    m.tables = tables;
    m.save(data)?;
    Ok(())
}

/// The paths timed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Path {
    Clean,
    Copy,
    Read,
    Apply,
    Edited,
    Revised,
}

/// The schema the timed applies load into (and is dropped after each).
const APPLY_SCHEMA: &str = "bench_apply";

fn run_path(db: &mut Client, url: &str, data: &DataDir, path: Path, rows: usize) -> Result<Sample> {
    db.batch_execute("VACUUM ANALYZE fact.folk1a")?;
    db.batch_execute("CHECKPOINT")?;
    let s = match path {
        Path::Copy => time_copy(url)?,
        Path::Read => time_child(url, data, Child::Read, "fact")?,
        Path::Apply => {
            let s = time_child(url, data, Child::Apply, APPLY_SCHEMA);
            db.batch_execute(&format!("DROP SCHEMA IF EXISTS {APPLY_SCHEMA} CASCADE"))?;
            s?
        }
        Path::Clean | Path::Edited | Path::Revised => {
            time_child(url, data, Child::Reconcile, "fact")?
        }
    };
    check(&s, path, rows)?;
    eprintln!(
        "{path:?}: wall {:.3} s, peak RSS {:.1} MiB{}",
        s.wall_s,
        s.hwm_kib as f64 / 1024.0,
        s.line.strip_prefix("CHILD").unwrap_or_default()
    );
    Ok(s)
}

/// What each child must have found.
fn check(s: &Sample, path: Path, rows: usize) -> Result<()> {
    let want: &[(&str, String)] = match path {
        Path::Copy | Path::Apply => &[],
        Path::Read => &[("rows", rows.to_string())],
        Path::Clean => &[
            ("status", ReconcileStatus::Agrees.to_string()),
            ("rows_compared", (2 * rows).to_string()),
        ],
        Path::Edited => &[
            ("status", ReconcileStatus::Differs.to_string()),
            ("differs", "1".into()),
            ("only_in_mirror", "1".into()),
            ("only_in_db", "1".into()),
            ("missing", "0".into()),
            ("extra", "0".into()),
        ],
        Path::Revised => &[
            ("status", ReconcileStatus::Differs.to_string()),
            ("differs", "1".into()),
            ("only_in_mirror", ROWS_PER_QUARTER.to_string()),
            ("only_in_db", ROWS_PER_QUARTER.to_string()),
            ("missing", "0".into()),
            ("extra", "0".into()),
        ],
    };
    for (k, v) in want {
        if s.field(k) != Some(v.as_str()) {
            bail!(
                "{path:?}: {k} is {:?}, expected {v}: {}",
                s.field(k),
                s.line
            );
        }
    }
    Ok(())
}

fn parent(args: &Args) -> Result<()> {
    let dbname = format!("bench_reconcile_{}", std::process::id());
    let mut admin = Client::connect(&args.database_url, NoTls).context("connecting")?;
    admin.batch_execute(&format!("CREATE DATABASE {dbname}"))?;
    let url = with_dbname(&args.database_url, &dbname);
    let scratch = Scratch::new("bench-reconcile")?;
    let data = DataDir::local(scratch.0.join("data"));
    let result = (|| -> Result<()> {
        let rows = args.quarters * ROWS_PER_QUARTER;
        let t = Instant::now();
        write_mirror(args, &data)?;
        let apply = time_child(&url, &data, Child::Apply, "fact")?;
        eprintln!(
            "set-up: {} partitions, {rows} rows, applied with --create-missing in {:.1} s (apply peak RSS {:.1} MiB); total {:.1} s",
            args.quarters,
            apply.wall_s,
            apply.hwm_kib as f64 / 1024.0,
            t.elapsed().as_secs_f64()
        );
        let mut db = Client::connect(&url, NoTls)?;
        let mut results: Vec<(Path, Vec<Sample>)> =
            [Path::Clean, Path::Copy, Path::Read, Path::Apply]
                .into_iter()
                .map(|p| (p, Vec::new()))
                .collect();
        for round in 0..args.runs {
            for k in 0..results.len() {
                let i = (k + round) % results.len();
                let s = run_path(&mut db, &url, &data, results[i].0, rows)?;
                results[i].1.push(s);
            }
        }
        // One value edited, in the middle of the table.
        let (_, day) = quarter(args.quarters / 2);
        let n = db.execute(
            "UPDATE fact.folk1a SET indhold = indhold + 0.5 WHERE ctid = \
             (SELECT ctid FROM fact.folk1a WHERE tid = $1::text::date AND kon = '2' AND alder = '40' LIMIT 1)",
            &[&day],
        )?;
        if n != 1 {
            bail!("editing one row updated {n}");
        }
        let mut edited = Vec::new();
        for _ in 0..args.runs {
            edited.push(run_path(&mut db, &url, &data, Path::Edited, rows)?);
        }
        results.push((Path::Edited, edited));
        // Every figure of that quarter revised by hand.
        let n = db.execute(
            "UPDATE fact.folk1a SET indhold = indhold + 1 WHERE tid = $1::text::date",
            &[&day],
        )?;
        if n != ROWS_PER_QUARTER as u64 {
            bail!("revising a quarter updated {n}");
        }
        let mut revised = Vec::new();
        for _ in 0..args.runs {
            revised.push(run_path(&mut db, &url, &data, Path::Revised, rows)?);
        }
        results.push((Path::Revised, revised));
        report(args, rows, &apply, &results);
        Ok(())
    })();
    if args.keep {
        eprintln!("kept database {dbname} and data folder {}", data.describe());
        std::mem::forget(scratch);
    } else if let Err(e) =
        admin.batch_execute(&format!("DROP DATABASE IF EXISTS {dbname} WITH (FORCE)"))
    {
        eprintln!("warning: could not drop {dbname}: {e}");
    }
    result
}

fn report(args: &Args, rows: usize, setup: &Sample, results: &[(Path, Vec<Sample>)]) {
    let get = |p: Path| {
        results
            .iter()
            .find(|(q, _)| *q == p)
            .map_or(&[][..], |(_, v)| &v[..])
    };
    let walls = |p: Path| get(p).iter().map(|s| s.wall_s).collect::<Vec<_>>();
    let peaks = |p: Path| {
        get(p)
            .iter()
            .map(|s| s.hwm_kib as f64 / 1024.0)
            .collect::<Vec<_>>()
    };
    let heaps = |p: Path| {
        get(p)
            .iter()
            .filter_map(|s| Some(s.heap_kib? as f64 / 1024.0))
            .collect::<Vec<_>>()
    };
    let floors = median(walls(Path::Copy)) + median(walls(Path::Read));
    let budget = median(peaks(Path::Apply));
    let heap_budget = median(heaps(Path::Apply));
    println!(
        "bench-reconcile: fact.folk1a and its mirror, {rows} rows in {} quarters; {} rounds, whole processes, medians (min–max)",
        args.quarters, args.runs
    );
    println!("\n| work | time | peak RSS | peak heap | ratio to the floors' sum | target |");
    println!("|---|---|---|---|---|---|");
    let within = "≤ 1.0×; peak ≤ the apply's";
    for (path, label, target) in [
        (
            Path::Copy,
            "floor: `COPY fact.folk1a TO STDOUT (FORMAT binary)` (psql)",
            "—",
        ),
        (Path::Read, "floor: read every partition", "—"),
        (
            Path::Apply,
            "the apply of the same table (--create-missing, a schema of its own): the memory budget",
            "—",
        ),
        (Path::Clean, "reconcile, nothing to find", within),
        (Path::Edited, "reconcile, one edited row (found, named)", within),
        (
            Path::Revised,
            "reconcile, one quarter's every figure revised (all its rows found, counted, named)",
            "peak ≤ the apply's",
        ),
    ] {
        let ratio = match path {
            Path::Copy | Path::Read | Path::Apply => "—".into(),
            _ => format!("{:.2}", median(walls(path)) / floors),
        };
        let (peak, heap) = match path {
            Path::Copy | Path::Read | Path::Apply => (String::new(), String::new()),
            _ => (
                format!(" ({:+.1} MiB)", median(peaks(path)) - budget),
                format!(" ({:+.2} MiB)", median(heaps(path)) - heap_budget),
            ),
        };
        let heap = match heaps(path) {
            h if h.is_empty() => "—".to_string(),
            h => format!("{}{heap}", mib_spread(&h)),
        };
        println!(
            "| {label} | {} | {}{peak} | {heap} | {ratio} | {target} |",
            spread_text(&walls(path)),
            mib_spread(&peaks(path)),
        );
    }
    println!(
        "\nfloors' sum {floors:.3} s; the apply's median peak {budget:.1} MiB, heap {heap_budget:.2} MiB (the set-up's apply into `fact`: {:.1} MiB)",
        setup.hwm_kib as f64 / 1024.0
    );
}

/// `median MiB (min–max)` of `v`, to 0.1 MiB (0.01 below 10 MiB).
fn mib_spread(v: &[f64]) -> String {
    let small = v.iter().all(|&x| x < 10.0);
    spread(v, "MiB", if small { 2 } else { 1 })
}
