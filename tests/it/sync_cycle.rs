//! End-to-end sync cycles against the emulator:
//! bootstrap, the weekly gate, no-change cycles, exact `changed_tids`,
//! per-table failures, truncated bodies, interleaved periods and odd period
//! codes.

use arrow_array::{Array, StringArray};
use bins::run_sync_cycle;
use partition_store::PartitionStore;
use statbank_client::emulator::{EmuTable, Emulator, Endpoint, Fault, FaultKind, World};
use sync_state::DataDirLock;
use sync_state::{DataDir, RunManifest, RunStatus, SyncState, TableId, TableStatus, Tid};
use tests::sync::{at_hours, fast_client, options, snapshot, t0, temp_files};

const YEARS: [&str; 6] = ["2019", "2020", "2021", "2022", "2023", "2024"];

fn world() -> World {
    let mut w = World::new();
    w.insert(EmuTable::synthetic(
        "ANNUAL",
        &YEARS,
        &[("OMRÅDE", 5), ("KØN", 3)],
    ));
    w.insert(EmuTable::synthetic(
        "QUART",
        &["2023K1", "2023K2", "2023K3", "2023K4", "2024K1"],
        &[("ALDER", 4)],
    ));
    w
}

fn id(s: &str) -> TableId {
    TableId::new(s).expect("table id")
}

fn tids(codes: &[&str]) -> Vec<Tid> {
    codes.iter().map(|c| Tid::new(*c).expect("tid")).collect()
}

fn state(dir: &std::path::Path) -> SyncState {
    SyncState::load(&DataDir::local(dir)).expect("state.json parses")
}

fn reread(dir: &std::path::Path, m: &RunManifest) -> RunManifest {
    RunManifest::load(&DataDir::local(dir), &m.run_id).expect("manifest parses")
}

#[tokio::test(flavor = "multi_thread")]
async fn bootstrap_writes_every_period_then_the_weekly_gate_skips() {
    let emu = Emulator::start(world()).await.expect("emulator");
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path();
    let client = fast_client(&emu.base_url(), 0);

    let m = run_sync_cycle(&client, &options(dir, t0(), false))
        .await
        .expect("cycle");
    assert_eq!(m.status, RunStatus::Success, "{m:?}");
    assert!(m.catalog.polled);
    let annual = &m.tables[&id("ANNUAL")];
    assert_eq!(annual.status, TableStatus::Synced);
    assert_eq!(annual.bootstrap, Some(true));
    assert_eq!(annual.changed_tids, tids(&YEARS));
    assert_eq!(annual.rows_written, Some(6 * 5 * 3));

    // Every period is a partition, with exactly its rows and the header's
    // column names in order.
    let store = PartitionStore::new(&sync_state::DataDir::local(dir));
    let local: Vec<Tid> = store
        .list_tids(&id("ANNUAL"))
        .expect("list")
        .into_iter()
        .collect();
    assert_eq!(local, tids(&YEARS));
    let reader = store
        .read_partition(&id("ANNUAL"), &Tid::new("2021").expect("tid"))
        .expect("read");
    let names: Vec<String> = reader
        .schema()
        .fields()
        .iter()
        .map(|f| f.name().clone())
        .collect();
    assert_eq!(names, ["OMRÅDE", "KØN", "TID", "INDHOLD"]);
    assert_eq!(reader.num_rows(), 15);
    for batch in reader {
        let batch = batch.expect("batch");
        let tid = batch
            .column(2)
            .as_any()
            .downcast_ref::<StringArray>()
            .expect("TID is a string column");
        assert!((0..tid.len()).all(|i| tid.value(i) == "2021"));
    }
    assert_eq!(
        store.list_tids(&id("QUART")).expect("list").len(),
        5,
        "every quarter written"
    );

    // The metadata cache and the state.
    assert!(dir
        .join("metadata/tables_info_raw_da/ANNUAL.json")
        .is_file());
    let st = state(dir);
    let e = &st.tables[&id("ANNUAL")];
    assert!(e.bootstrap_complete);
    assert_eq!(
        e.last_seen_updated.as_deref(),
        annual.catalog_updated.as_deref()
    );
    assert!(
        e.pending_changed_tids.is_empty(),
        "journal cleared after the manifest"
    );
    assert_eq!(st.last_catalog_poll_at.map(|t| t.get()), Some(t0()));
    assert_eq!(
        reread(dir, &m),
        m,
        "manifest on disk equals the returned one"
    );

    // An hour later the weekly gate is closed: no request at all.
    emu.handle().clear_requests();
    let m2 = run_sync_cycle(&client, &options(dir, at_hours(1), false))
        .await
        .expect("cycle 2");
    assert_eq!(m2.status, RunStatus::Skipped);
    assert_eq!(m2.catalog.reason.as_deref(), Some("weekly_gate"));
    assert_ne!(m2.run_id, m.run_id);
    assert!(emu.handle().requests().is_empty());
    // Eight days later it opens again.
    let m3 = run_sync_cycle(&client, &options(dir, at_hours(24 * 8), false))
        .await
        .expect("cycle 3");
    assert!(m3.catalog.polled);
    assert_eq!(m3.status, RunStatus::Success);
}

#[tokio::test(flavor = "multi_thread")]
async fn forced_cycle_without_changes_fetches_only_the_catalog() {
    let emu = Emulator::start(world()).await.expect("emulator");
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path();
    let client = fast_client(&emu.base_url(), 0);
    run_sync_cycle(&client, &options(dir, t0(), true))
        .await
        .expect("bootstrap");
    let before = snapshot(dir);
    emu.handle().clear_requests();

    let m = run_sync_cycle(&client, &options(dir, at_hours(1), true))
        .await
        .expect("cycle");
    assert_eq!(m.status, RunStatus::Success);
    let reqs = emu.handle().requests();
    assert_eq!(reqs.len(), 1, "{reqs:?}");
    assert_eq!(reqs[0].endpoint, Some(Endpoint::Tables));
    assert!(m
        .tables
        .values()
        .all(|r| r.status == TableStatus::Skipped && r.changed_tids.is_empty()));
    assert_eq!(m.summary.tables_skipped, 2);
    assert_eq!(snapshot(dir), before, "nothing rewritten");
}

#[tokio::test(flavor = "multi_thread")]
async fn added_and_revised_periods_are_exactly_the_changed_tids() {
    let emu = Emulator::start(world()).await.expect("emulator");
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path();
    let client = fast_client(&emu.base_url(), 0);
    run_sync_cycle(&client, &options(dir, t0(), true))
        .await
        .expect("bootstrap");
    let before = snapshot(dir);

    let h = emu.handle();
    h.add_period("ANNUAL", "2025");
    h.revise_period("ANNUAL", "2023");
    h.set_updated("ANNUAL", "2026-01-10T08:00:00");
    h.clear_requests();

    // The original's window-only selection (rolling verification off): the
    // exact requests below are the refresh window and the new period.
    let mut o = options(dir, at_hours(24), true);
    o.verify.cycles = 0;
    let m = run_sync_cycle(&client, &o).await.expect("cycle");
    assert_eq!(m.status, RunStatus::Success);
    let r = &m.tables[&id("ANNUAL")];
    assert_eq!(r.status, TableStatus::Synced);
    assert_eq!(r.bootstrap, Some(false));
    assert_eq!(r.changed_tids, tids(&["2023", "2025"]));
    assert_eq!(r.new_periods.as_deref(), Some(&tids(&["2025"])[..]));
    // The yearly refresh window is the trailing 4 remote periods; unchanged
    // ones are compared by content digest and not rewritten.
    assert_eq!(
        r.refresh_periods.as_deref(),
        Some(&tids(&["2022", "2023", "2024", "2025"])[..])
    );
    assert_eq!(
        r.unchanged_refreshed.as_deref(),
        Some(&tids(&["2022", "2024"])[..])
    );
    assert_eq!(m.tables[&id("QUART")].status, TableStatus::Skipped);
    // Only ANNUAL was fetched: catalog, tableinfo, and data.
    let reqs = h.requests();
    assert!(reqs
        .iter()
        .all(|q| q.table.is_none() || q.table.as_deref() == Some("ANNUAL")));
    let data: Vec<_> = reqs
        .iter()
        .filter(|q| q.endpoint == Some(Endpoint::Data))
        .collect();
    let mut requested: Vec<String> = data.iter().flat_map(|q| q.tids.clone()).collect();
    requested.sort();
    assert_eq!(requested, ["2022", "2023", "2024", "2025"]);

    let after = snapshot(dir);
    for (name, bytes) in &before {
        let changed = name == "ANNUAL/2023.parquet";
        assert_eq!(after[name] != *bytes, changed, "{name}");
    }
    assert!(after.contains_key("ANNUAL/2025.parquet"));
    assert_eq!(
        state(dir).tables[&id("ANNUAL")]
            .last_seen_updated
            .as_deref(),
        Some("2026-01-10T08:00:00")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failed_table_keeps_its_state_and_is_retried_next_cycle() {
    let emu = Emulator::start(world()).await.expect("emulator");
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path();
    let client = fast_client(&emu.base_url(), 1);
    run_sync_cycle(&client, &options(dir, t0(), true))
        .await
        .expect("bootstrap");
    let old_updated = state(dir).tables[&id("QUART")].last_seen_updated.clone();

    let h = emu.handle();
    h.add_period("QUART", "2024K2");
    h.set_updated("QUART", "2026-01-10T08:00:00");
    h.add_period("ANNUAL", "2025");
    h.set_updated("ANNUAL", "2026-01-10T08:00:00");
    h.add_fault(Fault::always(Endpoint::TableInfo, FaultKind::Status500).for_table("QUART"));

    let m = run_sync_cycle(&client, &options(dir, at_hours(24), true))
        .await
        .expect("cycle");
    assert_eq!(m.status, RunStatus::PartialFailure);
    let q = &m.tables[&id("QUART")];
    assert_eq!(q.status, TableStatus::Failed);
    let err = q.error.as_deref().unwrap_or("");
    assert!(err.contains("500") && err.contains("QUART"), "{err}");
    assert_eq!(m.tables[&id("ANNUAL")].changed_tids, tids(&["2025"]));
    let st = state(dir);
    assert_eq!(st.tables[&id("QUART")].last_seen_updated, old_updated);
    assert_eq!(
        st.tables[&id("QUART")].last_status.as_deref(),
        Some("failed")
    );
    assert_eq!(m.summary.tables_failed, 1);

    h.clear_faults();
    // Window-only (rolling verification off): ANNUAL, synced in the first
    // cycle, is then unchanged.
    let mut o = options(dir, at_hours(25), true);
    o.verify.cycles = 0;
    let m2 = run_sync_cycle(&client, &o).await.expect("cycle 2");
    assert_eq!(m2.status, RunStatus::Success);
    assert_eq!(m2.tables[&id("QUART")].changed_tids, tids(&["2024K2"]));
    assert_eq!(m2.tables[&id("ANNUAL")].status, TableStatus::Skipped);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_truncated_body_publishes_nothing() {
    let emu = Emulator::start(world()).await.expect("emulator");
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path();
    let client = fast_client(&emu.base_url(), 2);

    // Bootstrap of ANNUAL is cut off: not one partition of it appears.
    emu.handle().add_fault(
        Fault::always(Endpoint::Data, FaultKind::Truncate { after_bytes: 300 }).for_table("ANNUAL"),
    );
    let m = run_sync_cycle(&client, &options(dir, t0(), true))
        .await
        .expect("cycle");
    assert_eq!(m.status, RunStatus::PartialFailure);
    assert_eq!(m.tables[&id("ANNUAL")].status, TableStatus::Failed);
    assert!(snapshot(dir).keys().all(|k| !k.starts_with("ANNUAL/")));
    assert!(temp_files(dir).is_empty(), "{:?}", temp_files(dir));
    emu.handle().clear_faults();
    run_sync_cycle(&client, &options(dir, at_hours(1), true))
        .await
        .expect("recovers");
    let before = snapshot(dir);

    // An incremental download is cut off: the old partitions stay as they were.
    let h = emu.handle();
    h.revise_period("ANNUAL", "2024");
    h.revise_period("ANNUAL", "2023");
    h.set_updated("ANNUAL", "2026-01-10T08:00:00");
    h.add_fault(
        Fault::always(Endpoint::Data, FaultKind::Truncate { after_bytes: 400 }).for_table("ANNUAL"),
    );
    let m = run_sync_cycle(&client, &options(dir, at_hours(24), true))
        .await
        .expect("cycle");
    assert_eq!(m.tables[&id("ANNUAL")].status, TableStatus::Failed);
    assert_eq!(
        snapshot(dir),
        before,
        "no partition replaced by a partial one"
    );
    assert!(temp_files(dir).is_empty());
    assert_ne!(
        state(dir).tables[&id("ANNUAL")]
            .last_seen_updated
            .as_deref(),
        Some("2026-01-10T08:00:00")
    );

    h.clear_faults();
    let m = run_sync_cycle(&client, &options(dir, at_hours(25), true))
        .await
        .expect("cycle");
    assert_eq!(
        m.tables[&id("ANNUAL")].changed_tids,
        tids(&["2023", "2024"])
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn interleaved_and_bom_bodies_give_the_same_partitions() {
    let emu = Emulator::start(world()).await.expect("emulator");
    let client = fast_client(&emu.base_url(), 0);
    let plain = tempfile::tempdir().expect("tmp");
    run_sync_cycle(&client, &options(plain.path(), t0(), true))
        .await
        .expect("plain");
    let expected = snapshot(plain.path());
    assert_eq!(expected.len(), 11);

    for kind in [FaultKind::Interleave, FaultKind::Bom] {
        let h = emu.handle();
        h.clear_faults();
        h.add_fault(Fault::always(Endpoint::Data, kind.clone()));
        let other = tempfile::tempdir().expect("tmp");
        let m = run_sync_cycle(&client, &options(other.path(), t0(), true))
            .await
            .expect("cycle");
        assert_eq!(m.status, RunStatus::Success, "{kind:?}");
        assert!(
            h.requests().iter().any(|r| r.fault.is_some()),
            "the fault was applied"
        );
        assert_eq!(
            snapshot(other.path()),
            expected,
            "{kind:?}: byte-identical partitions"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn period_codes_with_slash_colon_and_spaces_round_trip() {
    let emu = Emulator::start(World::demo()).await.expect("emulator");
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path();
    let client = fast_client(&emu.base_url(), 0);
    let wanted = ["HISB7", "SCENE01A", "BARLOV1"];
    let mut o = options(dir, t0(), true);
    o.tables = Some(wanted.iter().map(|t| id(t)).collect());
    let m = run_sync_cycle(&client, &o).await.expect("cycle");
    assert_eq!(m.status, RunStatus::Success, "{:?}", m.error);
    assert_eq!(m.tables.len(), 3);

    let files = snapshot(dir);
    assert!(
        files.contains_key("HISB7/1840%3A1849.parquet"),
        "{:?}",
        files.keys()
    );
    assert!(files.contains_key("SCENE01A/2020%2F2021.parquet"));
    assert!(files.contains_key("BARLOV1/AUG%20-%20DEC%202019.parquet"));

    // The reverse mapping gives back exactly the remote codes, so the next
    // cycle finds nothing new and rewrites nothing.
    let store = PartitionStore::new(&sync_state::DataDir::local(dir));
    for t in wanted {
        let world = emu.handle().world();
        let remote: std::collections::BTreeSet<Tid> = world
            .table(t)
            .expect("table")
            .time_values
            .iter()
            .map(|v| Tid::new(v.id.clone()).expect("tid"))
            .collect();
        assert_eq!(store.list_tids(&id(t)).expect("list"), remote, "{t}");
        emu.handle().set_updated(t, "2026-02-01T08:00:00");
    }
    let mut o = options(dir, at_hours(24), true);
    o.tables = Some(wanted.iter().map(|t| id(t)).collect());
    let m = run_sync_cycle(&client, &o).await.expect("cycle 2");
    for t in wanted {
        let r = &m.tables[&id(t)];
        assert_eq!(r.status, TableStatus::Synced, "{t}");
        assert!(r.changed_tids.is_empty(), "{t}: {:?}", r.changed_tids);
        assert_eq!(r.new_periods.as_deref().map(<[Tid]>::len), Some(0), "{t}");
    }
    assert_eq!(snapshot(dir), files);
}

#[tokio::test(flavor = "multi_thread")]
async fn deleted_periods_are_kept_unless_pruning_is_asked_for() {
    let emu = Emulator::start(world()).await.expect("emulator");
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path();
    let client = fast_client(&emu.base_url(), 0);
    run_sync_cycle(&client, &options(dir, t0(), true))
        .await
        .expect("bootstrap");
    let h = emu.handle();
    h.remove_period("ANNUAL", "2019");
    h.set_updated("ANNUAL", "2026-01-10T08:00:00");
    let m = run_sync_cycle(&client, &options(dir, at_hours(1), true))
        .await
        .expect("cycle");
    let r = &m.tables[&id("ANNUAL")];
    assert_eq!(r.deleted_tids, None, "the original never deletes");
    assert!(dir.join("statbank_tables/ANNUAL/2019.parquet").exists());

    h.set_updated("ANNUAL", "2026-01-11T08:00:00");
    let mut o = options(dir, at_hours(2), true);
    o.prune_deleted_periods = true;
    let m = run_sync_cycle(&client, &o).await.expect("cycle");
    let r = &m.tables[&id("ANNUAL")];
    assert_eq!(r.deleted_tids.as_deref(), Some(&tids(&["2019"])[..]));
    assert!(!dir.join("statbank_tables/ANNUAL/2019.parquet").exists());
    assert_eq!(m.summary.tables_with_deleted_tids, 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn selection_unknown_tables_and_the_lock() {
    let emu = Emulator::start(world()).await.expect("emulator");
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path();
    let client = fast_client(&emu.base_url(), 0);

    let mut o = options(dir, t0(), true);
    o.tables = Some(vec![id("QUART"), id("NOSUCH")]);
    let m = run_sync_cycle(&client, &o).await.expect("cycle");
    assert_eq!(m.tables.len(), 2);
    assert_eq!(m.tables[&id("QUART")].status, TableStatus::Synced);
    let nosuch = &m.tables[&id("NOSUCH")];
    assert_eq!(nosuch.status, TableStatus::Failed);
    assert!(nosuch.error.as_deref().unwrap_or("").contains("NOSUCH"));
    assert_eq!(m.status, RunStatus::PartialFailure);

    let mut o = options(dir, at_hours(1), true);
    o.max_tables = Some(1);
    let m = run_sync_cycle(&client, &o).await.expect("cycle");
    assert_eq!(m.tables.keys().collect::<Vec<_>>(), [&id("ANNUAL")]);

    // A second cycle on the same data folder is refused while one runs.
    let data = DataDir::local(dir);
    let lock = DataDirLock::acquire(data.storage(), &data.lock_key(), "test").expect("lock");
    let err = run_sync_cycle(&client, &options(dir, at_hours(2), true))
        .await
        .expect_err("locked");
    assert!(err.is_locked(), "{err:?}");
    drop(lock);
    run_sync_cycle(&client, &options(dir, at_hours(3), true))
        .await
        .expect("lock released");
}

#[tokio::test(flavor = "multi_thread")]
async fn catalog_failure_still_writes_a_failed_manifest() {
    let emu = Emulator::start(world()).await.expect("emulator");
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path();
    let client = fast_client(&emu.base_url(), 0);
    emu.handle()
        .add_fault(Fault::always(Endpoint::Tables, FaultKind::Status500));
    let m = run_sync_cycle(&client, &options(dir, t0(), true))
        .await
        .expect("manifest written");
    assert_eq!(m.status, RunStatus::Failed);
    assert!(!m.catalog.polled);
    assert!(m.catalog.error.as_deref().unwrap_or("").contains("500"));
    assert_eq!(reread(dir, &m).status, RunStatus::Failed);
    assert!(
        state(dir).last_catalog_poll_at.is_none(),
        "a failed poll does not close the gate"
    );
}
