//! A hostile upstream and a careless operator, end to end against the
//! emulator and a real Postgres: ids no real table has never reach a
//! name, the apply never drops, writes into or overwrites a relation that
//! is not its own, a new period never silently replaces another, and a
//! malformed catalog entry, a hostile body or a redirect elsewhere costs
//! only what it touches.

use fact_apply::ApplyOptions;
use statbank_client::emulator::{EmuTable, EmuVariable, Endpoint, Fault, FaultKind, World};
use sync_state::{ApplyStatus, RunStatus, TableId, TableStatus};
use tests::e2e::{create, Setup};

fn id(s: &str) -> TableId {
    TableId::new(s).expect("id")
}

fn partitioned() -> ApplyOptions {
    ApplyOptions {
        create_missing: true,
        partitioned: true,
        ..ApplyOptions::default()
    }
}

fn quarters() -> Vec<&'static str> {
    vec!["2023K1", "2023K2", "2023K3", "2023K4"]
}

/// A catalog table `S__STAGE0` (once accepted: ids could hold `_`) is set
/// aside; and a table of that name made by hand survives the partition
/// swap of `S`, which used to drop it before creating its staging table.
#[test]
fn a_partition_swap_never_drops_a_table_it_did_not_create() {
    let mut w = World::new();
    w.insert(EmuTable::synthetic("S", &quarters(), &[("OMRÅDE", 4)]));
    let mut evil = EmuTable::synthetic("EVIL", &quarters(), &[("OMRÅDE", 4)]);
    evil.id = "S__STAGE0".into();
    w.insert(evil);
    let mut s = Setup::new(w);
    let m = s.sync(0);
    assert_eq!(m.status, RunStatus::PartialFailure, "the id is reported");
    let invalid = format!("{:?}", m.catalog.invalid_entries);
    assert!(invalid.contains("S__STAGE0"), "{invalid}");
    assert_eq!(m.tables[&id("S")].status, TableStatus::Synced);
    let r = s.apply(&m.run_id, &partitioned());
    assert_eq!(r.status, RunStatus::Success, "{:?}", r.tables);
    // Someone's own table that happens to have the staging name.
    s.pg.batch_execute(
        "CREATE TABLE fact.s__stage0 (x int); INSERT INTO fact.s__stage0 VALUES (42)",
    )
    .expect("a table of the operator's");
    let before = s.count("SELECT sum(indhold)::bigint FROM fact.s");
    let h = s.emu.handle();
    h.revise_period("S", "2023K4");
    h.set_updated("S", "2026-02-01T08:00:00");
    let m = s.sync(24);
    assert_eq!(m.tables[&id("S")].changed_tids.len(), 1);
    let r = s.apply(&m.run_id, &partitioned());
    assert_eq!(r.status, RunStatus::Success, "{:?}", r.tables);
    assert_eq!(
        r.tables.as_ref().map(|t| t[0].partition_swap),
        Some(Some(true))
    );
    assert_ne!(s.count("SELECT sum(indhold)::bigint FROM fact.s"), before);
    assert_eq!(
        s.count("SELECT sum(x)::bigint FROM fact.s__stage0"),
        42,
        "the operator's table is untouched"
    );
}

/// A relation that is a partition of another table is never a fact
/// table, whatever its name: `Q`'s apply skips it (and its create fails)
/// instead of deleting and replacing `P`'s rows.
#[test]
fn a_partition_of_another_table_is_never_taken_for_a_fact_table() {
    let mut w = World::new();
    w.insert(EmuTable::synthetic("P", &["2022", "2023"], &[("X", 3)]));
    w.insert(EmuTable::synthetic("Q", &["2023"], &[("X", 3)]));
    let mut s = Setup::new(w);
    s.emu.handle().remove_table("Q");
    let m = s.sync(0);
    let r = s.apply(&m.run_id, &partitioned());
    assert_eq!(r.status, RunStatus::Success, "{:?}", r.tables);
    // A partition of P named `q` (by hand: no name the apply gives one
    // can be a table id's).
    s.pg.batch_execute(
        "CREATE TABLE fact.q PARTITION OF fact.p FOR VALUES IN ('2030-01-01'); \
         INSERT INTO fact.p (x, tid, indhold) VALUES ('TOT', '2030-01-01', 7)",
    )
    .expect("a partition named q");
    let p_rows = s.count("SELECT count(*) FROM fact.p");
    s.emu
        .handle()
        .add_table(EmuTable::synthetic("Q", &["2023"], &[("X", 3)]));
    let m = s.sync(24);
    assert_eq!(m.tables[&id("Q")].status, TableStatus::Synced);
    let r = s.apply(&m.run_id, &ApplyOptions::default());
    let q = r
        .tables
        .iter()
        .flatten()
        .find(|t| t.table == id("Q"))
        .expect("Q");
    assert_eq!(q.status, ApplyStatus::Skipped);
    assert_eq!(q.reason.as_deref(), Some("missing_fact_table"));
    let r = s.apply(&m.run_id, &create());
    let q = r
        .tables
        .iter()
        .flatten()
        .find(|t| t.table == id("Q"))
        .expect("Q");
    assert_eq!(q.status, ApplyStatus::Failed, "{q:?}");
    assert_eq!(s.count("SELECT count(*) FROM fact.p"), p_rows);
    assert_eq!(
        s.count("SELECT count(*) FROM fact.p WHERE tid = '2030-01-01'"),
        1
    );
}

/// `2024K1` and the stored `2024` are both 2024-01-01 in a `date` column:
/// the apply fails the table naming both codes and leaves its rows alone
/// (it used to delete 2024's rows and load 2024K1's in their place), on a
/// plain and on a partitioned fact table.
#[test]
fn a_new_period_with_the_date_of_a_stored_one_fails_naming_both() {
    for new in ["2024K1", "2024M01"] {
        for created in [create(), partitioned()] {
            let mut w = World::new();
            w.insert(EmuTable::synthetic("YEARS", &["2023", "2024"], &[("X", 3)]));
            let mut s = Setup::new(w);
            let m = s.sync(0);
            let r = s.apply(&m.run_id, &created);
            assert_eq!(r.status, RunStatus::Success, "{:?}", r.tables);
            let rows = "SELECT count(*) FROM fact.years WHERE tid = '2024-01-01'";
            let before = s.count(rows);
            s.emu.handle().add_period("YEARS", new);
            s.emu.handle().set_updated("YEARS", "2026-02-01T08:00:00");
            let m = s.sync(24);
            assert!(m.tables[&id("YEARS")]
                .changed_tids
                .iter()
                .any(|t| t.as_str() == new));
            let r = s.apply(&m.run_id, &ApplyOptions::default());
            let t = &r.tables.as_ref().expect("tables")[0];
            assert_eq!(t.status, ApplyStatus::Failed, "{t:?}");
            let e = t.error.as_deref().unwrap_or("");
            assert!(e.contains(&format!("periods {new} and 2024 ")), "{e}");
            assert_eq!(s.count(rows), before, "2024's rows are untouched");
        }
    }
}

/// Period codes that differ only in case or punctuation get partitions of
/// their own: the partitioned create used to fail for good.
#[test]
fn periods_alike_but_for_case_or_punctuation_get_partitions_of_their_own() {
    let mut w = World::new();
    w.insert(EmuTable::synthetic(
        "SEASONS",
        &["2020/2021", "2020-2021", "2023k1", "2023K1"],
        &[("X", 3)],
    ));
    let mut s = Setup::new(w);
    let m = s.sync(0);
    let r = s.apply(&m.run_id, &partitioned());
    assert_eq!(r.status, RunStatus::Success, "{:?}", r.tables);
    assert_eq!(
        s.count("SELECT count(*) FROM pg_inherits WHERE inhparent = 'fact.seasons'::regclass"),
        4
    );
    assert_eq!(s.count("SELECT count(DISTINCT tid) FROM fact.seasons"), 4);
}

/// One malformed catalog entry (an id that is no string, a missing or
/// null `updated`, `active: "yes"`, an entry that is not an object, an
/// `updated` that is no instant) is set aside alone; the others sync.
#[test]
fn malformed_catalog_entries_are_set_aside_one_by_one() {
    let mut w = World::new();
    w.insert(EmuTable::synthetic("GOOD", &["2023"], &[("X", 2)]));
    let s = Setup::new(w);
    let good = r#"{"id":"GOOD","text":"t","unit":"u","updated":"2026-01-01T08:00:00","firstPeriod":"2023","latestPeriod":"2023","active":true,"variables":["x","tid"]}"#;
    let body = format!(
        r#"[{good},{{"id":17,"updated":"2026-01-01T08:00:00"}},{{"id":"NOUPD"}},{{"id":"NULLUPD","updated":null}},{{"id":"YES","updated":"2026-01-01T08:00:00","active":"yes"}},"not an object",{{"id":"BADTIME","updated":"tomorrow"}}]"#
    );
    s.emu.handle().add_fault(Fault::always(
        Endpoint::Tables,
        FaultKind::RawBody {
            content_type: "text/json; charset=utf-8".into(),
            body: body.into_bytes(),
        },
    ));
    let m = s.sync(0);
    assert_eq!(m.status, RunStatus::PartialFailure);
    assert_eq!(m.tables[&id("GOOD")].status, TableStatus::Synced);
    let invalid = m.catalog.invalid_entries.clone().expect("listed");
    assert_eq!(invalid.len(), 6, "{invalid:?}");
    let text = serde_json::to_string(&invalid).expect("json");
    for what in ["NOUPD", "NULLUPD", "YES", "BADTIME", "not an object", "17"] {
        assert!(text.contains(what), "{what}: {text}");
    }
}

/// A variable whose column Postgres cannot have fails the table in the
/// sync, before any data request, naming the limit.
#[test]
fn variables_the_apply_could_not_load_fail_the_sync_naming_the_limit() {
    let mut w = World::new();
    let mut sys = EmuTable::synthetic("SYSCOL", &["2023"], &[("X", 2)]);
    sys.variables.push(EmuVariable {
        id: "CTID".into(),
        text: "ctid".into(),
        elimination: true,
        map: None,
        values: sys.variables[0].values.clone(),
    });
    w.insert(sys);
    let mut long = EmuTable::synthetic("LONGCOL", &["2023"], &[("X", 2)]);
    long.variables[0].id = "V".repeat(64);
    w.insert(long);
    let s = Setup::new(w);
    let m = s.sync(0);
    for (t, limit) in [("SYSCOL", "reserved"), ("LONGCOL", "at most 63 bytes")] {
        let r = &m.tables[&id(t)];
        assert_eq!(r.status, TableStatus::Failed, "{r:?}");
        assert!(r.error.as_deref().unwrap_or("").contains(limit), "{r:?}");
    }
    let data_requests = s
        .emu
        .handle()
        .requests()
        .iter()
        .filter(|r| r.endpoint == Some(Endpoint::Data))
        .count();
    assert_eq!(data_requests, 0);
}

/// A body whose codes hold a NUL byte or a byte order mark after its
/// first line is refused, naming table, line and column; nothing is
/// published.
#[test]
fn bodies_with_nul_bytes_or_a_late_bom_are_refused() {
    let mut w = World::new();
    w.insert(EmuTable::synthetic("NULS", &["2023"], &[("X", 2)]));
    let s = Setup::new(w);
    for body in [
        b"X;TID;INDHOLD\r\nTOT;2023;1\r\n1\x00;2023;2\r\n".to_vec(),
        b"X;TID;INDHOLD\r\nTOT;2023;1\r\n\xEF\xBB\xBF1;2023;2\r\n".to_vec(),
    ] {
        s.emu.handle().clear_faults();
        s.emu.handle().add_fault(Fault::always(
            Endpoint::Data,
            FaultKind::RawBody {
                content_type: "text/csv; charset=utf-8".into(),
                body,
            },
        ));
        let m = s.sync(0);
        let r = &m.tables[&id("NULS")];
        assert_eq!(r.status, TableStatus::Failed, "{r:?}");
        let e = r.error.as_deref().unwrap_or("");
        assert!(
            e.contains("NULS") && e.contains("line 3") && e.contains("column X"),
            "{e}"
        );
        assert!(tests::sync::snapshot(s.tmp.path()).is_empty());
    }
}

/// A redirect to another origin is refused (a 307 would repeat the POST
/// there); one within the base URL's origin is followed.
#[test]
fn redirects_are_followed_only_within_the_origin() {
    let mut w = World::new();
    w.insert(EmuTable::synthetic("REDIR", &["2023"], &[("X", 2)]));
    let s = Setup::new(w);
    let h = s.emu.handle();
    h.add_fault(Fault::times(
        Endpoint::Data,
        FaultKind::Redirect {
            status: 307,
            location: "http://127.0.0.2:9/v1/data".into(),
        },
        1,
    ));
    let m = s.sync(0);
    let r = &m.tables[&id("REDIR")];
    assert_eq!(r.status, TableStatus::Failed, "{r:?}");
    assert!(
        r.error.as_deref().unwrap_or("").contains("another origin"),
        "{r:?}"
    );
    h.clear_faults();
    h.add_fault(Fault::times(
        Endpoint::Data,
        FaultKind::Redirect {
            status: 307,
            location: format!("{}/data", s.emu.base_url()),
        },
        1,
    ));
    let m = s.sync(24);
    assert_eq!(
        m.tables[&id("REDIR")].status,
        TableStatus::Synced,
        "{:?}",
        m.tables
    );
}

/// A last catalog poll recorded in the future (clock skew, a hand edit)
/// does not keep the weekly gate closed.
#[test]
fn a_last_poll_in_the_future_is_due() {
    let mut w = World::new();
    w.insert(EmuTable::synthetic("GATE", &["2023"], &[("X", 2)]));
    let s = Setup::new(w);
    s.sync(0);
    let data = s.data();
    let mut state = sync_state::SyncState::load(&data).expect("state");
    state.last_catalog_poll_at = Some(tests::sync::at_hours(24 * 365).into());
    state.save(&data).expect("save");
    let mut o = s.opts(48);
    o.gate.force = false;
    let m = s.sync_with(&o);
    assert!(m.catalog.polled, "{:?}", m.catalog);
}
