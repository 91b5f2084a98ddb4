//! `statbank-apply --metadata` end to end against the emulator and a real
//! Postgres: three tables (quarterly with Æ/Ø/Å variables, from the real
//! FOLK1A tableinfo; yearly, from the real BIL10 tableinfo; a weekly one)
//! are synced and applied, and everything a reader relies on is checked
//! through SQL: the labeled views have a label for every code of every row
//! and exactly the fact table's rows, `meta.periods` holds the right
//! calendar days, `meta.tables` the titles and units. Then a label and a
//! title change upstream (with a revised period) and the new texts arrive.

use fact_apply::{ApplyOptions, Metadata};
use statbank_client::emulator::{EmuTable, EmuValue, World};
use sync_state::ApplyStatus;
use tests::e2e::Setup;

fn fixture(name: &str) -> String {
    let path = format!(
        "{}/../statbank-client/testdata/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// A real tableinfo, cut down to `keep` values per variable and the last
/// `periods` periods, so that a debug build loads it quickly.
fn real(name: &str, keep: usize, periods: usize) -> EmuTable {
    let mut t = EmuTable::from_tableinfo_json(&fixture(name)).expect("fixture");
    for v in &mut t.variables {
        v.values.truncate(keep);
    }
    let n = t.time_values.len();
    t.time_values.drain(..n.saturating_sub(periods));
    t
}

fn world() -> World {
    let mut w = World::new();
    let mut folk = real("tableinfo_FOLK1A_da.json", 4, 2);
    folk.footnote = serde_json::json!({"text": "Tal for &quot;Hele landet&quot; &amp; regioner", "mandatory": false});
    w.insert(folk);
    w.insert(real("tableinfo_BIL10_da.json", 3, 3));
    let mut weekly = EmuTable::synthetic("UGE1", &["2024U52", "2025U01"], &[("BRANCHE", 3)]);
    weekly.unit = "Kr.".into();
    w.insert(weekly);
    w
}

fn opts() -> ApplyOptions {
    ApplyOptions {
        create_missing: true,
        metadata: Metadata::Maintain {
            schema: "meta".into(),
        },
        ..ApplyOptions::default()
    }
}

fn text(s: &mut Setup, sql: &str) -> Option<String> {
    s.pg.query_one(sql, &[]).expect(sql).get(0)
}

/// The code columns of a fact table: every column but `indhold`.
fn code_columns(s: &mut Setup, table: &str) -> Vec<String> {
    s.pg.query(
        "SELECT attname::text FROM pg_attribute WHERE attrelid = $1::text::regclass \
         AND attnum > 0 AND NOT attisdropped AND attname <> 'indhold' ORDER BY attnum",
        &[&format!("fact.{table}")],
    )
    .expect("columns")
    .iter()
    .map(|r| r.get(0))
    .collect()
}

fn every_row_labeled(s: &mut Setup, table: &str) {
    let facts = s.count(&format!("SELECT count(*) FROM fact.{table}"));
    assert!(facts > 0, "{table} has rows");
    let view = s.count(&format!("SELECT count(*) FROM fact_labeled.{table}"));
    assert_eq!(
        view, facts,
        "{table}: the view neither multiplies nor drops rows"
    );
    for col in code_columns(s, table) {
        let unlabeled = s.count(&format!(
            "SELECT count(*) FROM fact_labeled.{table} WHERE {col}_label IS NULL"
        ));
        assert_eq!(unlabeled, 0, "{table}.{col}: every code has a label");
    }
}

#[test]
fn labels_titles_and_periods_arrive_in_postgres_and_follow_upstream() {
    let mut s = Setup::new(world());
    let m = s.sync(0);
    let r = s.apply(&m.run_id, &opts());
    for t in r.tables.as_deref().unwrap_or_default() {
        assert_eq!(t.status, ApplyStatus::Applied, "{t:?}");
        assert_eq!(t.metadata_error, None, "{t:?}");
        assert!(t.metadata_labels.unwrap_or(0) > 0, "{t:?}");
    }
    for table in ["folk1a", "bil10", "uge1"] {
        every_row_labeled(&mut s, table);
    }
    // A reader whose session writes dates otherwise still gets its labels.
    s.pg.batch_execute("SET DateStyle = 'SQL, DMY'")
        .expect("datestyle");
    every_row_labeled(&mut s, "folk1a");
    s.pg.batch_execute("RESET DateStyle").expect("datestyle");

    // Codes keep their leading zeros; Æ/Ø/Å variable ids map to their columns.
    assert_eq!(
        text(
            &mut s,
            "SELECT DISTINCT omrade_label FROM fact_labeled.folk1a WHERE omrade = '000'"
        )
        .as_deref(),
        Some("Hele landet")
    );
    assert_eq!(
        text(&mut s, "SELECT column_name FROM meta.variables WHERE table_id = 'FOLK1A' AND variable_id = 'KØN'").as_deref(),
        Some("kon")
    );
    // The time column's code is the date the fact table holds, cast to text.
    let folk = s.emu.handle().table("FOLK1A").expect("FOLK1A");
    let last = folk.latest_period().expect("period").to_string();
    assert_eq!(
        text(&mut s, "SELECT DISTINCT tid_label FROM fact_labeled.folk1a WHERE tid = (SELECT max(tid) FROM fact.folk1a)").as_deref(),
        Some(last.as_str())
    );

    // meta.tables: title, unit, footnote decoded, the fact table named.
    let row = s
        .pg
        .query_one(
            "SELECT title, unit, footnote, fact_table, latest_period, updated IS NOT NULL, \
             jsonb_array_length(contacts) FROM meta.tables WHERE table_id = 'FOLK1A' AND lang = 'da'",
            &[],
        )
        .expect("meta.tables");
    assert_eq!(row.get::<_, String>(0), folk.text);
    assert_eq!(row.get::<_, String>(1), folk.unit);
    assert_eq!(
        row.get::<_, Option<String>>(2).as_deref(),
        Some("Tal for \"Hele landet\" & regioner")
    );
    assert_eq!(
        row.get::<_, Option<String>>(3).as_deref(),
        Some("fact.folk1a")
    );
    assert_eq!(row.get::<_, Option<String>>(4), Some(last.clone()));
    assert!(row.get::<_, bool>(5), "updated is a timestamptz");
    assert!(row.get::<_, i32>(6) >= 1, "contacts");
    assert_eq!(
        text(
            &mut s,
            "SELECT unit FROM meta.tables WHERE table_id = 'UGE1'"
        )
        .as_deref(),
        Some("Kr.")
    );

    // meta.periods: calendar days of every form.
    let span = |s: &mut Setup, t: &str, tid: &str| -> (String, String, String) {
        let r =
            s.pg.query_one(
                "SELECT frequency, period_start::text, period_end::text FROM meta.periods \
                 WHERE table_id = $1 AND tid = $2",
                &[&t, &tid],
            )
            .unwrap_or_else(|e| panic!("{t} {tid}: {e}"));
        (r.get(0), r.get(1), r.get(2))
    };
    assert_eq!(
        span(&mut s, "UGE1", "2025U01"),
        ("weekly".into(), "2024-12-30".into(), "2025-01-05".into())
    );
    let bil = s.emu.handle().table("BIL10").expect("BIL10");
    let year = bil.latest_period().expect("year").to_string();
    assert_eq!(
        span(&mut s, "BIL10", &year),
        (
            "yearly".into(),
            format!("{year}-01-01"),
            format!("{year}-12-31")
        )
    );
    let quarter_end = span(&mut s, "FOLK1A", &last).2;
    assert!(
        quarter_end.ends_with("-03-31")
            || quarter_end.ends_with("-06-30")
            || quarter_end.ends_with("-09-30")
            || quarter_end.ends_with("-12-31"),
        "{quarter_end}"
    );

    // Upstream relabels a region and retitles the table, and revises a period.
    let h = s.emu.handle();
    h.rename_value_text("FOLK1A", "OMRÅDE", "000", "Hele Danmark");
    h.update(|w| {
        if let Some(t) = w.table_mut("FOLK1A") {
            t.text = "Befolkningen (ny titel)".into();
        }
    });
    h.revise_period("FOLK1A", &last);
    h.set_updated("FOLK1A", "2030-01-01T08:00:00");
    let m2 = s.sync(24 * 8);
    assert!(
        m2.tables
            .get(&sync_state::TableId::new("FOLK1A").expect("id"))
            .is_some_and(|t| !t.changed_tids.is_empty()),
        "the revised period is a change"
    );
    let r2 = s.apply(&m2.run_id, &opts());
    assert_eq!(r2.summary.tables_failed, 0, "{r2:?}");
    assert_eq!(
        text(
            &mut s,
            "SELECT DISTINCT omrade_label FROM fact_labeled.folk1a WHERE omrade = '000'"
        )
        .as_deref(),
        Some("Hele Danmark")
    );
    assert_eq!(
        text(
            &mut s,
            "SELECT title FROM meta.tables WHERE table_id = 'FOLK1A'"
        )
        .as_deref(),
        Some("Befolkningen (ny titel)")
    );
    every_row_labeled(&mut s, "folk1a");
    // The other tables' metadata is untouched by an apply that did not touch them.
    every_row_labeled(&mut s, "bil10");
}

/// A table whose labeled view name is taken by something the project did
/// not create: the facts are applied, the metadata fails with a reason
/// naming the table, nothing of the other relation changes.
#[test]
fn a_foreign_relation_in_the_labeled_schema_is_left_alone_and_the_facts_applied() {
    let mut s = Setup::new(world());
    s.pg.batch_execute(
        "CREATE SCHEMA fact_labeled; CREATE TABLE fact_labeled.uge1 (mine text); \
         INSERT INTO fact_labeled.uge1 VALUES ('keep me')",
    )
    .expect("foreign table");
    let m = s.sync(0);
    let r = s.apply(&m.run_id, &opts());
    let uge = r
        .tables
        .as_deref()
        .unwrap_or_default()
        .iter()
        .find(|t| t.table.as_str() == "UGE1")
        .expect("UGE1")
        .clone();
    assert_eq!(uge.status, ApplyStatus::Applied, "{uge:?}");
    let err = uge.metadata_error.expect("metadata error");
    assert!(err.contains("UGE1") && err.contains("left alone"), "{err}");
    assert!(s.count("SELECT count(*) FROM fact.uge1") > 0);
    assert_eq!(
        text(&mut s, "SELECT mine FROM fact_labeled.uge1").as_deref(),
        Some("keep me")
    );
    // Nothing half-written: the savepoint took UGE1's metadata rows back.
    assert_eq!(
        s.count("SELECT count(*) FROM meta.tables WHERE table_id = 'UGE1'"),
        0
    );
    every_row_labeled(&mut s, "folk1a");
}

/// A schema change rebuilds the fact table: the labeled view that depends
/// on it goes first and comes back with the new columns.
#[test]
fn a_rebuild_keeps_the_labeled_view() {
    let mut s = Setup::new(world());
    let m = s.sync(0);
    s.apply(&m.run_id, &opts());
    let h = s.emu.handle();
    h.add_variable(
        "UGE1",
        1,
        statbank_client::emulator::EmuVariable {
            id: "SEKTOR".into(),
            text: "sektor".into(),
            elimination: true,
            map: None,
            values: vec![
                EmuValue::new("S1", "Offentlig"),
                EmuValue::new("S2", "Privat"),
            ],
        },
    );
    h.set_updated("UGE1", "2030-01-01T08:00:00");
    let m2 = s.sync(24 * 8);
    let rebuild = ApplyOptions {
        on_schema_change: fact_apply::OnSchemaChange::Rebuild,
        ..opts()
    };
    let r = s.apply(&m2.run_id, &rebuild);
    assert_eq!(r.summary.tables_failed, 0, "{r:?}");
    every_row_labeled(&mut s, "uge1");
    assert_eq!(
        s.count("SELECT count(*) FROM fact_labeled.uge1 WHERE sektor_label = 'Privat'"),
        s.count("SELECT count(*) FROM fact.uge1 WHERE sektor = 'S2'")
    );
}

/// Turning metadata on for a database that already has its fact tables
/// (partitioned ones here, so the partition-swap path writes it): the
/// first apply with `--metadata` fills the new schema for every table of
/// the mirror, not only the one the run changes.
#[test]
fn a_new_meta_schema_is_filled_for_every_table_of_the_mirror() {
    let mut s = Setup::new(world());
    let m = s.sync(0);
    let facts_only = ApplyOptions {
        create_missing: true,
        partitioned: true,
        ..ApplyOptions::default()
    };
    s.apply(&m.run_id, &facts_only);
    assert_eq!(
        s.count("SELECT count(*) FROM pg_namespace WHERE nspname = 'meta'"),
        0
    );
    let bil = s.emu.handle().table("BIL10").expect("BIL10");
    let year = bil.latest_period().expect("year").to_string();
    s.emu.handle().revise_period("BIL10", &year);
    s.emu.handle().set_updated("BIL10", "2030-01-01T08:00:00");
    let m2 = s.sync(24 * 8);
    let with_meta = ApplyOptions {
        partitioned: true,
        ..opts()
    };
    let r = s.apply(&m2.run_id, &with_meta);
    let changed: Vec<&str> = r
        .tables
        .as_deref()
        .unwrap_or_default()
        .iter()
        .map(|t| t.table.as_str())
        .collect();
    assert_eq!(changed, ["BIL10"], "only BIL10 changed");
    assert_eq!(
        r.tables.as_deref().unwrap_or_default()[0].partition_swap,
        Some(true)
    );
    assert_eq!(
        s.count("SELECT count(DISTINCT table_id) FROM meta.tables"),
        3
    );
    for table in ["folk1a", "bil10", "uge1"] {
        every_row_labeled(&mut s, table);
    }
    // A later swap detaches and drops partitions under the labeled view;
    // a table gone from the mirror takes its metadata with it.
    s.emu.handle().revise_period("BIL10", &year);
    s.emu.handle().set_updated("BIL10", "2030-02-01T08:00:00");
    let m3 = s.sync(24 * 16);
    std::fs::remove_dir_all(s.tmp.path().join("statbank_tables/UGE1")).expect("remove UGE1");
    let r3 = s.apply(&m3.run_id, &with_meta);
    let bil10 = &r3.tables.as_deref().unwrap_or_default()[0];
    assert_eq!(bil10.partition_swap, Some(true), "{bil10:?}");
    assert_eq!(bil10.metadata_error, None, "{bil10:?}");
    every_row_labeled(&mut s, "bil10");
    assert_eq!(
        s.count("SELECT count(*) FROM meta.value_labels WHERE table_id = 'UGE1'"),
        0
    );
    assert_eq!(
        s.count("SELECT count(DISTINCT table_id) FROM meta.tables"),
        2
    );
}
