//! Upstream changes shape: schema drift and table lifecycle, end to end
//! against the emulator and a real Postgres. A table folder never holds
//! partitions of two schemas; the apply fails a changed table untouched by
//! default, rebuilds it on request (a concurrent reader sees the old or the
//! new table, never an empty or partial one), widens too-narrow types;
//! value-list changes are not schema changes; tables that leave the catalog
//! keep their mirror.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use bins::VanishedTables;
use fact_apply::{ApplyOptions, OnSchemaChange};
use partition_store::{PartitionMeta, PartitionStore};
use statbank_client::emulator::{EmuTable, EmuValue, EmuVariable, World};
use sync_state::{ApplyStatus, DataDir, RunManifest, RunStatus, SyncState, TableId, Tid};
use tests::e2e::{create, Setup};

fn quarters(n: usize) -> Vec<String> {
    (0..n)
        .map(|i| format!("{}K{}", 2020 + i / 4, i % 4 + 1))
        .collect()
}

fn world() -> World {
    let q = quarters(20);
    let q: Vec<&str> = q.iter().map(String::as_str).collect();
    let mut w = World::new();
    w.insert(EmuTable::synthetic(
        "DRIFT1",
        &q,
        &[("OMRÅDE", 30), ("KØN", 3)],
    ));
    w.insert(EmuTable::synthetic(
        "STEADY",
        &["2022", "2023", "2024"],
        &[("X", 4)],
    ));
    w
}

fn id(s: &str) -> TableId {
    TableId::new(s).expect("id")
}

pub(crate) fn alder() -> EmuVariable {
    EmuVariable {
        id: "ALDER".into(),
        text: "alder".into(),
        elimination: true,
        map: None,
        values: vec![EmuValue::code("0"), EmuValue::code("1")],
    }
}

/// The columns of `fact.<table>`, in order.
fn columns(s: &mut Setup, table: &str) -> Vec<String> {
    s.pg.query(
        "SELECT attname::text FROM pg_attribute WHERE attrelid = $1::text::regclass \
         AND attnum > 0 AND NOT attisdropped ORDER BY attnum",
        &[&format!("fact.{table}")],
    )
    .expect("columns")
    .iter()
    .map(|r| r.get(0))
    .collect()
}

/// Every partition of `table` has exactly `columns`.
fn one_schema(data: &DataDir, table: &str, columns: &[&str]) {
    let store = PartitionStore::new(data);
    let tids = store.list_tids(&id(table)).expect("list");
    assert!(!tids.is_empty());
    for t in &tids {
        let f = store.footer(&id(table), t).expect("footer");
        assert_eq!(f.columns, columns, "{table}/{t}: two schemas in one folder");
    }
}

#[test]
fn a_new_variable_rebuilds_the_table_whole_and_the_apply_follows() {
    let mut s = Setup::new(world());
    let m0 = s.sync(0);
    let r = s.apply(&m0.run_id, &create());
    assert_eq!(r.status, RunStatus::Success);
    let rows_before = s.count("SELECT count(*) FROM fact.drift1");
    assert_eq!(rows_before, 20 * 30 * 3);

    let h = s.emu.handle();
    h.add_variable("DRIFT1", 2, alder());
    h.set_updated("DRIFT1", "2026-02-01T08:00:00");
    let m1 = s.sync(24);
    let t = &m1.tables[&id("DRIFT1")];
    let change = t.schema_change.as_ref().expect("schema_change reported");
    assert_eq!(change.before, vec!["OMRÅDE", "KØN", "Tid"]);
    assert_eq!(change.after, vec!["OMRÅDE", "KØN", "ALDER", "Tid"]);
    assert_eq!(t.changed_tids.len(), 20, "every period of the new set");
    assert_eq!(t.deleted_tids.as_deref(), Some(&[][..]));
    assert_eq!(m1.summary.tables_schema_changed, 1);
    one_schema(
        &s.data(),
        "DRIFT1",
        &["OMRÅDE", "KØN", "ALDER", "TID", "INDHOLD"],
    );
    let state = SyncState::load(&s.data()).expect("state");
    assert_eq!(
        state.tables[&id("DRIFT1")].variables.as_deref(),
        Some(
            &[
                "OMRÅDE".to_string(),
                "KØN".into(),
                "ALDER".into(),
                "Tid".into()
            ][..]
        )
    );

    // Strict (default): failed untouched, the run stays pending.
    let r = s.apply(&m1.run_id, &ApplyOptions::default());
    let t = tests::apply_fx::result(&r, "DRIFT1");
    assert_eq!(t.status, ApplyStatus::Failed);
    assert_eq!(t.reason.as_deref(), Some("schema_changed"));
    assert_eq!(t.added_columns.as_deref(), Some(&["alder".to_string()][..]));
    assert_eq!(t.removed_columns.as_deref(), Some(&[][..]));
    assert_eq!(s.count("SELECT count(*) FROM fact.drift1"), rows_before);
    assert_eq!(
        columns(&mut s, "drift1"),
        ["omrade", "kon", "tid", "indhold"]
    );
    assert!(RunManifest::load(&s.data(), &m1.run_id)
        .expect("m")
        .needs_apply());

    // Rebuild, with a reader running through it.
    let stop = Arc::new(AtomicBool::new(false));
    let reader = {
        let (url, stop) = (s.db.url().to_string(), stop.clone());
        std::thread::spawn(move || {
            let mut c = postgres::Client::connect(&url, postgres::NoTls).expect("reader");
            let mut seen = BTreeSet::new();
            let mut errors = Vec::new();
            while !stop.load(Ordering::SeqCst) {
                match c.query_one("SELECT count(*)::bigint FROM fact.drift1", &[]) {
                    Ok(r) => {
                        seen.insert(r.get::<_, i64>(0));
                    }
                    Err(e) => errors.push(e.to_string()),
                }
            }
            (seen, errors)
        })
    };
    std::thread::sleep(std::time::Duration::from_millis(50));
    let r = s.apply(
        &m1.run_id,
        &ApplyOptions {
            on_schema_change: OnSchemaChange::Rebuild,
            ..ApplyOptions::default()
        },
    );
    std::thread::sleep(std::time::Duration::from_millis(50));
    stop.store(true, Ordering::SeqCst);
    let (seen, errors) = reader.join().expect("reader");
    let t = tests::apply_fx::result(&r, "DRIFT1");
    assert_eq!(t.status, ApplyStatus::Applied, "{:?}", t.error);
    assert_eq!(t.rebuilt, Some(true));
    assert_eq!(
        columns(&mut s, "drift1"),
        ["omrade", "kon", "alder", "tid", "indhold"]
    );
    let rows_after = s.count("SELECT count(*) FROM fact.drift1");
    assert_eq!(rows_after, 20 * 30 * 3 * 2);
    assert!(errors.is_empty(), "the reader never fails: {errors:?}");
    assert!(
        seen.iter().all(|n| *n == rows_before || *n == rows_after),
        "the reader saw only the old or the new table: {seen:?}"
    );
    assert!(seen.contains(&rows_after));
    // Indexes: the old ones by column name, and one on the new column.
    let idx = s.count(
        "SELECT count(*) FROM pg_indexes WHERE schemaname = 'fact' AND tablename = 'drift1'",
    );
    assert_eq!(idx, 4, "omrade, kon, tid kept; alder added");
    assert!(!RunManifest::load(&s.data(), &m1.run_id)
        .expect("m")
        .needs_apply());

    // Upstream removes the variable again: swapped back whole.
    let h = s.emu.handle();
    h.remove_variable("DRIFT1", "ALDER");
    h.set_updated("DRIFT1", "2026-03-01T08:00:00");
    let m2 = s.sync(48);
    assert!(m2.tables[&id("DRIFT1")].schema_change.is_some());
    one_schema(&s.data(), "DRIFT1", &["OMRÅDE", "KØN", "TID", "INDHOLD"]);
    let r = s.apply(
        &m2.run_id,
        &ApplyOptions {
            on_schema_change: OnSchemaChange::Rebuild,
            ..ApplyOptions::default()
        },
    );
    assert_eq!(tests::apply_fx::result(&r, "DRIFT1").rebuilt, Some(true));
    assert_eq!(
        columns(&mut s, "drift1"),
        ["omrade", "kon", "tid", "indhold"]
    );
    assert_eq!(s.count("SELECT count(*) FROM fact.drift1"), rows_before);
}

#[test]
fn a_table_migrated_by_hand_takes_the_ordinary_apply() {
    let mut s = Setup::new(world());
    let m0 = s.sync(0);
    s.apply(&m0.run_id, &create());
    let h = s.emu.handle();
    h.add_variable("DRIFT1", 2, alder());
    h.remove_period("DRIFT1", "2020K1");
    h.set_updated("DRIFT1", "2026-02-01T08:00:00");
    let m1 = s.sync(24);
    let t = &m1.tables[&id("DRIFT1")];
    assert_eq!(
        t.deleted_tids.as_deref(),
        Some(&[Tid::new("2020K1").expect("tid")][..])
    );
    s.pg.batch_execute("ALTER TABLE fact.drift1 ADD COLUMN alder smallint")
        .expect("migrate");
    let r = s.apply(&m1.run_id, &ApplyOptions::default());
    let t = tests::apply_fx::result(&r, "DRIFT1");
    assert_eq!(t.status, ApplyStatus::Applied, "{:?}", t.error);
    assert_eq!(t.rebuilt, None);
    assert_eq!(s.count("SELECT count(*) FROM fact.drift1"), 19 * 30 * 3 * 2);
    assert_eq!(
        s.count("SELECT count(*) FROM fact.drift1 WHERE alder IS NULL"),
        0,
        "no row of the old grain is left"
    );
}

#[test]
fn value_lists_are_not_schemas() {
    let s = Setup::new(world());
    s.sync(0);
    let h = s.emu.handle();
    h.add_value("DRIFT1", "OMRÅDE", "999");
    h.remove_value("DRIFT1", "KØN", "2");
    h.rename_value_text("DRIFT1", "OMRÅDE", "1", "Hovedstaden (ny)");
    h.set_updated("DRIFT1", "2026-02-01T08:00:00");
    let mut o = s.opts(24);
    o.verify.cycles = 0;
    let m = s.sync_with(&o);
    let t = &m.tables[&id("DRIFT1")];
    assert!(t.schema_change.is_none());
    assert_eq!(m.summary.tables_schema_changed, 0);
    assert_eq!(t.bootstrap, Some(false));
    assert_eq!(t.changed_tids.len(), 8, "the quarterly refresh window");
    one_schema(&s.data(), "DRIFT1", &["OMRÅDE", "KØN", "TID", "INDHOLD"]);
}

#[test]
fn a_longer_code_or_a_first_non_numeric_code_is_a_type_change() {
    let mut s = Setup::new(world());
    let m0 = s.sync(0);
    s.apply(&m0.run_id, &create());
    assert_eq!(
        s.count("SELECT count(*) FROM information_schema.columns WHERE table_schema = 'fact' \
                 AND table_name = 'steady' AND column_name = 'x' AND data_type = 'character varying'"),
        1,
        "X codes (TOT, 1, 2, 3) are varchar(3)"
    );
    let h = s.emu.handle();
    h.add_value("STEADY", "X", "LONGCODE");
    h.set_updated("STEADY", "2026-02-01T08:00:00");
    let m1 = s.sync(24);
    let before = s.count("SELECT count(*) FROM fact.steady");
    let r = s.apply(&m1.run_id, &ApplyOptions::default());
    let t = tests::apply_fx::result(&r, "STEADY");
    assert_eq!(t.status, ApplyStatus::Failed);
    assert_eq!(t.reason.as_deref(), Some("type_changed"));
    let c = &t.type_changes.as_ref().expect("type_changes")[0];
    assert_eq!(c.column, "x");
    assert_eq!(c.old_type, "character varying(3)");
    assert_eq!(c.new_type, "varchar(8)");
    assert_eq!(c.value.as_deref(), Some("LONGCODE"));
    assert_eq!(
        s.count("SELECT count(*) FROM fact.steady"),
        before,
        "nothing written"
    );
    let r = s.apply(
        &m1.run_id,
        &ApplyOptions {
            on_schema_change: OnSchemaChange::Rebuild,
            ..ApplyOptions::default()
        },
    );
    let t = tests::apply_fx::result(&r, "STEADY");
    assert_eq!(t.status, ApplyStatus::Applied, "{:?}", t.error);
    assert_eq!(t.type_changes.as_ref().map(Vec::len), Some(1));
    assert_eq!(
        s.count("SELECT count(*) FROM fact.steady WHERE x = 'LONGCODE'"),
        3,
        "the new code's rows of the refreshed periods"
    );
}

#[test]
fn tables_that_leave_the_catalog_keep_their_mirror_until_asked() {
    let s = Setup::new(world());
    s.sync(0);
    let h = s.emu.handle();
    let steady = h.table("STEADY").expect("table");
    h.remove_table("STEADY");
    let m = s.sync(200);
    assert_eq!(
        m.catalog.removed_tables.as_deref(),
        Some(&[id("STEADY")][..])
    );
    let state = SyncState::load(&s.data()).expect("state");
    assert!(state.tables[&id("STEADY")]
        .removed_from_catalog_at
        .is_some());
    let store = PartitionStore::new(&s.data());
    assert_eq!(
        store.list_tids(&id("STEADY")).expect("list").len(),
        3,
        "kept"
    );
    // Back, unchanged: resumes as it was.
    h.add_table(steady.clone());
    let m = s.sync(400);
    assert!(m.catalog.removed_tables.is_none());
    assert!(
        SyncState::load(&s.data()).expect("state").tables[&id("STEADY")]
            .removed_from_catalog_at
            .is_none()
    );
    // Gone again, and the user asks to archive it.
    h.remove_table("STEADY");
    let mut o = s.opts(600);
    o.vanished_tables = VanishedTables::Archive;
    let m = s.sync_with(&o);
    let v = m.catalog.vanished.as_ref().expect("reported");
    assert_eq!(v.action, "archive");
    assert_eq!(v.tables, vec![id("STEADY")]);
    assert!(store.list_tids(&id("STEADY")).expect("list").is_empty());
    let archived = s
        .data()
        .storage()
        .list_recursive("statbank_tables/_archive/STEADY")
        .expect("list");
    assert_eq!(archived.len(), 3);
    assert!(!SyncState::load(&s.data())
        .expect("state")
        .tables
        .contains_key(&id("STEADY")));
}

/// A mirror written before signatures were kept: no `variables` in the
/// state or the footers. The next cycle derives them and does not
/// re-fetch the table whole.
#[test]
fn upgrading_derives_signatures_without_rebootstrapping() {
    let s = Setup::new(world());
    s.sync(0);
    let data = s.data();
    let store = PartitionStore::new(&data);
    let table = id("DRIFT1");
    for t in store.list_tids(&table).expect("list") {
        let batches: Vec<_> = store
            .read_partition(&table, &t)
            .expect("read")
            .collect::<Result<_, _>>()
            .expect("batches");
        store
            .write_partition(&table, &t, &batches, &PartitionMeta::default())
            .expect("rewrite without metadata");
    }
    let mut state = SyncState::load(&data).expect("state");
    for e in state.tables.values_mut() {
        e.variables = None;
    }
    state.save(&data).expect("save");
    s.emu.handle().set_updated("DRIFT1", "2026-02-01T08:00:00");
    let mut o = s.opts(24);
    o.verify.cycles = 0;
    let m = s.sync_with(&o);
    let t = &m.tables[&table];
    assert!(t.schema_change.is_none(), "{:?}", t.schema_change);
    assert_eq!(t.bootstrap, Some(false));
    assert!(
        t.changed_tids.len() <= 8,
        "no re-bootstrap: {:?}",
        t.changed_tids
    );
    let state = SyncState::load(&data).expect("state");
    assert_eq!(
        state.tables[&table].variables.as_deref(),
        Some(&["OMRÅDE".to_string(), "KØN".into(), "Tid".into()][..])
    );
}

/// A rebuild keeps `fact_history` true: the old versions close when the new
/// set starts, a period the new set lacks closes too, and the new rows are
/// the only open ones.
#[test]
fn a_rebuild_with_history_closes_the_old_versions_and_the_dropped_periods() {
    let mut s = Setup::new(world());
    let m0 = s.sync(0);
    let with_history = ApplyOptions {
        history: true,
        ..create()
    };
    let r = s.apply(&m0.run_id, &with_history);
    assert_eq!(r.status, RunStatus::Success);
    let old_rows = s.count("SELECT count(*) FROM fact.drift1");
    assert_eq!(
        s.count("SELECT count(*) FROM fact_history.drift1 WHERE valid_to IS NULL"),
        old_rows
    );

    let h = s.emu.handle();
    h.add_variable("DRIFT1", 2, alder());
    h.remove_period("DRIFT1", "2020K1");
    h.set_updated("DRIFT1", "2026-02-01T08:00:00");
    let m1 = s.sync(24);
    assert!(m1.tables[&id("DRIFT1")].schema_change.is_some());
    let r = s.apply(
        &m1.run_id,
        &ApplyOptions {
            history: true,
            on_schema_change: OnSchemaChange::Rebuild,
            ..ApplyOptions::default()
        },
    );
    let t = tests::apply_fx::result(&r, "DRIFT1");
    assert_eq!(t.status, ApplyStatus::Applied, "{:?}", t.error);
    let new_rows = s.count("SELECT count(*) FROM fact.drift1");
    assert_eq!(new_rows, 19 * 30 * 3 * 2);
    assert_eq!(
        s.count("SELECT count(*) FROM fact_history.drift1 WHERE valid_to IS NULL"),
        new_rows,
        "only the rebuilt rows are current"
    );
    assert_eq!(
        s.count(
            "SELECT count(*) FROM fact_history.drift1 WHERE tid = '2020-01-01' AND valid_to IS NULL"
        ),
        0,
        "the dropped period is closed"
    );
    assert_eq!(
        s.count("SELECT count(*) FROM fact_history.drift1"),
        old_rows + new_rows,
        "every old version kept once, every new one added once"
    );
    assert_eq!(
        s.count(
            "SELECT count(*) FROM fact_history.drift1 WHERE alder IS NOT NULL AND valid_to IS NULL"
        ),
        new_rows
    );
}
