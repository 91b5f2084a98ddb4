//! Crash consistency: `statbank-sync` and
//! `statbank-apply` are killed at every crash point of a bootstrap and of an
//! incremental cycle (`sync_state::crash`: before/after every rename, after
//! every temp file, at every body chunk, inside the DB transaction) and run
//! again. After every case the result must equal an uninterrupted run.
//! The sync's points are named by label and passing (`label#k`, listed by
//! a traced uninterrupted run), because concurrent tables pass them in a
//! different order from run to run; the apply is sequential and its points
//! are numbered.
//!
//! The children run exactly the binaries' code (`bins::app::sync::main`,
//! `bins::app::apply::main`): this test binary re-executes itself with
//! `STATBANK_CRASH_CHILD` set. Plain `main` (harness = false) because the
//! cases share emulators and run in sequence.
//!
//! `STATBANK_CRASH_FULL=1` uses a larger world (more chunks, more periods).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, ExitStatus};

use anyhow::{anyhow, bail, ensure, Context, Result};
use statbank_client::emulator::{EmuTable, Emulator, World};
use sync_state::crash::{CrashAt, CRASH_AT_ENV, CRASH_TRACE_ENV};
use sync_state::{list_runs, DataDir, RunManifest, SyncState, TableId, Tid};
use tests::s3::S3;
use tests::sync::{snapshot_of, temp_files};

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

/// The third world: SEASON gains a variable (its set is swapped whole, the
/// old one kept as vintages) and ANNUAL revises a period (replaced in place,
/// the old content kept as a vintage).
fn world2() -> World {
    let mut w = world1();
    if let Some(t) = w.table_mut("SEASON") {
        t.variables.insert(
            0,
            statbank_client::emulator::EmuVariable {
                id: "KØN".into(),
                text: "køn".into(),
                elimination: true,
                map: None,
                values: vec![
                    statbank_client::emulator::EmuValue::code("1"),
                    statbank_client::emulator::EmuValue::code("2"),
                ],
            },
        );
        t.updated = "2026-03-01T08:00:00".into();
    }
    if let Some(t) = w.table_mut("ANNUAL") {
        t.revisions.insert("2023".into(), 1);
        t.updated = "2026-03-01T08:00:00".into();
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

/// Where a phase's data folders live: a local folder, or prefixes in the
/// test S3 server (children get its settings through the environment).
#[derive(Clone)]
enum Target {
    Local(PathBuf),
    S3(&'static S3),
}

impl Target {
    /// A fresh data folder named `name`.
    fn location(&self, name: &str) -> String {
        match self {
            Target::Local(work) => work.join(name).display().to_string(),
            Target::S3(s3) => s3.url(name),
        }
    }

    fn open(&self, location: &str) -> Result<DataDir> {
        Ok(match self {
            Target::Local(_) => DataDir::local(location),
            Target::S3(s3) => DataDir::open_with(location, &s3.options())?,
        })
    }

    fn env(&self) -> Vec<(String, String)> {
        match self {
            Target::Local(_) => Vec::new(),
            Target::S3(s3) => s3.env(),
        }
    }

    /// Every object of `from` copied under `to`.
    fn copy(&self, from: &str, to: &str) -> Result<()> {
        match self {
            Target::Local(_) => copy_dir(Path::new(from), Path::new(to)),
            Target::S3(_) => {
                let (a, b) = (self.open(from)?, self.open(to)?);
                for o in a.storage().list_recursive("")? {
                    let bytes = a.storage().get(&o.key)?.context("listed object")?;
                    b.storage().put(&o.key, &bytes)?;
                }
                Ok(())
            }
        }
    }

    fn remove(&self, location: &str) -> Result<()> {
        match self {
            Target::Local(_) => Ok(std::fs::remove_dir_all(location)?),
            Target::S3(_) => {
                self.open(location)?.storage().delete_prefix("")?;
                Ok(())
            }
        }
    }

    fn name(&self) -> &'static str {
        match self {
            Target::Local(_) => "local",
            Target::S3(_) => "s3",
        }
    }
}

fn child(
    kind: &str,
    args: &[String],
    env: &[(String, String)],
    crash_at: Option<&CrashAt>,
) -> Result<Run> {
    let mut cmd = Command::new(std::env::current_exe()?);
    cmd.env(CHILD_ENV, kind)
        // One fixed clock for every run, so that an interrupted run and
        // the uninterrupted one write the same records.
        .env(sync_state::crash::FIXED_NOW_ENV, "2026-01-05T22:00:00Z")
        .env("RUST_LOG", "warn")
        .env_remove(CRASH_AT_ENV)
        .args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    if let Some(at) = crash_at {
        cmd.env(CRASH_AT_ENV, at.to_string());
    }
    let out = cmd.output().context("running the child")?;
    Ok(Run {
        status: out.status,
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    })
}

fn sync_args(dir: &str, base: &str) -> Vec<String> {
    [
        "statbank-sync",
        "--data-dir",
        dir,
        "--base-url",
        base,
        "--force-catalog-poll",
        "--no-progress",
        "--min-interval-ms",
        "0",
        "--max-retries",
        "0",
        "--keep-vintages",
        "--iceberg",
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

/// Periods per table.
type Periods = BTreeMap<TableId, BTreeSet<Tid>>;

/// Union of `changed_tids` and `verified_periods` per table over the
/// manifests not in `before`.
fn reported(data: &DataDir, before: &BTreeSet<String>) -> Result<(Periods, Periods)> {
    let mut changed: Periods = BTreeMap::new();
    let mut verified: Periods = BTreeMap::new();
    for id in list_runs(data)? {
        if before.contains(id.as_str()) {
            continue;
        }
        let m = RunManifest::load(data, &id).with_context(|| format!("manifest {id} parses"))?;
        for (t, r) in m.tables {
            changed.entry(t.clone()).or_default().extend(r.changed_tids);
            verified
                .entry(t)
                .or_default()
                .extend(r.verified_periods.unwrap_or_default());
        }
    }
    Ok((changed, verified))
}

fn run_ids(data: &DataDir) -> Result<BTreeSet<String>> {
    Ok(list_runs(data)?
        .into_iter()
        .map(|r| r.as_str().to_string())
        .collect())
}

/// Every vintage of a data folder (`key` → bytes).
fn vintages(data: &DataDir) -> Result<BTreeMap<String, Vec<u8>>> {
    let mut out = BTreeMap::new();
    for o in data.storage().list_recursive("statbank_tables/_vintages")? {
        let b = data.storage().get(&o.key)?.context("listed vintage")?;
        out.insert(o.key, b.to_vec());
    }
    Ok(out)
}

/// What an uninterrupted run leaves, to compare a recovered run with.
struct Expected {
    partitions: BTreeMap<String, Vec<u8>>,
    vintages: BTreeMap<String, Vec<u8>>,
    /// Changes every run must report (some manifest lists them).
    must_report: BTreeMap<TableId, BTreeSet<Tid>>,
    /// Periods that owe a verification after the cycle (still owed, or
    /// verified by some manifest: a crash never loses the debt).
    owed: BTreeMap<TableId, BTreeSet<Tid>>,
}

/// The checks after every crash + recovery.
fn check(
    data: &DataDir,
    expected: &Expected,
    runs_before: &BTreeSet<String>,
    world: &World,
) -> Result<()> {
    let got = snapshot_of(data);
    if got != expected.partitions {
        let a: BTreeSet<_> = got.keys().collect();
        let b: BTreeSet<_> = expected.partitions.keys().collect();
        let differing: Vec<_> = a
            .intersection(&b)
            .filter(|k| got[**k] != expected.partitions[**k])
            .collect();
        bail!(
            "partitions differ from the uninterrupted run: extra {:?}, missing {:?}, different {:?}",
            a.difference(&b).collect::<Vec<_>>(),
            b.difference(&a).collect::<Vec<_>>(),
            differing
        );
    }
    let v = vintages(data)?;
    ensure!(
        v == expected.vintages,
        "vintages differ from the uninterrupted run: {:?} vs {:?}",
        v.keys().collect::<Vec<_>>(),
        expected.vintages.keys().collect::<Vec<_>>()
    );
    if let Some(root) = data.local_root() {
        let temps = temp_files(root);
        ensure!(temps.is_empty(), "temp files left: {temps:?}");
    }
    for prefix in [
        "statbank_tables/_sync/intents",
        "statbank_tables/_sync/staging",
        "statbank_tables/_sync/uploads",
    ] {
        let left = data.storage().list_recursive(prefix)?;
        ensure!(left.is_empty(), "{prefix} not settled: {left:?}");
    }
    let state = SyncState::load(data).context("state.json parses")?;
    // No table is marked synced (at the world's `updated`) without all of
    // its periods.
    for (id, e) in &state.tables {
        let Some(t) = world.table(id.as_str()) else {
            continue;
        };
        if e.last_seen_updated.as_deref() == Some(t.updated.as_str()) {
            for v in &t.time_values {
                let tid = Tid::new(v.id.clone())?;
                let key = data.partition_key(id, &tid);
                let name = key.trim_start_matches("statbank_tables/").to_string();
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
        iceberg_is_true(data, id, e)?;
    }
    // Every change was reported by some manifest, and every period that
    // owes a verification still owes it or was verified.
    let (changed, verified) = reported(data, runs_before)?;
    let empty = BTreeSet::new();
    for (t, tids) in &expected.must_report {
        let r = changed.get(t).unwrap_or(&empty);
        let missing: Vec<_> = tids.difference(r).collect();
        ensure!(
            missing.is_empty(),
            "{t}: changes never reported in a manifest: {missing:?}"
        );
    }
    for (t, tids) in &expected.owed {
        let debt: BTreeSet<Tid> = state
            .tables
            .get(t)
            .map(|e| e.verify_debt.iter().cloned().collect())
            .unwrap_or_default();
        let done = verified.get(t).unwrap_or(&empty);
        let lost: Vec<_> = tids
            .iter()
            .filter(|x| !debt.contains(*x) && !done.contains(*x))
            .collect();
        ensure!(
            lost.is_empty(),
            "{t}: verification debt lost by the crash: {lost:?}"
        );
    }
    Ok(())
}

/// After a complete run, a table's Iceberg metadata describes its files:
/// generated for the `updated` it is synced at, and regenerating it from the
/// files writes nothing.
fn iceberg_is_true(data: &DataDir, id: &TableId, e: &sync_state::TableState) -> Result<()> {
    let Some(updated) = e.last_seen_updated.as_deref() else {
        return Ok(());
    };
    ensure!(
        e.iceberg_updated.as_deref() == Some(updated),
        "{id}: Iceberg metadata generated for {:?}, the table is at {updated}",
        e.iceberg_updated
    );
    let store = partition_store::PartitionStore::new(data);
    let out = store
        .write_iceberg(id, updated, &partition_store::IcebergOptions::at(0))
        .with_context(|| format!("{id}: regenerating its Iceberg metadata"))?;
    ensure!(
        !out.written,
        "{id}: the Iceberg metadata left by the run does not describe its files"
    );
    Ok(())
}

/// Runs crash points 1, 2, … of one phase until a run passes them all
/// (every `stride`-th point; 1 = all).
struct Phase<'a> {
    name: &'a str,
    target: &'a Target,
    start: Option<&'a str>,
    base: &'a str,
    expected: &'a Expected,
    world: &'a World,
    stride: u64,
}

impl Phase<'_> {
    /// A fresh data folder named `name`, holding a copy of the phase's start.
    fn fresh(&self, name: &str) -> Result<String> {
        let loc = self.target.location(name);
        if let Some(s) = self.start {
            self.target.copy(s, &loc)?;
        }
        Ok(loc)
    }
}

/// The crash points an uninterrupted run of `p` passes, by label, with how
/// often each is passed (a traced run on a fresh copy of `p.start`).
fn points_of(p: &Phase<'_>) -> Result<BTreeMap<String, u64>> {
    let loc = p.fresh(&format!("{}-trace", p.name))?;
    let mut env = p.target.env();
    env.push((CRASH_TRACE_ENV.to_string(), "1".to_string()));
    let r = child("sync", &sync_args(&loc, p.base), &env, None)?;
    ensure!(
        r.status.success(),
        "{}: traced run failed: {}",
        p.name,
        r.stderr
    );
    p.target.remove(&loc)?;
    let mut points = BTreeMap::new();
    for label in r
        .stderr
        .lines()
        .filter_map(|l| l.split_once("crash point passed: ").map(|x| x.1))
    {
        *points.entry(label.to_string()).or_default() += 1;
    }
    ensure!(
        !points.is_empty(),
        "{}: the traced run passed no crash point",
        p.name
    );
    Ok(points)
}

/// Kills `statbank-sync` at each crash point of phase `p` in turn, named by
/// label and passing (`label#k`, every `stride`-th passing of each label),
/// so that every kind of point is hit whatever order concurrent tables
/// pass them in. After each kill a re-run must converge to `p.expected`.
fn phase(p: &Phase<'_>, labels: &mut BTreeMap<String, usize>) -> Result<u64> {
    let mut kills = 0;
    let mut missed = 0;
    let env = p.target.env();
    let points = points_of(p)?;
    for (i, (label, &count)) in points.iter().enumerate() {
        for k in (1..=count).step_by(usize::try_from(p.stride)?) {
            let at = CrashAt::Label {
                label: label.clone(),
                k,
            };
            let loc = p.fresh(&format!("{}-{i}-{k}", p.name))?;
            let data = p.target.open(&loc)?;
            let runs_before = run_ids(&data).unwrap_or_default();
            let r = child("sync", &sync_args(&loc, p.base), &env, Some(&at))?;
            if r.crashed() {
                ensure!(
                    r.stderr.contains(&format!("crash point {at}: {label}")),
                    "{}: the run armed at {at} crashed elsewhere: {}",
                    p.name,
                    r.stderr
                );
                kills += 1;
                *labels.entry(label.clone()).or_default() += 1;
                let rec = child("sync", &sync_args(&loc, p.base), &env, None)?;
                ensure!(
                    rec.status.success(),
                    "{}: recovery after crash point {at} failed: {}",
                    p.name,
                    rec.stderr
                );
            } else {
                // This run passed the point fewer times than the traced
                // one (body chunks vary); it must still be a clean run.
                ensure!(
                    r.status.success(),
                    "{}: run armed at {at} failed: {}",
                    p.name,
                    r.stderr
                );
                missed += 1;
            }
            check(&data, p.expected, &runs_before, p.world).with_context(|| {
                format!("{} ({}): after crash point {at}", p.name, p.target.name())
            })?;
            p.target.remove(&loc)?;
        }
    }
    if missed > 0 {
        println!(
            "  {}: {missed} armed run(s) passed their point fewer times than the traced run and ran clean",
            p.name
        );
    }
    Ok(kills)
}

fn all_periods(w: &World) -> Result<BTreeMap<TableId, BTreeSet<Tid>>> {
    w.tables
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
        .collect::<Result<_, sync_state::Error>>()
        .map_err(Into::into)
}

/// The uninterrupted reference of one phase: runs `base` on (a copy of)
/// `start` and records what it left.
fn reference(
    target: &Target,
    name: &str,
    start: Option<&str>,
    base: &str,
    must_report: Option<BTreeMap<TableId, BTreeSet<Tid>>>,
) -> Result<(String, Expected)> {
    let loc = target.location(name);
    if let Some(s) = start {
        target.copy(s, &loc)?;
    }
    let data = target.open(&loc)?;
    let before = run_ids(&data)?;
    let r = child("sync", &sync_args(&loc, base), &target.env(), None)?;
    ensure!(r.status.success(), "reference {name} failed: {}", r.stderr);
    let (changed, verified) = reported(&data, &before)?;
    let state = SyncState::load(&data)?;
    let mut owed = verified;
    for (t, e) in &state.tables {
        owed.entry(t.clone())
            .or_default()
            .extend(e.verify_debt.iter().cloned());
    }
    Ok((
        loc,
        Expected {
            partitions: snapshot_of(&data),
            vintages: vintages(&data)?,
            must_report: must_report.unwrap_or(changed),
            owed,
        },
    ))
}

/// Bootstrap, incremental (revisions, a new period, verification debt),
/// and schema change (a whole-set swap) with vintages on, each killed at
/// every crash point (`stride`) on `target`.
fn sync_phases(
    target: &Target,
    bases: [&str; 3],
    worlds: [&World; 3],
    stride: u64,
    labels: &mut BTreeMap<String, usize>,
) -> Result<[u64; 3]> {
    let (ref0, e0) = reference(
        target,
        "reference-0",
        None,
        bases[0],
        Some(all_periods(worlds[0])?),
    )?;
    let (ref1, e1) = reference(target, "reference-1", Some(&ref0), bases[1], None)?;
    let changed1: usize = e1.must_report.values().map(BTreeSet::len).sum();
    ensure!(
        changed1 == 3,
        "the incremental world changes 3 periods: {:?}",
        e1.must_report
    );
    let (_ref2, e2) = reference(target, "reference-2", Some(&ref1), bases[2], None)?;
    ensure!(
        !e2.vintages.is_empty(),
        "the schema-change world keeps vintages"
    );
    let mut points = [0; 3];
    let phases = [
        ("bootstrap", None, &e0),
        ("incremental", Some(ref0.as_str()), &e1),
        ("schema-change", Some(ref1.as_str()), &e2),
    ];
    for (i, (name, start, expected)) in phases.into_iter().enumerate() {
        points[i] = phase(
            &Phase {
                name,
                target,
                start,
                base: bases[i],
                expected,
                world: worlds[i],
                stride,
            },
            labels,
        )?;
    }
    Ok(points)
}

fn harness() -> Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let (w0, w1, w2) = (world0(), world1(), world2());
    let emus = [
        rt.block_on(Emulator::start(w0.clone()))?,
        rt.block_on(Emulator::start(w1.clone()))?,
        rt.block_on(Emulator::start(w2.clone()))?,
    ];
    let bases = [emus[0].base_url(), emus[1].base_url(), emus[2].base_url()];
    let bases = [bases[0].as_str(), bases[1].as_str(), bases[2].as_str()];
    let tmp = tempfile::tempdir()?;
    let work = tmp.path();

    let mut labels = BTreeMap::new();
    let local = Target::Local(work.to_path_buf());
    let p = sync_phases(&local, bases, [&w0, &w1, &w2], 1, &mut labels)?;
    println!(
        "crash harness (sync, local): {} kill points in the bootstrap, {} in the incremental cycle, {} in the schema-change cycle",
        p[0], p[1], p[2]
    );
    for (label, n) in &labels {
        println!("  {n:>4} × {label}");
    }
    ensure!(
        p.iter().sum::<u64>() >= 100,
        "expected at least 100 kill points, found {p:?}"
    );
    ensure!(
        labels.keys().any(|l| l.contains("swap")),
        "the whole-set swap has crash points"
    );
    ensure!(
        labels.keys().any(|l| l.contains("vintage")),
        "keeping vintages has crash points"
    );

    // The same on the object store, every third kill point.
    match tests::s3::test_s3()? {
        Some(s3) => {
            let mut s3_labels = BTreeMap::new();
            let p = sync_phases(&Target::S3(s3), bases, [&w0, &w1, &w2], 3, &mut s3_labels)?;
            println!(
                "crash harness (sync, s3, every third passing of each point): {} + {} + {} kill points",
                p[0], p[1], p[2]
            );
            for (label, n) in &s3_labels {
                println!("  {n:>4} × {label}");
            }
        }
        None => println!("crash harness (sync, s3): SKIP, no S3 server"),
    }

    apply_phase(work, &local, false)?;
    apply_phase(work, &local, true)?;
    repair_phase(work, &local, false)?;
    repair_phase(work, &local, true)?;
    rt.block_on(async {
        for e in emus {
            e.shutdown().await;
        }
    });
    Ok(())
}

/// What the apply and repair phases share: the test database, the reference data
/// folder (after bootstrap and incremental cycle) and its two runs.
struct ApplySetup {
    db: tests::pg::TestDb,
    reference: PathBuf,
    runs: [String; 2],
    partitioned: bool,
}

impl ApplySetup {
    fn new(local: &Target, partitioned: bool) -> Result<Self> {
        let reference = PathBuf::from(local.location("reference-1"));
        let runs: Vec<_> = list_runs(&DataDir::local(&reference))?;
        let runs = match runs.as_slice() {
            [a, b] => [a.to_string(), b.to_string()],
            other => bail!("expected two reference runs, found {other:?}"),
        };
        Ok(Self {
            db: tests::pg::test_db()?,
            reference,
            runs,
            partitioned,
        })
    }

    /// `p` for the partitioned variant, empty otherwise (schema and folder
    /// names).
    fn kind(&self) -> &'static str {
        if self.partitioned {
            "p"
        } else {
            ""
        }
    }

    /// `statbank-apply` on `dir` into `schema`, with `extra` arguments
    /// (`--run-id R`, or `--reconcile …`).
    fn args(&self, dir: &Path, schema: &str, extra: &[&str]) -> Vec<String> {
        let partitioned: &[&str] = if self.partitioned {
            &["--partitioned"]
        } else {
            &[]
        };
        [
            "statbank-apply",
            "--data-dir",
            &dir.display().to_string(),
            "--database-url",
            self.db.url(),
            "--create-missing",
            "--schema",
            schema,
        ]
        .iter()
        .chain(partitioned)
        .chain(extra)
        .map(|s| s.to_string())
        .collect()
    }

    /// Applies both runs to `schema` without interruption.
    fn apply_all(&self, dir: &Path, schema: &str) -> Result<()> {
        for run in &self.runs {
            let r = child(
                "apply",
                &self.args(dir, schema, &["--run-id", run]),
                &[],
                None,
            )?;
            ensure!(r.status.success(), "apply of {run} failed: {}", r.stderr);
        }
        Ok(())
    }

    /// A fresh schema and a copy of the reference folder named `name`.
    fn fresh(&self, pg: &mut postgres::Client, work: &Path, name: &str) -> Result<PathBuf> {
        pg.batch_execute(&format!("CREATE SCHEMA {name}"))?;
        let dir = work.join(format!("apply-{name}"));
        copy_dir(&self.reference, &dir)?;
        Ok(dir)
    }

    fn drop(&self, pg: &mut postgres::Client, dir: &Path, schema: &str) -> Result<()> {
        pg.batch_execute(&format!("DROP SCHEMA {schema} CASCADE"))?;
        std::fs::remove_dir_all(dir)?;
        Ok(())
    }

    /// The reference result: both runs applied without interruption.
    fn expected(&self, pg: &mut postgres::Client, work: &Path) -> Result<Vec<String>> {
        let schema = format!("ref{}", self.kind());
        let dir = self.fresh(pg, work, &schema)?;
        self.apply_all(&dir, &schema)?;
        let expected = table_rows(pg, &schema)?;
        ensure!(!expected.is_empty());
        let partitioned_tables: i64 = pg
            .query_one(
                "SELECT count(*) FROM pg_partitioned_table p JOIN pg_class c ON c.oid = p.partrelid \
                 WHERE c.relnamespace = $1::text::regnamespace",
                &[&schema],
            )?
            .get(0);
        ensure!(
            partitioned_tables == if self.partitioned { 3 } else { 0 },
            "{partitioned_tables} partitioned tables in {schema}"
        );
        Ok(expected)
    }
}

/// Every fact table's rows as text, table-prefixed and sorted.
fn table_rows(pg: &mut postgres::Client, schema: &str) -> Result<Vec<String>> {
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
}

/// The label of the crash point a killed child stopped at.
fn crash_label(r: &Run) -> String {
    r.stderr
        .lines()
        .find_map(|l| l.split_once("crash point ").map(|x| x.1.to_string()))
        .and_then(|l| l.split_once(": ").map(|x| x.1.to_string()))
        .unwrap_or_else(|| "?".into())
}

/// How many crash points an uninterrupted child passed.
fn points_passed(r: &Run) -> Result<u64> {
    r.stderr
        .lines()
        .find_map(|l| l.strip_prefix("crash-points-passed="))
        .and_then(|v| v.trim().parse().ok())
        .ok_or_else(|| anyhow!("the apply child did not report its crash points"))
}

fn print_labels(labels: &BTreeMap<String, usize>) {
    for (label, n) in labels {
        println!("  {n:>4} × {label}");
    }
}

/// `statbank-apply` killed at each of its crash points against the real
/// Postgres; after a re-run the fact table equals an uninterrupted apply.
/// `partitioned`: the tables are created LIST-partitioned on `tid` and
/// applied by swapping partitions.
fn apply_phase(work: &Path, local: &Target, partitioned: bool) -> Result<()> {
    let setup = ApplySetup::new(local, partitioned)?;
    let kind = setup.kind();
    let mut pg = setup.db.client()?;
    let expected = setup.expected(&mut pg, work)?;

    let mut points = 0;
    let mut labels: BTreeMap<String, usize> = BTreeMap::new();
    for n in 1..=1000u64 {
        let schema = format!("crash{n}{kind}");
        let dir = setup.fresh(&mut pg, work, &schema)?;
        // Crash point n counts over both applies (bootstrap, then incremental);
        // after a crash the interrupted apply is re-run and the rest run
        // uninterrupted.
        let mut remaining = Some(n);
        let mut crashed = false;
        for run in &setup.runs {
            let args = setup.args(&dir, &schema, &["--run-id", run]);
            let r = child("apply", &args, &[], remaining.map(CrashAt::Nth).as_ref())?;
            if r.crashed() {
                crashed = true;
                remaining = None;
                *labels.entry(crash_label(&r)).or_default() += 1;
                let rec = child("apply", &args, &[], None)?;
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
                let passed = points_passed(&r)?;
                remaining = remaining.map(|m| m - passed);
            }
        }
        let got = table_rows(&mut pg, &schema)?;
        ensure!(
            got == expected,
            "apply crash point {n}: fact tables differ from the uninterrupted apply"
        );
        setup.drop(&mut pg, &dir, &schema)?;
        if !crashed {
            break;
        }
        points = n;
    }
    println!(
        "crash harness (apply{}): {points} kill points over two applies; fact tables equal the uninterrupted result after every one",
        if partitioned { ", partitioned" } else { "" }
    );
    print_labels(&labels);
    ensure!(
        points >= 6,
        "expected crash points inside the apply, found {points}"
    );
    Ok(())
}

/// Damage done behind the apply's back: a period's rows deleted
/// (ANNUAL), a value edited and a row duplicated (QUART), a table dropped
/// (SEASON).
const DAMAGE: &str = "
    DELETE FROM {s}.annual WHERE tid = (SELECT min(tid) FROM {s}.annual);
    UPDATE {s}.quart SET indhold = indhold + 1
        WHERE (tableoid, ctid) = (SELECT tableoid, ctid FROM {s}.quart ORDER BY tid DESC LIMIT 1);
    INSERT INTO {s}.quart SELECT * FROM {s}.quart ORDER BY tid LIMIT 1;
    DROP TABLE {s}.season;
";

/// `statbank-apply --reconcile --repair` killed at each of its crash points
/// on a damaged database; after a re-run of the repair the fact tables
/// equal the uninterrupted apply and a reconcile finds nothing.
fn repair_phase(work: &Path, local: &Target, partitioned: bool) -> Result<()> {
    let setup = ApplySetup::new(local, partitioned)?;
    let kind = setup.kind();
    let mut pg = setup.db.client()?;
    let expected = setup.expected(&mut pg, work)?;
    let mut points = 0;
    let mut labels: BTreeMap<String, usize> = BTreeMap::new();
    for n in 1..=1000u64 {
        let schema = format!("repair{n}{kind}");
        let dir = setup.fresh(&mut pg, work, &schema)?;
        setup.apply_all(&dir, &schema)?;
        pg.batch_execute(&DAMAGE.replace("{s}", &schema))?;
        let repair = setup.args(&dir, &schema, &["--reconcile", "--repair"]);
        let r = child("apply", &repair, &[], Some(&CrashAt::Nth(n)))?;
        let crashed = r.crashed();
        if crashed {
            *labels.entry(crash_label(&r)).or_default() += 1;
            let rec = child("apply", &repair, &[], None)?;
            ensure!(
                rec.status.success(),
                "repair after crash point {n} failed: {}",
                rec.stderr
            );
        } else {
            ensure!(
                r.status.success(),
                "repair with crash point {n} armed failed: {}",
                r.stderr
            );
            ensure!(
                points_passed(&r)? < n,
                "point {n} armed, passed, and no crash"
            );
        }
        let got = table_rows(&mut pg, &schema)?;
        ensure!(
            got == expected,
            "repair crash point {n}: fact tables differ from the uninterrupted apply"
        );
        let check = child(
            "apply",
            &setup.args(&dir, &schema, &["--reconcile"]),
            &[],
            None,
        )?;
        ensure!(
            check.status.success(),
            "repair crash point {n}: the reconcile after the repair exits {:?}: {}",
            check.status.code(),
            check.stderr
        );
        setup.drop(&mut pg, &dir, &schema)?;
        if !crashed {
            break;
        }
        points = n;
    }
    println!(
        "crash harness (repair{}): {points} kill points in a repair of three damaged tables; fact tables equal the uninterrupted apply after every one, and a reconcile agrees",
        if partitioned { ", partitioned" } else { "" }
    );
    print_labels(&labels);
    ensure!(
        points >= 6,
        "expected crash points inside the repair, found {points}"
    );
    Ok(())
}
