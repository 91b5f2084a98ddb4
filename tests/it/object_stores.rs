//! The mirror on object storage, against a real S3 server (`tests::s3`):
//! the same layout and records as on disk, partitions visible whole or not
//! at all, the lease, the whole-set swap, faults on the store, and the DB
//! apply reading partitions from the bucket. The backend-neutral cases
//! (same objects as on disk, the lease, the whole-set swap) also run
//! against Azure Blob Storage's emulator, Azurite (`tests::azure`).

use std::time::Duration;

use bins::run_sync_cycle;
use statbank_client::emulator::{EmuTable, EmuVariable, Emulator, World};
use sync_state::{
    DataDir, DataDirLock, RunManifest, RunStatus, SyncState, TableId, TableStatus, Tid,
};
use tests::azure::test_azure;
use tests::s3::{test_s3, ProxyFault, ProxyRule, S3Proxy, S3};
use tests::sync::{at_hours, fast_client, options, snapshot_of};

fn world() -> World {
    let mut w = World::new();
    w.insert(EmuTable::synthetic(
        "ANNUAL",
        &["2019", "2020", "2021", "2022", "2023", "2024"],
        &[("OMRÅDE", 4), ("KØN", 3)],
    ));
    w.insert(EmuTable::synthetic(
        "SEASON",
        &["2020/2021", "2021/2022"],
        &[("SCENE", 5)],
    ));
    w
}

fn id(s: &str) -> TableId {
    TableId::new(s).expect("id")
}

fn tids(v: &[&str]) -> Vec<Tid> {
    v.iter().map(|s| Tid::new(*s).expect("tid")).collect()
}

/// Sync options for a data folder on any storage.
fn opts_on(dir: &DataDir, hours: i64) -> bins::SyncOptions {
    let mut o = options(std::path::Path::new("unused"), at_hours(hours), true);
    o.data_dir = dir.clone();
    o
}

macro_rules! s3_or_skip {
    () => {
        match test_s3().expect("S3 server") {
            Some(s) => s,
            None => return,
        }
    };
}

macro_rules! azure_or_skip {
    () => {
        match test_azure().expect("Azure server") {
            Some(a) => a,
            None => return,
        }
    };
}

/// A bootstrap and an incremental cycle on S3 write exactly the objects a
/// local run writes, byte for byte, under the same keys; an unchanged
/// refreshed period is not uploaded again.
#[tokio::test(flavor = "multi_thread")]
async fn the_mirror_on_s3_equals_the_mirror_on_disk() {
    let s3 = s3_or_skip!();
    mirror_equals_disk(s3.data_dir("equal").expect("s3")).await;
}

/// The same on Azure Blob Storage (Azurite).
#[tokio::test(flavor = "multi_thread")]
async fn the_mirror_on_azure_equals_the_mirror_on_disk() {
    let azure = azure_or_skip!();
    mirror_equals_disk(azure.data_dir("equal").expect("azure")).await;
}

async fn mirror_equals_disk(remote: DataDir) {
    let emu = Emulator::start(world()).await.expect("emulator");
    let client = fast_client(&emu.base_url(), 0);
    let local = tempfile::tempdir().expect("tmp");
    let disk = DataDir::local(local.path());

    for dir in [&disk, &remote] {
        let m = run_sync_cycle(&client, &opts_on(dir, 0))
            .await
            .expect("bootstrap");
        assert_eq!(m.status, RunStatus::Success, "{}", dir.describe());
    }
    assert_eq!(snapshot_of(&remote), snapshot_of(&disk));
    assert_eq!(snapshot_of(&remote).len(), 8);
    // The records are there under the same keys, and parse.
    let st = SyncState::load(&remote).expect("state on the store");
    assert_eq!(st.tables.len(), 2);
    assert_eq!(sync_state::list_runs(&remote).expect("runs").len(), 1);
    // The metadata too: both languages' tableinfo, the labels file (the
    // same bytes as on disk) and the subject trees.
    for key in [
        "metadata/tables_info_raw_da/ANNUAL.json",
        "metadata/tables_info_raw_en/ANNUAL.json",
        "metadata/subjects_da.json",
        "metadata/subjects_en.json",
    ] {
        assert!(remote.storage().head(key).expect("head").is_some(), "{key}");
    }
    let labels = "metadata/labels/ANNUAL.parquet";
    assert_eq!(
        remote.storage().get(labels).expect("get"),
        disk.storage().get(labels).expect("get"),
        "{labels}"
    );
    assert!(disk.storage().get(labels).expect("get").is_some());

    let h = emu.handle();
    h.revise_period("ANNUAL", "2023");
    h.add_period("ANNUAL", "2025");
    h.set_updated("ANNUAL", "2026-02-01T08:00:00");
    let etag_2024 = |d: &DataDir| {
        d.storage()
            .head(&d.partition_key(&id("ANNUAL"), &Tid::new("2024").expect("tid")))
            .expect("head")
            .and_then(|o| o.version)
    };
    let before = etag_2024(&remote);
    let mut results = Vec::new();
    for dir in [&disk, &remote] {
        let m = run_sync_cycle(&client, &opts_on(dir, 24))
            .await
            .expect("cycle");
        results.push(m.tables[&id("ANNUAL")].clone());
    }
    assert_eq!(results[0].changed_tids, tids(&["2023", "2025"]));
    assert_eq!(results[1].changed_tids, results[0].changed_tids);
    assert_eq!(results[1].verified_periods, results[0].verified_periods);
    assert_eq!(snapshot_of(&remote), snapshot_of(&disk));
    assert_eq!(
        etag_2024(&remote),
        before,
        "an unchanged period is not uploaded again"
    );
}

/// `--data-dir` with an unknown scheme is an error, never a local folder
/// named after it.
#[test]
fn an_unknown_scheme_is_refused() {
    for bad in ["ftp://mirror/dst", "mirror://x", "http://host/prefix"] {
        let err = DataDir::open(bad).expect_err(bad).to_string();
        assert!(err.contains("unknown scheme"), "{err}");
    }
    assert!(!std::path::Path::new("ftp:").exists());
}

/// A cycle on a bucket where nothing changed costs a constant number of
/// object-store requests, however many tables the catalog has.
#[tokio::test(flavor = "multi_thread")]
async fn a_no_change_cycle_costs_a_constant_number_of_requests() {
    let s3 = s3_or_skip!();
    let proxy = S3Proxy::start(s3).expect("proxy");
    let mut counts = Vec::new();
    for n in [3usize, 30] {
        let mut w = World::new();
        for i in 0..n {
            w.insert(EmuTable::synthetic(
                &format!("T{i:03}"),
                &["2023", "2024"],
                &[("X", 2)],
            ));
        }
        let emu = Emulator::start(w).await.expect("emulator");
        let client = fast_client(&emu.base_url(), 0);
        let dir = proxy.s3.data_dir("nochange").expect("s3");
        run_sync_cycle(&client, &opts_on(&dir, 0))
            .await
            .expect("bootstrap");
        // Rolling verification has nothing to owe on a bootstrap: the
        // next cycle is a no-change cycle.
        proxy.clear_requests();
        let m = run_sync_cycle(&client, &opts_on(&dir, 200))
            .await
            .expect("no change");
        assert_eq!(m.summary.tables_skipped, n);
        counts.push(proxy.requests().len());
    }
    assert_eq!(
        counts[0], counts[1],
        "requests do not grow with tables: {counts:?}"
    );
    // lease (4), records (state, overrides, run id, manifest, state),
    // three listings of _sync (uploads, intents, staging), release (1)
    assert!(counts[0] <= 16, "{counts:?}");
}

/// One cycle per bucket prefix: a second is refused while the lease is
/// live; an expired lease is taken over; a process whose lease was taken
/// over writes nothing more.
#[test]
fn the_lease_serialises_cycles_and_a_lost_lease_stops_writes() {
    let s3 = s3_or_skip!();
    lease_serialises(s3.data_dir("lease").expect("s3"));
}

/// The same on Azure Blob Storage (Azurite).
#[test]
fn the_lease_on_azure_serialises_cycles_and_a_lost_lease_stops_writes() {
    let azure = azure_or_skip!();
    lease_serialises(azure.data_dir("lease").expect("azure"));
}

fn lease_serialises(dir: DataDir) {
    let key = dir.lock_key();
    let a = DataDirLock::acquire_with_ttl(dir.storage(), &key, "run A", Duration::from_secs(60))
        .expect("first");
    let err = DataDirLock::acquire(dir.storage(), &key, "run B").expect_err("held");
    assert!(err.to_string().contains("run A"), "{err}");
    drop(a);
    // Released: the next holder takes it at once.
    let b = DataDirLock::acquire_with_ttl(dir.storage(), &key, "run C", Duration::from_secs(4))
        .expect("after release");
    let guarded = b
        .guard()
        .map(|g| dir.guarded(g))
        .expect("a lease guards writes");
    guarded
        .storage()
        .put("statbank_tables/_sync/x.json", b"1")
        .expect("write while held");
    // Another process overwrites the lease (as a take-over after expiry
    // would): the holder's renewal fails and its writes stop.
    let expired = serde_json::json!({"holder": "other", "note": "takeover",
        "acquired_at": "2020-01-01T00:00:00Z", "expires_at": "2020-01-01T00:00:10Z"});
    dir.storage()
        .put(&key, serde_json::to_vec(&expired).expect("json").as_slice())
        .expect("overwrite");
    std::thread::sleep(Duration::from_millis(2500));
    let e = guarded
        .storage()
        .put("statbank_tables/_sync/x.json", b"2")
        .expect_err("lease lost");
    assert!(e.to_string().contains("lease"), "{e}");
    assert_eq!(
        dir.storage()
            .get("statbank_tables/_sync/x.json")
            .expect("get")
            .as_deref(),
        Some(&b"1"[..])
    );
    drop(b);
    // The overwritten lease says it expired in 2020: it is taken over.
    let c = DataDirLock::acquire(dir.storage(), &key, "run D").expect("takes over expired");
    drop(c);
}

/// A table whose variables change is re-fetched whole and its set swapped;
/// afterwards every object in its prefix has the new columns, the periods
/// only the old set had are gone, and with vintages on the old set is kept.
#[tokio::test(flavor = "multi_thread")]
async fn a_schema_change_swaps_the_whole_set_on_s3() {
    let s3 = s3_or_skip!();
    schema_change_swaps(s3.data_dir("drift").expect("s3")).await;
}

/// The same on Azure Blob Storage (Azurite).
#[tokio::test(flavor = "multi_thread")]
async fn a_schema_change_swaps_the_whole_set_on_azure() {
    let azure = azure_or_skip!();
    schema_change_swaps(azure.data_dir("drift").expect("azure")).await;
}

async fn schema_change_swaps(dir: DataDir) {
    let emu = Emulator::start(world()).await.expect("emulator");
    let client = fast_client(&emu.base_url(), 0);
    let mut o = opts_on(&dir, 0);
    o.vintages = bins::Vintages::Keep;
    run_sync_cycle(&client, &o).await.expect("bootstrap");
    let h = emu.handle();
    h.add_variable(
        "ANNUAL",
        1,
        EmuVariable {
            id: "ALDER".into(),
            text: "alder".into(),
            elimination: true,
            map: None,
            values: vec![
                statbank_client::emulator::EmuValue::code("0"),
                statbank_client::emulator::EmuValue::code("1"),
            ],
        },
    );
    h.remove_period("ANNUAL", "2019");
    h.set_updated("ANNUAL", "2026-02-01T08:00:00");
    let m = run_sync_cycle(&client, &opts_on(&dir, 24))
        .await
        .expect("cycle");
    let r = &m.tables[&id("ANNUAL")];
    assert_eq!(r.status, TableStatus::Synced, "{:?}", r.error);
    let change = r.schema_change.as_ref().expect("schema_change");
    assert_eq!(change.before, vec!["OMRÅDE", "KØN", "Tid"]);
    assert_eq!(change.after, vec!["OMRÅDE", "ALDER", "KØN", "Tid"]);
    assert_eq!(
        r.changed_tids,
        tids(&["2020", "2021", "2022", "2023", "2024"])
    );
    assert_eq!(r.deleted_tids.as_deref(), Some(&tids(&["2019"])[..]));
    assert_eq!(m.summary.tables_schema_changed, 1);
    let store = partition_store::PartitionStore::new(&dir);
    for t in store.list_tids(&id("ANNUAL")).expect("list") {
        let f = store.footer(&id("ANNUAL"), &t).expect("footer");
        assert_eq!(
            f.columns,
            vec!["OMRÅDE", "ALDER", "KØN", "TID", "INDHOLD"],
            "{t}"
        );
    }
    assert_eq!(
        store.list_vintages(&id("ANNUAL")).expect("vintages").len(),
        6
    );
    assert!(dir
        .storage()
        .list_recursive("statbank_tables/_sync/staging")
        .expect("list")
        .is_empty());
    assert!(dir
        .storage()
        .list_recursive("statbank_tables/_sync/intents")
        .expect("list")
        .is_empty());
}

/// Faults on the store: 503 SlowDown and 500 are retried by the store
/// client; a key that keeps failing (permission denied, a full quota, a
/// connection cut mid-upload) fails its table with an error naming the key,
/// nothing partial becomes visible, and a re-run converges.
#[tokio::test(flavor = "multi_thread")]
async fn faults_on_the_store_fail_the_table_cleanly_and_converge() {
    let s3 = s3_or_skip!();
    let proxy = S3Proxy::start(s3).expect("proxy");
    let emu = Emulator::start(world()).await.expect("emulator");
    let client = fast_client(&emu.base_url(), 0);
    let dir = proxy.s3.data_dir("faults").expect("s3");
    let clean = tempfile::tempdir().expect("tmp");
    let reference = DataDir::local(clean.path());
    run_sync_cycle(&client, &opts_on(&reference, 0))
        .await
        .expect("reference");

    // Transient: retried inside the store client, the run succeeds.
    proxy.add_rule(ProxyRule {
        method: Some("PUT"),
        path_contains: "ANNUAL/2021.parquet".into(),
        fault: ProxyFault::Status(503, "SlowDown"),
        times: Some(1),
    });
    proxy.add_rule(ProxyRule {
        method: Some("PUT"),
        path_contains: "SEASON/2020%252F2021.parquet".into(),
        fault: ProxyFault::Status(500, "InternalError"),
        times: Some(1),
    });
    let m = run_sync_cycle(&client, &opts_on(&dir, 0))
        .await
        .expect("cycle");
    assert_eq!(m.status, RunStatus::Success, "{:?}", m.tables);
    assert_eq!(snapshot_of(&dir), snapshot_of(&reference));

    // Persistent faults on one key each.
    let h = emu.handle();
    for (table, period) in [("ANNUAL", "2024"), ("SEASON", "2021/2022")] {
        h.revise_period(table, period);
        h.set_updated(table, "2026-02-01T08:00:00");
    }
    run_sync_cycle(&client, &opts_on(&reference, 24))
        .await
        .expect("reference");
    for (fault, what) in [
        (ProxyFault::Status(403, "AccessDenied"), "AccessDenied"),
        (ProxyFault::Status(403, "QuotaExceeded"), "QuotaExceeded"),
        (ProxyFault::Cut, "cut"),
    ] {
        proxy.clear_rules();
        proxy.add_rule(ProxyRule {
            method: Some("PUT"),
            path_contains: "ANNUAL/2024.parquet".into(),
            fault,
            times: None,
        });
        let before = snapshot_of(&dir);
        let m = run_sync_cycle(&client, &opts_on(&dir, 24))
            .await
            .expect("cycle");
        let r = &m.tables[&id("ANNUAL")];
        assert_eq!(r.status, TableStatus::Failed, "{what}");
        let e = r.error.as_deref().unwrap_or("");
        assert!(
            e.contains("ANNUAL/2024.parquet"),
            "{what}: the error names the key: {e}"
        );
        let after = snapshot_of(&dir);
        assert_eq!(
            after["ANNUAL/2024.parquet"], before["ANNUAL/2024.parquet"],
            "{what}"
        );
        assert_ne!(
            m.tables[&id("SEASON")].status,
            TableStatus::Failed,
            "{what}: other tables go on"
        );
    }
    proxy.clear_rules();
    let m = run_sync_cycle(&client, &opts_on(&dir, 48))
        .await
        .expect("re-run");
    assert_eq!(m.status, RunStatus::Success);
    assert!(m.tables[&id("ANNUAL")]
        .changed_tids
        .contains(&Tid::new("2024").expect("tid")));
    assert_eq!(snapshot_of(&dir), snapshot_of(&reference), "converged");
}

/// A partition larger than one part goes up as a multipart upload; an
/// upload that a killed process left unfinished is aborted by the next run.
#[tokio::test(flavor = "multi_thread")]
async fn large_partitions_use_multipart_and_abandoned_uploads_are_aborted() {
    let s3 = s3_or_skip!();
    // Recorded as a run that died mid-upload would leave it.
    let dir = s3.data_dir("multipart").expect("s3");
    let abandoned = start_abandoned_upload(s3, &dir).await;
    let mut w = World::new();
    // 1.8 M rows of 3-decimal values: about 7 MB of Parquet, past the
    // 5 MiB part size.
    let mut big = EmuTable::synthetic("BIG", &["2024"], &[("A", 300), ("B", 300), ("C", 20)]);
    big.decimals = 3;
    w.insert(big);
    let emu = Emulator::start(w).await.expect("emulator");
    let client = fast_client(&emu.base_url(), 0);
    let m = run_sync_cycle(&client, &opts_on(&dir, 0))
        .await
        .expect("cycle");
    assert_eq!(m.status, RunStatus::Success, "{:?}", m.tables);
    assert_eq!(m.aborted_uploads, Some(1), "{abandoned}");
    let key = dir.partition_key(&id("BIG"), &Tid::new("2024").expect("tid"));
    let size = dir
        .storage()
        .head(&key)
        .expect("head")
        .expect("uploaded")
        .size;
    assert!(
        size > 5 * 1024 * 1024,
        "a multipart-sized partition: {size} bytes"
    );
    let f = partition_store::PartitionStore::new(&dir)
        .footer(&id("BIG"), &Tid::new("2024").expect("tid"))
        .expect("readable");
    assert_eq!(f.rows, 300 * 300 * 20);
    assert!(dir
        .storage()
        .list_recursive("statbank_tables/_sync/uploads")
        .expect("list")
        .is_empty());
}

/// Starts a multipart upload and records it as the storage does, then
/// "dies": returns the upload id.
async fn start_abandoned_upload(s3: &S3, dir: &DataDir) -> String {
    use object_store::multipart::MultipartStore;
    let url = dir.describe();
    let prefix = url.trim_start_matches(&format!("s3://{}/", s3.bucket));
    let store = object_store::aws::AmazonS3Builder::new()
        .with_bucket_name(&s3.bucket)
        .with_endpoint(&s3.endpoint)
        .with_access_key_id(&s3.access_key)
        .with_secret_access_key(&s3.secret_key)
        .with_region("us-east-1")
        .with_allow_http(true)
        .build()
        .expect("store");
    let key = format!("{prefix}/statbank_tables/BIG/abandoned.parquet");
    let path = object_store::path::Path::parse(&key).expect("path");
    let id = store.create_multipart(&path).await.expect("create");
    let record =
        serde_json::json!({"key": "statbank_tables/BIG/abandoned.parquet", "upload_id": id});
    dir.storage()
        .put(
            "statbank_tables/_sync/uploads/99999-abandoned.json",
            serde_json::to_vec(&record).expect("json").as_slice(),
        )
        .expect("record");
    id
}

/// The DB apply reads its partitions from the bucket.
#[tokio::test(flavor = "multi_thread")]
async fn the_apply_reads_partitions_from_s3() {
    let s3 = s3_or_skip!();
    let emu = Emulator::start(world()).await.expect("emulator");
    let client = fast_client(&emu.base_url(), 0);
    let dir = s3.data_dir("apply").expect("s3");
    let m = run_sync_cycle(&client, &opts_on(&dir, 0))
        .await
        .expect("bootstrap");
    let run = m.run_id.clone();
    let d = dir.clone();
    // The synchronous Postgres client never runs on an async worker.
    let (report, n) = tokio::task::spawn_blocking(move || {
        std::thread::spawn(move || {
            let db = tests::pg::test_db().expect("postgres");
            let mut pg = db.client().expect("client");
            let opts = fact_apply::ApplyOptions {
                create_missing: true,
                ..fact_apply::ApplyOptions::default()
            };
            let report = fact_apply::apply_run(&mut pg, &d, &run, &opts).expect("apply");
            let n: i64 = pg
                .query_one("SELECT count(*) FROM fact.annual", &[])
                .expect("count")
                .get(0);
            (report, n)
        })
        .join()
        .expect("apply thread")
    })
    .await
    .expect("task");
    assert_eq!(report.status, RunStatus::Success, "{:?}", report.tables);
    assert_eq!(report.summary.tables_applied, 2);
    assert_eq!(n, 6 * 4 * 3);
    let saved = RunManifest::load(&dir, &m.run_id).expect("manifest on s3");
    assert_eq!(saved.db_apply.map(|a| a.status), Some(RunStatus::Success));
}
