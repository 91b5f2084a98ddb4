//! Vintages: a period revised three times at three `updated` values is
//! readable as of any instant — from the data folder (current partitions +
//! `_vintages`) and from Postgres (`fact_history`) — cell for cell as the
//! source served it then; unchanged refreshes add no vintage; a pruned
//! period stays readable as of before its removal.

use std::collections::{BTreeMap, BTreeSet};

use arrow_array::{Array, Float64Array, RecordBatch, StringArray};
use bins::run_sync_cycle;
use fact_apply::{apply_run, ApplyOptions};
use partition_store::PartitionStore;
use statbank_client::emulator::{EmuTable, Emulator, World};
use statbank_client::{DataRequest, StatbankClient, TableInfoExt};
use sync_state::{source_time_to_utc, DataDir, RunStatus, TableId, Tid};
use tests::sync::{at_hours, fast_client, options};

/// `(tid, codes of the other columns)` → value.
type Cells = BTreeMap<(String, Vec<String>), Option<f64>>;

fn cells_of(batches: &[RecordBatch]) -> Cells {
    let mut out = Cells::new();
    for b in batches {
        let schema = b.schema();
        let tid_ix = schema.index_of("TID").expect("TID");
        let v_ix = schema.index_of("INDHOLD").expect("INDHOLD");
        let tid = b
            .column(tid_ix)
            .as_any()
            .downcast_ref::<StringArray>()
            .expect("s");
        let v = b
            .column(v_ix)
            .as_any()
            .downcast_ref::<Float64Array>()
            .expect("f");
        let dims: Vec<&StringArray> = (0..b.num_columns())
            .filter(|i| *i != tid_ix && *i != v_ix)
            .map(|i| {
                b.column(i)
                    .as_any()
                    .downcast_ref::<StringArray>()
                    .expect("s")
            })
            .collect();
        for r in 0..b.num_rows() {
            out.insert(
                (
                    tid.value(r).to_string(),
                    dims.iter().map(|d| d.value(r).to_string()).collect(),
                ),
                (!v.is_null(r)).then(|| v.value(r)),
            );
        }
    }
    out
}

/// Everything the source serves now for `table`.
async fn served(client: &StatbankClient, table: &TableId) -> Cells {
    let (info, _) = client.table_info(table).await.expect("tableinfo");
    let tids = info.tids().expect("tids");
    let req = DataRequest::all_values_for_periods(table.clone(), &info, &tids);
    let mut body = client.data_bulk(&req).await.expect("data");
    let mut parser = body.parser();
    let mut batches = Vec::new();
    while let Some(chunk) = body.next_chunk().await.expect("chunk") {
        parser.push(&chunk, &mut batches).expect("parse");
    }
    parser.finish(&mut batches).expect("finish");
    cells_of(&batches)
}

const UPDATED: [&str; 4] = [
    "2026-01-08T08:00:00",
    "2026-02-12T08:00:00",
    "2026-03-12T08:00:00",
    "2026-04-09T08:00:00",
];

#[test]
fn a_period_revised_three_times_reads_as_of_any_instant() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let db = tests::pg::test_db().expect("postgres");
    let mut pg = db.client().expect("client");
    rt.block_on(async_part(&mut pg));
}

async fn async_part(pg: &mut postgres::Client) {
    let mut w = World::new();
    let mut t = EmuTable::synthetic(
        "REV",
        &[
            "2023K1", "2023K2", "2023K3", "2023K4", "2024K1", "2024K2", "2024K3",
        ],
        &[("OMRÅDE", 4), ("KØN", 2)],
    );
    t.updated = UPDATED[0].into();
    t.decimals = 1;
    w.insert(t);
    let emu = Emulator::start(w).await.expect("emulator");
    let client = fast_client(&emu.base_url(), 0);
    let tmp = tempfile::tempdir().expect("tmp");
    let data = DataDir::local(tmp.path());
    let table = TableId::new("REV").expect("id");
    let h = emu.handle();

    let mut stages: Vec<Cells> = Vec::new();
    for (k, updated) in UPDATED.iter().enumerate() {
        if k > 0 {
            h.revise_period("REV", "2024K2");
            h.set_updated("REV", updated);
        }
        if k == 3 {
            h.remove_period("REV", "2023K1");
        }
        stages.push(served(&client, &table).await);
        let mut o = options(tmp.path(), at_hours(24 * 7 * k as i64), true);
        if k == 0 {
            o.vintages = bins::Vintages::Keep; // on once: it stays on
        }
        o.prune_deleted_periods = true;
        o.verify.cycles = 0;
        let m = run_sync_cycle(&client, &o).await.expect("cycle");
        assert_eq!(m.status, RunStatus::Success);
        // Applied after each sync, with history, as the flow does.
        let opts = ApplyOptions {
            create_missing: k == 0,
            history: true,
            ..ApplyOptions::default()
        };
        let r =
            tokio::task::block_in_place(|| apply_run(pg, &data, &m.run_id, &opts)).expect("apply");
        assert_eq!(r.status, RunStatus::Success, "{:?}", r.tables);
        let r = &m.tables[&table];
        if k > 0 {
            assert!(
                r.changed_tids.iter().any(|t| t.as_str() == "2024K2"),
                "{k}: {:?}",
                r.changed_tids
            );
            assert!(
                r.unchanged_refreshed
                    .as_ref()
                    .is_some_and(|u| !u.is_empty()),
                "the other refreshed periods were unchanged"
            );
        }
    }
    let store = PartitionStore::new(&data);
    let v = store.list_vintages(&table).expect("vintages");
    let n: BTreeMap<&str, usize> = v.iter().map(|(t, vs)| (t.as_str(), vs.len())).collect();
    assert_eq!(
        n,
        [("2023K1", 1), ("2024K2", 3)].into_iter().collect(),
        "three revisions of 2024K2 and the pruned 2023K1; unchanged refreshes add nothing"
    );

    // Instants before, between and after the publications (source clock).
    let instants = [
        ("2026-01-01T00:00:00", None),
        ("2026-01-20T12:00:00", Some(0)),
        ("2026-02-12T08:00:00", Some(1)),
        ("2026-03-01T00:00:00", Some(1)),
        ("2026-03-20T00:00:00", Some(2)),
        ("2026-05-01T00:00:00", Some(3)),
    ];
    for (at, stage) in instants {
        let batches: Vec<RecordBatch> = store
            .read_table_as_of(&table, at, None)
            .expect("as of")
            .map(|r| r.expect("batch").1)
            .collect();
        let got = cells_of(&batches);
        match stage {
            None => assert!(got.is_empty(), "{at}: nothing was published yet"),
            Some(k) => assert!(
                got == stages[k],
                "{at}: equals what the source served at stage {k}"
            ),
        }
    }
    // The pruned period reads as of before its removal, not after.
    let k1 = [Tid::new("2023K1").expect("tid")]
        .into_iter()
        .collect::<BTreeSet<_>>();
    assert_eq!(
        store
            .as_of(&table, "2026-04-01T00:00:00", Some(&k1))
            .expect("as of")
            .len(),
        1
    );
    assert!(store
        .as_of(&table, "2026-04-10T00:00:00", Some(&k1))
        .expect("as of")
        .is_empty());

    // statbank-inspect asof with an RFC 3339 instant writes the same cells.
    let out = tmp.path().join("asof.parquet");
    let utc = source_time_to_utc("2026-03-01T00:00:00").expect("instant");
    let report = bins::inspect::asof(&data, &table, &utc.to_rfc3339(), None, &out).expect("asof");
    assert!(report.text.contains("from vintages"), "{}", report.text);
    let file = std::fs::File::open(&out).expect("written");
    let batches: Vec<RecordBatch> =
        parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file)
            .expect("parquet")
            .build()
            .expect("reader")
            .collect::<Result<_, _>>()
            .expect("batches");
    assert!(cells_of(&batches) == stages[1]);
    let rev = bins::inspect::revisions(&data, &table, Some(&Tid::new("2024K2").expect("tid")))
        .expect("revisions");
    let versions = rev.json["versions"].as_array().expect("versions").clone();
    assert_eq!(versions.len(), 4, "three vintages and the current content");
    assert!(versions[1]["cells_differing"]
        .as_u64()
        .is_some_and(|n| n > 0));

    // fact_history in Postgres, applied run by run with --history.
    tokio::task::block_in_place(|| history_equals_the_stages(pg, &stages));
}

fn history_equals_the_stages(pg: &mut postgres::Client, stages: &[Cells]) {
    let as_of = |pg: &mut postgres::Client, at: &str| -> BTreeMap<(String, Vec<String>), f64> {
        let t = source_time_to_utc(at).expect("instant").to_rfc3339();
        pg.query(
            "SELECT tid::text, omrade::text, kon::text, indhold FROM fact_history.rev \
             WHERE valid_from <= $1::text::timestamptz \
               AND (valid_to IS NULL OR valid_to > $1::text::timestamptz)",
            &[&t],
        )
        .expect("as of")
        .iter()
        .map(|r| {
            (
                (r.get::<_, String>(0), vec![r.get(1), r.get(2)]),
                r.get::<_, f64>(3),
            )
        })
        .collect()
    };
    let expected = |k: usize| -> BTreeMap<(String, Vec<String>), f64> {
        stages[k]
            .iter()
            .filter_map(|((tid, dims), v)| {
                let d = fact_apply::tid_to_date(tid).expect("quarter");
                v.map(|v| ((d.to_string(), dims.clone()), v))
            })
            .collect()
    };
    assert!(as_of(pg, "2026-01-01T00:00:00").is_empty());
    for (at, k) in [
        ("2026-01-20T12:00:00", 0),
        ("2026-02-12T08:00:00", 1),
        ("2026-03-01T00:00:00", 1),
        ("2026-03-20T00:00:00", 2),
        ("2026-05-01T00:00:00", 3),
    ] {
        assert!(
            as_of(pg, at) == expected(k),
            "fact_history as of {at} equals stage {k}"
        );
    }
    // fact.rev itself is exactly the current stage.
    let n: i64 = pg
        .query_one("SELECT count(*) FROM fact.rev", &[])
        .expect("count")
        .get(0);
    assert_eq!(n as usize, expected(3).len());
}
