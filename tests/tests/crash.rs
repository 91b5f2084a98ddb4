//! Crash consistency (issue "Reliability and security"): `statbank-sync` and
//! `statbank-apply` are killed at every crash point of a bootstrap and of an
//! incremental cycle (`sync_state::crash`: before/after every rename, after
//! every temp file, at every body chunk, inside the DB transaction) and run
//! again. After every case the result must equal an uninterrupted run.
//!
//! The children run exactly the binaries' code (`bins::app::sync::main`,
//! `bins::app::apply::main`): this test binary re-executes itself with
//! `STATBANK_CRASH_CHILD` set. Plain `main` (harness = false) because the
//! cases share emulators and run in sequence.
//!
//! `STATBANK_CRASH_FULL=1` uses a larger world (more chunks, more periods).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::{Command, ExitCode, ExitStatus};

use anyhow::{anyhow, bail, ensure, Context, Result};
use statbank_client::emulator::{EmuTable, Emulator, World};
use sync_state::crash::CRASH_AT_ENV;
use sync_state::{list_runs, DataDir, RunManifest, SyncState, TableId, Tid};
use tests::sync::{snapshot, temp_files};

const CHILD_ENV: &str = "STATBANK_CRASH_CHILD";

fn main() -> ExitCode {
    match std::env::var(CHILD_ENV).as_deref() {
        Ok("sync") => return bins::app::sync::main(std::env::args_os().skip(1)),
        Ok("apply") => {
            let code = bins::app::apply::main(std::env::args_os().skip(1));
            eprintln!("crash-points-passed={}", sync_state::crash::points_passed());
            return code;
        }
        _ => {}
    }
    match harness() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("crash harness FAILED: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn full() -> bool {
    std::env::var("STATBANK_CRASH_FULL").is_ok_and(|v| v == "1")
}

fn world0() -> World {
    let big = if full() { 40 } else { 12 };
    let mut w = World::new();
    w.insert(EmuTable::synthetic(
        "ANNUAL",
        &["2019", "2020", "2021", "2022", "2023"],
        &[("OMRÅDE", 3), ("KØN", 2)],
    ));
    w.insert(EmuTable::synthetic(
        "QUART",
        &["2023K1", "2023K2", "2023K3", "2023K4", "2024K1", "2024K2"],
        &[("ALDER", big), ("KØN", 3), ("CIVILSTAND", 5), ("X", 40)],
    ));
    w.insert(EmuTable::synthetic(
        "SEASON",
        &["2020/2021", "2021/2022", "2022/2023"],
        &[("SCENE", 4)],
    ));
    w
}

fn world1() -> World {
    let mut w = world0();
    if let Some(t) = w.table_mut("ANNUAL") {
        t.time_values
            .push(statbank_client::emulator::EmuValue::code("2024"));
        t.updated = "2026-02-01T08:00:00".into();
    }
    if let Some(t) = w.table_mut("QUART") {
        t.revisions.insert("2024K1".into(), 1);
        t.revisions.insert("2023K4".into(), 1);
        t.updated = "2026-02-01T08:00:00".into();
    }
    w
}

struct Run {
    status: ExitStatus,
    stderr: String,
}

impl Run {
    fn crashed(&self) -> bool {
        use std::os::unix::process::ExitStatusExt;
        self.status.signal().is_some()
    }
}

fn child(kind: &str, args: &[String], crash_at: Option<u64>) -> Result<Run> {
    let mut cmd = Command::new(std::env::current_exe()?);
    cmd.env(CHILD_ENV, kind)
        // One fixed clock for every run: partitions record when they were
        // published, and an interrupted run must write the same bytes as
        // the uninterrupted one.
        .env(sync_state::crash::FIXED_NOW_ENV, "2026-01-05T22:00:00Z")
        .env("RUST_LOG", "warn")
        .env_remove(CRASH_AT_ENV)
        .args(args);
    if let Some(n) = crash_at {
        cmd.env(CRASH_AT_ENV, n.to_string());
    }
    let out = cmd.output().context("running the child")?;
    Ok(Run {
        status: out.status,
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    })
}

fn sync_args(dir: &Path, base: &str) -> Vec<String> {
    [
        "statbank-sync",
        "--data-dir",
        &dir.display().to_string(),
        "--base-url",
        base,
        "--force-catalog-poll",
        "--no-progress",
        "--min-interval-ms",
        "0",
        "--max-retries",
        "0",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

fn copy_dir(from: &Path, to: &Path) -> Result<()> {
    std::fs::create_dir_all(to)?;
    for e in std::fs::read_dir(from)? {
        let e = e?;
        let target = to.join(e.file_name());
        if e.file_type()?.is_dir() {
            copy_dir(&e.path(), &target)?;
        } else {
            std::fs::copy(e.path(), &target)?;
        }
    }
    Ok(())
}

/// Union of `changed_tids` per table over the manifests not in `before`.
fn reported_changes(
    dir: &Path,
    before: &BTreeSet<String>,
) -> Result<BTreeMap<TableId, BTreeSet<Tid>>> {
    let data = DataDir::new(dir);
    let mut out: BTreeMap<TableId, BTreeSet<Tid>> = BTreeMap::new();
    for id in list_runs(&data)? {
        if before.contains(id.as_str()) {
            continue;
        }
        let m = RunManifest::load(&data, &id).with_context(|| format!("manifest {id} parses"))?;
        for (t, r) in m.tables {
            out.entry(t).or_default().extend(r.changed_tids);
        }
    }
    Ok(out)
}

fn run_ids(dir: &Path) -> Result<BTreeSet<String>> {
    Ok(list_runs(&DataDir::new(dir))?
        .into_iter()
        .map(|r| r.as_str().to_string())
        .collect())
}

/// The checks after every crash + recovery.
fn check(
    dir: &Path,
    expected: &BTreeMap<String, Vec<u8>>,
    must_report: &BTreeMap<TableId, BTreeSet<Tid>>,
    runs_before: &BTreeSet<String>,
    world: &World,
) -> Result<()> {
    let got = snapshot(dir);
    if got != *expected {
        let a: BTreeSet<_> = got.keys().collect();
        let b: BTreeSet<_> = expected.keys().collect();
        let differing: Vec<_> = a
            .intersection(&b)
            .filter(|k| got[**k] != expected[**k])
            .collect();
        bail!(
            "partitions differ from the uninterrupted run: extra {:?}, missing {:?}, different {:?}",
            a.difference(&b).collect::<Vec<_>>(),
            b.difference(&a).collect::<Vec<_>>(),
            differing
        );
    }
    let temps = temp_files(dir);
    ensure!(temps.is_empty(), "temp files left: {temps:?}");
    let data = DataDir::new(dir);
    let state = SyncState::load(&data).context("state.json parses")?;
    // No table is marked synced (at the world's `updated`) without all of
    // its periods on disk.
    for (id, e) in &state.tables {
        let Some(t) = world.table(id.as_str()) else {
            continue;
        };
        if e.last_seen_updated.as_deref() == Some(t.updated.as_str()) {
            for v in &t.time_values {
                let tid = Tid::new(v.id.clone())?;
                let name = format!(
                    "{}/{}",
                    id,
                    data.partition_key(id, &tid)
                        .rsplit('/')
                        .next()
                        .unwrap_or_default()
                );
                ensure!(
                    got.contains_key(&name),
                    "{id} marked synced but {name} is missing"
                );
            }
        }
        ensure!(
            e.pending_changed_tids.is_empty(),
            "{id}: journal not cleared after a complete run: {:?}",
            e.pending_changed_tids
        );
    }
    // Every change was reported by some manifest: nothing hidden from the
    // DB apply by the crash.
    let reported = reported_changes(dir, runs_before)?;
    for (t, tids) in must_report {
        let empty = BTreeSet::new();
        let r = reported.get(t).unwrap_or(&empty);
        let missing: Vec<_> = tids.difference(r).collect();
        ensure!(
            missing.is_empty(),
            "{t}: changes never reported in a manifest: {missing:?}"
        );
    }
    Ok(())
}

/// Runs crash points 1, 2, … of one phase until a run passes them all.
#[allow(clippy::too_many_arguments)]
fn phase(
    name: &str,
    start: Option<&Path>,
    base: &str,
    work: &Path,
    expected: &BTreeMap<String, Vec<u8>>,
    must_report: &BTreeMap<TableId, BTreeSet<Tid>>,
    world: &World,
    labels: &mut BTreeMap<String, usize>,
) -> Result<u64> {
    let mut points = 0;
    for n in 1..=10_000u64 {
        let dir = work.join(format!("{name}-{n}"));
        if let Some(s) = start {
            copy_dir(s, &dir)?;
        }
        let runs_before = run_ids(&dir).unwrap_or_default();
        let r = child("sync", &sync_args(&dir, base), Some(n))?;
        if !r.crashed() {
            ensure!(
                r.status.success(),
                "{name}: run with crash point {n} failed: {}",
                r.stderr
            );
            break;
        }
        points = n;
        let label = r
            .stderr
            .lines()
            .find_map(|l| {
                l.split_once(&format!("crash point {n}: "))
                    .map(|x| x.1.to_string())
            })
            .unwrap_or_else(|| "?".into());
        *labels.entry(label.clone()).or_default() += 1;
        let rec = child("sync", &sync_args(&dir, base), None)?;
        ensure!(
            rec.status.success(),
            "{name}: recovery after crash point {n} ({label}) failed: {}",
            rec.stderr
        );
        check(&dir, expected, must_report, &runs_before, world)
            .with_context(|| format!("{name}: after crash point {n} ({label})"))?;
        std::fs::remove_dir_all(&dir)?;
    }
    Ok(points)
}

fn harness() -> Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let (w0, w1) = (world0(), world1());
    let emu0 = rt.block_on(Emulator::start(w0.clone()))?;
    let emu1 = rt.block_on(Emulator::start(w1.clone()))?;
    let tmp = tempfile::tempdir()?;
    let work = tmp.path();

    // The uninterrupted reference: bootstrap, then the incremental cycle.
    let reference = work.join("reference");
    let r = child("sync", &sync_args(&reference, &emu0.base_url()), None)?;
    ensure!(
        r.status.success(),
        "reference bootstrap failed: {}",
        r.stderr
    );
    let s0 = snapshot(&reference);
    let base_copy = work.join("after-bootstrap");
    copy_dir(&reference, &base_copy)?;
    let runs0 = run_ids(&reference)?;
    let r = child("sync", &sync_args(&reference, &emu1.base_url()), None)?;
    ensure!(
        r.status.success(),
        "reference incremental failed: {}",
        r.stderr
    );
    let s1 = snapshot(&reference);
    let changed1 = reported_changes(&reference, &runs0)?;
    ensure!(
        changed1.values().map(BTreeSet::len).sum::<usize>() == 3,
        "the incremental world changes 3 periods: {changed1:?}"
    );
    let all0: BTreeMap<TableId, BTreeSet<Tid>> = w0
        .tables
        .values()
        .map(|t| {
            let id = TableId::new(&t.id)?;
            let tids = t
                .time_values
                .iter()
                .map(|v| Tid::new(v.id.clone()))
                .collect::<Result<BTreeSet<_>, _>>()?;
            Ok((id, tids))
        })
        .collect::<Result<_, sync_state::Error>>()?;

    let mut labels = BTreeMap::new();
    let p0 = phase(
        "bootstrap",
        None,
        &emu0.base_url(),
        work,
        &s0,
        &all0,
        &w0,
        &mut labels,
    )?;
    let p1 = phase(
        "incremental",
        Some(&base_copy),
        &emu1.base_url(),
        work,
        &s1,
        &changed1,
        &w1,
        &mut labels,
    )?;
    println!(
        "crash harness (sync): {p0} kill points in the bootstrap, {p1} in the incremental cycle"
    );
    for (label, n) in &labels {
        println!("  {n:>4} × {label}");
    }
    ensure!(
        p0 + p1 >= 50,
        "expected at least 50 kill points, found {}",
        p0 + p1
    );

    apply_phase(work, &reference)?;
    rt.block_on(async {
        emu0.shutdown().await;
        emu1.shutdown().await;
    });
    Ok(())
}

/// `statbank-apply` killed at each of its crash points against the real
/// Postgres; after a re-run the fact table equals an uninterrupted apply.
fn apply_phase(work: &Path, reference: &Path) -> Result<()> {
    let db = tests::pg::test_db()?;
    let mut pg = db.client()?;
    let data = DataDir::new(reference);
    let runs: Vec<_> = list_runs(&data)?;
    let (bootstrap_run, incr_run) = match runs.as_slice() {
        [a, b] => (a.clone(), b.clone()),
        other => bail!("expected two reference runs, found {other:?}"),
    };
    let apply_args = |dir: &Path, run: &str, schema: &str| -> Vec<String> {
        [
            "statbank-apply",
            "--data-dir",
            &dir.display().to_string(),
            "--database-url",
            db.url(),
            "--run-id",
            run,
            "--create-missing",
            "--schema",
            schema,
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    };
    let table_rows = |pg: &mut postgres::Client, schema: &str| -> Result<Vec<String>> {
        let mut out = Vec::new();
        for t in ["annual", "quart", "season"] {
            let rows = pg.query(
                &format!("SELECT t::text FROM \"{schema}\".\"{t}\" t ORDER BY 1"),
                &[],
            )?;
            out.extend(
                rows.iter()
                    .map(|r| format!("{t}:{}", r.get::<_, String>(0))),
            );
        }
        Ok(out)
    };
    // Reference: both runs applied without interruption.
    pg.batch_execute("CREATE SCHEMA ref")?;
    let dir = work.join("apply-ref");
    copy_dir(reference, &dir)?;
    for run in [&bootstrap_run, &incr_run] {
        let r = child("apply", &apply_args(&dir, run.as_str(), "ref"), None)?;
        ensure!(r.status.success(), "reference apply failed: {}", r.stderr);
    }
    let expected = table_rows(&mut pg, "ref")?;
    ensure!(!expected.is_empty());

    let mut points = 0;
    let mut labels: BTreeMap<String, usize> = BTreeMap::new();
    for n in 1..=1000u64 {
        let schema = format!("crash{n}");
        pg.batch_execute(&format!("CREATE SCHEMA {schema}"))?;
        let dir = work.join(format!("apply-{n}"));
        copy_dir(reference, &dir)?;
        // Crash point n counts over both applies (bootstrap, then incremental);
        // after a crash the interrupted apply is re-run and the rest run
        // uninterrupted.
        let mut remaining = Some(n);
        let mut crashed = false;
        for run in [&bootstrap_run, &incr_run] {
            let r = child("apply", &apply_args(&dir, run.as_str(), &schema), remaining)?;
            if r.crashed() {
                crashed = true;
                remaining = None;
                let label = r
                    .stderr
                    .lines()
                    .find_map(|l| l.split_once("crash point ").map(|x| x.1.to_string()))
                    .and_then(|l| l.split_once(": ").map(|x| x.1.to_string()))
                    .unwrap_or_else(|| "?".into());
                *labels.entry(label).or_default() += 1;
                let rec = child("apply", &apply_args(&dir, run.as_str(), &schema), None)?;
                ensure!(
                    rec.status.success(),
                    "apply recovery after point {n} failed: {}",
                    rec.stderr
                );
            } else {
                ensure!(
                    r.status.success(),
                    "apply with point {n} failed: {}",
                    r.stderr
                );
                let passed: u64 = r
                    .stderr
                    .lines()
                    .find_map(|l| l.strip_prefix("crash-points-passed="))
                    .and_then(|v| v.trim().parse().ok())
                    .ok_or_else(|| anyhow!("the apply child did not report its crash points"))?;
                remaining = remaining.map(|m| m - passed);
            }
        }
        let got = table_rows(&mut pg, &schema)?;
        ensure!(
            got == expected,
            "apply crash point {n}: fact tables differ from the uninterrupted apply"
        );
        pg.batch_execute(&format!("DROP SCHEMA {schema} CASCADE"))?;
        std::fs::remove_dir_all(&dir)?;
        if !crashed {
            break;
        }
        points = n;
    }
    println!(
        "crash harness (apply): {points} kill points over two applies; fact tables equal the uninterrupted result after every one"
    );
    for (label, n) in &labels {
        println!("  {n:>4} × {label}");
    }
    ensure!(
        points >= 6,
        "expected crash points inside the apply, found {points}"
    );
    Ok(())
}
