//! Reconcile and repair, end to end against the emulator and a real
//! Postgres: every kind of damage a database can suffer behind the
//! apply's back (rows deleted, a value edited, a duplicate, an extra
//! period, a period emptied, a table restored from an older copy, a table
//! dropped), on a plain and on a partitioned fact table, with and without
//! history. The report lists exactly the damaged periods; the repair fixes
//! exactly those (every other period keeps its tuples); a second reconcile
//! finds nothing; the repaired table equals a fresh load of the mirror.

use std::collections::{BTreeMap, BTreeSet};

use fact_apply::{reconcile, ApplyOptions, ReconcileOptions};
use statbank_client::emulator::{EmuTable, World};
use sync_state::{ReconcileReport, ReconcileStatus, RunId, TableId};
use tests::e2e::Setup;

const PERIODS: [&str; 8] = [
    "2022K1", "2022K2", "2022K3", "2022K4", "2023K1", "2023K2", "2023K3", "2023K4",
];

fn world() -> World {
    let mut w = World::new();
    w.insert(EmuTable::synthetic(
        "DMG",
        &PERIODS,
        &[("OMRÅDE", 6), ("KØN", 3)],
    ));
    w.insert(EmuTable::synthetic("GONE", &["2022", "2023"], &[("X", 3)]));
    w
}

fn id(s: &str) -> TableId {
    TableId::new(s).expect("id")
}

fn apply_opts(partitioned: bool, history: bool) -> ApplyOptions {
    ApplyOptions {
        create_missing: true,
        partitioned,
        history,
        ..ApplyOptions::default()
    }
}

fn run(s: &mut Setup, n: &str, opts: &ApplyOptions, repair: bool) -> ReconcileReport {
    let data = s.data();
    let o = ReconcileOptions {
        apply: opts.clone(),
        tables: None,
        repair,
        read_connection: Some(s.db.url().parse().expect("config")),
    };
    reconcile(&mut s.pg, &data, &RunId::new(n).expect("id"), &o).expect("reconcile")
}

/// Every row's physical place per period: `tid` → (table, ctid) list.
fn tuple_ids(s: &mut Setup, t: &str) -> BTreeMap<String, BTreeSet<String>> {
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for r in
        s.pg.query(
            &format!("SELECT tid::text, tableoid::text || ctid::text FROM fact.{t}"),
            &[],
        )
        .expect("ctids")
    {
        out.entry(r.get(0)).or_default().insert(r.get(1));
    }
    out
}

/// The rows of `schema.t` as sorted text.
fn rows(s: &mut Setup, schema: &str, t: &str) -> Vec<String> {
    s.pg.query(
        &format!("SELECT x::text COLLATE \"C\" AS r FROM {schema}.{t} x ORDER BY r"),
        &[],
    )
    .expect("rows")
    .iter()
    .map(|r| r.get(0))
    .collect()
}

fn date(q: &str) -> String {
    fact_apply::tid_to_date(q).expect("quarter").to_string()
}

/// The damages, each to its own period: P1 rows deleted by hand, P2 one
/// value edited, P3 a row duplicated, P4 emptied, and an extra period.
fn damage(s: &mut Setup, partitioned: bool) {
    let (p1, p2, p3, p4) = (
        date(PERIODS[1]),
        date(PERIODS[2]),
        date(PERIODS[3]),
        date(PERIODS[4]),
    );
    s.pg.batch_execute(&format!(
        "DELETE FROM fact.dmg WHERE tid = '{p1}' AND omrade = '1';
         UPDATE fact.dmg SET indhold = indhold + 1
             WHERE tid = '{p2}' AND ctid = (SELECT min(ctid) FROM fact.dmg WHERE tid = '{p2}');
         INSERT INTO fact.dmg SELECT * FROM fact.dmg WHERE tid = '{p3}' LIMIT 1;
         DELETE FROM fact.dmg WHERE tid = '{p4}';"
    ))
    .expect("damage");
    if partitioned {
        s.pg.batch_execute(
            "CREATE TABLE fact.dmg_by_hand PARTITION OF fact.dmg FOR VALUES IN ('2030-01-01')",
        )
        .expect("a partition by hand");
    }
    s.pg.batch_execute(
        "INSERT INTO fact.dmg (omrade, kon, tid, indhold) VALUES ('TOT', 'TOT', '2030-01-01', 1);
         DROP TABLE fact.gone;",
    )
    .expect("extra period, dropped table");
}

fn scenario(partitioned: bool, history: bool) {
    let mut s = Setup::new(world());
    let opts = apply_opts(partitioned, history);
    let m = s.sync(0);
    let r = s.apply(&m.run_id, &opts);
    assert_eq!(r.status, sync_state::RunStatus::Success, "{:?}", r.tables);

    let clean = run(&mut s, "clean", &opts, false);
    assert_eq!(clean.status, ReconcileStatus::Agrees, "{clean:?}");
    assert_eq!(clean.summary.tables_total, 2);
    assert!(clean.summary.rows_compared > 0);

    damage(&mut s, partitioned);
    let before = tuple_ids(&mut s, "dmg");
    let found = run(&mut s, "found", &opts, false);
    assert_eq!(found.status, ReconcileStatus::Differs);
    let dmg = &found.tables[&id("DMG")];
    assert_eq!(
        dmg.missing_in_db
            .iter()
            .map(|t| t.as_str())
            .collect::<Vec<_>>(),
        [PERIODS[4]]
    );
    assert_eq!(dmg.extra_in_db, ["2030-01-01"]);
    let differs: BTreeMap<&str, (u64, u64)> = dmg
        .differs
        .iter()
        .map(|d| (d.tid.as_str(), (d.only_in_mirror, d.only_in_db)))
        .collect();
    assert_eq!(
        differs,
        BTreeMap::from([
            (PERIODS[1], (3, 0)),
            (PERIODS[2], (1, 1)),
            (PERIODS[3], (0, 1))
        ]),
        "{:?}",
        dmg.differs
    );
    let edited = dmg
        .differs
        .iter()
        .find(|d| d.tid.as_str() == PERIODS[2])
        .expect("P2");
    // The edited row is named, as each side holds it.
    let (theirs, mine) = (&edited.examples.only_in_db, &edited.examples.only_in_mirror);
    assert_eq!((theirs.len(), mine.len()), (1, 1), "{:?}", edited.examples);
    let split = |row: &str| -> (String, f64) {
        let (keys, v) = row.rsplit_once(", indhold=").expect("indhold last");
        (keys.to_string(), v.parse().expect("a number"))
    };
    let ((k_db, v_db), (k_m, v_m)) = (split(&theirs[0]), split(&mine[0]));
    assert_eq!(k_db, k_m, "the same row");
    assert!(
        k_db.contains(&format!("tid={}", date(PERIODS[2]))),
        "{k_db}"
    );
    assert_eq!(v_db, v_m + 1.0, "{theirs:?} {mine:?}");
    assert_eq!(
        found.tables[&id("GONE")].status,
        ReconcileStatus::MissingTable
    );
    // Reporting changed nothing.
    assert_eq!(tuple_ids(&mut s, "dmg"), before);
    let saved = ReconcileReport::load(&s.data(), &RunId::new("found").expect("id"))
        .expect("load")
        .expect("written");
    assert_eq!(saved, found);

    let repaired = run(&mut s, "repair", &opts, true);
    assert_eq!(repaired.status, ReconcileStatus::Repaired, "{repaired:?}");
    let after = tuple_ids(&mut s, "dmg");
    let damaged: BTreeSet<String> = [1, 2, 3, 4].iter().map(|&i| date(PERIODS[i])).collect();
    for (tid, places) in &before {
        if !damaged.contains(tid) && tid != "2030-01-01" {
            assert_eq!(after.get(tid), Some(places), "period {tid} was rewritten");
        }
    }
    assert!(!after.contains_key("2030-01-01"));
    let again = run(&mut s, "again", &opts, false);
    assert_eq!(again.status, ReconcileStatus::Agrees, "{again:?}");

    // Equal to a fresh load of the mirror.
    let fresh = ApplyOptions {
        schema: "fresh".into(),
        ..apply_opts(false, false)
    };
    let r = s.apply(&m.run_id, &fresh);
    assert_eq!(r.status, sync_state::RunStatus::Success, "{:?}", r.tables);
    for t in ["dmg", "gone"] {
        assert_eq!(rows(&mut s, "fact", t), rows(&mut s, "fresh", t), "{t}");
    }
    if history {
        // History as of now is the table.
        let now = s.count("SELECT count(*) FROM fact_history.dmg WHERE valid_to IS NULL");
        assert_eq!(now, s.count("SELECT count(*) FROM fact.dmg"));
    }
}

#[test]
fn every_damage_to_a_plain_table_is_found_and_repaired() {
    scenario(false, false);
}

#[test]
fn every_damage_to_a_partitioned_table_is_found_and_repaired() {
    scenario(true, false);
}

#[test]
fn repairs_keep_history_too() {
    scenario(false, true);
    scenario(true, true);
}

/// The whole database restored from a copy taken before two revisions: the
/// runs since are marked applied, and only a reconcile sees that the
/// revised periods serve old figures.
#[test]
fn a_table_restored_from_an_older_copy_is_found_and_repaired() {
    let mut s = Setup::new(world());
    let opts = apply_opts(false, false);
    let m = s.sync(0);
    s.apply(&m.run_id, &opts);
    s.pg.batch_execute("CREATE TABLE public.backup AS SELECT * FROM fact.dmg")
        .expect("backup");
    let h = s.emu.handle();
    h.revise_period("DMG", PERIODS[6]);
    h.revise_period("DMG", PERIODS[7]);
    h.set_updated("DMG", "2026-02-01T08:00:00");
    let m = s.sync(24);
    let r = s.apply(&m.run_id, &opts);
    assert_eq!(r.status, sync_state::RunStatus::Success);
    s.pg.batch_execute("TRUNCATE fact.dmg; INSERT INTO fact.dmg SELECT * FROM public.backup")
        .expect("restore");
    let found = run(&mut s, "found", &opts, false);
    let dmg = &found.tables[&id("DMG")];
    let differs: Vec<&str> = dmg.differs.iter().map(|d| d.tid.as_str()).collect();
    assert_eq!(differs, [PERIODS[6], PERIODS[7]]);
    assert!(dmg.missing_in_db.is_empty() && dmg.extra_in_db.is_empty());
    let repaired = run(&mut s, "repair", &opts, true);
    assert_eq!(repaired.status, ReconcileStatus::Repaired);
    assert_eq!(
        run(&mut s, "again", &opts, false).status,
        ReconcileStatus::Agrees
    );
}

/// A dry run of a repair compares and reports, and writes nothing.
#[test]
fn a_dry_run_writes_nothing() {
    let mut s = Setup::new(world());
    let opts = apply_opts(false, false);
    let m = s.sync(0);
    s.apply(&m.run_id, &opts);
    s.pg.batch_execute("DELETE FROM fact.dmg WHERE omrade = '2'")
        .expect("damage");
    let dry = ApplyOptions {
        dry_run: true,
        ..opts.clone()
    };
    let before = rows(&mut s, "fact", "dmg");
    let r = run(&mut s, "dry", &dry, true);
    assert_eq!(r.tables[&id("DMG")].differs.len(), PERIODS.len());
    assert_eq!(rows(&mut s, "fact", "dmg"), before);
    assert!(
        ReconcileReport::load(&s.data(), &RunId::new("dry").expect("id"))
            .expect("load")
            .is_none()
    );
}

/// A fresh apply reconciles clean whatever the column types: every type
/// the apply writes reads back as the same bytes (`char(n)` padding, the
/// exact decimal of `numeric`, the ranges of `int4range`, floats).
#[test]
fn every_column_type_the_apply_writes_reconciles_clean() {
    let mut f = tests::apply_fx::fx().expect("fixture");
    f.client
        .batch_execute(
            "CREATE TABLE fact.types (omrade char(5), kon varchar(10), alder int4range, \
                 x smallint, y integer, z bigint, w real, tid date, indhold numeric(12,2));
             CREATE TABLE fact.texts (omrade text, tid text, indhold double precision);
             CREATE TABLE fact.spans (omrade text, tid int4range, indhold real);",
        )
        .expect("tables");
    let headers = [
        "OMRÅDE", "KØN", "ALDER", "X", "Y", "Z", "W", "TID", "INDHOLD",
    ];
    for (q, v) in [("2024K1", 1.5), ("2024K2", -0.25)] {
        f.part(
            "TYPES",
            q,
            &headers,
            &[
                (
                    &["000", "TOT", "16-19", "7", "70000", "7000000000", "0.5", q],
                    Some(v),
                ),
                (
                    &["084", "1", "95OV", "-3", "1", "2", "1e10", q],
                    Some(12345.67),
                ),
                (&["101", "2", "-19", "0", "0", "0", "-0", q], None),
            ],
        )
        .expect("partition");
    }
    for p in ["2019/2020", "AUG - DEC 2019"] {
        f.part(
            "TEXTS",
            p,
            &["OMRÅDE", "TID", "INDHOLD"],
            &[(&["a'b", p], Some(0.1)), (&["Æ", p], Some(1e300))],
        )
        .expect("partition");
    }
    for p in ["1840:1849", "1850:1859"] {
        f.part(
            "SPANS",
            p,
            &["OMRÅDE", "TID", "INDHOLD"],
            &[(&["1", p], Some(3.25))],
        )
        .expect("partition");
    }
    let run = f
        .manifest(
            "types",
            &[
                ("TYPES", &["2024K1", "2024K2"], &[]),
                ("TEXTS", &["2019/2020", "AUG - DEC 2019"], &[]),
                ("SPANS", &["1840:1849", "1850:1859"], &[]),
            ],
        )
        .expect("manifest");
    let r = fact_apply::apply_run(&mut f.client, &f.data, &run, &ApplyOptions::default())
        .expect("apply");
    assert_eq!(r.status, sync_state::RunStatus::Success, "{:?}", r.tables);
    let o = ReconcileOptions::default();
    let rep =
        reconcile(&mut f.client, &f.data, &RunId::new("t").expect("id"), &o).expect("reconcile");
    assert_eq!(rep.status, ReconcileStatus::Agrees, "{rep:#?}");
    assert_eq!(rep.summary.tables_total, 3);
    // A row deleted by hand is shown as the mirror has it, the way
    // Postgres prints the row it was.
    let columns = [
        "omrade", "kon", "alder", "x", "y", "z", "w", "tid", "indhold",
    ];
    let select: Vec<String> = columns.iter().map(|c| format!("{c}::text")).collect();
    let row = f
        .client
        .query_one(
            &format!(
                "SELECT {} FROM fact.types WHERE omrade = '084' AND tid = '2024-01-01'",
                select.join(", ")
            ),
            &[],
        )
        .expect("the row");
    let shown: Vec<String> = (0..columns.len())
        .map(|i| format!("{}={}", columns[i], row.get::<_, String>(i)))
        .collect();
    f.client
        .batch_execute("DELETE FROM fact.types WHERE omrade = '084' AND tid = '2024-01-01'")
        .expect("delete");
    let rep =
        reconcile(&mut f.client, &f.data, &RunId::new("d").expect("id"), &o).expect("reconcile");
    let types = &rep.tables[&TableId::new("TYPES").expect("id")];
    assert_eq!(types.differs.len(), 1, "{types:#?}");
    assert_eq!(types.differs[0].examples.only_in_mirror, [shown.join(", ")]);
    assert!(types.differs[0].examples.only_in_db.is_empty());
}

/// A reconcile that reads the database while an apply commits: its first
/// pass sees the table before the apply and the mirror after the sync (a
/// difference), and the recheck in a fresh snapshot sees the apply's
/// result: nothing is reported. On a partitioned table too (the swap takes
/// locks a reader's open snapshot would block).
fn apply_committing_during_a_reconcile(partitioned: bool) {
    let mut s = Setup::new(world());
    let opts = apply_opts(partitioned, false);
    let m = s.sync(0);
    s.apply(&m.run_id, &opts);
    let h = s.emu.handle();
    h.revise_period("DMG", PERIODS[5]);
    h.set_updated("DMG", "2026-02-01T08:00:00");
    let m2 = s.sync(1);
    assert!(!m2.tables[&id("DMG")].changed_tids.is_empty());
    // The apply of the new run, on a connection of its own, committed
    // between the reconcile's two passes.
    let url = s.db.url().to_string();
    let (data, run2, o) = (s.data(), m2.run_id.clone(), opts.clone());
    let applied = std::rc::Rc::new(std::cell::Cell::new(false));
    let flag = applied.clone();
    sync_state::crash::on_point("reconcile: compared, before the recheck", move || {
        let mut other = postgres::Client::connect(&url, postgres::NoTls).expect("connect");
        let r = fact_apply::apply_run(&mut other, &data, &run2, &o).expect("apply");
        assert_eq!(r.status, sync_state::RunStatus::Success, "{:?}", r.tables);
        flag.set(true);
    });
    let r = run(&mut s, "during", &opts, false);
    assert!(applied.get(), "the first pass found the unapplied period");
    assert_eq!(r.status, ReconcileStatus::Agrees, "{r:?}");
}

#[test]
fn an_apply_committing_during_a_reconcile_is_not_a_difference() {
    apply_committing_during_a_reconcile(false);
}

#[test]
fn a_partition_swap_committing_during_a_reconcile_is_not_a_difference() {
    apply_committing_during_a_reconcile(true);
}

/// The rows that differ are named exactly whichever way the reconcile
/// finds them: narrowed by value (a code edited, a code set to NULL, one
/// figure changed) or, when the damage spans too many values to narrow
/// (every figure of a period of 100 codes), by hash bucket.
#[test]
fn edited_codes_nulls_and_whole_periods_are_named_exactly() {
    let mut w = world();
    let codes: Vec<(&str, usize)> = vec![("OMRÅDE", 100)];
    w.insert(EmuTable::synthetic("WIDE", &PERIODS[..2], &codes));
    let mut s = Setup::new(w);
    let opts = apply_opts(false, false);
    let m = s.sync(0);
    let r = s.apply(&m.run_id, &opts);
    assert_eq!(r.status, sync_state::RunStatus::Success, "{:?}", r.tables);
    let (p0, p1, p2) = (date(PERIODS[0]), date(PERIODS[1]), date(PERIODS[2]));
    let one_row =
        |tid: &str| format!("ctid = (SELECT min(ctid) FROM fact.dmg WHERE tid = '{tid}')");
    s.pg.batch_execute(&format!(
        "UPDATE fact.wide SET indhold = indhold + 1 WHERE tid = '{p0}';
         UPDATE fact.dmg SET omrade = 'NEW' WHERE {};
         ALTER TABLE fact.dmg ALTER COLUMN kon DROP NOT NULL;
         UPDATE fact.dmg SET kon = NULL WHERE {};
         UPDATE fact.wide SET indhold = indhold * 2 WHERE tid = '{p1}'
             AND ctid = (SELECT min(ctid) FROM fact.wide WHERE tid = '{p1}');",
        one_row(&p1),
        one_row(&p2),
    ))
    .expect("damage");
    let found = run(&mut s, "found", &opts, false);
    let counts = |t: &str| -> BTreeMap<String, (u64, u64, usize, usize)> {
        found.tables[&id(t)]
            .differs
            .iter()
            .map(|d| {
                (
                    d.tid.as_str().to_string(),
                    (
                        d.only_in_mirror,
                        d.only_in_db,
                        d.examples.only_in_mirror.len(),
                        d.examples.only_in_db.len(),
                    ),
                )
            })
            .collect()
    };
    let shown = sync_state::EXAMPLE_ROWS.min(100);
    assert_eq!(
        counts("WIDE"),
        BTreeMap::from([
            (PERIODS[0].to_string(), (100, 100, shown, shown)),
            (PERIODS[1].to_string(), (1, 1, 1, 1)),
        ])
    );
    assert_eq!(
        counts("DMG"),
        BTreeMap::from([
            (PERIODS[1].to_string(), (1, 1, 1, 1)),
            (PERIODS[2].to_string(), (1, 1, 1, 1)),
        ])
    );
    let dmg = &found.tables[&id("DMG")].differs;
    assert!(
        dmg[0].examples.only_in_db[0].contains("omrade=NEW"),
        "{dmg:?}"
    );
    assert!(
        dmg[1].examples.only_in_db[0].contains("kon=NULL"),
        "{dmg:?}"
    );
    assert_eq!(dmg[0].db_rows, dmg[0].mirror_rows);
    let repaired = run(&mut s, "repair", &opts, true);
    assert_eq!(repaired.status, ReconcileStatus::Repaired, "{repaired:?}");
    assert_eq!(
        run(&mut s, "again", &opts, false).status,
        ReconcileStatus::Agrees
    );
}

/// A period whose every figure was revised by hand, and three of its rows
/// deleted: more differing rows than the reconcile counts in memory, so it
/// counts them spilled to temporary files, and still exactly.
#[test]
fn a_period_revised_by_hand_past_the_in_memory_count_is_counted_exactly() {
    let mut w = world();
    w.insert(EmuTable::synthetic(
        "BIG",
        &PERIODS[..2],
        &[("OMRÅDE", 100), ("KØN", 100)],
    ));
    let mut s = Setup::new(w);
    let opts = apply_opts(false, false);
    let m = s.sync(0);
    let r = s.apply(&m.run_id, &opts);
    assert_eq!(r.status, sync_state::RunStatus::Success, "{:?}", r.tables);
    let p0 = date(PERIODS[0]);
    s.pg.batch_execute(&format!(
        "UPDATE fact.big SET indhold = indhold + 1 WHERE tid = '{p0}';
         DELETE FROM fact.big WHERE ctid IN
             (SELECT ctid FROM fact.big WHERE tid = '{p0}' LIMIT 3);"
    ))
    .expect("damage");
    let found = run(&mut s, "found", &opts, false);
    let big = &found.tables[&id("BIG")];
    assert_eq!(big.status, ReconcileStatus::Differs);
    assert_eq!(big.differs.len(), 1, "{big:?}");
    let d = &big.differs[0];
    assert_eq!(d.tid.as_str(), PERIODS[0]);
    assert_eq!((d.mirror_rows, d.db_rows), (10_000, 9_997));
    assert_eq!((d.only_in_mirror, d.only_in_db), (10_000, 9_997));
    let shown = sync_state::EXAMPLE_ROWS;
    assert_eq!(d.examples.only_in_mirror.len(), shown);
    assert_eq!(d.examples.only_in_db.len(), shown);
    // The rows shown are rows of the period, as each side holds them: a
    // database row's figure is the mirror's plus one.
    for row in d
        .examples
        .only_in_db
        .iter()
        .chain(&d.examples.only_in_mirror)
    {
        assert!(row.contains(&format!("tid={p0}")), "{row}");
    }
    let shown_db: Vec<f64> = d
        .examples
        .only_in_db
        .iter()
        .map(|row| {
            let v = row.rsplit("indhold=").next().expect("indhold");
            v.parse().expect("a number")
        })
        .collect();
    for v in shown_db {
        let n: i64 =
            s.pg.query_one(
                "SELECT count(*) FROM fact.big WHERE tid = $1::text::date AND indhold = $2",
                &[&p0, &v],
            )
            .expect("count")
            .get(0);
        assert!(n >= 1, "the database holds a row with indhold {v}");
    }
    let repaired = run(&mut s, "repair", &opts, true);
    assert_eq!(repaired.status, ReconcileStatus::Repaired, "{repaired:?}");
    assert_eq!(
        run(&mut s, "again", &opts, false).status,
        ReconcileStatus::Agrees
    );
}
