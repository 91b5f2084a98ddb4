//! `statbank-inspect`'s answers after real cycles against the emulator.

use bins::{inspect, run_sync_cycle};
use statbank_client::emulator::{EmuTable, Emulator, Endpoint, Fault, FaultKind, World};
use sync_state::{DataDir, TableId};
use tests::sync::{at_hours, fast_client, options};

#[tokio::test(flavor = "multi_thread")]
async fn status_table_run_and_plan_answer_the_debugging_questions() {
    let mut w = World::new();
    w.insert(EmuTable::synthetic("GOOD", &["2022", "2023"], &[("X", 2)]));
    w.insert(EmuTable::synthetic("BAD", &["2022", "2023"], &[("X", 2)]));
    let emu = Emulator::start(w).await.expect("emulator");
    let client = fast_client(&emu.base_url(), 0);
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = DataDir::local(tmp.path());
    emu.handle()
        .add_fault(Fault::always(Endpoint::TableInfo, FaultKind::Status500).for_table("BAD"));
    for h in 0..2 {
        run_sync_cycle(&client, &options(tmp.path(), at_hours(h), true))
            .await
            .expect("cycle");
    }
    // A gated run last: "no tables synced" must be explained.
    run_sync_cycle(&client, &options(tmp.path(), at_hours(3), false))
        .await
        .expect("cycle");

    let s = inspect::status(&dir).expect("status").text;
    assert!(s.contains("catalog not polled: weekly_gate"), "{s}");
    assert!(s.contains("tables failing for more than one run:"), "{s}");
    assert!(
        s.contains("BAD") && s.contains("2 runs") && s.contains("500"),
        "{s}"
    );

    let t = inspect::table(&dir, &TableId::new("GOOD").expect("id"))
        .expect("table")
        .text;
    assert!(t.contains("local periods: 2 (2022 … 2023)"), "{t}");
    assert!(t.contains("changed=[2022,2023]"), "{t}");

    // A summary of the run; --json gives the manifest itself.
    let r = inspect::run(&dir, None).expect("run");
    assert!(
        r.text.contains("catalog not polled: weekly_gate"),
        "{}",
        r.text
    );
    assert!(r.text.lines().count() < 20, "{}", r.text);
    assert_eq!(r.json["catalog"]["reason"], "weekly_gate");
    let h = inspect::history(&dir, 10).expect("history");
    assert_eq!(
        h.text.lines().count(),
        4,
        "a header and one line per run: {}",
        h.text
    );
    assert!(h.text.contains("(weekly_gate)"), "{}", h.text);
    assert_eq!(h.json.as_array().map(Vec::len), Some(3));

    // Plan: nothing for an unchanged table; the new period after an update.
    let good = TableId::new("GOOD").expect("id");
    let p = inspect::plan(&dir, &client, &good)
        .await
        .expect("plan")
        .text;
    assert!(p.contains("unchanged"), "{p}");
    emu.handle().add_period("GOOD", "2024");
    emu.handle().set_updated("GOOD", "2026-03-01T08:00:00");
    emu.handle().clear_requests();
    let p = inspect::plan(&dir, &client, &good)
        .await
        .expect("plan")
        .text;
    assert!(p.contains("new periods (1): 2024"), "{p}");
    assert!(p.contains("fetch: 3 periods in 1 BULK request"), "{p}");
    assert!(
        emu.handle()
            .requests()
            .iter()
            .all(|q| q.endpoint != Some(Endpoint::Data)),
        "a plan downloads no data"
    );
}
