//! `statbank-apply --metadata` end to end against the emulator and a real
//! Postgres: three tables (quarterly with Æ/Ø/Å variables, from the real
//! FOLK1A tableinfo; yearly, from the real BIL10 tableinfo; a weekly one)
//! are synced and applied, and everything a reader relies on is checked
//! through SQL: the labeled views have a label for every code of every row
//! and exactly the fact table's rows, `meta.periods` holds the right
//! calendar days, `meta.tables` the titles and units. Then a label and a
//! title change upstream (with a revised period) and the new texts arrive.

use fact_apply::{ApplyOptions, Metadata};
use statbank_client::emulator::{
    EmuSubject, EmuTable, EmuValue, Endpoint, Fault, FaultKind, World,
};
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
    let mut folk = real("tableinfo_FOLK1A_da.json", 4, 2)
        .with_english_tableinfo_json(&fixture("tableinfo_FOLK1A_en.json"))
        .expect("en fixture");
    folk.footnote = serde_json::json!({"text": "Tal for &quot;Hele landet&quot; &amp; regioner", "mandatory": false});
    w.insert(folk);
    w.insert(real("tableinfo_BIL10_da.json", 3, 3));
    let mut weekly = EmuTable::synthetic("UGE1", &["2024U52", "2025U01"], &[("BRANCHE", 3)]);
    weekly.unit = "Kr.".into();
    w.insert(weekly);
    let leaf = |id: &str, da: &str, en: &str, tables: &[&str]| EmuSubject {
        tables: tables.iter().map(|t| t.to_string()).collect(),
        ..EmuSubject::new(id, da, en)
    };
    let mut people = EmuSubject::new("1", "Borgere", "People");
    let mut population = EmuSubject::new("3401", "Befolkning", "Population");
    population.subjects = vec![leaf(
        "20021",
        "Befolkningstal",
        "Population figures",
        &["FOLK1A", "NOT_MIRRORED"],
    )];
    people.subjects = vec![population];
    w.subjects = vec![
        people,
        leaf(
            "6",
            "Transport og turisme",
            "Transport and tourism",
            &["BIL10", "UGE1"],
        ),
    ];
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
        text(&mut s, "SELECT column_name FROM meta.variables WHERE table_id = 'FOLK1A' AND variable_id = 'KØN' AND lang = 'da'").as_deref(),
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
            "SELECT unit FROM meta.tables WHERE table_id = 'UGE1' AND lang = 'da'"
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
            "SELECT title FROM meta.tables WHERE table_id = 'FOLK1A' AND lang = 'da'"
        )
        .as_deref(),
        Some("Befolkningen (ny titel)")
    );
    every_row_labeled(&mut s, "folk1a");
    // The other tables' metadata is untouched by an apply that did not touch them.
    every_row_labeled(&mut s, "bil10");
}

/// With `--history`, a relabel and a retitle upstream are reported in the
/// table's result (what changed, with the label before and after), shown
/// by `statbank-inspect table`, and both versions stay queryable in
/// `meta_history` as of before and after the change, on StatBank's clock.
#[test]
fn relabels_and_retitles_are_reported_and_kept_as_history() {
    let mut s = Setup::new(world());
    let with_history = ApplyOptions {
        history: true,
        ..opts()
    };
    let m = s.sync(0);
    let r = s.apply(&m.run_id, &with_history);
    for t in r.tables.as_deref().unwrap_or_default() {
        assert_eq!(t.status, ApplyStatus::Applied, "{t:?}");
        assert_eq!(t.metadata_error, None, "{t:?}");
    }
    let folk = s.emu.handle().table("FOLK1A").expect("FOLK1A");
    let old_title = folk.text.clone();
    let first = s.count("SELECT count(*) FROM meta_history.value_labels WHERE valid_to IS NULL");
    let current = s.count("SELECT count(*) FROM meta.value_labels");
    assert_eq!(first, current, "every label has one current version");

    let h = s.emu.handle();
    h.rename_value_text("FOLK1A", "OMRÅDE", "000", "Hele Danmark");
    h.set_title(
        "FOLK1A",
        "Befolkningen (ny titel)",
        "Population (new title)",
    );
    h.set_updated("FOLK1A", "2030-01-01T08:00:00");
    let m2 = s.sync(24 * 8);
    let id = sync_state::TableId::new("FOLK1A").expect("id");
    let result = m2.tables.get(&id).expect("FOLK1A considered");
    assert!(result.metadata_changed, "{result:?}");
    let da = result
        .metadata_changes
        .iter()
        .find(|c| c.lang == sync_state::tableinfo::Lang::Da)
        .expect("the Danish change is reported");
    assert_eq!(da.fields, vec!["title".to_owned()], "{da:?}");
    assert_eq!(
        (da.labels_added, da.labels_removed, da.labels_relabelled),
        (0, 0, 1)
    );
    assert_eq!(da.examples.len(), 1);
    assert_eq!(
        (
            da.examples[0].code.as_str(),
            da.examples[0].before.as_str(),
            da.examples[0].after.as_str()
        ),
        ("000", "Hele landet", "Hele Danmark")
    );
    let en = result
        .metadata_changes
        .iter()
        .find(|c| c.lang == sync_state::tableinfo::Lang::En)
        .expect("the English retitle is reported");
    assert_eq!(en.fields, vec!["title".to_owned()], "{en:?}");
    // The other tables did not change, and say nothing.
    for (t, r) in &m2.tables {
        if t != &id {
            assert!(r.metadata_changes.is_empty(), "{t}: {r:?}");
        }
    }
    let shown = bins::inspect::table(&s.data(), &id).expect("inspect").text;
    assert!(
        shown.contains("label history (newest first):")
            && shown.contains(r#"OMRÅDE 000: "Hele landet" → "Hele Danmark""#),
        "{shown}"
    );

    // Pending for its metadata even if no period changed; applied.
    let r2 = s.apply(&m2.run_id, &with_history);
    assert_eq!(r2.summary.tables_failed, 0, "{r2:?}");
    let label_at = |s: &mut Setup, at: &str| {
        text(
            s,
            &format!(
                "SELECT label FROM meta_history.value_labels WHERE table_id = 'FOLK1A' \
                 AND variable_id = 'OMRÅDE' AND lang = 'da' AND code = '000' \
                 AND valid_from <= '{at}' AND (valid_to IS NULL OR valid_to > '{at}')"
            ),
        )
    };
    let title_at = |s: &mut Setup, lang: &str, at: &str| {
        text(
            s,
            &format!(
                "SELECT title FROM meta_history.tables WHERE table_id = 'FOLK1A' \
                 AND lang = '{lang}' \
                 AND valid_from <= '{at}' AND (valid_to IS NULL OR valid_to > '{at}')"
            ),
        )
    };
    // StatBank's clock is Copenhagen's: 2030-01-01T08:00 there is 07:00 UTC.
    let (before, after) = ("2029-12-31T12:00:00Z", "2030-01-01T07:30:00Z");
    assert_eq!(label_at(&mut s, before).as_deref(), Some("Hele landet"));
    assert_eq!(label_at(&mut s, after).as_deref(), Some("Hele Danmark"));
    assert_eq!(title_at(&mut s, "da", before), Some(old_title));
    assert_eq!(
        title_at(&mut s, "da", after).as_deref(),
        Some("Befolkningen (ny titel)")
    );
    assert_eq!(
        title_at(&mut s, "en", after).as_deref(),
        Some("Population (new title)")
    );
    assert_eq!(
        text(
            &mut s,
            "SELECT to_char(valid_to AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS') FROM meta_history.value_labels WHERE table_id = 'FOLK1A' \
             AND code = '000' AND lang = 'da' AND valid_to IS NOT NULL"
        )
        .as_deref(),
        Some("2030-01-01 07:00:00"),
        "closed at the new updated, on StatBank's clock"
    );
    // Only the relabelled code got a new version: the others are untouched.
    assert_eq!(
        s.count("SELECT count(*) FROM meta_history.value_labels WHERE valid_to IS NOT NULL AND table_id = 'FOLK1A' AND variable_id <> 'Tid'"),
        1
    );
    assert_eq!(
        s.count("SELECT count(*) FROM meta_history.value_labels WHERE valid_to IS NULL"),
        s.count("SELECT count(*) FROM meta.value_labels")
    );
    // A third apply of the same run changes no history.
    let versions = s.count("SELECT count(*) FROM meta_history.value_labels");
    let tables = s.count("SELECT count(*) FROM meta_history.tables");
    let _ = s.apply(&m2.run_id, &with_history);
    assert_eq!(
        s.count("SELECT count(*) FROM meta_history.value_labels"),
        versions
    );
    assert_eq!(s.count("SELECT count(*) FROM meta_history.tables"), tables);

    // A table that leaves the mirror leaves `meta`; its history stays, closed.
    s.emu.handle().remove_table("UGE1");
    let archive = bins::SyncOptions {
        vanished_tables: bins::VanishedTables::Archive,
        ..s.opts(24 * 9)
    };
    let m3 = s.sync_with(&archive);
    let _ = s.apply(&m3.run_id, &with_history);
    assert_eq!(
        s.count("SELECT count(*) FROM meta.value_labels WHERE table_id = 'UGE1'"),
        0
    );
    assert!(s.count("SELECT count(*) FROM meta_history.value_labels WHERE table_id = 'UGE1'") > 0);
    assert_eq!(
        s.count(
            "SELECT count(*) FROM meta_history.value_labels WHERE table_id = 'UGE1' AND valid_to IS NULL"
        ) + s.count("SELECT count(*) FROM meta_history.tables WHERE table_id = 'UGE1' AND valid_to IS NULL"),
        0,
        "its versions are closed"
    );
    assert_eq!(
        s.count("SELECT count(*) FROM meta_history.tables WHERE table_id = 'FOLK1A' AND valid_to IS NULL"),
        2,
        "the other tables' current versions are untouched"
    );
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

/// A table's result in an apply report.
fn result_of<'r>(
    r: &'r sync_state::DbApplyReport,
    table: &str,
) -> &'r sync_state::ApplyTableResult {
    r.tables
        .as_deref()
        .unwrap_or_default()
        .iter()
        .find(|t| t.table.as_str() == table)
        .unwrap_or_else(|| panic!("{table} in {r:?}"))
}

/// The subject-tree requests of a cycle, by language: `(da, en)`.
fn subject_requests(s: &Setup) -> (usize, usize) {
    let reqs = s.emu.handle().requests();
    let n = |lang: &str| {
        reqs.iter()
            .filter(|r| r.endpoint == Some(Endpoint::Subjects))
            .filter(|r| r.lang.as_deref().unwrap_or("da") == lang)
            .count()
    };
    (n("da"), n("en"))
}

/// The requests of a cycle by endpoint and language: `(tables, tableinfo
/// da, tableinfo en, data)`.
fn request_counts(s: &Setup) -> (usize, usize, usize, usize) {
    let reqs = s.emu.handle().requests();
    let n = |e: Endpoint, lang: Option<&str>| {
        reqs.iter()
            .filter(|r| r.endpoint == Some(e))
            .filter(|r| lang.is_none_or(|l| r.lang.as_deref().unwrap_or("da") == l))
            .count()
    };
    (
        n(Endpoint::Tables, None),
        n(Endpoint::TableInfo, Some("da")),
        n(Endpoint::TableInfo, Some("en")),
        n(Endpoint::Data, None),
    )
}

/// English titles, units and labels beside the Danish ones: one more
/// tableinfo request per changed table and none in a cycle where nothing
/// changed; `<col>_label_en` for every code of every row; an English
/// relabel with no period changed still reaches Postgres (the run is
/// pending until it does); a failed English tableinfo fails only the
/// metadata and is fetched again next cycle, without data requests.
#[test]
fn english_metadata_arrives_and_follows_upstream() {
    let mut s = Setup::new(world());
    let m = s.sync(0);
    let (tables, da, en, data) = request_counts(&s);
    assert_eq!(
        (tables, da, en),
        (1, 3, 3),
        "catalog, then each table's tableinfo per language"
    );
    assert!(data >= 3, "{data}");
    assert_eq!(
        subject_requests(&s),
        (1, 1),
        "the subject tree once per language"
    );
    assert!(
        m.subjects
            .as_ref()
            .is_some_and(|x| x.changed && x.error.is_none()),
        "{:?}",
        m.subjects
    );
    let cache = s.data();
    for t in ["FOLK1A", "BIL10", "UGE1"] {
        let id = sync_state::TableId::new(t).expect("id");
        let info =
            sync_state::tableinfo::cached_tableinfo_in(&cache, &id, statbank_client::Lang::En)
                .expect("readable")
                .unwrap_or_else(|| panic!("{t}: English tableinfo cached"));
        assert_eq!(info.id, t);
        assert!(
            m.tables[&id].metadata_changed,
            "{t}: a new cache is a metadata change"
        );
    }
    let r = s.apply(&m.run_id, &opts());
    assert_eq!(r.summary.tables_failed, 0, "{r:?}");
    for t in r.tables.as_deref().unwrap_or_default() {
        assert_eq!(t.metadata_error, None, "{t:?}");
    }
    for table in ["folk1a", "uge1"] {
        let facts = s.count(&format!("SELECT count(*) FROM fact.{table}"));
        assert_eq!(
            facts,
            s.count(&format!("SELECT count(*) FROM fact_labeled.{table}"))
        );
        for col in code_columns(&mut s, table) {
            let missing = s.count(&format!(
                "SELECT count(*) FROM fact_labeled.{table} WHERE {col}_label_en IS NULL OR {col}_label IS NULL"
            ));
            assert_eq!(
                missing, 0,
                "{table}.{col}: a Danish and an English label for every row"
            );
        }
    }
    let title = |s: &mut Setup, lang: &str| {
        text(s, &format!("SELECT title || ' / ' || unit FROM meta.tables WHERE table_id = 'FOLK1A' AND lang = '{lang}'"))
    };
    assert_eq!(
        title(&mut s, "en").as_deref(),
        Some("Population at the first day of the quarter / Number")
    );
    assert_eq!(
        title(&mut s, "da").as_deref(),
        Some("Befolkningen den 1. i kvartalet / Antal")
    );
    assert_eq!(
        text(
            &mut s,
            "SELECT DISTINCT omrade_label_en FROM fact_labeled.folk1a WHERE omrade = '000'"
        )
        .as_deref(),
        Some("All Denmark")
    );
    // English time labels (2024Q1) for codes that stay 2024K1.
    let q = text(&mut s, "SELECT label FROM meta.value_labels WHERE table_id = 'FOLK1A' AND variable_id = 'Tid' AND lang = 'en' ORDER BY position DESC LIMIT 1").expect("time label");
    assert!(q.contains('Q'), "{q}");
    assert_eq!(
        s.count("SELECT count(*) FROM meta.value_labels WHERE table_id = 'FOLK1A' AND variable_id = 'Tid' AND lang = 'en' AND code LIKE '%K%'"),
        0,
        "time codes are the fact column's dates"
    );

    // The subject tree, in both languages; tables filed under their
    // subjects (only those the mirror has).
    let subject = |s: &mut Setup, lang: &str, id: &str| {
        text(s, &format!("SELECT description || ' < ' || coalesce(parent_id, '-') || ' #' || position FROM meta.subjects WHERE subject_id = '{id}' AND lang = '{lang}'"))
    };
    assert_eq!(
        subject(&mut s, "da", "20021").as_deref(),
        Some("Befolkningstal < 3401 #1")
    );
    assert_eq!(
        subject(&mut s, "en", "3401").as_deref(),
        Some("Population < 1 #1")
    );
    assert_eq!(
        subject(&mut s, "en", "6").as_deref(),
        Some("Transport and tourism < - #2")
    );
    assert_eq!(
        text(&mut s, "SELECT string_agg(table_id || '@' || subject_id, ',' ORDER BY table_id) FROM meta.table_subjects").as_deref(),
        Some("BIL10@6,FOLK1A@20021,UGE1@6")
    );
    // A table's subject path in English, as an analyst asks it.
    assert_eq!(
        text(
            &mut s,
            "SELECT p.description || ' / ' || c.description FROM meta.table_subjects ts \
                      JOIN meta.subjects c ON c.subject_id = ts.subject_id AND c.lang = 'en' \
                      JOIN meta.subjects p ON p.subject_id = c.parent_id AND p.lang = 'en' \
                      WHERE ts.table_id = 'FOLK1A'"
        )
        .as_deref(),
        Some("Population / Population figures")
    );

    // Nothing changed: one request, and no run awaits an apply.
    s.emu.handle().clear_requests();
    let quiet = s.sync(24 * 8);
    assert_eq!(request_counts(&s), (1, 0, 0, 0));
    assert_eq!(subject_requests(&s), (0, 0));
    assert!(!quiet.needs_apply());

    // English relabel and retitle upstream, no period changed.
    let h = s.emu.handle();
    h.rename_value_text_en("FOLK1A", "OMRÅDE", "000", "Denmark, all of it");
    h.set_title(
        "FOLK1A",
        "Befolkningen den 1. i kvartalet",
        "Population, first day of the quarter",
    );
    h.set_updated("FOLK1A", "2031-01-01T08:00:00");
    h.clear_requests();
    let m3 = s.sync(24 * 16);
    let folk = &m3.tables[&sync_state::TableId::new("FOLK1A").expect("id")];
    assert!(folk.changed_tids.is_empty(), "{folk:?}");
    assert!(folk.metadata_changed, "{folk:?}");
    assert!(m3.needs_apply(), "pending until the metadata is applied");
    let (_, da, en, _) = request_counts(&s);
    assert_eq!(
        (da, en),
        (1, 1),
        "the changed table's tableinfo in each language"
    );
    assert_eq!(
        subject_requests(&s),
        (1, 1),
        "and the subject tree once per language"
    );
    let r3 = s.apply(&m3.run_id, &opts());
    assert_eq!(r3.summary.tables_failed, 0, "{r3:?}");
    assert_eq!(
        text(
            &mut s,
            "SELECT DISTINCT omrade_label_en FROM fact_labeled.folk1a WHERE omrade = '000'"
        )
        .as_deref(),
        Some("Denmark, all of it")
    );
    assert_eq!(
        title(&mut s, "en").as_deref(),
        Some("Population, first day of the quarter / Number")
    );
    assert!(!sync_state::RunManifest::load(&s.data(), &m3.run_id)
        .expect("manifest")
        .needs_apply());

    // The English tableinfo fails: the facts go on, the metadata error is
    // reported, and the next cycle fetches English alone.
    h.add_fault(
        Fault::always(Endpoint::TableInfo, FaultKind::Status500)
            .for_lang("en")
            .for_table("UGE1"),
    );
    h.revise_period("UGE1", "2025U01");
    h.set_updated("UGE1", "2031-02-01T08:00:00");
    let m4 = s.sync(24 * 24);
    let uge = &m4.tables[&sync_state::TableId::new("UGE1").expect("id")];
    assert!(!uge.changed_tids.is_empty(), "the facts synced: {uge:?}");
    let err = uge.metadata_error.as_deref().unwrap_or_default();
    assert!(err.contains("UGE1") && err.contains(" en"), "{err}");
    let r4 = s.apply(&m4.run_id, &opts());
    let uge_apply = result_of(&r4, "UGE1");
    assert_eq!(uge_apply.status, ApplyStatus::Applied);
    let note = uge_apply.metadata_error.as_deref().unwrap_or_default();
    assert!(
        note.contains("kept as it was"),
        "stale English is kept, not mixed in: {note}"
    );
    h.clear_faults();
    h.clear_requests();
    let m5 = s.sync(24 * 32);
    let uge = &m5.tables[&sync_state::TableId::new("UGE1").expect("id")];
    assert_eq!(uge.metadata_error, None, "{uge:?}");
    assert!(uge.metadata_changed);
    let (_, da, en, data) = request_counts(&s);
    assert_eq!((da, en, data), (0, 1, 0), "English alone, no data");
    let r5 = s.apply(&m5.run_id, &opts());
    assert_eq!(r5.summary.tables_failed, 0, "{r5:?}");
    let missing = s.count("SELECT count(*) FROM fact_labeled.uge1 WHERE branche_label_en IS NULL");
    assert_eq!(missing, 0);
    assert_eq!(
        text(
            &mut s,
            "SELECT DISTINCT updated::text FROM meta.tables WHERE table_id = 'UGE1'"
        )
        .as_deref()
        .map(|u| u.starts_with("2031-02-01")),
        Some(true),
        "both languages describe the same tableinfo"
    );
}

/// English variables or values that do not match the Danish ones fail the
/// table's metadata with an error naming the table and language; the
/// previous metadata is kept, the facts are applied.
#[test]
fn mismatching_english_metadata_is_refused_and_the_facts_applied() {
    let mut s = Setup::new(world());
    let m = s.sync(0);
    s.apply(&m.run_id, &opts());
    let before = s.count("SELECT count(*) FROM meta.value_labels WHERE table_id = 'UGE1'");
    // A cached English tableinfo with another value list, as a hand edit
    // or a corrupt copy would leave it.
    let data = s.data();
    let id = sync_state::TableId::new("UGE1").expect("id");
    let key = data.metadata_file_key_in(&id, statbank_client::Lang::En);
    let mut en: serde_json::Value =
        serde_json::from_slice(&data.storage().get(&key).expect("read").expect("cached"))
            .expect("json");
    en["variables"][0]["values"]
        .as_array_mut()
        .expect("values")
        .pop();
    data.storage()
        .put(&key, &serde_json::to_vec(&en).expect("json"))
        .expect("write");
    let h = s.emu.handle();
    h.revise_period("UGE1", "2025U01");
    h.set_updated("UGE1", "2031-02-01T08:00:00");
    h.add_fault(Fault::always(Endpoint::TableInfo, FaultKind::Status500).for_lang("en"));
    let m2 = s.sync(24 * 8);
    // The sync could not refresh English: the edited cache stays, and the
    // apply sees it as stale (another `updated`), so it is kept out.
    let r = s.apply(&m2.run_id, &opts());
    let t = result_of(&r, "UGE1");
    assert_eq!(t.status, ApplyStatus::Applied, "{t:?}");
    // Now the same `updated` with another value list: refused.
    en["updated"] = serde_json::json!("2031-02-01T08:00:00");
    data.storage()
        .put(&key, &serde_json::to_vec(&en).expect("json"))
        .expect("write");
    let r2 = s.apply(&m2.run_id, &opts());
    let t = result_of(&r2, "UGE1");
    assert_eq!(
        t.status,
        ApplyStatus::Applied,
        "the facts are applied: {t:?}"
    );
    let err = t.metadata_error.as_deref().unwrap_or_default();
    assert!(
        err.contains("UGE1") && err.contains("en") && err.contains("does not match"),
        "{err}"
    );
    assert_eq!(
        s.count("SELECT count(*) FROM meta.value_labels WHERE table_id = 'UGE1'"),
        before,
        "the previous metadata is kept whole"
    );
}

/// A mirror synced in Danish only (the original's requests) upgrades
/// without a re-bootstrap: `--refresh-metadata` fetches the English
/// tableinfo alone (no catalog, no data), and the next apply writes it.
#[test]
fn danish_only_mirror_gets_english_with_refresh_metadata() {
    let mut s = Setup::new(world());
    let mut danish = s.opts(0);
    danish.languages = bins::Languages::danish_only();
    let m = s.sync_with(&danish);
    let (tables, da, en, _) = request_counts(&s);
    assert_eq!(
        (tables, da, en),
        (1, 3, 0),
        "Danish only: the original's requests"
    );
    s.apply(&m.run_id, &opts());
    assert_eq!(
        s.count("SELECT count(*) FROM meta.tables WHERE lang = 'en'"),
        0
    );
    s.emu.handle().clear_requests();
    let mut refresh = s.opts(1);
    refresh.refresh_metadata = true;
    let r = s.sync_with(&refresh);
    assert_eq!(request_counts(&s), (0, 0, 3, 0), "English tableinfo alone");
    assert!(r.needs_apply(), "its metadata awaits the apply");
    let applied = s.apply(&r.run_id, &opts());
    assert_eq!(applied.summary.tables_failed, 0, "{applied:?}");
    assert_eq!(
        s.count("SELECT count(*) FROM meta.tables WHERE lang = 'en'"),
        3
    );
    let missing = s.count("SELECT count(*) FROM fact_labeled.folk1a WHERE omrade_label_en IS NULL");
    assert_eq!(missing, 0);
    // `--languages` must keep Danish.
    assert!(bins::Languages::new(&[statbank_client::Lang::En]).is_err());
}

/// The labels of a table, `(variable_id, lang, code) → label`, as its
/// labels file holds them.
fn labels_file(
    s: &Setup,
    table: &str,
) -> std::collections::BTreeMap<(String, String, String), String> {
    use arrow_array::{Array, StringArray};
    let path = s
        .data()
        .local_path(&format!("metadata/labels/{table}.parquet"))
        .expect("local");
    let file = std::fs::File::open(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file)
        .expect("parquet")
        .build()
        .expect("reader");
    let mut out = std::collections::BTreeMap::new();
    for batch in reader {
        let b = batch.expect("batch");
        let col = |name: &str| {
            b.column_by_name(name)
                .and_then(|c| c.as_any().downcast_ref::<StringArray>().cloned())
                .unwrap_or_else(|| panic!("column {name}"))
        };
        let (v, c, l, x, t) = (
            col("variable_id"),
            col("code"),
            col("lang"),
            col("label"),
            col("table_id"),
        );
        for i in 0..b.num_rows() {
            assert_eq!(t.value(i), table);
            assert!(!x.is_null(i));
            let key = (
                v.value(i).to_string(),
                l.value(i).to_string(),
                c.value(i).to_string(),
            );
            assert!(
                out.insert(key, x.value(i).to_string()).is_none(),
                "one label per code and language"
            );
        }
    }
    out
}

/// `metadata/labels/<ID>.parquet`: every code in both languages, written
/// once (a cycle that changes nothing leaves the file's bytes as they
/// were), rewritten when a label changes upstream.
#[test]
fn the_labels_file_holds_both_languages_and_is_rewritten_only_on_change() {
    let s = Setup::new(world());
    s.sync(0);
    let labels = labels_file(&s, "FOLK1A");
    let key = |v: &str, l: &str, c: &str| (v.to_string(), l.to_string(), c.to_string());
    assert_eq!(
        labels.get(&key("OMRÅDE", "da", "000")).map(String::as_str),
        Some("Hele landet")
    );
    assert_eq!(
        labels.get(&key("OMRÅDE", "en", "000")).map(String::as_str),
        Some("All Denmark")
    );
    let folk = s.emu.handle().table("FOLK1A").expect("FOLK1A");
    let last = folk.latest_period().expect("period").to_string();
    let q = labels
        .get(&key("Tid", "en", &last))
        .expect("an English time label");
    assert!(q.contains('Q'), "{q}: the English label of code {last}");
    let per_lang = labels.keys().filter(|k| k.1 == "da").count();
    assert_eq!(per_lang, labels.keys().filter(|k| k.1 == "en").count());
    let path = s
        .data()
        .local_path("metadata/labels/FOLK1A.parquet")
        .expect("local");
    let bytes = std::fs::read(&path).expect("read");
    let modified = std::fs::metadata(&path)
        .and_then(|m| m.modified())
        .expect("mtime");

    // A cycle where FOLK1A's `updated` moves but no text does: same file.
    let h = s.emu.handle();
    h.set_updated("FOLK1A", "2031-01-01T08:00:00");
    s.sync(24 * 8);
    assert_eq!(std::fs::read(&path).expect("read"), bytes);
    assert_eq!(
        std::fs::metadata(&path)
            .and_then(|m| m.modified())
            .expect("mtime"),
        modified,
        "not rewritten"
    );

    h.rename_value_text_en("FOLK1A", "OMRÅDE", "000", "Denmark");
    h.set_updated("FOLK1A", "2031-02-01T08:00:00");
    s.sync(24 * 16);
    let after = labels_file(&s, "FOLK1A");
    assert_eq!(
        after.get(&key("OMRÅDE", "en", "000")).map(String::as_str),
        Some("Denmark")
    );
    assert_eq!(
        after.get(&key("OMRÅDE", "da", "000")).map(String::as_str),
        Some("Hele landet")
    );
}
