use std::sync::Arc;

use arrow_array::{Array, Float64Array, RecordBatch, StringArray};
use proptest::prelude::*;
use sync_state::{TableId, Tid};

use crate::*;

fn tid(s: &str) -> Tid {
    Tid::new(s).expect("tid")
}

fn table() -> TableId {
    TableId::new("FOLK1A").expect("id")
}

fn batch(rows: &[(&str, &str, Option<f64>)]) -> RecordBatch {
    let schema = partition_schema(&["OMRÅDE", "TID", "INDHOLD"]);
    RecordBatch::try_new(
        schema,
        vec![
            Arc::new(StringArray::from(
                rows.iter().map(|r| r.0).collect::<Vec<_>>(),
            )),
            Arc::new(StringArray::from(
                rows.iter().map(|r| r.1).collect::<Vec<_>>(),
            )),
            Arc::new(Float64Array::from(
                rows.iter().map(|r| r.2).collect::<Vec<_>>(),
            )),
        ],
    )
    .expect("batch")
}

fn read_all(store: &PartitionStore, t: &Tid) -> Vec<(String, String, Option<f64>)> {
    let mut out = Vec::new();
    for b in store.read_partition(&table(), t).expect("open") {
        let b = b.expect("batch");
        let a = b
            .column(0)
            .as_any()
            .downcast_ref::<StringArray>()
            .expect("s");
        let tc = b
            .column(1)
            .as_any()
            .downcast_ref::<StringArray>()
            .expect("s");
        let v = b
            .column(2)
            .as_any()
            .downcast_ref::<Float64Array>()
            .expect("f");
        for i in 0..b.num_rows() {
            out.push((
                a.value(i).to_string(),
                tc.value(i).to_string(),
                (!v.is_null(i)).then(|| v.value(i)),
            ));
        }
    }
    out
}

fn run_request(
    store: &PartitionStore,
    requested: &[Tid],
    batches: &[RecordBatch],
) -> Result<PublishOutcome, Error> {
    let schema = batches[0].schema();
    let mut w = RequestWriter::new(store, &table(), schema, requested, WriteLimits::default())?;
    for b in batches {
        w.write(b)?;
    }
    let staged = w.finish()?;
    let plan = staged.compare();
    staged.publish(&plan)
}

fn no_temp_files(store: &PartitionStore) -> bool {
    std::fs::read_dir(store.table_dir(&table()))
        .expect("dir")
        .all(|e| {
            !e.expect("entry")
                .file_name()
                .to_string_lossy()
                .starts_with(TEMP_PREFIX)
        })
}

#[test]
fn splits_by_tid_and_writes_empty_partitions_for_requested_periods() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = PartitionStore::new(dir.path());
    let req = [tid("2024K1"), tid("2024K2"), tid("2024K3")];
    let out = run_request(
        &store,
        &req,
        &[batch(&[
            ("000", "2024K1", Some(1.0)),
            ("101", "2024K1", None),
            ("000", "2024K2", Some(2.5)),
        ])],
    )
    .expect("request");
    assert_eq!(out.changed.len(), 3);
    assert_eq!(
        read_all(&store, &req[0]),
        vec![
            ("000".into(), "2024K1".into(), Some(1.0)),
            ("101".into(), "2024K1".into(), None)
        ]
    );
    assert_eq!(read_all(&store, &req[2]), vec![]);
    let footer = store.footer(&table(), &req[2]).expect("footer");
    assert_eq!(footer.rows, 0);
    assert_eq!(footer.columns, vec!["OMRÅDE", "TID", "INDHOLD"]);
    assert!(no_temp_files(&store));
    assert_eq!(
        store.list_tids(&table()).expect("list"),
        req.iter().cloned().collect()
    );
}

#[test]
fn identical_content_is_not_rewritten() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = PartitionStore::new(dir.path());
    let req = [tid("2024K1"), tid("2024K2")];
    let b = batch(&[("000", "2024K1", Some(1.0)), ("000", "2024K2", Some(2.0))]);
    run_request(&store, &req, std::slice::from_ref(&b)).expect("first");
    let before = std::fs::metadata(store.partition_path(&table(), &req[0]))
        .expect("meta")
        .modified()
        .expect("mtime");
    let revised = batch(&[("000", "2024K1", Some(1.0)), ("000", "2024K2", Some(9.0))]);
    // split differently: the digest must not depend on batch boundaries
    let out =
        run_request(&store, &req, &[revised.slice(0, 1), revised.slice(1, 1)]).expect("second");
    assert_eq!(out.unchanged, vec![req[0].clone()]);
    assert_eq!(out.changed, vec![(req[1].clone(), 1)]);
    let after = std::fs::metadata(store.partition_path(&table(), &req[0]))
        .expect("meta")
        .modified()
        .expect("mtime");
    assert_eq!(before, after);
    assert_eq!(read_all(&store, &req[1])[0].2, Some(9.0));
    assert!(no_temp_files(&store));
}

#[test]
fn interleaved_periods_land_in_the_right_files() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = PartitionStore::new(dir.path());
    let req = [tid("A"), tid("B"), tid("C")];
    let out = run_request(
        &store,
        &req,
        &[
            batch(&[
                ("1", "A", Some(1.0)),
                ("2", "A", Some(2.0)),
                ("1", "B", Some(3.0)),
            ]),
            batch(&[
                ("3", "A", Some(4.0)),
                ("1", "C", Some(5.0)),
                ("2", "B", None),
            ]),
            batch(&[("4", "A", Some(6.0))]),
        ],
    )
    .expect("request");
    assert_eq!(out.changed.len(), 3);
    let a: Vec<_> = read_all(&store, &req[0]).into_iter().map(|r| r.0).collect();
    assert_eq!(a, vec!["1", "2", "3", "4"]);
    let b: Vec<_> = read_all(&store, &req[1])
        .into_iter()
        .map(|r| (r.0, r.2))
        .collect();
    assert_eq!(b, vec![("1".into(), Some(3.0)), ("2".into(), None)]);
    assert_eq!(read_all(&store, &req[2]).len(), 1);
    assert!(no_temp_files(&store));
}

#[test]
fn dropped_request_publishes_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = PartitionStore::new(dir.path());
    let req = [tid("2024K1"), tid("2024K2")];
    let mut w = RequestWriter::new(
        &store,
        &table(),
        partition_schema(&["OMRÅDE", "TID", "INDHOLD"]),
        &req,
        WriteLimits::default(),
    )
    .expect("writer");
    w.write(&batch(&[
        ("000", "2024K1", Some(1.0)),
        ("000", "2024K2", Some(2.0)),
    ]))
    .expect("write");
    drop(w); // the body was cut off: the caller never calls finish/publish
    assert!(store.list_tids(&table()).expect("list").is_empty());
    assert!(no_temp_files(&store));
    // staged but not published: also nothing
    let mut w = RequestWriter::new(
        &store,
        &table(),
        partition_schema(&["OMRÅDE", "TID", "INDHOLD"]),
        &req,
        WriteLimits::default(),
    )
    .expect("writer");
    w.write(&batch(&[("000", "2024K1", Some(1.0))]))
        .expect("write");
    drop(w.finish().expect("staged"));
    assert!(store.list_tids(&table()).expect("list").is_empty());
    assert!(no_temp_files(&store));
}

#[test]
fn unexpected_or_hostile_periods_fail_the_request() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = PartitionStore::new(dir.path());
    let err = run_request(
        &store,
        &[tid("2024K1")],
        &[batch(&[("000", "2024K9", Some(1.0))])],
    )
    .expect_err("unexpected");
    assert!(err.to_string().contains("2024K9"), "{err}");
    let long = "9".repeat(10_000);
    let err = run_request(
        &store,
        &[tid("2024K1")],
        &[batch(&[("000", &long, Some(1.0))])],
    )
    .expect_err("too long");
    assert!(err.to_string().contains("FOLK1A"), "{err}");
    assert!(store.list_tids(&table()).expect("list").is_empty());
}

#[test]
fn row_limit_per_period_is_enforced() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = PartitionStore::new(dir.path());
    let mut w = RequestWriter::new(
        &store,
        &table(),
        partition_schema(&["OMRÅDE", "TID", "INDHOLD"]),
        &[tid("X")],
        WriteLimits {
            max_rows_per_period: 2,
        },
    )
    .expect("writer");
    let err = w
        .write(&batch(&[
            ("1", "X", None),
            ("2", "X", None),
            ("3", "X", None),
        ]))
        .expect_err("limit");
    assert!(matches!(err, Error::TooManyRows { .. }));
}

#[test]
fn listing_ignores_temp_files_other_extensions_and_sync_dir() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = PartitionStore::new(dir.path());
    let tdir = store.table_dir(&table());
    std::fs::create_dir_all(&tdir).expect("mkdir");
    for name in [
        "2024K1.parquet",
        "1840%3A1849.parquet",
        ".tmp-abc.parquet.tmp",
        "notes.txt",
        "2020%2f2021.parquet",
        ".hidden.parquet",
    ] {
        std::fs::write(tdir.join(name), b"x").expect("write");
    }
    std::fs::create_dir_all(tdir.join("sub.parquet")).expect("mkdir");
    std::fs::create_dir_all(dir.path().join("_sync")).expect("mkdir");
    let tids = store.list_tids(&table()).expect("list");
    assert_eq!(
        tids,
        [tid("2024K1"), tid("1840:1849")].into_iter().collect()
    );
    assert_eq!(store.list_tables().expect("tables"), vec![table()]);
    assert_eq!(store.clean_temp_files(&table()).expect("clean"), 1);
}

#[test]
fn bytes_do_not_depend_on_batching() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = PartitionStore::new(dir.path());
    let rows: Vec<(String, Option<f64>)> = (0..30_000)
        .map(|i| {
            (
                format!("{:03}", i % 977),
                (i % 13 != 0).then_some(i as f64 * 0.5),
            )
        })
        .collect();
    let make = |r: &[(String, Option<f64>)]| {
        batch(
            &r.iter()
                .map(|(a, v)| (a.as_str(), "T", *v))
                .collect::<Vec<_>>(),
        )
    };
    let all = make(&rows);
    let one = store
        .write_partition(&table(), &tid("T"), std::slice::from_ref(&all))
        .expect("write");
    let bytes_one = std::fs::read(&one.path).expect("read");
    let pieces: Vec<RecordBatch> = [0usize, 7, 5000, 5001, 20_000, 30_000]
        .windows(2)
        .map(|w| all.slice(w[0], w[1] - w[0]))
        .collect();
    let two = store
        .write_partition(&table(), &tid("T"), &pieces)
        .expect("write");
    assert_eq!(one.digest, two.digest);
    assert_eq!(bytes_one, std::fs::read(&two.path).expect("read"));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]
    #[test]
    fn any_arrival_order_gives_the_same_partitions(
        rows in proptest::collection::vec((0u8..4, 0u16..50, proptest::option::of(-1e6f64..1e6)), 1..200),
        cut in 1usize..50,
    ) {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = PartitionStore::new(dir.path());
        let codes = ["P0", "P1", "P2", "P3"];
        let req: Vec<Tid> = codes.iter().map(|c| tid(c)).collect();
        let owned: Vec<(String, &str, Option<f64>)> =
            rows.iter().map(|(p, k, v)| (k.to_string(), codes[*p as usize], *v)).collect();
        let refs: Vec<(&str, &str, Option<f64>)> =
            owned.iter().map(|(k, p, v)| (k.as_str(), *p, *v)).collect();
        let all = batch(&refs);
        let batches: Vec<RecordBatch> = (0..all.num_rows())
            .step_by(cut)
            .map(|s| all.slice(s, cut.min(all.num_rows() - s)))
            .collect();
        run_request(&store, &req, &batches).expect("request");
        for (i, t) in req.iter().enumerate() {
            let expected: Vec<(String, String, Option<f64>)> = owned
                .iter()
                .filter(|r| r.1 == codes[i])
                .map(|r| (r.0.clone(), r.1.to_string(), r.2))
                .collect();
            prop_assert_eq!(read_all(&store, t), expected);
        }
        prop_assert!(no_temp_files(&store));
    }
}
