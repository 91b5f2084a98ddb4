//! `bench-apply`: measures `fact-apply` on a FOLK1A-shaped table, the
//! plain (row) path and the partition-swap path, against the floor of the
//! same rows applied by `psql` from a prepared file, and optionally the
//! original system's apply (`original_apply.py`).
//!
//! ```text
//! cargo run --release -p bins --features bench --bin bench-apply -- \
//!     --database-url postgres://postgres@127.0.0.1:5432/test [--quarters 10] [--changed 4] [--runs 3] \
//!     [--python /path/to/venv/bin/python --reference-dir bins/bench/reference]
//! ```
//!
//! Set-up (not timed): a fresh database `bench_apply_<pid>` on the server of
//! `--database-url` holding `fact.folk1a (omrade text, kon text, alder text,
//! civilstand text, tid date, indhold double precision)` with `--quarters` ×
//! 200,025 rows (omrade 105 × kon 3 × alder 127 × civilstand 5) and a btree
//! index on every column but `indhold`, and the same table in `factp`
//! LIST-partitioned on `tid` (one partition per quarter, the same indexes on
//! the parent); the last `--changed` quarters written as partitions with new
//! values, a run manifest naming them, and the floor script: `BEGIN; CREATE
//! TEMP TABLE …; COPY … FROM STDIN (rows inline, already transformed);
//! DELETE … WHERE tid = ANY('{…}'::date[]); INSERT … SELECT; COMMIT;`.
//!
//! Each round runs, in rotating order and each after an untimed `VACUUM
//! ANALYZE` and `CHECKPOINT`, (a) this binary re-executed as a child calling
//! `fact_apply::apply_run` on the plain table, (b) the same on the
//! partitioned table (partition swap), (c) `psql -f floor.sql` on the plain
//! table, and (d) with `--python`, `original_apply.py`; all timed as whole
//! processes, peak RSS from `VmHWM` or `/usr/bin/time`. After each, the dead
//! tuples left in the fact table (`n_dead_tup` of the table and its
//! partitions). Prints one table of medians with the spread and ratios.

use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{anyhow, bail, Context, Result};
use bins::bench::folk1a::{self, codes, quarter, ROWS_PER_QUARTER, TABLE};
use bins::bench::{with_dbname, Scratch};
use clap::Parser;
use fact_apply::postgres::{Client, NoTls};
use fact_apply::{apply_run, ApplyOptions};
use partition_store::PartitionStore;
use sync_state::{
    DataDir, Frequency, RunId, RunManifest, RunStatus, Summary, TableId, TableResult, Tid,
    UtcSecond,
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
    /// Also time the original system's apply (`original_apply.py` in
    /// `--reference-dir`) with this Python (pandas, psycopg).
    #[arg(long)]
    python: Option<PathBuf>,
    /// The folder of the reference scripts (bins/bench/reference).
    #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/bench/reference"))]
    reference_dir: PathBuf,
    /// Internal: run one apply and report (used by the parent).
    #[arg(long, hide = true)]
    child_apply: bool,
    /// Internal: data folder of the child.
    #[arg(long, hide = true)]
    data_dir: Option<PathBuf>,
    /// Internal: run id of the child.
    #[arg(long, hide = true)]
    run_id: Option<String>,
    /// Internal: schema of the child's fact table.
    #[arg(long, hide = true, default_value = "fact")]
    schema: String,
    /// Internal: the child applies with `--metadata`.
    #[arg(long, hide = true)]
    metadata: bool,
}

fn main() -> Result<()> {
    let args = Args::parse();
    if args.child_apply {
        return child_apply(&args);
    }
    parent(&args)
}

fn child_apply(args: &Args) -> Result<()> {
    let data = DataDir::local(args.data_dir.clone().ok_or_else(|| anyhow!("--data-dir"))?);
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
    let opts = ApplyOptions {
        schema: args.schema.clone(),
        metadata: if args.metadata {
            fact_apply::Metadata::Maintain {
                schema: "meta".into(),
            }
        } else {
            fact_apply::Metadata::Off
        },
        ..ApplyOptions::default()
    };
    let report = apply_run(&mut client, &data, &run, &opts)?;
    let apply_s = t1.elapsed().as_secs_f64();
    let t = report
        .tables
        .as_ref()
        .and_then(|t| t.first())
        .ok_or_else(|| anyhow!("no table in report"))?;
    if let Some(e) = t.error.as_ref().or(t.metadata_error.as_ref()) {
        bail!("apply failed: {e}");
    }
    println!(
        "CHILD apply_s={apply_s:.3} total_s={:.3} hwm_kib={} deleted={} inserted={} swap={} status={}",
        t0.elapsed().as_secs_f64(),
        bins::bench::peak_rss_kib().unwrap_or(0),
        t.deleted_rows.unwrap_or(0),
        t.inserted_rows.unwrap_or(0),
        t.partition_swap.unwrap_or(false),
        report.status
    );
    Ok(())
}

struct Setup {
    _tmp: Option<Scratch>,
    data: DataDir,
    run: RunId,
    floor_sql: PathBuf,
    changed: Vec<(String, String)>,
}

fn setup(args: &Args, db: &mut Client) -> Result<Setup> {
    let (tmp, work) = match &args.work_dir {
        Some(w) => (None, w.clone()),
        None => {
            let s = Scratch::new("bench-apply")?;
            let p = s.0.clone();
            (Some(s), p)
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
    // The same table LIST-partitioned on tid, one partition per quarter
    // (named as `--create-missing --partitioned` names them).
    let mut sql = String::from(
        "CREATE SCHEMA factp;
         CREATE TABLE factp.folk1a (LIKE fact.folk1a) PARTITION BY LIST (tid);",
    );
    for (code, day) in &quarters {
        sql.push_str(&format!(
            "CREATE TABLE factp.folk1a_{} PARTITION OF factp.folk1a FOR VALUES IN ('{day}');",
            code.to_ascii_lowercase()
        ));
    }
    sql.push_str(
        "INSERT INTO factp.folk1a SELECT * FROM fact.folk1a;
         CREATE INDEX ON factp.folk1a (omrade); CREATE INDEX ON factp.folk1a (kon);
         CREATE INDEX ON factp.folk1a (alder); CREATE INDEX ON factp.folk1a (civilstand);
         CREATE INDEX ON factp.folk1a (tid);",
    );
    db.batch_execute(&sql)?;
    db.batch_execute("VACUUM ANALYZE fact.folk1a")?;
    db.batch_execute("VACUUM ANALYZE factp.folk1a")?;
    eprintln!(
        "set-up: fact.folk1a and factp.folk1a (partitioned) with {} rows and 5 indexes in {:.1} s",
        args.quarters * ROWS_PER_QUARTER,
        t.elapsed().as_secs_f64()
    );

    // Partitions of the changed quarters and the floor script with the same rows.
    let t = Instant::now();
    let data = DataDir::local(work.join("data"));
    let store = PartitionStore::new(&data);
    let table = TableId::new(TABLE)?;
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
        folk1a::write_quarter(&store, qi, code, |[o, k, a, c], v| {
            writeln!(floor, "{o}\t{k}\t{a}\t{c}\t{day}\t{v}")
        })
        .map_err(|e| anyhow!("writing {code}: {e}"))?;
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

    write_tableinfo(&data, &table, &quarters)?;
    let run = RunId::new("20260101T000000Z")?;
    let mut r = TableResult::synced("bench", false, Frequency::Quarterly);
    r.changed_tids = changed
        .iter()
        .map(|(c, _)| Tid::new(c.as_str()))
        .collect::<Result<_, _>>()?;
    let mut tables = std::collections::BTreeMap::new();
    tables.insert(table, r);
    let now = UtcSecond::new(chrono::Utc::now());
    let mut m = RunManifest::new(run.clone(), now);
    m.finished_at = Some(now);
    m.status = RunStatus::Success;
    m.summary = Summary::of(&tables);
    m.tables = tables;
    m.save(&data)?;
    eprintln!(
        "set-up: {} partitions ({} rows) and floor script in {:.1} s",
        changed.len(),
        changed.len() * ROWS_PER_QUARTER,
        t.elapsed().as_secs_f64()
    );
    Ok(Setup {
        _tmp: tmp,
        data,
        run,
        floor_sql,
        changed,
    })
}

/// The cached tableinfo of the bench table (what `--metadata` reads): its
/// four code variables and every quarter.
fn write_tableinfo(data: &DataDir, table: &TableId, quarters: &[(String, String)]) -> Result<()> {
    use sync_state::tableinfo::{TableInfo, Variable, VariableValue};
    let variable = |id: &str, codes: &[String], time: bool| Variable {
        id: id.into(),
        text: id.to_lowercase(),
        elimination: !time,
        time,
        map: None,
        values: codes
            .iter()
            .map(|c| VariableValue {
                id: c.clone(),
                text: format!("{id} {c}"),
            })
            .collect(),
    };
    let [omrade, kon, alder, civ] = codes();
    let tids: Vec<String> = quarters.iter().map(|(c, _)| c.clone()).collect();
    let info = TableInfo {
        id: TABLE.into(),
        text: "Befolkningen den 1. i kvartalet".into(),
        description: String::new(),
        unit: "Antal".into(),
        suppressed_data_value: None,
        updated: Some("2026-01-01T08:00:00".into()),
        active: true,
        contacts: Vec::new(),
        documentation: None,
        footnote: None,
        variables: vec![
            variable("OMRÅDE", &omrade, false),
            variable("KØN", &kon, false),
            variable("ALDER", &alder, false),
            variable("CIVILSTAND", &civ, false),
            variable("Tid", &tids, true),
        ],
    };
    let key = data.metadata_file_key(table);
    let path = data
        .local_path(&key)
        .ok_or_else(|| anyhow!("{key}: not local"))?;
    std::fs::create_dir_all(path.parent().ok_or_else(|| anyhow!("{key}: no folder"))?)?;
    std::fs::write(&path, serde_json::to_vec(&info)?)?;
    Ok(())
}

struct Sample {
    wall_s: f64,
    apply_s: Option<f64>,
    hwm_kib: Option<u64>,
}

fn time_ours(url: &str, s: &Setup, schema: &str, metadata: bool) -> Result<Sample> {
    let exe = std::env::current_exe()?;
    let t = Instant::now();
    let mut cmd = Command::new(exe);
    if metadata {
        cmd.arg("--metadata");
    }
    let out = cmd
        .arg("--child-apply")
        .arg("--database-url")
        .arg(url)
        .arg("--data-dir")
        .arg(s.data.describe())
        .arg("--run-id")
        .arg(s.run.as_str())
        .arg("--schema")
        .arg(schema)
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
    let swapped = field("swap").as_deref() == Some("true");
    if swapped != (schema == "factp") {
        bail!("our apply into {schema} swapped partitions: {swapped}");
    }
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

/// The paths timed each round.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ApplyPath {
    Plain,
    /// The plain table with `--metadata`.
    PlainMeta,
    Swap,
    Floor,
    Original,
}

impl ApplyPath {
    /// The schema whose `folk1a` the path writes.
    fn schema(self) -> &'static str {
        match self {
            ApplyPath::Swap => "factp",
            _ => "fact",
        }
    }
}

/// One timed run and the dead tuples it left.
struct Measured {
    sample: Sample,
    dead: i64,
}

/// Dead tuples in `<schema>.folk1a` and its partitions.
fn dead_tuples(db: &mut Client, schema: &str) -> Result<i64> {
    // Backends flush their statistics when they exit; give the server a moment.
    std::thread::sleep(std::time::Duration::from_millis(300));
    let sql = format!(
        "SELECT coalesce(sum(n_dead_tup), 0)::bigint FROM pg_stat_user_tables \
         WHERE relid = '{schema}.folk1a'::regclass \
            OR relid IN (SELECT inhrelid FROM pg_inherits WHERE inhparent = '{schema}.folk1a'::regclass)"
    );
    Ok(db.query_one(&sql, &[])?.get(0))
}

fn run_path(
    args: &Args,
    db: &mut Client,
    url: &str,
    s: &Setup,
    path: ApplyPath,
) -> Result<Measured> {
    let schema = path.schema();
    db.batch_execute(&format!("VACUUM ANALYZE {schema}.folk1a"))?;
    db.batch_execute("CHECKPOINT")?;
    let sample = match path {
        ApplyPath::Plain | ApplyPath::Swap => time_ours(url, s, schema, false)?,
        ApplyPath::PlainMeta => time_ours(url, s, schema, true)?,
        ApplyPath::Floor => time_cmd(vec![
            "psql".into(),
            "-X".into(),
            "-q".into(),
            "-d".into(),
            url.to_string(),
            "-f".into(),
            s.floor_sql.display().to_string(),
        ])?,
        ApplyPath::Original => {
            let py = args.python.as_ref().ok_or_else(|| anyhow!("--python"))?;
            let mut argv = vec![
                py.display().to_string(),
                args.reference_dir
                    .join("original_apply.py")
                    .display()
                    .to_string(),
                url.to_string(),
                format!("{}/statbank_tables", s.data.describe()),
                TABLE.to_string(),
            ];
            argv.extend(s.changed.iter().map(|(c, _)| c.clone()));
            time_cmd(argv)?
        }
    };
    let dead = dead_tuples(db, schema)?;
    eprintln!(
        "{path:?}: wall {:.3} s{}, peak RSS {:.1} MiB, {dead} dead tuples",
        sample.wall_s,
        sample
            .apply_s
            .map(|a| format!(" (apply_run alone {a:.3} s)"))
            .unwrap_or_default(),
        sample.hwm_kib.unwrap_or(0) as f64 / 1024.0
    );
    Ok(Measured { sample, dead })
}

/// The median wall time and `median s (min–max)`.
fn spread(v: &[Measured]) -> (f64, String) {
    let w: Vec<f64> = v.iter().map(|m| m.sample.wall_s).collect();
    (bins::bench::median(w.clone()), bins::bench::spread_text(&w))
}

fn peak_mib(v: &[Measured]) -> f64 {
    v.iter().filter_map(|m| m.sample.hwm_kib).max().unwrap_or(0) as f64 / 1024.0
}

fn dead_median(v: &[Measured]) -> i64 {
    bins::bench::median(v.iter().map(|m| m.dead as f64).collect()) as i64
}

fn report(args: &Args, s: &Setup, results: &[(ApplyPath, Vec<Measured>)]) {
    let get = |p: ApplyPath| results.iter().find(|(q, _)| *q == p).map(|(_, v)| &v[..]);
    let rows = s.changed.len() * ROWS_PER_QUARTER;
    println!(
        "bench-apply: folk1a, {} rows, 5 btree indexes; {} changed quarters = {rows} rows; {} rounds, whole processes, medians (min–max)",
        args.quarters * ROWS_PER_QUARTER,
        s.changed.len(),
        args.runs
    );
    println!(
        "\n| work | ours | reference | ratio | dead tuples after (ours / reference) | target |"
    );
    println!("|---|---|---|---|---|---|");
    let floor = get(ApplyPath::Floor).map(spread);
    let floor_dead = get(ApplyPath::Floor).map(dead_median).unwrap_or(0);
    for (path, label, target) in [
        (
            ApplyPath::Plain,
            "apply into the plain table",
            "≈ 1× the floor (unchanged)",
        ),
        (
            ApplyPath::Swap,
            "apply into the table partitioned by tid (swap)",
            "≤ 0.5× the floor, ~0 dead tuples",
        ),
    ] {
        let (Some(ours), Some((floor_s, floor_txt))) = (get(path), &floor) else {
            continue;
        };
        let (ours_s, ours_txt) = spread(ours);
        println!(
            "| {label} | {ours_txt}, {:.0} MiB | psql DELETE+INSERT on the plain table {floor_txt} | {:.2} | {} / {floor_dead} | {target} |",
            peak_mib(ours),
            ours_s / floor_s,
            dead_median(ours),
        );
    }
    if let (Some(meta), Some(plain)) = (get(ApplyPath::PlainMeta), get(ApplyPath::Plain)) {
        let (meta_s, meta_txt) = spread(meta);
        let (plain_s, plain_txt) = spread(plain);
        println!(
            "| apply into the plain table with --metadata | {meta_txt}, {:.0} MiB | the same without {plain_txt} | {:.3} | {} / {} | ≤ 1.05× (metadata under 5 %) |",
            peak_mib(meta),
            meta_s / plain_s,
            dead_median(meta),
            dead_median(plain),
        );
    }
    if let (Some(orig), Some(plain)) = (get(ApplyPath::Original), get(ApplyPath::Plain)) {
        let (orig_s, orig_txt) = spread(orig);
        let (plain_s, plain_txt) = spread(plain);
        println!(
            "| apply into the plain table vs the original | {plain_txt}, {:.0} MiB | original_apply.py (pandas) {orig_txt}, {:.0} MiB | {:.2} | {} / {} | — |",
            peak_mib(plain),
            peak_mib(orig),
            plain_s / orig_s,
            dead_median(plain),
            dead_median(orig),
        );
    }
}

fn parent(args: &Args) -> Result<()> {
    let dbname = format!("bench_apply_{}", std::process::id());
    let mut admin = Client::connect(&args.database_url, NoTls).context("connecting")?;
    admin.batch_execute(&format!("CREATE DATABASE {dbname}"))?;
    let url = with_dbname(&args.database_url, &dbname);
    let result = (|| -> Result<()> {
        let mut db = Client::connect(&url, NoTls)?;
        let s = setup(args, &mut db)?;
        let mut paths = vec![
            ApplyPath::Plain,
            ApplyPath::PlainMeta,
            ApplyPath::Swap,
            ApplyPath::Floor,
        ];
        if args.python.is_some() {
            paths.push(ApplyPath::Original);
        }
        let mut results: Vec<(ApplyPath, Vec<Measured>)> =
            paths.iter().map(|p| (*p, Vec::new())).collect();
        for round in 0..args.runs {
            // Rotate the order so no path always runs first.
            let n = paths.len();
            for k in 0..n {
                let i = (k + round) % n;
                let m = run_path(args, &mut db, &url, &s, paths[i])?;
                results[i].1.push(m);
            }
        }
        for schema in ["fact", "factp"] {
            let count: i64 = db
                .query_one(&format!("SELECT count(*) FROM {schema}.folk1a"), &[])?
                .get(0);
            if count as usize != args.quarters * ROWS_PER_QUARTER {
                bail!("{schema}.folk1a has {count} rows after the runs");
            }
        }
        let differ: i64 = db
            .query_one(
                "SELECT count(*) FROM ((TABLE fact.folk1a EXCEPT ALL TABLE factp.folk1a) \
                 UNION ALL (TABLE factp.folk1a EXCEPT ALL TABLE fact.folk1a)) d",
                &[],
            )?
            .get(0);
        if differ != 0 {
            bail!("the plain and the partitioned table differ in {differ} rows");
        }
        report(args, &s, &results);
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
