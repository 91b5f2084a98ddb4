//! Faults, bad input and hostile data:
//! random emulator faults converge to the fault-free result; corrupt files
//! are clear errors naming the file and are never overwritten; ids, period
//! codes and column names from the network cannot escape the data folder or
//! the SQL quoting; oversized responses are bounded.

use std::collections::BTreeMap;
use std::time::Duration;

use bins::run_sync_cycle;
use partition_store::WriteLimits;
use statbank_client::emulator::{
    EmuTable, EmuValue, Emulator, Endpoint, Fault, FaultKind, RandomFaults, World,
};
use statbank_client::StatbankClient;
use sync_state::{DataDir, RunStatus, SyncState, TableId, TableStatus};
use tests::sync::{at_hours, fast_client, options, snapshot, temp_files};

fn multi_world() -> World {
    let shapes: [&[&str]; 6] = [
        &["2019", "2020", "2021", "2022"],
        &["2023K1", "2023K2", "2023K3", "2023K4"],
        &["2024M01", "2024M02", "2024M03"],
        &["2020/2021", "2021/2022"],
        &["2018", "2019", "2020", "2021", "2022", "2023"],
        &["2022H1", "2022H2", "2023H1"],
    ];
    let mut w = World::new();
    for i in 0..18 {
        w.insert(EmuTable::synthetic(
            &format!("MULTI{i}"),
            shapes[i % shapes.len()],
            &[("OMRÅDE", 5), ("KØN", 3), ("ALDER", 20)],
        ));
    }
    w
}

/// One round of upstream changes: every table gets a revised latest period
/// and a new `updated` stamp; every third table also a new period.
fn mutate(h: &statbank_client::emulator::EmulatorHandle, round: usize) {
    let world = h.world();
    for (i, t) in world.tables.values().enumerate() {
        if let Some(latest) = t.latest_period() {
            h.revise_period(&t.id, latest);
        }
        if i % 3 == 0 {
            h.add_period(&t.id, &format!("NEW{round}"));
        }
        h.set_updated(&t.id, &format!("2026-0{}-01T08:00:00", round + 1));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn random_faults_on_10_percent_of_requests_converge_to_the_fault_free_result() {
    // Two emulators with the same world: one clean (the reference), one
    // with faults on 10 % of its requests.
    let clean = Emulator::start(multi_world()).await.expect("emulator");
    let faulty = Emulator::start(multi_world()).await.expect("emulator");
    faulty.handle().set_random_faults(Some(RandomFaults {
        rate: 0.10,
        seed: 20261126,
        kinds: vec![
            FaultKind::Status500,
            FaultKind::TooManyRequests {
                retry_after_secs: 1,
            },
            FaultKind::Hang { secs: 3 },
            FaultKind::Truncate { after_bytes: 500 },
            FaultKind::ApiError {
                status: 400,
                code: "EXTRACT-NOTALLOWED".into(),
                message: "Udtræk ikke tilladt".into(),
            },
        ],
    }));
    let reference = tempfile::tempdir().expect("tmp");
    let clean_client = fast_client(&clean.base_url(), 0);
    // Retries on, but few, so that some failures reach the manifests.
    let client = StatbankClient::builder()
        .base_url(faulty.base_url())
        .min_interval(Duration::ZERO)
        .max_retries(1)
        .min_backoff(Duration::from_millis(5))
        .max_backoff(Duration::from_millis(20))
        .read_timeout(Duration::from_millis(800))
        .request_timeout(Duration::from_secs(5))
        .build()
        .expect("client");
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path();
    let mut failures: BTreeMap<String, usize> = BTreeMap::new();
    let mut cycles_per_round = Vec::new();
    let mut hour = 0;
    for round in 0..8 {
        if round > 0 {
            mutate(&clean.handle(), round);
            mutate(&faulty.handle(), round);
        }
        hour += 1;
        let m = run_sync_cycle(
            &clean_client,
            &options(reference.path(), at_hours(hour), true),
        )
        .await
        .expect("reference");
        assert_eq!(m.status, RunStatus::Success);
        let expected = snapshot(reference.path());
        let mut converged = None;
        for c in 1..=30 {
            hour += 1;
            let m = run_sync_cycle(&client, &options(dir, at_hours(hour), true))
                .await
                .expect("manifest written");
            if let Some(e) = &m.error {
                *failures
                    .entry(format!("run: {}", &e[..e.len().min(60)]))
                    .or_default() += 1;
            }
            for (id, r) in &m.tables {
                if r.status == TableStatus::Failed {
                    let e = r.error.as_deref().unwrap_or("");
                    assert!(!e.is_empty(), "{id}: a failed table carries its error");
                    let kind = e.split(':').next().unwrap_or("").to_string();
                    *failures.entry(kind).or_default() += 1;
                }
            }
            let state = SyncState::load(&DataDir::local(dir)).expect("state");
            let all_synced = faulty.handle().world().tables.values().all(|t| {
                TableId::new(&t.id)
                    .ok()
                    .and_then(|id| state.tables.get(&id))
                    .and_then(|e| e.last_seen_updated.as_deref())
                    == Some(t.updated.as_str())
            });
            if m.status == RunStatus::Success && all_synced {
                converged = Some(c);
                break;
            }
        }
        let c = converged.unwrap_or_else(|| panic!("round {round} did not converge: {failures:?}"));
        cycles_per_round.push(c);
        assert_eq!(
            snapshot(dir),
            expected,
            "round {round}: data equals the fault-free result"
        );
        assert!(temp_files(dir).is_empty());
    }
    let requests = faulty.handle().requests();
    let injected = requests.iter().filter(|r| r.fault.is_some()).count();
    println!(
        "random faults: {injected} injected over {} requests ({:.1} %); cycles to converge per round {cycles_per_round:?}; failures in manifests: {failures:?}",
        requests.len(),
        100.0 * injected as f64 / requests.len().max(1) as f64
    );
    assert!(injected >= 10, "faults were injected: {injected}");
    assert!(
        cycles_per_round.iter().any(|c| *c > 1),
        "some round needed a retry cycle"
    );
    assert!(!failures.is_empty(), "some fault reached a manifest");
}

#[tokio::test(flavor = "multi_thread")]
async fn corrupt_state_overrides_and_manifests_are_clear_errors_and_kept() {
    let emu = Emulator::start(multi_world()).await.expect("emulator");
    let client = fast_client(&emu.base_url(), 0);
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path();
    let data = DataDir::local(dir);
    let m = run_sync_cycle(&client, &options(dir, at_hours(0), true))
        .await
        .expect("bootstrap");
    let before = snapshot(dir);

    for (path, what) in [
        (
            data.local_path(&data.state_key()).expect("local"),
            "state.json",
        ),
        (
            data.local_path(&data.overrides_key()).expect("local"),
            "frequency_overrides.json",
        ),
    ] {
        let original = std::fs::read(&path).ok();
        std::fs::write(&path, b"{\"tables\": {\"FOLK1A\": ").expect("corrupt");
        let r = run_sync_cycle(&client, &options(dir, at_hours(1), true))
            .await
            .expect("a failed manifest is still written");
        assert_eq!(r.status, RunStatus::Failed, "{what}");
        let err = r.error.as_deref().unwrap_or("");
        assert!(
            err.contains(&path.display().to_string()),
            "{what}: error names the file: {err}"
        );
        assert_eq!(
            std::fs::read(&path).expect("still there"),
            b"{\"tables\": {\"FOLK1A\": ",
            "{what} is not overwritten"
        );
        assert_eq!(snapshot(dir), before, "{what}: no partition touched");
        match original {
            Some(b) => std::fs::write(&path, b).expect("restore"),
            None => std::fs::remove_file(&path).expect("remove"),
        }
    }

    // A corrupt manifest: the readers name it.
    let mpath = data
        .local_path(&data.manifest_key(&m.run_id))
        .expect("local");
    std::fs::write(&mpath, b"not json").expect("corrupt");
    let err = sync_state::RunManifest::load(&data, &m.run_id).expect_err("corrupt");
    assert!(
        err.to_string().contains(&mpath.display().to_string()),
        "{err}"
    );
    let err = bins::inspect::run(&data, Some(&m.run_id)).expect_err("corrupt");
    assert!(
        statbank_client::error_chain(&err).contains("not json")
            || err.to_string().contains(&mpath.display().to_string())
    );

    // A corrupt partition is treated as changed and rewritten by the next
    // refresh of its period (it cannot be read, so it cannot be "unchanged").
    let part = dir.join("statbank_tables/MULTI0/2022.parquet");
    std::fs::write(&part, b"PAR1 garbage").expect("corrupt partition");
    emu.handle().set_updated("MULTI0", "2026-02-02T08:00:00");
    let r = run_sync_cycle(&client, &options(dir, at_hours(2), true))
        .await
        .expect("cycle");
    let t = &r.tables[&TableId::new("MULTI0").expect("id")];
    assert_eq!(t.status, TableStatus::Synced);
    assert!(
        t.changed_tids.iter().any(|x| x.as_str() == "2022"),
        "{:?}",
        t.changed_tids
    );
    // Rewritten with the same content (the same content digest and rows);
    // its footer now dates the content from this cycle's `updated`, since
    // the corrupt file's own date could not be read.
    let store = partition_store::PartitionStore::new(&data);
    let footer = store
        .footer(
            &TableId::new("MULTI0").expect("id"),
            &sync_state::Tid::new("2022").expect("tid"),
        )
        .expect("readable again");
    let original = tempfile::tempdir().expect("tmp");
    std::fs::create_dir_all(original.path().join("statbank_tables/MULTI0")).expect("mkdir");
    std::fs::write(
        original.path().join("statbank_tables/MULTI0/2022.parquet"),
        &before["MULTI0/2022.parquet"],
    )
    .expect("write");
    let was = partition_store::PartitionStore::new(&DataDir::local(original.path()))
        .footer(
            &TableId::new("MULTI0").expect("id"),
            &sync_state::Tid::new("2022").expect("tid"),
        )
        .expect("original footer");
    assert_eq!((footer.digest, footer.rows), (was.digest, was.rows));
    assert_eq!(footer.valid_from.as_deref(), Some("2026-02-02T08:00:00"));
}

#[tokio::test(flavor = "multi_thread")]
async fn hostile_ids_periods_and_columns_fail_cleanly_inside_the_data_folder() {
    let mut w = World::new();
    w.insert(EmuTable::synthetic("GOOD1", &["2023"], &[("X", 2)]));
    for evil in ["../../etc", "A/B", "X\u{0}Y", "..", "a b"] {
        let mut t = EmuTable::synthetic("EVILTMP", &["2023"], &[("X", 2)]);
        t.id = evil.to_string();
        w.insert(t);
    }
    let mut long = EmuTable::synthetic("LONGTID", &["2023"], &[("X", 2)]);
    long.time_values.push(EmuValue::code(&"9".repeat(10_000)));
    w.insert(long);
    let mut quoted = EmuTable::synthetic("QUOTEVAR", &["2023"], &[("X", 2)]);
    quoted.variables[0].id = "A\";B".into();
    w.insert(quoted);
    let emu = Emulator::start(w).await.expect("emulator");
    let client = fast_client(&emu.base_url(), 0);

    let parent = tempfile::tempdir().expect("tmp");
    let dir = parent.path().join("data");
    let m = run_sync_cycle(&client, &options(&dir, at_hours(0), true))
        .await
        .expect("cycle");
    assert_eq!(m.status, RunStatus::PartialFailure);
    let invalid = m
        .catalog
        .invalid_entries
        .as_ref()
        .expect("invalid entries listed");
    assert_eq!(invalid.len(), 5, "{invalid:?}");
    assert_eq!(
        m.tables[&TableId::new("GOOD1").expect("id")].status,
        TableStatus::Synced
    );
    let long = &m.tables[&TableId::new("LONGTID").expect("id")];
    assert_eq!(long.status, TableStatus::Failed);
    assert!(
        long.error.as_deref().unwrap_or("").contains("too long"),
        "{long:?}"
    );
    let quoted = &m.tables[&TableId::new("QUOTEVAR").expect("id")];
    assert_eq!(quoted.status, TableStatus::Failed, "{quoted:?}");
    assert!(quoted.error.as_deref().unwrap_or("").contains("QUOTEVAR"));

    // Nothing outside the data folder; only the good table has partitions.
    let outside: Vec<_> = std::fs::read_dir(parent.path())
        .expect("ls")
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert_eq!(outside, ["data"]);
    let tables: Vec<String> = snapshot(&dir)
        .keys()
        .map(|k| k.split('/').next().unwrap_or("").to_string())
        .collect();
    assert!(tables.iter().all(|t| t == "GOOD1"), "{tables:?}");
    assert!(temp_files(&dir).is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn oversized_responses_are_bounded_and_publish_nothing() {
    let mut w = World::new();
    w.insert(EmuTable::synthetic(
        "BIG",
        &["2022", "2023"],
        &[("X", 50), ("Y", 20)],
    ));
    w.insert(EmuTable::synthetic("SMALL", &["2023"], &[("X", 2)]));
    let emu = Emulator::start(w).await.expect("emulator");
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path();

    // Rows per period above the limit.
    let client = fast_client(&emu.base_url(), 0);
    let mut o = options(dir, at_hours(0), true);
    o.limits = WriteLimits {
        max_rows_per_period: 100,
    };
    let m = run_sync_cycle(&client, &o).await.expect("cycle");
    let big = &m.tables[&TableId::new("BIG").expect("id")];
    assert_eq!(big.status, TableStatus::Failed);
    assert!(
        big.error.as_deref().unwrap_or("").contains("BIG"),
        "{big:?}"
    );
    assert_eq!(
        m.tables[&TableId::new("SMALL").expect("id")].status,
        TableStatus::Synced
    );
    assert!(snapshot(dir).keys().all(|k| !k.starts_with("BIG/")));

    // Bytes per response above the limit.
    let client = StatbankClient::builder()
        .base_url(emu.base_url())
        .min_interval(Duration::ZERO)
        .max_retries(0)
        .max_response_bytes(Some(4096))
        .build()
        .expect("client");
    let m = run_sync_cycle(&client, &options(dir, at_hours(1), true))
        .await
        .expect("cycle");
    let big = &m.tables[&TableId::new("BIG").expect("id")];
    assert_eq!(big.status, TableStatus::Failed);
    assert!(
        big.error.as_deref().unwrap_or("").contains("limit"),
        "{big:?}"
    );
    assert!(snapshot(dir).keys().all(|k| !k.starts_with("BIG/")));
    assert!(temp_files(dir).is_empty());

    // A body dripping just fast enough to never hit the read timeout is
    // bounded by the whole-body timeout.
    emu.handle().add_fault(
        Fault::always(Endpoint::Data, FaultKind::SlowBody { bytes_per_sec: 200 }).for_table("BIG"),
    );
    let client = StatbankClient::builder()
        .base_url(emu.base_url())
        .min_interval(Duration::ZERO)
        .max_retries(0)
        .read_timeout(Duration::from_millis(300))
        .bulk_timeout(statbank_client::BulkTimeout::Fixed(Duration::from_secs(2)))
        .build()
        .expect("client");
    let m = run_sync_cycle(&client, &options(dir, at_hours(2), true))
        .await
        .expect("cycle");
    let big = &m.tables[&TableId::new("BIG").expect("id")];
    assert_eq!(big.status, TableStatus::Failed, "{big:?}");
    assert!(
        big.error.as_deref().unwrap_or("").contains("timeout"),
        "{big:?}"
    );
    assert!(snapshot(dir).keys().all(|k| !k.starts_with("BIG/")));
    assert!(temp_files(dir).is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn state_is_rebuilt_from_the_partitions_after_moving_a_corrupt_state_away() {
    let emu = Emulator::start(multi_world()).await.expect("emulator");
    let client = fast_client(&emu.base_url(), 0);
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path();
    let data = DataDir::local(dir);
    run_sync_cycle(&client, &options(dir, at_hours(0), true))
        .await
        .expect("bootstrap");
    let before = snapshot(dir);
    let state_before = SyncState::load(&data).expect("state");
    // The documented recovery: move the corrupt file away, run again.
    std::fs::rename(
        data.local_path(&data.state_key()).expect("local"),
        dir.join("state.json.corrupt"),
    )
    .expect("move");
    let m = run_sync_cycle(&client, &options(dir, at_hours(1), true))
        .await
        .expect("cycle");
    assert_eq!(m.status, RunStatus::Success);
    assert!(m
        .tables
        .values()
        .all(|r| r.bootstrap == Some(false) && r.changed_tids.is_empty()));
    assert_eq!(snapshot(dir), before, "nothing rewritten");
    let state = SyncState::load(&data).expect("state");
    for (id, e) in &state_before.tables {
        assert_eq!(
            state.tables[id].last_seen_updated, e.last_seen_updated,
            "{id}"
        );
    }
}
