//! Helpers for end-to-end sync tests: an emulator, a fast client, options
//! with an injected clock, and snapshots of what is on disk.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use bins::{Clock, SyncOptions};
use chrono::{DateTime, TimeZone, Utc};
use statbank_client::StatbankClient;

/// A fixed point in time the tests start from.
pub fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 1, 5, 22, 0, 0)
        .single()
        .expect("valid time")
}

/// `t0` plus `hours`.
pub fn at_hours(hours: i64) -> DateTime<Utc> {
    t0() + chrono::Duration::hours(hours)
}

/// Backoff and timeouts of a test client.
struct Timings {
    min_backoff: Duration,
    max_backoff: Duration,
    read_timeout: Duration,
    request_timeout: Duration,
}

/// A client with no politeness delay, `retries` retries and `t`.
fn test_client(base: &str, retries: usize, t: Timings) -> StatbankClient {
    StatbankClient::builder()
        .base_url(base)
        .min_interval(Duration::ZERO)
        .max_retries(retries)
        .min_backoff(t.min_backoff)
        .max_backoff(t.max_backoff)
        .read_timeout(t.read_timeout)
        .request_timeout(t.request_timeout)
        .build()
        .expect("client")
}

/// A client with no politeness delay and quick retries.
pub fn fast_client(base: &str, retries: usize) -> StatbankClient {
    test_client(
        base,
        retries,
        Timings {
            min_backoff: Duration::from_millis(5),
            max_backoff: Duration::from_millis(20),
            read_timeout: Duration::from_secs(2),
            request_timeout: Duration::from_secs(5),
        },
    )
}

/// A client for fault injection: no politeness delay, and timeouts short
/// enough that an injected hang of a few seconds times out (reads after 1 s,
/// whole requests after 2 s), with retries backing off 10–50 ms.
pub fn fault_client(base: &str, retries: usize) -> StatbankClient {
    test_client(
        base,
        retries,
        Timings {
            min_backoff: Duration::from_millis(10),
            max_backoff: Duration::from_millis(50),
            read_timeout: Duration::from_secs(1),
            request_timeout: Duration::from_secs(2),
        },
    )
}

/// Sync options for `dir` at time `now`.
pub fn options(dir: &Path, now: DateTime<Utc>, force: bool) -> SyncOptions {
    let mut o = SyncOptions::new(dir).expect("a local data folder");
    o.clock = Clock::fixed(now);
    o.gate.force = force;
    o
}

/// Every file under `statbank_tables/` (except `_sync`), relative path →
/// bytes.
pub fn snapshot(data_dir: &Path) -> BTreeMap<String, Vec<u8>> {
    let root = data_dir.join("statbank_tables");
    let mut out = BTreeMap::new();
    let Ok(tables) = std::fs::read_dir(&root) else {
        return out;
    };
    for t in tables.flatten() {
        if t.file_name() == "_sync" || !t.path().is_dir() {
            continue;
        }
        for f in std::fs::read_dir(t.path()).expect("table dir").flatten() {
            let rel = format!(
                "{}/{}",
                t.file_name().to_string_lossy(),
                f.file_name().to_string_lossy()
            );
            out.insert(rel, std::fs::read(f.path()).expect("read partition"));
        }
    }
    out
}

/// Every partition of a data folder on any storage (`TABLE/file` → bytes):
/// the objects directly in each table's folder, as [`snapshot`] lists them
/// on disk.
pub fn snapshot_of(dir: &sync_state::DataDir) -> BTreeMap<String, Vec<u8>> {
    let storage = dir.storage();
    let mut out = BTreeMap::new();
    let objects = storage.list_recursive("statbank_tables").expect("list");
    for o in objects {
        let parts: Vec<&str> = o.key.split('/').collect();
        if let [_, table, file] = parts.as_slice() {
            if table.starts_with('_') {
                continue;
            }
            let bytes = storage
                .get(&o.key)
                .expect("get")
                .expect("listed object exists");
            out.insert(format!("{table}/{file}"), bytes.to_vec());
        }
    }
    out
}

/// Files whose name marks them as temporary, anywhere under `data_dir`.
pub fn temp_files(data_dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![data_dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                let name = e.file_name().to_string_lossy().to_string();
                if name.starts_with(".tmp") || name.ends_with(".tmp") {
                    out.push(p.display().to_string());
                }
            }
        }
    }
    out
}
