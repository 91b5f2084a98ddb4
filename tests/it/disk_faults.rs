//! Disk faults: a full disk, a read-only
//! data folder, and one table's folder read-only. Each gives a clear error,
//! leaves the rest of the data untouched and nothing half-written, and a
//! later run converges. Needs root to mount a small tmpfs (this project's
//! machines and CI run as root); elsewhere each test says it was skipped.

use std::path::{Path, PathBuf};
use std::process::Command;

use bins::run_sync_cycle;
use statbank_client::emulator::{EmuTable, Emulator, World};
use sync_state::{DataDir, RunStatus, SyncState, TableId, TableStatus};
use tests::sync::{at_hours, fast_client, options, snapshot, temp_files};

/// A mounted tmpfs (or bind mount), unmounted on drop.
struct Mount(PathBuf);

impl Mount {
    fn tmpfs(at: &Path, size: &str) -> Option<Mount> {
        std::fs::create_dir_all(at).ok()?;
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(at)
            .status()
            .ok()?
            .success();
        ok.then(|| Mount(at.to_path_buf()))
    }

    fn read_only_bind(dir: &Path) -> Mount {
        run(Command::new("mount").arg("--bind").arg(dir).arg(dir));
        run(Command::new("mount")
            .args(["-o", "remount,bind,ro"])
            .arg(dir));
        Mount(dir.to_path_buf())
    }

    fn remount(&self, opts: &str) {
        run(Command::new("mount")
            .args(["-o", &format!("remount,{opts}")])
            .arg(&self.0));
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

fn run(cmd: &mut Command) {
    let st = cmd.status().expect("run mount");
    assert!(st.success(), "{cmd:?} failed");
}

fn world() -> World {
    let mut w = World::new();
    let mut big = EmuTable::synthetic(
        "BIG",
        &[
            "2015", "2016", "2017", "2018", "2019", "2020", "2021", "2022", "2023", "2024",
        ],
        &[("OMRÅDE", 30), ("KØN", 3), ("ALDER", 60)],
    );
    big.decimals = 3;
    w.insert(big);
    w.insert(EmuTable::synthetic("SMALL", &["2023", "2024"], &[("X", 3)]));
    w
}

fn skip(name: &str) {
    eprintln!("SKIPPED {name}: cannot mount a tmpfs here (needs root)");
}

#[tokio::test(flavor = "multi_thread")]
async fn full_disk_fails_cleanly_and_recovers() {
    let emu = Emulator::start(world()).await.expect("emulator");
    let client = fast_client(&emu.base_url(), 0);
    let reference = tempfile::tempdir().expect("tmp");
    run_sync_cycle(&client, &options(reference.path(), at_hours(0), true))
        .await
        .expect("reference");
    let expected = snapshot(reference.path());
    let total: usize = expected.values().map(Vec::len).sum();

    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path().join("data");
    let Some(mount) = Mount::tmpfs(&dir, &format!("{}", total / 2)) else {
        return skip("full_disk_fails_cleanly_and_recovers");
    };
    let outcome = run_sync_cycle(&client, &options(&dir, at_hours(0), true)).await;
    let text = match &outcome {
        Ok(m) => {
            assert_ne!(m.status, RunStatus::Success, "the disk was too small");
            format!(
                "{:?}",
                m.tables
                    .values()
                    .filter_map(|r| r.error.clone())
                    .collect::<Vec<_>>()
            )
        }
        Err(e) => statbank_client::error_chain(e),
    };
    assert!(text.contains("No space left"), "{text}");
    assert!(
        text.contains(&dir.display().to_string()),
        "the error names the file: {text}"
    );
    // Whatever is on disk is complete: every partition equals the reference.
    let got = snapshot(&dir);
    for (name, bytes) in &got {
        assert_eq!(Some(bytes), expected.get(name), "{name} is half-written");
    }
    assert!(temp_files(&dir).is_empty(), "{:?}", temp_files(&dir));
    if dir.join("statbank_tables/_sync/state.json").exists() {
        SyncState::load(&DataDir::local(&dir)).expect("state.json is whole");
    }

    mount.remount("size=64m");
    let m = run_sync_cycle(&client, &options(&dir, at_hours(1), true))
        .await
        .expect("recovers");
    assert_eq!(m.status, RunStatus::Success, "{:?}", m.error);
    assert_eq!(snapshot(&dir), expected);
}

#[tokio::test(flavor = "multi_thread")]
async fn read_only_data_folder_and_read_only_table_folder() {
    let emu = Emulator::start(world()).await.expect("emulator");
    let client = fast_client(&emu.base_url(), 0);
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path().join("data");
    let Some(mount) = Mount::tmpfs(&dir, "64m") else {
        return skip("read_only_data_folder_and_read_only_table_folder");
    };
    run_sync_cycle(&client, &options(&dir, at_hours(0), true))
        .await
        .expect("bootstrap");
    let before = snapshot(&dir);
    let state_before = std::fs::read(dir.join("statbank_tables/_sync/state.json")).expect("state");

    // The whole folder read-only: refused with an error naming the path.
    emu.handle().revise_period("SMALL", "2024");
    emu.handle().set_updated("SMALL", "2026-02-01T08:00:00");
    mount.remount("ro");
    let err = run_sync_cycle(&client, &options(&dir, at_hours(1), true))
        .await
        .expect_err("read-only");
    let text = statbank_client::error_chain(&err);
    assert!(text.contains("Read-only file system"), "{text}");
    assert!(text.contains(&dir.display().to_string()), "{text}");
    mount.remount("rw");
    assert_eq!(snapshot(&dir), before);
    assert_eq!(
        std::fs::read(dir.join("statbank_tables/_sync/state.json")).expect("state"),
        state_before
    );

    // One table's folder read-only: that table fails, the other syncs.
    emu.handle().revise_period("BIG", "2024");
    emu.handle().set_updated("BIG", "2026-02-01T08:00:00");
    let big_dir = dir.join("statbank_tables/BIG");
    let ro = Mount::read_only_bind(&big_dir);
    let m = run_sync_cycle(&client, &options(&dir, at_hours(2), true))
        .await
        .expect("cycle");
    assert_eq!(m.status, RunStatus::PartialFailure);
    let big = &m.tables[&TableId::new("BIG").expect("id")];
    assert_eq!(big.status, TableStatus::Failed);
    let e = big.error.as_deref().unwrap_or("");
    assert!(
        e.contains("Read-only") && e.contains(&big_dir.display().to_string()),
        "{e}"
    );
    let small = &m.tables[&TableId::new("SMALL").expect("id")];
    assert_eq!(small.status, TableStatus::Synced);
    assert_eq!(small.changed_tids.len(), 1);
    let after = snapshot(&dir);
    for (name, bytes) in &before {
        if name.starts_with("BIG/") {
            assert_eq!(&after[name], bytes, "{name} untouched");
        }
    }
    drop(ro);
    let m = run_sync_cycle(&client, &options(&dir, at_hours(3), true))
        .await
        .expect("cycle");
    assert_eq!(m.status, RunStatus::Success);
    let big = &m.tables[&TableId::new("BIG").expect("id")];
    assert_eq!(big.changed_tids.len(), 1, "{big:?}");
    assert!(temp_files(&dir).is_empty());
}
