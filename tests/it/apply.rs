//! `fact-apply` against a real Postgres (see `tests::pg` for where it comes
//! from). Every test gets its own database and its own data folder.

use anyhow::Result;
use fact_apply::{apply_run, ApplyOptions};
use sync_state::{ApplyStatus, DbApplyReport, RunId, RunStatus};
use tests::apply_fx::{fx, result, saved_table, tids, Fx};

/// What only these tests need of the fixture.
trait FxExt {
    fn apply(&mut self, run: &RunId, opts: &ApplyOptions) -> Result<DbApplyReport>;
    fn count(&mut self, sql: &str) -> Result<i64>;
}

impl FxExt for Fx {
    fn apply(&mut self, run: &RunId, opts: &ApplyOptions) -> Result<DbApplyReport> {
        Ok(apply_run(&mut self.client, &self.data, run, opts)?)
    }

    fn count(&mut self, sql: &str) -> Result<i64> {
        Ok(self.client.query_one(sql, &[])?.get(0))
    }
}

const H: &[&str] = &["OMRÅDE", "KØN", "TID", "INDHOLD"];

fn folk_table(f: &mut Fx, name: &str) -> Result<()> {
    f.client.batch_execute(&format!(
        "CREATE TABLE fact.{name} (omrade text, kon text, tid date, indhold double precision);
         CREATE INDEX ON fact.{name} (tid);
         INSERT INTO fact.{name} VALUES
           ('000','1','2024-01-01',1), ('000','2','2024-01-01',2),
           ('000','1','2024-04-01',3), ('000','2','2024-04-01',4),
           ('000','1','2024-07-01',5), ('000','2','2024-07-01',6), ('101','1','2024-07-01',7);"
    ))?;
    Ok(())
}

#[test]
fn a_delta_replaces_exactly_the_changed_periods() -> Result<()> {
    let mut f = fx()?;
    folk_table(&mut f, "folk1a")?;
    f.part(
        "FOLK1A",
        "2024K2",
        H,
        &[
            (&["000", "1", "2024K2"], Some(30.0)),
            (&["000", "2", "2024K2"], Some(40.5)),
            (&["101", "1", "2024K2"], Some(41.0)),
        ],
    )?;
    f.part(
        "FOLK1A",
        "2024K3",
        H,
        &[
            (&["000", "1", "2024K3"], Some(50.0)),
            (&["000", "2", "2024K3"], None), // ".." is dropped
        ],
    )?;
    let run = f.manifest(
        "20261129T220000Z",
        &[("FOLK1A", &["2024K2", "2024K3"], &[])],
    )?;
    let report = f.apply(&run, &ApplyOptions::default())?;

    assert_eq!(report.status, RunStatus::Success);
    let r = result(&report, "FOLK1A");
    assert_eq!(r.status, ApplyStatus::Applied, "{r:?}");
    assert_eq!(r.deleted_rows, Some(5));
    assert_eq!(r.inserted_rows, Some(4));
    assert_eq!(r.dropped_null_rows, Some(1));
    let periods = r.periods.as_ref().expect("periods");
    assert_eq!(
        (periods["2024K2"].deleted, periods["2024K2"].inserted),
        (2, 3)
    );
    assert_eq!(
        (periods["2024K3"].deleted, periods["2024K3"].inserted),
        (3, 1)
    );
    assert_eq!(
        f.dump("folk1a")?,
        vec![
            "(000,1,2024-01-01,1)",
            "(000,1,2024-04-01,30)",
            "(000,1,2024-07-01,50)",
            "(000,2,2024-01-01,2)",
            "(000,2,2024-04-01,40.5)",
            "(101,1,2024-04-01,41)",
        ]
    );
    // the report is in the manifest, in the shape `docs/records.md` documents
    let saved = f.saved_db_apply(&run)?.expect("db_apply written");
    assert_eq!(saved["status"], "success");
    assert_eq!(saved["run_id"], "20261129T220000Z");
    assert_eq!(saved["summary"]["tables_applied"], 1);
    let t = saved_table(&saved, "FOLK1A");
    assert_eq!(t["table"], "FOLK1A");
    assert_eq!(t["status"], "applied");
    assert_eq!(t["changed_tids"], serde_json::json!(["2024K2", "2024K3"]));
    assert_eq!(t["deleted_rows"], 5);
    assert_eq!(t["inserted_rows"], 4);
    assert!(saved.get("dry_run").is_none());
    Ok(())
}

#[test]
fn a_missing_fact_table_is_skipped() -> Result<()> {
    let mut f = fx()?;
    f.part(
        "NOPE1",
        "2024K1",
        H,
        &[(&["000", "1", "2024K1"], Some(1.0))],
    )?;
    let run = f.manifest("r1", &[("NOPE1", &["2024K1"], &[])])?;
    let report = f.apply(&run, &ApplyOptions::default())?;
    assert_eq!(report.status, RunStatus::Success);
    assert_eq!(report.summary.tables_skipped, 1);
    let saved = f.saved_db_apply(&run)?.expect("db_apply written");
    assert_eq!(
        saved["tables"]["NOPE1"],
        serde_json::json!({"table":"NOPE1","status":"skipped","reason":"missing_fact_table","changed_tids":["2024K1"]})
    );
    assert_eq!(
        f.count("SELECT count(*) FROM pg_tables WHERE schemaname = 'fact'")?,
        0
    );
    Ok(())
}

#[test]
fn missing_partition_files_fail_the_table_untouched() -> Result<()> {
    let mut f = fx()?;
    folk_table(&mut f, "folk1a")?;
    let before = f.dump("folk1a")?;
    f.part(
        "FOLK1A",
        "2024K2",
        H,
        &[(&["000", "1", "2024K2"], Some(9.0))],
    )?;
    let run = f.manifest("r1", &[("FOLK1A", &["2024K2", "2024K3"], &[])])?;
    let report = f.apply(&run, &ApplyOptions::default())?;
    assert_eq!(report.status, RunStatus::PartialFailure);
    let saved = f.saved_db_apply(&run)?.expect("db_apply written");
    assert_eq!(
        saved["tables"]["FOLK1A"],
        serde_json::json!({"table":"FOLK1A","status":"failed","reason":"missing_partition_files",
            "missing_tids":["2024K3"],"changed_tids":["2024K2","2024K3"]})
    );
    assert_eq!(f.dump("folk1a")?, before);

    // strict off: the period with a file is applied, the other left as it is
    let lenient = ApplyOptions {
        strict: false,
        ..ApplyOptions::default()
    };
    let report = f.apply(&run, &lenient)?;
    let r = result(&report, "FOLK1A");
    assert_eq!(r.status, ApplyStatus::Applied, "{r:?}");
    assert_eq!(r.missing_tids, Some(tids(&["2024K3"])));
    assert_eq!((r.deleted_rows, r.inserted_rows), (Some(2), Some(1)));
    assert_eq!(
        f.count("SELECT count(*) FROM fact.folk1a WHERE tid = '2024-07-01'")?,
        3
    );
    Ok(())
}

/// A pending run applied late: one of its changed periods was removed by a
/// later run (its file is gone for good). That period is applied as deleted,
/// so the pending run completes instead of failing forever; a period whose
/// file is missing without a later removal still fails the table.
#[test]
fn a_late_apply_treats_periods_a_later_run_removed_as_deleted() -> Result<()> {
    let mut f = fx()?;
    folk_table(&mut f, "folk1a")?;
    f.part(
        "FOLK1A",
        "2024K2",
        H,
        &[(&["000", "1", "2024K2"], Some(9.0))],
    )?;
    let run1 = f.manifest("r1", &[("FOLK1A", &["2024K2", "2024K3"], &[])])?;
    // The later run reports 2024K3 removed upstream (its file is gone).
    let _run2 = f.manifest("r2", &[("FOLK1A", &[], &["2024K3"])])?;
    let report = f.apply(&run1, &ApplyOptions::default())?;
    let r = result(&report, "FOLK1A");
    assert_eq!(r.status, ApplyStatus::Applied, "{r:?}");
    assert_eq!(r.deleted_tids, Some(tids(&["2024K3"])));
    assert_eq!(r.missing_tids, None);
    assert_eq!(
        f.count("SELECT count(*) FROM fact.folk1a WHERE tid = '2024-07-01'")?,
        0,
        "the removed period is deleted"
    );
    assert_eq!(
        f.count("SELECT count(*) FROM fact.folk1a WHERE tid = '2024-04-01'")?,
        1
    );

    // Without a later removal the same gap still fails the table.
    let run3 = f.manifest("r3", &[("FOLK1A", &["2024K2", "2024K4"], &[])])?;
    let report = f.apply(&run3, &ApplyOptions::default())?;
    let r = result(&report, "FOLK1A");
    assert_eq!(r.status, ApplyStatus::Failed);
    assert_eq!(r.reason.as_deref(), Some("missing_partition_files"));
    assert_eq!(r.missing_tids, Some(tids(&["2024K4"])));
    Ok(())
}

#[test]
fn schema_mismatch_and_bad_values_roll_back_only_their_table() -> Result<()> {
    let mut f = fx()?;
    // A: the target has no column for KØN
    f.client.batch_execute(
        "CREATE TABLE fact.aaa (omrade text, tid date, indhold double precision);
         INSERT INTO fact.aaa VALUES ('000','2024-04-01',1);",
    )?;
    f.part("AAA", "2024K2", H, &[(&["000", "1", "2024K2"], Some(2.0))])?;
    // B: alder is an integer column but one partition holds IALT
    f.client.batch_execute(
        "CREATE TABLE fact.bbb (alder integer, tid date, indhold double precision);
         INSERT INTO fact.bbb VALUES (5,'2024-04-01',1), (5,'2024-07-01',1);",
    )?;
    let hb = &["ALDER", "TID", "INDHOLD"];
    f.part("BBB", "2024K2", hb, &[(&["7", "2024K2"], Some(2.0))])?;
    f.part(
        "BBB",
        "2024K3",
        hb,
        &[
            (&["8", "2024K3"], Some(2.0)),
            (&["IALT", "2024K3"], Some(3.0)),
        ],
    )?;
    // C: varchar(3) must not take a 4-character code (never truncated)
    f.client.batch_execute(
        "CREATE TABLE fact.ccc (omrade varchar(3), kon text, tid date, indhold double precision);
         INSERT INTO fact.ccc VALUES ('000','1','2024-04-01',1);",
    )?;
    f.part("CCC", "2024K2", H, &[(&["0000", "1", "2024K2"], Some(2.0))])?;
    // D: a NOT NULL target column the partitions do not fill
    f.client.batch_execute(
        "CREATE TABLE fact.ddd (omrade text, kon text, tid date, indhold double precision, enhed text NOT NULL);",
    )?;
    f.part("DDD", "2024K2", H, &[(&["000", "1", "2024K2"], Some(2.0))])?;
    // E: fine
    folk_table(&mut f, "eee")?;
    f.part("EEE", "2024K2", H, &[(&["000", "1", "2024K2"], Some(2.0))])?;

    let run = f.manifest(
        "r1",
        &[
            ("AAA", &["2024K2"], &[]),
            ("BBB", &["2024K2", "2024K3"], &[]),
            ("CCC", &["2024K2"], &[]),
            ("DDD", &["2024K2"], &[]),
            ("EEE", &["2024K2"], &[]),
        ],
    )?;
    let report = f.apply(&run, &ApplyOptions::default())?;
    assert_eq!(report.status, RunStatus::PartialFailure);
    assert_eq!(report.summary.tables_failed, 4);
    assert_eq!(report.summary.tables_applied, 1);

    let err = |t: &str| result(&report, t).error.clone().unwrap_or_default();
    assert_eq!(result(&report, "AAA").status, ApplyStatus::Failed);
    let a = err("AAA");
    assert!(
        a.contains("schema mismatch")
            && a.contains("AAA")
            && a.contains("KØN")
            && a.contains("kon"),
        "{a}"
    );
    assert_eq!(f.dump("aaa")?, vec!["(000,2024-04-01,1)"]);

    let b = err("BBB");
    assert!(
        b.contains("BBB") && b.contains("2024K3") && b.contains("alder") && b.contains("\"IALT\""),
        "{b}"
    );
    // K2 converted fine but the whole table was rolled back
    assert_eq!(f.dump("bbb")?, vec!["(5,2024-04-01,1)", "(5,2024-07-01,1)"]);

    let c = err("CCC");
    assert!(
        c.contains("omrade") && c.contains("\"0000\"") && c.contains("2024K2"),
        "{c}"
    );
    assert_eq!(f.dump("ccc")?, vec!["(000,1,2024-04-01,1)"]);

    let d = err("DDD");
    assert!(d.contains("schema mismatch") && d.contains("enhed"), "{d}");

    assert_eq!(result(&report, "EEE").status, ApplyStatus::Applied);
    assert_eq!(
        f.count("SELECT count(*) FROM fact.eee WHERE tid = '2024-04-01'")?,
        1
    );
    // failed tables keep the `error` of the original's shape; a code the
    // column's type cannot hold is named as a type change (column, old
    // type, offending value), which `--on-schema-change rebuild` widens
    let saved = f.saved_db_apply(&run)?.expect("db_apply written");
    let bj = saved_table(&saved, "BBB");
    assert_eq!(bj["status"], "failed");
    assert!(bj["error"].as_str().is_some_and(|e| e.contains("IALT")));
    assert_eq!(bj["reason"], "type_changed");
    assert_eq!(bj["type_changes"][0]["column"], "alder");
    assert_eq!(bj["type_changes"][0]["old_type"], "integer");
    assert_eq!(bj["type_changes"][0]["value"], "IALT");
    let dj = saved_table(&saved, "DDD");
    assert!(
        dj.get("reason").is_none(),
        "a plain mismatch has no reason: {dj}"
    );
    Ok(())
}

#[test]
fn the_row_count_check_catches_rows_that_never_arrive() -> Result<()> {
    let mut f = fx()?;
    folk_table(&mut f, "folk1a")?;
    // A trigger silently drops every row for kon = 2.
    f.client.batch_execute(
        "CREATE FUNCTION fact.drop_kon2() RETURNS trigger LANGUAGE plpgsql AS
           $$ BEGIN IF NEW.kon = '2' THEN RETURN NULL; END IF; RETURN NEW; END $$;
         CREATE TRIGGER drop_kon2 BEFORE INSERT ON fact.folk1a
           FOR EACH ROW EXECUTE FUNCTION fact.drop_kon2();",
    )?;
    let before = f.dump("folk1a")?;
    f.part(
        "FOLK1A",
        "2024K2",
        H,
        &[
            (&["000", "1", "2024K2"], Some(1.0)),
            (&["000", "2", "2024K2"], Some(2.0)),
        ],
    )?;
    let run = f.manifest("r1", &[("FOLK1A", &["2024K2"], &[])])?;
    let report = f.apply(&run, &ApplyOptions::default())?;
    let r = result(&report, "FOLK1A");
    assert_eq!(r.status, ApplyStatus::Failed, "{r:?}");
    let e = r.error.clone().unwrap_or_default();
    assert!(
        e.contains("row-count")
            && e.contains("2024K2")
            && e.contains("holds 1 rows of the period after the insert, expected 2"),
        "{e}"
    );
    assert_eq!(f.dump("folk1a")?, before, "rolled back");

    // A trigger that keeps old rows from being deleted is caught too.
    folk_table(&mut f, "keep1")?;
    f.client.batch_execute(
        "CREATE FUNCTION fact.keep_old() RETURNS trigger LANGUAGE plpgsql AS
           $$ BEGIN IF OLD.kon = '2' THEN RETURN NULL; END IF; RETURN OLD; END $$;
         CREATE TRIGGER keep_old BEFORE DELETE ON fact.keep1
           FOR EACH ROW EXECUTE FUNCTION fact.keep_old();",
    )?;
    let before = f.dump("keep1")?;
    f.part(
        "KEEP1",
        "2024K2",
        H,
        &[(&["000", "1", "2024K2"], Some(1.0))],
    )?;
    let run = f.manifest("r2", &[("KEEP1", &["2024K2"], &[])])?;
    let report = f.apply(&run, &ApplyOptions::default())?;
    let r = result(&report, "KEEP1");
    assert_eq!(r.status, ApplyStatus::Failed, "{r:?}");
    let e = r.error.clone().unwrap_or_default();
    assert!(e.contains("the delete removed 1 rows but 2"), "{e}");
    assert_eq!(f.dump("keep1")?, before, "rolled back");
    Ok(())
}

#[test]
fn a_dry_run_reports_and_changes_nothing() -> Result<()> {
    let mut f = fx()?;
    folk_table(&mut f, "folk1a")?;
    let before = f.dump("folk1a")?;
    f.part(
        "FOLK1A",
        "2024K3",
        H,
        &[
            (&["000", "1", "2024K3"], Some(1.0)),
            (&["000", "2", "2024K3"], None),
        ],
    )?;
    f.part("NEW1", "2024K3", H, &[(&["000", "1", "2024K3"], Some(1.0))])?;
    let run = f.manifest(
        "r1",
        &[
            ("FOLK1A", &["2024K3"], &["2024K1"]),
            ("NEW1", &["2024K3"], &[]),
        ],
    )?;
    let manifest_before = std::fs::read(
        f.data
            .local_path(&f.data.manifest_key(&run))
            .expect("local"),
    )?;
    let opts = ApplyOptions {
        dry_run: true,
        create_missing: true,
        ..ApplyOptions::default()
    };
    let report = f.apply(&run, &opts)?;
    assert_eq!(report.dry_run, Some(true));
    let r = result(&report, "FOLK1A");
    assert_eq!(r.status, ApplyStatus::Applied);
    let p = r.periods.as_ref().expect("periods");
    assert_eq!((p["2024K3"].deleted, p["2024K3"].inserted), (3, 1));
    assert_eq!((p["2024K1"].deleted, p["2024K1"].inserted), (2, 0));
    assert_eq!((r.deleted_rows, r.inserted_rows), (Some(5), Some(1)));
    let n = result(&report, "NEW1");
    assert_eq!((n.status, n.created), (ApplyStatus::Applied, Some(true)));
    assert_eq!(n.inserted_rows, Some(1));

    assert_eq!(f.dump("folk1a")?, before);
    assert_eq!(
        f.count("SELECT count(*) FROM pg_tables WHERE tablename = 'new1'")?,
        0
    );
    assert_eq!(
        std::fs::read(
            f.data
                .local_path(&f.data.manifest_key(&run))
                .expect("local")
        )?,
        manifest_before
    );
    Ok(())
}

#[test]
fn create_missing_builds_the_table_with_inferred_types_and_indexes() -> Result<()> {
    let mut f = fx()?;
    f.client.batch_execute("DROP SCHEMA fact")?; // created on demand
    let h = &["OMRÅDE", "KØN", "ALDER", "TID", "INDHOLD"];
    f.part(
        "NEWT",
        "2023K4",
        h,
        &[(&["000", "1", "0", "2023K4"], Some(1.0))],
    )?;
    f.part(
        "NEWT",
        "2024K1",
        h,
        &[
            (&["084", "2", "99", "2024K1"], Some(2.5)),
            (&["101", "1", "100-", "2024K1"], Some(3.0)),
            (&["101", "1", "5", "2024K1"], None),
        ],
    )?;
    let run = f.manifest("r1", &[("NEWT", &["2024K1"], &[])])?;
    let report = f.apply(&run, &ApplyOptions::default())?;
    assert_eq!(result(&report, "NEWT").status, ApplyStatus::Skipped);

    let opts = ApplyOptions {
        create_missing: true,
        ..ApplyOptions::default()
    };
    let report = f.apply(&run, &opts)?;
    let r = result(&report, "NEWT");
    assert_eq!(r.status, ApplyStatus::Applied, "{r:?}");
    assert_eq!(r.created, Some(true));
    assert_eq!(r.inserted_rows, Some(3)); // every partition on disk is loaded
    assert_eq!(r.dropped_null_rows, Some(1));
    let types: Vec<(String, String)> = f
        .client
        .query(
            "SELECT a.attname::text, format_type(a.atttypid, a.atttypmod) FROM pg_attribute a
             WHERE a.attrelid = 'fact.newt'::regclass AND a.attnum > 0 ORDER BY a.attnum",
            &[],
        )?
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    let types: Vec<(&str, &str)> = types
        .iter()
        .map(|(a, b)| (a.as_str(), b.as_str()))
        .collect();
    assert_eq!(
        types,
        vec![
            ("omrade", "character varying(3)"), // 000 keeps its zeros
            ("kon", "smallint"),
            ("alder", "smallint"), // one open-ended age: 100- is 100
            ("tid", "date"),
            ("indhold", "double precision"),
        ]
    );
    assert_eq!(
        f.dump("newt")?,
        vec![
            "(000,1,0,2023-10-01,1)",
            "(084,2,99,2024-01-01,2.5)",
            "(101,1,100,2024-01-01,3)",
        ]
    );
    let indexed: Vec<String> = f
        .client
        .query(
            "SELECT indexdef FROM pg_indexes WHERE schemaname = 'fact' AND tablename = 'newt' ORDER BY 1",
            &[],
        )?
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(indexed.len(), 4, "{indexed:?}");
    assert!(indexed.iter().all(|d| d.contains("btree")));
    assert!(!indexed.iter().any(|d| d.contains("indhold")));

    // int4range columns get GiST
    f.part(
        "RANGED",
        "1840:1849",
        &["ALDER", "TID", "INDHOLD"],
        &[
            (&["16-19", "1840:1849"], Some(1.0)),
            (&["95OV", "1840:1849"], Some(2.0)),
        ],
    )?;
    let run = f.manifest("r2", &[("RANGED", &["1840:1849"], &[])])?;
    let report = f.apply(&run, &opts)?;
    assert_eq!(
        result(&report, "RANGED").status,
        ApplyStatus::Applied,
        "{report:?}"
    );
    assert_eq!(
        f.dump("ranged")?,
        vec![
            "(\"[16,20)\",\"[1840,1850)\",1)",
            "(\"[95,)\",\"[1840,1850)\",2)"
        ]
    );
    assert_eq!(
        f.count("SELECT count(*) FROM pg_indexes WHERE tablename = 'ranged' AND indexdef LIKE '%USING gist%'")?,
        2
    );
    Ok(())
}

#[test]
fn every_tid_form_lands_in_its_column_type() -> Result<()> {
    let mut f = fx()?;
    let h = &["OMRÅDE", "TID", "INDHOLD"];
    // (table, tid column type, period, stored text, old stored value)
    let cases: &[(&str, &str, &str, &str)] = &[
        ("YEARLY", "date", "2024", "2024-01-01"),
        ("QUARTERLY", "date", "2024K3", "2024-07-01"),
        ("MONTHLY", "date", "2024M03", "2024-03-01"),
        ("DAILY", "date", "2024M03D05", "2024-03-05"),
        ("HALFYEAR", "date", "2024H2", "2024-07-01"),
        ("INTERVAL", "int4range", "1840:1849", "[1840,1850)"),
        ("WEEKLY", "text", "2024U07", "2024U07"),
        ("SEASON", "varchar(20)", "2019/2020", "2019/2020"),
        ("SEASON2", "text", "AUG - DEC 2019", "AUG - DEC 2019"),
    ];
    let mut run_tables: Vec<(String, Vec<&str>)> = Vec::new();
    for (t, ty, period, stored) in cases {
        let name = t.to_ascii_lowercase();
        f.client.batch_execute(&format!(
            "CREATE TABLE fact.{name} (omrade text, tid {ty}, indhold numeric(10,1));
             CREATE INDEX ON fact.{name} (tid);"
        ))?;
        // an old row of the same period (to be replaced) and of another one (kept)
        f.client.execute(
            &format!("INSERT INTO fact.{name} VALUES ('old', $1::text::{ty}, 0)"),
            &[stored],
        )?;
        f.client.execute(
            &format!("INSERT INTO fact.{name} VALUES ('keep', NULL, 0)"),
            &[],
        )?;
        f.part(t, period, h, &[(&["000", period], Some(12.5))])?;
        run_tables.push((t.to_string(), vec![period]));
    }
    let spec: Vec<(&str, &[&str], &[&str])> = run_tables
        .iter()
        .map(|(t, p)| (t.as_str(), p.as_slice(), &[][..]))
        .collect();
    let run = f.manifest("r1", &spec)?;
    let report = f.apply(&run, &ApplyOptions::default())?;
    for (t, _, _, stored) in cases {
        let r = result(&report, t);
        assert_eq!(r.status, ApplyStatus::Applied, "{t}: {r:?}");
        assert_eq!((r.deleted_rows, r.inserted_rows), (Some(1), Some(1)), "{t}");
        let name = t.to_ascii_lowercase();
        let rows: Vec<(String, Option<String>, String)> = f
            .client
            .query(
                &format!("SELECT omrade, tid::text, indhold::text FROM fact.{name} ORDER BY 1"),
                &[],
            )?
            .iter()
            .map(|r| (r.get(0), r.get(1), r.get(2)))
            .collect();
        assert_eq!(
            rows,
            vec![
                (
                    "000".to_string(),
                    Some(stored.to_string()),
                    "12.5".to_string()
                ),
                ("keep".to_string(), None, "0.0".to_string()),
            ],
            "{t}"
        );
    }
    Ok(())
}

#[test]
fn value_conversions_follow_the_target_types() -> Result<()> {
    let mut f = fx()?;
    f.client.batch_execute(
        "CREATE TABLE fact.conv (alder int4range, kon smallint, tid date, indhold bigint);
         CREATE TABLE fact.ages (alder integer, tid date, indhold real);
         CREATE TABLE fact.toolong (alder smallint, tid date, indhold double precision);",
    )?;
    let h = &["ALDER", "KØN", "TID", "INDHOLD"];
    f.part(
        "CONV",
        "2024",
        h,
        &[
            (&["16-19", "1", "2024"], Some(7.0)),
            (&["95-", "2", "2024"], Some(8.0)),
            (&["-15", "2", "2024"], Some(9.0)),
        ],
    )?;
    let ha = &["ALDER", "TID", "INDHOLD"];
    f.part("AGES", "2024", ha, &[(&["100-", "2024"], Some(1.5))])?;
    f.part("TOOLONG", "2024", ha, &[(&["40000", "2024"], Some(1.0))])?;
    let run = f.manifest(
        "r1",
        &[
            ("CONV", &["2024"], &[]),
            ("AGES", &["2024"], &[]),
            ("TOOLONG", &["2024"], &[]),
        ],
    )?;
    let report = f.apply(&run, &ApplyOptions::default())?;
    assert_eq!(
        result(&report, "CONV").status,
        ApplyStatus::Applied,
        "{report:?}"
    );
    assert_eq!(
        f.dump("conv")?,
        vec![
            "(\"(,16)\",2,2024-01-01,9)",
            "(\"[16,20)\",1,2024-01-01,7)",
            "(\"[95,)\",2,2024-01-01,8)",
        ]
    );
    assert_eq!(f.dump("ages")?, vec!["(100,2024-01-01,1.5)"]);
    let e = result(&report, "TOOLONG").error.clone().unwrap_or_default();
    assert!(
        e.contains("alder") && e.contains("40000") && e.contains("range"),
        "{e}"
    );
    Ok(())
}

#[test]
fn a_deleted_period_is_removed() -> Result<()> {
    let mut f = fx()?;
    folk_table(&mut f, "folk1a")?;
    f.part(
        "FOLK1A",
        "2024K3",
        H,
        &[(&["000", "1", "2024K3"], Some(1.0))],
    )?;
    let run = f.manifest("r1", &[("FOLK1A", &["2024K3"], &["2024K1"])])?;
    let report = f.apply(&run, &ApplyOptions::default())?;
    let r = result(&report, "FOLK1A");
    assert_eq!(r.status, ApplyStatus::Applied, "{r:?}");
    assert_eq!(r.deleted_tids, Some(tids(&["2024K1"])));
    let p = r.periods.as_ref().expect("periods");
    assert_eq!((p["2024K1"].deleted, p["2024K1"].inserted), (2, 0));
    assert_eq!(r.deleted_rows, Some(5));
    assert_eq!(
        f.count("SELECT count(*) FROM fact.folk1a WHERE tid = '2024-01-01'")?,
        0
    );
    assert_eq!(f.count("SELECT count(*) FROM fact.folk1a")?, 3);

    // only a deletion, no changed period
    let run = f.manifest("r2", &[("FOLK1A", &[], &["2024K2"])])?;
    let report = f.apply(&run, &ApplyOptions::default())?;
    assert_eq!(
        result(&report, "FOLK1A").deleted_rows,
        Some(2),
        "{report:?}"
    );
    assert_eq!(f.count("SELECT count(*) FROM fact.folk1a")?, 1);
    Ok(())
}

#[test]
fn applying_the_same_run_twice_gives_the_same_table() -> Result<()> {
    let mut f = fx()?;
    folk_table(&mut f, "folk1a")?;
    f.part(
        "FOLK1A",
        "2024K2",
        H,
        &[
            (&["000", "1", "2024K2"], Some(1.0)),
            (&["000", "2", "2024K2"], Some(2.0)),
            (&["101", "2", "2024K2"], Some(3.0)),
        ],
    )?;
    let run = f.manifest("r1", &[("FOLK1A", &["2024K2"], &[])])?;
    let first = f.apply(&run, &ApplyOptions::default())?;
    let after_first = f.dump("folk1a")?;
    let second = f.apply(&run, &ApplyOptions::default())?;
    assert_eq!(f.dump("folk1a")?, after_first);
    let (a, b) = (result(&first, "FOLK1A"), result(&second, "FOLK1A"));
    assert_eq!((a.deleted_rows, a.inserted_rows), (Some(2), Some(3)));
    assert_eq!((b.deleted_rows, b.inserted_rows), (Some(3), Some(3)));
    Ok(())
}

#[test]
fn a_run_without_changes_records_no_changed_tids() -> Result<()> {
    let mut f = fx()?;
    let run = f.manifest("r1", &[("FOLK1A", &[], &[])])?;
    let report = f.apply(&run, &ApplyOptions::default())?;
    assert_eq!(report.status, RunStatus::Skipped);
    assert_eq!(
        f.saved_db_apply(&run)?.expect("written"),
        serde_json::json!({"run_id":"r1","status":"skipped","reason":"no_changed_tids",
            "summary":{"tables_total":0,"tables_applied":0,"tables_skipped":0,"tables_failed":0}})
    );
    Ok(())
}

#[test]
fn a_row_of_another_period_fails_the_table() -> Result<()> {
    let mut f = fx()?;
    folk_table(&mut f, "folk1a")?;
    let before = f.dump("folk1a")?;
    f.part(
        "FOLK1A",
        "2024K2",
        H,
        &[
            (&["000", "1", "2024K2"], Some(1.0)),
            (&["000", "1", "2024K4"], Some(1.0)),
        ],
    )?;
    let run = f.manifest("r1", &[("FOLK1A", &["2024K2"], &[])])?;
    let report = f.apply(&run, &ApplyOptions::default())?;
    let r = result(&report, "FOLK1A");
    assert_eq!(r.status, ApplyStatus::Failed);
    assert!(r.error.as_deref().unwrap_or("").contains("2024K4"), "{r:?}");
    assert_eq!(f.dump("folk1a")?, before);
    Ok(())
}

#[test]
fn the_delete_compares_typed_values_so_the_tid_index_is_usable() -> Result<()> {
    let mut f = fx()?;
    folk_table(&mut f, "folk1a")?;
    f.part(
        "FOLK1A",
        "2024K2",
        H,
        &[(&["000", "1", "2024K2"], Some(1.0))],
    )?;
    let run = f.manifest("r1", &[("FOLK1A", &["2024K2"], &[])])?;
    let idx_scans = |f: &mut Fx| -> Result<i64> {
        // stats of this backend reach the shared counters at the end of the
        // next transaction after the forced flush
        f.client
            .batch_execute("SELECT pg_stat_force_next_flush()")?;
        f.count(
            "SELECT coalesce(sum(idx_scan), 0)::bigint FROM pg_stat_user_indexes \
             WHERE relname = 'folk1a' AND indexrelname LIKE '%tid%'",
        )
    };
    // With sequential scans off, only a comparison the index can serve
    // (tid = ANY(date[]), not tid::text = ...) gets an index scan.
    f.client.batch_execute("SET enable_seqscan = off")?;
    let before = idx_scans(&mut f)?;
    let report = f.apply(&run, &ApplyOptions::default())?;
    assert_eq!(result(&report, "FOLK1A").status, ApplyStatus::Applied);
    let after = idx_scans(&mut f)?;
    // count before the delete, the delete, the count after the insert
    assert!(
        after - before >= 3,
        "index scans went from {before} to {after}"
    );

    // the same statement with the original's text comparison would not use it
    let before = idx_scans(&mut f)?;
    f.client.execute(
        "DELETE FROM fact.folk1a WHERE tid::text = ANY($1)",
        &[&vec!["2024-04-01".to_string()]],
    )?;
    assert_eq!(idx_scans(&mut f)?, before);
    Ok(())
}

#[test]
fn two_periods_with_the_same_tid_value_fail_before_any_write() -> Result<()> {
    let mut f = fx()?;
    f.client.batch_execute(
        "CREATE TABLE fact.mixed (omrade text, tid date, indhold double precision);
         INSERT INTO fact.mixed VALUES ('old', '2024-01-01', 1);",
    )?;
    let h = &["OMRÅDE", "TID", "INDHOLD"];
    f.part("MIXED", "2024M01", h, &[(&["000", "2024M01"], Some(1.0))])?;
    f.part(
        "MIXED",
        "2024M01D01",
        h,
        &[(&["000", "2024M01D01"], Some(2.0))],
    )?;
    let run = f.manifest("r1", &[("MIXED", &["2024M01", "2024M01D01"], &[])])?;
    let report = f.apply(&run, &ApplyOptions::default())?;
    let r = result(&report, "MIXED");
    assert_eq!(r.status, ApplyStatus::Failed);
    let e = r.error.clone().unwrap_or_default();
    assert!(
        e.contains("2024M01") && e.contains("2024M01D01") && e.contains("2024-01-01"),
        "{e}"
    );
    assert_eq!(f.dump("mixed")?, vec!["(old,2024-01-01,1)"]);
    Ok(())
}
