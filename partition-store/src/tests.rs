use std::sync::Arc;

use arrow_array::{Array, Float64Array, RecordBatch, StringArray};
use proptest::prelude::*;
use sync_state::{DataDir, TableId, Tid};

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
    run_request_with(store, requested, batches, &PublishOptions::default())
}

fn run_request_with(
    store: &PartitionStore,
    requested: &[Tid],
    batches: &[RecordBatch],
    opts: &PublishOptions,
) -> Result<PublishOutcome, Error> {
    let schema = batches[0].schema();
    let mut w = writer(store, schema, requested, WriteLimits::default())?;
    for b in batches {
        w.write(b)?;
    }
    let staged = w.finish()?;
    let comparison = staged.compare();
    staged.publish(&comparison, opts)
}

fn writer(
    store: &PartitionStore,
    schema: arrow_schema::SchemaRef,
    requested: &[Tid],
    limits: WriteLimits,
) -> Result<RequestWriter, Error> {
    RequestWriter::new(
        &store.current_set(&table()),
        schema,
        requested,
        limits,
        PartitionMeta::default(),
    )
}

fn new_store(dir: &std::path::Path) -> PartitionStore {
    PartitionStore::new(&DataDir::local(dir))
}

fn table_dir(store: &PartitionStore) -> std::path::PathBuf {
    store
        .data_dir()
        .local_path(&store.data_dir().table_key(&table()))
        .expect("local")
}

fn partition_path(store: &PartitionStore, t: &Tid) -> std::path::PathBuf {
    store
        .data_dir()
        .local_path(&store.partition_key(&table(), t))
        .expect("local")
}

fn no_temp_files(store: &PartitionStore) -> bool {
    std::fs::read_dir(table_dir(store)).expect("dir").all(|e| {
        !e.expect("entry")
            .file_name()
            .to_string_lossy()
            .starts_with(sync_state::TEMP_PREFIX)
    })
}

#[test]
fn splits_by_tid_and_writes_empty_partitions_for_requested_periods() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = new_store(dir.path());
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
    let store = new_store(dir.path());
    let req = [tid("2024K1"), tid("2024K2")];
    let b = batch(&[("000", "2024K1", Some(1.0)), ("000", "2024K2", Some(2.0))]);
    run_request(&store, &req, std::slice::from_ref(&b)).expect("first");
    let before = std::fs::metadata(partition_path(&store, &req[0]))
        .expect("meta")
        .modified()
        .expect("mtime");
    let revised = batch(&[("000", "2024K1", Some(1.0)), ("000", "2024K2", Some(9.0))]);
    // split differently: the digest must not depend on batch boundaries
    let out =
        run_request(&store, &req, &[revised.slice(0, 1), revised.slice(1, 1)]).expect("second");
    assert_eq!(out.unchanged, vec![req[0].clone()]);
    assert_eq!(out.changed, vec![(req[1].clone(), 1)]);
    let after = std::fs::metadata(partition_path(&store, &req[0]))
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
    let store = new_store(dir.path());
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
    let store = new_store(dir.path());
    let req = [tid("2024K1"), tid("2024K2")];
    let mut w = writer(
        &store,
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
    let mut w = writer(
        &store,
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
    let store = new_store(dir.path());
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
    let store = new_store(dir.path());
    let mut w = writer(
        &store,
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
    let store = new_store(dir.path());
    let tdir = table_dir(&store);
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
    std::fs::create_dir_all(dir.path().join("statbank_tables/_sync")).expect("mkdir");
    std::fs::create_dir_all(dir.path().join("statbank_tables/_vintages")).expect("mkdir");
    let tids = store.list_tids(&table()).expect("list");
    assert_eq!(
        tids,
        [tid("2024K1"), tid("1840:1849")].into_iter().collect()
    );
    assert_eq!(store.list_tables().expect("tables"), vec![table()]);
    // A vintage copy killed before its rename leaves a temp file in the
    // period's vintage folder: cleaned too, the vintage itself kept.
    let vdir = dir
        .path()
        .join(store.data_dir().vintages_key(&table()))
        .join("2024K1");
    std::fs::create_dir_all(&vdir).expect("mkdir");
    let vintage = vdir.join("20240101T080000--20250101T080000.parquet");
    std::fs::write(&vintage, b"v").expect("write");
    std::fs::write(vdir.join(".tmp-1-0.tmp"), b"x").expect("write");
    assert_eq!(store.clean_temp_files(&table()), 2);
    assert!(vintage.exists());
    assert_eq!(std::fs::read_dir(&vdir).expect("read").count(), 1);
}

#[test]
fn bytes_do_not_depend_on_batching() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = new_store(dir.path());
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
        .write_partition(
            &table(),
            &tid("T"),
            std::slice::from_ref(&all),
            &PartitionMeta::default(),
        )
        .expect("write");
    let path = partition_path(&store, &tid("T"));
    let bytes_one = std::fs::read(&path).expect("read");
    let pieces: Vec<RecordBatch> = [0usize, 7, 5000, 5001, 20_000, 30_000]
        .windows(2)
        .map(|w| all.slice(w[0], w[1] - w[0]))
        .collect();
    let two = store
        .write_partition(&table(), &tid("T"), &pieces, &PartitionMeta::default())
        .expect("write");
    assert_eq!(one.digest, two.digest);
    assert_eq!(one.key, two.key);
    assert_eq!(bytes_one, std::fs::read(&path).expect("read"));
}

#[test]
fn wide_rows_are_written_in_bounded_row_groups_whatever_the_batching() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = new_store(dir.path());
    // 4,000-byte codes: 12,000 rows hold 48 MB of text, more than a row
    // group may hold in memory; the writer ends row groups as it goes.
    // Pseudo-random letters, so compression cannot shrink them.
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let mut letter = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        char::from(b'a' + (seed % 26) as u8)
    };
    let wide: Vec<String> = (0..12_000)
        .map(|i| format!("{i:06}{}", (0..3994).map(|_| letter()).collect::<String>()))
        .collect();
    let refs: Vec<(&str, &str, Option<f64>)> =
        wide.iter().map(|c| (c.as_str(), "T", Some(1.0))).collect();
    let all = batch(&refs);
    let one = store
        .write_partition(
            &table(),
            &tid("T"),
            std::slice::from_ref(&all),
            &PartitionMeta::default(),
        )
        .expect("write");
    let path = partition_path(&store, &tid("T"));
    let bytes_one = std::fs::read(&path).expect("read");
    let file = std::fs::File::open(&path).expect("open");
    let reader = parquet::file::reader::SerializedFileReader::new(file).expect("parquet");
    let groups = parquet::file::reader::FileReader::metadata(&reader).num_row_groups();
    assert!(groups > 1, "one row group of 48 MB");
    let pieces: Vec<RecordBatch> = [0usize, 1, 2, 300, 1025, 4097, 12_000]
        .windows(2)
        .map(|w| all.slice(w[0], w[1] - w[0]))
        .collect();
    let two = store
        .write_partition(&table(), &tid("T"), &pieces, &PartitionMeta::default())
        .expect("write");
    assert_eq!(one.digest, two.digest);
    assert_eq!(
        bytes_one,
        std::fs::read(&path).expect("read"),
        "bytes depend on batching"
    );
    assert_eq!(read_all(&store, &tid("T")).len(), 12_000);
}

/// What engines with default settings need (Spark 3.5's vectorized reader
/// fails on anything but PLAIN, dictionary and RLE): PLAIN values, 1.0
/// data pages, statistics where docs/layout.md says.
#[test]
fn files_use_only_encodings_every_engine_reads() {
    use parquet::basic::{Encoding, PageType};
    use parquet::file::reader::{FileReader, SerializedFileReader};
    let dir = tempfile::tempdir().expect("tempdir");
    let store = new_store(dir.path());
    let rows: Vec<(String, Option<f64>)> = (0..5000)
        .map(|i| {
            (
                format!("{:03}", i % 99),
                (i % 7 != 0).then(|| f64::from(i) / 10.0),
            )
        })
        .collect();
    let refs: Vec<(&str, &str, Option<f64>)> =
        rows.iter().map(|(c, v)| (c.as_str(), "2024", *v)).collect();
    store
        .write_partition(
            &table(),
            &tid("2024"),
            &[batch(&refs)],
            &PartitionMeta::default(),
        )
        .expect("write");
    let file = std::fs::File::open(partition_path(&store, &tid("2024"))).expect("open");
    let reader = SerializedFileReader::new(file).expect("parquet");
    let meta = reader.metadata();
    assert_eq!(meta.file_metadata().version(), 1, "writer version");
    for group in meta.row_groups() {
        for column in group.columns() {
            let name = column.column_path().string();
            for encoding in column.encodings() {
                assert!(
                    matches!(encoding, Encoding::PLAIN | Encoding::RLE),
                    "{name} uses {encoding:?}"
                );
            }
            let with_stats = name == "TID" || name == "INDHOLD";
            assert_eq!(
                column.statistics().is_some(),
                with_stats,
                "statistics of {name}"
            );
        }
    }
    let row_group = reader.get_row_group(0).expect("row group");
    for i in 0..row_group.num_columns() {
        let mut pages = row_group.get_column_page_reader(i).expect("pages");
        while let Some(page) = pages.get_next_page().expect("page") {
            assert_eq!(page.page_type(), PageType::DATA_PAGE, "column {i}");
        }
    }
    assert_eq!(read_all(&store, &tid("2024")).len(), 5000);
}

#[test]
fn rows_alternating_between_periods_one_at_a_time_land_in_the_right_files() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = new_store(dir.path());
    let req = [tid("A"), tid("B")];
    let codes: Vec<String> = (0..20_000).map(|i| format!("{i:05}")).collect();
    // The worst case: every row its own batch, periods alternating.
    let batches: Vec<RecordBatch> = codes
        .iter()
        .enumerate()
        .map(|(i, c)| {
            batch(&[(
                c.as_str(),
                if i % 2 == 0 { "A" } else { "B" },
                Some(i as f64),
            )])
        })
        .collect();
    run_request(&store, &req, &batches).expect("request");
    let a = read_all(&store, &req[0]);
    let b = read_all(&store, &req[1]);
    assert_eq!((a.len(), b.len()), (10_000, 10_000));
    assert!(a.iter().enumerate().all(|(i, r)| r.0 == codes[2 * i]));
    assert!(b.iter().enumerate().all(|(i, r)| r.0 == codes[2 * i + 1]));
    assert!(no_temp_files(&store));
}

#[test]
fn a_batch_of_one_period_is_recognised_exactly() {
    let arr = |v: &[&str]| StringArray::from(v.to_vec());
    assert!(crate::request::one_value_for_tests(&arr(&["2024K1"; 5])));
    assert!(!crate::request::one_value_for_tests(&arr(&[
        "2024K1", "2024K2", "2024K1"
    ])));
    assert!(!crate::request::one_value_for_tests(&arr(&[
        "ab", "ab", "abab"
    ])));
    assert!(!crate::request::one_value_for_tests(&arr(&["a", "b"])));
    assert!(crate::request::one_value_for_tests(&arr(&["x"])));
    assert!(crate::request::one_value_for_tests(&arr(&["", ""])));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]
    #[test]
    fn any_arrival_order_gives_the_same_partitions(
        rows in proptest::collection::vec((0u8..4, 0u16..50, proptest::option::of(-1e6f64..1e6)), 1..200),
        cut in 1usize..50,
    ) {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = new_store(dir.path());
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

fn meta(from: &str) -> PartitionMeta {
    PartitionMeta {
        variables: Some(vec!["OMRÅDE".into(), "Tid".into()]),
        valid_from: Some(from.into()),
    }
}

fn publish_meta(
    set: &TableSet,
    requested: &[Tid],
    b: &RecordBatch,
    m: PartitionMeta,
    opts: &PublishOptions,
) -> PublishOutcome {
    let mut w =
        RequestWriter::new(set, b.schema(), requested, WriteLimits::default(), m).expect("writer");
    w.write(b).expect("write");
    let staged = w.finish().expect("finish");
    let comparison = staged.compare();
    staged.publish(&comparison, opts).expect("publish")
}

fn vintages_until(to: &str) -> PublishOptions {
    PublishOptions {
        vintages_until: Some(to.into()),
    }
}

#[test]
fn replaced_periods_keep_their_vintage_and_read_as_of() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = new_store(dir.path());
    let set = store.current_set(&table());
    let req = [tid("2024K1"), tid("2024K2")];
    let u1 = "2024-08-12T08:00:00";
    let u2 = "2024-11-12T08:00:00";
    let b1 = batch(&[("000", "2024K1", Some(1.0)), ("000", "2024K2", Some(2.0))]);
    publish_meta(&set, &req, &b1, meta(u1), &vintages_until(u1));
    assert!(store.list_vintages(&table()).expect("list").is_empty());
    let b2 = batch(&[("000", "2024K1", Some(1.0)), ("000", "2024K2", Some(2.5))]);
    let out = publish_meta(&set, &req, &b2, meta(u2), &vintages_until(u2));
    assert_eq!(out.unchanged, vec![req[0].clone()], "unchanged: no vintage");
    let v = store.list_vintages(&table()).expect("list");
    assert_eq!(v.len(), 1);
    let k2 = &v[&req[1]][0];
    assert_eq!(k2.valid_from.as_deref(), Some(u1));
    assert_eq!(k2.valid_to, u2);
    assert!(k2
        .key
        .ends_with("_vintages/FOLK1A/2024K2/20240812T080000--20241112T080000.parquet"));
    // as of each instant
    let value_at = |at: &str| -> Vec<(String, Option<f64>)> {
        store
            .as_of(&table(), at, None)
            .expect("as of")
            .into_iter()
            .flat_map(|(t, src)| {
                let r = store.read_as_of(&table(), &t, &src).expect("open");
                r.flat_map(|b| {
                    let b = b.expect("batch");
                    let v = b
                        .column(2)
                        .as_any()
                        .downcast_ref::<Float64Array>()
                        .expect("f")
                        .clone();
                    (0..b.num_rows())
                        .map(|i| (t.as_str().to_string(), (!v.is_null(i)).then(|| v.value(i))))
                        .collect::<Vec<_>>()
                })
                .collect::<Vec<_>>()
            })
            .collect()
    };
    assert!(
        value_at("2024-08-12T07:59:59").is_empty(),
        "before the first publish"
    );
    assert_eq!(value_at("2024-09-01T00:00:00")[1].1, Some(2.0));
    assert_eq!(value_at("2024-11-12T08:00:00")[1].1, Some(2.5));
    assert_eq!(value_at("2025-01-01T00:00:00")[0].1, Some(1.0));
    assert!(store
        .storage()
        .list_dir("statbank_tables/_sync/intents")
        .expect("l")
        .files
        .is_empty());
}

#[test]
fn a_swap_replaces_the_whole_set_and_removed_periods_leave_with_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = new_store(dir.path());
    let u1 = "2024-08-12T08:00:00";
    let u2 = "2024-11-12T08:00:00";
    let old = [tid("1"), tid("2"), tid("3")];
    publish_meta(
        &store.current_set(&table()),
        &old,
        &batch(&[
            ("a", "1", Some(1.0)),
            ("a", "2", Some(2.0)),
            ("a", "3", Some(3.0)),
        ]),
        meta(u1),
        &PublishOptions::default(),
    );
    let schema2 = partition_schema(&["OMRÅDE", "ALDER", "TID", "INDHOLD"]);
    let new = [tid("2"), tid("3"), tid("4")];
    let set = store.new_set(&table(), "run1").expect("new set");
    let b = RecordBatch::try_new(
        schema2,
        vec![
            Arc::new(StringArray::from(vec!["a", "a", "a"])),
            Arc::new(StringArray::from(vec!["0", "0", "0"])),
            Arc::new(StringArray::from(vec!["2", "3", "4"])),
            Arc::new(Float64Array::from(vec![Some(2.0), Some(3.0), Some(4.0)])),
        ],
    )
    .expect("batch");
    let out = publish_meta(&set, &new, &b, meta(u2), &PublishOptions::default());
    assert_eq!(out.changed.len(), 3, "nothing to compare with in a new set");
    // Nothing visible yet.
    assert_eq!(
        store.list_tids(&table()).expect("l"),
        old.iter().cloned().collect()
    );
    let swap = store.commit_set(&set, &vintages_until(u2)).expect("commit");
    assert_eq!(swap.new_tids, new.iter().cloned().collect());
    assert_eq!(swap.removed_tids, [tid("1")].into_iter().collect());
    assert_eq!(
        store.list_tids(&table()).expect("l"),
        new.iter().cloned().collect()
    );
    for t in &new {
        assert_eq!(
            store.footer(&table(), t).expect("f").columns.len(),
            4,
            "one schema"
        );
    }
    let v = store.list_vintages(&table()).expect("v");
    assert_eq!(v.len(), 3, "every old partition kept");
    assert!(store
        .storage()
        .list_recursive("statbank_tables/_sync/staging")
        .expect("l")
        .is_empty());
    // the removed period is readable as of before the swap
    let before = store
        .as_of(&table(), "2024-09-01T00:00:00", None)
        .expect("as of");
    assert_eq!(before.len(), 3);
    assert!(before
        .iter()
        .all(|(_, s)| matches!(s, AsOfSource::Vintage(_))));
    assert_eq!(store.as_of(&table(), u2, None).expect("as of").len(), 3);
}

#[test]
fn recovery_settles_interrupted_publishes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = new_store(dir.path());
    let u1 = "2024-08-12T08:00:00";
    let u2 = "2024-11-12T08:00:00";
    let req = [tid("1"), tid("2")];
    publish_meta(
        &store.current_set(&table()),
        &req,
        &batch(&[("a", "1", Some(1.0)), ("a", "2", Some(2.0))]),
        meta(u1),
        &PublishOptions::default(),
    );
    // A replace interrupted after its vintage copy, before the new file:
    // the premature vintage goes, the partition stays as it was.
    let vkey = store
        .vintage_key(&table(), &req[0], Some(u1), u2)
        .expect("key");
    store
        .storage()
        .copy(&store.partition_key(&table(), &req[0]), &vkey)
        .expect("copy");
    let intent = serde_json::json!({"kind": "replace", "entries": [
        {"tid": "1", "digest": "not-the-current-digest", "vintage": vkey}]});
    store
        .data_dir()
        .write_json(
            "statbank_tables/_sync/intents/FOLK1A.json",
            "intent",
            &intent,
        )
        .expect("intent");
    let r = store.recover().expect("recover");
    assert_eq!(r.len(), 1);
    assert!(store.storage().head(&vkey).expect("head").is_none());
    assert_eq!(store.list_tids(&table()).expect("l").len(), 2);
    // A swap interrupted after its intent: rolled forward.
    let set = store.new_set(&table(), "r2").expect("set");
    publish_meta(
        &set,
        &[tid("9")],
        &batch(&[("b", "9", Some(9.0))]),
        meta(u2),
        &PublishOptions::default(),
    );
    store
        .storage()
        .put(
            "statbank_tables/_sync/staging/FOLK1A/r2/.statbank-set",
            b"r2",
        )
        .expect("marker");
    let intent = serde_json::json!({"kind": "swap", "set_id": "r2",
        "staging": "statbank_tables/_sync/staging/FOLK1A/r2", "new_tids": ["9"],
        "old": [{"tid": "1"}, {"tid": "2"}]});
    store
        .data_dir()
        .write_json(
            "statbank_tables/_sync/intents/FOLK1A.json",
            "intent",
            &intent,
        )
        .expect("intent");
    // and a leftover set that was never committed
    let stray = store
        .new_set(&TableId::new("OTHER").expect("id"), "x")
        .expect("set");
    store
        .storage()
        .put(&stray.key(&tid("1")), b"junk")
        .expect("put");
    store.recover().expect("recover");
    assert_eq!(
        store.list_tids(&table()).expect("l"),
        [tid("9")].into_iter().collect()
    );
    assert!(store
        .storage()
        .list_recursive("statbank_tables/_sync")
        .expect("l")
        .is_empty());
    // recovering twice is harmless
    assert!(store.recover().expect("again").is_empty());
}

#[test]
fn removed_periods_become_vintages() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = new_store(dir.path());
    let u1 = "2024-08-12T08:00:00";
    publish_meta(
        &store.current_set(&table()),
        &[tid("1"), tid("2")],
        &batch(&[("a", "1", Some(1.0)), ("a", "2", Some(2.0))]),
        meta(u1),
        &PublishOptions::default(),
    );
    let gone = store
        .remove_periods(
            &table(),
            &[tid("1"), tid("7")],
            &vintages_until("2025-01-01T00:00:00"),
        )
        .expect("remove");
    assert_eq!(gone, vec![tid("1")]);
    assert_eq!(
        store.list_tids(&table()).expect("l"),
        [tid("2")].into_iter().collect()
    );
    let asof = store
        .as_of(&table(), "2024-12-01T00:00:00", None)
        .expect("as of");
    assert_eq!(
        asof.len(),
        2,
        "the pruned period reads as of before its removal"
    );
    assert_eq!(
        store
            .as_of(&table(), "2025-01-01T00:00:00", None)
            .expect("as of")
            .len(),
        1
    );
}

#[test]
fn kept_facts_spare_the_footer_reads_and_describe_the_same_files() {
    let dir = tempfile::tempdir().expect("tempdir");
    let kept = new_store(dir.path()).remembering_published();
    let plain = new_store(dir.path());
    let (u1, u2, u3) = (
        "2024-08-12T08:00:00",
        "2024-11-12T08:00:00",
        "2025-02-12T08:00:00",
    );
    let opts = IcebergOptions::at(1_700_000_000_000);
    // What the kept facts describe, the footers describe too: a store that
    // reads every footer finds the metadata already true.
    let check = |updated: &str, footers: usize| {
        let o = kept.write_iceberg(&table(), updated, &opts).expect("kept");
        assert!(o.written, "a new version at {updated}");
        assert_eq!(o.footers_read, footers, "footers read at {updated}");
        let again = plain
            .write_iceberg(&table(), updated, &opts)
            .expect("plain");
        assert!(!again.written, "the footers agree at {updated}");
        assert!(again.footers_read > 0);
    };
    let periods = [tid("1"), tid("2"), tid("3")];
    let rows = |v: f64| {
        batch(&[
            ("a", "1", Some(v)),
            ("a", "2", Some(v)),
            ("a", "3", Some(v)),
        ])
    };
    publish_meta(
        &kept.current_set(&table()),
        &periods,
        &rows(1.0),
        meta(u1),
        &PublishOptions::default(),
    );
    check(u1, 0);
    // A revision keeps its vintage. Read: the vintage (a copy the store did
    // not write) and the two periods not published since the last metadata
    // (a local folder caches no facts of current partitions).
    publish_meta(
        &kept.current_set(&table()),
        &[tid("2")],
        &batch(&[("a", "2", Some(20.0)), ("b", "2", Some(21.0))]),
        meta(u2),
        &vintages_until(u2),
    );
    check(u2, 3);
    // A swap: facts kept under the staging set follow it into place; only
    // the old set's three new vintages are read (the earlier vintage's facts
    // are in the cache).
    let set = kept.new_set(&table(), "run3").expect("set");
    publish_meta(
        &set,
        &periods,
        &rows(3.0),
        meta(u3),
        &PublishOptions::default(),
    );
    kept.commit_set(&set, &vintages_until(u3)).expect("swap");
    check(u3, 3);
    // A file replaced by another writer (another size) is read, not trusted.
    publish_meta(
        &kept.current_set(&table()),
        &[tid("1")],
        &batch(&[("a", "1", Some(4.0))]),
        meta(u3),
        &PublishOptions::default(),
    );
    publish_meta(
        &plain.current_set(&table()),
        &[tid("1")],
        &batch(&[
            ("a", "1", Some(5.0)),
            ("b", "1", Some(5.0)),
            ("c", "1", Some(5.0)),
        ]),
        meta(u3),
        &PublishOptions::default(),
    );
    let o = kept.write_iceberg(&table(), u3, &opts).expect("kept");
    // Read: period 1 (its kept facts no longer hold) and periods 2 and 3
    // (not published since the last metadata).
    assert_eq!(
        o.footers_read, 3,
        "kept facts of another size are not trusted"
    );
    let again = plain.write_iceberg(&table(), u3, &opts).expect("plain");
    assert!(!again.written, "the replaced file is described as it is");
}

#[test]
fn a_footer_is_read_from_the_files_tail_when_it_holds_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = new_store(dir.path());
    run_request(
        &store,
        &[tid("1")],
        &[batch(&[("a", "1", Some(1.0)), ("b", "1", None)])],
    )
    .expect("publish");
    let bytes = std::fs::read(partition_path(&store, &tid("1"))).expect("read");
    let meta = crate::store::metadata_in_tail(&bytes)
        .expect("parse")
        .expect("the whole file holds it");
    assert_eq!(meta.file_metadata().num_rows(), 2);
    let tail = &bytes[bytes.len() - 40..];
    assert!(
        crate::store::metadata_in_tail(tail)
            .expect("parse")
            .is_none(),
        "a tail too short for the metadata asks for more"
    );
    assert!(crate::store::metadata_in_tail(&bytes[..bytes.len() - 1]).is_err());
    assert!(crate::store::metadata_in_tail(b"PAR").is_err());
}

#[test]
fn a_partition_is_read_in_batches_of_the_size_asked() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = new_store(dir.path());
    let codes: Vec<String> = (0..40_000).map(|i| format!("{i:05}")).collect();
    let rows: Vec<(&str, &str, Option<f64>)> =
        codes.iter().map(|c| (c.as_str(), "T", Some(1.0))).collect();
    store
        .write_partition(
            &table(),
            &tid("T"),
            &[batch(&rows)],
            &PartitionMeta::default(),
        )
        .expect("write");
    let sizes =
        |r: PartitionReader| -> Vec<usize> { r.map(|b| b.expect("batch").num_rows()).collect() };
    let default = sizes(store.read_partition(&table(), &tid("T")).expect("open"));
    assert_eq!(
        default,
        vec![
            READ_BATCH_ROWS,
            READ_BATCH_ROWS,
            40_000 - 2 * READ_BATCH_ROWS
        ]
    );
    let small = store
        .read_partition_in_batches(&table(), &tid("T"), 10_000)
        .expect("open");
    assert_eq!(sizes(small), vec![10_000; 4]);
    assert_eq!(read_all(&store, &tid("T")).len(), 40_000);
}
