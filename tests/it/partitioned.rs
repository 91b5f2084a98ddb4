//! Fact tables LIST-partitioned on `tid`: created by `--create-missing
//! --partitioned`, and applied by swapping whole partitions (staging table,
//! binary COPY, indexes, CHECK, DETACH/ATTACH/DROP in one transaction).
//! A reader running through the apply sees every period, old or new
//! content, never a missing or half-loaded one; no dead tuples are left.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use fact_apply::{apply_run, ApplyOptions};
use sync_state::{ApplyStatus, RunStatus};
use tests::apply_fx::{fx, result, Fx, Row};

const HEADERS: &[&str] = &["OMRÅDE", "KØN", "TID", "INDHOLD"];
const AREAS: usize = 200;

fn quarter(i: usize) -> String {
    format!("{}K{}", 2020 + i / 4, i % 4 + 1)
}

/// A period's rows: `AREAS` × 2 codes, values offset by `v`.
fn write_period(f: &Fx, t: &str, period: &str, v: f64) {
    let areas: Vec<String> = (0..AREAS).map(|a| format!("{a:03}")).collect();
    let codes: Vec<[&str; 3]> = areas
        .iter()
        .flat_map(|a| [[a.as_str(), "1", period], [a.as_str(), "2", period]])
        .collect();
    let rows: Vec<Row<'_>> = codes
        .iter()
        .enumerate()
        .map(|(i, c)| (&c[..], Some(v + i as f64)))
        .collect();
    f.part(t, period, HEADERS, &rows).expect("partition");
}

fn create(partitioned: bool) -> ApplyOptions {
    ApplyOptions {
        create_missing: true,
        partitioned,
        ..ApplyOptions::default()
    }
}

fn count(f: &mut Fx, sql: &str) -> i64 {
    f.client.query_one(sql, &[]).expect(sql).get(0)
}

/// The partitions of `fact.<t>` by name, with their bounds.
fn partitions(f: &mut Fx, t: &str) -> BTreeMap<String, String> {
    f.client
        .query(
            "SELECT c.relname::text, pg_get_expr(c.relpartbound, c.oid) \
             FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid \
             WHERE i.inhparent = $1::text::regclass",
            &[&format!("fact.{t}")],
        )
        .expect("partitions")
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect()
}

/// Rows per period and their value sums.
fn per_period(c: &mut postgres::Client, t: &str) -> Result<BTreeMap<String, (i64, f64)>, String> {
    c.query(
        &format!("SELECT tid::text, count(*), sum(indhold) FROM fact.{t} GROUP BY 1"),
        &[],
    )
    .map_err(|e| e.to_string())
    .map(|rows| {
        rows.iter()
            .map(|r| (r.get(0), (r.get(1), r.get(2))))
            .collect()
    })
}

/// Dead tuples in `fact.<t>` and its partitions, after flushing this
/// backend's statistics.
fn dead_tuples(f: &mut Fx, t: &str) -> i64 {
    f.client
        .batch_execute("SELECT pg_stat_force_next_flush()")
        .expect("flush");
    let sql = format!(
        "SELECT coalesce(sum(n_dead_tup), 0)::bigint FROM pg_stat_user_tables \
         WHERE relid = 'fact.{t}'::regclass \
            OR relid IN (SELECT inhrelid FROM pg_inherits WHERE inhparent = 'fact.{t}'::regclass)"
    );
    // The statistics collector may lag a moment behind the flush.
    let mut n = count(f, &sql);
    for _ in 0..20 {
        if n > 0 {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
        n = count(f, &sql);
    }
    n
}

#[test]
fn create_missing_partitioned_makes_one_partition_per_period_with_the_indexes() {
    let mut f = fx().expect("fixture");
    let periods: Vec<String> = (0..6).map(quarter).collect();
    for p in &periods {
        write_period(&f, "PARTA", p, 0.0);
    }
    let refs: Vec<&str> = periods.iter().map(String::as_str).collect();
    let run = f.manifest("run1", &[("PARTA", &refs, &[])]).expect("m");
    let r = apply_run(&mut f.client, &f.data, &run, &create(true)).expect("apply");
    assert_eq!(r.status, RunStatus::Success);
    assert_eq!(result(&r, "PARTA").created, Some(true));
    assert_eq!(
        count(
            &mut f,
            "SELECT count(*) FROM pg_class WHERE oid = 'fact.parta'::regclass AND relkind = 'p'"
        ),
        1,
        "the parent is a partitioned table"
    );
    let parts = partitions(&mut f, "parta");
    assert_eq!(parts.len(), 6, "{parts:?}");
    assert_eq!(
        parts.get("parta_2020K1").map(String::as_str),
        Some("FOR VALUES IN ('2020-01-01')")
    );
    assert_eq!(count(&mut f, "SELECT count(*) FROM fact.parta"), 6 * 400);
    // The parent's indexes (omrade, kon, tid) exist on every partition.
    assert_eq!(
        count(
            &mut f,
            "SELECT count(*) FROM pg_indexes WHERE schemaname = 'fact' AND tablename = 'parta_2021K2'"
        ),
        3
    );
}

#[test]
fn a_partitioned_table_swaps_periods_with_readers_never_missing_one_and_no_dead_tuples() {
    let mut f = fx().expect("fixture");
    let periods: Vec<String> = (0..8).map(quarter).collect();
    for p in &periods {
        write_period(&f, "PARTB", p, 0.0);
        write_period(&f, "PLAINB", p, 0.0);
    }
    let refs: Vec<&str> = periods.iter().map(String::as_str).collect();
    let opts = |partitioned| ApplyOptions {
        history: true,
        ..create(partitioned)
    };
    // Two runs so each table gets its own shape.
    let run_p = f.manifest("run1p", &[("PARTB", &refs, &[])]).expect("m");
    let run_q = f.manifest("run1q", &[("PLAINB", &refs, &[])]).expect("m");
    apply_run(&mut f.client, &f.data, &run_p, &opts(true)).expect("apply");
    apply_run(&mut f.client, &f.data, &run_q, &opts(false)).expect("apply");
    let before = per_period(&mut f.client, "partb").expect("read");
    assert_eq!(before.len(), 8);

    // Revise three periods, add one, remove the first.
    for p in &periods[5..8] {
        write_period(&f, "PARTB", p, 1000.0);
        write_period(&f, "PLAINB", p, 1000.0);
    }
    let new = quarter(8);
    write_period(&f, "PARTB", &new, 5.0);
    write_period(&f, "PLAINB", &new, 5.0);
    for t in ["PARTB", "PLAINB"] {
        f.store
            .remove_periods(
                &tests::apply_fx::table(t),
                &[tests::apply_fx::tid(&periods[0])],
                &Default::default(),
            )
            .expect("remove");
    }
    let changed = [
        periods[5].as_str(),
        periods[6].as_str(),
        periods[7].as_str(),
        new.as_str(),
    ];
    let deleted = [periods[0].as_str()];
    let run2 = f
        .manifest(
            "run2",
            &[
                ("PARTB", &changed, &deleted),
                ("PLAINB", &changed, &deleted),
            ],
        )
        .expect("m");

    let stop = Arc::new(AtomicBool::new(false));
    let reader = {
        let (url, stop) = (f.db.url().to_string(), stop.clone());
        std::thread::spawn(move || {
            let mut c = postgres::Client::connect(&url, postgres::NoTls).expect("reader");
            let mut reads = Vec::new();
            while !stop.load(Ordering::SeqCst) {
                reads.push(per_period(&mut c, "partb"));
            }
            reads
        })
    };
    std::thread::sleep(std::time::Duration::from_millis(50));
    let r = apply_run(&mut f.client, &f.data, &run2, &opts(true)).expect("apply");
    std::thread::sleep(std::time::Duration::from_millis(50));
    stop.store(true, Ordering::SeqCst);
    let reads = reader.join().expect("reader");

    let t = result(&r, "PARTB");
    assert_eq!(t.status, ApplyStatus::Applied, "{:?}", t.error);
    assert_eq!(t.partition_swap, Some(true));
    let p = result(&r, "PLAINB");
    assert_eq!(p.status, ApplyStatus::Applied, "{:?}", p.error);
    assert_ne!(
        p.partition_swap,
        Some(true),
        "plain tables keep the row path"
    );

    let after = per_period(&mut f.client, "partb").expect("read");
    assert_eq!(
        after,
        per_period(&mut f.client, "plainb").expect("read"),
        "swapped and row-applied tables hold the same data"
    );
    assert!(
        !after.contains_key("2020-01-01"),
        "the removed period is gone"
    );
    assert_eq!(after.len(), 8);
    assert!(after["2021-04-01"].1 > before["2021-04-01"].1, "revised");
    let parts = partitions(&mut f, "partb");
    assert!(parts.contains_key("partb_2022K1"), "{parts:?}");
    assert!(!parts.contains_key("partb_2020K1"), "{parts:?}");
    assert_eq!(parts.len(), 8);

    // Every read saw every period that exists before and after, with all
    // of its rows, either the old or the new values.
    assert!(!reads.is_empty());
    for read in &reads {
        let read = read.as_ref().expect("the reader never fails");
        for (tid, old) in before.iter().filter(|(t, _)| after.contains_key(*t)) {
            let seen = read
                .get(tid)
                .unwrap_or_else(|| panic!("period {tid} missing in a read: {read:?}"));
            assert!(seen == old || seen == &after[tid], "{tid}: {seen:?}");
        }
    }

    // The swap leaves no dead tuples; the row path leaves the replaced ones.
    assert_eq!(dead_tuples(&mut f, "partb"), 0);
    assert!(dead_tuples(&mut f, "plainb") >= 3 * 400);
    // The parent's indexes are on the swapped-in partitions too.
    assert_eq!(
        count(
            &mut f,
            "SELECT count(*) FROM pg_indexes WHERE schemaname = 'fact' AND tablename = 'partb_2021K2'"
        ),
        3
    );
    // History recorded the new versions from the new partitions.
    assert!(
        t.history_rows.unwrap_or(0) >= 4 * 400,
        "{:?}",
        t.history_rows
    );
}

#[test]
fn a_dry_run_on_a_partitioned_table_changes_nothing() {
    let mut f = fx().expect("fixture");
    for p in ["2024K1", "2024K2"] {
        write_period(&f, "PARTC", p, 0.0);
    }
    let run = f
        .manifest("run1", &[("PARTC", &["2024K1", "2024K2"], &[])])
        .expect("m");
    apply_run(&mut f.client, &f.data, &run, &create(true)).expect("apply");
    write_period(&f, "PARTC", "2024K2", 50.0);
    let run2 = f
        .manifest("run2", &[("PARTC", &["2024K2"], &[])])
        .expect("m");
    let before = f.dump("partc").expect("dump");
    let r = apply_run(
        &mut f.client,
        &f.data,
        &run2,
        &ApplyOptions {
            dry_run: true,
            ..ApplyOptions::default()
        },
    )
    .expect("dry run");
    assert_eq!(result(&r, "PARTC").status, ApplyStatus::Applied);
    assert_eq!(f.dump("partc").expect("dump"), before);
    assert_eq!(partitions(&mut f, "partc").len(), 2);
}
