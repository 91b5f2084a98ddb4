//! `--iceberg`: three cycles with revisions, a new and a pruned period, and
//! vintages, over a quarterly table and one with odd period codes
//! (`1840:1849`, `2020/2021`, `AUG - DEC 2019`, zero-row periods) that
//! also gains a variable. The metadata has one snapshot per published
//! `updated`, on StatBank's clock; old versions go after the grace period;
//! a cycle that changes nothing writes nothing; real readers (pyiceberg and
//! DuckDB's iceberg extension, `tests/iceberg/check.py`) read every instant
//! exactly as `statbank-inspect asof` does; a deleted table and
//! `--no-iceberg` remove it. On disk and on S3.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use bins::{run_sync_cycle, IcebergMetadata, SyncOptions, Vintages};
use partition_store::PartitionStore;
use statbank_client::emulator::{EmuTable, Emulator, World};
use sync_state::{source_time_to_utc, DataDir, RunStatus, SyncState, TableId};
use tests::sync::{at_hours, fast_client, options};

const UPDATED: [&str; 3] = [
    "2026-01-08T08:00:00",
    "2026-02-12T08:00:00",
    "2026-03-12T08:00:00",
];

fn world() -> World {
    let mut w = World::new();
    let mut q = EmuTable::synthetic(
        "QTR",
        &["2023K1", "2023K2", "2023K3", "2023K4", "2024K1", "2024K2"],
        &[("OMRÅDE", 3), ("KØN", 2)],
    );
    q.updated = UPDATED[0].into();
    q.decimals = 1;
    q.missing_rate = 0.1;
    w.insert(q);
    let mut odd = EmuTable::synthetic(
        "ODD",
        &[
            "1840:1849",
            "2020/2021",
            "AUG - DEC 2019",
            "2021/2022",
            "1850:1859",
            "AUG - DEC 2020",
        ],
        &[("OMRÅDE", 1), ("KØN", 2)],
    );
    // Two cells per period, half of them absent: zero-row periods.
    odd.density = 0.35;
    // A seed whose cells leave some periods empty and the revised ones not.
    odd.seed = 1;
    odd.updated = UPDATED[0].into();
    w.insert(odd);
    w
}

fn opts(dir: &DataDir, k: usize) -> SyncOptions {
    let mut o = options(Path::new("unused"), at_hours(24 * 7 * k as i64), true);
    o.data_dir = dir.clone();
    if k == 0 {
        o.vintages = Vintages::Keep;
        o.iceberg = IcebergMetadata::Write; // on once: it stays on
    }
    o.prune_deleted_periods = true;
    o.verify.cycles = 0;
    o
}

/// Every object under `statbank_tables/_iceberg`, key → bytes.
fn iceberg_objects(dir: &DataDir) -> BTreeMap<String, Vec<u8>> {
    let s = dir.storage();
    s.list_recursive(&dir.iceberg_root_key())
        .expect("list")
        .into_iter()
        .map(|o| {
            let bytes = s.get(&o.key).expect("get").expect("listed");
            (o.key, bytes.to_vec())
        })
        .collect()
}

fn metadata_key(dir: &DataDir, table: &str) -> String {
    format!(
        "{}/metadata",
        dir.iceberg_key(&TableId::new(table).expect("id"))
    )
}

fn current_metadata(dir: &DataDir, table: &str) -> serde_json::Value {
    let s = dir.storage();
    let meta = metadata_key(dir, table);
    let n = s
        .get(&format!("{meta}/version-hint.text"))
        .expect("get")
        .expect("hint");
    let n = String::from_utf8_lossy(&n).trim().to_string();
    let text = s
        .get(&format!("{meta}/v{n}.metadata.json"))
        .expect("get")
        .expect("metadata");
    serde_json::from_slice(&text).expect("json")
}

fn ms(source: &str) -> i64 {
    source_time_to_utc(source)
        .expect("instant")
        .timestamp_millis()
}

#[test]
fn iceberg_snapshots_follow_every_published_updated() {
    let tmp = tempfile::tempdir().expect("tmp");
    scenario(&DataDir::local(tmp.path()), tmp.path(), None);
}

/// The same on the S3 test server: the metadata names `s3://` URLs, and the
/// readers open it there.
#[test]
fn iceberg_tables_on_s3() {
    let Some(s3) = tests::s3::test_s3().expect("S3 server") else {
        return;
    };
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = s3.data_dir("iceberg").expect("s3");
    let props = serde_json::json!({
        "s3.endpoint": s3.endpoint,
        "s3.access-key-id": s3.access_key,
        "s3.secret-access-key": s3.secret_key,
        "s3.region": "us-east-1",
    });
    scenario(&dir, tmp.path(), Some(props));
}

/// Three cycles, a no-change cycle, a regeneration and `--no-iceberg` on
/// `dir`; `scratch` holds the asof files; `storage`: the readers' S3
/// settings.
fn scenario(dir: &DataDir, scratch: &Path, storage: Option<serde_json::Value>) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let emu = rt.block_on(Emulator::start(world())).expect("emulator");
    let client = fast_client(&emu.base_url(), 0);
    let h = emu.handle();
    let cycle = |k: usize| {
        let m = rt
            .block_on(run_sync_cycle(&client, &opts(dir, k)))
            .expect("cycle");
        assert_eq!(m.status, RunStatus::Success, "{:?}", m.tables);
        m
    };

    let m0 = cycle(0);
    assert_eq!(
        m0.tables[&TableId::new("QTR").expect("id")].iceberg_version,
        Some(1)
    );
    // Cycle 1: QTR revised (2024K2) and a new quarter; ODD revised.
    h.revise_period("QTR", "2024K2");
    h.add_period("QTR", "2024K3");
    h.set_updated("QTR", UPDATED[1]);
    h.revise_period("ODD", "AUG - DEC 2020");
    h.revise_period("ODD", "1850:1859");
    h.set_updated("ODD", UPDATED[1]);
    let m1 = cycle(1);
    let odd = TableId::new("ODD").expect("id");
    assert!(
        !m1.tables[&odd].changed_tids.is_empty(),
        "the odd table was revised: {:?}",
        m1.tables[&odd]
    );
    // Cycle 2: QTR revised again and its first quarter pruned; ODD gains a
    // variable (schema drift: the whole set is swapped).
    h.revise_period("QTR", "2024K2");
    h.remove_period("QTR", "2023K1");
    h.set_updated("QTR", UPDATED[2]);
    h.add_variable("ODD", 1, crate::drift::alder());
    h.set_updated("ODD", UPDATED[2]);
    let m2 = cycle(2);
    assert!(
        m2.tables[&odd].schema_change.is_some(),
        "{:?}",
        m2.tables[&odd]
    );

    let data = dir;
    let state = SyncState::load(data).expect("state");
    assert!(state.iceberg, "--iceberg is remembered in state.json");
    for (table, updated) in [("QTR", &UPDATED[..]), ("ODD", &UPDATED[..])] {
        let meta = current_metadata(data, table);
        let snaps = meta["snapshots"].as_array().expect("snapshots");
        let stamps: Vec<i64> = snaps
            .iter()
            .map(|s| s["timestamp-ms"].as_i64().expect("ms"))
            .collect();
        let want: Vec<i64> = updated.iter().map(|u| ms(u)).collect();
        assert_eq!(stamps, want, "{table}: one snapshot per published updated");
        assert_eq!(meta["properties"]["gc.enabled"], "false");
        assert!(meta["properties"]["schema.name-mapping.default"]
            .as_str()
            .is_some_and(|m| m.contains("\"TID\"")));
        assert_eq!(
            meta["current-snapshot-id"],
            snaps.last().expect("one")["snapshot-id"]
        );
        // A week between cycles, a grace of a day: v1 was superseded by v2
        // a week before v3 was written, and is gone; v2 stays for readers
        // that opened it.
        let names: BTreeSet<String> = data
            .storage()
            .list_dir(&metadata_key(data, table))
            .expect("list")
            .files
            .into_iter()
            .map(|(n, _)| n)
            .filter(|n| n.ends_with(".metadata.json"))
            .collect();
        assert_eq!(
            names,
            BTreeSet::from([
                "v2.metadata.json".to_string(),
                "v3.metadata.json".to_string()
            ]),
            "{table}"
        );
    }
    let odd_meta = current_metadata(data, "ODD");
    assert_eq!(
        odd_meta["schemas"].as_array().map(Vec::len),
        Some(2),
        "the snapshots before the drift keep the old schema"
    );
    let store = PartitionStore::new(data);
    let rows: BTreeMap<String, u64> = store
        .list_tids(&odd)
        .expect("tids")
        .iter()
        .map(|t| (t.to_string(), store.footer(&odd, t).expect("footer").rows))
        .collect();
    assert!(
        rows.values().any(|n| *n == 0),
        "the odd table has a zero-row period: {rows:?}"
    );

    // A cycle that changes nothing writes nothing.
    let before = iceberg_objects(data);
    let m3 = cycle(3);
    assert!(m3.tables.values().all(|r| r.iceberg_version.is_none()));
    assert_eq!(
        iceberg_objects(data),
        before,
        "a no-change cycle leaves the metadata as it was"
    );
    // Regenerating from scratch gives the same snapshots (stable ids).
    let qtr_before = current_metadata(data, "QTR");
    let qtr = TableId::new("QTR").expect("id");
    assert!(store.remove_iceberg(&qtr).expect("rm") > 0);
    store
        .write_iceberg(&qtr, UPDATED[2], &partition_store::IcebergOptions::at(0))
        .expect("regenerate");
    assert_eq!(
        current_metadata(data, "QTR")["snapshots"],
        qtr_before["snapshots"],
        "snapshot ids and manifests are the same when regenerated"
    );

    check_with_readers(
        data,
        scratch,
        storage,
        &[("QTR", &UPDATED[..]), ("ODD", &UPDATED[..])],
    );

    // A table gone from the catalog and deleted loses its metadata.
    h.remove_table("ODD");
    let mut o = opts(data, 4);
    o.vanished_tables = bins::VanishedTables::Delete;
    let m = rt.block_on(run_sync_cycle(&client, &o)).expect("cycle");
    assert_eq!(m.status, RunStatus::Success);
    let left = iceberg_objects(data);
    assert!(
        left.keys().all(|k| !k.contains("/_iceberg/ODD/")),
        "{:?}",
        left.keys()
    );
    assert!(left.keys().any(|k| k.contains("/_iceberg/QTR/")));

    // --no-iceberg removes the metadata and stops writing it.
    let mut o = opts(data, 5);
    o.iceberg = IcebergMetadata::Stop;
    let m = rt.block_on(run_sync_cycle(&client, &o)).expect("cycle");
    assert_eq!(m.status, RunStatus::Success);
    assert!(iceberg_objects(data).is_empty());
    let state = SyncState::load(data).expect("state");
    assert!(!state.iceberg);
    assert!(state.tables.values().all(|t| t.iceberg_updated.is_none()));
}

/// Writes `statbank-inspect asof` for instants before, on, between and
/// after every `updated`, and has `tests/iceberg/check.py` compare them
/// with what pyiceberg and DuckDB read. The Python environment is
/// `STATBANK_ICEBERG_PYTHON` (set up by `.ci/run`); without it the check
/// is skipped, except under `CI`, where it fails.
fn check_with_readers(
    dir: &DataDir,
    scratch: &Path,
    storage: Option<serde_json::Value>,
    tables: &[(&str, &[&str])],
) {
    let Some(python) = std::env::var_os("STATBANK_ICEBERG_PYTHON") else {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must set STATBANK_ICEBERG_PYTHON (a venv with tests/iceberg/requirements.txt)"
        );
        eprintln!("iceberg readers check skipped: STATBANK_ICEBERG_PYTHON is not set");
        return;
    };
    let out = scratch.join("asof");
    std::fs::create_dir_all(&out).expect("mkdir");
    let mut cases = Vec::new();
    let mut folders = serde_json::Map::new();
    for (table, updated) in tables {
        let id = TableId::new(table).expect("id");
        folders.insert(
            (*table).to_string(),
            dir.storage().display_key(&metadata_key(dir, table)).into(),
        );
        let mut instants: Vec<i64> = vec![ms(updated[0]) - 3_600_000];
        for u in *updated {
            instants.extend([ms(u), ms(u) + 1, ms(u) + 86_400_000]);
        }
        instants.push(ms("2027-01-01T00:00:00"));
        for (i, at_ms) in instants.into_iter().enumerate() {
            let at = chrono::DateTime::from_timestamp_millis(at_ms)
                .expect("instant")
                .to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
            let file: PathBuf = out.join(format!("{table}-{i}.parquet"));
            bins::inspect::asof(dir, &id, &at, None, &file).expect("asof");
            cases.push(serde_json::json!({
                "table": table, "at_ms": at_ms, "at": at, "expected": file,
            }));
        }
    }
    let spec = scratch.join("cases.json");
    let body = serde_json::json!({"tables": folders, "cases": cases, "storage": storage});
    std::fs::write(&spec, serde_json::to_vec(&body).expect("json")).expect("write");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("iceberg/check.py");
    let run = std::process::Command::new(python)
        .arg(script)
        .arg(&spec)
        .output()
        .expect("run check.py");
    let says = format!(
        "{}{}",
        String::from_utf8_lossy(&run.stdout),
        String::from_utf8_lossy(&run.stderr)
    );
    eprintln!("{says}");
    assert!(
        run.status.success(),
        "the Iceberg readers disagree with asof:\n{says}"
    );
}
