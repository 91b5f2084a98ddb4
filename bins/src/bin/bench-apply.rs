//! `bench-apply`: measures `fact-apply` on a FOLK1A-shaped table against the
//! floor of the same SQL run by `psql` from a prepared file.
//!
//! ```text
//! cargo run --release -p bins --bin bench-apply -- \
//!     --database-url postgres://postgres@127.0.0.1:5432/test [--quarters 10] [--changed 4] [--runs 3]
//! ```
//!
//! Set-up (not timed): a fresh database `bench_apply_<pid>` on the server of
//! `--database-url` holding `fact.folk1a (omrade text, kon text, alder text,
//! civilstand text, tid date, indhold double precision)` with `--quarters` ×
//! 200,025 rows (omrade 105 × kon 3 × alder 127 × civilstand 5) and a btree
//! index on every column but `indhold`; the last `--changed` quarters written
//! as partitions with new values, a run manifest naming them, and the floor
//! script: `BEGIN; CREATE TEMP TABLE …; COPY … FROM STDIN (rows inline, already
//! transformed); DELETE … WHERE tid = ANY('{…}'::date[]); INSERT … SELECT;
//! COMMIT;`.
//!
//! Each round (after an untimed `VACUUM ANALYZE`) runs, alternating their
//! order, (a) this binary re-executed as a child that connects and calls
//! `fact_apply::apply_run` and reports its own peak RSS (`VmHWM`), and (b)
//! `psql -f floor.sql`; both are timed as whole processes. Prints medians and
//! the ratio. `--seed-like PYTHON` also times `seed_like_apply.py` (the
//! original's apply) with that interpreter.

use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{anyhow, bail, Context, Result};
use arrow_array::{ArrayRef, Float64Array, RecordBatch, StringArray};
use clap::Parser;
use fact_apply::postgres::{Client, NoTls};
use fact_apply::{apply_run, ApplyOptions};
use partition_store::{partition_schema, PartitionStore};
use sync_state::{
    CatalogSection, DataDir, Frequency, RunId, RunManifest, RunStatus, Summary, TableId,
    TableResult, Tid, UtcSecond,
};

#[derive(Debug, Parser)]
#[command(name = "bench-apply")]
struct Args {
    /// Server to benchmark on (a scratch database is created there and dropped).
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    database_url: String,
    /// Quarters in the target table.
    #[arg(long, default_value_t = 10)]
    quarters: usize,
    /// Changed quarters to apply (the last ones of the table).
    #[arg(long, default_value_t = 4)]
    changed: usize,
    /// Timed rounds (each runs ours and the floor once).
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Working folder (default: a temp folder, removed at the end).
    #[arg(long)]
    work_dir: Option<PathBuf>,
    /// Keep the scratch database.
    #[arg(long)]
    keep: bool,
    /// Also time /work/shared/bench/seed_like_apply.py with this python.
    #[arg(long)]
    seed_like: Option<PathBuf>,
    /// Path of seed_like_apply.py.
    #[arg(long, default_value = "/work/shared/bench/seed_like_apply.py")]
    seed_like_script: PathBuf,
    /// Internal: run one apply and report (used by the parent).
    #[arg(long, hide = true)]
    child_apply: bool,
    /// Internal: data folder of the child.
    #[arg(long, hide = true)]
    data_dir: Option<PathBuf>,
    /// Internal: run id of the child.
    #[arg(long, hide = true)]
    run_id: Option<String>,
}

const ROWS_PER_QUARTER: usize = 105 * 3 * 127 * 5;
const TABLE: &str = "FOLK1A";

fn main() -> Result<()> {
    let args = Args::parse();
    if args.child_apply {
        return child_apply(&args);
    }
    parent(&args)
}

fn child_apply(args: &Args) -> Result<()> {
    let data = DataDir::new(args.data_dir.clone().ok_or_else(|| anyhow!("--data-dir"))?);
    let run = RunId::new(args.run_id.clone().ok_or_else(|| anyhow!("--run-id"))?)?;
    // RUST_LOG=fact_apply=debug shows the copy / delete / insert split.
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .init();
    let t0 = Instant::now();
    let mut client = Client::connect(&args.database_url, NoTls)?;
    let t1 = Instant::now();
    let report = apply_run(&mut client, &data, &run, &ApplyOptions::default())?;
    let apply_s = t1.elapsed().as_secs_f64();
    let t = report
        .tables
        .as_ref()
        .and_then(|t| t.first())
        .ok_or_else(|| anyhow!("no table in report"))?;
    if let Some(e) = &t.error {
        bail!("apply failed: {e}");
    }
    println!(
        "CHILD apply_s={apply_s:.3} total_s={:.3} hwm_kib={} deleted={} inserted={} status={}",
        t0.elapsed().as_secs_f64(),
        bins::bench::peak_rss_kib().unwrap_or(0),
        t.deleted_rows.unwrap_or(0),
        t.inserted_rows.unwrap_or(0),
        report.status
    );
    Ok(())
}

fn with_dbname(url: &str, db: &str) -> String {
    if let Some(scheme_end) = url.find("://") {
        let (base, query) = match url.find('?') {
            Some(q) => (&url[..q], &url[q..]),
            None => (url, ""),
        };
        let after = scheme_end + 3;
        let host_part = match base[after..].find('/') {
            Some(p) => &base[..after + p],
            None => base,
        };
        format!("{host_part}/{db}{query}")
    } else {
        format!("{url} dbname={db}")
    }
}

fn codes() -> [Vec<String>; 4] {
    let mut omrade: Vec<String> = ["000", "084", "085", "081", "082", "083"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    omrade.extend((0..99).map(|i| format!("{}", 101 + i * 7)));
    let kon = ["TOT", "1", "2"].iter().map(|s| s.to_string()).collect();
    let mut alder = vec!["IALT".to_string()];
    alder.extend((0..126).map(|i| i.to_string()));
    let civ = ["TOT", "U", "G", "E", "F"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    [omrade, kon, alder, civ]
}

/// Quarter `i` counted from 2015K1: (code, first day).
fn quarter(i: usize) -> (String, String) {
    let year = 2015 + i / 4;
    let q = i % 4 + 1;
    (
        format!("{year}K{q}"),
        format!("{year}-{:02}-01", (q - 1) * 3 + 1),
    )
}

fn value(q: usize, row: usize) -> f64 {
    ((row * 7919 + q * 31) % 100_000) as f64 / 10.0
}

/// A scratch folder removed at the end.
struct RemoveOnDrop(PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

struct Setup {
    _tmp: Option<RemoveOnDrop>,
    work: PathBuf,
    data: DataDir,
    run: RunId,
    floor_sql: PathBuf,
    changed: Vec<(String, String)>,
}

fn setup(args: &Args, db: &mut Client) -> Result<Setup> {
    let (tmp, work) = match &args.work_dir {
        Some(w) => (None, w.clone()),
        None => {
            let p = std::env::temp_dir().join(format!("bench-apply-{}", std::process::id()));
            (Some(RemoveOnDrop(p.clone())), p)
        }
    };
    std::fs::create_dir_all(&work)?;
    let [omrade, kon, alder, civ] = codes();
    let quarters: Vec<(String, String)> = (0..args.quarters).map(quarter).collect();
    let changed: Vec<(String, String)> =
        quarters[args.quarters.saturating_sub(args.changed)..].to_vec();

    let t = Instant::now();
    db.batch_execute(
        "CREATE SCHEMA fact;
         CREATE TABLE fact.folk1a (omrade text, kon text, alder text, civilstand text,
                                   tid date, indhold double precision);",
    )?;
    let days: Vec<String> = quarters.iter().map(|(_, d)| d.clone()).collect();
    db.execute(
        "INSERT INTO fact.folk1a
         SELECT o, k, a, c, q::date, ((row_number() OVER ()) % 1000)::float8
         FROM unnest($5::text[]) q, unnest($1::text[]) o, unnest($2::text[]) k,
              unnest($3::text[]) a, unnest($4::text[]) c
         ORDER BY q::date, o, k, a, c",
        &[&omrade, &kon, &alder, &civ, &days],
    )?;
    db.batch_execute(
        "CREATE INDEX ON fact.folk1a (omrade); CREATE INDEX ON fact.folk1a (kon);
         CREATE INDEX ON fact.folk1a (alder); CREATE INDEX ON fact.folk1a (civilstand);
         CREATE INDEX ON fact.folk1a (tid);",
    )?;
    db.batch_execute("VACUUM ANALYZE fact.folk1a")?;
    eprintln!(
        "set-up: fact.folk1a with {} rows and 5 indexes in {:.1} s",
        args.quarters * ROWS_PER_QUARTER,
        t.elapsed().as_secs_f64()
    );

    // Partitions of the changed quarters and the floor script with the same rows.
    let t = Instant::now();
    let data = DataDir::new(work.join("data"));
    let store = PartitionStore::new(&data);
    let table = TableId::new(TABLE)?;
    let schema = partition_schema(&["OMRÅDE", "KØN", "ALDER", "CIVILSTAND", "TID", "INDHOLD"]);
    let floor_sql = work.join("floor.sql");
    let mut floor = BufWriter::new(std::fs::File::create(&floor_sql)?);
    writeln!(floor, "\\set ON_ERROR_STOP on\nBEGIN;")?;
    writeln!(
        floor,
        "CREATE TEMP TABLE delta (omrade text, kon text, alder text, civilstand text, \
         tid date, indhold double precision) ON COMMIT DROP;"
    )?;
    writeln!(floor, "COPY delta FROM STDIN;")?;
    for (qi, (code, day)) in changed.iter().enumerate() {
        let mut batches = Vec::new();
        let mut cols: [Vec<&str>; 5] = Default::default();
        let mut vals: Vec<Option<f64>> = Vec::new();
        let mut row = 0usize;
        let flush = |cols: &mut [Vec<&str>; 5],
                     vals: &mut Vec<Option<f64>>,
                     out: &mut Vec<RecordBatch>|
         -> Result<()> {
            let mut arrays: Vec<ArrayRef> = cols
                .iter_mut()
                .map(|c| Arc::new(StringArray::from(std::mem::take(c))) as ArrayRef)
                .collect();
            arrays.push(Arc::new(Float64Array::from(std::mem::take(vals))));
            out.push(RecordBatch::try_new(schema.clone(), arrays)?);
            Ok(())
        };
        for o in &omrade {
            for k in &kon {
                for a in &alder {
                    for c in &civ {
                        let v = value(qi, row);
                        row += 1;
                        cols[0].push(o);
                        cols[1].push(k);
                        cols[2].push(a);
                        cols[3].push(c);
                        cols[4].push(code);
                        vals.push(Some(v));
                        writeln!(floor, "{o}\t{k}\t{a}\t{c}\t{day}\t{v}")?;
                        if vals.len() == 65_536 {
                            flush(&mut cols, &mut vals, &mut batches)?;
                        }
                    }
                }
            }
        }
        if !vals.is_empty() {
            flush(&mut cols, &mut vals, &mut batches)?;
        }
        store.write_partition(
            &table,
            &Tid::new(code.as_str())?,
            &batches,
            &Default::default(),
        )?;
    }
    writeln!(floor, "\\.")?;
    let list: Vec<&str> = changed.iter().map(|(_, d)| d.as_str()).collect();
    writeln!(
        floor,
        "DELETE FROM fact.folk1a WHERE tid = ANY('{{{}}}'::date[]);",
        list.join(",")
    )?;
    writeln!(
        floor,
        "INSERT INTO fact.folk1a SELECT * FROM delta;\nCOMMIT;"
    )?;
    floor.flush()?;
    drop(floor);

    let run = RunId::new("20260101T000000Z")?;
    let mut r = TableResult::synced("bench", false, Frequency::Quarterly);
    r.changed_tids = changed
        .iter()
        .map(|(c, _)| Tid::new(c.as_str()))
        .collect::<Result<_, _>>()?;
    let mut tables = std::collections::BTreeMap::new();
    tables.insert(table, r);
    let now = UtcSecond::new(chrono::Utc::now());
    RunManifest {
        run_id: run.clone(),
        started_at: now,
        finished_at: Some(now),
        status: RunStatus::Success,
        catalog: CatalogSection::default(),
        summary: Summary::of(&tables),
        tables,
        error: None,
        db_apply: None,
        extra: Default::default(),
    }
    .save(&data)?;
    eprintln!(
        "set-up: {} partitions ({} rows) and floor script in {:.1} s",
        changed.len(),
        changed.len() * ROWS_PER_QUARTER,
        t.elapsed().as_secs_f64()
    );
    Ok(Setup {
        _tmp: tmp,
        work,
        data,
        run,
        floor_sql,
        changed,
    })
}

struct Sample {
    wall_s: f64,
    apply_s: Option<f64>,
    hwm_kib: Option<u64>,
}

fn time_ours(args: &Args, url: &str, s: &Setup) -> Result<Sample> {
    let exe = std::env::current_exe()?;
    let t = Instant::now();
    let out = Command::new(exe)
        .arg("--child-apply")
        .arg("--database-url")
        .arg(url)
        .arg("--data-dir")
        .arg(s.data.describe())
        .arg("--run-id")
        .arg(s.run.as_str())
        .env_remove("DATABASE_URL")
        .output()?;
    let wall_s = t.elapsed().as_secs_f64();
    let stdout = String::from_utf8_lossy(&out.stdout);
    if out.status.success() && !out.stderr.is_empty() {
        eprint!("{}", String::from_utf8_lossy(&out.stderr));
    }
    if !out.status.success() {
        bail!(
            "our apply failed: {stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let line = stdout
        .lines()
        .find(|l| l.starts_with("CHILD"))
        .ok_or_else(|| anyhow!("no CHILD line: {stdout}"))?;
    let field = |k: &str| {
        line.split_whitespace()
            .find_map(|kv| kv.strip_prefix(k).and_then(|v| v.strip_prefix('=')))
            .map(str::to_owned)
    };
    let expected = (s.changed.len() * ROWS_PER_QUARTER).to_string();
    if field("inserted").as_deref() != Some(expected.as_str()) {
        bail!(
            "our apply inserted {:?}, expected {expected}",
            field("inserted")
        );
    }
    let _ = args;
    Ok(Sample {
        wall_s,
        apply_s: field("apply_s").and_then(|v| v.parse().ok()),
        hwm_kib: field("hwm_kib").and_then(|v| v.parse().ok()),
    })
}

/// Runs a command under `/usr/bin/time -f %M` when available, for its peak RSS.
fn time_cmd(mut argv: Vec<String>) -> Result<Sample> {
    let gnu_time = Path::new("/usr/bin/time").exists();
    if gnu_time {
        let mut v = vec![
            "/usr/bin/time".to_string(),
            "-f".to_string(),
            bins::bench::TIME_FORMAT.to_string(),
        ];
        v.append(&mut argv);
        argv = v;
    }
    let t = Instant::now();
    let out = Command::new(&argv[0]).args(&argv[1..]).output()?;
    let wall_s = t.elapsed().as_secs_f64();
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        bail!(
            "{} failed: {}{stderr}",
            argv.join(" "),
            String::from_utf8_lossy(&out.stdout)
        );
    }
    let hwm_kib = bins::bench::time_maxrss_kib(&stderr);
    Ok(Sample {
        wall_s,
        apply_s: None,
        hwm_kib,
    })
}

fn parent(args: &Args) -> Result<()> {
    let dbname = format!("bench_apply_{}", std::process::id());
    let mut admin = Client::connect(&args.database_url, NoTls).context("connecting")?;
    admin.batch_execute(&format!("CREATE DATABASE {dbname}"))?;
    let url = with_dbname(&args.database_url, &dbname);
    let result = (|| -> Result<()> {
        let mut db = Client::connect(&url, NoTls)?;
        let s = setup(args, &mut db)?;
        let rows = s.changed.len() * ROWS_PER_QUARTER;
        let mut ours = Vec::new();
        let mut floor = Vec::new();
        let mut peer = Vec::new();
        for round in 0..args.runs {
            let mut order = [0, 1];
            if round % 2 == 1 {
                order.reverse();
            }
            for which in order {
                db.batch_execute("VACUUM ANALYZE fact.folk1a")?;
                db.batch_execute("CHECKPOINT")?;
                if which == 0 {
                    let x = time_ours(args, &url, &s)?;
                    eprintln!(
                        "round {round}: ours  wall {:.3} s (apply {:.3} s), peak RSS {:.1} MiB",
                        x.wall_s,
                        x.apply_s.unwrap_or(f64::NAN),
                        x.hwm_kib.unwrap_or(0) as f64 / 1024.0
                    );
                    ours.push(x);
                } else {
                    let x = time_cmd(vec![
                        "psql".into(),
                        "-X".into(),
                        "-q".into(),
                        "-d".into(),
                        url.clone(),
                        "-f".into(),
                        s.floor_sql.display().to_string(),
                    ])?;
                    eprintln!(
                        "round {round}: floor wall {:.3} s (psql peak RSS {:.1} MiB)",
                        x.wall_s,
                        x.hwm_kib.unwrap_or(0) as f64 / 1024.0
                    );
                    floor.push(x);
                }
            }
            if let Some(py) = &args.seed_like {
                db.batch_execute("VACUUM ANALYZE fact.folk1a")?;
                db.batch_execute("CHECKPOINT")?;
                let mut argv = vec![
                    py.display().to_string(),
                    args.seed_like_script.display().to_string(),
                    url.clone(),
                    format!("{}/statbank_tables", s.data.describe()),
                    TABLE.to_string(),
                ];
                argv.extend(s.changed.iter().map(|(c, _)| c.clone()));
                let x = time_cmd(argv)?;
                eprintln!(
                    "round {round}: seed_like_apply.py wall {:.3} s, peak RSS {:.1} MiB",
                    x.wall_s,
                    x.hwm_kib.unwrap_or(0) as f64 / 1024.0
                );
                peer.push(x);
            }
        }
        let count: i64 = db
            .query_one("SELECT count(*) FROM fact.folk1a", &[])?
            .get(0);
        if count as usize != args.quarters * ROWS_PER_QUARTER {
            bail!("table has {count} rows after the runs");
        }
        let ours_wall = bins::bench::median(ours.iter().map(|x| x.wall_s).collect());
        let ours_apply = bins::bench::median(ours.iter().filter_map(|x| x.apply_s).collect());
        let ours_rss = ours.iter().filter_map(|x| x.hwm_kib).max().unwrap_or(0);
        let floor_wall = bins::bench::median(floor.iter().map(|x| x.wall_s).collect());
        println!("bench-apply: fact.folk1a {} rows, {} changed quarters = {rows} rows deleted + inserted, {} rounds (medians)",
            args.quarters * ROWS_PER_QUARTER, s.changed.len(), args.runs);
        println!(
            "  ours (fact-apply, whole process) wall {ours_wall:.3} s  ({:.0} rows/s; apply_run alone {ours_apply:.3} s)  peak RSS {:.1} MiB",
            rows as f64 / ours_wall,
            ours_rss as f64 / 1024.0
        );
        println!(
            "  floor (psql -f prepared SQL)      wall {floor_wall:.3} s  ({:.0} rows/s)",
            rows as f64 / floor_wall
        );
        println!("  ratio ours / floor: {:.3}", ours_wall / floor_wall);
        if !peer.is_empty() {
            let peer_wall = bins::bench::median(peer.iter().map(|x| x.wall_s).collect());
            let peer_rss = peer.iter().filter_map(|x| x.hwm_kib).max().unwrap_or(0);
            println!(
                "  seed_like_apply.py (original)     wall {peer_wall:.3} s  ({:.0} rows/s)  peak RSS {:.1} MiB  ratio ours / peer {:.3}",
                rows as f64 / peer_wall,
                peer_rss as f64 / 1024.0,
                ours_wall / peer_wall
            );
        }
        let _ = &s.work;
        Ok(())
    })();
    if args.keep {
        eprintln!("kept database {dbname}");
    } else if let Err(e) =
        admin.batch_execute(&format!("DROP DATABASE IF EXISTS {dbname} WITH (FORCE)"))
    {
        eprintln!("warning: could not drop {dbname}: {e}");
    }
    result
}
